//! Integer, logic, predicate, move and integer-conversion instructions (PTX ISA
//! §9.7.1 integer arithmetic, §9.7.2 extended precision, §9.7.7 logic, §9.7.9
//! data movement (mov), §9.7.8 comparison and selection). Each exec function is
//! specialised at load for its operation and width through const generics.

use super::{lanes, lanewise, Core};
use crate::error::Fault;
use crate::ir::{Exec, Inst, NONE};

type R = Result<(), Fault>;

/// Low `w` bits of v.
#[inline(always)]
pub const fn mask(v: u64, w: u8) -> u64 {
    if w >= 64 {
        v
    } else {
        v & ((1u64 << w) - 1)
    }
}

/// The low `w` bits of v, sign-extended.
#[inline(always)]
pub const fn sx(v: u64, w: u8) -> i64 {
    if w >= 64 {
        v as i64
    } else {
        let s = 64 - w as u32;
        ((v << s) as i64) >> s
    }
}

// Binary operations.
pub const ADD: u8 = 0;
pub const SUB: u8 = 1;
pub const MUL_LO: u8 = 2;
pub const MUL_HI: u8 = 3;
pub const MUL_WIDE: u8 = 4;
pub const DIV: u8 = 5;
pub const REM: u8 = 6;
pub const MIN: u8 = 7;
pub const MAX: u8 = 8;
pub const AND: u8 = 9;
pub const OR: u8 = 10;
pub const XOR: u8 = 11;
pub const SHL: u8 = 12;
pub const SHR: u8 = 13;
pub const ADD_SAT: u8 = 14;
pub const SUB_SAT: u8 = 15;

#[inline(always)]
fn bin<const OP: u8, const W: u8, const S: bool>(a: u64, b: u64) -> u64 {
    let (ua, ub) = (mask(a, W), mask(b, W));
    let (ia, ib) = (sx(a, W), sx(b, W));
    let r = match OP {
        ADD => ua.wrapping_add(ub),
        SUB => ua.wrapping_sub(ub),
        MUL_LO => ua.wrapping_mul(ub),
        MUL_HI => {
            if S {
                ((ia as i128 * ib as i128) >> W) as u64
            } else {
                ((ua as u128 * ub as u128) >> W) as u64
            }
        }
        // The 2W-bit product of W-bit operands.
        MUL_WIDE => {
            let p = if S { (ia as i128 * ib as i128) as u128 } else { ua as u128 * ub as u128 };
            return mask(p as u64, 2 * W);
        }
        // Division by zero is unspecified in the ISA; the emulator answers all ones
        // (what the GPU's integer division sequence gives), never a host trap.
        DIV => {
            if ub == 0 {
                u64::MAX
            } else if S {
                ia.wrapping_div(ib) as u64
            } else {
                ua / ub
            }
        }
        REM => {
            if ub == 0 {
                ua
            } else if S {
                ia.wrapping_rem(ib) as u64
            } else {
                ua % ub
            }
        }
        MIN => {
            if S {
                ia.min(ib) as u64
            } else {
                ua.min(ub)
            }
        }
        MAX => {
            if S {
                ia.max(ib) as u64
            } else {
                ua.max(ub)
            }
        }
        AND => ua & ub,
        OR => ua | ub,
        XOR => ua ^ ub,
        // The shift amount is an unsigned 32-bit value; amounts past the width give
        // 0 (or the sign, for shr.s).
        SHL => {
            let n = mask(b, 32);
            if n >= W as u64 {
                0
            } else {
                ua << n
            }
        }
        SHR => {
            let n = mask(b, 32).min(W as u64 - 1 + (!S) as u64);
            if S {
                (ia >> n.min(63)) as u64
            } else if n >= W as u64 {
                0
            } else {
                ua >> n
            }
        }
        ADD_SAT => {
            let (lo, hi) = (-(1i64 << (W - 1)), (1i64 << (W - 1)) - 1);
            (ia as i128 + ib as i128).clamp(lo as i128, hi as i128) as u64
        }
        SUB_SAT => {
            let (lo, hi) = (-(1i64 << (W - 1)), (1i64 << (W - 1)) - 1);
            (ia as i128 - ib as i128).clamp(lo as i128, hi as i128) as u64
        }
        _ => unreachable!(),
    };
    mask(r, W)
}

fn int2<const OP: u8, const W: u8, const S: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1]], m, |_, [a, b]| bin::<OP, W, S>(a, b));
    Ok(())
}

pub fn binary(op: &str, sat: bool, w: u32, signed: bool) -> Option<Exec> {
    macro_rules! pick {
        ($op:expr) => {
            match (w, signed) {
                (16, false) => int2::<{ $op }, 16, false> as Exec,
                (16, true) => int2::<{ $op }, 16, true>,
                (32, false) => int2::<{ $op }, 32, false>,
                (32, true) => int2::<{ $op }, 32, true>,
                (64, false) => int2::<{ $op }, 64, false>,
                (64, true) => int2::<{ $op }, 64, true>,
                _ => return None,
            }
        };
    }
    Some(match (op, sat) {
        ("add", false) => pick!(ADD),
        ("add", true) if w == 32 && signed => int2::<ADD_SAT, 32, true>,
        ("sub", false) => pick!(SUB),
        ("sub", true) if w == 32 && signed => int2::<SUB_SAT, 32, true>,
        ("mul.lo", false) => pick!(MUL_LO),
        ("mul.hi", false) => pick!(MUL_HI),
        ("mul.wide", false) if w <= 32 => pick!(MUL_WIDE),
        ("div", false) => pick!(DIV),
        ("rem", false) => pick!(REM),
        ("min", false) => pick!(MIN),
        ("max", false) => pick!(MAX),
        ("and", false) => pick!(AND),
        ("or", false) => pick!(OR),
        ("xor", false) => pick!(XOR),
        ("shl", false) => pick!(SHL),
        ("shr", false) => pick!(SHR),
        _ => return None,
    })
}

// mad: d = a * b + c, the product's low, high or wide (2W) part.
fn mad<const PART: u8, const W: u8, const S: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let cw = if PART == MUL_WIDE { 2 * W } else { W };
    lanewise(c.w, i.d[0], [i.s[0], i.s[1], i.s[2]], m, |_, [a, b, cc]| {
        mask(bin::<PART, W, S>(a, b).wrapping_add(cc), cw)
    });
    Ok(())
}

pub fn mad_op(part: &str, w: u32, signed: bool) -> Option<Exec> {
    macro_rules! pick {
        ($p:expr) => {
            match (w, signed) {
                (16, false) => mad::<{ $p }, 16, false> as Exec,
                (16, true) => mad::<{ $p }, 16, true>,
                (32, false) => mad::<{ $p }, 32, false>,
                (32, true) => mad::<{ $p }, 32, true>,
                (64, false) if $p != MUL_WIDE => mad::<{ $p }, 64, false>,
                (64, true) if $p != MUL_WIDE => mad::<{ $p }, 64, true>,
                _ => return None,
            }
        };
    }
    Some(match part {
        "lo" => pick!(MUL_LO),
        "hi" => pick!(MUL_HI),
        "wide" => pick!(MUL_WIDE),
        _ => return None,
    })
}

// Unary operations.
pub const NOT: u8 = 0;
pub const NEG: u8 = 1;
pub const ABS: u8 = 2;
pub const POPC: u8 = 3;
pub const CLZ: u8 = 4;
pub const BREV: u8 = 5;
pub const BFIND: u8 = 6;
pub const BFIND_SHIFT: u8 = 7;
pub const CNOT: u8 = 8;

#[inline(always)]
fn un<const OP: u8, const W: u8, const S: bool>(a: u64) -> u64 {
    let ua = mask(a, W);
    match OP {
        NOT => mask(!ua, W),
        NEG => mask(ua.wrapping_neg(), W),
        ABS => mask(sx(a, W).wrapping_abs() as u64, W),
        POPC => ua.count_ones() as u64,
        CLZ => (ua.leading_zeros() - (64 - W as u32)) as u64,
        BREV => mask(ua.reverse_bits() >> (64 - W as u32), W),
        // Position of the most significant non-sign bit; 0xffffffff when none.
        BFIND | BFIND_SHIFT => {
            let v = if S && sx(a, W) < 0 { mask(!ua, W) } else { ua };
            if v == 0 {
                0xffff_ffff
            } else {
                let pos = 63 - v.leading_zeros() as u64;
                if OP == BFIND_SHIFT {
                    W as u64 - 1 - pos
                } else {
                    pos
                }
            }
        }
        CNOT => (ua == 0) as u64,
        _ => unreachable!(),
    }
}

fn int1<const OP: u8, const W: u8, const S: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [a]| un::<OP, W, S>(a));
    Ok(())
}

pub fn unary(op: &str, w: u32, signed: bool) -> Option<Exec> {
    macro_rules! pick {
        ($op:expr) => {
            match (w, signed) {
                (16, false) => int1::<{ $op }, 16, false> as Exec,
                (16, true) => int1::<{ $op }, 16, true>,
                (32, false) => int1::<{ $op }, 32, false>,
                (32, true) => int1::<{ $op }, 32, true>,
                (64, false) => int1::<{ $op }, 64, false>,
                (64, true) => int1::<{ $op }, 64, true>,
                _ => return None,
            }
        };
    }
    Some(match op {
        "not" => pick!(NOT),
        "neg" if signed => pick!(NEG),
        "abs" if signed => pick!(ABS),
        "popc" => pick!(POPC),
        "clz" => pick!(CLZ),
        "brev" => pick!(BREV),
        "bfind" => pick!(BFIND),
        "bfind.shiftamt" => pick!(BFIND_SHIFT),
        "cnot" => pick!(CNOT),
        _ => return None,
    })
}

/// bfi d, a, b, pos, len: `len` bits of a inserted into b at `pos` (both taken
/// from their low 8 bits), PTX ISA bfi.
fn bfi<const W: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1], i.s[2], i.s[3]], m, |_, [a, b, p, n]| {
        let (pos, len) = ((p & 0xff) as u32, (n & 0xff) as u32);
        // The field's bits that land inside the W-bit result.
        let n = if pos < W as u32 { len.min(W as u32 - pos) } else { 0 };
        let field = ones(n) << pos.min(63);
        mask((b & !field) | ((a << pos.min(63)) & field), W)
    });
    Ok(())
}

/// The low n bits set (n up to 64).
#[inline(always)]
fn ones(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// bfe d, a, pos, len: extract, zero- or sign-extended from the field's top bit.
fn bfe<const W: u8, const S: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1], i.s[2]], m, |_, [a, p, n]| {
        let (pos, len) = ((p & 0xff) as u32, (n & 0xff) as u32);
        let a = mask(a, W);
        let msb = (pos + len).saturating_sub(1).min(W as u32 - 1);
        let sbit = S && len != 0 && a >> msb & 1 != 0;
        // Bits k < n come from a; the rest are the sign (or zero).
        let n = if pos < W as u32 { len.min(W as u32 - pos) } else { 0 };
        let got = if pos < W as u32 { (a >> pos) & ones(n) } else { 0 };
        let fill = if sbit { ones(W as u32) & !ones(n) } else { 0 };
        got | fill
    });
    Ok(())
}

pub fn bitfield(op: &str, w: u32, signed: bool) -> Option<Exec> {
    Some(match (op, w, signed) {
        ("bfi", 32, _) => bfi::<32> as Exec,
        ("bfi", 64, _) => bfi::<64>,
        ("bfe", 32, false) => bfe::<32, false>,
        ("bfe", 32, true) => bfe::<32, true>,
        ("bfe", 64, false) => bfe::<64, false>,
        ("bfe", 64, true) => bfe::<64, true>,
        _ => return None,
    })
}

// Extended precision: the carry flag CC.CF lives in the register slot `cc`.
pub const CC_ADD: u8 = 0;
pub const CC_SUB: u8 = 1;
pub const CC_MAD_LO: u8 = 2;
pub const CC_MAD_HI: u8 = 3;

/// `OP` with carry-in when `CIN`, carry-out written when `COUT` (add.cc, addc,
/// addc.cc, sub.cc, subc(.cc), mad.lo.cc, madc.lo/hi(.cc)). For subtraction the
/// flag is the borrow. `S` (signed types) only changes the high half of a mad's
/// product, "t = a * b" of the instruction type; the addition with c and the
/// carry is on the W-bit words either way.
fn carry<const OP: u8, const W: u8, const CIN: bool, const COUT: bool, const S: bool>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    let (a, b) = (*c.w.r(i.s[0]), *c.w.r(i.s[1]));
    let cadd = if OP >= CC_MAD_LO { *c.w.r(i.s[2]) } else { [0; 32] };
    let cf = *c.w.r(i.aux);
    let mut out = [0u64; 32];
    let mut flag = cf;
    for l in lanes(m) {
        let (ua, ub) = (mask(a[l], W) as u128, mask(b[l], W) as u128);
        let cin = if CIN { cf[l] as u128 & 1 } else { 0 };
        let full: u128 = match OP {
            CC_ADD => ua + ub + cin,
            CC_SUB => ua.wrapping_sub(ub).wrapping_sub(cin),
            CC_MAD_LO => mask((ua * ub) as u64, W) as u128 + mask(cadd[l], W) as u128 + cin,
            _ => {
                let hi = if S {
                    mask(((sx(a[l], W) as i128 * sx(b[l], W) as i128) >> W) as u64, W)
                } else {
                    ((ua * ub) >> W) as u64
                };
                hi as u128 + mask(cadd[l], W) as u128 + cin
            }
        };
        out[l] = mask(full as u64, W);
        if COUT {
            flag[l] = match OP {
                CC_SUB => (ua < ub + cin) as u64,
                _ => (full >> W & 1) as u64,
            };
        }
    }
    let d = c.w.rw(i.d[0]);
    for l in lanes(m) {
        d[l] = out[l];
    }
    if COUT {
        *c.w.rw(i.aux) = flag;
    }
    Ok(())
}

/// (op without modifiers, carry-in, carry-out, signed type) -> exec.
pub fn carry_op(op: &str, w: u32, cin: bool, cout: bool, signed: bool) -> Option<Exec> {
    macro_rules! pick {
        ($op:expr, $s:expr) => {
            match (w, cin, cout) {
                (32, false, true) => carry::<{ $op }, 32, false, true, $s> as Exec,
                (32, true, false) => carry::<{ $op }, 32, true, false, $s>,
                (32, true, true) => carry::<{ $op }, 32, true, true, $s>,
                (64, false, true) => carry::<{ $op }, 64, false, true, $s>,
                (64, true, false) => carry::<{ $op }, 64, true, false, $s>,
                (64, true, true) => carry::<{ $op }, 64, true, true, $s>,
                _ => return None,
            }
        };
    }
    Some(match (op, signed) {
        ("add", _) => pick!(CC_ADD, false),
        ("sub", _) => pick!(CC_SUB, false),
        ("mad.lo", _) => pick!(CC_MAD_LO, false),
        ("mad.hi", false) => pick!(CC_MAD_HI, false),
        ("mad.hi", true) => pick!(CC_MAD_HI, true),
        _ => return None,
    })
}

// Comparisons: integer operators, then the float ones (used by fp.rs too).
pub const EQ: u8 = 0;
pub const NE: u8 = 1;
pub const LT: u8 = 2;
pub const LE: u8 = 3;
pub const GT: u8 = 4;
pub const GE: u8 = 5;
pub const EQU: u8 = 6;
pub const NEU: u8 = 7;
pub const LTU: u8 = 8;
pub const LEU: u8 = 9;
pub const GTU: u8 = 10;
pub const GEU: u8 = 11;
pub const NUM: u8 = 12;
pub const NAN: u8 = 13;

pub fn cmp_code(s: &str, signed_int: bool) -> Option<(u8, Option<bool>)> {
    // Returns the operator and, for lo/ls/hi/hs, that the comparison is unsigned.
    Some(match s {
        "eq" => (EQ, None),
        "ne" => (NE, None),
        "lt" => (LT, None),
        "le" => (LE, None),
        "gt" => (GT, None),
        "ge" => (GE, None),
        "lo" if !signed_int => (LT, Some(false)),
        "ls" if !signed_int => (LE, Some(false)),
        "hi" if !signed_int => (GT, Some(false)),
        "hs" if !signed_int => (GE, Some(false)),
        "equ" => (EQU, None),
        "neu" => (NEU, None),
        "ltu" => (LTU, None),
        "leu" => (LEU, None),
        "gtu" => (GTU, None),
        "geu" => (GEU, None),
        "num" => (NUM, None),
        "nan" => (NAN, None),
        _ => return None,
    })
}

#[inline(always)]
fn icmp<const C: u8, const W: u8, const S: bool>(a: u64, b: u64) -> bool {
    if S {
        let (a, b) = (sx(a, W), sx(b, W));
        match C {
            EQ => a == b,
            NE => a != b,
            LT => a < b,
            LE => a <= b,
            GT => a > b,
            _ => a >= b,
        }
    } else {
        let (a, b) = (mask(a, W), mask(b, W));
        match C {
            EQ => a == b,
            NE => a != b,
            LT => a < b,
            LE => a <= b,
            GT => a > b,
            _ => a >= b,
        }
    }
}

// Boolean combination of setp: none, and, or, xor.
pub const B_NONE: u8 = 0;
pub const B_AND: u8 = 1;
pub const B_OR: u8 = 2;
pub const B_XOR: u8 = 3;

/// Writes setp's p = t BOP c and q = !t BOP c for the lanes in m.
#[inline(always)]
pub fn set_preds<const B: u8>(c: &mut Core<'_>, i: &Inst, m: u32, t: u32) {
    let cm = if B == B_NONE { 0 } else { c.w.preds[i.s[2] as usize] };
    let comb = |x: u32| match B {
        B_AND => x & cm,
        B_OR => x | cm,
        B_XOR => x ^ cm,
        _ => x,
    };
    let p = &mut c.w.preds[i.p[0] as usize];
    *p = (*p & !m) | (comb(t) & m);
    if i.p[1] != NONE {
        let q = &mut c.w.preds[i.p[1] as usize];
        *q = (*q & !m) | (comb(!t) & m);
    }
}

fn setp_int<const C: u8, const W: u8, const S: bool, const B: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let (a, b) = (c.w.r(i.s[0]), c.w.r(i.s[1]));
    let mut t = 0u32;
    for l in 0..32 {
        t |= (icmp::<C, W, S>(a[l], b[l]) as u32) << l;
    }
    set_preds::<B>(c, i, m, t);
    Ok(())
}

pub fn setp_int_op(cmp: u8, w: u32, signed: bool, bop: u8) -> Option<Exec> {
    macro_rules! by_b {
        ($c:expr, $w:expr, $s:expr) => {
            match bop {
                B_NONE => setp_int::<{ $c }, $w, $s, B_NONE> as Exec,
                B_AND => setp_int::<{ $c }, $w, $s, B_AND>,
                B_OR => setp_int::<{ $c }, $w, $s, B_OR>,
                _ => setp_int::<{ $c }, $w, $s, B_XOR>,
            }
        };
    }
    macro_rules! by_ws {
        ($c:expr) => {
            match (w, signed) {
                (16, false) => by_b!($c, 16, false),
                (16, true) => by_b!($c, 16, true),
                (32, false) => by_b!($c, 32, false),
                (32, true) => by_b!($c, 32, true),
                (64, false) => by_b!($c, 64, false),
                (64, true) => by_b!($c, 64, true),
                _ => return None,
            }
        };
    }
    Some(match cmp {
        EQ => by_ws!(EQ),
        NE => by_ws!(NE),
        LT => by_ws!(LT),
        LE => by_ws!(LE),
        GT => by_ws!(GT),
        GE => by_ws!(GE),
        _ => return None,
    })
}

/// selp d, a, b, c: d = c ? a : b.
fn selp<const W: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let p = c.w.preds[i.p[0] as usize];
    lanewise(c.w, i.d[0], [i.s[0], i.s[1]], m, |l, [a, b]| mask(if p >> l & 1 != 0 { a } else { b }, W));
    Ok(())
}

pub fn selp_op(w: u32) -> Option<Exec> {
    Some(match w {
        16 => selp::<16> as Exec,
        32 => selp::<32>,
        64 => selp::<64>,
        _ => return None,
    })
}

fn mov<const W: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [a]| mask(a, W));
    Ok(())
}

pub fn mov_op(w: u32) -> Option<Exec> {
    Some(match w {
        8 => mov::<8> as Exec,
        16 => mov::<16>,
        32 => mov::<32>,
        64 => mov::<64>,
        _ => return None,
    })
}

/// mov.pred d, a (a predicate) or an immediate 0/1 held in a register slot.
fn mov_pred(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let v = if i.s[0] != NONE {
        c.w.preds[i.s[0] as usize]
    } else if i.imm != 0 {
        u32::MAX
    } else {
        0
    };
    let d = &mut c.w.preds[i.p[0] as usize];
    *d = (*d & !m) | (v & m);
    Ok(())
}

pub fn mov_pred_op() -> Exec {
    mov_pred
}

/// Logic on predicates: and/or/xor/not.pred (d in p[0], sources in s as pred slots).
fn pred_logic<const OP: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let a = c.w.preds[i.s[0] as usize];
    let b = if OP == NOT { 0 } else { c.w.preds[i.s[1] as usize] };
    let v = match OP {
        AND => a & b,
        OR => a | b,
        XOR => a ^ b,
        _ => !a,
    };
    let d = &mut c.w.preds[i.p[0] as usize];
    *d = (*d & !m) | (v & m);
    Ok(())
}

pub fn pred_logic_op(op: &str) -> Option<Exec> {
    Some(match op {
        "and" => pred_logic::<AND> as Exec,
        "or" => pred_logic::<OR>,
        "xor" => pred_logic::<XOR>,
        "not" => pred_logic::<NOT>,
        _ => return None,
    })
}

/// `mov.bN d, {a, b, ...}`: elements of `aux` bits, the first in the low bits.
fn pack(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let n = i.imm as usize;
    let w = i.aux as u8;
    // Unused element slots (NONE) read the first element's register instead.
    let s = i.s.map(|x| if x == NONE { i.s[0] } else { x });
    lanewise(c.w, i.d[0], [s[0], s[1], s[2], s[3]], m, |_, v| {
        v[..n].iter().enumerate().fold(0, |acc, (k, &x)| acc | mask(x, w) << (k as u32 * w as u32))
    });
    Ok(())
}

/// `mov.bN {a, b, ...}, d`: the inverse of `pack`.
fn unpack(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let n = i.imm as usize;
    let w = i.aux as u8;
    let src = *c.w.r(i.s[0]);
    for k in 0..n {
        if i.d[k] == NONE {
            continue;
        }
        let d = c.w.rw(i.d[k]);
        for l in lanes(m) {
            d[l] = mask(src[l] >> (k as u32 * w as u32), w);
        }
    }
    Ok(())
}

pub fn pack_op() -> Exec {
    pack
}
pub fn unpack_op() -> Exec {
    unpack
}

/// cvt between integer types: the source read at its width and signedness,
/// optionally clamped (.sat) to the destination's range, then truncated to it and
/// "sign-extended to the destination register width for signed integers, and
/// zero-extended ... for unsigned" (PTX ISA cvt notes).
fn cvt_int<const DW: u8, const DS: bool, const SW: u8, const SS: bool, const SAT: bool>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [a]| {
        let v: i128 = if SS { sx(a, SW) as i128 } else { mask(a, SW) as i128 };
        let v = if SAT {
            let (lo, hi): (i128, i128) =
                if DS { (-(1i128 << (DW - 1)), (1i128 << (DW - 1)) - 1) } else { (0, (1i128 << DW) - 1) };
            v.clamp(lo, hi)
        } else {
            v
        };
        if DS {
            sx(v as u64, DW) as u64
        } else {
            mask(v as u64, DW)
        }
    });
    Ok(())
}

pub fn cvt_int_op(dw: u32, ds: bool, sw: u32, ss: bool, sat: bool) -> Option<Exec> {
    macro_rules! by_src {
        ($dw:expr, $ds:expr) => {
            match (sw, ss, sat) {
                (8, false, false) => cvt_int::<$dw, $ds, 8, false, false> as Exec,
                (8, true, false) => cvt_int::<$dw, $ds, 8, true, false>,
                (16, false, false) => cvt_int::<$dw, $ds, 16, false, false>,
                (16, true, false) => cvt_int::<$dw, $ds, 16, true, false>,
                (32, false, false) => cvt_int::<$dw, $ds, 32, false, false>,
                (32, true, false) => cvt_int::<$dw, $ds, 32, true, false>,
                (64, false, false) => cvt_int::<$dw, $ds, 64, false, false>,
                (64, true, false) => cvt_int::<$dw, $ds, 64, true, false>,
                (8, false, true) => cvt_int::<$dw, $ds, 8, false, true>,
                (8, true, true) => cvt_int::<$dw, $ds, 8, true, true>,
                (16, false, true) => cvt_int::<$dw, $ds, 16, false, true>,
                (16, true, true) => cvt_int::<$dw, $ds, 16, true, true>,
                (32, false, true) => cvt_int::<$dw, $ds, 32, false, true>,
                (32, true, true) => cvt_int::<$dw, $ds, 32, true, true>,
                (64, false, true) => cvt_int::<$dw, $ds, 64, false, true>,
                (64, true, true) => cvt_int::<$dw, $ds, 64, true, true>,
                _ => return None,
            }
        };
    }
    Some(match (dw, ds) {
        (8, false) => by_src!(8, false),
        (8, true) => by_src!(8, true),
        (16, false) => by_src!(16, false),
        (16, true) => by_src!(16, true),
        (32, false) => by_src!(32, false),
        (32, true) => by_src!(32, true),
        (64, false) => by_src!(64, false),
        (64, true) => by_src!(64, true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values worked out by hand from the PTX ISA's definitions.
    #[test]
    fn arithmetic_by_hand() {
        assert_eq!(bin::<ADD, 32, true>(0xffff_ffff, 1), 0);
        assert_eq!(bin::<MUL_HI, 32, false>(0x8000_0000, 4), 2);
        assert_eq!(bin::<MUL_HI, 32, true>(0xffff_fffe, 3), 0xffff_ffff); // -2*3 = -6: high word -1
        assert_eq!(bin::<MUL_WIDE, 32, true>(0xffff_ffff, 2), (-2i64) as u64);
        assert_eq!(bin::<MUL_WIDE, 32, false>(0xffff_ffff, 2), 0x1_ffff_fffe);
        assert_eq!(bin::<DIV, 32, true>((-7i32) as u32 as u64, 2), (-3i32) as u32 as u64);
        assert_eq!(bin::<REM, 32, true>((-7i32) as u32 as u64, 2), (-1i32) as u32 as u64);
        assert_eq!(bin::<SHR, 32, true>(0x8000_0000, 40), 0xffff_ffff);
        assert_eq!(bin::<SHR, 32, false>(0x8000_0000, 40), 0);
        assert_eq!(bin::<SHL, 32, false>(1, 32), 0);
        assert_eq!(bin::<MIN, 32, true>(0xffff_ffff, 1), 0xffff_ffff);
        assert_eq!(bin::<MIN, 32, false>(0xffff_ffff, 1), 1);
        assert_eq!(bin::<ADD_SAT, 32, true>(0x7fff_ffff, 1), 0x7fff_ffff);
    }

    #[test]
    fn bit_ops_by_hand() {
        assert_eq!(un::<CLZ, 32, false>(1), 31);
        assert_eq!(un::<CLZ, 64, false>(0), 64);
        assert_eq!(un::<CLZ, 32, false>(0), 32);
        assert_eq!(un::<BREV, 32, false>(1), 0x8000_0000);
        assert_eq!(un::<BFIND, 32, false>(0x10), 4);
        assert_eq!(un::<BFIND_SHIFT, 32, false>(0x10), 27);
        assert_eq!(un::<BFIND, 32, false>(0), 0xffff_ffff);
        assert_eq!(un::<BFIND, 32, true>(0xffff_ffff), 0xffff_ffff); // -1: no non-sign bit
        assert_eq!(un::<BFIND, 32, true>(0xffff_fff0), 3);
        assert_eq!(un::<POPC, 64, false>(u64::MAX), 64);
        assert_eq!(un::<ABS, 32, true>(0x8000_0000), 0x8000_0000);
    }
}
