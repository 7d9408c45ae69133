//! Latency per answer for a fixed list of prompts served one at a time, greedy, each to
//! a given token budget (generated plus injected tokens): pimoe's side of the
//! comparison with the PiERN reference's loop (`pimoe bench-answers`; the workload is
//! written by bench/reference/piern_loop.py, see bench/NOTES.md). One request at a
//! time, as the reference serves them; the clock runs from the prompt's text to the
//! answer's last token, tokenization included, as the reference's does.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::engine::{Engine, Prompt, Request};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::scheduler::{Event, Stats};

/// `{"warmup": N, "answers": [{"prompt": TEXT, "max_tokens": N}, ...]}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Untimed runs of the first answer before the timed ones.
    #[serde(default)]
    pub warmup: usize,
    pub answers: Vec<WorkItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItem {
    /// The prompt as the model reads it, chat format already rendered.
    pub prompt: String,
    /// Generated plus injected tokens.
    pub max_tokens: usize,
}

impl Workload {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let w: Workload = serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        if w.answers.is_empty() {
            return Err(Error::format(path, "`answers` is empty"));
        }
        for (i, a) in w.answers.iter().enumerate() {
            if a.prompt.is_empty() || a.max_tokens == 0 {
                return Err(Error::format(path, format!("answers[{i}]: empty `prompt` or `max_tokens` 0")));
            }
        }
        Ok(w)
    }
}

#[derive(Debug, Serialize)]
pub struct AnswersReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub commit: String,
    pub date: String,
    /// The manifest or model directory.
    pub model: String,
    pub warmup: usize,
    pub answers: Vec<AnswerTiming>,
    pub median_latency_s: f64,
    pub mean_latency_s: f64,
}

#[derive(Debug, Serialize)]
pub struct AnswerTiming {
    pub latency_s: f64,
    pub first_token_s: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub injected_tokens: usize,
    pub expert_calls: usize,
    /// Tokens run through the LLM (prompt, generated, injected).
    pub processed_tokens: usize,
    pub finish: String,
    /// T2C or expert failures, which would make the work differ from the reference's.
    pub notes: Vec<String>,
}

/// Runs the workload on `engine`, calling `on_answer` after each timed answer.
pub fn run<B: Backend>(
    engine: &Engine<B>,
    model: &str,
    work: &Workload,
    mut on_answer: impl FnMut(usize, &AnswerTiming),
) -> Result<AnswersReport> {
    let one = |item: &WorkItem| -> Result<AnswerTiming> {
        let req = Request {
            prompt: Prompt::Raw(item.prompt.clone()),
            max_tokens: item.max_tokens,
            sampling: SamplingParams::default(),
        };
        let (mut stats, mut notes) = (Stats::default(), Vec::new());
        let started = Instant::now();
        let g = engine.generate_events(&req, |ev| match ev {
            Event::Finished { stats: s, .. } => stats = s.clone(),
            Event::Note { message, .. } => notes.push(message.clone()),
            Event::Token { .. } => {}
        })?;
        let latency_s = started.elapsed().as_secs_f64();
        Ok(AnswerTiming {
            latency_s,
            first_token_s: stats.first_token_secs,
            prompt_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated_tokens,
            injected_tokens: stats.injected_tokens,
            expert_calls: stats.expert_calls,
            processed_tokens: stats.processed_tokens,
            finish: format!("{:?}", g.finish),
            notes,
        })
    };
    for _ in 0..work.warmup {
        one(&work.answers[0])?;
    }
    let mut answers = Vec::new();
    for (i, item) in work.answers.iter().enumerate() {
        let t = one(item)?;
        on_answer(i, &t);
        answers.push(t);
    }
    let lat: Vec<f64> = answers.iter().map(|a| a.latency_s).collect();
    Ok(AnswersReport {
        bench: "answers",
        backend: engine.backend.name(),
        commit: super::git_commit(),
        date: super::utc_now(),
        model: model.to_string(),
        warmup: work.warmup,
        median_latency_s: super::median(&lat),
        mean_latency_s: lat.iter().sum::<f64>() / lat.len() as f64,
        answers,
    })
}
