//! A GGUF file opened as a model, without importing it: the config and tokenizer come
//! from its metadata (as `import-gguf` writes them), and every matrix stays in the type
//! the file stores (Q4_K, Q6_K, Q8_0, ...), so a quantized model runs in about the
//! memory it takes on disk. Plain float tensors are read as the safetensors loader
//! reads them: f32 and bf16 as they are, f16 widened to f32.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::gguf::{GgmlType, GgufFile};
use crate::model::import::{check_embedding, config_from_gguf, plan_tensor, tokenizer_json, unpermute_rows};
use crate::model::quant::{QType, QuantMatrix, QuantPart};
use crate::model::safetensors::{check_finite, check_finite_quant, HostData, HostTensor};
use crate::model::tokenizer::Tokenizer;
use crate::model::{LoadOptions, ModelConfig};

pub struct GgufModel {
    pub file: GgufFile,
    pub config: ModelConfig,
    /// Hugging Face name -> (index into file.tensors, q/k head count to un-permute by).
    names: HashMap<String, (usize, Option<usize>)>,
}

/// Whether `path` names a GGUF file (by its magic, so the extension does not matter).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == b"GGUF"
}

impl GgufModel {
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = config_from_gguf(&file)?;
        check_embedding(&file, &config)?;
        let mut names = HashMap::with_capacity(file.tensors.len());
        for (i, info) in file.tensors.iter().enumerate() {
            let (hf, heads) = plan_tensor(info, &config)?;
            names.insert(hf, (i, heads));
        }
        Ok(GgufModel { file, config, names })
    }

    /// The tokenizer its metadata describes.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let json = serde_json::to_vec(&tokenizer_json(&self.file)?).expect("JSON values always serialize");
        Tokenizer::from_bytes(&json, &self.file.path().display().to_string())
    }

    /// Bytes of all tensor data in the file: what the weights take once loaded.
    pub fn tensor_bytes(&self) -> usize {
        self.file.tensors.iter().map(|t| self.file.tensor_bytes(t).len()).sum()
    }

    /// Weights per stored type, for reports (`pimoe info`).
    pub fn type_counts(&self) -> Vec<(GgmlType, u64)> {
        let mut counts: Vec<(GgmlType, u64)> = Vec::new();
        for t in &self.file.tensors {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += t.n_elements(),
                None => counts.push((t.ty, t.n_elements())),
            }
        }
        counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        counts
    }

    /// The tensor a model of `config` calls `name`, of `shape`, in its stored type.
    pub fn tensor(&self, name: &str, shape: &[usize], options: LoadOptions) -> Result<HostTensor> {
        let &(i, heads) = self
            .names
            .get(name)
            .ok_or_else(|| Error::tensor(name, format!("missing from {}", self.file.path().display())))?;
        let info = &self.file.tensors[i];
        if info.shape() != shape {
            return Err(Error::tensor(
                &info.name,
                format!("has shape {:?}, the model's metadata implies {shape:?}", info.shape()),
            ));
        }
        let bytes = self.file.tensor_bytes(info);
        let data = match QType::from_ggml(info.ty) {
            Some(ty) => {
                let [rows, cols] = shape[..] else {
                    return Err(Error::tensor(&info.name, format!("is {} but not a matrix", info.ty)));
                };
                let row_bytes = ty.row_bytes(cols).ok_or_else(|| {
                    Error::tensor(&info.name, format!("{cols} columns are not whole {ty} blocks"))
                })?;
                let mut data = bytes.to_vec();
                if let Some(heads) = heads {
                    data = unpermute_rows(&data, heads, rows / heads, row_bytes);
                }
                HostData::Quant(QuantMatrix { cols, parts: vec![QuantPart { ty, rows, data }] })
            }
            None => {
                let mut values = vec![0f32; shape.iter().product()];
                crate::model::gguf::dequantize(info.ty, bytes, &mut values)
                    .map_err(|msg| Error::tensor(&info.name, msg))?;
                if let Some(heads) = heads {
                    let (rows, cols) = (shape[0], shape[1]);
                    let raw: &[u8] = bytemuck::cast_slice(&values);
                    values =
                        bytemuck::pod_collect_to_vec(&unpermute_rows(raw, heads, rows / heads, cols * 4));
                }
                match info.ty {
                    GgmlType::BF16 => {
                        HostData::Bf16(values.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect())
                    }
                    _ => HostData::F32(values),
                }
            }
        };
        self.file.copied(info);
        let t = HostTensor { name: name.to_string(), shape: shape.to_vec(), data };
        if options.scan() {
            check_finite_tensor(&info.name, &t)?;
        }
        Ok(t)
    }
}

/// Refuses NaN or infinity anywhere in `t` (for quantized tensors, in the values its
/// scales and quants make), naming the GGUF tensor.
fn check_finite_tensor(gguf_name: &str, t: &HostTensor) -> Result<()> {
    match &t.data {
        HostData::F32(v) => check_finite(gguf_name, &t.shape, v.len(), |i| v[i] as f64),
        HostData::Bf16(v) => {
            check_finite(gguf_name, &t.shape, v.len(), |i| f32::from_bits((v[i] as u32) << 16) as f64)
        }
        HostData::Quant(q) => check_finite_quant(gguf_name, q),
    }
}
