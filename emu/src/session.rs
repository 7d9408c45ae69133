//! A small Rust-side way to drive the emulator without the driver ABI: one module,
//! its own memory, typed kernel arguments. The emulator's tests use it; so can a
//! tool that wants the counters of a launch.

use crate::{launch, limits, load_module, LaunchError, LoadError, Memory, Module, Options, Stats};

/// A kernel argument, packed to the parameter's declared size.
#[derive(Clone, Debug)]
pub enum Arg {
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    /// Raw bytes for a by-value struct parameter.
    Bytes(Vec<u8>),
}

impl Arg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::U64(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
            Arg::F64(v) => v.to_le_bytes().to_vec(),
            Arg::Bytes(b) => b.clone(),
        }
    }
}

pub struct Session {
    pub mem: Memory,
    pub module: Module,
    pub opts: Options,
}

impl Session {
    pub fn new(ptx: &str) -> Result<Session, LoadError> {
        let mem = Memory::default();
        let module = load_module(&mem, ptx)?;
        Ok(Session { mem, module, opts: Options::default() })
    }

    /// A device buffer holding `bytes` (all bytes written, for initcheck).
    pub fn upload(&self, bytes: &[u8]) -> u64 {
        let p = self.mem.alloc(bytes.len() as u64, None).expect("allocation");
        self.mem
            .with_range(p, bytes.len(), |a, off| {
                // SAFETY: the range was checked by with_range.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a.ptr(off), bytes.len()) };
                a.mark(off, bytes.len());
            })
            .expect("fresh allocation");
        p
    }

    /// A device buffer of `len` bytes never written (reads of it are initcheck errors).
    pub fn alloc(&self, len: usize) -> u64 {
        self.mem.alloc(len as u64, None).expect("allocation")
    }

    pub fn download(&self, ptr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem
            .with_range(ptr, len, |a, off| {
                // SAFETY: the range was checked by with_range.
                unsafe { std::ptr::copy_nonoverlapping(a.ptr(off), out.as_mut_ptr(), len) }
            })
            .expect("a live range");
        out
    }

    /// Launches `kernel`; `dyn_smem` may use the full opt-in limit.
    pub fn launch(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_smem: u32,
        args: &[Arg],
    ) -> Result<Stats, LaunchError> {
        let prog = self
            .module
            .programs
            .get(kernel)
            .ok_or_else(|| LaunchError::Config(format!("no entry point {kernel}")))?;
        if args.len() != prog.params.len() {
            return Err(LaunchError::Config(format!(
                "{kernel} takes {} arguments, {} given",
                prog.params.len(),
                args.len()
            )));
        }
        let mut buf = vec![0u8; prog.param_bytes];
        for (a, p) in args.iter().zip(&prog.params) {
            let b = a.bytes();
            if b.len() != p.size {
                return Err(LaunchError::Config(format!(
                    "argument {} is {} bytes, the parameter {}",
                    p.name,
                    b.len(),
                    p.size
                )));
            }
            buf[p.offset..p.offset + p.size].copy_from_slice(&b);
        }
        let max = limits::MAX_SHARED_OPTIN.saturating_sub(prog.shared_static as u32);
        launch(prog, &self.mem, grid, block, dyn_smem, max, &buf, &self.opts)
    }
}
