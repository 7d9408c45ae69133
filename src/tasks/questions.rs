//! Question sets over the PYPOWER fixture (tests/fixtures/powerflow/cases.json,
//! embedded in the binary so that the demo and `pimoe eval` run anywhere).
//!
//! The fixture holds the IEEE 9-, 14- and 30-bus cases and 40 perturbed versions of
//! each (`case14-p001` .. `case14-p040`). They are split by name, never by draw, so
//! that no case is both trained on and evaluated:
//! - the unperturbed IEEE cases: the demo;
//! - perturbed cases whose number is a multiple of 4: the router's training answers;
//! - the other perturbed cases: the evaluation.
//!
//! A question set is drawn with a seeded generator: a case of the split, a quantity
//! the analysis can answer (DC: an angle or a flow; AC: a voltage magnitude, an angle
//! or a flow), then a bus or branch. Quantities too close to zero for a relative
//! tolerance to mean anything (angles under 0.5 degrees, flows under 1 MW) are
//! drawn again, as are repeats and questions about parallel branches.

use std::sync::OnceLock;

use crate::engine::Prompt;
use crate::error::{Error, Result};
use crate::grid::{render, Analysis, BusKind, Quantity, Question, SolvedCase};
use crate::sampling::Rng;

/// The fixture, as committed.
const CASES_JSON: &str = include_str!("../../tests/fixtures/powerflow/cases.json");

/// What every grid question is asked with, LLM alone or PiMoE: the same words.
pub const SYSTEM: &str =
    "You are a power systems engineer. Answer in one sentence of the form: The <quantity> is <number> <unit>.";

/// The embedded fixture's cases, parsed once.
pub fn cases() -> Result<&'static [SolvedCase]> {
    static CASES: OnceLock<std::result::Result<Vec<SolvedCase>, String>> = OnceLock::new();
    CASES
        .get_or_init(|| {
            let origin = std::path::Path::new("tests/fixtures/powerflow/cases.json (embedded)");
            crate::grid::parse_cases(CASES_JSON, origin).map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| Error::Request(format!("the embedded power-flow fixture: {e}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Demo,
    Train,
    Eval,
}

impl Split {
    fn of(case: &SolvedCase) -> Split {
        match case.case.name.rsplit_once("-p").and_then(|(_, k)| k.parse::<u32>().ok()) {
            None => Split::Demo,
            Some(k) if k % 4 == 0 => Split::Train,
            Some(_) => Split::Eval,
        }
    }
}

/// One question with its case and PYPOWER's answer.
#[derive(Clone, Debug)]
pub struct GridQuestion {
    pub case: &'static SolvedCase,
    pub question: Question,
    pub truth: f64,
}

impl GridQuestion {
    /// `question` on the fixture's case `name`, with PYPOWER's answer.
    pub fn on(name: &str, question: Question) -> Result<GridQuestion> {
        let case = cases()?
            .iter()
            .find(|c| c.case.name == name)
            .ok_or_else(|| Error::Request(format!("no case {name:?} in the power-flow fixture")))?;
        let truth = case.truth(&question).map_err(|e| Error::Request(format!("{name}: {e}")))?;
        Ok(GridQuestion { case, question, truth })
    }

    /// The expert that should answer it in the demo composition.
    pub fn expert(&self) -> &'static str {
        expert_name(self.question.analysis)
    }

    /// The question's sentence, as the prompt ends with it.
    pub fn sentence(&self) -> String {
        let text = render(&self.case.case, &self.question);
        let last = text.trim_end().lines().last().unwrap_or_default();
        last.strip_prefix("Question: ").unwrap_or(last).to_string()
    }

    /// The prompt as the model gets it, with or without experts.
    pub fn prompt(&self) -> Prompt {
        Prompt::Chat { system: Some(SYSTEM.to_string()), user: render(&self.case.case, &self.question) }
    }
}

/// The demo composition's expert for an analysis.
pub fn expert_name(analysis: Analysis) -> &'static str {
    match analysis {
        Analysis::Dc => "dc-power-flow",
        Analysis::Ac => "ac-power-flow",
    }
}

/// The most questions `question_set` draws.
pub const MAX_QUESTIONS: usize = 100_000;

/// `count` distinct questions of one analysis on the split's cases, drawn with `seed`.
pub fn question_set(analysis: Analysis, split: Split, count: usize, seed: u64) -> Result<Vec<GridQuestion>> {
    let pool: Vec<&'static SolvedCase> = cases()?.iter().filter(|c| Split::of(c) == split).collect();
    if pool.is_empty() {
        return Err(Error::Request(format!("no {split:?} cases in the power-flow fixture")));
    }
    let mut rng = Rng::new(seed);
    let mut pick = |n: usize| rng.next_u32() as usize % n;
    // The fixture holds a few thousand distinct questions per analysis; far more is a
    // mistake to refuse before sizing anything from it.
    if count > MAX_QUESTIONS {
        return Err(Error::Request(format!(
            "{count} questions asked for; the limit is {MAX_QUESTIONS} per analysis"
        )));
    }
    let mut out: Vec<GridQuestion> = Vec::with_capacity(count);
    let mut tries = 0;
    while out.len() < count {
        tries += 1;
        if tries > 100 * count + 1000 {
            return Err(Error::Request(format!(
                "only {} distinct {} questions fit the {split:?} cases, {count} were asked for",
                out.len(),
                analysis.name()
            )));
        }
        let case = pool[pick(pool.len())];
        let c = &case.case;
        let kinds: &[u8] = match analysis {
            Analysis::Dc => &[0, 2],
            Analysis::Ac => &[0, 1, 2],
        };
        let quantity = match kinds[pick(kinds.len())] {
            0 => {
                let buses: Vec<u32> =
                    c.buses.iter().filter(|b| b.kind != BusKind::Slack).map(|b| b.id).collect();
                Quantity::VoltageAngle { bus: buses[pick(buses.len())] }
            }
            1 => {
                let buses: Vec<u32> =
                    c.buses.iter().filter(|b| b.kind == BusKind::Pq).map(|b| b.id).collect();
                Quantity::VoltageMagnitude { bus: buses[pick(buses.len())] }
            }
            _ => {
                let br = &c.branches[pick(c.branches.len())];
                Quantity::ActivePowerFlow { from: br.from, to: br.to }
            }
        };
        let question = Question { analysis, quantity };
        // Parallel branches make a flow question ambiguous: `truth` refuses them.
        let Ok(truth) = case.truth(&question) else { continue };
        let too_small = match quantity {
            Quantity::VoltageAngle { .. } => truth.abs() < 0.5,
            Quantity::ActivePowerFlow { .. } => truth.abs() < 1.0,
            Quantity::VoltageMagnitude { .. } => false,
        };
        if too_small || out.iter().any(|q| std::ptr::eq(q.case, case) && q.question == question) {
            continue;
        }
        out.push(GridQuestion { case, question, truth });
    }
    Ok(out)
}
