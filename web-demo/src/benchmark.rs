//! `curvgpu bench`'s table on the page's adapter: the library's own table
//! ([`curvgpu::bench::kernel_table_async`]) on a browser-sized selection, flattened for the page.

use std::rc::Rc;

use curvgpu::bench::{kernel_table_async, TableOptions};
use curvgpu::{Gpu, Result};
use serde::{Deserialize, Serialize};

/// What to measure; the default is a selection that finishes in seconds on a software adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchConfig {
    /// log2 of the element counts of the per-element kernels.
    pub log2_sizes: Vec<u32>,
    /// Timed runs per row (the median is reported).
    pub reps: usize,
    /// Kernel and problem names as `curvgpu bench --kernels` takes them.
    pub kernels: Vec<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            log2_sizes: vec![16, 20],
            reps: 5,
            kernels: [
                "sophiag_step",
                "sophiag_step_unfused",
                "adahessian_step",
                "adamw_step",
                "hutchinson_accumulate",
                "dot",
                "poisson2d_apply",
                "gemm_1024",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One row of the page's table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// Kernel or problem name.
    pub kernel: String,
    /// Elements (or the problem's size).
    pub n: usize,
    /// `GB/s` (against the copy roofline) or `GFLOP/s` (against the FMA roofline).
    pub unit: String,
    /// Median milliseconds per run.
    pub median_ms: f64,
    /// The rate in `unit`.
    pub rate: f64,
    /// Fraction of the matching roofline measured in the same run.
    pub fraction: f64,
    /// The median is under ten ticks of the timer: only a coarse figure.
    pub coarse: bool,
}

/// The table as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Adapter name.
    pub adapter: String,
    /// `gpu-timestamps` or `wall-clock`.
    pub timing: String,
    /// The timer's tick when it is coarser than a microsecond (browsers round timestamps).
    pub timer_resolution_ns: Option<f64>,
    /// Copy roofline, GB/s.
    pub copy_gbps: f64,
    /// FMA roofline, GFLOP/s.
    pub fma_gflops: f64,
    /// Every measured row.
    pub rows: Vec<BenchRow>,
}

/// Measures the roofline and the configured kernels on `gpu`.
pub async fn run(gpu: Rc<Gpu>, config: BenchConfig) -> Result<BenchReport> {
    let options = TableOptions {
        log2_sizes: config.log2_sizes,
        reps: config.reps,
        kernels: config.kernels,
        use_timestamps: true,
        ..Default::default()
    };
    let table = kernel_table_async(&gpu, &options, |_| {}).await?;
    Ok(BenchReport {
        adapter: table.adapter.name.clone(),
        timing: table.timing.as_str().to_string(),
        timer_resolution_ns: table.timer_resolution_ns,
        copy_gbps: table.roofline.copy_gbps,
        fma_gflops: table.roofline.fma_gflops,
        rows: table
            .rows
            .iter()
            .map(|r| BenchRow {
                kernel: r.kernel.clone(),
                n: r.n,
                unit: r.work.unit().to_string(),
                median_ms: r.median_ms,
                rate: r.rate,
                fraction: r.fraction,
                coarse: r.coarse,
            })
            .collect(),
    })
}
