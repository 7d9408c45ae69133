//! pimoe: a Rust + CUDA inference runtime for Physically-isolated Mixture of Experts.
//!
//! The data path, top to bottom (see README.md):
//! tokenizer -> scheduler step -> `llm` forward on a `backend` -> sampling -> PiMoE
//! router / experts. This crate currently holds the model loading, the CPU reference
//! backend and the batched forward pass that the scheduler will drive.

pub mod backend;
pub mod bench;
pub mod device;
pub mod engine;
pub mod error;
mod ffi;
pub mod grid;
pub mod kv;
pub mod llm;
pub mod model;
pub mod pimoe;
pub mod sampling;
pub mod scheduler;
pub mod serve;
pub mod tasks;
pub mod train;

pub use engine::{Answer, AnswerToken, Engine, Finish, Generation, Prompt, Request};
pub use error::{Error, Result};
