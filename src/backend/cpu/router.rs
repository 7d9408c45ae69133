//! The hidden-state router gate over a batch: the CPU twin of kernels/router.cu.
//! The same arithmetic as `HiddenGate::probs`, which the router uses without a
//! backend, so both paths give the same bits.

use crate::backend::GateLayer;
use crate::pimoe::router::{activate, dense_f32};

/// probs (rows, n_out) = act(layers(x (rows, h))), ReLU between layers.
pub fn gate(probs: &mut [f32], x: &[f32], layers: &[GateLayer<'_, Vec<f32>>], softmax: bool) {
    let rows = x.len() / layers[0].inputs;
    let mut h = dense_f32(x, rows, layers[0].w, layers[0].b);
    for l in &layers[1..] {
        h.iter_mut().for_each(|v| *v = v.max(0.0));
        h = dense_f32(&h, rows, l.w, l.b);
    }
    activate(&mut h, layers[layers.len() - 1].outputs, softmax);
    probs[..h.len()].copy_from_slice(&h);
}
