//! Criterion benches of the Krylov kernels: the Poisson operator (GPU-timestamp timed, GB/s),
//! also with x and y in one buffer (`poisson2d_apply_packed`), and whole CG solves (wall
//! clock, setup and readbacks included).
//!
//! `cargo bench --bench krylov`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use curvgpu::bench::{kernels, time_runs};
use curvgpu::krylov::{cg, CgOptions, Poisson};
use curvgpu::Gpu;

fn krylov(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("skipping the krylov benches: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("krylov");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, log2) in ["poisson2d_apply", "poisson2d_apply_packed"]
        .into_iter()
        .flat_map(|name| [16u32, 20].map(|log2| (name, log2)))
    {
        let n = 1usize << log2;
        let Ok(Some(mut case)) = kernels::case(&gpu, name, n) else {
            continue;
        };
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter_custom(|iters| {
                let runs = time_runs(&gpu, iters as usize, true, |rec| case.record(rec))
                    .expect("timing the stencil");
                Duration::from_secs_f64(runs.ms.iter().sum::<f64>() * 1e-3)
            })
        });
    }
    for side in [64usize, 256] {
        let op = Poisson::new_2d(side, side).expect("grid");
        let b = curvgpu::rng::gaussian(&gpu, side * side, 1, 0).expect("rhs");
        group.throughput(Throughput::Elements((side * side) as u64));
        group.bench_function(
            BenchmarkId::new("cg_solve_rtol_1e-5", side * side),
            |bench| bench.iter(|| cg(&gpu, &op, &b, None, &CgOptions::default()).expect("cg")),
        );
    }
    group.finish();
}

criterion_group!(benches, krylov);
criterion_main!(benches);
