//! The grid data model: a case (buses, branches, per-unit base) and a question about
//! its power flow, with the checks every consumer relies on (unique bus ids, one slack
//! bus, branches between known, distinct buses, nonzero reactances, positive taps).

use std::fmt;

/// How a bus enters the power flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusKind {
    /// The reference: voltage magnitude and angle (0) fixed, P and Q free.
    Slack,
    /// Generator bus: P and |V| fixed.
    Pv,
    /// Load bus: P and Q fixed.
    Pq,
}

impl BusKind {
    /// The word in the text form.
    pub fn word(self) -> &'static str {
        match self {
            BusKind::Slack => "slack",
            BusKind::Pv => "PV",
            BusKind::Pq => "PQ",
        }
    }
}

/// One bus; powers in MW / MVAr, voltage in p.u. (MATPOWER's bus and gen columns).
#[derive(Clone, Debug, PartialEq)]
pub struct Bus {
    pub id: u32,
    pub kind: BusKind,
    /// Active and reactive load.
    pub pd: f64,
    pub qd: f64,
    /// Active generation (summed over the bus's generators; unused at the slack bus).
    pub pg: f64,
    /// Voltage magnitude set point of a slack or PV bus; 1.0 (unused) for PQ buses.
    pub vset: f64,
    /// Shunt conductance (MW) and susceptance (MVAr) at 1 p.u.
    pub gs: f64,
    pub bs: f64,
}

/// One branch (line or transformer); impedances in p.u. on the case's base.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    pub from: u32,
    pub to: u32,
    pub r: f64,
    pub x: f64,
    /// Total line charging susceptance.
    pub b: f64,
    /// Off-nominal turns ratio at the from end; 1 is none (MATPOWER's 0).
    pub tap: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    pub base_mva: f64,
    pub buses: Vec<Bus>,
    pub branches: Vec<Branch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Analysis {
    Dc,
    Ac,
}

impl Analysis {
    pub fn name(self) -> &'static str {
        match self {
            Analysis::Dc => "DC",
            Analysis::Ac => "AC",
        }
    }
}

/// What a question asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// In degrees.
    VoltageAngle { bus: u32 },
    /// In p.u.; AC only.
    VoltageMagnitude { bus: u32 },
    /// Active power entering the branch `from` -> `to` at its from end, in MW.
    ActivePowerFlow { from: u32, to: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    pub analysis: Analysis,
    pub quantity: Quantity,
}

/// Where a question's quantity lives in its case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The bus's position in `Case::buses`.
    Bus(usize),
    /// The branch's position in `Case::branches`.
    Branch(usize),
}

/// Which part of a case a check failed on, so that a text parser can name the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Case,
    Bus(usize),
    Branch(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CaseError {
    pub item: Item,
    pub msg: String,
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Item::Case => f.write_str(&self.msg),
            Item::Bus(i) => write!(f, "bus row {}: {}", i + 1, self.msg),
            Item::Branch(i) => write!(f, "branch row {}: {}", i + 1, self.msg),
        }
    }
}

impl std::error::Error for CaseError {}

impl Case {
    /// Checks what both analyses need (and, for AC, the voltage set points).
    pub fn check(&self, analysis: Analysis) -> Result<(), CaseError> {
        let err = |item, msg: String| Err(CaseError { item, msg });
        if !(self.base_mva.is_finite() && self.base_mva > 0.0) {
            return err(Item::Case, format!("the base power must be positive, not {}", self.base_mva));
        }
        if self.buses.is_empty() {
            return err(Item::Case, "the grid has no buses".into());
        }
        for (i, b) in self.buses.iter().enumerate() {
            if self.buses[..i].iter().any(|o| o.id == b.id) {
                return err(Item::Bus(i), format!("bus {} is listed twice", b.id));
            }
            let values =
                [("Pd", b.pd), ("Qd", b.qd), ("Pg", b.pg), ("V", b.vset), ("Gs", b.gs), ("Bs", b.bs)];
            if let Some((name, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
                return err(Item::Bus(i), format!("bus {}: {name} is {v}", b.id));
            }
            if analysis == Analysis::Ac && b.kind != BusKind::Pq && b.vset <= 0.0 {
                return err(Item::Bus(i), format!("bus {}: the voltage set point must be positive", b.id));
            }
        }
        let slacks: Vec<usize> =
            (0..self.buses.len()).filter(|&i| self.buses[i].kind == BusKind::Slack).collect();
        match slacks[..] {
            [] => return err(Item::Case, "the grid has no slack bus".into()),
            [_] => {}
            [first, second, ..] => {
                let (a, b) = (self.buses[first].id, self.buses[second].id);
                return err(Item::Bus(second), format!("a second slack bus ({b}; bus {a} is the first)"));
            }
        }
        for (l, br) in self.branches.iter().enumerate() {
            for end in [br.from, br.to] {
                if self.position(end).is_none() {
                    return err(Item::Branch(l), format!("bus {end} is not in the bus table"));
                }
            }
            if br.from == br.to {
                return err(Item::Branch(l), format!("a branch from bus {} to itself", br.from));
            }
            let values = [("r", br.r), ("x", br.x), ("b", br.b), ("tap", br.tap)];
            if let Some((name, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
                return err(Item::Branch(l), format!("{name} is {v}"));
            }
            if br.x == 0.0 {
                return err(Item::Branch(l), "the reactance x is 0".into());
            }
            if br.tap <= 0.0 {
                return err(Item::Branch(l), format!("the tap ratio must be positive, not {}", br.tap));
            }
        }
        // A bus with no path to the slack has no reference angle: its equations are
        // singular, and the bus, not a matrix column, is what the user can fix.
        let slack = slacks[0];
        let mut reached = vec![false; self.buses.len()];
        reached[slack] = true;
        let mut grew = true;
        while grew {
            grew = false;
            for br in &self.branches {
                let (f, t) =
                    (self.position(br.from).expect("checked"), self.position(br.to).expect("checked"));
                if reached[f] != reached[t] {
                    (reached[f], reached[t], grew) = (true, true, true);
                }
            }
        }
        if let Some(i) = reached.iter().position(|r| !r) {
            let (bus, slack) = (self.buses[i].id, self.buses[slack].id);
            return err(
                Item::Bus(i),
                format!("bus {bus} has no path to the slack bus {slack}: the grid is split, so the system is singular at bus {bus}"),
            );
        }
        Ok(())
    }

    /// The position of bus `id` in `buses`.
    pub fn position(&self, id: u32) -> Option<usize> {
        self.buses.iter().position(|b| b.id == id)
    }

    pub fn slack(&self) -> Option<usize> {
        self.buses.iter().position(|b| b.kind == BusKind::Slack)
    }

    /// Where `q`'s quantity is, or why the question does not fit the case.
    pub fn locate(&self, q: &Question) -> Result<Target, String> {
        let bus = |id: u32| self.position(id).ok_or_else(|| format!("bus {id} is not in the grid"));
        match q.quantity {
            Quantity::VoltageAngle { bus: id } => Ok(Target::Bus(bus(id)?)),
            Quantity::VoltageMagnitude { bus: id } => {
                if q.analysis == Analysis::Dc {
                    return Err("a DC power flow has no voltage magnitudes (all are 1 p.u.)".into());
                }
                Ok(Target::Bus(bus(id)?))
            }
            Quantity::ActivePowerFlow { from, to } => {
                bus(from)?;
                bus(to)?;
                let found: Vec<usize> = (0..self.branches.len())
                    .filter(|&l| self.branches[l].from == from && self.branches[l].to == to)
                    .collect();
                match found[..] {
                    [l] => Ok(Target::Branch(l)),
                    [] if self.branches.iter().any(|b| b.from == to && b.to == from) => Err(format!(
                        "no branch from bus {from} to bus {to}; the branch is listed from bus {to} to bus {from}"
                    )),
                    [] => Err(format!("no branch from bus {from} to bus {to}")),
                    _ => Err(format!(
                        "{} parallel branches from bus {from} to bus {to}: the question is ambiguous",
                        found.len()
                    )),
                }
            }
        }
    }

    /// The case as a text of `analysis` carries it: no name, and what the analysis
    /// does not use at its neutral value (DC: no Qd, Bs, r or b and V 1; AC: V 1 at
    /// PQ buses). `parse(&render(c, q))` gives `c.carried(q.analysis)`.
    pub fn carried(&self, analysis: Analysis) -> Case {
        let mut c = self.clone();
        c.name.clear();
        for b in &mut c.buses {
            if analysis == Analysis::Dc || b.kind == BusKind::Pq {
                b.vset = 1.0;
            }
            if analysis == Analysis::Dc {
                (b.qd, b.bs) = (0.0, 0.0);
            }
        }
        if analysis == Analysis::Dc {
            for br in &mut c.branches {
                (br.r, br.b) = (0.0, 0.0);
            }
        }
        c
    }
}
