//! Launchers for kernels/quant.cu: matmul and embedding lookup with block-quantized
//! weights (ggml Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) read in their stored bytes.
//! CPU twin: `model::quant::dequantize` followed by an f32 dot (`reference_matmul`,
//! `reference_embed` below). The CPU backend's quantized matmul (backend/cpu/quant.rs)
//! rounds activations to 8 bits as llama.cpp does; these kernels keep f32 activations
//! and f32 sums, so the two backends agree only to that rounding's size.
//!
//! A quantized `CudaWeight` is a list of row parts, each of one type, laid out one
//! after another in one allocation (each part starting 16-byte aligned). Every op
//! launches once per part: part p covers output columns [lo, lo + rows) and gets `out`
//! and `bias` offset to lo, the full n as the row stride of `out`, and its own bytes.
//!
//! Variant choice, from (m, type) only (graph replay compares launches):
//! - m <= 8: `quant_gemv_m{1,2,4,8}_T`, m rounded up to a bucket.
//! - m > 8: `quant_gemm_T`, 64 x 64 output tiles through shared memory.

use super::{Arg, CudaBackend, CudaIndex, CudaTensor, CudaWeight, Grid};
use crate::model::quant::{dequantize, QType, QuantMatrix};

const MODULE: &str = "quant";

/// Largest m that takes the gemv.
pub const GEMV_MAX_M: usize = 8;
/// Rows (warps) per gemv block and the gemm's tile (`qk::GV_THREADS / 32`, `qk::BM`, `qk::BN`).
const GEMV_ROWS: usize = 8;
const TILE: usize = 64;
/// Each part starts at a multiple of this many bytes of the weight's buffer.
const PART_ALIGN: usize = 16;

/// One row part of a quantized weight: `rows` rows of `ty` at byte `offset` of the
/// weight's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSlice {
    pub ty: QType,
    pub rows: usize,
    pub offset: usize,
}

/// The kernels' name for a type.
pub fn type_name(ty: QType) -> &'static str {
    match ty {
        QType::Q4_0 => "q4_0",
        QType::Q4_1 => "q4_1",
        QType::Q5_0 => "q5_0",
        QType::Q8_0 => "q8_0",
        QType::Q4_K => "q4_k",
        QType::Q5_K => "q5_k",
        QType::Q6_K => "q6_k",
    }
}

/// The device bytes of a quantized (rows, cols) matrix and its parts: each part's
/// stored bytes, padded to a 16-byte boundary. Errors when the matrix does not match
/// the shape or a part's bytes are not whole rows of whole blocks.
pub fn layout(q: &QuantMatrix, rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<QuantSlice>), String> {
    if q.cols != cols || q.rows() != rows {
        return Err(format!("quantized matrix is ({}, {}), the tensor ({rows}, {cols})", q.rows(), q.cols));
    }
    let mut bytes = Vec::with_capacity(q.bytes() + q.parts.len() * PART_ALIGN);
    let mut parts = Vec::with_capacity(q.parts.len());
    for p in q.parts.iter().filter(|p| p.rows > 0) {
        let row_bytes = p.ty.row_bytes(cols).ok_or_else(|| {
            format!("{} columns are not a whole number of {}-weight {} blocks", cols, p.ty.block_len(), p.ty)
        })?;
        if p.data.len() != p.rows * row_bytes {
            return Err(format!(
                "a {} part of {} rows holds {} bytes, expected {}",
                p.ty,
                p.rows,
                p.data.len(),
                p.rows * row_bytes
            ));
        }
        bytes.resize(bytes.len().next_multiple_of(PART_ALIGN), 0);
        parts.push(QuantSlice { ty: p.ty, rows: p.rows, offset: bytes.len() });
        bytes.extend_from_slice(&p.data);
    }
    Ok((bytes, parts))
}

/// The kernel and grid of one part's matmul launch.
fn plan(ty: QType, m: usize, rows: usize) -> (String, Grid) {
    if m <= GEMV_MAX_M {
        let bucket = m.next_power_of_two();
        let grid = Grid::new(rows.div_ceil(GEMV_ROWS) as u32, (GEMV_ROWS * 32) as u32, 0);
        return (format!("quant_gemv_m{bucket}_{}", type_name(ty)), grid);
    }
    let grid = Grid::new((rows.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32), 256u32, 0);
    (format!("quant_gemm_{}", type_name(ty)), grid)
}

/// out (m, n) = x (m, k) @ w (n, k)^T + bias (n); x f32, w block-quantized, bias f32.
/// With `accumulate` the product is added to out (`Backend::matmul_add`).
///
/// Preconditions (checked; a violation fails the backend with a message and nothing
/// is launched): w is quantized, x holds exactly m * k elements, out at least m * n
/// (only the first m * n are written), bias if present is an f32 vector of n, sizes
/// below 2^30. m = 0 is a no-op.
pub fn matmul(
    b: &CudaBackend,
    out: &mut CudaTensor,
    x: &CudaTensor,
    w: &CudaWeight,
    bias: Option<&CudaWeight>,
    m: usize,
    accumulate: bool,
) {
    let (n, k) = (w.rows, w.cols);
    if !w.is_quant() {
        return b.fail(format!("quant matmul: w ({n}, {k}) is not block-quantized"));
    }
    if x.len != m * k {
        return b.fail(format!(
            "quant matmul: x holds {} elements, expected m {m} x k {k} (w is ({n}, {k}))",
            x.len
        ));
    }
    if m == 0 {
        return;
    }
    if !super::gemm::check_out_bias(b, "quant matmul", out, bias, m, n, k) {
        return;
    }
    if x.buf.ptr() % 16 != 0 {
        return b.fail(format!("quant matmul: x is not 16-byte aligned: {:x}", x.buf.ptr()));
    }
    let mut lo = 0;
    for p in &w.quant {
        let (kernel, grid) = plan(p.ty, m, p.rows);
        let args = [
            Arg::from(out.buf.ptr() + 4 * lo as u64),
            Arg::from(x),
            Arg::from(w.buf.ptr() + p.offset as u64),
            Arg::from(bias.map_or(0, |t| t.buf.ptr() + 4 * lo as u64)),
            Arg::from(m as u32),
            Arg::from(p.rows as u32),
            Arg::from(k as u32),
            Arg::from(n as u32),
            Arg::from(accumulate as u32),
        ];
        // SAFETY: the kernel's parameters are (out, x, w, bias, m, n, k, ldo,
        // accumulate): 8-byte pointers and 4-byte ints. For this grid it writes (and
        // with accumulate reads) out[lo + r * n + c] for
        // r < m, c < p.rows (inside out's m * n, checked), reads x[0..m * k]
        // (x.len == m * k, checked; 16-byte aligned, checked, and k is a multiple of
        // 32 so every float4 of a row is aligned), p.rows rows of k / block_len
        // blocks from the part's offset (`layout` checked the part holds exactly
        // that; offsets are 16-byte aligned, which every 4-byte load needs), and
        // bias[lo .. lo + p.rows] when non-null (bias holds n). No dynamic shared
        // memory; block 256 as the kernels assume.
        b.launch(MODULE, &kernel, grid, &args);
        lo += p.rows;
    }
}

/// out (n_ids, dim) = table (vocab, dim) [ids] for a quantized table: the same
/// contract as `embed::embed` (an id outside the table gives a row of zeros), one
/// launch per part, each writing the ids in its rows.
pub fn embed(b: &CudaBackend, out: &mut CudaTensor, table: &CudaWeight, ids: &CudaIndex, dim: usize) {
    let n = ids.len;
    if n == 0 || dim == 0 {
        return;
    }
    if !table.is_quant() {
        return b
            .fail(format!("quant embed: the table ({}, {}) is not block-quantized", table.rows, table.cols));
    }
    if !super::embed::check_lookup(b, "quant embed", out, table, n, dim) {
        return;
    }
    let threads = (dim / 8).div_ceil(32).clamp(1, 8) as u32 * 32;
    let mut lo = 0;
    for p in &table.quant {
        // SAFETY: quant_embed_T(out, table, ids, dim, vocab, lo, rows): grid (n) reads
        // ids[0..n] (ids holds n), writes out[0..n * dim] (checked) with float4
        // stores (out is a 256-byte aligned pool buffer, dim a multiple of 32), and
        // reads only the part's rows: an id in [lo, lo + rows) of the part's p.rows
        // rows of dim / block_len blocks, which `layout` checked the part holds.
        b.launch(
            MODULE,
            &format!("quant_embed_{}", type_name(p.ty)),
            Grid::new(n as u32, threads, 0),
            &[
                Arg::from(&*out),
                Arg::from(table.buf.ptr() + p.offset as u64),
                Arg::from(ids),
                Arg::from(dim as u32),
                Arg::from(table.rows as u32),
                Arg::from(lo as u32),
                Arg::from(p.rows as u32),
            ],
        );
        lo += p.rows;
    }
}

/// The CPU twin of `matmul`: every weight from `dequantize`, each output an f32 dot
/// in k order plus the bias. out (m, n).
pub fn reference_matmul(w: &QuantMatrix, x: &[f32], bias: Option<&[f32]>, m: usize) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols);
    let wf = w.to_f32();
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for r in 0..n {
            let dot = (0..k).fold(0f32, |s, c| s + x[i * k + c] * wf[r * k + c]);
            out[i * n + r] = dot + bias.map_or(0.0, |b| b[r]);
        }
    }
    out
}

/// The CPU twin of `embed`: row id of the table widened by `dequantize`, zeros for
/// an id outside the table.
pub fn reference_embed(w: &QuantMatrix, ids: &[u32]) -> Vec<f32> {
    let dim = w.cols;
    let mut out = vec![0f32; ids.len() * dim];
    for (o, &id) in out.chunks_exact_mut(dim).zip(ids) {
        if (id as usize) < w.rows() {
            let (ty, bytes) = w.row(id as usize);
            dequantize(ty, bytes, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_m() {
        assert_eq!(plan(QType::Q4_K, 1, 896).0, "quant_gemv_m1_q4_k");
        assert_eq!(plan(QType::Q6_K, 3, 17).0, "quant_gemv_m4_q6_k");
        assert_eq!(plan(QType::Q8_0, 8, 17).0, "quant_gemv_m8_q8_0");
        assert_eq!(plan(QType::Q4_0, 1, 17).1.grid, (3, 1, 1));
        let (k, g) = plan(QType::Q5_0, 9, 130);
        assert_eq!((k.as_str(), g.grid, g.block), ("quant_gemm_q5_0", (3, 1, 1), (256, 1, 1)));
    }
}
