//! The ops the model needs, as a trait: the transformer in `llm` is written once
//! against it, and each backend (CPU reference now, CUDA next) implements it.
//!
//! Shapes are passed explicitly, llm.c style; every tensor argument carries a shape
//! comment. Activations are f32 on every backend; weights are bf16 matrices (f32 where
//! the file is f32 on the CPU) and f32 vectors; the KV cache is f32 on the CPU and bf16
//! on the GPU.

pub mod cpu;
pub mod cuda;
pub mod kernels;

use crate::error::Result;
use crate::model::safetensors::HostTensor;
use crate::pimoe::experts::{Expert, RowResult};

/// Where the attention of one step reads and writes the paged KV cache.
/// Flat index arrays, planned on the host (flashinfer's plan/run split).
pub struct AttnPlan<I> {
    /// (n_tokens) absolute position of each token; it attends to positions 0..=pos.
    pub positions: I,
    /// (n_tokens) which sequence of the step each token belongs to.
    pub token_seq: I,
    /// (n_tokens) cache slot (block * block_size + offset) where its k/v go.
    pub slots: I,
    /// (n_seqs, max_blocks) each sequence's block table, padded.
    pub block_tables: I,
    pub max_blocks: usize,
    pub block_size: usize,
    /// Host copy of the step's layout, for launchers that tile by sequence.
    pub seqs: Vec<SeqSpan>,
}

/// One sequence of a step: its tokens are rows first..first + len of the batch, at
/// positions start..start + len.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub first: u32,
    pub len: u32,
    pub start: u32,
}

/// One dense layer of a router gate: w (outputs, inputs) and b (outputs), f32.
pub struct GateLayer<'a, T> {
    pub w: &'a T,
    pub b: &'a T,
    pub inputs: usize,
    pub outputs: usize,
}

/// Per-row sampling parameters as the `sample` op reads them: (rows, 4) f32 of
/// temperature (0 = greedy), top_k (0 = off), top_p (1 = off), and the uniform draw u
/// in [0, 1) that the host's seeded generator made for this row.
pub const SAMPLE_PARAMS: usize = 4;

/// Head layout of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// MemAvailable from /proc/meminfo (None where there is none): Rust aborts on a failed
/// host allocation, so sizes from users are checked against it first.
pub fn host_memory_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    kb.trim().strip_suffix("kB")?.trim().parse::<usize>().ok()?.checked_mul(1024)
}

/// Refuses to allocate `bytes` for `what` where `backend` says less memory is free
/// (see `Backend::memory_available`), naming both sizes.
pub fn check_fits(backend: &impl Backend, bytes: usize, what: &str) -> crate::error::Result<()> {
    match backend.memory_available().filter(|&free| bytes > free) {
        Some(free) => {
            let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
            Err(crate::error::Error::Request(format!(
                "{what} takes {:.1} GiB; {:.1} GiB of memory are available",
                gib(bytes),
                gib(free)
            )))
        }
        None => Ok(()),
    }
}

pub trait Backend: Send + Sync {
    /// Model parameters: a matrix (rows, cols) or a vector.
    type Weight: Send + Sync;
    /// f32 activations.
    type Tensor: Send + Sync;
    /// u32 index arrays (token ids, positions, slots).
    type Index: Send + Sync;
    /// KV cache storage, (num_blocks * block_size, hk * head_dim) per layer and k/v.
    type Cache: Send + Sync;
    /// A computation expert prepared to run here (weights uploaded once).
    type Expert: Send + Sync;

    fn name(&self) -> &'static str;

    /// True where the ops run on an emulator (the CUDA backend on the PTX emulator):
    /// its times say nothing about a device, so benches refuse to report them.
    fn emulated(&self) -> bool {
        false
    }

    /// Bytes a new allocation may take here without failing, where an allocation
    /// that fails would abort the process (host memory); None where a failed
    /// allocation comes back as an error (a device's).
    fn memory_available(&self) -> Option<usize> {
        None
    }

    /// Runs one whole step (`f` calls many ops). The CPU backend uses it to move the
    /// step onto a worker thread once, instead of handing every op from the caller's
    /// thread to the pool and sleeping until it is done.
    fn step<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Runs a step that ends in sampled token ids and returns them. `graph` names the
    /// step's shape when it is a pure decode step; the CUDA backend captures such a
    /// step once as a CUDA graph and replays it (so `f` must not read back to the
    /// host and must make the same calls in the same order for the same key).
    fn step_tokens(
        &self,
        _graph: Option<(usize, usize)>,
        mut f: impl FnMut() -> Self::Index + Send,
    ) -> Result<Vec<u32>> {
        let t = self.step(&mut f);
        self.check()?;
        Ok(self.read_index(&t))
    }

    /// Reports a device error raised by an earlier op (ops themselves do not return
    /// errors: like CUDA's, a backend's errors are sticky and surface at step ends).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Waits until every op issued so far has finished (CUDA ops are asynchronous;
    /// CPU ops are done when they return).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Names the work that follows in a profiler's timeline (NVTX on CUDA).
    fn push_range(&self, _name: &str) {}
    fn pop_range(&self) {}
    /// Starts or stops a profiler's capture, for profilers told to record only in
    /// between (`nsys --capture-range=cudaProfilerApi`, `ncu --profile-from-start off`).
    fn profiler_capture(&self, _on: bool) -> Result<()> {
        Ok(())
    }

    fn upload(&self, t: &HostTensor) -> Result<Self::Weight>;
    /// `upload` of a tensor the caller is done with: a host backend keeps its data
    /// instead of copying it, so loading holds one copy of each weight, not two.
    fn upload_owned(&self, t: HostTensor) -> Result<Self::Weight> {
        self.upload(&t)
    }
    /// A zero-filled f32 tensor of `len` elements.
    fn tensor(&self, len: usize) -> Self::Tensor;
    /// An f32 tensor of `len` elements with unspecified contents, for a buffer that
    /// ops fill before anything reads it. A GPU skips `tensor`'s zero fill, which in
    /// a captured decode step is a graph node of its own.
    fn scratch(&self, len: usize) -> Self::Tensor {
        self.tensor(len)
    }
    fn tensor_from(&self, data: &[f32]) -> Self::Tensor;
    fn index(&self, data: &[u32]) -> Self::Index;
    /// A zero-filled KV cache tensor of `len` elements.
    fn cache(&self, len: usize) -> Self::Cache;
    fn to_host(&self, t: &Self::Tensor) -> Vec<f32>;
    fn read_index(&self, t: &Self::Index) -> Vec<u32>;
    /// The cache as f32 (tests compare caches across backends).
    fn cache_to_host(&self, t: &Self::Cache) -> Vec<f32>;

    /// out (n, dim) = table[ids] ; table (vocab, dim)
    fn embed(&self, out: &mut Self::Tensor, table: &Self::Weight, ids: &Self::Index, dim: usize);

    /// out (n, dim) = rmsnorm(x) * w ; x (n, dim), w (dim)
    fn rmsnorm(&self, out: &mut Self::Tensor, x: &Self::Tensor, w: &Self::Weight, dim: usize, eps: f32);

    /// out (m, n) = x (m, k) @ w (n, k)^T + bias (n)
    fn matmul(
        &self,
        out: &mut Self::Tensor,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        m: usize,
    );

    /// residual (m, n) += x (m, k) @ w (n, k)^T: the end of a residual branch (the
    /// attention output and down projections), the add done by the product's kernel
    /// where it can be. `scratch` holds m * n elements a backend may use for the
    /// product.
    fn matmul_add(
        &self,
        residual: &mut Self::Tensor,
        scratch: &mut Self::Tensor,
        x: &Self::Tensor,
        w: &Self::Weight,
        m: usize,
    );

    /// `rmsnorm` of x (m, dim) by norm into xn, then out (m, n) = xn @ w (n, dim)^T +
    /// bias: a sublayer's norm and first projection, one launch on the GPU for decode
    /// (where xn is left unwritten).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_matmul(
        &self,
        out: &mut Self::Tensor,
        xn: &mut Self::Tensor,
        x: &Self::Tensor,
        norm: &Self::Weight,
        eps: f32,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        dim: usize,
        m: usize,
    ) {
        self.rmsnorm(xn, x, norm, dim, eps);
        self.matmul(out, xn, w, bias, m);
    }

    /// Rotary embedding, Hugging Face rotate-half form, in place on the q and k parts
    /// of qkv (n, (hq + 2 hk) * head_dim); v is left alone.
    fn rope(&self, qkv: &mut Self::Tensor, positions: &Self::Index, shape: AttnShape, theta: f32);

    /// Writes the k and v parts of qkv (n, (hq + 2 hk) * head_dim) into the cache at
    /// plan.slots; k_cache, v_cache (num_blocks * block_size, hk * head_dim).
    fn kv_write(
        &self,
        k_cache: &mut Self::Cache,
        v_cache: &mut Self::Cache,
        qkv: &Self::Tensor,
        plan: &AttnPlan<Self::Index>,
        shape: AttnShape,
    );

    /// `rope`, then `kv_write` of the rotated k (and v) at plan.slots, at plan.positions:
    /// what every layer does before attention, one launch on the GPU.
    fn rope_kv_write(
        &self,
        qkv: &mut Self::Tensor,
        k_cache: &mut Self::Cache,
        v_cache: &mut Self::Cache,
        plan: &AttnPlan<Self::Index>,
        shape: AttnShape,
        theta: f32,
    ) {
        self.rope(qkv, &plan.positions, shape, theta);
        self.kv_write(k_cache, v_cache, qkv, plan, shape);
    }

    /// Causal grouped-query attention of the q part of qkv over the paged cache.
    /// out (n, hq * head_dim)
    fn attention(
        &self,
        out: &mut Self::Tensor,
        qkv: &Self::Tensor,
        k_cache: &Self::Cache,
        v_cache: &Self::Cache,
        plan: &AttnPlan<Self::Index>,
        shape: AttnShape,
    );

    /// `rope_kv_write`, then `attention`: a layer's whole attention after the qkv
    /// projection, one launch on the GPU for a decode step (which leaves qkv's q and k
    /// unrotated: nothing reads them after attention).
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_attention(
        &self,
        out: &mut Self::Tensor,
        qkv: &mut Self::Tensor,
        k_cache: &mut Self::Cache,
        v_cache: &mut Self::Cache,
        plan: &AttnPlan<Self::Index>,
        shape: AttnShape,
        theta: f32,
    ) {
        self.rope_kv_write(qkv, k_cache, v_cache, plan, shape, theta);
        self.attention(out, qkv, k_cache, v_cache, plan, shape);
    }

    /// out (n, inter) = silu(gate) * up ; gate_up (n, 2 * inter), gate first.
    fn swiglu(&self, out: &mut Self::Tensor, gate_up: &Self::Tensor, inter: usize);

    /// `swiglu` into act (m, inter), then `matmul_add` of act @ w (n, inter)^T into
    /// residual (m, n): the MLP's activation, down projection and residual add, one
    /// launch on the GPU for decode (where act and scratch are left unwritten).
    #[allow(clippy::too_many_arguments)]
    fn swiglu_matmul_add(
        &self,
        residual: &mut Self::Tensor,
        scratch: &mut Self::Tensor,
        act: &mut Self::Tensor,
        gate_up: &Self::Tensor,
        w: &Self::Weight,
        inter: usize,
        m: usize,
    ) {
        self.swiglu(act, gate_up, inter);
        self.matmul_add(residual, scratch, act, w, m);
    }

    /// out (rows.len(), dim) = x[rows] ; x (n, dim)
    fn gather_rows(&self, out: &mut Self::Tensor, x: &Self::Tensor, rows: &Self::Index, dim: usize);

    /// probs (rows, n_out) = act(layers(x (rows, h))): the hidden-state router's gate
    /// for a whole batch in one launch; one layer, or two with ReLU between; act is
    /// a sigmoid per output, or a softmax over each row.
    fn gate(
        &self,
        probs: &mut Self::Tensor,
        x: &Self::Tensor,
        layers: &[GateLayer<'_, Self::Tensor>],
        softmax: bool,
    );

    /// Uploads a computation expert's weights for `run_expert`.
    fn prepare_expert(&self, e: &Expert) -> Result<Self::Expert>;

    /// One routed batch through an expert: inputs (rows, n_inputs) -> one result
    /// per row, as `Expert::run` defines (f64 unless the expert says f32).
    fn run_expert(
        &self,
        prepared: &Self::Expert,
        e: &Expert,
        inputs: &[f64],
        rows: usize,
    ) -> Result<Vec<RowResult>>;

    /// out (rows) = one token id per row of logits (rows, vocab), drawn as
    /// `sampling::sample_row` defines; params (rows, SAMPLE_PARAMS).
    fn sample(&self, out: &mut Self::Index, logits: &Self::Tensor, params: &Self::Tensor, vocab: usize);
}
