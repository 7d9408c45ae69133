//! The OpenAI wire format: requests parsed strictly (a parameter we do not honour is a
//! 400 that names it, never silently ignored), errors in OpenAI's error object, and
//! the tool-call text convention shared with the tool-call baseline
//! (`bench::toolcall`): the model writes `{"tool": "<name>", "arguments": {...}}`.

use serde_json::{json, Map, Value};

use crate::bench::toolcall::{clip, parse_call, Call};
use crate::sampling::SamplingParams;

/// Stop sequences per request, as OpenAI allows.
const MAX_STOPS: usize = 4;
/// Longest stop sequence, in bytes: each generated piece is searched for them.
const MAX_STOP_LEN: usize = 256;
/// Messages per chat request; each becomes a ChatML block.
const MAX_MESSAGES: usize = 1024;
const MAX_TOOLS: usize = 128;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for a 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }
    pub fn unsupported(param: &str, why: &str) -> Self {
        // The name may be any key of the body, of any length.
        let param = clip(param);
        let mut e = Self::invalid(Some(&param), format!("parameter `{param}` is not supported: {why}"));
        e.code = Some("unsupported_parameter");
        e
    }
    pub fn status(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into(), param: None, code: None, retry_after: None }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// One chat message as the model will see it (tool calls already written as text).
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

#[derive(Clone, Debug)]
pub enum Input {
    Chat(Vec<ChatMessage>),
    Text(String),
}

#[derive(Clone, Debug)]
pub struct Parsed {
    pub input: Input,
    pub model: Option<String>,
    /// None: up to the context window.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Offered to the model (empty when none, or when tool_choice is "none").
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
}

/// Parameters that are accepted only at their default value, with that value.
fn at_default(key: &str, v: &Value) -> Option<bool> {
    Some(match key {
        "n" | "best_of" => v.as_u64() == Some(1),
        "frequency_penalty" | "presence_penalty" => v.as_f64() == Some(0.0),
        "logprobs" | "echo" => v.as_bool() == Some(false),
        "parallel_tool_calls" => v.is_boolean(),
        _ => return None,
    })
}

/// Parses a /v1/chat/completions (`chat`) or /v1/completions body.
pub fn parse(body: &[u8], chat: bool) -> Result<Parsed, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid(None, "the request body must be a JSON object"));
    };
    // Explicit nulls mean "not given", as in OpenAI's API.
    let obj: Map<String, Value> = obj.into_iter().filter(|(_, v)| !v.is_null()).collect();
    const COMMON: &[&str] =
        &["model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options", "user"];
    let own: &[&str] =
        if chat { &["messages", "max_completion_tokens", "tools", "tool_choice"] } else { &["prompt"] };
    for (k, val) in &obj {
        if COMMON.contains(&k.as_str()) || own.contains(&k.as_str()) {
            continue;
        }
        match at_default(k, val) {
            Some(true) => {}
            Some(false) => {
                return Err(ApiError::unsupported(
                    k,
                    &format!("only its default value is, got {}", shown(val)),
                ))
            }
            None => return Err(ApiError::unsupported(k, "pimoe does not implement it")),
        }
    }
    let input = if chat {
        Input::Chat(messages(obj.get("messages").ok_or_else(|| missing("messages"))?)?)
    } else {
        Input::Text(prompt(obj.get("prompt").ok_or_else(|| missing("prompt"))?)?)
    };
    let model = match obj.get("model") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid(Some("model"), "`model` must be a string")),
        None => None,
    };
    let max_key =
        if obj.contains_key("max_completion_tokens") { "max_completion_tokens" } else { "max_tokens" };
    let max_tokens = match obj.get(max_key) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) | None => {
                return Err(ApiError::invalid(
                    Some(max_key),
                    format!("`{max_key}` must be a positive integer, got {}", shown(v)),
                ))
            }
            // Beyond the address space is the same as "to the end of the context".
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        },
    };
    // Checked as given, before f32 rounding turns 1e308 into inf or 1e-50 into 0.
    let float = |key: &str, default: f64, ok: fn(f64) -> bool, range: &str| match obj.get(key) {
        None => Ok(default),
        Some(v) => v.as_f64().filter(|&x| ok(x)).ok_or_else(|| {
            ApiError::invalid(Some(key), format!("`{key}` must be a number in {range}, got {}", shown(v)))
        }),
    };
    let temperature = float("temperature", 1.0, |t| (0.0..=2.0).contains(&t), "[0, 2]")? as f32;
    // A top_p under f32's range still means "the likeliest token only".
    let top_p = (float("top_p", 1.0, |p| p > 0.0 && p <= 1.0, "(0, 1]")? as f32).max(f32::MIN_POSITIVE);
    let seed = match obj.get("seed") {
        None => 0,
        Some(v) => v.as_u64().or_else(|| v.as_i64().map(|i| i as u64)).ok_or_else(|| {
            ApiError::invalid(Some("seed"), format!("`seed` must be an integer, got {}", shown(v)))
        })?,
    };
    let stop = match obj.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            a.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                ApiError::invalid(Some("stop"), "`stop` must be a string or a list of strings")
            })?
        }
        Some(_) => {
            return Err(ApiError::invalid(Some("stop"), "`stop` must be a string or a list of strings"))
        }
    };
    let longest = stop.iter().map(String::len).max().unwrap_or(1);
    if stop.len() > MAX_STOPS || longest > MAX_STOP_LEN || stop.iter().any(String::is_empty) {
        let shortest = stop.iter().map(String::len).min().unwrap_or(1);
        return Err(ApiError::invalid(
            Some("stop"),
            format!(
                "`stop` takes at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_LEN} bytes, got {} \
                 strings of {shortest} to {longest} bytes",
                stop.len()
            ),
        ));
    }
    let stream = match obj.get("stream") {
        None => false,
        Some(v) => {
            v.as_bool().ok_or_else(|| ApiError::invalid(Some("stream"), "`stream` must be a boolean"))?
        }
    };
    let include_usage = match obj.get("stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                Some("stream_options"),
                "`stream_options` is only allowed with `stream: true`",
            ))
        }
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| *k != "include_usage") {
                return Err(ApiError::unsupported(
                    &format!("stream_options.{k}"),
                    "pimoe does not implement it",
                ));
            }
            match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::invalid(
                        Some("stream_options"),
                        "`include_usage` must be a boolean",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(Some("stream_options"), "`stream_options` must be an object"))
        }
    };
    let mut tools = match obj.get("tools") {
        None => Vec::new(),
        Some(v) => parse_tools(v)?,
    };
    let tool_choice = match obj.get("tool_choice") {
        None => ToolChoice::Auto,
        Some(v) => parse_tool_choice(v, &tools)?,
    };
    if tool_choice == ToolChoice::None {
        tools.clear();
    }
    Ok(Parsed {
        input,
        model,
        max_tokens,
        // OpenAI's temperature 0 is greedy, as ours.
        sampling: SamplingParams { temperature, top_k: 0, top_p, seed },
        stop,
        stream,
        include_usage,
        tools,
        tool_choice,
    })
}

/// A value from the body, as quoted back in an error.
fn shown(v: &Value) -> String {
    clip(&v.to_string()).into_owned()
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(Some(param), format!("missing required parameter `{param}`"))
}

fn prompt(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_string())
        }
        Value::Array(_) => Err(ApiError::unsupported(
            "prompt",
            "only one prompt string per request (a list of prompts or of token ids is not supported)",
        )),
        _ => Err(ApiError::invalid(Some("prompt"), "`prompt` must be a string")),
    }
}

/// A message's content: a string, or a list of text parts.
fn content(v: Option<&Value>, i: usize) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::unsupported(
                            &param,
                            &format!("only text parts are, got a part of type {}", clip(kind.unwrap_or("?"))),
                        ))
                    }
                }
            }
            Ok(s)
        }
        Some(_) => {
            Err(ApiError::invalid(Some(&param), format!("`{param}` must be a string or a list of parts")))
        }
    }
}

fn messages(v: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let Value::Array(list) = v else {
        return Err(ApiError::invalid(Some("messages"), "`messages` must be a list"));
    };
    if list.is_empty() || list.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("`messages` must hold 1 to {MAX_MESSAGES} messages, got {}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(
                Some(&format!("messages[{i}].role")),
                format!("messages[{i}] has no `role` string"),
            )
        })?;
        let role = match role {
            "developer" => "system",
            "system" | "user" | "assistant" | "tool" => role,
            other => {
                return Err(ApiError::invalid(
                    Some(&format!("messages[{i}].role")),
                    format!("unknown role {:?} (system, developer, user, assistant or tool)", clip(other)),
                ))
            }
        };
        let mut text = content(m.get("content"), i)?;
        if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
            let calls = calls.as_array().filter(|_| role == "assistant").ok_or_else(|| {
                ApiError::invalid(
                    Some(&format!("messages[{i}].tool_calls")),
                    "tool_calls must be a list on an assistant message",
                )
            })?;
            for c in calls {
                let f = c.get("function");
                let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(
                        Some(&format!("messages[{i}].tool_calls")),
                        "a tool call without function.name",
                    )
                })?;
                text.push_str(&call_text(name, f.and_then(|f| f.get("arguments")).and_then(Value::as_str)));
            }
        }
        out.push(ChatMessage { role: role.to_string(), content: text });
    }
    Ok(out)
}

fn parse_tools(v: &Value) -> Result<Vec<Tool>, ApiError> {
    let list = v.as_array().ok_or_else(|| ApiError::invalid(Some("tools"), "`tools` must be a list"))?;
    if list.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            Some("tools"),
            format!("`tools` holds at most {MAX_TOOLS} tools, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::unsupported(
                    &format!("tools[{i}].type"),
                    "only \"function\" tools are",
                ));
            }
            let f = t.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(Some(&format!("tools[{i}].function.name")), "a tool needs function.name")
            })?;
            Ok(Tool {
                name: name.to_string(),
                description: f
                    .and_then(|f| f.get("description"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                parameters: f.and_then(|f| f.get("parameters")).filter(|p| !p.is_null()).cloned(),
            })
        })
        .collect()
}

fn parse_tool_choice(v: &Value, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match v.as_str() {
        Some("none") => ToolChoice::None,
        Some("auto") => ToolChoice::Auto,
        Some("required") => ToolChoice::Required,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("tool_choice"),
                format!("unknown tool_choice {:?}", clip(other)),
            ))
        }
        None => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if tools.iter().any(|t| t.name == name) => ToolChoice::Named(name.to_string()),
            Some(name) => {
                return Err(ApiError::invalid(
                    Some("tool_choice"),
                    format!("tool_choice names {:?}, which is not in `tools`", clip(name)),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    Some("tool_choice"),
                    "tool_choice must be a string or {\"type\": \"function\", ...}",
                ))
            }
        },
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(ApiError::invalid(
            Some("tool_choice"),
            "tool_choice asks for a tool but `tools` is empty",
        ));
    }
    Ok(choice)
}

/// How a tool call reads in the model's text: the baseline's `{"tool": "<name>"}`,
/// with the arguments when there are any.
pub fn call_text(name: &str, arguments: Option<&str>) -> String {
    let args = arguments
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()));
    let name = Value::from(name);
    match args {
        Some(a) => format!("{{\"tool\": {name}, \"arguments\": {a}}}"),
        None => format!("{{\"tool\": {name}}}"),
    }
}

/// The system text that offers `tools` to the model, in the baseline's call format.
pub fn tools_system(tools: &[Tool], choice: &ToolChoice) -> String {
    let mut s = String::from(
        "You have tools. To use one, reply with only a JSON tool call: {\"tool\": \"<name>\"} \
         or {\"tool\": \"<name>\", \"arguments\": {...}}. The tool's result comes back as the next message.",
    );
    match choice {
        ToolChoice::Required => s.push_str(" You must call a tool."),
        ToolChoice::Named(n) => s.push_str(&format!(" You must call the tool \"{n}\".")),
        _ => {}
    }
    s.push_str(" The tools:");
    for t in tools {
        s.push_str(&format!("\n- \"{}\"", t.name));
        if !t.description.is_empty() {
            s.push_str(&format!(": {}", t.description));
        }
        if let Some(p) = &t.parameters {
            s.push_str(&format!(" Arguments: {p}"));
        }
    }
    s
}

/// A tool call the model wrote: the text holds nothing but one JSON object naming
/// one of `tools`. Returns the tool's name and its arguments as a JSON string.
pub fn tool_call(text: &str, tools: &[Tool]) -> Option<(String, String)> {
    let start = text.find('{')?;
    if !text[..start].trim().is_empty() {
        return None;
    }
    let Call::Found { end, tool: Some(name) } = parse_call(text) else { return None };
    if !text[end..].trim().is_empty() || !tools.iter().any(|t| t.name == name) {
        return None;
    }
    let v: Value = serde_json::from_str(&text[start..end]).ok()?;
    let args =
        v.get("arguments").filter(|a| a.is_object()).map_or_else(|| "{}".to_string(), Value::to_string);
    Some((name, args))
}

/// Whether generation can stop: the text already holds a complete tool call.
pub fn call_complete(text: &str) -> bool {
    matches!(parse_call(text), Call::Found { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Parsed, ApiError> {
        parse(body.to_string().as_bytes(), true)
    }

    #[test]
    fn unknown_and_non_default_parameters_are_named() {
        let base = json!({"messages": [{"role": "user", "content": "hi"}]});
        let mut b = base.clone();
        b["logit_bias"] = json!({"1": 2});
        let e = chat(b).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("logit_bias")));
        let mut b = base.clone();
        b["n"] = json!(2);
        assert!(chat(b).unwrap_err().message.contains("`n`"));
        let mut b = base.clone();
        b["n"] = json!(1);
        b["frequency_penalty"] = json!(0);
        assert!(chat(b).is_ok());
        let mut b = base;
        b["max_tokens"] = json!(0);
        assert_eq!(chat(b).unwrap_err().param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn tool_calls_round_trip_through_text() {
        let tools = vec![Tool { name: "dc".into(), description: String::new(), parameters: None }];
        assert_eq!(tool_call(" {\"tool\": \"dc\"}\n", &tools), Some(("dc".into(), "{}".into())));
        assert_eq!(
            tool_call("{\"tool\": \"dc\", \"arguments\": {\"a\": 1}}", &tools).unwrap().1,
            "{\"a\":1}"
        );
        assert_eq!(tool_call("The answer {\"tool\": \"dc\"}", &tools), None);
        assert_eq!(tool_call("{\"tool\": \"ac\"}", &tools), None);
        assert_eq!(call_text("dc", Some("{}")), "{\"tool\": \"dc\"}");
        assert!(!call_complete("{\"tool\": \"d"));
        assert!(call_complete("{\"tool\": \"dc\"}"));
    }
}
