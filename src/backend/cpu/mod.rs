//! The CPU backend: the readable reference for every op (plain loops over f32,
//! rayon across rows) and a usable engine on its own. One file per op family,
//! named like the CUDA kernel files.

pub mod attention;
pub mod embed;
pub mod gemm;
pub mod mlp;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod sampling;
pub mod simd;

use crate::backend::{AttnPlan, AttnShape, Backend, GateLayer};
use crate::error::{Error, Result};
use crate::model::safetensors::{HostData, HostTensor};
use crate::pimoe::experts::{Expert, RowResult};

/// An op's output as its parallel tasks see it, when each task owns elements that are
/// not one contiguous chunk (a GEMM patch, a weight row's column, attention rows).
struct Disjoint(*mut f32);
// SAFETY: the only access is `Disjoint::write`, whose callers guarantee that no two
// tasks write the same element and that the slice outlives the parallel loop.
unsafe impl Sync for Disjoint {}

impl Disjoint {
    fn new(out: &mut [f32]) -> Disjoint {
        Disjoint(out.as_mut_ptr())
    }

    /// # Safety
    /// `at + vals.len()` is within the slice `new` was given, and no other task writes
    /// those elements during the loop.
    unsafe fn write(&self, at: usize, vals: &[f32]) {
        unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), self.0.add(at), vals.len()) }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// A parameter tensor as a (rows, cols) matrix; vectors are (1, len) and always f32.
/// bf16 matrices stay bf16 and are widened inside the dot products.
#[derive(Clone, Debug)]
pub struct CpuWeight {
    pub rows: usize,
    pub cols: usize,
    pub data: HostData,
}

impl CpuWeight {
    /// The values of a vector weight (norm scale, bias).
    pub fn as_f32(&self) -> &[f32] {
        match &self.data {
            HostData::F32(v) => v,
            HostData::Bf16(_) | HostData::Quant(_) => {
                unreachable!("vector weights are widened to f32 at upload")
            }
        }
    }
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Tensor = Vec<f32>;
    type Index = Vec<u32>;
    type Cache = Vec<f32>;
    type Expert = ();

    fn memory_available(&self) -> Option<usize> {
        crate::backend::host_memory_available()
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn step<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        // From a worker thread, the ops' parallel loops split work with the other
        // workers directly; measured on 2 cores it removes most context switches.
        rayon::scope(|_| f())
    }

    fn upload(&self, t: &HostTensor) -> Result<CpuWeight> {
        self.upload_owned(t.clone())
    }

    fn upload_owned(&self, t: HostTensor) -> Result<CpuWeight> {
        let (rows, cols) = match t.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            s => return Err(Error::tensor(&t.name, format!("expected 1 or 2 dimensions, got {s:?}"))),
        };
        let data = match (&t.data, rows) {
            (HostData::Bf16(_) | HostData::Quant(_), 1) => HostData::F32(t.to_f32()),
            _ => t.data,
        };
        Ok(CpuWeight { rows, cols, data })
    }

    fn tensor(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn tensor_from(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn index(&self, data: &[u32]) -> Vec<u32> {
        data.to_vec()
    }

    fn cache(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn to_host(&self, t: &Vec<f32>) -> Vec<f32> {
        t.clone()
    }

    fn read_index(&self, t: &Vec<u32>) -> Vec<u32> {
        t.clone()
    }

    fn cache_to_host(&self, t: &Vec<f32>) -> Vec<f32> {
        t.clone()
    }

    fn embed(&self, out: &mut Vec<f32>, table: &CpuWeight, ids: &Vec<u32>, dim: usize) {
        embed::embed(out, table, ids, dim)
    }

    fn rmsnorm(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &CpuWeight, dim: usize, eps: f32) {
        rmsnorm::rmsnorm(out, x, w.as_f32(), dim, eps)
    }

    fn matmul(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &CpuWeight, bias: Option<&CpuWeight>, m: usize) {
        gemm::matmul(out, x, w, bias, m)
    }

    fn matmul_add(
        &self,
        residual: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &CpuWeight,
        m: usize,
    ) {
        gemm::matmul(scratch, x, w, None, m);
        rmsnorm::add(residual, scratch);
    }

    fn rope(&self, qkv: &mut Vec<f32>, positions: &Vec<u32>, shape: AttnShape, theta: f32) {
        rope::rope(qkv, positions, shape, theta)
    }

    fn kv_write(
        &self,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        qkv: &Vec<f32>,
        plan: &AttnPlan<Vec<u32>>,
        shape: AttnShape,
    ) {
        attention::kv_write(k_cache, v_cache, qkv, plan, shape)
    }

    fn attention(
        &self,
        out: &mut Vec<f32>,
        qkv: &Vec<f32>,
        k_cache: &Vec<f32>,
        v_cache: &Vec<f32>,
        plan: &AttnPlan<Vec<u32>>,
        shape: AttnShape,
    ) {
        attention::attention(out, qkv, k_cache, v_cache, plan, shape)
    }

    fn swiglu(&self, out: &mut Vec<f32>, gate_up: &Vec<f32>, inter: usize) {
        mlp::swiglu(out, gate_up, inter)
    }

    fn gather_rows(&self, out: &mut Vec<f32>, x: &Vec<f32>, rows: &Vec<u32>, dim: usize) {
        embed::gather_rows(out, x, rows, dim)
    }

    fn gate(&self, probs: &mut Vec<f32>, x: &Vec<f32>, layers: &[GateLayer<'_, Vec<f32>>], softmax: bool) {
        router::gate(probs, x, layers, softmax)
    }

    fn prepare_expert(&self, _e: &Expert) -> Result<()> {
        Ok(())
    }

    fn run_expert(&self, _prepared: &(), e: &Expert, inputs: &[f64], rows: usize) -> Result<Vec<RowResult>> {
        Ok(e.run(inputs, rows))
    }

    fn sample(&self, out: &mut Vec<u32>, logits: &Vec<f32>, params: &Vec<f32>, vocab: usize) {
        sampling::sample(out, logits, params, vocab)
    }
}
