//! kernels/sampling.cu, or its CPU twin, at Qwen2.5's vocabulary (151936) for one decode row and a
//! batch of 64: greedy (one read of the row), temperature with top-k and top-p (the
//! full path: argmax, top-k select, top-p select, draw), and top-p alone (its select
//! computes a weight for every token). Throughput is the logits bytes per launch, so
//! the number reads against the device's copy bandwidth; the kernel re-reads each
//! row from L2 up to 8 times, so a fraction of it is expected.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::Backend;

const VOCAB: usize = 151936;
const ROWS: [usize; 2] = [1, 64];

/// (name, temperature, top_k, top_p)
const MODES: [(&str, f32, f32, f32); 3] =
    [("greedy", 0.0, 0.0, 1.0), ("t0.8_k50_p0.95", 0.8, 50.0, 0.95), ("t1_p0.9", 1.0, 0.0, 0.9)];

/// Logit-like values: roughly normal with spread 4, and a handful of tokens well
/// above the rest in each row, as a language model's output has.
fn logits(rows: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out: Vec<f32> =
        (0..rows * VOCAB).map(|_| (uniform() + uniform() + uniform() - 1.5) * 4.0).collect();
    for r in 0..rows {
        for j in 0..8 {
            let i = (uniform() * VOCAB as f32) as usize % VOCAB;
            out[r * VOCAB + i] = 12.0 + j as f32;
        }
    }
    out
}

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_sample", b.name()));
    for &rows in &ROWS {
        let l = b.tensor_from(&logits(rows));
        let mut out = b.index(&vec![0; rows]);
        for &(name, t, k, p) in &MODES {
            let params: Vec<f32> =
                (0..rows).flat_map(|r| [t, k, p, (r as f32 + 0.5) / rows as f32]).collect();
            let params = b.tensor_from(&params);
            g.throughput(Throughput::Bytes((rows * VOCAB * 4) as u64));
            g.bench_function(
                BenchmarkId::new(format!("sample_f32_{name}"), format!("rows{rows}_vocab{VOCAB}")),
                |bch| bch.iter_custom(|iters| time(b, iters, || b.sample(&mut out, &l, &params, VOCAB))),
            );
        }
    }
    g.finish();
}
