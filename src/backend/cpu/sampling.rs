//! Token sampling: the reference for kernels/sampling.cu, and what `Sampler` uses.
//!
//! `sample_row` defines the op. The definition is chosen so that the CUDA kernel can
//! compute exactly the same token, not just one within rounding of it: orders and ties
//! are integer compares of order keys, weights are integers from our own exp (plain
//! round-to-nearest f32 operations, repeated one for one in the kernel), and every sum
//! is an exact u64. So CPU and GPU agree bit for bit on every row, and the GPU result
//! does not depend on the order of its parallel sums.

use rayon::prelude::*;

use crate::backend::SAMPLE_PARAMS;

/// The largest vocabulary the op accepts: weights sum to at most vocab * 2^31, which
/// must stay below 2^53 so that the f64 products with top_p and u are exact enough to
/// be the same on both backends (and 2^22 tokens is far beyond any real vocabulary).
pub const MAX_VOCAB: usize = 1 << 22;

/// What `sample_row` gives for a row with a NaN or +inf logit, or none above -inf
/// (kernels/sampling.cu's SAMPLE_NON_FINITE); never a token id, as the vocabulary is
/// at most `MAX_VOCAB`.
pub const NON_FINITE: u32 = u32::MAX;

/// out (rows) = one token per row of logits (rows, vocab), `sample_row` of each row
/// with its params (rows, SAMPLE_PARAMS) = [temperature, top_k, top_p, u]. top_k is
/// read as `top_k as usize` (truncating; negative and NaN are 0 = off).
pub fn sample(out: &mut [u32], logits: &[f32], params: &[f32], vocab: usize) {
    assert!(logits.len() >= out.len() * vocab, "sample: logits shorter than rows * vocab");
    assert!(params.len() >= out.len() * SAMPLE_PARAMS, "sample: params shorter than rows * {SAMPLE_PARAMS}");
    out.par_iter_mut().enumerate().for_each(|(r, o)| {
        let p = &params[r * SAMPLE_PARAMS..(r + 1) * SAMPLE_PARAMS];
        *o = sample_row(&logits[r * vocab..(r + 1) * vocab], p[0], p[1] as usize, p[2], p[3]);
    });
}

/// One token from one row of logits (vocab), by this definition, which the CUDA
/// kernel `sample_f32` implements exactly:
///
/// 1. **Order.** Logits are compared by `order_key`: as floats, except that NaN is
///    above +inf and -0 equals +0. The order is that of the logits, not of the scaled
///    values below (the same order, except that scaling can round two different
///    logits to one value; ours keeps them apart).
/// 2. **Non-finite.** If the largest key is NaN's or +inf's (some logit is NaN or
///    +inf), or -inf's (no logit is above -inf), the row has no meaningful token:
///    the result is `NON_FINITE`, whatever the parameters. A model that gives such
///    logits is broken (NaN weights, an overflow), and a token drawn from them would
///    pass its breakage off as text.
/// 2b. **Greedy.** If `temperature <= 0` (or NaN), the token is the argmax: the lowest
///    index among equal maxima, as torch.argmax.
/// 3. **Scale.** Otherwise z_i = logit_i * (1 / temperature), the reciprocal rounded
///    to f32 first (one multiply instead of a division per element), and
///    zmax = max_logit * (1 / temperature). If zmax is not finite (a temperature so
///    small that it overflows), the token is the argmax of step 2b.
/// 4. **Top-k.** If 0 < top_k < vocab: keep i iff key_i >= T_k, T_k the top_k-th
///    largest key counting repeats. Ties at T_k are all kept, so more than top_k
///    tokens may survive.
/// 5. **Weights.** w_i = `weight(z_i - zmax)` = floor(exp(z_i - zmax) * 2^31), an
///    integer: the largest logit weighs 2^31, and a token more than about 21.5 below
///    it (in z) weighs 0 and is never drawn. W = sum of w over kept tokens, in u64.
/// 6. **Top-p.** If top_p < 1 (NaN is off): target = max(1, ceil(top_p * W)) with the
///    product in f64; T_p = the largest key v such that the kept tokens with
///    key >= v weigh >= target in total; keep the kept tokens with key >= T_p. That is
///    the smallest set of most likely tokens reaching top_p of the mass, ties at the
///    threshold all kept; top_p <= 0 keeps just the most likely token(s).
/// 7. **Draw.** W' = sum of w over survivors; target = floor(u * W') in f64, with u
///    outside [0, 1) (or NaN) taken as 0. Walk the survivors in ascending index
///    order, summing w; the token is the first whose running sum exceeds the target.
///    One always does (u < 1 and W' >= 2^31 keep the target below W'), and it has
///    w > 0.
///
/// Against the old sort-based `sampling::sample_from`: the same in greedy mode
/// (on finite rows), in top-k when there
/// are no ties at the k-th value, and in the top-p set (the same smallest prefix
/// reaching top_p, plus our ties). It differs in that (a) ties at a threshold are all
/// kept; (b) the draw walks survivors in index order, not in descending probability,
/// so a given u picks a different token though each token keeps its probability;
/// (c) weights are integers, so tokens below about e^-21.5 of the most likely one
/// are never drawn, and the rest are quantized to 2^-31 of its weight; (d) z uses the
/// rounded reciprocal of the temperature.
pub fn sample_row(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f32) -> u32 {
    let n = logits.len();
    assert!(n > 0 && n <= MAX_VOCAB, "sample_row: vocab {n} outside 1..={MAX_VOCAB}");

    let (mut argmax, mut best_key) = (0, order_key(logits[0]));
    for (i, &l) in logits.iter().enumerate().skip(1) {
        let k = order_key(l);
        if k > best_key {
            (argmax, best_key) = (i, k);
        }
    }
    if best_key >= order_key(f32::INFINITY) || best_key == order_key(f32::NEG_INFINITY) {
        return NON_FINITE;
    }
    // Negated so that a NaN temperature is greedy.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(temperature > 0.0) {
        return argmax as u32;
    }
    let inv_t = 1.0 / temperature;
    let zmax = key_value(best_key) * inv_t;
    if !zmax.is_finite() {
        return argmax as u32;
    }
    let w = |l: f32| weight(l * inv_t - zmax);

    let mut cut = 0u32;
    if top_k > 0 && top_k < n {
        let mut keys: Vec<u32> = logits.iter().map(|&l| order_key(l)).collect();
        let (_, kth, _) = keys.select_nth_unstable_by(top_k - 1, |a, b| b.cmp(a));
        cut = *kth;
    }

    if top_p < 1.0 {
        // (key, weight) of the kept tokens that weigh anything: the others change no
        // sum, and the threshold found always has weight, so they cannot matter.
        let mut cand: Vec<(u32, u32)> = logits
            .iter()
            .map(|&l| (order_key(l), l))
            .filter(|&(k, _)| k >= cut)
            .map(|(k, l)| (k, w(l)))
            .filter(|&(_, wi)| wi > 0)
            .collect();
        let total: u64 = cand.iter().map(|&(_, wi)| wi as u64).sum();
        let target = top_p_target(top_p, total);
        cand.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
        // The first key where the running sum reaches the target: every larger key
        // ends a prefix short of it, and this one's whole tie group is kept.
        let mut acc = 0u64;
        for &(k, wi) in &cand {
            acc += wi as u64;
            if acc >= target {
                cut = k;
                break;
            }
        }
    }

    let survivor = |l: f32| if order_key(l) >= cut { w(l) as u64 } else { 0 };
    let total: u64 = logits.iter().map(|&l| survivor(l)).sum();
    let target = draw_target(u, total);
    let mut acc = 0u64;
    for (i, &l) in logits.iter().enumerate() {
        acc += survivor(l);
        if acc > target {
            return i as u32;
        }
    }
    unreachable!("sample_row: the draw's target {target} is below the survivors' weight {total}")
}

/// Order-preserving u32 key of a logit: `order_key(a) < order_key(b)` iff a < b as
/// floats, with -0 taken as +0, and NaN above everything (the largest key), so that
/// one NaN in a row shows in its maximum.
pub fn order_key(x: f32) -> u32 {
    if x.is_nan() {
        return u32::MAX;
    }
    let mut b = x.to_bits();
    if b == 0x8000_0000 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The float a key stands for (-0 comes back as +0, NaN as a NaN).
pub fn key_value(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}

/// floor(exp(d) * 2^31) for d <= 0, as an integer in units of 2^-31 of the largest
/// token's weight; 0 below d = -22 (where it would round to 0 anyway), for NaN and
/// for -inf.
///
/// exp(d) = 2^n * p(r), n = round_ties_even(d * log2 e), r = d - n ln 2 with ln 2
/// split in two (n * LN2_HI is exact), p the degree-7 Taylor polynomial (relative
/// error under 1e-8 for |r| <= ln2 / 2). Every operation is one IEEE f32 multiply,
/// add or subtract in a fixed order, and the constants are given as bits, so that
/// the kernel (which spells them the same and uses non-contracting intrinsics)
/// computes the same integer.
pub fn weight(d: f32) -> u32 {
    if d.is_nan() || d < -22.0 {
        return 0;
    }
    const LOG2E: u32 = 0x3fb8_aa3b;
    const LN2_HI: u32 = 0x3f31_8000; // 0.693359375
    const LN2_LO: u32 = 0xb95e_8083; // ln 2 - LN2_HI
                                     // 1/7!, 1/6!, .., 1/2!, 1/1!, 1/0!, Horner order.
    const TAYLOR: [u32; 8] = [
        0x3950_0d01,
        0x3ab6_0b61,
        0x3c08_8889,
        0x3d2a_aaab,
        0x3e2a_aaab,
        0x3f00_0000,
        0x3f80_0000,
        0x3f80_0000,
    ];
    let f = f32::from_bits;
    let n = (d * f(LOG2E)).round_ties_even(); // in [-32, 0]
    let r = (d - n * f(LN2_HI)) - n * f(LN2_LO);
    let mut p = f(TAYLOR[0]);
    for &c in &TAYLOR[1..] {
        p = p * r + f(c);
    }
    let scale = f(((127 + 31 + n as i32) as u32) << 23); // 2^(n+31)
    (p * scale) as u32
}

/// The top-p cut's target in weight units: max(1, ceil(top_p * total)).
pub fn top_p_target(top_p: f32, total: u64) -> u64 {
    let x = (top_p as f64 * total as f64).ceil();
    if x >= 1.0 {
        x as u64
    } else {
        1
    }
}

/// The draw's target: floor(u * total), u outside [0, 1) (or NaN) taken as 0.
pub fn draw_target(u: f32, total: u64) -> u64 {
    let u = if (0.0..1.0).contains(&u) { u } else { 0.0 };
    (u as f64 * total as f64).floor() as u64
}
