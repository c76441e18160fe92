//! Timing and the adapter's own roofline, shared by `curvgpu bench` and the criterion benches.

pub mod kernels;
pub mod problems;
pub mod roofline;
pub mod solvers;
pub mod transport;

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::{PassTimestamps, Recorder};

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

/// Times `reps` runs of whatever `record` records, after one untimed warm-up run.
/// Returns per-run milliseconds and the method used (timestamps when `use_timestamps` and the
/// adapter has them).
pub fn time_runs(
    gpu: &Gpu,
    reps: usize,
    use_timestamps: bool,
    mut record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<(Vec<f64>, TimingMethod)> {
    let reps = reps.max(1);
    let mut warm = Recorder::new(gpu);
    record(&mut warm)?;
    warm.submit()?;
    gpu.wait()?;
    if use_timestamps && gpu.has_timestamps() {
        let count = 2 * reps as u32;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("curvgpu bench"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu timestamps"),
            size: 8 * count as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let ticks = gpu.zeros::<u32>(2 * count as usize)?;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
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
        gpu.queue.submit([encoder.finish()]);
        let words = gpu.read(&ticks)?;
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        let stamp = |i: usize| (words[2 * i] as u64 | ((words[2 * i + 1] as u64) << 32)) as f64;
        let ms = (0..reps)
            .map(|r| (stamp(2 * r + 1) - stamp(2 * r)) * period_ns * 1e-6)
            .collect();
        return Ok((ms, TimingMethod::GpuTimestamps));
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut rec = Recorder::new(gpu);
        record(&mut rec)?;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        rec.encode(&mut encoder);
        let cmd = encoder.finish();
        let t0 = Instant::now();
        gpu.queue.submit([cmd]);
        gpu.wait()?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    if ms.iter().any(|x| !x.is_finite()) {
        return Err(Error::Poll("non-finite timing".into()));
    }
    Ok((ms, TimingMethod::WallClock))
}
