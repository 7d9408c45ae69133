//! The routes: OpenAI's chat and text completions (whole or streamed as server-sent
//! events), the model list, health and Prometheus metrics. Handlers only translate:
//! every completion is a job for the engine thread, whose pieces they shape into
//! OpenAI's objects plus the `pimoe` extension field.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api::{self, ApiError, Tool};
use super::metrics::Metrics;
use super::worker::{Command, Job, Out};
use crate::engine::Finish;
use crate::scheduler::{Provenance, Stats};

pub struct AppState {
    /// The engine thread's inbox. `Sender` is `Sync`; the mutex only keeps the
    /// state `Sync` on toolchains where it is not.
    pub jobs: Mutex<Sender<Command>>,
    pub metrics: Arc<Metrics>,
    pub model: String,
    pub api_key: Option<String>,
    pub created: u64,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::status(404, "not_found_error", "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

async fn count(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    st.metrics.count_request(r.status().as_u16());
    r
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok =
            given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|g| same(g.as_bytes(), key.as_bytes()));
        if !ok {
            let mut e = ApiError::status(
                401,
                "invalid_request_error",
                "a valid `Authorization: Bearer <key>` header is required",
            );
            e.code = Some("invalid_api_key");
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": st.model, "object": "model", "created": st.created, "owned_by": "pimoe"}
    ]}))
}

async fn chat(st: State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    complete(st, body, true).await
}

async fn completions(
    st: State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(st, body, false).await
}

/// What the response objects repeat.
struct Meta {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    tools: Vec<Tool>,
    prompt_tokens: usize,
}

async fn complete(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|e| ApiError::status(e.status().as_u16(), "invalid_request_error", e.body_text()))?;
    let p = api::parse(&body, chat)?;
    if let Some(m) = p.model.as_ref().filter(|m| **m != st.model) {
        let mut e = ApiError::status(
            404,
            "invalid_request_error",
            format!("model {m:?} is not served here; this server serves {:?}", st.model),
        );
        e.code = Some("model_not_found");
        return Err(e);
    }
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        input: p.input,
        tools: p.tools.clone(),
        tool_choice: p.tool_choice,
        max_tokens: p.max_tokens,
        sampling: p.sampling,
        stop: p.stop,
        out: tx,
    };
    let sent = st.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(Command::Submit(Box::new(job)));
    if sent.is_err() {
        return Err(ApiError::status(503, "server_error", "the engine has stopped"));
    }
    let prompt_tokens = match rx.recv().await {
        Some(Out::Accepted { prompt_tokens }) => prompt_tokens,
        Some(Out::Error(e)) => return Err(e),
        _ => return Err(ApiError::status(500, "server_error", "the engine dropped the request")),
    };
    let n = st.next_id.fetch_add(1, Relaxed);
    let meta = Meta {
        id: format!("{}-{:x}{n:06}", if chat { "chatcmpl" } else { "cmpl" }, st.created),
        created: unix_now(),
        model: st.model.clone(),
        chat,
        tools: p.tools,
        prompt_tokens,
    };
    if p.stream {
        let mut s = Streamer {
            rx,
            meta,
            answer: Answer::default(),
            queue: VecDeque::new(),
            include_usage: p.include_usage,
            ended: false,
        };
        if chat {
            let first = s.chunk(json!({"role": "assistant", "content": ""}), None, None);
            s.queue.push_back(first);
        }
        let events = futures_util::stream::unfold(s, |mut s| async move {
            s.next().await.map(|e| (Ok::<_, Infallible>(e), s))
        });
        return Ok(Sse::new(events).into_response());
    }
    let mut answer = Answer::default();
    loop {
        match rx.recv().await {
            Some(Out::Piece { text, provenance }) => {
                answer.push(&text, &provenance);
            }
            Some(Out::Note { expert, message }) => {
                answer.notes.push(json!({"expert": expert, "message": message}));
            }
            Some(Out::Done { finish: Finish::NonFinite, stats }) => return Err(non_finite(&stats)),
            Some(Out::Done { finish, stats }) => {
                return Ok(Json(whole(&meta, &answer, finish, &stats)).into_response())
            }
            Some(Out::Error(e)) => return Err(e),
            Some(Out::Accepted { .. }) | None => {
                return Err(ApiError::status(500, "server_error", "the engine dropped the request"))
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The answer so far: its text, and the spans experts computed, in characters
/// (Unicode scalar values, as Python indexes a string).
#[derive(Default)]
struct Answer {
    text: String,
    chars: usize,
    spans: Vec<Value>,
    notes: Vec<Value>,
    last: Option<usize>,
}

impl Answer {
    /// Appends a piece; returns the span it belongs to when an expert computed it.
    fn push(&mut self, text: &str, prov: &Arc<Provenance>) -> Option<Value> {
        let start = self.chars;
        self.chars += text.chars().count();
        self.text.push_str(text);
        let span = match &**prov {
            Provenance::Llm => {
                self.last = None;
                return None;
            }
            Provenance::Expert { expert, inputs, outputs } => {
                json!({"start": start, "end": self.chars, "expert": expert, "inputs": inputs, "outputs": outputs})
            }
            // The text standing in for a result the expert could not compute.
            Provenance::Failed { expert, reason } => {
                json!({"start": start, "end": self.chars, "expert": expert, "failed": true, "reason": reason})
            }
        };
        let key = Arc::as_ptr(prov) as usize;
        match self.spans.last_mut().filter(|_| self.last == Some(key)) {
            Some(last) => last["end"] = json!(self.chars),
            None => self.spans.push(span.clone()),
        }
        self.last = Some(key);
        Some(span)
    }

    fn extension(&self, f: Option<Finish>) -> Value {
        let mut ext = json!({"spans": self.spans, "notes": self.notes});
        if let Some(why) = f.and_then(failure) {
            ext["finish"] = json!(why);
        }
        ext
    }
}

/// OpenAI's finish reasons only; a failure's own name goes in the extension field
/// (`finish`), which standard clients ignore but do not choke on.
fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::ExpertFailed | Finish::NonFinite => "stop",
        Finish::Length | Finish::Context => "length",
    }
}

/// The model broke down: no answer, whatever it had written, is one to take.
fn non_finite(stats: &Stats) -> ApiError {
    ApiError::status(
        500,
        "server_error",
        format!(
            "the model's logits became NaN or infinite after {} generated tokens: its weights do not give \
             meaningful numbers, so there is no answer",
            stats.generated_tokens
        ),
    )
}

/// The extension's `finish` for an answer not to be taken as computed.
fn failure(f: Finish) -> Option<&'static str> {
    match f {
        Finish::ExpertFailed => Some("expert_failed"),
        Finish::NonFinite => Some("non_finite"),
        Finish::Stop | Finish::Length | Finish::Context => None,
    }
}

fn usage(meta: &Meta, stats: &Stats) -> Value {
    let completion = stats.generated_tokens + stats.injected_tokens;
    json!({"prompt_tokens": meta.prompt_tokens, "completion_tokens": completion, "total_tokens": meta.prompt_tokens + completion})
}

/// A tool call, when tools were offered and the answer is one.
fn as_call(meta: &Meta, answer: &Answer) -> Option<Value> {
    let (name, args) = api::tool_call(&answer.text, &meta.tools)?;
    Some(
        json!([{"id": format!("call_{}", meta.id), "type": "function", "function": {"name": name, "arguments": args}}]),
    )
}

/// The whole (not streamed) response.
fn whole(meta: &Meta, answer: &Answer, f: Finish, stats: &Stats) -> Value {
    let mut choice = json!({"index": 0, "finish_reason": finish_reason(f), "logprobs": null, "pimoe": answer.extension(Some(f))});
    if meta.chat {
        choice["message"] = match as_call(meta, answer) {
            Some(calls) => {
                choice["finish_reason"] = json!("tool_calls");
                json!({"role": "assistant", "content": null, "tool_calls": calls})
            }
            None => json!({"role": "assistant", "content": answer.text}),
        };
    } else {
        choice["text"] = json!(answer.text);
    }
    json!({
        "id": meta.id,
        "object": if meta.chat { "chat.completion" } else { "text_completion" },
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": usage(meta, stats),
    })
}

/// Turns the engine's messages into server-sent events, one chunk per piece.
struct Streamer {
    rx: UnboundedReceiver<Out>,
    meta: Meta,
    answer: Answer,
    queue: VecDeque<SseEvent>,
    include_usage: bool,
    ended: bool,
}

impl Streamer {
    fn chunk(&self, delta: Value, finish: Option<&str>, ext: Option<Value>) -> SseEvent {
        let mut choice = json!({"index": 0, "finish_reason": finish, "logprobs": null});
        if self.meta.chat {
            choice["delta"] = delta;
        } else {
            choice["text"] = delta.get("content").cloned().unwrap_or(json!(""));
        }
        if let Some(ext) = ext {
            choice["pimoe"] = ext;
        }
        let mut c = json!({
            "id": self.meta.id,
            "object": if self.meta.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [choice],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        SseEvent::default().data(c.to_string())
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let msg = self.rx.recv().await;
            // Tools offered: the answer may be a call, which is only known whole.
            let hold = self.meta.chat && !self.meta.tools.is_empty();
            match msg {
                Some(Out::Piece { text, provenance }) => {
                    let span = self.answer.push(&text, &provenance);
                    if !hold {
                        let ext = span.map(|s| json!({"spans": [s]}));
                        let e = self.chunk(json!({"content": text}), None, ext);
                        self.queue.push_back(e);
                    }
                }
                Some(Out::Note { expert, message }) => {
                    let note = json!({"expert": expert, "message": message});
                    self.answer.notes.push(note.clone());
                    let e = self.chunk(json!({}), None, Some(json!({"notes": [note]})));
                    self.queue.push_back(e);
                }
                Some(Out::Done { finish: Finish::NonFinite, stats }) => {
                    // The text streamed so far is not an answer: end with the error
                    // object, not [DONE], so that clients raise it.
                    self.queue.push_back(SseEvent::default().data(non_finite(&stats).body().to_string()));
                    self.ended = true;
                }
                Some(Out::Done { finish, stats }) => {
                    let mut reason = finish_reason(finish);
                    if hold {
                        match as_call(&self.meta, &self.answer) {
                            Some(calls) => {
                                reason = "tool_calls";
                                let e = self.chunk(json!({"tool_calls": index_calls(calls)}), None, None);
                                self.queue.push_back(e);
                            }
                            None => {
                                let ext = self.answer.extension(None);
                                let e = self.chunk(json!({"content": self.answer.text}), None, Some(ext));
                                self.queue.push_back(e);
                            }
                        }
                    }
                    let ext = failure(finish).map(|why| json!({"finish": why}));
                    let e = self.chunk(json!({}), Some(reason), ext);
                    self.queue.push_back(e);
                    if self.include_usage {
                        let u = json!({
                            "id": self.meta.id,
                            "object": if self.meta.chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": self.meta.created,
                            "model": self.meta.model,
                            "choices": [],
                            "usage": usage(&self.meta, &stats),
                        });
                        self.queue.push_back(SseEvent::default().data(u.to_string()));
                    }
                    self.queue.push_back(SseEvent::default().data("[DONE]"));
                    self.ended = true;
                }
                Some(Out::Error(e)) => {
                    self.queue.push_back(SseEvent::default().data(e.body().to_string()));
                    self.ended = true;
                }
                Some(Out::Accepted { .. }) | None => {
                    let e = ApiError::status(500, "server_error", "the engine dropped the request");
                    self.queue.push_back(SseEvent::default().data(e.body().to_string()));
                    self.ended = true;
                }
            }
        }
    }
}

/// Streamed tool calls carry their index.
fn index_calls(mut calls: Value) -> Value {
    if let Some(list) = calls.as_array_mut() {
        for (i, c) in list.iter_mut().enumerate() {
            c["index"] = json!(i);
        }
    }
    calls
}
