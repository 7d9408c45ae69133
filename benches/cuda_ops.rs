//! Criterion benches of every CUDA kernel family (benches/cuda/<family>.rs), each
//! synchronising the stream before the clock stops and reporting bytes or FLOPs.
//! Without a GPU it prints why and measures nothing.

use criterion::Criterion;
use pimoe::backend::cuda::CudaBackend;

#[path = "cuda/attention.rs"]
mod attention;
#[path = "cuda/embed.rs"]
mod embed;
#[path = "cuda/gemm.rs"]
mod gemm;
#[path = "cuda/kv.rs"]
mod kv;
#[path = "cuda/mlp.rs"]
mod mlp;
#[path = "cuda/rmsnorm.rs"]
mod rmsnorm;
#[path = "cuda/rope.rs"]
mod rope;
#[path = "cuda/sampling.rs"]
mod sampling;
#[path = "cuda/timing.rs"]
mod timing;

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
    embed::bench(&mut c, &b);
    rmsnorm::bench(&mut c, &b);
    rope::bench(&mut c, &b);
    kv::bench(&mut c, &b);
    mlp::bench(&mut c, &b);
    sampling::bench(&mut c, &b);
    c.final_summary();
}
