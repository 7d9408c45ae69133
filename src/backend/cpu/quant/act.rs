//! Activation rows quantized to 8 bits, the companion of each weight type, with
//! ggml's rounding (its x86 build, so that our sums match llama.cpp's on this CPU):
//!
//! - Q8_0 / Q8_1 blocks of 32 (for Q4_0, Q5_0, Q8_0 / Q4_1): amax = max |x|,
//!   d = amax / 127 stored as f16, q = round-half-even(x * (127 / amax)) computed
//!   with the f32 scale before rounding d; Q8_1 adds s = f16(d * sum q) with the
//!   unrounded d. Both share q and d, so one quantization serves both.
//! - Q8_K blocks of 256 (for the K-quants): max = the signed value of largest
//!   magnitude (the first, if several), iscale = -127 / max, q = min(127,
//!   round-half-even(iscale * x)), d = 1 / iscale in f32 (so d has the sign of
//!   -max), and bsums = the sums of q over each 16.
//!
//! We also keep the integer sum of each 32-block (`sums`), which lets the kernels
//! fold Q4_0's and Q5_0's offsets (q - 8, q - 16) into one subtraction per block.

use half::f16;
use rayon::prelude::*;

use crate::model::quant::QK_K;

/// Weights per Q8_0 / Q8_1 block.
pub const QK8: usize = 32;

/// One quantized activation row as the kernels read it.
#[derive(Clone, Copy, Debug)]
pub struct ActRow<'a> {
    /// Scale per block (an f16 value for 32-blocks, f32 for Q8_K).
    pub d: &'a [f32],
    /// Q8_1's f16(d * sum q) per 32-block; empty for Q8_K.
    pub s: &'a [f32],
    /// Sum of q per 32-block, or per 16 (Q8_K's bsums).
    pub sums: &'a [i16],
    pub qs: &'a [i8],
}

/// m rows of k activations quantized one way; rows are contiguous.
#[derive(Clone, Debug, Default)]
pub struct Q8Rows {
    pub k: usize,
    pub block: usize,
    /// Blocks per row (k / block, kept: `row` runs once per token tile).
    pub blocks: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub sums: Vec<i16>,
    pub qs: Vec<i8>,
}

impl Q8Rows {
    pub fn rows(&self) -> usize {
        self.qs.len() / self.k.max(1)
    }

    pub fn row(&self, j: usize) -> ActRow<'_> {
        let nb = self.blocks;
        let per_sum = if self.block == QK_K { QK_K / 16 } else { 1 };
        ActRow {
            d: &self.d[j * nb..(j + 1) * nb],
            s: if self.s.is_empty() { &[] } else { &self.s[j * nb..(j + 1) * nb] },
            sums: &self.sums[j * nb * per_sum..(j + 1) * nb * per_sum],
            qs: &self.qs[j * self.k..(j + 1) * self.k],
        }
    }

    /// The quantized values widened back (d * q), for tests and error bounds.
    pub fn dequantize_row(&self, j: usize) -> Vec<f32> {
        let r = self.row(j);
        r.qs.iter().enumerate().map(|(i, &q)| r.d[i / self.block] * q as f32).collect()
    }
}

/// Rows of `x` (m x k) as Q8_0/Q8_1 blocks; k must be a multiple of 32.
pub fn quantize_q8_0(x: &[f32], k: usize) -> Q8Rows {
    assert!(k.is_multiple_of(QK8) && x.len().is_multiple_of(k), "q8_0: {} values in rows of {k}", x.len());
    let nb = x.len() / QK8;
    let mut r = Q8Rows {
        k,
        block: QK8,
        blocks: k / QK8,
        d: vec![0.0; nb],
        s: vec![0.0; nb],
        sums: vec![0; nb],
        qs: vec![0; x.len()],
    };
    let block = |((q, d, s, sum), xb): ((&mut [i8], &mut f32, &mut f32, &mut i16), &[f32])| {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let dd = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut t = 0i32;
        for (qi, &v) in q.iter_mut().zip(xb) {
            *qi = round_even(v * id) as i8;
            t += *qi as i32;
        }
        *d = f16::from_f32(dd).to_f32();
        *s = f16::from_f32(dd * t as f32).to_f32();
        *sum = t as i16;
    };
    // A block's fields are independent of every other block's; a decode row is too
    // small to be worth waking the thread pool.
    if x.len() < PARALLEL_FROM {
        let fields = r.qs.chunks_mut(QK8).zip(&mut r.d).zip(&mut r.s).zip(&mut r.sums);
        fields.map(|(((q, d), s), sum)| (q, d, s, sum)).zip(x.chunks(QK8)).for_each(block);
    } else {
        (r.qs.par_chunks_mut(QK8), r.d.par_iter_mut(), r.s.par_iter_mut(), r.sums.par_iter_mut())
            .into_par_iter()
            .zip(x.par_chunks(QK8))
            .with_min_len(64)
            .for_each(block);
    }
    r
}

/// Inputs (values) below which quantization runs on the calling thread.
const PARALLEL_FROM: usize = 1 << 15;

/// Round half to even for |v| < 2^22, as ggml's `nearest_int` does (adding 1.5 * 2^23
/// leaves the rounded integer in the low mantissa bits); also what x86's
/// round-to-nearest gives, without a libm call on a baseline-x86_64 build.
#[inline]
fn round_even(v: f32) -> i32 {
    debug_assert!(v.abs() < 4_194_304.0);
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// One Q8_K block's outputs: q, d, bsums.
type KBlock<'a> = (&'a mut [i8], &'a mut f32, &'a mut [i16]);

/// Rows of `x` (m x k) as Q8_K blocks; k must be a multiple of 256.
pub fn quantize_q8_k(x: &[f32], k: usize) -> Q8Rows {
    assert!(k.is_multiple_of(QK_K) && x.len().is_multiple_of(k), "q8_K: {} values in rows of {k}", x.len());
    let nb = x.len() / QK_K;
    let mut r = Q8Rows {
        k,
        block: QK_K,
        blocks: k / QK_K,
        d: vec![0.0; nb],
        s: vec![],
        sums: vec![0; nb * 16],
        qs: vec![0; x.len()],
    };
    let block = |((q, d, bsums), xb): (KBlock, &[f32])| {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        if amax == 0.0 {
            *d = 0.0;
            q.fill(0);
            bsums.fill(0);
            return;
        }
        let iscale = -127.0 / max;
        for (qi, &v) in q.iter_mut().zip(xb) {
            *qi = round_even(iscale * v).min(127) as i8;
        }
        for (bs, qg) in bsums.iter_mut().zip(q.chunks_exact(16)) {
            *bs = qg.iter().map(|&v| v as i16).sum();
        }
        *d = 1.0 / iscale;
    };
    if x.len() < PARALLEL_FROM {
        let fields = r.qs.chunks_mut(QK_K).zip(&mut r.d).zip(r.sums.chunks_mut(16));
        fields.map(|((q, d), bs)| (q, d, bs)).zip(x.chunks(QK_K)).for_each(block);
    } else {
        (r.qs.par_chunks_mut(QK_K), r.d.par_iter_mut(), r.sums.par_chunks_mut(16))
            .into_par_iter()
            .zip(x.par_chunks(QK_K))
            .with_min_len(8)
            .for_each(block);
    }
    r
}
