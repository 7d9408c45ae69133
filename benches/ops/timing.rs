//! The one clock every kernel bench uses, on either backend.

use std::time::{Duration, Instant};

use pimoe::backend::Backend;

/// `iters` calls of `f`, timed from a drained stream until the last launch has
/// finished (CUDA launches are asynchronous: without the final sync the clock
/// would measure only the enqueueing; on the CPU the sync is a no-op).
pub fn time<B: Backend>(b: &B, iters: u64, mut f: impl FnMut()) -> Duration {
    b.synchronize().expect("bench: device error before timing");
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    b.synchronize().expect("bench: device error while timing");
    t.elapsed()
}
