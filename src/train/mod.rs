//! `pimoe train`: fits the small networks of a composition (router gates, learned
//! T2C heads, MLP and DeepONet experts) by mini-batch gradient descent with Adam and
//! hand-written backward passes, in f32 or f64, deterministically for a seed.
//!
//! - Layers: [`net`] (dense layers and stacks, activations), [`deeponet`],
//!   [`embed`] (the piern router's embedding mean), [`loss`], [`adam`], [`init`].
//! - Data: [`data`] (JSONL rows, the validation split), [`features`] (what the LLM
//!   computes for a row: hidden states, pooled means) with its [`cache`].
//! - Targets, one file each: [`piern`], [`hidden_gate`], [`t2c`], [`expert`]; the
//!   shared loop is [`fit`], router classes and weights [`classify`], the figures
//!   printed at the end [`metrics`], the files written [`output`].
//!
//! Determinism: every sum has a fixed order (see net.rs), the split, the initial
//! weights and the batch order come from PCG32 streams derived from the seed, and
//! the LLM features are computed in a fixed order. Same seed, same data: the same
//! weights, bit for bit.

pub mod adam;
pub mod cache;
pub mod classify;
pub mod data;
pub mod deeponet;
pub mod embed;
pub mod expert;
pub mod features;
pub mod fit;
pub mod float;
pub mod hidden_gate;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod net;
pub mod output;
pub mod piern;
pub mod standard;
pub mod t2c;

use std::path::PathBuf;

pub use data::Holdout;
pub use fit::TrainOptions;
pub use metrics::Report;
pub use output::Written;

/// The files of a run: its data, its validation rows, and where the result goes.
#[derive(Clone, Debug)]
pub struct Files {
    pub data: PathBuf,
    pub holdout: Holdout,
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// `OUT/NAME.safetensors` and `OUT/NAME.json`.
    pub name: String,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub written: Written,
    /// The mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// The saved model's figures on the training rows and on the validation rows.
    pub train: Report,
    pub val: Option<Report>,
    /// Things the user must know to use the result (an `order` for the manifest, ...).
    pub notes: Vec<String>,
}

/// Rows `idx` of a row-major (rows, cols) array.
fn gather<T: Copy>(x: &[T], cols: usize, idx: &[usize]) -> Vec<T> {
    idx.iter().flat_map(|&i| x[i * cols..(i + 1) * cols].iter().copied()).collect()
}
