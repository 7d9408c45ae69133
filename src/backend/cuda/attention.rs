//! Launchers for kernels/attention.cu: causal grouped-query attention over the paged
//! bf16 KV cache. CPU twin: `attention` in backend/cpu/attention.rs.
//!
//! A step where every sequence has one token goes to the decode kernels (one query
//! per sequence, the context split across CTAs, flash-decoding, merged by the last
//! split of each to finish);
//! any other step goes whole to the prefill kernel (tensor-core tiles of up to 64
//! query rows of one sequence; a 1-token span is just a short tile).
//! `rope_kv_attention` of a decode step takes the decode kernels' rope variant, which
//! rotates q and the new k on load and writes the cache row itself, when every kv
//! head's q heads fit one CTA (hq / hk <= 8); otherwise rope_kv_f32 runs first.

use super::{Arg, CudaBackend, CudaCache, CudaIndex, CudaTensor, Grid};
use crate::backend::{AttnPlan, AttnShape, Backend, SeqSpan};

const MODULE: &str = "attention";

/// Cache rows per block, fixed in the kernels (ATTN_BLOCK).
const BLOCK: usize = 16;
/// Query rows per prefill CTA (PF_BM) and its threads (PF_THREADS).
const PF_ROWS: usize = 64;
const PF_THREADS: u32 = 128;
/// u32 per prefill work item (PF_WORK): first batch row, rows, first position, sequence.
const PF_WORK: usize = 4;
/// Warps of a decode CTA (DC_WARPS); a split covers at least one block per warp.
const DC_WARPS: usize = 4;
const DC_THREADS: u32 = 32 * DC_WARPS as u32;
/// Decode CTAs to aim for: two per SM of an H100 (132 SMs). Fewer CTAs leave SMs
/// idle at small batch; a constant (not the live position values) keeps the grid a
/// function of the step's shape, as graph replay needs.
const TARGET_CTAS: usize = 264;
/// The most q heads a decode CTA holds (the kernels' largest g). The rope variant
/// needs a kv head's q heads in one CTA, so it is chosen up to this group size.
const DC_MAX_GROUP: usize = 8;

/// out (n, hq * d) = softmax(q k^T / sqrt(d)) v for each token's q heads of qkv
/// (n, (hq + 2 hk) * d) over keys 0..=position of its sequence, read through the
/// block tables from k_cache, v_cache (num_blocks * 16, hk * d); n = plan.positions.len.
///
/// Preconditions. Checked (a violation fails the backend with a message): head_dim
/// 64 or 128; hq a multiple of hk; block_size 16; out, qkv hold n rows; the caches
/// are equal whole rows of hk * d; plan.seqs covers rows 0..n in order without gaps,
/// and each span's last position lies within max_blocks * 16; the block tables hold
/// seqs.len() * max_blocks entries. Not checkable on the host (the plan builder's
/// contract, `Llm::plan`): every block-table entry a sequence uses (blocks 0..=
/// last position / 16) is a block of the cache; positions and token_seq agree with
/// plan.seqs (position = start + i, token_seq = the span's index).
pub fn attention(
    b: &CudaBackend,
    out: &mut CudaTensor,
    qkv: &CudaTensor,
    k_cache: &CudaCache,
    v_cache: &CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
) {
    run(b, out, qkv, k_cache, v_cache, plan, shape, None)
}

/// `rope::rope_kv_write` (rope of q and k, k and v into the cache at plan.slots),
/// then `attention`. A decode step with hq / hk <= 8 runs as one launch that leaves
/// qkv's q and k unrotated and writes each token's k and v at the slot its block
/// table gives for its position, which the plan's contract makes plan.slots.
///
/// Preconditions: `attention`'s and `rope_kv_write`'s.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv_attention(
    b: &CudaBackend,
    out: &mut CudaTensor,
    qkv: &mut CudaTensor,
    k_cache: &mut CudaCache,
    v_cache: &mut CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
    theta: f32,
) {
    let fused =
        is_decode(plan) && shape.num_kv_heads > 0 && shape.num_heads / shape.num_kv_heads <= DC_MAX_GROUP;
    match fused.then(|| super::rope::freq_bytes(b, "rope_kv_attention", shape.head_dim, theta)) {
        Some(Some(freqs)) => run(b, out, qkv, k_cache, v_cache, plan, shape, Some(freqs)),
        Some(None) => {} // the backend failed, naming the head_dim
        None => {
            super::rope::rope_kv_write(b, qkv, k_cache, v_cache, plan, shape, theta);
            run(b, out, qkv, k_cache, v_cache, plan, shape, None)
        }
    }
}

/// Every sequence of the step has one token: the decode kernels' step.
fn is_decode(plan: &AttnPlan<CudaIndex>) -> bool {
    let n = plan.positions.len;
    plan.seqs.iter().all(|s| s.len == 1) && plan.seqs.len() == n && plan.token_seq.len == n
}

/// `attention`, with `rope` the rope variant's frequency table (decode steps only).
#[allow(clippy::too_many_arguments)]
fn run(
    b: &CudaBackend,
    out: &mut CudaTensor,
    qkv: &CudaTensor,
    k_cache: &CudaCache,
    v_cache: &CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
    rope: Option<Vec<u8>>,
) {
    let AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d } = shape;
    let n = plan.positions.len;
    if d != 64 && d != 128 {
        return b.fail(format!("attention: head_dim {d} is not supported by the CUDA kernels (64 or 128)"));
    }
    if hk == 0 || hq == 0 || hq % hk != 0 || hq > u16::MAX as usize {
        return b.fail(format!(
            "attention: {hq} q heads and {hk} kv heads (need hq a multiple of hk, hq < 65536)"
        ));
    }
    if plan.block_size != BLOCK {
        return b
            .fail(format!("attention: cache block size {} (the kernels assume {BLOCK})", plan.block_size));
    }
    let row = (hq + 2 * hk) * d;
    if qkv.len < n * row || out.len < n * hq * d {
        return b.fail(format!(
            "attention: {n} tokens need qkv of {} and out of {} elements, got {} and {}",
            n * row,
            n * hq * d,
            qkv.len,
            out.len
        ));
    }
    if k_cache.len % (hk * d) != 0 || v_cache.len != k_cache.len {
        return b.fail(format!(
            "attention: caches of {} and {} elements, expected equal whole rows of {}",
            k_cache.len,
            v_cache.len,
            hk * d
        ));
    }
    if let Err(e) = check_spans(&plan.seqs, n, plan.max_blocks) {
        return b.fail(format!("attention: {e}"));
    }
    if plan.block_tables.len < plan.seqs.len() * plan.max_blocks || plan.max_blocks > u32::MAX as usize {
        return b.fail(format!(
            "attention: block tables hold {} entries, {} sequences x {} blocks need {}",
            plan.block_tables.len,
            plan.seqs.len(),
            plan.max_blocks,
            plan.seqs.len() * plan.max_blocks
        ));
    }
    if n == 0 {
        return;
    }
    // Softmax runs in base 2: exp2(s * scale * log2 e) = exp(s * scale).
    let scale_log2 = (1.0 / (d as f32).sqrt()) * std::f32::consts::LOG2_E;
    if is_decode(plan) {
        decode(b, out, qkv, k_cache, v_cache, plan, shape, scale_log2, rope);
    } else {
        prefill(b, out, qkv, k_cache, v_cache, plan, shape, scale_log2);
    }
}

/// The spans partition rows 0..n in order, and each fits its block table.
fn check_spans(seqs: &[SeqSpan], n: usize, max_blocks: usize) -> Result<(), String> {
    let mut next = 0usize;
    for (i, s) in seqs.iter().enumerate() {
        let end = s.start as usize + s.len as usize;
        if s.len == 0 || s.first as usize != next || end > max_blocks * BLOCK || end > u32::MAX as usize {
            return Err(format!(
                "sequence {i} {s:?} does not follow row {next} or reaches past its {max_blocks} blocks of {BLOCK}"
            ));
        }
        next += s.len as usize;
    }
    if next != n {
        return Err(format!("the sequences cover {next} rows, the step has {n} tokens"));
    }
    Ok(())
}

/// Work items of up to PF_ROWS query rows of one sequence, those with the most keys
/// first (they take longest, so they should not start last).
fn prefill_work(seqs: &[SeqSpan]) -> Vec<u32> {
    let mut items: Vec<[u32; PF_WORK]> = Vec::new();
    for (s, span) in seqs.iter().enumerate() {
        let mut r = 0;
        while r < span.len {
            let rows = (span.len - r).min(PF_ROWS as u32);
            items.push([span.first + r, rows, span.start + r, s as u32]);
            r += rows;
        }
    }
    items.sort_by_key(|w| std::cmp::Reverse(w[1] + w[2]));
    items.into_iter().flatten().collect()
}

#[allow(clippy::too_many_arguments)]
fn prefill(
    b: &CudaBackend,
    out: &mut CudaTensor,
    qkv: &CudaTensor,
    k_cache: &CudaCache,
    v_cache: &CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
    scale_log2: f32,
) {
    let (hq, hk, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let work = prefill_work(&plan.seqs);
    let tiles = work.len() / PF_WORK;
    if tiles > i32::MAX as usize {
        return b.fail(format!("attention: {tiles} prefill tiles exceed the grid"));
    }
    let work = b.index(&work);
    // Q, two K and two V tiles of 64 rows of d + 8 bf16 (Prefill<D>::SMEM).
    let smem = (5 * PF_ROWS * (d + 8) * 2) as u32;
    // SAFETY: attn_prefill_d{d}_bf16(out, qkv, k, v, tables, work, hq, hk, max_blocks,
    // scale_log2), grid (tiles, hq), block 128, `smem` bytes: CTA (i, h) reads work
    // item i (work holds tiles items), q rows first..first + rows of head h (< n,
    // checked by check_spans; qkv holds n rows), block-table entries 0..=(last
    // position) / 16 of its sequence (within max_blocks, checked), the cache rows
    // those entries name (the plan's contract), and writes out rows first..first +
    // rows, head h (out holds n rows).
    b.launch(
        MODULE,
        &format!("attn_prefill_d{d}_bf16"),
        Grid::new((tiles as u32, hq as u32), PF_THREADS, smem),
        &[
            Arg::from(&*out),
            Arg::from(qkv),
            Arg::from(k_cache),
            Arg::from(v_cache),
            Arg::from(&plan.block_tables),
            Arg::from(&work),
            Arg::from(hq as u32),
            Arg::from(hk as u32),
            Arg::from(plan.max_blocks as u32),
            Arg::from(scale_log2),
        ],
    );
}

/// How a decode step is cut along the context: (heads per CTA, blocks per split,
/// splits). A function of the shape only (n, hq, hk, max_blocks), never of
/// positions, so that a replayed graph stays valid as sequences grow.
fn decode_split(n: usize, hq: usize, hk: usize, max_blocks: usize) -> (usize, usize, usize) {
    let group = hq / hk;
    let gmax = match group {
        1 => 1,
        2 => 2,
        3..=4 => 4,
        _ => DC_MAX_GROUP,
    };
    let ctas = n * hk * group.div_ceil(gmax);
    let wanted = TARGET_CTAS.div_ceil(ctas).max(1);
    let bps = max_blocks.div_ceil(wanted).max(DC_WARPS);
    let splits = max_blocks.div_ceil(bps).max(1);
    (gmax, bps, splits)
}

#[allow(clippy::too_many_arguments)]
fn decode(
    b: &CudaBackend,
    out: &mut CudaTensor,
    qkv: &CudaTensor,
    k_cache: &CudaCache,
    v_cache: &CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
    scale_log2: f32,
    rope: Option<Vec<u8>>,
) {
    let (hq, hk, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let n = plan.positions.len;
    if n > u16::MAX as usize || plan.max_blocks == 0 {
        return b.fail(format!("attention: decode of {n} sequences over {} blocks", plan.max_blocks));
    }
    let (gmax, bps, splits) = decode_split(n, hq, hk, plan.max_blocks);
    let ctas_x = hk * (hq / hk).div_ceil(gmax);
    // One scratch buffer: the partial accumulators (n, hq, splits, d), then the
    // partial (max, sum) pairs (n, hq, splits, 2). Not needed with one split.
    let parts = n * hq * splits;
    let scratch = (splits > 1).then(|| b.scratch(parts * (d + 2)));
    let (part_o, part_ml) = match &scratch {
        Some(s) => (s.buf.ptr(), s.buf.ptr() + (parts * d * 4) as u64),
        None => (0, 0),
    };
    // The splits of a (token, CTA column) count their arrivals here; the last merges.
    let count = if splits > 1 { b.counters(n * ctas_x) } else { 0 };
    if splits > 1 && count == 0 {
        return; // the step was spoiled or the backend failed; it is not run from here
    }
    // SAFETY: attn_decode_d{d}_g{gmax}_bf16(out, part_o, part_ml, count, qkv, k, v,
    // positions, token_seq, tables, hq, hk, max_blocks, bps, scale_log2), grid (ctas_x,
    // n, splits), block 128: CTA (x, t, z) reads positions[t], token_seq[t] (both hold
    // n), q row t (qkv holds n rows), entries below min(pos / 16 + 1, max_blocks) of
    // its sequence's block-table row (token_seq < seqs.len(), the plan's contract;
    // tables hold seqs.len() * max_blocks, checked), the cache rows they name (the
    // plan's contract); it writes out row t (splits == 1), or its (t, head, z) entries
    // of the scratch (which holds n * hq * splits of each) and counts itself in
    // count[t * ctas_x + x] (counters holds n * ctas_x), the last of them reading
    // the (t, head) partials of the splits that counted and writing out row t's
    // heads. The rope variant (ctas_x == hk: one head chunk per kv head, as
    // rope_kv_attention chose it) also takes RopeFreqs (float[ROPE_MAX_HALF], passed
    // as exactly that many bytes) and, in the CTA whose split holds token t's
    // position, writes its kv head's d bf16 of k and of v in the cache row its block
    // table names for that position (the plan's contract: a row of the cache,
    // plan.slots[t]); that CTA alone reads the row, after a barrier.
    let (kernel, freqs) = match rope {
        Some(f) if ctas_x == hk => (format!("attn_decode_rope_d{d}_g{gmax}_bf16"), Some(f)),
        Some(_) => {
            return b.fail(format!(
                "attention: the rope variant needs hq / hk <= {DC_MAX_GROUP}, got {hq} / {hk}"
            ))
        }
        None => (format!("attn_decode_d{d}_g{gmax}_bf16"), None),
    };
    let mut args = vec![
        Arg::from(&*out),
        Arg::from(part_o),
        Arg::from(part_ml),
        Arg::from(count),
        Arg::from(qkv),
        Arg::from(k_cache),
        Arg::from(v_cache),
        Arg::from(&plan.positions),
        Arg::from(&plan.token_seq),
        Arg::from(&plan.block_tables),
        Arg::from(hq as u32),
        Arg::from(hk as u32),
        Arg::from(plan.max_blocks as u32),
        Arg::from(bps as u32),
        Arg::from(scale_log2),
    ];
    args.extend(freqs.map(Arg::Bytes));
    b.launch(MODULE, &kernel, Grid::new((ctas_x as u32, n as u32, splits as u32), DC_THREADS, 0), &args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_work_tiles_every_row_once_longest_first() {
        let seqs = [
            SeqSpan { first: 0, len: 130, start: 0 },
            SeqSpan { first: 130, len: 1, start: 500 },
            SeqSpan { first: 131, len: 64, start: 10 },
        ];
        let w = prefill_work(&seqs);
        let items: Vec<&[u32]> = w.chunks(PF_WORK).collect();
        assert_eq!(items.len(), 3 + 1 + 1);
        let mut covered = vec![0; 195];
        for it in &items {
            assert!(it[1] >= 1 && it[1] as usize <= PF_ROWS);
            let span = seqs[it[3] as usize];
            assert_eq!(it[2] - span.start, it[0] - span.first, "position follows the row");
            for r in it[0]..it[0] + it[1] {
                covered[r as usize] += 1;
            }
        }
        assert!(covered.iter().all(|&c| c == 1));
        let ends: Vec<u32> = items.iter().map(|it| it[1] + it[2]).collect();
        assert!(ends.windows(2).all(|p| p[0] >= p[1]), "{ends:?}");
    }

    #[test]
    fn decode_split_depends_on_shape_and_covers_the_table() {
        for &(n, hq, hk) in &[(1, 14, 2), (64, 14, 2), (7, 9, 3), (300, 16, 1), (1, 7, 1)] {
            for max_blocks in [1, 2, 7, 32, 256, 4096] {
                let (gmax, bps, splits) = decode_split(n, hq, hk, max_blocks);
                assert!(gmax >= (hq / hk).min(8));
                assert!(bps >= DC_WARPS);
                assert!(splits * bps >= max_blocks && (splits - 1) * bps < max_blocks);
            }
        }
        // Batch 1 at 512 tokens: the context is spread over many CTAs.
        assert!(decode_split(1, 14, 2, 32).2 >= 4);
    }
}
