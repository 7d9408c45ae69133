//! rope (kernels/rope.cu) against the CPU. Both take the same f32 inv_freq and f32
//! angles and round f64 cos/sin to f32 (rope.cu explains), so F32_TOL holds with a
//! wide margin: the outputs should be bitwise equal but for rare last-ulp cases.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::{AttnShape, Backend};
use pimoe::sampling::Rng;

const ROWS: [usize; 3] = [1, 31, 33];
/// (hq, hk, d): GQA ratios 3, 7 and 7 with head_dim 64 and 128.
const SHAPES: [(usize, usize, usize); 3] = [(9, 3, 64), (14, 2, 64), (7, 1, 128)];
/// Llama's and Qwen2's bases.
const THETAS: [f32; 2] = [10_000.0, 1_000_000.0];

fn positions(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut p: Vec<u32> = (0..n).map(|_| rng.next_u32() % 32_768).collect();
    // Position 0 (the identity rotation) and one past a 128k context.
    p[0] = 0;
    if n > 1 {
        p[n - 1] = 131_073;
    }
    p
}

fn rope_on<B: Backend>(b: &B, qkv: &[f32], pos: &[u32], shape: AttnShape, theta: f32) -> B::Tensor {
    let mut t = b.tensor_from(qkv);
    b.rope(&mut t, &b.index(pos), shape, theta);
    t
}

#[test]
fn rope_matches_cpu() {
    let Some(g) = gpu("rope_matches_cpu") else { return };
    for &(hq, hk, d) in &SHAPES {
        let shape = AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d };
        let row = (hq + 2 * hk) * d;
        for &theta in &THETAS {
            for &n in &ROWS {
                let seed = (n * 1000 + hq * 10 + d) as u64;
                let qkv = rand_vec(n * row, seed);
                let pos = positions(n, seed + 1);
                let what = format!("rope n={n} hq={hq} hk={hk} d={d} theta={theta}");
                let want = rope_on(&CpuBackend, &qkv, &pos, shape, theta);
                let got = rope_on(&g, &qkv, &pos, shape, theta);
                check(&what, &g, &got, &want, F32_TOL);
                // v is not touched at all.
                let got = g.to_host(&got);
                for (t, r) in got.chunks(row).enumerate() {
                    let v = (hq + hk) * d;
                    assert!(
                        r[v..]
                            .iter()
                            .zip(&qkv[t * row + v..(t + 1) * row])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: token {t}'s v heads changed"
                    );
                }
            }
        }
    }
}
