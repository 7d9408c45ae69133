//! What `GET /metrics` reports, in the Prometheus text format (version 0.0.4). The
//! engine thread writes the gauges after every step; the HTTP side counts requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an atomic integer.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Finished HTTP requests by status code.
    pub requests: Mutex<BTreeMap<u16, u64>>,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Requests cancelled because their client went away.
    pub disconnects: AtomicU64,
    pub engine_failures: AtomicU64,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_free: AtomicU64,
    pub preemptions: AtomicU64,
    /// By expert name: (firings, failures).
    pub experts: Mutex<BTreeMap<String, (u64, u64)>>,
    pub step_seconds: Histogram,
    pub ttft_seconds: Histogram,
}

impl Metrics {
    pub fn count_request(&self, status: u16) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry(status).or_default() += 1;
    }

    pub fn expert(&self, name: &str, failed: bool) {
        let mut m = self.experts.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(name.to_string()).or_default();
        if failed {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        };
        let gauge = |s: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Relaxed));
        };
        let _ = writeln!(s, "# HELP pimoe_requests_total HTTP requests answered, by status code.");
        let _ = writeln!(s, "# TYPE pimoe_requests_total counter");
        for (code, n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(s, "pimoe_requests_total{{code=\"{code}\"}} {n}");
        }
        counter(
            &mut s,
            "pimoe_prompt_tokens_total",
            "Prompt tokens of admitted requests.",
            &self.prompt_tokens,
        );
        counter(
            &mut s,
            "pimoe_completion_tokens_total",
            "Tokens generated or injected by experts.",
            &self.completion_tokens,
        );
        counter(
            &mut s,
            "pimoe_disconnects_total",
            "Requests cancelled because the client went away.",
            &self.disconnects,
        );
        counter(
            &mut s,
            "pimoe_engine_failures_total",
            "Requests the engine could not answer (a failed scheduler step, or logits that became NaN or infinite); each got a 500.",
            &self.engine_failures,
        );
        counter(
            &mut s,
            "pimoe_preemptions_total",
            "Sequences sent back to wait because KV blocks ran out.",
            &self.preemptions,
        );
        gauge(&mut s, "pimoe_queue_depth", "Requests waiting for admission.", &self.queue_depth);
        gauge(&mut s, "pimoe_running_sequences", "Sequences admitted and generating.", &self.running);
        gauge(&mut s, "pimoe_kv_blocks_used", "KV cache blocks in use.", &self.kv_blocks_used);
        gauge(&mut s, "pimoe_kv_blocks_free", "KV cache blocks free.", &self.kv_blocks_free);
        let experts = self.experts.lock().unwrap_or_else(|p| p.into_inner());
        let _ =
            writeln!(s, "# HELP pimoe_expert_firings_total Expert results injected into answers, by expert.");
        let _ = writeln!(s, "# TYPE pimoe_expert_firings_total counter");
        for (name, (ok, _)) in experts.iter() {
            let _ = writeln!(s, "pimoe_expert_firings_total{{expert=\"{}\"}} {ok}", label(name));
        }
        let _ =
            writeln!(s, "# HELP pimoe_expert_failures_total Expert calls that could not compute, by expert.");
        let _ = writeln!(s, "# TYPE pimoe_expert_failures_total counter");
        for (name, (_, failed)) in experts.iter() {
            let _ = writeln!(s, "pimoe_expert_failures_total{{expert=\"{}\"}} {failed}", label(name));
        }
        drop(experts);
        self.step_seconds.write(&mut s, "pimoe_step_seconds", "Wall time of one scheduler step.");
        self.ttft_seconds.write(
            &mut s,
            "pimoe_time_to_first_token_seconds",
            "From admission request to first token.",
        );
        s
    }
}

/// A label value escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
