// Computation-expert math in f64 (f32 where an expert's precision says so): dense
// layers, the DeepONet combine, a batched dense LU solve and AC power flow by
// Newton-Raphson. CPU twin (the readable reference):
// src/pimoe/experts/{mlp,deeponet,linear_solve,power_flow}.rs; launcher:
// src/backend/cuda/expert.rs.
//
// Entry points
//   dense_f64, dense_f32              y (rows, n_out) = act(x (rows, n_in) W^T + b)
//                                      W (n_out, n_in) row-major, b (n_out)
//   deeponet_combine_f64, _f32        y (rows) = sum_f branch (rows, p) * trunk (rows, p)
//                                      [+ bias]
//   lu_solve_f64                      x (sys, n) = A^-1 b for packed systems
//                                      (sys, n*n + n): A row-major, then b; n <= 64;
//                                      status (sys, 2) u32 = (code, info), rcond (sys)
//   power_flow_f64                    Newton-Raphson for packed systems (see pf_stride):
//                                      vm, va (sys, nb_max), stats (sys, 3) f64,
//                                      status (sys, 3) u32
//
// Thread mapping
//   dense: block (32, 8) = 256 threads owns a tile of 8 rows x 32 outputs, one output
//     element per thread; W and x go through shared memory 32 k at a time; grid
//     (ceil(n_out / 32), ceil(rows / 8)).
//   combine: one thread per row, block 128.
//   lu_solve: one block of 64 threads per system, the whole matrix in shared memory
//     (32 KB at n = 64); pivot search by warp 0, row updates spread over the block,
//     the condition estimate's control flow on thread 0.
//   power_flow: one block of 64 threads per system; the state, V and I in shared memory
//     (PfShared, 5 KB) beside the LU's (LuShared, 35 KB), Ybus read from global memory;
//     each Newton step builds the Jacobian one entry per thread step into the LU's
//     matrix and calls the LU's own code (lu_solve_shared) on it.
//
// Determinism and agreement with the CPU. No fast-math, and every multiply-add that
// could be contracted is written as an explicit fma() (the CPU uses f64::mul_add):
// - dense: each output is acc = fma(x[k], w[k], acc) over k = 0 .. n_in - 1 in order,
//   from 0, then acc + b, then the activation. The k order does not depend on the
//   tile, so identity/ReLU layers match the CPU bit for bit; tanh, exp and erf are
//   CUDA's (<= 2 ulp), so Tanh/Silu/Gelu layers agree to ~1e-15 relative.
// - combine: acc = fma(branch[f], trunk[f], acc) over f in order, then + bias.
// - lu_solve: the same operations in the same order as linear_solve.rs (first-max
//   pivot, in-place row swaps, l = a_ik / pivot, a_ij = fma(-l, a_kj, a_ij),
//   column-oriented triangular solves, 1-norms summed in index order), so x, rcond and
//   the error status are the CPU's bits.
// - power_flow: the same operations in the same order as PfCase in power_flow.rs
//   (complex products as the same fma chains, sums over k in order, the LU above), from
//   the same Ybus bits (built on the host). Only cos and sin differ (CUDA's vs libm's,
//   within 1-2 ulp), so the state agrees to ~1e-13 relative rather than bitwise.
// Every kernel is bitwise repeatable: no atomics on values, no order that depends on
// scheduling (the only atomic, atomicMin on an index, is order-independent).
//
// Speed (unmeasured): dense is a plain shared-memory tiled GEMM, no tensor cores
// (f64 DMMA would reorder the k sum); at PiMoE's routed-batch sizes (a few rows) it is
// bound by reading W once (16 MB for the reference's 2048 x 1024 layer in f64).

#include "common.cuh"

#define NO_INDEX 0xffffffffu  // "no non-finite entry seen"

// Activation codes: Activation::code() in src/pimoe/experts/mlp.rs.
#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_TANH 2
#define ACT_GELU 3
#define ACT_SILU 4

#define DENSE_TO 32  // outputs per block (threadIdx.x)
#define DENSE_TR 8   // rows per block (threadIdx.y)
#define DENSE_TK 32  // k per shared-memory stage
#define DENSE_THREADS (DENSE_TO * DENSE_TR)

// 1/sqrt(2), the same constants as Rust's FRAC_1_SQRT_2 (no math.h under NVRTC).
#define INV_SQRT2 0.707106781186547524400844362104849039
#define INV_SQRT2F 0.707106781186547524400844362104849039f

__device__ __forceinline__ double act_apply(double v, u32 act) {
    switch (act) {
        case ACT_RELU: return v < 0.0 ? 0.0 : v;  // NaN stays NaN
        case ACT_TANH: return tanh(v);
        case ACT_GELU: return 0.5 * v * (1.0 + erf(v * INV_SQRT2));
        case ACT_SILU: return v / (1.0 + exp(-v));
        default: return v;
    }
}

__device__ __forceinline__ float act_apply(float v, u32 act) {
    switch (act) {
        case ACT_RELU: return v < 0.f ? 0.f : v;
        case ACT_TANH: return tanhf(v);
        case ACT_GELU: return 0.5f * v * (1.f + erff(v * INV_SQRT2F));
        case ACT_SILU: return v / (1.f + expf(-v));
        default: return v;
    }
}

// grid (ceil(n_out / 32), ceil(rows / 8)), block (32, 8)
template <typename T>
__device__ __forceinline__ void dense_body(T* __restrict__ y,        // (rows, n_out)
                                           const T* __restrict__ x,  // (rows, n_in)
                                           const T* __restrict__ w,  // (n_out, n_in)
                                           const T* __restrict__ b,  // (n_out)
                                           u32 rows, u32 n_in, u32 n_out, u32 act) {
    // +1 column: the compute loop reads ws[tx][kk] down a column; the pad spreads the
    // 32 threads' addresses over the banks.
    __shared__ T ws[DENSE_TO][DENSE_TK + 1];
    __shared__ T xs[DENSE_TR][DENSE_TK + 1];
    const u32 tx = threadIdx.x, ty = threadIdx.y, tid = ty * DENSE_TO + tx;
    const u32 o0 = blockIdx.x * DENSE_TO, r0 = blockIdx.y * DENSE_TR;
    T acc = T(0);
    for (u32 k0 = 0; k0 < n_in; k0 += DENSE_TK) {
        // Consecutive threads load consecutive k of one W row (coalesced).
#pragma unroll
        for (u32 i = tid; i < DENSE_TO * DENSE_TK; i += DENSE_THREADS) {
            const u32 oo = i / DENSE_TK, kk = i % DENSE_TK, go = o0 + oo, gk = k0 + kk;
            ws[oo][kk] = (go < n_out && gk < n_in) ? w[(size_t)go * n_in + gk] : T(0);
        }
        for (u32 i = tid; i < DENSE_TR * DENSE_TK; i += DENSE_THREADS) {
            const u32 rr = i / DENSE_TK, kk = i % DENSE_TK, gr = r0 + rr, gk = k0 + kk;
            xs[rr][kk] = (gr < rows && gk < n_in) ? x[(size_t)gr * n_in + gk] : T(0);
        }
        __syncthreads();
        // Only the real k: the chain must be exactly the CPU's, with no extra terms.
        const u32 kn = min((u32)DENSE_TK, n_in - k0);
        for (u32 kk = 0; kk < kn; ++kk) acc = fma(xs[ty][kk], ws[tx][kk], acc);
        __syncthreads();
    }
    const u32 o = o0 + tx, r = r0 + ty;
    if (o < n_out && r < rows) y[(size_t)r * n_out + o] = act_apply(acc + b[o], act);
}

// grid (ceil(rows / 128)), block 128
template <typename T>
__device__ __forceinline__ void combine_body(T* __restrict__ y,             // (rows)
                                             const T* __restrict__ branch,  // (rows, p)
                                             const T* __restrict__ trunk,   // (rows, p)
                                             u32 rows, u32 p, u32 has_bias, T bias) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const T* __restrict__ br = branch + (size_t)r * p;
    const T* __restrict__ tr = trunk + (size_t)r * p;
    T acc = T(0);
    for (u32 f = 0; f < p; ++f) acc = fma(br[f], tr[f], acc);
    if (has_bias) acc = acc + bias;
    y[r] = acc;
}

#define EXPERT_NET_ENTRIES(T, suffix)                                                                    \
    extern "C" __global__ void __launch_bounds__(DENSE_THREADS)                                          \
        dense_##suffix(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ w,              \
                       const T* __restrict__ b, u32 rows, u32 n_in, u32 n_out, u32 act) {                \
        dense_body<T>(y, x, w, b, rows, n_in, n_out, act);                                               \
    }                                                                                                    \
    extern "C" __global__ void deeponet_combine_##suffix(T* __restrict__ y, const T* __restrict__ branch, \
                                                         const T* __restrict__ trunk, u32 rows, u32 p,   \
                                                         u32 has_bias, T bias) {                         \
        combine_body<T>(y, branch, trunk, rows, p, has_bias, bias);                                      \
    }

EXPERT_NET_ENTRIES(double, f64)
EXPERT_NET_ENTRIES(float, f32)

// ---------------------------------------------------------------------------------
// Batched LU solve
// ---------------------------------------------------------------------------------

#define LU_MAX_N 64
#define LU_THREADS 64

// Status codes: linear_solve::status in src/pimoe/experts/linear_solve.rs.
#define LU_OK 0
#define LU_NON_FINITE_A 1
#define LU_NON_FINITE_B 2
#define LU_SINGULAR 3
#define LU_ILL_CONDITIONED 4
#define LU_OVERFLOW 5

static_assert(LU_THREADS >= 32 && LU_THREADS % 32 == 0, "warp 0 searches pivots; whole warps only");

struct LuShared {
    double a[LU_MAX_N * LU_MAX_N];  // (n, n) row-major with stride n: A, then L\U in place
    double v[LU_MAX_N];             // solve work vector
    double y[LU_MAX_N];             // b
    double z[LU_MAX_N];             // A^-T s of the estimator
    double s[LU_MAX_N];             // sign vector (+-1)
    u32 perm[LU_MAX_N];             // row i of P A = row perm[i] of A
    u32 bad_a, bad_b;               // first non-finite index, NO_INDEX if none
    u32 piv_row, j, stop;
    double piv_abs, anorm, est;
};

// v <- U^-1 L^-1 v. Call with the whole block; v must be visible to all (synced).
__device__ void lu_apply_inverse(const double* __restrict__ a, u32 n, double* v) {
    for (u32 k = 0; k < n; ++k) {
        __syncthreads();
        const double vk = v[k];
        for (u32 i = k + 1 + threadIdx.x; i < n; i += blockDim.x) v[i] = fma(-a[i * n + k], vk, v[i]);
    }
    for (u32 k = n; k-- > 0;) {
        __syncthreads();
        const double xk = v[k] / a[k * n + k];
        __syncthreads();
        for (u32 i = threadIdx.x; i < k; i += blockDim.x) v[i] = fma(-a[i * n + k], xk, v[i]);
        if (threadIdx.x == 0) v[k] = xk;
    }
    __syncthreads();
}

// v <- L^-T U^-T v (with P A = L U, A^T z = c gives P z = L^-T U^-T c).
__device__ void lu_apply_inverse_t(const double* __restrict__ a, u32 n, double* v) {
    for (u32 k = 0; k < n; ++k) {
        __syncthreads();
        const double wk = v[k] / a[k * n + k];
        __syncthreads();
        for (u32 i = k + 1 + threadIdx.x; i < n; i += blockDim.x) v[i] = fma(-a[k * n + i], wk, v[i]);
        if (threadIdx.x == 0) v[k] = wk;
    }
    for (u32 k = n; k-- > 0;) {
        __syncthreads();
        const double uk = v[k];
        for (u32 i = threadIdx.x; i < k; i += blockDim.x) v[i] = fma(-a[k * n + i], uk, v[i]);
    }
    __syncthreads();
}

__device__ __forceinline__ double norm1_seq(const double* v, u32 n) {
    double s = 0.0;
    for (u32 i = 0; i < n; ++i) s += fabs(v[i]);
    return s;
}

__device__ __forceinline__ double sign_of(double x) { return x >= 0.0 ? 1.0 : -1.0; }

__device__ __forceinline__ u32 argmax_abs_seq(const double* v, u32 n) {
    u32 j = 0;
    for (u32 i = 1; i < n; ++i)
        if (fabs(v[i]) > fabs(v[j])) j = i;
    return j;
}

// z <- A^-T s (un-permuted). Whole block.
__device__ void lu_solve_t_into_z(LuShared& sh, u32 n) {
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) sh.v[i] = sh.s[i];
    lu_apply_inverse_t(sh.a, n, sh.v);
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) sh.z[sh.perm[i]] = sh.v[i];
    __syncthreads();
}

// Lower-bound estimate of ||A^-1||_1 (Hager / Higham), exactly as
// inv_norm1_estimate in linear_solve.rs. Whole block; every thread gets the result.
__device__ double lu_inv_norm1_estimate(LuShared& sh, u32 n) {
    const u32 t = threadIdx.x;
    if (n == 1) return 1.0 / fabs(sh.a[0]);
    // y = A^-1 (1/n, ..., 1/n)
    const double uniform = 1.0 / (double)n;
    for (u32 i = t; i < n; i += blockDim.x) sh.v[i] = uniform;
    lu_apply_inverse(sh.a, n, sh.v);
    if (t == 0) sh.est = norm1_seq(sh.v, n);
    for (u32 i = t; i < n; i += blockDim.x) sh.s[i] = sign_of(sh.v[i]);
    __syncthreads();
    lu_solve_t_into_z(sh, n);
    if (t == 0) sh.j = argmax_abs_seq(sh.z, n);
    __syncthreads();
    for (int iter = 1; iter < 5; ++iter) {
        // y = A^-1 e_j: (P e_j)[i] = 1 where perm[i] == j
        const u32 j = sh.j;
        for (u32 i = t; i < n; i += blockDim.x) sh.v[i] = sh.perm[i] == j ? 1.0 : 0.0;
        lu_apply_inverse(sh.a, n, sh.v);
        if (t == 0) {
            const double fresh = norm1_seq(sh.v, n);
            bool same = true;
            for (u32 i = 0; i < n; ++i) same &= sign_of(sh.v[i]) == sh.s[i];
            const bool grew = fresh > sh.est;
            sh.est = fmax(sh.est, fresh);
            sh.stop = same || !grew;
        }
        __syncthreads();
        if (sh.stop) break;
        for (u32 i = t; i < n; i += blockDim.x) sh.s[i] = sign_of(sh.v[i]);
        __syncthreads();
        lu_solve_t_into_z(sh, n);
        if (t == 0) {
            const u32 last = sh.j;
            sh.j = argmax_abs_seq(sh.z, n);
            sh.stop = fabs(sh.z[last]) == fabs(sh.z[sh.j]);
        }
        __syncthreads();
        if (sh.stop) break;
    }
    // Higham's alternating vector x_i = (-1)^i (1 + i / (n - 1)), permuted.
    for (u32 i = t; i < n; i += blockDim.x) {
        const u32 p = sh.perm[i];
        const double m = 1.0 + (double)p / (double)(n - 1);
        sh.v[i] = (p % 2 == 0) ? m : -m;
    }
    lu_apply_inverse(sh.a, n, sh.v);
    if (t == 0) {
        const double alt = 2.0 * norm1_seq(sh.v, n) / (3.0 * (double)n);
        sh.est = fmax(sh.est, alt);
    }
    __syncthreads();
    return sh.est;
}

// Solves the system in shared memory: sh.a (n, n) row-major and sh.y (n) hold A and b
// (written and synced by the caller); on LU_OK sh.v holds x. Exactly solve_system in
// linear_solve.rs: non-finite check, 1-norm, factorisation, condition estimate, solve.
// Whole block; every thread returns the same code, info and rcond. Used by lu_solve_f64
// and, for each Newton step, by power_flow_f64.
__device__ __forceinline__ void lu_solve_shared(LuShared& sh, u32 n, double min_rcond, u32& code_out,
                                                u32& info_out, double& rcond_out) {
    const u32 t = threadIdx.x, nt = blockDim.x;
    if (t == 0) sh.bad_a = sh.bad_b = NO_INDEX;
    __syncthreads();
    for (u32 i = t; i < n * n; i += nt)
        if (!isfinite(sh.a[i])) atomicMin(&sh.bad_a, i);
    for (u32 i = t; i < n; i += nt) {
        if (!isfinite(sh.y[i])) atomicMin(&sh.bad_b, i);
        sh.perm[i] = i;
    }
    __syncthreads();

    u32 code = LU_OK, info = 0;
    double rcond = __longlong_as_double(0x7ff8000000000000ll);  // NaN: not computed
    if (sh.bad_a != NO_INDEX) {
        code = LU_NON_FINITE_A, info = sh.bad_a;
    } else if (sh.bad_b != NO_INDEX) {
        code = LU_NON_FINITE_B, info = sh.bad_b;
    }

    if (code == LU_OK) {
        // ||A||_1: column j summed in row order by one thread, then the max.
        for (u32 j = t; j < n; j += nt) {
            double c = 0.0;
            for (u32 i = 0; i < n; ++i) c += fabs(sh.a[i * n + j]);
            sh.z[j] = c;
        }
        __syncthreads();
        if (t == 0) {
            double m = 0.0;
            for (u32 j = 0; j < n; ++j) m = fmax(m, sh.z[j]);
            sh.anorm = m;
        }

        for (u32 k = 0; k < n; ++k) {
            // Pivot: the first row i >= k with the largest |a_ik|. Each lane keeps its
            // first max (rows lane, lane + 32, ...); the shuffle prefers the larger
            // value and, on ties, the smaller row.
            if (t < 32) {
                double best = -1.0;
                u32 bi = 0;
                for (u32 i = k + t; i < n; i += 32) {
                    const double v = fabs(sh.a[i * n + k]);
                    if (v > best) best = v, bi = i;
                }
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) {
                    const double ob = __shfl_down_sync(0xffffffffu, best, off);
                    const u32 oi = __shfl_down_sync(0xffffffffu, bi, off);
                    if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
                }
                if (t == 0) sh.piv_row = bi, sh.piv_abs = best;
            }
            __syncthreads();
            if (sh.piv_abs == 0.0) {
                code = LU_SINGULAR, info = k;
                break;
            }
            const u32 p = sh.piv_row;
            if (p != k) {
                for (u32 j = t; j < n; j += nt) {
                    const double tmp = sh.a[k * n + j];
                    sh.a[k * n + j] = sh.a[p * n + j];
                    sh.a[p * n + j] = tmp;
                }
                if (t == 0) {
                    const u32 tmp = sh.perm[k];
                    sh.perm[k] = sh.perm[p];
                    sh.perm[p] = tmp;
                }
            }
            __syncthreads();
            const double pivot = sh.a[k * n + k];
            for (u32 i = k + 1 + t; i < n; i += nt) sh.a[i * n + k] = sh.a[i * n + k] / pivot;
            __syncthreads();
            const u32 m = n - k - 1;
            for (u32 e = t; e < m * m; e += nt) {
                const u32 i = k + 1 + e / m, j = k + 1 + e % m;
                sh.a[i * n + j] = fma(-sh.a[i * n + k], sh.a[k * n + j], sh.a[i * n + j]);
            }
            __syncthreads();
        }
    }

    if (code == LU_OK) {
        const double est = lu_inv_norm1_estimate(sh, n);
        rcond = (1.0 / est) / sh.anorm;
        if (!(rcond >= min_rcond)) code = LU_ILL_CONDITIONED;  // a NaN estimate is refused too
    }

    if (code == LU_OK) {
        for (u32 i = t; i < n; i += nt) sh.v[i] = sh.y[sh.perm[i]];
        lu_apply_inverse(sh.a, n, sh.v);
        if (t == 0) {
            for (u32 i = 0; i < n; ++i)
                if (!isfinite(sh.v[i])) code = LU_OVERFLOW;
            sh.stop = code;
        }
        __syncthreads();
        code = sh.stop;
    }
    code_out = code, info_out = info, rcond_out = rcond;
}

// grid (sys), block LU_THREADS; requires 1 <= n <= LU_MAX_N (the launcher checks).
extern "C" __global__ void __launch_bounds__(LU_THREADS)
    lu_solve_f64(double* __restrict__ x_out,          // (sys, n)
                 u32* __restrict__ status,            // (sys, 2): code, info
                 double* __restrict__ rcond_out,      // (sys)
                 const double* __restrict__ systems,  // (sys, n*n + n)
                 u32 n, double min_rcond) {
    __shared__ LuShared sh;
    const u32 t = threadIdx.x, nt = blockDim.x;
    const size_t sys = blockIdx.x;
    const double* __restrict__ A = systems + sys * ((size_t)n * n + n);
    const double* __restrict__ B = A + (size_t)n * n;
    for (u32 i = t; i < n * n; i += nt) sh.a[i] = A[i];
    for (u32 i = t; i < n; i += nt) sh.y[i] = B[i];
    __syncthreads();

    u32 code, info;
    double rcond;
    lu_solve_shared(sh, n, min_rcond, code, info, rcond);

    double* __restrict__ xo = x_out + sys * n;
    for (u32 i = t; i < n; i += nt) xo[i] = code == LU_OK ? sh.v[i] : __longlong_as_double(0x7ff8000000000000ll);
    if (t == 0) {
        status[2 * sys] = code;
        status[2 * sys + 1] = info;
        rcond_out[sys] = rcond;
    }
}

// ---------------------------------------------------------------------------------
// AC power flow: Newton-Raphson
// ---------------------------------------------------------------------------------

#define PF_MAX_BUS 64  // power_flow::MAX_BUSES

// Status codes: power_flow::status in src/pimoe/experts/power_flow.rs.
#define PF_OK 0
#define PF_NOT_CONVERGED 1
#define PF_DIVERGED 2
#define PF_JACOBIAN 3

struct PfShared {
    double vm[PF_MAX_BUS], va[PF_MAX_BUS];    // the state: |V|, angle (rad)
    double vre[PF_MAX_BUS], vim[PF_MAX_BUS];  // V
    double cs[PF_MAX_BUS], sn[PF_MAX_BUS];    // V / |V| = (cos va, sin va)
    double ire[PF_MAX_BUS], iim[PF_MAX_BUS];  // I = Ybus V
    double f[LU_MAX_N];                       // the mismatch F
    u32 bus_of[LU_MAX_N];                     // unknown r -> its bus: angles, then magnitudes
    u32 n_ang, m;
    double norm;                              // max |F|, NaN when some F is not finite
};

// Values per packed system for max_buses NB (PowerFlow's GPU layout, packed by
// src/backend/cuda/expert.rs): nb, then per bus (NB each) the type code, P and Q
// specified (p.u.), the start magnitude, then Ybus (nb, nb) as (re, im) pairs.
__device__ __forceinline__ size_t pf_stride(u32 nb_max) {
    return 1 + 4 * (size_t)nb_max + 2 * (size_t)nb_max * nb_max;
}

// V, V/|V|, I = Ybus V, F and max |F| for the current state, as PfCase::voltages,
// currents and mismatch in power_flow.rs compute them. Whole block; ends synced.
__device__ void pf_mismatch(PfShared& ps, const double* __restrict__ y, const double* __restrict__ p,
                            const double* __restrict__ q, u32 nb) {
    const u32 t = threadIdx.x, nt = blockDim.x;
    for (u32 i = t; i < nb; i += nt) {
        const double c = cos(ps.va[i]), s = sin(ps.va[i]);
        ps.cs[i] = c, ps.sn[i] = s;
        ps.vre[i] = ps.vm[i] * c, ps.vim[i] = ps.vm[i] * s;
    }
    __syncthreads();
    for (u32 i = t; i < nb; i += nt) {
        double re = 0.0, im = 0.0;
        for (u32 k = 0; k < nb; ++k) {
            const double yr = y[2 * ((size_t)i * nb + k)], yi = y[2 * ((size_t)i * nb + k) + 1];
            re = fma(yr, ps.vre[k], fma(-yi, ps.vim[k], re));
            im = fma(yr, ps.vim[k], fma(yi, ps.vre[k], im));
        }
        ps.ire[i] = re, ps.iim[i] = im;
    }
    __syncthreads();
    for (u32 r = t; r < ps.m; r += nt) {
        const u32 i = ps.bus_of[r];
        // S_i = V_i conj(I_i)
        const double sre = fma(ps.vre[i], ps.ire[i], ps.vim[i] * ps.iim[i]);
        const double sim = fma(ps.vim[i], ps.ire[i], -(ps.vre[i] * ps.iim[i]));
        ps.f[r] = r < ps.n_ang ? sre - p[i] : sim - q[i];
    }
    __syncthreads();
    if (t == 0) {
        double norm = 0.0;
        for (u32 r = 0; r < ps.m; ++r) {
            if (!isfinite(ps.f[r])) {
                norm = __longlong_as_double(0x7ff8000000000000ll);
                break;
            }
            norm = fmax(norm, fabs(ps.f[r]));
        }
        ps.norm = norm;
    }
    __syncthreads();
}

// The Jacobian (m, m) into sh.a and F into sh.y, as PfCase::jacobian: rows P at the
// angle unknowns' buses then Q at the magnitude unknowns' buses; columns d/dVa then
// d/dVm, from dS/dVa = j V_i conj(delta_ik I_i - Y_ik V_k) and
// dS/dVm = V_i conj(Y_ik V_k/|V_k|) + delta_ik conj(I_i) V_i/|V_i|. One entry per
// thread step. Whole block; ends synced.
__device__ void pf_jacobian(LuShared& sh, const PfShared& ps, const double* __restrict__ y, u32 nb) {
    const u32 t = threadIdx.x, nt = blockDim.x, m = ps.m, na = ps.n_ang;
    for (u32 e = t; e < m * m; e += nt) {
        const u32 r = e / m, c = e % m, i = ps.bus_of[r], k = ps.bus_of[c];
        const double yr = y[2 * ((size_t)i * nb + k)], yi = y[2 * ((size_t)i * nb + k) + 1];
        double dre, dim;
        if (c < na) {
            const double are = fma(yr, ps.vre[k], -(yi * ps.vim[k]));
            const double aim = fma(yr, ps.vim[k], yi * ps.vre[k]);
            const double wre = i == k ? ps.ire[i] - are : -are;
            const double wim = i == k ? ps.iim[i] - aim : -aim;
            const double tre = fma(ps.vre[i], wre, ps.vim[i] * wim);
            const double tim = fma(ps.vim[i], wre, -(ps.vre[i] * wim));
            dre = -tim, dim = tre;
        } else {
            const double bre = fma(yr, ps.cs[k], -(yi * ps.sn[k]));
            const double bim = fma(yr, ps.sn[k], yi * ps.cs[k]);
            dre = fma(ps.vre[i], bre, ps.vim[i] * bim);
            dim = fma(ps.vim[i], bre, -(ps.vre[i] * bim));
            if (i == k) {
                const double ure = fma(ps.cs[i], ps.ire[i], ps.sn[i] * ps.iim[i]);
                const double uim = fma(ps.sn[i], ps.ire[i], -(ps.cs[i] * ps.iim[i]));
                dre = dre + ure, dim = dim + uim;
            }
        }
        sh.a[e] = r < na ? dre : dim;
    }
    for (u32 r = t; r < m; r += nt) sh.y[r] = ps.f[r];
    __syncthreads();
}

// grid (sys), block LU_THREADS: one system per block, the Jacobian (order <= 64) in
// the LU's shared matrix. Ybus, the checks and the answer are the host's (PowerFlow
// decode/answer), so both backends start from the same bits and report alike.
extern "C" __global__ void __launch_bounds__(LU_THREADS)
    power_flow_f64(double* __restrict__ vm_out,         // (sys, nb_max)
                   double* __restrict__ va_out,         // (sys, nb_max), radians
                   double* __restrict__ stats,          // (sys, 3): iterations, max |F|, last rcond
                   u32* __restrict__ status,            // (sys, 3): PF code, LU code, LU info
                   const double* __restrict__ systems,  // (sys, pf_stride(nb_max))
                   u32 nb_max, double tol, u32 max_it, double min_rcond) {
    __shared__ LuShared sh;
    __shared__ PfShared ps;
    const u32 t = threadIdx.x, nt = blockDim.x;
    const size_t sys = blockIdx.x;
    const double* __restrict__ in = systems + sys * pf_stride(nb_max);
    const u32 nb = (u32)in[0];
    const double* __restrict__ kind = in + 1;
    const double* __restrict__ p = kind + nb_max;
    const double* __restrict__ q = p + nb_max;
    const double* __restrict__ v0 = q + nb_max;
    const double* __restrict__ y = v0 + nb_max;

    if (t == 0) {
        u32 r = 0;
        for (u32 i = 0; i < nb; ++i)
            if (kind[i] != 0.0) ps.bus_of[r++] = i;  // not the slack: its angle
        ps.n_ang = r;
        for (u32 i = 0; i < nb; ++i)
            if (kind[i] == 2.0) ps.bus_of[r++] = i;  // PQ: its magnitude
        ps.m = r;
    }
    for (u32 i = t; i < nb; i += nt) ps.vm[i] = v0[i], ps.va[i] = 0.0;
    __syncthreads();
    pf_mismatch(ps, y, p, q, nb);

    u32 it = 0, code = PF_OK, lu_code = LU_OK, lu_info = 0;
    double rcond = __longlong_as_double(0x7ff8000000000000ll);
    for (;;) {
        const double norm = ps.norm;  // the same in every thread: pf_mismatch ended synced
        if (norm < tol) break;
        if (isnan(norm)) {
            code = PF_DIVERGED;
            break;
        }
        if (it == max_it) {
            code = PF_NOT_CONVERGED;
            break;
        }
        ++it;
        pf_jacobian(sh, ps, y, nb);
        lu_solve_shared(sh, ps.m, min_rcond, lu_code, lu_info, rcond);
        if (lu_code != LU_OK) {
            code = PF_JACOBIAN;
            break;
        }
        for (u32 r = t; r < ps.m; r += nt) {
            const u32 i = ps.bus_of[r];
            if (r < ps.n_ang) {
                ps.va[i] = ps.va[i] - sh.v[r];
            } else {
                ps.vm[i] = ps.vm[i] - sh.v[r];
            }
        }
        __syncthreads();
        pf_mismatch(ps, y, p, q, nb);
    }

    for (u32 i = t; i < nb; i += nt) {
        vm_out[sys * nb_max + i] = ps.vm[i];
        va_out[sys * nb_max + i] = ps.va[i];
    }
    if (t == 0) {
        stats[3 * sys] = (double)it;
        stats[3 * sys + 1] = ps.norm;
        stats[3 * sys + 2] = rcond;
        status[3 * sys] = code;
        status[3 * sys + 1] = lu_code;
        status[3 * sys + 2] = lu_info;
    }
}
