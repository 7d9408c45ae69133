//! Text-to-computation (T2C): maps a sequence's context to the f64 inputs of an
//! expert, then [`InputOrder`] arranges them into the expert's input groups.
//!
//! Two kinds:
//! - [`ExtractPattern`] (`extract`, exact): reads the numbers out of the context text
//!   by a declared pattern. Each number is parsed with Rust's `str::parse::<f64>`, so
//!   the expert sees exactly the value written (0.7999999999999999 stays that). A
//!   text that does not fit the pattern is an [`ExtractError`] naming the item and
//!   what was found, which the scheduler writes into the answer's trace; nothing is
//!   ever guessed.
//! - [`LearnedT2c`] (`piern`, learned): the reference's head. Mean of the last hidden
//!   states over the context (H) -> Linear(H, 128) -> ReLU -> Linear(128, n), in f64
//!   arithmetic over the f32 weights. Tensor names follow the reference's
//!   `state_dict`: `{prefix}head.0.weight` (128, H), `{prefix}head.0.bias` (128),
//!   `{prefix}head.2.weight` (n, 128), `{prefix}head.2.bias` (n).
//!
//! # The extract pattern language
//!
//! A pattern is a list of items separated by `;`, matched in order over the text.
//! A cursor starts at the beginning of the text; each item moves it forward:
//!
//! ```text
//! pattern := item { ";" item } [ ";" ]
//! item    := [ name "=" ] kind [ "[" count "]" ] [ "after" string ]
//! kind    := "number" | "list" | "braced"
//! string  := '"' { any char but '"' and '\', or \" or \\ } '"'
//! name    := letters, digits, '_' (used in errors and traces)
//! ```
//!
//! 1. `after "anchor"`: the cursor moves to the end of the first occurrence of the
//!    anchor at or after the cursor; if there is none, the item fails with
//!    `missing anchor`. Without `after`, the item must start at the cursor.
//! 2. Whitespace is skipped, then the item must start right there:
//!    - `number`: one number.
//!    - `list`: `[` numbers separated by `,` `]` (whitespace allowed around every
//!      part; `[]` is an empty list; no trailing comma). `list[n]` requires exactly
//!      n numbers. `count` is only for lists.
//!    - `braced`: `{` number `}` (whitespace allowed inside).
//! 3. The cursor moves past the item.
//!
//! A number is `[+-] digits [. digits] [(e|E) [+-] digits]` with at least one digit
//! before or after the point (`.5`, `-2`, `1e-3`, `0.7999999999999999`); a point
//! with no digit after it ends a bare number (`second 5.` is 5 and a full stop) and
//! belongs to a number in a list or braces (`[1., 0.5]`, numpy's style). It must
//! not run into an ASCII letter or `_`, or a `.` followed by one (`3.5.2`, `0x10`,
//! `12abc` are malformed, not cut short), and a bare `number` must not be followed
//! by `,` and a digit (`1,000`: thousands separators are not read). No `inf`, `nan`,
//! or full-width digits or signs.
//!
//! The battery task, in Chinese and in our English rendering:
//!
//! ```text
//! currents = list[11] after "电流数据为"; t = number after "请计算电池第"; i_t = braced after "电流数据为"
//! currents = list[11] after "measured every 12 minutes is"; t = number after "SoH after second"; i_t = braced after ") is"
//! ```
//!
//! The outputs are the items' numbers in order (a list contributes all of its), each
//! with the byte range of its text, for the trace.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;

use super::experts::Expert;
use super::router::Mlp;
use crate::error::{Error, Result};
use crate::grid::{self, Analysis};
use crate::model::safetensors::SafetensorFiles;

// ----------------------------------------------------------------------------
// Extract patterns
// ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Number,
    List,
    Braced,
}

impl ItemKind {
    fn word(self) -> &'static str {
        match self {
            ItemKind::Number => "number",
            ItemKind::List => "list",
            ItemKind::Braced => "braced",
        }
    }
}

/// One item of a pattern; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ExtractItem {
    #[serde(default)]
    pub name: Option<String>,
    pub kind: ItemKind,
    #[serde(default)]
    pub after: Option<String>,
    /// For lists: the exact number of values.
    #[serde(default)]
    pub count: Option<usize>,
}

/// A declared extraction: items matched in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractPattern {
    items: Vec<ExtractItem>,
}

/// What an extraction found: the values in order, and where each was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Extraction {
    pub values: Vec<f64>,
    /// Byte range in the text of each value's digits.
    pub spans: Vec<Range<usize>>,
}

/// Why a text did not fit the pattern. Kept as data for the answer's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractError {
    /// Index of the failing item in the pattern.
    pub item: usize,
    /// The item as written in the pattern language, with its name.
    pub label: String,
    /// Byte offset in the text where the problem is.
    pub at: usize,
    pub problem: Problem,
    /// Up to 24 characters of the text at `at` ("end of text" at the end).
    pub found: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    MissingAnchor(String),
    ExpectedNumber,
    /// The text of the would-be number.
    MalformedNumber(String),
    /// A number too large for f64 (its text).
    OutOfRange(String),
    /// A delimiter ('[', ']', ',', '{', '}') was expected.
    Expected(&'static str),
    WrongCount {
        expected: usize,
        found: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingAnchor(a) => write!(f, "missing anchor {a:?}"),
            Problem::ExpectedNumber => write!(f, "expected a number"),
            Problem::MalformedNumber(t) => write!(f, "malformed number {t:?}"),
            Problem::OutOfRange(t) => write!(f, "the number {t:?} is beyond f64's range"),
            Problem::Expected(what) => write!(f, "expected {what}"),
            Problem::WrongCount { expected, found } => {
                write!(f, "expected {expected} numbers, found {found}")
            }
        }
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t2c extract: item {} ({}): {} at byte {}, found {}",
            self.item, self.label, self.problem, self.at, self.found
        )
    }
}

impl std::error::Error for ExtractError {}

impl fmt::Display for ExtractItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.name {
            write!(f, "{n} = ")?;
        }
        f.write_str(self.kind.word())?;
        if let Some(c) = self.count {
            write!(f, "[{c}]")?;
        }
        if let Some(a) = &self.after {
            write!(f, " after \"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        Ok(())
    }
}

impl fmt::Display for ExtractPattern {
    /// The pattern in the pattern language; `parse` reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl ExtractPattern {
    /// Checks the items: at least one, no empty anchors, counts only on lists and
    /// at most `MAX_VALUES` (so that `output_len` cannot overflow).
    /// The error is a message for the manifest loader to place (file, field).
    pub fn new(items: Vec<ExtractItem>) -> std::result::Result<Self, String> {
        if items.is_empty() {
            return Err("an extract pattern needs at least one item".into());
        }
        for (i, it) in items.iter().enumerate() {
            if it.after.as_deref() == Some("") {
                return Err(format!("item {i} ({it}): an empty anchor; leave `after` out instead"));
            }
            if it.count.is_some() && it.kind != ItemKind::List {
                return Err(format!("item {i} ({it}): a count is only for lists"));
            }
            if let Some(n) = it.count.filter(|&n| n > MAX_VALUES) {
                return Err(format!("item {i} ({it}): count {n} is above the limit {MAX_VALUES}"));
            }
        }
        Ok(ExtractPattern { items })
    }

    /// Reads the pattern language (see the module doc).
    pub fn parse(src: &str) -> std::result::Result<Self, String> {
        let mut items = Vec::new();
        for (i, part) in split_items(src)?.into_iter().enumerate() {
            items.push(parse_item(&part).map_err(|e| format!("pattern item {i} `{}`: {e}", part.trim()))?);
        }
        ExtractPattern::new(items)
    }

    pub fn items(&self) -> &[ExtractItem] {
        &self.items
    }

    /// The number of values every successful extraction gives, when each list has a
    /// count.
    pub fn output_len(&self) -> Option<usize> {
        self.items.iter().map(|it| if it.kind == ItemKind::List { it.count } else { Some(1) }).sum()
    }

    /// Extracts the values from `text`.
    pub fn extract(&self, text: &str) -> std::result::Result<Extraction, ExtractError> {
        let mut out = Extraction { values: Vec::new(), spans: Vec::new() };
        let mut pos = 0;
        for (i, item) in self.items.iter().enumerate() {
            let fail = |at: usize, problem: Problem| ExtractError {
                item: i,
                label: item.to_string(),
                at,
                problem,
                found: excerpt(text, at),
            };
            if let Some(anchor) = &item.after {
                match text[pos..].find(anchor.as_str()) {
                    Some(k) => pos += k + anchor.len(),
                    None => return Err(fail(pos, Problem::MissingAnchor(anchor.clone()))),
                }
            }
            let mut s = Scanner { text, pos };
            s.skip_ws();
            match item.kind {
                ItemKind::Number => {
                    let (v, span) = s.number(true).map_err(|(at, p)| fail(at, p))?;
                    out.values.push(v);
                    out.spans.push(span);
                }
                ItemKind::Braced => {
                    s.expect('{', "'{'").map_err(|(at, p)| fail(at, p))?;
                    s.skip_ws();
                    let (v, span) = s.number(false).map_err(|(at, p)| fail(at, p))?;
                    s.skip_ws();
                    s.expect('}', "'}'").map_err(|(at, p)| fail(at, p))?;
                    out.values.push(v);
                    out.spans.push(span);
                }
                ItemKind::List => {
                    let start = s.pos;
                    s.expect('[', "'['").map_err(|(at, p)| fail(at, p))?;
                    s.skip_ws();
                    let mut n = 0;
                    if !s.eat(']') {
                        loop {
                            let (v, span) = s.number(false).map_err(|(at, p)| fail(at, p))?;
                            out.values.push(v);
                            out.spans.push(span);
                            n += 1;
                            s.skip_ws();
                            if s.eat(']') {
                                break;
                            }
                            s.expect(',', "',' or ']'").map_err(|(at, p)| fail(at, p))?;
                            s.skip_ws();
                        }
                    }
                    if let Some(expected) = item.count {
                        if n != expected {
                            return Err(fail(start, Problem::WrongCount { expected, found: n }));
                        }
                    }
                }
            }
            pos = s.pos;
        }
        Ok(out)
    }
}

/// Up to 24 characters of `text` from byte `at`, quoted.
fn excerpt(text: &str, at: usize) -> String {
    let rest = &text[at.min(text.len())..];
    if rest.is_empty() {
        return "end of text".into();
    }
    let cut: String = rest.chars().take(24).collect();
    if cut.len() < rest.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A cursor over the text; every position is a char boundary.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

type ScanResult<T> = std::result::Result<T, (usize, Problem)>;

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }
    fn byte(&self, i: usize) -> u8 {
        *self.text.as_bytes().get(i).unwrap_or(&0)
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char, what: &'static str) -> ScanResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err((self.pos, Problem::Expected(what)))
        }
    }

    /// One number at the cursor (see the module doc for the grammar). `bare`: not
    /// inside a list or braces, where `,` + digit would be a thousands separator.
    fn number(&mut self, bare: bool) -> ScanResult<(f64, Range<usize>)> {
        let start = self.pos;
        let mut i = start;
        if matches!(self.byte(i), b'+' | b'-') {
            i += 1;
        }
        let int_start = i;
        while self.byte(i).is_ascii_digit() {
            i += 1;
        }
        let mut digits = i - int_start;
        // In running text a point continues the number only when a digit follows (or
        // none came before, as in `.5`): `second 5.` is 5 and a full stop. Inside a
        // list or braces `1.` (numpy's style) is the number 1.
        if self.byte(i) == b'.' && (!bare || digits == 0 || self.byte(i + 1).is_ascii_digit()) {
            i += 1;
            let frac_start = i;
            while self.byte(i).is_ascii_digit() {
                i += 1;
            }
            digits += i - frac_start;
        }
        if digits == 0 {
            return Err((start, Problem::ExpectedNumber));
        }
        if matches!(self.byte(i), b'e' | b'E') {
            let mut j = i + 1;
            if matches!(self.byte(j), b'+' | b'-') {
                j += 1;
            }
            if self.byte(j).is_ascii_digit() {
                while self.byte(j).is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
        }
        let next = self.byte(i);
        let runs_on = next.is_ascii_alphanumeric()
            || next == b'_'
            || (next == b'.' && self.byte(i + 1).is_ascii_alphanumeric());
        let thousands = bare && next == b',' && self.byte(i + 1).is_ascii_digit();
        if runs_on || thousands {
            // Show the whole run of number-like characters that follows.
            let mut j = i + 1;
            loop {
                let c = self.byte(j);
                if c.is_ascii_alphanumeric()
                    || c == b'.'
                    || c == b'_'
                    || (c == b',' && self.byte(j + 1).is_ascii_digit())
                {
                    j += 1;
                } else {
                    break;
                }
            }
            return Err((start, Problem::MalformedNumber(self.text[start..j].to_string())));
        }
        let token = &self.text[start..i];
        let v = token.parse::<f64>().map_err(|_| (start, Problem::MalformedNumber(token.to_string())))?;
        // "1e400" parses as infinity: not the number written, and no expert can use it.
        if !v.is_finite() {
            return Err((start, Problem::OutOfRange(token.to_string())));
        }
        self.pos = i;
        Ok((v, start..i))
    }
}

/// Splits on `;` outside quoted strings.
fn split_items(src: &str) -> std::result::Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut in_str = false;
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("non-empty");
        match c {
            '\\' if in_str => {
                cur.push(c);
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
            }
            '"' => {
                in_str = !in_str;
                cur.push(c);
            }
            ';' if !in_str => parts.push(String::new()),
            _ => cur.push(c),
        }
    }
    if in_str {
        return Err("unterminated string".into());
    }
    if parts.last().is_some_and(|p| p.trim().is_empty()) && parts.len() > 1 {
        parts.pop(); // a trailing ';'
    }
    Ok(parts)
}

fn parse_item(src: &str) -> std::result::Result<ExtractItem, String> {
    let mut rest = src.trim();
    let mut name = None;
    if let Some(eq) = rest.find('=') {
        // `=` before any quote: a name.
        if rest[..eq].find('"').is_none() {
            let n = rest[..eq].trim();
            if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(format!("bad name {n:?}"));
            }
            name = Some(n.to_string());
            rest = rest[eq + 1..].trim_start();
        }
    }
    let word_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    let kind = match &rest[..word_end] {
        "number" => ItemKind::Number,
        "list" => ItemKind::List,
        "braced" => ItemKind::Braced,
        other => return Err(format!("unknown kind {other:?}; expected number, list or braced")),
    };
    rest = &rest[word_end..];
    let mut count = None;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or("unclosed '[' in the count")?;
        let c = r[..close].trim();
        count = Some(c.parse::<usize>().map_err(|_| format!("bad count {c:?}"))?);
        rest = &r[close + 1..];
    }
    rest = rest.trim_start();
    let mut after = None;
    if let Some(r) = rest.strip_prefix("after") {
        let r = r.trim_start();
        let (s, tail) = parse_string(r)?;
        after = Some(s);
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected {rest:?}"));
    }
    Ok(ExtractItem { name, kind, after, count })
}

/// A `"..."` string with `\"` and `\\` escapes at the start of `src`; returns it and
/// the text after it.
fn parse_string(src: &str) -> std::result::Result<(String, &str), String> {
    let mut chars = src.char_indices();
    match chars.next() {
        Some((_, '"')) => {}
        _ => return Err("`after` needs a quoted string".into()),
    }
    let mut s = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((s, &src[i + 1..])),
            '\\' => match chars.next() {
                Some((_, d @ ('"' | '\\'))) => s.push(d),
                _ => return Err("only \\\" and \\\\ escapes are allowed".into()),
            },
            _ => s.push(c),
        }
    }
    Err("unterminated string".into())
}

// ----------------------------------------------------------------------------
// Grid questions
// ----------------------------------------------------------------------------

/// The inputs of `expert` for the power-flow question in `context` (the grid text
/// form, src/grid/): the DC system of a linear-solve expert, or the input row of a
/// power-flow expert. `analysis` is what the manifest says this expert answers.
pub fn grid_inputs(
    analysis: Analysis,
    expert: &Expert,
    context: &str,
) -> std::result::Result<Vec<f64>, Refusal> {
    // A question of this expert's analysis on a faulty grid fails here; anything
    // else may be another expert's.
    let (case, question) = grid::parse(context).map_err(|e| match e.analysis {
        Some(a) if a == analysis => Refusal::fails(e.to_string()),
        _ => Refusal::pass_on(e.to_string()),
    })?;
    if question.analysis != analysis {
        return Err(Refusal::pass_on(format!(
            "the question asks for the {} power flow; this expert answers {} questions",
            question.analysis.name(),
            analysis.name()
        )));
    }
    // The question is this expert's: what is wrong with its grid is the answer's failure.
    match expert {
        Expert::LinearSolve(s) => grid::dc_system(&case, &question, s.n()),
        Expert::PowerFlow(p) => p.encode(&case, &question),
        other => Err(format!("a grid question cannot feed a {} expert", other.kind())),
    }
    .map_err(Refusal::fails)
}

/// Why T2C gave an expert no inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// The question is not this expert's kind (another expert may take it); otherwise
    /// it is, and what is wrong with it is final.
    pub pass_on: bool,
}

impl Refusal {
    pub fn pass_on(reason: String) -> Self {
        Refusal { reason, pass_on: true }
    }
    pub fn fails(reason: String) -> Self {
        Refusal { reason, pass_on: false }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

// ----------------------------------------------------------------------------
// Learned T2C
// ----------------------------------------------------------------------------

/// A running mean of hidden state rows (H), for callers that stream the context's
/// rows instead of keeping them.
#[derive(Clone, Debug)]
pub struct MeanPool {
    sum: Vec<f64>, // (H)
    count: usize,
}

impl MeanPool {
    pub fn new(hidden: usize) -> Self {
        MeanPool { sum: vec![0.0; hidden], count: 0 }
    }
    /// Adds rows (n, H).
    pub fn add_rows(&mut self, rows: &[f32]) -> Result<()> {
        let h = self.sum.len();
        if h == 0 || rows.len() % h != 0 {
            return Err(Error::Request(format!(
                "t2c: {} hidden values are not rows of size {h}",
                rows.len()
            )));
        }
        for row in rows.chunks(h) {
            self.sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
        }
        self.count += rows.len() / h;
        Ok(())
    }
    pub fn sum(&self) -> &[f64] {
        &self.sum
    }
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Where the learned head's tensors are and what shapes they must have.
#[derive(Clone, Debug, Deserialize)]
pub struct LearnedT2cConfig {
    /// Prepended to `head.0.weight`, ... ("" for the reference's state_dict).
    #[serde(default)]
    pub prefix: String,
    /// H of the backbone whose hidden states are pooled.
    pub hidden_size: usize,
    /// The reference uses 128.
    #[serde(default = "default_inner")]
    pub inner: usize,
    /// Number of outputs (the reference: 13).
    pub outputs: usize,
}

fn default_inner() -> usize {
    128
}

/// The reference's learned T2C head over mean-pooled hidden states.
#[derive(Clone, Debug)]
pub struct LearnedT2c {
    mlp: Mlp,
}

impl LearnedT2c {
    pub fn new(mlp: Mlp) -> Self {
        LearnedT2c { mlp }
    }
    pub fn load(files: &SafetensorFiles, cfg: &LearnedT2cConfig) -> Result<Self> {
        let mlp =
            Mlp::load(files, &format!("{}head", cfg.prefix), &[cfg.hidden_size, cfg.inner, cfg.outputs])?;
        Ok(LearnedT2c { mlp })
    }
    pub fn hidden_size(&self) -> usize {
        self.mlp.in_dim()
    }
    pub fn outputs(&self) -> usize {
        self.mlp.out_dim()
    }

    /// From the context's hidden rows (tokens, H).
    pub fn from_rows(&self, rows: &[f32]) -> Result<Vec<f64>> {
        let mut pool = MeanPool::new(self.hidden_size());
        pool.add_rows(rows)?;
        self.from_sum(pool.sum(), pool.count())
    }

    /// From a running sum (H) over `count` rows.
    pub fn from_sum(&self, sum: &[f64], count: usize) -> Result<Vec<f64>> {
        let h = self.hidden_size();
        if sum.len() != h {
            return Err(Error::Request(format!("t2c: a sum of {} values for hidden size {h}", sum.len())));
        }
        if count == 0 {
            return Err(Error::Request("t2c: the mean of no hidden rows is undefined".into()));
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
        Ok(self.batch(&mean, 1))
    }

    /// Means (B, H) -> outputs (B, n), for a routed batch.
    pub fn batch(&self, means: &[f64], rows: usize) -> Vec<f64> {
        assert_eq!(means.len(), rows * self.hidden_size(), "t2c batch: means is not (rows, H)");
        self.mlp.forward_f64(means, rows)
    }
}

// ----------------------------------------------------------------------------
// Input order
// ----------------------------------------------------------------------------

/// At most this many values in a `list[n]` count or an input order: hundreds of
/// times what any expert takes (a 64-bus power flow takes a few thousand), so that a
/// typo or a hostile manifest is refused before anything is sized from it.
pub const MAX_VALUES: usize = 1 << 20;

/// Arranges a T2C output into an expert's input groups: group g is
/// `[values[i] for i in groups[g]]`. The reference feeds its 13 outputs as
/// `0..11 | 12, 11`: the first 11 to the branch net, the last two swapped to the
/// trunk net.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<Vec<usize>>")]
pub struct InputOrder {
    groups: Vec<Vec<usize>>,
}

impl TryFrom<Vec<Vec<usize>>> for InputOrder {
    type Error = String;
    fn try_from(groups: Vec<Vec<usize>>) -> std::result::Result<Self, String> {
        InputOrder::new(groups)
    }
}

impl InputOrder {
    pub fn new(groups: Vec<Vec<usize>>) -> std::result::Result<Self, String> {
        if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
            return Err(format!("input order {groups:?}: every group needs at least one index"));
        }
        Ok(InputOrder { groups })
    }

    /// One group 0..n: the values as they are.
    pub fn identity(n: usize) -> Self {
        InputOrder { groups: vec![(0..n).collect()] }
    }

    /// Groups separated by `|`, each a comma list of indices or half-open ranges
    /// `a..b`: `"0..11 | 12, 11"`.
    pub fn parse(src: &str) -> std::result::Result<Self, String> {
        let mut groups = Vec::new();
        let mut len = 0;
        for g in src.split('|') {
            let mut idx = Vec::new();
            for part in g.split(',') {
                let part = part.trim();
                let num = |s: &str| {
                    s.trim().parse::<usize>().map_err(|_| format!("input order {src:?}: bad index {s:?}"))
                };
                if let Some((a, b)) = part.split_once("..") {
                    let (a, b) = (num(a)?, num(b)?);
                    if a >= b {
                        return Err(format!("input order {src:?}: empty range {part:?}"));
                    }
                    // Single indices are bounded by the text's length; ranges are not.
                    if b - a > MAX_VALUES.saturating_sub(len + idx.len()) {
                        return Err(format!(
                            "input order {src:?}: range {part:?} takes it past the limit of {MAX_VALUES} indices"
                        ));
                    }
                    idx.extend(a..b);
                } else {
                    idx.push(num(part)?);
                }
            }
            len += idx.len();
            groups.push(idx);
        }
        InputOrder::new(groups)
    }

    pub fn groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    /// The T2C output length this order needs at least (saturating: an index of
    /// usize::MAX needs more values than any T2C gives, not zero).
    pub fn min_len(&self) -> usize {
        self.groups.iter().flatten().max().map_or(0, |m| m.saturating_add(1))
    }

    /// The groups' values. An index past `values` is an error message.
    pub fn apply(&self, values: &[f64]) -> std::result::Result<Vec<Vec<f64>>, String> {
        if values.len() < self.min_len() {
            return Err(format!(
                "input order {}: needs {} T2C outputs, got {}",
                self,
                self.min_len(),
                values.len()
            ));
        }
        Ok(self.groups.iter().map(|g| g.iter().map(|&i| values[i]).collect()).collect())
    }

    /// The groups' values one after another.
    pub fn apply_flat(&self, values: &[f64]) -> std::result::Result<Vec<f64>, String> {
        Ok(self.apply(values)?.concat())
    }
}

impl fmt::Display for InputOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (gi, g) in self.groups.iter().enumerate() {
            if gi > 0 {
                f.write_str(" | ")?;
            }
            // Runs of consecutive indices print as ranges.
            let mut k = 0;
            let mut first = true;
            while k < g.len() {
                let mut e = k;
                while e + 1 < g.len() && g[e + 1] == g[e] + 1 {
                    e += 1;
                }
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                if e > k {
                    write!(f, "{}..{}", g[k], g[e] + 1)?;
                } else {
                    write!(f, "{}", g[k])?;
                }
                k = e + 1;
            }
        }
        Ok(())
    }
}
