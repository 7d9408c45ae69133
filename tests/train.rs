//! `pimoe train`: every backward pass against central finite differences (f64,
//! fresh random inputs), small problems learned to a validation figure, bitwise
//! repeatability for a seed, saved files read by the runtime's own loaders (and
//! computing what the trainer computed), the hidden-gate features against what the
//! decode step feeds the gate, and bad data files named by file and line.

mod common;

use std::path::{Path, PathBuf};

use pimoe::backend::cpu::CpuBackend;
use pimoe::llm::{DeviceGate, Llm, Logits, SeqChunk};
use pimoe::model::tokenizer::Tokenizer;
use pimoe::pimoe::experts::mlp::Activation;
use pimoe::pimoe::experts::{DeepONet, DeepONetSpec, Mlp, Precision, WeightFile};
use pimoe::pimoe::router::{
    activate, GateActivation, HiddenGate, HiddenGateConfig, PiernGate, PiernGateConfig,
};
use pimoe::pimoe::t2c::{LearnedT2c, LearnedT2cConfig};
use pimoe::sampling::Rng;
use pimoe::train::classify::{ClassWeight, Classes};
use pimoe::train::deeponet::DeepONetNet;
use pimoe::train::embed::EmbedMean;
use pimoe::train::expert::{train_expert, ExpertOptions, ExpertShape};
use pimoe::train::features::FeatureModel;
use pimoe::train::fit::fit;
use pimoe::train::hidden_gate::{train_hidden_gate, Aligned, HiddenGateOptions};
use pimoe::train::loss::{bce_logits, mse, softmax_ce};
use pimoe::train::metrics::{RegressionReport, Report};
use pimoe::train::net::Net;
use pimoe::train::piern::{train_piern, PiernOptions};
use pimoe::train::t2c::{train_t2c, T2cOptions};
use pimoe::train::{adam::Adam, Files, Holdout, Outcome, TrainOptions};
use pimoe::Engine;

// ----------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------

/// Values in [-scale, scale) from a seeded PCG32.
fn rand(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.next_f32() as f64 * 2.0 - 1.0) * scale).collect()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(f64::MIN_POSITIVE)
}

const H: f64 = 1e-6;

/// Central differences of `loss_at(i, delta)` (the loss with input i moved by delta)
/// for i in 0..n.
fn finite_diff(n: usize, mut loss_at: impl FnMut(usize, f64) -> f64) -> Vec<f64> {
    (0..n).map(|i| (loss_at(i, H) - loss_at(i, -H)) / (2.0 * H)).collect()
}

fn assert_grad(what: &str, analytic: &[f64], numeric: &[f64]) {
    let e = rel(analytic, numeric);
    assert!(e < 1e-6, "{what}: gradient rel err {e:.3e} (analytic {analytic:?}, numeric {numeric:?})");
}

fn tiny() -> PathBuf {
    common::fixtures().join("tiny-llama")
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn files(dir: &Path, data: PathBuf, holdout: Holdout, name: &str) -> Files {
    Files { data, holdout, out: dir.join("out"), name: name.into() }
}

fn opts(epochs: usize, batch: usize, lr: f64, seed: u64) -> TrainOptions {
    TrainOptions { epochs, batch, lr, seed, progress: false }
}

fn val(o: &Outcome) -> &Report {
    o.val.as_ref().expect("a validation set")
}

fn regression(r: &Report) -> &RegressionReport {
    match r {
        Report::Regression(r) => r,
        Report::Class(_) => panic!("a regression report"),
    }
}

fn class(r: &Report) -> &pimoe::train::metrics::ClassReport {
    match r {
        Report::Class(c) => c,
        Report::Regression(_) => panic!("a class report"),
    }
}

/// A manifest around one fragment in the fragment's folder, loaded by the engine.
fn load_manifest(dir: &Path, json: serde_json::Value) -> pimoe::Result<Engine<CpuBackend>> {
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    Engine::load_manifest(CpuBackend, &path)
}

fn fragment(o: &Outcome) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&o.written.fragment).unwrap()).unwrap()
}

/// An expert slot that reads one number; what a router fragment needs to be loaded.
fn number_expert(name: &str) -> serde_json::Value {
    serde_json::json!({ "name": name, "t2c": { "kind": "extract", "pattern": "number; number" },
                        "expert": { "kind": "linear-solve", "n": 1 }, "format": { "template": "{value}" } })
}

// ----------------------------------------------------------------------------
// gradients
// ----------------------------------------------------------------------------

#[test]
fn dense_stacks_backward_matches_finite_differences() {
    for (k, act) in Activation::ALL.into_iter().enumerate() {
        let mut rng = Rng::new(100 + k as u64);
        let rows = 4;
        let net = Net::<f64>::init(&[5, 7, 6, 3], act, &mut rng);
        let x = rand(&mut rng, rows * 5, 1.5);
        let c = rand(&mut rng, rows * 3, 1.0); // L = sum c * net(x)
        let loss =
            |n: &Net<f64>, x: &[f64]| n.forward(x, rows).iter().zip(&c).map(|(a, b)| a * b).sum::<f64>();
        let (y, trace) = net.forward_trace(&x, rows);
        assert_eq!(y, net.forward(&x, rows), "{act:?}: forward_trace and forward differ");
        let (grads, dx) = net.backward(&trace, &c, true);
        for (l, g) in grads.iter().enumerate() {
            let num_w = finite_diff(g.w.len(), |i, d| {
                let mut n = net.clone();
                n.layers[l].w.value[i] += d;
                loss(&n, &x)
            });
            assert_grad(&format!("{act:?} layer {l} weight"), &g.w, &num_w);
            let num_b = finite_diff(g.b.len(), |i, d| {
                let mut n = net.clone();
                n.layers[l].b.value[i] += d;
                loss(&n, &x)
            });
            assert_grad(&format!("{act:?} layer {l} bias"), &g.b, &num_b);
        }
        let num_x = finite_diff(x.len(), |i, d| {
            let mut x2 = x.clone();
            x2[i] += d;
            loss(&net, &x2)
        });
        assert_grad(&format!("{act:?} input"), &dx.unwrap(), &num_x);
    }
}

#[test]
fn losses_backward_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let (rows, n) = (5, 4);
    let z = rand(&mut rng, rows * n, 3.0);

    let t = rand(&mut rng, rows * n, 1.0);
    let (_, g) = mse(&z, &t);
    assert_grad(
        "mse",
        &g,
        &finite_diff(z.len(), |i, d| {
            let mut z2 = z.clone();
            z2[i] += d;
            mse(&z2, &t).0
        }),
    );

    let targets: Vec<f64> = (0..rows * n).map(|i| ((i * 7) % 3 == 0) as u8 as f64).collect();
    let w: Vec<f64> = rand(&mut rng, rows * n, 1.0).iter().map(|v| 1.5 + v).collect();
    let (_, g) = bce_logits(&z, &targets, &w, rows);
    assert_grad(
        "bce",
        &g,
        &finite_diff(z.len(), |i, d| {
            let mut z2 = z.clone();
            z2[i] += d;
            bce_logits(&z2, &targets, &w, rows).0
        }),
    );

    let labels = [0, 3, 1, 1, 2];
    let wr: Vec<f64> = rand(&mut rng, rows, 1.0).iter().map(|v| 1.5 + v).collect();
    let (_, g) = softmax_ce(&z, n, &labels, &wr);
    assert_grad(
        "softmax ce",
        &g,
        &finite_diff(z.len(), |i, d| {
            let mut z2 = z.clone();
            z2[i] += d;
            softmax_ce(&z2, n, &labels, &wr).0
        }),
    );

    // The router losses with balanced class weights, both activations.
    for activation in [GateActivation::Sigmoid, GateActivation::Softmax] {
        let c = Classes { experts: vec!["a".into(), "b".into(), "c".into()], activation, threshold: 0.5 };
        let k = c.outputs();
        let labels = [0, 0, 2, 3, 0, 1];
        let w = c.weights(&labels, ClassWeight::Balanced);
        let z = rand(&mut rng, labels.len() * k, 2.0);
        let (_, g) = c.loss(&w, &z, &labels);
        assert_grad(
            &format!("{activation:?} router loss"),
            &g,
            &finite_diff(z.len(), |i, d| {
                let mut z2 = z.clone();
                z2[i] += d;
                c.loss(&w, &z2, &labels).0
            }),
        );
    }
}

#[test]
fn embedding_mean_and_deeponet_backward_match_finite_differences() {
    let mut rng = Rng::new(11);
    let (vocab, dim) = (9, 6);
    let embed = EmbedMean::<f64>::init(vocab, dim, &mut rng);
    let texts: Vec<Vec<u32>> = vec![vec![3, 1, 3, 8], vec![0], vec![8, 2, 2]];
    let views: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
    let c = rand(&mut rng, texts.len() * dim, 1.0);
    let loss = |e: &EmbedMean<f64>| e.forward(&views).iter().zip(&c).map(|(a, b)| a * b).sum::<f64>();
    let g = embed.backward(&views, &c);
    assert_eq!(g.rows, vec![0, 1, 2, 3, 8], "touched rows, ascending");
    // The dense gradient: the touched rows' gradients, zeros elsewhere.
    let mut dense = vec![0.0; vocab * dim];
    for (k, &r) in g.rows.iter().enumerate() {
        dense[r as usize * dim..(r as usize + 1) * dim].copy_from_slice(&g.grad[k * dim..(k + 1) * dim]);
    }
    assert_grad(
        "embedding mean",
        &dense,
        &finite_diff(vocab * dim, |i, d| {
            let mut e = embed.clone();
            e.table.value[i] += d;
            loss(&e)
        }),
    );

    let rows = 3;
    let don = DeepONetNet::<f64>::init(&[4, 5, 3], &[2, 6, 3], Activation::Tanh, &mut rng);
    let (xb, xt) = (rand(&mut rng, rows * 4, 1.0), rand(&mut rng, rows * 2, 1.0));
    let c = rand(&mut rng, rows, 1.0);
    let loss =
        |n: &DeepONetNet<f64>| n.forward(&xb, &xt, rows).iter().zip(&c).map(|(a, b)| a * b).sum::<f64>();
    let (y, trace) = don.forward_trace(&xb, &xt, rows);
    assert_eq!(y, don.forward(&xb, &xt, rows));
    let g = don.backward(&trace, &c);
    for (net, grads, pick) in [(&don.branch, &g.branch, 0), (&don.trunk, &g.trunk, 1)] {
        for (l, gl) in grads.iter().enumerate() {
            let num = finite_diff(net.layers[l].w.value.len(), |i, d| {
                let mut n = don.clone();
                let target = if pick == 0 { &mut n.branch } else { &mut n.trunk };
                target.layers[l].w.value[i] += d;
                loss(&n)
            });
            assert_grad(&format!("deeponet net {pick} layer {l}"), &gl.w, &num);
        }
    }
    let num_bias = finite_diff(1, |_, d| {
        let mut n = don.clone();
        n.bias.value[0] += d;
        loss(&n)
    });
    assert_grad("deeponet bias", &[g.bias], &num_bias);
}

#[test]
fn adam_first_step_moves_each_weight_by_lr_against_its_gradient() {
    // After one step m_hat = g and v_hat = g^2, so x moves by lr * g / (|g| + eps).
    let mut p = pimoe::train::adam::Param::new(vec![1.0f64, -2.0, 0.5]);
    let g = [0.3, -4.0, 1e-3];
    let mut adam = Adam::new(0.01);
    adam.tick();
    adam.update(&mut p, &g);
    for (i, (&x, &x0)) in p.value.iter().zip(&[1.0, -2.0, 0.5]).enumerate() {
        let want = x0 - 0.01 * g[i] / (g[i].abs() + 1e-8);
        assert!((x - want).abs() < 1e-15, "element {i}: {x} vs {want}");
    }
}

// ----------------------------------------------------------------------------
// small problems learned
// ----------------------------------------------------------------------------

#[test]
fn a_two_d_classification_is_learned() {
    // Three classes in the plane: inside a circle (1), a band to its right (2), none.
    let mut rng = Rng::new(5);
    let label = |x: f64, y: f64| {
        if x * x + y * y < 0.4 {
            1
        } else if x > 0.8 {
            2
        } else {
            0
        }
    };
    let points = |rng: &mut Rng, n: usize| {
        let p = rand(rng, 2 * n, 1.5);
        let l: Vec<usize> = p.chunks(2).map(|q| label(q[0], q[1])).collect();
        (p, l)
    };
    let (x, labels) = points(&mut rng, 1500);
    let (xv, lv) = points(&mut rng, 500);
    for activation in [GateActivation::Softmax, GateActivation::Sigmoid] {
        let classes = Classes { experts: vec!["disc".into(), "band".into()], activation, threshold: 0.5 };
        let w = classes.weights(&labels, ClassWeight::None);
        let mut net = Net::<f64>::init(&[2, 32, classes.outputs()], Activation::Relu, &mut Rng::new(1));
        let mut adam = Adam::new(1e-2);
        let losses = fit(&opts(40, 32, 1e-2, 3), labels.len(), |idx| {
            let xb: Vec<f64> = idx.iter().flat_map(|&i| [x[2 * i], x[2 * i + 1]]).collect();
            let lb: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
            adam.tick();
            let (z, trace) = net.forward_trace(&xb, idx.len());
            let (loss, dz) = classes.loss(&w, &z, &lb);
            let (g, _) = net.backward(&trace, &dz, false);
            net.update(&adam, &g);
            loss
        });
        assert!(losses[losses.len() - 1] < losses[0] / 4.0, "{activation:?}: losses {losses:?}");
        let report = classes.report(&w, &net.forward(&xv, lv.len()), &lv);
        assert!(report.accuracy > 0.95, "{activation:?}: {report}");
        for c in &report.classes {
            assert!(c.recall().unwrap() > 0.85 && c.precision().unwrap() > 0.85, "{activation:?}: {report}");
        }
    }
}

/// Rows of f(x) = (sin(2 x0) + x1^2, x0 x1) for the MLP, and of a DeepONet-shaped
/// operator y = a0 sin(3 t) + a1 t + a2 for (a | t).
fn regression_files(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = Rng::new(21);
    let mlp: Vec<String> = (0..600)
        .map(|_| {
            let x = rand(&mut rng, 2, 1.0);
            let y = [(2.0 * x[0]).sin() + x[1] * x[1], x[0] * x[1]];
            serde_json::json!({ "inputs": x, "outputs": y }).to_string()
        })
        .collect();
    let don: Vec<String> = (0..600)
        .map(|_| {
            let a: Vec<f64> = rand(&mut rng, 3, 0.5).iter().map(|v| v + 1.0).collect();
            let t = rand(&mut rng, 1, 0.5)[0] + 0.5;
            // Inputs written as (t, a0, a1, a2): --order puts a first.
            let y = a[0] * (3.0 * t).sin() + a[1] * t + a[2];
            serde_json::json!({ "inputs": [t, a[0], a[1], a[2]], "outputs": [y] }).to_string()
        })
        .collect();
    (write_lines(dir, "mlp.jsonl", &mlp), write_lines(dir, "don.jsonl", &don))
}

fn mlp_options(precision: Precision) -> ExpertOptions {
    ExpertOptions {
        shape: ExpertShape::Mlp { widths: vec![2, 32, 32, 2] },
        activation: Activation::Tanh,
        precision,
        order: None,
    }
}

/// Asserts that the runtime's predictions `y` on `rows` have exactly the errors the
/// trainer reported (the loss aside: its units need the trainer's scales).
fn assert_same_errors(what: &str, y: &[f64], rows: &[(Vec<f64>, Vec<f64>)], reported: &Report) {
    let t: Vec<f64> = rows.iter().flat_map(|r| r.1.clone()).collect();
    let got = RegressionReport::new(0.0, y, &t, rows.len());
    let want = regression(reported);
    assert_eq!(
        (got.rows, got.rmse, got.max_abs, got.max_rel),
        (want.rows, want.rmse, want.max_abs, want.max_rel),
        "{what}: the runtime's errors differ from the trainer's"
    );
}

fn read_rows(path: &Path) -> Vec<(Vec<f64>, Vec<f64>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            (f("inputs"), f("outputs"))
        })
        .collect()
}

#[test]
fn smooth_regressions_are_learned_and_the_runtime_computes_what_the_trainer_reported() {
    let dir = common::scratch_dir("train-regression");
    let (mlp, don) = regression_files(&dir);
    let (train_mlp, val_mlp) = (dir.join("mlp-train.jsonl"), dir.join("mlp-val.jsonl"));
    let rows = std::fs::read_to_string(&mlp).unwrap();
    let lines: Vec<String> = rows.lines().map(String::from).collect();
    std::fs::write(&train_mlp, lines[..500].join("\n")).unwrap();
    std::fs::write(&val_mlp, lines[500..].join("\n")).unwrap();

    for precision in [Precision::F64, Precision::F32] {
        let f = files(&dir, train_mlp.clone(), Holdout::File(val_mlp.clone()), "mlp");
        let o = train_expert(&f, &mlp_options(precision), &opts(60, 16, 3e-3, 1)).unwrap();
        let r = regression(val(&o));
        assert!(r.rmse < 0.05 && r.max_abs < 0.25, "{precision:?} MLP: {r}");
        // The runtime's expert on the validation rows: the same figures, bit for bit
        // (its forward is the trainer's).
        let file = WeightFile::open(&o.written.weights).unwrap();
        let m = Mlp::load(&file, "layers", 2, &[2, 32, 32, 2], Activation::Tanh, precision).unwrap();
        let rows = read_rows(&val_mlp);
        let x: Vec<f64> = rows.iter().flat_map(|r| r.0.clone()).collect();
        assert_same_errors(&format!("{precision:?} MLP"), &m.forward(&x, rows.len()), &rows, val(&o));
        // The fragment is the manifest's `expert` object.
        let frag = fragment(&o);
        assert_eq!(frag["precision"], precision.name());
        let e = load_manifest(
            &f.out,
            serde_json::json!({ "llm": tiny(), "router": { "kind": "trigger", "triggers": [{ "text": "=", "expert": "f" }] },
                "experts": [{ "name": "f", "t2c": { "kind": "extract", "pattern": "number; number" },
                              "expert": frag, "format": { "template": "{values}" } }] }),
        );
        assert!(e.is_ok(), "{:?}", e.err());
    }

    let f = files(&dir, don.clone(), Holdout::Fraction(0.2), "don");
    let opts_don = ExpertOptions {
        shape: ExpertShape::DeepONet { branch: vec![3, 32, 8], trunk: vec![1, 32, 8] },
        activation: Activation::Tanh,
        precision: Precision::F64,
        order: Some("1..4 | 0".into()),
    };
    let o = train_expert(&f, &opts_don, &opts(60, 16, 3e-3, 1)).unwrap();
    let r = regression(val(&o));
    assert!(r.rmse < 0.03 && r.max_rel < 0.1, "DeepONet: {r}");
    assert!(o.notes.iter().any(|n| n.contains("\"order\": \"1..4 | 0\"")), "{:?}", o.notes);
    let mut spec = DeepONetSpec::new(&[3, 32, 8], &[1, 32, 8]);
    spec.activation = Activation::Tanh;
    let d = DeepONet::load(&o.written.weights, &spec).unwrap();
    assert!(d.bias().is_some(), "the trained bias is saved");
    let frag = fragment(&o);
    assert_eq!(frag["kind"], "deeponet");
    let e = load_manifest(
        &f.out,
        serde_json::json!({ "llm": tiny(), "router": { "kind": "trigger", "triggers": [{ "text": "=", "expert": "op" }] },
            "experts": [{ "name": "op", "t2c": { "kind": "extract", "pattern": "list[4]" }, "order": "1..4 | 0",
                          "expert": frag, "format": { "template": "{value}" } }] }),
    );
    assert!(e.is_ok(), "{:?}", e.err());
    // The runtime's DeepONet on every row (ordered as the manifest orders them)
    // against the training targets: as good as the trainer said on its rows.
    let all = read_rows(&don);
    let x: Vec<f64> = all.iter().flat_map(|r| [r.0[1], r.0[2], r.0[3], r.0[0]]).collect();
    let y = d.forward(&x, all.len());
    let worst = y.iter().zip(&all).map(|(a, r)| (a - r.1[0]).abs()).fold(0.0, f64::max);
    let trained = regression(&o.train).max_abs.max(r.max_abs);
    assert_eq!(worst, trained, "the runtime's worst error is the trainer's");
}

#[test]
fn the_same_seed_gives_the_same_bits_and_another_seed_differs() {
    let dir = common::scratch_dir("train-seed");
    let (mlp, _) = regression_files(&dir);
    let run = |seed: u64, name: &str| {
        let f = files(&dir, mlp.clone(), Holdout::Fraction(0.1), name);
        let o = train_expert(&f, &mlp_options(Precision::F64), &opts(3, 8, 1e-3, seed)).unwrap();
        (std::fs::read(&o.written.weights).unwrap(), o)
    };
    let (a, oa) = run(9, "a");
    let (b, ob) = run(9, "b");
    let (c, _) = run(10, "c");
    assert!(a == b, "same seed, different weights");
    assert_eq!(oa.epoch_losses, ob.epoch_losses);
    assert!(a != c, "another seed gave the same weights");

    // The piern router too (embedding, sparse Adam), and through f32.
    let rows = keyword_rows(60);
    let data = write_lines(&dir, "piern.jsonl", &rows);
    let p = piern_options(Precision::F32);
    let bytes = |seed, name: &str| {
        let o = train_piern(
            &files(&dir, data.clone(), Holdout::Fraction(0.2), name),
            &p,
            &opts(2, 8, 1e-2, seed),
        )
        .unwrap();
        std::fs::read(o.written.weights).unwrap()
    };
    assert!(bytes(4, "p1") == bytes(4, "p2"), "piern: same seed, different weights");
    assert!(bytes(4, "p1") != bytes(5, "p3"), "piern: another seed gave the same weights");
}

// ----------------------------------------------------------------------------
// routers and T2C on the tiny model
// ----------------------------------------------------------------------------

/// Texts that fire when they end with "the value is" (the reference's router data
/// has this shape: a prefix of an answer, type 1 when the next span is computed).
fn keyword_rows(n: usize) -> Vec<String> {
    let words = ["the", "grid", "bus", "angle", "flow", "so", "we", "compute", "line", "value", "power"];
    let mut rng = Rng::new(77);
    (0..n)
        .map(|i| {
            let k = 2 + rng.next_u32() as usize % 5;
            let mut t: Vec<&str> = (0..k).map(|_| words[rng.next_u32() as usize % words.len()]).collect();
            let fire = i % 3 == 0;
            if fire {
                t.extend(["the", "value", "is"]);
            }
            serde_json::json!({ "text": t.join(" "), "type": fire as u8 }).to_string()
        })
        .collect()
}

fn piern_options(precision: Precision) -> PiernOptions {
    PiernOptions {
        model: tiny(),
        experts: Some(vec!["dc".into()]),
        embed_dim: 16,
        hidden: 16,
        class_weight: ClassWeight::Balanced,
        threshold: 0.5,
        precision,
    }
}

#[test]
fn a_piern_router_learns_a_trigger_phrase_and_the_runtime_reads_it() {
    let dir = common::scratch_dir("train-piern");
    let data = write_lines(&dir, "router.jsonl", &keyword_rows(400));
    let f = files(&dir, data, Holdout::Fraction(0.25), "router");
    let o = train_piern(&f, &piern_options(Precision::F32), &opts(30, 16, 1e-2, 2)).unwrap();
    let v = class(val(&o));
    assert!(v.accuracy > 0.95, "{v}");
    assert!(v.classes[1].recall().unwrap() > 0.9 && v.classes[1].precision().unwrap() > 0.9, "{v}");

    // The runtime's gate on the same texts gives the probabilities the trainer's
    // forward gives (f32, summation orders aside).
    let files_st = pimoe::model::safetensors::SafetensorFiles::open_file(&o.written.weights).unwrap();
    let cfg =
        PiernGateConfig { prefix: String::new(), vocab: 360, embed_dim: 16, hidden: 16, experts: vec![0] };
    let gate = PiernGate::load(&files_st, &cfg).unwrap();
    let tok = Tokenizer::load(&tiny().join("tokenizer.json")).unwrap();
    let st = WeightFile::open(&o.written.weights).unwrap();
    let table: Vec<f32> =
        st.load("embedding.weight", &[360, 16]).unwrap().iter().map(|&v| v as f32).collect();
    let embed = EmbedMean::<f32> { vocab: 360, dim: 16, table: pimoe::train::adam::Param::new(table) };
    let mut net = Net::<f32>::init(&[16, 16, 1], Activation::Relu, &mut Rng::new(0));
    for (l, layer) in net.layers.iter_mut().enumerate() {
        let (o_, i_) = (layer.n_out, layer.n_in);
        layer.w.value =
            st.load(&format!("fc.{}.weight", 2 * l), &[o_, i_]).unwrap().iter().map(|&v| v as f32).collect();
        layer.b.value =
            st.load(&format!("fc.{}.bias", 2 * l), &[o_]).unwrap().iter().map(|&v| v as f32).collect();
    }
    for text in ["so we compute the value is", "the grid bus angle", "value"] {
        let ids = tok.encode(text).unwrap();
        let mut z = net.forward(&embed.forward(&[&ids]), 1);
        activate(&mut z, 1, false);
        let p = gate.probs_from_tokens(&ids).unwrap();
        assert!((p[0] - z[0]).abs() < 1e-6, "{text:?}: runtime {} vs trainer {}", p[0], z[0]);
    }

    let frag = fragment(&o);
    assert_eq!((frag["kind"].as_str(), frag["embed_dim"].as_u64()), (Some("piern"), Some(16)));
    let e = load_manifest(
        &f.out,
        serde_json::json!({ "llm": tiny(), "router": frag, "experts": [number_expert("dc")] }),
    );
    assert!(e.is_ok(), "{:?}", e.err());
}

/// The tiny model's rows for a hidden gate: a prompt, an answer, one firing each,
/// with a multi-byte character in some answers.
fn gate_rows() -> Vec<String> {
    (0..12)
        .map(|i| {
            let prompt = format!("Q{}: angle at bus {}? A:", i % 4, 2 + i % 5);
            let head = if i % 3 == 0 { " The ängle is" } else { " The angle is" };
            let answer = format!("{head} 0.{}{} rad, from bus 1.", i % 7, 3 + i % 5);
            let fire = serde_json::json!([{ "at": head.len(), "expert": "dc" }]);
            serde_json::json!({ "prompt": prompt, "answer": answer, "fire": fire }).to_string()
        })
        .collect()
}

fn gate_options(
    activation: GateActivation,
    inner: Option<usize>,
    cache: Option<PathBuf>,
) -> HiddenGateOptions {
    HiddenGateOptions {
        model: tiny(),
        experts: None,
        inner,
        activation,
        class_weight: ClassWeight::Balanced,
        threshold: 0.5,
        precision: Precision::F32,
        cache,
    }
}

#[test]
fn a_hidden_gate_fits_its_rows_and_the_runtime_reads_what_was_trained() {
    let dir = common::scratch_dir("train-gate");
    let data = write_lines(&dir, "gate.jsonl", &gate_rows());
    for (activation, inner) in [(GateActivation::Softmax, None), (GateActivation::Sigmoid, Some(16))] {
        let f = files(&dir, data.clone(), Holdout::Fraction(0.2), "gate");
        let o =
            train_hidden_gate(&f, &gate_options(activation, inner, None), &opts(150, 16, 1e-2, 3)).unwrap();
        // One example per answer token, one firing per answer: a linear gate on 64
        // features separates the few firing examples of the training rows.
        let t = class(&o.train);
        assert_eq!(t.classes[1].support, 10, "{t}");
        assert_eq!(t.classes[1].recall(), Some(1.0), "{activation:?}: {t}");
        assert!(t.accuracy > 0.97, "{activation:?}: {t}");
        assert_eq!(class(val(&o)).classes[1].support, 2);

        // The runtime's gate from the saved file on the features of the rows.
        let st = pimoe::model::safetensors::SafetensorFiles::open_file(&o.written.weights).unwrap();
        let cfg: HiddenGateConfig = serde_json::from_value(serde_json::json!({
            "hidden_size": 64, "inner": inner, "activation": frag_activation(activation), "experts": [0] }))
        .unwrap();
        let gate = HiddenGate::load(&st, &cfg).unwrap();
        let model = FeatureModel::load(&tiny(), None, false).unwrap();
        let a = Aligned::new(model.tokenizer(), "Q1: angle at bus 3? A:", " The angle is 0.2 rad.", None)
            .unwrap();
        let feats = model.hidden_rows(&[(&a.run_tokens(), a.first_feature())]).unwrap().remove(0);
        let rows = a.answer.len() + 1;
        let p = gate.probs(&feats, rows);
        let net_out = {
            let mut net = Net::<f32>::init(
                &gate_widths(inner, gate.mlp().out_dim()),
                Activation::Relu,
                &mut Rng::new(0),
            );
            for (layer, l) in net.layers.iter_mut().zip(gate.mlp().layers()) {
                layer.w.value = l.weight().to_vec();
                layer.b.value = l.bias().to_vec();
            }
            let mut z = net.forward(&feats, rows);
            activate(&mut z, gate.mlp().out_dim(), activation == GateActivation::Softmax);
            z
        };
        common::assert_close("runtime gate vs trainer", &p, &net_out, 1e-5);

        let frag = fragment(&o);
        assert_eq!(frag["kind"], "hidden-gate");
        assert_eq!(frag["experts"], serde_json::json!(["dc"]));
        let e = load_manifest(
            &f.out,
            serde_json::json!({ "llm": tiny(), "router": frag, "experts": [number_expert("dc")] }),
        );
        assert!(e.is_ok(), "{:?}", e.err());
    }
}

fn frag_activation(a: GateActivation) -> &'static str {
    match a {
        GateActivation::Sigmoid => "sigmoid",
        GateActivation::Softmax => "softmax",
    }
}

fn gate_widths(inner: Option<usize>, out: usize) -> Vec<usize> {
    std::iter::once(64).chain(inner).chain([out]).collect()
}

#[test]
fn hidden_gate_features_are_what_the_decode_step_feeds_the_gate() {
    // The gate decides after a sequence's newest token from that token's
    // final-normed hidden state, computed in the step that processes it
    // (`Llm::forward_sample_with`): first the prompt's last token, then each answer
    // token as it comes in. Replay that loop, feeding the answer's tokens as if
    // sampled, with a gate that shows its input: identity weights and a sigmoid, so
    // each gate row is sigmoid(hidden) computed the runtime's way.
    let b = CpuBackend;
    let llm = Llm::load(&b, &tiny()).unwrap();
    let model = FeatureModel::load(&tiny(), None, false).unwrap();
    let h = llm.config.hidden_size;
    let eye: Vec<f32> = (0..h * h).map(|i| (i % (h + 1) == 0) as u8 as f32).collect();
    let zero = vec![0f32; h];
    let gate = DeviceGate::new(&b, &[(&eye, &zero)], false).unwrap();
    for (prompt, answer) in [("Q: angle at bus 3? A:", " The angle is 0.25 rad."), ("x", " héllo wörld 1")]
    {
        let a = Aligned::new(model.tokenizer(), prompt, answer, None).unwrap();
        let feats = model.hidden_rows(&[(&a.run_tokens(), a.first_feature())]).unwrap().remove(0);
        assert_eq!(feats.len(), (a.answer.len() + 1) * h);

        let total = a.prompt.len() + a.answer.len();
        let mut cache = llm.new_cache(&b, total);
        let mut table = Vec::new();
        cache.reserve(&mut table, total).unwrap();
        let greedy = [[0.0, 0.0, 1.0, 0.0]];
        let mut gate_rows = Vec::new();
        let step = [SeqChunk { tokens: &a.prompt, start: 0, block_table: &table, logits: Logits::Last }];
        gate_rows.extend(
            llm.forward_sample_with(&b, &mut cache, &step, &greedy, false, Some(&gate)).unwrap().gate,
        );
        for j in 0..a.answer.len() {
            let tok = [a.answer[j]];
            let start = a.prompt.len() + j;
            let step = [SeqChunk { tokens: &tok, start, block_table: &table, logits: Logits::Last }];
            gate_rows.extend(
                llm.forward_sample_with(&b, &mut cache, &step, &greedy, false, Some(&gate)).unwrap().gate,
            );
        }
        let mut expect = feats.clone();
        activate(&mut expect, h, false);
        assert_eq!(gate_rows, expect, "{answer:?}: the trainer's features are not the gate's inputs");
    }
}

#[test]
fn the_scheduler_fires_where_the_trainers_features_say() {
    // A greedy answer of the tiny model, then a gate built to fire at one chosen
    // token: its probability on the trainer's features is the highest of the
    // answer, and the threshold sits just below it. The scheduler, running the gate
    // inside its decode steps, must fire right after that token (the expert's T2C
    // finds no number in this context, so the firing shows as a note and the answer
    // goes on unchanged).
    let dir = common::scratch_dir("train-scheduler");
    let prompt = "Q: angle at bus 3? A:";
    let req = |n| pimoe::Request {
        prompt: pimoe::Prompt::Raw(prompt.into()),
        max_tokens: n,
        sampling: pimoe::sampling::SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 },
    };
    let plain = Engine::load(CpuBackend, &tiny()).unwrap();
    let g = plain.generate(&req(24), |_| {}).unwrap();
    let model = FeatureModel::load(&tiny(), None, false).unwrap();
    let a = Aligned::new(model.tokenizer(), prompt, &g.text, Some(&g.tokens)).unwrap();
    let feats = model.hidden_rows(&[(&a.run_tokens(), a.first_feature())]).unwrap().remove(0);

    let net = Net::<f32>::init(&[64, 1], Activation::Relu, &mut Rng::new(8));
    let z = net.forward(&feats, a.answer.len() + 1);
    let mut p = z.clone();
    activate(&mut p, 1, false);
    // The decision after the last token never comes (the answer ends there).
    p.pop();
    let mut sorted = p.clone();
    sorted.sort_by(|x, y| y.total_cmp(x));
    assert!(sorted[0] > sorted[1], "a tie at the top: pick another seed");
    let fire_at = p.iter().position(|&v| v == sorted[0]).unwrap();
    // The threshold goes halfway between the best and the second-best probability.
    let threshold = (sorted[0] + sorted[1]) / 2.0;
    let out = dir.join("out");
    pimoe::train::output::write(&out, "gate", &net.tensors("gate"), serde_json::Map::new()).unwrap();
    let router = serde_json::json!({ "kind": "hidden-gate", "weights": "gate.safetensors", "experts": ["dc"],
                                     "activation": "sigmoid", "policy": { "threshold": threshold } });
    let engine = load_manifest(
        &out,
        serde_json::json!({ "llm": tiny(), "router": router,
        "experts": [{ "name": "dc", "t2c": { "kind": "extract", "pattern": "number after \"=\"; number" },
                      "expert": { "kind": "linear-solve", "n": 1 }, "format": { "template": "{value}" } }] }),
    )
    .unwrap();
    let (mut tokens, mut fired_after) = (0, Vec::new());
    let routed = engine
        .generate_events(&req(24), |ev| match ev {
            pimoe::scheduler::Event::Token { .. } => tokens += 1,
            pimoe::scheduler::Event::Note { .. } => fired_after.push(tokens),
            _ => {}
        })
        .unwrap();
    // Decision d comes after d tokens of the answer (d = 0: right after the prompt).
    assert_eq!(fired_after, vec![fire_at], "the scheduler fired elsewhere (probs {p:?})");
    // Up to the firing the answer is the LLM's; the failed T2C's text then ends it.
    assert_eq!(routed.tokens[..fire_at], g.tokens[..fire_at], "the answer differs before the firing");
    assert_eq!(routed.finish, pimoe::Finish::ExpertFailed);
}

#[test]
fn answer_token_ends_follow_the_streamed_text() {
    let tok = Tokenizer::load(&tiny().join("tokenizer.json")).unwrap();
    // 'é' is two byte-level tokens: the first adds no text, the second both bytes.
    let a = Aligned::new(&tok, "p", "héllo", None).unwrap();
    assert_eq!(a.ends, vec![1, 1, 3, 4, 5, 6]);
    assert_eq!(a.decision_at(0), Some(0), "right after the prompt");
    assert_eq!(a.decision_at(1), Some(1), "after the first token that ends there");
    assert_eq!(a.decision_at(2), None, "inside a character");
    assert_eq!(a.decision_at(3), Some(3));
    assert_eq!(a.run_tokens().len(), a.prompt.len() + a.answer.len());
    assert!(Aligned::new(&tok, "", "x", None).unwrap_err().contains("prompt is empty"));
    assert!(Aligned::new(&tok, "p", "", None).unwrap_err().contains("answer is empty"));
    // Ids as generated may segment the text differently from encode(); they must
    // still spell the answer.
    let ids = tok.encode(" the").unwrap();
    let split: Vec<u32> = [" ", "t", "h", "e"].iter().flat_map(|c| tok.encode(c).unwrap()).collect();
    assert!(split.len() > ids.len(), "the ids are encode()'s");
    let b = Aligned::new(&tok, "p", " the", Some(&split)).unwrap();
    assert_eq!((b.answer.clone(), b.ends.clone()), (split.clone(), vec![1, 2, 3, 4]));
    let e = Aligned::new(&tok, "p", " thy", Some(&split)).unwrap_err();
    assert!(e.contains("not the text of its tokens") && e.contains("from byte 3"), "{e}");
}

#[test]
fn shared_prefixes_and_the_cache_give_the_same_features() {
    let dir = common::scratch_dir("train-features");
    let tok = Tokenizer::load(&tiny().join("tokenizer.json")).unwrap();
    let rows: Vec<Vec<u32>> =
        ["Q: bus 3 angle? A: it is 0.2", "Q: bus 3 angle? A: it is 0.7 rad", "Q: flows? A: 5"]
            .iter()
            .map(|t| tok.encode(t).unwrap())
            .collect();
    let reqs: Vec<(&[u32], usize)> = rows.iter().map(|r| (r.as_slice(), 6)).collect();
    let alone: Vec<Vec<f32>> = reqs
        .iter()
        .map(|r| FeatureModel::load(&tiny(), None, false).unwrap().hidden_rows(&[*r]).unwrap().remove(0))
        .collect();
    let together = FeatureModel::load(&tiny(), None, false).unwrap().hidden_rows(&reqs).unwrap();
    assert!(together == alone, "a shared prefix changed the features");

    let cache = dir.join("cache");
    let cached = FeatureModel::load(&tiny(), Some(&cache), false).unwrap();
    assert!(cached.hidden_rows(&reqs).unwrap() == alone);
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), 3, "one file per row");
    assert!(cached.hidden_rows(&reqs).unwrap() == alone, "read back from the cache");
    // A damaged entry is recomputed, not trusted.
    for f in &files {
        std::fs::write(f.as_ref().unwrap().path(), b"short").unwrap();
    }
    assert!(cached.hidden_rows(&reqs).unwrap() == alone);

    let pooled = cached.pooled(&[&rows[0]]).unwrap();
    let b = CpuBackend;
    let llm = Llm::load(&b, &tiny()).unwrap();
    assert_eq!(pooled[0], llm.pooled_hidden(&b, &rows[0], 512).unwrap());
    assert_eq!(cached.pooled(&[&rows[0]]).unwrap(), pooled, "read back from the cache");
}

#[test]
fn a_learned_t2c_head_fits_its_rows_and_loads_as_the_runtime_head() {
    let dir = common::scratch_dir("train-t2c");
    // Targets read from the prompt by the exact extract T2C (--pattern).
    let rows: Vec<String> = (0..24)
        .map(|i| {
            let p = format!("bus {} has load {}.{} MW and angle", i % 5, 10 + i, i % 10);
            serde_json::json!({ "prompt": p, "completion": "ignored" }).to_string()
        })
        .collect();
    let data = write_lines(&dir, "t2c.jsonl", &rows);
    let t = T2cOptions {
        model: tiny(),
        pattern: Some("bus = number after \"bus\"; load = number after \"load\"".into()),
        inner: 32,
        precision: Precision::F64,
        cache: None,
    };
    let f = files(&dir, data, Holdout::Fraction(0.25), "t2c");
    let o = train_t2c(&f, &t, &opts(300, 8, 3e-3, 1)).unwrap();
    let r = regression(&o.train);
    assert!(r.loss < 0.05, "the head does not fit 18 rows: {r}");

    // The runtime's head on the runtime's pooled hidden states: what the trainer reported.
    let st = pimoe::model::safetensors::SafetensorFiles::open_file(&o.written.weights).unwrap();
    let cfg = LearnedT2cConfig { prefix: String::new(), hidden_size: 64, inner: 32, outputs: 2 };
    let head = LearnedT2c::load(&st, &cfg).unwrap();
    let b = CpuBackend;
    let llm = Llm::load(&b, &tiny()).unwrap();
    let tok = Tokenizer::load(&tiny().join("tokenizer.json")).unwrap();
    let pattern = pimoe::pimoe::t2c::ExtractPattern::parse(t.pattern.as_deref().unwrap()).unwrap();
    let (mut y, mut target) = (Vec::new(), Vec::new());
    for line in rows.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
        let prompt = line["prompt"].as_str().unwrap();
        let mean = llm.pooled_hidden(&b, &tok.encode(prompt).unwrap(), 512).unwrap();
        y.extend(head.from_sum(&mean, 1).unwrap());
        target.extend(pattern.extract(prompt).unwrap().values);
    }
    let all = RegressionReport::new(0.0, &y, &target, rows.len());
    let worst = regression(&o.train).max_abs.max(regression(val(&o)).max_abs);
    assert!((all.max_abs - worst).abs() <= 1e-9 * worst, "runtime {} vs trainer {worst}", all.max_abs);

    let frag = fragment(&o);
    assert_eq!((frag["kind"].as_str(), frag["outputs"].as_u64()), (Some("piern"), Some(2)));
    let e = load_manifest(
        &f.out,
        serde_json::json!({ "llm": tiny(), "router": { "kind": "trigger", "triggers": [{ "text": "=", "expert": "s" }] },
            "experts": [{ "name": "s", "t2c": frag, "expert": { "kind": "linear-solve", "n": 1 },
                          "format": { "template": "{value}" } }] }),
    );
    assert!(e.is_ok(), "{:?}", e.err());
}

// ----------------------------------------------------------------------------
// bad data
// ----------------------------------------------------------------------------

fn expect_err(e: pimoe::Result<Outcome>, file: &Path, needles: &[&str]) {
    let msg = match e {
        Err(e) => e.to_string(),
        Ok(_) => panic!("no error; expected one naming {} with {needles:?}", file.display()),
    };
    assert!(msg.contains(&file.display().to_string()), "{msg:?} does not name {}", file.display());
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not say {n:?}");
    }
}

#[test]
fn bad_data_files_are_errors_naming_the_file_and_line() {
    let dir = common::scratch_dir("train-bad");
    let t = opts(1, 4, 1e-3, 0);
    let expert = |lines: &[&str], name: &str| {
        let p = write_lines(&dir, name, &lines.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        (
            train_expert(
                &files(&dir, p.clone(), Holdout::Fraction(0.0), "e"),
                &mlp_options(Precision::F64),
                &t,
            ),
            p,
        )
    };
    let ok = r#"{"inputs": [1, 2], "outputs": [3, 4]}"#;
    let (e, p) = expert(&[ok, r#"{"inputs": [1, 2], "outputs": [3, 4}"#], "malformed.jsonl");
    expect_err(e, &p, &["line 2"]);
    let (e, p) = expert(&[ok, ok, r#"{"inputs": [1, 2]}"#], "missing.jsonl");
    expect_err(e, &p, &["line 3", "missing field `outputs`"]);
    let (e, p) = expert(&[r#"{"inputs": [1, 2], "outputs": [3, 4], "weight": 1}"#], "unknown.jsonl");
    expect_err(e, &p, &["line 1", "unknown field `weight`"]);
    let (e, p) = expert(&[ok, "", r#"{"inputs": [1], "outputs": [3, 4]}"#], "short.jsonl");
    expect_err(e, &p, &["line 3", "1 inputs"]);
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let e = train_expert(
        &files(&dir, empty.clone(), Holdout::Fraction(0.0), "e"),
        &mlp_options(Precision::F64),
        &t,
    );
    expect_err(e, &empty, &["empty"]);
    let missing = dir.join("nope.jsonl");
    let e = train_expert(
        &files(&dir, missing.clone(), Holdout::Fraction(0.0), "e"),
        &mlp_options(Precision::F64),
        &t,
    );
    expect_err(e, &missing, &[]);
    // Widths that do not fit the rows name the flag.
    let good = write_lines(&dir, "good.jsonl", &[ok.to_string()]);
    let mut wide = mlp_options(Precision::F64);
    wide.shape = ExpertShape::Mlp { widths: vec![3, 4, 2] };
    let e = train_expert(&files(&dir, good, Holdout::Fraction(0.0), "e"), &wide, &t).unwrap_err();
    assert!(e.to_string().contains("--widths [3, 4, 2]"), "{e}");

    // A firing that is not at the end of an answer token names the row.
    let gate = |rows: &[serde_json::Value], name: &str| {
        let p = write_lines(&dir, name, &rows.iter().map(|r| r.to_string()).collect::<Vec<_>>());
        (
            train_hidden_gate(
                &files(&dir, p.clone(), Holdout::Fraction(0.0), "g"),
                &gate_options(GateActivation::Softmax, None, None),
                &t,
            ),
            p,
        )
    };
    let row = |at: usize| serde_json::json!({ "prompt": "Q:", "answer": " héllo is 5", "fire": [{ "at": at, "expert": "dc" }] });
    let (e, p) = gate(&[row(7), row(3)], "inside-char.jsonl");
    expect_err(e, &p, &["line 2", "fire.at = 3 is not where an answer token ends"]);
    let (e, p) = gate(&[row(99)], "past-end.jsonl");
    expect_err(e, &p, &["line 1", "fire.at = 99"]);
    let (e, p) = gate(&[row(7), serde_json::json!({ "prompt": "Q:", "answer": "" })], "empty-answer.jsonl");
    expect_err(e, &p, &["line 2", "answer is empty"]);
    let (e, p) = gate(
        &[serde_json::json!({ "prompt": "Q:", "answer": "a", "fire": [{ "at": 1 }] })],
        "no-expert.jsonl",
    );
    expect_err(e, &p, &["line 1", "missing field `expert`"]);
    let (e, p) = gate(&[serde_json::json!({ "prompt": "Q:", "answer": "a" })], "no-firing.jsonl");
    expect_err(e, &p, &["nothing to learn"]);

    // Router rows: `type` rows need the expert's name; forms do not mix.
    let piern = |rows: &[&str], name: &str, experts: Option<Vec<String>>| {
        let p = write_lines(&dir, name, &rows.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut o = piern_options(Precision::F32);
        o.experts = experts;
        (train_piern(&files(&dir, p.clone(), Holdout::Fraction(0.0), "r"), &o, &t), p)
    };
    let (e, _) = piern(&[r#"{"text": "a", "type": 1}"#], "typed.jsonl", None);
    assert!(e.unwrap_err().to_string().contains("--experts NAME"));
    let (e, p) = piern(
        &[r#"{"text": "a", "type": 1}"#, r#"{"text": "b", "expert": null}"#],
        "mixed.jsonl",
        Some(vec!["dc".into()]),
    );
    expect_err(e, &p, &["line 2", "mixes"]);
    let (e, p) = piern(&[r#"{"text": "a", "type": 2}"#], "type2.jsonl", Some(vec!["dc".into()]));
    expect_err(e, &p, &["line 1", "type 2"]);
    let (e, p) = piern(&[r#"{"text": "", "expert": "x"}"#], "notext.jsonl", None);
    expect_err(e, &p, &["line 1", "no tokens"]);

    // T2C rows whose prompt does not fit the pattern name the row and the item.
    let p = write_lines(
        &dir,
        "t2c.jsonl",
        &[r#"{"prompt": "load 5"}"#.into(), r#"{"prompt": "nothing"}"#.into()],
    );
    let o = T2cOptions {
        model: tiny(),
        pattern: Some("number after \"load\"".into()),
        inner: 4,
        precision: Precision::F32,
        cache: None,
    };
    expect_err(
        train_t2c(&files(&dir, p.clone(), Holdout::Fraction(0.0), "t"), &o, &t),
        &p,
        &["line 2", "missing anchor"],
    );

    // Nothing half-written: a failed run leaves no output files.
    let out = dir.join("out");
    let leftovers: Vec<_> =
        std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
