//! swiglu (kernels/mlp.cu) against the CPU, in f32. Same formula on both sides; only
//! expf differs (CUDA's is within 2 ulp, glibc's within 1), far inside F32_TOL.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::Backend;

const ROWS: [usize; 3] = [1, 31, 33];
/// Odd (scalar path), multiples of 4 (float4 path), and real intermediate sizes
/// (SmolLM2-135M's 1536, Qwen2.5-0.5B's 4864).
const INTERS: [usize; 6] = [31, 64, 896, 1536, 4095, 4864];

fn swiglu_on<B: Backend>(b: &B, gate_up: &[f32], inter: usize) -> B::Tensor {
    let mut out = poisoned(b, gate_up.len() / 2);
    b.swiglu(&mut out, &b.tensor_from(gate_up), inter);
    out
}

#[test]
fn swiglu_matches_cpu() {
    let Some(g) = gpu("swiglu_matches_cpu") else { return };
    for &inter in &INTERS {
        for &n in &ROWS {
            // Gates in [-12, 12): silu's negative tail, its bend and its linear part.
            let mut gate_up = rand_vec(n * 2 * inter, (n * 10_000 + inter) as u64);
            for row in gate_up.chunks_mut(2 * inter) {
                row[..inter].iter_mut().for_each(|v| *v *= 12.0);
            }
            let want = swiglu_on(&CpuBackend, &gate_up, inter);
            let got = swiglu_on(&g, &gate_up, inter);
            check(&format!("swiglu n={n} inter={inter}"), &g, &got, &want, F32_TOL);
        }
    }
}

/// Very negative gates (exp overflows to inf) give -0 * up = 0, not NaN.
#[test]
fn swiglu_saturates() {
    let Some(g) = gpu("swiglu_saturates") else { return };
    let inter = 64;
    let mut gate_up = rand_vec(2 * inter, 5);
    gate_up[..inter].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { -100.0 } else { 100.0 });
    let want = swiglu_on(&CpuBackend, &gate_up, inter);
    let got = swiglu_on(&g, &gate_up, inter);
    check("swiglu with saturated gates", &g, &got, &want, F32_TOL);
}
