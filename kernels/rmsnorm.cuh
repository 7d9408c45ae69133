// RMSNorm's sum of squares and scale, shared by rmsnorm.cu's rmsnorm_f32 and gemm.cu's
// gemv that normalises its x on load (a decode step's qkv and gate_up projections,
// one kernel for norm and product). Both take the sum the same way, so the fused
// gemv's x is rmsnorm_f32's output bit for bit.
#pragma once

#include "common.cuh"

// Threads rmsnorm_f32 gives a row of dim % 4 == 0: one per float4, in whole warps,
// 32 to RMS_MAX_THREADS. The launcher (src/backend/cuda/rmsnorm.rs, row_threads)
// uses the same rule; the gemv's 256-thread block holds any such count, its other
// threads adding zeros.
constexpr u32 RMS_MAX_THREADS = 256;

__device__ __forceinline__ u32 rms_threads(u32 d4) {
    const u32 t = (d4 + WARP - 1) / WARP * WARP;
    return t < WARP ? WARP : (t > RMS_MAX_THREADS ? RMS_MAX_THREADS : t);
}

__device__ __forceinline__ float sum_sq(float4 a) {
    return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
}

// Thread t's part of sum(x^2) over a row of d4 float4s: groups t, t + threads, ...
__device__ __forceinline__ float row_sq_part(const float* __restrict__ row, u32 d4, u32 t, u32 threads) {
    float ss = 0.f;
    for (u32 v = t; v < d4; v += threads) ss += sum_sq(__ldg(reinterpret_cast<const float4*>(row) + v));
    return ss;
}

// 1 / sqrt(mean(x^2) + eps) from the row's sum of squares.
__device__ __forceinline__ float rms_scale(float ss, u32 dim, float eps) {
    return 1.f / sqrtf(ss / (float)dim + eps);
}
