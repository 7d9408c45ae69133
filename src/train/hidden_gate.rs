//! `pimoe train router --kind hidden-gate`: a gate on the LLM's final-normed hidden
//! state, trained on answers the LLM generated.
//!
//! Data, one row per answer:
//! `{"prompt": "<the full prompt as the model saw it>", "answer": "<the answer>",
//!   "fire": [{"at": <byte offset in the answer>, "expert": "<name>"}],
//!   "tokens": [<the answer's token ids as generated>]}` (`tokens` optional).
//! A firing at byte `at` means: the expert's result goes right after the answer
//! token that ends at `at`. Without `tokens` the answer is encode(answer); a model
//! may have generated other ids for the same text (BPE segmentations are not
//! unique), so rows recorded from generation should carry the ids.
//!
//! The features are exactly what the runtime's gate reads. The gate decides about
//! the position right after a sequence's newest token from the final-normed hidden
//! state of that token, computed in the step that processes it; when it fires, the
//! expert's result follows that token (and the token sampled from its row is
//! dropped). So with tokens = encode(prompt) ++ the answer's ids, one forward pass
//! per row gives every decision: the one right after the prompt reads
//! h[prompt_len - 1] and is labelled by a firing at byte 0; the one after answer
//! token j reads h[prompt_len + j] and is labelled by the firing at that token's
//! byte end, else "none". Token ends are measured as the runtime streams text (a
//! token that stops inside a UTF-8 character adds no text), and the answer must come
//! back unchanged from its tokens.

use std::path::PathBuf;

use serde::Deserialize;

use super::adam::Adam;
use super::classify::{check_threshold, first_appearance, router_fragment, ClassWeight, Classes};
use super::data::{load_split, Line};
use super::features::FeatureModel;
use super::fit::{fit, TrainOptions};
use super::float::Float;
use super::metrics::Report;
use super::net::Net;
use super::output;
use super::standard::Standard;
use super::{gather, Files, Outcome};
use crate::error::{Error, Result};
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::pimoe::experts::mlp::Activation;
use crate::pimoe::experts::Precision;
use crate::pimoe::router::GateActivation;
use crate::sampling::Rng;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateRow {
    prompt: String,
    answer: String,
    #[serde(default)]
    fire: Vec<Firing>,
    #[serde(default)]
    tokens: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Firing {
    at: usize,
    expert: String,
}

#[derive(Clone, Debug)]
pub struct HiddenGateOptions {
    /// The LLM whose hidden states the gate reads.
    pub model: PathBuf,
    /// Output order; default: the experts in order of first appearance in the data.
    pub experts: Option<Vec<String>>,
    /// None: one linear layer; Some(n): Linear(H, n) - ReLU - Linear(n, outputs).
    pub inner: Option<usize>,
    pub activation: GateActivation,
    pub class_weight: ClassWeight,
    pub threshold: f32,
    pub precision: Precision,
    /// Root of the feature cache (None: no cache).
    pub cache: Option<PathBuf>,
}

/// An answer tokenized as the runtime sees it, and where each of its tokens ends.
#[derive(Clone, Debug)]
pub struct Aligned {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
    /// Byte end of each answer token in the answer text, as streamed.
    pub ends: Vec<usize>,
}

impl Aligned {
    /// The answer's ids are `tokens` when given (as generated), else encode(answer).
    /// The error message says what does not fit (the caller names the row).
    pub fn new(
        tok: &Tokenizer,
        prompt: &str,
        answer: &str,
        tokens: Option<&[u32]>,
    ) -> std::result::Result<Self, String> {
        let prompt_ids = tok.encode(prompt).map_err(|e| e.to_string())?;
        let answer_ids = match tokens {
            Some(t) => t.to_vec(),
            None => tok.encode(answer).map_err(|e| e.to_string())?,
        };
        if prompt_ids.is_empty() || answer_ids.is_empty() {
            return Err(format!("the {} is empty", if prompt_ids.is_empty() { "prompt" } else { "answer" }));
        }
        let mut stream = StreamDecoder::default();
        let mut text = String::new();
        let mut ends = Vec::with_capacity(answer_ids.len());
        for &t in &answer_ids {
            text.push_str(&stream.push(tok, t).map_err(|e| e.to_string())?.unwrap_or_default());
            ends.push(text.len());
        }
        if text != answer {
            let k = text.bytes().zip(answer.bytes()).take_while(|(a, b)| a == b).count();
            return Err(format!(
                "the answer is not the text of its tokens (they differ from byte {k}: {:?} vs {:?})",
                answer.get(k..).map(|s| s.chars().take(12).collect::<String>()).unwrap_or_default(),
                text.get(k..).map(|s| s.chars().take(12).collect::<String>()).unwrap_or_default(),
            ));
        }
        Ok(Aligned { prompt: prompt_ids, answer: answer_ids, ends })
    }

    /// The tokens to run: the prompt and the whole answer.
    pub fn run_tokens(&self) -> Vec<u32> {
        let mut t = self.prompt.clone();
        t.extend_from_slice(&self.answer);
        t
    }

    /// The position whose hidden state makes the first decision (right after the
    /// prompt); decision d reads position first_feature() + d.
    pub fn first_feature(&self) -> usize {
        self.prompt.len() - 1
    }

    /// The decision a result at byte `at` belongs to: 0 right after the prompt
    /// (`at` = 0), j + 1 after answer token j, the first whose text ends there.
    pub fn decision_at(&self, at: usize) -> Option<usize> {
        if at == 0 {
            return Some(0);
        }
        self.ends.iter().position(|&e| e == at).map(|j| j + 1)
    }

    /// Labels per decision, answer.len() + 1 of them (0: none, k + 1: experts[k]).
    fn labels(&self, fire: &[Firing], experts: &[String]) -> std::result::Result<Vec<usize>, String> {
        let mut labels = vec![0; self.answer.len() + 1];
        for f in fire {
            let k = experts
                .iter()
                .position(|e| *e == f.expert)
                .ok_or_else(|| format!("fire names expert {:?}, which is not among {experts:?}", f.expert))?;
            let j = self.decision_at(f.at).ok_or_else(|| {
                let before = self.ends.iter().rev().find(|&&e| e < f.at);
                let after = self.ends.iter().find(|&&e| e > f.at);
                format!(
                    "fire.at = {} is not where an answer token ends (the nearest token ends are {} and {})",
                    f.at,
                    before.map_or("none".into(), |e| e.to_string()),
                    after.map_or("none".into(), |e| e.to_string())
                )
            })?;
            if labels[j] != 0 {
                return Err(format!("two firings at byte {}", f.at));
            }
            labels[j] = k + 1;
        }
        Ok(labels)
    }
}

/// One set's examples: features (examples, H) and labels (examples).
struct Examples {
    x: Vec<f32>,
    labels: Vec<usize>,
}

/// Fits the gate and writes `OUT/NAME.safetensors` and the `router` fragment.
pub fn train_hidden_gate(files: &Files, opts: &HiddenGateOptions, train: &TrainOptions) -> Result<Outcome> {
    output::prepare(files)?;
    check_threshold(opts.threshold)?;
    if opts.inner == Some(0) {
        return Err(Error::Request("--inner 0: a hidden layer needs at least one unit".into()));
    }
    let split = load_split::<GateRow>(&files.data, &files.holdout, train.seed)?;
    let experts = match &opts.experts {
        Some(e) => e.clone(),
        None => first_appearance(
            split.train.iter().chain(&split.val).flat_map(|l| &l.row.fire).map(|f| &f.expert),
        ),
    };
    if experts.is_empty() {
        return Err(Error::format(&files.data, "no row fires an expert: there is nothing to learn"));
    }
    let model = FeatureModel::load(&opts.model, opts.cache.as_deref(), train.progress)?;
    let ctx = model.config().max_position_embeddings;
    let align = |set: &[Line<GateRow>]| -> Result<Vec<(Aligned, Vec<usize>)>> {
        set.iter()
            .map(|l| {
                let r = &l.row;
                let a = Aligned::new(model.tokenizer(), &r.prompt, &r.answer, r.tokens.as_deref())
                    .map_err(|m| l.at.error(m))?;
                if a.prompt.len() + a.answer.len() > ctx {
                    return Err(l.at.error(format!(
                        "{} prompt and {} answer tokens exceed the model's context of {ctx}",
                        a.prompt.len(),
                        a.answer.len()
                    )));
                }
                let labels = a.labels(&l.row.fire, &experts).map_err(|m| l.at.error(m))?;
                Ok((a, labels))
            })
            .collect()
    };
    let (train_rows, val_rows) = (align(&split.train)?, align(&split.val)?);

    // One pass over both sets, so that rows sharing a prefix share its KV entries.
    let runs: Vec<(Vec<u32>, usize)> =
        train_rows.iter().chain(&val_rows).map(|(a, _)| (a.run_tokens(), a.first_feature())).collect();
    let views: Vec<(&[u32], usize)> = runs.iter().map(|(t, f)| (t.as_slice(), *f)).collect();
    let mut hidden = model.hidden_rows(&views)?.into_iter();
    let mut examples = |rows: &[(Aligned, Vec<usize>)]| Examples {
        x: rows.iter().flat_map(|_| hidden.next().expect("one per row")).collect(),
        labels: rows.iter().flat_map(|(_, l)| l.iter().copied()).collect(),
    };
    let (train_set, val_set) = (examples(&train_rows), examples(&val_rows));
    let h = model.config().hidden_size;
    let classes = Classes { experts, activation: opts.activation, threshold: opts.threshold };
    match opts.precision {
        Precision::F32 => run::<f32>(files, opts, train, &classes, h, &train_set, &val_set),
        Precision::F64 => run::<f64>(files, opts, train, &classes, h, &train_set, &val_set),
    }
}

fn run<T: Float>(
    files: &Files,
    opts: &HiddenGateOptions,
    train: &TrainOptions,
    classes: &Classes,
    h: usize,
    set: &Examples,
    val: &Examples,
) -> Result<Outcome> {
    let weights = classes.weights(&set.labels, opts.class_weight);
    let std = Standard::fit(&set.x, h);
    let widths: Vec<usize> = std::iter::once(h).chain(opts.inner).chain([classes.outputs()]).collect();
    let mut net = Net::<T>::init(&widths, Activation::Relu, &mut Rng::new(train.seed));
    let mut adam = Adam::new(train.lr);
    let losses = fit(train, set.labels.len(), |idx| {
        let x: Vec<T> = std.apply(&gather(&set.x, h, idx));
        let labels: Vec<usize> = idx.iter().map(|&i| set.labels[i]).collect();
        adam.tick();
        let (z, trace) = net.forward_trace(&x, idx.len());
        let (loss, dz) = classes.loss(&weights, &z, &labels);
        let (grads, _) = net.backward(&trace, &dz, false);
        net.update(&adam, &grads);
        loss
    });
    net.fold_input(&std.mean, &std.std);
    // The runtime reads f32 gates: report what the saved weights do.
    let saved = net.cast::<f32>();
    let report = |e: &Examples| {
        let z = saved.forward(&e.x, e.labels.len());
        Report::Class(classes.report(&weights, &z, &e.labels))
    };
    let mut fragment = router_fragment("hidden-gate", classes);
    fragment.insert(
        "activation".into(),
        match classes.activation {
            GateActivation::Sigmoid => "sigmoid",
            GateActivation::Softmax => "softmax",
        }
        .into(),
    );
    if let Some(n) = opts.inner {
        fragment.insert("inner".into(), n.into());
    }
    let written = output::write(&files.out, &files.name, &saved.tensors("gate"), fragment)?;
    Ok(Outcome {
        written,
        epoch_losses: losses,
        train: report(set),
        val: (!val.labels.is_empty()).then(|| report(val)),
        notes: Vec::new(),
    })
}
