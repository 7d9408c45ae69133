//! The figures a run prints at the end: for routers the loss, accuracy and each
//! class's precision and recall; for regressions the loss, RMSE and the largest
//! absolute and relative errors, in the data's own units.

use std::fmt;

/// One class's counts over a set of examples.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassStats {
    pub name: String,
    /// Examples of this class.
    pub support: usize,
    /// Examples predicted as this class.
    pub predicted: usize,
    /// Examples of this class predicted as it.
    pub correct: usize,
}

impl ClassStats {
    /// None when nothing was predicted as this class.
    pub fn precision(&self) -> Option<f64> {
        (self.predicted > 0).then(|| self.correct as f64 / self.predicted as f64)
    }
    /// None when no example has this class.
    pub fn recall(&self) -> Option<f64> {
        (self.support > 0).then(|| self.correct as f64 / self.support as f64)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClassReport {
    pub examples: usize,
    /// The training loss (with its class weights) over these examples.
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<ClassStats>,
}

impl ClassReport {
    /// From (true class, predicted class) pairs.
    pub fn new(names: &[String], loss: f64, pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut classes: Vec<ClassStats> = names
            .iter()
            .map(|n| ClassStats { name: n.clone(), support: 0, predicted: 0, correct: 0 })
            .collect();
        let (mut examples, mut right) = (0, 0);
        for (truth, pred) in pairs {
            examples += 1;
            classes[truth].support += 1;
            classes[pred].predicted += 1;
            if truth == pred {
                classes[truth].correct += 1;
                right += 1;
            }
        }
        ClassReport { examples, loss, accuracy: right as f64 / examples.max(1) as f64, classes }
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

impl fmt::Display for ClassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "loss {:.6}, accuracy {:.4} over {} examples", self.loss, self.accuracy, self.examples)?;
        let w = self.classes.iter().map(|c| c.name.len()).max().unwrap_or(0).max(5);
        write!(
            f,
            "  {:w$}  {:>9}  {:>9}  {:>9}  {:>9}",
            "class", "support", "predicted", "precision", "recall"
        )?;
        for c in &self.classes {
            write!(
                f,
                "\n  {:w$}  {:>9}  {:>9}  {:>9}  {:>9}",
                c.name,
                c.support,
                c.predicted,
                opt(c.precision()),
                opt(c.recall())
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegressionReport {
    pub rows: usize,
    /// The training loss: mean squared error of the standardised outputs.
    pub loss: f64,
    /// Root mean squared error over every output of every row, in data units.
    pub rmse: f64,
    pub max_abs: f64,
    /// max |y - t| / |t| over the elements whose target is not zero.
    pub max_rel: f64,
}

impl RegressionReport {
    /// Predictions y and targets t (rows, n) in data units, the loss measured in units
    /// of `scale` (n): the standard deviations the targets were trained in.
    pub fn scaled(y: &[f64], t: &[f64], rows: usize, scale: &[f64]) -> Self {
        let n = scale.len();
        let sq: f64 = y.iter().zip(t).enumerate().map(|(i, (a, b))| ((a - b) / scale[i % n]).powi(2)).sum();
        Self::new(sq / y.len().max(1) as f64, y, t, rows)
    }

    /// Predictions y and targets t (rows, n), in data units, and the loss to report.
    pub fn new(loss: f64, y: &[f64], t: &[f64], rows: usize) -> Self {
        let (mut sq, mut max_abs, mut max_rel) = (0f64, 0f64, 0f64);
        for (&a, &b) in y.iter().zip(t) {
            let d = (a - b).abs();
            sq += d * d;
            max_abs = max_abs.max(d);
            if b != 0.0 {
                max_rel = max_rel.max(d / b.abs());
            }
        }
        let rmse = (sq / y.len().max(1) as f64).sqrt();
        RegressionReport { rows, loss, rmse, max_abs, max_rel }
    }
}

impl fmt::Display for RegressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss {:.6e}, RMSE {:.6e}, max abs error {:.6e}, max relative error {:.6e} over {} rows",
            self.loss, self.rmse, self.max_abs, self.max_rel, self.rows
        )
    }
}

/// A finished run's figures.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Class(ClassReport),
    Regression(RegressionReport),
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Class(r) => r.fmt(f),
            Report::Regression(r) => r.fmt(f),
        }
    }
}
