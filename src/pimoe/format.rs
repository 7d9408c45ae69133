//! Turning an expert's numbers into the text that is injected into the answer.
//!
//! A template holds placeholders: `{value}` (the first output), `{0}`, `{1}`, ...
//! (one output), `{values}` (all outputs, ", "-separated) and `{conclusion}`; a number
//! placeholder may carry a precision, `{value:.6f}` or `{values:.3e}`. Without a
//! precision a number prints in Rust's shortest round-trip form. `{{` and `}}` are
//! literal braces. Conclusions are tried in order against the first output; the first
//! that holds fills `{conclusion}`, or is appended if the template has no such slot.

use crate::pimoe::manifest::{ConclusionSpec, FormatSpec};

#[derive(Clone, Debug)]
pub struct ResultFormat {
    parts: Vec<Part>,
    conclusions: Vec<ConclusionSpec>,
    has_conclusion: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Number { which: Which, style: Style },
    Conclusion,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Index(usize),
    All,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Style {
    Shortest,
    Fixed(usize),
    Exp(usize),
}

impl ResultFormat {
    /// Parses a template; `outputs` is the expert's number of outputs, so that an
    /// index past it is an error now rather than at the first answer.
    pub fn new(spec: &FormatSpec, outputs: usize) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = spec.template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => inner.push(ch),
                            None => return Err(format!("template: unclosed `{{{inner}`")),
                        }
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(placeholder(&inner, outputs)?);
                }
                '}' => return Err("template: a lone `}` (write `}}` for a brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let has_conclusion = parts.contains(&Part::Conclusion);
        Ok(ResultFormat { parts, conclusions: spec.conclusions.clone(), has_conclusion })
    }

    pub fn render(&self, outputs: &[f64]) -> String {
        let conclusion = outputs.first().and_then(|&v| {
            self.conclusions
                .iter()
                .find(|c| {
                    c.below.is_none_or(|b| v < b)
                        && c.at_least.is_none_or(|a| v >= a)
                        && c.above.is_none_or(|a| v > a)
                })
                .map(|c| c.text.as_str())
        });
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Conclusion => out.push_str(conclusion.unwrap_or("")),
                Part::Number { which: Which::Index(i), style } => out.push_str(&number(outputs[*i], *style)),
                Part::Number { which: Which::All, style } => {
                    let all: Vec<String> = outputs.iter().map(|&v| number(v, *style)).collect();
                    out.push_str(&all.join(", "));
                }
            }
        }
        if !self.has_conclusion {
            out.push_str(conclusion.unwrap_or(""));
        }
        out
    }
}

fn placeholder(inner: &str, outputs: usize) -> Result<Part, String> {
    let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
    if name == "conclusion" {
        return if spec.is_empty() {
            Ok(Part::Conclusion)
        } else {
            Err("{conclusion} takes no precision".into())
        };
    }
    let which = match name {
        "value" => Which::Index(0),
        "values" => Which::All,
        n => match n.parse::<usize>() {
            Ok(i) if i < outputs => Which::Index(i),
            Ok(i) => return Err(format!("template: {{{i}}} but the expert has {outputs} outputs")),
            Err(_) => return Err(format!("template: unknown placeholder {{{inner}}}")),
        },
    };
    let style = match spec {
        "" => Style::Shortest,
        s => {
            let digits = |d: &str| d.parse::<usize>().ok().filter(|&d| d <= 17);
            match (s.strip_prefix('.'), s.chars().last()) {
                (Some(rest), Some('f')) => digits(&rest[..rest.len() - 1]).map(Style::Fixed),
                (Some(rest), Some('e')) => digits(&rest[..rest.len() - 1]).map(Style::Exp),
                _ => None,
            }
            .ok_or_else(|| format!("template: precision `{s}` in {{{inner}}} is not .Nf or .Ne (N <= 17)"))?
        }
    };
    Ok(Part::Number { which, style })
}

fn number(v: f64, style: Style) -> String {
    match style {
        Style::Shortest => format!("{v}"),
        Style::Fixed(d) => format!("{v:.d$}"),
        Style::Exp(d) => format!("{v:.d$e}"),
    }
}
