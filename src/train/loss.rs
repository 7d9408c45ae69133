//! Losses and their gradients with respect to the network's outputs. Each returns
//! the loss (summed in f64, in index order) and the gradient (in T).

use super::float::Float;

/// Mean squared error over all elements, as `nn.MSELoss()`: y, t (rows, n).
pub fn mse<T: Float>(y: &[T], t: &[T]) -> (f64, Vec<T>) {
    assert_eq!(y.len(), t.len(), "mse: outputs and targets differ in size");
    let n = y.len().max(1) as f64;
    let mut loss = 0f64;
    let scale = T::from_f64(2.0 / n);
    let grad = y
        .iter()
        .zip(t)
        .map(|(&a, &b)| {
            let d = a - b;
            loss += d.to_f64() * d.to_f64();
            scale * d
        })
        .collect();
    (loss / n, grad)
}

/// The logistic function, without overflow for either sign.
pub fn sigmoid<T: Float>(z: T) -> T {
    let one = T::from_f64(1.0);
    if z >= T::default() {
        one / (one + (-z).exp())
    } else {
        let e = z.exp();
        e / (one + e)
    }
}

/// Binary cross-entropy on logits z (rows, n) against targets t in {0, 1}, each
/// element weighted by w: sum of w * (log(1 + e^z) - t z) over the elements, divided
/// by rows (a sum over a row's outputs, a mean over rows). d/dz = w (sigmoid(z) - t) / rows.
pub fn bce_logits<T: Float>(z: &[T], t: &[T], w: &[T], rows: usize) -> (f64, Vec<T>) {
    assert!(z.len() == t.len() && z.len() == w.len(), "bce_logits: sizes differ");
    let inv = T::from_f64(1.0 / rows.max(1) as f64);
    let mut loss = 0f64;
    let grad = z
        .iter()
        .zip(t)
        .zip(w)
        .map(|((&z, &t), &w)| {
            // log(1 + e^z) = max(z, 0) + log(1 + e^-|z|)
            let relu = if z > T::default() { z } else { T::default() };
            let softplus = relu + (-z.abs()).exp().ln_1p();
            loss += w.to_f64() * (softplus - t * z).to_f64();
            w * (sigmoid(z) - t) * inv
        })
        .collect();
    (loss / rows.max(1) as f64, grad)
}

/// Softmax cross-entropy on logits z (rows, n) against class labels (rows), row r
/// weighted by w[r]: sum of w[r] * (logsumexp(z_r) - z_r[label]) over rows, divided by
/// rows. d/dz_r = w[r] (softmax(z_r) - onehot(label)) / rows.
pub fn softmax_ce<T: Float>(z: &[T], n: usize, labels: &[usize], w: &[T]) -> (f64, Vec<T>) {
    let rows = labels.len();
    assert!(z.len() == rows * n && w.len() == rows, "softmax_ce: z must be (rows, n), w (rows)");
    let inv = T::from_f64(1.0 / rows.max(1) as f64);
    let mut loss = 0f64;
    let mut grad = vec![T::default(); z.len()];
    for (r, (&label, &wr)) in labels.iter().zip(w).enumerate() {
        assert!(label < n, "softmax_ce: label {label} of row {r} is not below {n}");
        let zr = &z[r * n..(r + 1) * n];
        let m = zr.iter().copied().fold(zr[0], |a, b| if b > a { b } else { a });
        let mut sum = T::default();
        let g = &mut grad[r * n..(r + 1) * n];
        for (gi, &zi) in g.iter_mut().zip(zr) {
            *gi = (zi - m).exp();
            sum += *gi;
        }
        let lse = m.to_f64() + sum.to_f64().ln();
        loss += wr.to_f64() * (lse - zr[label].to_f64());
        for (k, gi) in g.iter_mut().enumerate() {
            let onehot = T::from_f64(if k == label { 1.0 } else { 0.0 });
            *gi = wr * (*gi / sum - onehot) * inv;
        }
    }
    (loss / rows.max(1) as f64, grad)
}
