//! One PiMoE composition, built from a manifest: the router, and per expert its
//! T2C module, input order, numerical model and result format. The scheduler calls
//! `route` for every sequence that produced a token in a step, then `compute` once
//! per expert with all the sequences that fired for it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::grid::Analysis;
use crate::model::safetensors::SafetensorFiles;
use crate::model::ModelConfig;
use crate::pimoe::experts::{
    Activation, DeepONet, DeepONetSpec, Expert, LinearSolve, Mlp, PowerFlow, Precision, RowResult, WeightFile,
};
use crate::pimoe::format::ResultFormat;
use crate::pimoe::manifest::{
    check_on_failure, AfterResult, Manifest, ModelSpec, RouterSpec, T2cSpec, DEFAULT_ON_FAILURE,
};
use crate::pimoe::router::{
    Decision, Gate, HiddenGate, HiddenGateConfig, PiernGate, PiernGateConfig, Router, RouterInputs,
    RouterPolicy, Trigger, TriggerGate,
};
use crate::pimoe::t2c::{grid_inputs, ExtractPattern, InputOrder, LearnedT2c, LearnedT2cConfig, Refusal};

pub use crate::pimoe::router::RouterState;

/// What became of one routed sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum Computed {
    Ok {
        text: String,
        inputs: Vec<f64>,
        outputs: Vec<f64>,
    },
    /// T2C or the expert could not produce a number: why (without the expert's name).
    Failed(String),
}

pub enum T2c {
    Extract(ExtractPattern),
    /// A power-flow question in the grid text form (src/grid/), for the linear-solve
    /// expert (DC) or the power-flow expert (AC).
    Grid(Analysis),
    /// Over the mean of the LLM's last hidden states across the context.
    Learned(LearnedT2c),
}

pub struct Slot {
    pub name: String,
    pub t2c: T2c,
    /// A learned T2C's own backbone model directory; None: the reasoning LLM.
    pub backbone: Option<PathBuf>,
    pub order: Option<InputOrder>,
    pub expert: Expert,
    pub format: ResultFormat,
}

pub struct Composition {
    pub router: Router,
    pub experts: Vec<Slot>,
    pub after_result: AfterResult,
    /// The text standing in for a result no expert could compute (`on_failure`).
    pub on_failure: String,
}

/// What `route` needs of the LLM for a sequence beyond its token and text.
pub struct SeqView<'a> {
    pub token: u32,
    pub text: &'a str,
    /// A hidden-state gate's probabilities for the token, computed inside the
    /// decode step (`Llm::forward_sample_with`).
    pub gate: Option<&'a [f32]>,
}

impl Composition {
    /// Builds everything the manifest names; `base` is the manifest's folder and
    /// `hidden_size`/`vocab` come from the LLM.
    pub fn load(m: &Manifest, base: &Path, hidden_size: usize, vocab: usize) -> Result<Self> {
        let at = |p: &PathBuf| base.join(p);
        let idx = |names: &[String]| names.iter().map(|n| m.expert_index(n)).collect::<Vec<_>>();
        let (gate, policy) = match &m.router {
            RouterSpec::Piern { weights, experts, vocab: rows, embed_dim, hidden, prefix, policy } => {
                let files = SafetensorFiles::open_file(&at(weights))?;
                let cfg = PiernGateConfig {
                    prefix: prefix.clone(),
                    vocab: rows.unwrap_or(vocab),
                    embed_dim: *embed_dim,
                    hidden: *hidden,
                    experts: idx(experts),
                };
                (Gate::Piern(PiernGate::load(&files, &cfg)?), policy)
            }
            RouterSpec::HiddenGate { weights, experts, inner, activation, prefix, policy } => {
                let files = SafetensorFiles::open_file(&at(weights))?;
                let cfg = HiddenGateConfig {
                    prefix: prefix.clone(),
                    hidden_size,
                    inner: *inner,
                    activation: *activation,
                    experts: idx(experts),
                };
                (Gate::Hidden(HiddenGate::load(&files, &cfg)?), policy)
            }
            RouterSpec::Trigger { triggers, policy } => {
                let t = triggers
                    .iter()
                    .map(|t| Trigger { text: t.text.clone(), expert: m.expert_index(&t.expert) });
                (Gate::Trigger(TriggerGate::new(t.collect())?), policy)
            }
        };
        let d = RouterPolicy::default();
        let policy = RouterPolicy {
            threshold: policy.threshold.unwrap_or(d.threshold),
            refractory: policy.refractory.unwrap_or(d.refractory),
            max_firings: policy.max_firings.unwrap_or(d.max_firings),
        };
        let router = Router::new(gate, policy)?;

        let mut experts = Vec::new();
        for (i, e) in m.experts.iter().enumerate() {
            let field = |f: &str| format!("experts[{i}] (`{}`).{f}", e.name);
            let bad = |f: &str, msg: String| Error::Request(format!("manifest: {}: {msg}", field(f)));
            let t2c = match &e.t2c {
                T2cSpec::Extract { pattern: Some(pattern), .. } => {
                    T2c::Extract(ExtractPattern::parse(pattern).map_err(|msg| bad("t2c.pattern", msg))?)
                }
                T2cSpec::Extract { grid: Some(analysis), .. } => T2c::Grid(*analysis),
                T2cSpec::Extract { .. } => {
                    return Err(bad("t2c", "extract needs `pattern` or `grid`".into()))
                }
                T2cSpec::Piern { weights, backbone, outputs, inner, prefix } => {
                    let files = SafetensorFiles::open_file(&at(weights))?;
                    let hidden_size = match backbone {
                        Some(dir) => {
                            let c = ModelConfig::load(&at(dir).join("config.json"))?;
                            if c.vocab_size != vocab {
                                let msg = format!(
                                    "a vocabulary of {} tokens, the LLM's has {vocab}: they must share a tokenizer",
                                    c.vocab_size
                                );
                                return Err(bad("t2c.backbone", msg));
                            }
                            c.hidden_size
                        }
                        None => hidden_size,
                    };
                    let cfg = LearnedT2cConfig {
                        prefix: prefix.clone(),
                        hidden_size,
                        inner: *inner,
                        outputs: *outputs,
                    };
                    T2c::Learned(LearnedT2c::load(&files, &cfg)?)
                }
            };
            let backbone = match &e.t2c {
                T2cSpec::Piern { backbone: Some(dir), .. } => Some(at(dir)),
                _ => None,
            };
            let order = match &e.order {
                Some(o) => Some(InputOrder::parse(o).map_err(|msg| bad("order", msg))?),
                None => None,
            };
            let act = |a: &str| {
                Activation::from_name(a).ok_or_else(|| bad("expert.activation", format!("unknown `{a}`")))
            };
            let prec = |p: &str| {
                Precision::from_name(p)
                    .ok_or_else(|| bad("expert.precision", format!("unknown `{p}` (f64 or f32)")))
            };
            let expert = match &e.expert {
                ModelSpec::Deeponet { weights, branch, trunk, activation, precision } => {
                    let mut spec = DeepONetSpec::new(branch, trunk);
                    spec.activation = act(activation)?;
                    spec.precision = prec(precision)?;
                    Expert::DeepONet(DeepONet::load(&at(weights), &spec)?)
                }
                ModelSpec::Mlp { weights, widths, activation, precision, prefix } => {
                    let file = WeightFile::open(&at(weights))?;
                    let prefix = prefix.as_deref().unwrap_or("layers");
                    Expert::Mlp(Mlp::load(&file, prefix, 2, widths, act(activation)?, prec(precision)?)?)
                }
                ModelSpec::LinearSolve { n } => {
                    Expert::LinearSolve(LinearSolve::new(*n).map_err(|e| bad("expert", e.to_string()))?)
                }
                ModelSpec::PowerFlow { max_buses, max_branches, tolerance, max_iterations } => {
                    let pf = PowerFlow::new(*max_buses, *max_branches, *tolerance, *max_iterations);
                    Expert::PowerFlow(pf.map_err(|e| bad("expert", e.to_string()))?)
                }
            };
            if let T2c::Grid(analysis) = &t2c {
                let needs = match analysis {
                    Analysis::Dc => "linear_solve",
                    Analysis::Ac => "power_flow",
                };
                if expert.kind() != needs {
                    let msg = format!(
                        "a grid {} T2C feeds a {needs} expert, not {}",
                        analysis.name(),
                        expert.kind()
                    );
                    return Err(bad("t2c.grid", msg));
                }
                if order.is_some() {
                    return Err(bad(
                        "order",
                        "a grid T2C builds the expert's inputs itself; leave it out".into(),
                    ));
                }
            }
            // What T2C gives, when every extraction gives the same number of values.
            let (t2c_field, t2c_len) = match &t2c {
                T2c::Extract(p) => ("t2c.pattern", p.output_len()),
                T2c::Grid(_) => ("t2c.grid", None),
                T2c::Learned(l) => ("t2c.outputs", Some(l.outputs())),
            };
            // The order's output (or T2C's, without one) must be exactly the expert's inputs.
            let (field, produced) = match &order {
                Some(o) => {
                    // An index past T2C's values would otherwise fail only when the expert fires.
                    if let (Some(n), Some(&top)) = (t2c_len, o.groups().iter().flatten().max()) {
                        if top >= n {
                            return Err(bad("order", format!("reads value {top}, but T2C gives {n} values")));
                        }
                    }
                    ("order", Some(o.groups().iter().map(Vec::len).sum::<usize>()))
                }
                None => (t2c_field, t2c_len),
            };
            if let Some(n) = produced.filter(|&n| n != expert.n_inputs()) {
                return Err(bad(
                    field,
                    format!("gives {n} inputs, the {} expert takes {}", expert.kind(), expert.n_inputs()),
                ));
            }
            let format =
                ResultFormat::new(&e.format, expert.n_outputs()).map_err(|msg| bad("format", msg))?;
            experts.push(Slot { name: e.name.clone(), t2c, backbone, order, expert, format });
        }
        let on_failure = m.on_failure.clone().unwrap_or_else(|| DEFAULT_ON_FAILURE.to_string());
        check_on_failure(&on_failure)
            .map_err(|msg| Error::Request(format!("manifest: on_failure: {msg}")))?;
        Ok(Composition { router, experts, after_result: m.after_result, on_failure })
    }

    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    pub fn expert_name(&self, i: usize) -> &str {
        &self.experts[i].name
    }

    /// The index of the expert called `name`.
    pub fn expert_named(&self, name: &str) -> Option<usize> {
        self.experts.iter().position(|e| e.name == name)
    }

    pub fn router_state(&self) -> RouterState {
        self.router.new_state()
    }

    /// The hidden-state gate, whose probabilities the decode step must compute
    /// (`SeqView::gate`); None for the other router kinds.
    pub fn hidden_gate(&self) -> Option<&HiddenGate> {
        match self.router.gate() {
            Gate::Hidden(g) => Some(g),
            _ => None,
        }
    }

    /// Whether some expert's T2C pools the reasoning LLM's own hidden states (so
    /// each step must bring them back).
    pub fn needs_pooled_hidden(&self) -> bool {
        self.experts.iter().any(|e| matches!(e.t2c, T2c::Learned(_)) && e.backbone.is_none())
    }

    /// One decision per sequence: the experts to try, the one it fired first and then
    /// the gate's other experts by probability (a hidden gate), or none when it did
    /// not fire. The runners-up are for a T2C that finds the question is not its
    /// expert's (an AC question sent to the DC expert): the gate decides when a number
    /// must be computed, and T2C checks exactly which computation it is.
    pub fn route(&self, states: &mut [&mut RouterState], seqs: &[SeqView]) -> Result<Vec<Vec<usize>>> {
        let tokens: Vec<u32> = seqs.iter().map(|s| s.token).collect();
        let texts: Vec<&str> = seqs.iter().map(|s| s.text).collect();
        let probs: Option<Vec<f32>> = match self.hidden_gate() {
            Some(_) => {
                let rows: Option<Vec<&[f32]>> = seqs.iter().map(|s| s.gate).collect();
                let rows = rows
                    .ok_or_else(|| Error::Request("the hidden-gate router needs the step's gate".into()))?;
                Some(rows.concat())
            }
            None => None,
        };
        let inputs =
            RouterInputs { tokens: &tokens, texts: Some(&texts), hidden: None, probs: probs.as_deref() };
        let width = probs.as_ref().map_or(0, |p| p.len() / seqs.len().max(1));
        Ok(self
            .router
            .step(states, inputs)?
            .into_iter()
            .enumerate()
            .map(|(i, d)| match d {
                Decision::Fire { expert, .. } => {
                    let row = probs.as_ref().map_or(&[][..], |p| &p[i * width..(i + 1) * width]);
                    let rest = self.router.ranked(row).into_iter().filter(|&x| x != expert);
                    std::iter::once(expert).chain(rest).collect()
                }
                Decision::Continue => Vec::new(),
            })
            .collect())
    }

    /// Tells the router that `tokens` of an expert's result were appended.
    pub fn injected(&self, state: &mut RouterState, tokens: &[u32]) -> Result<()> {
        self.router.absorb(state, tokens)?;
        state.injected();
        Ok(())
    }

    /// T2C for a routed batch: the expert's inputs per sequence, or why there are
    /// none. `contexts` are the sequences' texts (prompt and answer so far); `pooled`
    /// their mean last hidden states, (rows, H) flat, when a learned T2C needs them.
    pub fn inputs(
        &self,
        expert: usize,
        contexts: &[String],
        pooled: Option<&[f64]>,
    ) -> Vec<std::result::Result<Vec<f64>, Refusal>> {
        let slot = &self.experts[expert];
        let raw: Vec<std::result::Result<Vec<f64>, Refusal>> = match &slot.t2c {
            // A text that does not fit the pattern may fit another expert's.
            T2c::Extract(p) => contexts
                .iter()
                .map(|c| p.extract(c).map(|x| x.values).map_err(|e| Refusal::pass_on(e.to_string())))
                .collect(),
            T2c::Grid(analysis) => contexts.iter().map(|c| grid_inputs(*analysis, &slot.expert, c)).collect(),
            T2c::Learned(l) => match pooled {
                Some(means) => {
                    let out = l.batch(means, contexts.len());
                    out.chunks(l.outputs()).map(|r| Ok(r.to_vec())).collect()
                }
                None => {
                    vec![
                        Err(Refusal::fails("learned T2C: no hidden states were pooled".into()));
                        contexts.len()
                    ]
                }
            },
        };
        raw.into_iter()
            .map(|r| match (&slot.order, r) {
                (Some(o), Ok(v)) => o.apply_flat(&v).map_err(|e| Refusal::fails(format!("input order: {e}"))),
                (_, r) => r,
            })
            .collect()
    }

    /// Formats the expert's per-row `results` for the rows whose `inputs` were Ok
    /// (in order), and carries the T2C failures through.
    pub fn finish(
        &self,
        expert: usize,
        inputs: Vec<std::result::Result<Vec<f64>, Refusal>>,
        results: Vec<RowResult>,
    ) -> Vec<Computed> {
        let slot = &self.experts[expert];
        let mut results = results.into_iter();
        inputs
            .into_iter()
            .map(|r| match r {
                Err(e) => Computed::Failed(e.reason),
                Ok(x) => match results.next() {
                    Some(Ok(y)) => Computed::Ok { text: slot.format.render(&y), inputs: x, outputs: y },
                    Some(Err(e)) => Computed::Failed(e),
                    None => Computed::Failed("the expert returned too few rows".into()),
                },
            })
            .collect()
    }

    /// T2C, the expert on the CPU, and formatting, for one routed batch.
    pub fn compute(&self, expert: usize, contexts: &[String], pooled: Option<&[f64]>) -> Vec<Computed> {
        let inputs = self.inputs(expert, contexts, pooled);
        let (flat, rows) = ok_rows(&inputs);
        let results = self.experts[expert].expert.run(&flat, rows);
        self.finish(expert, inputs, results)
    }
}

/// The Ok rows of a T2C batch, flat, and how many there are.
pub fn ok_rows<E>(inputs: &[std::result::Result<Vec<f64>, E>]) -> (Vec<f64>, usize) {
    let ok: Vec<&Vec<f64>> = inputs.iter().filter_map(|r| r.as_ref().ok()).collect();
    (ok.iter().flat_map(|v| v.iter().copied()).collect(), ok.len())
}
