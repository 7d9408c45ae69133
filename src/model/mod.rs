//! Everything that reads or writes model files: config.json, safetensors, GGUF, tokenizer.

pub mod config;
pub mod fetch;
pub mod gguf;
pub mod import;
pub mod safetensors;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
