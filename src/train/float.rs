//! The float types training runs in: f32 or f64, chosen per run (`--precision`).

use std::fmt::Debug;
use std::ops::{AddAssign, Div, Mul, Neg, Sub};

use safetensors::Dtype;

use crate::pimoe::experts::mlp::Real;
use crate::pimoe::experts::Precision;

/// What the layers, losses and Adam need of a float beyond the experts' `Real`.
pub trait Float:
    Real + Debug + Mul<Output = Self> + Sub<Output = Self> + Div<Output = Self> + Neg<Output = Self> + AddAssign
{
    const PRECISION: Precision;
    const DTYPE: Dtype;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    /// Little-endian bytes of a slice, for safetensors.
    fn le_bytes(v: &[Self]) -> Vec<u8>;
}

macro_rules! impl_float {
    ($t:ty, $p:expr, $d:expr) => {
        impl Float for $t {
            const PRECISION: Precision = $p;
            const DTYPE: Dtype = $d;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn le_bytes(v: &[Self]) -> Vec<u8> {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        }
    };
}

impl_float!(f32, Precision::F32, Dtype::F32);
impl_float!(f64, Precision::F64, Dtype::F64);

/// Converts a slice between float types (exact when widening).
pub fn cast<A: Float, B: Float>(v: &[A]) -> Vec<B> {
    v.iter().map(|&x| B::from_f64(x.to_f64())).collect()
}
