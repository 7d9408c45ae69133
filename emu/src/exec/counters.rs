//! Hardware-style counters of one launch, in the terms Nsight Compute uses, counted
//! while the kernel runs (only when `Options::counters` is on: they cost time).
//!
//! Global memory: a warp-level instruction is one request; it touches the 32-byte
//! sectors its active lanes' bytes fall in. Coalescing is bytes requested over
//! bytes of the sectors touched. The sectors a launch touches at least once, per
//! allocation, are a lower bound on its DRAM traffic (every cache is assumed to
//! miss once and hit after).
//!
//! Shared memory: 32 banks of 4-byte words. A request is served in wavefronts of at
//! most 128 bytes: the lanes split into phases (32 lanes of up to 4 bytes, 16 of 8,
//! 8 of 16; ldmatrix reads one 8x16-byte matrix per phase), and a phase takes as
//! many wavefronts as the most distinct words any one bank holds for it (lanes
//! reading the same word share it). The ideal is one wavefront per phase; the
//! excess is what Nsight reports as bank conflicts.
//!
//! This is a model of the hardware, not a measurement: no caches between the
//! first touch of a sector and DRAM, no timing, and the phase rule above for wide
//! accesses (the one NVIDIA documents for 64- and 128-bit accesses).

use std::collections::{BTreeMap, HashMap};

use crate::ir::Class;
use crate::mem::SLOT_SHIFT;

pub const CLASSES: usize = 7;

/// Names of the instruction classes, in `Class as usize` (declaration) order.
pub const CLASS_NAMES: [&str; CLASSES] = ["int", "fp32", "fp64", "memory", "mma", "control", "sync"];

/// Global-memory requests of one kind (loads, stores or atomics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Global {
    pub requests: u64,
    /// Distinct bytes the active lanes asked for (a broadcast counts once).
    pub bytes: u64,
    /// 32-byte sectors touched, summed over requests.
    pub sectors: u64,
}

impl Global {
    fn add(&mut self, o: &Global) {
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.sectors += o.sectors;
    }
}

/// Shared-memory requests of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    pub requests: u64,
    pub wavefronts: u64,
    /// One wavefront per non-empty phase: `wavefronts - ideal` are bank conflicts.
    pub ideal: u64,
}

impl Shared {
    fn add(&mut self, o: &Shared) {
        self.requests += o.requests;
        self.wavefronts += o.wavefronts;
        self.ideal += o.ideal;
    }
    pub fn conflicts(&self) -> u64 {
        self.wavefronts - self.ideal
    }
}

/// The counters of one launch.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Warp instructions executed, by class (`Class as usize`).
    pub inst: [u64; CLASSES],
    /// Thread instructions not predicated off: lane efficiency is this over 32 x
    /// warp instructions.
    pub thread_inst: u64,
    pub global_load: Global,
    pub global_store: Global,
    pub global_atomic: Global,
    pub shared_load: Shared,
    pub shared_store: Shared,
    pub shared_atomic: Shared,
    /// ldmatrix warp instructions (their shared side is in `shared_load`).
    pub ldmatrix: u64,
    /// cp.async warp instructions (their global side is in `global_load`, their
    /// shared side in `shared_store`) and the bytes they copy.
    pub cp_async: u64,
    pub cp_async_bytes: u64,
    /// Barriers completed, summed over blocks.
    pub barriers: u64,
    /// Bank conflicts (extra wavefronts) by PTX line, where there were any.
    pub conflicts_at: BTreeMap<u32, u64>,
    /// Sectors the launch read / wrote at least once (see the module's note).
    pub dram_read_sectors: u64,
    pub dram_write_sectors: u64,
}

impl Counters {
    pub fn warp_instructions(&self) -> u64 {
        self.inst.iter().sum()
    }

    /// Average active lanes per warp instruction over 32.
    pub fn lane_efficiency(&self) -> f64 {
        let w = self.warp_instructions();
        if w == 0 {
            1.0
        } else {
            self.thread_inst as f64 / (32.0 * w as f64)
        }
    }

    /// mma warp instructions (the Mma class holds only mma).
    pub fn mma(&self) -> u64 {
        self.inst[Class::Mma as usize]
    }

    pub fn bank_conflicts(&self) -> u64 {
        self.shared_load.conflicts() + self.shared_store.conflicts() + self.shared_atomic.conflicts()
    }

    pub fn add(&mut self, o: &Counters) {
        for (a, b) in self.inst.iter_mut().zip(&o.inst) {
            *a += b;
        }
        self.thread_inst += o.thread_inst;
        self.global_load.add(&o.global_load);
        self.global_store.add(&o.global_store);
        self.global_atomic.add(&o.global_atomic);
        self.shared_load.add(&o.shared_load);
        self.shared_store.add(&o.shared_store);
        self.shared_atomic.add(&o.shared_atomic);
        self.ldmatrix += o.ldmatrix;
        self.cp_async += o.cp_async;
        self.cp_async_bytes += o.cp_async_bytes;
        self.barriers += o.barriers;
        for (&line, &n) in &o.conflicts_at {
            *self.conflicts_at.entry(line).or_default() += n;
        }
        self.dram_read_sectors += o.dram_read_sectors;
        self.dram_write_sectors += o.dram_write_sectors;
    }
}

/// The sectors touched, per allocation slot: a bit per sector, read and written.
#[derive(Default)]
pub struct Traffic {
    slots: HashMap<u64, (Vec<u64>, Vec<u64>)>,
}

impl Traffic {
    fn touch(&mut self, sector: u64, write: bool) {
        let addr = sector << 5;
        let slot = addr >> SLOT_SHIFT;
        let idx = ((addr & ((1u64 << SLOT_SHIFT) - 1)) >> 5) as usize;
        let (r, w) = self.slots.entry(slot).or_default();
        let bits = if write { w } else { r };
        if bits.len() <= idx / 64 {
            bits.resize(idx / 64 + 1, 0);
        }
        bits[idx / 64] |= 1 << (idx % 64);
    }

    pub fn merge(&mut self, o: Traffic) {
        for (slot, (r, w)) in o.slots {
            let (mr, mw) = self.slots.entry(slot).or_default();
            for (dst, src) in [(mr, r), (mw, w)] {
                if dst.len() < src.len() {
                    dst.resize(src.len(), 0);
                }
                for (d, s) in dst.iter_mut().zip(src) {
                    *d |= s;
                }
            }
        }
    }

    /// (sectors read, sectors written) at least once.
    pub fn unique(&self) -> (u64, u64) {
        let count = |v: &Vec<u64>| v.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        self.slots.values().fold((0, 0), |(r, w), (a, b)| (r + count(a), w + count(b)))
    }
}

/// Counting state of one worker thread: its counters and the sectors it touched.
#[derive(Default)]
pub struct Tally {
    pub c: Counters,
    pub traffic: Traffic,
}

/// What a memory request does, global or shared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
    Atomic,
}

impl Tally {
    /// One global request of `len` bytes per lane at `addrs` (one per active lane,
    /// with its lane number).
    pub fn global(&mut self, kind: Access, addrs: &[(u32, u64)], len: usize) {
        if addrs.is_empty() {
            return;
        }
        let mut sectors = [0u64; 64];
        let mut n = 0;
        for &(_, a) in addrs {
            let (first, last) = (a >> 5, (a + len as u64 - 1) >> 5);
            for s in first..=last {
                if n < sectors.len() {
                    sectors[n] = s;
                    n += 1;
                }
            }
        }
        let sectors = &mut sectors[..n];
        sectors.sort_unstable();
        let mut unique = 0;
        let mut prev = u64::MAX;
        for &s in sectors.iter() {
            if s != prev {
                unique += 1;
                prev = s;
                self.traffic.touch(s, kind == Access::Store);
                if kind == Access::Atomic {
                    self.traffic.touch(s, true);
                }
            }
        }
        let g = match kind {
            Access::Load => &mut self.c.global_load,
            Access::Store => &mut self.c.global_store,
            Access::Atomic => &mut self.c.global_atomic,
        };
        g.requests += 1;
        g.bytes += distinct_bytes(addrs, len);
        g.sectors += unique;
    }

    /// One shared request of `len` bytes per lane at `addrs` (one per active lane,
    /// with its lane number), `phase` lanes per phase; `line` is the PTX line, for
    /// `conflicts_at`.
    pub fn shared(&mut self, kind: Access, addrs: &[(u32, u64)], len: usize, phase: u32, line: u32) {
        if addrs.is_empty() {
            return;
        }
        let (mut wavefronts, mut ideal) = (0u64, 0u64);
        for p in 0..32 / phase {
            let (lo, hi) = (p * phase, (p + 1) * phase);
            // (bank, word) of every word this phase touches.
            let mut words = [0u64; 128];
            let mut n = 0;
            for &(_, a) in addrs.iter().filter(|(l, _)| (lo..hi).contains(l)) {
                let (first, last) = (a >> 2, (a + len.max(1) as u64 - 1) >> 2);
                for w in first..=last {
                    if n < words.len() {
                        words[n] = (w % 32) << 40 | w;
                        n += 1;
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let words = &mut words[..n];
            words.sort_unstable();
            let (mut most, mut run, mut prev) = (0u64, 0u64, u64::MAX);
            for &w in words.iter() {
                if w == prev {
                    continue;
                }
                if prev == u64::MAX || w >> 40 != prev >> 40 {
                    run = 0;
                }
                run += 1;
                most = most.max(run);
                prev = w;
            }
            wavefronts += most;
            ideal += 1;
        }
        let s = match kind {
            Access::Load => &mut self.c.shared_load,
            Access::Store => &mut self.c.shared_store,
            Access::Atomic => &mut self.c.shared_atomic,
        };
        s.requests += 1;
        s.wavefronts += wavefronts;
        s.ideal += ideal;
        if wavefronts > ideal {
            *self.c.conflicts_at.entry(line).or_default() += wavefronts - ideal;
        }
    }
}

/// Bytes covered by the lanes' ranges of `len` bytes: lanes reading the same bytes
/// (a broadcast) count them once, so bytes over sector bytes is the share of the
/// fetched bytes the request uses.
fn distinct_bytes(addrs: &[(u32, u64)], len: usize) -> u64 {
    let mut starts = [0u64; 32];
    let n = addrs.len().min(32);
    for (s, &(_, a)) in starts.iter_mut().zip(addrs) {
        *s = a;
    }
    let starts = &mut starts[..n];
    starts.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for &a in starts.iter() {
        let e = a + len as u64;
        if e > end {
            total += e - a.max(end);
            end = e;
        }
    }
    total
}

/// Lanes per phase for a shared access of `len` bytes per lane.
pub fn phase_lanes(len: usize) -> u32 {
    match len {
        0..=4 => 32,
        5..=8 => 16,
        9..=16 => 8,
        _ => 4,
    }
}

impl Global {
    fn json(&self) -> String {
        format!(r#"{{"requests":{},"bytes":{},"sectors":{}}}"#, self.requests, self.bytes, self.sectors)
    }
}

impl Shared {
    fn json(&self) -> String {
        format!(r#"{{"requests":{},"wavefronts":{},"ideal":{}}}"#, self.requests, self.wavefronts, self.ideal)
    }
}

impl Counters {
    /// A JSON object with every counter (field names as in this struct; `inst` by
    /// class name; `conflicts_at` keyed by `place(PTX line)`).
    pub fn to_json_with(&self, place: impl Fn(u32) -> String) -> String {
        let inst: Vec<String> =
            CLASS_NAMES.iter().zip(&self.inst).map(|(n, v)| format!(r#""{n}":{v}"#)).collect();
        let at: Vec<String> =
            self.conflicts_at.iter().map(|(&l, n)| format!("{}:{n}", json_string(&place(l)))).collect();
        format!(
            concat!(
                r#"{{"inst":{{{}}},"thread_inst":{},"global_load":{},"global_store":{},"global_atomic":{},"#,
                r#""shared_load":{},"shared_store":{},"shared_atomic":{},"ldmatrix":{},"cp_async":{},"#,
                r#""cp_async_bytes":{},"mma":{},"barriers":{},"conflicts_at":{{{}}},"#,
                r#""dram_read_sectors":{},"dram_write_sectors":{}}}"#
            ),
            inst.join(","),
            self.thread_inst,
            self.global_load.json(),
            self.global_store.json(),
            self.global_atomic.json(),
            self.shared_load.json(),
            self.shared_store.json(),
            self.shared_atomic.json(),
            self.ldmatrix,
            self.cp_async,
            self.cp_async_bytes,
            self.mma(),
            self.barriers,
            at.join(","),
            self.dram_read_sectors,
            self.dram_write_sectors,
        )
    }
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
