//! Logic and bit instructions (PTX ISA §9.7.1.12-20, §9.7.8): and/or/xor/not/cnot,
//! popc, clz, brev, bfind(.shiftamt), bfi, bfe. Expected values are the ISA's
//! semantics pseudocode written out bit by bit.

mod common;
use common::*;

fn values64() -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        2,
        0x10,
        0x8000_0000,
        0x7fff_ffff,
        0xffff_ffff,
        0xffff_fff0,
        0x1_0000_0000,
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        (1 << 63) - 1,
        0x0123_4567_89ab_cdef,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x);
    }
    v
}

fn values32() -> Vec<u32> {
    values64().iter().flat_map(|&v| [v as u32, (v >> 32) as u32]).collect()
}

#[test]
fn logic_ops() {
    let v = values32();
    let cases: Vec<[u32; 3]> = v.iter().zip(v.iter().rev()).map(|(&a, &b)| [a, b, 0]).collect();
    let w = |f: &dyn Fn(u32, u32) -> u32| -> Vec<u32> { cases.iter().map(|c| f(c[0], c[1])).collect() };
    check("and.b32", &cases, &eval32("and.b32 %d, %a, %b;", &cases), &w(&|a, b| a & b));
    check("or.b32", &cases, &eval32("or.b32 %d, %a, %b;", &cases), &w(&|a, b| a | b));
    check("xor.b32", &cases, &eval32("xor.b32 %d, %a, %b;", &cases), &w(&|a, b| a ^ b));
    check("not.b32", &cases, &eval32("not.b32 %d, %a;", &cases), &w(&|a, _| !a));
    // cnot: d = (a == 0) ? 1 : 0.
    check("cnot.b32", &cases, &eval32("cnot.b32 %d, %a;", &cases), &w(&|a, _| (a == 0) as u32));
    let v = values64();
    let c64: Vec<[u64; 3]> = v.iter().zip(v.iter().rev()).map(|(&a, &b)| [a, b, 0]).collect();
    let w64 = |f: &dyn Fn(u64, u64) -> u64| -> Vec<u64> { c64.iter().map(|c| f(c[0], c[1])).collect() };
    check_hex("and.b64", &c64, &eval64("and.b64 %d, %a, %b;", &c64), &w64(&|a, b| a & b));
    check_hex("xor.b64", &c64, &eval64("xor.b64 %d, %a, %b;", &c64), &w64(&|a, b| a ^ b));
    check_hex("not.b64", &c64, &eval64("not.b64 %d, %a;", &c64), &w64(&|a, _| !a));
    let c16: Vec<[u64; 3]> = c64.iter().map(|c| [c[0] & 0xffff, c[1] & 0xffff, 0]).collect();
    let got = eval(16, 16, "or.b16 %d, %a, %b;", &c16);
    check_hex("or.b16", &c16, &got, &c16.iter().map(|c| c[0] | c[1]).collect::<Vec<_>>());
}

#[test]
fn predicate_logic() {
    // and/or/xor/not on .pred, through setp and selp.
    let mut cases = Vec::new();
    for a in 0..2u32 {
        for b in 0..2u32 {
            cases.push([a, b, 0]);
        }
    }
    let body = "setp.ne.u32 %p0, %a, 0;
    setp.ne.u32 %p1, %b, 0;
    and.pred %p2, %p0, %p1;
    selp.u32 %d, 1, 0, %p2;
    or.pred %p2, %p0, %p1;
    { .reg .b32 %t; selp.u32 %t, 2, 0, %p2; or.b32 %d, %d, %t; }
    xor.pred %p2, %p0, %p1;
    { .reg .b32 %t; selp.u32 %t, 4, 0, %p2; or.b32 %d, %d, %t; }
    not.pred %p2, %p0;
    { .reg .b32 %t; selp.u32 %t, 8, 0, %p2; or.b32 %d, %d, %t; }";
    let got = eval32(body, &cases);
    let want: Vec<u32> = cases
        .iter()
        .map(|c| (c[0] & c[1]) | (c[0] | c[1]) << 1 | (c[0] ^ c[1]) << 2 | (1 - c[0]) << 3)
        .collect();
    check("pred logic", &cases, &got, &want);
}

#[test]
fn popc_clz_brev() {
    let v = values64();
    let c64: Vec<[u64; 3]> = v.iter().map(|&a| [a, 0, 0]).collect();
    // popc / clz write a .u32 destination.
    let got = eval(64, 32, "popc.b64 %d, %a;", &c64);
    check_hex("popc.b64", &c64, &got, &v.iter().map(|a| a.count_ones() as u64).collect::<Vec<_>>());
    let got = eval(64, 32, "clz.b64 %d, %a;", &c64);
    // clz: count while the top bit is zero, up to the width (64 for zero).
    let clz = |mut a: u64, w: u32| {
        let mut d = 0;
        while d < w && a & (1 << (w - 1)) == 0 {
            d += 1;
            a <<= 1;
        }
        d as u64
    };
    check_hex("clz.b64", &c64, &got, &v.iter().map(|&a| clz(a, 64)).collect::<Vec<_>>());
    let got = eval64("brev.b64 %d, %a;", &c64);
    let brev = |a: u64, w: u32| (0..w).fold(0u64, |d, i| d | ((a >> (w - 1 - i)) & 1) << i);
    check_hex("brev.b64", &c64, &got, &v.iter().map(|&a| brev(a, 64)).collect::<Vec<_>>());

    let v = values32();
    let c32: Vec<[u32; 3]> = v.iter().map(|&a| [a, 0, 0]).collect();
    check(
        "popc.b32",
        &c32,
        &eval32("popc.b32 %d, %a;", &c32),
        &v.iter().map(|a| a.count_ones()).collect::<Vec<_>>(),
    );
    check(
        "clz.b32",
        &c32,
        &eval32("clz.b32 %d, %a;", &c32),
        &v.iter().map(|&a| clz(a as u64, 32) as u32).collect::<Vec<_>>(),
    );
    check(
        "brev.b32",
        &c32,
        &eval32("brev.b32 %d, %a;", &c32),
        &v.iter().map(|&a| brev(a as u64, 32) as u32).collect::<Vec<_>>(),
    );
}

/// bfind: position of the most significant non-sign bit, 0xffffffff when none;
/// .shiftamt gives msb - position (ISA §9.7.1.16 semantics).
fn bfind(a: u64, w: u32, signed: bool, shiftamt: bool) -> u64 {
    let msb = w - 1;
    let mut a = if w == 64 { a } else { a & ((1 << w) - 1) };
    if signed && a >> msb & 1 == 1 {
        a = !a;
    }
    let mut d = 0xffff_ffffu64;
    for i in (0..=msb).rev() {
        if a >> i & 1 == 1 {
            d = i as u64;
            break;
        }
    }
    if shiftamt && d != 0xffff_ffff {
        d = msb as u64 - d;
    }
    d
}

#[test]
fn bfind_all_types() {
    let v = values64();
    let c64: Vec<[u64; 3]> = v.iter().map(|&a| [a, 0, 0]).collect();
    for (ty, signed) in [("u64", false), ("s64", true)] {
        for shift in [false, true] {
            let m = if shift { "bfind.shiftamt" } else { "bfind" };
            let got = eval(64, 32, &format!("{m}.{ty} %d, %a;"), &c64);
            let want: Vec<u64> = v.iter().map(|&a| bfind(a, 64, signed, shift)).collect();
            check_hex(&format!("{m}.{ty}"), &c64, &got, &want);
        }
    }
    let v = values32();
    let c32: Vec<[u32; 3]> = v.iter().map(|&a| [a, 0, 0]).collect();
    for (ty, signed) in [("u32", false), ("s32", true)] {
        for shift in [false, true] {
            let m = if shift { "bfind.shiftamt" } else { "bfind" };
            let got = eval32(&format!("{m}.{ty} %d, %a;"), &c32);
            let want: Vec<u32> = v.iter().map(|&a| bfind(a as u64, 32, signed, shift) as u32).collect();
            check(&format!("{m}.{ty}"), &c32, &got, &want);
        }
    }
    // By hand: -1 (s32) has no non-sign bit; 0x10 is bit 4, shift amount 27.
    assert_eq!(unary32("bfind.s32 %d, %a;", &[u32::MAX]), [u32::MAX]);
    assert_eq!(unary32("bfind.shiftamt.u32 %d, %a;", &[0x10]), [27]);
}

/// bfi f, a, b, pos, len: f = b with bits [pos, pos+len) from a's low bits; pos and
/// len are taken from their low 8 bits (ISA §9.7.1.20).
fn bfi(a: u64, b: u64, c: u64, d: u64, w: u32) -> u64 {
    let msb = w - 1;
    let (pos, len) = (c & 0xff, d & 0xff);
    let mut f = b;
    let mut i = 0;
    while i < len && pos + i <= msb as u64 {
        let bit = a >> i & 1;
        f = (f & !(1 << (pos + i))) | bit << (pos + i);
        i += 1;
    }
    f
}

/// bfe d, a, pos, len: sign bit 0 for unsigned or len 0, else a[min(pos+len-1, msb)].
fn bfe(a: u64, b: u64, c: u64, w: u32, signed: bool) -> u64 {
    let msb = w as u64 - 1;
    let (pos, len) = (b & 0xff, c & 0xff);
    let sbit = if !signed || len == 0 { 0 } else { a >> (pos + len - 1).min(msb) & 1 };
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb { a >> (pos + i) & 1 } else { sbit };
        d |= bit << i;
    }
    d
}

#[test]
fn bit_field_insert_and_extract() {
    let words = [0xdead_beef_u64, 0x8000_0001, 0x7fff_ffff, 0, u32::MAX as u64];
    let pos = [0u64, 1, 4, 16, 28, 31, 32, 40, 255, 256 + 3, 0x1_0000_0004];
    let len = [0u64, 1, 3, 8, 16, 31, 32, 33, 255, 256 + 5];
    let mut c32 = Vec::new();
    let mut c64 = Vec::new();
    for &a in &words {
        for &p in &pos {
            for &l in &len {
                c32.push((a, p, l));
                c64.push((a.wrapping_mul(0x9e37_79b9_7f4a_7c15), p, l));
            }
        }
    }
    // bfi takes five operands; the fifth (len) comes from a second input word.
    let run_bfi = |w: u32, cases: &[(u64, u64, u64)], b: u64| -> Vec<u64> {
        let mut out = Vec::new();
        for chunk in cases.chunks(256) {
            let c: Vec<[u64; 3]> = chunk.iter().map(|&(a, p, l)| [a, p | l << 32, 0]).collect();
            let (iw, body) = if w == 32 {
                (
                    64,
                    format!(
                        "{{ .reg .b32 %x, %p, %l; cvt.u32.u64 %x, %a; mov.b64 {{%p, %l}}, %b;
                        bfi.b32 %x, %x, {b}, %p, %l; cvt.u64.u32 %d, %x; }}"
                    ),
                )
            } else {
                (64, format!("{{ .reg .b32 %p, %l; mov.b64 {{%p, %l}}, %b; bfi.b64 %d, %a, {b}, %p, %l; }}"))
            };
            out.extend(eval(iw, 64, &body, &c));
        }
        out
    };
    // The pos/len register halves are 32-bit: fold the 64-bit test values.
    let c32: Vec<(u64, u64, u64)> =
        c32.iter().map(|&(a, p, l)| (a, p as u32 as u64, l as u32 as u64)).collect();
    let c64: Vec<(u64, u64, u64)> =
        c64.iter().map(|&(a, p, l)| (a, p as u32 as u64, l as u32 as u64)).collect();
    let b32 = 0x1234_5678u64;
    let got = run_bfi(32, &c32, b32);
    let want: Vec<u64> = c32.iter().map(|&(a, p, l)| bfi(a, b32, p, l, 32)).collect();
    check_hex("bfi.b32", &c32, &got, &want);
    let b64 = 0x0f0f_1234_5678_9abcu64;
    let got = run_bfi(64, &c64, b64);
    let want: Vec<u64> = c64.iter().map(|&(a, p, l)| bfi(a, b64, p, l, 64)).collect();
    check_hex("bfi.b64", &c64, &got, &want);

    for (ty, signed) in [("u32", false), ("s32", true)] {
        let c: Vec<[u32; 3]> = c32.iter().map(|&(a, p, l)| [a as u32, p as u32, l as u32]).collect();
        let got = eval32(&format!("bfe.{ty} %d, %a, %b, %c;"), &c);
        let want: Vec<u32> =
            c.iter().map(|c| bfe(c[0] as u64, c[1] as u64, c[2] as u64, 32, signed) as u32).collect();
        check(&format!("bfe.{ty}"), &c, &got, &want);
    }
    for (ty, signed) in [("u64", false), ("s64", true)] {
        let c: Vec<[u64; 3]> = c64.iter().map(|&(a, p, l)| [a, p, l]).collect();
        let got = eval64(
            &format!(
                "{{ .reg .b32 %p, %l; cvt.u32.u64 %p, %b; cvt.u32.u64 %l, %c; bfe.{ty} %d, %a, %p, %l; }}"
            ),
            &c,
        );
        let want: Vec<u64> = c.iter().map(|c| bfe(c[0], c[1], c[2], 64, signed)).collect();
        check_hex(&format!("bfe.{ty}"), &c, &got, &want);
    }
    // By hand: bfe.s32 of 0x80 at pos 4, len 4 is 0b1000 sign-extended: -8.
    assert_eq!(eval32("bfe.s32 %d, %a, %b, %c;", &[[0x80, 4, 4]]), [(-8i32) as u32]);
    assert_eq!(eval32("bfe.u32 %d, %a, %b, %c;", &[[0x80, 4, 4]]), [8]);
}
