//! Launchers for kernels/rope.cu: rotary embedding in place on the q and k heads,
//! alone or fused with the KV cache write.
//! CPU twin: backend/cpu/rope.rs.

use super::{Arg, CudaBackend, CudaCache, CudaIndex, CudaTensor, Grid};
use crate::backend::cpu::rope::inv_freq;
use crate::backend::{AttnPlan, AttnShape};

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
    let Some(p) = check(b, "rope", qkv, positions.len, shape, theta) else { return };
    let n = positions.len;
    if n == 0 || p.heads == 0 {
        return;
    }
    // SAFETY: rope_f32(qkv, positions, heads, row, d, RopeFreqs): grid (n) reads
    // positions[0..n] (it holds n), and reads and writes elements [0, heads * d) of
    // each of the n rows of qkv (checked: n * row elements, heads * d <= row).
    // RopeFreqs is float[MAX_HALF], passed as exactly that many bytes.
    b.launch(
        MODULE,
        "rope_f32",
        Grid::new(n as u32, p.threads, 0),
        &[
            Arg::from(&*qkv),
            Arg::from(positions),
            Arg::from(p.heads as u32),
            Arg::from(p.row as u32),
            Arg::from(shape.head_dim as u32),
            Arg::Bytes(p.freqs),
        ],
    );
}

/// rope, then the rotated k and v of each token into its cache slot (kv.rs's
/// write), in one launch of rope_kv_f32: both ops' checks, both kernels' work.
pub fn rope_kv_write(
    b: &CudaBackend,
    qkv: &mut CudaTensor,
    k_cache: &mut CudaCache,
    v_cache: &mut CudaCache,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
    theta: f32,
) {
    let n = plan.slots.len;
    if plan.positions.len != n {
        return b.fail(format!("rope_kv_write: {} positions for {n} slots", plan.positions.len));
    }
    let Some(p) = check(b, "rope_kv_write", qkv, n, shape, theta) else { return };
    let Some(kv) = super::kv::check(b, "rope_kv_write", k_cache, v_cache, qkv, n, shape) else { return };
    if n == 0 {
        return;
    }
    let units = if kv.kv % 4 == 0 { kv.kv / 4 } else { kv.kv };
    let threads = p.threads.max((units.div_ceil(32) * 32).clamp(32, 256) as u32);
    // SAFETY: rope_kv_f32(qkv, positions, heads, row, d, RopeFreqs, k_cache, v_cache,
    // slots, num_slots): grid (n) reads positions[0..n] and slots[0..n] (both hold n),
    // reads and writes the first heads * d elements and reads the k and v parts of
    // each of the n rows of qkv (checked: n * row elements), and writes hk * d bf16 at
    // row slot of each cache only for slot < num_slots = len / (hk * d). RopeFreqs is
    // float[MAX_HALF], passed as exactly that many bytes.
    b.launch(
        MODULE,
        "rope_kv_f32",
        Grid::new(n as u32, threads, 0),
        &[
            Arg::from(&*qkv),
            Arg::from(&plan.positions),
            Arg::from(p.heads as u32),
            Arg::from(p.row as u32),
            Arg::from(shape.head_dim as u32),
            Arg::Bytes(p.freqs),
            Arg::from(&*k_cache),
            Arg::from(&*v_cache),
            Arg::from(&plan.slots),
            Arg::from(kv.num_slots as u32),
        ],
    );
}

/// What a rope launch passes: the rotated heads, the row length, the threads per
/// token and the frequency table's bytes.
struct RopeLaunch {
    heads: usize,
    row: usize,
    threads: u32,
    freqs: Vec<u8>,
}

/// The checks of every rope launch; None after failing the backend.
fn check(
    b: &CudaBackend,
    op: &str,
    qkv: &CudaTensor,
    n: usize,
    shape: AttnShape,
    theta: f32,
) -> Option<RopeLaunch> {
    let d = shape.head_dim;
    let heads = shape.num_heads + shape.num_kv_heads;
    let row = (shape.num_heads + 2 * shape.num_kv_heads) * d;
    let fail = |msg: String| {
        b.fail(format!("{op}: {msg}"));
        None
    };
    let freqs = freq_bytes(b, op, d, theta)?;
    if row > u32::MAX as usize || n > i32::MAX as usize {
        return fail(format!("rows of {row} or {n} tokens exceed the kernel's 32-bit sizes"));
    }
    if qkv.len < n * row {
        return fail(format!("qkv holds {} elements, {n} tokens x {row} need {}", qkv.len, n * row));
    }
    let pairs = heads * d / 2;
    Some(RopeLaunch { heads, row, threads: (pairs.div_ceil(32) * 32).clamp(32, 256) as u32, freqs })
}

/// RopeFreqs's bytes (inv_freq for head_dim d, zero-padded to MAX_HALF f32), after
/// checking d; None after failing the backend with `op` named. Attention's decode
/// kernel that rotates on load takes the same table.
pub(super) fn freq_bytes(b: &CudaBackend, op: &str, d: usize, theta: f32) -> Option<Vec<u8>> {
    if d == 0 || d % 2 != 0 || d / 2 > MAX_HALF {
        b.fail(format!("{op}: head_dim {d} must be even and at most {}", 2 * MAX_HALF));
        return None;
    }
    let mut freqs = inv_freq(theta, d);
    freqs.resize(MAX_HALF, 0.0);
    Some(freqs.iter().flat_map(|f| f.to_le_bytes()).collect())
}
