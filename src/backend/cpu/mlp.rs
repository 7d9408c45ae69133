//! SwiGLU: silu(gate) * up, the activation between the MLP's two matmuls.

use rayon::prelude::*;

/// out (n, inter) = silu(gate) * up ; gate_up (n, 2 * inter), gate first.
pub fn swiglu(out: &mut [f32], gate_up: &[f32], inter: usize) {
    out.par_chunks_mut(inter).zip(gate_up.par_chunks(2 * inter)).for_each(|(o, gu)| {
        let (g, u) = gu.split_at(inter);
        for i in 0..inter {
            o[i] = g[i] / (1.0 + (-g[i]).exp()) * u[i];
        }
    });
}
