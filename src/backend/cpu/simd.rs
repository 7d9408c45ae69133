//! Dot products of a weight row (f32 or bf16 bits) with f32 activations: the inner
//! loop of every matmul on the CPU. AVX2+FMA when the CPU has it (checked once at
//! run time, so one binary runs everywhere), a portable loop otherwise.
//!
//! `dot4` shares one weight row between four activation rows; `tile` goes further for
//! prefill: R weight rows against T token rows with every product in a register, so each
//! loaded vector feeds several multiply-adds. All three sum a (weight row, token) pair in
//! the same order, so a token's result never depends on the batch it shares.

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

/// Which code `tile` and `add_scaled_prefixes` run: the best this CPU has, or (for
/// tests, which compare every path the CPU runs) another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `dot` per pair (itself AVX2 where the CPU has it), no register tile.
    Portable,
    Avx2,
    Avx512,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Portable, Path::Avx2, Path::Avx512];

    pub fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            return Path::Avx512;
        } else if has_avx2_fma() {
            return Path::Avx2;
        }
        Path::Portable
    }

    pub fn available(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => has_avx2_fma(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// `$go!(n)` with the count n (1 to 6, a tile's activation rows) as a literal, for
/// const-generic tile shapes.
macro_rules! up_to_six {
    ($n:expr, $go:ident) => {
        match $n {
            6 => $go!(6),
            5 => $go!(5),
            4 => $go!(4),
            3 => $go!(3),
            2 => $go!(2),
            _ => $go!(1),
        }
    };
}

/// out[t][r] = dot(w[r], x[t]) for R weight rows and T activation rows of one length;
/// bit for bit what `dot` returns for each pair.
pub fn tile<W: WeightElem, const R: usize, const T: usize>(w: [&[W]; R], x: [&[f32]; T]) -> [[f32; R]; T] {
    tile_on(Path::best(), w, x)
}

/// `tile` on the given path; panics if this CPU cannot run it.
pub fn tile_on<W: WeightElem, const R: usize, const T: usize>(
    path: Path,
    w: [&[W]; R],
    x: [&[f32]; T],
) -> [[f32; R]; T] {
    let k = x.first().map_or(0, |r| r.len());
    assert!(w.iter().all(|r| r.len() == k) && x.iter().all(|r| r.len() == k), "tile: rows of unequal length");
    assert!(path.available(), "tile: this CPU cannot run the {path:?} path");
    match path {
        // SAFETY (both): the CPU runs the path (checked above); every row is k long.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { x86::tile::<W, R, T>(w.map(|r| r.as_ptr()), x.map(|r| r.as_ptr()), k) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::tile8::<W, R, T>(w.map(|r| r.as_ptr()), x.map(|r| r.as_ptr()), k) },
        _ => x.map(|xr| w.map(|wr| dot(wr, xr))),
    }
}

/// `put(t, r, dot(w[r], x[t]))` for every pair, in register tiles of 4 (AVX-512) or 2
/// weight rows x 6 activation rows: activation tiles outer, so 6 rows stay in L1 while
/// the weight rows stream past them. With AVX2, rows longer than `x86::SPAN_VALUES`
/// go along k in spans over all the weight rows, so that a span of the 6 rows is what
/// stays in L1 (`x86::tiles8`).
pub fn dots<W: WeightElem>(w: &[&[W]], x: &[&[f32]], put: impl FnMut(usize, usize, f32)) {
    dots_on(Path::best(), w, x, put)
}

/// `dots` on the given path; panics if this CPU cannot run it.
pub fn dots_on<W: WeightElem>(path: Path, w: &[&[W]], x: &[&[f32]], mut put: impl FnMut(usize, usize, f32)) {
    assert!(path.available(), "dots: this CPU cannot run the {path:?} path");
    let k = x.first().map_or(0, |r| r.len());
    assert!(w.iter().all(|r| r.len() == k) && x.iter().all(|r| r.len() == k), "dots: rows of unequal length");
    let tr = match path {
        Path::Avx512 => 4,
        Path::Avx2 => 2,
        Path::Portable => 1,
    };
    for t0 in (0..x.len()).step_by(6) {
        let xs = &x[t0..(t0 + 6).min(x.len())];
        #[cfg(target_arch = "x86_64")]
        if path == Path::Avx2 && k > x86::SPAN_VALUES {
            long_rows8(w, xs, k, &mut |t, r, v| put(t0 + t, r, v));
            continue;
        }
        let mut r0 = 0;
        while r0 < w.len() {
            let rows = if w.len() - r0 >= tr { tr } else { 1 };
            let mut out = |t: usize, r: usize, v: f32| put(t0 + t, r0 + r, v);
            let ws = &w[r0..r0 + rows];
            macro_rules! go {
                ($r:literal, $t:literal) => {
                    emit(
                        &tile_on::<W, $r, $t>(
                            path,
                            std::array::from_fn(|i| ws[i]),
                            std::array::from_fn(|i| xs[i]),
                        ),
                        &mut out,
                    )
                };
            }
            match (rows, xs.len()) {
                (4, 6) => go!(4, 6),
                (4, 5) => go!(4, 5),
                (4, 4) => go!(4, 4),
                (4, 3) => go!(4, 3),
                (4, 2) => go!(4, 2),
                (4, _) => go!(4, 1),
                (2, 6) => go!(2, 6),
                (2, 5) => go!(2, 5),
                (2, 4) => go!(2, 4),
                (2, 3) => go!(2, 3),
                (2, 2) => go!(2, 2),
                (2, _) => go!(2, 1),
                (_, 6) => go!(1, 6),
                (_, 5) => go!(1, 5),
                (_, 4) => go!(1, 4),
                (_, 3) => go!(1, 3),
                (_, 2) => go!(1, 2),
                _ => go!(1, 1),
            }
            r0 += rows;
        }
    }
}

/// AVX2's `dots` for rows longer than a span, up to 6 activation rows: every pair of
/// weight rows (and a last odd one) in one `x86::tiles8` call, which goes along k span
/// by span over all of them, so the activation rows' span stays in L1.
#[cfg(target_arch = "x86_64")]
fn long_rows8<W: WeightElem>(w: &[&[W]], xs: &[&[f32]], k: usize, out: &mut impl FnMut(usize, usize, f32)) {
    let pairs: Vec<[*const W; 2]> = w.chunks_exact(2).map(|p| [p[0].as_ptr(), p[1].as_ptr()]).collect();
    let last = (w.len() % 2 == 1).then(|| w.len() - 1);
    macro_rules! go {
        ($t:literal) => {{
            let xp: [*const f32; $t] = std::array::from_fn(|i| xs[i].as_ptr());
            // SAFETY (both): `dots_on` checked that the CPU runs AVX2 and that every row
            // is k long.
            let sums = unsafe { x86::tiles8::<W, 2, $t>(&pairs, xp, k) };
            for (g, s) in sums.iter().enumerate() {
                emit(s, &mut |t, r, v| out(t, 2 * g + r, v));
            }
            if let Some(r) = last {
                let sums = unsafe { x86::tiles8::<W, 1, $t>(&[[w[r].as_ptr()]], xp, k) };
                emit(&sums[0], &mut |t, _, v| out(t, r, v));
            }
        }};
    }
    up_to_six!(xs.len(), go);
}

fn emit<const R: usize, const T: usize>(s: &[[f32; R]; T], put: &mut impl FnMut(usize, usize, f32)) {
    for (t, st) in s.iter().enumerate() {
        for (r, &v) in st.iter().enumerate() {
            put(t, r, v);
        }
    }
}

/// Whether `tile` has a register-blocked path on this CPU (else it is `dot` per pair).
pub fn tile_is_blocked() -> bool {
    Path::best() != Path::Portable
}

/// acc[i] += p * v[i], a product then a sum, each rounded (no fused multiply-add), so
/// every path gives the scalar loop's bits.
fn add_scaled(path: Path, acc: &mut [f32], p: f32, v: &[f32]) {
    assert_eq!(acc.len(), v.len(), "add_scaled: lengths differ");
    match path {
        // SAFETY (both): the CPU runs the path (`add_scaled_prefixes_on` checked it);
        // lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { x86::add_scaled(acc, p, v) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::add_scaled8(acc, p, v) },
        _ => {
            for (a, x) in acc.iter_mut().zip(v) {
                *a += p * x;
            }
        }
    }
}

/// Row r of `acc` (rows of acc.len() / p.len()) += p[r][j] * v[j] for j in
/// 0..lens[r], in j order: `add_scaled` per (r, j), bit for bit. Rows go in tiles of 6
/// through `add_scaled_rows` over the positions every row of the tile takes, then each
/// row alone over the rest (attention's p * v, rows being a kv group's query heads).
pub fn add_scaled_prefixes(acc: &mut [f32], p: &[&[f32]], lens: &[usize], v: &[&[f32]]) {
    add_scaled_prefixes_on(Path::best(), acc, p, lens, v)
}

/// `add_scaled_prefixes` on the given path; panics if this CPU cannot run it.
pub fn add_scaled_prefixes_on(path: Path, acc: &mut [f32], p: &[&[f32]], lens: &[usize], v: &[&[f32]]) {
    assert!(path.available(), "add_scaled_prefixes: this CPU cannot run the {path:?} path");
    let rows = p.len();
    assert_eq!(lens.len(), rows, "add_scaled_prefixes: {} lengths for {rows} rows", lens.len());
    if rows == 0 {
        return;
    }
    assert_eq!(acc.len() % rows, 0, "add_scaled_prefixes: {} values in {rows} rows", acc.len());
    let d = acc.len() / rows;
    for (ti, tile) in acc.chunks_mut(6 * d).enumerate() {
        let (ps, ls) = (&p[6 * ti..][..tile.len() / d], &lens[6 * ti..][..tile.len() / d]);
        let common = ls.iter().copied().min().unwrap_or(0);
        let mut a: Vec<&mut [f32]> = tile.chunks_mut(d).collect();
        macro_rules! go {
            ($t:literal) => {{
                let a: [&mut [f32]; $t] = std::array::from_fn(|i| std::mem::take(&mut a[i]));
                add_scaled_rows::<$t>(path, a, std::array::from_fn(|i| ps[i]), &v[..common]);
            }};
        }
        up_to_six!(ps.len(), go);
        for ((row, pr), &len) in tile.chunks_mut(d).zip(ps).zip(ls) {
            for (j, vj) in v.iter().enumerate().take(len).skip(common) {
                add_scaled(path, row, pr[j], vj);
            }
        }
    }
}

/// acc[t] += p[t][j] * v[j] for j in order, for T rows of 64 (four 16-lane vectors):
/// `add_scaled` per (t, j), bit for bit, with each v[j] loaded once for all T rows and
/// the rows' sums kept in registers. Rows of another length go through `add_scaled`.
fn add_scaled_rows<const T: usize>(path: Path, acc: [&mut [f32]; T], p: [&[f32]; T], v: &[&[f32]]) {
    let n = v.len();
    assert!(p.iter().all(|r| r.len() >= n), "add_scaled_rows: fewer weights than rows of v");
    let rows64 = acc.iter().all(|a| a.len() == 64) && v.iter().all(|r| r.len() == 64);
    #[cfg(target_arch = "x86_64")]
    if path == Path::Avx512 && rows64 {
        // SAFETY: the CPU runs AVX-512F (the caller checked the path); every row is 64
        // long and p has a weight for every row of v.
        return unsafe { x86::add_scaled_rows::<T>(acc.map(|a| a.as_mut_ptr()), p.map(|r| r.as_ptr()), v) };
    }
    #[cfg(target_arch = "x86_64")]
    if path == Path::Avx2 && rows64 {
        let (acc, p) = (acc.map(|a| a.as_mut_ptr()), p.map(|r| r.as_ptr()));
        for t in (0..T).step_by(2) {
            for half in [0, 32] {
                // SAFETY: the CPU runs AVX2 (the caller checked the path); every row
                // is 64 long and p has a weight for every row of v.
                unsafe {
                    if t + 1 < T {
                        x86::add_scaled_half_rows::<2>([acc[t], acc[t + 1]], [p[t], p[t + 1]], v, half)
                    } else {
                        x86::add_scaled_half_rows::<1>([acc[t]], [p[t]], v, half)
                    }
                }
            }
        }
        return;
    }
    for (j, vj) in v.iter().enumerate() {
        for t in 0..T {
            add_scaled(path, acc[t], p[t][j], vj);
        }
    }
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

/// `tile`'s path also needs AVX2 and FMA: its tail and final sum are `dot`'s.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("avx512f"))
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

    /// Sixteen weights starting at `w` as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load16<W: WeightElem>(w: *const W) -> __m512 {
        if TypeId::of::<W>() == TypeId::of::<u16>() {
            let h = _mm256_loadu_si256(w as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        } else {
            _mm512_loadu_ps(w as *const f32)
        }
    }

    /// `dot`'s two 8-lane chains are one 16-lane accumulator here: lane j < 8 sums the
    /// elements 16c + j (the even chunks, `dot`'s a[0]), lane 8 + j the elements
    /// 16c + 8 + j (a[1]). A last 8-element chunk goes to the low lanes only, then
    /// low + high half is `dot`'s a[0] + a[1], followed by the same horizontal sum and
    /// scalar tail. Every rounding is the same, in the same order.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn tile<W: WeightElem, const R: usize, const T: usize>(
        w: [*const W; R],
        x: [*const f32; T],
        k: usize,
    ) -> [[f32; R]; T] {
        let mut a = [[_mm512_setzero_ps(); R]; T];
        let mut i = k / 16 * 16;
        steps16(w, x, &mut a, i);
        if i + 8 <= k {
            let wv: [__m512; R] = std::array::from_fn(|r| _mm512_castps256_ps512(load8(w[r].add(i))));
            for (t, at) in a.iter_mut().enumerate() {
                let xv = _mm512_castps256_ps512(_mm256_loadu_ps(x[t].add(i)));
                for r in 0..R {
                    at[r] = _mm512_mask3_fmadd_ps(wv[r], xv, at[r], 0x00ff);
                }
            }
            i += 8;
        }
        // Two passes so that the first unrolls fully and `a` stays in registers (a
        // loop over the tail inside it kept `a` in memory, stored on every step).
        let mut s = [[0f32; R]; T];
        for t in 0..T {
            for r in 0..R {
                let v = a[t][r];
                let lo = _mm512_castps512_ps256(v);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                s[t][r] = hsum(_mm256_add_ps(lo, hi));
            }
        }
        for j in i..k {
            for t in 0..T {
                for r in 0..R {
                    s[t][r] += (*w[r].add(j)).to_f32() * *x[t].add(j);
                }
            }
        }
        s
    }

    /// `tile`'s 16-wide steps over 0..end, in a function of its own: inlined into
    /// `tile`, LLVM (rustc 1.95) kept about ten of the 4 x 6 accumulators on the
    /// stack, loading and storing one around each FMA (68 GFLOP/s on one Xeon core
    /// with every row in L1); behind a `&mut` it loads them once, runs the loop in
    /// registers and stores them once.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn steps16<W: WeightElem, const R: usize, const T: usize>(
        w: [*const W; R],
        x: [*const f32; T],
        acc: &mut [[__m512; R]; T],
        end: usize,
    ) {
        let mut a = *acc;
        let mut i = 0;
        while i < end {
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                wv[r] = load16(w[r].add(i));
            }
            for t in 0..T {
                let xv = _mm512_loadu_ps(x[t].add(i));
                for r in 0..R {
                    a[t][r] = _mm512_fmadd_ps(wv[r], xv, a[t][r]);
                }
            }
            i += 16;
        }
        *acc = a;
    }

    /// Values per span of `tiles8`: 96 8-lane chunks (even, so a span starts on an even
    /// chunk, and the activation rows' span, 6 x 3 KiB, sits in L1 with the weights').
    pub const SPAN_VALUES: usize = 768;

    /// `tile8` for several groups of R weight rows against the same T activation rows,
    /// for rows longer than a span: both chains go span by span over every group, each
    /// group's accumulators waiting in memory between spans. Tile by tile, at k = 1536
    /// (the down projection) a row pair and six tokens are 48 KiB, more than Zen 3's
    /// 32 KiB L1, and the odd pass and the next pair's tokens came from L2 (28 GMAC/s on
    /// two cores against 53 at k = 576). Each chain still adds its chunks in order, so
    /// every sum is `tile8`'s, bit for bit.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tiles8<W: WeightElem, const R: usize, const T: usize>(
        w: &[[*const W; R]],
        x: [*const f32; T],
        k: usize,
    ) -> Vec<[[f32; R]; T]> {
        let chunks = k / 8;
        let mut acc = vec![[[[_mm256_setzero_ps(); R]; T]; 2]; w.len()];
        let mut c0 = 0;
        while c0 < chunks {
            let c1 = (c0 + SPAN_VALUES / 8).min(chunks);
            for (&g, a) in w.iter().zip(acc.iter_mut()) {
                a[0] = chain::<W, R, T>(g, x, a[0], c0, c1);
                a[1] = chain::<W, R, T>(g, x, a[1], c0 + 1, c1);
            }
            c0 = c1;
        }
        w.iter()
            .zip(&acc)
            .map(|(&g, [even, odd])| {
                let mut s = [[0f32; R]; T];
                for t in 0..T {
                    for r in 0..R {
                        s[t][r] = hsum(_mm256_add_ps(even[t][r], odd[t][r]));
                    }
                }
                for j in chunks * 8..k {
                    for t in 0..T {
                        for r in 0..R {
                            s[t][r] += (*g[r].add(j)).to_f32() * *x[t].add(j);
                        }
                    }
                }
                s
            })
            .collect()
    }

    /// `dot`'s chains for AVX2's 16 registers: 8-lane chunk q of a row belongs to chain
    /// q % 2, and each chain is summed in a pass of its own (the even chunks over the
    /// whole row, then the odd ones), so a tile keeps one accumulator per pair, not two.
    /// Then a[0] + a[1], the horizontal sum and the scalar tail, as `dot` does them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile8<W: WeightElem, const R: usize, const T: usize>(
        w: [*const W; R],
        x: [*const f32; T],
        k: usize,
    ) -> [[f32; R]; T] {
        let zero = [[_mm256_setzero_ps(); R]; T];
        let even = chain::<W, R, T>(w, x, zero, 0, k / 8);
        let odd = chain::<W, R, T>(w, x, zero, 1, k / 8);
        let mut s = [[0f32; R]; T];
        for t in 0..T {
            for r in 0..R {
                s[t][r] = hsum(_mm256_add_ps(even[t][r], odd[t][r]));
            }
        }
        for j in k / 8 * 8..k {
            for t in 0..T {
                for r in 0..R {
                    s[t][r] += (*w[r].add(j)).to_f32() * *x[t].add(j);
                }
            }
        }
        s
    }

    /// `a` plus the 8-lane chunks first, first + 2, ... below `end`, per pair.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chain<W: WeightElem, const R: usize, const T: usize>(
        w: [*const W; R],
        x: [*const f32; T],
        mut a: [[__m256; R]; T],
        first: usize,
        end: usize,
    ) -> [[__m256; R]; T] {
        let mut q = first;
        while q < end {
            let i = 8 * q;
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                wv[r] = load8(w[r].add(i));
            }
            for t in 0..T {
                let xv = _mm256_loadu_ps(x[t].add(i));
                for r in 0..R {
                    a[t][r] = _mm256_fmadd_ps(wv[r], xv, a[t][r]);
                }
            }
            q += 2;
        }
        a
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn add_scaled(acc: &mut [f32], p: f32, v: &[f32]) {
        let (a, x, n) = (acc.as_mut_ptr(), v.as_ptr(), acc.len());
        let pv = _mm512_set1_ps(p);
        let mut i = 0;
        while i + 16 <= n {
            let sum = _mm512_add_ps(_mm512_loadu_ps(a.add(i)), _mm512_mul_ps(pv, _mm512_loadu_ps(x.add(i))));
            _mm512_storeu_ps(a.add(i), sum);
            i += 16;
        }
        while i < n {
            *a.add(i) += p * *x.add(i);
            i += 1;
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn add_scaled8(acc: &mut [f32], p: f32, v: &[f32]) {
        let (a, x, n) = (acc.as_mut_ptr(), v.as_ptr(), acc.len());
        let pv = _mm256_set1_ps(p);
        let mut i = 0;
        while i + 8 <= n {
            let sum = _mm256_add_ps(_mm256_loadu_ps(a.add(i)), _mm256_mul_ps(pv, _mm256_loadu_ps(x.add(i))));
            _mm256_storeu_ps(a.add(i), sum);
            i += 8;
        }
        while i < n {
            *a.add(i) += p * *x.add(i);
            i += 1;
        }
    }

    /// `add_scaled_rows` for AVX2's 16 registers: U rows, 32 of their 64 values from
    /// `off`, summed in registers over every row of v.
    #[target_feature(enable = "avx2")]
    pub unsafe fn add_scaled_half_rows<const U: usize>(
        acc: [*mut f32; U],
        p: [*const f32; U],
        v: &[&[f32]],
        off: usize,
    ) {
        let mut a = [[_mm256_setzero_ps(); 4]; U];
        for t in 0..U {
            for c in 0..4 {
                a[t][c] = _mm256_loadu_ps(acc[t].add(off + 8 * c));
            }
        }
        for (j, vj) in v.iter().enumerate() {
            let vp = vj.as_ptr().add(off);
            let vv = [0, 1, 2, 3].map(|c| _mm256_loadu_ps(vp.add(8 * c)));
            for t in 0..U {
                let pv = _mm256_set1_ps(*p[t].add(j));
                for c in 0..4 {
                    a[t][c] = _mm256_add_ps(a[t][c], _mm256_mul_ps(pv, vv[c]));
                }
            }
        }
        for t in 0..U {
            for c in 0..4 {
                _mm256_storeu_ps(acc[t].add(off + 8 * c), a[t][c]);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn add_scaled_rows<const T: usize>(acc: [*mut f32; T], p: [*const f32; T], v: &[&[f32]]) {
        let mut a = [[_mm512_setzero_ps(); 4]; T];
        for t in 0..T {
            for c in 0..4 {
                a[t][c] = _mm512_loadu_ps(acc[t].add(16 * c));
            }
        }
        for (j, vj) in v.iter().enumerate() {
            let vp = vj.as_ptr();
            let vv = [0, 1, 2, 3].map(|c| _mm512_loadu_ps(vp.add(16 * c)));
            for t in 0..T {
                let pv = _mm512_set1_ps(*p[t].add(j));
                for c in 0..4 {
                    a[t][c] = _mm512_add_ps(a[t][c], _mm512_mul_ps(pv, vv[c]));
                }
            }
        }
        for t in 0..T {
            for c in 0..4 {
                _mm512_storeu_ps(acc[t].add(16 * c), a[t][c]);
            }
        }
    }
}
