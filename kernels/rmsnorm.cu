// RMSNorm as in Hugging Face Llama/Qwen2, in f32: out = x * (1 / sqrt(mean(x^2) + eps)) * w.
// CPU twin: src/backend/cpu/rmsnorm.rs; launcher: src/backend/cuda/rmsnorm.rs.
//
// Entry points
//   rmsnorm_f32      out (n, dim) = rmsnorm(x (n, dim)) * w (dim)
//   add_rmsnorm_f32  residual (n, dim) += x (n, dim); out (n, dim) = rmsnorm(residual) * w (dim)
//
// Thread mapping: one block per row (blockIdx.x); the launcher sizes the block to
// the row (one warp for dim <= 128 in float4s, up to 512 threads), and every size
// works. Pass 1 streams the row (and, fused, adds x into the residual and stores it)
// while summing squares in f32; a block reduction gives mean(x^2); pass 2 re-reads
// the row, which this block just touched so it comes from L1/L2, and writes out.
// float4 loads and stores when dim % 4 == 0 and the pointers are 16-byte aligned
// (always, for cuMemAlloc buffers); a scalar loop otherwise. Pass 2 reads back
// exactly the elements the same thread wrote in pass 1, so no barrier is needed
// between the residual store and its re-read.
//
// Arithmetic matches the CPU twin operation for operation except the order of the
// sum of squares (a tree here, a sequential sum there), which is within f32
// tolerance: IEEE division and sqrtf (no rsqrtf, no fast math), and (x * inv) * w
// in that order.
//
// Speed (unmeasured): memory-bound, 8 (rmsnorm) or 16 (add_rmsnorm) bytes per
// element plus w; for a decode step the launch latency dominates.

#include "common.cuh"

__device__ __forceinline__ bool aligned16(const void* p) {
    return reinterpret_cast<unsigned long long>(p) % 16 == 0;
}

__device__ __forceinline__ float sum_sq(float4 a) {
    return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// ADD: residual += x first, and the norm is taken of the new residual.
template <bool ADD>
__device__ __forceinline__ void rmsnorm_row(float* __restrict__ out,       // (n, dim)
                                            float* __restrict__ residual,  // (n, dim), ADD only
                                            const float* __restrict__ x,   // (n, dim)
                                            const float* __restrict__ w,   // (dim)
                                            u32 dim, float eps) {
    __shared__ float scratch[WARP];
    const size_t base = (size_t)blockIdx.x * dim;
    out += base;
    x += base;
    if (ADD) residual += base;
    // The row that is normalised: x itself, or the updated residual.
    const float* src = ADD ? residual : x;

    const bool vec = dim % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(w) &&
                     (!ADD || aligned16(residual));
    float ss = 0.f;
    if (vec) {
        const u32 d4 = dim / 4;
        for (u32 v = threadIdx.x; v < d4; v += blockDim.x) {
            float4 a = reinterpret_cast<const float4*>(x)[v];
            if (ADD) {
                a = add4(reinterpret_cast<const float4*>(residual)[v], a);
                reinterpret_cast<float4*>(residual)[v] = a;
            }
            ss += sum_sq(a);
        }
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) {
            float a = x[i];
            if (ADD) {
                a = residual[i] + a;
                residual[i] = a;
            }
            ss += a * a;
        }
    }

    const float ms = block_sum(ss, scratch) / (float)dim;
    const float inv = 1.f / sqrtf(ms + eps);

    if (vec) {
        const u32 d4 = dim / 4;
        for (u32 v = threadIdx.x; v < d4; v += blockDim.x) {
            const float4 a = reinterpret_cast<const float4*>(src)[v];
            const float4 g = reinterpret_cast<const float4*>(w)[v];
            reinterpret_cast<float4*>(out)[v] =
                make_float4(a.x * inv * g.x, a.y * inv * g.y, a.z * inv * g.z, a.w * inv * g.w);
        }
    } else {
        for (u32 i = threadIdx.x; i < dim; i += blockDim.x) out[i] = src[i] * inv * w[i];
    }
}

// grid (n), block (a multiple of 32, at most 1024)
extern "C" __global__ void rmsnorm_f32(float* __restrict__ out,      // (n, dim)
                                       const float* __restrict__ x,  // (n, dim)
                                       const float* __restrict__ w,  // (dim)
                                       u32 dim, float eps) {
    rmsnorm_row<false>(out, nullptr, x, w, dim, eps);
}

// grid (n), block (a multiple of 32, at most 1024)
extern "C" __global__ void add_rmsnorm_f32(float* __restrict__ out,       // (n, dim)
                                           float* __restrict__ residual,  // (n, dim)
                                           const float* __restrict__ x,   // (n, dim)
                                           const float* __restrict__ w,   // (dim)
                                           u32 dim, float eps) {
    rmsnorm_row<true>(out, residual, x, w, dim, eps);
}
