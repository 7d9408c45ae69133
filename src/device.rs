//! Which backend runs a request. Probing never panics: cudarc would panic on its
//! first call when libcuda is missing, so the CUDA backend asks whether the library
//! loads before anything else (`cuda::driver`).

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when a usable one is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
    /// The CUDA backend on the PTX emulator (emu/): every kernel checked, slowly.
    Emu,
}

/// An opened backend. The engine is generic over its backend, so callers match on
/// this once and run the same generic code for either arm.
pub enum Opened {
    Cpu(CpuBackend),
    Cuda(Box<CudaBackend>),
}

/// Opens the chosen device, with a one-line note when `auto` fell back to the CPU.
pub fn open(choice: DeviceChoice) -> Result<(Opened, Option<String>)> {
    match choice {
        DeviceChoice::Cpu => Ok((Opened::Cpu(CpuBackend), None)),
        DeviceChoice::Auto => match CudaBackend::new(0) {
            Ok(b) => {
                let note = format!("device: cuda ({})", b.device_name);
                Ok((Opened::Cuda(Box::new(b)), Some(note)))
            }
            Err(e) => Ok((Opened::Cpu(CpuBackend), Some(format!("device: cpu ({})", reason(&e))))),
        },
        DeviceChoice::Cuda => match CudaBackend::new(0) {
            Ok(b) => Ok((Opened::Cuda(Box::new(b)), None)),
            Err(e) => Err(Error::Device(format!("--device cuda: {}; use --device cpu or auto", reason(&e)))),
        },
        DeviceChoice::Emu => match CudaBackend::emulated(0) {
            Ok(b) => {
                let note = format!("device: emu ({})", b.device_name);
                Ok((Opened::Cuda(Box::new(b)), Some(note)))
            }
            Err(e) => Err(Error::Device(format!("--device emu: {}", reason(&e)))),
        },
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::Device(msg) => msg.clone(),
        other => other.to_string(),
    }
}
