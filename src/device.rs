//! Which backend runs a request. Only the CPU backend exists in this build; the
//! CUDA backend comes next. Probing never panics: cudarc would panic on first use
//! when libcuda is missing, so we ask whether the library loads before anything else.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when a usable one is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

/// Resolves a choice to a device, with a one-line note when `auto` fell back.
pub fn select(choice: DeviceChoice) -> Result<(Device, Option<String>)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, None)),
        DeviceChoice::Auto => Ok((Device::Cpu, Some(format!("device: cpu ({})", cuda_status())))),
        DeviceChoice::Cuda => {
            Err(Error::Device(format!("--device cuda: {}; use --device cpu or auto", cuda_status())))
        }
    }
}

fn cuda_status() -> &'static str {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        "a CUDA driver is installed, but this build has no CUDA backend yet"
    } else {
        "no CUDA driver found (libcuda could not be loaded)"
    }
}
