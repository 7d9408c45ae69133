//! DeepONet (Lu et al., "Learning nonlinear operators via DeepONet", Nature Machine
//! Intelligence 2021, https://arxiv.org/abs/1910.03193): a branch MLP reads the
//! function's parameters, a trunk MLP reads the query point, and the output is the
//! inner product of their feature vectors (plus an optional scalar bias).
//!
//! The PiMoE reference's expert (battery state of health) is
//! branch 11 -> 2048 -> 1024 -> 512 -> 256 -> 128 -> 64 -> 10 and
//! trunk 2 -> 784 -> 512 -> 256 -> 128 -> 64 -> 10, ReLU between layers
//! ([`DeepONetSpec::reference`]).
//!
//! Weights file (safetensors, f64 or f32; converted to f64 on load). The names are
//! those of the PyTorch module in tests/fixtures/make_deeponet.py:
//! ```text
//! branch_net.layers.{2i}.weight  (widths[i+1], widths[i])   i-th Linear of an
//! branch_net.layers.{2i}.bias    (widths[i+1])              nn.Sequential(Linear, ReLU, ...)
//! trunk_net.layers.{2i}.weight / .bias                      the same for the trunk
//! bias                           (1) or ()                  optional scalar
//! ```
//! The prefixes, the module stride (2) and the bias name are fields of
//! [`DeepONetSpec`], so checkpoints with other names load without renaming.
//!
//! Inputs of one row: the branch inputs, then the trunk inputs (13 numbers for the
//! reference). The reference's T2C emits the trunk pair in swapped order; undoing
//! that is the T2C side's job, not this one's.

use std::path::Path;

use super::mlp::{Activation, Mlp, Real};
use super::{Precision, WeightFile};
use crate::error::{Error, Result};

/// Shapes and tensor names of a DeepONet checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepONetSpec {
    /// [n_branch_in, hidden..., p]
    pub branch_widths: Vec<usize>,
    /// [n_trunk_in, hidden..., p]
    pub trunk_widths: Vec<usize>,
    pub activation: Activation,
    pub precision: Precision,
    pub branch_prefix: String,
    pub trunk_prefix: String,
    /// Module-index step between consecutive Linear layers (2 for Linear, act, ...).
    pub layer_stride: usize,
    /// Name of the optional scalar bias tensor.
    pub bias_name: String,
}

impl DeepONetSpec {
    /// Given widths, ReLU, f64 and the default names.
    pub fn new(branch_widths: &[usize], trunk_widths: &[usize]) -> Self {
        DeepONetSpec {
            branch_widths: branch_widths.to_vec(),
            trunk_widths: trunk_widths.to_vec(),
            activation: Activation::Relu,
            precision: Precision::F64,
            branch_prefix: "branch_net.layers".into(),
            trunk_prefix: "trunk_net.layers".into(),
            layer_stride: 2,
            bias_name: "bias".into(),
        }
    }

    /// The PiMoE reference's battery state-of-health expert.
    pub fn reference() -> Self {
        Self::new(&[11, 2048, 1024, 512, 256, 128, 64, 10], &[2, 784, 512, 256, 128, 64, 10])
    }
}

#[derive(Clone, Debug)]
pub struct DeepONet {
    branch: Mlp,
    trunk: Mlp,
    bias: Option<f64>,
}

impl DeepONet {
    /// The two nets must end in the same number of features and share a precision.
    pub fn new(branch: Mlp, trunk: Mlp, bias: Option<f64>) -> Result<Self> {
        if branch.n_outputs() != trunk.n_outputs() {
            return Err(Error::Request(format!(
                "DeepONet: the branch net ends in {} features but the trunk net in {}",
                branch.n_outputs(),
                trunk.n_outputs()
            )));
        }
        if branch.precision() != trunk.precision() {
            return Err(Error::Request("DeepONet: branch and trunk nets differ in precision".into()));
        }
        Ok(DeepONet { branch, trunk, bias })
    }

    /// Loads a safetensors checkpoint laid out as the module docs describe; a missing
    /// or mis-shaped tensor is an error naming it.
    pub fn load(path: &Path, spec: &DeepONetSpec) -> Result<Self> {
        let file = WeightFile::open(path)?;
        Self::from_file(&file, spec)
    }

    pub fn from_file(file: &WeightFile, spec: &DeepONetSpec) -> Result<Self> {
        let (act, prec, stride) = (spec.activation, spec.precision, spec.layer_stride);
        let branch = Mlp::load(file, &spec.branch_prefix, stride, &spec.branch_widths, act, prec)?;
        let trunk = Mlp::load(file, &spec.trunk_prefix, stride, &spec.trunk_widths, act, prec)?;
        let bias = if file.contains(&spec.bias_name) {
            let (shape, v) = file.load_any(&spec.bias_name)?;
            if v.len() != 1 || shape.len() > 1 {
                return Err(Error::tensor(
                    &spec.bias_name,
                    format!("has shape {shape:?}, expected a scalar: [] or [1]"),
                ));
            }
            Some(v[0])
        } else {
            None
        };
        Self::new(branch, trunk, bias)
    }

    pub fn branch(&self) -> &Mlp {
        &self.branch
    }
    pub fn trunk(&self) -> &Mlp {
        &self.trunk
    }
    pub fn bias(&self) -> Option<f64> {
        self.bias
    }
    pub fn precision(&self) -> Precision {
        self.branch.precision()
    }
    /// Branch inputs, then trunk inputs.
    pub fn n_inputs(&self) -> usize {
        self.branch.n_inputs() + self.trunk.n_inputs()
    }
    pub fn n_outputs(&self) -> usize {
        1
    }
    /// Number of features p summed over.
    pub fn n_features(&self) -> usize {
        self.branch.n_outputs()
    }

    /// x (rows, n_branch_in + n_trunk_in) -> (rows).
    pub fn forward(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let (xb, xt) = self.split_inputs(x, rows);
        self.forward_split(&xb, &xt, rows)
    }

    /// xb (rows, n_branch_in), xt (rows, n_trunk_in) -> (rows).
    pub fn forward_split(&self, xb: &[f64], xt: &[f64], rows: usize) -> Vec<f64> {
        let p = self.n_features();
        match self.precision() {
            Precision::F64 => {
                let (b, t) = (self.branch.forward(xb, rows), self.trunk.forward(xt, rows));
                combine(&b, &t, rows, p, self.bias)
            }
            Precision::F32 => {
                let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                let (b, t) = (self.branch.forward_f32(&f(xb), rows), self.trunk.forward_f32(&f(xt), rows));
                combine(&b, &t, rows, p, self.bias.map(|v| v as f32)).into_iter().map(f64::from).collect()
            }
        }
    }

    /// Splits packed rows into (branch inputs (rows, nb), trunk inputs (rows, nt)).
    pub fn split_inputs(&self, x: &[f64], rows: usize) -> (Vec<f64>, Vec<f64>) {
        let (nb, nt) = (self.branch.n_inputs(), self.trunk.n_inputs());
        assert_eq!(x.len(), rows * (nb + nt), "DeepONet: x must be (rows, {})", nb + nt);
        let mut xb = Vec::with_capacity(rows * nb);
        let mut xt = Vec::with_capacity(rows * nt);
        for row in x.chunks_exact(nb + nt) {
            xb.extend_from_slice(&row[..nb]);
            xt.extend_from_slice(&row[nb..]);
        }
        (xb, xt)
    }
}

/// y[r] = sum_f branch[r, f] * trunk[r, f] (+ bias): an fma chain over f = 0..p
/// starting from zero, then the bias added, as `deeponet_combine_*` does on the GPU.
/// branch, trunk (rows, p) -> (rows).
pub fn combine<T: Real>(branch: &[T], trunk: &[T], rows: usize, p: usize, bias: Option<T>) -> Vec<T> {
    assert!(branch.len() == rows * p && trunk.len() == rows * p, "combine: shape mismatch");
    (0..rows)
        .map(|r| {
            let (b, t) = (&branch[r * p..(r + 1) * p], &trunk[r * p..(r + 1) * p]);
            let acc = b.iter().zip(t).fold(T::default(), |acc, (&x, &y)| T::fma(x, y, acc));
            match bias {
                Some(c) => acc + c,
                None => acc,
            }
        })
        .collect()
}
