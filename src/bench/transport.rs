//! Optimal-transport benchmarks: the cost of one Sinkhorn iteration (dense against the copy
//! roofline, on the fly against the FMA roofline), and Sinkhorn against Sinkhorn-Newton-Sparse
//! to a marginal error of 1e-5 on the paper's problems.

use std::time::Instant;

use crate::buffer::GpuVec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::krylov::CgStats;
use crate::ot::{Cost, Masses, Metric, OtProblem, SinkhornConfig, SinkhornSolver, SnsConfig};
use crate::record::Recorder;
use crate::reference::ot as reference;

use super::solvers::SolverRun;

/// The regularisation of every problem here: η = 1200 on costs scaled to [0, 1].
pub const REG: f32 = 1.0 / 1200.0;

/// Marginal error both solvers run to (what f32 potentials hold at η = 1200).
pub const TOL: f32 = 1e-5;

/// Flops counted per plan entry and pass on the fly with `dim` coordinates: the squared
/// distance (3 per coordinate) and the log-sum-exp's subtract, scale and add (3); the exp
/// itself is not counted, so the fraction understates the work.
pub fn points_flops_per_entry(dim: usize) -> f64 {
    (3 * dim + 3) as f64
}

/// Problems of the solver comparison: `random_{n}` (n uniform points in [0, 1]², uniform
/// weights, squared-Euclidean cost scaled to [0, 1]: the paper's random problem) and
/// `images_784` (two 28×28 images of Gaussian blobs, squared-Euclidean ground cost between
/// pixel positions scaled to [0, 1]) and `l1_500` (the points of `random_500` under the L1
/// ground cost scaled to [0, 1], which plain SNS cannot solve at η = 1200).
pub const PROBLEMS: [&str; 5] = [
    "random_500",
    "random_2000",
    "random_5000",
    "images_784",
    "l1_500",
];

/// Host data of one of [`PROBLEMS`]: the histograms and the dense cost (row-major), f32.
pub struct ProblemData {
    /// Source histogram (n).
    pub a: Vec<f32>,
    /// Target histogram (m).
    pub b: Vec<f32>,
    /// n×m cost scaled to [0, 1].
    pub cost: Vec<f32>,
}

/// The data of problem `name` (one of [`PROBLEMS`], or `random_{n}` at any n); `None` for an
/// unknown name.
pub fn problem_data(name: &str) -> Option<ProblemData> {
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
    if let Some(n) = name.strip_prefix("random_") {
        let n: usize = n.parse().ok()?;
        let x = reference::random_points(n, 2, 1);
        let y = reference::random_points(n, 2, 2);
        let cost = reference::scaled_to_unit_max(reference::sq_euclidean_cost(&x, &y, 2));
        return Some(ProblemData {
            a: vec![1.0 / n as f32; n],
            b: vec![1.0 / n as f32; n],
            cost: f32s(cost),
        });
    }
    if name == "l1_500" {
        let n = 500;
        let x = reference::random_points(n, 2, 1);
        let y = reference::random_points(n, 2, 2);
        let cost = reference::scaled_to_unit_max(reference::lp_cost(&x, &y, 2, 1.0));
        return Some(ProblemData {
            a: vec![1.0 / n as f32; n],
            b: vec![1.0 / n as f32; n],
            cost: f32s(cost),
        });
    }
    if name == "images_784" {
        let side = 28;
        let (a, b) = reference::blob_image_pair(side);
        let pixels = reference::pixel_grid(side);
        let cost = reference::scaled_to_unit_max(reference::sq_euclidean_cost(&pixels, &pixels, 2));
        return Some(ProblemData {
            a: f32s(a),
            b: f32s(b),
            cost: f32s(cost),
        });
    }
    None
}

/// Sinkhorn and SNS to [`TOL`] on `name` (wall clock of each solve; the problem is uploaded
/// and validated before). Sinkhorn's error is POT's ‖Pᵀ1 − b‖₂ right after an f update
/// (P·1 = a to rounding); SNS's is ‖(a − P·1, b − Pᵀ·1)‖₂.
pub fn compare(gpu: &Gpu, name: &str, max_sinkhorn: usize) -> Result<Option<[SolverRun; 2]>> {
    let Some(d) = problem_data(name) else {
        return Ok(None);
    };
    let (a, b, c) = (
        GpuVec::upload(gpu, &d.a)?,
        GpuVec::upload(gpu, &d.b)?,
        GpuVec::upload(gpu, &d.cost)?,
    );
    let problem = OtProblem::new(gpu, &a, &b, Cost::Dense(c.view()), Masses::Renormalize)?;
    gpu.wait()?;
    let t0 = Instant::now();
    let config = SinkhornConfig {
        max_iter: max_sinkhorn,
        tol: TOL,
        ..SinkhornConfig::new(REG)
    };
    let sinkhorn = problem.sinkhorn(&config)?;
    let sinkhorn_ms = t0.elapsed().as_secs_f64() * 1e3;
    let dispatches = SinkhornSolver::new(&problem, &config)?.dispatches_per_iteration();
    let t0 = Instant::now();
    let sns = problem.sns(&SnsConfig {
        tol: TOL,
        ..SnsConfig::new(REG)
    })?;
    let sns_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Some([
        SolverRun {
            name: "sinkhorn",
            problem: name.to_string(),
            n: d.a.len(),
            iterations: sinkhorn.iterations,
            newton_iterations: None,
            wall_ms: sinkhorn_ms,
            final_error: sinkhorn.final_error as f64,
            converged: sinkhorn.converged,
            stats: Some(CgStats {
                dispatches_per_iteration: dispatches,
                submits: sinkhorn.batches + 1,
                readbacks: sinkhorn.batches + 1,
                iterations_recorded: sinkhorn.iterations_recorded,
            }),
        },
        SolverRun {
            name: "sns",
            problem: name.to_string(),
            n: d.a.len(),
            iterations: sns.sinkhorn_iterations + sns.newton_iterations,
            newton_iterations: Some(sns.newton_iterations),
            wall_ms: sns_ms,
            final_error: sns.final_error as f64,
            converged: sns.converged,
            stats: None,
        },
    ]))
}

/// Milliseconds of one Sinkhorn iteration (the g then the f update) on an n×n problem with
/// uniform random costs in [0, 1] (dense) or 2-D points (on the fly): the kernels' own time,
/// from GPU timestamps around passes of ten iterations (median of five). The host's recording
/// of each dispatch is not in it; a solve's wall time is, which on a fast GPU can dominate.
pub fn sinkhorn_iteration_ms(gpu: &Gpu, n: usize, on_the_fly: bool) -> Result<f64> {
    let uniform = |len: usize, seed: u64| -> Result<crate::buffer::GpuVec<f32>> {
        let v: Vec<f32> = reference::random_points(len, 1, seed)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        GpuVec::upload(gpu, &v)
    };
    let (x, y) = (uniform(2 * n, 3)?, uniform(2 * n, 4)?);
    let dense = uniform(if on_the_fly { 1 } else { n * n }, 5)?;
    let weights = GpuVec::upload(gpu, &vec![1.0 / n as f32; n])?;
    let cost = if on_the_fly {
        Cost::Points {
            x: x.view(),
            y: y.view(),
            dim: 2,
            metric: Metric::SqEuclidean,
            scale: 0.5,
        }
    } else {
        Cost::Dense(dense.view())
    };
    let problem = OtProblem::new(gpu, &weights, &weights, cost, Masses::Equal)?;
    // A budget and tolerance no run reaches (a few hundred iterations are timed): every timed
    // iteration does its work, POT's check included once in ten.
    let config = SinkhornConfig {
        max_iter: 1_000_000,
        tol: f32::MIN_POSITIVE,
        ..SinkhornConfig::new(REG)
    };
    let solver = SinkhornSolver::new(&problem, &config)?;
    let mut start = Recorder::new(gpu);
    solver.record_start(&mut start)?;
    start.submit()?;
    let runs = super::time_runs(gpu, 5, true, |rec| {
        solver.record_iterations(rec, ITERATIONS_TIMED)
    })?;
    Ok(runs.median_ms() / ITERATIONS_TIMED as f64)
}

/// Iterations recorded in each timed pass of [`sinkhorn_iteration_ms`].
const ITERATIONS_TIMED: usize = 10;
