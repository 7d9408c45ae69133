//! kernels/embed.cu, or its CPU twin, at Qwen2.5-0.5B sizes (hidden 896, vocab 151936): the embedding
//! lookup of a decode step (n = 1), a prefill chunk (64) and a long prefill (2048),
//! and the gather of logits rows. Throughput is the bytes each launch must move.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};
use pimoe::sampling::Rng;

const HIDDEN: usize = 896;
const VOCAB: usize = 151_936;
const TOKENS: [usize; 3] = [1, 64, 2048];

fn rand_ids(n: usize, below: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_u32() % below as u32).collect()
}

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_embed", b.name()));
    // Values do not matter to a copy; any bf16 bits will do.
    let bits = (0..VOCAB * HIDDEN).map(|i| 0x3f80 + (i % 127) as u16).collect();
    let table = b
        .upload(&HostTensor {
            name: "embed_tokens".into(),
            shape: vec![VOCAB, HIDDEN],
            data: HostData::Bf16(bits),
        })
        .expect("upload the table");
    for &n in &TOKENS {
        let ids = b.index(&rand_ids(n, VOCAB, n as u64));
        let mut out = b.tensor(n * HIDDEN);
        // bf16 row read, f32 row written, one id read.
        g.throughput(Throughput::Bytes((n * (HIDDEN * (2 + 4) + 4)) as u64));
        g.bench_function(BenchmarkId::new("embed_bf16", format!("n{n}_dim{HIDDEN}")), |bch| {
            bch.iter_custom(|iters| time(b, iters, || b.embed(&mut out, &table, &ids, HIDDEN)))
        });
    }
    // The lm_head's rows out of a 2048-token step's hidden states.
    let x = b.tensor_from(&vec![0.5; 2048 * HIDDEN]);
    for &n in &TOKENS {
        let rows = b.index(&rand_ids(n, 2048, 7 + n as u64));
        let mut out = b.tensor(n * HIDDEN);
        g.throughput(Throughput::Bytes((n * (HIDDEN * (4 + 4) + 4)) as u64));
        g.bench_function(BenchmarkId::new("gather_rows_f32", format!("n{n}_dim{HIDDEN}")), |bch| {
            bch.iter_custom(|iters| time(b, iters, || b.gather_rows(&mut out, &x, &rows, HIDDEN)))
        });
    }
    g.finish();
}
