//! ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 (PTX ISA §9.7.14.5.15).
//! Shared memory is filled with distinct values and every lane's registers are
//! checked against the ISA's fragment table.
//!
//! ISA facts: "Each address corresponds to the start of a matrix row. Addresses
//! addr0-addr7 correspond to the rows of the first matrix, addresses addr8-addr15 to
//! the rows of the second matrix, and so on" (threads 0-7 give the addresses for
//! .x1, 0-15 for .x2, 0-31 for .x4); "Each thread in a warp loads fragments of a row,
//! with thread 0 receiving the first fragment in its register r ... A group of four
//! threads loads an entire row", i.e. lane t holds row t/4, columns 2(t%4) and
//! 2(t%4)+1 (the lower column in the low half); with .trans "the matrix is loaded in
//! column-major format": lane t holds rows 2(t%4) and 2(t%4)+1 of column t/4.
//! "Consecutive instances of row need not be stored contiguously in memory."

mod common;
use common::*;

/// Shared memory holds 32 row slots of 16 bytes; slot s, column c holds the b16
/// value 0x100 + 8s + c. Lane l points at slot (3l) % 32, so matrix k, row r is
/// slot (3(8k + r)) % 32 and rows are not contiguous.
fn slot_of(k: usize, r: usize) -> usize {
    (3 * (8 * k + r)) % 32
}

fn elem(k: usize, r: usize, c: usize) -> u32 {
    0x100 + 8 * slot_of(k, r) as u32 + c as u32
}

fn body(n: usize, trans: bool) -> String {
    let regs: Vec<String> = (0..n).map(|k| format!("%o{k}")).collect();
    format!(
        "{{
    .shared .align 16 .b8 smem[512];
    mov.u64 %rd0, smem;
    // Slot `lane`: values 0x100 + 8 lane + c, two per word.
    mul.wide.u32 %rd1, %lane, 16;
    add.s64 %rd1, %rd0, %rd1;
    mad.lo.u32 %r0, %lane, 8, 0x100;
    mul.lo.u32 %r0, %r0, 0x10001;
    add.u32 %r0, %r0, 0x10000;
    add.u32 %r1, %r0, 0x20002;
    add.u32 %r2, %r0, 0x40004;
    add.u32 %r3, %r0, 0x60006;
    st.shared.v4.u32 [%rd1], {{%r0, %r1, %r2, %r3}};
    bar.sync 0;
    // Row address of lane l: slot 3l mod 32, less 16 (the instruction adds it back).
    mul.lo.u32 %r5, %lane, 3;
    and.b32 %r5, %r5, 31;
    mul.wide.u32 %rd2, %r5, 16;
    add.s64 %rd2, %rd0, %rd2;
    sub.s64 %rd2, %rd2, 16;
    // Lanes whose address is not used get a misaligned one.
    setp.ge.u32 %p0, %lane, {used};
    @%p0 mov.u64 %rd2, 3;
    ldmatrix.sync.aligned.m8n8.x{n}{t}.shared.b16 {{{regs}}}, [%rd2+16];
    }}",
        used = 8 * n,
        t = if trans { ".trans" } else { "" },
        regs = regs.join(", "),
    )
}

#[test]
fn every_lane_every_register() {
    for n in [1usize, 2, 4] {
        for trans in [false, true] {
            let got = run_threads(32, n, &body(n, trans), &[]);
            for t in 0..32 {
                for k in 0..n {
                    let (lo, hi) = if trans {
                        (elem(k, 2 * (t % 4), t / 4), elem(k, 2 * (t % 4) + 1, t / 4))
                    } else {
                        (elem(k, t / 4, 2 * (t % 4)), elem(k, t / 4, 2 * (t % 4) + 1))
                    };
                    assert_eq!(
                        got[t][k],
                        lo | hi << 16,
                        "ldmatrix.x{n}{} lane {t} register {k}",
                        if trans { ".trans" } else { "" }
                    );
                }
            }
        }
    }
}

/// A row address that is not 16-byte aligned is reported (memcheck).
#[test]
fn misaligned_row_is_reported() {
    let b = body(1, false)
        .replace("@%p0 mov.u64 %rd2, 3;", "setp.eq.u32 %p1, %lane, 5;\n    @%p1 add.s64 %rd2, %rd2, 2;");
    let s = load(&threads_module(1, &b));
    let inp = s.upload(&[0; 4]);
    let out = s.upload(&[0; 128]);
    let args = [pimoe_emu::session::Arg::U64(inp), pimoe_emu::session::Arg::U64(out)];
    let e = s.launch("k", [1, 1, 1], [32, 1, 1], 0, &args).expect_err("a misaligned row must be reported");
    assert!(format!("{e}").contains("memcheck"), "{e}");
    // Only .b16 m8n8 from .shared is implemented.
    refusal(&threads_module(1, "ldmatrix.sync.aligned.m8n8.x1.shared.b8 {%o0}, [%rd0];"));
}
