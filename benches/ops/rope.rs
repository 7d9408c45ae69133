//! kernels/rope.cu, or its CPU twin, at Qwen2.5-0.5B sizes (hq 14, hk 2, head_dim 64, theta 1e6) for a
//! decode step (n = 1), a prefill chunk (64) and a long prefill (2048). Throughput
//! is the bytes each launch must move.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::{AttnShape, Backend};

const SHAPE: AttnShape = AttnShape { num_heads: 14, num_kv_heads: 2, head_dim: 64 };
const THETA: f32 = 1_000_000.0;
const TOKENS: [usize; 3] = [1, 64, 2048];

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_rope", b.name()));
    let (hq, hk, d) = (SHAPE.num_heads, SHAPE.num_kv_heads, SHAPE.head_dim);
    for &n in &TOKENS {
        // A prefill's positions 0..n; a decode token late in a 2k context.
        let pos: Vec<u32> = if n == 1 { vec![2047] } else { (0..n as u32).collect() };
        let positions = b.index(&pos);
        // Rotations keep the norm, so repeated launches stay finite.
        let mut qkv = b.tensor_from(&vec![0.5; n * (hq + 2 * hk) * d]);
        // The q and k heads read and written in place, plus the positions.
        g.throughput(Throughput::Bytes((n * ((hq + hk) * d * 8 + 4)) as u64));
        g.bench_function(BenchmarkId::new("rope_f32", format!("n{n}_hq{hq}_hk{hk}_d{d}")), |bch| {
            bch.iter_custom(|iters| time(b, iters, || b.rope(&mut qkv, &positions, SHAPE, THETA)))
        });
    }
    g.finish();
}
