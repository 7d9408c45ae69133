//! The CPU kernels for quantized weights (backend::cpu::quant): the activation
//! quantizers against hand-computed blocks, every SIMD level against the scalar
//! definition, the definition against dequantize() + an f64 dot within the error
//! the 8-bit activations allow, and the matmul at several batch sizes, with bias
//! and with rows of two types, token by token independent of the batch.

use half::f16;
use pimoe::backend::cpu::quant::act::{quantize_q8_0, quantize_q8_k, Q8Rows};
use pimoe::backend::cpu::quant::{matmul_at, quantize_for, reference, vec_dot, vec_dot_n, Level};
use pimoe::model::quant::{dequantize, QType, QuantMatrix, QuantPart};
use pimoe::sampling::Rng;

fn levels() -> Vec<Level> {
    let l: Vec<Level> = Level::ALL.into_iter().filter(|l| l.available()).collect();
    eprintln!("levels on this CPU: {l:?}");
    l
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// A scale as files have them: |d| in 1e-3 .. 1e-1 (log-uniform), random sign.
fn scale(r: &mut Rng) -> f32 {
    let s = 10f32.powf(-3.0 + 2.0 * r.next_f32());
    if r.next_u32() & 1 == 0 {
        s
    } else {
        -s
    }
}

/// `rows` rows of `k` weights: random quant bytes, realistic f16 scales.
fn random_rows(ty: QType, rows: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let n = rows * ty.row_bytes(k).unwrap();
    let mut b: Vec<u8> = (0..n).map(|_| r.next_u32() as u8).collect();
    for blk in b.chunks_exact_mut(ty.block_bytes()) {
        match ty {
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => put_f16(blk, 0, scale(&mut r)),
            QType::Q4_1 => {
                let d = scale(&mut r).abs();
                put_f16(blk, 0, d);
                put_f16(blk, 2, -8.0 * d * (0.5 + r.next_f32()));
            }
            // ggml's K-quants keep d and dmin positive
            QType::Q4_K | QType::Q5_K => {
                put_f16(blk, 0, scale(&mut r).abs() / 16.0);
                put_f16(blk, 2, scale(&mut r).abs() / 16.0);
            }
            QType::Q6_K => put_f16(blk, 208, scale(&mut r).abs() / 32.0),
        }
    }
    b
}

fn random_x(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    // mostly small, some outliers, as hidden states are
    (0..n).map(|i| (r.next_f32() - 0.5) * if i % 37 == 5 { 8.0 } else { 1.0 }).collect()
}

/// Weights per row a test uses for `ty`: several blocks, not a power of two of them;
/// an odd count of 32-blocks, so that the kernels' even/odd block pairs leave a last block.
fn k_for(ty: QType) -> usize {
    if ty.block_len() == 256 {
        768
    } else {
        608
    }
}

/// The largest magnitude a single f32 term of a block's sum can reach, over each
/// weight: max |w| of its block plus what the offsets and mins add (q - 8 is
/// split into q and 8, d q - dmin m into d q and dmin m).
fn term_scale(ty: QType, w: &[u8], k: usize) -> Vec<f64> {
    let mut deq = vec![0f32; k];
    dequantize(ty, w, &mut deq);
    let bl = ty.block_len();
    let mut out = vec![0f64; k];
    for (b, blk) in w.chunks_exact(ty.block_bytes()).enumerate() {
        let f = |i: usize| f16::from_bits(u16::from_le_bytes([blk[i], blk[i + 1]])).to_f32().abs() as f64;
        let wmax = deq[b * bl..(b + 1) * bl].iter().fold(0f64, |a, &v| a.max(v.abs() as f64));
        let extra = match ty {
            QType::Q4_1 => f(2),
            QType::Q4_K | QType::Q5_K => 63.0 * f(2),
            _ => 0.0,
        };
        for o in &mut out[b * bl..(b + 1) * bl] {
            *o = 3.0 * wmax + extra;
        }
    }
    out
}

/// Reordering n f32 terms moves a sum by at most about n eps sum |term|; 1e-5 covers
/// the up to 24 block terms here with room, and is far below a wrong integer.
fn order_tol(ty: QType, w: &[u8], a: &Q8Rows, j: usize) -> f64 {
    let k = a.k;
    let xh = a.dequantize_row(j);
    let ts = term_scale(ty, w, k);
    1e-5 * ts.iter().zip(&xh).map(|(t, x)| t * x.abs() as f64).sum::<f64>()
}

#[test]
fn q8_0_and_q8_1_by_hand() {
    let mut x = vec![0f32; 64];
    x[..5].copy_from_slice(&[127.0, -63.5, 0.5, 1.5, 2.5]);
    // second block: amax 0.3, d = 0.3 / 127 (rounded to f16), q = x * 127 / 0.3
    x[32] = -0.3;
    x[33] = 0.15;
    let a = quantize_q8_0(&x, 64);
    // ties go to even, as _mm256_round_ps does: -63.5 -> -64, 0.5 -> 0, 2.5 -> 2
    assert_eq!(&a.qs[..5], &[127, -64, 0, 2, 2]);
    assert!(a.qs[5..32].iter().all(|&q| q == 0));
    assert_eq!(a.d[0], 1.0);
    assert_eq!(a.sums[0], 127 - 64 + 2 + 2);
    assert_eq!(a.s[0], 67.0);
    assert_eq!(&a.qs[32..34], &[-127, 64]); // 63.5 -> 64 (ties to even)
    assert_eq!(a.d[1], f16::from_f32(0.3 / 127.0).to_f32());
    assert_ne!(a.d[1], 0.3 / 127.0, "d is stored as f16");
    assert_eq!(a.s[1], f16::from_f32(0.3 / 127.0 * -63.0).to_f32());
    // an all-zero block quantizes to zeros with d = 0
    let z = quantize_q8_0(&[0.0; 32], 32);
    assert_eq!((z.d[0], z.s[0], z.sums[0]), (0.0, 0.0, 0));
}

#[test]
fn q8_k_by_hand() {
    let mut x = vec![0f32; 512];
    // max is the signed value of largest magnitude (-2, the first of the two), so
    // iscale = -127 / -2 = 63.5 and d = 1 / 63.5 > 0
    x[0] = 1.0;
    x[1] = -2.0;
    x[2] = 0.5;
    x[20] = 2.0;
    let a = quantize_q8_k(&x, 512);
    assert_eq!(&a.qs[..3], &[64, -127, 32]); // 63.5 -> 64, 31.75 -> 32
    assert_eq!(a.qs[20], 127);
    assert_eq!(a.d[0], 1.0 / 63.5);
    assert_eq!(a.sums[0], 64 - 127 + 32);
    assert_eq!(a.sums[1], 127);
    assert!(a.sums[2..16].iter().all(|&s| s == 0));
    // a positive maximum gives a negative d and negated q
    let mut y = vec![0f32; 256];
    y[7] = 4.0;
    y[8] = -1.0;
    let b = quantize_q8_k(&y, 256);
    assert_eq!((b.qs[7], b.qs[8]), (-127, 32)); // -31.75 rounds to -32, negated: 32
    assert_eq!(b.d[0], -4.0 / 127.0);
    // the second row of `a` is all zero: d = 0, q = 0
    assert_eq!((a.d[1], a.sums[16..].iter().map(|&s| s as i32).sum::<i32>()), (0.0, 0));
    // zero d is exact; other rows still dequantize close to x
    let back = a.dequantize_row(0);
    for (v, b) in x[..256].iter().zip(&back) {
        assert!((v - b).abs() <= 0.5 / 63.5 + 1e-6, "{v} vs {b}");
    }
}

#[test]
fn simd_matches_reference() {
    let lv = levels();
    for ty in QType::ALL {
        let k = k_for(ty);
        let rows = 6;
        let w = random_rows(ty, rows, k, 11 + ty as u64);
        let x = random_x(3 * k, 12);
        let a = quantize_for(ty, &x, k);
        let rb = ty.row_bytes(k).unwrap();
        for r in 0..rows {
            let wr = &w[r * rb..(r + 1) * rb];
            for j in 0..3 {
                let want = reference::vec_dot(ty, wr, a.row(j));
                let tol = order_tol(ty, wr, &a, j);
                let mut got = vec![];
                for &l in &lv {
                    let g = vec_dot(l, ty, wr, a.row(j));
                    assert!(
                        ((g - want) as f64).abs() <= tol,
                        "{ty} row {r} token {j} {l:?}: {g} vs reference {want} (tol {tol:e})"
                    );
                    got.push(g);
                }
                // AVX2 and VNNI compute identical integers and identical f32 steps
                if lv.contains(&Level::Avx2) && lv.contains(&Level::Vnni) {
                    assert_eq!(
                        got[1].to_bits(),
                        got[2].to_bits(),
                        "{ty}: AVX2 {} vs VNNI {}",
                        got[1],
                        got[2]
                    );
                }
            }
        }
    }
}

#[test]
fn reference_tracks_the_dequantized_dot() {
    for ty in QType::ALL {
        let k = k_for(ty);
        let rows = 8;
        let w = random_rows(ty, rows, k, 21 + ty as u64);
        let x = random_x(k, 22 + ty as u64);
        let a = quantize_for(ty, &x, k);
        let xh = a.dequantize_row(0);
        let bl = a.block;
        // each activation is off by at most half a step, plus the step's f16 rounding
        let step_err = |i: usize| a.d[i / bl].abs() as f64 * (0.5 + 127.0 / 2048.0);
        for (i, (&v, &h)) in x.iter().zip(&xh).enumerate() {
            assert!(((v - h) as f64).abs() <= step_err(i) * 1.0001, "{ty}: x[{i}] = {v} quantized to {h}");
        }
        let rb = ty.row_bytes(k).unwrap();
        let mut deq = vec![0f32; k];
        let mut worst = 0f64;
        for r in 0..rows {
            let wr = &w[r * rb..(r + 1) * rb];
            dequantize(ty, wr, &mut deq);
            let exact: f64 = deq.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let got = reference::vec_dot(ty, wr, a.row(0)) as f64;
            let mut bound: f64 = deq.iter().enumerate().map(|(i, &w)| w.abs() as f64 * step_err(i)).sum();
            if ty == QType::Q4_1 {
                // Q8_1's s = d * sum q is stored as f16
                let m = |b: usize| {
                    let o = 20 * b + 2;
                    f16::from_bits(u16::from_le_bytes([wr[o], wr[o + 1]])).to_f32().abs() as f64
                };
                bound += (0..k / 32).map(|b| m(b) * a.s[b].abs() as f64 / 2048.0).sum::<f64>();
            }
            bound += order_tol(ty, wr, &a, 0);
            let err = (got - exact).abs();
            assert!(err <= bound, "{ty} row {r}: {got} vs exact {exact}, error {err:e} > bound {bound:e}");
            worst = worst.max(err / bound);
        }
        eprintln!("{ty}: worst error / bound {worst:.3}");
    }
}

fn matrix(parts: &[(QType, usize)], k: usize, seed: u64) -> QuantMatrix {
    QuantMatrix {
        cols: k,
        parts: parts
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows))| QuantPart { ty, rows, data: random_rows(ty, rows, k, seed + i as u64) })
            .collect(),
    }
}

/// Every output of `matmul_at` against the vec_dot of its (row, token) plus bias.
fn check_matmul(w: &QuantMatrix, m: usize, level: Level) {
    let (n, k) = (w.rows(), w.cols);
    let x = random_x(m * k, 31 + m as u64);
    let bias: Vec<f32> = random_x(n, 32);
    let mut out = vec![f32::NAN; m * n];
    matmul_at(level, &mut out, &x, w, Some(&bias), m);
    for r in 0..n {
        let (ty, wr) = w.row(r);
        let a = quantize_for(ty, &x, k);
        for j in 0..m {
            let want = vec_dot(level, ty, wr, a.row(j)) + bias[r];
            let got = out[j * n + r];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{level:?} m {m} row {r} ({ty}) token {j}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn matmul_equals_per_row_dots() {
    let lv = levels();
    let shapes: [&[(QType, usize)]; 4] = [
        &[(QType::Q4_K, 40), (QType::Q6_K, 20)],
        &[(QType::Q5_K, 17)],
        &[(QType::Q4_1, 33), (QType::Q8_0, 3), (QType::Q4_0, 5), (QType::Q5_0, 4)],
        // a 32-block type and a K-quant in one matrix: both activation formats
        &[(QType::Q8_0, 18), (QType::Q4_K, 18)],
    ];
    for (s, parts) in shapes.iter().enumerate() {
        let k = if parts.iter().any(|p| p.0.block_len() == 256) { 512 } else { 576 };
        let w = matrix(parts, k, 100 * s as u64);
        for &l in &lv {
            // 13 = a tile of 8, a half tile of 4 and one token (32-weight row pairs:
            // three tiles of 4, then one token per row)
            for m in [1, 5, 7, 13] {
                check_matmul(&w, m, l);
            }
        }
    }
}

#[test]
fn matmul_without_bias() {
    let w = matrix(&[(QType::Q6_K, 9)], 256, 7);
    let x = random_x(2 * 256, 8);
    let mut out = vec![0f32; 2 * 9];
    matmul_at(Level::best(), &mut out, &x, &w, None, 2);
    let a = quantize_for(QType::Q6_K, &x, 256);
    for r in 0..9 {
        for j in 0..2 {
            assert_eq!(out[j * 9 + r], vec_dot(Level::best(), QType::Q6_K, w.row(r).1, a.row(j)));
        }
    }
}

/// A token's outputs are the same bits whether it runs alone or in a batch of 9
/// (two tiles of four and a tail of one), at every level.
#[test]
fn token_result_independent_of_batch() {
    let lv = levels();
    for ty in QType::ALL {
        let k = k_for(ty);
        let w = matrix(&[(ty, 35)], k, 50 + ty as u64);
        let n = w.rows();
        let m = 9;
        let x = random_x(m * k, 51);
        for &l in &lv {
            let mut batch = vec![0f32; m * n];
            matmul_at(l, &mut batch, &x, &w, None, m);
            for j in 0..m {
                let mut one = vec![0f32; n];
                matmul_at(l, &mut one, &x[j * k..(j + 1) * k], &w, None, 1);
                let same =
                    one.iter().zip(&batch[j * n..(j + 1) * n]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} {l:?}: token {j} differs alone and in a batch of {m}");
            }
            // and the four-token tile agrees with four single dots
            let a = quantize_for(ty, &x, k);
            let four = vec_dot_n::<4>(l, ty, w.row(0).1, &std::array::from_fn(|d| a.row(d)));
            for (d, f) in four.iter().enumerate() {
                assert_eq!(f.to_bits(), vec_dot(l, ty, w.row(0).1, a.row(d)).to_bits());
            }
        }
    }
}
