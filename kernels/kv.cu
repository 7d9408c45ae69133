// The paged KV cache write: each token's k and v (f32, from its qkv row) go to its
// cache slot as bf16. CPU twin: kv_write in src/backend/cpu/attention.rs (whose
// cache is f32); launcher: src/backend/cuda/kv.rs.
//
// Entry point
//   kv_write_bf16  k_cache, v_cache (num_slots, hk * d) bf16 [slots[t]] =
//                  k, v parts of qkv (n, (hq + 2 hk) * d) f32, rounded to nearest even.
//
// Thread mapping: one block per token (blockIdx.x), its threads striding over the
// hk * d elements of the k part and the same elements of the v part. When hq * d
// and hk * d are multiples of 4 (every real model: head_dim is) and the pointers
// are aligned, each thread reads a float4 of k and one of v and writes 4 bf16 (8
// bytes) to each cache; a scalar loop otherwise.
//
// Index guard: slots are planned by the host's block allocator, but a slot past
// the end of the cache must not write outside it: such a token is skipped (its
// k/v are stored nowhere).
//
// Speed (unmeasured): memory-bound, 8 bytes read and 4 written per k/v element;
// tiny for decode (launch latency dominates).

#include "kv.cuh"

// grid (n), block (any multiple of 32 up to 1024)
extern "C" __global__ void kv_write_bf16(bf16* __restrict__ k_cache,      // (num_slots, kv)
                                         bf16* __restrict__ v_cache,      // (num_slots, kv)
                                         const float* __restrict__ qkv,   // (n, q + 2 kv)
                                         const u32* __restrict__ slots,   // (n)
                                         u32 q,                           // hq * d
                                         u32 kv,                          // hk * d
                                         u32 num_slots) {
    kv_write_row(k_cache, v_cache, qkv, slots, q, kv, num_slots);
}
