//! Single-precision arithmetic (PTX ISA §9.7.3): add, sub, mul, fma, div, sqrt, rcp in
//! all four rounding modes, .ftz, .sat, NaN results, min/max, neg/abs/copysign, and
//! the approximate divides.
//!
//! ISA facts relied on (§9.7.3 and the per-instruction notes):
//! - "Instructions that support rounding modifiers are IEEE-754 compliant"; .rn is
//!   "mantissa LSB rounds to nearest even", .rz toward zero, .rm toward negative
//!   infinity, .rp toward positive infinity.
//! - ".ftz ... flushes subnormal inputs and results to sign-preserving zero".
//! - "add.sat.f32 clamps the result to [0.0, 1.0]. NaN results are flushed to +0.0f."
//! - "Single-precision instructions return an unspecified NaN": the emulator's
//!   choice is the canonical 0x7fffffff.
//! - min/max: a NaN operand yields the other operand, two NaNs a NaN; "-0.0 < +0.0".
//! - div.approx: "For 2^126 < |b| < 2^128, if a is infinity, div.approx.f32 returns
//!   NaN, otherwise it returns a sign-preserving zero"; max 2 ulp elsewhere.
//!
//! Expected values: Rust's f32 operations (correctly rounded to nearest), and for
//! the directed modes that result moved to its neighbour when an exact comparison
//! in f64 shows it on the wrong side of the exact value.

mod common;
use common::*;
use std::cmp::Ordering;

const NAN: u32 = 0x7fff_ffff;

fn values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        3.0,
        1.0 / 3.0,
        -7.25,
        1e-3,
        7e5,
        16777217.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        -3e-42,
        1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0 + f32::EPSILON,
        2.0f32.powi(100),
        2.0f32.powi(-100),
    ];
    let mut x = 0x1234_5678u32;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Finite values of moderate exponent.
        v.push(f32::from_bits((x & 0x807f_ffff) | ((x >> 23 & 0x3f) + 100) << 23));
    }
    v
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

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

fn sign(x: f64) -> Ordering {
    x.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
}

/// Rounds the exact value `s + tail` (only tail's sign is known; it is below half
/// an f64 ulp of s) given `rn`, its correctly rounded-to-nearest f32.
fn directed(rn: f32, s: f64, tail: Ordering, mode: &str) -> f32 {
    if rn.is_nan() || mode == "rn" {
        return rn;
    }
    // Where rn stands relative to the exact value.
    let pos = match (rn as f64).partial_cmp(&s).unwrap() {
        Ordering::Equal => tail.reverse(),
        o => o,
    };
    let exact_positive = s > 0.0 || (s == 0.0 && tail == Ordering::Greater);
    let down = |r: f32| if pos == Ordering::Greater { next_down(r) } else { r };
    let up = |r: f32| if pos == Ordering::Less { next_up(r) } else { r };
    match mode {
        "rm" => down(rn),
        "rp" => up(rn),
        _ => {
            if exact_positive {
                down(rn)
            } else {
                up(rn)
            }
        }
    }
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// The expected bits of a binary or ternary op in a mode, with .ftz and .sat.
fn expect(op: &str, a: f32, b: f32, c: f32, mode: &str, ftz_: bool, sat: bool) -> u32 {
    let (a, b, c) = if ftz_ { (ftz(a), ftz(b), ftz(c)) } else { (a, b, c) };
    let (x, y, z) = (a as f64, b as f64, c as f64);
    let r = match op {
        "add" | "sub" => {
            let b = if op == "sub" { -b } else { b };
            let (s, e) = two_sum(x, b as f64);
            let mut r = directed(a + b, s, sign(e), mode);
            // IEEE 754 §6.3: an exact zero sum of opposite-signed operands is +0,
            // except -0 under roundTowardNegative.
            if r == 0.0 && s == 0.0 && !(a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative())
            {
                r = if mode == "rm" { -0.0 } else { 0.0 };
            }
            r
        }
        "mul" => directed(a * b, x * y, Ordering::Equal, mode),
        "fma" => {
            let p = x * y; // exact
            let (s, e) = two_sum(p, z);
            let mut r = directed(a.mul_add(b, c), s, sign(e), mode);
            if r == 0.0
                && s == 0.0
                && p.is_finite()
                && !(p == 0.0 && c == 0.0 && p.is_sign_negative() == c.is_sign_negative())
            {
                r = if mode == "rm" { -0.0 } else { 0.0 };
            }
            r
        }
        "div" => {
            let q = x / y;
            let rem = (-q).mul_add(y, x); // exact remainder
            let tail = if q.is_finite() && q != 0.0 { sign(rem * y.signum()) } else { Ordering::Equal };
            directed(a / b, q, tail, mode)
        }
        "sqrt" => {
            let s = x.sqrt();
            let tail = if s.is_finite() && s != 0.0 { sign((-s).mul_add(s, x)) } else { Ordering::Equal };
            directed(a.sqrt(), s, tail, mode)
        }
        "rcp" => {
            let q = 1.0 / x;
            let rem = (-q).mul_add(x, 1.0);
            let tail = if q.is_finite() && q != 0.0 { sign(rem * x.signum()) } else { Ordering::Equal };
            directed(1.0 / a, q, tail, mode)
        }
        _ => unreachable!(),
    };
    let r = if ftz_ { ftz(r) } else { r };
    let r = if sat {
        if r.is_nan() {
            0.0
        } else {
            r.clamp(0.0, 1.0)
        }
    } else {
        r
    };
    if r.is_nan() {
        NAN
    } else {
        r.to_bits()
    }
}

fn triples() -> Vec<[f32; 3]> {
    let v = values();
    let mut out = Vec::new();
    for (i, &a) in v.iter().enumerate() {
        for &b in &v {
            out.push([a, b, v[(i * 5 + 2) % v.len()]]);
        }
    }
    out
}

fn run(body: &str, cases: &[[f32; 3]]) -> Vec<u32> {
    let c: Vec<[u32; 3]> = cases.iter().map(|c| c.map(f32::to_bits)).collect();
    eval32(body, &c)
}

fn check_f(what: &str, cases: &[[f32; 3]], got: &[u32], want: &[u32]) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{what}: case {:?}: got {:#010x} ({}), want {:#010x} ({})",
            cases[k],
            g,
            f32::from_bits(*g),
            w,
            f32::from_bits(*w)
        );
    }
}

#[test]
fn arithmetic_in_every_rounding_mode() {
    let cases = triples();
    for mode in ["rn", "rz", "rm", "rp"] {
        for ftz_ in [false, true] {
            let f = if ftz_ { ".ftz" } else { "" };
            for op in ["add", "sub", "mul", "div"] {
                let got = run(&format!("{op}.{mode}{f}.f32 %d, %a, %b;"), &cases);
                let want: Vec<u32> =
                    cases.iter().map(|c| expect(op, c[0], c[1], 0.0, mode, ftz_, false)).collect();
                check_f(&format!("{op}.{mode}{f}.f32"), &cases, &got, &want);
            }
            let got = run(&format!("fma.{mode}{f}.f32 %d, %a, %b, %c;"), &cases);
            let want: Vec<u32> =
                cases.iter().map(|c| expect("fma", c[0], c[1], c[2], mode, ftz_, false)).collect();
            check_f(&format!("fma.{mode}{f}.f32"), &cases, &got, &want);
            // mad.rnd.f32 is fma.rnd.f32 on sm_20+.
            let got = run(&format!("mad.{mode}{f}.f32 %d, %a, %b, %c;"), &cases);
            check_f(&format!("mad.{mode}{f}.f32"), &cases, &got, &want);
            for op in ["sqrt", "rcp"] {
                let got = run(&format!("{op}.{mode}{f}.f32 %d, %a;"), &cases);
                let want: Vec<u32> =
                    cases.iter().map(|c| expect(op, c[0], 0.0, 0.0, mode, ftz_, false)).collect();
                check_f(&format!("{op}.{mode}{f}.f32"), &cases, &got, &want);
            }
        }
    }
    // Without a modifier, add/sub/mul default to .rn.
    for op in ["add", "sub", "mul"] {
        let got = run(&format!("{op}.f32 %d, %a, %b;"), &cases);
        let want: Vec<u32> = cases.iter().map(|c| expect(op, c[0], c[1], 0.0, "rn", false, false)).collect();
        check_f(&format!("{op}.f32"), &cases, &got, &want);
    }
    // fma, div, sqrt and rcp have no default rounding.
    for body in ["fma.f32 %d, %a, %b, %c;", "div.f32 %d, %a, %b;", "sqrt.f32 %d, %a;", "rcp.f32 %d, %a;"] {
        refusal(&eval_module(32, 32, body));
    }
}

#[test]
fn saturation() {
    let cases = triples();
    for op in ["add", "sub", "mul"] {
        for mode in ["rn", "rz"] {
            let got = run(&format!("{op}.{mode}.sat.f32 %d, %a, %b;"), &cases);
            let want: Vec<u32> =
                cases.iter().map(|c| expect(op, c[0], c[1], 0.0, mode, false, true)).collect();
            check_f(&format!("{op}.{mode}.sat.f32"), &cases, &got, &want);
        }
    }
    let got = run("fma.rn.ftz.sat.f32 %d, %a, %b, %c;", &cases);
    let want: Vec<u32> = cases.iter().map(|c| expect("fma", c[0], c[1], c[2], "rn", true, true)).collect();
    check_f("fma.rn.ftz.sat.f32", &cases, &got, &want);
}

/// Hand-picked cases for the rules the table above relies on.
#[test]
fn rounding_by_hand() {
    let one = 1.0f32;
    let e = f32::EPSILON; // 2^-23
    let t = 2f32.powi(-24);
    let c = [[one, t, 0.0], [one, 3.0 * t, 0.0], [-one, -t * 1.5, 0.0]];
    // 1 + 2^-24 is a tie: rn to even gives 1; 1 + 3*2^-24 is a tie: to even 1 + 2^-22.
    assert_eq!(run("add.rn.f32 %d, %a, %b;", &c)[..2], [one.to_bits(), (one + 2.0 * e).to_bits()]);
    assert_eq!(run("add.rp.f32 %d, %a, %b;", &c)[0], (one + e).to_bits());
    assert_eq!(run("add.rm.f32 %d, %a, %b;", &c)[2], (-one - e).to_bits());
    assert_eq!(run("add.rz.f32 %d, %a, %b;", &c)[2], (-one).to_bits());
    // Exact cancellation: +0 in rn/rz/rp, -0 in rm (IEEE 754 §6.3).
    let z = [[1.5f32, -1.5, 0.0], [-0.0, -0.0, 0.0], [0.0, -0.0, 0.0]];
    assert_eq!(run("add.rn.f32 %d, %a, %b;", &z), [0, 0x8000_0000, 0]);
    assert_eq!(run("add.rm.f32 %d, %a, %b;", &z), [0x8000_0000, 0x8000_0000, 0x8000_0000]);
    assert_eq!(run("sub.rm.f32 %d, %a, %a;", &z)[0], 0x8000_0000);
    assert_eq!(run("fma.rm.f32 %d, %a, %b, %c;", &[[2.0, 3.0, -6.0]]), [0x8000_0000]);
    assert_eq!(run("fma.rp.f32 %d, %a, %b, %c;", &[[2.0, 3.0, -6.0]]), [0]);
    // Overflow: rn and rp give +inf, rz and rm f32::MAX.
    let big = [[f32::MAX, 2.0, 0.0]];
    assert_eq!(run("mul.rn.f32 %d, %a, %b;", &big), [f32::INFINITY.to_bits()]);
    assert_eq!(run("mul.rz.f32 %d, %a, %b;", &big), [f32::MAX.to_bits()]);
    assert_eq!(run("mul.rm.f32 %d, %a, %b;", &big), [f32::MAX.to_bits()]);
    assert_eq!(run("mul.rp.f32 %d, %a, %b;", &big), [f32::INFINITY.to_bits()]);
    // Underflow: the smallest subnormal halved; rp keeps it, rn ties to even (0).
    let tiny = [[1e-45f32, 0.5, 0.0]];
    assert_eq!(run("mul.rp.f32 %d, %a, %b;", &tiny), [1]);
    assert_eq!(run("mul.rn.f32 %d, %a, %b;", &tiny), [0]);
    assert_eq!(run("mul.rp.ftz.f32 %d, %a, %b;", &tiny), [0]);
    // 1/3 in each mode: rn and rp 0x3eaaaaab, rz and rm 0x3eaaaaaa.
    let third = [[1.0f32, 3.0, 0.0]];
    assert_eq!(run("div.rn.f32 %d, %a, %b;", &third), [0x3eaa_aaab]);
    assert_eq!(run("div.rz.f32 %d, %a, %b;", &third), [0x3eaa_aaaa]);
    assert_eq!(run("div.rm.f32 %d, %a, %b;", &third), [0x3eaa_aaaa]);
    assert_eq!(run("div.rp.f32 %d, %a, %b;", &third), [0x3eaa_aaab]);
    // .ftz keeps the sign of a flushed subnormal input: -1e-40 * 1 = -0.
    assert_eq!(run("mul.rn.ftz.f32 %d, %a, %b;", &[[-1e-40, 1.0, 0.0]]), [0x8000_0000]);
}

#[test]
fn nan_results_are_canonical() {
    let inf = f32::INFINITY;
    let c = [[inf, -inf, 0.0], [0.0, inf, 0.0], [f32::from_bits(0xffc0_1234), 1.0, 0.0], [-1.0, 0.0, 0.0]];
    assert_eq!(run("add.rn.f32 %d, %a, %b;", &c), [NAN, inf.to_bits(), NAN, 0xbf80_0000]);
    assert_eq!(run("mul.rn.f32 %d, %a, %b;", &c)[1..3], [NAN, NAN]);
    assert_eq!(run("sqrt.rn.f32 %d, %a;", &c)[3], NAN);
    assert_eq!(run("div.rn.f32 %d, %a, %b;", &[[0.0, 0.0, 0.0]]), [NAN]);
    assert_eq!(run("fma.rn.f32 %d, %a, %b, %c;", &[[0.0, inf, 1.0]]), [NAN]);
    // .sat flushes NaN to +0.
    assert_eq!(run("add.rn.sat.f32 %d, %a, %b;", &c[..1]), [0]);
}

/// min / max per the ISA's min_num / max_num pseudocode.
fn min_num(a: f32, b: f32, is_max: bool) -> u32 {
    let r = if a.is_nan() && b.is_nan() {
        return NAN;
    } else if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        // -0.0 < +0.0 here.
        let less = a < b || (a == 0.0 && b == 0.0 && a.is_sign_negative() && !b.is_sign_negative());
        let greater = a > b || (a == 0.0 && b == 0.0 && !a.is_sign_negative() && b.is_sign_negative());
        if is_max {
            if greater {
                a
            } else {
                b
            }
        } else if less {
            a
        } else {
            b
        }
    };
    r.to_bits()
}

#[test]
fn min_max_nan_and_signed_zero() {
    let cases = triples();
    let got = run("min.f32 %d, %a, %b;", &cases);
    check_f("min.f32", &cases, &got, &cases.iter().map(|c| min_num(c[0], c[1], false)).collect::<Vec<_>>());
    let got = run("max.f32 %d, %a, %b;", &cases);
    check_f("max.f32", &cases, &got, &cases.iter().map(|c| min_num(c[0], c[1], true)).collect::<Vec<_>>());
    let got = run("min.ftz.f32 %d, %a, %b;", &cases);
    let want: Vec<u32> = cases.iter().map(|c| min_num(ftz(c[0]), ftz(c[1]), false)).collect();
    check_f("min.ftz.f32", &cases, &got, &want);
    let got = run("max.ftz.f32 %d, %a, %b;", &cases);
    let want: Vec<u32> = cases.iter().map(|c| min_num(ftz(c[0]), ftz(c[1]), true)).collect();
    check_f("max.ftz.f32", &cases, &got, &want);
    // By hand.
    let z = [[0.0f32, -0.0, 0.0], [-0.0, 0.0, 0.0], [f32::NAN, 2.0, 0.0]];
    assert_eq!(run("min.f32 %d, %a, %b;", &z), [0x8000_0000, 0x8000_0000, 2f32.to_bits()]);
    assert_eq!(run("max.f32 %d, %a, %b;", &z), [0, 0, 2f32.to_bits()]);
    // Modifiers not implemented are refused.
    refusal(&eval_module(32, 32, "min.NaN.f32 %d, %a, %b;"));
    refusal(&eval_module(32, 32, "max.xorsign.abs.f32 %d, %a, %b;"));
}

#[test]
fn neg_abs_copysign() {
    let cases = triples();
    let got = run("neg.f32 %d, %a;", &cases);
    let want: Vec<u32> = cases.iter().map(|c| c[0].to_bits() ^ 0x8000_0000).collect();
    for (k, c) in cases.iter().enumerate() {
        if !c[0].is_nan() {
            assert_eq!(got[k], want[k], "neg.f32 {:?}", c[0]);
        }
    }
    let got = run("abs.f32 %d, %a;", &cases);
    for (k, c) in cases.iter().enumerate() {
        if !c[0].is_nan() {
            assert_eq!(got[k], c[0].to_bits() & 0x7fff_ffff, "abs.f32 {:?}", c[0]);
        }
    }
    let got = run("abs.ftz.f32 %d, %a;", &cases);
    for (k, c) in cases.iter().enumerate() {
        if !c[0].is_nan() {
            assert_eq!(got[k], ftz(c[0]).abs().to_bits(), "abs.ftz.f32 {:?}", c[0]);
        }
    }
    let got = run("neg.ftz.f32 %d, %a;", &[[1e-40, 0.0, 0.0]]);
    assert_eq!(got, [0x8000_0000]);
    // copysign d, a, b: "Copy sign bit of a into value of b".
    let got = run("copysign.f32 %d, %a, %b;", &cases);
    let want: Vec<u32> =
        cases.iter().map(|c| (c[1].to_bits() & 0x7fff_ffff) | (c[0].to_bits() & 0x8000_0000)).collect();
    for (k, c) in cases.iter().enumerate() {
        if !c[1].is_nan() {
            assert_eq!(got[k], want[k], "copysign.f32 {c:?}");
        }
    }
}

fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    (key(a) as i64 - key(b) as i64).unsigned_abs() as u32
}

#[test]
fn approximate_divides() {
    let cases: Vec<[f32; 3]> = triples()
        .into_iter()
        .filter(|c| c[0].is_finite() && c[1].is_normal() && c[1].abs() <= 2f32.powi(126))
        .collect();
    for body in ["div.approx.f32 %d, %a, %b;", "div.full.f32 %d, %a, %b;"] {
        let got = run(body, &cases);
        for (k, c) in cases.iter().enumerate() {
            let want = c[0] / c[1];
            let g = f32::from_bits(got[k]);
            if want.is_normal() {
                // "The maximum ulp error is 2."
                assert!(ulps(g, want) <= 2, "{body} {c:?}: got {g}, want {want}");
            }
        }
    }
    // 2^126 < |b| < 2^128: zero with the sign of a/b, or NaN when a is infinite.
    let b = 2f32.powi(127);
    let c = [[1.0f32, b, 0.0], [-1.0, b, 0.0], [1.0, -b, 0.0], [f32::INFINITY, b, 0.0]];
    assert_eq!(run("div.approx.f32 %d, %a, %b;", &c), [0, 0x8000_0000, 0x8000_0000, NAN]);
    // div.full handles the whole range.
    let got = run("div.full.f32 %d, %a, %b;", &c[..1]);
    assert_eq!(got, [2f32.powi(-127).to_bits()]);
    refusal(&eval_module(32, 32, "div.approx.sat.f32 %d, %a, %b;"));
    refusal(&eval_module(32, 32, "add.approx.f32 %d, %a, %b;"));
}
