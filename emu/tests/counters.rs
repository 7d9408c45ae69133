//! The launch counters against values worked out by hand from the access pattern:
//! sectors are 32-byte aligned runs of global memory, shared memory has 32 banks of
//! 4-byte words, and a shared request is served in 128-byte phases (32 lanes of 4
//! bytes, 16 of 8, 8 of 16, one 8x16-byte matrix per ldmatrix phase), each taking
//! as many wavefronts as the most distinct words one bank holds for it.

mod common;
use common::{load, HEADER};
use pimoe_emu::exec::counters::Counters;
use pimoe_emu::session::Arg;

/// One block of `threads` threads runs `body` with %buf (a 64 KiB buffer),
/// %t (%tid.x) and scratch %r0..%r15, %rd0..%rd7, %f0..%f7, %p0..%p3, and
/// `smem` bytes of shared memory at `smem`.
fn counters(threads: u32, body: &str) -> Counters {
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_p)
{{
    .reg .b64 %buf;
    .reg .b64 %rd<8>;
    .reg .b32 %t;
    .reg .b32 %r<16>;
    .reg .f32 %f<8>;
    .reg .pred %p<4>;
    .shared .align 16 .b8 smem[8192];
    ld.param.u64 %buf, [k_p];
    mov.u32 %t, %tid.x;
{body}
    ret;
}}
"
    );
    let mut s = load(&ptx);
    s.opts.counters = true;
    // What is read is never checked here, only how: the kernels read shared
    // memory they did not fill.
    s.opts.checks = false;
    let buf = s.upload(&vec![0u8; 1 << 16]);
    let stats = s
        .launch("k", [1, 1, 1], [threads, 1, 1], 0, &[Arg::U64(buf)])
        .unwrap_or_else(|e| panic!("launch failed: {e}\n{ptx}"));
    *stats.counters.expect("counters were on")
}

/// Thread t loads 4 bytes at p + stride * t (+ base).
fn strided_load(stride: u32, base: u32, width: &str) -> Counters {
    counters(
        32,
        &format!(
            "    mul.wide.u32 %rd0, %t, {stride};
    add.s64 %rd0, %rd0, %buf;
    ld.global.{width} [%rd0+{base}];"
        ),
    )
}

#[test]
fn global_loads_count_requests_bytes_and_sectors() {
    // 32 consecutive floats: 128 bytes in 4 sectors.
    let c = strided_load(4, 0, "f32 %f0,");
    assert_eq!((c.global_load.requests, c.global_load.bytes, c.global_load.sectors), (1, 128, 4));
    assert_eq!(c.dram_read_sectors, 4);
    // Shifted by one float: 128 bytes across 5 sectors.
    let c = strided_load(4, 4, "f32 %f0,");
    assert_eq!((c.global_load.bytes, c.global_load.sectors), (128, 5));
    // One float per 32-byte sector: 32 sectors for 128 bytes (12.5 % used).
    let c = strided_load(32, 0, "f32 %f0,");
    assert_eq!((c.global_load.bytes, c.global_load.sectors), (128, 32));
    // Every lane the same word: one sector, 4 distinct bytes.
    let c = strided_load(0, 64, "f32 %f0,");
    assert_eq!((c.global_load.bytes, c.global_load.sectors), (4, 1));
    // Lanes 2k and 2k + 1 read the same word: 16 words, 64 bytes, 2 sectors.
    let c = counters(
        32,
        "    shr.u32 %r0, %t, 1;
    mul.wide.u32 %rd0, %r0, 4;
    add.s64 %rd0, %rd0, %buf;
    ld.global.f32 %f0, [%rd0];",
    );
    assert_eq!((c.global_load.bytes, c.global_load.sectors), (64, 2));
    // 16 bytes per lane, consecutive: 512 bytes, 16 sectors.
    let c = strided_load(16, 0, "v4.f32 {%f0, %f1, %f2, %f3},");
    assert_eq!((c.global_load.requests, c.global_load.bytes, c.global_load.sectors), (1, 512, 16));
}

#[test]
fn unique_sectors_count_each_sector_once_per_launch() {
    // The same 128 bytes loaded twice, then 64 of them stored: 8 sectors requested,
    // 4 distinct sectors read; 2 sectors written.
    let c = counters(
        32,
        "    mul.wide.u32 %rd0, %t, 4;
    add.s64 %rd0, %rd0, %buf;
    ld.global.f32 %f0, [%rd0];
    ld.global.f32 %f1, [%rd0];
    setp.lt.u32 %p0, %t, 16;
    @%p0 st.global.f32 [%rd0], %f1;",
    );
    assert_eq!((c.global_load.requests, c.global_load.sectors), (2, 8));
    assert_eq!(c.dram_read_sectors, 4);
    assert_eq!((c.global_store.requests, c.global_store.bytes, c.global_store.sectors), (1, 64, 2));
    assert_eq!(c.dram_write_sectors, 2);
}

/// Thread t reads `width` at smem + stride * t; returns (wavefronts, ideal).
fn shared_load(stride: u32, width: &str) -> (u64, u64) {
    let c = counters(
        32,
        &format!(
            "    mov.u64 %rd1, smem;
    st.shared.v4.u32 [%rd1], {{%t, %t, %t, %t}};
    mul.wide.u32 %rd0, %t, {stride};
    add.s64 %rd0, %rd0, %rd1;
    ld.shared.{width} [%rd0];"
        ),
    );
    assert_eq!(c.shared_load.requests, 1);
    (c.shared_load.wavefronts, c.shared_load.ideal)
}

#[test]
fn shared_wavefronts_follow_the_banks() {
    // Consecutive words: one per bank, one wavefront.
    assert_eq!(shared_load(4, "f32 %f0,"), (1, 1));
    // Stride 2 words: lanes t and t + 16 share bank 2t % 32 with different words.
    assert_eq!(shared_load(8, "f32 %f0,"), (2, 1));
    // Stride 32 words: all 32 lanes in bank 0, 32 different words.
    assert_eq!(shared_load(128, "f32 %f0,"), (32, 1));
    // Stride 33 words (padded rows): banks t % 32, no conflict.
    assert_eq!(shared_load(132, "f32 %f0,"), (1, 1));
    // Every lane the same word: a broadcast, one wavefront.
    assert_eq!(shared_load(0, "f32 %f0,"), (1, 1));
    // 8 bytes per lane, consecutive: two phases of 16 lanes, 128 bytes each.
    assert_eq!(shared_load(8, "v2.f32 {%f0, %f1},"), (2, 2));
    // 16 bytes per lane, consecutive: four phases of 8 lanes.
    assert_eq!(shared_load(16, "v4.f32 {%f0, %f1, %f2, %f3},"), (4, 4));
    // 16 bytes at a 32-byte stride: in each phase lanes j and j + 4 share banks
    // (words 8j..8j+3 and 8j+32..), two wavefronts per phase.
    assert_eq!(shared_load(32, "v4.f32 {%f0, %f1, %f2, %f3},"), (8, 4));
}

/// ldmatrix.x4 with row r of matrix k at smem + k * kstride + r * rstride.
fn ldmatrix(rstride: u32, kstride: u32) -> Counters {
    counters(
        32,
        &format!(
            "    mov.u64 %rd1, smem;
    mul.wide.u32 %rd0, %t, 16;
    add.s64 %rd0, %rd0, %rd1;
    st.shared.v4.u32 [%rd0], {{%t, %t, %t, %t}};
    st.shared.v4.u32 [%rd0+512], {{%t, %t, %t, %t}};
    st.shared.v4.u32 [%rd0+1024], {{%t, %t, %t, %t}};
    st.shared.v4.u32 [%rd0+1536], {{%t, %t, %t, %t}};
    bar.sync 0;
    and.b32 %r0, %t, 7;
    shr.u32 %r1, %t, 3;
    mul.lo.u32 %r0, %r0, {rstride};
    mad.lo.u32 %r0, %r1, {kstride}, %r0;
    cvt.u64.u32 %rd2, %r0;
    add.s64 %rd2, %rd2, %rd1;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r4, %r5, %r6, %r7}}, [%rd2];"
        ),
    )
}

#[test]
fn ldmatrix_reads_one_matrix_per_phase() {
    // Rows 16 bytes apart: each matrix is 128 contiguous bytes, one wavefront.
    let c = ldmatrix(16, 128);
    assert_eq!(c.ldmatrix, 1);
    assert_eq!((c.shared_load.wavefronts, c.shared_load.ideal), (4, 4));
    // Rows 64 bytes apart (a 32-column bf16 tile, unpadded): rows r and r + 2 share
    // banks, four wavefronts per matrix.
    let c = ldmatrix(64, 512);
    assert_eq!((c.shared_load.wavefronts, c.shared_load.ideal), (16, 4));
    assert_eq!(c.bank_conflicts(), 12);
    assert_eq!(c.conflicts_at.values().sum::<u64>(), 12);
    // Padded to 80 bytes: words 20r lie in banks 0, 20, 8, 28, 16, 4, 24, 12.
    let c = ldmatrix(80, 640);
    assert_eq!((c.shared_load.wavefronts, c.shared_load.ideal), (4, 4));
}

#[test]
fn stores_to_shared_count_like_loads() {
    // v4 stores at 16-byte stride: 4 phases, conflict-free (from the ldmatrix
    // kernel's first store); 4 such stores.
    let c = ldmatrix(16, 128);
    assert_eq!((c.shared_store.requests, c.shared_store.wavefronts, c.shared_store.ideal), (4, 16, 16));
}

#[test]
fn instruction_classes_and_lane_efficiency() {
    // Half the warp takes a branch with 4 fp32 instructions.
    let c = counters(
        32,
        "    setp.lt.u32 %p0, %t, 16;
    @!%p0 bra $Lskip;
    mov.f32 %f0, 0f3F800000;
    add.f32 %f0, %f0, %f0;
    mul.f32 %f0, %f0, %f0;
    fma.rn.f32 %f0, %f0, %f0, %f0;
$Lskip:",
    );
    // ld.param (memory), mov %tid and setp (integer), bra (control, taken by the
    // 16 lanes its guard leaves on), then by 16 lanes mov.f32 (a move: integer)
    // and 3 fp32, and ret (control) by all.
    assert_eq!(c.inst, [3, 3, 0, 1, 0, 2, 0], "by class");
    assert_eq!(c.warp_instructions(), 9);
    // 4 instructions with 32 lanes on, 5 with 16.
    assert_eq!(c.thread_inst, 4 * 32 + 5 * 16);
    assert!((c.lane_efficiency() - (208.0 / 288.0)).abs() < 1e-12);
}

#[test]
fn cp_async_counts_its_global_and_shared_sides() {
    let c = counters(
        32,
        "    mov.u64 %rd1, smem;
    mul.wide.u32 %rd0, %t, 16;
    add.s64 %rd2, %rd0, %rd1;
    add.s64 %rd3, %rd0, %buf;
    cp.async.cg.shared.global [%rd2], [%rd3], 16;
    cp.async.commit_group;
    cp.async.wait_group 0;",
    );
    assert_eq!((c.cp_async, c.cp_async_bytes), (1, 512));
    assert_eq!((c.global_load.requests, c.global_load.sectors), (1, 16));
    assert_eq!((c.shared_store.wavefronts, c.shared_store.ideal), (4, 4));
}

#[test]
fn barriers_and_mma_are_counted() {
    let c = counters(64, "    bar.sync 0;\n    bar.sync 0;");
    assert_eq!(c.barriers, 2);
    assert_eq!(c.mma(), 0);
}
