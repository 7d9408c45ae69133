// Shared device helpers for every kernel file: bf16 conversion and warp/block
// reductions. Kept small on purpose; anything family-specific lives in its file.
#pragma once

#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;
// Not <stdint.h>: NVRTC (the fallback without nvcc) does not ship it.
typedef unsigned int u32;
typedef unsigned long long u64;

// -inf without <math.h>'s INFINITY, which NVRTC lacks.
#define NEG_INF (__int_as_float(0xff800000))

#define WARP 32

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds one float
// per warp (at most 32). Must be called by all threads of the block. Every lane of a
// warp stores its (equal) warp sum and every thread adds the warps' sums in the same
// order: no lane sits idle in a branch, and all threads get bitwise the same sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    scratch[threadIdx.x / WARP] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < warps; ++i) s += scratch[i];
    return s;
}
