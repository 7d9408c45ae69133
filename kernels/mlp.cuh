// SwiGLU's element, shared by mlp.cu's swiglu_f32 and gemm.cu's gemv that applies it
// to its x on load (the decode step's down projection, one kernel for both). See
// mlp.cu for the arithmetic.
#pragma once

#include "common.cuh"

__device__ __forceinline__ float silu_mul(float g, float u) {
    return g / (1.f + expf(-g)) * u;
}
