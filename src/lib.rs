//! pimoe: a Rust + CUDA inference runtime for Physically-isolated Mixture of Experts.
//!
//! The data path, top to bottom (see README.md):
//! tokenizer -> scheduler step -> `llm` forward on a `backend` -> sampling -> PiMoE
//! router / experts. This crate currently holds the model loading, the CPU reference
//! backend and the batched forward pass that the scheduler will drive.

pub mod error;
pub mod model;

pub use error::{Error, Result};
pub mod backend;
pub mod device;
pub mod engine;
pub mod kv;
pub mod llm;
pub mod sampling;

pub use engine::{Engine, Finish, Generation, Prompt, Request};
pub mod bench;
