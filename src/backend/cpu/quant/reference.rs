//! The scalar vec_dots: one weight row (stored blocks) against one quantized
//! activation row. These define the results: integer dot products inside a block,
//! each block's integer scaled by f32 factors and summed in block order. The SIMD
//! kernels compute the same integers and differ only in how they sum the f32 terms.

use super::act::ActRow;
use crate::model::quant::{scale_min_k4, QType};

pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

pub fn vec_dot(ty: QType, w: &[u8], a: ActRow) -> f32 {
    match ty {
        QType::Q4_0 => q4_0(w, a),
        QType::Q4_1 => q4_1(w, a),
        QType::Q5_0 => q5_0(w, a),
        QType::Q8_0 => q8_0(w, a),
        QType::Q4_K => q45_k(w, a, false),
        QType::Q5_K => q45_k(w, a, true),
        QType::Q6_K => q6_k(w, a),
    }
}

fn idot(q: impl Iterator<Item = i32>, y: &[i8]) -> i32 {
    q.zip(y).map(|(q, &y)| q * y as i32).sum()
}

/// (q - 8) per nibble; byte j holds weights j and j + 16.
fn q4_0(w: &[u8], a: ActRow) -> f32 {
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let y = &a.qs[32 * b..32 * b + 32];
        let q = (0..32).map(|i| (blk[2 + i % 16] >> (4 * (i / 16)) & 15) as i32 - 8);
        s += f16_at(blk, 0) * a.d[b] * idot(q, y) as f32;
    }
    s
}

/// d * q + m against Q8_1: the m term uses the activations' s = d_y * sum q_y.
fn q4_1(w: &[u8], a: ActRow) -> f32 {
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let y = &a.qs[32 * b..32 * b + 32];
        let q = (0..32).map(|i| (blk[4 + i % 16] >> (4 * (i / 16)) & 15) as i32);
        s += f16_at(blk, 0) * a.d[b] * idot(q, y) as f32 + f16_at(blk, 2) * a.s[b];
    }
    s
}

fn q5_0(w: &[u8], a: ActRow) -> f32 {
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(22).enumerate() {
        let y = &a.qs[32 * b..32 * b + 32];
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let q = (0..32)
            .map(|i| ((blk[6 + i % 16] >> (4 * (i / 16)) & 15) as u32 | ((qh >> i) & 1) << 4) as i32 - 16);
        s += f16_at(blk, 0) * a.d[b] * idot(q, y) as f32;
    }
    s
}

fn q8_0(w: &[u8], a: ActRow) -> f32 {
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let y = &a.qs[32 * b..32 * b + 32];
        s += f16_at(blk, 0) * a.d[b] * idot(blk[2..34].iter().map(|&q| q as i8 as i32), y) as f32;
    }
    s
}

/// Q4_K and Q5_K: sum over sub-blocks of scale * (q . y), minus dmin * the mins
/// against Q8_K's bsums (two 16-sums per 32-weight sub-block).
fn q45_k(w: &[u8], a: ActRow, five: bool) -> f32 {
    let bb = if five { 176 } else { 144 };
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let y = &a.qs[256 * b..256 * b + 256];
        let bs = &a.sums[16 * b..16 * b + 16];
        let (sc, qh, qs) = if five {
            (&blk[4..16], &blk[16..48], &blk[48..176])
        } else {
            (&blk[4..16], &[][..], &blk[16..144])
        };
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (scale, min) = scale_min_k4(j, sc);
            let q = (0..32).map(|l| {
                let lo = qs[32 * (j / 2) + l] >> (4 * (j % 2)) & 15;
                let hi = if five { (qh[l] >> j & 1) << 4 } else { 0 };
                (lo | hi) as i32
            });
            sumi += scale as i32 * idot(q, &y[32 * j..32 * j + 32]);
            summ += min as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
        }
        s += f16_at(blk, 0) * a.d[b] * sumi as f32 - f16_at(blk, 2) * a.d[b] * summ as f32;
    }
    s
}

/// Q6_K: 16 groups of 16 weights, each with an i8 scale; q - 32.
fn q6_k(w: &[u8], a: ActRow) -> f32 {
    let mut s = 0f32;
    for (b, blk) in w.chunks_exact(210).enumerate() {
        let y = &a.qs[256 * b..256 * b + 256];
        let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let mut sumi = 0i32;
        for g in 0..16 {
            let (h, t) = (g / 8, (g % 8) / 2);
            let q = (0..16).map(|i| {
                let l = 16 * (g % 2) + i;
                let lo = ql[64 * h + l + 32 * (t & 1)] >> (4 * (t / 2)) & 15;
                let hi = qh[32 * h + l] >> (2 * t) & 3;
                (lo | hi << 4) as i32 - 32
            });
            sumi += sc[g] as i8 as i32 * idot(q, &y[16 * g..16 * g + 16]);
        }
        s += f16_at(blk, 208) * a.d[b] * sumi as f32;
    }
    s
}
