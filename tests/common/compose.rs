//! A PiMoE composition on the tiny Qwen2 fixture that fires: a piern router that always
//! fires and a 2x2 linear-solve expert fed by an exact T2C pattern (scheduler, C ABI).

use std::path::{Path, PathBuf};

use super::{fixtures, scratch_dir};

/// A prompt from which the composition's T2C reads A = [[2, 1], [1, 3]] and b = [3, 5]
/// (x = [0.8, 1.4]).
pub const GOOD: &str = "Solve A = [2, 1, 1, 3] and b = [3, 5] for x.";

/// A piern router whose output bias makes it fire on every token it may fire on.
pub fn write_router(path: &Path, vocab: usize) {
    let (e, h) = (8usize, 4usize);
    let mut rng = pimoe::sampling::Rng::new(5);
    let mut r = |n: usize| (0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<f32>>();
    let tensors = vec![
        ("embedding.weight", vec![vocab, e], r(vocab * e)),
        ("fc.0.weight", vec![h, e], r(h * e)),
        ("fc.0.bias", vec![h], r(h)),
        ("fc.2.weight", vec![1, h], r(h)),
        ("fc.2.bias", vec![1], vec![10.0]),
    ];
    write_safetensors(path, &tensors);
}

pub fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let v = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .unwrap();
            (n.to_string(), v)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A manifest composing the tiny Qwen2 with the always-firing router and a 2x2
/// linear-solve expert fed by an exact T2C pattern.
pub fn composition(name: &str, policy: &str) -> PathBuf {
    let dir = scratch_dir(name);
    write_router(&dir.join("router.safetensors"), 360);
    let manifest = format!(
        r#"{{
  "llm": {llm:?},
  "router": {{ "kind": "piern", "weights": "router.safetensors", "experts": ["solve"],
              "embed_dim": 8, "hidden": 4, "policy": {policy} }},
  "experts": [{{
    "name": "solve",
    "t2c": {{ "kind": "extract", "pattern": "list[4] after \"A =\"; list[2] after \"b =\"" }},
    "expert": {{ "kind": "linear-solve", "n": 2 }},
    "format": {{ "template": " x = {{values:.6f}}." }}
  }}]
}}"#,
        llm = fixtures().join("tiny-qwen2")
    );
    std::fs::write(dir.join("pimoe.json"), manifest).unwrap();
    dir.join("pimoe.json")
}

/// A random-weight Qwen2 with the tiny fixture's tokenizer and the head size the
/// CUDA kernels take (64; the tiny fixtures have 16): 2 layers, hidden 128, 2 query
/// heads and 1 KV head. For GPU tests that need a whole model but not a trained one.
pub fn cuda_sized_model(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let src = fixtures().join("tiny-qwen2");
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let (v, h, inter, layers, kv) = (360usize, 128usize, 256usize, 2usize, 64usize);
    let config = format!(
        r#"{{ "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
  "hidden_size": {h}, "intermediate_size": {inter}, "num_hidden_layers": {layers},
  "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
  "vocab_size": {v}, "bos_token_id": 0, "eos_token_id": 2 }}"#
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    let mut rng = pimoe::sampling::Rng::new(64);
    let mut r =
        |n: usize, scale: f32| (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect::<Vec<f32>>();
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h], r(v * h, 1.0)),
        ("model.norm.weight".into(), vec![h], r(h, 0.2).iter().map(|x| 1.0 + x).collect()),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let ws = 1.0 / (h as f32).sqrt();
        t.push((format!("{p}.input_layernorm.weight"), vec![h], vec![1.0; h]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h], vec![1.0; h]));
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h], r(h * h, ws)));
        t.push((format!("{p}.self_attn.q_proj.bias"), vec![h], r(h, 0.1)));
        t.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h], r(kv * h, ws)));
        t.push((format!("{p}.self_attn.k_proj.bias"), vec![kv], r(kv, 0.1)));
        t.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h], r(kv * h, ws)));
        t.push((format!("{p}.self_attn.v_proj.bias"), vec![kv], r(kv, 0.1)));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h], r(h * h, ws)));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, h], r(inter * h, ws)));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![inter, h], r(inter * h, ws)));
        t.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![h, inter],
            r(h * inter, 1.0 / (inter as f32).sqrt()),
        ));
    }
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> =
        t.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.clone())).collect();
    write_safetensors(&dir.join("model.safetensors"), &refs);
    dir
}
