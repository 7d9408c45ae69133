// Causal grouped-query attention over the paged, bf16 KV cache. CPU twin:
// src/backend/cpu/attention.rs (attention); launcher: src/backend/cuda/attention.rs,
// which picks the decode pair when every sequence of the step has one token and the
// prefill kernel otherwise.
//
// Layouts (all row-major)
//   qkv      (n, (hq + 2 hk) * D) f32; q of token t, head h at t * row + h * D
//   out      (n, hq * D) f32
//   k, v     (num_blocks * 16, hk * D) bf16; row = cache slot = block * 16 + offset,
//            kv head g in columns g * D .. (g + 1) * D. The cache already holds this
//            step's k/v (kv_write runs first), so every query reads keys 0..=pos;
//            except in attn_decode_rope_*, which writes them itself.
//   tables   (n_seqs, max_blocks) u32 block tables
// q head h reads kv head h / (hq / hk); scores are scaled by 1 / sqrt(D). Softmax is
// done in the base-2 domain: the launcher passes scale * log2(e), so that exp2f of
// (score - max) equals expf of the natural-log form. exp2f is CUDA's library
// function (2 ulp), not the __exp2f intrinsic, and no fast-math is used.
//
// Entry points
//   attn_prefill_d{64,128}_bf16
//       grid (tiles, hq), block 128, dynamic smem 5 * 64 * (D + 8) * 2 bytes.
//       One CTA = one work item (64 query rows of ONE sequence) x one q head. The
//       work list (tiles, 4) u32 of (first batch row, rows, position of the first
//       row, sequence) is planned on the host from the step's spans. FlashAttention-2
//       structure: Q tile (f32 -> bf16) in shared memory, then held as mma A
//       fragments; K/V tiles of 64 keys double-buffered with cp.async (rows gathered
//       through the block table; keys past the tile's last position are
//       zero-filled, not read); each of the 4 warps owns 16 query rows and does
//       S = Q K^T and O += P V with mma.sync m16n8k16 bf16 -> f32, online softmax in
//       f32 registers, P rounded to bf16 for the second product (the row sums use
//       the f32 P). Key tiles past the tile's last position are never visited;
//       masking (key > row's position) is applied only to tiles that reach past the
//       tile's first position. Shared rows are padded by 16 bytes so that ldmatrix
//       reads of 8 rows hit 8 different bank groups.
//   attn_decode_d{64,128}_g{1,2,4,8}_bf16
//       grid (hk * ceil(G / GMAX), n, splits), block 128, static smem.
//       One token per sequence (n == sequences). One CTA = one token, one kv head,
//       up to GMAX of its G = hq / hk q heads (all of them when G <= 8, so every K/V
//       row is read once per group), and one split: a contiguous range of `bps`
//       cache blocks (flash-decoding). Warp w takes blocks w, w + 4, ... of the
//       range; in a block, D / 8 lanes share one K/V row with one 16-byte load each,
//       so a warp-wide load covers 32 / (D / 8) rows and 4 of them are in flight per
//       lane. q stays f32 (pre-scaled, in shared memory); each lane keeps its own online
//       softmax state (max, sum, 8 accumulators per head) for its rows, and these
//       are merged across lanes (shuffles), then across warps (shared memory).
//       With one split the CTA writes the output; otherwise it writes its partial
//       (max, sum, unnormalised acc) to scratch, and the last split of its (token,
//       head group) to finish merges them all into the output: each CTA counts
//       itself in `count` (one u32 per (token, CTA column), zero at launch) after
//       a fence, and the one that completes the count fences, reads the partials
//       through L2 (.cg: they were written by other SMs during this kernel) and
//       sets the counter back to zero for the next launch. That saves a reduce
//       launch per layer (24 of a batch-1 decode step's nodes at Qwen2.5-0.5B)
//       for one atomic per CTA. The grid and every scalar depend only on (n, hq,
//       hk, D, max_blocks): positions are read on the device, and splits that
//       start past a sequence's last block exit at once (the count expects only
//       the others), so a decode step can be captured once as a CUDA graph and
//       replayed.
//   attn_decode_rope_d{64,128}_g{1,2,4,8}_bf16
//       the same, plus RopeFreqs, for qkv whose q and k are not rotated yet and a
//       cache without this step's row: q is rotated on load (rope.cuh, rope_f32's
//       values), and the CTA whose split holds the token's position writes its
//       rotated k and its v (bf16, as rope_kv_f32 writes them) at that position's
//       cache row, then a barrier; its K/V loads go through L1 (ld.global.ca), not
//       the read-only path, since the kernel writes the cache. Only that CTA reads
//       the row when one CTA holds all of a kv head's q heads (G <= GMAX), the
//       launcher's condition. The decode step's rope, cache write and attention in
//       one launch: 24 of a batch-1 Qwen2.5-0.5B step's nodes fewer.
//
// Speed (unmeasured: no GPU was available when this was written). Prefill should be
// tensor-core bound for long prompts, roughly FlashAttention-2 without Hopper's
// wgmma/TMA path: expect well under H100's dense bf16 peak, perhaps 30-50% of it.
// A 1-token span inside a mixed step walks its whole context in one CTA per head
// (no split), which is slow for long contexts but correct. Decode is meant to
// stream K/V at a large fraction of HBM bandwidth when the grid has a few hundred
// CTAs (batch 64); at batch 1 it is latency-bound (one small launch).
// Resources (ptxas, sm_90): prefill d64 130 registers, 46,080 B dynamic smem;
// d128 168 registers, 87,040 B (opt-in above 48 KB). Decode g8 ~185 registers, two
// CTAs per SM (forcing three spills); g4 128-146, g1/g2 70-121. With q in
// registers instead of shared memory g8 took ~240 and g4 168. No spills.

#include "rope.cuh"  // and common.cuh through it

// Rows per cache block: the launcher checks plan.block_size against it.
#define ATTN_BLOCK 16

__device__ __forceinline__ u32 min_u(u32 a, u32 b) { return a < b ? a : b; }

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return static_cast<u32>(__cvta_generic_to_shared(p));
}

// Two floats to a bf16x2 word, round to nearest even; `lo` in the low half (the
// lower column index, as mma fragments want it).
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&v);
}

// bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
__device__ __forceinline__ float bf16_lo(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }

// 16 bytes global -> shared, asynchronously; with valid == false the 16 bytes are
// zero-filled and nothing is read (src must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(n)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lane i gives the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_addr(p)));
}

// c (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------
// Prefill
// ---------------------------------------------------------------------------------

#define PF_BM 64       // query rows per CTA (4 warps x 16)
#define PF_BN 64       // keys per K/V tile
#define PF_THREADS 128
#define PF_WORK 4      // u32 per work item: first row, rows, first position, sequence

// Shared memory: Q, then K[2], then V[2], each PF_BM (= PF_BN) rows of D + 8 bf16.
template <int D>
struct Prefill {
    static constexpr int STRIDE = D + 8;  // bf16 per shared row: +16 bytes, see header
    static constexpr int TILE = PF_BM * STRIDE;
    static constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    static constexpr int SMEM = 5 * TILE * 2;
};

template <int D>
__device__ __forceinline__ void attn_prefill(float* __restrict__ out,        // (n, hq * D)
                                             const float* __restrict__ qkv,  // (n, (hq + 2 hk) * D)
                                             const bf16* __restrict__ kc,    // (slots, hk * D)
                                             const bf16* __restrict__ vc,    // (slots, hk * D)
                                             const u32* __restrict__ tables,  // (n_seqs, max_blocks)
                                             const u32* __restrict__ work,    // (tiles, PF_WORK)
                                             u32 hq, u32 hk, u32 max_blocks, float scale_log2) {
    using P = Prefill<D>;
    constexpr int STRIDE = P::STRIDE, TILE = P::TILE, CHUNKS = P::CHUNKS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
    bf16* sK = sQ + TILE;      // [2][PF_BN][STRIDE]
    bf16* sV = sK + 2 * TILE;  // [2][PF_BN][STRIDE]

    const u32* w = work + (size_t)blockIdx.x * PF_WORK;
    const u32 row0 = w[0], nrows = w[1], pos0 = w[2], seq = w[3];
    const u32 h = blockIdx.y;
    const u32 g = h / (hq / hk);
    const size_t qrow = (size_t)(hq + 2 * hk) * D;
    const size_t kvrow = (size_t)hk * D;
    const u32 kend = pos0 + nrows;  // keys 0..kend-1 are needed by some row of the tile
    const u32 ntiles = (kend + PF_BN - 1) / PF_BN;
    const u32* table = tables + (size_t)seq * max_blocks;
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP;

    // Q tile: f32 -> bf16, rows past the tile's end are zeros.
#pragma unroll
    for (int i = tid; i < PF_BM * CHUNKS; i += PF_THREADS) {
        const int r = i / CHUNKS, c = i % CHUNKS;
        uint4 v = make_uint4(0, 0, 0, 0);
        if ((u32)r < nrows) {
            const float4* src = reinterpret_cast<const float4*>(qkv + (row0 + r) * qrow + (size_t)h * D + c * 8);
            const float4 a = src[0], b = src[1];
            v = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
        }
        *reinterpret_cast<uint4*>(sQ + r * STRIDE + c * 8) = v;
    }

    // K/V tile kt into buffer `buf`, gathered through the block table. Keys at or
    // past kend are zero-filled (their table entries may not exist) and masked later.
    auto load_kv = [&](int buf, u32 kt) {
        bf16* dk = sK + buf * TILE;
        bf16* dv = sV + buf * TILE;
#pragma unroll
        for (int i = tid; i < PF_BN * CHUNKS; i += PF_THREADS) {
            const int r = i / CHUNKS, c = i % CHUNKS;
            const u32 j = kt * PF_BN + r;
            const bool valid = j < kend;
            size_t off = 0;
            if (valid) off = ((size_t)table[j / ATTN_BLOCK] * ATTN_BLOCK + j % ATTN_BLOCK) * kvrow + (size_t)g * D + c * 8;
            cp_async16(dk + r * STRIDE + c * 8, kc + off, valid);
            cp_async16(dv + r * STRIDE + c * 8, vc + off, valid);
        }
        cp_async_commit();
    };

    load_kv(0, 0);
    __syncthreads();  // Q stores visible

    // Q as A fragments, one per 16-wide k step: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15).
    u32 qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int r = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int c = kk * 16 + (lane >> 4) * 8;
        ldsm_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], sQ + r * STRIDE + c);
    }

    // This thread's two rows of the warp's 16 (mma C layout: lane / 4 and lane / 4 + 8).
    // Rows past the tile's end take the last row's position, so that every row has a
    // finite max; their output is not written.
    const u32 ra = warp * 16 + lane / 4, rb = ra + 8;
    const u32 pa = pos0 + min_u(ra, nrows - 1), pb = pos0 + min_u(rb, nrows - 1);

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    for (u32 kt = 0; kt < ntiles; kt++) {
        const int buf = kt & 1;
        if (kt + 1 < ntiles) {
            // The other buffer was last read in iteration kt - 1, which ended in a barrier.
            load_kv(buf ^ 1, kt + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // tile kt visible to all warps
        const bf16* tK = sK + buf * TILE;
        const bf16* tV = sV + buf * TILE;

        // S = Q K^T, 16 x 64 per warp as 8 n-tiles of 8 keys.
        float s[PF_BN / 8][4];
#pragma unroll
        for (int i = 0; i < PF_BN / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
            for (int np = 0; np < PF_BN / 16; np++) {
                // matrices: keys np*16 + (0-7 | 8-15) x dims kk*16 + (0-7 | 8-15)
                const int r = np * 16 + (lane & 7) + (lane >> 4) * 8;
                const int c = kk * 16 + ((lane >> 3) & 1) * 8;
                u32 b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, tK + r * STRIDE + c);
                mma_bf16(s[2 * np], qf[kk], b0, b1);
                mma_bf16(s[2 * np + 1], qf[kk], b2, b3);
            }
        }

        // Scale, mask, and the online softmax update of this thread's two rows.
        const u32 k0 = kt * PF_BN;
        const bool masked = k0 + PF_BN - 1 > pos0;  // some key may lie past some row
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < PF_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const u32 key = k0 + nt * 8 + 2 * (lane & 3) + (e & 1);
                float v = s[nt][e] * scale_log2;
                if (masked && key > (e < 2 ? pa : pb)) v = NEG_INF;
                s[nt][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        }
        float base[2], alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            // The 4 lanes of a quad hold the same two rows.
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]);
            // Key 0 is never masked, so mn is finite from the first tile on; the
            // guard keeps a fully masked row at zeros instead of NaN regardless.
            base[r] = mn == NEG_INF ? 0.f : mn;
            alpha[r] = exp2f(m[r] - base[r]);
            m[r] = mn;
        }
        float rs[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < PF_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = exp2f(s[nt][e] - base[e >> 1]);
                s[nt][e] = p;
                rs[e >> 1] += p;
            }
        }
        l[0] = l[0] * alpha[0] + rs[0];
        l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= alpha[0];
            o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1];
            o[dt][3] *= alpha[1];
        }

        // O += P V: P's C fragments of key tiles 2kk, 2kk+1 are the A fragment of k step kk.
#pragma unroll
        for (int kk = 0; kk < PF_BN / 16; kk++) {
            const u32 pf[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                               pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                // matrices (transposed): keys kk*16 + (0-7 | 8-15) x dims dp*16 + (0-7 | 8-15)
                const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                const int c = dp * 16 + (lane >> 4) * 8;
                u32 b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, tV + r * STRIDE + c);
                mma_bf16(o[2 * dp], pf, b0, b1);
                mma_bf16(o[2 * dp + 1], pf, b2, b3);
            }
        }
        __syncthreads();  // every warp is done with buffer `buf` before it is refilled
    }

    // Row sums over the quad, normalise, store.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const float inv[2] = {1.f / l[0], 1.f / l[1]};
    const size_t orow = (size_t)hq * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const u32 rr = r == 0 ? ra : rb;
        if (rr >= nrows) continue;
        float* dst = out + (row0 + rr) * orow + (size_t)h * D + 2 * (lane & 3);
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            *reinterpret_cast<float2*>(dst + dt * 8) = make_float2(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
        }
    }
}

#define PREFILL_ENTRY(D)                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_d##D##_bf16(                \
        float* __restrict__ out, const float* __restrict__ qkv, const bf16* __restrict__ kc,          \
        const bf16* __restrict__ vc, const u32* __restrict__ tables, const u32* __restrict__ work,     \
        u32 hq, u32 hk, u32 max_blocks, float scale_log2) {                                           \
        attn_prefill<D>(out, qkv, kc, vc, tables, work, hq, hk, max_blocks, scale_log2);             \
    }
PREFILL_ENTRY(64)
PREFILL_ENTRY(128)

// ---------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------

#define DC_WARPS 4
#define DC_THREADS (DC_WARPS * WARP)
#define DC_STEPS 4  // row loads in flight per lane (for K, and as many for V)

// Where element i of a head's q (and of a warp's accumulator row) sits in shared
// memory. Lanes 0-7 of a quarter warp read or write 16-byte halves of 8-element
// chunks c = 0..7, at c * 8 floats: chunks c and c + 4 share banks (a 2-way conflict
// the emulator's counters found). Swapping the halves of chunks 4-7 of every 64
// floats (i ^ 4 when bit 5 of i is set) puts the eight 16-byte pieces in different
// banks, and keeps any 32 consecutive elements in 32 different banks.
__device__ __forceinline__ int dc_swz(int i) { return i ^ (((i >> 5) & 1) << 2); }

// Merge online-softmax state (m2, l2) into (m, l); returns the weights of the old
// and the new state. Either state may be empty (m == -inf, l == 0).
__device__ __forceinline__ void merge_weights(float& m, float m2, float& w1, float& w2) {
    const float mn = fmaxf(m, m2);
    const float base = mn == NEG_INF ? 0.f : mn;
    w1 = exp2f(m - base);
    w2 = exp2f(m2 - base);
    m = mn;
}

// Output element i of (token, head) from the `used` splits' partials at p0 (the
// (token, head)'s first), merged in split order. Loaded through L2: other CTAs of
// this kernel wrote them.
__device__ __forceinline__ float merge_splits(const float* part_o, const float* part_ml, size_t p0, u32 used,
                                              u32 d, u32 i) {
    float mx = NEG_INF;
    for (u32 s = 0; s < used; s++) mx = fmaxf(mx, __ldcg(part_ml + 2 * (p0 + s)));
    float sum = 0.f, a = 0.f;
    for (u32 s = 0; s < used; s++) {
        const float wt = exp2f(__ldcg(part_ml + 2 * (p0 + s)) - mx);
        sum = fmaf(wt, __ldcg(part_ml + 2 * (p0 + s) + 1), sum);
        a = fmaf(wt, __ldcg(part_o + (p0 + s) * d + i), a);
    }
    return a / sum;
}

// A cache row's 16 bytes: through the read-only path, or, when this kernel writes
// the cache (ROPE), through L1 like any load, so a row written before a barrier is
// seen.
template <bool ROPE>
__device__ __forceinline__ uint4 load_kv(const bf16* p) {
    if constexpr (ROPE) return __ldca(reinterpret_cast<const uint4*>(p));
    return __ldg(reinterpret_cast<const uint4*>(p));
}

// ROPE: qkv's q and k are not yet rotated, and this step's k and v are not yet in
// the cache: q is rotated on load, and the CTA whose split holds the position writes
// the token's rotated k and its v into the cache row (as rope_kv_f32 would) before
// any of its warps reads it. Only that CTA reads the row, given one head chunk per kv
// head (the launcher's condition), so no other CTA waits on the write.
template <int D, int GMAX, bool ROPE>
__device__ __forceinline__ void attn_decode(float* __restrict__ out,        // (n, hq * D)
                                            float* __restrict__ part_o,     // (n, hq, splits, D)
                                            float* __restrict__ part_ml,    // (n, hq, splits, 2)
                                            u32* __restrict__ count,        // (n, gridDim.x), splits > 1
                                            const float* __restrict__ qkv,  // (n, (hq + 2 hk) * D)
                                            const bf16* kc,                 // (slots, hk * D)
                                            const bf16* vc,                 // (slots, hk * D)
                                            const u32* __restrict__ positions,  // (n)
                                            const u32* __restrict__ token_seq,  // (n)
                                            const u32* __restrict__ tables,     // (n_seqs, max_blocks)
                                            u32 hq, u32 hk, u32 max_blocks, u32 bps, float scale_log2,
                                            const RopeFreqs* freqs) {
    constexpr int LPR = D / 8;          // lanes per K/V row, 16 bytes each
    constexpr int RPW = WARP / LPR;     // rows per warp-wide load
    constexpr int CHUNK = RPW * DC_STEPS;  // rows per warp per inner step
    static_assert(ATTN_BLOCK % CHUNK == 0, "a cache block is a whole number of chunks");
    constexpr int CPB = ATTN_BLOCK / CHUNK;

    __shared__ float s_m[DC_WARPS][GMAX], s_l[DC_WARPS][GMAX];
    __shared__ __align__(16) float s_acc[DC_WARPS][GMAX][D];
    __shared__ __align__(16) float s_q[GMAX][D];

    const u32 group = hq / hk;
    const u32 hchunks = (group + GMAX - 1) / GMAX;
    const u32 g = blockIdx.x / hchunks, hc = blockIdx.x % hchunks;
    const u32 h0 = g * group + hc * GMAX;            // first q head of this CTA
    const int nh = (int)min_u(GMAX, group - hc * GMAX);  // heads of this CTA
    const u32 t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;

    const u32 pos = positions[t];
    // Blocks holding positions 0..=pos (clamped to the table for memory safety; the
    // launcher's precondition is that the table covers them).
    const u32 nblk = min_u(pos / ATTN_BLOCK + 1, max_blocks);
    const u32 b_begin = split * bps;
    if (b_begin >= nblk) return;  // a split past this sequence's end (the reduce skips it)
    const u32 b_end = min_u(b_begin + bps, nblk);

    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP;
    const int sub = lane / LPR, c = lane % LPR;  // row within a warp-wide load, 8-wide chunk

    const u32* table = tables + (size_t)token_seq[t] * max_blocks;
    const size_t kvrow = (size_t)hk * D;

    // q, pre-scaled, lives in shared memory: registers go to the accumulators and the
    // loads in flight (with q in registers the GMAX = 8 variants needed ~240).
    const float* row = qkv + (size_t)t * (hq + 2 * hk) * D;
    const float* qsrc = row + (size_t)h0 * D;
    if constexpr (ROPE) {
        __shared__ float s_cos[D / 2], s_sin[D / 2];
        rope_table(pos, D / 2, *freqs, s_cos, s_sin);
        __syncthreads();
        for (int idx = tid; idx < nh * D; idx += DC_THREADS)
            s_q[idx / D][dc_swz(idx % D)] = rope_at(qsrc + (idx / D) * D, idx % D, D / 2, s_cos, s_sin) * scale_log2;
        const u32 blk = pos / ATTN_BLOCK;
        if (hc == 0 && blk >= b_begin && blk < b_end) {
            const size_t at = ((size_t)table[blk] * ATTN_BLOCK + pos % ATTN_BLOCK) * kvrow + (size_t)g * D;
            const float* k = row + (size_t)(hq + g) * D;
            const float* v = row + (size_t)(hq + hk + g) * D;
            for (int i = tid; i < D; i += DC_THREADS) {
                const_cast<bf16*>(kc)[at + i] = __float2bfloat16_rn(rope_at(k, i, D / 2, s_cos, s_sin));
                const_cast<bf16*>(vc)[at + i] = __float2bfloat16_rn(v[i]);
            }
        }
    } else {
        for (int idx = tid; idx < nh * D; idx += DC_THREADS)
            s_q[idx / D][dc_swz(idx % D)] = qsrc[idx] * scale_log2;
    }
    __syncthreads();

    float m[GMAX], l[GMAX], acc[GMAX][8];
#pragma unroll
    for (int j = 0; j < GMAX; j++) {
        m[j] = NEG_INF;
        l[j] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[j][i] = 0.f;
    }

    const bf16* kbase = kc + (size_t)g * D + c * 8;
    const bf16* vbase = vc + (size_t)g * D + c * 8;

    for (u32 bi = b_begin + warp; bi < b_end; bi += DC_WARPS) {
        const size_t slot0 = (size_t)table[bi] * ATTN_BLOCK;
        const u32 nvalid = min_u(ATTN_BLOCK, pos - bi * ATTN_BLOCK + 1);  // rows <= pos
#pragma unroll
        for (int ch = 0; ch < CPB; ch++) {
            uint4 kv[DC_STEPS], vv[DC_STEPS];
#pragma unroll
            for (int st = 0; st < DC_STEPS; st++) {
                const u32 r = ch * CHUNK + st * RPW + sub;
                kv[st] = vv[st] = make_uint4(0, 0, 0, 0);
                if (r < nvalid) {
                    const size_t off = (slot0 + r) * kvrow;
                    kv[st] = load_kv<ROPE>(kbase + off);
                    vv[st] = load_kv<ROPE>(vbase + off);
                }
            }
#pragma unroll
            for (int j = 0; j < GMAX; j++) {
                if (j >= nh) break;
                const float4 qa = *reinterpret_cast<const float4*>(&s_q[j][dc_swz(c * 8)]);
                const float4 qb = *reinterpret_cast<const float4*>(&s_q[j][dc_swz(c * 8 + 4)]);
                float s[DC_STEPS];
                float mx = NEG_INF;
#pragma unroll
                for (int st = 0; st < DC_STEPS; st++) {
                    const uint4 k = kv[st];
                    float d = qa.x * bf16_lo(k.x);
                    d = fmaf(qa.y, bf16_hi(k.x), d);
                    d = fmaf(qa.z, bf16_lo(k.y), d);
                    d = fmaf(qa.w, bf16_hi(k.y), d);
                    d = fmaf(qb.x, bf16_lo(k.z), d);
                    d = fmaf(qb.y, bf16_hi(k.z), d);
                    d = fmaf(qb.z, bf16_lo(k.w), d);
                    d = fmaf(qb.w, bf16_hi(k.w), d);
#pragma unroll
                    for (int o = 1; o < LPR; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                    const u32 r = ch * CHUNK + st * RPW + sub;
                    s[st] = r < nvalid ? d : NEG_INF;
                    mx = fmaxf(mx, s[st]);
                }
                float alpha, unused;
                merge_weights(m[j], mx, alpha, unused);
                const float base = m[j] == NEG_INF ? 0.f : m[j];
                float ps = 0.f, pv[8];
#pragma unroll
                for (int i = 0; i < 8; i++) pv[i] = 0.f;
#pragma unroll
                for (int st = 0; st < DC_STEPS; st++) {
                    const float p = exp2f(s[st] - base);
                    const uint4 v = vv[st];
                    ps += p;
                    pv[0] = fmaf(p, bf16_lo(v.x), pv[0]);
                    pv[1] = fmaf(p, bf16_hi(v.x), pv[1]);
                    pv[2] = fmaf(p, bf16_lo(v.y), pv[2]);
                    pv[3] = fmaf(p, bf16_hi(v.y), pv[3]);
                    pv[4] = fmaf(p, bf16_lo(v.z), pv[4]);
                    pv[5] = fmaf(p, bf16_hi(v.z), pv[5]);
                    pv[6] = fmaf(p, bf16_lo(v.w), pv[6]);
                    pv[7] = fmaf(p, bf16_hi(v.w), pv[7]);
                }
                l[j] = fmaf(l[j], alpha, ps);
#pragma unroll
                for (int i = 0; i < 8; i++) acc[j][i] = fmaf(acc[j][i], alpha, pv[i]);
            }
        }
    }

    // Merge the row slots of a warp: lanes c, c + LPR, ... hold the same columns.
#pragma unroll
    for (int o = LPR; o < WARP; o <<= 1) {
#pragma unroll
        for (int j = 0; j < GMAX; j++) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m[j], o);
            const float l2 = __shfl_xor_sync(0xffffffffu, l[j], o);
            float w1, w2;
            merge_weights(m[j], m2, w1, w2);
            l[j] = l[j] * w1 + l2 * w2;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float a2 = __shfl_xor_sync(0xffffffffu, acc[j][i], o);
                acc[j][i] = acc[j][i] * w1 + a2 * w2;
            }
        }
    }
    // Then the warps, through shared memory (a warp without blocks holds the empty
    // state, which merges as weight zero).
    if (lane < LPR) {
#pragma unroll
        for (int j = 0; j < GMAX; j++) {
            *reinterpret_cast<float4*>(&s_acc[warp][j][dc_swz(c * 8)]) =
                make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
            *reinterpret_cast<float4*>(&s_acc[warp][j][dc_swz(c * 8 + 4)]) =
                make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
            if (lane == 0) {
                s_m[warp][j] = m[j];
                s_l[warp][j] = l[j];
            }
        }
    }
    __syncthreads();

    for (int idx = tid; idx < nh * D; idx += DC_THREADS) {
        const int j = idx / D, i = idx % D;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < DC_WARPS; w++) mx = fmaxf(mx, s_m[w][j]);
        // Warp 0 had block b_begin, whose row 0 is <= pos: mx is finite.
        float sum = 0.f, a = 0.f;
#pragma unroll
        for (int w = 0; w < DC_WARPS; w++) {
            const float wt = exp2f(s_m[w][j] - mx);
            sum = fmaf(wt, s_l[w][j], sum);
            a = fmaf(wt, s_acc[w][j][dc_swz(i)], a);
        }
        const u32 h = h0 + j;
        if (splits == 1) {
            out[(size_t)t * hq * D + (size_t)h * D + i] = a / sum;
        } else {
            const size_t p = ((size_t)t * hq + h) * splits + split;
            part_o[p * D + i] = a;
            if (i == 0) {
                part_ml[2 * p] = mx;
                part_ml[2 * p + 1] = sum;
            }
        }
    }
    if (splits == 1) return;

    // The last of the (token, head group)'s splits to arrive merges them.
    __shared__ u32 s_last;
    const u32 used = min_u((nblk + bps - 1) / bps, splits);
    __threadfence();  // this thread's partials, before the CTA is counted
    __syncthreads();
    if (tid == 0) {
        u32* c = count + (size_t)t * gridDim.x + blockIdx.x;
        s_last = atomicAdd(c, 1) + 1 == used;
        if (s_last) *c = 0;  // every split has counted: zero for the next launch
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();  // the other splits' partials, after their counts
    for (int idx = tid; idx < nh * D; idx += DC_THREADS) {
        const int j = idx / D, i = idx % D;
        const size_t p0 = ((size_t)t * hq + h0 + j) * splits;
        out[(size_t)t * hq * D + (size_t)(h0 + j) * D + i] = merge_splits(part_o, part_ml, p0, used, D, i);
    }
}

#define DECODE_ENTRY(D, G)                                                                                         \
    extern "C" __global__ void __launch_bounds__(DC_THREADS) attn_decode_d##D##_g##G##_bf16(                       \
        float* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml, u32* __restrict__ count, \
        const float* __restrict__ qkv, const bf16* __restrict__ kc, const bf16* __restrict__ vc,                   \
        const u32* __restrict__ positions, const u32* __restrict__ token_seq, const u32* __restrict__ tables,      \
        u32 hq, u32 hk, u32 max_blocks, u32 bps, float scale_log2) {                                               \
        attn_decode<D, G, false>(out, part_o, part_ml, count, qkv, kc, vc, positions, token_seq, tables, hq, hk,   \
                                 max_blocks, bps, scale_log2, nullptr);                                            \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(DC_THREADS) attn_decode_rope_d##D##_g##G##_bf16(                  \
        float* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml, u32* __restrict__ count, \
        const float* __restrict__ qkv, bf16* kc, bf16* vc, const u32* __restrict__ positions,                      \
        const u32* __restrict__ token_seq, const u32* __restrict__ tables, u32 hq, u32 hk, u32 max_blocks,         \
        u32 bps, float scale_log2, RopeFreqs f) {                                                                  \
        attn_decode<D, G, true>(out, part_o, part_ml, count, qkv, kc, vc, positions, token_seq, tables, hq, hk,    \
                                max_blocks, bps, scale_log2, &f);                                                  \
    }
DECODE_ENTRY(64, 1)
DECODE_ENTRY(64, 2)
DECODE_ENTRY(64, 4)
DECODE_ENTRY(64, 8)
DECODE_ENTRY(128, 1)
DECODE_ENTRY(128, 2)
DECODE_ENTRY(128, 4)
DECODE_ENTRY(128, 8)
