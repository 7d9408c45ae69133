//! Criterion benches of every CUDA kernel family: the GPU-only ones in
//! benches/cuda/ (GEMM with its cuBLAS comparison, attention), the others through the
//! backend-generic benches in ops/ that cpu_ops also runs. Each synchronises the
//! stream before the clock stops and reports bytes, FLOPs or rows.
//! Without a GPU it prints why and measures nothing.

use criterion::Criterion;
use pimoe::backend::cuda::CudaBackend;

#[path = "cuda/attention.rs"]
mod attention;
#[path = "cuda/gemm.rs"]
mod gemm;
#[path = "ops/mod.rs"]
mod ops;

fn main() {
    let b = match CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cuda_ops: skipped, {e}");
            return;
        }
    };
    let mut c = Criterion::default().configure_from_args();
    gemm::bench(&mut c, &b);
    attention::bench(&mut c, &b);
    ops::bench_all(&mut c, &b);
    c.final_summary();
}
