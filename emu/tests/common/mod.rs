//! Shared helpers for the per-instruction-family ISA tests: wrap a few PTX
//! instructions into a one-kernel module, run it on the emulator through
//! `pimoe_emu::session::Session`, and return what it stored.
//!
//! Expected values in the tests come from the PTX ISA (by hand, or from an
//! independent CPU formula), never from the emulator itself.

#![allow(dead_code)]

use pimoe_emu::session::{Arg, Session};
use pimoe_emu::LoadError;

pub const HEADER: &str = ".version 9.0\n.target sm_90\n.address_size 64\n";

/// Loads a module, panicking with the load error when it is refused.
pub fn load(ptx: &str) -> Session {
    match Session::new(ptx) {
        Ok(s) => s,
        Err(e) => panic!("module refused: {e}\n{ptx}"),
    }
}

/// The load error of a module that must be refused.
pub fn refusal(ptx: &str) -> LoadError {
    match Session::new(ptx) {
        Ok(_) => panic!("module was accepted but must be refused:\n{ptx}"),
        Err(e) => e,
    }
}

/// The one-kernel module `eval` runs: thread i loads %a, %b, %c (each `.b{iw}`)
/// from in[3i..3i+3], runs `body`, and stores %d (`.b{ow}`) to out[i]. The body may
/// also use the predicates %p0..%p3 and declare registers of its own.
pub fn eval_module(iw: u32, ow: u32, body: &str) -> String {
    let (isz, osz) = (iw / 8, ow / 8);
    format!(
        "{HEADER}
.visible .entry k(.param .u64 k_in, .param .u64 k_out, .param .u32 k_n)
{{
    .reg .b64 %hin, %hout, %hoff;
    .reg .b32 %hi, %hn, %hx, %hy;
    .reg .pred %hp;
    .reg .b{iw} %a, %b, %c;
    .reg .b{ow} %d;
    .reg .pred %p<4>;
    ld.param.u64 %hin, [k_in];
    ld.param.u64 %hout, [k_out];
    ld.param.u32 %hn, [k_n];
    mov.u32 %hx, %tid.x;
    mov.u32 %hy, %ctaid.x;
    mad.lo.u32 %hi, %hy, 32, %hx;
    setp.ge.u32 %hp, %hi, %hn;
    @%hp bra $Lhdone;
    mul.wide.u32 %hoff, %hi, {in_stride};
    add.s64 %hoff, %hin, %hoff;
    ld.global.b{iw} %a, [%hoff];
    ld.global.b{iw} %b, [%hoff+{isz}];
    ld.global.b{iw} %c, [%hoff+{isz2}];
{body}
    mul.wide.u32 %hoff, %hi, {osz};
    add.s64 %hoff, %hout, %hoff;
    st.global.b{ow} [%hoff], %d;
$Lhdone:
    ret;
}}
",
        in_stride = 3 * isz,
        isz2 = 2 * isz,
    )
}

fn le_bytes(v: u64, bytes: u32) -> Vec<u8> {
    v.to_le_bytes()[..bytes as usize].to_vec()
}

/// Runs `body` once per case (a, b, c) with operands of `iw` bits and a result of
/// `ow` bits; returns %d of each case.
pub fn eval(iw: u32, ow: u32, body: &str, cases: &[[u64; 3]]) -> Vec<u64> {
    let s = load(&eval_module(iw, ow, body));
    let (isz, osz) = (iw / 8, ow / 8);
    let input: Vec<u8> = cases.iter().flat_map(|c| c.iter().flat_map(|&v| le_bytes(v, isz))).collect();
    let n = cases.len();
    let inp = s.upload(&input);
    let out = s.alloc(n * osz as usize);
    let grid = (n as u32).div_ceil(32);
    s.launch("k", [grid, 1, 1], [32, 1, 1], 0, &[Arg::U64(inp), Arg::U64(out), Arg::U32(n as u32)])
        .unwrap_or_else(|e| panic!("launch failed: {e}\n{body}"));
    let bytes = s.download(out, n * osz as usize);
    bytes
        .chunks(osz as usize)
        .map(|c| {
            let mut v = [0u8; 8];
            v[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(v)
        })
        .collect()
}

/// `eval` with 32-bit operands and result.
pub fn eval32(body: &str, cases: &[[u32; 3]]) -> Vec<u32> {
    let c: Vec<[u64; 3]> = cases.iter().map(|c| c.map(u64::from)).collect();
    eval(32, 32, body, &c).into_iter().map(|v| v as u32).collect()
}

/// `eval` with 64-bit operands and result.
pub fn eval64(body: &str, cases: &[[u64; 3]]) -> Vec<u64> {
    eval(64, 64, body, cases)
}

/// One 32-bit-in, 32-bit-out instruction over a list of single inputs (in %a).
pub fn unary32(body: &str, xs: &[u32]) -> Vec<u32> {
    let c: Vec<[u32; 3]> = xs.iter().map(|&x| [x, 0, 0]).collect();
    eval32(body, &c)
}

/// Asserts element-wise equality, naming the case that differs.
pub fn check<T: PartialEq + std::fmt::Debug, I: std::fmt::Debug>(
    what: &str,
    inputs: &[I],
    got: &[T],
    want: &[T],
) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "{what}: case {k} {:?}: got {g:?}, want {w:?}", inputs[k]);
    }
}

/// Like `check`, printing values as hex bits.
pub fn check_hex<I: std::fmt::Debug>(what: &str, inputs: &[I], got: &[u64], want: &[u64]) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "{what}: case {k} {:?}: got {g:#x}, want {w:#x}", inputs[k]);
    }
}

/// A kernel `k(.param .u64 k_in, .param .u64 k_out)` run by `threads` threads of
/// one block: each thread has %lane (its %laneid), %tid (%tid.x), %in (the input
/// buffer of u32 words) and stores its registers %o0..%o{nout-1} to
/// out[tid * nout + k] after `body`. Scratch registers: %r0..%r15 (.b32),
/// %rd0..%rd7 (.b64), %p0..%p7 (.pred). Returns the words of each thread.
pub fn run_threads(threads: u32, nout: usize, body: &str, input: &[u32]) -> Vec<Vec<u32>> {
    let ptx = threads_module(nout, body);
    let s = load(&ptx);
    let mut bytes: Vec<u8> = input.iter().flat_map(|w| w.to_le_bytes()).collect();
    if bytes.is_empty() {
        bytes.extend_from_slice(&[0; 4]);
    }
    let inp = s.upload(&bytes);
    let n = threads as usize * nout;
    let out = s.upload(&vec![0u8; n * 4]);
    s.launch("k", [1, 1, 1], [threads, 1, 1], 0, &[Arg::U64(inp), Arg::U64(out)])
        .unwrap_or_else(|e| panic!("launch failed: {e}\n{ptx}"));
    let words: Vec<u32> =
        s.download(out, n * 4).chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    words.chunks(nout).map(|c| c.to_vec()).collect()
}

pub fn threads_module(nout: usize, body: &str) -> String {
    let mut stores = String::new();
    for k in 0..nout {
        stores.push_str(&format!("    st.global.b32 [%hoff+{}], %o{k};\n", 4 * k));
    }
    format!(
        "{HEADER}
.visible .entry k(.param .u64 k_in, .param .u64 k_out)
{{
    .reg .b64 %in, %hout, %hoff;
    .reg .b32 %lane, %tid;
    .reg .b32 %o<{nregs}>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .reg .pred %p<8>;
    ld.param.u64 %in, [k_in];
    ld.param.u64 %hout, [k_out];
    mov.u32 %lane, %laneid;
    mov.u32 %tid, %tid.x;
{body}
    mul.wide.u32 %hoff, %tid, {stride};
    add.s64 %hoff, %hout, %hoff;
{stores}    ret;
}}
",
        nregs = nout.max(1),
        stride = 4 * nout,
    )
}
