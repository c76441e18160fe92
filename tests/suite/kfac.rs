//! K-FAC against `curvgpu::reference::kfac` (f64) on the 3-layer MLP fixture (13→17 and
//! 17→9 with bias, 9→5 without; batch 32).
//!
//! Tolerances. Inputs are rounded to f32 first and the references use the rounded values.
//! - Factor statistics: each update is one product F ← α·XᵀX + β·F over B = 32 samples, so an
//!   entry's new error is at most γ_{B+3}·(α·(|X|ᵀ|X|) + β·|F|) (B products and additions,
//!   α rounded to f32, the β term) plus β times the error it carried; the test propagates that
//!   bound through every update and asserts it entry by entry.
//! - Preconditioned gradients P = G′⁻¹·∇W·A′⁻¹: each inverse carries √n·κ·u relative error
//!   (as in the Cholesky tests), the two products γ_{n}; we assert ‖P̂ − P‖_F/‖P‖_F ≤
//!   2·(√cols·κ(A′) + √out·κ(G′))·u + γ_{out + cols}, with κ from the reference eigenvalues.

use crate::common::{as_f32, as_f64, assert_count, assert_overlap, gamma, gpu, rounded, EPS32};
use curvgpu::kfac::{Averaging, Damping, Kfac, KfacConfig, Layer};
use curvgpu::reference::kfac::{
    factor_a, factor_g, identity, kaisa_average, mlp_fixture, pi_damped, precondition_inverse,
    tikhonov, KfacJaxAverage, MlpFixture,
};
use curvgpu::reference::linalg::{frobenius, spd_inverse, symmetric_eigen};
use curvgpu::{Error, Gpu, GpuVec};

fn layers(f: &MlpFixture) -> Vec<Layer> {
    f.layers
        .iter()
        .map(|l| Layer {
            in_dim: l.in_dim,
            out_dim: l.out_dim,
            bias: l.bias,
        })
        .collect()
}

struct Uploaded {
    xs: Vec<GpuVec<f32>>,
    dys: Vec<GpuVec<f32>>,
    grads: Vec<GpuVec<f32>>,
}

fn upload(gpu: &Gpu, f: &MlpFixture) -> Uploaded {
    let up = |v: &[f64]| GpuVec::upload(gpu, &as_f32(v)).unwrap();
    Uploaded {
        xs: f.layers.iter().map(|l| up(&l.x)).collect(),
        dys: f.layers.iter().map(|l| up(&l.dy)).collect(),
        grads: f.layers.iter().map(|l| up(&l.grad)).collect(),
    }
}

fn update(gpu: &Gpu, kfac: &mut Kfac, f: &MlpFixture, data: &Uploaded) {
    let xs: Vec<_> = data.xs.iter().map(|v| v.view()).collect();
    let dys: Vec<_> = data.dys.iter().map(|v| v.view()).collect();
    let mut rec = curvgpu::Recorder::new(gpu);
    kfac.record_update_factors(&mut rec, f.batch, &xs, &dys)
        .unwrap();
    rec.submit().unwrap();
}

/// Reference running factors with their error bounds, updated like the GPU's.
struct RefSide {
    f: Vec<f64>,
    bound: Vec<f64>,
}

fn abs_gram(batch: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    let abs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
    curvgpu::reference::linalg::gemm(cols, batch, cols, &abs, &abs, true, false)
}

#[test]
fn factor_statistics_follow_both_averaging_conventions_over_three_updates() {
    let gpu = gpu();
    let fixtures: Vec<MlpFixture> = (0..3).map(|s| mlp_fixture(40 + s)).collect();
    for (averaging, name) in [
        (Averaging::Kaisa { decay: 0.95 }, "KAISA"),
        (Averaging::KfacJax { decay: 0.95 }, "kfac-jax"),
    ] {
        let config = KfacConfig {
            averaging,
            ..Default::default()
        };
        let mut kfac = Kfac::new(gpu, &layers(&fixtures[0]), config).unwrap();
        let kaisa = matches!(averaging, Averaging::Kaisa { .. });
        let mut refs: Vec<[RefSide; 2]> = fixtures[0]
            .layers
            .iter()
            .map(|l| {
                let start = |n: usize| RefSide {
                    f: if kaisa { identity(n) } else { vec![0.0; n * n] },
                    bound: vec![0.0; n * n],
                };
                [start(l.cols()), start(l.out_dim)]
            })
            .collect();
        let mut jax: Vec<[KfacJaxAverage; 2]> = (0..3)
            .map(|_| [KfacJaxAverage::new(0.95), KfacJaxAverage::new(0.95)])
            .collect();
        let mut weight = 0.0f64;
        for f in &fixtures {
            update(gpu, &mut kfac, f, &upload(gpu, f));
            let b = f.batch;
            let (alpha, beta) = if kaisa {
                (0.05 / b as f64, 0.95)
            } else {
                weight = 0.95 * weight + 1.0;
                (1.0 / (weight * b as f64), 1.0 - 1.0 / weight)
            };
            for (i, l) in f.layers.iter().enumerate() {
                let (x, dy) = (rounded(&l.x), rounded(&l.dy));
                let news = [
                    factor_a(b, l.in_dim, &x, l.bias),
                    factor_g(b, l.out_dim, &dy),
                ];
                let mut ones = Vec::new();
                for row in x.chunks(l.in_dim) {
                    ones.extend_from_slice(row);
                    if l.bias {
                        ones.push(1.0);
                    }
                }
                let grams = [abs_gram(b, l.cols(), &ones), abs_gram(b, l.out_dim, &dy)];
                for s in 0..2 {
                    let side = &mut refs[i][s];
                    for ((bound, f), gram) in side.bound.iter_mut().zip(&side.f).zip(&grams[s]) {
                        *bound = gamma(b + 3) * (alpha * gram + beta * f.abs()) + beta * *bound;
                    }
                    if kaisa {
                        kaisa_average(&mut side.f, &news[s], 0.95);
                    } else {
                        jax[i][s].update(&mut side.f, &news[s]);
                    }
                }
            }
        }
        let got = [
            as_f64(&kfac.factors_a().0.read().unwrap()),
            as_f64(&kfac.factors_g().0.read().unwrap()),
        ];
        let batches = [kfac.factors_a().1.clone(), kfac.factors_g().1.clone()];
        for (i, sides) in refs.iter().enumerate() {
            for s in 0..2 {
                let off = batches[s].offset(i);
                for (e, (&w, &bound)) in sides[s].f.iter().zip(&sides[s].bound).enumerate() {
                    let g = got[s][off + e];
                    assert!(
                        (g - w).abs() <= bound,
                        "{name}: layer {i} factor {} entry {e}: {g} vs {w} (bound {bound:e})",
                        ["A", "G"][s]
                    );
                }
            }
        }
    }
}

/// A K-FAC state after one step on the fixture (inverses refreshed), and its outputs.
fn one_step(
    gpu: &Gpu,
    f: &MlpFixture,
    data: &Uploaded,
    config: KfacConfig,
) -> (Kfac, Vec<GpuVec<f32>>) {
    let mut kfac = Kfac::new(gpu, &layers(f), config).unwrap();
    let outs: Vec<GpuVec<f32>> = f
        .layers
        .iter()
        .map(|l| GpuVec::zeros(gpu, l.out_dim * l.cols()).unwrap())
        .collect();
    kfac.step(
        gpu,
        f.batch,
        &view(&data.xs),
        &view(&data.dys),
        &view(&data.grads),
        &view(&outs),
    )
    .unwrap();
    (kfac, outs)
}

fn view(v: &[GpuVec<f32>]) -> Vec<curvgpu::BufView<'_>> {
    v.iter().map(|v| v.view()).collect()
}

fn kappa(n: usize, m: &[f64]) -> f64 {
    let (d, _) = symmetric_eigen(n, m);
    d[n - 1] / d[0]
}

#[test]
fn preconditioned_gradients_of_a_3_layer_mlp_match_f64_for_both_dampings() {
    let gpu = gpu();
    let f = mlp_fixture(7);
    let data = upload(gpu, &f);
    for (damping, name) in [
        (Damping::Pi { lambda: 0.1 }, "π-corrected, λ = 0.1"),
        (Damping::Tikhonov { gamma: 1e-3 }, "Tikhonov, γ = 1e-3"),
    ] {
        // kfac-jax averaging: after one update the factors are the batch's own statistics,
        // whose spread exercises the damping (KAISA's I start would dominate).
        let config = KfacConfig {
            averaging: Averaging::KfacJax { decay: 0.95 },
            damping,
            inverse_update_period: 1,
            ..Default::default()
        };
        let (_, outs) = one_step(gpu, &f, &data, config);
        let got: Vec<Vec<f64>> = outs.iter().map(|o| as_f64(&o.read().unwrap())).collect();
        assert_preconditioned(name, &f, damping, &got);
    }
}

/// The inverse path's outputs `got` (one per layer) against G′⁻¹·∇W·A′⁻¹ of the fixture's
/// factors (one kfac-jax update), within the header's bound.
#[track_caller]
fn assert_preconditioned(name: &str, f: &MlpFixture, damping: Damping, got: &[Vec<f64>]) {
    for (i, l) in f.layers.iter().enumerate() {
        let (o, c) = (l.out_dim, l.cols());
        let a = factor_a(f.batch, l.in_dim, &rounded(&l.x), l.bias);
        let g = factor_g(f.batch, o, &rounded(&l.dy));
        let (a2, g2) = match damping {
            Damping::Pi { lambda } => pi_damped(c, &a, o, &g, lambda as f64),
            Damping::Tikhonov { gamma } => {
                (tikhonov(c, &a, gamma as f64), tikhonov(o, &g, gamma as f64))
            }
        };
        let want = precondition_inverse(
            o,
            c,
            &spd_inverse(o, &g2).unwrap(),
            &rounded(&l.grad),
            &spd_inverse(c, &a2).unwrap(),
        );
        let got = &got[i];
        let diff: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
        let err = frobenius(&diff) / frobenius(&want);
        let (ka, kg) = (kappa(c, &a2), kappa(o, &g2));
        let bound =
            2.0 * ((c as f64).sqrt() * ka + (o as f64).sqrt() * kg) * EPS32 / 2.0 + gamma(o + c);
        println!("{name}: layer {i}: κ(A′) = {ka:.1e}, κ(G′) = {kg:.1e}, error {err:.2e} (bound {bound:.2e})");
        assert!(err <= bound, "{name}: layer {i}: {err:e} > {bound:e}");
    }
}

#[test]
fn bad_configurations_and_inputs_are_typed_errors() {
    use crate::common::{assert_empty, assert_length, assert_param};
    let gpu = gpu();
    let layer = Layer {
        in_dim: 3,
        out_dim: 2,
        bias: true,
    };
    let new = |layers: &[Layer], config| Kfac::new(gpu, layers, config);
    let ok = KfacConfig::default();
    assert_empty(new(&[], ok), "layers");
    assert_empty(new(&[Layer { in_dim: 0, ..layer }], ok), "in_dim");
    assert_empty(
        new(
            &[Layer {
                out_dim: 0,
                ..layer
            }],
            ok,
        ),
        "out_dim",
    );
    for lambda in [0.0, -1.0, f32::NAN] {
        assert_param(
            new(
                &[layer],
                KfacConfig {
                    damping: Damping::Pi { lambda },
                    ..ok
                },
            ),
            "lambda",
            lambda,
        );
    }
    assert_param(
        new(
            &[layer],
            KfacConfig {
                damping: Damping::Tikhonov { gamma: 0.0 },
                ..ok
            },
        ),
        "gamma",
        0.0,
    );
    assert_param(
        new(
            &[layer],
            KfacConfig {
                averaging: Averaging::KfacJax { decay: 1.0 },
                ..ok
            },
        ),
        "decay",
        1.0,
    );
    assert_param(
        new(
            &[layer],
            KfacConfig {
                inverse_update_period: 0,
                ..ok
            },
        ),
        "inverse_update_period",
        0.0,
    );

    let mut kfac = new(&[layer], ok).unwrap();
    let v = |n: usize| GpuVec::<f32>::zeros(gpu, n).unwrap();
    let (x, dy, grad, out) = (v(12), v(8), v(8), v(8));
    let mut rec = curvgpu::Recorder::new(gpu);
    assert_empty(
        kfac.record_update_factors(&mut rec, 0, &[x.view()], &[dy.view()]),
        "batch",
    );
    assert_count(
        kfac.record_update_factors(&mut rec, 4, &[x.view(), x.view()], &[dy.view()]),
        "xs",
        1,
        2,
    );
    assert_count(
        kfac.record_precondition(&mut rec, &[grad.view()], &[out.view(), out.view()]),
        "outs",
        1,
        2,
    );
    assert_length(
        kfac.record_update_factors(&mut rec, 4, &[v(11).view()], &[dy.view()]),
        "xs",
        12,
        11,
    );
    assert_length(
        kfac.record_precondition(&mut rec, &[v(6).view()], &[out.view()]),
        "grads",
        8,
        6,
    );
    assert_param(
        kfac.record_kl_clip(&mut rec, 0.0, 1e-3, &[grad.view()], &[out.view()]),
        "lr",
        0.0,
    );
    assert_param(
        kfac.record_kl_clip(&mut rec, 0.1, f32::NAN, &[grad.view()], &[out.view()]),
        "kl_clip",
        f32::NAN,
    );
    assert!(rec.is_empty());

    // NaN activations poison A: the refresh reports layer 0's A as not SPD.
    let nan = GpuVec::upload(gpu, &[f32::NAN; 12]).unwrap();
    match kfac.step(
        gpu,
        4,
        &[nan.view()],
        &[dy.view()],
        &[grad.view()],
        &[out.view()],
    ) {
        Err(Error::NotPositiveDefinite {
            argument: "kfac_a",
            factor: 0,
            ..
        }) => {}
        other => panic!("expected NotPositiveDefinite {{ kfac_a, layer 0 }}, got {other:?}"),
    }
}

#[test]
fn kl_clip_scales_every_layer_by_kaisas_nu() {
    // The clip alone, on the preconditioned gradients the GPU produced: ν from them in f64.
    // Its error: Σ lr²·⟨v, g⟩ over N products carries γ_N·lr²·Σ|v·g| (N = all entries, a
    // bound for any summation order), ν = √(bound/|S|) half that relatively plus two roundings,
    // and the scaling one more: |ν̂·v − ν·v| ≤ (½·γ_N·Σ|v·g|/|S| + γ_3)·ν·|v|.
    use curvgpu::reference::kfac::kl_clip_scale;
    let gpu = gpu();
    let f = mlp_fixture(21);
    let data = upload(gpu, &f);
    let config = KfacConfig {
        inverse_update_period: 1,
        ..Default::default()
    };
    for (lr, bound) in [(0.5f32, 1e-6f32), (0.5, 1e6)] {
        let (kfac, outs) = one_step(gpu, &f, &data, config);
        let before: Vec<Vec<f64>> = outs.iter().map(|o| as_f64(&o.read().unwrap())).collect();
        let grads: Vec<Vec<f64>> = f.layers.iter().map(|l| rounded(&l.grad)).collect();
        let pairs: Vec<(&[f64], &[f64])> = before
            .iter()
            .zip(&grads)
            .map(|(v, g)| (v.as_slice(), g.as_slice()))
            .collect();
        let nu = kl_clip_scale(lr as f64, &pairs, bound as f64);
        let n: usize = before.iter().map(Vec::len).sum();
        let (s, s_abs) = pairs.iter().fold((0.0, 0.0), |acc, (v, g)| {
            v.iter()
                .zip(*g)
                .fold(acc, |(s, a), (v, g)| (s + v * g, a + (v * g).abs()))
        });
        let rel = if nu < 1.0 {
            0.5 * gamma(n) * s_abs / s.abs() + gamma(3)
        } else {
            gamma(1)
        };
        let mut rec = curvgpu::Recorder::new(gpu);
        kfac.record_kl_clip(&mut rec, lr, bound, &view(&data.grads), &view(&outs))
            .unwrap();
        rec.submit().unwrap();
        println!("lr {lr}, bound {bound:e}: ν = {nu:.6}");
        for (i, (o, v)) in outs.iter().zip(&before).enumerate() {
            let got = as_f64(&o.read().unwrap());
            for (e, (g, v)) in got.iter().zip(v).enumerate() {
                let want = nu * v;
                assert!(
                    (g - want).abs() <= rel * want.abs(),
                    "layer {i} entry {e}: {g} vs ν·v = {want} (ν = {nu})"
                );
            }
        }
        if bound > 1.0 {
            assert_eq!(nu, 1.0, "a loose bound leaves the step alone");
        } else {
            assert!(nu < 0.5, "a tight bound shrinks the step (ν = {nu})");
        }
    }
}

#[test]
fn the_eigen_path_matches_kaisas_formula_and_under_pi_damping_the_inverse_path() {
    // KAISA (Tikhonov γ): Q_G[(Q_Gᵀ∇W Q_A) ⊘ (d_G d_Aᵀ + γ)]Q_Aᵀ from the f64 eigenpairs
    // (`precondition_eigen`). π-damping: the same as G′⁻¹∇W A′⁻¹ of the π-damped factors.
    // Error: the Jacobi pairs are exact for A + ΔA with ‖ΔA‖_F ≤ ε‖A‖_F, at worst
    // ε = 2(n − 1)·sweeps·γ₆ + tol (tests/linalg_eigen.rs asserts that); here, as for the
    // inverses, we assert the statistical growth of those roundings, √(2(n − 1)·sweeps)·γ₆ +
    // tol with the 30-sweep cap, so that a wrong divisor cannot hide. Through the divisor that
    // moves P by ≤ κ·ε relative per factor (κ of the damped factor), plus the four products
    // (γ_{2(out + cols)}).
    use curvgpu::kfac::Path;
    use curvgpu::reference::kfac::precondition_eigen;
    let gpu = gpu();
    let f = mlp_fixture(31);
    let data = upload(gpu, &f);
    for (damping, name) in [
        (Damping::Tikhonov { gamma: 1e-3 }, "KAISA eigen, γ = 1e-3"),
        (Damping::Pi { lambda: 0.1 }, "eigen, π-corrected λ = 0.1"),
    ] {
        let config = KfacConfig {
            averaging: Averaging::KfacJax { decay: 0.95 },
            damping,
            inverse_update_period: 1,
            path: Path::Eigen,
        };
        let (_, outs) = one_step(gpu, &f, &data, config);
        for (i, l) in f.layers.iter().enumerate() {
            let (o, c) = (l.out_dim, l.cols());
            let a = factor_a(f.batch, l.in_dim, &rounded(&l.x), l.bias);
            let g = factor_g(f.batch, o, &rounded(&l.dy));
            let grad = rounded(&l.grad);
            let (want, ka, kg) = match damping {
                Damping::Tikhonov { gamma } => {
                    let (da, qa) = symmetric_eigen(c, &a);
                    let (dg, qg) = symmetric_eigen(o, &g);
                    let kappa = |d: &[f64]| {
                        (d[d.len() - 1].max(0.0) + gamma as f64) / (d[0].max(0.0) + gamma as f64)
                    };
                    (
                        precondition_eigen(o, c, &qg, &dg, &qa, &da, &grad, gamma as f64),
                        kappa(&da),
                        kappa(&dg),
                    )
                }
                Damping::Pi { lambda } => {
                    let (a2, g2) = pi_damped(c, &a, o, &g, lambda as f64);
                    let p = precondition_inverse(
                        o,
                        c,
                        &spd_inverse(o, &g2).unwrap(),
                        &grad,
                        &spd_inverse(c, &a2).unwrap(),
                    );
                    (p, kappa(c, &a2), kappa(o, &g2))
                }
            };
            let got = as_f64(&outs[i].read().unwrap());
            let diff: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
            let err = frobenius(&diff) / frobenius(&want);
            // 30 sweeps at most (JacobiOptions::default), tol 1e-6.
            let eps = |n: usize| (2.0 * (n.max(2) - 1) as f64 * 30.0).sqrt() * gamma(6) + 1e-6;
            let bound = ka * eps(c) + kg * eps(o) + gamma(2 * (o + c));
            println!("{name}: layer {i}: κ(A′) = {ka:.1e}, κ(G′) = {kg:.1e}, error {err:.2e} (bound {bound:.2e})");
            assert!(err <= bound, "{name}: layer {i}: {err:e} > {bound:e}");
        }
    }
}

/// The fixture's per-layer activations, output gradients, gradients and `outs` zeros as
/// disjoint views of one buffer, in that order (3 layers each).
pub(crate) fn packed_fixture(gpu: &Gpu, f: &MlpFixture) -> Vec<GpuVec<f32>> {
    let mut data: Vec<Vec<f32>> = Vec::new();
    data.extend(f.layers.iter().map(|l| as_f32(&l.x)));
    data.extend(f.layers.iter().map(|l| as_f32(&l.dy)));
    data.extend(f.layers.iter().map(|l| as_f32(&l.grad)));
    data.extend(f.layers.iter().map(|l| vec![0.0; l.out_dim * l.cols()]));
    let lens: Vec<usize> = data.iter().map(Vec::len).collect();
    let views = GpuVec::<f32>::packed(gpu, &lens).unwrap();
    for (v, d) in views.iter().zip(&data) {
        v.write(d).unwrap();
    }
    views
}

#[test]
fn activations_gradients_and_outputs_in_one_buffer_and_in_place() {
    // xs, dys, grads and outs as disjoint views of one buffer (an engine's arena), then the
    // step in place (outs = grads): against f64 with the bound of the preconditioning test,
    // and bit for bit against separate buffers.
    let gpu = gpu();
    let f = mlp_fixture(7);
    let data = upload(gpu, &f);
    for (damping, name) in [
        (Damping::Pi { lambda: 0.1 }, "packed, π-corrected, λ = 0.1"),
        (
            Damping::Tikhonov { gamma: 1e-3 },
            "packed, Tikhonov, γ = 1e-3",
        ),
    ] {
        let config = KfacConfig {
            averaging: Averaging::KfacJax { decay: 0.95 },
            damping,
            inverse_update_period: 1,
            ..Default::default()
        };
        let (_, separate) = one_step(gpu, &f, &data, config);
        let separate: Vec<Vec<f32>> = separate.iter().map(|o| o.read().unwrap()).collect();
        let v = packed_fixture(gpu, &f);
        assert!(v[0].buffer() == v[11].buffer(), "one buffer");
        let (xs, dys, grads, outs) = (&v[0..3], &v[3..6], &v[6..9], &v[9..12]);
        let mut kfac = Kfac::new(gpu, &layers(&f), config).unwrap();
        kfac.step(
            gpu,
            f.batch,
            &view(xs),
            &view(dys),
            &view(grads),
            &view(outs),
        )
        .unwrap();
        let got: Vec<Vec<f32>> = outs.iter().map(|o| o.read().unwrap()).collect();
        let wide: Vec<Vec<f64>> = got.iter().map(|o| as_f64(o)).collect();
        assert_preconditioned(name, &f, damping, &wide);
        assert_eq!(got, separate, "{name}: packed against separate buffers");
        for (g, l) in grads.iter().zip(&f.layers) {
            assert_eq!(
                g.read().unwrap(),
                as_f32(&l.grad),
                "{name}: gradients untouched"
            );
        }
        // In place: each layer's output over its own gradient.
        let mut kfac = Kfac::new(gpu, &layers(&f), config).unwrap();
        kfac.step(
            gpu,
            f.batch,
            &view(xs),
            &view(dys),
            &view(grads),
            &view(grads),
        )
        .unwrap();
        let got: Vec<Vec<f32>> = grads.iter().map(|o| o.read().unwrap()).collect();
        assert_eq!(got, separate, "{name}: in place");
    }
}

#[test]
fn outputs_overlapping_gradients_or_each_other_are_refused_naming_both() {
    // Two layers of 4×64 (∇W 1 KiB, so a view may start one aligned step into another).
    let gpu = gpu();
    let layer = Layer {
        in_dim: 63,
        out_dim: 4,
        bias: true,
    };
    let n = layer.out_dim * layer.cols();
    let mut kfac = Kfac::new(gpu, &[layer, layer], KfacConfig::default()).unwrap();
    let v = GpuVec::<f32>::packed(gpu, &[n, n, n, n, n]).unwrap();
    let (g0, g1, o0, o1) = (v[0].view(), v[1].view(), v[2].view(), v[3].view());
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let shifted = curvgpu::BufView::new(v[0].buffer(), v[0].byte_offset() + align, n);
    let mut rec = curvgpu::Recorder::new(gpu);
    // Separate outputs and the in-place form are accepted.
    kfac.record_precondition(&mut rec, &[g0, g1], &[o0, o1])
        .unwrap();
    kfac.record_precondition(&mut rec, &[g0, g1], &[g0, g1])
        .unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    // Layer 0's output over layer 1's gradient (read after it is written).
    assert_overlap(
        kfac.record_precondition(&mut rec, &[g0, g1], &[g1, o1]),
        "outs",
        "grads",
    );
    // Its own gradient in part.
    assert_overlap(
        kfac.record_precondition(&mut rec, &[g0, g1], &[shifted, o1]),
        "outs",
        "grads",
    );
    // Two outputs over each other.
    assert_overlap(
        kfac.record_precondition(&mut rec, &[g0, g1], &[o0, o0]),
        "outs",
        "outs",
    );
    // The KL clip needs the unpreconditioned gradients: no in-place form.
    assert_overlap(
        kfac.record_kl_clip(&mut rec, 0.1, 1e-3, &[g0, g1], &[g0, g1]),
        "outs",
        "grads",
    );
    // The step checks before it records: the state is left as it was.
    let (x, dy) = (
        GpuVec::<f32>::zeros(gpu, 2 * 63).unwrap(),
        GpuVec::<f32>::zeros(gpu, 2 * 4).unwrap(),
    );
    let a_before = kfac.factors_a().0.read().unwrap();
    assert_overlap(
        kfac.step(
            gpu,
            2,
            &[x.view(), x.view()],
            &[dy.view(), dy.view()],
            &[g0, g1],
            &[g1, o1],
        ),
        "outs",
        "grads",
    );
    assert_eq!(kfac.factors_a().0.read().unwrap(), a_before);
    assert!(rec.is_empty());
}
