//! out (m, n) = x (m, k) @ w (n, k)^T + bias for block-quantized weights, computed
//! the way llama.cpp's CPU backend does (its `vec_dot`s), so that our logits track
//! its logits:
//!
//! 1. Each activation row is quantized once to the weight type's companion 8-bit
//!    format ([`act`]): Q8_0 blocks for Q4_0 / Q5_0 / Q8_0 weights, Q8_1 (Q8_0 plus
//!    s = d * sum q) for Q4_1, Q8_K (f32 d, 256 i8, 16 bsums) for the K-quants.
//! 2. Inside a block the dot product is exact integer arithmetic; each block's
//!    integer is scaled by f16/f32 factors and summed in f32 ([`reference`] is the
//!    definition). Rows of one matrix may be of different types (a stacked q/k/v
//!    with a Q6_K v), so both activation formats are made when needed.
//! 3. The SIMD kernels ([`x86`]) compute the same integers and differ from the
//!    reference only in the order of the f32 additions. A (row, token) pair runs
//!    the same instructions for every batch size m, so a token's result does not
//!    depend on how many tokens share its batch (as `gemm` guarantees for bf16).
//!
//! m = 1 (decode) streams each weight row once, rayon over chunks of rows. m > 1
//! gives each task a chunk of weight rows and walks the tokens in blocks of eight
//! that stay in L1 while the task's rows pass over them: two rows of a 32-weight
//! type at a time, four tokens per load of their blocks (eight with AVX-512 VNNI,
//! two blocks per register, but for Q4_1), else one row, eight (or four) tokens per
//! weight-block load.

pub mod act;
pub mod reference;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use rayon::prelude::*;

use super::Disjoint;
use crate::model::quant::{QType, QuantMatrix};
use act::{quantize_q8_0, quantize_q8_k, ActRow, Q8Rows};

/// Weight rows per rayon task, as in `gemm`.
const ROWS_PER_TASK: usize = 16;
/// Tokens per weight-block load (8: 377 tok/s against 4's 362 on a 512-token Q8_0
/// prefill, two runs each on the 2-core VM; a batch of 4 to 7 takes a half tile).
const TILE: usize = 8;

/// Tokens per weight-block load when two neighbouring rows of one 32-weight type go
/// together (each activation block then serves both rows): 2 x 4 sums fit AVX2's 16
/// registers; with AVX-512's 32, 2 x 8 (each sum a block pair in a zmm).
const PAIR_TILE: usize = 4;
const PAIR_TILE_512: usize = 8;

/// Which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The scalar definition.
    Scalar,
    Avx2,
    /// AVX2 with AVX-512 VNNI dot products: 256-bit, and 512-bit for row pairs.
    Vnni,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Vnni];

    /// The fastest level this CPU runs, detected once.
    pub fn best() -> Level {
        use std::sync::OnceLock;
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Level::Vnni, Level::Avx2].into_iter().find(|l| l.available()).unwrap_or(Level::Scalar)
        })
    }

    /// Whether this CPU runs the level's kernels (detected once).
    pub fn available(self) -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<[bool; 3]> = OnceLock::new();
        HAS.get_or_init(|| Level::ALL.map(Level::detect))[self as usize]
    }

    fn detect(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Level::Scalar => true,
                Level::Avx2 => avx2,
                Level::Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Level::Scalar
        }
    }
}

/// The activation format a weight type's vec_dot takes.
fn is_k(ty: QType) -> bool {
    matches!(ty, QType::Q4_K | QType::Q5_K | QType::Q6_K)
}

/// `x` (m rows of k) quantized for `ty`.
pub fn quantize_for(ty: QType, x: &[f32], k: usize) -> Q8Rows {
    if is_k(ty) {
        quantize_q8_k(x, k)
    } else {
        quantize_q8_0(x, k)
    }
}

/// One weight row (stored blocks of `ty`) against C activation rows.
pub fn vec_dot_n<const C: usize>(level: Level, ty: QType, w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    let nb = w.len() / ty.block_bytes();
    assert_eq!(w.len(), nb * ty.block_bytes(), "{ty}: a row of {} bytes", w.len());
    for r in a {
        check_acts(ty, nb, r);
    }
    assert!(level.available(), "{level:?} kernels are not available on this CPU");
    // SAFETY: lengths checked above, the level's CPU features too.
    unsafe { dot_unchecked(level, ty, w, a) }
}

fn check_acts(ty: QType, nb: usize, r: &ActRow) {
    let per_sum = if is_k(ty) { 16 } else { 1 };
    assert!(
        r.qs.len() == nb * ty.block_len() && r.d.len() == nb && r.sums.len() == nb * per_sum,
        "{ty}: {} activations for {nb} weight blocks, or not quantized for {ty}",
        r.qs.len()
    );
    assert!(ty != QType::Q4_1 || r.s.len() == nb, "Q4_1 needs Q8_1 activations");
}

/// # Safety
/// `w` is whole blocks of `ty`, every row of `a` quantized for `ty` to as many
/// blocks (`check_acts`), and `level` is available.
unsafe fn dot_unchecked<const C: usize>(level: Level, ty: QType, w: &[u8], a: &[ActRow; C]) -> [f32; C] {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (both): the caller guarantees lengths and CPU features.
        Level::Avx2 => unsafe { x86::dot_avx2::<C>(ty, w, a) },
        #[cfg(target_arch = "x86_64")]
        Level::Vnni => unsafe { x86::dot_vnni::<C>(ty, w, a) },
        _ => a.map(|r| reference::vec_dot(ty, w, r)),
    }
}

/// R weight rows of one 32-weight type against C activation rows: `dot_unchecked`
/// per row, bit for bit.
///
/// # Safety
/// As `dot_unchecked` for each row of `w`.
unsafe fn dot_rows_unchecked<const R: usize, const C: usize>(
    level: Level,
    ty: QType,
    w: [&[u8]; R],
    a: &[ActRow; C],
) -> [[f32; C]; R] {
    debug_assert!(!is_k(ty));
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (both): the caller guarantees lengths and CPU features.
        Level::Avx2 => unsafe { x86::dot_rows_avx2::<R, C>(ty, w, a) },
        #[cfg(target_arch = "x86_64")]
        Level::Vnni => unsafe { x86::dot_rows_vnni::<R, C>(ty, w, a) },
        _ => w.map(|wr| a.map(|r| reference::vec_dot(ty, wr, r))),
    }
}

pub fn vec_dot(level: Level, ty: QType, w: &[u8], a: ActRow) -> f32 {
    vec_dot_n::<1>(level, ty, w, &[a])[0]
}

pub fn matmul(out: &mut [f32], x: &[f32], w: &QuantMatrix, bias: Option<&[f32]>, m: usize) {
    matmul_at(Level::best(), out, x, w, bias, m)
}

/// `matmul` with the kernels of `level` (tests compare levels).
pub fn matmul_at(level: Level, out: &mut [f32], x: &[f32], w: &QuantMatrix, bias: Option<&[f32]>, m: usize) {
    let (n, k) = (w.rows(), w.cols);
    assert_eq!(x.len(), m * k, "quant matmul: x has {} elements, expected {m} x {k}", x.len());
    assert_eq!(out.len(), m * n, "quant matmul: out has {} elements, expected {m} x {n}", out.len());
    let want = |k_type: bool| w.parts.iter().any(|p| is_k(p.ty) == k_type);
    let a32 = if want(false) { quantize_q8_0(x, k) } else { Q8Rows::default() };
    let ak = if want(true) { quantize_q8_k(x, k) } else { Q8Rows::default() };
    let acts = |ty: QType| if is_k(ty) { &ak } else { &a32 };
    assert!(level.available(), "{level:?} kernels are not available on this CPU");
    for p in &w.parts {
        let rb = p.ty.row_bytes(k).unwrap_or_else(|| panic!("{}: {k} columns are not whole blocks", p.ty));
        assert_eq!(p.data.len(), p.rows * rb, "{}: {} bytes for {} rows of {k}", p.ty, p.data.len(), p.rows);
        if m > 0 {
            check_acts(p.ty, k / p.ty.block_len(), &acts(p.ty).row(0));
        }
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "quant matmul: bias of {} for {n} rows", b.len());
    }
    let bias_of = |r: usize| bias.map_or(0.0, |b| b[r]);
    // SAFETY for every dot below: rows are whole blocks and activation rows have
    // the matching block counts (checked just above), the level is available.
    let rows = Rows::new(w);
    // every token's activation rows, made once for all tasks
    let (all32, allk) = (act_rows(&a32, m), act_rows(&ak, m));
    if m == 1 {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(c, o)| {
            for (i, oi) in o.iter_mut().enumerate() {
                let r = c * ROWS_PER_TASK + i;
                let (ty, wr) = rows.get(r);
                let a = if is_k(ty) { &allk } else { &all32 };
                *oi = unsafe { dot_unchecked::<1>(level, ty, wr, tile_at(a, 0)) }[0] + bias_of(r);
            }
        });
        return;
    }
    // Tasks own disjoint weight rows and write their (token, row) elements of out in
    // place: a transposed buffer and its copy back cost as much as the dots did.
    let o = Disjoint::new(out);
    let o = &o;
    let put = |j: usize, r: usize, v: f32| {
        debug_assert!(j < m && r < n);
        // SAFETY: j < m and r < n (out is m x n, checked above), and only the task that
        // owns row r writes element (j, r).
        unsafe { o.write(j * n + r, &[v + bias_of(r)]) };
    };
    // a tile's sums: rows r.., tokens j..
    #[inline(always)]
    fn put_rows<const C: usize>(put: &impl Fn(usize, usize, f32), j: usize, r: usize, s: &[[f32; C]]) {
        for (i, row) in s.iter().enumerate() {
            for (d, &v) in row.iter().enumerate() {
                put(j + d, r + i, v);
            }
        }
    }
    (0..n.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|c| {
        let rows_here = c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(n);
        // (first row, its type and bytes, the next row's bytes where that row is of
        // the same 32-weight type and goes with it), found once per task
        let mut groups = Vec::with_capacity(ROWS_PER_TASK);
        let mut r = rows_here.start;
        while r < rows_here.end {
            let (ty, wr) = rows.get(r);
            let next = (r + 1 < rows_here.end && !is_k(ty)).then(|| rows.get(r + 1));
            let wr2 = next.filter(|&(t, _)| t == ty).map(|(_, b)| b);
            groups.push((r, ty, wr, wr2));
            r += 1 + wr2.is_some() as usize;
        }
        // Token blocks outer: a block's activations stay in L1 while all the task's
        // rows pass over them, and the rows (16 x k bytes or so) stay there too.
        for j0 in (0..m).step_by(TILE) {
            let j1 = (j0 + TILE).min(m);
            for &(r, ty, wr, wr2) in &groups {
                let a = &(if is_k(ty) { &allk } else { &all32 })[..j1];
                let mut j = j0;
                // SAFETY (all): as for every dot here (above).
                if let Some(wr2) = wr2 {
                    #[cfg(target_arch = "x86_64")]
                    if level == Level::Vnni && ty != QType::Q4_1 {
                        while j + PAIR_TILE_512 <= j1 {
                            let s = unsafe {
                                x86::dot_rows_vnni512::<2, PAIR_TILE_512>(ty, [wr, wr2], tile_at(a, j))
                            };
                            put_rows(&put, j, r, &s);
                            j += PAIR_TILE_512;
                        }
                    }
                    while j + PAIR_TILE <= j1 {
                        let s = unsafe {
                            dot_rows_unchecked::<2, PAIR_TILE>(level, ty, [wr, wr2], tile_at(a, j))
                        };
                        put_rows(&put, j, r, &s);
                        j += PAIR_TILE;
                    }
                }
                for (i, wr) in [wr].into_iter().chain(wr2).enumerate() {
                    let mut put_r = |jj: usize, v: f32| put(jj, r + i, v);
                    let mut jr = j;
                    unsafe {
                        tiles::<TILE>(level, ty, wr, a, &mut jr, &mut put_r);
                        // a batch of a few decode tokens: a half tile before single tokens
                        tiles::<{ TILE / 2 }>(level, ty, wr, a, &mut jr, &mut put_r);
                        tiles::<1>(level, ty, wr, a, &mut jr, &mut put_r);
                    }
                }
            }
        }
    });
}

/// A matrix's parts as (first row, type, bytes per row, data): finding a row's bytes
/// takes a comparison or two and a multiply (`QuantMatrix::row` divides, per call).
struct Rows<'a>(Vec<(usize, QType, usize, &'a [u8])>);

impl<'a> Rows<'a> {
    fn new(w: &'a QuantMatrix) -> Self {
        let mut first = 0;
        Rows(
            w.parts
                .iter()
                .map(|p| {
                    let part = (first, p.ty, p.data.len() / p.rows.max(1), &p.data[..]);
                    first += p.rows;
                    part
                })
                .collect(),
        )
    }

    #[inline]
    fn get(&self, r: usize) -> (QType, &'a [u8]) {
        let &(first, ty, rb, data) = self.0.iter().rev().find(|p| p.0 <= r).expect("a row inside the matrix");
        (ty, &data[(r - first) * rb..(r - first + 1) * rb])
    }
}

/// The first m rows of `q` (none when `q` was not made).
fn act_rows(q: &Q8Rows, m: usize) -> Vec<ActRow<'_>> {
    if q.k == 0 {
        return Vec::new();
    }
    (0..m).map(|j| q.row(j)).collect()
}

/// Rows j..j + C of `a` as an array, without copying.
fn tile_at<'a, 'b, const C: usize>(a: &'b [ActRow<'a>], j: usize) -> &'b [ActRow<'a>; C] {
    a[j..j + C].try_into().expect("a tile of C rows")
}

/// Tokens j.. of `a` against weight row `wr`, C per weight-block load, while C fit;
/// `j` ends at the first token left.
///
/// # Safety
/// As `dot_unchecked`, for every row of `a` from j on.
unsafe fn tiles<const C: usize>(
    level: Level,
    ty: QType,
    wr: &[u8],
    a: &[ActRow],
    j: &mut usize,
    put: &mut impl FnMut(usize, f32),
) {
    while *j + C <= a.len() {
        let s = unsafe { dot_unchecked::<C>(level, ty, wr, tile_at(a, *j)) };
        for (d, v) in s.into_iter().enumerate() {
            put(*j + d, v);
        }
        *j += C;
    }
}
