//! power_flow_f64 (kernels/expert_f64.cu) against the CPU's Newton-Raphson
//! (src/pimoe/experts/power_flow.rs) on every PYPOWER fixture case, mixed with rows
//! that must fail (non-convergence, a split grid, malformed rows). Both start from the
//! same Ybus bits and run the same operations; only cos/sin differ, so the states agree
//! to 1e-12 relative rather than bit for bit, the iterations exactly, the outcomes by
//! kind. The GPU must also repeat itself bit for bit.

use crate::harness::gpu;
use pimoe::backend::cuda::expert::GpuExpert;
use pimoe::grid::{load_cases, Analysis, Quantity, Question};
use pimoe::pimoe::experts::{Expert, PowerFlow};

/// |g - c| <= tol * max(|c|, 1): relative for the state's O(1) values and the answers,
/// absolute near zero (the slack angle is exactly 0 on both).
fn close(g: f64, c: f64, tol: f64) -> bool {
    (g - c).abs() <= tol * c.abs().max(1.0)
}

#[test]
fn power_flow_matches_cpu() {
    let Some(b) = gpu("power_flow_matches_cpu") else { return };
    let cases = load_cases(&crate::common::fixtures().join("powerflow/cases.json")).unwrap();
    let p = PowerFlow::new(32, 64, 1e-10, 20).unwrap();
    let e = Expert::PowerFlow(p.clone());
    let g = GpuExpert::upload(&b, &e).unwrap();

    let mut rows = Vec::new();
    for (k, sc) in cases.iter().enumerate() {
        let c = &sc.case;
        let quantity = match k % 3 {
            0 => Quantity::VoltageAngle { bus: c.buses[k % c.buses.len()].id },
            1 => Quantity::VoltageMagnitude { bus: c.buses[k % c.buses.len()].id },
            _ => {
                let br = &c.branches[k % c.branches.len()];
                Quantity::ActivePowerFlow { from: br.from, to: br.to }
            }
        };
        rows.extend(p.encode(c, &Question { analysis: Analysis::Ac, quantity }).unwrap());
    }
    // Rows that must fail: loads far past the nose point, a grid split in two, a NaN.
    let mut heavy = cases[1].case.clone();
    heavy.buses.iter_mut().for_each(|b| (b.pd, b.qd) = (b.pd * 10.0, b.qd * 10.0));
    let q = Question { analysis: Analysis::Ac, quantity: Quantity::VoltageAngle { bus: 5 } };
    rows.extend(p.encode(&heavy, &q).unwrap());
    let case14 = &cases.iter().find(|c| c.case.name == "case14").unwrap().case;
    rows.extend(crate::common::split_power_flow_row(&p.encode(case14, &q).unwrap(), p.max_buses()));
    let mut nan = p.encode(&cases[0].case, &q).unwrap();
    nan[7] = f64::NAN;
    rows.extend(nan);
    let n = rows.len() / p.n_inputs();

    let cpu = e.run(&rows, n);
    let got = g.run(&b, &rows, n).unwrap();
    assert_eq!(got.len(), n);
    let mut same_bits = 0;
    for (i, (gr, cr)) in got.iter().zip(&cpu).enumerate() {
        match (gr, cr) {
            (Ok(gv), Ok(cv)) => {
                assert!(close(gv[0], cv[0], 1e-12), "row {i}: answer GPU {} CPU {}", gv[0], cv[0]);
                assert_eq!(gv[1], cv[1], "row {i}: iterations");
                assert!(gv[2] < 1e-10, "row {i}: GPU mismatch {}", gv[2]);
                same_bits += (gv[0].to_bits() == cv[0].to_bits()) as usize;
            }
            (Err(ge), Err(ce)) => {
                // The same message up to the figures (a diverging mismatch is chaotic).
                let kind = |s: &str| s.split(|c: char| c.is_ascii_digit()).next().unwrap_or("").to_string();
                assert_eq!(kind(ge), kind(ce), "row {i}: GPU {ge:?} CPU {ce:?}");
            }
            _ => panic!("row {i}: GPU {gr:?} CPU {cr:?}"),
        }
    }
    assert!(cpu[n - 3].is_err() && cpu[n - 2].is_err() && cpu[n - 1].is_err(), "the failing rows must fail");
    eprintln!("power flow: {same_bits}/{} answers bitwise equal to the CPU", n - 3);

    // The whole state, bus by bus.
    let states = g.power_flow_rows(&b, &p, &rows, n).unwrap();
    for (i, r) in states.iter().enumerate().take(n - 3) {
        let (c, s) = r.as_ref().unwrap_or_else(|e| panic!("row {i}: {e}"));
        let cpu = c.solve(1e-10, 20).unwrap();
        for k in 0..s.vm.len() {
            assert!(close(s.vm[k], cpu.vm[k], 1e-12), "row {i} bus {k}: |V| {} vs {}", s.vm[k], cpu.vm[k]);
            assert!(close(s.va[k], cpu.va[k], 1e-12), "row {i} bus {k}: angle {} vs {}", s.va[k], cpu.va[k]);
        }
    }

    // Repeatable bit for bit.
    let again = g.run(&b, &rows, n).unwrap();
    assert_eq!(format!("{got:?}"), format!("{again:?}"), "the GPU does not repeat itself");
}
