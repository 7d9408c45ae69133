//! End to end, CPU always and GPU when present: one greedy answer to a demo grid
//! question through the whole PiMoE loop (prefill, decode, hidden-state router,
//! T2C, the f64 expert, the injected result) with the demo composition, and the
//! same question answered by the LLM alone. Throughput is in answer tokens.
//! Needs the default model (`pimoe fetch`); without it, says so and measures nothing.

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::Backend;
use pimoe::engine::Engine;
use pimoe::scheduler::SchedulerConfig;
use pimoe::tasks::eval::request;

const MAX_TOKENS: usize = 48;

fn bench<B: Backend>(c: &mut Criterion, engine: &mut Engine<B>) {
    let mut g = c.benchmark_group(format!("{}_end_to_end", engine.backend.name()));
    g.sample_size(10);
    let questions = pimoe::tasks::demo::questions().expect("the demo's questions");
    let q = &questions[0];
    let req = request(q, MAX_TOKENS);
    let cfg = SchedulerConfig::default();
    for composed in [true, false] {
        let held = if composed { None } else { engine.pimoe.take() };
        let answer = engine.generate_batch(std::slice::from_ref(&req), cfg, |_| ()).expect("an answer");
        let tokens = answer[0].stats.generated_tokens + answer[0].stats.injected_tokens;
        g.throughput(Throughput::Elements(tokens as u64));
        let name = if composed { "pimoe_answer" } else { "llm_only_answer" };
        let e = &*engine;
        g.bench_function(BenchmarkId::new(name, format!("{}_{}", q.case.case.name, q.expert())), |bch| {
            // Each answer ends with its tokens read back to the host: synchronised.
            bch.iter(|| e.generate_batch(std::slice::from_ref(&req), cfg, |_| ()).expect("an answer"))
        });
        if held.is_some() {
            engine.pimoe = held;
        }
    }
    g.finish();
}

fn main() {
    if !pimoe::model::fetch::default_model_dir().join("config.json").is_file() {
        eprintln!("end_to_end: skipped, the default model is not in weights/ (run `pimoe fetch`)");
        return;
    }
    let manifest = pimoe::tasks::demo::ensure_manifest().expect("the demo manifest");
    let mut c = Criterion::default().configure_from_args();
    let mut cpu = Engine::load_manifest(CpuBackend, &manifest).expect("the demo composition on the CPU");
    bench(&mut c, &mut cpu);
    match CudaBackend::new(0) {
        Ok(b) => {
            let mut gpu = Engine::load_manifest(b, &manifest).expect("the demo composition on the GPU");
            bench(&mut c, &mut gpu);
        }
        Err(e) => eprintln!("end_to_end: GPU group skipped, {e}"),
    }
    c.final_summary();
}
