//! Profiling: `pimoe bench --profile-steps N` under Nsight Compute. ncu is told to
//! profile only kernels launched inside the NVTX range "prefill step" and only while
//! the program has the profiler's capture on; that it then finds our kernels shows the
//! ranges reach the profiler under the names the README gives and that the capture
//! brackets the steps. A range that does not exist must select nothing. Skipped,
//! saying why, without a GPU or without `ncu` on PATH.
//!
//! On the GPU machine, PIMOE_BIN names the carried CLI (bench/gpu/run.sh sets it).

mod common;

use std::process::Command;

use pimoe::backend::cuda::CudaBackend;

fn ncu(include: &str) -> String {
    let bin = std::env::var("PIMOE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pimoe").into());
    let out = Command::new("ncu")
        .args(["--nvtx", "--nvtx-include", include, "--profile-from-start", "off", "--clock-control", "none"])
        .args(["--launch-count", "4", "--metrics", "gpu__time_duration.sum"])
        .arg(bin)
        .args(["bench", "--scenario", "grid", "--per-task", "2", "--concurrency", "4"])
        .args(["--profile-steps", "4", "--device", "cuda"])
        .output()
        .expect("run ncu");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ncu or pimoe failed:\n{text}");
    text
}

#[test]
fn nvtx_ranges_and_capture_reach_the_profiler() {
    if let Err(e) = CudaBackend::new(0) {
        common::skip(&format!("nvtx_ranges_and_capture_reach_the_profiler: {e}"));
        return;
    }
    if Command::new("ncu").arg("--version").output().map_or(true, |o| !o.status.success()) {
        common::skip("nvtx_ranges_and_capture_reach_the_profiler: no `ncu` on PATH");
        return;
    }
    let text = ncu("prefill step/");
    let profiled = text.lines().filter(|l| l.contains("==PROF== Profiling")).count();
    assert!(profiled >= 1, "no kernel inside the \"prefill step\" range was profiled:\n{text}");
    let text = ncu("no such range/");
    assert!(!text.contains("==PROF== Profiling"), "a range that does not exist selected kernels:\n{text}");
}
