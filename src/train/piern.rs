//! `pimoe train router --kind piern`: the reference's router. Its own embedding
//! table (vocab, E), the mean of the embeddings of a text's tokens, Linear(E,
//! hidden) - ReLU - Linear(hidden, n) - sigmoid; the table is trained too (only the
//! rows a batch touches move).
//!
//! Data: rows `{"text": "...", "type": 0|1}` as the reference's
//! train_capacity_token_router.jsonl (type 1: the next span comes from the single
//! expert, named by `--experts`), or `{"text": "...", "expert": "<name>" | null}`
//! for several experts (one sigmoid output each). The text is what the router has
//! seen at that point: the answer generated so far. Tokens come from the LLM's
//! tokenizer; the table has the LLM's vocabulary size, as the runtime expects.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::adam::Adam;
use super::classify::{check_threshold, first_appearance, router_fragment, ClassWeight, Classes};
use super::data::{load_split, Line};
use super::embed::EmbedMean;
use super::fit::{fit, TrainOptions};
use super::float::Float;
use super::metrics::Report;
use super::net::Net;
use super::output;
use super::{Files, Outcome};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::pimoe::experts::mlp::Activation;
use crate::pimoe::experts::Precision;
use crate::pimoe::router::GateActivation;
use crate::sampling::Rng;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiernRow {
    text: String,
    #[serde(default, rename = "type")]
    kind: Option<u8>,
    /// Some(None) for an explicit null.
    #[serde(default, deserialize_with = "present")]
    expert: Option<Option<String>>,
}

/// A field that is there, null or not.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Clone, Debug)]
pub struct PiernOptions {
    /// The LLM whose tokenizer and vocabulary size the router uses.
    pub model: PathBuf,
    /// Output order; needed (one name) for `type` rows; default for `expert` rows:
    /// order of first appearance.
    pub experts: Option<Vec<String>>,
    /// E (the reference: 1536).
    pub embed_dim: usize,
    /// The MLP's inner width (the reference: 128).
    pub hidden: usize,
    pub class_weight: ClassWeight,
    pub threshold: f32,
    pub precision: Precision,
}

/// Fits the router and writes `OUT/NAME.safetensors` and the `router` fragment.
pub fn train_piern(files: &Files, opts: &PiernOptions, train: &TrainOptions) -> Result<Outcome> {
    output::prepare(files)?;
    check_threshold(opts.threshold)?;
    if opts.embed_dim == 0 || opts.hidden == 0 {
        return Err(Error::Request("--embed-dim and --hidden must be positive".into()));
    }
    let split = load_split::<PiernRow>(&files.data, &files.holdout, train.seed)?;
    let all = || split.train.iter().chain(&split.val);
    let typed = split.train[0].row.kind.is_some();
    for l in all() {
        match (&l.row.kind, &l.row.expert) {
            (Some(t), None) if typed && *t <= 1 => {}
            (Some(t), None) if typed => return Err(l.at.error(format!("type {t}: must be 0 or 1"))),
            (None, Some(_)) if !typed => {}
            (Some(_), Some(_)) => return Err(l.at.error("has both `type` and `expert`; give one")),
            (None, None) => return Err(l.at.error("missing `type` (0 or 1) or `expert` (a name or null)")),
            _ => return Err(l.at.error("mixes `type` and `expert` rows; the file's first row sets which")),
        }
    }
    let experts = match (&opts.experts, typed) {
        (Some(e), true) if e.len() == 1 => e.clone(),
        (_, true) => {
            return Err(Error::Request(
                "rows with `type` fire one expert: name it with --experts NAME".into(),
            ))
        }
        (Some(e), false) => e.clone(),
        (None, false) => first_appearance(all().filter_map(|l| l.row.expert.as_ref()?.as_ref())),
    };
    if experts.is_empty() {
        return Err(Error::format(&files.data, "no row names an expert: there is nothing to learn"));
    }
    let vocab = crate::model::model_config(&opts.model)?.vocab_size;
    let tok = Tokenizer::load(&opts.model.join("tokenizer.json"))?;
    let encode = |set: &[Line<PiernRow>]| -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
        let mut texts = Vec::with_capacity(set.len());
        let mut labels = Vec::with_capacity(set.len());
        for l in set {
            let ids = tok.encode(&l.row.text).map_err(|e| l.at.error(e))?;
            if ids.is_empty() {
                return Err(l.at.error("the text has no tokens; the mean of none is undefined"));
            }
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(l
                    .at
                    .error(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
            }
            let label = match (&l.row.kind, &l.row.expert) {
                (Some(t), _) => *t as usize,
                (_, Some(Some(name))) => {
                    1 + experts.iter().position(|e| e == name).ok_or_else(|| {
                        l.at.error(format!("expert {name:?} is not among --experts {experts:?}"))
                    })?
                }
                _ => 0,
            };
            texts.push(ids);
            labels.push(label);
        }
        Ok((texts, labels))
    };
    let (train_set, val_set) = (encode(&split.train)?, encode(&split.val)?);
    let classes = Classes { experts, activation: GateActivation::Sigmoid, threshold: opts.threshold };
    match opts.precision {
        Precision::F32 => run::<f32>(files, opts, train, &classes, vocab, &train_set, &val_set),
        Precision::F64 => run::<f64>(files, opts, train, &classes, vocab, &train_set, &val_set),
    }
}

type Set = (Vec<Vec<u32>>, Vec<usize>);

fn run<T: Float>(
    files: &Files,
    opts: &PiernOptions,
    train: &TrainOptions,
    classes: &Classes,
    vocab: usize,
    set: &Set,
    val: &Set,
) -> Result<Outcome> {
    let weights = classes.weights(&set.1, opts.class_weight);
    let mut rng = Rng::new(train.seed);
    let mut embed = EmbedMean::<T>::init(vocab, opts.embed_dim, &mut rng);
    let widths = [opts.embed_dim, opts.hidden, classes.outputs()];
    let mut net = Net::<T>::init(&widths, Activation::Relu, &mut rng);
    let mut adam = Adam::new(train.lr);
    let losses = fit(train, set.1.len(), |idx| {
        let texts: Vec<&[u32]> = idx.iter().map(|&i| set.0[i].as_slice()).collect();
        let labels: Vec<usize> = idx.iter().map(|&i| set.1[i]).collect();
        adam.tick();
        let means = embed.forward(&texts);
        let (z, trace) = net.forward_trace(&means, idx.len());
        let (loss, dz) = classes.loss(&weights, &z, &labels);
        let (grads, dmeans) = net.backward(&trace, &dz, true);
        let rows = embed.backward(&texts, &dmeans.expect("asked for"));
        net.update(&adam, &grads);
        embed.update(&adam, &rows);
        loss
    });
    // The runtime reads f32 (or bf16) tables: report what the saved weights do.
    let table: Vec<f32> = super::float::cast(&embed.table.value);
    let saved_embed = EmbedMean::<f32> { vocab, dim: opts.embed_dim, table: super::adam::Param::new(table) };
    let saved = net.cast::<f32>();
    let report = |(texts, labels): &Set| {
        let views: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
        let z = saved.forward(&saved_embed.forward(&views), labels.len());
        Report::Class(classes.report(&weights, &z, labels))
    };
    let mut tensors = vec![output::TensorOut::new(
        "embedding.weight".into(),
        vec![vocab, opts.embed_dim],
        &saved_embed.table.value,
    )];
    tensors.extend(saved.tensors("fc"));
    let mut fragment = router_fragment("piern", classes);
    fragment.insert("embed_dim".into(), opts.embed_dim.into());
    fragment.insert("hidden".into(), opts.hidden.into());
    let written = output::write(&files.out, &files.name, &tensors, fragment)?;
    Ok(Outcome {
        written,
        epoch_losses: losses,
        train: report(set),
        val: (!val.1.is_empty()).then(|| report(val)),
        notes: Vec::new(),
    })
}
