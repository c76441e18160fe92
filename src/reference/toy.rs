//! f64 reference for the toy MLP (`curvgpu::toy`): per-sample loss and gradient by hand-written
//! reverse mode, the Hessian-vector product by forward-mode dual numbers pushed through that
//! same gradient code (so the HVP shares no formula with the shader's R-operator), the
//! sampled-label gradient and the accuracy.
//!
//! Model: a = W1·x + b1, h = tanh(a), z = W2·h + b2, loss = logsumexp(z) − z_label, averaged
//! over the samples. θ packs W1 (hidden × inputs, row-major), b1 (hidden), W2 (classes ×
//! hidden, row-major), b2 (classes).
//!
//! Sampled label of sample i (the rule the shader follows): u = (w >> 8)·2⁻²⁴ with w element i
//! of the Philox stream for `seed` ([`crate::reference::philox::philox_u32`]`(seed, i, 1)`);
//! ŷ is the first class c whose cumulative probability p₀ + … + p_c exceeds u, or the last
//! class when rounding leaves every cumulative sum ≤ u.

use std::ops::{Add, Mul, Neg, Sub};

use super::philox;
use crate::toy::MlpShape as Shape;

/// The scalar operations the forward and backward passes need: f64, and a dual number whose
/// tangent carries a directional derivative.
trait Scalar:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Neg<Output = Self>
{
    fn lift(v: f64) -> Self;
    fn value(self) -> f64;
    fn tanh(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn recip(self) -> Self;
}

impl Scalar for f64 {
    fn lift(v: f64) -> Self {
        v
    }
    fn value(self) -> f64 {
        self
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn recip(self) -> Self {
        1.0 / self
    }
}

/// re + ε·du with ε² = 0.
#[derive(Clone, Copy, Debug)]
struct Dual {
    re: f64,
    du: f64,
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual {
            re: self.re + o.re,
            du: self.du + o.du,
        }
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual {
            re: self.re - o.re,
            du: self.du - o.du,
        }
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual {
            re: self.re * o.re,
            du: self.re * o.du + self.du * o.re,
        }
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual {
            re: -self.re,
            du: -self.du,
        }
    }
}

impl Scalar for Dual {
    fn lift(v: f64) -> Self {
        Dual { re: v, du: 0.0 }
    }
    fn value(self) -> f64 {
        self.re
    }
    fn tanh(self) -> Self {
        let t = self.re.tanh();
        Dual {
            re: t,
            du: (1.0 - t * t) * self.du,
        }
    }
    fn exp(self) -> Self {
        let e = self.re.exp();
        Dual {
            re: e,
            du: e * self.du,
        }
    }
    fn ln(self) -> Self {
        Dual {
            re: self.re.ln(),
            du: self.du / self.re,
        }
    }
    fn recip(self) -> Self {
        Dual {
            re: 1.0 / self.re,
            du: -self.du / (self.re * self.re),
        }
    }
}

/// Softmax probabilities and the loss logsumexp(z) − z_label of one sample's logits.
fn softmax_loss<T: Scalar>(z: &[T], label: Option<usize>) -> (Vec<T>, T) {
    // Shifting by the largest logit changes nothing mathematically and keeps exp finite.
    let zmax = z
        .iter()
        .map(|v| v.value())
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<T> = z.iter().map(|&v| (v - T::lift(zmax)).exp()).collect();
    let mut s = T::lift(0.0);
    for &v in &e {
        s = s + v;
    }
    let inv = s.recip();
    let p = e.iter().map(|&v| v * inv).collect();
    let loss = match label {
        Some(y) => s.ln() + T::lift(zmax) - z[y],
        None => T::lift(0.0),
    };
    (p, loss)
}

/// Hidden activations and logits of one sample.
fn forward<T: Scalar>(shape: Shape, theta: &[T], x: &[f64]) -> (Vec<T>, Vec<T>) {
    let (d, hn, cn) = (shape.inputs, shape.hidden, shape.classes);
    let (w1, rest) = theta.split_at(hn * d);
    let (b1, rest) = rest.split_at(hn);
    let (w2, b2) = rest.split_at(cn * hn);
    let h: Vec<T> = (0..hn)
        .map(|j| {
            let mut a = b1[j];
            for k in 0..d {
                a = a + w1[j * d + k] * T::lift(x[k]);
            }
            a.tanh()
        })
        .collect();
    let z = (0..cn)
        .map(|c| {
            let mut s = b2[c];
            for j in 0..hn {
                s = s + w2[c * hn + j] * h[j];
            }
            s
        })
        .collect();
    (h, z)
}

/// Loss and gradient of one sample by reverse mode written out: dz = p − e_label,
/// dW2 = dz·hᵀ, dh = W2ᵀ·dz, da = dh ⊙ (1 − h²), dW1 = da·xᵀ.
fn sample_grad<T: Scalar>(shape: Shape, theta: &[T], x: &[f64], label: usize) -> (T, Vec<T>) {
    let (d, hn, cn) = (shape.inputs, shape.hidden, shape.classes);
    let (h, z) = forward(shape, theta, x);
    let (p, loss) = softmax_loss(&z, Some(label));
    let dz: Vec<T> = (0..cn)
        .map(|c| p[c] - T::lift(if c == label { 1.0 } else { 0.0 }))
        .collect();
    let w2 = &theta[hn * d + hn..hn * d + hn + cn * hn];
    let mut g = vec![T::lift(0.0); shape.param_count()];
    for j in 0..hn {
        let mut dh = T::lift(0.0);
        for c in 0..cn {
            dh = dh + w2[c * hn + j] * dz[c];
        }
        let da = dh * (T::lift(1.0) - h[j] * h[j]);
        for k in 0..d {
            g[j * d + k] = da * T::lift(x[k]);
        }
        g[hn * d + j] = da;
    }
    let o2 = hn * d + hn;
    for c in 0..cn {
        for j in 0..hn {
            g[o2 + c * hn + j] = dz[c] * h[j];
        }
        g[o2 + cn * hn + c] = dz[c];
    }
    (loss, g)
}

/// Sample `i`'s input row.
fn row(shape: Shape, x: &[f64], i: usize) -> &[f64] {
    &x[i * shape.inputs..(i + 1) * shape.inputs]
}

/// Loss and gradient of sample `i` alone (the terms the mean is made of).
pub fn sample_loss_grad(shape: Shape, theta: &[f64], x: &[f64], label: usize) -> (f64, Vec<f64>) {
    sample_grad(shape, theta, x, label)
}

/// Hessian of sample `x`'s loss times `v`: the tangent of the gradient along `v`.
pub fn sample_hvp(shape: Shape, theta: &[f64], v: &[f64], x: &[f64], label: usize) -> Vec<f64> {
    let t: Vec<Dual> = theta
        .iter()
        .zip(v)
        .map(|(&re, &du)| Dual { re, du })
        .collect();
    sample_grad(shape, &t, x, label)
        .1
        .iter()
        .map(|g| g.du)
        .collect()
}

/// Mean loss and mean gradient over the samples (`x` is N × inputs row-major).
pub fn loss_grad(shape: Shape, theta: &[f64], x: &[f64], labels: &[u32]) -> (f64, Vec<f64>) {
    let n = labels.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; shape.param_count()];
    for (i, &y) in labels.iter().enumerate() {
        let (l, g) = sample_grad(shape, theta, row(shape, x, i), y as usize);
        loss += l;
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
    grad.iter_mut().for_each(|a| *a /= n as f64);
    (loss / n as f64, grad)
}

/// Hessian of the mean loss times `v`.
pub fn hvp(shape: Shape, theta: &[f64], v: &[f64], x: &[f64], labels: &[u32]) -> Vec<f64> {
    let n = labels.len();
    let mut hv = vec![0.0; shape.param_count()];
    for (i, &y) in labels.iter().enumerate() {
        let s = sample_hvp(shape, theta, v, row(shape, x, i), y as usize);
        hv.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
    }
    hv.iter_mut().for_each(|a| *a /= n as f64);
    hv
}

/// Softmax probabilities of sample `i`.
pub fn probabilities(shape: Shape, theta: &[f64], x: &[f64], i: usize) -> Vec<f64> {
    let (_, z) = forward(shape, theta, row(shape, x, i));
    softmax_loss(&z, None).0
}

/// The uniform in [0, 1) that draws sample `i`'s label: the top 24 bits of Philox element `i`.
pub fn label_uniform(seed: u64, i: usize) -> f64 {
    f64::from(philox::philox_u32(seed, i as u64, 1)[0] >> 8) / 16_777_216.0
}

/// The label drawn for sample `i` (module docs give the rule), and the distance from its
/// uniform to the nearest cumulative probability: a draw that close to a class boundary may
/// land differently in f32, so tests choose seeds where it stays clear.
pub fn sampled_label(shape: Shape, theta: &[f64], x: &[f64], seed: u64, i: usize) -> (u32, f64) {
    let p = probabilities(shape, theta, x, i);
    let u = label_uniform(seed, i);
    let mut cum = 0.0;
    let mut label = None;
    let mut margin = f64::INFINITY;
    for (c, &pc) in p.iter().enumerate() {
        cum += pc;
        if c + 1 < p.len() {
            margin = margin.min((cum - u).abs());
        }
        if label.is_none() && cum > u {
            label = Some(c as u32);
        }
    }
    (label.unwrap_or(p.len() as u32 - 1), margin)
}

/// Gradient of the mean loss with every label replaced by its sampled label, and the smallest
/// margin of any draw (see [`sampled_label`]).
pub fn sampled_grad(
    shape: Shape,
    theta: &[f64],
    x: &[f64],
    n: usize,
    seed: u64,
) -> (Vec<f64>, f64) {
    let mut margin = f64::INFINITY;
    let labels: Vec<u32> = (0..n)
        .map(|i| {
            let (y, m) = sampled_label(shape, theta, x, seed, i);
            margin = margin.min(m);
            y
        })
        .collect();
    (loss_grad(shape, theta, x, &labels).1, margin)
}

/// Fraction of samples whose largest logit (the first, on ties) is their label.
pub fn accuracy(shape: Shape, theta: &[f64], x: &[f64], labels: &[u32]) -> f64 {
    let correct = labels
        .iter()
        .enumerate()
        .filter(|&(i, &y)| {
            let (_, z) = forward(shape, theta, row(shape, x, i));
            let mut best = 0;
            for c in 1..z.len() {
                if z[c] > z[best] {
                    best = c;
                }
            }
            best == y as usize
        })
        .count();
    correct as f64 / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        inputs: 2,
        hidden: 3,
        classes: 3,
    };

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                ((i as f64 + 1.0) * 0.7548776662 + seed as f64 * 0.5698402909).fract() * 2.0 - 1.0
            })
            .collect()
    }

    fn data() -> (Vec<f64>, Vec<u32>) {
        (values(10, 3), vec![0, 2, 1, 1, 0])
    }

    // Central differences of an f64 function with step 1e-5 carry O(h²) ≈ 1e-10 truncation and
    // O(ε/h) ≈ 1e-11 rounding: 1e-7 leaves a wide margin while catching any wrong formula.
    #[test]
    fn gradient_matches_central_differences() {
        let (x, y) = data();
        let theta = values(SHAPE.param_count(), 1);
        let (_, g) = loss_grad(SHAPE, &theta, &x, &y);
        for p in 0..theta.len() {
            let mut t = theta.clone();
            t[p] += 1e-5;
            let up = loss_grad(SHAPE, &t, &x, &y).0;
            t[p] -= 2e-5;
            let down = loss_grad(SHAPE, &t, &x, &y).0;
            let fd = (up - down) / 2e-5;
            assert!((fd - g[p]).abs() < 1e-7, "param {p}: {fd} vs {}", g[p]);
        }
    }

    #[test]
    fn hvp_matches_differences_of_the_gradient() {
        let (x, y) = data();
        let theta = values(SHAPE.param_count(), 1);
        let v = values(SHAPE.param_count(), 2);
        let hv = hvp(SHAPE, &theta, &v, &x, &y);
        let at = |s: f64| {
            let t: Vec<f64> = theta.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            loss_grad(SHAPE, &t, &x, &y).1
        };
        let (up, down) = (at(1e-5), at(-1e-5));
        for p in 0..theta.len() {
            let fd = (up[p] - down[p]) / 2e-5;
            assert!((fd - hv[p]).abs() < 1e-7, "param {p}: {fd} vs {}", hv[p]);
        }
    }

    #[test]
    fn sampled_labels_follow_the_cumulative_rule() {
        let (x, _) = data();
        let theta = values(SHAPE.param_count(), 1);
        for i in 0..5 {
            let (y, _) = sampled_label(SHAPE, &theta, &x, 9, i);
            let p = probabilities(SHAPE, &theta, &x, i);
            let u = label_uniform(9, i);
            let below: f64 = p[..y as usize].iter().sum();
            assert!(below <= u && u < below + p[y as usize], "sample {i}");
        }
    }
}
