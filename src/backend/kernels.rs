//! The CUDA kernel files (kernels/*.cu) embedded in the binary: each one's source and,
//! when nvcc was found at build time, its PTX. See build.rs.

/// One kernels/<name>.cu file.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub ptx: Option<&'static str>,
}

/// One entry point's resources as ptxas assembled it for `PTX_ARCH`.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub entry: &'static str,
    pub registers: u32,
    pub static_smem: u32,
    pub stack: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
