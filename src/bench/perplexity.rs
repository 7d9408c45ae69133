//! Teacher-forced scoring of a token sequence: perplexity and the top-1 token at every
//! position, the numbers `bench/llama_cpp_compare.py` checks against llama.cpp on the
//! same ids.
//!
//! The protocol, which the script repeats on llama.cpp's side: the ids are cut into
//! consecutive windows of `ctx` tokens (the last one may be shorter); each window runs
//! from position 0 on a fresh KV cache; in a window of `n` tokens, positions 1..n are
//! scored from the logits at positions 0..n-1. Nothing is prepended (no BOS), so the
//! first token of each window is context only.

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::llm::{Logits, SeqChunk};

/// Tokens per forward step: the scheduler's prefill chunk, so that the logits held at
/// once stay bounded (`rows * vocab` floats) whatever `ctx` is; a window of up to this
/// many tokens is one prefill.
pub const STEP_TOKENS: usize = 512;

/// Everything a run measured. The per-position vectors are aligned: entry `j` is the
/// `j`-th scored position, in window order.
#[derive(Debug, Serialize)]
pub struct PerplexityReport {
    #[serde(flatten)]
    pub run: super::RunHeader,
    /// Where the ids came from (a text file, tokenized by the model's tokenizer, or
    /// an ids file).
    pub source: String,
    pub bos_added: bool,
    pub ctx: usize,
    pub windows: usize,
    /// Ids given, and ids scored (each window's first token is not).
    pub tokens: usize,
    pub scored: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
    /// Seconds in the forward passes and the scoring, all windows.
    pub seconds: f64,
    pub tok_per_s: f64,
    pub ids: Vec<u32>,
    /// The id each scored position predicts (the next token), its negative
    /// log-likelihood (log-softmax in f64), the argmax of the logits (the lowest id on
    /// a tie) and the gap between the two largest logits.
    pub targets: Vec<u32>,
    pub nll: Vec<f64>,
    pub top1: Vec<u32>,
    pub top1_margin: Vec<f32>,
}

impl PerplexityReport {
    /// Positions where our argmax is the target (a model's own accuracy, not the
    /// comparison with another engine).
    pub fn top1_hits(&self) -> usize {
        self.top1.iter().zip(&self.targets).filter(|(a, b)| a == b).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} tokens in {} window(s) of up to {}: {} scored, perplexity {:.4} (mean NLL {:.5}), top-1 = next \
             token at {:.2} %; {:.1} tok/s\n",
            self.tokens,
            self.windows,
            self.ctx,
            self.scored,
            self.perplexity,
            self.mean_nll,
            100.0 * self.top1_hits() as f64 / self.scored.max(1) as f64,
            self.tok_per_s
        )
    }
}

/// The windows `ids` is cut into for `ctx`: (first id, length), each at least two
/// tokens long (a last window of one token has nothing to score and is dropped).
pub fn windows(tokens: usize, ctx: usize) -> Vec<(usize, usize)> {
    (0..tokens).step_by(ctx.max(1)).map(|s| (s, ctx.min(tokens - s))).filter(|w| w.1 >= 2).collect()
}

/// Checks `ids` and `ctx` against the model, before any work.
fn check<B: Backend>(engine: &Engine<B>, ids: &[u32], ctx: usize) -> Result<()> {
    let c = &engine.llm.config;
    if ctx < 2 || ctx > c.max_position_embeddings {
        return Err(Error::Request(format!(
            "--ctx {ctx}: a window needs 2 to {} tokens (the model's context)",
            c.max_position_embeddings
        )));
    }
    if ids.len() < 2 {
        return Err(Error::Request(format!(
            "{} token(s) to score: perplexity needs at least 2 (one of context, one predicted)",
            ids.len()
        )));
    }
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &t)| t as usize >= c.vocab_size) {
        return Err(Error::Request(format!(
            "token id {bad} (at index {i}) is outside the model's vocabulary of {}",
            c.vocab_size
        )));
    }
    Ok(())
}

/// NLL of `target`, the argmax and the top-2 gap of one logits row, in f64.
fn score_row(row: &[f32], target: u32) -> Result<(f64, u32, f32)> {
    let (mut best, mut second, mut arg) = (f32::NEG_INFINITY, f32::NEG_INFINITY, 0usize);
    for (i, &x) in row.iter().enumerate() {
        if !x.is_finite() {
            return Err(Error::Request(format!(
                "logit {i} is {x}: the model's weights or config do not give meaningful numbers"
            )));
        }
        if x > best {
            (second, best, arg) = (best, x, i);
        } else if x > second {
            second = x;
        }
    }
    let m = best as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    let nll = m + sum.ln() - row[target as usize] as f64;
    Ok((nll, arg as u32, best - second))
}

/// Scores `ids` in windows of `ctx` tokens (see the module's protocol). `progress` is
/// called with (windows done, windows in all) after each window.
pub fn run<B: Backend>(
    engine: &Engine<B>,
    model: &str,
    source: &str,
    ids: Vec<u32>,
    ctx: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityReport> {
    check(engine, &ids, ctx)?;
    let (llm, b) = (&engine.llm, &engine.backend);
    let vocab = llm.config.vocab_size;
    let wins = windows(ids.len(), ctx);
    let scored: usize = wins.iter().map(|w| w.1 - 1).sum();
    let (mut targets, mut nll, mut top1, mut margin) = (
        Vec::with_capacity(scored),
        Vec::with_capacity(scored),
        Vec::with_capacity(scored),
        Vec::with_capacity(scored),
    );
    let started = std::time::Instant::now();
    for (w, &(first, len)) in wins.iter().enumerate() {
        let window = &ids[first..first + len];
        // Every window on a fresh cache, as llama.cpp's side does.
        let mut cache = llm.new_cache(b, len);
        let mut table = Vec::new();
        cache.reserve(&mut table, len)?;
        for start in (0..len).step_by(STEP_TOKENS) {
            let part = &window[start..len.min(start + STEP_TOKENS)];
            let step = [SeqChunk { tokens: part, start, block_table: &table, logits: Logits::All }];
            let logits = llm.forward(b, &mut cache, &step)?;
            if logits.len() != part.len() * vocab {
                return Err(Error::Request(format!(
                    "the forward pass returned {} logits for {} positions of {vocab}",
                    logits.len(),
                    part.len()
                )));
            }
            // Row i predicts window[start + i + 1]; the window's last row predicts
            // nothing inside it.
            let rows = part.len().min(len - 1 - start);
            let scores: Vec<(f64, u32, f32)> = logits
                .par_chunks_exact(vocab)
                .take(rows)
                .enumerate()
                .map(|(i, row)| score_row(row, window[start + i + 1]))
                .collect::<Result<_>>()?;
            targets.extend_from_slice(&window[start + 1..start + 1 + rows]);
            for (l, t, g) in scores {
                nll.push(l);
                top1.push(t);
                margin.push(g);
            }
        }
        progress(w + 1, wins.len());
    }
    let seconds = started.elapsed().as_secs_f64();
    let mean_nll = nll.iter().sum::<f64>() / scored as f64;
    Ok(PerplexityReport {
        run: super::RunHeader::new(
            "perplexity",
            if b.name() == "cpu" { super::cpu_name() } else { b.name().to_string() },
            model,
            b.name(),
        ),
        source: source.to_string(),
        bos_added: false,
        ctx,
        windows: wins.len(),
        tokens: ids.len(),
        scored,
        mean_nll,
        perplexity: mean_nll.exp(),
        seconds,
        tok_per_s: ids.len() as f64 / seconds,
        ids,
        targets,
        nll,
        top1,
        top1_margin: margin,
    })
}

/// Token ids from a file: a JSON array, a JSON object with an `ids` array (as this
/// command's own --json writes), or integers separated by whitespace or commas.
pub fn parse_ids(text: &str, what: &str) -> Result<Vec<u32>> {
    let t = text.trim_start();
    let bad = |msg: String| Error::Request(format!("{what}: {msg}"));
    if t.starts_with('[') || t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let arr = match &v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => match o.get("ids") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err(bad("a JSON object needs an \"ids\" array".into())),
            },
            _ => unreachable!("starts with [ or {{"),
        };
        return arr
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(format!("entry {i} ({x}) is not a token id (an integer 0..2^32)")))
            })
            .collect();
    }
    t.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            s.parse::<u32>().map_err(|_| {
                bad(format!("entry {i} ({:?}) is not a token id", s.chars().take(20).collect::<String>()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_position_once() {
        assert_eq!(windows(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(windows(9, 4), vec![(0, 4), (4, 4)]); // a last window of 1 scores nothing
        assert_eq!(windows(3, 512), vec![(0, 3)]);
    }

    #[test]
    fn row_scores_match_a_direct_log_softmax() {
        let row = [1.0f32, 3.0, 2.0, 3.0];
        let (nll, arg, gap) = score_row(&row, 2).unwrap();
        let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((nll - (lse - 2.0)).abs() < 1e-12);
        assert_eq!((arg, gap), (1, 0.0)); // the lowest id of a tie
        assert!(score_row(&[0.0, f32::NAN], 0).is_err());
    }

    #[test]
    fn ids_parse_in_every_accepted_form() {
        assert_eq!(parse_ids(" [1, 2,3]", "f").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("{\"ids\": [4, 5]}", "f").unwrap(), vec![4, 5]);
        assert_eq!(parse_ids("6 7,8\n9", "f").unwrap(), vec![6, 7, 8, 9]);
        assert!(parse_ids("[1, -2]", "f").is_err());
        assert!(parse_ids("1 x", "f").is_err());
        assert!(parse_ids("{\"id\": []}", "f").is_err());
    }
}
