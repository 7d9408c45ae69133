//! `pimoe bench --device cuda`: the GPU figures, each as a ratio to a ceiling
//! measured in the same run on the same GPU.
//!
//! Ceilings: device-to-device copy bandwidth (bytes read + written per second over a
//! 1 GiB copy) and our own bf16 GEMM rate at 8192^3. Figures: batch-1 decode at
//! context 512 against the HBM roofline (weight bytes + KV bytes per token over the
//! copy bandwidth), batch-64 decode in tokens/s, and a 2,048-token prefill as a
//! fraction of the GEMM rate spent on the linear layers.

use std::time::Instant;

use cudarc::driver::{result, sys};
use serde::Serialize;

use crate::backend::cuda::{gemm, CudaBackend};
use crate::backend::{Backend, SAMPLE_PARAMS};
use crate::error::{Error, Result};
use crate::llm::{Llm, Logits, SeqChunk};
use crate::model::safetensors::{HostData, HostTensor};
use crate::sampling::Rng;

#[derive(Debug, Serialize)]
pub struct GpuReport {
    pub bench: &'static str,
    pub device: String,
    pub driver: String,
    pub commit: String,
    pub date: String,
    pub model: String,
    pub graphs: bool,
    /// Ceiling: (read + written bytes) / s of a 1 GiB device-to-device copy.
    pub copy_bytes_per_s: f64,
    /// Ceiling: our bf16 GEMM at 8192^3, FLOP/s.
    pub gemm_8192_flop_per_s: f64,
    pub decode_b1: DecodeFigure,
    pub decode_b64: DecodeFigure,
    pub prefill: PrefillFigure,
}

#[derive(Debug, Serialize)]
pub struct DecodeFigure {
    pub batch: usize,
    pub context: usize,
    pub steps: usize,
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    /// Weight bytes + KV bytes (k and v, every layer, the mean context) per step.
    pub bytes_per_step: f64,
    /// bytes_per_step / step time over the copy bandwidth.
    pub ratio_to_copy_bandwidth: f64,
}

#[derive(Debug, Serialize)]
pub struct PrefillFigure {
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// 2 * tokens * (parameters of the per-layer linear layers); attention and the
    /// single lm_head row are left out.
    pub linear_flop: f64,
    pub ratio_to_gemm_rate: f64,
}

pub fn run(b: &CudaBackend, llm: &Llm<CudaBackend>, model: &str) -> Result<GpuReport> {
    let progress = |what: &str| eprintln!("bench: {what}");
    progress("copy bandwidth");
    let copy = copy_bandwidth(b)?;
    progress("GEMM 8192^3");
    let gemm_rate = gemm_rate(b, 8192)?;
    progress("decode, batch 1, context 512");
    let decode_b1 = decode(b, llm, 1, 512, 128, copy)?;
    progress("decode, batch 64, context 512");
    let decode_b64 = decode(b, llm, 64, 512, 64, copy)?;
    progress("prefill, 2048 tokens");
    let prefill = prefill(b, llm, 2048, gemm_rate)?;
    Ok(GpuReport {
        bench: "gpu",
        device: b.device_name.clone(),
        driver: driver_version(),
        commit: super::git_commit(),
        date: super::utc_now(),
        model: model.into(),
        graphs: std::env::var("PIMOE_CUDA_GRAPHS").map_or(true, |v| v != "0"),
        copy_bytes_per_s: copy,
        gemm_8192_flop_per_s: gemm_rate,
        decode_b1,
        decode_b64,
        prefill,
    })
}

pub fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: writes one int; the driver is loaded (the backend exists).
    match unsafe { sys::cuDriverGetVersion(&mut v).result() } {
        Ok(()) => format!("CUDA {}.{}", v / 1000, v % 1000 / 10),
        Err(e) => format!("unknown ({e:?})"),
    }
}

/// Best of 10 copies of 1 GiB, timed with the host clock around a synchronize.
pub fn copy_bandwidth(b: &CudaBackend) -> Result<f64> {
    let bytes = 1usize << 30;
    let src = b.tensor(bytes / 4);
    let dst = b.tensor(bytes / 4);
    b.synchronize()?;
    let mut best = 0f64;
    for _ in 0..10 {
        let t = Instant::now();
        // SAFETY: both buffers are live and `bytes` long.
        unsafe { result::memcpy_dtod_async(dst.buf.ptr(), src.buf.ptr(), bytes, b.stream().cu_stream()) }
            .map_err(|e| Error::Device(format!("copy: {e:?}")))?;
        b.synchronize()?;
        best = best.max(2.0 * bytes as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn random_bf16(name: &str, rows: usize, cols: usize, seed: u64) -> HostTensor {
    let mut rng = Rng::new(seed);
    let data = (0..rows * cols).map(|_| half::bf16::from_f32(rng.next_f32() - 0.5).to_bits()).collect();
    HostTensor { name: name.into(), shape: vec![rows, cols], data: HostData::Bf16(data) }
}

/// Our bf16 x bf16 GEMM at n^3: best of 5 after a warm-up.
pub fn gemm_rate(b: &CudaBackend, n: usize) -> Result<f64> {
    let a = b.upload(&random_bf16("a", n, n, 1))?;
    let w = b.upload(&random_bf16("w", n, n, 2))?;
    let mut out = b.tensor(n * n);
    gemm::matmul_bf16(b, &mut out, &a, &w, n);
    b.synchronize()?;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        gemm::matmul_bf16(b, &mut out, &a, &w, n);
        b.synchronize()?;
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// `batch` sequences prefilled to `context` tokens, then `steps` greedy decode steps
/// for all of them together (the first two, eager and graph capture, untimed).
fn decode(
    b: &CudaBackend,
    llm: &Llm<CudaBackend>,
    batch: usize,
    context: usize,
    steps: usize,
    copy: f64,
) -> Result<DecodeFigure> {
    let c = &llm.config;
    let total = context + steps + 2;
    let mut cache = llm.new_cache(b, batch * total.next_multiple_of(crate::kv::BLOCK_SIZE));
    let mut rng = Rng::new(7);
    let mut tables = Vec::new();
    let mut last = Vec::new();
    for _ in 0..batch {
        let prompt: Vec<u32> = (0..context).map(|_| rng.next_u32() % c.vocab_size as u32).collect();
        let mut table = Vec::new();
        cache.reserve(&mut table, total)?;
        let step = [SeqChunk { tokens: &prompt, start: 0, block_table: &table, logits: Logits::Last }];
        last.extend(llm.forward_sample(b, &mut cache, &step, &[[0.0, 0.0, 1.0, 0.0]])?);
        tables.push(table);
    }
    let greedy = vec![[0f32; SAMPLE_PARAMS]; batch];
    let mut pos = context;
    let mut step = |last: &mut Vec<u32>, pos: usize| -> Result<()> {
        let toks: Vec<[u32; 1]> = last.iter().map(|&t| [t]).collect();
        let chunks: Vec<SeqChunk> = toks
            .iter()
            .zip(&tables)
            .map(|(t, table)| SeqChunk { tokens: t, start: pos, block_table: table, logits: Logits::Last })
            .collect();
        *last = llm.forward_sample(b, &mut cache, &chunks, &greedy)?;
        Ok(())
    };
    for _ in 0..2 {
        step(&mut last, pos)?;
        pos += 1;
    }
    let t = Instant::now();
    for _ in 0..steps {
        step(&mut last, pos)?;
        pos += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let mean_ctx = (context + 2 + steps / 2) as f64;
    let kv_bytes = 2.0 * c.num_layers as f64 * (c.num_kv_heads * c.head_dim) as f64 * 2.0 * mean_ctx;
    let bytes_per_step = llm.weight_bytes as f64 + batch as f64 * kv_bytes;
    let step_secs = secs / steps as f64;
    Ok(DecodeFigure {
        batch,
        context,
        steps,
        tokens_per_s: (batch * steps) as f64 / secs,
        ms_per_step: step_secs * 1e3,
        bytes_per_step,
        ratio_to_copy_bandwidth: bytes_per_step / step_secs / copy,
    })
}

fn prefill(b: &CudaBackend, llm: &Llm<CudaBackend>, tokens: usize, gemm_rate: f64) -> Result<PrefillFigure> {
    let c = &llm.config;
    let mut rng = Rng::new(9);
    let prompt: Vec<u32> = (0..tokens).map(|_| rng.next_u32() % c.vocab_size as u32).collect();
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let mut cache = llm.new_cache(b, tokens);
        let mut table = Vec::new();
        cache.reserve(&mut table, tokens)?;
        let step = [SeqChunk { tokens: &prompt, start: 0, block_table: &table, logits: Logits::Last }];
        b.synchronize()?;
        let t = Instant::now();
        llm.forward_sample(b, &mut cache, &step, &[[0.0, 0.0, 1.0, 0.0]])?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let linear_flop = tokens as f64 * super::linear_flop_per_token(c);
    Ok(PrefillFigure {
        tokens,
        seconds: best,
        tokens_per_s: tokens as f64 / best,
        linear_flop,
        ratio_to_gemm_rate: linear_flop / best / gemm_rate,
    })
}
