//! rmsnorm (kernels/rmsnorm.cu) against the CPU, in f32. The norm fused into the
//! decode gemv is tests/kernels/gemm.rs's rmsnorm_matmul test.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};

const ROWS: [usize; 3] = [1, 31, 33];
/// Odd (scalar path), multiples of 4 (float4 path; 64 is 16 float4s, half a warp),
/// real hidden sizes (576, 896), a row past 256 threads' float4s (4096: four per
/// thread), and a long odd row.
const DIMS: [usize; 6] = [31, 64, 576, 896, 4096, 4095];
const EPS: f32 = 1e-6;

struct Inputs {
    x: Vec<f32>,
    w: HostTensor,
}

fn inputs(n: usize, dim: usize) -> Inputs {
    let seed = (n * 10_000 + dim) as u64;
    // Rows of different scales, so that a row mixed up with another shows.
    let mut x = rand_vec(n * dim, seed);
    for (r, row) in x.chunks_mut(dim).enumerate() {
        let s = 0.25 + r as f32 * 0.5;
        row.iter_mut().for_each(|v| *v *= s);
    }
    // Norm weights sit around 1 in real models.
    let w = rand_vec(dim, seed + 2).iter().map(|v| 1.0 + 0.5 * v).collect();
    Inputs { x, w: HostTensor { name: "norm".into(), shape: vec![dim], data: HostData::F32(w) } }
}

fn rmsnorm_on<B: Backend>(b: &B, i: &Inputs, dim: usize) -> B::Tensor {
    let w = b.upload(&i.w).expect("upload the weight");
    let mut out = poisoned(b, i.x.len());
    b.rmsnorm(&mut out, &b.tensor_from(&i.x), &w, dim, EPS);
    out
}

#[test]
fn rmsnorm_matches_cpu() {
    let Some(g) = gpu("rmsnorm_matches_cpu") else { return };
    for &dim in &DIMS {
        for &n in &ROWS {
            let i = inputs(n, dim);
            let want = rmsnorm_on(&CpuBackend, &i, dim);
            let got = rmsnorm_on(&g, &i, dim);
            check(&format!("rmsnorm n={n} dim={dim}"), &g, &got, &want, F32_TOL);
        }
    }
}

/// A row of zeros normalises to zeros (eps keeps the scale finite), not NaN.
#[test]
fn rmsnorm_zero_row_is_finite() {
    let Some(g) = gpu("rmsnorm_zero_row_is_finite") else { return };
    let dim = 896;
    let mut i = inputs(2, dim);
    i.x[..dim].fill(0.0);
    let want = rmsnorm_on(&CpuBackend, &i, dim);
    let got = rmsnorm_on(&g, &i, dim);
    check("rmsnorm with a zero row", &g, &got, &want, F32_TOL);
}
