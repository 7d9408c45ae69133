// Row gathers: the token embedding lookup (bf16 table -> f32 rows) and picking the
// rows of a step whose logits are wanted (f32 -> f32). CPU twin:
// src/backend/cpu/embed.rs; launcher: src/backend/cuda/embed.rs.
//
// Entry points
//   embed_bf16       out (n, dim) f32 = table (vocab, dim) bf16 [ids (n)]
//   gather_rows_f32  out (n, dim) f32 = x (n_in, dim) f32 [rows (n)]
//
// Thread mapping: one block per output row (blockIdx.x), its threads striding over
// the row. When dim % 4 == 0 and the pointers are aligned (always, for buffers from
// cuMemAlloc) each thread moves 4 elements at a time: an 8-byte load of 4 bf16 (or a
// 16-byte float4) and a 16-byte float4 store; otherwise one element at a time. The
// choice is made in the kernel, so correctness never depends on the launcher's block
// size, only speed does.
//
// Index guard: the host validates token ids and row numbers before they get here
// (the tokenizer and the step planner), but a bad index must never read outside
// the table. A row whose index is out of range is written as zeros: memory-safe and
// deterministic, and not a value the rest of the model could mistake for data it
// read.
//
// Speed (unmeasured): both are pure copies, bound by memory bandwidth; a decode step
// moves a few KB, so it is launch latency that shows, not these kernels.

#include "common.cuh"

// bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
__device__ __forceinline__ float bf16_lo(u32 pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(u32 pair) { return __uint_as_float(pair & 0xffff0000u); }

__device__ __forceinline__ bool aligned(const void* p, unsigned bytes) {
    return reinterpret_cast<unsigned long long>(p) % bytes == 0;
}

__device__ __forceinline__ void zero_row(float* __restrict__ o, u32 dim) {
    for (u32 i = threadIdx.x; i < dim; i += blockDim.x) o[i] = 0.f;
}

// grid (n), block (any multiple of 32 up to 1024)
extern "C" __global__ void embed_bf16(float* __restrict__ out,          // (n, dim)
                                      const bf16* __restrict__ table,   // (vocab, dim)
                                      const u32* __restrict__ ids,      // (n)
                                      u32 dim, u32 vocab) {
    const size_t row = blockIdx.x;
    const u32 id = ids[row];
    float* __restrict__ o = out + row * dim;
    if (id >= vocab) {
        zero_row(o, dim);
        return;
    }
    const bf16* __restrict__ t = table + (size_t)id * dim;
    // dim % 4 == 0 makes every row start 8-byte aligned in the table and 16-byte
    // aligned in out, given aligned bases.
    if (dim % 4 == 0 && aligned(table, 8) && aligned(out, 16)) {
        const uint2* __restrict__ src = reinterpret_cast<const uint2*>(t);
        float4* __restrict__ dst = reinterpret_cast<float4*>(o);
        for (u32 v = threadIdx.x; v < dim / 4; v += blockDim.x) {
            const uint2 raw = src[v];  // 4 bf16, little-endian: element 0 in raw.x's low half
            dst[v] = make_float4(bf16_lo(raw.x), bf16_hi(raw.x), bf16_lo(raw.y), bf16_hi(raw.y));
        }
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __bfloat162float(t[i]);
    }
}

// grid (n), block (any multiple of 32 up to 1024)
extern "C" __global__ void gather_rows_f32(float* __restrict__ out,       // (n, dim)
                                           const float* __restrict__ x,   // (n_in, dim)
                                           const u32* __restrict__ rows,  // (n)
                                           u32 dim, u32 n_in) {
    const size_t row = blockIdx.x;
    const u32 r = rows[row];
    float* __restrict__ o = out + row * dim;
    if (r >= n_in) {
        zero_row(o, dim);
        return;
    }
    const float* __restrict__ s = x + (size_t)r * dim;
    if (dim % 4 == 0 && aligned(x, 16) && aligned(out, 16)) {
        const float4* __restrict__ src = reinterpret_cast<const float4*>(s);
        float4* __restrict__ dst = reinterpret_cast<float4*>(o);
        for (u32 v = threadIdx.x; v < dim / 4; v += blockDim.x) dst[v] = src[v];
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) o[i] = s[i];
    }
}
