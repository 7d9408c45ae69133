//! RMSNorm as in Hugging Face Llama: x * rsqrt(mean(x^2) + eps) * w, in f32.

use rayon::prelude::*;

/// out (n, dim) = rmsnorm(x) * w
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, xr)| norm_row(o, xr, w, eps));
}

/// residual += x: a residual branch's end, before the next norm.
pub fn add(residual: &mut [f32], x: &[f32]) {
    assert_eq!(residual.len(), x.len(), "add: residual has {} elements, x {}", residual.len(), x.len());
    for (r, xi) in residual.iter_mut().zip(x) {
        *r += xi;
    }
}

fn norm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * inv * wi;
    }
}
