//! One model, one tokenizer, one backend: load a model directory and generate from
//! a prompt, streaming text. The multi-request scheduler will drive `Llm::forward`
//! the same way with many sequences per step.

use std::path::Path;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kv::BLOCK_SIZE;
use crate::llm::Llm;
use crate::model::gguf_model::{is_gguf, GgufModel};
use crate::model::tokenizer::{Message, Tokenizer};
use crate::model::LoadOptions;
use crate::pimoe::compose::Composition;
use crate::pimoe::manifest::Manifest;
use crate::sampling::SamplingParams;
use crate::scheduler::{Event, Provenance, Scheduler, SchedulerConfig, Stats};
use std::sync::Arc;

/// Prompt tokens per prefill step: bounds the activation memory of one step
/// (about 40 MB at SmolLM2's sizes) whatever the prompt length.
pub const PREFILL_CHUNK: usize = 512;

pub struct Engine<B: Backend> {
    pub backend: B,
    pub llm: Llm<B>,
    pub tokenizer: Tokenizer,
    /// Router, T2C and experts when loaded from a manifest; None for a plain LLM.
    pub pimoe: Option<Composition>,
    /// Per expert, the separate backbone of its learned T2C, if it has one.
    pub backbones: Vec<Option<Llm<B>>>,
    /// Per expert, its weights prepared on the backend.
    pub experts: Vec<B::Expert>,
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
    /// A fired expert could not compute its result: the composition's failure text
    /// ends the answer in its place (the trace note says why).
    ExpertFailed,
    /// The model's logits were not finite (NaN or infinite): nothing sampled from
    /// them would mean anything.
    NonFinite,
}

impl Finish {
    /// Whether the answer is one a reader can take: false when an expert failed or
    /// the model broke down.
    pub fn is_failure(self) -> bool {
        matches!(self, Finish::ExpertFailed | Finish::NonFinite)
    }
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

/// One request's answer from a batch run: its tokens with the text each completed
/// and where it came from, the trace notes, and how it ended.
#[derive(Clone, Debug)]
pub struct Answer {
    pub text: String,
    pub tokens: Vec<AnswerToken>,
    pub notes: Vec<String>,
    pub finish: Finish,
    pub stats: Stats,
}

#[derive(Clone, Debug)]
pub struct AnswerToken {
    pub id: u32,
    pub text: String,
    pub provenance: Arc<Provenance>,
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
    /// Loads a PiMoE composition: the manifest's LLM, router, T2C modules and experts.
    pub fn load_manifest(backend: B, path: &Path) -> Result<Self> {
        Self::load_manifest_with(backend, path, LoadOptions::default())
    }

    /// `options` governs the LLMs' weights; the router's, T2C's and experts' files are
    /// small and follow `LoadOptions::default()` (the environment).
    pub fn load_manifest_with(backend: B, path: &Path, options: LoadOptions) -> Result<Self> {
        let (m, base) = Manifest::load(path)?;
        let mut engine = Self::load_files(backend, &base.join(&m.llm), options)?;
        let c = &engine.llm.config;
        let comp = Composition::load(&m, &base, c.hidden_size, c.vocab_size)?;
        engine.backbones = comp
            .experts
            .iter()
            .map(|slot| {
                slot.backbone.as_ref().map(|dir| Llm::load_with(&engine.backend, dir, options)).transpose()
            })
            .collect::<Result<_>>()?;
        engine.experts = comp
            .experts
            .iter()
            .map(|slot| engine.backend.prepare_expert(&slot.expert))
            .collect::<Result<_>>()?;
        engine.pimoe = Some(comp);
        // once, after the backbones too
        return_freed_memory();
        Ok(engine)
    }

    /// Loads `dir` (config.json, safetensors, tokenizer.json).
    pub fn load(backend: B, dir: &Path) -> Result<Self> {
        Self::load_with(backend, dir, LoadOptions::default())
    }

    /// A GGUF file loads directly, its matrices kept in their stored types.
    pub fn load_with(backend: B, dir: &Path, options: LoadOptions) -> Result<Self> {
        let engine = Self::load_files(backend, dir, options)?;
        return_freed_memory();
        Ok(engine)
    }

    fn load_files(backend: B, dir: &Path, options: LoadOptions) -> Result<Self> {
        if is_gguf(dir) {
            let model = GgufModel::open(dir)?;
            let tokenizer = model.tokenizer()?;
            let llm = Llm::from_gguf(&backend, &model, options)?;
            return Ok(Engine {
                backend,
                llm,
                tokenizer,
                pimoe: None,
                backbones: Vec::new(),
                experts: Vec::new(),
            });
        }
        if dir.is_file() {
            return Err(Error::format(
                dir,
                "is neither a model directory (config.json, safetensors, tokenizer.json) nor a GGUF file",
            ));
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
        let llm = Llm::load_with(&backend, dir, options)?;
        Ok(Engine { backend, llm, tokenizer, pimoe: None, backbones: Vec::new(), experts: Vec::new() })
    }

    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.tokenizer.encode(&self.prompt_text(prompt)?)
    }

    /// The prompt as the model sees it (ChatML rendered for a chat prompt).
    pub fn prompt_text(&self, prompt: &Prompt) -> Result<String> {
        Ok(match prompt {
            Prompt::Raw(t) => t.clone(),
            Prompt::Chat { system, user } => {
                let mut msgs = Vec::new();
                if let Some(s) = system {
                    msgs.push(Message { role: "system", content: s });
                }
                msgs.push(Message { role: "user", content: user });
                self.tokenizer.chat_prompt(&msgs)?
            }
        })
    }

    /// Generates for one request, calling `on_text` with each new piece of text.
    pub fn generate(&self, req: &Request, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        self.generate_events(req, |ev| {
            if let Event::Token { text, .. } = ev {
                on_text(text);
            }
        })
    }

    /// Runs every request through one scheduler (continuous batching) and returns
    /// their answers in order; `on_finish(i)` is called as request i completes.
    pub fn generate_batch(
        &self,
        reqs: &[Request],
        cfg: SchedulerConfig,
        mut on_finish: impl FnMut(usize),
    ) -> Result<Vec<Answer>> {
        let mut sched = Scheduler::new(self, cfg)?;
        let ids = reqs.iter().map(|r| sched.submit(r)).collect::<Result<Vec<_>>>()?;
        let index = |id| ids.iter().position(|&x| x == id).expect("one of ours");
        let mut parts: Vec<(Vec<AnswerToken>, Vec<String>)> = vec![Default::default(); reqs.len()];
        let mut done: Vec<Option<Answer>> = vec![None; reqs.len()];
        while !sched.is_idle() {
            for ev in sched.step()? {
                match ev {
                    Event::Token { id, token, text, provenance } => {
                        parts[index(id)].0.push(AnswerToken { id: token, text, provenance })
                    }
                    Event::Note { id, message, .. } => parts[index(id)].1.push(message),
                    Event::Finished { id, finish, stats } => {
                        let i = index(id);
                        let (tokens, notes) = std::mem::take(&mut parts[i]);
                        let text = tokens.iter().map(|t| t.text.as_str()).collect();
                        done[i] = Some(Answer { text, tokens, notes, finish, stats });
                        on_finish(i);
                    }
                }
            }
        }
        Ok(done.into_iter().map(|a| a.expect("every request finishes")).collect())
    }

    /// Generates for one request through the scheduler (so a composition's router
    /// and experts take part), calling `on_event` with every token, with its
    /// provenance, and every trace note.
    pub fn generate_events(&self, req: &Request, on_event: impl FnMut(&Event)) -> Result<Generation> {
        self.generate_with_progress(req, on_event, |_, _| {})
    }

    /// `generate_events`, calling `on_prefill(done, total)` after each step of the
    /// prompt's prefill (done == total once, at its end), for a long prompt's progress.
    pub fn generate_with_progress(
        &self,
        req: &Request,
        mut on_event: impl FnMut(&Event),
        mut on_prefill: impl FnMut(usize, usize),
    ) -> Result<Generation> {
        let prompt_tokens = self.prompt_ids(&req.prompt)?.len();
        let ctx = self.llm.config.max_position_embeddings;
        let cfg = SchedulerConfig {
            max_step_tokens: PREFILL_CHUNK,
            max_running: 1,
            kv_tokens: prompt_tokens.saturating_add(req.max_tokens).clamp(BLOCK_SIZE, ctx.max(BLOCK_SIZE)),
        };
        let mut sched = Scheduler::new(self, cfg)?;
        let id = sched.submit(req)?;
        let (mut tokens, mut text) = (Vec::new(), String::new());
        let mut prefilled = false;
        loop {
            let events = sched.step()?;
            if let Some((done, total)) = sched.prefill_progress(id).filter(|_| !prefilled) {
                prefilled = done == total;
                on_prefill(done, total);
            }
            for ev in events {
                on_event(&ev);
                match ev {
                    Event::Token { token, text: piece, .. } => {
                        tokens.push(token);
                        text.push_str(&piece);
                    }
                    Event::Note { .. } => {}
                    Event::Finished { finish, stats, .. } => {
                        return Ok(Generation {
                            prompt_tokens: stats.prompt_tokens,
                            tokens,
                            text,
                            finish,
                            prefill_secs: stats.first_token_secs,
                            decode_secs: stats.total_secs - stats.first_token_secs,
                        });
                    }
                }
            }
        }
    }
}

/// Hands the heap's free pages back to the kernel. Loading frees much of what it
/// allocates (a GGUF's metadata arrays, tokenizer.json's parse tree, staging
/// buffers), and glibc keeps freed pages below the top of its heap resident: 10 MiB
/// of the 136 MiB a Q4_K_M SmolLM2-135M process held once loaded (bench/NOTES.md).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; no allocation moves or ends.
    unsafe {
        libc::malloc_trim(0);
    }
}
