//! JSONL training data: one JSON object per line, read and checked before any
//! training starts. Every error names the file and the line; unknown fields are
//! errors (each target's row type denies them), blank lines are skipped, a file
//! without rows is an error.

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sampling::Rng;

/// Where a row came from.
#[derive(Clone, Debug)]
pub struct Origin {
    pub path: Arc<PathBuf>,
    /// 1-based.
    pub line: usize,
}

impl Origin {
    /// An error about this row.
    pub fn error(&self, msg: impl fmt::Display) -> Error {
        Error::format(self.path.as_path(), format!("line {}: {msg}", self.line))
    }
}

#[derive(Clone, Debug)]
pub struct Line<R> {
    pub at: Origin,
    pub row: R,
}

/// Reads every row of `path`.
pub fn read_jsonl<R: DeserializeOwned>(path: &Path) -> Result<Vec<Line<R>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let shared = Arc::new(path.to_path_buf());
    let mut rows = Vec::new();
    for (i, text) in std::io::BufReader::new(file).lines().enumerate() {
        let at = Origin { path: shared.clone(), line: i + 1 };
        let text = text.map_err(|e| at.error(format!("cannot read the line: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&text).map_err(|e| at.error(e))?;
        rows.push(Line { at, row });
    }
    if rows.is_empty() {
        return Err(Error::format(path, "no rows: the file is empty"));
    }
    Ok(rows)
}

/// Where the held-out validation rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Holdout {
    /// A separate file in the same format.
    File(PathBuf),
    /// This fraction of the data file's rows, chosen by the seed (0: none).
    Fraction(f64),
}

/// Training and validation rows.
pub struct Split<R> {
    pub train: Vec<Line<R>>,
    pub val: Vec<Line<R>>,
}

/// Added to the seed for the split's generator, so that the split, the initial
/// weights and the batch order draw from different streams.
const SPLIT_STREAM: u64 = 0x5eed_0001;

/// Reads `data` and the validation rows. A fraction takes round(f * rows) rows (at
/// least one when f > 0), chosen by a seeded shuffle and kept in file order.
pub fn load_split<R: DeserializeOwned>(data: &Path, holdout: &Holdout, seed: u64) -> Result<Split<R>> {
    let rows = read_jsonl::<R>(data)?;
    match holdout {
        Holdout::File(val) => Ok(Split { train: rows, val: read_jsonl(val)? }),
        Holdout::Fraction(f) => {
            if !(0.0..1.0).contains(f) {
                return Err(Error::Request(format!("--val-fraction {f} is not in [0, 1)")));
            }
            let n = rows.len();
            let k = if *f > 0.0 { ((f * n as f64).round() as usize).max(1) } else { 0 };
            if k >= n {
                return Err(Error::format(
                    data,
                    format!("{n} rows leave none to train on after holding out {k} for validation"),
                ));
            }
            let mut is_val = vec![false; n];
            for &i in &permutation(n, &mut Rng::new(seed.wrapping_add(SPLIT_STREAM)))[..k] {
                is_val[i] = true;
            }
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (row, v) in rows.into_iter().zip(is_val) {
                if v { &mut val } else { &mut train }.push(row);
            }
            Ok(Split { train, val })
        }
    }
}

/// A uniformly random order of 0..n (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Lemire's multiply-shift: an index in 0..=i from 32 random bits.
        let j = ((rng.next_u32() as u64 * (i as u64 + 1)) >> 32) as usize;
        p.swap(i, j);
    }
    p
}
