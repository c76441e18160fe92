//! Whole-solver benchmarks: CG on the 1024² Poisson problem on the GPU against a plain f64 CG
//! on the CPU in the same run, and the GPU cost of one CG iteration.

use std::time::Instant;

use crate::buffer::GpuVec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::krylov::{cg_batched, CgOptions, CgStats, Poisson};
use crate::reference::krylov as reference;

/// Bytes one unpreconditioned CG iteration on the Poisson operator moves per unknown, each
/// vector counted once per pass: q = A·(r + β·p) fused with its dot (read r, p; write q: 12),
/// then p = r + β·p, x += α·p and r −= α·q fused with rᵀr (read x, r, p, q; write x, r, p:
/// 28). Operators without the fused direction add a pass for p (44 in all), and those that
/// cannot fuse pᵀq another over p and q (52).
pub const CG_BYTES_PER_UNKNOWN: f64 = 40.0;

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

/// Per-iteration cost of CG on a `side`² Poisson problem, from the difference of two
/// non-converging runs (so setup and readbacks cancel): (ms per iteration, stats).
pub fn cg_iteration_ms(gpu: &Gpu, side: usize) -> Result<(f64, CgStats)> {
    let op = Poisson::new_2d(side, side)?;
    let b = crate::rng::gaussian(gpu, side * side, 1, 0)?;
    let run = |iters: usize| -> Result<(f64, CgStats)> {
        let options = CgOptions {
            rtol: 0.0,
            maxiter: Some(iters),
            check_every: iters,
            ..Default::default()
        };
        gpu.wait()?;
        let t0 = Instant::now();
        let (_, stats) = cg_batched(gpu, &op, &[b.view()], None, &options)?;
        Ok((t0.elapsed().as_secs_f64() * 1e3, stats))
    };
    run(10)?;
    let (short, _) = run(50)?;
    let (long, stats) = run(250)?;
    Ok(((long - short) / 200.0, stats))
}

fn true_residual(side: usize, x: &[f64], b: &[f64]) -> f64 {
    let mut ax = vec![0.0; b.len()];
    reference::poisson2d_apply(side, side, x, &mut ax);
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
        final_error: true_residual(side, &x, &b),
        converged: result.converged,
        newton_iterations: None,
        stats: Some(stats),
    };
    let t0 = Instant::now();
    let cpu = reference::cg(
        |x, y| reference::poisson2d_apply(side, side, x, y),
        &b,
        None,
        rtol as f64,
        0.0,
        10 * n,
        None,
    );
    let cpu_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cpu_run = SolverRun {
        name: "cpu_cg_f64",
        problem,
        n,
        iterations: cpu.iterations,
        wall_ms: cpu_ms,
        final_error: true_residual(side, &cpu.x, &b),
        converged: cpu.converged,
        newton_iterations: None,
        stats: None,
    };
    Ok([gpu_run, cpu_run])
}
