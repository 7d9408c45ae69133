//! Launcher for kernels/router.cu: the router's hidden-state gate for a whole decode
//! batch in one launch. CPU twin: `HiddenGate::probs` in src/pimoe/router.rs.

use super::{Arg, CudaBackend, CudaTensor, Grid};

const MODULE: &str = "router";
/// Must equal GATE_THREADS in kernels/router.cu (its __launch_bounds__).
const THREADS: u32 = 256;
/// The row and the inner activations live in dynamic shared memory; above the
/// default 48 KB a function attribute would be needed (h > ~12000).
const MAX_SMEM: usize = 48 * 1024;

/// A hidden gate's weights on the device, f32 (uploaded once with `tensor_from`, so
/// they hold the CPU twin's exact values whatever the file's dtype).
pub struct GateWeights<'a> {
    /// (n1, h)
    pub w1: &'a CudaTensor,
    /// (n1)
    pub b1: &'a CudaTensor,
    /// The second layer (n_out, n1) and its bias (n_out); None for a linear gate,
    /// where n1 is n_out.
    pub second: Option<(&'a CudaTensor, &'a CudaTensor)>,
}

/// probs (rows, n_out) = act(gate(hidden (rows, h))), rows = hidden.len / h; act is
/// softmax over each row when `softmax`, else sigmoid per output.
///
/// Preconditions (checked): every size as documented above, probs at least
/// rows * n_out long, (h + n1 + n_out) floats fit in 48 KB of shared memory.
#[allow(clippy::too_many_arguments)]
pub fn router_gate(
    b: &CudaBackend,
    probs: &mut CudaTensor,
    hidden: &CudaTensor,
    w: &GateWeights,
    h: usize,
    n1: usize,
    n_out: usize,
    softmax: bool,
) {
    let fail = |msg: String| b.fail(format!("router_gate: {msg}"));
    if h == 0 || n1 == 0 || n_out == 0 || h > u32::MAX as usize || n1 > u32::MAX as usize {
        return fail(format!("sizes h {h}, n1 {n1}, n_out {n_out} out of range"));
    }
    if hidden.len % h != 0 {
        return fail(format!("hidden holds {} values, not rows of {h}", hidden.len));
    }
    let rows = hidden.len / h;
    if w.w1.len != n1 * h || w.b1.len != n1 {
        return fail(format!(
            "layer 1 has {} + {} values, ({n1}, {h}) + ({n1}) expected",
            w.w1.len, w.b1.len
        ));
    }
    match w.second {
        Some((w2, b2)) if w2.len != n_out * n1 || b2.len != n_out => {
            return fail(format!(
                "layer 2 has {} + {} values, ({n_out}, {n1}) + ({n_out}) expected",
                w2.len, b2.len
            ));
        }
        None if n1 != n_out => return fail(format!("a linear gate has n1 {n1} != n_out {n_out}")),
        _ => {}
    }
    if probs.len < rows * n_out {
        return fail(format!("probs holds {} values, {rows} x {n_out} needed", probs.len));
    }
    let smem = (h + n1 + n_out) * 4;
    if smem > MAX_SMEM {
        return fail(format!("{smem} bytes of shared memory exceed {MAX_SMEM}"));
    }
    if rows == 0 {
        return;
    }
    if rows > i32::MAX as usize {
        return fail(format!("{rows} rows exceed the grid"));
    }
    let (w2, b2) = match w.second {
        Some((w2, b2)) => (Arg::from(w2), Arg::from(b2)),
        None => (Arg::Word(0), Arg::Word(0)),
    };
    // SAFETY: router_gate_f32(probs, hidden, w1, b1, w2, b2, h, n1, n_out, act):
    // grid (rows) reads hidden[0..rows * h], w1[0..n1 * h], b1[0..n1], and when w2 is
    // not null w2[0..n_out * n1], b2[0..n_out]; writes probs[0..rows * n_out]; uses
    // (h + n1 + n_out) * 4 bytes of dynamic shared memory: all checked above.
    b.launch(
        MODULE,
        "router_gate_f32",
        Grid::new(rows as u32, THREADS, smem as u32),
        &[
            Arg::from(&*probs),
            Arg::from(hidden),
            Arg::from(w.w1),
            Arg::from(w.b1),
            w2,
            b2,
            Arg::from(h as u32),
            Arg::from(n1 as u32),
            Arg::from(n_out as u32),
            Arg::from(softmax as u32),
        ],
    );
}
