//! Bad input gets an error that names what is wrong; nothing panics.

mod common;

use common::{copy_fixture, rewrite};
use pimoe::backend::cpu::CpuBackend;
use pimoe::llm::Llm;
use pimoe::model::ModelConfig;
use pimoe::sampling::SamplingParams;
use pimoe::{Engine, Prompt, Request};
use safetensors::{Dtype, SafeTensors};

fn load_err(dir: &std::path::Path) -> String {
    match Llm::load(&CpuBackend, dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_safetensors_is_named() {
    let dir = copy_fixture("tiny-llama", "truncated");
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = copy_fixture("tiny-llama", "wrong-shape");
    rewrite(&dir, |name, t| {
        if name == "model.layers.1.self_attn.k_proj.weight" {
            t.1 = vec![t.1[1], t.1[0]];
        }
    });
    let e = load_err(&dir);
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight") && e.contains("shape"), "{e}");
}

#[test]
fn wrong_dtype_names_the_tensor() {
    let dir = copy_fixture("tiny-llama", "wrong-dtype");
    rewrite(&dir, |name, t| {
        if name == "model.norm.weight" {
            t.0 = Dtype::I32;
        }
    });
    let e = load_err(&dir);
    assert!(e.contains("model.norm.weight") && e.contains("I32"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture("tiny-qwen2", "missing-tensor");
    rewrite(&dir, |_, _| {});
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<_> =
        st.tensors().into_iter().filter(|(n, _)| n != "model.layers.2.self_attn.v_proj.bias").collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.layers.2.self_attn.v_proj.bias") && e.contains("missing"), "{e}");
}

fn config_err(edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let text = std::fs::read_to_string(common::fixtures().join("tiny-llama/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    match ModelConfig::parse(&v.to_string(), std::path::Path::new("x/config.json")) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_name_the_field() {
    let e = config_err(|c| {
        c.remove("hidden_size");
    });
    assert!(e.contains("x/config.json") && e.contains("missing field `hidden_size`"), "{e}");
    let e = config_err(|c| {
        c.insert("num_attention_heads".into(), "four".into());
    });
    assert!(e.contains("`num_attention_heads` must be a non-negative integer"), "{e}");
    let e = config_err(|c| {
        c.insert("architectures".into(), serde_json::json!(["MistralForCausalLM"]));
    });
    assert!(e.contains("architecture `MistralForCausalLM` is not supported"), "{e}");
    let e = config_err(|c| {
        c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
    });
    assert!(e.contains("rope type `yarn` is not supported"), "{e}");
    let e = config_err(|c| {
        c.insert("rope_parameters".into(), serde_json::json!({"rope_type": "llama3", "rope_theta": 5e5}));
    });
    assert!(e.contains("rope type `llama3` is not supported"), "{e}");
    let e = config_err(|c| {
        c.insert("num_key_value_heads".into(), 3.into());
    });
    assert!(e.contains("not a multiple of num_key_value_heads"), "{e}");
    assert!(config_err(|c| {
        c.insert("hidden_act".into(), "gelu".into());
    })
    .contains("hidden_act `gelu`"));
}

#[test]
fn missing_files_are_named() {
    let dir = copy_fixture("tiny-llama", "no-tokenizer");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = Engine::load(CpuBackend, &dir).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("not found"), "{e}");
    let e = Engine::load(CpuBackend, &dir.join("nope")).err().unwrap().to_string();
    assert!(e.contains("nope") && e.contains("not found"), "{e}");
    // A file is loaded as GGUF by its magic, so a cut-off one is named as such ...
    std::fs::write(dir.join("m.gguf"), b"GGUF").unwrap();
    let e = Engine::load(CpuBackend, &dir.join("m.gguf")).err().unwrap().to_string();
    assert!(e.contains("m.gguf") && e.contains("truncated") && e.contains("version"), "{e}");
    // ... and any other file is neither a model directory nor a GGUF.
    std::fs::write(dir.join("m.bin"), b"not a model").unwrap();
    let e = Engine::load(CpuBackend, &dir.join("m.bin")).err().unwrap().to_string();
    assert!(e.contains("m.bin") && e.contains("neither a model directory") && e.contains("GGUF"), "{e}");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("no model.safetensors"), "{e}");
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let engine = Engine::load(CpuBackend, &common::fixtures().join("tiny-llama")).unwrap();
    let req = Request {
        prompt: Prompt::Raw("the dog runs and the cat sleeps. ".repeat(40)),
        max_tokens: 4,
        sampling: SamplingParams::default(),
    };
    let e = engine.generate(&req, |_| {}).unwrap_err().to_string();
    assert!(e.contains("context window is 128 tokens"), "{e}");
    let bad = Request {
        prompt: Prompt::Raw("hi".into()),
        max_tokens: 4,
        sampling: SamplingParams { top_p: 2.0, ..Default::default() },
    };
    assert!(engine.generate(&bad, |_| {}).unwrap_err().to_string().contains("top-p"));
    let none =
        Request { prompt: Prompt::Raw("hi".into()), max_tokens: 0, sampling: SamplingParams::default() };
    let e = engine.generate(&none, |_| {}).unwrap_err().to_string();
    assert!(e.contains("max_tokens is 0"), "{e}");
}

fn parse_err(text: &str) -> String {
    match ModelConfig::parse(text, std::path::Path::new("x/config.json")) {
        Ok(_) => panic!("config should be rejected: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn absurd_config_values_name_field_value_and_limit() {
    let e = config_err(|c| {
        c.insert("num_hidden_layers".into(), 1_000_000_000_000u64.into());
    });
    assert!(e.contains("`num_hidden_layers` = 1000000000000 is above the limit 1024"), "{e}");
    let e = config_err(|c| {
        c.insert("vocab_size".into(), u64::MAX.into());
    });
    assert!(e.contains("`vocab_size` = 18446744073709551615 is above the limit"), "{e}");
    // No explicit head_dim: hidden_size / heads is the head size, and is bounded too.
    let e = config_err(|c| {
        c.remove("head_dim");
        c.insert("hidden_size".into(), 65536.into());
        c.insert("num_attention_heads".into(), 2.into());
        c.insert("num_key_value_heads".into(), 2.into());
    });
    assert!(e.contains("`head_dim` = 32768 is above the limit 1024"), "{e}");
    let e = config_err(|c| {
        c.insert("bos_token_id".into(), (u32::MAX as u64 + 1).into());
    });
    assert!(e.contains("`bos_token_id` = 4294967296 is outside the vocabulary (vocab_size 360)"), "{e}");
    let e = config_err(|c| {
        c.insert("eos_token_id".into(), serde_json::json!([2, 360]));
    });
    assert!(e.contains("`eos_token_id` = 360 is outside the vocabulary"), "{e}");
}

#[test]
fn meaningless_floats_in_config_are_refused() {
    for (eps, shown) in [(0.0, "= 0"), (-1e-5, "= -0.00001"), (1e-50, "= 0"), (1e39, "= inf")] {
        let e = config_err(|c| {
            c.insert("rms_norm_eps".into(), eps.into());
        });
        assert!(
            e.contains(&format!("`rms_norm_eps` {shown} (as f32) must be a finite number above 0")),
            "{e}"
        );
    }
    let e = config_err(|c| {
        c.insert("rope_parameters".into(), serde_json::json!({"rope_type": "default", "rope_theta": 0.0}));
    });
    assert!(e.contains("`rope_theta` = 0 (as f32) must be a finite number above 0"), "{e}");
    // Python's json writes NaN and Infinity; they are not JSON, and not "missing".
    let text = std::fs::read_to_string(common::fixtures().join("tiny-llama/config.json")).unwrap();
    let e = parse_err(&text.replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": NaN"));
    assert!(e.contains("x/config.json: field `rms_norm_eps` is NaN: it must be a finite number"), "{e}");
    let e = parse_err(&text.replace("\"rope_theta\": 10000.0", "\"rope_theta\": -Infinity"));
    assert!(e.contains("field `rope_theta` is -Infinity"), "{e}");
}

#[test]
fn sizes_the_files_cannot_back_are_refused_before_loading() {
    let dir = copy_fixture("tiny-llama", "too-many-layers");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1000")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json: its sizes imply") && e.contains("bytes of tensors"), "{e}");
}

#[test]
fn non_finite_weights_name_the_tensor_and_index() {
    let dir = copy_fixture("tiny-llama", "nan-weight");
    rewrite(&dir, |name, t| {
        if name == "model.layers.0.mlp.up_proj.weight" {
            t.2[4 * 70..4 * 71].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    });
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.0.mlp.up_proj.weight")
            && e.contains("element 70 (index [1, 6] of shape [160, 64]) is NaN"),
        "{e}"
    );
    let trusted = pimoe::model::LoadOptions { trust_weights: true };
    assert!(Llm::load_with(&CpuBackend, &dir, trusted).is_ok(), "trust_weights skips the scan");
    // Trusted anyway, the NaN reaches the logits: the generation stops and says so,
    // with no token of it in the answer and a failing exit status.
    let run = |trust: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pimoe"));
        cmd.args(["generate", "--device", "cpu", "--prompt", "Hello", "--max-tokens", "8", "--model"])
            .arg(&dir);
        if trust {
            cmd.arg("--trust-weights");
        }
        let out = cmd.env_remove("PIMOE_TRUST_WEIGHTS").output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(false);
    assert!(!ok && err.contains("model.layers.0.mlp.up_proj.weight") && err.contains("is NaN"), "{err}");
    let (ok, answer, err) = run(true);
    assert!(!ok && answer.trim().is_empty(), "{answer:?}");
    assert!(err.contains("finish: NonFinite") && err.contains("logits became NaN or infinite"), "{err}");

    let dir = copy_fixture("tiny-llama", "inf-bf16-weight");
    rewrite(&dir, |name, t| {
        if name == "model.norm.weight" {
            let mut v: Vec<u8> = t.2.chunks(4).flat_map(|c| [c[2], c[3]]).collect();
            v[6..8].copy_from_slice(&half::bf16::NEG_INFINITY.to_le_bytes());
            *t = (Dtype::BF16, t.1.clone(), v);
        }
    });
    let e = load_err(&dir);
    assert!(e.contains("model.norm.weight") && e.contains("element 3 ") && e.contains("-inf"), "{e}");
}

/// A safetensors file of one F32 tensor `w` with the given header fields.
fn raw_safetensors(dir: &std::path::Path, shape: &str, offsets: &str, data: usize) {
    let mut header =
        format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(vec![0u8; data]);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn bad_safetensors_headers_name_the_tensor() {
    let dir = copy_fixture("tiny-llama", "bad-header");
    raw_safetensors(&dir, "[4611686018427387904, 8]", "[0, 16]", 16);
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("tensor `w`: shape") && e.contains("overflows"),
        "{e}"
    );
    raw_safetensors(&dir, "[4]", "[0, 1000000]", 16);
    let e = load_err(&dir);
    assert!(e.contains("tensor `w`: data_offsets [0, 1000000] lie outside the 16 bytes"), "{e}");
    raw_safetensors(&dir, "[3]", "[0, 16]", 16);
    let e = load_err(&dir);
    assert!(e.contains("tensor `w`: shape [3] of F32 is 12 bytes, its data_offsets [0, 16] hold 16"), "{e}");
}

#[test]
fn a_directory_where_a_file_belongs_is_named() {
    let dir = copy_fixture("tiny-llama", "dir-for-file");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::create_dir(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors: is a directory, not a file"), "{e}");
}

fn manifest_err(order: Option<&str>, pattern: &str, n: u64) -> String {
    let order = order.map_or(String::new(), |o| format!(r#""order": {o:?},"#));
    let text = format!(
        r#"{{ "llm": "x", "router": {{ "kind": "trigger", "triggers": [{{ "text": "=", "expert": "e" }}] }},
             "experts": [{{ "name": "e", "t2c": {{ "kind": "extract", "pattern": {pattern:?} }}, {order}
                           "expert": {{ "kind": "linear-solve", "n": {n} }}, "format": {{ "template": "{{value}}" }} }}] }}"#
    );
    let m = pimoe::pimoe::manifest::Manifest::parse(&text, std::path::Path::new("m.json")).unwrap();
    match pimoe::pimoe::compose::Composition::load(&m, std::path::Path::new("."), 64, 360) {
        Ok(_) => panic!("manifest should be refused: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn manifest_sizes_and_orders_blame_the_right_field() {
    // linear-solve n = 1 takes 2 inputs.
    let e = manifest_err(None, "list[18446744073709551615]; number", 1);
    assert!(e.contains("t2c.pattern") && e.contains("count 18446744073709551615 is above the limit"), "{e}");
    let e = manifest_err(None, "list[5]", 1);
    assert!(e.contains("t2c.pattern: gives 5 inputs") && !e.contains("order"), "{e}");
    // Loaded fine once, then indexed past T2C's values when the expert fired.
    let e = manifest_err(Some("18446744073709551615, 0"), "number; number", 1);
    assert!(e.contains("order: reads value 18446744073709551615, but T2C gives 2 values"), "{e}");
    let e = manifest_err(Some("0..1000000000000"), "list", 1);
    assert!(e.contains("order") && e.contains("past the limit"), "{e}");
    let e = manifest_err(None, "list", 1_000_000_000_000);
    assert!(e.contains("(`e`).expert: linear solve: n = 1000000000000 is outside 1..=64"), "{e}");
}

#[test]
fn a_shard_outside_the_model_directory_is_refused() {
    let dir = copy_fixture("tiny-llama", "shard-escape");
    std::fs::rename(dir.join("model.safetensors"), dir.join("../escaped.safetensors")).unwrap();
    let index = r#"{"weight_map": {"model.norm.weight": "../escaped.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("not a file name in the model directory: \"../escaped.safetensors\""), "{e}");
}
