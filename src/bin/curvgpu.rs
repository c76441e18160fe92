//! `curvgpu info` lists adapters; `curvgpu bench` measures the adapter's roofline and every
//! kernel against it in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use curvgpu::bench::{self, kernels, problems, roofline, solvers, transport, TimingMethod};
use curvgpu::{Gpu, Recorder};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(
    version,
    about = "WGSL second-order optimisation kernels: adapter info and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every adapter wgpu sees: backend, device type, driver, key limits and features.
    Info,
    /// The adapter's copy/FMA roofline, then every kernel against it.
    Bench {
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// log2 of the sizes to run (default 16,18,20,22,24).
        #[arg(long, value_delimiter = ',', default_values_t = [16u32, 18, 20, 22, 24])]
        log2_sizes: Vec<u32>,
        /// Timed runs per kernel and size (the median is reported).
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Only these kernels or fixed problems, e.g. gemm_1024 (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// Time with the host clock even where GPU timestamps exist.
        #[arg(long)]
        wall_clock: bool,
        /// Skip the solver runs (CG on Poisson 1024² against an f64 CPU CG).
        #[arg(long)]
        no_solvers: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Bench {
            json,
            log2_sizes,
            reps,
            kernels,
            wall_clock,
            no_solvers,
        } => run_bench(json, &log2_sizes, reps, &kernels, wall_clock, !no_solvers),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("curvgpu: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result<(), Box<dyn std::error::Error>> {
    let adapters = curvgpu::gpu::enumerate_adapters(None);
    if adapters.is_empty() {
        return Err("no adapter found: on Debian, apt-get install mesa-vulkan-drivers".into());
    }
    for a in adapters {
        let i = a.get_info();
        let l = a.limits();
        let f = a.features();
        println!("{} ({:?}, {:?})", i.name, i.backend, i.device_type);
        println!("  driver: {} {}", i.driver, i.driver_info);
        println!(
            "  limits: storage binding {} MiB, buffer {} MiB, {} storage buffers/stage, workgroup ≤ {} invocations, {} B workgroup memory, {} workgroups/dim",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size,
            l.max_compute_workgroups_per_dimension
        );
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "  features: timestamps {}, subgroups {} (size {}..{}), f16 {}, f64 {}",
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::SUBGROUP),
            i.subgroup_min_size,
            i.subgroup_max_size,
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::SHADER_F64)
        );
    }
    Ok(())
}

struct Row {
    name: String,
    n: usize,
    bytes: f64,
    median_ms: f64,
    gbps: f64,
    fraction: f64,
}

/// A fixed problem measured against the FMA roofline (e.g. `gemm_1024`).
struct ComputeRow {
    name: &'static str,
    n: usize,
    flops: f64,
    median_ms: f64,
    gflops: f64,
    fma_fraction: f64,
}

fn run_bench(
    json_path: Option<PathBuf>,
    log2_sizes: &[u32],
    reps: usize,
    only: &[String],
    wall_clock: bool,
    with_solvers: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info().clone();
    let chosen = |k: &&str| only.is_empty() || only.iter().any(|o| o == k);
    let names: Vec<&str> = kernels::KERNELS.iter().copied().filter(chosen).collect();
    let fixed: Vec<&str> = problems::PROBLEMS.iter().copied().filter(chosen).collect();
    if names.is_empty() && fixed.is_empty() {
        return Err(format!(
            "no known kernel in {only:?}; known: {:?} and {:?}",
            kernels::KERNELS,
            problems::PROBLEMS
        )
        .into());
    }
    if let Some(bad) = log2_sizes.iter().find(|&&s| s > 28) {
        return Err(format!("--log2-sizes {bad}: at most 28").into());
    }
    let largest = 1usize << log2_sizes.iter().copied().max().unwrap_or(24);
    eprintln!(
        "adapter: {} ({:?}, {:?}); tuning {:?}",
        info.name,
        info.backend,
        info.device_type,
        gpu.tuning()
    );
    let bar = ProgressBar::new(
        (names.len() * log2_sizes.len()
            + fixed.len()
            + 1
            + (4 + transport::PROBLEMS.len()) * with_solvers as usize) as u64,
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("roofline");
    let roof = roofline::measure(&gpu, largest, reps.clamp(3, 10))?;
    bar.inc(1);
    let timing = if wall_clock || !gpu.has_timestamps() {
        TimingMethod::WallClock
    } else {
        TimingMethod::GpuTimestamps
    };
    // Median milliseconds of `reps` timed runs of a case.
    let median_ms = |case: &mut kernels::Case| -> curvgpu::Result<f64> {
        let use_timestamps = timing == TimingMethod::GpuTimestamps;
        let (ms, _) = bench::time_runs(&gpu, reps, use_timestamps, |rec: &mut Recorder| {
            case.record(rec)
        })?;
        Ok(bench::median(&ms))
    };
    let mut rows = Vec::new();
    for name in &names {
        for &s in log2_sizes {
            let n = 1usize << s;
            bar.set_message(format!("{name} n=2^{s}"));
            let bytes_per = kernels::bytes_per_element(name).unwrap_or(f64::NAN);
            let Some(mut case) = kernels::case(&gpu, name, n)? else {
                continue;
            };
            let median_ms = median_ms(&mut case)?;
            let bytes = bytes_per * n as f64;
            let gbps = bytes / (median_ms * 1e-3) / 1e9;
            rows.push(Row {
                name: name.to_string(),
                n,
                bytes,
                median_ms,
                gbps,
                fraction: gbps / roof.copy_gbps,
            });
            bar.inc(1);
        }
    }
    let mut compute_rows = Vec::new();
    for &name in &fixed {
        bar.set_message(name);
        let Some((mut case, work)) = problems::problem(&gpu, name)? else {
            continue;
        };
        let median_ms = median_ms(&mut case)?;
        if let Some(flops) = work.flops {
            let gflops = flops / (median_ms * 1e-3) / 1e9;
            compute_rows.push(ComputeRow {
                name,
                n: work.n,
                flops,
                median_ms,
                gflops,
                fma_fraction: gflops / roof.fma_gflops,
            });
        }
        if let Some(bytes) = work.bytes {
            let gbps = bytes / (median_ms * 1e-3) / 1e9;
            rows.push(Row {
                name: name.into(),
                n: work.n,
                bytes,
                median_ms,
                gbps,
                fraction: gbps / roof.copy_gbps,
            });
        }
        bar.inc(1);
    }
    let mut solver_runs = Vec::new();
    let mut cg_iteration_stats = None;
    if with_solvers {
        bar.set_message("cg iteration, poisson 1024²");
        let side = 1024;
        let (ms, stats) = solvers::cg_iteration_ms(&gpu, side)?;
        let n = side * side;
        let bytes = solvers::CG_BYTES_PER_UNKNOWN * n as f64;
        let gbps = bytes / (ms * 1e-3) / 1e9;
        rows.push(Row {
            name: "cg_iteration_poisson2d_1024".into(),
            n,
            bytes,
            median_ms: ms,
            gbps,
            fraction: gbps / roof.copy_gbps,
        });
        cg_iteration_stats = Some(stats);
        bar.inc(1);
        bar.set_message("time to solution, poisson 1024², rtol 1e-6");
        solver_runs.extend(solvers::poisson_time_to_solution(&gpu, side, 1e-6)?);
        bar.inc(1);
        let side = 4096;
        bar.set_message("sinkhorn iteration, dense 4096²");
        let ms = transport::sinkhorn_iteration_ms(&gpu, side, false)?;
        // Each iteration reads C twice (the column and the row log-sum-exps).
        let bytes = 2.0 * 4.0 * (side * side) as f64;
        let gbps = bytes / (ms * 1e-3) / 1e9;
        rows.push(Row {
            name: "sinkhorn_iteration_dense_4096".into(),
            n: side,
            bytes,
            median_ms: ms,
            gbps,
            fraction: gbps / roof.copy_gbps,
        });
        bar.inc(1);
        bar.set_message("sinkhorn iteration, points 4096²");
        let ms = transport::sinkhorn_iteration_ms(&gpu, side, true)?;
        let flops = 2.0 * (side * side) as f64 * transport::points_flops_per_entry(2);
        let gflops = flops / (ms * 1e-3) / 1e9;
        compute_rows.push(ComputeRow {
            name: "sinkhorn_iteration_points_4096",
            n: side,
            flops,
            median_ms: ms,
            gflops,
            fma_fraction: gflops / roof.fma_gflops,
        });
        bar.inc(1);
        for name in transport::PROBLEMS {
            bar.set_message(format!("sinkhorn and sns, {name}"));
            if let Some(runs) = transport::compare(&gpu, name, 200_000)? {
                solver_runs.extend(runs);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    println!(
        "adapter: {} — {:?} / {:?} — timing: {}",
        info.name,
        info.backend,
        info.device_type,
        timing.as_str()
    );
    println!(
        "roofline: copy {:.2} GB/s ({}), FMA {:.1} GFLOP/s",
        roof.copy_gbps,
        best_name(&roof.copy_shapes),
        roof.fma_gflops
    );
    println!(
        "{:<26} {:>10} {:>12} {:>11} {:>9} {:>9}",
        "kernel", "n", "bytes", "median ms", "GB/s", "roofline"
    );
    for r in &rows {
        println!(
            "{:<26} {:>10} {:>12.0} {:>11.3} {:>9.2} {:>9.2}",
            r.name, r.n, r.bytes, r.median_ms, r.gbps, r.fraction
        );
    }
    if !compute_rows.is_empty() {
        println!(
            "{:<26} {:>10} {:>12} {:>11} {:>9} {:>9}",
            "problem", "n", "flops", "median ms", "GFLOP/s", "FMA roof"
        );
        for r in &compute_rows {
            println!(
                "{:<26} {:>10} {:>12.3e} {:>11.3} {:>9.2} {:>9.2}",
                r.name, r.n, r.flops, r.median_ms, r.gflops, r.fma_fraction
            );
        }
    }
    let at = |name: &str| rows.iter().filter(|r| r.name == name).max_by_key(|r| r.n);
    let speedup = match (at("sophiag_step"), at("sophiag_step_unfused")) {
        (Some(f), Some(u)) if f.n == u.n => Some((f.n, u.median_ms / f.median_ms)),
        _ => None,
    };
    if let Some((n, x)) = speedup {
        println!("fused sophiag_step is {x:.2}× faster than sophiag_step_unfused at n = {n} (target ≥ 2×)");
    }
    for k in ["sophiag_step", "adahessian_step"] {
        if let Some(r) = at(k) {
            println!(
                "{k} at n = {}: {:.2} of the copy roofline (target ≥ 0.80)",
                r.n, r.fraction
            );
        }
    }

    if let Some(s) = cg_iteration_stats {
        println!(
            "cg_iteration_poisson2d_1024: {} dispatches per iteration (wall-clock difference of 250- and 50-iteration runs, {} B/unknown)",
            s.dispatches_per_iteration,
            solvers::CG_BYTES_PER_UNKNOWN
        );
    }
    if !solver_runs.is_empty() {
        println!(
            "{:<12} {:<16} {:>9} {:>10} {:>11} {:>12} {:>9}",
            "solver", "problem", "n", "iterations", "wall ms", "‖b−Ax‖/‖b‖", "converged"
        );
        for s in &solver_runs {
            println!(
                "{:<12} {:<16} {:>9} {:>10} {:>11.1} {:>12.2e} {:>9}",
                s.name, s.problem, s.n, s.iterations, s.wall_ms, s.final_error, s.converged
            );
            if let Some(st) = s.stats {
                println!(
                    "  {} dispatches/iteration, {} submits, {} host readbacks for {} iterations recorded ({:.3} per iteration; check_every = {})",
                    st.dispatches_per_iteration,
                    st.submits,
                    st.readbacks,
                    st.iterations_recorded,
                    st.readbacks as f64 / st.iterations_recorded.max(1) as f64,
                    curvgpu::krylov::DEFAULT_CHECK_EVERY
                );
            }
            if let Some(newton) = s.newton_iterations {
                println!("  of which {newton} Newton steps");
            }
        }
        for sns in solver_runs.iter().filter(|s| s.name == "sns") {
            let Some(sinkhorn) = solver_runs
                .iter()
                .find(|s| s.name == "sinkhorn" && s.problem == sns.problem)
            else {
                continue;
            };
            println!(
                "SNS on {}: {:.1}× fewer iterations, {:.1}× less wall time than Sinkhorn (targets ≥ 20×, ≥ 5×)",
                sns.problem,
                sinkhorn.iterations as f64 / sns.iterations as f64,
                sinkhorn.wall_ms / sns.wall_ms
            );
        }
    }

    if let Some(path) = json_path {
        let doc = json!({
            "adapter": {
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
                "driver": info.driver,
                "driver_info": info.driver_info,
            },
            "timing": timing.as_str(),
            "tuning": {
                "workgroup_size": gpu.tuning().workgroup_size,
                "max_workgroups": gpu.tuning().max_workgroups,
                "stencil_march": gpu.tuning().stencil_march,
                "reduction_vec4s": gpu.tuning().reduction_vec4s,
                "simd_lanes": gpu.tuning().simd_lanes,
                "dot_slices": gpu.tuning().dot_slices,
            },
            "roofline": {
                "copy_gbps": roof.copy_gbps,
                "fma_gflops": roof.fma_gflops,
                "timing": roof.timing.as_str(),
                "copy_shapes": roof.copy_shapes.iter().map(|s| json!({"name": s.name, "median_ms": s.median_ms, "gbps": s.rate})).collect::<Vec<_>>(),
                "fma_shapes": roof.fma_shapes.iter().map(|s| json!({"name": s.name, "median_ms": s.median_ms, "gflops": s.rate})).collect::<Vec<_>>(),
            },
            "kernels": rows.iter().map(|r| json!({
                "name": r.name,
                "n": r.n,
                "bytes": r.bytes,
                "median_ms": r.median_ms,
                "gbps": r.gbps,
                "roofline_fraction": r.fraction,
                "reps": reps,
            })).chain(compute_rows.iter().map(|r| json!({
                "name": r.name,
                "n": r.n,
                "flops": r.flops,
                "median_ms": r.median_ms,
                "gflops": r.gflops,
                "fma_fraction": r.fma_fraction,
                "reps": reps,
            }))).collect::<Vec<_>>(),
            "fused_speedup": speedup.map(|(n, x)| json!({"n": n, "sophiag_step_vs_unfused": x})),
            "solvers": solver_runs.iter().map(|s| json!({
                "name": s.name,
                "problem": s.problem,
                "n": s.n,
                "iterations": s.iterations,
                "wall_ms": s.wall_ms,
                "final_error": s.final_error,
                "converged": s.converged,
                "newton_iterations": s.newton_iterations,
                "dispatches_per_iteration": s.stats.map(|x| x.dispatches_per_iteration),
                "submits": s.stats.map(|x| x.submits),
                "readbacks": s.stats.map(|x| x.readbacks),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn best_name(shapes: &[roofline::Shape]) -> String {
    shapes
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map_or_else(String::new, |s| s.name.clone())
}
