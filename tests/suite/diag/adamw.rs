//! AdamW against the f64 reference (`curvgpu::reference::diag::adamw_step`).
//!
//! Tolerances. Inputs are rounded to f32 before either side sees them, so the differences are
//! f32 roundings inside the kernel and in the f32 uniform (lr/bc1, √bc2). Gradients have
//! |g| ∈ [g_min, g_max] = [0.1, 1.4] with a random sign every step, so after bias correction
//! m̂ is a weighted mean of gradients (|m̂| ≤ g_max) and v̂ one of squares (√v̂ ≥ g_min).
//! - m: each step rounds β1·m + (1 − β1)·g three times, ≤ 3ε·g_max·bc1 (|m| ≤ bc1·g_max),
//!   and the EMA contracts older errors by β1, so |δm| ≤ 3ε·g_max·min(t, 1/(1 − β1))·bc1.
//! - v: all terms are positive, so the same three roundings give a relative error
//!   ≤ 3ε·min(t, 1/(1 − β2)).
//! - u = m̂/(√v̂ + eps): δu ≤ δm̂/(g_min + eps) + |u|·(½·δv/v + 4ε) with |u| ≤ g_max/(g_min +
//!   eps), the 4ε covering the square root, the division by √bc2, its rounding and + eps.
//! - θ: decay, product and subtraction round ≤ 3ε·|θ| a step and the update adds lr·(δu + ε|u|);
//!   θ ← θ·(1 − lr·wd) − … does not amplify earlier errors, so they add at most linearly over
//!   t steps.
//!
//! These are worst-case sums (no cancellation assumed), so the bounds are loose by roughly the
//! square root of the number of roundings; they still sit well below every effect under test:
//! at t = 1 a missing bias correction changes u by 1/√(1 − β2) ≈ 32×; a bias correction one
//! step off (t = 2 at the first step) shrinks the first step by ~25%; the decay left out moves the largest |θ| ≈ 2
//! by 2e-3 over the default trajectory; the θ bounds are ≈ 1e-4 (default) and 7e-5.

use crate::common::*;
use curvgpu::diag::{AdamW, AdamWConfig};
use curvgpu::reference::diag::{self as reference, AdamWParams};
use curvgpu::{Error, Gpu, GpuVec, Optimizer};

const G_MIN: f64 = 0.1;
const G_MAX: f64 = 1.4;

fn params(c: &AdamWConfig) -> AdamWParams {
    AdamWParams {
        lr: c.lr as f64,
        beta1: c.beta1 as f64,
        beta2: c.beta2 as f64,
        eps: c.eps as f64,
        weight_decay: c.weight_decay as f64,
    }
}

/// Gradients with |g| ∈ [G_MIN, G_MAX] and a fresh random sign each step.
fn gradient(n: usize, seed: u64) -> Vec<f64> {
    let magnitude = uniform(n, seed, G_MIN, G_MAX);
    let sign = uniform(n, seed + 1_000_000, -1.0, 1.0);
    round_f32(
        &magnitude
            .iter()
            .zip(&sign)
            .map(|(m, s)| if *s < 0.0 { -m } else { *m })
            .collect::<Vec<_>>(),
    )
}

/// The bounds derived in the module comment after `t` steps: θ and m absolute, v relative.
fn bounds(p: &AdamWParams, t: u64, max_theta: f64) -> (f64, f64, f64) {
    let t = t as f64;
    let dm = 3.0 * EPS32 * G_MAX * t.min(1.0 / (1.0 - p.beta1));
    let dv_rel = 3.0 * EPS32 * t.min(1.0 / (1.0 - p.beta2));
    let u_max = G_MAX / (G_MIN + p.eps);
    let du = dm / (G_MIN + p.eps) + u_max * (0.5 * dv_rel + 4.0 * EPS32);
    let theta = t * (3.0 * EPS32 * max_theta.max(1.0) + p.lr * (du + EPS32 * u_max));
    (theta, dm, dv_rel)
}

/// `steps` steps of one tensor of `n` on both sides; compares θ, m, v and the step count.
fn trajectory(gpu: &Gpu, n: usize, steps: u64, config: AdamWConfig) {
    let p = params(&config);
    let theta0 = round_f32(&uniform(n, 1, -2.0, 2.0));
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let grad = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let mut opt = AdamW::new(gpu, n, config).unwrap();
    let (mut th, mut m, mut v) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        let g = gradient(n, 100 + t);
        grad.write(&as_f32(&g)).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        reference::adamw_step(&p, t, &mut th, &mut m, &mut v, &g);
    }
    assert_eq!(opt.steps(), steps);
    let what = format!("AdamW n = {n} after {steps} steps, {config:?}");
    let (bound_theta, bound_m, rtol_v) = bounds(&p, steps, max_abs(&th));
    assert_close(
        &format!("{what}: θ"),
        &theta.read().unwrap(),
        &th,
        bound_theta,
        0.0,
    );
    let state = opt.export_state().unwrap();
    assert_eq!(state.step, steps);
    assert_close(&format!("{what}: m"), &state.tensors[0].m, &m, bound_m, 0.0);
    assert_close(&format!("{what}: v"), &state.tensors[0].h, &v, 0.0, rtol_v);
}

#[test]
fn adamw_matches_reference_over_100_steps_default_config() {
    // 1, 7 and 2^k ± 1: vec4 bodies with every tail length, and tail-only tensors.
    for n in [1, 7, 255, 257, 1023, 1025, 65_537] {
        trajectory(gpu(), n, 100, AdamWConfig::default());
    }
}

#[test]
fn adamw_matches_reference_with_large_eps_lr_and_decay() {
    // eps = 0.3 is comparable to √v̂ ∈ [0.1, 1.4]: where ε enters (after the bias correction of
    // √v, outside the square root) changes θ far beyond the bound. β2 = 0.99 lets v̂ forget.
    let config = AdamWConfig {
        lr: 1e-2,
        beta1: 0.8,
        beta2: 0.99,
        eps: 0.3,
        weight_decay: 0.5,
        check_finite: false,
    };
    for n in [3, 4, 4097] {
        trajectory(gpu(), n, 60, config);
    }
}

#[test]
fn adamw_first_step_is_a_sign_step_of_size_lr() {
    // t = 1: m̂ = g and v̂ = g² exactly, so θ' = θ(1 − lr·wd) − lr·g/(|g| + ε): the bias
    // corrections cancel the (1 − β) factors, which only holds if both use t = 1.
    let gpu = gpu();
    let n = 33;
    let config = AdamWConfig::default();
    let theta0 = round_f32(&uniform(n, 5, -1.0, 1.0));
    let g = gradient(n, 6);
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let grad = GpuVec::upload(gpu, &as_f32(&g)).unwrap();
    let mut opt = AdamW::new(gpu, n, config).unwrap();
    opt.step(gpu, &theta, &grad).unwrap();
    let want: Vec<f64> = theta0
        .iter()
        .zip(&g)
        .map(|(th, g)| th * (1.0 - 1e-3 * 1e-2) - 1e-3 * g / (g.abs() + 1e-8))
        .collect();
    let (bound, _, _) = bounds(&params(&config), 1, 1.0);
    assert_close("first step", &theta.read().unwrap(), &want, bound, 0.0);
}

#[test]
fn adamw_beyond_65535_workgroups_on_both_grids() {
    // 17,000,003 elements: past 65,535 × 256 workgroups' worth of vec4s with a 3-element tail;
    // on the wide-grid device 66,407 workgroups of 64, folded into a 2-D grid. Three steps
    // exercise the bias correction at t = 1, 2, 3.
    let n = 17_000_003;
    let config = AdamWConfig::default();
    let p = params(&config);
    let steps = 3;
    let theta0 = round_f32(&uniform(n, 11, -1.0, 1.0));
    let (mut th, mut m, mut v) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        reference::adamw_step(&p, t, &mut th, &mut m, &mut v, &gradient(n, 20 + t));
    }
    drop((m, v));
    let (bound, _, _) = bounds(&p, steps, 1.0);
    for (name, gpu) in both_gpus() {
        let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
        let grad = GpuVec::<f32>::zeros(gpu, n).unwrap();
        let mut opt = AdamW::new(gpu, n, config).unwrap();
        for t in 1..=steps {
            grad.write(&as_f32(&gradient(n, 20 + t))).unwrap();
            opt.step(gpu, &theta, &grad).unwrap();
        }
        assert_close(
            &format!("n = {n}, {name}"),
            &theta.read().unwrap(),
            &th,
            bound,
            0.0,
        );
    }
}

#[test]
fn adamw_multi_tensor_step_matches_each_tensor_alone() {
    let gpu = gpu();
    let lens = [1, 7, 257];
    let config = AdamWConfig::default();
    let p = params(&config);
    let theta0: Vec<Vec<f64>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| round_f32(&uniform(n, 40 + i as u64, -2.0, 2.0)))
        .collect();
    let thetas: Vec<_> = theta0
        .iter()
        .map(|t| GpuVec::upload(gpu, &as_f32(t)).unwrap())
        .collect();
    let grads: Vec<_> = lens
        .iter()
        .map(|&n| GpuVec::<f32>::zeros(gpu, n).unwrap())
        .collect();
    let mut opt = AdamW::new_multi(gpu, &lens, config).unwrap();
    let mut want: Vec<_> = theta0
        .iter()
        .map(|t| (t.clone(), vec![0.0; t.len()], vec![0.0; t.len()]))
        .collect();
    let steps = 5;
    for t in 1..=steps {
        for (i, (th, m, v)) in want.iter_mut().enumerate() {
            let g = gradient(th.len(), 50 + 10 * t + i as u64);
            grads[i].write(&as_f32(&g)).unwrap();
            reference::adamw_step(&p, t, th, m, v, &g);
        }
        opt.step(gpu, &thetas, &grads).unwrap();
    }
    assert_eq!(opt.steps(), steps, "one step counts once for all tensors");
    let (bound, _, _) = bounds(&p, steps, 2.0);
    for (i, (th, _, _)) in want.iter().enumerate() {
        assert_close(
            &format!("tensor {i} of {lens:?}"),
            &thetas[i].read().unwrap(),
            th,
            bound,
            0.0,
        );
    }
}

#[test]
fn adamw_checkpoint_carries_the_step_count_into_the_bias_correction() {
    // An optimizer restored after 3 steps must take step 4 exactly as the original does (same
    // kernel, same inputs: bit-identical); restoring t = 0 instead would redo step 1's bias
    // correction.
    let gpu = gpu();
    let n = 9;
    let config = AdamWConfig::default();
    let theta = GpuVec::upload(gpu, &as_f32(&uniform(n, 60, -1.0, 1.0))).unwrap();
    let grad = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let mut original = AdamW::new(gpu, n, config).unwrap();
    for t in 1..=3 {
        grad.write(&as_f32(&gradient(n, 60 + t))).unwrap();
        original.step(gpu, &theta, &grad).unwrap();
    }
    let checkpoint = original.export_state().unwrap();
    let mut restored = AdamW::new(gpu, n, config).unwrap();
    restored.import_state(&checkpoint).unwrap();
    assert_eq!(restored.steps(), 3);
    let theta_copy = GpuVec::upload(gpu, &theta.read().unwrap()).unwrap();
    grad.write(&as_f32(&gradient(n, 64))).unwrap();
    original.step(gpu, &theta, &grad).unwrap();
    restored.step(gpu, &theta_copy, &grad).unwrap();
    assert_eq!(theta.read().unwrap(), theta_copy.read().unwrap());
    let mut fresh = AdamW::new(gpu, n, config).unwrap();
    let theta_fresh = GpuVec::upload(gpu, &theta_copy.read().unwrap()).unwrap();
    fresh.step(gpu, &theta_fresh, &grad).unwrap();
    restored.step(gpu, &theta_copy, &grad).unwrap();
    assert_ne!(
        theta_fresh.read().unwrap(),
        theta_copy.read().unwrap(),
        "a fresh optimizer's first step differs from a restored one's fifth"
    );
}

#[test]
fn adamw_rejects_bad_hyper_parameters_with_typed_errors() {
    let gpu = gpu();
    let d = AdamWConfig::default();
    let cases: [(AdamWConfig, &str, f32); 11] = [
        (AdamWConfig { lr: 0.0, ..d }, "lr", 0.0),
        (AdamWConfig { lr: -1e-3, ..d }, "lr", -1e-3),
        (AdamWConfig { lr: f32::NAN, ..d }, "lr", f32::NAN),
        (AdamWConfig { beta1: 1.0, ..d }, "beta1", 1.0),
        (AdamWConfig { beta1: -0.1, ..d }, "beta1", -0.1),
        (AdamWConfig { beta2: 1.0, ..d }, "beta2", 1.0),
        (
            AdamWConfig {
                beta2: f32::NAN,
                ..d
            },
            "beta2",
            f32::NAN,
        ),
        (AdamWConfig { eps: -1e-8, ..d }, "eps", -1e-8),
        (
            AdamWConfig {
                eps: f32::INFINITY,
                ..d
            },
            "eps",
            f32::INFINITY,
        ),
        (
            AdamWConfig {
                weight_decay: -0.1,
                ..d
            },
            "weight_decay",
            -0.1,
        ),
        (
            AdamWConfig {
                weight_decay: f32::NAN,
                ..d
            },
            "weight_decay",
            f32::NAN,
        ),
    ];
    for (config, name, value) in cases {
        assert_param(AdamW::new(gpu, 4, config), name, value);
        let mut opt = AdamW::new(gpu, 4, d).unwrap();
        assert_param(opt.set_config(config), name, value);
        assert_eq!(opt.config(), &d, "a rejected config leaves the old one");
    }
    // PyTorch's edges are allowed: β = 0, eps = 0, no decay.
    let edges = AdamWConfig {
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        weight_decay: 0.0,
        ..d
    };
    AdamW::new(gpu, 4, edges).unwrap();
    assert_empty(AdamW::new_multi(gpu, &[], d), "lens");
}

#[test]
fn adamw_rejects_bad_tensors_and_counts_no_step() {
    let gpu = gpu();
    let mut opt = AdamW::new_multi(gpu, &[5, 6], AdamWConfig::default()).unwrap();
    let (a, b, short) = (
        GpuVec::<f32>::zeros(gpu, 5).unwrap(),
        GpuVec::<f32>::zeros(gpu, 6).unwrap(),
        GpuVec::<f32>::zeros(gpu, 4).unwrap(),
    );
    let params = vec![a, b];
    let grads = vec![GpuVec::<f32>::zeros(gpu, 5).unwrap(), short];
    assert_length(opt.step(gpu, &params, &grads), "grads", 6, 4);
    match opt.step(gpu, &params, &params[..1]) {
        Err(Error::CountMismatch {
            argument,
            expected,
            actual,
        }) => assert_eq!((argument, expected, actual), ("grads", 2, 1)),
        other => panic!("expected CountMismatch {{ grads: 1 of 2 }}, got {other:?}"),
    }
    assert_eq!(opt.steps(), 0);

    let mut checked = AdamW::new(
        gpu,
        5,
        AdamWConfig {
            check_finite: true,
            ..Default::default()
        },
    )
    .unwrap();
    let g = GpuVec::upload(gpu, &[0.0, 1.0, f32::NAN, 2.0, 3.0]).unwrap();
    match checked.step(gpu, &params[0], &g) {
        Err(Error::NonFinite {
            argument: "grads",
            tensor: 0,
            index: 2,
        }) => {}
        other => panic!("expected NonFinite at grads[2], got {other:?}"),
    }
    assert_eq!(checked.steps(), 0);
}
