//! The opt-in finite check: `curvgpu::finite::first_nonfinite` finds the first NaN / ±inf by
//! its bits, on awkward lengths and both dispatch shapes; the optimizers' `check_finite`
//! reports the offending tensor and index; without it a NaN gradient reaches the parameter,
//! as in PyTorch.

use crate::common::{as_f32, both_gpus, gpu, poke, uniform};
use curvgpu::diag::{AdaHessian, AdaHessianConfig, SophiaG, SophiaGConfig, SophiaH, SophiaHConfig};
use curvgpu::finite::first_nonfinite;
use curvgpu::{Error, Gpu, GpuVec, Optimizer};

/// Past 65,535 × 256 = 16,776,960 elements: `gpu_wide_grid` folds its grid into 2-D.
const LARGE: usize = 17_000_003;

/// 1, 3 (tail only), 4, 5, 2^8 + 1, the primes 65,537 and 1,000,003, and [`LARGE`].
const SIZES: [usize; 8] = [1, 3, 4, 5, 257, 65_537, 1_000_003, LARGE];

/// Every kind of non-finite f32: quiet NaN, negative NaN, a signalling NaN (smallest payload),
/// an all-ones payload NaN, +inf and −inf.
const NONFINITE: [u32; 6] = [
    0x7FC0_0000,
    0xFFC0_0000,
    0x7F80_0001,
    0x7FFF_FFFF,
    0x7F80_0000,
    0xFF80_0000,
];

/// Finite values at the edges: ±f32::MAX (exponent 0xFE, one below the non-finite pattern),
/// the smallest normal, the smallest and largest subnormals and their negatives, ±0.
const EDGE_FINITE: [f32; 10] = [
    f32::MAX,
    -f32::MAX,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    f32::from_bits(0x0000_0001),
    f32::from_bits(0x8000_0001),
    f32::from_bits(0x007F_FFFF),
    f32::from_bits(0x807F_FFFF),
    -0.0,
    0.0,
];

/// Finite data of length n: uniform(−1, 1) with the edge values spread through it,
/// including the vec4 body's last element and the tail.
fn finite_data(n: usize) -> Vec<f32> {
    let mut x = as_f32(&uniform(n, n as u64, -1.0, 1.0));
    for (k, &v) in EDGE_FINITE.iter().enumerate() {
        x[(k * n) / EDGE_FINITE.len()] = v;
    }
    x[n - 1] = f32::MAX;
    x
}

/// First element, middle, last element of the vec4 body, first tail element, last element.
fn positions(n: usize) -> Vec<usize> {
    let body_end = n - n % 4;
    let mut p = vec![0, n / 2, n - 1];
    if body_end > 0 {
        p.push(body_end - 1);
    }
    if !n.is_multiple_of(4) {
        p.push(body_end);
    }
    p.sort_unstable();
    p.dedup();
    p
}

fn check(gpu: &Gpu, x: &GpuVec<f32>) -> Option<usize> {
    first_nonfinite(gpu, x).expect("first_nonfinite")
}

#[test]
fn finds_nan_and_infinities_at_every_position() {
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            let data = finite_data(n);
            let x = GpuVec::upload(gpu, &data).expect("upload");
            for p in positions(n) {
                for bits in NONFINITE {
                    poke(gpu, &x, p, f32::from_bits(bits));
                    assert_eq!(
                        check(gpu, &x),
                        Some(p),
                        "{name}: n {n}, {bits:#010x} at {p}"
                    );
                }
                poke(gpu, &x, p, data[p]);
            }
            assert_eq!(check(gpu, &x), None, "{name}: n {n} after restoring");
        }
    }
}

#[test]
fn returns_the_first_of_several() {
    for (name, gpu) in both_gpus() {
        for n in [5, 257, 65_537, LARGE] {
            let data = finite_data(n);
            let x = GpuVec::upload(gpu, &data).expect("upload");
            // Three bad values, planted last-first so that planting order cannot decide.
            let (a, b, c) = (n / 3, n / 2, n - 1);
            poke(gpu, &x, c, f32::NEG_INFINITY);
            poke(gpu, &x, b, f32::INFINITY);
            poke(gpu, &x, a, f32::NAN);
            assert_eq!(
                check(gpu, &x),
                Some(a),
                "{name}: n {n}, bad at {a}, {b}, {c}"
            );
            poke(gpu, &x, a, data[a]);
            assert_eq!(check(gpu, &x), Some(b), "{name}: n {n}, bad at {b}, {c}");
            poke(gpu, &x, b, data[b]);
            assert_eq!(check(gpu, &x), Some(c), "{name}: n {n}, bad at {c}");

            // Everything from index k on non-finite (every workgroup finds some): still k.
            let k = (2 * n) / 3;
            let mut tail = data.clone();
            tail[k..].fill(f32::NAN);
            let y = GpuVec::upload(gpu, &tail).expect("upload");
            assert_eq!(check(gpu, &y), Some(k), "{name}: n {n}, NaN from {k} on");
            let z = GpuVec::upload(gpu, &vec![f32::INFINITY; n]).expect("upload");
            assert_eq!(check(gpu, &z), Some(0), "{name}: n {n}, all +inf");
        }
    }
}

#[test]
fn finite_data_with_max_subnormals_and_signed_zero_has_no_nonfinite() {
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            let x = GpuVec::upload(gpu, &finite_data(n)).expect("upload");
            assert_eq!(check(gpu, &x), None, "{name}: n {n}");
        }
        // Nothing but the edge values, repeated: 10·k + 3 elements.
        let edges: Vec<f32> = EDGE_FINITE.iter().copied().cycle().take(100_003).collect();
        let x = GpuVec::upload(gpu, &edges).expect("upload");
        assert_eq!(check(gpu, &x), None, "{name}: edge values only");
    }
}

// ---- the optimizers' opt-in check ----------------------------------------------------------

/// Three tensors: a short one (vec4 body + tail), a large prime, one shorter than a vec4 + 4.
const LENS: [usize; 3] = [7, 1_000_003, 6];

struct Case {
    params: Vec<GpuVec<f32>>,
    grads: Vec<GpuVec<f32>>,
    zhz: Vec<GpuVec<f32>>,
    initial: Vec<Vec<f32>>,
}

/// Parameters, finite gradients, and z⊙Hz for [`LENS`]; `bad` plants non-finite gradient
/// values as (tensor, index, value).
fn case(gpu: &Gpu, bad: &[(usize, usize, f32)]) -> Case {
    let mut grads: Vec<Vec<f32>> = LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| as_f32(&uniform(n, 10 + i as u64, -1.0, 1.0)))
        .collect();
    for &(t, i, v) in bad {
        grads[t][i] = v;
    }
    let initial: Vec<Vec<f32>> = LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| as_f32(&uniform(n, 20 + i as u64, -2.0, 2.0)))
        .collect();
    let upload = |v: &[f32]| GpuVec::upload(gpu, v).expect("upload");
    Case {
        params: initial.iter().map(|v| upload(v)).collect(),
        grads: grads.iter().map(|v| upload(v)).collect(),
        zhz: LENS
            .iter()
            .enumerate()
            .map(|(i, &n)| upload(&as_f32(&uniform(n, 30 + i as u64, 0.1, 1.0))))
            .collect(),
        initial,
    }
}

/// Bad gradients: tensor 1 holds a NaN at 654,321 and an inf later, tensor 2 a NaN in its
/// tail; the report must name tensor 1 and the NaN's index.
const BAD: [(usize, usize, f32); 3] = [
    (1, 654_321, f32::NAN),
    (1, 999_999, f32::INFINITY),
    (2, 5, f32::NAN),
];

#[track_caller]
fn assert_nonfinite(result: curvgpu::Result<()>, argument: &str, tensor: usize, index: usize) {
    match result {
        Err(Error::NonFinite {
            argument: a,
            tensor: t,
            index: i,
        }) => assert_eq!((a, t, i), (argument, tensor, index)),
        other => panic!(
            "expected NonFinite {{ {argument}, tensor {tensor}, index {index} }}, got {other:?}"
        ),
    }
}

/// A rejected step must leave the parameters as they were.
#[track_caller]
fn assert_untouched(c: &Case) {
    for (t, (p, want)) in c.params.iter().zip(&c.initial).enumerate() {
        assert!(
            p.read().expect("read") == *want,
            "tensor {t} changed by a rejected step"
        );
    }
}

#[test]
fn sophiag_check_finite_reports_tensor_and_index() {
    let gpu = gpu();
    let config = SophiaGConfig {
        check_finite: true,
        ..Default::default()
    };
    let mut opt = SophiaG::new_multi(gpu, &LENS, config).expect("new");
    let c = case(gpu, &BAD);
    assert_nonfinite(opt.step(gpu, &c.params, &c.grads), "grads", 1, 654_321);
    assert_eq!(opt.steps(), 0);
    assert_untouched(&c);
    let c = case(gpu, &BAD[2..]);
    assert_nonfinite(opt.step(gpu, &c.params, &c.grads), "grads", 2, 5);
    let c = case(gpu, &[]);
    opt.step(gpu, &c.params, &c.grads)
        .expect("finite gradients pass the check");
    assert_eq!(opt.steps(), 1);
}

#[test]
fn sophiah_check_finite_reports_tensor_and_index() {
    let gpu = gpu();
    let config = SophiaHConfig {
        check_finite: true,
        ..Default::default()
    };
    let mut opt = SophiaH::new_multi(gpu, &LENS, config).expect("new");
    let c = case(gpu, &BAD);
    assert_nonfinite(opt.step(gpu, &c.params, &c.grads), "grads", 1, 654_321);
    assert_eq!(opt.steps(), 0);
    assert_untouched(&c);
    let c = case(gpu, &[(0, 0, f32::NEG_INFINITY)]);
    assert_nonfinite(opt.step(gpu, &c.params, &c.grads), "grads", 0, 0);
}

#[test]
fn adahessian_check_finite_reports_tensor_and_index() {
    let gpu = gpu();
    let config = AdaHessianConfig {
        check_finite: true,
        ..Default::default()
    };
    let specs: Vec<_> = LENS
        .iter()
        .map(|&n| curvgpu::diag::TensorSpec::flat(n))
        .collect();
    let mut opt = AdaHessian::new_multi(gpu, &specs, config).expect("new");
    let c = case(gpu, &BAD);
    assert_nonfinite(
        opt.step(gpu, &c.params, (&c.grads, &c.zhz)),
        "grads",
        1,
        654_321,
    );
    assert_eq!(opt.steps(), 0);
    assert_untouched(&c);
    // Finite gradients, a non-finite z⊙Hz: the check names "zhz".
    let c = case(gpu, &[]);
    poke(gpu, &c.zhz[2], 4, f32::INFINITY);
    assert_nonfinite(opt.step(gpu, &c.params, (&c.grads, &c.zhz)), "zhz", 2, 4);
    assert_untouched(&c);
}

// ---- without the check: NaN propagates (documented, as PyTorch) ---------------------------

/// Gradient NaNs in the vec4 body (tensor 1) and in the tail (tensor 2).
const NAN_AT: [(usize, usize, f32); 2] = [(1, 654_321, f32::NAN), (2, 5, f32::NAN)];

/// After one unchecked step the parameter is NaN exactly where the gradient was (PyTorch:
/// NaN·anything and clamp/sign of NaN are NaN) and finite everywhere else.
#[track_caller]
fn assert_nan_exactly_at(c: &Case, optimizer: &str) {
    for (t, p) in c.params.iter().enumerate() {
        for (i, v) in p.read().expect("read").into_iter().enumerate() {
            let want_nan = NAN_AT.iter().any(|&(bt, bi, _)| (bt, bi) == (t, i));
            assert_eq!(
                v.is_nan(),
                want_nan,
                "{optimizer}: tensor {t} element {i} = {v} (θ was {}, g NaN: {want_nan})",
                c.initial[t][i]
            );
            assert!(
                v.is_nan() || v.is_finite(),
                "{optimizer}: tensor {t} element {i} = {v}"
            );
        }
    }
}

#[test]
fn adahessian_nan_gradient_propagates_into_parameter_without_check() {
    let gpu = gpu();
    let specs: Vec<_> = LENS
        .iter()
        .map(|&n| curvgpu::diag::TensorSpec::flat(n))
        .collect();
    let mut opt = AdaHessian::new_multi(gpu, &specs, AdaHessianConfig::default()).expect("new");
    let c = case(gpu, &NAN_AT);
    opt.step(gpu, &c.params, (&c.grads, &c.zhz))
        .expect("unchecked step");
    assert_nan_exactly_at(&c, "AdaHessian");
}

/// WGSL leaves min/max/clamp/sign of NaN to the implementation (lavapipe: min(NaN, 1) = 1,
/// sign(NaN) = 0), so the kernel must carry NaN through the clip explicitly.
#[test]
fn sophiag_nan_gradient_propagates_into_parameter_without_check() {
    let gpu = gpu();
    let mut opt = SophiaG::new_multi(gpu, &LENS, SophiaGConfig::default()).expect("new");
    let c = case(gpu, &NAN_AT);
    opt.step(gpu, &c.params, &c.grads).expect("unchecked step");
    assert_nan_exactly_at(&c, "SophiaG");
}

/// clamp(NaN, −1, 1) is −1 on lavapipe: the clip must carry NaN through explicitly.
#[test]
fn sophiah_nan_gradient_propagates_into_parameter_without_check() {
    let gpu = gpu();
    let mut opt = SophiaH::new_multi(gpu, &LENS, SophiaHConfig::default()).expect("new");
    let c = case(gpu, &NAN_AT);
    opt.step(gpu, &c.params, &c.grads).expect("unchecked step");
    assert_nan_exactly_at(&c, "SophiaH");
}
