//! The computation experts (src/pimoe/experts/): MLP and DeepONet against a naive
//! f64 reference and against PyTorch float64 (tests/fixtures/make_deeponet.py), the
//! reference's full DeepONet shapes, the linear solver (hand-checked cases, random
//! systems, singular and ill-conditioned ones), bad weight files, bitwise
//! repeatability, and the GPU twin against the CPU (skipped visibly without a GPU).

mod common;

use std::path::Path;

use pimoe::pimoe::experts::mlp::{dense, erf};
use pimoe::pimoe::experts::{
    Activation, DeepONet, DeepONetSpec, Expert, Linear, LinearSolve, Mlp, Precision, SolveError, WeightFile,
};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::Value;

/// f64 expert math: ||out - ref|| / ||ref|| below this (DESIGN.md).
const F64_TOL: f64 = 1e-12;

// ----------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------

/// SplitMix64: deterministic f64 test data in [-1, 1), never exactly zero in practice.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

fn rel_err(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    let (mut num, mut den) = (0.0, 0.0);
    for (&o, &r) in out.iter().zip(reference) {
        num += (o - r) * (o - r);
        den += r * r;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn assert_close(what: &str, out: &[f64], reference: &[f64], tol: f64) {
    let err = rel_err(out, reference);
    if err < tol && out.iter().all(|v| v.is_finite()) {
        return;
    }
    let first: Vec<String> = out
        .iter()
        .zip(reference)
        .enumerate()
        .filter(|(_, (o, r))| (*o - *r).abs() > tol * r.abs().max(1e-300) || !o.is_finite())
        .take(8)
        .map(|(i, (o, r))| format!("[{i}] got {o:e} want {r:e}"))
        .collect();
    panic!("{what}: rel err {err:.3e} >= {tol:.1e}; first: {first:?}");
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Random MLP with PyTorch-like scales (weights ~ U(-1/sqrt(in), 1/sqrt(in))).
fn random_mlp(widths: &[usize], act: Activation, prec: Precision, rng: &mut Rng) -> Mlp {
    let layers = widths
        .windows(2)
        .map(|io| {
            let s = 1.0 / (io[0] as f64).sqrt();
            Linear::new(rng.vec(io[0] * io[1], s), rng.vec(io[1], s), io[0], io[1]).unwrap()
        })
        .collect();
    Mlp::new(layers, act, prec).unwrap()
}

/// Row by row, plain `a * b + c` (no fma), activation between layers: the textbook
/// definition, independent of the library's batched kernel.
fn naive_mlp(m: &Mlp, x: &[f64], rows: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 0..rows {
        let mut h = x[r * m.n_inputs()..(r + 1) * m.n_inputs()].to_vec();
        for (i, l) in m.layers().iter().enumerate() {
            let mut next = vec![0.0; l.n_out];
            for (o, y) in next.iter_mut().enumerate() {
                let mut s = l.b[o];
                for (w, x) in l.w[o * l.n_in..(o + 1) * l.n_in].iter().zip(&h) {
                    s += w * x;
                }
                *y = if i + 1 < m.layers().len() { naive_act(m.activation(), s) } else { s };
            }
            h = next;
        }
        out.extend(h);
    }
    out
}

fn naive_act(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

fn naive_deeponet(d: &DeepONet, x: &[f64], rows: usize) -> Vec<f64> {
    let (xb, xt) = d.split_inputs(x, rows);
    let b = naive_mlp(d.branch(), &xb, rows);
    let t = naive_mlp(d.trunk(), &xt, rows);
    let p = d.n_features();
    (0..rows)
        .map(|r| (0..p).map(|f| b[r * p + f] * t[r * p + f]).sum::<f64>() + d.bias().unwrap_or(0.0))
        .collect()
}

fn json_f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn fixture_json() -> Value {
    let path = common::fixtures().join("deeponet_small.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn widths(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Writes named tensors (shape, values) as a safetensors file in `dtype` (F64 / F32).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f64>)], dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            Dtype::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            d => panic!("write_safetensors: {d:?}"),
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name.clone(), TensorView::new(dtype, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The tensors of a DeepONet with the given widths, random, named as the spec says.
fn random_deeponet_tensors(spec: &DeepONetSpec, seed: u64) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for (prefix, widths) in
        [(&spec.branch_prefix, &spec.branch_widths), (&spec.trunk_prefix, &spec.trunk_widths)]
    {
        for (i, io) in widths.windows(2).enumerate() {
            let s = 1.0 / (io[0] as f64).sqrt();
            let name = format!("{prefix}.{}", i * spec.layer_stride);
            out.push((format!("{name}.weight"), vec![io[1], io[0]], rng.vec(io[0] * io[1], s)));
            out.push((format!("{name}.bias"), vec![io[1]], rng.vec(io[1], s)));
        }
    }
    out.push((spec.bias_name.clone(), vec![1], vec![0.125]));
    out
}

// ----------------------------------------------------------------------------------
// MLP and DeepONet
// ----------------------------------------------------------------------------------

#[test]
fn mlp_matches_naive_reference() {
    let mut rng = Rng(1);
    for act in Activation::ALL {
        for widths in [vec![1, 1], vec![5, 33, 7], vec![13, 31, 1, 9], vec![64, 130, 65, 10]] {
            let m = random_mlp(&widths, act, Precision::F64, &mut rng);
            for rows in [1, 3, 4, 9, 33] {
                let x = rng.vec(rows * widths[0], 2.0);
                let got = m.forward(&x, rows);
                assert_eq!(got.len(), rows * widths[widths.len() - 1]);
                assert_close(
                    &format!("{act:?} {widths:?} rows {rows}"),
                    &got,
                    &naive_mlp(&m, &x, rows),
                    F64_TOL,
                );
            }
        }
    }
}

#[test]
fn large_layer_takes_the_parallel_path_and_still_matches() {
    let mut rng = Rng(2);
    let m = random_mlp(&[300, 700, 200], Activation::Relu, Precision::F64, &mut rng);
    let rows = 7;
    let x = rng.vec(rows * 300, 1.0);
    assert_close("300-700-200", &m.forward(&x, rows), &naive_mlp(&m, &x, rows), F64_TOL);
}

#[test]
fn f32_precision_computes_in_f32() {
    let mut rng = Rng(3);
    let widths = [6, 40, 17, 3];
    let m64 = random_mlp(&widths, Activation::Tanh, Precision::F64, &mut rng);
    let m32 = Mlp::new(m64.layers().to_vec(), Activation::Tanh, Precision::F32).unwrap();
    let rows = 5;
    let x = rng.vec(rows * widths[0], 1.0);
    // Independent f32 reference: the same fma chain, layer by layer, in f32.
    let mut h: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    for (i, l) in m64.layers().iter().enumerate() {
        let w: Vec<f32> = l.w.iter().map(|&v| v as f32).collect();
        let mut next = vec![0f32; rows * l.n_out];
        for r in 0..rows {
            for o in 0..l.n_out {
                let mut acc = 0f32;
                for k in 0..l.n_in {
                    acc = h[r * l.n_in + k].mul_add(w[o * l.n_in + k], acc);
                }
                let v = acc + l.b[o] as f32;
                next[r * l.n_out + o] = if i + 1 < m64.layers().len() { v.tanh() } else { v };
            }
        }
        h = next;
    }
    let got = m32.forward(&x, rows);
    let want: Vec<f64> = h.iter().map(|&v| v as f64).collect();
    assert_eq!(bits(&got), bits(&want), "f32 MLP must be the f32 fma chain bit for bit");
    // ... and it really is f32: visibly different from the f64 result, by ~1e-7.
    let err = rel_err(&got, &m64.forward(&x, rows));
    assert!(err > 1e-10 && err < 1e-5, "f32 vs f64 rel err {err:e}");
}

#[test]
fn dense_is_batch_invariant() {
    // A row's result does not depend on which other rows share the batch.
    let mut rng = Rng(4);
    let (n_in, n_out, rows) = (37, 29, 11);
    let (x, w, b) = (rng.vec(rows * n_in, 1.0), rng.vec(n_out * n_in, 1.0), rng.vec(n_out, 1.0));
    let all = dense(&x, rows, n_in, &w, &b, n_out, Some(Activation::Gelu));
    for r in 0..rows {
        let one = dense(&x[r * n_in..(r + 1) * n_in], 1, n_in, &w, &b, n_out, Some(Activation::Gelu));
        assert_eq!(bits(&one), bits(&all[r * n_out..(r + 1) * n_out]), "row {r}");
    }
}

#[test]
fn erf_matches_pytorch() {
    let j = fixture_json();
    let (xs, ys) = (json_f64s(&j["erf"]["x"]), json_f64s(&j["erf"]["y"]));
    for (&x, &y) in xs.iter().zip(&ys) {
        let got = erf(x);
        assert!((got - y).abs() <= 4.0 * f64::EPSILON * y.abs(), "erf({x:e}) = {got:e}, torch says {y:e}");
    }
    assert!(erf(f64::NAN).is_nan());
    assert_eq!(erf(f64::INFINITY), 1.0);
    assert_eq!(erf(f64::NEG_INFINITY), -1.0);
}

#[test]
fn deeponet_matches_pytorch_fixture() {
    let j = fixture_json();
    let d = &j["deeponet"];
    let spec = DeepONetSpec::new(&widths(&d["branch_widths"]), &widths(&d["trunk_widths"]));
    let path = common::fixtures().join(d["file"].as_str().unwrap());
    let net = DeepONet::load(&path, &spec).unwrap();
    assert_eq!(net.bias(), Some(0.3125));
    assert_eq!((net.n_inputs(), net.n_outputs(), net.n_features()), (13, 1, 10));

    let rows = d["rows"].as_u64().unwrap() as usize;
    let (xb, xt) = (json_f64s(&d["branch_inputs"]), json_f64s(&d["trunk_inputs"]));
    let mut packed = Vec::new();
    for r in 0..rows {
        packed.extend_from_slice(&xb[r * 11..(r + 1) * 11]);
        packed.extend_from_slice(&xt[r * 2..(r + 1) * 2]);
    }
    let want = json_f64s(&d["outputs"]);
    let expert = Expert::DeepONet(net.clone());
    let got: Vec<f64> = expert.run(&packed, rows).into_iter().map(|r| r.unwrap()[0]).collect();
    assert_close("DeepONet vs PyTorch f64", &got, &want, F64_TOL);
    assert_close("DeepONet vs naive", &got, &naive_deeponet(&net, &packed, rows), F64_TOL);
    let err = rel_err(&got, &want);
    eprintln!("DeepONet vs PyTorch float64: rel err {err:.2e}");

    // Precision::F32 against PyTorch's float32 run of the same model.
    let spec32 = DeepONetSpec { precision: Precision::F32, ..spec };
    let net32 = DeepONet::load(&path, &spec32).unwrap();
    let got32 = net32.forward(&packed, rows);
    assert_close("DeepONet f32 vs PyTorch f32", &got32, &json_f64s(&d["outputs_f32"]), common::F32_TOL);
    assert!(rel_err(&got32, &want) > 1e-10, "the f32 expert must not silently compute in f64");
}

#[test]
fn activation_mlps_match_pytorch() {
    let j = fixture_json();
    let a = &j["activation_mlps"];
    let file = WeightFile::open(&common::fixtures().join(a["file"].as_str().unwrap())).unwrap();
    let w = widths(&a["widths"]);
    let rows = a["rows"].as_u64().unwrap() as usize;
    for (name, case) in a["cases"].as_object().unwrap() {
        let act = Activation::from_name(name).unwrap();
        let m = Mlp::load(&file, &format!("{name}.layers"), 2, &w, act, Precision::F64).unwrap();
        let got = m.forward(&json_f64s(&case["inputs"]), rows);
        assert_close(&format!("{name} MLP vs PyTorch"), &got, &json_f64s(&case["outputs"]), F64_TOL);
    }
}

#[test]
fn reference_shapes_load_from_f32_and_f64_files_and_run() {
    let spec = DeepONetSpec::reference();
    let tensors = random_deeponet_tensors(&spec, 7);
    let n_params: usize = tensors.iter().map(|t| t.2.len()).sum();
    assert!(n_params > 3_000_000, "{n_params} parameters");
    let dir = common::scratch_dir("experts-reference");
    let rows = 6;
    let x = Rng(8).vec(rows * 13, 1.0);

    let p32 = dir.join("reference_f32.safetensors");
    write_safetensors(&p32, &tensors, Dtype::F32);
    let net = DeepONet::load(&p32, &spec).unwrap();
    assert_eq!(net.branch().widths(), spec.branch_widths);
    assert_eq!(net.trunk().widths(), spec.trunk_widths);
    // f32 in the file, f64 in memory: exactly the f32 values widened.
    let w0 = &net.branch().layers()[0].w;
    assert!(w0.iter().zip(&tensors[0].2).all(|(&a, &b)| a == b as f32 as f64));
    let t = std::time::Instant::now();
    let got = Expert::DeepONet(net.clone()).run(&x, rows);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let got: Vec<f64> = got.into_iter().map(|r| r.unwrap()[0]).collect();
    assert_close("reference shapes vs naive", &got, &naive_deeponet(&net, &x, rows), F64_TOL);
    eprintln!(
        "reference DeepONet ({n_params} params, {:.1} MMAC/row): {rows} rows in {ms:.1} ms on the CPU",
        (net.branch().macs_per_row() + net.trunk().macs_per_row()) as f64 / 1e6
    );

    let p64 = dir.join("reference_f64.safetensors");
    write_safetensors(&p64, &tensors, Dtype::F64);
    let net64 = DeepONet::load(&p64, &spec).unwrap();
    assert_eq!(net64.branch().layers()[0].w, tensors[0].2, "f64 file loads bit-exactly");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_weight_files_name_the_tensor() {
    let spec = DeepONetSpec::new(&[3, 8, 4], &[2, 5, 4]);
    let good = random_deeponet_tensors(&spec, 9);
    let dir = common::scratch_dir("experts-bad");
    let try_load = |name: &str, tensors: &[(String, Vec<usize>, Vec<f64>)], dtype| {
        let p = dir.join(format!("{name}.safetensors"));
        write_safetensors(&p, tensors, dtype);
        DeepONet::load(&p, &spec).map(|_| ()).map_err(|e| e.to_string())
    };
    try_load("good", &good, Dtype::F64).unwrap();

    let missing: Vec<_> = good.iter().filter(|t| t.0 != "trunk_net.layers.2.weight").cloned().collect();
    let e = try_load("missing", &missing, Dtype::F64).unwrap_err();
    assert!(e.contains("`trunk_net.layers.2.weight`") && e.contains("missing"), "{e}");

    let mut wrong = good.clone();
    let i = wrong.iter().position(|t| t.0 == "branch_net.layers.0.weight").unwrap();
    wrong[i] = ("branch_net.layers.0.weight".into(), vec![3, 8], wrong[i].2.clone());
    let e = try_load("transposed", &wrong, Dtype::F64).unwrap_err();
    assert!(
        e.contains("`branch_net.layers.0.weight`") && e.contains("[3, 8]") && e.contains("[8, 3]"),
        "{e}"
    );

    let mut bias = good.clone();
    let i = bias.iter().position(|t| t.0 == "bias").unwrap();
    bias[i] = ("bias".into(), vec![2], vec![1.0, 2.0]);
    let e = try_load("bias", &bias, Dtype::F64).unwrap_err();
    assert!(e.contains("`bias`") && e.contains("scalar"), "{e}");

    let e = try_load("ints", &good, Dtype::I32).unwrap_err();
    assert!(e.contains("`branch_net.layers.0.weight`") && e.contains("I32"), "{e}");

    // Without a bias tensor the bias is None.
    let no_bias: Vec<_> = good.iter().filter(|t| t.0 != "bias").cloned().collect();
    let p = dir.join("nobias.safetensors");
    write_safetensors(&p, &no_bias, Dtype::F64);
    assert_eq!(DeepONet::load(&p, &spec).unwrap().bias(), None);

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let e = DeepONet::load(&junk, &spec).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = DeepONet::load(&dir.join("absent.safetensors"), &spec).unwrap_err().to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expert_rows_fail_alone() {
    let mut rng = Rng(10);
    let m = random_mlp(&[4, 6, 2], Activation::Relu, Precision::F64, &mut rng);
    let e = Expert::Mlp(m);
    let mut x = rng.vec(3 * 4, 1.0);
    x[4 + 2] = f64::NAN;
    let out = e.run(&x, 3);
    assert!(out[0].is_ok() && out[2].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err(), "non-finite input in column 2");
    let out = e.run(&x[..5], 3);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|r| r.as_ref().unwrap_err().contains("got 5 inputs for 3 rows of 4")));
    // Overflow shows as an error, not as inf.
    let big = Mlp::new(
        vec![Linear::new(vec![1e300, 1e300], vec![0.0], 2, 1).unwrap()],
        Activation::Relu,
        Precision::F64,
    )
    .unwrap();
    let out = Expert::Mlp(big).run(&[1e10, 1e10], 1);
    assert_eq!(out[0].as_ref().unwrap_err(), "non-finite output (overflow)");
}

#[test]
fn runs_are_bitwise_repeatable() {
    let spec = DeepONetSpec::new(&[11, 256, 128, 64, 10], &[2, 96, 64, 10]);
    let dir = common::scratch_dir("experts-repeat");
    let p = dir.join("net.safetensors");
    write_safetensors(&p, &random_deeponet_tensors(&spec, 11), Dtype::F64);
    let net = Expert::DeepONet(DeepONet::load(&p, &spec).unwrap());
    let rows = 37;
    let x = Rng(12).vec(rows * 13, 1.0);
    let first = net.run(&x, rows);
    for _ in 0..3 {
        assert_eq!(net.run(&x, rows), first, "DeepONet rerun differs");
    }
    // Row 5 alone gives the same bits as row 5 in the batch.
    assert_eq!(net.run(&x[5 * 13..6 * 13], 1)[0], first[5]);

    let solver = Expert::LinearSolve(LinearSolve::new(20).unwrap());
    let sys = Rng(13).vec(9 * solver.n_inputs(), 1.0);
    let first = solver.run(&sys, 9);
    assert_eq!(solver.run(&sys, 9), first, "linear solve rerun differs");
    let _ = std::fs::remove_dir_all(&dir);
}

// ----------------------------------------------------------------------------------
// Linear solve
// ----------------------------------------------------------------------------------

fn residual(a: &[f64], x: &[f64], b: &[f64], n: usize) -> f64 {
    let r: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum::<f64>() - b[i]).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    norm(&r) / norm(b)
}

#[test]
fn solve_hand_checked_systems() {
    // 2x2: [2 1; 1 3] x = [3; 5] -> x = [0.8; 1.4]
    let s = LinearSolve::new(2).unwrap();
    let x = s.solve(&[2.0, 1.0, 1.0, 3.0], &[3.0, 5.0]).unwrap();
    assert_close("2x2", &x, &[0.8, 1.4], 1e-15);
    // 3x3 with a zero in the first pivot position (needs a row swap); x = [1, 2, 3].
    let s = LinearSolve::new(3).unwrap();
    let a = [0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 4.0, -3.0, 8.0];
    let x = s.solve(&a, &[8.0, 10.0, 22.0]).unwrap();
    assert_close("3x3", &x, &[1.0, 2.0, 3.0], 1e-15);
    // 1x1
    let s = LinearSolve::new(1).unwrap();
    assert_eq!(s.solve(&[4.0], &[2.0]).unwrap(), vec![0.5]);
    // A diagonal matrix: the condition estimate is exact.
    let s = LinearSolve::new(2).unwrap();
    let d = s.solve_detailed(&[1.0, 0.0, 0.0, 1e-6], &[1.0, 1.0]);
    assert_eq!(d.x.unwrap(), vec![1.0, 1e6]);
    assert!((d.rcond - 1e-6).abs() < 1e-20, "rcond {}", d.rcond);
    assert!(LinearSolve::new(0).is_err() && LinearSolve::new(65).is_err());
}

#[test]
fn solve_random_well_conditioned_systems() {
    let mut rng = Rng(14);
    for n in [1, 2, 7, 64] {
        let s = LinearSolve::new(n).unwrap();
        let systems = 6;
        let mut inputs = Vec::new();
        for _ in 0..systems {
            let mut a = rng.vec(n * n, 1.0);
            for i in 0..n {
                a[i * n + i] += 2.0 * if i % 2 == 0 { 1.0 } else { -1.0 }; // keep it well away from singular
            }
            inputs.extend(a);
            inputs.extend(rng.vec(n, 1.0));
        }
        let out = s.run(&inputs, systems);
        for (k, sol) in out.iter().enumerate() {
            let sys = &inputs[k * s.n_inputs()..(k + 1) * s.n_inputs()];
            let (a, b) = sys.split_at(n * n);
            let x = sol.x.as_ref().unwrap_or_else(|e| panic!("n {n} system {k}: {e}"));
            let res = residual(a, x, b, n);
            assert!(res < 1e-12, "n {n} system {k}: residual {res:e}");
            assert!(sol.rcond > 1e-5 && sol.rcond <= 1.0 + 1e-15, "n {n}: rcond {}", sol.rcond);
        }
    }
    // Plain random matrices (no diagonal shift) are still fine at n = 64.
    let n = 64;
    let s = LinearSolve::new(n).unwrap();
    for k in 0..4 {
        let (a, b) = (rng.vec(n * n, 1.0), rng.vec(n, 1.0));
        let sol = s.solve_detailed(&a, &b);
        let x = sol.x.unwrap_or_else(|e| panic!("random 64x64 #{k}: {e}"));
        assert!(residual(&a, &x, &b, n) < 1e-12);
        // The estimate is a lower bound on the true rcond's reciprocal: check against
        // the exact ||A^-1||_1 from n solves.
        let mut inv_norm = 0f64;
        for j in 0..n {
            let e: Vec<f64> = (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
            inv_norm = inv_norm.max(s.solve(&a, &e).unwrap().iter().map(|v| v.abs()).sum());
        }
        let a_norm = (0..n).map(|j| (0..n).map(|i| a[i * n + j].abs()).sum::<f64>()).fold(0.0, f64::max);
        let true_rcond = 1.0 / (a_norm * inv_norm);
        assert!(
            sol.rcond >= true_rcond * (1.0 - 1e-12) && sol.rcond < 10.0 * true_rcond,
            "rcond estimate {:e} vs true {true_rcond:e}",
            sol.rcond
        );
    }
}

#[test]
fn singular_and_ill_conditioned_systems_are_errors() {
    let s2 = LinearSolve::new(2).unwrap();
    assert_eq!(s2.solve(&[1.0, 2.0, 2.0, 4.0], &[1.0, 1.0]), Err(SolveError::Singular { column: 1 }));
    assert_eq!(
        s2.solve(&[1.0, 2.0, 2.0, 4.0], &[1.0, 1.0]).unwrap_err().to_string(),
        "singular: pivot 0 at column 1"
    );
    assert_eq!(s2.solve(&[0.0; 4], &[1.0, 1.0]), Err(SolveError::Singular { column: 0 }));
    // Nearly singular: the rows differ in the 15th digit.
    let e = s2.solve(&[1.0, 1.0, 1.0, 1.0 + 1e-15], &[1.0, 2.0]).unwrap_err();
    assert!(matches!(e, SolveError::IllConditioned { .. }), "{e}");
    assert!(e.to_string().starts_with("ill-conditioned: reciprocal condition estimate"), "{e}");
    // Hilbert 12x12: condition number ~1.7e16.
    let n = 12;
    let h: Vec<f64> = (0..n * n).map(|k| 1.0 / ((k / n + k % n + 1) as f64)).collect();
    let e = LinearSolve::new(n).unwrap().solve(&h, &vec![1.0; n]).unwrap_err();
    assert!(matches!(e, SolveError::IllConditioned { .. }), "{e}");
    // Hilbert 6x6 (cond ~1.5e7) passes the default threshold, and a stricter one refuses it.
    let n = 6;
    let h: Vec<f64> = (0..n * n).map(|k| 1.0 / ((k / n + k % n + 1) as f64)).collect();
    assert!(LinearSolve::new(n).unwrap().solve(&h, &vec![1.0; n]).is_ok());
    let strict = LinearSolve::new(n).unwrap().with_min_rcond(1e-6);
    assert!(matches!(strict.solve(&h, &vec![1.0; n]), Err(SolveError::IllConditioned { .. })));
    // Rank-deficient 7x7 (row 6 = row 0 + row 3): singular or ill-conditioned, never an answer.
    let mut rng = Rng(15);
    let n = 7;
    let mut a = rng.vec(n * n, 1.0);
    for j in 0..n {
        a[6 * n + j] = a[j] + a[3 * n + j];
    }
    let e = LinearSolve::new(n).unwrap().solve(&a, &rng.vec(n, 1.0)).unwrap_err();
    assert!(matches!(e, SolveError::Singular { .. } | SolveError::IllConditioned { .. }), "{e}");
    // Non-finite inputs name the first bad entry.
    assert_eq!(
        s2.solve(&[1.0, f64::NAN, 0.0, f64::INFINITY], &[1.0, 1.0]).unwrap_err().to_string(),
        "non-finite input: A[1]"
    );
    assert_eq!(
        s2.solve(&[1.0, 0.0, 0.0, 1.0], &[1.0, f64::NEG_INFINITY]),
        Err(SolveError::NonFiniteB { index: 1 })
    );
    // Overflow of the solution (the matrix itself is perfectly conditioned).
    assert_eq!(s2.solve(&[1e-300, 0.0, 0.0, 1e-300], &[1e300, 1.0]), Err(SolveError::Overflow));
}

#[test]
fn linear_solve_expert_mixes_good_and_bad_rows() {
    let e = Expert::LinearSolve(LinearSolve::new(2).unwrap());
    assert_eq!((e.n_inputs(), e.n_outputs(), e.precision()), (6, 2, Precision::F64));
    #[rustfmt::skip]
    let x = [
        2.0, 1.0, 1.0, 3.0, 3.0, 5.0,
        1.0, 2.0, 2.0, 4.0, 1.0, 1.0,
        1.0, 0.0, 0.0, 1.0, 7.0, -7.0,
    ];
    let out = e.run(&x, 3);
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err("singular: pivot 0 at column 1".to_string()));
    assert_eq!(out[2], Ok(vec![7.0, -7.0]));
}

// ----------------------------------------------------------------------------------
// GPU twin
// ----------------------------------------------------------------------------------

fn gpu(test: &str) -> Option<pimoe::backend::cuda::CudaBackend> {
    Some(common::cuda(test))
}

/// Same per-row outcome kinds; values within `tol`; reports how many rows were bitwise equal.
fn compare_rows(what: &str, gpu: &[Result<Vec<f64>, String>], cpu: &[Result<Vec<f64>, String>], tol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: row count");
    let (mut g, mut c, mut same_bits) = (Vec::new(), Vec::new(), 0);
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                same_bits += (bits(a) == bits(b)) as usize;
                g.extend(a);
                c.extend(b);
            }
            (Err(a), Err(b)) => {
                let kind = |s: &str| s.split(':').next().unwrap_or("").to_string();
                assert_eq!(kind(a), kind(b), "{what}: row {i}: GPU says {a:?}, CPU says {b:?}");
            }
            _ => panic!("{what}: row {i}: GPU {a:?} vs CPU {b:?}"),
        }
    }
    if !c.is_empty() {
        assert_close(what, &g, &c, tol);
    }
    eprintln!("{what}: {same_bits}/{} rows bitwise equal to the CPU", gpu.len());
}

#[test]
fn gpu_experts_match_cpu() {
    use pimoe::backend::cuda::expert::GpuExpert;
    let Some(b) = gpu("gpu_experts_match_cpu") else { return };
    let mut rng = Rng(16);

    // DeepONet fixture and the reference shapes.
    let j = fixture_json();
    let d = &j["deeponet"];
    let spec = DeepONetSpec::new(&widths(&d["branch_widths"]), &widths(&d["trunk_widths"]));
    let small = DeepONet::load(&common::fixtures().join("deeponet_small.safetensors"), &spec).unwrap();
    let dir = common::scratch_dir("experts-gpu");
    let p = dir.join("reference.safetensors");
    write_safetensors(&p, &random_deeponet_tensors(&DeepONetSpec::reference(), 17), Dtype::F64);
    let reference = DeepONet::load(&p, &DeepONetSpec::reference()).unwrap();
    let mut experts = vec![
        ("deeponet small", Expert::DeepONet(small)),
        ("deeponet reference", Expert::DeepONet(reference)),
    ];
    for act in Activation::ALL {
        for prec in [Precision::F64, Precision::F32] {
            let name: &'static str =
                Box::leak(format!("mlp {} {}", act.name(), prec.name()).into_boxed_str());
            experts.push((name, Expert::Mlp(random_mlp(&[33, 65, 31, 7], act, prec, &mut rng))));
        }
    }
    for (name, e) in &experts {
        let g = GpuExpert::upload(&b, e).unwrap();
        for rows in [1, 5, 9, 64] {
            let x = rng.vec(rows * e.n_inputs(), 1.5);
            let tol = if e.precision() == Precision::F32 { common::F32_TOL } else { F64_TOL };
            let got = g.run(&b, &x, rows).unwrap();
            compare_rows(&format!("{name} rows {rows}"), &got, &e.run(&x, rows), tol);
            assert_eq!(g.run(&b, &x, rows).unwrap(), got, "{name}: GPU rerun differs");
        }
    }

    // Linear solve: random, singular, ill-conditioned and non-finite systems mixed.
    for n in [1, 2, 7, 33, 64] {
        let s = LinearSolve::new(n).unwrap();
        let e = Expert::LinearSolve(s.clone());
        let g = GpuExpert::upload(&b, &e).unwrap();
        let mut x = Vec::new();
        for k in 0..8 {
            let mut a = rng.vec(n * n, 1.0);
            match k {
                1 if n > 1 => (0..n).for_each(|j| a[n + j] = 2.0 * a[j]), // singular
                2 if n > 1 => (0..n).for_each(|j| a[n + j] = a[j] * (1.0 + 1e-15)), // ill-conditioned
                3 => a[n * n - 1] = f64::NAN,
                _ => {}
            }
            x.extend(a);
            x.extend(rng.vec(n, 1.0));
        }
        let got = g.run(&b, &x, 8).unwrap();
        compare_rows(&format!("linear solve n {n}"), &got, &e.run(&x, 8), F64_TOL);
        let detailed = g.solve_detailed(&b, &x, 8).unwrap();
        for (k, (g, c)) in detailed.iter().zip(s.run(&x, 8)).enumerate() {
            let (rg, rc) = (g.rcond, c.rcond);
            assert!(
                rg.to_bits() == rc.to_bits() || (rg - rc).abs() <= 1e-12 * rc.abs(),
                "n {n} system {k}: rcond GPU {rg:e} CPU {rc:e}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
