//! What a training run leaves: `OUT/NAME.safetensors` with the tensor names the
//! runtime's loaders read, and `OUT/NAME.json`, the manifest fragment (the `router`,
//! `t2c` or `expert` object) whose `weights` is relative to OUT. Each file is written
//! to a temporary name and renamed, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{Map, Value};

use super::float::Float;
use crate::bench::write_atomic;
use crate::error::{Error, Result};

/// One tensor to save.
#[derive(Clone, Debug)]
pub struct TensorOut {
    pub name: String,
    pub shape: Vec<usize>,
    dtype: Dtype,
    bytes: Vec<u8>,
}

impl TensorOut {
    pub fn new<T: Float>(name: String, shape: Vec<usize>, data: &[T]) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}: shape and data differ");
        TensorOut { name, shape, dtype: T::DTYPE, bytes: T::le_bytes(data) }
    }
}

/// Where the files went.
#[derive(Clone, Debug)]
pub struct Written {
    pub weights: PathBuf,
    pub fragment: PathBuf,
}

/// Checks that `name` can be a file name inside OUT.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(Error::Request(format!("--name {name:?} must be a plain file name (no directories)")));
    }
    Ok(())
}

/// Checks the name and makes the output directory before a run starts, so that a
/// long run does not fail at its end.
pub fn prepare(files: &super::Files) -> Result<()> {
    check_name(&files.name)?;
    std::fs::create_dir_all(&files.out).map_err(|e| Error::io(&files.out, e))
}

/// Writes the weights, then the fragment with `"weights": "NAME.safetensors"` added.
pub fn write(
    out: &Path,
    name: &str,
    tensors: &[TensorOut],
    mut fragment: Map<String, Value>,
) -> Result<Written> {
    check_name(name)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let file = format!("{name}.safetensors");
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::tensor(&t.name, format!("cannot be saved: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Request(format!("cannot serialise the weights: {e}")))?;
    let weights = out.join(&file);
    write_atomic(&weights, &bytes)?;
    fragment.insert("weights".into(), Value::String(file));
    let text = serde_json::to_string_pretty(&Value::Object(fragment)).expect("a JSON value serialises");
    let path = out.join(format!("{name}.json"));
    write_atomic(&path, format!("{text}\n").as_bytes())?;
    Ok(Written { weights, fragment: path })
}
