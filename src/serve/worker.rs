//! The engine thread: owns the one scheduler, takes jobs from the HTTP side between
//! steps, runs steps while anything is admitted, and sends each job's pieces back on
//! its own channel. A job whose channel is closed (the client went away) is cancelled
//! before the next step, which frees its KV blocks.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::api::{self, ApiError, Input, Tool, ToolChoice};
use super::metrics::Metrics;
use crate::backend::Backend;
use crate::engine::{Engine, Finish, Prompt, Request};
use crate::model::tokenizer::Message;
use crate::sampling::SamplingParams;
use crate::scheduler::{Event, Provenance, RequestId, Scheduler, SchedulerConfig, Stats};

pub struct Job {
    pub input: Input,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub out: UnboundedSender<Out>,
}

pub enum Command {
    Submit(Box<Job>),
}

#[derive(Debug)]
pub enum Out {
    /// Admitted to the scheduler's queue.
    Accepted {
        prompt_tokens: usize,
    },
    /// Text of the answer; consecutive pieces of one expert result share one `Arc`.
    Piece {
        text: String,
        provenance: Arc<Provenance>,
    },
    /// An expert that could not compute.
    Note {
        expert: String,
        message: String,
    },
    Done {
        finish: Finish,
        stats: Stats,
    },
    /// The request could not be admitted, or the engine failed under it.
    Error(ApiError),
}

/// A job in the scheduler: what has been generated and what is held back because it
/// may be the start of a stop sequence.
struct Live {
    out: UnboundedSender<Out>,
    stop: Vec<String>,
    /// Stop once the text holds a complete tool call.
    tools: bool,
    text: String,
    sent: usize,
    held: Vec<(String, Arc<Provenance>)>,
    first_token: bool,
    started: Instant,
}

impl Live {
    /// Sends the held text up to byte `upto` of `text`.
    fn release(&mut self, upto: usize) {
        while self.sent < upto {
            let Some((piece, prov)) = self.held.first_mut() else { break };
            let take = piece.len().min(upto - self.sent);
            let rest = piece.split_off(take);
            let head = std::mem::replace(piece, rest);
            self.sent += head.len();
            let _ = self.out.send(Out::Piece { text: head, provenance: prov.clone() });
            if self.held[0].0.is_empty() {
                self.held.remove(0);
            }
        }
    }

    /// Takes a new piece; returns true when a stop condition ends the request.
    fn push(&mut self, piece: String, provenance: Arc<Provenance>) -> bool {
        // A token that ends inside a UTF-8 character adds its text with a later one.
        if piece.is_empty() {
            return false;
        }
        let from = self.text.len().saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        self.text.push_str(&piece);
        self.held.push((piece, provenance));
        let from = (0..=from).rev().find(|&i| self.text.is_char_boundary(i)).unwrap_or(0);
        let hit = self.stop.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p)).min();
        if let Some(at) = hit {
            self.release(at);
            return true;
        }
        let keep = self
            .stop
            .iter()
            .filter_map(|s| {
                (1..s.len()).rev().find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        self.release(self.text.len() - keep);
        self.tools && api::call_complete(&self.text)
    }
}

/// The prompt text the model sees for a job.
fn render<B: Backend>(engine: &Engine<B>, job: &Job) -> crate::Result<Prompt> {
    let mut msgs = match &job.input {
        Input::Text(t) => return Ok(Prompt::Raw(t.clone())),
        Input::Chat(m) => m.clone(),
    };
    if !job.tools.is_empty() {
        let offer = api::tools_system(&job.tools, &job.tool_choice);
        match msgs.first_mut().filter(|m| m.role == "system") {
            Some(m) => m.content = format!("{}\n\n{offer}", m.content),
            None => msgs.insert(0, api::ChatMessage { role: "system".into(), content: offer }),
        }
    }
    let msgs: Vec<Message> = msgs.iter().map(|m| Message { role: &m.role, content: &m.content }).collect();
    Ok(Prompt::Raw(engine.tokenizer.chat_prompt(&msgs)?))
}

fn submit_error(e: crate::Error) -> ApiError {
    let msg = e.to_string();
    let mut err = ApiError::invalid(None, msg.clone());
    if msg.contains("context window") || msg.contains("KV cache holds") {
        err.code = Some("context_length_exceeded");
    }
    err
}

/// Runs until every sender of `rx` is gone. Errors only if the scheduler cannot be
/// made at all, before `ready` is called.
pub fn run<B: Backend>(
    engine: &Engine<B>,
    cfg: SchedulerConfig,
    max_queue: usize,
    rx: Receiver<Command>,
    metrics: &Metrics,
    ready: impl FnOnce(),
) -> crate::Result<()> {
    let mut sched = Scheduler::new(engine, cfg)?;
    ready();
    let mut live: HashMap<RequestId, Live> = HashMap::new();
    // Preemptions of schedulers replaced after an engine failure.
    let mut preempted = 0u64;
    let update_gauges = |sched: &Scheduler<B>, preempted: u64| {
        let (used, free) = sched.kv_blocks();
        metrics.queue_depth.store(sched.waiting() as u64, Relaxed);
        metrics.running.store(sched.running() as u64, Relaxed);
        metrics.kv_blocks_used.store(used as u64, Relaxed);
        metrics.kv_blocks_free.store(free as u64, Relaxed);
        metrics.preemptions.store(preempted + sched.preemptions() as u64, Relaxed);
    };
    update_gauges(&sched, preempted);
    loop {
        // Block for work only when nothing is admitted.
        let first = if sched.is_idle() {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return Ok(()),
            }
        } else {
            None
        };
        for Command::Submit(job) in first.into_iter().chain(rx.try_iter()) {
            if job.out.is_closed() {
                continue;
            }
            if sched.waiting() >= max_queue {
                let mut e = ApiError::status(
                    429,
                    "rate_limit_exceeded",
                    format!("the queue is full ({max_queue} requests waiting); retry later"),
                );
                e.retry_after = Some(1);
                let _ = job.out.send(Out::Error(e));
                continue;
            }
            let prompt = match render(engine, &job) {
                Ok(p) => p,
                Err(e) => {
                    let _ = job.out.send(Out::Error(submit_error(e)));
                    continue;
                }
            };
            let req =
                Request { prompt, max_tokens: job.max_tokens.unwrap_or(usize::MAX), sampling: job.sampling };
            match sched.submit(&req) {
                Ok(id) => {
                    let prompt_tokens = sched.prompt_tokens(id).unwrap_or(0);
                    metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Relaxed);
                    let _ = job.out.send(Out::Accepted { prompt_tokens });
                    live.insert(
                        id,
                        Live {
                            out: job.out,
                            stop: job.stop,
                            tools: !job.tools.is_empty(),
                            text: String::new(),
                            sent: 0,
                            held: Vec::new(),
                            first_token: true,
                            started: Instant::now(),
                        },
                    );
                }
                Err(e) => {
                    let _ = job.out.send(Out::Error(submit_error(e)));
                }
            }
        }
        live.retain(|&id, l| {
            let gone = l.out.is_closed();
            if gone {
                sched.cancel(id);
                metrics.disconnects.fetch_add(1, Relaxed);
            }
            !gone
        });
        update_gauges(&sched, preempted);
        if sched.is_idle() {
            continue;
        }
        let t = Instant::now();
        let events = match sched.step() {
            Ok(ev) => ev,
            Err(e) => {
                // Everything admitted fails with the step; a fresh scheduler serves on.
                metrics.engine_failures.fetch_add(live.len() as u64, Relaxed);
                for (_, l) in live.drain() {
                    let _ = l.out.send(Out::Error(ApiError::status(
                        500,
                        "server_error",
                        format!("the engine failed: {e}"),
                    )));
                }
                preempted += sched.preemptions() as u64;
                drop(sched);
                sched = Scheduler::new(engine, cfg)?;
                update_gauges(&sched, preempted);
                continue;
            }
        };
        metrics.step_seconds.observe(t.elapsed().as_secs_f64());
        let mut last_expert: HashMap<RequestId, usize> = HashMap::new();
        for ev in events {
            match ev {
                Event::Token { id, text, provenance, .. } => {
                    let Some(l) = live.get_mut(&id) else { continue };
                    if l.first_token {
                        l.first_token = false;
                        metrics.ttft_seconds.observe(l.started.elapsed().as_secs_f64());
                    }
                    if let Provenance::Expert { expert, .. } = &*provenance {
                        // One firing per injected result, not per token.
                        let key = Arc::as_ptr(&provenance) as usize;
                        if last_expert.insert(id, key) != Some(key) {
                            metrics.expert(expert, false);
                        }
                    }
                    if l.push(text, provenance) {
                        let stats = sched.stop(id).unwrap_or_default();
                        finish(&mut live, id, Finish::Stop, stats, false, metrics);
                    }
                }
                Event::Note { id, expert, message } => {
                    metrics.expert(&expert, true);
                    if let Some(l) = live.get(&id) {
                        let _ = l.out.send(Out::Note { expert, message });
                    }
                }
                Event::Finished { id, finish: f, stats } => finish(&mut live, id, f, stats, true, metrics),
            }
        }
        update_gauges(&sched, preempted);
    }
}

/// Ends a job: `flush` sends text still held for a stop sequence that never completed.
fn finish(
    live: &mut HashMap<RequestId, Live>,
    id: RequestId,
    f: Finish,
    stats: Stats,
    flush: bool,
    metrics: &Metrics,
) {
    let Some(mut l) = live.remove(&id) else { return };
    if flush {
        l.release(l.text.len());
    }
    let completion = (stats.generated_tokens + stats.injected_tokens) as u64;
    metrics.completion_tokens.fetch_add(completion, Relaxed);
    if f == Finish::NonFinite {
        metrics.engine_failures.fetch_add(1, Relaxed);
    }
    let _ = l.out.send(Out::Done { finish: f, stats });
}
