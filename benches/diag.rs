//! Criterion benches of the diagonal-Hessian kernels, timed on the GPU (timestamps where the
//! adapter has them), with throughput in bytes moved so criterion prints GB/s. The copy
//! roofline of the same adapter is measured first and printed for comparison.
//!
//! The `_packed` rows run the same step with parameters, gradients (and z⊙Hz) in one buffer,
//! so the read views go through the promoted (`read_write`) shader variant.
//!
//! `cargo bench --bench diag`; `CURVGPU_BENCH_LOG2=20,24` picks the sizes.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use curvgpu::bench::{kernels, roofline, time_runs};
use curvgpu::Gpu;

const KERNELS: [&str; 7] = [
    "sophiag_step",
    "sophiag_step_packed",
    "sophiag_step_unfused",
    "sophiah_step",
    "adahessian_step",
    "adahessian_step_packed",
    "hutchinson_accumulate",
];

fn sizes() -> Vec<u32> {
    std::env::var("CURVGPU_BENCH_LOG2")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20, 24])
}

fn diag(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("skipping the diag benches: {e}");
            return;
        }
    };
    let largest = 1usize << sizes().into_iter().max().unwrap_or(20);
    match roofline::measure(&gpu, largest, 5) {
        Ok(r) => eprintln!(
            "{}: copy roofline {:.2} GB/s, FMA {:.1} GFLOP/s ({})",
            gpu.adapter_info().name,
            r.copy_gbps,
            r.fma_gflops,
            r.timing.as_str()
        ),
        Err(e) => eprintln!("roofline failed: {e}"),
    }
    let mut group = c.benchmark_group("diag");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for name in KERNELS {
        for log2 in sizes() {
            let n = 1usize << log2;
            let bytes = kernels::bytes_per_element(name).unwrap_or(0.0) * n as f64;
            group.throughput(Throughput::Bytes(bytes as u64));
            let mut case = match kernels::case(&gpu, name, n) {
                Ok(Some(case)) => case,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("{name} at n = {n}: {e}");
                    continue;
                }
            };
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let runs = time_runs(&gpu, iters as usize, true, |rec| case.record(rec))
                        .expect("timing a kernel");
                    Duration::from_secs_f64(runs.ms.iter().sum::<f64>() * 1e-3)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, diag);
criterion_main!(benches);
