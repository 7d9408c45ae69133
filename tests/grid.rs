//! The power-flow tasks against PYPOWER (tests/fixtures/powerflow/cases.json, made by
//! make_powerflow.py there; no Python needed here): AC voltages and angles to 1e-8,
//! DC angles to 1e-10 rad, flows to tolerances derived from those; the grid text form
//! (render/parse round trip, errors naming the line); T2C from text equal to T2C from
//! the struct, bit for bit; identity padding; non-convergence as a row error; and a
//! routed run through the scheduler.

mod common;

use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::OnceLock;

use pimoe::backend::cpu::CpuBackend;
use pimoe::grid::{
    dc_system, load_cases, parse, render, Analysis, BusKind, Case, Quantity, Question, SolvedCase,
};
use pimoe::pimoe::experts::power_flow::{branch_admittance, PowerFlow};
use pimoe::pimoe::experts::{Expert, LinearSolve};
use pimoe::pimoe::t2c::grid_inputs;
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance, Scheduler, SchedulerConfig};
use pimoe::{Engine, Prompt, Request};

fn cases() -> &'static [SolvedCase] {
    static CASES: OnceLock<Vec<SolvedCase>> = OnceLock::new();
    CASES.get_or_init(|| load_cases(&common::fixtures().join("powerflow/cases.json")).unwrap())
}

fn case(name: &str) -> &'static SolvedCase {
    cases().iter().find(|c| c.case.name == name).unwrap()
}

fn pf() -> PowerFlow {
    PowerFlow::new(32, 64, 1e-10, 20).unwrap()
}

fn q(analysis: Analysis, quantity: Quantity) -> Question {
    Question { analysis, quantity }
}

/// Every question a case can be asked under `analysis`.
fn questions(c: &Case, analysis: Analysis) -> Vec<Question> {
    let mut out = Vec::new();
    for b in &c.buses {
        out.push(q(analysis, Quantity::VoltageAngle { bus: b.id }));
        if analysis == Analysis::Ac {
            out.push(q(analysis, Quantity::VoltageMagnitude { bus: b.id }));
        }
    }
    for br in &c.branches {
        out.push(q(analysis, Quantity::ActivePowerFlow { from: br.from, to: br.to }));
    }
    out
}

fn chatml(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a power systems engineer.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n\
         <|im_start|>assistant\nLet me work it out. The answer is "
    )
}

// ---------------------------------------------------------------------------------
// Ground truth
// ---------------------------------------------------------------------------------

#[test]
fn fixture_has_the_three_ieee_cases_and_their_variants() {
    let all = cases();
    for base in ["case9", "case14", "case30"] {
        let n = all.iter().filter(|c| c.base == base).count();
        assert!(n >= 41, "{base}: {n} cases");
        assert!(all.iter().any(|c| c.case.name == base), "{base} itself is missing");
    }
    let c30 = case("case30");
    assert_eq!((c30.case.buses.len(), c30.case.branches.len()), (30, 41));
}

#[test]
fn ac_voltages_angles_and_flows_agree_with_pypower() {
    let p = pf();
    let (mut worst_vm, mut worst_va, mut worst_pf) = (0f64, 0f64, 0f64);
    for sc in cases() {
        let c = &sc.case;
        let row = p.encode(c, &q(Analysis::Ac, Quantity::VoltageMagnitude { bus: c.buses[0].id })).unwrap();
        let (pc, sol) = p.solve_row(&row).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(sol.mismatch < 1e-10 && sol.iterations <= 10, "{}: {sol:?}", c.name);
        for i in 0..c.buses.len() {
            let dvm = (sol.vm[i] - sc.ac.vm[i]).abs();
            let dva = (sol.va[i] - sc.ac.va_deg[i].to_radians()).abs();
            assert!(
                dvm < 1e-8,
                "{} bus {}: |V| {} vs PYPOWER {}",
                c.name,
                c.buses[i].id,
                sol.vm[i],
                sc.ac.vm[i]
            );
            assert!(
                dva < 1e-8,
                "{} bus {}: angle {} rad vs PYPOWER {} deg",
                c.name,
                c.buses[i].id,
                sol.va[i],
                sc.ac.va_deg[i]
            );
            (worst_vm, worst_va) = (worst_vm.max(dvm), worst_va.max(dva));
        }
        for (l, br) in c.branches.iter().enumerate() {
            // dP <= base (|I_f| + |V_f| (|Yff| + |Yft|)) |dV| with |dV| <= 2e-8 (both
            // solutions within 1e-8 of the truth in magnitude and angle).
            let (yff, yft, _) = branch_admittance(br.r, br.x, br.b, br.tap);
            let abs = |z: pimoe::pimoe::experts::power_flow::C| z.re.hypot(z.im);
            let tol = c.base_mva * 2e-8 * 1.2 * 2.0 * (abs(yff) + abs(yft));
            let got = pc.flow_mw(&sol, l);
            let d = (got - sc.ac.pf_mw[l]).abs();
            assert!(d < tol, "{} branch {l}: {got} MW vs PYPOWER {} (tol {tol:.1e})", c.name, sc.ac.pf_mw[l]);
            worst_pf = worst_pf.max(d);
        }
    }
    println!("AC vs PYPOWER over {} cases: max |dV| {worst_vm:.1e} p.u., max |dtheta| {worst_va:.1e} rad, max |dPf| {worst_pf:.1e} MW", cases().len());
}

#[test]
fn the_expert_answers_every_ac_question_with_pypowers_number() {
    let p = pf();
    for sc in cases().iter().step_by(7) {
        let qs = questions(&sc.case, Analysis::Ac);
        let rows: Vec<f64> = qs.iter().flat_map(|q| p.encode(&sc.case, q).unwrap()).collect();
        let out = Expert::PowerFlow(p.clone()).run(&rows, qs.len());
        for (q, r) in qs.iter().zip(out) {
            let y = r.unwrap_or_else(|e| panic!("{} {q:?}: {e}", sc.case.name));
            let truth = sc.truth(q).unwrap();
            let tol = match q.quantity {
                Quantity::VoltageAngle { .. } => 1e-8f64.to_degrees(),
                Quantity::VoltageMagnitude { .. } => 1e-8,
                Quantity::ActivePowerFlow { .. } => 1e-4,
            };
            assert!((y[0] - truth).abs() < tol, "{} {q:?}: {} vs PYPOWER {truth}", sc.case.name, y[0]);
            assert!(y[1] >= 1.0 && y[2] < 1e-10, "{q:?}: iterations {}, mismatch {}", y[1], y[2]);
        }
    }
}

#[test]
fn dc_angles_and_flows_agree_with_pypower() {
    let solver = LinearSolve::new(32).unwrap();
    let (mut worst_va, mut worst_pf) = (0f64, 0f64);
    for sc in cases() {
        let c = &sc.case;
        for question in questions(c, Analysis::Dc) {
            let sys = dc_system(c, &question, 32).unwrap();
            let x =
                solver.solve(&sys[..32 * 32], &sys[32 * 32..]).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let truth = sc.truth(&question).unwrap();
            match question.quantity {
                Quantity::VoltageAngle { .. } => {
                    let d = (x[0] - truth).to_radians().abs();
                    assert!(d < 1e-10, "{} {question:?}: {} deg vs PYPOWER {truth}", c.name, x[0]);
                    worst_va = worst_va.max(d);
                }
                Quantity::ActivePowerFlow { from, to } => {
                    // dP = base b (dtheta_f - dtheta_t), each angle within 1e-10 rad.
                    let br = c.branches.iter().find(|b| b.from == from && b.to == to).unwrap();
                    let tol = c.base_mva * (1.0 / br.x / br.tap).abs() * 2e-10 + 1e-12 * truth.abs();
                    let d = (x[0] - truth).abs();
                    assert!(
                        d < tol,
                        "{} {question:?}: {} MW vs PYPOWER {truth} (tol {tol:.1e})",
                        c.name,
                        x[0]
                    );
                    worst_pf = worst_pf.max(d);
                }
                Quantity::VoltageMagnitude { .. } => unreachable!(),
            }
            // The angles themselves (unknowns 1.., the non-slack buses in order).
            let mut k = 1;
            for (i, b) in c.buses.iter().enumerate() {
                if b.kind != BusKind::Slack {
                    assert!((x[k] - sc.dc.va_deg[i].to_radians()).abs() < 1e-10, "{} bus {}", c.name, b.id);
                    k += 1;
                }
            }
        }
    }
    println!("DC vs PYPOWER: max |dtheta| {worst_va:.1e} rad, max |dPf| {worst_pf:.1e} MW");
}

#[test]
fn identity_padding_changes_no_bit() {
    for sc in cases().iter().step_by(5) {
        let c = &sc.case;
        let nb = c.buses.len();
        for question in questions(c, Analysis::Dc).into_iter().step_by(3) {
            let exact = dc_system(c, &question, nb).unwrap();
            let x0 = LinearSolve::new(nb).unwrap().solve(&exact[..nb * nb], &exact[nb * nb..]).unwrap();
            for n in [nb + 1, 33, 64] {
                let padded = dc_system(c, &question, n).unwrap();
                let x = LinearSolve::new(n).unwrap().solve(&padded[..n * n], &padded[n * n..]).unwrap();
                let same = x0.iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} {question:?}: padding to {n} changed bits", c.name);
                assert!(x[nb..].iter().all(|&v| v == 0.0), "padding unknowns must be 0");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Text form and T2C
// ---------------------------------------------------------------------------------

fn bits_equal(a: &Case, b: &Case) -> bool {
    let f = |c: &Case| -> Vec<u64> {
        let mut v = vec![c.base_mva.to_bits()];
        for x in &c.buses {
            v.extend([x.id as u64, x.kind as u64]);
            v.extend([x.pd, x.qd, x.pg, x.vset, x.gs, x.bs].map(f64::to_bits));
        }
        for x in &c.branches {
            v.extend([x.from as u64, x.to as u64]);
            v.extend([x.r, x.x, x.b, x.tap].map(f64::to_bits));
        }
        v
    };
    a.name == b.name && f(a) == f(b)
}

#[test]
fn parse_reads_back_what_render_wrote_bit_for_bit() {
    for sc in cases() {
        for analysis in [Analysis::Dc, Analysis::Ac] {
            for question in questions(&sc.case, analysis).into_iter().step_by(5) {
                let text = render(&sc.case, &question);
                let (c, got) = parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", sc.case.name));
                assert_eq!(got, question);
                assert!(bits_equal(&c, &sc.case.carried(analysis)), "{}: {analysis:?}\n{text}", sc.case.name);
                // Inside a chat prompt with a partial answer after it, too.
                assert_eq!(parse(&chatml(&text)).unwrap(), (c, question));
            }
        }
    }
    // Awkward numbers survive: -0, tiny and huge values, a non-default tap.
    let mut c = case("case9").case.clone();
    c.buses[4].pd = 1e-7;
    c.buses[4].gs = -0.0;
    c.buses[6].qd = 123456789.125;
    c.branches[2].tap = 0.97;
    c.branches[3].r = 0.1 + 0.2;
    let question = q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 });
    let (back, _) = parse(&render(&c, &question)).unwrap();
    assert!(bits_equal(&back, &c.carried(Analysis::Ac)), "{}", render(&c, &question));
}

#[test]
fn the_text_form_is_as_documented() {
    let c = &case("case9").case;
    let text = render(c, &q(Analysis::Dc, Quantity::ActivePowerFlow { from: 4, to: 5 }));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Power grid, base 100 MVA, 9 buses, 9 branches.");
    assert_eq!(lines[1], "Buses (id type Pd_MW Pg_MW):");
    assert_eq!(lines[2], "1 slack 0 0");
    assert_eq!(lines[6], "5 PQ 90 0");
    assert_eq!(lines[11], "Branches (from to x_pu):");
    assert_eq!(lines[12], "1 4 0.0576");
    assert_eq!(
        lines[21],
        "Question: using a DC power flow, what is the active power flow from bus 4 to bus 5 in MW, measured at bus 4?"
    );
    let ac = render(c, &q(Analysis::Ac, Quantity::VoltageMagnitude { bus: 5 }));
    let lines: Vec<&str> = ac.lines().collect();
    assert_eq!(lines[1], "Buses (id type Pd_MW Qd_MVAr Pg_MW V_pu):");
    assert_eq!(lines[3], "2 PV 0 0 163 1");
    assert_eq!(lines[6], "5 PQ 90 30 0 -");
    assert_eq!(lines[11], "Branches (from to r_pu x_pu b_pu):");
    assert_eq!(lines[13], "4 5 0.017 0.092 0.158");
    assert_eq!(
        lines[21],
        "Question: using an AC power flow, what is the voltage magnitude at bus 5 in p.u.?"
    );
    // case14 has transformers and a shunt: the optional columns appear.
    let ac14 = render(&case("case14").case, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 9 }));
    assert!(ac14.contains("Buses (id type Pd_MW Qd_MVAr Pg_MW V_pu Bs_MVAr):\n"), "{ac14}");
    assert!(ac14.contains("Branches (from to r_pu x_pu b_pu tap):\n"), "{ac14}");
    assert!(ac14.ends_with("what is the voltage angle at bus 9 in degrees?"));
}

#[test]
fn t2c_on_a_chat_prompt_equals_building_from_the_struct() {
    let solve = Expert::LinearSolve(LinearSolve::new(32).unwrap());
    let flow = Expert::PowerFlow(pf());
    for sc in cases().iter().step_by(3) {
        for (analysis, expert) in [(Analysis::Dc, &solve), (Analysis::Ac, &flow)] {
            for question in questions(&sc.case, analysis).into_iter().step_by(4) {
                let context = chatml(&render(&sc.case, &question));
                let from_text = grid_inputs(analysis, expert, &context).unwrap();
                let from_struct = match expert {
                    Expert::LinearSolve(_) => dc_system(&sc.case, &question, 32).unwrap(),
                    _ => pf().encode(&sc.case, &question).unwrap(),
                };
                assert_eq!(from_text.len(), expert.n_inputs());
                let same = from_text.iter().zip(&from_struct).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} {question:?}: T2C from text differs from the struct", sc.case.name);
            }
        }
    }
    // A DC expert refuses an AC question, and the reverse.
    let ctx = chatml(&render(&case("case9").case, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 })));
    let err = grid_inputs(Analysis::Dc, &solve, &ctx).unwrap_err();
    assert!(err.reason.contains("AC power flow") && err.reason.contains("DC questions"), "{err}");
    assert!(err.pass_on, "the AC expert may take it: {err:?}");
}

#[test]
fn grids_too_big_for_the_expert_are_errors() {
    let c = &case("case30").case;
    let angle = q(Analysis::Dc, Quantity::VoltageAngle { bus: 5 });
    let err = dc_system(c, &angle, 16).unwrap_err();
    assert!(err.contains("30 buses") && err.contains("n=16"), "{err}");
    let small = PowerFlow::new(16, 64, 1e-10, 20).unwrap();
    let err = small.encode(c, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 })).unwrap_err();
    assert!(err.contains("30 buses") && err.contains("max_buses"), "{err}");
    let few = PowerFlow::new(32, 40, 1e-10, 20).unwrap();
    let err = few.encode(c, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 })).unwrap_err();
    assert!(err.contains("41 branches") && err.contains("max_branches"), "{err}");
    // 39 PQ buses and a slack would need a Jacobian of order 78 (checked when a row is decoded).
    let mut big = case("case30").case.clone();
    big.buses.iter_mut().filter(|b| b.kind == BusKind::Pv).for_each(|b| b.kind = BusKind::Pq);
    let p = PowerFlow::new(64, 64, 1e-10, 20).unwrap();
    let mut rows = Vec::new();
    let pad = |extra: u32| pimoe::grid::Bus {
        id: 100 + extra,
        kind: BusKind::Pq,
        pd: 1.0,
        qd: 0.5,
        pg: 0.0,
        vset: 1.0,
        gs: 0.0,
        bs: 0.0,
    };
    for k in 0..10 {
        big.buses.push(pad(k));
        big.branches.push(pimoe::grid::Branch { from: 100 + k, to: 1, r: 0.01, x: 0.1, b: 0.0, tap: 1.0 });
    }
    rows.extend(p.encode(&big, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 })).unwrap());
    let err = p.solve_row(&rows).unwrap_err();
    assert!(err.contains("order 78") && err.contains("64"), "{err}");
}

#[test]
fn malformed_grid_texts_name_the_line() {
    let base = render(&case("case9").case, &q(Analysis::Ac, Quantity::VoltageMagnitude { bus: 5 }));
    let dc_table_ac_question =
        render(&case("case9").case, &q(Analysis::Dc, Quantity::VoltageAngle { bus: 5 }))
            .replace("using a DC", "using an AC");
    // Branch rows are lines 13..=21.
    fn with_tap_column(t: &str) -> String {
        let lines: Vec<String> = t
            .lines()
            .enumerate()
            .map(|(i, l)| match i {
                11 => l.replace("b_pu):", "b_pu tap):"),
                12..=20 => format!("{l} 1"),
                _ => l.to_string(),
            })
            .collect();
        lines.join("\n")
    }
    // (what, edit, line, words the message must contain)
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, usize, &str)> = vec![
        (
            "malformed number",
            Box::new(|t: &str| t.replace("5 PQ 90 30", "5 PQ 9O 30")),
            7,
            "malformed number \"9O\"",
        ),
        ("infinite number", Box::new(|t: &str| t.replace("5 PQ 90 30", "5 PQ inf 30")), 7, "Pd_MW"),
        (
            "missing column",
            Box::new(|t: &str| t.replace("5 PQ 90 30 0 -", "5 PQ 90 30 0")),
            7,
            "expected 6 values",
        ),
        (
            "unknown bus",
            Box::new(|t: &str| t.replace("\n4 5 0.017", "\n4 15 0.017")),
            14,
            "bus 15 is not in the bus table",
        ),
        (
            "two slack buses",
            Box::new(|t: &str| t.replace("2 PV 0 0 163 1", "2 slack 0 0 163 1")),
            4,
            "second slack",
        ),
        ("no slack", Box::new(|t: &str| t.replace("1 slack", "1 PV")), 1, "no slack bus"),
        ("duplicate id", Box::new(|t: &str| t.replace("\n3 PV", "\n2 PV")), 5, "bus 2 is listed twice"),
        ("V at a PQ bus", Box::new(|t: &str| t.replace("5 PQ 90 30 0 -", "5 PQ 90 30 0 1")), 7, "write -"),
        (
            "no V at a PV bus",
            Box::new(|t: &str| t.replace("2 PV 0 0 163 1", "2 PV 0 0 163 -")),
            4,
            "set point",
        ),
        ("unknown type", Box::new(|t: &str| t.replace("5 PQ", "5 load")), 7, "unknown bus type"),
        ("unknown column", Box::new(|t: &str| t.replace("Pd_MW", "Pd_kW")), 2, "unknown column \"Pd_kW\""),
        (
            "missing AC column",
            Box::new(move |_: &str| dc_table_ac_question.clone()),
            2,
            "needs the column Qd_MVAr",
        ),
        ("zero reactance", Box::new(|t: &str| t.replace("0.017 0.092", "0.017 0")), 14, "reactance"),
        (
            "bad tap",
            Box::new(|t: &str| with_tap_column(t).replace("0.158 1", "0.158 -1")),
            14,
            "tap ratio must be positive",
        ),
        ("self loop", Box::new(|t: &str| t.replace("\n4 5 0.017", "\n4 4 0.017")), 14, "to itself"),
        (
            "too few rows",
            Box::new(|t: &str| t.replace("9 branches", "10 branches")),
            22,
            "the header says 10 branches, but the table has 9 rows",
        ),
        ("too many rows", Box::new(|t: &str| t.replace("9 branches", "8 branches")), 21, "more rows follow"),
        (
            "huge count",
            Box::new(|t: &str| t.replace("9 buses", "99999999999 buses")),
            12,
            "99999999999 buses",
        ),
        (
            "too few bus rows",
            Box::new(|t: &str| t.replace("9 buses", "10 buses")),
            12,
            "the header says 10 buses",
        ),
        ("bad header", Box::new(|t: &str| t.replace("base 100 MVA", "base 100 kVA")), 1, "header"),
        (
            "unknown question bus",
            Box::new(|t: &str| t.replace("at bus 5 in", "at bus 42 in")),
            22,
            "bus 42 is not in the grid",
        ),
        (
            "malformed question",
            Box::new(|t: &str| t.replace("what is the voltage magnitude", "what's the voltage")),
            22,
            "the question must read",
        ),
        ("no question", Box::new(|t: &str| t[..t.find("Question").unwrap()].to_string()), 22, "no question"),
        ("magnitude in DC", Box::new(|t: &str| t.replace("an AC", "a DC")), 22, "no voltage magnitudes"),
        (
            "reversed flow",
            Box::new(|t: &str| {
                t.replace(
                    "the voltage magnitude at bus 5 in p.u.?",
                    "the active power flow from bus 5 to bus 4 in MW, measured at bus 5?",
                )
            }),
            22,
            "listed from bus 4 to bus 5",
        ),
        (
            "parallel branches",
            Box::new(|t: &str| {
                t.replace("9 branches", "10 branches")
                    .replace("\n4 5 0.017 0.092 0.158\n", "\n4 5 0.017 0.092 0.158\n4 5 0.02 0.1 0.1\n")
                    .replace(
                        "the voltage magnitude at bus 5 in p.u.?",
                        "the active power flow from bus 4 to bus 5 in MW, measured at bus 4?",
                    )
            }),
            23,
            "2 parallel branches",
        ),
    ];
    for (what, edit, line, needle) in cases {
        let text = edit(&base);
        assert_ne!(text, base, "{what}: the edit changed nothing");
        let err = parse(&text).expect_err(what);
        let msg = err.to_string();
        if line > 0 {
            assert_eq!(err.line, line, "{what}: {msg}");
        }
        assert!(msg.contains(needle), "{what}: the error does not say {needle:?}: {msg}");
        // Inside a chat prompt the line numbers count the chat lines before it.
        let in_chat = parse(&chatml(&text)).expect_err(what);
        assert_eq!(in_chat.line, err.line + if err.line > 0 { 3 } else { 0 }, "{what}: {in_chat}");
    }
    let err = parse("What is the capital of France?").unwrap_err();
    assert!(err.to_string().contains("no grid"), "{err}");
    // The last grid block counts: an earlier broken one is ignored.
    let two = format!("{}\n\n{base}", base.replace("5 PQ 90 30", "5 PQ 9O 30"));
    assert!(parse(&two).is_ok());
}

// ---------------------------------------------------------------------------------
// Rows that cannot be solved
// ---------------------------------------------------------------------------------

#[test]
fn non_convergence_is_a_row_error_and_spares_the_other_rows() {
    let p = pf();
    let sc = case("case14");
    let question = q(Analysis::Ac, Quantity::VoltageMagnitude { bus: 14 });
    let good = p.encode(&sc.case, &question).unwrap();
    let mut heavy = sc.case.clone();
    for b in &mut heavy.buses {
        (b.pd, b.qd) = (b.pd * 10.0, b.qd * 10.0);
    }
    let bad = p.encode(&heavy, &question).unwrap();
    let mut nan = good.clone();
    nan[5 + 7 * 3 + 1] = f64::NAN;
    let rows = [good.clone(), bad.clone(), nan, good.clone()].concat();
    let out = Expert::PowerFlow(p.clone()).run(&rows, 4);
    let alone = Expert::PowerFlow(p.clone()).run(&good, 1).pop().unwrap().unwrap();
    for i in [0, 3] {
        let y = out[i].as_ref().unwrap();
        assert!(y.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "row {i} changed");
        assert!((y[0] - sc.truth(&question).unwrap()).abs() < 1e-8);
    }
    let err = out[1].as_ref().unwrap_err();
    assert!(err.starts_with("Newton-Raphson"), "{err}");
    println!("loads x10: {err}");
    assert_eq!(out[2].as_ref().unwrap_err(), &format!("non-finite input in column {}", 5 + 7 * 3 + 1));
    // Too few iterations: the plain message with the mismatch.
    let tight = PowerFlow::new(32, 64, 1e-10, 2).unwrap();
    let err = tight.run(&good, 1).pop().unwrap().unwrap_err();
    assert!(err.starts_with("Newton-Raphson did not converge in 2 iterations: largest mismatch"), "{err}");
    assert!(err.ends_with("p.u."), "{err}");
    // A grid split in two is refused before the solve, naming a bus cut off from the
    // slack (the expert alone would find a singular Jacobian, a matrix column).
    let mut split = sc.case.clone();
    split.branches.retain(|b| (b.from <= 5) == (b.to <= 5));
    let err = p.encode(&split, &question).unwrap_err();
    assert!(err.contains("no path to the slack bus") && err.contains("singular at bus"), "{err}");
    // The same cut made in an encoded row reaches the expert: a singular Jacobian.
    let row = common::split_power_flow_row(&good, 32);
    let err = p.solve_row(&row).unwrap_err();
    assert!(err.contains("Jacobian is singular") || err.contains("ill-conditioned"), "{err}");
    // Results are bitwise repeatable.
    let again = Expert::PowerFlow(p).run(&rows, 4);
    assert_eq!(format!("{out:?}"), format!("{again:?}"));
}

#[test]
fn malformed_rows_are_row_errors() {
    let p = pf();
    let good = p.encode(&case("case9").case, &q(Analysis::Ac, Quantity::VoltageAngle { bus: 5 })).unwrap();
    let edits: Vec<(usize, f64, &str)> = vec![
        (0, 33.0, "number of buses"),
        (0, 2.5, "number of buses"),
        (1, 65.0, "number of branches"),
        (3, 7.0, "quantity code"),
        (4, 9.0, "target"),
        (5, 1.0, "0 slack buses"),
        (5 + 7, 0.0, "2 slack buses"),
        (5 + 7 * 32, 9.0, "branch 0's from bus"),
        (5 + 7 * 32 + 1, 0.0, "to itself"),
        (5 + 7 * 32 + 3, 0.0, "reactance 0"),
        (5 + 7 * 32 + 5, -1.0, "tap ratio"),
        (5 + 4, 0.0, "voltage set point"),
    ];
    for (slot, v, needle) in edits {
        let mut row = good.clone();
        row[slot] = v;
        let err = p.solve_row(&row).unwrap_err();
        assert!(err.contains(needle), "slot {slot} = {v}: {err}");
    }
}

#[test]
fn power_flow_limits_are_checked() {
    assert!(PowerFlow::new(65, 64, 1e-10, 20).unwrap_err().to_string().contains("max_buses"));
    assert!(PowerFlow::new(32, 257, 1e-10, 20).unwrap_err().to_string().contains("max_branches"));
    assert!(PowerFlow::new(32, 64, 0.0, 20).unwrap_err().to_string().contains("tolerance"));
    assert!(PowerFlow::new(32, 64, 1e-10, 0).unwrap_err().to_string().contains("max_iterations"));
    assert_eq!(pf().n_inputs(), 5 + 7 * 32 + 6 * 64);
}

// ---------------------------------------------------------------------------------
// The prompt's size, with the default model's tokenizer
// ---------------------------------------------------------------------------------

#[test]
fn prompt_tokens_with_the_smollm2_tokenizer() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/smollm2-135m-instruct/tokenizer.json");
    if !path.exists() {
        println!("SKIPPED: {} not found (fetch the default model to measure)", path.display());
        return;
    }
    let tok = pimoe::model::tokenizer::Tokenizer::load(&path).unwrap();
    let mut worst = [0usize; 2];
    for sc in cases() {
        for (k, analysis) in [Analysis::Dc, Analysis::Ac].into_iter().enumerate() {
            let question = q(analysis, Quantity::VoltageAngle { bus: sc.case.buses[1].id });
            let n = tok.encode(&render(&sc.case, &question)).unwrap().len();
            if sc.case.name == sc.base {
                println!("{} {}: {n} tokens", sc.case.name, analysis.name());
            }
            worst[k] = worst[k].max(n);
        }
    }
    println!("largest prompts: DC {} tokens, AC {} tokens", worst[0], worst[1]);
    // Guards against the form growing; the 30-bus AC prompt is the largest.
    assert!(worst[0] < 1000 && worst[1] < 1500, "{worst:?}");
}

#[test]
fn degrees_are_radians_times_180_over_pi() {
    // The DC angle row's coefficient and the expert's conversion use the same constant.
    let sys = dc_system(&case("case9").case, &q(Analysis::Dc, Quantity::VoltageAngle { bus: 2 }), 9).unwrap();
    assert_eq!(sys[1], -(180.0 / PI));
}

// ---------------------------------------------------------------------------------
// Routed through the scheduler
// ---------------------------------------------------------------------------------

/// The tiny fixture Qwen2 with room for a grid prompt (its random weights do not care
/// about positions past the 128 it was saved with).
fn long_context_model(name: &str) -> PathBuf {
    let dir = common::copy_fixture("tiny-qwen2", name);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = cfg.replace("\"max_position_embeddings\": 128", "\"max_position_embeddings\": 4096");
    assert!(cfg.contains("4096"), "config.json layout changed");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    dir
}

fn sampled(prompt: &str, max_tokens: usize, seed: u64) -> Request {
    Request {
        prompt: Prompt::Raw(prompt.into()),
        max_tokens,
        sampling: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed },
    }
}

/// A request's tokens with their provenance, and its notes.
type Routed = (Vec<(u32, Provenance)>, Vec<String>);

fn run_routed(engine: &Engine<CpuBackend>, reqs: &[Request]) -> Vec<Routed> {
    let cfg = SchedulerConfig { max_step_tokens: 512, max_running: 8, kv_tokens: 16_384 };
    let mut s = Scheduler::new(engine, cfg).unwrap();
    let ids: Vec<_> = reqs.iter().map(|r| s.submit(r).unwrap()).collect();
    let mut out: Vec<Routed> = vec![Default::default(); reqs.len()];
    let mut steps = 0;
    while !s.is_idle() {
        steps += 1;
        assert!(steps < 10_000, "no progress");
        for ev in s.step().unwrap() {
            match ev {
                Event::Token { id, token, provenance, .. } => {
                    let k = ids.iter().position(|&i| i == id).unwrap();
                    out[k].0.push((token, (*provenance).clone()));
                }
                Event::Note { id, message, .. } => {
                    out[ids.iter().position(|&i| i == id).unwrap()].1.push(message)
                }
                Event::Finished { .. } => {}
            }
        }
    }
    out
}

#[test]
fn a_routed_run_injects_the_experts_numbers() {
    let model = long_context_model("grid-e2e-model");
    let dc_qs = [
        (case("case9"), q(Analysis::Dc, Quantity::VoltageAngle { bus: 7 })),
        (case("case14-p003"), q(Analysis::Dc, Quantity::ActivePowerFlow { from: 2, to: 4 })),
        (case("case30"), q(Analysis::Dc, Quantity::VoltageAngle { bus: 3 })), // too big for n = 16
    ];
    let ac_qs = [
        (case("case9-p001"), q(Analysis::Ac, Quantity::VoltageMagnitude { bus: 5 })),
        (case("case14"), q(Analysis::Ac, Quantity::ActivePowerFlow { from: 4, to: 7 })),
    ];
    let prompt = |c: &Case, question: &Question| format!("{}\nAnswer: ", render(c, question));
    // The random model's first piece of text becomes a trigger, so the router fires as
    // soon as each request has generated text; seeds are picked (deterministically) so that
    // the first token is not an end of turn.
    let plain = Engine::load(CpuBackend, &model).unwrap();
    let mut triggers: Vec<String> = Vec::new();
    let mut all: Vec<Request> = Vec::new();
    for (sc, question) in dc_qs.iter().chain(&ac_qs) {
        let (req, first) = (1..20)
            .find_map(|seed| {
                let req = sampled(&prompt(&sc.case, question), 24, seed);
                let mut first = String::new();
                plain
                    .generate(&req, |piece| {
                        if first.is_empty() {
                            first = piece.to_string();
                        }
                    })
                    .unwrap();
                (!first.is_empty()).then_some((req, first))
            })
            .expect("the tiny model generated nothing for 19 seeds");
        if !triggers.contains(&first) {
            triggers.push(first);
        }
        all.push(req);
    }
    let dir = common::scratch_dir("grid-e2e");
    let write = |name: &str, expert: &str, t2c: &str, spec: &str| {
        let trig: Vec<String> = triggers
            .iter()
            .map(|t| format!("{{ \"text\": {}, \"expert\": \"{expert}\" }}", serde_json::json!(t)))
            .collect();
        let manifest = format!(
            r#"{{ "llm": {model:?},
  "router": {{ "kind": "trigger", "triggers": [{}], "policy": {{ "max_firings": 1 }} }},
  "experts": [{{ "name": "{expert}", "t2c": {{ "kind": "extract", "grid": "{t2c}" }},
                 "expert": {spec}, "format": {{ "template": " {{value:.6f}} " }} }}] }}"#,
            trig.join(", ")
        );
        let path = dir.join(name);
        std::fs::write(&path, manifest).unwrap();
        Engine::load_manifest(CpuBackend, &path).unwrap()
    };
    let dc = write("dc.json", "dc", "dc", r#"{ "kind": "linear-solve", "n": 16 }"#);
    let ac = write("ac.json", "ac", "ac", r#"{ "kind": "power-flow" }"#);

    let check = |engine: &Engine<CpuBackend>, qs: &[(&SolvedCase, Question)], reqs: &[Request]| {
        for ((sc, question), (tokens, notes)) in qs.iter().zip(run_routed(engine, reqs)) {
            let name = &sc.case.name;
            if sc.case.buses.len() > 16 && question.analysis == Analysis::Dc {
                // No number from the expert, and none guessed: the failure text.
                assert!(
                    tokens.iter().all(|(_, p)| matches!(p, Provenance::Llm | Provenance::Failed { .. })),
                    "{name}: an expert answered"
                );
                assert!(matches!(tokens.last(), Some((_, Provenance::Failed { .. }))), "{name}: {tokens:?}");
                assert_eq!(notes.len(), 1, "{name}: {notes:?}");
                assert!(notes[0].contains("30 buses") && notes[0].contains("n=16"), "{}", notes[0]);
                continue;
            }
            assert!(notes.is_empty(), "{name}: {notes:?}");
            let (ids, prov): (Vec<u32>, Vec<&Provenance>) =
                tokens.iter().filter(|(_, p)| *p != Provenance::Llm).map(|(t, p)| (*t, p)).unzip();
            let Some(Provenance::Expert { inputs, outputs, .. }) = prov.first() else {
                panic!("{name}: the router never fired: {tokens:?}")
            };
            let truth = sc.truth(question).unwrap();
            assert!(
                (outputs[0] - truth).abs() < 1e-6,
                "{name} {question:?}: {} vs PYPOWER {truth}",
                outputs[0]
            );
            let expected = match question.analysis {
                Analysis::Dc => dc_system(&sc.case, question, 16).unwrap(),
                Analysis::Ac => pf().encode(&sc.case, question).unwrap(),
            };
            assert!(inputs.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: inputs");
            let text = engine.tokenizer.decode(&ids).unwrap();
            assert_eq!(text, format!(" {:.6} ", outputs[0]), "{name}: injected text");
        }
    };
    check(&dc, &dc_qs.iter().map(|(c, q)| (*c, *q)).collect::<Vec<_>>(), &all[..3]);
    check(&ac, &ac_qs.iter().map(|(c, q)| (*c, *q)).collect::<Vec<_>>(), &all[3..]);
}
