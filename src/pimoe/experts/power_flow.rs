//! The `power-flow` expert: AC power flow by Newton-Raphson in polar form, in f64,
//! batched over independent rows. The readable reference for `power_flow_f64` in
//! kernels/expert_f64.cu.
//!
//! The method is MATPOWER's / PYPOWER's `newtonpf` (R. D. Zimmerman et al.,
//! <https://matpower.org>, `newtonpf.m` and `dSbus_dV.m`; PYPOWER
//! <https://github.com/rwl/PYPOWER>): unknowns are the angles of the PV and PQ buses
//! and the magnitudes of the PQ buses; the mismatch F = [Re(mis) at PV, PQ buses;
//! Im(mis) at PQ buses] with mis = V conj(Ybus V) - Sbus; the Jacobian from
//! dS/dVa = j diag(V) conj(diag(I) - Ybus diag(V)) and
//! dS/dVm = diag(V) conj(Ybus diag(V/|V|)) + conj(diag(I)) diag(V/|V|);
//! x <- x - J^-1 F until max |F| < tolerance. Ours differs only in the order of the
//! unknowns (bus order instead of PV then PQ) and in not re-wrapping angles, neither of
//! which changes the solution. Start: PQ buses at 1 p.u., 0 rad; slack and PV buses
//! at their set point, 0 rad. The Jacobian is solved by linear_solve.rs's LU with
//! partial pivoting and condition check (the same code as the `linear-solve` expert),
//! so its order n_pv + 2 n_pq must be at most 64.
//!
//! Ybus (MATPOWER's `makeYbus`, no phase shift): per branch ys = 1 / (r + jx),
//! Ytt = ys + j b/2, Yff = Ytt / tap^2, Yft = Ytf = -ys / tap; bus shunts
//! (Gs + j Bs) / base on the diagonal. Sbus = ((Pg - Pd) - j Qd) / base.
//!
//! # The input row (the one place that defines it)
//!
//! Fixed width `5 + 7 max_buses + 6 max_branches`, unused slots 0:
//!
//! | slots | meaning |
//! | --- | --- |
//! | 0 | number of buses nb (1..=max_buses) |
//! | 1 | number of branches nl (0..=max_branches) |
//! | 2 | base power, MVA |
//! | 3 | asked quantity: 0 voltage angle (degrees), 1 voltage magnitude (p.u.), 2 active power at a branch's from end (MW) |
//! | 4 | its target: a bus position (0-based, in bus order) or a branch position |
//! | 5 + 7 i .. | bus i: type (0 slack, 1 PV, 2 PQ), Pd, Qd, Pg (MW, MVAr), V set point (p.u., ignored at PQ buses), Gs, Bs (MW, MVAr at 1 p.u.) |
//! | 5 + 7 max_buses + 6 l .. | branch l: from, to (bus positions), r, x, b (p.u.), tap (1 = none) |
//!
//! Outputs (3): the asked quantity, the Newton iterations taken, and the final largest
//! mismatch (p.u.). A row that is malformed (non-finite, a count or position out of
//! range, no or two slack buses, x = 0, a Jacobian above order 64), whose Jacobian is
//! singular or ill-conditioned, or that does not converge in `max_iterations` is an
//! error with a plain message, e.g. "Newton-Raphson did not converge in 20
//! iterations: largest mismatch 3.1e-2 p.u.". Rows are independent.
//!
//! Arithmetic: complex products and sums are written with explicit fused
//! multiply-adds in a fixed order (see `C`), mirrored by the kernel; only sin and cos
//! differ between the CPU's libm and CUDA's (within an ulp or two), so the two agree
//! to ~1e-13 relative, not bit for bit. Each is bitwise repeatable.

use std::f64::consts::PI;

use rayon::prelude::*;

use super::linear_solve::{solve_system, SolveError, DEFAULT_MIN_RCOND, MAX_N};
use super::RowResult;
use crate::error::{Error, Result};
use crate::grid::{Analysis, BusKind, Case, Question, Target};

/// Slots before the buses.
pub const HEADER: usize = 5;
pub const BUS_FIELDS: usize = 7;
pub const BRANCH_FIELDS: usize = 6;
pub const N_OUTPUTS: usize = 3;
/// Limits on the manifest's `max_buses` / `max_branches` (the kernel's shared arrays).
pub const MAX_BUSES: usize = 64;
pub const MAX_BRANCHES: usize = 256;

pub const DEFAULT_MAX_BUSES: usize = 32;
pub const DEFAULT_MAX_BRANCHES: usize = 64;
pub const DEFAULT_TOLERANCE: f64 = 1e-10;
pub const DEFAULT_MAX_ITERATIONS: usize = 20;

/// Codes of slot 3.
pub mod quantity {
    pub const ANGLE: u32 = 0;
    pub const MAGNITUDE: u32 = 1;
    pub const FLOW: u32 = 2;
}

#[derive(Clone, Debug, PartialEq)]
pub struct PowerFlow {
    max_buses: usize,
    max_branches: usize,
    tolerance: f64,
    max_iterations: usize,
}

/// A complex number; the products are the kernel's, operation for operation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct C {
    pub re: f64,
    pub im: f64,
}

impl C {
    pub fn new(re: f64, im: f64) -> Self {
        C { re, im }
    }
    /// a b
    pub fn prod(a: C, b: C) -> C {
        C::new(a.re.mul_add(b.re, -(a.im * b.im)), a.re.mul_add(b.im, a.im * b.re))
    }
    /// a conj(b)
    pub fn prod_conj(a: C, b: C) -> C {
        C::new(a.re.mul_add(b.re, a.im * b.im), a.im.mul_add(b.re, -(a.re * b.im)))
    }
    /// acc + a b
    pub fn acc_prod(acc: C, a: C, b: C) -> C {
        C::new(
            a.re.mul_add(b.re, (-a.im).mul_add(b.im, acc.re)),
            a.re.mul_add(b.im, a.im.mul_add(b.re, acc.im)),
        )
    }
}

/// One branch's admittances: (Yff, Yft = Ytf, Ytt).
pub fn branch_admittance(r: f64, x: f64, b: f64, tap: f64) -> (C, C, C) {
    let d = r.mul_add(r, x * x);
    let ys = C::new(r / d, -x / d);
    let ytt = C::new(ys.re, ys.im + 0.5 * b);
    let t2 = tap * tap;
    (C::new(ytt.re / t2, ytt.im / t2), C::new(-ys.re / tap, -ys.im / tap), ytt)
}

#[derive(Clone, Debug, PartialEq)]
pub struct PfBranch {
    pub from: usize,
    pub to: usize,
    pub r: f64,
    pub x: f64,
    pub b: f64,
    pub tap: f64,
}

/// A decoded, checked row.
#[derive(Clone, Debug, PartialEq)]
pub struct PfCase {
    pub base_mva: f64,
    pub kinds: Vec<BusKind>,
    /// Specified injections (p.u.): (Pg - Pd) / base, -Qd / base.
    pub p: Vec<f64>,
    pub q: Vec<f64>,
    pub vset: Vec<f64>,
    pub branches: Vec<PfBranch>,
    pub quantity: u32,
    pub target: usize,
    /// Ybus (nb, nb) row-major.
    pub y: Vec<C>,
}

/// Where Newton-Raphson ended.
#[derive(Clone, Debug, PartialEq)]
pub struct PfSolution {
    pub vm: Vec<f64>,
    /// Radians.
    pub va: Vec<f64>,
    pub iterations: usize,
    /// max |F| (p.u.) at the end.
    pub mismatch: f64,
}

impl PowerFlow {
    pub fn new(max_buses: usize, max_branches: usize, tolerance: f64, max_iterations: usize) -> Result<Self> {
        let bad = |msg: String| Err(Error::Request(format!("power-flow expert: {msg}")));
        if max_buses == 0 || max_buses > MAX_BUSES {
            return bad(format!("max_buses = {max_buses} is outside 1..={MAX_BUSES}"));
        }
        if max_branches > MAX_BRANCHES {
            return bad(format!("max_branches = {max_branches} is above {MAX_BRANCHES}"));
        }
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return bad(format!("tolerance = {tolerance} must be positive"));
        }
        if max_iterations == 0 || max_iterations > 1000 {
            return bad(format!("max_iterations = {max_iterations} is outside 1..=1000"));
        }
        Ok(PowerFlow { max_buses, max_branches, tolerance, max_iterations })
    }

    pub fn max_buses(&self) -> usize {
        self.max_buses
    }
    pub fn max_branches(&self) -> usize {
        self.max_branches
    }
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }
    pub fn max_iterations(&self) -> usize {
        self.max_iterations
    }
    pub fn n_inputs(&self) -> usize {
        HEADER + BUS_FIELDS * self.max_buses + BRANCH_FIELDS * self.max_branches
    }
    pub fn n_outputs(&self) -> usize {
        N_OUTPUTS
    }
    fn branch_base(&self) -> usize {
        HEADER + BUS_FIELDS * self.max_buses
    }

    /// The input row for an AC `question` about `case` (the layout above).
    pub fn encode(&self, case: &Case, question: &Question) -> std::result::Result<Vec<f64>, String> {
        if question.analysis != Analysis::Ac {
            return Err(format!("the question asks for the {} power flow, not AC", question.analysis.name()));
        }
        case.check(Analysis::Ac).map_err(|e| e.to_string())?;
        let target = case.locate(question)?;
        let (nb, nl) = (case.buses.len(), case.branches.len());
        if nb > self.max_buses {
            return Err(format!(
                "the grid has {nb} buses; the power-flow expert takes up to {} (max_buses)",
                self.max_buses
            ));
        }
        if nl > self.max_branches {
            return Err(format!(
                "the grid has {nl} branches; the power-flow expert takes up to {} (max_branches)",
                self.max_branches
            ));
        }
        let mut row = vec![0.0; self.n_inputs()];
        let (code, at) = match target {
            Target::Bus(i) if matches!(question.quantity, crate::grid::Quantity::VoltageAngle { .. }) => {
                (quantity::ANGLE, i)
            }
            Target::Bus(i) => (quantity::MAGNITUDE, i),
            Target::Branch(l) => (quantity::FLOW, l),
        };
        row[..HEADER].copy_from_slice(&[nb as f64, nl as f64, case.base_mva, code as f64, at as f64]);
        for (i, b) in case.buses.iter().enumerate() {
            let kind = match b.kind {
                BusKind::Slack => 0.0,
                BusKind::Pv => 1.0,
                BusKind::Pq => 2.0,
            };
            let at = HEADER + BUS_FIELDS * i;
            row[at..at + BUS_FIELDS].copy_from_slice(&[kind, b.pd, b.qd, b.pg, b.vset, b.gs, b.bs]);
        }
        for (l, br) in case.branches.iter().enumerate() {
            let (f, t) = (case.position(br.from).expect("checked"), case.position(br.to).expect("checked"));
            let at = self.branch_base() + BRANCH_FIELDS * l;
            row[at..at + BRANCH_FIELDS].copy_from_slice(&[f as f64, t as f64, br.r, br.x, br.b, br.tap]);
        }
        Ok(row)
    }

    /// Reads and checks a row (n_inputs).
    pub fn decode(&self, row: &[f64]) -> std::result::Result<PfCase, String> {
        assert_eq!(row.len(), self.n_inputs(), "PowerFlow::decode: a row has {} values", self.n_inputs());
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Err(format!("non-finite input in column {c}"));
        }
        let whole = |v: f64, what: &str, below: usize| {
            if v >= 0.0 && v.fract() == 0.0 && v < below as f64 {
                Ok(v as usize)
            } else {
                Err(format!("{what} is {v}, not a whole number below {below}"))
            }
        };
        let nb = whole(row[0], "the number of buses", self.max_buses + 1)?;
        let nl = whole(row[1], "the number of branches", self.max_branches + 1)?;
        if nb == 0 {
            return Err("the case has no buses".into());
        }
        let base_mva = row[2];
        if base_mva <= 0.0 {
            return Err(format!("the base power is {base_mva} MVA"));
        }
        let code = whole(row[3], "the quantity code", 3)? as u32;
        let target = whole(row[4], "the target", if code == quantity::FLOW { nl } else { nb })?;

        let mut kinds = Vec::with_capacity(nb);
        let (mut p, mut q, mut vset) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..nb {
            let f = &row[HEADER + BUS_FIELDS * i..HEADER + BUS_FIELDS * (i + 1)];
            let kind = match whole(f[0], &format!("bus {i}'s type"), 3)? {
                0 => BusKind::Slack,
                1 => BusKind::Pv,
                _ => BusKind::Pq,
            };
            if kind != BusKind::Pq && f[4] <= 0.0 {
                return Err(format!("bus {i}'s voltage set point is {}", f[4]));
            }
            kinds.push(kind);
            p.push((f[3] - f[1]) / base_mva);
            q.push(-f[2] / base_mva);
            vset.push(f[4]);
        }
        let slacks = kinds.iter().filter(|&&k| k == BusKind::Slack).count();
        if slacks != 1 {
            return Err(format!("the case has {slacks} slack buses; it needs exactly one"));
        }
        let n_pq = kinds.iter().filter(|&&k| k == BusKind::Pq).count();
        let order = nb - 1 + n_pq;
        if order > MAX_N {
            return Err(format!(
                "the case has {} PV and {n_pq} PQ buses: its Jacobian would be of order {order}, above {MAX_N}",
                nb - 1 - n_pq
            ));
        }

        let mut branches = Vec::with_capacity(nl);
        for l in 0..nl {
            let at = self.branch_base() + BRANCH_FIELDS * l;
            let f = &row[at..at + BRANCH_FIELDS];
            let (from, to) = (
                whole(f[0], &format!("branch {l}'s from bus"), nb)?,
                whole(f[1], &format!("branch {l}'s to bus"), nb)?,
            );
            if from == to {
                return Err(format!("branch {l} connects bus {from} to itself"));
            }
            if f[3] == 0.0 {
                return Err(format!("branch {l} has reactance 0"));
            }
            if f[5] <= 0.0 {
                return Err(format!("branch {l} has tap ratio {}", f[5]));
            }
            branches.push(PfBranch { from, to, r: f[2], x: f[3], b: f[4], tap: f[5] });
        }

        // Ybus: branch contributions in branch order, then the shunts (the kernel
        // adds each entry's terms in this same order).
        let mut y = vec![C::default(); nb * nb];
        let add = |y: &mut Vec<C>, i: usize, k: usize, v: C| {
            let e = &mut y[i * nb + k];
            *e = C::new(e.re + v.re, e.im + v.im);
        };
        for br in &branches {
            let (yff, yft, ytt) = branch_admittance(br.r, br.x, br.b, br.tap);
            add(&mut y, br.from, br.from, yff);
            add(&mut y, br.from, br.to, yft);
            add(&mut y, br.to, br.from, yft);
            add(&mut y, br.to, br.to, ytt);
        }
        for i in 0..nb {
            let f = &row[HEADER + BUS_FIELDS * i..];
            add(&mut y, i, i, C::new(f[5] / base_mva, f[6] / base_mva));
        }
        Ok(PfCase { base_mva, kinds, p, q, vset, branches, quantity: code, target, y })
    }

    /// Decodes, solves and reports one row.
    pub fn solve_row(&self, row: &[f64]) -> std::result::Result<(PfCase, PfSolution), String> {
        let case = self.decode(row)?;
        let sol = case.solve(self.tolerance, self.max_iterations).map_err(|e| e.to_string())?;
        Ok((case, sol))
    }

    /// inputs (rows, n_inputs) -> [quantity, iterations, mismatch] per row, rows in
    /// parallel.
    pub fn run(&self, inputs: &[f64], rows: usize) -> Vec<RowResult> {
        let stride = self.n_inputs();
        assert_eq!(inputs.len(), rows * stride, "PowerFlow::run: inputs must be (rows, {stride})");
        inputs
            .par_chunks(stride)
            .map(|row| {
                let (case, sol) = self.solve_row(row)?;
                Ok(vec![case.answer(&sol), sol.iterations as f64, sol.mismatch])
            })
            .collect()
    }
}

impl PfCase {
    pub fn n_buses(&self) -> usize {
        self.kinds.len()
    }

    /// Buses whose angle is unknown (all but the slack), then those whose magnitude is
    /// (PQ), each in bus order.
    fn unknowns(&self) -> (Vec<usize>, Vec<usize>) {
        let n = self.n_buses();
        let ang = (0..n).filter(|&i| self.kinds[i] != BusKind::Slack).collect();
        let mag = (0..n).filter(|&i| self.kinds[i] == BusKind::Pq).collect();
        (ang, mag)
    }

    /// V and V/|V| at every bus.
    fn voltages(vm: &[f64], va: &[f64]) -> (Vec<C>, Vec<C>) {
        let vn: Vec<C> = va.iter().map(|&a| C::new(a.cos(), a.sin())).collect();
        let v = vm.iter().zip(&vn).map(|(&m, n)| C::new(m * n.re, m * n.im)).collect();
        (v, vn)
    }

    /// I = Ybus V (each sum over k in order from 0).
    fn currents(&self, v: &[C]) -> Vec<C> {
        let n = self.n_buses();
        (0..n)
            .map(|i| (0..n).fold(C::default(), |acc, k| C::acc_prod(acc, self.y[i * n + k], v[k])))
            .collect()
    }

    /// F (the unknowns' order) and max |F|, NaN if any entry is not finite.
    fn mismatch(&self, v: &[C], cur: &[C], ang: &[usize], mag: &[usize]) -> (Vec<f64>, f64) {
        let s: Vec<C> = v.iter().zip(cur).map(|(&vi, &ii)| C::prod_conj(vi, ii)).collect();
        let f: Vec<f64> = ang
            .iter()
            .map(|&i| s[i].re - self.p[i])
            .chain(mag.iter().map(|&i| s[i].im - self.q[i]))
            .collect();
        let mut norm = 0.0f64;
        for x in &f {
            norm = if x.is_finite() { norm.max(x.abs()) } else { f64::NAN };
            if norm.is_nan() {
                break;
            }
        }
        (f, norm)
    }

    /// The Jacobian (m, m) row-major, m = ang + mag: rows P at `ang` then Q at `mag`,
    /// columns d/dVa at `ang` then d/dVm at `mag`.
    fn jacobian(&self, v: &[C], vn: &[C], cur: &[C], ang: &[usize], mag: &[usize]) -> Vec<f64> {
        let n = self.n_buses();
        let m = ang.len() + mag.len();
        let bus = |r: usize| if r < ang.len() { ang[r] } else { mag[r - ang.len()] };
        let mut j = vec![0.0; m * m];
        for r in 0..m {
            let i = bus(r);
            for c in 0..m {
                let k = bus(c);
                let y = self.y[i * n + k];
                let ds = if c < ang.len() {
                    // j V_i conj(delta_ik I_i - Y_ik V_k)
                    let a = C::prod(y, v[k]);
                    let w = if i == k {
                        C::new(cur[i].re - a.re, cur[i].im - a.im)
                    } else {
                        C::new(-a.re, -a.im)
                    };
                    let t = C::prod_conj(v[i], w);
                    C::new(-t.im, t.re)
                } else {
                    // V_i conj(Y_ik Vn_k) + delta_ik conj(I_i) Vn_i
                    let t = C::prod_conj(v[i], C::prod(y, vn[k]));
                    if i == k {
                        let u = C::prod_conj(vn[i], cur[i]);
                        C::new(t.re + u.re, t.im + u.im)
                    } else {
                        t
                    }
                };
                j[r * m + c] = if r < ang.len() { ds.re } else { ds.im };
            }
        }
        j
    }

    /// |V| at the start: the set point at slack and PV buses, 1 at PQ buses.
    pub fn start_magnitudes(&self) -> Vec<f64> {
        (0..self.n_buses()).map(|i| if self.kinds[i] == BusKind::Pq { 1.0 } else { self.vset[i] }).collect()
    }

    /// Newton-Raphson from the flat start (see the module doc).
    pub fn solve(
        &self,
        tolerance: f64,
        max_iterations: usize,
    ) -> std::result::Result<PfSolution, NewtonError> {
        let (ang, mag) = self.unknowns();
        let m = ang.len() + mag.len();
        let mut vm = self.start_magnitudes();
        let mut va = vec![0.0; self.n_buses()];
        let (mut v, mut vn) = Self::voltages(&vm, &va);
        let mut cur = self.currents(&v);
        let (mut f, mut norm) = self.mismatch(&v, &cur, &ang, &mag);
        let mut it = 0;
        loop {
            if norm < tolerance {
                break;
            }
            if norm.is_nan() {
                return Err(NewtonError::Diverged { iterations: it });
            }
            if it == max_iterations {
                return Err(NewtonError::NotConverged { iterations: it, mismatch: norm });
            }
            it += 1;
            let j = self.jacobian(&v, &vn, &cur, &ang, &mag);
            let dx = solve_system(&j, &f, m, DEFAULT_MIN_RCOND)
                .x
                .map_err(|error| NewtonError::Jacobian { iteration: it, error })?;
            for (a, &i) in ang.iter().enumerate() {
                va[i] -= dx[a];
            }
            for (b, &i) in mag.iter().enumerate() {
                vm[i] -= dx[ang.len() + b];
            }
            (v, vn) = Self::voltages(&vm, &va);
            cur = self.currents(&v);
            (f, norm) = self.mismatch(&v, &cur, &ang, &mag);
        }
        Ok(PfSolution { vm, va, iterations: it, mismatch: norm })
    }

    /// Active power entering branch l at its from end, MW:
    /// Re(V_f conj(Yff V_f + Yft V_t)) base.
    pub fn flow_mw(&self, sol: &PfSolution, l: usize) -> f64 {
        let br = &self.branches[l];
        let (v, _) = Self::voltages(&sol.vm, &sol.va);
        let (yff, yft, _) = branch_admittance(br.r, br.x, br.b, br.tap);
        let i_f = C::acc_prod(C::prod(yff, v[br.from]), yft, v[br.to]);
        C::prod_conj(v[br.from], i_f).re * self.base_mva
    }

    /// The asked quantity (degrees, p.u. or MW).
    pub fn answer(&self, sol: &PfSolution) -> f64 {
        match self.quantity {
            quantity::ANGLE => sol.va[self.target] * (180.0 / PI),
            quantity::MAGNITUDE => sol.vm[self.target],
            _ => self.flow_mw(sol, self.target),
        }
    }
}

/// Why Newton-Raphson stopped without a solution; `Display` gives the row's message.
#[derive(Clone, Debug, PartialEq)]
pub enum NewtonError {
    NotConverged {
        iterations: usize,
        mismatch: f64,
    },
    /// The mismatch became non-finite.
    Diverged {
        iterations: usize,
    },
    /// The LU of the Jacobian refused at this iteration.
    Jacobian {
        iteration: usize,
        error: SolveError,
    },
}

impl std::fmt::Display for NewtonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewtonError::NotConverged { iterations, mismatch } => write!(
                f,
                "Newton-Raphson did not converge in {iterations} iterations: largest mismatch {mismatch:.1e} p.u."
            ),
            NewtonError::Diverged { iterations } => {
                write!(f, "Newton-Raphson diverged: a non-finite mismatch after {iterations} iterations")
            }
            NewtonError::Jacobian { iteration, error } => match error {
                SolveError::Singular { column } => write!(
                    f,
                    "Newton-Raphson iteration {iteration}: the Jacobian is singular (zero pivot in column {column})"
                ),
                SolveError::IllConditioned { rcond, .. } => write!(
                    f,
                    "Newton-Raphson iteration {iteration}: the Jacobian is ill-conditioned (reciprocal condition \
                     estimate {rcond:.1e})"
                ),
                _ => write!(f, "Newton-Raphson diverged at iteration {iteration}: non-finite values"),
            },
        }
    }
}

impl std::error::Error for NewtonError {}

/// Status codes of `power_flow_f64` (PF_* in kernels/expert_f64.cu).
pub(crate) mod status {
    pub const OK: u32 = 0;
    pub const NOT_CONVERGED: u32 = 1;
    pub const DIVERGED: u32 = 2;
    pub const JACOBIAN: u32 = 3;
}

impl NewtonError {
    /// The kernel's outcome as an error (None for success): its code, the LU's code
    /// and info for a Jacobian it refused, the iterations, final mismatch and the LU's
    /// rcond.
    pub(crate) fn from_status(
        code: u32,
        lu_code: u32,
        lu_info: u32,
        iterations: usize,
        mismatch: f64,
        rcond: f64,
    ) -> Option<Self> {
        Some(match code {
            status::OK => return None,
            status::NOT_CONVERGED => NewtonError::NotConverged { iterations, mismatch },
            status::DIVERGED => NewtonError::Diverged { iterations },
            // (An LU "success" here cannot come from the kernel; it is still no solution.)
            status::JACOBIAN => NewtonError::Jacobian {
                iteration: iterations,
                error: SolveError::from_status(lu_code, lu_info, rcond, DEFAULT_MIN_RCOND)
                    .unwrap_or(SolveError::Overflow),
            },
            // The kernel writes no other code; if it ever did, the row is still an error.
            _ => NewtonError::Diverged { iterations },
        })
    }
}
