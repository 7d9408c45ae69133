//! Choosing the next token from a logits row: greedy, or temperature with top-k and
//! top-p, driven by a seeded generator so a (seed, logits) pair always gives the
//! same token on every machine.

use crate::backend::SAMPLE_PARAMS;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1 means no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Request(format!("temperature must be >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Request(format!("top-p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

/// PCG32 (O'Neill, https://www.pcg-random.org): small, fast, and its output is
/// fixed by its definition, unlike a library RNG whose stream may change between
/// versions.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    inc: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut r = Rng { state: 0, inc: (seed << 1) | 1 };
        r.next_u32();
        r.state = r.state.wrapping_add(seed ^ 0x853c_49e6_748f_ea9b);
        r.next_u32();
        r
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1) with 24 bits, exactly representable in f32.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Sampler { params, rng })
    }

    /// This step's row of parameters for `Backend::sample`: the request's settings
    /// and a fresh uniform draw (none is drawn for greedy decoding).
    pub fn next_params(&mut self) -> [f32; SAMPLE_PARAMS] {
        let p = &self.params;
        let u = if p.temperature == 0.0 { 0.0 } else { self.rng.next_f32() };
        [p.temperature, p.top_k as f32, p.top_p, u]
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let [t, k, p, u] = self.next_params();
        crate::backend::cpu::sampling::sample_row(logits, t, k as usize, p, u)
    }
}

/// Index of the largest value; the first one on ties, as torch.argmax does.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Temperature, then top-k, then top-p over the survivors, then the token whose
/// cumulative probability first exceeds `u`.
pub fn sample_from(logits: &[f32], p: &SamplingParams, u: f32) -> u32 {
    let mut cand: Vec<(u32, f32)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, l / p.temperature)).collect();
    // Descending by logit, ties by id, so the order (and the draw) is deterministic.
    cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        cand.truncate(p.top_k);
    }
    let max = cand[0].1;
    let mut probs: Vec<f32> = cand.iter().map(|&(_, l)| (l - max).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                acc += q;
                acc >= p.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        let kept: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= kept);
    }
    let mut acc = 0.0;
    for (i, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return cand[i].0;
        }
    }
    cand[probs.len() - 1].0
}
