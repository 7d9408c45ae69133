//! GGUF (llama architecture, gpt2 byte-level BPE tokenizer) to a Hugging Face model
//! directory: `config.json`, `model.safetensors` (every tensor bf16) and
//! `tokenizer.json` (plus `tokenizer_config.json` for the special tokens and the chat
//! template, which tokenizer.json has no place for).
//!
//! Everything is written into a temporary sibling directory that is renamed to the
//! output directory at the end, so a failed or interrupted import leaves nothing that
//! looks like a model.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use half::bf16;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::config::{size_limit, Arch, ModelConfig};
use crate::model::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::model::quant::QType;
use crate::model::safetensors::{check_finite, GGML_TYPE_KEY};
use crate::model::LoadOptions;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub tensors: usize,
    /// Parameters as stored (a tied lm_head is not stored, so not counted).
    pub params: u64,
    /// Bytes of all files written.
    pub bytes_written: u64,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} tensors ({:.1} M parameters, {:.1} MiB written) into {}",
            self.tensors,
            self.params as f64 / 1e6,
            self.bytes_written as f64 / (1u64 << 20) as f64,
            self.out_dir.display()
        )
    }
}

pub fn import_gguf(gguf: &Path, out_dir: &Path, progress: bool) -> Result<ImportSummary> {
    import_gguf_with(gguf, out_dir, progress, false)
}

/// `import_gguf`, keeping every tensor in its stored type when `keep_types` (see
/// [`Layout`]).
pub fn import_gguf_with(
    gguf: &Path,
    out_dir: &Path,
    progress: bool,
    keep_types: bool,
) -> Result<ImportSummary> {
    refuse_non_empty(out_dir)?;
    let g = GgufFile::open(gguf)?;
    let cfg = config_from_gguf(&g)?;
    let plan = plan_tensors(&g, &cfg)?;
    let json = |v: Value| serde_json::to_vec_pretty(&v).expect("JSON values always serialize");
    let tokenizer = json(tokenizer_json(&g)?);
    // A vocabulary the tokenizers crate rejects (say, a merge of unknown tokens) is the
    // GGUF's fault; say so now rather than when the model is first loaded.
    tokenizers::Tokenizer::from_bytes(&tokenizer).map_err(|e| {
        g.format_err(format!("the tokenizer built from this file's metadata does not load: {e}"))
    })?;
    let small_files = [
        ("config.json", json(cfg.to_json())),
        ("tokenizer.json", tokenizer),
        ("tokenizer_config.json", json(tokenizer_config_json(&g)?)),
    ];

    let tmp = TempDir::beside(out_dir)?;
    let mut bytes_written = 0;
    for (name, text) in &small_files {
        write_file(&tmp.path.join(name), |w| w.write_all(text))?;
        bytes_written += text.len() as u64;
    }
    bytes_written += write_safetensors(&g, &plan, &tmp.path.join("model.safetensors"), progress, keep_types)?;

    tmp.persist(out_dir)?;
    Ok(ImportSummary {
        out_dir: out_dir.to_path_buf(),
        tensors: plan.len(),
        params: plan.iter().map(|p| p.info.n_elements()).sum(),
        bytes_written,
    })
}

fn refuse_non_empty(out_dir: &Path) -> Result<()> {
    match fs::read_dir(out_dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(Error::io(out_dir, already_there())),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(out_dir, e)),
    }
}

// ---------------------------------------------------------------------------------------
// config.json

pub(crate) fn config_from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch_name = g.req_str("general.architecture")?;
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => {
            return Err(g.format_err(format!(
                "architecture `{other}` is not supported (supported: `llama`, `qwen2`)"
            )))
        }
    };
    // Every model key is prefixed by the architecture's name.
    let key = |k: &str| format!("{arch_name}.{k}");
    if let Some(kind) = g.opt_str(&key("rope.scaling.type"))? {
        if kind != "none" {
            return Err(g.format_err(format!("rope scaling `{kind}` is not supported")));
        }
    }
    // Bounded here, by GGUF key, so that a huge value is never copied into config.json.
    let bounded = |k: &str, field: &str, v: u64| -> Result<usize> {
        match size_limit(field) {
            Some(limit) if v > limit => Err(g.format_err(format!(
                "metadata `{k}` = {v} (config.json's {field}) is above the limit {limit}"
            ))),
            _ => Ok(v as usize),
        }
    };
    let usize_of = |k: &str, field: &str| bounded(k, field, g.req_u64(k)?);
    let hidden_size = usize_of(&key("embedding_length"), "hidden_size")?;
    let num_heads = usize_of(&key("attention.head_count"), "num_attention_heads")?;
    let num_kv_heads = match g.opt_u64(&key("attention.head_count_kv"))? {
        Some(v) => bounded(&key("attention.head_count_kv"), "num_key_value_heads", v)?,
        None => num_heads,
    };
    // head_dim is usually only implied by the rotary dimension count; an explicit key
    // length wins when present, and rotary over part of a head is not something we run.
    let rope_dims = match g.opt_u64(&key("rope.dimension_count"))? {
        Some(v) => Some(bounded(&key("rope.dimension_count"), "head_dim", v)?),
        None => None,
    };
    let head_dim = match g.opt_u64(&key("attention.key_length"))? {
        Some(k) => bounded(&key("attention.key_length"), "head_dim", k)?,
        None => rope_dims.unwrap_or(hidden_size / num_heads.max(1)),
    };
    if rope_dims.is_some_and(|r| r != head_dim) {
        return Err(g.format_err(format!(
            "{arch_name}.rope.dimension_count ({}) differs from the head size ({head_dim}): partial rotary embeddings are not supported",
            rope_dims.unwrap_or_default()
        )));
    }
    let tokens = g
        .opt_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| g.format_err("missing metadata `tokenizer.ggml.tokens`"))?;
    let vocab_size = bounded("tokenizer.ggml.tokens", "vocab_size", tokens.len() as u64)?;
    // config.json cannot hold NaN (it would be written as null and read back as
    // "missing"), so non-finite values are refused here, by key.
    let positive = |key: &str, v: f64| -> Result<f32> {
        let x = v as f32;
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(g.format_err(format!("metadata `{key}` = {v} must be a finite number above 0")))
        }
    };
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let rms_norm_eps = positive(&eps_key, g.req_f64(&eps_key)?)?;
    let theta_key = key("rope.freq_base");
    let rope_theta = positive(&theta_key, g.opt_f64(&theta_key)?.unwrap_or(10000.0))?;
    let token_id = |k: &str| -> Result<Option<u32>> {
        match g.opt_u64(k)? {
            Some(id) if id as usize >= vocab_size => Err(g.format_err(format!(
                "metadata `{k}` = {id} is outside the vocabulary ({vocab_size} tokens)"
            ))),
            id => Ok(id.map(|v| v as u32)),
        }
    };
    let cfg = ModelConfig {
        arch,
        hidden_size,
        intermediate_size: usize_of(&key("feed_forward_length"), "intermediate_size")?,
        num_layers: usize_of(&key("block_count"), "num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        max_position_embeddings: usize_of(&key("context_length"), "max_position_embeddings")?,
        vocab_size,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        qkv_bias: arch == Arch::Qwen2,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
    };
    // Round-trip through the config parser so its checks (positive sizes, head counts
    // that divide, even head_dim) apply to imported models too.
    let text = cfg.to_json().to_string();
    ModelConfig::parse(&text, g.path())?;
    Ok(cfg)
}

// ---------------------------------------------------------------------------------------
// Tensors

/// One output tensor: where it comes from and whether its rows need un-permuting.
struct Planned<'a> {
    hf_name: String,
    info: &'a TensorInfo,
    /// For q/k projections: the head count that llama.cpp's rope permutation used.
    unpermute_heads: Option<usize>,
}

fn plan_tensors<'a>(g: &'a GgufFile, cfg: &ModelConfig) -> Result<Vec<Planned<'a>>> {
    let mut plan = Vec::with_capacity(g.tensors.len());
    for info in &g.tensors {
        let (hf_name, unpermute_heads) = plan_tensor(info, cfg)?;
        plan.push(Planned { hf_name, info, unpermute_heads });
    }
    check_embedding(g, cfg)?;
    Ok(plan)
}

/// A GGUF tensor's Hugging Face name and the head count to un-permute its rows by,
/// once its type and (for q/k) its head layout are known to be ones we read.
pub(crate) fn plan_tensor(info: &TensorInfo, cfg: &ModelConfig) -> Result<(String, Option<usize>)> {
    let (hf_name, unpermute_heads) = hf_name(&info.name, cfg)?;
    if !info.ty.can_dequantize() {
        return Err(Error::tensor(
            &info.name,
            format!("ggml type {} is not supported (supported: {})", info.ty, crate::model::gguf::SUPPORTED),
        ));
    }
    if let Some(heads) = unpermute_heads {
        let rows = info.shape()[0];
        if info.dims.len() != 2 || heads.checked_mul(cfg.head_dim) != Some(rows) {
            return Err(Error::tensor(
                &info.name,
                format!("shape {:?} does not have {heads} heads of {} rows", info.shape(), cfg.head_dim),
            ));
        }
    }
    Ok((hf_name, unpermute_heads))
}

pub(crate) fn check_embedding(g: &GgufFile, cfg: &ModelConfig) -> Result<()> {
    match g.tensor("token_embd.weight").map(|t| t.shape()) {
        Some(s) if s == [cfg.vocab_size, cfg.hidden_size] => Ok(()),
        Some(s) => Err(Error::tensor(
            "token_embd.weight",
            format!("shape {s:?} does not match vocabulary {} x hidden {}", cfg.vocab_size, cfg.hidden_size),
        )),
        None => Err(g.format_err("missing tensor `token_embd.weight`")),
    }
}

/// The Hugging Face name of a llama.cpp tensor, and the head count to un-permute by:
/// llama.cpp's converter permutes the q/k rows of llama models only.
fn hf_name(name: &str, cfg: &ModelConfig) -> Result<(String, Option<usize>)> {
    let unknown = || {
        Error::tensor(name, format!("has no Hugging Face counterpart in a {} model", cfg.arch.gguf_name()))
    };
    let (base, suffix) = match name.strip_suffix(".weight") {
        Some(b) => (b, "weight"),
        None => (name.strip_suffix(".bias").filter(|_| cfg.qkv_bias).ok_or_else(unknown)?, "bias"),
    };
    let global = match base {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(hf) = global.filter(|_| suffix == "weight") {
        return Ok((format!("{hf}.weight"), None));
    }
    let (layer, part) =
        base.strip_prefix("blk.").and_then(|rest| rest.split_once('.')).ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    if layer >= cfg.num_layers {
        return Err(Error::tensor(
            name,
            format!("layer {layer} is beyond {}.block_count ({})", cfg.arch.gguf_name(), cfg.num_layers),
        ));
    }
    let permuted = cfg.arch == Arch::Llama;
    let (hf, heads) = match part {
        "attn_norm" => ("input_layernorm", None),
        "attn_q" => ("self_attn.q_proj", Some(cfg.num_heads).filter(|_| permuted)),
        "attn_k" => ("self_attn.k_proj", Some(cfg.num_kv_heads).filter(|_| permuted)),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        _ => return Err(unknown()),
    };
    if suffix == "bias" && !matches!(part, "attn_q" | "attn_k" | "attn_v") {
        return Err(unknown());
    }
    // A bias is a vector: nothing to un-permute in it for qwen2, the only arch with one.
    Ok((format!("model.layers.{layer}.{hf}.{suffix}"), heads.filter(|_| suffix == "weight")))
}

/// Undoes llama.cpp's rope permutation of a q or k projection (rows, cols), row-major.
///
/// The converter stores `w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2)`: within a head,
/// GGUF row `2*i + j` is Hugging Face row `j*hd/2 + i` (interleaved pairs instead of
/// rotate-half halves). We put every row back where Hugging Face has it.
pub fn unpermute_rope_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(&unpermute_rows(bytemuck::cast_slice(w), heads, head_dim, cols * 4))
}

/// The same move on whole rows of `row_bytes` bytes each, whatever they hold (f32
/// values or quantized blocks: a row is never split across rows).
pub(crate) fn unpermute_rows(data: &[u8], heads: usize, head_dim: usize, row_bytes: usize) -> Vec<u8> {
    let half = head_dim / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * row_bytes;
                let dst = (h * head_dim + j * half + i) * row_bytes;
                out[dst..dst + row_bytes].copy_from_slice(&data[src..src + row_bytes]);
            }
        }
    }
    out
}

/// Writes a safetensors file tensor by tensor, so that only one dequantized tensor is
/// in memory at a time. Format: u64 header length, JSON header (padded with spaces to a
/// multiple of 8), then the data at the offsets the header names.
fn write_safetensors(g: &GgufFile, plan: &[Planned], path: &Path, progress: bool, keep: bool) -> Result<u64> {
    let mut meta = json!({ "format": "pt", "source": "gguf" });
    let mut header = Map::new();
    let mut offset = 0u64;
    let layouts: Vec<Layout> = plan.iter().map(|p| Layout::of(p.info, keep)).collect();
    for (p, l) in plan.iter().zip(&layouts) {
        header.insert(
            p.hf_name.clone(),
            json!({ "dtype": l.dtype, "shape": l.shape, "data_offsets": [offset, offset + l.bytes] }),
        );
        if let Some(q) = l.quant {
            meta[format!("{GGML_TYPE_KEY}{}", p.hf_name)] = json!(q.to_string());
        }
        offset += l.bytes;
    }
    header.insert("__metadata__".into(), meta);
    let mut head = serde_json::to_vec(&Value::Object(header)).expect("JSON values always serialize");
    head.resize(head.len().next_multiple_of(8), b' ');

    let bar = if progress { ProgressBar::new(plan.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("importing {bar:40} {pos}/{len} tensors {msg}")
            .expect("the template is valid"),
    );
    write_file(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for (p, l) in plan.iter().zip(&layouts) {
            bar.set_message(p.hf_name.clone());
            let bytes = tensor_out_bytes(g, p, l.dtype != "BF16" || p.info.ty == GgmlType::BF16)
                .map_err(std::io::Error::other)?;
            w.write_all(&bytes)?;
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(8 + head.len() as u64 + offset)
}

/// How `import-gguf` writes one tensor: bf16, or with `--keep-types` as stored (F32,
/// F16 and BF16 as such, a block-quantized matrix as U8 rows of its blocks, its type
/// named in the metadata). A quantized vector, which no model we load has, is bf16.
struct Layout {
    dtype: &'static str,
    shape: Vec<u64>,
    bytes: u64,
    quant: Option<QType>,
}

impl Layout {
    fn of(t: &TensorInfo, keep: bool) -> Layout {
        let (n, shape) = (t.n_elements(), t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>());
        let float = |dtype, size| Layout { dtype, shape: shape.clone(), bytes: n * size, quant: None };
        match (keep, t.ty, QType::from_ggml(t.ty)) {
            (true, GgmlType::F32, _) => float("F32", 4),
            (true, GgmlType::F16, _) => float("F16", 2),
            (true, _, Some(q)) if shape.len() == 2 => {
                let row = (t.dims[0] / t.ty.block_len() * t.ty.block_bytes()) as u64;
                Layout { dtype: "U8", shape: vec![shape[0], row], bytes: shape[0] * row, quant: Some(q) }
            }
            _ => float("BF16", 2),
        }
    }
}

/// The bytes of one tensor, rows in Hugging Face order: as stored when `raw`, else
/// widened and rounded to bf16. Either way every value is checked finite first.
fn tensor_out_bytes(g: &GgufFile, p: &Planned, raw: bool) -> Result<Vec<u8>> {
    let t = p.info;
    let cols = t.dims[0] as usize;
    let row_bytes = (t.dims[0] / t.ty.block_len() * t.ty.block_bytes()) as usize;
    let stored = g.tensor_bytes(t);
    let scan = LoadOptions::default().scan();
    let as_stored = || match p.unpermute_heads {
        Some(heads) => unpermute_rows(stored, heads, t.shape()[0] / heads, row_bytes),
        None => stored.to_vec(),
    };
    if raw && !scan {
        return Ok(as_stored());
    }
    let mut values = vec![0f32; t.n_elements() as usize];
    // Rows dequantize independently; rayon spreads them over the cores.
    values
        .par_chunks_mut(cols)
        .zip(stored.par_chunks(row_bytes))
        .try_for_each(|(out, data)| crate::model::gguf::dequantize(t.ty, data, out))
        .map_err(|msg| Error::tensor(&t.name, msg))?;
    if scan {
        check_finite(&t.name, &t.shape(), values.len(), |i| values[i] as f64)?;
    }
    if raw {
        return Ok(as_stored());
    }
    if let Some(heads) = p.unpermute_heads {
        values = unpermute_rope_rows(&values, heads, t.shape()[0] / heads, cols);
    }
    let mut bytes = vec![0u8; values.len() * 2];
    bytes.par_chunks_mut(2).zip(values.par_iter()).for_each(|(b, &v)| {
        b.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
    });
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------
// Tokenizer

/// The pre-tokenizer split of Qwen2's tokenizer (contractions, letters with one
/// leading non-letter, single digits, punctuation runs, newlines, spaces).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub(crate) fn tokenizer_json(g: &GgufFile) -> Result<Value> {
    let model = g.req_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g.format_err(format!(
            "tokenizer model `{model}` is not supported (only `gpt2`, byte-level BPE)"
        )));
    }
    let tokens = string_array(g, "tokenizer.ggml.tokens")?;
    let merges = string_array(g, "tokenizer.ggml.merges")?;
    let types = match g.opt_array("tokenizer.ggml.token_type")? {
        None => vec![1; tokens.len()],
        Some(a) => a
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| g.format_err("`tokenizer.ggml.token_type` must hold integers")))
            .collect::<Result<Vec<_>>>()?,
    };
    if types.len() != tokens.len() {
        return Err(g.format_err(format!(
            "`tokenizer.ggml.token_type` has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    // The ids the model treats as special stay whole even if their type says otherwise.
    let special_ids: Vec<u64> = ["bos", "eos", "unknown", "padding"]
        .iter()
        .filter_map(|k| g.get(&format!("tokenizer.ggml.{k}_token_id")).and_then(|v| v.as_u64()))
        .collect();

    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(tok.to_string(), id.into()).is_some() {
            return Err(g.format_err(format!("token `{tok}` appears twice in the vocabulary")));
        }
        // llama_token_type: 3 = control (special), 4 = user-defined (added, plain text).
        let special = ty == 3 || special_ids.contains(&(id as u64));
        if special || ty == 4 {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
    }

    let pre = g.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let byte_level =
        json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
    let pre_tokenizer = match pre {
        // ByteLevel's own regex is GPT-2's.
        "default" | "gpt-2" => byte_level.clone(),
        // SmolLM2's tokenizer.json: every digit on its own, then GPT-2's split.
        "smollm" => json!({
            "type": "Sequence",
            "pretokenizers": [{ "type": "Digits", "individual_digits": true }, byte_level.clone()],
        }),
        // Qwen2's tokenizer.json: its own split regex (digits one by one), then byte-level
        // mapping without a second split.
        "qwen2" => json!({
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": { "Regex": QWEN2_SPLIT },
                    "behavior": "Isolated",
                    "invert": false,
                },
                { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false },
            ],
        }),
        other => {
            return Err(g.format_err(format!(
                "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported (supported: default, gpt-2, smollm, qwen2)"
            )))
        }
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// The special tokens by role and the chat template, where transformers looks for them.
fn tokenizer_config_json(g: &GgufFile) -> Result<Value> {
    let tokens = string_array(g, "tokenizer.ggml.tokens")?;
    let mut m = Map::new();
    for (role, key) in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")] {
        if let Some(id) = g.opt_u64(&format!("tokenizer.ggml.{key}_token_id"))? {
            let tok = tokens.get(id as usize).ok_or_else(|| {
                g.format_err(format!("`tokenizer.ggml.{key}_token_id` = {id} is outside the vocabulary"))
            })?;
            m.insert(format!("{role}_token"), Value::from(*tok));
        }
    }
    m.insert("add_bos_token".into(), g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false).into());
    if let Some(t) = g.opt_str("tokenizer.chat_template")? {
        m.insert("chat_template".into(), t.into());
    }
    m.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    Ok(Value::Object(m))
}

fn string_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let arr = g.opt_array(key)?.ok_or_else(|| g.format_err(format!("missing metadata `{key}`")))?;
    arr.iter()
        .map(|v| {
            v.as_str().ok_or_else(|| g.format_err(format!("metadata `{key}` must be an array of strings")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Files

/// The error for an output directory that holds something already; its kind lets
/// callers (the fetcher) tell "someone else imported it first" from other failures.
fn already_there() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "the output directory already exists and is not empty; remove it or choose another",
    )
}

fn write_file(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    body(&mut w).and_then(|()| w.flush()).map_err(|e| Error::io(path, e))?;
    // Flushed to disk before the directory is renamed into place, so a crash cannot
    // leave a complete-looking directory with empty files.
    w.get_ref().sync_all().map_err(|e| Error::io(path, e))
}

/// A directory next to the destination that is removed unless persisted.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn beside(target: &Path) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .ok_or_else(|| Error::External(format!("{}: not a usable output directory", target.display())))?;
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id()));
        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TempDir { path, keep: false })
    }

    /// Renames into `target`. An empty `target` is replaced; a non-empty one (say,
    /// another process finished first) is left alone and reported.
    fn persist(mut self, target: &Path) -> Result<()> {
        if target.is_dir() {
            let _ = fs::remove_dir(target);
        }
        match fs::rename(&self.path, target) {
            Ok(()) => {
                self.keep = true;
                Ok(())
            }
            Err(_) if target.exists() => Err(Error::io(target, already_there())),
            Err(e) => Err(Error::io(target, e)),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
