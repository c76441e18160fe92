//! `curvgpu info` lists adapters; `curvgpu bench` measures the adapter's roofline and every
//! kernel against it in one run. Built with the `cli` feature:
//! `cargo run --release --features cli -- bench --json out.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use curvgpu::bench::table::{kernel_table, KernelRow, Progress, TableOptions, Work};
use curvgpu::bench::{launch, solvers, transport};
use curvgpu::Gpu;
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
        /// Only these rows, e.g. gemm_1024,cg_iteration_poisson2d_1024 (comma-separated; default
        /// all): kernels, fixed problems, launch_costs and the solver rows.
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// Time with the host clock even where GPU timestamps exist.
        #[arg(long)]
        wall_clock: bool,
        /// Skip the solver rows when no rows are named (CG, Sinkhorn and SNS runs).
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

/// The launch-cost row.
const LAUNCH: &str = "launch_costs";
/// One CG iteration on Poisson 1024² (difference of two runs).
const CG_ITERATION: &str = "cg_iteration_poisson2d_1024";
/// One Lanczos step on Poisson 512² (difference of two runs).
const LANCZOS_STEP: &str = "lanczos_step_poisson2d_512";
/// One power iteration on Poisson 512² (difference of two runs).
const POWER_ITERATION: &str = "power_iteration_poisson2d_512";
/// One Sinkhorn iteration, dense 4096² cost.
const SINKHORN_DENSE: &str = "sinkhorn_iteration_dense_4096";
/// One Sinkhorn iteration, 4096 points a side with the cost on the fly.
const SINKHORN_POINTS: &str = "sinkhorn_iteration_points_4096";
/// Sinkhorn against SNS on each of `transport::PROBLEMS`, in order.
const OT_ROWS: [&str; 5] = [
    "ot_random_500",
    "ot_random_2000",
    "ot_random_5000",
    "ot_images_784",
    "ot_l1_500",
];
/// CG (plain and Jacobi) and the f64 CPU CG on the 4000-node graph Laplacian.
const CG_GRAPH: &str = "cg_graph_laplacian_4000";
/// CG and the f64 CPU CG to rtol 1e-6 on Poisson 1024².
const CG_POISSON: &str = "cg_poisson2d_1024";
/// The rows the bench times itself after the kernel table, selectable with `--kernels`.
const OTHER_ROWS: &[&str] = &[
    LAUNCH,
    CG_ITERATION,
    LANCZOS_STEP,
    POWER_ITERATION,
    SINKHORN_DENSE,
    SINKHORN_POINTS,
    OT_ROWS[0],
    OT_ROWS[1],
    OT_ROWS[2],
    OT_ROWS[3],
    OT_ROWS[4],
    CG_GRAPH,
    CG_POISSON,
];

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
    let options = TableOptions {
        log2_sizes: log2_sizes.to_vec(),
        reps,
        kernels: only.to_vec(),
        other_rows: OTHER_ROWS.to_vec(),
        use_timestamps: !wall_clock,
    };
    // A row the bench times itself runs when named, or (solver rows unless --no-solvers)
    // when nothing is named.
    let wants = |name: &str| match only.is_empty() {
        true => name == LAUNCH || with_solvers,
        false => only.iter().any(|o| o == name),
    };
    eprintln!(
        "adapter: {} ({:?}, {:?}); tuning {:?}",
        info.name,
        info.backend,
        info.device_type,
        gpu.tuning()
    );
    let own_rows = OTHER_ROWS.iter().filter(|r| wants(r)).count();
    let bar = ProgressBar::new((options.cases() + 1 + own_rows) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("roofline");
    let mut table = kernel_table(&gpu, &options, |p| match p {
        Progress::Roofline(_) | Progress::Row(_) => bar.inc(1),
        Progress::Next(what) => bar.set_message(what.to_string()),
    })?;
    let mut launch_costs = None;
    if wants(LAUNCH) {
        bar.set_message(LAUNCH);
        launch_costs = Some(launch::measure(&gpu, reps.max(5), !wall_clock)?);
        bar.inc(1);
    }
    let mut solver_runs = Vec::new();
    // Iteration rows: (row, progress message, timing).
    type TimeIteration = fn(&Gpu) -> curvgpu::Result<solvers::IterationTiming>;
    let iteration_rows: [(&str, &str, TimeIteration); 3] = [
        (CG_ITERATION, "cg iteration, poisson 1024²", |g| {
            solvers::cg_iteration(g, 1024)
        }),
        (LANCZOS_STEP, "lanczos step, poisson 512²", |g| {
            solvers::lanczos_step(g, 512)
        }),
        (POWER_ITERATION, "power iteration, poisson 512²", |g| {
            solvers::power_iteration(g, 512)
        }),
    ];
    let mut iterations = Vec::new();
    for (name, message, time) in iteration_rows {
        if !wants(name) {
            continue;
        }
        bar.set_message(message);
        let t = time(&gpu)?;
        table.rows.push(KernelRow::new(
            name,
            t.unknowns,
            Work::Bytes(t.bytes),
            t.ms,
            &table.roofline,
        ));
        iterations.push((name, t));
        bar.inc(1);
    }
    let side = 4096;
    let entries = (side * side) as f64;
    for (name, on_the_fly, work) in [
        // Each iteration reads C twice (the column and the row log-sum-exps).
        (SINKHORN_DENSE, false, Work::Bytes(2.0 * 4.0 * entries)),
        (
            SINKHORN_POINTS,
            true,
            Work::Flops(2.0 * entries * transport::points_flops_per_entry(2)),
        ),
    ] {
        if !wants(name) {
            continue;
        }
        bar.set_message(name);
        let ms = transport::sinkhorn_iteration_ms(&gpu, side, on_the_fly)?;
        table
            .rows
            .push(KernelRow::new(name, side, work, ms, &table.roofline));
        bar.inc(1);
    }
    for (row, problem) in OT_ROWS.iter().zip(transport::PROBLEMS) {
        if !wants(row) {
            continue;
        }
        bar.set_message(format!("sinkhorn and sns, {problem}"));
        if let Some(runs) = transport::compare(&gpu, problem, 200_000)? {
            solver_runs.extend(runs);
        }
        bar.inc(1);
    }
    if wants(CG_GRAPH) {
        bar.set_message("cg, graph Laplacian 4000");
        solver_runs.extend(solvers::graph_laplacian_time_to_solution(&gpu, 4000)?);
        bar.inc(1);
    }
    // Last: its f64 CPU reference keeps the GPU idle for seconds, and a GPU that idles drops
    // its clocks (the timings after it would start slow).
    if wants(CG_POISSON) {
        bar.set_message("time to solution, poisson 1024², rtol 1e-6");
        solver_runs.extend(solvers::poisson_time_to_solution(&gpu, 1024, 1e-6)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print!("{table}");
    if let Some(l) = launch_costs {
        println!(
            "launch: an empty dispatch {:.1} µs, a submit and wait {:.1} µs",
            l.empty_dispatch_us, l.submit_wait_us
        );
    }

    for (name, t) in &iterations {
        println!(
            "{name}: {} dispatches an iteration, the operator's included (wall-clock difference of {}- and {}-iteration runs, {:.0} B/unknown)",
            t.dispatches,
            t.runs.1,
            t.runs.0,
            t.bytes / t.unknowns as f64
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
                    match s.name {
                        "sinkhorn" => curvgpu::ot::SinkhornConfig::new(1.0).check_every,
                        _ => curvgpu::krylov::DEFAULT_CHECK_EVERY,
                    }
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
        let roof = &table.roofline;
        let mut doc = json!({
            "adapter": {
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
                "driver": info.driver,
                "driver_info": info.driver_info,
            },
            "timing": table.timing.as_str(),
            "timer_resolution_ns": table.timer_resolution_ns,
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
                "timer_resolution_ns": roof.timer_resolution_ns,
                "copy_shapes": roof.copy_shapes.iter().map(|s| json!({"name": s.name, "median_ms": s.median_ms, "gbps": s.rate})).collect::<Vec<_>>(),
                "fma_shapes": roof.fma_shapes.iter().map(|s| json!({"name": s.name, "median_ms": s.median_ms, "gflops": s.rate})).collect::<Vec<_>>(),
            },
            "kernels": table.bandwidth_rows().chain(table.compute_rows()).map(|r| match r.work {
                Work::Bytes(bytes) => json!({
                    "name": r.kernel,
                    "n": r.n,
                    "bytes": bytes,
                    "median_ms": r.median_ms,
                    "gbps": r.rate,
                    "roofline_fraction": r.fraction,
                    "reps": reps,
                    "coarse": r.coarse,
                }),
                Work::Flops(flops) => json!({
                    "name": r.kernel,
                    "n": r.n,
                    "flops": flops,
                    "median_ms": r.median_ms,
                    "gflops": r.rate,
                    "fma_fraction": r.fraction,
                    "reps": reps,
                    "coarse": r.coarse,
                }),
            }).collect::<Vec<_>>(),
            "launch": launch_costs.map(|l| json!({
                "empty_dispatch_us": l.empty_dispatch_us,
                "submit_wait_us": l.submit_wait_us,
            })),
            "fused_speedup": table.fused_speedup().map(|(n, x)| json!({"n": n, "sophiag_step_vs_unfused": x})),
            "packed_slowdowns": table.packed_slowdowns().iter().map(|&(name, n, x)| json!({"name": name, "n": n, "time_vs_unpacked": x})).collect::<Vec<_>>(),
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
        for (name, t) in &iterations {
            doc[*name] = json!({ "dispatches_per_iteration": t.dispatches });
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
