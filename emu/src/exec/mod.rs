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
pub mod fp;
pub mod memops;
pub mod warpops;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Fault, FaultKind, KernelError};
use crate::ir::{Ctrl, Need, Program, Special};
use crate::mem::View;

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
}

impl Default for Options {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Options { checks: true, budget: 1 << 28, threads }
    }
}

/// Counts from one launch.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub warp_instructions: u64,
    pub lane_instructions: u64,
    pub barriers: u64,
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
    pc: [u32; 32],
    /// Some(pc) when every ready lane is at pc (then `pc[]` is stale for them).
    conv: Option<u32>,
    depth: [u8; 32],
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
    pub lane_ops: u64,
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
            conv: None,
            depth: [0; 32],
            stack: [[(0, 0); MAX_CALL_DEPTH]; 32],
            local: vec![0; prog.local_bytes * 32],
            local_bytes: prog.local_bytes,
            cparam: vec![0; prog.call_param_bytes * 32],
            cparam_bytes: prog.call_param_bytes,
            asyncq: Vec::new(),
            committed: [0; 32],
            executed: 0,
            lane_ops: 0,
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
        match self.conv {
            Some(pc) if self.ready >> l & 1 != 0 => pc,
            _ => self.pc[l],
        }
    }

    fn materialize(&mut self) {
        if let Some(c) = self.conv.take() {
            for l in lanes(self.ready) {
                self.pc[l] = c;
            }
        }
    }

    fn select(&mut self) -> (u32, u32) {
        if let Some(pc) = self.conv {
            return (pc, self.ready);
        }
        let (mut best, mut m) = (u32::MAX, 0u32);
        for l in lanes(self.ready) {
            let p = self.pc[l];
            if p < best {
                best = p;
                m = 1 << l;
            } else if p == best {
                m |= 1 << l;
            }
        }
        if m == self.ready {
            self.conv = Some(best);
        }
        (best, m)
    }

    /// Moves ready lanes in `mask` to `pc`.
    #[inline]
    fn set_pc(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        if self.conv.is_some() {
            if mask == self.ready {
                self.conv = Some(pc);
                return;
            }
            self.materialize();
        }
        for l in lanes(mask) {
            self.pc[l] = pc;
        }
    }

    /// Takes ready lanes out of the running set, remembering where they stand.
    fn stop(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        for l in lanes(mask) {
            self.pc[l] = pc;
        }
        self.ready &= !mask;
        if self.ready == 0 {
            self.conv = None;
        }
    }

    /// Puts stopped lanes (all at `pc`) back into the running set.
    fn resume(&mut self, mask: u32, pc: u32) {
        if mask == 0 {
            return;
        }
        if self.ready == 0 {
            self.conv = Some(pc);
        } else if self.conv != Some(pc) {
            self.materialize();
            for l in lanes(mask) {
                self.pc[l] = pc;
            }
        }
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
}

/// What every instruction can see.
pub struct Launch<'a> {
    pub prog: &'a Program,
    pub params: &'a [u8],
    pub mem: &'a View<'a>,
    pub checks: bool,
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
            w.conv = Some(0);
            w.depth = [0; 32];
            w.asyncq.clear();
            w.committed = [0; 32];
            for &(slot, sp) in &self.prog.specials {
                let r = &mut w.regs[slot as usize];
                for (l, v) in r.iter_mut().enumerate() {
                    let t = thread_of(first + l as u32, self.block);
                    *v = match sp {
                        Special::Tid(k) => t[k as usize],
                        Special::Ntid(k) => self.block[k as usize],
                        Special::Ctaid(k) => ctaid[k as usize],
                        Special::Nctaid(k) => self.grid[k as usize],
                        Special::LaneId => l as u32,
                        Special::WarpId => w.id,
                    } as u64;
                }
            }
        }
    }

    /// Runs one warp until none of its lanes can move.
    fn run_warp(&self, w: &mut Warp, b: &mut Block, budget: &mut u64) -> Result<(), Raised> {
        let prog = self.prog;
        let raise = |fault: Fault, pc: u32, w: &Warp| Raised { fault, pc, warp: w.id };
        while w.ready != 0 {
            let (pc, group) = w.select();
            let Some(inst) = prog.insts.get(pc as usize) else {
                let f = Fault::new(FaultKind::Invalid, "execution ran past the end of the function");
                return Err(raise(f, pc.saturating_sub(1), w));
            };
            if *budget == 0 {
                let f = Fault::new(
                    FaultKind::Budget,
                    "the block ran past its instruction budget (a hang? PIMOE_EMU_BUDGET raises it)",
                );
                return Err(raise(f, pc, w));
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
            w.lane_ops += gm.count_ones() as u64;
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
                    let present = group | self.parked_at(w, pc);
                    let need = match need {
                        Need::All => {
                            if w.exited & w.live != 0 || w.live != FULL {
                                let f = Fault::new(
                                    FaultKind::Sync,
                                    format!("a .aligned warp-wide instruction with lanes {} exited or not launched", mask_list(!w.live | w.exited)),
                                );
                                return Err(raise(f, pc, w));
                            }
                            FULL
                        }
                        Need::Member(slot) => {
                            let r = w.r(slot);
                            let first = r[gm.trailing_zeros().min(31) as usize] as u32;
                            if let Some(l) = lanes(gm).find(|&l| r[l] as u32 != first) {
                                let f = Fault::at(
                                    FaultKind::Sync,
                                    l as u32,
                                    format!(
                                        "membermask {:#x} differs from lane {}'s {first:#x}",
                                        r[l] as u32,
                                        gm.trailing_zeros()
                                    ),
                                );
                                return Err(raise(f, pc, w));
                            }
                            if let Some(l) = lanes(gm & !first).next() {
                                let f = Fault::at(
                                    FaultKind::Sync,
                                    l as u32,
                                    format!("the lane is not in its own membermask {first:#x}"),
                                );
                                return Err(raise(f, pc, w));
                            }
                            // Exited members are not waited for (PTX ISA, shfl.sync / vote.sync).
                            first & !w.exited & w.live
                        }
                    };
                    let running = gm | (present & !group);
                    if need & !running == 0 {
                        let parked_here = present & !group;
                        w.parked &= !parked_here;
                        w.resume(parked_here, pc);
                        let mut core = Core { w: &mut *w, b: &mut *b, l: self };
                        (inst.exec)(&mut core, inst, running).map_err(|f| raise(f, pc, w))?;
                        w.set_pc(group | parked_here, pc + 1);
                    } else {
                        w.stop(gm, pc);
                        w.parked |= gm;
                        w.set_pc(group & !gm, pc + 1);
                    }
                }
            }
        }
        Ok(())
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

    /// All warps are stuck: every non-exited thread must be at one barrier.
    fn release_barrier(&self, b: &mut Block, warps: &mut [Warp]) -> Result<(), Raised> {
        let mut bar_pc = None;
        for w in warps.iter() {
            if w.parked != 0 {
                let l = w.parked.trailing_zeros() as usize;
                let pc = w.pc[l];
                let need = describe_lanes(w, |l| w.pc[l] != pc || w.parked >> l & 1 == 0);
                let f = Fault::at(
                    FaultKind::Sync,
                    l as u32,
                    format!("a warp-synchronous instruction waits for lanes that cannot reach it ({need})"),
                );
                return Err(Raised { fault: f, pc, warp: w.id });
            }
            for l in lanes(w.at_bar) {
                let pc = w.pc[l];
                match bar_pc {
                    None => bar_pc = Some((pc, w.id, l)),
                    Some((p, wid, wl)) if p != pc => {
                        let f = Fault::at(
                            FaultKind::Sync,
                            l as u32,
                            format!(
                                "threads wait at different barriers: this one, and PTX line {} (warp {wid} lane {wl})",
                                self.prog.insts[p as usize].line
                            ),
                        );
                        return Err(Raised { fault: f, pc, warp: w.id });
                    }
                    _ => {}
                }
            }
        }
        let Some((pc, _, _)) = bar_pc else { return Ok(()) };
        for w in warps.iter() {
            let missing = w.live & !w.exited & !w.at_bar;
            if missing != 0 {
                let f = Fault::at(
                    FaultKind::Sync,
                    missing.trailing_zeros(),
                    "this thread never reached the barrier the rest of the block waits at",
                );
                return Err(Raised { fault: f, pc, warp: w.id });
            }
        }
        for w in warps.iter_mut() {
            let m = w.at_bar;
            w.at_bar = 0;
            w.resume(m, pc + 1);
        }
        b.epoch = b.epoch.wrapping_add(1);
        Ok(())
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

fn mask_list(m: u32) -> String {
    let v: Vec<String> = lanes(m).map(|l| l.to_string()).collect();
    v.join(",")
}

fn describe_lanes(w: &Warp, pick: impl Fn(usize) -> bool) -> String {
    let mut parts = Vec::new();
    for l in 0..32 {
        if w.live >> l & 1 == 0 || !pick(l) {
            continue;
        }
        let state = if w.exited >> l & 1 != 0 {
            "exited".to_string()
        } else if w.at_bar >> l & 1 != 0 {
            "at a barrier".to_string()
        } else {
            format!("at instruction {}", w.lane_pc(l))
        };
        parts.push(format!("lane {l} {state}"));
    }
    parts.join("; ")
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
    let (wi, li, bars) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let work = || {
        let mut b = Block {
            shared: vec![0u8; shared],
            shadow: if opts.checks { vec![Shadow::default(); shared] } else { Vec::new() },
            epoch: 0,
            epoch0: 0,
            ctaid: [0; 3],
        };
        let mut warps: Vec<Warp> = (0..nwarps as u32).map(|i| Warp::new(prog, i)).collect();
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
            li.fetch_add(w.lane_ops, Ordering::Relaxed);
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
    Ok(Stats {
        warp_instructions: wi.into_inner(),
        lane_instructions: li.into_inner(),
        barriers: bars.into_inner(),
    })
}

/// Helper for exec functions: computes `f` for every lane, keeps lanes outside `m`.
#[inline(always)]
pub fn blend(d: &mut [u64; 32], m: u32, f: impl Fn(usize) -> u64) {
    if m == FULL {
        for (l, v) in d.iter_mut().enumerate() {
            *v = f(l);
        }
    } else {
        for l in lanes(m) {
            d[l] = f(l);
        }
    }
}
