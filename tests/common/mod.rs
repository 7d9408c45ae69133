//! Shared test helpers: the tolerance policy, written once, and seeded inputs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

pub mod compose;

/// Relative error thresholds by precision (DESIGN.md).
pub const F32_TOL: f64 = 1e-5;
pub const BF16_TOL: f64 = 1e-2;

pub fn fixtures() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // A test binary carried to the GPU machine runs from a copy of the repository root
    // at another path.
    if built.exists() {
        built
    } else {
        PathBuf::from("tests/fixtures")
    }
}

/// ||out - ref|| / ||ref||, in f64.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        num += (o as f64 - r as f64).powi(2);
        den += (r as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Asserts rel_err < tol; on failure prints max/mean error and the first mismatches.
pub fn assert_close(what: &str, out: &[f32], reference: &[f32], tol: f64) {
    let err = rel_err(out, reference);
    if err < tol && out.iter().all(|v| v.is_finite()) {
        return;
    }
    let diffs: Vec<f64> = out.iter().zip(reference).map(|(&o, &r)| (o as f64 - r as f64).abs()).collect();
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    let first: Vec<String> = diffs
        .iter()
        .enumerate()
        .filter(|(i, d)| **d > tol * (reference[*i].abs() as f64).max(1e-6) || !out[*i].is_finite())
        .take(8)
        .map(|(i, _)| format!("[{i}] got {} want {}", out[i], reference[i]))
        .collect();
    panic!(
        "{what}: rel err {err:.3e} >= {tol:.1e} (max abs {max:.3e}, mean abs {mean:.3e}); first: {first:?}"
    );
}

/// Deterministic pseudo-random values in [-1, 1) (never zeros as test data).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = pimoe::sampling::Rng::new(seed);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A fresh, empty directory under cargo's per-target scratch space.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of a fixture model directory that a test may damage.
pub fn copy_fixture(model: &str, name: &str) -> PathBuf {
    let dst = scratch_dir(name);
    for e in std::fs::read_dir(fixtures().join(model)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// Logits of one sequence run from position 0 on a fresh cache.
pub fn fresh_logits(
    llm: &pimoe::llm::Llm<pimoe::backend::cpu::CpuBackend>,
    tokens: &[u32],
    which: pimoe::llm::Logits,
) -> Vec<f32> {
    let b = pimoe::backend::cpu::CpuBackend;
    let mut cache = llm.new_cache(&b, tokens.len());
    let mut table = Vec::new();
    cache.reserve(&mut table, tokens.len()).unwrap();
    let step = [pimoe::llm::SeqChunk { tokens, start: 0, block_table: &table, logits: which }];
    llm.forward(&b, &mut cache, &step).unwrap()
}

/// The CUDA backend the GPU tests run on: the GPU when a driver is present, else the
/// PTX emulator with its checks (`PIMOE_CUDA=emu` forces it). A failure to open
/// either fails the test: since the emulator exists, no GPU test skips.
pub fn cuda(test: &str) -> pimoe::backend::cuda::CudaBackend {
    match pimoe::backend::cuda::CudaBackend::gpu_or_emulator(0) {
        Ok(b) => b,
        Err(e) => panic!("{test}: no CUDA backend, neither a GPU nor the PTX emulator: {e}"),
    }
}

/// Prints why a test is skipped where `cargo test` shows it: straight to the
/// process's stderr, past libtest's capture of print!/eprint! (so a skipped GPU test
/// is visible in a plain run, not just with --nocapture).
pub fn skip(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {msg}");
}

/// `row` (a power-flow expert input for a grid of `max_buses`) with every branch
/// between bus positions 0..5 and the rest dropped: the grid split in two, as only an
/// encoded row can hold it (T2C refuses such a grid, naming a bus cut off from the
/// slack), so that the expert meets a singular Jacobian.
pub fn split_power_flow_row(row: &[f64], max_buses: usize) -> Vec<f64> {
    let mut row = row.to_vec();
    let at = |l: usize| 5 + 7 * max_buses + 6 * l;
    let kept: Vec<Vec<f64>> = (0..row[1] as usize)
        .map(|l| row[at(l)..at(l) + 6].to_vec())
        .filter(|b| (b[0] <= 4.0) == (b[1] <= 4.0))
        .collect();
    row[1] = kept.len() as f64;
    row[at(0)..].fill(0.0);
    for (l, b) in kept.iter().enumerate() {
        row[at(l)..at(l) + 6].copy_from_slice(b);
    }
    row
}

/// Rewrites model.safetensors, letting `edit` change one tensor's (dtype, shape, bytes).
pub fn rewrite(dir: &Path, edit: impl Fn(&str, &mut (Dtype, Vec<usize>, Vec<u8>))) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
    for (name, v) in st.tensors() {
        let mut t = (v.dtype(), v.shape().to_vec(), v.data().to_vec());
        edit(&name, &mut t);
        tensors.insert(name, t);
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}
