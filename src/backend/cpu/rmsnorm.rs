//! RMSNorm as in Hugging Face Llama: x * rsqrt(mean(x^2) + eps) * w, in f32.

use rayon::prelude::*;

/// out (n, dim) = rmsnorm(x) * w
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, xr)| norm_row(o, xr, w, eps));
}

/// residual += x ; out = rmsnorm(residual) * w. Fused so the residual stream is
/// read once per layer half.
pub fn add_rmsnorm(out: &mut [f32], residual: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    out.par_chunks_mut(dim).zip(residual.par_chunks_mut(dim)).zip(x.par_chunks(dim)).for_each(
        |((o, r), xr)| {
            for (ri, xi) in r.iter_mut().zip(xr) {
                *ri += xi;
            }
            norm_row(o, r, w, eps);
        },
    );
}

fn norm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * inv * wi;
    }
}
