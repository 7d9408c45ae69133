//! Launchers for kernels/embed.cu: the token embedding lookup and the row gather.
//! CPU twin: backend/cpu/embed.rs.

use super::{Arg, CudaBackend, CudaIndex, CudaTensor, CudaWeight, Grid};

const MODULE: &str = "embed";

/// Threads for a block that strides over a row of `dim` elements, 4 at a time when
/// dim % 4 == 0 (the kernels' vector path). Any multiple of 32 is correct.
fn row_threads(dim: usize) -> u32 {
    let units = if dim % 4 == 0 { dim / 4 } else { dim };
    (units.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// out (n, dim) = table (vocab, dim) [ids (n)], n = ids.len.
///
/// Preconditions (checked; a violation fails the backend with a message): the table
/// has dim columns, out holds at least n * dim elements, vocab and dim fit in u32.
/// Ids are validated by the host (the tokenizer and `Llm::plan`); an id outside the
/// table is still memory-safe: the kernel writes that row as zeros.
pub fn embed(b: &CudaBackend, out: &mut CudaTensor, table: &CudaWeight, ids: &CudaIndex, dim: usize) {
    let n = ids.len;
    if n == 0 || dim == 0 {
        return;
    }
    if table.is_quant() {
        return b.fail("embed: the table is block-quantized; quant::embed reads it".into());
    }
    if !check_lookup(b, "embed", out, table, n, dim) {
        return;
    }
    let grid = Grid::new(n as u32, row_threads(dim), 0);
    if !table.is_matrix() {
        // A one-row table is stored as an f32 vector (see CudaWeight): the same
        // lookup is then an f32 row gather with one source row.
        // SAFETY: gather_rows_f32(out, x, rows, dim, n_in): grid (n) reads rows[0..n]
        // (ids holds n), writes out[0..n * dim] (checked above), and reads x rows
        // below n_in = 1 only, i.e. the table's dim f32 values.
        return b.launch(
            MODULE,
            "gather_rows_f32",
            grid,
            &[Arg::from(&*out), Arg::from(table), Arg::from(ids), Arg::from(dim as u32), Arg::from(1u32)],
        );
    }
    // SAFETY: embed_bf16(out, table, ids, dim, vocab): grid (n) reads ids[0..n]
    // (ids holds n), writes out[0..n * dim] (checked above), and reads table rows
    // below vocab = table.rows only, each dim bf16 (the matrix is (rows, dim) bf16).
    b.launch(
        MODULE,
        "embed_bf16",
        grid,
        &[
            Arg::from(&*out),
            Arg::from(table),
            Arg::from(ids),
            Arg::from(dim as u32),
            Arg::from(table.rows as u32),
        ],
    );
}

/// The checks of every table lookup (this file's and quant.rs's): the table has dim
/// columns, out holds n * dim, sizes fit the kernels' 32-bit indices. On a violation
/// fails the backend with a message naming `what` and returns false.
pub(super) fn check_lookup(
    b: &CudaBackend,
    what: &str,
    out: &CudaTensor,
    table: &CudaWeight,
    n: usize,
    dim: usize,
) -> bool {
    let err = if table.cols != dim {
        format!("{what}: table has {} columns, expected dim {dim}", table.cols)
    } else if out.len < n * dim {
        format!("{what}: out holds {} elements, {n} ids x dim {dim} need {}", out.len, n * dim)
    } else if table.rows > u32::MAX as usize || dim > u32::MAX as usize || n > i32::MAX as usize {
        format!("{what}: table ({}, {dim}) or {n} ids exceed the kernel's 32-bit sizes", table.rows)
    } else {
        return true;
    };
    b.fail(err);
    false
}

/// out (n, dim) = x (n_in, dim) [rows (n)], n = rows.len, n_in = x.len / dim.
///
/// Preconditions (checked): x.len is a multiple of dim, out holds at least n * dim
/// elements, sizes fit in u32. Row numbers come from the host's step plan; one past
/// n_in is still memory-safe: the kernel writes that row as zeros.
pub fn gather_rows(b: &CudaBackend, out: &mut CudaTensor, x: &CudaTensor, rows: &CudaIndex, dim: usize) {
    let n = rows.len;
    if n == 0 || dim == 0 {
        return;
    }
    if x.len % dim != 0 {
        return b.fail(format!("gather_rows: x holds {} elements, not a multiple of dim {dim}", x.len));
    }
    if out.len < n * dim {
        return b.fail(format!(
            "gather_rows: out holds {} elements, {n} rows x dim {dim} need {}",
            out.len,
            n * dim
        ));
    }
    let n_in = x.len / dim;
    if n_in > u32::MAX as usize || dim > u32::MAX as usize || n > i32::MAX as usize {
        return b.fail(format!("gather_rows: ({n_in}, {dim}) or {n} rows exceed the kernel's 32-bit sizes"));
    }
    // SAFETY: gather_rows_f32(out, x, rows, dim, n_in): grid (n) reads rows[0..n]
    // (rows holds n), writes out[0..n * dim] (checked above), and reads x rows below
    // n_in = x.len / dim only.
    b.launch(
        MODULE,
        "gather_rows_f32",
        Grid::new(n as u32, row_threads(dim), 0),
        &[Arg::from(&*out), Arg::from(x), Arg::from(rows), Arg::from(dim as u32), Arg::from(n_in as u32)],
    );
}
