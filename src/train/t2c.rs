//! `pimoe train t2c`: the learned T2C head. The mean of the final-normed hidden
//! states over the prompt's tokens -> Linear(H, inner) - ReLU - Linear(inner, n),
//! fitted by mean squared error.
//!
//! Data: rows `{"prompt": "...", "target": [numbers]}`; with `--pattern` the targets
//! are the numbers our exact extract T2C reads from the prompt (then rows need only
//! `prompt`, as the reference's train_capacity_text2computation_module.jsonl, whose
//! `completion` field is accepted and ignored). The prompt is the context T2C reads
//! when the router fires. Inputs and targets are standardised during training and
//! the standardisation is folded into the saved weights.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Map;

use super::adam::Adam;
use super::data::{load_split, Line};
use super::features::FeatureModel;
use super::fit::{fit, TrainOptions};
use super::float::Float;
use super::loss::mse;
use super::metrics::{RegressionReport, Report};
use super::net::Net;
use super::output;
use super::standard::Standard;
use super::{gather, Files, Outcome};
use crate::error::{Error, Result};
use crate::pimoe::experts::mlp::Activation;
use crate::pimoe::experts::Precision;
use crate::pimoe::t2c::ExtractPattern;
use crate::sampling::Rng;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct T2cRow {
    prompt: String,
    #[serde(default)]
    target: Option<Vec<f64>>,
    /// The reference's answer text; not used.
    #[serde(default)]
    #[allow(dead_code)]
    completion: Option<String>,
}

#[derive(Clone, Debug)]
pub struct T2cOptions {
    /// The model whose hidden states are pooled (the LLM, or a T2C backbone).
    pub model: PathBuf,
    /// Take the targets from the prompt with this extract pattern.
    pub pattern: Option<String>,
    /// The head's inner width (the reference: 128).
    pub inner: usize,
    pub precision: Precision,
    /// Root of the feature cache (None: no cache).
    pub cache: Option<PathBuf>,
}

/// Pooled features (rows, H) and targets (rows, n) of one set.
struct Set {
    x: Vec<f64>,
    y: Vec<f64>,
}

/// Fits the head and writes `OUT/NAME.safetensors` and the `t2c` fragment.
pub fn train_t2c(files: &Files, opts: &T2cOptions, train: &TrainOptions) -> Result<Outcome> {
    output::prepare(files)?;
    if opts.inner == 0 {
        return Err(Error::Request("--inner 0: the head needs at least one inner unit".into()));
    }
    let pattern = opts
        .pattern
        .as_deref()
        .map(|p| ExtractPattern::parse(p).map_err(|e| Error::Request(format!("--pattern: {e}"))))
        .transpose()?;
    let split = load_split::<T2cRow>(&files.data, &files.holdout, train.seed)?;
    let target = |l: &Line<T2cRow>| -> Result<Vec<f64>> {
        match (&pattern, &l.row.target) {
            (Some(p), None) => p.extract(&l.row.prompt).map(|x| x.values).map_err(|e| l.at.error(e)),
            (None, Some(t)) => Ok(t.clone()),
            (Some(_), Some(_)) => Err(l.at.error("has a `target`, and --pattern also gives the targets")),
            (None, None) => Err(l.at.error("missing field `target` (or give --pattern)")),
        }
    };
    let targets: Vec<Vec<Vec<f64>>> = [&split.train, &split.val]
        .iter()
        .map(|set| set.iter().map(&target).collect::<Result<Vec<_>>>())
        .collect::<Result<_>>()?;
    let n = targets[0][0].len();
    for (l, t) in split.train.iter().chain(&split.val).zip(targets.iter().flatten()) {
        if t.len() != n || n == 0 {
            return Err(l.at.error(format!("{} targets; the first row has {n}", t.len())));
        }
    }
    let model = FeatureModel::load(&opts.model, opts.cache.as_deref(), train.progress)?;
    let ctx = model.config().max_position_embeddings;
    let mut tokens = Vec::new();
    for l in split.train.iter().chain(&split.val) {
        let ids = model.tokenizer().encode(&l.row.prompt).map_err(|e| l.at.error(e))?;
        if ids.is_empty() || ids.len() > ctx {
            return Err(l.at.error(format!("the prompt has {} tokens; it needs 1 to {ctx}", ids.len())));
        }
        tokens.push(ids);
    }
    let views: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let mut pooled = model.pooled(&views)?.into_iter();
    let mut set = |t: &[Vec<f64>]| Set {
        x: t.iter().flat_map(|_| pooled.next().expect("one per row")).collect(),
        y: t.concat(),
    };
    let (train_set, val_set) = (set(&targets[0]), set(&targets[1]));
    let h = model.config().hidden_size;
    match opts.precision {
        Precision::F32 => run::<f32>(files, opts, train, h, n, &train_set, &val_set),
        Precision::F64 => run::<f64>(files, opts, train, h, n, &train_set, &val_set),
    }
}

fn run<T: Float>(
    files: &Files,
    opts: &T2cOptions,
    train: &TrainOptions,
    h: usize,
    n: usize,
    set: &Set,
    val: &Set,
) -> Result<Outcome> {
    let (ins, outs) = (Standard::fit(&set.x, h), Standard::fit(&set.y, n));
    let (xs, ys): (Vec<T>, Vec<T>) = (ins.apply(&set.x), outs.apply(&set.y));
    let mut net = Net::<T>::init(&[h, opts.inner, n], Activation::Relu, &mut Rng::new(train.seed));
    let mut adam = Adam::new(train.lr);
    let losses = fit(train, set.y.len() / n, |idx| {
        let (x, y) = (gather(&xs, h, idx), gather(&ys, n, idx));
        adam.tick();
        let (out, trace) = net.forward_trace(&x, idx.len());
        let (loss, dout) = mse(&out, &y);
        let (grads, _) = net.backward(&trace, &dout, false);
        net.update(&adam, &grads);
        loss
    });
    net.fold_input(&ins.mean, &ins.std);
    net.fold_output(&outs.std, &outs.mean);
    // The runtime computes in f64 over f32 weights: report what the saved head does.
    let saved = net.cast::<f32>();
    let exact = saved.cast::<f64>();
    let report = |s: &Set| {
        let rows = s.y.len() / n;
        let pred = exact.forward(&s.x, rows);
        let loss = pred
            .iter()
            .zip(&s.y)
            .enumerate()
            .map(|(i, (p, t))| ((p - t) / outs.std[i % n]).powi(2))
            .sum::<f64>()
            / s.y.len().max(1) as f64;
        Report::Regression(RegressionReport::new(loss, &pred, &s.y, rows))
    };
    let mut fragment = Map::new();
    fragment.insert("kind".into(), "piern".into());
    fragment.insert("outputs".into(), n.into());
    fragment.insert("inner".into(), opts.inner.into());
    let written = output::write(&files.out, &files.name, &saved.tensors("head"), fragment)?;
    Ok(Outcome {
        written,
        epoch_losses: losses,
        train: report(set),
        val: (!val.y.is_empty()).then(|| report(val)),
        notes: Vec::new(),
    })
}
