//! matmul (kernels/gemm.cu) against the CPU reference, over every path the launcher
//! can pick: the gemv for m <= 16 (buckets 1, 2, 4, 8, 16), the tensor-core GEMM with
//! 64- and 128-row tiles, and the unaligned GEMM for k % 8 != 0, with sizes that are
//! not multiples of any tile (m, n, k = 31, 33, 4095, 257, ...), with and without bias.
//!
//! Tolerance: weights are bf16-exact, so both sides multiply the same weights; what
//! differs is x, which the tensor-core path rounds to bf16 (relative error at most
//! 2^-9 per element, uniformly spread, standard deviation about 2^-9 / sqrt(3) =
//! 1.1e-3), and the order of the f32 sums (~1e-6). Each output is a sum of k terms
//! x_i w_i, each perturbed by an independent relative error d_i, so its error is
//! sum x_i w_i d_i, whose size is about 1.1e-3 * sqrt(sum (x_i w_i)^2). For random
//! signs the output itself is of size sqrt(sum (x_i w_i)^2), so the relative error of
//! the whole output, ||out - ref|| / ||ref||, is about 1.1e-3 (a numpy run of this
//! rounding at the smallest shapes, where it varies most, gave at most 2.6e-3 over 240
//! draws): BF16_TOL (1e-2) holds with room to spare, while an index error (a dropped
//! or doubled chunk of 8 of k terms, a wrong row) moves it by sqrt(8 / k) >= 4% even
//! at k = 4864. The gemv keeps x in f32, so there only the sum order differs.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::cuda::{gemm, CudaBackend};
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};

const MS: [usize; 10] = [1, 2, 3, 5, 16, 17, 31, 33, 128, 257];
/// (n, k): odd k (unaligned path), a wide n at small k, and real projection shapes
/// of SmolLM2 (576, 1536) and Qwen2.5-0.5B (896, 1152, 4864). The gemv splits k over
/// 1 (4095 x 64), 2 (576 x 576), 4 (576 x 1536) and 8 (64 x 4864) warps.
const NKS: [(usize, usize); 8] =
    [(33, 31), (4095, 64), (576, 576), (1536, 576), (576, 1536), (896, 896), (1152, 896), (64, 4864)];

fn bf16_matrix(name: &str, rows: usize, cols: usize, seed: u64) -> HostTensor {
    let bits = rand_vec(rows * cols, seed).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    HostTensor { name: name.into(), shape: vec![rows, cols], data: HostData::Bf16(bits) }
}

fn f32_vector(name: &str, len: usize, seed: u64) -> HostTensor {
    HostTensor { name: name.into(), shape: vec![len], data: HostData::F32(rand_vec(len, seed)) }
}

/// out (m, n) = x (m, k) @ w^T + bias on `b`, into a poisoned output of m * n + extra.
fn matmul_on<B: Backend>(
    b: &B,
    x: &[f32],
    w: &B::Weight,
    bias: Option<&B::Weight>,
    m: usize,
    n: usize,
    extra: usize,
) -> B::Tensor {
    let mut out = poisoned(b, m * n + extra);
    b.matmul(&mut out, &b.tensor_from(x), w, bias, m);
    out
}

/// Every m against every (n, k); bias on half of the cases, alternating so that each
/// m and each shape is run both with and without it.
#[test]
fn matmul_matches_cpu() {
    let Some(g) = gpu("matmul_matches_cpu") else { return };
    let cpu = CpuBackend;
    for (si, &(n, k)) in NKS.iter().enumerate() {
        let wt = bf16_matrix("w", n, k, 100 + si as u64);
        let bt = f32_vector("bias", n, 200 + si as u64);
        let (wc, bc) = (cpu.upload(&wt).unwrap(), cpu.upload(&bt).unwrap());
        let (wg, bg) = (g.upload(&wt).unwrap(), g.upload(&bt).unwrap());
        for (mi, &m) in MS.iter().enumerate() {
            let with_bias = (si + mi) % 2 == 0;
            let x = rand_vec(m * k, 1000 + (si * 100 + mi) as u64);
            let want = cpu.to_host(&matmul_on(&cpu, &x, &wc, with_bias.then_some(&bc), m, n, 0));
            let got = matmul_on(&g, &x, &wg, with_bias.then_some(&bg), m, n, 0);
            check(&format!("matmul m {m} n {n} k {k} bias {with_bias}"), &g, &got, &want, BF16_TOL);
        }
    }
}

/// A grid big enough for the 128-row tiles (at least 2 x 132 of them), with m, n and
/// k all off the tile sizes (k = 72 ends in a half-filled k tile); and an output
/// longer than m * n, whose tail must stay untouched.
#[test]
fn matmul_large_tiles_and_longer_output() {
    let Some(g) = gpu("matmul_large_tiles_and_longer_output") else { return };
    let cpu = CpuBackend;
    let (m, n, k, extra) = (300, 16424, 72, 37);
    let wt = bf16_matrix("w", n, k, 7);
    let bt = f32_vector("bias", n, 8);
    let x = rand_vec(m * k, 9);
    let (wc, bc) = (cpu.upload(&wt).unwrap(), cpu.upload(&bt).unwrap());
    let want = cpu.to_host(&matmul_on(&cpu, &x, &wc, Some(&bc), m, n, 0));
    let (wg, bg) = (g.upload(&wt).unwrap(), g.upload(&bt).unwrap());
    let got = g.to_host(&matmul_on(&g, &x, &wg, Some(&bg), m, n, extra));
    g.check().unwrap();
    assert_close("matmul 300 x 16424 x 72", &got[..m * n], &want, BF16_TOL);
    assert!(got[m * n..].iter().all(|v| v.is_nan()), "matmul wrote past m * n");
}

/// The bf16 x bf16 entry: A uploaded as a bf16 matrix, against the CPU matmul of the
/// same (bf16-exact) values, on the gemv (m = 2, 9), the 64-row GEMM (m = 33) and the
/// 128-row GEMM (m = 300, n = 16424), and the unaligned GEMM (k = 31).
#[test]
fn matmul_bf16_matches_cpu() {
    let Some(g) = gpu("matmul_bf16_matches_cpu") else { return };
    let cpu = CpuBackend;
    for &(m, n, k) in &[(2, 576, 576), (9, 1152, 896), (33, 4095, 64), (300, 16424, 72), (17, 33, 31)] {
        let at = bf16_matrix("a", m, k, 11 + m as u64);
        let wt = bf16_matrix("w", n, k, 12 + n as u64);
        let x: Vec<f32> = at.to_f32();
        let want = cpu.to_host(&matmul_on(&cpu, &x, &cpu.upload(&wt).unwrap(), None, m, n, 0));
        let (ag, wg) = (g.upload(&at).unwrap(), g.upload(&wt).unwrap());
        let mut out = poisoned(&g, m * n);
        gemm::matmul_bf16(&g, &mut out, &ag, &wg, m);
        check(&format!("matmul_bf16 m {m} n {n} k {k}"), &g, &out, &want, BF16_TOL);
    }
}

/// Bitwise equality of a device tensor with host values, the backend's error first.
fn same_bits(what: &str, g: &CudaBackend, got: &pimoe::backend::cuda::CudaTensor, want: &[f32]) -> Vec<f32> {
    let got = g.to_host(got);
    g.check().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: output length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} fused, {} from the separate ops", got[i], want[i]);
    }
    got
}

/// matmul_add adds in the epilogue of every variant: the gemv (m 1, 5, 16; k split 1
/// to 4), the 64-row GEMM (m 33), the 128-row GEMM (m 256 over 133 column tiles), the
/// unaligned GEMM (k 31), with odd n (scalar stores) and even n (float2 stores). Each
/// result is the matmul's bits plus one f32 addition of the residual.
#[test]
fn matmul_add_adds_in_the_epilogue() {
    let Some(g) = gpu("matmul_add_adds_in_the_epilogue") else { return };
    let cases = [(1, 896, 896), (5, 33, 72), (16, 576, 1536), (33, 4095, 64), (17, 33, 31), (256, 16900, 8)];
    for (ci, &(m, n, k)) in cases.iter().enumerate() {
        let wg = g.upload(&bf16_matrix("w", n, k, 700 + ci as u64)).unwrap();
        let x = rand_vec(m * k, 710 + ci as u64);
        let product = g.to_host(&matmul_on(&g, &x, &wg, None, m, n, 0));
        let r0: Vec<f32> = rand_vec(m * n, 720 + ci as u64).iter().map(|v| 4.0 * v).collect();
        let (mut residual, mut scratch) = (g.tensor_from(&r0), poisoned(&g, m * n));
        g.matmul_add(&mut residual, &mut scratch, &g.tensor_from(&x), &wg, m);
        let want: Vec<f32> = r0.iter().zip(&product).map(|(r, p)| r + p).collect();
        same_bits(&format!("matmul_add m {m} n {n} k {k}"), &g, &residual, &want);
    }
}

/// The fused swiglu + down projection + residual add (gemv_m*_swiglu_f32_bf16 with
/// accumulate, m <= 16) gives the bits of swiglu_f32, the gemv and an f32 add, for
/// every m bucket and k split, with gates in [-12, 12) (silu's tail, bend and linear
/// part); m = 17 and k % 8 != 0 take the separate kernels. Both against the CPU's
/// ops as matmul is.
#[test]
fn swiglu_matmul_add_is_swiglu_then_matmul_add() {
    let Some(g) = gpu("swiglu_matmul_add_is_swiglu_then_matmul_add") else { return };
    let cpu = CpuBackend;
    for (si, &(n, k)) in [(896, 4864), (576, 1536), (4095, 64), (33, 72), (40, 31)].iter().enumerate() {
        let wt = bf16_matrix("w", n, k, 300 + si as u64);
        let (wc, wg) = (cpu.upload(&wt).unwrap(), g.upload(&wt).unwrap());
        for &m in &[1, 2, 3, 5, 16, 17] {
            let mut gate_up = rand_vec(m * 2 * k, 400 + (si * 100 + m) as u64);
            for row in gate_up.chunks_mut(2 * k) {
                row[..k].iter_mut().for_each(|v| *v *= 12.0);
            }
            let r0 = rand_vec(m * n, 500 + (si * 100 + m) as u64);
            let gu = g.tensor_from(&gate_up);
            let (mut act, mut two) = (poisoned(&g, m * k), poisoned(&g, m * n));
            g.swiglu(&mut act, &gu, k);
            g.matmul(&mut two, &act, &wg, None, m);
            let want: Vec<f32> = r0.iter().zip(g.to_host(&two)).map(|(r, p)| r + p).collect();
            let mut fused = g.tensor_from(&r0);
            let (mut scratch, mut act) = (poisoned(&g, m * n), poisoned(&g, m * k));
            g.swiglu_matmul_add(&mut fused, &mut scratch, &mut act, &gu, &wg, k, m);
            let what = format!("swiglu_matmul_add m {m} n {n} k {k}");
            let fused = same_bits(&what, &g, &fused, &want);
            let mut cpu_res = cpu.tensor_from(&r0);
            let (mut scratch_c, mut act_c) = (cpu.tensor(m * n), cpu.tensor(m * k));
            cpu.swiglu_matmul_add(
                &mut cpu_res,
                &mut scratch_c,
                &mut act_c,
                &cpu.tensor_from(&gate_up),
                &wc,
                k,
                m,
            );
            assert_close(&what, &fused, &cpu_res, BF16_TOL);
        }
    }
}

/// The fused rmsnorm + projection (gemv_m*_rmsnorm_f32_bf16, m <= 16) gives the bits
/// of rmsnorm_f32 then the gemv, for every m bucket, rows summed by one warp (k 72),
/// by 224 threads one float4 each (k 896, Qwen2.5-0.5B's hidden size) and by 256
/// threads with a strided remainder (k 1064) or four float4s each (k 4096), with and
/// without bias, rows of different scales; m = 17 and k % 8 != 0 take the two kernels.
/// Both against the CPU's ops.
#[test]
fn rmsnorm_matmul_is_rmsnorm_then_matmul() {
    let Some(g) = gpu("rmsnorm_matmul_is_rmsnorm_then_matmul") else { return };
    let cpu = CpuBackend;
    let eps = 1e-6;
    for (si, &(n, k)) in [(1152, 896), (33, 72), (40, 1064), (64, 4096), (36, 31)].iter().enumerate() {
        let wt = bf16_matrix("w", n, k, 800 + si as u64);
        let bt = f32_vector("bias", n, 810 + si as u64);
        let nt = HostTensor {
            name: "norm".into(),
            shape: vec![k],
            data: HostData::F32(rand_vec(k, 820 + si as u64).iter().map(|v| 1.0 + 0.5 * v).collect()),
        };
        let (wc, bc, nc) = (cpu.upload(&wt).unwrap(), cpu.upload(&bt).unwrap(), cpu.upload(&nt).unwrap());
        let (wg, bg, ng) = (g.upload(&wt).unwrap(), g.upload(&bt).unwrap(), g.upload(&nt).unwrap());
        for (mi, &m) in [1, 2, 3, 5, 16, 17].iter().enumerate() {
            let mut x = rand_vec(m * k, 830 + (si * 100 + m) as u64);
            for (r, row) in x.chunks_mut(k).enumerate() {
                row.iter_mut().for_each(|v| *v *= 0.25 + r as f32);
            }
            let (bias_g, bias_c) = if (si + mi) % 2 == 0 { (Some(&bg), Some(&bc)) } else { (None, None) };
            let xg = g.tensor_from(&x);
            let (mut xn, mut two) = (poisoned(&g, m * k), poisoned(&g, m * n));
            g.rmsnorm(&mut xn, &xg, &ng, k, eps);
            g.matmul(&mut two, &xn, &wg, bias_g, m);
            let want = g.to_host(&two);
            let (mut fused, mut xn) = (poisoned(&g, m * n), poisoned(&g, m * k));
            g.rmsnorm_matmul(&mut fused, &mut xn, &xg, &ng, eps, &wg, bias_g, k, m);
            let what = format!("rmsnorm_matmul m {m} n {n} k {k} bias {}", bias_g.is_some());
            let fused = same_bits(&what, &g, &fused, &want);
            let (mut out_c, mut xn_c) = (cpu.tensor(m * n), cpu.tensor(m * k));
            cpu.rmsnorm_matmul(&mut out_c, &mut xn_c, &cpu.tensor_from(&x), &nc, eps, &wc, bias_c, k, m);
            assert_close(&what, &fused, &out_c, BF16_TOL);
        }
    }
}

fn expect_error(b: &CudaBackend, what: &str, needle: &str) {
    let err = b.check().expect_err(what).to_string();
    assert!(err.contains(needle), "{what}: unexpected message: {err}");
}

/// Bad shapes fail the backend with a message naming the op, instead of launching.
#[test]
fn matmul_rejects_bad_shapes() {
    let Some(g) = gpu("matmul_rejects_bad_shapes") else { return };
    let w = g.upload(&bf16_matrix("w", 8, 16, 1)).unwrap();
    let mut out = g.tensor(3 * 8);
    g.matmul(&mut out, &g.tensor(3 * 16 + 1), &w, None, 3);
    expect_error(&g, "x of the wrong length", "matmul: x holds 49");

    let Some(g) = gpu("matmul_rejects_bad_shapes") else { return };
    let w = g.upload(&bf16_matrix("w", 8, 16, 1)).unwrap();
    let bias = g.upload(&f32_vector("bias", 7, 2)).unwrap();
    let mut out = g.tensor(3 * 8);
    g.matmul(&mut out, &g.tensor(3 * 16), &w, Some(&bias), 3);
    expect_error(&g, "bias of the wrong length", "matmul: bias is (1, 7)");

    let Some(g) = gpu("matmul_rejects_bad_shapes") else { return };
    let w = g.upload(&bf16_matrix("w", 8, 16, 1)).unwrap();
    let mut out = g.tensor(3 * 8 - 1);
    g.matmul(&mut out, &g.tensor(3 * 16), &w, None, 3);
    expect_error(&g, "short output", "matmul: out holds 23");

    let Some(g) = gpu("matmul_rejects_bad_shapes") else { return };
    let w = g.upload(&bf16_matrix("w", 8, 16, 1)).unwrap();
    let a = g.upload(&f32_vector("a", 16, 3)).unwrap();
    let mut out = g.tensor(8);
    gemm::matmul_bf16(&g, &mut out, &a, &w, 1);
    expect_error(&g, "one-row A", "matmul_bf16: a is (1, 16) (an f32 vector)");
}
