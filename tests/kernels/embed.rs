//! embed and gather_rows (kernels/embed.cu) against the CPU: pure copies, so the
//! results must be bitwise equal.

use crate::harness::*;
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::Backend;
use pimoe::model::safetensors::{HostData, HostTensor};
use pimoe::sampling::Rng;

const ROWS: [usize; 3] = [1, 31, 33];
/// Odd (scalar path), multiples of 4 (float4 path), and real hidden sizes.
const DIMS: [usize; 5] = [31, 64, 576, 896, 4095];

/// Bitwise equality, with the backend's sticky error checked first.
fn check_exact<B: Backend>(what: &str, b: &B, got: &B::Tensor, want: &[f32]) {
    let got = b.to_host(got);
    b.check().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: output length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: first difference at [{i}]: got {} want {}", got[i], want[i]);
    }
}

fn rand_ids(n: usize, below: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut ids: Vec<u32> = (0..n).map(|_| rng.next_u32() % below as u32).collect();
    // The table's edges, and a repeat, whenever there is room.
    if n >= 3 {
        ids[0] = 0;
        ids[1] = below as u32 - 1;
        ids[2] = ids[1];
    }
    ids
}

/// A (vocab, dim) bf16 table of random values.
fn bf16_table(vocab: usize, dim: usize, seed: u64) -> HostTensor {
    let bits = rand_vec(vocab * dim, seed).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    HostTensor { name: "embed_tokens".into(), shape: vec![vocab, dim], data: HostData::Bf16(bits) }
}

fn embed_on<B: Backend>(b: &B, table: &HostTensor, ids: &[u32], dim: usize) -> B::Tensor {
    let w = b.upload(table).expect("upload the table");
    let mut out = poisoned(b, ids.len() * dim);
    b.embed(&mut out, &w, &b.index(ids), dim);
    out
}

fn gather_on<B: Backend>(b: &B, x: &[f32], rows: &[u32], dim: usize) -> B::Tensor {
    let mut out = poisoned(b, rows.len() * dim);
    b.gather_rows(&mut out, &b.tensor_from(x), &b.index(rows), dim);
    out
}

#[test]
fn embed_matches_cpu() {
    let Some(g) = gpu("embed_matches_cpu") else { return };
    let vocab = 101;
    for (k, &dim) in DIMS.iter().enumerate() {
        let table = bf16_table(vocab, dim, 10 + k as u64);
        for &n in &ROWS {
            let ids = rand_ids(n, vocab, (100 * n + dim) as u64);
            let want = CpuBackend.to_host(&embed_on(&CpuBackend, &table, &ids, dim));
            let got = embed_on(&g, &table, &ids, dim);
            check_exact(&format!("embed n={n} dim={dim}"), &g, &got, &want);
        }
    }
}

/// An id outside the table must not read out of bounds: its row comes back as zeros
/// and the other rows are untouched.
#[test]
fn embed_guards_bad_ids() {
    let Some(g) = gpu("embed_guards_bad_ids") else { return };
    let (vocab, dim) = (17, 64);
    let table = bf16_table(vocab, dim, 7);
    let ids = [3, vocab as u32, u32::MAX, vocab as u32 - 1];
    let got = g.to_host(&embed_on(&g, &table, &ids, dim));
    g.check().unwrap();
    let want_ok = CpuBackend.to_host(&embed_on(&CpuBackend, &table, &[3, vocab as u32 - 1], dim));
    assert_eq!(&got[..dim], &want_ok[..dim], "row 0");
    assert!(got[dim..3 * dim].iter().all(|&v| v == 0.0), "out-of-range rows are zeros");
    assert_eq!(&got[3 * dim..], &want_ok[dim..], "row 3");
}

#[test]
fn gather_rows_matches_cpu() {
    let Some(g) = gpu("gather_rows_matches_cpu") else { return };
    for &dim in &DIMS {
        for &n_in in &ROWS {
            let x = rand_vec(n_in * dim, (7 * n_in + dim) as u64);
            for &n in &ROWS {
                let rows = rand_ids(n, n_in, (n * 1000 + n_in * 10 + dim) as u64);
                let want = CpuBackend.to_host(&gather_on(&CpuBackend, &x, &rows, dim));
                let got = gather_on(&g, &x, &rows, dim);
                check_exact(&format!("gather_rows n={n} from {n_in} dim={dim}"), &g, &got, &want);
            }
        }
    }
}

#[test]
fn gather_rows_guards_bad_rows() {
    let Some(g) = gpu("gather_rows_guards_bad_rows") else { return };
    let (n_in, dim) = (5, 33);
    let x = rand_vec(n_in * dim, 3);
    let got = g.to_host(&gather_on(&g, &x, &[4, 5, u32::MAX], dim));
    g.check().unwrap();
    assert_eq!(&got[..dim], &x[4 * dim..], "row 0");
    assert!(got[dim..].iter().all(|&v| v == 0.0), "out-of-range rows are zeros");
}
