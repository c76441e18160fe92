//! [`GpuVec`]: typed storage buffers (upload, zeros, read, write), [`BufView`]: a typed window
//! on any storage buffer (ours or the caller's) that kernels bind, and [`Layout`]: aligned
//! offsets for packing many tensors into one buffer.
//!
//! Views may share a buffer. Kernels accept disjoint views of one buffer (an engine's pooled
//! allocation holding parameters, gradients and state), and refuse views that overlap where a
//! kernel writes one of them with [`Error::Overlap`], naming both.
//!
//! What wgpu cannot tell curvgpu: which `wgpu::Instance` a `wgpu::Buffer` comes from. wgpu
//! resolves resources by per-instance ids, so a buffer made on a device of *another* instance
//! than the [`Gpu`]'s device may silently name a different buffer of this one. A buffer from
//! another device of the same instance is refused by wgpu's validation ([`Error::Wgpu`]). So:
//! give curvgpu only buffers created on the device its `Gpu` wraps (your own device through
//! [`Gpu::from_device`], or [`Gpu::device`] when curvgpu made it).

use std::marker::PhantomData;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Usages every curvgpu storage buffer gets: bound as storage, copied in and out.
pub const STORAGE_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A typed range of a storage buffer on one [`Gpu`]'s device. Several `GpuVec`s may share one
/// buffer (see [`GpuVec::packed`]); cloning is cheap and aliases the same memory.
#[derive(Clone, Debug)]
pub struct GpuVec<T: Pod> {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    offset: u64,
    len: usize,
    _elem: PhantomData<T>,
}

/// Bytes `len` elements of `T` occupy, rounded up to 16 so that vec4 kernels can bind the whole
/// of them; `None` past u64.
fn padded_bytes<T>(len: usize) -> Option<u64> {
    (len as u64)
        .checked_mul(std::mem::size_of::<T>() as u64)?
        .checked_next_multiple_of(16)
}

fn check_alloc(gpu: &Gpu, argument: &'static str, bytes: Option<u64>) -> Result<u64> {
    let max = gpu.limits().max_buffer_size;
    match bytes {
        Some(bytes) if bytes <= max => Ok(bytes),
        _ => Err(Error::TooLarge {
            argument,
            requested: bytes.unwrap_or(u64::MAX),
            limit: "max_buffer_size",
            max,
        }),
    }
}

impl<T: Pod> GpuVec<T> {
    /// Copies `data` into a new storage buffer on `gpu`'s device.
    pub fn upload(gpu: &Gpu, data: &[T]) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::Empty { argument: "data" });
        }
        let bytes = check_alloc(gpu, "data", padded_bytes::<T>(data.len()))?;
        let buffer = gpu.scoped("upload", || {
            let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("curvgpu upload"),
                size: bytes,
                usage: STORAGE_USAGES,
                mapped_at_creation: true,
            });
            buffer
        })?;
        {
            let mut view = buffer
                .get_mapped_range_mut(..)
                .map_err(|e| Error::Map(e.to_string()))?;
            let data = bytemuck::cast_slice::<T, u8>(data);
            view.slice(..data.len()).copy_from_slice(data);
        }
        buffer.unmap();
        Ok(Self::wrap(gpu, buffer, 0, data.len()))
    }

    /// A new zero-filled storage buffer of `len` elements on `gpu`'s device.
    pub fn zeros(gpu: &Gpu, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::Empty { argument: "len" });
        }
        let bytes = check_alloc(gpu, "len", padded_bytes::<T>(len))?;
        let buffer = gpu.scoped("zeros", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("curvgpu zeros"),
                size: bytes,
                usage: STORAGE_USAGES,
                mapped_at_creation: false,
            })
        })?;
        Ok(Self::wrap(gpu, buffer, 0, len))
    }

    /// One zero-filled buffer holding tensors of the given lengths, each at the offset
    /// [`Layout::new`] gives: many small tensors in one allocation, as engines pool them.
    pub fn packed(gpu: &Gpu, lens: &[usize]) -> Result<Vec<Self>> {
        let layout = Layout::new::<T>(gpu.limits(), lens)?;
        let bytes = check_alloc(gpu, "lens", Some(layout.size()))?;
        let buffer = gpu.scoped("packed", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("curvgpu packed"),
                size: bytes,
                usage: STORAGE_USAGES,
                mapped_at_creation: false,
            })
        })?;
        Ok(layout
            .offsets()
            .iter()
            .zip(lens)
            .map(|(&off, &len)| Self::wrap(gpu, buffer.clone(), off, len))
            .collect())
    }

    fn wrap(gpu: &Gpu, buffer: wgpu::Buffer, offset: u64, len: usize) -> Self {
        GpuVec {
            gpu: gpu.clone(),
            buffer,
            offset,
            len,
            _elem: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: curvgpu never creates an empty `GpuVec`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device this vector lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    /// The underlying buffer (shared with other vectors if packed).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Byte offset of element 0 in [`Self::buffer`].
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }
    /// Size in bytes of the elements (without padding).
    pub fn byte_len(&self) -> u64 {
        (self.len * std::mem::size_of::<T>()) as u64
    }
    /// True when this vector lives on `gpu`'s device.
    pub fn belongs_to(&self, gpu: &Gpu) -> bool {
        self.gpu == *gpu
    }

    /// A view for binding.
    pub fn view(&self) -> BufView<'_> {
        BufView {
            buffer: &self.buffer,
            offset: self.offset,
            len: self.len,
            gpu: Some(&self.gpu),
            name: None,
        }
    }

    /// Overwrites the vector with `data` (same length), ordered before the next submit.
    pub fn write(&self, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::LengthMismatch {
                argument: "data",
                expected: self.len,
                actual: data.len(),
            });
        }
        let bytes = bytemuck::cast_slice::<T, u8>(data);
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::BadView {
                argument: "data",
                message: format!(
                    "{} bytes: writes must be a multiple of 4 bytes",
                    bytes.len()
                ),
            });
        }
        self.gpu
            .queue()
            .write_buffer(&self.buffer, self.offset, bytes);
        Ok(())
    }

    /// Copies the vector to a mappable buffer; returns it with the byte count to read.
    fn stage(&self) -> Result<(wgpu::Buffer, u64)> {
        let bytes = self.byte_len();
        let copy = bytes.div_ceil(4) * 4;
        let device = self.gpu.device();
        let staging = self.gpu.scoped("readback", || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("curvgpu readback"),
                size: copy,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.buffer, self.offset, &staging, 0, copy);
        self.gpu.submit("readback", || vec![encoder.finish()])?;
        Ok((staging, bytes))
    }

    fn unpack(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<T>> {
        let mut out = crate::host::vec_with_capacity::<T>("readback", self.len)?;
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Map(e.to_string()))?;
            out.extend_from_slice(bytemuck::cast_slice(&view[..bytes as usize]));
        }
        staging.unmap();
        Ok(out)
    }

    /// Reads the vector back to host memory (blocking). Waits for all earlier submissions.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self) -> Result<Vec<T>> {
        let (staging, bytes) = self.stage()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu.wait()?;
        match rx.recv() {
            Ok(Ok(())) => self.unpack(&staging, bytes),
            Ok(Err(e)) => Err(Error::Map(e.to_string())),
            Err(_) => Err(Error::Map("the map callback never ran".into())),
        }
    }

    /// Reads the vector back to host memory. On the web this yields to the browser until the
    /// buffer is mapped; natively there is no event loop to yield to, so it waits for the
    /// device on the calling thread (as [`GpuVec::read`] does).
    pub async fn read_async(&self) -> Result<Vec<T>> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.read()
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (staging, bytes) = self.stage()?;
            let (tx, rx) = futures_channel::oneshot::channel();
            staging.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
            match rx.await {
                Ok(Ok(())) => self.unpack(&staging, bytes),
                Ok(Err(e)) => Err(Error::Map(e.to_string())),
                Err(_) => Err(Error::Map("the map callback was dropped".into())),
            }
        }
    }
}

/// A window of `len` f32/u32 elements starting `offset` bytes into a storage buffer.
///
/// Made from a [`GpuVec`] (`(&v).into()`) or from a caller's own buffer with [`BufView::new`],
/// which is how curvgpu records into an engine's buffers without copying them. Views of one
/// buffer may be passed together when they are disjoint (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct BufView<'a> {
    pub(crate) buffer: &'a wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) len: usize,
    gpu: Option<&'a Gpu>,
    name: Option<&'static str>,
}

impl<'a> BufView<'a> {
    /// `len` 4-byte elements of `buffer` from byte `offset` (a multiple of the device's
    /// `min_storage_buffer_offset_alignment`, checked when bound; [`Layout`] lays views out).
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64, len: usize) -> Self {
        BufView {
            buffer,
            offset,
            len,
            gpu: None,
            name: None,
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// The buffer the view lies in: what a user operator binds in its own bind group.
    pub fn buffer(&self) -> &'a wgpu::Buffer {
        self.buffer
    }
    /// Byte offset of element 0 in [`Self::buffer`].
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }
    /// The view as a bind-group resource (offset and size set).
    pub fn binding_resource(&self) -> wgpu::BindingResource<'a> {
        self.binding(4 * self.len as u64)
    }
    /// True when the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The argument name errors give this view (set by the function it was passed to).
    pub fn name(&self) -> Option<&'static str> {
        self.name
    }
    /// Bytes `offset .. offset + 4·len` of the buffer.
    pub fn byte_range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + 4 * self.len as u64
    }
    /// True when both views lie in one buffer and share a byte.
    pub fn overlaps(&self, other: &BufView<'_>) -> bool {
        let (a, b) = (self.byte_range(), other.byte_range());
        self.buffer == other.buffer && a.start < b.end && b.start < a.end
    }

    /// True when both are the same window: one buffer, one start, one length (the in-place
    /// forms that allow exactly that and nothing partial).
    pub(crate) fn is_same(&self, other: &BufView<'_>) -> bool {
        self.buffer == other.buffer && self.offset == other.offset && self.len == other.len
    }

    /// [`Error::Overlap`] naming both views (by their checked names) when they share bytes;
    /// `why` says why the function refuses it and what to pass instead. For pairs no single
    /// dispatch binds together (one written by an early pass, the other read by a later one),
    /// which the recorder's own check cannot see.
    pub(crate) fn refuse_overlap(
        &self,
        other: &BufView<'_>,
        why: impl FnOnce() -> String,
    ) -> Result<()> {
        if !self.overlaps(other) {
            return Ok(());
        }
        Err(Error::Overlap {
            first: self.name.unwrap_or("a view").to_string(),
            second: other.name.unwrap_or("a view").to_string(),
            first_bytes: self.byte_range(),
            second_bytes: other.byte_range(),
            why: why(),
        })
    }

    /// Checks everything about this view that we can know before wgpu sees it, and returns it
    /// named `argument`, the name [`Error::Overlap`] gives it.
    pub(crate) fn check(
        &self,
        gpu: &Gpu,
        argument: &'static str,
        expected: usize,
    ) -> Result<BufView<'a>> {
        if self.gpu.is_some_and(|g| g != gpu) {
            return Err(Error::WrongDevice { argument });
        }
        if self.len == 0 {
            return Err(Error::Empty { argument });
        }
        if self.len != expected {
            return Err(Error::LengthMismatch {
                argument,
                expected,
                actual: self.len,
            });
        }
        let missing = wgpu::BufferUsages::STORAGE - self.buffer.usage();
        if !missing.is_empty() {
            return Err(Error::MissingUsage { argument, missing });
        }
        let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
        if !self.offset.is_multiple_of(align) {
            return Err(Error::BadView {
                argument,
                message: format!(
                    "byte offset {} is not a multiple of min_storage_buffer_offset_alignment = {align}",
                    self.offset
                ),
            });
        }
        let end = (self.len as u64)
            .checked_mul(4)
            .and_then(|b| b.checked_add(self.offset));
        if end.is_none_or(|end| end > self.buffer.size()) {
            return Err(Error::BadView {
                argument,
                message: format!(
                    "{} elements from byte {} lie outside a buffer of {} bytes",
                    self.len,
                    self.offset,
                    self.buffer.size()
                ),
            });
        }
        Ok(self.named(argument))
    }

    /// The same view under another argument name.
    pub(crate) fn named(&self, name: &'static str) -> BufView<'a> {
        BufView {
            name: Some(name),
            ..*self
        }
    }

    /// The sub-window of elements `start..start + len` (`start` must keep the binding aligned).
    pub(crate) fn sub(&self, start: usize, len: usize) -> BufView<'a> {
        BufView {
            offset: self.offset + 4 * start as u64,
            len,
            ..*self
        }
    }

    pub(crate) fn binding(&self, bytes: u64) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(bytes),
        })
    }
}

impl<'a> From<&'a GpuVec<f32>> for BufView<'a> {
    fn from(v: &'a GpuVec<f32>) -> Self {
        v.view()
    }
}

impl<'a> From<&'a GpuVec<u32>> for BufView<'a> {
    fn from(v: &'a GpuVec<u32>) -> Self {
        v.view()
    }
}

/// Where tensors of given lengths go in one buffer: each at an offset that satisfies the
/// device's `min_storage_buffer_offset_alignment` (and 16 bytes, so vec4 kernels can bind it),
/// each padded to whole vec4s. For an engine laying out its own buffer:
///
/// ```no_run
/// # fn main() -> curvgpu::Result<()> {
/// # let gpu = curvgpu::Gpu::new()?;
/// use curvgpu::buffer::{Layout, STORAGE_USAGES};
/// let layout = Layout::new::<f32>(gpu.limits(), &[1000, 1000, 1000])?; // θ, g, scratch
/// let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
///     label: Some("arena"),
///     size: layout.size(),
///     usage: STORAGE_USAGES,
///     mapped_at_creation: false,
/// });
/// let views = layout.views(&buffer); // three disjoint BufViews, aligned
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    offsets: Vec<u64>,
    lens: Vec<usize>,
    size: u64,
}

impl Layout {
    /// Offsets for tensors of `lens` elements of `T` under `limits`.
    ///
    /// Errors: no tensors, a zero length, a total past u64.
    pub fn new<T: Pod>(limits: &wgpu::Limits, lens: &[usize]) -> Result<Self> {
        if lens.is_empty() {
            return Err(Error::Empty { argument: "lens" });
        }
        let align = (limits.min_storage_buffer_offset_alignment as u64).max(16);
        let mut offsets = Vec::with_capacity(lens.len());
        let mut end = 0u64;
        for &len in lens {
            if len == 0 {
                return Err(Error::Empty { argument: "lens" });
            }
            offsets.push(end);
            end = padded_bytes::<T>(len)
                .and_then(|b| b.checked_add(end))
                .and_then(|e| e.checked_next_multiple_of(align))
                .ok_or(Error::TooLarge {
                    argument: "lens",
                    requested: u64::MAX,
                    limit: "max_buffer_size",
                    max: limits.max_buffer_size,
                })?;
        }
        Ok(Layout {
            offsets,
            lens: lens.to_vec(),
            size: end,
        })
    }

    /// Byte offset of each tensor.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Bytes the buffer needs.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tensors as views of `buffer` (at least [`Layout::size`] bytes).
    pub fn views<'a>(&self, buffer: &'a wgpu::Buffer) -> Vec<BufView<'a>> {
        self.offsets
            .iter()
            .zip(&self.lens)
            .map(|(&offset, &len)| BufView::new(buffer, offset, len))
            .collect()
    }
}
