//! Causal grouped-query attention over the paged KV cache, and the cache write.
//!
//! The cache is (num_blocks * block_size, hk * head_dim): a token's k (or v) row
//! lives at slot = block_table[pos / block_size] * block_size + pos % block_size.
//! Every token of a step first writes its k/v, then attends to positions 0..=pos of
//! its own sequence through the block table, so a prefill chunk, a decode token and
//! an extend span are all the same case.

use rayon::prelude::*;

use super::simd::dot;
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

const MIN_TASK_WORK: usize = 1 << 16;

/// out (n, hq * head_dim); rayon tasks over (token, query head) pairs.
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

    // A (token, head) pair over a short context is a few microseconds of work, less
    // than handing it to another thread costs: group pairs up to ~64k multiply-adds.
    let longest = plan.positions.iter().max().map_or(1, |&p| p as usize + 1);
    let min_pairs = (MIN_TASK_WORK / (2 * longest * d)).max(1);
    out.par_chunks_mut(d).enumerate().with_min_len(min_pairs).for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (i, o)| {
            let (t, h) = (i / hq, i % hq);
            let q = &qkv[t * row + h * d..t * row + (h + 1) * d];
            let kvh = h / group;
            let ctx = plan.positions[t] as usize + 1;
            let table = &plan.block_tables[plan.token_seq[t] as usize * plan.max_blocks..];
            let at = |j: usize| (table[j / bs] as usize * bs + j % bs) * kv + kvh * d;

            scores.clear();
            scores.extend((0..ctx).map(|j| dot(q, &k_cache[at(j)..at(j) + d]) * scale));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            o.fill(0.0);
            for (j, p) in scores.iter().enumerate() {
                let v = &v_cache[at(j)..at(j) + d];
                let p = p / sum;
                for (oi, vi) in o.iter_mut().zip(v) {
                    *oi += p * vi;
                }
            }
        },
    );
}
