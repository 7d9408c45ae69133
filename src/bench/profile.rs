//! `pimoe profile-kernels`: one model step on the PTX emulator with its counters on,
//! printed like a profiler (one row per kernel) with a roofline estimate of the step
//! on an H100 and an H200, and checked against the issue's targets.
//!
//! Counted, exactly (the emulator runs the PTX the GPU would): instructions by
//! class, active lanes, global requests and the 32-byte sectors they touch, shared
//! wavefronts and bank conflicts, mma / ldmatrix / cp.async, launches and graph
//! launches. Modelled: DRAM bytes (each sector a launch touches, once), occupancy
//! (ptxas's registers and shared memory against sm_90's limits) and every time
//! (`roofline`). The model is random weights of the config's shapes, and the KV
//! cache is filled directly (no prefill): counts depend on shapes, not values.

use serde::Serialize;
use serde_json::Value;

use super::roofline::{self, DeviceModel};
use crate::backend::cuda::gemm::GEMV_MAX_M;
use crate::backend::cuda::{driver, CudaBackend};
use crate::backend::kernels::RESOURCES;
use crate::backend::{Backend, SAMPLE_PARAMS};
use crate::error::{Error, Result};
use crate::kv::BLOCK_SIZE;
use crate::llm::{Llm, Logits, SeqChunk};
use crate::sampling::Rng;

/// The Qwen2.5-0.5B-Instruct config (the fields that shape the computation, as
/// bench/gpu/qwen_reference.py builds it): the default model to profile.
pub const QWEN25_05B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
  "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
  "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
  "tie_word_embeddings": true, "use_sliding_window": false,
  "bos_token_id": 151643, "eos_token_id": 151645
}"#;

/// FLOPs of one mma.sync.m16n8k16 (16 x 8 x 16 multiply-adds).
pub const MMA_FLOP: f64 = 2.0 * 16.0 * 8.0 * 16.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Decode,
    Prefill,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileConfig {
    pub step: StepKind,
    /// Sequences in the step.
    pub batch: usize,
    /// Decode: tokens already in each sequence's KV cache. Prefill: prompt tokens
    /// per sequence.
    pub ctx: usize,
}

/// One kernel launch as the emulator recorded it.
#[derive(Clone, Debug)]
struct Launch {
    kernel: String,
    block: [u32; 3],
    smem: u32,
    in_graph: bool,
    c: Value,
}

impl Launch {
    fn n(&self, path: &str) -> f64 {
        path.split('.').try_fold(&self.c, |v, k| v.get(k)).and_then(Value::as_f64).unwrap_or(0.0)
    }
}

/// One row of the table: every launch of one kernel in the step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelRow {
    pub kernel: String,
    pub launches: usize,
    pub threads_per_block: u32,
    pub registers: u32,
    pub smem_per_block: u32,
    /// Resident warps per SM over 64, from ptxas's registers and shared memory.
    pub occupancy: f64,
    pub warp_instructions: f64,
    /// Warp instructions by class: int, fp32, fp64, memory, mma, control, sync.
    pub inst_by_class: [f64; 7],
    pub lane_efficiency: f64,
    pub global_requests: f64,
    /// Bytes the lanes asked for (loads and stores).
    pub bytes_requested: f64,
    /// 32-byte sectors those requests touched, as bytes.
    pub bytes_in_sectors: f64,
    /// bytes_requested / bytes_in_sectors.
    pub coalescing: f64,
    pub sectors_per_request: f64,
    /// Sectors each launch touched at least once, summed over launches (DRAM bytes
    /// if every cache misses once and hits after).
    pub dram_bytes: f64,
    pub shared_wavefronts: f64,
    pub bank_conflicts: f64,
    /// Where the bank conflicts are, by source line.
    pub conflicts_at: Vec<(String, f64)>,
    pub mma: f64,
    pub ldmatrix: f64,
    pub cp_async: f64,
    pub barriers: f64,
    /// Roofline seconds of all its launches on the H100 model (without overheads).
    pub h100_roofline_s: f64,
    /// This kernel's share of the step's estimated H100 time (overheads included).
    pub time_share: f64,
}

/// A target of the issue, checked against the counts.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub limit: String,
    pub holds: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepEstimate {
    pub device: DeviceModel,
    /// Sum of the kernels' roofline times plus launch overheads, seconds.
    pub estimate_s: f64,
    /// (weight bytes + KV bytes read) / memory rate: the bandwidth roofline.
    pub bandwidth_roofline_s: f64,
    /// bandwidth_roofline_s / estimate_s.
    pub ratio_to_bandwidth_roofline: f64,
}

/// What ran, where and when: the head of both reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub bench: &'static str,
    pub note: &'static str,
    pub device: String,
    pub commit: String,
    pub date: String,
    pub model: String,
    pub config: ProfileConfig,
}

impl RunInfo {
    fn new(
        bench: &'static str,
        note: &'static str,
        device: &str,
        model: &str,
        cfg: &ProfileConfig,
    ) -> RunInfo {
        RunInfo {
            bench,
            note,
            device: device.to_string(),
            commit: super::git_commit(),
            date: super::utc_now(),
            model: model.to_string(),
            config: cfg.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelProfile {
    #[serde(flatten)]
    pub run: RunInfo,
    pub kernel_launches: usize,
    pub graph_launches: usize,
    /// Graph operations that are not kernels (memsets, copies): each a node of the
    /// graph, charged like a kernel's in the estimate.
    pub other_graph_nodes: usize,
    /// Kernels launched from the host, outside any graph.
    pub eager_launches: usize,
    pub weight_bytes: f64,
    pub kv_bytes_read: f64,
    pub dram_bytes: f64,
    /// dram_bytes / (weight_bytes + kv_bytes_read).
    pub bytes_ratio: f64,
    /// FLOPs of the step's linear layers (lm_head rows included) and attention
    /// score/value products, and the fewest m16n8k16 mma that could do those run
    /// on tensor cores.
    pub gemm_mma: f64,
    pub gemm_mma_minimum: f64,
    pub attention_mma: f64,
    pub attention_mma_minimum: f64,
    pub kernels: Vec<KernelRow>,
    pub estimates: Vec<StepEstimate>,
    pub targets: Vec<Target>,
}

/// One step's inputs: a KV cache holding each sequence's blocks (the context of a
/// decode written directly), and the tokens.
struct Step {
    cache: crate::kv::KvCache<CudaBackend>,
    tables: Vec<Vec<u32>>,
    seqs: Vec<Vec<u32>>,
    start: usize,
    greedy: Vec<[f32; SAMPLE_PARAMS]>,
}

impl Step {
    fn new(b: &CudaBackend, llm: &Llm<CudaBackend>, cfg: &ProfileConfig) -> Result<Step> {
        if cfg.batch == 0 || cfg.ctx == 0 {
            return Err(Error::Request("--batch and --ctx must be at least 1".into()));
        }
        let c = &llm.config;
        let per_seq = match cfg.step {
            StepKind::Decode => cfg.ctx + 1,
            StepKind::Prefill => cfg.ctx,
        };
        if per_seq > c.max_position_embeddings {
            return Err(Error::Request(format!(
                "--ctx {} needs {per_seq} positions, more than the model's {}",
                cfg.ctx, c.max_position_embeddings
            )));
        }
        let blocks_per_seq = per_seq.div_ceil(BLOCK_SIZE);
        let tokens = blocks_per_seq
            .checked_mul(BLOCK_SIZE * cfg.batch)
            .ok_or_else(|| Error::Request(format!("--batch {} x --ctx {} overflows", cfg.batch, cfg.ctx)))?;
        let mut cache = llm.new_cache(b, tokens);
        b.check()?;
        let mut tables = Vec::with_capacity(cfg.batch);
        for _ in 0..cfg.batch {
            let mut t = Vec::new();
            cache.reserve(&mut t, per_seq)?;
            tables.push(t);
        }
        let mut rng = Rng::new(11);
        if cfg.step == StepKind::Decode {
            // The context's keys and values, written directly: random bf16 in (-1, 1).
            let pattern: Vec<u8> = (0..1 << 20)
                .flat_map(|_| half::bf16::from_f32(rng.next_f32() * 2.0 - 1.0).to_bits().to_le_bytes())
                .collect();
            for (k, v) in &cache.layers {
                for buf in [&k.buf, &v.buf] {
                    let mut off = 0;
                    while off < buf.bytes() {
                        let n = pattern.len().min(buf.bytes() - off);
                        b.upload_now(buf.ptr() + off as u64, &pattern[..n]);
                        off += n;
                    }
                }
            }
            b.synchronize()?;
        }
        let vocab = c.vocab_size as u32;
        let seqs: Vec<Vec<u32>> = match cfg.step {
            StepKind::Decode => (0..cfg.batch).map(|_| vec![rng.next_u32() % vocab]).collect(),
            StepKind::Prefill => {
                (0..cfg.batch).map(|_| (0..cfg.ctx).map(|_| rng.next_u32() % vocab).collect()).collect()
            }
        };
        let start = if cfg.step == StepKind::Decode { cfg.ctx } else { 0 };
        Ok(Step { cache, tables, seqs, start, greedy: vec![[0.0, 0.0, 1.0, 0.0]; cfg.batch] })
    }

    /// Runs the step once (its KV writes land at the same positions every time).
    fn run(&mut self, b: &CudaBackend, llm: &Llm<CudaBackend>) -> Result<()> {
        let chunks: Vec<SeqChunk> = self
            .seqs
            .iter()
            .zip(&self.tables)
            .map(|(t, table)| SeqChunk {
                tokens: t,
                start: self.start,
                block_table: table,
                logits: Logits::Last,
            })
            .collect();
        llm.forward_sample(b, &mut self.cache, &chunks, &self.greedy)?;
        Ok(())
    }

    /// A decode step of one shape runs eagerly once, is captured the second time and
    /// replayed from then on: the third is the step as it runs in production.
    fn warm_up(&mut self, b: &CudaBackend, llm: &Llm<CudaBackend>, cfg: &ProfileConfig) -> Result<()> {
        let warmups = if cfg.step == StepKind::Decode { 2 } else { 0 };
        for i in 0..warmups {
            eprintln!("profile-kernels: warm-up step {} of {warmups} (graph capture on the second)", i + 1);
            self.run(b, llm)?;
        }
        Ok(())
    }
}

/// Runs the step on `b` (which must be the emulator) and collects its counters.
pub fn run(
    b: &CudaBackend,
    llm: &Llm<CudaBackend>,
    model: &str,
    cfg: &ProfileConfig,
) -> Result<KernelProfile> {
    if !b.is_emulator() {
        return Err(Error::Device(
            "profile-kernels counts on the PTX emulator; on a GPU it times the step (--device cuda), and \
             Nsight Compute measures the same launches (bench/gpu/run.sh ncu)"
                .into(),
        ));
    }
    let mut step = Step::new(b, llm, cfg)?;
    step.warm_up(b, llm, cfg)?;
    eprintln!("profile-kernels: the counted step");
    driver::emulator_counters(true)
        .ok_or_else(|| Error::Device("the emulator's counters are unavailable".into()))?;
    let ran = step.run(b, llm).and_then(|_| b.synchronize());
    driver::emulator_counters(false);
    ran?;
    let records = driver::emulator_counter_records()
        .ok_or_else(|| Error::Device("the emulator returned no counter records".into()))?;
    let records: Vec<Value> = serde_json::from_str(&records)
        .map_err(|e| Error::Device(format!("the emulator's counter records are not JSON: {e}")))?;
    Ok(analyse(llm, model, cfg, &records, b.device_name.clone()))
}

/// The same step timed on a GPU: what the emulator's estimate predicts.
#[derive(Clone, Debug, Serialize)]
pub struct GpuTiming {
    #[serde(flatten)]
    pub run: RunInfo,
    pub replays: usize,
    /// Host wall time of each step, from its launch to its sampled tokens on the host.
    pub step_s_median: f64,
    pub step_s_min: f64,
    pub step_s_mean: f64,
}

/// Runs the step on a GPU: the warm-ups, then `replays` timed steps (the graph
/// replayed, for a decode). Under Nsight Compute pass `replays` 0: the last step
/// run is the one the emulator counts.
pub fn time_on_gpu(
    b: &CudaBackend,
    llm: &Llm<CudaBackend>,
    model: &str,
    cfg: &ProfileConfig,
    replays: usize,
) -> Result<GpuTiming> {
    if b.is_emulator() {
        return Err(Error::Device("timing needs a GPU; the emulator's times are not GPU figures".into()));
    }
    let mut step = Step::new(b, llm, cfg)?;
    step.warm_up(b, llm, cfg)?;
    eprintln!("profile-kernels: the step as counted, then {replays} timed");
    step.run(b, llm)?;
    b.synchronize()?;
    let mut times = Vec::with_capacity(replays);
    for _ in 0..replays {
        let t = std::time::Instant::now();
        step.run(b, llm)?;
        b.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let pick = |f: fn(&[f64]) -> f64| if sorted.is_empty() { f64::NAN } else { f(&sorted) };
    Ok(GpuTiming {
        run: RunInfo::new(
            "profile-kernels --device cuda",
            "host wall time per step (launch to sampled tokens), after the warm-ups; compare with the \
             emulator's ESTIMATE for the same configuration",
            &b.device_name,
            model,
            cfg,
        ),
        replays,
        step_s_median: pick(|s| s[s.len() / 2]),
        step_s_min: pick(|s| s[0]),
        step_s_mean: pick(|s| s.iter().sum::<f64>() / s.len() as f64),
    })
}

fn analyse(
    llm: &Llm<CudaBackend>,
    model: &str,
    cfg: &ProfileConfig,
    records: &[Value],
    device: String,
) -> KernelProfile {
    let c = &llm.config;
    let launches: Vec<Launch> = records
        .iter()
        .filter(|r| r["kind"] == "launch")
        .map(|r| {
            let dims = |k: &str| -> [u32; 3] {
                let v = r[k]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(1) as u32).collect::<Vec<_>>());
                v.and_then(|v| v.try_into().ok()).unwrap_or([1, 1, 1])
            };
            Launch {
                kernel: r["kernel"].as_str().unwrap_or("?").to_string(),
                block: dims("block"),
                smem: (r["dyn_smem"].as_u64().unwrap_or(0) + r["static_smem"].as_u64().unwrap_or(0)) as u32,
                in_graph: r["in_graph"].as_bool().unwrap_or(false),
                c: r["counters"].clone(),
            }
        })
        .collect();
    let graphs: Vec<&Value> = records.iter().filter(|r| r["kind"] == "graph").collect();
    let graph_launches = graphs.len();
    let graph_ops: usize = graphs.iter().map(|r| r["operations"].as_u64().unwrap_or(0) as usize).sum();
    let other_graph_nodes = graph_ops.saturating_sub(launches.iter().filter(|l| l.in_graph).count());
    let h100 = roofline::h100();

    let mut names: Vec<&str> = launches.iter().map(|l| l.kernel.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut rows: Vec<KernelRow> = names
        .iter()
        .map(|&name| {
            let ls: Vec<&Launch> = launches.iter().filter(|l| l.kernel == name).collect();
            let sum = |p: &str| ls.iter().map(|l| l.n(p)).sum::<f64>();
            let classes = ["int", "fp32", "fp64", "memory", "mma", "control", "sync"];
            let inst_by_class: [f64; 7] = std::array::from_fn(|k| sum(&format!("inst.{}", classes[k])));
            let warp_instructions: f64 = inst_by_class.iter().sum();
            let bytes_requested =
                sum("global_load.bytes") + sum("global_store.bytes") + sum("global_atomic.bytes");
            let sectors =
                sum("global_load.sectors") + sum("global_store.sectors") + sum("global_atomic.sectors");
            let requests =
                sum("global_load.requests") + sum("global_store.requests") + sum("global_atomic.requests");
            let dram_bytes = 32.0 * (sum("dram_read_sectors") + sum("dram_write_sectors"));
            let wave = sum("shared_load.wavefronts")
                + sum("shared_store.wavefronts")
                + sum("shared_atomic.wavefronts");
            let ideal = sum("shared_load.ideal") + sum("shared_store.ideal") + sum("shared_atomic.ideal");
            let mut at: std::collections::BTreeMap<String, f64> = Default::default();
            for l in &ls {
                if let Some(m) = l.c["conflicts_at"].as_object() {
                    for (k, v) in m {
                        *at.entry(k.clone()).or_default() += v.as_f64().unwrap_or(0.0);
                    }
                }
            }
            let mma = sum("mma");
            let roofline_s: f64 = ls
                .iter()
                .map(|l| {
                    let bytes = 32.0 * (l.n("dram_read_sectors") + l.n("dram_write_sectors"));
                    h100.roofline_s(bytes, l.n("mma") * MMA_FLOP)
                })
                .sum();
            let first = ls[0];
            let threads = first.block.iter().product::<u32>();
            let res = RESOURCES.iter().find(|r| r.entry == name);
            let registers = res.map_or(0, |r| r.registers);
            KernelRow {
                kernel: name.to_string(),
                launches: ls.len(),
                threads_per_block: threads,
                registers,
                smem_per_block: first.smem,
                occupancy: if registers > 0 {
                    roofline::occupancy(threads, registers, first.smem)
                } else {
                    0.0
                },
                warp_instructions,
                inst_by_class,
                lane_efficiency: if warp_instructions > 0.0 {
                    sum("thread_inst") / (32.0 * warp_instructions)
                } else {
                    1.0
                },
                global_requests: requests,
                bytes_requested,
                bytes_in_sectors: 32.0 * sectors,
                coalescing: if sectors > 0.0 { bytes_requested / (32.0 * sectors) } else { 1.0 },
                sectors_per_request: if requests > 0.0 { sectors / requests } else { 0.0 },
                dram_bytes,
                shared_wavefronts: wave,
                bank_conflicts: wave - ideal,
                conflicts_at: at.into_iter().collect(),
                mma,
                ldmatrix: sum("ldmatrix"),
                cp_async: sum("cp_async"),
                barriers: sum("barriers"),
                h100_roofline_s: roofline_s,
                time_share: 0.0,
            }
        })
        .collect();

    let eager = launches.iter().filter(|l| !l.in_graph).count();
    let estimate = |d: &DeviceModel| -> f64 {
        let kernels: f64 = launches
            .iter()
            .map(|l| {
                let bytes = 32.0 * (l.n("dram_read_sectors") + l.n("dram_write_sectors"));
                d.roofline_s(bytes, l.n("mma") * MMA_FLOP) + d.per_kernel_s
            })
            .sum();
        kernels + other_graph_nodes as f64 * d.per_kernel_s + (graph_launches + eager) as f64 * d.per_launch_s
    };
    let h100_total = estimate(&h100);
    for r in rows.iter_mut() {
        r.time_share = (r.h100_roofline_s + r.launches as f64 * h100.per_kernel_s) / h100_total;
    }
    rows.sort_by(|a, b| b.time_share.total_cmp(&a.time_share));

    // What the step must read at the least: every weight once, and the KV cache of
    // every sequence up to its position (decode; a prefill writes it).
    let kv_dim = (c.num_kv_heads * c.head_dim) as f64;
    let kv_bytes_read = match cfg.step {
        StepKind::Decode => 2.0 * 2.0 * c.num_layers as f64 * kv_dim * (cfg.batch * cfg.ctx) as f64,
        StepKind::Prefill => 0.0,
    };
    let weight_bytes = llm.weight_bytes as f64;
    let dram_bytes: f64 = rows.iter().map(|r| r.dram_bytes).sum();
    let rows_of_tokens = match cfg.step {
        StepKind::Decode => cfg.batch,
        StepKind::Prefill => cfg.batch * cfg.ctx,
    } as f64;
    // The FLOPs the tensor cores run: the gemv (m <= 16) uses none, so the lm_head
    // (one row per sequence) counts only when its m is past the gemv's.
    let tc = |m: f64| if m > GEMV_MAX_M as f64 { 1.0 } else { 0.0 };
    let lm_head_flop = 2.0 * (c.vocab_size * c.hidden_size) as f64 * cfg.batch as f64;
    let gemm_flop = tc(rows_of_tokens) * rows_of_tokens * super::linear_flop_per_token(c)
        + tc(cfg.batch as f64) * lm_head_flop;
    let d = c.head_dim as f64;
    let attn_flop_per_layer = match cfg.step {
        // QK^T and PV over the causal triangle, every head.
        StepKind::Prefill => {
            let n = cfg.ctx as f64;
            cfg.batch as f64 * c.num_heads as f64 * 2.0 * d * n * (n + 1.0)
        }
        StepKind::Decode => cfg.batch as f64 * c.num_heads as f64 * 4.0 * d * (cfg.ctx + 1) as f64,
    };
    let attn_flop = attn_flop_per_layer * c.num_layers as f64;
    let mma_of =
        |prefix: &str| rows.iter().filter(|r| r.kernel.starts_with(prefix)).map(|r| r.mma).sum::<f64>();
    let (gemm_mma, attention_mma) = (mma_of("gemm") + mma_of("gemv"), mma_of("attn"));

    let estimates: Vec<StepEstimate> = [h100.clone(), roofline::h200()]
        .into_iter()
        .map(|d| {
            let est = estimate(&d);
            let floor = (weight_bytes + kv_bytes_read) / d.memory_bytes_per_s;
            StepEstimate {
                estimate_s: est,
                bandwidth_roofline_s: floor,
                ratio_to_bandwidth_roofline: floor / est,
                device: d,
            }
        })
        .collect();

    let mut p = KernelProfile {
        run: RunInfo::new(
            "profile-kernels",
            "counts from the PTX emulator; DRAM bytes, occupancy and every time are a model \
             (src/bench/roofline.rs), not a GPU measurement",
            &device,
            model,
            cfg,
        ),
        kernel_launches: launches.len(),
        graph_launches,
        other_graph_nodes,
        eager_launches: eager,
        weight_bytes,
        kv_bytes_read,
        dram_bytes,
        bytes_ratio: dram_bytes / (weight_bytes + kv_bytes_read),
        gemm_mma,
        gemm_mma_minimum: if gemm_mma > 0.0 { gemm_flop / MMA_FLOP } else { 0.0 },
        attention_mma,
        attention_mma_minimum: if attention_mma > 0.0 { attn_flop / MMA_FLOP } else { 0.0 },
        kernels: rows,
        estimates,
        targets: Vec::new(),
    };
    p.targets = targets(&p);
    p
}

/// The issue's targets for this configuration.
fn targets(p: &KernelProfile) -> Vec<Target> {
    let mut t = Vec::new();
    let mut add = |what: String, value: f64, limit: &str, holds: bool| {
        t.push(Target { what, value, limit: limit.into(), holds })
    };
    let cfg = &p.run.config;
    if cfg.step == StepKind::Decode && cfg.batch == 1 {
        add("bytes moved / (weights + KV read)".into(), p.bytes_ratio, "<= 1.05", p.bytes_ratio <= 1.05);
        for r in p.kernels.iter().filter(|r| r.dram_bytes > 0.01 * p.dram_bytes) {
            add(format!("{}: coalescing", r.kernel), r.coalescing, ">= 0.90", r.coalescing >= 0.90);
        }
        let one_graph = p.graph_launches == 1 && p.eager_launches == 0;
        add(
            "graph launches (and kernels outside it)".into(),
            p.graph_launches as f64,
            "1 (0 outside)",
            one_graph,
        );
        let r = p.estimates[0].ratio_to_bandwidth_roofline;
        add("H100 estimate / bandwidth roofline".into(), r, ">= 0.80", r >= 0.80);
    } else {
        for r in p.kernels.iter().filter(|r| r.kernel.starts_with("gemm") || r.kernel.starts_with("attn")) {
            add(format!("{}: bank conflicts", r.kernel), r.bank_conflicts, "0", r.bank_conflicts == 0.0);
        }
        for (what, got, min) in [
            ("gemm", p.gemm_mma, p.gemm_mma_minimum),
            ("attention", p.attention_mma, p.attention_mma_minimum),
        ] {
            if got > 0.0 {
                let ratio = got / min;
                add(format!("{what} mma / minimum for its FLOPs"), ratio, "<= 1.05", ratio <= 1.05);
            }
        }
        for r in p.kernels.iter().filter(|r| r.time_share > 0.01) {
            add(
                format!("{}: lane efficiency", r.kernel),
                r.lane_efficiency,
                ">= 0.90",
                r.lane_efficiency >= 0.90,
            );
        }
    }
    t
}

impl KernelProfile {
    /// The profiler-style table, the estimates and the targets.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let cfg = &self.run.config;
        s += &format!(
            "{} step, batch {}, ctx {}, {}: {} kernel launches ({} graph launches, {} eager), \
             {} other graph nodes (memsets, copies)\n",
            match cfg.step {
                StepKind::Decode => "decode",
                StepKind::Prefill => "prefill",
            },
            cfg.batch,
            cfg.ctx,
            self.run.model,
            self.kernel_launches,
            self.graph_launches,
            self.eager_launches,
            self.other_graph_nodes
        );
        s += &format!(
            "{:<28} {:>5} {:>7} {:>10} {:>10} {:>6} {:>7} {:>8} {:>6} {:>6} {:>5}\n",
            "kernel",
            "runs",
            "time%",
            "DRAM MB",
            "sector MB",
            "coal",
            "sec/req",
            "conflict",
            "lanes",
            "occup",
            "regs"
        );
        for r in &self.kernels {
            s += &format!(
                "{:<28} {:>5} {:>6.1}% {:>10.2} {:>10.2} {:>5.0}% {:>7.1} {:>8.0} {:>5.0}% {:>5.0}% {:>5}\n",
                r.kernel,
                r.launches,
                100.0 * r.time_share,
                r.dram_bytes / 1e6,
                r.bytes_in_sectors / 1e6,
                100.0 * r.coalescing,
                r.sectors_per_request,
                r.bank_conflicts,
                100.0 * r.lane_efficiency,
                100.0 * r.occupancy,
                r.registers
            );
        }
        s += &format!(
            "DRAM bytes {:.1} MB (model: each sector once per launch) against weights {:.1} MB + KV read {:.1} MB: {:.3}x\n",
            self.dram_bytes / 1e6,
            self.weight_bytes / 1e6,
            self.kv_bytes_read / 1e6,
            self.bytes_ratio
        );
        if self.gemm_mma > 0.0 {
            s += &format!("GEMM mma {:.0} vs {:.0} minimum\n", self.gemm_mma, self.gemm_mma_minimum);
        }
        if self.attention_mma > 0.0 {
            s += &format!(
                "attention mma {:.0} vs {:.0} minimum\n",
                self.attention_mma, self.attention_mma_minimum
            );
        }
        for e in &self.estimates {
            s += &format!(
                "ESTIMATE {}: {:.1} us per step, bandwidth roofline {:.1} us, ratio {:.2} ({}; {}; {})\n",
                e.device.name,
                e.estimate_s * 1e6,
                e.bandwidth_roofline_s * 1e6,
                e.ratio_to_bandwidth_roofline,
                e.device.memory_source,
                e.device.mma_source,
                e.device.overhead_source
            );
        }
        for t in &self.targets {
            s += &format!(
                "target {:<52} {:>10.3} {:<14} {}\n",
                t.what,
                t.value,
                t.limit,
                if t.holds { "holds" } else { "MISSED" }
            );
        }
        s
    }
}
