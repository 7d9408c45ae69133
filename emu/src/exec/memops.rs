//! Loads, stores, atomics and asynchronous copies (PTX ISA §9.7.9 data movement,
//! §9.7.9.25 cp.async, §9.7.13 atom), with the checks: bounds and alignment on
//! every state space, initcheck on global and shared memory, racecheck and the
//! cp.async landing rule on shared memory.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::counters::{phase_lanes, Access};
use super::{lanes, AsyncCopy, Block, Core};
use crate::error::{Fault, FaultKind};
use crate::ir::{Exec, Inst, NONE};
use crate::mem::{Alloc, View};

type R = Result<(), Fault>;

pub const GLOBAL: u8 = 0;
pub const SHARED: u8 = 1;
pub const LOCAL: u8 = 2;
pub const PARAM: u8 = 3;

/// Call-site `.param` variables live at this address and above (per lane); the
/// entry's own parameters below it.
pub const CPARAM_BASE: u64 = 0x1000_0000;

fn space_name(sp: u8) -> &'static str {
    match sp {
        GLOBAL => "global",
        SHARED => "shared",
        LOCAL => "local",
        _ => "param",
    }
}

#[inline(always)]
fn aligned(addr: u64, size: usize, sp: u8, lane: usize) -> R {
    if addr % size as u64 != 0 {
        return Err(Fault::at(
            FaultKind::Misaligned,
            lane as u32,
            format!("{size}-byte {} access at {addr:#x} is not {size}-byte aligned", space_name(sp)),
        ));
    }
    Ok(())
}

/// A misaligned global address: named by its allocation, or reported as out of
/// bounds when it is in none (a misaligned null pointer is a null pointer).
#[cold]
fn global_misaligned(mem: &View<'_>, addr: u64, len: usize, lane: usize) -> Fault {
    let mut f = match mem.find(addr, 0) {
        Ok((a, off)) => Fault::new(
            FaultKind::Misaligned,
            format!(
                "{len}-byte global access at {addr:#x}, {off} bytes into {}, is not {len}-byte aligned",
                a.label
            ),
        ),
        Err(f) => f,
    };
    f.lane = Some(lane as u32);
    f
}

fn shared_name(c: &Core<'_>, off: usize) -> String {
    match c.l.prog.shared_vars.iter().find(|(_, o, n)| off >= *o && off < o + n) {
        Some((name, o, _)) => format!("{name}+{}", off - o),
        None => format!("offset {off}"),
    }
}

impl Block {
    /// racecheck / initcheck / cp.async check of a shared read by `warp`.
    fn read_check(&mut self, warp: u32, off: usize, len: usize) -> Result<(), (FaultKind, usize, String)> {
        let (e, e0) = (self.epoch, self.epoch0);
        for (k, s) in self.shadow[off..off + len].iter_mut().enumerate() {
            if s.pending {
                return Err((
                    FaultKind::AsyncCopy,
                    off + k,
                    "is read before the cp.async.wait_group that lands its copy".into(),
                ));
            }
            if s.w_epoch < e0 {
                return Err((
                    FaultKind::Uninitialized,
                    off + k,
                    "is read but this block never wrote it".into(),
                ));
            }
            if s.w_epoch == e && s.w_warp as u32 != warp {
                return Err((
                    FaultKind::Race,
                    off + k,
                    format!("is read by warp {warp} after warp {} wrote it with no barrier between (read-after-write hazard)", s.w_warp),
                ));
            }
            if s.r_epoch != e {
                s.r_epoch = e;
                s.r_mask = 0;
            }
            s.r_mask |= 1 << warp;
        }
        Ok(())
    }

    fn write_check(&mut self, warp: u32, off: usize, len: usize) -> Result<(), (FaultKind, usize, String)> {
        let e = self.epoch;
        for (k, s) in self.shadow[off..off + len].iter_mut().enumerate() {
            if s.pending {
                return Err((
                    FaultKind::AsyncCopy,
                    off + k,
                    "is written while a cp.async copy to it is in flight".into(),
                ));
            }
            if s.w_epoch == e && s.w_warp as u32 != warp {
                return Err((
                    FaultKind::Race,
                    off + k,
                    format!("is written by warp {warp} and by warp {} with no barrier between (write-after-write hazard)", s.w_warp),
                ));
            }
            if s.r_epoch == e && s.r_mask & !(1 << warp) != 0 {
                let other = (s.r_mask & !(1 << warp)).trailing_zeros();
                return Err((
                    FaultKind::Race,
                    off + k,
                    format!("is written by warp {warp} after warp {other} read it with no barrier between (write-after-read hazard)"),
                ));
            }
            s.w_epoch = e;
            s.w_warp = warp as u8;
        }
        Ok(())
    }
}

/// Bounds, alignment and checks of one lane's shared access; returns the offset.
#[inline(always)]
fn shared_at(
    c: &mut Core<'_>,
    addr: u64,
    len: usize,
    align: usize,
    write: bool,
    lane: usize,
) -> Result<usize, Fault> {
    aligned(addr, align, SHARED, lane)?;
    let size = c.b.shared.len();
    if addr.checked_add(len as u64).is_none_or(|e| e > size as u64) {
        return Err(shared_oob(c, addr, len, lane));
    }
    let off = addr as usize;
    if c.l.checks {
        let r = if write { c.b.write_check(c.w.id, off, len) } else { c.b.read_check(c.w.id, off, len) };
        if let Err((kind, at, msg)) = r {
            return Err(Fault::at(kind, lane as u32, format!("shared memory {} {msg}", shared_name(c, at))));
        }
    }
    Ok(off)
}

/// An access past the block's shared memory, naming the variable it ran off.
#[cold]
fn shared_oob(c: &Core<'_>, addr: u64, len: usize, lane: usize) -> Fault {
    let size = c.b.shared.len();
    let (stat, dynamic) = (c.l.prog.shared_static, c.l.dyn_smem);
    let last = c.l.prog.shared_vars.iter().filter(|(_, o, _)| (*o as u64) <= addr).max_by_key(|(_, o, _)| *o);
    let var = match last {
        // An extern (dynamic) variable's size is what the launch gave.
        Some((name, _, n)) if *n > size => {
            format!(", past the end of {name} (dynamic, {dynamic} bytes launched)")
        }
        Some((name, o, n)) => format!(", past the end of {name} ({n} bytes at offset {o})"),
        None => String::new(),
    };
    Fault::at(
        FaultKind::OutOfBounds,
        lane as u32,
        format!(
            "{len}-byte shared access at {addr:#x} is past the block's {size} bytes of shared memory ({stat} static + {dynamic} dynamic){var}"
        ),
    )
}

#[inline(always)]
fn local_at(c: &Core<'_>, addr: u64, len: usize, lane: usize) -> Result<usize, Fault> {
    aligned(addr, len, LOCAL, lane)?;
    let size = c.w.local_bytes;
    if addr.checked_add(len as u64).is_none_or(|e| e > size as u64) {
        return Err(Fault::at(
            FaultKind::OutOfBounds,
            lane as u32,
            format!("{len}-byte local access at {addr:#x} is past the thread's {size} bytes of local memory"),
        ));
    }
    Ok(lane * size + addr as usize)
}

#[inline(always)]
fn load_le(bytes: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(v)
}

/// Reads `N` elements of `SIZE` bytes for one lane from space `SP`.
#[inline(always)]
fn read_lane<const SP: u8, const SIZE: usize, const N: usize>(
    c: &mut Core<'_>,
    addr: u64,
    lane: usize,
) -> Result<[u64; N], Fault> {
    let len = SIZE * N;
    let mut out = [0u64; N];
    match SP {
        GLOBAL => {
            if addr % len as u64 != 0 {
                return Err(global_misaligned(c.l.mem, addr, len, lane));
            }
            let (a, off) = c.l.mem.find(addr, len).map_err(|mut f| {
                f.lane = Some(lane as u32);
                f
            })?;
            if c.l.checks {
                if let Some(at) = a.first_unwritten(off, len) {
                    return Err(Fault::at(
                        FaultKind::Uninitialized,
                        lane as u32,
                        format!(
                            "global load of {len} bytes at {addr:#x} reads byte {at} of {}, never written",
                            a.label
                        ),
                    ));
                }
            }
            let p = a.ptr(off);
            for (k, o) in out.iter_mut().enumerate() {
                // SAFETY: [off, off+len) was checked against the allocation.
                let b = unsafe { std::slice::from_raw_parts(p.add(k * SIZE), SIZE) };
                *o = load_le(b);
            }
        }
        SHARED => {
            let off = shared_at(c, addr, len, len, false, lane)?;
            for (k, o) in out.iter_mut().enumerate() {
                *o = load_le(&c.b.shared[off + k * SIZE..off + (k + 1) * SIZE]);
            }
        }
        LOCAL => {
            let off = local_at(c, addr, len, lane)?;
            for (k, o) in out.iter_mut().enumerate() {
                *o = load_le(&c.w.local[off + k * SIZE..off + (k + 1) * SIZE]);
            }
        }
        _ => {
            aligned(addr, SIZE, SP, lane)?;
            let (buf, off, what): (&[u8], u64, &str) = if addr >= CPARAM_BASE {
                let n = c.w.cparam_bytes;
                (&c.w.cparam[lane * n..(lane + 1) * n], addr - CPARAM_BASE, "call parameters")
            } else {
                (c.l.params, addr, "kernel parameters")
            };
            if off.checked_add(len as u64).is_none_or(|e| e > buf.len() as u64) {
                return Err(Fault::at(
                    FaultKind::OutOfBounds,
                    lane as u32,
                    format!("{len}-byte param access at {addr:#x} is past the {} bytes of {what}", buf.len()),
                ));
            }
            for (k, o) in out.iter_mut().enumerate() {
                *o = load_le(&buf[off as usize + k * SIZE..off as usize + (k + 1) * SIZE]);
            }
        }
    }
    Ok(out)
}

#[inline(always)]
fn write_lane<const SP: u8, const SIZE: usize, const N: usize>(
    c: &mut Core<'_>,
    addr: u64,
    lane: usize,
    v: [u64; N],
) -> R {
    let len = SIZE * N;
    match SP {
        GLOBAL => {
            if addr % len as u64 != 0 {
                return Err(global_misaligned(c.l.mem, addr, len, lane));
            }
            let (a, off) = c.l.mem.find(addr, len).map_err(|mut f| {
                f.lane = Some(lane as u32);
                f
            })?;
            let p = a.ptr(off);
            for (k, x) in v.iter().enumerate() {
                let b = x.to_le_bytes();
                // SAFETY: checked against the allocation above.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(k * SIZE), SIZE) };
            }
            a.mark(off, len);
        }
        SHARED => {
            let off = shared_at(c, addr, len, len, true, lane)?;
            for (k, x) in v.iter().enumerate() {
                c.b.shared[off + k * SIZE..off + (k + 1) * SIZE].copy_from_slice(&x.to_le_bytes()[..SIZE]);
            }
        }
        LOCAL => {
            let off = local_at(c, addr, len, lane)?;
            for (k, x) in v.iter().enumerate() {
                c.w.local[off + k * SIZE..off + (k + 1) * SIZE].copy_from_slice(&x.to_le_bytes()[..SIZE]);
            }
        }
        _ => {
            aligned(addr, SIZE, SP, lane)?;
            if addr < CPARAM_BASE {
                return Err(Fault::at(FaultKind::Invalid, lane as u32, "st.param to a kernel parameter"));
            }
            let n = c.w.cparam_bytes;
            let off = (addr - CPARAM_BASE) as usize;
            if off + len > n {
                return Err(Fault::at(
                    FaultKind::OutOfBounds,
                    lane as u32,
                    format!("{len}-byte param store at {addr:#x} is past the call parameters"),
                ));
            }
            for (k, x) in v.iter().enumerate() {
                let at = lane * n + off + k * SIZE;
                c.w.cparam[at..at + SIZE].copy_from_slice(&x.to_le_bytes()[..SIZE]);
            }
        }
    }
    Ok(())
}

/// Counts one request of `len` bytes per lane at `a[l] + i.imm` for the lanes in `m`
/// (global or shared; other spaces are not counted).
#[inline(never)]
fn count(c: &mut Core<'_>, sp: u8, kind: Access, a: &[u64; 32], i: &Inst, m: u32, len: usize) {
    let Some(t) = c.b.tally.as_deref_mut() else { return };
    let mut addrs = [(0u32, 0u64); 32];
    let mut n = 0;
    for l in lanes(m) {
        addrs[n] = (l as u32, a[l].wrapping_add(i.imm as u64));
        n += 1;
    }
    let addrs = &addrs[..n];
    match sp {
        GLOBAL => t.global(kind, addrs, len),
        SHARED => t.shared(kind, addrs, len, phase_lanes(len), i.line),
        _ => {}
    }
}

/// ld.SPACE{.vN}.type d, [a+imm]; `SIGN` sign-extends sub-word integers.
fn ld<const SP: u8, const SIZE: usize, const N: usize, const SIGN: bool>(
    c: &mut Core<'_>,
    i: &Inst,
    m: u32,
) -> R {
    let a = *c.w.r(i.s[0]);
    if c.b.tally.is_some() {
        count(c, SP, Access::Load, &a, i, m, SIZE * N);
    }
    let mut hit: Option<(&Alloc, u64)> = None;
    for l in lanes(m) {
        let addr = a[l].wrapping_add(i.imm as u64);
        let v = match SP {
            GLOBAL => match fast_global::<SIZE, N>(c, &mut hit, addr, false) {
                Some(v) => v,
                None => read_lane::<SP, SIZE, N>(c, addr, l)?,
            },
            _ => read_lane::<SP, SIZE, N>(c, addr, l)?,
        };
        for k in 0..N {
            if i.d[k] != NONE {
                let x = if SIGN { super::alu::sx(v[k], (SIZE * 8) as u8) as u64 } else { v[k] };
                c.w.rw(i.d[k])[l] = x;
            }
        }
    }
    Ok(())
}

/// A global access the fast way: aligned and inside the allocation the previous
/// lane used (a warp's accesses usually are), for a load its bytes written; the
/// loaded values, or zeros for a store (`write`). None sends the lane down the full
/// path, which finds its allocation or reports exactly what is wrong.
#[inline(always)]
fn fast_global<'m, const SIZE: usize, const N: usize>(
    c: &Core<'m>,
    hit: &mut Option<(&'m Alloc, u64)>,
    addr: u64,
    write: bool,
) -> Option<[u64; N]> {
    let len = SIZE * N;
    if addr % len as u64 != 0 {
        return None;
    }
    let (a, base) = match *hit {
        Some(h) => h,
        None => {
            let (a, off) = c.l.mem.find(addr, len).ok()?;
            *hit = Some((a, addr - off as u64));
            (a, addr - off as u64)
        }
    };
    let off = addr.wrapping_sub(base);
    if off.checked_add(len as u64).is_none_or(|e| e > a.bytes as u64) {
        *hit = None;
        return None;
    }
    let off = off as usize;
    if write {
        return Some([0; N]);
    }
    if c.l.checks && a.first_unwritten(off, len).is_some() {
        return None;
    }
    let p = a.ptr(off);
    // SAFETY: [off, off+len) is inside the allocation (checked above).
    Some(std::array::from_fn(|k| unsafe {
        let q = p.add(k * SIZE);
        match SIZE {
            1 => *q as u64,
            2 => (q as *const u16).read_unaligned() as u64,
            4 => (q as *const u32).read_unaligned() as u64,
            _ => (q as *const u64).read_unaligned(),
        }
    }))
}

fn st<const SP: u8, const SIZE: usize, const N: usize>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let a = *c.w.r(i.s[0]);
    if c.b.tally.is_some() {
        count(c, SP, Access::Store, &a, i, m, SIZE * N);
    }
    let vals: [[u64; 32]; N] = std::array::from_fn(|k| *c.w.r(i.s[1 + k]));
    let mut hit: Option<(&Alloc, u64)> = None;
    for l in lanes(m) {
        let addr = a[l].wrapping_add(i.imm as u64);
        let v: [u64; N] = std::array::from_fn(|k| vals[k][l]);
        if SP == GLOBAL && fast_global::<SIZE, N>(c, &mut hit, addr, true).is_some() {
            let (al, base) = hit.expect("set by fast_global");
            let off = (addr - base) as usize;
            let p = al.ptr(off);
            for (k, x) in v.iter().enumerate() {
                // SAFETY: inside the allocation (fast_global checked the range).
                unsafe { std::ptr::copy_nonoverlapping(x.to_le_bytes().as_ptr(), p.add(k * SIZE), SIZE) };
            }
            al.mark(off, SIZE * N);
            continue;
        }
        write_lane::<SP, SIZE, N>(c, addr, l, v)?;
    }
    Ok(())
}

pub fn load(space: u8, size: usize, n: usize, sign: bool) -> Option<Exec> {
    macro_rules! by_n {
        ($sp:expr, $sz:expr, $s:expr) => {
            match n {
                1 => ld::<{ $sp }, $sz, 1, $s> as Exec,
                2 => ld::<{ $sp }, $sz, 2, $s>,
                4 => ld::<{ $sp }, $sz, 4, $s>,
                _ => return None,
            }
        };
    }
    macro_rules! by_size {
        ($sp:expr) => {
            match (size, sign) {
                (1, false) => by_n!($sp, 1, false),
                (1, true) => by_n!($sp, 1, true),
                (2, false) => by_n!($sp, 2, false),
                (2, true) => by_n!($sp, 2, true),
                (4, false) => by_n!($sp, 4, false),
                (4, true) => by_n!($sp, 4, true),
                (8, _) => by_n!($sp, 8, false),
                _ => return None,
            }
        };
    }
    Some(match space {
        GLOBAL => by_size!(GLOBAL),
        SHARED => by_size!(SHARED),
        LOCAL => by_size!(LOCAL),
        _ => by_size!(PARAM),
    })
}

pub fn store(space: u8, size: usize, n: usize) -> Option<Exec> {
    macro_rules! by_n {
        ($sp:expr, $sz:expr) => {
            match n {
                1 => st::<{ $sp }, $sz, 1> as Exec,
                2 => st::<{ $sp }, $sz, 2>,
                4 => st::<{ $sp }, $sz, 4>,
                _ => return None,
            }
        };
    }
    macro_rules! by_size {
        ($sp:expr) => {
            match size {
                1 => by_n!($sp, 1),
                2 => by_n!($sp, 2),
                4 => by_n!($sp, 4),
                8 => by_n!($sp, 8),
                _ => return None,
            }
        };
    }
    Some(match space {
        GLOBAL => by_size!(GLOBAL),
        SHARED => by_size!(SHARED),
        LOCAL => by_size!(LOCAL),
        _ => by_size!(PARAM),
    })
}

// Atomic operations.
pub const A_ADD: u8 = 0;
pub const A_MIN: u8 = 1;
pub const A_MAX: u8 = 2;
pub const A_EXCH: u8 = 3;
pub const A_CAS: u8 = 4;
pub const A_AND: u8 = 5;
pub const A_OR: u8 = 6;
pub const A_XOR: u8 = 7;
pub const A_INC: u8 = 8;
pub const A_DEC: u8 = 9;

/// membar / fence at any scope. Blocks run on several host threads and write
/// global memory with plain stores, so the host's sequentially consistent fence
/// gives what the strongest scope asks: this thread's earlier accesses are seen
/// before its later ones by every block, which with an atomic on both sides is the
/// release/acquire pattern the memory model defines. (At .cta scope a block's warps
/// share one thread and the fence only costs time.)
fn fence(_: &mut Core<'_>, _: &Inst, _: u32) -> R {
    std::sync::atomic::fence(Ordering::SeqCst);
    Ok(())
}

pub fn fence_op() -> Exec {
    fence
}

/// The new value of an atomic on `old` (K: 0 unsigned, 1 signed, 2 float).
#[inline(always)]
fn atom_new<const OP: u8, const W: u8, const K: u8>(old: u64, b: u64, cmp: u64) -> u64 {
    use super::alu::{mask, sx};
    let r = match (OP, K) {
        (A_ADD, 2) => {
            if W == 32 {
                (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64
            } else {
                (f64::from_bits(old) + f64::from_bits(b)).to_bits()
            }
        }
        (A_ADD, _) => old.wrapping_add(b),
        (A_MIN, 1) => sx(old, W).min(sx(b, W)) as u64,
        (A_MIN, _) => mask(old, W).min(mask(b, W)),
        (A_MAX, 1) => sx(old, W).max(sx(b, W)) as u64,
        (A_MAX, _) => mask(old, W).max(mask(b, W)),
        (A_EXCH, _) => b,
        (A_CAS, _) => {
            if mask(old, W) == mask(cmp, W) {
                b
            } else {
                old
            }
        }
        (A_AND, _) => old & b,
        (A_OR, _) => old | b,
        (A_XOR, _) => old ^ b,
        (A_INC, _) => {
            if mask(old, W) >= mask(b, W) {
                0
            } else {
                old + 1
            }
        }
        _ => {
            if mask(old, W) == 0 || mask(old, W) > mask(b, W) {
                b
            } else {
                old - 1
            }
        }
    };
    mask(r, W)
}

/// atom.SPACE.op.type d, [a], b{, c}: lanes in order; on global memory a real
/// host atomic (compare-exchange loop), since blocks run on several cores.
fn atom<const SP: u8, const OP: u8, const W: u8, const K: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let (a, b) = (*c.w.r(i.s[0]), *c.w.r(i.s[1]));
    let cmp = if OP == A_CAS { *c.w.r(i.s[2]) } else { [0; 32] };
    let len = W as usize / 8;
    if c.b.tally.is_some() {
        count(c, SP, Access::Atomic, &a, i, m, len);
    }
    for l in lanes(m) {
        let addr = a[l].wrapping_add(i.imm as u64);
        let old = if SP == SHARED {
            aligned(addr, len, SP, l)?;
            let size = c.b.shared.len();
            if addr.saturating_add(len as u64) > size as u64 {
                return Err(Fault::at(
                    FaultKind::OutOfBounds,
                    l as u32,
                    format!("{len}-byte shared atomic at {addr:#x} is past the block's {size} bytes"),
                ));
            }
            let off = addr as usize;
            if c.l.checks {
                // Atomics do not race with each other; a plain access by another
                // warp in the same epoch still races with them.
                for k in 0..len {
                    let s = &mut c.b.shadow[off + k];
                    if s.pending {
                        return Err(Fault::at(
                            FaultKind::AsyncCopy,
                            l as u32,
                            "shared atomic on bytes a cp.async has not landed",
                        ));
                    }
                    if s.w_epoch < c.b.epoch0 {
                        return Err(Fault::at(
                            FaultKind::Uninitialized,
                            l as u32,
                            format!(
                                "shared atomic on {} which this block never wrote",
                                shared_name_at(c.l.prog, off)
                            ),
                        ));
                    }
                    s.w_epoch = c.b.epoch;
                    s.w_warp = c.w.id as u8;
                }
            }
            let old = load_le(&c.b.shared[off..off + len]);
            let new = atom_new::<OP, W, K>(old, b[l], cmp[l]);
            c.b.shared[off..off + len].copy_from_slice(&new.to_le_bytes()[..len]);
            old
        } else {
            if addr % len as u64 != 0 {
                return Err(global_misaligned(c.l.mem, addr, len, l));
            }
            let (al, off) = c.l.mem.find(addr, len).map_err(|mut f| {
                f.lane = Some(l as u32);
                f
            })?;
            if c.l.checks {
                if let Some(at) = al.first_unwritten(off, len) {
                    return Err(Fault::at(
                        FaultKind::Uninitialized,
                        l as u32,
                        format!("global atomic reads byte {at} of {}, never written", al.label),
                    ));
                }
            }
            let p = al.ptr(off);
            let old = if W == 32 {
                // SAFETY: 4-byte aligned and inside the allocation (checked above).
                let cell = unsafe { &*(p as *const AtomicU32) };
                let mut cur = cell.load(Ordering::Relaxed);
                loop {
                    let new = atom_new::<OP, W, K>(cur as u64, b[l], cmp[l]) as u32;
                    match cell.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                        Ok(_) => break cur as u64,
                        Err(x) => cur = x,
                    }
                }
            } else {
                // SAFETY: as above, 8 bytes.
                let cell = unsafe { &*(p as *const AtomicU64) };
                let mut cur = cell.load(Ordering::Relaxed);
                loop {
                    let new = atom_new::<OP, W, K>(cur, b[l], cmp[l]);
                    match cell.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                        Ok(_) => break cur,
                        Err(x) => cur = x,
                    }
                }
            };
            al.mark(off, len);
            old
        };
        if i.d[0] != NONE {
            c.w.rw(i.d[0])[l] = old;
        }
    }
    Ok(())
}

fn shared_name_at(prog: &crate::ir::Program, off: usize) -> String {
    match prog.shared_vars.iter().find(|(_, o, n)| off >= *o && off < o + n) {
        Some((name, o, _)) => format!("{name}+{}", off - o),
        None => format!("offset {off}"),
    }
}

pub fn atomic(space: u8, op: &str, w: u32, kind: u8) -> Option<Exec> {
    macro_rules! by_wk {
        ($sp:expr, $op:expr) => {
            match (w, kind) {
                (32, 0) => atom::<{ $sp }, { $op }, 32, 0> as Exec,
                (32, 1) => atom::<{ $sp }, { $op }, 32, 1>,
                (64, 0) => atom::<{ $sp }, { $op }, 64, 0>,
                (64, 1) => atom::<{ $sp }, { $op }, 64, 1>,
                (32, 2) if $op == A_ADD || $op == A_EXCH => atom::<{ $sp }, { $op }, 32, 2>,
                (64, 2) if $op == A_ADD || $op == A_EXCH => atom::<{ $sp }, { $op }, 64, 2>,
                _ => return None,
            }
        };
    }
    macro_rules! by_op {
        ($sp:expr) => {
            match op {
                "add" => by_wk!($sp, A_ADD),
                "min" => by_wk!($sp, A_MIN),
                "max" => by_wk!($sp, A_MAX),
                "exch" => by_wk!($sp, A_EXCH),
                "cas" => by_wk!($sp, A_CAS),
                "and" => by_wk!($sp, A_AND),
                "or" => by_wk!($sp, A_OR),
                "xor" => by_wk!($sp, A_XOR),
                "inc" if w == 32 && kind == 0 => atom::<{ $sp }, A_INC, 32, 0>,
                "dec" if w == 32 && kind == 0 => atom::<{ $sp }, A_DEC, 32, 0>,
                _ => return None,
            }
        };
    }
    Some(match space {
        SHARED => by_op!(SHARED),
        GLOBAL => by_op!(GLOBAL),
        _ => return None,
    })
}

/// cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}: reads
/// src-size bytes now (the rest is zero-filled) and queues the copy; it lands in
/// shared memory only at the wait that covers its group.
fn cp_async(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let (dst, src) = (*c.w.r(i.s[0]), *c.w.r(i.s[1]));
    let srcsize = if i.s[2] != NONE { Some(*c.w.r(i.s[2])) } else { None };
    let cp = i.aux as usize;
    if c.b.tally.is_some() {
        // The global side reads src-size bytes (zero-fill reads nothing past them).
        let (mut bytes, mut addrs, mut n) = (0, [(0u32, 0u64); 32], 0);
        for l in lanes(m) {
            let len = srcsize.map_or(cp, |v| (v[l] as u32 as usize).min(cp));
            if len > 0 {
                addrs[n] = (l as u32, src[l]);
                n += 1;
                bytes += len;
            }
        }
        let t = c.b.tally.as_deref_mut().expect("checked");
        t.c.cp_async += 1;
        t.c.cp_async_bytes += bytes as u64;
        t.global(Access::Load, &addrs[..n], cp);
        count(c, SHARED, Access::Store, &dst, i, m, cp);
    }
    for l in lanes(m) {
        let d = dst[l].wrapping_add(i.imm as u64);
        let s = src[l];
        let n = srcsize.map_or(cp, |v| v[l] as u32 as usize);
        if n > cp {
            return Err(Fault::at(
                FaultKind::Invalid,
                l as u32,
                format!("cp.async src-size {n} is larger than its cp-size {cp}"),
            ));
        }
        aligned(d, cp, SHARED, l)?;
        if s % cp as u64 != 0 {
            return Err(global_misaligned(c.l.mem, s, cp, l));
        }
        let size = c.b.shared.len();
        if d.saturating_add(cp as u64) > size as u64 {
            return Err(Fault::at(
                FaultKind::OutOfBounds,
                l as u32,
                format!("cp.async writes {cp} bytes at shared {d:#x}, past the block's {size} bytes"),
            ));
        }
        let mut data = [0u8; 16];
        if n > 0 {
            let (a, off) = c.l.mem.find(s, n).map_err(|mut f| {
                f.lane = Some(l as u32);
                f
            })?;
            if c.l.checks {
                if let Some(at) = a.first_unwritten(off, n) {
                    return Err(Fault::at(
                        FaultKind::Uninitialized,
                        l as u32,
                        format!("cp.async reads byte {at} of {}, never written", a.label),
                    ));
                }
            }
            // SAFETY: [off, off+n) checked above.
            unsafe { std::ptr::copy_nonoverlapping(a.ptr(off), data.as_mut_ptr(), n) };
        }
        if c.l.checks {
            for k in 0..cp {
                let sh = &mut c.b.shadow[d as usize + k];
                if sh.pending {
                    return Err(Fault::at(
                        FaultKind::AsyncCopy,
                        l as u32,
                        format!(
                            "cp.async to shared {} while an earlier copy to it is still in flight",
                            shared_name(c, d as usize + k)
                        ),
                    ));
                }
                sh.pending = true;
            }
        }
        c.w.asyncq.push(AsyncCopy { lane: l as u8, len: cp as u8, group: u32::MAX, dst: d as u32, data });
    }
    Ok(())
}

fn commit(c: &mut Core<'_>, m: u32) {
    for q in c.w.asyncq.iter_mut() {
        if q.group == u32::MAX && m >> q.lane & 1 != 0 {
            q.group = c.w.committed[q.lane as usize];
        }
    }
    for l in lanes(m) {
        c.w.committed[l] += 1;
    }
}

fn cp_commit(c: &mut Core<'_>, _i: &Inst, m: u32) -> R {
    commit(c, m);
    Ok(())
}

/// cp.async.wait_group N: every group of the lane but the newest N lands. With
/// `aux` set it is wait_all (commit, then wait for all). The queue is compacted in
/// place, landing copies in the order they were issued.
fn cp_wait(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    if i.aux != 0 {
        commit(c, m);
    }
    let keep = i.imm as u64;
    let mut kept = 0;
    for k in 0..c.w.asyncq.len() {
        let q = c.w.asyncq[k];
        let lane = q.lane as usize;
        if m >> lane & 1 != 0 && q.group != u32::MAX && q.group as u64 + keep < c.w.committed[lane] as u64 {
            land(c, &q)?;
        } else {
            c.w.asyncq[kept] = q;
            kept += 1;
        }
    }
    c.w.asyncq.truncate(kept);
    Ok(())
}

/// A copy lands: a write by the issuing warp now, checked like one.
fn land(c: &mut Core<'_>, q: &AsyncCopy) -> R {
    let (off, len) = (q.dst as usize, q.len as usize);
    if c.l.checks {
        for s in &mut c.b.shadow[off..off + len] {
            s.pending = false;
        }
        if let Err((kind, at, msg)) = c.b.write_check(c.w.id, off, len) {
            return Err(Fault::at(
                kind,
                q.lane as u32,
                format!("shared memory {} {msg} (a cp.async landing)", shared_name(c, at)),
            ));
        }
    }
    c.b.shared[off..off + len].copy_from_slice(&q.data[..len]);
    Ok(())
}

pub fn cp_async_op() -> Exec {
    cp_async
}
pub fn cp_commit_op() -> Exec {
    cp_commit
}
pub fn cp_wait_op() -> Exec {
    cp_wait
}

/// cvta.to.global / cvta.global: generic and global addresses are the same here.
pub fn cvta_global() -> Exec {
    super::alu::mov_op(64).expect("64-bit mov")
}

/// One 16-byte row for ldmatrix, checked like any shared read.
pub fn shared_row(c: &mut Core<'_>, addr: u64, lane: usize) -> Result<[u8; 16], Fault> {
    let off = shared_at(c, addr, 16, 16, false, lane)?;
    let mut v = [0u8; 16];
    v.copy_from_slice(&c.b.shared[off..off + 16]);
    Ok(v)
}
