//! The composition manifest: one JSON file that names the reasoning LLM, the router,
//! and each computation expert with its T2C module, input order and result format.
//! Paths are relative to the manifest. Every field is checked when the file is read
//! and unknown fields are errors, so a typo never silently falls back to a default.
//!
//! ```json
//! {
//!   "llm": "../smollm2-135m-instruct",
//!   "router": { "kind": "trigger", "triggers": [{ "text": "SoH is ", "expert": "soh" }],
//!               "policy": { "refractory": 4, "max_firings": 2 } },
//!   "experts": [{
//!     "name": "soh",
//!     "t2c": { "kind": "extract", "pattern": "list[11] after \"is\"; number after \"second\"; braced after \") is\"" },
//!     "order": "0..11 | 12, 11",
//!     "expert": { "kind": "deeponet", "weights": "soh.safetensors",
//!                 "branch": [11, 2048, 1024, 512, 256, 128, 64, 10],
//!                 "trunk": [2, 784, 512, 256, 128, 64, 10] },
//!     "format": { "template": "{value:.6f}", "conclusions": [{ "below": 0.8, "text": " (replace it)" }] }
//!   }],
//!   "after_result": "sentence",
//!   "on_failure": "[{expert} could not compute this: {reason}]"
//! }
//! ```
//! The README documents every field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The reasoning LLM's model directory.
    pub llm: PathBuf,
    pub router: RouterSpec,
    pub experts: Vec<ExpertSpec>,
    /// How an answer goes on after an expert's result (default: "continue").
    #[serde(default)]
    pub after_result: AfterResult,
    /// What stands in the answer where a fired expert could not compute its result
    /// (default [`DEFAULT_ON_FAILURE`]); the answer then ends.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// The text that replaces a result no expert could compute: `{expert}` is the
/// expert's name, `{reason}` why it failed. The model's own number is never left
/// standing in its place, since a reader could not tell it from a computed one.
pub const DEFAULT_ON_FAILURE: &str = "[{expert} could not compute this: {reason}]";

/// `template` with its `{expert}` and `{reason}` filled in; the placeholders are
/// checked at load by [`check_on_failure`].
pub fn render_on_failure(template: &str, expert: &str, reason: &str) -> String {
    template.replace("{expert}", expert).replace("{reason}", reason)
}

/// Refuses an `on_failure` template with a placeholder other than `{expert}` and
/// `{reason}` (a typo would otherwise show as literal braces in answers).
pub fn check_on_failure(template: &str) -> std::result::Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| format!("an unclosed '{{' in {template:?}"))?;
        let name = &rest[open + 1..open + close];
        if name != "expert" && name != "reason" {
            return Err(format!(
                "unknown placeholder {{{name}}} in {template:?} (only {{expert}} and {{reason}})"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// What the LLM does after an expert's result is in the answer: `"sentence"` ends the
/// answer with the sentence that carries the result (at its closing punctuation, or
/// at a line break), `"continue"` lets it write on until its own end or the token
/// budget, `{"max_tokens": N}` lets it add at most N tokens. "continue" is the
/// default because a composition that fires more than once per answer needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AfterResult {
    Sentence,
    #[default]
    Continue,
    MaxTokens(usize),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RouterSpec {
    /// The reference's router: its own embedding table, mean over the generated
    /// tokens, Linear-ReLU-Linear, sigmoid.
    Piern {
        weights: PathBuf,
        /// Output j fires experts[j] (one name: the reference's single gate).
        experts: Vec<String>,
        /// Rows of the embedding table; default the LLM's vocab_size. The reference's
        /// has len(tokenizer) rows (151,665 for Qwen2.5), fewer than the model's padded
        /// 151,936; a token past the table is then an error.
        #[serde(default)]
        vocab: Option<usize>,
        #[serde(default = "d_1536")]
        embed_dim: usize,
        #[serde(default = "d_128")]
        hidden: usize,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        policy: PolicySpec,
    },
    /// A gate on the LLM's last hidden state of the current token.
    HiddenGate {
        weights: PathBuf,
        experts: Vec<String>,
        /// None: one linear layer; Some(n): H -> n -> outputs.
        #[serde(default)]
        inner: Option<usize>,
        activation: crate::pimoe::router::GateActivation,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        policy: PolicySpec,
    },
    /// Fires when the generated text ends with one of the strings.
    Trigger {
        triggers: Vec<TriggerSpec>,
        #[serde(default)]
        policy: PolicySpec,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Fire when the probability is above this (default 0.5).
    pub threshold: Option<f32>,
    /// Tokens after an injected result during which the router does not fire.
    pub refractory: Option<usize>,
    /// Firings per answer at most (default: no limit).
    pub max_firings: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    pub text: String,
    pub expert: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertSpec {
    pub name: String,
    pub t2c: T2cSpec,
    /// How T2C's numbers become the expert's inputs, e.g. "0..11 | 12, 11";
    /// default: in order.
    #[serde(default)]
    pub order: Option<String>,
    pub expert: ModelSpec,
    pub format: FormatSpec,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum T2cSpec {
    /// Exact: numbers read from the context by a `pattern` (see t2c.rs), or a power-flow
    /// question in the grid text form (`grid`: `dc` for a linear-solve expert, `ac` for
    /// a power-flow expert; see src/grid/). Exactly one of the two.
    Extract {
        #[serde(default)]
        pattern: Option<String>,
        #[serde(default)]
        grid: Option<crate::grid::Analysis>,
    },
    /// Learned: mean-pooled last hidden states over the context ->
    /// Linear-ReLU-Linear -> outputs numbers. The hidden states are the reasoning
    /// LLM's own (already computed, no second copy) unless `backbone` names a
    /// separate model directory, as in the reference (same tokenizer required).
    Piern {
        weights: PathBuf,
        #[serde(default)]
        backbone: Option<PathBuf>,
        outputs: usize,
        #[serde(default = "d_128")]
        inner: usize,
        #[serde(default)]
        prefix: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    Deeponet {
        weights: PathBuf,
        branch: Vec<usize>,
        trunk: Vec<usize>,
        #[serde(default = "relu")]
        activation: String,
        #[serde(default = "f64_name")]
        precision: String,
    },
    Mlp {
        weights: PathBuf,
        widths: Vec<usize>,
        #[serde(default = "relu")]
        activation: String,
        #[serde(default = "f64_name")]
        precision: String,
        #[serde(default)]
        prefix: Option<String>,
    },
    LinearSolve {
        n: usize,
    },
    /// AC power flow by Newton-Raphson (src/pimoe/experts/power_flow.rs).
    PowerFlow {
        #[serde(default = "d_max_buses")]
        max_buses: usize,
        #[serde(default = "d_max_branches")]
        max_branches: usize,
        #[serde(default = "d_tolerance")]
        tolerance: f64,
        #[serde(default = "d_max_iterations")]
        max_iterations: usize,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// Text with placeholders: {value} (the first output), {0}, {1}, ... (one
    /// output), {values} (all, comma separated), {conclusion}; each may carry a
    /// precision, {value:.6f} or {values:.3e}.
    pub template: String,
    /// Checked in order against the first output; the first that holds supplies
    /// {conclusion} (or is appended when the template has no {conclusion}).
    #[serde(default)]
    pub conclusions: Vec<ConclusionSpec>,
}

/// A conclusion holds when the value is `below` x, `at_least` x or `above` x (at most
/// one of them); with none it always holds, a fallback for the end of the list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConclusionSpec {
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub above: Option<f64>,
    pub text: String,
}

fn d_1536() -> usize {
    1536
}
fn d_128() -> usize {
    128
}
fn d_max_buses() -> usize {
    crate::pimoe::experts::power_flow::DEFAULT_MAX_BUSES
}
fn d_max_branches() -> usize {
    crate::pimoe::experts::power_flow::DEFAULT_MAX_BRANCHES
}
fn d_tolerance() -> f64 {
    crate::pimoe::experts::power_flow::DEFAULT_TOLERANCE
}
fn d_max_iterations() -> usize {
    crate::pimoe::experts::power_flow::DEFAULT_MAX_ITERATIONS
}
fn relu() -> String {
    "relu".into()
}
fn f64_name() -> String {
    "f64".into()
}

impl Manifest {
    /// Reads and checks `path`; relative paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<(Manifest, PathBuf)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((Self::parse(&text, path)?, base))
    }

    /// Parses and checks a manifest's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::Config { path: path.into(), msg: format!("manifest: {e}") })?;
        m.validate().map_err(|msg| Error::Config { path: path.into(), msg: format!("manifest: {msg}") })?;
        Ok(m)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.experts.is_empty() {
            return Err("`experts` is empty: a composition needs at least one expert".into());
        }
        for (i, e) in self.experts.iter().enumerate() {
            if e.name.is_empty() {
                return Err(format!("experts[{i}].name is empty"));
            }
            if self.experts[..i].iter().any(|p| p.name == e.name) {
                return Err(format!("experts[{i}].name `{}` is used twice", e.name));
            }
            if let T2cSpec::Extract { pattern, grid } = &e.t2c {
                match (pattern, grid) {
                    (Some(_), Some(_)) => {
                        return Err(format!("experts[{i}].t2c: give `pattern` or `grid`, not both"))
                    }
                    (None, None) => {
                        return Err(format!("experts[{i}].t2c: extract needs `pattern` or `grid`"))
                    }
                    _ => {}
                }
            }
            for c in &e.format.conclusions {
                if [c.below, c.at_least, c.above].iter().flatten().count() > 1 {
                    return Err(format!(
                        "experts[{i}].format.conclusions: give one of `below`, `at_least`, `above`"
                    ));
                }
            }
        }
        let known = |name: &str, field: &str| -> std::result::Result<(), String> {
            if self.experts.iter().any(|e| e.name == name) {
                Ok(())
            } else {
                Err(format!("{field} names expert `{name}`, which is not in `experts`"))
            }
        };
        match &self.router {
            RouterSpec::Piern { experts, .. } | RouterSpec::HiddenGate { experts, .. } => {
                if experts.is_empty() {
                    return Err("router.experts is empty".into());
                }
                experts.iter().try_for_each(|n| known(n, "router.experts"))?;
            }
            RouterSpec::Trigger { triggers, .. } => {
                if triggers.is_empty() {
                    return Err("router.triggers is empty".into());
                }
                for (i, t) in triggers.iter().enumerate() {
                    if t.text.is_empty() {
                        return Err(format!("router.triggers[{i}].text is empty"));
                    }
                    known(&t.expert, &format!("router.triggers[{i}].expert"))?;
                }
            }
        }
        Ok(())
    }

    pub fn expert_index(&self, name: &str) -> usize {
        self.experts.iter().position(|e| e.name == name).expect("validated")
    }
}
