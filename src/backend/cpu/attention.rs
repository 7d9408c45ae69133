//! Causal grouped-query attention over the paged KV cache, and the cache write.
//!
//! The cache is (num_blocks * block_size, hk * head_dim): a token's k (or v) row
//! lives at slot = block_table[pos / block_size] * block_size + pos % block_size.
//! Every token of a step first writes its k/v, then attends to positions 0..=pos of
//! its own sequence through the block table, so a prefill chunk, a decode token and
//! an extend span are all the same case.

use rayon::prelude::*;

use super::simd::{add_scaled_prefixes, dots};
use super::Disjoint;
use crate::backend::{AttnPlan, AttnShape};

pub fn kv_write(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    qkv: &[f32],
    plan: &AttnPlan<Vec<u32>>,
    shape: AttnShape,
) {
    let d = shape.head_dim;
    let kv = shape.num_kv_heads * d;
    let q = shape.num_heads * d;
    let row = q + 2 * kv;
    for (t, &slot) in plan.slots.iter().enumerate() {
        let r = &qkv[t * row..(t + 1) * row];
        let s = slot as usize * kv;
        k_cache[s..s + kv].copy_from_slice(&r[q..q + kv]);
        v_cache[s..s + kv].copy_from_slice(&r[q + kv..]);
    }
}

/// Query tokens per task: with their kv group's heads they are the activation rows of
/// the score tiles (8 x 3 for SmolLM2), each key loaded once for all of them.
const QUERY_TOKENS: usize = 8;

/// out (n, hq * head_dim). A task is up to QUERY_TOKENS consecutive tokens of one
/// sequence and one kv head: scores by `dots` (each `dot`'s bits), softmax per (token,
/// head) over its own positions, then p * v summed in position order. A (token, head)
/// result is the same whichever tokens share its task or step.
pub fn attention(
    out: &mut [f32],
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    plan: &AttnPlan<Vec<u32>>,
    shape: AttnShape,
) {
    let d = shape.head_dim;
    let (hq, hk) = (shape.num_heads, shape.num_kv_heads);
    let group = hq / hk;
    let kv = hk * d;
    let row = (hq + 2 * hk) * d;
    let scale = 1.0 / (d as f32).sqrt();
    let bs = plan.block_size;
    let n = plan.positions.len();
    assert_eq!(out.len(), n * hq * d, "attention: out has {} elements for {n} tokens", out.len());

    let mut runs = Vec::new();
    let mut t0 = 0;
    for t in 1..=n {
        if t == n || t - t0 == QUERY_TOKENS || plan.token_seq[t] != plan.token_seq[t0] {
            runs.push((t0, t));
            t0 = t;
        }
    }
    let o = Disjoint::new(out);
    let o = &o;
    (0..runs.len() * hk).into_par_iter().for_each(|task| {
        let ((t0, t1), kvh) = (runs[task / hk], task % hk);
        let table = &plan.block_tables[plan.token_seq[t0] as usize * plan.max_blocks..];
        let at = |j: usize| (table[j / bs] as usize * bs + j % bs) * kv + kvh * d;
        let ctx = |t: usize| plan.positions[t] as usize + 1;
        let span = (t0..t1).map(ctx).max().unwrap_or(0);
        // rows: (token, head) for the run's tokens and this kv head's query heads
        let rows: Vec<(usize, usize)> =
            (t0..t1).flat_map(|t| (kvh * group..(kvh + 1) * group).map(move |h| (t, h))).collect();
        let qs: Vec<&[f32]> = rows.iter().map(|&(t, h)| &qkv[t * row + h * d..][..d]).collect();
        // Keys past a token's own position (up to the run's last) are scored and unused.
        let keys: Vec<&[f32]> = (0..span).map(|j| &k_cache[at(j)..at(j) + d]).collect();
        let mut scores = vec![0f32; rows.len() * span];
        dots(&keys, &qs, |r, j, v| scores[r * span + j] = v * scale);

        for (r, &(t, _)) in rows.iter().enumerate() {
            let s = &mut scores[r * span..r * span + ctx(t)];
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for e in s.iter_mut() {
                *e = (*e - max).exp();
                sum += *e;
            }
            for e in s.iter_mut() {
                *e /= sum;
            }
        }
        // p * v: each row over its own positions, in position order
        let vs: Vec<&[f32]> = (0..span).map(|j| &v_cache[at(j)..at(j) + d]).collect();
        let p: Vec<&[f32]> = scores.chunks(span).collect();
        let lens: Vec<usize> = rows.iter().map(|&(t, _)| ctx(t)).collect();
        let mut acc = vec![0f32; rows.len() * d];
        add_scaled_prefixes(&mut acc, &p, &lens, &vs);
        for (r, &(t, h)) in rows.iter().enumerate() {
            // SAFETY: row (t, h) of out is inside it (length checked above) and only
            // this task, which owns token t's heads of kv head kvh, writes it.
            unsafe { o.write((t * hq + h) * d, &acc[r * d..(r + 1) * d]) };
        }
    });
}
