//! The router: after every generated token, decides for each live sequence whether
//! the next span of its answer comes from a computation expert.
//!
//! A [`Router`] is a gate (what scores the sequence) plus a [`RouterPolicy`] (when a
//! score becomes a firing). Each sequence keeps a small [`RouterState`] whose size
//! does not grow with the answer. The scheduler calls [`Router::step`] once per
//! decode step for the whole batch, and gets one [`Decision`] per sequence.
//!
//! Gates:
//! - [`PiernGate`] (`piern`): the reference router. Its own embedding table
//!   (vocab, E), the mean of the embeddings of the tokens generated so far (not the
//!   prompt; injected expert results count, as in the reference, which re-embeds
//!   everything after the prompt) -> Linear(E, 128) -> ReLU -> Linear(128, n_out)
//!   -> sigmoid. The state keeps the running sum (f64) and count, so a step costs
//!   O(E) whatever the length. Tensor names follow the reference's PyTorch
//!   `state_dict`, so a file saved with `safetensors.torch.save_file` loads as is:
//!   `{prefix}embedding.weight` (vocab, E), `{prefix}fc.0.weight` (128, E),
//!   `{prefix}fc.0.bias` (128), `{prefix}fc.2.weight` (n_out, 128),
//!   `{prefix}fc.2.bias` (n_out).
//! - [`HiddenGate`] (`hidden-gate`): reads the LLM's last hidden state row of the
//!   sequence's newest token (the scheduler passes the final-norm output that feeds
//!   lm_head, computed in the step that processes the token; the gate must be
//!   trained on the same, see src/train/). A firing puts the expert's result right
//!   after that token, in place of the token sampled from its row. An `nn.Sequential`
//!   of Linear layers with ReLU between: linear `[H, n_out]` (`{prefix}gate.0.*`)
//!   or MLP `[H, hidden, n_out]` (`{prefix}gate.0.*`, `{prefix}gate.2.*`), then
//!   either sigmoid (independent per-output gates) or softmax over
//!   (1 + n_experts) classes where class 0 means "no expert". The whole batch is
//!   one matrix product (B, H) x (H, n_out).
//! - [`TriggerGate`] (`trigger`): fires when the decoded text ends with one of the
//!   declared strings, each mapped to an expert. Deterministic, probability 1.
//!
//! Mapping outputs to experts. A sigmoid gate has `n_out` outputs and an `experts`
//! list of the same length: output j fires expert `experts[j]`. One output with
//! `experts = [k]` is the reference's single gate "picking" expert k; n outputs with
//! `experts = [0, 1, .., n-1]` is one probability per expert. The best output (first
//! on ties) fires when its probability is > `threshold` (strictly, as the reference's
//! `probs > 0.5`). A softmax gate has `1 + experts.len()` classes; it fires only when
//! the best class is not class 0 and its probability is > `threshold`.
//!
//! Policy, common to every gate ([`RouterPolicy`]): `threshold`; `refractory`: after
//! the scheduler reports an injected result (`RouterState::injected`), the next
//! `refractory` steps do not fire; `max_firings`: at most that many firings per
//! answer. A step on a sequence that may not fire still updates its running state.
//!
//! The scheduler's contract per sequence: `step` -> on `Fire`, run T2C and the expert,
//! append the result tokens, then call `Router::absorb(state, &result_tokens)` (adds
//! them to the piern running mean; a no-op for other gates) and `state.injected()`
//! (starts the refractory span), before the next `step`.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::safetensors::{HostData, HostTensor, SafetensorFiles};

// ----------------------------------------------------------------------------
// Linear layers and MLPs (shared with T2C)
// ----------------------------------------------------------------------------

/// A `torch.nn.Linear`: y = x W^T + b, W (out_dim, in_dim), b (out_dim), f32.
#[derive(Clone, Debug)]
pub struct Linear {
    out_dim: usize,
    in_dim: usize,
    weight: Vec<f32>, // (out_dim, in_dim)
    bias: Vec<f32>,   // (out_dim)
}

impl Linear {
    /// From row-major weights (out_dim, in_dim) and a bias (out_dim).
    pub fn new(out_dim: usize, in_dim: usize, weight: Vec<f32>, bias: Vec<f32>) -> Result<Self> {
        if weight.len() != out_dim * in_dim {
            return Err(Error::tensor(
                "weight",
                format!("has {} values, ({out_dim}, {in_dim}) needs {}", weight.len(), out_dim * in_dim),
            ));
        }
        if bias.len() != out_dim {
            return Err(Error::tensor(
                "bias",
                format!("has {} values, ({out_dim}) needs {out_dim}", bias.len()),
            ));
        }
        Ok(Linear { out_dim, in_dim, weight, bias })
    }

    /// Loads `{name}.weight` (out_dim, in_dim) and `{name}.bias` (out_dim).
    pub fn load(files: &SafetensorFiles, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let w = files.load(&format!("{name}.weight"), &[out_dim, in_dim])?.to_f32();
        let b = files.load(&format!("{name}.bias"), &[out_dim])?.to_f32();
        Ok(Linear { out_dim, in_dim, weight: w, bias: b })
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// (out_dim, in_dim), row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    fn forward_f32(&self, x: &[f32], rows: usize) -> Vec<f32> {
        dense_f32(x, rows, &self.weight, &self.bias)
    }

    /// The same in f64: weights widened exactly, f64 accumulation.
    fn forward_f64(&self, x: &[f64], rows: usize) -> Vec<f64> {
        debug_assert_eq!(x.len(), rows * self.in_dim);
        let mut y = vec![0f64; rows * self.out_dim];
        for r in 0..rows {
            let xr = &x[r * self.in_dim..(r + 1) * self.in_dim];
            for o in 0..self.out_dim {
                let w = &self.weight[o * self.in_dim..(o + 1) * self.in_dim];
                let mut acc = 0f64;
                for (&a, &b) in w.iter().zip(xr) {
                    acc += a as f64 * b;
                }
                y[r * self.out_dim + o] = acc + self.bias[o] as f64;
            }
        }
        y
    }
}

/// Linear layers with ReLU between them (none after the last): the shape of a
/// `torch.nn.Sequential(Linear, ReLU, Linear, ...)`, whose Linear layers sit at
/// indices 0, 2, 4, ... of the `state_dict`.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    pub fn from_layers(layers: Vec<Linear>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::tensor("mlp", "has no layers"));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].out_dim != pair[1].in_dim {
                return Err(Error::tensor(
                    format!("layer {}", i + 1),
                    format!("takes {} inputs, the layer before gives {}", pair[1].in_dim, pair[0].out_dim),
                ));
            }
        }
        Ok(Mlp { layers })
    }

    /// Loads `{prefix}.0`, `{prefix}.2`, ... for `dims = [in, hidden.., out]`
    /// (at least two entries).
    pub fn load(files: &SafetensorFiles, prefix: &str, dims: &[usize]) -> Result<Self> {
        if dims.len() < 2 {
            return Err(Error::tensor(prefix, format!("an MLP needs at least [in, out] dims, got {dims:?}")));
        }
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| Linear::load(files, &format!("{prefix}.{}", 2 * i), d[1], d[0]))
            .collect::<Result<Vec<_>>>()?;
        Mlp::from_layers(layers)
    }

    pub fn in_dim(&self) -> usize {
        self.layers[0].in_dim
    }
    pub fn out_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].out_dim
    }
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// (rows, in_dim) -> (rows, out_dim), f32. Every row is computed the same way
    /// whatever `rows` is, so a batch equals its rows one at a time, bit for bit.
    pub fn forward_f32(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut h = self.layers[0].forward_f32(x, rows);
        for layer in &self.layers[1..] {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
            h = layer.forward_f32(&h, rows);
        }
        h
    }

    /// (rows, in_dim) -> (rows, out_dim) in f64 over the f32 weights.
    pub fn forward_f64(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let mut h = self.layers[0].forward_f64(x, rows);
        for layer in &self.layers[1..] {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
            h = layer.forward_f64(&h, rows);
        }
        h
    }
}

/// y (rows, out) = x (rows, in) W^T + b with W (out, in), f32 accumulation in index
/// order. Also the CPU backend's gate op, so both router paths agree bit for bit.
pub fn dense_f32(x: &[f32], rows: usize, weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let out_dim = bias.len();
    let in_dim = weight.len() / out_dim.max(1);
    debug_assert_eq!(x.len(), rows * in_dim);
    let mut y = vec![0f32; rows * out_dim];
    for r in 0..rows {
        let xr = &x[r * in_dim..(r + 1) * in_dim];
        for o in 0..out_dim {
            let w = &weight[o * in_dim..(o + 1) * in_dim];
            let mut acc = 0f32;
            for (a, b) in w.iter().zip(xr) {
                acc += a * b;
            }
            y[r * out_dim + o] = acc + bias[o];
        }
    }
    y
}

/// In place on rows of `n` gate outputs: a sigmoid each, or a softmax per row.
pub fn activate(p: &mut [f32], n: usize, softmax: bool) {
    if !softmax {
        p.iter_mut().for_each(|v| *v = sigmoid(*v));
        return;
    }
    for row in p.chunks_mut(n) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0f32;
        row.iter_mut().for_each(|v| {
            *v = (*v - m).exp();
            z += *v;
        });
        row.iter_mut().for_each(|v| *v /= z);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

// ----------------------------------------------------------------------------
// Gates
// ----------------------------------------------------------------------------

/// A token-embedding table kept in its file dtype (the reference's is vocab x 1536,
/// about 0.5 GB in bf16, so it is not widened to f32 at load).
#[derive(Clone, Debug)]
pub struct EmbedTable {
    name: String,
    vocab: usize,
    dim: usize,
    data: HostData, // (vocab, dim)
}

impl EmbedTable {
    pub fn from_tensor(t: HostTensor) -> Result<Self> {
        let [vocab, dim] = t.shape[..] else {
            return Err(Error::tensor(
                &t.name,
                format!("has shape {:?}, an embedding table is (vocab, dim)", t.shape),
            ));
        };
        let data = match t.data {
            HostData::Quant(q) => HostData::F32(q.to_f32()),
            d => d,
        };
        let len = match &data {
            HostData::F32(v) => v.len(),
            HostData::Bf16(v) => v.len(),
            HostData::Quant(_) => unreachable!("widened above"),
        };
        if len != vocab * dim {
            return Err(Error::tensor(&t.name, format!("has {len} values for shape ({vocab}, {dim})")));
        }
        Ok(EmbedTable { name: t.name, vocab, dim, data })
    }
    pub fn vocab(&self) -> usize {
        self.vocab
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    fn check(&self, token: u32) -> Result<()> {
        if (token as usize) < self.vocab {
            Ok(())
        } else {
            Err(Error::tensor(
                &self.name,
                format!("token id {token} is outside the table's {} rows", self.vocab),
            ))
        }
    }
    /// acc += row `token` (widened exactly to f64). The caller checked the id.
    fn add_row(&self, token: u32, acc: &mut [f64]) {
        let r = token as usize * self.dim;
        match &self.data {
            HostData::F32(v) => acc.iter_mut().zip(&v[r..r + self.dim]).for_each(|(a, &x)| *a += x as f64),
            HostData::Bf16(v) => acc
                .iter_mut()
                .zip(&v[r..r + self.dim])
                .for_each(|(a, &b)| *a += f32::from_bits((b as u32) << 16) as f64),
            HostData::Quant(_) => unreachable!("quantized tables are widened in from_tensor"),
        }
    }
}

/// Where the piern gate's tensors are and what shapes they must have.
#[derive(Clone, Debug, Deserialize)]
pub struct PiernGateConfig {
    /// Prepended to every tensor name ("" for the reference's own state_dict).
    #[serde(default)]
    pub prefix: String,
    pub vocab: usize,
    /// E; the reference uses 1536.
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,
    /// The MLP's inner width; the reference uses 128.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Output j fires expert `experts[j]`; n_out = experts.len().
    pub experts: Vec<usize>,
}

fn default_embed_dim() -> usize {
    1536
}
fn default_hidden() -> usize {
    128
}

/// The reference router: mean of the generated tokens' embeddings -> MLP -> sigmoid.
#[derive(Clone, Debug)]
pub struct PiernGate {
    embed: EmbedTable,
    mlp: Mlp,
    experts: Vec<usize>,
}

impl PiernGate {
    pub fn new(embed: EmbedTable, mlp: Mlp, experts: Vec<usize>) -> Result<Self> {
        if mlp.in_dim() != embed.dim {
            return Err(Error::tensor(
                &embed.name,
                format!("has dim {}, the MLP takes {} inputs", embed.dim, mlp.in_dim()),
            ));
        }
        check_experts(&experts, mlp.out_dim(), "piern gate")?;
        Ok(PiernGate { embed, mlp, experts })
    }

    pub fn load(files: &SafetensorFiles, cfg: &PiernGateConfig) -> Result<Self> {
        let p = &cfg.prefix;
        let embed = EmbedTable::from_tensor(
            files.load(&format!("{p}embedding.weight"), &[cfg.vocab, cfg.embed_dim])?,
        )?;
        let mlp = Mlp::load(files, &format!("{p}fc"), &[cfg.embed_dim, cfg.hidden, cfg.experts.len()])?;
        PiernGate::new(embed, mlp, cfg.experts.clone())
    }

    pub fn embed(&self) -> &EmbedTable {
        &self.embed
    }
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// The gate's probabilities (n_out) for the generated tokens `tokens`, computed
    /// from scratch: the oracle the running state is checked against, and what the
    /// reference computes at every step.
    pub fn probs_from_tokens(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::Request("piern gate: the mean of no tokens is undefined".into()));
        }
        let mut sum = vec![0f64; self.embed.dim];
        for &t in tokens {
            self.embed.check(t)?;
            self.embed.add_row(t, &mut sum);
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / tokens.len() as f64) as f32).collect();
        Ok(self.mlp.forward_f32(&mean, 1).into_iter().map(sigmoid).collect())
    }
}

/// How a hidden gate turns its outputs into probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateActivation {
    /// One independent gate per output (n_out = experts.len()).
    Sigmoid,
    /// One distribution over 1 + experts.len() classes; class 0 is "no expert".
    Softmax,
}

/// Where the hidden gate's tensors are and what shapes they must have.
#[derive(Clone, Debug, Deserialize)]
pub struct HiddenGateConfig {
    /// Prepended to the names `gate.0.weight`, ...
    #[serde(default)]
    pub prefix: String,
    /// H, the LLM's hidden size.
    pub hidden_size: usize,
    /// None: one linear layer; Some(n): H -> n -> outputs with ReLU between.
    #[serde(default)]
    pub inner: Option<usize>,
    pub activation: GateActivation,
    pub experts: Vec<usize>,
}

/// A gate on the LLM's own last hidden state of the current token.
#[derive(Clone, Debug)]
pub struct HiddenGate {
    mlp: Mlp,
    activation: GateActivation,
    experts: Vec<usize>,
}

impl HiddenGate {
    pub fn new(mlp: Mlp, activation: GateActivation, experts: Vec<usize>) -> Result<Self> {
        // A softmax gate's class 0 is "no expert"; the other outputs map to experts.
        let expert_outputs = match activation {
            GateActivation::Sigmoid => mlp.out_dim(),
            GateActivation::Softmax => mlp.out_dim().saturating_sub(1),
        };
        check_experts(&experts, expert_outputs, "hidden gate")?;
        Ok(HiddenGate { mlp, activation, experts })
    }

    pub fn load(files: &SafetensorFiles, cfg: &HiddenGateConfig) -> Result<Self> {
        let n_out = match cfg.activation {
            GateActivation::Sigmoid => cfg.experts.len(),
            GateActivation::Softmax => cfg.experts.len() + 1,
        };
        let dims: Vec<usize> = match cfg.inner {
            None => vec![cfg.hidden_size, n_out],
            Some(n) => vec![cfg.hidden_size, n, n_out],
        };
        let mlp = Mlp::load(files, &format!("{}gate", cfg.prefix), &dims)?;
        HiddenGate::new(mlp, cfg.activation, cfg.experts.clone())
    }

    pub fn hidden_size(&self) -> usize {
        self.mlp.in_dim()
    }
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }
    pub fn activation(&self) -> GateActivation {
        self.activation
    }

    /// Probabilities (rows, n_out) for hidden rows (rows, H): one matrix product for
    /// the batch, then the activation per row.
    pub fn probs(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        let n = self.mlp.out_dim();
        let mut p = self.mlp.forward_f32(hidden, rows);
        activate(&mut p, n, self.activation == GateActivation::Softmax);
        p
    }
}

/// One trigger string and the expert it calls.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Trigger {
    pub text: String,
    pub expert: usize,
}

/// Fires when the decoded text ends with one of the trigger strings. When several
/// match, the longest wins (the most specific), then the first declared.
#[derive(Clone, Debug)]
pub struct TriggerGate {
    triggers: Vec<Trigger>,
}

impl TriggerGate {
    pub fn new(triggers: Vec<Trigger>) -> Result<Self> {
        if triggers.is_empty() {
            return Err(Error::Request("trigger gate: no trigger strings".into()));
        }
        if let Some(t) = triggers.iter().find(|t| t.text.is_empty()) {
            return Err(Error::Request(format!(
                "trigger gate: an empty trigger string (for expert {})",
                t.expert
            )));
        }
        Ok(TriggerGate { triggers })
    }
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }
    /// The longest trigger string: how much of the text's tail the gate needs.
    pub fn longest(&self) -> usize {
        self.triggers.iter().map(|t| t.text.len()).max().unwrap_or(0)
    }
    /// The index of the trigger that `text` ends with, if any.
    pub fn matching(&self, text: &str) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, t) in self.triggers.iter().enumerate() {
            if text.ends_with(&t.text) && best.is_none_or(|b| t.text.len() > self.triggers[b].text.len()) {
                best = Some(i);
            }
        }
        best
    }
}

fn check_experts(experts: &[usize], n_out: usize, what: &str) -> Result<()> {
    if experts.is_empty() {
        return Err(Error::Request(format!("{what}: no experts declared")));
    }
    if experts.len() != n_out {
        return Err(Error::tensor(
            what,
            format!(
                "has {n_out} expert outputs, but {} experts are mapped to it ({experts:?})",
                experts.len()
            ),
        ));
    }
    Ok(())
}

/// What scores a sequence.
#[derive(Clone, Debug)]
pub enum Gate {
    Piern(PiernGate),
    Hidden(HiddenGate),
    Trigger(TriggerGate),
}

impl Gate {
    /// Every expert index this gate can fire, for the manifest to check against
    /// its experts.
    pub fn experts(&self) -> Vec<usize> {
        match self {
            Gate::Piern(g) => g.experts.clone(),
            Gate::Hidden(g) => g.experts.clone(),
            Gate::Trigger(g) => g.triggers.iter().map(|t| t.expert).collect(),
        }
    }
    pub fn needs_text(&self) -> bool {
        matches!(self, Gate::Trigger(_))
    }
    pub fn needs_hidden(&self) -> bool {
        matches!(self, Gate::Hidden(_))
    }
}

// ----------------------------------------------------------------------------
// Policy, state, step
// ----------------------------------------------------------------------------

/// When a gate's score becomes a firing.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct RouterPolicy {
    /// Fire when the probability is > threshold (the reference: 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Steps after an injected result during which the router does not fire.
    #[serde(default)]
    pub refractory: usize,
    /// Firings per answer at most.
    #[serde(default = "default_max_firings")]
    pub max_firings: usize,
}

fn default_threshold() -> f32 {
    0.5
}
fn default_max_firings() -> usize {
    usize::MAX
}

impl Default for RouterPolicy {
    /// The reference's behaviour: > 0.5, no refractory span, no limit.
    fn default() -> Self {
        RouterPolicy { threshold: 0.5, refractory: 0, max_firings: usize::MAX }
    }
}

/// One sequence's router state; its size is fixed when it is made (E f64 for a
/// piern gate, nothing for the others) and never grows with the answer.
#[derive(Clone, Debug)]
pub struct RouterState {
    /// (E) sum of the embeddings of the tokens generated so far (piern only). f64
    /// so that thousands of additions do not drift from the from-scratch mean.
    sum: Vec<f64>,
    count: u64,
    refractory: usize,
    /// Steps left in the current refractory span.
    cooldown: usize,
    firings: usize,
}

impl RouterState {
    /// An expert's result was appended to this sequence: the next `refractory` steps
    /// do not fire.
    pub fn injected(&mut self) {
        self.cooldown = self.refractory;
    }
    /// Tokens in the running mean (generated and injected).
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn firings(&self) -> usize {
        self.firings
    }
    /// Steps left before the router may fire again.
    pub fn cooldown(&self) -> usize {
        self.cooldown
    }
    /// The running mean (E) as the gate reads it; empty for gates without one.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|s| (s / n) as f32).collect()
    }
    /// Number of f64 values held: the state's size, constant over an answer.
    pub fn len(&self) -> usize {
        self.sum.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sum.is_empty()
    }
    /// Back to a fresh answer (same size).
    pub fn reset(&mut self) {
        self.sum.iter_mut().for_each(|s| *s = 0.0);
        self.count = 0;
        self.cooldown = 0;
        self.firings = 0;
    }
}

/// The step's inputs for the whole batch, row i for `states[i]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouterInputs<'a> {
    /// (B) the token each sequence just generated.
    pub tokens: &'a [u32],
    /// (B) the decoded text of each answer so far, or any suffix of it at least as
    /// long as the longest trigger; needed by trigger gates only.
    pub texts: Option<&'a [&'a str]>,
    /// (B, H) the LLM's last hidden state row of the sequence's newest token; needed by
    /// hidden gates only.
    pub hidden: Option<&'a [f32]>,
    /// (B, outputs) a hidden gate's probabilities already computed inside the decode
    /// step (`Backend::gate`); when given, `hidden` is not needed.
    pub probs: Option<&'a [f32]>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Continue,
    Fire { expert: usize, prob: f32 },
}

/// A gate and its policy.
#[derive(Clone, Debug)]
pub struct Router {
    gate: Gate,
    policy: RouterPolicy,
}

impl Router {
    pub fn new(gate: Gate, policy: RouterPolicy) -> Result<Self> {
        if !(policy.threshold.is_finite() && (0.0..1.0).contains(&policy.threshold)) {
            return Err(Error::Request(format!("router: threshold {} is not in [0, 1)", policy.threshold)));
        }
        Ok(Router { gate, policy })
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }
    pub fn policy(&self) -> &RouterPolicy {
        &self.policy
    }

    /// A fresh state for a new answer.
    pub fn new_state(&self) -> RouterState {
        let dim = match &self.gate {
            Gate::Piern(g) => g.embed.dim,
            _ => 0,
        };
        RouterState {
            sum: vec![0.0; dim],
            count: 0,
            refractory: self.policy.refractory,
            cooldown: 0,
            firings: 0,
        }
    }

    /// Adds tokens the router did not see through `step` (an injected result) to the
    /// running mean; a no-op for gates without one. Does not count as steps.
    pub fn absorb(&self, state: &mut RouterState, tokens: &[u32]) -> Result<()> {
        if let Gate::Piern(g) = &self.gate {
            self.check_state(state, g)?;
            for &t in tokens {
                g.embed.check(t)?;
            }
            for &t in tokens {
                g.embed.add_row(t, &mut state.sum);
            }
            state.count += tokens.len() as u64;
        }
        Ok(())
    }

    fn check_state(&self, state: &RouterState, g: &PiernGate) -> Result<()> {
        if state.sum.len() != g.embed.dim {
            return Err(Error::Request(format!(
                "router: a state of size {} does not belong to this router (E = {})",
                state.sum.len(),
                g.embed.dim
            )));
        }
        Ok(())
    }

    /// One decode step for the batch: updates every state with its new token and
    /// returns one decision per sequence. Inputs are checked before any state is
    /// touched, so an error leaves the states as they were.
    pub fn step(&self, states: &mut [&mut RouterState], inputs: RouterInputs) -> Result<Vec<Decision>> {
        let b = states.len();
        if inputs.tokens.len() != b {
            return Err(Error::Request(format!("router: {} tokens for {b} sequences", inputs.tokens.len())));
        }
        // probs: (B, n_classes) after the activation; `class_expert(j)` maps a class.
        let (probs, n_classes): (Vec<f32>, usize) = match &self.gate {
            Gate::Piern(g) => {
                for (s, &t) in states.iter().zip(inputs.tokens) {
                    self.check_state(s, g)?;
                    g.embed.check(t)?;
                }
                let e = g.embed.dim;
                let mut means = vec![0f32; b * e]; // (B, E)
                for (i, (s, &t)) in states.iter_mut().zip(inputs.tokens).enumerate() {
                    g.embed.add_row(t, &mut s.sum);
                    s.count += 1;
                    let n = s.count as f64;
                    means[i * e..(i + 1) * e].iter_mut().zip(&s.sum).for_each(|(m, &x)| *m = (x / n) as f32);
                }
                let p = g.mlp.forward_f32(&means, b).into_iter().map(sigmoid).collect();
                (p, g.mlp.out_dim())
            }
            Gate::Hidden(g) if inputs.probs.is_some() => {
                let p = inputs.probs.expect("matched");
                if p.len() != b * g.mlp.out_dim() {
                    return Err(Error::Request(format!(
                        "router: {} gate probabilities for {b} sequences of {} outputs",
                        p.len(),
                        g.mlp.out_dim()
                    )));
                }
                (p.to_vec(), g.mlp.out_dim())
            }
            Gate::Hidden(g) => {
                let h = g.hidden_size();
                let hidden = inputs.hidden.ok_or_else(|| {
                    Error::Request("router: a hidden gate needs the hidden state rows".into())
                })?;
                if hidden.len() != b * h {
                    return Err(Error::Request(format!(
                        "router: {} hidden values for {b} sequences of hidden size {h}",
                        hidden.len()
                    )));
                }
                (g.probs(hidden, b), g.mlp.out_dim())
            }
            Gate::Trigger(g) => {
                let texts = inputs
                    .texts
                    .ok_or_else(|| Error::Request("router: a trigger gate needs the decoded texts".into()))?;
                if texts.len() != b {
                    return Err(Error::Request(format!("router: {} texts for {b} sequences", texts.len())));
                }
                let n = g.triggers.len();
                let mut p = vec![0f32; b * n];
                for (i, text) in texts.iter().enumerate() {
                    if let Some(j) = g.matching(text) {
                        p[i * n + j] = 1.0;
                    }
                }
                (p, n)
            }
        };

        let mut out = Vec::with_capacity(b);
        for (i, s) in states.iter_mut().enumerate() {
            if s.cooldown > 0 {
                s.cooldown -= 1;
                out.push(Decision::Continue);
                continue;
            }
            if s.firings >= self.policy.max_firings {
                out.push(Decision::Continue);
                continue;
            }
            let row = &probs[i * n_classes..(i + 1) * n_classes];
            let decision = match self.best(row) {
                Some((expert, prob)) if prob > self.policy.threshold => Decision::Fire { expert, prob },
                _ => Decision::Continue,
            };
            if matches!(decision, Decision::Fire { .. }) {
                s.firings += 1;
            }
            out.push(decision);
        }
        Ok(out)
    }

    /// A hidden gate's experts for one row of probabilities, most probable first
    /// ("no expert" left out); empty for the other gates, whose choice has no runner-up.
    pub fn ranked(&self, row: &[f32]) -> Vec<usize> {
        let Gate::Hidden(g) = &self.gate else { return Vec::new() };
        let skip = usize::from(g.activation == GateActivation::Softmax);
        let mut classes: Vec<usize> = (skip..row.len().min(g.experts.len() + skip)).collect();
        classes.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        classes.into_iter().map(|j| g.experts[j - skip]).collect()
    }

    /// The best class of one row (first on ties) as (expert, probability), or None
    /// when it is a softmax gate's "no expert" class (or a trigger gate matched none).
    fn best(&self, row: &[f32]) -> Option<(usize, f32)> {
        let mut j = 0;
        for (k, &p) in row.iter().enumerate() {
            if p > row[j] {
                j = k;
            }
        }
        match &self.gate {
            Gate::Piern(g) => Some((g.experts[j], row[j])),
            Gate::Hidden(g) => match g.activation {
                GateActivation::Sigmoid => Some((g.experts[j], row[j])),
                GateActivation::Softmax if j == 0 => None,
                GateActivation::Softmax => Some((g.experts[j - 1], row[j])),
            },
            Gate::Trigger(g) => (row[j] > 0.0).then(|| (g.triggers[j].expert, row[j])),
        }
    }
}
