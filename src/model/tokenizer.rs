//! tokenizer.json through the `tokenizers` crate, plus the ChatML chat format that
//! SmolLM2-Instruct and Qwen2.5-Instruct share.

use std::path::Path;

use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Ids that end a chat turn (`<|im_end|>`) or the text (`<|endoftext|>`), when present.
    stop_ids: Vec<u32>,
}

/// One message of a chat, rendered by [`Tokenizer::chat_prompt`].
pub struct Message<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Tokenizer(format!("{}: file not found", path.display())));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::new(inner))
    }

    /// A tokenizer.json held in memory (a GGUF's, built from its metadata); `origin`
    /// names where it came from in errors.
    pub fn from_bytes(json: &[u8], origin: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| {
            Error::Tokenizer(format!("{origin}: the tokenizer its metadata describes does not load: {e}"))
        })?;
        Ok(Self::new(inner))
    }

    fn new(inner: tokenizers::Tokenizer) -> Self {
        let stop_ids = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| inner.token_to_id(t)).collect();
        Tokenizer { inner, stop_ids }
    }

    /// Encodes `text` as is: special-token strings such as `<|im_start|>` map to their
    /// single ids, nothing (no BOS) is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, keeping special tokens out of the output.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(format!("cannot decode ids: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Renders messages in ChatML and opens the assistant's turn:
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message, then `<|im_start|>assistant\n`.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        if self.token_to_id("<|im_start|>").is_none() || self.token_to_id("<|im_end|>").is_none() {
            return Err(Error::Tokenizer(
                "this tokenizer has no <|im_start|>/<|im_end|> tokens, so it cannot use the ChatML chat format".into(),
            ));
        }
        Ok(chatml(messages))
    }
}

/// ChatML text for `messages` followed by the opened assistant turn.
pub fn chatml(messages: &[Message]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role);
        s.push('\n');
        s.push_str(m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Turns a growing list of generated ids into text pieces as they become complete:
/// a byte-level BPE token can end in the middle of a UTF-8 character, so a piece is
/// only released once it no longer ends in a replacement character.
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        // Held back (not lost) if the decoded prefix ever shifts under `emitted`.
        let piece = text.get(self.emitted..).filter(|p| !p.is_empty()).map(str::to_string);
        if piece.is_some() {
            self.emitted = text.len();
        }
        Ok(piece)
    }

    /// The text `id` would add after what is pushed, without pushing it (empty while
    /// a character is incomplete).
    pub fn peek(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids);
        self.ids.pop();
        let text = text?;
        Ok(text.get(self.emitted..).filter(|p| !p.ends_with('\u{FFFD}')).unwrap_or_default().to_string())
    }
}
