//! The adapter's own roofline, measured in the same run as the kernels: copy bandwidth and FMA
//! throughput, each the best of several kernel shapes (software adapters reward few workgroups
//! in a grid-stride loop, GPUs one element per invocation; neither is assumed).

use super::{time_runs_async, timer, Runs, TimingMethod};
use crate::buffer::GpuVec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{grid_for_groups, Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// The roofline kernels' length (and the FMA kernel's iterations).
    pub(crate) struct Len { n: u32, iters: u32 }
}

/// dst[i] = src[i] over f32s.
pub(crate) static COPY_F32: Kernel = Kernel::new(
    &shader::BENCH_ROOFLINE,
    "copy_f32",
    &[uniform::<Len>(), Slot::Read("src"), Slot::Write("dst")],
);
/// dst[i] = src[i] over vec4s.
pub(crate) static COPY_VEC4: Kernel = Kernel::new(
    &shader::BENCH_ROOFLINE,
    "copy_vec4",
    &[uniform::<Len>(), Slot::Read("src"), Slot::Write("dst")],
);
/// Eight FMA chains per invocation, one vec4 written.
pub(crate) static FMA_VEC4: Kernel = Kernel::new(
    &shader::BENCH_ROOFLINE,
    "fma_vec4",
    &[uniform::<Len>(), Slot::Write("out")],
);

/// A dispatch that does nothing (the launch cost).
pub(crate) static EMPTY: Kernel = Kernel::new(&shader::BENCH_ROOFLINE, "empty", &[]);
/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&COPY_F32, &COPY_VEC4, &FMA_VEC4, &EMPTY];

/// One measured shape.
#[derive(Clone, Debug)]
pub struct Shape {
    /// e.g. `copy_vec4 grid=1024`.
    pub name: String,
    /// Median milliseconds.
    pub median_ms: f64,
    /// GB/s for copies, GFLOP/s for FMA.
    pub rate: f64,
}

/// The roofline: best copy bandwidth and best FMA throughput, with every shape tried.
#[derive(Clone, Debug)]
pub struct Roofline {
    /// Best copy bandwidth, GB/s (bytes read + written).
    pub copy_gbps: f64,
    /// Best FMA throughput, GFLOP/s (an FMA counts 2 flops).
    pub fma_gflops: f64,
    /// Every copy shape measured.
    pub copy_shapes: Vec<Shape>,
    /// Every FMA shape measured.
    pub fma_shapes: Vec<Shape>,
    /// How the times were taken.
    pub timing: TimingMethod,
    /// The step of the clock behind them, nanoseconds (`None`: finer than 1 µs or not
    /// detectable; see [`timer`]).
    pub timer_resolution_ns: Option<f64>,
}

/// Workgroup caps tried for copies: `None` is one item per invocation. The kernels' own
/// tuning cap is added when it is not among them, so the roofline is never a shape the
/// kernels could not use.
const COPY_GRIDS: [Option<u32>; 6] = [
    None,
    Some(64),
    Some(256),
    Some(1024),
    Some(2048),
    Some(8192),
];

/// Measures copy bandwidth over `n` f32 (n a multiple of 4) and FMA throughput (blocking
/// form of [`measure_async`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn measure(gpu: &Gpu, n: usize, reps: usize) -> Result<Roofline> {
    pollster::block_on(measure_async(gpu, n, reps))
}

/// Measures copy bandwidth over `n` f32 (n a multiple of 4) and FMA throughput, every shape
/// with `reps` timed runs, on GPU timestamps where the adapter has them.
pub async fn measure_async(gpu: &Gpu, n: usize, reps: usize) -> Result<Roofline> {
    let mut stamps = Vec::new();
    measure_pooling(gpu, n, reps, &mut stamps).await
}

/// [`measure_async`], appending every raw timestamp to `stamps` so a caller timing more on
/// the same clock can read its step from all of them.
pub(crate) async fn measure_pooling(
    gpu: &Gpu,
    n: usize,
    reps: usize,
    stamps: &mut Vec<u64>,
) -> Result<Roofline> {
    let first = stamps.len();
    let mut period_ns = 1.0;
    let mut keep = |runs: Runs| {
        stamps.extend_from_slice(&runs.stamps);
        period_ns = runs.period_ns;
        (runs.median_ms(), runs.method)
    };
    let n = n.max(4) / 4 * 4;
    let src = GpuVec::<f32>::zeros(gpu, n)?;
    let dst = GpuVec::<f32>::zeros(gpu, n)?;
    let bytes = 8.0 * n as f64;
    let mut copy_shapes = Vec::new();
    let mut timing = TimingMethod::WallClock;
    let mut grids = COPY_GRIDS.to_vec();
    if !grids.contains(&gpu.tuning().max_workgroups) {
        grids.push(gpu.tuning().max_workgroups);
    }
    for (entry, items) in [("copy_f32", n), ("copy_vec4", n / 4)] {
        for &cap in &grids {
            let groups = (items as u64).div_ceil(256);
            let groups = cap.map_or(groups, |c| groups.min(c as u64));
            let grid = grid_for_groups(gpu, groups)?;
            let uniform = Len {
                n: items as u32,
                iters: 0,
            };
            let k = match entry {
                "copy_f32" => &COPY_F32,
                _ => &COPY_VEC4,
            };
            let runs = time_runs_async(gpu, reps, true, |rec: &mut Recorder| {
                rec.dispatch(
                    k,
                    &[("WG", 256.0)],
                    &[
                        Binding::uniform(&uniform),
                        Binding::storage(src.view()),
                        Binding::storage(dst.view()),
                    ],
                    grid,
                )
            })
            .await?;
            let (m, t) = keep(runs);
            timing = t;
            copy_shapes.push(Shape {
                name: format!(
                    "{entry} grid={}",
                    cap.map_or("all".to_string(), |c| c.to_string())
                ),
                median_ms: m,
                rate: bytes / (m * 1e-3) / 1e9,
            });
        }
    }
    let mut fma_shapes = Vec::new();
    let invocations = (n / 64).max(256);
    let out = GpuVec::<f32>::zeros(gpu, 4 * invocations)?;
    for (wg, iters) in [(64u32, 256u32), (256, 256), (256, 1024)] {
        let uniform = Len {
            n: invocations as u32,
            iters,
        };
        let grid = grid_for_groups(gpu, (invocations as u64).div_ceil(wg as u64))?;
        let runs = time_runs_async(gpu, reps, true, |rec: &mut Recorder| {
            rec.dispatch(
                &FMA_VEC4,
                &[("WG", wg as f64)],
                &[Binding::uniform(&uniform), Binding::storage(out.view())],
                grid,
            )
        })
        .await?;
        let (m, _) = keep(runs);
        let flops = 2.0 * 8.0 * 4.0 * iters as f64 * invocations as f64;
        fma_shapes.push(Shape {
            name: format!("fma_vec4 wg={wg} iters={iters}"),
            median_ms: m,
            rate: flops / (m * 1e-3) / 1e9,
        });
    }
    let best = |s: &[Shape]| s.iter().map(|x| x.rate).fold(0.0, f64::max);
    let timer_resolution_ns = match timing {
        TimingMethod::GpuTimestamps => timer::timestamp_resolution_ns(&stamps[first..], period_ns),
        TimingMethod::WallClock => timer::wall_clock_resolution_ns(),
    };
    Ok(Roofline {
        copy_gbps: best(&copy_shapes),
        fma_gflops: best(&fma_shapes),
        copy_shapes,
        fma_shapes,
        timing,
        timer_resolution_ns,
    })
}
