//! kernels/rmsnorm.cu, or its CPU twin, at Qwen2.5-0.5B sizes (hidden 896) for a decode step (n = 1),
//! a prefill chunk (64) and a long prefill (2048). Throughput is the bytes each
//! launch must move.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};

const HIDDEN: usize = 896;
const TOKENS: [usize; 3] = [1, 64, 2048];
const EPS: f32 = 1e-6;

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_rmsnorm", b.name()));
    let w = b
        .upload(&HostTensor {
            name: "norm".into(),
            shape: vec![HIDDEN],
            data: HostData::F32(vec![1.0; HIDDEN]),
        })
        .expect("upload the weight");
    for &n in &TOKENS {
        let x = b.tensor_from(&vec![0.5; n * HIDDEN]);
        let mut out = b.tensor(n * HIDDEN);
        // x read, out written (f32), plus the weight.
        g.throughput(Throughput::Bytes((n * HIDDEN * 8 + HIDDEN * 4) as u64));
        g.bench_function(BenchmarkId::new("rmsnorm_f32", format!("n{n}_dim{HIDDEN}")), |bch| {
            bch.iter_custom(|iters| time(b, iters, || b.rmsnorm(&mut out, &x, &w, HIDDEN, EPS)))
        });
    }
    g.finish();
}
