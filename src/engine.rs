//! One model, one tokenizer, one backend: load a model directory and generate from
//! a prompt, streaming text. The multi-request scheduler will drive `Llm::forward`
//! the same way with many sequences per step.

use std::path::Path;
use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::llm::{Llm, Logits, SeqChunk};
use crate::model::tokenizer::{Message, StreamDecoder, Tokenizer};
use crate::sampling::{Sampler, SamplingParams};

/// Prompt tokens per prefill step: bounds the activation memory of one step
/// (about 40 MB at SmolLM2's sizes) whatever the prompt length.
pub const PREFILL_CHUNK: usize = 512;

pub struct Engine<B: Backend> {
    pub backend: B,
    pub llm: Llm<B>,
    pub tokenizer: Tokenizer,
}

#[derive(Clone, Debug)]
pub enum Prompt {
    /// Text given to the model as is.
    Raw(String),
    /// A user message rendered in ChatML, with an optional system message.
    Chat { system: Option<String>, user: String },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-turn / end-of-text token.
    Stop,
    /// max_tokens reached.
    Length,
    /// The context window is full.
    Context,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    pub fn prefill_tok_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    /// Tokens after the first (which comes out of the prefill) over decode time.
    pub fn decode_tok_per_s(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

impl<B: Backend> Engine<B> {
    /// Loads `dir` (config.json, safetensors, tokenizer.json).
    pub fn load(backend: B, dir: &Path) -> Result<Self> {
        if dir.is_file() {
            let hint = if dir.extension().is_some_and(|e| e == "gguf") {
                "; convert a GGUF first with `pimoe import-gguf FILE.gguf OUTDIR`"
            } else {
                ""
            };
            return Err(Error::format(dir, format!("is a file, not a model directory{hint}")));
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
        let llm = Llm::load(&backend, dir)?;
        Ok(Engine { backend, llm, tokenizer })
    }

    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let text = match prompt {
            Prompt::Raw(t) => t.clone(),
            Prompt::Chat { system, user } => {
                let mut msgs = Vec::new();
                if let Some(s) = system {
                    msgs.push(Message { role: "system", content: s });
                }
                msgs.push(Message { role: "user", content: user });
                self.tokenizer.chat_prompt(&msgs)?
            }
        };
        self.tokenizer.encode(&text)
    }

    /// Generates for one request, calling `on_text` with each new piece of text.
    pub fn generate(&self, req: &Request, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        let ids = self.prompt_ids(&req.prompt)?;
        let ctx = self.llm.config.max_position_embeddings;
        if ids.is_empty() {
            return Err(Error::Request("the prompt is empty after tokenization".into()));
        }
        if ids.len() >= ctx {
            return Err(Error::Request(format!(
                "the prompt is {} tokens; the model's context window is {ctx} tokens, leaving no room to generate",
                ids.len()
            )));
        }
        let mut sampler = Sampler::new(req.sampling.clone())?;
        let budget = req.max_tokens.min(ctx - ids.len());
        let stops: Vec<u32> =
            self.llm.config.eos_token_ids.iter().chain(self.tokenizer.stop_ids()).copied().collect();

        let b = &self.backend;
        let mut cache = self.llm.new_cache(b, ids.len() + budget);
        let mut table = Vec::new();
        cache.reserve(&mut table, ids.len())?;

        let t0 = Instant::now();
        let mut logits = Vec::new();
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let start = i * PREFILL_CHUNK;
            let last = start + chunk.len() == ids.len();
            let step = [SeqChunk {
                tokens: chunk,
                start,
                block_table: &table,
                logits: if last { Logits::Last } else { Logits::None },
            }];
            logits = self.llm.forward(b, &mut cache, &step)?;
        }
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut out = Vec::new();
        let mut stream = StreamDecoder::default();
        let finish = loop {
            if out.len() == budget {
                break if budget < req.max_tokens { Finish::Context } else { Finish::Length };
            }
            let tok = sampler.sample(&logits);
            if stops.contains(&tok) {
                break Finish::Stop;
            }
            out.push(tok);
            if let Some(piece) = stream.push(&self.tokenizer, tok)? {
                on_text(&piece);
            }
            if out.len() == budget {
                continue;
            }
            let pos = ids.len() + out.len() - 1;
            cache.reserve(&mut table, pos + 1)?;
            let step = [SeqChunk { tokens: &[tok], start: pos, block_table: &table, logits: Logits::Last }];
            logits = self.llm.forward(b, &mut cache, &step)?;
        };
        Ok(Generation {
            prompt_tokens: ids.len(),
            text: self.tokenizer.decode(&out)?,
            tokens: out,
            finish,
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }
}
