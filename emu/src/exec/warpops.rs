//! Warp-wide instructions: shfl.sync, vote.sync, bar.warp.sync, ldmatrix and
//! mma (PTX ISA §9.7.8.6 shfl.sync, §9.7.12 vote, §9.7.14 warp-level matrix
//! instructions). The scheduler calls these once every lane they need is here,
//! with `m` the lanes taking part.

use super::{lanes, Core};
use crate::error::{Fault, FaultKind};
use crate::ir::{Exec, Inst, NONE};

type R = Result<(), Fault>;

pub const UP: u8 = 0;
pub const DOWN: u8 = 1;
pub const BFLY: u8 = 2;
pub const IDX: u8 = 3;

/// shfl.sync.MODE.b32 d[|p], a, b, c, membermask (the ISA's pseudocode).
fn shfl<const MODE: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let (a, b, cc) = (*c.w.r(i.s[0]), *c.w.r(i.s[1]), *c.w.r(i.s[2]));
    let mut out = [0u64; 32];
    let mut pmask = 0u32;
    for lane in lanes(m) {
        let bval = (b[lane] & 0x1f) as i32;
        let cval = (cc[lane] & 0x1f) as i32;
        let seg = ((cc[lane] >> 8) & 0x1f) as i32;
        let l = lane as i32;
        let max_lane = (l & seg) | (cval & !seg);
        let min_lane = l & seg;
        let (j, pval) = match MODE {
            UP => (l - bval, l - bval >= max_lane),
            DOWN => (l + bval, l + bval <= max_lane),
            BFLY => (l ^ bval, (l ^ bval) <= max_lane),
            _ => {
                let j = min_lane | (bval & !seg);
                (j, j <= max_lane)
            }
        };
        let src = if pval { j as usize } else { lane };
        if m >> src & 1 == 0 {
            return Err(Fault::at(
                FaultKind::Sync,
                lane as u32,
                format!(
                    "shfl.sync reads lane {src}, which does not take part in it (the value is undefined)"
                ),
            ));
        }
        out[lane] = a[src] & 0xffff_ffff;
        pmask |= (pval as u32) << lane;
    }
    let d = c.w.rw(i.d[0]);
    for l in lanes(m) {
        d[l] = out[l];
    }
    if i.p[0] != NONE {
        let p = &mut c.w.preds[i.p[0] as usize];
        *p = (*p & !m) | (pmask & m);
    }
    Ok(())
}

pub fn shfl_op(mode: &str) -> Option<Exec> {
    Some(match mode {
        "up" => shfl::<UP> as Exec,
        "down" => shfl::<DOWN>,
        "bfly" => shfl::<BFLY>,
        "idx" => shfl::<IDX>,
        _ => return None,
    })
}

pub const BALLOT: u8 = 0;
pub const ANY: u8 = 1;
pub const ALL: u8 = 2;
pub const UNI: u8 = 3;

/// vote.sync.ballot.b32 d, {!}p, membermask; vote.sync.{any,all,uni}.pred d, {!}p, membermask.
fn vote<const MODE: u8>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let mut p = c.w.preds[i.p[0] as usize];
    if i.aux != 0 {
        p = !p;
    }
    let votes = p & m;
    match MODE {
        BALLOT => {
            let d = c.w.rw(i.d[0]);
            for l in lanes(m) {
                d[l] = votes as u64;
            }
        }
        _ => {
            let r = match MODE {
                ANY => votes != 0,
                ALL => votes == m,
                _ => votes == 0 || votes == m,
            };
            let d = &mut c.w.preds[i.p[1] as usize];
            *d = (*d & !m) | if r { m } else { 0 };
        }
    }
    Ok(())
}

pub fn vote_op(mode: &str) -> Option<Exec> {
    Some(match mode {
        "ballot" => vote::<BALLOT> as Exec,
        "any" => vote::<ANY>,
        "all" => vote::<ALL>,
        "uni" => vote::<UNI>,
        _ => return None,
    })
}

fn warp_sync(_c: &mut Core<'_>, _i: &Inst, _m: u32) -> R {
    Ok(())
}

pub fn warp_sync_op() -> Exec {
    warp_sync
}

/// ldmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16: lanes 8k..8k+7 give the row
/// addresses of matrix k; register k of lane t holds matrix k's elements
/// (t/4, 2(t%4)) and (t/4, 2(t%4)+1), or with .trans (2(t%4), t/4) and
/// (2(t%4)+1, t/4).
fn ldmatrix<const N: usize, const TRANS: bool>(c: &mut Core<'_>, i: &Inst, m: u32) -> R {
    let a = *c.w.r(i.s[0]);
    if let Some(t) = c.b.tally.as_deref_mut() {
        // Lanes 8k..8k+7 address matrix k's rows: one 128-byte phase per matrix.
        let addrs: [(u32, u64); 32] = std::array::from_fn(|l| (l as u32, a[l].wrapping_add(i.imm as u64)));
        t.c.ldmatrix += 1;
        t.shared(super::counters::Access::Load, &addrs[..8 * N], 16, 8, i.line);
    }
    // rows[k][r][col]: matrix k, row r, 8 b16 elements.
    let mut rows = [[[0u16; 8]; 8]; N];
    for k in 0..N {
        for r in 0..8 {
            let lane = k * 8 + r;
            let addr = a[lane].wrapping_add(i.imm as u64);
            if addr % 16 != 0 {
                return Err(Fault::at(
                    FaultKind::Misaligned,
                    lane as u32,
                    format!("ldmatrix row address {addr:#x} is not 16-byte aligned"),
                ));
            }
            let v = super::memops::shared_row(c, addr, lane)?;
            for (col, e) in rows[k][r].iter_mut().enumerate() {
                *e = u16::from_le_bytes([v[2 * col], v[2 * col + 1]]);
            }
        }
    }
    for k in 0..N {
        let d = c.w.rw(i.d[k]);
        for t in lanes(m) {
            let (lo, hi) = if TRANS {
                (rows[k][2 * (t % 4)][t / 4], rows[k][2 * (t % 4) + 1][t / 4])
            } else {
                (rows[k][t / 4][2 * (t % 4)], rows[k][t / 4][2 * (t % 4) + 1])
            };
            d[t] = lo as u64 | (hi as u64) << 16;
        }
    }
    Ok(())
}

pub fn ldmatrix_op(n: usize, trans: bool) -> Option<Exec> {
    Some(match (n, trans) {
        (1, false) => ldmatrix::<1, false> as Exec,
        (2, false) => ldmatrix::<2, false>,
        (4, false) => ldmatrix::<4, false>,
        (1, true) => ldmatrix::<1, true>,
        (2, true) => ldmatrix::<2, true>,
        (4, true) => ldmatrix::<4, true>,
        _ => return None,
    })
}

#[inline(always)]
fn bf16(b: u64) -> f64 {
    f32::from_bits((b as u32) << 16) as f64
}

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c with the ISA's
/// fragment layouts (groupID = lane >> 2, tig = lane % 4):
///   A (16x16): a_i at row groupID (+8 for i in 2,3,6,7), col 2 tig + (i & 1) (+8 for i >= 4);
///   B (16x8):  b_i at row 2 tig + (i & 1) (+8 for i >= 2), col groupID;
///   C, D (16x8): c_i at row groupID (+8 for i >= 2), col 2 tig + (i & 1).
/// The products are exact; each output is the f64 sum of its 16 products and c,
/// rounded once to f32 (the ISA leaves the accumulation's order and internal
/// precision to the implementation).
fn mma_bf16(c: &mut Core<'_>, i: &Inst, _m: u32) -> R {
    let mut am = [[0f64; 16]; 16];
    let mut bm = [[0f64; 8]; 16];
    let mut cm = [[0f64; 8]; 16];
    let regs: [[u64; 32]; 10] = std::array::from_fn(|k| *c.w.r(i.s[k]));
    for lane in 0..32 {
        let (g, t) = (lane >> 2, lane % 4);
        for e in 0..8 {
            let reg = regs[e / 2][lane];
            let half = if e % 2 == 0 { reg & 0xffff } else { reg >> 16 & 0xffff };
            let row = if e < 2 || (4..6).contains(&e) { g } else { g + 8 };
            let col = 2 * t + (e & 1) + if e >= 4 { 8 } else { 0 };
            am[row][col] = bf16(half);
        }
        for e in 0..4 {
            let reg = regs[4 + e / 2][lane];
            let half = if e % 2 == 0 { reg & 0xffff } else { reg >> 16 & 0xffff };
            let row = 2 * t + (e & 1) + if e >= 2 { 8 } else { 0 };
            bm[row][g] = bf16(half);
        }
        for e in 0..4 {
            let row = if e < 2 { g } else { g + 8 };
            cm[row][2 * t + (e & 1)] = f32::from_bits(regs[6 + e][lane] as u32) as f64;
        }
    }
    let mut out = [[0u64; 32]; 4];
    for lane in 0..32 {
        let (g, t) = (lane >> 2, lane % 4);
        for (e, o) in out.iter_mut().enumerate() {
            let row = if e < 2 { g } else { g + 8 };
            let col = 2 * t + (e & 1);
            let mut acc = cm[row][col];
            for k in 0..16 {
                acc += am[row][k] * bm[k][col];
            }
            let r = acc as f32;
            o[lane] = if r.is_nan() { super::fp::NAN32 as u64 } else { r.to_bits() as u64 };
        }
    }
    for (e, o) in out.iter().enumerate() {
        *c.w.rw(i.d[e]) = *o;
    }
    Ok(())
}

pub fn mma_op() -> Exec {
    mma_bf16
}
