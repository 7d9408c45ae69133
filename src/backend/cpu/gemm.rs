//! out (m, n) = x (m, k) @ w (n, k)^T + bias: every linear layer and the lm_head.
//!
//! At m = 1 (decode) work is split over weight rows (rayon), so each thread streams its
//! own slice of the weight matrix once, at memory speed. At m > 1 the product is cut
//! into tasks of (weight rows x tokens) and each task into register tiles of 4 rows x 6
//! tokens with AVX-512, 2 x 6 with AVX2 (`simd::tile`): every sum in a register, each
//! loaded vector used several times.
//! Every (row, token) sum is `dot`'s, bit for bit, whatever m is.

use rayon::prelude::*;

use super::simd::{dot, dot4, dots, tile_is_blocked, WeightElem};
use super::{CpuWeight, Disjoint};
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
    if m > 1 && tile_is_blocked() {
        return run_tiled(out, x, w, bias, m, n, k);
    }
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

/// A task's weight rows (kept in L2 while its token tiles pass over them: 64 rows of
/// 1536 bf16 are 192 KiB) and tokens (6 rows of 1536 f32, one register tile's, are
/// 36 KiB, about L1).
const TASK_ROWS: usize = 64;
const TASK_TOKENS: usize = 48;
/// A task with this many tokens widens its bf16 rows to f32 first: the pass costs about
/// what a few tokens' multiply-adds do, and takes two instructions per 16 weights out of
/// every token's inner loop.
const WIDEN_FROM_TOKENS: usize = 12;

fn run_tiled<W: WeightElem>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) {
    let row_tasks = n.div_ceil(TASK_ROWS);
    let tasks = row_tasks * m.div_ceil(TASK_TOKENS);
    let o = Disjoint::new(out);
    let o = &o;
    // `wide` is each worker's buffer for widened rows, kept across its tasks: a fresh
    // 384 KiB Vec per task was an mmap, page faults and zeroing each time.
    (0..tasks).into_par_iter().for_each_init(Vec::new, |wide: &mut Vec<f32>, task| {
        let (r0, j0) = ((task % row_tasks) * TASK_ROWS, (task / row_tasks) * TASK_TOKENS);
        let (r1, j1) = ((r0 + TASK_ROWS).min(n), (j0 + TASK_TOKENS).min(m));
        let xs: Vec<&[f32]> = (j0..j1).map(|j| &x[j * k..(j + 1) * k]).collect();
        let put = |t: usize, r: usize, v: f32| {
            let (j, r) = (j0 + t, r0 + r);
            debug_assert!(j < j1 && r < r1);
            // SAFETY: (j, r) lies in this task's patch, inside out (m x n, checked by
            // `matmul`), and no other task writes it.
            unsafe { o.write(j * n + r, &[v + bias.map_or(0.0, |b| b[r])]) };
        };
        let block = &w[r0 * k..r1 * k];
        if std::mem::size_of::<W>() < 4 && xs.len() >= WIDEN_FROM_TOKENS {
            // Widened once here (exactly), the tiles' inner loop is loads and FMAs only.
            wide.clear();
            wide.extend(block.iter().map(|v| v.to_f32()));
            dots(&wide.chunks_exact(k).collect::<Vec<_>>(), &xs, put);
        } else {
            dots(&block.chunks_exact(k).collect::<Vec<_>>(), &xs, put);
        }
    });
}
