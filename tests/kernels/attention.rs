//! attention (kernels/attention.cu) against the CPU over the same paged cache: decode
//! steps (split context + reduce, and the one-split path), prefill, chunked prefill
//! (earlier context already cached) and mixed steps, at the shapes of SmolLM2-135M
//! (9, 3, 64), Qwen2.5-0.5B (14, 2, 64) and a head_dim-128 MQA (7, 1, 128).
//!
//! Each case fills the caches the way the engine does: kv_write of the history
//! (positions 0..start of every sequence), then kv_write of the step's own k/v, then
//! attention. Blocks are handed out from a shuffled pool, so block tables are
//! non-contiguous and out of order. k/v values are bf16-exact, so the GPU's bf16
//! cache holds exactly the CPU's f32 values; q is plain f32 (the prefill kernel
//! rounds it, and P, to bf16 for the tensor cores: BF16_TOL).

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};
use pimoe::sampling::Rng;

const BLOCK_SIZE: usize = 16;
const SHAPES: [(usize, usize, usize); 3] = [(9, 3, 64), (14, 2, 64), (7, 1, 128)];
/// q is scaled up so that the softmax is far from uniform (scores of std ~1.3).
const Q_GAIN: f32 = 4.0;
/// Blocks in the pool beyond those the step needs, so that the pool is not just a
/// permutation of exactly the used blocks.
const SPARE_BLOCKS: usize = 7;

/// One step: sequences given as (start, len): the sequence holds positions
/// 0..start + len, of which start..start + len are this step's tokens.
struct Case {
    spans: Vec<(usize, usize)>,
    /// (n_seqs, max_blocks), padded with zeros as Llm::plan pads.
    tables: Vec<u32>,
    max_blocks: usize,
    num_blocks: usize,
    shape: AttnShape,
    /// (history tokens, row): k/v of positions 0..start of each sequence, in order.
    history: Vec<f32>,
    /// (n, row): this step's q (f32) and k/v (bf16-exact).
    qkv: Vec<f32>,
}

impl Case {
    fn new(spans: &[(usize, usize)], (hq, hk, d): (usize, usize, usize), seed: u64) -> Case {
        let shape = AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d };
        let mut rng = Rng::new(seed);
        let blocks: Vec<usize> = spans.iter().map(|&(s, l)| (s + l).div_ceil(BLOCK_SIZE)).collect();
        let num_blocks = blocks.iter().sum::<usize>() + SPARE_BLOCKS;
        let mut pool: Vec<u32> = (0..num_blocks as u32).collect();
        for i in (1..pool.len()).rev() {
            pool.swap(i, rng.next_u32() as usize % (i + 1));
        }
        let mut max_blocks = blocks.iter().copied().max().unwrap_or(1);
        if spans.iter().all(|&(_, l)| l == 1) {
            // As Llm::plan does for decode steps: the table is wider than needed.
            max_blocks = max_blocks.next_power_of_two();
        }
        let mut tables = vec![0u32; spans.len() * max_blocks];
        let mut next = pool.into_iter();
        for (s, &nb) in blocks.iter().enumerate() {
            for j in 0..nb {
                tables[s * max_blocks + j] = next.next().unwrap();
            }
        }
        let hist_rows: usize = spans.iter().map(|&(s, _)| s).sum();
        let n: usize = spans.iter().map(|&(_, l)| l).sum();
        Case {
            spans: spans.to_vec(),
            tables,
            max_blocks,
            num_blocks,
            shape,
            history: qkv_rows(hist_rows, shape, seed + 1),
            qkv: qkv_rows(n, shape, seed + 2),
        }
    }

    fn n(&self) -> usize {
        self.spans.iter().map(|&(_, l)| l).sum()
    }

    /// The plan of tokens at positions `from(span)..to(span)` of every sequence.
    fn plan<B: Backend>(
        &self,
        b: &B,
        range: impl Fn((usize, usize)) -> (usize, usize),
    ) -> AttnPlan<B::Index> {
        let (mut positions, mut token_seq, mut slots, mut seqs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, &span) in self.spans.iter().enumerate() {
            let (from, to) = range(span);
            seqs.push(SeqSpan { first: positions.len() as u32, len: (to - from) as u32, start: from as u32 });
            for pos in from..to {
                positions.push(pos as u32);
                token_seq.push(s as u32);
                let block = self.tables[s * self.max_blocks + pos / BLOCK_SIZE];
                slots.push(block * BLOCK_SIZE as u32 + (pos % BLOCK_SIZE) as u32);
            }
        }
        AttnPlan {
            positions: b.index(&positions),
            token_seq: b.index(&token_seq),
            slots: b.index(&slots),
            block_tables: b.index(&self.tables),
            max_blocks: self.max_blocks,
            block_size: BLOCK_SIZE,
            seqs,
        }
    }

    /// The caches holding the history (positions 0..start of every sequence), and
    /// the plan of the step's own tokens.
    fn with_history<B: Backend>(&self, b: &B) -> (B::Cache, B::Cache, AttnPlan<B::Index>) {
        let kv = self.shape.num_kv_heads * self.shape.head_dim;
        let len = self.num_blocks * BLOCK_SIZE * kv;
        let (mut kc, mut vc) = (b.cache(len), b.cache(len));
        if !self.history.is_empty() {
            let hist = self.plan(b, |(start, _)| (0, start));
            b.kv_write(&mut kc, &mut vc, &b.tensor_from(&self.history), &hist, self.shape);
        }
        (kc, vc, self.plan(b, |(start, len)| (start, start + len)))
    }

    /// Fills the caches (history, then the step's own k/v) and runs attention into `out`.
    fn run<B: Backend>(&self, b: &B, mut out: B::Tensor) -> B::Tensor {
        let (mut kc, mut vc, plan) = self.with_history(b);
        let qkv = b.tensor_from(&self.qkv);
        b.kv_write(&mut kc, &mut vc, &qkv, &plan, self.shape);
        b.attention(&mut out, &qkv, &kc, &vc, &plan, self.shape);
        out
    }

    /// As `run`, but the step's own k/v rotated and written by rope_kv_attention
    /// (`fused`) or by rope_kv_write then attention: the output and both caches.
    fn run_rope<B: Backend>(&self, b: &B, mut out: B::Tensor, fused: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut kc, mut vc, plan) = self.with_history(b);
        let mut qkv = b.tensor_from(&self.qkv);
        if fused {
            b.rope_kv_attention(&mut out, &mut qkv, &mut kc, &mut vc, &plan, self.shape, ROPE_THETA);
        } else {
            b.rope_kv_write(&mut qkv, &mut kc, &mut vc, &plan, self.shape, ROPE_THETA);
            b.attention(&mut out, &qkv, &kc, &vc, &plan, self.shape);
        }
        (b.to_host(&out), b.cache_to_host(&kc), b.cache_to_host(&vc))
    }
}

/// Qwen2.5's rope base: at position 4094 the fastest pair turns through ~650 turns.
const ROPE_THETA: f32 = 1_000_000.0;

/// (rows, (hq + 2 hk) d): q uniform in [-Q_GAIN, Q_GAIN), k and v bf16-exact in [-1, 1).
fn qkv_rows(rows: usize, shape: AttnShape, seed: u64) -> Vec<f32> {
    let d = shape.head_dim;
    let (q, row) = (shape.num_heads * d, (shape.num_heads + 2 * shape.num_kv_heads) * d);
    let mut x = rand_vec(rows * row, seed);
    for r in x.chunks_mut(row) {
        r[..q].iter_mut().for_each(|v| *v *= Q_GAIN);
        let kv = bf16_exact(&r[q..]);
        r[q..].copy_from_slice(&kv);
    }
    x
}

/// Runs every (spans, shape) combination on both backends; `name` labels failures.
fn check_cases(test: &str, span_sets: &[Vec<(usize, usize)>], shapes: &[(usize, usize, usize)]) {
    let Some(g) = gpu(test) else { return };
    for (i, spans) in span_sets.iter().enumerate() {
        for &(hq, hk, d) in shapes {
            let case = Case::new(spans, (hq, hk, d), (i * 1000 + hq * 10 + d) as u64);
            let len = case.n() * hq * d;
            let want = CpuBackend.to_host(&case.run(&CpuBackend, CpuBackend.tensor(len)));
            let got = case.run(&g, poisoned(&g, len));
            let what = format!("{test}: spans (start, len) {spans:?}, hq {hq} hk {hk} d {d}");
            check(&what, &g, &got, &want, BF16_TOL);
        }
    }
}

/// Decode contexts around block edges and long enough to split.
const CONTEXTS: [usize; 6] = [1, 15, 16, 17, 513, 4095];

#[test]
fn attention_decode_batch1_matches_cpu() {
    let sets: Vec<_> = CONTEXTS.iter().map(|&ctx| vec![(ctx - 1, 1)]).collect();
    // A GQA group wider than one CTA's heads (16 > 8): two CTAs per kv head.
    let mut shapes = SHAPES.to_vec();
    shapes.push((16, 1, 64));
    check_cases("attention_decode_batch1_matches_cpu", &sets, &shapes);
}

#[test]
fn attention_decode_batch7_matches_cpu() {
    let mut ctx = CONTEXTS.to_vec();
    ctx.push(200);
    let sets = vec![ctx.iter().map(|&c| (c - 1, 1)).collect::<Vec<_>>()];
    check_cases("attention_decode_batch7_matches_cpu", &sets, &SHAPES);
}

#[test]
fn attention_decode_large_batch_matches_cpu() {
    // Batch 100 at (9, 3, 64) fills the GPU with one split per sequence (the CTA
    // writes its output directly); batch 64 at the other shapes still splits.
    let mut rng = Rng::new(77);
    let mut ctx = |n: usize, max: usize| -> Vec<(usize, usize)> {
        (0..n).map(|_| (rng.next_u32() as usize % max, 1)).collect()
    };
    check_cases("attention_decode_large_batch_matches_cpu", &[ctx(100, 300)], &[(9, 3, 64)]);
    check_cases("attention_decode_large_batch_matches_cpu", &[ctx(64, 700)], &SHAPES);
}

/// rope_kv_attention of a decode step is one kernel on the GPU (q and the new k
/// rotated on load, the cache row written by the CTA that reads it): its output and
/// caches are the bits of rope_kv_write then attention, at batch 1 over the decode
/// contexts (splits, block edges) and batch 7, for every shape; (16, 1, 64) (two
/// head chunks per kv head) and a prefill step take the two launches. The CPU's
/// default (the two ops) agrees within BF16_TOL.
#[test]
fn rope_kv_attention_is_rope_kv_write_then_attention() {
    let test = "rope_kv_attention_is_rope_kv_write_then_attention";
    let Some(g) = gpu(test) else { return };
    let mut sets: Vec<Vec<(usize, usize)>> = CONTEXTS.iter().map(|&ctx| vec![(ctx - 1, 1)]).collect();
    sets.push(CONTEXTS.iter().chain(&[200]).map(|&c| (c - 1, 1)).collect());
    sets.push(vec![(3, 20)]);
    let mut shapes = SHAPES.to_vec();
    shapes.push((16, 1, 64));
    for (i, spans) in sets.iter().enumerate() {
        for &(hq, hk, d) in &shapes {
            let case = Case::new(spans, (hq, hk, d), (5000 + i * 1000 + hq * 10 + d) as u64);
            let len = case.n() * hq * d;
            let what = format!("{test}: spans {spans:?}, hq {hq} hk {hk} d {d}");
            let fused = case.run_rope(&g, poisoned(&g, len), true);
            let two = case.run_rope(&g, poisoned(&g, len), false);
            g.check().unwrap_or_else(|e| panic!("{what}: {e}"));
            for (name, a, b) in
                [("out", &fused.0, &two.0), ("k cache", &fused.1, &two.1), ("v cache", &fused.2, &two.2)]
            {
                if let Some(j) = (0..a.len()).find(|&j| a[j].to_bits() != b[j].to_bits()) {
                    panic!("{what}: {name}[{j}] is {} fused, {} in two launches", a[j], b[j]);
                }
            }
            let cpu = case.run_rope(&CpuBackend, CpuBackend.tensor(len), true);
            assert_close(&what, &fused.0, &cpu.0, BF16_TOL);
        }
    }
}

#[test]
fn attention_prefill_matches_cpu() {
    let sets: Vec<_> = [1, 31, 33, 200].iter().map(|&len| vec![(0, len)]).collect();
    check_cases("attention_prefill_matches_cpu", &sets, &SHAPES);
}

#[test]
fn attention_chunked_prefill_matches_cpu() {
    // Earlier context already in the cache: starts on and off block and tile edges.
    let sets = vec![vec![(16, 16)], vec![(100, 50)], vec![(1000, 130)], vec![(4000, 95)], vec![(64, 64)]];
    check_cases("attention_chunked_prefill_matches_cpu", &sets, &SHAPES);
}

#[test]
fn attention_mixed_step_matches_cpu() {
    // Prefill, chunked prefill and decode spans in one step (all go to the prefill kernel).
    let sets = vec![vec![(0, 33), (500, 1), (40, 70), (7, 1), (4094, 1)], vec![(0, 1), (0, 2), (15, 2)]];
    check_cases("attention_mixed_step_matches_cpu", &sets, &SHAPES);
}

#[test]
fn attention_rejects_unsupported_head_dim() {
    let Some(g) = gpu("attention_rejects_unsupported_head_dim") else { return };
    // Straight to attention (no kv_write), so that its error is the first one.
    let case = Case::new(&[(0, 3)], (4, 2, 96), 5);
    let plan = case.plan(&g, |(start, len)| (start, start + len));
    let cache = g.cache(case.num_blocks * BLOCK_SIZE * 2 * 96);
    let mut out = poisoned(&g, case.n() * 4 * 96);
    g.attention(&mut out, &g.tensor_from(&case.qkv), &cache, &cache, &plan, case.shape);
    let err = g.check().expect_err("head_dim 96 must be refused").to_string();
    assert!(err.contains("head_dim 96"), "{err}");
}

/// The cases above are only as good as their cache filling: check on the CPU alone
/// (no GPU needed) that Case::run reads back the keys of positions 0..=pos of each
/// sequence from the history and step rows, with a direct softmax over them.
#[test]
fn attention_cases_fill_the_cache_as_planned() {
    let case = Case::new(&[(0, 3), (20, 1), (33, 17)], (6, 2, 64), 11);
    let AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d } = case.shape;
    let (q, kv, row) = (hq * d, hk * d, (hq + 2 * hk) * d);
    let got = CpuBackend.to_host(&case.run(&CpuBackend, CpuBackend.tensor(case.n() * q)));
    let mut want = Vec::new();
    let (mut hist, mut step) = (0, 0);
    for &(start, len) in &case.spans {
        let key_row = |j: usize| -> &[f32] {
            if j < start {
                &case.history[(hist + j) * row..(hist + j + 1) * row]
            } else {
                &case.qkv[(step + j - start) * row..(step + j - start + 1) * row]
            }
        };
        for i in 0..len {
            let x = &case.qkv[(step + i) * row..(step + i + 1) * row];
            for h in 0..hq {
                let g = h / (hq / hk);
                let scores: Vec<f64> = (0..=start + i)
                    .map(|j| {
                        let k = &key_row(j)[q + g * d..q + (g + 1) * d];
                        x[h * d..(h + 1) * d].iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = p.iter().sum();
                for c in 0..d {
                    let o: f64 =
                        p.iter().enumerate().map(|(j, &pj)| pj * key_row(j)[q + kv + g * d + c] as f64).sum();
                    want.push((o / sum) as f32);
                }
            }
        }
        hist += start;
        step += len;
    }
    assert_close("attention case plumbing (CPU)", &got, &want, F32_TOL);
}
