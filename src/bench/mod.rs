//! Measurements that report against a ceiling taken in the same run: decode
//! throughput as a fraction of this machine's memory read bandwidth (CPU), and the
//! GPU figures against copy bandwidth and GEMM rate (`gpu`).

pub mod answers;
pub mod gpu;
pub mod nvml;
pub mod perplexity;
pub mod profile;
pub mod roofline;
pub mod scenario;
pub mod toolcall;
mod toolhttp;

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// What every CPU-side report opens with: which measurement, where, on which commit.
#[derive(Debug, Serialize)]
pub struct RunHeader {
    pub bench: &'static str,
    pub device: String,
    pub threads: usize,
    pub commit: String,
    pub date: String,
    pub model: String,
    pub backend: &'static str,
}

impl RunHeader {
    pub fn new(bench: &'static str, device: String, model: &str, backend: &'static str) -> Self {
        RunHeader {
            bench,
            device,
            threads: rayon::current_num_threads(),
            commit: git_commit(),
            date: utc_now(),
            model: model.to_string(),
            backend,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DecodeReport {
    #[serde(flatten)]
    pub run: RunHeader,
    pub batch: usize,
    pub decode_tokens: usize,
    pub repeats: usize,
    /// Medians over repeats.
    pub decode_tok_per_s: f64,
    pub ms_per_token: f64,
    /// Parameter bytes streamed per decode token.
    pub weight_bytes_per_token: usize,
    /// weight_bytes_per_token * decode_tok_per_s
    pub achieved_bytes_per_s: f64,
    /// Ceiling: all-thread read bandwidth over a buffer far larger than the caches.
    pub memory_read_bytes_per_s: f64,
    /// Median of the per-repeat ratios (each against the bandwidth measured just before it).
    pub ratio_to_memory_bandwidth: f64,
    /// Every repeat, to show the spread (this machine's speed varies run to run).
    pub decode_tok_per_s_each: Vec<f64>,
    pub memory_read_bytes_per_s_each: Vec<f64>,
    pub ratio_each: Vec<f64>,
    /// With a prefill prompt: its length, and the prompt's tokens per second
    /// (median, then each repeat; a fresh cache each time, logits of the last token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_tok_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefill_tok_per_s_each: Vec<f64>,
}

fn median(x: &[f64]) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Decodes `tokens` greedy tokens at batch 1 after a short prompt, `repeats` times,
/// each right after a measurement of the memory bandwidth.
/// Benches report times; on the PTX emulator those would be the emulator's, not a
/// GPU's, so every bench refuses to run there (correctness runs do not time).
pub fn require_timed_device<B: Backend>(b: &B) -> Result<()> {
    if b.emulated() {
        return Err(Error::Device(
            "the CUDA backend runs on the PTX emulator here: its times are the CPU's, not a GPU's, so no bench \
             reports them (use --device cpu, or a machine with a GPU)"
                .into(),
        ));
    }
    Ok(())
}

pub fn decode_bench<B: Backend>(
    engine: &Engine<B>,
    model: &str,
    tokens: usize,
    repeats: usize,
    prefill: Option<&[u32]>,
) -> Result<DecodeReport> {
    let llm = &engine.llm;
    let b = &engine.backend;
    let prompt = engine.tokenizer.encode("The capital of France is")?;
    let total = prompt.len() + tokens + 1;
    if total > llm.config.max_position_embeddings {
        return Err(Error::Request(format!("{total} tokens exceed the model's context")));
    }
    // The ceiling is measured right before each repeat: on a shared machine the
    // bandwidth moves by tens of percent within minutes, so a ratio is only
    // meaningful between two numbers taken close together.
    let (mut rates, mut bandwidths, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let bw = memory_read_bandwidth();
        // One token comes out of the prefill, then `tokens` timed decode steps.
        let (_, secs) = llm.greedy(b, &prompt, tokens + 1)?;
        let rate = tokens as f64 / secs;
        rates.push(rate);
        bandwidths.push(bw);
        ratios.push(llm.weight_bytes as f64 * rate / bw);
    }
    let prefill_each = match prefill {
        Some(ids) => (0..repeats.max(1)).map(|_| prefill_rate(engine, ids)).collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let rate = median(&rates);
    Ok(DecodeReport {
        run: RunHeader::new("decode", cpu_name(), model, b.name()),
        batch: 1,
        decode_tokens: tokens,
        repeats: rates.len(),
        decode_tok_per_s: rate,
        ms_per_token: 1e3 / rate,
        weight_bytes_per_token: llm.weight_bytes,
        achieved_bytes_per_s: llm.weight_bytes as f64 * rate,
        memory_read_bytes_per_s: median(&bandwidths),
        ratio_to_memory_bandwidth: median(&ratios),
        decode_tok_per_s_each: rates,
        memory_read_bytes_per_s_each: bandwidths,
        ratio_each: ratios,
        prefill_tokens: prefill.map(<[u32]>::len),
        prefill_tok_per_s: (!prefill_each.is_empty()).then(|| median(&prefill_each)),
        prefill_tok_per_s_each: prefill_each,
    })
}

/// Tokens per second of one prefill of `ids` from position 0 on a fresh cache, in
/// steps of the scheduler's chunk (one step up to 512 tokens), asking only the last
/// token's logits, as a generation's prefill does.
pub fn prefill_rate<B: Backend>(engine: &Engine<B>, ids: &[u32]) -> Result<f64> {
    use crate::llm::{Logits, SeqChunk};
    let (llm, b) = (&engine.llm, &engine.backend);
    if ids.is_empty() || ids.len() > llm.config.max_position_embeddings {
        return Err(Error::Request(format!(
            "a prefill of {} tokens: 1 to {} (the model's context)",
            ids.len(),
            llm.config.max_position_embeddings
        )));
    }
    let mut cache = llm.new_cache(b, ids.len());
    let mut table = Vec::new();
    cache.reserve(&mut table, ids.len())?;
    let t = Instant::now();
    for start in (0..ids.len()).step_by(perplexity::STEP_TOKENS) {
        let part = &ids[start..ids.len().min(start + perplexity::STEP_TOKENS)];
        let last = start + part.len() == ids.len();
        let logits = if last { Logits::Last } else { Logits::None };
        llm.forward(b, &mut cache, &[SeqChunk { tokens: part, start, block_table: &table, logits }])?;
    }
    Ok(ids.len() as f64 / t.elapsed().as_secs_f64())
}

/// Best of five passes of a parallel sum over 512 MiB: the rate at which all
/// threads together can stream memory, the ceiling for batch-1 decode.
/// This process's resident set now and at its peak (VmRSS and VmHWM), in bytes;
/// None where /proc does not say.
pub fn resident_memory() -> Option<(usize, usize)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<usize> {
        let kb = status.lines().find_map(|l| l.strip_prefix(name))?;
        kb.trim().strip_suffix("kB")?.trim().parse::<usize>().ok()?.checked_mul(1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn memory_read_bandwidth() -> f64 {
    let n = 128 << 20; // f32s
    let buf: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let chunk = n / rayon::current_num_threads().max(1) / 16;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: f32 = buf.par_chunks(chunk).map(sum8).sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 4) as f64 / secs);
    }
    best
}

/// Our CPU bf16 matmul's rate in FLOP/s, best of five after a warm-up: 512 rows
/// (a full prefill chunk) through an (n, k) weight. The ceiling for prefill on the
/// CPU; a prefill runs the same kernel, so on a noisy machine it can come out a
/// little above it.
pub fn cpu_matmul_rate(n: usize, k: usize) -> f64 {
    use crate::backend::cpu::{gemm, CpuWeight};
    use crate::model::safetensors::HostData;
    let m = 512;
    let mut rng = crate::sampling::Rng::new(3);
    let data = (0..n * k).map(|_| half::bf16::from_f32(rng.next_f32() - 0.5).to_bits()).collect();
    let w = CpuWeight { rows: n, cols: k, data: HostData::Bf16(data) };
    let x: Vec<f32> = (0..m * k).map(|_| rng.next_f32() - 0.5).collect();
    let mut out = vec![0f32; m * n];
    gemm::matmul(&mut out, &x, &w, None, m);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        gemm::matmul(&mut out, &x, &w, None, m);
        best = best.max(2.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&out);
    best
}

/// Eight independent partial sums, so the loop is bound by loads, not adds.
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for c in x.chunks_exact(8) {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum()
}

/// 2 x the parameters of the per-layer linear layers: the FLOPs of one token through
/// them (the lm_head runs for one row per sequence and is left out, as is attention,
/// small at these lengths).
pub fn linear_flop_per_token(c: &crate::model::ModelConfig) -> f64 {
    let (h, d) = (c.hidden_size, c.head_dim);
    let per_layer =
        h * (c.num_heads + 2 * c.num_kv_heads) * d + c.num_heads * d * h + 3 * h * c.intermediate_size;
    2.0 * (per_layer * c.num_layers) as f64
}

/// Writes via a temporary file and a rename, so a reader never sees half a file. The
/// temporary name is unique per call, not only per process: two threads writing the
/// same file at once (parallel tests) must not rename each other's temporary away.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The CPU as reports name it, with the threads the backend uses.
pub fn cpu_device() -> String {
    format!("cpu: {} ({} threads)", cpu_name(), rayon::current_num_threads())
}

/// The CPU's model name and the SIMD extensions our kernels choose between: the VMs
/// these runs come from share one name ("AMD EPYC") across hosts with and without
/// AVX-512, and the two give different figures.
pub(crate) fn cpu_name() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[cfg(target_arch = "x86_64")]
    {
        let has = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
            ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
        ];
        let simd: Vec<&str> = has.iter().filter(|h| h.1).map(|h| h.0).collect();
        if !simd.is_empty() {
            return format!("{name} with {}", simd.join(" "));
        }
    }
    name
}

pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        // The GPU machine runs a copy of the tree without .git: use the build's.
        .unwrap_or_else(|| env!("PIMOE_COMMIT").into())
}

/// ISO 8601 UTC timestamp; days-to-civil after Howard Hinnant's
/// "chrono-Compatible Low-Level Date Algorithms".
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}
