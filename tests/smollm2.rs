//! The real default model, SmolLM2-135M-Instruct (fetched and imported on first use),
//! against references computed by transformers from the same GGUF
//! (tests/fixtures/smollm2_reference.json, made by tests/fixtures/make_fixtures.py).

mod common;

use std::sync::OnceLock;

use common::{fixtures, rel_err};
use pimoe::backend::cpu::CpuBackend;
use pimoe::llm::Logits;
use pimoe::model::fetch::ensure_default_model;
use pimoe::model::tokenizer::{chatml, Message};
use pimoe::sampling::SamplingParams;
use pimoe::{Engine, Prompt, Request};
use serde_json::Value;

fn engine() -> &'static Engine<CpuBackend> {
    static E: OnceLock<Engine<CpuBackend>> = OnceLock::new();
    E.get_or_init(|| {
        let dir = ensure_default_model(false).expect("fetch and import the default model");
        Engine::load(CpuBackend, &dir).expect("load the default model")
    })
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap())
        .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tokenizer_matches_an_independent_implementation() {
    let r = reference();
    let tok = &engine().tokenizer;
    let cases = r["tokenizer_cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "case {}: {text:?}", case["name"]);
    }
    for (name, id) in r["special_token_ids"].as_object().unwrap() {
        assert_eq!(tok.token_to_id(name), Some(id.as_u64().unwrap() as u32), "{name}");
    }
}

#[test]
fn chat_format_matches_the_reference_prompt() {
    let r = reference();
    let text = chatml(&[Message { role: "user", content: "What is the capital of France?" }]);
    assert_eq!(text, r["chat_prompt"]["prompt_text"].as_str().unwrap());
    let e = engine();
    let prompt = Prompt::Chat { system: None, user: "What is the capital of France?".into() };
    assert_eq!(e.prompt_ids(&prompt).unwrap(), ids(&r["chat_prompt"]["prompt_ids"]));
}

/// Our bf16 weights against transformers' f32 dequantization of the same Q4_1 file:
/// the same top token, and the top-20 logits within the bf16 budget.
#[test]
fn first_step_logits_match_transformers() {
    let e = engine();
    for case in ["plain_prompt", "chat_prompt"] {
        let r = &reference()[case];
        let prompt = ids(&r["prompt_ids"]);
        let logits = common::fresh_logits(&e.llm, &prompt, Logits::Last);
        let top: Vec<(usize, f32)> = r["last_position_top20"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(pimoe::sampling::argmax(&logits) as usize, top[0].0, "{case}: top token");
        let ours: Vec<f32> = top.iter().map(|&(i, _)| logits[i]).collect();
        let theirs: Vec<f32> = top.iter().map(|&(_, l)| l).collect();
        let err = rel_err(&ours, &theirs);
        println!("{case}: top-20 logits rel err {err:.2e}");
        assert!(err < common::BF16_TOL, "{case}: top-20 logits rel err {err:.3e}");
    }
}

#[test]
fn greedy_generation_names_paris() {
    let e = engine();
    let r = reference();
    let req = Request {
        prompt: Prompt::Raw("The capital of France is".into()),
        max_tokens: 12,
        sampling: SamplingParams::default(),
    };
    let mut streamed = String::new();
    let g = e.generate(&req, |p| streamed.push_str(p)).unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    assert_eq!(streamed, g.text, "the streamed pieces add up to the text");
    // transformers' greedy tokens from the f32 dequantization; bf16 rounding may only
    // change a token late, if ever, so the first six must agree.
    let want = ids(&r["plain_prompt"]["greedy_new_ids"]);
    assert_eq!(g.tokens[..6], want[..6], "ours {:?} vs transformers {:?}", g.tokens, want);
}

#[test]
fn chat_answer_names_paris_and_stops() {
    let req = Request {
        prompt: Prompt::Chat { system: None, user: "What is the capital of France?".into() },
        max_tokens: 48,
        sampling: SamplingParams::default(),
    };
    let g = engine().generate(&req, |_| {}).unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    assert_eq!(g.finish, pimoe::Finish::Stop, "stops at <|im_end|>: {:?}", g.text);
}

/// Byte-level tokens split UTF-8 characters; the stream never shows half of one and
/// its pieces add up to the full text.
#[test]
fn streaming_decode_keeps_characters_whole() {
    use pimoe::model::tokenizer::StreamDecoder;
    let tok = &engine().tokenizer;
    for case in reference()["tokenizer_cases"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let mut stream = StreamDecoder::default();
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(tok, id).unwrap() {
                assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
                out.push_str(&piece);
            }
        }
        assert_eq!(out, tok.decode(&ids).unwrap(), "case {}", case["name"]);
    }
}

#[test]
fn a_long_prefill_shows_its_progress_on_stderr() {
    let dir = ensure_default_model(false).unwrap();
    // About 2,500 tokens: ~10 s of prefill on a 2-core CPU, well past the 2 s after which
    // the CLI shows progress (a line per tenth when stderr is not a terminal).
    let prompt = "The grid has many buses, branches and generators. ".repeat(250);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["generate", "--device", "cpu", "--max-tokens", "2", "--prompt", &prompt, "--model"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(" prompt tokens prefilled")).collect();
    assert!(lines.len() >= 2, "no prefill progress: {err}");
    let total = lines[0].split(['/', ' ']).nth(1).unwrap();
    assert!(lines.last().unwrap().starts_with(&format!("{total}/{total} ")), "{lines:?}");
}
