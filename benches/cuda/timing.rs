//! The one clock every CUDA bench uses.

use std::time::{Duration, Instant};

use pimoe::backend::cuda::CudaBackend;

/// `iters` calls of `f`, timed from a drained stream until the last launch has
/// finished (launches are asynchronous: without the final sync the clock would
/// measure only the enqueueing).
pub fn time(b: &CudaBackend, iters: u64, mut f: impl FnMut()) -> Duration {
    b.synchronize().expect("bench: device error before timing");
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    b.synchronize().expect("bench: device error while timing");
    t.elapsed()
}
