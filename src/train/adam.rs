//! Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980) with bias correction, as
//! `torch.optim.Adam` without weight decay, plus the sparse variant for embedding
//! tables (as `torch.optim.SparseAdam`: only the rows a batch touched move, and
//! only their moments are updated).

use super::float::Float;

/// A parameter tensor with its Adam moments.
#[derive(Clone, Debug)]
pub struct Param<T> {
    pub value: Vec<T>,
    m: Vec<T>,
    v: Vec<T>,
}

impl<T: Float> Param<T> {
    pub fn new(value: Vec<T>) -> Self {
        let n = value.len();
        Param { value, m: vec![T::default(); n], v: vec![T::default(); n] }
    }
}

struct Coefficients<T> {
    /// lr / (1 - beta1^t)
    step: T,
    /// 1 / sqrt(1 - beta2^t)
    inv_sqrt_bc2: T,
    b1: T,
    b2: T,
    eps: T,
}

#[derive(Clone, Copy, Debug)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken so far (the bias correction's t).
    t: u64,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 0 }
    }

    /// Starts a step: every `update` until the next `tick` uses the same t.
    pub fn tick(&mut self) {
        self.t += 1;
    }

    /// This step's coefficients in T.
    fn coefficients<T: Float>(&self) -> Coefficients<T> {
        assert!(self.t > 0, "Adam: tick() before the first update");
        let t = self.t as i32;
        let f = T::from_f64;
        Coefficients {
            step: f(self.lr / (1.0 - self.beta1.powi(t))),
            inv_sqrt_bc2: f(1.0 / (1.0 - self.beta2.powi(t)).sqrt()),
            b1: f(self.beta1),
            b2: f(self.beta2),
            eps: f(self.eps),
        }
    }

    /// One element: moments from g, then x -= lr m_hat / (sqrt(v_hat) + eps).
    #[inline(always)]
    fn element<T: Float>(c: &Coefficients<T>, x: &mut T, m: &mut T, v: &mut T, g: T) {
        let one = T::from_f64(1.0);
        *m = c.b1 * *m + (one - c.b1) * g;
        *v = c.b2 * *v + (one - c.b2) * g * g;
        *x = *x - c.step * *m / (v.sqrt() * c.inv_sqrt_bc2 + c.eps);
    }

    /// Updates every element of `p` from its gradient `g`.
    pub fn update<T: Float>(&self, p: &mut Param<T>, g: &[T]) {
        assert_eq!(p.value.len(), g.len(), "Adam: gradient and parameter sizes differ");
        let c = self.coefficients::<T>();
        for ((x, &g), (m, v)) in p.value.iter_mut().zip(g).zip(p.m.iter_mut().zip(p.v.iter_mut())) {
            Self::element(&c, x, m, v, g);
        }
    }

    /// The same for the rows `rows` of a (rows, dim) table, with `g` (rows.len(), dim)
    /// their gradients; the other rows and their moments are left alone.
    pub fn update_rows<T: Float>(&self, p: &mut Param<T>, dim: usize, rows: &[u32], g: &[T]) {
        assert_eq!(rows.len() * dim, g.len(), "Adam: row gradients are not (rows, dim)");
        let c = self.coefficients::<T>();
        for (&r, gr) in rows.iter().zip(g.chunks_exact(dim)) {
            let at = r as usize * dim..(r as usize + 1) * dim;
            let (x, m, v) = (&mut p.value[at.clone()], &mut p.m[at.clone()], &mut p.v[at]);
            for i in 0..dim {
                Self::element(&c, &mut x[i], &mut m[i], &mut v[i], gr[i]);
            }
        }
    }
}
