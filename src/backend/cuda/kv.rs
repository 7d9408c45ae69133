//! Launcher for kernels/kv.cu: the step's k and v into the paged bf16 cache.
//! CPU twin: kv_write in backend/cpu/attention.rs.

use super::{Arg, CudaBackend, CudaCache, CudaIndex, CudaTensor, Grid};
use crate::backend::{AttnPlan, AttnShape};

const MODULE: &str = "kv";

/// k_cache, v_cache (num_slots, hk * d) bf16 [plan.slots] = the k and v parts of
/// qkv (n, (hq + 2 hk) * d), rounded to nearest even; n = plan.slots.len.
///
/// Preconditions (checked): qkv holds at least n rows; both caches are whole rows
/// of hk * d. Slots come from the host's block allocator and are distinct within a
/// step (two tokens in one slot would race); a slot past the end of the cache is
/// memory-safe: the kernel skips that token.
pub fn kv_write(
    b: &CudaBackend,
    k_cache: &mut CudaCache,
    v_cache: &mut CudaCache,
    qkv: &CudaTensor,
    plan: &AttnPlan<CudaIndex>,
    shape: AttnShape,
) {
    let Some(sizes) = check(b, "kv_write", k_cache, v_cache, qkv, plan.slots.len, shape) else { return };
    let n = plan.slots.len;
    if n == 0 {
        return;
    }
    let kv = sizes.kv;
    let units = if kv % 4 == 0 { kv / 4 } else { kv };
    let threads = (units.div_ceil(32) * 32).clamp(32, 256) as u32;
    // SAFETY: kv_write_bf16(k_cache, v_cache, qkv, slots, q, kv, num_slots): grid (n)
    // reads slots[0..n] (it holds n) and qkv[0..n * row] (checked), and writes kv
    // bf16 at row slot of each cache only for slot < num_slots = len / kv.
    b.launch(
        MODULE,
        "kv_write_bf16",
        Grid::new(n as u32, threads, 0),
        &[
            Arg::from(&*k_cache),
            Arg::from(&*v_cache),
            Arg::from(qkv),
            Arg::from(&plan.slots),
            Arg::from(sizes.q as u32),
            Arg::from(kv as u32),
            Arg::from(sizes.num_slots as u32),
        ],
    );
}

/// Sizes of a cache write: q = hq * d and kv = hk * d elements of a qkv row, and the
/// cache's rows.
pub struct KvSizes {
    pub q: usize,
    pub kv: usize,
    pub num_slots: usize,
}

/// The checks every cache write makes (also rope.rs's fused one); None after failing
/// the backend.
pub fn check(
    b: &CudaBackend,
    op: &str,
    k_cache: &CudaCache,
    v_cache: &CudaCache,
    qkv: &CudaTensor,
    n: usize,
    shape: AttnShape,
) -> Option<KvSizes> {
    let d = shape.head_dim;
    let (q, kv) = (shape.num_heads * d, shape.num_kv_heads * d);
    let row = q + 2 * kv;
    let fail = |msg: String| {
        b.fail(format!("{op}: {msg}"));
        None
    };
    if kv == 0 || row > u32::MAX as usize || n > i32::MAX as usize {
        return fail(format!("shape {shape:?} or {n} tokens out of range"));
    }
    if qkv.len < n * row {
        return fail(format!("qkv holds {} elements, {n} tokens x {row} need {}", qkv.len, n * row));
    }
    if k_cache.len % kv != 0 || v_cache.len != k_cache.len {
        return fail(format!(
            "caches of {} and {} elements, expected equal whole rows of {kv}",
            k_cache.len, v_cache.len
        ));
    }
    Some(KvSizes { q, kv, num_slots: (k_cache.len / kv).min(u32::MAX as usize) })
}
