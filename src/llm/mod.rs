//! The decoder-only transformer (Llama / Qwen2), written once against `Backend`.
//!
//! `forward` takes one flat batch of tokens from several sequences, each at its own
//! position: prefill chunks, single decode tokens and injected (extend) spans all go
//! through the same call. That is the interface the scheduler drives.

use std::path::Path;
use std::time::Instant;

use crate::backend::cpu::sampling::NON_FINITE;
use crate::backend::{AttnPlan, AttnShape, Backend, GateLayer, SeqSpan, SAMPLE_PARAMS};
use crate::error::{Error, Result};
use crate::kv::{KvCache, BLOCK_SIZE};
use crate::model::gguf_model::GgufModel;
use crate::model::quant::QuantMatrix;
use crate::model::safetensors::{HostData, HostTensor, SafetensorFiles};
use crate::model::LoadOptions;
use crate::model::ModelConfig;

struct Layer<W> {
    input_norm: W,
    /// q, k and v projections stacked: ((hq + 2 hk) * head_dim, hidden)
    qkv: W,
    qkv_bias: Option<W>,
    o: W,
    post_norm: W,
    /// gate and up stacked: (2 * inter, hidden)
    gate_up: W,
    down: W,
}

pub struct Llm<B: Backend> {
    pub config: ModelConfig,
    embed: B::Weight,
    layers: Vec<Layer<B::Weight>>,
    norm: B::Weight,
    /// None when tied to the embedding.
    lm_head: Option<B::Weight>,
    /// Bytes of parameters read for one decode token (all matrices, embedding row aside).
    pub weight_bytes: usize,
}

/// Which logits a sequence of the step wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// One sequence's part of a step.
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    /// Position of tokens[0]; the cache already holds positions 0..start.
    pub start: usize,
    /// Covers start + tokens.len() positions (see `KvCache::reserve`).
    pub block_table: &'a [u32],
    pub logits: Logits,
}

impl<B: Backend> Llm<B> {
    /// Loads config.json and the safetensors of `dir`, checking every tensor.
    pub fn load(backend: &B, dir: &Path) -> Result<Self> {
        Self::load_with(backend, dir, LoadOptions::default())
    }

    pub fn load_with(backend: &B, dir: &Path, options: LoadOptions) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = ModelConfig::load(&config_path)?;
        let mut files = SafetensorFiles::open_dir(dir)?;
        files.options = options;
        // Before anything is allocated: sizes that the files cannot back are a wrong
        // config (or a missing shard), better named here than as the first tensor
        // whose shape disagrees. Two bytes is the narrowest float dtype we accept; 4.5
        // bits (Q4_0, Q4_K) the narrowest block type.
        let (params, have) = (config.num_params(), files.tensor_bytes());
        let least = if files.has_quant() { params.saturating_mul(9) / 16 } else { params.saturating_mul(2) };
        if least > have {
            return Err(Error::Config {
                path: config_path,
                msg: format!(
                    "its sizes imply {params} parameters, at least {least} bytes, but the safetensors hold {have} bytes of tensors"
                ),
            });
        }
        Self::from_files(backend, config, &files)
    }

    pub fn from_files(backend: &B, config: ModelConfig, files: &SafetensorFiles) -> Result<Self> {
        // Weights are held at two bytes or more per parameter, or as stored when some
        // are block-quantized.
        let need =
            if files.has_quant() { files.tensor_bytes() } else { config.num_params().saturating_mul(2) };
        Self::build(backend, config, need, |name, shape| files.load(name, shape))
    }

    /// The model of a GGUF file, every matrix in the type the file stores.
    pub fn from_gguf(backend: &B, model: &GgufModel, options: LoadOptions) -> Result<Self> {
        Self::build(backend, model.config.clone(), model.tensor_bytes(), |name, shape| {
            model.tensor(name, shape, options)
        })
    }

    /// A model of `config`'s shapes with random weights (bf16 matrices uniform in
    /// +-1/sqrt(fan-in), norms near 1, small biases), the same for the same seed:
    /// for profiling and shape tests without a download.
    pub fn random(backend: &B, config: ModelConfig, seed: u64) -> Result<Self> {
        let rng = std::cell::RefCell::new(crate::sampling::Rng::new(seed));
        let need = config.num_params().saturating_mul(2);
        Self::build(backend, config, need, |name, shape| {
            let mut r = rng.borrow_mut();
            let n: usize = shape.iter().product();
            let data = if shape.len() == 2 {
                let a = 1.0 / (shape[1] as f32).sqrt();
                HostData::Bf16(
                    (0..n).map(|_| half::bf16::from_f32((r.next_f32() * 2.0 - 1.0) * a).to_bits()).collect(),
                )
            } else if name.ends_with("norm.weight") {
                HostData::F32((0..n).map(|_| 1.0 + (r.next_f32() - 0.5) * 0.2).collect())
            } else {
                HostData::F32((0..n).map(|_| (r.next_f32() - 0.5) * 0.04).collect())
            };
            Ok(HostTensor { name: name.to_string(), shape: shape.to_vec(), data })
        })
    }

    /// The model from a source of named tensors of the given shapes, which will take
    /// about `need` bytes: a model the host cannot hold is an error before the first
    /// allocation, not an abort midway.
    fn build(
        backend: &B,
        config: ModelConfig,
        need: usize,
        source: impl Fn(&str, &[usize]) -> Result<HostTensor>,
    ) -> Result<Self> {
        crate::backend::check_fits(
            backend,
            need,
            &format!("the model's weights ({} parameters)", config.num_params()),
        )?;
        let c = &config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let (q, kv) = (c.num_heads * d, c.num_kv_heads * d);
        let bytes = std::cell::Cell::new(0usize);
        let load = |name: &str, shape: &[usize]| -> Result<HostTensor> {
            let t = source(name, shape)?;
            bytes.set(bytes.get() + t.bytes());
            Ok(t)
        };
        let up = |t: HostTensor| backend.upload_owned(t);

        let embed = load("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let embed_bytes = embed.bytes();
        let embed = up(embed)?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let qkv = stack([
                load(&format!("{p}.self_attn.q_proj.weight"), &[q, h])?,
                load(&format!("{p}.self_attn.k_proj.weight"), &[kv, h])?,
                load(&format!("{p}.self_attn.v_proj.weight"), &[kv, h])?,
            ]);
            let qkv_bias = if c.qkv_bias {
                Some(up(stack([
                    load(&format!("{p}.self_attn.q_proj.bias"), &[q])?,
                    load(&format!("{p}.self_attn.k_proj.bias"), &[kv])?,
                    load(&format!("{p}.self_attn.v_proj.bias"), &[kv])?,
                ]))?)
            } else {
                None
            };
            let gate_up = stack([
                load(&format!("{p}.mlp.gate_proj.weight"), &[c.intermediate_size, h])?,
                load(&format!("{p}.mlp.up_proj.weight"), &[c.intermediate_size, h])?,
            ]);
            layers.push(Layer {
                input_norm: up(load(&format!("{p}.input_layernorm.weight"), &[h])?)?,
                qkv: up(qkv)?,
                qkv_bias,
                o: up(load(&format!("{p}.self_attn.o_proj.weight"), &[h, q])?)?,
                post_norm: up(load(&format!("{p}.post_attention_layernorm.weight"), &[h])?)?,
                gate_up: up(gate_up)?,
                down: up(load(&format!("{p}.mlp.down_proj.weight"), &[h, c.intermediate_size])?)?,
            });
        }
        let norm = up(load("model.norm.weight", &[h])?)?;
        let lm_head =
            if c.tie_word_embeddings { None } else { Some(up(load("lm_head.weight", &[c.vocab_size, h])?)?) };
        // Decode reads every matrix once per token; the embedding only one row,
        // unless it doubles as the lm_head.
        let weight_bytes = if c.tie_word_embeddings { bytes.get() } else { bytes.get() - embed_bytes };
        Ok(Llm { config, embed, layers, norm, lm_head, weight_bytes })
    }

    pub fn shape(&self) -> AttnShape {
        AttnShape {
            num_heads: self.config.num_heads,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    /// A KV cache with room for `tokens` positions in total.
    pub fn new_cache(&self, backend: &B, tokens: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(backend, c.num_layers, c.num_kv_heads * c.head_dim, tokens.div_ceil(BLOCK_SIZE))
    }

    /// Exactly `n` greedy tokens after `prompt` on a fresh cache, with no stop tokens:
    /// the plain decode loop that tests and benchmarks compare against. Also returns
    /// the seconds spent in the decode steps (everything after the prefill).
    pub fn greedy(&self, b: &B, prompt: &[u32], n: usize) -> Result<(Vec<u32>, f64)> {
        let mut cache = self.new_cache(b, prompt.len() + n);
        let mut table = Vec::new();
        cache.reserve(&mut table, prompt.len() + n)?;
        let greedy = [[0.0, 0.0, 1.0, 0.0]];
        let step = [SeqChunk { tokens: prompt, start: 0, block_table: &table, logits: Logits::Last }];
        let mut out = Vec::with_capacity(n);
        let push = |out: &mut Vec<u32>, toks: Vec<u32>| {
            if toks.contains(&NON_FINITE) {
                return Err(Error::Request(format!(
                    "the model's logits are NaN or infinite at generated token {}",
                    out.len()
                )));
            }
            out.extend(toks);
            Ok(())
        };
        push(&mut out, self.forward_sample(b, &mut cache, &step, &greedy)?)?;
        let t = Instant::now();
        while out.len() < n {
            let tok = [out[out.len() - 1]];
            let start = prompt.len() + out.len() - 1;
            let step = [SeqChunk { tokens: &tok, start, block_table: &table, logits: Logits::Last }];
            push(&mut out, self.forward_sample(b, &mut cache, &step, &greedy)?)?;
        }
        Ok((out, t.elapsed().as_secs_f64()))
    }

    /// Runs one step and returns the requested logits rows, flat (rows, vocab), in
    /// the order of `chunks` (all rows of an `All` chunk, one of a `Last` chunk).
    pub fn forward(&self, b: &B, cache: &mut KvCache<B>, chunks: &[SeqChunk]) -> Result<Vec<f32>> {
        let plan = self.plan(b, chunks)?;
        let logits = b.step(|| {
            self.run(b, cache, &plan, false, None).logits.map(|t| b.to_host(&t)).unwrap_or_default()
        });
        b.check()?;
        Ok(logits)
    }

    /// Runs one step and samples one token per logits row on the device, so that no
    /// logits row crosses to the host. `params` holds one row of sampling parameters
    /// per logits row (see `backend::SAMPLE_PARAMS`). A pure decode step names its
    /// shape so that the backend can replay it as a graph.
    pub fn forward_sample(
        &self,
        b: &B,
        cache: &mut KvCache<B>,
        chunks: &[SeqChunk],
        params: &[[f32; SAMPLE_PARAMS]],
    ) -> Result<Vec<u32>> {
        let plan = self.plan(b, chunks)?;
        plan.check_params(params.len())?;
        if params.is_empty() {
            self.forward(b, cache, chunks)?;
            return Ok(Vec::new());
        }
        let decode = chunks.iter().all(|c| c.tokens.len() == 1 && c.logits == Logits::Last);
        let graph = decode.then_some((chunks.len(), plan.attn.max_blocks));
        let flat: Vec<f32> = params.iter().flatten().copied().collect();
        b.push_range(if decode { "decode step" } else { "prefill step" });
        let tokens = b.step_tokens(graph, || {
            let logits =
                self.run(b, cache, &plan, false, None).logits.expect("params.len() == logit rows > 0");
            let mut out = b.index(&vec![0; params.len()]);
            b.sample(&mut out, &logits, &b.tensor_from(&flat), self.config.vocab_size);
            out
        });
        b.pop_range();
        tokens
    }

    /// Like `forward_sample`, with what a PiMoE router and a learned T2C read of the
    /// step: with `want_hidden` the last hidden state (after the final norm, as
    /// transformers' `hidden_states[-1]`) of every token, (n, hidden); with a `gate`
    /// its probabilities for every sampled row, computed on the device inside the
    /// step for the whole batch in one launch, (rows, gate outputs). Always eager.
    pub fn forward_sample_with(
        &self,
        b: &B,
        cache: &mut KvCache<B>,
        chunks: &[SeqChunk],
        params: &[[f32; SAMPLE_PARAMS]],
        want_hidden: bool,
        gate: Option<&DeviceGate<B>>,
    ) -> Result<StepOutput> {
        let plan = self.plan(b, chunks)?;
        plan.check_params(params.len())?;
        let flat: Vec<f32> = params.iter().flatten().copied().collect();
        // The profiler's names for a model step, as in forward_sample (tests/profile.rs
        // found this path, the one a PiMoE scheduler takes, without them).
        let decode = chunks.iter().all(|c| c.tokens.len() == 1 && c.logits == Logits::Last);
        b.push_range(if decode { "decode step" } else { "prefill step" });
        let out = b.step(|| {
            let run = self.run(b, cache, &plan, want_hidden, gate);
            let tokens = run.logits.map(|l| {
                let mut out = b.index(&vec![0; params.len()]);
                b.sample(&mut out, &l, &b.tensor_from(&flat), self.config.vocab_size);
                b.read_index(&out)
            });
            StepOutput {
                tokens: tokens.unwrap_or_default(),
                hidden: run.hidden.map(|h| b.to_host(&h)).unwrap_or_default(),
                gate: run.gate.map(|g| b.to_host(&g)).unwrap_or_default(),
            }
        });
        b.pop_range();
        b.check()?;
        Ok(out)
    }

    /// The mean of the last hidden states (after the final norm) over `tokens` run
    /// from position 0 on a fresh cache, in prefill chunks: a learned T2C's input
    /// when it has its own backbone.
    pub fn pooled_hidden(&self, b: &B, tokens: &[u32], chunk: usize) -> Result<Vec<f64>> {
        let h = self.config.hidden_size;
        let mut cache = self.new_cache(b, tokens.len());
        let mut table = Vec::new();
        cache.reserve(&mut table, tokens.len())?;
        let mut sum = vec![0f64; h];
        for (i, part) in tokens.chunks(chunk.max(1)).enumerate() {
            let step =
                [SeqChunk { tokens: part, start: i * chunk, block_table: &table, logits: Logits::None }];
            let out = self.forward_sample_with(b, &mut cache, &step, &[], true, None)?;
            for row in out.hidden.chunks_exact(h) {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
            }
        }
        Ok(sum.into_iter().map(|s| s / tokens.len().max(1) as f64).collect())
    }

    /// The step's forward pass, everything on the device: the logits rows it asked
    /// for, with `want_hidden` the final-normed hidden state of every token, and with
    /// a gate its probabilities on the logits rows' hidden states.
    fn run(
        &self,
        b: &B,
        cache: &mut KvCache<B>,
        plan: &StepPlan<B::Index>,
        want_hidden: bool,
        gate: Option<&DeviceGate<B>>,
    ) -> RunOutput<B::Tensor> {
        let c = &self.config;
        let n = plan.ids.len();
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let shape = self.shape();
        let qkv_dim = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
        let q_dim = c.num_heads * c.head_dim;

        let ids = b.index(&plan.ids);
        let mut x = b.scratch(n * h); // (n, h) residual stream
        let mut xn = b.scratch(n * h); // (n, h) normed input of a sublayer
        let mut qkv = b.scratch(n * qkv_dim);
        let mut att = b.scratch(n * q_dim);
        let mut proj = b.scratch(n * h); // (n, h) o_proj / down_proj output, where not added in place
        let mut gate_up = b.scratch(n * 2 * inter);
        let mut act = b.scratch(n * inter);

        // Each sublayer's norm goes with the projection after it, and its residual
        // add with the projection that ends it (on the GPU, for decode, one kernel
        // each; see Backend::rmsnorm_matmul and matmul_add).
        let eps = c.rms_norm_eps;
        b.embed(&mut x, &self.embed, &ids, h);
        for (l, layer) in self.layers.iter().enumerate() {
            b.push_range("attention");
            b.rmsnorm_matmul(
                &mut qkv,
                &mut xn,
                &x,
                &layer.input_norm,
                eps,
                &layer.qkv,
                layer.qkv_bias.as_ref(),
                h,
                n,
            );
            let (kc, vc) = &mut cache.layers[l];
            b.rope_kv_attention(&mut att, &mut qkv, kc, vc, &plan.attn, shape, c.rope_theta);
            b.matmul_add(&mut x, &mut proj, &att, &layer.o, n);
            b.pop_range();

            b.push_range("mlp");
            b.rmsnorm_matmul(&mut gate_up, &mut xn, &x, &layer.post_norm, eps, &layer.gate_up, None, h, n);
            b.swiglu_matmul_add(&mut x, &mut proj, &mut act, &gate_up, &layer.down, inter, n);
            b.pop_range();
        }

        let rows = plan.logit_rows.len();
        let hidden = want_hidden.then(|| {
            let mut all = b.scratch(n * h);
            b.rmsnorm(&mut all, &x, &self.norm, h, eps);
            all
        });
        if rows == 0 {
            return RunOutput { logits: None, hidden, gate: None };
        }
        b.push_range("lm_head");
        // Only the rows whose logits are wanted go through the final norm and lm_head.
        let mut last_n = b.scratch(rows * h);
        if let Some(all) = &hidden {
            b.gather_rows(&mut last_n, all, &b.index(&plan.logit_rows), h);
        } else if rows == n && plan.logit_rows.iter().enumerate().all(|(i, &r)| r as usize == i) {
            // Every token's logits (a decode step): nothing to gather.
            b.rmsnorm(&mut last_n, &x, &self.norm, h, eps);
        } else {
            let mut last = b.scratch(rows * h);
            b.gather_rows(&mut last, &x, &b.index(&plan.logit_rows), h);
            b.rmsnorm(&mut last_n, &last, &self.norm, h, eps);
        }
        let mut logits = b.scratch(rows * c.vocab_size);
        b.matmul(&mut logits, &last_n, self.lm_head.as_ref().unwrap_or(&self.embed), None, rows);
        b.pop_range();
        let gate = gate.map(|g| {
            b.push_range("router gate");
            let mut probs = b.scratch(rows * g.outputs);
            b.gate(&mut probs, &last_n, &g.layers(), g.softmax);
            b.pop_range();
            probs
        });
        RunOutput { logits: Some(logits), hidden, gate }
    }

    fn plan(&self, b: &B, chunks: &[SeqChunk]) -> Result<StepPlan<B::Index>> {
        let c = &self.config;
        let mut max_blocks = chunks.iter().map(|s| s.block_table.len()).max().unwrap_or(0);
        if chunks.iter().all(|c| c.tokens.len() == 1) {
            // Decode steps are replayed as graphs keyed by this width; rounding it
            // up keeps the number of distinct graphs small as sequences grow.
            max_blocks = max_blocks.next_power_of_two();
        }
        let mut ids = Vec::new();
        let mut seqs = Vec::with_capacity(chunks.len());
        let (mut positions, mut token_seq, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        let mut tables = vec![0u32; chunks.len() * max_blocks];
        let mut logit_rows = Vec::new();
        for (s, chunk) in chunks.iter().enumerate() {
            let end = chunk.start + chunk.tokens.len();
            if chunk.tokens.is_empty() {
                return Err(Error::Request(format!("sequence {s} of the step has no tokens")));
            }
            if end > c.max_position_embeddings {
                return Err(Error::Request(format!(
                    "sequence {s} reaches position {end}, beyond the model's context of {} tokens",
                    c.max_position_embeddings
                )));
            }
            if chunk.block_table.len() * BLOCK_SIZE < end {
                return Err(Error::Request(format!(
                    "sequence {s}: block table covers {} positions, the step needs {end}",
                    chunk.block_table.len() * BLOCK_SIZE
                )));
            }
            if let Some(&bad) = chunk.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(Error::Request(format!(
                    "token id {bad} is outside the model's vocabulary of {}",
                    c.vocab_size
                )));
            }
            tables[s * max_blocks..s * max_blocks + chunk.block_table.len()]
                .copy_from_slice(chunk.block_table);
            seqs.push(SeqSpan {
                first: ids.len() as u32,
                len: chunk.tokens.len() as u32,
                start: chunk.start as u32,
            });
            for (i, &tok) in chunk.tokens.iter().enumerate() {
                let pos = chunk.start + i;
                let keep = match chunk.logits {
                    Logits::All => true,
                    Logits::Last => i + 1 == chunk.tokens.len(),
                    Logits::None => false,
                };
                if keep {
                    logit_rows.push(ids.len() as u32);
                }
                ids.push(tok);
                positions.push(pos as u32);
                token_seq.push(s as u32);
                slots.push(
                    chunk.block_table[pos / BLOCK_SIZE] * BLOCK_SIZE as u32 + (pos % BLOCK_SIZE) as u32,
                );
            }
        }
        Ok(StepPlan {
            ids,
            logit_rows,
            attn: AttnPlan {
                positions: b.index(&positions),
                token_seq: b.index(&token_seq),
                slots: b.index(&slots),
                block_tables: b.index(&tables),
                max_blocks,
                block_size: BLOCK_SIZE,
                seqs,
            },
        })
    }
}

/// What `forward_sample_with` brings back to the host.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// One per logits row.
    pub tokens: Vec<u32>,
    /// (n, hidden) when asked for, else empty.
    pub hidden: Vec<f32>,
    /// (logits rows, gate outputs) when a gate was given, else empty.
    pub gate: Vec<f32>,
}

struct RunOutput<T> {
    logits: Option<T>,
    hidden: Option<T>,
    gate: Option<T>,
}

/// A hidden-state router gate's weights on the device, f32: one layer, or two with
/// ReLU between; sigmoid per output or softmax over each row.
pub struct DeviceGate<B: Backend> {
    /// (w (out, in), b (out), in, out) per layer.
    weights: Vec<(B::Tensor, B::Tensor, usize, usize)>,
    outputs: usize,
    softmax: bool,
}

impl<B: Backend> DeviceGate<B> {
    /// `layers`: (w (out, in) row-major, bias (out)) each, in order.
    pub fn new(b: &B, layers: &[(&[f32], &[f32])], softmax: bool) -> Result<Self> {
        let mut weights = Vec::new();
        let mut inputs = None;
        for (i, (w, bias)) in layers.iter().enumerate() {
            let out = bias.len();
            if out == 0 || w.len() % out != 0 || inputs.is_some_and(|n| n * out != w.len()) {
                return Err(Error::tensor(
                    format!("gate layer {i}"),
                    format!("{} weights for {out} outputs", w.len()),
                ));
            }
            let inp = w.len() / out;
            weights.push((b.tensor_from(w), b.tensor_from(bias), inp, out));
            inputs = Some(out);
        }
        if weights.is_empty() || weights.len() > 2 {
            return Err(Error::tensor("gate", format!("{} layers; a gate has one or two", weights.len())));
        }
        let outputs = weights[weights.len() - 1].3;
        Ok(DeviceGate { weights, outputs, softmax })
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The gate alone on rows x (rows, inputs): for tests and benches.
    pub fn run(&self, b: &B, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.weights[0].2;
        let mut probs = b.tensor(rows * self.outputs);
        b.gate(&mut probs, &b.tensor_from(x), &self.layers(), self.softmax);
        b.to_host(&probs)
    }

    fn layers(&self) -> Vec<GateLayer<'_, B::Tensor>> {
        self.weights.iter().map(|(w, b, i, o)| GateLayer { w, b, inputs: *i, outputs: *o }).collect()
    }
}

struct StepPlan<I> {
    ids: Vec<u32>,
    logit_rows: Vec<u32>,
    attn: AttnPlan<I>,
}

impl<I> StepPlan<I> {
    /// One row of sampling parameters per logits row.
    fn check_params(&self, rows: usize) -> Result<()> {
        if rows != self.logit_rows.len() {
            return Err(Error::Request(format!(
                "{rows} sampling parameter rows for {} logits rows",
                self.logit_rows.len()
            )));
        }
        Ok(())
    }
}

/// Concatenates tensors along their first dimension (q/k/v, gate/up). bf16 stays
/// bf16, quantized stays quantized (each part in its own type); any other mix is
/// widened to f32.
fn stack<const N: usize>(parts: [HostTensor; N]) -> HostTensor {
    let name = parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" + ");
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let all_bf16 = parts.iter().all(|p| matches!(p.data, HostData::Bf16(_)));
    let all_quant = parts.iter().all(|p| matches!(p.data, HostData::Quant(_)));
    let data = if all_quant {
        let mut m = QuantMatrix { cols: shape[1], parts: Vec::new() };
        for p in parts {
            if let HostData::Quant(q) = p.data {
                m.append(q);
            }
        }
        HostData::Quant(m)
    } else {
        // Sized exactly: the backend keeps this buffer as the weight (`upload_owned`).
        let total = parts.iter().map(HostTensor::numel).sum();
        if all_bf16 {
            let mut v = Vec::with_capacity(total);
            for p in &parts {
                if let HostData::Bf16(b) = &p.data {
                    v.extend_from_slice(b);
                }
            }
            HostData::Bf16(v)
        } else {
            let mut v = Vec::with_capacity(total);
            for p in &parts {
                v.extend(p.to_f32());
            }
            HostData::F32(v)
        }
    };
    HostTensor { name, shape, data }
}
