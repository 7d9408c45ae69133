// Block-quantized weights (ggml formats, kept in their stored bytes): out (m, n) f32 =
// x (m, k) f32 @ W (n, k)^T + bias (n), W dequantized in registers, and the
// embedding lookup of a quantized table. Formats (definition and CPU twin:
// src/model/quant.rs `dequantize`): Q4_0, Q4_1, Q5_0, Q8_0 (32 weights per block) and
// Q4_K, Q5_K, Q6_K (256 per super-block). Launcher: src/backend/cuda/quant.rs, which
// launches once per row part of a matrix (a stacked q/k/v may mix types); `out` and
// `bias` arrive offset to the part's first output column and `ldo` is the whole
// matrix's n.
//
// Entry points (T = q4_0 | q4_1 | q5_0 | q8_0 | q4_k | q5_k | q6_k)
//   quant_gemv_m{1,2,4,8}_T(out, x, w, bias, m, n, k, ldo, accumulate)   decode, m <= 8
//   quant_gemm_T(out, x, w, bias, m, n, k, ldo, accumulate)              prefill, any m
//   quant_embed_T(out, table, ids, dim, vocab, lo, rows)     out (n_ids, dim)
// bias may be null; k (= dim) is a whole number of blocks (the launcher checks);
// accumulate != 0 adds the product to out (a residual branch's end) rather than
// storing it.
//
// Semantics: activations stay f32 and every product and sum is f32 (fmaf). Each
// weight is computed exactly as `dequantize` computes it, operation by operation
// (__fmul_rn / __fadd_rn / __fsub_rn, so nvcc cannot contract them into an fma that
// would round differently): the weights are bit-identical to the CPU's, and only the
// order of the sums differs from the twin. The CPU backend's own quantized matmul
// (backend/cpu/quant.rs) rounds activations to 8 bits as llama.cpp does, so
// comparing the two backends end to end needs a tolerance of that size; the kernel
// table compares these kernels with the exact dequantize + f32 dot.
//
// The unit of work everywhere is 8 consecutive weights of a row ("a unit"): for
// every format the 8 weights of a unit come from 8 consecutive quant bytes (or
// nibbles of them), one scale and one min, so `dq8` decodes a unit with a few
// loads and no branches on the element index.
//
// 1. gemv (decode, 1 <= m <= 8). Block 256 threads, one warp per weight row (output
//    column), 8 rows per block. Lane l takes units l, l + 32, ...: the 32 lanes of a
//    step read one contiguous run of the row (8 blocks of a 32-element format, an
//    eighth of... a quarter of a K super-block's quants), so every sector is used,
//    and each weight byte is read once. Each decoded unit is reused for the MB rows of
//    x (template MB = m rounded up to 1, 2, 4, 8; rows past m are clamped to row m - 1
//    and not written), x read as float4 through L1 (it is at most 8 x k f32). The
//    warp's partial sums meet by shuffles; lane 0 adds the bias and writes.
// 2. gemm (prefill). Output tile 64 (m) x 64 (n), 256 threads, each 4 x 4 outputs;
//    k in steps of 64. Per step the block decodes its 64 weight rows x 64 columns
//    once into shared memory as f32 (two units per thread) and stages the 64 x 64 x
//    tile, both stored k-major (Ws[kk][n], Xs[kk][m], rows padded by 4 floats) so the
//    inner loop reads one float4 of each per kk; each decoded weight is then used for
//    64 activation rows. Plain f32 FMAs, no tensor cores: a correct and simple path
//    (a bf16 mma version, as gemm.cu's, is the obvious next step).
// 3. embed: one block per id, threads over the row's units, 2 float4 stores each.
//    The part whose rows hold the id writes it; an id past the whole table is
//    written as zeros by the part that starts at row 0 (as embed.cu does).
//
// Alignment: parts start 16-byte aligned (the launcher lays them out so). Q4_1,
// Q4_K and Q5_K blocks are 4-byte multiples (20, 144, 176 bytes) and are read with
// 4-byte loads; Q4_0, Q5_0, Q8_0 and Q6_K blocks (18, 22, 34, 210) are only 2-byte
// aligned and are read with 2-byte loads.
//
// Speed: unmeasured (no GPU yet). The gemv is designed to stream the weights at
// near bandwidth for decode; the gemm is an f32 smem tile, expected well below the
// bf16 tensor-core GEMM.

#include "common.cuh"

typedef unsigned char u8;
typedef unsigned short u16;

namespace qk {

enum { Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K };

template <int T> struct Fmt;
template <> struct Fmt<Q4_0> { static constexpr int BL = 32, BB = 18; };
template <> struct Fmt<Q4_1> { static constexpr int BL = 32, BB = 20; };
template <> struct Fmt<Q5_0> { static constexpr int BL = 32, BB = 22; };
template <> struct Fmt<Q8_0> { static constexpr int BL = 32, BB = 34; };
template <> struct Fmt<Q4_K> { static constexpr int BL = 256, BB = 144; };
template <> struct Fmt<Q5_K> { static constexpr int BL = 256, BB = 176; };
template <> struct Fmt<Q6_K> { static constexpr int BL = 256, BB = 210; };

__device__ __forceinline__ u32 ld16(const u8* __restrict__ p) {
    return *reinterpret_cast<const u16*>(p);
}
// 4 bytes at a 2-byte aligned address.
__device__ __forceinline__ u32 ld32_a2(const u8* __restrict__ p) { return ld16(p) | (ld16(p + 2) << 16); }
// 4 bytes at a 4-byte aligned address.
__device__ __forceinline__ u32 ld32(const u8* __restrict__ p) { return *reinterpret_cast<const u32*>(p); }
__device__ __forceinline__ float f16_at(const u8* __restrict__ p) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(ld16(p))));
}
// Byte i (0..8) of the pair (a, b).
__device__ __forceinline__ u32 byte8(u32 a, u32 b, int i) { return ((i < 4 ? a : b) >> (8 * (i & 3))) & 0xffu; }

// The 6-bit scale and min of sub-block j (0..8) of a Q4_K/Q5_K block from its 12
// scale bytes s0..s2 (little-endian words): the packing of `scale_min_k4`.
__device__ __forceinline__ void scale_min_k4(int j, u32 s0, u32 s1, u32 s2, u32& sc, u32& mn) {
    auto b = [&](int i) -> u32 { return ((i < 4 ? s0 : i < 8 ? s1 : s2) >> (8 * (i & 3))) & 0xffu; };
    if (j < 4) {
        sc = b(j) & 63, mn = b(j + 4) & 63;
    } else {
        sc = (b(j + 4) & 15) | ((b(j - 4) >> 6) << 4);
        mn = (b(j + 4) >> 4) | ((b(j) >> 6) << 4);
    }
}

// Unit s (8 consecutive weights) of the block at p, into w[0..8].
template <int T>
__device__ __forceinline__ void dq8(const u8* __restrict__ p, int s, float* w) {
    if constexpr (T == Q4_0 || T == Q4_1 || T == Q5_0) {
        // Byte j holds weight j (low nibble) and j + 16 (high): unit s reads bytes
        // 8 (s & 1) .. + 8, the high nibbles for s >= 2.
        constexpr int QS = T == Q4_0 ? 2 : T == Q4_1 ? 4 : 6;
        const int j0 = (s & 1) * 8, sh = (s >> 1) * 4;
        u32 a, b;
        if constexpr (T == Q4_1) {
            a = ld32(p + QS + j0), b = ld32(p + QS + j0 + 4);
        } else {
            a = ld32_a2(p + QS + j0), b = ld32_a2(p + QS + j0 + 4);
        }
        const float d = f16_at(p);
        if constexpr (T == Q4_0) {
#pragma unroll
            for (int i = 0; i < 8; ++i) w[i] = __fmul_rn(d, static_cast<float>((byte8(a, b, i) >> sh) & 15) - 8.f);
        } else if constexpr (T == Q4_1) {
            const float mn = f16_at(p + 2);
#pragma unroll
            for (int i = 0; i < 8; ++i)
                w[i] = __fadd_rn(__fmul_rn(d, static_cast<float>((byte8(a, b, i) >> sh) & 15)), mn);
        } else {
            // Fifth bit of weight e (0..32) is bit e of qh; here e = j0 + i + 16 (s >> 1).
            const u32 qh = ld32_a2(p + 2) >> (j0 + 4 * sh);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const u32 q = ((byte8(a, b, i) >> sh) & 15) | (((qh >> i) & 1) << 4);
                w[i] = __fmul_rn(d, static_cast<float>(q) - 16.f);
            }
        }
    } else if constexpr (T == Q8_0) {
        const u32 a = ld32_a2(p + 2 + 8 * s), b = ld32_a2(p + 2 + 8 * s + 4);
        const float d = f16_at(p);
#pragma unroll
        for (int i = 0; i < 8; ++i)
            w[i] = __fmul_rn(d, static_cast<float>(static_cast<signed char>(byte8(a, b, i))));
    } else if constexpr (T == Q4_K || T == Q5_K) {
        // Sub-block j = s / 4 (32 weights), l0 = 8 (s % 4) within it; the quants of
        // sub-blocks 2i and 2i + 1 share bytes qs[32 i ..], low and high nibbles.
        constexpr int QS = T == Q4_K ? 16 : 48;
        const int j = s >> 2, l0 = (s & 3) * 8, sh = (j & 1) * 4;
        const u8* q = p + QS + 32 * (j >> 1) + l0;
        const u32 a = ld32(q), b = ld32(q + 4);
        u32 sc, mn;
        scale_min_k4(j, ld32(p + 4), ld32(p + 8), ld32(p + 12), sc, mn);
        const float ds = __fmul_rn(f16_at(p), static_cast<float>(sc));
        const float dm = __fmul_rn(f16_at(p + 2), static_cast<float>(mn));
        u32 ha = 0, hb = 0;
        if constexpr (T == Q5_K) ha = ld32(p + 16 + l0) >> j, hb = ld32(p + 16 + l0 + 4) >> j;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            u32 v = (byte8(a, b, i) >> sh) & 15;
            if constexpr (T == Q5_K) v |= (byte8(ha, hb, i) & 1) << 4;
            w[i] = __fsub_rn(__fmul_rn(ds, static_cast<float>(v)), dm);
        }
    } else {  // Q6_K
        // Half h = s / 16 (128 weights); within it, weight l + 32 t (l = 0..32,
        // t = 0..4): unit s covers t = (s % 16) / 4, l0 = 8 (s % 4).
        const int h = s >> 4, t = (s >> 2) & 3, l0 = (s & 3) * 8;
        const u8* ql = p + 64 * h + l0 + 32 * (t & 1);
        const u8* qh = p + 128 + 32 * h + l0;
        const u32 a = ld32_a2(ql), b = ld32_a2(ql + 4);
        const u32 ha = ld32_a2(qh), hb = ld32_a2(qh + 4);
        const int shl = (t >> 1) * 4, shh = 2 * t;
        const int sc = static_cast<signed char>(p[192 + 8 * h + l0 / 16 + 2 * t]);
        const float ds = __fmul_rn(f16_at(p + 208), static_cast<float>(sc));
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int v = static_cast<int>(((byte8(a, b, i) >> shl) & 15) | (((byte8(ha, hb, i) >> shh) & 3) << 4));
            w[i] = __fmul_rn(ds, static_cast<float>(v - 32));
        }
    }
}

// Unit u of a row of blocks.
template <int T>
__device__ __forceinline__ void row_unit(const u8* __restrict__ row, int u, float* w) {
    constexpr int UPB = Fmt<T>::BL / 8;
    dq8<T>(row + static_cast<size_t>(u / UPB) * Fmt<T>::BB, u % UPB, w);
}

// ----------------------------------------------------------------------------
// 1. gemv
// ----------------------------------------------------------------------------

constexpr int GV_THREADS = 256;

template <int T, int MB>
__device__ __forceinline__ void gemv_body(float* __restrict__ out, const float* __restrict__ x,
                                          const u8* __restrict__ w, const float* __restrict__ bias, int m,
                                          int n, int k, int ldo, int accumulate) {
    const int lane = threadIdx.x % WARP;
    const int row = blockIdx.x * (GV_THREADS / WARP) + threadIdx.x / WARP;
    if (row >= n) return;  // a whole warp; no barrier below
    const int units = k / 8;
    const u8* wr = w + static_cast<size_t>(row) * (k / Fmt<T>::BL) * Fmt<T>::BB;
    const float* xr[MB];
#pragma unroll
    for (int j = 0; j < MB; ++j) xr[j] = x + static_cast<size_t>(min(j, m - 1)) * k;
    float acc[MB];
#pragma unroll
    for (int j = 0; j < MB; ++j) acc[j] = 0.f;

    for (int u = lane; u < units; u += WARP) {
        float wv[8];
        row_unit<T>(wr, u, wv);
#pragma unroll
        for (int j = 0; j < MB; ++j) {
            const float4 a = __ldg(reinterpret_cast<const float4*>(xr[j]) + 2 * u);
            const float4 b = __ldg(reinterpret_cast<const float4*>(xr[j]) + 2 * u + 1);
            float s = acc[j];
            s = fmaf(a.x, wv[0], s), s = fmaf(a.y, wv[1], s), s = fmaf(a.z, wv[2], s), s = fmaf(a.w, wv[3], s);
            s = fmaf(b.x, wv[4], s), s = fmaf(b.y, wv[5], s), s = fmaf(b.z, wv[6], s), s = fmaf(b.w, wv[7], s);
            acc[j] = s;
        }
    }
#pragma unroll
    for (int j = 0; j < MB; ++j) acc[j] = warp_sum(acc[j]);
    if (lane == 0) {
        const float bv = bias != nullptr ? bias[row] : 0.f;
#pragma unroll
        for (int j = 0; j < MB; ++j)
            if (j < m) {
                float* o = out + static_cast<size_t>(j) * ldo + row;
                *o = accumulate ? *o + (acc[j] + bv) : acc[j] + bv;
            }
    }
}

// ----------------------------------------------------------------------------
// 2. gemm
// ----------------------------------------------------------------------------

constexpr int GM_THREADS = 256, BM = 64, BN = 64, BK = 64, PAD = 4;

template <int T>
__device__ __forceinline__ void gemm_body(float* __restrict__ out, const float* __restrict__ x,
                                          const u8* __restrict__ w, const float* __restrict__ bias, int m,
                                          int n, int k, int ldo, int accumulate) {
    __shared__ __align__(16) float xs[BK][BM + PAD];
    __shared__ __align__(16) float ws[BK][BN + PAD];
    const int tid = threadIdx.x;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int tm = tid / 16, tn = tid % 16;
    const size_t row_bytes = static_cast<size_t>(k / Fmt<T>::BL) * Fmt<T>::BB;
    const int units = k / 8;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < k; k0 += BK) {
        // Weights: 64 rows x 8 units; a warp takes 4 rows x 8 units, i.e. 4 runs of
        // 64 consecutive weights.
#pragma unroll
        for (int it = 0; it < (BN * BK / 8) / GM_THREADS; ++it) {
            const int idx = tid + it * GM_THREADS;
            const int r = idx / (BK / 8), u = idx % (BK / 8);
            const int gu = k0 / 8 + u;
            float wv[8];
            if (n0 + r < n && gu < units) {
                row_unit<T>(w + static_cast<size_t>(n0 + r) * row_bytes, gu, wv);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) wv[i] = 0.f;
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) ws[8 * u + i][r] = wv[i];
        }
        // Activations: 64 rows x 16 float4.
#pragma unroll
        for (int it = 0; it < (BM * BK / 4) / GM_THREADS; ++it) {
            const int idx = tid + it * GM_THREADS;
            const int r = idx / (BK / 4), c = idx % (BK / 4);
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (m0 + r < m && k0 + 4 * c < k)
                v = __ldg(reinterpret_cast<const float4*>(x + static_cast<size_t>(m0 + r) * k + k0) + c);
            xs[4 * c][r] = v.x, xs[4 * c + 1][r] = v.y, xs[4 * c + 2][r] = v.z, xs[4 * c + 3][r] = v.w;
        }
        __syncthreads();
#pragma unroll 16
        for (int kk = 0; kk < BK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&xs[kk][4 * tm]);
            const float4 b = *reinterpret_cast<const float4*>(&ws[kk][4 * tn]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();  // the tiles are refilled next step
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = m0 + 4 * tm + i;
        if (r >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int c = n0 + 4 * tn + j;
            if (c >= n) continue;
            float* o = out + static_cast<size_t>(r) * ldo + c;
            const float v = acc[i][j] + (bias != nullptr ? bias[c] : 0.f);
            *o = accumulate ? *o + v : v;
        }
    }
}

// ----------------------------------------------------------------------------
// 3. embed
// ----------------------------------------------------------------------------

template <int T>
__device__ __forceinline__ void embed_body(float* __restrict__ out, const u8* __restrict__ table,
                                           const u32* __restrict__ ids, u32 dim, u32 vocab, u32 lo,
                                           u32 rows) {
    const u32 id = ids[blockIdx.x];
    float* __restrict__ o = out + static_cast<size_t>(blockIdx.x) * dim;
    if (id >= vocab) {
        if (lo == 0)
            for (u32 i = threadIdx.x; i < dim; i += blockDim.x) o[i] = 0.f;
        return;
    }
    if (id < lo || id - lo >= rows) return;  // another part's row
    const u8* row = table + static_cast<size_t>(id - lo) * (dim / Fmt<T>::BL) * Fmt<T>::BB;
    for (u32 u = threadIdx.x; u < dim / 8; u += blockDim.x) {
        float wv[8];
        row_unit<T>(row, static_cast<int>(u), wv);
        reinterpret_cast<float4*>(o)[2 * u] = make_float4(wv[0], wv[1], wv[2], wv[3]);
        reinterpret_cast<float4*>(o)[2 * u + 1] = make_float4(wv[4], wv[5], wv[6], wv[7]);
    }
}

}  // namespace qk

#define QUANT_GEMV(NAME, T, MB)                                                                             \
    extern "C" __global__ void __launch_bounds__(qk::GV_THREADS)                                              \
        quant_gemv_m##MB##_##NAME(float* __restrict__ out, const float* __restrict__ x,                       \
                                  const u8* __restrict__ w, const float* __restrict__ bias, int m, int n,     \
                                  int k, int ldo, int accumulate) {                                           \
        qk::gemv_body<qk::T, MB>(out, x, w, bias, m, n, k, ldo, accumulate);                                  \
    }

// grid gemv (ceil(n / 8)), block 256; gemm (ceil(n / 64), ceil(m / 64)), block 256;
// embed (n_ids), block any multiple of 32. The gemm's bound of four blocks per SM
// (64 registers, what it used before `accumulate`): unbounded, ptxas took 48 for
// q6_k with the flag and spilled.
#define QUANT_ENTRIES(NAME, T)                                                                                \
    QUANT_GEMV(NAME, T, 1)                                                                                    \
    QUANT_GEMV(NAME, T, 2)                                                                                    \
    QUANT_GEMV(NAME, T, 4)                                                                                    \
    QUANT_GEMV(NAME, T, 8)                                                                                    \
    extern "C" __global__ void __launch_bounds__(qk::GM_THREADS, 4)                                           \
        quant_gemm_##NAME(float* __restrict__ out, const float* __restrict__ x, const u8* __restrict__ w,     \
                          const float* __restrict__ bias, int m, int n, int k, int ldo, int accumulate) {     \
        qk::gemm_body<qk::T>(out, x, w, bias, m, n, k, ldo, accumulate);                                      \
    }                                                                                                         \
    extern "C" __global__ void quant_embed_##NAME(float* __restrict__ out, const u8* __restrict__ table,      \
                                                  const u32* __restrict__ ids, u32 dim, u32 vocab, u32 lo,     \
                                                  u32 rows) {                                                 \
        qk::embed_body<qk::T>(out, table, ids, dim, vocab, lo, rows);                                         \
    }

QUANT_ENTRIES(q4_0, Q4_0)
QUANT_ENTRIES(q4_1, Q4_1)
QUANT_ENTRIES(q5_0, Q5_0)
QUANT_ENTRIES(q8_0, Q8_0)
QUANT_ENTRIES(q4_k, Q4_K)
QUANT_ENTRIES(q5_k, Q5_K)
QUANT_ENTRIES(q6_k, Q6_K)
