//! Which CUDA driver this process uses: the GPU's libcuda, or the PTX emulator
//! (emu/, a cdylib with the driver API's C ABI). cudarc opens the driver by name
//! once per process; the emulator's soname is `libcuda.so`, so once it is loaded
//! here by path, the dynamic loader hands it to cudarc's `dlopen("libcuda.so")`.
//! The choice is made once: the first CUDA backend fixes it for the process.
//!
//! Environment: `PIMOE_CUDA=emu` makes `--device cuda` (and `CudaBackend::new`) use
//! the emulator; `PIMOE_EMU_LIB` names the emulator library when it is not beside
//! the executable (target/release/deps/libpimoe_emu.so after a build).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// libcuda and a GPU.
    Gpu,
    /// The PTX emulator, on the CPU.
    Emulator,
}

impl DriverKind {
    /// What `PIMOE_CUDA` asks for; the GPU when it is unset.
    pub fn from_env() -> DriverKind {
        match std::env::var("PIMOE_CUDA").as_deref() {
            Ok("emu") | Ok("emulator") => DriverKind::Emulator,
            _ => DriverKind::Gpu,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            DriverKind::Gpu => "GPU driver (libcuda)",
            DriverKind::Emulator => "PTX emulator",
        }
    }
}

static CHOICE: Mutex<Option<DriverKind>> = Mutex::new(None);

/// Whether libcuda can be opened, without binding cudarc to it. Once the emulator
/// is loaded, "libcuda.so" names it (its soname), so a library carrying the
/// emulator's marker symbol does not count.
pub fn gpu_driver_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: opening and closing a shared library and looking a symbol up;
        // libcuda's initialisers are safe to run.
        unsafe { libloading::Library::new(*name) }
            .is_ok_and(|lib| unsafe { lib.get::<unsafe extern "C" fn()>(b"pimoe_emu_last_error\0") }.is_err())
    })
}

/// Selects the driver for this process, loading the emulator when asked. Asking
/// for the other one later is an error that says so.
pub fn select(kind: DriverKind) -> Result<()> {
    let mut choice = CHOICE.lock().unwrap_or_else(|e| e.into_inner());
    select_locked(&mut choice, kind)
}

/// The driver already selected, else the GPU where libcuda loads (and `PIMOE_CUDA`
/// does not ask for the emulator), else the emulator: decided and selected under
/// one lock, because once the emulator is loaded libcuda's soname resolves to it,
/// and a second thread probing in between would see a "GPU driver".
pub fn select_default() -> Result<DriverKind> {
    let mut choice = CHOICE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = *choice {
        return Ok(k);
    }
    let kind = match DriverKind::from_env() {
        DriverKind::Gpu if gpu_driver_present() => DriverKind::Gpu,
        _ => DriverKind::Emulator,
    };
    select_locked(&mut choice, kind)?;
    Ok(kind)
}

fn select_locked(choice: &mut Option<DriverKind>, kind: DriverKind) -> Result<()> {
    match *choice {
        Some(k) if k == kind => return Ok(()),
        Some(k) => {
            return Err(Error::Device(format!(
            "this process already uses the {}; the {} cannot be loaded beside it (choose one per process, \
                 e.g. PIMOE_CUDA=emu before the first CUDA call)",
            k.describe(),
            kind.describe()
        )))
        }
        None => {}
    }
    match kind {
        DriverKind::Gpu => {
            if !gpu_driver_present() {
                return Err(Error::Device(
                    "no CUDA driver found (libcuda could not be loaded); PIMOE_CUDA=emu or --device emu runs the \
                     kernels on the PTX emulator"
                        .into(),
                ));
            }
        }
        DriverKind::Emulator => load_emulator()?,
    }
    *choice = Some(kind);
    Ok(())
}

fn load_emulator() -> Result<()> {
    let candidates = emulator_candidates();
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Error::Device(format!(
            "the PTX emulator library was not found (tried {}); build it with `cargo build --release` or set PIMOE_EMU_LIB",
            tried.join(", ")
        ))
    })?;
    // SAFETY: our own cdylib; its initialisers only set up Rust statics.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| Error::Device(format!("loading the PTX emulator {}: {e}", path.display())))?;
    // SAFETY: looking a symbol up only.
    let marker =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"pimoe_emu_last_error\0") };
    if marker.is_err() {
        return Err(Error::Device(format!("{} is not the pimoe PTX emulator", path.display())));
    }
    // Loaded for the life of the process: cudarc finds it by soname from now on.
    let _ = EMULATOR.set(lib);
    Ok(())
}

/// The emulator library, once loaded.
static EMULATOR: std::sync::OnceLock<libloading::Library> = std::sync::OnceLock::new();

pub type RangePush = unsafe extern "C" fn(*const std::ffi::c_char) -> std::ffi::c_int;
pub type RangePop = unsafe extern "C" fn() -> std::ffi::c_int;

/// The emulator's NVTX range functions: on the emulator, ranges go to its trace
/// (PIMOE_EMU_TRACE) the way they go to Nsight on a GPU.
pub fn emulator_nvtx() -> Option<(RangePush, RangePop)> {
    let lib = EMULATOR.get()?;
    // SAFETY: the emulator exports both with these C signatures (emu/src/driver.rs).
    unsafe {
        let push = lib.get::<RangePush>(b"nvtxRangePushA\0").ok()?;
        let pop = lib.get::<RangePop>(b"nvtxRangePop\0").ok()?;
        Some((*push, *pop))
    }
}

/// Turns the emulator's per-launch counters on (dropping earlier records) or off;
/// None when this process does not run on the emulator.
pub fn emulator_counters(on: bool) -> Option<()> {
    let lib = EMULATOR.get()?;
    // SAFETY: exported by the emulator with this C signature (emu/src/driver.rs).
    unsafe {
        let f = lib
            .get::<unsafe extern "C" fn(std::ffi::c_int) -> std::ffi::c_int>(b"pimoe_emu_counters\0")
            .ok()?;
        f(on as std::ffi::c_int);
    }
    Some(())
}

/// The emulator's counter records since `emulator_counters(true)`: a JSON array
/// with an object per kernel launch and per graph launch.
pub fn emulator_counter_records() -> Option<String> {
    let lib = EMULATOR.get()?;
    // SAFETY: as above; the string is NUL-terminated and valid until the next call,
    // and is copied before this returns.
    unsafe {
        let f = lib
            .get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"pimoe_emu_counter_records\0")
            .ok()?;
        let p = f();
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

const LIB: &str = "libpimoe_emu.so";

fn emulator_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("PIMOE_EMU_LIB") {
        out.push(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.push(d);
    }
    // The library this code is linked into (libpimoe.so, loaded by a C program
    // from anywhere) sits in the same target directory.
    if let Some(d) = own_library_dir() {
        dirs.push(d);
    }
    for d in dirs {
        out.push(d.join(LIB));
        out.push(d.join("deps").join(LIB));
        if let Some(up) = d.parent() {
            out.push(up.join(LIB));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

#[repr(C)]
struct DlInfo {
    fname: *const std::ffi::c_char,
    fbase: *mut std::ffi::c_void,
    sname: *const std::ffi::c_char,
    saddr: *mut std::ffi::c_void,
}

extern "C" {
    fn dladdr(addr: *const std::ffi::c_void, info: *mut DlInfo) -> std::ffi::c_int;
}

fn own_library_dir() -> Option<PathBuf> {
    let mut info = DlInfo {
        fname: std::ptr::null(),
        fbase: std::ptr::null_mut(),
        sname: std::ptr::null(),
        saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr fills `info` for an address inside a loaded object; fname
    // then points at a NUL-terminated path owned by the loader.
    let name = unsafe {
        if dladdr(own_library_dir as *const std::ffi::c_void, &mut info) == 0 || info.fname.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(info.fname).to_string_lossy().into_owned()
    };
    Path::new(&name).parent().map(Path::to_path_buf)
}
