//! The scheduler and a whole composition on the tiny fixture model: expert results
//! injected with provenance, many concurrent requests (some firing, some not, some
//! failing in T2C) each giving exactly the tokens it gives alone, KV exhaustion with
//! preemption, cancellation, and malformed manifests.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pimoe::backend::cpu::CpuBackend;
use pimoe::sampling::SamplingParams;
use pimoe::scheduler::{Event, Provenance, RequestId, Scheduler, SchedulerConfig};
use pimoe::{Engine, Finish, Prompt, Request};

use common::compose::{composition, write_router, write_safetensors, GOOD};
use common::{fixtures, scratch_dir};

fn request(prompt: &str, max_tokens: usize, seed: u64) -> Request {
    let temperature = if seed % 2 == 0 { 0.0 } else { 0.9 };
    Request {
        prompt: Prompt::Raw(prompt.into()),
        max_tokens,
        sampling: SamplingParams { temperature, top_k: 40, top_p: 0.95, seed },
    }
}

/// Everything one request produced: tokens with provenance, notes, finish.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    tokens: Vec<(u32, Provenance)>,
    notes: Vec<String>,
    finish: Option<Finish>,
}

fn run_all(engine: &Engine<CpuBackend>, cfg: SchedulerConfig, reqs: &[Request]) -> Vec<Outcome> {
    run_counted(engine, cfg, reqs).0
}

/// The outcomes and the number of preemptions.
fn run_counted(engine: &Engine<CpuBackend>, cfg: SchedulerConfig, reqs: &[Request]) -> (Vec<Outcome>, usize) {
    let mut s = Scheduler::new(engine, cfg).unwrap();
    let ids: Vec<RequestId> = reqs.iter().map(|r| s.submit(r).unwrap()).collect();
    let mut out: HashMap<RequestId, Outcome> = HashMap::new();
    let mut steps = 0;
    while !s.is_idle() {
        steps += 1;
        assert!(steps < 10_000, "the scheduler makes no progress");
        for ev in s.step().unwrap() {
            match ev {
                Event::Token { id, token, provenance, .. } => {
                    out.entry(id).or_default().tokens.push((token, (*provenance).clone()))
                }
                Event::Note { id, message, .. } => out.entry(id).or_default().notes.push(message),
                Event::Finished { id, finish, .. } => out.entry(id).or_default().finish = Some(finish),
            }
        }
    }
    (ids.iter().map(|id| out.remove(id).unwrap_or_default()).collect(), s.preemptions())
}

fn alone(engine: &Engine<CpuBackend>, req: &Request) -> Outcome {
    let cfg = SchedulerConfig { max_step_tokens: 512, max_running: 1, kv_tokens: 1024 };
    run_all(engine, cfg, std::slice::from_ref(req)).pop().unwrap()
}

#[test]
fn expert_result_is_injected_with_provenance() {
    let path = composition("sched-inject", r#"{ "refractory": 3, "max_firings": 2 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let o = alone(&engine, &request(GOOD, 40, 0));
    let expert: Vec<&Provenance> =
        o.tokens.iter().map(|(_, p)| p).filter(|p| matches!(p, Provenance::Expert { .. })).collect();
    assert!(!expert.is_empty(), "no expert tokens: {o:?}");
    let Provenance::Expert { expert: name, inputs, outputs } = expert[0] else { unreachable!() };
    assert_eq!(name, "solve");
    assert_eq!(inputs, &vec![2.0, 1.0, 1.0, 3.0, 3.0, 5.0]);
    assert_eq!(outputs.len(), 2);
    assert!((outputs[0] - 0.8).abs() < 1e-15 && (outputs[1] - 1.4).abs() < 1e-15, "{outputs:?}");
    // The router fires on the first token, then after each refractory span, at most twice.
    let spans =
        o.tokens.windows(2).filter(|w| w[0].1 == Provenance::Llm && w[1].1 != Provenance::Llm).count()
            + usize::from(o.tokens[0].1 != Provenance::Llm);
    assert_eq!(spans, 2, "expected two expert spans: {o:?}");
    // The span is exactly the formatted result; the template's closing period
    // follows it as sentence punctuation (the model's own, or ours in its place).
    let first = o.tokens.iter().position(|(_, p)| p == expert[0]).unwrap();
    let end = first + o.tokens[first..].iter().take_while(|(_, p)| p == expert[0]).count();
    let ids = |r: std::ops::Range<usize>| o.tokens[r].iter().map(|(t, _)| *t).collect::<Vec<_>>();
    assert_eq!(engine.tokenizer.decode(&ids(first..end)).unwrap(), " x = 0.800000, 1.400000");
    assert!(engine.tokenizer.decode(&ids(end..end + 1)).unwrap().starts_with('.'), "{o:?}");
    assert_eq!(o.finish, Some(Finish::Length));
}

/// The tiny composition with an `after_result` and one firing.
fn ending(name: &str, after: &str) -> Engine<CpuBackend> {
    let path = composition(name, r#"{ "max_firings": 1 }"#);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = format!("{},\n  \"after_result\": {after}\n}}\n", text.trim_end().strip_suffix('}').unwrap());
    std::fs::write(&path, text).unwrap();
    Engine::load_manifest(CpuBackend, &path).unwrap()
}

/// The text after the expert's span, and how many tokens it took.
fn after_span(engine: &Engine<CpuBackend>, o: &Outcome) -> (String, usize) {
    let end = o.tokens.iter().rposition(|(_, p)| *p != Provenance::Llm).expect("an expert span") + 1;
    let ids: Vec<u32> = o.tokens[end..].iter().map(|(t, _)| *t).collect();
    (engine.tokenizer.decode(&ids).unwrap(), ids.len())
}

#[test]
fn after_result_ends_the_answer_where_the_composition_says() {
    // "sentence": the template ends in a period, so the answer ends at it (the
    // model's own period with what it glues to it, or ours), well before the budget.
    let engine = ending("after-sentence", r#""sentence""#);
    for seed in 0..4 {
        let o = alone(&engine, &request(GOOD, 40, seed));
        assert_eq!(o.finish, Some(Finish::Stop), "seed {seed}: {o:?}");
        let (tail, _) = after_span(&engine, &o);
        assert!(
            tail.starts_with('.') && !tail.trim_end().contains(char::is_whitespace),
            "seed {seed}: {tail:?}"
        );
    }
    // {"max_tokens": 3}: at most three of the model's tokens after the closing period.
    let engine = ending("after-tokens", r#"{ "max_tokens": 3 }"#);
    for seed in 0..4 {
        let o = alone(&engine, &request(GOOD, 40, seed));
        assert_eq!(o.finish, Some(Finish::Stop), "seed {seed}: {o:?}");
        let (tail, n) = after_span(&engine, &o);
        assert!(tail.starts_with('.') && (1..=4).contains(&n), "seed {seed}: {n} tokens {tail:?}");
    }
    // {"max_tokens": 0}: the result and its period end the answer.
    let engine = ending("after-none", r#"{ "max_tokens": 0 }"#);
    let o = alone(&engine, &request(GOOD, 40, 0));
    assert_eq!((o.finish, after_span(&engine, &o).0.as_str()), (Some(Finish::Stop), "."), "{o:?}");
    // "continue" (the default) writes on past the sentence, to its own end or the budget.
    let engine = ending("after-continue", r#""continue""#);
    let o = alone(&engine, &request(GOOD, 40, 0));
    let (tail, n) = after_span(&engine, &o);
    assert!(n > 4 && tail.trim_end().contains(char::is_whitespace), "{n} tokens {tail:?}");
}

/// The text after the last LLM token, which must be the failure text standing in
/// for the result, with the expert and why; and the answer ends there.
fn failure_text(engine: &Engine<CpuBackend>, o: &Outcome) -> String {
    let start =
        o.tokens.iter().position(|(_, p)| matches!(p, Provenance::Failed { .. })).expect("no failure text");
    assert!(
        o.tokens[start..]
            .iter()
            .all(|(_, p)| matches!(p, Provenance::Failed { expert, .. } if expert == "solve")),
        "the answer goes on after the failure text: {o:?}"
    );
    assert_eq!(o.finish, Some(Finish::ExpertFailed), "{o:?}");
    let ids: Vec<u32> = o.tokens[start..].iter().map(|(t, _)| *t).collect();
    engine.tokenizer.decode(&ids).unwrap()
}

#[test]
fn t2c_failure_is_visible_in_the_answer_not_a_guess() {
    let path = composition("sched-fail", r#"{ "max_firings": 1 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let o = alone(&engine, &request("Solve A = [2, 1, 1] and b = [3, 5].", 10, 0));
    assert_eq!(o.notes.len(), 1, "{o:?}");
    assert!(o.notes[0].starts_with("solve: ") && o.notes[0].contains("list"), "{}", o.notes[0]);
    let text = failure_text(&engine, &o);
    assert!(text.starts_with("[solve could not compute this: ") && text.ends_with(']'), "{text:?}");
    assert!(text.contains("list"), "{text:?}");
    // The failure text goes in whole even past the token budget: cut, it would not
    // say why.
    let o = alone(&engine, &request("Solve A = [2, 1, 1] and b = [3, 5].", 2, 0));
    assert_eq!(failure_text(&engine, &o), text);
}

#[test]
fn singular_system_is_reported_in_the_answer() {
    let path = composition("sched-singular", r#"{ "max_firings": 1 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let o = alone(&engine, &request("Solve A = [1, 2, 2, 4] and b = [3, 5].", 10, 0));
    assert_eq!(o.notes.len(), 1, "{o:?}");
    assert!(o.notes[0].contains("singular"), "{}", o.notes[0]);
    let text = failure_text(&engine, &o);
    assert!(text.contains("singular"), "{text:?}");
    // The composition's own text, with its placeholders filled in.
    let text = std::fs::read_to_string(&path).unwrap();
    let text = format!(
        "{},\n  \"on_failure\": \" (not computed by {{expert}}: {{reason}})\"\n}}\n",
        text.trim_end().strip_suffix('}').unwrap()
    );
    std::fs::write(&path, text).unwrap();
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let o = alone(&engine, &request("Solve A = [1, 2, 2, 4] and b = [3, 5].", 40, 0));
    let text = failure_text(&engine, &o);
    assert!(text.starts_with(" (not computed by solve: singular"), "{text:?}");
}

fn mixed_requests() -> Vec<Request> {
    let prompts = [
        GOOD,
        "Solve A = [4, 1, 2, 5] and b = [1, 2] please, and explain each of the steps in detail.",
        "No numbers here.",
        "Solve A = [1, 0, 0, 1] and b = [7, -2.5].",
        "A much longer prompt that says nothing about any matrix at all, but goes on and on about the weather, the sea and the mountains, to make a long prefill.",
        "Solve A = [3, 2] and b = [1].",
    ];
    (0..12).map(|i| request(prompts[i % prompts.len()], 6 + (i * 7) % 25, i as u64)).collect()
}

#[test]
fn concurrent_requests_equal_running_alone() {
    let path = composition("sched-many", r#"{ "refractory": 2, "max_firings": 3 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let reqs = mixed_requests();
    let cfg = SchedulerConfig { max_step_tokens: 48, max_running: 5, kv_tokens: 4096 };
    let together = run_all(&engine, cfg, &reqs);
    let mut fired = 0;
    for (i, r) in reqs.iter().enumerate() {
        let single = alone(&engine, r);
        assert_eq!(together[i], single, "request {i} differs when batched");
        assert!(together[i].finish.is_some());
        fired += usize::from(together[i].tokens.iter().any(|(_, p)| *p != Provenance::Llm));
    }
    assert!(fired > 0 && fired < reqs.len(), "some requests must fire and some not: {fired}");
    // Engine::generate_batch is the same loop, with answers returned in order.
    let mut finished = Vec::new();
    let answers = engine.generate_batch(&reqs, cfg, |i| finished.push(i)).unwrap();
    finished.sort_unstable();
    assert_eq!(finished, (0..reqs.len()).collect::<Vec<_>>());
    for (a, o) in answers.iter().zip(&together) {
        let tokens: Vec<(u32, Provenance)> =
            a.tokens.iter().map(|t| (t.id, (*t.provenance).clone())).collect();
        assert_eq!(tokens, o.tokens);
        assert_eq!((&a.notes, Some(a.finish)), (&o.notes, o.finish));
        assert_eq!(a.text, a.tokens.iter().map(|t| t.text.as_str()).collect::<String>());
    }
}

#[test]
fn kv_exhaustion_preempts_and_recomputes() {
    let path = composition("sched-kv", r#"{ "refractory": 2, "max_firings": 3 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let reqs = mixed_requests();
    // Room for about two sequences at a time: admission waits and running ones are
    // preempted as they grow.
    let cfg = SchedulerConfig { max_step_tokens: 64, max_running: 12, kv_tokens: 128 };
    let (together, preemptions) = run_counted(&engine, cfg, &reqs);
    assert!(preemptions > 0, "the cache was never short: the test does not test preemption");
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(together[i], alone(&engine, r), "request {i} differs after preemption");
    }
    eprintln!("{preemptions} preemptions");
}

#[test]
fn plain_engine_matches_generate_and_cancel_frees_blocks() {
    let engine = Engine::load(CpuBackend, &fixtures().join("tiny-qwen2")).unwrap();
    let req = request("Hello there", 12, 3);
    let g = engine.generate(&req, |_| {}).unwrap();
    let o = alone(&engine, &req);
    assert_eq!(g.tokens, o.tokens.iter().map(|(t, _)| *t).collect::<Vec<_>>());

    let mut s =
        Scheduler::new(&engine, SchedulerConfig { max_step_tokens: 64, max_running: 4, kv_tokens: 256 })
            .unwrap();
    let a = s.submit(&request("one", 50, 0)).unwrap();
    let b = s.submit(&request("two", 5, 0)).unwrap();
    s.step().unwrap();
    assert!(s.cancel(a));
    assert!(!s.cancel(a), "a cancelled request is gone");
    let mut finished = Vec::new();
    while !s.is_idle() {
        for ev in s.step().unwrap() {
            if let Event::Finished { id, .. } = ev {
                finished.push(id);
            }
        }
    }
    assert_eq!(finished, vec![b]);
}

fn load_err(name: &str, edit: impl Fn(&str) -> String) -> String {
    let path = composition(name, "{}");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    match Engine::load_manifest(CpuBackend, &path) {
        Ok(_) => panic!("{name}: the broken manifest loaded"),
        Err(e) => e.to_string(),
    }
}

/// The T2C pattern of `composition`, as the manifest file spells it.
const PATTERN: &str = r#""pattern": "list[4] after \"A =\"; list[2] after \"b =\"""#;

#[test]
fn malformed_manifests_name_what_is_wrong() {
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown-field",
            Box::new(|t: &str| t.replace("\"name\": \"solve\"", "\"name\": \"solve\", \"colour\": 1")),
            "colour",
        ),
        ("unknown-router-field", Box::new(|t: &str| t.replace("\"hidden\": 4", "\"hiden\": 4")), "hiden"),
        ("unknown-kind", Box::new(|t: &str| t.replace("\"linear-solve\"", "\"quantum\"")), "quantum"),
        ("missing-field", Box::new(|t: &str| t.replace("\"format\": {", "\"formt\": {")), "format"),
        (
            "unknown-expert",
            Box::new(|t: &str| t.replace("\"experts\": [\"solve\"]", "\"experts\": [\"solver\"]")),
            "solver",
        ),
        ("bad-pattern", Box::new(|t: &str| t.replace("list[4] after", "lst[4] after")), "pattern"),
        ("bad-template", Box::new(|t: &str| t.replace("{values:.6f}", "{value:.6q}")), "format"),
        (
            "bad-order",
            Box::new(|t: &str| t.replace("\"expert\": {", "\"order\": \"0..5\", \"expert\": {")),
            "order",
        ),
        (
            "missing-weights",
            Box::new(|t: &str| t.replace("router.safetensors", "nope.safetensors")),
            "nope.safetensors",
        ),
        ("not-json", Box::new(|t: &str| t[..t.len() / 2].to_string()), "manifest"),
        (
            "pattern-and-grid",
            Box::new(|t: &str| {
                t.replace("\"kind\": \"extract\", ", "\"kind\": \"extract\", \"grid\": \"dc\", ")
            }),
            "not both",
        ),
        (
            "extract-neither",
            Box::new(|t: &str| t.replace(PATTERN, "\"grid\": null")),
            "needs `pattern` or `grid`",
        ),
        ("grid-unknown", Box::new(|t: &str| t.replace(PATTERN, "\"grid\": \"hvdc\"")), "hvdc"),
        (
            "grid-wrong-expert",
            Box::new(|t: &str| t.replace(PATTERN, "\"grid\": \"ac\"")),
            "feeds a power_flow expert",
        ),
        (
            "grid-with-order",
            Box::new(|t: &str| {
                t.replace(PATTERN, "\"grid\": \"dc\"")
                    .replace("\"expert\": {", "\"order\": \"0..6\", \"expert\": {")
            }),
            "leave it out",
        ),
        (
            "bad-after-result",
            Box::new(|t: &str| {
                t.replacen("\"experts\": [{", "\"after_result\": \"paragraph\", \"experts\": [{", 1)
            }),
            "paragraph",
        ),
        (
            "negative-after-tokens",
            Box::new(|t: &str| {
                t.replacen("\"experts\": [{", "\"after_result\": { \"max_tokens\": -2 }, \"experts\": [{", 1)
            }),
            "integer `-2`",
        ),
        (
            "bad-on-failure",
            Box::new(|t: &str| {
                t.replacen("\"experts\": [{", "\"on_failure\": \"[{expret}]\", \"experts\": [{", 1)
            }),
            "{expret}",
        ),
        (
            "power-flow-limits",
            Box::new(|t: &str| {
                t.replace(PATTERN, "\"grid\": \"ac\"").replace(
                    "\"kind\": \"linear-solve\", \"n\": 2",
                    "\"kind\": \"power-flow\", \"max_buses\": 100",
                )
            }),
            "max_buses",
        ),
    ];
    for (name, edit, needle) in cases {
        let err = load_err(&format!("manifest-{name}"), edit);
        assert!(err.contains(needle), "{name}: error does not name `{needle}`: {err}");
    }
    // A mis-shaped router tensor names the tensor.
    let path = composition("manifest-shape", "{}");
    write_router(&path.with_file_name("router.safetensors"), 359);
    let err = Engine::load_manifest(CpuBackend, &path).err().expect("wrong vocab must fail").to_string();
    assert!(err.contains("embedding.weight"), "{err}");
}

#[test]
fn provenance_is_shared_per_injection() {
    let path = composition("sched-arc", r#"{ "max_firings": 1 }"#);
    let engine = Engine::load_manifest(CpuBackend, &path).unwrap();
    let mut s = Scheduler::new(&engine, SchedulerConfig::default()).unwrap();
    s.submit(&request(GOOD, 30, 0)).unwrap();
    let mut provs: Vec<Arc<Provenance>> = Vec::new();
    while !s.is_idle() {
        for ev in s.step().unwrap() {
            if let Event::Token { provenance, .. } = ev {
                if *provenance != Provenance::Llm {
                    provs.push(provenance);
                }
            }
        }
    }
    assert!(provs.len() > 1 && provs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
}

/// A manifest with a hidden-state gate (always firing) and, optionally, a learned
/// T2C head over the pooled hidden states instead of the exact pattern.
fn hidden_composition(name: &str, learned: bool, backbone: bool) -> PathBuf {
    let dir = scratch_dir(name);
    let h = 96; // tiny-qwen2's hidden size
    let mut rng = pimoe::sampling::Rng::new(11);
    let mut r = |n: usize, s: f32| (0..n).map(|_| (rng.next_f32() - 0.5) * s).collect::<Vec<f32>>();
    let gate = vec![
        ("gate.0.weight", vec![8, h], r(8 * h, 1.0)),
        ("gate.0.bias", vec![8], r(8, 1.0)),
        ("gate.2.weight", vec![1, 8], r(8, 1.0)),
        ("gate.2.bias", vec![1], vec![12.0]),
    ];
    write_safetensors(&dir.join("gate.safetensors"), &gate);
    // A head whose outputs make a well-conditioned 2x2 system: a dominant diagonal
    // through the biases, small weights.
    let head = vec![
        ("head.0.weight", vec![16, h], r(16 * h, 0.2)),
        ("head.0.bias", vec![16], r(16, 0.2)),
        ("head.2.weight", vec![6, 16], r(6 * 16, 0.2)),
        ("head.2.bias", vec![6], vec![4.0, 0.5, 0.5, 3.0, 1.0, 2.0]),
    ];
    write_safetensors(&dir.join("t2c.safetensors"), &head);
    let t2c = if learned && backbone {
        format!(
            r#"{{ "kind": "piern", "weights": "t2c.safetensors", "outputs": 6, "inner": 16, "backbone": {:?} }}"#,
            fixtures().join("tiny-qwen2")
        )
    } else if learned {
        r#"{ "kind": "piern", "weights": "t2c.safetensors", "outputs": 6, "inner": 16 }"#.to_string()
    } else {
        r#"{ "kind": "extract", "pattern": "list[4] after \"A =\"; list[2] after \"b =\"" }"#.to_string()
    };
    let manifest = format!(
        r#"{{
  "llm": {llm:?},
  "router": {{ "kind": "hidden-gate", "weights": "gate.safetensors", "experts": ["solve"], "inner": 8,
              "activation": "sigmoid", "policy": {{ "refractory": 3, "max_firings": 2 }} }},
  "experts": [{{ "name": "solve", "t2c": {t2c}, "expert": {{ "kind": "linear-solve", "n": 2 }},
                "format": {{ "template": " x = {{values:.6f}}." }} }}]
}}"#,
        llm = fixtures().join("tiny-qwen2")
    );
    std::fs::write(dir.join("pimoe.json"), manifest).unwrap();
    dir.join("pimoe.json")
}

/// A softmax hidden gate over ["no expert", "solve3", "solve"] that always prefers
/// "solve3" (a 3x3 solver whose T2C wants nine numbers) and ranks "solve" second.
fn rerouting_composition(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let h = 96; // tiny-qwen2's hidden size
    let gate =
        vec![("gate.0.weight", vec![3, h], vec![0.0; 3 * h]), ("gate.0.bias", vec![3], vec![-9.0, 3.0, 1.0])];
    write_safetensors(&dir.join("gate.safetensors"), &gate);
    let expert = |name: &str, n: usize| {
        format!(
            r#"{{ "name": "{name}", "t2c": {{ "kind": "extract", "pattern": "list[{}] after \"A =\"; list[{n}] after \"b =\"" }},
                "expert": {{ "kind": "linear-solve", "n": {n} }}, "format": {{ "template": " x = {{{{values:.6f}}}}." }} }}"#,
            n * n
        )
    };
    let manifest = format!(
        r#"{{
  "llm": {llm:?},
  "router": {{ "kind": "hidden-gate", "weights": "gate.safetensors", "experts": ["solve3", "solve"],
              "activation": "softmax", "policy": {{ "max_firings": 1 }} }},
  "experts": [{}, {}]
}}"#,
        expert("solve3", 3),
        expert("solve", 2),
        llm = fixtures().join("tiny-qwen2")
    );
    std::fs::write(dir.join("pimoe.json"), manifest).unwrap();
    dir.join("pimoe.json")
}

#[test]
fn a_refusing_t2c_hands_the_question_to_the_gates_next_choice() {
    let engine = Engine::load_manifest(CpuBackend, &rerouting_composition("sched-reroute")).unwrap();
    let mut s = Scheduler::new(&engine, SchedulerConfig::default()).unwrap();
    s.submit(&request(GOOD, 12, 0)).unwrap();
    let (mut experts, mut notes, mut stats) = (Vec::new(), Vec::new(), None);
    while !s.is_idle() {
        for ev in s.step().unwrap() {
            match ev {
                Event::Token { provenance, .. } => {
                    if let Provenance::Expert { expert, outputs, .. } = &*provenance {
                        experts.push((expert.clone(), outputs.clone()));
                    }
                }
                Event::Note { message, .. } => notes.push(message),
                Event::Finished { stats: st, .. } => stats = Some(st),
            }
        }
    }
    // "solve3" found no nine numbers; "solve", ranked second, computed the answer.
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        !experts.is_empty() && experts.iter().all(|(name, x)| name == "solve" && x.len() == 2),
        "{experts:?}"
    );
    assert!((experts[0].1[0] - 0.8).abs() < 1e-15 && (experts[0].1[1] - 1.4).abs() < 1e-15);
    let stats = stats.unwrap();
    assert_eq!((stats.reroutes, stats.expert_calls), (1, 1), "{stats:?}");
    // A question no expert takes is one note, from the last one tried.
    let mut s = Scheduler::new(&engine, SchedulerConfig::default()).unwrap();
    let id = s.submit(&request("Solve A = [2, 1, 1] and b = [3, 5].", 12, 0)).unwrap();
    let mut notes = Vec::new();
    while !s.is_idle() {
        for ev in s.step().unwrap() {
            if let Event::Note { id: n, expert, .. } = ev {
                assert_eq!(n, id);
                notes.push(expert);
            }
        }
    }
    assert_eq!(notes, ["solve"]);
}

#[test]
fn hidden_gate_runs_in_the_step_and_batches_like_alone() {
    let engine =
        Engine::load_manifest(CpuBackend, &hidden_composition("sched-hidden", false, false)).unwrap();
    let reqs = mixed_requests();
    let cfg = SchedulerConfig { max_step_tokens: 40, max_running: 4, kv_tokens: 2048 };
    let together = run_all(&engine, cfg, &reqs);
    let mut fired = 0;
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(together[i], alone(&engine, r), "request {i} differs when batched");
        fired += usize::from(together[i].tokens.iter().any(|(_, p)| *p != Provenance::Llm));
    }
    assert!(fired > 0, "the always-open gate never fired");
    // The step's gate (Backend::gate) equals the router's own CPU computation.
    let comp = engine.pimoe.as_ref().unwrap();
    let g = comp.hidden_gate().unwrap();
    let x = common::rand_vec(5 * 96, 3);
    let want = g.probs(&x, 5);
    let layers: Vec<(&[f32], &[f32])> = g.mlp().layers().iter().map(|l| (l.weight(), l.bias())).collect();
    let dg = pimoe::llm::DeviceGate::new(&CpuBackend, &layers, false).unwrap();
    let got = dg.run(&CpuBackend, &x);
    assert_eq!(got, want);
}

#[test]
fn hidden_gate_result_or_failure_replaces_the_sampled_token() {
    let engine =
        Engine::load_manifest(CpuBackend, &hidden_composition("sched-hidden-replace", false, false)).unwrap();
    let plain = Engine::load(CpuBackend, &fixtures().join("tiny-qwen2")).unwrap();
    // T2C finds its numbers: the gate fires on the prompt's last token, so the answer
    // opens with the result, in place of the LLM's first token.
    let o = alone(&engine, &request(GOOD, 12, 0));
    assert!(matches!(o.tokens[0].1, Provenance::Expert { .. }), "{o:?}");
    // T2C fails: the failure text takes the sampled token's place, so the answer
    // holds none of the LLM's would-be number, and ends.
    let req = request("Any prompt without the anchors.", 40, 0);
    let o = alone(&engine, &req);
    assert_eq!(o.notes.len(), 1, "{o:?}");
    assert!(matches!(o.tokens[0].1, Provenance::Failed { .. }), "{o:?}");
    assert!(failure_text(&engine, &o).contains("could not compute this"), "{o:?}");
    assert_ne!(o.tokens[0].0, alone(&plain, &req).tokens[0].0);
}

#[test]
fn learned_t2c_reads_the_pooled_hidden_states() {
    let engine =
        Engine::load_manifest(CpuBackend, &hidden_composition("sched-learned", true, false)).unwrap();
    let req = request("Any prompt at all, the numbers come from the hidden states.", 12, 0);
    let o = alone(&engine, &req);
    let Some((_, Provenance::Expert { inputs, .. })) = o.tokens.iter().find(|(_, p)| *p != Provenance::Llm)
    else {
        panic!("no expert result: {o:?}")
    };
    // The gate fires on the last prompt token, so T2C pooled the prompt's rows.
    let prompt = engine.prompt_ids(&req.prompt).unwrap();
    let b = &engine.backend;
    let mut cache = engine.llm.new_cache(b, prompt.len());
    let mut table = Vec::new();
    cache.reserve(&mut table, prompt.len()).unwrap();
    let step = [pimoe::llm::SeqChunk {
        tokens: &prompt,
        start: 0,
        block_table: &table,
        logits: pimoe::llm::Logits::None,
    }];
    let out = engine.llm.forward_sample_with(b, &mut cache, &step, &[], true, None).unwrap();
    let pimoe::pimoe::compose::T2c::Learned(head) = &engine.pimoe.as_ref().unwrap().experts[0].t2c else {
        unreachable!()
    };
    let want = head.from_rows(&out.hidden).unwrap();
    for (g, w) in inputs.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{inputs:?} vs {want:?}");
    }
}

#[test]
fn learned_t2c_with_its_own_backbone_reads_the_whole_context() {
    let engine =
        Engine::load_manifest(CpuBackend, &hidden_composition("sched-backbone", true, true)).unwrap();
    assert!(engine.backbones[0].is_some());
    let req = request("Any prompt at all, the numbers come from the hidden states.", 12, 0);
    let o = alone(&engine, &req);
    // The always-open gate reads the last prompt token's hidden state, so it fires
    // before the LLM's first token (which is dropped): the answer opens with the
    // expert's result and the backbone read the prompt alone.
    let Some((_, Provenance::Expert { inputs, .. })) = o.tokens.first() else {
        panic!("the answer does not open with an expert result: {o:?}")
    };
    let context = engine.prompt_ids(&req.prompt).unwrap();
    let backbone = engine.backbones[0].as_ref().unwrap();
    let mean = backbone.pooled_hidden(&engine.backend, &context, 7).unwrap();
    let pimoe::pimoe::compose::T2c::Learned(head) = &engine.pimoe.as_ref().unwrap().experts[0].t2c else {
        unreachable!()
    };
    let want = head.batch(&mean, 1);
    for (g, w) in inputs.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{inputs:?} vs {want:?}");
    }
}

#[test]
fn the_readme_manifest_parses() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## The composition manifest").nth(1).expect("README has the section");
    let json = section.split("```json").nth(1).and_then(|s| s.split("```").next()).expect("a json block");
    let m = pimoe::pimoe::manifest::Manifest::parse(json, Path::new("README.md")).unwrap();
    assert_eq!(m.experts[0].name, "soh");
    // The battery pattern in it is valid and recovers 13 numbers from a prompt.
    let pimoe::pimoe::manifest::T2cSpec::Extract { pattern: Some(pattern), .. } = &m.experts[0].t2c else {
        panic!()
    };
    let p = pimoe::pimoe::t2c::ExtractPattern::parse(pattern).unwrap();
    let prompt = "锂电池的现在的SoH为1.0。2小时内，每12分钟测量一次的电流数据为[1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]，请计算电池第3600.0秒后的SoH。提示：时间跨度为7200秒、第(3600.0)秒时电流数据为{0.0}。";
    assert_eq!(p.extract(prompt).unwrap().values.len(), 13);
}
