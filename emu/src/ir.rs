//! The decoded form a kernel runs from: one flat instruction array per entry point
//! (the entry's body followed by every `.func` it calls), registers resolved to
//! slots, labels to instruction indices, and each instruction's semantics chosen
//! once, at load, as a function pointer specialised for its types and modifiers.
//!
//! Registers live in per-warp files of `[u64; 32]` (one value per lane), predicates
//! in files of `u32` lane masks. Immediates are constant slots filled once per
//! warp, so every operand is a slot and no instruction matches on operand kinds
//! while it runs.

use crate::error::Fault;
use crate::exec::Core;

/// Runs one instruction for the lanes in `mask` (guard already applied).
pub type Exec = fn(&mut Core<'_>, &Inst, u32) -> Result<(), Fault>;

/// How the scheduler treats an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctrl {
    /// Computes for the guarded lanes, then every lane of the group moves on.
    Op,
    Bra(u32),
    Exit,
    Ret,
    /// Index into `Program::calls`.
    Call(u32),
    /// `bar.sync` / `barrier.sync` with all threads of the block.
    Bar,
    /// Warp-synchronous: runs once every lane it needs has arrived here.
    Sync(Need),
}

/// The lanes a warp-synchronous instruction waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The value of this register (the `membermask` operand), the same in every lane.
    Member(u32),
    /// `.aligned` forms (mma, ldmatrix): every thread of the warp.
    All,
}

/// Instruction classes, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Int,
    F32,
    F64,
    Mem,
    Mma,
    Control,
    Sync,
}

#[derive(Clone)]
pub struct Inst {
    pub exec: Exec,
    pub ctrl: Ctrl,
    pub class: Class,
    /// Predicate slot and negation.
    pub guard: Option<(u32, bool)>,
    /// Destination register slots (vectors use several).
    pub d: [u32; 4],
    /// Source register slots (mma uses ten: a0-a3, b0-b1, c0-c3).
    pub s: [u32; 10],
    /// Predicate slots: a destination pair (`setp p|q`, `shfl d|p`) or a source
    /// (`selp`, `vote`).
    pub p: [u32; 2],
    /// Address offset, vector length, shift amount: whatever the family needs.
    pub imm: i64,
    /// A second small operand (register width, element count...).
    pub aux: u32,
    pub line: u32,
    pub loc: Option<(u32, u32)>,
}

/// No register: a sink (`_`) or an unused operand. Writes to it are dropped by
/// giving it a scratch slot of its own (see `decode`), so this value is never
/// indexed.
pub const NONE: u32 = u32::MAX;

/// Special registers, filled per block or per warp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
}

/// A `.param` of the entry point, in the launch's parameter buffer.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub align: usize,
}

/// One call site: the bytes copied between the caller's `.param` variables and the
/// callee's, in per-lane call-parameter memory.
#[derive(Clone, Debug, Default)]
pub struct CallSite {
    pub target: u32,
    /// (from, to, len): arguments into the callee's parameters at the call.
    pub args: Vec<(u32, u32, u32)>,
    /// (from, to, len): the callee's return values into the caller's at `ret`.
    pub rets: Vec<(u32, u32, u32)>,
}

pub struct Program {
    pub name: String,
    pub insts: Vec<Inst>,
    /// The PTX text of each instruction, for reports.
    pub text: Vec<String>,
    pub nregs: usize,
    pub npreds: usize,
    pub consts: Vec<(u32, u64)>,
    pub specials: Vec<(u32, Special)>,
    /// The carry flag of add.cc / addc / mad.cc, one register slot.
    pub cc: u32,
    pub params: Vec<Param>,
    pub param_bytes: usize,
    /// Static shared memory, bytes; dynamic shared memory starts at `dyn_offset`.
    pub shared_static: usize,
    /// (name, offset, bytes) of each shared variable, for reports.
    pub shared_vars: Vec<(String, usize, usize)>,
    pub dyn_offset: usize,
    pub local_bytes: usize,
    pub call_param_bytes: usize,
    pub calls: Vec<CallSite>,
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    /// `.file` index to path, for `.loc` positions.
    pub files: std::sync::Arc<std::collections::HashMap<u32, String>>,
}

impl Program {
    /// `kernels/gemm.cu:123` for an instruction, when the PTX carried `.loc`.
    pub fn source(&self, pc: usize) -> Option<String> {
        let (file, line) = self.insts.get(pc)?.loc?;
        let path = self.files.get(&file)?;
        let short = match path.rfind("/kernels/") {
            Some(i) => &path[i + 1..],
            None => path.as_str(),
        };
        Some(format!("{short}:{line}"))
    }
}

/// PTX fundamental types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    B8,
    U8,
    S8,
    B16,
    U16,
    S16,
    B32,
    U32,
    S32,
    B64,
    U64,
    S64,
    F16,
    Bf16,
    F32,
    F64,
    Pred,
    F16x2,
    Bf16x2,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "u8" => Ty::U8,
            "s8" => Ty::S8,
            "b16" => Ty::B16,
            "u16" => Ty::U16,
            "s16" => Ty::S16,
            "b32" => Ty::B32,
            "u32" => Ty::U32,
            "s32" => Ty::S32,
            "b64" => Ty::B64,
            "u64" => Ty::U64,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            "f16x2" => Ty::F16x2,
            "bf16x2" => Ty::Bf16x2,
            _ => return None,
        })
    }
    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::Pred => 1,
        }
    }
    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
    pub fn float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F64 | Ty::F16x2 | Ty::Bf16x2)
    }
    pub fn int(self) -> bool {
        !self.float() && self != Ty::Pred
    }
}
