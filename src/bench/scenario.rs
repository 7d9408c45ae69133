//! `pimoe bench --scenario NAME`: the same questions answered three ways in one
//! run, at several concurrency levels, with latency, tokens and (on a GPU) energy
//! per answer, and each speed figure as a ratio to a ceiling measured in the run.
//!
//! The ways:
//! - `llm-only`: the composition's LLM answers alone (experts set aside);
//! - `pimoe`: router, T2C and experts inside the generation loop;
//! - `tool-call`: the model writes a JSON tool call, its request ends, the tool runs
//!   in another process behind a pipe, its result comes back as a new message and
//!   the whole conversation is prefilled again (`toolcall`);
//! - `tool-call-http` (with `--http`): the same pipeline through the OpenAI tools
//!   API against `pimoe serve` on the LLM alone (`toolhttp`).
//!
//! Concurrency c means c clients, each sending its next question as soon as its
//! last answer is complete (a closed loop), all served by one scheduler. Per answer:
//! time to first token of the final message (for tool-call: the message after the
//! tool's result), the intervals between successive steps that gave the answer
//! tokens (the tool's round trip and the re-prefill are one such interval), and the
//! end-to-end time.
//!
//! Two ceilings are measured before each way: the memory bandwidth (CPU: all-thread
//! read; GPU: device copy) and our own bf16 GEMM rate (CPU: a batch of 512 rows
//! through the model's widest layer; GPU: 8192^3). A decode step cannot take less
//! than the weight bytes over the bandwidth (the step floor), which bounds per-token
//! latency from below and the token rate at concurrency c from above (c over it).
//! A prefilled token costs at least its linear-layer FLOPs at our GEMM's best rate
//! (a bound on what our kernels reach, not on the hardware). An answer's floor is
//! its prefilled tokens at that rate plus its decode steps at the step floor; TTFT
//! and end-to-end are reported as floor / measured.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::linear_flop_per_token;
use super::nvml::{Nvml, MIN_SPAN_SECS};
use super::toolcall::{conversation, parse_call, shots, tool_system, Call, Shot, ToolProcess};
use super::toolhttp::{self, Pipeline, Server};
use crate::backend::Backend;
use crate::engine::{Engine, Prompt, Request};
use crate::error::{Error, Result};
use crate::grid::Analysis;
use crate::sampling::SamplingParams;
use crate::scheduler::{Event, RequestId, Scheduler, SchedulerConfig, Stats};
use crate::tasks::answer::answer_number;
use crate::tasks::eval::REL_TOL;
use crate::tasks::questions::{expert_name, question_set, GridQuestion, Split};

pub const SCENARIOS: &[&str] = &["grid", "dc", "ac"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Way {
    LlmOnly,
    Pimoe,
    ToolCall,
    ToolCallHttp,
}

impl Way {
    /// The ways run in this process; `ToolCallHttp` runs after them when the
    /// harness has a server for it.
    pub const ALL: [Way; 3] = [Way::LlmOnly, Way::Pimoe, Way::ToolCall];

    pub fn name(self) -> &'static str {
        match self {
            Way::LlmOnly => "llm-only",
            Way::Pimoe => "pimoe",
            Way::ToolCall => "tool-call",
            Way::ToolCallHttp => "tool-call-http",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub scenario: String,
    /// Questions per task the scenario covers.
    pub per_task: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub concurrency: Vec<usize>,
    pub max_step_tokens: usize,
}

/// Far beyond any grid answer, and small enough that the KV pool for every client's
/// longest answer stays a size the machine could hold.
const MAX_ANSWER_TOKENS: usize = 1 << 16;
const MAX_CONCURRENCY: usize = 4096;

impl ScenarioConfig {
    /// The scenario's questions, or why the configuration cannot run.
    pub fn check(&self) -> Result<Vec<GridQuestion>> {
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return Err(Error::Request(format!(
                "concurrency levels must be positive: {:?}",
                self.concurrency
            )));
        }
        if self.max_tokens == 0 {
            return Err(Error::Request("max_tokens is 0: an answer needs at least one token".into()));
        }
        // Both size the KV pool (answers times clients): bounded before it is allocated.
        if let Some(c) = self.concurrency.iter().find(|&&c| c > MAX_CONCURRENCY) {
            return Err(Error::Request(format!(
                "concurrency {c} is over the limit of {MAX_CONCURRENCY} clients"
            )));
        }
        if self.max_tokens > MAX_ANSWER_TOKENS {
            return Err(Error::Request(format!(
                "max_tokens {} is over the limit of {MAX_ANSWER_TOKENS} tokens per answer",
                self.max_tokens
            )));
        }
        questions(&self.scenario, self.per_task, self.seed)
    }
}

/// The evaluation questions of a scenario: `grid` both analyses (DC first), `dc`
/// or `ac` one.
pub fn questions(scenario: &str, per_task: usize, seed: u64) -> Result<Vec<GridQuestion>> {
    let analyses: &[Analysis] = match scenario {
        "grid" => &[Analysis::Dc, Analysis::Ac],
        "dc" => &[Analysis::Dc],
        "ac" => &[Analysis::Ac],
        other => {
            return Err(Error::Request(format!(
                "unknown scenario {other:?}; the scenarios are {SCENARIOS:?}"
            )))
        }
    };
    let mut out = Vec::new();
    for &a in analyses {
        out.extend(question_set(a, Split::Eval, per_task, seed)?);
    }
    Ok(out)
}

/// The ceilings, measured on the backend.
pub type Ceiling<'a, B> = Box<dyn FnMut(&Engine<B>) -> Result<Ceilings> + 'a>;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ceilings {
    pub bytes_per_s: f64,
    pub flop_per_s: f64,
}

/// What the machine gives the run: the ceiling, measured on demand, the energy
/// counter if any, how to start the tool process, and a tick per answer.
pub struct Harness<'a, B: Backend> {
    /// What the ceilings are, e.g. "CPU all-thread memory read bandwidth; ...".
    pub ceiling_name: &'static str,
    /// Measures the ceilings now.
    pub ceiling: Ceiling<'a, B>,
    /// The counter, or why there is none.
    pub energy: std::result::Result<Nvml, String>,
    /// The command that starts `pimoe expert-server` for the composition.
    pub tool_command: Box<dyn Fn() -> Command + 'a>,
    /// The server for the tool-call-http way; None: that way is not run.
    pub http: Option<HttpServer<'a>>,
    pub on_answer: Box<dyn FnMut() + 'a>,
}

pub enum HttpServer<'a> {
    /// The command that starts `pimoe serve` on the composition's LLM alone, without
    /// a port or scheduler sizes (the run adds them).
    Spawn(Box<dyn Fn() -> Command + 'a>),
    /// An OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1, already serving.
    At(String),
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub bench: &'static str,
    pub scenario: String,
    pub device: String,
    pub driver: Option<String>,
    pub commit: String,
    pub date: String,
    pub model: String,
    pub manifest: String,
    pub backend: &'static str,
    pub questions: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub rel_tol: f64,
    pub concurrency: Vec<usize>,
    /// How energy was measured, or why it was not.
    pub energy: String,
    pub ceiling: &'static str,
    /// Weight bytes one decode step streams.
    pub weight_bytes_per_step: usize,
    /// FLOPs of the linear layers per token (2 x their parameters).
    pub linear_flop_per_token: f64,
    /// Tokens the tool-call way's first prompt has beyond the others' (its system
    /// message and worked examples), the mean over the questions.
    pub tool_prompt_extra_tokens: f64,
    /// The server the tool-call-http way talked to, when it ran.
    pub http_server: Option<String>,
    pub ways: Vec<WayReport>,
}

#[derive(Debug, Serialize)]
pub struct WayReport {
    pub way: Way,
    /// The ceilings, measured right before this way ran.
    pub ceilings: Ceilings,
    /// weight_bytes_per_step / bandwidth: no decode step can be faster.
    pub step_floor_s: f64,
    /// linear_flop_per_token / GEMM rate: no prefilled token can be faster.
    pub prefill_token_floor_s: f64,
    pub levels: Vec<LevelReport>,
    /// Each question's answer at the first concurrency level.
    pub answers: Vec<AnswerRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct LevelReport {
    pub concurrency: usize,
    /// Passes over the questions (more than one on a GPU, so that the energy
    /// counter's span is at least MIN_SPAN_SECS).
    pub repeats: usize,
    pub answers: usize,
    pub seconds: f64,
    pub correct: usize,
    pub accuracy: f64,
    pub no_number: usize,
    /// Tool-call ways only: answers whose model wrote a call, and calls the tool refused.
    pub tool_calls: Option<usize>,
    pub tool_errors: Option<usize>,
    pub ttft_s: Dist,
    pub per_token_s: Dist,
    pub e2e_s: Dist,
    pub answers_per_s: f64,
    /// Tokens of the answers (sampled and injected) per second.
    pub tokens_per_s: f64,
    /// Every token run through the model for an answer (each prefill counts).
    pub processed_tokens_per_answer: f64,
    /// Tokens sampled from the LLM (a tool call's tokens included).
    pub generated_tokens_per_answer: f64,
    /// Tokens injected from expert results (PiMoE).
    pub injected_tokens_per_answer: f64,
    pub energy_j_per_answer: Option<f64>,
    /// Median over answers of (the answer's floor to its first token / its TTFT).
    pub ttft_to_floor: f64,
    /// Median over answers of (the answer's floor / its end-to-end time).
    pub e2e_to_floor: f64,
    /// step_floor_s / per_token_s.p50.
    pub per_token_p50_to_floor: f64,
    /// tokens_per_s / (concurrency / step_floor_s).
    pub tokens_per_s_to_roofline: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Dist {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Dist {
    fn of(mut x: Vec<f64>) -> Dist {
        if x.is_empty() {
            return Dist::default();
        }
        x.sort_by(f64::total_cmp);
        let at = |q: f64| x[((q * x.len() as f64).ceil() as usize).clamp(1, x.len()) - 1];
        Dist { p50: at(0.5), p99: at(0.99), mean: x.iter().sum::<f64>() / x.len() as f64 }
    }
}

#[derive(Debug, Serialize)]
pub struct AnswerRow {
    pub case: String,
    pub question: String,
    pub truth: f64,
    pub number: Option<f64>,
    pub text: String,
}

/// The tool-call way's first prompt: its system message and worked examples.
pub struct ToolPrompt {
    pub system: String,
    pub shots: Vec<Shot>,
}

impl ToolPrompt {
    fn conversation(&self, q: &GridQuestion, since: &[(&str, &str)]) -> String {
        conversation(&self.system, &self.shots, &crate::grid::render(&q.case.case, &q.question), since)
    }
}

/// What every pass of one way shares.
struct WayRun<'a, B: Backend> {
    engine: &'a Engine<B>,
    way: Way,
    qs: &'a [GridQuestion],
    cfg: &'a ScenarioConfig,
    system: &'a ToolPrompt,
}

/// One answer as the client saw it.
#[derive(Clone, Debug, Default)]
pub(super) struct Timed {
    pub(super) ttft: f64,
    pub(super) gaps: Vec<f64>,
    pub(super) e2e: f64,
    pub(super) processed: usize,
    pub(super) generated: usize,
    pub(super) injected: usize,
    pub(super) text: String,
    pub(super) tool_call: bool,
    pub(super) tool_error: bool,
    /// Prompt tokens of every request, and steps that gave the answer tokens
    /// after each request's first (each a decode or extend step): for the floors.
    pub(super) prefilled: usize,
    pub(super) decode_steps: usize,
    /// The same, counted up to the final message's first token.
    pub(super) prefilled_before_first: usize,
    pub(super) decode_steps_before_first: usize,
}

enum Phase {
    /// Generating; for tool-call, the first request (the call) or the second (the answer).
    Asking { req: RequestId, second: bool },
    /// The call is out to the tool process.
    Calling,
}

struct Client {
    question: usize,
    phase: Phase,
    started: Instant,
    last: Option<Instant>,
    /// When the first token of any message arrived, with the prefilled tokens and
    /// decode steps up to then.
    first_any: Option<(f64, usize, usize)>,
    /// Steps that gave the current request tokens.
    deliveries: usize,
    /// The first request's rendered prompt and text (tool-call).
    prompt_text: String,
    first_text: String,
    t: Timed,
}

/// Runs the scenario: every way, every concurrency level.
pub fn run<B: Backend>(engine: &mut Engine<B>, cfg: &ScenarioConfig, h: &mut Harness<B>) -> Result<Ran> {
    let qs = cfg.check()?;
    let Some(comp) = engine.pimoe.as_ref() else {
        return Err(Error::Request("a scenario needs a composition (a manifest), not a plain model".into()));
    };
    let tools: Vec<(&str, Analysis, &str)> =
        [(Analysis::Dc, "a DC power flow"), (Analysis::Ac, "an AC power flow")]
            .iter()
            .map(|&(a, when)| (expert_name(a), a, when))
            .filter(|(name, ..)| comp.expert_named(name).is_some())
            .collect();
    let offered: Vec<(&str, &str)> = tools.iter().map(|&(n, _, w)| (n, w)).collect();
    let asking = ToolPrompt {
        system: tool_system(&offered),
        shots: shots(comp, &tools.iter().map(|&(n, a, _)| (n, a)).collect::<Vec<_>>())?,
    };
    let system = &asking;
    let http = HttpWay::start(engine, &qs, cfg, &offered, system, h)?;
    let mut comp = engine.pimoe.take();
    let mut ways = Vec::new();
    let mut outcome = Ok(());
    for way in Way::ALL {
        if way == Way::Pimoe {
            engine.pimoe = comp.take();
        }
        let r = run_way(&WayRun { engine, way, qs: &qs, cfg, system }, h);
        if way == Way::Pimoe {
            comp = engine.pimoe.take();
        }
        match r {
            Ok(w) => ways.push(w),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    engine.pimoe = comp;
    let mut http_server = None;
    if let Some(way) = http.filter(|_| outcome.is_ok()) {
        match way.run(engine, &qs, cfg, h) {
            Ok((w, server)) => {
                ways.push(w);
                http_server = Some(server);
            }
            Err(e) => outcome = Err(e),
        }
    }
    let mut extra = 0;
    for q in &qs {
        let with_tools = engine.prompt_ids(&Prompt::Raw(system.conversation(q, &[])))?.len();
        extra += with_tools.saturating_sub(engine.prompt_ids(&q.prompt())?.len());
    }
    outcome.map(|()| Ran {
        ways,
        questions: qs.len(),
        tool_prompt_extra_tokens: extra as f64 / qs.len() as f64,
        http_server,
    })
}

/// What `run` measured.
pub struct Ran {
    pub ways: Vec<WayReport>,
    pub questions: usize,
    pub tool_prompt_extra_tokens: f64,
    pub http_server: Option<String>,
}

fn run_way<B: Backend>(run: &WayRun<B>, h: &mut Harness<B>) -> Result<WayReport> {
    let ceilings = (h.ceiling)(run.engine)?;
    let mut tool = match run.way {
        Way::ToolCall => Some(ToolProcess::spawn((h.tool_command)())?),
        _ => None,
    };
    measure(run.engine, run.way, run.qs, run.cfg, ceilings, h, &mut |c, tick| {
        pass(run, c, tool.as_mut(), tick)
    })
}

/// The tool-call way through `pimoe serve`'s OpenAI API, ready to run: started
/// before the other ways so that a server that cannot start fails the run at once.
struct HttpWay {
    server: Option<Server>,
    pipeline: Pipeline,
    tool: Mutex<ToolProcess>,
    /// What served it, for the report.
    what: String,
}

impl HttpWay {
    fn start<B: Backend>(
        engine: &Engine<B>,
        qs: &[GridQuestion],
        cfg: &ScenarioConfig,
        offered: &[(&str, &str)],
        system: &ToolPrompt,
        h: &Harness<B>,
    ) -> Result<Option<HttpWay>> {
        let (server, base, what) = match &h.http {
            None => return Ok(None),
            Some(HttpServer::Spawn(command)) => {
                let c = cfg.concurrency.iter().copied().max().unwrap_or(1);
                // Twice the in-process estimate: the API's tool offer makes the prompts longer.
                let kv = 2 * kv_tokens(engine, qs, c, cfg, Some(system))?;
                let mut cmd = command();
                cmd.args(["--host", "127.0.0.1", "--port", "0"]);
                cmd.args(["--max-running", &c.to_string(), "--kv-tokens", &kv.to_string()]);
                cmd.args(["--max-step-tokens", &cfg.max_step_tokens.to_string()]);
                let what = format!("{cmd:?}");
                let server = Server::spawn(cmd)?;
                let base = server.base.clone();
                (Some(server), base, what)
            }
            Some(HttpServer::At(url)) => (None, url.clone(), "given with --server".to_string()),
        };
        Ok(Some(HttpWay {
            pipeline: Pipeline::new(&base, offered, &system.shots, cfg.max_tokens)?,
            tool: Mutex::new(ToolProcess::spawn((h.tool_command)())?),
            what: format!("{base} ({what})"),
            server,
        }))
    }

    /// Measures the way, then stops the server if it was started here.
    fn run<B: Backend>(
        self,
        engine: &Engine<B>,
        qs: &[GridQuestion],
        cfg: &ScenarioConfig,
        h: &mut Harness<B>,
    ) -> Result<(WayReport, String)> {
        let ceilings = (h.ceiling)(engine)?;
        let HttpWay { server, pipeline, tool, what } = self;
        let report = measure(engine, Way::ToolCallHttp, qs, cfg, ceilings, h, &mut |c, tick| {
            toolhttp::pass(&pipeline, qs, c, &tool, tick)
        })?;
        if let Some(s) = server {
            s.stop()?;
        }
        Ok((report, what))
    }
}

/// Answers the questions once, at concurrency c, ticking once per answer.
type Pass<'p> = dyn FnMut(usize, &mut dyn FnMut()) -> Result<Vec<Timed>> + 'p;

/// One way at every concurrency level, its floors from `ceilings`.
fn measure<B: Backend>(
    engine: &Engine<B>,
    way: Way,
    qs: &[GridQuestion],
    cfg: &ScenarioConfig,
    ceilings: Ceilings,
    h: &mut Harness<B>,
    pass: &mut Pass,
) -> Result<WayReport> {
    let floors = Floors {
        step: engine.llm.weight_bytes as f64 / ceilings.bytes_per_s,
        token: linear_flop_per_token(&engine.llm.config) / ceilings.flop_per_s,
    };
    let mut levels = Vec::new();
    let mut rows = Vec::new();
    for &c in &cfg.concurrency {
        let (level, answers) = level(way, qs, c, floors, h, pass)?;
        if rows.is_empty() {
            rows = qs
                .iter()
                .zip(&answers)
                .map(|(q, a)| AnswerRow {
                    case: q.case.case.name.clone(),
                    question: q.sentence(),
                    truth: q.truth,
                    number: answer_number(&a.text).map(|(v, _)| v),
                    text: a.text.clone(),
                })
                .collect();
        }
        levels.push(level);
    }
    Ok(WayReport {
        way,
        ceilings,
        step_floor_s: floors.step,
        prefill_token_floor_s: floors.token,
        levels,
        answers: rows,
    })
}

#[derive(Clone, Copy)]
struct Floors {
    /// One decode step.
    step: f64,
    /// One prefilled token.
    token: f64,
}

/// One concurrency level of one way, repeated until the energy counter's span is
/// long enough (once without a counter).
fn level<B: Backend>(
    way: Way,
    qs: &[GridQuestion],
    c: usize,
    floors: Floors,
    h: &mut Harness<B>,
    pass: &mut Pass,
) -> Result<(LevelReport, Vec<Timed>)> {
    let mut all = Vec::new();
    let mut first = Vec::new();
    let mut secs = 0.0;
    let mut repeats = 0;
    let mut joules = 0.0;
    loop {
        let before = h.energy.as_ref().ok().map(|n| n.millijoules()).transpose().map_err(Error::Device)?;
        let t = Instant::now();
        let answers = pass(c, &mut *h.on_answer)?;
        secs += t.elapsed().as_secs_f64();
        if let (Some(b), Ok(n)) = (before, &h.energy) {
            joules += (n.millijoules().map_err(Error::Device)? - b) as f64 / 1e3;
        }
        repeats += 1;
        if first.is_empty() {
            first = answers.clone();
        }
        all.extend(answers);
        if h.energy.is_err() || secs >= MIN_SPAN_SECS {
            break;
        }
    }
    let n = all.len() as f64;
    let mut r =
        LevelReport { concurrency: c, repeats, answers: all.len(), seconds: secs, ..Default::default() };
    for (i, a) in all.iter().enumerate() {
        let q = &qs[i % qs.len()];
        match answer_number(&a.text) {
            Some((v, _)) => r.correct += usize::from((v - q.truth).abs() <= REL_TOL * q.truth.abs()),
            None => r.no_number += 1,
        }
    }
    r.accuracy = r.correct as f64 / n;
    if matches!(way, Way::ToolCall | Way::ToolCallHttp) {
        r.tool_calls = Some(all.iter().filter(|a| a.tool_call).count());
        r.tool_errors = Some(all.iter().filter(|a| a.tool_error).count());
    }
    r.ttft_s = Dist::of(all.iter().map(|a| a.ttft).collect());
    r.per_token_s = Dist::of(all.iter().flat_map(|a| a.gaps.iter().copied()).collect());
    r.e2e_s = Dist::of(all.iter().map(|a| a.e2e).collect());
    r.answers_per_s = n / secs;
    let tokens: usize = all.iter().map(|a| a.generated + a.injected).sum();
    r.tokens_per_s = tokens as f64 / secs;
    r.processed_tokens_per_answer = all.iter().map(|a| a.processed).sum::<usize>() as f64 / n;
    r.generated_tokens_per_answer = all.iter().map(|a| a.generated).sum::<usize>() as f64 / n;
    r.injected_tokens_per_answer = all.iter().map(|a| a.injected).sum::<usize>() as f64 / n;
    r.energy_j_per_answer = h.energy.is_ok().then(|| joules / n);
    let floor = |prefilled: usize, steps: usize| prefilled as f64 * floors.token + steps as f64 * floors.step;
    r.ttft_to_floor = Dist::of(
        all.iter().map(|a| floor(a.prefilled_before_first, a.decode_steps_before_first) / a.ttft).collect(),
    )
    .p50;
    r.e2e_to_floor = Dist::of(all.iter().map(|a| floor(a.prefilled, a.decode_steps) / a.e2e).collect()).p50;
    r.per_token_p50_to_floor = if r.per_token_s.p50 > 0.0 { floors.step / r.per_token_s.p50 } else { 0.0 };
    r.tokens_per_s_to_roofline = r.tokens_per_s * floors.step / c as f64;
    Ok((r, first))
}

fn greedy(prompt: Prompt, max_tokens: usize) -> Request {
    Request { prompt, max_tokens, sampling: SamplingParams { temperature: 0.0, ..Default::default() } }
}

/// Room in the KV cache for c answers at once: the longest prompt (with the
/// tool-call system message when there is one), the tool call's conversation on
/// top, and the answer.
fn kv_tokens<B: Backend>(
    engine: &Engine<B>,
    qs: &[GridQuestion],
    c: usize,
    cfg: &ScenarioConfig,
    tool: Option<&ToolPrompt>,
) -> Result<usize> {
    let mut longest = 0;
    for q in qs {
        longest = longest.max(engine.prompt_ids(&q.prompt())?.len());
        if let Some(t) = tool {
            longest = longest.max(engine.prompt_ids(&Prompt::Raw(t.conversation(q, &[])))?.len());
        }
    }
    let per = (longest + 2 * cfg.max_tokens + 64).next_multiple_of(crate::kv::BLOCK_SIZE);
    Ok(per * c)
}

/// Every question once, through `c` closed-loop clients.
fn pass<B: Backend>(
    run: &WayRun<B>,
    c: usize,
    mut tool: Option<&mut ToolProcess>,
    on_answer: &mut dyn FnMut(),
) -> Result<Vec<Timed>> {
    let WayRun { engine, way, qs, cfg, system } = *run;
    let sched_cfg = SchedulerConfig {
        max_step_tokens: cfg.max_step_tokens,
        max_running: c,
        kv_tokens: kv_tokens(engine, qs, c, cfg, Some(system))?,
    };
    let mut sched = Scheduler::new(engine, sched_cfg)?;
    let mut out: Vec<Option<Timed>> = vec![None; qs.len()];
    let mut clients: HashMap<usize, Client> = HashMap::new(); // by question
    let mut owner: HashMap<RequestId, usize> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    let prompt_of = |q: &GridQuestion| match way {
        Way::ToolCall => Prompt::Raw(system.conversation(q, &[])),
        _ => q.prompt(),
    };
    while done < qs.len() {
        while clients.len() < c && next < qs.len() {
            let prompt = prompt_of(&qs[next]);
            let prompt_text = engine.prompt_text(&prompt)?;
            let prefilled = engine.prompt_ids(&prompt)?.len();
            let req = sched.submit(&greedy(prompt, cfg.max_tokens))?;
            owner.insert(req, next);
            clients.insert(
                next,
                Client {
                    question: next,
                    phase: Phase::Asking { req, second: false },
                    started: Instant::now(),
                    last: None,
                    first_any: None,
                    deliveries: 0,
                    prompt_text,
                    first_text: String::new(),
                    t: Timed { prefilled, ..Timed::default() },
                },
            );
            next += 1;
        }
        let mut replies = Vec::new();
        if sched.is_idle() {
            // Only tool calls are out: wait for one.
            let tp = tool.as_deref_mut().ok_or_else(|| Error::Request("idle with answers owed".into()))?;
            replies.push(tp.recv()?);
        } else {
            let events = sched.step()?;
            let now = Instant::now();
            let mut finished: Vec<(usize, Stats)> = Vec::new();
            let mut fed: Vec<usize> = Vec::new();
            for ev in events {
                match ev {
                    Event::Token { id, text, .. } => {
                        let q = owner[&id];
                        let cl = clients.get_mut(&q).expect("a live client");
                        if !fed.contains(&q) {
                            fed.push(q);
                            if let Some(last) = cl.last {
                                cl.t.gaps.push((now - last).as_secs_f64());
                            }
                            cl.last = Some(now);
                            // A request's first tokens come out of its prefill, the
                            // others each out of a decode or extend step.
                            if cl.deliveries > 0 {
                                cl.t.decode_steps += 1;
                            }
                            cl.deliveries += 1;
                            let first = ((now - cl.started).as_secs_f64(), cl.t.prefilled, cl.t.decode_steps);
                            cl.first_any.get_or_insert(first);
                            let final_message = !matches!(cl.phase, Phase::Asking { second: false, .. })
                                || way != Way::ToolCall;
                            if final_message && cl.t.ttft == 0.0 {
                                (cl.t.ttft, cl.t.prefilled_before_first, cl.t.decode_steps_before_first) =
                                    first;
                            }
                        }
                        match cl.phase {
                            Phase::Asking { second: false, .. } if way == Way::ToolCall => {
                                cl.first_text.push_str(&text)
                            }
                            _ => cl.t.text.push_str(&text),
                        }
                    }
                    Event::Note { .. } => {}
                    Event::Finished { id, stats, .. } => finished.push((owner[&id], stats)),
                }
            }
            // Tool-call: a request whose text now holds a complete call ends there.
            if way == Way::ToolCall {
                for &q in &fed {
                    let cl = &clients[&q];
                    let Phase::Asking { req, second: false } = cl.phase else { continue };
                    if finished.iter().any(|(f, _)| *f == q) {
                        continue;
                    }
                    if let Call::Found { .. } = parse_call(&cl.first_text) {
                        let stats = sched.stop(req).expect("a live request");
                        finished.push((q, stats));
                    }
                }
            }
            for (q, stats) in finished {
                let cl = clients.get_mut(&q).expect("a live client");
                cl.t.processed += stats.processed_tokens;
                cl.t.generated += stats.generated_tokens;
                cl.t.injected += stats.injected_tokens;
                let Phase::Asking { req, second } = cl.phase else { unreachable!("only requests finish") };
                owner.remove(&req);
                if way == Way::ToolCall && !second {
                    if let Call::Found { end, tool: name } = parse_call(&cl.first_text) {
                        cl.first_text.truncate(end);
                        cl.t.tool_call = true;
                        let context = format!("{}{}", cl.prompt_text, cl.first_text);
                        let tp = tool.as_deref_mut().expect("tool-call has a tool process");
                        tp.send(q as u64, name.as_deref().unwrap_or(""), &context)?;
                        cl.phase = Phase::Calling;
                        continue;
                    }
                    // No call: the first message is the answer.
                    cl.t.text = std::mem::take(&mut cl.first_text);
                    if let Some(first) = cl.first_any {
                        (cl.t.ttft, cl.t.prefilled_before_first, cl.t.decode_steps_before_first) = first;
                    }
                }
                let mut cl = clients.remove(&q).expect("a live client");
                cl.t.e2e = cl.started.elapsed().as_secs_f64();
                if cl.t.ttft == 0.0 {
                    (cl.t.ttft, cl.t.prefilled_before_first, cl.t.decode_steps_before_first) =
                        (cl.t.e2e, cl.t.prefilled, cl.t.decode_steps);
                }
                out[cl.question] = Some(cl.t);
                done += 1;
                on_answer();
            }
        }
        if let Some(tp) = tool.as_deref_mut() {
            while let Some(r) = tp.try_recv()? {
                replies.push(r);
            }
        }
        for reply in replies {
            let q = reply.id as usize;
            let cl = clients
                .get_mut(&q)
                .ok_or_else(|| Error::Request(format!("a reply to no call: {}", reply.id)))?;
            let (result, failed) = match reply.result {
                Ok(text) => (text, false),
                Err(e) => (format!("Error: {e}"), true),
            };
            cl.t.tool_error = failed;
            let conversation =
                system.conversation(&qs[q], &[("assistant", &cl.first_text), ("tool", &result)]);
            let prompt = Prompt::Raw(conversation);
            cl.t.prefilled += engine.prompt_ids(&prompt)?.len();
            cl.deliveries = 0;
            let req = sched.submit(&greedy(prompt, cfg.max_tokens))?;
            owner.insert(req, q);
            cl.phase = Phase::Asking { req, second: true };
        }
    }
    Ok(out.into_iter().map(|t| t.expect("every question answered")).collect())
}

/// For a profiler: `steps` scheduler steps of the PiMoE way at concurrency `c`,
/// with the profiler's capture on around them only (after `warmup` steps, so that
/// one-time work such as graph capture stays out).
pub fn profile_steps<B: Backend>(
    engine: &Engine<B>,
    cfg: &ScenarioConfig,
    c: usize,
    warmup: usize,
    steps: usize,
) -> Result<usize> {
    if engine.pimoe.is_none() {
        return Err(Error::Request("profiling a scenario needs a composition (a manifest)".into()));
    }
    let qs = questions(&cfg.scenario, cfg.per_task, cfg.seed)?;
    let sched_cfg = SchedulerConfig {
        max_step_tokens: cfg.max_step_tokens,
        max_running: c,
        kv_tokens: kv_tokens(engine, &qs, c, cfg, None)?,
    };
    let mut sched = Scheduler::new(engine, sched_cfg)?;
    let mut next = qs.iter().cycle();
    let mut live = 0;
    let mut ran = 0;
    for i in 0..warmup + steps {
        while live < c {
            sched.submit(&greedy(next.next().expect("a cycle").prompt(), cfg.max_tokens))?;
            live += 1;
        }
        if i == warmup {
            engine.backend.profiler_capture(true)?;
        }
        engine.backend.push_range(&format!("scheduler step {i}"));
        let events = sched.step();
        engine.backend.pop_range();
        live -= events?.iter().filter(|e| matches!(e, Event::Finished { .. })).count();
        ran += usize::from(i >= warmup);
    }
    engine.backend.profiler_capture(false)?;
    Ok(ran)
}

impl ScenarioReport {
    /// The report of a finished `run`; `device` and `driver` describe the machine.
    pub fn new<B: Backend>(
        engine: &Engine<B>,
        manifest: &std::path::Path,
        cfg: &ScenarioConfig,
        h: &Harness<B>,
        (device, driver): (String, Option<String>),
        ran: Ran,
    ) -> Self {
        ScenarioReport {
            bench: "scenario",
            scenario: cfg.scenario.clone(),
            device,
            driver,
            commit: super::git_commit(),
            date: super::utc_now(),
            model: crate::tasks::eval::model_name(engine, manifest),
            manifest: manifest.display().to_string(),
            backend: engine.backend.name(),
            questions: ran.questions,
            seed: cfg.seed,
            max_tokens: cfg.max_tokens,
            rel_tol: REL_TOL,
            concurrency: cfg.concurrency.clone(),
            energy: match &h.energy {
                Ok(_) => format!(
                    "NVML total-energy counter, read before and after each level; a level is repeated \
                     until it spans at least {MIN_SPAN_SECS} s"
                ),
                Err(why) => format!("not measured: {why}"),
            },
            ceiling: h.ceiling_name,
            weight_bytes_per_step: engine.llm.weight_bytes,
            linear_flop_per_token: linear_flop_per_token(&engine.llm.config),
            tool_prompt_extra_tokens: ran.tool_prompt_extra_tokens,
            http_server: ran.http_server,
            ways: ran.ways,
        }
    }

    /// The short table printed at the end.
    pub fn summary(&self) -> String {
        let ms = |s: f64| format!("{:.1}", s * 1e3);
        let mut s = format!(
            "{:<14} {:>3} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9}\n",
            "way",
            "c",
            "accuracy",
            "TTFT ms",
            "tok p50",
            "tok p99",
            "e2e s",
            "e2e/floor",
            "tok/s",
            "processed",
            "generated",
            "J/answer"
        );
        for w in &self.ways {
            for l in &w.levels {
                s += &format!(
                    "{:<14} {:>3} {:>7.1}% {:>9} {:>9} {:>9} {:>8.2} {:>9.3} {:>8.1} {:>9.0} {:>9.1} {:>9}\n",
                    w.way.name(),
                    l.concurrency,
                    100.0 * l.accuracy,
                    ms(l.ttft_s.p50),
                    ms(l.per_token_s.p50),
                    ms(l.per_token_s.p99),
                    l.e2e_s.p50,
                    l.e2e_to_floor,
                    l.tokens_per_s,
                    l.processed_tokens_per_answer,
                    l.generated_tokens_per_answer,
                    l.energy_j_per_answer.map_or("-".to_string(), |j| format!("{j:.2}")),
                );
            }
        }
        s += &format!("energy: {}\nceilings: {}\n", self.energy, self.ceiling);
        s
    }
}
