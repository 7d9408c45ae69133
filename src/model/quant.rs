//! ggml's block-quantized weight types as pimoe keeps them: in their stored bytes, so
//! a Q4_K_M file runs in the memory it takes on disk. This file is the definition of
//! each format (block layout and the scalar dequantization every kernel is tested
//! against); the kernels that read them live with their backends
//! (`backend::cpu::quant`, `kernels/quant.cu`).
//!
//! Layouts follow ggml's `block_*` structs (ggml-common.h), little-endian; every
//! scale is an IEEE f16 unless said otherwise. A row of `cols` weights is
//! `cols / block_len` consecutive blocks; a matrix is its rows one after another.

use half::f16;

use crate::model::gguf::GgmlType;

/// The quantized types pimoe computes with directly.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

impl QType {
    pub const ALL: [QType; 7] =
        [QType::Q4_0, QType::Q4_1, QType::Q5_0, QType::Q8_0, QType::Q4_K, QType::Q5_K, QType::Q6_K];

    pub fn from_ggml(t: GgmlType) -> Option<QType> {
        Self::ALL.into_iter().find(|q| q.ggml() == t)
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            QType::Q4_0 => GgmlType::Q4_0,
            QType::Q4_1 => GgmlType::Q4_1,
            QType::Q5_0 => GgmlType::Q5_0,
            QType::Q8_0 => GgmlType::Q8_0,
            QType::Q4_K => GgmlType::Q4_K,
            QType::Q5_K => GgmlType::Q5_K,
            QType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        self.ggml().block_len() as usize
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.ggml().block_bytes() as usize
    }

    /// Bytes of one row of `cols` weights; None when `cols` is not a whole number of
    /// blocks (ggml quantizes along rows, so such a tensor cannot exist).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        (cols % self.block_len() == 0).then(|| cols / self.block_len() * self.block_bytes())
    }

    /// Bits per weight, for reports.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_len() as f64
    }
}

impl std::fmt::Display for QType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Consecutive rows of one type, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantPart {
    pub ty: QType,
    pub rows: usize,
    pub data: Vec<u8>,
}

/// A quantized (rows, cols) matrix: one or more row ranges, each of its own type.
/// Stacking q/k/v or gate/up concatenates parts, because a file may quantize them
/// differently (Q4_K_M stores some v and down projections in Q6_K).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    pub cols: usize,
    pub parts: Vec<QuantPart>,
}

impl QuantMatrix {
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// Rows of `b` after the rows of `self`; neighbouring parts of one type merge.
    pub fn append(&mut self, b: QuantMatrix) {
        debug_assert_eq!(self.cols, b.cols);
        for p in b.parts {
            match self.parts.last_mut() {
                Some(last) if last.ty == p.ty => {
                    last.rows += p.rows;
                    // exactly: a loaded weight keeps this buffer
                    last.data.reserve_exact(p.data.len());
                    last.data.extend_from_slice(&p.data);
                }
                _ => self.parts.push(p),
            }
        }
    }

    /// The stored bytes of row `r` and their type.
    pub fn row(&self, mut r: usize) -> (QType, &[u8]) {
        for p in &self.parts {
            if r < p.rows {
                let rb = p.data.len() / p.rows;
                return (p.ty, &p.data[r * rb..(r + 1) * rb]);
            }
            r -= p.rows;
        }
        panic!("row {r} past the matrix's {} rows", self.rows())
    }

    /// Every weight widened to f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows() * self.cols];
        let mut at = 0;
        for p in &self.parts {
            let n = p.rows * self.cols;
            dequantize(p.ty, &p.data, &mut out[at..at + n]);
            at += n;
        }
        out
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Widens whole blocks: `data` holds exactly `out.len() / block_len` blocks of `ty`.
pub fn dequantize(ty: QType, data: &[u8], out: &mut [f32]) {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    assert!(
        out.len() % bl == 0 && data.len() == out.len() / bl * bb,
        "{} bytes of {ty} for {} weights",
        data.len(),
        out.len()
    );
    for (b, o) in data.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
        match ty {
            QType::Q4_0 => q4_0(b, o),
            QType::Q4_1 => q4_1(b, o),
            QType::Q5_0 => q5_0(b, o),
            QType::Q8_0 => q8_0(b, o),
            QType::Q4_K => q4_k(b, o),
            QType::Q5_K => q5_k(b, o),
            QType::Q6_K => q6_k(b, o),
        }
    }
}

/// Q4_0 (18 bytes): d, then 16 bytes; byte j holds weight j in its low nibble and
/// weight j + 16 in its high one; w = d * (q - 8).
fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        o[j] = d * ((b[2 + j] & 15) as f32 - 8.0);
        o[j + 16] = d * ((b[2 + j] >> 4) as f32 - 8.0);
    }
}

/// Q4_1 (20 bytes): d, m, then nibbles as in Q4_0; w = d * q + m.
fn q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        o[j] = d * (b[4 + j] & 15) as f32 + m;
        o[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
    }
}

/// Q5_0 (22 bytes): d, a u32 of fifth bits (bit j for weight j), then nibbles as in
/// Q4_0; w = d * (q - 16).
fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let lo = (b[6 + j] & 15) as u32 | ((qh >> j) & 1) << 4;
        let hi = (b[6 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        o[j] = d * (lo as f32 - 16.0);
        o[j + 16] = d * (hi as f32 - 16.0);
    }
}

/// Q8_0 (34 bytes): d, then 32 i8; w = d * q.
fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        o[j] = d * (b[2 + j] as i8) as f32;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed in
/// 12 bytes: sub-blocks 0..4 in the low six bits of bytes j and j + 4, sub-blocks
/// 4..8 in a nibble of bytes j + 4 with their top two bits in bytes j - 4 and j.
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K (144 bytes, 256 weights): d, dmin, 12 bytes of scales, 128 bytes of nibbles.
/// Eight sub-blocks of 32; each 32 bytes of nibbles hold sub-block 2i in their low
/// halves and 2i + 1 in their high halves; w = d * sc * q - dmin * m.
fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, qs) = (&b[4..16], &b[16..144]);
    for i in 0..4 {
        let (s0, m0) = scale_min_k4(2 * i, sc);
        let (s1, m1) = scale_min_k4(2 * i + 1, sc);
        let q = &qs[32 * i..32 * i + 32];
        for l in 0..32 {
            o[64 * i + l] = d * s0 as f32 * (q[l] & 15) as f32 - dmin * m0 as f32;
            o[64 * i + 32 + l] = d * s1 as f32 * (q[l] >> 4) as f32 - dmin * m1 as f32;
        }
    }
}

/// Q5_K (176 bytes): d, dmin, 12 bytes of scales, 32 bytes of fifth bits, 128 of
/// nibbles laid out as in Q4_K; sub-block s takes its fifth bit from bit s of qh[l].
fn q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for i in 0..4 {
        let (s0, m0) = scale_min_k4(2 * i, sc);
        let (s1, m1) = scale_min_k4(2 * i + 1, sc);
        let q = &qs[32 * i..32 * i + 32];
        for l in 0..32 {
            let lo = (q[l] & 15) | ((qh[l] >> (2 * i)) & 1) << 4;
            let hi = (q[l] >> 4) | ((qh[l] >> (2 * i + 1)) & 1) << 4;
            o[64 * i + l] = d * s0 as f32 * lo as f32 - dmin * m0 as f32;
            o[64 * i + 32 + l] = d * s1 as f32 * hi as f32 - dmin * m1 as f32;
        }
    }
}

/// Q6_K (210 bytes): 128 bytes of low nibbles, 64 of high two-bit pairs, 16 i8
/// scales (one per 16 weights), then d; w = d * scale * (q - 32). Each half of 128
/// weights uses 64 bytes of ql and 32 of qh: weight l + 32 t (t = 0..4) takes the
/// low or high nibble of ql[l + 32 (t & 1)] and bits 2t..2t + 2 of qh[l].
fn q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for h in 0..2 {
        let (ql, qh, sc, o) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..], &mut o[128 * h..]);
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 15) | (qh[l] & 3) << 4,
                (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4,
                (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4,
                (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,
            ];
            for (t, &q) in q.iter().enumerate() {
                o[l + 32 * t] = d * (sc[is + 2 * t] as i8) as f32 * (q as i32 - 32) as f32;
            }
        }
    }
}
