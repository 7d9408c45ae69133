//! kernels/router.cu (the hidden-state gate for a whole batch) against
//! `HiddenGate::probs`, its CPU twin.

use crate::harness::*;
use pimoe::backend::cuda::router::{router_gate, GateWeights};
use pimoe::backend::Backend;
use pimoe::pimoe::router::{GateActivation, HiddenGate, Linear, Mlp};

fn linear(out: usize, inp: usize, seed: u64) -> Linear {
    Linear::new(out, inp, rand_vec(out * inp, seed), rand_vec(out, seed + 1)).unwrap()
}

#[test]
fn router_gate_matches_cpu() {
    let Some(b) = gpu("router_gate_matches_cpu") else { return };
    for &(rows, h) in &[(1usize, 576usize), (7, 896), (64, 31)] {
        for (inner, act, experts) in [
            (None, GateActivation::Sigmoid, 2usize),
            (Some(16), GateActivation::Sigmoid, 1),
            (Some(33), GateActivation::Softmax, 3),
        ] {
            let n_out = if act == GateActivation::Softmax { experts + 1 } else { experts };
            let layers = match inner {
                None => vec![linear(n_out, h, 3)],
                Some(n1) => vec![linear(n1, h, 3), linear(n_out, n1, 5)],
            };
            let gate =
                HiddenGate::new(Mlp::from_layers(layers.clone()).unwrap(), act, (0..experts).collect())
                    .unwrap();
            let hidden = rand_vec(rows * h, 7 + rows as u64);
            let want = gate.probs(&hidden, rows);

            let up = |v: &[f32]| b.tensor_from(v);
            let (w1, b1) = (up(layers[0].weight()), up(layers[0].bias()));
            let second = layers.get(1).map(|l| (up(l.weight()), up(l.bias())));
            let w = GateWeights { w1: &w1, b1: &b1, second: second.as_ref().map(|(w, b)| (w, b)) };
            let mut probs = poisoned(&b, rows * n_out);
            let n1 = inner.unwrap_or(n_out);
            router_gate(&b, &mut probs, &up(&hidden), &w, h, n1, n_out, act == GateActivation::Softmax);
            check(
                &format!("router gate rows {rows} h {h} inner {inner:?} {act:?}"),
                &b,
                &probs,
                &want,
                F32_TOL,
            );
        }
    }
}
