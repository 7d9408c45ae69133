//! Criterion bench of the CUDA attention kernels at Qwen2.5-0.5B's heads (hq 14,
//! hk 2, head_dim 64): decode at batch 1 and 64 over contexts of 512 and 4096 tokens
//! (throughput: K/V bytes read, to compare with HBM bandwidth), and a 2048-token
//! prefill (throughput: the causal attention's FLOPs). The caches are zeros: the
//! kernels' speed does not depend on the values, and this needs no kv_write.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};

const BLOCK_SIZE: usize = 16;

/// `seqs` sequences of `len` new tokens each, at positions ctx - len..ctx, on
/// contiguous blocks; the table is padded to a power of two for decode, as
/// Llm::plan does.
fn plan(
    b: &CudaBackend,
    seqs: usize,
    len: usize,
    ctx: usize,
) -> (AttnPlan<<CudaBackend as Backend>::Index>, usize) {
    let blocks = ctx.div_ceil(BLOCK_SIZE);
    let max_blocks = if len == 1 { blocks.next_power_of_two() } else { blocks };
    let mut tables = vec![0u32; seqs * max_blocks];
    let (mut positions, mut token_seq, mut slots, mut spans) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in 0..seqs {
        for j in 0..blocks {
            tables[s * max_blocks + j] = (s * blocks + j) as u32;
        }
        spans.push(SeqSpan { first: (s * len) as u32, len: len as u32, start: (ctx - len) as u32 });
        for pos in ctx - len..ctx {
            positions.push(pos as u32);
            token_seq.push(s as u32);
            slots.push(
                tables[s * max_blocks + pos / BLOCK_SIZE] * BLOCK_SIZE as u32 + (pos % BLOCK_SIZE) as u32,
            );
        }
    }
    let plan = AttnPlan {
        positions: b.index(&positions),
        token_seq: b.index(&token_seq),
        slots: b.index(&slots),
        block_tables: b.index(&tables),
        max_blocks,
        block_size: BLOCK_SIZE,
        seqs: spans,
    };
    (plan, seqs * blocks)
}

pub fn bench(c: &mut Criterion, b: &CudaBackend) {
    let shape = AttnShape { num_heads: 14, num_kv_heads: 2, head_dim: 64 };
    let (hq, hk, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let row = (hq + 2 * hk) * d;
    let mut g = c.benchmark_group("cuda_attention");

    // (sequences, new tokens each, context): decode steps, then one prefill.
    for &(seqs, len, ctx) in
        &[(1usize, 1usize, 512usize), (1, 1, 4096), (64, 1, 512), (64, 1, 4096), (1, 2048, 2048)]
    {
        let (plan, num_blocks) = plan(b, seqs, len, ctx);
        let n = seqs * len;
        let kc = b.cache(num_blocks * BLOCK_SIZE * hk * d);
        let vc = b.cache(num_blocks * BLOCK_SIZE * hk * d);
        let q: Vec<f32> = (0..n * row).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        let qkv = b.tensor_from(&q);
        let mut out = b.tensor(n * hq * d);
        let name = if len == 1 {
            // Every query reads its sequence's whole K and V once (per kv head).
            g.throughput(Throughput::Bytes((seqs * ctx * hk * d * 2 * 2) as u64));
            format!("decode_b{seqs}_ctx{ctx}")
        } else {
            // q.k and p.v over the causal triangle: 4 * d flops per (head, query, key).
            let pairs = (ctx - len) * len + len * (len + 1) / 2;
            g.throughput(Throughput::Elements((4 * d * hq * pairs * seqs) as u64));
            format!("prefill_{len}")
        };
        g.bench_function(name, |bch| {
            bch.iter_custom(|iters| {
                b.synchronize().expect("attention bench setup");
                let t = Instant::now();
                for _ in 0..iters {
                    b.attention(&mut out, &qkv, &kc, &vc, &plan, shape);
                }
                b.synchronize().expect("attention bench");
                t.elapsed().max(Duration::from_nanos(1))
            })
        });
    }
    g.finish();
}
