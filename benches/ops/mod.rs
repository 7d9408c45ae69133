//! Benches of the kernel families that run through the `Backend` trait, shared by
//! cpu_ops (on the CPU twins) and cuda_ops (on the kernels): one group per family,
//! named `<backend>_<family>`.

pub mod embed;
pub mod expert;
pub mod kv;
pub mod mlp;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod sampling;
pub mod timing;

use criterion::Criterion;
use pimoe::backend::Backend;

/// Every family here, on `b`.
pub fn bench_all<B: Backend>(c: &mut Criterion, b: &B) {
    embed::bench(c, b);
    rmsnorm::bench(c, b);
    rope::bench(c, b);
    kv::bench(c, b);
    mlp::bench(c, b);
    sampling::bench(c, b);
    router::bench(c, b);
    expert::bench(c, b);
}
