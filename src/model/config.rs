//! `config.json` of a Hugging Face causal LM, reduced to what the forward pass uses.
//!
//! Only `LlamaForCausalLM` and `Qwen2ForCausalLM` are accepted; anything that would
//! change the maths without us implementing it (rope scaling, MLP biases, another
//! activation) is an error rather than a silently wrong answer.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    /// Llama with biases on the q, k and v projections.
    Qwen2,
}

impl Arch {
    pub fn hf_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The name as config.json's model_type and GGUF's general.architecture spell it.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v: always for Qwen2, `attention_bias` for Llama.
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| match non_finite_field(text, &e) {
            Some(msg) => Error::Config { path: path.to_path_buf(), msg },
            None => Error::format(path, format!("not valid JSON: {e}")),
        })?;
        let obj = value.as_object().ok_or_else(|| Error::format(path, "expected a JSON object"))?;
        let f = Fields { obj, path: path.to_path_buf() };

        let archs = f.req("architectures")?;
        let arch_name = archs
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| f.err("field `architectures` must be a non-empty list of strings"))?;
        let arch = match arch_name {
            "LlamaForCausalLM" => Arch::Llama,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            other => {
                return Err(f.err(format!(
                    "architecture `{other}` is not supported (supported: LlamaForCausalLM, Qwen2ForCausalLM)"
                )))
            }
        };

        // transformers < 5 writes `rope_theta` and `rope_scaling`; 5.x folds both
        // into `rope_parameters`. Anything but plain rope changes the maths.
        let rope_params = obj.get("rope_parameters").filter(|v| !v.is_null());
        for (field, rs) in [("rope_scaling", obj.get("rope_scaling")), ("rope_parameters", rope_params)] {
            let Some(rs) = rs.filter(|v| !v.is_null()) else { continue };
            let kind =
                rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("<unnamed>");
            if kind != "default" {
                return Err(
                    f.err(format!("{field}: rope type `{kind}` is not supported (only default rope)"))
                );
            }
        }
        let rope_theta = match rope_params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v.as_f64().ok_or_else(|| {
                f.err(format!("field `rope_parameters.rope_theta` must be a number, got {v}"))
            })?,
            None => f.opt_f64("rope_theta")?.unwrap_or(10000.0),
        };
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(f.err(format!("hidden_act `{act}` is not supported (only silu)")));
            }
        }
        if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
            return Err(f.err("use_sliding_window = true is not supported (full attention only)"));
        }
        if f.opt_bool("mlp_bias")?.unwrap_or(false) {
            return Err(f.err("mlp_bias = true is not supported"));
        }

        let hidden_size = f.usize("hidden_size")?;
        let num_heads = f.usize("num_attention_heads")?;
        let num_kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = f.usize("vocab_size")?;
        let cfg = ModelConfig {
            arch,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_layers: f.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f.f64("rms_norm_eps")? as f32,
            rope_theta: rope_theta as f32,
            max_position_embeddings: f.usize("max_position_embeddings")?,
            vocab_size,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || f.opt_bool("attention_bias")?.unwrap_or(false),
            bos_token_id: f.opt_token_id("bos_token_id", vocab_size)?,
            eos_token_ids: f.token_ids("eos_token_id", vocab_size)?,
        };
        cfg.check().map_err(|msg| f.err(msg))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if let Some((name, _)) = self.sizes().iter().find(|(_, v)| *v == 0) {
            return Err(format!("field `{name}` must be positive"));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        // f32 is what the kernels get: 1e-50 becomes 0 and 1e39 infinity there.
        for (name, v) in [("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("field `{name}` = {v} (as f32) must be a finite number above 0"));
            }
        }
        for (name, v) in self.sizes() {
            let limit = size_limit(name).expect("every size field has a limit");
            if v as u64 > limit {
                return Err(format!("field `{name}` = {v} is above the limit {limit}"));
            }
        }
        // Within the limits these fit in 64 bits; the checks keep that true if the
        // limits ever grow, and cover 32-bit targets.
        if self.checked_params().is_none() {
            return Err("the parameter count of these sizes overflows".into());
        }
        let kv = self.kv_bytes_per_token().and_then(|b| b.checked_mul(self.max_position_embeddings));
        if kv.is_none() {
            return Err(format!(
                "the KV cache of one max_position_embeddings ({}) sequence overflows",
                self.max_position_embeddings
            ));
        }
        Ok(())
    }

    fn sizes(&self) -> [(&'static str, usize); 8] {
        [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("vocab_size", self.vocab_size),
        ]
    }

    /// Bytes of f32 K and V for one position over all layers, None on overflow.
    pub fn kv_bytes_per_token(&self) -> Option<usize> {
        [2, self.num_layers, self.num_kv_heads, self.head_dim, 4]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)
    }

    /// The config.json we write for an imported model; `parse` reads it back unchanged.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architectures".into(), Value::from(vec![self.arch.hf_name()]));
        m.insert("model_type".into(), self.arch.gguf_name().into());
        m.insert("hidden_size".into(), self.hidden_size.into());
        m.insert("intermediate_size".into(), self.intermediate_size.into());
        m.insert("num_hidden_layers".into(), self.num_layers.into());
        m.insert("num_attention_heads".into(), self.num_heads.into());
        m.insert("num_key_value_heads".into(), self.num_kv_heads.into());
        m.insert("head_dim".into(), self.head_dim.into());
        m.insert("hidden_act".into(), "silu".into());
        m.insert("rms_norm_eps".into(), f32_as_json(self.rms_norm_eps));
        m.insert("rope_theta".into(), f32_as_json(self.rope_theta));
        m.insert("max_position_embeddings".into(), self.max_position_embeddings.into());
        m.insert("vocab_size".into(), self.vocab_size.into());
        m.insert("tie_word_embeddings".into(), self.tie_word_embeddings.into());
        if self.arch == Arch::Llama {
            m.insert("attention_bias".into(), self.qkv_bias.into());
        }
        m.insert("torch_dtype".into(), "bfloat16".into());
        if let Some(b) = self.bos_token_id {
            m.insert("bos_token_id".into(), b.into());
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                m.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                m.insert("eos_token_id".into(), Value::from(many.to_vec()));
            }
        }
        Value::Object(m)
    }

    /// Parameters of the model as stored (the tied lm_head counted once).
    pub fn num_params(&self) -> usize {
        self.checked_params().expect("parse refuses sizes whose parameter count overflows")
    }

    fn checked_params(&self) -> Option<usize> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let sum = |xs: &[Option<usize>]| xs.iter().try_fold(0usize, |acc, x| acc.checked_add((*x)?));
        let q = mul(self.num_heads, hd)?;
        let kv = mul(self.num_kv_heads, hd)?;
        let bias = if self.qkv_bias { sum(&[Some(q), mul(2, kv)])? } else { 0 };
        // q, k, v, o; gate, up, down; two norms.
        let (h2, h3) = (mul(2, h)?, mul(3, h)?);
        let layer = sum(&[mul(h2, q), mul(h2, kv), Some(bias), mul(h3, i), Some(h2)])?;
        let embed = mul(self.vocab_size, h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        sum(&[Some(embed), mul(self.num_layers, layer), Some(h), Some(head)])
    }
}

/// The largest value each size field may take: several times the largest released
/// model's (hidden 16384, 126 layers, 256k vocabularies), so that a corrupt or
/// hostile value is refused by name before anything is sized from it.
pub fn size_limit(field: &str) -> Option<u64> {
    Some(match field {
        "hidden_size" => 1 << 16,
        "intermediate_size" => 1 << 18,
        "num_hidden_layers" | "num_attention_heads" | "num_key_value_heads" | "head_dim" => 1 << 10,
        "max_position_embeddings" | "vocab_size" => 1 << 24,
        _ => return None,
    })
}

/// serde_json refuses the NaN and Infinity that Python's json module writes with a
/// bare "expected value"; name the field and the value instead.
fn non_finite_field(text: &str, e: &serde_json::Error) -> Option<String> {
    let line = text.split('\n').nth(e.line().checked_sub(1)?)?;
    let mut at = line.as_ptr() as usize - text.as_ptr() as usize + e.column().checked_sub(1)?;
    // For -Infinity the error points past the sign.
    if text.get(..at)?.ends_with('-') {
        at -= 1;
    }
    let rest = text.get(at..)?;
    let literal = ["NaN", "Infinity", "-Infinity"].into_iter().find(|l| rest.starts_with(l))?;
    let before = text[..at].trim_end().strip_suffix(':')?.trim_end().strip_suffix('"')?;
    let key = &before[before.rfind('"')? + 1..];
    Some(format!("field `{key}` is {literal}: it must be a finite number"))
}

/// The f64 whose shortest decimal form is the f32's (1e-5, not 9.999999747378752e-6).
fn f32_as_json(x: f32) -> Value {
    x.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

/// Typed access to config fields with errors that name the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: PathBuf,
}

impl Fields<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Config { path: self.path.clone(), msg: msg.into() }
    }
    fn req(&self, name: &str) -> Result<&Value> {
        self.obj.get(name).filter(|v| !v.is_null()).ok_or_else(|| self.err(format!("missing field `{name}`")))
    }
    fn usize(&self, name: &str) -> Result<usize> {
        let v = self.req(name)?;
        let x = v
            .as_u64()
            .ok_or_else(|| self.err(format!("field `{name}` must be a non-negative integer, got {v}")))?;
        usize::try_from(x).map_err(|_| self.err(format!("field `{name}` = {x} does not fit in memory")))
    }
    fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.usize(name).map(Some),
        }
    }
    fn f64(&self, name: &str) -> Result<f64> {
        let v = self.req(name)?;
        v.as_f64().ok_or_else(|| self.err(format!("field `{name}` must be a number, got {v}")))
    }
    fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.f64(name).map(Some),
        }
    }
    fn opt_bool(&self, name: &str) -> Result<Option<bool>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("field `{name}` must be true or false, got {v}"))),
        }
    }
    /// `eos_token_id` is an integer or a list of integers.
    fn token_ids(&self, name: &str, vocab: usize) -> Result<Vec<u32>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|v| self.token_id(name, v, vocab)).collect(),
            Some(v) => Ok(vec![self.token_id(name, v, vocab)?]),
        }
    }
    fn opt_token_id(&self, name: &str, vocab: usize) -> Result<Option<u32>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.token_id(name, v, vocab).map(Some),
        }
    }
    /// A token of the vocabulary (an embedding row), not any integer cut to 32 bits.
    fn token_id(&self, name: &str, v: &Value, vocab: usize) -> Result<u32> {
        let x = v.as_u64().ok_or_else(|| self.err(format!("field `{name}` must be a token id, got {v}")))?;
        match u32::try_from(x) {
            Ok(t) if (t as usize) < vocab => Ok(t),
            _ => {
                Err(self.err(format!("field `{name}` = {x} is outside the vocabulary (vocab_size {vocab})")))
            }
        }
    }
}
