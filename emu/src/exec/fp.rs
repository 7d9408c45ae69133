//! Floating-point instructions (PTX ISA §9.7.3 f32/f64, §9.7.4 half, cvt of §9.7.9):
//! IEEE 754 arithmetic with the four rounding modes, `.ftz`, `.sat`, f32 NaN
//! results made canonical (the ISA leaves them unspecified; the GPU gives
//! 0x7fffffff), and the `.approx` functions computed in f64 and rounded, so within
//! any error the ISA allows.
//!
//! Directed rounding is exact: the operation is done in f64 with its error term
//! (TwoSum, an exact product or remainder), then rounded once to the target with
//! the sign of that error breaking what f64 alone cannot decide.

use super::alu::{
    mask, sx, B_AND, B_NONE, B_OR, B_XOR, EQ, EQU, GE, GEU, GT, GTU, LE, LEU, LT, LTU, NAN, NE, NEU, NUM,
};
use super::{lanewise, Core};
use crate::error::Fault;
use crate::ir::Exec;
use crate::ir::Inst;

type R = Result<(), Fault>;

pub const RN: u8 = 0;
pub const RZ: u8 = 1;
pub const RM: u8 = 2;
pub const RP: u8 = 3;

pub fn rounding(s: &str) -> Option<u8> {
    Some(match s {
        "rn" | "rni" => RN,
        "rz" | "rzi" => RZ,
        "rm" | "rmi" => RM,
        "rp" | "rpi" => RP,
        _ => return None,
    })
}

/// The canonical NaN the emulator produces for f32 results ("Single-precision
/// instructions return an unspecified NaN", PTX ISA §9.7.3).
pub const NAN32: u32 = 0x7fff_ffff;

#[inline(always)]
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

#[inline(always)]
fn ftz64(x: f64) -> f64 {
    if x.is_subnormal() {
        f64::from_bits(x.to_bits() & 0x8000_0000_0000_0000)
    } else {
        x
    }
}

fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

fn next_up64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

#[inline(always)]
fn sign(e: f64) -> i32 {
    if e > 0.0 {
        1
    } else if e < 0.0 {
        -1
    } else {
        0
    }
}

/// Exact a + b as s + e (Knuth's TwoSum).
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Rounds the exact value `s + tail` (tail's sign only; |tail| below half an f64
/// ulp of s) to f32 in mode `rnd`.
pub fn round32(s: f64, tail: i32, rnd: u8) -> f32 {
    if s.is_nan() {
        return f32::from_bits(NAN32);
    }
    if s.is_infinite() {
        return s as f32;
    }
    let r = s as f32;
    let rd = r as f64;
    if rd == s {
        // s is an f32: only the tail can move the result.
        return match (rnd, tail) {
            (_, 0) | (RN, _) => r,
            (RM, t) if t < 0 => next_down32(r),
            (RP, t) if t > 0 => next_up32(r),
            (RZ, t) if (r > 0.0 && t < 0) || (r < 0.0 && t > 0) => {
                if r > 0.0 {
                    next_down32(r)
                } else {
                    next_up32(r)
                }
            }
            (RZ, t) if r == 0.0 && t != 0 => r,
            _ => r,
        };
    }
    let (lo, hi) = if rd < s { (r, next_up32(r)) } else { (next_down32(r), r) };
    match rnd {
        RM => lo,
        RP => hi,
        RZ => {
            if s > 0.0 {
                lo
            } else {
                hi
            }
        }
        _ => {
            if hi.is_infinite() || lo.is_infinite() {
                // Rounding at the top of the range: f32::MAX + half an ulp overflows.
                return r;
            }
            let mid = (lo as f64 + hi as f64) / 2.0;
            let toward = if s != mid { sign(s - mid) } else { tail };
            match toward {
                1 => hi,
                -1 => lo,
                _ => {
                    if lo.to_bits() & 1 == 0 {
                        lo
                    } else {
                        hi
                    }
                }
            }
        }
    }
}

/// The sign of an exact zero sum (IEEE 754 §6.3): x + x keeps the sign of x;
/// otherwise +0, or -0 when rounding toward negative infinity.
#[inline(always)]
fn zero_sum(s: f64, x: f64, y: f64, rnd: u8) -> f64 {
    if x == 0.0 && y == 0.0 && x.is_sign_negative() == y.is_sign_negative() {
        s
    } else if rnd == RM {
        -0.0
    } else {
        0.0
    }
}

/// A finite f64 operation whose exact result is beyond f64::MAX: infinity, or
/// the largest finite value when the mode rounds toward zero for that sign.
fn overflow64(neg: bool, rnd: u8) -> f64 {
    let to_max = matches!((rnd, neg), (RZ, _) | (RM, false) | (RP, true));
    let m = if to_max { f64::MAX } else { f64::INFINITY };
    if neg {
        -m
    } else {
        m
    }
}

/// Rounds the exact value `s + e` (s the f64 nearest to it) in mode `rnd`.
fn round64(s: f64, e: f64, rnd: u8) -> f64 {
    if !s.is_finite() {
        return s;
    }
    match (rnd, sign(e)) {
        (RN, _) | (_, 0) => s,
        (RM, -1) => next_down64(s),
        (RP, 1) => next_up64(s),
        (RZ, t) if (s > 0.0 && t < 0) || (s < 0.0 && t > 0) => {
            if s > 0.0 {
                next_down64(s)
            } else {
                next_up64(s)
            }
        }
        _ => s,
    }
}

// f32 operations.
pub const ADD: u8 = 0;
pub const SUB: u8 = 1;
pub const MUL: u8 = 2;
pub const DIV: u8 = 3;
pub const MIN: u8 = 4;
pub const MAX: u8 = 5;
pub const COPYSIGN: u8 = 6;
pub const DIV_APPROX: u8 = 7;
pub const DIV_FULL: u8 = 8;

/// The bits of an f32 result, a NaN made canonical. Done on the bits: a float
/// select between two NaNs may legally be folded by the compiler into either.
#[inline(always)]
fn canon32(x: f32) -> u64 {
    let b = x.to_bits();
    (if b & 0x7fff_ffff > 0x7f80_0000 { NAN32 } else { b }) as u64
}

#[inline(always)]
fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// min/max of PTX: a NaN operand yields the other; -0 orders below +0.
#[inline(always)]
fn fmin<T: Copy + PartialOrd>(a: T, b: T, a_nan: bool, b_nan: bool, a_neg: bool) -> Option<T> {
    match (a_nan, b_nan) {
        (true, true) => None,
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ => Some(if a < b || (a == b && a_neg) { a } else { b }),
    }
}

#[inline(always)]
fn f32_bin<const OP: u8, const RND: u8>(a: f32, b: f32) -> f32 {
    match OP {
        ADD | SUB => {
            let b = if OP == SUB { -b } else { b };
            if RND == RN {
                a + b
            } else {
                let (s, e) = two_sum(a as f64, b as f64);
                if s == 0.0 {
                    return zero_sum(s, a as f64, b as f64, RND) as f32;
                }
                round32(s, sign(e), RND)
            }
        }
        MUL => {
            if RND == RN {
                a * b
            } else {
                round32(a as f64 * b as f64, 0, RND)
            }
        }
        DIV => {
            if RND == RN {
                a / b
            } else {
                let (a, b) = (a as f64, b as f64);
                let q = a / b;
                if !q.is_finite() || q == 0.0 {
                    round32(q, 0, RND)
                } else {
                    let r = (-q).mul_add(b, a);
                    round32(q, sign(r) * sign(b), RND)
                }
            }
        }
        // div.approx: within 2 ulp for |b| in [2^-126, 2^126]; "For 2^126 < |b| <
        // 2^128, if a is infinity, div.approx.f32 returns NaN, otherwise it returns a
        // sign-preserving zero". div.full: 2 ulp everywhere. The correctly rounded
        // quotient is within both bounds.
        DIV_APPROX if b.abs() > 2f32.powi(126) && b.is_finite() && !a.is_nan() => {
            if a.is_infinite() {
                f32::NAN
            } else if a.is_sign_negative() != b.is_sign_negative() {
                -0.0
            } else {
                0.0
            }
        }
        DIV_APPROX | DIV_FULL => a / b,
        MIN => fmin(a, b, a.is_nan(), b.is_nan(), a.is_sign_negative()).unwrap_or(f32::from_bits(NAN32)),
        MAX => fmin(-a, -b, a.is_nan(), b.is_nan(), (-a).is_sign_negative())
            .map_or(f32::from_bits(NAN32), |v| -v),
        COPYSIGN => b.copysign(a),
        _ => unreachable!(),
    }
}

fn fbin32<const OP: u8, const RND: u8, const FTZ: bool, const SAT: bool>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1]], m, |_, [a, b]| {
        let (mut x, mut y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
        if FTZ {
            x = ftz32(x);
            y = ftz32(y);
        }
        let mut r = f32_bin::<OP, RND>(x, y);
        if FTZ {
            r = ftz32(r);
        }
        if SAT {
            r = sat32(r);
        }
        if OP == COPYSIGN {
            r.to_bits() as u64
        } else {
            canon32(r)
        }
    });
    Ok(())
}

pub fn f32_binary(op: &str, rnd: u8, ftz: bool, sat: bool) -> Option<Exec> {
    macro_rules! mods {
        ($op:expr, $rnd:expr) => {
            match (ftz, sat) {
                (false, false) => fbin32::<{ $op }, { $rnd }, false, false> as Exec,
                (true, false) => fbin32::<{ $op }, { $rnd }, true, false>,
                (false, true) => fbin32::<{ $op }, { $rnd }, false, true>,
                (true, true) => fbin32::<{ $op }, { $rnd }, true, true>,
            }
        };
    }
    macro_rules! rnds {
        ($op:expr) => {
            match rnd {
                RN => mods!($op, RN),
                RZ => mods!($op, RZ),
                RM => mods!($op, RM),
                _ => mods!($op, RP),
            }
        };
    }
    Some(match op {
        "add" => rnds!(ADD),
        "sub" => rnds!(SUB),
        "mul" => rnds!(MUL),
        "div" if !sat => rnds!(DIV),
        "div.approx" if !sat => mods!(DIV_APPROX, RN),
        "div.full" if !sat => mods!(DIV_FULL, RN),
        "min" if !sat && rnd == RN => mods!(MIN, RN),
        "max" if !sat && rnd == RN => mods!(MAX, RN),
        "copysign" if !sat && !ftz && rnd == RN => mods!(COPYSIGN, RN),
        _ => return None,
    })
}

#[inline(always)]
fn fma32_op<const RND: u8>(a: f32, b: f32, c: f32) -> f32 {
    if RND == RN {
        a.mul_add(b, c)
    } else {
        let p = a as f64 * b as f64; // exact
        let (s, e) = two_sum(p, c as f64);
        if s == 0.0 {
            return zero_sum(s, p, c as f64, RND) as f32;
        }
        round32(s, sign(e), RND)
    }
}

#[inline(always)]
fn fma32<const RND: u8, const FTZ: bool, const SAT: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1], i.s[2]], m, |_, [a, b, cc]| {
        let f = |v: u64| {
            let x = f32::from_bits(v as u32);
            if FTZ {
                ftz32(x)
            } else {
                x
            }
        };
        let mut r = fma32_op::<RND>(f(a), f(b), f(cc));
        if FTZ {
            r = ftz32(r);
        }
        if SAT {
            r = sat32(r);
        }
        canon32(r)
    });
    Ok(())
}

/// fma.rn.f32 compiled with the FMA instruction set: without it `mul_add` is a
/// library call per lane, the emulator's single hottest cost (fma.rn.f32 is the
/// most frequent instruction in our PTX). Same semantics: both are IEEE fma.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma32_rn_fma<const FTZ: bool, const SAT: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    fma32::<RN, FTZ, SAT>(c, i, m)
}

#[cfg(target_arch = "x86_64")]
fn fma32_rn_hw<const FTZ: bool, const SAT: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    // SAFETY: chosen only where the CPU has FMA (`f32_fma`).
    unsafe { fma32_rn_fma::<FTZ, SAT>(c, i, m) }
}

pub fn f32_fma(rnd: u8, ftz: bool, sat: bool) -> Exec {
    #[cfg(target_arch = "x86_64")]
    if rnd == RN && std::arch::is_x86_feature_detected!("fma") {
        return match (ftz, sat) {
            (false, false) => fma32_rn_hw::<false, false>,
            (true, false) => fma32_rn_hw::<true, false>,
            (false, true) => fma32_rn_hw::<false, true>,
            (true, true) => fma32_rn_hw::<true, true>,
        };
    }
    macro_rules! mods {
        ($rnd:expr) => {
            match (ftz, sat) {
                (false, false) => fma32::<{ $rnd }, false, false> as Exec,
                (true, false) => fma32::<{ $rnd }, true, false>,
                (false, true) => fma32::<{ $rnd }, false, true>,
                (true, true) => fma32::<{ $rnd }, true, true>,
            }
        };
    }
    match rnd {
        RN => mods!(RN),
        RZ => mods!(RZ),
        RM => mods!(RM),
        _ => mods!(RP),
    }
}

// Unary f32 operations.
pub const NEG: u8 = 0;
pub const ABS: u8 = 1;
pub const RCP: u8 = 2;
pub const SQRT: u8 = 3;
pub const RSQRT: u8 = 4;
pub const EX2: u8 = 5;
pub const LG2: u8 = 6;
pub const SIN: u8 = 7;
pub const COS: u8 = 8;
pub const TANH: u8 = 9;
pub const RCP_APPROX: u8 = 10;
pub const SQRT_APPROX: u8 = 11;

#[inline(always)]
fn f32_un<const OP: u8, const RND: u8>(a: f32) -> f32 {
    let x = a as f64;
    match OP {
        NEG => -a,
        ABS => a.abs(),
        RCP => f32_bin::<DIV, RND>(1.0, a),
        SQRT => {
            if RND == RN {
                a.sqrt()
            } else {
                let s = x.sqrt();
                if !s.is_finite() || s == 0.0 {
                    round32(s, 0, RND)
                } else {
                    round32(s, sign((-s).mul_add(s, x)), RND)
                }
            }
        }
        // The approximations, from f64 and rounded: within the ISA's bounds for
        // each (rcp/sqrt/rsqrt.approx 1 ulp or better, ex2 2 ulp, lg2 / sin / cos
        // absolute bounds).
        RCP_APPROX => (1.0 / x) as f32,
        SQRT_APPROX => x.sqrt() as f32,
        RSQRT => (1.0 / x.sqrt()) as f32,
        EX2 => x.exp2() as f32,
        LG2 => x.log2() as f32,
        SIN => x.sin() as f32,
        COS => x.cos() as f32,
        TANH => x.tanh() as f32,
        _ => unreachable!(),
    }
}

fn fun32<const OP: u8, const RND: u8, const FTZ: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [a]| {
        let mut x = f32::from_bits(a as u32);
        if FTZ {
            x = ftz32(x);
        }
        let mut r = f32_un::<OP, RND>(x);
        if FTZ {
            r = ftz32(r);
        }
        if OP == NEG || OP == ABS {
            r.to_bits() as u64
        } else {
            canon32(r)
        }
    });
    Ok(())
}

pub fn f32_unary(op: &str, rnd: u8, ftz: bool) -> Option<Exec> {
    macro_rules! z {
        ($op:expr, $rnd:expr) => {
            if ftz {
                fun32::<{ $op }, { $rnd }, true> as Exec
            } else {
                fun32::<{ $op }, { $rnd }, false> as Exec
            }
        };
    }
    macro_rules! rnds {
        ($op:expr) => {
            match rnd {
                RN => z!($op, RN),
                RZ => z!($op, RZ),
                RM => z!($op, RM),
                _ => z!($op, RP),
            }
        };
    }
    Some(match op {
        "neg" => z!(NEG, RN),
        "abs" => z!(ABS, RN),
        "rcp" => rnds!(RCP),
        "sqrt" => rnds!(SQRT),
        "rcp.approx" => z!(RCP_APPROX, RN),
        "sqrt.approx" => z!(SQRT_APPROX, RN),
        "rsqrt.approx" => z!(RSQRT, RN),
        "ex2.approx" => z!(EX2, RN),
        "lg2.approx" => z!(LG2, RN),
        "sin.approx" => z!(SIN, RN),
        "cos.approx" => z!(COS, RN),
        "tanh.approx" if !ftz => z!(TANH, RN),
        _ => return None,
    })
}

// f64 operations.
#[inline(always)]
fn f64_bin<const OP: u8, const RND: u8>(a: f64, b: f64) -> f64 {
    match OP {
        // Directed modes: the f64 result to nearest and its exact error (TwoSum, an
        // fma residual) decide the neighbour; a finite overflow is rounded as the
        // mode says. (Results deep in the subnormal range, where the error itself
        // underflows, may be off by one subnormal ulp in the directed modes.)
        ADD | SUB => {
            let b = if OP == SUB { -b } else { b };
            let (s, e) = two_sum(a, b);
            if RND == RN {
                s
            } else if s.is_infinite() && a.is_finite() && b.is_finite() {
                overflow64(s < 0.0, RND)
            } else if s == 0.0 {
                zero_sum(s, a, b, RND)
            } else {
                round64(s, e, RND)
            }
        }
        MUL => {
            let p = a * b;
            if RND == RN {
                p
            } else if p.is_infinite() && a.is_finite() && b.is_finite() {
                overflow64(p < 0.0, RND)
            } else if !p.is_finite() {
                p
            } else {
                round64(p, a.mul_add(b, -p), RND)
            }
        }
        DIV => {
            let q = a / b;
            if RND == RN {
                q
            } else if q.is_infinite() && a.is_finite() && b != 0.0 {
                overflow64(q < 0.0, RND)
            } else if !q.is_finite() {
                q
            } else {
                // The remainder a - q*b is exact; a quotient that underflowed to 0
                // has remainder a, which still gives the side.
                let r = (-q).mul_add(b, a);
                round64(q, r * b.signum(), RND)
            }
        }
        MIN => fmin(a, b, a.is_nan(), b.is_nan(), a.is_sign_negative()).unwrap_or(f64::NAN),
        MAX => fmin(-a, -b, a.is_nan(), b.is_nan(), (-a).is_sign_negative()).map_or(f64::NAN, |v| -v),
        COPYSIGN => b.copysign(a),
        _ => unreachable!(),
    }
}

fn fbin64<const OP: u8, const RND: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1]], m, |_, [a, b]| {
        f64_bin::<OP, RND>(f64::from_bits(a), f64::from_bits(b)).to_bits()
    });
    Ok(())
}

pub fn f64_binary(op: &str, rnd: u8) -> Option<Exec> {
    macro_rules! rnds {
        ($op:expr) => {
            match rnd {
                RN => fbin64::<{ $op }, RN> as Exec,
                RZ => fbin64::<{ $op }, RZ>,
                RM => fbin64::<{ $op }, RM>,
                _ => fbin64::<{ $op }, RP>,
            }
        };
    }
    Some(match op {
        "add" => rnds!(ADD),
        "sub" => rnds!(SUB),
        "mul" => rnds!(MUL),
        "div" => rnds!(DIV),
        "min" if rnd == RN => fbin64::<MIN, RN>,
        "max" if rnd == RN => fbin64::<MAX, RN>,
        "copysign" if rnd == RN => fbin64::<COPYSIGN, RN>,
        _ => return None,
    })
}

fn fma64(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1], i.s[2]], m, |_, [a, b, cc]| {
        f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(cc)).to_bits()
    });
    Ok(())
}

/// fma.f64: round to nearest only. The directed modes need the exact error of
/// an fma, which this emulator does not compute; they are refused at load.
pub fn f64_fma(rnd: u8) -> Option<Exec> {
    (rnd == RN).then_some(fma64 as Exec)
}

pub const RCP_APPROX_FTZ: u8 = 12;

#[inline(always)]
fn f64_un<const OP: u8, const RND: u8>(a: f64) -> f64 {
    match OP {
        NEG => -a,
        ABS => a.abs(),
        RCP => f64_bin::<DIV, RND>(1.0, a),
        SQRT => {
            let s = a.sqrt();
            if RND == RN || !s.is_finite() || s == 0.0 {
                s
            } else {
                round64(s, (-s).mul_add(s, a), RND)
            }
        }
        // rcp.approx.ftz.f64 (PTX ISA §9.7.3.14): "tmp = a[63:32]; d[63:32] = 1.0 /
        // tmp; d[31:0] = 0", subnormal inputs and results flushed, NaN to the
        // canonical 0x7fffffff00000000. The ISA gives no error bound; the reciprocal
        // of the upper word, truncated to its upper word, is the approximation here.
        RCP_APPROX_FTZ => {
            const HI: u64 = 0xffff_ffff_0000_0000;
            let t = ftz64(f64::from_bits(a.to_bits() & HI));
            if t.is_nan() {
                return f64::from_bits(0x7fff_ffff_0000_0000);
            }
            f64::from_bits(ftz64(1.0 / t).to_bits() & HI)
        }
        // rsqrt.approx.f64: exact-then-rounded is within any error it may have.
        RSQRT => 1.0 / a.sqrt(),
        _ => unreachable!(),
    }
}

fn fun64<const OP: u8, const RND: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [a]| f64_un::<OP, RND>(f64::from_bits(a)).to_bits());
    Ok(())
}

pub fn f64_unary(op: &str, rnd: u8, ftz: bool) -> Option<Exec> {
    macro_rules! rnds {
        ($op:expr) => {
            match rnd {
                RN => fun64::<{ $op }, RN> as Exec,
                RZ => fun64::<{ $op }, RZ>,
                RM => fun64::<{ $op }, RM>,
                _ => fun64::<{ $op }, RP>,
            }
        };
    }
    Some(match (op, ftz) {
        ("neg", false) => fun64::<NEG, RN>,
        ("abs", false) => fun64::<ABS, RN>,
        ("rcp", false) => rnds!(RCP),
        ("sqrt", false) => rnds!(SQRT),
        ("rcp.approx", true) => fun64::<RCP_APPROX_FTZ, RN>,
        ("rsqrt.approx", false) => fun64::<RSQRT, RN>,
        _ => return None,
    })
}

#[inline(always)]
fn fcmp<const C: u8>(a: f64, b: f64) -> bool {
    let nan = a.is_nan() || b.is_nan();
    match C {
        EQ => !nan && a == b,
        NE => !nan && a != b,
        LT => !nan && a < b,
        LE => !nan && a <= b,
        GT => !nan && a > b,
        GE => !nan && a >= b,
        EQU => nan || a == b,
        NEU => nan || a != b,
        LTU => nan || a < b,
        LEU => nan || a <= b,
        GTU => nan || a > b,
        GEU => nan || a >= b,
        NUM => !nan,
        NAN => nan,
        _ => unreachable!(),
    }
}

fn setp_f<const C: u8, const F64: bool, const FTZ: bool, const B: u8>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    let (a, b) = (c.w.r(i.s[0]), c.w.r(i.s[1]));
    let val = |v: u64| {
        if F64 {
            f64::from_bits(v)
        } else {
            let x = f32::from_bits(v as u32);
            (if FTZ { ftz32(x) } else { x }) as f64
        }
    };
    let mut t = 0u32;
    for l in 0..32 {
        t |= (fcmp::<C>(val(a[l]), val(b[l])) as u32) << l;
    }
    super::alu::set_preds::<B>(c, i, m, t);
    Ok(())
}

pub fn setp_float(cmp: u8, f64: bool, ftz: bool, bop: u8) -> Option<Exec> {
    macro_rules! by_b {
        ($c:expr, $f:expr, $z:expr) => {
            match bop {
                B_NONE => setp_f::<{ $c }, $f, $z, B_NONE> as Exec,
                B_AND => setp_f::<{ $c }, $f, $z, B_AND>,
                B_OR => setp_f::<{ $c }, $f, $z, B_OR>,
                _ => setp_f::<{ $c }, $f, $z, B_XOR>,
            }
        };
    }
    macro_rules! by_t {
        ($c:expr) => {
            match (f64, ftz) {
                (false, false) => by_b!($c, false, false),
                (false, true) => by_b!($c, false, true),
                (true, false) => by_b!($c, true, false),
                (true, true) => return None,
            }
        };
    }
    Some(match cmp {
        EQ => by_t!(EQ),
        NE => by_t!(NE),
        LT => by_t!(LT),
        LE => by_t!(LE),
        GT => by_t!(GT),
        GE => by_t!(GE),
        EQU => by_t!(EQU),
        NEU => by_t!(NEU),
        LTU => by_t!(LTU),
        LEU => by_t!(LEU),
        GTU => by_t!(GTU),
        GEU => by_t!(GEU),
        NUM => by_t!(NUM),
        NAN => by_t!(NAN),
        _ => return None,
    })
}

// Conversions with a float on either side. Kinds of operand:
pub const K_U: u8 = 0;
pub const K_S: u8 = 1;
pub const K_F16: u8 = 2;
pub const K_BF16: u8 = 3;
pub const K_F32: u8 = 4;
pub const K_F64: u8 = 5;

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

fn f16_to_f64(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let f = (h & 0x3ff) as f64;
    match e {
        0 => s * f * 2f64.powi(-24),
        31 => {
            if f == 0.0 {
                s * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => s * (1.0 + f / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The binade exponent of a finite non-zero f64, from its bits (f64 subnormals
/// report -1023; they lie far below both half types' range).
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// f32 to bf16 or f16 bits, in mode rnd, from the exact f64 value.
fn to_half(x: f64, bf: bool, rnd: u8) -> u16 {
    let (mant, emin, emax) = if bf { (7, -126, 127) } else { (10, -14, 15) };
    if x.is_nan() {
        // The canonical NaN of both formats.
        return 0x7fff;
    }
    let neg = x.is_sign_negative();
    let a = x.abs();
    let sbit: u16 = if neg { 0x8000 } else { 0 };
    let inf: u16 = if bf { 0x7f80 } else { 0x7c00 };
    if a.is_infinite() {
        return sbit | inf;
    }
    if a == 0.0 {
        return sbit;
    }
    // Quantum at a's binade (subnormals share emin's quantum).
    let e = exponent(a).max(emin);
    let q = 2f64.powi(e - mant);
    let n = a / q; // exact: a has at most 53 bits and q is a power of two
    let lo = n.floor();
    let frac = n - lo;
    let up = match rnd {
        RZ => false,
        RM => neg && frac > 0.0,
        RP => !neg && frac > 0.0,
        _ => frac > 0.5 || (frac == 0.5 && (lo as u64) & 1 == 1),
    };
    let mag = (lo + up as u8 as f64) * q;
    let max = (2.0 - 2f64.powi(-mant)) * 2f64.powi(emax);
    if mag > max {
        // Overflow: infinity unless the mode rounds toward zero for this sign.
        let to_max = rnd == RZ || (rnd == RM && !neg) || (rnd == RP && neg);
        return if to_max { sbit | (inf - 1) } else { sbit | inf };
    }
    let bits = if bf {
        (mag as f32).to_bits() >> 16
    } else if mag < 2f64.powi(emin) {
        (mag / 2f64.powi(emin - mant)) as u32
    } else {
        let e2 = exponent(mag);
        let m = (mag / 2f64.powi(e2 - mant)) as u32 - (1 << mant);
        (((e2 + 15) as u32) << mant) | m
    };
    sbit | bits as u16
}

/// An integer rounded once to `prec` significant bits in mode rnd; exact as an f64
/// for prec <= 53. (Converting to f64 first and rounding again would round twice.)
fn round_int(n: i128, prec: u32, rnd: u8) -> f64 {
    let a = n.unsigned_abs();
    let bits = 128 - a.leading_zeros();
    let mag = if bits <= prec {
        a
    } else {
        let k = bits - prec;
        let (lo, rem, half) = (a >> k, a & ((1 << k) - 1), 1u128 << (k - 1));
        let up = match rnd {
            RZ => false,
            RM => n < 0 && rem != 0,
            RP => n > 0 && rem != 0,
            _ => rem > half || (rem == half && lo & 1 == 1),
        };
        (lo + up as u128) << k
    };
    // mag has at most prec + 1 significant bits: exact in an f64.
    if n < 0 {
        -(mag as f64)
    } else {
        mag as f64
    }
}

#[inline(always)]
fn sat64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Rounds a float to an integral value in mode rnd (rni/rzi/rmi/rpi).
#[inline(always)]
fn integral(x: f64, rnd: u8) -> f64 {
    match rnd {
        RZ => x.trunc(),
        RM => x.floor(),
        RP => x.ceil(),
        _ => x.round_ties_even(),
    }
}

/// A float source as an exact f64, with .ftz applied to f32.
#[inline(always)]
fn read_float<const SK: u8, const FTZ: bool>(v: u64) -> f64 {
    match SK {
        K_F16 => f16_to_f64(v as u16),
        K_BF16 => bf16_to_f32(v as u16) as f64,
        K_F32 => {
            let x = f32::from_bits(v as u32);
            (if FTZ { ftz32(x) } else { x }) as f64
        }
        _ => f64::from_bits(v),
    }
}

/// cvt with at least one float type. `IRND` marks the integer-rounding forms
/// (.rni and friends) of float-to-float and float-to-int conversions.
#[allow(clippy::too_many_arguments)]
fn cvt_f<
    const DK: u8,
    const DW: u8,
    const SK: u8,
    const SW: u8,
    const RND: u8,
    const IRND: bool,
    const FTZ: bool,
    const SAT: bool,
>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    lanewise(c.w, i.d[0], [i.s[0]], m, |_, [v]| {
        match (SK, DK) {
            (K_U | K_S, _) => {
                // Integer to float: rounded once, from the exact integer, to the
                // destination's precision.
                let n: i128 = if SK == K_S { sx(v, SW) as i128 } else { mask(v, SW) as i128 };
                let prec = match DK {
                    K_F16 => 11,
                    K_BF16 => 8,
                    K_F32 => 24,
                    _ => 53,
                };
                let mut x = round_int(n, prec, RND);
                if SAT {
                    x = sat64(x);
                }
                match DK {
                    K_F32 => (x as f32).to_bits() as u64, // exact: |n| < 2^64
                    K_F64 => x.to_bits(),
                    _ => to_half(x, DK == K_BF16, RND) as u64,
                }
            }
            (_, K_U | K_S) => {
                // Float to integer: rounded as asked and clamped to the range. NaN
                // gives 0, except from .f64 or to a 64-bit type: 1 << (width - 1)
                // (PTX ISA cvt, Integer Notes).
                let x = read_float::<SK, FTZ>(v);
                let n: u64 = if x.is_nan() {
                    if SK == K_F64 || DW == 64 {
                        1 << (DW - 1)
                    } else {
                        0
                    }
                } else {
                    let r = integral(x, RND);
                    let (lo, hi): (f64, f64) = if DK == K_S {
                        (-(2f64.powi(DW as i32 - 1)), 2f64.powi(DW as i32 - 1) - 1.0)
                    } else {
                        (0.0, 2f64.powi(DW as i32) - 1.0)
                    };
                    // `as` saturates where hi rounds up to a power of two (64 bits).
                    let r = r.clamp(lo, hi);
                    if DK == K_S {
                        r as i64 as u64
                    } else {
                        r as u64
                    }
                };
                // Signed results are sign-extended to the register, others
                // zero-extended (cvt notes).
                if DK == K_S {
                    sx(n, DW) as u64
                } else {
                    mask(n, DW)
                }
            }
            _ => {
                let x = read_float::<SK, FTZ>(v);
                let x = if IRND { integral(x, RND) } else { x };
                match DK {
                    K_F32 => {
                        let mut r = if SK == K_F64 && !IRND { round32(x, 0, RND) } else { x as f32 };
                        if FTZ {
                            r = ftz32(r);
                        }
                        if SAT {
                            r = sat32(r);
                        }
                        canon32(r)
                    }
                    K_F64 => (if SAT { sat64(x) } else { x }).to_bits(),
                    // Clamping before rounding is the same as after: 0 and 1 are
                    // representable and rounding is monotonic.
                    _ => to_half(if SAT { sat64(x) } else { x }, DK == K_BF16, RND) as u64,
                }
            }
        }
    });
    Ok(())
}

/// Picks the cvt for (dst kind, width) <- (src kind, width) with modifiers.
#[allow(clippy::too_many_arguments)]
pub fn cvt_float(
    dk: u8,
    dw: u32,
    sk: u8,
    sw: u32,
    rnd: u8,
    irnd: bool,
    ftz: bool,
    sat: bool,
) -> Option<Exec> {
    macro_rules! flags {
        ($dk:expr, $dw:expr, $sk:expr, $sw:expr, $r:expr) => {
            match (irnd, ftz, sat) {
                (false, false, false) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, false, false, false> as Exec,
                (false, true, false) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, false, true, false>,
                (false, false, true) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, false, false, true>,
                (false, true, true) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, false, true, true>,
                (true, false, false) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, true, false, false>,
                (true, true, false) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, true, true, false>,
                (true, false, true) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, true, false, true>,
                (true, true, true) => cvt_f::<$dk, $dw, $sk, $sw, { $r }, true, true, true>,
            }
        };
    }
    macro_rules! rnd {
        ($dk:expr, $dw:expr, $sk:expr, $sw:expr) => {
            match rnd {
                RN => flags!($dk, $dw, $sk, $sw, RN),
                RZ => flags!($dk, $dw, $sk, $sw, RZ),
                RM => flags!($dk, $dw, $sk, $sw, RM),
                _ => flags!($dk, $dw, $sk, $sw, RP),
            }
        };
    }
    macro_rules! src {
        ($dk:expr, $dw:expr) => {
            match (sk, sw) {
                (K_U, 8) => rnd!($dk, $dw, K_U, 8),
                (K_U, 16) => rnd!($dk, $dw, K_U, 16),
                (K_U, 32) => rnd!($dk, $dw, K_U, 32),
                (K_U, 64) => rnd!($dk, $dw, K_U, 64),
                (K_S, 8) => rnd!($dk, $dw, K_S, 8),
                (K_S, 16) => rnd!($dk, $dw, K_S, 16),
                (K_S, 32) => rnd!($dk, $dw, K_S, 32),
                (K_S, 64) => rnd!($dk, $dw, K_S, 64),
                (K_F16, 16) => rnd!($dk, $dw, K_F16, 16),
                (K_BF16, 16) => rnd!($dk, $dw, K_BF16, 16),
                (K_F32, 32) => rnd!($dk, $dw, K_F32, 32),
                (K_F64, 64) => rnd!($dk, $dw, K_F64, 64),
                _ => return None,
            }
        };
    }
    Some(match (dk, dw) {
        (K_U, 8) => src!(K_U, 8),
        (K_U, 16) => src!(K_U, 16),
        (K_U, 32) => src!(K_U, 32),
        (K_U, 64) => src!(K_U, 64),
        (K_S, 8) => src!(K_S, 8),
        (K_S, 16) => src!(K_S, 16),
        (K_S, 32) => src!(K_S, 32),
        (K_S, 64) => src!(K_S, 64),
        (K_F16, 16) => src!(K_F16, 16),
        (K_BF16, 16) => src!(K_BF16, 16),
        (K_F32, 32) => src!(K_F32, 32),
        (K_F64, 64) => src!(K_F64, 64),
        _ => return None,
    })
}

/// cvt.rn.bf16x2.f32 d, a, b / cvt.rn.f16x2.f32: a in the upper half, b in the lower.
fn cvt_x2<const BF: bool, const RND: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    lanewise(c.w, i.d[0], [i.s[0], i.s[1]], m, |_, [a, b]| {
        let hi = to_half(f32::from_bits(a as u32) as f64, BF, RND) as u64;
        let lo = to_half(f32::from_bits(b as u32) as f64, BF, RND) as u64;
        hi << 16 | lo
    });
    Ok(())
}

pub fn cvt_x2_op(bf: bool, rnd: u8) -> Option<Exec> {
    Some(match (bf, rnd) {
        (true, RN) => cvt_x2::<true, RN> as Exec,
        (true, RZ) => cvt_x2::<true, RZ>,
        (false, RN) => cvt_x2::<false, RN>,
        (false, RZ) => cvt_x2::<false, RZ>,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_of_f32_by_hand() {
        // 1 + 2^-30 is between 1 and the next f32 (1 + 2^-23).
        let (s, e) = two_sum(1.0, 2f64.powi(-30));
        assert_eq!(round32(s, sign(e), RM), 1.0);
        assert_eq!(round32(s, sign(e), RZ), 1.0);
        assert_eq!(round32(s, sign(e), RP), 1.0 + f32::EPSILON);
        assert_eq!(round32(s, sign(e), RN), 1.0);
        // Negative: -1 - 2^-30.
        assert_eq!(round32(-s, -sign(e), RM), -1.0 - f32::EPSILON);
        assert_eq!(round32(-s, -sign(e), RZ), -1.0);
        // A tie broken by the tail: 1 + 2^-24 exactly is a tie (to even: 1); one f64
        // ulp more must round up.
        let tie = 1.0 + 2f64.powi(-24);
        assert_eq!(round32(tie, 0, RN), 1.0);
        assert_eq!(round32(tie, 1, RN), 1.0 + f32::EPSILON);
        // Overflow: RZ and RM of a huge positive value give MAX, RP infinity.
        assert_eq!(round32(f32::MAX as f64 * 1.5, 0, RZ), f32::MAX);
        assert_eq!(round32(f32::MAX as f64 * 1.5, 0, RP), f32::INFINITY);
    }

    #[test]
    fn fma_rm_is_exact() {
        // 3 * (1/3 rounded) + 0 is just below 1: rm gives the f32 below 1 when the
        // exact product is below 1.
        let a = 3.0f32;
        let b = 1.0f32 / 3.0; // 0x3eaaaaab, slightly above 1/3
        let exact = a as f64 * b as f64; // > 1
        assert!(exact > 1.0);
        assert_eq!(fma32_op::<RM>(a, b, 0.0), 1.0);
        assert_eq!(fma32_op::<RP>(a, b, 0.0), 1.0 + f32::EPSILON);
        assert_eq!(fma32_op::<RM>(a, b, -1.0), (exact - 1.0) as f32);
    }

    #[test]
    fn half_conversions_by_hand() {
        assert_eq!(to_half(1.0, true, RN), 0x3f80);
        assert_eq!(to_half(1.0 + 2f64.powi(-8), true, RN), 0x3f80); // tie, to even
        assert_eq!(to_half(1.0 + 3.0 * 2f64.powi(-8), true, RN), 0x3f82); // tie, to even (up)
        assert_eq!(to_half(1.0 + 2f64.powi(-8), true, RZ), 0x3f80);
        assert_eq!(to_half(-2.0, true, RN), 0xc000);
        assert_eq!(to_half(1.0, false, RN), 0x3c00);
        assert_eq!(to_half(65504.0, false, RN), 0x7bff);
        assert_eq!(to_half(1e6, false, RN), 0x7c00);
        assert_eq!(to_half(2f64.powi(-24), false, RN), 0x0001);
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
    }

    #[test]
    fn integral_rounding_by_hand() {
        assert_eq!(integral(2.5, RN), 2.0);
        assert_eq!(integral(3.5, RN), 4.0);
        assert_eq!(integral(-2.5, RN), -2.0);
        assert_eq!(integral(-0.5, RN), 0.0);
        assert_eq!(integral(2.4, RN), 2.0);
        assert_eq!(integral(-2.6, RZ), -2.0);
        assert_eq!(integral(-2.1, RM), -3.0);
        assert_eq!(integral(2.1, RP), 3.0);
    }

    #[test]
    fn min_max_nan_and_zero() {
        assert_eq!(f32_bin::<MIN, RN>(f32::NAN, 2.0), 2.0);
        assert_eq!(f32_bin::<MAX, RN>(1.0, f32::NAN), 1.0);
        assert!(f32_bin::<MIN, RN>(f32::NAN, f32::NAN).is_nan());
        assert!(f32_bin::<MIN, RN>(0.0, -0.0).is_sign_negative());
        assert!(f32_bin::<MAX, RN>(-0.0, 0.0).is_sign_positive());
    }
}
