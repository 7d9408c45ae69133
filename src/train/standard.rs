//! Standardisation of inputs and targets during training, folded back into the
//! saved weights afterwards (`Net::fold_input`, `Net::fold_output`), so that the
//! runtime reads raw numbers.

use super::float::Float;

/// Per-column mean and standard deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct Standard {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standard {
    /// Over rows x (rows, cols), summed in f64 in row order. A constant column keeps
    /// a scale of 1 (it carries no information to rescale).
    pub fn fit<X: Copy + Into<f64>>(x: &[X], cols: usize) -> Self {
        let rows = x.len() / cols.max(1);
        let mut mean = vec![0f64; cols];
        for row in x.chunks_exact(cols) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v.into());
        }
        mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
        let mut var = vec![0f64; cols];
        for row in x.chunks_exact(cols) {
            var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), m)| *s += (v.into() - m).powi(2));
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / rows.max(1) as f64).sqrt();
                if sd > 1e-12 {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Standard { mean, std }
    }

    /// (x - mean) / std, in T.
    pub fn apply<X: Copy + Into<f64>, T: Float>(&self, x: &[X]) -> Vec<T> {
        let cols = self.mean.len();
        x.chunks_exact(cols)
            .flat_map(|row| {
                row.iter().zip(&self.mean).zip(&self.std).map(|((&v, m), s)| T::from_f64((v.into() - m) / s))
            })
            .collect()
    }
}
