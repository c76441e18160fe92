//! What launching costs the adapter: one empty dispatch inside a pass, and one submit with a
//! wait for it — the figures launch-bound rows (a CG or Sinkhorn iteration on lavapipe) are
//! read against.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::record::Recorder;

use super::roofline::EMPTY;
use super::time_runs_async;

/// Dispatches in the long pass the per-dispatch cost is the difference of.
const DISPATCHES: usize = 200;

/// The launch costs, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaunchCosts {
    /// One more empty dispatch in a pass: (a pass of 201 − a pass of 1) / 200.
    pub empty_dispatch_us: f64,
    /// A submit of one empty dispatch until the host sees it done (wall clock; on the web a
    /// 4-byte readback stands in for the wait).
    pub submit_wait_us: f64,
}

/// Measures both, `reps` timed runs each (medians), on the table's clock for the dispatches
/// (`use_timestamps`) and on the wall clock for the submit.
pub async fn measure_async(gpu: &Gpu, reps: usize, use_timestamps: bool) -> Result<LaunchCosts> {
    let empty = |times: usize| {
        move |rec: &mut Recorder| {
            for _ in 0..times {
                rec.dispatch(&EMPTY, &[], &[], [1, 1, 1])?;
            }
            Ok(())
        }
    };
    let one = time_runs_async(gpu, reps, use_timestamps, empty(1)).await?;
    let many = time_runs_async(gpu, reps, use_timestamps, empty(DISPATCHES + 1)).await?;
    let submit = time_runs_async(gpu, reps, false, empty(1)).await?;
    Ok(LaunchCosts {
        empty_dispatch_us: (many.median_ms() - one.median_ms()) / DISPATCHES as f64 * 1e3,
        submit_wait_us: submit.median_ms() * 1e3,
    })
}

/// Blocking form of [`measure_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn measure(gpu: &Gpu, reps: usize, use_timestamps: bool) -> Result<LaunchCosts> {
    pollster::block_on(measure_async(gpu, reps, use_timestamps))
}
