//! Choosing the CUDA driver from many threads at once, in a process that has not
//! chosen yet: every thread must get the same working backend. (The emulator's
//! soname is libcuda.so, so a thread that probed for libcuda while another was
//! loading the emulator used to find "a GPU driver" and fail.)

use std::sync::{Arc, Barrier};

#[test]
fn concurrent_first_backends_agree() {
    let n = 16;
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                pimoe::backend::cuda::CudaBackend::gpu_or_emulator(0)
                    .map(|b| b.device_name.clone())
                    .map_err(|e| format!("thread {i}: {e}"))
            })
        })
        .collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    assert!(names.iter().all(|n| n == &names[0]), "threads opened different devices: {names:?}");
    eprintln!("16 threads opened {}", names[0]);
}
