//! The training loop shared by every target: epochs of shuffled mini-batches, a
//! progress bar per epoch with the running loss, and nothing else; each target's
//! `step` does its forward pass, backward pass and Adam update.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::data::permutation;
use crate::sampling::Rng;

/// What every target shares.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Examples per mini-batch (the last batch of an epoch may be smaller).
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Fixes the split, the initial weights and the batch order.
    pub seed: u64,
    /// Draw progress bars (on a terminal) or one line per epoch (otherwise) on stderr.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { epochs: 20, batch: 32, lr: 1e-3, seed: 0, progress: false }
    }
}

/// Added to the seed for the batch order's generator.
const SHUFFLE_STREAM: u64 = 0x5eed_0002;

/// Runs `opts.epochs` epochs over examples 0..n; `step` gets one batch of example
/// indices and returns its mean loss. Returns each epoch's mean loss.
pub fn fit(opts: &TrainOptions, n: usize, mut step: impl FnMut(&[usize]) -> f64) -> Vec<f64> {
    let mut rng = Rng::new(opts.seed.wrapping_add(SHUFFLE_STREAM));
    let batch = opts.batch.max(1);
    let batches = n.div_ceil(batch) as u64;
    let tty = std::io::stderr().is_terminal();
    let mut losses = Vec::with_capacity(opts.epochs);
    for epoch in 0..opts.epochs {
        let bar = if opts.progress && tty { ProgressBar::new(batches) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches, {msg} ({elapsed})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, opts.epochs));
        let order = permutation(n, &mut rng);
        let (mut sum, mut seen) = (0f64, 0usize);
        for idx in order.chunks(batch) {
            sum += step(idx) * idx.len() as f64;
            seen += idx.len();
            bar.set_message(format!("loss {:.6}", sum / seen as f64));
            bar.inc(1);
        }
        bar.finish();
        let mean = sum / seen.max(1) as f64;
        if opts.progress && !tty {
            eprintln!("epoch {}/{}: loss {mean:.6}", epoch + 1, opts.epochs);
        }
        losses.push(mean);
    }
    losses
}
