//! Quantized matmul and embedding (kernels/quant.cu) against their CPU twin:
//! `model::quant::dequantize` and an f32 dot in k order (`quant::reference_*`), for
//! every QType on the gemv (m = 1, 3, 8) and the shared-memory gemm (m = 17, 70),
//! with and without bias, a matrix whose row parts mix types, and the embedding
//! lookup. Blocks are random bytes with f16 scales of the size real files have.
//!
//! Tolerance. The kernels compute every weight with the same f32 operations as
//! `dequantize` (no contraction), so both sides multiply bit-identical weights by the
//! same f32 x; only the order of the f32 sums differs (8-element runs per lane, a
//! warp reduction; k-tiles of 64 in the gemm). For k terms of random sign, the
//! rounding error of either order is about 2^-24 sqrt(k) relative to the output's
//! size (~1.3e-6 at k = 512), so F32_TOL (1e-5) holds with room, while one wrong unit
//! of 8 weights (a misread nibble, scale or offset) moves the output by sqrt(8 / k)
//! >= 12 % at k = 512 (measured on the emulator: at most 5.6e-7 over these cases;
//! with Q6_K's high bits misread on purpose, 0.78). The embedding is a pure
//! dequantization: bitwise equal.
//! (The CPU backend's quantized matmul rounds x to 8 bits, llama.cpp style, and is not
//! the twin here: these kernels keep f32 activations.)

use crate::harness::*;
use half::f16;
use pimoe::backend::cuda::{gemm, quant, CudaBackend};
use pimoe::backend::Backend;
use pimoe::model::quant::{QType, QuantMatrix, QuantPart};
use pimoe::model::safetensors::{HostData, HostTensor};
use pimoe::sampling::Rng;

/// m on the gemv (1, 3 in the m4 bucket, 8) and the gemm (17: one m tile).
const MS: [usize; 4] = [1, 3, 8, 17];

/// k per type: 9 blocks of 32 (36 units: more than a warp's 32 lanes, and a k tile
/// of 64 half full in the gemm) or 2 super-blocks of 256.
fn cols(ty: QType) -> usize {
    if ty.block_len() == 32 {
        288
    } else {
        512
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// `rows` rows of random valid blocks: random quant bytes, f16 scales (and mins) of
/// realistic size so that weights are O(0.01 .. 1), never inf or NaN.
fn rand_part(ty: QType, rows: usize, cols: usize, seed: u64) -> QuantPart {
    let mut rng = Rng::new(seed);
    let n = rows * ty.row_bytes(cols).unwrap();
    let mut data: Vec<u8> = (0..n).map(|_| rng.next_u32() as u8).collect();
    let mut scale = |lo: f32, hi: f32, signed: bool| {
        let v = lo + (hi - lo) * rng.next_f32();
        if signed && rng.next_u32() % 2 == 0 {
            -v
        } else {
            v
        }
    };
    for b in data.chunks_exact_mut(ty.block_bytes()) {
        match ty {
            QType::Q4_0 | QType::Q5_0 => put_f16(b, 0, scale(0.005, 0.02, true)),
            QType::Q4_1 => {
                put_f16(b, 0, scale(0.002, 0.01, false));
                put_f16(b, 2, scale(0.0, 0.08, true));
            }
            QType::Q8_0 => put_f16(b, 0, scale(2e-4, 1e-3, true)),
            QType::Q4_K | QType::Q5_K => {
                put_f16(b, 0, scale(2e-4, 1e-3, false));
                put_f16(b, 2, scale(2e-4, 1e-3, false));
            }
            QType::Q6_K => put_f16(b, 208, scale(2e-5, 1e-4, false)),
        }
    }
    QuantPart { ty, rows, data }
}

fn matrix(cols: usize, parts: Vec<QuantPart>) -> QuantMatrix {
    QuantMatrix { cols, parts }
}

fn upload_quant(g: &CudaBackend, q: &QuantMatrix) -> pimoe::backend::cuda::CudaWeight {
    let t = HostTensor { name: "w".into(), shape: vec![q.rows(), q.cols], data: HostData::Quant(q.clone()) };
    g.upload(&t).unwrap()
}

fn f32_vector(b: &CudaBackend, v: &[f32]) -> pimoe::backend::cuda::CudaWeight {
    b.upload(&HostTensor { name: "bias".into(), shape: vec![v.len()], data: HostData::F32(v.to_vec()) })
        .unwrap()
}

/// matmul on the device against the twin, for each m; bias on every other m.
fn check_matmul(g: &CudaBackend, what: &str, q: &QuantMatrix, ms: &[usize], seed: u64) {
    let (n, k) = (q.rows(), q.cols);
    let w = upload_quant(g, q);
    let bias_v = rand_vec(n, seed + 1);
    let bias = f32_vector(g, &bias_v);
    for (i, &m) in ms.iter().enumerate() {
        let with_bias = i % 2 == 1;
        let x = rand_vec(m * k, seed + 10 + m as u64);
        let want = quant::reference_matmul(q, &x, with_bias.then_some(&bias_v[..]), m);
        let mut out = poisoned(g, m * n);
        g.matmul(&mut out, &g.tensor_from(&x), &w, with_bias.then_some(&bias), m);
        check(&format!("{what} m {m} n {n} k {k} bias {with_bias}"), g, &out, &want, F32_TOL);
        if !with_bias {
            // matmul_add (no bias): the same product added to a residual in the
            // kernel, one f32 addition per element.
            let r0 = rand_vec(m * n, seed + 20 + m as u64);
            let (mut residual, mut scratch) = (g.tensor_from(&r0), poisoned(g, m * n));
            g.matmul_add(&mut residual, &mut scratch, &g.tensor_from(&x), &w, m);
            let sum: Vec<f32> = r0.iter().zip(g.to_host(&out)).map(|(r, p)| r + p).collect();
            check_exact(&format!("{what} matmul_add m {m} n {n} k {k}"), g, &residual, &sum);
        }
    }
}

/// Every type, one part of 20 rows (two full gemv blocks of 8 rows and a partial one),
/// at every m.
#[test]
fn quant_matmul_every_type() {
    let Some(g) = gpu("quant_matmul_every_type") else { return };
    for (ti, ty) in QType::ALL.into_iter().enumerate() {
        let q = matrix(cols(ty), vec![rand_part(ty, 20, cols(ty), 300 + ti as u64)]);
        check_matmul(&g, &format!("{ty}"), &q, &MS, 400 + 100 * ti as u64);
    }
}

/// Two tiles each way in the gemm (m = 70, n = 70) for a 32-element and a K type.
#[test]
fn quant_matmul_gemm_tiles() {
    let Some(g) = gpu("quant_matmul_gemm_tiles") else { return };
    for (ti, ty) in [QType::Q5_0, QType::Q5_K].into_iter().enumerate() {
        let k = if ty.block_len() == 32 { 96 } else { 256 };
        let q = matrix(k, vec![rand_part(ty, 70, k, 500 + ti as u64)]);
        check_matmul(&g, &format!("{ty} tiles"), &q, &[70, 70], 600 + 10 * ti as u64);
    }
}

/// A stacked matrix as a Q4_K_M file has it (q, k in Q4_K, v in Q6_K) and a Q4_K part
/// after the Q6_K one, which starts at a padded offset (13 x 210 bytes is not a
/// multiple of 16): each part writes its own output columns and bias slice.
#[test]
fn quant_matmul_mixed_parts() {
    let Some(g) = gpu("quant_matmul_mixed_parts") else { return };
    let k = 256;
    let mut q = matrix(k, vec![rand_part(QType::Q4_K, 24, k, 1)]);
    q.append(matrix(k, vec![rand_part(QType::Q6_K, 13, k, 2)]));
    q.append(matrix(k, vec![rand_part(QType::Q4_K, 7, k, 3)]));
    assert_eq!(q.parts.len(), 3);
    check_matmul(&g, "Q4_K+Q6_K+Q4_K", &q, &[1, 5, 17, 2], 700);
    let mut q = matrix(64, vec![rand_part(QType::Q8_0, 9, 64, 4)]);
    q.append(matrix(64, vec![rand_part(QType::Q4_0, 11, 64, 5)]));
    check_matmul(&g, "Q8_0+Q4_0", &q, &[3, 20], 800);
}

/// Bitwise equality, with the backend's sticky error checked first.
fn check_exact(what: &str, b: &CudaBackend, got: &pimoe::backend::cuda::CudaTensor, want: &[f32]) {
    let got = b.to_host(got);
    b.check().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: output length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: first difference at [{i}]: got {} want {}", got[i], want[i]);
    }
}

/// The embedding lookup of every type and of a mixed table (the tied lm_head of a
/// Q4_K_M file is Q6_K): the table's first and last rows, a repeat, rows of each part
/// and an id past the table (zeros).
#[test]
fn quant_embed_matches_dequantize() {
    let Some(g) = gpu("quant_embed_matches_dequantize") else { return };
    let mut tables: Vec<(String, QuantMatrix)> = QType::ALL
        .into_iter()
        .enumerate()
        .map(|(i, ty)| (format!("{ty}"), matrix(cols(ty), vec![rand_part(ty, 12, cols(ty), 900 + i as u64)])))
        .collect();
    let mut mixed = matrix(256, vec![rand_part(QType::Q6_K, 5, 256, 950)]);
    mixed.append(matrix(256, vec![rand_part(QType::Q4_K, 7, 256, 951)]));
    tables.push(("Q6_K+Q4_K".into(), mixed));
    for (what, q) in &tables {
        let ids: Vec<u32> = vec![0, 11, 11, 3, 6, 12 + 5, 1];
        let w = upload_quant(&g, q);
        let mut out = poisoned(&g, ids.len() * q.cols);
        g.embed(&mut out, &w, &g.index(&ids), q.cols);
        check_exact(&format!("quant embed {what}"), &g, &out, &quant::reference_embed(q, &ids));
    }
}

fn expect_error(b: &CudaBackend, what: &str, needle: &str) {
    let err = b.check().expect_err(what).to_string();
    assert!(err.contains(needle), "{what}: unexpected message: {err}");
}

/// Bad shapes fail the backend with a message instead of launching, and the bf16
/// GEMM refuses a quantized weight rather than reading its bytes as bf16.
#[test]
fn quant_matmul_rejects_bad_shapes() {
    let q = matrix(64, vec![rand_part(QType::Q8_0, 4, 64, 1)]);
    let Some(g) = gpu("quant_matmul_rejects_bad_shapes") else { return };
    let w = upload_quant(&g, &q);
    let mut out = g.tensor(2 * 4);
    g.matmul(&mut out, &g.tensor(2 * 64 + 1), &w, None, 2);
    expect_error(&g, "x of the wrong length", "quant matmul: x holds 129");

    let Some(g) = gpu("quant_matmul_rejects_bad_shapes") else { return };
    let w = upload_quant(&g, &q);
    let mut out = g.tensor(2 * 4);
    gemm::matmul(&g, &mut out, &g.tensor(2 * 64), &w, None, 2);
    expect_error(&g, "quantized w in the GEMM", "is block-quantized");

    let Some(g) = gpu("quant_matmul_rejects_bad_shapes") else { return };
    let bad = HostTensor { name: "w".into(), shape: vec![4, 32], data: HostData::Quant(q.clone()) };
    let err = g.upload(&bad).err().expect("a shape mismatch").to_string();
    assert!(err.contains("quantized matrix is (4, 64)"), "unexpected message: {err}");
}
