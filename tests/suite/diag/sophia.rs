//! SophiaG and SophiaH against the f64 reference (`curvgpu::reference::diag`).
//!
//! Tolerances. Inputs are rounded to f32 before either side sees them, so the only
//! differences are f32 rounding inside the kernel. Per step θ passes through ≤ 3 roundings
//! (decay, product, subtraction: ≤ 3·ε·|θ|) and the update term lr·u carries the few-ulp error
//! of u (≤ 8·ε·lr, u clipped to |u| ≤ 1). Errors can add at most linearly over t steps, so the
//! bound on θ after t steps is t·(3·ε·max|θ| + 8·ε·lr). m and h are EMAs, which contract past
//! errors by β each step: their error stays within 1/(1 − β) ≈ 30–100 roundings of max|x|, bounded
//! here by 128·ε·max|x|.
//!
//! Sign steps (θ −= lr·sign(m)·r) are discontinuous at m = 0: trajectories use gradients whose
//! sign is fixed per element (a bias of magnitude ≥ 0.5 plus noise < 0.4), so m never crosses 0
//! and f32 cannot disagree with f64 about its sign. Single steps with arbitrary signs and exact
//! zeros are tested separately.

use crate::common::*;
use curvgpu::diag::{SophiaG, SophiaGConfig, SophiaH, SophiaHConfig};
use curvgpu::reference::diag as reference;
use curvgpu::{Gpu, GpuVec, Optimizer};

const SIZES: [usize; 6] = [1, 3, 4, 1000, 65_537, 257];

/// Gradients with a fixed sign per element: bias ∈ ±[0.5, 1] plus noise in (−0.4, 0.4).
fn signed_gradient(bias: &[f64], step: u64) -> Vec<f64> {
    let noise = uniform(bias.len(), 1000 + step, -0.4, 0.4);
    round_f32(
        &bias
            .iter()
            .zip(&noise)
            .map(|(b, e)| b + e)
            .collect::<Vec<_>>(),
    )
}

fn fixed_signs(n: usize, seed: u64) -> Vec<f64> {
    uniform(n, seed, -1.0, 1.0)
        .into_iter()
        .map(|x| {
            if x < 0.0 {
                -0.5 + x / 2.0
            } else {
                0.5 + x / 2.0
            }
        })
        .collect()
}

fn theta_bound(t: u64, max_theta: f64, lr: f64) -> f64 {
    t as f64 * (3.0 * EPS32 * max_theta.max(1.0) + 8.0 * EPS32 * lr)
}

/// Runs `steps` SophiaG steps with a GNB refresh every 10 steps on both sides and compares
/// θ, m and h at the end.
fn sophiag_trajectory(gpu: &Gpu, n: usize, steps: u64, config: SophiaGConfig) {
    let p = sophiag_params(&config);
    let theta0 = round_f32(&uniform(n, 1, -2.0, 2.0));
    let bias = fixed_signs(n, 2);
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let grad = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let ghat = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let mut opt = SophiaG::new(gpu, n, config).unwrap();
    let (mut th, mut m, mut h) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    let mut max_ghat = 0.0f64;
    for t in 1..=steps {
        let g = signed_gradient(&bias, t);
        grad.write(&as_f32(&g)).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        reference::sophiag_step(&p, &mut th, &mut m, &h, &g);
        if t % 10 == 0 {
            let gh = round_f32(&uniform(n, 5000 + t, -1.0, 1.0));
            max_ghat = max_ghat.max(max_abs(&gh));
            ghat.write(&as_f32(&gh)).unwrap();
            opt.refresh_from_sampled_grads(gpu, &ghat).unwrap();
            reference::sophiag_refresh(&p, &mut h, &gh);
        }
    }
    let what = format!("SophiaG n={n} after {steps} steps");
    let bound = theta_bound(steps, max_abs(&th), p.lr);
    assert_close(
        &format!("{what}: θ"),
        &theta.read().unwrap(),
        &th,
        bound,
        0.0,
    );
    let state = opt.export_state().unwrap();
    assert_eq!(state.step, steps);
    assert_eq!(state.refreshes, steps / 10);
    assert_close(
        &format!("{what}: m"),
        &state.tensors[0].m,
        &m,
        128.0 * EPS32 * 1.4,
        0.0,
    );
    assert_close(
        &format!("{what}: h"),
        &state.tensors[0].h,
        &h,
        128.0 * EPS32 * max_ghat.powi(2),
        0.0,
    );
}

#[test]
fn sophiag_matches_reference_over_200_steps_with_refresh_every_10() {
    for n in SIZES {
        sophiag_trajectory(gpu(), n, 200, SophiaGConfig::default());
    }
}

#[test]
fn sophiag_with_larger_lr_and_rho_matches_reference() {
    // lr 0.01 and ρ·bs ≈ 1 keep ratios below the clip for most elements after the first refresh.
    let config = SophiaGConfig {
        lr: 1e-2,
        rho: 2e-4,
        weight_decay: 0.3,
        ..Default::default()
    };
    for n in [5, 1000, 65_537] {
        sophiag_trajectory(gpu(), n, 200, config);
    }
}

#[test]
fn sophiag_before_any_refresh_takes_pure_sign_steps_and_handles_zero_gradients() {
    // h = 0, so r = min(|m|/ε, 1) = 1 wherever m ≠ 0 and θ moves by exactly lr·sign(m);
    // zero gradients leave m = 0 and sign(0) = 0: θ only decays.
    let gpu = gpu();
    let n = 1031;
    let config = SophiaGConfig::default();
    let theta0 = round_f32(&uniform(n, 3, -1.0, 1.0));
    let mut g = round_f32(&uniform(n, 4, -1.0, 1.0));
    for i in (0..n).step_by(7) {
        g[i] = 0.0;
    }
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let grad = GpuVec::upload(gpu, &as_f32(&g)).unwrap();
    let mut opt = SophiaG::new(gpu, n, config).unwrap();
    opt.step(gpu, &theta, &grad).unwrap();
    let (mut th, mut m) = (theta0.clone(), vec![0.0; n]);
    reference::sophiag_step(&sophiag_params(&config), &mut th, &mut m, &vec![0.0; n], &g);
    assert_close(
        "sign step",
        &theta.read().unwrap(),
        &th,
        theta_bound(1, 1.0, 1e-4),
        0.0,
    );
    for i in (0..n).step_by(7) {
        let decayed = theta0[i] as f32 * (1.0 - 1e-4 * 0.1);
        assert_eq!(
            theta.read().unwrap()[i],
            decayed,
            "zero gradient at {i}: decay only"
        );
    }
}

#[test]
fn sophiag_beyond_65535_workgroups_and_one_binding_worth_of_vec4s() {
    // 17,000,003 elements: past 65,535 × 256, with a 3-element tail. On the wide-grid device
    // this is 66,407 workgroups of 64 invocations, folded into a 2-D grid.
    let n = 17_000_003;
    let config = SophiaGConfig::default();
    let p = sophiag_params(&config);
    let theta0 = round_f32(&uniform(n, 11, -1.0, 1.0));
    let g = round_f32(&uniform(n, 12, -1.0, 1.0));
    let gh = round_f32(&uniform(n, 13, -1.0, 1.0));
    let (mut th, mut m, mut h) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    reference::sophiag_step(&p, &mut th, &mut m, &h, &g);
    reference::sophiag_refresh(&p, &mut h, &gh);
    reference::sophiag_step(&p, &mut th, &mut m, &h, &g);
    for gpu in [gpu(), gpu_wide_grid()] {
        let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
        let grad = GpuVec::upload(gpu, &as_f32(&g)).unwrap();
        let ghat = GpuVec::upload(gpu, &as_f32(&gh)).unwrap();
        let mut opt = SophiaG::new(gpu, n, config).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        opt.refresh_from_sampled_grads(gpu, &ghat).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        let what = format!("n = {n}, tuning {:?}", gpu.tuning());
        // Same sign-agreement argument as above does not hold for arbitrary g near 0 after
        // two steps: m = β1(1−β1)g + (1−β1)g has the sign of g exactly, so it still holds.
        assert_close(
            &what,
            &theta.read().unwrap(),
            &th,
            theta_bound(2, 1.0, p.lr),
            0.0,
        );
        let state = opt.export_state().unwrap();
        assert_close(
            &format!("{what}: h"),
            &state.tensors[0].h,
            &h,
            128.0 * EPS32,
            0.0,
        );
    }
}

fn sophiah_trajectory(gpu: &Gpu, n: usize, steps: u64, config: SophiaHConfig) {
    let p = sophiah_params(&config);
    let theta0 = round_f32(&uniform(n, 21, -2.0, 2.0));
    let bias = fixed_signs(n, 22);
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let grad = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let zhz_buf = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let mut opt = SophiaH::new(gpu, n, config).unwrap();
    let (mut th, mut m, mut h) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        let g = signed_gradient(&bias, t);
        grad.write(&as_f32(&g)).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        reference::sophiah_step(&p, t, &mut th, &mut m, &h, &g);
        if t % 10 == 0 {
            // u⊙Hu of a positive-definite diagonal: in [0.5, 2].
            let zhz = round_f32(&uniform(n, 7000 + t, 0.5, 2.0));
            zhz_buf.write(&as_f32(&zhz)).unwrap();
            opt.refresh_from_zhz(gpu, &zhz_buf).unwrap();
            reference::sophiah_refresh(&p, &mut h, &zhz);
        }
    }
    let what = format!("SophiaH n={n} after {steps} steps, γ = {}", config.gamma);
    // m̂ = m/(1−β1^t) adds ≤ 2 roundings to u's few-ulp error: inside the 8·ε·lr term.
    let bound = theta_bound(steps, max_abs(&th), p.lr);
    assert_close(
        &format!("{what}: θ"),
        &theta.read().unwrap(),
        &th,
        bound,
        0.0,
    );
    let state = opt.export_state().unwrap();
    assert_close(
        &format!("{what}: h"),
        &state.tensors[0].h,
        &h,
        128.0 * EPS32 * 2.0,
        0.0,
    );
}

#[test]
fn sophiah_matches_reference_over_200_steps_default_config() {
    for n in SIZES {
        sophiah_trajectory(gpu(), n, 200, SophiaHConfig::default());
    }
}

#[test]
fn sophiah_matches_reference_when_the_clip_is_not_saturated() {
    // γ = 1 and h ∈ [0.5, 2]·(1 − 0.99^k) puts m̂/(γh) on both sides of the ±1 clip.
    let config = SophiaHConfig {
        gamma: 1.0,
        lr: 1e-2,
        ..Default::default()
    };
    for n in [7, 1000, 65_537] {
        sophiah_trajectory(gpu(), n, 200, config);
    }
}

#[test]
fn sophiah_beyond_65535_workgroups() {
    let n = 17_000_003;
    let config = SophiaHConfig::default();
    let p = sophiah_params(&config);
    let theta0 = round_f32(&uniform(n, 31, -1.0, 1.0));
    let g = round_f32(&uniform(n, 32, -1.0, 1.0));
    let (mut th, mut m) = (theta0.clone(), vec![0.0; n]);
    reference::sophiah_step(&p, 1, &mut th, &mut m, &vec![0.0; n], &g);
    for gpu in [gpu(), gpu_wide_grid()] {
        let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
        let grad = GpuVec::upload(gpu, &as_f32(&g)).unwrap();
        let mut opt = SophiaH::new(gpu, n, config).unwrap();
        opt.step(gpu, &theta, &grad).unwrap();
        let what = format!("SophiaH n = {n}, tuning {:?}", gpu.tuning());
        assert_close(
            &what,
            &theta.read().unwrap(),
            &th,
            theta_bound(1, 1.0, p.lr),
            0.0,
        );
    }
}
