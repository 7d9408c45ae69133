//! The `pimoe` binary end to end on the fixture model: output, timings, and clean
//! errors (an `error:` line and a failure exit code, never a panic).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fixtures, scratch_dir};

fn pimoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pimoe")).args(args).output().expect("run pimoe")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails with a message naming `needle` and no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn generate_streams_text_and_reports_speed() {
    let model = fixtures().join("tiny-llama");
    let out = pimoe(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "The dog",
        "--max-tokens",
        "12",
        "--device",
        "auto",
    ]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{se}");
    assert!(!so.trim().is_empty(), "no text generated");
    assert!(se.contains("device: cpu ("), "auto must say why it uses the CPU: {se}");
    assert!(se.contains("prefill: ") && se.contains("decode: 12 tokens") && se.contains("tok/s"), "{se}");
}

#[test]
fn chat_and_sampling_options_work() {
    let model = fixtures().join("tiny-qwen2");
    let m = model.to_str().unwrap();
    let args = |seed: &str| {
        vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "Hello",
            "--system",
            "Be brief.",
            "--temperature",
            "0.9",
            "--top-p",
            "0.9",
            "--top-k",
            "40",
            "--seed",
            seed,
            "--max-tokens",
            "10",
            "--device",
            "cpu",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |seed: &str| {
        let a = args(seed);
        let out = pimoe(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(run("3"), run("3"), "a seed reproduces its text");
}

#[test]
fn info_prints_architecture_and_size() {
    let out = pimoe(&["info", "--model", fixtures().join("tiny-qwen2").to_str().unwrap()]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.contains("Qwen2ForCausalLM") && so.contains("qkv bias: true"), "{so}");
    // hidden 96, inter 192, 3 layers, 6 heads / 2 kv of 16, vocab 360, tied:
    // 360*96 + 3*(96*96 + 2*96*32 + 96*96 + 160 + 3*96*192 + 2*96) + 96
    assert!(so.contains("parameters:   275328 "), "{so}");
    assert!(so.contains("weights:      1101312 bytes"), "{so}");
}

#[test]
fn errors_are_clean() {
    assert_clean_failure(
        &pimoe(&["generate", "--model", "/no/such/model", "--prompt", "x"]),
        "/no/such/model",
    );
    let model = fixtures().join("tiny-llama");
    assert_clean_failure(
        &pimoe(&["generate", "--model", model.to_str().unwrap(), "--prompt", "x", "--device", "cuda"]),
        "--device cuda",
    );
    assert_clean_failure(
        &pimoe(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            &"word ".repeat(300),
            "--device",
            "cpu",
        ]),
        "context window",
    );

    let dir = scratch_dir("cli-gguf");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out_dir = dir.join("out");
    assert_clean_failure(
        &pimoe(&["import-gguf", bad.to_str().unwrap(), out_dir.to_str().unwrap()]),
        "bad.gguf",
    );
    assert!(!out_dir.exists(), "nothing half-written");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "only bad.gguf remains: {leftovers:?}");
}

#[test]
fn train_fits_an_expert_and_refuses_flags_of_another_kind() {
    let dir = scratch_dir("cli-train");
    let rows: Vec<String> = (0..50)
        .map(|i| format!("{{\"inputs\": [{}], \"outputs\": [{}]}}", i as f64 / 50.0, i as f64 / 25.0))
        .collect();
    let data = dir.join("rows.jsonl");
    std::fs::write(&data, rows.join("\n")).unwrap();
    let (d, o) = (data.to_str().unwrap(), dir.join("out"));
    let out = pimoe(&[
        "train",
        "expert",
        "--kind",
        "mlp",
        "--widths",
        "1,8,1",
        "--data",
        d,
        "--out",
        o.to_str().unwrap(),
        "--name",
        "lin",
        "--epochs",
        "3",
    ]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{se}");
    assert!(so.contains("validation: loss") && so.contains("RMSE"), "{so}");
    assert!(se.contains("epoch 3/3: loss"), "one line per epoch off a terminal: {se}");
    assert!(o.join("lin.safetensors").is_file() && o.join("lin.json").is_file());

    let model = fixtures().join("tiny-llama");
    let out = pimoe(&[
        "train",
        "router",
        "--kind",
        "piern",
        "--inner",
        "4",
        "--model",
        model.to_str().unwrap(),
        "--data",
        d,
        "--out",
        o.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "--inner does not apply to --kind piern");
}

/// Decode steps are replayed as CUDA graphs, not just captured: with greedy decoding
/// the first decode step runs eagerly, the second is captured, and every later one
/// must replay the graph. Read from the PTX emulator's trace (`--device emu` on any
/// machine); a replay that silently fell back to eager launches each time (as it did
/// once: the pool handed a step's index buffers out in changing order) fails here.
#[test]
fn decode_steps_replay_their_graph() {
    let model = common::compose::cuda_sized_model("cli-graphs");
    let out = Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt", "one"])
        .args(["--max-tokens", "12", "--device", "emu"])
        .env("PIMOE_EMU_TRACE", "1")
        .output()
        .expect("run pimoe");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{}", &err[err.len().saturating_sub(3000)..]);
    let graphs = err.lines().filter(|l| l.starts_with("pimoe-emu: graph launch")).count();
    // 12 tokens: the prefill gives the first, then 11 decode steps (1 eager, 1
    // captured and launched, 9 replayed), unless generation stopped early. The short
    // prompt keeps the whole sequence in one 16-token KV block: a second block is a
    // new step shape, with its own warm-up and capture.
    let decoded = err.lines().find_map(|l| l.split("decode: ").nth(1)).expect("no timing line");
    let n: usize = decoded.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 3, "too few tokens to test replay: {decoded}");
    assert_eq!(graphs, n - 2, "graph launches for {n} decoded tokens");
}

#[test]
fn profile_kernels_counts_a_step_and_refuses_bad_shapes() {
    let dir = common::scratch_dir("cli-profile");
    let json = dir.join("p.json");
    // Qwen2.5-0.5B's shapes, one layer: the table, the targets, and the JSON.
    let out = pimoe(&[
        "profile-kernels",
        "--batch",
        "1",
        "--ctx",
        "40",
        "--layers",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for needle in [
        "gemv_m1_f32_bf16",
        "attn_decode_rope_d64_g8_bf16",
        "ESTIMATE H100",
        "target ",
        "first 1 of its 24 layers",
    ] {
        assert!(table.contains(needle), "no {needle:?} in:\n{table}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["graph_launches"], 1, "the counted decode step is one graph launch");
    let rows = report["kernels"].as_array().unwrap();
    let launches: u64 = rows.iter().map(|r| r["launches"].as_u64().unwrap()).sum();
    assert_eq!(launches, report["kernel_launches"].as_u64().unwrap());
    assert!(rows.iter().all(|r| r["bank_conflicts"] == 0.0), "conflicts in {rows:?}");

    // A two-layer prefill: the GEMMs' mma are the FLOPs' minimum; attention's single
    // 64 x 64 tile per head runs whole for the 64-token causal triangle, so its mma
    // are 64^2 / (64 * 65 / 2) = 1.97 of the minimum for every layer.
    let out = pimoe(&[
        "profile-kernels",
        "--step",
        "prefill",
        "--ctx",
        "64",
        "--layers",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ratio =
        |what: &str| report[what].as_f64().unwrap() / report[&format!("{what}_minimum")].as_f64().unwrap();
    assert_eq!(ratio("gemm_mma"), 1.0, "{report}");
    assert!(
        (1.96..1.98).contains(&ratio("attention_mma")),
        "attention mma / minimum {}",
        ratio("attention_mma")
    );

    assert_clean_failure(&pimoe(&["profile-kernels", "--layers", "0"]), "--layers 0");
    assert_clean_failure(&pimoe(&["profile-kernels", "--layers", "25"]), "the model has 24 layers");
    assert_clean_failure(&pimoe(&["profile-kernels", "--batch", "0", "--layers", "1"]), "at least 1");
    assert_clean_failure(
        &pimoe(&["profile-kernels", "--ctx", "40000", "--layers", "1"]),
        "more than the model's 32768",
    );
    assert_clean_failure(
        &pimoe(&["profile-kernels", "--config", "/no/such/config.json"]),
        "/no/such/config.json",
    );
    // Sizes each within its limit, together far past this machine: refused before the
    // first weight is allocated (an abort, before).
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny-llama/config.json")).unwrap())
            .unwrap();
    for (field, v) in [
        ("hidden_size", 65536),
        ("num_attention_heads", 1024),
        ("num_key_value_heads", 1024),
        ("intermediate_size", 262144),
        ("num_hidden_layers", 1024),
    ] {
        config[field] = v.into();
    }
    let huge = dir.join("huge.json");
    std::fs::write(&huge, config.to_string()).unwrap();
    assert_clean_failure(
        &pimoe(&["profile-kernels", "--layers", "1", "--config", huge.to_str().unwrap()]),
        "GiB of memory are available",
    );
}

#[test]
fn perplexity_scores_text_and_the_same_ids_alike() {
    let model = fixtures().join("tiny-llama");
    let m = model.to_str().unwrap();
    let dir = scratch_dir("cli-perplexity");
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, "The quick brown fox jumps over the lazy dog. ".repeat(8)).unwrap();
    let run = |input: &str, file: &Path, json: &Path| {
        let out = pimoe(&[
            "perplexity",
            "--model",
            m,
            input,
            file.to_str().unwrap(),
            "--ctx",
            "40",
            "--json",
            json.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("perplexity"), "{}", text(&out.stdout));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(json).unwrap()).unwrap()
    };
    let a = run("--text", &text_file, &dir.join("a.json"));
    let ppl = a["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "perplexity {ppl}");
    let (tokens, windows) = (a["tokens"].as_u64().unwrap(), a["windows"].as_u64().unwrap());
    assert!(windows >= 2, "the text should span several 40-token windows: {tokens} tokens");
    // Each window's first token is context only (a last window of one token scores nothing).
    let scored = a["scored"].as_u64().unwrap();
    assert!(
        scored == tokens - windows || scored == tokens - windows - 1,
        "{scored} of {tokens} in {windows}"
    );
    for key in ["targets", "nll", "top1", "top1_margin"] {
        assert_eq!(a[key].as_array().unwrap().len() as u64, scored, "{key}");
    }

    // The ids the text became, given as ids (here the report itself), score the same.
    let b = run("--ids", &dir.join("a.json"), &dir.join("b.json"));
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(a["top1"], b["top1"]);
    assert_eq!(a["perplexity"], b["perplexity"]);

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let with = |extra: &[&str]| {
        let mut args = vec!["perplexity", "--model", m, "--device", "cpu"];
        args.extend_from_slice(extra);
        pimoe(&args)
    };
    assert_clean_failure(&with(&["--text", empty.to_str().unwrap()]), "at least 2");
    let t = text_file.to_str().unwrap();
    assert_clean_failure(&with(&["--text", t, "--ctx", "1"]), "--ctx 1");
    assert_clean_failure(&with(&["--text", t, "--ctx", "129"]), "the model's context");
    let bad = dir.join("bad.ids");
    std::fs::write(&bad, "1 2 360").unwrap();
    assert_clean_failure(&with(&["--ids", bad.to_str().unwrap()]), "outside the model's vocabulary");
    assert_clean_failure(&with(&[]), "--text");
}
