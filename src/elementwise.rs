//! The one recording path for elementwise kernels: a vec4 body entry over ⌊n/4⌋ vec4s, a
//! scalar `_tail` entry over the last n % 4 elements, and chunks no larger than one storage
//! binding may be, so any length the buffers hold can be processed.

use crate::buffer::BufView;
use crate::error::Result;
use crate::kernel::{Kernel, Uniform};
use crate::record::{Binding, Recorder};

/// An elementwise kernel: its vec4 body and scalar tail entry points (the same slots).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Elementwise {
    pub body: &'static Kernel,
    pub tail: &'static Kernel,
}

/// Records `kernel` over `n` elements.
///
/// `full` views (n elements each) bind from 1 upwards; `segmented` views (n / `segment`
/// elements) bind after them. `params(len)` builds the uniform for a chunk of `len` elements.
pub(crate) fn record<P: Uniform>(
    rec: &mut Recorder,
    kernel: Elementwise,
    n: usize,
    full: &[BufView<'_>],
    segmented: &[BufView<'_>],
    segment: usize,
    params: impl Fn(u32) -> P,
) -> Result<()> {
    let segment = segment.max(1);
    // Chunks start where every view (full and segmented) stays 256-byte aligned.
    let chunk = rec.binding_chunk(64 * segment)?;
    let constants = rec.wg();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let uniform = params(len as u32);
        let seg_views: Vec<BufView> = segmented
            .iter()
            .map(|v| v.sub(start / segment, len.div_ceil(segment)))
            .collect();
        let vec4s = len / 4;
        if vec4s > 0 {
            let mut bindings = vec![Binding::uniform(&uniform)];
            bindings.extend(
                full.iter()
                    .map(|v| Binding::Storage(v.sub(start, len), Some(16 * vec4s as u64))),
            );
            bindings.extend(seg_views.iter().map(|v| Binding::storage(*v)));
            let grid = rec.elementwise_grid(vec4s as u64)?;
            rec.dispatch(kernel.body, &constants, &bindings, grid)?;
        }
        if len % 4 != 0 {
            let mut bindings = vec![Binding::uniform(&uniform)];
            bindings.extend(full.iter().map(|v| Binding::storage(v.sub(start, len))));
            bindings.extend(seg_views.iter().map(|v| Binding::storage(*v)));
            rec.dispatch(kernel.tail, &constants, &bindings, [1, 1, 1])?;
        }
        start += len;
    }
    Ok(())
}
