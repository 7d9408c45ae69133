//! Initial values, as PyTorch's defaults, drawn from the seeded PCG32 generator so
//! that a seed fixes them on every machine.

use super::float::Float;
use crate::sampling::Rng;

/// Uniform in [-k, k): `nn.Linear`'s default for both weight and bias is
/// k = 1 / sqrt(fan_in) (kaiming_uniform with a = sqrt(5)).
pub fn uniform<T: Float>(rng: &mut Rng, n: usize, k: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64((rng.next_f32() as f64 * 2.0 - 1.0) * k)).collect()
}

/// Standard normal values (`nn.Embedding`'s default) by Box-Muller over two
/// uniforms, the first kept away from zero.
pub fn normal<T: Float>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| {
            let u1 = ((rng.next_u32() >> 8) as f64 + 1.0) / (1u32 << 24) as f64;
            let u2 = rng.next_f32() as f64;
            T::from_f64((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos())
        })
        .collect()
}
