//! The toy MLP (`curvgpu::toy`) against its f64 reference (`curvgpu::reference::toy`): loss,
//! gradient, Hessian-vector product, sampled-label gradient and accuracy at awkward sizes on
//! both dispatch shapes, the HVP's symmetry, bad input, and gradient descent end to end.
//!
//! Tolerances. Each sample's f32 evaluation rounds sums of at most D + 1 terms (pre-activations,
//! D inputs) and H + 1 terms (logits), a few ulps in exp/log/tanh, and C or H terms in the
//! backward products; the column pass then adds N terms (N / WG in a loop, log₂ WG in a tree).
//! An absolute error δ in a pre-activation reaches a logit scaled by Σ_j |W2_cj| ≤ L, and
//! logits move p and the loss by at most their own error (the softmax's Jacobian has norm ≤ 1),
//! so each sample's terms are off by at most m·u·(1 + A)(1 + L)·S with m the number of
//! roundings on the longest path, A and L the largest row sums |b| + Σ|W|·max|x| of the two
//! layers, and S the largest magnitude among that sample's terms. The tests allow
//! γ(4(H + D + C) + 64)·(1 + A)(1 + L)·S: four roundings per term on the longest path plus 64
//! for the transcendentals and the reduction, and ×(1 + V) for the HVP's direction v (same row
//! sums of |v|). A wrong formula is off by O(S), so the checks still bite; the worst measured
//! fraction of each tolerance is printed.

use crate::common::{both_gpus, gamma, gpu, uniform};
use curvgpu::reference::toy as reference;
use curvgpu::toy::{spirals, Dataset, Mlp, MlpShape};
use curvgpu::{Error, Gpu, GpuVec};

/// (N, inputs, hidden, classes): N = 1, the prime 97, 2^8 + 1 (more rows than a 256-wide
/// column workgroup), 1,025 = 2^10 + 1 (each invocation of the column pass adds ≥ 5 rows), and
/// a 64-wide, 8-class net whose 712 parameters mean 712 workgroups in the column pass (one per
/// parameter); then D = 1, the prime D = 5, and D = 16 = MAX_INPUTS on the largest net
/// (P = 1,608, every bound at its maximum).
const CASES: [(usize, usize, usize, usize); 9] = [
    (1, 2, 1, 2),
    (97, 2, 7, 3),
    (257, 2, 32, 2),
    (1_025, 2, 32, 3),
    (33, 2, 64, 8),
    (2, 2, 1, 3),
    (13, 1, 5, 2),
    (61, 5, 17, 4),
    (37, 16, 64, 8),
];

/// N samples of `inputs` features uniform in ±1.5 and labels uniform over the classes.
fn dataset(n: usize, inputs: usize, classes: usize, seed: u64) -> Dataset {
    let x = uniform(inputs * n, seed, -1.5, 1.5);
    let y = uniform(n, seed + 1, 0.0, classes as f64);
    Dataset {
        x: x.iter().map(|&v| v as f32).collect(),
        labels: y.iter().map(|&v| v as u32).collect(),
        inputs,
        classes,
    }
}

fn shape(inputs: usize, hidden: usize, classes: usize) -> MlpShape {
    MlpShape {
        inputs,
        hidden,
        classes,
    }
}

/// f32 values in [−1, 1) and their f64 images.
fn vector(n: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let f: Vec<f32> = uniform(n, seed, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let d = f.iter().map(|&v| v as f64).collect();
    (f, d)
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Largest |b_r| + Σ_k |W_rk|·xmax over the rows of both layers of θ (or of a direction):
/// (A, L) of the module docs.
fn row_sums(s: MlpShape, theta: &[f64], xmax: f64) -> (f64, f64) {
    let (d, h, c) = (s.inputs, s.hidden, s.classes);
    let a = (0..h)
        .map(|j| {
            theta[h * d + j].abs() + (0..d).map(|k| theta[j * d + k].abs() * xmax).sum::<f64>()
        })
        .fold(0.0, f64::max);
    let o = h * d + h;
    let l = (0..c)
        .map(|r| {
            theta[o + c * h + r].abs() + (0..h).map(|j| theta[o + r * h + j].abs()).sum::<f64>()
        })
        .fold(0.0, f64::max);
    (a, l)
}

/// γ(4(H + D + C) + 64)·(1 + A)(1 + L): the tolerance per unit of term magnitude.
fn unit_tolerance(s: MlpShape, theta: &[f64], xmax: f64) -> f64 {
    let (a, l) = row_sums(s, theta, xmax);
    gamma(4 * (s.hidden + s.inputs + s.classes) + 64) * (1.0 + a) * (1.0 + l)
}

fn max_abs_x(data: &Dataset) -> f64 {
    data.x.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))
}

/// The largest |term| over the samples' gradients (and losses) and over their HVPs.
fn term_scales(s: MlpShape, theta: &[f64], v: &[f64], data: &Dataset) -> (f64, f64, f64) {
    let x = f64s(&data.x);
    let (mut loss, mut grad, mut hv) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &y) in data.labels.iter().enumerate() {
        let xi = &x[s.inputs * i..s.inputs * (i + 1)];
        let (l, g) = reference::sample_loss_grad(s, theta, xi, y as usize);
        loss = loss.max(l.abs());
        grad = g.iter().fold(grad, |m, t| m.max(t.abs()));
        let h = reference::sample_hvp(s, theta, v, xi, y as usize);
        hv = h.iter().fold(hv, |m, t| m.max(t.abs()));
    }
    (loss, grad, hv)
}

#[track_caller]
fn check(what: &str, got: &[f32], want: &[f64], atol: f64) -> f64 {
    crate::common::assert_close(what, got, want, atol, 0.0);
    crate::common::worst_ratio(got, want, atol, 0.0)
}

#[test]
fn loss_gradient_and_hvp_match_the_reference() {
    for (name, gpu) in both_gpus() {
        for (case, &(n, inputs, hidden, classes)) in CASES.iter().enumerate() {
            let s = shape(inputs, hidden, classes);
            let data = dataset(n, inputs, classes, 10 + case as u64);
            let mlp = Mlp::new(gpu, s, &data).unwrap();
            let (theta32, theta) = vector(s.param_count(), 100 + case as u64);
            let (v32, v) = vector(s.param_count(), 200 + case as u64);
            let params = GpuVec::upload(gpu, &theta32).unwrap();
            let dir = GpuVec::upload(gpu, &v32).unwrap();
            let x = f64s(&data.x);

            let (loss, grad) = mlp.loss_grad(gpu, &params).unwrap();
            let hv = mlp.hvp(gpu, &params, &dir).unwrap();
            let (want_loss, want_grad) = reference::loss_grad(s, &theta, &x, &data.labels);
            let want_hv = reference::hvp(s, &theta, &v, &x, &data.labels);

            let xmax = max_abs_x(&data);
            let unit = unit_tolerance(s, &theta, xmax);
            let (va, vl) = row_sums(s, &v, xmax);
            let (sl, sg, sh) = term_scales(s, &theta, &v, &data);
            let what = format!("{name}, N={n} D={inputs} H={hidden} C={classes}");
            let r = [
                check(&format!("loss, {what}"), &[loss], &[want_loss], unit * sl),
                check(&format!("grad, {what}"), &grad, &want_grad, unit * sg),
                check(
                    &format!("hvp, {what}"),
                    &hv,
                    &want_hv,
                    unit * (1.0 + va.max(vl)) * sh,
                ),
            ];
            println!(
                "{what}: worst fraction of tolerance loss {:.1e} grad {:.1e} hvp {:.1e}",
                r[0], r[1], r[2]
            );
        }
    }
}

#[test]
fn hvp_is_symmetric() {
    let gpu = gpu();
    let s = shape(2, 32, 3);
    let data = dataset(97, 2, 3, 5);
    let mlp = Mlp::new(gpu, s, &data).unwrap();
    let (theta32, theta) = vector(s.param_count(), 6);
    let (v32, v) = vector(s.param_count(), 7);
    let (w32, w) = vector(s.param_count(), 8);
    let params = GpuVec::upload(gpu, &theta32).unwrap();
    let hv = f64s(
        &mlp.hvp(gpu, &params, &GpuVec::upload(gpu, &v32).unwrap())
            .unwrap(),
    );
    let hw = f64s(
        &mlp.hvp(gpu, &params, &GpuVec::upload(gpu, &w32).unwrap())
            .unwrap(),
    );
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let abs_dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum::<f64>();
    // The worst-case bounds of the module docs, summed over P products, exceed this form
    // itself; use the scale the reference comparison above measures instead: every entry of
    // Hv lies within ~1e-6 of its largest per-sample term, so 1e-4 of the absolute form
    // (Σ|w_p·(Hv)_p|) leaves two orders of magnitude, while an operator that is not a Hessian
    // (a dropped or mis-signed R-term) breaks the symmetry at O(1) relative.
    let x = f64s(&data.x);
    let tol = 1e-4 * (abs_dot(&w, &hv) + abs_dot(&v, &hw));
    let (whv, vhw) = (dot(&w, &hv), dot(&v, &hw));
    assert!(
        (whv - vhw).abs() <= tol,
        "wᵀHv {whv} vs vᵀHw {vhw}, tolerance {tol:e}"
    );
    // And both against the reference's bilinear form.
    let want = dot(&w, &reference::hvp(s, &theta, &v, &x, &data.labels));
    assert!((whv - want).abs() <= tol, "wᵀHv {whv} vs reference {want}");
    // The check bites: the form is far from zero compared with the tolerance.
    assert!(
        want.abs() > 100.0 * tol,
        "wᵀHv {want} too small to test against {tol:e}"
    );
}

/// The Hutchinson probe is the HVP's own column totals times z: the same f32 products, so it
/// must equal z ⊙ (H·z) from `hvp` bit for bit (on a general z and a Rademacher one).
#[test]
fn hutchinson_probe_is_z_times_the_hvp() {
    for (name, gpu) in both_gpus() {
        let s = shape(2, 32, 3);
        let data = dataset(257, 2, 3, 11);
        let mlp = Mlp::new(gpu, s, &data).unwrap();
        let params = GpuVec::upload(gpu, &vector(s.param_count(), 12).0).unwrap();
        let general = vector(s.param_count(), 13).0;
        let rademacher: Vec<f32> = general.iter().map(|&v| v.signum()).collect();
        for z32 in [general, rademacher] {
            let z = GpuVec::upload(gpu, &z32).unwrap();
            let zhz = GpuVec::<f32>::zeros(gpu, s.param_count()).unwrap();
            let mut rec = curvgpu::Recorder::new(gpu);
            mlp.record_hutchinson_probe(&mut rec, &params, &z, &zhz)
                .unwrap();
            rec.submit().unwrap();
            let hz = mlp.hvp(gpu, &params, &z).unwrap();
            let want: Vec<f32> = z32.iter().zip(&hz).map(|(a, b)| a * b).collect();
            assert_eq!(zhz.read().unwrap(), want, "{name}");
            assert!(
                want.iter().any(|&v| v != 0.0),
                "{name}: an all-zero probe tests nothing"
            );
        }
    }
}

#[test]
fn sampled_gradient_and_accuracy_match_the_reference() {
    for (name, gpu) in both_gpus() {
        for (case, &(n, inputs, hidden, classes)) in CASES.iter().enumerate() {
            let s = shape(inputs, hidden, classes);
            let data = dataset(n, inputs, classes, 30 + case as u64);
            let mlp = Mlp::new(gpu, s, &data).unwrap();
            let (theta32, theta) = vector(s.param_count(), 300 + case as u64);
            let params = GpuVec::upload(gpu, &theta32).unwrap();
            let x = f64s(&data.x);
            let xmax = max_abs_x(&data);
            let unit = unit_tolerance(s, &theta, xmax);
            let what = format!("{name}, N={n} D={inputs} H={hidden} C={classes}");

            // A draw this close to a class boundary could legitimately land in the neighbouring
            // class in f32; take the first seed whose draws all stay 1e-5 clear. The worst-case
            // bound on p's error is far wider, but the gradient comparison above measures the
            // GPU's terms within ~1e-6 of the reference, and a draw that flipped would fail the
            // comparison loudly (deterministically), not pass wrongly.
            let (seed, want, _) = (1..50u64)
                .map(|seed| {
                    let (g, margin) = reference::sampled_grad(s, &theta, &x, n, seed);
                    (seed, g, margin)
                })
                .find(|&(_, _, margin)| margin > 1e-5)
                .expect("a seed whose draws keep clear of class boundaries");
            let got = mlp.sampled_grad(gpu, &params, seed).unwrap();
            let (_, sg, _) = term_scales(s, &theta, &theta, &data);
            let ratio = check(&format!("sampled grad, {what}"), &got, &want, unit * sg);
            // The draws depend on the seed: relabelling even one of N ≤ 1,025 samples moves a
            // term of size ~S by ≥ S/N, far above 1e-3·S of rounding.
            if n > 30 {
                let other = mlp.sampled_grad(gpu, &params, seed + 1000).unwrap();
                assert!(other
                    .iter()
                    .zip(&got)
                    .any(|(a, b)| (a - b).abs() as f64 > 1e-3 * sg));
            }

            let acc = mlp.accuracy(gpu, &params).unwrap() as f64;
            let want_acc = reference::accuracy(s, &theta, &x, &data.labels);
            // A count of at most 2²⁴ is exact in f32; the only rounding is the scale by 1/N
            // (itself rounded): 2 ulps of the result.
            assert!(
                (acc - want_acc).abs() <= 2.0 * crate::common::EPS32 * want_acc.max(1.0 / n as f64),
                "accuracy, {what}: {acc} vs {want_acc}"
            );
            println!(
                "{what}: seed {seed}, sampled grad worst fraction {ratio:.1e}, accuracy {acc}"
            );
        }
    }
}

#[test]
fn results_are_bitwise_repeatable() {
    let gpu = gpu();
    let s = shape(2, 32, 3);
    let data = spirals(100, 3, 0.1, 4).unwrap();
    let mlp = Mlp::new(gpu, s, &data).unwrap();
    let params = GpuVec::upload(gpu, &mlp.init_params(3)).unwrap();
    let a = mlp.loss_grad(gpu, &params).unwrap();
    let b = mlp.loss_grad(gpu, &params).unwrap();
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert!(a
        .1
        .iter()
        .zip(&b.1)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn spirals_are_deterministic_and_well_formed() {
    let a = spirals(50, 3, 0.1, 9).unwrap();
    assert_eq!(a, spirals(50, 3, 0.1, 9).unwrap());
    assert_ne!(a.x, spirals(50, 3, 0.1, 10).unwrap().x);
    assert_eq!(
        (a.samples(), a.x.len(), a.inputs, a.classes),
        (150, 300, 2, 3)
    );
    // Point-major: every prefix of `classes` samples holds one of each class.
    assert!(a.labels.chunks(3).all(|c| c == [0, 1, 2]));
    // Without noise the outermost point of each arm lies on the unit circle.
    let clean = spirals(50, 3, 0.0, 9).unwrap();
    for c in 0..3 {
        let (x, y) = (
            clean.x[2 * (147 + c)] as f64,
            clean.x[2 * (147 + c) + 1] as f64,
        );
        assert!((x.hypot(y) - 1.0).abs() < 1e-6);
    }
    assert!(matches!(spirals(0, 3, 0.1, 1), Err(Error::Empty { .. })));
    assert!(matches!(spirals(5, 0, 0.1, 1), Err(Error::Empty { .. })));
    assert!(matches!(
        spirals(5, 3, f32::NAN, 1),
        Err(Error::InvalidParameter { name: "noise", .. })
    ));
}

#[test]
fn init_params_are_deterministic_and_bounded() {
    let gpu = gpu();
    let s = shape(2, 7, 3);
    let mlp = Mlp::new(gpu, s, &dataset(5, 2, 3, 1)).unwrap();
    let t = mlp.init_params(1);
    assert_eq!(t.len(), s.param_count());
    assert_eq!(t, mlp.init_params(1));
    assert_ne!(t, mlp.init_params(2));
    let (w1, rest) = t.split_at(14);
    let (b1, rest) = rest.split_at(7);
    let (w2, b2) = rest.split_at(21);
    assert!(w1.iter().all(|w| w.abs() <= 1.0 / 2f32.sqrt()));
    assert!(w2.iter().all(|w| w.abs() <= 1.0 / 7f32.sqrt()));
    assert!(b1.iter().chain(b2).all(|&b| b == 0.0));
}

fn expect_err<T>(r: curvgpu::Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let s = shape(2, 4, 3);
    let good = dataset(10, 2, 3, 2);
    let mut empty = good.clone();
    empty.x.clear();
    empty.labels.clear();
    assert!(matches!(
        expect_err(Mlp::new(gpu, s, &empty), "empty"),
        Error::Empty { .. }
    ));
    let mut bad_label = good.clone();
    bad_label.labels[7] = 3;
    assert!(matches!(
        expect_err(Mlp::new(gpu, s, &bad_label), "label ≥ classes"),
        Error::Shape {
            argument: "data.labels",
            ..
        }
    ));
    let mut nan = good.clone();
    nan.x[5] = f32::NAN;
    assert!(matches!(
        expect_err(Mlp::new(gpu, s, &nan), "NaN in x"),
        Error::NonFinite {
            argument: "data.x",
            index: 5,
            ..
        }
    ));
    let mut short = good.clone();
    short.x.pop();
    assert!(matches!(
        expect_err(Mlp::new(gpu, s, &short), "short x"),
        Error::LengthMismatch { .. }
    ));
    for (bad, name) in [(shape(2, 65, 3), "hidden"), (shape(2, 0, 3), "hidden")] {
        assert!(matches!(
            expect_err(Mlp::new(gpu, bad, &good), name),
            Error::InvalidParameter { name: n, .. } if n == name
        ));
    }
    let nine = dataset(10, 2, 9, 2);
    assert!(matches!(
        expect_err(Mlp::new(gpu, shape(2, 4, 9), &nine), "classes"),
        Error::InvalidParameter {
            name: "classes",
            ..
        }
    ));
    assert!(matches!(
        expect_err(Mlp::new(gpu, shape(2, 4, 2), &good), "shape vs data"),
        Error::Shape {
            argument: "data",
            ..
        }
    ));

    let mlp = Mlp::new(gpu, s, &good).unwrap();
    let p = s.param_count();
    let params = GpuVec::<f32>::zeros(gpu, p).unwrap();
    let wrong = GpuVec::<f32>::zeros(gpu, p + 1).unwrap();
    let one = GpuVec::<f32>::zeros(gpu, 1).unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    let length = |e: Error, argument: &str| matches!(e, Error::LengthMismatch { argument: a, .. } if a == argument);
    assert!(length(
        expect_err(mlp.record_loss_grad(&mut rec, &wrong, &one, &params), ""),
        "params"
    ));
    assert!(length(
        expect_err(mlp.record_loss_grad(&mut rec, &params, &wrong, &params), ""),
        "loss"
    ));
    assert!(length(
        expect_err(mlp.record_loss_grad(&mut rec, &params, &one, &wrong), ""),
        "grad"
    ));
    assert!(length(
        expect_err(mlp.record_hvp(&mut rec, &params, &wrong, &params), ""),
        "v"
    ));
    assert!(length(
        expect_err(mlp.record_hvp(&mut rec, &params, &params, &wrong), ""),
        "hv"
    ));
    assert!(length(
        expect_err(mlp.record_sampled_grad(&mut rec, &params, 1, &wrong), ""),
        "grad"
    ));
    assert!(length(
        expect_err(mlp.record_accuracy(&mut rec, &params, &wrong), ""),
        "out"
    ));
    assert!(rec.is_empty(), "a rejected call recorded a dispatch");

    // Buffers from another device.
    let other = Gpu::new().unwrap();
    let foreign = GpuVec::<f32>::zeros(&other, p).unwrap();
    assert!(matches!(
        expect_err(
            mlp.record_hvp(&mut rec, &params, &foreign, &params),
            "foreign v"
        ),
        Error::WrongDevice { argument: "v" }
    ));
    let mut other_rec = curvgpu::Recorder::new(&other);
    let other_one = GpuVec::<f32>::zeros(&other, 1).unwrap();
    assert!(matches!(
        expect_err(
            mlp.record_loss_grad(&mut other_rec, &foreign, &other_one, &foreign),
            "foreign rec"
        ),
        Error::WrongDevice { .. }
    ));
}

/// 200 steps of θ ← θ − η·∇L on the spirals from the documented initialisation: the loss must
/// fall well below its start (≈ ln 3 with small weights). This guards the gradient's sign and
/// scale end to end; an ascent or a wrongly scaled gradient would not get there.
#[test]
fn gradient_descent_reduces_the_loss() {
    let gpu = gpu();
    let s = shape(2, 32, 3);
    let data = spirals(60, 3, 0.05, 1).unwrap();
    let mlp = Mlp::new(gpu, s, &data).unwrap();
    let mut theta = mlp.init_params(2);
    let params = GpuVec::upload(gpu, &theta).unwrap();
    let (first, _) = mlp.loss_grad(gpu, &params).unwrap();
    let mut last = first;
    for _ in 0..200 {
        let (loss, grad) = mlp.loss_grad(gpu, &params).unwrap();
        last = loss;
        theta.iter_mut().zip(&grad).for_each(|(t, g)| *t -= g);
        params.write(&theta).unwrap();
    }
    let acc = mlp.accuracy(gpu, &params).unwrap();
    println!("loss {first} → {last}, accuracy {acc}");
    assert!(last < 0.7 * first, "loss {first} → {last}");
    assert!(acc > 0.5, "accuracy {acc} after 200 steps");
}

/// Every tensor of every pass in ONE buffer at aligned offsets (θ, v, z, the outputs), as an
/// engine's pooled allocation holds them: the same results as separate buffers, against the
/// same references and tolerances as above. z⊙Hz is written beside z in the buffer it reads z
/// from (the promoted shader variant), and must still equal z ⊙ (H·z) bit for bit.
#[test]
fn packed_views_match_the_reference() {
    for (name, gpu) in both_gpus() {
        for case in [1usize, 4, 8] {
            let (n, inputs, hidden, classes) = CASES[case];
            let s = shape(inputs, hidden, classes);
            let p = s.param_count();
            let data = dataset(n, inputs, classes, 10 + case as u64);
            let mlp = Mlp::new(gpu, s, &data).unwrap();
            let (theta32, theta) = vector(p, 100 + case as u64);
            let (v32, v) = vector(p, 200 + case as u64);
            let z32: Vec<f32> = vector(p, 400 + case as u64)
                .0
                .iter()
                .map(|x| x.signum())
                .collect();
            // θ, v, z, loss, grad, hv, z⊙Hz, sampled grad, accuracy.
            let t = GpuVec::<f32>::packed(gpu, &[p, p, p, 1, p, p, p, p, 1]).unwrap();
            assert!(t.iter().all(|x| x.buffer() == t[0].buffer()));
            t[0].write(&theta32).unwrap();
            t[1].write(&v32).unwrap();
            t[2].write(&z32).unwrap();
            let seed = 3;
            let mut rec = curvgpu::Recorder::new(gpu);
            mlp.record_loss_grad(&mut rec, &t[0], &t[3], &t[4]).unwrap();
            mlp.record_hvp(&mut rec, &t[0], &t[1], &t[5]).unwrap();
            mlp.record_hutchinson_probe(&mut rec, &t[0], &t[2], &t[6])
                .unwrap();
            mlp.record_sampled_grad(&mut rec, &t[0], seed, &t[7])
                .unwrap();
            mlp.record_accuracy(&mut rec, &t[0], &t[8]).unwrap();
            rec.submit().unwrap();

            let x = f64s(&data.x);
            let (want_loss, want_grad) = reference::loss_grad(s, &theta, &x, &data.labels);
            let want_hv = reference::hvp(s, &theta, &v, &x, &data.labels);
            let xmax = max_abs_x(&data);
            let unit = unit_tolerance(s, &theta, xmax);
            let (va, vl) = row_sums(s, &v, xmax);
            let (sl, sg, sh) = term_scales(s, &theta, &v, &data);
            let what = format!("packed, {name}, N={n} D={inputs} H={hidden} C={classes}");
            check(
                &format!("loss, {what}"),
                &t[3].read().unwrap(),
                &[want_loss],
                unit * sl,
            );
            check(
                &format!("grad, {what}"),
                &t[4].read().unwrap(),
                &want_grad,
                unit * sg,
            );
            check(
                &format!("hvp, {what}"),
                &t[5].read().unwrap(),
                &want_hv,
                unit * (1.0 + va.max(vl)) * sh,
            );
            // The probe and the other passes against their unpacked forms, bit for bit.
            let z = GpuVec::upload(gpu, &z32).unwrap();
            let hz = mlp
                .hvp(gpu, &GpuVec::upload(gpu, &theta32).unwrap(), &z)
                .unwrap();
            let want: Vec<f32> = z32.iter().zip(&hz).map(|(a, b)| a * b).collect();
            assert_eq!(t[6].read().unwrap(), want, "z⊙Hz, {what}");
            let separate = GpuVec::upload(gpu, &theta32).unwrap();
            let (loss, grad) = mlp.loss_grad(gpu, &separate).unwrap();
            assert_eq!(t[3].read().unwrap(), [loss], "{what}");
            assert_eq!(t[4].read().unwrap(), grad, "{what}");
            assert_eq!(
                t[7].read().unwrap(),
                mlp.sampled_grad(gpu, &separate, seed).unwrap(),
                "sampled grad, {what}"
            );
            assert_eq!(
                t[8].read().unwrap(),
                [mlp.accuracy(gpu, &separate).unwrap()],
                "accuracy, {what}"
            );
            // θ, v and z were only read.
            assert_eq!(t[0].read().unwrap(), theta32, "{what}");
            assert_eq!(t[1].read().unwrap(), v32, "{what}");
            assert_eq!(t[2].read().unwrap(), z32, "{what}");
        }
    }
}

/// The documented in-place forms: v ← H·v, θ ← ∇L(θ) (and the loss into θ's first element),
/// z⊙Hz over θ, the accuracy over θ. Each input is consumed by the per-sample pass before any
/// output is written, so each equals its out-of-place result bit for bit.
#[test]
fn in_place_forms_match_separate_outputs() {
    for (name, gpu) in both_gpus() {
        let s = shape(2, 32, 3);
        let p = s.param_count();
        let data = dataset(97, 2, 3, 21);
        let mlp = Mlp::new(gpu, s, &data).unwrap();
        let theta32 = vector(p, 22).0;
        let v32 = vector(p, 23).0;
        let params = GpuVec::upload(gpu, &theta32).unwrap();
        let (loss, grad) = mlp.loss_grad(gpu, &params).unwrap();
        let hv = mlp
            .hvp(gpu, &params, &GpuVec::upload(gpu, &v32).unwrap())
            .unwrap();
        let acc = mlp.accuracy(gpu, &params).unwrap();

        // v ← H·v.
        let v = GpuVec::upload(gpu, &v32).unwrap();
        let mut rec = curvgpu::Recorder::new(gpu);
        mlp.record_hvp(&mut rec, &params, &v, &v).unwrap();
        rec.submit().unwrap();
        assert_eq!(v.read().unwrap(), hv, "{name}: v ← Hv");

        // θ ← ∇L(θ), the loss into a separate one-element output, then the loss into θ[0].
        let theta = GpuVec::upload(gpu, &theta32).unwrap();
        let out = GpuVec::<f32>::zeros(gpu, 1).unwrap();
        let mut rec = curvgpu::Recorder::new(gpu);
        mlp.record_loss_grad(&mut rec, &theta, &out, &theta)
            .unwrap();
        rec.submit().unwrap();
        assert_eq!(theta.read().unwrap(), grad, "{name}: θ ← ∇L(θ)");
        assert_eq!(out.read().unwrap(), [loss], "{name}");
        let theta = GpuVec::upload(gpu, &theta32).unwrap();
        let first = curvgpu::BufView::new(theta.buffer(), theta.byte_offset(), 1);
        let grad_out = GpuVec::<f32>::zeros(gpu, p).unwrap();
        let mut rec = curvgpu::Recorder::new(gpu);
        mlp.record_loss_grad(&mut rec, &theta, first, &grad_out)
            .unwrap();
        rec.submit().unwrap();
        assert_eq!(grad_out.read().unwrap(), grad, "{name}: loss into θ[0]");
        assert_eq!(theta.read().unwrap()[0], loss, "{name}: loss into θ[0]");

        // z⊙Hz over θ.
        let z32: Vec<f32> = v32.iter().map(|x| x.signum()).collect();
        let z = GpuVec::upload(gpu, &z32).unwrap();
        let hz = mlp.hvp(gpu, &params, &z).unwrap();
        let want: Vec<f32> = z32.iter().zip(&hz).map(|(a, b)| a * b).collect();
        let theta = GpuVec::upload(gpu, &theta32).unwrap();
        let mut rec = curvgpu::Recorder::new(gpu);
        mlp.record_hutchinson_probe(&mut rec, &theta, &z, &theta)
            .unwrap();
        rec.submit().unwrap();
        assert_eq!(theta.read().unwrap(), want, "{name}: z⊙Hz over θ");

        // The accuracy over θ[0].
        let theta = GpuVec::upload(gpu, &theta32).unwrap();
        let first = curvgpu::BufView::new(theta.buffer(), theta.byte_offset(), 1);
        let mut rec = curvgpu::Recorder::new(gpu);
        mlp.record_accuracy(&mut rec, &theta, first).unwrap();
        rec.submit().unwrap();
        assert_eq!(theta.read().unwrap()[0], acc, "{name}: accuracy over θ[0]");
    }
}

#[track_caller]
fn expect_overlap(r: curvgpu::Result<()>, want: (&str, &str)) {
    match r {
        Err(Error::Overlap { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), want)
        }
        other => panic!("expected Overlap of {want:?}, got {other:?}"),
    }
}

/// What cannot be in place is refused before anything is recorded, naming both arguments:
/// two outputs written by separate passes (the loss inside the gradient), and z⊙Hz over any
/// part of z, which the pass writing it reads.
#[test]
fn overlapping_outputs_are_refused() {
    let gpu = gpu();
    let s = shape(2, 32, 3);
    let p = s.param_count();
    let mlp = Mlp::new(gpu, s, &dataset(20, 2, 3, 31)).unwrap();
    let params = GpuVec::upload(gpu, &vector(p, 32).0).unwrap();
    let arena = GpuVec::<f32>::zeros(gpu, 3 * p).unwrap();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    assert!(
        align < 4 * p as u64,
        "a view starting inside z needs P·4 > {align}"
    );
    let at = |byte: u64, len: usize| curvgpu::BufView::new(arena.buffer(), byte, len);
    let mut rec = curvgpu::Recorder::new(gpu);

    // The loss inside the gradient: its first element, and one aligned further in.
    for byte in [0, align] {
        expect_overlap(
            mlp.record_loss_grad(&mut rec, &params, at(byte, 1), at(0, p)),
            ("loss", "grad"),
        );
    }
    // z⊙Hz over z, whole and shifted by one alignment unit either way.
    let base = align * (4 * p as u64).div_ceil(align);
    for zhz in [base, base + align, base - align] {
        expect_overlap(
            mlp.record_hutchinson_probe(&mut rec, &params, at(base, p), at(zhz, p)),
            ("z", "zhz"),
        );
    }
    assert!(rec.is_empty(), "a refused call recorded a dispatch");
}
