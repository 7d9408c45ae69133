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
    // inv_freq in f32 exactly as transformers computes it, so angles agree bit for bit.
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32)).collect();
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
