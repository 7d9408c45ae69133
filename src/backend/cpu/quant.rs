//! out (m, n) = x (m, k) @ w (n, k)^T + bias for block-quantized weights.

use rayon::prelude::*;

use super::simd::dot;
use crate::model::quant::{dequantize, QuantMatrix};

pub fn matmul(out: &mut [f32], x: &[f32], w: &QuantMatrix, bias: Option<&[f32]>, m: usize) {
    let (n, k) = (w.rows(), w.cols);
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(m).enumerate().for_each_init(
        || vec![0f32; k],
        |row, (r, tr)| {
            let (ty, bytes) = w.row(r);
            dequantize(ty, bytes, row);
            for (j, o) in tr.iter_mut().enumerate() {
                *o = dot(row, &x[j * k..(j + 1) * k]) + bias.map_or(0.0, |b| b[r]);
            }
        },
    );
    for j in 0..m {
        for r in 0..n {
            out[j * n + r] = t[r * m + j];
        }
    }
}
