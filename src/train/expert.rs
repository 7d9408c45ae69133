//! `pimoe train expert --kind mlp|deeponet`: an MLP or DeepONet computation expert
//! fitted to rows `{"inputs": [...], "outputs": [...]}` by mean squared error.
//!
//! Inputs and outputs are standardised with the training rows' statistics, and the
//! standardisation is folded into the first and last layers before saving, so the
//! saved expert reads and writes raw numbers. The figures printed at the end are
//! those of the saved weights, computed by the runtime's own forward pass.
//!
//! `--order` arranges a row's inputs into the expert's input groups exactly as the
//! manifest's `order` arranges T2C outputs (a DeepONet takes two groups: branch |
//! trunk; default: the first `branch[0]` inputs, then the rest), so rows can be
//! written in T2C's order; the manifest then needs the same `order`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::adam::Adam;
use super::data::{load_split, Line};
use super::deeponet::DeepONetNet;
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
use crate::pimoe::t2c::InputOrder;
use crate::sampling::Rng;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpertRow {
    inputs: Vec<f64>,
    outputs: Vec<f64>,
}

/// The network to fit; widths as in the manifest.
#[derive(Clone, Debug)]
pub enum ExpertShape {
    Mlp { widths: Vec<usize> },
    DeepONet { branch: Vec<usize>, trunk: Vec<usize> },
}

#[derive(Clone, Debug)]
pub struct ExpertOptions {
    pub shape: ExpertShape,
    pub activation: Activation,
    pub precision: Precision,
    /// The manifest's `order` syntax, e.g. "0..11 | 12, 11".
    pub order: Option<String>,
}

/// Fits the expert and writes `OUT/NAME.safetensors` and the `expert` fragment.
pub fn train_expert(files: &Files, opts: &ExpertOptions, train: &TrainOptions) -> Result<Outcome> {
    output::prepare(files)?;
    let order = check_shape(opts)?;
    let split = load_split::<ExpertRow>(&files.data, &files.holdout, train.seed)?;
    let (n_in, n_out) = (split.train[0].row.inputs.len(), split.train[0].row.outputs.len());
    for l in split.train.iter().chain(&split.val) {
        if l.row.inputs.len() != n_in || l.row.outputs.len() != n_out {
            return Err(l.at.error(format!(
                "{} inputs and {} outputs; the first row has {n_in} and {n_out}",
                l.row.inputs.len(),
                l.row.outputs.len()
            )));
        }
    }
    let groups = arrange(opts, order, n_in, n_out)?;
    let rows = |set: &[Line<ExpertRow>]| -> (Vec<f64>, Vec<f64>) {
        let x = set.iter().flat_map(|l| groups.apply_flat(&l.row.inputs).expect("checked")).collect();
        let y = set.iter().flat_map(|l| l.row.outputs.iter().copied()).collect();
        (x, y)
    };
    let data = Data { train: rows(&split.train), val: rows(&split.val), n_out };
    let mut outcome = match opts.precision {
        Precision::F32 => run::<f32>(files, opts, train, &data),
        Precision::F64 => run::<f64>(files, opts, train, &data),
    }?;
    if opts.order.is_some() {
        outcome.notes.push(format!("the manifest's experts[] entry needs \"order\": \"{groups}\""));
    }
    Ok(outcome)
}

/// Checks the width flags and parses `--order`.
fn check_shape(opts: &ExpertOptions) -> Result<Option<InputOrder>> {
    let check = |flag: &str, w: &[usize]| {
        if w.len() < 2 || w.contains(&0) {
            Err(Error::Request(format!("--{flag} {w:?}: needs at least [inputs, outputs], all nonzero")))
        } else {
            Ok(())
        }
    };
    match &opts.shape {
        ExpertShape::Mlp { widths } => check("widths", widths)?,
        ExpertShape::DeepONet { branch, trunk } => {
            check("branch", branch)?;
            check("trunk", trunk)?;
            if branch.last() != trunk.last() {
                return Err(Error::Request(format!(
                    "--branch {branch:?} and --trunk {trunk:?} must end in the same feature count"
                )));
            }
        }
    }
    opts.order
        .as_deref()
        .map(|o| InputOrder::parse(o).map_err(|e| Error::Request(format!("--order: {e}"))))
        .transpose()
}

/// The input groups, checked against the rows' widths and the network's.
fn arrange(opts: &ExpertOptions, order: Option<InputOrder>, n_in: usize, n_out: usize) -> Result<InputOrder> {
    let bad = |msg: String| Err(Error::Request(msg));
    let groups = match (&opts.shape, order) {
        (_, Some(o)) => o,
        (ExpertShape::Mlp { .. }, None) => InputOrder::identity(n_in),
        (ExpertShape::DeepONet { branch, .. }, None) => {
            if branch[0] >= n_in {
                return bad(format!("the rows have {n_in} inputs, too few for a branch of {}", branch[0]));
            }
            InputOrder::new(vec![(0..branch[0]).collect(), (branch[0]..n_in).collect()]).expect("non-empty")
        }
    };
    if groups.min_len() > n_in {
        return bad(format!("--order {groups} reads input {}, the rows have {n_in}", groups.min_len() - 1));
    }
    let lens: Vec<usize> = groups.groups().iter().map(Vec::len).collect();
    match &opts.shape {
        ExpertShape::Mlp { widths } => {
            let fed: usize = lens.iter().sum();
            if fed != widths[0] || n_out != widths[widths.len() - 1] {
                return bad(format!(
                    "--widths {widths:?} takes {} inputs and gives {} outputs; the rows give {fed} inputs{} and {n_out} outputs",
                    widths[0],
                    widths[widths.len() - 1],
                    if opts.order.is_some() { " (after --order)" } else { "" }
                ));
            }
        }
        ExpertShape::DeepONet { branch, trunk } => {
            if lens != [branch[0], trunk[0]] || n_out != 1 {
                return bad(format!(
                    "a DeepONet with --branch {branch:?} and --trunk {trunk:?} takes {} | {} inputs and gives 1 output; the rows give {} inputs and {n_out} outputs",
                    branch[0],
                    trunk[0],
                    lens.iter().map(usize::to_string).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
    }
    Ok(groups)
}

/// Arranged inputs (rows, model inputs) and outputs (rows, n_out) of each set.
struct Data {
    train: (Vec<f64>, Vec<f64>),
    val: (Vec<f64>, Vec<f64>),
    n_out: usize,
}

/// Packed rows x (rows, n) -> (their first nb columns, the rest).
fn split<T: Copy>(x: &[T], rows: usize, nb: usize) -> (Vec<T>, Vec<T>) {
    let n = x.len() / rows.max(1);
    let xb = x.chunks_exact(n).flat_map(|r| r[..nb].iter().copied()).collect();
    let xt = x.chunks_exact(n).flat_map(|r| r[nb..].iter().copied()).collect();
    (xb, xt)
}

enum Model<T> {
    Mlp(Net<T>),
    /// With the number of branch inputs.
    DeepONet(DeepONetNet<T>, usize),
}

impl<T: Float> Model<T> {
    fn n_in(&self) -> usize {
        match self {
            Model::Mlp(n) => n.n_in(),
            Model::DeepONet(d, nb) => nb + d.trunk.n_in(),
        }
    }

    fn forward(&self, x: &[T], rows: usize) -> Vec<T> {
        match self {
            Model::Mlp(n) => n.forward(x, rows),
            Model::DeepONet(d, nb) => {
                let (xb, xt) = split(x, rows, *nb);
                d.forward(&xb, &xt, rows)
            }
        }
    }

    /// One Adam step on a batch; returns its loss.
    fn step(&mut self, adam: &mut Adam, x: &[T], y: &[T], rows: usize) -> f64 {
        adam.tick();
        match self {
            Model::Mlp(n) => {
                let (out, trace) = n.forward_trace(x, rows);
                let (loss, dout) = mse(&out, y);
                let (grads, _) = n.backward(&trace, &dout, false);
                n.update(adam, &grads);
                loss
            }
            Model::DeepONet(d, nb) => {
                let (xb, xt) = split(x, rows, *nb);
                let (out, trace) = d.forward_trace(&xb, &xt, rows);
                let (loss, dout) = mse(&out, y);
                let grads = d.backward(&trace, &dout);
                d.update(adam, &grads);
                loss
            }
        }
    }

    /// Makes the model read raw inputs and give raw outputs.
    fn fold(&mut self, ins: &Standard, outs: &Standard) {
        match self {
            Model::Mlp(n) => {
                n.fold_input(&ins.mean, &ins.std);
                n.fold_output(&outs.std, &outs.mean);
            }
            Model::DeepONet(d, nb) => {
                d.branch.fold_input(&ins.mean[..*nb], &ins.std[..*nb]);
                d.trunk.fold_input(&ins.mean[*nb..], &ins.std[*nb..]);
                d.fold_output(outs.std[0], outs.mean[0]);
            }
        }
    }
}

fn run<T: Float>(files: &Files, opts: &ExpertOptions, train: &TrainOptions, data: &Data) -> Result<Outcome> {
    let (x, y) = &data.train;
    let n_out = data.n_out;
    let mut rng = Rng::new(train.seed);
    let mut model = match &opts.shape {
        ExpertShape::Mlp { widths } => Model::Mlp(Net::<T>::init(widths, opts.activation, &mut rng)),
        ExpertShape::DeepONet { branch, trunk } => {
            Model::DeepONet(DeepONetNet::init(branch, trunk, opts.activation, &mut rng), branch[0])
        }
    };
    let n_in = model.n_in();
    let (ins, outs) = (Standard::fit(x, n_in), Standard::fit(y, n_out));
    let (xs, ys): (Vec<T>, Vec<T>) = (ins.apply(x), outs.apply(y));
    let mut adam = Adam::new(train.lr);
    let losses = fit(train, y.len() / n_out, |idx| {
        let (xb, yb) = (gather(&xs, n_in, idx), gather(&ys, n_out, idx));
        model.step(&mut adam, &xb, &yb, idx.len())
    });
    model.fold(&ins, &outs);

    let report = |(x, y): &(Vec<f64>, Vec<f64>)| {
        let rows = y.len() / n_out;
        let xt: Vec<T> = x.iter().map(|&v| T::from_f64(v)).collect();
        let pred: Vec<f64> = model.forward(&xt, rows).into_iter().map(T::to_f64).collect();
        // The training loss's units: squared error of standardised outputs.
        let loss = pred
            .iter()
            .zip(y)
            .enumerate()
            .map(|(i, (p, t))| ((p - t) / outs.std[i % n_out]).powi(2))
            .sum::<f64>()
            / y.len().max(1) as f64;
        Report::Regression(RegressionReport::new(loss, &pred, y, rows))
    };
    let (train_report, val_report) =
        (report(&data.train), (!data.val.1.is_empty()).then(|| report(&data.val)));

    let mut fragment = Map::new();
    let tensors = match &model {
        Model::Mlp(n) => {
            fragment.insert("kind".into(), json!("mlp"));
            fragment.insert("widths".into(), json!(n.widths()));
            n.tensors("layers")
        }
        Model::DeepONet(d, _) => {
            fragment.insert("kind".into(), json!("deeponet"));
            fragment.insert("branch".into(), json!(d.branch.widths()));
            fragment.insert("trunk".into(), json!(d.trunk.widths()));
            d.tensors()
        }
    };
    fragment.insert("activation".into(), Value::String(opts.activation.name().into()));
    fragment.insert("precision".into(), Value::String(T::PRECISION.name().into()));
    let written = output::write(&files.out, &files.name, &tensors, fragment)?;
    Ok(Outcome { written, epoch_losses: losses, train: train_report, val: val_report, notes: Vec::new() })
}
