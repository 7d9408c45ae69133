//! Launcher for kernels/mlp.cu: the SwiGLU activation.
//! CPU twin: backend/cpu/mlp.rs.

use super::{Arg, CudaBackend, CudaTensor, Grid};

const MODULE: &str = "mlp";

const THREADS: usize = 256;
/// The grid-stride loop covers any size; more blocks than this only add scheduling.
const MAX_BLOCKS: usize = 1 << 16;

/// out (n, inter) = silu(gate) * up ; gate_up (n, 2 * inter), gate first;
/// n = gate_up.len / (2 * inter).
///
/// Preconditions (checked): gate_up is whole rows, out holds at least n * inter, and
/// gate_up has fewer than 2^31 elements (the kernel divides flat indices in 32 bits).
pub fn swiglu(b: &CudaBackend, out: &mut CudaTensor, gate_up: &CudaTensor, inter: usize) {
    if inter == 0 || gate_up.len % (2 * inter) != 0 {
        return b.fail(format!("swiglu: gate_up holds {} elements, not rows of 2 x {inter}", gate_up.len));
    }
    let n = gate_up.len / (2 * inter);
    if out.len < n * inter {
        return b.fail(format!(
            "swiglu: out holds {} elements, {n} rows x {inter} need {}",
            out.len,
            n * inter
        ));
    }
    if gate_up.len > i32::MAX as usize {
        return b.fail(format!("swiglu: {} elements exceed the kernel's 32-bit indexing", gate_up.len));
    }
    if n == 0 {
        return;
    }
    let units = if inter % 4 == 0 { n * inter / 4 } else { n * inter };
    let blocks = units.div_ceil(THREADS).min(MAX_BLOCKS) as u32;
    // SAFETY: swiglu_f32(out, gate_up, n, inter): a grid-stride loop over exactly
    // n * inter outputs, reading gate_up[0..n * 2 * inter] (its whole length) and
    // writing out[0..n * inter] (checked above).
    b.launch(
        MODULE,
        "swiglu_f32",
        Grid::new(blocks, THREADS as u32, 0),
        &[Arg::from(&*out), Arg::from(gate_up), Arg::from(n as u32), Arg::from(inter as u32)],
    );
}
