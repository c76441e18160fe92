//! Every bad input to the Krylov module is reported as the exact `curvgpu::Error` variant
//! naming the argument (or the parameter), never a panic, a wgpu validation abort or a silent
//! NaN; a non-SPD operator is a `Breakdown` naming the iteration where pᵀAp ≤ 0 first
//! happens, as the f64 recurrence finds it.
//!
//! `Shifted`, `BlockDiagonal` and `FnOperator` do not implement `Debug`, so their constructors'
//! results are mapped to the operator's shape before matching.

use crate::common::{
    as_f32, assert_empty, assert_length, assert_overlap, assert_param, gpu, uniform,
};
use curvgpu::krylov::lr::{max_stable_lr_gd, scale_lr, BatchScaling};
use curvgpu::krylov::tridiag::tridiagonal_eigen;
use curvgpu::krylov::{
    cg, cg_batched, hutchinson_trace, lanczos, spectral_density, top_eigenvalues, BlockDiagonal,
    CgOptions, CsrMatrix, DenseMatrix, Direction, FnOperator, LinearOperator, Poisson,
    PowerOptions, Preconditioner, Shifted, SlqOptions, TraceOptions,
};
use curvgpu::reference::krylov as reference;
use curvgpu::{Error, GpuVec, Recorder};
use std::sync::{Arc, Mutex};

/// Shape naming `argument`; returns the message.
#[track_caller]
fn assert_shape<T: std::fmt::Debug>(result: curvgpu::Result<T>, argument: &str) -> String {
    match result {
        Err(Error::Shape {
            argument: a,
            message,
        }) => {
            assert_eq!(a, argument, "{message}");
            message
        }
        other => panic!("expected Shape {{ {argument} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_breakdown<T: std::fmt::Debug>(
    result: curvgpu::Result<T>,
    method: &str,
    iteration: usize,
) {
    match result {
        Err(Error::Breakdown {
            method: m,
            iteration: i,
            message,
        }) => assert_eq!((m, i), (method, iteration), "{message}"),
        other => panic!("expected Breakdown {{ {method} at {iteration} }}, got {other:?}"),
    }
}

fn vector(v: &[f32]) -> GpuVec<f32> {
    GpuVec::upload(gpu(), v).unwrap()
}

fn poisson(n: usize) -> Poisson {
    Poisson::new_2d(n, 1).unwrap()
}

/// An operator that can apply (y = 2x would be its job) but records nothing and has no
/// diagonal: what a user's closure looks like to the checks.
fn no_diagonal(
    n: usize,
) -> FnOperator<
    impl Fn(&mut Recorder, curvgpu::BufView<'_>, curvgpu::BufView<'_>) -> curvgpu::Result<()>,
> {
    FnOperator::new(n, n, |_, _, _| Ok(()))
}

// ---- cg: operator and vectors ----------------------------------------------------------------

#[test]
fn cg_on_a_non_square_operator_is_shape_operator() {
    let op = DenseMatrix::new(gpu(), 3, 5, &[1.0; 15]).unwrap();
    let b = vector(&[1.0; 3]);
    assert_shape(cg(gpu(), &op, &b, None, &CgOptions::default()), "operator");
}

#[test]
fn cg_on_a_0x0_operator_is_empty_operator() {
    let b = vector(&[1.0]);
    assert_empty(
        cg(gpu(), &no_diagonal(0), &b, None, &CgOptions::default()),
        "operator",
    );
}

#[test]
fn cg_with_b_of_the_wrong_length_is_length_mismatch_b() {
    let b = vector(&[1.0; 5]);
    assert_length(
        cg(gpu(), &poisson(4), &b, None, &CgOptions::default()),
        "b",
        4,
        5,
    );
}

#[test]
fn cg_with_x0_of_the_wrong_length_is_length_mismatch_x0() {
    let b = vector(&[1.0; 4]);
    let x0 = vector(&[0.0; 3]);
    assert_length(
        cg(
            gpu(),
            &poisson(4),
            &b,
            Some(x0.view()),
            &CgOptions::default(),
        ),
        "x0",
        4,
        3,
    );
}

#[test]
fn cg_batched_with_fewer_x0_than_b_is_count_mismatch_x0() {
    let (b0, b1, x0) = (vector(&[1.0; 4]), vector(&[2.0; 4]), vector(&[0.0; 4]));
    match cg_batched(
        gpu(),
        &poisson(4),
        &[b0.view(), b1.view()],
        Some(&[x0.view()]),
        &CgOptions::default(),
    ) {
        Err(Error::CountMismatch {
            argument,
            expected,
            actual,
        }) => assert_eq!((argument, expected, actual), ("x0", 2, 1)),
        other => panic!("expected CountMismatch {{ x0: 1 for 2 }}, got {other:?}"),
    }
}

#[test]
fn cg_batched_with_no_right_hand_side_is_empty_b() {
    assert_empty(
        cg_batched(gpu(), &poisson(4), &[], None, &CgOptions::default()),
        "b",
    );
}

#[test]
fn cg_with_non_finite_b_is_non_finite_b_at_the_first_bad_index() {
    let n = 1000;
    let mut b = vec![1.0f32; n];
    b[700] = f32::INFINITY;
    b[300] = f32::NAN;
    b[301] = f32::NEG_INFINITY;
    match cg(gpu(), &poisson(n), &vector(&b), None, &CgOptions::default()) {
        Err(Error::NonFinite {
            argument,
            tensor,
            index,
        }) => assert_eq!((argument, tensor, index), ("b", 0, 300)),
        other => panic!("expected NonFinite {{ b, 0, 300 }}, got {other:?}"),
    }
}

#[test]
fn cg_with_a_preconditioner_of_another_shape_is_shape_preconditioner() {
    let m = poisson(5);
    let options = CgOptions {
        preconditioner: Preconditioner::Operator(&m),
        ..Default::default()
    };
    let b = vector(&[1.0; 4]);
    assert_shape(cg(gpu(), &poisson(4), &b, None, &options), "preconditioner");
}

// ---- cg: options -------------------------------------------------------------------------------

fn cg_with(options: CgOptions) -> curvgpu::Result<curvgpu::krylov::CgResult> {
    let b = vector(&[1.0; 4]);
    cg(gpu(), &poisson(4), &b, None, &options)
}

#[test]
fn cg_with_maxiter_0_is_invalid_maxiter() {
    let options = CgOptions {
        maxiter: Some(0),
        ..Default::default()
    };
    assert_param(cg_with(options), "maxiter", 0.0);
}

#[test]
fn cg_with_check_every_0_is_invalid_check_every() {
    let options = CgOptions {
        check_every: 0,
        ..Default::default()
    };
    assert_param(cg_with(options), "check_every", 0.0);
}

#[test]
fn cg_with_negative_or_non_finite_rtol_is_invalid_rtol() {
    for rtol in [-1e-5f32, f32::NAN, f32::INFINITY] {
        let options = CgOptions {
            rtol,
            ..Default::default()
        };
        assert_param(cg_with(options), "rtol", rtol as f64);
    }
}

#[test]
fn cg_with_nan_or_negative_atol_is_invalid_atol() {
    for atol in [f32::NAN, -1.0, f32::INFINITY] {
        let options = CgOptions {
            atol,
            ..Default::default()
        };
        assert_param(cg_with(options), "atol", atol as f64);
    }
}

// ---- cg: operators that are not SPD ------------------------------------------------------------

#[test]
fn cg_on_diag_1_minus_1_breaks_down_at_iteration_0() {
    let op = DenseMatrix::new(gpu(), 2, 2, &[1.0, 0.0, 0.0, -1.0]).unwrap();
    // b = (1, 1): pᵀAp = 1 − 1 = 0; b = (1, 2): 1 − 4 = −3. Both are ≤ 0 at once.
    for b in [[1.0, 1.0], [1.0, 2.0]] {
        let b = vector(&b);
        assert_breakdown(cg(gpu(), &op, &b, None, &CgOptions::default()), "cg", 0);
    }
}

/// pᵀAp/pᵀp of each iteration of scipy's recurrence in f64 (as `reference::krylov::cg` runs
/// it, without a preconditioner), up to and including the first that is ≤ 0; `None` if the
/// residual test passes first.
fn f64_curvatures(n: usize, a: &[f64], b: &[f64], rtol: f64) -> Option<Vec<f64>> {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>();
    let tol = rtol * dot(b, b).sqrt();
    let (mut x, mut r, mut p, mut q) = (vec![0.0; n], b.to_vec(), vec![0.0; n], vec![0.0; n]);
    let mut rho_prev = 0.0;
    let mut curvatures = Vec::new();
    for iteration in 0..10 * n {
        if dot(&r, &r).sqrt() < tol {
            return None;
        }
        let rho = dot(&r, &r);
        let beta = if iteration == 0 { 0.0 } else { rho / rho_prev };
        p.iter_mut().zip(&r).for_each(|(p, r)| *p = r + beta * *p);
        reference::dense_apply(n, n, a, &p, &mut q);
        let pq = dot(&p, &q);
        curvatures.push(pq / dot(&p, &p));
        if pq <= 0.0 {
            return Some(curvatures);
        }
        let alpha = rho / pq;
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += alpha * p);
        r.iter_mut().zip(&q).for_each(|(r, q)| *r -= alpha * q);
        rho_prev = rho;
    }
    None
}

#[test]
fn cg_on_a_symmetric_matrix_with_a_negative_eigenvalue_breaks_down_where_f64_cg_does() {
    // Q·diag(−1, 1, 2, 3, 4, 5)·Qᵀ. The fixture is the first seed whose f64 recurrence meets
    // pᵀAp ≤ 0 only at iteration ≥ 2, with every curvature pᵀAp/pᵀp at least 0.05 away from
    // 0 (‖A‖ = 5), so f32 rounding (~10⁻⁶ relative) cannot move the iteration.
    let n = 6;
    let eigenvalues = [-1.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let rtol = 1e-5;
    let (a, b, k) = (0..200u64)
        .find_map(|seed| {
            let a: Vec<f64> = reference::random_spd(n, &eigenvalues, seed)
                .iter()
                .map(|&v| v as f32 as f64)
                .collect();
            let b: Vec<f64> = uniform(n, seed, 0.5, 1.5)
                .iter()
                .map(|&v| v as f32 as f64)
                .collect();
            let c = f64_curvatures(n, &a, &b, rtol)?;
            let k = c.len() - 1;
            (k >= 2 && c.iter().all(|v| v.abs() >= 0.05)).then_some((a, b, k))
        })
        .expect("a seed in 0..200 breaks down at iteration ≥ 2 with margin");
    eprintln!("f64 CG: pᵀAp ≤ 0 first at iteration {k}");
    let op = DenseMatrix::new(gpu(), n, n, &as_f32(&a)).unwrap();
    let b = vector(&as_f32(&b));
    let options = CgOptions {
        rtol: rtol as f32,
        ..Default::default()
    };
    assert_breakdown(cg(gpu(), &op, &b, None, &options), "cg", k);
    // Batched beside another right-hand side, checking after every iteration: the first
    // system's breakdown is reported, at the same iteration.
    let options = CgOptions {
        check_every: 1,
        ..options
    };
    let other = vector(&[1.0; 6]);
    assert_breakdown(
        cg_batched(gpu(), &op, &[b.view(), other.view()], None, &options),
        "cg",
        k,
    );
}

#[test]
fn jacobi_with_a_non_positive_diagonal_entry_is_breakdown() {
    let gpu = gpu();
    let b = vector(&[1.0; 4]);
    let options = CgOptions {
        preconditioner: Preconditioner::Jacobi,
        ..Default::default()
    };
    // diag = (2, 2, −1, 2).
    let dense = DenseMatrix::new(
        gpu,
        4,
        4,
        &[
            2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 2.0,
        ],
    )
    .unwrap();
    assert_breakdown(cg(gpu, &dense, &b, None, &options), "cg", 0);
    // The 5-point stencil on a 4×1 grid has diag 4: minus 4·I has diag 0.
    let p = poisson(4);
    let zero_diagonal = Shifted::new(&p, -4.0).unwrap();
    assert_breakdown(cg(gpu, &zero_diagonal, &b, None, &options), "cg", 0);
    // A CSR row without its diagonal entry has diag 0.
    let csr = CsrMatrix::new(gpu, 4, 4, &[0, 1, 2, 2, 3], &[0, 1, 3], &[1.0, 1.0, 1.0]).unwrap();
    assert_breakdown(cg(gpu, &csr, &b, None, &options), "cg", 0);
}

#[test]
fn fused_direction_with_a_wrong_length_or_beta_past_the_scalars_is_refused() {
    let gpu = gpu();
    let op = Poisson::new_2d(4, 2).unwrap();
    let v = GpuVec::<f32>::zeros(gpu, 8).unwrap();
    let short = GpuVec::<f32>::zeros(gpu, 7).unwrap();
    let scalars = GpuVec::<f32>::zeros(gpu, 3).unwrap();
    let partials = GpuVec::<f32>::zeros(gpu, 4).unwrap();
    let mut rec = Recorder::new(gpu);
    let mut direction = Direction {
        x: v.view(),
        d: short.view(),
        scalars: scalars.view(),
        beta_index: 0,
    };
    assert_length(
        op.record_direction_apply_dot(&mut rec, &direction, v.view(), partials.view()),
        "d",
        8,
        7,
    );
    direction.d = v.view();
    direction.beta_index = 3;
    assert_shape(
        op.record_direction_apply_dot(&mut rec, &direction, v.view(), partials.view()),
        "beta_index",
    );
    assert!(rec.is_empty());
}

#[test]
fn jacobi_on_an_operator_without_a_diagonal_is_shape_preconditioner() {
    let b = vector(&[1.0; 4]);
    let options = CgOptions {
        preconditioner: Preconditioner::Jacobi,
        ..Default::default()
    };
    let user = no_diagonal(4);
    assert_shape(cg(gpu(), &user, &b, None, &options), "preconditioner");
    // Nor through a composition that holds it.
    let p = poisson(2);
    let user2 = no_diagonal(2);
    let blocks = BlockDiagonal::new(gpu(), vec![&p, &user2]).unwrap();
    assert_shape(cg(gpu(), &blocks, &b, None, &options), "preconditioner");
    let shifted = Shifted::new(&user, 1.0).unwrap();
    assert_shape(cg(gpu(), &shifted, &b, None, &options), "preconditioner");
}

// ---- CSR ---------------------------------------------------------------------------------------

/// A valid 3×4 CSR matrix: rows {0, 2}, {}, {1, 3}.
const ROW_PTR: [u32; 4] = [0, 2, 2, 4];
const COL_IDX: [u32; 4] = [0, 2, 1, 3];
const VALUES: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

fn csr(row_ptr: &[u32], col_idx: &[u32], values: &[f32]) -> curvgpu::Result<CsrMatrix> {
    CsrMatrix::new(gpu(), 3, 4, row_ptr, col_idx, values)
}

#[test]
fn csr_fixture_is_valid() {
    let m = csr(&ROW_PTR, &COL_IDX, &VALUES).unwrap();
    assert_eq!(m.shape(), (3, 4));
}

#[test]
fn csr_with_row_ptr_of_the_wrong_length_is_length_mismatch_row_ptr() {
    assert_length(csr(&[0, 2, 4], &COL_IDX, &VALUES), "row_ptr", 4, 3);
    assert_length(csr(&[0, 2, 2, 4, 4], &COL_IDX, &VALUES), "row_ptr", 4, 5);
}

#[test]
fn csr_with_fewer_values_than_columns_is_length_mismatch_values() {
    assert_length(csr(&ROW_PTR, &COL_IDX, &VALUES[..3]), "values", 4, 3);
}

#[test]
fn csr_with_0_rows_or_columns_is_empty_csr() {
    assert_empty(CsrMatrix::new(gpu(), 0, 4, &[0], &[], &[]), "csr");
    assert_empty(CsrMatrix::new(gpu(), 3, 0, &[0, 0, 0, 0], &[], &[]), "csr");
}

#[test]
fn csr_with_decreasing_row_ptr_is_shape_csr() {
    // Rows 0..3, 3..2, 2..4: the middle row runs backwards.
    let message = assert_shape(csr(&[0, 3, 2, 4], &[0, 1, 2, 3], &VALUES), "csr");
    assert!(message.contains("row 1"), "{message}");
}

#[test]
fn csr_with_row_ptr_not_starting_at_0_or_not_ending_at_nnz_is_shape_csr() {
    assert_shape(csr(&[1, 2, 2, 4], &COL_IDX, &VALUES), "csr");
    assert_shape(csr(&[0, 2, 2, 3], &COL_IDX, &VALUES), "csr");
    assert_shape(csr(&[0, 2, 2, 5], &COL_IDX, &VALUES), "csr");
}

#[test]
fn csr_with_a_middle_row_ptr_entry_past_nnz_is_shape_csr() {
    // row_ptr = [0, 5, 5, 4]: starts at 0, ends at nnz = 4, but row 0 claims 0..5.
    assert_shape(csr(&[0, 5, 5, 4], &COL_IDX, &VALUES), "csr");
}

#[test]
fn csr_with_a_column_out_of_range_is_shape_csr() {
    let message = assert_shape(csr(&ROW_PTR, &[0, 2, 1, 4], &VALUES), "csr");
    assert!(message.contains("row 2"), "{message}");
}

#[test]
fn csr_with_unsorted_or_duplicate_columns_is_shape_csr() {
    assert_shape(csr(&ROW_PTR, &[2, 0, 1, 3], &VALUES), "csr");
    assert_shape(csr(&ROW_PTR, &[0, 2, 3, 3], &VALUES), "csr");
}

#[test]
fn csr_with_a_nan_or_infinite_value_is_non_finite_values() {
    for (bad, index) in [(f32::NAN, 2), (f32::INFINITY, 3)] {
        let mut values = VALUES;
        values[index] = bad;
        match csr(&ROW_PTR, &COL_IDX, &values) {
            Err(Error::NonFinite {
                argument,
                tensor,
                index: i,
            }) => assert_eq!((argument, tensor, i), ("values", 0, index)),
            other => panic!("expected NonFinite {{ values, {index} }}, got {other:?}"),
        }
    }
}

// ---- dense and the other operators --------------------------------------------------------------

#[test]
fn dense_matrix_with_data_of_the_wrong_length_is_length_mismatch_data() {
    assert_length(DenseMatrix::new(gpu(), 2, 3, &[1.0; 5]), "data", 6, 5);
    assert_length(DenseMatrix::new(gpu(), 2, 3, &[1.0; 7]), "data", 6, 7);
}

#[test]
fn dense_matrix_with_0_rows_or_columns_is_empty_data() {
    assert_empty(DenseMatrix::new(gpu(), 0, 3, &[]), "data");
    assert_empty(DenseMatrix::new(gpu(), 3, 0, &[]), "data");
}

#[test]
fn dense_matrix_whose_size_overflows_is_shape_data() {
    assert_shape(DenseMatrix::new(gpu(), usize::MAX, 2, &[1.0]), "data");
}

#[test]
fn operator_apply_with_x_or_y_of_the_wrong_length_is_length_mismatch() {
    let op = DenseMatrix::new(gpu(), 2, 3, &[1.0; 6]).unwrap();
    let (v2, v3) = (vector(&[1.0; 2]), vector(&[1.0; 3]));
    let mut rec = Recorder::new(gpu());
    assert_length(op.record_apply(&mut rec, v2.view(), v2.view()), "x", 3, 2);
    assert_length(op.record_apply(&mut rec, v3.view(), v3.view()), "y", 2, 3);
    let p = poisson(3);
    assert_length(p.record_apply(&mut rec, v2.view(), v3.view()), "x", 3, 2);
    assert_length(p.record_diagonal(&mut rec, v2.view()), "d", 3, 2);
    let user = no_diagonal(3);
    assert_length(user.record_apply(&mut rec, v3.view(), v2.view()), "y", 3, 2);
    assert!(rec.is_empty(), "nothing recorded by a refused call");
}

#[test]
fn poisson_with_an_empty_or_oversized_grid_is_shape_grid() {
    assert_shape(Poisson::new_2d(0, 5), "grid");
    assert_shape(Poisson::new_2d(5, 0), "grid");
    assert_shape(Poisson::new_3d(4, 4, 0), "grid");
    assert_shape(Poisson::new_3d(65_536, 65_536, 1), "grid");
    assert_shape(Poisson::new_3d(usize::MAX, 2, 1), "grid");
}

#[test]
fn shifted_with_a_non_finite_sigma_is_invalid_sigma() {
    let p = poisson(4);
    for sigma in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_param(
            Shifted::new(&p, sigma).map(|s| s.shape()),
            "sigma",
            sigma as f64,
        );
    }
}

#[test]
fn shifted_of_a_non_square_operator_is_shape_operator() {
    let op = DenseMatrix::new(gpu(), 2, 3, &[1.0; 6]).unwrap();
    assert_shape(Shifted::new(&op, 1.0).map(|s| s.shape()), "operator");
}

#[test]
fn block_diagonal_with_no_blocks_is_empty_blocks() {
    assert_empty(
        BlockDiagonal::new(gpu(), vec![]).map(|b| b.shape()),
        "blocks",
    );
}

#[test]
fn block_diagonal_with_a_non_square_block_is_shape_operator() {
    let p = poisson(4);
    let op = DenseMatrix::new(gpu(), 2, 3, &[1.0; 6]).unwrap();
    assert_shape(
        BlockDiagonal::new(gpu(), vec![&p, &op]).map(|b| b.shape()),
        "operator",
    );
}

// ---- spectrum ----------------------------------------------------------------------------------

#[test]
fn top_eigenvalues_with_top_n_0_or_past_n_is_invalid_top_n() {
    for top_n in [0, 5] {
        let options = PowerOptions {
            top_n,
            ..Default::default()
        };
        assert_param(
            top_eigenvalues(gpu(), &poisson(4), &options),
            "top_n",
            top_n as f64,
        );
    }
}

#[test]
fn top_eigenvalues_with_max_iter_0_or_negative_tol_is_invalid() {
    let options = PowerOptions {
        max_iter: 0,
        ..Default::default()
    };
    assert_param(
        top_eigenvalues(gpu(), &poisson(4), &options),
        "max_iter",
        0.0,
    );
    let options = PowerOptions {
        tol: -1.0,
        ..Default::default()
    };
    assert_param(top_eigenvalues(gpu(), &poisson(4), &options), "tol", -1.0);
}

#[test]
fn top_eigenvalues_of_a_non_square_operator_is_shape_operator() {
    let op = DenseMatrix::new(gpu(), 2, 3, &[1.0; 6]).unwrap();
    assert_shape(
        top_eigenvalues(gpu(), &op, &PowerOptions::default()),
        "operator",
    );
}

#[test]
fn lanczos_with_0_steps_or_more_than_n_is_invalid_steps() {
    for steps in [0, 5] {
        assert_param(
            lanczos(gpu(), &poisson(4), steps, 0, 0),
            "steps",
            steps as f64,
        );
    }
}

#[test]
fn hutchinson_trace_with_blocks_not_summing_to_n_is_length_mismatch_blocks() {
    for (blocks, sum) in [(vec![2, 1], 3), (vec![2, 2, 1], 5)] {
        let options = TraceOptions {
            blocks,
            ..Default::default()
        };
        assert_length(
            hutchinson_trace(gpu(), &poisson(4), &options),
            "blocks",
            4,
            sum,
        );
    }
}

#[test]
fn hutchinson_trace_with_an_empty_block_is_empty_blocks() {
    let options = TraceOptions {
        blocks: vec![2, 0, 2],
        ..Default::default()
    };
    assert_empty(hutchinson_trace(gpu(), &poisson(4), &options), "blocks");
}

#[test]
fn spectral_density_with_0_runs_is_invalid_runs() {
    let options = SlqOptions {
        runs: 0,
        ..Default::default()
    };
    assert_param(spectral_density(gpu(), &poisson(4), &options), "runs", 0.0);
}

/// `InvalidParameter { name = 0 }` with the one requirement every iteration limit states.
#[track_caller]
fn assert_limit_0<T: std::fmt::Debug>(result: curvgpu::Result<T>, name: &str) {
    let message = result.as_ref().err().map(|e| e.to_string());
    assert_param(result, name, 0.0);
    assert_eq!(
        message.as_deref(),
        Some(format!("invalid hyper-parameter `{name}` = 0: must be at least 1").as_str())
    );
}

#[test]
fn every_solver_refuses_an_iteration_limit_of_0_the_same_way() {
    let gpu = gpu();
    let op = poisson(4);
    let b = vector(&[1.0; 4]);
    let cg_options = CgOptions {
        maxiter: Some(0),
        ..Default::default()
    };
    assert_limit_0(cg(gpu, &op, &b, None, &cg_options), "maxiter");
    assert_limit_0(
        cg_batched(gpu, &op, &[b.view(), b.view()], None, &cg_options),
        "maxiter",
    );
    let cg_options = CgOptions {
        check_every: 0,
        ..Default::default()
    };
    assert_limit_0(cg(gpu, &op, &b, None, &cg_options), "check_every");
    let power = PowerOptions {
        max_iter: 0,
        ..Default::default()
    };
    assert_limit_0(top_eigenvalues(gpu, &op, &power), "max_iter");
    let trace = TraceOptions {
        max_iter: 0,
        ..Default::default()
    };
    assert_limit_0(hutchinson_trace(gpu, &op, &trace), "max_iter");
    assert_limit_0(lanczos(gpu, &op, 0, 0, 0), "steps");
    for (runs, steps, name) in [(0, 10, "runs"), (1, 0, "steps")] {
        let slq = SlqOptions {
            runs,
            steps,
            ..Default::default()
        };
        assert_limit_0(spectral_density(gpu, &op, &slq), name);
    }
}

// ---- operators: overlapping x and y -------------------------------------------------------------

/// One caller buffer of 2n elements (storage usages) for views that overlap.
fn arena(n: usize) -> wgpu::Buffer {
    gpu().device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("arena"),
        size: 8 * n as u64,
        usage: curvgpu::buffer::STORAGE_USAGES,
        mapped_at_creation: false,
    })
}

#[test]
fn built_in_operators_refuse_an_x_and_y_that_overlap_naming_both() {
    // No operator has an in-place form: y = x (the same view) and y overlapping x by part are
    // refused before anything is recorded, whatever the operator's passes.
    let gpu = gpu();
    let n = 128;
    let buffer = arena(n);
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    assert!(
        align < 4 * n as u64,
        "a partial overlap needs an aligned offset inside x"
    );
    let x = curvgpu::BufView::new(&buffer, 0, n);
    let shifted_y = curvgpu::BufView::new(&buffer, align, n);
    let dense = DenseMatrix::new(gpu, n, n, &[0.5; 128 * 128]).unwrap();
    let row_ptr: Vec<u32> = (0..=n as u32).collect();
    let columns: Vec<u32> = (0..n as u32).collect();
    let csr = CsrMatrix::new(gpu, n, n, &row_ptr, &columns, &[2.0; 128]).unwrap();
    let scalar_stencil = Poisson::new_2d(2, 64).unwrap();
    let vec4_stencil = Poisson::new_2d(4, 32).unwrap();
    let shifted = Shifted::new(&vec4_stencil, 1.0).unwrap();
    let half = Poisson::new_2d(2, 32).unwrap();
    let blocks = BlockDiagonal::new(gpu, vec![&half, &half]).unwrap();
    let user = FnOperator::new(n, n, |_, _, _| -> curvgpu::Result<()> {
        panic!("the closure runs after the checks")
    });
    let ops: [(&str, &dyn LinearOperator); 7] = [
        ("dense", &dense),
        ("csr", &csr),
        ("poisson (scalar)", &scalar_stencil),
        ("poisson (vec4)", &vec4_stencil),
        ("shifted", &shifted),
        ("block diagonal", &blocks),
        ("fn operator", &user),
    ];
    for (name, op) in ops {
        for y in [x, shifted_y] {
            let mut rec = Recorder::new(gpu);
            eprintln!("{name}, y at byte {}", y.byte_offset());
            assert_overlap(op.record_apply(&mut rec, x, y), "x", "y");
            assert!(rec.is_empty(), "{name}: nothing recorded by a refused call");
        }
    }
}

#[test]
fn poisson_fused_forms_refuse_a_y_that_overlaps_an_operand_naming_both() {
    let gpu = gpu();
    let op = Poisson::new_2d(4, 16).unwrap();
    let n = 64;
    let partials = GpuVec::<f32>::zeros(gpu, 1024).unwrap();
    // [x | d | scalars | y], each 256-byte aligned.
    let layout = curvgpu::buffer::Layout::new::<f32>(gpu.limits(), &[n, n, 4, n]).unwrap();
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("fused arena"),
        size: layout.size(),
        usage: curvgpu::buffer::STORAGE_USAGES,
        mapped_at_creation: false,
    });
    let v = layout.views(&buffer);
    let (x, d, scalars, y) = (v[0], v[1], v[2], v[3]);
    let mut rec = Recorder::new(gpu);
    assert_overlap(
        op.record_apply_dot(&mut rec, x, x, partials.view()),
        "x",
        "y",
    );
    let direction = |x, d, scalars| Direction {
        x,
        d,
        scalars,
        beta_index: 0,
    };
    // y is written while d, then the scalars, are read: one dispatch binds both.
    assert_overlap(
        op.record_direction_apply_dot(&mut rec, &direction(x, d, scalars), d, partials.view()),
        "y",
        "d",
    );
    let scalars_in_y = curvgpu::BufView::new(&buffer, y.byte_offset(), 4);
    assert_overlap(
        op.record_direction_apply_dot(&mut rec, &direction(x, d, scalars_in_y), y, partials.view()),
        "y",
        "scalars",
    );
    // x and d are only read, but the buffer they share is written (y): WebGPU refuses two
    // overlapping bindings of such a buffer.
    assert_overlap(
        op.record_direction_apply_dot(&mut rec, &direction(x, x, scalars), y, partials.view()),
        "x",
        "d",
    );
    assert!(rec.is_empty());
}

// ---- errors raised by a user's operator ---------------------------------------------------------

/// A device made the way an engine makes its own (not through curvgpu), whose uncaptured
/// errors are collected instead of reaching wgpu's default handler (which panics). Its own
/// instance, as tests/suite/base/engine.rs's engine: its ids may collide with the shared test
/// device's, which `Gpu::from_device` must tell apart.
fn engine_device() -> (wgpu::Device, wgpu::Queue, Arc<Mutex<Vec<String>>>) {
    let info = gpu().adapter_info().clone();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .find(|a| {
            let i = a.get_info();
            i.name == info.name && i.backend == info.backend
        })
        .expect("the test adapter");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let uncaptured = Arc::new(Mutex::new(Vec::new()));
    let sink = uncaptured.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap().push(e.to_string());
    }));
    (device, queue, uncaptured)
}

/// y = x in the user's own WGSL.
const COPY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&y)) {
        y[gid.x] = x[gid.x];
    }
}
"#;

/// What the user's closure gets wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// A bind group without y's binding: wgpu refuses it when it is created.
    MissingBinding,
    /// More workgroups than the device allows: wgpu refuses the pass when it is encoded.
    OversizedDispatch,
}

#[test]
fn errors_raised_by_a_user_operator_come_back_from_every_solver_as_err() {
    let (device, queue, uncaptured) = engine_device();
    let gpu = curvgpu::Gpu::from_device(device.clone(), queue).unwrap();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("user copy"),
        source: wgpu::ShaderSource::Wgsl(COPY_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("user copy"),
        layout: None,
        module: &module,
        entry_point: Some("copy"),
        compilation_options: Default::default(),
        cache: None,
    });
    let too_many = gpu.limits().max_compute_workgroups_per_dimension + 1;
    let n = 8;
    let identity = |fault: Fault| {
        let (device, pipeline) = (&device, &pipeline);
        FnOperator::new(
            n,
            n,
            move |rec: &mut Recorder, x: curvgpu::BufView<'_>, y: curvgpu::BufView<'_>| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: x.binding_resource(),
                }];
                if fault != Fault::MissingBinding {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 1,
                        resource: y.binding_resource(),
                    });
                }
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("user copy"),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                let groups = match fault {
                    Fault::OversizedDispatch => too_many,
                    _ => 1,
                };
                rec.dispatch_raw(pipeline, &bind_group, [groups, 1, 1]);
                Ok(())
            },
        )
    };
    let b_host: Vec<f32> = (1..=n).map(|i| i as f32).collect();
    let b = GpuVec::upload(&gpu, &b_host).unwrap();
    // The faultless closure solves I·x = b in one iteration.
    let solved = cg(
        &gpu,
        &identity(Fault::None),
        &b,
        None,
        &CgOptions::default(),
    )
    .unwrap();
    assert!(solved.converged);
    assert_eq!(solved.x.read().unwrap(), b_host);
    for fault in [Fault::MissingBinding, Fault::OversizedDispatch] {
        let op = identity(fault);
        let wgpu_error = |what: &str, result: curvgpu::Result<()>| match result {
            Err(Error::Wgpu { operation, message }) => {
                eprintln!("{fault:?}, {what}: wgpu error during {operation}: {message}")
            }
            other => panic!("{fault:?}, {what}: expected Err(Wgpu), got {other:?}"),
        };
        wgpu_error(
            "cg",
            cg(&gpu, &op, &b, None, &CgOptions::default()).map(|_| ()),
        );
        wgpu_error(
            "top_eigenvalues",
            top_eigenvalues(&gpu, &op, &PowerOptions::default()).map(|_| ()),
        );
        wgpu_error(
            "hutchinson_trace",
            hutchinson_trace(&gpu, &op, &TraceOptions::default()).map(|_| ()),
        );
        wgpu_error("lanczos", lanczos(&gpu, &op, 4, 0, 0).map(|_| ()));
        let slq = SlqOptions {
            steps: 4,
            ..Default::default()
        };
        wgpu_error(
            "spectral_density",
            spectral_density(&gpu, &op, &slq).map(|_| ()),
        );
        // Preconditioning with it fails the same way.
        let options = CgOptions {
            preconditioner: Preconditioner::Operator(&op),
            ..Default::default()
        };
        wgpu_error(
            "cg preconditioner",
            cg(&gpu, &identity(Fault::None), &b, None, &options).map(|_| ()),
        );
    }
    gpu.wait().unwrap();
    assert_eq!(
        *uncaptured.lock().unwrap(),
        Vec::<String>::new(),
        "nothing reaches the engine's handler"
    );
    // The device is still usable.
    let again = cg(
        &gpu,
        &identity(Fault::None),
        &b,
        None,
        &CgOptions::default(),
    )
    .unwrap();
    assert_eq!(again.x.read().unwrap(), b_host);
}

// ---- host-side helpers --------------------------------------------------------------------------

#[test]
fn max_stable_lr_gd_of_a_non_positive_or_non_finite_sharpness_is_invalid_lambda_max() {
    for lambda in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_param(max_stable_lr_gd(lambda), "lambda_max", lambda);
    }
}

#[test]
fn scale_lr_with_a_batch_of_0_is_invalid_from_batch_or_to_batch() {
    assert_param(
        scale_lr(0.1, 0, 32, BatchScaling::Linear),
        "from_batch",
        0.0,
    );
    assert_param(
        scale_lr(0.1, 32, 0, BatchScaling::SquareRoot),
        "to_batch",
        0.0,
    );
    assert_param(scale_lr(-0.1, 32, 32, BatchScaling::Linear), "lr", -0.1);
}

#[test]
fn tridiagonal_eigen_of_nothing_is_empty_alpha() {
    assert_empty(tridiagonal_eigen(&[], &[]), "alpha");
}

#[test]
fn tridiagonal_eigen_with_beta_of_the_wrong_length_or_nan_is_named() {
    assert_length(tridiagonal_eigen(&[1.0, 2.0], &[]), "beta", 1, 0);
    assert_length(tridiagonal_eigen(&[1.0, 2.0], &[0.5, 0.5]), "beta", 1, 2);
    assert_param(
        tridiagonal_eigen(&[1.0, f64::NAN], &[0.5]),
        "alpha",
        f64::NAN,
    );
    assert_param(
        tridiagonal_eigen(&[1.0, 2.0], &[f64::INFINITY]),
        "beta",
        f64::INFINITY,
    );
}
