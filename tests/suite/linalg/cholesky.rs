//! Batched Cholesky and SPD inversion against `curvgpu::reference::linalg` (f64).
//!
//! Tolerances. Matrices are rounded to f32 first; the references factor exactly those.
//! - Cholesky is backward stable whatever the summation order (Higham, Accuracy and
//!   Stability, Thm 10.3): the computed L̂ satisfies |L̂·L̂ᵀ − A| ≤ γ_{n+1}·|L̂|·|L̂ᵀ| entrywise,
//!   u = 2⁻²⁴, γ_m = m·u/(1 − m·u), independent of the condition number. That is asserted
//!   entry by entry (products formed in f64).
//! - The inverse is forward-accurate only to the condition number: ‖X̂ − A⁻¹‖_F/‖A⁻¹‖_F ≤
//!   c_n·κ₂(A)·u (Higham §14.3) with c_n a low-degree polynomial in n in the worst case. We
//!   assert c_n = √n, the statistical growth of n independent roundings (Higham §2.8): the
//!   worst case (~2n) would let whole wrong blocks pass at n = 1000, while the measured
//!   errors (printed) are 0.04–0.16·κ·u.

use crate::common::{as_f32, as_f64, both_gpus, gamma, gpu, EPS32};
use curvgpu::linalg::{
    cholesky, record_cholesky, record_spd_inverse, spd_inverse, Batch, CholeskyWorkspace,
};
use curvgpu::reference::krylov::random_spd;
use curvgpu::reference::linalg as reference;
use curvgpu::{Error, GpuVec, Recorder};

/// An SPD matrix with eigenvalues spread geometrically over [1, κ], rounded to f32.
fn spd(n: usize, kappa: f64, seed: u64) -> Vec<f64> {
    let eig: Vec<f64> = (0..n)
        .map(|i| {
            kappa.powf(if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            })
        })
        .collect();
    as_f64(&as_f32(&random_spd(n, &eig, seed)))
}

fn packed(matrices: &[Vec<f64>]) -> Vec<f32> {
    matrices.iter().flat_map(|m| as_f32(m)).collect()
}

#[test]
fn factors_of_mixed_sizes_reconstruct_a_within_the_backward_error_bound() {
    // Sides 1 and 2, one short of, at and past the 32-column block, two blocks and a prime.
    // Runs of equal sides (factored together along the grid's z) of two and three.
    let sizes = [1, 2, 31, 32, 32, 33, 64, 65, 65, 65, 127];
    let mats: Vec<Vec<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| spd(n, 1e3, 50 + i as u64))
        .collect();
    let batch = Batch::new(&sizes).unwrap();
    for (name, gpu) in both_gpus() {
        let factors = GpuVec::upload(gpu, &packed(&mats)).unwrap();
        cholesky(gpu, &batch, &factors).unwrap();
        let all = as_f64(&factors.read().unwrap());
        for (f, (&n, a)) in sizes.iter().zip(&mats).enumerate() {
            let l = &all[batch.offset(f)..batch.offset(f) + n * n];
            for r in 0..n {
                for c in r + 1..n {
                    assert_eq!(l[r * n + c], 0.0, "{name}: L[{r}][{c}] above the diagonal");
                }
            }
            let llt = reference::gemm(n, n, n, l, l, false, true);
            let abs: Vec<f64> = l.iter().map(|v| v.abs()).collect();
            let bound = reference::gemm(n, n, n, &abs, &abs, false, true);
            for e in 0..n * n {
                let err = (llt[e] - a[e]).abs();
                let b = gamma(n + 1) * bound[e];
                assert!(
                    err <= b,
                    "{name}: {n}×{n} entry {e}: |LLᵀ − A| = {err:e} > {b:e}"
                );
            }
        }
    }
}

#[test]
fn inverses_with_condition_numbers_1_to_1e4_are_within_sqrt_n_kappa_u() {
    // Two runs of equal sides (inverted together along the grid's z): 100 and 129.
    let cases = [
        (1, 1.0),
        (33, 1.0),
        (64, 10.0),
        (100, 1e2),
        (100, 1e3),
        (129, 1e3),
        (129, 10.0),
        (256, 1e4),
    ];
    let sizes: Vec<usize> = cases.iter().map(|c| c.0).collect();
    let mats: Vec<Vec<f64>> = cases
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| spd(n, k, 70 + i as u64))
        .collect();
    let batch = Batch::new(&sizes).unwrap();
    for (name, gpu) in both_gpus() {
        let factors = GpuVec::upload(gpu, &packed(&mats)).unwrap();
        let inverses = as_f64(&spd_inverse(gpu, &batch, &factors).unwrap().read().unwrap());
        for (f, (&(n, kappa), a)) in cases.iter().zip(&mats).enumerate() {
            let x = &inverses[batch.offset(f)..batch.offset(f) + n * n];
            let want = reference::spd_inverse(n, a).unwrap();
            let err =
                reference::frobenius(&x.iter().zip(&want).map(|(x, w)| x - w).collect::<Vec<_>>())
                    / reference::frobenius(&want);
            let bound = (n as f64).sqrt() * kappa * EPS32 / 2.0;
            println!(
                "{name}: {n}×{n}, κ = {kappa:e}: relative error {err:.2e} (bound {bound:.2e})"
            );
            assert!(
                err <= bound,
                "{name}: {n}×{n}, κ = {kappa:e}: {err:e} > {bound:e}"
            );
            for r in 0..n {
                for c in 0..r {
                    assert_eq!(x[r * n + c], x[c * n + r], "{name}: inverse not symmetric");
                }
            }
        }
    }
}

#[test]
fn a_non_spd_factor_is_reported_with_its_index_and_failing_pivot() {
    // Batch of four; the third (the second of a run of two 40s, factored together) has −5 on
    // its diagonal at row 37 (and is SPD before it), the last one NaN at row 0: the first
    // failure is reported.
    let good = spd(20, 10.0, 1);
    let mut bad = spd(40, 10.0, 2);
    bad[37 * 40 + 37] = -5.0;
    assert_eq!(reference::cholesky(40, &bad), Err(37));
    let mut nan = spd(3, 2.0, 3);
    nan[0] = f64::NAN;
    let batch = Batch::new(&[20, 40, 40, 3]).unwrap();
    let good40 = spd(40, 10.0, 4);
    for (name, gpu) in both_gpus() {
        let factors = GpuVec::upload(
            gpu,
            &packed(&[good.clone(), good40.clone(), bad.clone(), nan.clone()]),
        )
        .unwrap();
        match cholesky(gpu, &batch, &factors) {
            Err(Error::NotPositiveDefinite {
                argument: "factors",
                factor: 2,
                pivot: 37,
                value,
            }) => {
                assert!(value <= 0.0, "{name}: reported pivot value {value}")
            }
            other => panic!(
                "{name}: expected NotPositiveDefinite {{ factor 2, pivot 37 }}, got {other:?}"
            ),
        }
        let alone = Batch::new(&[3]).unwrap();
        let factors = GpuVec::upload(gpu, &as_f32(&nan)).unwrap();
        match spd_inverse(gpu, &alone, &factors) {
            Err(Error::NotPositiveDefinite {
                factor: 0,
                pivot: 0,
                value,
                ..
            }) => {
                assert!(value.is_nan(), "{name}: reported pivot value {value}")
            }
            other => panic!(
                "{name}: expected NotPositiveDefinite {{ factor 0, pivot 0 }}, got {other:?}"
            ),
        }
    }
}

#[test]
fn bad_batches_are_typed_errors() {
    let gpu = gpu();
    assert!(matches!(
        Batch::new(&[]),
        Err(Error::Empty { argument: "sizes" })
    ));
    assert!(matches!(
        Batch::new(&[3, 0]),
        Err(Error::Shape {
            argument: "sizes",
            ..
        })
    ));
    assert!(matches!(
        Batch::new(&[70_000, 70_000]),
        Err(Error::TooLarge {
            argument: "sizes",
            ..
        })
    ));
    let batch = Batch::new(&[2, 3]).unwrap();
    let short = GpuVec::<f32>::zeros(gpu, 12).unwrap();
    let workspace = CholeskyWorkspace::new(gpu, &batch).unwrap();
    let mut rec = Recorder::new(gpu);
    crate::common::assert_length(
        record_cholesky(&mut rec, &batch, short.view(), &workspace),
        "factors",
        13,
        12,
    );
    let small = CholeskyWorkspace::new(gpu, &Batch::new(&[2]).unwrap()).unwrap();
    let factors = GpuVec::<f32>::zeros(gpu, 13).unwrap();
    assert!(matches!(
        record_cholesky(&mut rec, &batch, factors.view(), &small),
        Err(Error::Shape {
            argument: "workspace",
            ..
        })
    ));
    assert!(rec.is_empty());
}

#[test]
fn a_1000_squared_inverse_with_kappa_1e3_is_within_sqrt_n_kappa_u() {
    // 1000 = 31 blocks of 32 and one of 8.
    let n = 1000;
    let a = spd(n, 1e3, 9);
    let gpu = gpu();
    let batch = Batch::new(&[n]).unwrap();
    let factors = GpuVec::upload(gpu, &as_f32(&a)).unwrap();
    let x = as_f64(&spd_inverse(gpu, &batch, &factors).unwrap().read().unwrap());
    let want = reference::spd_inverse(n, &a).unwrap();
    let diff: Vec<f64> = x.iter().zip(&want).map(|(x, w)| x - w).collect();
    let err = reference::frobenius(&diff) / reference::frobenius(&want);
    let bound = (n as f64).sqrt() * 1e3 * EPS32 / 2.0;
    println!("1000×1000, κ = 1e3: relative error {err:.2e} (bound {bound:.2e})");
    assert!(err <= bound, "{err:e} > {bound:e}");
}

/// `m` (n×n) with NaN in every entry strictly above the diagonal.
fn with_nan_above(n: usize, m: &[f64]) -> Vec<f64> {
    let mut m = m.to_vec();
    for r in 0..n {
        for c in r + 1..n {
            m[r * n + c] = f64::NAN;
        }
    }
    m
}

#[test]
fn only_the_lower_triangle_of_the_input_is_read() {
    // As LAPACK's potrf/potri with uplo = 'L': NaN in the strict upper triangle changes
    // nothing, bit for bit, through one block, three blocks and a ragged last one.
    let sizes = [5, 40, 65];
    let mats: Vec<Vec<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| spd(n, 1e2, 90 + i as u64))
        .collect();
    let dirty: Vec<Vec<f64>> = sizes
        .iter()
        .zip(&mats)
        .map(|(&n, m)| with_nan_above(n, m))
        .collect();
    let batch = Batch::new(&sizes).unwrap();
    for (name, gpu) in both_gpus() {
        let clean = GpuVec::upload(gpu, &packed(&mats)).unwrap();
        let nan = GpuVec::upload(gpu, &packed(&dirty)).unwrap();
        let inverse = spd_inverse(gpu, &batch, &clean).unwrap().read().unwrap();
        let inverse_nan = spd_inverse(gpu, &batch, &nan).unwrap().read().unwrap();
        assert!(
            inverse.iter().all(|v| v.is_finite()),
            "{name}: clean inverse"
        );
        assert_eq!(
            inverse_nan, inverse,
            "{name}: the inverse read the upper triangle"
        );
        // spd_inverse left L in both: the same factors, zero above the diagonal.
        assert_eq!(
            nan.read().unwrap(),
            clean.read().unwrap(),
            "{name}: L read the upper triangle"
        );
        let nan = GpuVec::upload(gpu, &packed(&dirty)).unwrap();
        cholesky(gpu, &batch, &nan).unwrap();
        assert_eq!(
            nan.read().unwrap(),
            clean.read().unwrap(),
            "{name}: cholesky"
        );
    }
}

#[test]
fn factors_and_inverses_packed_in_one_buffer_and_in_place() {
    // Factors, inverses and a sentinel tensor as disjoint views of one buffer; then the
    // inverse in place (inverses = factors), as LAPACK's potri. Both against f64 with the
    // √n·κ·u bound of the inverse test, bit for bit against separate buffers, and the
    // sentinel untouched.
    let cases = [(33, 10.0), (64, 1e2), (64, 1e3), (100, 1e3)];
    let sizes: Vec<usize> = cases.iter().map(|c| c.0).collect();
    let mats: Vec<Vec<f64>> = cases
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| spd(n, k, 110 + i as u64))
        .collect();
    let batch = Batch::new(&sizes).unwrap();
    let sentinel: Vec<f32> = (0..7).map(|i| i as f32 - 3.5).collect();
    for (name, gpu) in both_gpus() {
        let separate = GpuVec::upload(gpu, &packed(&mats)).unwrap();
        let want_inverse = spd_inverse(gpu, &batch, &separate).unwrap().read().unwrap();
        let want_l = separate.read().unwrap();
        let v = GpuVec::<f32>::packed(gpu, &[batch.len(), batch.len(), sentinel.len()]).unwrap();
        v[0].write(&packed(&mats)).unwrap();
        v[2].write(&sentinel).unwrap();
        let workspace = CholeskyWorkspace::new(gpu, &batch).unwrap();
        let mut rec = Recorder::new(gpu);
        record_spd_inverse(&mut rec, &batch, v[0].view(), v[1].view(), &workspace).unwrap();
        rec.submit().unwrap();
        workspace.check(gpu, "factors").unwrap();
        let inverses = v[1].read().unwrap();
        for (f, (&(n, kappa), a)) in cases.iter().zip(&mats).enumerate() {
            let x = as_f64(&inverses[batch.offset(f)..batch.offset(f) + n * n]);
            let want = reference::spd_inverse(n, a).unwrap();
            let diff: Vec<f64> = x.iter().zip(&want).map(|(x, w)| x - w).collect();
            let err = reference::frobenius(&diff) / reference::frobenius(&want);
            let bound = (n as f64).sqrt() * kappa * EPS32 / 2.0;
            assert!(err <= bound, "{name}: packed {n}×{n}: {err:e} > {bound:e}");
        }
        assert_eq!(inverses, want_inverse, "{name}: packed inverses");
        assert_eq!(
            v[0].read().unwrap(),
            want_l,
            "{name}: packed factors hold L"
        );
        // In place: factors ← A⁻¹.
        v[0].write(&packed(&mats)).unwrap();
        let mut rec = Recorder::new(gpu);
        record_spd_inverse(&mut rec, &batch, v[0].view(), v[0].view(), &workspace).unwrap();
        rec.submit().unwrap();
        workspace.check(gpu, "factors").unwrap();
        assert_eq!(v[0].read().unwrap(), want_inverse, "{name}: in place");
        // The factorisation alone in its packed view.
        v[1].write(&packed(&mats)).unwrap();
        let mut rec = Recorder::new(gpu);
        record_cholesky(&mut rec, &batch, v[1].view(), &workspace).unwrap();
        rec.submit().unwrap();
        workspace.check(gpu, "factors").unwrap();
        assert_eq!(v[1].read().unwrap(), want_l, "{name}: packed cholesky");
        assert_eq!(
            v[2].read().unwrap(),
            sentinel,
            "{name}: the sentinel changed"
        );
    }
}

#[test]
fn factors_and_inverses_overlapping_in_part_are_refused_naming_both() {
    // An inverse written over a factor still to be read would be silently wrong.
    let gpu = gpu();
    let batch = Batch::new(&[20, 20]).unwrap();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let buffer = gpu
        .device()
        .create_buffer(&curvgpu::wgpu::BufferDescriptor {
            label: Some("arena"),
            size: 4 * batch.len() as u64 + align,
            usage: curvgpu::buffer::STORAGE_USAGES,
            mapped_at_creation: false,
        });
    let factors = curvgpu::BufView::new(&buffer, 0, batch.len());
    let inverses = curvgpu::BufView::new(&buffer, align, batch.len());
    let workspace = CholeskyWorkspace::new(gpu, &batch).unwrap();
    let mut rec = Recorder::new(gpu);
    match record_spd_inverse(&mut rec, &batch, factors, inverses, &workspace) {
        Err(Error::Overlap { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), ("factors", "inverses"))
        }
        other => panic!("expected Overlap {{ factors, inverses }}, got {other:?}"),
    }
    assert!(rec.is_empty());
}
