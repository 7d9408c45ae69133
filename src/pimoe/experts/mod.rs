//! Computation experts: the high-precision numerics that PiMoE routes spans of an
//! answer to. f64 unless an expert's precision says f32 (then f32 arithmetic
//! throughout). This is the CPU reference; the GPU twin is kernels/expert_f64.cu with
//! its launcher src/backend/cuda/expert.rs (`GpuExpert`).
//!
//! - [`Mlp`]: a dense layer stack;
//! - [`DeepONet`]: branch net x trunk net, the reference's state-of-health expert;
//! - [`LinearSolve`]: dense A x = b for n <= 64, with singular and ill-conditioned
//!   systems reported as errors;
//! - [`PowerFlow`]: AC power flow by Newton-Raphson, its Jacobian solved by the same
//!   LU, non-convergence reported as an error.
//!
//! An expert takes a batch of rows (rows, n_inputs) and answers per row, so that one
//! bad row (a non-finite input, a singular system) does not spoil the others. All rows
//! go through together (matrix-matrix for the MLPs). Results are bitwise repeatable:
//! every sum has a fixed order (see mlp.rs and linear_solve.rs).

pub mod deeponet;
pub mod linear_solve;
pub mod mlp;
pub mod power_flow;

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

pub use deeponet::{DeepONet, DeepONetSpec};
pub use linear_solve::{LinearSolve, SolveError, Solved};
pub use mlp::{Activation, Linear, Mlp};
pub use power_flow::PowerFlow;

use crate::error::{Error, Result};
use crate::model::safetensors::{check_finite, deserialize};
use crate::model::{map_file, LoadOptions};

/// The arithmetic an expert computes in. A property of the module (its manifest),
/// never implied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F64,
    F32,
}

impl Precision {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f64" | "float64" | "fp64" => Some(Precision::F64),
            "f32" | "float32" | "fp32" => Some(Precision::F32),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F64 => "f64",
            Precision::F32 => "f32",
        }
    }
}

/// One row's answer: the outputs, or why there are none.
pub type RowResult = std::result::Result<Vec<f64>, String>;

#[derive(Clone, Debug)]
pub enum Expert {
    Mlp(Mlp),
    DeepONet(DeepONet),
    LinearSolve(LinearSolve),
    PowerFlow(PowerFlow),
}

impl Expert {
    pub fn kind(&self) -> &'static str {
        match self {
            Expert::Mlp(_) => "mlp",
            Expert::DeepONet(_) => "deeponet",
            Expert::LinearSolve(_) => "linear_solve",
            Expert::PowerFlow(_) => "power_flow",
        }
    }

    pub fn n_inputs(&self) -> usize {
        match self {
            Expert::Mlp(m) => m.n_inputs(),
            Expert::DeepONet(d) => d.n_inputs(),
            Expert::LinearSolve(s) => s.n_inputs(),
            Expert::PowerFlow(p) => p.n_inputs(),
        }
    }

    pub fn n_outputs(&self) -> usize {
        match self {
            Expert::Mlp(m) => m.n_outputs(),
            Expert::DeepONet(d) => d.n_outputs(),
            Expert::LinearSolve(s) => s.n_outputs(),
            Expert::PowerFlow(p) => p.n_outputs(),
        }
    }

    /// The solvers are always f64.
    pub fn precision(&self) -> Precision {
        match self {
            Expert::Mlp(m) => m.precision(),
            Expert::DeepONet(d) => d.precision(),
            Expert::LinearSolve(_) | Expert::PowerFlow(_) => Precision::F64,
        }
    }

    /// inputs (rows, n_inputs) -> one result per row. A row with a non-finite input,
    /// or whose outputs came out non-finite, is an error; so is every row when
    /// `inputs` has the wrong length.
    pub fn run(&self, inputs: &[f64], rows: usize) -> Vec<RowResult> {
        let n_in = self.n_inputs();
        if inputs.len() != rows * n_in {
            let msg =
                format!("{} expert: got {} inputs for {rows} rows of {n_in}", self.kind(), inputs.len());
            return vec![Err(msg); rows];
        }
        match self {
            Expert::Mlp(m) => finish_rows(inputs, n_in, &m.forward(inputs, rows), m.n_outputs()),
            Expert::DeepONet(d) => finish_rows(inputs, n_in, &d.forward(inputs, rows), 1),
            Expert::LinearSolve(s) => {
                s.run(inputs, rows).into_iter().map(|r| r.x.map_err(|e| e.to_string())).collect()
            }
            Expert::PowerFlow(p) => p.run(inputs, rows),
        }
    }
}

/// Per-row results of a network expert: the row's outputs, or an error naming the
/// first non-finite input column or saying the output was not finite. Shared by the
/// CPU and GPU paths so both report the same.
pub(crate) fn finish_rows(inputs: &[f64], n_in: usize, outputs: &[f64], n_out: usize) -> Vec<RowResult> {
    inputs
        .chunks_exact(n_in)
        .zip(outputs.chunks_exact(n_out))
        .map(|(x, y)| {
            if let Some(c) = x.iter().position(|v| !v.is_finite()) {
                Err(format!("non-finite input in column {c}"))
            } else if y.iter().any(|v| !v.is_finite()) {
                Err("non-finite output (overflow)".to_string())
            } else {
                Ok(y.to_vec())
            }
        })
        .collect()
}

/// A safetensors file of expert weights, read as f64 whatever its float dtype.
pub struct WeightFile {
    path: PathBuf,
    map: Mmap,
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_file(path)?;
        deserialize(&map, path)?;
        Ok(WeightFile { path: path.to_path_buf(), map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.map).expect("validated in open")
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors().names().contains(&name)
    }

    pub fn names(&self) -> Vec<String> {
        self.tensors().names().into_iter().map(String::from).collect()
    }

    /// Loads `name` as f64, checking that its shape is `shape`.
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let (got, data) = self.load_any(name)?;
        if got != shape {
            return Err(Error::tensor(
                name,
                format!("has shape {got:?}, expected {shape:?} (in {})", self.path.display()),
            ));
        }
        Ok(data)
    }

    /// Loads `name` as f64 with whatever shape it has. F64 and F32 (and F16/BF16,
    /// widened exactly) are accepted.
    pub fn load_any(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let st = self.tensors();
        let view = st
            .tensor(name)
            .map_err(|_| Error::tensor(name, format!("missing from {}", self.path.display())))?;
        let bytes = view.data();
        // Tensor data need not be aligned in the file, so decode from bytes.
        let data: Vec<f64> = match view.dtype() {
            Dtype::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F32 => {
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
            }
            Dtype::F16 => {
                bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect()
            }
            Dtype::BF16 => {
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect()
            }
            other => {
                return Err(Error::tensor(
                    name,
                    format!("has dtype {other:?}; expert weights must be F64, F32, F16 or BF16"),
                ))
            }
        };
        if LoadOptions::default().scan() {
            check_finite(name, view.shape(), data.len(), |i| data[i])?;
        }
        Ok((view.shape().to_vec(), data))
    }
}
