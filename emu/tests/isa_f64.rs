//! Double-precision arithmetic (PTX ISA §9.7.3): add, sub, mul, fma, div, sqrt, rcp
//! with .rn against Rust's f64 operations (IEEE 754, correctly rounded), the directed
//! modes of add/sub/mul/div/sqrt/rcp, min/max, neg/abs/copysign, and
//! rcp.approx.ftz.f64.
//!
//! ISA facts relied on: "Instructions that support rounding modifiers are
//! IEEE-754 compliant. Double-precision instructions support subnormal inputs and
//! results." fma.f64 computes "a * b + c in infinite precision and then rounds".
//! rcp.approx.ftz.f64: "tmp = a[63:32]; d[63:32] = 1.0 / tmp; d[31:0] = 0", with
//! the special-value table of §9.7.3.14 and "Input NaNs map to a canonical NaN with
//! encoding 0x7fffffff00000000. Subnormal inputs and results are flushed to
//! sign-preserving zero."

mod common;
use common::*;
use std::cmp::Ordering;

fn values() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        3.0,
        1.0 / 3.0,
        -7.25,
        1e-300,
        1e300,
        f64::MAX,
        -f64::MAX,
        f64::MIN_POSITIVE,
        2.5e-310,
        -5e-324,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1.0 + f64::EPSILON,
        (1u64 << 53) as f64,
        std::f64::consts::PI,
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Finite values of moderate exponent.
        v.push(f64::from_bits((x & 0x800f_ffff_ffff_ffff) | (((x >> 52) & 0xff) + 0x380) << 52));
    }
    v
}

fn triples() -> Vec<[f64; 3]> {
    let v = values();
    let mut out = Vec::new();
    for (i, &a) in v.iter().enumerate() {
        for &b in &v {
            out.push([a, b, v[(i * 5 + 2) % v.len()]]);
        }
    }
    out
}

fn run(body: &str, cases: &[[f64; 3]]) -> Vec<u64> {
    let c: Vec<[u64; 3]> = cases.iter().map(|c| c.map(f64::to_bits)).collect();
    eval64(body, &c)
}

fn same(a: u64, b: u64) -> bool {
    a == b || (f64::from_bits(a).is_nan() && f64::from_bits(b).is_nan())
}

fn check_f(what: &str, cases: &[[f64; 3]], got: &[u64], want: &[f64]) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*g, w.to_bits()),
            "{what}: case {:?}: got {:#018x} ({:e}), want {:#018x} ({:e})",
            cases[k],
            g,
            f64::from_bits(*g),
            w.to_bits(),
            w
        );
    }
}

#[test]
fn round_to_nearest_is_ieee() {
    let cases = triples();
    let t = |body: &str, f: &dyn Fn(f64, f64, f64) -> f64| {
        let got = run(body, &cases);
        let want: Vec<f64> = cases.iter().map(|c| f(c[0], c[1], c[2])).collect();
        check_f(body, &cases, &got, &want);
    };
    t("add.rn.f64 %d, %a, %b;", &|a, b, _| a + b);
    t("add.f64 %d, %a, %b;", &|a, b, _| a + b);
    t("sub.rn.f64 %d, %a, %b;", &|a, b, _| a - b);
    t("mul.rn.f64 %d, %a, %b;", &|a, b, _| a * b);
    t("mul.f64 %d, %a, %b;", &|a, b, _| a * b);
    t("div.rn.f64 %d, %a, %b;", &|a, b, _| a / b);
    t("fma.rn.f64 %d, %a, %b, %c;", &|a, b, c| a.mul_add(b, c));
    t("mad.rn.f64 %d, %a, %b, %c;", &|a, b, c| a.mul_add(b, c));
    t("sqrt.rn.f64 %d, %a;", &|a, _, _| a.sqrt());
    t("rcp.rn.f64 %d, %a;", &|a, _, _| 1.0 / a);
    t("neg.f64 %d, %a;", &|a, _, _| -a);
    t("abs.f64 %d, %a;", &|a, _, _| a.abs());
    // copysign d, a, b: the sign of a on the value of b.
    t("copysign.f64 %d, %a, %b;", &|a, b, _| b.copysign(a));
    // min/max: NaN yields the other operand; -0.0 < +0.0.
    let minmax = |a: f64, b: f64, max: bool| {
        if a.is_nan() {
            b
        } else if b.is_nan() {
            a
        } else if a == 0.0 && b == 0.0 {
            if max == a.is_sign_negative() {
                b
            } else {
                a
            }
        } else if (a < b) != max {
            a
        } else {
            b
        }
    };
    t("min.f64 %d, %a, %b;", &|a, b, _| minmax(a, b, false));
    t("max.f64 %d, %a, %b;", &|a, b, _| minmax(a, b, true));
    // .ftz and .sat do not exist for f64; div, fma, sqrt and rcp need a rounding.
    for body in [
        "add.ftz.f64 %d, %a, %b;",
        "mul.sat.f64 %d, %a, %b;",
        "div.f64 %d, %a, %b;",
        "sqrt.f64 %d, %a;",
        "div.approx.f64 %d, %a, %b;",
    ] {
        refusal(&eval_module(64, 64, body));
    }
}

fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        x
    } else if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

fn sign(x: f64) -> Ordering {
    x.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
}

/// The exact result is rn + tail, tail's sign known and |tail| below half an ulp;
/// a finite overflow (rn infinite) counts as "above the largest finite value".
fn directed(rn: f64, tail: Ordering, overflow: bool, mode: &str) -> f64 {
    let tail = if overflow { rn.partial_cmp(&0.0).unwrap().reverse() } else { tail };
    let pos = tail.reverse(); // where rn stands relative to the exact value
    let exact_positive = rn > 0.0 || (rn == 0.0 && tail == Ordering::Greater);
    let down = |r: f64| if pos == Ordering::Greater { next_down(r) } else { r };
    let up = |r: f64| if pos == Ordering::Less { next_up(r) } else { r };
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

#[test]
fn directed_rounding() {
    // Cases whose results stay out of the deep subnormal range, where the error
    // terms below would themselves underflow.
    let cases: Vec<[f64; 3]> = triples()
        .into_iter()
        .filter(|c| c.iter().all(|x| !x.is_finite() || *x == 0.0 || x.abs() > 1e-200))
        .collect();
    for mode in ["rz", "rm", "rp"] {
        for op in ["add", "sub", "mul", "div"] {
            let got = run(&format!("{op}.{mode}.f64 %d, %a, %b;"), &cases);
            let want: Vec<f64> = cases
                .iter()
                .map(|c| {
                    let (a, b) = (c[0], c[1]);
                    let fin = a.is_finite() && b.is_finite();
                    match op {
                        "add" | "sub" => {
                            let b = if op == "sub" { -b } else { b };
                            let (s, e) = two_sum(a, b);
                            if s == 0.0
                                && !(a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative())
                            {
                                // IEEE 754 §6.3: exact zero sums are +0, -0 in rm.
                                if mode == "rm" {
                                    -0.0
                                } else {
                                    0.0
                                }
                            } else {
                                directed(s, sign(e), fin && s.is_infinite(), mode)
                            }
                        }
                        "mul" => {
                            let p = a * b;
                            let e = if p.is_finite() { a.mul_add(b, -p) } else { 0.0 };
                            if p != 0.0 && p.abs() < 1e-290 {
                                // Deep underflow: not covered here.
                                f64::NAN
                            } else {
                                directed(p, sign(e), fin && p.is_infinite(), mode)
                            }
                        }
                        _ => {
                            let q = a / b;
                            let r = if q.is_finite() { (-q).mul_add(b, a) } else { 0.0 };
                            if q != 0.0 && q.abs() < 1e-290 {
                                f64::NAN
                            } else {
                                directed(q, sign(r * b.signum()), fin && b != 0.0 && q.is_infinite(), mode)
                            }
                        }
                    }
                })
                .collect();
            for (k, c) in cases.iter().enumerate() {
                let w = want[k];
                if w.is_nan() && !(c[0].is_nan() || c[1].is_nan()) && w.to_bits() == f64::NAN.to_bits() {
                    let r = f64::from_bits(got[k]);
                    // Deep underflow: at least the exact side of zero.
                    assert!(r.is_finite(), "{op}.{mode}.f64 {c:?}");
                    continue;
                }
                check_f(&format!("{op}.{mode}.f64"), &cases[k..k + 1], &got[k..k + 1], &want[k..k + 1]);
            }
        }
        for op in ["sqrt", "rcp"] {
            let got = run(&format!("{op}.{mode}.f64 %d, %a;"), &cases);
            let want: Vec<f64> = cases
                .iter()
                .map(|c| {
                    let a = c[0];
                    if op == "sqrt" {
                        let s = a.sqrt();
                        let e = if s.is_finite() && s != 0.0 { (-s).mul_add(s, a) } else { 0.0 };
                        directed(s, sign(e), false, mode)
                    } else {
                        let q = 1.0 / a;
                        let r = if q.is_finite() && q != 0.0 { (-q).mul_add(a, 1.0) } else { 0.0 };
                        directed(q, sign(r * a.signum()), a.is_finite() && a != 0.0 && q.is_infinite(), mode)
                    }
                })
                .collect();
            check_f(&format!("{op}.{mode}.f64"), &cases, &got, &want);
        }
    }
    // fma.f64 with a directed mode is refused (not implemented), never silently rn.
    refusal(&eval_module(64, 64, "fma.rz.f64 %d, %a, %b, %c;"));
}

#[test]
fn directed_rounding_by_hand() {
    let tiny = 2f64.powi(-60);
    let c = [[1.0, tiny, 0.0], [-1.0, -tiny, 0.0]];
    assert_eq!(run("add.rp.f64 %d, %a, %b;", &c)[0], (1.0 + f64::EPSILON).to_bits());
    assert_eq!(run("add.rz.f64 %d, %a, %b;", &c)[0], 1f64.to_bits());
    assert_eq!(run("add.rm.f64 %d, %a, %b;", &c)[1], (-1.0 - f64::EPSILON).to_bits());
    assert_eq!(run("add.rz.f64 %d, %a, %b;", &c)[1], (-1f64).to_bits());
    // Overflow: rz and rm of MAX + MAX are MAX, rp is +inf; mirrored for negatives.
    let m = [[f64::MAX, f64::MAX, 0.0], [-f64::MAX, -f64::MAX, 0.0]];
    assert_eq!(run("add.rz.f64 %d, %a, %b;", &m), [f64::MAX.to_bits(), (-f64::MAX).to_bits()]);
    assert_eq!(run("add.rm.f64 %d, %a, %b;", &m), [f64::MAX.to_bits(), f64::NEG_INFINITY.to_bits()]);
    assert_eq!(run("add.rp.f64 %d, %a, %b;", &m), [f64::INFINITY.to_bits(), (-f64::MAX).to_bits()]);
    assert_eq!(run("mul.rz.f64 %d, %a, %b;", &[[f64::MAX, 2.0, 0.0]]), [f64::MAX.to_bits()]);
    assert_eq!(run("div.rz.f64 %d, %a, %b;", &[[f64::MAX, 0.5, 0.0]]), [f64::MAX.to_bits()]);
    // Division by zero is exact infinity in every mode.
    assert_eq!(run("div.rz.f64 %d, %a, %b;", &[[1.0, 0.0, 0.0]]), [f64::INFINITY.to_bits()]);
    // A quotient below half the smallest subnormal: rp gives the smallest subnormal.
    let q = [[5e-324, 4.0, 0.0]];
    assert_eq!(run("div.rp.f64 %d, %a, %b;", &q), [1]);
    assert_eq!(run("div.rn.f64 %d, %a, %b;", &q), [0]);
    // Exact cancellation in rm is -0.
    assert_eq!(run("sub.rm.f64 %d, %a, %b;", &[[2.5, 2.5, 0.0]]), [(-0.0f64).to_bits()]);
    assert_eq!(run("sub.rn.f64 %d, %a, %b;", &[[2.5, 2.5, 0.0]]), [0]);
    // 1/3: rn and rp round up from 0x3fd5555555555555? The nearest is ...555 (below
    // 1/3), so rp is ...556 and rz/rm stay.
    let t = [[1.0, 3.0, 0.0]];
    assert_eq!(run("div.rn.f64 %d, %a, %b;", &t), [0x3fd5_5555_5555_5555]);
    assert_eq!(run("div.rp.f64 %d, %a, %b;", &t), [0x3fd5_5555_5555_5556]);
    assert_eq!(run("div.rm.f64 %d, %a, %b;", &t), [0x3fd5_5555_5555_5555]);
}

#[test]
fn rcp_approx_ftz_f64() {
    let hi = |x: f64| f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000);
    let special = [
        (f64::NEG_INFINITY, (-0.0f64).to_bits()),
        (-1e-310, f64::NEG_INFINITY.to_bits()),
        (-0.0, f64::NEG_INFINITY.to_bits()),
        (0.0, f64::INFINITY.to_bits()),
        (1e-310, f64::INFINITY.to_bits()),
        (f64::INFINITY, 0),
        (f64::NAN, 0x7fff_ffff_0000_0000),
        // A NaN whose upper word alone is -Inf: only a[63:32] is read, so -0.0.
        (f64::from_bits(0xfff0_0000_dead_beef), (-0.0f64).to_bits()),
        (f64::from_bits(0x7ff0_0001_0000_0000), 0x7fff_ffff_0000_0000),
    ];
    let cases: Vec<[f64; 3]> = special.iter().map(|s| [s.0, 0.0, 0.0]).collect();
    let got = run("rcp.approx.ftz.f64 %d, %a;", &cases);
    for (k, s) in special.iter().enumerate() {
        assert_eq!(got[k], s.1, "rcp.approx.ftz.f64 of {:e}", s.0);
    }
    // Normal inputs: the low 32 bits of d are zero, and d approximates the
    // reciprocal of a's upper word. (The ISA states no error bound; 2^-19 relative
    // is what 20 mantissa bits in and out allow.) A result that would be subnormal
    // (1/2^1023) is flushed to zero.
    let vals: Vec<f64> = values().into_iter().filter(|x| x.is_normal() && x.abs() < 1e300).collect();
    let cases: Vec<[f64; 3]> = vals.iter().map(|&x| [x, 0.0, 0.0]).collect();
    let got = run("rcp.approx.ftz.f64 %d, %a;", &cases);
    for (k, &x) in vals.iter().enumerate() {
        assert_eq!(got[k] & 0xffff_ffff, 0, "low word of rcp.approx.ftz.f64 of {x:e}");
        let want = 1.0 / hi(x);
        let r = f64::from_bits(got[k]);
        assert!(((r - want) / want).abs() < 2f64.powi(-19), "rcp.approx.ftz.f64 of {x:e}: {r:e}");
    }
    assert_eq!(run("rcp.approx.ftz.f64 %d, %a;", &[[2f64.powi(1023), 0.0, 0.0]]), [0]);
    // Only the .ftz form exists for f64.
    refusal(&eval_module(64, 64, "rcp.approx.f64 %d, %a;"));
}

#[test]
fn rsqrt_approx_f64_special_values() {
    // rsqrt table: -Inf -> NaN, -normal -> NaN, -0 -> -Inf, +0 -> +Inf, +Inf -> +0.
    let c = [
        [f64::NEG_INFINITY, 0.0, 0.0],
        [-2.0, 0.0, 0.0],
        [-0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [f64::INFINITY, 0.0, 0.0],
    ];
    let got = run("rsqrt.approx.f64 %d, %a;", &c);
    assert!(f64::from_bits(got[0]).is_nan() && f64::from_bits(got[1]).is_nan());
    assert_eq!(got[2..], [f64::NEG_INFINITY.to_bits(), f64::INFINITY.to_bits(), 0]);
    let got = run("rsqrt.approx.f64 %d, %a;", &[[4.0, 0.0, 0.0]]);
    assert!((f64::from_bits(got[0]) - 0.5).abs() < 1e-9);
}
