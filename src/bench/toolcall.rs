//! The tool-call baseline, built the way multi-agent pipelines usually are: the
//! model writes a tool call as JSON text and its request ends there; the harness
//! parses the call and sends it to the tool, which runs in a separate process
//! (`pimoe expert-server`) behind a pipe; the tool's answer comes back as a new
//! message, and the whole conversation is prefilled again for the model to finish.
//!
//! The call names the tool only. The tool reads its inputs from the conversation
//! (the same text and the same T2C as PiMoE's), which the harness sends along: a
//! model made to copy the grid into JSON arguments would write hundreds of tokens
//! more, so this is the cheaper form of the baseline.
//!
//! Wire format, one JSON object per line each way:
//! `{"id": 7, "tool": "dc-power-flow", "context": "..."}` and
//! `{"id": 7, "result": "-4.351234."}` or `{"id": 7, "error": "..."}`; a bad line gets
//! an error too, its id null when the line does not read as JSON as far as the id.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grid::{render, Analysis, Branch, Bus, BusKind, Case, Quantity, Question};
use crate::model::tokenizer::{chatml, Message};
use crate::pimoe::compose::{Composition, Computed, T2c};
use crate::pimoe::manifest::Manifest;

/// The system message of the baseline's first request: the same task words as
/// `tasks::questions::SYSTEM`, plus the tools (name, when to use it) and the call format.
pub fn tool_system(tools: &[(&str, &str)]) -> String {
    let uses =
        tools.iter().map(|(name, when)| format!("\"{name}\" for {when}")).collect::<Vec<_>>().join(" or ");
    format!(
        "You are a power systems engineer with tools that compute power flows exactly. \
         To use one, reply with only a JSON tool call: {{\"tool\": \"<name>\"}}, where <name> is {uses}. \
         The tool's result comes back as the next message. Then answer in one sentence of the \
         form: The <quantity> is <number> <unit>."
    )
}

/// One worked exchange shown to the model before its question: SmolLM2-135M does
/// not write a tool call from the instructions alone (0 of 2 tried), and does
/// after one example per tool.
#[derive(Clone, Debug)]
pub struct Shot {
    pub user: String,
    pub call: String,
    pub result: String,
    pub answer: String,
}

/// A three-bus grid for the examples; no question set draws from it.
fn example_case() -> Case {
    let bus = |id, kind, pd, qd, pg, vset| Bus { id, kind, pd, qd, pg, vset, gs: 0.0, bs: 0.0 };
    let branch = |from, to, r, x, b| Branch { from, to, r, x, b, tap: 1.0 };
    Case {
        name: "example".into(),
        base_mva: 100.0,
        buses: vec![
            bus(1, BusKind::Slack, 0.0, 0.0, 0.0, 1.02),
            bus(2, BusKind::Pv, 0.0, 0.0, 60.0, 1.01),
            bus(3, BusKind::Pq, 90.0, 30.0, 0.0, 1.0),
        ],
        branches: vec![
            branch(1, 2, 0.01, 0.1, 0.02),
            branch(2, 3, 0.02, 0.2, 0.04),
            branch(1, 3, 0.025, 0.25, 0.05),
        ],
    }
}

/// An example per tool (name, analysis), its result computed by the tool itself.
pub fn shots(comp: &Composition, tools: &[(&str, Analysis)]) -> Result<Vec<Shot>> {
    let case = example_case();
    let mut out = Vec::new();
    for &(name, analysis) in tools {
        let (quantity, what, unit) = match analysis {
            Analysis::Dc => (Quantity::VoltageAngle { bus: 3 }, "voltage angle at bus 3", "degrees"),
            Analysis::Ac => (Quantity::VoltageMagnitude { bus: 3 }, "voltage magnitude at bus 3", "p.u."),
        };
        let user = render(&case, &Question { analysis, quantity });
        let i = comp
            .expert_named(name)
            .ok_or_else(|| Error::Request(format!("the composition has no expert {name:?}")))?;
        match comp.compute(i, std::slice::from_ref(&user), None).pop() {
            Some(Computed::Ok { text, outputs, .. }) => out.push(Shot {
                call: format!("{{\"tool\": \"{name}\"}}"),
                result: text,
                answer: format!("The {what} is {:.6} {unit}.", outputs[0]),
                user,
            }),
            other => return Err(Error::Request(format!("{name} on the worked example: {other:?}"))),
        }
    }
    Ok(out)
}

/// The conversation in ChatML up to the opened assistant turn: system, the
/// examples, the question, and what has been said since (assistant, tool, ...).
pub fn conversation(system: &str, shots: &[Shot], user: &str, since: &[(&str, &str)]) -> String {
    let mut m = vec![Message { role: "system", content: system }];
    for s in shots {
        m.push(Message { role: "user", content: &s.user });
        m.push(Message { role: "assistant", content: &s.call });
        m.push(Message { role: "tool", content: &s.result });
        m.push(Message { role: "assistant", content: &s.answer });
    }
    m.push(Message { role: "user", content: user });
    m.extend(since.iter().map(|&(role, content)| Message { role, content }));
    chatml(&m)
}

/// What the model has written so far, read as a tool call.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// No complete JSON object yet.
    Incomplete,
    /// A complete object ending at byte `end`; `tool` is its "tool" field (None when
    /// it has none: the call is then sent as is and the tool says what is wrong).
    Found { end: usize, tool: Option<String> },
    /// Text at the first '{' that can never become JSON.
    Invalid,
}

pub fn parse_call(text: &str) -> Call {
    let Some(start) = text.find('{') else { return Call::Incomplete };
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(v)) => Call::Found {
            end: start + stream.byte_offset(),
            tool: v.get("tool").and_then(|t| t.as_str()).map(str::to_string),
        },
        Some(Err(e)) if e.is_eof() => Call::Incomplete,
        None => Call::Incomplete,
        Some(Err(_)) => Call::Invalid,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireCall {
    id: u64,
    tool: String,
    context: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireReply {
    /// None (null) only in the error for a line whose id could not be read.
    id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl WireReply {
    fn error(id: Option<u64>, message: String) -> Self {
        WireReply { id, result: None, error: Some(message) }
    }
}

/// A tool's answer to call `id`: the formatted result, or what went wrong.
#[derive(Debug)]
pub struct Reply {
    pub id: u64,
    pub result: std::result::Result<String, String>,
}

/// The manifest's T2C modules and experts, without the LLM: what the tool process
/// holds. Learned T2C heads read the LLM's hidden states, so they cannot be tools.
pub fn load_tools(manifest: &Path) -> Result<Composition> {
    let (m, base) = Manifest::load(manifest)?;
    let config = crate::model::model_config(&base.join(&m.llm))?;
    let comp = Composition::load(&m, &base, config.hidden_size, config.vocab_size)?;
    if let Some(slot) = comp.experts.iter().find(|s| matches!(s.t2c, T2c::Learned(_))) {
        return Err(Error::Request(format!(
            "expert {:?} has a learned T2C, which reads the LLM's hidden states: it cannot run as a \
             separate tool process",
            slot.name
        )));
    }
    Ok(comp)
}

/// Longest call line, in bytes: a grid question is a few KB. A longer line is skipped
/// as it streams past, so no client can make the server hold more than this.
const MAX_CALL_BYTES: usize = 1 << 20;
/// Bytes of a bad call, or of the parser's words about it, quoted back in an error:
/// enough to recognise it, and a reply stays one short line however large the call.
const MAX_ECHO_BYTES: usize = 200;

/// Answers calls, one line each, until `input` ends. A bad line gets an error reply
/// (with its id when one can be read) and the server goes on with the next.
pub fn serve(comp: &Composition, mut input: impl BufRead, mut output: impl Write) -> Result<()> {
    let in_err = |e: std::io::Error| Error::Request(format!("expert server: reading a call: {e}"));
    let out_err = |e: std::io::Error| Error::Request(format!("expert server: writing a reply: {e}"));
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_CALL_BYTES as u64 + 1;
        if input.by_ref().take(limit).read_until(b'\n', &mut line).map_err(in_err)? == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_CALL_BYTES && line.last() != Some(&b'\n') {
            skip_line(&mut input).map_err(in_err)?;
            WireReply::error(read_id(&line), format!("a call longer than {MAX_CALL_BYTES} bytes (skipped)"))
        } else if line.trim_ascii().is_empty() {
            continue;
        } else {
            answer(comp, &line)
        };
        let text = serde_json::to_string(&reply).expect("a reply serializes");
        writeln!(output, "{text}").map_err(out_err)?;
        output.flush().map_err(out_err)?;
    }
}

/// Reads past the end of the current line without keeping it.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

fn answer(comp: &Composition, line: &[u8]) -> WireReply {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            return WireReply::error(read_id(line), format!("the line is not UTF-8 (byte {at} is invalid)"));
        }
    };
    let call: WireCall = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Data => {
                    "not a call {\"id\": <integer>, \"tool\": <string>, \"context\": <string>}"
                }
                _ => "not valid JSON",
            };
            let (e, text) = (e.to_string(), clip(text.trim_end()));
            return WireReply::error(read_id(line), format!("the line is {what} ({}): {text}", clip(&e)));
        }
    };
    let id = Some(call.id);
    let Some(i) = comp.expert_named(&call.tool) else {
        let names: Vec<&str> = (0..comp.num_experts()).map(|i| comp.expert_name(i)).collect();
        return WireReply::error(
            id,
            format!("no tool named {:?}; the tools are {names:?}", clip(&call.tool)),
        );
    };
    match comp.compute(i, &[call.context], None).pop() {
        Some(Computed::Ok { text, .. }) => WireReply { id, result: Some(text), error: None },
        Some(Computed::Failed(e)) => WireReply::error(id, clip(&e).into_owned()),
        None => WireReply::error(id, "no result".into()),
    }
}

/// The call's "id" when the line reads as JSON up to it, however bad the rest is.
fn read_id(line: &[u8]) -> Option<u64> {
    struct Seek<'a>(&'a mut Option<u64>);
    impl<'de> serde::de::Visitor<'de> for Seek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a call object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "id" {
                    *self.0 = map.next_value().ok();
                    return Ok(());
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut id = None;
    // Stopping at the id leaves the object open, an error that is of no interest here.
    let _ =
        serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_slice(line), Seek(&mut id));
    id
}

/// `s` cut at a char boundary so that it stays under MAX_ECHO_BYTES once written as
/// JSON, where a control character takes six bytes.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += if c < ' ' { 6 } else { c.len_utf8() + usize::from(c == '"' || c == '\\') };
        if used > MAX_ECHO_BYTES {
            return format!("{}... ({} bytes)", &s[..i], s.len()).into();
        }
    }
    s.into()
}

/// The tool process, seen from the harness: calls go down its stdin, replies come
/// back on a reader thread, so that the model keeps decoding other requests while
/// a call is out.
pub struct ToolProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<std::result::Result<Reply, String>>,
}

impl ToolProcess {
    pub fn spawn(mut cmd: Command) -> Result<ToolProcess> {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Request(format!("starting the tool process {what}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let parsed = line
                    .map_err(|e| e.to_string())
                    .and_then(|l| serde_json::from_str::<WireReply>(&l).map_err(|e| format!("{e}: {l}")))
                    .and_then(|r| {
                        let result = match (r.result, r.error) {
                            (Some(t), _) => Ok(t),
                            (None, e) => Err(e.unwrap_or_else(|| "an empty reply".into())),
                        };
                        match r.id {
                            Some(id) => Ok(Reply { id, result }),
                            None => Err(format!("an error for a call it could not read: {result:?}")),
                        }
                    });
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        Ok(ToolProcess { child, stdin, replies })
    }

    pub fn send(&mut self, id: u64, tool: &str, context: &str) -> Result<()> {
        let call = WireCall { id, tool: tool.into(), context: context.into() };
        let line = serde_json::to_string(&call).expect("a call serializes");
        let stdin = self.stdin.as_mut().expect("open until drop");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Request(format!("sending a call to the tool process: {e}")))
    }

    /// A reply if one has arrived.
    pub fn try_recv(&self) -> Result<Option<Reply>> {
        match self.replies.try_recv() {
            Ok(r) => r.map(Some).map_err(Self::bad),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Self::gone()),
        }
    }

    /// Waits for the next reply.
    pub fn recv(&self) -> Result<Reply> {
        self.replies.recv().map_err(|_| Self::gone())?.map_err(Self::bad)
    }

    fn bad(e: String) -> Error {
        Error::Request(format!("the tool process sent a bad reply: {e}"))
    }

    fn gone() -> Error {
        Error::Request("the tool process exited (its error is above)".into())
    }
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        // Closing stdin ends the server's loop; wait so that no zombie is left.
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_found_when_its_object_closes() {
        assert_eq!(parse_call("Let me"), Call::Incomplete);
        assert_eq!(parse_call("{\"tool\": \"dc-pow"), Call::Incomplete);
        let text = "Sure. {\"tool\": \"dc-power-flow\"} and more";
        assert_eq!(
            parse_call(text),
            Call::Found { end: text.find('}').unwrap() + 1, tool: Some("dc-power-flow".into()) }
        );
        assert_eq!(parse_call("{\"name\": 1}"), Call::Found { end: 11, tool: None });
        assert_eq!(parse_call("{tool: dc}"), Call::Invalid);
    }

    #[test]
    fn the_system_message_names_every_tool() {
        let s = tool_system(&[("dc-power-flow", "a DC power flow"), ("ac-power-flow", "an AC power flow")]);
        assert!(s.contains("\"dc-power-flow\" for a DC power flow or \"ac-power-flow\" for an AC"), "{s}");
    }
}
