//! AdaHessian and the Hutchinson diagonal estimator against the f64 reference.
//!
//! Tolerances. The update u = m̂ / ((√v)^k / (√(1−β2^t))^k + eps) takes ≤ 12 f32 roundings
//! (EMAs, sqrt, pow — WGSL's pow is exp2(k·log2 x), a few ulp —, two divisions), so
//! |Δu| ≤ 16·ε·|u|; θ adds ≤ 2 roundings of |θ| per step. Errors add at most linearly over t
//! steps: |Δθ| ≤ t·(2·ε·max|θ| + 16·ε·lr·max|u|). Gradients keep a fixed sign per element and
//! |z⊙Hz| ≥ 0.1, so m never crosses 0 and v never vanishes: u is a smooth function of the data
//! and |u| ≤ |m̂|/eps is bounded by 1/√(1−β2)·… — here |u| ≤ 40 covers it (checked below).

use crate::common::*;
use curvgpu::diag::{AdaHessian, AdaHessianConfig, Averaging, HutchinsonDiag, TensorSpec};
use curvgpu::reference::diag as reference;
use curvgpu::{Gpu, GpuVec, Optimizer};

fn gradient(n: usize, step: u64) -> Vec<f64> {
    let bias = uniform(n, 77, -1.0, 1.0);
    let noise = uniform(n, 100 + step, -0.4, 0.4);
    round_f32(
        &bias
            .iter()
            .zip(&noise)
            .map(|(b, e)| b.signum() * (0.5 + b.abs() / 2.0) + e)
            .collect::<Vec<_>>(),
    )
}

/// z⊙Hz with |·| ∈ [0.1, 2] and either sign (z = ±1 flips it).
fn zhz(n: usize, step: u64) -> Vec<f64> {
    let mag = uniform(n, 300 + step, 0.1, 2.0);
    let sign = uniform(n, 600 + step, -1.0, 1.0);
    round_f32(
        &mag.iter()
            .zip(&sign)
            .map(|(m, s)| m * s.signum())
            .collect::<Vec<_>>(),
    )
}

const U_MAX: f64 = 14.0;

fn bound(t: u64, max_theta: f64, lr: f64) -> f64 {
    t as f64 * (2.0 * EPS32 * max_theta.max(1.0) + 16.0 * EPS32 * lr * U_MAX)
}

/// One tensor, `steps` steps, compared at the end.
fn trajectory(gpu: &Gpu, spec: TensorSpec, steps: u64, config: AdaHessianConfig) {
    let n = spec.len();
    let segment = spec.segment().unwrap();
    let p = adahessian_params(&config);
    let theta0 = round_f32(&uniform(n, 9, -1.0, 1.0));
    let theta = GpuVec::upload(gpu, &as_f32(&theta0)).unwrap();
    let (grad, zhz_buf) = (
        GpuVec::<f32>::zeros(gpu, n).unwrap(),
        GpuVec::<f32>::zeros(gpu, n).unwrap(),
    );
    let mut opt = AdaHessian::new_multi(gpu, std::slice::from_ref(&spec), config).unwrap();
    let (mut th, mut m, mut v) = (theta0.clone(), vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        let (g, d) = (gradient(n, t), zhz(n, t));
        grad.write(&as_f32(&g)).unwrap();
        zhz_buf.write(&as_f32(&d)).unwrap();
        opt.step(gpu, &theta, (&grad, &zhz_buf)).unwrap();
        reference::adahessian_step(&p, t, segment, &mut th, &mut m, &mut v, &g, &d);
    }
    let what = format!(
        "AdaHessian {spec:?} after {steps} steps, k = {}",
        config.hessian_power
    );
    let tol = bound(steps, max_abs(&th), p.lr);
    assert_close(&format!("{what}: θ"), &theta.read().unwrap(), &th, tol, 0.0);
    let state = opt.export_state().unwrap();
    assert_eq!(state.step, steps);
    // EMAs contract errors: ≤ 1/(1−β) roundings; 1/(1−0.999) = 1000 for v, relative to max D².
    assert_close(
        &format!("{what}: m"),
        &state.tensors[0].m,
        &m,
        32.0 * EPS32 * 1.4,
        0.0,
    );
    assert_close(
        &format!("{what}: v"),
        &state.tensors[0].h,
        &v,
        1024.0 * EPS32 * 4.0,
        0.0,
    );
}

#[test]
fn adahessian_elementwise_matches_reference_over_200_steps() {
    for n in [1, 3, 1000, 65_537] {
        trajectory(gpu(), TensorSpec::flat(n), 200, AdaHessianConfig::default());
    }
}

#[test]
fn adahessian_hessian_power_half_and_weight_decay() {
    let config = AdaHessianConfig {
        hessian_power: 0.5,
        weight_decay: 1e-2,
        lr: 0.05,
        ..Default::default()
    };
    for n in [5, 1000, 65_537] {
        trajectory(gpu(), TensorSpec::flat(n), 200, config);
    }
}

#[test]
fn adahessian_averages_rows_blocks_and_conv_windows_like_the_reference() {
    let config = AdaHessianConfig::default();
    let specs = [
        TensorSpec::new(&[7, 13], Averaging::PerRow),
        TensorSpec::new(&[3, 1], Averaging::PerRow),
        TensorSpec::new(&[64, 48], Averaging::Blocks(16)),
        TensorSpec::new(&[33], Averaging::Blocks(11)),
        TensorSpec::image(&[8, 3, 3, 3]),
        TensorSpec::image(&[5, 7, 5, 5]),
        TensorSpec::image(&[17, 1]),
    ];
    for spec in specs {
        trajectory(gpu(), spec, 60, config);
    }
}

#[test]
fn adahessian_beyond_65535_workgroups_with_and_without_averaging() {
    // 17,000,001 = 3 × 5,666,667 (a 3×1 conv-like window would be 3; use blocks of 3) and
    // 17,000,003 flat.
    let config = AdaHessianConfig::default();
    for gpu in [gpu(), gpu_wide_grid()] {
        trajectory(gpu, TensorSpec::flat(17_000_003), 1, config);
        trajectory(
            gpu,
            TensorSpec::new(&[17_000_001], Averaging::Blocks(3)),
            1,
            config,
        );
    }
}

#[test]
fn adahessian_multi_tensor_step_equals_separate_steps() {
    let gpu = gpu();
    let config = AdaHessianConfig::default();
    let specs = vec![
        TensorSpec::flat(10),
        TensorSpec::new(&[6, 5], Averaging::PerRow),
        TensorSpec::image(&[4, 2, 3, 3]),
    ];
    let lens: Vec<usize> = specs.iter().map(TensorSpec::len).collect();
    let upload = |seed: u64| -> Vec<GpuVec<f32>> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| GpuVec::upload(gpu, &as_f32(&zhz(n, seed + i as u64))).unwrap())
            .collect()
    };
    let (theta_multi, grads, zhzs) = (upload(1), upload(2), upload(3));
    let theta_single = upload(1);
    let mut multi = AdaHessian::new_multi(gpu, &specs, config).unwrap();
    let mut singles: Vec<AdaHessian> = specs
        .iter()
        .map(|s| AdaHessian::new_multi(gpu, std::slice::from_ref(s), config).unwrap())
        .collect();
    for _ in 0..3 {
        multi.step(gpu, &theta_multi, (&grads, &zhzs)).unwrap();
        for (i, opt) in singles.iter_mut().enumerate() {
            opt.step(gpu, &theta_single[i], (&grads[i], &zhzs[i]))
                .unwrap();
        }
    }
    for i in 0..specs.len() {
        // Identical kernels on identical data: bit-identical results.
        assert_eq!(
            theta_multi[i].read().unwrap(),
            theta_single[i].read().unwrap(),
            "tensor {i}"
        );
    }
}

#[test]
fn hutchinson_running_mean_equals_the_mean_of_the_probes() {
    // est_k = est_{k−1} + (x_k − est_{k−1})/k: ≤ 3 roundings per probe of values ≤ 2, errors
    // contract by (1 − 1/k) each probe; 64 probes stay within 3·64·ε·2.
    let gpu = gpu();
    for n in [1, 3, 1000, 65_537] {
        let mut est = HutchinsonDiag::new(gpu, &[n], 5).unwrap();
        let buf = GpuVec::<f32>::zeros(gpu, n).unwrap();
        let mut want = vec![0.0; n];
        for k in 1..=64u64 {
            let x = zhz(n, k);
            buf.write(&as_f32(&x)).unwrap();
            est.accumulate(gpu, &buf).unwrap();
            reference::hutchinson_accumulate(&mut want, &x, k);
        }
        assert_eq!(est.probes(), 64);
        assert_close(
            &format!("Hutchinson n = {n}"),
            &est.estimate()[0].read().unwrap(),
            &want,
            3.0 * 64.0 * EPS32 * 2.0,
            0.0,
        );
    }
}

#[test]
fn hutchinson_recovers_a_known_diagonal_from_rademacher_probes() {
    // H = diag(d) (plus off-diagonal coupling of neighbours, which z⊙Hz averages away):
    // z⊙Hz_i = d_i + c·z_i(z_{i−1} + z_{i+1}). The estimate after K probes has error
    // ≈ 2c/√K per element; K = 400, c = 0.5 → standard deviation 0.05, so 6σ = 0.3.
    let gpu = gpu();
    let n = 4099;
    let d = uniform(n, 8, 1.0, 3.0);
    let (c, probes) = (0.5, 400u64);
    let mut est = HutchinsonDiag::new(gpu, &[n], 99).unwrap();
    let z_buf = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let zhz_buf = GpuVec::<f32>::zeros(gpu, n).unwrap();
    for _ in 0..probes {
        let mut rec = curvgpu::Recorder::new(gpu);
        est.record_probe(&mut rec, est.probes() + 1, &z_buf)
            .unwrap();
        rec.submit().unwrap();
        let z = z_buf.read().unwrap();
        assert!(z.iter().all(|&x| x == 1.0 || x == -1.0));
        let hz: Vec<f32> = (0..n)
            .map(|i| {
                let left = if i > 0 { z[i - 1] as f64 } else { 0.0 };
                let right = if i + 1 < n { z[i + 1] as f64 } else { 0.0 };
                (z[i] as f64 * (d[i] * z[i] as f64 + c * (left + right))) as f32
            })
            .collect();
        zhz_buf.write(&hz).unwrap();
        est.accumulate(gpu, &zhz_buf).unwrap();
    }
    assert_close(
        "diag(H) estimate",
        &est.estimate()[0].read().unwrap(),
        &d,
        0.3,
        0.0,
    );
}
