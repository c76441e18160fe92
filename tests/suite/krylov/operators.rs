//! Every built-in `LinearOperator` (and a user operator in the test's own WGSL) applies
//! y = A·x as the f64 references in `curvgpu::reference::krylov` do.
//!
//! Tolerances. Inputs are rounded to f32 first, so both sides see the same operands; a product
//! of two f32 values is exact in f64, so the reference's own error is a length-k f64 sum
//! (≤ γᵏ₆₄·Σ|aᵢxᵢ|, added to every bound below for rigour though it is ~10⁻¹³ of it). With
//! u = 2⁻²⁴ and γ_m = m·u/(1 − m·u), a sum in which every term goes through at most m
//! roundings (its product, then the additions on its path) is within γ_m·Σ|aᵢxᵢ| (Higham,
//! Accuracy and Stability, §3.1), whatever FMA contraction the compiler applies:
//! - `dense_matvec`: one workgroup of WG lanes per row; lane ℓ accumulates columns
//!   ℓ, ℓ + WG, … in order, then a tree folds the lanes: m = ⌈cols/WG⌉ + log₂WG.
//! - `csr_matvec`: one invocation walks its row in order: m = nnz of the row (an empty row is 0
//!   exactly).
//! - `poisson2d`: 4x is exact, then up to 4 subtractions: m = 4; `poisson3d`: 6x rounds, then up
//!   to 6 subtractions: m = 7; Σ|terms| = 2c|x| − stencil(|x|).
//! - With integer-valued x in −8..8 (and integer or quarter-integer matrices), every partial
//!   sum is a multiple of 2⁻² below 2¹⁷ in magnitude, exactly representable in f32, so the
//!   result must be bit-exact in any order and with or without FMA: those tests assert equality.
//! - Diagonals are copies (or one addition a + σ, exact against the same f32 addition on the
//!   host): equality.

use crate::common::{
    as_f32, as_f64, both_gpus, gamma, gpu_wide_grid, integers, randoms, read_buffer_words, uniform,
    EPS32,
};
use curvgpu::buffer::{Layout, STORAGE_USAGES};
use curvgpu::krylov::{
    cg, top_eigenvalues, BlockDiagonal, CgOptions, CsrMatrix, DenseMatrix, Direction, FnOperator,
    LinearOperator, Poisson, PowerOptions, Shifted,
};
use curvgpu::reference::krylov as reference;
use curvgpu::{BufView, Gpu, GpuVec, Recorder};
use wgpu::util::DeviceExt;

/// Unit roundoff of f32.
const U32: f64 = EPS32 / 2.0;
/// Unit roundoff of f64.
const U64: f64 = f64::EPSILON / 2.0;

/// γ_m in f64 (the reference's own summation error).
fn gamma64(m: usize) -> f64 {
    m as f64 * U64 / (1.0 - m as f64 * U64)
}

/// Asserts |got_i − want_i| ≤ bound_i everywhere (NaN fails) and returns the worst
/// |err|/bound (elements with bound 0 must be exact and count as 0).
#[track_caller]
fn assert_bounded(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g as f64 - w).abs();
        if err.is_nan() || err > b {
            panic!(
                "{what}: element {i} of {}: got {g}, want {w}, |err| {err:e} > bound {b:e}",
                got.len()
            );
        }
        if b > 0.0 {
            worst = worst.max(err / b);
        }
    }
    eprintln!("{what}: worst |err|/bound = {worst:.3}");
    worst
}

/// Asserts exact equality of f32 results with an f64 reference that is exactly representable
/// in f32 (as values: the sign of a zero is not part of the contract; NaN fails).
#[track_caller]
fn assert_exact(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            w as f32 as f64, w,
            "{what}: reference {i} is not exact in f32"
        );
        assert!(
            g as f64 == w,
            "{what}: element {i} of {}: got {g}, want exactly {w}",
            got.len()
        );
    }
}

fn abs(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.abs()).collect()
}

/// y = A·x on the device, y poisoned with NaN first so that an element never written fails.
fn apply(gpu: &Gpu, op: &dyn LinearOperator, x: &[f64]) -> Vec<f32> {
    let (rows, cols) = op.shape();
    assert_eq!(x.len(), cols);
    let xv = GpuVec::upload(gpu, &as_f32(x)).unwrap();
    let yv = GpuVec::upload(gpu, &vec![f32::NAN; rows]).unwrap();
    let mut rec = Recorder::new(gpu);
    op.record_apply(&mut rec, xv.view(), yv.view()).unwrap();
    rec.submit().unwrap();
    yv.read().unwrap()
}

/// diag(A) on the device (NaN-poisoned first), or `None` when the operator has none.
fn diagonal(gpu: &Gpu, op: &dyn LinearOperator) -> Option<Vec<f32>> {
    let d = GpuVec::upload(gpu, &vec![f32::NAN; op.shape().0]).unwrap();
    let mut rec = Recorder::new(gpu);
    if !op.record_diagonal(&mut rec, d.view()).unwrap() {
        return None;
    }
    rec.submit().unwrap();
    Some(d.read().unwrap())
}

// ---- dense ---------------------------------------------------------------------------------

/// The dense_matvec bound of every row: (γ_m + γᶜᵒˡˢ₆₄)·Σ_j |a_ij x_j|, m = ⌈cols/WG⌉ + log₂WG.
fn dense_bound(gpu: &Gpu, rows: usize, cols: usize, a: &[f64], x: &[f64]) -> Vec<f64> {
    let wg = gpu.tuning().workgroup_size as usize;
    let m = cols.div_ceil(wg) + wg.trailing_zeros() as usize;
    let mut s = vec![0.0; rows];
    reference::dense_apply(rows, cols, &abs(a), &abs(x), &mut s);
    s.iter().map(|s| (gamma(m) + gamma64(cols)) * s).collect()
}

fn check_dense(gpu: &Gpu, name: &str, rows: usize, cols: usize, seed: u64) -> f64 {
    let a = randoms(rows * cols, seed);
    let x = randoms(cols, seed + 1);
    let op = DenseMatrix::new(gpu, rows, cols, &as_f32(&a)).unwrap();
    assert_eq!(op.shape(), (rows, cols));
    let got = apply(gpu, &op, &x);
    let mut want = vec![0.0; rows];
    reference::dense_apply(rows, cols, &a, &x, &mut want);
    let bound = dense_bound(gpu, rows, cols, &a, &x);
    assert_bounded(
        &format!("dense {rows}×{cols} ({name})"),
        &got,
        &want,
        &bound,
    )
}

#[test]
fn dense_matvec_matches_f64_on_1x1_3x5_257x129_and_512x512() {
    for (name, gpu) in both_gpus() {
        for (i, &(rows, cols)) in [(1, 1), (3, 5), (5, 3), (257, 129), (512, 512)]
            .iter()
            .enumerate()
        {
            check_dense(gpu, name, rows, cols, 10 + i as u64);
        }
    }
}

#[test]
fn dense_matvec_with_more_than_65535_rows_folds_the_grid_into_2d() {
    // One workgroup per row: 70,000 rows need a 2-D grid on every device.
    for (name, gpu) in both_gpus() {
        check_dense(gpu, name, 70_000, 3, 20);
    }
}

#[test]
fn dense_matvec_with_integer_data_is_exact() {
    let (rows, cols) = (300, 257);
    let a = integers(rows * cols, 30)
        .iter()
        .map(|v| v / 4.0)
        .collect::<Vec<_>>();
    let x = integers(cols, 31);
    let mut want = vec![0.0; rows];
    reference::dense_apply(rows, cols, &a, &x, &mut want);
    for (name, gpu) in both_gpus() {
        let op = DenseMatrix::new(gpu, rows, cols, &as_f32(&a)).unwrap();
        assert_exact(
            &format!("dense integer ({name})"),
            &apply(gpu, &op, &x),
            &want,
        );
    }
}

#[test]
fn dense_diagonal_copies_a_ii_and_non_square_has_none() {
    let n = 257;
    let a = randoms(n * n, 40);
    let want: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    for (name, gpu) in both_gpus() {
        let op = DenseMatrix::new(gpu, n, n, &as_f32(&a)).unwrap();
        let d = diagonal(gpu, &op).expect("a square dense matrix has a diagonal");
        assert_exact(&format!("dense diagonal ({name})"), &d, &want);
        let wide = DenseMatrix::new(gpu, 3, 5, &[0.5; 15]).unwrap();
        assert!(diagonal(gpu, &wide).is_none(), "3×5 has no diagonal");
    }
}

// ---- CSR -----------------------------------------------------------------------------------

/// A host CSR matrix with f32-exact values.
struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    values: Vec<f64>,
}

impl Csr {
    /// Rows from `pattern(r)` (sorted, distinct columns); values from `value(k)` for entry k.
    fn build(
        rows: usize,
        cols: usize,
        pattern: impl Fn(usize) -> Vec<u32>,
        values: Vec<f64>,
    ) -> Self {
        let mut row_ptr = vec![0u32];
        let mut col_idx = Vec::new();
        for r in 0..rows {
            let mut row = pattern(r);
            row.sort_unstable();
            row.dedup();
            col_idx.extend(row);
            row_ptr.push(col_idx.len() as u32);
        }
        let values = values[..col_idx.len()].to_vec();
        Csr {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        }
    }

    fn upload(&self, gpu: &Gpu) -> CsrMatrix {
        CsrMatrix::new(
            gpu,
            self.rows,
            self.cols,
            &self.row_ptr,
            &self.col_idx,
            &as_f32(&self.values),
        )
        .unwrap()
    }

    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.rows];
        reference::csr_apply(&self.row_ptr, &self.col_idx, &self.values, x, &mut y);
        y
    }

    /// Per row: (γ_nnz + γ64_nnz)·Σ|a_ij x_j|.
    fn bound(&self, x: &[f64]) -> Vec<f64> {
        let mut s = vec![0.0; self.rows];
        reference::csr_apply(
            &self.row_ptr,
            &self.col_idx,
            &abs(&self.values),
            &abs(x),
            &mut s,
        );
        (0..self.rows)
            .map(|r| {
                let k = (self.row_ptr[r + 1] - self.row_ptr[r]) as usize;
                (gamma(k) + gamma64(k)) * s[r]
            })
            .collect()
    }

    /// The stored diagonal entry of each row, 0 where there is none.
    fn diagonal(&self) -> Vec<f64> {
        (0..self.rows)
            .map(|r| {
                let range = self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize;
                self.col_idx[range.clone()]
                    .iter()
                    .zip(&self.values[range])
                    .find(|(&c, _)| c as usize == r)
                    .map_or(0.0, |(_, &v)| v)
            })
            .collect()
    }
}

/// n×n with every kind of row: empty (row 0, the last, and every 5th), one dense row (row 1),
/// one-entry rows on and off the diagonal, and random rows of up to 8 entries that may or may
/// not hold their diagonal.
fn irregular_csr(n: usize, seed: u64, values: Vec<f64>) -> Csr {
    let r01 = uniform(n * 9, seed, 0.0, 1.0);
    Csr::build(
        n,
        n,
        |r| {
            if r == 0 || r + 1 == n {
                return vec![];
            }
            if r == 1 {
                return (0..n as u32).collect();
            }
            match r % 5 {
                0 => vec![],
                1 => vec![r as u32],
                2 => vec![((r * 7 + 3) % n) as u32],
                _ => {
                    let k = (r01[9 * r] * 9.0) as usize;
                    (0..k)
                        .map(|j| (r01[9 * r + 1 + j] * n as f64) as u32)
                        .collect()
                }
            }
        },
        values,
    )
}

fn check_csr(gpu: &Gpu, name: &str, csr: &Csr, x: &[f64]) -> f64 {
    let op = csr.upload(gpu);
    assert_eq!(op.shape(), (csr.rows, csr.cols));
    let got = apply(gpu, &op, x);
    assert_bounded(
        &format!(
            "csr {}×{} nnz {} ({name})",
            csr.rows,
            csr.cols,
            csr.values.len()
        ),
        &got,
        &csr.apply(x),
        &csr.bound(x),
    )
}

#[test]
fn csr_matvec_with_empty_dense_and_one_entry_rows_matches_f64() {
    let n = 1000;
    let csr = irregular_csr(n, 50, randoms(n * 10, 51));
    assert!(
        csr.row_ptr[1] == 0 && csr.row_ptr[2] as usize == n,
        "row 1 dense"
    );
    let x = randoms(n, 52);
    for (name, gpu) in both_gpus() {
        check_csr(gpu, name, &csr, &x);
    }
}

#[test]
fn csr_matvec_with_integer_data_is_exact() {
    let n = 1000;
    let csr = irregular_csr(n, 53, integers(n * 10, 54));
    let x = integers(n, 55);
    for (name, gpu) in both_gpus() {
        let got = apply(gpu, &csr.upload(gpu), &x);
        assert_exact(&format!("csr integer ({name})"), &got, &csr.apply(&x));
    }
}

#[test]
fn csr_1x1_with_and_without_its_entry() {
    for (name, gpu) in both_gpus() {
        let one = Csr::build(1, 1, |_| vec![0], vec![-2.5]);
        let got = apply(gpu, &one.upload(gpu), &[3.0]);
        assert_exact(&format!("csr 1×1 ({name})"), &got, &[-7.5]);
        assert_exact(
            &format!("csr 1×1 diagonal ({name})"),
            &diagonal(gpu, &one.upload(gpu)).unwrap(),
            &[-2.5],
        );
        // nnz = 0: the matrix still binds (a dummy entry) and gives y = 0, diag = 0.
        let empty = CsrMatrix::new(gpu, 1, 1, &[0, 0], &[], &[]).unwrap();
        assert_exact(
            &format!("csr 1×1 empty ({name})"),
            &apply(gpu, &empty, &[3.0]),
            &[0.0],
        );
        assert_exact(
            &format!("csr 1×1 empty diagonal ({name})"),
            &diagonal(gpu, &empty).unwrap(),
            &[0.0],
        );
    }
}

#[test]
fn csr_matvec_with_65537_rows_and_a_dense_last_row_matches_f64() {
    let n = 65_537;
    let r01 = uniform(n * 9, 60, 0.0, 1.0);
    let csr = Csr::build(
        n,
        n,
        |r| {
            if r + 1 == n {
                return (0..n as u32).collect();
            }
            let k = (r01[9 * r] * 9.0) as usize;
            (0..k)
                .map(|j| (r01[9 * r + 1 + j] * n as f64) as u32)
                .collect()
        },
        randoms(n * 10, 61),
    );
    let x = randoms(n, 62);
    for (name, gpu) in both_gpus() {
        check_csr(gpu, name, &csr, &x);
    }
}

#[test]
fn csr_non_square_applies_and_has_no_diagonal() {
    let csr = Csr::build(3, 5, |r| vec![r as u32, 4 - r as u32], randoms(6, 63));
    let x = randoms(5, 64);
    for (name, gpu) in both_gpus() {
        check_csr(gpu, name, &csr, &x);
        assert!(diagonal(gpu, &csr.upload(gpu)).is_none());
    }
}

#[test]
fn csr_diagonal_is_the_stored_entry_or_zero() {
    let n = 1000;
    let csr = irregular_csr(n, 70, randoms(n * 10, 71));
    let want = csr.diagonal();
    assert!(want.contains(&0.0) && want.iter().any(|&v| v != 0.0));
    for (name, gpu) in both_gpus() {
        let d = diagonal(gpu, &csr.upload(gpu)).expect("square CSR has a diagonal");
        assert_exact(&format!("csr diagonal ({name})"), &d, &want);
    }
}

#[test]
fn csr_with_more_rows_than_a_1d_grid_holds_folds_the_grid_into_2d() {
    // Wide grid: 64 rows per workgroup, so 65,535·64 + 1 rows need a second grid dimension.
    let gpu = gpu_wide_grid();
    let wg = gpu.tuning().workgroup_size as usize;
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let n = max * wg + 1;
    let csr = Csr::build(n, n, |r| vec![r as u32], integers(n, 72));
    let x = integers(n, 73);
    let op = csr.upload(gpu);
    assert_exact("csr 2-D grid", &apply(gpu, &op, &x), &csr.apply(&x));
    assert_exact(
        "csr 2-D grid diagonal",
        &diagonal(gpu, &op).unwrap(),
        &csr.diagonal(),
    );
}

// ---- Poisson -------------------------------------------------------------------------------

fn poisson_ref(nx: usize, ny: usize, nz: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    if nz == 1 {
        reference::poisson2d_apply(nx, ny, x, &mut y);
    } else {
        reference::poisson3d_apply(nx, ny, nz, x, &mut y);
    }
    y
}

fn poisson_op(nx: usize, ny: usize, nz: usize) -> Poisson {
    if nz == 1 {
        Poisson::new_2d(nx, ny).unwrap()
    } else {
        Poisson::new_3d(nx, ny, nz).unwrap()
    }
}

const POISSON_GRIDS: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (3, 5, 1),
    (64, 64, 1),
    (1024, 1024, 1),
    (7, 5, 3),
    (64, 64, 64),
];

#[test]
fn poisson_with_integer_x_is_exact() {
    for (g, &(nx, ny, nz)) in POISSON_GRIDS.iter().enumerate() {
        let x = integers(nx * ny * nz, 80 + g as u64);
        let want = poisson_ref(nx, ny, nz, &x);
        for (name, gpu) in both_gpus() {
            let got = apply(gpu, &poisson_op(nx, ny, nz), &x);
            assert_exact(&format!("poisson {nx}×{ny}×{nz} ({name})"), &got, &want);
        }
    }
}

#[test]
fn poisson_with_random_x_matches_f64() {
    for (g, &(nx, ny, nz)) in POISSON_GRIDS.iter().enumerate() {
        let x = randoms(nx * ny * nz, 90 + g as u64);
        let want = poisson_ref(nx, ny, nz, &x);
        // Σ|terms| = c|x| + Σ|neighbours| = 2c|x| − stencil(|x|).
        let (c, m) = if nz == 1 { (4.0, 4) } else { (6.0, 7) };
        let ax = abs(&x);
        let bound: Vec<f64> = poisson_ref(nx, ny, nz, &ax)
            .iter()
            .zip(&ax)
            .map(|(s, a)| (gamma(m) + gamma64(7)) * (2.0 * c * a - s))
            .collect();
        for (name, gpu) in both_gpus() {
            let got = apply(gpu, &poisson_op(nx, ny, nz), &x);
            assert_bounded(
                &format!("poisson {nx}×{ny}×{nz} ({name})"),
                &got,
                &want,
                &bound,
            );
        }
    }
}

/// Values in {−1, 0, 1}.
fn ternary(n: usize, seed: u64) -> Vec<f64> {
    uniform(n, seed, -1.5, 1.5)
        .into_iter()
        .map(f64::round)
        .collect()
}

/// Runs one fused form, y NaN-poisoned first: (y, Σ partials in f64, x and d afterwards).
fn fused(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    x: &[f64],
    direction: Option<(&[f64], f32)>,
) -> (Vec<f32>, f64, Vec<f32>, Vec<f32>) {
    let n = x.len();
    let xv = GpuVec::upload(gpu, &as_f32(x)).unwrap();
    let dv = GpuVec::upload(gpu, &as_f32(direction.map_or(x, |(d, _)| d))).unwrap();
    let scalars = GpuVec::upload(gpu, &[0.0, 7.0, direction.map_or(0.0, |(_, b)| b)]).unwrap();
    let yv = GpuVec::upload(gpu, &vec![f32::NAN; n]).unwrap();
    let partials = GpuVec::upload(gpu, &vec![f32::NAN; 1024]).unwrap();
    let mut rec = Recorder::new(gpu);
    let groups = match direction {
        Some(_) => op.record_direction_apply_dot(
            &mut rec,
            &Direction {
                x: xv.view(),
                d: dv.view(),
                scalars: scalars.view(),
                beta_index: 2,
            },
            yv.view(),
            partials.view(),
        ),
        None => op.record_apply_dot(&mut rec, xv.view(), yv.view(), partials.view()),
    }
    .unwrap()
    .expect("the operator fuses");
    rec.submit().unwrap();
    let sum = partials.read().unwrap()[..groups as usize]
        .iter()
        .map(|&v| v as f64)
        .sum();
    let read = |v: &GpuVec<f32>| v.read().unwrap();
    (read(&yv), sum, read(&xv), read(&dv))
}

/// CG's fusions: y = A·x with Σ partials = xᵀy, and y = A·(x + β·d) with Σ partials =
/// (x + β·d)ᵀy, x and d left untouched. Data in {−1, 0, 1} and β = 2 make every value,
/// product and partial sum an integer below 2²⁴ (|y| ≤ 36, products ≤ 108, at most 65,536
/// terms): exact in any order, so equality.
#[test]
fn poisson_fused_dot_and_direction_forms_are_exact() {
    let grids = [
        (4, 1, 1),
        (8, 3, 1),
        (12, 7, 5),
        (64, 64, 1),
        (256, 256, 1),
        (32, 32, 32),
    ];
    for (g, &(nx, ny, nz)) in grids.iter().enumerate() {
        let n = nx * ny * nz;
        let op = poisson_op(nx, ny, nz);
        let x = ternary(n, 300 + g as u64);
        let d = ternary(n, 400 + g as u64);
        let operand: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + 2.0 * d).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for (name, gpu) in both_gpus() {
            let what = format!("poisson {nx}×{ny}×{nz} ({name})");
            let want = poisson_ref(nx, ny, nz, &x);
            let (y, sum, _, _) = fused(gpu, &op, &x, None);
            assert_exact(&format!("{what} apply_dot y"), &y, &want);
            assert_eq!(sum, dot(&x, &want), "{what}: Σ partials ≠ xᵀAx");

            let want = poisson_ref(nx, ny, nz, &operand);
            let (y, sum, x_after, d_after) = fused(gpu, &op, &x, Some((&d, 2.0)));
            assert_exact(&format!("{what} direction y"), &y, &want);
            assert_eq!(sum, dot(&operand, &want), "{what}: Σ partials ≠ pᵀAp");
            assert_exact(&format!("{what} x untouched"), &x_after, &x);
            assert_exact(&format!("{what} d untouched"), &d_after, &d);
        }
    }
}

/// CSR's fusion: y = A·x and Σ partials = xᵀy over the first 4⌊n/4⌋ rows (the contract leaves
/// the last n % 4 products to the caller), x untouched; no fused direction. Every kind of row
/// (empty, dense, one entry) on sizes 1, 2, 5, 257 and 1023, and rows of up to 8 entries on
/// 65,537 (257 workgroups). Values and x in {−1, 0, 1}: every product and sum an integer below
/// 2²⁴ (the dense row's |y| ≤ n), so exact in any order: equality.
#[test]
fn csr_fused_dot_is_exact_and_leaves_the_tail_to_the_caller() {
    for (case, &n) in [1usize, 2, 5, 257, 1023, 65_537].iter().enumerate() {
        let seed = 700 + 10 * case as u64;
        let csr = match n {
            1 => Csr::build(1, 1, |_| vec![0], vec![-1.0]),
            65_537 => short_rows_csr(n, seed, ternary(n * 9, seed + 1)),
            _ => irregular_csr(n, seed, ternary(n * 10, seed + 1)),
        };
        let x = ternary(n, seed + 2);
        let whole = n / 4 * 4;
        let dot = |a: &[f64], b: &[f64]| a[..whole].iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for (name, gpu) in both_gpus() {
            let what = format!("csr n = {n} ({name})");
            let op = csr.upload(gpu);
            let want = csr.apply(&x);
            let (y, sum, x_after, _) = fused(gpu, &op, &x, None);
            assert_exact(&format!("{what} apply_dot y"), &y, &want);
            assert_eq!(
                sum,
                dot(&x, &want),
                "{what}: Σ partials ≠ xᵀAx over 4⌊n/4⌋ rows"
            );
            assert_exact(&format!("{what} x untouched"), &x_after, &x);
            let v = GpuVec::<f32>::zeros(gpu, n).unwrap();
            let partials = GpuVec::<f32>::zeros(gpu, 8).unwrap();
            let direction = Direction {
                x: v.view(),
                d: v.view(),
                scalars: v.view(),
                beta_index: 0,
            };
            let mut rec = Recorder::new(gpu);
            let y = GpuVec::<f32>::zeros(gpu, n).unwrap();
            assert!(op
                .record_direction_apply_dot(&mut rec, &direction, y.view(), partials.view())
                .unwrap()
                .is_none());
        }
    }
}

/// n×n with rows of 0..8 random entries.
fn short_rows_csr(n: usize, seed: u64, values: Vec<f64>) -> Csr {
    let r01 = uniform(n * 9, seed, 0.0, 1.0);
    Csr::build(
        n,
        n,
        |r| {
            let k = (r01[9 * r] * 9.0) as usize;
            (0..k)
                .map(|j| (r01[9 * r + 1 + j] * n as f64) as u32)
                .collect()
        },
        values,
    )
}

/// A row past `CSR_FUSED_ROW_LIMIT` stored entries applies through the plain pass (llvmpipe
/// loses a workgroup's sum when one invocation loops ~65,535 times before its barrier): the
/// fused forms say None, and CG still solves through the unfused passes.
#[test]
fn csr_with_a_row_past_the_fused_limit_has_no_fused_forms() {
    let gpu = crate::common::gpu();
    let n = curvgpu::krylov::CSR_FUSED_ROW_LIMIT + 1;
    let long = Csr::build(
        n,
        n,
        |r| {
            if r == 0 {
                (0..n as u32).collect()
            } else {
                vec![r as u32]
            }
        },
        vec![1.0; 2 * n],
    );
    let op = long.upload(gpu);
    let v = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let y = GpuVec::<f32>::zeros(gpu, n).unwrap();
    let partials = GpuVec::<f32>::zeros(gpu, 8).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(op
        .record_apply_dot(&mut rec, v.view(), y.view(), partials.view())
        .unwrap()
        .is_none());
    assert!(rec.is_empty());
    let short = Csr::build(
        n - 1,
        n - 1,
        |r| {
            if r == 0 {
                (0..n as u32 - 1).collect()
            } else {
                vec![r as u32]
            }
        },
        vec![1.0; 2 * n],
    );
    let op = short.upload(gpu);
    let v = GpuVec::<f32>::zeros(gpu, n - 1).unwrap();
    let y = GpuVec::<f32>::zeros(gpu, n - 1).unwrap();
    assert!(op
        .record_apply_dot(&mut rec, v.view(), y.view(), partials.view())
        .unwrap()
        .is_some());
}

#[test]
fn csr_that_is_not_square_has_no_fused_forms() {
    let gpu = crate::common::gpu();
    let csr = Csr::build(3, 4, |r| vec![r as u32], vec![1.0; 3]).upload(gpu);
    let (x, y) = (
        GpuVec::<f32>::zeros(gpu, 4).unwrap(),
        GpuVec::<f32>::zeros(gpu, 3).unwrap(),
    );
    let partials = GpuVec::<f32>::zeros(gpu, 8).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(csr
        .record_apply_dot(&mut rec, x.view(), y.view(), partials.view())
        .unwrap()
        .is_none());
    assert!(rec.is_empty());
}

#[test]
fn poisson_with_rows_of_partial_vec4s_has_no_fused_forms() {
    let gpu = crate::common::gpu();
    let op = Poisson::new_2d(3, 5).unwrap();
    let v = GpuVec::<f32>::zeros(gpu, 15).unwrap();
    let partials = GpuVec::<f32>::zeros(gpu, 8).unwrap();
    let mut rec = Recorder::new(gpu);
    let direction = Direction {
        x: v.view(),
        d: v.view(),
        scalars: v.view(),
        beta_index: 0,
    };
    assert!(op
        .record_apply_dot(&mut rec, v.view(), v.view(), partials.view())
        .unwrap()
        .is_none());
    assert!(op
        .record_direction_apply_dot(&mut rec, &direction, v.view(), partials.view())
        .unwrap()
        .is_none());
    assert!(rec.is_empty());
}

#[test]
fn poisson_past_65535_workgroups_folds_the_grid_into_2d() {
    // 2048 × 2049 = 4,196,352 points > 65,535 workgroups × 64 on the wide-grid device.
    let gpu = gpu_wide_grid();
    let (nx, ny) = (2048, 2049);
    assert!(nx * ny > 65_535 * gpu.tuning().workgroup_size as usize);
    let x = integers(nx * ny, 99);
    let got = apply(gpu, &Poisson::new_2d(nx, ny).unwrap(), &x);
    assert_exact(
        "poisson 2048×2049 (wide grid)",
        &got,
        &poisson_ref(nx, ny, 1, &x),
    );
}

#[test]
fn poisson_diagonal_is_4_in_2d_and_6_in_3d() {
    for (name, gpu) in both_gpus() {
        for &(nx, ny, nz) in &POISSON_GRIDS[..5] {
            let c = if nz == 1 { 4.0 } else { 6.0 };
            let d = diagonal(gpu, &poisson_op(nx, ny, nz)).unwrap();
            assert_exact(
                &format!("poisson {nx}×{ny}×{nz} diagonal ({name})"),
                &d,
                &vec![c; nx * ny * nz],
            );
        }
        // new_3d with nz = 1 is the 2-D operator.
        let d = diagonal(gpu, &Poisson::new_3d(3, 5, 1).unwrap()).unwrap();
        assert_exact("poisson 3×5×1 diagonal", &d, &[4.0; 15]);
        assert_eq!(
            Poisson::new_3d(3, 5, 1).unwrap(),
            Poisson::new_2d(3, 5).unwrap()
        );
    }
}

// ---- Shifted -------------------------------------------------------------------------------

#[test]
fn shifted_poisson_with_integer_x_is_exact() {
    let (nx, ny, sigma) = (64, 64, 0.75);
    let x = integers(nx * ny, 100);
    let want: Vec<f64> = poisson_ref(nx, ny, 1, &x)
        .iter()
        .zip(&x)
        .map(|(y, x)| y + sigma * x)
        .collect();
    for (name, gpu) in both_gpus() {
        let inner = Poisson::new_2d(nx, ny).unwrap();
        let op = Shifted::new(&inner, sigma as f32).unwrap();
        assert_eq!(op.shape(), (nx * ny, nx * ny));
        assert_exact(
            &format!("poisson + 0.75 I ({name})"),
            &apply(gpu, &op, &x),
            &want,
        );
    }
}

#[test]
fn shifted_dense_matches_f64() {
    // fl(fl(A·x) + σx): each A-term one rounding more than dense_matvec, σx two.
    let (n, sigma) = (257, -1.3f32);
    let a = randoms(n * n, 110);
    let x = randoms(n, 111);
    let s = sigma as f64;
    let mut want = vec![0.0; n];
    reference::dense_apply(n, n, &a, &x, &mut want);
    want.iter_mut().zip(&x).for_each(|(y, x)| *y += s * x);
    for (name, gpu) in both_gpus() {
        let wg = gpu.tuning().workgroup_size as usize;
        let m = n.div_ceil(wg) + wg.trailing_zeros() as usize + 1;
        let mut sum = vec![0.0; n];
        reference::dense_apply(n, n, &abs(&a), &abs(&x), &mut sum);
        let bound: Vec<f64> = sum
            .iter()
            .zip(&x)
            .map(|(s_ax, x)| (gamma(m) + gamma64(n + 1)) * (s_ax + (s * x).abs()))
            .collect();
        let inner = DenseMatrix::new(gpu, n, n, &as_f32(&a)).unwrap();
        let op = Shifted::new(&inner, sigma).unwrap();
        assert_bounded(
            &format!("dense 257² − 1.3 I ({name})"),
            &apply(gpu, &op, &x),
            &want,
            &bound,
        );
    }
}

#[test]
fn shifted_diagonal_is_the_inner_diagonal_plus_sigma() {
    let n = 129;
    let a = randoms(n * n, 120);
    let sigma = 0.3f32;
    // One f32 addition on each side: bit-exact.
    let want: Vec<f64> = (0..n)
        .map(|i| (a[i * n + i] as f32 + sigma) as f64)
        .collect();
    for (name, gpu) in both_gpus() {
        let inner = DenseMatrix::new(gpu, n, n, &as_f32(&a)).unwrap();
        let d = diagonal(gpu, &Shifted::new(&inner, sigma).unwrap()).unwrap();
        assert_exact(&format!("diag(A + 0.3 I) ({name})"), &d, &want);
        let poisson = Poisson::new_3d(7, 5, 3).unwrap();
        let d = diagonal(gpu, &Shifted::new(&poisson, -6.5).unwrap()).unwrap();
        assert_exact(&format!("diag(P3 − 6.5 I) ({name})"), &d, &[-0.5; 105]);
        // No inner diagonal, none shifted.
        let no_diag = FnOperator::new(4, 4, |_, _, _| Ok(()));
        assert!(diagonal(gpu, &Shifted::new(&no_diag, 1.0).unwrap()).is_none());
    }
}

// ---- BlockDiagonal -------------------------------------------------------------------------

/// Words outside the views: a NaN payload no kernel produces.
const SENTINEL: u32 = 0x7fc0_dead;

/// A caller's buffer holding `data` at the first aligned offset after a sentinel head, followed
/// by a sentinel tail; returns (buffer, byte offset of the data).
fn sentinel_buffer(gpu: &Gpu, data: Option<&[f32]>, len: usize) -> (wgpu::Buffer, u64) {
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize;
    let head = align.max(16) / 4;
    let mut words = vec![SENTINEL; head + len + 16];
    if let Some(data) = data {
        words[head..head + len].copy_from_slice(bytemuck::cast_slice(data));
    }
    let buffer = gpu
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sentinel"),
            contents: bytemuck::cast_slice(&words),
            usage: STORAGE_USAGES,
        });
    (buffer, 4 * head as u64)
}

/// Checks that everything of `buffer` outside `len` elements at `offset` is still sentinel,
/// and returns the elements inside.
#[track_caller]
fn inside_untouched_outside(
    gpu: &Gpu,
    what: &str,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: usize,
) -> Vec<f32> {
    let words = read_buffer_words(gpu, buffer);
    let head = offset as usize / 4;
    for (i, &w) in words.iter().enumerate() {
        if (i < head || i >= head + len) && w != SENTINEL {
            panic!("{what}: word {i} outside the view was overwritten with {w:#x}");
        }
    }
    bytemuck::cast_slice(&words[head..head + len]).to_vec()
}

/// Blocks of 3 (dense), 100 (irregular CSR, some rows without a diagonal) and 1 (Poisson 1×1),
/// starting at elements 0, 3 and 103: the last two are not binding-aligned.
struct Blocks {
    dense: Vec<f64>,
    csr: Csr,
}

impl Blocks {
    fn new() -> Self {
        Blocks {
            dense: integers(9, 130),
            csr: irregular_csr(100, 131, integers(1000, 132)),
        }
    }

    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; 104];
        reference::dense_apply(3, 3, &self.dense, &x[..3], &mut y[..3]);
        y[3..103].copy_from_slice(&self.csr.apply(&x[3..103]));
        reference::poisson2d_apply(1, 1, &x[103..], &mut y[103..]);
        y
    }

    fn diagonal(&self) -> Vec<f64> {
        let mut d = vec![self.dense[0], self.dense[4], self.dense[8]];
        d.extend(self.csr.diagonal());
        d.push(4.0);
        d
    }
}

#[test]
fn block_diagonal_at_unaligned_offsets_applies_each_block_and_touches_nothing_else() {
    let blocks = Blocks::new();
    let x = integers(104, 133);
    let want = blocks.apply(&x);
    for (name, gpu) in both_gpus() {
        let dense = DenseMatrix::new(gpu, 3, 3, &as_f32(&blocks.dense)).unwrap();
        let csr = blocks.csr.upload(gpu);
        let one = Poisson::new_2d(1, 1).unwrap();
        let op = BlockDiagonal::new(gpu, vec![&dense, &csr, &one]).unwrap();
        assert_eq!(op.shape(), (104, 104));
        let x32 = as_f32(&x);
        let (xbuf, xoff) = sentinel_buffer(gpu, Some(&x32), 104);
        let (ybuf, yoff) = sentinel_buffer(gpu, None, 104);
        let x_before = read_buffer_words(gpu, &xbuf);
        let mut rec = Recorder::new(gpu);
        op.record_apply(
            &mut rec,
            BufView::new(&xbuf, xoff, 104),
            BufView::new(&ybuf, yoff, 104),
        )
        .unwrap();
        rec.submit().unwrap();
        let y = inside_untouched_outside(gpu, &format!("block y ({name})"), &ybuf, yoff, 104);
        assert_exact(&format!("block diagonal y ({name})"), &y, &want);
        assert_eq!(
            read_buffer_words(gpu, &xbuf),
            x_before,
            "x ({name}) was modified"
        );
        // Applying twice (scratch reused) gives the same.
        assert_exact(
            &format!("block diagonal again ({name})"),
            &apply(gpu, &op, &x),
            &want,
        );
    }
}

#[test]
fn block_diagonal_diagonal_concatenates_the_blocks_diagonals() {
    let blocks = Blocks::new();
    let want = blocks.diagonal();
    for (name, gpu) in both_gpus() {
        let dense = DenseMatrix::new(gpu, 3, 3, &as_f32(&blocks.dense)).unwrap();
        let csr = blocks.csr.upload(gpu);
        let one = Poisson::new_2d(1, 1).unwrap();
        let op = BlockDiagonal::new(gpu, vec![&dense, &csr, &one]).unwrap();
        let (dbuf, doff) = sentinel_buffer(gpu, None, 104);
        let mut rec = Recorder::new(gpu);
        assert!(op
            .record_diagonal(&mut rec, BufView::new(&dbuf, doff, 104))
            .unwrap());
        rec.submit().unwrap();
        let d = inside_untouched_outside(gpu, &format!("block d ({name})"), &dbuf, doff, 104);
        assert_exact(&format!("block diagonal diag ({name})"), &d, &want);
        // A block without a diagonal leaves the composition without one.
        let no_diag = FnOperator::new(2, 2, |_, _, _| Ok(()));
        let op = BlockDiagonal::new(gpu, vec![&dense, &no_diag]).unwrap();
        assert!(diagonal(gpu, &op).is_none());
    }
}

// ---- a user operator in the test's own WGSL --------------------------------------------------

/// y_i = 2x_i − x_{i−1} − x_{i+1} (zero outside 0..n), with its own bindings.
const TRIDIAGONAL_WGSL: &str = r#"
struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn tridiagonal(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n) {
        return;
    }
    var v = 2.0 * x[i];
    if (i > 0u) {
        v -= x[i - 1u];
    }
    if (i + 1u < params.n) {
        v -= x[i + 1u];
    }
    y[i] = v;
}
"#;

/// The user's operator: their WGSL and pipeline, bound straight to the views the solver
/// passes (`BufView::binding_resource`), recorded with `Recorder::dispatch_raw`.
struct Tridiagonal {
    n: usize,
    device: wgpu::Device,
    pipeline: wgpu::ComputePipeline,
    params: wgpu::Buffer,
}

impl Tridiagonal {
    fn new(gpu: &Gpu, n: usize) -> Self {
        let device = gpu.device().clone();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("user tridiagonal"),
            source: wgpu::ShaderSource::Wgsl(TRIDIAGONAL_WGSL.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("user tridiagonal"),
            layout: None,
            module: &module,
            entry_point: Some("tridiagonal"),
            compilation_options: Default::default(),
            cache: None,
        });
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("user params"),
            contents: bytemuck::cast_slice(&[n as u32, 0, 0, 0]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        Tridiagonal {
            n,
            device,
            pipeline,
            params,
        }
    }

    fn record(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> curvgpu::Result<()> {
        assert_eq!((x.len(), y.len()), (self.n, self.n));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("user tridiagonal"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x.binding_resource(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: y.binding_resource(),
                },
            ],
        });
        rec.dispatch_raw(
            &self.pipeline,
            &bind_group,
            [self.n.div_ceil(64) as u32, 1, 1],
        );
        Ok(())
    }

    /// The same matrix as an f64 reference CSR.
    fn reference(n: usize) -> Csr {
        let values: Vec<f64> = (0..n)
            .flat_map(|r| {
                let mut v = Vec::new();
                if r > 0 {
                    v.push(-1.0);
                }
                v.push(2.0);
                if r + 1 < n {
                    v.push(-1.0);
                }
                v
            })
            .collect();
        Csr::build(
            n,
            n,
            |r| {
                (r.saturating_sub(1)..(r + 2).min(n))
                    .map(|c| c as u32)
                    .collect()
            },
            values,
        )
    }
}

/// The eigenvalues of tridiag(−1, 2, −1) of order n: 2 − 2cos(kπ/(n+1)), k = 1..n.
fn tridiagonal_eigenvalue(n: usize, k: usize) -> f64 {
    2.0 - 2.0 * (k as f64 * std::f64::consts::PI / (n as f64 + 1.0)).cos()
}

#[test]
fn user_wgsl_operator_applies_exactly_through_fn_operator() {
    let n = 1000;
    let reference = Tridiagonal::reference(n);
    let x = integers(n, 140);
    for (name, gpu) in both_gpus() {
        let user = Tridiagonal::new(gpu, n);
        let op = FnOperator::new(n, n, |rec, x, y| user.record(rec, x, y));
        assert_eq!(op.shape(), (n, n));
        assert_exact(
            &format!("user tridiagonal ({name})"),
            &apply(gpu, &op, &x),
            &reference.apply(&x),
        );
        assert!(diagonal(gpu, &op).is_none(), "FnOperator has no diagonal");
    }
}

#[test]
fn cg_on_a_user_wgsl_operator_matches_f64_cg() {
    // κ = λ_n/λ_1 ≈ 440 for n = 32: well enough conditioned for f32 and f64 CG to take the
    // same iterations ±2 (the f32 recurrence drifts from the f64 one by ~κ·u per step). The
    // f32 solution's true residual ‖b − A·x‖ (in f64 through the reference operator) can exceed
    // the recursive one that stopped CG by the f32 residual gap, about
    // iterations·u·(‖A‖‖x‖ + ‖b‖) ≲ 10⁻⁵‖b‖ here, so it is held to 2·rtol·‖b‖ (rtol = 10⁻⁴).
    // ‖x − x_f64‖ is printed, not asserted: ≤ ‖A⁻¹‖(‖r‖ + ‖r_f64‖) follows from the residuals.
    let n = 32;
    let rtol = 1e-4f32;
    let reference = Tridiagonal::reference(n);
    let b = randoms(n, 150);
    let apply_ref = |x: &[f64], y: &mut [f64]| y.copy_from_slice(&reference.apply(x));
    let want = reference::cg(apply_ref, &b, None, rtol as f64, 0.0, 10 * n, None);
    assert!(want.converged);
    let norm = |v: &[f64]| v.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (name, gpu) in both_gpus() {
        let user = Tridiagonal::new(gpu, n);
        let op = FnOperator::new(n, n, |rec, x, y| user.record(rec, x, y));
        let bv = GpuVec::upload(gpu, &as_f32(&b)).unwrap();
        let options = CgOptions {
            rtol,
            ..Default::default()
        };
        let got = cg(gpu, &op, &bv, None, &options).unwrap();
        let x = as_f64(&got.x.read().unwrap());
        let ax = reference.apply(&x);
        let r: Vec<f64> = b.iter().zip(&ax).map(|(b, a)| b - a).collect();
        let rel = norm(&r) / norm(&b);
        let dx: Vec<f64> = x.iter().zip(&want.x).map(|(a, b)| a - b).collect();
        eprintln!(
            "user cg ({name}): {} iterations (f64 {}), true residual {rel:.3e}, ‖x − x_f64‖ {:.3e}",
            got.iterations,
            want.iterations,
            norm(&dx)
        );
        assert!(got.converged, "{name}: not converged in {}", got.iterations);
        assert!(
            got.iterations.abs_diff(want.iterations) <= 2,
            "{name}: {} iterations, f64 {}",
            got.iterations,
            want.iterations
        );
        assert!(rel <= 2.0 * rtol as f64, "{name}: true residual {rel:e}");
    }
}

#[test]
fn top_eigenvalues_of_a_user_wgsl_operator_are_the_analytic_ones() {
    // n = 8: λ₈ = 2 + 2cos(π/9), λ₇ = 2 + 2cos(2π/9), λ₇/λ₈ ≈ 0.91 and λ₆/λ₇ ≈ 0.85, so
    // 300 iterations converge both Rayleigh quotients far below f32 resolution. What remains:
    // - PyHessian's normalisation v = w/(‖w‖ + 10⁻⁶) leaves ‖v‖² ≈ 1 − 2·10⁻⁶/‖w‖ and
    //   vᵀAv short by 2·10⁻⁶·λ/‖w‖. For the first eigenvalue w = A·v, ‖w‖ ≈ λ: 2·10⁻⁶. Past
    //   the first, v is orthogonalised and renormalised from ‖w‖ ≈ 1 each iteration: 2·10⁻⁶·λ.
    // - f32 rounding of A·v (γ₃), vᵀAv (γₙ) and the norm (γₙ₊₂), each relative to λ:
    //   ≤ 4(n + 3)·u·λ in all.
    let n = 8;
    let options = PowerOptions {
        top_n: 2,
        max_iter: 300,
        tol: 0.0,
        seed: 5,
    };
    for (name, gpu) in both_gpus() {
        let user = Tridiagonal::new(gpu, n);
        let op = FnOperator::new(n, n, |rec, x, y| user.record(rec, x, y));
        let got = top_eigenvalues(gpu, &op, &options).unwrap();
        assert_eq!(got.values.len(), 2);
        for (k, &value) in got.values.iter().enumerate() {
            let want = tridiagonal_eigenvalue(n, n - k);
            let guard = if k == 0 { 2e-6 } else { 2e-6 * want };
            let tol = guard + 4.0 * (n + 3) as f64 * U32 * want;
            let err = (value - want).abs();
            eprintln!(
                "user λ{} ({name}): {value} vs {want}, |err| {err:.3e} (tol {tol:.3e})",
                n - k
            );
            assert!(err <= tol, "{name}: λ{} = {value}, want {want}", n - k);
        }
    }
}

// ---- x and y in one buffer -------------------------------------------------------------------

/// y = A·x with x and y in one caller buffer at `Layout`'s aligned offsets (x first or y
/// first), y NaN-poisoned first; checks that x and the padding between the views are left as
/// they were, and returns y.
fn apply_packed(gpu: &Gpu, op: &dyn LinearOperator, x: &[f64], y_first: bool) -> Vec<f32> {
    let (rows, cols) = op.shape();
    let lens = if y_first { [rows, cols] } else { [cols, rows] };
    let layout = Layout::new::<f32>(gpu.limits(), &lens).unwrap();
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("x and y"),
        size: layout.size(),
        usage: STORAGE_USAGES,
        mapped_at_creation: false,
    });
    let views = layout.views(&buffer);
    let (xv, yv) = if y_first {
        (views[1], views[0])
    } else {
        (views[0], views[1])
    };
    let mut words = vec![SENTINEL; layout.size() as usize / 4];
    let at = |v: &BufView<'_>| v.byte_offset() as usize / 4;
    let x32 = as_f32(x);
    words[at(&xv)..at(&xv) + cols].copy_from_slice(bytemuck::cast_slice(&x32));
    words[at(&yv)..at(&yv) + rows].fill(f32::NAN.to_bits());
    gpu.queue()
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&words));
    let mut rec = Recorder::new(gpu);
    op.record_apply(&mut rec, xv, yv).unwrap();
    rec.submit().unwrap();
    let after = read_buffer_words(gpu, &buffer);
    for (i, (&a, &w)) in after.iter().zip(&words).enumerate() {
        if !(at(&yv)..at(&yv) + rows).contains(&i) {
            assert_eq!(a, w, "word {i} outside y changed");
        }
    }
    bytemuck::cast_slice(&after[at(&yv)..at(&yv) + rows]).to_vec()
}

#[test]
fn every_operator_applies_with_x_and_y_in_one_buffer() {
    // The integer fixtures of the tests above: exact in any order, so equality with the f64
    // references, with x before y and after it. (A user operator's own pipeline is the user's
    // to declare: TRIDIAGONAL_WGSL reads x read-only, and wgpu refuses one buffer bound
    // read-only and writable in one dispatch, so it takes x and y from separate buffers.)
    let (rows, cols) = (300, 257);
    let a: Vec<f64> = integers(rows * cols, 30).iter().map(|v| v / 4.0).collect();
    let dense_x = integers(cols, 31);
    let mut dense_want = vec![0.0; rows];
    reference::dense_apply(rows, cols, &a, &dense_x, &mut dense_want);
    let csr = irregular_csr(1000, 53, integers(10_000, 54));
    let csr_x = integers(1000, 55);
    let blocks = Blocks::new();
    let block_x = integers(104, 133);
    for (name, gpu) in both_gpus() {
        for y_first in [false, true] {
            let what =
                |op: &str| format!("{op}, x and y in one buffer (y first: {y_first}, {name})");
            let dense = DenseMatrix::new(gpu, rows, cols, &as_f32(&a)).unwrap();
            assert_exact(
                &what("dense"),
                &apply_packed(gpu, &dense, &dense_x, y_first),
                &dense_want,
            );
            assert_exact(
                &what("csr"),
                &apply_packed(gpu, &csr.upload(gpu), &csr_x, y_first),
                &csr.apply(&csr_x),
            );
            for (g, &(nx, ny, nz)) in [(3, 5, 1), (64, 64, 1), (7, 5, 3), (16, 16, 16)]
                .iter()
                .enumerate()
            {
                let x = integers(nx * ny * nz, 600 + g as u64);
                let op = poisson_op(nx, ny, nz);
                assert_exact(
                    &what(&format!("poisson {nx}×{ny}×{nz}")),
                    &apply_packed(gpu, &op, &x, y_first),
                    &poisson_ref(nx, ny, nz, &x),
                );
                let sigma = 0.75;
                let shifted = Shifted::new(&op, sigma as f32).unwrap();
                let want: Vec<f64> = poisson_ref(nx, ny, nz, &x)
                    .iter()
                    .zip(&x)
                    .map(|(y, x)| y + sigma * x)
                    .collect();
                assert_exact(
                    &what(&format!("poisson {nx}×{ny}×{nz} + 0.75 I")),
                    &apply_packed(gpu, &shifted, &x, y_first),
                    &want,
                );
            }
            let dense3 = DenseMatrix::new(gpu, 3, 3, &as_f32(&blocks.dense)).unwrap();
            let csr100 = blocks.csr.upload(gpu);
            let one = Poisson::new_2d(1, 1).unwrap();
            let op = BlockDiagonal::new(gpu, vec![&dense3, &csr100, &one]).unwrap();
            assert_exact(
                &what("block diagonal"),
                &apply_packed(gpu, &op, &block_x, y_first),
                &blocks.apply(&block_x),
            );
        }
    }
}

/// [`fused`] with x, d, the scalars and y in one caller buffer ([`GpuVec::packed`]); partials
/// in a buffer of their own.
fn fused_packed(
    gpu: &Gpu,
    op: &Poisson,
    x: &[f64],
    direction: Option<(&[f64], f32)>,
) -> (Vec<f32>, f64, Vec<f32>, Vec<f32>) {
    let n = x.len();
    let v = GpuVec::<f32>::packed(gpu, &[n, n, 3, n]).unwrap();
    let (xv, dv, scalars, yv) = (&v[0], &v[1], &v[2], &v[3]);
    xv.write(&as_f32(x)).unwrap();
    dv.write(&as_f32(direction.map_or(x, |(d, _)| d))).unwrap();
    scalars
        .write(&[0.0, 7.0, direction.map_or(0.0, |(_, b)| b)])
        .unwrap();
    yv.write(&vec![f32::NAN; n]).unwrap();
    let partials = GpuVec::upload(gpu, &vec![f32::NAN; 1024]).unwrap();
    let mut rec = Recorder::new(gpu);
    let groups = match direction {
        Some(_) => op.record_direction_apply_dot(
            &mut rec,
            &Direction {
                x: xv.view(),
                d: dv.view(),
                scalars: scalars.view(),
                beta_index: 2,
            },
            yv.view(),
            partials.view(),
        ),
        None => op.record_apply_dot(&mut rec, xv.view(), yv.view(), partials.view()),
    }
    .unwrap()
    .expect("the operator fuses");
    rec.submit().unwrap();
    let sum = partials.read().unwrap()[..groups as usize]
        .iter()
        .map(|&v| v as f64)
        .sum();
    let read = |v: &GpuVec<f32>| v.read().unwrap();
    (read(yv), sum, read(xv), read(dv))
}

#[test]
fn poisson_fused_forms_with_their_operands_and_y_in_one_buffer_are_exact() {
    // The fused test's fixtures and exact comparisons, every view but the partials in one
    // buffer.
    for (g, &(nx, ny, nz)) in [(4, 1, 1), (8, 3, 1), (12, 7, 5), (64, 64, 1)]
        .iter()
        .enumerate()
    {
        let n = nx * ny * nz;
        let op = poisson_op(nx, ny, nz);
        let x = ternary(n, 300 + g as u64);
        let d = ternary(n, 400 + g as u64);
        let operand: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + 2.0 * d).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for (name, gpu) in both_gpus() {
            let what = format!("poisson {nx}×{ny}×{nz}, one buffer ({name})");
            let want = poisson_ref(nx, ny, nz, &x);
            let (y, sum, _, _) = fused_packed(gpu, &op, &x, None);
            assert_exact(&format!("{what} apply_dot y"), &y, &want);
            assert_eq!(sum, dot(&x, &want), "{what}: Σ partials ≠ xᵀAx");

            let want = poisson_ref(nx, ny, nz, &operand);
            let (y, sum, x_after, d_after) = fused_packed(gpu, &op, &x, Some((&d, 2.0)));
            assert_exact(&format!("{what} direction y"), &y, &want);
            assert_eq!(sum, dot(&operand, &want), "{what}: Σ partials ≠ pᵀAp");
            assert_exact(&format!("{what} x untouched"), &x_after, &x);
            assert_exact(&format!("{what} d untouched"), &d_after, &d);
        }
    }
}

#[test]
fn poisson_fused_direction_with_x_and_d_the_same_view_reads_it_twice() {
    // x, d and the scalars are only read: with y in another buffer they may overlap, here
    // d = x, so the operand is (1 + β)·x.
    let gpu = crate::common::gpu();
    let (nx, ny) = (8, 3);
    let op = poisson_op(nx, ny, 1);
    let x = ternary(nx * ny, 700);
    let xv = GpuVec::upload(gpu, &as_f32(&x)).unwrap();
    let scalars = GpuVec::upload(gpu, &[2.0f32]).unwrap();
    let yv = GpuVec::upload(gpu, &vec![f32::NAN; nx * ny]).unwrap();
    let partials = GpuVec::<f32>::zeros(gpu, 1024).unwrap();
    let mut rec = Recorder::new(gpu);
    let direction = Direction {
        x: xv.view(),
        d: xv.view(),
        scalars: scalars.view(),
        beta_index: 0,
    };
    op.record_direction_apply_dot(&mut rec, &direction, yv.view(), partials.view())
        .unwrap()
        .expect("the operator fuses");
    rec.submit().unwrap();
    let operand: Vec<f64> = x.iter().map(|x| 3.0 * x).collect();
    assert_exact(
        "poisson on x + 2x",
        &yv.read().unwrap(),
        &poisson_ref(nx, ny, 1, &operand),
    );
}
