//! The PiERN reference system on pimoe: the reference's modules built in PyTorch with
//! random weights, saved the way the reference saves them, converted by
//! weights/convert_piern.py, loaded here through `Engine::load_manifest`, and checked
//! against PyTorch's own numbers (tests/fixtures/make_piern_reference.py): router
//! probabilities, the learned T2C on its own backbone, the DeepONet and the result
//! text, the exact T2C on the battery prompts, and whole greedy generations in which
//! the router fires and the result is injected, token for token.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::Backend;
use pimoe::pimoe::compose::{Composition, Computed};
use pimoe::pimoe::format::ResultFormat;
use pimoe::pimoe::manifest::Manifest;
use pimoe::pimoe::router::{Decision, Gate, RouterInputs};
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance};
use pimoe::{Engine, Prompt, Request};
use serde_json::Value;

use common::{fixtures, F32_TOL};

fn dir() -> PathBuf {
    fixtures().join("piern")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn engine(manifest: &str) -> Engine<CpuBackend> {
    let path = dir().join("converted").join(manifest);
    Engine::load_manifest(CpuBackend, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pimoe(e: &Engine<CpuBackend>) -> &Composition {
    e.pimoe.as_ref().expect("a manifest gives a composition")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn rel_err(out: &[f64], want: &[f64]) -> f64 {
    assert_eq!(out.len(), want.len(), "length mismatch");
    let num: f64 = out.iter().zip(want).map(|(o, w)| (o - w) * (o - w)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn assert_rel(what: &str, out: &[f64], want: &[f64], tol: f64) {
    let err = rel_err(out, want);
    assert!(err < tol, "{what}: rel err {err:.3e} >= {tol:.0e}\n got {out:?}\nwant {want:?}");
}

/// The reference's 13 T2C outputs in the order its DeepONet takes them.
fn expert_order(x: &[f64]) -> Vec<f64> {
    let mut v = x[..11].to_vec();
    v.extend([x[12], x[11]]);
    v
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ----------------------------------------------------------------------------
// the modules one by one
// ----------------------------------------------------------------------------

#[test]
fn router_probabilities_match_pytorch() {
    let e = engine("piern.json");
    let router = &pimoe(&e).router;
    let Gate::Piern(gate) = router.gate() else { panic!("the converted router is not a piern gate") };
    // The table has len(tokenizer) rows, fewer than the LLM's padded vocabulary.
    assert_eq!((gate.embed().vocab(), e.llm.config.vocab_size), (360, 384));
    for case in reference()["router"].as_array().unwrap() {
        let tokens = u32s(&case["tokens"]);
        let want = case["prob"].as_f64().unwrap();
        let got = gate.probs_from_tokens(&tokens).unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-6, "{} tokens: {got} vs PyTorch {want}", tokens.len());

        // Token by token through the running state: the decision after the last one.
        let mut state = router.new_state();
        let mut last = Decision::Continue;
        for &t in &tokens {
            let inputs = RouterInputs { tokens: &[t], ..Default::default() };
            last = router.step(&mut [&mut state], inputs).unwrap()[0];
        }
        assert_eq!(matches!(last, Decision::Fire { .. }), want > 0.5, "{} tokens: p = {want}", tokens.len());
    }
    // A padded-vocabulary token has no row: an error naming the table, never a guess.
    let mut state = router.new_state();
    let msg = router
        .step(&mut [&mut state], RouterInputs { tokens: &[370], ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("embedding.weight") && msg.contains("370"), "{msg}");
}

#[test]
fn learned_t2c_on_its_own_backbone_matches_pytorch() {
    let e = engine("piern.json");
    let backbone = e.backbones[0].as_ref().expect("the T2C has its own backbone");
    for case in reference()["t2c"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = e.tokenizer.encode(text).unwrap();
        assert_eq!(ids, u32s(&case["ids"]), "the tokenizer differs from PyTorch's");
        let pooled = backbone.pooled_hidden(&e.backend, &ids, 64).unwrap();
        let got = pimoe(&e).inputs(0, &[text.to_string()], Some(&pooled));
        let got = got[0].as_ref().unwrap();
        let want = expert_order(&f64s(&case["outputs"]));
        assert_rel("T2C outputs (expert order)", got, &want, F32_TOL);

        // The reasoning LLM's own hidden states give other numbers: the backbone is used.
        let own = e.llm.pooled_hidden(&e.backend, &ids, 64).unwrap();
        let other = pimoe(&e).inputs(0, &[text.to_string()], Some(&own));
        assert!(rel_err(other[0].as_ref().unwrap(), &want) > 1e-2, "the LLM's states gave the same numbers");
    }
}

#[test]
fn deeponet_and_result_text_match_pytorch() {
    let e = engine("piern.json");
    let slot = &pimoe(&e).experts[0];
    let rows = reference()["deeponet"].as_array().unwrap().clone();
    let flat: Vec<f64> = rows.iter().flat_map(|r| f64s(&r["inputs"])).collect();
    let out = slot.expert.run(&flat, rows.len());
    let mut conclusions = std::collections::BTreeSet::new();
    for (row, got) in rows.iter().zip(&out) {
        let got = got.as_ref().unwrap();
        let want = row["output"].as_f64().unwrap();
        assert_rel("DeepONet (f64)", got, &[want], 1e-12);
        let text = slot.format.render(got);
        assert_eq!(text, row["text"].as_str().unwrap());
        conclusions.insert(text.split('：').nth(1).unwrap().to_string());
    }
    assert_eq!(conclusions.len(), 3, "the rows reach all three conclusions: {conclusions:?}");
    // The backend's expert (the CPU reference here) gives the same bits for the batch.
    let backend = e.backend.run_expert(&e.experts[0], &slot.expert, &flat, rows.len()).unwrap();
    for (a, b) in backend.iter().zip(&out) {
        assert_eq!(bits(a.as_ref().unwrap()), bits(b.as_ref().unwrap()));
    }
}

#[test]
fn extract_t2c_reads_the_exact_inputs() {
    let e = engine("piern-extract.json");
    for case in reference()["extract"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap().to_string();
        match &pimoe(&e).compute(0, &[prompt], None)[0] {
            Computed::Ok { text, inputs, outputs } => {
                assert_eq!(bits(inputs), bits(&f64s(&case["inputs"])), "inputs are the numbers as written");
                assert_rel("DeepONet on exact inputs", outputs, &[case["output"].as_f64().unwrap()], 1e-12);
                assert_eq!(text, case["text"].as_str().unwrap());
            }
            Computed::Failed(msg) => panic!("{msg}"),
        }
    }
}

// ----------------------------------------------------------------------------
// whole generations
// ----------------------------------------------------------------------------

/// Greedy generation with the converted manifest against the reference's loop in
/// PyTorch: the same tokens, the router firing at the same place, the same injected
/// text, and the expert's inputs and output recorded in the provenance.
fn check_generation(manifest: &str, key: &str, input_tol: f64) {
    let r = reference();
    let g = &r["generate"];
    let want = &g[key];
    let e = engine(manifest);
    let prompt = Prompt::Chat {
        system: Some(r["system"].as_str().unwrap().to_string()),
        user: g["user"].as_str().unwrap().to_string(),
    };
    assert_eq!(e.prompt_text(&prompt).unwrap(), g["prompt_text"].as_str().unwrap());
    assert_eq!(e.prompt_ids(&prompt).unwrap(), u32s(&g["prompt_ids"]));
    let req = Request {
        prompt,
        max_tokens: g["max_tokens"].as_u64().unwrap() as usize,
        sampling: SamplingParams::default(),
    };
    let mut provenance = Vec::new();
    let out = e
        .generate_events(&req, |ev| {
            if let Event::Token { provenance: p, .. } = ev {
                provenance.push(p.clone());
            }
        })
        .unwrap();
    assert_eq!(out.tokens, u32s(&want["new_ids"]), "{key}: tokens differ from the reference loop");

    let firings = want["firings"].as_array().unwrap();
    assert!(!firings.is_empty());
    let mut expected_llm = vec![true; out.tokens.len()];
    for f in firings {
        let at = f["at"].as_u64().unwrap() as usize;
        let text = f["text"].as_str().unwrap();
        let n = e.tokenizer.encode(text).unwrap().len().min(out.tokens.len() - at);
        expected_llm[at..at + n].iter_mut().for_each(|x| *x = false);
        assert_eq!(e.tokenizer.decode(&out.tokens[at..at + n]).unwrap(), text, "{key}: injected text");
        let Provenance::Expert { expert, inputs, outputs } = &*provenance[at] else {
            panic!("{key}: token {at} should come from the expert")
        };
        assert_eq!(expert, "soh");
        assert_rel("T2C inputs at the firing", inputs, &f64s(&f["inputs"]), input_tol);
        assert_rel("expert output at the firing", outputs, &[f["output"].as_f64().unwrap()], input_tol);
        // One provenance for the whole injected span.
        assert!(provenance[at..at + n].iter().all(|p| Arc::ptr_eq(p, &provenance[at])));
    }
    let got_llm: Vec<bool> = provenance.iter().map(|p| matches!(**p, Provenance::Llm)).collect();
    assert_eq!(got_llm, expected_llm, "{key}: which tokens came from the LLM");
}

#[test]
fn reference_system_generates_as_pytorch() {
    check_generation("piern.json", "learned", F32_TOL);
}

#[test]
fn reference_system_with_exact_t2c_generates_as_pytorch() {
    check_generation("piern-extract.json", "extract", 1e-12);
}

// ----------------------------------------------------------------------------
// the reference's result format
// ----------------------------------------------------------------------------

#[test]
fn conclusions_follow_the_reference_at_its_thresholds() {
    let path = dir().join("converted/piern.json");
    let (m, _) = Manifest::load(&path).unwrap();
    let f = ResultFormat::new(&m.experts[0].format, 1).unwrap();
    let up = |x: f64| f64::from_bits(x.to_bits() + 1);
    let down = |x: f64| f64::from_bits(x.to_bits() - 1);
    // `> 0.8` good, `< 0.6` severe, otherwise fair: both thresholds themselves are fair,
    // and so is NaN, for which both of the reference's comparisons are false.
    for (v, want) in [
        (up(0.8), "电池健康度良好。"),
        (0.8, "电池状态一般。"),
        (0.6, "电池状态一般。"),
        (down(0.6), "电池严重衰减。"),
        (f64::NAN, "电池状态一般。"),
    ] {
        let text = f.render(&[v]);
        assert!(text.ends_with(&format!("。结论：{want}")), "{v}: {text}");
    }
    assert_eq!(f.render(&[0.71234449]), "0.712344。结论：电池状态一般。");

    // Two bounds on one conclusion is an error naming the field.
    let text =
        std::fs::read_to_string(&path).unwrap().replace(r#""above": 0.8,"#, r#""above": 0.8, "below": 2,"#);
    let msg = Manifest::parse(&text, Path::new("m.json")).unwrap_err().to_string();
    assert!(msg.contains("conclusions") && msg.contains("`above`"), "{msg}");
}

/// The reference's reasoning LLM and T2C backbone, Qwen2.5-0.5B-Instruct: its
/// config.json in the transformers 4.x layout it is published in (top-level
/// `rope_theta`, `rope_scaling: null`, a sliding window declared but off).
#[test]
fn the_reference_base_model_config_loads() {
    let text = r#"{
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
        "vocab_size": 151936
    }"#;
    let c = pimoe::model::ModelConfig::parse(text, Path::new("config.json")).unwrap();
    assert_eq!((c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim), (896, 14, 2, 64));
    assert_eq!((c.vocab_size, c.rope_theta, c.tie_word_embeddings), (151_936, 1e6, true));
    assert_eq!(c.eos_token_ids, vec![151_645]);
}

// ----------------------------------------------------------------------------
// the reference's full shapes (not committed: PIMOE_PIERN_FULL)
// ----------------------------------------------------------------------------

/// `make_piern_reference.py --full-shapes DIR` writes the reference's own sizes with
/// random weights (router 151,665 x 1536, a Qwen2.5-0.5B-shaped backbone, the full
/// DeepONet), converted; `PIMOE_PIERN_FULL=DIR` runs this check on them.
#[test]
fn full_reference_shapes_convert_and_load() {
    let Some(dir) = std::env::var_os("PIMOE_PIERN_FULL").map(PathBuf::from) else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: PIMOE_PIERN_FULL is not set (make_piern_reference.py --full-shapes DIR writes it)"
        );
        return;
    };
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let e = Engine::load_manifest(CpuBackend, &dir.join("converted/piern.json")).unwrap();
    let c = pimoe(&e);
    let Gate::Piern(gate) = c.router.gate() else { panic!("not a piern gate") };
    assert_eq!((gate.embed().vocab(), gate.embed().dim(), e.llm.config.vocab_size), (151_665, 1536, 151_936));
    for case in r["router"].as_array().unwrap() {
        let got = gate.probs_from_tokens(&u32s(&case["tokens"])).unwrap()[0] as f64;
        assert!((got - case["prob"].as_f64().unwrap()).abs() < 1e-6, "router {got} vs {}", case["prob"]);
    }
    let ids = u32s(&r["t2c"]["ids"]);
    let pooled = e.backbones[0].as_ref().unwrap().pooled_hidden(&e.backend, &ids, 64).unwrap();
    let got = c.inputs(0, &[String::new()], Some(&pooled));
    assert_rel(
        "T2C (0.5B backbone)",
        got[0].as_ref().unwrap(),
        &expert_order(&f64s(&r["t2c"]["outputs"])),
        F32_TOL,
    );
    let inputs = f64s(&r["deeponet"]["inputs"]);
    let out: Vec<f64> =
        c.experts[0].expert.run(&inputs, inputs.len() / 13).into_iter().map(|y| y.unwrap()[0]).collect();
    assert_rel("DeepONet (reference widths, f64)", &out, &f64s(&r["deeponet"]["outputs"]), 1e-12);
}
