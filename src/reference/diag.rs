//! Diagonal-Hessian optimiser updates (Sophia-G, Sophia-H, AdaHessian) and the Hutchinson
//! running mean, in f64, updating state slices in place.
//!
//! Every function panics if its slices differ in length (or on the other preconditions it
//! documents): these are test references, so a misuse should fail loudly.

/// Sophia-G hyper-parameters (Liu et al. 2023; `Liuhong99/Sophia`, `sophia.py`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaGParams {
    /// Learning rate.
    pub lr: f64,
    /// EMA coefficient of the gradient momentum.
    pub beta1: f64,
    /// EMA coefficient of the Hessian estimate, used by [`sophiag_refresh`].
    pub beta2: f64,
    /// Clipping scale ρ.
    pub rho: f64,
    /// Batch size (tokens per batch) scaling the Gauss–Newton–Bartlett estimate.
    pub bs: f64,
    /// Decoupled weight decay, applied as θ·(1 − lr·wd) before the update.
    pub weight_decay: f64,
    /// Added to the denominator ρ·bs·h.
    pub eps: f64,
}

/// Sophia-H hyper-parameters (Hutchinson-estimator variant, optax-style).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaHParams {
    /// Learning rate.
    pub lr: f64,
    /// EMA coefficient of the gradient momentum.
    pub beta1: f64,
    /// EMA coefficient of the Hessian estimate, used by [`sophiah_refresh`].
    pub beta2: f64,
    /// Scale γ of the Hessian in the denominator.
    pub gamma: f64,
    /// Floor of the denominator γ·h.
    pub eps: f64,
    /// Decoupled weight decay, scaled by the learning rate.
    pub weight_decay: f64,
}

/// AdaHessian hyper-parameters (Yao et al. 2021; `amirgholami/adahessian`,
/// `optim_adahessian.py`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaHessianParams {
    /// Learning rate.
    pub lr: f64,
    /// EMA coefficient of the gradient momentum.
    pub beta1: f64,
    /// EMA coefficient of the squared Hessian diagonal.
    pub beta2: f64,
    /// Added to the denominator after the power is applied.
    pub eps: f64,
    /// Weight decay, added to the update and scaled by the learning rate.
    pub weight_decay: f64,
    /// Hessian power k of the denominator (1 in the paper's code, 0.5 in torch-optimizer).
    pub hessian_power: f64,
}

#[track_caller]
fn same_len(n: usize, others: &[usize]) {
    for &len in others {
        assert_eq!(len, n, "slice length mismatch");
    }
}

/// `torch.sign`: zero maps to zero, unlike `f64::signum`.
fn torch_sign(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x.signum()
    }
}

/// One Sophia-G step on `theta` and its momentum `m`, given Hessian estimate `h` and
/// gradient `g`.
///
/// Per element: θ ← θ·(1 − lr·wd); m ← β1·m + (1−β1)·g;
/// θ ← θ − lr·sign(m)·min(|m| / (ρ·bs·h + ε), 1), with sign(0) = 0.
/// Panics if the slices differ in length.
pub fn sophiag_step(p: &SophiaGParams, theta: &mut [f64], m: &mut [f64], h: &[f64], g: &[f64]) {
    same_len(theta.len(), &[m.len(), h.len(), g.len()]);
    for (((th, m), &h), &g) in theta.iter_mut().zip(m.iter_mut()).zip(h).zip(g) {
        *th *= 1.0 - p.lr * p.weight_decay;
        *m = p.beta1 * *m + (1.0 - p.beta1) * g;
        let ratio = (m.abs() / (p.rho * p.bs * h + p.eps)).min(1.0);
        *th -= p.lr * torch_sign(*m) * ratio;
    }
}

/// Sophia-G Hessian refresh from a Gauss–Newton–Bartlett sample `ghat` (the gradient of
/// the loss on labels sampled from the model): h ← β2·h + (1−β2)·ĝ².
/// Panics if the slices differ in length.
pub fn sophiag_refresh(p: &SophiaGParams, h: &mut [f64], ghat: &[f64]) {
    same_len(h.len(), &[ghat.len()]);
    for (h, &gh) in h.iter_mut().zip(ghat) {
        *h = p.beta2 * *h + (1.0 - p.beta2) * gh * gh;
    }
}

/// One Sophia-H step; `t` is the 1-based step count after incrementing it for this step.
///
/// Per element: m ← β1·m + (1−β1)·g; m̂ = m / (1 − β1^t);
/// u = clamp(m̂ / max(γ·h, ε), −1, 1); θ ← θ − lr·(u + wd·θ), with θ on the right taken
/// before the step (decoupled decay, then the whole update scaled by −lr).
/// Panics if the slices differ in length or `t` is 0.
pub fn sophiah_step(
    p: &SophiaHParams,
    t: u64,
    theta: &mut [f64],
    m: &mut [f64],
    h: &[f64],
    g: &[f64],
) {
    assert!(t >= 1, "step count is 1-based");
    same_len(theta.len(), &[m.len(), h.len(), g.len()]);
    let bc1 = 1.0 - p.beta1.powf(t as f64);
    for (((th, m), &h), &g) in theta.iter_mut().zip(m.iter_mut()).zip(h).zip(g) {
        *m = p.beta1 * *m + (1.0 - p.beta1) * g;
        let u = (*m / bc1 / (p.gamma * h).max(p.eps)).clamp(-1.0, 1.0);
        *th -= p.lr * (u + p.weight_decay * *th);
    }
}

/// Sophia-H Hessian refresh from a Hutchinson sample `zhz` = u⊙(Hu):
/// h ← β2·h + (1−β2)·zhz. Negative curvature is kept as is; the step's ε floor handles it.
/// Panics if the slices differ in length.
pub fn sophiah_refresh(p: &SophiaHParams, h: &mut [f64], zhz: &[f64]) {
    same_len(h.len(), &[zhz.len()]);
    for (h, &z) in h.iter_mut().zip(zhz) {
        *h = p.beta2 * *h + (1.0 - p.beta2) * z;
    }
}

/// Mean of |x| over each contiguous run of `segment` elements, one value per run.
///
/// Panics if `segment` is 0 or does not divide `x.len()`.
pub fn segment_mean_abs(x: &[f64], segment: usize) -> Vec<f64> {
    assert!(
        segment > 0 && x.len().is_multiple_of(segment),
        "segment {segment} must divide length {}",
        x.len()
    );
    x.chunks_exact(segment)
        .map(|run| run.iter().map(|v| v.abs()).sum::<f64>() / segment as f64)
        .collect()
}

/// One AdaHessian step; `t` is the 1-based step count after incrementing it for this step.
///
/// D is [`segment_mean_abs`] of the Hutchinson sample `zhz`, spread back over its segment:
/// segment 1 is the plain |zhz|; a row length, a block length, or kh·kw of a row-major conv
/// weight gives the spatial averaging of the reference code. Then per element:
/// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·D²;
/// θ ← θ − lr·(m/(1−β1^t) / ((√v)^k / (√(1−β2^t))^k + eps) + wd·θ).
/// Panics if the slices differ in length, `t` is 0, or `segment` does not divide the length.
#[allow(clippy::too_many_arguments)] // one slice per state/input buffer, as on the GPU
pub fn adahessian_step(
    p: &AdaHessianParams,
    t: u64,
    segment: usize,
    theta: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f64],
    zhz: &[f64],
) {
    assert!(t >= 1, "step count is 1-based");
    same_len(theta.len(), &[m.len(), v.len(), g.len(), zhz.len()]);
    let d = segment_mean_abs(zhz, segment);
    let bc1 = 1.0 - p.beta1.powf(t as f64);
    let bc2_k = (1.0 - p.beta2.powf(t as f64)).sqrt().powf(p.hessian_power);
    let state = theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut());
    for (i, ((th, m), v)) in state.enumerate() {
        let di = d[i / segment];
        *m = p.beta1 * *m + (1.0 - p.beta1) * g[i];
        *v = p.beta2 * *v + (1.0 - p.beta2) * di * di;
        let denom = v.sqrt().powf(p.hessian_power) / bc2_k + p.eps;
        *th -= p.lr * (*m / bc1 / denom + p.weight_decay * *th);
    }
}

/// Folds the `k`-th Hutchinson sample `zhz` (k ≥ 1, counting this one) into the running
/// mean `est`: est ← est + (zhz − est)/k, so after k calls `est` is the mean of the k samples.
/// Panics if the slices differ in length or `k` is 0.
pub fn hutchinson_accumulate(est: &mut [f64], zhz: &[f64], k: u64) {
    assert!(k >= 1, "probe count is 1-based");
    same_len(est.len(), &[zhz.len()]);
    let k = k as f64;
    for (e, &z) in est.iter_mut().zip(zhz) {
        *e += (z - *e) / k;
    }
}

/// AdamW hyper-parameters (`torch.optim.AdamW`, amsgrad off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// EMA coefficient of the gradient.
    pub beta1: f64,
    /// EMA coefficient of the squared gradient.
    pub beta2: f64,
    /// Added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay, applied as θ·(1 − lr·wd) before the update.
    pub weight_decay: f64,
}

/// One AdamW step; `t` is the 1-based step count after incrementing it for this step.
///
/// Per element: θ ← θ·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t); θ ← θ − lr·m̂ / (√v̂ + ε).
/// Panics if the slices differ in length or `t` is 0.
pub fn adamw_step(
    p: &AdamWParams,
    t: u64,
    theta: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f64],
) {
    assert!(t >= 1, "step count is 1-based");
    same_len(theta.len(), &[m.len(), v.len(), g.len()]);
    let bc1 = 1.0 - p.beta1.powi(t as i32);
    let bc2 = 1.0 - p.beta2.powi(t as i32);
    for (((th, m), v), &g) in theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *th *= 1.0 - p.lr * p.weight_decay;
        *m = p.beta1 * *m + (1.0 - p.beta1) * g;
        *v = p.beta2 * *v + (1.0 - p.beta2) * g * g;
        let m_hat = *m / bc1;
        let v_hat = *v / bc2;
        *th -= p.lr * m_hat / (v_hat.sqrt() + p.eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "got {got}, want {want}"
        );
    }

    const SG: SophiaGParams = SophiaGParams {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        rho: 0.04,
        bs: 10.0,
        weight_decay: 0.5,
        eps: 1e-15,
    };

    #[test]
    fn sophiag_zero_hessian_is_a_sign_step() {
        // m' = 0.9·0 + 0.1·g; r = 1 since h = 0; θ' = θ(1 − 0.05) ∓ 0.1.
        let (mut th, mut m) = ([2.0, 2.0, 2.0], [0.0; 3]);
        sophiag_step(&SG, &mut th, &mut m, &[0.0; 3], &[1.0, -1.0, 0.0]);
        close(m[0], 0.1);
        close(m[1], -0.1);
        close(th[0], 1.9 - 0.1);
        close(th[1], 1.9 + 0.1);
        close(th[2], 1.9); // sign(0) = 0: decay only
    }

    #[test]
    fn sophiag_clipping() {
        let p = SophiaGParams {
            weight_decay: 0.0,
            ..SG
        };
        // ρ·bs·h = 0.4·h. m' = 0.9·0.5 + 0.1·1.5 = 0.6.
        // h = 5: r = 0.6 / 2 = 0.3 (unclipped); h = 1: 0.6 / 0.4 = 1.5 → clipped to 1.
        let (mut th, mut m) = ([1.0, 1.0], [0.5, 0.5]);
        sophiag_step(&p, &mut th, &mut m, &[5.0, 1.0], &[1.5, 1.5]);
        close(m[0], 0.6);
        close(th[0], 1.0 - 0.1 * 0.3);
        close(th[1], 1.0 - 0.1);
    }

    #[test]
    fn sophiag_refresh_squares_the_sample() {
        let mut h = [2.0];
        sophiag_refresh(&SG, &mut h, &[-3.0]);
        close(h[0], 0.99 * 2.0 + 0.01 * 9.0);
    }

    const SH: SophiaHParams = SophiaHParams {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        gamma: 0.01,
        eps: 1e-12,
        weight_decay: 0.1,
    };

    #[test]
    fn sophiah_step_cases() {
        // t = 1, g = 2: m' = 0.2, m̂ = 0.2 / 0.1 = 2, γh = 1 → u = 1 (clipped).
        // θ' = 3 − 0.1·(1 + 0.1·3) = 2.87.
        let (mut th, mut m) = ([3.0], [0.0]);
        sophiah_step(&SH, 1, &mut th, &mut m, &[100.0], &[2.0]);
        close(m[0], 0.2);
        close(th[0], 2.87);

        // t = 2: m' = 0.9 + 0.05 = 0.95, m̂ = 0.95 / 0.19 = 5, γh = 10 → u = 0.5.
        let p = SophiaHParams {
            weight_decay: 0.0,
            ..SH
        };
        let (mut th, mut m) = ([1.0], [1.0]);
        sophiah_step(&p, 2, &mut th, &mut m, &[1000.0], &[0.5]);
        close(th[0], 1.0 - 0.1 * 0.5);

        // Negative curvature: the denominator floors at ε, so u saturates at −1.
        let (mut th, mut m) = ([1.0], [0.0]);
        sophiah_step(&p, 1, &mut th, &mut m, &[-5.0], &[-1e-3]);
        close(th[0], 1.0 + 0.1);
    }

    #[test]
    fn sophiah_refresh_keeps_sign() {
        let mut h = [1.0];
        sophiah_refresh(&SH, &mut h, &[-3.0]);
        close(h[0], 0.99 - 0.03);
    }

    const AH: AdaHessianParams = AdaHessianParams {
        lr: 0.15,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-4,
        weight_decay: 0.0,
        hessian_power: 1.0,
    };

    #[test]
    fn adahessian_first_step_powers() {
        // t = 1, g = 1, zhz = −4: m' = 0.1, m/bc1 = 1; v' = 0.001·16, v/bc2 = 16.
        // k = 1: denom = 4 + eps; k = 0.5: denom = 2 + eps.
        for (k, root) in [(1.0, 4.0), (0.5, 2.0)] {
            let p = AdaHessianParams {
                hessian_power: k,
                ..AH
            };
            let (mut th, mut m, mut v) = ([1.0], [0.0], [0.0]);
            adahessian_step(&p, 1, 1, &mut th, &mut m, &mut v, &[1.0], &[-4.0]);
            close(m[0], 0.1);
            close(v[0], 0.016);
            close(th[0], 1.0 - 0.15 / (root + 1e-4));
        }
        // Weight decay adds wd·θ = 0.01·2 to the update.
        let p = AdaHessianParams {
            weight_decay: 0.01,
            ..AH
        };
        let (mut th, mut m, mut v) = ([2.0], [0.0], [0.0]);
        adahessian_step(&p, 1, 1, &mut th, &mut m, &mut v, &[1.0], &[-4.0]);
        close(th[0], 2.0 - 0.15 * (1.0 / 4.0001 + 0.02));
    }

    #[test]
    fn adahessian_second_step() {
        // From m = 0.1, v = 0.016 with g = 0.5, zhz = 2:
        // m' = 0.09 + 0.05 = 0.14, bc1 = 0.19; v' = 0.015984 + 0.004 = 0.019984,
        // bc2 = 0.001999; k = 1: denom = √(0.019984 / 0.001999) + eps.
        let (mut th, mut m, mut v) = ([1.0], [0.1], [0.016]);
        adahessian_step(&AH, 2, 1, &mut th, &mut m, &mut v, &[0.5], &[2.0]);
        close(m[0], 0.14);
        close(v[0], 0.019984);
        let denom = (0.019984f64 / 0.001999).sqrt() + 1e-4;
        close(th[0], 1.0 - 0.15 * (0.14 / 0.19 / denom));
    }

    #[test]
    fn segment_averaging_2x3() {
        let zhz = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0];
        assert_eq!(segment_mean_abs(&zhz, 3), [2.0, 5.0]);
        assert_eq!(segment_mean_abs(&zhz, 1), zhz.map(f64::abs));
        assert_eq!(segment_mean_abs(&zhz, 6), [3.5]);

        // Per-row D: with t = 1, m/bc1 = g = 1 and √(v/bc2) = D, so θ' = θ − lr/(D + eps).
        let (mut th, mut m, mut v) = ([0.0; 6], [0.0; 6], [0.0; 6]);
        adahessian_step(&AH, 1, 3, &mut th, &mut m, &mut v, &[1.0; 6], &zhz);
        for (i, &t) in th.iter().enumerate() {
            let d = if i < 3 { 2.0 } else { 5.0 };
            close(t, -0.15 / (d + 1e-4));
        }
    }

    #[test]
    #[should_panic(expected = "must divide")]
    fn segment_must_divide() {
        segment_mean_abs(&[1.0; 5], 2);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn mismatched_lengths_panic() {
        sophiag_refresh(&SG, &mut [0.0; 2], &[1.0]);
    }

    #[test]
    fn hutchinson_running_mean() {
        let samples = [[1.0, -2.0, 0.5], [3.0, 4.0, -1.5], [-0.5, 1.0, 7.0]];
        let mut est = [123.0; 3]; // overwritten by the first sample (k = 1)
        for (k, s) in samples.iter().enumerate() {
            hutchinson_accumulate(&mut est, s, k as u64 + 1);
        }
        for (j, &e) in est.iter().enumerate() {
            close(e, samples.iter().map(|s| s[j]).sum::<f64>() / 3.0);
        }
    }

    #[test]
    fn adamw_first_two_steps_by_hand() {
        let p = AdamWParams {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        // t = 1: m̂ = g and v̂ = g², so θ' = θ(1 − 0.05) − 0.1·g/(|g| + ε).
        let (mut th, mut m, mut v) = ([2.0], [0.0], [0.0]);
        adamw_step(&p, 1, &mut th, &mut m, &mut v, &[-4.0]);
        close(m[0], -0.4);
        close(v[0], 0.16);
        close(th[0], 1.9 + 0.1 * 4.0 / (4.0 + 1e-8));
        // t = 2 with g = 2: m = −0.36 + 0.2 = −0.16, bc1 = 0.19; v = 0.1584 + 0.04 = 0.1984,
        // bc2 = 0.0199.
        let th1 = th[0];
        adamw_step(&p, 2, &mut th, &mut m, &mut v, &[2.0]);
        close(m[0], -0.16);
        close(v[0], 0.1984);
        let denom = (0.1984f64 / 0.0199).sqrt() + 1e-8;
        close(th[0], th1 * 0.95 - 0.1 * (-0.16 / 0.19) / denom);
    }
}
