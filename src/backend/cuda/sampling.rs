//! Launcher for kernels/sampling.cu: one token per row of logits, on the device.
//! The kernel computes exactly `backend::cpu::sampling::sample_row` of each row.

use super::{Arg, CudaBackend, CudaIndex, CudaTensor, Grid};
use crate::backend::cpu::sampling::MAX_VOCAB;
use crate::backend::SAMPLE_PARAMS;

/// Threads per block (one block per row); the kernel's bin ownership assumes 1024.
const THREADS: u32 = 1024;

/// out (rows) = the token `sample_row` picks from each row of logits (rows, vocab)
/// with its params (rows, SAMPLE_PARAMS) = [temperature, top_k, top_p, u]; rows =
/// out.len. Preconditions (a violation is reported as the backend's error and nothing
/// is launched): 1 <= vocab <= MAX_VOCAB, logits.len >= rows * vocab, params.len >=
/// rows * SAMPLE_PARAMS. Zero rows launch nothing.
pub fn sample(b: &CudaBackend, out: &mut CudaIndex, logits: &CudaTensor, params: &CudaTensor, vocab: usize) {
    let rows = out.len;
    if rows == 0 {
        return;
    }
    if vocab == 0 || vocab > MAX_VOCAB {
        b.fail(format!("sample: vocab {vocab} outside 1..={MAX_VOCAB}"));
        return;
    }
    if rows > i32::MAX as usize || logits.len < rows * vocab || params.len < rows * SAMPLE_PARAMS {
        b.fail(format!(
            "sample: {rows} rows of vocab {vocab} need {} logits and {} params, got {} and {}",
            rows * vocab,
            rows * SAMPLE_PARAMS,
            logits.len,
            params.len
        ));
        return;
    }
    // SAFETY (launch contract): sample_f32(u32* out, const float* logits,
    // const float* params, u32 vocab), in that order. Block r reads logits
    // [r * vocab, (r + 1) * vocab) and params [4 r, 4 r + 4) and writes out[r], for r
    // < rows = grid.x: all within the lengths checked above. Shared memory is static
    // (33 KB). Grid and the scalar depend only on (rows, vocab).
    b.launch(
        "sampling",
        "sample_f32",
        Grid::new(rows as u32, THREADS, 0),
        &[Arg::from(&*out), Arg::from(logits), Arg::from(params), Arg::from(vocab as u32)],
    );
}
