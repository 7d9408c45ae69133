//! Running a grid: blocks in parallel on the host's cores, the warps of a block in
//! turn on one core, 32 lanes per warp with an active mask.
//!
//! Divergence: each lane has its own PC and the lanes at the lowest PC run first.
//! Code nvcc emits is laid out so that a branch's join point follows both arms, so
//! this reconverges at the join without a reconvergence stack. Warp-synchronous
//! instructions wait there ("parked") until every lane they need has arrived;
//! `bar.sync` waits until every non-exited thread of the block is at it. A warp
//! runs until none of its lanes can move; when no warp of the block can, the
//! barrier is released or, if it cannot be, synccheck reports why.

pub mod alu;
pub mod counters;
pub mod fp;
pub mod memops;
pub mod warpops;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Fault, FaultKind, KernelError};
use crate::ir::{Ctrl, Need, Program, Special};
use crate::mem::View;
use counters::{Counters, Tally, Traffic};

pub const FULL: u32 = u32::MAX;

/// Iterates the set bits of a lane mask.
#[inline]
pub fn lanes(mut m: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(l)
        }
    })
}

/// Options of a launch.
#[derive(Clone, Debug)]
pub struct Options {
    /// memcheck bounds are always on; this adds initcheck, racecheck and the
    /// cp.async check.
    pub checks: bool,
    /// Warp instructions one block may execute before it is reported as a hang.
    pub budget: u64,
    /// Host threads for the blocks of a grid.
    pub threads: usize,
    /// Collect `Stats::counters` (instruction classes, lane efficiency, memory
    /// requests, sectors, wavefronts): off by default, they cost run time.
    pub counters: bool,
}

impl Default for Options {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Options { checks: true, budget: 1 << 28, threads, counters: false }
    }
}

/// Counts from one launch.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub warp_instructions: u64,
    pub barriers: u64,
    /// With `Options::counters`.
    pub counters: Option<Box<Counters>>,
}

/// One pending cp.async copy of one lane: read from global at issue, written to
/// shared memory only by the wait that covers its group.
#[derive(Clone, Copy)]
pub struct AsyncCopy {
    pub lane: u8,
    pub len: u8,
    /// The group it was committed in; `u32::MAX` until committed.
    pub group: u32,
    pub dst: u32,
    pub data: [u8; 16],
}

const MAX_CALL_DEPTH: usize = 8;

pub struct Warp {
    pub regs: Vec<[u64; 32]>,
    pub preds: Vec<u32>,
    pub id: u32,
    /// Lanes that are threads of the block.
    pub live: u32,
    pub ready: u32,
    pub parked: u32,
    pub at_bar: u32,
    pub exited: u32,
    /// Where each lane that is not ready stands (parked, at a barrier, exited).
    pc: [u32; 32],
    /// The ready lanes by pc, ascending, one entry per pc: most of the time a
    /// single group, so finding the lanes to run is a look at the first entry.
    groups: Vec<(u32, u32)>,
    depth: [u8; 32],
    /// Lanes inside a call (depth > 0).
    in_call: u32,
    stack: [[(u32, u32); MAX_CALL_DEPTH]; 32],
    /// Per-lane `.local` memory, `32 * local_bytes`.
    pub local: Vec<u8>,
    pub local_bytes: usize,
    /// Per-lane call-parameter memory.
    pub cparam: Vec<u8>,
    pub cparam_bytes: usize,
    pub asyncq: Vec<AsyncCopy>,
    pub committed: [u32; 32],
    pub executed: u64,
}

impl Warp {
    fn new(prog: &Program, id: u32) -> Warp {
        let mut regs = vec![[0u64; 32]; prog.nregs];
        for &(slot, v) in &prog.consts {
            regs[slot as usize] = [v; 32];
        }
        Warp {
            regs,
            preds: vec![0; prog.npreds],
            id,
            live: 0,
            ready: 0,
            parked: 0,
            at_bar: 0,
            exited: 0,
            pc: [0; 32],
            groups: Vec::with_capacity(32),
            depth: [0; 32],
            in_call: 0,
            stack: [[(0, 0); MAX_CALL_DEPTH]; 32],
            local: vec![0; prog.local_bytes * 32],
            local_bytes: prog.local_bytes,
            cparam: vec![0; prog.call_param_bytes * 32],
            cparam_bytes: prog.call_param_bytes,
            asyncq: Vec::new(),
            committed: [0; 32],
            executed: 0,
        }
    }

    #[inline(always)]
    pub fn r(&self, slot: u32) -> &[u64; 32] {
        debug_assert!((slot as usize) < self.regs.len());
        // SAFETY: decode gives every operand a slot below nregs.
        unsafe { self.regs.get_unchecked(slot as usize) }
    }

    #[inline(always)]
    pub fn rw(&mut self, slot: u32) -> &mut [u64; 32] {
        debug_assert!((slot as usize) < self.regs.len());
        // SAFETY: as `r`.
        unsafe { self.regs.get_unchecked_mut(slot as usize) }
    }

    /// The pc of one lane.
    pub fn lane_pc(&self, l: usize) -> u32 {
        if self.ready >> l & 1 != 0 {
            if let Some(g) = self.groups.iter().find(|g| g.1 >> l & 1 != 0) {
                return g.0;
            }
        }
        self.pc[l]
    }

    /// Adds ready lanes (in no group yet) at `pc`, merging with the lanes there.
    #[inline]
    fn insert(&mut self, pc: u32, mask: u32) {
        match self.groups.binary_search_by_key(&pc, |g| g.0) {
            Ok(i) => self.groups[i].1 |= mask,
            Err(i) => self.groups.insert(i, (pc, mask)),
        }
    }

    /// Takes lanes out of their groups.
    #[inline]
    fn remove(&mut self, mask: u32) {
        if let Some(i) = self.groups.iter().position(|g| g.1 == mask) {
            self.groups.remove(i);
            return;
        }
        for g in self.groups.iter_mut() {
            g.1 &= !mask;
        }
        self.groups.retain(|g| g.1 != 0);
    }

    /// The lanes to run next: those at the lowest pc, where a lane inside a call
    /// counts as standing at its outermost call site, so the lanes that called wait
    /// for nothing and the others wait for them just after the call (they meet again
    /// there instead of running the rest of the kernel twice).
    fn select(&mut self) -> (u32, u32) {
        if self.in_call & self.ready == 0 {
            return self.groups[0];
        }
        let key = |w: &Warp, (p, m): (u32, u32)| {
            lanes(m)
                .map(|l| {
                    let site = if w.depth[l] == 0 { p } else { w.stack[l][0].0 - 1 };
                    (site as u64) << 32 | p as u64
                })
                .min()
                .unwrap_or(u64::MAX)
        };
        *self.groups.iter().min_by_key(|&&g| key(self, g)).expect("ready lanes")
    }

    /// Moves ready lanes in `mask` to `pc`.
    #[inline(always)]
    fn set_pc(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        // A converged warp: one group, moving on together.
        if let [g] = self.groups.as_mut_slice() {
            if g.1 == mask {
                g.0 = pc;
                return;
            }
        }
        self.set_pc_slow(mask, pc);
    }

    #[inline(never)]
    fn set_pc_slow(&mut self, mask: u32, pc: u32) {
        // The usual case: one whole group moves on (the next instruction, or a
        // uniform branch), in place when it keeps its rank.
        if let Some(i) = self.groups.iter().position(|g| g.1 == mask) {
            let before = i == 0 || self.groups[i - 1].0 < pc;
            let after = i + 1 == self.groups.len() || self.groups[i + 1].0 > pc;
            if before && after {
                self.groups[i].0 = pc;
                return;
            }
            self.groups.remove(i);
        } else {
            self.remove(mask);
        }
        self.insert(pc, mask);
    }

    /// Takes ready lanes out of the running set, remembering where they stand.
    fn stop(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        for l in lanes(mask) {
            self.pc[l] = pc;
        }
        self.remove(mask);
        self.ready &= !mask;
    }

    /// Puts stopped lanes (all at `pc`) back into the running set.
    fn resume(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        self.insert(pc, mask);
        self.ready |= mask;
    }
}

/// Shadow state of one shared-memory byte, for racecheck and the cp.async check.
#[derive(Clone, Copy, Default)]
pub struct Shadow {
    pub w_epoch: u32,
    pub r_epoch: u32,
    pub r_mask: u32,
    pub w_warp: u8,
    /// A cp.async copy to this byte is in flight.
    pub pending: bool,
}

pub struct Block {
    pub shared: Vec<u8>,
    pub shadow: Vec<Shadow>,
    /// Increments at each block start and each completed barrier.
    pub epoch: u32,
    /// The epoch the current block started in: older writes are a previous block's.
    pub epoch0: u32,
    pub ctaid: [u32; 3],
    /// This worker's counters, with `Options::counters`.
    pub tally: Option<Box<Tally>>,
}

/// What every instruction can see.
pub struct Launch<'a> {
    pub prog: &'a Program,
    pub params: &'a [u8],
    pub mem: &'a View<'a>,
    pub checks: bool,
    /// Warp instructions a block may execute (Options::budget).
    pub budget: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dyn_smem: u32,
}

pub struct Core<'a> {
    pub w: &'a mut Warp,
    pub b: &'a mut Block,
    pub l: &'a Launch<'a>,
}

/// A fault with the pc and warp it happened at, before it gets its full place.
struct Raised {
    fault: Fault,
    pc: u32,
    warp: u32,
}

fn thread_of(linear: u32, block: [u32; 3]) -> [u32; 3] {
    [linear % block[0], linear / block[0] % block[1], linear / (block[0] * block[1])]
}

impl Launch<'_> {
    fn nthreads(&self) -> u32 {
        self.block[0] * self.block[1] * self.block[2]
    }

    fn init_block(&self, b: &mut Block, warps: &mut [Warp], ctaid: [u32; 3]) {
        b.epoch = b.epoch.wrapping_add(1);
        if b.epoch == 0 || b.epoch == u32::MAX {
            b.shadow.iter_mut().for_each(|s| *s = Shadow::default());
            b.epoch = 1;
        }
        b.epoch0 = b.epoch;
        b.ctaid = ctaid;
        let n = self.nthreads();
        for w in warps.iter_mut() {
            let first = w.id * 32;
            let live = if first + 32 <= n { FULL } else { (1u32 << (n - first)) - 1 };
            w.live = live;
            w.ready = live;
            w.parked = 0;
            w.at_bar = 0;
            w.exited = !live;
            w.groups.clear();
            if live != 0 {
                w.groups.push((0, live));
            }
            w.depth = [0; 32];
            w.in_call = 0;
            // Copies never waited for land in the shared memory of a block that has
            // ended: the next block starts with none in flight.
            for q in w.asyncq.drain(..) {
                if let Some(sh) = b.shadow.get_mut(q.dst as usize..q.dst as usize + q.len as usize) {
                    sh.iter_mut().for_each(|s| s.pending = false);
                }
            }
            w.committed = [0; 32];
            // Only the block index changes between blocks (`fill_specials` set the rest).
            for &(slot, sp) in &self.prog.specials {
                if let Special::Ctaid(k) = sp {
                    w.regs[slot as usize] = [ctaid[k as usize] as u64; 32];
                }
            }
        }
    }

    /// The special registers that stay the same for every block of the launch.
    fn fill_specials(&self, w: &mut Warp) {
        let first = w.id * 32;
        for &(slot, sp) in &self.prog.specials {
            let r = &mut w.regs[slot as usize];
            for (l, v) in r.iter_mut().enumerate() {
                let t = thread_of(first + l as u32, self.block);
                *v = match sp {
                    Special::Tid(k) => t[k as usize],
                    Special::Ntid(k) => self.block[k as usize],
                    Special::Ctaid(_) => 0,
                    Special::Nctaid(k) => self.grid[k as usize],
                    Special::LaneId => l as u32,
                    Special::WarpId => w.id,
                } as u64;
            }
        }
    }

    /// Runs one warp until none of its lanes can move.
    fn run_warp(&self, w: &mut Warp, b: &mut Block, budget: &mut u64) -> Result<(), Raised> {
        let raise = |fault: Fault, pc: u32, w: &Warp| Raised { fault, pc, warp: w.id };
        loop {
            self.run_ready(w, b, budget, &raise)?;
            if w.parked == 0 || !self.wake(w, b)? {
                return Ok(());
            }
        }
    }

    fn run_ready(
        &self,
        w: &mut Warp,
        b: &mut Block,
        budget: &mut u64,
        raise: &impl Fn(Fault, u32, &Warp) -> Raised,
    ) -> Result<(), Raised> {
        let prog = self.prog;
        while w.ready != 0 {
            // A converged warp runs straight-line code without the scheduler's
            // bookkeeping per instruction: only control and warp-wide instructions
            // (or the budget) stop the run.
            if let [(start, group)] = w.groups[..] {
                let (mut pc, mut n) = (start, 0u64);
                while n < *budget {
                    let inst = &prog.insts[pc as usize];
                    if inst.ctrl != Ctrl::Op {
                        break;
                    }
                    let gm = match inst.guard {
                        None => group,
                        Some((p, neg)) => {
                            let pm = w.preds[p as usize];
                            group & if neg { !pm } else { pm }
                        }
                    };
                    if let Some(t) = b.tally.as_deref_mut() {
                        t.c.inst[inst.class as usize] += 1;
                        t.c.thread_inst += gm.count_ones() as u64;
                    }
                    if gm != 0 {
                        let mut core = Core { w: &mut *w, b: &mut *b, l: self };
                        if let Err(f) = (inst.exec)(&mut core, inst, gm) {
                            w.groups[0].0 = pc;
                            return Err(raise(f, pc, w));
                        }
                    }
                    pc += 1;
                    n += 1;
                }
                w.groups[0].0 = pc;
                w.executed += n;
                *budget -= n;
            }
            let (pc, group) = w.select();
            let Some(inst) = prog.insts.get(pc as usize) else {
                let f = Fault::new(FaultKind::Invalid, "execution ran past the end of the function");
                return Err(raise(f, pc.saturating_sub(1), w));
            };
            if *budget == 0 {
                let msg = format!(
                    "the block ran past its budget of {} warp instructions (a hang? PIMOE_EMU_BUDGET raises it)",
                    self.budget
                );
                return Err(raise(Fault::at(FaultKind::Budget, group.trailing_zeros(), msg), pc, w));
            }
            *budget -= 1;
            w.executed += 1;
            let gm = match inst.guard {
                None => group,
                Some((p, neg)) => {
                    let pm = w.preds[p as usize];
                    group & if neg { !pm } else { pm }
                }
            };
            if let Some(t) = b.tally.as_deref_mut() {
                t.c.inst[inst.class as usize] += 1;
                // A warp-synchronous instruction runs once for the lanes that wait
                // for each other; counted here as it is issued.
                t.c.thread_inst += gm.count_ones() as u64;
            }
            match inst.ctrl {
                Ctrl::Op => {
                    if gm != 0 {
                        let mut core = Core { w: &mut *w, b: &mut *b, l: self };
                        (inst.exec)(&mut core, inst, gm).map_err(|f| raise(f, pc, w))?;
                    }
                    w.set_pc(group, pc + 1);
                }
                Ctrl::Bra(t) => {
                    w.set_pc(gm, t);
                    w.set_pc(group & !gm, pc + 1);
                }
                Ctrl::Exit => {
                    w.stop(gm, pc);
                    w.exited |= gm;
                    w.set_pc(group & !gm, pc + 1);
                }
                Ctrl::Ret => {
                    self.ret(w, gm, pc).map_err(|f| raise(f, pc, w))?;
                    w.set_pc(group & !gm, pc + 1);
                }
                Ctrl::Call(cs) => {
                    self.call(w, gm, pc, cs).map_err(|f| raise(f, pc, w))?;
                    w.set_pc(group & !gm, pc + 1);
                }
                Ctrl::Bar => {
                    w.stop(gm, pc);
                    w.at_bar |= gm;
                    w.set_pc(group & !gm, pc + 1);
                }
                Ctrl::Sync(need) => {
                    if gm == 0 {
                        // Every lane here is guarded off: none arrives, all move on.
                        w.set_pc(group, pc + 1);
                    } else {
                        self.warp_sync(w, b, pc, group, gm, need).map_err(|f| raise(f, pc, w))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A warp-synchronous instruction at `pc` reached by the lanes `gm` (guarded on)
    /// of `group`. Lanes naming the same membermask run it together once every
    /// non-exited member is here, lanes already waiting (parked) included; until
    /// then they park. An `.aligned` instruction (mma, ldmatrix) needs the whole
    /// warp, and is undefined once a lane has exited.
    fn warp_sync(
        &self,
        w: &mut Warp,
        b: &mut Block,
        pc: u32,
        group: u32,
        gm: u32,
        need: Need,
    ) -> Result<(), Fault> {
        let inst = &self.prog.insts[pc as usize];
        let parked = self.parked_at(w, pc);
        let here = gm | parked;
        let (mut run, mut wait) = (0u32, 0u32);
        match need {
            Need::All => {
                let gone = !w.live | w.exited;
                if gone != 0 {
                    let msg = format!(
                        "a .aligned warp-wide instruction needs all 32 lanes of the warp, but {}",
                        self.describe_lanes(w, gone)
                    );
                    return Err(Fault::at(FaultKind::Sync, gm.trailing_zeros(), msg));
                }
                if here == FULL {
                    run = FULL;
                    (inst.exec)(&mut Core { w: &mut *w, b: &mut *b, l: self }, inst, FULL)?;
                } else {
                    wait = gm;
                }
            }
            Need::Member(slot) => {
                let r = w.r(slot);
                let mask = r[gm.trailing_zeros() as usize] as u32;
                let one_mask = if gm == FULL {
                    r.iter().all(|&v| v as u32 == mask)
                } else {
                    lanes(gm).all(|l| r[l] as u32 == mask)
                };
                if parked == 0 && one_mask {
                    // The common case: one membermask, nobody waiting here yet.
                    if let Some(l) = lanes(gm & !mask).next() {
                        let msg = format!("the lane is not in its own membermask {mask:#x}");
                        return Err(Fault::at(FaultKind::Sync, l as u32, msg));
                    }
                    // Exited members are not waited for (PTX ISA, shfl.sync / vote.sync).
                    if mask & w.live & !w.exited & !gm == 0 {
                        (inst.exec)(&mut Core { w: &mut *w, b: &mut *b, l: self }, inst, gm)?;
                        w.set_pc(group, pc + 1);
                    } else {
                        w.stop(gm, pc);
                        w.parked |= gm;
                        w.set_pc(group & !gm, pc + 1);
                    }
                    return Ok(());
                }
                let r = *r;
                let mut todo = gm;
                while todo != 0 {
                    let l0 = todo.trailing_zeros() as usize;
                    let mask = r[l0] as u32;
                    let same = lanes(here).filter(|&l| r[l] as u32 == mask).fold(0u32, |m, l| m | 1 << l);
                    let arriving = same & todo;
                    todo &= !arriving;
                    if let Some(l) = lanes(arriving & !mask).next() {
                        let msg = format!("the lane is not in its own membermask {mask:#x}");
                        return Err(Fault::at(FaultKind::Sync, l as u32, msg));
                    }
                    // The ISA requires one membermask value among the members.
                    let other = lanes(here & !same).find(|&k| mask >> k & 1 != 0 || r[k] as u32 & same != 0);
                    if let Some(k) = other {
                        let msg = format!(
                            "lane {l0} has membermask {mask:#x} but lane {k}, which shares members with it, has {:#x}",
                            r[k] as u32
                        );
                        return Err(Fault::at(FaultKind::Sync, l0 as u32, msg));
                    }
                    if mask & w.live & !w.exited & !same == 0 {
                        run |= same;
                        (inst.exec)(&mut Core { w: &mut *w, b: &mut *b, l: self }, inst, same)?;
                    } else {
                        wait |= arriving;
                    }
                }
            }
        }
        let resumed = run & parked;
        w.parked &= !resumed;
        w.resume(resumed, pc);
        w.stop(wait, pc);
        w.parked |= wait;
        w.set_pc((group | resumed) & !wait, pc + 1);
        Ok(())
    }

    /// Once no lane of the warp can move: lanes parked at a warp-synchronous
    /// instruction whose missing members have exited since can run now. Returns
    /// whether any did.
    fn wake(&self, w: &mut Warp, b: &mut Block) -> Result<bool, Raised> {
        let mut todo = w.parked;
        while todo != 0 {
            let pc = w.pc[todo.trailing_zeros() as usize];
            let at = self.parked_at(w, pc);
            todo &= !at;
            let Ctrl::Sync(need) = self.prog.insts[pc as usize].ctrl else { continue };
            // They arrive again, as if for the first time.
            w.parked &= !at;
            w.resume(at, pc);
            self.warp_sync(w, b, pc, at, at, need).map_err(|fault| Raised { fault, pc, warp: w.id })?;
            if w.ready != 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn parked_at(&self, w: &Warp, pc: u32) -> u32 {
        lanes(w.parked).filter(|&l| w.pc[l] == pc).fold(0, |m, l| m | 1 << l)
    }

    fn call(&self, w: &mut Warp, gm: u32, pc: u32, cs: u32) -> Result<(), Fault> {
        let site = &self.prog.calls[cs as usize];
        for l in lanes(gm) {
            let d = w.depth[l] as usize;
            if d == MAX_CALL_DEPTH {
                return Err(Fault::at(
                    FaultKind::Invalid,
                    l as u32,
                    format!("calls nested deeper than {MAX_CALL_DEPTH}"),
                ));
            }
            w.stack[l][d] = (pc + 1, cs);
            w.depth[l] += 1;
            w.in_call |= 1 << l;
            let base = l * w.cparam_bytes;
            for &(from, to, len) in &site.args {
                let (from, to) = (base + from as usize, base + to as usize);
                w.cparam.copy_within(from..from + len as usize, to);
            }
        }
        w.set_pc(gm, site.target);
        Ok(())
    }

    fn ret(&self, w: &mut Warp, gm: u32, pc: u32) -> Result<(), Fault> {
        let mut remaining = gm;
        while remaining != 0 {
            let l0 = remaining.trailing_zeros() as usize;
            if w.depth[l0] == 0 {
                // `ret` from the entry point ends the thread.
                let m = lanes(remaining).filter(|&l| w.depth[l] == 0).fold(0u32, |m, l| m | 1 << l);
                w.stop(m, pc);
                w.exited |= m;
                remaining &= !m;
                continue;
            }
            let top = w.stack[l0][w.depth[l0] as usize - 1];
            let m = lanes(remaining)
                .filter(|&l| w.depth[l] > 0 && w.stack[l][w.depth[l] as usize - 1] == top)
                .fold(0u32, |m, l| m | 1 << l);
            let site = &self.prog.calls[top.1 as usize];
            for l in lanes(m) {
                w.depth[l] -= 1;
                if w.depth[l] == 0 {
                    w.in_call &= !(1 << l);
                }
                let base = l * w.cparam_bytes;
                for &(from, to, len) in &site.rets {
                    let (from, to) = (base + from as usize, base + to as usize);
                    w.cparam.copy_within(from..from + len as usize, to);
                }
            }
            w.set_pc(m, top.0);
            remaining &= !m;
        }
        Ok(())
    }

    /// Runs one block to completion.
    fn run_block(
        &self,
        b: &mut Block,
        warps: &mut [Warp],
        ctaid: [u32; 3],
        budget: u64,
    ) -> Result<(), Raised> {
        self.init_block(b, warps, ctaid);
        let mut budget = budget;
        loop {
            for w in warps.iter_mut() {
                self.run_warp(w, b, &mut budget)?;
            }
            let waiting: u32 = warps.iter().map(|w| (w.at_bar | w.parked).count_ones()).sum();
            if waiting == 0 {
                return Ok(());
            }
            self.release_barrier(b, warps)?;
        }
    }

    /// No warp of the block can move. Lanes parked at a warp-synchronous
    /// instruction then never go on (their missing members are at a barrier, at
    /// another instruction, or passed it guarded off); otherwise every non-exited
    /// thread is at a barrier (exited ones are not waited for), and it completes if
    /// they are all at the same one, or all at non-`.aligned` ones, which may differ.
    fn release_barrier(&self, b: &mut Block, warps: &mut [Warp]) -> Result<(), Raised> {
        for w in warps.iter() {
            if w.parked != 0 {
                let l = w.parked.trailing_zeros() as usize;
                let pc = w.pc[l];
                let at = self.parked_at(w, pc);
                let need = match self.prog.insts[pc as usize].ctrl {
                    Ctrl::Sync(Need::Member(slot)) => w.r(slot)[l] as u32,
                    _ => FULL,
                };
                let msg = format!(
                    "a warp-synchronous instruction waits for lanes that cannot reach it: {}",
                    self.describe_lanes(w, need & !at)
                );
                return Err(Raised { fault: Fault::at(FaultKind::Sync, l as u32, msg), pc, warp: w.id });
            }
        }
        let (mut first, mut mixed): (Option<(u32, u32)>, bool) = (None, false);
        for w in warps.iter() {
            for l in lanes(w.at_bar) {
                let pc = w.pc[l];
                let t = w.id * 32 + l as u32;
                match first {
                    None => first = Some((pc, t)),
                    Some((p, _)) if p == pc => {}
                    Some((p, _)) if self.unaligned_barrier(p) && self.unaligned_barrier(pc) => mixed = true,
                    Some((p, t0)) => {
                        let [x, y, z] = thread_of(t0, self.block);
                        let msg = format!(
                            "threads wait at different barriers: this one, and the one at PTX line {} where thread ({x},{y},{z}) waits",
                            self.prog.insts[p as usize].line
                        );
                        return Err(Raised {
                            fault: Fault::at(FaultKind::Sync, l as u32, msg),
                            pc,
                            warp: w.id,
                        });
                    }
                }
            }
        }
        let Some((pc, _)) = first else { return Ok(()) };
        for w in warps.iter_mut() {
            if !mixed {
                let m = std::mem::take(&mut w.at_bar);
                w.resume(m, pc + 1);
            }
            while w.at_bar != 0 {
                let pc = w.pc[w.at_bar.trailing_zeros() as usize];
                let m = lanes(w.at_bar).filter(|&l| w.pc[l] == pc).fold(0u32, |m, l| m | 1 << l);
                w.at_bar &= !m;
                w.resume(m, pc + 1);
            }
        }
        b.epoch = b.epoch.wrapping_add(1);
        Ok(())
    }

    /// `barrier.sync` without `.aligned`: threads may wait at different instructions
    /// for the same barrier. (Decided from the instruction's text: decode gives both
    /// forms the same `Ctrl::Bar`.)
    fn unaligned_barrier(&self, pc: u32) -> bool {
        self.prog.insts.get(pc as usize).is_some_and(|i| i.aux == 0)
    }

    /// Where the lanes in `m` stand, in runs: "lanes 16-31 wait at the barrier at
    /// PTX line 23; lane 5 exited".
    fn describe_lanes(&self, w: &Warp, m: u32) -> String {
        let state = |l: usize| -> (u8, u32) {
            if w.live >> l & 1 == 0 {
                (0, 0)
            } else if w.exited >> l & 1 != 0 {
                (1, 0)
            } else if w.at_bar >> l & 1 != 0 {
                (2, w.pc[l])
            } else if w.parked >> l & 1 != 0 {
                (3, w.pc[l])
            } else {
                (4, w.lane_pc(l))
            }
        };
        let line = |pc: u32| self.prog.insts.get(pc as usize).map_or(0, |i| i.line);
        let mut parts = Vec::new();
        let mut l = 0;
        while l < 32 {
            if m >> l & 1 == 0 {
                l += 1;
                continue;
            }
            let s = state(l);
            let mut e = l;
            while e < 31 && m >> (e + 1) & 1 != 0 && state(e + 1) == s {
                e += 1;
            }
            let (who, one) =
                if e == l { (format!("lane {l}"), true) } else { (format!("lanes {l}-{e}"), false) };
            let (is, waits) = if one { ("is", "waits") } else { ("are", "wait") };
            let what = match s {
                (0, _) => format!("{is} not a thread of the block"),
                (1, _) => "exited".to_string(),
                (2, pc) => format!("{waits} at the barrier at PTX line {}", line(pc)),
                (3, pc) => format!("{waits} at the warp-synchronous instruction at PTX line {}", line(pc)),
                (_, pc) => format!("{is} at PTX line {}", line(pc)),
            };
            parts.push(format!("{who} {what}"));
            l = e + 1;
        }
        parts.join("; ")
    }

    fn report(&self, r: Raised, ctaid: [u32; 3], warps: &[Warp]) -> KernelError {
        let pc = r.pc as usize;
        let lane = r.fault.lane;
        let thread = lane.map(|l| thread_of(r.warp * 32 + l, self.block));
        let _ = warps;
        KernelError {
            kind: r.fault.kind,
            kernel: self.prog.name.clone(),
            block: ctaid,
            thread,
            ptx_line: self.prog.insts.get(pc).map_or(0, |i| i.line),
            source: self.prog.source(pc),
            instruction: self.prog.text.get(pc).cloned().unwrap_or_default(),
            msg: r.fault.msg,
        }
    }
}

/// A launch's geometry and arguments.
pub struct Config<'a> {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dyn_smem: u32,
    pub params: &'a [u8],
}

/// Runs a grid to completion or to its first fault (the lowest block that faulted).
pub fn launch(
    prog: &Program,
    mem: &View<'_>,
    cfg: &Config<'_>,
    opts: &Options,
) -> Result<Stats, KernelError> {
    let l = Launch {
        prog,
        params: cfg.params,
        mem,
        checks: opts.checks,
        budget: opts.budget,
        grid: cfg.grid,
        block: cfg.block,
        dyn_smem: cfg.dyn_smem,
    };
    let nblocks = cfg.grid.iter().map(|&g| g as usize).product::<usize>();
    let nwarps = (l.nthreads() as usize).div_ceil(32);
    let shared = prog.dyn_offset + cfg.dyn_smem as usize;
    let shared = shared.max(prog.shared_static);
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, KernelError)>> = Mutex::new(None);
    let (wi, bars) = (AtomicU64::new(0), AtomicU64::new(0));
    let totals: Mutex<(Counters, Traffic)> = Mutex::default();
    let work = || {
        let mut b = Block {
            shared: vec![0u8; shared],
            shadow: if opts.checks { vec![Shadow::default(); shared] } else { Vec::new() },
            epoch: 0,
            epoch0: 0,
            ctaid: [0; 3],
            tally: opts.counters.then(Box::default),
        };
        let mut warps: Vec<Warp> = (0..nwarps as u32).map(|i| Warp::new(prog, i)).collect();
        for w in warps.iter_mut() {
            l.fill_specials(w);
        }
        loop {
            if abort.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= nblocks {
                break;
            }
            let g = cfg.grid;
            let ctaid = [
                (i % g[0] as usize) as u32,
                (i / g[0] as usize % g[1] as usize) as u32,
                (i / (g[0] as usize * g[1] as usize)) as u32,
            ];
            let epoch_before = b.epoch;
            if let Err(r) = l.run_block(&mut b, &mut warps, ctaid, opts.budget) {
                let e = l.report(r, ctaid, &warps);
                let mut fe = first_err.lock().unwrap_or_else(|e| e.into_inner());
                if fe.as_ref().is_none_or(|(j, _)| i < *j) {
                    *fe = Some((i, e));
                }
                abort.store(true, Ordering::Relaxed);
                break;
            }
            bars.fetch_add(b.epoch.wrapping_sub(epoch_before).saturating_sub(1) as u64, Ordering::Relaxed);
        }
        for w in &warps {
            wi.fetch_add(w.executed, Ordering::Relaxed);
        }
        if let Some(t) = b.tally.take() {
            let mut tot = totals.lock().unwrap_or_else(|e| e.into_inner());
            tot.0.add(&t.c);
            tot.1.merge(t.traffic);
        }
    };
    let threads = opts.threads.clamp(1, nblocks.max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(&work);
            }
        });
    }
    if let Some((_, e)) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let barriers = bars.into_inner();
    let counters = opts.counters.then(|| {
        let (mut c, traffic) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
        (c.dram_read_sectors, c.dram_write_sectors) = traffic.unique();
        c.barriers = barriers;
        Box::new(c)
    });
    Ok(Stats { warp_instructions: wi.into_inner(), barriers, counters })
}

/// d = f(lane, sources) for the lanes in `m`: the lane-wise core of most exec
/// functions. Registers are read and written in place through raw pointers (no
/// copy of a 256-byte register array per operand); each lane reads all its
/// sources before writing its destination, so the destination may be a source.
#[inline(always)]
pub fn lanewise<const N: usize>(
    w: &mut Warp,
    d: u32,
    srcs: [u32; N],
    m: u32,
    f: impl Fn(usize, [u64; N]) -> u64,
) {
    let n = w.regs.len();
    debug_assert!((d as usize) < n && srcs.iter().all(|&s| (s as usize) < n));
    let base = w.regs.as_mut_ptr() as *mut u64;
    // SAFETY: decode gives every operand a slot below nregs, so each pointer is to
    // the 32 lanes of a live register; only raw pointers touch them here.
    unsafe {
        let ptrs: [*const u64; N] = srcs.map(|s| base.add(s as usize * 32) as *const u64);
        let pd = base.add(d as usize * 32);
        let one = |l: usize| {
            let v = f(l, ptrs.map(|p| *p.add(l)));
            *pd.add(l) = v;
        };
        if m == FULL {
            for l in 0..32 {
                one(l);
            }
        } else {
            for l in lanes(m) {
                one(l);
            }
        }
    }
}
