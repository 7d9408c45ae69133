// bf16-weight GEMMs: out (m, n) f32 = A (m, k) @ W (n, k)^T + bias (n), every linear
// layer and the lm_head. A is f32 (activations) or bf16 (for benches and bf16 x bf16
// comparisons); W is bf16, row-major, one row per output column, so both operands
// are "k-major". CPU twin: src/backend/cpu/gemm.rs; launcher:
// src/backend/cuda/gemm.rs (the only place that picks a variant and a grid).
//
// Entry points (TA = f32 | bf16 is the type of A; every one has the argument list
//   (float* out, const TA* a, const u16* w, const float* bias, int m, int n, int k,
//    [int ks,] int accumulate [, const float* g, float eps])
// with ks for the gemv ones and g, eps for the rmsnorm ones; bias may be null;
// accumulate != 0 adds the product to out, which each element's one writer reads
// first: a residual branch's end, with no separate add kernel)
//   gemm_{f32,bf16}_bf16            tensor cores, 128x128x32 tile, k % 8 == 0
//   gemm_bm64_{f32,bf16}_bf16       the same with a 64x128 tile, for grids that
//                                   would not fill the GPU with 128-row tiles
//   gemm_unaligned_{f32,bf16}_bf16  64x128, any k: scalar, predicated loads
//   gemv_m{1,2,4,8,16}_{f32,bf16}_bf16  small m (decode), k % 8 == 0
//   gemv_m{1,2,4,8,16}_swiglu_f32_bf16  the same with x = silu(gate) * up computed
//                                   on load from a (m, 2k) gate_up, gate first (the
//                                   decode step's MLP activation and down projection
//                                   in one launch; x's values are swiglu_f32's bits)
//   gemv_m{1,2,4,8,16}_rmsnorm_f32_bf16 the same with x = rmsnorm(x) * g computed
//                                   on load (a decode sublayer's norm and first
//                                   projection; x's values are rmsnorm_f32's bits)
// The launcher takes the gemv for m <= 16, a GEMM otherwise, and the unaligned GEMM
// for k % 8 != 0 at any m (no real model has such k; one slow variant covers it).
//
// 1. Tensor-core GEMM (prefill, m > 16).
//    Block: 256 threads = 8 warps as 2 (m) x 4 (n); warp tile (BM/2) x 32, i.e.
//    (BM/32) x 4 mma.m16n8k16 tiles: 64 f32 accumulators per thread at BM = 128 (32
//    at BM = 64). 128x128 is the largest tile
//    whose accumulators, fragments and the f32 staging registers of A fit in the 128
//    registers that two resident blocks per SM allow; two blocks (16 warps) hide the
//    barrier and load latency of each other. BK = 32 keeps a stage at 16 KB, so a
//    4-stage pipeline is 64 KB per block, 128 KB per SM.
//    The launcher takes BM = 64 when 128-row tiles would give fewer than two
//    blocks per SM (prefill's o and down projections: n = 896 is only 7 tiles wide).
//    Grid: 1-D, ceil(m/BM) * ceil(n/128) blocks, rasterised in groups of 16 row
//    blocks (block id -> m fastest within a group), so that a wave of blocks shares
//    a few row blocks of A and a few column blocks of W in L2. For prefill, A (a few
//    MB) stays in L2 and every W tile is fetched from HBM about once.
//    Shared memory: per stage an A tile (BM x 32 bf16) and a W tile (128 x 32 bf16),
//    64-byte rows without padding; the 16-byte chunk c of row r is stored at chunk
//    c ^ ((r >> 1) & 3). Eight consecutive rows at one logical chunk then cover all
//    eight 16-byte bank groups, so ldmatrix (8 row addresses per 8x8 matrix) and the
//    16-byte stores (a quarter warp writes rows 2i, 2i+1, chunks 0..3) are both free
//    of bank conflicts.
//    Pipeline: STAGES = 4. bf16 operands go global -> shared with cp.async.cg (16
//    bytes, zero-fill past the edges via src-size 0). f32 A takes the register path:
//    the loads for tile kt+3 are issued before the mma work on tile kt and
//    converted (round to nearest even, as half::bf16::from_f32) and stored after it,
//    so their latency hides behind one tile of math. One cp.async group is committed
//    per iteration, empty or not, so wait_group(STAGES-2) always means "tile kt has
//    landed".
//    Fragments: ldmatrix.x4 from the swizzled tiles gives the mma A fragment
//    directly (row-major m16 x k16) and, read from W's rows, the "col" B fragment
//    for two n8 tiles at once, since W (n, k) is B (k, n) column-major.
//    Edges: rows of A past m and of W past n, and k chunks past k, load as zeros;
//    the epilogue writes only in-range elements. With k % 8 != 0 the rows of W (and
//    of a bf16 A) are not 16-byte aligned, so the unaligned variant loads element by
//    element through registers; it is correct, not fast (no real model has such k).
//
// 2. gemv (decode, 1 <= m <= 16): bandwidth first. The weight matrix is read exactly
//    once, with ld.global.nc.L1::no_allocate loads (streamed past L1, so the
//    L1 keeps x), and the m rows of x are read from global through L1: x is at most
//    16 x k f32 (57 KB at k = 896) and every block rereads it, so it is L1/L2-resident.
//    x is not staged in shared memory: staging would put a block-wide barrier and an
//    L2 round trip before the first weight load of every block and re-copy x per
//    block (as many bytes as the block's weights at m = 16, ks = 8), while through L1
//    it costs nothing up front. The exception is m = 16 at k = 4864 (311 KB of x, more
//    than L1), where x comes from L2; that shape is expected below bandwidth.
//    Template MB (1, 2, 4, 8, 16) is m rounded up; rows of x past m are clamped to
//    row m-1 and their sums dropped, so no branch sits in the inner loop.
//    Mapping: a warp owns R = 4 consecutive rows of W (output columns); the `ks`
//    warps of a row group split k in spans of 256 columns, span sp going to warp
//    sp % ks, and lane l takes the four-column groups l and 32 + l of the span. So
//    every load instruction reads one contiguous run: 256 bytes of a W row, 512 (f32)
//    or 256 (bf16) bytes of an x row, each 32-byte sector whole. (Eight adjacent
//    columns per lane would allow 16-byte W loads, but then a lane's 32 bytes of f32
//    x take two loads that each use half of every sector they touch: the emulator's
//    counters put that at 0.75 of the bytes fetched used, 0.67 at R = 2.) A lane
//    keeps MB x R partial sums, loads its 2R groups of W for the next step before
//    the FMAs of this one (2R 8-byte loads in flight per lane), and reuses each x
//    group for R rows (x traffic from L1 = 2m/R bytes per weight byte).
//    Reduction: a butterfly reduce-scatter over the warp (V - 1 shuffles for V =
//    MB x R values rather than 5V), then the ks partial sums meet in shared memory
//    and one thread per output adds them and the bias.
//    ks (1, 2, 4, 8; chosen by the launcher from n and k) multiplies the warps in
//    flight when n is small: 896 rows at R = 4 are only 224 warps, too few to keep
//    enough bytes in flight to reach HBM bandwidth; with k split 8 ways they are 1792.
//    Block: 256 threads, 8 warps = (8 / ks) row groups x ks; 32 / ks rows per block.
//    At m = 16 the FMA count per weight byte nears the f32 FMA rate of an H100 and x
//    traffic (8 bytes per weight byte) nears the L1 rate, so m = 16 is expected to run
//    below the bandwidth of m <= 8. Registers: 72 at m = 1 (three blocks, 24 warps
//    per SM), up to ~250 at m = 16 (one block); MB >= 8 is bounded for one block per
//    SM so that ptxas never spills the accumulators. A tensor-core gemv (x as the
//    m16 operand) would lift the m = 8..16 limits; not done here.
//    The swiglu variant loads gate and up (two 16-byte loads per x group) and
//    computes silu per element in every warp that uses it: one expf and one
//    division per R = 4 weight elements per x row, which at m = 1 the SFU and FMA
//    rates cover at HBM bandwidth (by count; unmeasured). It saves the swiglu launch
//    and the act round trip through L2 of each decode step's MLP.
//    The rmsnorm variant first sums the squares of its m rows of x as rmsnorm_f32
//    does (rmsnorm.cuh: the same threads, order and scale), while the first weight
//    loads are in flight, one barrier for all m rows; then scales each x group by
//    inv[row] and g on load. Every block rereads its x rows for this (L2-resident:
//    3.5 KB a row at k = 896), which replaces a norm launch and the xn round trip.
//
// Precision: products and sums in f32 on both paths; on the tensor-core path A is
// rounded to bf16 (the gemv keeps f32 x). Speed: everything here is unmeasured; the
// design targets are >= 40% of the bf16 GEMM rate for a 2048-token prefill, >= 60% of
// cuBLAS at 4096^3, and near copy bandwidth for the gemv.

#include "mlp.cuh"      // and common.cuh through it
#include "rmsnorm.cuh"

typedef unsigned short u16;  // bf16 bits; common.cuh avoids <stdint.h> for NVRTC

// ----------------------------------------------------------------------------
// Small helpers
// ----------------------------------------------------------------------------

// bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
__device__ __forceinline__ float bf16_lo(u32 pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(u32 pair) { return __uint_as_float(pair & 0xffff0000u); }

// Two f32 -> one bf16x2 word (lo in the low half), round to nearest even.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&v);
}

__device__ __forceinline__ u32 smem_u32(const void* p) {
    return static_cast<u32>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; src_bytes < 16 zero-fills the rest (0:
// nothing is read, `src` only has to be a valid address).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// One 16-byte shared store at element offset `off` (a multiple of 8) of a stage.
// Indexed as uint4 so that nvcc knows the 16-byte alignment: through a u16 pointer
// it cannot prove the swizzled address aligned and splits the store into four
// 4-byte ones, which the emulator's counters showed to be 4-way bank conflicts (a
// warp's lanes then hit 8 banks, each word of a chunk in turn); __builtin_assume_
// aligned did not keep the f32 A path vectorised, and inline asm costs the
// 128-register GEMM a spill.
__device__ __forceinline__ void st_shared16(u16* stage, int off, uint4 v) {
    reinterpret_cast<uint4*>(stage)[off >> 3] = v;
}

__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col)
__device__ __forceinline__ void mma_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight consecutive elements of a row starting at column kk, as f32, zero past
// column k. VEC: one or two 16-byte loads (the caller guarantees kk + 8 <= k or
// kk >= k, and 16-byte alignment); otherwise element by element.
template <bool VEC>
__device__ __forceinline__ void load8(const float* __restrict__ row, int kk, int k, bool ok, float (&v)[8]) {
    if constexpr (VEC) {
        float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
        if (ok && kk < k) {
            lo = __ldg(reinterpret_cast<const float4*>(row + kk));
            hi = __ldg(reinterpret_cast<const float4*>(row + kk + 4));
        }
        v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w;
        v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
    } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = (ok && kk + e < k) ? __ldg(row + kk + e) : 0.f;
    }
}
template <bool VEC>
__device__ __forceinline__ void load8(const bf16* __restrict__ row, int kk, int k, bool ok, float (&v)[8]) {
    const u16* r = reinterpret_cast<const u16*>(row);
    if constexpr (VEC) {
        uint4 u = make_uint4(0, 0, 0, 0);
        if (ok && kk < k) u = __ldg(reinterpret_cast<const uint4*>(r + kk));
        v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
        v[4] = bf16_lo(u.z), v[5] = bf16_hi(u.z), v[6] = bf16_lo(u.w), v[7] = bf16_hi(u.w);
    } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const u32 bits = (ok && kk + e < k) ? static_cast<u32>(__ldg(r + kk + e)) : 0u;
            v[e] = __uint_as_float(bits << 16);
        }
    }
}

// The same for a weight row, element by element, kept packed as 4 bf16x2 words.
__device__ __forceinline__ uint4 load8_w(const u16* __restrict__ row, int kk, int k) {
    u32 h[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) h[e] = kk + e < k ? static_cast<u32>(__ldg(row + kk + e)) : 0u;
    return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// ----------------------------------------------------------------------------
// 1. Tensor-core GEMM
// ----------------------------------------------------------------------------

namespace tc {

constexpr int BN = 128, BK = 32, THREADS = 256, STAGES = 4, GROUP_M = 16;

// Element offset of 16-byte chunk `ch` (0..3) of tile row `row` (rows of BK bf16).
__device__ __forceinline__ int swz(int row, int ch) { return row * BK + ((ch ^ ((row >> 1) & 3)) << 3); }

template <typename TA, int BM, bool VEC>
__device__ __forceinline__ void gemm_body(float* __restrict__ out, const TA* __restrict__ a,
                                          const u16* __restrict__ w, const float* __restrict__ bias, int m,
                                          int n, int k, int accumulate) {
    constexpr int WM = BM / 2;             // warp tile rows
    constexpr int MI = WM / 16;            // m16 tiles per warp
    constexpr int NI = 4;                  // n8 tiles per warp (32 columns)
    constexpr int ACH = BM * 4 / THREADS;  // 16-byte A chunks per thread per tile
    constexpr int WCH = BN * 4 / THREADS;  // 16-byte W chunks per thread per tile
    // bf16 A with aligned rows goes by cp.async; f32 A, or anything unaligned,
    // through registers.
    constexpr bool A_ASYNC = VEC && sizeof(TA) == 2;
    constexpr bool W_ASYNC = VEC;
    constexpr int STAGE = (BM + BN) * BK;  // bf16 elements per pipeline stage
    static_assert(BM == 64 || BM == 128, "two warp rows of m16 tiles");
    static_assert(ACH >= 1 && WCH >= 1, "every thread loads whole chunks");

    extern __shared__ __align__(128) u16 smem[];

    const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const int wm = warp % 2, wn = warp / 2;

    // Grouped rasterisation: within a group of GROUP_M row blocks, m runs fastest.
    const int nmb = (m + BM - 1) / BM, nnb = (n + BN - 1) / BN;
    const int per_group = GROUP_M * nnb;
    const int bid = blockIdx.x, g = bid / per_group, first = g * GROUP_M;
    const int gsize = min(nmb - first, GROUP_M);
    const int in_group = bid - g * per_group;
    const int bm = first + in_group % gsize, bn = in_group / gsize;
    const int row_a0 = bm * BM, row_w0 = bn * BN;

    const int ktiles = (k + BK - 1) / BK;
    // Each thread's chunks: chunk i = tid + j * THREADS -> row i / 4, chunk i % 4.
    const int ld_row = tid / 4, ld_ch = tid % 4;

    auto sa = [&](int st) { return smem + st * STAGE; };
    auto sw = [&](int st) { return smem + st * STAGE + BM * BK; };

    float a_reg[ACH][8];  // A tile in flight through registers (unused when A_ASYNC)
    uint4 w_reg[WCH];     // W tile in flight through registers (unused when W_ASYNC)

    auto issue_async = [&](int st, int kt) {
        const int k0 = kt * BK + ld_ch * 8;
        if constexpr (A_ASYNC) {
#pragma unroll
            for (int j = 0; j < ACH; ++j) {
                const int r = ld_row + j * (THREADS / 4), gr = row_a0 + r;
                const bool ok = gr < m && k0 < k;
                const u16* src = reinterpret_cast<const u16*>(a) + (ok ? static_cast<size_t>(gr) * k + k0 : 0);
                cp_async16(smem_u32(sa(st) + swz(r, ld_ch)), src, ok ? 16 : 0);
            }
        }
        if constexpr (W_ASYNC) {
#pragma unroll
            for (int j = 0; j < WCH; ++j) {
                const int r = ld_row + j * (THREADS / 4), gr = row_w0 + r;
                const bool ok = gr < n && k0 < k;
                const u16* src = w + (ok ? static_cast<size_t>(gr) * k + k0 : 0);
                cp_async16(smem_u32(sw(st) + swz(r, ld_ch)), src, ok ? 16 : 0);
            }
        }
    };
    auto load_regs = [&](int kt) {
        const int k0 = kt * BK + ld_ch * 8;
        if constexpr (!A_ASYNC) {
#pragma unroll
            for (int j = 0; j < ACH; ++j) {
                const int gr = row_a0 + ld_row + j * (THREADS / 4);
                const bool ok = gr < m;
                load8<VEC>(a + (ok ? static_cast<size_t>(gr) * k : 0), k0, k, ok, a_reg[j]);
            }
        }
        if constexpr (!W_ASYNC) {
#pragma unroll
            for (int j = 0; j < WCH; ++j) {
                const int gr = row_w0 + ld_row + j * (THREADS / 4);
                w_reg[j] = gr < n ? load8_w(w + static_cast<size_t>(gr) * k, k0, k) : make_uint4(0, 0, 0, 0);
            }
        }
    };
    auto store_regs = [&](int st) {
        if constexpr (!A_ASYNC) {
#pragma unroll
            for (int j = 0; j < ACH; ++j) {
                const float* v = a_reg[j];
st_shared16(sa(st), swz(ld_row + j * (THREADS / 4), ld_ch),
                            make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]),
                                       pack_bf16(v[6], v[7])));
            }
        }
        if constexpr (!W_ASYNC) {
#pragma unroll
            for (int j = 0; j < WCH; ++j)
                st_shared16(sw(st), swz(ld_row + j * (THREADS / 4), ld_ch), w_reg[j]);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // Prologue: tiles 0 .. STAGES-2 into stages 0 .. STAGES-2, one group each.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles) {
            issue_async(s, s);
            load_regs(s);
            store_regs(s);
        }
        cp_async_commit();
    }

    for (int kt = 0; kt < ktiles; ++kt) {
        // Groups committed so far: STAGES-1 + kt; leaving STAGES-2 pending means the
        // first kt+1 (tiles 0..kt) have landed, for this thread's copies.
        cp_async_wait<STAGES - 2>();
        // Makes every thread's copies and register stores of tile kt visible, and
        // guarantees every warp is done with tile kt-1, whose stage is refilled next.
        __syncthreads();

        const int nk = kt + STAGES - 1;
        const int nst = nk % STAGES;
        if (nk < ktiles) {
            issue_async(nst, nk);
            load_regs(nk);
        }
        cp_async_commit();

        const u16* ta = sa(kt % STAGES);
        const u16* tw = sw(kt % STAGES);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            u32 af[MI][4];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                // Lanes 0-15 address rows 0-15 at k 0-7, lanes 16-31 the same rows at
                // k 8-15: matrices a0 (rows 0-7), a1 (8-15), a2, a3 in mma order.
                const int r = wm * WM + i * 16 + lane % 16;
                ldmatrix_x4(af[i], smem_u32(ta + swz(r, kk * 2 + lane / 16)));
            }
            u32 bfr[NI][2];
#pragma unroll
            for (int j = 0; j < NI / 2; ++j) {
                // Matrix q = lane / 8: n rows 8 * (q / 2) + 0..7 at k chunk q % 2, i.e.
                // b0, b1 of n8 tile 2j, then b0, b1 of tile 2j + 1.
                const int r = wn * 32 + j * 16 + (lane / 16) * 8 + lane % 8;
                u32 t[4];
                ldmatrix_x4(t, smem_u32(tw + swz(r, kk * 2 + (lane / 8) % 2)));
                bfr[2 * j][0] = t[0], bfr[2 * j][1] = t[1];
                bfr[2 * j + 1][0] = t[2], bfr[2 * j + 1][1] = t[3];
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma_bf16(acc[i][j], af[i], bfr[j][0], bfr[j][1]);
        }

        // Stage nst held tile kt-1, which every warp finished before the barrier above.
        if (nk < ktiles) store_regs(nst);
    }
    cp_async_wait<0>();  // only empty groups can be left; drain them anyway

    // Epilogue. Accumulator e of an m16n8 tile: row g (+8 for e >= 2), columns
    // 2t, 2t+1 with g = lane / 4, t = lane % 4.
    const int g4 = lane / 4, t4 = lane % 4;
    const bool pairs = (n % 2) == 0;  // (row * n + even col) is then 8-byte aligned
    const bool add = accumulate != 0;  // out += the product (a residual branch's end)
#pragma unroll
    for (int j = 0; j < NI; ++j) {
        const int col = row_w0 + wn * 32 + j * 8 + 2 * t4;
        const float b0 = (bias != nullptr && col < n) ? bias[col] : 0.f;
        const float b1 = (bias != nullptr && col + 1 < n) ? bias[col + 1] : 0.f;
#pragma unroll
        for (int i = 0; i < MI; ++i) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = row_a0 + wm * WM + i * 16 + g4 + h * 8;
                if (row >= m) continue;
                float* o = out + static_cast<size_t>(row) * n + col;
                float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
                if (pairs && col + 1 < n) {
                    if (add) {
                        const float2 r = *reinterpret_cast<const float2*>(o);
                        v0 = r.x + v0, v1 = r.y + v1;
                    }
                    *reinterpret_cast<float2*>(o) = make_float2(v0, v1);
                } else {
                    if (col < n) o[0] = add ? o[0] + v0 : v0;
                    if (col + 1 < n) o[1] = add ? o[1] + v1 : v1;
                }
            }
        }
    }
}

}  // namespace tc

// grid (ceil(m / BM) * ceil(n / 128)), block (256), dynamic smem 4 * (BM + 128) * 64
#define GEMM_ENTRY(NAME, TA, BM, VEC)                                                                   \
    extern "C" __global__ void __launch_bounds__(tc::THREADS, 2)                                        \
        NAME(float* __restrict__ out,          /* (m, n) */                                             \
             const TA* __restrict__ a,         /* (m, k) */                                             \
             const u16* __restrict__ w,        /* (n, k) bf16 bits */                                   \
             const float* __restrict__ bias,   /* (n) or null */                                        \
             int m, int n, int k, int accumulate) {                                                     \
        tc::gemm_body<TA, BM, VEC>(out, a, w, bias, m, n, k, accumulate);                                      \
    }

GEMM_ENTRY(gemm_f32_bf16, float, 128, true)
GEMM_ENTRY(gemm_bf16_bf16, bf16, 128, true)
GEMM_ENTRY(gemm_bm64_f32_bf16, float, 64, true)
GEMM_ENTRY(gemm_bm64_bf16_bf16, bf16, 64, true)
GEMM_ENTRY(gemm_unaligned_f32_bf16, float, 64, false)
GEMM_ENTRY(gemm_unaligned_bf16_bf16, bf16, 64, false)

// ----------------------------------------------------------------------------
// 2. gemv: small m
// ----------------------------------------------------------------------------

namespace gv {

constexpr int THREADS = 256, WARPS = THREADS / WARP, R = 4;

// Butterfly reduce-scatter of V (a power of two) values over the warp. Afterwards
// v[0 .. max(V / 32, 1)) hold warp-wide sums: for V >= 32 lane l holds value indices
// l * (V / 32) + i; for V < 32 every lane holds index l / (32 / V). At step s lanes
// l and l ^ (16 >> s) swap halves of what they still hold and each keeps the sum
// of the half selected by that bit of its lane: V/2 + V/4 + ... shuffles in all.
template <int V, int S = 0>
__device__ __forceinline__ void reduce_scatter(float (&v)[V], int lane) {
    static_assert(V >= 1 && (V & (V - 1)) == 0, "a power of two");
    if constexpr (S < 5) {
        constexpr int off = 16 >> S, half = V >> (S + 1);
        if constexpr (half >= 1) {
            const bool upper = (lane & off) != 0;
#pragma unroll
            for (int i = 0; i < half; ++i) {
                const float send = upper ? v[i] : v[i + half];
                const float keep = upper ? v[i + half] : v[i];
                v[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
            }
        } else {
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], off);
        }
        reduce_scatter<V, S + 1>(v, lane);
    }
}

// Four-column group g of a weight row (8 bytes, streamed past L1), zero past the
// ng groups of the row.
__device__ __forceinline__ uint2 load4_w(const u16* __restrict__ row, int g, int ng) {
    uint2 v = make_uint2(0, 0);
    if (g < ng)
        asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(row + 4 * g));
    return v;
}

// Four-column group g of an x row as f32, zero past the ng groups of the row.
__device__ __forceinline__ void load4_x(const float* __restrict__ row, int g, int ng, float* v) {
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    if (g < ng) a = __ldg(reinterpret_cast<const float4*>(row) + g);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
}
__device__ __forceinline__ void load4_x(const bf16* __restrict__ row, int g, int ng, float* v) {
    uint2 u = make_uint2(0, 0);
    if (g < ng) u = __ldg(reinterpret_cast<const uint2*>(row) + g);
    v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
}

// Four-column group g of silu(gate) * up from a gate_up row (the ng groups of gate,
// then up's), zero past ng.
__device__ __forceinline__ void load4_swiglu(const float* __restrict__ row, int g, int ng, float* v) {
    v[0] = v[1] = v[2] = v[3] = 0.f;
    if (g < ng) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(row) + g);
        const float4 u = __ldg(reinterpret_cast<const float4*>(row) + ng + g);
        v[0] = silu_mul(a.x, u.x), v[1] = silu_mul(a.y, u.y);
        v[2] = silu_mul(a.z, u.z), v[3] = silu_mul(a.w, u.w);
    }
}

// What the product's x is: x itself; silu(gate) * up of a gate_up (m, 2k); or
// rmsnorm(x) * g, rmsnorm_f32's values.
enum XForm { X_PLAIN, X_SWIGLU, X_NORM };

// inv[j] = rms_scale of x row j (rows past m clamped), summed as rmsnorm_f32 sums
// with rms_threads(k / 4) threads: threads past that count, and whole warps, add
// zeros, and every warp's sum is added in warp order, so the scales are bit-equal.
template <int MB>
__device__ __forceinline__ void norm_scales(const float* const* xr, int k, float eps, float (&inv)[MB]) {
    __shared__ float part[MB * WARPS];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const u32 d4 = k / 4, used = rms_threads(d4);
#pragma unroll
    for (int j = 0; j < MB; ++j) {
        const float ss = threadIdx.x < used ? row_sq_part(xr[j], d4, threadIdx.x, used) : 0.f;
        const float sw = warp_sum(ss);
        if (lane == 0) part[j * WARPS + warp] = sw;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < MB; ++j) {
        float s = 0.f;
        for (int i = 0; i < WARPS; ++i) s += part[j * WARPS + i];
        inv[j] = rms_scale(s, k, eps);
    }
}

// ACCUMULATE (a runtime flag): out += the product, one thread per output element, so
// out may be a residual stream the product is added to.
template <typename TA, int MB, XForm XF>
__device__ __forceinline__ void gemv_body(float* __restrict__ out, const TA* __restrict__ x,
                                          const u16* __restrict__ w, const float* __restrict__ bias, int m,
                                          int n, int k, int ks, int accumulate, const float* __restrict__ g,
                                          float eps) {
    constexpr bool SWIGLU = XF == X_SWIGLU, NORM = XF == X_NORM;
    static_assert(XF == X_PLAIN || sizeof(TA) == 4, "gate_up and a normed x are f32");
    constexpr int V = MB * R;  // partial sums per lane, index j * R + r
    __shared__ float red[WARPS * V];

    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int rg = warp / ks, s = warp % ks;
    const int rows_per_block = (WARPS / ks) * R;
    const int base = blockIdx.x * rows_per_block;
    const int row0 = base + rg * R;

    // Rows past n (last block) and x rows past m are clamped to real ones; their
    // results are never written.
    const u16* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = w + static_cast<size_t>(min(row0 + r, n - 1)) * k;
    const TA* xr[MB];
#pragma unroll
    for (int j = 0; j < MB; ++j) xr[j] = x + static_cast<size_t>(min(j, m - 1)) * (SWIGLU ? 2 * k : k);

    float acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = 0.f;

    // Four-column groups g: lane l of a warp's step takes groups 64 sp + l and
    // 64 sp + 32 + l of its span sp (256 columns), so each load instruction of the
    // warp, weights (8 bytes a lane) and x (16 or 8), reads one contiguous run.
    const int ng = k / 4, nsp = (ng + 63) / 64;
    int sp = s;
    uint2 cur[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) cur[r][h] = load4_w(wr[r], sp * 64 + h * 32 + lane, ng);

    // The norm's reduction runs while the first weights are in flight.
    float inv[MB];
    if constexpr (NORM) norm_scales<MB>(xr, k, eps, inv);

    for (; sp < nsp; sp += ks) {
        // Next step's weights first: 2R 8-byte loads in flight per lane.
        uint2 nxt[R][2];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) nxt[r][h] = load4_w(wr[r], (sp + ks) * 64 + h * 32 + lane, ng);

        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const uint2 u = cur[r][h];
                wf[r][4 * h] = bf16_lo(u.x), wf[r][4 * h + 1] = bf16_hi(u.x);
                wf[r][4 * h + 2] = bf16_lo(u.y), wf[r][4 * h + 3] = bf16_hi(u.y);
            }
        float gv[8];
        if constexpr (NORM) {
            load4_x(g, sp * 64 + lane, ng, gv);
            load4_x(g, sp * 64 + 32 + lane, ng, gv + 4);
        }
#pragma unroll
        for (int j = 0; j < MB; ++j) {
            float xv[8];
            if constexpr (SWIGLU) {
                load4_swiglu(xr[j], sp * 64 + lane, ng, xv);
                load4_swiglu(xr[j], sp * 64 + 32 + lane, ng, xv + 4);
            } else {
                load4_x(xr[j], sp * 64 + lane, ng, xv);
                load4_x(xr[j], sp * 64 + 32 + lane, ng, xv + 4);
            }
            if constexpr (NORM) {
#pragma unroll
                for (int e = 0; e < 8; ++e) xv[e] = xv[e] * inv[j] * gv[e];
            }
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[j * R + r] = fmaf(xv[e], wf[r][e], acc[j * R + r]);
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) cur[r][h] = nxt[r][h];
    }

    reduce_scatter<V>(acc, lane);
    if constexpr (V >= WARP) {
#pragma unroll
        for (int i = 0; i < V / WARP; ++i) red[warp * V + lane * (V / WARP) + i] = acc[i];
    } else {
        if (lane % (WARP / V) == 0) red[warp * V + lane / (WARP / V)] = acc[0];
    }
    __syncthreads();

    // One thread per output (j, row): consecutive threads take consecutive rows.
    for (int t = threadIdx.x; t < MB * rows_per_block; t += THREADS) {
        const int j = t / rows_per_block, q = t % rows_per_block;
        const int row = base + q;
        if (j >= m || row >= n) continue;
        const int g = q / R, idx = j * R + q % R;
        float sum = 0.f;
        for (int p = 0; p < ks; ++p) sum += red[(g * ks + p) * V + idx];
        if (bias != nullptr) sum += bias[row];
        float* o = out + static_cast<size_t>(j) * n + row;
        *o = accumulate ? *o + sum : sum;
    }
}

}  // namespace gv

// grid (ceil(n / (32 / ks))), block (256), ks in {1, 2, 4, 8}. m >= 8 keeps up to
// ~250 registers (one block per SM) rather than spill; smaller m fits two blocks.
// The rmsnorm entries take the norm's weight g (k) and eps after `accumulate`.
#define GEMV_ENTRY(NAME, TA, MB, XF)                                                                    \
    extern "C" __global__ void __launch_bounds__(gv::THREADS, (MB) >= 8 ? 1 : 2)                        \
        NAME(float* __restrict__ out,          /* (m, n) */                                             \
             const TA* __restrict__ x,         /* (m, k), or (m, 2k) gate_up with X_SWIGLU */           \
             const u16* __restrict__ w,        /* (n, k) bf16 bits */                                   \
             const float* __restrict__ bias,   /* (n) or null */                                        \
             int m, int n, int k, int ks, int accumulate GEMV_PARAMS_##XF) {                            \
        gv::gemv_body<TA, MB, gv::XF>(out, x, w, bias, m, n, k, ks, accumulate, GEMV_ARGS_##XF);       \
    }
#define GEMV_PARAMS_X_PLAIN
#define GEMV_PARAMS_X_SWIGLU
#define GEMV_PARAMS_X_NORM , const float *__restrict__ g, float eps
#define GEMV_ARGS_X_PLAIN nullptr, 0.f
#define GEMV_ARGS_X_SWIGLU nullptr, 0.f
#define GEMV_ARGS_X_NORM g, eps

#define GEMV_ENTRIES(MB)                                                   \
    GEMV_ENTRY(gemv_m##MB##_f32_bf16, float, MB, X_PLAIN)                  \
    GEMV_ENTRY(gemv_m##MB##_bf16_bf16, bf16, MB, X_PLAIN)                  \
    GEMV_ENTRY(gemv_m##MB##_swiglu_f32_bf16, float, MB, X_SWIGLU)          \
    GEMV_ENTRY(gemv_m##MB##_rmsnorm_f32_bf16, float, MB, X_NORM)

GEMV_ENTRIES(1)
GEMV_ENTRIES(2)
GEMV_ENTRIES(4)
GEMV_ENTRIES(8)
GEMV_ENTRIES(16)
