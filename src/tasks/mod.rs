//! The computation-reasoning tasks: power-flow questions put to the model, how an
//! answer is read, the router's training data, the evaluation that compares the LLM
//! alone with PiMoE, and the default demo.

pub mod answer;
pub mod demo;
pub mod eval;
pub mod questions;
pub mod router_data;
