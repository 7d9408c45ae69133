//! The emulator's checks, each proven by a hand-written kernel with exactly one bug
//! and a twin without it that must run clean (so a check that always fires fails
//! here), through `Session` and `pimoe_emu::launch`. Also the scheduler's
//! divergence, reconvergence and warp-synchronous waiting against the PTX ISA.

mod support;

use pimoe_emu::session::{Arg, Session};
use pimoe_emu::{FaultKind, LoadError};
use support::*;

/// `%r4` = &sm[tid], `%r7` = &sm[lane] (u32 elements of a 256-byte `sm`).
const SHARED: &str = "\
\t.shared .align 16 .b8 sm[256];
\tmov.u32 %r2, sm;
\tshl.b32 %r3, %r1, 2;
\tadd.u32 %r4, %r2, %r3;
\tand.b32 %r5, %r1, 31;
\tshl.b32 %r6, %r5, 2;
\tadd.u32 %r7, %r2, %r6;";

const B1: [u32; 3] = [1, 1, 1];

fn threads(n: u32) -> [u32; 3] {
    [n, 1, 1]
}

fn iota(n: u32) -> Vec<u32> {
    (0..n).collect()
}

// memcheck

#[test]
fn memcheck_global_out_of_bounds_names_the_allocation() {
    let bug = entry(
        "oob_bug",
        &[".u64"],
        &format!("{PROLOGUE}\n\t.loc 1 11 0\n\tst.global.u32 [%rd3], %r1; // @OOB\n\tret;"),
    );
    let ok = entry(
        "oob_ok",
        &[".u64", ".u32"],
        &format!(
            "{PROLOGUE}\n\tld.param.u32 %r2, [p1];\n\tsetp.ge.u32 %p1, %r1, %r2;\n\t@%p1 bra $L__done;\n\
             \tst.global.u32 [%rd3], %r1;\n$L__done:\n\tret;"
        ),
    );
    let src = module(&[bug, ok]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(32 * 4);
    let e = fault(s.launch("oob_bug", B1, threads(64), 0, &[Arg::U64(out)]));
    assert_report(
        &e,
        FaultKind::OutOfBounds,
        &["[memcheck]", "0 bytes past the end of allocation #1 (128 bytes)"],
    );
    // Warp 0 fits; the first lane of warp 1 is the first out of bounds.
    assert_place(&e, "oob_bug", [0, 0, 0], [32, 0, 0], line_of(&src, "@OOB"), 11);
    // The same memory, right after the fault: the twin runs clean.
    s.launch("oob_ok", B1, threads(64), 0, &[Arg::U64(out), Arg::U32(32)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), iota(32));
}

#[test]
fn memcheck_access_before_an_allocation_is_named_as_such() {
    let bug = entry(
        "before_bug",
        &[".u64"],
        &format!("{PROLOGUE}\n\tst.global.u32 [%rd3+-4], %r1; // @BEFORE\n\tret;"),
    );
    let ok = entry("before_ok", &[".u64"], &format!("{PROLOGUE}\n\tst.global.u32 [%rd3], %r1;\n\tret;"));
    let src = module(&[bug, ok]);
    let s = Session::new(&src).unwrap();
    let _first = s.alloc(64);
    let out = s.alloc(128);
    let e = fault(s.launch("before_bug", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::OutOfBounds, &["4 bytes before the start of allocation #2 (128 bytes)"]);
    assert_eq!(e.thread, Some([0, 0, 0]));
    assert_eq!(e.ptx_line, line_of(&src, "@BEFORE"));
    s.launch("before_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
}

#[test]
fn memcheck_global_misaligned_names_the_allocation() {
    let bug = entry(
        "mis_bug",
        &[".u64"],
        &format!("{PROLOGUE}\n\t.loc 1 12 0\n\tld.global.u32 %r2, [%rd3+2]; // @MIS\n\tst.global.u32 [%rd3], %r2;\n\tret;"),
    );
    let ok = entry(
        "mis_ok",
        &[".u64"],
        &format!("{PROLOGUE}\n\tld.global.u32 %r2, [%rd3+4];\n\tst.global.u32 [%rd3], %r2;\n\tret;"),
    );
    let src = module(&[bug, ok]);
    let s = Session::new(&src).unwrap();
    let buf = s.upload(&bytes(&iota(33)));
    let e = fault(s.launch("mis_bug", B1, threads(32), 0, &[Arg::U64(buf)]));
    assert_report(
        &e,
        FaultKind::Misaligned,
        &["4-byte global access", "not 4-byte aligned", "allocation #1 (132 bytes)"],
    );
    assert_place(&e, "mis_bug", [0, 0, 0], [0, 0, 0], line_of(&src, "@MIS"), 12);
    s.launch("mis_ok", B1, threads(32), 0, &[Arg::U64(buf)]).unwrap();
    assert_eq!(u32s(&s.download(buf, 128)), (1..33).collect::<Vec<_>>());
}

/// A copy kernel `out[tid] = in[tid]` with `in` as p0 and `out` as p1.
fn copy_kernel(name: &str, marker: &str) -> String {
    entry(
        name,
        &[".u64", ".u64"],
        &format!(
            "{PROLOGUE}\n\tld.param.u64 %rd4, [p1];\n\tadd.s64 %rd5, %rd4, %rd2;\n\t.loc 1 13 0\n\
             \tld.global.u32 %r2, [%rd3]; // {marker}\n\tst.global.u32 [%rd5], %r2;\n\tret;"
        ),
    )
}

#[test]
fn memcheck_null_freed_and_foreign_pointers() {
    let src = module(&[copy_kernel("copy", "@LOAD")]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let line = line_of(&src, "@LOAD");
    let freed = s.upload(&bytes(&iota(32)));
    s.mem.free(freed).unwrap();
    let cases: [(u64, &str); 3] = [
        (0, "a null pointer"),
        (freed, "is in allocation #2 (128 bytes), which was freed"),
        (0x7f00_dead_b000, "which is in no allocation"),
    ];
    for (ptr, says) in cases {
        let e = fault(s.launch("copy", B1, threads(32), 0, &[Arg::U64(ptr), Arg::U64(out)]));
        assert_report(&e, FaultKind::OutOfBounds, &[says, "copy"]);
        assert_place(&e, "copy", [0, 0, 0], [0, 0, 0], line, 13);
    }
    // The twin: a live, written buffer.
    let good = s.upload(&bytes(&iota(32)));
    s.launch("copy", B1, threads(32), 0, &[Arg::U64(good), Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), iota(32));
}

#[test]
fn memcheck_shared_out_of_bounds_and_misaligned() {
    let body = |store: &str| format!("{PROLOGUE}\n{SHARED}\n\t.loc 1 14 0\n{store}\n\tret;");
    let src = module(&[
        entry("sh_oob", &[".u64"], &body("\tst.shared.u32 [%r4+192], %r1; // @SH_OOB")),
        entry("sh_mis", &[".u64"], &body("\tst.shared.u32 [%r4+2], %r1; // @SH_MIS")),
        entry("sh_ok", &[".u64"], &body("\tst.shared.u32 [%r4+128], %r1;")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(4);
    let e = fault(s.launch("sh_oob", B1, threads(32), 0, &[Arg::U64(out)]));
    // Thread 16 is the first past sm[256] at sm+192+64.
    assert_report(
        &e,
        FaultKind::OutOfBounds,
        &["4-byte shared access at 0x100", "256 bytes of shared memory"],
    );
    assert_place(&e, "sh_oob", [0, 0, 0], [16, 0, 0], line_of(&src, "@SH_OOB"), 14);
    let e = fault(s.launch("sh_mis", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Misaligned, &["4-byte shared access at 0x2 is not 4-byte aligned"]);
    assert_place(&e, "sh_mis", [0, 0, 0], [0, 0, 0], line_of(&src, "@SH_MIS"), 14);
    s.launch("sh_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
}

#[test]
fn memcheck_shared_past_the_dynamic_size_launched() {
    let body = "\t.loc 1 15 0\n\tmov.u32 %r1, %tid.x;\n\tshl.b32 %r3, %r1, 2;\n\tmov.u32 %r2, dyn;\n\
                \tadd.u32 %r4, %r2, %r3;\n\tst.shared.u32 [%r4], %r1; // @DYN\n\tret;";
    let src = module(&[format!(".extern .shared .align 16 .b8 dyn[];\n{}", entry("dyn_store", &[], body))]);
    let s = Session::new(&src).unwrap();
    let e = fault(s.launch("dyn_store", B1, threads(32), 64, &[]));
    assert_report(&e, FaultKind::OutOfBounds, &["shared access at 0x40", "64 bytes of shared memory"]);
    assert_eq!(e.thread, Some([16, 0, 0]));
    s.launch("dyn_store", B1, threads(32), 128, &[]).unwrap();
}

#[test]
fn memcheck_local_out_of_bounds_and_misaligned() {
    let body = |at: i32| {
        format!(
            "{PROLOGUE}\n\t.local .align 4 .b8 __local_depot0[16];\n\tmov.u64 %rd4, __local_depot0;\n\
             \t.loc 1 16 0\n\tst.local.u32 [%rd4+{at}], %r1; // @LOCAL{at}\n\tld.local.u32 %r2, [%rd4+{at}];\n\
             \tst.global.u32 [%rd3], %r2;\n\tret;"
        )
    };
    let src = module(&[
        entry("loc_oob", &[".u64"], &body(16)),
        entry("loc_mis", &[".u64"], &body(2)),
        entry("loc_ok", &[".u64"], &body(12)),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let e = fault(s.launch("loc_oob", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::OutOfBounds, &["4-byte local access at 0x10", "16 bytes of local memory"]);
    assert_place(&e, "loc_oob", [0, 0, 0], [0, 0, 0], line_of(&src, "@LOCAL16"), 16);
    let e = fault(s.launch("loc_mis", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Misaligned, &["4-byte local access at 0x2 is not 4-byte aligned"]);
    assert_place(&e, "loc_mis", [0, 0, 0], [0, 0, 0], line_of(&src, "@LOCAL2"), 16);
    s.launch("loc_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), iota(32));
}

// initcheck

#[test]
fn initcheck_global_read_of_memory_never_written() {
    let src = module(&[copy_kernel("copy", "@UNINIT")]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let never = s.alloc(128);
    let e = fault(s.launch("copy", B1, threads(32), 0, &[Arg::U64(never), Arg::U64(out)]));
    assert_report(
        &e,
        FaultKind::Uninitialized,
        &["[initcheck]", "byte 0 of allocation #2 (128 bytes), never written"],
    );
    assert_place(&e, "copy", [0, 0, 0], [0, 0, 0], line_of(&src, "@UNINIT"), 13);
    // Half written: the first lane reading the unwritten half is named.
    let half = s.alloc(128);
    s.mem
        .with_range(half, 64, |a, off| {
            // SAFETY: the range was checked by with_range.
            unsafe { std::ptr::write_bytes(a.ptr(off), 7, 64) };
            a.mark(off, 64);
        })
        .unwrap();
    let e = fault(s.launch("copy", B1, threads(32), 0, &[Arg::U64(half), Arg::U64(out)]));
    assert_report(&e, FaultKind::Uninitialized, &["byte 64 of allocation #3"]);
    assert_eq!(e.thread, Some([16, 0, 0]));
    let written = s.upload(&bytes(&iota(32)));
    s.launch("copy", B1, threads(32), 0, &[Arg::U64(written), Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), iota(32));
}

#[test]
fn initcheck_shared_read_the_block_never_wrote() {
    let body = |write: &str, marker: &str| {
        format!(
            "{PROLOGUE}\n{SHARED}\n{write}\n\t.loc 1 17 0\n\tld.shared.u32 %r8, [%r4]; // {marker}\n\
             \tst.global.u32 [%rd3], %r8;\n\tret;"
        )
    };
    // Block 0 writes sm, block 1 only reads: what block 0 left there is not block 1's.
    let only_block0 =
        "\tmov.u32 %r9, %ctaid.x;\n\tsetp.eq.u32 %p1, %r9, 0;\n\t@%p1 st.shared.u32 [%r4], %r1;";
    let src = module(&[
        entry("sh_never", &[".u64"], &body("", "@SH_READ")),
        entry("sh_other_block", &[".u64"], &body(only_block0, "@OTHER_BLOCK")),
        entry("sh_written", &[".u64"], &body("\tst.shared.u32 [%r4], %r1;", "")),
    ]);
    let mut s = Session::new(&src).unwrap();
    s.opts.threads = 1;
    let out = s.alloc(128);
    let line = line_of(&src, "@SH_READ");
    let e = fault(s.launch("sh_never", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(
        &e,
        FaultKind::Uninitialized,
        &["shared memory sm+0 is read but this block never wrote it"],
    );
    assert_place(&e, "sh_never", [0, 0, 0], [0, 0, 0], line, 17);
    let e = fault(s.launch("sh_other_block", [2, 1, 1], threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Uninitialized, &["never wrote"]);
    assert_place(&e, "sh_other_block", [1, 0, 0], [0, 0, 0], line_of(&src, "@OTHER_BLOCK"), 17);
    s.launch("sh_written", [2, 1, 1], threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), iota(32));
}

// racecheck

/// 64 threads write sm[tid], meet at a barrier, then warp 0 does `first` on
/// sm[lane] and warp 1 does `second` on it, with a barrier between or not.
fn race_kernel(name: &str, first: &str, second: &str, barrier: bool, marker: &str) -> String {
    let bar = if barrier { "\tbar.sync 0;" } else { "" };
    entry(
        name,
        &[".u64"],
        &format!(
            "{PROLOGUE}\n{SHARED}\n\tst.shared.u32 [%r4], %r1;\n\tbar.sync 0;\n\tmov.u32 %r8, 0;\n\
             \tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 {first}\n{bar}\n\t.loc 1 18 0\n\t@!%p1 {second} // {marker}\n\
             \tst.global.u32 [%rd3], %r8;\n\tret;"
        ),
    )
}

#[test]
fn racecheck_read_after_write_write_after_read_and_write_after_write() {
    let st = "st.shared.u32 [%r7], %r1;";
    let ld = "ld.shared.u32 %r8, [%r7];";
    let cases = [
        ("raw", st, ld, "is read by warp 1 after warp 0 wrote it", "read-after-write hazard"),
        ("war", ld, st, "is written by warp 1 after warp 0 read it", "write-after-read hazard"),
        ("waw", st, st, "is written by warp 1 and by warp 0", "write-after-write hazard"),
    ];
    for (kind, first, second, says, hazard) in cases {
        let marker = format!("@RACE_{kind}");
        let src = module(&[
            race_kernel(&format!("{kind}_bug"), first, second, false, &marker),
            race_kernel(&format!("{kind}_ok"), first, second, true, "twin"),
        ]);
        let s = Session::new(&src).unwrap();
        let out = s.alloc(256);
        let e = fault(s.launch(&format!("{kind}_bug"), B1, threads(64), 0, &[Arg::U64(out)]));
        assert_report(&e, FaultKind::Race, &["[racecheck]", "shared memory sm+0", says, hazard]);
        assert_place(&e, &format!("{kind}_bug"), [0, 0, 0], [32, 0, 0], line_of(&src, &marker), 18);
        s.launch(&format!("{kind}_ok"), B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
    }
}

// synccheck

#[test]
fn synccheck_threads_waiting_at_different_barriers() {
    let bug = entry(
        "two_bars",
        &[".u64"],
        &format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 bra $L__a;\n\t.loc 1 20 0\n\tbar.sync 0; // @BAR_B\n\
             \tbra.uni $L__j;\n$L__a:\n\t.loc 1 21 0\n\tbar.sync 0; // @BAR_A\n$L__j:\n\tst.global.u32 [%rd3], %r1;\n\tret;"
        ),
    );
    let ok = entry(
        "one_bar",
        &[".u64"],
        &format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 bra $L__a;\n\tadd.u32 %r1, %r1, 0;\n\
             \tbra.uni $L__j;\n$L__a:\n\tadd.u32 %r1, %r1, 0;\n$L__j:\n\tbar.sync 0;\n\tst.global.u32 [%rd3], %r1;\n\tret;"
        ),
    );
    // Without .aligned, threads may wait for barrier 0 at different instructions.
    let unaligned = entry(
        "two_unaligned",
        &[".u64"],
        &format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 bra $L__a;\n\tbarrier.sync 0;\n\
             \tbra.uni $L__j;\n$L__a:\n\tbarrier.sync 0;\n$L__j:\n\tst.global.u32 [%rd3], %r1;\n\tret;"
        ),
    );
    let src = module(&[bug, ok, unaligned]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(256);
    let st = s.launch("two_unaligned", B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!((st.barriers, u32s(&s.download(out, 256))), (1, iota(64)));
    let e = fault(s.launch("two_bars", B1, threads(64), 0, &[Arg::U64(out)]));
    let other = format!("PTX line {}", line_of(&src, "@BAR_A"));
    assert_report(&e, FaultKind::Sync, &["[synccheck]", "different barriers", &other, "thread (0,0,0)"]);
    assert_place(&e, "two_bars", [0, 0, 0], [32, 0, 0], line_of(&src, "@BAR_B"), 20);
    s.launch("one_bar", B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
}

#[test]
fn synccheck_barrier_in_a_loop_with_warp_dependent_trip_counts() {
    // Warp w runs the loop (and its barrier) w+1 times, then meets a second barrier:
    // warp 0 waits at the second while warp 1 waits at the loop's.
    let body = |trips: &str, m: &str| {
        format!(
            "{PROLOGUE}\n{trips}\n\tmov.u32 %r11, 0;\n$L__loop:\n\t.loc 1 22 0\n\tbar.sync 0; // {m}LOOP_BAR\n\
             \tadd.u32 %r11, %r11, 1;\n\tsetp.lt.u32 %p2, %r11, %r10;\n\t@%p2 bra $L__loop;\n\t.loc 1 23 0\n\
             \tbar.sync 0; // {m}AFTER_BAR\n\tst.global.u32 [%rd3], %r11;\n\tret;"
        )
    };
    let src = module(&[
        entry("loop_bug", &[".u64"], &body("\tshr.u32 %r10, %r1, 5;\n\tadd.u32 %r10, %r10, 1;", "@")),
        entry("loop_ok", &[".u64"], &body("\tmov.u32 %r10, 2;", "")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(256);
    let e = fault(s.launch("loop_bug", B1, threads(64), 0, &[Arg::U64(out)]));
    let loop_line = format!("PTX line {}", line_of(&src, "@LOOP_BAR"));
    let after_line = format!("PTX line {}", line_of(&src, "@AFTER_BAR"));
    assert_report(&e, FaultKind::Sync, &["different barriers", &loop_line, &after_line]);
    s.launch("loop_ok", B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 256)), vec![2; 64]);
}

#[test]
fn synccheck_shfl_whose_members_wait_at_another_shfl() {
    let bug = entry(
        "two_shfls",
        &[".u64"],
        &format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 16;\n\t@%p1 bra $L__lo;\n\tshfl.sync.bfly.b32 %r8, %r1, 1, 31, -1; // @SHFL_HI\n\
             \tbra.uni $L__j;\n$L__lo:\n\t.loc 1 24 0\n\tshfl.sync.bfly.b32 %r8, %r1, 1, 31, -1; // @SHFL_LO\n$L__j:\n\
             \tst.global.u32 [%rd3], %r8;\n\tret;"
        ),
    );
    let ok = entry(
        "one_shfl",
        &[".u64"],
        &format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 16;\n\t@%p1 bra $L__lo;\n\tadd.u32 %r1, %r1, 0;\n\
             \tbra.uni $L__j;\n$L__lo:\n\tadd.u32 %r1, %r1, 0;\n$L__j:\n\tshfl.sync.bfly.b32 %r8, %r1, 1, 31, -1;\n\
             \tst.global.u32 [%rd3], %r8;\n\tret;"
        ),
    );
    let src = module(&[bug, ok]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let e = fault(s.launch("two_shfls", B1, threads(32), 0, &[Arg::U64(out)]));
    let hi = format!(
        "lanes 16-31 wait at the warp-synchronous instruction at PTX line {}",
        line_of(&src, "@SHFL_HI")
    );
    assert_report(&e, FaultKind::Sync, &["cannot reach it", &hi]);
    assert_place(&e, "two_shfls", [0, 0, 0], [0, 0, 0], line_of(&src, "@SHFL_LO"), 24);
    s.launch("one_shfl", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), (0..32).map(|t| t ^ 1).collect::<Vec<_>>());
}

#[test]
fn synccheck_warp_sync_members_waiting_at_a_barrier() {
    for (name, op) in
        [("shfl_vs_bar", "shfl.sync.idx.b32 %r8, %r1, 0, 31, -1;"), ("warpsync_vs_bar", "bar.warp.sync -1;")]
    {
        let bug = entry(
            name,
            &[".u64"],
            &format!(
                "{PROLOGUE}\n\tmov.u32 %r8, 0;\n\tsetp.lt.u32 %p1, %r1, 16;\n\t@%p1 bra $L__lo;\n\t.loc 1 25 0\n\
                 \tbar.sync 0; // @BAR\n\tbra.uni $L__j;\n$L__lo:\n\t.loc 1 26 0\n\t{op} // @WSYNC\n$L__j:\n\
                 \tst.global.u32 [%rd3], %r8;\n\tret;"
            ),
        );
        let src = module(&[bug]);
        let s = Session::new(&src).unwrap();
        let out = s.alloc(128);
        let e = fault(s.launch(name, B1, threads(32), 0, &[Arg::U64(out)]));
        let bar = format!("lanes 16-31 wait at the barrier at PTX line {}", line_of(&src, "@BAR"));
        assert_report(&e, FaultKind::Sync, &[&bar]);
        assert_place(&e, name, [0, 0, 0], [0, 0, 0], line_of(&src, "@WSYNC"), 26);
    }
}

#[test]
fn synccheck_shfl_reading_an_exited_lane() {
    // Lanes 16-31 exit (their `ret` is after the shfl, so lanes 0-15 wait at the shfl
    // first); the shfl then runs without them, as the ISA says for exited members.
    let body = |src_lane: &str, m: &str| {
        format!(
            "{PROLOGUE}\n\tsetp.ge.u32 %p1, %r1, 16;\n\t@%p1 bra $L__exit;\n\t{src_lane}\n\t.loc 1 27 0\n\
             \tshfl.sync.idx.b32 %r8, %r1, %r9, 31, -1; // {m}\n\tst.global.u32 [%rd3], %r8;\n$L__exit:\n\tret;"
        )
    };
    let src = module(&[
        entry("shfl_exited_bug", &[".u64"], &body("add.u32 %r9, %r1, 16;", "@XSHFL")),
        entry("shfl_exited_ok", &[".u64"], &body("xor.b32 %r9, %r1, 1;", "")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(64);
    let e = fault(s.launch("shfl_exited_bug", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Sync, &["reads lane 16, which does not take part"]);
    assert_place(&e, "shfl_exited_bug", [0, 0, 0], [0, 0, 0], line_of(&src, "@XSHFL"), 27);
    s.launch("shfl_exited_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 64)), (0..16).map(|t| t ^ 1).collect::<Vec<_>>());
}

#[test]
fn synccheck_membermasks_that_disagree() {
    // Each half of the warp shuffles within itself: legal with masks 0xffff /
    // 0xffff0000, a bug when the upper half names the whole warp.
    let body = |upper: u32, m: &str| {
        format!(
            "{PROLOGUE}\n\tsetp.lt.u32 %p1, %r1, 16;\n\tselp.b32 %r9, 65535, {upper}, %p1;\n\t.loc 1 28 0\n\
             \tshfl.sync.bfly.b32 %r8, %r1, 1, 31, %r9; // {m}\n\tst.global.u32 [%rd3], %r8;\n\tret;"
        )
    };
    let src = module(&[
        entry("masks_bug", &[".u64"], &body(u32::MAX, "@MASKS")),
        entry("masks_ok", &[".u64"], &body(0xffff_0000, "")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let e = fault(s.launch("masks_bug", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Sync, &["lane 0 has membermask 0xffff but lane 16", "has 0xffffffff"]);
    assert_eq!(e.ptx_line, line_of(&src, "@MASKS"));
    s.launch("masks_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), (0..32).map(|t| t ^ 1).collect::<Vec<_>>());
}

#[test]
fn synccheck_lane_outside_its_own_membermask() {
    let body = |mask: &str, m: &str| {
        format!(
            "{PROLOGUE}\n\t.loc 1 29 0\n\tvote.sync.ballot.b32 %r8, %p0, {mask}; // {m}\n\tst.global.u32 [%rd3], %r8;\n\tret;"
        )
    };
    let src = module(&[
        entry("own_bug", &[".u64"], &body("-2", "@OWN")),
        entry("own_ok", &[".u64"], &body("-1", "")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let e = fault(s.launch("own_bug", B1, threads(32), 0, &[Arg::U64(out)]));
    assert_report(&e, FaultKind::Sync, &["not in its own membermask 0xfffffffe"]);
    assert_place(&e, "own_bug", [0, 0, 0], [0, 0, 0], line_of(&src, "@OWN"), 29);
    s.launch("own_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
}

#[test]
fn synccheck_aligned_mma_and_ldmatrix_with_an_exited_lane() {
    let mma = "\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f0, %f1, %f2, %f3}, \
               {%r20, %r21, %r22, %r23}, {%r24, %r25}, {%f4, %f5, %f6, %f7};";
    let ldm = "\tldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r20}, [%r12];";
    let body = |exit_lane: u32, op: &str, m: &str| {
        format!(
            "{PROLOGUE}\n{SHARED}\n\tst.shared.u32 [%r4], %r1;\n\tand.b32 %r12, %r1, 7;\n\tshl.b32 %r12, %r12, 4;\n\
             \tadd.u32 %r12, %r12, %r2;\n\tmov.b32 %r20, 0;\n\tmov.b32 %r21, 0;\n\tmov.b32 %r22, 0;\n\tmov.b32 %r23, 0;\n\
             \tmov.b32 %r24, 0;\n\tmov.b32 %r25, 0;\n\tmov.f32 %f4, 0f00000000;\n\tmov.f32 %f5, 0f00000000;\n\
             \tmov.f32 %f6, 0f00000000;\n\tmov.f32 %f7, 0f00000000;\n\tsetp.eq.u32 %p1, %r1, {exit_lane};\n\
             \t@%p1 bra $L__exit;\n\t.loc 1 30 0\n{op} // {m}\n\tst.global.u32 [%rd3], %r20;\n$L__exit:\n\tret;"
        )
    };
    for (what, op) in [("mma", mma), ("ldmatrix", ldm)] {
        let src = module(&[
            entry("aligned_bug", &[".u64"], &body(31, op, "@ALIGNED")),
            entry("aligned_ok", &[".u64"], &body(99, op, "")),
        ]);
        let s = Session::new(&src).unwrap();
        let out = s.alloc(128);
        let e = fault(s.launch("aligned_bug", B1, threads(32), 0, &[Arg::U64(out)]));
        assert_report(&e, FaultKind::Sync, &[".aligned", "lane 31 exited"]);
        assert_eq!(e.ptx_line, line_of(&src, "@ALIGNED"), "{what}");
        s.launch("aligned_ok", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    }
}

// cp.async

/// 64 threads each copy 16 bytes of `in` (p0) to buf[16 tid] in group 0 and, with
/// `two`, 16 more to buf[1024 + 16 tid] in group 1; then `wait`, a barrier, and
/// each thread reads the u32 at `read` (an offset expression in %r14) into out (p1).
fn cp_kernel(name: &str, two: bool, wait: &str, read: &str, marker: &str) -> String {
    let second = if two {
        "\tadd.s64 %rd7, %rd6, 1024;\n\tcp.async.cg.shared.global [%r13+1024], [%rd7], 16;\n\tcp.async.commit_group;"
    } else {
        ""
    };
    entry(
        name,
        &[".u64", ".u64"],
        &format!(
            "{PROLOGUE}\n\t.shared .align 16 .b8 buf[2048];\n\tld.param.u64 %rd4, [p1];\n\tadd.s64 %rd5, %rd4, %rd2;\n\
             \tmul.wide.u32 %rd8, %r1, 16;\n\tadd.s64 %rd6, %rd1, %rd8;\n\tmov.u32 %r12, buf;\n\tshl.b32 %r13, %r1, 4;\n\
             \tadd.u32 %r13, %r13, %r12;\n\tcp.async.cg.shared.global [%r13], [%rd6], 16;\n\tcp.async.commit_group;\n\
             {second}\n{wait}\n\tbar.sync 0;\n\txor.b32 %r14, %r1, 32;\n\tshl.b32 %r14, %r14, 4;\n{read}\n\
             \tadd.u32 %r14, %r14, %r12;\n\t.loc 1 31 0\n\tld.shared.u32 %r15, [%r14]; // {marker}\n\
             \tst.global.u32 [%rd5], %r15;\n\tret;"
        ),
    )
}

#[test]
fn cp_async_read_without_a_wait_is_reported_and_lands_only_at_the_wait() {
    let src = module(&[
        cp_kernel("no_wait", false, "", "", "@CP_READ"),
        cp_kernel("waited", false, "\tcp.async.wait_group 0;", "", ""),
        cp_kernel("waited_all", false, "\tcp.async.wait_all;", "", ""),
    ]);
    let mut s = Session::new(&src).unwrap();
    let input: Vec<u32> = (0..512).map(|x| x * 3 + 1).collect();
    let inp = s.upload(&bytes(&input));
    let out = s.alloc(256);
    let e = fault(s.launch("no_wait", B1, threads(64), 0, &[Arg::U64(inp), Arg::U64(out)]));
    assert_report(
        &e,
        FaultKind::AsyncCopy,
        &["[asynccheck]", "buf+512 is read before the cp.async.wait_group"],
    );
    assert_place(&e, "no_wait", [0, 0, 0], [0, 0, 0], line_of(&src, "@CP_READ"), 31);
    let want: Vec<u32> = (0..64).map(|t| input[((t ^ 32) * 4) as usize]).collect();
    for k in ["waited", "waited_all"] {
        s.launch(k, B1, threads(64), 0, &[Arg::U64(inp), Arg::U64(out)]).unwrap();
        assert_eq!(u32s(&s.download(out, 256)), want, "{k}");
    }
    // Without the checks the missing wait reads what shared memory held before:
    // the copy has not landed.
    s.opts.checks = false;
    s.launch("no_wait", B1, threads(64), 0, &[Arg::U64(inp), Arg::U64(out)]).unwrap();
    assert_ne!(u32s(&s.download(out, 256)), want);
}

#[test]
fn cp_async_short_wait_group_leaves_the_newest_group_in_flight() {
    // wait_group 1 lands group 0 only: reading group 1's buffer is the bug, reading
    // group 0's is the double-buffering it is for.
    let src = module(&[
        cp_kernel("short_wait", true, "\tcp.async.wait_group 1;", "\tadd.u32 %r14, %r14, 1024;", "@SHORT"),
        cp_kernel("right_wait", true, "\tcp.async.wait_group 1;", "", ""),
    ]);
    let s = Session::new(&src).unwrap();
    let input: Vec<u32> = (0..512).map(|x| x ^ 0x5a5a).collect();
    let inp = s.upload(&bytes(&input));
    let out = s.alloc(256);
    let e = fault(s.launch("short_wait", B1, threads(64), 0, &[Arg::U64(inp), Arg::U64(out)]));
    assert_report(&e, FaultKind::AsyncCopy, &["buf+1536 is read before the cp.async.wait_group"]);
    assert_place(&e, "short_wait", [0, 0, 0], [0, 0, 0], line_of(&src, "@SHORT"), 31);
    s.launch("right_wait", B1, threads(64), 0, &[Arg::U64(inp), Arg::U64(out)]).unwrap();
    let want: Vec<u32> = (0..64).map(|t| input[((t ^ 32) * 4) as usize]).collect();
    assert_eq!(u32s(&s.download(out, 256)), want);
}

#[test]
fn cp_async_copies_left_in_flight_at_exit_do_not_leak_into_the_next_block() {
    // Each block writes its buffer, then starts a copy over it it never waits for
    // (wasteful, not a hazard). The next block on the same host thread reuses the
    // shared memory and must start with nothing in flight.
    let body = "\tld.param.u64 %rd1, [p0];\n\tmov.u32 %r1, %tid.x;\n\t.shared .align 16 .b8 buf[512];\n\
                \tmov.u32 %r12, buf;\n\tshl.b32 %r13, %r1, 4;\n\tadd.u32 %r13, %r13, %r12;\n\tmul.wide.u32 %rd8, %r1, 16;\n\
                \tadd.s64 %rd6, %rd1, %rd8;\n\tst.shared.u32 [%r13], %r1;\n\tcp.async.cg.shared.global [%r13], [%rd6], 16;\n\
                \tcp.async.commit_group;\n\tret;";
    let src = module(&[entry("leftover", &[".u64"], body)]);
    let mut s = Session::new(&src).unwrap();
    s.opts.threads = 1;
    let inp = s.upload(&[1u8; 512]);
    s.launch("leftover", [4, 1, 1], threads(32), 0, &[Arg::U64(inp)]).unwrap();
}

// Hangs

#[test]
fn budget_reports_a_hang() {
    // The bug: a loop whose condition never changes. The twin counts to 1000.
    let spin = "\tmov.u32 %r1, 0;\n\tsetp.eq.u32 %p1, %r1, 0;\n\t.loc 1 32 0\n$L__spin:\n\t@%p1 bra $L__spin; // @SPIN\n\tret;";
    let count = "\tmov.u32 %r1, 0;\n$L__count:\n\tadd.u32 %r1, %r1, 1;\n\tsetp.ne.u32 %p1, %r1, 1000;\n\
                 \t@%p1 bra $L__count;\n\tret;";
    let src = module(&[entry("spin_bug", &[], spin), entry("spin_ok", &[], count)]);
    let mut s = Session::new(&src).unwrap();
    s.opts.budget = 100_000;
    let e = fault(s.launch("spin_bug", B1, threads(32), 0, &[]));
    assert_report(
        &e,
        FaultKind::Budget,
        &["[budget]", "past its budget of 100000 warp instructions", "spin_bug"],
    );
    assert_place(&e, "spin_bug", [0, 0, 0], [0, 0, 0], line_of(&src, "@SPIN"), 32);
    s.launch("spin_ok", B1, threads(32), 0, &[]).unwrap();
}

// Bad input

fn load_err(src: &str) -> LoadError {
    match Session::new(src) {
        Err(e) => e,
        Ok(_) => panic!("the module loaded"),
    }
}

#[test]
fn load_refuses_malformed_and_unknown_ptx_naming_the_line() {
    let good =
        module(&[entry("fine", &[".u64"], &format!("{PROLOGUE}\n\tst.global.u32 [%rd3], %r1;\n\tret;"))]);
    let with =
        |inst: &str| module(&[entry("k", &[".u64"], &format!("{PROLOGUE}\n\t{inst} // @HERE\n\tret;"))]);
    let cases: [(&str, &str); 6] = [
        ("add.s32 %r1, %r2 %r3;", "syntax error"),
        ("frobnicate.u32 %r1, %r2;", "instruction frobnicate.u32"),
        ("ld.global.zzz.u32 %r2, [%rd3];", "modifier .zzz of ld.global.zzz.u32"),
        ("mov.u32 %r2, %smid;", "special register %smid"),
        ("ld.u32 %r2, [%rd3];", "generic addressing"),
        ("add.u32 %r2, %r1, %q7;", "register %q7 is not declared"),
    ];
    for (inst, says) in cases {
        let src = with(inst);
        let e = load_err(&src);
        let line = line_of(&src, "@HERE");
        let text = e.to_string();
        assert!(text.contains(&format!("PTX line {line}")) && text.contains(says), "{inst}: {text}");
        match (&e, says) {
            (LoadError::Syntax { line: l, .. }, "syntax error") => assert_eq!(*l, line),
            (LoadError::Unsupported { line: l, .. }, _) | (LoadError::Invalid { line: l, .. }, _) => {
                assert_eq!(*l, line)
            }
            _ => panic!("{inst}: unexpected {e:?}"),
        }
        // Loading goes on working.
        Session::new(&good).unwrap();
    }
}

#[test]
fn launch_refuses_bad_geometry_shared_memory_and_parameters() {
    let maxntid = entry("capped", &[".u64"], &format!("{PROLOGUE}\n\tst.global.u32 [%rd3], %r1;\n\tret;"))
        .replace(")\n{", ")\n.maxntid 64, 1, 1\n{");
    let src = module(&[
        entry("fine", &[".u64"], &format!("{PROLOGUE}\n\tst.global.u32 [%rd3], %r1;\n\tret;")),
        maxntid,
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(4096);
    let a = [Arg::U64(out)];
    let good = || {
        s.launch("fine", B1, threads(32), 0, &a).unwrap();
    };
    let cases: [(&str, [u32; 3], [u32; 3], u32, &str); 6] = [
        ("fine", [0, 1, 1], [32, 1, 1], 0, "must be nonzero"),
        ("fine", [1, 1, 1], [32, 0, 1], 0, "must be nonzero"),
        ("fine", [1, 1, 1], [1025, 1, 1], 0, "exceed the device limits"),
        ("fine", [1, 1, 1], [32, 32, 2], 0, "2048 threads per block is more than 1024"),
        ("capped", [1, 1, 1], [128, 1, 1], 0, "more than the kernel's .maxntid [64, 1, 1]"),
        ("fine", [1, 1, 1], [32, 1, 1], 228 * 1024, "more than the kernel allows (232448"),
    ];
    for (k, grid, block, smem, says) in cases {
        let m = config(s.launch(k, grid, block, smem, &a));
        assert!(m.contains(k) && m.contains(says), "{m}");
        good();
    }
    // Dynamic shared memory above the function's attribute, through the library call.
    let prog = &s.module.programs["fine"];
    let p = out.to_le_bytes();
    let m = config(pimoe_emu::launch(prog, &s.mem, B1, threads(32), 48 * 1024 + 16, 48 * 1024, &p, &s.opts));
    assert!(m.contains("MAX_DYNAMIC_SHARED_SIZE_BYTES") && m.contains("49168"), "{m}");
    pimoe_emu::launch(prog, &s.mem, B1, threads(32), 48 * 1024, 48 * 1024, &p, &s.opts).unwrap();
    // Above the device's 227 KiB, whatever the attribute says.
    let m = config(pimoe_emu::launch(prog, &s.mem, B1, threads(32), 228 * 1024, u32::MAX, &p, &s.opts));
    assert!(m.contains("233472 bytes of shared memory per block is more than the device's 232448"), "{m}");
    // Parameters of the wrong size or count.
    let m = config(pimoe_emu::launch(prog, &s.mem, B1, threads(32), 0, 0, &p[..4], &s.opts));
    assert!(m.contains("4 bytes of parameters given, the kernel takes 8"), "{m}");
    let m = config(s.launch("fine", B1, threads(32), 0, &[Arg::U32(1)]));
    assert!(m.contains("argument p0 is 4 bytes, the parameter 8"), "{m}");
    let m = config(s.launch("fine", B1, threads(32), 0, &[]));
    assert!(m.contains("takes 1 arguments, 0 given"), "{m}");
    good();
}

// Determinism and recovery

#[test]
fn a_fault_is_reported_for_the_lowest_faulting_block_whatever_the_timing() {
    // Block 7 faults only after a long loop; blocks 20 and up fault at once, on
    // other host threads, long before block 7 does.
    let body = "\tld.param.u64 %rd1, [p0];\n\tmov.u32 %r1, %ctaid.x;\n\tmul.wide.u32 %rd2, %r1, 4;\n\
                \tadd.s64 %rd3, %rd1, %rd2;\n\tsetp.ge.u32 %p1, %r1, 20;\n\t@%p1 bra $L__fault;\n\
                \tsetp.ne.u32 %p2, %r1, 7;\n\t@%p2 bra $L__fine;\n\tmov.u32 %r2, 0;\n$L__spin:\n\tadd.u32 %r2, %r2, 1;\n\
                \tsetp.lt.u32 %p3, %r2, 20000;\n\t@%p3 bra $L__spin;\n$L__fault:\n\tst.global.u32 [%rd3+4096], %r1; // @FAULT\n\
                $L__fine:\n\tst.global.u32 [%rd3], %r1;\n\tret;";
    let src = module(&[entry("lowest", &[".u64"], body)]);
    let mut s = Session::new(&src).unwrap();
    s.opts.threads = 4;
    let out = s.alloc(64 * 4);
    let mut seen = None;
    for _ in 0..10 {
        let e = fault(s.launch("lowest", [64, 1, 1], threads(32), 0, &[Arg::U64(out)]));
        assert_eq!(e.block, [7, 0, 0], "{e}");
        assert_eq!(e.ptx_line, line_of(&src, "@FAULT"));
        let text = e.to_string();
        assert!(seen.get_or_insert_with(|| text.clone()) == &text, "reports differ:\n{text}");
    }
}

#[test]
fn the_next_launch_after_a_fault_works_on_the_same_memory() {
    let bug = entry(
        "half_then_fault",
        &[".u64"],
        &format!("{PROLOGUE}\n\tst.global.u32 [%rd3], %r1;\n\tsetp.eq.u32 %p1, %r1, 40;\n\t@%p1 st.global.u32 [%rd3+4096], %r1;\n\tret;"),
    );
    let ok = entry("twice", &[".u64"], &format!("{PROLOGUE}\n\tld.global.u32 %r2, [%rd3];\n\tshl.b32 %r2, %r2, 1;\n\tst.global.u32 [%rd3], %r2;\n\tret;"));
    let src = module(&[bug, ok]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(64 * 4);
    let e = fault(s.launch("half_then_fault", [4, 1, 1], threads(64), 0, &[Arg::U64(out)]));
    assert_eq!((e.kind, e.block, e.thread), (FaultKind::OutOfBounds, [0, 0, 0], Some([40, 0, 0])));
    // What the faulting launch wrote before the fault is there and defined.
    s.launch("twice", B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 256)), (0..64).map(|t| 2 * t).collect::<Vec<_>>());
}

// The scheduler: divergence, reconvergence and waiting, against the PTX ISA.

#[test]
fn divergent_if_else_then_a_full_warp_shfl() {
    // Two layouts: the join after both arms (nvcc's), and the join reached by one
    // arm before the other arm has run (the first arrivals wait at the shfl).
    let joined = "\t@%p1 bra $L__even;\n\tadd.u32 %r8, %r1, 100;\n\tbra.uni $L__join;\n$L__even:\n\tshl.b32 %r8, %r1, 1;\n\
                  $L__join:\n\tshfl.sync.bfly.b32 %r9, %r8, 1, 31, -1;\n\tst.global.u32 [%rd3], %r9;\n\tret;";
    let tail_arm = "\t@%p1 bra $L__even;\n\tadd.u32 %r8, %r1, 100;\n$L__join:\n\tshfl.sync.bfly.b32 %r9, %r8, 1, 31, -1;\n\
                    \tst.global.u32 [%rd3], %r9;\n\tret;\n$L__even:\n\tshl.b32 %r8, %r1, 1;\n\tbra.uni $L__join;";
    let pre = "\tand.b32 %r5, %r1, 1;\n\tsetp.eq.u32 %p1, %r5, 0;";
    let src = module(&[
        entry("joined", &[".u64"], &format!("{PROLOGUE}\n{pre}\n{joined}")),
        entry("tail_arm", &[".u64"], &format!("{PROLOGUE}\n{pre}\n{tail_arm}")),
    ]);
    let s = Session::new(&src).unwrap();
    let x = |t: u32| if t % 2 == 0 { 2 * t } else { t + 100 };
    let want: Vec<u32> = (0..64).map(|t| x(t ^ 1)).collect();
    for k in ["joined", "tail_arm"] {
        let out = s.alloc(256);
        let st = s.launch(k, B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
        assert_eq!(u32s(&s.download(out, 256)), want, "{k}");
        // Reconverged: the shfl and the store run once per warp.
        assert!(st.warp_instructions < 2 * 20, "{k}: {st:?}");
    }
}

#[test]
fn loop_with_lane_dependent_trip_counts_then_a_barrier() {
    let body = format!(
        "{PROLOGUE}\n{SHARED}\n\trem.u32 %r10, %r1, 11;\n\tmov.u32 %r11, 0;\n\tmov.u32 %r12, 0;\n\
         \tsetp.eq.u32 %p1, %r10, 0;\n\t@%p1 bra $L__after;\n$L__loop:\n\tadd.u32 %r12, %r12, %r11;\n\tadd.u32 %r11, %r11, 1;\n\
         \tsetp.lt.u32 %p2, %r11, %r10;\n\t@%p2 bra $L__loop;\n$L__after:\n\tst.shared.u32 [%r4], %r12;\n\tbar.sync 0;\n\
         \txor.b32 %r13, %r1, 32;\n\tshl.b32 %r13, %r13, 2;\n\tadd.u32 %r13, %r13, %r2;\n\tld.shared.u32 %r14, [%r13];\n\
         \tst.global.u32 [%rd3], %r14;\n\tret;"
    );
    let src = module(&[entry("trips", &[".u64"], &body)]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(256);
    let st = s.launch("trips", B1, threads(64), 0, &[Arg::U64(out)]).unwrap();
    let sum = |t: u32| (0..t % 11).sum::<u32>();
    assert_eq!(u32s(&s.download(out, 256)), (0..64).map(|t| sum(t ^ 32)).collect::<Vec<_>>());
    assert_eq!(st.barriers, 1);
}

#[test]
fn threads_that_return_early_are_not_waited_for_at_a_barrier() {
    // 96 threads; threads 40 and up return: part of warp 1 and all of warp 2.
    let body = |early: &str| {
        format!(
            "{PROLOGUE}\n{SHARED}\n\tsetp.ge.u32 %p1, %r1, 40;\n{early}\n\tst.shared.u32 [%r4], %r1;\n\tbar.sync 0;\n\
             \tmov.u32 %r13, 39;\n\tsub.u32 %r13, %r13, %r1;\n\tshl.b32 %r13, %r13, 2;\n\tadd.u32 %r13, %r13, %r2;\n\
             \tld.shared.u32 %r14, [%r13];\n\tst.global.u32 [%rd3], %r14;\n\tret;\n$L__out:\n\tret;"
        )
    };
    let src = module(&[
        entry("early_ret", &[".u64"], &body("\t@%p1 ret;")),
        entry("early_bra", &[".u64"], &body("\t@%p1 bra $L__out;")),
        entry("early_exit", &[".u64"], &body("\t@%p1 exit;")),
    ]);
    let s = Session::new(&src).unwrap();
    for k in ["early_ret", "early_bra", "early_exit"] {
        let out = s.upload(&[0u8; 384]);
        let st = s.launch(k, B1, threads(96), 0, &[Arg::U64(out)]).unwrap();
        let got = u32s(&s.download(out, 384));
        assert_eq!(&got[..40], &(0..40).rev().collect::<Vec<_>>()[..], "{k}");
        assert!(got[40..].iter().all(|&v| v == 0), "{k}");
        assert_eq!(st.barriers, 1, "{k}");
    }
}

#[test]
fn lanes_exited_before_a_shfl_or_vote_are_not_waited_for() {
    // Lanes 20 and up return after the shfl's position in the code (so the others
    // wait there first) or before it: either way the survivors go on alone.
    let body = format!(
        "{PROLOGUE}\n\tsetp.ge.u32 %p1, %r1, 20;\n\t@%p1 bra $L__out;\n\tsetp.lt.u32 %p2, %r1, 5;\n\
         \tvote.sync.ballot.b32 %r8, %p2, -1;\n\txor.b32 %r10, %r1, 1;\n\tshfl.sync.idx.b32 %r9, %r1, %r10, 31, -1;\n\
         \tadd.u32 %r9, %r9, %r8;\n\tst.global.u32 [%rd3], %r9;\n$L__out:\n\tret;"
    );
    let src = module(&[entry("survivors", &[".u64"], &body)]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(80);
    s.launch("survivors", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    // The ballot counts only the lanes left; each survivor reads its pair's tid.
    assert_eq!(u32s(&s.download(out, 80)), (0..20).map(|t| (t ^ 1) + 0x1f).collect::<Vec<_>>());
}

#[test]
fn a_call_from_divergent_lanes_reconverges_after_it() {
    let func = ".func (.param .b32 tri_retval) tri(\n\t.param .b32 tri_x\n)\n{\n\t.reg .b32 %t<4>;\n\
                \tld.param.b32 %t1, [tri_x];\n\tmad.lo.s32 %t2, %t1, 3, 1;\n\tst.param.b32 [tri_retval], %t2;\n\tret;\n}\n"
        .to_string();
    // Odd lanes (or all lanes) call tri; then a shfl, and a loop long enough that
    // running it twice (once per half of the warp) would show in the counts.
    let body = |guard: &str| {
        format!(
            "{PROLOGUE}\n\tmov.u32 %r8, %r1;\n\tand.b32 %r5, %r1, 1;\n\tsetp.eq.u32 %p1, %r5, 1;\n\t{guard}\n\t{{\n\
             \t.param .b32 a0;\n\tst.param.b32 [a0], %r1;\n\t.param .b32 r0;\n\tcall (r0), tri, (a0);\n\tld.param.b32 %r8, [r0];\n\
             \t}}\n$L__skip:\n\tmov.u32 %r10, 0;\n$L__tail:\n\tadd.u32 %r10, %r10, 1;\n\tsetp.lt.u32 %p3, %r10, 100;\n\
             \t@%p3 bra $L__tail;\n\tshfl.sync.bfly.b32 %r9, %r8, 1, 31, -1;\n\tst.global.u32 [%rd3], %r9;\n\tret;"
        )
    };
    let src = module(&[
        func,
        entry("odd_call", &[".u64"], &body("@!%p1 bra $L__skip;")),
        entry("all_call", &[".u64"], &body("")),
    ]);
    let s = Session::new(&src).unwrap();
    let out = s.alloc(128);
    let div = s.launch("odd_call", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    let x = |t: u32| if t % 2 == 1 { 3 * t + 1 } else { t };
    assert_eq!(u32s(&s.download(out, 128)), (0..32).map(|t| x(t ^ 1)).collect::<Vec<_>>());
    let conv = s.launch("all_call", B1, threads(32), 0, &[Arg::U64(out)]).unwrap();
    assert_eq!(u32s(&s.download(out, 128)), (0..32).map(|t| 3 * (t ^ 1) + 1).collect::<Vec<_>>());
    // The tail (300 instructions) runs once: the lanes meet again after the call.
    assert!(div.warp_instructions < conv.warp_instructions + 10, "{div:?} vs {conv:?}");
}
