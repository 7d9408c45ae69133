//! AVX2 (with FMA and F16C) and AVX-512 VNNI vec_dots: one weight row against C activation rows at once
//! (C = 1 for decode, 4 or 8 for prefill), so a weight block is loaded and unpacked
//! once per C tokens; for the 32-weight types also R rows x C tokens, so an
//! activation block serves R rows. Every (row, token) pair runs the same
//! instructions whatever R and C are, so a token's result does not depend on its
//! batch.
//!
//! Each block's integer dot product lands in eight i32 lanes (lane i sums bytes
//! 4i..4i + 4 of the 32-byte group), is converted to f32 and accumulated with one
//! fma per block (K-quants: per 256-weight super-block) into eight f32 lanes,
//! summed at the end. VNNI (`vpdpbusd`, `vpdpwssd` on 256-bit registers) fuses the
//! u8 x i8 multiply, the pairwise add and the accumulate that AVX2 does in three
//! instructions (`vpmaddubsw`, `vpmaddwd`, `vpaddd`); the integers are the same
//! (no product pair here reaches i16 saturation: |u| <= 128, |y| <= 127), so both
//! levels give bit-identical results.

use std::arch::x86_64::*;

use super::act::ActRow;
use crate::model::quant::QType;

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` is whole blocks of `ty` and every row of `a`
/// is quantized for `ty` to as many blocks (`quant::check_acts`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_avx2<const C: usize>(ty: QType, w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    dispatch::<false, C>(ty, w, a)
}

/// # Safety
/// As `dot_avx2`, and the CPU has AVX-512 F, VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn dot_vnni<const C: usize>(ty: QType, w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    dispatch::<true, C>(ty, w, a)
}

/// R weight rows of one 32-weight type against C activation rows: `dot_avx2::<C>`
/// per row, bit for bit, with each activation block loaded once for the R rows.
///
/// # Safety
/// As `dot_avx2` for each row of `w`, and `ty` is one of the 32-weight types.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_avx2<const R: usize, const C: usize>(
    ty: QType,
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    rows_dispatch::<false, R, C>(ty, w, a)
}

/// # Safety
/// As `dot_rows_avx2`, and the CPU has AVX-512 F, VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn dot_rows_vnni<const R: usize, const C: usize>(
    ty: QType,
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    rows_dispatch::<true, R, C>(ty, w, a)
}

/// `dot_rows_vnni` with 512-bit registers: each zmm holds an even block's 8 lanes
/// below and the next odd block's above, which are `rows32`'s two chains side by
/// side, so one pass does what its two passes do, with the same integers and the same
/// f32 steps per lane (bit for bit; the tests compare). Not Q4_1: its per-block
/// mins are scalar work per (row, token), which measured slower in this form.
///
/// # Safety
/// As `dot_rows_vnni`, the CPU has AVX-512 BW, and `ty` is Q4_0, Q5_0 or Q8_0.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub unsafe fn dot_rows_vnni512<const R: usize, const C: usize>(
    ty: QType,
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    match ty {
        QType::Q4_0 => rows32x2::<R, C, T4_0>(w, a),
        QType::Q5_0 => rows32x2::<R, C, T5_0>(w, a),
        QType::Q8_0 => rows32x2::<R, C, T8_0>(w, a),
        _ => unreachable!("{ty} has no 512-bit row tile"),
    }
}

#[inline(always)]
unsafe fn rows_dispatch<const V: bool, const R: usize, const C: usize>(
    ty: QType,
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    match ty {
        QType::Q4_0 => rows32::<V, R, C, T4_0>(w, a),
        QType::Q4_1 => rows32::<V, R, C, T4_1>(w, a),
        QType::Q5_0 => rows32::<V, R, C, T5_0>(w, a),
        QType::Q8_0 => rows32::<V, R, C, T8_0>(w, a),
        _ => unreachable!("{ty} has no row tile"),
    }
}

#[inline(always)]
unsafe fn dispatch<const V: bool, const C: usize>(ty: QType, w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    match ty {
        QType::Q4_0 => blocks32::<V, C, T4_0>(w, a),
        QType::Q4_1 => blocks32::<V, C, T4_1>(w, a),
        QType::Q5_0 => blocks32::<V, C, T5_0>(w, a),
        QType::Q8_0 => blocks32::<V, C, T8_0>(w, a),
        QType::Q4_K => q45_k::<V, C, false>(w, a),
        QType::Q5_K => q45_k::<V, C, true>(w, a),
        QType::Q6_K => q6_k::<V, C>(w, a),
    }
}

/// acc + (u8 x i8 products summed in fours).
#[inline(always)]
unsafe fn dpbusd<const V: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    if V {
        _mm256_dpbusd_epi32(acc, u, s)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
    }
}

/// acc + (i16 x i16 products summed in pairs).
#[inline(always)]
unsafe fn dpwssd<const V: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    if V {
        _mm256_dpwssd_epi32(acc, a, b)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
}

/// An f16 scale widened with F16C (`half` would check for F16C on every call).
///
/// In assembly because every intrinsic form of it (`_mm_cvtsi32_si128`, a broadcast)
/// reaches LLVM as "only lane 0 matters", which it compiles to a `vpinsrw` merging
/// into whatever register it picks; in the Q4_1 decode loop that was the mins
/// accumulator, a false dependency chaining the blocks' conversions (49,152 x 576
/// against one token, one core, Xeon: 10.5 -> 12.7 GMAC/s). `vmovd` zeroes the rest
/// of the register.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let v: __m128;
    std::arch::asm!(
        "movzx {t:e}, word ptr [{p}]",
        "vmovd {v}, {t:e}",
        "vcvtph2ps {v}, {v}",
        p = in(reg) p,
        t = out(reg) _,
        v = out(xmm_reg) v,
        options(pure, readonly, nostack, preserves_flags)
    );
    _mm_cvtss_f32(v)
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Four integer partial sums (split so VNNI's accumulate chains run in parallel;
/// integer addition is exact, so the split changes no result).
#[inline(always)]
unsafe fn sum4(v: [__m256i; 4]) -> __m256i {
    _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]))
}

#[inline(always)]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes of nibbles as 32 bytes: low nibbles (weights 0..16), then high ones.
#[inline(always)]
unsafe fn nibbles16(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    _mm256_and_si256(v, _mm256_set1_epi8(15))
}

/// Byte j is 0x10 where bit j of `qh` is set.
#[inline(always)]
unsafe fn bit4_from_bits(qh: u32) -> __m256i {
    let spread = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 32-weight types, one const per type (closures would lose the caller's
/// target features, so the variants are consts, not functions passed in).
const T4_0: u8 = 0;
const T4_1: u8 = 1;
const T5_0: u8 = 2;
const T8_0: u8 = 3;

#[inline(always)]
unsafe fn blocks32<const V: bool, const C: usize, const T: u8>(w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    let bb = [18, 20, 22, 34][T as usize];
    let nb = w.len() / bb;
    // even blocks into acc[0], odd into acc[1]: two fma chains
    let mut acc = [[_mm256_setzero_ps(); C]; 2];
    let mut mins = [[0f32; C]; 2];
    let mut b = 0;
    while b + 2 <= nb {
        block32::<V, C, T>(w.as_ptr().add(b * bb), a, b, &mut acc[0], &mut mins[0]);
        block32::<V, C, T>(w.as_ptr().add((b + 1) * bb), a, b + 1, &mut acc[1], &mut mins[1]);
        b += 2;
    }
    if b < nb {
        block32::<V, C, T>(w.as_ptr().add(b * bb), a, b, &mut acc[0], &mut mins[0]);
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = hsum(_mm256_add_ps(acc[0][c], acc[1][c]));
        if T == T4_1 {
            out[c] += mins[0][c] + mins[1][c];
        }
    }
    out
}

/// `blocks32`'s two chains, each in a pass of its own (even blocks, then odd), so a
/// pass keeps one accumulator per (row, token) and R x C of them fit the registers.
/// Each weight block is unpacked once per C tokens and each activation block loaded
/// once per R rows; per pair the instructions are `block32`'s.
#[inline(always)]
unsafe fn rows32<const V: bool, const R: usize, const C: usize, const T: u8>(
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    let bb = [18, 20, 22, 34][T as usize];
    let nb = w[0].len() / bb;
    let wp = w.map(|r| r.as_ptr());
    let mut chains = [[[_mm256_setzero_ps(); C]; R]; 2];
    let mut mins = [[[0f32; C]; R]; 2];
    for chain in 0..2 {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut b = chain;
        while b < nb {
            let wb: [_; R] = std::array::from_fn(|r| unpack32::<T>(wp[r].add(b * bb)));
            for c in 0..C {
                for r in 0..R {
                    pair32::<V, T>(wb[r], &a[c], b, &mut acc[r][c]);
                    if T == T4_1 {
                        mins[chain][r][c] += f16_at(wp[r].add(b * bb + 2)) * *a[c].s.get_unchecked(b);
                    }
                }
            }
            b += 2;
        }
        chains[chain] = acc;
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum(_mm256_add_ps(chains[0][r][c], chains[1][r][c]));
            if T == T4_1 {
                out[r][c] += mins[0][r][c] + mins[1][r][c];
            }
        }
    }
    out
}

/// Lanes 0..8 = v[0], lanes 8..16 = v[1], for two consecutive f32 at `p`.
#[inline(always)]
unsafe fn pair_f32(p: *const f32) -> __m512 {
    let two = _mm_castpd_ps(_mm_load_sd(p as *const f64));
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(two))
}

/// `rows32` (VNNI) over block pairs (b, b + 1) in 512-bit registers: lanes 0..8 are
/// chain 0's accumulator, lanes 8..16 chain 1's. An odd last block goes to chain 0
/// alone, last, as in `rows32`. Not for Q4_1 (no mins here).
#[inline(always)]
unsafe fn rows32x2<const R: usize, const C: usize, const T: u8>(
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    let bb = [18, 20, 22, 34][T as usize];
    let nb = w[0].len() / bb;
    let wp = w.map(|r| r.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut b = 0;
    while b + 2 <= nb {
        // per row: both blocks' scales and the unsigned operand; Q8_0's is q + 128
        // (`vpdpbusd` sums u8 x i8 products into i32 without saturating, so the
        // 128 * y it adds is taken off exactly by the token's start value below, and
        // each lane's integer is sum(q y) as `vpsignb` and |q| gave it)
        let wb: [_; R] = std::array::from_fn(|r| {
            let p = wp[r].add(b * bb);
            let dw = [f16_at(p), f16_at(p.add(bb))];
            let (lo, hi) = (unpack32::<T>(p), unpack32::<T>(p.add(bb)));
            let q = _mm512_inserti64x4(_mm512_castsi256_si512(lo.1), hi.1, 1);
            let u = if T == T8_0 { _mm512_xor_si512(q, _mm512_set1_epi8(-128)) } else { q };
            (pair_f32(dw.as_ptr()), u)
        });
        for c in 0..C {
            let y = _mm512_loadu_si512(a[c].qs.as_ptr().add(32 * b) as *const _);
            let dy = pair_f32(a[c].d.as_ptr().add(b));
            let start = match T {
                T4_0 | T5_0 => {
                    let off = if T == T4_0 { 8 } else { 16 };
                    let s0 = _mm_cvtsi32_si128(-off * *a[c].sums.get_unchecked(b) as i32);
                    let s1 = _mm_cvtsi32_si128(-off * *a[c].sums.get_unchecked(b + 1) as i32);
                    _mm512_inserti32x4(_mm512_zextsi128_si512(s0), s1, 2)
                }
                // -128 * (y's four bytes) per lane (|y| <= 127, so -y is exact)
                T8_0 => _mm512_dpbusd_epi32(
                    _mm512_setzero_si512(),
                    _mm512_set1_epi8(-128),
                    _mm512_sub_epi8(_mm512_setzero_si512(), y),
                ),
                _ => _mm512_setzero_si512(),
            };
            for r in 0..R {
                let (dw, u) = wb[r];
                let s = _mm512_dpbusd_epi32(start, u, y);
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(s), acc[r][c]);
            }
        }
        b += 2;
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let mut even = _mm512_castps512_ps256(acc[r][c]);
            if b < nb {
                pair32::<true, T>(unpack32::<T>(wp[r].add(b * bb)), &a[c], b, &mut even);
            }
            let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][c]), 1));
            out[r][c] = hsum(_mm256_add_ps(even, odd));
        }
    }
    out
}

/// Block `b` (at `p`) against the C activation rows.
#[inline(always)]
unsafe fn block32<const V: bool, const C: usize, const T: u8>(
    p: *const u8,
    a: &[ActRow; C],
    b: usize,
    acc: &mut [__m256; C],
    mins: &mut [f32; C],
) {
    let wb = unpack32::<T>(p);
    for c in 0..C {
        pair32::<V, T>(wb, &a[c], b, &mut acc[c]);
        if T == T4_1 {
            mins[c] += f16_at(p.add(2)) * *a[c].s.get_unchecked(b);
        }
    }
}

/// A 32-weight block (at `p`): its scale broadcast, its weights q (for Q4_0 and Q5_0
/// before the offset) and the unsigned operand (|q| for the signed Q8_0, else q).
#[inline(always)]
unsafe fn unpack32<const T: u8>(p: *const u8) -> (__m256, __m256i, __m256i) {
    let dwv = _mm256_set1_ps(f16_at(p));
    let q = match T {
        T4_0 => nibbles16(p.add(2)),
        T4_1 => nibbles16(p.add(4)),
        T5_0 => {
            let qh = (p.add(2) as *const u32).read_unaligned();
            _mm256_or_si256(nibbles16(p.add(6)), bit4_from_bits(qh))
        }
        _ => load(p.add(2) as *const i8),
    };
    (dwv, q, if T == T8_0 { _mm256_sign_epi8(q, q) } else { q })
}

/// acc + d_w * d_y * (w . y) for an unpacked weight block and activation block `b` of
/// `a`. Q4_0 (q - 8) and Q5_0 (q - 16) take the offset as -off * sum(y) in lane 0's
/// start value; Q8_0's y takes w's sign (w's magnitude is the unsigned operand);
/// Q4_1's m * s is the caller's.
#[inline(always)]
unsafe fn pair32<const V: bool, const T: u8>(
    (dwv, q, u): (__m256, __m256i, __m256i),
    a: &ActRow,
    b: usize,
    acc: &mut __m256,
) {
    let mut y = load(a.qs.as_ptr().add(32 * b));
    let start = match T {
        T4_0 | T5_0 => {
            let off = if T == T4_0 { 8 } else { 16 };
            _mm256_zextsi128_si256(_mm_cvtsi32_si128(-off * *a.sums.get_unchecked(b) as i32))
        }
        _ => _mm256_setzero_si256(),
    };
    if T == T8_0 {
        y = _mm256_sign_epi8(y, q);
    }
    let s = dpbusd::<V>(start, u, y);
    let d = _mm256_mul_ps(dwv, _mm256_broadcast_ss(a.d.get_unchecked(b)));
    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *acc);
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K block (see `scale_min_k4`), from
/// its 12 bytes read as three little-endian words.
#[inline(always)]
unsafe fn scales_mins_k4(p: *const u8) -> (u64, u64) {
    let w = p as *const u32;
    let (a, b, c) = (w.read_unaligned(), w.add(1).read_unaligned(), w.add(2).read_unaligned());
    let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 6) & 0x0303_0303) << 4;
    let mn_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 6) & 0x0303_0303) << 4;
    let sc = (a & 0x3f3f_3f3f) as u64 | (sc_hi as u64) << 32;
    let mn = (b & 0x3f3f_3f3f) as u64 | (mn_hi as u64) << 32;
    (sc, mn)
}

/// The i16 at index j of each 128-bit lane, broadcast over that lane.
#[inline(always)]
unsafe fn pick16(v: __m256i, j: i16) -> __m256i {
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)))
}

#[inline(always)]
unsafe fn q45_k<const V: bool, const C: usize, const FIVE: bool>(w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    let bb = if FIVE { 176 } else { 144 };
    let m4 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); C];
    let mut accm = [_mm256_setzero_ps(); C];
    for b in 0..w.len() / bb {
        let p = w.as_ptr().add(b * bb);
        let (dw, dmin) = (f16_at(p), f16_at(p.add(2)));
        let (sc, mn) = scales_mins_k4(p.add(4));
        // scales as i16 in both lanes; mins as i16 pairs (m0 m0 m1 m1 ..) for bsums
        let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let mnb = _mm_cvtsi64_si128(mn as i64);
        let mnv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mnb, mnb));
        let qs = p.add(if FIVE { 48 } else { 16 }) as *const i8;
        let mut hb = if FIVE { load(p.add(16) as *const i8) } else { _mm256_setzero_si256() };
        let mut sumi = [[_mm256_setzero_si256(); 4]; C];
        for i in 0..4 {
            let raw = load(qs.add(32 * i));
            let mut lo = _mm256_and_si256(raw, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            if FIVE {
                let one = _mm256_set1_epi8(1);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(
                    hi,
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4),
                );
                hb = _mm256_srli_epi16(hb, 2);
            }
            let (s_lo, s_hi) = (pick16(scv, 2 * i as i16), pick16(scv, 2 * i as i16 + 1));
            for c in 0..C {
                let y = a[c].qs.as_ptr().add(256 * b + 64 * i);
                let (e, o) = (2 * (i & 1), 2 * (i & 1) + 1);
                sumi[c][e] = dpwssd::<V>(sumi[c][e], _mm256_maddubs_epi16(lo, load(y)), s_lo);
                sumi[c][o] = dpwssd::<V>(sumi[c][o], _mm256_maddubs_epi16(hi, load(y.add(32))), s_hi);
            }
        }
        for c in 0..C {
            let dy = *a[c].d.get_unchecked(b);
            let bs = _mm256_loadu_si256(a[c].sums.as_ptr().add(16 * b) as *const __m256i);
            let summ = _mm256_madd_epi16(bs, mnv);
            let si = sum4(sumi[c]);
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dy), _mm256_cvtepi32_ps(si), acc[c]);
            accm[c] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * dy), _mm256_cvtepi32_ps(summ), accm[c]);
        }
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = hsum(acc[c]) - hsum(accm[c]);
    }
    out
}

#[inline(always)]
unsafe fn q6_k<const V: bool, const C: usize>(w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    let m4 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..w.len() / 210 {
        let p = w.as_ptr().add(b * 210);
        let dwv = _mm256_set1_ps(f16_at(p.add(208)));
        let scb = _mm_loadu_si128(p.add(192) as *const __m128i);
        // -32 * sum over groups of scale * bsum: the q - 32 offset
        let sc16 = _mm256_cvtepi8_epi16(scb);
        let mut sumi = [[_mm256_setzero_si256(); 4]; C];
        for c in 0..C {
            let bs = _mm256_loadu_si256(a[c].sums.as_ptr().add(16 * b) as *const __m256i);
            sumi[c][0] = _mm256_sub_epi32(sumi[c][0], _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
        }
        for h in 0..2 {
            let ql0 = load(p.add(64 * h) as *const i8);
            let ql1 = load(p.add(64 * h + 32) as *const i8);
            let qh = load(p.add(128 + 32 * h) as *const i8);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(3)), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8)), 2),
                ),
            ];
            // chunk t: scale 8h + 2t on the low 16 weights, 8h + 2t + 1 on the high
            let s8 = _mm_cvtepi8_epi16(if h == 0 { scb } else { _mm_srli_si128(scb, 8) });
            let pairs = _mm256_set_m128i(_mm_srli_epi32(s8, 16), s8);
            for (t, &qt) in q.iter().enumerate() {
                let st = pick16(pairs, 2 * t as i16);
                for c in 0..C {
                    let y = load(a[c].qs.as_ptr().add(256 * b + 128 * h + 32 * t));
                    sumi[c][t] = dpwssd::<V>(sumi[c][t], _mm256_maddubs_epi16(qt, y), st);
                }
            }
        }
        for c in 0..C {
            let d = _mm256_mul_ps(dwv, _mm256_broadcast_ss(a[c].d.get_unchecked(b)));
            acc[c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum4(sumi[c])), acc[c]);
        }
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = hsum(acc[c]);
    }
    out
}
