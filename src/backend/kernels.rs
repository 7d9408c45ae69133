//! The CUDA kernel files (kernels/*.cu) embedded in the binary: each one's source and,
//! when nvcc was found at build time, its PTX. See build.rs.

/// One kernels/<name>.cu file.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub ptx: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
