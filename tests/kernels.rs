//! The cross-backend kernel table: every op of the CUDA backend against the CPU
//! reference on fresh random inputs at awkward sizes, outputs poisoned with NaN before
//! each run. One file per kernel family under tests/kernels/. Without a GPU every test
//! prints why it was skipped.

mod common;

#[path = "kernels/harness.rs"]
mod harness;

#[path = "kernels/attention.rs"]
mod attention;
#[path = "kernels/embed.rs"]
mod embed;
#[path = "kernels/gemm.rs"]
mod gemm;
#[path = "kernels/kv.rs"]
mod kv;
#[path = "kernels/mlp.rs"]
mod mlp;
#[path = "kernels/power_flow.rs"]
mod power_flow;
#[path = "kernels/ptx.rs"]
mod ptx;
#[path = "kernels/quant.rs"]
mod quant;
#[path = "kernels/rmsnorm.rs"]
mod rmsnorm;
#[path = "kernels/rope.rs"]
mod rope;
#[path = "kernels/router.rs"]
mod router;
#[path = "kernels/sampling.rs"]
mod sampling;
