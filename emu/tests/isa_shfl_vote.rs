//! Warp shuffles and votes (PTX ISA §9.7.8.6 shfl.sync, §9.7.12.3 vote.sync).
//!
//! shfl.sync semantics (the ISA's pseudocode): bval = b[4:0], cval = c[4:0],
//! segmask = c[12:8]; maxLane = (lane & segmask) | (cval & ~segmask), minLane =
//! lane & segmask; up: j = lane - bval, pval = j >= maxLane; down: j = lane + bval,
//! pval = j <= maxLane; bfly: j = lane ^ bval, pval = j <= maxLane; idx: j = minLane
//! | (bval & ~segmask), pval = j <= maxLane; if !pval, j = lane; d = a[j]; p = pval.
//! "Note that an out of range value of b may still result in a valid computed
//! source lane index j." Reading a lane that does not take part is undefined: the
//! emulator reports it (synccheck).
//!
//! vote.sync: ballot "copies the predicate from each thread in a warp into the
//! corresponding bit position of destination register d"; any/all/uni reduce the
//! predicate over the threads of membermask; {!}a negates the source predicate.

mod common;
use common::*;

fn shfl_ref(mode: &str, lane: i32, b: u32, c: u32) -> (i32, bool) {
    let bval = (b & 0x1f) as i32;
    let cval = (c & 0x1f) as i32;
    let seg = ((c >> 8) & 0x1f) as i32;
    let max_lane = (lane & seg) | (cval & !seg);
    let min_lane = lane & seg;
    let (j, p) = match mode {
        "up" => (lane - bval, lane - bval >= max_lane),
        "down" => (lane + bval, lane + bval <= max_lane),
        "bfly" => (lane ^ bval, (lane ^ bval) <= max_lane),
        _ => {
            let j = min_lane | (bval & !seg);
            (j, j <= max_lane)
        }
    };
    (if p { j } else { lane }, p)
}

const SHFL_BODY: &str = "mul.wide.u32 %rd0, %lane, 8;
    add.s64 %rd0, %in, %rd0;
    ld.global.u32 %r1, [%rd0];
    ld.global.u32 %r2, [%rd0+4];
    mad.lo.u32 %r0, %lane, 7, 100;
    shfl.sync.MODE.b32 %o0|%p0, %r0, %r1, %r2, 0xffffffff;
    selp.u32 %o1, 1, 0, %p0;";

#[test]
fn shfl_every_mode_clamp_and_segment() {
    let bs: [u32; 10] = [0, 1, 2, 3, 5, 8, 16, 31, 33, 0xffff_ffe1];
    // c: full warp (0x1f), clamp at 0 (up), segments of 8 / 16 / 4 lanes, a clamp
    // inside a segment, and junk in the unused bits.
    let cs: [u32; 8] = [0x1f, 0x0, 0x181f, 0x101f, 0x1c1f, 0x1807, 0x1c03, 0xffff_e01f];
    for mode in ["up", "down", "bfly", "idx"] {
        for &c in &cs {
            // b differs per lane; c is uniform here and per lane below.
            let mut input = Vec::new();
            for lane in 0..32 {
                input.push(bs[lane % bs.len()]);
                input.push(c);
            }
            let got = run_threads(32, 2, &SHFL_BODY.replace("MODE", mode), &input);
            for lane in 0..32 {
                let (j, p) = shfl_ref(mode, lane as i32, input[2 * lane], c);
                assert_eq!(
                    got[lane],
                    [j as u32 * 7 + 100, p as u32],
                    "shfl.{mode} lane {lane} b {:#x} c {c:#x}",
                    input[2 * lane]
                );
            }
        }
        // Per-lane c values.
        let input: Vec<u32> = (0..32).flat_map(|l| [bs[(l * 3) % bs.len()], cs[l % cs.len()]]).collect();
        let got = run_threads(32, 2, &SHFL_BODY.replace("MODE", mode), &input);
        for lane in 0..32 {
            let (j, p) = shfl_ref(mode, lane as i32, input[2 * lane], input[2 * lane + 1]);
            assert_eq!(got[lane], [j as u32 * 7 + 100, p as u32], "shfl.{mode} lane {lane} (per-lane c)");
        }
    }
}

/// The common nvcc idioms, by hand: a butterfly sum and an up-scan.
#[test]
fn shfl_reduction_and_scan_by_hand() {
    let got = run_threads(
        32,
        1,
        "mov.u32 %r0, %lane;
    shfl.sync.bfly.b32 %r1, %r0, 16, 31, -1;
    add.u32 %r0, %r0, %r1;
    shfl.sync.bfly.b32 %r1, %r0, 8, 31, -1;
    add.u32 %r0, %r0, %r1;
    shfl.sync.bfly.b32 %r1, %r0, 4, 31, -1;
    add.u32 %r0, %r0, %r1;
    shfl.sync.bfly.b32 %r1, %r0, 2, 31, -1;
    add.u32 %r0, %r0, %r1;
    shfl.sync.bfly.b32 %r1, %r0, 1, 31, -1;
    add.u32 %o0, %r0, %r1;",
        &[],
    );
    assert!(got.iter().all(|w| w[0] == 496), "{got:?}");
    // Inclusive scan with shfl.up and its predicate (the ISA's example).
    let got = run_threads(
        32,
        1,
        "add.u32 %r0, %lane, 1;
    shfl.sync.up.b32 %r1|%p0, %r0, 1, 0, -1;
    @%p0 add.u32 %r0, %r1, %r0;
    shfl.sync.up.b32 %r1|%p0, %r0, 2, 0, -1;
    @%p0 add.u32 %r0, %r1, %r0;
    shfl.sync.up.b32 %r1|%p0, %r0, 4, 0, -1;
    @%p0 add.u32 %r0, %r1, %r0;
    shfl.sync.up.b32 %r1|%p0, %r0, 8, 0, -1;
    @%p0 add.u32 %r0, %r1, %r0;
    shfl.sync.up.b32 %r1|%p0, %r0, 16, 0, -1;
    @%p0 add.u32 %o0, %r1, %r0;
    @!%p0 mov.u32 %o0, %r0;",
        &[],
    );
    for (l, w) in got.iter().enumerate() {
        assert_eq!(w[0], ((l + 1) * (l + 2) / 2) as u32, "scan lane {l}");
    }
}

/// A membermask naming half the warp, executed by that half only (divergent code),
/// and a block whose last warp is partial.
#[test]
fn shfl_with_partial_membermask() {
    let got = run_threads(
        32,
        1,
        "mov.u32 %o0, 0;
    setp.ge.u32 %p1, %lane, 16;
    @%p1 bra $Lskip;
    mad.lo.u32 %r0, %lane, 3, 1;
    shfl.sync.bfly.b32 %o0, %r0, 1, 0x1f, 0xffff;
$Lskip:",
        &[],
    );
    for (l, w) in got.iter().enumerate() {
        let want = if l < 16 { (l ^ 1) as u32 * 3 + 1 } else { 0 };
        assert_eq!(w[0], want, "lane {l}");
    }
    // 20 threads: lanes 20-31 were never launched; idx 0 with their bits clear.
    let got =
        run_threads(20, 1, "add.u32 %r0, %lane, 40;\n    shfl.sync.idx.b32 %o0, %r0, 0, 0x1f, 0xfffff;", &[]);
    assert!(got.iter().all(|w| w[0] == 40));
}

/// Reading a lane outside the participating set is undefined: refused at run time.
#[test]
fn shfl_from_a_non_member_is_reported() {
    let s = load(&threads_module(
        1,
        "setp.ge.u32 %p1, %lane, 16;
    @%p1 bra $Lskip;
    shfl.sync.idx.b32 %o0, %lane, 20, 0x1f, 0xffff;
$Lskip:",
    ));
    let inp = s.upload(&[0; 4]);
    let out = s.upload(&[0; 128]);
    let r = s.launch(
        "k",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[pimoe_emu::session::Arg::U64(inp), pimoe_emu::session::Arg::U64(out)],
    );
    let e = format!("{}", r.expect_err("a read of a non-member lane must be reported"));
    assert!(e.contains("synccheck"), "{e}");
}

#[test]
fn vote_ballot_any_all_uni() {
    // p = lane % 3 == 0 (true in lanes 0, 3, ..., 30).
    let p = "rem.u32 %r0, %lane, 3;\n    setp.eq.u32 %p0, %r0, 0;";
    let ballot: u32 = (0..32).filter(|l| l % 3 == 0).fold(0, |m, l| m | 1 << l);
    let got = run_threads(
        32,
        2,
        &format!("{p}\n    vote.sync.ballot.b32 %o0, %p0, -1;\n    vote.sync.ballot.b32 %o1, !%p0, -1;"),
        &[],
    );
    assert!(got.iter().all(|w| w[0] == ballot && w[1] == !ballot), "{got:?}");
    let body = format!(
        "{p}
    setp.lt.u32 %p1, %lane, 40;
    vote.sync.any.pred %p2, %p0, -1;
    selp.u32 %o0, 1, 0, %p2;
    vote.sync.all.pred %p2, %p0, -1;
    selp.u32 %r1, 2, 0, %p2;
    or.b32 %o0, %o0, %r1;
    vote.sync.uni.pred %p2, %p0, -1;
    selp.u32 %r1, 4, 0, %p2;
    or.b32 %o0, %o0, %r1;
    vote.sync.all.pred %p2, %p1, -1;
    selp.u32 %r1, 8, 0, %p2;
    or.b32 %o0, %o0, %r1;
    vote.sync.uni.pred %p2, !%p1, -1;
    selp.u32 %r1, 16, 0, %p2;
    or.b32 %o0, %o0, %r1;
    vote.sync.any.pred %p2, !%p1, -1;
    selp.u32 %r1, 32, 0, %p2;
    or.b32 %o0, %o0, %r1;"
    );
    let got = run_threads(32, 1, &body, &[]);
    // any(p) = 1, all(p) = 0, uni(p) = 0, all(true) = 1, uni(false) = 1, any(false) = 0.
    assert!(got.iter().all(|w| w[0] == 1 | 8 | 16), "{got:?}");
}

/// Only the threads of membermask vote; threads not executing the vote contribute
/// nothing to the ballot.
#[test]
fn vote_with_partial_membermask() {
    let got = run_threads(
        32,
        2,
        "mov.u32 %o0, 0;
    mov.u32 %o1, 0;
    setp.ge.u32 %p1, %lane, 8;
    @%p1 bra $Lskip;
    and.b32 %r0, %lane, 1;
    setp.eq.u32 %p0, %r0, 1;
    vote.sync.ballot.b32 %o0, %p0, 0xff;
    vote.sync.all.pred %p2, %p0, 0xff;
    selp.u32 %o1, 1, 0, %p2;
$Lskip:",
        &[],
    );
    for (l, w) in got.iter().enumerate() {
        let want = if l < 8 { [0xaa, 0] } else { [0, 0] };
        assert_eq!(w[..], want, "lane {l}");
    }
    // A 20-thread block: the ballot of a true predicate has the 20 launched bits.
    let got = run_threads(20, 1, "setp.eq.u32 %p0, 0, 0;\n    vote.sync.ballot.b32 %o0, %p0, 0xfffff;", &[]);
    assert!(got.iter().all(|w| w[0] == 0xfffff));
}
