//! Vector helpers every family records: `record_copy` → `shader::VECTOR`'s `copy_range`,
//! `record_fill` → `fill`, `record_axpy` → `axpy_inplace` (`shaders/common/vector.wgsl`).

use crate::buffer::BufView;
use crate::error::Result;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// `copy_range`'s uniform.
    pub(crate) struct CopyRange { n: u32, src_offset: u32, dst_offset: u32, _pad: u32 }
}

crate::kernel::uniform_struct! {
    /// `fill`'s and `axpy_inplace`'s uniform.
    pub(crate) struct Axpy { n: u32, alpha: f32, _pad0: u32, _pad1: u32 }
}

/// dst[dst_offset + i] = src[src_offset + i].
pub(crate) static COPY_RANGE: Kernel = Kernel::new(
    &shader::VECTOR,
    "copy_range",
    &[
        uniform::<CopyRange>(),
        Slot::Read("src"),
        Slot::Write("dst"),
    ],
);
/// y += α·x.
pub(crate) static AXPY: Kernel = Kernel::new(
    &shader::VECTOR,
    "axpy_inplace",
    &[uniform::<Axpy>(), Slot::Read("x"), Slot::Write("y")],
);
/// y = α.
pub(crate) static FILL: Kernel = Kernel::new(
    &shader::VECTOR,
    "fill",
    &[uniform::<Axpy>(), Slot::Write("y")],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&COPY_RANGE, &AXPY, &FILL];

/// Records y ← α everywhere.
pub(crate) fn record_fill(rec: &mut Recorder, y: BufView<'_>, alpha: f32) -> Result<()> {
    let u = Axpy {
        n: y.len() as u32,
        alpha,
        ..Default::default()
    };
    let grid = rec.elementwise_grid(y.len() as u64)?;
    rec.dispatch(
        &FILL,
        &rec.wg(),
        &[Binding::uniform(&u), Binding::storage(y)],
        grid,
    )
}

/// Records y ← y + α·x.
pub(crate) fn record_axpy(
    rec: &mut Recorder,
    alpha: f32,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    let u = Axpy {
        n: y.len() as u32,
        alpha,
        ..Default::default()
    };
    let grid = rec.elementwise_grid(y.len() as u64)?;
    rec.dispatch(
        &AXPY,
        &rec.wg(),
        &[
            Binding::uniform(&u),
            Binding::storage(x),
            Binding::storage(y),
        ],
        grid,
    )
}

/// Records dst[dst_offset..][..n] = src[src_offset..][..n] (element offsets, any alignment).
pub(crate) fn record_copy(
    rec: &mut Recorder,
    src: BufView<'_>,
    src_offset: usize,
    dst: BufView<'_>,
    dst_offset: usize,
    n: usize,
) -> Result<()> {
    let u = CopyRange {
        n: n as u32,
        src_offset: src_offset as u32,
        dst_offset: dst_offset as u32,
        _pad: 0,
    };
    let grid = rec.elementwise_grid(n as u64)?;
    rec.dispatch(
        &COPY_RANGE,
        &rec.wg(),
        &[
            Binding::uniform(&u),
            Binding::storage(src),
            Binding::storage(dst),
        ],
        grid,
    )
}
