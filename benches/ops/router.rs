//! kernels/router.cu, or its CPU twin: the hidden-state gate for a whole decode
//! batch in one launch, at the demo's shape (two layers, inner 64, softmax over
//! three outputs) on SmolLM2's and Qwen2.5-0.5B's hidden sizes, for 1 and 64 rows.
//! Throughput is the bytes read (hidden states and weights, f32).

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::{Backend, GateLayer};
use pimoe::sampling::Rng;

const INNER: usize = 64;
const OUTPUTS: usize = 3;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_f32() - 0.5).collect()
}

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_router_gate", b.name()));
    for &h in &[576usize, 896] {
        let (w1, b1) = (b.tensor_from(&rand_vec(INNER * h, 1)), b.tensor_from(&rand_vec(INNER, 2)));
        let (w2, b2) = (b.tensor_from(&rand_vec(OUTPUTS * INNER, 3)), b.tensor_from(&rand_vec(OUTPUTS, 4)));
        let layers = [
            GateLayer { w: &w1, b: &b1, inputs: h, outputs: INNER },
            GateLayer { w: &w2, b: &b2, inputs: INNER, outputs: OUTPUTS },
        ];
        for &rows in &[1usize, 64] {
            let x = b.tensor_from(&rand_vec(rows * h, 5));
            let mut probs = b.tensor(rows * OUTPUTS);
            g.throughput(Throughput::Bytes(
                (4 * (rows * h + INNER * (h + 1) + OUTPUTS * (INNER + 1))) as u64,
            ));
            g.bench_function(
                BenchmarkId::new("gate_f32_inner64_softmax3", format!("rows{rows}_h{h}")),
                |bch| bch.iter_custom(|iters| time(b, iters, || b.gate(&mut probs, &x, &layers, true))),
            );
        }
    }
    g.finish();
}
