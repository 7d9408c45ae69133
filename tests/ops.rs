//! The CPU backend's ops against naive f64 references at awkward sizes.

mod common;

use common::{assert_close, rand_vec, BF16_TOL, F32_TOL};
use pimoe::backend::cpu::{gemm, simd, CpuBackend, CpuWeight};
use pimoe::backend::{AttnPlan, AttnShape, Backend, SeqSpan};
use pimoe::model::safetensors::{HostData, HostTensor};
use pimoe::sampling::{argmax, sample_from, Sampler, SamplingParams};

fn bf16_bits(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
}

fn naive_matmul(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
            out[i * n + j] = (s + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
    out
}

#[test]
fn dot_kernels_match_naive_at_awkward_lengths() {
    for &k in &[1, 7, 8, 31, 33, 64, 576, 4095] {
        let w = rand_vec(k, 1 + k as u64);
        let xs: Vec<Vec<f32>> = (0..4).map(|r| rand_vec(k, 100 + r + k as u64)).collect();
        let want: Vec<f32> = xs
            .iter()
            .map(|x| w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
            .collect();
        let got1: Vec<f32> = xs.iter().map(|x| simd::dot(&w, x)).collect();
        let got4 = simd::dot4(&w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
        assert_close(&format!("dot k={k}"), &got1, &want, F32_TOL);
        assert_close(&format!("dot4 k={k}"), &got4, &want, F32_TOL);
        // Bitwise: a token's logits must not depend on its batch (scheduler tests).
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got1), bits(&got4), "dot and dot4 differ at k={k}");
    }
}

#[test]
fn matmul_f32_and_bf16_match_naive() {
    // (m, n, k): decode, a batch that is not a multiple of 4, prefill, real sizes.
    for &(m, n, k) in &[(1, 1, 1), (1, 33, 31), (3, 31, 33), (5, 576, 64), (17, 96, 576), (1, 1536, 576)] {
        let x = rand_vec(m * k, 7);
        let w = rand_vec(n * k, 8);
        let bias = rand_vec(n, 9);
        let mut out = vec![f32::NAN; m * n];
        let wf = CpuWeight { rows: n, cols: k, data: HostData::F32(w.clone()) };
        let bw = CpuWeight { rows: 1, cols: n, data: HostData::F32(bias.clone()) };
        gemm::matmul(&mut out, &x, &wf, Some(&bw), m);
        assert_close(
            &format!("matmul f32 {m}x{n}x{k}"),
            &out,
            &naive_matmul(&x, &w, Some(&bias), m, n, k),
            F32_TOL,
        );

        // bf16 weights: compared with the reference on the same (rounded) weights,
        // so the only error left is the f32 accumulation.
        let wb = bf16_bits(&w);
        let wr: Vec<f32> = wb.iter().map(|&b| f32::from_bits((b as u32) << 16)).collect();
        let wbw = CpuWeight { rows: n, cols: k, data: HostData::Bf16(wb) };
        out.fill(f32::NAN);
        gemm::matmul(&mut out, &x, &wbw, None, m);
        assert_close(
            &format!("matmul bf16 {m}x{n}x{k}"),
            &out,
            &naive_matmul(&x, &wr, None, m, n, k),
            F32_TOL,
        );
        // and against the unrounded weights, within the bf16 budget
        assert_close(
            &format!("matmul bf16 vs f32 {m}x{n}x{k}"),
            &out,
            &naive_matmul(&x, &w, None, m, n, k),
            BF16_TOL,
        );
    }
}

/// matmul_add adds the product to the residual: the matmul's bits plus one f32
/// addition per element, which is what the residual stream was before the add moved
/// out of the norm.
#[test]
fn matmul_add_adds_the_product() {
    let b = CpuBackend;
    let (m, n, k) = (3, 40, 33);
    let x = rand_vec(m * k, 21);
    let w = CpuWeight { rows: n, cols: k, data: HostData::F32(rand_vec(n * k, 22)) };
    let r0 = rand_vec(m * n, 23);
    let mut product = vec![f32::NAN; m * n];
    gemm::matmul(&mut product, &x, &w, None, m);
    let (mut residual, mut scratch) = (r0.clone(), vec![f32::NAN; m * n]);
    b.matmul_add(&mut residual, &mut scratch, &x, &w, m);
    for i in 0..m * n {
        assert_eq!(residual[i].to_bits(), (r0[i] + product[i]).to_bits(), "element {i}");
    }
}

#[test]
fn matmul_sums_every_token_as_decode_does() {
    // Bitwise, as for dot4: prefill's register tiles (4 rows x 6 tokens, tasks of 64 x 48)
    // must give each token what a batch of one gives it. Sizes cross every tile edge and
    // the 8- and 1-element tails of k.
    println!("register-tiled matmul on this CPU: {}", simd::tile_is_blocked());
    for &(m, n, k) in &[(2, 5, 8), (7, 67, 24), (13, 130, 583), (50, 66, 576), (97, 9, 1536), (6, 4, 7)] {
        let x = rand_vec(m * k, 11);
        let w = rand_vec(n * k, 12);
        let bias = rand_vec(n, 13);
        let bw = CpuWeight { rows: 1, cols: n, data: HostData::F32(bias) };
        for data in [HostData::F32(w.clone()), HostData::Bf16(bf16_bits(&w))] {
            let wt = CpuWeight { rows: n, cols: k, data };
            let mut all = vec![f32::NAN; m * n];
            gemm::matmul(&mut all, &x, &wt, Some(&bw), m);
            for j in 0..m {
                let mut one = vec![f32::NAN; n];
                gemm::matmul(&mut one, &x[j * k..(j + 1) * k], &wt, Some(&bw), 1);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&all[j * n..(j + 1) * n]), bits(&one), "token {j} of {m}x{n}x{k}");
            }
        }
    }
}

/// Every register-tile path this CPU runs (not only the one `matmul` picks) gives
/// `dot`'s bits for every pair, at lengths with and without 16-, 8- and 1-element tails.
#[test]
fn every_tile_path_gives_dot_bits() {
    let paths: Vec<simd::Path> = simd::Path::ALL.into_iter().filter(|p| p.available()).collect();
    println!("tile paths on this CPU: {paths:?}");
    assert!(paths.contains(&simd::Path::best()));
    for &k in &[1, 7, 8, 16, 24, 64, 583, 1553] {
        let (w, x) = (rand_vec(4 * k, 21), rand_vec(6 * k, 22));
        let wb = bf16_bits(&w);
        for &path in &paths {
            tile_matches_dot::<f32, 4, 6>(path, &w, &x, k);
            tile_matches_dot::<f32, 2, 6>(path, &w, &x, k);
            tile_matches_dot::<f32, 2, 3>(path, &w, &x, k);
            tile_matches_dot::<f32, 1, 1>(path, &w, &x, k);
            tile_matches_dot::<u16, 4, 5>(path, &wb, &x, k);
            tile_matches_dot::<u16, 2, 6>(path, &wb, &x, k);
            tile_matches_dot::<u16, 1, 2>(path, &wb, &x, k);
        }
    }
}

/// `dots` on every path this CPU runs: each (token, row) pair put once, with `dot`'s
/// bits, for odd and even row counts, token counts across the groups of six, and rows
/// longer than one span of AVX2's k loop (768) with and without 8- and 1-element tails.
#[test]
fn every_dots_path_gives_dot_bits() {
    let paths: Vec<simd::Path> = simd::Path::ALL.into_iter().filter(|p| p.available()).collect();
    for &k in &[7, 583, 1536, 1553] {
        let (w, x) = (rand_vec(9 * k, 23), rand_vec(13 * k, 24));
        let wb = bf16_bits(&w);
        for &path in &paths {
            for &(n, m) in &[(1, 1), (2, 6), (3, 5), (5, 7), (9, 13)] {
                dots_match_dot(path, &w, &x, k, n, m);
                dots_match_dot(path, &wb, &x, k, n, m);
            }
        }
    }
}

fn dots_match_dot<W: simd::WeightElem>(path: simd::Path, w: &[W], x: &[f32], k: usize, n: usize, m: usize) {
    let ws: Vec<&[W]> = w.chunks_exact(k).take(n).collect();
    let xs: Vec<&[f32]> = x.chunks_exact(k).take(m).collect();
    let mut got = vec![None; m * n];
    simd::dots_on(path, &ws, &xs, |t, r, v| {
        assert!(got[t * n + r].replace(v).is_none(), "{path:?} k={k}: pair ({t}, {r}) put twice");
    });
    for t in 0..m {
        for r in 0..n {
            let want = simd::dot(ws[r], xs[t]);
            let v = got[t * n + r].unwrap_or_else(|| panic!("{path:?} k={k}: pair ({t}, {r}) never put"));
            assert_eq!(v.to_bits(), want.to_bits(), "{path:?} {n}x{m} k={k}: pair ({t}, {r})");
        }
    }
}

fn tile_matches_dot<W: simd::WeightElem, const R: usize, const T: usize>(
    path: simd::Path,
    w: &[W],
    x: &[f32],
    k: usize,
) {
    let got = simd::tile_on::<W, R, T>(
        path,
        std::array::from_fn(|r| &w[r * k..][..k]),
        std::array::from_fn(|t| &x[t * k..][..k]),
    );
    for t in 0..T {
        for r in 0..R {
            let want = simd::dot(&w[r * k..][..k], &x[t * k..][..k]);
            assert_eq!(got[t][r].to_bits(), want.to_bits(), "{path:?} {R}x{T} k={k}: pair ({t}, {r})");
        }
    }
}

/// Attention's p * v on every path this CPU runs: the scalar loop's bits (a product
/// then a sum per element, positions in order), for rows of 64 (the register paths)
/// and of 31, tiles of 6 rows and a remainder, and rows of different lengths.
#[test]
fn every_p_times_v_path_gives_the_scalar_loops_bits() {
    let span = 40;
    for &d in &[64, 31] {
        for rows in [1, 3, 7] {
            let v = rand_vec(span * d, 31);
            let p = rand_vec(rows * span, 32);
            let lens: Vec<usize> = (0..rows).map(|r| span - 5 * (r % 3)).collect();
            let init = rand_vec(rows * d, 33);
            let mut want = init.clone();
            for r in 0..rows {
                for j in 0..lens[r] {
                    for i in 0..d {
                        want[r * d + i] += p[r * span + j] * v[j * d + i];
                    }
                }
            }
            let (pr, vr): (Vec<&[f32]>, Vec<&[f32]>) = (p.chunks(span).collect(), v.chunks(d).collect());
            for path in simd::Path::ALL.into_iter().filter(|p| p.available()) {
                let mut acc = init.clone();
                simd::add_scaled_prefixes_on(path, &mut acc, &pr, &lens, &vr);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&acc), bits(&want), "{path:?}: {rows} rows of {d}");
            }
        }
    }
}

#[test]
fn upload_keeps_bf16_matrices_and_widens_vectors() {
    let b = CpuBackend;
    let m = HostTensor { name: "m".into(), shape: vec![2, 3], data: HostData::Bf16(bf16_bits(&[1.0; 6])) };
    let v =
        HostTensor { name: "v".into(), shape: vec![3], data: HostData::Bf16(bf16_bits(&[0.5, 1.5, -2.0])) };
    assert!(matches!(b.upload(&m).unwrap().data, HostData::Bf16(_)));
    assert_eq!(b.upload(&v).unwrap().as_f32(), &[0.5, 1.5, -2.0]);
    let bad = HostTensor { name: "t3".into(), shape: vec![1, 2, 3], data: HostData::F32(vec![0.0; 6]) };
    let err = b.upload(&bad).unwrap_err().to_string();
    assert!(err.contains("t3"), "{err}");
}

#[test]
fn rmsnorm_and_swiglu_match_naive() {
    let b = CpuBackend;
    for &dim in &[1, 31, 576, 896] {
        let n = 3;
        let x = rand_vec(n * dim, 3);
        let w = CpuWeight { rows: 1, cols: dim, data: HostData::F32(rand_vec(dim, 5)) };
        let mut want = vec![0f32; n * dim];
        for t in 0..n {
            let row: Vec<f64> = (0..dim).map(|i| x[t * dim + i] as f64).collect();
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + 1e-5).sqrt();
            for i in 0..dim {
                want[t * dim + i] = (row[i] * inv * w.as_f32()[i] as f64) as f32;
            }
        }
        let mut out = vec![f32::NAN; n * dim];
        b.rmsnorm(&mut out, &x, &w, dim, 1e-5);
        assert_close(&format!("rmsnorm dim={dim}"), &out, &want, F32_TOL);
    }
    let inter = 33;
    let gu = rand_vec(2 * 2 * inter, 6);
    let mut out = vec![f32::NAN; 2 * inter];
    b.swiglu(&mut out, &gu, inter);
    let want: Vec<f32> = (0..2 * inter)
        .map(|i| {
            let (t, j) = (i / inter, i % inter);
            let g = gu[t * 2 * inter + j] as f64;
            (g / (1.0 + (-g).exp()) * gu[t * 2 * inter + inter + j] as f64) as f32
        })
        .collect();
    assert_close("swiglu", &out, &want, F32_TOL);
}

/// Attention over a paged cache whose blocks are scattered equals dense causal
/// attention computed directly from q, k, v.
#[test]
fn paged_attention_matches_dense_causal_reference() {
    let b = CpuBackend;
    for &(hq, hk, d, len) in &[(3, 1, 64, 33), (7, 1, 128, 20), (4, 2, 16, 1), (9, 3, 64, 40)] {
        let shape = AttnShape { num_heads: hq, num_kv_heads: hk, head_dim: d };
        let row = (hq + 2 * hk) * d;
        let qkv = rand_vec(len * row, 11 + len as u64);
        let bs = 16;
        let nblocks = len.div_ceil(bs);
        // Scattered, descending block ids.
        let table: Vec<u32> = (0..nblocks as u32).map(|i| 2 * (nblocks as u32 - i)).collect();
        let cache_len = (2 * nblocks + 1) * bs * hk * d;
        let (mut kc, mut vc) = (vec![f32::NAN; cache_len], vec![f32::NAN; cache_len]);
        let plan = AttnPlan {
            positions: (0..len as u32).collect(),
            token_seq: vec![0; len],
            slots: (0..len).map(|p| table[p / bs] * bs as u32 + (p % bs) as u32).collect(),
            block_tables: table.clone(),
            max_blocks: nblocks,
            block_size: bs,
            seqs: vec![SeqSpan { first: 0, len: len as u32, start: 0 }],
        };
        b.kv_write(&mut kc, &mut vc, &qkv, &plan, shape);
        let mut out = vec![f32::NAN; len * hq * d];
        b.attention(&mut out, &qkv, &kc, &vc, &plan, shape);

        let mut want = vec![0f32; len * hq * d];
        for t in 0..len {
            for h in 0..hq {
                let g = h / (hq / hk);
                let q = &qkv[t * row + h * d..][..d];
                let s: Vec<f64> = (0..=t)
                    .map(|j| {
                        let k = &qkv[j * row + hq * d + g * d..][..d];
                        q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    let acc: f64 =
                        (0..=t).map(|j| e[j] / z * qkv[j * row + (hq + hk) * d + g * d + i] as f64).sum();
                    want[(t * hq + h) * d + i] = acc as f32;
                }
            }
        }
        assert_close(&format!("attention hq={hq} hk={hk} d={d} len={len}"), &out, &want, F32_TOL);

        // Bitwise: each token attended alone (as a decode step would) gets what it got
        // among the prefill's tiles.
        for t in [0, len / 2, len - 1] {
            let one = AttnPlan {
                positions: vec![t as u32],
                token_seq: vec![0],
                slots: vec![plan.slots[t]],
                block_tables: table.clone(),
                max_blocks: nblocks,
                block_size: bs,
                seqs: vec![SeqSpan { first: 0, len: 1, start: t as u32 }],
            };
            let mut alone = vec![f32::NAN; hq * d];
            b.attention(&mut alone, &qkv[t * row..(t + 1) * row].to_vec(), &kc, &vc, &one, shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&alone), bits(&out[t * hq * d..(t + 1) * hq * d]), "token {t} of {len}, hq={hq}");
        }
    }
}

#[test]
fn rope_rotates_pairs_half_apart() {
    let b = CpuBackend;
    let shape = AttnShape { num_heads: 1, num_kv_heads: 1, head_dim: 4 };
    // q = (1, 0, 0, 0) at position 1 with theta = 1: inv_freq = (1, 1): angle 1 on pair (0, 2).
    let mut qkv = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0];
    b.rope(&mut qkv, &vec![1], shape, 1.0);
    let (c, s) = (1f32.cos(), 1f32.sin());
    assert_close("rope q", &qkv[..4], &[c, 0.0, s, 0.0], F32_TOL);
    assert_close("rope k", &qkv[4..8], &[0.0, c, 0.0, s], F32_TOL);
    assert_eq!(&qkv[8..], &[9.0; 4], "v must not be rotated");
}

#[test]
fn sampling_is_reproducible_and_respects_cuts() {
    let logits = rand_vec(1000, 42);
    let greedy = argmax(&logits);
    let p = SamplingParams { temperature: 0.8, top_k: 50, top_p: 0.9, seed: 7 };
    let run = |p: &SamplingParams| {
        let mut s = Sampler::new(p.clone()).unwrap();
        (0..64).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    let a = run(&p);
    assert_eq!(a, run(&p), "same seed, same tokens");
    assert_ne!(a, run(&SamplingParams { seed: 8, ..p.clone() }), "another seed, other tokens");
    // every token is within the top 50
    let mut order: Vec<u32> = (0..1000).collect();
    order.sort_by(|&i, &j| logits[j as usize].total_cmp(&logits[i as usize]));
    assert!(a.iter().all(|t| order[..50].contains(t)));
    // top-k 1 and a tiny top-p are greedy whatever the draw
    for u in [0.0, 0.5, 0.999] {
        assert_eq!(sample_from(&logits, &SamplingParams { top_k: 1, ..p.clone() }, u), greedy);
        assert_eq!(sample_from(&logits, &SamplingParams { top_k: 0, top_p: 1e-6, ..p.clone() }, u), greedy);
    }
    assert_eq!(
        Sampler::new(SamplingParams { temperature: 0.0, ..p.clone() }).unwrap().sample(&logits),
        greedy
    );
    assert!(Sampler::new(SamplingParams { top_p: 0.0, ..p.clone() }).is_err());
    assert!(Sampler::new(SamplingParams { temperature: -1.0, ..p }).is_err());
}

/// Every kernels/*.cu is embedded (build.rs), with PTX whenever nvcc was found.
#[test]
fn every_kernel_file_is_embedded() {
    use pimoe::backend::kernels::{KERNELS, PTX_ARCH};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
    assert_eq!(names, files);
    for k in KERNELS {
        assert!(!k.source.is_empty(), "{}", k.name);
        assert_eq!(k.ptx.is_some(), PTX_ARCH.is_some(), "{}", k.name);
    }
    if PTX_ARCH.is_none() {
        println!("no nvcc at build time: {} kernel files embedded as source only", KERNELS.len());
    }
}
