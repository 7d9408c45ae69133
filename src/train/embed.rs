//! The piern router's first layer: a token-embedding table (vocab, E) and the mean
//! of the rows of a text's tokens. The mean is summed in f64 in token order and
//! rounded once, as the runtime's running mean (`RouterState`) computes it.
//!
//! A batch touches few of the table's rows, so the backward pass returns gradients
//! for those rows only and Adam moves only them (`Adam::update_rows`).

use super::adam::{Adam, Param};
use super::float::Float;
use super::init::normal;
use crate::sampling::Rng;

#[derive(Clone, Debug)]
pub struct EmbedMean<T> {
    pub vocab: usize,
    pub dim: usize,
    /// (vocab, dim)
    pub table: Param<T>,
}

/// Gradients for the rows a batch touched.
#[derive(Clone, Debug)]
pub struct RowGrad<T> {
    /// Distinct token ids, ascending.
    pub rows: Vec<u32>,
    /// (rows.len(), dim)
    pub grad: Vec<T>,
}

impl<T: Float> EmbedMean<T> {
    /// `nn.Embedding`'s default: standard normal values.
    pub fn init(vocab: usize, dim: usize, rng: &mut Rng) -> Self {
        EmbedMean { vocab, dim, table: Param::new(normal(rng, vocab * dim)) }
    }

    /// texts (each a non-empty list of ids below vocab) -> means (texts, dim).
    pub fn forward(&self, texts: &[&[u32]]) -> Vec<T> {
        let d = self.dim;
        let mut out = Vec::with_capacity(texts.len() * d);
        let mut sum = vec![0f64; d];
        for ids in texts {
            assert!(!ids.is_empty(), "EmbedMean: the mean of no tokens");
            sum.iter_mut().for_each(|s| *s = 0.0);
            for &t in *ids {
                let row = &self.table.value[t as usize * d..(t as usize + 1) * d];
                sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x.to_f64());
            }
            let n = ids.len() as f64;
            out.extend(sum.iter().map(|&s| T::from_f64(s / n)));
        }
        out
    }

    /// From dmean (texts, dim): each token's row gets dmean / len for every time it
    /// occurs, accumulated over texts and tokens in order.
    pub fn backward(&self, texts: &[&[u32]], dmean: &[T]) -> RowGrad<T> {
        let d = self.dim;
        assert_eq!(dmean.len(), texts.len() * d, "EmbedMean::backward: dmean is not (texts, dim)");
        let mut rows: Vec<u32> = texts.iter().flat_map(|t| t.iter().copied()).collect();
        rows.sort_unstable();
        rows.dedup();
        let mut grad = vec![T::default(); rows.len() * d];
        for (ids, g) in texts.iter().zip(dmean.chunks_exact(d)) {
            let inv = T::from_f64(1.0 / ids.len() as f64);
            for t in *ids {
                let k = rows.binary_search(t).expect("collected above");
                grad[k * d..(k + 1) * d].iter_mut().zip(g).for_each(|(a, &gi)| *a += gi * inv);
            }
        }
        RowGrad { rows, grad }
    }

    /// One sparse Adam update of the touched rows (after `adam.tick()`).
    pub fn update(&mut self, adam: &Adam, g: &RowGrad<T>) {
        adam.update_rows(&mut self.table, self.dim, &g.rows, &g.grad);
    }
}
