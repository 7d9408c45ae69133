//! `pimoe bench-answers` (src/bench/answers.rs): the workload file's checks, the
//! counts it reports against the PiERN fixture's PyTorch generation (the router fires
//! once, the result is injected), and the command's output and clean failures.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pimoe::backend::cpu::CpuBackend;
use pimoe::bench::answers::{self, Workload};
use pimoe::Engine;
use serde_json::{json, Value};

use common::{fixtures, scratch_dir};

fn manifest() -> PathBuf {
    fixtures().join("piern/converted/piern.json")
}

/// The fixture's reference generation (make_piern_reference.py): prompt text, prompt
/// ids, the 64-token window and its firings.
fn generation() -> Value {
    let text = std::fs::read_to_string(fixtures().join("piern/reference.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["generate"].clone()
}

fn write(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn workload_errors_name_the_problem() {
    let dir = scratch_dir("workload-errors");
    let ok = json!({"prompt": "hi", "max_tokens": 4});
    let cases = [
        (json!({"answers": [ok], "repeats": 2}), "unknown field `repeats`"),
        (json!({"warmup": 1}), "missing field `answers`"),
        (json!({"answers": []}), "`answers` is empty"),
        (
            json!({"answers": [ok, {"prompt": "hi", "max_tokens": 0}]}),
            "answers[1]: empty `prompt` or `max_tokens` 0",
        ),
        (json!({"answers": [{"prompt": "hi", "max_tokens": -1}]}), "invalid value"),
    ];
    for (i, (doc, needle)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("w{i}.json"), doc);
        let err = Workload::load(&path).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains(&*path.to_string_lossy()), "{doc}: {err}");
    }
    let path = dir.join("missing.json");
    assert!(Workload::load(&path).unwrap_err().to_string().contains("missing.json"));
    let w = Workload::load(&write(&dir, "good.json", &json!({"answers": [ok]}))).unwrap();
    assert_eq!((w.warmup, w.answers.len(), w.answers[0].max_tokens), (0, 1, 4));
}

/// The same prompt and budget as the fixture's PyTorch generation: the counts must be
/// the reference's (one firing, its result's tokens injected, the rest generated).
#[test]
fn counts_match_the_reference_generation() {
    let g = generation();
    let learned = &g["learned"];
    let firings = learned["firings"].as_array().unwrap();
    let engine = Engine::load_manifest(CpuBackend, &manifest()).unwrap();
    let injected: usize =
        firings.iter().map(|f| engine.tokenizer.encode(f["text"].as_str().unwrap()).unwrap().len()).sum();
    let max_tokens = g["max_tokens"].as_u64().unwrap() as usize;
    let item = json!({"prompt": g["prompt_text"], "max_tokens": max_tokens});
    let dir = scratch_dir("answers-counts");
    let work =
        Workload::load(&write(&dir, "w.json", &json!({"warmup": 1, "answers": [item, item]}))).unwrap();
    let mut seen = Vec::new();
    let report = answers::run(&engine, "fixture", &work, |i, a| seen.push((i, a.latency_s))).unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!((report.bench, report.backend, report.warmup), ("answers", "cpu", 1));
    for a in &report.answers {
        assert_eq!(a.prompt_tokens, g["prompt_ids"].as_array().unwrap().len());
        assert_eq!((a.generated_tokens, a.injected_tokens), (max_tokens - injected, injected));
        assert_eq!(a.expert_calls, firings.len());
        assert_eq!(a.finish, "Length");
        assert!(a.notes.is_empty(), "{:?}", a.notes);
        assert!(a.latency_s > 0.0 && a.first_token_s > 0.0 && a.first_token_s < a.latency_s);
    }
    let lat: Vec<f64> = report.answers.iter().map(|a| a.latency_s).collect();
    let (lo, hi) = (lat.iter().cloned().fold(f64::MAX, f64::min), lat.iter().cloned().fold(0.0, f64::max));
    assert!((lo..=hi).contains(&report.median_latency_s) && (lo..=hi).contains(&report.mean_latency_s));
}

#[test]
fn the_command_writes_its_report_and_fails_cleanly() {
    let dir = scratch_dir("answers-cli");
    let g = generation();
    let work = write(&dir, "w.json", &json!({"answers": [{"prompt": g["prompt_text"], "max_tokens": 12}]}));
    let out_json = dir.join("out.json");
    let run = |work: &Path, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pimoe"))
            .args(["bench-answers", "--device", "cpu", "--manifest"])
            .arg(manifest())
            .arg("--workload")
            .arg(work)
            .arg("--json")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = run(&work, &out_json);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("answer 1/1: "), "{err}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let a = &report["answers"][0];
    let total = a["generated_tokens"].as_u64().unwrap() + a["injected_tokens"].as_u64().unwrap();
    assert_eq!((total, report["answers"].as_array().unwrap().len()), (12, 1));

    let bad = write(&dir, "bad.json", &json!({"answers": [{"prompt": "x", "max_tokens": 1, "seed": 3}]}));
    let not_written = dir.join("never.json");
    let out = run(&bad, &not_written);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("error: ") && err.contains("unknown field `seed`"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !not_written.exists(), "{err}");
}
