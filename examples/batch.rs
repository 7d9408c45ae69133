//! Serving several requests at once through the library: load a model (or a PiMoE
//! manifest), submit requests to a scheduler, stream their tokens with provenance,
//! cancel one midway.
//!
//!     cargo run --release --example batch -- [MODEL_DIR | MANIFEST.json]
//!
//! Without an argument it uses the default SmolLM2-135M-Instruct (fetched if missing).

use std::collections::HashMap;
use std::path::PathBuf;

use pimoe::backend::cpu::CpuBackend;
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance, Scheduler, SchedulerConfig};
use pimoe::{Engine, Prompt, Request};

fn main() -> pimoe::Result<()> {
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => pimoe::model::fetch::ensure_default_model(true)?,
    };
    let engine = if path.extension().is_some_and(|e| e == "json") {
        Engine::load_manifest(CpuBackend, &path)?
    } else {
        Engine::load(CpuBackend, &path)?
    };

    let mut sched = Scheduler::new(&engine, SchedulerConfig::default())?;
    let questions =
        ["What is the capital of France?", "Name three primary colours.", "Count from one to ten."];
    let mut ids = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let req = Request {
            prompt: Prompt::Chat { system: None, user: q.to_string() },
            max_tokens: 48,
            sampling: SamplingParams { temperature: 0.7, top_k: 40, top_p: 0.9, seed: i as u64 },
        };
        ids.push(sched.submit(&req)?);
    }

    let mut text: HashMap<u64, String> = HashMap::new();
    let mut steps = 0;
    while !sched.is_idle() {
        for ev in sched.step()? {
            match ev {
                Event::Token { id, text: piece, provenance, .. } => {
                    if let Provenance::Expert { expert, .. } = &*provenance {
                        text.entry(id).or_default().push_str(&format!("[{expert}]"));
                    }
                    text.entry(id).or_default().push_str(&piece);
                }
                Event::Note { id, message, .. } => eprintln!("request {id}: {message}"),
                Event::Finished { id, finish, stats } => println!(
                    "request {id} ({finish:?}, {} prompt + {} generated + {} injected tokens): {}",
                    stats.prompt_tokens,
                    stats.generated_tokens,
                    stats.injected_tokens,
                    text.remove(&id).unwrap_or_default().trim()
                ),
            }
        }
        steps += 1;
        // The last request is cancelled after a few steps: its blocks are freed
        // and it sends no Finished event.
        if steps == 4 {
            sched.cancel(ids[2]);
            println!("request {} cancelled", ids[2]);
        }
    }
    Ok(())
}
