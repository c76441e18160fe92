//! Conjugate gradient against scipy's recurrence in f64 (`curvgpu::reference::krylov::cg`).
//!
//! What can be compared. Both sides run the same recurrence with the same stopping test
//! ‖r_k‖ < max(atol, rtol·‖b‖) on the recursively updated residual, so the iteration counts
//! must agree to ±2 (f32 rounding perturbs the recurrence; measured: identical counts on every
//! case here, up to 2,169 iterations at κ ≈ 4·10⁵).
//!
//! The f32 solution is judged two ways:
//! - against the f64 CG solution: ‖x − x₆₄‖/‖x₆₄‖ ≤ rtol. The f64 iterate is itself only
//!   within ~κ·rtol of the exact solution, so agreeing to rtol shows the f32 run followed the
//!   same recurrence (measured 3·10⁻⁷ … 1.2·10⁻⁶);
//! - by its true residual ‖b − A·x‖/‖b‖ in f64, which cannot beat what storing x in f32
//!   allows: rounding x₆₄ alone leaves ε·‖A‖∞·‖x₆₄‖/‖b‖. The bound is rtol plus 8 times that
//!   (8: the residual gap of f32 CG accumulates a few roundings per iteration).

use crate::common::*;
use curvgpu::krylov::{
    cg, cg_batched, CgOptions, CgResult, DenseMatrix, LinearOperator, Poisson, Preconditioner,
};
use curvgpu::reference::krylov as reference;
use curvgpu::GpuVec;

struct Case {
    name: &'static str,
    grid: (usize, usize, usize),
    rtol: f32,
    /// ‖A‖∞ of the stencil: 8 in 2-D, 12 in 3-D.
    norm_a: f64,
}

fn apply(grid: (usize, usize, usize), x: &[f64], y: &mut [f64]) {
    let (nx, ny, nz) = grid;
    if nz == 1 {
        reference::poisson2d_apply(nx, ny, x, y)
    } else {
        reference::poisson3d_apply(nx, ny, nz, x, y)
    }
}

fn true_relative_residual(grid: (usize, usize, usize), x: &[f32], b: &[f64]) -> f64 {
    let mut ax = vec![0.0; b.len()];
    apply(grid, &as_f64(x), &mut ax);
    let r: f64 = ax
        .iter()
        .zip(b)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    r / b.iter().map(|b| b * b).sum::<f64>().sqrt()
}

fn run(case: &Case) {
    let gpu = gpu();
    let (nx, ny, nz) = case.grid;
    let n = nx * ny * nz;
    let b = round_f32(&uniform(n, 42, -1.0, 1.0));
    let op = Poisson::new_3d(nx, ny, nz).unwrap();
    let b_gpu = GpuVec::upload(gpu, &as_f32(&b)).unwrap();
    let options = CgOptions {
        rtol: case.rtol,
        history: true,
        ..Default::default()
    };
    let got = cg(gpu, &op, &b_gpu, None, &options).unwrap();
    assert!(got.history.is_some());
    assert_matches_f64_cg(case, &b, None, &got);
}

/// The f32 solve `got` of A·x = b (from x0) against scipy's recurrence in f64: both converge,
/// iterations ±2, ‖x − x₆₄‖/‖x₆₄‖ ≤ rtol, the true residual within what f32 storage allows,
/// and the history (when kept) ends below the tolerance.
fn assert_matches_f64_cg(case: &Case, b: &[f64], x0: Option<&[f64]>, got: &CgResult) {
    let n = b.len();
    let want = reference::cg(
        |x, y| apply(case.grid, x, y),
        b,
        x0,
        case.rtol as f64,
        0.0,
        10 * n,
        None,
    );
    let x = got.x.read().unwrap();
    let true_res = true_relative_residual(case.grid, &x, b);
    let x_err = x
        .iter()
        .zip(&want.x)
        .map(|(a, b)| (*a as f64 - b).powi(2))
        .sum::<f64>()
        .sqrt()
        / want.x.iter().map(|b| b * b).sum::<f64>().sqrt();
    eprintln!(
        "{}: f32 {} iterations, f64 {}; true residual {true_res:.2e}; ‖x − x64‖/‖x64‖ {x_err:.2e}",
        case.name, got.iterations, want.iterations
    );
    assert!(
        got.converged && want.converged,
        "{}: both must converge",
        case.name
    );
    assert!(
        got.iterations.abs_diff(want.iterations) <= 2,
        "{}: {} iterations in f32, {} in f64",
        case.name,
        got.iterations,
        want.iterations
    );
    assert!(
        x_err <= case.rtol as f64,
        "{}: ‖x − x64‖/‖x64‖ = {x_err:e}",
        case.name
    );
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let attainable = case.rtol as f64 + 8.0 * EPS32 * case.norm_a * norm(&want.x) / norm(b);
    assert!(
        true_res <= attainable,
        "{}: true residual {true_res:e} > {attainable:e}",
        case.name
    );
    if let Some(history) = &got.history {
        assert_eq!(history.len(), got.iterations + 1);
        assert!(
            history.last().unwrap()
                < &(case.rtol * (b.iter().map(|v| v * v).sum::<f64>().sqrt() as f32))
        );
    }
}

#[test]
fn poisson_2d_64_squared_matches_f64_cg() {
    run(&Case {
        name: "2-D 64²",
        grid: (64, 64, 1),
        rtol: 1e-5,
        norm_a: 8.0,
    });
}

#[test]
fn poisson_2d_256_squared_matches_f64_cg() {
    run(&Case {
        name: "2-D 256²",
        grid: (256, 256, 1),
        rtol: 1e-5,
        norm_a: 8.0,
    });
}

#[test]
fn poisson_3d_64_cubed_matches_f64_cg() {
    run(&Case {
        name: "3-D 64³",
        grid: (64, 64, 64),
        rtol: 1e-5,
        norm_a: 12.0,
    });
}

#[test]
fn poisson_2d_1024_squared_converges_like_f64_cg() {
    run(&Case {
        name: "2-D 1024²",
        grid: (1024, 1024, 1),
        rtol: 1e-5,
        norm_a: 8.0,
    });
}

/// A 200×200 SPD matrix with eigenvalues spread over [1, 1000], scaled by D = diag(10^u),
/// u ∈ [−1.5, 1.5]: D·A·D is badly scaled, which Jacobi undoes.
fn badly_scaled_spd(n: usize) -> (Vec<f64>, Vec<f64>) {
    let eig: Vec<f64> = (0..n)
        .map(|i| 1.0 + 999.0 * i as f64 / (n - 1) as f64)
        .collect();
    let a = reference::random_spd(n, &eig, 5);
    let d: Vec<f64> = uniform(n, 6, -1.5, 1.5)
        .iter()
        .map(|u| 10f64.powf(*u))
        .collect();
    let scaled: Vec<f64> = (0..n * n).map(|k| d[k / n] * a[k] * d[k % n]).collect();
    // What the GPU sees: the f32 rounding of the matrix; the reference uses the same values.
    (round_f32(&scaled), d)
}

fn dense_apply(n: usize, a: &[f64]) -> impl Fn(&[f64], &mut [f64]) + '_ {
    move |x, y| reference::dense_apply(n, n, a, x, y)
}

#[test]
fn jacobi_and_an_operator_preconditioner_follow_the_preconditioned_recurrence() {
    // Dense f32 matvecs round differently from f64 at each step (one workgroup tree per row),
    // so counts are compared with the ±2 rule and solutions to the f64 preconditioned CG's.
    let gpu = gpu();
    let n = 200;
    let (a, _) = badly_scaled_spd(n);
    let diag: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    let b = round_f32(&uniform(n, 7, -1.0, 1.0));
    let op = DenseMatrix::new(gpu, n, n, &as_f32(&a)).unwrap();
    let b_gpu = GpuVec::upload(gpu, &as_f32(&b)).unwrap();
    let plain = reference::cg(dense_apply(n, &a), &b, None, 1e-5, 0.0, 10 * n, None);
    let jacobi = reference::cg(dense_apply(n, &a), &b, None, 1e-5, 0.0, 10 * n, Some(&diag));
    assert!(
        jacobi.iterations < plain.iterations,
        "the test problem must reward Jacobi"
    );
    let inverse_diagonal: Vec<f32> = (0..n * n)
        .map(|k| {
            if k / n == k % n {
                (1.0 / diag[k / n]) as f32
            } else {
                0.0
            }
        })
        .collect();
    let m = DenseMatrix::new(gpu, n, n, &inverse_diagonal).unwrap();
    for (name, pre) in [
        ("Jacobi", Preconditioner::Jacobi),
        ("operator", Preconditioner::Operator(&m)),
    ] {
        let options = CgOptions {
            preconditioner: pre,
            ..Default::default()
        };
        let got = cg(gpu, &op, &b_gpu, None, &options).unwrap();
        eprintln!(
            "{name}: f32 {} iterations, f64 {} (plain f64 {})",
            got.iterations, jacobi.iterations, plain.iterations
        );
        assert!(got.converged);
        assert!(
            got.iterations.abs_diff(jacobi.iterations) <= 2,
            "{name}: {} vs {}",
            got.iterations,
            jacobi.iterations
        );
    }
}

#[test]
fn batched_solves_equal_separate_solves() {
    // Same kernels, same data, same order: bit-identical to solving one at a time.
    let gpu = gpu();
    let op = Poisson::new_2d(37, 23).unwrap();
    let n = 37 * 23;
    let bs: Vec<GpuVec<f32>> = (0..3)
        .map(|k| GpuVec::upload(gpu, &as_f32(&uniform(n, 100 + k, -1.0, 1.0))).unwrap())
        .collect();
    let views: Vec<_> = bs.iter().map(|b| b.view()).collect();
    let (batched, stats) = cg_batched(gpu, &op, &views, None, &CgOptions::default()).unwrap();
    assert_eq!(batched.len(), 3);
    for (k, b) in bs.iter().enumerate() {
        let single = cg(gpu, &op, b, None, &CgOptions::default()).unwrap();
        assert_eq!(batched[k].iterations, single.iterations, "system {k}");
        assert_eq!(
            batched[k].x.read().unwrap(),
            single.x.read().unwrap(),
            "system {k}"
        );
    }
    // One readback per batch of check_every iterations serves all three systems, and is all
    // there is: b's finiteness and the final scalars ride on the flags' readback.
    let most = batched.iter().map(|r| r.iterations).max().unwrap();
    assert!(
        stats.readbacks <= most.div_ceil(CgOptions::default().check_every) + 1,
        "{stats:?}"
    );
    assert_eq!(stats.readbacks, stats.submits, "{stats:?}");
}

#[test]
fn iterations_recorded_past_convergence_change_nothing() {
    // check_every = 1 stops at once; check_every = 64 records up to 63 extra iterations, which
    // must be no-ops on the GPU: same count, same bits.
    let gpu = gpu();
    let op = Poisson::new_2d(31, 31).unwrap();
    let b = GpuVec::upload(gpu, &as_f32(&uniform(31 * 31, 9, -1.0, 1.0))).unwrap();
    let run = |check_every| {
        cg(
            gpu,
            &op,
            &b,
            None,
            &CgOptions {
                check_every,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (tight, loose) = (run(1), run(64));
    assert_eq!(tight.iterations, loose.iterations);
    assert_eq!(tight.x.read().unwrap(), loose.x.read().unwrap());
}

#[test]
fn scipy_exit_cases_zero_rhs_exact_start_maxiter_and_atol() {
    let gpu = gpu();
    let n = 15 * 15;
    let op = Poisson::new_2d(15, 15).unwrap();
    let b64 = round_f32(&uniform(n, 11, -1.0, 1.0));
    let b = GpuVec::upload(gpu, &as_f32(&b64)).unwrap();
    // b = 0: x = 0 after 0 iterations, converged (scipy returns b itself).
    let zero = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let r = cg(gpu, &op, &zero, None, &CgOptions::default()).unwrap();
    assert_eq!((r.iterations, r.converged), (0, true));
    assert!(r.x.read().unwrap().iter().all(|&v| v == 0.0));
    // ... whatever x0 was: scipy returns b itself.
    let ones = GpuVec::upload(gpu, &vec![1.0f32; n]).unwrap();
    let r = cg(gpu, &op, &zero, Some(ones.view()), &CgOptions::default()).unwrap();
    assert_eq!((r.iterations, r.converged, r.residual), (0, true, 0.0));
    assert!(r.x.read().unwrap().iter().all(|&v| v == 0.0));
    // maxiter exhausted: not converged, exactly maxiter iterations, as scipy's info = maxiter.
    let r = cg(
        gpu,
        &op,
        &b,
        None,
        &CgOptions {
            maxiter: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((r.iterations, r.converged), (7, false));
    let want = reference::cg(
        |x, y| reference::poisson2d_apply(15, 15, x, y),
        &b64,
        None,
        1e-5,
        0.0,
        7,
        None,
    );
    assert_close(
        "x after 7 iterations",
        &r.x.read().unwrap(),
        &want.x,
        64.0 * EPS32 * crate::common::max_abs(&want.x),
        0.0,
    );
    // Starting from the f64 solution: converged at once, 0 iterations.
    let exact = reference::cg(
        |x, y| reference::poisson2d_apply(15, 15, x, y),
        &b64,
        None,
        1e-12,
        0.0,
        10 * n,
        None,
    );
    let x0 = GpuVec::upload(gpu, &as_f32(&exact.x)).unwrap();
    let r = cg(gpu, &op, &b, Some(x0.view()), &CgOptions::default()).unwrap();
    assert_eq!((r.iterations, r.converged), (0, true));
    // atol dominates rtol·‖b‖: stops earlier, at the same iteration as the f64 run.
    let atol = 1e-2;
    let want = reference::cg(
        |x, y| reference::poisson2d_apply(15, 15, x, y),
        &b64,
        None,
        0.0,
        atol,
        10 * n,
        None,
    );
    let r = cg(
        gpu,
        &op,
        &b,
        None,
        &CgOptions {
            rtol: 0.0,
            atol: atol as f32,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.converged && r.residual < atol as f32);
    assert!(
        r.iterations.abs_diff(want.iterations) <= 2,
        "{} vs {}",
        r.iterations,
        want.iterations
    );
}

// ---- a residual of exactly 0 -----------------------------------------------------------------

#[test]
fn a_zero_residual_with_rtol_and_atol_0_is_convergence_not_breakdown() {
    // rtol = atol = 0: the strict test ‖r‖ < 0 never passes, and r = 0 is the exact solution,
    // not a breakdown (the next iteration would meet p = 0, pᵀAp = 0). On A = 2I with integer
    // b every sum is exact: α = rᵀr/(2rᵀr) = 1/2 (Jacobi: z = r/2, α = 1), x = b/2, r = 0
    // after one iteration.
    let gpu = gpu();
    let n = 37;
    let two_i: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { 2.0 } else { 0.0 })
        .collect();
    let op = DenseMatrix::new(gpu, n, n, &two_i).unwrap();
    let b64 = integers(n, 500);
    assert!(b64.iter().any(|&v| v != 0.0));
    let b = GpuVec::upload(gpu, &as_f32(&b64)).unwrap();
    let half: Vec<f32> = b64.iter().map(|&v| (v / 2.0) as f32).collect();
    for (name, preconditioner) in [
        ("plain", Preconditioner::None),
        ("Jacobi", Preconditioner::Jacobi),
    ] {
        for check_every in [1, 16] {
            let options = CgOptions {
                rtol: 0.0,
                atol: 0.0,
                check_every,
                history: true,
                preconditioner,
                ..Default::default()
            };
            let r = cg(gpu, &op, &b, None, &options)
                .unwrap_or_else(|e| panic!("{name}, check_every {check_every}: {e}"));
            assert_eq!(
                (r.iterations, r.converged, r.residual),
                (1, true, 0.0),
                "{name}, check_every {check_every}"
            );
            assert_eq!(r.x.read().unwrap(), half, "{name}");
            assert_eq!(r.history.unwrap().last(), Some(&0.0));
        }
    }
    // Beside a system that does not converge: each keeps its own flags.
    let poisson = Poisson::new_2d(37, 1).unwrap();
    let mut a_b = vec![0.0; n];
    reference::poisson2d_apply(37, 1, &b64, &mut a_b);
    // A·b is exact in f32, so from x0 = b the system A·x = A·b starts at r₀ = 0.
    let b_prime = GpuVec::upload(gpu, &as_f32(&a_b)).unwrap();
    let options = CgOptions {
        rtol: 0.0,
        atol: 0.0,
        maxiter: Some(5),
        ..Default::default()
    };
    let (results, _) = cg_batched(
        gpu,
        &poisson,
        &[b_prime.view(), b.view()],
        Some(&[b.view(), GpuVec::<f32>::zeros(gpu, n).unwrap().view()]),
        &options,
    )
    .unwrap();
    assert_eq!(
        (
            results[0].iterations,
            results[0].converged,
            results[0].residual
        ),
        (0, true, 0.0)
    );
    assert_eq!(results[0].x.read().unwrap(), as_f32(&b64));
    assert_eq!((results[1].iterations, results[1].converged), (5, false));
}

#[test]
fn an_exact_start_with_rtol_and_atol_0_converges_at_once_through_the_fused_stencil() {
    // Poisson 64² (nx a multiple of 4: the fused direction and pᵀAp forms) with integer x0 and
    // b = A·x0 exact in f32: r₀ = b − A·x0 = 0 exactly, which is convergence before the first
    // iteration whatever the tolerance.
    let gpu = gpu();
    let (nx, ny) = (64, 64);
    let x0 = integers(nx * ny, 510);
    let mut b = vec![0.0; nx * ny];
    reference::poisson2d_apply(nx, ny, &x0, &mut b);
    let op = Poisson::new_2d(nx, ny).unwrap();
    let (bv, x0v) = (
        GpuVec::upload(gpu, &as_f32(&b)).unwrap(),
        GpuVec::upload(gpu, &as_f32(&x0)).unwrap(),
    );
    let options = CgOptions {
        rtol: 0.0,
        atol: 0.0,
        ..Default::default()
    };
    let r = cg(gpu, &op, &bv, Some(x0v.view()), &options).unwrap();
    assert_eq!((r.iterations, r.converged, r.residual), (0, true, 0.0));
    assert_eq!(r.x.read().unwrap(), as_f32(&x0));
}

// ---- views in one buffer ---------------------------------------------------------------------

const PACKED: Case = Case {
    name: "2-D 64², b and x0 in one buffer",
    grid: (64, 64, 1),
    rtol: 1e-5,
    norm_a: 8.0,
};

#[test]
fn b_and_x0_in_one_buffer_solve_as_in_separate_buffers() {
    // b and x0 are only read (copied into the solver's vectors), so they may share a buffer at
    // aligned offsets, in either order: the same f64 comparison as the 64² case, and the same
    // bits as from separate buffers.
    let gpu = gpu();
    let (nx, ny, _) = PACKED.grid;
    let n = nx * ny;
    let b = round_f32(&uniform(n, 42, -1.0, 1.0));
    let x0 = round_f32(&uniform(n, 43, -0.5, 0.5));
    let op = Poisson::new_2d(nx, ny).unwrap();
    let options = CgOptions {
        rtol: PACKED.rtol,
        history: true,
        ..Default::default()
    };
    let separate = cg(
        gpu,
        &op,
        &GpuVec::upload(gpu, &as_f32(&b)).unwrap(),
        Some(GpuVec::upload(gpu, &as_f32(&x0)).unwrap().view()),
        &options,
    )
    .unwrap();
    assert_matches_f64_cg(&PACKED, &b, Some(&x0), &separate);
    for b_first in [true, false] {
        let packed = GpuVec::<f32>::packed(gpu, &[n, n]).unwrap();
        let (bv, x0v) = match b_first {
            true => (&packed[0], &packed[1]),
            false => (&packed[1], &packed[0]),
        };
        assert_eq!(bv.buffer(), x0v.buffer());
        bv.write(&as_f32(&b)).unwrap();
        x0v.write(&as_f32(&x0)).unwrap();
        let got = cg(gpu, &op, bv, Some(x0v.view()), &options).unwrap();
        assert_matches_f64_cg(&PACKED, &b, Some(&x0), &got);
        assert_eq!(got.iterations, separate.iterations);
        assert_eq!(got.x.read().unwrap(), separate.x.read().unwrap());
        assert_eq!(bv.read().unwrap(), as_f32(&b), "b is left as it was");
        assert_eq!(x0v.read().unwrap(), as_f32(&x0), "x0 is left as it was");
    }
}

#[test]
fn batched_right_hand_sides_and_starts_in_one_buffer_equal_separate_solves() {
    // Three systems' b and x0 interleaved in one buffer; the third starts from its own b (x0
    // and b the same view: both are only read).
    let gpu = gpu();
    let op = Poisson::new_2d(37, 23).unwrap();
    let n = 37 * 23;
    let data: Vec<Vec<f32>> = (0..5)
        .map(|k| as_f32(&uniform(n, 100 + k, -1.0, 1.0)))
        .collect();
    let packed = GpuVec::<f32>::packed(gpu, &[n; 5]).unwrap();
    for (v, d) in packed.iter().zip(&data) {
        v.write(d).unwrap();
    }
    let bs = [packed[0].view(), packed[2].view(), packed[4].view()];
    let x0s = [packed[1].view(), packed[3].view(), packed[4].view()];
    let (batched, _) = cg_batched(gpu, &op, &bs, Some(&x0s), &CgOptions::default()).unwrap();
    for k in 0..3 {
        let (b, x0) = match k {
            2 => (&data[4], &data[4]),
            _ => (&data[2 * k], &data[2 * k + 1]),
        };
        let single = cg(
            gpu,
            &op,
            &GpuVec::upload(gpu, b).unwrap(),
            Some(GpuVec::upload(gpu, x0).unwrap().view()),
            &CgOptions::default(),
        )
        .unwrap();
        assert!(single.converged && batched[k].converged, "system {k}");
        assert_eq!(batched[k].iterations, single.iterations, "system {k}");
        assert_eq!(
            batched[k].x.read().unwrap(),
            single.x.read().unwrap(),
            "system {k}"
        );
    }
    for (v, d) in packed.iter().zip(&data) {
        assert_eq!(&v.read().unwrap(), d, "inputs are left as they were");
    }
}

/// ‖x − x₆₄‖/‖x₆₄‖.
fn relative_error(x: &[f32], want: &[f64]) -> f64 {
    let num: f64 = x
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

/// The bench's graph Laplacian (L + 0.01·I, ring plus two random edges a node) on an odd size,
/// so CSR's fused dot leaves the last n % 4 products to the update: unpreconditioned in four
/// dispatches an iteration (CSR has no fused direction), Jacobi in five, both against scipy's
/// recurrence in f64 (iterations ±2, ‖x − x₆₄‖/‖x₆₄‖ ≤ rtol, as the Poisson cases).
#[test]
fn cg_on_a_graph_laplacian_in_csr_fuses_its_dot_and_matches_f64_cg() {
    let gpu = gpu();
    for n in [4001, 4000, 5] {
        let sys = curvgpu::bench::solvers::graph_laplacian(n, 2, 0.01, 1);
        let values = round_f32(&sys.values);
        let a = curvgpu::krylov::CsrMatrix::new(
            gpu,
            n,
            n,
            &sys.row_ptr,
            &sys.col_idx,
            &as_f32(&values),
        )
        .unwrap();
        let apply = |x: &[f64], y: &mut [f64]| {
            reference::csr_apply(&sys.row_ptr, &sys.col_idx, &values, x, y)
        };
        let diag: Vec<f64> = (0..n)
            .map(|r| {
                let k = (sys.row_ptr[r]..sys.row_ptr[r + 1])
                    .find(|&k| sys.col_idx[k as usize] as usize == r)
                    .unwrap();
                values[k as usize]
            })
            .collect();
        let b = round_f32(&uniform(n, 5, -1.0, 1.0));
        let b_gpu = GpuVec::upload(gpu, &as_f32(&b)).unwrap();
        for (name, pre, jacobi, dispatches) in [
            ("plain", Preconditioner::None, None, 4),
            ("Jacobi", Preconditioner::Jacobi, Some(&diag[..]), 5),
        ] {
            let options = CgOptions {
                preconditioner: pre,
                ..Default::default()
            };
            let (mut got, stats) = cg_batched(gpu, &a, &[b_gpu.view()], None, &options).unwrap();
            let got = got.pop().unwrap();
            let want = reference::cg(apply, &b, None, 1e-5, 0.0, 10 * n, jacobi);
            let err = relative_error(&got.x.read().unwrap(), &want.x);
            eprintln!(
                "graph Laplacian n = {n}, {name}: f32 {} iterations, f64 {}, ‖x − x64‖/‖x64‖ {err:.1e}, {stats:?}",
                got.iterations, want.iterations
            );
            assert_eq!(
                stats.dispatches_per_iteration, dispatches,
                "{name}, n = {n}"
            );
            assert!(got.converged && want.converged, "{name}, n = {n}");
            assert!(
                got.iterations.abs_diff(want.iterations) <= 2,
                "{name}, n = {n}"
            );
            assert!(err <= 1e-5, "{name}, n = {n}: {err:e}");
        }
    }
}

/// What an iteration costs on each kind of operator: the fused forms where an operator has
/// them, and the passes that replace them where it has not.
#[test]
fn dispatches_per_iteration_are_three_with_a_fused_operator_and_four_with_jacobi() {
    let gpu = gpu();
    let b = GpuVec::upload(gpu, &as_f32(&uniform(64, 3, -1.0, 1.0))).unwrap();
    let fused = Poisson::new_2d(8, 8).unwrap();
    let scalar_stencil = Poisson::new_2d(2, 32).unwrap();
    let mut spd = vec![0.0f32; 64 * 64];
    for i in 0..64 {
        spd[i * 64 + i] = 2.0 + i as f32;
    }
    let dense = DenseMatrix::new(gpu, 64, 64, &spd).unwrap();
    let count = |op: &dyn curvgpu::krylov::LinearOperator, pre| {
        let options = CgOptions {
            preconditioner: pre,
            ..Default::default()
        };
        cg_batched(gpu, op, &[b.view()], None, &options)
            .unwrap()
            .1
            .dispatches_per_iteration
    };
    assert_eq!(
        count(&fused, Preconditioner::None),
        3,
        "turn, A·(r + β·p) with pᵀAp, update"
    );
    assert_eq!(
        count(&fused, Preconditioner::Jacobi),
        4,
        "… and z = r/diag with rᵀz"
    );
    // No fused forms: p = r + β·p, y = A·p, the pᵀAp partials on their own.
    assert_eq!(count(&scalar_stencil, Preconditioner::None), 5);
    assert_eq!(count(&dense, Preconditioner::None), 5);
    // CSR fuses the dot only: p = r + β·p, then y = A·p with its partials.
    let mut row_ptr = vec![0u32];
    let mut cols = Vec::new();
    for i in 0..64u32 {
        cols.push(i);
        row_ptr.push(i + 1);
    }
    let csr = curvgpu::krylov::CsrMatrix::new(gpu, 64, 64, &row_ptr, &cols, &[3.0; 64]).unwrap();
    assert_eq!(count(&csr, Preconditioner::None), 4);
}

/// The recordable form: the caller records the start and blocks of iterations into its own
/// recorders, submits them when it likes and reads the status words when it likes. Same
/// passes, same order as `cg`: the same bits, the same count. A block recorded past
/// convergence changes nothing, and restarting gives the same solve again.
#[test]
fn cg_solver_blocks_recorded_by_the_caller_give_cg_bit_for_bit() {
    let gpu = gpu();
    let op = Poisson::new_2d(40, 25).unwrap();
    let n = 1000;
    let b = GpuVec::upload(gpu, &as_f32(&uniform(n, 21, -1.0, 1.0))).unwrap();
    let options = CgOptions::default();
    let want = cg(gpu, &op, &b, None, &options).unwrap();
    let solver = curvgpu::krylov::CgSolver::new(gpu, &op, &[b.view()], None, &options).unwrap();
    assert_eq!(solver.dispatches_per_iteration(), 3);
    for _ in 0..2 {
        let mut rec = curvgpu::Recorder::new(gpu);
        solver.record_start(&mut rec).unwrap();
        rec.submit().unwrap();
        let mut blocks = 0;
        let status = loop {
            let mut rec = curvgpu::Recorder::new(gpu);
            solver.record_iterations(&mut rec, 7).unwrap();
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            rec.encode(&mut encoder);
            gpu.queue().submit([encoder.finish()]);
            blocks += 1;
            let status = pollster::block_on(solver.read_status_async()).unwrap()[0];
            if status.finished() {
                break status;
            }
            assert!(blocks < 100, "{status:?}");
        };
        assert!(status.converged && status.breakdown.is_none() && !status.stopped);
        assert_eq!(status.iterations, want.iterations);
        // A block past convergence is a no-op.
        let mut rec = curvgpu::Recorder::new(gpu);
        solver.record_iterations(&mut rec, 5).unwrap();
        rec.submit().unwrap();
        let after = pollster::block_on(solver.read_status_async()).unwrap()[0];
        assert_eq!(after, status);
        // The solution, copied into a view of the caller's own buffer.
        let arena = GpuVec::<f32>::packed(gpu, &[n, n]).unwrap();
        let mut rec = curvgpu::Recorder::new(gpu);
        solver
            .record_solution(&mut rec, 0, arena[1].view())
            .unwrap();
        rec.submit().unwrap();
        assert_eq!(arena[1].read().unwrap(), want.x.read().unwrap());
        assert_eq!(solver.x(0).unwrap().read().unwrap(), want.x.read().unwrap());
    }
}

#[test]
fn cg_solver_refuses_another_device_and_a_missing_system_and_records_at_most_maxiter() {
    let gpu = gpu();
    let other = curvgpu::Gpu::new().unwrap();
    let op = Poisson::new_2d(8, 8).unwrap();
    let b = GpuVec::upload(gpu, &[1.0f32; 64]).unwrap();
    let solver =
        curvgpu::krylov::CgSolver::new(gpu, &op, &[b.view()], None, &CgOptions::default()).unwrap();
    let mut rec = curvgpu::Recorder::new(&other);
    assert!(matches!(
        solver.record_iterations(&mut rec, 1),
        Err(curvgpu::Error::WrongDevice { argument: "rec" })
    ));
    assert!(matches!(
        solver.x(1),
        Err(curvgpu::Error::BadView {
            argument: "system",
            ..
        })
    ));
    // Blocks past maxiter would be no-ops: a block of any size records at most maxiter.
    let options = CgOptions {
        maxiter: Some(5),
        ..Default::default()
    };
    let solver = curvgpu::krylov::CgSolver::new(gpu, &op, &[b.view()], None, &options).unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    solver.record_iterations(&mut rec, usize::MAX).unwrap();
    assert_eq!(rec.len(), 5 * solver.dispatches_per_iteration() + 1);
}

/// The folds re-reduce the same partials in the same order in every workgroup and every run:
/// a solve repeated gives the same bits (no atomics, no order that depends on scheduling).
#[test]
fn a_solve_run_twice_gives_the_same_bits() {
    let gpu = gpu();
    for op in [
        Poisson::new_2d(64, 33).unwrap(),
        Poisson::new_3d(5, 7, 9).unwrap(),
    ] {
        let n = op.shape().0;
        let b = GpuVec::upload(gpu, &as_f32(&uniform(n, 31, -1.0, 1.0))).unwrap();
        let options = CgOptions {
            history: true,
            ..Default::default()
        };
        let first = cg(gpu, &op, &b, None, &options).unwrap();
        let second = cg(gpu, &op, &b, None, &options).unwrap();
        assert_eq!(first.iterations, second.iterations);
        assert_eq!(first.x.read().unwrap(), second.x.read().unwrap());
        assert_eq!(first.history, second.history);
    }
}
