//! Dense linear algebra in f64 for the Kronecker-factor references: GEMM with optional
//! transposes, XᵀX, Cholesky, triangular solves, the SPD inverse and a cyclic-Jacobi symmetric
//! eigensolver. Textbook algorithms (Golub & Van Loan), written independently of the shaders
//! and kept plain (triple loops, no blocking) so that they are easy to trust.
//!
//! Matrices are row-major `&[f64]` with their dimensions passed explicitly. Every function
//! panics on slices of the wrong length (or the other preconditions it documents): these are
//! test references, so a misuse should fail loudly. Random SPD test matrices with a chosen
//! spectrum come from [`super::krylov::random_spd`].

/// The n×n identity, row-major.
pub fn identity(n: usize) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    (0..n).for_each(|i| a[i * n + i] = 1.0);
    a
}

/// The transpose (`cols`×`rows`) of the row-major `rows`×`cols` matrix `a`.
pub fn transpose(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), rows * cols, "transpose: a must be rows×cols");
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// The Frobenius norm √(Σ a_ij²) of a matrix (or the 2-norm of a vector).
pub fn frobenius(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// max_i |a_i − b_i| (panics on different lengths).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "max_abs_diff: lengths differ");
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// C = op(A)·op(B), m×n, by a plain triple loop. op(A) is m×k: `a` is stored m×k, or k×m when
/// `trans_a` (op(A) = Aᵀ). op(B) is k×n: `b` is stored k×n, or n×k when `trans_b`.
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    b: &[f64],
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    assert_eq!(a.len(), m * k, "gemm: a must hold m·k entries");
    assert_eq!(b.len(), k * n, "gemm: b must hold k·n entries");
    let op_a = |i: usize, l: usize| if trans_a { a[l * m + i] } else { a[i * k + l] };
    let op_b = |l: usize, j: usize| if trans_b { b[j * k + l] } else { b[l * n + j] };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|l| op_a(i, l) * op_b(l, j)).sum();
        }
    }
    c
}

/// XᵀX (`cols`×`cols`, symmetric) for the row-major `rows`×`cols` matrix `x`.
pub fn syrk_t(rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), rows * cols, "syrk_t: x must be rows×cols");
    let mut c = vec![0.0; cols * cols];
    for i in 0..cols {
        for j in 0..=i {
            let s: f64 = (0..rows).map(|r| x[r * cols + i] * x[r * cols + j]).sum();
            c[i * cols + j] = s;
            c[j * cols + i] = s;
        }
    }
    c
}

/// The Cholesky factor of a symmetric n×n matrix: lower-triangular L (zeros above the
/// diagonal) with A = L·Lᵀ. Only the lower triangle of `a` is read. Err(j) names the first
/// pivot j whose value a_jj − Σ_k L_jk² is ≤ 0 or not finite (A is not numerically SPD).
pub fn cholesky(n: usize, a: &[f64]) -> Result<Vec<f64>, usize> {
    assert_eq!(a.len(), n * n, "cholesky: a must be n×n");
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|k| l[j * n + k] * l[j * n + k]).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return Err(j);
        }
        let ljj = d.sqrt();
        l[j * n + j] = ljj;
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            l[i * n + j] = s / ljj;
        }
    }
    Ok(l)
}

/// X solving L·X = B by forward substitution, for lower-triangular n×n `l` (only its lower
/// triangle is read; the diagonal must be non-zero) and n×`b_cols` right-hand sides `b`;
/// X is n×`b_cols`, row-major.
pub fn solve_lower(n: usize, l: &[f64], b_cols: usize, b: &[f64]) -> Vec<f64> {
    assert_eq!(l.len(), n * n, "solve_lower: l must be n×n");
    assert_eq!(b.len(), n * b_cols, "solve_lower: b must be n×b_cols");
    let mut x = b.to_vec();
    for i in 0..n {
        for c in 0..b_cols {
            let s: f64 = (0..i).map(|k| l[i * n + k] * x[k * b_cols + c]).sum();
            x[i * b_cols + c] = (x[i * b_cols + c] - s) / l[i * n + i];
        }
    }
    x
}

/// X solving Lᵀ·X = B by back substitution, for lower-triangular n×n `l` (only its lower
/// triangle is read; the diagonal must be non-zero) and n×`b_cols` right-hand sides `b`;
/// X is n×`b_cols`, row-major. With [`solve_lower`] this solves L·Lᵀ·X = B.
pub fn solve_lower_t(n: usize, l: &[f64], b_cols: usize, b: &[f64]) -> Vec<f64> {
    assert_eq!(l.len(), n * n, "solve_lower_t: l must be n×n");
    assert_eq!(b.len(), n * b_cols, "solve_lower_t: b must be n×b_cols");
    let mut x = b.to_vec();
    for i in (0..n).rev() {
        for c in 0..b_cols {
            // (Lᵀ)_ik = L_ki for k > i.
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k * b_cols + c]).sum();
            x[i * b_cols + c] = (x[i * b_cols + c] - s) / l[i * n + i];
        }
    }
    x
}

/// A⁻¹ for a symmetric positive-definite n×n `a` (lower triangle read) via Cholesky:
/// L·Lᵀ·X = I by two triangular solves, then symmetrised as (X + Xᵀ)/2. Err(j) is
/// [`cholesky`]'s failing pivot.
pub fn spd_inverse(n: usize, a: &[f64]) -> Result<Vec<f64>, usize> {
    let l = cholesky(n, a)?;
    let y = solve_lower(n, &l, n, &identity(n));
    let x = solve_lower_t(n, &l, n, &y);
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = 0.5 * (x[i * n + j] + x[j * n + i]);
        }
    }
    Ok(s)
}

/// Eigen-decomposition of a symmetric n×n matrix (only symmetric input is meaningful; the
/// full matrix is read) by cyclic Jacobi rotations in f64: sweeps over all pairs p < q in row
/// order, each rotation zeroing a_pq (the rotation of Golub & Van Loan §8.5 with
/// t = sign(θ)/(|θ| + √(θ² + 1)), θ = (a_qq − a_pp)/(2a_pq)), until the off-diagonal norm is
/// ≤ 1e-14·‖A‖_F, or a sweep finds every a_pq negligible against both a_pp and a_qq.
/// Returns (λ ascending, Q) with Q row-major n×n whose column i is the unit eigenvector of
/// λ_i, so A = Q·diag(λ)·Qᵀ. Panics if 100 sweeps do not converge.
pub fn symmetric_eigen(n: usize, a: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: a must be n×n");
    let mut a = a.to_vec();
    let mut v = identity(n);
    let fro = frobenius(&a);
    let off = |a: &[f64]| {
        let mut s = 0.0;
        for p in 0..n {
            for q in 0..n {
                if p != q {
                    s += a[p * n + q] * a[p * n + q];
                }
            }
        }
        s.sqrt()
    };
    let mut converged = false;
    for _sweep in 0..100 {
        if off(&a) <= 1e-14 * fro {
            converged = true;
            break;
        }
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let g = 100.0 * apq.abs();
                if apq == 0.0 || (app.abs() + g == app.abs() && aqq.abs() + g == aqq.abs()) {
                    a[p * n + q] = 0.0;
                    a[q * n + p] = 0.0;
                    continue;
                }
                rotated = true;
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.is_finite() {
                    theta.signum() / (theta.abs() + theta.hypot(1.0))
                } else {
                    0.0
                };
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                // A ← A·J (columns p, q), then Jᵀ·A (rows p, q); V ← V·J.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    assert!(
        converged || off(&a) <= 1e-14 * fro,
        "symmetric_eigen: Jacobi did not converge in 100 sweeps (is the input finite?)"
    );
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut q = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        (0..n).for_each(|r| q[r * n + new] = v[r * n + old]);
    }
    (values, q)
}

#[cfg(test)]
mod tests {
    use super::super::krylov::random_spd;
    use super::*;

    #[test]
    fn gemm_matches_a_hand_product_in_every_transpose_form() {
        // A = [[1, 2, 3], [4, 5, 6]] (2×3), B = [[7, 8], [9, 10], [11, 12]] (3×2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let c = gemm(2, 3, 2, &a, &b, false, false);
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        let (at, bt) = (transpose(2, 3, &a), transpose(3, 2, &b));
        assert_eq!(gemm(2, 3, 2, &at, &b, true, false), c);
        assert_eq!(gemm(2, 3, 2, &a, &bt, false, true), c);
        assert_eq!(gemm(2, 3, 2, &at, &bt, true, true), c);
        // BᵀAᵀ = (AB)ᵀ, and the 3×3 product BA.
        assert_eq!(gemm(2, 3, 2, &b, &a, true, true), transpose(2, 2, &c));
        assert_eq!(
            gemm(3, 2, 3, &b, &a, false, false),
            [39.0, 54.0, 69.0, 49.0, 68.0, 87.0, 59.0, 82.0, 105.0]
        );
        // XᵀX agrees with the GEMM form.
        assert_eq!(syrk_t(2, 3, &a), gemm(3, 2, 3, &a, &a, true, false));
    }

    #[test]
    fn cholesky_reconstructs_and_names_the_failing_pivot() {
        let n = 9;
        let lambdas: Vec<f64> = (0..n).map(|i| 10f64.powf(i as f64 / 2.0)).collect();
        let a = random_spd(n, &lambdas, 11);
        let l = cholesky(n, &a).unwrap();
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(l[i * n + j], 0.0, "L is lower-triangular");
            }
        }
        let llt = gemm(n, n, n, &l, &l, false, true);
        assert!(max_abs_diff(&llt, &a) <= 1e-12 * frobenius(&a));
        // [[4, 2, 0], [2, 1, 0], [0, 0, 1]]: pivot 1 is 1 − 2²/4 = 0.
        assert_eq!(
            cholesky(3, &[4.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            Err(1)
        );
        assert_eq!(cholesky(2, &[-1.0, 0.0, 0.0, 1.0]), Err(0));
        assert_eq!(cholesky(2, &[1.0, 0.0, 0.0, f64::NAN]), Err(1));
        // An indefinite random matrix fails somewhere.
        let mut lambdas = vec![1.0; 6];
        lambdas[2] = -1.0;
        assert!(cholesky(6, &random_spd(6, &lambdas, 5)).is_err());
    }

    #[test]
    fn triangular_solves_invert_their_factor() {
        let n = 5;
        let a = random_spd(n, &[1.0, 2.0, 3.0, 4.0, 5.0], 2);
        let l = cholesky(n, &a).unwrap();
        let b: Vec<f64> = (0..n * 3).map(|i| (i as f64 * 0.7).sin()).collect();
        let x = solve_lower(n, &l, 3, &b);
        assert!(max_abs_diff(&gemm(n, n, 3, &l, &x, false, false), &b) < 1e-13);
        let y = solve_lower_t(n, &l, 3, &b);
        assert!(max_abs_diff(&gemm(n, n, 3, &l, &y, true, false), &b) < 1e-13);
    }

    #[test]
    fn spd_inverse_times_a_is_the_identity() {
        for (n, kappa, seed) in [(1, 1.0, 1), (8, 1e2, 3), (20, 1e4, 4), (33, 1e4, 9)] {
            let lambdas: Vec<f64> = (0..n)
                .map(|i| {
                    let f = if n > 1 {
                        i as f64 / (n - 1) as f64
                    } else {
                        0.0
                    };
                    0.5 * f64::powf(kappa, f)
                })
                .collect();
            let a = random_spd(n, &lambdas, seed);
            let inv = spd_inverse(n, &a).unwrap();
            let prod = gemm(n, n, n, &inv, &a, false, false);
            let err = max_abs_diff(&prod, &identity(n));
            assert!(err < 1e-10, "n {n} κ {kappa}: {err}");
        }
        assert_eq!(spd_inverse(2, &[1.0, 2.0, 2.0, 1.0]), Err(1));
    }

    #[test]
    fn jacobi_recovers_known_spectra_with_orthonormal_vectors() {
        let cases: Vec<(usize, Vec<f64>)> = vec![
            (1, vec![3.0]),
            (2, vec![2.0, -1.0]),
            (7, (0..7).map(|i| (i as f64 - 3.0) * 1.5).collect()),
            (24, (0..24).map(|i| 10f64.powf(i as f64 / 6.0)).collect()),
            // Repeated eigenvalues and a zero one.
            (10, vec![0.0, 1.0, 1.0, 1.0, 2.0, 5.0, 5.0, 7.0, 7.0, 9.0]),
            (40, (0..40).map(|i| ((i * 7) % 13) as f64 - 4.0).collect()),
        ];
        for (seed, (n, lambdas)) in cases.into_iter().enumerate() {
            let a = random_spd(n, &lambdas, 100 + seed as u64);
            let (values, q) = symmetric_eigen(n, &a);
            let mut expect = lambdas.clone();
            expect.sort_by(f64::total_cmp);
            let norm_a = frobenius(&a);
            assert!(
                max_abs_diff(&values, &expect) <= 1e-12 * norm_a,
                "n {n}: {values:?} vs {expect:?}"
            );
            assert!(values.windows(2).all(|w| w[0] <= w[1]), "ascending");
            // ‖AQ − QΛ‖_F ≤ 1e-10·‖A‖_F and QᵀQ = I.
            let aq = gemm(n, n, n, &a, &q, false, false);
            let mut ql = q.clone();
            for r in 0..n {
                (0..n).for_each(|c| ql[r * n + c] *= values[c]);
            }
            let resid: Vec<f64> = aq.iter().zip(&ql).map(|(x, y)| x - y).collect();
            assert!(frobenius(&resid) <= 1e-10 * norm_a, "n {n} residual");
            let qtq = gemm(n, n, n, &q, &q, true, false);
            assert!(
                max_abs_diff(&qtq, &identity(n)) < 1e-12,
                "n {n} orthonormal"
            );
        }
        // A diagonal matrix needs no rotation; its vectors are the permuted unit vectors.
        let (values, q) = symmetric_eigen(3, &[3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(values, [1.0, 2.0, 3.0]);
        assert_eq!(q, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }
}
