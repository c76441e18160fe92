//! [`Tensors`]: one tensor or a list of them, wherever a kernel takes parameters, gradients or
//! Hessian samples, so a multi-tensor step has the same call as a single-tensor one.

use crate::buffer::{BufView, GpuVec};

/// Anything that names a list of f32 tensors on the device.
pub trait Tensors<'a> {
    /// The tensors as views, in order.
    fn views(self) -> Vec<BufView<'a>>;
}

impl<'a> Tensors<'a> for &'a GpuVec<f32> {
    fn views(self) -> Vec<BufView<'a>> {
        vec![self.view()]
    }
}

impl<'a> Tensors<'a> for BufView<'a> {
    fn views(self) -> Vec<BufView<'a>> {
        vec![self]
    }
}

impl<'a> Tensors<'a> for &'a [GpuVec<f32>] {
    fn views(self) -> Vec<BufView<'a>> {
        self.iter().map(GpuVec::view).collect()
    }
}

impl<'a> Tensors<'a> for &'a Vec<GpuVec<f32>> {
    fn views(self) -> Vec<BufView<'a>> {
        self.iter().map(GpuVec::view).collect()
    }
}

impl<'a> Tensors<'a> for &'a [BufView<'a>] {
    fn views(self) -> Vec<BufView<'a>> {
        self.to_vec()
    }
}

impl<'a> Tensors<'a> for Vec<BufView<'a>> {
    fn views(self) -> Vec<BufView<'a>> {
        self
    }
}

impl<'a, const N: usize> Tensors<'a> for [&'a GpuVec<f32>; N] {
    fn views(self) -> Vec<BufView<'a>> {
        self.iter().map(|v| v.view()).collect()
    }
}
