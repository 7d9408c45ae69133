//! Dot products of a weight row (f32 or bf16 bits) with f32 activations: the inner
//! loop of every matmul on the CPU. AVX2+FMA when the CPU has it (checked once at
//! run time, so one binary runs everywhere), a portable loop otherwise.
//!
//! `dot4` shares one weight row between four activation rows: prefill and batched
//! decode then read each weight once per four tokens instead of once per token.

/// A weight element type the dot kernels accept.
pub trait WeightElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// bf16 stored as its bit pattern; widening is a 16-bit shift.
impl WeightElem for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
}

pub fn dot<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal.
        return unsafe { x86::dot(w, x) };
    }
    portable_dot(w, x)
}

pub fn dot4<W: WeightElem>(w: &[W], x: [&[f32]; 4]) -> [f32; 4] {
    debug_assert!(x.iter().all(|r| r.len() == w.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as in `dot`.
        return unsafe { x86::dot4(w, x) };
    }
    x.map(|r| portable_dot(w, r))
}

/// Eight partial sums so the compiler can keep them in one vector register. (Its
/// order differs from the AVX2 path's, but every row of a batch takes the same path.)
fn portable_dot<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = w.len() / 8 * 8;
    for (wc, xc) in w[..n8].chunks_exact(8).zip(x[..n8].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += wc[i].to_f32() * xc[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..w.len() {
        s += w[i].to_f32() * x[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::WeightElem;
    use std::any::TypeId;
    use std::arch::x86_64::*;

    /// Eight weights starting at `w` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8<W: WeightElem>(w: *const W) -> __m256 {
        if TypeId::of::<W>() == TypeId::of::<u16>() {
            let h = _mm_loadu_si128(w as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_loadu_ps(w as *const f32)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Two accumulators, even and odd 8-lane chunks, then the scalar tail: the same
    /// order of additions as each row of `dot4`, so a token's result does not depend
    /// on how many tokens share its batch. Two chains already outrun what one core
    /// can stream (4 vs ~2.5 floats per cycle).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
        let n = w.len();
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            a[0] = _mm256_fmadd_ps(load8(wp.add(i)), _mm256_loadu_ps(xp.add(i)), a[0]);
            a[1] = _mm256_fmadd_ps(load8(wp.add(i + 8)), _mm256_loadu_ps(xp.add(i + 8)), a[1]);
            i += 16;
        }
        if i + 8 <= n {
            a[0] = _mm256_fmadd_ps(load8(wp.add(i)), _mm256_loadu_ps(xp.add(i)), a[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(a[0], a[1]));
        while i < n {
            s += w[i].to_f32() * x[i];
            i += 1;
        }
        s
    }

    /// Four rows against one weight row, each row summed exactly as `dot` sums it.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4<W: WeightElem>(w: &[W], x: [&[f32]; 4]) -> [f32; 4] {
        let n = w.len();
        let wp = w.as_ptr();
        let xp = x.map(|r| r.as_ptr());
        let mut a = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 16 <= n {
            let (w0, w1) = (load8(wp.add(i)), load8(wp.add(i + 8)));
            for r in 0..4 {
                a[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[r].add(i)), a[r][0]);
                a[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp[r].add(i + 8)), a[r][1]);
            }
            i += 16;
        }
        if i + 8 <= n {
            let w0 = load8(wp.add(i));
            for r in 0..4 {
                a[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[r].add(i)), a[r][0]);
            }
            i += 8;
        }
        let mut s = a.map(|ar| hsum(_mm256_add_ps(ar[0], ar[1])));
        while i < n {
            let wi = w[i].to_f32();
            for r in 0..4 {
                s[r] += wi * x[r][i];
            }
            i += 1;
        }
        s
    }
}
