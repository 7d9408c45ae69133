//! out (m, n) = x (m, k) @ w (n, k)^T + bias: every linear layer and the lm_head.
//!
//! Work is split over weight rows (rayon), so each thread streams its own slice of
//! the weight matrix once; within a row, tokens go four at a time through `dot4`.
//! At m = 1 (decode) this is a pure weight-streaming loop and runs at memory speed.

use rayon::prelude::*;

use super::simd::{dot, dot4, WeightElem};
use super::CpuWeight;
use crate::model::safetensors::HostData;

/// Weight rows per rayon task: big enough to amortise scheduling, small enough
/// to balance 576-row matrices over a few cores.
const ROWS_PER_TASK: usize = 16;

pub fn matmul(out: &mut [f32], x: &[f32], w: &CpuWeight, bias: Option<&CpuWeight>, m: usize) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "matmul: x has {} elements, expected {m} x {k}", x.len());
    assert_eq!(out.len(), m * n, "matmul: out has {} elements, expected {m} x {n}", out.len());
    let bias = bias.map(|b| b.as_f32());
    match &w.data {
        HostData::F32(d) => run(out, x, d, bias, m, n, k),
        HostData::Bf16(d) => run(out, x, d, bias, m, n, k),
        HostData::Quant(q) => super::quant::matmul(out, x, q, bias, m),
    }
}

fn run<W: WeightElem>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) {
    if m == 1 {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(c, o)| {
            for (i, oi) in o.iter_mut().enumerate() {
                let r = c * ROWS_PER_TASK + i;
                *oi = dot(&w[r * k..(r + 1) * k], x) + bias.map_or(0.0, |b| b[r]);
            }
        });
        return;
    }
    // Tasks own disjoint weight rows, so they write a transposed (n, m) buffer.
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(c, tc)| {
        for (i, trow) in tc.chunks_exact_mut(m).enumerate() {
            let r = c * ROWS_PER_TASK + i;
            let wr = &w[r * k..(r + 1) * k];
            let b = bias.map_or(0.0, |b| b[r]);
            let mut j = 0;
            while j + 4 <= m {
                let xs = [0, 1, 2, 3].map(|d| &x[(j + d) * k..(j + d + 1) * k]);
                let s = dot4(wr, xs);
                for d in 0..4 {
                    trow[j + d] = s[d] + b;
                }
                j += 4;
            }
            for (jj, o) in trow.iter_mut().enumerate().skip(j) {
                *o = dot(wr, &x[jj * k..(jj + 1) * k]) + b;
            }
        }
    });
    out.par_chunks_mut(n).enumerate().for_each(|(j, orow)| {
        for (r, o) in orow.iter_mut().enumerate() {
            *o = t[r * m + j];
        }
    });
}
