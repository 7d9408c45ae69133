//! The `pimoe` command line: parses arguments and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use pimoe::backend::cpu::CpuBackend;
use pimoe::backend::cuda::CudaBackend;
use pimoe::backend::Backend;
use pimoe::bench::nvml::Nvml;
use pimoe::bench::scenario::{Ceilings, Harness, HttpServer, ScenarioConfig, ScenarioReport};
use pimoe::device::{self, DeviceChoice, Opened};
use pimoe::model::{fetch, import, ModelConfig};
use pimoe::pimoe::experts::{Activation, Precision};
use pimoe::pimoe::router::GateActivation;
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance, SchedulerConfig};
use pimoe::tasks::demo::brief;
use pimoe::train::classify::ClassWeight;
use pimoe::train::{self as tr, Holdout, TrainOptions};
use pimoe::{Engine, Finish, Prompt, Request};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "pimoe", version, about = "PiMoE inference runtime")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Skip the NaN / infinity scan of weights at load (for files you trust; the
    /// same as PIMOE_TRUST_WEIGHTS=1)
    #[arg(long, global = true)]
    trust_weights: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streaming it to stdout.
    Generate {
        /// Model directory (config.json, safetensors, tokenizer.json) or GGUF file
        /// (run in its stored types: Q8_0, Q4_K_M, ...). Default: SmolLM2-135M-Instruct,
        /// fetched and imported on first use.
        #[arg(long, conflicts_with = "manifest")]
        model: Option<PathBuf>,
        /// A PiMoE composition (JSON): LLM, router, T2C modules and experts.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Print, after the answer, which spans came from the LLM and which from an
        /// expert (with its inputs and outputs).
        #[arg(long)]
        trace: bool,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the ChatML chat format as a user message.
        #[arg(long)]
        chat: bool,
        /// System message (implies --chat).
        #[arg(long)]
        system: Option<String>,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// 0 = no top-k cut.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// An OpenAI-compatible HTTP server (chat and text completions, streamed or not,
    /// tools, /v1/models, /health, /metrics) over one continuous-batching scheduler.
    /// Default: the demo's composition (SmolLM2 with the power-flow experts).
    Serve {
        /// A PiMoE composition (JSON).
        #[arg(long, conflicts_with = "model")]
        manifest: Option<PathBuf>,
        /// A plain model directory (no router or experts).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Address to listen on; anything but loopback exposes the server.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// 0 picks a free port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Require `Authorization: Bearer KEY` on every /v1 route (also read from
        /// PIMOE_API_KEY).
        #[arg(long, env = "PIMOE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The model id clients send and /v1/models lists (default: the manifest's
        /// or model directory's name).
        #[arg(long)]
        served_model_name: Option<String>,
        /// Sequences generating at once.
        #[arg(long, default_value_t = 64)]
        max_running: usize,
        /// KV cache capacity in tokens over all sequences.
        #[arg(long, default_value_t = 16_384)]
        kv_tokens: usize,
        /// Tokens per scheduler step (bounds a step's activation memory).
        #[arg(long, default_value_t = 512)]
        max_step_tokens: usize,
        /// Requests waiting for admission before new ones get 429.
        #[arg(long, default_value_t = 256)]
        max_queue: usize,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 4 << 20)]
        body_limit: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Print a model's architecture, parameter count and size.
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Convert a llama or qwen2 GGUF into a Hugging Face model directory (bf16).
    /// Not needed to run one: --model FILE.gguf runs it in its stored types.
    ImportGguf {
        gguf: PathBuf,
        out_dir: PathBuf,
        /// Keep each tensor's stored type (F32, F16, BF16, or quantized blocks as U8
        /// rows with the type in the safetensors metadata, which pimoe loads but other
        /// tools do not read) instead of expanding all to bf16
        #[arg(long)]
        keep_types: bool,
    },
    /// Fetch and import the default model (SmolLM2-135M-Instruct) if it is missing.
    Fetch,
    /// The default demo: SmolLM2 reasons, a trained router calls the DC and AC
    /// power-flow experts, and a few grid questions are answered with numbers
    /// computed in f64 (checked against PYPOWER).
    Demo {
        /// Also print each expert's inputs and outputs.
        #[arg(long)]
        trace: bool,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Accuracy on the power-flow tasks: the same questions answered by the LLM alone
    /// and by a composition, scored against PYPOWER, with the router's precision and
    /// recall.
    Eval {
        /// The composition (default: the demo's).
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        q: QuestionArgs,
        /// Write the JSON report here (a summary is printed either way).
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// The router's training data: the LLM's own answers to the training split's grid
    /// questions, with where each answer's number starts (JSONL for `pimoe train
    /// router --kind hidden-gate`).
    RouterData {
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        q: QuestionArgs,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Measure decode speed against ceilings taken in the same run: on the CPU,
    /// batch-1 decode vs memory bandwidth; on CUDA, decode at batch 1 and 64 vs copy
    /// bandwidth and a 2,048-token prefill vs our GEMM rate (see src/bench/gpu.rs).
    ///
    /// With --scenario: a composition (default: the demo's) answers the scenario's
    /// questions three ways (LLM alone, PiMoE, a tool-call pipeline) at each
    /// concurrency level, with latency, tokens, accuracy and GPU energy per answer
    /// (src/bench/scenario.rs); with --http, a fourth: the tool-call pipeline through
    /// `pimoe serve`'s OpenAI tools API. With --profile-steps: only that many
    /// scheduler steps of the PiMoE way, for a profiler.
    Bench {
        #[arg(long)]
        model: Option<PathBuf>,
        /// A scenario: grid (DC and AC questions), dc or ac.
        #[arg(long)]
        scenario: Option<String>,
        /// The composition for --scenario (default: the demo's).
        #[arg(long, conflicts_with = "model")]
        manifest: Option<PathBuf>,
        /// Questions per task in the scenario.
        #[arg(long, default_value_t = 4)]
        per_task: usize,
        /// Draws the scenario's questions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Tokens per answer at most (each request, for the tool-call way).
        #[arg(long, default_value_t = 48)]
        max_tokens: usize,
        /// Concurrency levels: clients with one question in flight each.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        concurrency: Vec<usize>,
        /// Run this many scheduler steps of the scenario's PiMoE way (at the highest
        /// concurrency, after 4 warm-up steps) with the profiler's capture on, and
        /// nothing else: for `nsys --capture-range=cudaProfilerApi` or
        /// `ncu --profile-from-start off`.
        #[arg(long)]
        profile_steps: Option<usize>,
        /// With --scenario: also run the tool-call way over HTTP, against `pimoe serve`
        /// on the composition's LLM alone (started here, on the same --device).
        #[arg(long, requires = "scenario")]
        http: bool,
        /// --http against this running OpenAI-compatible server (its base URL, e.g.
        /// http://127.0.0.1:8080/v1) instead of one started here.
        #[arg(long, requires = "scenario")]
        server: Option<String>,
        /// Tokens to decode per repeat (CPU).
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Also time a prefill of this many tokens per repeat (CPU): the first N ids of
        /// --prefill-ids, else the decode prompt's tokens repeated to N.
        #[arg(long)]
        prefill: Option<usize>,
        /// Token ids for --prefill (a JSON array, or integers separated by whitespace or
        /// commas), so that another engine can be timed on the very same ids.
        #[arg(long, requires = "prefill")]
        prefill_ids: Option<PathBuf>,
        /// Write the JSON report here (it is always printed to stdout).
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Teacher-forced perplexity and top-1 token per position over a text or token
    /// ids: consecutive windows of --ctx tokens, each from a fresh cache, positions
    /// 1..n of each window scored (no BOS added). With --json, every position's target,
    /// NLL, argmax and top-2 logit gap, and the ids (see src/bench/perplexity.rs).
    Perplexity {
        #[arg(long)]
        model: Option<PathBuf>,
        /// A UTF-8 text, tokenized by the model's tokenizer.
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        text: Option<PathBuf>,
        /// Token ids (a JSON array, {"ids": [...]} as --json writes, or integers
        /// separated by whitespace or commas): scores exactly these, whatever the
        /// tokenizer would make of the text.
        #[arg(long)]
        ids: Option<PathBuf>,
        /// Tokens per window, 2 to the model's context (default: 512, or the model's
        /// context if shorter).
        #[arg(long)]
        ctx: Option<usize>,
        /// Write the report with the per-position arrays here.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Serve a composition's T2C and experts as a separate tool process, the expert
    /// side of `bench --scenario`'s tool-call way: one JSON call per line on stdin
    /// ({"id", "tool", "context"}), one reply per line on stdout ({"id", "result"} or
    /// {"id", "error"}).
    ExpertServer {
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Time answers served one at a time, greedy, each to its token budget (generated
    /// plus injected), from a workload file as bench/reference/piern_loop.py writes it:
    /// {"warmup": N, "answers": [{"prompt": TEXT, "max_tokens": N}, ...]}. Writes the
    /// latency and token counts of each answer to --json (see bench/NOTES.md).
    BenchAnswers {
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(long, conflicts_with = "manifest")]
        model: Option<PathBuf>,
        #[arg(long)]
        workload: PathBuf,
        #[arg(long)]
        json: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Count one model step's kernels on the PTX emulator, like a profiler: one row
    /// per kernel (launches, estimated time share, DRAM bytes, coalescing, bank
    /// conflicts, lane efficiency, occupancy), a roofline estimate of the step on an
    /// H100 and an H200, and the efficiency targets. Default: Qwen2.5-0.5B's shapes,
    /// random weights.
    ProfileKernels {
        /// A model directory (its weights are used); default: --config's shapes.
        #[arg(long, conflicts_with = "config")]
        model: Option<PathBuf>,
        /// A config.json: random weights of its shapes. Default: Qwen2.5-0.5B-Instruct's.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = StepArg::Decode)]
        step: StepArg,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Decode: tokens already in each sequence's cache; prefill: prompt tokens.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// emu: count the step on the PTX emulator (the table); cuda: run the same step
        /// on the GPU and time it (the measurement the estimate predicts; run it under
        /// ncu with --replays 0 for the hardware counters, bench/gpu/run.sh ncu).
        #[arg(long, value_enum, default_value_t = ProfileDevice::Emu)]
        device: ProfileDevice,
        /// --device cuda: timed steps after the warm-ups.
        #[arg(long, default_value_t = 200)]
        replays: usize,
        /// Count only the first N decoder layers of a --config model: every layer has
        /// the same shapes, so its kernels count the same (a 2,048-token prefill of all
        /// 24 layers of Qwen2.5-0.5B is ~40 min on the emulator, one layer ~2).
        #[arg(long, conflicts_with = "model")]
        layers: Option<usize>,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Fit a router gate, a learned T2C head or an expert to JSONL rows (Adam,
    /// hand-written backward passes, deterministic for a seed); writes
    /// OUT/NAME.safetensors and OUT/NAME.json, the manifest fragment.
    Train {
        #[command(subcommand)]
        target: Box<TrainTarget>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProfileDevice {
    Emu,
    Cuda,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StepArg {
    Decode,
    Prefill,
}

#[derive(Subcommand)]
enum TrainTarget {
    /// A router: `piern` (its own embedding table over the text generated so far;
    /// rows {"text", "type": 0|1} or {"text", "expert": name|null}) or `hidden-gate`
    /// (on the LLM's hidden state; rows {"prompt", "answer", "fire": [{"at", "expert"}]}).
    Router(RouterArgs),
    /// The learned T2C head over the mean hidden state of the prompt; rows
    /// {"prompt", "target": [...]}, or {"prompt"} with --pattern.
    T2c(T2cArgs),
    /// An MLP or DeepONet expert; rows {"inputs": [...], "outputs": [...]}.
    Expert(ExpertArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// Training rows (JSONL).
    #[arg(long)]
    data: PathBuf,
    /// Validation rows in a separate file (instead of --val-fraction).
    #[arg(long, conflicts_with = "val_fraction")]
    val: Option<PathBuf>,
    /// Hold out this fraction of --data for validation, chosen by the seed.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// f32 or f64 (default: f32 for routers and T2C, f64 for experts).
    #[arg(long)]
    precision: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Output file name (default: router, t2c or expert).
    #[arg(long)]
    name: Option<String>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RouterKind {
    Piern,
    HiddenGate,
}

#[derive(Args)]
struct RouterArgs {
    #[arg(long, value_enum)]
    kind: RouterKind,
    #[command(flatten)]
    common: CommonArgs,
    /// The LLM (tokenizer, hidden states). Default: SmolLM2-135M-Instruct.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Expert names in output order, comma separated (default: as they first appear).
    #[arg(long, value_delimiter = ',')]
    experts: Option<Vec<String>>,
    /// piern: E, the embedding width (the reference: 1536).
    #[arg(long)]
    embed_dim: Option<usize>,
    /// piern: the MLP's inner width (the reference: 128).
    #[arg(long)]
    hidden: Option<usize>,
    /// hidden-gate: an inner layer of this width (default: one linear layer).
    #[arg(long)]
    inner: Option<usize>,
    /// hidden-gate: softmax (class 0 = no expert) or sigmoid (one gate per expert).
    #[arg(long)]
    activation: Option<String>,
    /// balanced or none.
    #[arg(long, default_value = "balanced")]
    class_weight: String,
    /// The policy's firing threshold, written into the fragment.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args)]
struct CacheArgs {
    /// Keep LLM features here (default: weights/.cache/features).
    #[arg(long, conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Compute the LLM features without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
struct T2cArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The model whose hidden states are pooled. Default: SmolLM2-135M-Instruct.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Take the targets from each prompt with this extract pattern.
    #[arg(long)]
    pattern: Option<String>,
    #[arg(long, default_value_t = 128)]
    inner: usize,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExpertKind {
    Mlp,
    Deeponet,
}

#[derive(Args)]
struct ExpertArgs {
    #[arg(long, value_enum)]
    kind: ExpertKind,
    #[command(flatten)]
    common: CommonArgs,
    /// mlp: [inputs, hidden.., outputs], comma separated.
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// deeponet: the branch net's widths.
    #[arg(long, value_delimiter = ',')]
    branch: Option<Vec<usize>>,
    /// deeponet: the trunk net's widths.
    #[arg(long, value_delimiter = ',')]
    trunk: Option<Vec<usize>>,
    /// relu, tanh, gelu, silu or identity.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// Input groups as the manifest's `order` (deeponet: "branch | trunk").
    #[arg(long)]
    order: Option<String>,
}

/// How many grid questions, drawn how, answered how.
#[derive(clap::Args)]
struct QuestionArgs {
    /// Questions per task (DC and AC).
    #[arg(long, default_value_t = 200)]
    per_task: usize,
    /// Draws the questions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokens per answer at most: enough for the model's longer answers (it sometimes
    /// reasons for a paragraph) to reach their number; a composition ending answers at
    /// the result's sentence stops the others early.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 16)]
    batch: usize,
}

impl QuestionArgs {
    fn sched(&self) -> SchedulerConfig {
        SchedulerConfig { max_running: self.batch, ..SchedulerConfig::default() }
    }
}

fn main() -> ExitCode {
    // "-1" is a value wherever a flag takes a number (then checked by the flag's own
    // bounds), not an unknown flag.
    let cmd = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.trust_weights {
        // Before any thread starts; every loader reads it.
        std::env::set_var("PIMOE_TRUST_WEIGHTS", "1");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn model_dir(arg: Option<PathBuf>) -> pimoe::Result<PathBuf> {
    match arg {
        Some(d) => Ok(d),
        None => fetch::ensure_default_model(true),
    }
}

/// Opens the device, then runs `$body` with `$engine` bound to an Engine on it,
/// loaded with `$load` (Engine::load or Engine::load_manifest).
macro_rules! with_engine {
    ($choice:expr, $load:expr, $path:expr, |$engine:ident| $body:expr) => {{
        let (opened, note) = device::open($choice)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        match opened {
            Opened::Cpu(b) => {
                let $engine = $load(b, &$path)?;
                $body
            }
            Opened::Cuda(b) => {
                let $engine = $load(*b, &$path)?;
                $body
            }
        }
    }};
}

fn generate<B: Backend>(engine: &Engine<B>, req: &Request, trace: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    let mut spans: Vec<(Arc<Provenance>, String)> = Vec::new();
    let mut notes = Vec::new();
    // A prefill past a few seconds shows its progress on stderr.
    let started = std::time::Instant::now();
    let mut bar: Option<Progress> = None;
    let on_prefill = |done: usize, total: usize| {
        if bar.is_none() && done < total && started.elapsed().as_secs_f64() > 2.0 {
            bar = Some(Progress::new(total as u64, "prompt tokens prefilled"));
        }
        if let Some(b) = bar.as_mut() {
            b.set(done as u64);
            if done == total {
                b.finish();
            }
        }
    };
    let g = engine.generate_with_progress(
        req,
        |ev| match ev {
            Event::Token { text, provenance, .. } => {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
                match spans.last_mut() {
                    Some((p, t))
                        if Arc::ptr_eq(p, provenance)
                            || (**p == Provenance::Llm && **provenance == Provenance::Llm) =>
                    {
                        t.push_str(text)
                    }
                    _ => spans.push((provenance.clone(), text.clone())),
                }
            }
            Event::Note { message, .. } => notes.push(message.clone()),
            Event::Finished { .. } => {}
        },
        on_prefill,
    )?;
    println!();
    if trace {
        eprintln!("trace:");
        for (p, text) in &spans {
            match &**p {
                Provenance::Llm => eprintln!("  [llm] {text:?}"),
                Provenance::Expert { expert, inputs, outputs } => eprintln!(
                    "  [expert {expert}] {text:?}  inputs {} -> outputs {}",
                    brief(inputs),
                    brief(outputs)
                ),
                Provenance::Failed { expert, .. } => eprintln!("  [failed {expert}] {text:?}"),
            }
        }
        for n in &notes {
            eprintln!("  [note] {n}");
        }
    }
    eprintln!(
        "prefill: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s | finish: {:?}",
        g.prompt_tokens,
        g.prefill_tok_per_s(),
        g.tokens.len(),
        g.decode_tok_per_s(),
        g.finish
    );
    // The answer is on stdout as it is; the exit status tells a script not to take it.
    match g.finish {
        Finish::ExpertFailed => {
            anyhow::bail!(
                "an expert could not compute its result, so the answer stops there: {}",
                notes.join("; ")
            )
        }
        Finish::NonFinite => anyhow::bail!(
            "the model's logits became NaN or infinite after {} tokens: its weights or config.json do not \
             give meaningful numbers",
            g.tokens.len()
        ),
        Finish::Stop | Finish::Length | Finish::Context => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Generate {
            model,
            manifest,
            trace,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            device,
        } => {
            let prompt = if chat || system.is_some() {
                Prompt::Chat { system, user: prompt }
            } else {
                Prompt::Raw(prompt)
            };
            let req =
                Request { prompt, max_tokens, sampling: SamplingParams { temperature, top_k, top_p, seed } };
            match manifest {
                Some(path) => with_engine!(device, Engine::load_manifest, path, |engine| generate(
                    &engine, &req, trace
                )?),
                None => {
                    let dir = model_dir(model)?;
                    with_engine!(device, Engine::load, dir, |engine| generate(&engine, &req, trace)?)
                }
            }
        }
        Cmd::BenchAnswers { manifest, model, workload, json, device } => {
            use pimoe::bench::answers;
            let work = answers::Workload::load(&workload)?;
            let n = work.answers.len();
            let show = |i: usize, a: &answers::AnswerTiming| {
                eprintln!(
                    "answer {}/{n}: {:.3} s, {} prompt + {} generated + {} injected tokens, {} expert calls",
                    i + 1,
                    a.latency_s,
                    a.prompt_tokens,
                    a.generated_tokens,
                    a.injected_tokens,
                    a.expert_calls
                )
            };
            let report = match manifest {
                Some(path) => with_engine!(device, Engine::load_manifest, path, |e| answers::run(
                    {
                        pimoe::bench::require_timed_device(&e.backend)?;
                        &e
                    },
                    &path.display().to_string(),
                    &work,
                    show
                )?),
                None => {
                    let dir = model_dir(model)?;
                    with_engine!(device, Engine::load, dir, |e| answers::run(
                        {
                            pimoe::bench::require_timed_device(&e.backend)?;
                            &e
                        },
                        &dir.display().to_string(),
                        &work,
                        show
                    )?)
                }
            };
            pimoe::bench::write_atomic(&json, serde_json::to_string_pretty(&report)?.as_bytes())?;
            eprintln!("median {:.3} s per answer; wrote {}", report.median_latency_s, json.display());
        }
        Cmd::Train { target } => train(*target)?,
        Cmd::Info { model } => info(&model_dir(model)?)?,
        Cmd::ImportGguf { gguf, out_dir, keep_types } => {
            let s = import::import_gguf_with(&gguf, &out_dir, true, keep_types)?;
            eprintln!("{s}");
        }
        Cmd::Serve {
            manifest,
            model,
            host,
            port,
            api_key,
            served_model_name,
            max_running,
            kv_tokens,
            max_step_tokens,
            max_queue,
            body_limit,
            device,
        } => {
            let (path, composed) = match (manifest, model) {
                (Some(m), _) => (m, true),
                (None, Some(d)) => (d, false),
                (None, None) => {
                    fetch::ensure_default_model(true)?;
                    (pimoe::tasks::demo::ensure_manifest()?, true)
                }
            };
            let name = served_model_name.unwrap_or_else(|| {
                let stem = if composed { path.file_stem() } else { path.file_name() };
                stem.map_or("pimoe".into(), |s| s.to_string_lossy().into_owned())
            });
            if !host.is_loopback() && api_key.is_none() {
                eprintln!(
                    "warning: listening on {host} without --api-key: anyone who can reach it can use it"
                );
            }
            let cfg = pimoe::serve::ServeConfig {
                host,
                port,
                api_key,
                model_name: name.clone(),
                sched: SchedulerConfig { max_step_tokens, max_running, kv_tokens },
                max_queue,
                body_limit,
            };
            let ready = |addr| eprintln!("pimoe serve: {name} on http://{addr}/v1 (Ctrl-C stops)");
            if composed {
                with_engine!(device, Engine::load_manifest, path, |engine| pimoe::serve::serve(
                    &engine, cfg, ready
                )?)
            } else {
                with_engine!(device, Engine::load, path, |engine| pimoe::serve::serve(&engine, cfg, ready)?)
            }
        }
        Cmd::Demo { trace, device } => {
            fetch::ensure_default_model(true)?;
            let path = pimoe::tasks::demo::ensure_manifest()?;
            let summary = with_engine!(device, Engine::load_manifest, path, |engine| {
                pimoe::tasks::demo::run(&engine, trace, &mut std::io::stdout())?
            });
            eprintln!(
                "{} questions in {:.1} s; {} answered with an expert's number that agrees with PYPOWER",
                summary.questions, summary.seconds, summary.computed_right
            );
        }
        Cmd::Eval { manifest, q, json, device } => {
            let path = match manifest {
                Some(p) => p,
                None => {
                    fetch::ensure_default_model(true)?;
                    pimoe::tasks::demo::ensure_manifest()?
                }
            };
            let cfg = pimoe::tasks::eval::EvalConfig {
                per_task: q.per_task,
                seed: q.seed,
                max_tokens: q.max_tokens,
                sched: q.sched(),
            };
            let report = with_engine!(device, Engine::load_manifest, path, |engine| {
                let mut engine = engine;
                let mut bar = Progress::new(2 * 2 * q.per_task as u64, "answers");
                let tasks = pimoe::tasks::eval::run(&mut engine, &cfg, |done, _| bar.set(done as u64))?;
                bar.finish();
                pimoe::tasks::eval::Report::new(&engine, &path, &cfg, tasks)
            });
            eprint!("{}", report.summary());
            if let Some(out) = json {
                pimoe::bench::write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Cmd::RouterData { model, q, out, device } => {
            let dir = model_dir(model)?;
            let (rows, summary) = with_engine!(device, Engine::load, dir, |engine| {
                let mut bar = Progress::new(2 * q.per_task as u64, "answers");
                let r = pimoe::tasks::router_data::router_rows(
                    &engine,
                    q.per_task,
                    q.seed,
                    q.max_tokens,
                    q.sched(),
                    |d, _| bar.set(d as u64),
                )?;
                bar.finish();
                r
            });
            let mut text = String::new();
            for r in &rows {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            pimoe::bench::write_atomic(&out, text.as_bytes())?;
            eprintln!(
                "wrote {}: {} rows, {} with a number to fire at",
                out.display(),
                summary.rows,
                summary.with_number
            );
        }
        Cmd::Fetch => {
            let dir = fetch::ensure_default_model(true)?;
            println!("{}", dir.display());
        }
        Cmd::ProfileKernels { model, config, step, batch, ctx, device, replays, layers, json } => {
            use pimoe::bench::profile::{self, ProfileConfig, StepKind};
            let b = match device {
                ProfileDevice::Emu => CudaBackend::emulated(0)?,
                ProfileDevice::Cuda => {
                    CudaBackend::with_driver(0, pimoe::backend::cuda::driver::DriverKind::Gpu)?
                }
            };
            let random = |mut cfg: pimoe::model::ModelConfig, name: String| -> anyhow::Result<_> {
                let mut name = format!("random weights, {name}");
                if let Some(n) = layers {
                    if n == 0 || n > cfg.num_layers {
                        anyhow::bail!("--layers {n}: the model has {} layers", cfg.num_layers);
                    }
                    name = format!("{name}, first {n} of its {} layers", cfg.num_layers);
                    cfg.num_layers = n;
                }
                Ok((pimoe::llm::Llm::random(&b, cfg, 1)?, name))
            };
            let (llm, name) = match (model, config) {
                (Some(dir), _) => (pimoe::llm::Llm::load(&b, &dir)?, dir.display().to_string()),
                (None, Some(path)) => {
                    random(pimoe::model::ModelConfig::load(&path)?, path.display().to_string())?
                }
                (None, None) => random(
                    pimoe::model::ModelConfig::parse(
                        profile::QWEN25_05B,
                        Path::new("<Qwen2.5-0.5B config>"),
                    )?,
                    "Qwen2.5-0.5B-Instruct config".into(),
                )?,
            };
            let step = match step {
                StepArg::Decode => StepKind::Decode,
                StepArg::Prefill => StepKind::Prefill,
            };
            let cfg = ProfileConfig { step, batch, ctx };
            let report = match device {
                ProfileDevice::Emu => {
                    let report = profile::run(&b, &llm, &name, &cfg)?;
                    print!("{}", report.table());
                    serde_json::to_string_pretty(&report)?
                }
                ProfileDevice::Cuda => {
                    let t = profile::time_on_gpu(&b, &llm, &name, &cfg, replays)?;
                    println!(
                        "{}: {} steps, median {:.1} us, min {:.1} us (host wall time per step)",
                        t.run.device,
                        t.replays,
                        t.step_s_median * 1e6,
                        t.step_s_min * 1e6
                    );
                    serde_json::to_string_pretty(&t)?
                }
            };
            if let Some(out) = json {
                pimoe::bench::write_atomic(&out, report.as_bytes())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Cmd::ExpertServer { manifest } => {
            let comp = pimoe::bench::toolcall::load_tools(&manifest)?;
            pimoe::bench::toolcall::serve(&comp, std::io::stdin().lock(), std::io::stdout().lock())?;
        }
        Cmd::Bench {
            scenario,
            manifest,
            per_task,
            seed,
            max_tokens,
            concurrency,
            profile_steps,
            http,
            server,
            json,
            device,
            ..
        } if scenario.is_some() || profile_steps.is_some() => {
            let path = match manifest {
                Some(p) => p,
                None => {
                    fetch::ensure_default_model(true)?;
                    pimoe::tasks::demo::ensure_manifest()?
                }
            };
            let cfg = ScenarioConfig {
                scenario: scenario.unwrap_or_else(|| "grid".into()),
                per_task,
                seed,
                max_tokens,
                concurrency,
                max_step_tokens: SchedulerConfig::default().max_step_tokens,
            };
            let n = cfg.check()?.len();
            if let Some(steps) = profile_steps {
                let c = cfg.concurrency.iter().copied().max().unwrap_or(1);
                let ran = with_engine!(device, Engine::load_manifest, path, |engine| {
                    pimoe::bench::scenario::profile_steps(&engine, &cfg, c, 4, steps)?
                });
                eprintln!("profiled {ran} scheduler steps at concurrency {c}");
                return Ok(());
            }
            let http_server = || -> anyhow::Result<Option<HttpServer<'static>>> {
                if let Some(url) = server.clone() {
                    return Ok(Some(HttpServer::At(url)));
                }
                if !http {
                    return Ok(None);
                }
                let (m, base) = pimoe::pimoe::manifest::Manifest::load(&path)?;
                let llm = base.join(&m.llm);
                Ok(Some(HttpServer::Spawn(Box::new(move || serve_command(&llm, device)))))
            };
            let (opened, note) = device::open(device)?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let report = match opened {
                Opened::Cpu(b) => {
                    let machine = (pimoe::bench::cpu_device(), None);
                    let h = Harness {
                        ceiling_name:
                            "CPU all-thread memory read bandwidth; our bf16 matmul, 512 rows, widest layer",
                        ceiling: Box::new(|e: &Engine<CpuBackend>| {
                            let c = &e.llm.config;
                            Ok(Ceilings {
                                bytes_per_s: pimoe::bench::memory_read_bandwidth(),
                                flop_per_s: pimoe::bench::cpu_matmul_rate(
                                    2 * c.intermediate_size,
                                    c.hidden_size,
                                ),
                            })
                        }),
                        energy: Err("the CPU backend has no energy counter (NVML counts a GPU's)".into()),
                        tool_command: Box::new(|| tool_command(&path)),
                        http: http_server()?,
                        on_answer: Box::new(|| ()),
                    };
                    scenario_run(Engine::load_manifest(b, &path)?, &path, &cfg, h, machine, n)?
                }
                Opened::Cuda(b) => {
                    pimoe::bench::require_timed_device(&*b)?;
                    let machine = (b.device_name.clone(), Some(pimoe::bench::gpu::driver_version()));
                    let energy = pimoe::bench::nvml::cuda_bus_id(0).and_then(|bus| Nvml::open(&bus));
                    let h = Harness {
                        ceiling_name: "GPU device-to-device copy bandwidth (bytes read + written); our bf16 GEMM at 8192^3",
                        ceiling: Box::new(|e: &Engine<CudaBackend>| {
                            Ok(Ceilings {
                                bytes_per_s: pimoe::bench::gpu::copy_bandwidth(&e.backend)?,
                                flop_per_s: pimoe::bench::gpu::gemm_rate(&e.backend, 8192)?,
                            })
                        }),
                        energy,
                        tool_command: Box::new(|| tool_command(&path)),
                        http: http_server()?,
                        on_answer: Box::new(|| ()),
                    };
                    scenario_run(Engine::load_manifest(*b, &path)?, &path, &cfg, h, machine, n)?
                }
            };
            eprint!("{}", report.summary());
            if let Some(out) = json {
                pimoe::bench::write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Cmd::Perplexity { model, text, ids, ctx, json, device } => {
            let dir = model_dir(model)?;
            let name = display_name(&dir);
            let report = with_engine!(device, Engine::load, dir, |engine| {
                let (ids, source) = match (&ids, &text) {
                    (Some(path), _) => {
                        let t = std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("--ids {}: {e}", path.display()))?;
                        let what = format!("--ids {}", path.display());
                        (pimoe::bench::perplexity::parse_ids(&t, &what)?, format!("ids: {}", path.display()))
                    }
                    (None, Some(path)) => {
                        let t = std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("--text {}: {e}", path.display()))?;
                        (engine.tokenizer.encode(&t)?, format!("text: {}", path.display()))
                    }
                    (None, None) => unreachable!("clap requires --text or --ids"),
                };
                let ctx = ctx.unwrap_or(engine.llm.config.max_position_embeddings.min(512));
                let windows = pimoe::bench::perplexity::windows(ids.len(), ctx.max(1)).len() as u64;
                let mut bar = (windows > 1).then(|| Progress::new(windows, "windows scored"));
                let r = pimoe::bench::perplexity::run(&engine, &name, &source, ids, ctx, |done, _| {
                    if let Some(b) = bar.as_mut() {
                        b.set(done as u64)
                    }
                })?;
                drop(bar);
                r
            });
            print!("{}", report.summary());
            if let Some(out) = json {
                pimoe::bench::write_atomic(&out, serde_json::to_string(&report)?.as_bytes())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Cmd::Bench { model, tokens, repeats, prefill, prefill_ids, json, device, .. } => {
            let dir = model_dir(model)?;
            let name = display_name(&dir);
            let (opened, note) = device::open(device)?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let text = match opened {
                Opened::Cpu(b) => {
                    let engine = Engine::load(b, &dir)?;
                    let ids = match prefill {
                        Some(n) => Some(prefill_prompt(&engine, n, prefill_ids.as_deref())?),
                        None => None,
                    };
                    serde_json::to_string_pretty(&pimoe::bench::decode_bench(
                        &engine,
                        &name,
                        tokens,
                        repeats,
                        ids.as_deref(),
                    )?)?
                }
                Opened::Cuda(b) => {
                    if prefill.is_some() {
                        anyhow::bail!(
                            "--prefill is the CPU bench's; on CUDA the bench times a 2,048-token prefill itself"
                        );
                    }
                    pimoe::bench::require_timed_device(&*b)?;
                    let llm = pimoe::llm::Llm::load(&*b, &dir)?;
                    serde_json::to_string_pretty(&pimoe::bench::gpu::run(&b, &llm, &name)?)?
                }
            };
            println!("{text}");
            if let Some(path) = json {
                pimoe::bench::write_atomic(&path, text.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// A model path's last component, as reports name the model.
fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into())
}

/// `bench --prefill N`'s ids: the first `n` of the file's, or the decode prompt's
/// tokens repeated to `n`.
fn prefill_prompt<B: Backend>(engine: &Engine<B>, n: usize, file: Option<&Path>) -> anyhow::Result<Vec<u32>> {
    let ctx = engine.llm.config.max_position_embeddings;
    if n == 0 || n > ctx {
        anyhow::bail!("--prefill {n}: 1 to {ctx} tokens (the model's context)");
    }
    let ids = match file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--prefill-ids {}: {e}", path.display()))?;
            let ids = pimoe::bench::perplexity::parse_ids(&t, &format!("--prefill-ids {}", path.display()))?;
            if ids.len() < n {
                anyhow::bail!("--prefill-ids {}: {} ids, --prefill asks {n}", path.display(), ids.len());
            }
            ids
        }
        None => engine.tokenizer.encode("The capital of France is Paris. ")?,
    };
    Ok(ids.iter().copied().cycle().take(n).collect())
}

/// The run's files (named `default_name` unless --name), shared options and
/// precision (`default` unless --precision).
fn common(
    c: CommonArgs,
    default_name: &str,
    default: Precision,
) -> anyhow::Result<(tr::Files, TrainOptions, Precision)> {
    let holdout = match c.val {
        Some(path) => Holdout::File(path),
        None => Holdout::Fraction(c.val_fraction),
    };
    let precision = match &c.precision {
        None => default,
        Some(p) => Precision::from_name(p).ok_or_else(|| anyhow::anyhow!("--precision {p:?}: f32 or f64"))?,
    };
    let name = c.name.unwrap_or_else(|| default_name.to_string());
    let opts = TrainOptions { epochs: c.epochs, batch: c.batch, lr: c.lr, seed: c.seed, progress: !c.quiet };
    Ok((tr::Files { data: c.data, holdout, out: c.out, name }, opts, precision))
}

fn cache_dir(c: &CacheArgs) -> Option<PathBuf> {
    match (c.no_cache, &c.cache) {
        (true, _) => None,
        (false, Some(dir)) => Some(dir.clone()),
        (false, None) => Some(fetch::weights_root().join(".cache/features")),
    }
}

/// Refuses the first flag given that `--kind kind` does not read.
fn unused(kind: &str, flags: &[(&str, bool)]) -> anyhow::Result<()> {
    match flags.iter().find(|f| f.1) {
        Some((flag, _)) => anyhow::bail!("--{flag} does not apply to --kind {kind}"),
        None => Ok(()),
    }
}

fn train(target: TrainTarget) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let outcome = match target {
        TrainTarget::Router(a) => {
            let class_weight = ClassWeight::from_name(&a.class_weight)
                .ok_or_else(|| anyhow::anyhow!("--class-weight {:?}: balanced or none", a.class_weight))?;
            let (files, opts, precision) = common(a.common, "router", Precision::F32)?;
            match a.kind {
                RouterKind::Piern => {
                    let given = [
                        ("inner", a.inner.is_some()),
                        ("activation", a.activation.is_some()),
                        ("cache", a.cache.cache.is_some()),
                        ("no-cache", a.cache.no_cache),
                    ];
                    unused("piern", &given)?;
                    let p = tr::piern::PiernOptions {
                        model: model_dir(a.model)?,
                        experts: a.experts,
                        embed_dim: a.embed_dim.unwrap_or(64),
                        hidden: a.hidden.unwrap_or(64),
                        class_weight,
                        threshold: a.threshold,
                        precision,
                    };
                    tr::piern::train_piern(&files, &p, &opts)?
                }
                RouterKind::HiddenGate => {
                    unused(
                        "hidden-gate",
                        &[("embed-dim", a.embed_dim.is_some()), ("hidden", a.hidden.is_some())],
                    )?;
                    let activation = match a.activation.as_deref().unwrap_or("softmax") {
                        "softmax" => GateActivation::Softmax,
                        "sigmoid" => GateActivation::Sigmoid,
                        other => anyhow::bail!("--activation {other:?}: softmax or sigmoid"),
                    };
                    let h = tr::hidden_gate::HiddenGateOptions {
                        model: model_dir(a.model)?,
                        experts: a.experts,
                        inner: a.inner,
                        activation,
                        class_weight,
                        threshold: a.threshold,
                        precision,
                        cache: cache_dir(&a.cache),
                    };
                    tr::hidden_gate::train_hidden_gate(&files, &h, &opts)?
                }
            }
        }
        TrainTarget::T2c(a) => {
            let (files, opts, precision) = common(a.common, "t2c", Precision::F32)?;
            let t = tr::t2c::T2cOptions {
                model: model_dir(a.model)?,
                pattern: a.pattern,
                inner: a.inner,
                precision,
                cache: cache_dir(&a.cache),
            };
            tr::t2c::train_t2c(&files, &t, &opts)?
        }
        TrainTarget::Expert(a) => {
            let (files, opts, precision) = common(a.common, "expert", Precision::F64)?;
            let shape = match (a.kind, a.widths, a.branch, a.trunk) {
                (ExpertKind::Mlp, Some(widths), None, None) => tr::expert::ExpertShape::Mlp { widths },
                (ExpertKind::Mlp, ..) => {
                    anyhow::bail!("--kind mlp takes --widths (and not --branch/--trunk)")
                }
                (ExpertKind::Deeponet, None, Some(branch), Some(trunk)) => {
                    tr::expert::ExpertShape::DeepONet { branch, trunk }
                }
                (ExpertKind::Deeponet, ..) => {
                    anyhow::bail!("--kind deeponet takes --branch and --trunk (and not --widths)")
                }
            };
            let activation = Activation::from_name(&a.activation).ok_or_else(|| {
                anyhow::anyhow!("--activation {:?}: relu, tanh, gelu, silu or identity", a.activation)
            })?;
            let e = tr::expert::ExpertOptions { shape, activation, precision, order: a.order };
            tr::expert::train_expert(&files, &e, &opts)?
        }
    };
    let w = &outcome.written;
    let bytes = std::fs::metadata(&w.weights).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({bytes} bytes) and {} in {:.1} s",
        w.weights.display(),
        w.fragment.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(last) = outcome.epoch_losses.last() {
        println!("final epoch loss {last:.6}");
    }
    println!("train: {}", outcome.train);
    match &outcome.val {
        Some(v) => println!("validation: {v}"),
        None => println!("validation: none (--val-fraction 0)"),
    }
    for n in &outcome.notes {
        println!("note: {n}");
    }
    Ok(())
}

/// Runs a scenario with a progress bar over every answer of every way and level.
fn scenario_run<B: Backend>(
    mut engine: Engine<B>,
    manifest: &Path,
    cfg: &ScenarioConfig,
    mut h: Harness<B>,
    machine: (String, Option<String>),
    n: usize,
) -> anyhow::Result<ScenarioReport> {
    let ways = pimoe::bench::scenario::Way::ALL.len() + usize::from(h.http.is_some());
    let total = (ways * cfg.concurrency.len() * n) as u64;
    let mut bar = Progress::new(total, "answers");
    let mut done = 0;
    h.on_answer = Box::new(move || {
        done += 1;
        bar.set(done);
    });
    let r = pimoe::bench::scenario::run(&mut engine, cfg, &mut h);
    h.on_answer = Box::new(|| ()); // drops the bar, which clears it
    Ok(ScenarioReport::new(&engine, manifest, cfg, &h, machine, r?))
}

/// `pimoe expert-server` for `manifest`, from this very binary.
fn tool_command(manifest: &Path) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "pimoe".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("expert-server").arg("--manifest").arg(manifest);
    cmd
}

/// `pimoe serve` on a model directory alone, from this very binary.
fn serve_command(model: &Path, device: DeviceChoice) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "pimoe".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve").arg("--model").arg(model);
    if let Some(d) = device.to_possible_value() {
        cmd.args(["--device", d.get_name()]);
    }
    cmd
}

/// Progress on stderr: a bar on a terminal; in a log (not a terminal, where the bar
/// stays hidden) a line at each tenth, so a long run there still says how far it is.
struct Progress {
    bar: indicatif::ProgressBar,
    what: &'static str,
    logged: u64,
}

impl Progress {
    fn new(len: u64, what: &'static str) -> Self {
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("a valid template");
        bar.set_style(style);
        Progress { bar, what, logged: 0 }
    }

    fn set(&mut self, done: u64) {
        self.bar.set_position(done);
        let len = self.bar.length().unwrap_or(0).max(1);
        if self.bar.is_hidden() && done * 10 / len > self.logged * 10 / len {
            self.logged = done;
            eprintln!("{done}/{len} {} ({:.0} s)", self.what, self.bar.elapsed().as_secs_f64());
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Describes a model (a directory or a GGUF file), then loads it on the CPU and
/// reports the memory it takes there.
fn info(path: &Path) -> anyhow::Result<()> {
    let gguf = pimoe::model::gguf_model::is_gguf(path);
    let (c, bytes, types) = if gguf {
        let m = pimoe::model::gguf_model::GgufModel::open(path)?;
        let types = m.type_counts().into_iter().map(|(ty, n)| (ty.to_string(), n)).collect::<Vec<_>>();
        (m.config.clone(), m.tensor_bytes(), types)
    } else {
        let files = pimoe::model::safetensors::SafetensorFiles::open_dir(path)?;
        (ModelConfig::load(&path.join("config.json"))?, files.tensor_bytes(), files.type_counts())
    };
    let params = c.num_params();
    println!("model:        {}", path.display());
    println!("architecture: {}", c.arch.hf_name());
    println!(
        "layers {} | hidden {} | intermediate {} | heads {} (kv {}, head_dim {}) | vocab {} | context {}",
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.max_position_embeddings
    );
    println!("tied lm_head: {} | qkv bias: {}", c.tie_word_embeddings, c.qkv_bias);
    println!("parameters:   {params} ({:.1} M)", params as f64 / 1e6);
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "weights:      {bytes} bytes ({:.1} MiB, {:.2} bits a parameter)",
        mib(bytes),
        bytes as f64 * 8.0 / params as f64
    );
    let types: Vec<String> = types.iter().map(|(ty, n)| format!("{ty} {:.1} M", *n as f64 / 1e6)).collect();
    println!(
        "stored types: {} (parameters; F16 is computed as f32, every other type as stored)",
        types.join(", ")
    );
    let _engine = pimoe::engine::Engine::load(CpuBackend, path)?;
    if let Some((rss, peak)) = pimoe::bench::resident_memory() {
        println!(
            "memory (CPU): {:.1} MiB resident once loaded (the whole process), {:.1} MiB at most while loading",
            mib(rss),
            mib(peak)
        );
    }
    Ok(())
}
