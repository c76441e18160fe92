//! Batched symmetric eigendecomposition (parallel cyclic Jacobi) against matrices with known
//! spectra (`reference::krylov::random_spd`, Q·diag(λ)·Qᵀ in f64, rounded to f32).
//!
//! Tolerances. Each Jacobi rotation is backward stable: it changes the rows and columns it
//! touches by ≤ γ₆ relative (a 2×2 product in each of two passes, c and s within a few
//! roundings). An entry is touched twice per round, 2(n − 1) times a sweep, so the computed
//! pairs are exact for some A + ΔA with ‖ΔA‖_F ≤ (2(n − 1)·sweeps·γ₆ + tol)·‖A‖_F (tol: the
//! off-diagonal part left at the stopping test). Weyl's theorem bounds every eigenvalue's error
//! by that ‖ΔA‖₂ ≤ ‖ΔA‖_F; the residual ‖A·V − V·Λ‖_F by the same plus V's departure from
//! orthogonality, itself ≤ 2(n − 1)·sweeps·γ₆·√n (each rotation of V orthogonal to γ₆).

use crate::common::{as_f32, as_f64, gamma, gpu, EPS32};
use curvgpu::linalg::{symmetric_eigen, Batch, JacobiOptions};
use curvgpu::reference::krylov::random_spd;
use curvgpu::reference::linalg::{frobenius, gemm};
use curvgpu::{Error, GpuVec};

#[test]
fn eigenpairs_of_a_mixed_batch_match_the_known_spectra() {
    // Sides 1, 2, 7 (odd: a dummy partner each round), 32, 33 twice (one z-batched run) and
    // 100; spectra with repeated, negative and zero eigenvalues.
    let sizes = [1, 2, 7, 32, 33, 33, 100];
    let spectra: Vec<Vec<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| match i {
            2 => vec![-3.0, -3.0, 0.0, 1.0, 1.0, 1.0, 5.0],
            _ => (0..n).map(|j| 1.0 + j as f64 * (i as f64 + 0.5)).collect(),
        })
        .collect();
    let mats: Vec<Vec<f64>> = sizes
        .iter()
        .zip(&spectra)
        .enumerate()
        .map(|(i, (&n, l))| as_f64(&as_f32(&random_spd(n, l, 30 + i as u64))))
        .collect();
    let batch = Batch::new(&sizes).unwrap();
    let gpu = gpu();
    let packed: Vec<f32> = mats.iter().flat_map(|m| as_f32(m)).collect();
    let input = GpuVec::upload(gpu, &packed).unwrap();
    let options = JacobiOptions::default();
    let eig = symmetric_eigen(gpu, &batch, &input, &options).unwrap();
    assert_eq!(input.read().unwrap(), packed, "the input is left unchanged");
    let vectors = as_f64(&eig.vectors.read().unwrap());
    println!("{} sweeps", eig.sweeps);
    for (i, (&n, a)) in sizes.iter().zip(&mats).enumerate() {
        let norm = frobenius(a);
        let drift = 2.0 * (n.max(2) - 1) as f64 * eig.sweeps as f64 * gamma(6);
        let backward = (drift + options.tol as f64) * norm;
        let values = &eig.values[eig.value_offsets[i]..eig.value_offsets[i] + n];
        let mut want = spectra[i].clone();
        want.sort_by(f64::total_cmp);
        // The rounding of A to f32 moves the spectrum too (Weyl): ‖A₃₂ − A₆₄‖_F ≤ u·‖A‖_F.
        let weyl = backward + EPS32 / 2.0 * norm;
        for (j, (&got, &w)) in values.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - w).abs() <= weyl,
                "matrix {i} ({n}×{n}) λ{j}: {got} vs {w} (bound {weyl:e})"
            );
        }
        let q = &vectors[batch.offset(i)..batch.offset(i) + n * n];
        let aq = gemm(n, n, n, a, q, false, false);
        let residual: Vec<f64> = (0..n * n)
            .map(|e| aq[e] - q[e] * values[e % n] as f64)
            .collect();
        let qtq = gemm(n, n, n, q, q, true, false);
        let ortho: Vec<f64> = (0..n * n)
            .map(|e| qtq[e] - if e % (n + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let ortho_bound = drift * (n as f64).sqrt();
        assert!(
            frobenius(&ortho) <= ortho_bound,
            "matrix {i}: ‖VᵀV − I‖ = {:e} > {ortho_bound:e}",
            frobenius(&ortho)
        );
        let res_bound = backward + ortho_bound * norm;
        assert!(
            frobenius(&residual) <= res_bound,
            "matrix {i}: ‖AV − VΛ‖ = {:e} > {res_bound:e}",
            frobenius(&residual)
        );
        println!(
            "{n}×{n}: max |λ − λ*| = {:.2e} (bound {weyl:.2e}), ‖AV − VΛ‖ = {:.2e}, ‖VᵀV − I‖ = {:.2e}",
            values.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max),
            frobenius(&residual),
            frobenius(&ortho)
        );
    }
}

#[test]
fn negative_eigenvalues_are_clamped_when_asked() {
    let gpu = gpu();
    let a = as_f32(&random_spd(4, &[-2.0, -0.5, 1.0, 3.0], 5));
    let batch = Batch::new(&[4]).unwrap();
    let options = JacobiOptions {
        clamp_negative: true,
        ..Default::default()
    };
    let eig = symmetric_eigen(gpu, &batch, &GpuVec::upload(gpu, &a).unwrap(), &options).unwrap();
    assert_eq!(&eig.values[..2], &[0.0, 0.0]);
    assert!((eig.values[3] - 3.0).abs() < 1e-5);
}

#[test]
fn bad_input_is_a_typed_error() {
    use crate::common::{assert_length, assert_param};
    let gpu = gpu();
    let batch = Batch::new(&[3]).unwrap();
    let ok = JacobiOptions::default();
    assert_length(
        symmetric_eigen(gpu, &batch, &GpuVec::<f32>::zeros(gpu, 8).unwrap(), &ok),
        "matrices",
        9,
        8,
    );
    let m = GpuVec::upload(gpu, &[1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, f32::NAN]).unwrap();
    match symmetric_eigen(gpu, &batch, &m, &ok) {
        Err(Error::NonFinite {
            argument: "matrices",
            index: 8,
            ..
        }) => {}
        other => panic!("expected NonFinite {{ matrices, 8 }}, got {other:?}"),
    }
    let eye = GpuVec::upload(gpu, &[1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
    assert_param(
        symmetric_eigen(gpu, &batch, &eye, &JacobiOptions { tol: 0.0, ..ok }),
        "tol",
        0.0,
    );
    assert_param(
        symmetric_eigen(
            gpu,
            &batch,
            &eye,
            &JacobiOptions {
                max_sweeps: 0,
                ..ok
            },
        ),
        "max_sweeps",
        0.0,
    );
    let hard = GpuVec::upload(gpu, &as_f32(&random_spd(3, &[1.0, 2.0, 3.0], 1))).unwrap();
    match symmetric_eigen(
        gpu,
        &batch,
        &hard,
        &JacobiOptions {
            tol: 1e-30,
            max_sweeps: 2,
            ..ok
        },
    ) {
        Err(Error::NoConvergence { iterations: 2, .. }) => {}
        other => panic!("expected NoConvergence after 2 sweeps, got {other:?}"),
    }
}
