//! M-FAC's inverse-Fisher–vector product against the f64 references: the naive Woodbury
//! recursion (`woodbury_naive`, the official self-test's oracle) at d = 1000, m = 32, and the
//! f64 dynamic algorithm (`MfacRef`) where a d×d matrix is out of reach (d = 100,000, m = 100),
//! with F̂·y = x checked directly there.
//!
//! Tolerance. The product ends in y = λ·x − Gᵀ·w with λ = 1/damp: for x in the span of the
//! window the two terms nearly cancel (that direction's curvature is large), so f32 can only
//! promise an error relative to the terms, not to y. The bound follows the computation, first
//! order, with |·| entrywise and every f64 quantity from the reference (inputs rounded to f32):
//! - c = λ·G·x: each dot is a sum per lane (≤ 4·⌈d/1024⌉ products and additions with 256
//!   invocations and ≥ 1 slice; ≤ 8 in the wide-grid case, d = 1000 over 64 invocations × 3
//!   slices), a tree (8 or 6 levels), a sum over the partial sums (≤ 16 column slices per
//!   chunk) and the λ scale: |δc| ≤ γ_{k}·λ·|G|·|x|, k = 4⌈d/1024⌉ + 16·chunks + 10 covers both;
//! - the substitution solves L·c′ = c with L unit lower triangular, L[j][i] = D[i][j]/denom[i]
//!   (the f32-rounded D and denom and the loop's multiply, divide and subtract: γ_{2m+3}):
//!   |δc′| ≤ |L⁻¹|·(|δc| + γ_{2m+3}·|L|·|c′|) (Higham, Thm 8.5 with a perturbed right side);
//! - w = (c′ ⊘ denom)ᵀ·B: |δw| ≤ (|δc′| ⊘ denom)ᵀ·|B| + γ_{m+3}·(|c′| ⊘ denom)ᵀ·|B|;
//! - y: |δy| ≤ |G|ᵀ·|δw| + γ_{m+2}·(λ·|x| + |G|ᵀ·|w|).

use crate::common::{as_f32, as_f64, both_gpus, gamma, gpu, uniform};
use curvgpu::mfac::{Mfac, MfacConfig};
use curvgpu::reference::kfac::{woodbury_naive, MfacRef};
use curvgpu::{Error, Gpu, GpuVec};

fn gradients(count: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
    (0..count)
        .map(|i| as_f64(&as_f32(&uniform(d, seed + i as u64, -1.0, 1.0))))
        .collect()
}

/// The entrywise error bound of the header for F̂⁻¹·x computed over `chunks` chunks.
fn bound(r: &MfacRef, x: &[f64], chunks: usize) -> Vec<f64> {
    let (d, m, lambda) = (r.d, r.m, r.lambda());
    let g = |j: usize, e: usize| r.grads[j * d + e];
    let k = 4 * d.div_ceil(1024) + 16 * chunks + 10;
    let c: Vec<f64> = (0..m)
        .map(|j| lambda * (0..d).map(|e| g(j, e) * x[e]).sum::<f64>())
        .collect();
    let dc: Vec<f64> = (0..m)
        .map(|j| gamma(k) * lambda * (0..d).map(|e| (g(j, e) * x[e]).abs()).sum::<f64>())
        .collect();
    // L (unit lower) and its inverse by forward substitution on I.
    let l = |j: usize, i: usize| match j.cmp(&i) {
        std::cmp::Ordering::Equal => 1.0,
        std::cmp::Ordering::Greater => r.dmat[i * m + j] / r.denom[i],
        std::cmp::Ordering::Less => 0.0,
    };
    let mut linv = vec![0.0; m * m];
    for col in 0..m {
        for j in col..m {
            let acc: f64 = (col..j).map(|i| l(j, i) * linv[i * m + col]).sum();
            linv[j * m + col] = if j == col { 1.0 } else { -acc };
        }
    }
    let c1: Vec<f64> = (0..m)
        .map(|j| (0..=j).map(|i| linv[j * m + i] * c[i]).sum())
        .collect();
    let rhs: Vec<f64> = (0..m)
        .map(|j| dc[j] + gamma(2 * m + 3) * (0..=j).map(|i| (l(j, i) * c1[i]).abs()).sum::<f64>())
        .collect();
    let dc1: Vec<f64> = (0..m)
        .map(|j| (0..=j).map(|i| linv[j * m + i].abs() * rhs[i]).sum())
        .collect();
    let b = |i: usize, j: usize| r.coef[i * m + j];
    let w: Vec<f64> = (0..m)
        .map(|j| (0..m).map(|i| c1[i] / r.denom[i] * b(i, j)).sum())
        .collect();
    let dw: Vec<f64> = (0..m)
        .map(|j| {
            (0..m)
                .map(|i| (dc1[i] + gamma(m + 3) * c1[i].abs()) / r.denom[i] * b(i, j).abs())
                .sum()
        })
        .collect();
    (0..d)
        .map(|e| {
            let (gdw, gw): (f64, f64) = (0..m)
                .map(|j| (g(j, e).abs() * dw[j], (g(j, e) * w[j]).abs()))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            gdw + gamma(m + 2) * (lambda * x[e].abs() + gw)
        })
        .collect()
}

fn push_all(gpu: &Gpu, mfac: &mut Mfac, r: &mut MfacRef, grads: &[Vec<f64>]) {
    for g in grads {
        mfac.push(gpu, &GpuVec::upload(gpu, &as_f32(g)).unwrap())
            .unwrap();
        r.update(g);
    }
}

/// Uploads `grads` and pushes them with one `Mfac::extend`.
fn extend(gpu: &Gpu, mfac: &mut Mfac, grads: &[Vec<f32>]) -> curvgpu::Result<()> {
    let bufs: Vec<_> = grads
        .iter()
        .map(|g| GpuVec::upload(gpu, g).unwrap())
        .collect();
    let views: Vec<_> = bufs.iter().map(|b| b.view()).collect();
    mfac.extend(gpu, &views)
}

#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    let mut worst = 0.0f64;
    for (e, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= b,
            "{what}: y[{e}] = {g}, f64 {w}, error {err:e} > {b:e}"
        );
        worst = worst.max(err / b);
    }
    // A bound as large as y itself would let any answer of y's size through.
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let spread = norm(bound) / norm(want);
    assert!(
        spread < 1e-2,
        "{what}: the bound is {spread:e} of ‖y‖: the comparison is void"
    );
    println!("{what}: worst error / bound = {worst:.3}; ‖bound‖/‖y‖ = {spread:.2e}");
}

#[test]
fn the_official_self_test_d_1000_m_32_against_naive_woodbury() {
    let (d, m, damp) = (1000, 32, 1e-5);
    let grads = gradients(m, d, 100);
    // Chunks of 192 gradient elements: five full ones and a ragged 40; both tunings (the wide
    // grid walks runs of 4 invocations and splits the row dots into 3 slices).
    let cases = [(None, 1), (Some(192), 6)];
    for ((label, gpu), (chunk, chunks)) in
        both_gpus().into_iter().flat_map(|g| cases.map(|c| (g, c)))
    {
        let mut mfac = Mfac::new(
            gpu,
            d,
            MfacConfig {
                m,
                damp: damp as f32,
                chunk,
            },
        )
        .unwrap();
        let mut r = MfacRef::new(d, m, damp);
        push_all(gpu, &mut mfac, &mut r, &grads);
        let h = woodbury_naive(d, m, damp, &grads.concat());
        // x: a fresh direction. (For x in the window's span, e.g. the newest gradient, λ·x and
        // Gᵀ·w cancel to ~1e-7 of their size at damp = 1e-5: f32 leaves no correct digits
        // there, the bound exceeds ‖y‖, and such a comparison could not fail.)
        {
            let (name, x) = ("random x", gradients(1, d, 7)[0].clone());
            let want: Vec<f64> = h
                .chunks(d)
                .map(|row| row.iter().zip(&x).map(|(a, b)| a * b).sum())
                .collect();
            let got = (mfac
                .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
                .unwrap())
            .read()
            .unwrap();
            assert_within(
                &format!("{label}, {name}, chunk {chunk:?}"),
                &got,
                &want,
                &bound(&r, &x, chunks),
            );
        }
    }
}

#[test]
fn d_100_000_m_100_with_a_wrapped_ring_matches_f64_and_inverts_the_fisher() {
    // 130 gradients through a window of 100 (the ring wraps), d not a multiple of 4.
    let gpu = gpu();
    let (d, m, damp) = (100_003, 100, 1e-5);
    let mut mfac = Mfac::new(
        gpu,
        d,
        MfacConfig {
            m,
            damp: damp as f32,
            chunk: None,
        },
    )
    .unwrap();
    let mut r = MfacRef::new(d, m, damp);
    push_all(gpu, &mut mfac, &mut r, &gradients(130, d, 500));
    assert_eq!(mfac.len(), m);
    let x = gradients(1, d, 9)[0].clone();
    let want = r.ihvp(&x);
    let got = (mfac
        .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
        .unwrap())
    .read()
    .unwrap();
    assert_within("d = 100,003, m = 100", &got, &want, &bound(&r, &x, 1));
    // F̂·y = x for the f64 product (damp·y + (1/m)·Σ g·(gᵀy)): the reference inverts F̂.
    let mut fy: Vec<f64> = want.iter().map(|y| damp * y).collect();
    for g in r.grads.chunks(d) {
        let s = g.iter().zip(&want).map(|(a, b)| a * b).sum::<f64>() / m as f64;
        fy.iter_mut().zip(g).for_each(|(f, g)| *f += s * g);
    }
    // In f64 the residual can only be as small as κ(F̂)·ε allows, κ(F̂) ≤ (damp + Σ‖g‖²/m)/damp.
    let res: f64 = fy
        .iter()
        .zip(&x)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let kappa = (damp + r.grads.iter().map(|v| v * v).sum::<f64>() / m as f64) / damp;
    let limit = kappa * f64::EPSILON * norm;
    assert!(res <= limit, "‖F̂·y − x‖ = {res:e} > κ·ε·‖x‖ = {limit:e}");
}

#[test]
fn m_1030_not_a_multiple_of_32_and_past_1024_filled_by_one_extend() {
    // d prime; the window filled by one `extend` (one setup), against a reference with one
    // setup. The entrywise bound of the header is void at this m (the worst-case γ_{2m+3}
    // and |L⁻¹| reach ‖y‖), so this compares normwise with F̂ well conditioned: damp = 1
    // puts F̂'s spectrum in [1, 1 + ‖G‖²/m] ≈ [1, 3] (G uniform in ±1, d ≈ m), so errors are not
    // amplified, and the f32 rounding of O(m + d/1024) operations per entry, accumulating
    // like a random walk, gives ~√(m)·ε·κ ≈ 32 · 6e-8 · 3 ≈ 6e-6. The tolerance 1e-4 leaves a
    // 16× margin and still catches a lost gradient (each moves y by ~1/m ≈ 1e-3 of ‖y‖).
    let gpu = gpu();
    let (d, m, damp) = (1031, 1030, 1.0);
    let config = MfacConfig {
        m,
        damp: damp as f32,
        chunk: None,
    };
    let mut mfac = Mfac::new(gpu, d, config).unwrap();
    let grads = gradients(m, d, 900);
    extend(
        gpu,
        &mut mfac,
        &grads.iter().map(|g| as_f32(g)).collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(mfac.len(), m);
    let mut r = MfacRef::new(d, m, damp);
    grads.iter().for_each(|g| r.push(g));
    r.setup();
    let x = gradients(1, d, 11)[0].clone();
    let got = (mfac
        .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
        .unwrap())
    .read()
    .unwrap();
    let want = r.ihvp(&x);
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|e| e * e).sum::<f64>().sqrt();
    let err = norm(&mut got.iter().zip(&want).map(|(&g, &w)| g as f64 - w));
    let rel = err / norm(&mut want.iter().copied());
    println!("m = 1030: ‖y − y₆₄‖/‖y₆₄‖ = {rel:.2e}");
    assert!(rel <= 1e-4, "‖y − y₆₄‖/‖y₆₄‖ = {rel:e} > 1e-4");
    // The reference itself: dropping the oldest gradient must move y by more than the tolerance.
    let mut fewer = MfacRef::new(d, m, damp);
    grads[1..].iter().for_each(|g| fewer.push(g));
    fewer.setup();
    let moved = norm(&mut fewer.ihvp(&x).iter().zip(&want).map(|(a, b)| a - b));
    assert!(
        moved / norm(&mut want.iter().copied()) > 1e-4,
        "a lost gradient would go unseen"
    );
}

#[test]
fn a_partial_window_and_an_empty_one() {
    let gpu = gpu();
    let (d, m, damp) = (257, 8, 1e-3);
    let mut mfac = Mfac::new(
        gpu,
        d,
        MfacConfig {
            m,
            damp: damp as f32,
            chunk: Some(64),
        },
    )
    .unwrap();
    let x = gradients(1, d, 3)[0].clone();
    // Empty: F̂ = damp·I, so y = x / damp.
    let got = (mfac
        .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
        .unwrap())
    .read()
    .unwrap();
    let want: Vec<f64> = x.iter().map(|v| v / damp).collect();
    let b: Vec<f64> = want.iter().map(|v| gamma(2) * v.abs()).collect();
    assert_within("empty window", &got, &want, &b);
    let mut r = MfacRef::new(d, m, damp);
    push_all(gpu, &mut mfac, &mut r, &gradients(3, d, 40));
    let got = (mfac
        .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
        .unwrap())
    .read()
    .unwrap();
    assert_within("3 of 8", &got, &r.ihvp(&x), &bound(&r, &x, 5));
}

#[test]
fn extend_past_m_wraps_the_ring_as_pushing_one_by_one_would() {
    // m = 8 over five chunks: 3 gradients, then 11 more (the first 3 of those overwritten
    // within the call; the kept 8 start at ring row 6 and wrap to rows 0..6).
    let gpu = gpu();
    let (d, m, damp) = (257, 8, 1e-3);
    let config = MfacConfig {
        m,
        damp: damp as f32,
        chunk: Some(64),
    };
    let mut mfac = Mfac::new(gpu, d, config).unwrap();
    let mut r = MfacRef::new(d, m, damp);
    let x = gradients(1, d, 3)[0].clone();
    for (count, seed) in [(3, 60), (11, 70)] {
        let grads = gradients(count, d, seed);
        extend(
            gpu,
            &mut mfac,
            &grads.iter().map(|g| as_f32(g)).collect::<Vec<_>>(),
        )
        .unwrap();
        grads.iter().for_each(|g| r.push(g));
        r.setup();
        let got = (mfac
            .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
            .unwrap())
        .read()
        .unwrap();
        assert_within(
            &format!("after {count} more"),
            &got,
            &r.ihvp(&x),
            &bound(&r, &x, 5),
        );
    }
    assert_eq!(mfac.len(), m);
    // A non-finite entry in the third gradient: named, and the window left as it was.
    let mut bad = vec![vec![0.5f32; d]; 4];
    bad[2][100] = f32::NAN;
    match extend(gpu, &mut mfac, &bad) {
        Err(Error::NonFinite {
            argument: "g",
            tensor: 2,
            index: 100,
        }) => {}
        other => panic!("expected NonFinite {{ g, tensor 2, index 100 }}, got {other:?}"),
    }
    let got = (mfac
        .ihvp(gpu, &GpuVec::upload(gpu, &as_f32(&x)).unwrap())
        .unwrap())
    .read()
    .unwrap();
    assert_within(
        "after the refused extend",
        &got,
        &r.ihvp(&x),
        &bound(&r, &x, 5),
    );
}

#[test]
fn bad_configurations_and_inputs_are_typed_errors() {
    use crate::common::{assert_empty, assert_length, assert_param};
    let gpu = gpu();
    let ok = MfacConfig {
        m: 4,
        damp: 1e-5,
        chunk: None,
    };
    assert_empty(Mfac::new(gpu, 0, ok), "d");
    assert_param(Mfac::new(gpu, 10, MfacConfig { m: 0, ..ok }), "m", 0.0);
    for damp in [0.0, -1.0, f32::NAN] {
        assert_param(Mfac::new(gpu, 10, MfacConfig { damp, ..ok }), "damp", damp);
    }
    assert_param(
        Mfac::new(
            gpu,
            10,
            MfacConfig {
                chunk: Some(100),
                ..ok
            },
        ),
        "chunk",
        100.0,
    );
    let mut mfac = Mfac::new(gpu, 10, ok).unwrap();
    assert_length(
        mfac.push(gpu, &GpuVec::<f32>::zeros(gpu, 9).unwrap()),
        "g",
        10,
        9,
    );
    let mut bad = vec![0.5f32; 10];
    bad[7] = f32::INFINITY;
    match mfac.push(gpu, &GpuVec::upload(gpu, &bad).unwrap()) {
        Err(Error::NonFinite {
            argument: "g",
            index: 7,
            ..
        }) => {}
        other => panic!("expected NonFinite {{ g, 7 }}, got {other:?}"),
    }
    assert!(
        mfac.is_empty(),
        "a refused gradient does not enter the window"
    );
    assert_length(
        mfac.ihvp(gpu, &GpuVec::<f32>::zeros(gpu, 11).unwrap()),
        "x",
        10,
        11,
    );
}

#[test]
fn gradients_from_a_packed_buffer_and_x_and_y_in_one_buffer_or_in_place() {
    // Five gradients as views of one buffer (two pushed, three by one extend); then F̂⁻¹·x
    // with x and y disjoint views of one buffer (the case), and in place (y = x). The
    // window of the partial-window test: five chunks of 64, 64, 64, 64 and 1 (the last without
    // a vec4 body), against MfacRef with the header's bound.
    let gpu = gpu();
    let (d, m, damp) = (257, 8, 1e-3);
    let config = MfacConfig {
        m,
        damp: damp as f32,
        chunk: Some(64),
    };
    let mut mfac = Mfac::new(gpu, d, config).unwrap();
    let grads = gradients(5, d, 40);
    let arena = GpuVec::<f32>::packed(gpu, &[d; 5]).unwrap();
    for (v, g) in arena.iter().zip(&grads) {
        v.write(&as_f32(g)).unwrap();
    }
    mfac.push(gpu, &arena[0]).unwrap();
    mfac.push(gpu, arena[1].view()).unwrap();
    let rest: Vec<_> = arena[2..].iter().map(|v| v.view()).collect();
    mfac.extend(gpu, &rest).unwrap();
    assert_eq!(mfac.len(), 5);
    let mut r = MfacRef::new(d, m, damp);
    grads.iter().for_each(|g| r.push(g));
    r.setup();
    for (v, g) in arena.iter().zip(&grads) {
        assert_eq!(v.read().unwrap(), as_f32(g), "a pushed gradient changed");
    }
    let x = gradients(1, d, 3)[0].clone();
    let (want, b) = (r.ihvp(&x), bound(&r, &x, 5));
    let xy = GpuVec::<f32>::packed(gpu, &[d, d]).unwrap();
    xy[0].write(&as_f32(&x)).unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    mfac.record_ihvp(&mut rec, xy[0].view(), xy[1].view())
        .unwrap();
    rec.submit().unwrap();
    assert_within("x and y in one buffer", &xy[1].read().unwrap(), &want, &b);
    assert_eq!(xy[0].read().unwrap(), as_f32(&x), "x changed");
    // In place: G·x is formed from all of x before y is written.
    let mut rec = curvgpu::Recorder::new(gpu);
    mfac.record_ihvp(&mut rec, xy[0].view(), xy[0].view())
        .unwrap();
    rec.submit().unwrap();
    assert_within("in place", &xy[0].read().unwrap(), &want, &b);
}

#[test]
fn x_and_y_overlapping_in_part_are_refused_naming_both() {
    let gpu = gpu();
    let d = 257;
    let config = MfacConfig {
        m: 4,
        damp: 1e-3,
        chunk: Some(64),
    };
    let mfac = Mfac::new(gpu, d, config).unwrap();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let buffer = gpu
        .device()
        .create_buffer(&curvgpu::wgpu::BufferDescriptor {
            label: Some("arena"),
            size: 4 * d as u64 + align,
            usage: curvgpu::buffer::STORAGE_USAGES,
            mapped_at_creation: false,
        });
    let x = curvgpu::BufView::new(&buffer, 0, d);
    let y = curvgpu::BufView::new(&buffer, align, d);
    let mut rec = curvgpu::Recorder::new(gpu);
    for (x, y, first, second) in [(x, y, "x", "y"), (y, x, "x", "y")] {
        match mfac.record_ihvp(&mut rec, x, y) {
            Err(Error::Overlap {
                first: a,
                second: b,
                ..
            }) => assert_eq!((a.as_str(), b.as_str()), (first, second)),
            other => panic!("expected Overlap {{ x, y }}, got {other:?}"),
        }
    }
    assert!(rec.is_empty());
}

#[test]
fn a_window_past_the_device_is_an_error_not_an_abort() {
    // The reported m = 200,000: its m×m matrices (160 GB in f32, 320 GB for the host's f64
    // Gram matrix) are refused against the device's limits before anything is allocated.
    let gpu = gpu();
    let config = MfacConfig {
        m: 200_000,
        damp: 1e-5,
        chunk: None,
    };
    match Mfac::new(gpu, 1000, config) {
        Err(Error::TooLarge {
            argument: "m",
            requested,
            ..
        }) => assert_eq!(requested, 4 * 200_000u64 * 200_000),
        other => panic!("expected TooLarge {{ m }}, got {other:?}"),
    }
}
