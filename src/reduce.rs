//! Reductions whose result stays on the device: `reduce::record` →
//! `kernel!("common/reduce.wgsl", "reduce_partial")` then `"reduce_finalize"`, writing
//! `out[out_index]` so the next kernel can read it without a host round-trip.

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

/// What to reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Σ x.
    Sum,
    /// Σ x².
    SquaredNorm,
    /// Σ x·y.
    Dot,
    /// max |x| (NaN handling follows the backend's `max`: do not rely on it).
    MaxAbs,
}

impl Reduction {
    fn op(self) -> f64 {
        match self {
            Reduction::Sum => 0.0,
            Reduction::SquaredNorm => 1.0,
            Reduction::Dot => 2.0,
            Reduction::MaxAbs => 3.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceUniform {
    n: u32,
    out_index: u32,
    partials: u32,
    _pad: u32,
}

/// Partial results per reduction: few enough for one workgroup to fold them quickly.
const MAX_PARTIALS: u32 = 1024;

/// Records `out[out_index] = op(x[, y])`. `y` is required for [`Reduction::Dot`] only.
/// Tensors past one storage binding are rejected with [`Error::TooLarge`].
pub fn record(
    rec: &mut Recorder,
    op: Reduction,
    x: BufView<'_>,
    y: Option<BufView<'_>>,
    out: BufView<'_>,
    out_index: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    x.check(gpu, "x", x.len())?;
    let y = match (op, y) {
        (Reduction::Dot, Some(y)) => {
            y.check(gpu, "y", x.len())?;
            y
        }
        (Reduction::Dot, None) => return Err(Error::Empty { argument: "y" }),
        (_, _) => x,
    };
    out.check(gpu, "out", out.len())?;
    if out_index >= out.len() {
        return Err(Error::BadView {
            argument: "out_index",
            message: format!(
                "index {out_index} outside an output of {} elements",
                out.len()
            ),
        });
    }
    let max = gpu.limits().max_storage_buffer_binding_size;
    if 4 * x.len() as u64 > max {
        return Err(Error::TooLarge {
            argument: "x",
            requested: 4 * x.len() as u64,
            limit: "max_storage_buffer_binding_size",
            max,
        });
    }
    let vec4s = (x.len() / 4) as u64;
    let groups = partial_groups(gpu, vec4s);
    let partials = gpu.zeros::<f32>(groups as usize)?;
    if vec4s > 0 {
        let uniform = ReduceUniform {
            n: x.len() as u32,
            out_index: out_index as u32,
            partials: groups as u32,
            _pad: 0,
        };
        let bytes = Some(16 * vec4s);
        rec.dispatch(
            kernel!("common/reduce.wgsl", "reduce_partial"),
            &constants(gpu, op),
            &[
                Binding::Uniform(bytemuck::bytes_of(&uniform)),
                Binding::Storage(x, bytes),
                Binding::Storage(y, bytes),
                Binding::Storage(partials.view(), None),
            ],
            gpu.grid_for_groups(groups)?,
        )?;
    }
    record_finalize(rec, op, x, y, &partials, groups, out, out_index)
}

fn constants(gpu: &Gpu, op: Reduction) -> [(&'static str, f64); 2] {
    [("WG", gpu.tuning().workgroup_size as f64), ("OP", op.op())]
}

/// Workgroups of a partial pass over `vec4s`: at least `Tuning::reduction_vec4s` vec4s per
/// invocation (each workgroup's tree costs log2(WG) barriers) and at most `MAX_PARTIALS`.
/// Kernels that fuse a partial reduction into other work use the same count.
pub(crate) fn partial_groups(gpu: &Gpu, vec4s: u64) -> u64 {
    let t = gpu.tuning();
    vec4s
        .div_ceil(t.workgroup_size as u64 * t.reduction_vec4s as u64)
        .clamp(1, MAX_PARTIALS as u64)
}

/// Records out[out_index] = op over `partials[..groups]` and the x.len() % 4 tail of x (and y).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_finalize(
    rec: &mut Recorder,
    op: Reduction,
    x: BufView<'_>,
    y: BufView<'_>,
    partials: &GpuVec<f32>,
    groups: u64,
    out: BufView<'_>,
    out_index: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let uniform = ReduceUniform {
        n: x.len() as u32,
        out_index: out_index as u32,
        partials: groups as u32,
        _pad: 0,
    };
    let uniform = bytemuck::bytes_of(&uniform);
    rec.dispatch(
        kernel!("common/reduce.wgsl", "reduce_finalize"),
        &constants(gpu, op),
        &[
            Binding::Uniform(uniform),
            Binding::Storage(x, None),
            Binding::Storage(y, None),
            Binding::Storage(partials.view(), None),
            Binding::Storage(out, None),
        ],
        [1, 1, 1],
    )
}

/// Reduces and reads the scalar back (blocking).
#[cfg(not(target_arch = "wasm32"))]
pub fn reduce<'a>(
    gpu: &Gpu,
    op: Reduction,
    x: impl Into<BufView<'a>>,
    y: Option<BufView<'a>>,
) -> Result<f32> {
    pollster::block_on(reduce_async(gpu, op, x, y))
}

/// Async form of [`reduce`].
pub async fn reduce_async<'a>(
    gpu: &Gpu,
    op: Reduction,
    x: impl Into<BufView<'a>>,
    y: Option<BufView<'a>>,
) -> Result<f32> {
    let out = gpu.zeros::<f32>(1)?;
    let mut rec = Recorder::new(gpu);
    record(&mut rec, op, x.into(), y, out.view(), 0)?;
    rec.submit()?;
    Ok(gpu.read_async(&out).await?[0])
}
