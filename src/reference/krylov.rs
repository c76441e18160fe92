//! Krylov-method references in f64: model operators (Poisson stencils, dense, CSR), scipy's
//! conjugate gradient, Lanczos with full re-orthogonalisation and random SPD test matrices.
//! Written from scipy / PyHessian's published code, independently of the shaders.
//!
//! Every function panics on slices of the wrong length (or the other preconditions it
//! documents): these are test references, so a misuse should fail loudly.

use super::splitmix::SplitMix64;

/// y = A·x for the 5-point Laplacian on an `nx`×`ny` grid with zero Dirichlet boundary,
/// unscaled: y(i,j) = 4x(i,j) − x(i±1,j) − x(i,j±1), neighbours outside the grid counting as 0,
/// at index i + nx·j.
pub fn poisson2d_apply(nx: usize, ny: usize, x: &[f64], y: &mut [f64]) {
    poisson3d_apply_with(nx, ny, 1, 4.0, x, y);
}

/// y = A·x for the 7-point Laplacian on an `nx`×`ny`×`nz` grid with zero Dirichlet boundary,
/// unscaled: y = 6x − (six neighbours), at index i + nx·(j + ny·k).
pub fn poisson3d_apply(nx: usize, ny: usize, nz: usize, x: &[f64], y: &mut [f64]) {
    poisson3d_apply_with(nx, ny, nz, 6.0, x, y);
}

fn poisson3d_apply_with(nx: usize, ny: usize, nz: usize, centre: f64, x: &[f64], y: &mut [f64]) {
    let n = nx * ny * nz;
    assert!(
        x.len() == n && y.len() == n,
        "x and y must have nx·ny·nz elements"
    );
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let at = i + nx * (j + ny * k);
                let mut v = centre * x[at];
                if i > 0 {
                    v -= x[at - 1];
                }
                if i + 1 < nx {
                    v -= x[at + 1];
                }
                if j > 0 {
                    v -= x[at - nx];
                }
                if j + 1 < ny {
                    v -= x[at + nx];
                }
                if k > 0 {
                    v -= x[at - nx * ny];
                }
                if k + 1 < nz {
                    v -= x[at + nx * ny];
                }
                y[at] = v;
            }
        }
    }
}

/// y = A·x for a dense row-major `rows`×`cols` matrix `a`.
pub fn dense_apply(rows: usize, cols: usize, a: &[f64], x: &[f64], y: &mut [f64]) {
    assert!(a.len() == rows * cols && x.len() == cols && y.len() == rows);
    for (yi, row) in y.iter_mut().zip(a.chunks_exact(cols.max(1))) {
        *yi = row.iter().zip(x).map(|(a, x)| a * x).sum();
    }
}

/// y = A·x for a CSR matrix: row r holds `values[row_ptr[r]..row_ptr[r+1]]` at columns
/// `col_idx[..]`; `y.len()` = `row_ptr.len() − 1`.
pub fn csr_apply(row_ptr: &[u32], col_idx: &[u32], values: &[f64], x: &[f64], y: &mut [f64]) {
    assert!(col_idx.len() == values.len() && y.len() + 1 == row_ptr.len());
    for (r, yi) in y.iter_mut().enumerate() {
        let range = row_ptr[r] as usize..row_ptr[r + 1] as usize;
        *yi = col_idx[range.clone()]
            .iter()
            .zip(&values[range])
            .map(|(&c, v)| v * x[c as usize])
            .sum();
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// What [`cg`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct CgOutcome {
    /// The final iterate.
    pub x: Vec<f64>,
    /// Iterations run (scipy's `info` when not converged).
    pub iterations: usize,
    /// Whether the residual test passed (scipy's `info == 0`).
    pub converged: bool,
    /// The recursive residual norm ‖r‖ at exit.
    pub residual_norm: f64,
    /// ‖r‖ at the top of each iteration, then at exit: `iterations + 1` entries, the last
    /// being `residual_norm`.
    pub history: Vec<f64>,
}

/// (Preconditioned) conjugate gradient exactly as `scipy.sparse.linalg.cg` (scipy ≥ 1.12)
/// runs it: tol = max(`atol`, `rtol`·‖b‖); if ‖b‖ = 0 return x = 0 at once; r = b − A·x0 (b
/// if `x0` is absent or zero); at the top of each of at most `maxiter` iterations stop when
/// the recursive ‖r‖ < tol (strict), else z = M⁻¹r, ρ = r·z, p = z (first) or z + (ρ/ρ_prev)·p,
/// q = A·p, α = ρ/(p·q), x += α·p, r −= α·q. `jacobi` = diag(A) makes M = diag(A) (entries must
/// be non-zero). Like scipy, no breakdown test: a non-SPD operator yields non-finite values.
pub fn cg(
    apply: impl Fn(&[f64], &mut [f64]),
    b: &[f64],
    x0: Option<&[f64]>,
    rtol: f64,
    atol: f64,
    maxiter: usize,
    jacobi: Option<&[f64]>,
) -> CgOutcome {
    let n = b.len();
    assert!(x0.is_none_or(|x| x.len() == n) && jacobi.is_none_or(|d| d.len() == n));
    let bnrm2 = norm(b);
    let tol = atol.max(rtol * bnrm2);
    if bnrm2 == 0.0 {
        let history = vec![0.0];
        return CgOutcome {
            x: b.to_vec(),
            iterations: 0,
            converged: true,
            residual_norm: 0.0,
            history,
        };
    }
    let mut x = x0.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
    let mut r = b.to_vec();
    let mut q = vec![0.0; n];
    if x.iter().any(|&v| v != 0.0) {
        apply(&x, &mut q);
        r.iter_mut().zip(&q).for_each(|(r, q)| *r -= q);
    }
    let mut p = vec![0.0; n];
    let mut z = vec![0.0; n];
    let mut rho_prev = 0.0;
    let mut history = Vec::new();
    for iteration in 0..maxiter {
        let rnorm = norm(&r);
        history.push(rnorm);
        if rnorm < tol {
            return CgOutcome {
                x,
                iterations: iteration,
                converged: true,
                residual_norm: rnorm,
                history,
            };
        }
        match jacobi {
            Some(d) => z
                .iter_mut()
                .zip(&r)
                .zip(d)
                .for_each(|((z, r), d)| *z = r / d),
            None => z.copy_from_slice(&r),
        }
        let rho = dot(&r, &z);
        if iteration == 0 {
            p.copy_from_slice(&z);
        } else {
            let beta = rho / rho_prev;
            p.iter_mut().zip(&z).for_each(|(p, z)| *p = *p * beta + z);
        }
        apply(&p, &mut q);
        let alpha = rho / dot(&p, &q);
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += alpha * p);
        r.iter_mut().zip(&q).for_each(|(r, q)| *r -= alpha * q);
        rho_prev = rho;
    }
    let residual_norm = norm(&r);
    history.push(residual_norm);
    CgOutcome {
        x,
        iterations: maxiter,
        converged: false,
        residual_norm,
        history,
    }
}

/// Lanczos tridiagonalisation, PyHessian-style, with full re-orthogonalisation (classical
/// Gram–Schmidt, twice, against every previous basis vector). `v0` is normalised inside.
/// Returns (α, β) of the m′×m′ tridiagonal T (α of length m′, β of length m′ − 1), stopping
/// early (m′ < m) when β ≤ 1e-12·‖A·v_j‖, i.e. when the Krylov space is invariant.
/// Panics if `m` is 0 or `v0` is zero.
pub fn lanczos(apply: impl Fn(&[f64], &mut [f64]), v0: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let v0_norm = norm(v0);
    assert!(
        m > 0 && v0_norm > 0.0,
        "lanczos needs m > 0 and a non-zero start vector"
    );
    let mut basis: Vec<Vec<f64>> = vec![v0.iter().map(|v| v / v0_norm).collect()];
    let (mut alpha, mut beta) = (Vec::with_capacity(m), Vec::with_capacity(m));
    let mut w = vec![0.0; v0.len()];
    for j in 0..m {
        apply(&basis[j], &mut w);
        let scale = norm(&w);
        let a = dot(&w, &basis[j]);
        alpha.push(a);
        w.iter_mut().zip(&basis[j]).for_each(|(w, v)| *w -= a * v);
        if j > 0 {
            w.iter_mut()
                .zip(&basis[j - 1])
                .for_each(|(w, v)| *w -= beta[j - 1] * v);
        }
        if j + 1 == m {
            break;
        }
        for _ in 0..2 {
            let coeffs: Vec<f64> = basis.iter().map(|v| dot(&w, v)).collect();
            for (c, v) in coeffs.iter().zip(&basis) {
                w.iter_mut().zip(v).for_each(|(w, v)| *w -= c * v);
            }
        }
        let b = norm(&w);
        if b <= 1e-12 * scale {
            break;
        }
        beta.push(b);
        basis.push(w.iter().map(|w| w / b).collect());
    }
    (alpha, beta)
}

/// PyHessian's `eigenvalues` in f64: for each of `starts` (one start vector per eigenvalue,
/// largest first), `max_iter` iterations of v ← normalise(orthonormalise(v) against the
/// vectors found so far), λ = vᵀA·v, v ← A·v/(‖A·v‖ + 1e-6), stopping when
/// |λ_prev − λ|/(|λ_prev| + 1e-6) < tol and returning λ_prev (PyHessian breaks before it
/// assigns). Orthonormalisation is skipped for the first eigenvalue, as curvgpu does (its start
/// is already normalised). Returns (eigenvalues, iterations, vectors).
pub fn power_iteration(
    apply: impl Fn(&[f64], &mut [f64]),
    starts: &[Vec<f64>],
    max_iter: usize,
    tol: f64,
) -> (Vec<f64>, Vec<usize>, Vec<Vec<f64>>) {
    let normalized = |v: &[f64]| -> Vec<f64> {
        let s = norm(v) + 1e-6;
        v.iter().map(|x| x / s).collect()
    };
    let (mut values, mut iterations, mut found): (Vec<f64>, Vec<usize>, Vec<Vec<f64>>) =
        (Vec::new(), Vec::new(), Vec::new());
    for start in starts {
        let mut v = normalized(start);
        let mut hv = vec![0.0; v.len()];
        let mut value: Option<f64> = None;
        let mut taken = max_iter;
        for i in 0..max_iter {
            if !found.is_empty() {
                for e in &found {
                    let c = dot(&v, e);
                    v.iter_mut().zip(e).for_each(|(v, e)| *v -= c * e);
                }
                v = normalized(&v);
            }
            apply(&v, &mut hv);
            let lambda = dot(&hv, &v);
            v = normalized(&hv);
            match value {
                Some(prev) if (prev - lambda).abs() / (prev.abs() + 1e-6) < tol => {
                    taken = i + 1;
                    break;
                }
                _ => value = Some(lambda),
            }
        }
        values.push(value.unwrap_or(f64::NAN));
        iterations.push(taken);
        found.push(v);
    }
    (values, iterations, found)
}

/// A random n×n orthogonal matrix, row-major, deterministic per `seed`: the Q of a
/// Householder QR of a Gaussian matrix (SplitMix64 + Box–Muller), its columns signed so that
/// R has a positive diagonal (which makes Q Haar-distributed).
pub fn random_orthogonal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut g: Vec<f64> = (0..n * n).map(|_| rng.gaussian()).collect();
    let mut reflectors: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut signs = vec![1.0; n];
    for k in 0..n {
        let col: Vec<f64> = (k..n).map(|i| g[i * n + k]).collect();
        let alpha = norm(&col);
        let s = if col[0] >= 0.0 { 1.0 } else { -1.0 };
        let mut v = col;
        v[0] += s * alpha;
        let vn = norm(&v);
        if vn > 0.0 {
            v.iter_mut().for_each(|x| *x /= vn);
        }
        // G[k.., k..] −= 2 v (vᵀ G[k.., k..]); R_kk becomes −s·‖col‖.
        for c in k..n {
            let t: f64 = (k..n).map(|i| v[i - k] * g[i * n + c]).sum();
            (k..n).for_each(|i| g[i * n + c] -= 2.0 * v[i - k] * t);
        }
        signs[k] = if g[k * n + k] >= 0.0 { 1.0 } else { -1.0 };
        reflectors.push(v);
    }
    // Q = H_0 H_1 … H_{n−1} · diag(signs), applied to the identity from the last reflector.
    let mut q: Vec<f64> = (0..n * n)
        .map(|i| if i.is_multiple_of(n + 1) { 1.0 } else { 0.0 })
        .collect();
    for (k, v) in reflectors.iter().enumerate().rev() {
        for c in 0..n {
            let t: f64 = (k..n).map(|i| v[i - k] * q[i * n + c]).sum();
            (k..n).for_each(|i| q[i * n + c] -= 2.0 * v[i - k] * t);
        }
    }
    q.chunks_exact_mut(n.max(1))
        .for_each(|row| row.iter_mut().zip(&signs).for_each(|(x, s)| *x *= s));
    q
}

/// A random symmetric matrix Q·diag(λ)·Qᵀ, row-major, with Q = [`random_orthogonal`]`(n, seed)`
/// and λ = `eigenvalues` (length n; SPD when all are positive). Column i of Q is the
/// eigenvector of λ_i.
pub fn random_spd(n: usize, eigenvalues: &[f64], seed: u64) -> Vec<f64> {
    assert_eq!(eigenvalues.len(), n, "random_spd needs n eigenvalues");
    let q = random_orthogonal(n, seed);
    let mut a = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            a[r * n + c] = (0..n)
                .map(|k| q[r * n + k] * eigenvalues[k] * q[c * n + k])
                .sum();
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(n: usize, apply: impl Fn(&[f64], &mut [f64])) -> Vec<f64> {
        // Column c of the operator, stored at a[r·n + c].
        let mut a = vec![0.0; n * n];
        let (mut e, mut col) = (vec![0.0; n], vec![0.0; n]);
        for c in 0..n {
            e[c] = 1.0;
            apply(&e, &mut col);
            e[c] = 0.0;
            (0..n).for_each(|r| a[r * n + c] = col[r]);
        }
        a
    }

    /// Direct solve by Gaussian elimination with partial pivoting.
    fn solve(n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        for k in 0..n {
            let p = (k..n).max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()));
            let p = p.unwrap();
            (0..n).for_each(|c| a.swap(k * n + c, p * n + c));
            b.swap(k, p);
            for i in k + 1..n {
                let f = a[i * n + k] / a[k * n + k];
                (k..n).for_each(|c| a[i * n + c] -= f * a[k * n + c]);
                b[i] -= f * b[k];
            }
        }
        for k in (0..n).rev() {
            let s: f64 = (k + 1..n).map(|c| a[k * n + c] * b[c]).sum();
            b[k] = (b[k] - s) / a[k * n + k];
        }
        b
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn poisson_stencils_subtract_the_neighbours_inside_the_grid() {
        let (nx, ny, nz) = (4, 3, 2);
        let ones = vec![1.0; nx * ny];
        let mut y = vec![0.0; nx * ny];
        poisson2d_apply(nx, ny, &ones, &mut y);
        // Row sum = number of missing neighbours.
        assert_eq!(y, [2., 1., 1., 2., 1., 0., 0., 1., 2., 1., 1., 2.]);
        let n = nx * ny * nz;
        let a = dense(n, |x, y| poisson3d_apply(nx, ny, nz, x, y));
        for r in 0..n {
            assert_eq!(a[r * n + r], 6.0);
            for c in 0..n {
                assert_eq!(a[r * n + c], a[c * n + r], "symmetric");
            }
        }
        // (i, j, k) = (1, 1, 0) has five in-grid neighbours: missing only k − 1.
        let at = 1 + nx;
        assert_eq!(a[at * n..(at + 1) * n].iter().sum::<f64>(), 1.0);
        assert_eq!(a[at * n + at + nx * ny], -1.0);
    }

    #[test]
    fn dense_and_csr_agree() {
        // [[2, 0, 1], [0, 0, 0], [-1, 3, 0]]
        let a = [2.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 3.0, 0.0];
        let x = [1.0, 2.0, 3.0];
        let (mut yd, mut ys) = (vec![0.0; 3], vec![0.0; 3]);
        dense_apply(3, 3, &a, &x, &mut yd);
        csr_apply(
            &[0, 2, 2, 4],
            &[0, 2, 0, 1],
            &[2.0, 1.0, -1.0, 3.0],
            &x,
            &mut ys,
        );
        assert_eq!(yd, [5.0, 0.0, 5.0]);
        assert_eq!(ys, yd);
    }

    #[test]
    fn cg_matches_a_direct_solve_on_small_spd_systems() {
        let a2 = [4.0, 1.0, 1.0, 3.0];
        let out = cg(
            |x, y| dense_apply(2, 2, &a2, x, y),
            &[1.0, 2.0],
            None,
            1e-12,
            0.0,
            20,
            None,
        );
        assert!(out.converged && out.iterations <= 2);
        assert!(max_diff(&out.x, &[1.0 / 11.0, 7.0 / 11.0]) < 1e-12);
        let n = 8;
        let lambdas: Vec<f64> = (1..=n).map(|i| i as f64).collect();
        let a = random_spd(n, &lambdas, 7);
        let b: Vec<f64> = (0..n).map(|i| (i as f64).cos()).collect();
        let out = cg(
            |x, y| dense_apply(n, n, &a, x, y),
            &b,
            None,
            1e-12,
            0.0,
            10 * n,
            None,
        );
        assert!(out.converged && out.iterations <= n + 2);
        assert!(max_diff(&out.x, &solve(n, &a, &b)) < 1e-10);
        assert_eq!(out.history.len(), out.iterations + 1);
        assert_eq!(*out.history.last().unwrap(), out.residual_norm);
    }

    #[test]
    fn cg_follows_scipy_exits() {
        let a = [2.0, 0.0, 0.0, 5.0];
        let apply = |x: &[f64], y: &mut [f64]| dense_apply(2, 2, &a, x, y);
        // b = 0 returns b itself, converged, without iterating (even with an x0).
        let out = cg(apply, &[0.0, 0.0], Some(&[1.0, 1.0]), 1e-5, 0.0, 10, None);
        assert!(out.converged && out.iterations == 0 && out.x == [0.0, 0.0]);
        // An exact x0 passes the first test.
        let out = cg(apply, &[2.0, 5.0], Some(&[1.0, 1.0]), 1e-5, 0.0, 10, None);
        assert!(out.converged && out.iterations == 0 && out.x == [1.0, 1.0]);
        // Running out: iterations = maxiter, not converged, residual recorded at exit.
        let out = cg(apply, &[1.0, 1.0], None, 1e-30, 0.0, 1, None);
        assert!(!out.converged && out.iterations == 1 && out.history.len() == 2);
        // The test is strict: ‖r‖ = tol does not pass, atol can dominate rtol·‖b‖.
        let out = cg(apply, &[2.0, 0.0], None, 0.0, 2.0, 5, None);
        assert!(
            out.converged && out.iterations == 1,
            "‖r‖ = tol must not pass"
        );
        let out = cg(apply, &[2.0, 0.0], None, 0.0, 2.0 + 1e-9, 5, None);
        assert!(out.converged && out.iterations == 0);
    }

    #[test]
    fn cg_solves_poisson_2d_within_n_iterations() {
        let (nx, ny) = (16, 16);
        let n = nx * ny;
        let b: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64).collect();
        let apply = |x: &[f64], y: &mut [f64]| poisson2d_apply(nx, ny, x, y);
        let out = cg(apply, &b, None, 1e-10, 0.0, 10 * n, None);
        assert!(out.converged && out.iterations <= n, "{}", out.iterations);
        let mut ax = vec![0.0; n];
        apply(&out.x, &mut ax);
        let true_res: Vec<f64> = b.iter().zip(&ax).map(|(b, a)| b - a).collect();
        assert!(norm(&true_res) < 1e-9 * norm(&b));
    }

    #[test]
    fn jacobi_beats_plain_cg_on_a_badly_scaled_matrix() {
        // Tridiagonal, diagonally dominant, diagonal spanning four decades.
        let n = 100;
        let d: Vec<f64> = (0..n)
            .map(|i| 2.5 + 10f64.powf(4.0 * i as f64 / (n - 1) as f64))
            .collect();
        let apply = |x: &[f64], y: &mut [f64]| {
            for i in 0..n {
                let left = if i > 0 { x[i - 1] } else { 0.0 };
                let right = if i + 1 < n { x[i + 1] } else { 0.0 };
                y[i] = d[i] * x[i] - left - right;
            }
        };
        let b = vec![1.0; n];
        let plain = cg(apply, &b, None, 1e-10, 0.0, 10 * n, None);
        let jacobi = cg(apply, &b, None, 1e-10, 0.0, 10 * n, Some(&d));
        assert!(plain.converged && jacobi.converged);
        assert!(
            jacobi.iterations * 3 < plain.iterations,
            "{} vs {}",
            jacobi.iterations,
            plain.iterations
        );
        assert!(max_diff(&plain.x, &jacobi.x) < 1e-9);
    }

    #[test]
    fn lanczos_reproduces_the_spectrum_and_stops_on_invariant_subspaces() {
        let n = 30;
        let lambdas: Vec<f64> = (0..n).map(|i| (i as f64 + 1.0).ln()).collect();
        let a = random_spd(n, &lambdas, 3);
        let v0 = vec![1.0; n];
        let (alpha, beta) = lanczos(|x, y| dense_apply(n, n, &a, x, y), &v0, n);
        assert_eq!((alpha.len(), beta.len()), (n, n - 1));
        // T is orthogonally similar to A: same trace and Frobenius norm.
        let frob2 = alpha.iter().map(|a| a * a).sum::<f64>()
            + 2.0 * beta.iter().map(|b| b * b).sum::<f64>();
        assert!((alpha.iter().sum::<f64>() - lambdas.iter().sum::<f64>()).abs() < 1e-10);
        assert!((frob2 - lambdas.iter().map(|l| l * l).sum::<f64>()).abs() < 1e-9);
        // diag(1, 1, 2, 2, 3, 3) from all-ones has a 3-dimensional Krylov space.
        let diag = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let apply = |x: &[f64], y: &mut [f64]| {
            y.iter_mut()
                .enumerate()
                .for_each(|(i, y)| *y = diag[i] * x[i])
        };
        let (alpha, beta) = lanczos(apply, &[1.0; 6], 6);
        assert_eq!((alpha.len(), beta.len()), (3, 2));
        assert!((alpha.iter().sum::<f64>() - 6.0).abs() < 1e-12);
    }

    #[test]
    fn random_spd_has_the_requested_eigenpairs() {
        let n = 12;
        let lambdas: Vec<f64> = (0..n).map(|i| 0.5 + i as f64 * i as f64).collect();
        let q = random_orthogonal(n, 42);
        let a = random_spd(n, &lambdas, 42);
        assert_eq!(a, random_spd(n, &lambdas, 42), "deterministic per seed");
        assert_ne!(a, random_spd(n, &lambdas, 43));
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((trace - lambdas.iter().sum::<f64>()).abs() < 1e-10);
        for i in 0..n {
            for j in 0..n {
                let qtq: f64 = (0..n).map(|k| q[k * n + i] * q[k * n + j]).sum();
                assert!((qtq - if i == j { 1.0 } else { 0.0 }).abs() < 1e-13);
            }
            let qi: Vec<f64> = (0..n).map(|k| q[k * n + i]).collect();
            let mut aq = vec![0.0; n];
            dense_apply(n, n, &a, &qi, &mut aq);
            let lq: Vec<f64> = qi.iter().map(|v| lambdas[i] * v).collect();
            assert!(max_diff(&aq, &lq) < 1e-12 * lambdas[n - 1]);
        }
    }
}
