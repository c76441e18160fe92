//! Views sharing one buffer, on the browser's WebGPU: parameters and gradients of an optimizer
//! step packed into one buffer (as engines pool them) must step exactly as separate buffers,
//! and an overlap must be refused before anything runs. What this checks that the native suite
//! cannot: that the browser accepts the read-write bindings curvgpu promotes for such a
//! dispatch (WebGPU refuses overlapping writable bindings; these are disjoint).

use curvgpu::diag::{AdamW, AdamWConfig};
use curvgpu::{Error, Gpu, GpuVec, Optimizer, Result};
use serde::{Deserialize, Serialize};

/// What the check found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedCheck {
    /// Elements per tensor.
    pub n: usize,
    /// The packed parameters after three steps equal the separate ones bit for bit.
    pub equal: bool,
    /// Parameters overlapping the gradients were refused with `Error::Overlap`.
    pub overlap_refused: bool,
}

/// Three AdamW steps of one tensor of `n` elements, packed and separate.
pub async fn run(gpu: &Gpu, n: usize) -> Result<PackedCheck> {
    let theta: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let grads: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
    let separate = [GpuVec::upload(gpu, &theta)?, GpuVec::upload(gpu, &grads)?];
    let packed = GpuVec::<f32>::packed(gpu, &[n, n])?;
    packed[0].write(&theta)?;
    packed[1].write(&grads)?;
    let mut a = AdamW::new(gpu, n, AdamWConfig::default())?;
    let mut b = AdamW::new(gpu, n, AdamWConfig::default())?;
    for _ in 0..3 {
        a.step_async(gpu, &separate[0], &separate[1]).await?;
        b.step_async(gpu, &packed[0], &packed[1]).await?;
    }
    let equal = separate[0].read_async().await? == packed[0].read_async().await?;
    let overlap_refused = matches!(
        b.step_async(gpu, &packed[0], &packed[0]).await,
        Err(Error::Overlap { .. })
    );
    Ok(PackedCheck {
        n,
        equal,
        overlap_refused,
    })
}
