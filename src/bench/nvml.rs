//! GPU energy from NVML's total-energy counter (millijoules since the driver was
//! loaded), read through libnvidia-ml loaded at run time, so that nothing here is
//! needed to build or to run on a machine without a GPU.
//!
//! The counter moves in steps of about 10 ms of power integration, so a figure is
//! only meaningful over a span far longer than that: callers measure over at least
//! `MIN_SPAN_SECS` and divide.

use std::ffi::{c_char, c_int, c_ulonglong, c_void};

/// The shortest span an energy difference is taken over: 100 counter updates.
pub const MIN_SPAN_SECS: f64 = 1.0;

type Device = *mut c_void;
type Ret = c_int;

pub struct Nvml {
    // Kept alive for the function pointers below.
    _lib: libloading::Library,
    shutdown: unsafe extern "C" fn() -> Ret,
    energy: unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret,
    device: Device,
}

impl Nvml {
    /// The NVML device with PCI bus id `bus` ("0000:1b:00.0", as the CUDA driver
    /// gives it), so that the counter read is that of the GPU the work runs on even
    /// when CUDA_VISIBLE_DEVICES renumbers them. Err says why there is no counter.
    pub fn open(bus: &str) -> Result<Nvml, String> {
        // SAFETY: loading a system library whose initialisers have no preconditions.
        let lib = unsafe { libloading::Library::new("libnvidia-ml.so.1") }
            .map_err(|e| format!("libnvidia-ml.so.1 could not be loaded ({e})"))?;
        // SAFETY: the signatures are NVML's (nvml.h, API version 2 entry points).
        unsafe {
            let init: unsafe extern "C" fn() -> Ret = *sym(&lib, b"nvmlInit_v2\0")?;
            let shutdown: unsafe extern "C" fn() -> Ret = *sym(&lib, b"nvmlShutdown\0")?;
            let by_bus: unsafe extern "C" fn(*const c_char, *mut Device) -> Ret =
                *sym(&lib, b"nvmlDeviceGetHandleByPciBusId_v2\0")?;
            let energy: unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret =
                *sym(&lib, b"nvmlDeviceGetTotalEnergyConsumption\0")?;
            check(init(), "nvmlInit_v2")?;
            let fail = |e: String| {
                shutdown();
                e
            };
            let bus_c = std::ffi::CString::new(bus).map_err(|_| fail(format!("PCI bus id {bus:?}")))?;
            let mut device: Device = std::ptr::null_mut();
            check(by_bus(bus_c.as_ptr(), &mut device), "nvmlDeviceGetHandleByPciBusId_v2").map_err(fail)?;
            let nvml = Nvml { _lib: lib, shutdown, energy, device };
            // A GPU older than Volta has no counter: find out now, not mid-run.
            nvml.millijoules()?;
            Ok(nvml)
        }
    }

    /// The counter, in millijoules.
    pub fn millijoules(&self) -> Result<u64, String> {
        let mut mj: c_ulonglong = 0;
        // SAFETY: `device` came from NVML, which stays initialised while self lives.
        check(unsafe { (self.energy)(self.device, &mut mj) }, "nvmlDeviceGetTotalEnergyConsumption")?;
        Ok(mj)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: paired with the successful nvmlInit_v2 in `open`.
        unsafe { (self.shutdown)() };
    }
}

/// # Safety
/// `T` must be the symbol's true type.
unsafe fn sym<'l, T>(lib: &'l libloading::Library, name: &[u8]) -> Result<libloading::Symbol<'l, T>, String> {
    lib.get(name).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&name[..name.len() - 1])))
}

fn check(ret: Ret, what: &str) -> Result<(), String> {
    match ret {
        0 => Ok(()),
        // nvml.h: NVML_ERROR_NOT_SUPPORTED
        3 => Err(format!("{what}: not supported on this GPU")),
        e => Err(format!("{what} returned NVML error {e}")),
    }
}

/// The PCI bus id of CUDA device `ordinal`, as NVML wants it.
pub fn cuda_bus_id(ordinal: usize) -> Result<String, String> {
    use cudarc::driver::{result, sys};
    let dev = result::device::get(ordinal as c_int).map_err(|e| format!("cuDeviceGet: {e:?}"))?;
    let mut buf = [0 as c_char; 32];
    // SAFETY: writes at most buf.len() bytes, NUL-terminated.
    unsafe { sys::cuDeviceGetPCIBusId(buf.as_mut_ptr(), buf.len() as c_int, dev) }
        .result()
        .map_err(|e| format!("cuDeviceGetPCIBusId: {e:?}"))?;
    // SAFETY: NUL-terminated by the driver within buf.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}
