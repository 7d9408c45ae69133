//! The `pimoe` command line: parses arguments and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pimoe::backend::Backend;
use pimoe::device::{self, DeviceChoice, Opened};
use pimoe::model::{fetch, import, ModelConfig};
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance};
use pimoe::{Engine, Prompt, Request};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "pimoe", version, about = "PiMoE inference runtime")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streaming it to stdout.
    Generate {
        /// Model directory (config.json, safetensors, tokenizer.json). Default:
        /// SmolLM2-135M-Instruct, fetched and imported on first use.
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
    /// Print a model's architecture, parameter count and size.
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Convert a llama-architecture GGUF into a Hugging Face model directory (bf16).
    ImportGguf { gguf: PathBuf, out_dir: PathBuf },
    /// Fetch and import the default model (SmolLM2-135M-Instruct) if it is missing.
    Fetch,
    /// Measure decode speed against ceilings taken in the same run: on the CPU,
    /// batch-1 decode vs memory bandwidth; on CUDA, decode at batch 1 and 64 vs copy
    /// bandwidth and a 2,048-token prefill vs our GEMM rate (see src/bench/gpu.rs).
    Bench {
        #[arg(long)]
        model: Option<PathBuf>,
        /// Tokens to decode per repeat (CPU).
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Write the JSON report here (it is always printed to stdout).
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
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
    let g = engine.generate_events(req, |ev| match ev {
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
    })?;
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
    Ok(())
}

/// A value list for the trace: whole when short; a grid's padded system is long,
/// so only its head and its length then.
fn brief(v: &[f64]) -> String {
    const SHOWN: usize = 16;
    if v.len() <= SHOWN {
        format!("{v:?}")
    } else {
        format!("{:?} ... ({} values)", &v[..SHOWN], v.len())
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
        Cmd::Info { model } => info(&model_dir(model)?)?,
        Cmd::ImportGguf { gguf, out_dir } => {
            let s = import::import_gguf(&gguf, &out_dir, true)?;
            eprintln!("{s}");
        }
        Cmd::Fetch => {
            let dir = fetch::ensure_default_model(true)?;
            println!("{}", dir.display());
        }
        Cmd::Bench { model, tokens, repeats, json, device } => {
            let dir = model_dir(model)?;
            let name =
                dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
            let (opened, note) = device::open(device)?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let text = match opened {
                Opened::Cpu(b) => {
                    let engine = Engine::load(b, &dir)?;
                    serde_json::to_string_pretty(&pimoe::bench::decode_bench(
                        &engine, &name, tokens, repeats,
                    )?)?
                }
                Opened::Cuda(b) => {
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

fn info(dir: &Path) -> anyhow::Result<()> {
    let c = ModelConfig::load(&dir.join("config.json"))?;
    let files = pimoe::model::safetensors::SafetensorFiles::open_dir(dir)?;
    let params = c.num_params();
    println!("model:        {}", dir.display());
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
    let bytes = files.tensor_bytes();
    println!("weights:      {bytes} bytes ({:.1} MiB)", bytes as f64 / (1 << 20) as f64);
    Ok(())
}
