//! [`GpuVec`]: typed storage buffers, and [`BufView`]: a typed window on any storage buffer
//! (ours or the caller's) that kernels bind.

use std::marker::PhantomData;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Usages every curvgpu storage buffer gets: bound as storage, copied in and out.
pub const STORAGE_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A typed range of a storage buffer on one [`Gpu`]. Several `GpuVec`s may share one buffer
/// (see [`Gpu::packed`]); cloning is cheap and aliases the same memory.
#[derive(Clone, Debug)]
pub struct GpuVec<T: Pod> {
    buffer: wgpu::Buffer,
    offset: u64,
    len: usize,
    gpu_id: u64,
    _elem: PhantomData<T>,
}

impl<T: Pod> GpuVec<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: curvgpu never creates an empty `GpuVec`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
    /// True when this vector was created on `gpu`.
    pub fn belongs_to(&self, gpu: &Gpu) -> bool {
        self.gpu_id == gpu.id()
    }

    /// A view for binding.
    pub fn view(&self) -> BufView<'_> {
        BufView {
            buffer: &self.buffer,
            offset: self.offset,
            len: self.len,
            gpu_id: Some(self.gpu_id),
        }
    }
}

/// A window of `len` f32/u32 elements starting `offset` bytes into a storage buffer.
///
/// Made from a [`GpuVec`] (`(&v).into()`) or from a caller's own buffer with [`BufView::new`],
/// which is how curvgpu records into an engine's buffers without copying them.
#[derive(Clone, Copy, Debug)]
pub struct BufView<'a> {
    pub(crate) buffer: &'a wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) len: usize,
    gpu_id: Option<u64>,
}

impl<'a> BufView<'a> {
    /// `len` 4-byte elements of `buffer` from byte `offset` (a multiple of the device's
    /// `min_storage_buffer_offset_alignment`, checked when bound).
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64, len: usize) -> Self {
        BufView {
            buffer,
            offset,
            len,
            gpu_id: None,
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

    /// Checks everything about this view that we can know before wgpu sees it.
    pub(crate) fn check(&self, gpu: &Gpu, argument: &'static str, expected: usize) -> Result<()> {
        if self.gpu_id.is_some_and(|id| id != gpu.id()) {
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
        let end = self.offset + 4 * self.len as u64;
        if end > self.buffer.size() {
            return Err(Error::BadView {
                argument,
                message: format!(
                    "bytes {}..{end} lie outside a buffer of {} bytes",
                    self.offset,
                    self.buffer.size()
                ),
            });
        }
        Ok(())
    }

    /// The sub-window of elements `start..start + len` (`start` must keep the binding aligned).
    pub(crate) fn sub(&self, start: usize, len: usize) -> BufView<'a> {
        BufView {
            buffer: self.buffer,
            offset: self.offset + 4 * start as u64,
            len,
            gpu_id: self.gpu_id,
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

/// Bytes a buffer of `len` elements of `T` occupies: rounded up to 16 so that vec4 kernels can
/// bind the whole of it.
fn padded_bytes<T>(len: usize) -> u64 {
    ((len * std::mem::size_of::<T>()) as u64).div_ceil(16) * 16
}

impl Gpu {
    fn check_alloc(&self, argument: &'static str, bytes: u64) -> Result<()> {
        let max = self.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::TooLarge {
                argument,
                requested: bytes,
                limit: "max_buffer_size",
                max,
            });
        }
        Ok(())
    }

    fn wrap<T: Pod>(&self, buffer: wgpu::Buffer, offset: u64, len: usize) -> GpuVec<T> {
        GpuVec {
            buffer,
            offset,
            len,
            gpu_id: self.id(),
            _elem: PhantomData,
        }
    }

    /// Copies `data` into a new storage buffer.
    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<GpuVec<T>> {
        if data.is_empty() {
            return Err(Error::Empty { argument: "data" });
        }
        let bytes = padded_bytes::<T>(data.len());
        self.check_alloc("data", bytes)?;
        let mut contents = bytemuck::cast_slice::<T, u8>(data).to_vec();
        contents.resize(bytes as usize, 0);
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("curvgpu upload"),
                contents: &contents,
                usage: STORAGE_USAGES,
            });
        Ok(self.wrap(buffer, 0, data.len()))
    }

    /// A new zero-filled storage buffer of `len` elements.
    pub fn zeros<T: Pod>(&self, len: usize) -> Result<GpuVec<T>> {
        if len == 0 {
            return Err(Error::Empty { argument: "len" });
        }
        let bytes = padded_bytes::<T>(len);
        self.check_alloc("len", bytes)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu zeros"),
            size: bytes,
            usage: STORAGE_USAGES,
            mapped_at_creation: false,
        });
        Ok(self.wrap(buffer, 0, len))
    }

    /// One buffer holding tensors of the given lengths, each starting at a binding-aligned
    /// offset, zero-filled. Lets many small tensors share one allocation.
    pub fn packed<T: Pod>(&self, lens: &[usize]) -> Result<Vec<GpuVec<T>>> {
        if lens.is_empty() {
            return Err(Error::Empty { argument: "lens" });
        }
        let align = (self.limits().min_storage_buffer_offset_alignment as u64).max(16);
        let mut offsets = Vec::with_capacity(lens.len());
        let mut end = 0u64;
        for &len in lens {
            if len == 0 {
                return Err(Error::Empty { argument: "lens" });
            }
            offsets.push(end);
            end = (end + padded_bytes::<T>(len)).div_ceil(align) * align;
        }
        self.check_alloc("lens", end)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu packed"),
            size: end,
            usage: STORAGE_USAGES,
            mapped_at_creation: false,
        });
        Ok(offsets
            .into_iter()
            .zip(lens)
            .map(|(off, &len)| self.wrap(buffer.clone(), off, len))
            .collect())
    }

    /// Overwrites `dst` with `data` (same length), ordered before the next submit.
    pub fn write<T: Pod>(&self, dst: &GpuVec<T>, data: &[T]) -> Result<()> {
        if dst.gpu_id != self.id() {
            return Err(Error::WrongDevice { argument: "dst" });
        }
        if data.len() != dst.len {
            return Err(Error::LengthMismatch {
                argument: "data",
                expected: dst.len,
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
        self.queue.write_buffer(&dst.buffer, dst.offset, bytes);
        Ok(())
    }

    /// Copies `src` to a mappable buffer and returns it with the byte count to read.
    fn stage(&self, src: &GpuVec<impl Pod>) -> Result<(wgpu::Buffer, u64)> {
        if src.gpu_id != self.id() {
            return Err(Error::WrongDevice { argument: "src" });
        }
        let bytes = src.byte_len();
        let copy = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu readback"),
            size: copy,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&src.buffer, src.offset, &staging, 0, copy);
        self.queue.submit([encoder.finish()]);
        Ok((staging, bytes))
    }

    fn unpack<T: Pod>(staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<T>> {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Map(e.to_string()))?;
        let out = bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize]);
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Reads `src` back to host memory (blocking). Waits for all earlier submissions.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: Pod>(&self, src: &GpuVec<T>) -> Result<Vec<T>> {
        let (staging, bytes) = self.stage(src)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        match rx.recv() {
            Ok(Ok(())) => Self::unpack(&staging, bytes),
            Ok(Err(e)) => Err(Error::Map(e.to_string())),
            Err(_) => Err(Error::Map("the map callback never ran".into())),
        }
    }

    /// Reads `src` back to host memory. On the web this yields to the browser until the
    /// buffer is mapped; natively there is no event loop to yield to, so it waits for the
    /// device on the calling thread (as [`Gpu::read`] does).
    pub async fn read_async<T: Pod>(&self, src: &GpuVec<T>) -> Result<Vec<T>> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.read(src)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (staging, bytes) = self.stage(src)?;
            let (tx, rx) = futures_channel::oneshot::channel();
            staging.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
            match rx.await {
                Ok(Ok(())) => Self::unpack(&staging, bytes),
                Ok(Err(e)) => Err(Error::Map(e.to_string())),
                Err(_) => Err(Error::Map("the map callback was dropped".into())),
            }
        }
    }
}
