//! End to end on the GPU: whole models on the CUDA backend against the CPU reference
//! and against transformers. Without a GPU each test prints why it was skipped.

mod common;

use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::Backend;
use pimoe::llm::{Llm, Logits, SeqChunk};
use pimoe::model::fetch;
use pimoe::sampling::argmax;
use pimoe::scheduler::Provenance;
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

/// The CPU's greedy continuation of `prompt` with, at each generated position, the
/// gap between its two largest logits (where a last-bit difference may flip the
/// choice).
fn cpu_greedy_with_gaps(e: &Engine<CpuBackend>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let (mut out, mut gaps) = (Vec::new(), Vec::new());
    let mut cache = e.llm.new_cache(&e.backend, prompt.len() + n);
    let mut table = Vec::new();
    cache.reserve(&mut table, prompt.len() + n).unwrap();
    let step = [SeqChunk { tokens: prompt, start: 0, block_table: &table, logits: Logits::Last }];
    let mut last = e.llm.forward(&e.backend, &mut cache, &step).unwrap();
    let mut pos = prompt.len();
    while out.len() < n {
        let mut sorted = last.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        gaps.push(sorted[0] - sorted[1]);
        let t = argmax(&last) as u32;
        out.push(t);
        let tok = [t];
        let step = [SeqChunk { tokens: &tok, start: pos, block_table: &table, logits: Logits::Last }];
        last = e.llm.forward(&e.backend, &mut cache, &step).unwrap();
        pos += 1;
    }
    (out, gaps)
}

/// SmolLM2-135M greedy on the CUDA backend (decode steps replayed as graphs, the
/// token drawn on the device) equals the CPU's token for token, for 32 tokens on two
/// short prompts and the demo's shortest question. Where the CPU's top two logits
/// are within 1e-3 the choice may differ; from there the GPU is teacher-forced on the
/// CPU's tokens, and every other position must still agree.
#[test]
fn smollm2_greedy_matches_cpu() {
    const N: usize = 32;
    let Some(gb) = gpu("smollm2_greedy_matches_cpu") else { return };
    let dir = fetch::ensure_default_model(false).unwrap();
    let cpu = Engine::load(CpuBackend, &dir).unwrap();
    let gpu = Engine::load(gb, &dir).unwrap();
    let questions = pimoe::tasks::demo::questions().unwrap();
    let shortest = questions
        .iter()
        .map(|q| cpu.prompt_text(&pimoe::tasks::eval::request(q, N).prompt).unwrap())
        .min_by_key(|p| cpu.tokenizer.encode(p).unwrap().len())
        .unwrap();
    let vocab = cpu.llm.config.vocab_size;
    for text in ["The capital of France is", "def fibonacci(n):", shortest.as_str()] {
        let prompt = cpu.tokenizer.encode(text).unwrap();
        let (want, gaps) = cpu_greedy_with_gaps(&cpu, &prompt, N);
        let (got, _) = gpu.llm.greedy(&gpu.backend, &prompt, N).unwrap();
        let agree = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
        let label = &text[..text.len().min(40)];
        if agree < N {
            assert!(
                gaps[agree] < 1e-3,
                "{label:?}: greedy token {agree} is {} on CUDA and {} on the CPU, whose top two logits are {} apart",
                got[agree],
                want[agree],
                gaps[agree]
            );
            eprintln!(
                "{label:?}: token {agree} is a near tie on the CPU (gap {:.1e}); teacher-forcing from there",
                gaps[agree]
            );
        }
        // Teacher-forced on the CPU's tokens: every position off a near tie agrees.
        let seq: Vec<u32> = prompt.iter().chain(&want[..N - 1]).copied().collect();
        let logits = all_logits(&gpu.backend, &gpu.llm, &seq);
        for (i, (&w, &gap)) in want.iter().zip(&gaps).enumerate() {
            let row = &logits[(prompt.len() - 1 + i) * vocab..][..vocab];
            let g = argmax(row) as u32;
            assert!(
                g == w || gap < 1e-3,
                "{label:?}: teacher-forced position {i}: CUDA {g}, CPU {w} (gap {gap})"
            );
        }
        eprintln!("{label:?}: {agree}/{N} greedy tokens equal, then teacher-forced to {N}");
    }
}

/// A token's source with its numbers as bits, so that "equal" means bit for bit.
fn provenance_bits(p: &Provenance) -> Option<(String, Vec<u64>, Vec<u64>)> {
    match p {
        Provenance::Llm => None,
        Provenance::Expert { expert, inputs, outputs } => Some((
            expert.clone(),
            inputs.iter().map(|v| v.to_bits()).collect(),
            outputs.iter().map(|v| v.to_bits()).collect(),
        )),
        // A failure stands in the answer too, and must be the same one on both.
        Provenance::Failed { expert, reason } => Some((format!("failed {expert}: {reason}"), vec![], vec![])),
    }
}

fn first_expert(a: &pimoe::Answer) -> Option<(String, Vec<u64>, Vec<u64>)> {
    a.tokens.iter().find_map(|t| provenance_bits(&t.provenance))
}

/// `pimoe demo` on the CUDA backend (the emulator where there is no GPU): the same
/// answers as on the CPU, and every expert's inputs and outputs bit for bit. The GPU
/// keeps the KV cache in bf16 and the CPU in f32, so an answer may part from the
/// CPU's where the CPU's top two logits are within `NEAR_TIE`; from there the texts
/// differ, but every expert span before that point, and the first expert span of each
/// answer, must still be equal.
#[test]
fn demo_answers_match_cpu() {
    const NEAR_TIE: f32 = 1e-3;
    let Some(gb) = gpu("demo_answers_match_cpu") else { return };
    fetch::ensure_default_model(false).unwrap();
    let manifest = pimoe::tasks::demo::ensure_manifest().unwrap();
    let cpu = Engine::load_manifest(CpuBackend, &manifest).unwrap();
    let gpu = Engine::load_manifest(gb, &manifest).unwrap();
    let (questions, want) = pimoe::tasks::demo::answer(&cpu).unwrap();
    let (_, got) = pimoe::tasks::demo::answer(&gpu).unwrap();
    for (k, (q, (w, g))) in questions.iter().zip(want.iter().zip(&got)).enumerate() {
        let label = format!("Q{}", k + 1);
        let same = |a: &pimoe::AnswerToken, b: &pimoe::AnswerToken| {
            a.id == b.id && provenance_bits(&a.provenance) == provenance_bits(&b.provenance)
        };
        let agree = w.tokens.iter().zip(&g.tokens).take_while(|(a, b)| same(a, b)).count();
        let cpu_expert = first_expert(w);
        assert!(cpu_expert.is_some(), "{label}: no expert fired on the CPU: {:?}", w.text);
        assert_eq!(first_expert(g), cpu_expert, "{label}: the first expert span differs");
        if agree == w.tokens.len() && agree == g.tokens.len() {
            assert_eq!(g.notes, w.notes, "{label}: trace notes");
            eprintln!("{label}: {agree} tokens equal");
            continue;
        }
        let (a, b) = (&w.tokens[agree.min(w.tokens.len() - 1)], g.tokens.get(agree));
        assert!(
            agree < w.tokens.len() && b.is_some(),
            "{label}: one answer stops where the other goes on:\nCPU:  {:?}\nCUDA: {:?}",
            w.text,
            g.text
        );
        assert!(
            *a.provenance == Provenance::Llm && *b.unwrap().provenance == Provenance::Llm,
            "{label}: token {agree} differs in an expert span:\nCPU:  {:?}\nCUDA: {:?}",
            w.text,
            g.text
        );
        let mut seq = cpu.prompt_ids(&pimoe::tasks::eval::request(q, 1).prompt).unwrap();
        seq.extend(w.tokens[..agree].iter().map(|t| t.id));
        let mut logits = common::fresh_logits(&cpu.llm, &seq, Logits::Last);
        assert_eq!(argmax(&logits) as u32, a.id, "{label}: the CPU's own logits at token {agree}");
        logits.sort_by(|x, y| y.total_cmp(x));
        let gap = logits[0] - logits[1];
        assert!(
            gap < NEAR_TIE,
            "{label}: token {agree} is {:?} on CUDA and {:?} on the CPU, whose top two logits are {gap} apart:\nCPU:  {:?}\nCUDA: {:?}",
            b.unwrap().text,
            a.text,
            w.text,
            g.text
        );
        eprintln!("{label}: {agree} tokens equal, then a near tie on the CPU (gap {gap:.1e})");
    }
}
