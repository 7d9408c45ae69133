//! mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA §9.7.14.5.8): known
//! A, B, C matrices are placed into each lane's registers per the ISA's fragment
//! layout, and every element of D is compared with a CPU matrix product.
//!
//! Fragment layouts (groupID = %laneid >> 2, threadID_in_group = %laneid % 4; each
//! .b32 register holds two elements, the lower-numbered one in the low half):
//! - A (16x16), a0..a7: row = groupID for ai where 0 <= i < 2 || 4 <= i < 6, else
//!   groupID + 8; col = threadID_in_group * 2 + (i & 1), + 8 for i >= 4.
//! - B (16x8), b0..b3: row = threadID_in_group * 2 + (i & 1), + 8 for i >= 2;
//!   col = groupID.
//! - C and D (16x8 f32), c0..c3: row = groupID for i < 2, else groupID + 8;
//!   col = threadID_in_group * 2 + (i & 1).

mod common;
use common::*;

fn a_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) { g } else { g + 8 };
    let col = t * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

fn b_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (t * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}

fn c_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}

/// bf16 bits of an f32 that is exactly representable in bf16.
fn bf16(x: f32) -> u32 {
    assert_eq!(x.to_bits() & 0xffff, 0, "{x} is not a bf16 value");
    x.to_bits() >> 16
}

/// Runs the mma over A, B, C; returns D[16][8] as read back through the layout.
fn mma(a: &[[f32; 16]; 16], b: &[[f32; 8]; 16], c: &[[f32; 8]; 16]) -> [[u32; 8]; 16] {
    // Per lane 12 words: a0..a3 (A pairs), b0..b1 (B pairs), 2 unused, c0..c3.
    let mut input = vec![0u32; 32 * 12];
    for lane in 0..32 {
        let w = &mut input[lane * 12..lane * 12 + 12];
        for i in 0..8 {
            let (r, col) = a_pos(lane, i);
            w[i / 2] |= bf16(a[r][col]) << (16 * (i % 2));
        }
        for i in 0..4 {
            let (r, col) = b_pos(lane, i);
            w[4 + i / 2] |= bf16(b[r][col]) << (16 * (i % 2));
        }
        for i in 0..4 {
            let (r, col) = c_pos(lane, i);
            w[8 + i] = c[r][col].to_bits();
        }
    }
    let got = run_threads(
        32,
        4,
        "mul.wide.u32 %rd0, %lane, 48;
    add.s64 %rd0, %in, %rd0;
    ld.global.v4.u32 {%r0, %r1, %r2, %r3}, [%rd0];
    ld.global.v2.u32 {%r4, %r5}, [%rd0+16];
    ld.global.v4.u32 {%r6, %r7, %r8, %r9}, [%rd0+32];
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%o0, %o1, %o2, %o3}, {%r0, %r1, %r2, %r3}, {%r4, %r5}, {%r6, %r7, %r8, %r9};",
        &input,
    );
    let mut d = [[u32::MAX; 8]; 16];
    for lane in 0..32 {
        for i in 0..4 {
            let (r, col) = c_pos(lane, i);
            d[r][col] = got[lane][i];
        }
    }
    d
}

#[test]
fn fragment_layout_against_cpu_matmul() {
    // Small integers and halves: every product and partial sum is exact in f32, so
    // the result does not depend on the order of accumulation (which the ISA leaves
    // open). Each position gets a distinct value, so a layout error shows.
    let mut a = [[0f32; 16]; 16];
    let mut b = [[0f32; 8]; 16];
    let mut c = [[0f32; 8]; 16];
    for r in 0..16 {
        for k in 0..16 {
            a[r][k] = ((r * 16 + k) * 37 % 15) as f32 - 7.0;
        }
        for n in 0..8 {
            c[r][n] = r as f32 * 4.0 - n as f32 * 0.25;
        }
    }
    for k in 0..16 {
        for n in 0..8 {
            b[k][n] = (((k * 8 + n) * 11 % 9) as f32 - 4.0) * 0.5;
        }
    }
    let d = mma(&a, &b, &c);
    for r in 0..16 {
        for n in 0..8 {
            let mut acc = c[r][n] as f64;
            for k in 0..16 {
                acc += a[r][k] as f64 * b[k][n] as f64;
            }
            assert_eq!(f32::from_bits(d[r][n]), acc as f32, "D[{r}][{n}]");
        }
    }
}

/// One-hot matrices pin the layout down element by element: with A = E(r, k) and
/// B = E(k, n), D is C plus 1 at (r, n) only.
#[test]
fn one_hot_products() {
    let c = [[0.5f32; 8]; 16];
    for (r, k, n) in [(0, 0, 0), (3, 9, 5), (8, 1, 2), (15, 15, 7), (9, 8, 0), (7, 14, 3)] {
        let mut a = [[0f32; 16]; 16];
        let mut b = [[0f32; 8]; 16];
        a[r][k] = 1.0;
        b[k][n] = 2.0;
        let d = mma(&a, &b, &c);
        for i in 0..16 {
            for j in 0..8 {
                let want = if (i, j) == (r, n) { 2.5 } else { 0.5 };
                assert_eq!(f32::from_bits(d[i][j]), want, "A=E({r},{k}) B=E({k},{n}): D[{i}][{j}]");
            }
        }
    }
}

/// .aligned: every thread of the warp must execute it; a partial warp is reported.
#[test]
fn mma_needs_the_whole_warp() {
    let ptx = threads_module(
        1,
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%o0, %r10, %r11, %r12}, {%r0, %r1, %r2, %r3}, {%r4, %r5}, {%r6, %r7, %r8, %r9};",
    );
    let s = load(&ptx);
    let inp = s.upload(&[0; 4]);
    let out = s.upload(&[0; 64]);
    let args = [pimoe_emu::session::Arg::U64(inp), pimoe_emu::session::Arg::U64(out)];
    let e = s.launch("k", [1, 1, 1], [16, 1, 1], 0, &args).expect_err("a partial warp must be reported");
    assert!(format!("{e}").contains("synccheck"), "{e}");
    // Other shapes and types are refused at load.
    refusal(&threads_module(
        1,
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%o0, %r10, %r11, %r12}, {%r0, %r1, %r2, %r3}, {%r4, %r5}, {%r6, %r7, %r8, %r9};",
    ));
}
