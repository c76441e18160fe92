//! Entropic optimal-transport references in f64: ground costs between point clouds, POT's
//! log-domain Sinkhorn (`ot.bregman.sinkhorn_log`) with its exact iteration and stopping
//! rule, the plan and its marginals from dual potentials, and the synthetic test data
//! (uniform point clouds, Gaussian-blob images on a pixel grid). Written from the published
//! algorithm (see shared/ALGORITHMS.md, "Optimal transport"), independently of the shaders.
//!
//! Conventions: matrices are row-major `Vec<f64>`; a point cloud of n points in `dim`
//! dimensions is n×`dim`; a cost or plan between n source and m target points is n×m. Dual
//! potentials f (n) and g (m) are in cost units, so the plan is
//! P_ij = exp((f_i + g_j − C_ij)/reg). Every function panics on slices of the wrong length
//! (or the other preconditions it documents): these are test references, so a misuse should
//! fail loudly.

use super::splitmix::SplitMix64;

/// Checks that `x` (n×`dim`) and `y` (m×`dim`) are whole point clouds and returns (n, m).
fn cloud_sizes(x: &[f64], y: &[f64], dim: usize) -> (usize, usize) {
    assert!(dim > 0, "point dimension must be positive");
    assert!(
        x.len().is_multiple_of(dim),
        "x has {} values, not a multiple of dim = {dim}",
        x.len()
    );
    assert!(
        y.len().is_multiple_of(dim),
        "y has {} values, not a multiple of dim = {dim}",
        y.len()
    );
    (x.len() / dim, y.len() / dim)
}

/// The n×m squared-Euclidean cost C_ij = Σ_k (x_ik − y_jk)² between the rows of `x` (n×`dim`)
/// and `y` (m×`dim`). Computed from the differences, not as ‖x‖² + ‖y‖² − 2x·y, so that
/// C_ii is exactly 0 for coincident points and no entry is negative.
pub fn sq_euclidean_cost(x: &[f64], y: &[f64], dim: usize) -> Vec<f64> {
    let (n, m) = cloud_sizes(x, y, dim);
    let mut c = Vec::with_capacity(n * m);
    for xi in x.chunks_exact(dim) {
        for yj in y.chunks_exact(dim) {
            c.push(xi.iter().zip(yj).map(|(a, b)| (a - b) * (a - b)).sum());
        }
    }
    c
}

/// The n×m ℓ_p distance C_ij = (Σ_k |x_ik − y_jk|^p)^(1/p) between the rows of `x` (n×`dim`)
/// and `y` (m×`dim`), for p ≥ 1 (p = 1 is the L1 / Manhattan distance, p = ∞ the maximum
/// coordinate difference). p = 1 and p = 2 avoid `powf` so that they are as exact as the plain
/// sums (p = 2 is the Euclidean distance, the square root of [`sq_euclidean_cost`]).
/// Panics if p < 1 or p is NaN.
pub fn lp_cost(x: &[f64], y: &[f64], dim: usize, p: f64) -> Vec<f64> {
    assert!(p >= 1.0, "lp_cost needs p ≥ 1, got {p}");
    let (n, m) = cloud_sizes(x, y, dim);
    let dist = |xi: &[f64], yj: &[f64]| -> f64 {
        let d = xi.iter().zip(yj).map(|(a, b)| (a - b).abs());
        if p == 1.0 {
            d.sum()
        } else if p == 2.0 {
            d.map(|t| t * t).sum::<f64>().sqrt()
        } else if p.is_infinite() {
            d.fold(0.0, f64::max)
        } else {
            d.map(|t| t.powf(p)).sum::<f64>().powf(1.0 / p)
        }
    };
    let mut c = Vec::with_capacity(n * m);
    for xi in x.chunks_exact(dim) {
        for yj in y.chunks_exact(dim) {
            c.push(dist(xi, yj));
        }
    }
    c
}

/// The outcome of [`sinkhorn_log`].
#[derive(Clone, Debug)]
pub struct SinkhornLog {
    /// Source dual potential f = reg·u (n entries, cost units).
    pub f: Vec<f64>,
    /// Target dual potential g = reg·v (m entries, cost units).
    pub g: Vec<f64>,
    /// The number of (v, u) update pairs performed: ii + 1 when the loop broke at iteration
    /// index ii, else `max_iter`. (POT's `log["niter"]` is the last index ii, one less.)
    pub iterations: usize,
    /// Whether a recorded error fell strictly below `tol`.
    pub converged: bool,
    /// Every recorded target-marginal error ‖Pᵀ1 − b‖₂, in order: one per iteration index ii
    /// with ii % `check_every` == 0 that was reached.
    pub errors: Vec<f64>,
}

/// log Σ_k exp(z_k) with the maximum subtracted, as `scipy.special.logsumexp` (POT's numpy
/// backend) computes it: a non-finite maximum (all terms −∞) is replaced by 0, so an empty
/// mass gives −∞ rather than NaN.
fn logsumexp(z: impl Iterator<Item = f64> + Clone) -> f64 {
    let mut max = z.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        max = 0.0;
    }
    z.map(|t| (t - max).exp()).sum::<f64>().ln() + max
}

/// Log-domain Sinkhorn exactly as POT's `ot.bregman.sinkhorn_log(a, b, M, reg, numItermax,
/// stopThr)` runs it (one histogram pair), with POT's hard-coded check period 10 made the
/// parameter `check_every` (pass 10 to match POT).
///
/// `a` (n) and `b` (m) are the marginals, `c` the n×m cost, `reg` the entropic
/// regularisation (η = 1/reg). With Mr = −C/reg, u = 0 (n), v = 0 (m), and LSE the
/// max-subtracted log-sum-exp:
///
/// ```text
/// for ii in 0..max_iter:
///     v_j = log b_j − LSE_i(Mr_ij + u_i)          (all j, using the old u)
///     u_i = log a_i − LSE_j(Mr_ij + v_j)          (all i, using the new v)
///     if ii % check_every == 0:
///         err = ‖Σ_i exp(Mr_ij + u_i + v_j) − b_j‖₂   (the target marginal; the source
///                                                  marginal is exact after the u update)
///         record err
///         if err < tol: break                       (strict)
/// ```
///
/// So errors are measured after 1, 1 + check_every, 1 + 2·check_every, … updates (after 1,
/// 11, 21, … for POT), `errors` has ⌈max_iter / check_every⌉ entries when it never
/// converges, and a converged run has `iterations` ≡ 1 (mod `check_every`). `iterations` is
/// ii + 1 at the break, else `max_iter`; `max_iter` = 0 does nothing (f = g = 0, no errors,
/// not converged). The returned potentials are f = reg·u, g = reg·v.
///
/// Panics if `check_every` is 0, `reg` is not positive, or the lengths disagree.
pub fn sinkhorn_log(
    a: &[f64],
    b: &[f64],
    c: &[f64],
    reg: f64,
    max_iter: usize,
    tol: f64,
    check_every: usize,
) -> SinkhornLog {
    let (n, m) = (a.len(), b.len());
    assert!(
        c.len() == n * m,
        "cost has {} entries, expected n·m = {n}·{m}",
        c.len()
    );
    assert!(reg > 0.0, "reg must be positive, got {reg}");
    assert!(check_every > 0, "check_every must be at least 1");
    // POT forms Mr = −M/reg once; the updates add u or v to it, so rounding matches POT's.
    let mr: Vec<f64> = c.iter().map(|&cij| -cij / reg).collect();
    let log_a: Vec<f64> = a.iter().map(|x| x.ln()).collect();
    let log_b: Vec<f64> = b.iter().map(|x| x.ln()).collect();
    let (mut u, mut v) = (vec![0.0; n], vec![0.0; m]);
    let mut errors = Vec::new();
    let mut iterations = max_iter;
    let mut converged = false;
    for ii in 0..max_iter {
        for j in 0..m {
            v[j] = log_b[j] - logsumexp((0..n).map(|i| mr[i * m + j] + u[i]));
        }
        for i in 0..n {
            let row = &mr[i * m..(i + 1) * m];
            u[i] = log_a[i] - logsumexp(row.iter().zip(&v).map(|(r, vj)| r + vj));
        }
        if ii % check_every == 0 {
            let err = (0..m)
                .map(|j| {
                    let col: f64 = (0..n).map(|i| (mr[i * m + j] + u[i] + v[j]).exp()).sum();
                    (col - b[j]) * (col - b[j])
                })
                .sum::<f64>()
                .sqrt();
            errors.push(err);
            if err < tol {
                iterations = ii + 1;
                converged = true;
                break;
            }
        }
    }
    SinkhornLog {
        f: u.iter().map(|x| reg * x).collect(),
        g: v.iter().map(|x| reg * x).collect(),
        iterations,
        converged,
        errors,
    }
}

/// Checks the shapes of a cost and two potentials and returns (n, m).
fn plan_sizes(c: &[f64], f: &[f64], g: &[f64]) -> (usize, usize) {
    let (n, m) = (f.len(), g.len());
    assert!(
        c.len() == n * m,
        "cost has {} entries, expected f.len()·g.len() = {n}·{m}",
        c.len()
    );
    (n, m)
}

/// The n×m entropic plan P_ij = exp((f_i + g_j − C_ij)/reg) of dual potentials `f` (n) and
/// `g` (m) in cost units (as [`sinkhorn_log`] returns them).
pub fn plan(c: &[f64], f: &[f64], g: &[f64], reg: f64) -> Vec<f64> {
    let (_, m) = plan_sizes(c, f, g);
    c.iter()
        .enumerate()
        .map(|(k, cij)| ((f[k / m] + g[k % m] - cij) / reg).exp())
        .collect()
}

/// The transport cost ⟨C, P⟩ = Σ_ij C_ij·P_ij of the plan of `f`, `g` (see [`plan`]); the
/// entropy term is not included.
pub fn transport_cost(c: &[f64], f: &[f64], g: &[f64], reg: f64) -> f64 {
    plan(c, f, g, reg).iter().zip(c).map(|(p, c)| p * c).sum()
}

/// The marginals (P·1, Pᵀ·1) of the plan of `f`, `g` (see [`plan`]): row sums (n) and column
/// sums (m), to compare with a and b.
pub fn marginals(c: &[f64], f: &[f64], g: &[f64], reg: f64) -> (Vec<f64>, Vec<f64>) {
    let (n, m) = plan_sizes(c, f, g);
    let p = plan(c, f, g, reg);
    let mut cols = vec![0.0; m];
    let rows = p
        .chunks_exact(m.max(1))
        .take(n)
        .map(|row| {
            cols.iter_mut().zip(row).for_each(|(s, x)| *s += x);
            row.iter().sum()
        })
        .collect();
    (rows, cols)
}

/// A uniform draw in [0, 1] from the shared SplitMix64 stream, through Box–Muller normals:
/// for independent standard normals z₁, z₂, z₁² + z₂² is exponential with mean 2, hence
/// exp(−(z₁² + z₂²)/2) is uniform (four raw draws per value). `SplitMix64::uniform` would do
/// with one draw, but the OT tests' points, and the tolerances set on them, come from this
/// mapping, so it stays.
fn uniform01(rng: &mut SplitMix64) -> f64 {
    let (z1, z2) = (rng.gaussian(), rng.gaussian());
    (-0.5 * (z1 * z1 + z2 * z2)).exp()
}

/// `n` points uniform in [0, 1]^`dim`, n×`dim` row-major, deterministic per `seed`
/// (SplitMix64, values drawn in row-major order).
pub fn random_points(n: usize, dim: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n * dim).map(|_| uniform01(&mut rng)).collect()
}

/// A `side`×`side` synthetic image, row-major (pixel (row r, column c) at r·side + c), for
/// image-to-image OT tests: the sum of isotropic Gaussian blobs
/// exp(−((c − cx)² + (r − cy)²)/(2σ²)), one per `(cx, cy, σ)` in pixel units (cx along the
/// columns, cy along the rows), plus a floor of 1e-3 × its maximum so that every pixel has
/// mass (log a stays finite), normalised to sum 1. Panics if `side` is 0, `centers` is empty
/// or a σ is not positive.
pub fn blob_image(side: usize, centers: &[(f64, f64, f64)]) -> Vec<f64> {
    assert!(side > 0, "image side must be positive");
    assert!(!centers.is_empty(), "blob_image needs at least one blob");
    assert!(
        centers.iter().all(|&(_, _, s)| s > 0.0),
        "blob widths must be positive"
    );
    let mut img: Vec<f64> = (0..side * side)
        .map(|k| {
            let (r, c) = ((k / side) as f64, (k % side) as f64);
            centers
                .iter()
                .map(|&(cx, cy, s)| {
                    (-((c - cx) * (c - cx) + (r - cy) * (r - cy)) / (2.0 * s * s)).exp()
                })
                .sum()
        })
        .collect();
    let floor = 1e-3 * img.iter().copied().fold(0.0, f64::max);
    img.iter_mut().for_each(|x| *x += floor);
    normalized(img)
}

/// The synthetic image problem of the OT benchmarks, tests and browser demo: two
/// `side`×`side` [`blob_image`]s with two Gaussian blobs each, placed for a 28×28 image
/// (centres and widths in pixels), so the mass must cross the image.
pub fn blob_image_pair(side: usize) -> (Vec<f64>, Vec<f64>) {
    (
        blob_image(side, &[(7.0, 8.0, 2.5), (19.0, 20.0, 3.0)]),
        blob_image(side, &[(20.0, 6.0, 3.5), (9.0, 21.0, 2.0)]),
    )
}

/// The side²×2 coordinates of the pixels of a `side`×`side` image, in [`blob_image`]'s
/// row-major order: pixel (row r, column c) is the point (c, r)/(side − 1), i.e. (x, y) with
/// x along the columns, both in [0, 1] (a 1×1 image is the single point (0, 0)).
pub fn pixel_grid(side: usize) -> Vec<f64> {
    let scale = if side > 1 {
        1.0 / (side - 1) as f64
    } else {
        0.0
    };
    (0..side * side)
        .flat_map(|k| [(k % side) as f64 * scale, (k / side) as f64 * scale])
        .collect()
}

/// `v` divided by its sum (a histogram of total mass 1). Panics unless the sum is positive
/// and finite.
pub fn normalized(mut v: Vec<f64>) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    assert!(s > 0.0 && s.is_finite(), "cannot normalise: sum is {s}");
    v.iter_mut().for_each(|x| *x /= s);
    v
}

/// `c` divided by its maximum, so a non-negative cost lies in [0, 1] (the normalisation of the
/// SNS / SSNS experiments, where η = 1200 refers to such costs). Panics unless the maximum is
/// positive and finite.
pub fn scaled_to_unit_max(mut c: Vec<f64>) -> Vec<f64> {
    let mx = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(mx > 0.0 && mx.is_finite(), "cannot scale: maximum is {mx}");
    c.iter_mut().for_each(|x| *x /= mx);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// A 3×4 problem: random points in the unit square, squared-Euclidean cost, random
    /// histograms bounded away from 0.
    fn tiny() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let x = random_points(3, 2, 1);
        let y = random_points(4, 2, 2);
        let w = random_points(7, 1, 3);
        let a = normalized(w[..3].iter().map(|t| 0.5 + t).collect());
        let b = normalized(w[3..].iter().map(|t| 0.5 + t).collect());
        (a, b, sq_euclidean_cost(&x, &y, 2))
    }

    #[test]
    fn costs_on_known_points() {
        let x = [0.0, 0.0, 1.0, 2.0];
        let y = [3.0, 4.0];
        assert_eq!(sq_euclidean_cost(&x, &y, 2), vec![25.0, 8.0]);
        assert_eq!(lp_cost(&x, &y, 2, 1.0), vec![7.0, 4.0]);
        assert_eq!(lp_cost(&x, &y, 2, 2.0), vec![5.0, 8f64.sqrt()]);
        assert_eq!(lp_cost(&x, &y, 2, f64::INFINITY), vec![4.0, 2.0]);
        let p3 = lp_cost(&x, &y, 2, 3.0);
        assert!((p3[0] - 91f64.cbrt()).abs() < 1e-14);
        // The generic power path agrees with the special cases.
        let generic = lp_cost(&x, &y, 2, 2.0 + 1e-15);
        assert!(max_abs_diff(&generic, &[5.0, 8f64.sqrt()]) < 1e-12);
    }

    #[test]
    #[should_panic(expected = "not a multiple of dim")]
    fn cost_rejects_ragged_points() {
        sq_euclidean_cost(&[0.0; 5], &[0.0; 4], 2);
    }

    #[test]
    fn converged_marginals_match() {
        let (a, b, c) = tiny();
        let out = sinkhorn_log(&a, &b, &c, 0.1, 10_000, 1e-14, 10);
        assert!(out.converged, "errors {:?}", out.errors);
        assert_eq!(out.iterations % 10, 1);
        let (rows, cols) = marginals(&c, &out.f, &out.g, 0.1);
        assert!(max_abs_diff(&rows, &a) < 1e-12);
        assert!(max_abs_diff(&cols, &b) < 1e-12);
        // The last recorded error is the target-marginal violation of the returned plan.
        let err = cols
            .iter()
            .zip(&b)
            .map(|(s, t)| (s - t) * (s - t))
            .sum::<f64>()
            .sqrt();
        assert!((err - out.errors.last().unwrap()).abs() < 1e-15);
        let p = plan(&c, &out.f, &out.g, 0.1);
        let cost: f64 = p.iter().zip(&c).map(|(p, c)| p * c).sum();
        assert_eq!(cost, transport_cost(&c, &out.f, &out.g, 0.1));
        assert!(p.iter().all(|&x| x > 0.0));
    }

    #[test]
    fn large_reg_gives_independent_coupling() {
        let (a, b, c) = tiny();
        let reg = 1e6;
        let out = sinkhorn_log(&a, &b, &c, reg, 1000, 1e-15, 10);
        let p = plan(&c, &out.f, &out.g, reg);
        let outer: Vec<f64> = a
            .iter()
            .flat_map(|ai| b.iter().map(move |bj| ai * bj))
            .collect();
        // C ≤ 2 on the unit square, so P deviates from a·bᵀ by O(C/reg) ≈ 1e-6 relatively.
        let rel = p
            .iter()
            .zip(&outer)
            .map(|(p, o)| (p - o).abs() / o)
            .fold(0.0, f64::max);
        assert!(rel < 1e-5, "relative deviation {rel}");
    }

    #[test]
    fn separated_cost_gives_diagonal_plan() {
        let n = 4;
        let a = normalized(vec![1.0, 2.0, 3.0, 4.0]);
        let c: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 0.0 } else { 50.0 })
            .collect();
        let out = sinkhorn_log(&a, &a, &c, 1.0, 100, 1e-15, 10);
        assert!(out.converged);
        let p = plan(&c, &out.f, &out.g, 1.0);
        let diag: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { a[k / n] } else { 0.0 })
            .collect();
        // Off-diagonal mass is about exp(−50) ≈ 2e-22 relative.
        assert!(max_abs_diff(&p, &diag) < 1e-15);
    }

    #[test]
    fn iteration_counting_follows_pot() {
        let (a, b, c) = tiny();
        // tol = 0 can never be met (the test is strict).
        let one = sinkhorn_log(&a, &b, &c, 0.05, 1, 0.0, 10);
        assert_eq!(
            (one.iterations, one.errors.len(), one.converged),
            (1, 1, false)
        );
        let long = sinkhorn_log(&a, &b, &c, 0.05, 25, 0.0, 10);
        assert_eq!((long.iterations, long.errors.len()), (25, 3));
        assert!(!long.converged);
        let exact = sinkhorn_log(&a, &b, &c, 0.05, 20, 0.0, 10);
        assert_eq!(exact.errors.len(), 2);
        let every = sinkhorn_log(&a, &b, &c, 0.05, 7, 0.0, 1);
        assert_eq!(every.errors.len(), 7);
        // A loose tolerance is met at the first check, after one update.
        let loose = sinkhorn_log(&a, &b, &c, 0.05, 25, 10.0, 10);
        assert_eq!((loose.iterations, loose.errors.len()), (1, 1));
        assert!(loose.converged);
        // The first recorded error is the same whatever the period.
        assert_eq!(one.errors[0], every.errors[0]);
        assert_eq!(long.errors[..2], exact.errors[..]);
        // Nothing to do.
        let none = sinkhorn_log(&a, &b, &c, 0.05, 0, 1.0, 10);
        assert_eq!((none.iterations, none.errors.len()), (0, 0));
        assert!(none.f.iter().chain(&none.g).all(|&x| x == 0.0));
        // A converged run stops at a checked index: iterations ≡ 1 (mod check_every).
        let run = sinkhorn_log(&a, &b, &c, 0.05, 10_000, 1e-10, 10);
        assert!(run.converged && run.iterations % 10 == 1);
        assert_eq!(run.errors.len(), run.iterations.div_ceil(10));
        assert!(run.errors[..run.errors.len() - 1]
            .iter()
            .all(|&e| e >= 1e-10));
    }

    #[test]
    fn test_data_shapes() {
        let pts = random_points(1000, 3, 7);
        assert!(pts.iter().all(|&t| (0.0..=1.0).contains(&t)));
        let mean = pts.iter().sum::<f64>() / pts.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert_eq!(random_points(5, 2, 9), random_points(5, 2, 9));

        let img = blob_image(8, &[(2.0, 3.0, 1.5), (6.0, 5.0, 1.0)]);
        assert_eq!(img.len(), 64);
        assert!((img.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        let (lo, hi) = img
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
        assert!(lo > 0.0 && lo >= 0.9e-3 * hi);
        // A blob centre (cx = 2 along the columns, cy = 3 along the rows) is brighter than
        // its transpose.
        assert!(img[3 * 8 + 2] > img[2 * 8 + 3]);

        let grid = pixel_grid(3);
        assert_eq!(grid.len(), 18);
        assert_eq!(&grid[..6], &[0.0, 0.0, 0.5, 0.0, 1.0, 0.0]);
        assert_eq!(&grid[16..], &[1.0, 1.0]);
        assert_eq!(pixel_grid(1), vec![0.0, 0.0]);

        let c = scaled_to_unit_max(sq_euclidean_cost(&grid, &grid, 2));
        assert_eq!(c.iter().copied().fold(0.0, f64::max), 1.0);
        assert_eq!(c[8], 1.0); // corner (0, 0) to corner (1, 1)
    }
}
