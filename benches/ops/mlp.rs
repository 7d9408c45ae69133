//! kernels/mlp.cu, or its CPU twin, at Qwen2.5-0.5B sizes (intermediate 4864) for a decode step
//! (n = 1), a prefill chunk (64) and a long prefill (2048). Throughput is the bytes
//! each launch must move.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::Backend;

const INTER: usize = 4864;
const TOKENS: [usize; 3] = [1, 64, 2048];

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_mlp", b.name()));
    for &n in &TOKENS {
        let gate_up = b.tensor_from(&vec![0.5; n * 2 * INTER]);
        let mut out = b.tensor(n * INTER);
        // gate and up read, out written, all f32.
        g.throughput(Throughput::Bytes((n * INTER * 12) as u64));
        g.bench_function(BenchmarkId::new("swiglu_f32", format!("n{n}_inter{INTER}")), |bch| {
            bch.iter_custom(|iters| time(b, iters, || b.swiglu(&mut out, &gate_up, INTER)))
        });
    }
    g.finish();
}
