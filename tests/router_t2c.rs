//! The router and the T2C module, on the CPU: exact extraction from every battery
//! prompt of the reference's data (Chinese and an English rendering), the pattern
//! language and its errors, the running router state against from-scratch means, the
//! policy (threshold, refractory span, firing limit), trigger suffixes, batched
//! hidden gates against single rows, the learned T2C head against a naive
//! computation, and weight files that do not fit.

use std::path::{Path, PathBuf};

use pimoe::model::safetensors::{HostData, HostTensor, SafetensorFiles};
use pimoe::pimoe::router::{
    Decision, EmbedTable, Gate, GateActivation, HiddenGate, HiddenGateConfig, Linear, Mlp, PiernGate,
    PiernGateConfig, Router, RouterInputs, RouterPolicy, RouterState, Trigger, TriggerGate,
};
use pimoe::pimoe::t2c::{
    ExtractItem, ExtractPattern, InputOrder, ItemKind, LearnedT2c, LearnedT2cConfig, MeanPool, Problem,
};
use safetensors::Dtype;

const ZH: &str = r#"currents = list[11] after "电流数据为"; t = number after "请计算电池第"; i_t = braced after "电流数据为""#;
const EN: &str = r#"currents = list[11] after "measured every 12 minutes is"; t = number after "SoH after second"; i_t = braced after ") is""#;

// ----------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------

/// xorshift64*, values in [-1, 1): fresh, non-zero test data without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// The reference's evaluation prompts, committed (tests/fixtures/piern/README.md).
fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/piern").join(file)
}

/// The reference's training prompts (3.6 MB, not committed): in ../shared/piern/ when
/// the crate sits beside it.
fn shared(file: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/piern").join(file);
    if !path.is_file() {
        // Past libtest's capture, so the skip shows in a plain `cargo test`.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no {} (the reference's battery training data beside the crate)",
            path.display()
        );
        return None;
    }
    Some(path)
}

fn prompts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["prompt"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The prompt's parts as written, found by its known structure with plain string
/// scanning (no pattern machinery): the list's items, the time t, the current at t,
/// and the hint's copy of t in parentheses (where the reference's training labels
/// take t from).
struct Parts<'a> {
    list: Vec<&'a str>,
    t: &'a str,
    i_t: &'a str,
    t_hint: &'a str,
}

fn structural_parts(p: &str) -> Parts<'_> {
    let open = p.find('[').unwrap();
    let close = open + p[open..].find(']').unwrap();
    let list: Vec<&str> = p[open + 1..close].split(", ").collect();
    // "，请计算电池第<t>秒后的SoH" follows the list.
    let after_list = &p[close..];
    let di = after_list.find('第').unwrap() + '第'.len_utf8();
    let t_len = after_list[di..].find('秒').unwrap();
    let t = &after_list[di..di + t_len];
    let lb = p.rfind('{').unwrap();
    let rb = p.rfind('}').unwrap();
    let lp = p.rfind('(').unwrap();
    let rp = p.rfind(')').unwrap();
    Parts { list, t, i_t: &p[lb + 1..rb], t_hint: &p[lp + 1..rp] }
}

fn english(parts: &Parts) -> String {
    format!(
        "The battery's current SoH is 1.0. Over 2 hours, the current data measured every 12 minutes is [{}], \
         compute the battery's SoH after second {}. Hint: the time span is 7200 seconds, and the current at \
         second ({}) is {{{}}}.",
        parts.list.join(", "),
        parts.t,
        parts.t,
        parts.i_t
    )
}

fn expected_values(parts: &Parts) -> Vec<f64> {
    let mut v: Vec<f64> = parts.list.iter().map(|s| s.parse::<f64>().unwrap()).collect();
    v.push(parts.t.parse().unwrap());
    v.push(parts.i_t.parse().unwrap());
    v
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

enum Store {
    F32,
    Bf16,
}

/// Writes `tensors` to `dir/model.safetensors` (f32, or bf16 where asked).
fn write_weights(dir: &Path, tensors: &[(&str, Vec<usize>, &[f32], Store)]) -> SafetensorFiles {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, data, store)| match store {
            Store::F32 => (name.to_string(), Dtype::F32, shape.clone(), bytemuck::cast_slice(data).to_vec()),
            Store::Bf16 => {
                let b: Vec<u16> = data.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
                (name.to_string(), Dtype::BF16, shape.clone(), bytemuck::cast_slice(&b).to_vec())
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    SafetensorFiles::open_dir(dir).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("router_t2c-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(f64::MIN_POSITIVE)
}

fn random_mlp(rng: &mut Rng, dims: &[usize], scale: f32) -> Mlp {
    let layers = dims
        .windows(2)
        .map(|d| Linear::new(d[1], d[0], rng.vec(d[1] * d[0], scale), rng.vec(d[1], scale)).unwrap())
        .collect();
    Mlp::from_layers(layers).unwrap()
}

/// The MLP computed naively in f64 (weights widened): the oracle.
fn naive_mlp(mlp: &Mlp, x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for (li, l) in mlp.layers().iter().enumerate() {
        if li > 0 {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        h = (0..l.out_dim())
            .map(|o| {
                l.bias()[o] as f64
                    + (0..l.in_dim()).map(|i| l.weight()[o * l.in_dim() + i] as f64 * h[i]).sum::<f64>()
            })
            .collect();
    }
    h
}

// ----------------------------------------------------------------------------
// extract: the battery data
// ----------------------------------------------------------------------------

/// Checks every prompt of the file; returns how many there were.
fn check_battery_file(path: &Path) -> usize {
    let prompts = prompts(path);
    let zh = ExtractPattern::parse(ZH).unwrap();
    let en = ExtractPattern::parse(EN).unwrap();
    let order = InputOrder::parse("0..11 | 12, 11").unwrap();
    assert_eq!(zh.output_len(), Some(13));
    for (k, p) in prompts.iter().enumerate() {
        let parts = structural_parts(p);
        assert_eq!(parts.list.len(), 11, "prompt {k}: the structure scan found {} samples", parts.list.len());
        assert_eq!(parts.t, parts.t_hint, "prompt {k}: the question's t and the hint's differ");
        let want = expected_values(&parts);

        let got = zh.extract(p).unwrap_or_else(|e| panic!("prompt {k}: {e}\n{p}"));
        assert_eq!(bits(&got.values), bits(&want), "prompt {k} (zh): values differ\n{p}");
        // Every span holds exactly the text of its value.
        for (v, span) in got.values.iter().zip(&got.spans) {
            assert_eq!(p[span.clone()].parse::<f64>().unwrap().to_bits(), v.to_bits());
        }

        let e = english(&parts);
        let got_en = en.extract(&e).unwrap_or_else(|err| panic!("prompt {k} (en): {err}\n{e}"));
        assert_eq!(bits(&got_en.values), bits(&want), "prompt {k} (en): values differ\n{e}");

        let groups = order.apply(&got.values).unwrap();
        assert_eq!(bits(&groups[0]), bits(&want[..11]));
        assert_eq!(bits(&groups[1]), bits(&[want[12], want[11]]));
    }
    eprintln!("{}: {} prompts, 13 inputs each, bitwise exact (zh and en)", path.display(), prompts.len());
    prompts.len()
}

#[test]
fn extract_recovers_every_evaluation_prompt_exactly() {
    let n = check_battery_file(&fixture("capacity_sample_PiERN.jsonl"));
    assert_eq!(n, 2400, "the reference's evaluation set has 2,400 prompts");
}

#[test]
fn extract_recovers_every_training_prompt_exactly() {
    if let Some(path) = shared("train_capacity_text2computation_module.jsonl") {
        assert_eq!(check_battery_file(&path), 7200);
    }
}

#[test]
fn extract_reads_the_first_prompt_as_written() {
    let p = "锂电池的现在的SoH为1.0。2小时内，每12分钟测量一次的电流数据为[1.0, 0.7999999999999999, 0.6, \
             0.39999999999999997, 0.19999999999999998, 0.0, 0.19999999999999998, 0.39999999999999997, 0.6, \
             0.7999999999999999, 1.0]，请计算电池第0.00041684035014589413秒后的SoH。提示：时间跨度为7200秒、\
             第(0.00041684035014589413)秒时电流数据为{0.9983333333333332}。";
    let v = ExtractPattern::parse(ZH).unwrap().extract(p).unwrap().values;
    assert_eq!(v.len(), 13);
    assert_eq!(v[1], 0.7999999999999999);
    assert_eq!(v[3], 0.39999999999999997);
    assert_eq!(v[11], 0.00041684035014589413);
    assert_eq!(v[12], 0.9983333333333332);
}

// ----------------------------------------------------------------------------
// extract: numbers, grid-style labels, errors
// ----------------------------------------------------------------------------

#[test]
fn numbers_parse_as_rust_parses_them() {
    let pat = ExtractPattern::parse(r#"number after "x="; list after "l=""#).unwrap();
    for s in [
        "0.7999999999999999",
        "1e-3",
        "-2",
        "1.0",
        "+5",
        ".5",
        "1.",
        "2.5E+10",
        "0",
        "-0.0",
        "123456789012345678901",
    ] {
        let text = format!("x={s} and l=[{s}, {s}]");
        let got = pat.extract(&text).unwrap_or_else(|e| panic!("{s}: {e}"));
        let want = s.parse::<f64>().unwrap();
        assert_eq!(bits(&got.values), bits(&[want; 3]), "{s}");
    }
    // A full stop after a bare number ends it; in a list `1.` is numpy's 1.
    let got = pat.extract("x=5. Then l=[1., 2.5e1]").unwrap().values;
    assert_eq!(got, vec![5.0, 1.0, 25.0]);
    assert_eq!(pat.extract("x=5.a l=[1]").unwrap_err().problem, Problem::MalformedNumber("5.a".into()));
}

#[test]
fn grid_numbers_after_labels() {
    let pat = ExtractPattern::parse(
        r#"p1 = number after "P1 ="; q1 = number after "Q1:"; v = number after "电压为"; limits = list after "limits""#,
    )
    .unwrap();
    let text = "Bus 3: P1 = 12.5 MW, Q1: -3.25e-1 MVAr; 电压为 1.02 p.u.; limits [ 0.95 ,1.05 ]";
    let got = pat.extract(text).unwrap();
    assert_eq!(got.values, vec![12.5, -0.325, 1.02, 0.95, 1.05]);
    assert_eq!(pat.output_len(), None, "a list without a count has no fixed length");
}

fn err(pattern: &str, text: &str) -> pimoe::pimoe::t2c::ExtractError {
    match ExtractPattern::parse(pattern).unwrap().extract(text) {
        Ok(v) => panic!("expected an error for {text:?}, got {:?}", v.values),
        Err(e) => e,
    }
}

#[test]
fn malformed_contexts_are_errors_naming_the_item() {
    let good = "电流数据为[1.0, 0.5, 0.25]，请计算电池第7.5秒后的SoH。第(7.5)秒时电流数据为{0.3}。";
    let pat3 = r#"currents = list[3] after "电流数据为"; t = number after "请计算电池第"; i_t = braced after "电流数据为""#;
    assert_eq!(
        ExtractPattern::parse(pat3).unwrap().extract(good).unwrap().values,
        vec![1.0, 0.5, 0.25, 7.5, 0.3]
    );

    // A missing anchor.
    let e = err(pat3, &good.replace("请计算电池第", "请估计电池第"));
    assert_eq!((e.item, &e.problem), (1, &Problem::MissingAnchor("请计算电池第".into())));
    assert!(e.to_string().contains("t = number after \"请计算电池第\""), "{e}");
    assert!(e.to_string().contains("missing anchor"), "{e}");

    // A bad number inside the list.
    let e = err(pat3, &good.replace("0.5", "0.5x"));
    assert_eq!((e.item, &e.problem), (0, &Problem::MalformedNumber("0.5x".into())));
    assert!(e.found.starts_with("\"0.5x"), "{}", e.found);
    let e = err(pat3, &good.replace("0.5", "0.5.1"));
    assert_eq!(e.problem, Problem::MalformedNumber("0.5.1".into()));
    let e = err(pat3, &good.replace("0.5", "abc"));
    assert_eq!(e.problem, Problem::ExpectedNumber);
    assert!(e.to_string().contains("found \"abc"), "{e}");

    // A short list and a long one.
    let e = err(pat3, &good.replace("[1.0, 0.5, 0.25]", "[1.0, 0.5]"));
    assert_eq!((e.item, &e.problem), (0, &Problem::WrongCount { expected: 3, found: 2 }));
    assert!(e.to_string().contains("expected 3 numbers, found 2"), "{e}");
    let e = err(pat3, &good.replace("[1.0, 0.5, 0.25]", "[1.0, 0.5, 0.25, 2]"));
    assert_eq!(e.problem, Problem::WrongCount { expected: 3, found: 4 });

    // Broken list syntax.
    assert_eq!(err(pat3, &good.replace("0.25]", "0.25,]")).problem, Problem::ExpectedNumber);
    assert_eq!(err(pat3, &good.replace("0.25]", "0.25 0.1]")).problem, Problem::Expected("',' or ']'"));
    assert_eq!(err(pat3, &good.replace("[1.0", "(1.0")).problem, Problem::Expected("'['"));

    // The time missing its number, the braces broken.
    let e = err(pat3, &good.replace("第7.5秒", "第秒"));
    assert_eq!((e.item, &e.problem), (1, &Problem::ExpectedNumber));
    let e = err(pat3, &good.replace("{0.3}", "{0.3"));
    assert_eq!((e.item, &e.problem), (2, &Problem::Expected("'}'")));
    let e = err(pat3, &good.replace("{0.3}", "0.3"));
    assert_eq!((e.item, &e.problem), (2, &Problem::Expected("'{'")));
    // The hint's anchor occurs only before the cursor: missing, not found backwards.
    let e = err(pat3, &good.replace("秒时电流数据为", "秒时电流为"));
    assert_eq!((e.item, &e.problem), (2, &Problem::MissingAnchor("电流数据为".into())));

    // Bare numbers: thousands separators and run-on text are malformed, not cut.
    assert_eq!(err(r#"number after "P=""#, "P=1,000 MW").problem, Problem::MalformedNumber("1,000".into()));
    assert_eq!(err(r#"number after "P=""#, "P=0x10").problem, Problem::MalformedNumber("0x10".into()));
    assert_eq!(err(r#"number after "P=""#, "P=12MW").problem, Problem::MalformedNumber("12MW".into()));
    assert_eq!(err(r#"number after "P=""#, "P=1e400").problem, Problem::OutOfRange("1e400".into()));
    assert_eq!(err(r#"number after "P=""#, "P=-1e999 MW").problem, Problem::OutOfRange("-1e999".into()));
    assert_eq!(err(r#"number after "P=""#, "P=").found, "end of text");
    assert_eq!(err(r#"number after "P=""#, "P=inf").problem, Problem::ExpectedNumber);
}

#[test]
fn pattern_language() {
    let p = ExtractPattern::parse(ZH).unwrap();
    assert_eq!(
        p.items()[0],
        ExtractItem {
            name: Some("currents".into()),
            kind: ItemKind::List,
            after: Some("电流数据为".into()),
            count: Some(11)
        }
    );
    assert_eq!(p.items()[2].kind, ItemKind::Braced);
    // Display writes the language back.
    assert_eq!(ExtractPattern::parse(&p.to_string()).unwrap(), p);
    // Escapes, ';' and '=' inside strings, a trailing ';', no names, no anchors.
    let q = ExtractPattern::parse(r#"number after "a;b=\"c\"\\"; braced;"#).unwrap();
    assert_eq!(q.items()[0].after.as_deref(), Some(r#"a;b="c"\"#));
    assert_eq!(q.items()[1], ExtractItem { name: None, kind: ItemKind::Braced, after: None, count: None });
    assert_eq!(ExtractPattern::parse(&q.to_string()).unwrap(), q);
    assert_eq!(q.extract(r#"xa;b="c"\ 4 {5}"#).unwrap().values, vec![4.0, 5.0]);
    // The same pattern as JSON items (for manifests).
    let items: Vec<ExtractItem> = serde_json::from_str(
        r#"[{"name": "currents", "kind": "list", "after": "电流数据为", "count": 11},
            {"name": "t", "kind": "number", "after": "请计算电池第"},
            {"name": "i_t", "kind": "braced", "after": "电流数据为"}]"#,
    )
    .unwrap();
    assert_eq!(ExtractPattern::new(items).unwrap(), p);
    // Bad patterns.
    for (bad, says) in [
        ("", "unknown kind"),
        ("numbr after \"x\"", "unknown kind"),
        ("number[3] after \"x\"", "only for lists"),
        ("list[x]", "bad count"),
        ("number after \"x", "unterminated"),
        ("number after x", "quoted string"),
        ("number after \"\"", "empty anchor"),
        ("number after \"x\" extra", "unexpected"),
        ("a b = number", "bad name"),
    ] {
        let e = ExtractPattern::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn input_order() {
    let o = InputOrder::parse("0..11 | 12, 11").unwrap();
    assert_eq!(o.groups()[0], (0..11).collect::<Vec<_>>());
    assert_eq!(o.groups()[1], vec![12, 11]);
    assert_eq!(o.to_string(), "0..11 | 12, 11");
    assert_eq!(o.min_len(), 13);
    let v: Vec<f64> = (0..13).map(|i| i as f64 + 0.5).collect();
    assert_eq!(o.apply_flat(&v).unwrap()[11..], [12.5, 11.5]);
    assert!(o.apply(&v[..12]).unwrap_err().contains("needs 13"));
    let j: InputOrder = serde_json::from_str("[[0,1,2,3,4,5,6,7,8,9,10],[12,11]]").unwrap();
    assert_eq!(j, o);
    assert_eq!(InputOrder::identity(3).apply_flat(&[1.0, 2.0, 3.0]).unwrap(), vec![1.0, 2.0, 3.0]);
    assert!(InputOrder::parse("0..0").is_err());
    assert!(InputOrder::parse("0, x").is_err());
    assert!(serde_json::from_str::<InputOrder>("[[]]").is_err());
}

// ----------------------------------------------------------------------------
// learned T2C
// ----------------------------------------------------------------------------

#[test]
fn learned_t2c_matches_a_naive_computation() {
    let (h, inner, n) = (96, 128, 13);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (w0, b0, w2, b2) =
        (rng.vec(inner * h, 0.1), rng.vec(inner, 0.1), rng.vec(n * inner, 0.1), rng.vec(n, 0.1));
    let dir = tmp("t2c");
    let files = write_weights(
        &dir,
        &[
            ("t2c.head.0.weight", vec![inner, h], &w0, Store::Bf16),
            ("t2c.head.0.bias", vec![inner], &b0, Store::F32),
            ("t2c.head.2.weight", vec![n, inner], &w2, Store::F32),
            ("t2c.head.2.bias", vec![n], &b2, Store::F32),
        ],
    );
    let cfg = LearnedT2cConfig { prefix: "t2c.".into(), hidden_size: h, inner, outputs: n };
    let t2c = LearnedT2c::load(&files, &cfg).unwrap();
    assert_eq!(t2c.outputs(), 13);

    let tokens = 37;
    let rows = rng.vec(tokens * h, 3.0); // (tokens, H)
    let got = t2c.from_rows(&rows).unwrap();

    // Naive: f64 mean, weights as stored (bf16 rounded for layer 0), plain sums.
    let mean: Vec<f64> =
        (0..h).map(|j| (0..tokens).map(|t| rows[t * h + j] as f64).sum::<f64>() / tokens as f64).collect();
    let w0r: Vec<f64> = w0.iter().map(|&x| half::bf16::from_f32(x).to_f32() as f64).collect();
    let hid: Vec<f64> = (0..inner)
        .map(|o| (b0[o] as f64 + (0..h).map(|i| w0r[o * h + i] * mean[i]).sum::<f64>()).max(0.0))
        .collect();
    let want: Vec<f64> = (0..n)
        .map(|o| b2[o] as f64 + (0..inner).map(|i| w2[o * inner + i] as f64 * hid[i]).sum::<f64>())
        .collect();
    let e = rel_err(&got, &want);
    assert!(e < 1e-12, "learned T2C vs naive: relative error {e:e}");

    // Streaming the rows in pieces gives the same sum, hence the same outputs.
    let mut pool = MeanPool::new(h);
    for chunk in rows.chunks(5 * h) {
        pool.add_rows(chunk).unwrap();
    }
    assert_eq!(pool.count(), tokens);
    assert_eq!(bits(&t2c.from_sum(pool.sum(), pool.count()).unwrap()), bits(&got));
    // A routed batch of two equals its rows.
    let mean2: Vec<f64> =
        mean.iter().chain(mean.iter().map(|x| x * 0.5).collect::<Vec<_>>().iter()).copied().collect();
    let batch = t2c.batch(&mean2, 2);
    assert_eq!(bits(&batch[..n]), bits(&t2c.batch(&mean, 1)));

    assert!(t2c.from_rows(&rows[..h + 1]).is_err());
    assert!(t2c.from_sum(pool.sum(), 0).is_err());
}

// ----------------------------------------------------------------------------
// router: piern gate
// ----------------------------------------------------------------------------

struct PiernWeights {
    embed: Vec<f32>,
    w0: Vec<f32>,
    b0: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

fn piern_weights(
    rng: &mut Rng,
    vocab: usize,
    e: usize,
    hidden: usize,
    n_out: usize,
    bias2: f32,
) -> PiernWeights {
    PiernWeights {
        embed: rng.vec(vocab * e, 1.0),
        w0: rng.vec(hidden * e, 0.05),
        b0: rng.vec(hidden, 0.05),
        w2: rng.vec(n_out * hidden, 0.3),
        b2: (0..n_out).map(|_| bias2 + rng.next() * 0.1).collect(),
    }
}

fn write_piern(
    dir: &Path,
    w: &PiernWeights,
    vocab: usize,
    e: usize,
    hidden: usize,
    n_out: usize,
    embed: Store,
) -> SafetensorFiles {
    write_weights(
        dir,
        &[
            ("embedding.weight", vec![vocab, e], &w.embed, embed),
            ("fc.0.weight", vec![hidden, e], &w.w0, Store::F32),
            ("fc.0.bias", vec![hidden], &w.b0, Store::F32),
            ("fc.2.weight", vec![n_out, hidden], &w.w2, Store::F32),
            ("fc.2.bias", vec![n_out], &w.b2, Store::F32),
        ],
    )
}

#[test]
fn piern_running_state_equals_the_from_scratch_mean() {
    let (vocab, e, hidden) = (300, 1536, 128);
    let mut rng = Rng(42);
    let w = piern_weights(&mut rng, vocab, e, hidden, 1, 0.0);
    let files = write_piern(&tmp("piern"), &w, vocab, e, hidden, 1, Store::Bf16);
    let cfg = PiernGateConfig { prefix: String::new(), vocab, embed_dim: e, hidden, experts: vec![0] };
    let gate = PiernGate::load(&files, &cfg).unwrap();
    // Never fires (threshold just under 1) so the policy does not interfere.
    let router =
        Router::new(Gate::Piern(gate.clone()), RouterPolicy { threshold: 0.999_999, ..Default::default() })
            .unwrap();
    let table: Vec<f32> = w.embed.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();

    let batch = 3;
    let mut states: Vec<RouterState> = (0..batch).map(|_| router.new_state()).collect();
    let size = states[0].len();
    assert_eq!(size, e);
    let mut history: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let steps = 3000;
    for step in 0..steps {
        let tokens: Vec<u32> =
            (0..batch).map(|_| ((rng.next() + 1.0) * 0.5 * vocab as f32) as u32 % vocab as u32).collect();
        let mut refs: Vec<&mut RouterState> = states.iter_mut().collect();
        let d = router.step(&mut refs, RouterInputs { tokens: &tokens, ..Default::default() }).unwrap();
        assert!(d.iter().all(|x| *x == Decision::Continue));
        for (h, &t) in history.iter_mut().zip(&tokens) {
            h.push(t);
        }
        // An injected result mid-way counts in the mean, as in the reference.
        if step == 1000 {
            router.absorb(&mut states[1], &[7, 8, 9]).unwrap();
            history[1].extend([7, 8, 9]);
        }
    }
    for (s, h) in states.iter().zip(&history) {
        assert_eq!(s.len(), size, "the state grew");
        assert_eq!(s.count(), h.len() as u64);
        let mean = s.mean();
        let mut max_err = 0f64;
        for j in 0..e {
            let naive = h.iter().map(|&t| table[t as usize * e + j] as f64).sum::<f64>() / h.len() as f64;
            max_err = max_err.max((mean[j] as f64 - naive).abs());
        }
        assert!(max_err < 1e-6, "running mean vs from scratch: max error {max_err:e}");
        // The probability from the state equals the from-scratch one.
        let scratch = gate.probs_from_tokens(h).unwrap()[0];
        let running = 1.0
            / (1.0 + (-naive_mlp(gate.mlp(), &mean.iter().map(|&x| x as f64).collect::<Vec<_>>())[0]).exp());
        assert!((scratch as f64 - running).abs() < 1e-5, "{scratch} vs {running}");
    }

    // The same tokens one sequence at a time decide the same as the batch.
    let mut single = router.new_state();
    for &t in &history[0] {
        router.step(&mut [&mut single], RouterInputs { tokens: &[t], ..Default::default() }).unwrap();
    }
    assert_eq!(single.mean(), states[0].mean());

    // A token outside the table is an error and leaves every state as it was.
    let before = states[2].mean();
    let mut refs: Vec<&mut RouterState> = states.iter_mut().collect();
    let e2 = router
        .step(&mut refs, RouterInputs { tokens: &[1, 2, vocab as u32], ..Default::default() })
        .unwrap_err();
    assert!(
        e2.to_string().contains("embedding.weight") && e2.to_string().contains(&vocab.to_string()),
        "{e2}"
    );
    assert_eq!(states[2].mean(), before);
    assert_eq!(states[0].count(), history[0].len() as u64);
}

#[test]
fn piern_gate_per_expert_outputs_fire_the_argmax() {
    let (vocab, e, hidden) = (20, 32, 16);
    let mut rng = Rng(7);
    let mut w = piern_weights(&mut rng, vocab, e, hidden, 3, -20.0);
    w.b2[2] = 20.0; // output 2 always wins
    let files = write_piern(&tmp("piern3"), &w, vocab, e, hidden, 3, Store::F32);
    let cfg = PiernGateConfig { prefix: String::new(), vocab, embed_dim: e, hidden, experts: vec![4, 5, 6] };
    let router =
        Router::new(Gate::Piern(PiernGate::load(&files, &cfg).unwrap()), RouterPolicy::default()).unwrap();
    let mut s = router.new_state();
    let d = router.step(&mut [&mut s], RouterInputs { tokens: &[3], ..Default::default() }).unwrap();
    assert!(matches!(d[0], Decision::Fire { expert: 6, prob } if prob > 0.99), "{d:?}");
}

// ----------------------------------------------------------------------------
// router: policy
// ----------------------------------------------------------------------------

fn always_firing(policy: RouterPolicy) -> Router {
    let (vocab, e, hidden) = (10, 8, 4);
    let mut rng = Rng(3);
    let w = piern_weights(&mut rng, vocab, e, hidden, 1, 30.0);
    let embed = EmbedTable::from_tensor(HostTensor {
        name: "embedding.weight".into(),
        shape: vec![vocab, e],
        data: HostData::F32(w.embed.clone()),
    })
    .unwrap();
    let mlp = Mlp::from_layers(vec![
        Linear::new(hidden, e, w.w0, w.b0).unwrap(),
        Linear::new(1, hidden, w.w2, w.b2).unwrap(),
    ])
    .unwrap();
    Router::new(Gate::Piern(PiernGate::new(embed, mlp, vec![2]).unwrap()), policy).unwrap()
}

fn fires(router: &Router, s: &mut RouterState) -> bool {
    let d = router.step(&mut [s], RouterInputs { tokens: &[1], ..Default::default() }).unwrap();
    match d[0] {
        Decision::Fire { expert, prob } => {
            assert_eq!(expert, 2);
            assert!(prob > 0.5);
            true
        }
        Decision::Continue => false,
    }
}

#[test]
fn refractory_span_and_firing_limit() {
    // The reference: fires at every step while the gate says so.
    let r = always_firing(RouterPolicy::default());
    let mut s = r.new_state();
    assert!((0..5).all(|_| fires(&r, &mut s)));
    assert_eq!(s.firings(), 5);

    // Refractory 3, at most 2 firings.
    let r = always_firing(RouterPolicy { threshold: 0.5, refractory: 3, max_firings: 2 });
    let mut s = r.new_state();
    let mut seq = Vec::new();
    for step in 0..12 {
        let f = fires(&r, &mut s);
        seq.push(f);
        if f {
            // The scheduler appends the result, then reports it.
            r.absorb(&mut s, &[4, 5]).unwrap();
            s.injected();
            assert_eq!(s.cooldown(), 3, "step {step}");
        }
    }
    assert_eq!(seq, [true, false, false, false, true, false, false, false, false, false, false, false]);
    assert_eq!(s.firings(), 2);
    assert_eq!(s.count(), 12 + 4);

    // Without an injection report there is no refractory span.
    let mut s = r.new_state();
    assert!(fires(&r, &mut s) && fires(&r, &mut s) && !fires(&r, &mut s));

    // A new answer starts afresh.
    s.reset();
    assert_eq!((s.firings(), s.count(), s.cooldown()), (0, 0, 0));
    assert!(fires(&r, &mut s));

    // Threshold out of range.
    assert!(Router::new(r.gate().clone(), RouterPolicy { threshold: 1.0, ..Default::default() }).is_err());
    assert!(
        Router::new(r.gate().clone(), RouterPolicy { threshold: f32::NAN, ..Default::default() }).is_err()
    );
    // Policy from a manifest, with defaults.
    let p: RouterPolicy = serde_json::from_str(r#"{"refractory": 4}"#).unwrap();
    assert_eq!(p, RouterPolicy { threshold: 0.5, refractory: 4, max_firings: usize::MAX });
}

// ----------------------------------------------------------------------------
// router: trigger gate
// ----------------------------------------------------------------------------

#[test]
fn trigger_fires_exactly_at_suffixes() {
    let gate = TriggerGate::new(vec![
        Trigger { text: "为".into(), expert: 1 },
        Trigger { text: "健康度为".into(), expert: 0 },
        Trigger { text: "SoH is".into(), expert: 2 },
    ])
    .unwrap();
    assert_eq!(gate.longest(), "健康度为".len());
    let router = Router::new(Gate::Trigger(gate), RouterPolicy::default()).unwrap();
    let answer = "经过推理，预计该时刻电池的健康度为0.912。The SoH is 0.9";
    // Decode one character per step (a token may hold several; the gate only sees
    // the text), for two sequences at once, the second shifted by one step.
    let chars: Vec<(usize, char)> = answer.char_indices().collect();
    let mut s = [router.new_state(), router.new_state()];
    let mut fired = [Vec::new(), Vec::new()];
    for k in 0..chars.len() {
        let end = |k: usize| chars.get(k).map_or(answer.len(), |&(i, c)| i + c.len_utf8());
        let texts = [&answer[..end(k)], &answer[..if k == 0 { 0 } else { end(k - 1) }]];
        let [a, b] = &mut s;
        let d = router
            .step(
                &mut [a, b],
                RouterInputs { tokens: &[0, 0], texts: Some(&texts), hidden: None, probs: None },
            )
            .unwrap();
        for (q, dq) in d.iter().enumerate() {
            if let Decision::Fire { expert, prob } = *dq {
                assert_eq!(prob, 1.0);
                fired[q].push((texts[q].to_string(), expert));
            }
        }
    }
    let want = vec![
        ("经过推理，预计该时刻电池的健康度为".to_string(), 0), // the longest match wins
        ("经过推理，预计该时刻电池的健康度为0.912。The SoH is".to_string(), 2),
    ];
    assert_eq!(fired[0], want);
    assert_eq!(fired[1], want);
    // A trigger gate needs the texts.
    let mut st = router.new_state();
    assert!(router.step(&mut [&mut st], RouterInputs { tokens: &[0], ..Default::default() }).is_err());
    assert!(TriggerGate::new(vec![Trigger { text: String::new(), expert: 0 }]).is_err());
}

// ----------------------------------------------------------------------------
// router: hidden gate
// ----------------------------------------------------------------------------

#[test]
fn hidden_gate_batch_equals_rows() {
    let (h, inner, b) = (96, 32, 7);
    let mut rng = Rng(99);
    for (activation, dims, experts) in [
        (GateActivation::Sigmoid, vec![h, 3], vec![0, 1, 2]),
        (GateActivation::Sigmoid, vec![h, inner, 1], vec![1]),
        (GateActivation::Softmax, vec![h, inner, 4], vec![0, 1, 2]),
    ] {
        let gate = HiddenGate::new(random_mlp(&mut rng, &dims, 0.3), activation, experts.clone()).unwrap();
        let hidden = rng.vec(b * h, 2.0); // (B, H)
        let probs = gate.probs(&hidden, b);
        let n = gate.mlp().out_dim();
        for r in 0..b {
            // One row alone gives the same bits as its row of the batch.
            assert_eq!(gate.probs(&hidden[r * h..(r + 1) * h], 1), probs[r * n..(r + 1) * n]);
            // And agrees with a naive f64 computation.
            let logits = naive_mlp(
                gate.mlp(),
                &hidden[r * h..(r + 1) * h].iter().map(|&x| x as f64).collect::<Vec<_>>(),
            );
            let want: Vec<f64> = match activation {
                GateActivation::Sigmoid => logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect(),
                GateActivation::Softmax => {
                    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                    logits.iter().map(|l| (l - m).exp() / z).collect()
                }
            };
            for (g, w) in probs[r * n..(r + 1) * n].iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{activation:?}: {g} vs {w}");
            }
        }
        // Decisions for the batch equal those for each row alone.
        let router =
            Router::new(Gate::Hidden(gate.clone()), RouterPolicy { threshold: 0.3, ..Default::default() })
                .unwrap();
        let mut states: Vec<RouterState> = (0..b).map(|_| router.new_state()).collect();
        assert_eq!(states[0].len(), 0);
        let tokens = vec![0u32; b];
        let mut refs: Vec<&mut RouterState> = states.iter_mut().collect();
        let batch = router
            .step(
                &mut refs,
                RouterInputs { tokens: &tokens, texts: None, hidden: Some(&hidden), probs: None },
            )
            .unwrap();
        for r in 0..b {
            let mut s = router.new_state();
            let one = router
                .step(
                    &mut [&mut s],
                    RouterInputs {
                        tokens: &[0],
                        texts: None,
                        hidden: Some(&hidden[r * h..(r + 1) * h]),
                        probs: None,
                    },
                )
                .unwrap();
            assert_eq!(one[0], batch[r]);
            // The decision follows the documented rule.
            let row = &probs[r * n..(r + 1) * n];
            let j = (0..n).fold(0, |j, k| if row[k] > row[j] { k } else { j });
            let want = match activation {
                GateActivation::Softmax if j == 0 => Decision::Continue,
                GateActivation::Softmax if row[j] > 0.3 => {
                    Decision::Fire { expert: experts[j - 1], prob: row[j] }
                }
                GateActivation::Sigmoid if row[j] > 0.3 => {
                    Decision::Fire { expert: experts[j], prob: row[j] }
                }
                _ => Decision::Continue,
            };
            assert_eq!(batch[r], want, "{activation:?} row {r}");
        }
        // Missing or mis-sized hidden rows are errors.
        let mut s = router.new_state();
        assert!(router.step(&mut [&mut s], RouterInputs { tokens: &[0], ..Default::default() }).is_err());
        assert!(router
            .step(
                &mut [&mut s],
                RouterInputs { tokens: &[0], texts: None, hidden: Some(&hidden[..h - 1]), probs: None }
            )
            .is_err());
    }
}

#[test]
fn hidden_gate_loads_from_safetensors() {
    let (h, inner) = (24, 8);
    let mut rng = Rng(5);
    let (w0, b0, w2, b2) =
        (rng.vec(inner * h, 0.5), rng.vec(inner, 0.5), rng.vec(3 * inner, 0.5), rng.vec(3, 0.5));
    let files = write_weights(
        &tmp("hidden"),
        &[
            ("gate.0.weight", vec![inner, h], &w0, Store::F32),
            ("gate.0.bias", vec![inner], &b0, Store::F32),
            ("gate.2.weight", vec![3, inner], &w2, Store::F32),
            ("gate.2.bias", vec![3], &b2, Store::F32),
        ],
    );
    let cfg: HiddenGateConfig = serde_json::from_str(
        r#"{"hidden_size": 24, "inner": 8, "activation": "softmax", "experts": [0, 1]}"#,
    )
    .unwrap();
    let g = HiddenGate::load(&files, &cfg).unwrap();
    assert_eq!((g.hidden_size(), g.mlp().out_dim(), g.activation()), (h, 3, GateActivation::Softmax));
    // Sigmoid over 2 experts needs 2 outputs, the file has 3.
    let sig = HiddenGateConfig { activation: GateActivation::Sigmoid, ..cfg.clone() };
    let e = HiddenGate::load(&files, &sig).unwrap_err().to_string();
    assert!(e.contains("gate.2.weight") && e.contains("[3, 8]"), "{e}");
    // A linear gate wants gate.0.weight (n_out, H).
    let lin = HiddenGateConfig { inner: None, ..cfg };
    let e = HiddenGate::load(&files, &lin).unwrap_err().to_string();
    assert!(e.contains("gate.0.weight"), "{e}");
}

// ----------------------------------------------------------------------------
// bad weight files
// ----------------------------------------------------------------------------

#[test]
fn bad_weight_files_name_the_tensor() {
    let (vocab, e, hidden) = (16, 12, 6);
    let mut rng = Rng(11);
    let w = piern_weights(&mut rng, vocab, e, hidden, 1, 0.0);
    let cfg = PiernGateConfig { prefix: String::new(), vocab, embed_dim: e, hidden, experts: vec![0] };

    // Missing fc.2.bias.
    let files = write_weights(
        &tmp("bad1"),
        &[
            ("embedding.weight", vec![vocab, e], &w.embed, Store::F32),
            ("fc.0.weight", vec![hidden, e], &w.w0, Store::F32),
            ("fc.0.bias", vec![hidden], &w.b0, Store::F32),
            ("fc.2.weight", vec![1, hidden], &w.w2, Store::F32),
        ],
    );
    let msg = PiernGate::load(&files, &cfg).unwrap_err().to_string();
    assert!(msg.contains("fc.2.bias") && msg.contains("missing"), "{msg}");

    // fc.0.weight transposed.
    let files = write_weights(
        &tmp("bad2"),
        &[
            ("embedding.weight", vec![vocab, e], &w.embed, Store::F32),
            ("fc.0.weight", vec![e, hidden], &w.w0, Store::F32),
            ("fc.0.bias", vec![hidden], &w.b0, Store::F32),
            ("fc.2.weight", vec![1, hidden], &w.w2, Store::F32),
            ("fc.2.bias", vec![1], &w.b2, Store::F32),
        ],
    );
    let msg = PiernGate::load(&files, &cfg).unwrap_err().to_string();
    assert!(msg.contains("fc.0.weight") && msg.contains("[12, 6]") && msg.contains("[6, 12]"), "{msg}");

    // A vocabulary that does not match the config; more experts than outputs; a prefix
    // that is not in the file.
    let files = write_piern(&tmp("bad3"), &w, vocab, e, hidden, 1, Store::F32);
    let msg = PiernGate::load(&files, &PiernGateConfig { vocab: vocab + 1, ..cfg.clone() })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("embedding.weight") && msg.contains("[17, 12]"), "{msg}");
    let msg = PiernGate::load(&files, &PiernGateConfig { experts: vec![0, 1], ..cfg.clone() })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fc.2.weight"), "{msg}");
    let msg = PiernGate::load(&files, &PiernGateConfig { prefix: "router.".into(), ..cfg.clone() })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("router.embedding.weight"), "{msg}");
    assert!(PiernGate::load(&files, &cfg).is_ok());

    // The learned T2C head with a wrong output count.
    let files = write_weights(
        &tmp("bad4"),
        &[
            ("head.0.weight", vec![hidden, e], &w.w0, Store::F32),
            ("head.0.bias", vec![hidden], &w.b0, Store::F32),
            ("head.2.weight", vec![1, hidden], &w.w2, Store::F32),
            ("head.2.bias", vec![1], &w.b2, Store::F32),
        ],
    );
    let t = LearnedT2cConfig { prefix: String::new(), hidden_size: e, inner: hidden, outputs: 13 };
    let msg = LearnedT2c::load(&files, &t).unwrap_err().to_string();
    assert!(msg.contains("head.2.weight") && msg.contains("[13, 6]"), "{msg}");
    assert!(LearnedT2c::load(&files, &LearnedT2cConfig { outputs: 1, ..t }).is_ok());
}
