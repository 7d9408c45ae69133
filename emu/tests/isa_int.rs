//! Integer arithmetic (PTX ISA §9.7.1): add/sub(.sat), mul.lo/hi/wide, mad.lo/hi/wide,
//! div, rem, min, max, neg, abs, shl, shr at 16, 32 and 64 bits, signed and unsigned.
//! Expected values come from Rust's integer operations on the matching native types.

mod common;
use common::*;

/// Edge values of a `w`-bit integer, as bit patterns, plus a few pseudo-random ones.
fn values(w: u32) -> Vec<u64> {
    let m = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
    let top = 1u64 << (w - 1);
    let mut v = vec![0, 1, 2, 3, 7, 10, m, m - 1, m - 6, top, top - 1, top + 1, 0x5555_5555_5555_5555 & m];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..6 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.push((x >> 7) & m);
    }
    v
}

fn pairs(w: u32) -> Vec<[u64; 3]> {
    let v = values(w);
    let mut out = Vec::new();
    for (i, &a) in v.iter().enumerate() {
        for &b in &v {
            out.push([a, b, v[(i * 7 + 3) % v.len()]]);
        }
    }
    out
}

macro_rules! family {
    ($test:ident, $w:expr, $u:ty, $s:ty, $wu:ty, $ws:ty) => {
        #[test]
        fn $test() {
            const W: u32 = $w;
            let cases = pairs(W);
            let run = |body: &str| eval(W, W, body, &cases);
            let u = |x: u64| x as $u;
            let s = |x: u64| x as $u as $s;
            let back_s = |x: $s| x as $u as u64;
            let want = |f: &dyn Fn(u64, u64, u64) -> u64| -> Vec<u64> {
                cases.iter().map(|c| f(c[0], c[1], c[2])).collect()
            };
            let k = |op: &str| format!("{op} %d, %a, %b;");

            check_hex(
                "add.u",
                &cases,
                &run(&k(&format!("add.u{W}"))),
                &want(&|a, b, _| u(a).wrapping_add(u(b)) as u64),
            );
            check_hex(
                "add.s",
                &cases,
                &run(&k(&format!("add.s{W}"))),
                &want(&|a, b, _| back_s(s(a).wrapping_add(s(b)))),
            );
            check_hex(
                "sub.u",
                &cases,
                &run(&k(&format!("sub.u{W}"))),
                &want(&|a, b, _| u(a).wrapping_sub(u(b)) as u64),
            );
            check_hex(
                "mul.lo.u",
                &cases,
                &run(&k(&format!("mul.lo.u{W}"))),
                &want(&|a, b, _| u(a).wrapping_mul(u(b)) as u64),
            );
            check_hex(
                "mul.lo.s",
                &cases,
                &run(&k(&format!("mul.lo.s{W}"))),
                &want(&|a, b, _| back_s(s(a).wrapping_mul(s(b)))),
            );
            // mul.hi: "d = t<2n-1..n>" of the full 2n-bit product t (ISA §9.7.1.3).
            check_hex(
                "mul.hi.u",
                &cases,
                &run(&k(&format!("mul.hi.u{W}"))),
                &want(&|a, b, _| ((u(a) as $wu * u(b) as $wu) >> W) as $u as u64),
            );
            check_hex(
                "mul.hi.s",
                &cases,
                &run(&k(&format!("mul.hi.s{W}"))),
                &want(&|a, b, _| ((s(a) as $ws * s(b) as $ws) >> W) as $u as u64),
            );
            check_hex(
                "mad.lo.s",
                &cases,
                &run(&format!("mad.lo.s{W} %d, %a, %b, %c;")),
                &want(&|a, b, c| back_s(s(a).wrapping_mul(s(b)).wrapping_add(s(c)))),
            );
            check_hex(
                "mad.hi.u",
                &cases,
                &run(&format!("mad.hi.u{W} %d, %a, %b, %c;")),
                &want(&|a, b, c| (((u(a) as $wu * u(b) as $wu) >> W) as $u).wrapping_add(u(c)) as u64),
            );
            check_hex(
                "mad.hi.s",
                &cases,
                &run(&format!("mad.hi.s{W} %d, %a, %b, %c;")),
                &want(&|a, b, c| back_s((((s(a) as $ws * s(b) as $ws) >> W) as $s).wrapping_add(s(c)))),
            );
            check_hex(
                "min.u",
                &cases,
                &run(&k(&format!("min.u{W}"))),
                &want(&|a, b, _| u(a).min(u(b)) as u64),
            );
            check_hex(
                "max.u",
                &cases,
                &run(&k(&format!("max.u{W}"))),
                &want(&|a, b, _| u(a).max(u(b)) as u64),
            );
            check_hex(
                "min.s",
                &cases,
                &run(&k(&format!("min.s{W}"))),
                &want(&|a, b, _| back_s(s(a).min(s(b)))),
            );
            check_hex(
                "max.s",
                &cases,
                &run(&k(&format!("max.s{W}"))),
                &want(&|a, b, _| back_s(s(a).max(s(b)))),
            );

            // div / rem: C semantics (truncation toward zero, remainder with the
            // dividend's sign). Division by zero "yields an unspecified,
            // machine-specific value" (ISA §9.7.1.8-9); the emulator's choice is all
            // ones for div and the dividend for rem. INT_MIN / -1 overflows; the
            // emulator wraps (INT_MIN, remainder 0).
            let div_u = |a: u64, b: u64| if u(b) == 0 { u64::MAX >> (64 - W) } else { (u(a) / u(b)) as u64 };
            let rem_u = |a: u64, b: u64| if u(b) == 0 { u(a) as u64 } else { (u(a) % u(b)) as u64 };
            let div_s = |a: u64, b: u64| {
                if u(b) == 0 {
                    u64::MAX >> (64 - W)
                } else {
                    back_s(s(a).wrapping_div(s(b)))
                }
            };
            let rem_s =
                |a: u64, b: u64| if u(b) == 0 { u(a) as u64 } else { back_s(s(a).wrapping_rem(s(b))) };
            check_hex("div.u", &cases, &run(&k(&format!("div.u{W}"))), &want(&|a, b, _| div_u(a, b)));
            check_hex("rem.u", &cases, &run(&k(&format!("rem.u{W}"))), &want(&|a, b, _| rem_u(a, b)));
            check_hex("div.s", &cases, &run(&k(&format!("div.s{W}"))), &want(&|a, b, _| div_s(a, b)));
            check_hex("rem.s", &cases, &run(&k(&format!("rem.s{W}"))), &want(&|a, b, _| rem_s(a, b)));

            // neg / abs (signed types only, ISA §9.7.1.10-11); |INT_MIN| wraps.
            check_hex(
                "neg.s",
                &cases,
                &run(&format!("neg.s{W} %d, %a;")),
                &want(&|a, _, _| back_s(s(a).wrapping_neg())),
            );
            check_hex(
                "abs.s",
                &cases,
                &run(&format!("abs.s{W} %d, %a;")),
                &want(&|a, _, _| back_s(s(a).wrapping_abs())),
            );
        }
    };
}

family!(int16, 16, u16, i16, u32, i32);
family!(int32, 32, u32, i32, u64, i64);
family!(int64, 64, u64, i64, u128, i128);

#[test]
fn div_rem_by_hand() {
    // 7 / -2 = -3 rem 1; -7 / 2 = -3 rem -1 (truncating division).
    let c = [[7, (-2i32) as u32, 0], [(-7i32) as u32, 2, 0], [i32::MIN as u32, u32::MAX, 0]];
    let q = eval32("div.s32 %d, %a, %b;", &c);
    let r = eval32("rem.s32 %d, %a, %b;", &c);
    assert_eq!(q, [(-3i32) as u32, (-3i32) as u32, i32::MIN as u32]);
    assert_eq!(r, [1, (-1i32) as u32, 0]);
}

/// mul.wide / mad.wide: "d is twice as wide as a and b to receive the full result"
/// (ISA §9.7.1.3-4); only for 16- and 32-bit types.
#[test]
fn wide_products() {
    let c16 = pairs(16);
    let got = eval(16, 32, "mul.wide.s16 %d, %a, %b;", &c16);
    let want: Vec<u64> = c16
        .iter()
        .map(|c| ((c[0] as u16 as i16 as i32) * (c[1] as u16 as i16 as i32)) as u32 as u64)
        .collect();
    check_hex("mul.wide.s16", &c16, &got, &want);
    let got = eval(16, 32, "mul.wide.u16 %d, %a, %b;", &c16);
    let want: Vec<u64> = c16.iter().map(|c| (c[0] as u16 as u32 * c[1] as u16 as u32) as u64).collect();
    check_hex("mul.wide.u16", &c16, &got, &want);

    let c32 = pairs(32);
    let got = eval(32, 64, "mul.wide.s32 %d, %a, %b;", &c32);
    let want: Vec<u64> =
        c32.iter().map(|c| ((c[0] as u32 as i32 as i64) * (c[1] as u32 as i32 as i64)) as u64).collect();
    check_hex("mul.wide.s32", &c32, &got, &want);
    let got = eval(32, 64, "mul.wide.u32 %d, %a, %b;", &c32);
    let want: Vec<u64> = c32.iter().map(|c| c[0] * c[1]).collect();
    check_hex("mul.wide.u32", &c32, &got, &want);

    // mad.wide: c is 2n bits wide; here the low word comes from %c, extended.
    let got = eval(32, 64, "{ .reg .b64 %cw; cvt.s64.s32 %cw, %c; mad.wide.s32 %d, %a, %b, %cw; }", &c32);
    let want: Vec<u64> = c32
        .iter()
        .map(|c| {
            let p = (c[0] as u32 as i32 as i64) * (c[1] as u32 as i32 as i64);
            p.wrapping_add(c[2] as u32 as i32 as i64) as u64
        })
        .collect();
    check_hex("mad.wide.s32", &c32, &got, &want);
    let got = eval(32, 64, "{ .reg .b64 %cw; cvt.u64.u32 %cw, %c; mad.wide.u32 %d, %a, %b, %cw; }", &c32);
    let want: Vec<u64> = c32.iter().map(|c| (c[0] * c[1]).wrapping_add(c[2])).collect();
    check_hex("mad.wide.u32", &c32, &got, &want);
    // mul.wide is not defined for 64-bit types: refused.
    refusal(&eval_module(64, 64, "mul.wide.u64 %d, %a, %b;"));
}

/// add.sat / sub.sat: "limits result to MININT..MAXINT (no overflow)"; .s32 only.
#[test]
fn saturating_add_sub() {
    let cases = pairs(32);
    let clamp = |x: i64| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32;
    let s = |x: u64| x as u32 as i32 as i64;
    let c32: Vec<[u32; 3]> = cases.iter().map(|c| c.map(|v| v as u32)).collect();
    let got = eval32("add.sat.s32 %d, %a, %b;", &c32);
    let want: Vec<u32> = cases.iter().map(|c| clamp(s(c[0]) + s(c[1]))).collect();
    check("add.sat.s32", &cases, &got, &want);
    let got = eval32("sub.sat.s32 %d, %a, %b;", &c32);
    let want: Vec<u32> = cases.iter().map(|c| clamp(s(c[0]) - s(c[1]))).collect();
    check("sub.sat.s32", &cases, &got, &want);
    refusal(&eval_module(32, 32, "add.sat.u32 %d, %a, %b;"));
}

/// shl / shr: the amount is an unsigned 32-bit value, and "shift amounts greater
/// than the register width N are clamped to N" (ISA §9.7.8.8-9); signed shr fills
/// with the sign bit.
#[test]
fn shifts_clamp_at_width() {
    let amounts: Vec<u64> =
        (0..=20).chain([31, 32, 33, 63, 64, 65, 1000, 0x8000_0000, 0xffff_ffff]).collect();
    for w in [16u32, 32, 64] {
        let vals = values(w);
        let mut cases = Vec::new();
        for &a in &vals {
            for &n in &amounts {
                cases.push([a, n, 0]);
            }
        }
        let m = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        let shl = |a: u64, n: u64| if n >= w as u64 { 0 } else { (a << n) & m };
        let shr_u = |a: u64, n: u64| if n >= w as u64 { 0 } else { a >> n };
        let shr_s = |a: u64, n: u64| {
            let x = ((a << (64 - w)) as i64) >> (64 - w);
            (x >> n.min(63)) as u64 & m
        };
        let (iw, pre) = match w {
            16 => (32, "{ .reg .b16 %x; cvt.u16.u32 %x, %a;"),
            32 => (32, "{ .reg .b32 %x; mov.b32 %x, %a;"),
            _ => (64, "{ .reg .b32 %n; cvt.u32.u64 %n, %b; .reg .b64 %x; mov.b64 %x, %a;"),
        };
        let amt = if w == 64 { "%n" } else { "%b" };
        let run = |op: &str| eval(iw, w, &format!("{pre} {op} %d, %x, {amt}; }}"), &cases);
        let ca: Vec<[u64; 3]> = cases.iter().map(|c| [c[0] & m, c[1], 0]).collect();
        let want = |f: &dyn Fn(u64, u64) -> u64| -> Vec<u64> { ca.iter().map(|c| f(c[0], c[1])).collect() };
        check_hex(&format!("shl.b{w}"), &ca, &run(&format!("shl.b{w}")), &want(&shl));
        check_hex(&format!("shr.u{w}"), &ca, &run(&format!("shr.u{w}")), &want(&shr_u));
        check_hex(&format!("shr.b{w}"), &ca, &run(&format!("shr.b{w}")), &want(&shr_u));
        check_hex(&format!("shr.s{w}"), &ca, &run(&format!("shr.s{w}")), &want(&shr_s));
    }
}

/// Immediates: a negative immediate is a two's complement value at the width.
#[test]
fn immediates() {
    let got = eval32("add.s32 %d, %a, -5;", &[[3, 0, 0], [0, 0, 0]]);
    assert_eq!(got, [(-2i32) as u32, (-5i32) as u32]);
    let got = eval(16, 16, "mul.lo.u16 %d, %a, 0x101;", &[[0x1234, 0, 0]]);
    assert_eq!(got, [(0x1234u16.wrapping_mul(0x101)) as u64]);
}
