//! The approximate f32 functions (PTX ISA §9.7.3.13-22): ex2, lg2, rcp, rsqrt, sqrt,
//! sin, cos, tanh .approx, within the error bounds the ISA states, and their
//! special-value tables, with and without .ftz.
//!
//! ISA bounds (Notes of each instruction):
//! - ex2.approx.f32: "The maximum ulp error is 2 ulp from correctly rounded result
//!   across the full range of inputs."
//! - lg2.approx.f32: "The maximum absolute error is 2^-22 when the input operand is
//!   in the range (0.5, 2). For positive finite inputs outside of this interval,
//!   maximum relative error is 2^-22."
//! - rcp.approx.f32: "The maximum ulp error is 1 across the full range of inputs."
//! - rsqrt.approx.f32: "maximum relative error ... over the entire positive finite
//!   floating-point range is 2^-22.9."
//! - sqrt.approx.f32: "The maximum relative error over the entire positive finite
//!   floating-point range is 2^-23."
//! - sin/cos.approx.f32: maximum absolute error 2^-20.5 in [-2pi, 2pi], 2^-14.7 in
//!   [-100pi, 100pi].
//! - tanh.approx.f32: "The maximum relative error over the entire floating point
//!   range is 2^-11"; "subnormal inputs gets passed through to the output".
//! - ".ftz flushes subnormal inputs and results to sign-preserving zero".

mod common;
use common::*;

fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let i = x.to_bits() as i32 as i64;
        if i < 0 {
            i64::from(i32::MIN) - i
        } else {
            i
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// A spread of f32 inputs: every 2^16-th bit pattern of each sign, plus specials.
fn sweep() -> Vec<f32> {
    let mut v: Vec<f32> =
        (0..=0xffffu32).step_by(7).map(|k| f32::from_bits(k << 16 | (k * 0x9e37) & 0xffff)).collect();
    v.retain(|x| !x.is_nan());
    v
}

fn run1(body: &str, xs: &[f32]) -> Vec<f32> {
    unary32(body, &xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        .into_iter()
        .map(f32::from_bits)
        .collect()
}

/// (input, expected) pairs of a special-value table; NaN expected means any NaN.
fn table(body: &str, rows: &[(f32, f32)]) {
    let got = run1(body, &rows.iter().map(|r| r.0).collect::<Vec<_>>());
    for (k, &(x, want)) in rows.iter().enumerate() {
        if want.is_nan() {
            assert!(got[k].is_nan(), "{body} of {x:e}: got {}", got[k]);
        } else {
            assert_eq!(got[k].to_bits(), want.to_bits(), "{body} of {x:e}: got {:e}", got[k]);
        }
    }
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

#[test]
fn ex2() {
    let xs: Vec<f32> = sweep().into_iter().filter(|x| x.abs() < 200.0).collect();
    for ftz in [false, true] {
        let f = if ftz { ".ftz" } else { "" };
        let got = run1(&format!("ex2.approx{f}.f32 %d, %a;"), &xs);
        for (k, &x) in xs.iter().enumerate() {
            let mut want = (x as f64).exp2() as f32;
            if ftz && want.is_subnormal() {
                want = 0.0;
            }
            assert!(ulps(got[k], want) <= 2, "ex2.approx{f} of {x:e}: got {:e}, want {want:e}", got[k]);
        }
    }
    let rows = [
        (-INF, 0.0),
        (-0.0, 1.0),
        (0.0, 1.0),
        (INF, INF),
        (NAN, NAN),
        (1e-40, 1.0),
        (-140.0, 2f32.powi(-140)),
    ];
    table("ex2.approx.f32 %d, %a;", &rows);
    table("ex2.approx.ftz.f32 %d, %a;", &[(-140.0, 0.0), (1e-40, 1.0), (-INF, 0.0)]);
    refusal(&eval_module(32, 32, "ex2.f32 %d, %a;"));
}

#[test]
fn lg2() {
    let xs: Vec<f32> = sweep().into_iter().filter(|x| *x > 0.0 && x.is_finite()).collect();
    for ftz in [false, true] {
        let f = if ftz { ".ftz" } else { "" };
        let got = run1(&format!("lg2.approx{f}.f32 %d, %a;"), &xs);
        for (k, &x) in xs.iter().enumerate() {
            if ftz && x.is_subnormal() {
                assert_eq!(got[k], -INF, "lg2.approx.ftz of subnormal {x:e}");
                continue;
            }
            let want = (x as f64).log2();
            let err = (got[k] as f64 - want).abs();
            let ok =
                if x > 0.5 && x < 2.0 { err <= 2f64.powi(-22) } else { err <= want.abs() * 2f64.powi(-22) };
            assert!(ok, "lg2.approx{f} of {x:e}: got {}, want {want}", got[k]);
        }
    }
    let rows = [(-INF, NAN), (-2.0, NAN), (-0.0, -INF), (0.0, -INF), (INF, INF), (NAN, NAN)];
    table("lg2.approx.f32 %d, %a;", &rows);
    table("lg2.approx.ftz.f32 %d, %a;", &[(-1e-40, -INF)]);
}

#[test]
fn rcp_rsqrt_sqrt() {
    let xs: Vec<f32> = sweep().into_iter().filter(|x| x.is_finite() && *x != 0.0).collect();
    let got = run1("rcp.approx.f32 %d, %a;", &xs);
    for (k, &x) in xs.iter().enumerate() {
        let want = (1.0 / x as f64) as f32;
        assert!(ulps(got[k], want) <= 1, "rcp.approx of {x:e}: got {:e}, want {want:e}", got[k]);
    }
    table("rcp.approx.f32 %d, %a;", &[(-INF, -0.0), (-0.0, -INF), (0.0, INF), (INF, 0.0), (NAN, NAN)]);
    table("rcp.approx.ftz.f32 %d, %a;", &[(1e-40, INF), (-1e-40, -INF), (2f32.powi(127) * 1.5, 0.0)]);

    let pos: Vec<f32> = xs.iter().copied().filter(|x| *x > 0.0).collect();
    let got = run1("rsqrt.approx.f32 %d, %a;", &pos);
    for (k, &x) in pos.iter().enumerate() {
        let want = 1.0 / (x as f64).sqrt();
        let rel = ((got[k] as f64 - want) / want).abs();
        assert!(rel <= 2f64.powf(-22.9), "rsqrt.approx of {x:e}: got {:e}", got[k]);
    }
    table(
        "rsqrt.approx.f32 %d, %a;",
        &[(-INF, NAN), (-1.0, NAN), (-0.0, -INF), (0.0, INF), (INF, 0.0), (NAN, NAN)],
    );
    table("rsqrt.approx.ftz.f32 %d, %a;", &[(1e-40, INF)]);

    let got = run1("sqrt.approx.f32 %d, %a;", &pos);
    for (k, &x) in pos.iter().enumerate() {
        let want = (x as f64).sqrt();
        let rel = ((got[k] as f64 - want) / want).abs();
        assert!(rel <= 2f64.powi(-23), "sqrt.approx of {x:e}: got {:e}", got[k]);
    }
    table(
        "sqrt.approx.f32 %d, %a;",
        &[(-INF, NAN), (-1.0, NAN), (-0.0, -0.0), (0.0, 0.0), (INF, INF), (NAN, NAN)],
    );
    table("sqrt.approx.ftz.f32 %d, %a;", &[(1e-40, 0.0), (-1e-40, -0.0)]);
}

#[test]
fn sin_cos() {
    let pi = std::f32::consts::PI;
    let xs: Vec<f32> = (-2000..=2000).map(|k| k as f32 * (100.0 * pi / 2000.0)).collect();
    for (op, f) in [("sin", f64::sin as fn(f64) -> f64), ("cos", f64::cos)] {
        for ftz in [false, true] {
            let m = if ftz { ".ftz" } else { "" };
            let got = run1(&format!("{op}.approx{m}.f32 %d, %a;"), &xs);
            for (k, &x) in xs.iter().enumerate() {
                let err = (got[k] as f64 - f(x as f64)).abs();
                let bound = if x.abs() <= 2.0 * pi { 2f64.powf(-20.5) } else { 2f64.powf(-14.7) };
                assert!(err <= bound, "{op}.approx{m} of {x}: got {}, error {err:e}", got[k]);
            }
        }
    }
    table("sin.approx.f32 %d, %a;", &[(-INF, NAN), (-0.0, -0.0), (0.0, 0.0), (INF, NAN), (NAN, NAN)]);
    table("cos.approx.f32 %d, %a;", &[(-INF, NAN), (-0.0, 1.0), (0.0, 1.0), (INF, NAN), (NAN, NAN)]);
    table("sin.approx.ftz.f32 %d, %a;", &[(1e-40, 0.0), (-1e-40, -0.0)]);
    table("sin.approx.f32 %d, %a;", &[(1e-40, 1e-40)]);
}

#[test]
fn tanh() {
    let xs: Vec<f32> = sweep().into_iter().filter(|x| x.is_finite()).collect();
    let got = run1("tanh.approx.f32 %d, %a;", &xs);
    for (k, &x) in xs.iter().enumerate() {
        let want = (x as f64).tanh();
        if want != 0.0 {
            let rel = ((got[k] as f64 - want) / want).abs();
            assert!(rel <= 2f64.powi(-11), "tanh.approx of {x:e}: got {:e}", got[k]);
        }
    }
    table(
        "tanh.approx.f32 %d, %a;",
        &[(-INF, -1.0), (-0.0, -0.0), (0.0, 0.0), (INF, 1.0), (NAN, NAN), (1e-40, 1e-40)],
    );
    // tanh has no .ftz form.
    refusal(&eval_module(32, 32, "tanh.approx.ftz.f32 %d, %a;"));
}
