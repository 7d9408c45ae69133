//! The CUDA backend: our kernels (kernels/*.cu, PTX embedded by build.rs) driven
//! through the driver API. This file owns the device, the modules, memory and CUDA
//! graphs; each kernel family has a launcher file beside it that alone knows its
//! symbols, launch shapes and argument order.
//!
//! Memory. Weights and KV caches are plain allocations. Step tensors come from a
//! pool of exact-size buffers that are never freed while the backend lives: after
//! the first step of a given shape every allocation is a hit, and since a pool
//! hands out the lowest free address of a size, the same calls in the same order get
//! the same addresses. That is what lets a decode step be captured once as a CUDA
//! graph and replayed: on replay the step's code runs again on the host, kernels are
//! not launched but each launch and allocation is checked against the capture, index
//! uploads are queued, and the graph is launched after the uploads (so no buffer may
//! change hands within a step: freed ones are held until it ends). Any mismatch
//! drops the graph and runs the step eagerly instead.
//!
//! Errors. Ops cannot return errors (the trait is shared with the CPU); the first
//! device error is kept, later launches are skipped, and `check` reports it at the
//! end of the step, as CUDA's own sticky errors do.

pub mod attention;
pub mod driver;
pub mod embed;
pub mod expert;
pub mod gemm;
pub mod kv;
pub mod mlp;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod sampling;

use std::collections::{BTreeSet, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};

pub use driver::DriverKind;

use crate::backend::kernels::{KERNELS, PTX_ARCH};
use crate::backend::{AttnPlan, AttnShape, Backend, GateLayer};
use crate::error::{Error, Result};
use crate::model::safetensors::{HostData, HostTensor};
use crate::pimoe::experts::{Expert, RowResult};

/// Dynamic shared memory above this needs an opt-in attribute on the function.
const DEFAULT_SMEM: u32 = 48 * 1024;

/// One device allocation. Pool buffers go back to their pool when dropped.
pub struct DevBuf {
    ptr: u64,
    bytes: usize,
    pool: Option<Arc<Pool>>,
}

impl DevBuf {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        match &self.pool {
            Some(pool) => pool.put(self.ptr, self.bytes),
            // SAFETY: ptr came from cuMemAlloc and nothing refers to it any more.
            None => unsafe {
                let _ = result::free_sync(self.ptr);
            },
        }
    }
}

/// Free step buffers by exact size in bytes. `take` hands out the lowest free
/// address of a size, so the same calls in the same order get the same addresses
/// whatever order buffers came back in (graph replay checks that).
#[derive(Default)]
pub struct Pool {
    free: Mutex<HashMap<usize, BTreeSet<u64>>>,
    /// Some while a sampling step runs: buffers dropped then are held back until it
    /// ends. A graph step makes all its uploads before its kernels run, so a buffer
    /// that changed hands within the step (a kernel's scratch early on, an upload's
    /// target later) would be overwritten before that kernel read it. Found by the
    /// emulator: greedy tokens differed between eager and replayed decode steps.
    held: Mutex<Option<Vec<(u64, usize)>>>,
}

/// Holds a pool's freed buffers for the length of a step.
struct StepHold<'a>(&'a Pool);

impl Drop for StepHold<'_> {
    fn drop(&mut self) {
        let held = lock(&self.0.held).take().unwrap_or_default();
        let mut free = lock(&self.0.free);
        for (ptr, bytes) in held {
            free.entry(bytes).or_default().insert(ptr);
        }
    }
}

impl Pool {
    fn put(&self, ptr: u64, bytes: usize) {
        if let Some(held) = lock(&self.held).as_mut() {
            held.push((ptr, bytes));
            return;
        }
        lock(&self.free).entry(bytes).or_default().insert(ptr);
    }

    fn hold(&self) -> StepHold<'_> {
        *lock(&self.held) = Some(Vec::new());
        StepHold(self)
    }

    fn take(&self, bytes: usize) -> Option<u64> {
        lock(&self.free).get_mut(&bytes)?.pop_first()
    }
}

impl Drop for Pool {
    /// The last reference goes when the backend and all its tensors are gone.
    fn drop(&mut self) {
        for list in self.free.get_mut().unwrap_or_else(|e| e.into_inner()).values() {
            for &ptr in list {
                // SAFETY: pool buffers came from cuMemAlloc; nothing refers to them now.
                unsafe {
                    let _ = result::free_sync(ptr);
                }
            }
        }
    }
}

/// f32 activations.
pub struct CudaTensor {
    pub buf: DevBuf,
    pub len: usize,
}

/// u32 indices.
pub struct CudaIndex {
    pub buf: DevBuf,
    pub len: usize,
}

/// bf16 KV cache storage.
pub struct CudaCache {
    pub buf: DevBuf,
    pub len: usize,
}

/// A matrix (rows, cols) in bf16, or a vector (1, len) in f32, or a block-quantized
/// matrix kept in its stored bytes: then `quant` lists its row parts (each of its own
/// type) and `buf` holds them one after another, each starting 16-byte aligned.
pub struct CudaWeight {
    pub rows: usize,
    pub cols: usize,
    pub buf: DevBuf,
    /// Empty unless the matrix is quantized (see `quant::QuantSlice`).
    pub quant: Vec<quant::QuantSlice>,
}

impl CudaWeight {
    /// A matrix of at least two rows (bf16 or quantized); one row is an f32 vector.
    pub fn is_matrix(&self) -> bool {
        self.rows > 1
    }

    /// Whether the matrix is block-quantized (read by kernels/quant.cu, not the GEMMs).
    pub fn is_quant(&self) -> bool {
        !self.quant.is_empty()
    }
}

/// A kernel argument as the driver reads it: a pointer to the value, of which it
/// copies as many bytes as the kernel's parameter has. Scalars are stored in 8
/// little-endian bytes, so a 4-byte parameter reads the low half.
pub enum Arg {
    Word(u64),
    /// A parameter struct passed by value, as its bytes.
    Bytes(Vec<u8>),
}

impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::Word(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Word(v as u64)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Word(v as u32 as u64)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::Word(v.to_bits() as u64)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Word(v.to_bits())
    }
}
impl From<&CudaTensor> for Arg {
    fn from(t: &CudaTensor) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&mut CudaTensor> for Arg {
    fn from(t: &mut CudaTensor) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&CudaIndex> for Arg {
    fn from(t: &CudaIndex) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&mut CudaIndex> for Arg {
    fn from(t: &mut CudaIndex) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&CudaCache> for Arg {
    fn from(t: &CudaCache) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&mut CudaCache> for Arg {
    fn from(t: &mut CudaCache) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
impl From<&CudaWeight> for Arg {
    fn from(t: &CudaWeight) -> Self {
        Arg::Word(t.buf.ptr)
    }
}
/// An optional weight (a bias) is a null pointer when absent.
impl From<Option<&CudaWeight>> for Arg {
    fn from(t: Option<&CudaWeight>) -> Self {
        Arg::Word(t.map_or(0, |w| w.buf.ptr))
    }
}

/// Launch geometry: grid and block in (x, y, z), dynamic shared memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem: u32,
}

impl Grid {
    pub fn new(grid: impl Into<Dim3>, block: impl Into<Dim3>, smem: u32) -> Self {
        Grid { grid: grid.into().0, block: block.into().0, smem }
    }
}

pub struct Dim3((u32, u32, u32));
impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3((x, 1, 1))
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Self {
        Dim3((x, y, 1))
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from(d: (u32, u32, u32)) -> Self {
        Dim3(d)
    }
}

/// What a launch looked like, to check a replayed step against its capture.
#[derive(Clone, PartialEq)]
struct LaunchRecord {
    kernel: String,
    grid: Grid,
    args: Vec<u8>,
}

struct Upload {
    ptr: u64,
    bytes: Vec<u8>,
}

enum Mode {
    Eager,
    /// Recording a graph: launches go into the capture and are remembered. A pool
    /// miss or a failed launch spoils the capture (`ok`), never the backend.
    Capture {
        launches: Vec<LaunchRecord>,
        allocs: Vec<u64>,
        uploads: Vec<Upload>,
        ok: bool,
    },
    /// Replaying: nothing is launched; launches and allocations must match.
    Replay {
        launches: Arc<Vec<LaunchRecord>>,
        allocs: Arc<Vec<u64>>,
        at: (usize, usize),
        ok: bool,
        uploads: Vec<Upload>,
    },
}

/// Where NVTX ranges go: libnvToolsExt (to Nsight), the emulator's trace, or nowhere.
#[derive(Clone, Copy)]
enum Nvtx {
    None,
    Library,
    Emulator(driver::RangePush, driver::RangePop),
}

/// Captures or replays that may fail for a key before it stays eager.
const GRAPH_ATTEMPTS: u8 = 3;

enum GraphState {
    /// Ran eagerly (which also filled the pool for this shape); the number of
    /// failed captures or replays so far.
    Warm(u8),
    Ready {
        exec: Graph,
        launches: Arc<Vec<LaunchRecord>>,
        allocs: Arc<Vec<u64>>,
    },
    /// Capture failed or replay diverged: always eager.
    Eager,
}

struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

// SAFETY: graph handles are plain driver handles, used under the backend's locks.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles were created by end_capture/instantiate and are owned here.
        unsafe {
            let _ = sys::cuGraphExecDestroy(self.exec);
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    pool: Arc<Pool>,
    mode: Mutex<Mode>,
    graphs: Mutex<HashMap<(usize, usize), GraphState>>,
    /// Arrival counters (`counters`): the current buffer last; outgrown ones are
    /// kept, since a captured graph may still name them.
    counters: Mutex<Vec<DevBuf>>,
    error: Mutex<Option<String>>,
    /// Decode steps as CUDA graphs (default on; PIMOE_CUDA_GRAPHS=0 turns them off).
    graphs_on: AtomicBool,
    nvtx: Nvtx,
    pub device_name: String,
    pub compute_capability: (i32, i32),
    pub driver: DriverKind,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn driver_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("{what}: {e:?}"))
}

impl CudaBackend {
    /// Opens GPU `ordinal` through the driver `PIMOE_CUDA` names (the GPU's by
    /// default). Fails with a clear message when there is no driver, no such
    /// device, or no PTX for it (and NVRTC cannot build one).
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_driver(ordinal, DriverKind::from_env())
    }

    /// The kernels on the PTX emulator (emu/), with its checks.
    pub fn emulated(ordinal: usize) -> Result<Self> {
        Self::with_driver(ordinal, DriverKind::Emulator)
    }

    /// What the GPU tests run on: the GPU when a driver is present, else the
    /// emulator; `PIMOE_CUDA=emu` forces the emulator.
    pub fn gpu_or_emulator(ordinal: usize) -> Result<Self> {
        let kind = driver::select_default()?;
        Self::with_driver(ordinal, kind)
    }

    pub fn with_driver(ordinal: usize, kind: DriverKind) -> Result<Self> {
        driver::select(kind)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_err(&format!("opening GPU {ordinal}"), e))?;
        // One stream per backend and our own buffers: cudarc's per-slice events are
        // not needed and would get in the way of graph capture.
        // SAFETY: every allocation of this backend is used on its one stream only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| driver_err("creating a stream", e))?;
        let device_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx.compute_capability().map_err(|e| driver_err("compute capability", e))?;
        if compute_capability.0 < 8 {
            return Err(Error::Device(format!(
                "{device_name} has compute capability {}.{}; the kernels need 8.0 or newer (bf16 tensor cores)",
                compute_capability.0, compute_capability.1
            )));
        }
        let nvtx = match (kind, driver::emulator_nvtx()) {
            (DriverKind::Emulator, Some((push, pop))) => Nvtx::Emulator(push, pop),
            // SAFETY: dlopen only.
            _ if unsafe { cudarc::nvtx::sys::is_culib_present() } => Nvtx::Library,
            _ => Nvtx::None,
        };
        let backend = CudaBackend {
            ctx,
            stream,
            modules: Mutex::default(),
            functions: Mutex::default(),
            pool: Arc::default(),
            mode: Mutex::new(Mode::Eager),
            graphs: Mutex::default(),
            counters: Mutex::default(),
            error: Mutex::default(),
            graphs_on: AtomicBool::new(std::env::var("PIMOE_CUDA_GRAPHS").map_or(true, |v| v != "0")),
            nvtx,
            device_name,
            compute_capability,
            driver: kind,
        };
        // Load every module now, so that a missing or rejected PTX is an error here
        // (and `--device auto` falls back) rather than at the first kernel.
        for k in KERNELS {
            backend.module(k.name)?;
        }
        Ok(backend)
    }

    fn bind(&self) {
        if let Err(e) = self.ctx.bind_to_thread() {
            self.fail(format!("binding the CUDA context: {e:?}"));
        }
    }

    /// Keeps the first error; later launches are skipped.
    pub fn fail(&self, msg: String) {
        let mut err = lock(&self.error);
        if err.is_none() {
            *err = Some(msg);
        }
    }

    fn failed(&self) -> bool {
        lock(&self.error).is_some()
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>> {
        if let Some(m) = lock(&self.modules).get(name) {
            return Ok(m.clone());
        }
        let kernel = KERNELS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| Error::Device(format!("no kernel file kernels/{name}.cu in this build")))?;
        let ptx = match kernel.ptx {
            Some(ptx) => cudarc::nvrtc::Ptx::from_src(ptx),
            None => self.nvrtc(name, kernel.source)?,
        };
        let m = self.ctx.load_module(ptx).map_err(|e| {
            driver_err(
                &format!(
                    "loading kernels/{name}.cu (PTX for {}) on {}",
                    PTX_ARCH.unwrap_or("this GPU, via NVRTC"),
                    self.device_name
                ),
                e,
            )
        })?;
        lock(&self.modules).insert(name, m.clone());
        Ok(m)
    }

    /// Builds PTX at run time when the crate was built without nvcc.
    fn nvrtc(&self, name: &str, source: &str) -> Result<cudarc::nvrtc::Ptx> {
        // cudarc panics when it cannot load the library; the user needs the fix instead.
        // SAFETY: dlopen only.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(Error::Device(format!(
                "this build has no PTX (nvcc was not found at build time; run scripts/cuda-toolchain.sh \
                 and rebuild), and there is no NVRTC library to compile kernels/{name}.cu at run time"
            )));
        }
        let (major, minor) = self.compute_capability;
        // cuda_bf16.h comes from a CUDA install or the pinned PyPI toolchain.
        let include_paths = [
            std::env::var("CUDA_HOME").map(|h| format!("{h}/include")).unwrap_or_default(),
            "/usr/local/cuda/include".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/cuda-toolchain/nvidia/cu13/include").into(),
        ]
        .into_iter()
        .filter(|p| std::path::Path::new(p).join("cuda_bf16.h").is_file())
        .collect();
        let opts = cudarc::nvrtc::CompileOptions {
            arch: Some(Box::leak(format!("compute_{major}{minor}").into_boxed_str())),
            options: vec!["-std=c++17".into(), "-lineinfo".into()],
            include_paths,
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| {
            Error::Device(format!(
                "this build has no PTX (nvcc was not found at build time; run scripts/cuda-toolchain.sh \
                 and rebuild) and NVRTC could not compile kernels/{name}.cu: {e}"
            ))
        })
    }

    fn function(&self, module: &'static str, kernel: &str) -> Result<CudaFunction> {
        let key = format!("{module}/{kernel}");
        if let Some(f) = lock(&self.functions).get(&key) {
            return Ok(f.clone());
        }
        let f = self
            .module(module)?
            .load_function(kernel)
            .map_err(|e| driver_err(&format!("kernel {kernel} in kernels/{module}.cu"), e))?;
        lock(&self.functions).insert(key, f.clone());
        Ok(f)
    }

    /// Launches `kernel` from kernels/<module>.cu on the backend's stream.
    ///
    /// The caller (a launcher file) guarantees that `args` match the kernel's
    /// parameter list in order and size, that every pointer is a live buffer of at
    /// least the extent the kernel touches for this geometry, and that the grid and
    /// scalar arguments depend only on shapes, never on index contents (graph
    /// replay checks that).
    pub fn launch(&self, module: &'static str, kernel: &str, grid: Grid, args: &[Arg]) {
        if self.failed() {
            return;
        }
        let record = || LaunchRecord {
            kernel: format!("{module}/{kernel}"),
            grid,
            args: args
                .iter()
                .flat_map(|a| match a {
                    Arg::Word(w) => w.to_le_bytes().to_vec(),
                    Arg::Bytes(b) => b.clone(),
                })
                .collect(),
        };
        match &mut *lock(&self.mode) {
            Mode::Eager => {}
            Mode::Capture { launches, .. } => launches.push(record()),
            Mode::Replay { launches, at, ok, .. } => {
                *ok &= launches.get(at.0) == Some(&record());
                at.0 += 1;
                return;
            }
        }
        self.bind();
        let f = match self.function(module, kernel) {
            Ok(f) => f,
            Err(e) => return self.fail(e.to_string()),
        };
        if grid.smem > DEFAULT_SMEM {
            if let Err(e) = f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                grid.smem as i32,
            ) {
                return self.fail(format!("{kernel}: {} bytes of shared memory: {e:?}", grid.smem));
            }
        }
        let mut words: Vec<u64> = Vec::with_capacity(args.len());
        let mut params: Vec<*mut c_void> = Vec::with_capacity(args.len());
        for a in args {
            if let Arg::Word(w) = a {
                words.push(*w);
            }
        }
        let mut wi = 0;
        for a in args {
            match a {
                Arg::Word(_) => {
                    params.push(&mut words[wi] as *mut u64 as *mut c_void);
                    wi += 1;
                }
                Arg::Bytes(b) => params.push(b.as_ptr() as *mut c_void),
            }
        }
        // SAFETY: argument list and extents are the launcher's contract (above);
        // `words` and `args` outlive the call, which copies the values.
        let res = unsafe {
            result::launch_kernel(
                f.cu_function(),
                grid.grid,
                grid.block,
                grid.smem,
                self.stream.cu_stream(),
                &mut params,
            )
        };
        if let Err(e) = res {
            match &mut *lock(&self.mode) {
                Mode::Capture { ok, .. } => *ok = false,
                _ => self.fail(format!("launching {kernel} with {grid:?}: {e:?}")),
            }
        }
    }

    /// A step buffer of `bytes` from the pool (allocated on a miss).
    fn pooled(&self, bytes: usize) -> DevBuf {
        let bytes = bytes.max(4);
        let ptr = match self.pool.take(bytes) {
            Some(p) => p,
            None => {
                match &mut *lock(&self.mode) {
                    // Allocating inside a capture would put the allocation in the
                    // graph: spoil the capture instead (the step then runs eagerly).
                    Mode::Capture { ok, .. } => {
                        *ok = false;
                        return DevBuf { ptr: 0, bytes, pool: None };
                    }
                    // A replayed step must not allocate: its shape was seen before.
                    Mode::Replay { ok, .. } => *ok = false,
                    Mode::Eager => {}
                }
                self.bind();
                // SAFETY: a plain allocation, owned by the returned buffer.
                match unsafe { result::malloc_sync(bytes) } {
                    Ok(p) => p,
                    Err(e) => {
                        self.fail(format!("allocating {bytes} bytes on {}: {e:?}", self.device_name));
                        0
                    }
                }
            }
        };
        match &mut *lock(&self.mode) {
            Mode::Capture { allocs, .. } => allocs.push(ptr),
            Mode::Replay { allocs, at, ok, .. } => {
                *ok &= allocs.get(at.1) == Some(&ptr);
                at.1 += 1;
            }
            Mode::Eager => {}
        }
        DevBuf { ptr, bytes, pool: (ptr != 0).then(|| self.pool.clone()) }
    }

    /// `len` u32 counters, zero when a kernel starts, for kernels whose CTAs count
    /// their arrivals (the last to arrive resets its counter before exiting). One
    /// buffer for the backend's life, zeroed once; it grows (to a power of two)
    /// only outside a captured or replayed step, which a growth spoils (the step
    /// then runs eagerly and grows it). 0 when it could not be had.
    pub(crate) fn counters(&self, len: usize) -> u64 {
        let mut bufs = lock(&self.counters);
        if let Some(b) = bufs.last().filter(|b| b.bytes >= len * 4) {
            return b.ptr;
        }
        if let Mode::Capture { ok, .. } | Mode::Replay { ok, .. } = &mut *lock(&self.mode) {
            *ok = false;
            return 0;
        }
        match self.owned((len * 4).next_power_of_two().max(4096)) {
            Ok(b) => {
                self.zero(&b);
                let ptr = b.ptr;
                bufs.push(b);
                ptr
            }
            Err(e) => {
                self.fail(e.to_string());
                0
            }
        }
    }

    /// A long-lived allocation (weights, caches), not pooled.
    pub(crate) fn owned(&self, bytes: usize) -> Result<DevBuf> {
        self.bind();
        // SAFETY: a plain allocation, owned by the returned buffer.
        let ptr = unsafe { result::malloc_sync(bytes.max(4)) }
            .map_err(|e| driver_err(&format!("allocating {bytes} bytes on {}", self.device_name), e))?;
        Ok(DevBuf { ptr, bytes, pool: None })
    }

    fn zero(&self, buf: &DevBuf) {
        if matches!(*lock(&self.mode), Mode::Replay { .. }) || buf.ptr == 0 {
            return;
        }
        // SAFETY: buf is a live allocation of buf.bytes bytes.
        if let Err(e) = unsafe { result::memset_d8_async(buf.ptr, 0, buf.bytes, self.stream.cu_stream()) } {
            self.fail(format!("memset: {e:?}"));
        }
    }

    /// Copies host bytes into `buf` now, or, inside a graph step, just before the
    /// graph is launched.
    fn write(&self, buf: &DevBuf, bytes: &[u8]) {
        if buf.ptr == 0 || bytes.is_empty() {
            return;
        }
        match &mut *lock(&self.mode) {
            Mode::Capture { uploads, .. } | Mode::Replay { uploads, .. } => {
                uploads.push(Upload { ptr: buf.ptr, bytes: bytes.to_vec() });
                return;
            }
            Mode::Eager => {}
        }
        self.upload_now(buf.ptr, bytes);
    }

    pub(crate) fn upload_now(&self, ptr: u64, bytes: &[u8]) {
        self.bind();
        // SAFETY: ptr is a live buffer of at least bytes.len() bytes; the async copy
        // from pageable memory is staged before the call returns.
        if let Err(e) = unsafe { result::memcpy_htod_async(ptr, bytes, self.stream.cu_stream()) } {
            self.fail(format!("copy to the GPU: {e:?}"));
        }
    }

    pub(crate) fn read<T: bytemuck::Pod + Default>(&self, buf: &DevBuf, len: usize) -> Vec<T> {
        let mut out = vec![T::default(); len];
        if !matches!(*lock(&self.mode), Mode::Eager) {
            self.fail("a graph step read a tensor back to the host".into());
            return out;
        }
        if self.failed() || len == 0 {
            return out;
        }
        self.bind();
        // SAFETY: buf holds at least len elements of T; the sync below completes the copy.
        let res = unsafe { result::memcpy_dtoh_async(&mut out, buf.ptr, self.stream.cu_stream()) }
            .and_then(|_| self.stream.synchronize());
        if let Err(e) = res {
            self.fail(format!("copy from the GPU: {e:?}"));
        }
        out
    }

    /// Whether the kernels run on the PTX emulator: its times are not a GPU's.
    pub fn is_emulator(&self) -> bool {
        self.driver == DriverKind::Emulator
    }

    /// Turns CUDA-graph replay of decode steps on or off (to compare, or to profile
    /// each kernel launch separately).
    pub fn set_graphs(&self, on: bool) {
        self.graphs_on.store(on, Ordering::Relaxed);
    }

    pub fn synchronize(&self) -> Result<()> {
        self.bind();
        self.stream.synchronize().map_err(|e| driver_err("synchronize", e))?;
        self.check()
    }

    /// The raw stream, for benches that time with events.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn set_mode(&self, m: Mode) -> Mode {
        std::mem::replace(&mut *lock(&self.mode), m)
    }

    /// The graph path of `step_tokens` for one key; None means "run eagerly".
    fn graph_step(&self, key: (usize, usize), f: &mut dyn FnMut() -> CudaIndex) -> Option<Vec<u32>> {
        let state = lock(&self.graphs).remove(&key);
        let retry = |failures: u8| {
            if failures + 1 >= GRAPH_ATTEMPTS {
                GraphState::Eager
            } else {
                GraphState::Warm(failures + 1)
            }
        };
        let (out, next) = match state {
            None => (None, GraphState::Warm(0)),
            Some(GraphState::Eager) => (None, GraphState::Eager),
            Some(GraphState::Warm(failures)) => match self.capture(f) {
                Some((out, ready)) => (Some(out), ready),
                None => (None, retry(failures)),
            },
            Some(GraphState::Ready { exec, launches, allocs }) => {
                self.set_mode(Mode::Replay {
                    launches: launches.clone(),
                    allocs: allocs.clone(),
                    at: (0, 0),
                    ok: true,
                    uploads: Vec::new(),
                });
                let t = f();
                let Mode::Replay { ok, at, uploads, .. } = self.set_mode(Mode::Eager) else { unreachable!() };
                if !ok || at != (launches.len(), allocs.len()) || self.failed() {
                    // The pool or the step changed shape: capture again next time.
                    (None, retry(0))
                } else {
                    let out = self.run_graph(&exec, uploads, &t);
                    (out, GraphState::Ready { exec, launches, allocs })
                }
            }
        };
        lock(&self.graphs).insert(key, next);
        out
    }

    fn capture(&self, f: &mut dyn FnMut() -> CudaIndex) -> Option<(Vec<u32>, GraphState)> {
        self.bind();
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.stream.begin_capture(mode).ok()?;
        self.set_mode(Mode::Capture {
            launches: Vec::new(),
            allocs: Vec::new(),
            uploads: Vec::new(),
            ok: true,
        });
        let t = f();
        let Mode::Capture { launches, allocs, uploads, ok } = self.set_mode(Mode::Eager) else {
            unreachable!()
        };
        // SAFETY: ends the capture begun above on this stream; a graph we do not
        // keep is destroyed at once.
        let graph = unsafe {
            let mut g = std::ptr::null_mut();
            let ended = sys::cuStreamEndCapture(self.stream.cu_stream(), &mut g).result();
            if ended.is_err() || !ok || self.failed() {
                if !g.is_null() {
                    let _ = sys::cuGraphDestroy(g);
                }
                return None;
            }
            g
        };
        if graph.is_null() {
            return None;
        }
        // SAFETY: instantiates the graph just captured; Graph owns both handles.
        let exec = unsafe {
            let mut e = std::ptr::null_mut();
            match sys::cuGraphInstantiateWithFlags(&mut e, graph, 0).result() {
                Ok(()) => Graph { graph, exec: e },
                Err(_) => {
                    let _ = sys::cuGraphDestroy(graph);
                    return None;
                }
            }
        };
        let out = self.run_graph(&exec, uploads, &t)?;
        Some((out, GraphState::Ready { exec, launches: Arc::new(launches), allocs: Arc::new(allocs) }))
    }

    fn run_graph(&self, g: &Graph, uploads: Vec<Upload>, out: &CudaIndex) -> Option<Vec<u32>> {
        for u in &uploads {
            self.upload_now(u.ptr, &u.bytes);
        }
        // SAFETY: exec is a live instantiated graph whose buffers (pool, weights,
        // caches) are all alive: the pool never frees.
        if let Err(e) = unsafe { sys::cuGraphLaunch(g.exec, self.stream.cu_stream()).result() } {
            self.fail(format!("launching a decode graph: {e:?}"));
            return None;
        }
        Some(self.read(&out.buf, out.len))
    }
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Tensor = CudaTensor;
    type Index = CudaIndex;
    type Cache = CudaCache;
    type Expert = expert::GpuExpert;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn emulated(&self) -> bool {
        self.is_emulator()
    }

    /// The emulator's device memory is host memory, and its allocations abort like
    /// any other when it runs out; a GPU's fail as errors.
    fn memory_available(&self) -> Option<usize> {
        self.is_emulator().then(crate::backend::host_memory_available).flatten()
    }

    fn step_tokens(
        &self,
        graph: Option<(usize, usize)>,
        mut f: impl FnMut() -> CudaIndex + Send,
    ) -> Result<Vec<u32>> {
        // The same no-reuse rule in eager steps too, so that the eager warm-up step
        // fills the pool with exactly what a capture will take.
        let _hold = self.pool.hold();
        if let Some(key) = graph.filter(|_| self.graphs_on.load(Ordering::Relaxed)) {
            if let Some(tokens) = self.graph_step(key, &mut f) {
                self.check()?;
                return Ok(tokens);
            }
            self.check()?;
        }
        let t = f();
        let tokens = self.read_index(&t);
        self.check()?;
        Ok(tokens)
    }

    fn check(&self) -> Result<()> {
        match lock(&self.error).clone() {
            Some(e) => Err(Error::Device(format!("{} ({}): {e}", self.device_name, "CUDA"))),
            None => Ok(()),
        }
    }

    fn push_range(&self, name: &str) {
        let Ok(c) = std::ffi::CString::new(name) else { return };
        // SAFETY: the library is present (checked at startup); c is NUL-terminated.
        unsafe {
            match self.nvtx {
                Nvtx::Library => {
                    cudarc::nvtx::sys::nvtxRangePushA(c.as_ptr());
                }
                Nvtx::Emulator(push, _) => {
                    push(c.as_ptr());
                }
                Nvtx::None => {}
            }
        }
    }

    fn synchronize(&self) -> Result<()> {
        CudaBackend::synchronize(self)
    }

    fn profiler_capture(&self, on: bool) -> Result<()> {
        if !on {
            self.synchronize()?;
        }
        self.bind();
        // SAFETY: no arguments; the context is bound to this thread.
        let r = unsafe {
            if on {
                sys::cuProfilerStart()
            } else {
                sys::cuProfilerStop()
            }
        };
        r.result().map_err(|e| driver_err("cuProfilerStart/Stop", e))
    }

    fn pop_range(&self) {
        // SAFETY: as push_range.
        unsafe {
            match self.nvtx {
                Nvtx::Library => {
                    cudarc::nvtx::sys::nvtxRangePop();
                }
                Nvtx::Emulator(_, pop) => {
                    pop();
                }
                Nvtx::None => {}
            }
        }
    }

    fn upload(&self, t: &HostTensor) -> Result<CudaWeight> {
        let (rows, cols) = match t.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            s => return Err(Error::tensor(&t.name, format!("expected 1 or 2 dimensions, got {s:?}"))),
        };
        // Matrices go to bf16 (what the GEMMs read), vectors to f32; quantized
        // matrices keep their stored bytes, part after part (kernels/quant.cu reads them).
        let (bytes, quant): (Vec<u8>, Vec<quant::QuantSlice>) = match (&t.data, rows > 1) {
            (HostData::Bf16(v), true) => (bytemuck::cast_slice(v).to_vec(), Vec::new()),
            (HostData::F32(v), true) => (
                v.iter().flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes()).collect(),
                Vec::new(),
            ),
            (HostData::Quant(q), true) => {
                quant::layout(q, rows, cols).map_err(|e| Error::tensor(&t.name, e))?
            }
            (_, false) => (bytemuck::cast_slice(&t.to_f32()).to_vec(), Vec::new()),
        };
        let buf = self.owned(bytes.len())?;
        self.upload_now(buf.ptr, &bytes);
        self.synchronize().map_err(|e| Error::tensor(&t.name, format!("upload failed: {e}")))?;
        Ok(CudaWeight { rows, cols, buf, quant })
    }

    fn tensor(&self, len: usize) -> CudaTensor {
        let buf = self.pooled(len * 4);
        self.zero(&buf);
        CudaTensor { buf, len }
    }

    fn scratch(&self, len: usize) -> CudaTensor {
        CudaTensor { buf: self.pooled(len * 4), len }
    }

    fn tensor_from(&self, data: &[f32]) -> CudaTensor {
        let buf = self.pooled(data.len() * 4);
        self.write(&buf, bytemuck::cast_slice(data));
        CudaTensor { buf, len: data.len() }
    }

    fn index(&self, data: &[u32]) -> CudaIndex {
        let buf = self.pooled(data.len() * 4);
        self.write(&buf, bytemuck::cast_slice(data));
        CudaIndex { buf, len: data.len() }
    }

    fn cache(&self, len: usize) -> CudaCache {
        let buf = match self.owned(len * 2) {
            Ok(b) => b,
            Err(e) => {
                self.fail(e.to_string());
                DevBuf { ptr: 0, bytes: 0, pool: None }
            }
        };
        self.zero(&buf);
        CudaCache { buf, len }
    }

    fn to_host(&self, t: &CudaTensor) -> Vec<f32> {
        self.read(&t.buf, t.len)
    }

    fn read_index(&self, t: &CudaIndex) -> Vec<u32> {
        self.read(&t.buf, t.len)
    }

    fn cache_to_host(&self, t: &CudaCache) -> Vec<f32> {
        self.read::<u16>(&t.buf, t.len).into_iter().map(|b| f32::from_bits((b as u32) << 16)).collect()
    }

    fn embed(&self, out: &mut CudaTensor, table: &CudaWeight, ids: &CudaIndex, dim: usize) {
        if table.is_quant() {
            return quant::embed(self, out, table, ids, dim);
        }
        embed::embed(self, out, table, ids, dim)
    }

    fn rmsnorm(&self, out: &mut CudaTensor, x: &CudaTensor, w: &CudaWeight, dim: usize, eps: f32) {
        rmsnorm::rmsnorm(self, out, x, w, dim, eps)
    }

    fn matmul(
        &self,
        out: &mut CudaTensor,
        x: &CudaTensor,
        w: &CudaWeight,
        bias: Option<&CudaWeight>,
        m: usize,
    ) {
        if w.is_quant() {
            return quant::matmul(self, out, x, w, bias, m, false);
        }
        gemm::matmul(self, out, x, w, bias, m)
    }

    fn matmul_add(
        &self,
        residual: &mut CudaTensor,
        _: &mut CudaTensor,
        x: &CudaTensor,
        w: &CudaWeight,
        m: usize,
    ) {
        if w.is_quant() {
            return quant::matmul(self, residual, x, w, None, m, true);
        }
        gemm::matmul_add(self, residual, x, w, m)
    }

    fn rmsnorm_matmul(
        &self,
        out: &mut CudaTensor,
        xn: &mut CudaTensor,
        x: &CudaTensor,
        norm: &CudaWeight,
        eps: f32,
        w: &CudaWeight,
        bias: Option<&CudaWeight>,
        dim: usize,
        m: usize,
    ) {
        if w.is_quant() || w.cols != dim || !gemm::fuses_on_load(m, dim) {
            self.rmsnorm(xn, x, norm, dim, eps);
            return self.matmul(out, xn, w, bias, m);
        }
        gemm::rmsnorm_matmul(self, out, x, norm, eps, w, bias, m)
    }

    fn rope(&self, qkv: &mut CudaTensor, positions: &CudaIndex, shape: AttnShape, theta: f32) {
        rope::rope(self, qkv, positions, shape, theta)
    }

    fn kv_write(
        &self,
        k_cache: &mut CudaCache,
        v_cache: &mut CudaCache,
        qkv: &CudaTensor,
        plan: &AttnPlan<CudaIndex>,
        shape: AttnShape,
    ) {
        kv::kv_write(self, k_cache, v_cache, qkv, plan, shape)
    }

    fn rope_kv_write(
        &self,
        qkv: &mut CudaTensor,
        k_cache: &mut CudaCache,
        v_cache: &mut CudaCache,
        plan: &AttnPlan<CudaIndex>,
        shape: AttnShape,
        theta: f32,
    ) {
        rope::rope_kv_write(self, qkv, k_cache, v_cache, plan, shape, theta)
    }

    fn attention(
        &self,
        out: &mut CudaTensor,
        qkv: &CudaTensor,
        k_cache: &CudaCache,
        v_cache: &CudaCache,
        plan: &AttnPlan<CudaIndex>,
        shape: AttnShape,
    ) {
        attention::attention(self, out, qkv, k_cache, v_cache, plan, shape)
    }

    fn rope_kv_attention(
        &self,
        out: &mut CudaTensor,
        qkv: &mut CudaTensor,
        k_cache: &mut CudaCache,
        v_cache: &mut CudaCache,
        plan: &AttnPlan<CudaIndex>,
        shape: AttnShape,
        theta: f32,
    ) {
        attention::rope_kv_attention(self, out, qkv, k_cache, v_cache, plan, shape, theta)
    }

    fn swiglu(&self, out: &mut CudaTensor, gate_up: &CudaTensor, inter: usize) {
        mlp::swiglu(self, out, gate_up, inter)
    }

    fn swiglu_matmul_add(
        &self,
        residual: &mut CudaTensor,
        scratch: &mut CudaTensor,
        act: &mut CudaTensor,
        gate_up: &CudaTensor,
        w: &CudaWeight,
        inter: usize,
        m: usize,
    ) {
        if w.is_quant() || w.cols != inter || !gemm::fuses_on_load(m, inter) {
            self.swiglu(act, gate_up, inter);
            return self.matmul_add(residual, scratch, act, w, m);
        }
        gemm::swiglu_matmul_add(self, residual, gate_up, w, m)
    }

    fn gather_rows(&self, out: &mut CudaTensor, x: &CudaTensor, rows: &CudaIndex, dim: usize) {
        embed::gather_rows(self, out, x, rows, dim)
    }

    fn gate(
        &self,
        probs: &mut CudaTensor,
        x: &CudaTensor,
        layers: &[GateLayer<'_, CudaTensor>],
        softmax: bool,
    ) {
        let (first, last) = (&layers[0], &layers[layers.len() - 1]);
        let w = router::GateWeights {
            w1: first.w,
            b1: first.b,
            second: (layers.len() == 2).then(|| (layers[1].w, layers[1].b)),
        };
        router::router_gate(self, probs, x, &w, first.inputs, first.outputs, last.outputs, softmax)
    }

    fn prepare_expert(&self, e: &Expert) -> Result<expert::GpuExpert> {
        expert::GpuExpert::upload(self, e)
    }

    fn run_expert(
        &self,
        prepared: &expert::GpuExpert,
        _e: &Expert,
        inputs: &[f64],
        rows: usize,
    ) -> Result<Vec<RowResult>> {
        prepared.run(self, inputs, rows)
    }

    fn sample(&self, out: &mut CudaIndex, logits: &CudaTensor, params: &CudaTensor, vocab: usize) {
        sampling::sample(self, out, logits, params, vocab)
    }
}
