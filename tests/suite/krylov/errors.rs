//! Every bad input to the Krylov module is reported as the exact `curvgpu::Error` variant
//! naming the argument (or the parameter), never a panic, a wgpu validation abort or a silent
//! NaN; a non-SPD operator is a `Breakdown` naming the iteration where pᵀAp ≤ 0 first
//! happens, as the f64 recurrence finds it.
//!
//! `Shifted`, `BlockDiagonal` and `FnOperator` do not implement `Debug`, so their constructors'
//! results are mapped to the operator's shape before matching.


use crate::common::{as_f32, assert_empty, assert_length, assert_param, gpu, uniform};
use curvgpu::krylov::lr::{max_stable_lr_gd, scale_lr, BatchScaling};
use curvgpu::krylov::tridiag::tridiagonal_eigen;
use curvgpu::krylov::{
    cg, cg_batched, hutchinson_trace, lanczos, spectral_density, top_eigenvalues, BlockDiagonal,
    CgOptions, CsrMatrix, DenseMatrix, Direction, FnOperator, LinearOperator, Poisson,
    PowerOptions, Preconditioner, Shifted, SlqOptions, TraceOptions,
};
use curvgpu::reference::krylov as reference;
use curvgpu::{Error, GpuVec, Recorder};

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
    gpu().upload(v).unwrap()
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
fn cg_batched_with_fewer_x0_than_b_is_length_mismatch_x0() {
    let (b0, b1, x0) = (vector(&[1.0; 4]), vector(&[2.0; 4]), vector(&[0.0; 4]));
    assert_length(
        cg_batched(
            gpu(),
            &poisson(4),
            &[b0.view(), b1.view()],
            Some(&[x0.view()]),
            &CgOptions::default(),
        ),
        "x0",
        2,
        1,
    );
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
    let v = gpu.zeros::<f32>(8).unwrap();
    let short = gpu.zeros::<f32>(7).unwrap();
    let scalars = gpu.zeros::<f32>(3).unwrap();
    let partials = gpu.zeros::<f32>(4).unwrap();
    let mut rec = Recorder::new(gpu);
    let mut direction = Direction {
        x: v.view(),
        d: short.view(),
        scalars: scalars.view(),
        beta_index: 0,
    };
    assert_length(
        op.record_direction_apply_dot(&mut rec, &direction, v.view(), &partials),
        "d",
        8,
        7,
    );
    direction.d = v.view();
    direction.beta_index = 3;
    assert_shape(
        op.record_direction_apply_dot(&mut rec, &direction, v.view(), &partials),
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
