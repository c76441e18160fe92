//! The opt-in finite check: the index of the first NaN or ±inf in a tensor.
//!
//! curvgpu's kernels let non-finite values propagate exactly as PyTorch's optimizers do (a NaN
//! gradient makes the parameter NaN); this check is how a caller finds the culprit first.

use crate::buffer::{BufView, GpuVec};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// One piece's length and where it reports.
    pub(crate) struct Len { n: u32, slot: u32, _pad0: u32, _pad1: u32 }
}

/// atomicMin of the first non-finite (and, with NEGATIVE, negative) index per piece.
static FIRST_NONFINITE: Kernel = Kernel::new(
    &shader::FINITE,
    "first_nonfinite",
    &[uniform::<Len>(), Slot::Read("x"), Slot::Write("first")],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&FIRST_NONFINITE];

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
    Ok(scan(gpu, &[x.into()], false)
        .await?
        .0
        .map(|(_, index)| index))
}

/// (first non-finite, first negative) as (tensor, index) over `xs`, the second only when
/// `negative` is asked for: every tensor (in binding-sized pieces) checked in one submission
/// with one readback.
type Found = (Option<(usize, usize)>, Option<(usize, usize)>);

async fn scan(gpu: &Gpu, xs: &[BufView<'_>], negative: bool) -> Result<Found> {
    let mut rec = Recorder::new(gpu);
    let chunk = rec.binding_chunk(64)?;
    // (tensor, start, len) of each piece; each piece reports into its own two slots.
    let mut pieces = Vec::new();
    for (tensor, x) in xs.iter().enumerate() {
        x.check(gpu, "x", x.len())?;
        for start in (0..x.len()).step_by(chunk) {
            pieces.push((tensor, start, chunk.min(x.len() - start)));
        }
    }
    if pieces.is_empty() {
        return Ok((None, None));
    }
    let first = GpuVec::upload(gpu, &crate::host::filled("x", 2 * pieces.len(), u32::MAX)?)?;
    let constants = [rec.wg()[0], ("NEGATIVE", negative as u32 as f64)];
    for (slot, &(tensor, start, len)) in pieces.iter().enumerate() {
        let uniform = Len {
            n: len as u32,
            slot: 2 * slot as u32,
            ..Default::default()
        };
        let grid = rec.elementwise_grid(len as u64)?;
        rec.dispatch(
            &FIRST_NONFINITE,
            &constants,
            &[
                Binding::uniform(&uniform),
                Binding::storage(xs[tensor].sub(start, len)),
                Binding::storage(first.view()),
            ],
            grid,
        )?;
    }
    rec.submit()?;
    let found = first.read_async().await?;
    let first_in = |which: usize| {
        pieces
            .iter()
            .zip(found.chunks_exact(2))
            .find(|(_, slots)| slots[which] != u32::MAX)
            .map(|(&(tensor, start, _), slots)| (tensor, start + slots[which] as usize))
    };
    Ok((first_in(0), first_in(1)))
}

/// `Err(Error::NonFinite)` naming `argument`, the first bad tensor of `views` and its first bad
/// index, if there is one (one submission, one readback).
pub(crate) async fn ensure_finite_async(
    gpu: &Gpu,
    argument: &'static str,
    views: &[BufView<'_>],
) -> Result<()> {
    ensure(gpu, argument, views, false).await
}

/// [`ensure_finite_async`], and then `Err(Error::Negative)` for the first value below zero.
pub(crate) async fn ensure_non_negative_async(
    gpu: &Gpu,
    argument: &'static str,
    views: &[BufView<'_>],
) -> Result<()> {
    ensure(gpu, argument, views, true).await
}

async fn ensure(
    gpu: &Gpu,
    argument: &'static str,
    views: &[BufView<'_>],
    negative: bool,
) -> Result<()> {
    match scan(gpu, views, negative).await? {
        (Some((tensor, index)), _) => Err(crate::Error::NonFinite {
            argument,
            tensor,
            index,
        }),
        (None, Some((tensor, index))) => Err(crate::Error::Negative {
            argument,
            tensor,
            index,
        }),
        (None, None) => Ok(()),
    }
}
