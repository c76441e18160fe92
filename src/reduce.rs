//! Reductions whose result stays on the device: `reduce::record` → [`REDUCE_PARTIAL`] then
//! [`REDUCE_FINALIZE`] (`shaders/common/reduce.wgsl`), writing `out[out_index]` so the next
//! kernel can read it without a host round-trip.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// Both passes' parameters.
    pub(crate) struct ReduceUniform { n: u32, out_index: u32, partials: u32, _pad: u32 }
}

/// One partial result per workgroup over the vec4s of x (and y).
pub static REDUCE_PARTIAL: Kernel = Kernel::new(
    &shader::REDUCE,
    "reduce_partial",
    &[
        uniform::<ReduceUniform>(),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Write("partials"),
    ],
);
/// The partials and the n % 4 tail folded into `out[out_index]`.
pub static REDUCE_FINALIZE: Kernel = Kernel::new(
    &shader::REDUCE,
    "reduce_finalize",
    &[
        uniform::<ReduceUniform>(),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Write("partials"),
        Slot::Write("out"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&REDUCE_PARTIAL, &REDUCE_FINALIZE];

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

/// Partial results per reduction: few enough for one workgroup to fold them quickly.
const MAX_PARTIALS: u32 = 1024;

/// Records `out[out_index] = op(x[, y])`. `y` is required for [`Reduction::Dot`] only (and
/// ignored otherwise). `out` may share a buffer with `x` and `y` where they are disjoint;
/// for Σx² pass [`Reduction::SquaredNorm`], not `Dot` with `y = x`, when `out` shares their
/// buffer. Tensors past one storage binding are rejected with [`Error::TooLarge`].
pub fn record(
    rec: &mut Recorder,
    op: Reduction,
    x: BufView<'_>,
    y: Option<BufView<'_>>,
    out: BufView<'_>,
    out_index: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let x = x.check(gpu, "x", x.len())?;
    let y = match (op, y) {
        (Reduction::Dot, Some(y)) => y.check(gpu, "y", x.len())?,
        (Reduction::Dot, None) => return Err(Error::Empty { argument: "y" }),
        (_, _) => x,
    };
    let out = out.check(gpu, "out", out.len())?;
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
    let partials = GpuVec::<f32>::zeros(gpu, groups as usize)?;
    if vec4s > 0 {
        record_partials(rec, op, x, y, partials.view(), groups)?;
    }
    record_finalize(rec, op, x, y, &partials, groups, out, out_index)
}

/// Records one partial result per workgroup into `partials[..groups]` over the first
/// 4⌊n/4⌋ elements of x (and y): the first pass of [`record`], for a consumer that folds the
/// partials itself (CG's update re-reduces them in every workgroup instead of a pass of its
/// own). x and y are views of whole vec4s where the tail must be covered too.
pub(crate) fn record_partials(
    rec: &mut Recorder,
    op: Reduction,
    x: BufView<'_>,
    y: BufView<'_>,
    partials: BufView<'_>,
    groups: u64,
) -> Result<()> {
    let vec4s = (x.len() / 4) as u64;
    let uniform = ReduceUniform {
        n: x.len() as u32,
        out_index: 0,
        partials: groups as u32,
        _pad: 0,
    };
    let bytes = Some(16 * vec4s);
    let grid = rec.grid_for_groups(groups)?;
    rec.dispatch(
        &REDUCE_PARTIAL,
        &constants(rec.gpu(), op),
        &[
            Binding::uniform(&uniform),
            Binding::Storage(x, bytes),
            second_operand(op, Binding::Storage(y, bytes)),
            Binding::storage(partials),
        ],
        grid,
    )
}

/// y where the op reads it; only Σxy does, so the others bind the placeholder (x bound twice
/// would be two overlapping bindings, refused where `out` shares x's buffer).
fn second_operand(op: Reduction, y: Binding<'_>) -> Binding<'_> {
    match op {
        Reduction::Dot => y,
        _ => Binding::Placeholder,
    }
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
    rec.dispatch(
        &REDUCE_FINALIZE,
        &constants(gpu, op),
        &[
            Binding::uniform(&uniform),
            Binding::storage(x),
            second_operand(op, Binding::storage(y)),
            Binding::storage(partials.view()),
            Binding::storage(out),
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
    let out = GpuVec::<f32>::zeros(gpu, 1)?;
    let mut rec = Recorder::new(gpu);
    record(&mut rec, op, x.into(), y, out.view(), 0)?;
    rec.submit()?;
    Ok(out.read_async().await?[0])
}
