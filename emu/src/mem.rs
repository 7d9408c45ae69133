//! Device memory: every allocation made through the driver API (and every module
//! `.global` variable) is a host buffer at its own device address, with a bitmap of
//! the bytes ever written (initcheck).
//!
//! Addresses are `slot << SLOT_SHIFT | offset`: finding an address's allocation is
//! one index, and an access just past an end, before a start or into a freed
//! allocation cannot land in a neighbour, so memcheck names the allocation exactly.
//! Slots are never reused, so a stale pointer is reported as one.

use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::error::{Fault, FaultKind};

pub const SLOT_SHIFT: u32 = 36;
/// The largest single allocation (64 GiB, the slot size).
pub const MAX_ALLOC: u64 = 1 << SLOT_SHIFT;
const ALIGN: usize = 256;

pub struct Alloc {
    pub base: u64,
    pub bytes: usize,
    /// "cuMemAlloc #7 (4096 bytes)" or a module variable's name.
    pub label: String,
    data: *mut u8,
    layout: Layout,
    /// One bit per byte: written since allocation.
    init: Vec<AtomicU64>,
}

// SAFETY: the buffer is plain bytes; concurrent kernels and copies race on it only
// as a GPU's threads would (unspecified values, never memory unsafety beyond the
// buffer, which every access is checked against).
unsafe impl Send for Alloc {}
unsafe impl Sync for Alloc {}

impl Drop for Alloc {
    fn drop(&mut self) {
        // SAFETY: data was allocated with this layout in `Memory::alloc`.
        unsafe { std::alloc::dealloc(self.data, self.layout) }
    }
}

impl Alloc {
    /// Pointer to `len` bytes at `off`; the caller has checked the range.
    #[inline]
    pub fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.bytes);
        // SAFETY: off is within the allocation (checked by every caller).
        unsafe { self.data.add(off) }
    }

    #[inline]
    pub fn mark(&self, off: usize, len: usize) {
        let (mut i, end) = (off, off + len);
        while i < end {
            let w = i / 64;
            let lo = i % 64;
            let n = (64 - lo).min(end - i);
            let bits = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo };
            let word = &self.init[w];
            if word.load(Ordering::Relaxed) & bits != bits {
                word.fetch_or(bits, Ordering::Relaxed);
            }
            i += n;
        }
    }

    /// The written parts of `[off, off+len)` as (start, len) runs relative to `off`,
    /// so that a device-to-device copy carries initcheck's state byte for byte.
    pub fn written_runs(&self, off: usize, len: usize) -> Vec<(usize, usize)> {
        if self.first_unwritten(off, len).is_none() {
            return vec![(0, len)];
        }
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for k in 0..len {
            if self.first_unwritten(off + k, 1).is_none() {
                match runs.last_mut() {
                    Some((s, n)) if *s + *n == k => *n += 1,
                    _ => runs.push((k, 1)),
                }
            }
        }
        runs
    }

    /// The first byte in the range never written, if any.
    #[inline]
    pub fn first_unwritten(&self, off: usize, len: usize) -> Option<usize> {
        let (mut i, end) = (off, off + len);
        while i < end {
            let w = i / 64;
            let lo = i % 64;
            let n = (64 - lo).min(end - i);
            let bits = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo };
            let have = self.init[w].load(Ordering::Relaxed) & bits;
            if have != bits {
                return Some(w * 64 + ((!have & bits).trailing_zeros() as usize));
            }
            i += n;
        }
        None
    }
}

pub enum Entry {
    Live(Arc<Alloc>),
    Freed { bytes: usize, label: String },
}

#[derive(Default)]
pub struct Memory {
    table: RwLock<Vec<Entry>>,
    count: AtomicU64,
}

/// A read-locked view for the length of a launch or a copy.
pub struct View<'a> {
    table: RwLockReadGuard<'a, Vec<Entry>>,
}

impl Memory {
    pub fn alloc(&self, bytes: u64, label: Option<String>) -> Result<u64, String> {
        if bytes > MAX_ALLOC {
            return Err(format!(
                "{bytes} bytes is more than the emulator's largest allocation ({MAX_ALLOC} bytes)"
            ));
        }
        let size = (bytes as usize).max(1);
        let layout = Layout::from_size_align(size, ALIGN).map_err(|e| e.to_string())?;
        // SAFETY: layout has a nonzero size.
        let data = unsafe { std::alloc::alloc_zeroed(layout) };
        if data.is_null() {
            return Err(format!("the host could not provide {bytes} bytes"));
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let slot = table.len() as u64 + 1;
        let base = slot << SLOT_SHIFT;
        let label = label.unwrap_or_else(|| format!("allocation #{n} ({bytes} bytes)"));
        let init = (0..size.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        table.push(Entry::Live(Arc::new(Alloc { base, bytes: bytes as usize, label, data, layout, init })));
        Ok(base)
    }

    pub fn free(&self, ptr: u64) -> Result<(), String> {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let idx = (ptr >> SLOT_SHIFT).wrapping_sub(1) as usize;
        match table.get(idx) {
            Some(Entry::Live(a)) if a.base == ptr => {
                let (bytes, label) = (a.bytes, a.label.clone());
                table[idx] = Entry::Freed { bytes, label };
                Ok(())
            }
            Some(Entry::Live(a)) => Err(format!("{ptr:#x} is inside {} but not its start", a.label)),
            Some(Entry::Freed { label, .. }) => Err(format!("{ptr:#x} ({label}) was already freed")),
            None if ptr == 0 => Err("null pointer".into()),
            None => Err(format!("{ptr:#x} is not a device pointer of this emulator")),
        }
    }

    pub fn view(&self) -> View<'_> {
        View { table: self.table.read().unwrap_or_else(|e| e.into_inner()) }
    }

    /// Host-side copies (memcpy, memset): the range must be inside one live allocation.
    pub fn with_range<R>(
        &self,
        ptr: u64,
        len: usize,
        f: impl FnOnce(&Alloc, usize) -> R,
    ) -> Result<R, String> {
        let v = self.view();
        let (a, off) = v.find(ptr, len).map_err(|f| f.msg)?;
        Ok(f(a, off))
    }

    /// (base, size) of the allocation holding `ptr`, as cuMemGetAddressRange answers.
    pub fn range_of(&self, ptr: u64) -> Option<(u64, usize)> {
        let v = self.view();
        v.find(ptr, 0).ok().map(|(a, _)| (a.base, a.bytes))
    }
}

impl View<'_> {
    /// The allocation and offset of `[addr, addr+len)`, or a memcheck fault that says
    /// which allocation the address missed.
    #[inline]
    pub fn find(&self, addr: u64, len: usize) -> Result<(&Alloc, usize), Fault> {
        let slot = addr >> SLOT_SHIFT;
        let off = (addr & (MAX_ALLOC - 1)) as usize;
        match self.table.get((slot as usize).wrapping_sub(1)) {
            Some(Entry::Live(a)) if off.checked_add(len).is_some_and(|e| e <= a.bytes) => Ok((a, off)),
            _ => Err(self.miss(addr, len)),
        }
    }

    /// Why `[addr, addr+len)` is in no live allocation, naming the nearest one.
    #[cold]
    fn miss(&self, addr: u64, len: usize) -> Fault {
        let slot = (addr >> SLOT_SHIFT) as usize;
        let off = (addr & (MAX_ALLOC - 1)) as usize;
        let what = format!("{len}-byte access at {addr:#x}");
        let msg = match (self.table.get(slot.wrapping_sub(1)), self.table.get(slot)) {
            // In the upper half of a slot: just before the next slot's allocation.
            (_, Some(Entry::Live(next))) if off > (MAX_ALLOC / 2) as usize => format!(
                "{what} is {} bytes before the start of {} (base {:#x})",
                MAX_ALLOC as usize - off,
                next.label,
                next.base
            ),
            (Some(Entry::Live(a)), _) if off >= a.bytes => {
                format!("{what} is {} bytes past the end of {} (base {:#x})", off - a.bytes, a.label, a.base)
            }
            (Some(Entry::Live(a)), _) => {
                format!("{what} runs across the end of {} (base {:#x})", a.label, a.base)
            }
            (Some(Entry::Freed { label, .. }), _) => format!("{what} is in {label}, which was freed"),
            _ if addr < 4096 => format!("{what}: a null pointer"),
            _ => format!("{what}, which is in no allocation"),
        };
        Fault::new(FaultKind::OutOfBounds, msg)
    }
}
