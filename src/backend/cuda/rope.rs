//! Launcher for kernels/rope.cu: rotary embedding in place on the q and k heads.
//! CPU twin: backend/cpu/rope.rs.

use super::{Arg, CudaBackend, CudaIndex, CudaTensor, Grid};
use crate::backend::cpu::rope::inv_freq;
use crate::backend::AttnShape;

const MODULE: &str = "rope";

/// ROPE_MAX_HALF in rope.cu: the frequency table passed by value holds this many f32.
const MAX_HALF: usize = 128;

/// qkv (n, (hq + 2 hk) * d) rotated in place at positions (n), n = positions.len.
///
/// Preconditions (checked): head_dim even, at most 2 * MAX_HALF; qkv holds at least
/// n rows. Positions are not bounded here: any u32 gives a finite angle, and the
/// host rejects positions past the model's context.
///
/// The frequencies are computed here by the CPU twin's own `inv_freq` and passed to
/// the kernel, so that both backends rotate by bit-identical angles (rope.cu says
/// why the GPU's powf would not do). They depend only on theta and head_dim, so the
/// launch's argument bytes are the same on every step (graph replay needs that).
pub fn rope(b: &CudaBackend, qkv: &mut CudaTensor, positions: &CudaIndex, shape: AttnShape, theta: f32) {
    let d = shape.head_dim;
    let heads = shape.num_heads + shape.num_kv_heads;
    let row = (shape.num_heads + 2 * shape.num_kv_heads) * d;
    let n = positions.len;
    if d == 0 || d % 2 != 0 || d / 2 > MAX_HALF {
        return b.fail(format!("rope: head_dim {d} must be even and at most {}", 2 * MAX_HALF));
    }
    if row > u32::MAX as usize || n > i32::MAX as usize {
        return b.fail(format!("rope: rows of {row} or {n} tokens exceed the kernel's 32-bit sizes"));
    }
    if qkv.len < n * row {
        return b.fail(format!("rope: qkv holds {} elements, {n} tokens x {row} need {}", qkv.len, n * row));
    }
    if n == 0 || heads == 0 {
        return;
    }
    let mut freqs = inv_freq(theta, d);
    freqs.resize(MAX_HALF, 0.0);
    let freqs: Vec<u8> = freqs.iter().flat_map(|f| f.to_le_bytes()).collect();
    let pairs = heads * d / 2;
    let threads = (pairs.div_ceil(32) * 32).clamp(32, 256) as u32;
    // SAFETY: rope_f32(qkv, positions, heads, row, d, RopeFreqs): grid (n) reads
    // positions[0..n] (it holds n), and reads and writes elements [0, heads * d) of
    // each of the n rows of qkv (checked above: n * row elements, heads * d <= row).
    // RopeFreqs is float[MAX_HALF], passed as exactly that many bytes.
    b.launch(
        MODULE,
        "rope_f32",
        Grid::new(n as u32, threads, 0),
        &[
            Arg::from(&*qkv),
            Arg::from(positions),
            Arg::from(heads as u32),
            Arg::from(row as u32),
            Arg::from(d as u32),
            Arg::Bytes(freqs),
        ],
    );
}
