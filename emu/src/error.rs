//! What can go wrong: a module that does not load (syntax, or PTX the emulator does
//! not implement), and a kernel that faults while it runs (the sanitizer reports).

use std::fmt;

/// A module that cannot be loaded. Every variant names the PTX line.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadError {
    Syntax {
        line: u32,
        msg: String,
    },
    /// An instruction, modifier, directive or state space the emulator does not
    /// implement: refused at load, never run as a silent no-op.
    Unsupported {
        line: u32,
        what: String,
    },
    /// Well-formed PTX that is wrong: an undeclared register, an unknown label, an
    /// operand of the wrong kind.
    Invalid {
        line: u32,
        msg: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Syntax { line, msg } => write!(f, "PTX line {line}: syntax error: {msg}"),
            LoadError::Unsupported { line, what } => {
                write!(f, "PTX line {line}: not implemented by the emulator: {what}")
            }
            LoadError::Invalid { line, msg } => write!(f, "PTX line {line}: {msg}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// What a check found, in the terms of compute-sanitizer's tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// memcheck: outside any allocation, a freed one, or past the end of one.
    OutOfBounds,
    /// memcheck: an address not aligned to the access size.
    Misaligned,
    /// initcheck: a read of memory never written.
    Uninitialized,
    /// racecheck: shared memory touched by two warps, one writing, with no barrier
    /// between them.
    Race,
    /// synccheck: a barrier or warp-synchronous instruction that cannot complete as
    /// the ISA requires (part of the block or warp elsewhere, divergent, exited).
    Sync,
    /// A cp.async copy read (or overwritten) before the wait that covers it.
    AsyncCopy,
    /// More instructions than the budget allows: a hang, or a budget set too low.
    Budget,
    /// Everything else the ISA calls undefined: an operand out of range, a trap.
    Invalid,
}

impl FaultKind {
    pub fn tool(self) -> &'static str {
        match self {
            FaultKind::OutOfBounds | FaultKind::Misaligned => "memcheck",
            FaultKind::Uninitialized => "initcheck",
            FaultKind::Race => "racecheck",
            FaultKind::Sync => "synccheck",
            FaultKind::AsyncCopy => "asynccheck",
            FaultKind::Budget => "budget",
            FaultKind::Invalid => "invalid",
        }
    }
}

/// A fault raised by an instruction for one lane; the scheduler adds where.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub msg: String,
    /// The lane it happened in, when it is one lane's.
    pub lane: Option<u32>,
}

impl Fault {
    pub fn new(kind: FaultKind, msg: impl Into<String>) -> Fault {
        Fault { kind, msg: msg.into(), lane: None }
    }
    pub fn at(kind: FaultKind, lane: u32, msg: impl Into<String>) -> Fault {
        Fault { kind, msg: msg.into(), lane: Some(lane) }
    }
}

/// A fault with its place: kernel, block, thread, PTX line and source line.
#[derive(Clone, Debug)]
pub struct KernelError {
    pub kind: FaultKind,
    pub kernel: String,
    pub block: [u32; 3],
    pub thread: Option<[u32; 3]>,
    pub ptx_line: u32,
    /// `kernels/gemm.cu:123`, from the PTX's `.loc`.
    pub source: Option<String>,
    pub instruction: String,
    pub msg: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {} in block ({},{},{})",
            self.kind.tool(),
            self.kernel,
            self.msg,
            self.block[0],
            self.block[1],
            self.block[2]
        )?;
        if let Some(t) = self.thread {
            write!(f, " thread ({},{},{})", t[0], t[1], t[2])?;
        }
        write!(f, ", at `{}` (PTX line {}", self.instruction, self.ptx_line)?;
        if let Some(s) = &self.source {
            write!(f, ", {s}")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for KernelError {}
