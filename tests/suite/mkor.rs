//! MKOR against `curvgpu::reference::kfac`'s MKOR pieces (f64).
//!
//! Tolerances. Inputs are rounded to f32 first. One refresh forms J_b = s·J + t·I, the
//! products J_b·v and vᵀ·J_b (n terms each) and the denominator 1 + vᵀJ_b·v (n terms), then
//! J_b − (J_b·v)(vᵀ·J_b)/d: each entry's new rounding error is at most γ_{2n+6}·(|s·J| + t +
//! (|J_b|·|v|)(|v|ᵀ·|J_b|)/|d|), with |·| taken entrywise (Higham §3.1, the product terms
//! carrying the dot products' errors). The blend contracts by 0.95 and the rank-1 update is a
//! projection-like map of norm ≤ 1 on the SPD cone (J ≼ I throughout), so errors from earlier
//! refreshes are not amplified to first order: the test asserts the sum of the per-refresh
//! bounds, computed along the f64 trajectory.

use crate::common::{as_f32, as_f64, gamma, gpu, rounded, uniform};
use curvgpu::kfac::Layer;
use curvgpu::mkor::{Mkor, MkorConfig};
use curvgpu::reference::kfac::{
    identity, mkor_factor_after, mkor_means, mkor_refresh, mkor_step, mlp_fixture, MlpFixture,
};
use curvgpu::reference::linalg::{frobenius, gemm};
use curvgpu::{Gpu, GpuVec, Recorder};

/// The per-refresh rounding bound of the header, entry by entry, for J (before) and v.
fn refresh_bound(n: usize, j: &[f64], v: &[f64], stabilise: bool) -> Vec<f64> {
    let (s, t) = if stabilise {
        (0.855, 0.145)
    } else {
        (0.95, 0.05)
    };
    let mut jb: Vec<f64> = j.iter().map(|x| s * x).collect();
    (0..n).for_each(|d| jb[d * n + d] += t);
    let abs = |m: &[f64]| m.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let (ajb, av) = (abs(&jb), abs(v));
    let jv = gemm(n, n, 1, &ajb, &av, false, false);
    let vj = gemm(1, n, n, &av, &ajb, false, false);
    let jv_signed = gemm(n, n, 1, &jb, v, false, false);
    let d = 1.0 + v.iter().zip(&jv_signed).map(|(a, b)| a * b).sum::<f64>();
    (0..n * n)
        .map(|e| {
            let (r, c) = (e / n, e % n);
            gamma(2 * n + 6)
                * (s * j[e].abs() + if r == c { t } else { 0.0 } + jv[r] * vj[c] / d.abs())
        })
        .collect()
}

fn refresh(gpu: &Gpu, mkor: &mut Mkor, batch: usize, xs: &[GpuVec<f32>], dys: &[GpuVec<f32>]) {
    let xs: Vec<_> = xs.iter().map(|v| v.view()).collect();
    let dys: Vec<_> = dys.iter().map(|v| v.view()).collect();
    let mut rec = Recorder::new(gpu);
    mkor.record_refresh(&mut rec, batch, &xs, &dys).unwrap();
    rec.submit().unwrap();
}

#[test]
fn a_hundred_rank_1_refreshes_match_the_explicitly_inverted_blended_factor() {
    // One layer 12 → 7 without bias; batch 1, so each refresh's statistic is the sample itself.
    let gpu = gpu();
    let (n_a, n_g) = (12, 7);
    let layer = Layer {
        in_dim: n_a,
        out_dim: n_g,
        bias: false,
    };
    let mut mkor = Mkor::new(gpu, &[layer], MkorConfig::default()).unwrap();
    let mut refs = [
        (identity(n_a), vec![0.0; n_a * n_a], false),
        (identity(n_g), vec![0.0; n_g * n_g], false),
    ];
    let mut history: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for step in 0..100u64 {
        let x = rounded(&uniform(n_a, 1000 + step, -0.5, 0.5));
        let dy = rounded(&uniform(n_g, 2000 + step, -0.5, 0.5));
        refresh(
            gpu,
            &mut mkor,
            1,
            &[GpuVec::upload(gpu, &as_f32(&x)).unwrap()],
            &[GpuVec::upload(gpu, &as_f32(&dy)).unwrap()],
        );
        for (s, (v, n)) in [(x, n_a), (dy, n_g)].into_iter().enumerate() {
            let (j, bound, flag) = &mut refs[s];
            let b = refresh_bound(n, j, &v, *flag);
            bound.iter_mut().zip(&b).for_each(|(acc, b)| *acc += b);
            *flag = mkor_refresh(n, j, &v, *flag);
            assert!(!*flag, "the stabiliser never fires from J = I");
            history[s].push(v);
        }
    }
    let (j, batch) = mkor.inverse_factors();
    let got = as_f64(&j.read().unwrap());
    for (s, n) in [(0, n_a), (1, n_g)] {
        let explicit = mkor_factor_after(n, &history[s]);
        let (want, bound, _) = &refs[s];
        assert!(
            want.iter()
                .zip(&explicit)
                .all(|(a, b)| (a - b).abs() <= 1e-9 * (1.0 + b.abs())),
            "the f64 Sherman–Morrison recursion agrees with the explicit inverse"
        );
        let at = batch.offset(s);
        for e in 0..n * n {
            let err = (got[at + e] - want[e]).abs();
            assert!(
                err <= bound[e],
                "factor {s} entry {e}: {} vs {} (bound {:e})",
                got[at + e],
                want[e],
                bound[e]
            );
        }
    }
}

#[test]
fn a_factor_restored_with_entries_past_2_is_stabilised_at_its_next_refresh() {
    let gpu = gpu();
    let (n_a, n_g) = (5, 3);
    let layer = Layer {
        in_dim: n_a - 1,
        out_dim: n_g,
        bias: true,
    };
    let mut mkor = Mkor::new(gpu, &[layer], MkorConfig::default()).unwrap();
    // J_A = 3·I trips the flag (max 3 > 2); J_G = I does not.
    let mut j_a = identity(n_a);
    j_a.iter_mut().for_each(|v| *v *= 3.0);
    let j_g = identity(n_g);
    mkor.load_inverse_factors(gpu, &as_f32(&[j_a.clone(), j_g.clone()].concat()))
        .unwrap();
    // Batch of 3 with one entry past the ±100 clamp.
    let x = rounded(&[
        0.5, -150.0, 0.25, 1.0, 0.3, 0.2, -0.1, 0.0, 2.0, 1.5, -0.5, 0.75,
    ]);
    let dy = rounded(&uniform(3 * n_g, 5, -1.0, 1.0));
    refresh(
        gpu,
        &mut mkor,
        3,
        &[GpuVec::upload(gpu, &as_f32(&x)).unwrap()],
        &[GpuVec::upload(gpu, &as_f32(&dy)).unwrap()],
    );
    let mut want_a = j_a.clone();
    let v_a = mkor_means(3, n_a - 1, &x, true, 1.0);
    let bound_a = refresh_bound(n_a, &j_a, &v_a, true);
    mkor_refresh(n_a, &mut want_a, &v_a, true);
    let mut want_g = j_g.clone();
    let v_g = mkor_means(3, n_g, &dy, false, 1.0);
    let bound_g = refresh_bound(n_g, &j_g, &v_g, false);
    mkor_refresh(n_g, &mut want_g, &v_g, false);
    let got = as_f64(&mkor.inverse_factors().0.read().unwrap());
    let want = [want_a, want_g].concat();
    let bound = [bound_a, bound_g].concat();
    for (e, ((g, w), b)) in got.iter().zip(&want).zip(&bound).enumerate() {
        assert!((g - w).abs() <= *b, "entry {e}: {g} vs {w} (bound {b:e})");
    }
}

fn view(v: &[GpuVec<f32>]) -> Vec<curvgpu::BufView<'_>> {
    v.iter().map(|v| v.view()).collect()
}

#[test]
fn the_step_on_a_3_layer_mlp_matches_f64_after_one_refresh() {
    // Error of v = J_G·∇W·J_A: γ_{out + cols} of |J_G|·|∇W|·|J_A| (two products), the
    // refreshed factors' own errors (refresh_bound, times |∇W| and the other factor), then the
    // four norms (γ of the entry count) and the rescale: asserted as a relative Frobenius error.
    let gpu = gpu();
    let f = mlp_fixture(11);
    let layers: Vec<Layer> = f
        .layers
        .iter()
        .map(|l| Layer {
            in_dim: l.in_dim,
            out_dim: l.out_dim,
            bias: l.bias,
        })
        .collect();
    let mut mkor = Mkor::new(
        gpu,
        &layers,
        MkorConfig {
            inverse_update_period: 1,
        },
    )
    .unwrap();
    let up = |v: &[f64]| GpuVec::upload(gpu, &as_f32(v)).unwrap();
    let xs: Vec<_> = f.layers.iter().map(|l| up(&l.x)).collect();
    let dys: Vec<_> = f.layers.iter().map(|l| up(&l.dy)).collect();
    let grads: Vec<_> = f.layers.iter().map(|l| up(&l.grad)).collect();
    let outs: Vec<GpuVec<f32>> = layers
        .iter()
        .map(|l| GpuVec::zeros(gpu, l.out_dim * l.cols()).unwrap())
        .collect();
    mkor.step(
        gpu,
        f.batch,
        &view(&xs),
        &view(&dys),
        &view(&grads),
        &view(&outs),
    )
    .unwrap();
    let got: Vec<Vec<f64>> = outs.iter().map(|o| as_f64(&o.read().unwrap())).collect();
    assert_step("separate", &f, &got);
}

/// Step outputs `got` (one per layer) after one refresh from J = I against the f64 MKOR
/// step, within the bound of the step test.
#[track_caller]
fn assert_step(name: &str, f: &MlpFixture, got: &[Vec<f64>]) {
    for (i, l) in f.layers.iter().enumerate() {
        let (o, c) = (l.out_dim, l.cols());
        let (x, dy, grad) = (rounded(&l.x), rounded(&l.dy), rounded(&l.grad));
        let v_a = mkor_means(f.batch, l.in_dim, &x, l.bias, 1.0);
        let v_g = mkor_means(f.batch, o, &dy, false, 1.0);
        let (mut j_a, mut j_g) = (identity(c), identity(o));
        let (ba, bg) = (
            refresh_bound(c, &j_a, &v_a, false),
            refresh_bound(o, &j_g, &v_g, false),
        );
        mkor_refresh(c, &mut j_a, &v_a, false);
        mkor_refresh(o, &mut j_g, &v_g, false);
        let want = mkor_step(o, c, l.bias, &j_g, &grad, &j_a);
        let got = &got[i];
        let abs = |m: &[f64]| m.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let chain = |a: &[f64], g: &[f64], b: &[f64]| {
            gemm(o, c, c, &gemm(o, o, c, a, g, false, false), b, false, false)
        };
        let (aja, ajg, ag) = (abs(&j_a), abs(&j_g), abs(&grad));
        let spread: Vec<f64> = chain(&ajg, &ag, &aja)
            .iter()
            .zip(chain(&bg, &ag, &aja))
            .zip(chain(&ajg, &ag, &ba))
            .map(|((p, q), r)| gamma(o + c) * p + q + r)
            .collect();
        let v = gemm(
            o,
            c,
            c,
            &gemm(o, o, c, &j_g, &grad, false, false),
            &j_a,
            false,
            false,
        );
        let bound = frobenius(&spread) / frobenius(&v) + gamma(4 * o * c + 8);
        let diff: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
        let err = frobenius(&diff) / frobenius(&want);
        println!("{name}: layer {i}: relative error {err:.2e} (bound {bound:.2e})");
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
    assert_empty(Mkor::new(gpu, &[], MkorConfig::default()), "layers");
    assert_empty(
        Mkor::new(gpu, &[Layer { in_dim: 0, ..layer }], MkorConfig::default()),
        "in_dim",
    );
    assert_empty(
        Mkor::new(
            gpu,
            &[Layer {
                out_dim: 0,
                ..layer
            }],
            MkorConfig::default(),
        ),
        "out_dim",
    );
    assert_param(
        Mkor::new(
            gpu,
            &[layer],
            MkorConfig {
                inverse_update_period: 0,
            },
        ),
        "inverse_update_period",
        0.0,
    );
    let mut mkor = Mkor::new(gpu, &[layer], MkorConfig::default()).unwrap();
    let v = |n: usize| GpuVec::<f32>::zeros(gpu, n).unwrap();
    let mut rec = Recorder::new(gpu);
    assert_empty(
        mkor.record_refresh(&mut rec, 0, &[v(3).view()], &[v(2).view()]),
        "batch",
    );
    assert_length(
        mkor.record_refresh(&mut rec, 2, &[v(5).view()], &[v(4).view()]),
        "xs",
        6,
        5,
    );
    crate::common::assert_count(
        mkor.record_refresh(&mut rec, 2, &[v(6).view()], &[]),
        "dys",
        1,
        0,
    );
    crate::common::assert_count(
        mkor.record_step(&mut rec, &[], &[v(8).view()]),
        "grads",
        1,
        0,
    );
    assert_length(
        mkor.record_step(&mut rec, &[v(8).view()], &[v(7).view()]),
        "outs",
        8,
        7,
    );
    assert!(rec.is_empty());
    assert_length(mkor.load_inverse_factors(gpu, &[1.0; 5]), "j", 20, 5);
    assert!(matches!(mkor.load_inverse_factors(gpu, &[1.0; 20]), Ok(())));
}

#[test]
fn activations_gradients_and_outputs_in_one_buffer() {
    // xs, dys, grads and outs as disjoint views of one buffer (an engine's arena): the step
    // after one refresh against f64 with the step test's bound; the gradients untouched.
    let gpu = gpu();
    let f = mlp_fixture(11);
    let layers: Vec<Layer> = f
        .layers
        .iter()
        .map(|l| Layer {
            in_dim: l.in_dim,
            out_dim: l.out_dim,
            bias: l.bias,
        })
        .collect();
    let config = MkorConfig {
        inverse_update_period: 1,
    };
    let v = crate::kfac::packed_fixture(gpu, &f);
    assert!(v[0].buffer() == v[11].buffer(), "one buffer");
    let (xs, dys, grads, outs) = (&v[0..3], &v[3..6], &v[6..9], &v[9..12]);
    let mut mkor = Mkor::new(gpu, &layers, config).unwrap();
    mkor.step(
        gpu,
        f.batch,
        &view(xs),
        &view(dys),
        &view(grads),
        &view(outs),
    )
    .unwrap();
    let got: Vec<Vec<f32>> = outs.iter().map(|o| o.read().unwrap()).collect();
    assert_step(
        "packed",
        &f,
        &got.iter().map(|o| as_f64(o)).collect::<Vec<_>>(),
    );
    for (g, l) in grads.iter().zip(&f.layers) {
        assert_eq!(g.read().unwrap(), as_f32(&l.grad), "gradients untouched");
    }
}

#[test]
fn outputs_overlapping_any_gradient_are_refused_naming_both() {
    // MKOR's rescale reads ∇W after the output is written: no in-place form.
    use crate::common::assert_overlap;
    let gpu = gpu();
    let layer = Layer {
        in_dim: 63,
        out_dim: 4,
        bias: true,
    };
    let n = layer.out_dim * layer.cols();
    let mut mkor = Mkor::new(gpu, &[layer, layer], MkorConfig::default()).unwrap();
    let v = GpuVec::<f32>::packed(gpu, &[n, n, n, n]).unwrap();
    let (g0, g1, o0, o1) = (v[0].view(), v[1].view(), v[2].view(), v[3].view());
    let mut rec = Recorder::new(gpu);
    mkor.record_step(&mut rec, &[g0, g1], &[o0, o1]).unwrap();
    let mut rec = Recorder::new(gpu);
    assert_overlap(
        mkor.record_step(&mut rec, &[g0, g1], &[g0, g1]),
        "outs",
        "grads",
    );
    assert_overlap(
        mkor.record_step(&mut rec, &[g0, g1], &[g1, o1]),
        "outs",
        "grads",
    );
    assert_overlap(
        mkor.record_step(&mut rec, &[g0, g1], &[o0, o0]),
        "outs",
        "outs",
    );
    let (x, dy) = (
        GpuVec::<f32>::zeros(gpu, 2 * 63).unwrap(),
        GpuVec::<f32>::zeros(gpu, 2 * 4).unwrap(),
    );
    let before = mkor.inverse_factors().0.read().unwrap();
    assert_overlap(
        mkor.step(
            gpu,
            2,
            &[x.view(), x.view()],
            &[dy.view(), dy.view()],
            &[g0, g1],
            &[g0, g1],
        ),
        "outs",
        "grads",
    );
    assert_eq!(
        mkor.inverse_factors().0.read().unwrap(),
        before,
        "a refused step changes nothing"
    );
    assert!(rec.is_empty());
}
