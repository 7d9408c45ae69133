//! The computation-reasoning tasks: power-flow questions put to the model, how an
//! answer is read, and the evaluation that compares the LLM alone with PiMoE.

pub mod answer;
