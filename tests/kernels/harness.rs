//! What every kernel test shares: the GPU (or the PTX emulator), poisoned outputs,
//! bf16-exact inputs, and the comparison.

use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::Backend;

pub use crate::common::{assert_close, rand_vec, BF16_TOL, F32_TOL};

/// The GPU, or the PTX emulator where there is none (never a skip).
pub fn gpu(test: &str) -> Option<CudaBackend> {
    Some(crate::common::cuda(test))
}

/// A tensor of `len` NaNs, so an output element the kernel forgot to write fails.
pub fn poisoned<B: Backend>(b: &B, len: usize) -> B::Tensor {
    b.tensor_from(&vec![f32::NAN; len])
}

/// Values rounded to bf16, so that a bf16 copy on the GPU holds exactly what the CPU
/// reference computes with.
pub fn bf16_exact(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect()
}

/// Fails with the first mismatches when `got` is not within `tol` of `want`.
pub fn check<B: Backend>(what: &str, b: &B, got: &B::Tensor, want: &[f32], tol: f64) {
    let got = b.to_host(got);
    b.check().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: output length");
    assert_close(what, &got, want, tol);
}
