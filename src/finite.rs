//! The opt-in finite check: the index of the first NaN or ±inf in a tensor.
//!
//! curvgpu's kernels let non-finite values propagate exactly as PyTorch's optimizers do (a NaN
//! gradient makes the parameter NaN); this check is how a caller finds the culprit first.

use bytemuck::{Pod, Zeroable};

use crate::buffer::BufView;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Len {
    n: u32,
    _pad: [u32; 3],
}

/// Index of the first non-finite element of `x`, or `None` (blocking: submits and reads back).
#[cfg(not(target_arch = "wasm32"))]
pub fn first_nonfinite<'a>(gpu: &Gpu, x: impl Into<BufView<'a>>) -> Result<Option<usize>> {
    pollster::block_on(first_nonfinite_async(gpu, x))
}

/// Async form of [`first_nonfinite`].
pub async fn first_nonfinite_async<'a>(
    gpu: &Gpu,
    x: impl Into<BufView<'a>>,
) -> Result<Option<usize>> {
    let x = x.into();
    x.check(gpu, "x", x.len())?;
    let chunk = gpu.binding_chunk(64)?;
    let mut start = 0;
    while start < x.len() {
        let len = chunk.min(x.len() - start);
        let first = gpu.upload(&[u32::MAX])?;
        let mut rec = Recorder::new(gpu);
        let uniform = Len {
            n: len as u32,
            _pad: [0; 3],
        };
        rec.dispatch(
            kernel!("common/finite.wgsl", "first_nonfinite"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&uniform)),
                Binding::Storage(x.sub(start, len), None),
                Binding::Storage(first.view(), None),
            ],
            gpu.elementwise_grid(len as u64)?,
        )?;
        rec.submit()?;
        let index = gpu.read_async(&first).await?[0];
        if index != u32::MAX {
            return Ok(Some(start + index as usize));
        }
        start += len;
    }
    Ok(None)
}

/// `Err(Error::NonFinite)` naming `argument` and the first bad index, if there is one.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn ensure_finite(
    gpu: &Gpu,
    argument: &'static str,
    views: &[BufView<'_>],
) -> Result<()> {
    for (tensor, v) in views.iter().enumerate() {
        if let Some(index) = first_nonfinite(gpu, *v)? {
            return Err(crate::Error::NonFinite {
                argument,
                tensor,
                index,
            });
        }
    }
    Ok(())
}
