//! Dense layers and stacks of them (MLPs) with hand-written backward passes.
//!
//! The forward pass is the runtime's own (`pimoe::experts::mlp::dense`: one fused
//! multiply-add chain per output element), so a trained stack computes exactly what
//! the expert runtime will compute with the saved weights. The backward sums have a
//! fixed order too (over rows for the weight gradients, over outputs for the input
//! gradients); rayon splits only the independent elements, so a seed gives the same
//! bits whatever the thread count.

use rayon::prelude::*;

use super::adam::{Adam, Param};
use super::float::Float;
use super::init::uniform;
use super::output::TensorOut;
use crate::pimoe::experts::mlp::{dense, erf, Activation};
use crate::sampling::Rng;

/// Below this many multiply-adds a backward product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 16;

/// y = x W^T + b, `torch.nn.Linear`'s layout.
#[derive(Clone, Debug)]
pub struct Dense<T> {
    pub n_in: usize,
    pub n_out: usize,
    /// (n_out, n_in)
    pub w: Param<T>,
    /// (n_out)
    pub b: Param<T>,
}

/// Gradients of one dense layer.
#[derive(Clone, Debug)]
pub struct DenseGrad<T> {
    /// (n_out, n_in)
    pub w: Vec<T>,
    /// (n_out)
    pub b: Vec<T>,
}

impl<T: Float> Dense<T> {
    /// `nn.Linear`'s default initialisation.
    pub fn init(n_in: usize, n_out: usize, rng: &mut Rng) -> Self {
        let k = 1.0 / (n_in as f64).sqrt();
        let w = uniform(rng, n_out * n_in, k);
        let b = uniform(rng, n_out, k);
        Dense { n_in, n_out, w: Param::new(w), b: Param::new(b) }
    }

    /// x (rows, n_in) -> (rows, n_out), with `act` applied when given.
    pub fn forward(&self, x: &[T], rows: usize, act: Option<Activation>) -> Vec<T> {
        dense(x, rows, self.n_in, &self.w.value, &self.b.value, self.n_out, act)
    }

    /// From the layer's input x (rows, n_in) and the loss gradient dy (rows, n_out):
    /// the parameter gradients, and dx (rows, n_in) when `want_dx`.
    pub fn backward(&self, x: &[T], dy: &[T], rows: usize, want_dx: bool) -> (DenseGrad<T>, Option<Vec<T>>) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        assert!(x.len() == rows * n_in && dy.len() == rows * n_out, "Dense::backward: shape mismatch");
        let par = rows * n_in * n_out >= PAR_MIN_MACS;
        // dW[o, :] = sum over r of dy[r, o] x[r, :], r in order.
        let mut dw = vec![T::default(); n_out * n_in];
        let weight_row = |(o, row): (usize, &mut [T])| {
            for r in 0..rows {
                let g = dy[r * n_out + o];
                row.iter_mut().zip(&x[r * n_in..(r + 1) * n_in]).for_each(|(d, &xi)| *d += g * xi);
            }
        };
        if par {
            dw.par_chunks_mut(n_in).enumerate().for_each(weight_row);
        } else {
            dw.chunks_mut(n_in).enumerate().for_each(weight_row);
        }
        let mut db = vec![T::default(); n_out];
        for r in 0..rows {
            db.iter_mut().zip(&dy[r * n_out..(r + 1) * n_out]).for_each(|(d, &g)| *d += g);
        }
        // dx[r, :] = sum over o of dy[r, o] W[o, :], o in order.
        let dx = want_dx.then(|| {
            let mut dx = vec![T::default(); rows * n_in];
            let w = &self.w.value;
            let input_row = |(r, row): (usize, &mut [T])| {
                for o in 0..n_out {
                    let g = dy[r * n_out + o];
                    row.iter_mut().zip(&w[o * n_in..(o + 1) * n_in]).for_each(|(d, &wi)| *d += g * wi);
                }
            };
            if par {
                dx.par_chunks_mut(n_in).enumerate().for_each(input_row);
            } else {
                dx.chunks_mut(n_in).enumerate().for_each(input_row);
            }
            dx
        });
        (DenseGrad { w: dw, b: db }, dx)
    }
}

/// d act(z) / dz, evaluated in f64 (exact for f32 inputs).
pub fn act_grad(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Identity => 1.0,
        // 0 at the kink, as PyTorch.
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
        // d/dz z Phi(z) = Phi(z) + z phi(z)
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + erf(z * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            cdf + z * pdf
        }
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-z).exp());
            s + z * s * (1.0 - s)
        }
    }
}

/// Dense layers with one activation between consecutive layers (none after the
/// last), as the runtime's expert MLP and the router/T2C heads (ReLU).
#[derive(Clone, Debug)]
pub struct Net<T> {
    pub layers: Vec<Dense<T>>,
    pub act: Activation,
}

/// What the forward pass keeps for the backward pass.
pub struct Trace<T> {
    rows: usize,
    /// The input of each layer, (rows, n_in).
    inputs: Vec<Vec<T>>,
    /// The pre-activation of each layer but the last, (rows, n_out).
    pre: Vec<Vec<T>>,
}

impl<T: Float> Net<T> {
    /// widths = [n_in, hidden.., n_out], at least two entries.
    pub fn init(widths: &[usize], act: Activation, rng: &mut Rng) -> Self {
        assert!(widths.len() >= 2, "Net::init: widths {widths:?} need at least [in, out]");
        let layers = widths.windows(2).map(|w| Dense::init(w[0], w[1], rng)).collect();
        Net { layers, act }
    }

    pub fn n_in(&self) -> usize {
        self.layers[0].n_in
    }
    pub fn n_out(&self) -> usize {
        self.layers[self.layers.len() - 1].n_out
    }
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(self.n_in()).chain(self.layers.iter().map(|l| l.n_out)).collect()
    }

    /// x (rows, n_in) -> (rows, n_out).
    pub fn forward(&self, x: &[T], rows: usize) -> Vec<T> {
        let last = self.layers.len() - 1;
        let mut h = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h, rows, (i < last).then_some(self.act));
        }
        h
    }

    /// The same, keeping each layer's input and pre-activation. Same bits as
    /// `forward`: the activation of `z` is what the fused layer computes.
    pub fn forward_trace(&self, x: &[T], rows: usize) -> (Vec<T>, Trace<T>) {
        let last = self.layers.len() - 1;
        let mut trace = Trace { rows, inputs: Vec::new(), pre: Vec::new() };
        let mut h = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            let z = l.forward(&h, rows, None);
            trace.inputs.push(h);
            if i == last {
                return (z, trace);
            }
            h = z.iter().map(|&v| T::act(self.act, v)).collect();
            trace.pre.push(z);
        }
        unreachable!("a net has at least one layer")
    }

    /// From dout (rows, n_out): every layer's gradients, and dx (rows, n_in) when
    /// `want_dx`.
    pub fn backward(
        &self,
        trace: &Trace<T>,
        dout: &[T],
        want_dx: bool,
    ) -> (Vec<DenseGrad<T>>, Option<Vec<T>>) {
        let rows = trace.rows;
        let mut grads = Vec::with_capacity(self.layers.len());
        let mut dy = dout.to_vec();
        for i in (0..self.layers.len()).rev() {
            let (g, dx) = self.layers[i].backward(&trace.inputs[i], &dy, rows, i > 0 || want_dx);
            grads.push(g);
            match (i, dx) {
                (0, dx) => {
                    grads.reverse();
                    return (grads, dx);
                }
                (_, dx) => {
                    dy = dx.expect("asked for");
                    for (d, &z) in dy.iter_mut().zip(&trace.pre[i - 1]) {
                        *d = *d * T::from_f64(act_grad(self.act, z.to_f64()));
                    }
                }
            }
        }
        unreachable!("a net has at least one layer")
    }

    /// One Adam update of every layer (after `adam.tick()`).
    pub fn update(&mut self, adam: &Adam, grads: &[DenseGrad<T>]) {
        for (l, g) in self.layers.iter_mut().zip(grads) {
            adam.update(&mut l.w, &g.w);
            adam.update(&mut l.b, &g.b);
        }
    }

    /// Folds an input standardisation into the first layer: the net then takes raw x
    /// and computes what it computed on (x - mean) / std.
    pub fn fold_input(&mut self, mean: &[f64], std: &[f64]) {
        let l = &mut self.layers[0];
        assert!(mean.len() == l.n_in && std.len() == l.n_in, "fold_input: one mean and std per input");
        for o in 0..l.n_out {
            let row = &mut l.w.value[o * l.n_in..(o + 1) * l.n_in];
            let mut shift = 0f64;
            for (i, w) in row.iter_mut().enumerate() {
                let scaled = w.to_f64() / std[i];
                shift += scaled * mean[i];
                *w = T::from_f64(scaled);
            }
            l.b.value[o] = T::from_f64(l.b.value[o].to_f64() - shift);
        }
    }

    /// Folds an output de-standardisation into the last layer: output o becomes
    /// y_o * scale[o] + shift[o].
    pub fn fold_output(&mut self, scale: &[f64], shift: &[f64]) {
        let l = self.layers.last_mut().expect("a net has at least one layer");
        assert!(
            scale.len() == l.n_out && shift.len() == l.n_out,
            "fold_output: one scale and shift per output"
        );
        for o in 0..l.n_out {
            l.w.value[o * l.n_in..(o + 1) * l.n_in]
                .iter_mut()
                .for_each(|w| *w = T::from_f64(w.to_f64() * scale[o]));
            l.b.value[o] = T::from_f64(l.b.value[o].to_f64() * scale[o] + shift[o]);
        }
    }

    /// `{prefix}.{2i}.weight` and `.bias`: the Linear layers of an
    /// `nn.Sequential(Linear, act, Linear, ...)`, as the runtime's loaders read them.
    pub fn tensors(&self, prefix: &str) -> Vec<TensorOut> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    TensorOut::new(format!("{prefix}.{}.weight", 2 * i), vec![l.n_out, l.n_in], &l.w.value),
                    TensorOut::new(format!("{prefix}.{}.bias", 2 * i), vec![l.n_out], &l.b.value),
                ]
            })
            .collect()
    }

    /// A copy with every parameter rounded to `U` (what a file in U holds).
    pub fn cast<U: Float>(&self) -> Net<U> {
        let layers = self
            .layers
            .iter()
            .map(|l| Dense {
                n_in: l.n_in,
                n_out: l.n_out,
                w: Param::new(super::float::cast(&l.w.value)),
                b: Param::new(super::float::cast(&l.b.value)),
            })
            .collect();
        Net { layers, act: self.act }
    }
}
