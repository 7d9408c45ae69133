//! The C ABI declared in include/pimoe.h: opaque handles over `Engine` and `Scheduler`,
//! status codes with a per-thread message, and events whose strings and arrays the
//! session owns until the next call. This is the only file with `extern "C"` and raw
//! pointers.
//!
//! Every entry point runs its body under `catch_unwind`: a panic is a bug in pimoe, and
//! unwinding into C is undefined behaviour, so it becomes `PIMOE_ERR_INTERNAL` instead.
//! A session whose step failed or panicked is left in an unknown state, so it is marked
//! broken and refuses every later call but its free.
//!
//! Enum arguments arrive as `c_int` and are checked, because a C enum may hold any
//! value and a Rust enum must not; enums only go out as `#[repr(i32)]` types.

#![deny(unsafe_op_in_unsafe_fn)]

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::Backend;
use crate::device::{self, DeviceChoice, Opened};
use crate::engine::{Engine, Finish, Prompt, Request};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::scheduler::{Event, Provenance, RequestId, Scheduler, SchedulerConfig, Stats};

/// Bumped whenever a declaration in include/pimoe.h changes incompatibly; the header's
/// `PIMOE_ABI_VERSION` must equal it.
pub const ABI_VERSION: u32 = 2;

/// `max_tokens` of `pimoe_request_default`, as the CLI's `--max-tokens`.
const DEFAULT_MAX_TOKENS: u32 = 128;

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Argument = 1,
    Io = 2,
    Model = 3,
    Request = 4,
    Device = 5,
    Session = 6,
    Internal = 7,
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Idle = 0,
    Token = 1,
    Note = 2,
    Finished = 3,
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishCode {
    None = 0,
    Stop = 1,
    Length = 2,
    Context = 3,
    ExpertFailed = 4,
    NonFinite = 5,
}

/// `pimoe_request`.
#[repr(C)]
pub struct CRequest {
    pub prompt: *const c_char,
    pub system: *const c_char,
    pub chat: c_int,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
}

/// `pimoe_limits`.
#[repr(C)]
pub struct CLimits {
    pub max_step_tokens: u32,
    pub max_running: u32,
    pub kv_tokens: u32,
}

/// `pimoe_stats`.
#[repr(C)]
pub struct CStats {
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub injected_tokens: u64,
    pub expert_calls: u64,
    pub expert_failures: u64,
    pub processed_tokens: u64,
    pub first_token_secs: f64,
    pub total_secs: f64,
}

/// `pimoe_event`: the pointers lead into the session's `Held` event.
#[repr(C)]
pub struct CEvent {
    pub kind: EventKind,
    pub request: u64,
    pub token: u32,
    pub text: *const c_char,
    pub text_len: usize,
    pub expert: *const c_char,
    pub inputs: *const f64,
    pub inputs_len: usize,
    pub outputs: *const f64,
    pub outputs_len: usize,
    pub failed: c_int,
    pub finish: FinishCode,
    pub stats: CStats,
}

/// Why a call failed: its status and the message `pimoe_last_error` returns.
struct Failure {
    status: Status,
    message: String,
}

type Outcome<T = ()> = std::result::Result<T, Failure>;

impl Failure {
    fn argument(message: impl Into<String>) -> Self {
        Failure { status: Status::Argument, message: message.into() }
    }

    fn null(what: &str) -> Self {
        Failure::argument(format!("{what} is NULL"))
    }

    fn panic(payload: Box<dyn Any + Send>) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Failure { status: Status::Internal, message: format!("internal error (a bug in pimoe): {what}") }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        // No wildcard: a new error variant must choose its status here.
        let status = match &e {
            Error::Io { .. } | Error::External(_) => Status::Io,
            Error::Format { .. } | Error::Config { .. } | Error::Tensor { .. } | Error::Tokenizer(_) => {
                Status::Model
            }
            Error::Request(_) => Status::Request,
            Error::Device(_) => Status::Device,
        };
        Failure { status, message: e.to_string() }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A C string of `s`; an interior NUL (a model's text may hold one) is written `\0`.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// Runs an entry point's body: its failure (or panic) sets this thread's last error
/// and becomes the status the caller gets.
fn guard(body: impl FnOnce() -> Outcome) -> Status {
    // AssertUnwindSafe: after a panic nothing of the body's state is used again, except
    // a session's, and `with_session` marks that one broken.
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(Failure::panic(p)));
    match outcome {
        Ok(()) => Status::Ok,
        Err(f) => {
            let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c_string(&f.message));
            f.status
        }
    }
}

/// A required input string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid for the call.
unsafe fn utf8<'a>(p: *const c_char, what: &str) -> Outcome<&'a str> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string live for the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| Failure::argument(format!("{what} is not valid UTF-8 (at byte {})", e.valid_up_to())))
}

/// An output slot, cleared first so that a caller never reads an old handle after a failure.
///
/// # Safety
/// `out` is NULL or points to writable memory for one `*mut T`.
unsafe fn out_slot<'a, T>(out: *mut *mut T) -> Outcome<&'a mut *mut T> {
    // SAFETY: the caller promises `out` is NULL or valid for writes; as_mut checks NULL.
    let slot = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("the output pointer"))?;
    *slot = ptr::null_mut();
    Ok(slot)
}

// ---------------------------------------------------------------------------------------
// Library

#[no_mangle]
pub extern "C" fn pimoe_abi_version() -> u32 {
    ABI_VERSION
}

#[no_mangle]
pub extern "C" fn pimoe_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn pimoe_status_name(status: c_int) -> *const c_char {
    let name = match status {
        0 => c"PIMOE_OK",
        1 => c"PIMOE_ERR_ARGUMENT",
        2 => c"PIMOE_ERR_IO",
        3 => c"PIMOE_ERR_MODEL",
        4 => c"PIMOE_ERR_REQUEST",
        5 => c"PIMOE_ERR_DEVICE",
        6 => c"PIMOE_ERR_SESSION",
        7 => c"PIMOE_ERR_INTERNAL",
        _ => c"PIMOE_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

#[no_mangle]
pub extern "C" fn pimoe_last_error() -> *const c_char {
    // The CString's buffer stays where it is until this thread's next failure replaces it.
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

// ---------------------------------------------------------------------------------------
// Engine

/// The engine on whichever backend `device::open` gave.
#[allow(clippy::large_enum_variant)] // one per loaded model, behind an Arc
enum AnyEngine {
    Cpu(Engine<CpuBackend>),
    Cuda(Engine<CudaBackend>),
}

/// `pimoe_engine`. Sessions hold their own reference to the engine, so freeing the
/// handle first is allowed.
pub struct EngineHandle {
    engine: Arc<AnyEngine>,
    /// The line the CLI prints about the device.
    device: CString,
}

/// # Safety
/// `path` and `out` as in `pimoe_engine_load_model` (include/pimoe.h).
unsafe fn load(path: *const c_char, device: c_int, out: *mut *mut EngineHandle, manifest: bool) -> Status {
    guard(|| {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_slot(out) }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (header contract).
        let path = Path::new(unsafe { utf8(path, "path") }?);
        let choice = match device {
            0 => DeviceChoice::Auto,
            1 => DeviceChoice::Cpu,
            2 => DeviceChoice::Cuda,
            3 => DeviceChoice::Emu,
            d => {
                return Err(Failure::argument(format!(
                    "device {d} is none of PIMOE_DEVICE_AUTO (0), PIMOE_DEVICE_CPU (1), PIMOE_DEVICE_CUDA (2), PIMOE_DEVICE_EMU (3)"
                )))
            }
        };
        let (opened, note) = device::open(choice)?;
        let engine = match opened {
            Opened::Cpu(b) => AnyEngine::Cpu(load_on(b, path, manifest)?),
            Opened::Cuda(b) => AnyEngine::Cuda(load_on(*b, path, manifest)?),
        };
        let line = note.unwrap_or_else(|| match &engine {
            AnyEngine::Cpu(_) => "device: cpu".into(),
            AnyEngine::Cuda(e) => format!("device: cuda ({})", e.backend.device_name),
        });
        let handle = EngineHandle { engine: Arc::new(engine), device: c_string(&line) };
        *out = Box::into_raw(Box::new(handle));
        Ok(())
    })
}

fn load_on<B: Backend>(backend: B, path: &Path, manifest: bool) -> Result<Engine<B>> {
    if manifest {
        Engine::load_manifest(backend, path)
    } else {
        Engine::load(backend, path)
    }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_engine_load_model(
    dir: *const c_char,
    device: c_int,
    out: *mut *mut EngineHandle,
) -> Status {
    // SAFETY: the same contract, passed on.
    unsafe { load(dir, device, out, false) }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_engine_load_manifest(
    path: *const c_char,
    device: c_int,
    out: *mut *mut EngineHandle,
) -> Status {
    // SAFETY: the same contract, passed on.
    unsafe { load(path, device, out, true) }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_engine_device(engine: *const EngineHandle, out: *mut *const c_char) -> Status {
    guard(|| {
        // SAFETY: `engine` is NULL or a live handle from pimoe_engine_load_* (header contract).
        let engine = unsafe { engine.as_ref() }.ok_or_else(|| Failure::null("engine"))?;
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("the output pointer"))?;
        *out = engine.device.as_ptr();
        Ok(())
    })
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_engine_free(engine: *mut EngineHandle) {
    if !engine.is_null() {
        // SAFETY: a non-NULL `engine` came from Box::into_raw in `load` and is freed once.
        let handle = unsafe { Box::from_raw(engine) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(handle)));
    }
}

// ---------------------------------------------------------------------------------------
// Session

/// What a session needs of a scheduler, whatever its backend.
trait Stepper: Send {
    fn submit(&mut self, req: &Request) -> Result<RequestId>;
    fn step(&mut self) -> Result<Vec<Event>>;
    fn cancel(&mut self, id: RequestId) -> bool;
    fn is_idle(&self) -> bool;
}

impl<B: Backend> Stepper for Scheduler<'_, B> {
    fn submit(&mut self, req: &Request) -> Result<RequestId> {
        Scheduler::submit(self, req)
    }
    fn step(&mut self) -> Result<Vec<Event>> {
        Scheduler::step(self)
    }
    fn cancel(&mut self, id: RequestId) -> bool {
        Scheduler::cancel(self, id)
    }
    fn is_idle(&self) -> bool {
        Scheduler::is_idle(self)
    }
}

// The header lets sessions of one (CPU) engine run on different threads at once and
// lets any handle move between threads; this fails to compile if that stops being true.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AnyEngine>();
};

/// `pimoe_session`.
pub struct SessionHandle {
    /// Borrows `*_engine` for 'static, which holds because it is declared (and so
    /// dropped) before `_engine`, whose Arc keeps the engine alive and unmoved.
    sched: Box<dyn Stepper>,
    _engine: Arc<AnyEngine>,
    /// Events of the last step not yet handed out.
    pending: VecDeque<Event>,
    /// The event handed out last, which its `pimoe_event` points into.
    held: Option<Held>,
    /// Why the session stopped, once a step failed or panicked.
    broken: Option<String>,
}

/// An event with its text and expert name as NUL-terminated bytes.
struct Held {
    event: Event,
    text: Vec<u8>,
    expert: Vec<u8>,
}

/// Runs a body on a live session: a panic inside marks the session broken.
///
/// # Safety
/// `s` is NULL or a live handle from `pimoe_session_new`, used by no other thread.
unsafe fn with_session(s: *mut SessionHandle, body: impl FnOnce(&mut SessionHandle) -> Outcome) -> Status {
    guard(|| {
        // SAFETY: NULL or live and not shared during the call (header contract).
        let s = unsafe { s.as_mut() }.ok_or_else(|| Failure::null("session"))?;
        if let Some(why) = &s.broken {
            return Err(Failure {
                status: Status::Session,
                message: format!("the session stopped after an earlier error ({why}); free it"),
            });
        }
        catch_unwind(AssertUnwindSafe(|| body(s))).unwrap_or_else(|p| {
            let f = Failure::panic(p);
            s.broken = Some(f.message.clone());
            Err(f)
        })
    })
}

#[no_mangle]
pub extern "C" fn pimoe_limits_default() -> CLimits {
    let d = SchedulerConfig::default();
    let c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    CLimits {
        max_step_tokens: c(d.max_step_tokens),
        max_running: c(d.max_running),
        kv_tokens: c(d.kv_tokens),
    }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_session_new(
    engine: *const EngineHandle,
    limits: *const CLimits,
    out: *mut *mut SessionHandle,
) -> Status {
    guard(|| {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_slot(out) }?;
        // SAFETY: `engine` is NULL or a live handle (header contract).
        let handle = unsafe { engine.as_ref() }.ok_or_else(|| Failure::null("engine"))?;
        // SAFETY: `limits` is NULL (the defaults) or points to a pimoe_limits.
        let cfg = match unsafe { limits.as_ref() } {
            None => SchedulerConfig::default(),
            Some(l) => SchedulerConfig {
                max_step_tokens: l.max_step_tokens as usize,
                max_running: l.max_running as usize,
                kv_tokens: l.kv_tokens as usize,
            },
        };
        let engine = handle.engine.clone();
        // SAFETY: the Arc stored beside the scheduler in the SessionHandle keeps the
        // engine alive at this address for as long as the scheduler, which is dropped
        // first (field order), and no one mutates an engine once it is shared.
        let shared: &'static AnyEngine = unsafe { &*Arc::as_ptr(&engine) };
        let sched: Box<dyn Stepper> = match shared {
            AnyEngine::Cpu(e) => Box::new(Scheduler::new(e, cfg)?),
            AnyEngine::Cuda(e) => Box::new(Scheduler::new(e, cfg)?),
        };
        let session =
            SessionHandle { sched, _engine: engine, pending: VecDeque::new(), held: None, broken: None };
        *out = Box::into_raw(Box::new(session));
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn pimoe_request_default() -> CRequest {
    let s = SamplingParams::default();
    CRequest {
        prompt: ptr::null(),
        system: ptr::null(),
        chat: 0,
        max_tokens: DEFAULT_MAX_TOKENS,
        temperature: s.temperature,
        top_k: u32::try_from(s.top_k).unwrap_or(u32::MAX),
        top_p: s.top_p,
        seed: s.seed,
    }
}

/// # Safety
/// `r`'s strings are NULL or NUL-terminated and live for the call.
unsafe fn request(r: &CRequest) -> Outcome<Request> {
    // SAFETY: passed on from the caller.
    let prompt = unsafe { utf8(r.prompt, "request.prompt") }?.to_string();
    let system = if r.system.is_null() {
        None
    } else {
        // SAFETY: passed on from the caller.
        Some(unsafe { utf8(r.system, "request.system") }?.to_string())
    };
    if r.max_tokens == 0 {
        return Err(Failure { status: Status::Request, message: "max_tokens must be at least 1".into() });
    }
    let prompt = if r.chat != 0 || system.is_some() {
        Prompt::Chat { system, user: prompt }
    } else {
        Prompt::Raw(prompt)
    };
    let sampling =
        SamplingParams { temperature: r.temperature, top_k: r.top_k as usize, top_p: r.top_p, seed: r.seed };
    Ok(Request { prompt, max_tokens: r.max_tokens as usize, sampling })
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_session_submit(
    session: *mut SessionHandle,
    req: *const CRequest,
    id: *mut u64,
) -> Status {
    let body = |s: &mut SessionHandle| {
        // SAFETY: `req` is NULL or points to a pimoe_request whose strings are NULL
        // or NUL-terminated (header contract); every bit pattern of it is valid.
        let req = unsafe { req.as_ref() }.ok_or_else(|| Failure::null("request"))?;
        // SAFETY: `id` is NULL or writable (header contract).
        let id = unsafe { id.as_mut() }.ok_or_else(|| Failure::null("the id pointer"))?;
        // SAFETY: as above.
        *id = s.sched.submit(&unsafe { request(req) }?)?;
        Ok(())
    };
    // SAFETY: `session` is NULL or live and unshared (header contract).
    unsafe { with_session(session, body) }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_session_next(session: *mut SessionHandle, out: *mut CEvent) -> Status {
    let body = |s: &mut SessionHandle| {
        if out.is_null() {
            return Err(Failure::null("the event pointer"));
        }
        s.held = None;
        let event = loop {
            if let Some(ev) = s.pending.pop_front() {
                break Some(ev);
            }
            if s.sched.is_idle() {
                break None;
            }
            match s.sched.step() {
                Ok(events) => s.pending.extend(events),
                Err(e) => {
                    let f = Failure::from(e);
                    s.broken = Some(f.message.clone());
                    return Err(f);
                }
            }
        };
        let c = match event {
            None => idle_event(),
            Some(event) => c_event(s.held.insert(hold(event))),
        };
        // SAFETY: `out` is non-NULL and points to a writable pimoe_event (header contract).
        unsafe { out.write(c) };
        Ok(())
    };
    // SAFETY: `session` is NULL or live and unshared (header contract).
    unsafe { with_session(session, body) }
}

fn hold(event: Event) -> Held {
    let nul_terminated = |s: &str| s.bytes().chain([0]).collect::<Vec<u8>>();
    let (text, expert) = match &event {
        Event::Token { text, provenance, .. } => match &**provenance {
            Provenance::Llm => (nul_terminated(text), Vec::new()),
            Provenance::Expert { expert, .. } | Provenance::Failed { expert, .. } => {
                (nul_terminated(text), nul_terminated(expert))
            }
        },
        Event::Note { message, .. } => (nul_terminated(message), Vec::new()),
        Event::Finished { .. } => (Vec::new(), Vec::new()),
    };
    Held { event, text, expert }
}

fn idle_event() -> CEvent {
    CEvent {
        kind: EventKind::Idle,
        request: 0,
        token: 0,
        text: ptr::null(),
        text_len: 0,
        expert: ptr::null(),
        inputs: ptr::null(),
        inputs_len: 0,
        outputs: ptr::null(),
        outputs_len: 0,
        failed: 0,
        finish: FinishCode::None,
        stats: c_stats(&Stats::default()),
    }
}

/// The C view of a held event; its pointers stay valid while `h` does.
fn c_event(h: &Held) -> CEvent {
    let bytes = |b: &[u8]| if b.is_empty() { ptr::null() } else { b.as_ptr().cast::<c_char>() };
    let values = |v: &[f64]| (if v.is_empty() { ptr::null() } else { v.as_ptr() }, v.len());
    let mut c = CEvent { text: bytes(&h.text), text_len: h.text.len().saturating_sub(1), ..idle_event() };
    match &h.event {
        Event::Token { id, token, provenance, .. } => {
            c.kind = EventKind::Token;
            c.request = *id;
            c.token = *token;
            match &**provenance {
                Provenance::Llm => {}
                Provenance::Expert { inputs, outputs, .. } => {
                    c.expert = bytes(&h.expert);
                    (c.inputs, c.inputs_len) = values(inputs);
                    (c.outputs, c.outputs_len) = values(outputs);
                }
                Provenance::Failed { .. } => {
                    c.expert = bytes(&h.expert);
                    c.failed = 1;
                }
            }
        }
        Event::Note { id, .. } => {
            c.kind = EventKind::Note;
            c.request = *id;
        }
        Event::Finished { id, finish, stats } => {
            c.kind = EventKind::Finished;
            c.request = *id;
            c.finish = match finish {
                Finish::Stop => FinishCode::Stop,
                Finish::Length => FinishCode::Length,
                Finish::Context => FinishCode::Context,
                Finish::ExpertFailed => FinishCode::ExpertFailed,
                Finish::NonFinite => FinishCode::NonFinite,
            };
            c.stats = c_stats(stats);
        }
    }
    c
}

fn c_stats(s: &Stats) -> CStats {
    CStats {
        prompt_tokens: s.prompt_tokens as u64,
        generated_tokens: s.generated_tokens as u64,
        injected_tokens: s.injected_tokens as u64,
        expert_calls: s.expert_calls as u64,
        expert_failures: s.expert_failures as u64,
        processed_tokens: s.processed_tokens as u64,
        first_token_secs: s.first_token_secs,
        total_secs: s.total_secs,
    }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_session_cancel(session: *mut SessionHandle, id: u64) -> Status {
    let body = |s: &mut SessionHandle| {
        let live = s.sched.cancel(id);
        // Its events from the last step that were not handed out yet go too, so
        // nothing more of it is seen (its Finished among them, if it just ended).
        let before = s.pending.len();
        s.pending.retain(|ev| request_of(ev) != id);
        if live || s.pending.len() < before {
            Ok(())
        } else {
            Err(Failure::argument(format!(
                "request {id} is not running in this session (finished, cancelled or never submitted)"
            )))
        }
    };
    // SAFETY: `session` is NULL or live and unshared (header contract).
    unsafe { with_session(session, body) }
}

fn request_of(ev: &Event) -> RequestId {
    match ev {
        Event::Token { id, .. } | Event::Note { id, .. } | Event::Finished { id, .. } => *id,
    }
}

/// # Safety
/// See include/pimoe.h.
#[no_mangle]
pub unsafe extern "C" fn pimoe_session_free(session: *mut SessionHandle) {
    if !session.is_null() {
        // SAFETY: a non-NULL `session` came from Box::into_raw in pimoe_session_new and
        // is freed once (header contract).
        let handle = unsafe { Box::from_raw(session) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(handle)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: pimoe_last_error returns a NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(pimoe_last_error()) }.to_str().unwrap().to_string()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let status = guard(|| panic!("boom {}", 42));
        assert_eq!(status, Status::Internal);
        assert_eq!(last_error(), "internal error (a bug in pimoe): boom 42");
    }

    #[test]
    fn a_panic_in_a_session_breaks_it() {
        // A session whose scheduler panics on submit: the engine is only there to be held.
        struct Never;
        impl Stepper for Never {
            fn submit(&mut self, _: &Request) -> Result<RequestId> {
                panic!("submit")
            }
            fn step(&mut self) -> Result<Vec<Event>> {
                unreachable!()
            }
            fn cancel(&mut self, _: RequestId) -> bool {
                unreachable!()
            }
            fn is_idle(&self) -> bool {
                true
            }
        }
        let engine = Arc::new(AnyEngine::Cpu(
            Engine::load(
                CpuBackend,
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama"),
            )
            .unwrap(),
        ));
        let session = Box::into_raw(Box::new(SessionHandle {
            sched: Box::new(Never),
            _engine: engine,
            pending: VecDeque::new(),
            held: None,
            broken: None,
        }));
        let mut req = pimoe_request_default();
        req.prompt = c"hi".as_ptr();
        let mut id = 0;
        // SAFETY: a live session, a valid request and id.
        let status = unsafe { pimoe_session_submit(session, &req, &mut id) };
        assert_eq!(status, Status::Internal);
        assert!(last_error().contains("submit"), "{}", last_error());
        // SAFETY: as above.
        let again = unsafe { pimoe_session_cancel(session, 0) };
        assert_eq!(again, Status::Session);
        assert!(last_error().contains("stopped after an earlier error"), "{}", last_error());
        // SAFETY: freed once.
        unsafe { pimoe_session_free(session) };
    }
}
