//! The PYPOWER ground truth: tests/fixtures/powerflow/cases.json (made by
//! make_powerflow.py there; its README documents the schema). Each case comes with
//! PYPOWER's AC (`runpf`) and DC (`rundcpf`) solutions.

use std::path::Path;

use serde::Deserialize;

use super::model::{Analysis, Branch, Bus, BusKind, Case, Quantity, Question, Target};
use crate::error::{Error, Result};

/// PYPOWER's AC power flow solution, in bus and branch order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcSolution {
    /// Voltage magnitudes (p.u.).
    pub vm: Vec<f64>,
    /// Voltage angles (degrees).
    pub va_deg: Vec<f64>,
    /// Active power at each branch's from end (MW).
    pub pf_mw: Vec<f64>,
}

/// PYPOWER's DC power flow solution.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcSolution {
    pub va_deg: Vec<f64>,
    pub pf_mw: Vec<f64>,
}

/// A case with its PYPOWER solutions.
#[derive(Clone, Debug, PartialEq)]
pub struct SolvedCase {
    pub case: Case,
    /// The IEEE case it was made from ("case14").
    pub base: String,
    pub ac: AcSolution,
    pub dc: DcSolution,
}

impl SolvedCase {
    /// PYPOWER's value of `q`'s quantity for this case (degrees, p.u. or MW).
    pub fn truth(&self, q: &Question) -> std::result::Result<f64, String> {
        let at = self.case.locate(q)?;
        Ok(match (q.analysis, q.quantity, at) {
            (Analysis::Ac, Quantity::VoltageAngle { .. }, Target::Bus(i)) => self.ac.va_deg[i],
            (Analysis::Ac, Quantity::VoltageMagnitude { .. }, Target::Bus(i)) => self.ac.vm[i],
            (Analysis::Ac, Quantity::ActivePowerFlow { .. }, Target::Branch(l)) => self.ac.pf_mw[l],
            (Analysis::Dc, Quantity::VoltageAngle { .. }, Target::Bus(i)) => self.dc.va_deg[i],
            (Analysis::Dc, Quantity::ActivePowerFlow { .. }, Target::Branch(l)) => self.dc.pf_mw[l],
            _ => unreachable!("locate pairs angles and magnitudes with buses, flows with branches"),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)] // versions and seed, for people
    generator: serde_json::Value,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    base: String,
    base_mva: f64,
    buses: Vec<RawBus>,
    branches: Vec<RawBranch>,
    ac: AcSolution,
    dc: DcSolution,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    pd: f64,
    qd: f64,
    pg: f64,
    vset: f64,
    gs: f64,
    bs: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    from: u32,
    to: u32,
    r: f64,
    x: f64,
    b: f64,
    tap: f64,
}

/// Reads cases.json; every case is checked (`Case::check` for AC) and its solutions
/// must have one value per bus and per branch.
pub fn load_cases(path: &Path) -> Result<Vec<SolvedCase>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_cases(&text, path)
}

/// The same from the file's text; `path` names it in errors.
pub fn parse_cases(text: &str, path: &Path) -> Result<Vec<SolvedCase>> {
    let file: File =
        serde_json::from_str(text).map_err(|e| Error::format(path, format!("power-flow cases: {e}")))?;
    let bad = |name: &str, msg: String| Error::format(path, format!("case {name}: {msg}"));
    let mut out = Vec::with_capacity(file.cases.len());
    for c in file.cases {
        let mut buses = Vec::with_capacity(c.buses.len());
        for b in &c.buses {
            let kind = match b.kind.as_str() {
                "slack" => BusKind::Slack,
                "pv" => BusKind::Pv,
                "pq" => BusKind::Pq,
                other => return Err(bad(&c.name, format!("bus {}: unknown type {other:?}", b.id))),
            };
            buses.push(Bus {
                id: b.id,
                kind,
                pd: b.pd,
                qd: b.qd,
                pg: b.pg,
                vset: b.vset,
                gs: b.gs,
                bs: b.bs,
            });
        }
        let branches = c
            .branches
            .iter()
            .map(|br| Branch { from: br.from, to: br.to, r: br.r, x: br.x, b: br.b, tap: br.tap })
            .collect();
        let case = Case { name: c.name.clone(), base_mva: c.base_mva, buses, branches };
        case.check(Analysis::Ac).map_err(|e| bad(&c.name, e.to_string()))?;
        let (nb, nl) = (case.buses.len(), case.branches.len());
        let lens = [
            ("ac.vm", c.ac.vm.len(), nb),
            ("ac.va_deg", c.ac.va_deg.len(), nb),
            ("ac.pf_mw", c.ac.pf_mw.len(), nl),
            ("dc.va_deg", c.dc.va_deg.len(), nb),
            ("dc.pf_mw", c.dc.pf_mw.len(), nl),
        ];
        if let Some((field, got, want)) = lens.iter().find(|(_, got, want)| got != want) {
            return Err(bad(&c.name, format!("{field} has {got} values for {want}")));
        }
        out.push(SolvedCase { case, base: c.base, ac: c.ac, dc: c.dc });
    }
    Ok(out)
}
