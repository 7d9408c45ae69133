//! Training rows for the demo's router, from the LLM's own answers.
//!
//! The LLM alone answers the training split's grid questions (greedy, the same
//! system prompt as everywhere). Where its answer's number starts is where the
//! router should fire: each row is the rendered prompt, the answer, and that place
//! as a byte offset into the answer with the question's expert, the form
//! `pimoe train router --kind hidden-gate` reads. An answer without a number is kept
//! with no firing (every position a negative).

use serde::Serialize;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::grid::Analysis;
use crate::scheduler::SchedulerConfig;
use crate::tasks::eval::{fire_point, request};
use crate::tasks::questions::{question_set, Split};

#[derive(Debug, Serialize)]
pub struct RouterRow {
    pub prompt: String,
    pub answer: String,
    pub fire: Vec<Fire>,
    /// The answer's ids as generated (encode(answer) may segment it otherwise).
    pub tokens: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct Fire {
    /// The router fires right after `answer[..at]`.
    pub at: usize,
    pub expert: String,
}

/// What `router_rows` made.
#[derive(Debug, Default)]
pub struct RouterDataSummary {
    pub rows: usize,
    pub with_number: usize,
}

/// Rows for `per_task` training questions of each analysis, answered by `engine`
/// (which must be a plain model: the LLM alone).
pub fn router_rows<B: Backend>(
    engine: &Engine<B>,
    per_task: usize,
    seed: u64,
    max_tokens: usize,
    sched: SchedulerConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<RouterRow>, RouterDataSummary)> {
    if engine.pimoe.is_some() {
        return Err(Error::Request(
            "router data comes from the LLM alone: give a model, not a manifest".into(),
        ));
    }
    let mut qs = question_set(Analysis::Dc, Split::Train, per_task, seed)?;
    qs.extend(question_set(Analysis::Ac, Split::Train, per_task, seed)?);
    let reqs: Vec<_> = qs.iter().map(|q| request(q, max_tokens)).collect();
    let mut done = 0;
    let answers = engine.generate_batch(&reqs, sched, |_| {
        done += 1;
        progress(done, reqs.len());
    })?;
    let mut summary = RouterDataSummary::default();
    let mut rows = Vec::new();
    for (q, a) in qs.iter().zip(&answers) {
        let fire: Vec<Fire> = fire_point(a)
            .map(|i| Fire {
                at: a.tokens[..i].iter().map(|t| t.text.len()).sum(),
                expert: q.expert().to_string(),
            })
            .into_iter()
            .collect();
        summary.with_number += fire.len();
        rows.push(RouterRow {
            prompt: engine.prompt_text(&q.prompt())?,
            answer: a.text.clone(),
            fire,
            tokens: a.tokens.iter().map(|t| t.id).collect(),
        });
    }
    summary.rows = rows.len();
    Ok((rows, summary))
}
