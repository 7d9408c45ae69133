//! Launchers for kernels/gemm.cu: out (m, n) f32 = A (m, k) @ W (n, k)^T + bias (n),
//! W bf16. CPU twin: backend/cpu/gemm.rs.
//!
//! Variant choice, from (m, n, k) only (graph replay compares launches, so nothing
//! here may depend on data):
//! - m <= 16 and k % 8 == 0: `gemv_m{1,2,4,8,16}_*`, the weight-streaming kernel for
//!   decode, m rounded up to a bucket; `ks` warps split k when n is small.
//! - m > 16 and k % 8 == 0: the tensor-core GEMM with 128-row tiles, or 64-row tiles
//!   when 128-row ones would pad more rows (m = 64: a whole 64-row tile, not half a
//!   128-row one) or give fewer than two blocks per SM.
//! - k % 8 != 0 (rows of W not 16-byte aligned): `gemm_unaligned_*`, any m.
//! - `swiglu_matmul_add` and `rmsnorm_matmul`: `gemv_m*_{swiglu,rmsnorm}_f32_bf16`
//!   where the gemv applies (`fuses_on_load`); the backend runs the two ops elsewhere.
//! - `matmul_add` (out += product) is every variant with its `accumulate` flag set.

use super::{Arg, CudaBackend, CudaTensor, CudaWeight, Grid};

const MODULE: &str = "gemm";

/// SMs of an H100 SXM (H200 too): only sizes grids; any value is correct.
const SMS: usize = 132;
/// Largest m that takes the gemv path (its biggest m bucket).
pub const GEMV_MAX_M: usize = 16;
/// Rows of W per warp in the gemv (`gv::R` in the kernel).
const GEMV_ROWS: usize = 4;
/// Warps per gemv block (`gv::THREADS / 32`).
const GEMV_WARPS: usize = 8;
/// Warps the gemv aims to have in flight, for enough outstanding loads per SM.
const GEMV_TARGET_WARPS: usize = SMS * 16;
/// Tensor-core tile columns, k depth and pipeline stages (`tc::BN`, `tc::BK`, `tc::STAGES`).
const TC_BN: usize = 128;
const TC_BK: usize = 32;
const TC_STAGES: usize = 4;
/// Largest size the kernels' 32-bit index arithmetic is used for (row + 32 etc. must
/// not overflow).
const MAX_DIM: usize = 1 << 30;

/// out (m, n) = x (m, k) @ w (n, k)^T + bias (n); x f32, w bf16, bias f32.
///
/// Preconditions (checked; a violation fails the backend with a message and nothing
/// is launched): w is a bf16 matrix (at least 2 rows, see `CudaWeight`) with k >= 1
/// columns, x holds exactly m * k elements, out at least m * n (only the first
/// m * n are written), bias if present is an f32 vector of n, sizes below 2^30,
/// buffers 16-byte aligned (cuMemAlloc gives 256). m = 0 is a no-op.
pub fn matmul(
    b: &CudaBackend,
    out: &mut CudaTensor,
    x: &CudaTensor,
    w: &CudaWeight,
    bias: Option<&CudaWeight>,
    m: usize,
) {
    f32_x(b, "matmul", out, x, w, bias, m, Epilogue::Store)
}

/// residual (m, n) += x (m, k) @ w (n, k)^T: the end of a residual branch, added in
/// the kernel's epilogue (each element by one thread), so no separate add.
///
/// Preconditions: as `matmul` (residual in the place of out).
pub fn matmul_add(b: &CudaBackend, residual: &mut CudaTensor, x: &CudaTensor, w: &CudaWeight, m: usize) {
    f32_x(b, "matmul_add", residual, x, w, None, m, Epilogue::Add)
}

/// `matmul` and `matmul_add`: an f32 x of exactly m * k elements, then `run`.
#[allow(clippy::too_many_arguments)]
fn f32_x(
    b: &CudaBackend,
    what: &str,
    out: &mut CudaTensor,
    x: &CudaTensor,
    w: &CudaWeight,
    bias: Option<&CudaWeight>,
    m: usize,
    epilogue: Epilogue,
) {
    if x.len != m * w.cols {
        return b.fail(format!(
            "{what}: x holds {} elements, expected m {m} x k {} (w is ({}, {}))",
            x.len, w.cols, w.rows, w.cols
        ));
    }
    run(b, what, out, Arg::from(x), x.buf.ptr(), "f32", w, bias, m, epilogue);
}

/// Whether the gemv computes its x on load (`swiglu_matmul_add`, `rmsnorm_matmul`)
/// for m rows of k: the gemv's shapes.
pub fn fuses_on_load(m: usize, k: usize) -> bool {
    (1..=GEMV_MAX_M).contains(&m) && k % 8 == 0
}

/// The fused launchers' shared checks: a kernel exists for (m, k) and x holds
/// exactly m * `per_row` elements. False after failing the backend.
fn check_fused(
    b: &CudaBackend,
    what: &str,
    x: &CudaTensor,
    per_row: usize,
    w: &CudaWeight,
    m: usize,
) -> bool {
    let k = w.cols;
    let err = if !fuses_on_load(m, k) {
        format!("{what}: no fused kernel for m {m}, k {k} (m <= {GEMV_MAX_M}, k % 8 == 0)")
    } else if x.len != m * per_row {
        format!("{what}: x holds {} elements, expected m {m} x {per_row} (w is ({}, {k}))", x.len, w.rows)
    } else {
        return true;
    };
    b.fail(err);
    false
}

/// residual (m, n) += (silu(gate) * up) (m, k) @ w (n, k)^T, gate_up (m, 2k) with
/// gate first in each row: swiglu, the down projection and the residual add in one
/// launch, with swiglu_f32's values as x, so the result is the separate kernels' bit
/// for bit.
///
/// Preconditions (checked, besides `matmul`'s): `fuses_on_load(m, k)` and gate_up
/// holds exactly m * 2k elements.
pub fn swiglu_matmul_add(
    b: &CudaBackend,
    residual: &mut CudaTensor,
    gate_up: &CudaTensor,
    w: &CudaWeight,
    m: usize,
) {
    if check_fused(b, "swiglu_matmul_add", gate_up, 2 * w.cols, w, m) {
        let x = Arg::from(gate_up);
        run(b, "swiglu_matmul_add", residual, x, gate_up.buf.ptr(), "swiglu_f32", w, None, m, Epilogue::Add);
    }
}

/// out (m, n) = (rmsnorm(x) * g) (m, k) @ w (n, k)^T + bias: a decode step's norm
/// and the projection after it in one launch, the normed x computed on load with
/// rmsnorm_f32's arithmetic (rmsnorm.cuh), so the result is the two kernels' bit for
/// bit.
///
/// Preconditions (checked, besides `matmul`'s): `fuses_on_load(m, k)`, x holds
/// exactly m * k elements and g is an f32 vector of k.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_matmul(
    b: &CudaBackend,
    out: &mut CudaTensor,
    x: &CudaTensor,
    g: &CudaWeight,
    eps: f32,
    w: &CudaWeight,
    bias: Option<&CudaWeight>,
    m: usize,
) {
    if g.is_matrix() || g.cols != w.cols {
        return b.fail(format!(
            "rmsnorm_matmul: the norm's weight is ({}, {}), expected an f32 vector of k {}",
            g.rows, g.cols, w.cols
        ));
    }
    if check_fused(b, "rmsnorm_matmul", x, w.cols, w, m) {
        run(
            b,
            "rmsnorm_matmul",
            out,
            Arg::from(x),
            x.buf.ptr(),
            "rmsnorm_f32",
            w,
            bias,
            m,
            Epilogue::Norm(g, eps),
        );
    }
}

/// out (m, n) = a (m, k) @ w (n, k)^T with both operands bf16 matrices: the GEMM of
/// `matmul` without the f32 -> bf16 conversion of A, for benches and comparisons
/// with cuBLAS.
///
/// Preconditions (checked, as `matmul`): a is a bf16 matrix of m rows (so m >= 2: a
/// one-row weight is stored as an f32 vector) and as many columns as w.
pub fn matmul_bf16(b: &CudaBackend, out: &mut CudaTensor, a: &CudaWeight, w: &CudaWeight, m: usize) {
    if !a.is_matrix() || a.is_quant() || a.rows != m || a.cols != w.cols {
        return b.fail(format!(
            "matmul_bf16: a is ({}, {}){}, expected a bf16 matrix of m {m} rows and k {} columns",
            a.rows,
            a.cols,
            if a.is_quant() {
                " (block-quantized)"
            } else if a.is_matrix() {
                ""
            } else {
                " (an f32 vector)"
            },
            w.cols
        ));
    }
    run(b, "matmul_bf16", out, Arg::from(a), a.buf.ptr(), "bf16", w, None, m, Epilogue::Store);
}

/// The kernel launched for (m, n, k): its symbol and geometry, and the `ks` argument
/// of the gemv kernels (None for the GEMMs).
fn plan(a_dtype: &str, m: usize, n: usize, k: usize, aligned: bool) -> (String, Grid, Option<u32>) {
    if aligned && m <= GEMV_MAX_M {
        let bucket = m.next_power_of_two();
        let ks = gemv_split(n, k);
        let rows_per_block = GEMV_WARPS / ks * GEMV_ROWS;
        let grid = Grid::new(n.div_ceil(rows_per_block) as u32, (GEMV_WARPS * 32) as u32, 0);
        return (format!("gemv_m{bucket}_{a_dtype}_bf16"), grid, Some(ks as u32));
    }
    let (name, bm) = if !aligned {
        (format!("gemm_unaligned_{a_dtype}_bf16"), 64)
    } else if m.div_ceil(128) * 2 == m.div_ceil(64) && m.div_ceil(128) * n.div_ceil(TC_BN) >= 2 * SMS {
        (format!("gemm_{a_dtype}_bf16"), 128)
    } else {
        (format!("gemm_bm64_{a_dtype}_bf16"), 64)
    };
    let blocks = m.div_ceil(bm) * n.div_ceil(TC_BN);
    // bf16 bytes of one A tile and one W tile, per stage.
    let smem = TC_STAGES * (bm + TC_BN) * TC_BK * 2;
    (name, Grid::new(blocks as u32, 256u32, smem as u32), None)
}

/// Warps per row group of the gemv (1, 2, 4 or 8): doubled while the GPU has too few
/// warps and every lane still gets at least one 8-element chunk of k.
fn gemv_split(n: usize, k: usize) -> usize {
    let groups = n.div_ceil(GEMV_ROWS);
    let chunks = k / 8;
    let mut ks = 1;
    while ks < GEMV_WARPS && groups * ks < GEMV_TARGET_WARPS && chunks >= 32 * 2 * ks {
        ks *= 2;
    }
    ks
}

/// The output, bias and size checks every matmul launcher makes (this file's and
/// quant.rs's): out holds m * n, bias is an f32 vector of n, sizes below 2^30. On a
/// violation fails the backend with a message naming `what` and returns false.
pub(super) fn check_out_bias(
    b: &CudaBackend,
    what: &str,
    out: &CudaTensor,
    bias: Option<&CudaWeight>,
    m: usize,
    n: usize,
    k: usize,
) -> bool {
    let err = if out.len < m * n {
        format!("{what}: out holds {} elements, m {m} x n {n} need {}", out.len, m * n)
    } else if bias.is_some_and(|t| t.is_matrix() || t.cols != n) {
        let t = bias.expect("checked");
        format!("{what}: bias is ({}, {}), expected an f32 vector of n {n}", t.rows, t.cols)
    } else if m >= MAX_DIM || n >= MAX_DIM || k >= MAX_DIM {
        format!("{what}: ({m}, {n}, {k}) exceeds the kernels' 32-bit sizes (each below 2^30)")
    } else {
        return true;
    };
    b.fail(err);
    false
}

/// What a launch does besides the product: store it, add it to out, or (with the
/// rmsnorm gemv) normalise x by the norm's weight and eps first.
enum Epilogue<'a> {
    Store,
    Add,
    Norm(&'a CudaWeight, f32),
}

#[allow(clippy::too_many_arguments)]
fn run(
    b: &CudaBackend,
    what: &str,
    out: &mut CudaTensor, // (m, n)
    a: Arg,               // (m, k), f32 or bf16 per a_dtype
    a_ptr: u64,
    a_dtype: &str,
    w: &CudaWeight,            // (n, k) bf16
    bias: Option<&CudaWeight>, // (n) f32
    m: usize,
    epilogue: Epilogue,
) {
    let (n, k) = (w.rows, w.cols);
    if !w.is_matrix() {
        return b.fail(format!(
            "{what}: w ({}, {}) is stored as an f32 vector; the GEMM needs a bf16 matrix of at least 2 rows",
            w.rows, w.cols
        ));
    }
    if w.is_quant() {
        return b
            .fail(format!("{what}: w ({n}, {k}) is block-quantized; quant::matmul reads it, not the GEMM"));
    }
    if k == 0 {
        return b.fail(format!("{what}: w ({n}, 0) has no columns"));
    }
    if m == 0 {
        return;
    }
    if !check_out_bias(b, what, out, bias, m, n, k) {
        return;
    }
    let norm = match epilogue {
        Epilogue::Norm(g, _) => g.buf.ptr(),
        _ => 0,
    };
    let ptrs = [out.buf.ptr(), a_ptr, w.buf.ptr(), bias.map_or(0, |t| t.buf.ptr()), norm];
    if ptrs.iter().any(|p| p % 16 != 0) {
        return b.fail(format!("{what}: a buffer is not 16-byte aligned: {ptrs:x?}"));
    }
    let (kernel, grid, ks) = plan(a_dtype, m, n, k, k % 8 == 0);
    let mut args = vec![
        Arg::from(&*out),
        a,
        Arg::from(w),
        Arg::from(bias),
        Arg::from(m as u32),
        Arg::from(n as u32),
        Arg::from(k as u32),
    ];
    args.extend(ks.map(Arg::from));
    args.push(Arg::from(matches!(epilogue, Epilogue::Add) as u32));
    if let Epilogue::Norm(g, eps) = epilogue {
        args.extend([Arg::from(g), Arg::from(eps)]);
    }
    // SAFETY: the kernel's parameters are (out, a, w, bias, m, n, k[, ks], accumulate
    // [, g, eps]) as built above: 8-byte pointers, 4-byte ints and a float. For this
    // grid it writes (and with accumulate reads) out[0..m * n] (out holds at least
    // that), reads a[0..m * k] (x.len == m * k was checked; a bf16 `a` is (m, k) by
    // the check in matmul_bf16; the swiglu gemv's a is (m, 2k), checked in
    // swiglu_matmul_add, which only plans a gemv, as does rmsnorm_matmul, whose g is
    // checked to hold k f32), w[0..n * k] (the (n, k) bf16
    // matrix), bias[0..n] when non-null (checked to hold n f32). The vector paths
    // (k % 8 == 0) read 16 bytes at (row * k + 8 c) elements, aligned since every base
    // is 16-byte aligned (checked). The GEMM's dynamic shared memory is `grid.smem`,
    // which launch() opts into above 48 KB; the gemv's ks divides its 8 warps.
    b.launch(MODULE, &kernel, grid, &args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_shape() {
        // Decode: gemv, m rounded up to its bucket, k split while n is small.
        let (k1, g1, ks1) = plan("f32", 1, 896, 4864, true);
        assert_eq!((k1.as_str(), ks1), ("gemv_m1_f32_bf16", Some(8)));
        assert_eq!(g1.grid.0, 896u32.div_ceil(4));
        assert_eq!(plan("swiglu_f32", 1, 896, 4864, true).0, "gemv_m1_swiglu_f32_bf16");
        assert_eq!(plan("rmsnorm_f32", 3, 1152, 896, true).0, "gemv_m4_rmsnorm_f32_bf16");
        assert!(fuses_on_load(16, 4864) && !fuses_on_load(17, 4864) && !fuses_on_load(1, 4860));
        let (k5, _, ks5) = plan("f32", 5, 151936, 896, true);
        assert_eq!((k5.as_str(), ks5), ("gemv_m8_f32_bf16", Some(1)));
        // Every lane gets a chunk: k = 64 is 8 chunks, no split. The test shapes
        // (tests/kernels/gemm.rs) cover every split.
        assert_eq!(plan("f32", 16, 33, 64, true).2, Some(1));
        let splits: Vec<usize> = [(4095, 64), (576, 576), (576, 1536), (64, 4864)]
            .iter()
            .map(|&(n, k)| gemv_split(n, k))
            .collect();
        assert_eq!(splits, [1, 2, 4, 8]);
        // Prefill: tile by grid size; odd k: the unaligned GEMM at any m.
        assert_eq!(plan("f32", 2048, 9728, 896, true).0, "gemm_f32_bf16");
        assert_eq!(plan("f32", 2048, 896, 4864, true).0, "gemm_bm64_f32_bf16");
        // 64 rows (a batch-64 lm_head): one 64-row tile, not half a 128-row one.
        assert_eq!(plan("f32", 64, 151936, 896, true).0, "gemm_bm64_f32_bf16");
        assert_eq!(plan("f32", 1050, 151936, 896, true).0, "gemm_bm64_f32_bf16");
        assert_eq!(plan("f32", 1024, 151936, 896, true).0, "gemm_f32_bf16");
        assert_eq!(plan("bf16", 4096, 4096, 4096, true).0, "gemm_bf16_bf16");
        assert_eq!(plan("f32", 1, 33, 31, false).0, "gemm_unaligned_f32_bf16");
        let (_, g, _) = plan("f32", 2048, 9728, 896, true);
        assert_eq!((g.grid.0, g.block.0, g.smem), (16 * 76, 256, 64 * 1024));
        assert_eq!(plan("f32", 33, 4095, 64, true).1.smem, 48 * 1024);
    }
}
