//! The CUDA driver API's C ABI over the emulator, exported from the cdylib so
//! that a program that loads libcuda (cudarc does, by dlopen) drives the emulator
//! instead. One emulated device, ordinal 0, with an sm_90 part's limits; its name
//! says it is the emulator.
//!
//! Execution is synchronous: a launch or copy on any stream runs to completion in
//! the call, so streams are trivially in order and a fault comes back from the
//! launch itself. While a stream captures, its work is recorded instead (a launch
//! checked as it is recorded); a graph launch replays the recording with the
//! arguments captured (pointers by value, so the kernels see memory as it is at
//! replay). A call a capture cannot record (a synchronisation, a host copy)
//! invalidates it: on the capturing stream, or, in the global and thread-local
//! capture modes, a synchronous call on the legacy stream from the capturing
//! thread (global mode: from any thread).
//!
//! Every entry point catches panics: a bug in the emulator is returned as
//! CUDA_ERROR_UNKNOWN with a message, never unwound into C. The detailed message
//! of the last failure (a sanitizer report, a PTX load error) is what
//! cuGetErrorString returns for that error code on that thread.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::error::FaultKind;
use crate::exec::counters::json_string;
use crate::{limits, LaunchError, Memory, Options, Program};

pub type CUresult = c_int;
pub const SUCCESS: CUresult = 0;
pub const INVALID_VALUE: CUresult = 1;
pub const OUT_OF_MEMORY: CUresult = 2;
pub const NOT_INITIALIZED: CUresult = 3;
pub const INVALID_DEVICE: CUresult = 101;
pub const INVALID_IMAGE: CUresult = 200;
pub const INVALID_CONTEXT: CUresult = 201;
pub const INVALID_PTX: CUresult = 218;
pub const INVALID_HANDLE: CUresult = 400;
pub const NOT_FOUND: CUresult = 500;
pub const ILLEGAL_ADDRESS: CUresult = 700;
pub const LAUNCH_OUT_OF_RESOURCES: CUresult = 701;
pub const LAUNCH_TIMEOUT: CUresult = 702;
pub const MISALIGNED_ADDRESS: CUresult = 716;
pub const LAUNCH_FAILED: CUresult = 719;
pub const NOT_SUPPORTED: CUresult = 801;
pub const STREAM_CAPTURE_UNSUPPORTED: CUresult = 900;
pub const STREAM_CAPTURE_INVALIDATED: CUresult = 901;
pub const UNKNOWN: CUresult = 999;

/// The device's name: what `nvidia-smi` would show, plus that it is emulated.
pub const DEVICE_NAME: &str = "pimoe-emu PTX emulator (sm_90, H100/H200 limits)";

fn code_name(code: CUresult) -> &'static str {
    match code {
        SUCCESS => "CUDA_SUCCESS",
        INVALID_VALUE => "CUDA_ERROR_INVALID_VALUE",
        OUT_OF_MEMORY => "CUDA_ERROR_OUT_OF_MEMORY",
        NOT_INITIALIZED => "CUDA_ERROR_NOT_INITIALIZED",
        INVALID_DEVICE => "CUDA_ERROR_INVALID_DEVICE",
        INVALID_IMAGE => "CUDA_ERROR_INVALID_IMAGE",
        INVALID_CONTEXT => "CUDA_ERROR_INVALID_CONTEXT",
        INVALID_PTX => "CUDA_ERROR_INVALID_PTX",
        INVALID_HANDLE => "CUDA_ERROR_INVALID_HANDLE",
        NOT_FOUND => "CUDA_ERROR_NOT_FOUND",
        ILLEGAL_ADDRESS => "CUDA_ERROR_ILLEGAL_ADDRESS",
        LAUNCH_OUT_OF_RESOURCES => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        LAUNCH_TIMEOUT => "CUDA_ERROR_LAUNCH_TIMEOUT",
        MISALIGNED_ADDRESS => "CUDA_ERROR_MISALIGNED_ADDRESS",
        LAUNCH_FAILED => "CUDA_ERROR_LAUNCH_FAILED",
        NOT_SUPPORTED => "CUDA_ERROR_NOT_SUPPORTED",
        STREAM_CAPTURE_UNSUPPORTED => "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        STREAM_CAPTURE_INVALIDATED => "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        _ => "CUDA_ERROR_UNKNOWN",
    }
}

fn code_text(code: CUresult) -> &'static str {
    match code {
        SUCCESS => "no error",
        INVALID_VALUE => "invalid argument",
        OUT_OF_MEMORY => "out of memory",
        NOT_INITIALIZED => "initialization error",
        INVALID_DEVICE => "invalid device ordinal",
        INVALID_IMAGE => "device kernel image is invalid",
        INVALID_CONTEXT => "invalid device context",
        INVALID_PTX => "a PTX JIT compilation failed",
        INVALID_HANDLE => "invalid resource handle",
        NOT_FOUND => "named symbol not found",
        ILLEGAL_ADDRESS => "an illegal memory access was encountered",
        LAUNCH_OUT_OF_RESOURCES => "too many resources requested for launch",
        LAUNCH_TIMEOUT => "the launch timed out and was terminated",
        MISALIGNED_ADDRESS => "misaligned address",
        LAUNCH_FAILED => "unspecified launch failure",
        NOT_SUPPORTED => "operation not supported",
        STREAM_CAPTURE_UNSUPPORTED => "operation not permitted when stream is capturing",
        STREAM_CAPTURE_INVALIDATED => "operation failed due to a previous error during capture",
        _ => "unknown error",
    }
}

thread_local! {
    static DETAIL: RefCell<HashMap<CUresult, String>> = RefCell::new(HashMap::new());
    static LAST: RefCell<CString> = RefCell::new(CString::default());
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Strings handed to C live for the process: cuGetErrorString's contract.
static INTERNED: Mutex<Vec<&'static CStr>> = Mutex::new(Vec::new());

fn intern(s: String) -> *const c_char {
    let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
    let leaked: &'static CStr = Box::leak(c.into_boxed_c_str());
    let mut v = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    v.push(leaked);
    leaked.as_ptr()
}

/// Returns `code` after recording why, for cuGetErrorString and pimoe_emu_last_error.
fn fail(code: CUresult, msg: impl Into<String>) -> CUresult {
    let msg = msg.into();
    LAST.with(|l| *l.borrow_mut() = CString::new(msg.replace('\0', " ")).unwrap_or_default());
    DETAIL.with(|d| d.borrow_mut().insert(code, msg));
    code
}

/// What a graph or a capture records.
#[derive(Clone)]
enum Op {
    Launch { func: Arc<Func>, grid: [u32; 3], block: [u32; 3], smem: u32, params: Vec<u8> },
    Memset { ptr: u64, value: u8, len: usize },
    CopyDtoD { dst: u64, src: u64, len: usize },
    Record { event: usize },
}

struct Func {
    prog: Arc<Program>,
    max_dyn_smem: AtomicU32,
}

#[derive(Default)]
struct Stream {
    capture: Option<Capture>,
}

/// A stream capture in progress: the recorded work, and whether it is still valid.
struct Capture {
    ops: Vec<Op>,
    ok: bool,
    /// CUstreamCaptureMode: 0 global, 1 thread-local, 2 relaxed.
    mode: c_int,
    thread: std::thread::ThreadId,
}

struct Driver {
    mem: Memory,
    opts: Options,
    init: AtomicBool,
    next: AtomicUsize,
    modules: Mutex<HashMap<usize, crate::Module>>,
    functions: Mutex<HashMap<usize, Arc<Func>>>,
    streams: Mutex<HashMap<usize, Stream>>,
    graphs: Mutex<HashMap<usize, Arc<Vec<Op>>>>,
    events: Mutex<HashMap<usize, Option<Instant>>>,
    allocs: AtomicUsize,
    /// Set by `pimoe_emu_counters`: every launch collects counters into `records`.
    counting: AtomicBool,
    /// One JSON object per launch or graph launch while counting.
    records: Mutex<Vec<String>>,
}

const CTX: usize = 0x00c7_0001;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn driver() -> &'static Driver {
    static D: OnceLock<Driver> = OnceLock::new();
    D.get_or_init(|| {
        let mut opts = Options::default();
        if std::env::var("PIMOE_EMU_CHECKS").is_ok_and(|v| v == "0") {
            opts.checks = false;
        }
        if let Some(b) = env_u64("PIMOE_EMU_BUDGET") {
            opts.budget = b;
        }
        if let Some(t) = env_u64("PIMOE_EMU_THREADS") {
            opts.threads = t.max(1) as usize;
        }
        opts.counters = std::env::var("PIMOE_EMU_COUNTERS").is_ok_and(|v| v == "1");
        Driver {
            mem: Memory::default(),
            opts,
            init: AtomicBool::new(false),
            next: AtomicUsize::new(0x1000),
            modules: Mutex::default(),
            functions: Mutex::default(),
            streams: Mutex::default(),
            graphs: Mutex::default(),
            events: Mutex::default(),
            allocs: AtomicUsize::new(0),
            counting: AtomicBool::new(false),
            records: Mutex::default(),
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Driver {
    fn handle(&self) -> usize {
        self.next.fetch_add(16, Ordering::Relaxed)
    }

    fn ready(&self) -> Result<(), CUresult> {
        if self.init.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(fail(NOT_INITIALIZED, "cuInit has not been called"))
        }
    }

    /// Records `op` if `stream` is capturing (after the checks a launch or copy
    /// would fail at; failing invalidates the capture); otherwise runs it.
    fn submit(&self, stream: usize, op: Op) -> CUresult {
        let mut streams = lock(&self.streams);
        let Some(Stream { capture: Some(cap) }) = streams.get_mut(&stream) else {
            drop(streams);
            return self.run(&op);
        };
        let range = |p: u64, n: usize, what: &str| {
            self.mem.with_range(p, n, |_, _| ()).map_err(|e| format!("{what}: {e}"))
        };
        let checked = match &op {
            Op::Launch { func, grid, block, smem, params } => {
                let max = func.max_dyn_smem.load(Ordering::Relaxed);
                crate::check_launch(&func.prog, *grid, *block, *smem, max, params).map_err(|e| e.to_string())
            }
            Op::Memset { ptr, len, .. } => range(*ptr, *len, "cuMemset"),
            Op::CopyDtoD { dst, src, len } => range(*src, *len, "cuMemcpyDtoD source")
                .and_then(|_| range(*dst, *len, "cuMemcpyDtoD destination")),
            Op::Record { .. } => Ok(()),
        };
        match checked {
            Ok(()) => {
                cap.ops.push(op);
                SUCCESS
            }
            Err(m) => {
                cap.ok = false;
                fail(INVALID_VALUE, format!("{m} (while capturing a graph; the capture is invalidated)"))
            }
        }
    }

    fn run(&self, op: &Op) -> CUresult {
        if trace_on() {
            eprintln!("pimoe-emu: {}", describe(op));
        }
        match op {
            Op::Launch { func, grid, block, smem, params } => {
                let max = func.max_dyn_smem.load(Ordering::Relaxed);
                let t = Instant::now();
                let counting = self.counting.load(Ordering::Relaxed);
                let counted;
                let opts = if counting && !self.opts.counters {
                    counted = Options { counters: true, ..self.opts.clone() };
                    &counted
                } else {
                    &self.opts
                };
                match crate::launch(&func.prog, &self.mem, *grid, *block, *smem, max, params, opts) {
                    Ok(stats) => {
                        if let (true, Some(c)) = (counting, &stats.counters) {
                            let range = RANGES.with(|r| r.borrow().join("/"));
                            lock(&self.records).push(format!(
                                concat!(
                                    r#"{{"kind":"launch","kernel":"{}","grid":{:?},"block":{:?},"dyn_smem":{},"#,
                                    r#""static_smem":{},"in_graph":{},"range":{},"warp_instructions":{},"counters":{}}}"#
                                ),
                                func.prog.name,
                                grid,
                                block,
                                smem,
                                func.prog.shared_static,
                                IN_GRAPH.with(|g| g.get()),
                                json_string(&range),
                                stats.warp_instructions,
                                c.to_json_with(|line| source_of(&func.prog, line))
                            ));
                        }
                        if trace_on() {
                            eprintln!(
                                "pimoe-emu:   {} warp instructions, {} barriers, {:.3} ms (host time)",
                                stats.warp_instructions,
                                stats.barriers,
                                t.elapsed().as_secs_f64() * 1e3
                            );
                            if let Some(c) = &stats.counters {
                                eprintln!(
                                    "pimoe-emu:   counters {}",
                                    c.to_json_with(|line| source_of(&func.prog, line))
                                );
                            }
                        }
                        SUCCESS
                    }
                    Err(LaunchError::Config(m)) => fail(INVALID_VALUE, m),
                    Err(LaunchError::Kernel(k)) => {
                        let code = match k.kind {
                            FaultKind::OutOfBounds => ILLEGAL_ADDRESS,
                            FaultKind::Misaligned => MISALIGNED_ADDRESS,
                            FaultKind::Budget => LAUNCH_TIMEOUT,
                            _ => LAUNCH_FAILED,
                        };
                        fail(code, format!("pimoe-emu {k}"))
                    }
                }
            }
            Op::Memset { ptr, value, len } => {
                let r = self.mem.with_range(*ptr, *len, |a, off| {
                    // SAFETY: the range is inside the allocation (with_range checked it).
                    unsafe { std::ptr::write_bytes(a.ptr(off), *value, *len) };
                    a.mark(off, *len);
                });
                r.map_or_else(|e| fail(INVALID_VALUE, format!("cuMemset: {e}")), |_| SUCCESS)
            }
            Op::CopyDtoD { dst, src, len } => {
                let data = self.mem.with_range(*src, *len, |a, off| {
                    let mut v = vec![0u8; *len];
                    // SAFETY: checked range.
                    unsafe { std::ptr::copy_nonoverlapping(a.ptr(off), v.as_mut_ptr(), *len) };
                    (v, a.written_runs(off, *len))
                });
                let (v, init) = match data {
                    Ok(x) => x,
                    Err(e) => return fail(INVALID_VALUE, format!("cuMemcpyDtoD source: {e}")),
                };
                let r = self.mem.with_range(*dst, *len, |a, off| {
                    // SAFETY: checked range.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), a.ptr(off), *len) };
                    for &(at, n) in &init {
                        a.mark(off + at, n);
                    }
                });
                r.map_or_else(|e| fail(INVALID_VALUE, format!("cuMemcpyDtoD destination: {e}")), |_| SUCCESS)
            }
            Op::Record { event } => match lock(&self.events).get_mut(event) {
                Some(t) => {
                    *t = Some(Instant::now());
                    SUCCESS
                }
                None => fail(INVALID_HANDLE, format!("cuEventRecord: {event:#x} is not an event")),
            },
        }
    }

    fn capturing(&self, stream: usize) -> bool {
        lock(&self.streams).get(&stream).is_some_and(|s| s.capture.is_some())
    }

    /// A host-side call that cannot be recorded into a graph invalidates a capture.
    fn not_while_capturing(&self, stream: usize, what: &str) -> Result<(), CUresult> {
        let mut streams = lock(&self.streams);
        if let Some(Stream { capture: Some(cap) }) = streams.get_mut(&stream) {
            cap.ok = false;
            return Err(fail(
                STREAM_CAPTURE_UNSUPPORTED,
                format!("{what} on a stream that is capturing a graph (the capture is invalidated)"),
            ));
        }
        Ok(())
    }

    /// A synchronous call on the legacy stream (it waits for every stream) while a
    /// capture this thread may not interleave with is in progress: the CUDA
    /// driver refuses it and invalidates the capture.
    fn unsafe_during_capture(&self, what: &str) -> Result<(), CUresult> {
        let me = std::thread::current().id();
        let mut hit = false;
        for cap in lock(&self.streams).values_mut().filter_map(|s| s.capture.as_mut()) {
            if cap.mode == 0 || (cap.mode == 1 && cap.thread == me) {
                cap.ok = false;
                hit = true;
            }
        }
        if hit {
            return Err(fail(
                STREAM_CAPTURE_UNSUPPORTED,
                format!("{what} while a stream captures a graph (the capture is invalidated)"),
            ));
        }
        Ok(())
    }
}

/// "kernels/gemm.cu:120" for the instruction at a PTX line, or "PTX line N".
fn source_of(prog: &Program, line: u32) -> String {
    prog.insts
        .iter()
        .position(|i| i.line == line)
        .and_then(|pc| prog.source(pc))
        .map_or_else(|| format!("PTX line {line}"), |s| format!("{s} (PTX line {line})"))
}

/// PIMOE_EMU_TRACE=1 prints every operation the device executes, to stderr.
fn trace_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("PIMOE_EMU_TRACE").is_ok_and(|v| v != "0"))
}

fn describe(op: &Op) -> String {
    match op {
        Op::Launch { func, grid, block, smem, params } => {
            let words: Vec<String> = params
                .chunks(8)
                .map(|c| {
                    format!(
                        "{:x}",
                        u64::from_le_bytes({
                            let mut w = [0u8; 8];
                            w[..c.len()].copy_from_slice(c);
                            w
                        })
                    )
                })
                .collect();
            format!(
                "launch {} grid {grid:?} block {block:?} smem {smem} params [{}]",
                func.prog.name,
                words.join(" ")
            )
        }
        Op::Memset { ptr, value, len } => format!("memset {ptr:#x} {len} bytes to {value}"),
        Op::CopyDtoD { dst, src, len } => format!("copy {len} bytes {src:#x} -> {dst:#x}"),
        Op::Record { event } => format!("record event {event:#x}"),
    }
}

/// Runs an entry point's body, turning a panic into CUDA_ERROR_UNKNOWN.
fn guard(what: &str, f: impl FnOnce() -> CUresult) -> CUresult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            fail(UNKNOWN, format!("pimoe-emu internal error in {what}: {msg}"))
        }
    }
}

macro_rules! entry {
    ($name:ident ( $($arg:ident : $ty:ty),* ) $body:block) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
            guard(stringify!($name), || $body)
        }
    };
}

macro_rules! try_ {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

fn out<T>(p: *mut T, v: T, what: &str) -> CUresult {
    if p.is_null() {
        return fail(INVALID_VALUE, format!("{what}: null output pointer"));
    }
    // SAFETY: the caller passed a writable pointer (checked non-null).
    unsafe { p.write(v) };
    SUCCESS
}

// Initialisation, device and context.

entry!(cuInit(_flags: c_uint) {
    driver().init.store(true, Ordering::Release);
    SUCCESS
});

entry!(cuDriverGetVersion(v: *mut c_int) { out(v, 13000, "cuDriverGetVersion") });

entry!(cuDeviceGetCount(n: *mut c_int) {
    try_!(driver().ready());
    out(n, 1, "cuDeviceGetCount")
});

entry!(cuDeviceGet(d: *mut c_int, ordinal: c_int) {
    try_!(driver().ready());
    if ordinal != 0 {
        return fail(INVALID_DEVICE, format!("the emulator has one device, 0; asked for {ordinal}"));
    }
    out(d, 0, "cuDeviceGet")
});

fn check_dev(dev: c_int) -> Result<(), CUresult> {
    driver().ready()?;
    if dev != 0 {
        return Err(fail(INVALID_DEVICE, format!("no device {dev}: the emulator has one device, 0")));
    }
    Ok(())
}

unsafe fn write_str(dst: *mut c_char, len: c_int, s: &str, what: &str) -> CUresult {
    if dst.is_null() || len <= 0 {
        return fail(INVALID_VALUE, format!("{what}: null or empty buffer"));
    }
    let n = s.len().min(len as usize - 1);
    std::ptr::copy_nonoverlapping(s.as_ptr() as *const c_char, dst, n);
    *dst.add(n) = 0;
    SUCCESS
}

entry!(cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) {
    try_!(check_dev(dev));
    write_str(name, len, DEVICE_NAME, "cuDeviceGetName")
});

entry!(cuDeviceGetPCIBusId(id: *mut c_char, len: c_int, dev: c_int) {
    try_!(check_dev(dev));
    // Not a PCI address any NVML device has, so energy readings find no device.
    write_str(id, len, "FFFF:FF:FF.F", "cuDeviceGetPCIBusId")
});

fn host_memory() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<usize>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemAvailable:").unwrap_or(1 << 30), field("MemTotal:").unwrap_or(1 << 30))
}

entry!(cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) {
    try_!(check_dev(dev));
    out(bytes, host_memory().1, "cuDeviceTotalMem")
});

entry!(cuMemGetInfo_v2(free: *mut usize, total: *mut usize) {
    try_!(driver().ready());
    let (f, t) = host_memory();
    let r = out(free, f, "cuMemGetInfo");
    if r != SUCCESS {
        return r;
    }
    out(total, t, "cuMemGetInfo")
});

entry!(cuDeviceGetUuid(uuid: *mut [u8; 16], dev: c_int) {
    try_!(check_dev(dev));
    out(uuid, *b"pimoe-emu-sm90\0\0", "cuDeviceGetUuid")
});

entry!(cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: c_int) {
    try_!(check_dev(dev));
    out(uuid, *b"pimoe-emu-sm90\0\0", "cuDeviceGetUuid")
});

entry!(cuDeviceGetAttribute(v: *mut c_int, attr: c_int, dev: c_int) {
    try_!(check_dev(dev));
    let value = match attr {
        1 => limits::MAX_THREADS_PER_BLOCK as c_int,
        2 | 3 => 1024,
        4 => 64,
        5 => i32::MAX,
        6 | 7 => 65535,
        8 => limits::DEFAULT_SHARED as c_int,
        9 => 65536,
        10 => 32,
        12 => 65536,
        13 => 1_980_000,
        16 => limits::SMS,
        31 | 41 | 78 | 79 | 80 | 83 | 89 | 90 | 95 => 1,
        36 => 2_619_000,
        37 => 5120,
        38 => 50 * 1024 * 1024,
        39 => 2048,
        40 => 2,
        75 => 9,
        76 => 0,
        81 => limits::SHARED_PER_SM as c_int,
        82 => limits::REGS_PER_SM,
        97 => limits::MAX_SHARED_OPTIN as c_int,
        106 => 32,
        111 => 1024,
        // Memory pools: not modelled (cudarc then allocates synchronously).
        115 => 0,
        11 | 14 | 15 | 17..=30 | 32..=35 | 42..=74 | 77 | 84..=88 | 91..=94 | 96 | 98..=105 | 107..=110 | 112..=114 | 116..=119 => 0,
        _ => return fail(INVALID_VALUE, format!("cuDeviceGetAttribute: unknown attribute {attr}")),
    };
    out(v, value, "cuDeviceGetAttribute")
});

entry!(cuDevicePrimaryCtxRetain(ctx: *mut usize, dev: c_int) {
    try_!(check_dev(dev));
    out(ctx, CTX, "cuDevicePrimaryCtxRetain")
});

entry!(cuDevicePrimaryCtxRelease_v2(dev: c_int) {
    try_!(check_dev(dev));
    SUCCESS
});

entry!(cuCtxSetCurrent(ctx: usize) {
    if ctx != 0 && ctx != CTX {
        return fail(INVALID_CONTEXT, format!("cuCtxSetCurrent: {ctx:#x} is not the emulator's context"));
    }
    CURRENT.with(|c| c.set(ctx));
    SUCCESS
});

entry!(cuCtxGetCurrent(ctx: *mut usize) { out(ctx, CURRENT.with(|c| c.get()), "cuCtxGetCurrent") });

entry!(cuCtxPushCurrent_v2(ctx: usize) {
    if ctx != CTX {
        return fail(INVALID_CONTEXT, "cuCtxPushCurrent: not the emulator's context");
    }
    CURRENT.with(|c| c.set(ctx));
    SUCCESS
});

entry!(cuCtxPopCurrent_v2(ctx: *mut usize) {
    let prev = CURRENT.with(|c| c.replace(0));
    if ctx.is_null() {
        SUCCESS
    } else {
        out(ctx, prev, "cuCtxPopCurrent")
    }
});

entry!(cuCtxGetDevice(dev: *mut c_int) { out(dev, 0, "cuCtxGetDevice") });
entry!(cuCtxSynchronize() {
    try_!(driver().unsafe_during_capture("cuCtxSynchronize"));
    SUCCESS
});
entry!(cuCtxGetApiVersion(_ctx: usize, v: *mut c_uint) { out(v, 13000, "cuCtxGetApiVersion") });
entry!(cuCtxSetFlags(_flags: c_uint) { SUCCESS });
entry!(cuCtxSetLimit(_limit: c_int, _value: usize) { SUCCESS });
entry!(cuCtxGetLimit(v: *mut usize, _limit: c_int) { out(v, 0, "cuCtxGetLimit") });
entry!(cuCtxSetCacheConfig(_c: c_int) { SUCCESS });
entry!(cuCtxGetCacheConfig(c: *mut c_int) { out(c, 0, "cuCtxGetCacheConfig") });
entry!(cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) {
    if !least.is_null() {
        *least = 0;
    }
    if !greatest.is_null() {
        *greatest = 0;
    }
    SUCCESS
});

// Modules and functions.

entry!(cuModuleLoadData(module: *mut usize, image: *const c_void) {
    let d = driver();
    try_!(d.ready());
    if image.is_null() {
        return fail(INVALID_VALUE, "cuModuleLoadData: null image");
    }
    let head = std::slice::from_raw_parts(image as *const u8, 4);
    if head == b"\x7fELF" || head == [0x50, 0xed, 0x55, 0xba] || head == [0xb1, 0x43, 0x62, 0x46] {
        return fail(INVALID_IMAGE, "cuModuleLoadData: a cubin or fatbin; the emulator runs PTX text only");
    }
    let text = match CStr::from_ptr(image as *const c_char).to_str() {
        Ok(t) => t,
        Err(e) => return fail(INVALID_PTX, format!("cuModuleLoadData: the PTX is not UTF-8: {e}")),
    };
    match crate::load_module(&d.mem, text) {
        Ok(m) => {
            let h = d.handle();
            lock(&d.modules).insert(h, m);
            out(module, h, "cuModuleLoadData")
        }
        Err(e) => fail(INVALID_PTX, format!("pimoe-emu: {e}")),
    }
});

entry!(cuModuleLoadDataEx(module: *mut usize, image: *const c_void, _n: c_uint, _o: *mut c_int, _v: *mut *mut c_void) {
    cuModuleLoadData(module, image)
});

entry!(cuModuleUnload(module: usize) {
    let d = driver();
    match lock(&d.modules).remove(&module) {
        Some(m) => {
            for p in m.globals {
                let _ = d.mem.free(p);
            }
            SUCCESS
        }
        None => fail(INVALID_HANDLE, format!("cuModuleUnload: {module:#x} is not a loaded module")),
    }
});

entry!(cuModuleGetFunction(f: *mut usize, module: usize, name: *const c_char) {
    let d = driver();
    if name.is_null() {
        return fail(INVALID_VALUE, "cuModuleGetFunction: null name");
    }
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    let prog = match lock(&d.modules).get(&module) {
        None => return fail(INVALID_HANDLE, format!("cuModuleGetFunction: {module:#x} is not a loaded module")),
        Some(m) => match m.programs.get(&name) {
            Some(p) => p.clone(),
            None => {
                let mut have: Vec<&String> = m.programs.keys().collect();
                have.sort();
                return fail(NOT_FOUND, format!("cuModuleGetFunction: no entry point {name} (the module has {have:?})"));
            }
        },
    };
    let static_smem = prog.shared_static as u32;
    let func = Arc::new(Func { prog, max_dyn_smem: AtomicU32::new(limits::DEFAULT_SHARED.saturating_sub(static_smem)) });
    let h = d.handle();
    lock(&d.functions).insert(h, func);
    out(f, h, "cuModuleGetFunction")
});

entry!(cuModuleGetGlobal_v2(ptr: *mut u64, bytes: *mut usize, module: usize, name: *const c_char) {
    if name.is_null() {
        return fail(INVALID_VALUE, "cuModuleGetGlobal: null name");
    }
    let _ = (module, ptr, bytes);
    fail(NOT_SUPPORTED, format!("cuModuleGetGlobal ({}) is not implemented by the emulator", CStr::from_ptr(name).to_string_lossy()))
});

fn func(h: usize, what: &str) -> Result<Arc<Func>, CUresult> {
    lock(&driver().functions)
        .get(&h)
        .cloned()
        .ok_or_else(|| fail(INVALID_HANDLE, format!("{what}: {h:#x} is not a function handle")))
}

entry!(cuFuncGetAttribute(v: *mut c_int, attr: c_int, f: usize) {
    let f = try_!(func(f, "cuFuncGetAttribute"));
    let p = &f.prog;
    let value = match attr {
        0 => p.maxntid.map_or(1024, |m| (m[0] * m[1] * m[2]).min(1024)) as c_int,
        1 => p.shared_static as c_int,
        2 => 0,
        3 => p.local_bytes as c_int,
        5 | 6 => 90,
        8 => f.max_dyn_smem.load(Ordering::Relaxed) as c_int,
        9 => -1,
        4 => return fail(NOT_SUPPORTED, "cuFuncGetAttribute(NUM_REGS): the emulator runs PTX and allocates no hardware registers; ptxas reports them"),
        _ => return fail(NOT_SUPPORTED, format!("cuFuncGetAttribute: attribute {attr} is not implemented by the emulator")),
    };
    out(v, value, "cuFuncGetAttribute")
});

entry!(cuFuncSetAttribute(f: usize, attr: c_int, value: c_int) {
    let f = try_!(func(f, "cuFuncSetAttribute"));
    match attr {
        8 => {
            let limit = limits::MAX_SHARED_OPTIN.saturating_sub(f.prog.shared_static as u32);
            if value < 0 || value as u32 > limit {
                return fail(INVALID_VALUE, format!(
                    "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) of {}: {value} bytes, the most is {limit} ({} static)",
                    f.prog.name, f.prog.shared_static
                ));
            }
            f.max_dyn_smem.store(value as u32, Ordering::Relaxed);
            SUCCESS
        }
        9 => SUCCESS,
        _ => fail(NOT_SUPPORTED, format!("cuFuncSetAttribute: attribute {attr} is not implemented by the emulator")),
    }
});

entry!(cuFuncSetCacheConfig(_f: usize, _c: c_int) { SUCCESS });

entry!(cuFuncGetName(name: *mut *const c_char, f: usize) {
    let f = try_!(func(f, "cuFuncGetName"));
    out(name, intern(f.prog.name.clone()), "cuFuncGetName")
});

entry!(cuLaunchKernel(
    f: usize, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
    smem: c_uint, stream: usize, params: *mut *mut c_void, extra: *mut *mut c_void
) {
    let d = driver();
    try_!(d.ready());
    let func = try_!(func(f, "cuLaunchKernel"));
    if !extra.is_null() {
        return fail(NOT_SUPPORTED, "cuLaunchKernel: `extra` parameter buffers are not implemented by the emulator; pass kernelParams");
    }
    let p = &func.prog;
    let mut buf = vec![0u8; p.param_bytes];
    if !p.params.is_empty() && params.is_null() {
        return fail(INVALID_VALUE, format!("cuLaunchKernel {}: kernelParams is null, the kernel takes {} parameters", p.name, p.params.len()));
    }
    for (k, prm) in p.params.iter().enumerate() {
        let src = *params.add(k);
        if src.is_null() {
            return fail(INVALID_VALUE, format!("cuLaunchKernel {}: parameter {k} ({}) is a null pointer", p.name, prm.name));
        }
        std::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr().add(prm.offset), prm.size);
    }
    d.submit(stream, Op::Launch { func: func.clone(), grid: [gx, gy, gz], block: [bx, by, bz], smem, params: buf })
});

// Memory.

entry!(cuMemAlloc_v2(ptr: *mut u64, bytes: usize) {
    let d = driver();
    try_!(d.ready());
    let n = d.allocs.fetch_add(1, Ordering::Relaxed) + 1;
    match d.mem.alloc(bytes as u64, Some(format!("cuMemAlloc #{n} ({bytes} bytes)"))) {
        Ok(p) => out(ptr, p, "cuMemAlloc"),
        Err(e) => fail(OUT_OF_MEMORY, format!("cuMemAlloc of {bytes} bytes: {e}")),
    }
});

entry!(cuMemFree_v2(ptr: u64) {
    match driver().mem.free(ptr) {
        Ok(()) => SUCCESS,
        Err(e) => fail(INVALID_VALUE, format!("cuMemFree: {e}")),
    }
});

entry!(cuMemGetAddressRange_v2(base: *mut u64, size: *mut usize, ptr: u64) {
    match driver().mem.range_of(ptr) {
        Some((b, s)) => {
            if !base.is_null() {
                *base = b;
            }
            if !size.is_null() {
                *size = s;
            }
            SUCCESS
        }
        None => fail(NOT_FOUND, format!("cuMemGetAddressRange: {ptr:#x} is in no allocation")),
    }
});

unsafe fn htod(dst: u64, src: *const c_void, n: usize, stream: usize, what: &str) -> CUresult {
    let d = driver();
    try_!(d.ready());
    try_!(d.not_while_capturing(stream, what));
    if stream == 0 {
        try_!(d.unsafe_during_capture(what));
    }
    if n == 0 {
        return SUCCESS;
    }
    if src.is_null() {
        return fail(INVALID_VALUE, format!("{what}: null host pointer"));
    }
    let r = d.mem.with_range(dst, n, |a, off| {
        std::ptr::copy_nonoverlapping(src as *const u8, a.ptr(off), n);
        a.mark(off, n);
    });
    r.map_or_else(|e| fail(INVALID_VALUE, format!("{what}: {e}")), |_| SUCCESS)
}

unsafe fn dtoh(dst: *mut c_void, src: u64, n: usize, stream: usize, what: &str) -> CUresult {
    let d = driver();
    try_!(d.ready());
    try_!(d.not_while_capturing(stream, what));
    if stream == 0 {
        try_!(d.unsafe_during_capture(what));
    }
    if n == 0 {
        return SUCCESS;
    }
    if dst.is_null() {
        return fail(INVALID_VALUE, format!("{what}: null host pointer"));
    }
    let r = d.mem.with_range(src, n, |a, off| std::ptr::copy_nonoverlapping(a.ptr(off), dst as *mut u8, n));
    r.map_or_else(|e| fail(INVALID_VALUE, format!("{what}: {e}")), |_| SUCCESS)
}

entry!(cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) { htod(dst, src, n, 0, "cuMemcpyHtoD") });
entry!(cuMemcpyHtoDAsync_v2(dst: u64, src: *const c_void, n: usize, s: usize) { htod(dst, src, n, s, "cuMemcpyHtoDAsync") });
entry!(cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) { dtoh(dst, src, n, 0, "cuMemcpyDtoH") });
entry!(cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: u64, n: usize, s: usize) { dtoh(dst, src, n, s, "cuMemcpyDtoHAsync") });
entry!(cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) {
    try_!(driver().ready());
    try_!(driver().unsafe_during_capture("cuMemcpyDtoD"));
    driver().submit(0, Op::CopyDtoD { dst, src, len: n })
});
entry!(cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, s: usize) {
    try_!(driver().ready());
    driver().submit(s, Op::CopyDtoD { dst, src, len: n })
});
entry!(cuMemsetD8_v2(dst: u64, v: u8, n: usize) {
    try_!(driver().ready());
    try_!(driver().unsafe_during_capture("cuMemsetD8"));
    driver().submit(0, Op::Memset { ptr: dst, value: v, len: n })
});
entry!(cuMemsetD8Async(dst: u64, v: u8, n: usize, s: usize) {
    try_!(driver().ready());
    driver().submit(s, Op::Memset { ptr: dst, value: v, len: n })
});

// Streams, events, capture and graphs.

entry!(cuStreamCreate(s: *mut usize, _flags: c_uint) {
    let d = driver();
    try_!(d.ready());
    let h = d.handle();
    lock(&d.streams).insert(h, Stream::default());
    out(s, h, "cuStreamCreate")
});

entry!(cuStreamCreateWithPriority(s: *mut usize, flags: c_uint, _p: c_int) { cuStreamCreate(s, flags) });

entry!(cuStreamDestroy_v2(s: usize) {
    match lock(&driver().streams).remove(&s) {
        Some(_) => SUCCESS,
        None => fail(INVALID_HANDLE, format!("cuStreamDestroy: {s:#x} is not a stream")),
    }
});

entry!(cuStreamSynchronize(s: usize) {
    let d = driver();
    try_!(d.not_while_capturing(s, "cuStreamSynchronize"));
    SUCCESS
});

entry!(cuStreamQuery(_s: usize) { SUCCESS });
entry!(cuStreamWaitEvent(_s: usize, _e: usize, _f: c_uint) { SUCCESS });
entry!(cuStreamGetPriority(_s: usize, p: *mut c_int) { out(p, 0, "cuStreamGetPriority") });

entry!(cuStreamBeginCapture_v2(s: usize, mode: c_int) {
    let d = driver();
    let mut streams = lock(&d.streams);
    match streams.get_mut(&s) {
        None if s == 0 => fail(STREAM_CAPTURE_UNSUPPORTED, "cuStreamBeginCapture: the legacy default stream cannot capture"),
        None => fail(INVALID_HANDLE, format!("cuStreamBeginCapture: {s:#x} is not a stream")),
        Some(st) if st.capture.is_some() => fail(INVALID_VALUE, "cuStreamBeginCapture: the stream is already capturing"),
        Some(st) => {
            let thread = std::thread::current().id();
            st.capture = Some(Capture { ops: Vec::new(), ok: true, mode, thread });
            SUCCESS
        }
    }
});

entry!(cuStreamIsCapturing(s: usize, status: *mut c_int) {
    let d = driver();
    let st = match lock(&d.streams).get(&s) {
        Some(Stream { capture: Some(Capture { ok: true, .. }) }) => 1,
        Some(Stream { capture: Some(Capture { ok: false, .. }) }) => 2,
        _ => 0,
    };
    out(status, st, "cuStreamIsCapturing")
});

entry!(cuStreamEndCapture(s: usize, graph: *mut usize) {
    let d = driver();
    let taken = lock(&d.streams).get_mut(&s).and_then(|st| st.capture.take());
    match taken {
        None => fail(INVALID_VALUE, format!("cuStreamEndCapture: stream {s:#x} is not capturing")),
        Some(Capture { ok: false, .. }) => {
            if !graph.is_null() {
                *graph = 0;
            }
            fail(STREAM_CAPTURE_INVALIDATED, "cuStreamEndCapture: the capture was invalidated by an operation that cannot be captured")
        }
        Some(Capture { ops, .. }) => {
            let h = d.handle();
            lock(&d.graphs).insert(h, Arc::new(ops));
            out(graph, h, "cuStreamEndCapture")
        }
    }
});

entry!(cuGraphInstantiateWithFlags(exec: *mut usize, graph: usize, _flags: u64) {
    let d = driver();
    let g = match lock(&d.graphs).get(&graph) {
        Some(g) => g.clone(),
        None => return fail(INVALID_HANDLE, format!("cuGraphInstantiate: {graph:#x} is not a graph")),
    };
    let h = d.handle();
    lock(&d.graphs).insert(h, g);
    out(exec, h, "cuGraphInstantiate")
});

entry!(cuGraphLaunch(exec: usize, s: usize) {
    let d = driver();
    let g = match lock(&d.graphs).get(&exec) {
        Some(g) => g.clone(),
        None => return fail(INVALID_HANDLE, format!("cuGraphLaunch: {exec:#x} is not an instantiated graph")),
    };
    if d.capturing(s) {
        return fail(NOT_SUPPORTED, "cuGraphLaunch into a capturing stream is not implemented by the emulator");
    }
    if trace_on() {
        eprintln!("pimoe-emu: graph launch, {} operations", g.len());
    }
    if d.counting.load(Ordering::Relaxed) {
        let range = RANGES.with(|r| r.borrow().join("/"));
        lock(&d.records).push(format!(
            r#"{{"kind":"graph","operations":{},"range":{}}}"#,
            g.len(),
            json_string(&range)
        ));
    }
    IN_GRAPH.with(|f| f.set(true));
    let r = g.iter().map(|op| d.run(op)).find(|&r| r != SUCCESS).unwrap_or(SUCCESS);
    IN_GRAPH.with(|f| f.set(false));
    r
});

entry!(cuGraphUpload(_exec: usize, _s: usize) { SUCCESS });

entry!(cuGraphDestroy(g: usize) {
    match lock(&driver().graphs).remove(&g) {
        Some(_) => SUCCESS,
        None => fail(INVALID_HANDLE, format!("cuGraphDestroy: {g:#x} is not a graph")),
    }
});

entry!(cuGraphExecDestroy(g: usize) {
    match lock(&driver().graphs).remove(&g) {
        Some(_) => SUCCESS,
        None => fail(INVALID_HANDLE, format!("cuGraphExecDestroy: {g:#x} is not a graph")),
    }
});

entry!(cuEventCreate(e: *mut usize, _flags: c_uint) {
    let d = driver();
    let h = d.handle();
    lock(&d.events).insert(h, None);
    out(e, h, "cuEventCreate")
});

// Inside a capture an event record is a node of the graph, recorded at replay.
entry!(cuEventRecord(e: usize, s: usize) {
    let d = driver();
    if !lock(&d.events).contains_key(&e) {
        return fail(INVALID_HANDLE, format!("cuEventRecord: {e:#x} is not an event"));
    }
    d.submit(s, Op::Record { event: e })
});

entry!(cuEventSynchronize(_e: usize) { SUCCESS });
entry!(cuEventQuery(_e: usize) { SUCCESS });

// Host time between two events: the emulator's time, never a GPU's.
entry!(cuEventElapsedTime(ms: *mut f32, a: usize, b: usize) {
    let ev = lock(&driver().events);
    match (ev.get(&a), ev.get(&b)) {
        (Some(Some(x)), Some(Some(y))) => out(ms, y.duration_since(*x).as_secs_f32() * 1e3, "cuEventElapsedTime"),
        _ => fail(INVALID_HANDLE, "cuEventElapsedTime: an event was never recorded"),
    }
});

entry!(cuEventElapsedTime_v2(ms: *mut f32, a: usize, b: usize) { cuEventElapsedTime(ms, a, b) });

entry!(cuEventDestroy_v2(e: usize) {
    match lock(&driver().events).remove(&e) {
        Some(_) => SUCCESS,
        None => fail(INVALID_HANDLE, format!("cuEventDestroy: {e:#x} is not an event")),
    }
});

// No profiler to start; with PIMOE_EMU_TRACE the capture's bounds show in the trace,
// so a test can check what a profiler would capture.
entry!(cuProfilerStart() {
    if trace_on() {
        eprintln!("pimoe-emu: profiler start");
    }
    SUCCESS
});
entry!(cuProfilerStop() {
    if trace_on() {
        eprintln!("pimoe-emu: profiler stop");
    }
    SUCCESS
});

thread_local! {
    static RANGES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The current operations are a graph's nodes.
    static IN_GRAPH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// NVTX's range API (nvToolsExt), for programs that mark their phases: the
/// emulator keeps each thread's range stack and, with PIMOE_EMU_TRACE, prints
/// every push and pop, so a trace reads like an Nsight timeline. Returns the
/// depth of the new range, as NVTX does.
#[no_mangle]
pub unsafe extern "C" fn nvtxRangePushA(message: *const c_char) -> c_int {
    let name = if message.is_null() {
        String::new()
    } else {
        CStr::from_ptr(message).to_string_lossy().into_owned()
    };
    if trace_on() {
        eprintln!("pimoe-emu: range push {name}");
    }
    RANGES.with(|r| {
        let mut r = r.borrow_mut();
        r.push(name);
        r.len() as c_int - 1
    })
}

/// Ends the newest range; -1 when none is open, as NVTX does.
#[no_mangle]
pub extern "C" fn nvtxRangePop() -> c_int {
    RANGES.with(|r| match r.borrow_mut().pop() {
        Some(name) => {
            if trace_on() {
                eprintln!("pimoe-emu: range pop {name}");
            }
            0
        }
        None => -1,
    })
}

entry!(cuGetErrorName(code: CUresult, s: *mut *const c_char) {
    static NAMES: OnceLock<Mutex<HashMap<CUresult, usize>>> = OnceLock::new();
    let mut m = lock(NAMES.get_or_init(Mutex::default));
    let p = *m.entry(code).or_insert_with(|| intern(code_name(code).to_string()) as usize);
    out(s, p as *const c_char, "cuGetErrorName")
});

entry!(cuGetErrorString(code: CUresult, s: *mut *const c_char) {
    let detail = DETAIL.with(|d| d.borrow().get(&code).cloned());
    let text = match detail {
        Some(d) => format!("{}: {d}", code_text(code)),
        None => code_text(code).to_string(),
    };
    out(s, intern(text), "cuGetErrorString")
});

/// The last failure's full message on this thread (empty if none): the
/// sanitizer report of a faulting launch, or why a module did not load.
#[no_mangle]
pub extern "C" fn pimoe_emu_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

/// Starts (`on` != 0, dropping earlier records) or stops collecting counters for
/// every kernel launch, a pimoe-emu extension beside the driver API (what a
/// profiler would read from the hardware). Returns the number of records held.
#[no_mangle]
pub extern "C" fn pimoe_emu_counters(on: c_int) -> c_int {
    let d = driver();
    let mut r = lock(&d.records);
    if on != 0 {
        r.clear();
    }
    d.counting.store(on != 0, Ordering::Relaxed);
    r.len() as c_int
}

/// The records collected since counting started, as a JSON array (one object per
/// kernel launch, with its counters, and one per graph launch). The string stays
/// valid until the next call of this function on any thread.
#[no_mangle]
pub extern "C" fn pimoe_emu_counter_records() -> *const c_char {
    static OUT: Mutex<Option<CString>> = Mutex::new(None);
    let d = driver();
    let text = format!("[{}]", lock(&d.records).join(",\n"));
    let mut out = lock(&OUT);
    *out = Some(CString::new(text).unwrap_or_default());
    out.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Driver calls the emulator does not implement: each returns
/// CUDA_ERROR_NOT_SUPPORTED and names itself in the message. (The arguments are
/// ignored; with the C calling convention a callee that reads none is safe.)
macro_rules! unsupported {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name() -> CUresult {
                fail(NOT_SUPPORTED, concat!(stringify!($name), " is not implemented by the pimoe-emu driver"))
            }
        )*
    };
}

unsupported!(
    cuDestroyExternalMemory,
    cuDeviceGetDefaultMemPool,
    cuDeviceGetMemPool,
    cuDeviceSetMemPool,
    cuExternalMemoryGetMappedBuffer,
    cuMemAdvise_v2,
    cuMemAllocFromPoolAsync,
    cuMemPoolCreate,
    cuMemPoolDestroy,
    cuMemPoolGetAttribute,
    cuMemPoolSetAttribute,
    cuMemPoolTrimTo,
    cuMemPrefetchAsync_v2,
    cuMemcpyPeerAsync,
    cuOccupancyAvailableDynamicSMemPerBlock,
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags,
    cuOccupancyMaxActiveClusters,
    cuOccupancyMaxPotentialBlockSizeWithFlags,
    cuOccupancyMaxPotentialClusterSize,
    cuStreamAttachMemAsync,
    cuCtxCreate_v2,
    cuCtxCreate_v3,
    cuCtxCreate_v4,
    cuCtxDestroy_v2,
    cuModuleLoad,
    cuModuleLoadFatBinary,
    cuLinkCreate_v2,
    cuLinkAddData_v2,
    cuLinkComplete,
    cuLinkDestroy,
    cuLaunchKernelEx,
    cuLaunchCooperativeKernel,
    cuLaunchHostFunc,
    cuMemAllocAsync,
    cuMemFreeAsync,
    cuMemAllocManaged,
    cuMemAllocHost_v2,
    cuMemHostAlloc,
    cuMemFreeHost,
    cuMemHostRegister_v2,
    cuMemHostUnregister,
    cuMemAllocPitch_v2,
    cuMemcpy,
    cuMemcpyAsync,
    cuMemcpy2D_v2,
    cuMemcpy2DAsync_v2,
    cuMemcpy3D_v2,
    cuMemsetD16_v2,
    cuMemsetD16Async,
    cuMemsetD32_v2,
    cuMemsetD32Async,
    cuMemPrefetchAsync,
    cuMemAdvise,
    cuPointerGetAttribute,
    cuPointerGetAttributes,
    cuOccupancyMaxActiveBlocksPerMultiprocessor,
    cuOccupancyMaxPotentialBlockSize,
    cuStreamGetCaptureInfo_v2,
    cuStreamGetCaptureInfo_v3,
    cuStreamUpdateCaptureDependencies,
    cuStreamAddCallback,
    cuGraphCreate,
    cuGraphAddKernelNode_v2,
    cuGraphAddMemcpyNode,
    cuGraphAddMemsetNode,
    cuGraphGetNodes,
    cuGraphInstantiate_v2,
    cuGraphExecKernelNodeSetParams_v2,
    cuGraphExecUpdate_v2,
    cuGraphKernelNodeGetParams_v2,
    cuGraphKernelNodeSetParams_v2,
    cuTexObjectCreate,
    cuSurfObjectCreate,
    cuIpcGetMemHandle,
    cuIpcOpenMemHandle_v2,
    cuMemMap,
    cuMemCreate,
    cuMemAddressReserve,
    cuImportExternalMemory,
);
