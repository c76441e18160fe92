//! Sinkhorn against sparse Newton (SSNS, the default Newton stage) on one problem: the
//! marginal error of both against iterations, the transport cost each reaches, and the plan
//! in a form that can be drawn.

use std::rc::Rc;

use curvgpu::ot::{Cost, Masses, Metric, OtProblem, SinkhornConfig, SnsConfig};
use curvgpu::reference::ot as data;
use curvgpu::{Error, Gpu, GpuVec, Result};
use serde::{Deserialize, Serialize};
use web_time::Instant;

/// Which problem to solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// n uniform points in [0, 1]² to n others, uniform weights, squared-Euclidean cost
    /// scaled to [0, 1] (the SNS paper's random problem).
    Points,
    /// Two 28×28 images of Gaussian blobs, squared-Euclidean ground cost between pixel
    /// positions scaled to [0, 1].
    Images,
}

/// Everything that fixes a transport run; the page and the native run use the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// The problem.
    pub problem: Problem,
    /// Points per cloud (`Points` only).
    pub points: usize,
    /// Seed of the point clouds.
    pub seed: u64,
    /// η = 1/reg on costs scaled to [0, 1].
    pub eta: f32,
    /// Marginal error both solvers stop at.
    pub tol: f32,
    /// Sinkhorn's iteration budget.
    pub max_sinkhorn: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            problem: Problem::Points,
            points: 300,
            seed: 1,
            eta: 1200.0,
            tol: 1e-5,
            max_sinkhorn: 5000,
        }
    }
}

/// One solver's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolverTrace {
    /// `"sinkhorn"` or `"sns"`.
    pub name: String,
    /// Iterations in all (for SNS: Sinkhorn steps plus Newton steps).
    pub iterations: usize,
    /// Newton steps (SNS only).
    pub newton_iterations: Option<usize>,
    /// CG iterations of each Newton step (SNS only).
    pub cg_iterations: Vec<usize>,
    /// (iteration, marginal error) at every check, for the log-scale plot.
    pub errors: Vec<(usize, f32)>,
    /// ⟨C, P⟩ at the returned potentials.
    pub cost: f64,
    /// Whether the tolerance was met.
    pub converged: bool,
    /// The marginal error reached.
    pub final_error: f32,
    /// Wall-clock milliseconds of the solve.
    pub wall_ms: f64,
}

/// What the page draws and the test compares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportReport {
    /// The configuration run.
    pub config: TransportConfig,
    /// Rows of the plan (source points or pixels).
    pub n: usize,
    /// Columns.
    pub m: usize,
    /// Source points (Points: n×2) or the source image (Images: 28×28 masses).
    pub source: Vec<f32>,
    /// Target points or image.
    pub target: Vec<f32>,
    /// The two solvers, Sinkhorn first.
    pub solvers: Vec<SolverTrace>,
    /// For each row of SNS's plan, its largest entry: (column, mass).
    pub plan_top: Vec<(u32, f32)>,
    /// SNS's plan summed over `plan_block`×`plan_block` tiles (row-major, for a heat map).
    pub plan_tiles: Vec<f32>,
    /// Tile side of `plan_tiles`.
    pub plan_block: usize,
}

/// The most points per cloud a page may ask for: the dense plan read back for the heat map
/// is n² floats (64 MiB here).
pub const MAX_POINTS: usize = 4096;

impl TransportConfig {
    /// Checks what the demo itself relies on; the solvers check η, the tolerance and the budget.
    pub fn validate(&self) -> Result<()> {
        if self.problem == Problem::Points && !(1..=MAX_POINTS).contains(&self.points) {
            return Err(Error::InvalidParameter {
                name: "points",
                value: self.points as f64,
                requirement: "at least 1 and at most MAX_POINTS (4096)",
            });
        }
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(Error::InvalidParameter {
                name: "eta",
                value: self.eta as f64,
                requirement: "finite and > 0",
            });
        }
        Ok(())
    }
}

/// Side of the synthetic images.
const SIDE: usize = 28;

/// Host data: masses a, b, the point sets and how to draw them.
struct Data {
    a: Vec<f32>,
    b: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    scale: f32,
    source: Vec<f32>,
    target: Vec<f32>,
}

fn build(config: &TransportConfig) -> Data {
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    match config.problem {
        Problem::Points => {
            let n = config.points;
            let x = data::random_points(n, 2, 2 * config.seed);
            let y = data::random_points(n, 2, 2 * config.seed + 1);
            // The largest squared distance, to scale the costs to [0, 1] (without the n×n matrix).
            let max = x
                .chunks_exact(2)
                .flat_map(|p| {
                    y.chunks_exact(2)
                        .map(move |q| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2))
                })
                .fold(0.0f64, f64::max);
            Data {
                a: vec![1.0 / n as f32; n],
                b: vec![1.0 / n as f32; n],
                x: f32s(&x),
                y: f32s(&y),
                scale: if max > 0.0 { (1.0 / max) as f32 } else { 1.0 },
                source: f32s(&x),
                target: f32s(&y),
            }
        }
        Problem::Images => {
            let (a, b) = data::blob_image_pair(SIDE);
            let pixels = f32s(&data::pixel_grid(SIDE));
            Data {
                a: f32s(&a),
                b: f32s(&b),
                x: pixels.clone(),
                y: pixels,
                // Pixels lie in [0, 1]²: the largest squared distance, corner to corner, is 2.
                scale: 0.5,
                source: f32s(&a),
                target: f32s(&b),
            }
        }
    }
}

/// Solves `config`'s problem with both solvers on `gpu`.
pub async fn run(gpu: Rc<Gpu>, config: TransportConfig) -> Result<TransportReport> {
    config.validate()?;
    let d = build(&config);
    let reg = 1.0 / config.eta;
    let (a, b) = (GpuVec::upload(&gpu, &d.a)?, GpuVec::upload(&gpu, &d.b)?);
    let (x, y) = (GpuVec::upload(&gpu, &d.x)?, GpuVec::upload(&gpu, &d.y)?);
    let cost = Cost::Points {
        x: x.view(),
        y: y.view(),
        dim: 2,
        metric: Metric::SqEuclidean,
        scale: d.scale,
    };
    let problem = OtProblem::new_async(&gpu, a.view(), b.view(), cost, Masses::Renormalize).await?;
    let (n, m) = (problem.n(), problem.m());

    let sinkhorn_config = SinkhornConfig {
        max_iter: config.max_sinkhorn,
        tol: config.tol,
        ..SinkhornConfig::new(reg)
    };
    let t0 = Instant::now();
    let sinkhorn = problem.sinkhorn_async(&sinkhorn_config).await?;
    let sinkhorn_ms = t0.elapsed().as_secs_f64() * 1e3;
    let every = sinkhorn_config.check_every;

    let t0 = Instant::now();
    let sns = problem
        .sns_async(&SnsConfig {
            tol: config.tol,
            ..SnsConfig::new(reg)
        })
        .await?;
    let sns_ms = t0.elapsed().as_secs_f64() * 1e3;

    // POT checks after iterations 0, every, 2·every, …; the Newton errors come before each
    // Newton step and after the last.
    let checks = |errors: &[f32]| -> Vec<(usize, f32)> {
        errors
            .iter()
            .enumerate()
            .map(|(k, &e)| (k * every + 1, e))
            .collect()
    };
    let mut sns_errors = checks(&sns.sinkhorn_errors);
    sns_errors.extend(
        sns.newton_errors
            .iter()
            .enumerate()
            .map(|(k, &e)| (sns.sinkhorn_iterations + k, e)),
    );

    let top = problem.top_k(&sns.f, &sns.g, reg, 1)?;
    let columns = top.columns.read_async().await?;
    let values = top.values.read_async().await?;
    let plan_top = columns.into_iter().zip(values).collect();

    let plan_block = if n * m > 200 * 200 { 4 } else { 1 };
    let plan = problem.plan(&sns.f, &sns.g, reg)?.read_async().await?;
    let plan_tiles = tiles(&plan, n, m, plan_block);

    Ok(TransportReport {
        n,
        m,
        source: d.source,
        target: d.target,
        solvers: vec![
            SolverTrace {
                name: "sinkhorn".into(),
                iterations: sinkhorn.iterations,
                newton_iterations: None,
                cg_iterations: Vec::new(),
                errors: checks(&sinkhorn.errors),
                cost: sinkhorn.cost,
                converged: sinkhorn.converged,
                final_error: sinkhorn.final_error,
                wall_ms: sinkhorn_ms,
            },
            SolverTrace {
                name: "sns".into(),
                iterations: sns.sinkhorn_iterations + sns.newton_iterations,
                newton_iterations: Some(sns.newton_iterations),
                cg_iterations: sns.cg_iterations.clone(),
                errors: sns_errors,
                cost: sns.cost,
                converged: sns.converged,
                final_error: sns.final_error,
                wall_ms: sns_ms,
            },
        ],
        plan_top,
        plan_tiles,
        plan_block,
        config,
    })
}

/// Sums of `block`×`block` tiles of a row-major n×m matrix (partial tiles at the edges).
fn tiles(plan: &[f32], n: usize, m: usize, block: usize) -> Vec<f32> {
    let (rows, cols) = (n.div_ceil(block), m.div_ceil(block));
    let mut out = vec![0.0f32; rows * cols];
    for i in 0..n {
        for j in 0..m {
            out[(i / block) * cols + j / block] += plan[i * m + j];
        }
    }
    out
}
