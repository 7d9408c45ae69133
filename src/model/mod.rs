//! Everything that reads or writes model files: config.json, safetensors, GGUF, tokenizer.

pub mod config;
pub mod fetch;
pub mod gguf;
pub mod gguf_model;
pub mod import;
pub mod quant;
pub mod safetensors;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
pub use safetensors::LoadOptions;

use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// The config of the model at `path`: a directory's config.json, or a GGUF's metadata.
pub fn model_config(path: &Path) -> Result<ModelConfig> {
    if gguf_model::is_gguf(path) {
        Ok(gguf_model::GgufModel::open(path)?.config)
    } else {
        ModelConfig::load(&path.join("config.json"))
    }
}

/// A read-only map of `path`, refusing a directory by name (mapping one fails with
/// "No such device", which names nothing).
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    if path.is_dir() {
        return Err(Error::format(path, "is a directory, not a file"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; a file modified underneath a running process is
    // outside what we can defend against, as for any mmap reader.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}
