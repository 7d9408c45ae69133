//! Rotary position embedding in the Hugging Face "rotate-half" convention: pairs
//! (i, i + d/2) of each head are rotated by pos * theta^(-2i/d).

use rayon::prelude::*;

use crate::backend::AttnShape;

/// In place on the q and k heads of qkv (n, (hq + 2 hk) * head_dim).
pub fn rope(qkv: &mut [f32], positions: &[u32], shape: AttnShape, theta: f32) {
    let d = shape.head_dim;
    let half = d / 2;
    let row = (shape.num_heads + 2 * shape.num_kv_heads) * d;
    let rotated_heads = shape.num_heads + shape.num_kv_heads;
    let inv_freq = inv_freq(theta, d);
    qkv.par_chunks_mut(row).zip(positions.par_iter()).for_each(|(r, &pos)| {
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|f| {
                let a = (pos as f32 * f) as f64;
                (a.cos() as f32, a.sin() as f32)
            })
            .unzip();
        for h in r[..rotated_heads * d].chunks_exact_mut(d) {
            let (x1, x2) = h.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * cos[i] - b * sin[i];
                x2[i] = b * cos[i] + a * sin[i];
            }
        }
    });
}

/// (head_dim / 2) rotation frequencies theta^(-2i/d), in f32 exactly as transformers
/// computes them, so that angles agree bit for bit. The CUDA launcher passes these very
/// values to its kernel rather than recomputing them with the GPU's powf.
pub fn inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}
