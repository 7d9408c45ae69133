//! Extended-precision arithmetic (PTX ISA §9.7.2): add.cc, addc(.cc), sub.cc,
//! subc(.cc), mad.lo/hi.cc, madc.lo/hi(.cc), checked by multi-word arithmetic
//! against Rust's u128.
//!
//! ISA facts relied on: addc "d = a + b + CC.CF", subc "d = a - (b + CC.CF)" with
//! the borrow-out written to CC.CF when .cc is given, madc "d = t<63..32> + c +
//! CC.CF" (.hi) / "t<31..0> + c + CC.CF" (.lo) with the carry-out of the addition.

mod common;
use common::*;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// 128-bit values, some chosen so that carries and borrows ripple through words.
fn wide_values() -> Vec<u128> {
    let mut r = rng(0x1234_5678_9abc_def1);
    let mut v = vec![0, 1, u128::MAX, u128::MAX - 1, 1 << 32, (1 << 64) - 1, 1 << 64, u64::MAX as u128 * 3];
    for _ in 0..10 {
        v.push((r() as u128) << 64 | r() as u128);
    }
    v
}

/// in = [a0..a3, b0..b3] little-endian words per thread; out = 4 words.
fn run128(body: &str, pairs: &[(u128, u128)]) -> Vec<u128> {
    let mut input = Vec::new();
    for &(a, b) in pairs {
        for x in [a, b] {
            for k in 0..4 {
                input.push((x >> (32 * k)) as u32);
            }
        }
    }
    let full = format!(
        "mul.lo.u32 %r15, %tid, 32;
    mul.wide.u32 %rd0, %r15, 1;
    add.s64 %rd0, %in, %rd0;
    ld.global.v4.u32 {{%r0, %r1, %r2, %r3}}, [%rd0];
    ld.global.v4.u32 {{%r4, %r5, %r6, %r7}}, [%rd0+16];
{body}"
    );
    run_threads(pairs.len() as u32, 4, &full, &input)
        .into_iter()
        .map(|w| w.iter().enumerate().fold(0u128, |acc, (k, &x)| acc | (x as u128) << (32 * k)))
        .collect()
}

fn all_pairs() -> Vec<(u128, u128)> {
    let v = wide_values();
    let mut p = Vec::new();
    for &a in &v {
        for &b in &v {
            p.push((a, b));
        }
    }
    p.truncate(1024);
    p
}

#[test]
fn add_128_in_32_bit_words() {
    let pairs = all_pairs();
    let got = run128(
        "add.cc.u32 %o0, %r0, %r4;
    addc.cc.u32 %o1, %r1, %r5;
    addc.cc.u32 %o2, %r2, %r6;
    addc.u32 %o3, %r3, %r7;",
        &pairs,
    );
    let want: Vec<u128> = pairs.iter().map(|&(a, b)| a.wrapping_add(b)).collect();
    check("add 128", &pairs, &got, &want);
}

#[test]
fn sub_128_in_32_bit_words() {
    let pairs = all_pairs();
    let got = run128(
        "sub.cc.u32 %o0, %r0, %r4;
    subc.cc.u32 %o1, %r1, %r5;
    subc.cc.u32 %o2, %r2, %r6;
    subc.u32 %o3, %r3, %r7;",
        &pairs,
    );
    let want: Vec<u128> = pairs.iter().map(|&(a, b)| a.wrapping_sub(b)).collect();
    check("sub 128", &pairs, &got, &want);
}

/// The carry (borrow) out of the top word, made visible with addc d, 0, 0.
#[test]
fn carry_and_borrow_out() {
    let pairs = all_pairs();
    let got = run128(
        "add.cc.u32 %r8, %r0, %r4;
    addc.cc.u32 %r8, %r1, %r5;
    addc.cc.u32 %r8, %r2, %r6;
    addc.cc.u32 %r8, %r3, %r7;
    addc.u32 %o0, 0, 0;
    sub.cc.u32 %r8, %r0, %r4;
    subc.cc.u32 %r8, %r1, %r5;
    subc.cc.u32 %r8, %r2, %r6;
    subc.cc.u32 %r8, %r3, %r7;
    addc.u32 %o1, 0, 0;
    mov.u32 %o2, 0;
    mov.u32 %o3, 0;",
        &pairs,
    );
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let carry = a.checked_add(b).is_none() as u128;
        let borrow = (a < b) as u128;
        assert_eq!(got[k], carry | borrow << 32, "carry/borrow of {a:#x} and {b:#x}");
    }
}

/// 64-bit words: add.cc.u64 / addc.u64, sub.cc.u64 / subc.u64.
#[test]
fn add_sub_128_in_64_bit_words() {
    let pairs = all_pairs();
    let body = |op: &str, opc: &str| {
        format!(
            "mov.b64 %rd1, {{%r0, %r1}};
    mov.b64 %rd2, {{%r2, %r3}};
    mov.b64 %rd3, {{%r4, %r5}};
    mov.b64 %rd4, {{%r6, %r7}};
    {op}.cc.u64 %rd5, %rd1, %rd3;
    {opc}.u64 %rd6, %rd2, %rd4;
    mov.b64 {{%o0, %o1}}, %rd5;
    mov.b64 {{%o2, %o3}}, %rd6;"
        )
    };
    let got = run128(&body("add", "addc"), &pairs);
    let want: Vec<u128> = pairs.iter().map(|&(a, b)| a.wrapping_add(b)).collect();
    check("add.cc.u64", &pairs, &got, &want);
    let got = run128(&body("sub", "subc"), &pairs);
    let want: Vec<u128> = pairs.iter().map(|&(a, b)| a.wrapping_sub(b)).collect();
    check("sub.cc.u64", &pairs, &got, &want);
}

/// The ISA's own example: [r3,r2,r1,r0] = [r5,r4] * [r7,r6] with mad.lo.cc,
/// madc.hi(.cc) and addc, a 64 x 64 -> 128-bit product.
#[test]
fn multiply_64x64_from_the_isa_example() {
    let pairs: Vec<(u128, u128)> =
        all_pairs().into_iter().map(|(a, b)| (a & u64::MAX as u128, b & u64::MAX as u128)).collect();
    // a in r0,r1 (here r4,r5 of the example), b in r4,r5 (r6,r7).
    let got = run128(
        "mul.lo.u32 %o0, %r0, %r4;
    mul.hi.u32 %o1, %r0, %r4;
    mad.lo.cc.u32 %o1, %r1, %r4, %o1;
    madc.hi.u32 %o2, %r1, %r4, 0;
    mad.lo.cc.u32 %o1, %r0, %r5, %o1;
    madc.hi.cc.u32 %o2, %r0, %r5, %o2;
    addc.u32 %o3, 0, 0;
    mad.lo.cc.u32 %o2, %r1, %r5, %o2;
    madc.hi.u32 %o3, %r1, %r5, %o3;",
        &pairs,
    );
    let want: Vec<u128> = pairs.iter().map(|&(a, b)| a * b).collect();
    check("64x64 product", &pairs, &got, &want);
}

/// madc.lo.cc and the carry of mad.hi.cc: d = t<31..0> + c + CF, carry-out of that
/// addition; checked per word against u64 arithmetic.
#[test]
fn madc_lo_and_hi_carry() {
    let pairs = all_pairs();
    let got = run128(
        "add.cc.u32 %r8, %r2, %r6;
    madc.lo.cc.u32 %o0, %r0, %r4, %r1;
    addc.u32 %o1, 0, 0;
    add.cc.u32 %r8, %r3, %r7;
    madc.hi.cc.u32 %o2, %r0, %r4, %r5;
    addc.u32 %o3, 0, 0;",
        &pairs,
    );
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let w = |x: u128, i: u32| (x >> (32 * i)) as u32 as u64;
        let cf1 = (w(a, 2) + w(b, 2)) >> 32;
        let lo = ((w(a, 0) * w(b, 0)) & 0xffff_ffff) + w(a, 1) + cf1;
        let cf2 = (w(a, 3) + w(b, 3)) >> 32;
        let hi = ((w(a, 0) * w(b, 0)) >> 32) + w(b, 1) + cf2;
        let want = (lo & 0xffff_ffff) as u128
            | ((lo >> 32) as u128) << 32
            | ((hi & 0xffff_ffff) as u128) << 64
            | ((hi >> 32) as u128) << 96;
        assert_eq!(got[k], want, "madc of {a:#x}, {b:#x}");
    }
}

/// Signed mad.hi.cc / madc.hi: t = a * b is the signed product (ISA §9.7.2.5-6,
/// "t = a * b" of the instruction type), so its high word differs from the
/// unsigned one for negative operands.
#[test]
fn signed_mad_hi_with_carry() {
    let pairs = all_pairs();
    let got = run128(
        "add.cc.u32 %r8, %r2, %r6;
    madc.hi.cc.s32 %o0, %r0, %r4, %r1;
    addc.u32 %o1, 0, 0;
    mad.hi.cc.s32 %o2, %r3, %r7, %r5;
    addc.u32 %o3, 0, 0;",
        &pairs,
    );
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let w = |x: u128, i: u32| (x >> (32 * i)) as u32;
        let hi = |x: u32, y: u32| (((x as i32 as i64) * (y as i32 as i64)) >> 32) as u32 as u64;
        let cf1 = (w(a, 2) as u64 + w(b, 2) as u64) >> 32;
        let s1 = hi(w(a, 0), w(b, 0)) + w(a, 1) as u64 + cf1;
        let s2 = hi(w(a, 3), w(b, 3)) + w(b, 1) as u64;
        let want = (s1 & 0xffff_ffff) as u128
            | ((s1 >> 32) as u128) << 32
            | ((s2 & 0xffff_ffff) as u128) << 64
            | ((s2 >> 32) as u128) << 96;
        assert_eq!(got[k], want, "signed madc.hi of {a:#x}, {b:#x}");
    }
}

/// Each lane has its own carry flag: lanes with and without a carry-in mix.
#[test]
fn carry_flag_is_per_lane() {
    let got = run_threads(
        32,
        1,
        "and.b32 %r0, %lane, 1;
    neg.s32 %r0, %r0;
    add.cc.u32 %r1, %r0, %r0;
    addc.u32 %o0, %lane, 0;",
        &[],
    );
    for (l, w) in got.iter().enumerate() {
        assert_eq!(w[0], l as u32 + (l as u32 & 1), "lane {l}");
    }
}
