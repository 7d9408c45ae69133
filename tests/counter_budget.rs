//! Counter budgets: the emulator's counters for a fixed set of steps (one layer of
//! Qwen2.5-0.5B's shapes, a small vocabulary, random weights) against the budget
//! committed in bench/results/counter-budget.json. A kernel change that moves more
//! bytes, touches more sectors per request, runs more instructions (each beyond
//! 1 %), adds one shared-memory bank conflict or loses active lanes fails here, on
//! any machine, with the kernel and the counter named.
//!
//! After an intended change, rewrite the budget with the one line
//!     PIMOE_UPDATE_BUDGET=1 cargo test --release --test counter_budget
//! and commit the file with the change (bench/NOTES.md says what moved and why).
//!
//! Always on the emulator (the counters are its own), GPU or not: the counts are a
//! function of the PTX and the shapes, so they are the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pimoe::backend::cuda::CudaBackend;
use pimoe::bench::profile::{self, KernelRow, ProfileConfig, StepKind};
use serde_json::{json, Value};

const UPDATE: &str = "PIMOE_UPDATE_BUDGET=1 cargo test --release --test counter_budget";

/// Relative growth allowed in bytes, sectors per request and instructions.
const MARGIN: f64 = 0.01;
/// Absolute drop allowed in lane efficiency.
const LANE_MARGIN: f64 = 0.005;

fn budget_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/counter-budget.json")
}

/// The steps counted: decode at m = 1 and at a gemv bucket above it; prefills through
/// the 64-row GEMM with partial tiles (80) and the 128-row GEMM (512 rows make the
/// gate/up projection's 4 x 76 tiles, enough blocks for it) and the prefill attention.
fn steps() -> Vec<(&'static str, ProfileConfig)> {
    vec![
        ("decode b1 ctx200", ProfileConfig { step: StepKind::Decode, batch: 1, ctx: 200 }),
        ("decode b5 ctx100", ProfileConfig { step: StepKind::Decode, batch: 5, ctx: 100 }),
        ("prefill b1 ctx80", ProfileConfig { step: StepKind::Prefill, batch: 1, ctx: 80 }),
        ("prefill b1 ctx512", ProfileConfig { step: StepKind::Prefill, batch: 1, ctx: 512 }),
    ]
}

fn entry(r: &KernelRow) -> Value {
    json!({
        "launches": r.launches,
        "warp_instructions": r.warp_instructions,
        "dram_bytes": r.dram_bytes,
        "bytes_in_sectors": r.bytes_in_sectors,
        "sectors_per_request": (r.sectors_per_request * 1e4).round() / 1e4,
        "bank_conflicts": r.bank_conflicts,
        "lane_efficiency": (r.lane_efficiency * 1e4).round() / 1e4,
    })
}

fn measure() -> BTreeMap<String, BTreeMap<String, Value>> {
    let b = CudaBackend::emulated(0).expect("the PTX emulator (built by cargo build --release)");
    let mut config: Value = serde_json::from_str(profile::QWEN25_05B).unwrap();
    config["num_hidden_layers"] = json!(1);
    config["vocab_size"] = json!(4096);
    // Token ids must lie in the shrunk vocabulary.
    config["bos_token_id"] = json!(0);
    config["eos_token_id"] = json!(1);
    let config = pimoe::model::ModelConfig::parse(&config.to_string(), Path::new("<budget config>")).unwrap();
    let llm = pimoe::llm::Llm::random(&b, config, 1).unwrap();
    steps()
        .into_iter()
        .map(|(name, cfg)| {
            let report = profile::run(&b, &llm, name, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let rows = report.kernels.iter().map(|r| (r.kernel.clone(), entry(r))).collect();
            (name.to_string(), rows)
        })
        .collect()
}

/// What is wrong with `now` against `budget` for one kernel, and what improved. The
/// comparisons are negated so that a missing or NaN counter fails.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn compare(at: &str, budget: &Value, now: &Value, bad: &mut Vec<String>, better: &mut Vec<String>) {
    let get = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if budget["launches"] != now["launches"] {
        bad.push(format!("{at}: launches {} (budget {})", now["launches"], budget["launches"]));
    }
    for k in ["warp_instructions", "dram_bytes", "bytes_in_sectors", "sectors_per_request"] {
        let (was, is) = (get(budget, k), get(now, k));
        if !(is <= was * (1.0 + MARGIN)) {
            bad.push(format!("{at}: {k} {is} > budget {was} + {}%", MARGIN * 100.0));
        } else if is < was * (1.0 - MARGIN) {
            better.push(format!("{at}: {k} {is} (budget {was})"));
        }
    }
    let (was, is) = (get(budget, "bank_conflicts"), get(now, "bank_conflicts"));
    if !(is <= was) {
        bad.push(format!("{at}: bank_conflicts {is} > budget {was} (no margin)"));
    } else if is < was {
        better.push(format!("{at}: bank_conflicts {is} (budget {was})"));
    }
    let (was, is) = (get(budget, "lane_efficiency"), get(now, "lane_efficiency"));
    if !(is >= was - LANE_MARGIN) {
        bad.push(format!("{at}: lane_efficiency {is} < budget {was} - {LANE_MARGIN}"));
    }
}

#[test]
fn kernels_stay_within_their_counter_budget() {
    let t = std::time::Instant::now();
    let now = measure();
    eprintln!("counted {} steps on the emulator in {:.1} s", now.len(), t.elapsed().as_secs_f64());
    let path = budget_path();
    if std::env::var("PIMOE_UPDATE_BUDGET").as_deref() == Ok("1") {
        let file = json!({
            "note": "emulator counters per kernel for fixed steps (tests/counter_budget.rs); \
                     dram_bytes is the emulator's model (each sector once per launch), the rest are counts",
            "update": UPDATE,
            "margins": {"bytes_sectors_instructions": MARGIN, "bank_conflicts": 0, "lane_efficiency_drop": LANE_MARGIN},
            "counted_at_commit": pimoe::bench::git_commit(),
            "date": pimoe::bench::utc_now(),
            "steps": now,
        });
        pimoe::bench::write_atomic(&path, serde_json::to_string_pretty(&file).unwrap().as_bytes()).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; write it with `{UPDATE}`", path.display()));
    let budget: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut bad, mut better) = (Vec::new(), Vec::new());
    for (step, kernels) in &now {
        let Some(planned) = budget["steps"][step].as_object() else {
            bad.push(format!("{step}: not in the budget"));
            continue;
        };
        for (kernel, counts) in kernels {
            match planned.get(kernel) {
                Some(b) => compare(&format!("{step} / {kernel}"), b, counts, &mut bad, &mut better),
                None => bad.push(format!("{step} / {kernel}: a kernel the budget does not have")),
            }
        }
        for kernel in planned.keys().filter(|k| !kernels.contains_key(*k)) {
            bad.push(format!("{step} / {kernel}: in the budget but no longer launched"));
        }
    }
    for b in &better {
        eprintln!("better than the budget (rewrite it to keep the gain): {b}");
    }
    assert!(
        bad.is_empty(),
        "counters past the budget in {}:\n  {}\nif the change is intended: {UPDATE}",
        path.display(),
        bad.join("\n  ")
    );
    let kernels: usize = now.values().map(BTreeMap::len).sum();
    eprintln!("{kernels} kernel rows within the budget");
}
