// Token sampling on the device: one token id per row of logits, so that a decode
// step never copies a logits row to the host.
//
// Entry point
//   sample_f32(out (rows) u32, logits (rows, vocab) f32, params (rows, 4) f32, vocab)
//   params per row: [temperature, top_k, top_p, u]. The result is exactly the token
//   that src/backend/cpu/sampling.rs `sample_row` defines (read its doc comment
//   first): the same token for the same inputs, bit for bit, not "up to rounding".
//   That holds because every quantity that decides the token is either an integer
//   or an IEEE-rounded f32/f64 operation that the CPU twin performs identically:
//   - order and ties come from the u32 order key of each logit (integer compares);
//   - weights are our own exp, `weight` below, built from round-to-nearest mul/add
//     intrinsics (__fmul_rn etc., which nvcc never contracts into an FMA) and rintf,
//     mirrored operation by operation in Rust; its result is a u32 in units of
//     2^-31 of the largest weight;
//   - every sum is a u64 of those integers: exact, so the order of summation (shared
//     atomics, tree reductions) cannot change it, and the kernel is deterministic;
//   - the two f64 products (top_p * W, u * W') are single IEEE multiplies.
//
// Thread mapping: one block of 1024 threads per row (grid.x = rows). The row stays
// in global memory (up to 600 KB at vocab 151936, L2-resident after the first read)
// and is re-read once per pass:
//   A    argmax: block max of the packed (key << 32 | ~index); non-finite rows
//        (SAMPLE_NON_FINITE) and greedy rows end here.
//   K0-2 top-k (when 0 < k < vocab): radix select of the k-th largest key, digits of
//        12, 10, 10 bits, shared-memory histograms of counts.
//   P0-2 top-p (when top_p < 1): the same select with histograms of weight sums
//        over the top-k survivors; P0's total is W.
//   D    the draw: each warp sums the survivors' weights of one contiguous 1/32 of
//        the row; the segment holding the target is found by a warp scan of the 32
//        sums; the whole block then splits that segment into 1024 contiguous
//        pieces, scans their sums, and the one thread whose piece holds the target
//        walks it in index order.
//   So a sampled row reads the logits 8 times (fewer when top-k or top-p is off);
//   weights (an exp each) are computed only for elements that can matter to a pass.
//
// Design choices. 12 bits first because the top bits of a float key are the sign
// and exponent: with 8-bit digits nearly every logit would fall in 2-4 bins of the
// first pass (slow, contended atomics, no progress); 12 bits add 3 mantissa bits.
// __launch_bounds__(1024, 1): without the 1, ptxas aims at two blocks per SM (32
// registers) and spills; one block per row and per SM is the intended shape anyway
// (ptxas: 62 registers, no spills, 33 KB static shared memory).
// Grid and scalars depend only on (rows, vocab), as CUDA-graph replay needs.
//
// Speed: UNMEASURED (written without a GPU). Expectation: greedy is one read of the
// row plus a block reduction (a few us at vocab 151936); sampling is about 8 reads
// plus shared-memory atomics, where contention in pass K0/P0 on rows whose logits
// crowd into few 12-bit bins is the first suspect if it is slow. Rows run in
// parallel (one block per SM), so 64 rows should take about as long as one.

#include "common.cuh"

typedef unsigned long long u64;

#define SAMPLE_THREADS 1024
#define SAMPLE_WARPS (SAMPLE_THREADS / WARP)
#define FULL_MASK 0xffffffffu
// Largest histogram: the 12-bit first digit.
#define MAX_BINS 4096
// A row with a NaN or +inf logit, or none above -inf (NON_FINITE in the CPU twin).
#define SAMPLE_NON_FINITE 0xffffffffu

static_assert(SAMPLE_THREADS == 1024, "bin ownership in pick_bin assumes 1024 threads");
static_assert(MAX_BINS % SAMPLE_THREADS == 0, "each thread owns whole bins");

// ---------------------------------------------------------------------------------
// The definition's building blocks (mirrored in src/backend/cpu/sampling.rs)
// ---------------------------------------------------------------------------------

// Order-preserving u32 key of a logit: key(a) < key(b) iff a < b as floats, with -0
// taken as +0 and NaN above everything.
__device__ __forceinline__ u32 order_key(float x) {
    if (isnan(x)) return 0xffffffffu;  // above +inf: one NaN shows in the row's maximum
    u32 b = __float_as_uint(x);
    if (b == 0x80000000u) b = 0u;  // -0 -> +0
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The float a key stands for (-0 comes back as +0).
__device__ __forceinline__ float key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Weight of a token whose scaled logit is d = z - zmax <= 0 below the largest:
// floor(exp(d) * 2^31), computed as 2^n * p(r) with n = rint(d log2 e), r = d - n ln 2
// (Cody-Waite split of ln 2; n * LN2_HI is exact for |n| < 2^15), p the degree-7
// Taylor polynomial of exp (error < 1e-8 relative on |r| <= ln2/2). Below -22 the
// weight is 0 anyway (e^-22 * 2^31 < 1), which also keeps 2^(n+31) a normal float.
// The constants are given as bits so that Rust and CUDA hold the same floats.
__device__ __forceinline__ u32 weight(float d) {
    if (!(d >= -22.0f)) return 0u;  // also NaN and -inf
    const float LOG2E = __uint_as_float(0x3fb8aa3bu);
    const float LN2_HI = __uint_as_float(0x3f318000u);  // 0.693359375
    const float LN2_LO = __uint_as_float(0xb95e8083u);  // ln 2 - LN2_HI
    const float n = rintf(__fmul_rn(d, LOG2E));        // in [-32, 0]
    const float r = __fsub_rn(__fsub_rn(d, __fmul_rn(n, LN2_HI)), __fmul_rn(n, LN2_LO));
    float p = __uint_as_float(0x39500d01u);                   // 1/7!
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3ab60b61u));  // 1/6!
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3c088889u));  // 1/5!
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3d2aaaabu));  // 1/4!
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3e2aaaabu));  // 1/3!
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    p = __fadd_rn(__fmul_rn(p, r), 1.0f);
    p = __fadd_rn(__fmul_rn(p, r), 1.0f);
    const float scale = __uint_as_float((u32)(127 + 31 + __float2int_rz(n)) << 23);  // 2^(n+31)
    return __float2uint_rz(__fmul_rn(p, scale));  // p * scale is exact: a power of two
}

// The top-p cut's target in weight units: ceil(top_p * W), at least 1.
__device__ __forceinline__ u64 top_p_target(float top_p, u64 total) {
    const double x = ceil(__dmul_rn((double)top_p, (double)total));
    return x >= 1.0 ? (u64)x : 1ull;
}

// The draw's target: floor(u * W'), with u outside [0, 1) (or NaN) taken as 0. For
// u < 1 and W' >= 2^31 the f64 product stays below W', so some prefix exceeds it.
__device__ __forceinline__ u64 draw_target(float u, u64 total) {
    const float uu = (u >= 0.0f && u < 1.0f) ? u : 0.0f;
    return (u64)floor(__dmul_rn((double)uu, (double)total));
}

// ---------------------------------------------------------------------------------
// Block helpers (u64; common.cuh has the f32 ones)
// ---------------------------------------------------------------------------------

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const u64 w = __shfl_xor_sync(FULL_MASK, v, o);
        v = w > v ? w : v;
    }
    return v;
}

__device__ __forceinline__ u64 warp_incl_scan_u64(u64 v, int lane) {
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const u64 w = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += w;
    }
    return v;
}

// Max over the block; every thread gets it. scratch: SAMPLE_WARPS entries.
__device__ __forceinline__ u64 block_max_u64(u64 v, u64* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_max_u64(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_max_u64(lane < SAMPLE_WARPS ? scratch[lane] : 0ull);
}

// Inclusive prefix sum over threads in threadIdx order; `total` gets the block's sum.
// scratch: SAMPLE_WARPS entries. Every warp scans the warp totals itself, so one
// barrier pair suffices.
__device__ __forceinline__ u64 block_incl_scan_u64(u64 v, u64* scratch, u64& total) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_incl_scan_u64(v, lane);
    __syncthreads();
    if (lane == WARP - 1) scratch[warp] = v;
    __syncthreads();
    const u64 t = warp_incl_scan_u64(lane < SAMPLE_WARPS ? scratch[lane] : 0ull, lane);
    total = __shfl_sync(FULL_MASK, t, WARP - 1);
    const u64 before = __shfl_sync(FULL_MASK, t, (warp + WARP - 1) % WARP);  // lane warp-1
    return warp > 0 ? v + before : v;
}

// ---------------------------------------------------------------------------------
// Radix select
// ---------------------------------------------------------------------------------

struct SampleSmem {
    union {
        u32 count[MAX_BINS];
        u64 sum[MAX_BINS];
    } hist;                      // 32 KB
    u64 scratch[SAMPLE_WARPS];   // block reductions
    u64 segment[SAMPLE_WARPS];   // the draw's per-warp segment sums
    u64 pick_above, pick_at;     // pick_bin's broadcast
    u32 pick_digit;
};

// What a row's passes need to know besides the histogram state.
struct RowCtx {
    const float* logits;  // (vocab) this row
    u32 vocab;
    float inv_t;  // 1 / temperature, rounded
    float zmax;   // largest logit * inv_t
};

// A survivor's weight given the cut key `t` (0 below the cut).
__device__ __forceinline__ u32 weight_if(const RowCtx& c, float x, u32 t) {
    return order_key(x) >= t ? weight(__fsub_rn(__fmul_rn(x, c.inv_t), c.zmax)) : 0u;
}

template <bool SUM>
__device__ __forceinline__ u64 bin(const SampleSmem& sm, int b) {
    return SUM ? sm.hist.sum[b] : (u64)sm.hist.count[b];
}

// Histogram of the digit at `shift` (nb bins) over the elements whose key is >= kept
// and whose bits under `mask` equal `prefix`: counts, or sums of weights.
template <bool SUM>
__device__ void histogram(SampleSmem& sm, const RowCtx& c, u32 kept, u32 prefix, u32 mask, int shift, int nb) {
    for (int b = threadIdx.x; b < nb; b += SAMPLE_THREADS) {
        if (SUM) sm.hist.sum[b] = 0;
        else sm.hist.count[b] = 0;
    }
    __syncthreads();
    for (u32 i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        const float x = c.logits[i];
        const u32 key = order_key(x);
        if (key < kept || (key & mask) != prefix) continue;
        const u32 digit = (key >> shift) & (u32)(nb - 1);
        if (SUM) {
            const u32 w = weight(__fsub_rn(__fmul_rn(x, c.inv_t), c.zmax));
            if (w != 0) atomicAdd(&sm.hist.sum[digit], (u64)w);
        } else {
            atomicAdd(&sm.hist.count[digit], 1u);
        }
    }
    __syncthreads();
}

// Sum of all nb bins, to every thread.
template <bool SUM>
__device__ u64 bins_total(SampleSmem& sm, int nb) {
    u64 mine = 0;
    for (int b = threadIdx.x; b < nb; b += SAMPLE_THREADS) mine += bin<SUM>(sm, b);
    u64 total;
    block_incl_scan_u64(mine, sm.scratch, total);
    return total;
}

// The largest bin b with above + (sum of bins >= b) >= target, given
// above < target <= above + (sum of all bins). Thread t owns bins nb-1-t*per down to
// nb-per-t*per, so a scan in thread order runs over the bins in descending key order;
// the one thread whose range crosses the target walks its bins. Returns b; `above`
// becomes the sum of the bins over b, `at` that plus bin b.
template <bool SUM>
__device__ u32 pick_bin(SampleSmem& sm, int nb, u64& above, u64 target, u64& at) {
    const int per = nb / SAMPLE_THREADS;
    const int hi = nb - 1 - (int)threadIdx.x * per;
    u64 mine = 0;
    for (int j = 0; j < per; j++) mine += bin<SUM>(sm, hi - j);
    u64 total;
    const u64 incl = block_incl_scan_u64(mine, sm.scratch, total);
    u64 run = above + (incl - mine);
    if (run < target && target <= run + mine) {
        for (int j = 0; j < per; j++) {
            const u64 h = bin<SUM>(sm, hi - j);
            if (run + h >= target) {
                sm.pick_digit = (u32)(hi - j);
                sm.pick_above = run;
                sm.pick_at = run + h;
                break;
            }
            run += h;
        }
    }
    __syncthreads();
    above = sm.pick_above;
    at = sm.pick_at;
    return sm.pick_digit;
}

// The largest key v such that the elements with key >= max(v, kept) reach `target`
// in count (SUM = false) or in weight (SUM = true; then target is computed from the
// first pass's total as top_p_target(top_p, W)). Three passes: digits of 12, 10, 10
// bits. `at` gets the count or weight of the elements with key >= v.
template <bool SUM>
__device__ u32 radix_select(SampleSmem& sm, const RowCtx& c, u32 kept, u64 target, float top_p, u64& at) {
    u32 prefix = 0, mask = 0;
    u64 above = 0;
#pragma unroll 1
    for (int pass = 0; pass < 3; pass++) {
        const int bits = pass == 0 ? 12 : 10;
        const int shift = pass == 0 ? 20 : (pass == 1 ? 10 : 0);
        const int nb = 1 << bits;
        histogram<SUM>(sm, c, kept, prefix, mask, shift, nb);
        if (SUM && pass == 0) target = top_p_target(top_p, bins_total<SUM>(sm, nb));
        const u32 digit = pick_bin<SUM>(sm, nb, above, target, at);
        prefix |= digit << shift;
        mask |= (u32)(nb - 1) << shift;
    }
    return prefix;
}

// ---------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 1)
sample_f32(u32* __restrict__ out,            // (rows)
           const float* __restrict__ logits,  // (rows, vocab)
           const float* __restrict__ params,  // (rows, 4): temperature, top_k, top_p, u
           u32 vocab) {
    __shared__ SampleSmem sm;
    const u32 row = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    RowCtx c;
    c.logits = logits + (size_t)row * vocab;
    c.vocab = vocab;
    const float temperature = params[(size_t)row * 4 + 0];
    const float top_k = params[(size_t)row * 4 + 1];
    const float top_p = params[(size_t)row * 4 + 2];
    const float u = params[(size_t)row * 4 + 3];

    // A: argmax; ties go to the lowest index, whose ~index is the largest.
    u64 best = 0;  // below every packed value: the smallest key, of -inf, is > 0
    for (u32 i = tid; i < vocab; i += SAMPLE_THREADS) {
        const u64 packed = ((u64)order_key(c.logits[i]) << 32) | (u64)(~i);
        best = packed > best ? packed : best;
    }
    best = block_max_u64(best, sm.scratch);
    const u32 argmax = ~(u32)best;
    const u32 best_key = (u32)(best >> 32);
    if (best_key >= order_key(INFINITY) || best_key == order_key(-INFINITY)) {
        if (tid == 0) out[row] = SAMPLE_NON_FINITE;
        return;
    }
    if (!(temperature > 0.0f)) {
        if (tid == 0) out[row] = argmax;
        return;
    }
    c.inv_t = __frcp_rn(temperature);
    c.zmax = __fmul_rn(key_value(best_key), c.inv_t);
    if (!isfinite(c.zmax)) {
        if (tid == 0) out[row] = argmax;
        return;
    }

    // K: top-k cut key (0 keeps everything). float -> u32 saturates, NaN -> 0.
    const u32 k = __float2uint_rz(top_k);
    u32 cut = 0;
    u64 at;
    if (k > 0 && k < vocab) cut = radix_select<false>(sm, c, 0, k, 0.0f, at);

    // P: top-p cut key among the top-k survivors.
    if (top_p < 1.0f) cut = radix_select<true>(sm, c, cut, 0, top_p, at);

    // D: the first survivor in index order whose running weight exceeds floor(u W').
    const u32 seg = (vocab + SAMPLE_WARPS - 1) / SAMPLE_WARPS;
    {
        const u32 s0 = (u32)warp * seg, s1 = min(vocab, s0 + seg);
        u64 s = 0;
        for (u32 j = s0 + lane; j < s1; j += WARP) s += weight_if(c, c.logits[j], cut);
        s = warp_sum_u64(s);
        if (lane == 0) sm.segment[warp] = s;
    }
    __syncthreads();
    // Every warp locates the segment itself, from the same 32 sums.
    const u64 mine_seg = sm.segment[lane];
    const u64 seg_incl = warp_incl_scan_u64(mine_seg, lane);
    const u64 target = draw_target(u, __shfl_sync(FULL_MASK, seg_incl, WARP - 1));
    // Nonempty: the last inclusive sum is W' > target.
    const int hit = __ffs(__ballot_sync(FULL_MASK, seg_incl > target)) - 1;
    const u64 base = __shfl_sync(FULL_MASK, seg_incl - mine_seg, hit);
    const u32 a0 = (u32)hit * seg, a1 = min(vocab, a0 + seg);
    const u32 per = (seg + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const u32 c0 = min(a1, a0 + (u32)tid * per), c1 = min(a1, c0 + per);
    u64 mine = 0;
    for (u32 j = c0; j < c1; j++) mine += weight_if(c, c.logits[j], cut);
    u64 seg_total;
    const u64 incl = block_incl_scan_u64(mine, sm.scratch, seg_total);
    u64 run = base + (incl - mine);
    if (run <= target && target < run + mine) {
        for (u32 j = c0; j < c1; j++) {
            run += weight_if(c, c.logits[j], cut);
            if (run > target) {
                out[row] = j;
                break;
            }
        }
    }
}
