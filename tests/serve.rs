//! `pimoe serve` over real HTTP: the real `openai` Python client (installed by
//! scripts/openai-client.sh into an ignored venv) for chat, completions, streaming,
//! usage, tools, the pimoe extension field and a 300-request load test; curl for
//! errors, limits and auth; a signal for a clean stop.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use common::compose::composition;
use common::{copy_fixture, fixtures, rewrite};

const KEY: &str = "sk-test-0123";

struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `pimoe serve ARGS --port 0` and waits for the address it prints.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pimoe"))
            .arg("serve")
            .args(args)
            .args(["--port", "0", "--device", "cpu"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pimoe serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let base = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    seen.push_str(&l);
                    seen.push('\n');
                    if let Some(url) = l.split_whitespace().find(|w| w.starts_with("http://")) {
                        break url.to_string();
                    }
                }
                _ => panic!("pimoe serve stopped before listening: {seen}"),
            }
        };
        let stderr = Arc::new(Mutex::new(seen));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(|l| l.ok()) {
                sink.lock().unwrap().push_str(&(l + "\n"));
            }
        });
        Server { child, base, stderr }
    }

    fn root(&self) -> &str {
        self.base.trim_end_matches("/v1")
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python with the pinned openai client.
fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/openai-client.sh");
        let out = Command::new(script).output().expect("run scripts/openai-client.sh");
        assert!(
            out.status.success(),
            "installing the openai client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

fn client(mode: &str, server: &Server, model: &str) -> String {
    client_with(mode, server, model, &[])
}

fn client_with(mode: &str, server: &Server, model: &str, extra: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    let out = Command::new(python())
        .arg(script)
        .args([mode, &server.base, model, KEY])
        .args(extra)
        .output()
        .expect("run client.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "client.py {mode}: {stdout}\n{stderr}\nserver log:\n{}", server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());
    stdout.into_owned()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-s", "-i", "--max-time", "60"]).args(args).output().expect("run curl")
}

/// Status line and body of a curl -i response.
fn parts(out: &Output) -> (u16, String, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

fn manifest(name: &str) -> String {
    composition(name, r#"{ "refractory": 3, "max_firings": 2 }"#).to_string_lossy().into_owned()
}

#[test]
fn openai_client_chat_completions_streaming_and_expert_spans() {
    let m = manifest("serve-api");
    let server = Server::start(&["--manifest", &m, "--api-key", KEY]);
    let out = client("api", &server, "pimoe");
    assert!(out.contains("\"expert\": \"solve\""), "{out}");
}

#[test]
fn load_of_300_mixed_requests_at_concurrency_32() {
    let m = manifest("serve-load");
    // A small KV pool, so that 32 running sequences preempt each other.
    let server =
        Server::start(&["--manifest", &m, "--api-key", KEY, "--kv-tokens", "512", "--max-running", "32"]);
    let out = client("load", &server, "pimoe");
    eprintln!("{out}");
    assert!(out.contains("\"counts\""), "{out}");
}

/// The issue's first use: `pimoe serve` with no arguments serves the embedded demo
/// composition, and the openai client's chat answer to a grid question carries the
/// expert's number, with its span in the `pimoe` field, and ends with its sentence.
#[test]
fn default_composition_answers_a_grid_question_with_its_expert() {
    pimoe::model::fetch::ensure_default_model(false).expect("the default model");
    let server = Server::start(&["--api-key", KEY]);
    let q = &pimoe::tasks::demo::questions().unwrap()[1];
    let pimoe::Prompt::Chat { system, user } = q.prompt() else { panic!("a chat prompt") };
    let messages = serde_json::json!([{"role": "system", "content": system.unwrap()}, {"role": "user", "content": user}]);
    let path = common::scratch_dir("serve-grid").join("messages.json");
    std::fs::write(&path, messages.to_string()).unwrap();
    let out = client_with("grid", &server, "grid", &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let text = v["text"].as_str().unwrap();
    let span = &v["pimoe"]["spans"][0];
    assert_eq!(span["expert"], "dc-power-flow", "{v}");
    let (start, end) = (span["start"].as_u64().unwrap() as usize, span["end"].as_u64().unwrap() as usize);
    let number: String = text.chars().skip(start).take(end - start).collect();
    let x: f64 = number.trim().parse().unwrap_or_else(|_| panic!("the span is a number: {number:?} in {v}"));
    assert!((x - q.truth).abs() <= 1e-4 * q.truth.abs(), "{x} vs PYPOWER {}", q.truth);
    assert_eq!(span["outputs"][0].as_f64().map(|y| format!("{y:.6}")), Some(number.trim().to_string()));
    // "after_result": "sentence" and the held-back period: the answer ends right there.
    assert_eq!(v["finish"], "stop", "{v}");
    assert!(text.chars().skip(end).collect::<String>().trim_end() == ".", "{text:?}");

    // A split grid: no expert can compute it; the answer says so where the number
    // would be, its span is marked failed, and the extension's finish says why the
    // standard finish_reason is only "stop".
    let mut case = q.case.case.clone();
    case.branches.retain(|b| (b.from <= 5) == (b.to <= 5));
    let user = pimoe::grid::render(&case, &q.question);
    let messages = serde_json::json!([{"role": "system", "content": pimoe::tasks::questions::SYSTEM}, {"role": "user", "content": user}]);
    std::fs::write(&path, messages.to_string()).unwrap();
    let out = client_with("grid", &server, "grid", &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("[dc-power-flow could not compute this: ") && text.contains("no path to the slack"),
        "{v}"
    );
    assert_eq!(
        (&v["finish"], &v["pimoe"]["finish"]),
        (&serde_json::json!("stop"), &serde_json::json!("expert_failed")),
        "{v}"
    );
    let span = &v["pimoe"]["spans"][0];
    assert_eq!(
        (&span["expert"], &span["failed"]),
        (&serde_json::json!("dc-power-flow"), &serde_json::json!(true)),
        "{v}"
    );
}

#[test]
fn tool_calls_through_the_tools_api() {
    let dir = pimoe::model::fetch::ensure_default_model(false).expect("the default model");
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--api-key", KEY]);
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let out = client("tools", &server, &name);
    assert!(out.contains("\"call\": \"solve\""), "{out}");
}

#[test]
fn errors_limits_and_auth_over_curl() {
    let model = fixtures().join("tiny-qwen2");
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--api-key",
        KEY,
        "--body-limit",
        "4096",
        "--max-running",
        "1",
        "--max-queue",
        "1",
    ]);
    let url = |p: &str| format!("{}{p}", server.root());
    let auth = format!("Authorization: Bearer {KEY}");
    let post = |path: &str, body: &str, with_auth: bool| {
        let mut a = vec!["-H", "content-type: application/json", "-d", body];
        if with_auth {
            a.extend(["-H", auth.as_str()]);
        }
        let u = url(path);
        a.push(&u);
        parts(&curl(&a))
    };

    // Health and metrics need no key; /v1 does.
    assert_eq!(parts(&curl(&[&url("/health")])).0, 200);
    let (s, _, body) = parts(&curl(&[&url("/v1/models")]));
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("invalid_api_key"), "{body}");
    let (s, _, body) = parts(&curl(&["-H", "Authorization: Bearer wrong", &url("/v1/models")]));
    assert_eq!(s, 401, "{body}");
    let (s, _, body) = post("/v1/completions", r#"{"prompt": "The dog", "max_tokens": 3}"#, false);
    assert_eq!(s, 401, "{body}");
    let (s, _, body) =
        post("/v1/completions", r#"{"prompt": "The dog", "max_tokens": 3, "temperature": 0}"#, true);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"text_completion\""), "{body}");

    // Each refusal is OpenAI's error object naming what is wrong.
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/completions", "{not json", 400, "not valid JSON"),
        ("/v1/completions", r#"{"prompt": "x", "logit_bias": {"1": 5}}"#, 400, "\"param\":\"logit_bias\""),
        ("/v1/completions", r#"{"prompt": "x", "n": 3}"#, 400, "\"param\":\"n\""),
        ("/v1/completions", r#"{"prompt": "x", "temperature": -1}"#, 400, "\"param\":\"temperature\""),
        ("/v1/completions", r#"{"prompt": "x", "max_tokens": 0}"#, 400, "\"param\":\"max_tokens\""),
        ("/v1/completions", r#"{"prompt": [1, 2, 3]}"#, 400, "\"param\":\"prompt\""),
        ("/v1/completions", r#"{"max_tokens": 3}"#, 400, "missing required parameter `prompt`"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            400,
            "unknown role",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}"#,
            400,
            "tools",
        ),
        ("/v1/completions", r#"{"prompt": "x", "model": "gpt-4o"}"#, 404, "model_not_found"),
        ("/v1/nowhere", "{}", 404, "no such route"),
    ];
    // Hostile numbers and sizes (issue 17): each names the parameter, the value and the limit.
    let deep = format!(r#"{{"prompt": "x", "user": {}{}}}"#, "[".repeat(1000), "]".repeat(1000));
    let many = format!(r#"{{"messages": [{}]}}"#, vec!["{}"; 1025].join(","));
    let long_key = format!(r#"{{"prompt": "x", "{}": 1}}"#, "k".repeat(3000));
    let hostile: &[(&str, &str, u16, &str)] = &[
        ("/v1/completions", r#"{"prompt": "x", "max_tokens": -1}"#, 400, "positive integer, got -1"),
        ("/v1/completions", r#"{"prompt": "x", "max_tokens": 1e400}"#, 400, "number out of range"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 18446744073709551616}"#,
            400,
            "\"param\":\"max_completion_tokens\"",
        ),
        ("/v1/completions", r#"{"prompt": "x", "n": 18446744073709551615}"#, 400, "got 18446744073709551615"),
        ("/v1/completions", r#"{"prompt": "x", "temperature": 1e308}"#, 400, "in [0, 2], got 1e+308"),
        ("/v1/completions", r#"{"prompt": "x", "top_p": 0}"#, 400, "in (0, 1], got 0"),
        ("/v1/completions", r#"{"prompt": "x", "top_p": 1.5}"#, 400, "\"param\":\"top_p\""),
        ("/v1/completions", r#"{"prompt": "x", "top_k": 5}"#, 400, "\"param\":\"top_k\""),
        ("/v1/completions", r#"{"prompt": "x", "seed": 1.5}"#, 400, "`seed` must be an integer, got 1.5"),
        ("/v1/completions", r#"{"prompt": "x", "logprobs": true}"#, 400, "\"param\":\"logprobs\""),
        ("/v1/completions", r#"{"prompt": "x", "top_logprobs": 5}"#, 400, "\"param\":\"top_logprobs\""),
        (
            "/v1/completions",
            r#"{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}"#,
            400,
            "at most 4 non-empty strings of at most 256 bytes, got 5",
        ),
        ("/v1/completions", &deep, 400, "recursion limit exceeded"),
        ("/v1/chat/completions", &many, 400, "1 to 1024 messages, got 1025"),
        ("/v1/completions", &long_key, 400, "unsupported_parameter"),
    ];
    for (path, body, status, needle) in cases.iter().chain(hostile) {
        let (s, _, got) = post(path, body, true);
        assert_eq!(s, *status, "{path} {body}: {got}");
        assert!(got.contains(needle), "{path} {body}: expected {needle:?} in {got}");
        assert!(got.contains("\"error\""), "{got}");
        assert!(got.len() < 1024, "an error of {} bytes: {got}", got.len());
    }
    // The largest max_tokens is "up to the end of the context", not an overflow.
    let (s, _, body) = post(
        "/v1/completions",
        r#"{"prompt": "The dog", "max_tokens": 18446744073709551615, "temperature": 0}"#,
        true,
    );
    assert_eq!(s, 200, "{body}");
    // A prompt past the 128-token context: 400 with the token counts.
    let long = format!(r#"{{"prompt": "{}", "max_tokens": 2}}"#, "word ".repeat(300));
    let (s, _, body) = post("/v1/completions", &long, true);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("context_length_exceeded") && body.contains("128 tokens"), "{body}");
    // Past the body limit: 413, still an error object.
    let huge = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(10_000));
    let (s, _, body) = post("/v1/completions", &huge, true);
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // One running, one waiting, the rest refused with Retry-After.
    let slow = r#"{"prompt": "The dog", "max_tokens": 100, "temperature": 0, "stream": true}"#;
    let u = url("/v1/completions");
    let spawned: Vec<_> = (0..4)
        .map(|_| {
            Command::new("curl")
                .args(["-s", "-i", "--max-time", "60", "-H", &auth, "-d", slow, &u])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = spawned.into_iter().map(|c| parts(&c.wait_with_output().unwrap())).collect();
    let refused: Vec<_> = outs.iter().filter(|o| o.0 == 429).collect();
    assert!(
        !refused.is_empty(),
        "a full queue answers 429: {:?}",
        outs.iter().map(|o| o.0).collect::<Vec<_>>()
    );
    assert!(refused.iter().all(|o| o.1.to_ascii_lowercase().contains("retry-after: 1")), "{:?}", refused[0]);
    assert!(
        outs.iter().all(|o| o.0 == 200 || o.0 == 429),
        "{:?}",
        outs.iter().map(|o| o.0).collect::<Vec<_>>()
    );
    assert!(
        outs.iter().filter(|o| o.0 == 200).all(|o| o.2.contains("data: [DONE]")),
        "streams end with [DONE]"
    );

    // The server still serves, and its metrics say what happened.
    let (s, _, body) = post("/v1/completions", r#"{"prompt": "The dog", "max_tokens": 3}"#, true);
    assert_eq!(s, 200, "{body}");
    let (_, _, metrics) = parts(&curl(&[&url("/metrics")]));
    for needle in [
        "pimoe_requests_total{code=\"429\"}",
        "pimoe_requests_total{code=\"401\"}",
        "pimoe_kv_blocks_used 0",
        "pimoe_step_seconds_count",
        "pimoe_time_to_first_token_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }

    // SIGTERM: a clean stop with exit status 0.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", server.log());
}

#[test]
fn a_model_that_breaks_down_is_a_500_and_the_server_serves_on() {
    // A NaN in the final norm (loaded with --trust-weights, as a user may) makes every
    // logits row NaN: the engine fails each request at its first token.
    let dir = copy_fixture("tiny-qwen2", "serve-nan");
    rewrite(&dir, |name, t| {
        if name == "model.norm.weight" {
            t.2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    });
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--trust-weights"]);
    let url = |p: &str| format!("{}{p}", server.root());
    let post = |body: &str| {
        let u = url("/v1/completions");
        parts(&curl(&["-H", "content-type: application/json", "-d", body, &u]))
    };
    for _ in 0..2 {
        let (s, _, body) = post(r#"{"prompt": "The dog", "max_tokens": 4}"#);
        assert_eq!(s, 500, "{body}");
        assert!(body.contains("server_error") && body.contains("NaN or infinite"), "{body}");
    }
    // Streamed, the headers are gone: the stream ends with the error object, not [DONE].
    let (s, _, body) = post(r#"{"prompt": "The dog", "max_tokens": 4, "stream": true}"#);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("NaN or infinite") && !body.contains("[DONE]"), "{body}");
    assert_eq!(parts(&curl(&[&url("/health")])).0, 200);
    let (_, _, metrics) = parts(&curl(&[&url("/metrics")]));
    for needle in
        ["pimoe_engine_failures_total 3", "pimoe_requests_total{code=\"500\"} 2", "pimoe_kv_blocks_used 0"]
    {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn refuses_to_start_on_bad_limits_and_addresses() {
    let model = fixtures().join("tiny-qwen2");
    let m = model.to_str().unwrap();
    for (args, needle) in [
        (vec!["--max-queue", "0"], "--max-queue"),
        (vec!["--kv-tokens", "3"], "scheduler limits"),
        (vec!["--host", "not-an-ip"], "not-an-ip"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pimoe"))
            .args(["serve", "--model", m, "--port", "0", "--device", "cpu"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}
