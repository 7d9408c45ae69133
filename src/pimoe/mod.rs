//! The PiMoE parts that sit beside the LLM: the router that decides when a span must
//! come from computation, the text-to-computation (T2C) module, and the computation
//! experts themselves (high-precision numerics).

pub mod compose;
pub mod experts;
pub mod format;
pub mod manifest;
pub mod router;
pub mod t2c;
