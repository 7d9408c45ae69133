//! Routers as classifiers. Class 0 is "no expert" and class k + 1 fires expert k.
//! A softmax gate has one output per class; a sigmoid gate one output per expert
//! (all below the threshold: class 0). Predictions use the runtime's own activation
//! and its rule (`Router::best`): the best output, first on ties, fires when its
//! probability is above the threshold.

use super::float::Float;
use super::loss::{bce_logits, softmax_ce};
use super::metrics::ClassReport;
use crate::pimoe::router::{activate, GateActivation};

/// How examples of rare classes are weighted in the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassWeight {
    /// Every class (softmax) or every output's positives and negatives (sigmoid)
    /// weigh as much in total: weight = examples / (groups * examples in the group).
    Balanced,
    None,
}

impl ClassWeight {
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "balanced" => Some(ClassWeight::Balanced),
            "none" => Some(ClassWeight::None),
            _ => None,
        }
    }
}

/// Per-example loss weights, fixed from the training labels.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelWeights {
    /// One weight per class.
    Softmax(Vec<f64>),
    /// Per output: the weight of its positive and of its negative examples.
    Sigmoid { pos: Vec<f64>, neg: Vec<f64> },
}

#[derive(Clone, Debug)]
pub struct Classes {
    /// Output / class k + 1 fires experts[k].
    pub experts: Vec<String>,
    pub activation: GateActivation,
    /// Fires when the best probability is above this (the manifest's policy).
    pub threshold: f32,
}

impl Classes {
    /// The gate's outputs: one per expert, plus "none" for softmax.
    pub fn outputs(&self) -> usize {
        match self.activation {
            GateActivation::Sigmoid => self.experts.len(),
            GateActivation::Softmax => self.experts.len() + 1,
        }
    }

    /// "none", then the experts.
    pub fn names(&self) -> Vec<String> {
        std::iter::once("none".to_string()).chain(self.experts.iter().cloned()).collect()
    }

    pub fn weights(&self, labels: &[usize], mode: ClassWeight) -> LabelWeights {
        let n = labels.len() as f64;
        let mut count = vec![0usize; self.experts.len() + 1];
        labels.iter().for_each(|&l| count[l] += 1);
        // n / (groups * size), 1 for an empty group (it never occurs in the loss).
        let balanced = |size: usize, groups: f64| {
            if mode == ClassWeight::Balanced && size > 0 {
                n / (groups * size as f64)
            } else {
                1.0
            }
        };
        match self.activation {
            GateActivation::Softmax => {
                let present = count.iter().filter(|&&c| c > 0).count() as f64;
                LabelWeights::Softmax(count.iter().map(|&c| balanced(c, present)).collect())
            }
            GateActivation::Sigmoid => LabelWeights::Sigmoid {
                pos: count[1..].iter().map(|&c| balanced(c, 2.0)).collect(),
                neg: count[1..].iter().map(|&c| balanced(labels.len() - c, 2.0)).collect(),
            },
        }
    }

    /// The weighted loss of logits (rows, outputs) against labels (rows), and its
    /// gradient.
    pub fn loss<T: Float>(&self, w: &LabelWeights, logits: &[T], labels: &[usize]) -> (f64, Vec<T>) {
        let n = self.outputs();
        match w {
            LabelWeights::Softmax(per_class) => {
                let wr: Vec<T> = labels.iter().map(|&l| T::from_f64(per_class[l])).collect();
                softmax_ce(logits, n, labels, &wr)
            }
            LabelWeights::Sigmoid { pos, neg } => {
                let (mut t, mut we) = (Vec::with_capacity(logits.len()), Vec::with_capacity(logits.len()));
                for &l in labels {
                    for j in 0..n {
                        let hit = l == j + 1;
                        t.push(T::from_f64(if hit { 1.0 } else { 0.0 }));
                        we.push(T::from_f64(if hit { pos[j] } else { neg[j] }));
                    }
                }
                bce_logits(logits, &t, &we, labels.len())
            }
        }
    }

    /// The class the runtime's router would pick from one row of logits.
    pub fn predict(&self, logits: &[f32]) -> usize {
        let mut p = logits.to_vec();
        activate(&mut p, logits.len(), self.activation == GateActivation::Softmax);
        let mut j = 0;
        for (k, &v) in p.iter().enumerate() {
            if v > p[j] {
                j = k;
            }
        }
        let class = match self.activation {
            GateActivation::Sigmoid => j + 1,
            GateActivation::Softmax => j,
        };
        if class > 0 && p[j] > self.threshold {
            class
        } else {
            0
        }
    }

    /// Loss, accuracy, precision and recall of logits (rows, outputs).
    pub fn report<T: Float>(&self, w: &LabelWeights, logits: &[T], labels: &[usize]) -> ClassReport {
        let (loss, _) = self.loss(w, logits, labels);
        let n = self.outputs();
        let preds = logits.chunks_exact(n).map(|row| {
            let row32: Vec<f32> = row.iter().map(|v| v.to_f64() as f32).collect();
            self.predict(&row32)
        });
        ClassReport::new(&self.names(), loss, labels.iter().copied().zip(preds))
    }
}

/// The parts of a router fragment every gate shares: `kind`, `experts` and the
/// policy's threshold.
pub fn router_fragment(kind: &str, classes: &Classes) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("experts".into(), classes.experts.clone().into());
    m.insert("policy".into(), serde_json::json!({ "threshold": classes.threshold }));
    m
}

/// Checks a threshold flag as the runtime's `Router::new` does.
pub fn check_threshold(t: f32) -> crate::error::Result<()> {
    if t.is_finite() && (0.0..1.0).contains(&t) {
        Ok(())
    } else {
        Err(crate::error::Error::Request(format!("--threshold {t} is not in [0, 1)")))
    }
}

/// Distinct expert names in order of first appearance: a gate's default outputs.
pub fn first_appearance<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}
