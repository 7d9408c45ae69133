//! The default demo (`pimoe demo`, the README's first command): SmolLM2-135M-Instruct
//! reasons, a hidden-state router trained by `pimoe train router` decides when a
//! number must be computed, exact T2C reads the grid from the prompt, and the DC
//! (linear-solve) and AC (Newton-Raphson) power-flow experts compute it in f64.
//!
//! The composition is embedded in the binary (`demo/grid.json` and the router's
//! weights `demo/router.safetensors`, made by scripts/train-demo-router.sh) and
//! written out to `<weights>/demo/` on first use, next to the default model that its
//! `llm` path names; the files are replaced (atomically) when the binary's differ.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::engine::{Answer, Engine, PREFILL_CHUNK};
use crate::error::{Error, Result};
use crate::grid::Analysis;
use crate::model::fetch::weights_root;
use crate::scheduler::{Provenance, SchedulerConfig};
use crate::tasks::eval::{answer_value, request, REL_TOL};
use crate::tasks::questions::GridQuestion;

/// Tokens an answer may take: one sentence.
const MAX_TOKENS: usize = 48;

const MANIFEST: &[u8] = include_bytes!("demo/grid.json");
const ROUTER: &[u8] = include_bytes!("demo/router.safetensors");

/// The demo's manifest on disk, written from the binary if missing or different.
pub fn ensure_manifest() -> Result<PathBuf> {
    let dir = weights_root().join("demo");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_if_changed(&dir.join("router.safetensors"), ROUTER)?;
    write_if_changed(&dir.join("grid.json"), MANIFEST)?;
    Ok(dir.join("grid.json"))
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    // Two demos (or two test threads) starting at once both end with the same bytes.
    crate::bench::write_atomic(path, bytes)
}

/// The demo's questions, on the unperturbed IEEE cases (which neither the router's
/// training nor the evaluation uses): an angle and a flow by DC, a voltage and a flow
/// by AC.
pub fn questions() -> Result<Vec<GridQuestion>> {
    use crate::grid::{Quantity::*, Question};
    let (dc, ac) = (Analysis::Dc, Analysis::Ac);
    [
        ("case9", Question { analysis: dc, quantity: VoltageAngle { bus: 5 } }),
        ("case14", Question { analysis: dc, quantity: ActivePowerFlow { from: 2, to: 3 } }),
        ("case9", Question { analysis: ac, quantity: VoltageMagnitude { bus: 5 } }),
        ("case14", Question { analysis: ac, quantity: ActivePowerFlow { from: 4, to: 5 } }),
    ]
    .into_iter()
    .map(|(name, question)| GridQuestion::on(name, question))
    .collect()
}

/// How the demo went.
#[derive(Debug, Default)]
pub struct DemoSummary {
    pub questions: usize,
    /// Answers whose number came from an expert and agrees with PYPOWER (1e-4).
    pub computed_right: usize,
    pub seconds: f64,
}

/// Answers the demo's questions in one batch and writes each answer with its expert
/// spans marked «like this» and PYPOWER's value beside it; `trace` adds each
/// expert's inputs and outputs and any T2C or expert failure.
pub fn run<B: Backend>(engine: &Engine<B>, trace: bool, out: &mut impl Write) -> Result<DemoSummary> {
    let t = Instant::now();
    let (qs, answers) = answer(engine)?;
    let mut summary =
        DemoSummary { questions: qs.len(), seconds: t.elapsed().as_secs_f64(), ..Default::default() };
    let io = |e: std::io::Error| Error::Request(format!("writing the demo's output: {e}"));
    for (k, (q, a)) in qs.iter().zip(&answers).enumerate() {
        writeln!(out, "Q{} ({}, {}): {}", k + 1, q.case.case.name, q.question.analysis.name(), q.sentence())
            .map_err(io)?;
        let mut marked = String::new();
        let mut traces = Vec::new();
        let mut expert_value = None;
        for (i, tok) in a.tokens.iter().enumerate() {
            let first = i == 0 || !Arc::ptr_eq(&a.tokens[i - 1].provenance, &tok.provenance);
            let last = a.tokens.get(i + 1).is_none_or(|n| !Arc::ptr_eq(&n.provenance, &tok.provenance));
            let expert = matches!(*tok.provenance, Provenance::Expert { .. });
            if expert && first {
                marked.push('«');
            }
            marked.push_str(&tok.text);
            if let (true, Provenance::Expert { expert, inputs, outputs }) = (expert && last, &*tok.provenance)
            {
                marked.push('»');
                expert_value.get_or_insert((expert.clone(), outputs[0]));
                traces.push(format!("    [{expert}] inputs {} -> outputs {}", brief(inputs), brief(outputs)));
            }
        }
        writeln!(out, "A:  {}", marked.trim()).map_err(io)?;
        if trace {
            for t in &traces {
                writeln!(out, "{t}").map_err(io)?;
            }
        }
        for n in &a.notes {
            writeln!(out, "    note: {n}").map_err(io)?;
        }
        let read = answer_value(a);
        let agrees = read.is_some_and(|v| (v - q.truth).abs() <= REL_TOL * q.truth.abs());
        let source = match &expert_value {
            Some((name, _)) => format!("computed by {name}"),
            None => "written by the LLM".to_string(),
        };
        let verdict = if agrees { "agrees" } else { "does not agree" };
        writeln!(out, "    {source}; PYPOWER says {} ({verdict} to 1e-4)\n", q.truth).map_err(io)?;
        summary.computed_right += usize::from(agrees && expert_value.is_some());
    }
    Ok(summary)
}

/// The demo's questions and their answers, all in one batch, as `run` prints them.
pub fn answer<B: Backend>(engine: &Engine<B>) -> Result<(Vec<GridQuestion>, Vec<Answer>)> {
    let qs = questions()?;
    let reqs: Vec<_> = qs.iter().map(|q| request(q, MAX_TOKENS)).collect();
    let cfg = SchedulerConfig { max_step_tokens: PREFILL_CHUNK, max_running: reqs.len(), kv_tokens: 16_384 };
    let answers = engine.generate_batch(&reqs, cfg, |_| {})?;
    Ok((qs, answers))
}

/// A value list for a trace line: whole when short; a grid's padded system is long,
/// so only its head and its length then.
pub fn brief(v: &[f64]) -> String {
    const SHOWN: usize = 12;
    if v.len() <= SHOWN {
        format!("{v:?}")
    } else {
        format!("{:?} ... ({} values)", &v[..SHOWN], v.len())
    }
}
