// Rotary position embedding, Hugging Face "rotate-half" form, in place on the q and
// k heads of a qkv row. CPU twin: src/backend/cpu/rope.rs; launcher:
// src/backend/cuda/rope.rs.
//
// Entry points
//   rope_f32     qkv (n, (hq + 2 hk) * d) f32, positions (n) u32. The first hq + hk
//                heads of each row (q, then k) have pairs (i, i + d/2) rotated by the
//                angle pos * inv_freq[i]; the v heads are not touched.
//   rope_kv_f32  the same, then the rotated k and the v of each token written to its
//                slot of the paged bf16 cache (kv.cuh, as kv_write_bf16): the step's
//                two per-token ops in one launch, one kernel fewer per layer. A decode
//                step does both inside attention instead (attn_decode_rope_*, which
//                shares rope.cuh) where a kv head's q heads fit one CTA.
//
// Thread mapping: one block per token (blockIdx.x). Its threads first compute the
// row's d/2 cos/sin values into shared memory (one per frequency, shared by all of
// the token's heads), then stride over the (head, i) pairs; consecutive threads take
// consecutive i of a head, so both halves are read and written coalesced.
//
// Matching the CPU bit for bit. transformers computes inv_freq in f32 and the angle
// in f32, then cos/sin of that f32 angle; the CPU twin does the same, taking cos/sin
// in f64 and rounding to f32 so that libm's last-ulp differences vanish. Here:
//  * inv_freq arrives from the host (RopeFreqs, by value), computed by the launcher
//    with the same Rust expression as the CPU twin, 1 / theta.powf(2i / d) in f32.
//    Computing it in the kernel with CUDA's powf (up to a few ulp from glibc's)
//    would make angles differ by up to pos * a few ulp, ~1e-4 rad at pos 2048:
//    far outside f32 tolerance.
//  * the angle is (float)pos * inv_freq[i], an f32 product rounded to nearest
//    (__fmul_rn), as Rust's `pos as f32 * f`;
//  * cos/sin are CUDA's double-precision sincos of that f32 value, rounded to f32.
//    CUDA's double sin/cos are within 2 f64 ulp of the exact value and glibc's
//    within 1, so the f32 results agree except where the exact value lies within
//    a few f64 ulp of an f32 rounding boundary (roughly one value in 10^8);
//    arguments are below 2^31 for any real position, so the slow Payne-Hanek
//    reduction (the 40-byte stack frame ptxas reports) is never taken;
//  * the rotation uses explicit __fmul_rn/__fadd_rn/__fsub_rn so that nvcc cannot
//    contract a * cos - b * sin into an FMA, which Rust does not do either.
// So the outputs should be bitwise equal to the CPU's nearly always, and off by an
// ulp of cos/sin at worst.
//
// Speed (unmeasured): memory-bound (the q and k heads are read and written once);
// the f64 sincos costs d/2 per token, not per head, so it is small beside the
// memory traffic even for a prefill of thousands of tokens.

#include "kv.cuh"
#include "rope.cuh"

// Token blockIdx.x's q and k heads rotated in place. The whole block calls it.
__device__ __forceinline__ void rope_row(float* __restrict__ qkv,            // (n, row)
                                         const u32* __restrict__ positions,  // (n)
                                         u32 heads, u32 row, u32 d, const RopeFreqs& f) {
    __shared__ float cos_s[ROPE_MAX_HALF];
    __shared__ float sin_s[ROPE_MAX_HALF];
    const u32 half = d / 2;
    const size_t t = blockIdx.x;
    rope_table(positions[t], half, f, cos_s, sin_s);
    __syncthreads();

    float* __restrict__ r = qkv + t * row;
    const u32 pairs = heads * half;
    for (u32 p = threadIdx.x; p < pairs; p += blockDim.x) {
        const u32 h = p / half, i = p % half;
        float* x1 = r + h * d + i;
        float* x2 = x1 + half;
        const float a = *x1, b = *x2;
        const float c = cos_s[i], s = sin_s[i];
        *x1 = rope_first(a, b, c, s);
        *x2 = rope_second(a, b, c, s);
    }
}

// grid (n), block (a multiple of 32, at most 1024)
extern "C" __global__ void rope_f32(float* __restrict__ qkv,              // (n, row)
                                    const u32* __restrict__ positions,    // (n)
                                    u32 heads,  // hq + hk: the rotated heads at the start of a row
                                    u32 row,    // (hq + 2 hk) * d
                                    u32 d,      // head_dim, even, at most 2 * ROPE_MAX_HALF
                                    RopeFreqs f) {
    rope_row(qkv, positions, heads, row, d, f);
}

// rope_f32, then kv_write_bf16 of the rotated row: one launch for both. The barrier
// makes every thread's rotated k visible to the threads that copy it.
// grid (n), block (a multiple of 32, at most 1024)
extern "C" __global__ void rope_kv_f32(float* qkv,                         // (n, row)
                                       const u32* __restrict__ positions,  // (n)
                                       u32 heads, u32 row, u32 d, RopeFreqs f,
                                       bf16* __restrict__ k_cache,         // (num_slots, hk * d)
                                       bf16* __restrict__ v_cache,         // (num_slots, hk * d)
                                       const u32* __restrict__ slots,      // (n)
                                       u32 num_slots) {
    rope_row(qkv, positions, heads, row, d, f);
    __syncthreads();
    const u32 kv = row - heads * d;  // hk * d: the v heads after the q and k heads
    kv_write_row(k_cache, v_cache, qkv, slots, row - 2 * kv, kv, num_slots);
}
