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
