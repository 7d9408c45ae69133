//! Launchers for kernels/expert_f64.cu: the computation experts on the GPU. The only
//! place that knows those kernels' symbols, launch shapes and argument order.
//!
//! [`GpuExpert`] uploads an expert's weights once, in the expert's precision, then
//! runs batches: inputs up, layer after layer on the device, outputs back, and the
//! same per-row error rules as the CPU (`Expert::run`). The CPU in
//! src/pimoe/experts/ is the reference; see the kernel file's header for how closely
//! the two agree (bitwise for ReLU/identity nets and the LU solve, ~1e-15 relative
//! where libm functions differ).

use bytemuck::Pod;

use super::{Arg, CudaBackend, DevBuf, Grid};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::pimoe::experts::linear_solve::{SolveError, Solved, DEFAULT_MIN_RCOND, MAX_N};
use crate::pimoe::experts::power_flow::{NewtonError, PfCase, PfSolution};
use crate::pimoe::experts::{finish_rows, Activation, Expert, Mlp, PowerFlow, Precision, RowResult};

const MODULE: &str = "expert_f64";

/// dense_*: block (DENSE_TO, DENSE_TR) in the kernel.
const DENSE_TO: u32 = 32;
const DENSE_TR: u32 = 8;
/// Grid y is at most 65535 blocks of DENSE_TR rows.
const MAX_ROWS: usize = 65535 * DENSE_TR as usize;
const COMBINE_THREADS: u32 = 128;
/// lu_solve_f64: LU_THREADS in the kernel (warp 0 searches pivots, so >= 32).
const LU_THREADS: u32 = 64;

// ----------------------------------------------------------------------------------
// Raw buffers
// ----------------------------------------------------------------------------------

/// A device copy of `data` in a long-lived (not pooled) buffer.
pub fn upload<T: Pod>(b: &CudaBackend, data: &[T]) -> Result<DevBuf> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let buf = b.owned(bytes.len())?;
    b.upload_now(buf.ptr(), bytes);
    Ok(buf)
}

/// An uninitialised device buffer of `len` elements of T.
pub fn alloc<T: Pod>(b: &CudaBackend, len: usize) -> Result<DevBuf> {
    b.owned(len * std::mem::size_of::<T>())
}

/// Reads `len` elements back (synchronises the stream); a device error is returned.
pub fn download<T: Pod + Default>(b: &CudaBackend, buf: &DevBuf, len: usize) -> Result<Vec<T>> {
    assert!(len * std::mem::size_of::<T>() <= buf.bytes(), "download: {len} elements exceed the buffer");
    let out = b.read(buf, len);
    b.check()?;
    Ok(out)
}

/// Host values in an expert's precision, as the bytes the kernels read.
fn upload_in(b: &CudaBackend, prec: Precision, data: &[f64]) -> Result<DevBuf> {
    match prec {
        Precision::F64 => upload(b, data),
        Precision::F32 => upload(b, &data.iter().map(|&v| v as f32).collect::<Vec<f32>>()),
    }
}

fn download_in(b: &CudaBackend, prec: Precision, buf: &DevBuf, len: usize) -> Result<Vec<f64>> {
    Ok(match prec {
        Precision::F64 => download::<f64>(b, buf, len)?,
        Precision::F32 => download::<f32>(b, buf, len)?.into_iter().map(f64::from).collect(),
    })
}

fn elem_bytes(prec: Precision) -> usize {
    match prec {
        Precision::F64 => 8,
        Precision::F32 => 4,
    }
}

fn suffix(prec: Precision) -> &'static str {
    match prec {
        Precision::F64 => "f64",
        Precision::F32 => "f32",
    }
}

// ----------------------------------------------------------------------------------
// One launcher per entry point
// ----------------------------------------------------------------------------------

/// y (rows, n_out) = act(x (rows, n_in) W^T + bias), W (n_out, n_in), bias (n_out), all
/// in `prec`; `act` None means no activation (the last layer).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    b: &CudaBackend,
    prec: Precision,
    y: &DevBuf,
    x: &DevBuf,
    w: &DevBuf,
    bias: &DevBuf,
    rows: usize,
    n_in: usize,
    n_out: usize,
    act: Option<Activation>,
) -> Result<()> {
    let e = elem_bytes(prec);
    if rows == 0 {
        return Ok(());
    }
    if rows > MAX_ROWS {
        return Err(Error::Request(format!("expert batch of {rows} rows exceeds {MAX_ROWS}")));
    }
    assert!(
        y.bytes() >= rows * n_out * e
            && x.bytes() >= rows * n_in * e
            && w.bytes() >= n_out * n_in * e
            && bias.bytes() >= n_out * e,
        "dense: a buffer is smaller than its shape"
    );
    let grid = Grid::new(
        ((n_out as u32).div_ceil(DENSE_TO), (rows as u32).div_ceil(DENSE_TR)),
        (DENSE_TO, DENSE_TR),
        0,
    );
    let act = act.unwrap_or(Activation::Identity).code();
    let args = [
        Arg::Word(y.ptr()),
        Arg::Word(x.ptr()),
        Arg::Word(w.ptr()),
        Arg::Word(bias.ptr()),
        Arg::from(rows as u32),
        Arg::from(n_in as u32),
        Arg::from(n_out as u32),
        Arg::from(act),
    ];
    // SAFETY (launch contract): the argument list matches dense_<prec>(y, x, w, b, rows,
    // n_in, n_out, act) and every buffer holds its shape (asserted above).
    b.launch(MODULE, &format!("dense_{}", suffix(prec)), grid, &args);
    Ok(())
}

/// y (rows) = sum_f branch (rows, p) * trunk (rows, p) (+ bias), in `prec`.
#[allow(clippy::too_many_arguments)]
pub fn deeponet_combine(
    b: &CudaBackend,
    prec: Precision,
    y: &DevBuf,
    branch: &DevBuf,
    trunk: &DevBuf,
    rows: usize,
    p: usize,
    bias: Option<f64>,
) -> Result<()> {
    let e = elem_bytes(prec);
    if rows == 0 {
        return Ok(());
    }
    assert!(
        y.bytes() >= rows * e && branch.bytes() >= rows * p * e && trunk.bytes() >= rows * p * e,
        "deeponet_combine: a buffer is smaller than its shape"
    );
    let grid = Grid::new((rows as u32).div_ceil(COMBINE_THREADS), COMBINE_THREADS, 0);
    let bias_arg = match prec {
        Precision::F64 => Arg::from(bias.unwrap_or(0.0)),
        Precision::F32 => Arg::from(bias.unwrap_or(0.0) as f32),
    };
    let args = [
        Arg::Word(y.ptr()),
        Arg::Word(branch.ptr()),
        Arg::Word(trunk.ptr()),
        Arg::from(rows as u32),
        Arg::from(p as u32),
        Arg::from(bias.is_some() as u32),
        bias_arg,
    ];
    // SAFETY (launch contract): matches deeponet_combine_<prec>(y, branch, trunk, rows,
    // p, has_bias, bias); the buffers hold their shapes (asserted above).
    b.launch(MODULE, &format!("deeponet_combine_{}", suffix(prec)), grid, &args);
    Ok(())
}

/// Solves `sys` packed systems (sys, n*n + n) -> x (sys, n) f64, status (sys, 2) u32,
/// rcond (sys) f64. Requires 1 <= n <= 64.
#[allow(clippy::too_many_arguments)]
pub fn lu_solve(
    b: &CudaBackend,
    x: &DevBuf,
    status: &DevBuf,
    rcond: &DevBuf,
    systems: &DevBuf,
    sys: usize,
    n: usize,
    min_rcond: f64,
) -> Result<()> {
    if sys == 0 {
        return Ok(());
    }
    if n == 0 || n > MAX_N {
        return Err(Error::Request(format!("linear solve: n = {n} is outside 1..={MAX_N}")));
    }
    assert!(
        x.bytes() >= sys * n * 8
            && status.bytes() >= sys * 8
            && rcond.bytes() >= sys * 8
            && systems.bytes() >= sys * (n * n + n) * 8,
        "lu_solve: a buffer is smaller than its shape"
    );
    let grid = Grid::new(sys as u32, LU_THREADS, 0);
    let args = [
        Arg::Word(x.ptr()),
        Arg::Word(status.ptr()),
        Arg::Word(rcond.ptr()),
        Arg::Word(systems.ptr()),
        Arg::from(n as u32),
        Arg::from(min_rcond),
    ];
    // SAFETY (launch contract): matches lu_solve_f64(x, status, rcond, systems, n,
    // min_rcond); buffers asserted above; the kernel's shared memory is static (35 KB).
    b.launch(MODULE, "lu_solve_f64", grid, &args);
    Ok(())
}

/// Values per packed power-flow system for `nb_max` buses (`pf_stride` in the kernel):
/// nb, then per bus the type code (0 slack, 1 PV, 2 PQ), P and Q specified (p.u.) and the
/// start magnitude, then Ybus (nb, nb) as (re, im) pairs.
pub fn pf_stride(nb_max: usize) -> usize {
    1 + 4 * nb_max + 2 * nb_max * nb_max
}

/// `case` in the kernel's packed layout (`dst` has `pf_stride(nb_max)` values).
fn pf_pack(case: &PfCase, nb_max: usize, dst: &mut [f64]) {
    let nb = case.n_buses();
    dst[0] = nb as f64;
    let start = case.start_magnitudes();
    for i in 0..nb {
        dst[1 + i] = match case.kinds[i] {
            crate::grid::BusKind::Slack => 0.0,
            crate::grid::BusKind::Pv => 1.0,
            crate::grid::BusKind::Pq => 2.0,
        };
        dst[1 + nb_max + i] = case.p[i];
        dst[1 + 2 * nb_max + i] = case.q[i];
        dst[1 + 3 * nb_max + i] = start[i];
    }
    let y = &mut dst[1 + 4 * nb_max..];
    for (e, v) in case.y.iter().enumerate() {
        (y[2 * e], y[2 * e + 1]) = (v.re, v.im);
    }
}

/// Newton-Raphson for `sys` packed systems (sys, pf_stride(nb_max)) -> vm, va (sys,
/// nb_max) f64, stats (sys, 3) f64 (iterations, max |F|, last rcond), status (sys, 3)
/// u32 (code, LU code, LU info). Requires 1 <= nb_max <= 64 and Jacobians of order
/// <= 64, which `PowerFlow::decode` checks for every packed system.
#[allow(clippy::too_many_arguments)]
pub fn power_flow(
    b: &CudaBackend,
    vm: &DevBuf,
    va: &DevBuf,
    stats: &DevBuf,
    status: &DevBuf,
    systems: &DevBuf,
    sys: usize,
    nb_max: usize,
    tolerance: f64,
    max_iterations: usize,
) -> Result<()> {
    if sys == 0 {
        return Ok(());
    }
    if nb_max == 0 || nb_max > crate::pimoe::experts::power_flow::MAX_BUSES {
        return Err(Error::Request(format!("power flow: max_buses = {nb_max} is outside 1..=64")));
    }
    assert!(
        vm.bytes() >= sys * nb_max * 8
            && va.bytes() >= sys * nb_max * 8
            && stats.bytes() >= sys * 3 * 8
            && status.bytes() >= sys * 3 * 4
            && systems.bytes() >= sys * pf_stride(nb_max) * 8,
        "power_flow: a buffer is smaller than its shape"
    );
    let grid = Grid::new(sys as u32, LU_THREADS, 0);
    let args = [
        Arg::Word(vm.ptr()),
        Arg::Word(va.ptr()),
        Arg::Word(stats.ptr()),
        Arg::Word(status.ptr()),
        Arg::Word(systems.ptr()),
        Arg::from(nb_max as u32),
        Arg::from(tolerance),
        Arg::from(max_iterations as u32),
        Arg::from(DEFAULT_MIN_RCOND),
    ];
    // SAFETY (launch contract): matches power_flow_f64(vm, va, stats, status, systems,
    // nb_max, tol, max_it, min_rcond); buffers asserted above; every packed system was
    // checked by PowerFlow::decode (nb <= nb_max, Jacobian order <= 64); shared memory
    // is static (40 KB).
    b.launch(MODULE, "power_flow_f64", grid, &args);
    Ok(())
}

// ----------------------------------------------------------------------------------
// Experts on the device
// ----------------------------------------------------------------------------------

struct GpuLayer {
    w: DevBuf,
    b: DevBuf,
    n_in: usize,
    n_out: usize,
}

/// An MLP's weights on the device, in its precision.
pub struct GpuMlp {
    layers: Vec<GpuLayer>,
    activation: Activation,
    precision: Precision,
}

impl GpuMlp {
    pub fn upload(b: &CudaBackend, m: &Mlp) -> Result<Self> {
        let layers = m
            .layers()
            .iter()
            .map(|l| {
                Ok(GpuLayer {
                    w: upload_in(b, m.precision(), &l.w)?,
                    b: upload_in(b, m.precision(), &l.b)?,
                    n_in: l.n_in,
                    n_out: l.n_out,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuMlp { layers, activation: m.activation(), precision: m.precision() })
    }

    /// x (rows, n_in) on the device -> a new buffer (rows, n_out), in the precision.
    pub fn forward(&self, b: &CudaBackend, x: &DevBuf, rows: usize) -> Result<DevBuf> {
        let last = self.layers.len() - 1;
        let mut cur: Option<DevBuf> = None;
        for (i, l) in self.layers.iter().enumerate() {
            let y = b.owned(rows * l.n_out * elem_bytes(self.precision))?;
            let input = cur.as_ref().unwrap_or(x);
            let act = (i < last).then_some(self.activation);
            dense(b, self.precision, &y, input, &l.w, &l.b, rows, l.n_in, l.n_out, act)?;
            cur = Some(y);
        }
        Ok(cur.expect("an MLP has at least one layer"))
    }

    pub fn n_outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].n_out
    }
}

enum Kind {
    Mlp(GpuMlp),
    DeepONet { branch: GpuMlp, trunk: GpuMlp, bias: Option<f64>, n_branch_in: usize },
    LinearSolve { n: usize, min_rcond: f64 },
    PowerFlow(PowerFlow),
}

/// An expert uploaded once; `run` answers batches like `Expert::run`.
pub struct GpuExpert {
    kind: Kind,
    n_inputs: usize,
    n_outputs: usize,
    precision: Precision,
}

impl GpuExpert {
    pub fn upload(b: &CudaBackend, expert: &Expert) -> Result<Self> {
        let kind = match expert {
            Expert::Mlp(m) => Kind::Mlp(GpuMlp::upload(b, m)?),
            Expert::DeepONet(d) => Kind::DeepONet {
                branch: GpuMlp::upload(b, d.branch())?,
                trunk: GpuMlp::upload(b, d.trunk())?,
                bias: d.bias(),
                n_branch_in: d.branch().n_inputs(),
            },
            Expert::LinearSolve(s) => Kind::LinearSolve { n: s.n(), min_rcond: s.min_rcond() },
            Expert::PowerFlow(p) => Kind::PowerFlow(p.clone()),
        };
        b.synchronize()?;
        Ok(GpuExpert {
            kind,
            n_inputs: expert.n_inputs(),
            n_outputs: expert.n_outputs(),
            precision: expert.precision(),
        })
    }

    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// inputs (rows, n_inputs) -> one result per row (the CPU's rules and messages).
    /// A device error is the outer error.
    pub fn run(&self, b: &CudaBackend, inputs: &[f64], rows: usize) -> Result<Vec<RowResult>> {
        let n_in = self.n_inputs;
        if inputs.len() != rows * n_in {
            let msg = format!("expert: got {} inputs for {rows} rows of {n_in}", inputs.len());
            return Ok(vec![Err(msg); rows]);
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let prec = self.precision;
        match &self.kind {
            Kind::Mlp(m) => {
                let x = upload_in(b, prec, inputs)?;
                let y = m.forward(b, &x, rows)?;
                let out = download_in(b, prec, &y, rows * m.n_outputs())?;
                Ok(finish_rows(inputs, n_in, &out, m.n_outputs()))
            }
            Kind::DeepONet { branch, trunk, bias, n_branch_in } => {
                let (mut xb, mut xt) = (Vec::with_capacity(rows * n_branch_in), Vec::new());
                for row in inputs.chunks_exact(n_in) {
                    xb.extend_from_slice(&row[..*n_branch_in]);
                    xt.extend_from_slice(&row[*n_branch_in..]);
                }
                let (xb, xt) = (upload_in(b, prec, &xb)?, upload_in(b, prec, &xt)?);
                let fb = branch.forward(b, &xb, rows)?;
                let ft = trunk.forward(b, &xt, rows)?;
                let y = b.owned(rows * elem_bytes(prec))?;
                deeponet_combine(b, prec, &y, &fb, &ft, rows, branch.n_outputs(), *bias)?;
                let out = download_in(b, prec, &y, rows)?;
                Ok(finish_rows(inputs, n_in, &out, 1))
            }
            Kind::LinearSolve { n, min_rcond } => {
                let out = self.solve(b, inputs, rows, *n, *min_rcond)?;
                Ok(out.into_iter().map(|s| s.x.map_err(|e| e.to_string())).collect())
            }
            Kind::PowerFlow(p) => self.power_flow(b, p, inputs, rows),
        }
    }

    /// Power-flow rows: checked and turned into Ybus on the host (`PowerFlow::decode`,
    /// the CPU's own code, so both backends start from the same bits and refuse the same
    /// rows alike), Newton-Raphson on the device, the answer from the final state on the
    /// host (`PfCase::answer`).
    fn power_flow(
        &self,
        b: &CudaBackend,
        p: &PowerFlow,
        inputs: &[f64],
        rows: usize,
    ) -> Result<Vec<RowResult>> {
        Ok(self
            .power_flow_rows(b, p, inputs, rows)?
            .into_iter()
            .map(|r| {
                let (c, s) = r?;
                Ok(vec![c.answer(&s), s.iterations as f64, s.mismatch])
            })
            .collect())
    }

    /// Per power-flow row, like `PowerFlow::solve_row`: the decoded case and the final
    /// state, or the row's message.
    pub fn power_flow_rows(
        &self,
        b: &CudaBackend,
        p: &PowerFlow,
        inputs: &[f64],
        rows: usize,
    ) -> Result<Vec<std::result::Result<(PfCase, PfSolution), String>>> {
        let nb_max = p.max_buses();
        let stride = pf_stride(nb_max);
        let decoded: Vec<std::result::Result<PfCase, String>> =
            inputs.chunks_exact(p.n_inputs()).take(rows).map(|r| p.decode(r)).collect();
        let ok: Vec<&PfCase> = decoded.iter().filter_map(|c| c.as_ref().ok()).collect();
        let mut states = Vec::new();
        if !ok.is_empty() {
            let mut packed = vec![0.0; ok.len() * stride];
            for (c, dst) in ok.iter().zip(packed.chunks_exact_mut(stride)) {
                pf_pack(c, nb_max, dst);
            }
            let n = ok.len();
            let systems = upload(b, &packed)?;
            let (vm, va) = (alloc::<f64>(b, n * nb_max)?, alloc::<f64>(b, n * nb_max)?);
            let (stats, status) = (alloc::<f64>(b, n * 3)?, alloc::<u32>(b, n * 3)?);
            power_flow(b, &vm, &va, &stats, &status, &systems, n, nb_max, p.tolerance(), p.max_iterations())?;
            let (vm, va) = (download::<f64>(b, &vm, n * nb_max)?, download::<f64>(b, &va, n * nb_max)?);
            let (stats, status) = (download::<f64>(b, &stats, n * 3)?, download::<u32>(b, &status, n * 3)?);
            for (j, c) in ok.iter().enumerate() {
                let nb = c.n_buses();
                let (it, mismatch, rcond) = (stats[3 * j] as usize, stats[3 * j + 1], stats[3 * j + 2]);
                let st = &status[3 * j..3 * j + 3];
                states.push(match NewtonError::from_status(st[0], st[1], st[2], it, mismatch, rcond) {
                    Some(e) => Err(e.to_string()),
                    None => Ok(PfSolution {
                        vm: vm[j * nb_max..j * nb_max + nb].to_vec(),
                        va: va[j * nb_max..j * nb_max + nb].to_vec(),
                        iterations: it,
                        mismatch,
                    }),
                });
            }
        }
        let mut states = states.into_iter();
        Ok(decoded
            .into_iter()
            .map(|c| {
                let c = c?;
                let s = states.next().expect("one state per decoded row")?;
                Ok((c, s))
            })
            .collect())
    }

    /// Packed systems -> (x or error, rcond) per system, like `LinearSolve::run`.
    pub fn solve_detailed(&self, b: &CudaBackend, inputs: &[f64], rows: usize) -> Result<Vec<Solved>> {
        match &self.kind {
            Kind::LinearSolve { n, min_rcond } => {
                assert_eq!(
                    inputs.len(),
                    rows * self.n_inputs,
                    "solve_detailed: inputs must be (rows, n*n + n)"
                );
                self.solve(b, inputs, rows, *n, *min_rcond)
            }
            _ => Err(Error::Request("solve_detailed: not a linear-solve expert".into())),
        }
    }

    fn solve(
        &self,
        b: &CudaBackend,
        inputs: &[f64],
        rows: usize,
        n: usize,
        min_rcond: f64,
    ) -> Result<Vec<Solved>> {
        let systems = upload(b, inputs)?;
        let x = alloc::<f64>(b, rows * n)?;
        let status = alloc::<u32>(b, rows * 2)?;
        let rcond = alloc::<f64>(b, rows)?;
        lu_solve(b, &x, &status, &rcond, &systems, rows, n, min_rcond)?;
        let xs = download::<f64>(b, &x, rows * n)?;
        let st = download::<u32>(b, &status, rows * 2)?;
        let rc = download::<f64>(b, &rcond, rows)?;
        Ok((0..rows)
            .map(|i| {
                let x = match SolveError::from_status(st[2 * i], st[2 * i + 1], rc[i], min_rcond) {
                    Some(e) => Err(e),
                    None => Ok(xs[i * n..(i + 1) * n].to_vec()),
                };
                Solved { x, rcond: rc[i] }
            })
            .collect())
    }
}
