// The router's hidden-state gate (HiddenGate in src/pimoe/router.rs) for a whole
// decode batch in one launch: a linear layer or a two-layer MLP on each sequence's
// last hidden state row, then sigmoid per output or softmax over the row. CPU twin:
// HiddenGate::probs in src/pimoe/router.rs; launcher: src/backend/cuda/router.rs.
//
// Entry point
//   router_gate_f32  probs (rows, n_out) = act(fc2(relu(fc1(hidden))))   (two layers)
//                    probs (rows, n_out) = act(fc1(hidden))               (w2 == null)
//     hidden (rows, h) f32; w1 (n1, h), b1 (n1); w2 (n_out, n1), b2 (n_out); all f32
//     (the gate is small: f32 weights keep the GPU on the CPU twin's exact values
//     whatever the file's dtype). act: 0 sigmoid per output, 1 softmax over the row.
//     One layer: n1 == n_out, and b2 is not read.
//
// Thread mapping: one block per row (blockIdx.x). The row and the inner activations
// live in shared memory (h + n1 + n_out floats). Each warp takes the outputs
// o = warp, warp + warps, ...; its lanes stride over the inputs, so a warp reads a
// weight row coalesced, and warp_sum reduces. Thread 0 applies the activation (n_out
// is a handful of experts).
//
// Arithmetic: f32 with a different summation order than the CPU twin (lane-strided
// partial sums, then a butterfly), so results agree to about 1e-6 relative, not bit
// for bit; precise expf (no fast-math), max-subtracted softmax as on the CPU.
//
// Speed (unmeasured): a decode step reads the weights once per row, B * (n1 * h +
// n_out * n1) * 4 bytes, from L2 after the first block; for Qwen2.5-0.5B (h = 896)
// with a 128-wide gate that is 0.46 MB per row, microseconds at B = 64.

#include "common.cuh"

#define GATE_THREADS 256

// out[o] = b[o] + w[o, :] . x for o in [0, n_out): one warp per output.
__device__ __forceinline__ void gate_layer(float* __restrict__ out, const float* __restrict__ x,
                                           const float* __restrict__ w, const float* __restrict__ b,
                                           u32 n_in, u32 n_out, bool relu) {
    const u32 lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    for (u32 o = warp; o < n_out; o += warps) {
        const float* __restrict__ wr = w + (size_t)o * n_in;
        float acc = 0.f;
        for (u32 i = lane; i < n_in; i += WARP) acc = fmaf(wr[i], x[i], acc);
        acc = warp_sum(acc);
        if (lane == 0) {
            const float v = acc + b[o];
            out[o] = relu ? fmaxf(v, 0.f) : v;
        }
    }
}

// grid (rows), block (GATE_THREADS), dynamic smem (h + n1 + n_out) * 4 bytes
extern "C" __global__ void __launch_bounds__(GATE_THREADS)
    router_gate_f32(float* __restrict__ probs,         // (rows, n_out)
                    const float* __restrict__ hidden,  // (rows, h)
                    const float* __restrict__ w1,      // (n1, h)
                    const float* __restrict__ b1,      // (n1)
                    const float* __restrict__ w2,      // (n_out, n1) or null
                    const float* __restrict__ b2,      // (n_out) or null
                    u32 h, u32 n1, u32 n_out, u32 act) {
    extern __shared__ float smem[];
    float* x = smem;            // (h)
    float* inner = x + h;       // (n1)
    float* logits = inner + n1; // (n_out)
    const size_t row = blockIdx.x;

    const float* __restrict__ src = hidden + row * h;
    for (u32 i = threadIdx.x; i < h; i += blockDim.x) x[i] = src[i];
    __syncthreads();

    if (w2 != nullptr) {
        gate_layer(inner, x, w1, b1, h, n1, true);
        __syncthreads();
        gate_layer(logits, inner, w2, b2, n1, n_out, false);
    } else {
        gate_layer(logits, x, w1, b1, h, n_out, false);
    }
    __syncthreads();

    if (threadIdx.x == 0) {
        float* __restrict__ p = probs + row * n_out;
        if (act == 0) {
            for (u32 o = 0; o < n_out; o++) p[o] = 1.f / (1.f + expf(-logits[o]));
        } else {
            float m = NEG_INF;
            for (u32 o = 0; o < n_out; o++) m = fmaxf(m, logits[o]);
            float z = 0.f;
            for (u32 o = 0; o < n_out; o++) {
                const float e = expf(logits[o] - m);
                logits[o] = e;
                z += e;
            }
            for (u32 o = 0; o < n_out; o++) p[o] = logits[o] / z;
        }
    }
}
