//! Golden tests: tiny random-weight Llama and Qwen2 models made by transformers
//! (tests/fixtures/make_fixtures.py), with the logits and greedy tokens it computed.

mod common;

use std::path::Path;

use common::{assert_close, fixtures, fresh_logits, rel_err, F32_TOL};
use pimoe::backend::cpu::CpuBackend;
use pimoe::llm::{Llm, Logits, SeqChunk};
use serde_json::Value;

/// Our f32 CPU logits against transformers' f32 logits.
const GOLDEN_TOL: f64 = 1e-4;

struct Golden {
    input_ids: Vec<u32>,
    logits: Vec<f32>,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn golden(dir: &Path) -> Golden {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    Golden {
        input_ids: ids(&g["input_ids"]),
        logits: g["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
            .collect(),
        prompt: ids(&g["greedy_prompt_ids"]),
        greedy: ids(&g["greedy_new_ids"]),
    }
}

fn greedy(llm: &Llm<CpuBackend>, prompt: &[u32], n: usize) -> Vec<u32> {
    llm.greedy(&CpuBackend, prompt, n).unwrap().0
}

fn check_model(name: &str) {
    let dir = fixtures().join(name);
    let g = golden(&dir);
    let llm = Llm::load(&CpuBackend, &dir).unwrap();
    let vocab = llm.config.vocab_size;

    let logits = fresh_logits(&llm, &g.input_ids, Logits::All);
    assert_eq!(logits.len(), g.input_ids.len() * vocab);
    for (p, (ours, theirs)) in logits.chunks(vocab).zip(g.logits.chunks(vocab)).enumerate() {
        assert_close(&format!("{name} logits at position {p}"), ours, theirs, GOLDEN_TOL);
    }
    let err = rel_err(&logits, &g.logits);
    println!("{name}: all-position logits rel err {err:.2e}");

    assert_eq!(greedy(&llm, &g.prompt, g.greedy.len()), g.greedy, "{name}: greedy continuation");
}

#[test]
fn tiny_llama_matches_transformers() {
    check_model("tiny-llama");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check_model("tiny-qwen2");
}

/// Several sequences at different positions in one flat step (a prefill chunk, a
/// decode token, a second chunk of an earlier prompt) give the same logits as
/// running each on its own.
#[test]
fn mixed_batch_equals_separate_runs() {
    let dir = fixtures().join("tiny-qwen2");
    let g = golden(&dir);
    let llm = Llm::load(&CpuBackend, &dir).unwrap();
    let b = CpuBackend;
    let vocab = llm.config.vocab_size;
    let ids = &g.input_ids;
    let mut cache = llm.new_cache(&b, 4 * ids.len());

    // Sequence A: the whole input in one prefill; the reference.
    let mut ta = Vec::new();
    cache.reserve(&mut ta, ids.len()).unwrap();
    let reference = llm
        .forward(&b, &mut cache, &[SeqChunk { tokens: ids, start: 0, block_table: &ta, logits: Logits::All }])
        .unwrap();

    // B: first 9 tokens now; C: first 20 tokens now (crosses a block boundary).
    let (mut tb, mut tc) = (Vec::new(), Vec::new());
    cache.reserve(&mut tb, ids.len()).unwrap();
    cache.reserve(&mut tc, ids.len()).unwrap();
    llm.forward(
        &b,
        &mut cache,
        &[
            SeqChunk { tokens: &ids[..9], start: 0, block_table: &tb, logits: Logits::None },
            SeqChunk { tokens: &ids[..20], start: 0, block_table: &tc, logits: Logits::None },
        ],
    )
    .unwrap();
    // One step: B continues with a chunk, C decodes one token.
    let out = llm
        .forward(
            &b,
            &mut cache,
            &[
                SeqChunk { tokens: &ids[9..], start: 9, block_table: &tb, logits: Logits::All },
                SeqChunk { tokens: &ids[20..21], start: 20, block_table: &tc, logits: Logits::Last },
            ],
        )
        .unwrap();
    let nb = ids.len() - 9;
    assert_eq!(out.len(), (nb + 1) * vocab);
    assert_close("chunked prefill", &out[..nb * vocab], &reference[9 * vocab..], 1e-5);
    assert_close("decode in a mixed step", &out[nb * vocab..], &reference[20 * vocab..21 * vocab], 1e-5);
}

#[test]
fn forward_rejects_bad_steps() {
    let dir = fixtures().join("tiny-llama");
    let llm = Llm::load(&CpuBackend, &dir).unwrap();
    let b = CpuBackend;
    let mut cache = llm.new_cache(&b, 256);
    let mut table = Vec::new();
    cache.reserve(&mut table, 16).unwrap();
    let bad_token = [llm.config.vocab_size as u32];
    let e = llm
        .forward(
            &b,
            &mut cache,
            &[SeqChunk { tokens: &bad_token, start: 0, block_table: &table, logits: Logits::Last }],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    let e = llm
        .forward(
            &b,
            &mut cache,
            &[SeqChunk { tokens: &[1, 2], start: 15, block_table: &table, logits: Logits::Last }],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("block table covers 16 positions"), "{e}");
    let mut big = Vec::new();
    cache.reserve(&mut big, 200).unwrap();
    let e = llm
        .forward(
            &b,
            &mut cache,
            &[SeqChunk { tokens: &[1], start: 128, block_table: &big, logits: Logits::Last }],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("beyond the model's context of 128"), "{e}");
    // a cache that cannot hold the request says so
    let mut huge = Vec::new();
    let e = cache.reserve(&mut huge, 100_000).unwrap_err().to_string();
    assert!(e.contains("KV cache full"), "{e}");
}

/// A checkpoint split into shards with model.safetensors.index.json loads to the
/// same model as the single file.
#[test]
fn sharded_checkpoint_equals_single_file() {
    use safetensors::SafeTensors;
    let dir = common::copy_fixture("tiny-llama", "sharded");
    let single = dir.join("model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<_> = part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::remove_file(&single).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let g = golden(&fixtures().join("tiny-llama"));
    let llm = Llm::load(&CpuBackend, &dir).unwrap();
    assert_eq!(greedy(&llm, &g.prompt, g.greedy.len()), g.greedy);
}

/// Generation that runs into the context window stops there and says so.
#[test]
fn generation_stops_at_the_context_window() {
    use pimoe::sampling::SamplingParams;
    use pimoe::{Engine, Finish, Prompt, Request};
    let engine = Engine::load(CpuBackend, &fixtures().join("tiny-llama")).unwrap();
    let prompt = Prompt::Raw("the dog runs. ".repeat(12));
    let n = engine.prompt_ids(&prompt).unwrap().len();
    assert!(n < 128, "prompt of {n} tokens must fit the 128-token context");
    let req = Request { prompt, max_tokens: 1000, sampling: SamplingParams::default() };
    let g = engine.generate(&req, |_| {}).unwrap();
    assert_eq!(g.finish, Finish::Context, "{:?}", g.tokens);
    assert_eq!(n + g.tokens.len(), 128);
}

/// The same model stored in f16 and in bf16 computes what the f32 model with the
/// same (rounded) weights computes: the only difference left is accumulation order.
#[test]
fn f16_and_bf16_checkpoints_load() {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let g = golden(&fixtures().join("tiny-llama"));
    let logits_of =
        |dir: &Path| fresh_logits(&Llm::load(&CpuBackend, dir).unwrap(), &g.input_ids, Logits::All);
    // Rewrites the fixture's f32 tensors as `dtype` (after `round`), or as f32 holding
    // the rounded values when `as_f32`.
    let write = |dtype: Dtype, as_f32: bool| {
        let dir = common::copy_fixture("tiny-llama", &format!("{dtype:?}-{as_f32}"));
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let converted: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(name, v)| {
                let f: Vec<f32> = bytemuck::pod_collect_to_vec(v.data());
                let (bits, back): (Vec<u16>, Vec<f32>) = f
                    .iter()
                    .map(|&x| match dtype {
                        Dtype::F16 => (half::f16::from_f32(x).to_bits(), half::f16::from_f32(x).to_f32()),
                        _ => (half::bf16::from_f32(x).to_bits(), half::bf16::from_f32(x).to_f32()),
                    })
                    .unzip();
                let data = if as_f32 {
                    bytemuck::cast_slice(&back).to_vec()
                } else {
                    bytemuck::cast_slice(&bits).to_vec()
                };
                (name, v.shape().to_vec(), data)
            })
            .collect();
        let file_dtype = if as_f32 { Dtype::F32 } else { dtype };
        let views: Vec<_> = converted
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(file_dtype, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &path).unwrap();
        dir
    };
    for dtype in [Dtype::F16, Dtype::BF16] {
        let ours = logits_of(&write(dtype, false));
        let rounded_f32 = logits_of(&write(dtype, true));
        assert_close(
            &format!("{dtype:?} checkpoint vs f32 of the same values"),
            &ours,
            &rounded_f32,
            F32_TOL,
        );
        // and the rounding itself moves the logits by what the format allows
        println!("{dtype:?}: rel err vs the unrounded model {:.2e}", rel_err(&ours, &g.logits));
        assert!(rel_err(&ours, &g.logits) < 3e-2);
    }
}
