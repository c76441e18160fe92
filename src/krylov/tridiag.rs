//! Eigenvalues of a symmetric tridiagonal matrix and the first component of each unit
//! eigenvector: exactly what stochastic Lanczos quadrature needs (nodes = eigenvalues,
//! weights = first components squared), in O(m²).

use crate::error::{Error, Result};

/// Eigen-decomposition of a symmetric tridiagonal matrix, reduced to what SLQ needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TridiagEigen {
    /// Eigenvalues, ascending.
    pub values: Vec<f64>,
    /// First component of each unit eigenvector, in the order of `values` (sign arbitrary).
    pub first_components: Vec<f64>,
}

/// Eigenvalues and first eigenvector components of the symmetric tridiagonal matrix with
/// diagonal `alpha` (length m ≥ 1) and off-diagonal `beta` (length m − 1).
///
/// Implicit symmetric QL with Wilkinson shifts (Numerical Recipes' `tqli`), accumulating the
/// rotations into the first row of the eigenvector matrix only. The iteration budget is
/// 30·m QL sweeps in all (LAPACK's `steqr` convention).
///
/// # Errors
/// [`Error::Empty`] if `alpha` is empty, [`Error::LengthMismatch`] if `beta` is not one
/// shorter, [`Error::InvalidParameter`] naming `alpha` or `beta` for a non-finite entry, and
/// [`Error::NoConvergence`] if the budget runs out.
pub fn tridiagonal_eigen(alpha: &[f64], beta: &[f64]) -> Result<TridiagEigen> {
    let n = alpha.len();
    if n == 0 {
        return Err(Error::Empty { argument: "alpha" });
    }
    if beta.len() != n - 1 {
        return Err(Error::LengthMismatch {
            argument: "beta",
            expected: n - 1,
            actual: beta.len(),
        });
    }
    if let Some(&v) = alpha.iter().find(|v| !v.is_finite()) {
        return Err(Error::param("alpha", v, "finite"));
    }
    if let Some(&v) = beta.iter().find(|v| !v.is_finite()) {
        return Err(Error::param("beta", v, "finite"));
    }
    let mut d = alpha.to_vec();
    let mut e = beta.to_vec();
    e.push(0.0);
    // First row of the accumulated rotations, starting from the identity.
    let mut z = vec![0.0; n];
    z[0] = 1.0;
    let budget = 30 * n;
    let mut sweeps = 0;
    for l in 0..n {
        loop {
            // Find the first negligible off-diagonal at or after l.
            let mut m = l;
            while m + 1 < n && e[m].abs() > f64::EPSILON * (d[m].abs() + d[m + 1].abs()) {
                m += 1;
            }
            if m == l {
                break;
            }
            if sweeps == budget {
                return Err(Error::NoConvergence {
                    what: "tridiagonal QL",
                    iterations: budget,
                });
            }
            sweeps += 1;
            // Wilkinson shift from the leading 2×2 block.
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // Recover from underflow: deflate and restart the sweep.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let zf = z[i + 1];
                z[i + 1] = s * z[i] + c * zf;
                z[i] = c * z[i] - s * zf;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    Ok(TridiagEigen {
        values: order.iter().map(|&i| d[i]).collect(),
        first_components: order.iter().map(|&i| z[i]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    fn unit_first_row(eig: &TridiagEigen) -> f64 {
        eig.first_components.iter().map(|c| c * c).sum()
    }

    #[test]
    fn one_by_one_is_its_own_eigenpair() {
        let eig = tridiagonal_eigen(&[3.5], &[]).unwrap();
        assert_eq!(eig.values, vec![3.5]);
        assert_eq!(eig.first_components, vec![1.0]);
    }

    #[test]
    fn two_by_two_matches_the_closed_form() {
        let (a, b, c) = (1.0, 0.7, -2.0);
        let eig = tridiagonal_eigen(&[a, c], &[b]).unwrap();
        let mid = 0.5 * (a + c);
        let rad = (0.25 * (a - c) * (a - c) + b * b).sqrt();
        for (k, lambda) in [mid - rad, mid + rad].into_iter().enumerate() {
            assert!(close(eig.values[k], lambda, 1e-14));
            // Eigenvector ∝ (b, λ − a).
            let first_sq = b * b / (b * b + (lambda - a) * (lambda - a));
            assert!(close(eig.first_components[k].powi(2), first_sq, 1e-13));
        }
    }

    #[test]
    fn second_difference_matrix_matches_the_sine_basis() {
        for m in [1usize, 2, 3, 50, 200] {
            let eig = tridiagonal_eigen(&vec![2.0; m], &vec![-1.0; m - 1]).unwrap();
            let h = PI / (m + 1) as f64;
            for k in 1..=m {
                let lambda = 2.0 - 2.0 * (k as f64 * h).cos();
                let first = (2.0 / (m + 1) as f64).sqrt() * (k as f64 * h).sin();
                assert!(close(eig.values[k - 1], lambda, 1e-12), "m={m} k={k}");
                assert!(close(eig.first_components[k - 1].abs(), first, 1e-10));
            }
            assert!(close(unit_first_row(&eig), 1.0, 1e-13));
        }
    }

    #[test]
    fn zero_off_diagonals_decouple_blocks() {
        // Blocks [[1, .5], [.5, 2]], [3], [[4, .7], [.7, 5]] are separated by exact zeros.
        let eig = tridiagonal_eigen(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.5, 0.0, 0.0, 0.7]).unwrap();
        let pair = |a: f64, b: f64, c: f64| {
            let rad = (0.25 * (a - c) * (a - c) + b * b).sqrt();
            [0.5 * (a + c) - rad, 0.5 * (a + c) + rad]
        };
        let mut expected: Vec<f64> = pair(1.0, 0.5, 2.0).to_vec();
        expected.push(3.0);
        expected.extend(pair(4.0, 0.7, 5.0));
        expected.sort_by(f64::total_cmp);
        for (got, want) in eig.values.iter().zip(&expected) {
            assert!(close(*got, *want, 1e-14));
        }
        // Only the first block's eigenvectors touch coordinate 0.
        let touching: Vec<f64> = eig.first_components.iter().map(|c| c * c).collect();
        assert!(touching[2..].iter().all(|&c| c < 1e-30), "{touching:?}");
        assert!(close(unit_first_row(&eig), 1.0, 1e-14));
    }

    #[test]
    fn first_components_form_a_unit_vector() {
        let alpha: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let beta: Vec<f64> = (0..39)
            .map(|i| 0.1 + (i as f64 * 0.91).cos().abs())
            .collect();
        let eig = tridiagonal_eigen(&alpha, &beta).unwrap();
        assert!(close(unit_first_row(&eig), 1.0, 1e-13));
        assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
        // Trace is preserved.
        assert!(close(eig.values.iter().sum(), alpha.iter().sum(), 1e-12));
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            tridiagonal_eigen(&[], &[]),
            Err(Error::Empty { argument: "alpha" })
        ));
        assert!(matches!(
            tridiagonal_eigen(&[1.0, 2.0], &[]),
            Err(Error::LengthMismatch {
                argument: "beta",
                expected: 1,
                actual: 0
            })
        ));
        assert!(matches!(
            tridiagonal_eigen(&[1.0, f64::NAN], &[1.0]),
            Err(Error::InvalidParameter { name: "alpha", .. })
        ));
        assert!(matches!(
            tridiagonal_eigen(&[1.0, 2.0], &[f64::INFINITY]),
            Err(Error::InvalidParameter { name: "beta", .. })
        ));
    }
}
