//! `pimoe bench --scenario` (src/bench/scenario.rs, src/bench/toolcall.rs): the three
//! ways on the demo composition with its real model, the tool process over its pipe,
//! and the command's errors.

use std::io::{Cursor, Write};
use std::process::{Command, Stdio};

use pimoe::backend::cpu::CpuBackend;
use pimoe::bench::scenario::{self, Ceilings, Harness, ScenarioConfig, ScenarioReport, Way};
use pimoe::bench::toolcall::{load_tools, serve};
use pimoe::model::fetch::ensure_default_model;
use pimoe::tasks::demo;
use pimoe::Engine;
use serde_json::Value;

fn manifest() -> std::path::PathBuf {
    ensure_default_model(false).expect("fetch and import the default model");
    demo::ensure_manifest().expect("write the demo's manifest")
}

#[test]
fn three_ways_two_levels_on_the_demo() {
    let path = manifest();
    let mut engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let cfg = ScenarioConfig {
        scenario: "grid".into(),
        per_task: 1,
        seed: 1,
        max_tokens: 48,
        concurrency: vec![1, 2],
        max_step_tokens: 512,
    };
    let mut ticks = 0;
    let mut h = Harness {
        ceiling_name: "test",
        ceiling: Box::new(|e: &Engine<CpuBackend>| {
            let c = &e.llm.config;
            Ok(Ceilings {
                bytes_per_s: pimoe::bench::memory_read_bandwidth(),
                flop_per_s: pimoe::bench::cpu_matmul_rate(2 * c.intermediate_size, c.hidden_size),
            })
        }),
        energy: Err("none on the CPU".into()),
        tool_command: Box::new(|| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_pimoe"));
            c.arg("expert-server").arg("--manifest").arg(&path);
            c
        }),
        http: None,
        on_answer: Box::new(|| ticks += 1),
    };
    let run = scenario::run(&mut engine, &cfg, &mut h).unwrap();
    assert!(engine.pimoe.is_some(), "the composition is put back");
    let report = ScenarioReport::new(&engine, &path, &cfg, &h, ("cpu".into(), None), run);
    drop(h);
    assert_eq!(ticks, 3 * 2 * 2, "a tick per answer, every way and level");
    assert_eq!(report.questions, 2);
    assert!(report.energy.starts_with("not measured"), "{}", report.energy);
    let ways: Vec<Way> = report.ways.iter().map(|w| w.way).collect();
    assert_eq!(ways, Way::ALL);
    for w in &report.ways {
        assert_eq!(w.levels.len(), 2);
        assert!(w.step_floor_s > 0.0 && w.ceilings.bytes_per_s > 0.0);
        assert!(w.prefill_token_floor_s > 0.0 && w.ceilings.flop_per_s > 0.0);
        for l in &w.levels {
            assert_eq!((l.answers, l.repeats), (2, 1), "{:?} c={}", w.way, l.concurrency);
            assert!(l.energy_j_per_answer.is_none());
            assert!(l.ttft_s.p50 > 0.0 && l.ttft_s.p50 <= l.e2e_s.p50, "{:?}", w.way);
            assert!(l.per_token_s.p50 > 0.0 && l.per_token_s.p50 <= l.per_token_s.p99);
            assert!(l.per_token_p50_to_floor > 0.0 && l.per_token_p50_to_floor <= 1.0);
            // Against our own matmul's rate, which a prefill can match on a noisy machine.
            assert!(l.ttft_to_floor > 0.0 && l.ttft_to_floor < 2.0, "{:?} {}", w.way, l.ttft_to_floor);
            assert!(l.e2e_to_floor > 0.0 && l.e2e_to_floor < 2.0, "{:?} {}", w.way, l.e2e_to_floor);
            assert!(l.tokens_per_s_to_roofline > 0.0 && l.tokens_per_s_to_roofline <= 1.0);
            assert!(l.generated_tokens_per_answer >= 1.0);
        }
        // On the CPU a request's tokens do not depend on its batch.
        let (a, b) = (&w.levels[0], &w.levels[1]);
        assert_eq!(a.correct, b.correct, "{:?}", w.way);
        assert_eq!(a.processed_tokens_per_answer, b.processed_tokens_per_answer, "{:?}", w.way);
    }
    let [alone, pimoe, tool] = &report.ways[..] else { unreachable!() };
    // The demo's router hands both numbers to the experts; the LLM alone gets neither.
    assert_eq!(pimoe.levels[0].correct, 2, "{:?}", pimoe.answers);
    assert!(pimoe.levels[0].injected_tokens_per_answer > 0.0);
    assert_eq!(alone.levels[0].injected_tokens_per_answer, 0.0);
    // With its worked examples the model writes both calls, the tool answers them, and
    // the conversation is prefilled twice: more tokens through the model than PiMoE.
    assert_eq!(tool.levels[0].tool_calls, Some(2), "{:?}", tool.answers);
    assert_eq!(tool.levels[0].tool_errors, Some(0));
    assert_eq!(tool.levels[0].correct, 2, "{:?}", tool.answers);
    assert!(tool.levels[0].processed_tokens_per_answer > 2.0 * pimoe.levels[0].processed_tokens_per_answer);
    let table = report.summary();
    assert_eq!(table.lines().count(), 1 + 6 + 2, "{table}");
    assert!(table.contains("tool-call"), "{table}");
}

#[test]
fn the_expert_server_answers_refuses_and_names_its_tools() {
    let comp = load_tools(&manifest()).unwrap();
    let q = &demo::questions().unwrap()[0];
    let pimoe::Prompt::Chat { user, .. } = q.prompt() else { panic!("grid prompts are chat prompts") };
    let calls = [
        serde_json::json!({"id": 1, "tool": q.expert(), "context": user}),
        serde_json::json!({"id": 2, "tool": "calculator", "context": user}),
        serde_json::json!({"id": 3, "tool": q.expert(), "context": "no grid here"}),
    ];
    let input: String = calls.iter().map(|c| format!("{c}\n")).collect();
    let mut out = Vec::new();
    serve(&comp, Cursor::new(input), &mut out).unwrap();
    let replies: Vec<Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(replies.len(), 3);
    let number: f64 = replies[0]["result"].as_str().unwrap().trim_end_matches('.').parse().unwrap();
    assert!((number - q.truth).abs() <= 1e-6 * q.truth.abs().max(1.0), "{number} vs {}", q.truth);
    let e = replies[1]["error"].as_str().unwrap();
    assert!(e.contains("no tool named \"calculator\"") && e.contains("dc-power-flow"), "{e}");
    assert!(replies[2]["error"].is_string() && replies[2].get("result").is_none(), "{}", replies[2]);
    // A line that is not a call gets an error naming it, and the server goes on.
    let mut out = Vec::new();
    serve(&comp, Cursor::new("{\"id\": 4}\n"), &mut out).unwrap();
    let reply: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(reply["id"], 4);
    assert!(reply["error"].as_str().unwrap().contains("missing field `tool`"), "{reply}");
}

/// Issue 17: hostile lines on the pipe. Each gets one short error reply, with its id
/// wherever the line reads as JSON up to the id; the good call after them is answered
/// and the process exits 0 at the end of its input.
#[test]
fn the_expert_server_answers_every_hostile_line_and_goes_on() {
    let path = manifest();
    let q = &demo::questions().unwrap()[0];
    let pimoe::Prompt::Chat { user, .. } = q.prompt() else { panic!("grid prompts are chat prompts") };
    let tool = q.expert();
    let call = |id: u64, context: &str| serde_json::json!({"id": id, "tool": tool, "context": context});
    let head = |id: u64| format!("{{\"id\": {id}, \"tool\": \"{tool}\", \"context\": ");
    let deep = format!("{}{}{}}}", head(4), "[".repeat(1000), "]".repeat(1000));
    let cases: Vec<(Vec<u8>, Option<u64>, &str)> = vec![
        (head(1).into_bytes(), Some(1), "not valid JSON"),
        (format!("{}\"{}\"}}", head(2), "x".repeat(2 << 20)).into_bytes(), Some(2), "longer than"),
        ([head(3).as_bytes(), b"\"bus \xff\xfe\"}"].concat(), Some(3), "not UTF-8"),
        (deep.into_bytes(), Some(4), "expected a string"),
        (format!("{}1e400}}", head(5)).into_bytes(), Some(5), "out of range"),
        (format!("{}NaN}}", head(6)).into_bytes(), Some(6), "not valid JSON"),
        (br#"{"id": 7, "tool": "calculator", "context": "x"}"#.to_vec(), Some(7), "no tool named"),
        (br#"{"id": 8, "tool": 12, "context": "x"}"#.to_vec(), Some(8), "not a call"),
        (br#"{"id": "nine", "tool": "x", "context": "x"}"#.to_vec(), None, "not a call"),
        (br#"[1, 2]"#.to_vec(), None, "not a call"),
        (
            format!(r#"{{"id": 11, "tool": "{}", "context": "x"}}"#, "t".repeat(100_000)).into_bytes(),
            Some(11),
            "no tool named",
        ),
        (call(12, &user.replacen("100", "1e400", 1)).to_string().into_bytes(), Some(12), "1e400"),
        (call(13, &user.replacen("100", "NaN", 1)).to_string().into_bytes(), Some(13), "NaN"),
        (call(14, &user).to_string().into_bytes(), Some(14), ""),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["expert-server", "--manifest", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: Vec<u8> = cases.iter().flat_map(|(line, ..)| [&line[..], b"\n"].concat()).collect();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), cases.len(), "{text}");
    for ((_, id, needle), line) in cases.iter().zip(&replies) {
        assert!(line.len() < 1024, "a reply of {} bytes: {line}", line.len());
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["id"].as_u64(), *id, "{line}");
        if !needle.is_empty() {
            assert!(r["error"].as_str().is_some_and(|e| e.contains(needle)), "{needle:?} in {line}");
        }
    }
    let last: Value = serde_json::from_str(replies[cases.len() - 1]).unwrap();
    let number: f64 = last["result"].as_str().unwrap().trim_end_matches('.').parse().unwrap();
    assert!((number - q.truth).abs() <= 1e-6 * q.truth.abs().max(1.0), "{number} vs {}", q.truth);
}

#[test]
fn bad_scenario_arguments_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pimoe")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    manifest();
    let e = run(&["bench", "--scenario", "chess", "--device", "cpu"]);
    assert!(e.contains("unknown scenario \"chess\"") && e.contains("grid"), "{e}");
    let e = run(&["bench", "--scenario", "dc", "--concurrency", "0", "--device", "cpu"]);
    assert!(e.contains("concurrency levels must be positive"), "{e}");
    let e = run(&["bench", "--scenario", "dc", "--manifest", "/nonexistent/m.json", "--device", "cpu"]);
    assert!(e.contains("/nonexistent/m.json"), "{e}");
    let e = run(&["expert-server", "--manifest", "/nonexistent/m.json"]);
    assert!(e.contains("/nonexistent/m.json"), "{e}");
}

#[test]
fn profile_steps_run_that_many_steps() {
    manifest();
    let out = Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["bench", "--scenario", "dc", "--per-task", "1", "--concurrency", "2"])
        .args(["--profile-steps", "3", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("profiled 3 scheduler steps at concurrency 2"), "{err}");
    assert!(out.stdout.is_empty(), "a profiling run writes no report");
}

#[test]
fn the_tool_call_way_over_http_against_a_spawned_server() {
    manifest();
    let json = std::env::temp_dir().join(format!("pimoe-bench-http-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["bench", "--scenario", "dc", "--per-task", "1", "--concurrency", "1", "--http"])
        .args(["--device", "cpu", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let ways: Vec<&str> =
        report["ways"].as_array().unwrap().iter().map(|w| w["way"].as_str().unwrap()).collect();
    assert_eq!(ways, ["llm-only", "pimoe", "tool-call", "tool-call-http"]);
    let (pimoe, http) = (&report["ways"][1]["levels"][0], &report["ways"][3]);
    let l = &http["levels"][0];
    // Through the tools API the model calls the tool (one worked example per tool, sent
    // as prior messages) and answers with its number.
    assert_eq!(
        (l["answers"].as_u64(), l["tool_calls"].as_u64(), l["tool_errors"].as_u64()),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!((l["correct"].as_u64(), l["accuracy"].as_f64()), (Some(1), Some(1.0)), "{}", http["answers"]);
    assert!(http["answers"][0]["number"].is_number(), "{}", http["answers"]);
    let (ttft, e2e) = (l["ttft_s"]["p50"].as_f64().unwrap(), l["e2e_s"]["p50"].as_f64().unwrap());
    assert!(ttft > 0.0 && ttft <= e2e, "{ttft} {e2e}");
    // Two requests, each prefilled whole, and no injected tokens: the LLM is served alone.
    let processed = |l: &Value| l["processed_tokens_per_answer"].as_f64().unwrap();
    assert!(processed(l) > 2.0 * processed(pimoe), "{} vs {}", processed(l), processed(pimoe));
    assert_eq!(l["injected_tokens_per_answer"].as_f64(), Some(0.0));
    assert!(l["generated_tokens_per_answer"].as_f64().unwrap() >= 1.0);
    assert!(err.contains("tool-call-http"), "the table has the way: {err}");
    // The server was started from this binary on the LLM alone, and is gone.
    let served = report["http_server"].as_str().unwrap();
    assert!(served.contains("\"serve\" \"--model\"") && served.contains("smollm2"), "{served}");
    let addr = served.trim_start_matches("http://").split('/').next().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "{addr} still answers");
}

#[test]
fn an_http_server_that_is_not_there_is_a_clear_error() {
    manifest();
    let out = Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["bench", "--scenario", "dc", "--per-task", "1", "--concurrency", "1"])
        .args(["--server", "http://127.0.0.1:1/v1", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Checked before the other ways run: a bad URL costs seconds, not the whole run.
    assert!(err.contains("GET http://127.0.0.1:1/v1/models") && err.contains("refused"), "{err}");
    assert!(!err.contains("answers ("), "no answer was timed: {err}");
}
