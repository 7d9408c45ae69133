//! Sampling (kernels/sampling.cu, backend/cpu/sampling.rs). The op is defined so that
//! both backends pick the same token bit for bit (integer weights, exact u64 sums; see
//! `sample_row`), so the GPU test demands exact equality on every row: no row is
//! excused for lying near a rounding boundary, because with this definition there
//! are none between the backends.
//!
//! - the CPU twin against a naive O(vocab^2) reference written straight from the
//!   definition (float compares instead of order keys, no sorting or selection);
//! - the weight function against f64 exp, and the order key;
//! - the semantics shared with the old sort-based `sampling::sample_from`;
//! - the GPU against the CPU at rows {1, 7, 64} x vocab {31, 4095, 49152, 151936},
//!   greedy and sampled rows mixed in one launch, plus degenerate rows.

use crate::harness::*;
use pimoe::backend::cpu::sampling::{key_value, order_key, sample_row, weight, MAX_VOCAB, NON_FINITE};
use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::{Backend, SAMPLE_PARAMS};
use pimoe::sampling::{Rng, SamplingParams};

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

/// Logits of one row in one of several styles: smooth, with ties, with -inf / -0
/// (NaN and +inf rows are `sample_row_degenerate_rows`'), peaked (a few tokens far above the rest, like a confident model).
fn row_logits(vocab: usize, style: usize, rng: &mut Rng) -> Vec<f32> {
    let mut normal = || (0..3).map(|_| rng.next_f32() * 2.0 - 1.0).sum::<f32>() * 2.0;
    let mut l: Vec<f32> = (0..vocab).map(|_| normal()).collect();
    match style % 4 {
        0 => {}
        // Coarse values: many ties everywhere, including at any top-k/top-p threshold
        // and (often) at the maximum.
        1 => l.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0),
        2 => {
            for (i, x) in l.iter_mut().enumerate() {
                match i % 11 {
                    3 | 5 => *x = f32::NEG_INFINITY,
                    7 => *x = -0.0,
                    9 => *x = 0.0,
                    _ => {}
                }
            }
        }
        _ => {
            for j in 0..vocab.min(5) {
                let i = (rng.next_u32() as usize) % vocab;
                l[i] = 8.0 + 2.0 * j as f32 + rng.next_f32();
            }
        }
    }
    l
}

/// Parameter sets (temperature, top_k, top_p); `vocab` for the k that switch off.
fn mode_params(mode: usize, vocab: usize) -> [f32; 3] {
    let v = vocab as f32;
    match mode % 13 {
        0 => [0.0, 0.0, 1.0],                // greedy
        1 => [1.0, 0.0, 1.0],                // temperature only
        2 => [0.7, 50.0, 1.0],               // top-k
        3 => [1.0, 0.0, 0.9],                // top-p
        4 => [0.8, 40.0, 0.95],              // both
        5 => [1.3, v, 1e-6],                 // k >= vocab is off; tiny p keeps the top
        6 => [0.5, 1.0, 1.0],                // k = 1 (ties at the max survive)
        7 => [1.0, (v - 1.0).max(1.0), 0.5], // k = vocab - 1
        8 => [2.0, (v / 2.0).floor(), 0.99],
        9 => [1e-3, 0.0, 1.0],  // very sharp
        10 => [1.0, 0.0, 0.0],  // top_p = 0: the most likely token(s)
        11 => [-1.0, 5.0, 0.5], // negative temperature is greedy
        _ => [1e-30, 0.0, 0.9], // z overflows: greedy fallback
    }
}

/// A draw u for row r: mostly uniform, sometimes the ends and invalid values.
fn draw(r: usize, rng: &mut Rng) -> f32 {
    match r % 17 {
        5 => 0.0,
        11 => 1.0 - f32::EPSILON / 2.0, // the largest f32 below 1
        13 => 1.0,                      // invalid: taken as 0
        _ => rng.next_f32(),
    }
}

// ---------------------------------------------------------------------------------
// The naive reference
// ---------------------------------------------------------------------------------

/// `sample_row`'s definition, step by step, the slow and obvious way: floats compared
/// as floats (-0 == +0 already), quadratic counts, no sort.
fn naive(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f32) -> u32 {
    let n = logits.len();
    if logits.iter().any(|x| x.is_nan() || *x == f32::INFINITY)
        || logits.iter().all(|&x| x == f32::NEG_INFINITY)
    {
        return NON_FINITE;
    }
    let c = logits;
    let mut am = 0;
    for i in 1..n {
        if c[i] > c[am] {
            am = i;
        }
    }
    if temperature.is_nan() || temperature <= 0.0 {
        return am as u32;
    }
    let inv = 1.0 / temperature;
    let zmax = c[am] * inv;
    if !zmax.is_finite() {
        return am as u32;
    }
    let w: Vec<u64> = c.iter().map(|&x| weight(x * inv - zmax) as u64).collect();
    let kept: Vec<bool> =
        (0..n).map(|i| top_k == 0 || top_k >= n || (0..n).filter(|&j| c[j] > c[i]).count() < top_k).collect();
    let mut surv = kept.clone();
    if top_p < 1.0 {
        let total: u64 = (0..n).filter(|&i| kept[i]).map(|i| w[i]).sum();
        let target = (top_p as f64 * total as f64).ceil().max(1.0) as u64;
        let mass = |v: f32| -> u64 { (0..n).filter(|&j| kept[j] && c[j] >= v).map(|j| w[j]).sum() };
        let tp = (0..n)
            .filter(|&i| kept[i] && mass(c[i]) >= target)
            .map(|i| c[i])
            .fold(f32::NEG_INFINITY, f32::max);
        surv = (0..n).map(|i| kept[i] && c[i] >= tp).collect();
    }
    let total: u64 = (0..n).filter(|&i| surv[i]).map(|i| w[i]).sum();
    let uu = if (0.0..1.0).contains(&u) { u } else { 0.0 };
    let target = (uu as f64 * total as f64).floor() as u64;
    let mut acc = 0;
    for i in 0..n {
        if surv[i] {
            acc += w[i];
            if acc > target {
                return i as u32;
            }
        }
    }
    panic!("naive: no token (total {total}, target {target})");
}

#[test]
fn sample_row_matches_naive_reference() {
    let mut rng = Rng::new(7);
    let mut cases = 0;
    for &vocab in &[1usize, 2, 3, 5, 31, 64, 200] {
        for style in 0..4 {
            for rep in 0..12 {
                let l = row_logits(vocab, style, &mut rng);
                for mode in 0..13 {
                    let [t, k, p] = mode_params(mode, vocab);
                    // Extra top-k values around the interesting spots.
                    let ks = [
                        k as usize,
                        1,
                        2,
                        vocab.saturating_sub(1),
                        vocab,
                        vocab + 3,
                        (rep * 7) % (vocab + 1),
                    ];
                    for (j, &k) in ks.iter().enumerate() {
                        let u = draw(rep * 13 + mode + j, &mut rng);
                        let want = naive(&l, t, k, p, u);
                        let got = sample_row(&l, t, k, p, u);
                        assert_eq!(
                            got, want,
                            "vocab {vocab} style {style} rep {rep}: t {t} k {k} p {p} u {u}: logits {l:?}"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    // Odd parameters: NaN temperature is greedy, NaN top_p is off, NaN u is 0.
    let l = row_logits(64, 0, &mut rng);
    for &(t, k, p, u) in &[
        (f32::NAN, 0, 0.5, 0.5),
        (1.0, 0, f32::NAN, 0.5),
        (1.0, 0, 0.5, f32::NAN),
        (1.0, 3, -2.0, 0.3),
        (1.0, 0, f32::NEG_INFINITY, 0.3),
        (1.0, 0, 2.0, -0.5),
        (f32::INFINITY, 0, 0.9, 0.3),
        (1e-38, 0, 1.0, 0.3),
    ] {
        assert_eq!(sample_row(&l, t, k, p, u), naive(&l, t, k, p, u), "t {t} k {k} p {p} u {u}");
        cases += 1;
    }
    eprintln!("sample_row_matches_naive_reference: {cases} cases");
}

#[test]
fn sample_row_degenerate_rows() {
    let nan = f32::NAN;
    let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
    // (logits, expected token for a sampled row with t = 1, u = 0.7)
    let rows: &[(&[f32], u32)] = &[
        (&[nan, nan, nan], NON_FINITE),
        (&[ninf, ninf], NON_FINITE),
        (&[1.0, inf, 3.0, inf], NON_FINITE),
        (&[nan, 2.0, ninf], NON_FINITE), // one NaN is enough
        (&[2.0, ninf], 0),               // only one token has weight
        (&[5.0], 0),
    ];
    for &(l, want) in rows {
        assert_eq!(sample_row(l, 1.0, 0, 0.9, 0.7), want, "{l:?}");
        assert_eq!(sample_row(l, 1.0, 0, 0.9, 0.7), naive(l, 1.0, 0, 0.9, 0.7), "{l:?}");
        // Greedy too: a broken row has no argmax worth taking.
        if want == NON_FINITE {
            assert_eq!(sample_row(l, 0.0, 0, 1.0, 0.0), NON_FINITE, "{l:?}");
        }
    }
    // Equal logits: uniform over all of them, drawn in index order.
    let l = [0.25f32; 8];
    for i in 0..8 {
        let u = (i as f32 + 0.5) / 8.0;
        assert_eq!(sample_row(&l, 1.0, 0, 1.0, u), i);
        // top_k = 1 keeps all eight (ties), top_p = 0.1 too.
        assert_eq!(sample_row(&l, 1.0, 1, 0.1, u), i);
    }
    // Greedy ties: the lowest index; -0 ties +0.
    assert_eq!(sample_row(&[1.0, 3.0, 3.0], 0.0, 0, 1.0, 0.0), 1);
    assert_eq!(sample_row(&[-1.0, -0.0, 0.0], 0.0, 0, 1.0, 0.0), 1);
    assert_eq!(sample_row(&[-1.0, 0.0, -0.0], 0.0, 0, 1.0, 0.0), 1);
}

#[test]
fn sample_weight_and_order_key() {
    assert_eq!(weight(0.0), 1 << 31);
    assert_eq!(weight(-0.0), 1 << 31);
    for d in [f32::NAN, f32::NEG_INFINITY, -22.001, -1e30] {
        assert_eq!(weight(d), 0, "weight({d})");
    }
    // Against f64 exp over [-22, 0]: within a few f32 roundings (relative), or the
    // floor's one unit plus one (absolute) in the tail.
    let mut prev = u32::MAX;
    for i in 0..=220_000 {
        let d = -(i as f32) * 1e-4;
        let w = weight(d) as f64;
        let e = (d as f64).exp() * 2f64.powi(31);
        assert!((w - e).abs() <= (1e-6 * e).max(2.0), "weight({d}) = {w}, exp gives {e}");
        // Non-increasing as d falls, up to a unit of rounding.
        assert!(weight(d) <= prev.saturating_add(1), "weight not monotone at {d}");
        prev = weight(d);
    }

    let xs = [f32::NEG_INFINITY, -1e30, -1.0, -1e-40, 0.0, 1e-40, 1.0, 1e30, f32::INFINITY];
    for p in xs.windows(2) {
        assert!(order_key(p[0]) < order_key(p[1]), "{} < {}", p[0], p[1]);
    }
    assert_eq!(order_key(-0.0), order_key(0.0));
    assert_eq!(order_key(f32::NAN), u32::MAX);
    assert_eq!(order_key(-f32::NAN), u32::MAX);
    assert!(order_key(f32::INFINITY) < u32::MAX);
    for &x in &xs {
        assert_eq!(key_value(order_key(x)).to_bits(), x.to_bits(), "{x}");
    }
    assert_eq!(key_value(order_key(-0.0)).to_bits(), 0);
}

/// Where the definitions meet, the new sampler keeps the old one's semantics: greedy
/// is `argmax`, and (no ties, top_p away from a boundary) the set of tokens that can
/// be drawn and their probabilities are those of `sample_from`. The draw order
/// differs, so tokens are compared as distributions over a sweep of u.
#[test]
fn sample_row_keeps_old_semantics() {
    let mut rng = Rng::new(11);
    let (vocab, sweep) = (40usize, 4_000usize);
    let mut compared = 0;
    for rep in 0..30 {
        // Distinct logits in [-2, 2]: every token has probability >= e^-4 / 40.
        let mut l: Vec<f32> = (0..vocab).map(|i| i as f32 * 0.1 - 2.0 + rng.next_f32() * 0.05).collect();
        for i in (1..vocab).rev() {
            l.swap(i, rng.next_u32() as usize % (i + 1));
        }
        assert_eq!(sample_row(&l, 0.0, 0, 1.0, 0.0), pimoe::sampling::argmax(&l));
        for &(t, k, p) in
            &[(1.0f32, 0usize, 1.0f32), (0.7, 5, 1.0), (1.0, 0, 0.6), (1.3, 17, 0.8), (1.0, 3, 0.9)]
        {
            // Skip a top-p within 1e-4 of a prefix boundary (the old sampler sums
            // normalized f32 probabilities; where they cross exactly is rounding).
            let inv = 1.0 / t as f64;
            let mut z: Vec<f64> = l.iter().map(|&x| x as f64 * inv).collect();
            z.sort_by(|a, b| b.total_cmp(a));
            if k > 0 {
                z.truncate(k);
            }
            let e: Vec<f64> = z.iter().map(|&x| (x - z[0]).exp()).collect();
            let s: f64 = e.iter().sum();
            let mut acc = 0.0;
            if p < 1.0
                && e.iter().any(|q| {
                    acc += q / s;
                    (acc - p as f64).abs() < 1e-4
                })
            {
                continue;
            }
            let params = SamplingParams { temperature: t, top_k: k, top_p: p, seed: 0 };
            let mut old = vec![0usize; vocab];
            let mut new = vec![0usize; vocab];
            for j in 0..sweep {
                let u = (j as f32 + 0.5) / sweep as f32;
                old[pimoe::sampling::sample_from(&l, &params, u) as usize] += 1;
                new[sample_row(&l, t, k, p, u) as usize] += 1;
            }
            for i in 0..vocab {
                assert_eq!(
                    old[i] > 0,
                    new[i] > 0,
                    "rep {rep} t {t} k {k} p {p}: token {i} drawable in one only"
                );
                let diff = (old[i] as f64 - new[i] as f64).abs() / sweep as f64;
                assert!(
                    diff <= 3.0 / sweep as f64,
                    "rep {rep} t {t} k {k} p {p}: token {i}: {old:?} vs {new:?}"
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 120, "only {compared} cases compared");
}

// ---------------------------------------------------------------------------------
// GPU against CPU
// ---------------------------------------------------------------------------------

/// The op on backend `b`; the output starts poisoned (u32::MAX) so an unwritten row fails.
fn run<B: Backend>(b: &B, logits: &[f32], params: &[f32], rows: usize, vocab: usize) -> Vec<u32> {
    let l = b.tensor_from(logits);
    let p = b.tensor_from(params);
    let mut out = b.index(&vec![u32::MAX; rows]);
    b.sample(&mut out, &l, &p, vocab);
    let got = b.read_index(&out);
    b.check().unwrap_or_else(|e| panic!("sample on {}: {e}", b.name()));
    got
}

/// Exact equality, with what is needed to see why a row differs.
fn compare(what: &str, got: &[u32], want: &[u32], logits: &[f32], params: &[f32], vocab: usize) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    let bad: Vec<String> = (0..want.len())
        .filter(|&r| got[r] != want[r])
        .take(6)
        .map(|r| {
            let p = &params[r * SAMPLE_PARAMS..(r + 1) * SAMPLE_PARAMS];
            let at = |i: u32| logits.get(r * vocab + i as usize).copied();
            format!(
                "row {r} params {p:?}: gpu {} (logit {:?}) cpu {} (logit {:?})",
                got[r],
                at(got[r]),
                want[r],
                at(want[r])
            )
        })
        .collect();
    let n = (0..want.len()).filter(|&r| got[r] != want[r]).count();
    assert!(bad.is_empty(), "{what}: {n} of {} rows differ; first: {bad:#?}", want.len());
}

#[test]
fn sample_gpu_matches_cpu() {
    let Some(gpu) = gpu("sample_gpu_matches_cpu") else { return };
    let mut rng = Rng::new(3);
    let mut rows_checked = 0;
    for &vocab in &[31usize, 4095, 49152, 151936] {
        for &rows in &[1usize, 7, 64] {
            // One launch per mode for a single row, a mix of modes otherwise.
            let launches = if rows == 1 { 13 } else { 2 };
            for launch in 0..launches {
                let mut logits = Vec::with_capacity(rows * vocab);
                let mut params = Vec::with_capacity(rows * SAMPLE_PARAMS);
                for r in 0..rows {
                    let i = launch * rows + r;
                    logits.extend(row_logits(vocab, i / 13 + launch, &mut rng));
                    let [t, k, p] = mode_params(i, vocab);
                    params.extend([t, k, p, draw(i, &mut rng)]);
                }
                let want = run(&CpuBackend, &logits, &params, rows, vocab);
                let got = run(&gpu, &logits, &params, rows, vocab);
                compare(
                    &format!("sample vocab {vocab} rows {rows} launch {launch}"),
                    &got,
                    &want,
                    &logits,
                    &params,
                    vocab,
                );
                if rows == 64 {
                    // Exact integer sums: the same token on every run, whatever the
                    // order of the shared-memory atomics.
                    let again = run(&gpu, &logits, &params, rows, vocab);
                    assert_eq!(again, got, "vocab {vocab}: a second GPU run differs");
                }
                rows_checked += rows;
            }
        }
    }
    eprintln!("sample_gpu_matches_cpu: {rows_checked} rows equal");
}

/// Rows that end early or sit on edges: all NaN, all -inf, +inf, all equal, vocab 1,
/// one dominant token, a vocab just over the warp-segment and block sizes.
#[test]
fn sample_gpu_edge_cases() {
    let Some(gpu) = gpu("sample_gpu_edge_cases") else { return };
    let mut rng = Rng::new(5);
    for &vocab in &[1usize, 2, 32, 33, 1023, 1025, 32 * 1024 + 1] {
        let mut logits = Vec::new();
        let mut params = Vec::new();
        let row_kinds = 8;
        for kind in 0..row_kinds {
            let mut l = row_logits(vocab, 0, &mut rng);
            match kind {
                0 => l.fill(f32::NAN),
                1 => l.fill(f32::NEG_INFINITY),
                2 => l[vocab / 2] = f32::INFINITY,
                3 => l.fill(1.5),
                4 => l[vocab - 1] = 100.0,
                5 => l.iter_mut().for_each(|x| *x = -x.abs() - 50.0), // all far below 0
                6 => l.iter_mut().for_each(|x| *x *= 1e-3),           // nearly flat
                _ => {}
            }
            logits.extend(l);
            let t = [1.0, 0.5, 1.0, 1.0, 0.7, 1.0, 1.0, 2.0][kind];
            let k = [0.0, 3.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0][kind];
            let p = [0.9, 1.0, 0.5, 0.3, 0.999, 1.0, 0.5, 1e-3][kind];
            params.extend([t, k, p, rng.next_f32()]);
        }
        let want = run(&CpuBackend, &logits, &params, row_kinds, vocab);
        let got = run(&gpu, &logits, &params, row_kinds, vocab);
        compare(&format!("sample edge cases vocab {vocab}"), &got, &want, &logits, &params, vocab);
        // A draw at every 1/64 of u on the flat row covers the whole walk.
        let l: Vec<f32> = (0..vocab).map(|_| 0.5).collect();
        let logits: Vec<f32> = (0..64).flat_map(|_| l.iter().copied()).collect();
        let params: Vec<f32> = (0..64).flat_map(|j| [1.0, 0.0, 1.0, j as f32 / 64.0]).collect();
        let want = run(&CpuBackend, &logits, &params, 64, vocab);
        let got = run(&gpu, &logits, &params, 64, vocab);
        compare(&format!("sample flat sweep vocab {vocab}"), &got, &want, &logits, &params, vocab);
    }
    const { assert!(MAX_VOCAB >= 151936) };
}
