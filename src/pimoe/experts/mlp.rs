//! Dense layer stacks (MLPs) in f64, or in f32 where the expert's precision says so.
//! This is the readable reference for kernels/expert_f64.cu (`dense_f64`,
//! `dense_f32`), and a product feature: the CPU runs experts when there is no GPU.
//!
//! Summation order is fixed, so results are bitwise repeatable and the GPU can match
//! them: every output element is one chain over k = 0, 1, ..., n_in - 1 of fused
//! multiply-adds starting from zero, `acc = fma(x[k], w[k], acc)`, then `acc + b`,
//! then the activation. The kernel computes the same chain with the same `fma`, so for
//! Identity and ReLU layers the CPU and the GPU agree bit for bit; Tanh, Gelu and Silu
//! go through each side's libm (`tanh`, `exp`, `erf`), whose last bits may differ.
//! How the work is split (row blocks, threads) never changes any element's chain.

use rayon::prelude::*;

use super::{Precision, WeightFile};
use crate::error::{Error, Result};

/// The nonlinearity between layers (not after the last one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    /// The exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()`.
    Gelu,
    /// `x * sigmoid(x)`, computed as `x / (1 + exp(-x))`.
    Silu,
}

impl Activation {
    pub const ALL: [Activation; 5] =
        [Activation::Identity, Activation::Relu, Activation::Tanh, Activation::Gelu, Activation::Silu];

    /// The name a manifest uses: "identity", "relu", "tanh", "gelu", "silu".
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name.to_ascii_lowercase())
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
        }
    }

    /// The `act` argument of the dense kernels (ACT_* in kernels/expert_f64.cu).
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Tanh => 2,
            Activation::Gelu => 3,
            Activation::Silu => 4,
        }
    }

    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::Identity => x,
            // NaN stays NaN (NaN < 0 is false), as in the kernel.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    /// f32 arithmetic, except erf, which is evaluated in f64 and rounded (std has no
    /// f32 erf; the result is at least as accurate as CUDA's `erff`).
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + erf((x * std::f32::consts::FRAC_1_SQRT_2) as f64) as f32),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// The error function, within ~1.5 ulp (checked against mpmath and torch.erf). Rust's
/// std has no stable `erf`, so it is here:
/// - |x| < 1: the Maclaurin series `2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))`,
///   summed smallest term first;
/// - 1 <= |x| < 6: `1 - erfc(x)` with erfc from its continued fraction (Abramowitz &
///   Stegun 7.1.14), evaluated bottom-up at a fixed depth that reaches f64 precision
///   (250 levels below 2, 60 above);
/// - beyond 6, erf is +-1 to f64 precision.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a >= 6.0 {
        1.0
    } else if a < 1.0 {
        // Terms fall below 1e-18 of the first within 20 steps for a < 1.
        let x2 = a * a;
        let mut terms = [0.0f64; 32];
        let (mut p, mut len) = (a, 1);
        terms[0] = a;
        while len < terms.len() {
            p *= -x2 / len as f64;
            let t = p / (2 * len + 1) as f64;
            if t.abs() < 1e-18 * a {
                break;
            }
            terms[len] = t;
            len += 1;
        }
        let sum = terms[..len].iter().rev().fold(0.0, |s, &t| s + t);
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else {
        1.0 - erfc_continued_fraction(a, if a < 2.0 { 250 } else { 60 })
    };
    r.copysign(x)
}

/// exp(-a^2) with a^2 split exactly into hi + lo (an fma gives lo), so the rounding
/// of a^2 does not get amplified by exp.
fn exp_neg_square(a: f64) -> f64 {
    let hi = a * a;
    let lo = a.mul_add(a, -hi);
    (-hi).exp() * (1.0 - lo)
}

/// erfc(a) for a >= 1: exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))).
fn erfc_continued_fraction(a: f64, depth: u32) -> f64 {
    let mut f = a;
    for k in (1..=depth).rev() {
        f = a + (k as f64 * 0.5) / f;
    }
    exp_neg_square(a) / (std::f64::consts::PI.sqrt() * f)
}

/// One dense layer, `y = x W^T + b`, in PyTorch's `nn.Linear` layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// (n_out, n_in) row-major.
    pub w: Vec<f64>,
    /// (n_out)
    pub b: Vec<f64>,
    pub n_in: usize,
    pub n_out: usize,
}

impl Linear {
    pub fn new(w: Vec<f64>, b: Vec<f64>, n_in: usize, n_out: usize) -> Result<Self> {
        if n_in == 0 || n_out == 0 || w.len() != n_in * n_out || b.len() != n_out {
            return Err(Error::Request(format!(
                "linear layer {n_in} -> {n_out} needs {} weights and {n_out} biases, got {} and {}",
                n_in * n_out,
                w.len(),
                b.len()
            )));
        }
        Ok(Linear { w, b, n_in, n_out })
    }
}

/// A stack of dense layers with one activation between consecutive layers.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
    precision: Precision,
    /// The weights rounded to f32 once, for `Precision::F32`; empty otherwise.
    layers_f32: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Mlp {
    /// Checks that each layer's input width is the previous layer's output width.
    pub fn new(layers: Vec<Linear>, activation: Activation, precision: Precision) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Request("an MLP needs at least one layer".into()));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].n_out != pair[1].n_in {
                return Err(Error::Request(format!(
                    "MLP layer {i} has {} outputs but layer {} takes {} inputs",
                    pair[0].n_out,
                    i + 1,
                    pair[1].n_in
                )));
            }
        }
        let layers_f32 = match precision {
            Precision::F64 => Vec::new(),
            Precision::F32 => layers
                .iter()
                .map(|l| (l.w.iter().map(|&v| v as f32).collect(), l.b.iter().map(|&v| v as f32).collect()))
                .collect(),
        };
        Ok(Mlp { layers, activation, precision, layers_f32 })
    }

    /// Loads the layers `{prefix}.{i * stride}.weight` (widths[i+1], widths[i]) and
    /// `{prefix}.{i * stride}.bias` (widths[i+1]) for i = 0 .. widths.len() - 1. A
    /// PyTorch `nn.Sequential(Linear, ReLU, Linear, ...)` has stride 2.
    pub fn load(
        file: &WeightFile,
        prefix: &str,
        stride: usize,
        widths: &[usize],
        activation: Activation,
        precision: Precision,
    ) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::Request(format!(
                "MLP `{prefix}`: widths {widths:?} need >= 2 nonzero entries"
            )));
        }
        let mut layers = Vec::with_capacity(widths.len() - 1);
        for (i, io) in widths.windows(2).enumerate() {
            let (n_in, n_out) = (io[0], io[1]);
            let name = format!("{prefix}.{}", i * stride);
            let w = file.load(&format!("{name}.weight"), &[n_out, n_in])?;
            let b = file.load(&format!("{name}.bias"), &[n_out])?;
            layers.push(Linear { w, b, n_in, n_out });
        }
        Mlp::new(layers, activation, precision)
    }

    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }
    pub fn activation(&self) -> Activation {
        self.activation
    }
    pub fn precision(&self) -> Precision {
        self.precision
    }
    pub fn n_inputs(&self) -> usize {
        self.layers[0].n_in
    }
    pub fn n_outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].n_out
    }
    /// [n_in, hidden..., n_out]
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(self.n_inputs()).chain(self.layers.iter().map(|l| l.n_out)).collect()
    }
    /// Multiply-adds per row.
    pub fn macs_per_row(&self) -> usize {
        self.layers.iter().map(|l| l.n_in * l.n_out).sum()
    }

    /// x (rows, n_in) -> (rows, n_out), all rows through each layer together. In
    /// `Precision::F32` the inputs are rounded to f32 and everything runs in f32.
    pub fn forward(&self, x: &[f64], rows: usize) -> Vec<f64> {
        assert_eq!(x.len(), rows * self.n_inputs(), "Mlp::forward: x must be (rows, {})", self.n_inputs());
        match self.precision {
            Precision::F64 => self.forward_t(x.to_vec(), rows, |i| (&self.layers[i].w, &self.layers[i].b)),
            Precision::F32 => {
                let x32 = x.iter().map(|&v| v as f32).collect();
                let y = self.forward_t(x32, rows, |i| (&self.layers_f32[i].0, &self.layers_f32[i].1));
                y.into_iter().map(f64::from).collect()
            }
        }
    }

    /// The f32 forward without widening, for comparing with the `_f32` kernels.
    pub fn forward_f32(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(
            x.len(),
            rows * self.n_inputs(),
            "Mlp::forward_f32: x must be (rows, {})",
            self.n_inputs()
        );
        assert_eq!(self.precision, Precision::F32, "Mlp::forward_f32 on an f64 MLP");
        self.forward_t(x.to_vec(), rows, |i| (&self.layers_f32[i].0, &self.layers_f32[i].1))
    }

    fn forward_t<'a, T: Real>(
        &'a self,
        mut x: Vec<T>,
        rows: usize,
        weights: impl Fn(usize) -> (&'a Vec<T>, &'a Vec<T>),
    ) -> Vec<T> {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let (w, b) = weights(i);
            let act = (i < last).then_some(self.activation);
            x = dense(&x, rows, l.n_in, w, b, l.n_out, act);
        }
        x
    }
}

/// The float types the expert math runs in.
pub trait Real: Copy + Default + Send + Sync + PartialOrd + std::ops::Add<Output = Self> + 'static {
    /// a * b + c with one rounding.
    fn fma(a: Self, b: Self, c: Self) -> Self;
    fn act(a: Activation, x: Self) -> Self;
}

impl Real for f64 {
    #[inline(always)]
    fn fma(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    fn act(a: Activation, x: f64) -> f64 {
        a.apply_f64(x)
    }
}

impl Real for f32 {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    fn act(a: Activation, x: f32) -> f32 {
        a.apply_f32(x)
    }
}

/// Below this many multiply-adds a layer runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 16;

/// One dense layer on a batch: x (rows, n_in), w (n_out, n_in), b (n_out) ->
/// y (rows, n_out), with `act` applied (None after the last layer).
///
/// Work is split by output columns (a chunk of W rows per task, each read once for
/// all rows), and within a column by blocks of 4 rows that share each W load. Each
/// element's summation chain is the one described at the top of the file.
pub fn dense<T: Real>(
    x: &[T],
    rows: usize,
    n_in: usize,
    w: &[T],
    b: &[T],
    n_out: usize,
    act: Option<Activation>,
) -> Vec<T> {
    assert!(x.len() == rows * n_in && w.len() == n_out * n_in && b.len() == n_out, "dense: shape mismatch");
    if rows == 0 {
        return Vec::new();
    }
    // yt (n_out, rows): each output's column is contiguous, so tasks own disjoint slices.
    let mut yt = vec![T::default(); n_out * rows];
    let macs = rows * n_in * n_out;
    let per_task =
        if macs >= PAR_MIN_MACS { n_out.div_ceil(4 * rayon::current_num_threads()).max(1) } else { n_out };
    let batch = Batch { x, rows, n_in, act };
    let task = |(t, chunk): (usize, &mut [T])| {
        for (j, col) in chunk.chunks_mut(rows).enumerate() {
            let o = t * per_task + j;
            column(&batch, &w[o * n_in..(o + 1) * n_in], b[o], col);
        }
    };
    if per_task < n_out {
        yt.par_chunks_mut(per_task * rows).enumerate().for_each(task);
    } else {
        yt.chunks_mut(per_task * rows).enumerate().for_each(task);
    }
    let mut y = vec![T::default(); rows * n_out];
    for o in 0..n_out {
        for r in 0..rows {
            y[r * n_out + o] = yt[o * rows + r];
        }
    }
    y
}

/// The inputs every output column of a layer reads: x (rows, n_in) and the activation.
struct Batch<'a, T> {
    x: &'a [T],
    rows: usize,
    n_in: usize,
    act: Option<Activation>,
}

/// One output column for all rows: out[r] = act(sum_k x[r, k] w[k] + bias).
fn column<T: Real>(batch: &Batch<T>, w: &[T], bias: T, out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        unsafe { column_fma(batch, w, bias, out) };
        return;
    }
    column_body(batch, w, bias, out)
}

/// The same body compiled with FMA enabled, so `mul_add` is one instruction instead
/// of a libm call. The results are identical: both are the correctly rounded fma.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn column_fma<T: Real>(batch: &Batch<T>, w: &[T], bias: T, out: &mut [T]) {
    column_body(batch, w, bias, out)
}

#[inline(always)]
fn column_body<T: Real>(batch: &Batch<T>, w: &[T], bias: T, out: &mut [T]) {
    let Batch { x, rows, n_in, act } = *batch;
    let finish = |acc: T| {
        let v = acc + bias;
        match act {
            Some(a) => T::act(a, v),
            None => v,
        }
    };
    let mut r = 0;
    while r + 4 <= rows {
        let x0 = &x[r * n_in..(r + 1) * n_in];
        let x1 = &x[(r + 1) * n_in..(r + 2) * n_in];
        let x2 = &x[(r + 2) * n_in..(r + 3) * n_in];
        let x3 = &x[(r + 3) * n_in..(r + 4) * n_in];
        let (mut a0, mut a1, mut a2, mut a3) = (T::default(), T::default(), T::default(), T::default());
        for k in 0..n_in {
            let wk = w[k];
            a0 = T::fma(x0[k], wk, a0);
            a1 = T::fma(x1[k], wk, a1);
            a2 = T::fma(x2[k], wk, a2);
            a3 = T::fma(x3[k], wk, a3);
        }
        out[r] = finish(a0);
        out[r + 1] = finish(a1);
        out[r + 2] = finish(a2);
        out[r + 3] = finish(a3);
        r += 4;
    }
    for r in r..rows {
        let xr = &x[r * n_in..(r + 1) * n_in];
        let mut a = T::default();
        for k in 0..n_in {
            a = T::fma(xr[k], w[k], a);
        }
        out[r] = finish(a);
    }
}
