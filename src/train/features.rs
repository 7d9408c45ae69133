//! What the LLM computes for a training row, with our own forward pass on the CPU:
//! the final-normed hidden states (what a hidden-state gate and a learned T2C read
//! at run time), in prefill chunks of `PREFILL_CHUNK` tokens, without the lm_head.
//!
//! Rows are run one after another on one KV cache, in the order of their token ids
//! (which puts rows with a common prefix next to each other). A row that starts with
//! the same tokens as the row before (a shared system prompt, several answers to one
//! question) keeps that prefix's KV entries and runs only the rest: every CPU op
//! treats token rows independently, so the hidden states are the same bits as a run
//! from scratch (tested). Finished rows go to the optional [`FeatureCache`].

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::cache::{row_key, FeatureCache};
use crate::backend::cpu::CpuBackend;
use crate::engine::{Engine, PREFILL_CHUNK};
use crate::error::Result;
use crate::llm::{Logits, SeqChunk};
use crate::model::tokenizer::Tokenizer;
use crate::model::ModelConfig;

pub struct FeatureModel {
    engine: Engine<CpuBackend>,
    cache: Option<FeatureCache>,
    progress: bool,
}

impl FeatureModel {
    /// Loads the model in `dir`; with `cache`, features are kept under that folder.
    pub fn load(dir: &Path, cache: Option<&Path>, progress: bool) -> Result<Self> {
        let engine = Engine::load(CpuBackend, dir)?;
        let cache = cache.map(|root| FeatureCache::open(root, dir)).transpose()?;
        Ok(FeatureModel { engine, cache, progress })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.engine.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        &self.engine.llm.config
    }

    /// For each (tokens, from): the final-normed hidden states of positions
    /// from..tokens.len() when `tokens` run from position 0, (len - from, H) flat.
    pub fn hidden_rows(&self, rows: &[(&[u32], usize)]) -> Result<Vec<Vec<f32>>> {
        let (b, llm) = (&self.engine.backend, &self.engine.llm);
        let h = llm.config.hidden_size;
        let longest = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut kv = llm.new_cache(b, longest.max(1));
        let mut table = Vec::new();
        kv.reserve(&mut table, longest.max(1))?;
        // Tokens whose KV entries the cache holds, from position 0.
        let mut held: Vec<u32> = Vec::new();
        let mut progress = Progress::new(self.progress, rows.len());
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].0);
        let mut out = vec![Vec::new(); rows.len()];
        for i in order {
            let (tokens, from) = rows[i];
            assert!(
                from < tokens.len(),
                "hidden_rows: from {from} is past the row's {} tokens",
                tokens.len()
            );
            let key = row_key("hidden-v1", from, tokens);
            if let Some(v) = self.cache.as_ref().and_then(|c| c.get(key, (tokens.len() - from) * h)) {
                progress.row(0);
                out[i] = v;
                continue;
            }
            let shared = held.iter().zip(tokens).take_while(|(a, b)| a == b).count();
            let start = shared.min(from);
            let mut rows_h = Vec::with_capacity((tokens.len() - from) * h);
            let mut pos = start;
            for part in tokens[start..].chunks(PREFILL_CHUNK) {
                let step = [SeqChunk { tokens: part, start: pos, block_table: &table, logits: Logits::None }];
                let got = llm.forward_sample_with(b, &mut kv, &step, &[], true, None)?;
                let skip = from.saturating_sub(pos).min(part.len());
                rows_h.extend_from_slice(&got.hidden[skip * h..]);
                pos += part.len();
            }
            held = tokens.to_vec();
            if let Some(c) = &self.cache {
                c.put(key, &rows_h)?;
            }
            progress.row(tokens.len() - start);
            out[i] = rows_h;
        }
        progress.finish();
        Ok(out)
    }

    /// For each token list: the mean (H) of the final-normed hidden states of all its
    /// positions, as `Llm::pooled_hidden` computes it for a learned T2C.
    pub fn pooled(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f64>>> {
        let (b, llm) = (&self.engine.backend, &self.engine.llm);
        let h = llm.config.hidden_size;
        let mut progress = Progress::new(self.progress, rows.len());
        let mut out = Vec::with_capacity(rows.len());
        for tokens in rows {
            let key = row_key("pooled-v1", 0, tokens);
            if let Some(v) = self.cache.as_ref().and_then(|c| c.get(key, h)) {
                progress.row(0);
                out.push(v);
                continue;
            }
            let mean = llm.pooled_hidden(b, tokens, PREFILL_CHUNK)?;
            if let Some(c) = &self.cache {
                c.put(key, &mean)?;
            }
            progress.row(tokens.len());
            out.push(mean);
        }
        progress.finish();
        Ok(out)
    }
}

/// Rows done, tokens run and their rate: a bar on a terminal, else a line every
/// 30 seconds and one at the end.
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    cached: usize,
    tokens: usize,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(on: bool, total: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (on && tty).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "features [{bar:30}] {pos}/{len} rows, {msg} ({elapsed}, eta {eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Progress { bar, lines: on && !tty, total, done: 0, cached: 0, tokens: 0, start: now, last_line: now }
    }

    fn status(&self) -> String {
        let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        format!("{} tokens run ({rate:.0} tok/s), {} rows from the cache", self.tokens, self.cached)
    }

    /// One row finished after running `tokens` tokens (0: it came from the cache).
    fn row(&mut self, tokens: usize) {
        self.done += 1;
        self.tokens += tokens;
        self.cached += (tokens == 0) as usize;
        if let Some(bar) = &self.bar {
            bar.set_message(self.status());
            bar.inc(1);
        } else if self.lines && self.last_line.elapsed().as_secs() >= 30 {
            eprintln!("features: {}/{} rows, {}", self.done, self.total, self.status());
            self.last_line = Instant::now();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        } else if self.lines {
            eprintln!("features: {}/{} rows, {}", self.done, self.total, self.status());
        }
    }
}
