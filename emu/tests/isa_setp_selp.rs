//! Comparison and selection (PTX ISA §9.7.8.1 setp, §9.7.8.4 selp, §9.3.1 comparison
//! operators): every integer and float comparison, ordered and unordered with NaN,
//! the .and/.or/.xor combining forms with the p|q pair, and selp.
//!
//! ISA facts: "The ordered floating-point comparisons are eq, ne, lt, le, gt and ge.
//! If either operand is NaN, the result is False"; the unordered ones (equ ... geu)
//! are True when either operand is NaN; num is "!isNaN(a) && !isNaN(b)" and nan
//! "isNaN(a) || isNaN(b)". setp computes t = a CmpOp b, then "p = BoolOp(t, c);
//! q = BoolOp(!t, c)".

mod common;
use common::*;

/// Writes p (bit 0) and q (bit 1) of a `setp ... %p0|%p1` into %d.
const PQ: &str = "selp.u32 %d, 1, 0, %p0;
    { .reg .b32 %t; selp.u32 %t, 2, 0, %p1; or.b32 %d, %d, %t; }";

fn int_values(w: u32) -> Vec<u64> {
    let m = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
    let top = 1u64 << (w - 1);
    vec![0, 1, 2, m, m - 1, top, top - 1, top + 1, 0x1234 & m]
}

fn int_cmp(op: &str, a: u64, b: u64, w: u32, signed: bool) -> bool {
    let sx = |x: u64| ((x << (64 - w)) as i64) >> (64 - w);
    let (sa, sb) = (sx(a), sx(b));
    match (op, signed) {
        ("eq", _) => a == b,
        ("ne", _) => a != b,
        ("lt", true) => sa < sb,
        ("le", true) => sa <= sb,
        ("gt", true) => sa > sb,
        ("ge", true) => sa >= sb,
        ("lt" | "lo", false) => a < b,
        ("le" | "ls", false) => a <= b,
        ("gt" | "hi", false) => a > b,
        ("ge" | "hs", false) => a >= b,
        _ => unreachable!(),
    }
}

#[test]
fn integer_comparisons() {
    for w in [16u32, 32, 64] {
        let v = int_values(w);
        let mut cases = Vec::new();
        for &a in &v {
            for &b in &v {
                cases.push([a, b, 0]);
            }
        }
        let ops_u = ["eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs"];
        let ops_s = ["eq", "ne", "lt", "le", "gt", "ge"];
        for (ty, signed, ops) in
            [("u", false, &ops_u[..]), ("s", true, &ops_s[..]), ("b", false, &ops_u[..2])]
        {
            for op in ops {
                let got = eval(w, 32, &format!("setp.{op}.{ty}{w} %p0|%p1, %a, %b;\n{PQ}"), &cases);
                let want: Vec<u64> = cases
                    .iter()
                    .map(|c| {
                        let t = int_cmp(op, c[0], c[1], w, signed) as u64;
                        t | (1 - t) << 1
                    })
                    .collect();
                check_hex(&format!("setp.{op}.{ty}{w}"), &cases, &got, &want);
            }
        }
    }
    // lo/ls/hi/hs are unsigned-only: refused on signed types.
    refusal(&eval_module(32, 32, "setp.lo.s32 %p0, %a, %b;"));
}

fn float_values() -> Vec<f64> {
    vec![0.0, -0.0, 1.0, -1.0, 1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-40, -3.25]
}

fn float_cmp(op: &str, a: f64, b: f64) -> bool {
    let nan = a.is_nan() || b.is_nan();
    match op {
        "eq" => !nan && a == b,
        "ne" => !nan && a != b,
        "lt" => !nan && a < b,
        "le" => !nan && a <= b,
        "gt" => !nan && a > b,
        "ge" => !nan && a >= b,
        "equ" => nan || a == b,
        "neu" => nan || a != b,
        "ltu" => nan || a < b,
        "leu" => nan || a <= b,
        "gtu" => nan || a > b,
        "geu" => nan || a >= b,
        "num" => !nan,
        "nan" => nan,
        _ => unreachable!(),
    }
}

const FLOAT_OPS: [&str; 14] =
    ["eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"];

#[test]
fn float_comparisons_with_nan_and_signed_zero() {
    let v = float_values();
    let mut pairs = Vec::new();
    for &a in &v {
        for &b in &v {
            pairs.push((a, b));
        }
    }
    let c32: Vec<[u64; 3]> =
        pairs.iter().map(|&(a, b)| [(a as f32).to_bits() as u64, (b as f32).to_bits() as u64, 0]).collect();
    let c64: Vec<[u64; 3]> = pairs.iter().map(|&(a, b)| [a.to_bits(), b.to_bits(), 0]).collect();
    for op in FLOAT_OPS {
        let want32: Vec<u64> = pairs
            .iter()
            .map(|&(a, b)| {
                let t = float_cmp(op, a as f32 as f64, b as f32 as f64) as u64;
                t | (1 - t) << 1
            })
            .collect();
        let got = eval(32, 32, &format!("setp.{op}.f32 %p0|%p1, %a, %b;\n{PQ}"), &c32);
        check_hex(&format!("setp.{op}.f32"), &pairs, &got, &want32);
        let want64: Vec<u64> = pairs
            .iter()
            .map(|&(a, b)| {
                let t = float_cmp(op, a, b) as u64;
                t | (1 - t) << 1
            })
            .collect();
        let got = eval(64, 32, &format!("setp.{op}.f64 %p0|%p1, %a, %b;\n{PQ}"), &c64);
        check_hex(&format!("setp.{op}.f64"), &pairs, &got, &want64);
    }
    // .ftz: subnormal inputs compare as sign-preserving zero: 1e-40 == 0.
    let sub = (1e-40f32).to_bits() as u64;
    let got = eval(32, 32, &format!("setp.eq.ftz.f32 %p0|%p1, %a, %b;\n{PQ}"), &[[sub, 0, 0], [sub, sub, 0]]);
    assert_eq!(got, [1, 1]);
    let got = eval(32, 32, &format!("setp.eq.f32 %p0|%p1, %a, %b;\n{PQ}"), &[[sub, 0, 0]]);
    assert_eq!(got, [2]);
    // Integer-only operators are not float comparisons.
    refusal(&eval_module(32, 32, "setp.lo.f32 %p0, %a, %b;"));
    refusal(&eval_module(32, 32, "setp.equ.s32 %p0, %a, %b;"));
}

/// setp.CmpOp.BoolOp p|q, a, b, c: p = t BoolOp c, q = !t BoolOp c.
#[test]
fn combining_forms() {
    let mut cases = Vec::new();
    for (a, b) in [(1u32, 2u32), (2, 1), (5, 5)] {
        for c in 0..2 {
            cases.push([a, b, c]);
        }
    }
    for bop in ["and", "or", "xor"] {
        let body = format!("setp.ne.u32 %p2, %c, 0;\n    setp.lt.{bop}.u32 %p0|%p1, %a, %b, %p2;\n{PQ}");
        let got = eval32(&body, &cases);
        let f = |x: bool, c: bool| match bop {
            "and" => x && c,
            "or" => x || c,
            _ => x ^ c,
        };
        let want: Vec<u32> = cases
            .iter()
            .map(|k| {
                let t = k[0] < k[1];
                let c = k[2] != 0;
                f(t, c) as u32 | (f(!t, c) as u32) << 1
            })
            .collect();
        check(&format!("setp.lt.{bop}"), &cases, &got, &want);
    }
    // With a NaN operand the ordered t is false: p = false AND c, q = true AND c.
    let nan = f32::NAN.to_bits();
    let got = eval32(
        &format!("setp.ne.u32 %p2, %c, 0;\n    setp.gt.and.f32 %p0|%p1, %a, %b, %p2;\n{PQ}"),
        &[[nan, 0, 1], [nan, 0, 0]],
    );
    assert_eq!(got, [2, 0]);
}

/// A single destination leaves the other predicate alone; a guarded setp writes
/// only the lanes whose guard is true.
#[test]
fn single_destination_and_guard() {
    let got = eval32(
        "setp.eq.u32 %p1, %a, %a;
    setp.ne.u32 %p3, %c, 0;
    @%p3 setp.lt.u32 %p0, %a, %b;
    @!%p3 setp.eq.u32 %p0, %a, 77;
    selp.u32 %d, 1, 0, %p0;
    { .reg .b32 %t; selp.u32 %t, 2, 0, %p1; or.b32 %d, %d, %t; }",
        &[[1, 2, 1], [2, 1, 1], [77, 0, 0], [1, 2, 0]],
    );
    assert_eq!(got, [3, 2, 3, 2]);
}

/// selp d, a, b, c: d = c ? a : b, at every type width.
#[test]
fn selp_all_widths() {
    let cases = [[0xdead_beef_u32, 0x1234_5678, 1], [0xdead_beef, 0x1234_5678, 0]];
    let body = |ty: &str| format!("setp.ne.u32 %p0, %c, 0;\n    selp.{ty} %d, %a, %b, %p0;");
    for ty in ["b32", "u32", "s32", "f32"] {
        assert_eq!(eval32(&body(ty), &cases), [0xdead_beef, 0x1234_5678], "selp.{ty}");
    }
    let c64 = [[u64::MAX - 5, 7, 1], [u64::MAX - 5, 7, 0]];
    for ty in ["b64", "u64", "s64", "f64"] {
        let got = eval64(&format!("setp.ne.u64 %p0, %c, 0;\n    selp.{ty} %d, %a, %b, %p0;"), &c64);
        assert_eq!(got, [u64::MAX - 5, 7], "selp.{ty}");
    }
    let c16 = [[0xbeef_u64, 0x1234, 1], [0xbeef, 0x1234, 0]];
    let got = eval(16, 16, "setp.ne.u16 %p0, %c, 0;\n    selp.u16 %d, %a, %b, %p0;", &c16);
    assert_eq!(got, [0xbeef, 0x1234]);
    // Immediate operands.
    let got = eval32("setp.ne.u32 %p0, %c, 0;\n    selp.s32 %d, -1, 5, %p0;", &cases);
    assert_eq!(got, [u32::MAX, 5]);
}
