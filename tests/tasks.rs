//! The power-flow tasks end to end: the question sets drawn from the PYPOWER fixture,
//! the default demo on the real default model (SmolLM2-135M-Instruct with the
//! committed router), and a small `pimoe eval` run with its router figures.

use std::collections::HashSet;
use std::sync::OnceLock;

use pimoe::backend::cpu::CpuBackend;
use pimoe::grid::{parse, Analysis};
use pimoe::model::fetch::ensure_default_model;
use pimoe::scheduler::SchedulerConfig;
use pimoe::tasks::eval::{self, EvalConfig};
use pimoe::tasks::questions::{question_set, Split};
use pimoe::tasks::{demo, router_data};
use pimoe::{Engine, Prompt};

fn demo_engine() -> &'static Engine<CpuBackend> {
    static E: OnceLock<Engine<CpuBackend>> = OnceLock::new();
    E.get_or_init(|| {
        ensure_default_model(false).expect("fetch and import the default model");
        let manifest = demo::ensure_manifest().expect("write the demo's manifest");
        Engine::load_manifest(CpuBackend, &manifest).expect("load the demo composition")
    })
}

#[test]
fn question_sets_are_seeded_disjoint_and_answerable() {
    for analysis in [Analysis::Dc, Analysis::Ac] {
        let eval = question_set(analysis, Split::Eval, 200, 1).unwrap();
        let again = question_set(analysis, Split::Eval, 200, 1).unwrap();
        let other = question_set(analysis, Split::Eval, 200, 2).unwrap();
        let key = |q: &pimoe::tasks::questions::GridQuestion| {
            (q.case.case.name.clone(), format!("{:?}", q.question), q.truth.to_bits())
        };
        let keys: Vec<_> = eval.iter().map(key).collect();
        assert_eq!(keys, again.iter().map(key).collect::<Vec<_>>(), "a seed gives one set");
        assert_ne!(keys, other.iter().map(key).collect::<Vec<_>>(), "another seed another set");
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 200, "no question twice");

        let train = question_set(analysis, Split::Train, 80, 7).unwrap();
        let train_cases: HashSet<&str> = train.iter().map(|q| q.case.case.name.as_str()).collect();
        assert!(
            eval.iter().all(|q| !train_cases.contains(q.case.case.name.as_str())),
            "a case in both splits"
        );
        let demo = question_set(analysis, Split::Demo, 2, 5).unwrap();
        assert!(demo.iter().all(|q| !q.case.case.name.contains("-p")), "the demo uses the IEEE cases");

        for q in eval.iter().chain(&train) {
            assert_eq!(q.question.analysis, analysis);
            assert_eq!(q.truth.to_bits(), q.case.truth(&q.question).unwrap().to_bits());
            let Prompt::Chat { user, .. } = q.prompt() else { panic!("grid prompts are chat prompts") };
            let (_, back) = parse(&user).unwrap();
            assert_eq!(back, q.question, "the prompt asks what the set says");
            assert!(user.ends_with(&q.sentence()), "{}", q.sentence());
        }
    }
    // More questions than the split holds is an error, not a loop.
    let e = question_set(Analysis::Ac, Split::Demo, 100_000, 1).unwrap_err().to_string();
    assert!(e.contains("distinct"), "{e}");
}

#[test]
fn the_demo_answers_every_question_with_an_experts_number() {
    let mut out = Vec::new();
    let s = demo::run(demo_engine(), true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    eprintln!("{text}");
    assert_eq!(s.questions, 4);
    assert_eq!(s.computed_right, 4, "every number from an expert and within 1e-4 of PYPOWER:\n{text}");
    assert!(text.contains("[dc-power-flow] inputs") && text.contains("[ac-power-flow] inputs"), "{text}");
}

#[test]
fn a_small_eval_scores_both_modes_and_the_router() {
    // `eval::run` takes the composition out and puts it back, so it needs its own engine.
    let manifest = demo::ensure_manifest().unwrap();
    ensure_default_model(false).unwrap();
    let mut engine = Engine::load_manifest(CpuBackend, &manifest).unwrap();
    let cfg = EvalConfig { per_task: 2, seed: 3, max_tokens: 40, sched: SchedulerConfig::default() };
    let mut calls = 0;
    let tasks = eval::run(&mut engine, &cfg, |_, total| {
        calls += 1;
        assert_eq!(total, 8);
    })
    .unwrap();
    assert_eq!(calls, 8);
    assert!(engine.pimoe.is_some(), "the composition is back");
    for t in &tasks {
        assert_eq!(t.questions, 2);
        assert_eq!(t.pimoe.correct, 2, "{t:#?}");
        assert!(t.llm_only.correct <= t.pimoe.correct);
        assert_eq!(t.llm_only.expert_calls, 0);
        assert_eq!(t.router.fired_right, 2, "{:#?}", t.router);
        assert_eq!(t.router.recall, Some(1.0));
    }
    let report = eval::Report::new(&engine, &manifest, &cfg, tasks);
    assert!(report.summary().contains("100.0 %"), "{}", report.summary());
}

#[test]
fn router_data_needs_the_llm_alone() {
    let e =
        router_data::router_rows(demo_engine(), 1, 1, 8, SchedulerConfig::default(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("LLM alone"), "{e}");
}

#[test]
fn a_split_grid_is_a_visible_failure_in_the_answer_and_the_exit_status() {
    use pimoe::grid::{render, Quantity, Question};
    use pimoe::tasks::questions::{cases, SYSTEM};
    demo_engine();
    let manifest = demo::ensure_manifest().unwrap();
    // case14 with the branches between buses 1-5 and 6-14 cut: buses 6..14 have no
    // path to the slack (bus 1), so no angle there has a value.
    let mut case = cases().unwrap().iter().find(|c| c.case.name == "case14").unwrap().case.clone();
    case.branches.retain(|b| (b.from <= 5) == (b.to <= 5));
    let question = Question { analysis: Analysis::Dc, quantity: Quantity::VoltageAngle { bus: 9 } };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pimoe"))
        .args(["generate", "--manifest"])
        .arg(&manifest)
        .args(["--system", SYSTEM, "--max-tokens", "48", "--prompt", &render(&case, &question)])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}\n{stderr}");
    assert!(!out.status.success(), "a failed expert must fail the command");
    assert!(stdout.contains("[dc-power-flow could not compute this: "), "{stdout}");
    assert!(stdout.contains("no path to the slack bus 1"), "{stdout}");
    assert!(
        stderr.contains("ExpertFailed") && stderr.contains("error: an expert could not compute"),
        "{stderr}"
    );
}
