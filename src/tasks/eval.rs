//! `pimoe eval`: the same grid questions answered by the LLM alone and by PiMoE, in
//! one run, scored against PYPOWER.
//!
//! Accuracy: an answer is right when its number (`answer::answer_number`) is within
//! `REL_TOL` relative of PYPOWER's value.
//!
//! The router is scored against where the LLM alone starts writing its number: on
//! the CPU a request's tokens do not depend on its batch, and the composition's
//! answer equals the LLM's own until the router first fires, so the LLM-alone answer
//! tells where the router should have fired (right before the token that starts the
//! number) and the PiMoE answer tells where it did. A firing is right when it is the
//! first, at that place, and calls the question's expert; every other firing is a
//! false one (too early, too late, the wrong expert, a second firing, or a firing
//! in an answer whose LLM-alone version has no number). A firing whose T2C or expert
//! could not answer leaves a trace note and no tokens; it counts as a wrong firing too
//! (in the committed run each such note was T2C refusing an AC question sent to the
//! DC expert). A question whose LLM-alone answer has a number and that got no right
//! firing is a miss. Precision is right firings over all firings, recall right
//! firings over questions with a number.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::engine::{Answer, Engine, Request};
use crate::error::{Error, Result};
use crate::grid::Analysis;
use crate::sampling::SamplingParams;
use crate::scheduler::{Provenance, SchedulerConfig};
use crate::tasks::answer::answer_number;
use crate::tasks::questions::{question_set, GridQuestion, Split};

/// An answer is right when |answer - truth| <= REL_TOL |truth|.
pub const REL_TOL: f64 = 1e-4;

#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Questions per task (DC and AC).
    pub per_task: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub sched: SchedulerConfig,
}

#[derive(Debug, Serialize)]
pub struct TaskReport {
    pub task: &'static str,
    pub expert: &'static str,
    pub questions: usize,
    pub llm_only: ModeReport,
    pub pimoe: ModeReport,
    pub router: RouterReport,
    /// Per question: case, question text, truth, and each mode's number.
    pub answers: Vec<AnswerRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct ModeReport {
    pub correct: usize,
    pub accuracy: f64,
    /// Answers in which no number could be read.
    pub no_number: usize,
    /// Median relative error of the answers that have a number.
    pub median_rel_err: Option<f64>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub injected_tokens: usize,
    pub expert_calls: usize,
    /// T2C or expert failures (trace notes).
    pub failures: usize,
    /// Wall time of the whole batch.
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct RouterReport {
    /// Questions whose LLM-alone answer has a number: where it should fire.
    pub should_fire: usize,
    pub fired_right: usize,
    pub fired_wrong: usize,
    pub missed: usize,
    /// Answers in which the gate's first choice of expert was wrong and its T2C handed
    /// the question to the gate's next choice (the gate's DC/AC confusion; the
    /// firing counts as right when the expert that answered is the question's).
    pub rerouted: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct AnswerRow {
    pub case: String,
    pub question: String,
    pub truth: f64,
    pub llm_only: Option<f64>,
    pub pimoe: Option<f64>,
    pub pimoe_text: String,
}

/// Answers `per_task` evaluation questions of each analysis twice with a
/// composition's engine: once with its experts set aside (the LLM alone, same
/// weights, same prompts), once as composed. `progress(done, total)` is called as
/// answers complete.
pub fn run<B: Backend>(
    engine: &mut Engine<B>,
    cfg: &EvalConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<TaskReport>> {
    if engine.pimoe.is_none() {
        return Err(Error::Request("eval needs a composition (a manifest), not a plain model".into()));
    }
    let sets = [Analysis::Dc, Analysis::Ac]
        .into_iter()
        .map(|a| question_set(a, Split::Eval, cfg.per_task, cfg.seed))
        .collect::<Result<Vec<_>>>()?;
    let total = 2 * sets.iter().map(Vec::len).sum::<usize>();
    let mut done = 0;
    let mut reports = Vec::new();
    for (analysis, set) in [Analysis::Dc, Analysis::Ac].into_iter().zip(&sets) {
        let reqs: Vec<Request> = set.iter().map(|q| request(q, cfg.max_tokens)).collect();
        let mut timed = |engine: &Engine<B>| -> Result<(Vec<Answer>, f64)> {
            let t = Instant::now();
            let answers = engine.generate_batch(&reqs, cfg.sched, |_| {
                done += 1;
                progress(done, total);
            })?;
            Ok((answers, t.elapsed().as_secs_f64()))
        };
        let (routed, routed_secs) = timed(engine)?;
        let composition = engine.pimoe.take();
        let alone = timed(engine);
        engine.pimoe = composition;
        let (alone, alone_secs) = alone?;
        reports.push(score(analysis, set, &alone, alone_secs, &routed, routed_secs));
    }
    Ok(reports)
}

/// Greedy, so that both modes read the same text up to the router's first firing.
pub fn request(q: &GridQuestion, max_tokens: usize) -> Request {
    Request {
        prompt: q.prompt(),
        max_tokens,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
    }
}

fn score(
    analysis: Analysis,
    set: &[GridQuestion],
    alone: &[Answer],
    alone_secs: f64,
    routed: &[Answer],
    routed_secs: f64,
) -> TaskReport {
    let expert = set.first().map_or("", |q| q.expert());
    let mut router = RouterReport::default();
    for (q, (a, r)) in set.iter().zip(alone.iter().zip(routed)) {
        let should = fire_point(a);
        router.should_fire += usize::from(should.is_some());
        let firings = firings(r);
        let right = matches!(
            (should, firings.first()),
            (Some(at), Some((pos, name))) if *pos == at && name == q.expert()
        );
        router.fired_right += usize::from(right);
        router.fired_wrong += firings.len() - usize::from(right) + r.notes.len();
        router.missed += usize::from(should.is_some() && !right);
        router.rerouted += usize::from(r.stats.reroutes > 0);
    }
    let all_firings = router.fired_right + router.fired_wrong;
    router.precision = (all_firings > 0).then(|| router.fired_right as f64 / all_firings as f64);
    router.recall = (router.should_fire > 0).then(|| router.fired_right as f64 / router.should_fire as f64);
    let answers = set
        .iter()
        .zip(alone.iter().zip(routed))
        .map(|(q, (a, r))| AnswerRow {
            case: q.case.case.name.clone(),
            question: q.sentence(),
            truth: q.truth,
            llm_only: answer_value(a),
            pimoe: answer_value(r),
            pimoe_text: r.text.clone(),
        })
        .collect::<Vec<_>>();
    TaskReport {
        task: analysis.name(),
        expert,
        questions: set.len(),
        llm_only: mode(set, alone, alone_secs),
        pimoe: mode(set, routed, routed_secs),
        router,
        answers,
    }
}

fn mode(set: &[GridQuestion], answers: &[Answer], seconds: f64) -> ModeReport {
    let mut m = ModeReport { seconds, ..Default::default() };
    let mut errs = Vec::new();
    for (q, a) in set.iter().zip(answers) {
        match answer_value(a) {
            Some(v) => {
                let rel = (v - q.truth).abs() / q.truth.abs();
                m.correct += usize::from(rel <= REL_TOL);
                errs.push(rel);
            }
            None => m.no_number += 1,
        }
        m.prompt_tokens += a.stats.prompt_tokens;
        m.generated_tokens += a.stats.generated_tokens;
        m.injected_tokens += a.stats.injected_tokens;
        m.expert_calls += a.stats.expert_calls;
        m.failures += a.notes.len();
    }
    m.accuracy = m.correct as f64 / set.len().max(1) as f64;
    errs.sort_by(f64::total_cmp);
    m.median_rel_err = errs.get(errs.len() / 2).copied();
    m
}

/// The number an answer gives, read from its text before any failure text (which
/// stands where a number could not be computed, and may itself hold numbers).
pub fn answer_value(a: &Answer) -> Option<f64> {
    let before: String = a
        .tokens
        .iter()
        .take_while(|t| !matches!(*t.provenance, Provenance::Failed { .. }))
        .map(|t| t.text.as_str())
        .collect();
    answer_number(&before).map(|(v, _)| v)
}

/// Where the router should fire in an LLM-alone answer: the number of tokens before
/// the one in which the answer's number starts.
pub fn fire_point(a: &Answer) -> Option<usize> {
    let (_, range) = answer_number(&a.text)?;
    let mut end = 0;
    for (i, t) in a.tokens.iter().enumerate() {
        end += t.text.len();
        if end > range.start {
            return Some(i);
        }
    }
    None
}

/// Each firing that put tokens in the answer: how many tokens came before it, and
/// which expert answered.
pub fn firings(a: &Answer) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, t) in a.tokens.iter().enumerate() {
        let starts = i == 0 || !std::sync::Arc::ptr_eq(&a.tokens[i - 1].provenance, &t.provenance);
        if let (true, Provenance::Expert { expert, .. }) = (starts, &*t.provenance) {
            out.push((i, expert.clone()));
        }
    }
    out
}

/// The composition's LLM as reports name it: its folder's name.
pub fn model_name<B: Backend>(engine: &Engine<B>, manifest: &Path) -> String {
    crate::pimoe::manifest::Manifest::load(manifest)
        .ok()
        .and_then(|(m, _)| m.llm.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| engine.llm.config.arch.hf_name().to_string())
}

/// The whole run, as committed under bench/results/.
#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub commit: String,
    pub date: String,
    pub model: String,
    pub manifest: String,
    pub per_task: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub rel_tol: f64,
    pub tasks: Vec<TaskReport>,
}

impl Report {
    pub fn new<B: Backend>(
        engine: &Engine<B>,
        manifest: &Path,
        cfg: &EvalConfig,
        tasks: Vec<TaskReport>,
    ) -> Self {
        let device = match engine.backend.name() {
            "cpu" => crate::bench::cpu_device(),
            other => other.to_string(),
        };
        Report {
            device,
            commit: crate::bench::git_commit(),
            date: crate::bench::utc_now(),
            model: model_name(engine, manifest),
            manifest: manifest.display().to_string(),
            per_task: cfg.per_task,
            seed: cfg.seed,
            max_tokens: cfg.max_tokens,
            rel_tol: REL_TOL,
            tasks,
        }
    }

    /// A short table for the terminal.
    pub fn summary(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
        let mut s = format!(
            "{:<5} {:>9} {:>13} {:>13} {:>16} {:>13} {:>9}\n",
            "task", "questions", "LLM alone", "PiMoE", "router precision", "router recall", "rerouted"
        );
        for t in &self.tasks {
            s += &format!(
                "{:<5} {:>9} {:>13} {:>13} {:>16} {:>13} {:>9}\n",
                t.task,
                t.questions,
                pct(Some(t.llm_only.accuracy)),
                pct(Some(t.pimoe.accuracy)),
                pct(t.router.precision),
                pct(t.router.recall),
                t.router.rerouted
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AnswerToken, Finish};
    use crate::scheduler::Stats;
    use std::sync::Arc;

    fn answer(pieces: &[(&str, Option<&str>)]) -> Answer {
        let llm = Arc::new(Provenance::Llm);
        let mut tokens = Vec::new();
        let mut last: Option<(String, Arc<Provenance>)> = None;
        for (i, (text, expert)) in pieces.iter().enumerate() {
            let provenance = match expert {
                None => llm.clone(),
                // Consecutive pieces of one expert share one provenance, as in the scheduler.
                Some(name) => match &last {
                    Some((n, p)) if n == name => p.clone(),
                    _ => Arc::new(Provenance::Expert {
                        expert: name.to_string(),
                        inputs: vec![],
                        outputs: vec![1.0],
                    }),
                },
            };
            last = expert.map(|n| (n.to_string(), provenance.clone()));
            tokens.push(AnswerToken { id: i as u32, text: text.to_string(), provenance });
        }
        let text = tokens.iter().map(|t| t.text.as_str()).collect();
        Answer { text, tokens, notes: vec![], finish: Finish::Stop, stats: Stats::default() }
    }

    #[test]
    fn the_fire_point_is_the_token_where_the_number_starts() {
        let a = answer(&[
            ("The", None),
            (" angle at bus", None),
            (" 5", None),
            (" is", None),
            (" ", None),
            ("-", None),
            ("4", None),
        ]);
        // SmolLM2 writes the space before a number as a token of its own.
        assert_eq!(fire_point(&a), Some(5), "after the space, at the sign");
        let a = answer(&[("The", None), (" angle", None), (" is", None), (" -4", None), (".35", None)]);
        assert_eq!(fire_point(&a), Some(3));
        assert_eq!(fire_point(&answer(&[("No", None), (" number", None)])), None);
    }

    #[test]
    fn a_firing_that_left_only_a_note_is_a_wrong_firing() {
        use crate::grid::{Quantity, Question};
        let question = Question { analysis: Analysis::Ac, quantity: Quantity::VoltageAngle { bus: 5 } };
        let q = GridQuestion::on("case9", question).unwrap();
        let alone = answer(&[("The", None), (" angle is", None), (" -4", None)]);
        let mut routed = answer(&[("The", None), (" angle is", None), (" -4", None)]);
        routed.notes.push("dc-power-flow: the question asks for the AC power flow".into());
        let t = score(Analysis::Ac, &[q], &[alone], 1.0, &[routed], 1.0);
        let r = &t.router;
        assert_eq!((r.should_fire, r.fired_right, r.fired_wrong, r.missed), (1, 0, 1, 1));
        assert_eq!((r.precision, r.recall), (Some(0.0), Some(0.0)));
    }

    #[test]
    fn firings_count_tokens_before_each_expert_span() {
        let a = answer(&[
            ("The", None),
            (" angle is", None),
            ("-4", Some("dc")),
            (".35", Some("dc")),
            (" degrees", None),
            ("1", Some("ac")),
        ]);
        assert_eq!(firings(&a), vec![(2, "dc".to_string()), (5, "ac".to_string())]);
        assert!(firings(&answer(&[("x", None)])).is_empty());
    }
}
