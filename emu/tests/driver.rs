//! The checks and the bad-input errors through the exported CUDA driver API (what
//! the CUDA backend calls), and stream capture / graph replay. These tests share
//! the driver's one emulated device: each makes its own module, buffers and
//! streams, so they hold in any order and in parallel.

mod support;

use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

use pimoe_emu::driver::*;
use support::*;

/// Kernels the tests share: an unguarded store (out of bounds past the buffer),
/// its guarded twin, a misaligned load, a shared-memory race, p0[tid] += 1, and a
/// store into dynamic shared memory.
fn kernels() -> String {
    module(&[
        entry("oob", &[".u64"], &format!("{PROLOGUE}\n\t.loc 1 11 0\n\tst.global.u32 [%rd3], %r1; // @OOB\n\tret;")),
        entry(
            "guarded",
            &[".u64", ".u32"],
            &format!(
                "{PROLOGUE}\n\tld.param.u32 %r2, [p1];\n\tsetp.ge.u32 %p1, %r1, %r2;\n\t@%p1 bra $L__done;\n\
                 \tst.global.u32 [%rd3], %r1;\n$L__done:\n\tret;"
            ),
        ),
        entry("misaligned", &[".u64"], &format!("{PROLOGUE}\n\tld.global.u32 %r2, [%rd3+1];\n\tret;")),
        entry(
            "race",
            &[".u64"],
            &format!(
                "{PROLOGUE}\n\t.shared .align 4 .b8 sm[128];\n\tmov.u32 %r2, sm;\n\tand.b32 %r3, %r1, 31;\n\
                 \tshl.b32 %r3, %r3, 2;\n\tadd.u32 %r4, %r2, %r3;\n\tst.shared.u32 [%r4], %r1;\n\tret;"
            ),
        ),
        entry(
            "add_one",
            &[".u64"],
            &format!("{PROLOGUE}\n\tld.global.u32 %r2, [%rd3];\n\tadd.u32 %r2, %r2, 1;\n\tst.global.u32 [%rd3], %r2;\n\tret;"),
        ),
        format!(
            ".extern .shared .align 16 .b8 dyn[];\n{}",
            entry(
                "dyn_store",
                &[],
                "\tmov.u32 %r1, %tid.x;\n\tshl.b32 %r3, %r1, 2;\n\tmov.u32 %r2, dyn;\n\tadd.u32 %r4, %r2, %r3;\n\
                 \tst.shared.u32 [%r4+65532], %r1;\n\tret;"
            )
        ),
        entry(
            "lowest",
            &[".u64"],
            "\tld.param.u64 %rd1, [p0];\n\tmov.u32 %r1, %ctaid.x;\n\tmul.wide.u32 %rd2, %r1, 4;\n\
             \tadd.s64 %rd3, %rd1, %rd2;\n\tsetp.ge.u32 %p1, %r1, 20;\n\t@%p1 bra $L__fault;\n\
             \tsetp.ne.u32 %p2, %r1, 7;\n\t@%p2 bra $L__fine;\n\tmov.u32 %r2, 0;\n$L__spin:\n\tadd.u32 %r2, %r2, 1;\n\
             \tsetp.lt.u32 %p3, %r2, 20000;\n\t@%p3 bra $L__spin;\n$L__fault:\n\tst.global.u32 [%rd3+4096], %r1;\n\
             $L__fine:\n\tst.global.u32 [%rd3], %r1;\n\tret;",
        ),
    ])
}

fn ok(r: CUresult, what: &str) {
    assert_eq!(r, SUCCESS, "{what}: {}", last_error());
}

fn last_error() -> String {
    // SAFETY: the driver returns a NUL-terminated string that lives until the next failure on this thread.
    unsafe { CStr::from_ptr(pimoe_emu_last_error()).to_string_lossy().into_owned() }
}

fn error_string(code: CUresult) -> String {
    let mut p = null();
    // SAFETY: a valid out pointer; the string lives for the process.
    unsafe {
        ok(cuGetErrorString(code, &mut p), "cuGetErrorString");
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Asserts `r` is `code` and that both cuGetErrorString and pimoe_emu_last_error
/// give a report naming each of `needles`.
fn expect(r: CUresult, code: CUresult, needles: &[&str]) -> String {
    let detail = last_error();
    assert_eq!(r, code, "{detail}");
    let text = error_string(code);
    for n in needles {
        assert!(text.contains(n), "cuGetErrorString does not name `{n}`:\n{text}");
        assert!(detail.contains(n), "pimoe_emu_last_error does not name `{n}`:\n{detail}");
    }
    text
}

fn setup() {
    // SAFETY: plain driver calls with valid out pointers.
    unsafe {
        ok(cuInit(0), "cuInit");
        let mut dev = -1;
        ok(cuDeviceGet(&mut dev, 0), "cuDeviceGet");
        let mut ctx = 0usize;
        ok(cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain");
        ok(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    }
}

fn load_raw(src: &str) -> Result<usize, CUresult> {
    let text = CString::new(src).unwrap();
    let mut m = 0usize;
    // SAFETY: a NUL-terminated image and a valid out pointer.
    match unsafe { cuModuleLoadData(&mut m, text.as_ptr() as *const c_void) } {
        SUCCESS => Ok(m),
        e => Err(e),
    }
}

struct Kernels {
    module: usize,
}

impl Kernels {
    fn new() -> Kernels {
        setup();
        Kernels { module: load_raw(&kernels()).unwrap_or_else(|e| panic!("{e}: {}", last_error())) }
    }
    fn func(&self, name: &str) -> usize {
        let n = CString::new(name).unwrap();
        let mut f = 0usize;
        // SAFETY: valid handle, name and out pointer.
        ok(unsafe { cuModuleGetFunction(&mut f, self.module, n.as_ptr()) }, name);
        f
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        // SAFETY: the module was loaded by new.
        unsafe { cuModuleUnload(self.module) };
    }
}

fn alloc(bytes: usize) -> u64 {
    let mut p = 0u64;
    // SAFETY: a valid out pointer.
    ok(unsafe { cuMemAlloc_v2(&mut p, bytes) }, "cuMemAlloc");
    p
}

fn upload(ptr: u64, v: &[u32]) {
    // SAFETY: v is v.len() * 4 readable bytes.
    ok(unsafe { cuMemcpyHtoD_v2(ptr, v.as_ptr() as *const c_void, v.len() * 4) }, "cuMemcpyHtoD");
}

fn download(ptr: u64, n: usize) -> Vec<u32> {
    let mut v = vec![0u32; n];
    // SAFETY: v is n * 4 writable bytes.
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr() as *mut c_void, ptr, n * 4) }, "cuMemcpyDtoH");
    v
}

/// cuLaunchKernel with kernelParams pointing at each argument's value.
fn launch(
    f: usize,
    grid: u32,
    block: [u32; 3],
    smem: u32,
    stream: usize,
    args: &mut [&mut dyn Param],
) -> CUresult {
    let mut ptrs: Vec<*mut c_void> = args.iter_mut().map(|a| a.ptr()).collect();
    let params = if ptrs.is_empty() { null_mut() } else { ptrs.as_mut_ptr() };
    // SAFETY: every parameter pointer points at a value of the kernel parameter's size.
    unsafe { cuLaunchKernel(f, grid, 1, 1, block[0], block[1], block[2], smem, stream, params, null_mut()) }
}

trait Param {
    fn ptr(&mut self) -> *mut c_void;
}
impl Param for u64 {
    fn ptr(&mut self) -> *mut c_void {
        self as *mut u64 as *mut c_void
    }
}
impl Param for u32 {
    fn ptr(&mut self) -> *mut c_void {
        self as *mut u32 as *mut c_void
    }
}

#[test]
fn a_kernel_fault_is_a_launch_error_with_the_sanitizer_report() {
    let k = Kernels::new();
    let src = kernels();
    let buf = alloc(128);
    let (oob, guarded) = (k.func("oob"), k.func("guarded"));
    let r = launch(oob, 1, [64, 1, 1], 0, 0, &mut [&mut { buf }]);
    let ptx_line = format!("PTX line {}", line_of(&src, "@OOB"));
    let text = expect(
        r,
        ILLEGAL_ADDRESS,
        &[
            "[memcheck] oob",
            "past the end of cuMemAlloc #",
            "(128 bytes)",
            "block (0,0,0) thread (32,0,0)",
            &ptx_line,
            "kernels/checks.cu:11",
        ],
    );
    assert!(text.starts_with("an illegal memory access was encountered: pimoe-emu [memcheck]"), "{text}");
    // The process, the context and the memory go on working.
    ok(launch(guarded, 1, [64, 1, 1], 0, 0, &mut [&mut { buf }, &mut 32u32]), "guarded twin");
    assert_eq!(download(buf, 32), (0..32).collect::<Vec<u32>>());

    let r = launch(k.func("misaligned"), 1, [32, 1, 1], 0, 0, &mut [&mut { buf }]);
    expect(r, MISALIGNED_ADDRESS, &["[memcheck] misaligned", "not 4-byte aligned", "cuMemAlloc #"]);
    let r = launch(k.func("race"), 1, [64, 1, 1], 0, 0, &mut [&mut { buf }]);
    expect(
        r,
        LAUNCH_FAILED,
        &["[racecheck] race", "write-after-write", "warp 1", "warp 0", "thread (32,0,0)"],
    );
    ok(launch(guarded, 1, [64, 1, 1], 0, 0, &mut [&mut { buf }, &mut 32u32]), "after the race");
    // A code with no failure recorded on this thread reads as the plain text.
    assert_eq!(error_string(INVALID_DEVICE), "invalid device ordinal");
}

#[test]
fn the_lowest_faulting_block_is_reported_whatever_the_timing() {
    let k = Kernels::new();
    let buf = alloc(64 * 4);
    let f = k.func("lowest");
    for _ in 0..5 {
        let r = launch(f, 64, [32, 1, 1], 0, 0, &mut [&mut { buf }]);
        expect(r, ILLEGAL_ADDRESS, &["in block (7,0,0) thread (0,0,0)"]);
    }
}

#[test]
fn malformed_or_unknown_ptx_is_refused_at_load_naming_the_line() {
    setup();
    let with =
        |inst: &str| module(&[entry("k", &[".u64"], &format!("{PROLOGUE}\n\t{inst} // @HERE\n\tret;"))]);
    for (inst, says) in [
        ("add.s32 %r1, %r2 %r3;", "syntax error"),
        ("frobnicate.u32 %r1, %r2;", "instruction frobnicate.u32"),
        ("ld.global.zzz.u32 %r2, [%rd3];", "modifier .zzz"),
    ] {
        let src = with(inst);
        let line = format!("PTX line {}", line_of(&src, "@HERE"));
        let r = load_raw(&src).map(|_| SUCCESS).unwrap_or_else(|e| e);
        expect(r, INVALID_PTX, &["pimoe-emu", &line, says]);
        // Loading goes on working.
        drop(Kernels::new());
    }
    let k = Kernels::new();
    let mut f = 0usize;
    let name = CString::new("nope").unwrap();
    // SAFETY: valid handle, name and out pointer.
    let r = unsafe { cuModuleGetFunction(&mut f, k.module, name.as_ptr()) };
    expect(r, NOT_FOUND, &["no entry point nope", "\"oob\""]);
}

#[test]
fn bad_launch_configurations_are_refused_and_the_next_launch_works() {
    let k = Kernels::new();
    let buf = alloc(4096);
    let guarded = k.func("guarded");
    let good = || ok(launch(guarded, 1, [32, 1, 1], 0, 0, &mut [&mut { buf }, &mut 32u32]), "good launch");
    let cases: [(u32, [u32; 3], &str); 3] = [
        (0, [32, 1, 1], "must be nonzero"),
        (1, [1025, 1, 1], "exceed the device limits"),
        (1, [32, 32, 2], "2048 threads per block is more than 1024"),
    ];
    for (grid, block, says) in cases {
        let r = launch(guarded, grid, block, 0, 0, &mut [&mut { buf }, &mut 32u32]);
        expect(r, INVALID_VALUE, &["launching guarded", says]);
        good();
    }
    // kernelParams missing.
    // SAFETY: a null kernelParams is what is being refused.
    let r = unsafe { cuLaunchKernel(guarded, 1, 1, 1, 32, 1, 1, 0, 0, null_mut(), null_mut()) };
    expect(r, INVALID_VALUE, &["kernelParams is null"]);
    good();

    // Dynamic shared memory: 64 KiB needs the attribute; the device stops at 227 KiB.
    let dynf = k.func("dyn_store");
    let r = launch(dynf, 1, [1, 1, 1], 64 * 1024, 0, &mut []);
    expect(r, INVALID_VALUE, &["65536 bytes of dynamic shared memory", "MAX_DYNAMIC_SHARED_SIZE_BYTES"]);
    // SAFETY: a valid function handle.
    let r = unsafe { cuFuncSetAttribute(dynf, 8, 300 * 1024) };
    expect(r, INVALID_VALUE, &["MAX_DYNAMIC_SHARED_SIZE_BYTES", "307200 bytes, the most is 232448"]);
    // SAFETY: as above.
    ok(unsafe { cuFuncSetAttribute(dynf, 8, 64 * 1024) }, "cuFuncSetAttribute");
    ok(launch(dynf, 1, [1, 1, 1], 64 * 1024, 0, &mut []), "64 KiB with the attribute");
    // One byte short of the store at dyn+65532: memcheck, not a configuration error.
    let r = launch(dynf, 1, [1, 1, 1], 65535, 0, &mut []);
    expect(r, ILLEGAL_ADDRESS, &["past the block's 65535 bytes of shared memory", "past the end of dyn"]);
    good();
}

#[test]
fn null_freed_and_foreign_pointers_to_free_and_copies_are_refused() {
    setup();
    let buf = alloc(64);
    let data = [7u32; 16];
    let mut back = [0u32; 16];
    let freed = alloc(64);
    // SAFETY: every host pointer below is valid for the length given; the device
    // pointers are what is being checked.
    unsafe {
        ok(cuMemFree_v2(freed), "cuMemFree");
        expect(cuMemFree_v2(freed), INVALID_VALUE, &["cuMemFree", "was already freed"]);
        expect(cuMemFree_v2(0), INVALID_VALUE, &["cuMemFree: null pointer"]);
        expect(cuMemFree_v2(0x7f00_dead_0000), INVALID_VALUE, &["is not a device pointer of this emulator"]);
        expect(cuMemFree_v2(buf + 4), INVALID_VALUE, &["inside cuMemAlloc #", "but not its start"]);
        let src = data.as_ptr() as *const c_void;
        let dst = back.as_mut_ptr() as *mut c_void;
        expect(cuMemcpyHtoD_v2(freed, src, 64), INVALID_VALUE, &["cuMemcpyHtoD", "which was freed"]);
        expect(cuMemcpyHtoD_v2(0, src, 64), INVALID_VALUE, &["cuMemcpyHtoD", "a null pointer"]);
        expect(
            cuMemcpyHtoD_v2(buf + 32, src, 64),
            INVALID_VALUE,
            &["cuMemcpyHtoD", "across the end of cuMemAlloc #"],
        );
        expect(
            cuMemcpyDtoH_v2(dst, 0x7f00_dead_0000, 64),
            INVALID_VALUE,
            &["cuMemcpyDtoH", "in no allocation"],
        );
        expect(cuMemcpyDtoD_v2(buf, freed, 64), INVALID_VALUE, &["cuMemcpyDtoD source", "which was freed"]);
        expect(cuMemsetD8_v2(0, 0, 64), INVALID_VALUE, &["cuMemset", "a null pointer"]);
        // And the right ones work.
        ok(cuMemcpyHtoD_v2(buf, src, 64), "cuMemcpyHtoD");
        ok(cuMemcpyDtoH_v2(dst, buf, 64), "cuMemcpyDtoH");
        assert_eq!(back, data);
        ok(cuMemFree_v2(buf), "cuMemFree");
    }
}

#[test]
fn a_device_copy_carries_which_bytes_were_written() {
    let k = Kernels::new();
    let (src, dst) = (alloc(128), alloc(128));
    upload(src, &[5; 16]);
    // SAFETY: both ranges are live allocations of 128 bytes.
    ok(unsafe { cuMemcpyDtoD_v2(dst, src, 128) }, "cuMemcpyDtoD");
    // The written half reads fine; the copy of the unwritten half is still unwritten.
    let add = k.func("add_one");
    ok(launch(add, 1, [16, 1, 1], 0, 0, &mut [&mut { dst }]), "written half");
    let r = launch(add, 1, [32, 1, 1], 0, 0, &mut [&mut { dst }]);
    expect(r, LAUNCH_FAILED, &["[initcheck]", "byte 64 of cuMemAlloc #"]);
}

fn stream() -> usize {
    let mut s = 0usize;
    // SAFETY: a valid out pointer.
    ok(unsafe { cuStreamCreate(&mut s, 0) }, "cuStreamCreate");
    s
}

const THREAD_LOCAL: i32 = 1;
const RELAXED: i32 = 2;

fn capturing(s: usize) -> i32 {
    let mut st = -1;
    // SAFETY: a valid stream and out pointer.
    ok(unsafe { cuStreamIsCapturing(s, &mut st) }, "cuStreamIsCapturing");
    st
}

#[test]
fn a_captured_graph_replays_its_launches_over_the_current_memory() {
    let k = Kernels::new();
    let s = stream();
    let buf = alloc(128);
    upload(buf, &(0..32).collect::<Vec<u32>>());
    let add = k.func("add_one");
    let (mut t0, mut t1) = (0usize, 0usize);
    // SAFETY: valid handles and out pointers throughout.
    unsafe {
        ok(cuEventCreate(&mut t0, 0), "cuEventCreate");
        ok(cuEventCreate(&mut t1, 0), "cuEventCreate");
        ok(cuEventRecord(t0, s), "cuEventRecord");
        ok(cuStreamBeginCapture_v2(s, THREAD_LOCAL), "cuStreamBeginCapture");
        assert_eq!(capturing(s), 1);
        ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "captured launch");
        ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "captured launch");
        ok(cuEventRecord(t1, s), "captured event record");
        let mut graph = 0usize;
        ok(cuStreamEndCapture(s, &mut graph), "cuStreamEndCapture");
        assert_eq!(capturing(s), 0);
        let mut exec = 0usize;
        ok(cuGraphInstantiateWithFlags(&mut exec, graph, 0), "cuGraphInstantiate");
        // Nothing ran while capturing.
        assert_eq!(download(buf, 32), (0..32).collect::<Vec<u32>>());
        ok(cuGraphLaunch(exec, s), "cuGraphLaunch");
        assert_eq!(download(buf, 32), (2..34).collect::<Vec<u32>>());
        let mut ms = -1f32;
        ok(cuEventElapsedTime(&mut ms, t0, t1), "the event recorded by the replay");
        assert!(ms >= 0.0);
        // A replay reads memory as it is now, not as it was at capture.
        upload(buf, &(100..132).collect::<Vec<u32>>());
        ok(cuGraphLaunch(exec, s), "cuGraphLaunch");
        assert_eq!(download(buf, 32), (102..134).collect::<Vec<u32>>());
        ok(cuGraphExecDestroy(exec), "cuGraphExecDestroy");
        ok(cuGraphDestroy(graph), "cuGraphDestroy");
        // The stream runs work eagerly again.
        ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "eager launch");
        assert_eq!(download(buf, 32), (103..135).collect::<Vec<u32>>());
        ok(cuStreamDestroy_v2(s), "cuStreamDestroy");
    }
}

#[test]
fn a_sync_host_copy_or_bad_launch_inside_a_capture_invalidates_it() {
    let k = Kernels::new();
    let buf = alloc(128);
    upload(buf, &[0; 32]);
    let add = k.func("add_one");
    let host = [1u32; 32];
    let h = host.as_ptr() as *const c_void;
    // SAFETY: valid handles; `h` is 128 readable bytes.
    let spoilers: [(&str, Box<dyn Fn(usize) -> CUresult>); 6] = [
        (
            "cuStreamSynchronize on a stream that is capturing",
            Box::new(|s| unsafe { cuStreamSynchronize(s) }),
        ),
        (
            "cuMemcpyHtoDAsync on a stream that is capturing",
            Box::new(move |s| unsafe { cuMemcpyHtoDAsync_v2(buf, h, 128, s) }),
        ),
        ("cuMemcpyHtoD while a stream captures", Box::new(move |_| unsafe { cuMemcpyHtoD_v2(buf, h, 128) })),
        ("cuCtxSynchronize while a stream captures", Box::new(|_| unsafe { cuCtxSynchronize() })),
        ("cuMemsetD8 while a stream captures", Box::new(move |_| unsafe { cuMemsetD8_v2(buf, 0, 128) })),
        (
            "launching add_one: grid [0, 1, 1]",
            Box::new(move |s| launch(add, 0, [32, 1, 1], 0, s, &mut [&mut { buf }])),
        ),
    ];
    for (says, spoil) in &spoilers {
        let s = stream();
        // SAFETY: valid handles and out pointers.
        unsafe {
            ok(cuStreamBeginCapture_v2(s, THREAD_LOCAL), "cuStreamBeginCapture");
            ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "captured launch");
            let r = spoil(s);
            let code = if says.starts_with("launching") { INVALID_VALUE } else { STREAM_CAPTURE_UNSUPPORTED };
            expect(r, code, &[says, "invalidated"]);
            assert_eq!(capturing(s), 2, "{says}");
            let mut graph = 7usize;
            expect(cuStreamEndCapture(s, &mut graph), STREAM_CAPTURE_INVALIDATED, &["invalidated"]);
            assert_eq!(graph, 0);
            // The stream works eagerly afterwards; the captured launch never ran.
            ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "eager launch");
            ok(cuStreamDestroy_v2(s), "cuStreamDestroy");
        }
        assert_eq!(download(buf, 32), vec![1; 32], "{says}");
        upload(buf, &[0; 32]);
    }
    // In relaxed mode a synchronous copy elsewhere is allowed.
    let s = stream();
    // SAFETY: as above.
    unsafe {
        ok(cuStreamBeginCapture_v2(s, RELAXED), "cuStreamBeginCapture");
        ok(launch(add, 1, [32, 1, 1], 0, s, &mut [&mut { buf }]), "captured launch");
        ok(cuMemcpyHtoD_v2(buf, h, 128), "a relaxed capture allows it");
        let mut graph = 0usize;
        ok(cuStreamEndCapture(s, &mut graph), "cuStreamEndCapture");
        assert_ne!(graph, 0);
        ok(cuGraphDestroy(graph), "cuGraphDestroy");
        ok(cuStreamDestroy_v2(s), "cuStreamDestroy");
    }
}
