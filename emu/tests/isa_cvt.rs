//! cvt (PTX ISA §9.7.9.21): integer <-> integer with and without .sat, float ->
//! integer with .rni/.rzi/.rmi/.rpi (clamping, NaN), integer -> float with
//! .rn/.rz/.rm/.rp above 2^24 / 2^53, f64 -> f32 narrowing (ties, subnormals,
//! overflow), f32 <-> f16 / bf16, float -> float integral rounding, .ftz, .sat.
//!
//! ISA facts relied on (cvt notes):
//! - "For float-to-integer conversions, the result is clamped to the destination
//!   range by default; i.e, .sat is redundant."
//! - "In float-to-integer conversions, depending upon conversion types, NaN input
//!   results in: 1. Zero if source is not .f64 and destination is not .s64, .u64.
//!   2. Otherwise 1 << (BitWidth(dst) - 1)."
//! - "The result of conversion is sign-extended to the destination register width
//!   for signed integers, and is zero-extended ... for unsigned, bit-size, and
//!   floating-point types."
//! - ".sat: For floating-point destination types, .sat limits the result to the
//!   range [0.0, 1.0]. NaN results are flushed to positive zero."
//! - "Floating-point rounding is required for float-to-float conversions that
//!   result in loss of precision, and for integer-to-float conversions. Floating-
//!   point rounding is illegal in all other instances." Integer rounding is
//!   "required for float-to-integer conversions, and for same-size float-to-float
//!   conversions where the value is rounded to an integer. Integer rounding is
//!   illegal in all other instances."
//! - .f16x2/.bf16x2: "the value converted from input a is stored in the upper half
//!   of d and the value converted from input b is stored in the lower half".

mod common;
use common::*;

const INT_TYPES: [(&str, u32, bool); 8] = [
    ("u8", 8, false),
    ("s8", 8, true),
    ("u16", 16, false),
    ("s16", 16, true),
    ("u32", 32, false),
    ("s32", 32, true),
    ("u64", 64, false),
    ("s64", 64, true),
];

fn sext(v: u64, w: u32) -> i128 {
    (((v as u128) << (128 - w)) as i128) >> (128 - w)
}

fn zext(v: u64, w: u32) -> i128 {
    if w == 64 {
        v as i128
    } else {
        (v & ((1u64 << w) - 1)) as i128
    }
}

/// The value of `v` read as a `w`-bit (un)signed integer.
fn read(v: u64, w: u32, signed: bool) -> i128 {
    if signed {
        sext(v, w)
    } else {
        zext(v, w)
    }
}

fn range(w: u32, signed: bool) -> (i128, i128) {
    if signed {
        (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1)
    } else {
        (0, (1i128 << w) - 1)
    }
}

/// A conversion result in a 64-bit destination register: sign-extended for signed
/// destination types, zero-extended otherwise.
fn in_register(n: i128, w: u32, signed: bool) -> u64 {
    let bits = n as u64;
    if signed {
        sext(bits, w) as u64
    } else {
        zext(bits, w) as u64
    }
}

#[test]
fn integer_to_integer() {
    let vals: Vec<u64> = vec![
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX,
        1 << 63,
        (1 << 63) - 1,
        0x1234_5678_9abc_def0,
        (-300i64) as u64,
    ];
    let cases: Vec<[u64; 3]> = vals.iter().map(|&v| [v, 0, 0]).collect();
    for (dn, dw, ds) in INT_TYPES {
        for (sn, sw, ss) in INT_TYPES {
            if dn == sn {
                continue;
            }
            for sat in [false, true] {
                // A 64-bit source register holds the value (a wider register may be
                // used; its low bits are the operand) and a 64-bit destination shows
                // the extension to the register width.
                let m = if sat { ".sat" } else { "" };
                let body = format!("cvt{m}.{dn}.{sn} %d, %a;");
                let (lo, hi) = range(dw, ds);
                let want: Vec<u64> = vals
                    .iter()
                    .map(|&v| {
                        let x = read(v, sw, ss);
                        let x = if sat { x.clamp(lo, hi) } else { x };
                        in_register(x, dw, ds)
                    })
                    .collect();
                let got = eval64(&body, &cases);
                check_hex(&format!("cvt{m}.{dn}.{sn}"), &cases, &got, &want);
            }
        }
    }
    // In a register of exactly the type's width: cvt.s16.s32 of 0x18000 is 0x8000.
    assert_eq!(eval(32, 16, "cvt.s16.s32 %d, %a;", &[[0x18000, 0, 0]]), [0x8000]);
    // cvt.s8.s32 into a 16-bit register: sign-extended to the register, 0xff80.
    assert_eq!(eval(32, 16, "cvt.s8.s32 %d, %a;", &[[0x180, 0, 0]]), [0xff80]);
    assert_eq!(eval(32, 16, "cvt.u8.s32 %d, %a;", &[[0x180, 0, 0]]), [0x80]);
}

fn float_values() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        1.0,
        -1.0,
        127.5,
        128.0,
        -128.5,
        255.5,
        256.0,
        32767.5,
        65535.5,
        1e9,
        2147483647.0,
        2147483648.0,
        -2147483648.0,
        -2147483649.0,
        4294967295.0,
        4294967296.0,
        1e15 + 0.5,
        2f64.powi(63),
        -2f64.powi(63),
        1.8446744073709552e19,
        1e30,
        -1e30,
        1e-40,
        -1e-40,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    v.push(2f64.powi(52) + 0.5);
    v.push(-(2f64.powi(52) + 1.5));
    v
}

fn integral(x: f64, mode: &str) -> f64 {
    match mode {
        "rni" => x.round_ties_even(),
        "rzi" => x.trunc(),
        "rmi" => x.floor(),
        _ => x.ceil(),
    }
}

#[test]
fn float_to_integer() {
    for (fname, fw) in [("f32", 32u32), ("f64", 64u32)] {
        let vals: Vec<f64> =
            float_values().into_iter().map(|x| if fw == 32 { x as f32 as f64 } else { x }).collect();
        let cases: Vec<[u64; 3]> = vals
            .iter()
            .map(|&x| [if fw == 32 { (x as f32).to_bits() as u64 } else { x.to_bits() }, 0, 0])
            .collect();
        for (dn, dw, ds) in INT_TYPES {
            for mode in ["rni", "rzi", "rmi", "rpi"] {
                let body = format!("cvt.{mode}.{dn}.{fname} %d, %a;");
                let (lo, hi) = range(dw, ds);
                let want: Vec<u64> = vals
                    .iter()
                    .map(|&x| {
                        let n: i128 = if x.is_nan() {
                            if fw == 64 || dw == 64 {
                                1i128 << (dw - 1)
                            } else {
                                0
                            }
                        } else {
                            let r = integral(x, mode);
                            if r <= lo as f64 {
                                lo
                            } else if r >= hi as f64 {
                                hi
                            } else {
                                r as i128
                            }
                        };
                        in_register(n, dw, ds)
                    })
                    .collect();
                let got = eval(fw, 64, &body, &cases);
                check_hex(&format!("cvt.{mode}.{dn}.{fname}"), &vals, &got, &want);
            }
        }
    }
    // .ftz flushes a subnormal f32 input to sign-preserving zero before rounding.
    let sub = (1e-40f32).to_bits();
    let nsub = (-1e-40f32).to_bits();
    assert_eq!(unary32("cvt.rpi.s32.f32 %d, %a;", &[sub]), [1]);
    assert_eq!(unary32("cvt.rpi.ftz.s32.f32 %d, %a;", &[sub]), [0]);
    assert_eq!(unary32("cvt.rmi.s32.f32 %d, %a;", &[nsub]), [u32::MAX]);
    assert_eq!(unary32("cvt.rmi.ftz.s32.f32 %d, %a;", &[nsub]), [0]);
    // .sat is redundant (and accepted) for float-to-integer.
    assert_eq!(unary32("cvt.rzi.sat.u32.f32 %d, %a;", &[(-5.0f32).to_bits()]), [0]);
}

/// An integer rounded to `p` significant bits in a mode, exactly (the result fits
/// an f64 for p <= 53).
fn round_int(n: i128, p: u32, mode: &str) -> f64 {
    let neg = n < 0;
    let a = n.unsigned_abs();
    if a == 0 {
        return 0.0;
    }
    let e = 127 - a.leading_zeros();
    if e < p {
        return if neg { -(a as f64) } else { a as f64 };
    }
    let k = e + 1 - p;
    let lo = a >> k;
    let rem = a & ((1u128 << k) - 1);
    let half = 1u128 << (k - 1);
    let up = match mode {
        "rz" => false,
        "rm" => neg && rem != 0,
        "rp" => !neg && rem != 0,
        _ => rem > half || (rem == half && lo & 1 == 1),
    };
    let m = ((lo + up as u128) << k) as f64;
    if neg {
        -m
    } else {
        m
    }
}

#[test]
fn integer_to_float_rounding() {
    let mut vals: Vec<i128> = vec![0, 1, -1, 3, 1 << 24, (1 << 24) + 1, (1 << 24) + 3, (1 << 24) - 1];
    vals.extend([
        -(1 << 24) - 1,
        -(1 << 24) - 3,
        (1 << 25) + 3,
        16_777_217 * 7,
        i32::MAX as i128,
        i32::MIN as i128,
    ]);
    vals.extend([
        (1 << 53) + 1,
        (1 << 53) + 3,
        -(1 << 53) - 1,
        i64::MAX as i128,
        i64::MIN as i128,
        u32::MAX as i128,
    ]);
    vals.extend([u64::MAX as i128, (1u128 << 63) as i128 + 1, 0x1234_5678_9abc_def1]);
    for (sn, sw, ss) in INT_TYPES {
        let (lo, hi) = range(sw, ss);
        let v: Vec<i128> = vals.iter().copied().filter(|&x| x >= lo && x <= hi).collect();
        let cases: Vec<[u64; 3]> = v.iter().map(|&x| [x as u64, 0, 0]).collect();
        for mode in ["rn", "rz", "rm", "rp"] {
            let got = eval(64, 32, &format!("cvt.{mode}.f32.{sn} %d, %a;"), &cases);
            let want: Vec<u64> =
                v.iter().map(|&x| (round_int(x, 24, mode) as f32).to_bits() as u64).collect();
            check_hex(&format!("cvt.{mode}.f32.{sn}"), &v, &got, &want);
            let got = eval(64, 64, &format!("cvt.{mode}.f64.{sn} %d, %a;"), &cases);
            let want: Vec<u64> = v.iter().map(|&x| round_int(x, 53, mode).to_bits()).collect();
            check_hex(&format!("cvt.{mode}.f64.{sn}"), &v, &got, &want);
        }
    }
    // By hand: 2^24 + 1 is a tie between 2^24 and 2^24 + 2, to even: 2^24.
    assert_eq!(unary32("cvt.rn.f32.s32 %d, %a;", &[(1 << 24) + 1]), [16777216f32.to_bits()]);
    assert_eq!(unary32("cvt.rp.f32.s32 %d, %a;", &[(1 << 24) + 1]), [16777218f32.to_bits()]);
    // .sat on a float destination clamps to [0, 1].
    let got = unary32("cvt.rn.sat.f32.s32 %d, %a;", &[5, (-3i32) as u32, 0]);
    assert_eq!(got, [1f32.to_bits(), 0, 0]);
    let got = eval(32, 64, "cvt.rn.sat.f64.s32 %d, %a;", &[[5, 0, 0], [(-3i32) as u32 as u64, 0, 0]]);
    assert_eq!(got, [1f64.to_bits(), 0]);
    // An int-to-float conversion needs a rounding modifier; integer rounding is
    // illegal there.
    refusal(&eval_module(32, 32, "cvt.f32.s32 %d, %a;"));
    refusal(&eval_module(32, 32, "cvt.rni.f32.s32 %d, %a;"));
    refusal(&eval_module(32, 32, "cvt.rn.s32.f32 %d, %a;"));
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        x
    } else if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

/// f64 -> f32 in a mode: the nearest f32 (Rust's `as`) adjusted to the neighbour
/// on the mode's side when it is on the wrong side of the exact value.
fn narrow(x: f64, mode: &str) -> f32 {
    let r = x as f32;
    if x.is_nan() || r as f64 == x {
        return r;
    }
    let (lo, hi) = if (r as f64) < x { (r, next_up(r)) } else { (-next_up(-r), r) };
    match mode {
        "rz" => {
            if x > 0.0 {
                lo
            } else {
                hi
            }
        }
        "rm" => lo,
        "rp" => hi,
        _ => r,
    }
}

#[test]
fn f64_to_f32_narrowing() {
    let t = 2f64.powi(-24);
    let vals = vec![
        1.0,
        1.0 + t,                  // tie: to even, 1
        1.0 + 3.0 * t,            // tie: to even, 1 + 2^-22
        1.0 + t + 2f64.powi(-50), // just above the tie: up
        -(1.0 + t),
        0.1,
        -0.1,
        std::f64::consts::PI,
        2f64.powi(-140),       // f32 subnormal, exact
        2f64.powi(-149),       // the smallest f32 subnormal
        1.5 * 2f64.powi(-149), // tie between 2^-149 and 2^-148: to even, 2^-148
        0.5 * 2f64.powi(-149), // tie between 0 and 2^-149: to even, 0
        0.75 * 2f64.powi(-149),
        2f64.powi(-160), // below half the smallest subnormal
        -2f64.powi(-160),
        f32::MAX as f64,
        f32::MAX as f64 * (1.0 + 2f64.powi(-25)), // below the rounding boundary
        1e39,
        -1e39,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
    ];
    let cases: Vec<[u64; 3]> = vals.iter().map(|x| [x.to_bits(), 0, 0]).collect();
    for mode in ["rn", "rz", "rm", "rp"] {
        let got = eval(64, 32, &format!("cvt.{mode}.f32.f64 %d, %a;"), &cases);
        let want: Vec<u64> = vals.iter().map(|&x| narrow(x, mode).to_bits() as u64).collect();
        check_hex(&format!("cvt.{mode}.f32.f64"), &vals, &got, &want);
        // .ftz: subnormal results become sign-preserving zero.
        let got = eval(64, 32, &format!("cvt.{mode}.ftz.f32.f64 %d, %a;"), &cases);
        let want: Vec<u64> = vals
            .iter()
            .map(|&x| {
                let r = narrow(x, mode);
                (if r.is_subnormal() { 0.0f32.copysign(r) } else { r }).to_bits() as u64
            })
            .collect();
        check_hex(&format!("cvt.{mode}.ftz.f32.f64"), &vals, &got, &want);
    }
    // By hand: 1e39 overflows: rn +inf, rz and rm f32::MAX, rp +inf.
    let c = [[1e39f64.to_bits(), 0, 0]];
    assert_eq!(eval(64, 32, "cvt.rz.f32.f64 %d, %a;", &c), [f32::MAX.to_bits() as u64]);
    assert_eq!(eval(64, 32, "cvt.rn.f32.f64 %d, %a;", &c), [f32::INFINITY.to_bits() as u64]);
    // NaN: single-precision results are an unspecified NaN in the ISA; the
    // emulator gives the canonical 0x7fffffff.
    let got = eval(64, 32, "cvt.rn.f32.f64 %d, %a;", &[[f64::NAN.to_bits(), 0, 0]]);
    assert_eq!(got, [0x7fff_ffff]);
    // .sat clamps to [0, 1], NaN to +0.
    let c = [[2.5f64.to_bits(), 0, 0], [(-2.5f64).to_bits(), 0, 0], [f64::NAN.to_bits(), 0, 0]];
    assert_eq!(eval(64, 32, "cvt.rn.sat.f32.f64 %d, %a;", &c), [1f32.to_bits() as u64, 0, 0]);
    // A narrowing conversion needs a rounding modifier.
    refusal(&eval_module(64, 32, "cvt.f32.f64 %d, %a;"));
}

#[test]
fn f32_to_f64_and_back() {
    let vals = [1.0f32, -0.0, 1e-40, -1e-45, f32::MAX, f32::INFINITY, 0.1];
    let cases: Vec<[u64; 3]> = vals.iter().map(|x| [x.to_bits() as u64, 0, 0]).collect();
    let got = eval(32, 64, "cvt.f64.f32 %d, %a;", &cases);
    check_hex("cvt.f64.f32", &vals, &got, &vals.iter().map(|&x| (x as f64).to_bits()).collect::<Vec<_>>());
    // .ftz on the f32 input: subnormals become sign-preserving zero.
    let got = eval(32, 64, "cvt.ftz.f64.f32 %d, %a;", &cases);
    let want: Vec<u64> = vals
        .iter()
        .map(|&x| (if x.is_subnormal() { 0.0f64.copysign(x as f64) } else { x as f64 }).to_bits())
        .collect();
    check_hex("cvt.ftz.f64.f32", &vals, &got, &want);
    // Widening is exact: a rounding modifier is illegal there.
    refusal(&eval_module(32, 64, "cvt.rn.f64.f32 %d, %a;"));
}

#[test]
fn float_to_float_integral_rounding() {
    let vals: Vec<f64> = float_values();
    for mode in ["rni", "rzi", "rmi", "rpi"] {
        let c32: Vec<[u32; 3]> = vals.iter().map(|&x| [(x as f32).to_bits(), 0, 0]).collect();
        let got = eval32(&format!("cvt.{mode}.f32.f32 %d, %a;"), &c32);
        let want: Vec<u32> = vals
            .iter()
            .map(|&x| {
                let r = integral(x as f32 as f64, mode) as f32;
                if r.is_nan() {
                    0x7fff_ffff
                } else {
                    r.to_bits()
                }
            })
            .collect();
        check(&format!("cvt.{mode}.f32.f32"), &vals, &got, &want);
        let c64: Vec<[u64; 3]> = vals.iter().map(|&x| [x.to_bits(), 0, 0]).collect();
        let got = eval64(&format!("cvt.{mode}.f64.f64 %d, %a;"), &c64);
        let want: Vec<u64> = vals
            .iter()
            .map(|&x| {
                let r = integral(x, mode);
                if r.is_nan() {
                    got_nan(&got, &vals, x)
                } else {
                    r.to_bits()
                }
            })
            .collect();
        check_hex(&format!("cvt.{mode}.f64.f64"), &vals, &got, &want);
    }
    // Integral rounding keeps the sign of zero: rni of -0.4 is -0.
    assert_eq!(unary32("cvt.rni.f32.f32 %d, %a;", &[(-0.4f32).to_bits()]), [(-0.0f32).to_bits()]);
    // cvt.ftz.f32.f32 with integer rounding flushes subnormal inputs first.
    assert_eq!(unary32("cvt.rpi.ftz.f32.f32 %d, %a;", &[(1e-40f32).to_bits()]), [0]);
    assert_eq!(unary32("cvt.rpi.f32.f32 %d, %a;", &[(1e-40f32).to_bits()]), [1f32.to_bits()]);
    // cvt.sat.f32.f32: clamp to [0, 1], NaN to +0.
    let got = unary32(
        "cvt.sat.f32.f32 %d, %a;",
        &[(1.5f32).to_bits(), (-0.5f32).to_bits(), 0x7fc0_0000, 0x3f00_0000],
    );
    assert_eq!(got, [1f32.to_bits(), 0, 0, 0x3f00_0000]);
    // Integer rounding needs same-size floats.
    refusal(&eval_module(64, 32, "cvt.rni.f32.f64 %d, %a;"));
}

/// f64 NaN payloads pass through (ISA: "NaN payloads are supported for
/// double-precision instructions"); the test only requires a NaN.
fn got_nan(got: &[u64], vals: &[f64], x: f64) -> u64 {
    let k = vals.iter().position(|v| v.to_bits() == x.to_bits()).unwrap();
    assert!(f64::from_bits(got[k]).is_nan());
    got[k]
}

/// bf16 from f32 bits: round to nearest even on the low 16 bits, or truncate.
fn bf16_rn(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn to_and_from_half_types() {
    let vals = [
        1.0f32,
        -2.0,
        0.1,
        1.0 / 3.0,
        3.140625,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        65504.0,
        1e-40,
        1e38,
        -0.0,
        255.5,
    ];
    let cases: Vec<[u32; 3]> = vals.iter().map(|x| [x.to_bits(), 0, 0]).collect();
    // bf16 is the top half of an f32: rz truncates, rn rounds to nearest even.
    let got = eval32("{ .reg .b16 %h; cvt.rn.bf16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &cases);
    check("cvt.rn.bf16.f32", &vals, &got, &vals.iter().map(|&x| bf16_rn(x) as u32).collect::<Vec<_>>());
    let got = eval32("{ .reg .b16 %h; cvt.rz.bf16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &cases);
    check("cvt.rz.bf16.f32", &vals, &got, &vals.iter().map(|&x| x.to_bits() >> 16).collect::<Vec<_>>());
    // 3.4e38 rounds up past the largest bf16 (0x7f7f): infinity in rn, MAX in rz.
    let big = [[3.4e38f32.to_bits(), 0, 0]];
    assert_eq!(eval32("{ .reg .b16 %h; cvt.rn.bf16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &big), [0x7f80]);
    assert_eq!(eval32("{ .reg .b16 %h; cvt.rz.bf16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &big), [0x7f7f]);

    // f16 by hand: 1.0 = 0x3c00, 65504 = 0x7bff (max), 65520 ties to even = inf,
    // 2^-24 = 0x0001 (smallest subnormal), 2^-25 ties to even = 0, 0.1 = 0x2e66,
    // 1/3 = 0x3555, -2 = 0xc000.
    let h = [
        (1.0f32, 0x3c00u32, 0x3c00u32),
        (65504.0, 0x7bff, 0x7bff),
        (65520.0, 0x7c00, 0x7bff),
        (1e6, 0x7c00, 0x7bff),
        (2f32.powi(-24), 0x0001, 0x0001),
        (2f32.powi(-25), 0x0000, 0x0000),
        (1.5 * 2f32.powi(-24), 0x0002, 0x0001),
        (0.1, 0x2e66, 0x2e66),
        (1.0 / 3.0, 0x3555, 0x3555),
        (-2.0, 0xc000, 0xc000),
        (f32::INFINITY, 0x7c00, 0x7c00),
        (-0.0, 0x8000, 0x8000),
        (2f32.powi(-14), 0x0400, 0x0400),
        (2f32.powi(-14) * (1.0 - 2f32.powi(-12)), 0x0400, 0x03ff),
    ];
    let cases: Vec<[u32; 3]> = h.iter().map(|x| [x.0.to_bits(), 0, 0]).collect();
    let got = eval32("{ .reg .b16 %h; cvt.rn.f16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &cases);
    check("cvt.rn.f16.f32", &h, &got, &h.iter().map(|x| x.1).collect::<Vec<_>>());
    let got = eval32("{ .reg .b16 %h; cvt.rz.f16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &cases);
    check("cvt.rz.f16.f32", &h, &got, &h.iter().map(|x| x.2).collect::<Vec<_>>());
    // And back, exactly.
    let back: Vec<[u32; 3]> = h.iter().map(|x| [x.1, 0, 0]).collect();
    let got = eval32("{ .reg .b16 %h; cvt.u16.u32 %h, %a; cvt.f32.f16 %d, %h; }", &back);
    let want: Vec<u32> = h
        .iter()
        .map(|x| {
            let (s, e, m) = ((x.1 >> 15) & 1, (x.1 >> 10) & 0x1f, x.1 & 0x3ff);
            let mag = match e {
                0 => m as f32 * 2f32.powi(-24),
                31 => f32::INFINITY,
                _ => (1.0 + m as f32 / 1024.0) * 2f32.powi(e as i32 - 15),
            };
            (if s == 1 { -mag } else { mag }).to_bits()
        })
        .collect();
    check("cvt.f32.f16", &h, &got, &want);
    let got = eval32(
        "{ .reg .b16 %h; cvt.u16.u32 %h, %a; cvt.f32.bf16 %d, %h; }",
        &[[0x3f80, 0, 0], [0xc049, 0, 0]],
    );
    assert_eq!(got, [1f32.to_bits(), 0xc049_0000]);
    // Integer sources round once, at the half type's precision: 2^60 + 2^52 + 1
    // is just above a bf16 tie (8 significant bits), so it rounds up.
    let n = (1u64 << 60) + (1 << 52) + 1;
    let got = eval(64, 16, "cvt.rn.bf16.u64 %d, %a;", &[[n, 0, 0], [(1 << 60) + 1, 0, 0]]);
    assert_eq!(got, [bf16_rn(2f32.powi(60) * (1.0 + 2f32.powi(-7))) as u64, 0x5d80]);
    let got = eval(64, 16, "cvt.rp.bf16.u64 %d, %a;", &[[(1 << 60) + 1, 0, 0]]);
    assert_eq!(got, [0x5d81]);

    // Packed: a in the upper half, b in the lower.
    let got = eval32("cvt.rn.bf16x2.f32 %d, %a, %b;", &[[1f32.to_bits(), (-2f32).to_bits(), 0]]);
    assert_eq!(got, [0x3f80_c000]);
    let got = eval32("cvt.rn.f16x2.f32 %d, %a, %b;", &[[1f32.to_bits(), 65520f32.to_bits(), 0]]);
    assert_eq!(got, [0x3c00_7c00]);
    let got = eval32("cvt.rz.f16x2.f32 %d, %a, %b;", &[[1f32.to_bits(), 65520f32.to_bits(), 0]]);
    assert_eq!(got, [0x3c00_7bff]);
    // .sat applies to an f16 destination too.
    let got =
        eval32("{ .reg .b16 %h; cvt.rn.sat.f16.f32 %h, %a; cvt.u32.u16 %d, %h; }", &[[3f32.to_bits(), 0, 0]]);
    assert_eq!(got, [0x3c00]);
}
