//! A GGUF reader (versions 2 and 3, little-endian) over a memory map, and dequantization
//! of the ggml tensor types we import (F32, F16, BF16, Q8_0, Q4_0, Q4_1) to f32.
//!
//! Layout, per the spec (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
//! header (magic, version, tensor count, KV count), metadata KVs, tensor infos, padding
//! to `general.alignment`, then the data section that tensor offsets are relative to.
//! Everything read from the file is checked against the file's length before use, so a
//! corrupt or truncated file is an error that says where it went wrong, never a panic or
//! a huge allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::model::quant::QType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; bounding the nesting keeps a crafted file from
/// exhausting the stack.
const MAX_ARRAY_NESTING: usize = 4;

/// A metadata value. Integers keep their stored width so nothing is lost.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any non-negative integer, whatever its stored width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any number (converters write floats as f32, sometimes f64, sometimes integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

/// The ggml tensor types, with their GGUF ids. Every type of current ggml is listed
/// (so that sizes, and therefore bounds, can be checked for any tensor); only some
/// can be dequantized, see [`GgmlType::can_dequantize`].
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rustfmt::skip]
pub enum GgmlType {
    F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
    Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
    IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS,
    I8, I16, I32, I64, F64, IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4,
}

/// id, type, elements per block, bytes per block (ggml's `type_traits` table).
#[rustfmt::skip]
const TYPES: [(u32, GgmlType, u64, u64); 32] = {
    use GgmlType::*;
    [
        (0, F32, 1, 4), (1, F16, 1, 2), (2, Q4_0, 32, 18), (3, Q4_1, 32, 20),
        (6, Q5_0, 32, 22), (7, Q5_1, 32, 24), (8, Q8_0, 32, 34), (9, Q8_1, 32, 36),
        (10, Q2_K, 256, 84), (11, Q3_K, 256, 110), (12, Q4_K, 256, 144), (13, Q5_K, 256, 176),
        (14, Q6_K, 256, 210), (15, Q8_K, 256, 292),
        (16, IQ2_XXS, 256, 66), (17, IQ2_XS, 256, 74), (18, IQ3_XXS, 256, 98), (19, IQ1_S, 256, 50),
        (20, IQ4_NL, 32, 18), (21, IQ3_S, 256, 110), (22, IQ2_S, 256, 82), (23, IQ4_XS, 256, 136),
        (24, I8, 1, 1), (25, I16, 1, 2), (26, I32, 1, 4), (27, I64, 1, 8), (28, F64, 1, 8),
        (29, IQ1_M, 256, 56), (30, BF16, 1, 2), (34, TQ1_0, 256, 54), (35, TQ2_0, 256, 66),
        (39, MXFP4, 32, 17),
    ]
};

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.0 == id).map(|t| t.1)
    }

    pub fn id(self) -> u32 {
        self.entry().0
    }

    /// Elements per block (1 for plain types).
    pub fn block_len(self) -> u64 {
        self.entry().2
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.entry().3
    }

    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16) || QType::from_ggml(self).is_some()
    }

    fn entry(self) -> (u32, GgmlType, u64, u64) {
        // Every variant is in TYPES; the test `every_type_has_a_table_entry` keeps it so.
        *TYPES.iter().find(|t| t.1 == self).expect("GgmlType missing from TYPES")
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest, so a row-major `[rows, cols]` tensor
    /// has dims `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute position of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in row-major (Hugging Face / PyTorch) order: the dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    pub alignment: u64,
    /// In file order.
    pub metadata: Vec<(String, Value)>,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    meta_index: HashMap<String, usize>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mmap = crate::model::map_file(path)?;
        let parsed = parse(&mmap, path)?;
        // Metadata and tokenizer arrays are parsed into owned values now.
        let data_start = parsed.tensors.iter().map(|t| t.offset as usize).min().unwrap_or(mmap.len());
        crate::model::release_copied(&mmap, &mmap[..data_start]);
        let meta_index = parsed.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version: parsed.version,
            alignment: parsed.alignment,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            meta_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.mmap[t.offset as usize..(t.offset + t.n_bytes) as usize]
    }

    /// Says `t`'s bytes were copied out (`model::release_copied`).
    pub fn copied(&self, t: &TensorInfo) {
        crate::model::release_copied(&self.mmap, self.tensor_bytes(t));
    }

    /// The tensor dequantized to f32, in row-major order of [`TensorInfo::shape`].
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let mut out = vec![0f32; t.n_elements() as usize];
        dequantize(t.ty, self.tensor_bytes(t), &mut out).map_err(|msg| Error::tensor(&t.name, msg))?;
        Ok(out)
    }

    pub fn format_err(&self, msg: impl Into<String>) -> Error {
        Error::format(&self.path, msg)
    }

    /// Typed metadata lookups whose errors name the key and the file.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.opt_typed(key, "a non-negative integer", Value::as_u64)
    }
    pub fn req_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.opt_typed(key, "a number", Value::as_f64)
    }
    pub fn req_f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.opt_typed(key, "a string", Value::as_str)
    }
    pub fn req_str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt_typed(key, "a bool", Value::as_bool)
    }
    pub fn opt_array(&self, key: &str) -> Result<Option<&[Value]>> {
        self.opt_typed(key, "an array", Value::as_array)
    }

    fn opt_typed<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => get(v).map(Some).ok_or_else(|| {
                self.format_err(format!("metadata `{key}` must be {what}, found a {}", v.type_name()))
            }),
        }
    }

    fn missing(&self, key: &str) -> Error {
        self.format_err(format!("missing metadata `{key}`"))
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

struct Parsed {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

fn parse(buf: &[u8], path: &Path) -> Result<Parsed> {
    let mut r = Reader { buf, pos: 0, path };
    let magic = r.take(4, "the magic number")?;
    if magic != MAGIC {
        return Err(
            r.err(format!("not a GGUF file (it starts with \"{}\", not \"GGUF\")", magic.escape_ascii()))
        );
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(r.err("GGUF version 1 is not supported (only versions 2 and 3)")),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(r.err("big-endian GGUF files are not supported"))
        }
        v => return Err(r.err(format!("unsupported GGUF version {v} (only versions 2 and 3)"))),
    }
    // Smallest possible encodings: a tensor info is a name length, n_dims, type and
    // offset (24 bytes); a KV is a key length, a type and a one-byte value (13 bytes).
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    r.check_count(n_kv, 13, "metadata entries")?;

    let mut metadata = Vec::new();
    let mut seen = HashMap::new();
    for i in 0..n_kv {
        let key = r.string(&format!("the key of metadata entry {i}"))?;
        let what = format!("metadata `{key}`");
        let ty = r.u32(&what)?;
        let value = r.value(ty, &what, 0)?;
        if seen.insert(key.clone(), ()).is_some() {
            return Err(r.err(format!("duplicate metadata key `{key}`")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(r.err(format!("`general.alignment` must be a power-of-two u32, found {v:?}")))
        }
    };

    r.check_count(n_tensors, 24, "tensors")?;
    let mut infos = Vec::new();
    let mut names = HashMap::new();
    for i in 0..n_tensors {
        let name = r.string(&format!("the name of tensor {i}"))?;
        let what = format!("tensor `{name}`");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(
                r.err(format!("tensor `{name}` has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"))
            );
        }
        let dims = (0..n_dims).map(|_| r.u64(&what)).collect::<Result<Vec<_>>>()?;
        let type_id = r.u32(&what)?;
        let ty = GgmlType::from_id(type_id)
            .ok_or_else(|| r.err(format!("unknown ggml type id {type_id} for tensor `{name}`")))?;
        let offset = r.u64(&what)?;
        if names.insert(name.clone(), ()).is_some() {
            return Err(r.err(format!("duplicate tensor name `{name}`")));
        }
        infos.push((name, dims, ty, offset));
    }

    let data_start = r.pos.next_multiple_of(alignment as usize) as u64;
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ty, rel) in infos {
        let n_bytes = tensor_size(&dims, ty).map_err(|msg| r.err(format!("tensor `{name}`: {msg}")))?;
        if rel % alignment != 0 {
            return Err(r.err(format!(
                "tensor `{name}`: data offset {rel} is not a multiple of the alignment {alignment}"
            )));
        }
        let start = data_start.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => {
                tensors.push(TensorInfo { name, dims, ty, offset: start, n_bytes })
            }
            _ => {
                return Err(r.err(format!(
                    "tensor `{name}`: data ({n_bytes} bytes at offset {rel} of the data section, which starts at byte {data_start}) lies beyond the end of the file ({file_len} bytes)"
                )))
            }
        }
    }
    Ok(Parsed { version, alignment, metadata, tensors })
}

fn tensor_size(dims: &[u64], ty: GgmlType) -> Result<u64, String> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as u64 / 4)
        .ok_or_else(|| format!("absurd dimensions {dims:?}"))?;
    if dims[0] % ty.block_len() != 0 {
        return Err(format!(
            "first dimension {} is not a multiple of the {ty} block size {}",
            dims[0],
            ty.block_len()
        ));
    }
    Ok(n / ty.block_len() * ty.block_bytes())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, msg)
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!(
                "truncated at byte {} while reading {what} (needs {n} bytes, {left} left)",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Refuses counts that could not fit in the rest of the file, before anything is
    /// allocated for them.
    fn check_count(&self, count: u64, min_bytes_each: u64, what: &str) -> Result<()> {
        let left = (self.buf.len() - self.pos) as u64;
        if count > left / min_bytes_each {
            return Err(self.err(format!(
                "the file claims {count} {what} at byte {}, but only {left} bytes are left (truncated or corrupt)",
                self.pos
            )));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("{what} (a string at byte {at}) is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(what)?),
            1 => Value::I8(self.u8(what)? as i8),
            2 => Value::U16(self.u16(what)?),
            3 => Value::I16(self.u16(what)? as i16),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(self
                        .err(format!("{what}: bool byte {b} at byte {} is neither 0 nor 1", self.pos - 1)))
                }
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(self.err(format!("{what}: arrays nested more than {MAX_ARRAY_NESTING} deep")));
                }
                let elem_ty = self.u32(what)?;
                let len = self.u64(what)?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.err(format!("{what}: unknown array element type {t}"))),
                };
                self.check_count(len, min_size, &format!("elements in {what}"))?;
                let items = (0..len).map(|_| self.value(elem_ty, what, depth + 1)).collect::<Result<_>>()?;
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            t => return Err(self.err(format!("{what}: unknown value type {t} at byte {}", self.pos - 4))),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Dequantization: plain float types here, block-quantized ones as `model::quant` defines.

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantizes whole blocks of `ty` from `data` into `out` (one element per output
/// value). Errors name the type when it is not supported or the lengths disagree.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    if !ty.can_dequantize() {
        return Err(format!("ggml type {ty} is not supported (supported: {SUPPORTED})"));
    }
    let (bl, bb) = (ty.block_len() as usize, ty.block_bytes() as usize);
    if data.len() % bb != 0 || data.len() / bb * bl != out.len() {
        return Err(format!(
            "{} bytes of {ty} do not hold {} elements ({bl} per {bb}-byte block)",
            data.len(),
            out.len()
        ));
    }
    if let Some(q) = QType::from_ggml(ty) {
        crate::model::quant::dequantize(q, data, out);
        return Ok(());
    }
    let blocks = data.chunks_exact(bb).zip(out.chunks_exact_mut(bl));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes(b.try_into().unwrap())),
        GgmlType::F16 => blocks.for_each(|(b, o)| o[0] = f16_at(b, 0)),
        GgmlType::BF16 => {
            blocks.for_each(|(b, o)| o[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        }
        _ => unreachable!("can_dequantize() admitted {ty}"),
    }
    Ok(())
}

/// The types `dequantize` reads, for messages.
pub const SUPPORTED: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K, Q6_K";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_table_entry() {
        for (id, ty, _, _) in TYPES {
            assert_eq!(GgmlType::from_id(id), Some(ty));
            assert_eq!(ty.id(), id);
        }
    }
}
