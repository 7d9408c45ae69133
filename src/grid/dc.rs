//! The DC power flow as a linear system for the `linear-solve` expert.
//!
//! As PYPOWER defines it (`makeBdc`, `rundcpf`): each branch has susceptance
//! b = (1 / x) / tap; B = sum over branches of b (e_f - e_t)(e_f - e_t)^T; the
//! injections are P = (Pg - Pd) / base - Gs / base; the slack angle is 0, so its row
//! and column are dropped and B' theta' = P' is solved for the other angles (radians).
//!
//! The system is augmented with one unknown y, the asked quantity, and the row that
//! defines it: y - c . theta = 0, with c = 180/pi at the asked bus for an angle in
//! degrees, or c = base b (+1 at the from bus, -1 at the to bus) for a flow in MW at
//! the from end (PYPOWER's Pf = base b (theta_f - theta_t)). y is unknown 0, so it is
//! the expert's first output, `{value}` in the format: the number the answer needs
//! comes out of the f64 solve itself, with no step of ours between the expert and the
//! text, and the trace shows the whole system. Unknowns: [y, theta of every non-slack
//! bus in bus order].
//!
//! An expert of order n larger than the system gets an identity block with zero
//! right-hand side below it. Those rows have zeros in the real columns, so partial
//! pivoting never picks them and elimination leaves them (and is left by them)
//! unchanged: the real unknowns come out with the same bits (tests/grid.rs checks).

use std::f64::consts::PI;

use super::model::{Analysis, Case, Quantity, Question, Target};

/// The unknowns of `case`'s augmented DC system: the asked quantity and one angle
/// per non-slack bus.
pub fn dc_unknowns(case: &Case) -> usize {
    case.buses.len()
}

/// A (n, n) row-major then rhs (n): the linear-solve expert's input row for
/// `question` about `case`, or why there is none.
pub fn dc_system(case: &Case, question: &Question, n: usize) -> Result<Vec<f64>, String> {
    if question.analysis != Analysis::Dc {
        return Err(format!("the question asks for the {} power flow, not DC", question.analysis.name()));
    }
    case.check(Analysis::Dc).map_err(|e| e.to_string())?;
    let target = case.locate(question)?;
    let size = dc_unknowns(case);
    if size > n {
        return Err(format!(
            "the grid has {} buses, so {size} unknowns (the asked quantity and {} angles); the \
             linear-solve expert takes systems up to n={n}",
            case.buses.len(),
            size - 1
        ));
    }
    let slack = case.slack().expect("checked");
    // Unknown index of each bus's angle; None for the slack (angle 0).
    let unknown: Vec<Option<usize>> =
        (0..case.buses.len()).map(|i| (i != slack).then(|| if i < slack { i + 1 } else { i })).collect();
    let position = |id: u32| case.position(id).expect("checked");
    let susceptance = |l: usize| {
        let br = &case.branches[l];
        (1.0 / br.x) / br.tap
    };

    let mut a = vec![0.0; n * n];
    let mut rhs = vec![0.0; n];
    a[0] = 1.0;
    match (question.quantity, target) {
        (Quantity::VoltageAngle { .. }, Target::Bus(i)) => {
            if let Some(k) = unknown[i] {
                a[k] = -(180.0 / PI);
            }
        }
        (Quantity::ActivePowerFlow { .. }, Target::Branch(l)) => {
            let c = case.base_mva * susceptance(l);
            let br = &case.branches[l];
            for (bus, sign) in [(br.from, 1.0), (br.to, -1.0)] {
                if let Some(k) = unknown[position(bus)] {
                    a[k] -= sign * c;
                }
            }
        }
        _ => unreachable!("locate pairs angles with buses and flows with branches; DC has no magnitudes"),
    }
    for (l, br) in case.branches.iter().enumerate() {
        let b = susceptance(l);
        let (f, t) = (unknown[position(br.from)], unknown[position(br.to)]);
        for (p, q) in [(f, f), (t, t)] {
            if let (Some(p), Some(q)) = (p, q) {
                a[p * n + q] += b;
            }
        }
        for (p, q) in [(f, t), (t, f)] {
            if let (Some(p), Some(q)) = (p, q) {
                a[p * n + q] -= b;
            }
        }
    }
    for (i, bus) in case.buses.iter().enumerate() {
        if let Some(k) = unknown[i] {
            rhs[k] = (bus.pg - bus.pd) / case.base_mva - bus.gs / case.base_mva;
        }
    }
    for k in size..n {
        a[k * n + k] = 1.0;
    }
    a.extend_from_slice(&rhs);
    Ok(a)
}
