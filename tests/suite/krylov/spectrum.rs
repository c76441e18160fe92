//! Power iteration, Hutchinson trace, Lanczos and SLQ against matrices with a known spectrum.
//!
//! The test matrix is Q·diag(λ)·Qᵀ (f64, `reference::krylov::random_spd`) rounded to f32: its
//! eigenvalues move by at most ‖ΔA‖₂ ≤ n·ε·max|a_ij| (Weyl), far below the tolerances used.
//! A dense f32 matvec of a 512-row matrix carries ≈ (log2 256 + 2)·ε relative error per entry,
//! so Rayleigh quotients are good to ~1e-6 relative; power iteration stopped at a relative
//! change of tol = 1e-7 with an eigenvalue gap ratio r = λ₂/λ₁ = 0.9 is within
//! tol/(1 − r²) ≈ 5e-7 of its limit. The bound used, 1e-4 relative, leaves room for both.

use crate::common::*;
use curvgpu::bench::solvers::SparseSystem;
use curvgpu::krylov::density::spectral_moment;
use curvgpu::krylov::{
    hutchinson_trace, lanczos, spectral_density, top_eigenvalues, tridiag::tridiagonal_eigen,
    CsrMatrix, DenseMatrix, PowerOptions, SlqOptions, TraceOptions,
};
use curvgpu::reference::{krylov as reference, philox};

const N: usize = 512;

fn spectrum() -> Vec<f64> {
    // Five separated top eigenvalues, the rest spread over [0.1, 10].
    let mut lambda = vec![100.0, 90.0, 80.0, 70.0, 60.0];
    lambda.extend((0..N - 5).map(|i| 0.1 + 9.9 * i as f64 / (N - 6) as f64));
    lambda
}

fn matrix() -> (Vec<f64>, DenseMatrix) {
    let a = round_f32(&reference::random_spd(N, &spectrum(), 17));
    let op = DenseMatrix::new(gpu(), N, N, &as_f32(&a)).unwrap();
    (a, op)
}

#[test]
fn power_iteration_finds_the_top_five_eigenvalues_and_orthonormal_vectors() {
    let gpu = gpu();
    let (_, op) = matrix();
    let options = PowerOptions {
        top_n: 5,
        max_iter: 2000,
        tol: 1e-7,
        seed: 3,
    };
    let found = top_eigenvalues(gpu, &op, &options).unwrap();
    for (k, (&got, want)) in found
        .values
        .iter()
        .zip([100.0, 90.0, 80.0, 70.0, 60.0])
        .enumerate()
    {
        assert!(
            (got - want).abs() <= 1e-4 * want,
            "λ{k} = {got}, want {want}"
        );
    }
    // The Rayleigh quotient converges quadratically faster than its vector: with the
    // eigenvalue within 5e-7 relative and relative gaps of 0.1, the vectors are within
    // √(5e-7/0.1) ≈ 2.2e-3 of the eigenvectors, and so orthonormal to that order. Bound: 1e-2.
    let v: Vec<Vec<f32>> = found.vectors.iter().map(|x| x.read().unwrap()).collect();
    for i in 0..5 {
        for j in 0..5 {
            let dot: f64 = v[i]
                .iter()
                .zip(&v[j])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-2, "v{i}·v{j} = {dot}");
        }
    }
}

#[test]
fn power_iteration_takes_pyhessians_steps_and_stops_where_it_does() {
    // Three eigenvalues at PyHessian's tol = 1e-3 from the GPU's own Gaussian starts: the
    // iterations taken equal the f64 loop's (its relative changes fall ~19% an iteration, so
    // f32's ~1e-6 relative noise cannot move the crossing of 1e-3), the eigenvalues agree to
    // 1e-5 relative (Rayleigh quotients of nearly the same vectors) and every vector to 1e-3.
    let gpu = gpu();
    let (a, op) = matrix();
    let options = PowerOptions {
        top_n: 3,
        max_iter: 100,
        tol: 1e-3,
        seed: 11,
    };
    let got = top_eigenvalues(gpu, &op, &options).unwrap();
    // The starts as the GPU draws them: seed 11, offset k·stride (stride = n rounded up to 64).
    let stride = N.div_ceil(64) * 64;
    let starts: Vec<Vec<f64>> = (0..3)
        .map(|k| {
            let v = curvgpu::rng::gaussian(gpu, N, 11, (k * stride) as u64).unwrap();
            as_f64(&v.read().unwrap())
        })
        .collect();
    let apply = |x: &[f64], y: &mut [f64]| reference::dense_apply(N, N, &a, x, y);
    let (values, iterations, vectors) = reference::power_iteration(apply, &starts, 100, 1e-3);
    assert_eq!(got.iterations, iterations);
    // At most four dispatches an iteration (issue #14): the operator's one, the partials and
    // the step, and the orthogonalisation once there are found vectors.
    assert_eq!(got.dispatches_per_iteration, [3, 4, 4]);
    for k in 0..3 {
        assert!(
            (got.values[k] - values[k]).abs() <= 1e-5 * values[k].abs(),
            "λ{k} = {}, f64 {}",
            got.values[k],
            values[k]
        );
        let v = as_f64(&got.vectors[k].read().unwrap());
        let dev = v
            .iter()
            .zip(&vectors[k])
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(dev < 1e-3, "v{k} off by {dev}");
    }
}

#[test]
fn power_iteration_with_pyhessian_defaults_stops_early_but_close() {
    // tol = 1e-3 on the relative change stops once successive Rayleigh quotients agree to
    // 1e-3; with r² = 0.81 the remaining error is below tol/(1 − r²) ≈ 5.3e-3 relative.
    let (_, op) = matrix();
    let found = top_eigenvalues(gpu(), &op, &PowerOptions::default()).unwrap();
    assert!(found.iterations[0] < 100);
    assert!(
        (found.values[0] - 100.0).abs() <= 5.3e-3 * 100.0,
        "λ1 = {}",
        found.values[0]
    );
}

#[test]
fn hutchinson_trace_is_within_four_standard_errors_of_the_exact_trace() {
    let (a, op) = matrix();
    let exact: f64 = (0..N).map(|i| a[i * N + i]).sum();
    let est = hutchinson_trace(
        gpu(),
        &op,
        &TraceOptions {
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!(
        "trace {} ± {} (exact {exact}) after {} probes",
        est.trace,
        est.std_error,
        est.samples.len()
    );
    assert!(
        (est.trace - exact).abs() <= 4.0 * est.std_error,
        "{} vs {exact}",
        est.trace
    );
    // PyHessian's rule stopped it, or it ran 100 probes.
    assert!(est.samples.len() <= 100);
}

#[test]
fn per_block_traces_of_a_diagonal_matrix_are_exact_for_every_probe() {
    // For diagonal A, zᵀAz = Σ a_ii z_i² = tr(A) exactly whatever the signs: every block's
    // estimate equals its exact trace up to the f32 sums (≤ 600 terms of ≤ 3: 1e-3 absolute).
    let gpu = gpu();
    let n = 601;
    let d = uniform(n, 8, 0.5, 3.0);
    let dense: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { d[k / n] as f32 } else { 0.0 })
        .collect();
    let op = DenseMatrix::new(gpu, n, n, &dense).unwrap();
    let blocks = vec![100, 1, 300, 200];
    let est = hutchinson_trace(
        gpu,
        &op,
        &TraceOptions {
            blocks: blocks.clone(),
            max_iter: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let mut start = 0;
    for (b, len) in est.blocks.iter().zip(&blocks) {
        let exact: f64 = d[start..start + len].iter().map(|&x| x as f32 as f64).sum();
        assert_eq!(b.len, *len);
        assert!(
            (b.trace - exact).abs() < 1e-3,
            "block at {start}: {} vs {exact}",
            b.trace
        );
        assert!((b.per_parameter - exact / *len as f64).abs() < 1e-3 / *len as f64);
        start += len;
    }
    assert!(
        est.std_error < 1e-3,
        "every probe gives the same value: {}",
        est.std_error
    );
}

#[test]
fn lanczos_to_full_dimension_recovers_every_eigenvalue() {
    assert_full_lanczos_recovers_the_spectrum(40, 21, 1);
}

/// A tridiagonal SPD chain: diagonal 2 + (i·7 mod 11)/11, off-diagonals −1 (diagonally
/// dominant), on the GPU and in the bench's CSR form for the f64 reference.
fn chain(n: usize) -> (CsrMatrix, SparseSystem) {
    let mut sys = SparseSystem {
        n,
        row_ptr: vec![0],
        col_idx: Vec::new(),
        values: Vec::new(),
    };
    for i in 0..n {
        let diagonal = 2.0 + ((i * 7) % 11) as f64 / 11.0;
        for (j, v) in [(i.wrapping_sub(1), -1.0), (i, diagonal), (i + 1, -1.0)] {
            if j < n {
                sys.col_idx.push(j as u32);
                sys.values.push(v);
            }
        }
        sys.row_ptr.push(sys.col_idx.len() as u32);
    }
    let values: Vec<f32> = sys.values.iter().map(|&v| v as f32).collect();
    let op = CsrMatrix::new(gpu(), n, n, &sys.row_ptr, &sys.col_idx, &values).unwrap();
    (op, sys)
}

/// Lanczos run to the full dimension n of Q·diag(1, 1.5, …)·Qᵀ: T is then similar to A, so
/// eig(T) is the spectrum to f32 accuracy (full re-orthogonalisation keeps the basis
/// orthogonal to ~1e-6); each eigenvalue within 1e-4·λ_max.
fn assert_full_lanczos_recovers_the_spectrum(n: usize, matrix_seed: u64, lanczos_seed: u64) {
    let gpu = gpu();
    let lambda: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 0.5).collect();
    let a = reference::random_spd(n, &lambda, matrix_seed);
    let op = DenseMatrix::new(gpu, n, n, &as_f32(&a)).unwrap();
    let t = lanczos(gpu, &op, n, lanczos_seed, 0).unwrap();
    let eig = tridiagonal_eigen(&t.alpha, &t.beta).unwrap();
    assert_eq!(eig.values.len(), n);
    let max = lambda[n - 1];
    for (got, want) in eig.values.iter().zip(&lambda) {
        assert!((got - want).abs() < 1e-4 * max, "n = {n}: {got} vs {want}");
    }
}

#[test]
fn lanczos_takes_the_f64_references_steps_on_awkward_sizes() {
    // α and β of up to 12 steps against the f64 reference from the same Rademacher start, on
    // sizes 1, 2, a prime, 2^10 ± 1, past 2^16 and past 256 · 1024. The chain's entries are
    // exact in f32 and ‖A‖ < 5 (Gershgorin); each coefficient is a tree-summed dot product,
    // rounding ~(log₂ n + 2)·ε·‖A‖ ≈ 1e-6·‖A‖, and 12 steps with full re-orthogonalisation
    // amplify it little: the bound is 4e-4 ≈ 1e-4·‖A‖.
    for n in [1usize, 2, 17, 1023, 1025, 65_537, 300_007] {
        let steps = n.min(12);
        let (op, sys) = chain(n);
        let t = lanczos(gpu(), &op, steps, 3, 11).unwrap();
        let z = philox::rademacher(3, 11, n);
        let v0: Vec<f64> = z.iter().map(|&x| x as f64).collect();
        let apply = |x: &[f64], y: &mut [f64]| {
            reference::csr_apply(&sys.row_ptr, &sys.col_idx, &sys.values, x, y)
        };
        let (alpha, beta) = reference::lanczos(apply, &v0, steps);
        assert_eq!(t.alpha.len(), alpha.len(), "n = {n}: steps kept");
        assert_eq!(t.beta.len(), beta.len(), "n = {n}: steps kept");
        for (j, (got, want)) in t.alpha.iter().zip(&alpha).enumerate() {
            assert!(
                (got - want).abs() <= 4e-4,
                "n = {n}, α_{j}: {got} vs {want}"
            );
        }
        for (j, (got, want)) in t.beta.iter().zip(&beta).enumerate() {
            assert!(
                (got - want).abs() <= 4e-4,
                "n = {n}, β_{}: {got} vs {want}",
                j + 1
            );
        }
    }
}

#[test]
fn lanczos_past_256_steps_recovers_every_eigenvalue() {
    // m = n = 300: more coefficients than a workgroup has invocations in each Gram–Schmidt pass.
    assert_full_lanczos_recovers_the_spectrum(300, 23, 2);
}

#[test]
fn lanczos_runs_bit_identically_twice() {
    let (op, _) = chain(70_001);
    let first = lanczos(gpu(), &op, 20, 5, 0).unwrap();
    let second = lanczos(gpu(), &op, 20, 5, 0).unwrap();
    assert_eq!(first, second);
}

#[test]
fn slq_quadrature_moments_equal_the_start_vectors_rayleigh_moments() {
    // Gauss quadrature with m nodes is exact for polynomials of degree < 2m, so for each run
    // Σ w_i θ_i^k = v₀ᵀA^k v₀ with v₀ the normalised Rademacher start vector, which the f64
    // Philox reference regenerates. m = 30, k ≤ 4; f32 Lanczos with full
    // re-orthogonalisation keeps these to ~1e-5 relative; the bound is 1e-4.
    let gpu = gpu();
    let (a, op) = matrix();
    let options = SlqOptions {
        steps: 30,
        runs: 3,
        seed: 9,
        ..Default::default()
    };
    let slq = spectral_density(gpu, &op, &options).unwrap();
    for (r, run) in slq.runs.iter().enumerate() {
        let z = philox::rademacher(options.seed, (r * N) as u64, N);
        let norm = (N as f64).sqrt() + 1e-6;
        let mut v: Vec<f64> = z.iter().map(|&x| x as f64 / norm).collect();
        let v0 = v.clone();
        for k in 1..=4u32 {
            let mut av = vec![0.0; N];
            reference::dense_apply(N, N, &a, &v, &mut av);
            v = av;
            let exact: f64 = v0.iter().zip(&v).map(|(a, b)| a * b).sum();
            let quad = spectral_moment(std::slice::from_ref(run), k);
            assert!(
                (quad - exact).abs() <= 1e-4 * exact.abs(),
                "run {r}, k = {k}: {quad} vs {exact}"
            );
        }
    }
    // The moments average to tr(A^k)/n within 4 standard errors of the run-to-run spread.
    let exact_mean: f64 = spectrum().iter().sum::<f64>() / N as f64;
    let per_run: Vec<f64> = slq
        .runs
        .iter()
        .map(|run| spectral_moment(std::slice::from_ref(run), 1))
        .collect();
    let mean = per_run.iter().sum::<f64>() / per_run.len() as f64;
    let sd = (per_run.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (per_run.len() - 1) as f64)
        .sqrt();
    assert!(
        (mean - exact_mean).abs() <= 4.0 * sd / (per_run.len() as f64).sqrt() + 1e-9,
        "{mean} vs {exact_mean}"
    );
    // The smoothed density integrates to 1 and keeps the first moment of its quadrature.
    let dx = slq.density.grid[1] - slq.density.grid[0];
    let mass: f64 = slq.density.density.iter().sum::<f64>() * dx;
    assert!((mass - 1.0).abs() < 1e-9);
    assert!((slq.density.moment(1) - spectral_moment(&slq.runs, 1)).abs() < 1e-2 * exact_mean);
}
