//! pimoe-emu: a PTX interpreter for the PTX nvcc emits for compute_90, with checks
//! in the manner of compute-sanitizer (memcheck, initcheck, racecheck, synccheck),
//! and a cdylib exporting the CUDA driver API's C ABI (`driver`) so that a program
//! written against libcuda runs its kernels here unchanged.
//!
//! It knows PTX, not any program using it. Semantics follow the PTX ISA; what it
//! does not implement is refused when a module loads. It models values, not time:
//! no caches, no timing, and no memory ordering beyond what barriers give.
//!
//! ```text
//! PTX text --ptx::parse--> syntax tree --decode--> Program (per entry point)
//!   --exec::launch--> blocks in parallel, warps of 32 lanes, checks on every access
//! ```

pub mod decode;
pub mod driver;
pub mod error;
pub mod exec;
pub mod ir;
pub mod mem;
pub mod ptx;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

pub use error::{FaultKind, KernelError, LoadError};
pub use exec::{Options, Stats};
pub use ir::Program;
pub use mem::Memory;

/// A loaded module: its entry points, decoded, and its `.global` variables.
pub struct Module {
    pub programs: HashMap<String, Arc<Program>>,
    /// Device allocations of the module's variables, freed with the module.
    pub globals: Vec<u64>,
}

/// Parses, places the module's variables in `mem` and decodes every entry point.
pub fn load_module(mem: &Memory, text: &str) -> Result<Module, LoadError> {
    let m = ptx::parse(text)?;
    if let Some(a) = m.address_size {
        if a != 64 {
            return Err(LoadError::Unsupported { line: 1, what: format!(".address_size {a}") });
        }
    }
    let mut globals = HashMap::new();
    let mut allocs = Vec::new();
    let fail = |allocs: &[u64], e: LoadError| {
        for &p in allocs {
            let _ = mem.free(p);
        }
        e
    };
    for d in m.globals.iter().filter(|d| matches!(d.space, ptx::Space::Global | ptx::Space::Const)) {
        if d.extern_ {
            return Err(fail(
                &allocs,
                LoadError::Unsupported { line: d.line, what: format!("extern variable {}", d.names[0]) },
            ));
        }
        let size = d.bytes().ok_or_else(|| LoadError::Invalid {
            line: d.line,
            msg: format!("variable {} has no size", d.names[0]),
        });
        let size = match size {
            Ok(s) => s,
            Err(e) => return Err(fail(&allocs, e)),
        };
        let label = format!("module variable {} ({size} bytes)", d.names[0]);
        let ptr = match mem.alloc(size, Some(label)) {
            Ok(p) => p,
            Err(e) => return Err(fail(&allocs, LoadError::Invalid { line: d.line, msg: e })),
        };
        allocs.push(ptr);
        let elem = ptx::type_bytes(&d.ty).unwrap_or(1) as usize;
        let mut bytes = vec![0u8; size as usize];
        for (k, v) in d.init.iter().enumerate() {
            let raw = match v {
                ptx::Operand::Int(x) => *x as u64,
                ptx::Operand::F32(b) => *b as u64,
                ptx::Operand::F64(b) => *b,
                _ => {
                    return Err(fail(
                        &allocs,
                        LoadError::Unsupported { line: d.line, what: "a non-numeric initializer".into() },
                    ))
                }
            };
            let at = k * elem;
            if at + elem > bytes.len() {
                return Err(fail(
                    &allocs,
                    LoadError::Invalid {
                        line: d.line,
                        msg: format!("initializer of {} is longer than the variable", d.names[0]),
                    },
                ));
            }
            bytes[at..at + elem].copy_from_slice(&raw.to_le_bytes()[..elem]);
        }
        // Every byte of a module variable is defined (zero where not initialized).
        let _ = mem.with_range(ptr, bytes.len(), |a, off| {
            // SAFETY: the range was checked by with_range.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a.ptr(off), bytes.len()) };
            a.mark(off, bytes.len());
        });
        for n in &d.names {
            globals.insert(n.clone(), ptr);
        }
    }
    let programs = decode::decode_module(&m, &globals).map_err(|e| fail(&allocs, e))?;
    Ok(Module {
        programs: programs.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect(),
        globals: allocs,
    })
}

/// Limits of the emulated device: an H100/H200 (sm_90).
pub mod limits {
    pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
    pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
    pub const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65535, 65535];
    /// Static + dynamic shared memory per block with the opt-in attribute.
    pub const MAX_SHARED_OPTIN: u32 = 227 * 1024;
    /// Without the opt-in (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES).
    pub const DEFAULT_SHARED: u32 = 48 * 1024;
    pub const SHARED_PER_SM: u32 = 228 * 1024;
    pub const SMS: i32 = 132;
    pub const REGS_PER_SM: i32 = 65536;
}

/// Why a launch did not run or did not finish.
#[derive(Debug)]
pub enum LaunchError {
    /// Bad geometry, shared memory or parameters: nothing ran.
    Config(String),
    Kernel(KernelError),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Config(s) => write!(f, "{s}"),
            LaunchError::Kernel(k) => write!(f, "{k}"),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Checks a launch's configuration, then runs it.
pub fn launch(
    prog: &Program,
    mem: &Memory,
    grid: [u32; 3],
    block: [u32; 3],
    dyn_smem: u32,
    max_dyn_smem: u32,
    params: &[u8],
    opts: &Options,
) -> Result<Stats, LaunchError> {
    check_launch(prog, grid, block, dyn_smem, max_dyn_smem, params)?;
    let view = mem.view();
    let cfg = exec::Config { grid, block, dyn_smem, params };
    exec::launch(prog, &view, &cfg, opts).map_err(LaunchError::Kernel)
}

/// A launch's geometry, shared memory and parameter size against the device's and
/// the kernel's limits (also what a stream capture checks when it records one).
pub fn check_launch(
    prog: &Program,
    grid: [u32; 3],
    block: [u32; 3],
    dyn_smem: u32,
    max_dyn_smem: u32,
    params: &[u8],
) -> Result<(), LaunchError> {
    let name = &prog.name;
    let bad = |m: String| Err(LaunchError::Config(format!("launching {name}: {m}")));
    if grid.contains(&0) || block.contains(&0) {
        return bad(format!("grid {grid:?} and block {block:?} must be nonzero in every dimension"));
    }
    for k in 0..3 {
        if grid[k] > limits::MAX_GRID[k] || block[k] > limits::MAX_BLOCK[k] {
            return bad(format!(
                "grid {grid:?} / block {block:?} exceed the device limits {:?} / {:?}",
                limits::MAX_GRID,
                limits::MAX_BLOCK
            ));
        }
    }
    let threads = block[0] as u64 * block[1] as u64 * block[2] as u64;
    if threads > limits::MAX_THREADS_PER_BLOCK as u64 {
        return bad(format!("{threads} threads per block is more than {}", limits::MAX_THREADS_PER_BLOCK));
    }
    if let Some(m) = prog.maxntid {
        if threads > m[0] as u64 * m[1] as u64 * m[2] as u64 {
            return bad(format!("{threads} threads per block is more than the kernel's .maxntid {m:?}"));
        }
    }
    if let Some(r) = prog.reqntid {
        if block != r {
            return bad(format!("block {block:?} differs from the kernel's .reqntid {r:?}"));
        }
    }
    if dyn_smem > max_dyn_smem {
        return bad(format!(
            "{dyn_smem} bytes of dynamic shared memory is more than the kernel allows ({max_dyn_smem}; raise it with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)"
        ));
    }
    let total = prog.dyn_offset as u64 + dyn_smem as u64;
    if total.max(prog.shared_static as u64) > limits::MAX_SHARED_OPTIN as u64 {
        return bad(format!(
            "{total} bytes of shared memory per block is more than the device's {}",
            limits::MAX_SHARED_OPTIN
        ));
    }
    if params.len() != prog.param_bytes {
        return bad(format!(
            "{} bytes of parameters given, the kernel takes {}",
            params.len(),
            prog.param_bytes
        ));
    }
    Ok(())
}
