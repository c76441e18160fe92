//! Spectral density from stochastic Lanczos quadrature, as PyHessian's `density_generate`
//! (`density_plot.py`) computes it: each run's Gauss-quadrature nodes (eigenvalues of the
//! Lanczos tridiagonal) and weights (first eigenvector components squared) are smeared by a
//! Gaussian kernel on a uniform grid, averaged over runs and normalised to unit mass.

use crate::error::{Error, Result};

/// Grid and kernel settings of [`slq_density`]; the defaults are PyHessian's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DensityOptions {
    /// Number of grid points (PyHessian's `num_bins`), at least 2. Default 10,000.
    pub bins: usize,
    /// Kernel variance per unit of spectral width: the Gaussian's *variance* is
    /// `sigma_squared · max(1, λmax − λmin)`. Default 1e-5.
    pub sigma_squared: f64,
    /// Margin added on both sides of the mean extreme nodes. Default 0.01.
    pub overhead: f64,
}

impl Default for DensityOptions {
    fn default() -> Self {
        DensityOptions {
            bins: 10_000,
            sigma_squared: 1e-5,
            overhead: 0.01,
        }
    }
}

/// A spectral density sampled on a uniform grid, normalised so that Σ density·Δ = 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Density {
    /// Grid points, ascending and evenly spaced.
    pub grid: Vec<f64>,
    /// Density at each grid point.
    pub density: Vec<f64>,
}

impl Density {
    /// The k-th moment Σ gridᵏ·density·Δ of the smoothed density (Δ = grid spacing); NaN
    /// for a grid of fewer than two points.
    pub fn moment(&self, k: u32) -> f64 {
        let delta = match self.grid.as_slice() {
            [first, second, ..] => second - first,
            _ => return f64::NAN,
        };
        let sum: f64 = self
            .grid
            .iter()
            .zip(&self.density)
            .map(|(x, d)| x.powf(f64::from(k)) * d)
            .sum();
        sum * delta
    }
}

/// PyHessian's `density_generate`: `runs` holds one `(nodes, weights)` pair per Lanczos run.
///
/// The grid spans [mean of the runs' smallest nodes − overhead, mean of their largest nodes +
/// overhead] with `bins` points (as `np.linspace`); each node contributes
/// weight·N(grid; node, σ²) with variance σ² = `sigma_squared`·max(1, grid span); the per-run
/// densities are averaged and divided by Σ density·Δ. Runs may have different lengths.
///
/// # Errors
/// [`Error::Empty`] for no runs or a run without nodes, [`Error::LengthMismatch`] if a run's
/// weights and nodes differ in length, and [`Error::InvalidParameter`] for non-finite nodes or
/// weights, `bins` < 2, `sigma_squared` not finite and positive, `overhead` not finite and
/// non-negative, a grid of zero width, or a kernel so narrow that it vanishes on every grid
/// point (where numpy would return NaN).
pub fn slq_density(runs: &[(Vec<f64>, Vec<f64>)], options: &DensityOptions) -> Result<Density> {
    if runs.is_empty() {
        return Err(Error::Empty { argument: "runs" });
    }
    for (nodes, weights) in runs {
        if nodes.is_empty() {
            return Err(Error::Empty { argument: "nodes" });
        }
        if weights.len() != nodes.len() {
            return Err(Error::LengthMismatch {
                argument: "weights",
                expected: nodes.len(),
                actual: weights.len(),
            });
        }
        if let Some(&v) = nodes.iter().find(|v| !v.is_finite()) {
            return Err(Error::param("nodes", v, "finite"));
        }
        if let Some(&v) = weights.iter().find(|v| !v.is_finite()) {
            return Err(Error::param("weights", v, "finite"));
        }
    }
    let DensityOptions {
        bins,
        sigma_squared,
        overhead,
    } = *options;
    if bins < 2 {
        return Err(Error::param("bins", bins as f64, ">= 2"));
    }
    if !(sigma_squared.is_finite() && sigma_squared > 0.0) {
        return Err(Error::param(
            "sigma_squared",
            sigma_squared,
            "finite and > 0",
        ));
    }
    if !(overhead.is_finite() && overhead >= 0.0) {
        return Err(Error::param("overhead", overhead, "finite and >= 0"));
    }
    let count = runs.len() as f64;
    let mean_extreme = |pick: fn(f64, f64) -> f64| {
        let sum: f64 = runs
            .iter()
            .map(|(n, _)| n.iter().copied().fold(n[0], pick))
            .sum();
        sum / count
    };
    let lambda_max = mean_extreme(f64::max) + overhead;
    let lambda_min = mean_extreme(f64::min) - overhead;
    let span = lambda_max - lambda_min;
    if !(span.is_finite() && span > 0.0) {
        return Err(Error::param(
            "overhead",
            overhead,
            "such that the grid has finite, positive width",
        ));
    }
    // np.linspace: start + j·step, with the last point set to stop exactly.
    let step = span / (bins - 1) as f64;
    let mut grid: Vec<f64> = (0..bins).map(|j| lambda_min + j as f64 * step).collect();
    grid[bins - 1] = lambda_max;
    let variance = sigma_squared * span.max(1.0);
    let scale = 1.0 / (2.0 * std::f64::consts::PI * variance).sqrt();
    let mut density: Vec<f64> = grid
        .iter()
        .map(|&x| {
            let total: f64 = runs
                .iter()
                .map(|(nodes, weights)| {
                    let run: f64 = nodes
                        .iter()
                        .zip(weights)
                        .map(|(&node, &w)| (-(x - node).powi(2) / (2.0 * variance)).exp() * w)
                        .sum();
                    run * scale
                })
                .sum();
            total / count
        })
        .collect();
    let norm = density.iter().sum::<f64>() * (grid[1] - grid[0]);
    if !(norm.is_finite() && norm > 0.0) {
        return Err(Error::param(
            "sigma_squared",
            sigma_squared,
            "large enough that the kernels do not vanish on the grid (and weights of positive sum)",
        ));
    }
    density.iter_mut().for_each(|d| *d /= norm);
    Ok(Density { grid, density })
}

/// The quadrature estimate of tr(Aᵏ)/n: the mean over runs of Σ weight·nodeᵏ. Returns NaN
/// for no runs; each run's nodes and weights are paired up to the shorter of the two.
pub fn spectral_moment(runs: &[(Vec<f64>, Vec<f64>)], k: u32) -> f64 {
    let sum: f64 = runs
        .iter()
        .map(|(nodes, weights)| {
            let run: f64 = nodes
                .iter()
                .zip(weights)
                .map(|(x, w)| w * x.powf(f64::from(k)))
                .sum();
            run
        })
        .sum();
    sum / runs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::krylov::tridiag::tridiagonal_eigen;
    use crate::reference::krylov::lanczos;

    fn mass_where(d: &Density, keep: impl Fn(f64) -> bool) -> f64 {
        let delta = d.grid[1] - d.grid[0];
        let inside = d.grid.iter().zip(&d.density).filter(|(x, _)| keep(**x));
        inside.map(|(_, v)| v).sum::<f64>() * delta
    }

    #[test]
    fn one_node_gives_a_unit_gaussian_bump_on_the_node() {
        let density = slq_density(&[(vec![0.3], vec![1.0])], &DensityOptions::default()).unwrap();
        assert_eq!(density.grid.len(), 10_000);
        assert_eq!(density.grid[0], 0.3 - 0.01);
        assert_eq!(density.grid[9_999], 0.3 + 0.01);
        assert!((density.moment(0) - 1.0).abs() < 1e-12);
        assert!((density.moment(1) - 0.3).abs() < 1e-12);
        // Variance 1e-5, truncated at ±0.01 ≈ ±3.16σ, keeps 98% of it.
        let variance = density.moment(2) - 0.3 * 0.3;
        assert!((variance / 1e-5 - 0.983).abs() < 0.005, "{variance}");
        // Peak 1/√(2π·1e-5), lifted by the 0.16% of mass cut off.
        let peak = density.density.iter().copied().fold(0.0, f64::max);
        let expected = 1.0 / (2.0 * std::f64::consts::PI * 1e-5).sqrt() / 0.9984;
        assert!((peak / expected - 1.0).abs() < 1e-3, "{peak} vs {expected}");
    }

    #[test]
    fn runs_are_averaged() {
        let options = DensityOptions::default();
        let runs = [
            (vec![0.0, 1.0], vec![0.5, 0.5]),
            (vec![0.0, 1.0], vec![0.25, 0.75]),
        ];
        let averaged = slq_density(&runs, &options).unwrap();
        let merged = slq_density(&[(vec![0.0, 1.0], vec![0.375, 0.625])], &options).unwrap();
        assert_eq!(averaged.grid, merged.grid);
        for (a, b) in averaged.density.iter().zip(&merged.density) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
        }
        assert!((mass_where(&averaged, |x| x < 0.5) - 0.375).abs() < 1e-9);
        assert!((spectral_moment(&runs, 1) - 0.625).abs() < 1e-15);
    }

    #[test]
    fn lanczos_quadrature_is_exact_below_degree_two_m() {
        // A = diag(λ), v0 = 1/√n: v0ᵀAᵏv0 = (1/n)Σλᵏ, which m-point Gauss quadrature
        // reproduces exactly for k < 2m.
        let lambdas: Vec<f64> = (0..24).map(|i| 0.1 + (i as f64).powf(1.5) / 10.0).collect();
        let n = lambdas.len();
        let apply = |x: &[f64], y: &mut [f64]| {
            for ((yi, xi), l) in y.iter_mut().zip(x).zip(&lambdas) {
                *yi = l * xi;
            }
        };
        let m = 6;
        let (alpha, beta) = lanczos(apply, &vec![1.0 / (n as f64).sqrt(); n], m);
        assert_eq!(alpha.len(), m);
        let eig = tridiagonal_eigen(&alpha, &beta).unwrap();
        let weights: Vec<f64> = eig.first_components.iter().map(|c| c * c).collect();
        let runs = [(eig.values, weights)];
        for k in 0..2 * m as u32 {
            let exact = lambdas.iter().map(|l| l.powi(k as i32)).sum::<f64>() / n as f64;
            let quad = spectral_moment(&runs, k);
            assert!(
                (quad / exact - 1.0).abs() < 1e-10,
                "k={k}: {quad} vs {exact}"
            );
        }
        // Degree 2m is no longer exact.
        let k = 2 * m as i32;
        let exact = lambdas.iter().map(|l| l.powi(k)).sum::<f64>() / n as f64;
        assert!((spectral_moment(&runs, k as u32) / exact - 1.0).abs() > 1e-6);
    }

    #[test]
    fn bad_input_is_named() {
        let ok = DensityOptions::default();
        let run = |n: Vec<f64>, w: Vec<f64>| vec![(n, w)];
        let name = |r: Result<Density>| match r {
            Err(Error::InvalidParameter { name, .. }) => name,
            Err(Error::Empty { argument }) | Err(Error::LengthMismatch { argument, .. }) => {
                argument
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(name(slq_density(&[], &ok)), "runs");
        assert_eq!(name(slq_density(&run(vec![], vec![]), &ok)), "nodes");
        assert_eq!(name(slq_density(&run(vec![1.0], vec![]), &ok)), "weights");
        assert_eq!(
            name(slq_density(&run(vec![f64::NAN], vec![1.0]), &ok)),
            "nodes"
        );
        let one = run(vec![1.0], vec![1.0]);
        let with = |o: DensityOptions| slq_density(&one, &o);
        assert_eq!(name(with(DensityOptions { bins: 1, ..ok })), "bins");
        assert_eq!(
            name(with(DensityOptions {
                sigma_squared: 0.0,
                ..ok
            })),
            "sigma_squared"
        );
        assert_eq!(
            name(with(DensityOptions {
                overhead: 0.0,
                ..ok
            })),
            "overhead"
        );
        // Two far nodes in different runs: PyHessian's grid sits between them, kernels vanish.
        let far = [(vec![0.0], vec![1.0]), (vec![1.0], vec![1.0])];
        assert_eq!(name(slq_density(&far, &ok)), "sigma_squared");
    }
}
