//! Dense linear systems A x = b, n <= 64, in f64: LU factorisation with partial
//! pivoting, batched over independent systems. The readable reference for
//! `lu_solve_f64` in kernels/expert_f64.cu, which runs the same operations in the
//! same order (see below), so both sides produce the same bits and the same errors.
//!
//! A system that cannot be trusted is an error value, never a panic or garbage:
//! - a non-finite entry in A or b: `non-finite input: A[5]` (first such index);
//! - an exactly zero pivot: `singular: pivot 0 at column 3`;
//! - a reciprocal condition number estimate `rcond = 1 / (||A||_1 ||A^-1||_1)` below
//!   `min_rcond` (default [`DEFAULT_MIN_RCOND`] = 1e-12, i.e. condition number above
//!   1e12, where the forward error bound ~ n u / rcond passes ~1e-4 relative):
//!   `ill-conditioned: reciprocal condition estimate 3.1e-17 < 1.0e-12`;
//! - a solution that overflowed: `non-finite solution (overflow)`.
//!
//! ||A^-1||_1 is estimated from the LU factors with Hager's method as refined by
//! Higham (N. J. Higham, "FORTRAN codes for estimating the one-norm of a real or
//! complex matrix", ACM TOMS 14(4), 1988; LAPACK's xLACN2 / xGECON): at most five
//! solves with A and four with A^T plus Higham's alternating test vector. The
//! estimate is a lower bound, in practice within a factor of a few of the true norm.
//!
//! Operation order (mirrored in the kernel): pivot = the first row with the largest
//! |a[i][k]|; rows are swapped in place; l = a[i][k] / pivot; a[i][j] = fma(-l,
//! a[k][j], a[i][j]). Triangular solves are column oriented: for each k in turn,
//! v[i] = fma(-a[i][k], v[k], v[i]) for the rows it affects. Sums (1-norms) run in
//! index order with plain additions.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// The largest system the solver (and the one-block-per-system kernel) takes.
pub const MAX_N: usize = 64;

/// Systems with a smaller reciprocal condition estimate are refused.
pub const DEFAULT_MIN_RCOND: f64 = 1e-12;

/// Why a system was not solved. `Display` gives the message the expert returns.
#[derive(Clone, Debug, PartialEq)]
pub enum SolveError {
    NonFiniteA { index: usize },
    NonFiniteB { index: usize },
    Singular { column: usize },
    IllConditioned { rcond: f64, min_rcond: f64 },
    Overflow,
}

impl std::fmt::Display for SolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SolveError::NonFiniteA { index } => write!(f, "non-finite input: A[{index}]"),
            SolveError::NonFiniteB { index } => write!(f, "non-finite input: b[{index}]"),
            SolveError::Singular { column } => write!(f, "singular: pivot 0 at column {column}"),
            SolveError::IllConditioned { rcond, min_rcond } => {
                write!(f, "ill-conditioned: reciprocal condition estimate {rcond:.1e} < {min_rcond:.1e}")
            }
            SolveError::Overflow => write!(f, "non-finite solution (overflow)"),
        }
    }
}

impl std::error::Error for SolveError {}

/// Status codes of `lu_solve_f64` (LU_* in kernels/expert_f64.cu).
pub(crate) mod status {
    pub const OK: u32 = 0;
    pub const NON_FINITE_A: u32 = 1;
    pub const NON_FINITE_B: u32 = 2;
    pub const SINGULAR: u32 = 3;
    pub const ILL_CONDITIONED: u32 = 4;
    pub const OVERFLOW: u32 = 5;
}

impl SolveError {
    /// The kernel's (code, info, rcond) as an error; None for success.
    pub(crate) fn from_status(code: u32, info: u32, rcond: f64, min_rcond: f64) -> Option<Self> {
        let info = info as usize;
        Some(match code {
            status::OK => return None,
            status::NON_FINITE_A => SolveError::NonFiniteA { index: info },
            status::NON_FINITE_B => SolveError::NonFiniteB { index: info },
            status::SINGULAR => SolveError::Singular { column: info },
            status::ILL_CONDITIONED => SolveError::IllConditioned { rcond, min_rcond },
            status::OVERFLOW => SolveError::Overflow,
            // The kernel writes no other code; if it ever did, the row is still an error.
            _ => SolveError::Overflow,
        })
    }
}

/// One system's outcome with its condition estimate (NaN where none was computed).
#[derive(Clone, Debug, PartialEq)]
pub struct Solved {
    pub x: std::result::Result<Vec<f64>, SolveError>,
    pub rcond: f64,
}

/// The expert: inputs of one row are A (n, n) row-major then b (n); the output is x.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSolve {
    n: usize,
    min_rcond: f64,
}

impl LinearSolve {
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 || n > MAX_N {
            return Err(Error::Request(format!("linear solve: n = {n} is outside 1..={MAX_N}")));
        }
        Ok(LinearSolve { n, min_rcond: DEFAULT_MIN_RCOND })
    }

    /// Refuse systems whose reciprocal condition estimate is below `min_rcond`.
    pub fn with_min_rcond(mut self, min_rcond: f64) -> Self {
        self.min_rcond = min_rcond;
        self
    }

    pub fn n(&self) -> usize {
        self.n
    }
    pub fn min_rcond(&self) -> f64 {
        self.min_rcond
    }
    pub fn n_inputs(&self) -> usize {
        self.n * self.n + self.n
    }
    pub fn n_outputs(&self) -> usize {
        self.n
    }

    /// Solves A x = b; a (n, n) row-major, b (n).
    pub fn solve(&self, a: &[f64], b: &[f64]) -> std::result::Result<Vec<f64>, SolveError> {
        self.solve_detailed(a, b).x
    }

    pub fn solve_detailed(&self, a: &[f64], b: &[f64]) -> Solved {
        let n = self.n;
        assert!(a.len() == n * n && b.len() == n, "LinearSolve::solve: a must be ({n}, {n}) and b ({n})");
        solve_system(a, b, n, self.min_rcond)
    }

    /// Packed systems (rows, n*n + n) -> one outcome per system, systems in parallel.
    pub fn run(&self, inputs: &[f64], rows: usize) -> Vec<Solved> {
        let (n, stride) = (self.n, self.n_inputs());
        assert_eq!(inputs.len(), rows * stride, "LinearSolve::run: inputs must be (rows, {stride})");
        inputs
            .par_chunks(stride)
            .map(|sys| solve_system(&sys[..n * n], &sys[n * n..], n, self.min_rcond))
            .collect()
    }
}

/// Solves one system a (n, n) x = b (n); shared with the power-flow expert's Newton
/// steps.
pub(crate) fn solve_system(a: &[f64], b: &[f64], n: usize, min_rcond: f64) -> Solved {
    let fail = |e| Solved { x: Err(e), rcond: f64::NAN };
    if let Some(index) = a.iter().position(|v| !v.is_finite()) {
        return fail(SolveError::NonFiniteA { index });
    }
    if let Some(index) = b.iter().position(|v| !v.is_finite()) {
        return fail(SolveError::NonFiniteB { index });
    }
    let anorm = norm1_matrix(a, n);
    let mut lu = a.to_vec();
    let perm = match factor(&mut lu, n) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let est = inv_norm1_estimate(&lu, n, &perm);
    let rcond = (1.0 / est) / anorm;
    if rcond.is_nan() || rcond < min_rcond {
        return Solved { x: Err(SolveError::IllConditioned { rcond, min_rcond }), rcond };
    }
    let mut v: Vec<f64> = perm.iter().map(|&p| b[p]).collect();
    apply_inverse(&lu, n, &mut v);
    if v.iter().any(|x| !x.is_finite()) {
        return Solved { x: Err(SolveError::Overflow), rcond };
    }
    Solved { x: Ok(v), rcond }
}

/// max_j sum_i |a[i][j]|, each column summed in index order.
fn norm1_matrix(a: &[f64], n: usize) -> f64 {
    let mut best = 0.0f64;
    for j in 0..n {
        let mut s = 0.0;
        for i in 0..n {
            s += a[i * n + j].abs();
        }
        best = best.max(s);
    }
    best
}

/// In place: P A = L U with L unit lower (below the diagonal) and U upper. Returns
/// perm, with row i of P A = row perm[i] of A.
fn factor(a: &mut [f64], n: usize) -> std::result::Result<Vec<usize>, SolveError> {
    let mut perm: Vec<usize> = (0..n).collect();
    for k in 0..n {
        let (mut p, mut best) = (k, a[k * n + k].abs());
        for i in k + 1..n {
            let v = a[i * n + k].abs();
            if v > best {
                (p, best) = (i, v);
            }
        }
        if best == 0.0 {
            return Err(SolveError::Singular { column: k });
        }
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
            perm.swap(k, p);
        }
        let pivot = a[k * n + k];
        for i in k + 1..n {
            a[i * n + k] /= pivot;
        }
        for i in k + 1..n {
            let l = a[i * n + k];
            for j in k + 1..n {
                a[i * n + j] = (-l).mul_add(a[k * n + j], a[i * n + j]);
            }
        }
    }
    Ok(perm)
}

/// v <- U^-1 L^-1 v (v already permuted: v = P rhs).
fn apply_inverse(lu: &[f64], n: usize, v: &mut [f64]) {
    for k in 0..n {
        let vk = v[k];
        for i in k + 1..n {
            v[i] = (-lu[i * n + k]).mul_add(vk, v[i]);
        }
    }
    for k in (0..n).rev() {
        let xk = v[k] / lu[k * n + k];
        for i in 0..k {
            v[i] = (-lu[i * n + k]).mul_add(xk, v[i]);
        }
        v[k] = xk;
    }
}

/// v <- L^-T U^-T v. With P A = L U, A^T z = c gives P z = L^-T U^-T c.
fn apply_inverse_t(lu: &[f64], n: usize, v: &mut [f64]) {
    for k in 0..n {
        let wk = v[k] / lu[k * n + k];
        for i in k + 1..n {
            v[i] = (-lu[k * n + i]).mul_add(wk, v[i]);
        }
        v[k] = wk;
    }
    for k in (0..n).rev() {
        let uk = v[k];
        for i in 0..k {
            v[i] = (-lu[k * n + i]).mul_add(uk, v[i]);
        }
    }
}

fn norm1(v: &[f64]) -> f64 {
    let mut s = 0.0;
    for x in v {
        s += x.abs();
    }
    s
}

fn sign(x: f64) -> f64 {
    if x >= 0.0 {
        1.0
    } else {
        -1.0
    }
}

/// First index of the largest |v[i]|.
fn argmax_abs(v: &[f64]) -> usize {
    let mut j = 0;
    for i in 1..v.len() {
        if v[i].abs() > v[j].abs() {
            j = i;
        }
    }
    j
}

/// Lower-bound estimate of ||A^-1||_1 from the factors (Hager / Higham, see top).
fn inv_norm1_estimate(lu: &[f64], n: usize, perm: &[usize]) -> f64 {
    if n == 1 {
        return 1.0 / lu[0].abs();
    }
    // y = A^-1 x, for x given through x_at(i); z = A^-T s.
    let solve = |x_at: &dyn Fn(usize) -> f64, y: &mut Vec<f64>| {
        y.clear();
        y.extend(perm.iter().map(|&p| x_at(p)));
        apply_inverse(lu, n, y);
    };
    let solve_t = |s: &[f64], z: &mut [f64]| {
        let mut w = s.to_vec();
        apply_inverse_t(lu, n, &mut w);
        for i in 0..n {
            z[perm[i]] = w[i];
        }
    };
    let mut y = Vec::with_capacity(n);
    let mut z = vec![0.0; n];
    let uniform = 1.0 / n as f64;
    solve(&|_| uniform, &mut y);
    let mut est = norm1(&y);
    let mut s: Vec<f64> = y.iter().map(|&v| sign(v)).collect();
    solve_t(&s, &mut z);
    let mut j = argmax_abs(&z);
    for _ in 1..5 {
        solve(&|i| if i == j { 1.0 } else { 0.0 }, &mut y);
        let new = norm1(&y);
        let same = y.iter().zip(&s).all(|(&v, &sv)| sign(v) == sv);
        let grew = new > est;
        est = est.max(new);
        if same || !grew {
            break;
        }
        for (sv, &v) in s.iter_mut().zip(&y) {
            *sv = sign(v);
        }
        solve_t(&s, &mut z);
        let last = j;
        j = argmax_abs(&z);
        if z[last].abs() == z[j].abs() {
            break;
        }
    }
    // Higham's alternating vector x_i = (-1)^i (1 + i / (n - 1)).
    solve(
        &|i| {
            let m = 1.0 + i as f64 / (n - 1) as f64;
            if i % 2 == 0 {
                m
            } else {
                -m
            }
        },
        &mut y,
    );
    let alt = 2.0 * norm1(&y) / (3.0 * n as f64);
    est.max(alt)
}
