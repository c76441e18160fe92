//! Whole-solver benchmarks: CG on the 1024² Poisson problem on the GPU against a plain f64 CG
//! on the CPU in the same run, and the wall-clock cost of one iteration of CG, Lanczos and
//! power iteration.

use std::time::Instant;

use crate::buffer::GpuVec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::krylov::{cg_batched, CgOptions, CgStats, CsrMatrix, Poisson, Preconditioner};
use crate::reference::krylov as reference;

/// Bytes one unpreconditioned CG iteration on the Poisson operator moves per unknown, each
/// vector counted once per pass: q = A·(r + β·p) fused with its dot (read r, p; write q: 12),
/// then p = r + β·p, x += α·p and r −= α·q fused with rᵀr (read x, r, p, q; write x, r, p:
/// 28). Operators without the fused direction add a pass for p (44 in all), and those that
/// cannot fuse pᵀq another over p and q (52).
pub const CG_BYTES_PER_UNKNOWN: f64 = 40.0;

/// A sparse SPD system in CSR form (f64 values; the GPU takes them rounded to f32).
#[derive(Clone, Debug)]
pub struct SparseSystem {
    /// Unknowns.
    pub n: usize,
    /// Row starts (n + 1).
    pub row_ptr: Vec<u32>,
    /// Column of each entry, increasing within a row.
    pub col_idx: Vec<u32>,
    /// Entries.
    pub values: Vec<f64>,
}

/// The graph-Laplacian problem of the solver rows: L + σ·I of a random graph on `n` nodes,
/// each joined to the next around a ring and to `extra` random others (edges symmetric, unit
/// weight), σ = `shift`. Deterministic in `seed` (SplitMix64). Rows hold the diagonal first
/// among columns in increasing order.
pub fn graph_laplacian(n: usize, extra: usize, shift: f64, seed: u64) -> SparseSystem {
    let mut rng = crate::reference::splitmix::SplitMix64::new(seed);
    let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut join = |a: usize, b: usize| {
        if a != b {
            neighbours[a].push(b as u32);
            neighbours[b].push(a as u32);
        }
    };
    for i in 0..n {
        join(i, (i + 1) % n);
        for _ in 0..extra {
            let j = (rng.uniform() * n as f64) as usize % n;
            join(i, j);
        }
    }
    let mut row_ptr = vec![0u32];
    let (mut col_idx, mut values) = (Vec::new(), Vec::new());
    for (i, nb) in neighbours.iter_mut().enumerate() {
        nb.sort_unstable();
        nb.dedup();
        let degree = nb.len() as f64;
        let mut row: Vec<(u32, f64)> = nb.iter().map(|&j| (j, -1.0)).collect();
        row.push((i as u32, degree + shift));
        row.sort_unstable_by_key(|&(j, _)| j);
        for (j, v) in row {
            col_idx.push(j);
            values.push(v);
        }
        row_ptr.push(col_idx.len() as u32);
    }
    SparseSystem {
        n,
        row_ptr,
        col_idx,
        values,
    }
}

/// One solver run.
#[derive(Clone, Debug)]
pub struct SolverRun {
    /// `cg` (curvgpu), `cpu_cg_f64`, `sinkhorn` or `sns`.
    pub name: &'static str,
    /// e.g. `poisson2d_1024`.
    pub problem: String,
    /// Unknowns.
    pub n: usize,
    /// Iterations to convergence (or the limit); for SNS both stages.
    pub iterations: usize,
    /// SNS's Newton steps (counted in `iterations` too).
    pub newton_iterations: Option<usize>,
    /// Wall-clock time to solution, setup and readback included.
    pub wall_ms: f64,
    /// True relative residual ‖b − A·x‖/‖b‖, computed in f64.
    pub final_error: f64,
    /// Whether the stopping test was met.
    pub converged: bool,
    /// Dispatch, submit and readback counts (GPU runs).
    pub stats: Option<CgStats>,
}

/// One iteration of an iterative solver, timed on the wall clock as the difference of a
/// short and a long run, so the start and the final readback cancel.
#[derive(Clone, Copy, Debug)]
pub struct IterationTiming {
    /// Unknowns of the problem.
    pub unknowns: usize,
    /// Milliseconds an iteration.
    pub ms: f64,
    /// Bytes the mean timed iteration must move.
    pub bytes: f64,
    /// Dispatches an iteration, the operator's included.
    pub dispatches: usize,
    /// Iterations of the short and the long run.
    pub runs: (usize, usize),
}

/// Times `run(iterations) → (dispatches an iteration)` after a 4-iteration warm-up (its
/// pipelines compiled): ms an iteration over the difference of `runs`, and the dispatches.
fn time_difference(
    gpu: &Gpu,
    runs: (usize, usize),
    run: impl Fn(usize) -> Result<usize>,
) -> Result<(f64, usize)> {
    let timed = |iterations: usize| -> Result<(f64, usize)> {
        gpu.wait()?;
        let t0 = Instant::now();
        let dispatches = run(iterations)?;
        Ok((t0.elapsed().as_secs_f64() * 1e3, dispatches))
    };
    timed(4)?;
    let (short, _) = timed(runs.0)?;
    let (long, dispatches) = timed(runs.1)?;
    Ok(((long - short) / (runs.1 - runs.0) as f64, dispatches))
}

/// One CG iteration on a `side`² Poisson problem (non-converging runs of 50 and 250
/// iterations, one check each).
pub fn cg_iteration(gpu: &Gpu, side: usize) -> Result<IterationTiming> {
    let op = Poisson::new_2d(side, side)?;
    let b = crate::rng::gaussian(gpu, side * side, 1, 0)?;
    let runs = (50, 250);
    let (ms, dispatches) = time_difference(gpu, runs, |iters| {
        let options = CgOptions {
            rtol: 0.0,
            maxiter: Some(iters),
            check_every: iters,
            ..Default::default()
        };
        let (_, stats) = cg_batched(gpu, &op, &[b.view()], None, &options)?;
        Ok(stats.dispatches_per_iteration)
    })?;
    Ok(IterationTiming {
        unknowns: side * side,
        ms,
        bytes: CG_BYTES_PER_UNKNOWN * (side * side) as f64,
        dispatches,
        runs,
    })
}

/// Bytes a Lanczos step must move per unknown at step i (i + 1 basis vectors): Gram–Schmidt
/// twice reads the basis four times (each pass's coefficients, then its subtraction), and the
/// step reads and writes w and v about eight times in all, the 5-point operator's included.
fn lanczos_bytes_per_unknown(i: f64) -> f64 {
    4.0 * (4.0 * (i + 1.0) + 8.0)
}

/// One Lanczos step on Poisson side² (runs of 16 and 64 steps), its bytes those of the mean
/// timed step.
pub fn lanczos_step(gpu: &Gpu, side: usize) -> Result<IterationTiming> {
    let op = Poisson::new_2d(side, side)?;
    let runs = (16, 64);
    let (ms, dispatches) = time_difference(gpu, runs, |steps| {
        Ok(crate::krylov::lanczos(gpu, &op, steps, 0, 0)?.dispatches_per_step)
    })?;
    let mean_step = (runs.0 + runs.1 - 1) as f64 / 2.0;
    Ok(IterationTiming {
        unknowns: side * side,
        ms,
        bytes: lanczos_bytes_per_unknown(mean_step) * (side * side) as f64,
        dispatches,
        runs,
    })
}

/// Bytes a power iteration moves per unknown without deflation: the 5-point operator reads v
/// and writes A·v (the stencil's neighbours from cache), the partials pass reads both, and the
/// step reads A·v and writes the new v.
const POWER_BYTES_PER_UNKNOWN: f64 = 4.0 * 6.0;

/// One power iteration on Poisson side² for the top eigenvalue (`tol` 0, so neither run of 16
/// and 80 iterations stops early; the readback every 16 iterations is counted as a solve pays
/// it).
pub fn power_iteration(gpu: &Gpu, side: usize) -> Result<IterationTiming> {
    let op = Poisson::new_2d(side, side)?;
    let runs = (16, 80);
    let (ms, dispatches) = time_difference(gpu, runs, |max_iter| {
        let options = crate::krylov::PowerOptions {
            max_iter,
            tol: 0.0,
            ..Default::default()
        };
        let pairs = crate::krylov::top_eigenvalues(gpu, &op, &options)?;
        Ok(pairs.dispatches_per_iteration.first().copied().unwrap_or(0))
    })?;
    Ok(IterationTiming {
        unknowns: side * side,
        ms,
        bytes: POWER_BYTES_PER_UNKNOWN * (side * side) as f64,
        dispatches,
        runs,
    })
}

/// ‖b − A·x‖/‖b‖ in f64, A applied by `apply`.
fn true_residual(apply: impl Fn(&[f64], &mut [f64]), x: &[f64], b: &[f64]) -> f64 {
    let mut ax = vec![0.0; b.len()];
    apply(x, &mut ax);
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let r: Vec<f64> = ax.iter().zip(b).map(|(a, b)| b - a).collect();
    norm(&r) / norm(b)
}

/// Time to solution at `rtol` on the `side`² Poisson problem: curvgpu's CG, then a plain f64
/// CG in Rust on the CPU (same recurrence, same stopping rule), same right-hand side.
pub fn poisson_time_to_solution(gpu: &Gpu, side: usize, rtol: f32) -> Result<[SolverRun; 2]> {
    let n = side * side;
    let problem = format!("poisson2d_{side}");
    let b32 = crate::rng::gaussian(gpu, n, 2, 0)?.read()?;
    let b: Vec<f64> = b32.iter().map(|&v| v as f64).collect();
    let op = Poisson::new_2d(side, side)?;
    let poisson = |x: &[f64], y: &mut [f64]| reference::poisson2d_apply(side, side, x, y);
    let b_gpu = GpuVec::upload(gpu, &b32)?;
    gpu.wait()?;
    let t0 = Instant::now();
    let options = CgOptions {
        rtol,
        ..Default::default()
    };
    let (mut results, stats) = cg_batched(gpu, &op, &[b_gpu.view()], None, &options)?;
    let result = results.pop().ok_or(crate::Error::Empty { argument: "b" })?;
    let x = result.x.read()?;
    let gpu_ms = t0.elapsed().as_secs_f64() * 1e3;
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let gpu_run = SolverRun {
        name: "cg",
        problem: problem.clone(),
        n,
        iterations: result.iterations,
        wall_ms: gpu_ms,
        final_error: true_residual(poisson, &x, &b),
        converged: result.converged,
        newton_iterations: None,
        stats: Some(stats),
    };
    let t0 = Instant::now();
    let cpu = reference::cg(poisson, &b, None, rtol as f64, 0.0, 10 * n, None);
    let cpu_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cpu_run = SolverRun {
        name: "cpu_cg_f64",
        problem,
        n,
        iterations: cpu.iterations,
        wall_ms: cpu_ms,
        final_error: true_residual(poisson, &cpu.x, &b),
        converged: cpu.converged,
        newton_iterations: None,
        stats: None,
    };
    Ok([gpu_run, cpu_run])
}

/// The graph-Laplacian solve of the bench: [`graph_laplacian`]`(n, 2, 0.01, 1)` (28 CG
/// iterations at n = 4000, rtol 1e-5), b uniform in ±1.
pub fn graph_problem(n: usize) -> (SparseSystem, Vec<f64>) {
    let sys = graph_laplacian(n, 2, 0.01, 1);
    let mut rng = crate::reference::splitmix::SplitMix64::new(5);
    let b = (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect();
    (sys, b)
}

/// Timed runs of each small solve (after one untimed warm-up that compiles its pipelines).
const SMALL_SOLVE_RUNS: usize = 7;

/// Time to solution at rtol 1e-5 on the `n`-node graph Laplacian ([`graph_problem`]): curvgpu's
/// CG without and with Jacobi (median of 7 runs after a warm-up, setup, every
/// readback and the read of x included), then the f64 CG on the CPU (same recurrence).
pub fn graph_laplacian_time_to_solution(gpu: &Gpu, n: usize) -> Result<[SolverRun; 3]> {
    let (sys, b) = graph_problem(n);
    let problem = format!("graph_laplacian_{n}");
    let values: Vec<f32> = sys.values.iter().map(|&v| v as f32).collect();
    let op = CsrMatrix::new(gpu, n, n, &sys.row_ptr, &sys.col_idx, &values)?;
    let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    let b_gpu = GpuVec::upload(gpu, &b32)?;
    let apply = |x: &[f64], y: &mut [f64]| {
        reference::csr_apply(&sys.row_ptr, &sys.col_idx, &sys.values, x, y)
    };
    let gpu_run = |name: &'static str, preconditioner| -> Result<SolverRun> {
        let options = CgOptions {
            preconditioner,
            ..Default::default()
        };
        let solve = || -> Result<(crate::krylov::CgResult, CgStats, Vec<f32>)> {
            let (mut results, stats) = cg_batched(gpu, &op, &[b_gpu.view()], None, &options)?;
            let result = results.pop().ok_or(crate::Error::Empty { argument: "b" })?;
            let x = result.x.read()?;
            Ok((result, stats, x))
        };
        solve()?;
        let mut times = Vec::with_capacity(SMALL_SOLVE_RUNS);
        let mut last = None;
        for _ in 0..SMALL_SOLVE_RUNS {
            gpu.wait()?;
            let t0 = Instant::now();
            let run = solve()?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            last = Some(run);
        }
        let (result, stats, x) = last.ok_or(crate::Error::Empty { argument: "runs" })?;
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        Ok(SolverRun {
            name,
            problem: problem.clone(),
            n,
            iterations: result.iterations,
            newton_iterations: None,
            wall_ms: super::median(&times),
            final_error: true_residual(apply, &x, &b),
            converged: result.converged,
            stats: Some(stats),
        })
    };
    let plain = gpu_run("cg", Preconditioner::None)?;
    let jacobi = gpu_run("cg_jacobi", Preconditioner::Jacobi)?;
    let mut times = Vec::with_capacity(SMALL_SOLVE_RUNS);
    let mut cpu = None;
    for _ in 0..SMALL_SOLVE_RUNS {
        let t0 = Instant::now();
        cpu = Some(reference::cg(apply, &b, None, 1e-5, 0.0, 10 * n, None));
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = cpu.ok_or(crate::Error::Empty { argument: "runs" })?;
    let cpu_run = SolverRun {
        name: "cpu_cg_f64",
        problem,
        n,
        iterations: cpu.iterations,
        newton_iterations: None,
        wall_ms: super::median(&times),
        final_error: true_residual(apply, &cpu.x, &b),
        converged: cpu.converged,
        stats: None,
    };
    Ok([plain, jacobi, cpu_run])
}
