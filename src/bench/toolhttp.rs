//! The tool-call way over HTTP (`bench --scenario --http`): the pipeline as agent
//! frameworks run it against an OpenAI-compatible server. The chat request offers
//! one function per expert in `tools`; the server answers with `tool_calls`; the
//! harness runs the named tool in `pimoe expert-server` (the same pipe as the
//! in-process way, `toolcall`) on the question's text and sends the assistant's call
//! and a `tool` message back; the final answer is streamed.
//!
//! The server is `pimoe serve` on the composition's LLM alone (no router, no
//! experts), started as a child process unless a URL is given. What a client sees
//! is what is measured: the call's request is whole, and while tools are offered
//! `pimoe serve` holds a message until it knows whether it is a call, so the final
//! answer arrives in one chunk and TTFT is close to the end of the answer; there are
//! no per-token intervals to report.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::http::Response;
use ureq::{Agent, Body};

use super::scenario::Timed;
use super::toolcall::{Shot, ToolProcess};
use crate::error::{Error, Result};
use crate::grid::render;
use crate::tasks::questions::{GridQuestion, SYSTEM};

/// Loading a model onto a GPU can take a while; a server silent for longer is stuck.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// One request at most; the slowest CPU answers at concurrency 8 took about 200 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);
/// The server's last lines of stderr kept for an error message.
const LOG_LINES: usize = 20;

/// A `pimoe serve` child process, stopped with SIGTERM on `stop` or drop.
pub struct Server {
    child: Option<Child>,
    /// e.g. http://127.0.0.1:41234/v1
    pub base: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `cmd` and waits for the address it prints once it listens.
    pub fn spawn(mut cmd: Command) -> Result<Server> {
        let what = format!("{cmd:?}");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // Drop stops the server on every path that unwinds; this covers the one
            // that does not, the harness killed outright.
            // SAFETY: prctl is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                })
            };
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Request(format!("starting the server {what}: {e}")))?;
        let stderr = child.stderr.take().expect("piped");
        // From here on, dropping `server` stops the child, whatever goes wrong.
        let mut server = Server { child: Some(child), base: String::new(), log: Default::default() };
        let (tx, rx) = mpsc::channel();
        let log = server.log.clone();
        // Drains stderr for the server's whole life, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut listening = false;
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if !listening {
                    if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                        listening = true;
                        let _ = tx.send(url.to_string());
                    }
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => {
                server.base = url;
                Ok(server)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Request(format!(
                "the server {what} printed no address in {} s; its last lines:\n{}",
                START_TIMEOUT.as_secs(),
                server.log()
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.as_mut().and_then(|c| c.wait().ok());
                Err(Error::Request(format!(
                    "the server {what} exited before listening ({}); its last lines:\n{}",
                    status.map_or("status unknown".into(), |s| s.to_string()),
                    server.log()
                )))
            }
        }
    }

    fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().map(|l| format!("  {l}\n")).collect()
    }

    /// Stops the server and checks that it exited cleanly.
    pub fn stop(mut self) -> Result<()> {
        let mut child = self.child.take().expect("running until stopped");
        match terminate(&mut child) {
            Some(s) if s.success() => Ok(()),
            s => Err(Error::Request(format!(
                "the server did not exit cleanly on SIGTERM ({}); its last lines:\n{}",
                s.map_or("killed after 30 s".into(), |s| s.to_string()),
                self.log()
            ))),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// SIGTERM, which lets in-flight requests finish; a kill if that takes over 30 s.
/// The exit status, if the child exited on its own.
fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid, which stays reserved until we wait on it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// What every question's requests share: the served model, the tools, the worked
/// examples as prior messages.
pub struct Pipeline {
    base: String,
    model: String,
    tools: Value,
    shots: Vec<Value>,
    max_tokens: usize,
}

impl Pipeline {
    /// `offered`: the tools as (name, what it computes), in the order of `shots`.
    pub fn new(base: &str, offered: &[(&str, &str)], shots: &[Shot], max_tokens: usize) -> Result<Pipeline> {
        let base = base.trim_end_matches('/').to_string();
        let models = get_json(&agent(), &format!("{base}/models"))?;
        let model = models["data"][0]["id"]
            .as_str()
            .ok_or_else(|| malformed(&format!("{base}/models"), "no data[0].id", &models))?
            .to_string();
        let tools = offered
            .iter()
            .map(|(name, what)| {
                json!({"type": "function", "function": {
                    "name": name,
                    "description": format!("Computes {what} of the grid in the question, exactly."),
                    // The tool reads the grid from the question: no arguments to write.
                    "parameters": {"type": "object", "properties": {}},
                }})
            })
            .collect();
        let mut shot_messages = Vec::new();
        for (i, (s, (name, _))) in shots.iter().zip(offered).enumerate() {
            let id = format!("call_example_{i}");
            shot_messages.extend([
                json!({"role": "user", "content": s.user}),
                call_message(&id, name),
                json!({"role": "tool", "tool_call_id": id, "content": s.result}),
                json!({"role": "assistant", "content": s.answer}),
            ]);
        }
        Ok(Pipeline { base, model, tools: Value::Array(tools), shots: shot_messages, max_tokens })
    }

    fn request(&self, messages: &[Value], stream: bool) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "tools": self.tools,
            "max_tokens": self.max_tokens,
            "temperature": 0,
        });
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// One question through the pipeline, timed from before its first request.
    fn answer(&self, agent: &Agent, q: &GridQuestion, id: u64, tool: &Mutex<ToolProcess>) -> Result<Timed> {
        let started = Instant::now();
        let url = format!("{}/chat/completions", self.base);
        let user = render(&q.case.case, &q.question);
        let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
        messages.extend(self.shots.iter().cloned());
        messages.push(json!({"role": "user", "content": user}));
        let first = post(agent, &url, &self.request(&messages, false))?.body_mut().read_json::<Value>();
        let first = first.map_err(|e| Error::Request(format!("POST {url}: reading the answer: {e}")))?;
        let (prompt, completion) = usage(&url, &first)?;
        let choice = &first["choices"][0];
        let message =
            choice.get("message").ok_or_else(|| malformed(&url, "no choices[0].message", &first))?;
        let mut t = Timed {
            processed: processed(prompt, completion),
            generated: completion,
            prefilled: prompt,
            decode_steps: completion.saturating_sub(1),
            ..Timed::default()
        };
        if choice["finish_reason"] != "tool_calls" {
            // No call: this message is the answer, known only whole.
            t.text = message["content"].as_str().unwrap_or_default().to_string();
            t.e2e = started.elapsed().as_secs_f64();
            (t.ttft, t.prefilled_before_first, t.decode_steps_before_first) =
                (t.e2e, t.prefilled, t.decode_steps);
            return Ok(t);
        }
        let call = &message["tool_calls"][0];
        let (Some(call_id), Some(name)) = (call["id"].as_str(), call["function"]["name"].as_str()) else {
            return Err(malformed(&url, "a tool call without id or function.name", &first));
        };
        t.tool_call = true;
        let reply = {
            // The tool process answers one call at a time, in order: hold it for the round trip.
            let mut tp = tool.lock().unwrap_or_else(|e| e.into_inner());
            tp.send(id, name, &user)?;
            tp.recv()?
        };
        if reply.id != id {
            return Err(Error::Request(format!("the tool process answered call {} for call {id}", reply.id)));
        }
        let result = match reply.result {
            Ok(text) => text,
            Err(e) => {
                t.tool_error = true;
                format!("Error: {e}")
            }
        };
        messages.push(message.clone());
        messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": result}));
        let second = stream(agent, &url, &self.request(&messages, true), started)?;
        t.text = second.text;
        t.e2e = started.elapsed().as_secs_f64();
        t.prefilled += second.prompt;
        t.processed += processed(second.prompt, second.completion);
        t.generated += second.completion;
        t.prefilled_before_first = t.prefilled;
        t.decode_steps_before_first = t.decode_steps;
        t.decode_steps += second.completion.saturating_sub(1);
        (t.ttft, t.gaps) = (second.first.unwrap_or(t.e2e), second.gaps);
        Ok(t)
    }
}

/// An assistant message that calls `name`, as the server writes one.
fn call_message(id: &str, name: &str) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}}
    ]})
}

/// Every token run through the model: the prompt, and each sampled token but the
/// last, which is never fed back.
fn processed(prompt: usize, completion: usize) -> usize {
    prompt + completion.saturating_sub(1)
}

/// A streamed answer as it arrived.
#[derive(Default)]
struct Streamed {
    text: String,
    /// Usage, from the last chunk.
    prompt: usize,
    completion: usize,
    /// When the first text arrived, in seconds since the answer's start.
    first: Option<f64>,
    /// Between successive chunks of text.
    gaps: Vec<f64>,
}

fn stream(agent: &Agent, url: &str, body: &Value, started: Instant) -> Result<Streamed> {
    let mut resp = post(agent, url, body)?;
    let mut out = Streamed::default();
    let mut last = None::<Instant>;
    let mut usage_seen = false;
    for line in BufReader::new(resp.body_mut().as_reader()).lines() {
        let line = line.map_err(|e| Error::Request(format!("POST {url}: reading the stream: {e}")))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim_start) else { continue };
        if data == "[DONE]" {
            if !usage_seen {
                return Err(Error::Request(format!("POST {url}: the stream ended without its usage chunk")));
            }
            return Ok(out);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            Error::Request(format!("POST {url}: a stream chunk that is not JSON ({e}): {data}"))
        })?;
        if let Some(e) = chunk.get("error") {
            return Err(Error::Request(format!(
                "POST {url}: the server failed mid-stream: {}",
                error_message(e)
            )));
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            (out.prompt, out.completion) = usage(url, &chunk)?;
            usage_seen = true;
        }
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str().filter(|p| !p.is_empty()) {
            let now = Instant::now();
            if let Some(l) = last {
                out.gaps.push((now - l).as_secs_f64());
            }
            last = Some(now);
            out.first.get_or_insert((now - started).as_secs_f64());
            out.text.push_str(piece);
        }
    }
    Err(Error::Request(format!("POST {url}: the stream ended without [DONE]")))
}

/// One client's connection, as a separate program would have.
fn agent() -> Agent {
    Agent::config_builder().http_status_as_error(false).timeout_global(Some(REQUEST_TIMEOUT)).build().into()
}

/// A 200 response, or an error with the status and the server's message.
fn post(agent: &Agent, url: &str, body: &Value) -> Result<Response<Body>> {
    let resp = agent.post(url).send_json(body).map_err(|e| Error::Request(format!("POST {url}: {e}")))?;
    check(url, resp)
}

fn get_json(agent: &Agent, url: &str) -> Result<Value> {
    let resp = agent.get(url).call().map_err(|e| Error::Request(format!("GET {url}: {e}")))?;
    check(url, resp)?
        .body_mut()
        .read_json()
        .map_err(|e| Error::Request(format!("GET {url}: reading the answer: {e}")))
}

fn check(url: &str, mut resp: Response<Body>) -> Result<Response<Body>> {
    if resp.status() == 200 {
        return Ok(resp);
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let message = match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.get("error").is_some() => error_message(&v["error"]),
        _ => text,
    };
    Err(Error::Request(format!("{url}: HTTP {}: {message}", resp.status())))
}

fn error_message(e: &Value) -> String {
    e["message"].as_str().map_or_else(|| e.to_string(), str::to_string)
}

fn usage(url: &str, v: &Value) -> Result<(usize, usize)> {
    let u = &v["usage"];
    match (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()) {
        (Some(p), Some(c)) => Ok((p as usize, c as usize)),
        _ => Err(malformed(url, "no usage.prompt_tokens and usage.completion_tokens", v)),
    }
}

fn malformed(url: &str, what: &str, v: &Value) -> Error {
    Error::Request(format!("{url}: a malformed response, {what}: {v}"))
}

/// Every question once, through `c` client threads with one question in flight
/// each; `on_answer` ticks on this thread as answers come in.
pub fn pass(
    p: &Pipeline,
    qs: &[GridQuestion],
    c: usize,
    tool: &Mutex<ToolProcess>,
    on_answer: &mut dyn FnMut(),
) -> Result<Vec<Timed>> {
    let (next, failed) = (&AtomicUsize::new(0), &AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..c.min(qs.len()) {
            let tx = tx.clone();
            s.spawn(move || {
                let agent = agent();
                // After a failure, no new questions: the others finish what they have.
                while !failed.load(Relaxed) {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(q) = qs.get(i) else { break };
                    if tx.send((i, p.answer(&agent, q, i as u64, tool))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut out = vec![None; qs.len()];
        let mut error = None;
        for (i, r) in rx {
            match r {
                Ok(t) => {
                    out[i] = Some(t);
                    on_answer();
                }
                Err(e) => {
                    failed.store(true, Relaxed);
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(out.into_iter().map(|t| t.expect("every question answered")).collect()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_server_that_exits_before_listening_is_named_with_its_last_words() {
        let e = Server::spawn(sh("echo 'no such model' >&2; exit 3")).err().expect("an error").to_string();
        assert!(e.contains("exited before listening") && e.contains("exit status: 3"), "{e}");
        assert!(e.contains("no such model"), "{e}");
    }

    #[test]
    fn a_listening_server_gives_its_address_and_stops_on_sigterm() {
        let s = Server::spawn(sh(
            "trap 'exit 0' TERM; echo 'pimoe serve: m on http://127.0.0.1:9/v1 (Ctrl-C stops)' >&2; \
             while :; do sleep 0.05; done",
        ))
        .unwrap();
        assert_eq!(s.base, "http://127.0.0.1:9/v1");
        s.stop().unwrap();
        let s =
            Server::spawn(sh("trap 'exit 5' TERM; echo 'on http://h/v1' >&2; while :; do sleep 0.05; done"))
                .unwrap();
        let e = s.stop().unwrap_err().to_string();
        assert!(e.contains("did not exit cleanly") && e.contains("exit status: 5"), "{e}");
    }
}
