//! Profiling: `pimoe bench --profile-steps N` marks its steps with NVTX ranges and
//! brackets them with the profiler's capture (cuProfilerStart/Stop).
//!
//! With a GPU and `ncu` on PATH, Nsight Compute is told to profile only kernels
//! launched inside the range "prefill step" while the capture is on; that it finds
//! our kernels shows the ranges reach the profiler under the names the README gives
//! and that the capture brackets the steps, and a range that does not exist must
//! select nothing. Everywhere else the same run goes to the PTX emulator, whose trace
//! (PIMOE_EMU_TRACE=1) lists the profiler's start and stop, every range push and pop
//! and every kernel launch in order: the same facts are read from it.
//!
//! On the GPU machine, PIMOE_BIN names the carried CLI (bench/gpu/run.sh sets it).

use std::process::Command;

fn bin() -> String {
    std::env::var("PIMOE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pimoe").into())
}

fn ncu(include: &str) -> String {
    let out = Command::new("ncu")
        .args(["--nvtx", "--nvtx-include", include, "--profile-from-start", "off", "--clock-control", "none"])
        .args(["--launch-count", "4", "--metrics", "gpu__time_duration.sum"])
        .arg(bin())
        .args(["bench", "--scenario", "grid", "--per-task", "2", "--concurrency", "4"])
        .args(["--profile-steps", "4", "--device", "cuda"])
        .output()
        .expect("run ncu");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ncu or pimoe failed:\n{text}");
    text
}

fn under_ncu() {
    let text = ncu("prefill step/");
    let profiled = text.lines().filter(|l| l.contains("==PROF== Profiling")).count();
    assert!(profiled >= 1, "no kernel inside the \"prefill step\" range was profiled:\n{text}");
    let text = ncu("no such range/");
    assert!(!text.contains("==PROF== Profiling"), "a range that does not exist selected kernels:\n{text}");
}

/// What the emulator's trace says about the capture: the ranges open at each
/// kernel launch made while the capture was on, and the scheduler steps inside it.
/// (This found the scheduler's model steps unnamed: `forward_sample_with` had no
/// "prefill step" / "decode step" range.)
fn on_the_emulator() {
    const STEPS: usize = 2;
    let out = Command::new(bin())
        .args(["bench", "--scenario", "grid", "--per-task", "1", "--concurrency", "1", "--max-tokens", "8"])
        .args(["--profile-steps", &STEPS.to_string(), "--device", "emu"])
        .env("PIMOE_EMU_TRACE", "1")
        .output()
        .expect("run pimoe");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pimoe failed:\n{}", &text[text.len().saturating_sub(4000)..]);
    let (mut capturing, mut starts, mut stops) = (false, 0, 0);
    let mut open: Vec<String> = Vec::new();
    let (mut steps, mut in_model_step, mut outside_steps) = (0, 0, 0);
    for line in text.lines().filter_map(|l| l.strip_prefix("pimoe-emu: ")) {
        if line == "profiler start" {
            (capturing, starts) = (true, starts + 1);
        } else if line == "profiler stop" {
            (capturing, stops) = (false, stops + 1);
        } else if let Some(name) = line.strip_prefix("range push ") {
            if capturing && name.starts_with("scheduler step ") {
                steps += 1;
            }
            open.push(name.to_string());
        } else if line.starts_with("range pop") {
            open.pop();
        } else if line.starts_with("launch ") && capturing {
            if open.iter().any(|r| r == "prefill step" || r == "decode step") {
                in_model_step += 1;
            }
            if !open.iter().any(|r| r.starts_with("scheduler step ")) {
                outside_steps += 1;
            }
        }
    }
    assert_eq!((starts, stops), (1, 1), "one capture, started and stopped");
    assert_eq!(steps, STEPS, "scheduler step ranges inside the capture");
    // The warm-up steps prefill this one question, so the captured ones decode.
    assert!(in_model_step >= 1, "no kernel was launched inside a model step's range during the capture");
    assert_eq!(outside_steps, 0, "kernels launched during the capture outside every scheduler step");
    assert!(open.is_empty(), "ranges left open: {open:?}");
}

#[test]
fn nvtx_ranges_and_capture_reach_the_profiler() {
    let gpu = pimoe::backend::cuda::driver::gpu_driver_present();
    let ncu = Command::new("ncu").arg("--version").output().is_ok_and(|o| o.status.success());
    if gpu && ncu {
        under_ncu();
    } else {
        eprintln!(
            "profile: no GPU with ncu here, so the profiler's view is read from the PTX emulator's trace"
        );
        on_the_emulator();
    }
}
