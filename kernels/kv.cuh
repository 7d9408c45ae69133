// The paged KV cache write of one token, shared by kv.cu's kernel and rope.cu's fused
// rope + write (the decode step's one kernel for both). See kv.cu for the design.
#pragma once

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

// Token blockIdx.x's k and v (f32, from its qkv row) into cache row slots[t] as bf16;
// a slot past the cache is skipped. The whole block calls it, after every write to
// the row (qkv is not __restrict__ here: the fused kernel writes it first, so its
// loads must not take the read-only path).
__device__ __forceinline__ void kv_write_row(bf16* __restrict__ k_cache,  // (num_slots, kv)
                                             bf16* __restrict__ v_cache,  // (num_slots, kv)
                                             const float* qkv,            // (n, q + 2 kv)
                                             const u32* __restrict__ slots,  // (n)
                                             u32 q,                       // hq * d
                                             u32 kv,                      // hk * d
                                             u32 num_slots) {
    const size_t t = blockIdx.x;
    const u32 slot = slots[t];
    if (slot >= num_slots) return;
    const float* k = qkv + t * (q + 2 * (size_t)kv) + q;
    const float* v = k + kv;
    bf16* __restrict__ kd = k_cache + (size_t)slot * kv;
    bf16* __restrict__ vd = v_cache + (size_t)slot * kv;

    // q % 4 == 0 and kv % 4 == 0 make every k/v start 16-byte aligned in qkv and every
    // cache row 8-byte aligned, given aligned bases.
    if (q % 4 == 0 && kv % 4 == 0 && aligned(qkv, 16) && aligned(k_cache, 8) && aligned(v_cache, 8)) {
        const float4* k4 = reinterpret_cast<const float4*>(k);
        const float4* v4 = reinterpret_cast<const float4*>(v);
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
