// Rotary embedding's per-position table and rotation, shared by rope.cu's kernels and
// attention.cu's decode kernel that rotates q and the new k on load (the decode
// step's rope, cache write and attention in one launch). See rope.cu for why each
// operation is what it is: the CPU twin's bits.
#pragma once

#include "common.cuh"

// The largest head_dim / 2 the parameter table holds (head_dim up to 256).
#define ROPE_MAX_HALF 128

// Passed by value (512 bytes of kernel parameters, well under the 4 KB limit).
// The launcher writes head_dim / 2 entries; the rest are zeros and never read.
struct RopeFreqs {
    float inv_freq[ROPE_MAX_HALF];
};

// cos and sin of pos * inv_freq[i] for i < half, into shared arrays, by the block's
// threads; the caller synchronises before reading them.
__device__ __forceinline__ void rope_table(u32 position, u32 half, const RopeFreqs& f, float* cos_s,
                                           float* sin_s) {
    // u32 -> f32 rounds to nearest, as Rust's `pos as f32`.
    const float pos = __uint2float_rn(position);
    for (u32 i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = __fmul_rn(pos, f.inv_freq[i]);
        double s, c;
        sincos((double)angle, &s, &c);
        cos_s[i] = __double2float_rn(c);
        sin_s[i] = __double2float_rn(s);
    }
}

// The rotated pair (a, b) = (x[i], x[i + half]) by (c, s): a' and b'.
__device__ __forceinline__ float rope_first(float a, float b, float c, float s) {
    return __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
}
__device__ __forceinline__ float rope_second(float a, float b, float c, float s) {
    return __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// Element i of a rotated head x (d values, half = d / 2).
__device__ __forceinline__ float rope_at(const float* x, u32 i, u32 half, const float* cos_s,
                                         const float* sin_s) {
    const u32 p = i < half ? i : i - half;
    const float a = x[p], b = x[p + half];
    return i < half ? rope_first(a, b, cos_s[p], sin_s[p]) : rope_second(a, b, cos_s[p], sin_s[p]);
}
