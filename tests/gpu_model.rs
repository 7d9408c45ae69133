//! End to end on the GPU: whole models on the CUDA backend against the CPU reference
//! and against transformers. Without a GPU each test prints why it was skipped.

mod common;

use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::Backend;
use pimoe::llm::{Llm, Logits, SeqChunk};
use pimoe::model::fetch;
use pimoe::sampling::argmax;
use pimoe::Engine;

use common::{assert_close, rel_err};

fn gpu(test: &str) -> Option<CudaBackend> {
    Some(common::cuda(test))
}

/// All-position logits of `tokens` run as one prefill step on a fresh cache.
fn all_logits<B: Backend>(b: &B, llm: &Llm<B>, tokens: &[u32]) -> Vec<f32> {
    let mut cache = llm.new_cache(b, tokens.len());
    let mut table = Vec::new();
    cache.reserve(&mut table, tokens.len()).unwrap();
    let step = [SeqChunk { tokens, start: 0, block_table: &table, logits: Logits::All }];
    llm.forward(b, &mut cache, &step).unwrap()
}

const TEXT: &str = "The history of the steam engine begins long before the industrial revolution. \
Hero of Alexandria described a spinning sphere driven by steam in the first century, but it \
remained a curiosity. In 1698 Thomas Savery patented a pump that used steam to draw water from \
mines, and in 1712 Thomas Newcomen built an atmospheric engine that worked for decades in the \
coal fields of England. James Watt, repairing a model of Newcomen's engine in Glasgow, saw that \
most of the fuel was spent reheating the cylinder after each stroke. His separate condenser, \
patented in 1769, kept the cylinder hot and the condenser cold, and cut the coal needed by three \
quarters. With Matthew Boulton he turned the engine into a source of rotary power for mills, \
breweries and ironworks, and the steam engine became the heart of the factory system. Later \
engineers raised the pressure, added compounding and superheating, and put engines on rails and \
ships, shrinking the distances between cities and continents in a single lifetime.";

#[test]
fn smollm2_teacher_forced_matches_cpu() {
    let Some(gb) = gpu("smollm2_teacher_forced_matches_cpu") else { return };
    let dir = fetch::ensure_default_model(false).unwrap();
    let cpu = Engine::load(CpuBackend, &dir).unwrap();
    let gpu = Engine::load(gb, &dir).unwrap();
    let mut tokens = cpu.tokenizer.encode(TEXT).unwrap();
    assert!(tokens.len() >= 200, "the text has only {} tokens", tokens.len());
    tokens.truncate(200);
    let vocab = cpu.llm.config.vocab_size;
    let want = all_logits(&cpu.backend, &cpu.llm, &tokens);
    let got = all_logits(&gpu.backend, &gpu.llm, &tokens);
    assert_close("first-step logits", &got[..vocab], &want[..vocab], 1e-2);
    let same = (0..tokens.len())
        .filter(|&i| argmax(&got[i * vocab..][..vocab]) == argmax(&want[i * vocab..][..vocab]))
        .count();
    let frac = same as f64 / tokens.len() as f64;
    eprintln!(
        "argmax agreement {same}/{} = {frac:.3}; all-position rel err {:.2e}",
        tokens.len(),
        rel_err(&got, &want)
    );
    assert!(frac >= 0.97, "GPU argmax equals the CPU's at only {frac:.3} of positions");
}

/// Decode through forward_sample: the first step runs eagerly, the second is
/// captured as a CUDA graph, the rest replay it. The tokens must not depend on that.
#[test]
fn decode_graphs_change_nothing() {
    let Some(gb) = gpu("decode_graphs_change_nothing") else { return };
    let dir = fetch::ensure_default_model(false).unwrap();
    let gpu = Engine::load(gb, &dir).unwrap();
    let cpu = Engine::load(CpuBackend, &dir).unwrap();
    let prompt = gpu.tokenizer.encode("The capital of France is").unwrap();
    let (with_graphs, _) = gpu.llm.greedy(&gpu.backend, &prompt, 48).unwrap();
    gpu.backend.set_graphs(false);
    let (eager, _) = gpu.llm.greedy(&gpu.backend, &prompt, 48).unwrap();
    assert_eq!(with_graphs, eager, "graph replay changed the greedy tokens");
    let (on_cpu, _) = cpu.llm.greedy(&cpu.backend, &prompt, 16).unwrap();
    assert_eq!(&eager[..16], &on_cpu[..], "the GPU's first 16 greedy tokens differ from the CPU's");
}

/// A random-weight model with the Qwen2.5-0.5B config, built and run in f32 by
/// transformers on the same machine (bench/gpu/qwen_reference.py writes the
/// directory named by PIMOE_QWEN_REF: the model in bf16 and reference.safetensors
/// with the token ids and all-position logits).
#[test]
fn qwen25_random_matches_transformers() {
    let Ok(dir) = std::env::var("PIMOE_QWEN_REF") else {
        common::skip(
            "qwen25_random_matches_transformers: PIMOE_QWEN_REF is not set (see bench/gpu/qwen_reference.py)",
        );
        return;
    };
    let Some(b) = gpu("qwen25_random_matches_transformers") else { return };
    let dir = std::path::PathBuf::from(dir);
    let llm = Llm::load(&b, &dir).unwrap();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let tokens: Vec<u32> =
        bytemuck::pod_collect_to_vec::<u8, i64>(ids.data()).iter().map(|&t| t as u32).collect();
    let want: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("logits").unwrap().data());
    let got = all_logits(&b, &llm, &tokens);
    let vocab = llm.config.vocab_size;
    for (i, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
        assert_close(&format!("position {i}"), g, w, 2e-2);
    }
    eprintln!("{} positions within 2e-2; overall rel err {:.2e}", tokens.len(), rel_err(&got, &want));
}
