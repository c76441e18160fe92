//! Timing and the adapter's own roofline, shared by `curvgpu bench`, the criterion benches and
//! the browser (everything but the solver runs compiles for wasm32, through async forms).

pub mod kernels;
pub mod launch;
pub mod problems;
pub mod roofline;
// Whole-solver runs drive blocking solvers and time f64 CPU references beside them.
#[cfg(not(target_arch = "wasm32"))]
pub mod solvers;
pub mod table;
pub mod timer;
#[cfg(not(target_arch = "wasm32"))]
pub mod transport;

#[cfg(not(target_arch = "wasm32"))]
pub use table::kernel_table;
pub use table::{kernel_table_async, KernelRow, KernelTable, Progress, TableOptions, Work};

use web_time::Instant;

use crate::buffer::GpuVec;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::{PassTimestamps, Recorder};

/// The kernels the bench dispatches itself: the roofline's and the unfused SophiaG baseline's.
pub(crate) fn kernels() -> Vec<&'static crate::kernel::Kernel> {
    [roofline::KERNELS, kernels::UNFUSED_KERNELS].concat()
}

/// How a measurement was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingMethod {
    /// GPU timestamp queries around the compute pass.
    GpuTimestamps,
    /// Host wall clock around submit + wait (the adapter has no timestamps).
    WallClock,
}

impl TimingMethod {
    /// The name used in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            TimingMethod::GpuTimestamps => "gpu-timestamps",
            TimingMethod::WallClock => "wall-clock",
        }
    }
}

/// Median of a sample (NaN for an empty one).
pub fn median(samples: &[f64]) -> f64 {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let k = s.len() / 2;
    if s.len() % 2 == 1 {
        s[k]
    } else {
        0.5 * (s[k - 1] + s[k])
    }
}

/// The timed runs of one measurement.
#[derive(Clone, Debug)]
pub struct Runs {
    /// Milliseconds of each run.
    pub ms: Vec<f64>,
    /// How they were taken.
    pub method: TimingMethod,
    /// Raw timestamps, the begin and end of each run's pass, in ticks of `period_ns` (empty
    /// for wall clock): what [`timer::timestamp_resolution_ns`] reads the clock's step from.
    pub stamps: Vec<u64>,
    /// Nanoseconds per timestamp tick.
    pub period_ns: f64,
}

impl Runs {
    /// Median milliseconds.
    pub fn median_ms(&self) -> f64 {
        median(&self.ms)
    }
}

/// Blocks (natively) or yields (on the web, where nothing may block) until the GPU has done
/// everything submitted before: the web has no `wait`, but a read resolves only after the
/// work queued ahead of it, so a 4-byte read of `probe` stands in for it.
async fn settle(gpu: &Gpu, probe: &GpuVec<u32>) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = probe;
        gpu.wait()
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = gpu; // the probe lives on it
        probe.read_async().await.map(drop)
    }
}

/// Untimed warm-up: runs until this many milliseconds have passed, at most [`WARM_UP_MAX_RUNS`].
const WARM_UP_MS: f64 = 50.0;
/// Cap on warm-up runs (small kernels on a fast GPU would otherwise run thousands).
const WARM_UP_MAX_RUNS: usize = 50;

/// Times `reps` runs of whatever `record` records, after untimed warm-up runs: GPU
/// timestamps around each run's pass when `use_timestamps` and the adapter has them, else the
/// host clock around submit and a wait for the GPU (on the web, where there is no wait, a
/// 4-byte readback, included in the time).
pub async fn time_runs_async(
    gpu: &Gpu,
    reps: usize,
    use_timestamps: bool,
    mut record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Runs> {
    let reps = reps.max(1);
    let probe = GpuVec::<u32>::zeros(gpu, 1)?;
    // Warm up for a while, not once: a GPU left idle (by a host-side reference solve, say)
    // drops its clocks, and a few milliseconds of timed work run before they come back (an
    // H200 timed a Sinkhorn iteration 5× slower right after 22 s of host-only work).
    let warm_start = Instant::now();
    for _ in 0..WARM_UP_MAX_RUNS {
        let mut warm = Recorder::new(gpu);
        record(&mut warm)?;
        warm.submit()?;
        settle(gpu, &probe).await?;
        if warm_start.elapsed().as_secs_f64() * 1e3 >= WARM_UP_MS {
            break;
        }
    }
    if use_timestamps && gpu.has_timestamps() {
        let count = 2 * reps as u32;
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("curvgpu bench"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu timestamps"),
            size: 8 * count as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let ticks = GpuVec::<u32>::zeros(gpu, 2 * count as usize)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        for r in 0..reps as u32 {
            let mut rec = Recorder::new(gpu);
            record(&mut rec)?;
            rec.encode_timed(
                &mut encoder,
                Some(PassTimestamps {
                    query_set: &set,
                    begin: 2 * r,
                    end: 2 * r + 1,
                }),
            );
        }
        encoder.resolve_query_set(&set, 0..count, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, ticks.buffer(), 0, 8 * count as u64);
        gpu.submit("timed runs", || vec![encoder.finish()])?;
        let words = ticks.read_async().await?;
        let stamps: Vec<u64> = words
            .chunks_exact(2)
            .map(|w| w[0] as u64 | ((w[1] as u64) << 32))
            .collect();
        let period_ns = gpu.queue().get_timestamp_period() as f64;
        let ms = stamps
            .chunks_exact(2)
            .map(|s| (s[1] as f64 - s[0] as f64) * period_ns * 1e-6)
            .collect();
        return Ok(Runs {
            ms,
            method: TimingMethod::GpuTimestamps,
            stamps,
            period_ns,
        });
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut rec = Recorder::new(gpu);
        record(&mut rec)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        rec.encode(&mut encoder);
        let cmd = encoder.finish();
        // The clock starts at the submit itself, not at the error scope around it.
        let mut t0 = None;
        gpu.submit("timed run", || {
            t0 = Some(Instant::now());
            vec![cmd]
        })?;
        settle(gpu, &probe).await?;
        let t0 = t0.ok_or_else(|| Error::Poll("the timed run was not submitted".into()))?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    if ms.iter().any(|x| !x.is_finite()) {
        return Err(Error::Poll("non-finite timing".into()));
    }
    Ok(Runs {
        ms,
        method: TimingMethod::WallClock,
        stamps: Vec::new(),
        period_ns: 1.0,
    })
}

/// Blocking form of [`time_runs_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn time_runs(
    gpu: &Gpu,
    reps: usize,
    use_timestamps: bool,
    record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Runs> {
    pollster::block_on(time_runs_async(gpu, reps, use_timestamps, record))
}
