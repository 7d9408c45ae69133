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

#include "common.cuh"

__device__ __forceinline__ u32 bf16_bits(float x) {
    return (u32)__bfloat16_as_ushort(__float2bfloat16_rn(x));
}

// Two f32 -> two bf16 in one word, the first at the lower address (little-endian).
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    return bf16_bits(lo) | (bf16_bits(hi) << 16);
}

__device__ __forceinline__ bool aligned(const void* p, unsigned bytes) {
    return reinterpret_cast<unsigned long long>(p) % bytes == 0;
}

// grid (n), block (any multiple of 32 up to 1024)
extern "C" __global__ void kv_write_bf16(bf16* __restrict__ k_cache,      // (num_slots, kv)
                                         bf16* __restrict__ v_cache,      // (num_slots, kv)
                                         const float* __restrict__ qkv,   // (n, q + 2 kv)
                                         const u32* __restrict__ slots,   // (n)
                                         u32 q,                           // hq * d
                                         u32 kv,                          // hk * d
                                         u32 num_slots) {
    const size_t t = blockIdx.x;
    const u32 slot = slots[t];
    if (slot >= num_slots) return;  // the whole block: no barrier below
    const float* __restrict__ k = qkv + t * (q + 2 * (size_t)kv) + q;
    const float* __restrict__ v = k + kv;
    bf16* __restrict__ kd = k_cache + (size_t)slot * kv;
    bf16* __restrict__ vd = v_cache + (size_t)slot * kv;

    // q % 4 == 0 and kv % 4 == 0 make every k/v start 16-byte aligned in qkv and every
    // cache row 8-byte aligned, given aligned bases.
    if (q % 4 == 0 && kv % 4 == 0 && aligned(qkv, 16) && aligned(k_cache, 8) && aligned(v_cache, 8)) {
        const float4* __restrict__ k4 = reinterpret_cast<const float4*>(k);
        const float4* __restrict__ v4 = reinterpret_cast<const float4*>(v);
        uint2* __restrict__ kd4 = reinterpret_cast<uint2*>(kd);
        uint2* __restrict__ vd4 = reinterpret_cast<uint2*>(vd);
        for (u32 u = threadIdx.x; u < kv / 4; u += blockDim.x) {
            const float4 a = k4[u], b = v4[u];
            kd4[u] = make_uint2(pack2(a.x, a.y), pack2(a.z, a.w));
            vd4[u] = make_uint2(pack2(b.x, b.y), pack2(b.z, b.w));
        }
    } else {
        for (u32 i = threadIdx.x; i < kv; i += blockDim.x) {
            kd[i] = __float2bfloat16_rn(k[i]);
            vd[i] = __float2bfloat16_rn(v[i]);
        }
    }
}
