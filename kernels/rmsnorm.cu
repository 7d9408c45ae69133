// RMSNorm as in Hugging Face Llama/Qwen2, in f32: out = x * (1 / sqrt(mean(x^2) + eps)) * w.
// CPU twin: src/backend/cpu/rmsnorm.rs; launcher: src/backend/cuda/rmsnorm.rs.
//
// Entry point
//   rmsnorm_f32  out (n, dim) = rmsnorm(x (n, dim)) * w (dim)
// The residual add that precedes each norm in a layer is done by the GEMM that ends
// the residual branch (out += product), and a decode step's norms are done by the
// gemv that consumes them (gemv_m*_rmsnorm_f32_bf16, with rmsnorm.cuh's arithmetic).
//
// Thread mapping: one block per row (blockIdx.x); the launcher sizes the block to
// the row (one warp for dim <= 128 in float4s, up to RMS_MAX_THREADS = 256), and
// every size works. Pass 1 streams the row summing squares in f32; a block reduction
// gives mean(x^2); pass 2 re-reads the row, which this block just touched so it
// comes from L1/L2, and writes out. float4 loads and stores when dim % 4 == 0 and the
// pointers are 16-byte aligned (always, for cuMemAlloc buffers); a scalar loop
// otherwise.
//
// Arithmetic matches the CPU twin operation for operation except the order of the
// sum of squares (a tree here, a sequential sum there), which is within f32
// tolerance: IEEE division and sqrtf (no rsqrtf, no fast math), and (x * inv) * w
// in that order.
//
// Speed (unmeasured): memory-bound, 8 bytes per element plus w; for a decode step
// the launch latency dominates, which is why decode fuses it into the gemv.

#include "rmsnorm.cuh"

__device__ __forceinline__ bool aligned16(const void* p) {
    return reinterpret_cast<unsigned long long>(p) % 16 == 0;
}

// grid (n), block (a multiple of 32, at most 1024)
extern "C" __global__ void rmsnorm_f32(float* __restrict__ out,      // (n, dim)
                                       const float* __restrict__ x,  // (n, dim)
                                       const float* __restrict__ w,  // (dim)
                                       u32 dim, float eps) {
    __shared__ float scratch[WARP];
    const size_t base = (size_t)blockIdx.x * dim;
    out += base;
    x += base;

    const bool vec = dim % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(w);
    float ss = 0.f;
    if (vec) {
        ss = row_sq_part(x, dim / 4, threadIdx.x, blockDim.x);
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    }
    const float inv = rms_scale(block_sum(ss, scratch), dim, eps);

    if (vec) {
        const u32 d4 = dim / 4;
        for (u32 v = threadIdx.x; v < d4; v += blockDim.x) {
            const float4 a = reinterpret_cast<const float4*>(x)[v];
            const float4 g = reinterpret_cast<const float4*>(w)[v];
            reinterpret_cast<float4*>(out)[v] =
                make_float4(a.x * inv * g.x, a.y * inv * g.y, a.z * inv * g.z, a.w * inv * g.w);
        }
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) out[i] = x[i] * inv * w[i];
    }
}
