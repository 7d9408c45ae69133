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
// per warp (at most 32). Must be called by all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}
