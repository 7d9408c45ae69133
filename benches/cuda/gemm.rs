//! kernels/gemm.cu: decode (m = 1, 8: the gemv, also with swiglu fused into the down
//! projection; m = 64: the tensor-core GEMM) and
//! 2048-token prefill at Qwen2.5-0.5B's projection shapes, and square bf16 x bf16
//! GEMMs at 4096^3 and 8192^3 with cuBLAS at 4096^3 as the baseline (bench only: the
//! runtime never calls cuBLAS).
//!
//! Decode reports weight bytes per call (the bound the gemv should reach: compare with
//! the device's copy bandwidth); prefill and the square GEMMs report FLOPs (2 m n k).

use crate::ops::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::cuda::{gemm, CudaBackend, CudaTensor, CudaWeight};
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};

/// Qwen2.5-0.5B: (name, n, k) of qkv, o, gate_up (fused), down and lm_head.
const QWEN: [(&str, usize, usize); 5] = [
    ("qkv", 1152, 896),
    ("o", 896, 896),
    ("gate_up", 9728, 896),
    ("down", 896, 4864),
    ("lm_head", 151936, 896),
];

/// Cheap deterministic values in [-1, 1): bench data only has to be finite and not
/// all zeros, and 8192^2 of them must not take long to make.
fn values(n: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    })
}

fn bf16_matrix(b: &CudaBackend, rows: usize, cols: usize, seed: u64) -> CudaWeight {
    let bits = values(rows * cols, seed).map(|v| half::bf16::from_f32(v).to_bits()).collect();
    let t = HostTensor {
        name: format!("bench ({rows}, {cols})"),
        shape: vec![rows, cols],
        data: HostData::Bf16(bits),
    };
    b.upload(&t).expect("upload a bench matrix")
}

pub fn bench(c: &mut Criterion, b: &CudaBackend) {
    let mut g = c.benchmark_group("cuda_gemm");
    for (i, &(name, n, k)) in QWEN.iter().enumerate() {
        let w = bf16_matrix(b, n, k, 1 + i as u64);
        for &m in &[1usize, 8, 64, 2048] {
            if m == 2048 && name == "lm_head" {
                continue; // prefill computes logits for the last token(s) only
            }
            let x: Vec<f32> = values(m * k, 100 + m as u64).collect();
            let x = b.tensor_from(&x);
            let mut out: CudaTensor = b.tensor(m * n);
            g.throughput(if m <= 64 {
                Throughput::Bytes((n * k * 2) as u64)
            } else {
                Throughput::Elements((2 * m * n * k) as u64)
            });
            g.bench_function(BenchmarkId::new(format!("qwen_{name}_{n}x{k}"), format!("m{m}")), |bch| {
                bch.iter_custom(|iters| time(b, iters, || gemm::matmul(b, &mut out, &x, &w, None, m)))
            });
        }
    }

    // The decode MLP's down projection with swiglu applied on load and the residual
    // added in the epilogue (one launch for all three): against qwen_down at the same
    // m, it should cost the gate_up read more. The residual grows by a bounded
    // product each launch, so it stays finite over a bench's iterations.
    let (n, k) = (896, 4864);
    let w = bf16_matrix(b, n, k, 4);
    for &m in &[1usize, 8] {
        let gate_up = b.tensor_from(&values(m * 2 * k, 200 + m as u64).collect::<Vec<_>>());
        let mut residual = b.tensor(m * n);
        g.throughput(Throughput::Bytes((n * k * 2) as u64));
        g.bench_function(BenchmarkId::new(format!("qwen_swiglu_down_{n}x{k}"), format!("m{m}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || gemm::swiglu_matmul_add(b, &mut residual, &gate_up, &w, m))
            })
        });
    }

    // The decode qkv projection with its rmsnorm computed on load: against qwen_qkv
    // at the same m, it should cost the norm's reduction (x and g rereads from L2).
    let (n, k) = (1152, 896);
    let w = bf16_matrix(b, n, k, 5);
    let norm = b
        .upload(&HostTensor { name: "norm".into(), shape: vec![k], data: HostData::F32(vec![1.0; k]) })
        .expect("upload the norm");
    for &m in &[1usize, 8] {
        let x = b.tensor_from(&values(m * k, 300 + m as u64).collect::<Vec<_>>());
        let mut out = b.tensor(m * n);
        g.throughput(Throughput::Bytes((n * k * 2) as u64));
        g.bench_function(BenchmarkId::new(format!("qwen_rmsnorm_qkv_{n}x{k}"), format!("m{m}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || gemm::rmsnorm_matmul(b, &mut out, &x, &norm, 1e-6, &w, None, m))
            })
        });
    }

    for &s in &[4096usize, 8192] {
        let a = bf16_matrix(b, s, s, 7);
        let w = bf16_matrix(b, s, s, 8);
        let mut out = b.tensor(s * s);
        g.throughput(Throughput::Elements((2 * s * s * s) as u64));
        g.bench_function(BenchmarkId::new("bf16_square", s), |bch| {
            bch.iter_custom(|iters| time(b, iters, || gemm::matmul_bf16(b, &mut out, &a, &w, s)))
        });
        if s == 4096 {
            cublas_baseline(&mut g, b, &a, &w, &mut out, s);
        }
    }
    g.finish();
}

/// The same bf16 x bf16 -> f32 product through cublasGemmEx (f32 compute), for the
/// ratio our GEMM is judged by.
fn cublas_baseline(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    b: &CudaBackend,
    a: &CudaWeight,       // (s, s) bf16
    w: &CudaWeight,       // (s, s) bf16
    out: &mut CudaTensor, // (s, s) f32
    s: usize,
) {
    use cudarc::cublas::{result, sys, CudaBlas};
    // SAFETY: only tries to dlopen libcublas.
    if !unsafe { sys::is_culib_present() } {
        println!("skipped cuda_gemm/cublas_bf16_square/{s}: libcublas not found");
        return;
    }
    let blas = match CudaBlas::new(b.stream().clone()) {
        Ok(h) => h,
        Err(e) => return println!("skipped cuda_gemm/cublas_bf16_square/{s}: {e:?}"),
    };
    let (alpha, beta) = (1f32, 0f32);
    let si = s as i32;
    let (a_ptr, w_ptr, o_ptr) = (a.buf.ptr(), w.buf.ptr(), out.buf.ptr());
    // cuBLAS is column-major: out^T (s x s) = op(W^T) A^T, i.e. W read transposed
    // (lda = k) times A as stored (ldb = k), written with ldc = n.
    let call = || {
        // SAFETY: a, w are live (s, s) bf16 matrices and out holds s * s f32, all on
        // the stream the handle is bound to; alpha and beta outlive the call (host
        // pointer mode, read before it returns).
        let r = unsafe {
            result::gemm_ex(
                *blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                si,
                si,
                si,
                &alpha as *const f32 as *const _,
                w_ptr as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                si,
                a_ptr as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                si,
                &beta as *const f32 as *const _,
                o_ptr as *mut _,
                sys::cudaDataType::CUDA_R_32F,
                si,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        r.expect("cublasGemmEx");
    };
    g.bench_function(BenchmarkId::new("cublas_bf16_square", s), |bch| {
        bch.iter_custom(|iters| time(b, iters, &call))
    });
}
