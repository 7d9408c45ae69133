//! kernels/kv.cu (and rope.cu's fused rope + write), or the CPU twins, at Qwen2.5-0.5B sizes (hq 14, hk 2, head_dim 64) for a decode step
//! (n = 1), a prefill chunk (64) and a long prefill (2048), into a cache of 4096
//! slots. Throughput is the bytes each launch must move.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};

const SHAPE: AttnShape = AttnShape { num_heads: 14, num_kv_heads: 2, head_dim: 64 };
const TOKENS: [usize; 3] = [1, 64, 2048];
const BLOCK_SIZE: usize = 16;
const NUM_BLOCKS: usize = 256;

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_kv", b.name()));
    let (hq, hk, d) = (SHAPE.num_heads, SHAPE.num_kv_heads, SHAPE.head_dim);
    let kv = hk * d;
    let mut k_cache = b.cache(NUM_BLOCKS * BLOCK_SIZE * kv);
    let mut v_cache = b.cache(NUM_BLOCKS * BLOCK_SIZE * kv);
    for &n in &TOKENS {
        // One sequence's tokens at the start of the cache: a prefill's slots are
        // consecutive; a decode token's is wherever its sequence ends.
        let slots: Vec<u32> = if n == 1 { vec![2047] } else { (0..n as u32).collect() };
        let plan = AttnPlan {
            positions: b.index(&slots),
            token_seq: b.index(&vec![0; n]),
            slots: b.index(&slots),
            block_tables: b.index(&(0..NUM_BLOCKS as u32).collect::<Vec<_>>()),
            max_blocks: NUM_BLOCKS,
            block_size: BLOCK_SIZE,
            seqs: vec![SeqSpan { first: 0, len: n as u32, start: 0 }],
        };
        let mut qkv = b.tensor_from(&vec![0.5; n * (hq + 2 * hk) * d]);
        // k and v read as f32 and written as bf16, plus the slots.
        g.throughput(Throughput::Bytes((n * (2 * kv * (4 + 2) + 4)) as u64));
        g.bench_function(BenchmarkId::new("kv_write_bf16", format!("n{n}_hk{hk}_d{d}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || b.kv_write(&mut k_cache, &mut v_cache, &qkv, &plan, SHAPE))
            })
        });
        // The fused rope + write (rope_kv_f32 on CUDA, the two ops on the CPU): the q
        // and k heads read and written, the rotated k and the v read again (L1/L2 on
        // a GPU) and written as bf16, plus positions and slots. Rotations keep the
        // norm, so repeated launches stay finite.
        g.throughput(Throughput::Bytes((n * ((hq + hk) * d * 8 + 2 * kv * (4 + 2) + 8)) as u64));
        g.bench_function(BenchmarkId::new("rope_kv_f32", format!("n{n}_hq{hq}_hk{hk}_d{d}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || {
                    b.rope_kv_write(&mut qkv, &mut k_cache, &mut v_cache, &plan, SHAPE, 1_000_000.0)
                })
            })
        });
    }
    g.finish();
}
