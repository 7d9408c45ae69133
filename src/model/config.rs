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
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
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
            vocab_size: f.usize("vocab_size")?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || f.opt_bool("attention_bias")?.unwrap_or(false),
            bos_token_id: f.opt_usize("bos_token_id")?.map(|v| v as u32),
            eos_token_ids: f.token_ids("eos_token_id")?,
        };
        cfg.check().map_err(|msg| f.err(msg))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let nonzero = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("vocab_size", self.vocab_size),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
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
        Ok(())
    }

    /// The config.json we write for an imported model; `parse` reads it back unchanged.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architectures".into(), Value::from(vec![self.arch.hf_name()]));
        m.insert(
            "model_type".into(),
            Value::from(match self.arch {
                Arch::Llama => "llama",
                Arch::Qwen2 => "qwen2",
            }),
        );
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
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_heads * hd;
        let kv = self.num_kv_heads * hd;
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        let layer = h * q + 2 * h * kv + q * h + bias + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_layers * layer + h + head
    }
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
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.err(format!("field `{name}` must be a non-negative integer, got {v}")))
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
    fn token_ids(&self, name: &str) -> Result<Vec<u32>> {
        let bad = || self.err(format!("field `{name}` must be a token id or a list of token ids"));
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|v| v.as_u64().map(|x| x as u32).ok_or_else(bad)).collect(),
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(bad),
        }
    }
}
