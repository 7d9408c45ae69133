//! Memory-mapped safetensors: one file or a sharded `model.safetensors.index.json`.
//!
//! Tensors are looked up by name and checked against the shape the model expects
//! before any data is touched, so a wrong file fails with the tensor's name.
//!
//! A matrix may also be held in one of ggml's block-quantized types, as
//! `import-gguf --keep-types` writes it: dtype U8, shape [rows, bytes per row], and
//! the type named in the header's metadata under `ggml_type:` + the tensor's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::quant::{QType, QuantMatrix, QuantPart};

/// Metadata key prefix naming a U8 tensor's block-quantized type.
pub const GGML_TYPE_KEY: &str = "ggml_type:";

#[cfg(target_endian = "big")]
compile_error!("the safetensors loader copies little-endian data as is");

/// Host-side tensor data owned by the loader. bf16 matrices stay bf16 on every
/// backend; f16 is widened to f32 at load because nothing computes in f16.
#[derive(Clone, Debug)]
pub enum HostData {
    F32(Vec<f32>),
    /// Raw bf16 bits.
    Bf16(Vec<u16>),
    /// A matrix in ggml's block-quantized types, as a GGUF file stores it.
    Quant(crate::model::quant::QuantMatrix),
}

#[derive(Clone, Debug)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        match &self.data {
            HostData::F32(v) => v.len() * 4,
            HostData::Bf16(v) => v.len() * 2,
            HostData::Quant(q) => q.bytes(),
        }
    }
    /// The values as f32 (bf16 widened exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::Bf16(v) => v.iter().map(|&b| bf16_to_f32(b)).collect(),
            HostData::Quant(q) => q.to_f32(),
        }
    }
}

/// How far to trust weight files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip the one pass over every loaded weight that refuses NaN and infinity (which
    /// would otherwise come out as garbage answers, silently). Setting
    /// `PIMOE_TRUST_WEIGHTS=1` in the environment skips it too, for every file.
    pub trust_weights: bool,
}

impl LoadOptions {
    pub(crate) fn scan(self) -> bool {
        !self.trust_weights && std::env::var_os("PIMOE_TRUST_WEIGHTS").is_none_or(|v| v != "1")
    }
}

/// The mapped files of one model and where each tensor lives.
pub struct SafetensorFiles {
    maps: Vec<(PathBuf, Mmap)>,
    /// tensor name -> index into `maps`
    index: HashMap<String, usize>,
    /// U8 tensors that hold blocks of a quantized type.
    quant: HashMap<String, QType>,
    pub options: LoadOptions,
}

impl SafetensorFiles {
    /// Opens `dir/model.safetensors`, or the shards listed in
    /// `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            shard_files(&index_path)?
        } else {
            return Err(Error::format(
                dir,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        };
        Self::open_files(files)
    }

    /// Opens one safetensors file (a router's or T2C head's weights).
    pub fn open_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
            ));
        }
        Self::open_files(vec![path.to_path_buf()])
    }

    fn open_files(files: Vec<PathBuf>) -> Result<Self> {
        let mut maps = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        let mut quant = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let map = super::map_file(&path)?;
            for name in deserialize(&map, &path)?.names() {
                index.insert(name.to_string(), i);
            }
            quant.extend(quant_types(&map, &path)?);
            maps.push((path, map));
        }
        Ok(SafetensorFiles { maps, index, quant, options: LoadOptions::default() })
    }

    /// Weights per stored type (a dtype, or a block type), most first, for reports.
    pub fn type_counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        for st in self.maps.iter().filter_map(|(_, map)| SafeTensors::deserialize(map).ok()) {
            for (name, v) in st.tensors() {
                let elems = v.shape().iter().map(|&d| d as u64).product::<u64>();
                let (ty, n) = match self.quant.get(&name) {
                    Some(q) => (q.to_string(), elems / q.block_bytes() as u64 * q.block_len() as u64),
                    None => (format!("{:?}", v.dtype()), elems),
                };
                match counts.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, c)) => *c += n,
                    None => counts.push((ty, n)),
                }
            }
        }
        counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        counts
    }

    /// Whether any tensor is held block-quantized.
    pub fn has_quant(&self) -> bool {
        !self.quant.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Loads `name`, checking its shape; f16 is widened to f32.
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Error::tensor(name, "missing from the safetensors file(s)"))?;
        let (path, map) = &self.maps[i];
        let st = deserialize(map, path)?;
        let view = st.tensor(name).map_err(|e| Error::tensor(name, e.to_string()))?;
        if let (Dtype::U8, Some(&ty)) = (view.dtype(), self.quant.get(name)) {
            let t = self.load_quant(name, shape, ty, view.shape(), view.data());
            super::release_copied(map, view.data());
            return t;
        }
        if view.shape() != shape {
            return Err(Error::tensor(
                name,
                format!("has shape {:?}, the config implies {:?}", view.shape(), shape),
            ));
        }
        let bytes = view.data();
        // safetensors is little-endian like every host we build for (see the
        // compile_error at the top), so loading is a copy; pod_collect_to_vec copies
        // through an aligned buffer because tensor offsets need not be aligned.
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(bytemuck::pod_collect_to_vec(bytes)),
            Dtype::BF16 => HostData::Bf16(bytemuck::pod_collect_to_vec(bytes)),
            Dtype::F16 => HostData::F32(
                bytemuck::pod_collect_to_vec::<u8, u16>(bytes)
                    .into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect(),
            ),
            other => {
                return Err(Error::tensor(
                    name,
                    format!(
                        "has dtype {other:?}; supported are F32, F16, BF16, and U8 blocks whose \
                         ggml type the metadata names (`import-gguf --keep-types`)"
                    ),
                ))
            }
        };
        super::release_copied(map, bytes);
        if self.options.scan() {
            match &data {
                HostData::F32(v) => check_finite(name, shape, v.len(), |i| v[i] as f64)?,
                HostData::Bf16(v) => check_finite(name, shape, v.len(), |i| bf16_to_f32(v[i]) as f64)?,
                HostData::Quant(_) => unreachable!("safetensors holds no quantized tensors"),
            }
        }
        Ok(HostTensor { name: name.to_string(), shape: shape.to_vec(), data })
    }

    /// A matrix of `shape` stored as rows of `ty` blocks.
    fn load_quant(
        &self,
        name: &str,
        shape: &[usize],
        ty: QType,
        stored: &[usize],
        bytes: &[u8],
    ) -> Result<HostTensor> {
        let &[rows, cols] = shape else {
            return Err(Error::tensor(
                name,
                format!("is stored as {ty} blocks, but the config implies shape {shape:?}, not a matrix"),
            ));
        };
        let row_bytes = ty
            .row_bytes(cols)
            .ok_or_else(|| Error::tensor(name, format!("{cols} columns are not whole {ty} blocks")))?;
        if stored != [rows, row_bytes] {
            return Err(Error::tensor(
                name,
                format!(
                    "holds {ty} blocks of shape {stored:?}; the config's [{rows}, {cols}] needs [{rows}, {row_bytes}] bytes"
                ),
            ));
        }
        let q = QuantMatrix { cols, parts: vec![QuantPart { ty, rows, data: bytes.to_vec() }] };
        if self.options.scan() {
            check_finite_quant(name, &q)?;
        }
        Ok(HostTensor { name: name.to_string(), shape: shape.to_vec(), data: HostData::Quant(q) })
    }

    /// Bytes of tensor data over all files.
    pub fn tensor_bytes(&self) -> usize {
        self.maps
            .iter()
            .filter_map(|(_, map)| SafeTensors::deserialize(map).ok())
            .map(|st| st.tensors().iter().map(|(_, v)| v.data().len()).sum::<usize>())
            .sum()
    }
}

fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Refuses the first NaN or infinity among `len` values, naming the tensor and where
/// the value sits; one parallel pass, so cheap next to reading the file.
pub(crate) fn check_finite(
    name: &str,
    shape: &[usize],
    len: usize,
    value: impl Fn(usize) -> f64 + Sync,
) -> Result<()> {
    // Whole chunks per task: a parallel search per element spends ~10 ns of rayon
    // bookkeeping on each one (1.7 s of a 134 M-parameter F32 load on two cores).
    const CHUNK: usize = 1 << 16;
    let bad = |i: usize| !value(i).is_finite();
    let Some(chunk) = (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .position_first(|c| (c * CHUNK..len.min((c + 1) * CHUNK)).any(bad))
    else {
        return Ok(());
    };
    let Some(i) = (chunk * CHUNK..len).find(|&i| bad(i)) else { return Ok(()) };
    let mut at = vec![0; shape.len()];
    let mut rest = i;
    for (a, &d) in at.iter_mut().zip(shape).rev() {
        *a = rest % d.max(1);
        rest /= d.max(1);
    }
    Err(Error::tensor(
        name,
        format!(
            "element {i} (index {at:?} of shape {shape:?}) is {}; weights must be finite \
             (PIMOE_TRUST_WEIGHTS=1 skips this check)",
            value(i)
        ),
    ))
}

/// Refuses NaN or infinity in the values a quantized matrix's scales and quants make,
/// row by row, so that a bad row is found without widening the whole matrix.
pub(crate) fn check_finite_quant(name: &str, q: &QuantMatrix) -> Result<()> {
    let bad = (0..q.rows()).into_par_iter().find_first(|&r| {
        let (ty, bytes) = q.row(r);
        let mut row = vec![0f32; q.cols];
        crate::model::quant::dequantize(ty, bytes, &mut row);
        row.iter().any(|x| !x.is_finite())
    });
    match bad {
        Some(r) => Err(Error::tensor(
            name,
            format!("row {r} holds NaN or infinity (a scale or value of its blocks); the file is corrupt (--trust-weights skips this check)"),
        )),
        None => Ok(()),
    }
}

/// The block-quantized types a file's metadata names, by tensor.
fn quant_types(map: &[u8], path: &Path) -> Result<HashMap<String, QType>> {
    let (_, meta) = SafeTensors::read_metadata(map).map_err(|e| Error::format(path, e.to_string()))?;
    let mut out = HashMap::new();
    for (key, value) in meta.metadata().iter().flatten() {
        let Some(name) = key.strip_prefix(GGML_TYPE_KEY) else { continue };
        let ty = QType::ALL.into_iter().find(|t| t.to_string() == *value).ok_or_else(|| {
            Error::tensor(
                name,
                format!("{}: the metadata names ggml type `{value}`, which is not one we compute with (supported: {})",
                    path.display(), QType::ALL.map(|t| t.to_string()).join(", ")),
            )
        })?;
        out.insert(name.to_string(), ty);
    }
    Ok(out)
}

/// The safetensors view of a mapped file. The crate's errors for a bad header
/// ("invalid info", "validation overflow") do not say which tensor, so on failure the
/// header is read again to name the first tensor at fault.
pub(crate) fn deserialize<'a>(map: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(map).map_err(|e| {
        let msg = match header_fault(map) {
            Some(fault) => format!("not a valid safetensors file: {fault}"),
            None => format!("not a valid safetensors file: {e}"),
        };
        Error::format(path, msg)
    })
}

fn header_fault(map: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(map.get(..8)?.try_into().ok()?)).ok()?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(map.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = map.len() - 8 - n;
    let mut tensors: Vec<(String, TensorInfo)> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, v)| Some((name, serde_json::from_value(v).ok()?)))
        .collect::<Option<_>>()?;
    tensors.sort_by_key(|(_, t)| t.data_offsets);
    tensors.iter().find_map(|(name, t)| {
        let (s, e) = t.data_offsets;
        let bytes =
            t.shape.iter().try_fold(t.dtype.bitsize(), |acc, &d| acc.checked_mul(d)).map(|bits| bits / 8);
        match bytes {
            None => Some(format!("tensor `{name}`: shape {:?} of {:?} overflows", t.shape, t.dtype)),
            Some(_) if e > data_len || s > e => Some(format!(
                "tensor `{name}`: data_offsets [{s}, {e}] lie outside the {data_len} bytes of data"
            )),
            Some(b) if b != e - s => Some(format!(
                "tensor `{name}`: shape {:?} of {:?} is {b} bytes, its data_offsets [{s}, {e}] hold {}",
                t.shape,
                t.dtype,
                e - s
            )),
            Some(_) => None,
        }
    })
}

fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(index_path, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(index_path, "missing object `weight_map`"))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        // A shard is a file next to the index: a path elsewhere ("../..", "/etc/...")
        // is not one a model directory holds.
        let file = file
            .as_str()
            .filter(|f| Path::new(f).file_name() == Some(std::ffi::OsStr::new(f)))
            .ok_or_else(|| {
                Error::format(
                    index_path,
                    format!(
                        "weight_map entry for `{tensor}` is not a file name in the model directory: {file}"
                    ),
                )
            })?;
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::check_finite;

    #[test]
    fn check_finite_names_the_first_bad_value_across_chunks() {
        let mut v = vec![1f32; 3 * (1 << 16) + 7];
        assert!(check_finite("w", &[v.len()], v.len(), |i| v[i] as f64).is_ok());
        // Bad values in the last (partial) chunk and in a middle chunk, before and
        // after a chunk boundary: the earliest is reported, whichever task finds it.
        let last = v.len() - 1;
        v[last] = f32::INFINITY;
        v[(1 << 16) + 1] = f32::NAN;
        v[2 << 16] = f32::NEG_INFINITY;
        let shape = [v.len() / 5, 5];
        let e = check_finite("w", &shape, v.len(), |i| v[i] as f64).unwrap_err().to_string();
        assert!(e.contains("element 65537 (index [13107, 2] of shape [39323, 5]) is NaN"), "{e}");
        v[(1 << 16) + 1] = 0.0;
        let e = check_finite("w", &shape, v.len(), |i| v[i] as f64).unwrap_err().to_string();
        assert!(e.contains("element 131072 ") && e.contains("is -inf"), "{e}");
        v[2 << 16] = 0.0;
        let e = check_finite("w", &shape, v.len(), |i| v[i] as f64).unwrap_err().to_string();
        assert!(e.contains(&format!("element {last} ")) && e.contains("is inf"), "{e}");
    }
}
