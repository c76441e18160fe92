//! Criterion benches of the optimal-transport solvers, wall clock as a caller sees it (host
//! recording and the readback of every check included): ten Sinkhorn iterations on the dense
//! form of the paper's random problem, with throughput in the bytes of C they read so criterion
//! prints GB/s, and whole solves to a marginal error of 1e-5 by Sinkhorn and by SNS. The
//! kernels' own time against the adapter's roofline is `curvgpu bench`'s
//! `sinkhorn_iteration_dense_4096` row.
//!
//! `cargo bench --bench ot`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use curvgpu::bench::transport::{problem_data, REG, TOL};
use curvgpu::ot::{Cost, Masses, OtProblem, SinkhornConfig, SnsConfig};
use curvgpu::{Gpu, GpuVec};

fn ot(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("skipping the ot benches: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("ot");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [500usize, 2000] {
        let name = format!("random_{n}");
        let Some(data) = problem_data(&name) else {
            continue;
        };
        let upload = |v: &[f32]| GpuVec::upload(&gpu, v).expect("upload");
        let (a, b, cost) = (upload(&data.a), upload(&data.b), upload(&data.cost));
        let problem = OtProblem::new(&gpu, &a, &b, Cost::Dense(cost.view()), Masses::Renormalize)
            .expect("a valid problem");
        // tol 0 is refused; one far below f32's reach runs the whole budget.
        let ten = SinkhornConfig {
            max_iter: 10,
            tol: f32::MIN_POSITIVE,
            ..SinkhornConfig::new(REG)
        };
        group.throughput(Throughput::Bytes(10 * 2 * 4 * (n * n) as u64));
        group.bench_function(
            BenchmarkId::new("sinkhorn_10_iterations_dense", n),
            |bench| bench.iter(|| problem.sinkhorn(&ten).expect("sinkhorn")),
        );
        if n > 500 {
            continue;
        }
        group.throughput(Throughput::Elements((n * n) as u64));
        let to_tol = SinkhornConfig {
            max_iter: 200_000,
            tol: TOL,
            ..SinkhornConfig::new(REG)
        };
        group.bench_function(BenchmarkId::new("sinkhorn_solve", &name), |bench| {
            bench.iter(|| problem.sinkhorn(&to_tol).expect("sinkhorn"))
        });
        let sns = SnsConfig {
            tol: TOL,
            ..SnsConfig::new(REG)
        };
        group.bench_function(BenchmarkId::new("sns_solve", &name), |bench| {
            bench.iter(|| problem.sns(&sns).expect("sns"))
        });
    }
    group.finish();
}

criterion_group!(benches, ot);
criterion_main!(benches);
