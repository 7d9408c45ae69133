//! kv_write (kernels/kv.cu) against the CPU. Both caches start as zeros; the GPU's
//! is bf16, so it must equal the CPU's f32 cache rounded to bf16 (nearest even),
//! bit for bit, over the whole cache: written slots and untouched ones.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};
use pimoe::sampling::Rng;

const ROWS: [usize; 3] = [1, 31, 33];
const SHAPES: [(usize, usize, usize); 3] = [(9, 3, 64), (14, 2, 64), (7, 1, 128)];
const BLOCK_SIZE: usize = 16;
const NUM_BLOCKS: usize = 5;

/// n distinct slots in a random order, so tokens land out of order and some slots
/// stay empty (n <= NUM_BLOCKS * BLOCK_SIZE).
fn distinct_slots(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut all: Vec<u32> = (0..(NUM_BLOCKS * BLOCK_SIZE) as u32).collect();
    for i in (1..all.len()).rev() {
        all.swap(i, rng.next_u32() as usize % (i + 1));
    }
    all.truncate(n);
    all
}

/// kv_write reads only the slots; the rest describes one sequence over the cache.
fn plan<B: Backend>(b: &B, slots: &[u32]) -> AttnPlan<B::Index> {
    let n = slots.len() as u32;
    AttnPlan {
        positions: b.index(&(0..n).collect::<Vec<_>>()),
        token_seq: b.index(&vec![0; slots.len()]),
        slots: b.index(slots),
        block_tables: b.index(&(0..NUM_BLOCKS as u32).collect::<Vec<_>>()),
        max_blocks: NUM_BLOCKS,
        block_size: BLOCK_SIZE,
        seqs: vec![SeqSpan { first: 0, len: n, start: 0 }],
    }
}

/// The (k, v) caches read back as f32 after one kv_write into zeroed caches.
fn kv_write_on<B: Backend>(b: &B, qkv: &[f32], slots: &[u32], shape: AttnShape) -> (Vec<f32>, Vec<f32>) {
    let len = NUM_BLOCKS * BLOCK_SIZE * shape.num_kv_heads * shape.head_dim;
    let (mut k, mut v) = (b.cache(len), b.cache(len));
    b.kv_write(&mut k, &mut v, &b.tensor_from(qkv), &plan(b, slots), shape);
    let out = (b.cache_to_host(&k), b.cache_to_host(&v));
    b.check().unwrap_or_else(|e| panic!("kv_write on {}: {e}", b.name()));
    out
}

/// Random f32 with some exact bf16 ties (halfway between two bf16 values, both
/// parities), where round-to-nearest-even differs from round-half-up.
fn qkv_with_ties(len: usize, seed: u64) -> Vec<f32> {
    let mut x = rand_vec(len, seed);
    for (j, v) in x.iter_mut().step_by(7).enumerate() {
        // A bf16 value near v whose last bit alternates (even, odd, ...), plus half
        // a bf16 ulp: the even neighbour is below for even, above for odd.
        let hi = (half::bf16::from_f32(*v).to_bits() as u32 & !1) | (j as u32 & 1);
        *v = f32::from_bits((hi << 16) | 0x8000);
    }
    x
}

#[test]
fn kv_write_matches_cpu() {
    let Some(g) = gpu("kv_write_matches_cpu") else { return };
    for &(hq, hk, d) in &SHAPES {
        let shape = AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d };
        let row = (hq + 2 * hk) * d;
        for &n in &ROWS {
            let seed = (n * 1000 + hq * 10 + d) as u64;
            let qkv = qkv_with_ties(n * row, seed);
            let slots = distinct_slots(n, seed + 1);
            let (k_cpu, v_cpu) = kv_write_on(&CpuBackend, &qkv, &slots, shape);
            let (k_gpu, v_gpu) = kv_write_on(&g, &qkv, &slots, shape);
            for (what, got, want) in [("k", &k_gpu, &k_cpu), ("v", &v_gpu, &v_cpu)] {
                let want = bf16_exact(want);
                if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                    panic!(
                        "kv_write {what} cache n={n} hq={hq} hk={hk} d={d}: first difference at [{i}] \
                         (slot {}, element {}): got {} want {}",
                        i / (hk * d),
                        i % (hk * d),
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// A slot past the end of the cache is skipped, not written out of bounds.
#[test]
fn kv_write_skips_bad_slots() {
    let Some(g) = gpu("kv_write_skips_bad_slots") else { return };
    let shape = AttnShape { num_heads: 14, num_kv_heads: 2, head_dim: 64 };
    let row = (14 + 4) * 64;
    let qkv = rand_vec(3 * row, 9);
    let end = (NUM_BLOCKS * BLOCK_SIZE) as u32;
    let (k, v) = kv_write_on(&g, &qkv, &[2, end, u32::MAX], shape);
    let (k_want, v_want) = kv_write_on(&CpuBackend, &qkv[..row], &[2], shape);
    assert_eq!(k, bf16_exact(&k_want), "k cache");
    assert_eq!(v, bf16_exact(&v_want), "v cache");
}

/// qkv and the caches after rope then kv_write as two ops, or as the fused
/// rope_kv_write, at random positions.
fn rope_then_write<B: Backend>(
    b: &B,
    qkv: &[f32],
    slots: &[u32],
    shape: AttnShape,
    fused: bool,
) -> [Vec<f32>; 3] {
    let len = NUM_BLOCKS * BLOCK_SIZE * shape.num_kv_heads * shape.head_dim;
    let (mut k, mut v) = (b.cache(len), b.cache(len));
    let mut rng = Rng::new(slots.len() as u64);
    let positions: Vec<u32> = slots.iter().map(|_| rng.next_u32() % 32_768).collect();
    let plan = AttnPlan { positions: b.index(&positions), ..plan(b, slots) };
    let mut t = b.tensor_from(qkv);
    if fused {
        b.rope_kv_write(&mut t, &mut k, &mut v, &plan, shape, 1e6);
    } else {
        b.rope(&mut t, &plan.positions, shape, 1e6);
        b.kv_write(&mut k, &mut v, &t, &plan, shape);
    }
    let out = [b.to_host(&t), b.cache_to_host(&k), b.cache_to_host(&v)];
    b.check().unwrap_or_else(|e| panic!("rope + kv_write on {}: {e}", b.name()));
    out
}

/// The fused kernel (rope_kv_f32) does exactly what rope_f32 then kv_write_bf16 do,
/// bit for bit (each of those is checked against the CPU above and in rope.rs), and a
/// bad slot is skipped there too.
#[test]
fn rope_kv_write_equals_rope_then_kv_write() {
    let Some(g) = gpu("rope_kv_write_equals_rope_then_kv_write") else { return };
    for &(hq, hk, d) in &SHAPES {
        let shape = AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d };
        for &n in &ROWS {
            let seed = (n * 1000 + hq * 10 + d) as u64;
            let qkv = rand_vec(n * (hq + 2 * hk) * d, seed);
            let mut slots = distinct_slots(n, seed + 1);
            if n > 1 {
                slots[n - 1] = u32::MAX;
            }
            let two = rope_then_write(&g, &qkv, &slots, shape, false);
            let one = rope_then_write(&g, &qkv, &slots, shape, true);
            for (what, a, b) in
                [("qkv", &one[0], &two[0]), ("k cache", &one[1], &two[1]), ("v cache", &one[2], &two[2])]
            {
                let same =
                    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "rope_kv_write {what} differs from rope + kv_write, n={n} hq={hq} hk={hk} d={d}"
                );
            }
        }
    }
}
