//! Launcher for kernels/rmsnorm.cu: RMSNorm (decode's norms are fused into the gemv:
//! gemm::rmsnorm_matmul).
//! CPU twin: backend/cpu/rmsnorm.rs.

use super::{Arg, CudaBackend, CudaTensor, CudaWeight, Grid};

const MODULE: &str = "rmsnorm";

/// One block per row: one warp up to 128 elements (in float4s), growing with the row
/// to 256 threads. Any multiple of 32 is correct, but for dim % 4 == 0 this must be
/// rmsnorm.cuh's `rms_threads`, which the fused gemv sums with: that keeps its normed
/// x rmsnorm_f32's bits.
fn row_threads(dim: usize) -> u32 {
    let units = if dim % 4 == 0 { dim / 4 } else { dim };
    (units.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// The rows of x, after checking the shapes every variant shares; None after
/// failing the backend.
fn rows(
    b: &CudaBackend,
    op: &str,
    out: &CudaTensor,
    x: &CudaTensor,
    w: &CudaWeight,
    dim: usize,
) -> Option<usize> {
    let fail = |msg: String| {
        b.fail(format!("{op}: {msg}"));
        None
    };
    if dim == 0 || dim > u32::MAX as usize {
        return fail(format!("dim {dim} out of range"));
    }
    if w.is_matrix() || w.cols != dim {
        return fail(format!("weight is ({}, {}), expected an f32 vector of {dim}", w.rows, w.cols));
    }
    if x.len % dim != 0 {
        return fail(format!("x holds {} elements, not a multiple of dim {dim}", x.len));
    }
    let n = x.len / dim;
    if out.len < x.len {
        return fail(format!("out holds {} elements, x has {}", out.len, x.len));
    }
    if n > i32::MAX as usize {
        return fail(format!("{n} rows exceed the grid"));
    }
    Some(n)
}

/// out (n, dim) = rmsnorm(x (n, dim)) * w (dim), n = x.len / dim.
///
/// Preconditions (checked): w is an f32 vector of dim, x.len a multiple of dim, out
/// at least as long as x. out and x are distinct tensors (the borrows say so).
pub fn rmsnorm(b: &CudaBackend, out: &mut CudaTensor, x: &CudaTensor, w: &CudaWeight, dim: usize, eps: f32) {
    let Some(n) = rows(b, "rmsnorm", out, x, w, dim) else { return };
    if n == 0 {
        return;
    }
    // SAFETY: rmsnorm_f32(out, x, w, dim, eps): grid (n) reads x[0..n * dim] and
    // w[0..dim] (an f32 vector of dim) and writes out[0..n * dim], all checked above.
    b.launch(
        MODULE,
        "rmsnorm_f32",
        Grid::new(n as u32, row_threads(dim), 0),
        &[Arg::from(&*out), Arg::from(x), Arg::from(w), Arg::from(dim as u32), Arg::from(eps)],
    );
}
