//! A DeepONet (Lu et al., https://arxiv.org/abs/1910.03193) for training: branch and
//! trunk nets, y = sum over features f of branch_f * trunk_f + bias. The forward
//! pass is the runtime's (`Net::forward` and `deeponet::combine`), so the saved
//! weights compute the same bits in the expert runtime.

use super::adam::{Adam, Param};
use super::float::Float;
use super::net::{DenseGrad, Net, Trace};
use super::output::TensorOut;
use crate::pimoe::experts::deeponet::combine;
use crate::pimoe::experts::mlp::Activation;
use crate::sampling::Rng;

#[derive(Clone, Debug)]
pub struct DeepONetNet<T> {
    pub branch: Net<T>,
    pub trunk: Net<T>,
    /// (1), starts at zero.
    pub bias: Param<T>,
}

pub struct DeepONetTrace<T> {
    rows: usize,
    /// (rows, p) each.
    b: Vec<T>,
    t: Vec<T>,
    branch: Trace<T>,
    trunk: Trace<T>,
}

pub struct DeepONetGrad<T> {
    pub branch: Vec<DenseGrad<T>>,
    pub trunk: Vec<DenseGrad<T>>,
    pub bias: T,
}

impl<T: Float> DeepONetNet<T> {
    /// Both width lists end in the same feature count p.
    pub fn init(branch: &[usize], trunk: &[usize], act: Activation, rng: &mut Rng) -> Self {
        assert_eq!(branch.last(), trunk.last(), "DeepONet: branch and trunk must end in the same width");
        DeepONetNet {
            branch: Net::init(branch, act, rng),
            trunk: Net::init(trunk, act, rng),
            bias: Param::new(vec![T::default()]),
        }
    }

    fn p(&self) -> usize {
        self.branch.n_out()
    }

    /// xb (rows, branch inputs), xt (rows, trunk inputs) -> (rows).
    pub fn forward(&self, xb: &[T], xt: &[T], rows: usize) -> Vec<T> {
        let (b, t) = (self.branch.forward(xb, rows), self.trunk.forward(xt, rows));
        combine(&b, &t, rows, self.p(), Some(self.bias.value[0]))
    }

    pub fn forward_trace(&self, xb: &[T], xt: &[T], rows: usize) -> (Vec<T>, DeepONetTrace<T>) {
        let (b, branch) = self.branch.forward_trace(xb, rows);
        let (t, trunk) = self.trunk.forward_trace(xt, rows);
        let y = combine(&b, &t, rows, self.p(), Some(self.bias.value[0]));
        (y, DeepONetTrace { rows, b, t, branch, trunk })
    }

    /// From dy (rows): d/d branch_f = dy trunk_f, d/d trunk_f = dy branch_f.
    pub fn backward(&self, tr: &DeepONetTrace<T>, dy: &[T]) -> DeepONetGrad<T> {
        let p = self.p();
        assert_eq!(dy.len(), tr.rows, "DeepONet::backward: dy must be (rows)");
        let (mut db, mut dt) = (vec![T::default(); tr.b.len()], vec![T::default(); tr.t.len()]);
        let mut bias = T::default();
        for (r, &g) in dy.iter().enumerate() {
            for f in r * p..(r + 1) * p {
                db[f] = g * tr.t[f];
                dt[f] = g * tr.b[f];
            }
            bias += g;
        }
        let (branch, _) = self.branch.backward(&tr.branch, &db, false);
        let (trunk, _) = self.trunk.backward(&tr.trunk, &dt, false);
        DeepONetGrad { branch, trunk, bias }
    }

    pub fn update(&mut self, adam: &Adam, g: &DeepONetGrad<T>) {
        self.branch.update(adam, &g.branch);
        self.trunk.update(adam, &g.trunk);
        adam.update(&mut self.bias, &[g.bias]);
    }

    /// The output becomes y * scale + shift: the branch net's last layer takes the
    /// scale (the sum is linear in it), the bias both.
    pub fn fold_output(&mut self, scale: f64, shift: f64) {
        let p = self.p();
        self.branch.fold_output(&vec![scale; p], &vec![0.0; p]);
        self.bias.value[0] = T::from_f64(self.bias.value[0].to_f64() * scale + shift);
    }

    /// The runtime's names: `branch_net.layers.{2i}.*`, `trunk_net.layers.{2i}.*`, `bias`.
    pub fn tensors(&self) -> Vec<TensorOut> {
        let mut t = self.branch.tensors("branch_net.layers");
        t.extend(self.trunk.tensors("trunk_net.layers"));
        t.push(TensorOut::new("bias".into(), vec![1], &self.bias.value));
        t
    }
}
