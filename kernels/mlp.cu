// SwiGLU, the activation between the MLP's two matmuls. CPU twin:
// src/backend/cpu/mlp.rs; launcher: src/backend/cuda/mlp.rs.
//
// Entry point
//   swiglu_f32  out (n, inter) = silu(gate) * up ; gate_up (n, 2 * inter), gate first
//               in each row, silu(g) = g / (1 + exp(-g)).
//
// Thread mapping: a flat grid-stride loop over the n * inter outputs, 4 at a time
// (float4 loads of gate and up, a float4 store) when inter % 4 == 0 and the
// pointers are aligned, one at a time otherwise. The row of an output is found by
// dividing its flat index by inter (or inter / 4), so rows of any length pack the
// grid densely; the launcher keeps n * 2 * inter below 2^31 so that this division
// is a 32-bit one.
//
// Arithmetic as the CPU twin: precise expf (not __expf, whose error grows with |g|:
// 2 + 1.2 |g| ulp), IEEE division, then the product
// with up: (g / (1 + expf(-g))) * u. CUDA's expf is within 2 ulp of the exact value
// and glibc's within 1, so results agree to a few ulp. For g < -88, expf(-g) is
// inf and the result is -0 * u, as on the CPU.
//
// Speed (unmeasured): memory-bound, 12 bytes per output element.

#include "mlp.cuh"

__device__ __forceinline__ bool aligned16(const void* p) {
    return reinterpret_cast<unsigned long long>(p) % 16 == 0;
}

// grid (any), block (any): a grid-stride loop over n * inter outputs.
extern "C" __global__ void swiglu_f32(float* __restrict__ out,            // (n, inter)
                                      const float* __restrict__ gate_up,  // (n, 2 * inter)
                                      u32 n, u32 inter) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (inter % 4 == 0 && aligned16(out) && aligned16(gate_up)) {
        const u32 w = inter / 4;  // float4s per output row
        const size_t total = (size_t)n * w;
        const float4* __restrict__ gu = reinterpret_cast<const float4*>(gate_up);
        float4* __restrict__ o = reinterpret_cast<float4*>(out);
        for (size_t e = first; e < total; e += stride) {
            const u32 t = (u32)e / w, j = (u32)e % w;
            const float4 g = gu[(size_t)t * 2 * w + j];
            const float4 u = gu[(size_t)t * 2 * w + w + j];
            o[e] = make_float4(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z),
                               silu_mul(g.w, u.w));
        }
    } else {
        const size_t total = (size_t)n * inter;
        for (size_t e = first; e < total; e += stride) {
            const u32 t = (u32)e / inter, j = (u32)e % inter;
            const float* __restrict__ row = gate_up + (size_t)t * 2 * inter;
            out[e] = silu_mul(row[j], row[inter + j]);
        }
    }
}
