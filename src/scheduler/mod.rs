//! Continuous batching. Each `step` runs one flat token batch: new prompt chunks,
//! one decode token per generating sequence, and the injected tokens of expert
//! results (the *extend* part), all through a single `Llm::forward_sample`. After
//! sampling, the router sees every sequence that produced a token; the ones that
//! fired are gathered per expert into a routed batch, go through T2C and the expert
//! together, and their formatted results are queued as tokens for the next step.
//! A hidden-state gate is the exception in timing, not in kind: it reads the final
//! hidden state of the step's newest input token (computed in this very step), so
//! it decides about the position after that token; when it fires, the token sampled
//! from the same row is dropped and the expert's result takes its place.
//!
//! Policy lives here, mechanism in `kv`: requests are admitted while KV blocks are
//! free; when blocks run out mid-generation the most recently admitted sequence is
//! preempted (its blocks freed, its tokens kept) and recomputed later. Each sequence
//! samples with its own seeded generator, and on the CPU every op treats rows
//! independently, so a request's tokens do not depend on what it was batched with.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::cpu::sampling::NON_FINITE;
use crate::backend::Backend;
use crate::engine::{Engine, Finish, Request};
use crate::error::{Error, Result};
use crate::kv::{KvCache, BLOCK_SIZE};
use crate::llm::{DeviceGate, Logits, SeqChunk};
use crate::model::tokenizer::StreamDecoder;
use crate::pimoe::compose::{ok_rows, Composition, Computed, RouterState, SeqView};
use crate::pimoe::manifest::{render_on_failure, AfterResult};
use crate::pimoe::router::GateActivation;
use crate::sampling::Sampler;

/// Where a generated token came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Provenance {
    Llm,
    /// Part of an expert's formatted result: which expert, the inputs T2C gave it
    /// and the numbers it returned.
    Expert {
        expert: String,
        inputs: Vec<f64>,
        outputs: Vec<f64>,
    },
    /// The composition's `on_failure` text, standing where a fired expert's result
    /// would have: which expert, and why it could not compute one.
    Failed {
        expert: String,
        reason: String,
    },
}

pub type RequestId = u64;

#[derive(Clone, Debug)]
pub enum Event {
    /// A token of the answer; `text` is the new text it completes (may be empty
    /// while a multi-byte character is still incomplete).
    Token {
        id: RequestId,
        token: u32,
        text: String,
        provenance: Arc<Provenance>,
    },
    /// Something the answer's trace must show that is not a token: an expert that
    /// could not run (T2C found no number, a singular system, ...).
    Note {
        id: RequestId,
        /// The expert that could not run.
        expert: String,
        message: String,
    },
    Finished {
        id: RequestId,
        finish: Finish,
        stats: Stats,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub prompt_tokens: usize,
    /// Tokens sampled from the LLM.
    pub generated_tokens: usize,
    /// Tokens injected from expert results.
    pub injected_tokens: usize,
    pub expert_calls: usize,
    /// Expert calls that gave no result (the answer then carries the failure text).
    pub expert_failures: usize,
    /// Firings whose expert's T2C refused the question, handed to the router's next
    /// choice (a hidden gate's runner-up): the gate picked the wrong expert.
    pub reroutes: usize,
    /// Prompt, generated and injected tokens run through the model (recomputation
    /// after a preemption counts again).
    pub processed_tokens: usize,
    pub first_token_secs: f64,
    pub total_secs: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Tokens per step across all sequences (bounds a step's activation memory).
    pub max_step_tokens: usize,
    /// Sequences generating at once.
    pub max_running: usize,
    /// KV cache capacity in tokens, over all sequences.
    pub kv_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_step_tokens: 512, max_running: 64, kv_tokens: 16_384 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
}

struct Seq {
    id: RequestId,
    /// Prompt, then every generated and injected token, in order.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// The rendered prompt text, the start of the context T2C reads.
    prompt_text: String,
    /// Text of everything after the prompt, as streamed.
    text: String,
    /// Tokens already in the KV cache.
    computed: usize,
    table: Vec<u32>,
    state: State,
    sampler: Sampler,
    /// Tokens the answer may still add (generated or injected).
    budget: usize,
    hit_context: bool,
    stream: StreamDecoder,
    router: Option<RouterState>,
    /// Sum of the final-normed hidden states of positions 0..pooled_upto, when a
    /// learned T2C reads them.
    pooled: Vec<f64>,
    pooled_upto: usize,
    /// The hidden-state gate's probabilities for the newest token.
    last_gate: Vec<f32>,
    /// A result's closing punctuation, held back until the LLM's next token shows
    /// whether the model writes it itself. It is sentence punctuation standing in for
    /// the model's, not part of the computed result, so it goes in as the LLM's text
    /// and a result's span is exactly its formatted number.
    pending_close: Option<Vec<u32>>,
    /// Set by a result when the composition ends answers after it.
    after: Option<After>,
    stats: Stats,
    started: Instant,
}

/// How much more the LLM may write after a result (the composition's `after_result`).
#[derive(Clone, Copy, Debug)]
enum After {
    /// Up to the end of the sentence that starts at this byte of `text` (the result's).
    Sentence {
        from: usize,
    },
    Tokens(usize),
}

impl Seq {
    fn length_finish(&self) -> Finish {
        if self.hit_context {
            Finish::Context
        } else {
            Finish::Length
        }
    }

    /// Appends tokens of an expert's result (up to the budget) and streams them.
    fn inject(
        &mut self,
        tokenizer: &crate::model::tokenizer::Tokenizer,
        ids: &[u32],
        provenance: &Arc<Provenance>,
        events: &mut Vec<Event>,
    ) -> Result<usize> {
        let take = ids.len().min(self.budget);
        self.append(tokenizer, &ids[..take], provenance, events)?;
        self.budget -= take;
        Ok(take)
    }

    /// Appends injected tokens and streams them, whatever the budget.
    fn append(
        &mut self,
        tokenizer: &crate::model::tokenizer::Tokenizer,
        ids: &[u32],
        provenance: &Arc<Provenance>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        for &tok in ids {
            self.tokens.push(tok);
            let piece = self.stream.push(tokenizer, tok)?.unwrap_or_default();
            self.text.push_str(&piece);
            events.push(Event::Token {
                id: self.id,
                token: tok,
                text: piece,
                provenance: provenance.clone(),
            });
        }
        self.stats.injected_tokens += ids.len();
        Ok(())
    }

    /// Puts held-back closing punctuation in, as the LLM's text (see `pending_close`),
    /// and tells the router.
    fn flush_close(
        &mut self,
        tokenizer: &crate::model::tokenizer::Tokenizer,
        pimoe: &Composition,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if let Some(close) = self.pending_close.take() {
            self.inject(tokenizer, &close, &Arc::new(Provenance::Llm), events)?;
            if let Some(r) = self.router.as_mut() {
                pimoe.router.absorb(r, &close)?;
            }
        }
        Ok(())
    }

    /// Whether the LLM's next token, whose text is `piece`, comes after the end of
    /// the answer that the composition's `after_result` allows (it is then dropped).
    fn ends_before(&self, piece: &str) -> bool {
        match self.after {
            None => false,
            Some(After::Tokens(n)) => n == 0,
            Some(After::Sentence { from }) => {
                let tail = self.text[from..].trim_end_matches(['"', '\'', ')', ']']);
                let closed = tail.ends_with(['.', '!', '?']) || self.text.ends_with('\n');
                piece.starts_with('\n') || (closed && piece.starts_with(char::is_whitespace))
            }
        }
    }
}

/// Sentence punctuation at the end of a result: held back, so that the model's own
/// (". " after "MW") does not double it.
fn closing_punctuation(text: &str) -> usize {
    let body = text.trim_end_matches(['.', ',', ';', ':', '!', '?']);
    if body.is_empty() {
        0
    } else {
        text.len() - body.len()
    }
}

pub struct Scheduler<'e, B: Backend> {
    engine: &'e Engine<B>,
    cache: KvCache<B>,
    /// Admission order; preempted sequences go back to the front of the waiting ones.
    seqs: Vec<Seq>,
    queue: VecDeque<RequestId>,
    next_id: RequestId,
    cfg: SchedulerConfig,
    stops: Vec<u32>,
    preemptions: usize,
    /// A hidden-state router's gate, run inside each step on the backend.
    gate: Option<DeviceGate<B>>,
}

impl<'e, B: Backend> Scheduler<'e, B> {
    pub fn new(engine: &'e Engine<B>, cfg: SchedulerConfig) -> Result<Self> {
        if cfg.max_step_tokens == 0 || cfg.max_running == 0 || cfg.kv_tokens < BLOCK_SIZE {
            return Err(Error::Request(format!("scheduler limits must be positive: {cfg:?}")));
        }
        // The pool is allocated whole, now: a size the machine cannot hold is an error
        // here, not an abort.
        let kv_bytes =
            engine.llm.config.kv_bytes_per_token().and_then(|b| b.checked_mul(cfg.kv_tokens)).ok_or_else(
                || Error::Request(format!("a KV cache of {} tokens overflows a byte count", cfg.kv_tokens)),
            )?;
        crate::backend::check_fits(
            &engine.backend,
            kv_bytes,
            &format!("a KV cache of {} tokens", cfg.kv_tokens),
        )?;
        let stops =
            engine.llm.config.eos_token_ids.iter().chain(engine.tokenizer.stop_ids()).copied().collect();
        let gate = match engine.pimoe.as_ref().and_then(|c| c.hidden_gate()) {
            Some(g) => {
                let layers: Vec<(&[f32], &[f32])> =
                    g.mlp().layers().iter().map(|l| (l.weight(), l.bias())).collect();
                Some(DeviceGate::new(&engine.backend, &layers, g.activation() == GateActivation::Softmax)?)
            }
            None => None,
        };
        Ok(Scheduler {
            cache: engine.llm.new_cache(&engine.backend, cfg.kv_tokens),
            engine,
            seqs: Vec::new(),
            queue: VecDeque::new(),
            next_id: 0,
            cfg,
            stops,
            preemptions: 0,
            gate,
        })
    }

    /// Queues a request; its tokens come out of later `step`s.
    pub fn submit(&mut self, req: &Request) -> Result<RequestId> {
        let e = self.engine;
        let prompt_text = e.prompt_text(&req.prompt)?;
        let ids = e.tokenizer.encode(&prompt_text)?;
        let ctx = e.llm.config.max_position_embeddings;
        if ids.is_empty() {
            return Err(Error::Request("the prompt is empty after tokenization".into()));
        }
        if ids.len() >= ctx {
            return Err(Error::Request(format!(
                "the prompt is {} tokens; the model's context window is {ctx} tokens, leaving no room to generate",
                ids.len()
            )));
        }
        let cap = self.cache.num_blocks * BLOCK_SIZE;
        if ids.len() + 1 > cap {
            return Err(Error::Request(format!(
                "the prompt is {} tokens; the KV cache holds {cap} tokens in all",
                ids.len()
            )));
        }
        if req.max_tokens == 0 {
            return Err(Error::Request(
                "max_tokens is 0: a request must be allowed at least one token".into(),
            ));
        }
        let sampler = Sampler::new(req.sampling.clone())?;
        let id = self.next_id;
        self.next_id += 1;
        let budget = req.max_tokens.min(ctx - ids.len()).min(cap - ids.len());
        self.seqs.push(Seq {
            id,
            prompt_len: ids.len(),
            stats: Stats { prompt_tokens: ids.len(), ..Stats::default() },
            tokens: ids,
            prompt_text,
            text: String::new(),
            computed: 0,
            table: Vec::new(),
            state: State::Waiting,
            sampler,
            hit_context: budget < req.max_tokens,
            budget,
            stream: StreamDecoder::default(),
            router: e.pimoe.as_ref().map(|p| p.router_state()),
            pooled: Vec::new(),
            pooled_upto: 0,
            last_gate: Vec::new(),
            pending_close: None,
            after: None,
            started: Instant::now(),
        });
        self.queue.push_back(id);
        Ok(id)
    }

    /// Stops a request and frees its blocks; its Finished event is not sent.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let Some(i) = self.seqs.iter().position(|s| s.id == id) else { return false };
        let mut s = self.seqs.remove(i);
        self.cache.release(&mut s.table);
        self.queue.retain(|&q| q != id);
        true
    }

    /// Ends a request where it stands (as a harness does when a stop condition of its
    /// own is met) and returns its stats; no Finished event is sent.
    pub fn stop(&mut self, id: RequestId) -> Option<Stats> {
        let i = self.seqs.iter().position(|s| s.id == id)?;
        let mut stats = self.seqs[i].stats.clone();
        stats.total_secs = self.seqs[i].started.elapsed().as_secs_f64();
        self.cancel(id);
        Some(stats)
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// A live request's prompt length in tokens.
    pub fn prompt_tokens(&self, id: RequestId) -> Option<usize> {
        self.seqs.iter().find(|s| s.id == id).map(|s| s.prompt_len)
    }

    /// A live request's prompt tokens in the KV cache, and its prompt length.
    pub fn prefill_progress(&self, id: RequestId) -> Option<(usize, usize)> {
        self.seqs.iter().find(|s| s.id == id).map(|s| (s.computed.min(s.prompt_len), s.prompt_len))
    }

    /// Requests submitted and not yet admitted (including preempted ones).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Sequences admitted and generating.
    pub fn running(&self) -> usize {
        self.seqs.len() - self.queue.len()
    }

    /// KV cache blocks (of `BLOCK_SIZE` tokens): (in use, free).
    pub fn kv_blocks(&self) -> (usize, usize) {
        let free = self.cache.free_blocks();
        (self.cache.num_blocks - free, free)
    }

    /// Sequences sent back to wait (and be recomputed) because blocks ran out.
    pub fn preemptions(&self) -> usize {
        self.preemptions
    }

    /// Runs one step for every admitted sequence and returns what it produced.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.admit();
        let plan = self.plan_step()?;
        if plan.is_empty() {
            return Ok(events);
        }
        let e = self.engine;
        let mut params = Vec::new();
        for p in plan.iter().filter(|p| p.sample) {
            params.push(self.seqs[p.seq].sampler.next_params());
        }
        let chunks: Vec<SeqChunk> = plan
            .iter()
            .map(|p| {
                let s = &self.seqs[p.seq];
                SeqChunk {
                    tokens: &s.tokens[s.computed..s.computed + p.take],
                    start: s.computed,
                    block_table: &s.table,
                    logits: if p.sample { Logits::Last } else { Logits::None },
                }
            })
            .collect();
        let want_hidden = e.pimoe.as_ref().is_some_and(|c| c.needs_pooled_hidden());
        let (sampled, hidden, gate) = if want_hidden || self.gate.is_some() {
            let out = e.llm.forward_sample_with(
                &e.backend,
                &mut self.cache,
                &chunks,
                &params,
                want_hidden,
                self.gate.as_ref(),
            )?;
            (out.tokens, out.hidden, out.gate)
        } else {
            (e.llm.forward_sample(&e.backend, &mut self.cache, &chunks, &params)?, Vec::new(), Vec::new())
        };
        drop(chunks);
        // Each sampled row's gate probabilities, for the router.
        let gate_width = self.gate.as_ref().map_or(0, |g| g.outputs());
        let mut gate_rows = gate.chunks(gate_width.max(1));
        for p in plan.iter().filter(|p| p.sample) {
            if let Some(row) = gate_rows.next().filter(|_| gate_width > 0) {
                self.seqs[p.seq].last_gate = row.to_vec();
            }
        }
        let h = e.llm.config.hidden_size;
        // Each planned chunk's rows in the flat batch, for its hidden states.
        let mut row = 0;
        for p in &plan {
            let s = &mut self.seqs[p.seq];
            if !hidden.is_empty() {
                let rows = &hidden[row * h..(row + p.take) * h];
                // Positions already pooled (before a preemption) are not added twice.
                let skip = s.pooled_upto.saturating_sub(s.computed).min(p.take);
                if s.pooled.is_empty() {
                    s.pooled = vec![0.0; h];
                }
                for r in rows.chunks_exact(h).skip(skip) {
                    s.pooled.iter_mut().zip(r).for_each(|(a, &v)| *a += v as f64);
                }
                s.pooled_upto = s.pooled_upto.max(s.computed + p.take);
            }
            row += p.take;
        }

        for p in &plan {
            let s = &mut self.seqs[p.seq];
            s.computed += p.take;
            s.stats.processed_tokens += p.take;
        }
        let mut done = Vec::new();
        // A row whose logits were NaN or infinite ends its sequence: no router reads
        // it and no token of it goes into the answer.
        let (broken, sampled): (Vec<(usize, u32)>, Vec<(usize, u32)>) =
            plan.iter().filter(|p| p.sample).map(|p| p.seq).zip(sampled).partition(|&(_, t)| t == NON_FINITE);
        done.extend(broken.into_iter().map(|(i, _)| (i, Finish::NonFinite)));
        // A hidden-state gate read the step's input token (the newest one in each
        // sequence): when it fires, the expert's result follows that token and the
        // token sampled from the same row is dropped. The other gates decide after
        // the sampled token is appended (they read the token or the text).
        let mut replaced = Vec::new();
        if let (Some(pimoe), true) = (&e.pimoe, self.gate.is_some()) {
            let rows: Vec<usize> = sampled.iter().map(|&(i, _)| i).collect();
            replaced = self.route(pimoe, &rows, &mut events, &mut done)?;
        }
        let mut fresh = Vec::new(); // sequences that got a new LLM token
        for &(i, tok) in &sampled {
            if replaced.contains(&i) {
                continue;
            }
            let s = &mut self.seqs[i];
            if s.stats.generated_tokens == 0 && s.stats.injected_tokens == 0 {
                s.stats.first_token_secs = s.started.elapsed().as_secs_f64();
            }
            let stop = self.stops.contains(&tok);
            let piece = if s.pending_close.is_some() || s.after.is_some() {
                s.stream.peek(&e.tokenizer, tok)?
            } else {
                String::new()
            };
            if let (Some(close), Some(pimoe)) = (&s.pending_close, &e.pimoe) {
                let own = e.tokenizer.decode(close)?;
                if stop || !own.chars().next().is_some_and(|c| piece.starts_with(c)) {
                    // The model went on without the punctuation (ending, or gluing
                    // digits onto the number): it goes in, and the token sampled
                    // without it is dropped.
                    s.flush_close(&e.tokenizer, pimoe, &mut events)?;
                    if s.budget == 0 || stop || s.ends_before(" ") {
                        done.push((i, if s.budget == 0 && !stop { s.length_finish() } else { Finish::Stop }));
                    }
                    continue;
                }
                s.pending_close = None;
            }
            if stop {
                done.push((i, Finish::Stop));
                continue;
            }
            if s.ends_before(&piece) {
                done.push((i, Finish::Stop));
                continue;
            }
            if let Some(After::Tokens(n)) = &mut s.after {
                *n -= 1;
            }
            s.tokens.push(tok);
            s.budget -= 1;
            s.stats.generated_tokens += 1;
            let text = s.stream.push(&e.tokenizer, tok)?.unwrap_or_default();
            s.text.push_str(&text);
            events.push(Event::Token { id: s.id, token: tok, text, provenance: Arc::new(Provenance::Llm) });
            if s.budget == 0 {
                done.push((i, s.length_finish()));
            } else if matches!(s.after, Some(After::Tokens(0))) {
                done.push((i, Finish::Stop));
            } else {
                fresh.push(i);
            }
        }
        if let (Some(pimoe), false) = (&e.pimoe, self.gate.is_some()) {
            self.route(pimoe, &fresh, &mut events, &mut done)?;
        }
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, finish) in done {
            let mut s = self.seqs.remove(i);
            self.cache.release(&mut s.table);
            s.stats.total_secs = s.started.elapsed().as_secs_f64();
            events.push(Event::Finished { id: s.id, finish, stats: s.stats });
        }
        Ok(events)
    }

    /// Runs the router over `rows` (sequences at a decision point: they just
    /// sampled a token, or, for a hidden-state gate, their step's input token is
    /// the newest), then T2C and the experts for those that fired, one batch per
    /// expert, and appends the formatted results as tokens for the next step.
    /// Returns the sequences that got a result or the failure text in its place.
    fn route(
        &mut self,
        pimoe: &Composition,
        rows: &[usize],
        events: &mut Vec<Event>,
        done: &mut Vec<(usize, Finish)>,
    ) -> Result<Vec<usize>> {
        let e = self.engine;
        // Batch order is sequence order, so the router's rows line up with `fresh`.
        let mut fresh = rows.to_vec();
        fresh.sort_unstable();
        let fired = {
            let mut states = Vec::new();
            let mut views = Vec::new();
            for (_, s) in self.seqs.iter_mut().enumerate().filter(|(i, _)| fresh.contains(i)) {
                views.push(SeqView {
                    token: *s.tokens.last().expect("a sequence has its prompt"),
                    text: &s.text,
                    gate: (!s.last_gate.is_empty()).then_some(s.last_gate.as_slice()),
                });
                states.push(s.router.as_mut().expect("a composition gives every sequence a router state"));
            }
            e.backend.push_range("route");
            let fired = pimoe.route(&mut states, &views);
            e.backend.pop_range();
            fired?
        };
        let mut injected = Vec::new();
        // fired[j] belongs to fresh[j]: each sequence with the experts it may try.
        let mut pending: Vec<(usize, Vec<usize>)> =
            fresh.iter().copied().zip(fired).filter(|(_, c)| !c.is_empty()).collect();
        while !pending.is_empty() {
            let mut retry = Vec::new();
            // Grouped by expert, keeping batch order.
            for expert in 0..pimoe.num_experts() {
                let group: Vec<&(usize, Vec<usize>)> =
                    pending.iter().filter(|(_, c)| c[0] == expert).collect();
                if group.is_empty() {
                    continue;
                }
                let members: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
                let contexts: Vec<String> = members
                    .iter()
                    .map(|&i| format!("{}{}", self.seqs[i].prompt_text, self.seqs[i].text))
                    .collect();
                let pooled: Option<Vec<f64>> = match self.engine.backbones.get(expert) {
                    // Its own backbone reads the whole context, as the reference's does.
                    Some(Some(backbone)) => {
                        let mut all = Vec::new();
                        for &i in &members {
                            all.extend(backbone.pooled_hidden(
                                &self.engine.backend,
                                &self.seqs[i].tokens,
                                self.cfg.max_step_tokens,
                            )?);
                        }
                        Some(all)
                    }
                    _ => pimoe.needs_pooled_hidden().then(|| {
                        members
                            .iter()
                            .flat_map(|&i| {
                                let s = &self.seqs[i];
                                s.pooled.iter().map(move |v| v / s.pooled_upto.max(1) as f64)
                            })
                            .collect()
                    }),
                };
                // T2C on the host, the expert on the backend (f64 kernels on the GPU).
                e.backend.push_range(&format!("expert {}", pimoe.expert_name(expert)));
                // A T2C that refuses the question hands it to the router's next choice.
                let (mut members, mut inputs) = (Vec::new(), Vec::new());
                for (&(i, ref tried), input) in
                    group.into_iter().zip(pimoe.inputs(expert, &contexts, pooled.as_deref()))
                {
                    if input.as_ref().is_err_and(|r| r.pass_on) && tried.len() > 1 {
                        retry.push((i, tried[1..].to_vec()));
                        self.seqs[i].stats.reroutes += 1;
                    } else {
                        members.push(i);
                        inputs.push(input);
                    }
                }
                if members.is_empty() {
                    e.backend.pop_range();
                    continue;
                }
                let (flat, rows) = ok_rows(&inputs);
                let outputs =
                    e.backend.run_expert(&e.experts[expert], &pimoe.experts[expert].expert, &flat, rows);
                e.backend.pop_range();
                let results = pimoe.finish(expert, inputs, outputs?);
                for (&i, result) in members.iter().zip(results) {
                    injected.push(i);
                    let s = &mut self.seqs[i];
                    s.stats.expert_calls += 1;
                    match result {
                        Computed::Ok { text, inputs, outputs } => {
                            if s.stats.generated_tokens == 0 && s.stats.injected_tokens == 0 {
                                s.stats.first_token_secs = s.started.elapsed().as_secs_f64();
                            }
                            let tokenizer = &self.engine.tokenizer;
                            // A result that follows another's held-back punctuation puts it in first.
                            s.flush_close(tokenizer, pimoe, events)?;
                            let from = s.text.len();
                            let (body, close) = text.split_at(text.len() - closing_punctuation(&text));
                            let ids = tokenizer.encode(body)?;
                            let prov = Arc::new(Provenance::Expert {
                                expert: pimoe.expert_name(expert).to_string(),
                                inputs,
                                outputs,
                            });
                            let take = s.inject(tokenizer, &ids, &prov, events)?;
                            if let Some(r) = s.router.as_mut() {
                                pimoe.injected(r, &ids[..take])?;
                            }
                            s.after = match pimoe.after_result {
                                AfterResult::Continue => None,
                                AfterResult::Sentence => Some(After::Sentence { from }),
                                AfterResult::MaxTokens(n) => Some(After::Tokens(n)),
                            };
                            if !close.is_empty() {
                                s.pending_close = Some(tokenizer.encode(close)?);
                                if matches!(s.after, Some(After::Tokens(0))) {
                                    s.flush_close(tokenizer, pimoe, events)?;
                                }
                            }
                            if s.budget == 0 {
                                done.push((i, s.length_finish()));
                            } else if matches!(s.after, Some(After::Tokens(0))) {
                                done.push((i, Finish::Stop));
                            }
                        }
                        Computed::Failed(reason) => {
                            // No expert could compute what the router fired for: the
                            // composition's failure text stands where the number would
                            // have, and the answer ends (what followed would build on it).
                            let name = pimoe.expert_name(expert);
                            events.push(Event::Note {
                                id: s.id,
                                expert: name.to_string(),
                                message: format!("{name}: {reason}"),
                            });
                            if s.stats.generated_tokens == 0 && s.stats.injected_tokens == 0 {
                                s.stats.first_token_secs = s.started.elapsed().as_secs_f64();
                            }
                            let tokenizer = &self.engine.tokenizer;
                            s.flush_close(tokenizer, pimoe, events)?;
                            let text = render_on_failure(&pimoe.on_failure, name, &reason);
                            let prov = Arc::new(Provenance::Failed { expert: name.to_string(), reason });
                            // Whole even past the budget: it ends the answer (so needs no
                            // KV), and cut short it would not say why.
                            let ids = tokenizer.encode(&text)?;
                            s.append(tokenizer, &ids, &prov, events)?;
                            s.stats.expert_failures += 1;
                            done.push((i, Finish::ExpertFailed));
                        }
                    }
                }
            }
            pending = retry;
        }
        Ok(injected)
    }

    /// Moves waiting sequences to running while there is room for their next chunk.
    fn admit(&mut self) {
        let mut running = self.seqs.iter().filter(|s| s.state == State::Running).count();
        while running < self.cfg.max_running {
            let Some(&id) = self.queue.front() else { break };
            let s = self.seqs.iter_mut().find(|s| s.id == id).expect("queued ids are live");
            let first = (s.tokens.len() - s.computed).min(self.cfg.max_step_tokens);
            if (s.computed + first).div_ceil(BLOCK_SIZE) > s.table.len() + self.cache.free_blocks() {
                break;
            }
            s.state = State::Running;
            self.queue.pop_front();
            running += 1;
        }
    }

    /// Chooses each running sequence's share of the step and reserves its blocks,
    /// preempting the newest sequences when blocks run out.
    fn plan_step(&mut self) -> Result<Vec<Planned>> {
        loop {
            let mut plan = Vec::new();
            let mut left = self.cfg.max_step_tokens;
            // Sequences with one or a few tokens to go first, so that decoding never
            // waits behind a long prompt; then prompt chunks fill the rest.
            let mut order: Vec<usize> =
                (0..self.seqs.len()).filter(|&i| self.seqs[i].state == State::Running).collect();
            order.sort_by_key(|&i| (self.seqs[i].computed < self.seqs[i].prompt_len, i));
            let mut short = None;
            for i in order {
                let s = &mut self.seqs[i];
                let pending = s.tokens.len() - s.computed;
                let take = pending.min(left);
                if take == 0 {
                    continue;
                }
                if self.cache.reserve(&mut s.table, s.computed + take).is_err() {
                    short = Some(i);
                    break;
                }
                left -= take;
                plan.push(Planned { seq: i, take, sample: take == pending });
            }
            let Some(blocked) = short else { return Ok(plan) };
            if !self.preempt(blocked) {
                let s = &self.seqs[blocked];
                return Err(Error::Request(format!(
                    "request {}: {} tokens do not fit in a KV cache of {} tokens",
                    s.id,
                    s.tokens.len(),
                    self.cache.num_blocks * BLOCK_SIZE
                )));
            }
        }
    }

    /// Frees the newest running sequence other than `keep`, to be recomputed later.
    fn preempt(&mut self, keep: usize) -> bool {
        let victim = (0..self.seqs.len())
            .rev()
            .find(|&i| i != keep && self.seqs[i].state == State::Running && !self.seqs[i].table.is_empty());
        let Some(v) = victim else { return false };
        let s = &mut self.seqs[v];
        self.cache.release(&mut s.table);
        s.computed = 0;
        s.state = State::Waiting;
        self.preemptions += 1;
        self.queue.push_front(s.id);
        true
    }
}

struct Planned {
    seq: usize,
    take: usize,
    sample: bool,
}
