//! kernels/expert_f64.cu, or its CPU twin: routed batches through the f64 experts
//! the demo uses, a dense solve (n = 32, LU with partial pivoting) and an AC power
//! flow (Newton-Raphson on the IEEE 30-bus case of the PYPOWER fixture), for one
//! routed sequence and a full batch. Throughput is in systems (rows) per second.

use super::timing::time;

use criterion::{BenchmarkId, Criterion, Throughput};
use pimoe::backend::Backend;
use pimoe::grid::{load_cases, Analysis, Quantity, Question};
use pimoe::pimoe::experts::{Expert, LinearSolve, PowerFlow};
use pimoe::sampling::Rng;

/// Diagonally dominant systems: well conditioned, so every row is solved.
fn systems(n: usize, rows: usize) -> Vec<f64> {
    let mut r = Rng::new(11);
    let mut out = Vec::with_capacity(rows * (n * n + n));
    for _ in 0..rows {
        for i in 0..n {
            for j in 0..n {
                let v = r.next_f32() as f64 - 0.5;
                out.push(if i == j { v + n as f64 } else { v });
            }
        }
        out.extend((0..n).map(|_| r.next_f32() as f64));
    }
    out
}

pub fn bench<B: Backend>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(format!("{}_expert_f64", b.name()));
    let solve = Expert::LinearSolve(LinearSolve::new(32).expect("n = 32 is in range"));
    let prepared = b.prepare_expert(&solve).expect("prepare the solver");
    for &rows in &[1usize, 64] {
        let x = systems(32, rows);
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(BenchmarkId::new("linear_solve_n32", format!("rows{rows}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || {
                    b.run_expert(&prepared, &solve, &x, rows).expect("solve");
                })
            })
        });
    }
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/powerflow/cases.json");
    let cases = load_cases(&fixture).expect("the PYPOWER fixture");
    let case30 = &cases.iter().find(|c| c.case.name == "case30").expect("case30 in the fixture").case;
    let p = PowerFlow::new(32, 48, 1e-10, 20).expect("valid limits");
    let q = Question { analysis: Analysis::Ac, quantity: Quantity::VoltageMagnitude { bus: 30 } };
    let row = p.encode(case30, &q).expect("case30 fits 32 buses, 48 branches");
    let flow = Expert::PowerFlow(p);
    let prepared = b.prepare_expert(&flow).expect("prepare the power flow");
    for &rows in &[1usize, 16] {
        let x: Vec<f64> = row.iter().copied().cycle().take(rows * row.len()).collect();
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(BenchmarkId::new("power_flow_case30", format!("rows{rows}")), |bch| {
            bch.iter_custom(|iters| {
                time(b, iters, || {
                    b.run_expert(&prepared, &flow, &x, rows).expect("power flow");
                })
            })
        });
    }
    g.finish();
}
