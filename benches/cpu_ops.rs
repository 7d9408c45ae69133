//! Criterion benches of the CPU backend, a group per kernel family: matmul and
//! attention here at SmolLM2-135M shapes (matmul reports weight bytes, the decode
//! bound; attention reports FLOPs), the other families through the backend-generic
//! benches in ops/ that cuda_ops runs on the GPU.

#[path = "ops/mod.rs"]
mod ops;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::cpu::{gemm, CpuBackend, CpuWeight};
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};
use pimoe::model::safetensors::HostData;
use pimoe::sampling::Rng;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_f32() - 0.5).collect()
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_matmul_bf16");
    // (n, k): qkv, gate_up, down, lm_head of SmolLM2-135M
    for &(n, k) in &[(960, 576), (3072, 576), (576, 1536), (49152, 576)] {
        let w = CpuWeight {
            rows: n,
            cols: k,
            data: HostData::Bf16(
                rand_vec(n * k, 1).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect(),
            ),
        };
        for &m in &[1usize, 16] {
            let x = rand_vec(m * k, 2);
            let mut out = vec![0f32; m * n];
            g.throughput(Throughput::Bytes((n * k * 2) as u64));
            g.bench_with_input(BenchmarkId::new(format!("{n}x{k}"), format!("m{m}")), &m, |bch, &m| {
                bch.iter(|| gemm::matmul(&mut out, &x, &w, None, m))
            });
        }
    }
    g.finish();
}

/// Quantized weights (random blocks with fixed f16 scales) at SmolLM2-135M shapes;
/// throughput in stored weight bytes. K-quants need k a multiple of 256, so they
/// run the down projection.
fn matmul_quant(c: &mut Criterion) {
    use pimoe::model::quant::{QType, QuantMatrix, QuantPart};
    let mut g = c.benchmark_group("cpu_matmul_quant");
    for &(ty, n, k) in &[
        (QType::Q8_0, 960, 576),
        (QType::Q4_1, 960, 576),
        (QType::Q4_K, 576, 1536),
        (QType::Q6_K, 576, 1536),
    ] {
        let mut r = Rng::new(7);
        let mut data: Vec<u8> = (0..n * ty.row_bytes(k).unwrap()).map(|_| r.next_u32() as u8).collect();
        let d_at = if ty == QType::Q6_K { 208 } else { 0 };
        for blk in data.chunks_exact_mut(ty.block_bytes()) {
            blk[d_at..d_at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
        }
        let bytes = data.len();
        let q = QuantMatrix { cols: k, parts: vec![QuantPart { ty, rows: n, data }] };
        let w = CpuWeight { rows: n, cols: k, data: HostData::Quant(q) };
        for &m in &[1usize, 16] {
            let x = rand_vec(m * k, 2);
            let mut out = vec![0f32; m * n];
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::new(format!("{ty}_{n}x{k}"), format!("m{m}")), &m, |bch, &m| {
                bch.iter(|| gemm::matmul(&mut out, &x, &w, None, m))
            });
        }
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_attention");
    let shape = AttnShape { num_heads: 9, num_kv_heads: 3, head_dim: 64 };
    let (bs, kv) = (16usize, 3 * 64);
    let b = CpuBackend;
    // (query tokens, context): one decode token over a long context, a prefill chunk
    for &(n, ctx) in &[(1usize, 64usize), (1, 512), (1, 2048), (64, 512)] {
        let blocks = ctx.div_ceil(bs);
        let k_cache = rand_vec(blocks * bs * kv, 3);
        let v_cache = rand_vec(blocks * bs * kv, 4);
        let qkv = rand_vec(n * (9 + 6) * 64, 5);
        let plan = AttnPlan {
            positions: (0..n as u32).map(|i| (ctx - n) as u32 + i).collect(),
            token_seq: vec![0; n],
            slots: vec![0; n],
            block_tables: (0..blocks as u32).collect(),
            max_blocks: blocks,
            block_size: bs,
            seqs: vec![SeqSpan { first: 0, len: n as u32, start: (ctx - n) as u32 }],
        };
        let mut out = vec![0f32; n * 9 * 64];
        // q.k and p.v: 2 * 2 * head_dim flops per (query head, context position)
        g.throughput(Throughput::Elements((n * 9 * ctx * 4 * 64) as u64));
        g.bench_function(format!("n{n}_ctx{ctx}"), |bch| {
            bch.iter(|| b.attention(&mut out, &qkv, &k_cache, &v_cache, &plan, shape))
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let b = CpuBackend;
    matmul(&mut c);
    matmul_quant(&mut c);
    attention(&mut c);
    ops::bench_all(&mut c, &b);
    c.final_summary();
}
