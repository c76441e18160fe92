//! Typed kernel handles and the pipeline cache.
//!
//! A [`Kernel`] is one entry point of a registered [`Shader`] with the bindings Rust gives it,
//! in binding order: uniform blocks with their Rust struct's layout ([`Uniform`]), storage the
//! shader only reads, storage it writes. Pipelines are built with an explicit layout from that
//! declaration, so wgpu itself checks it against the WGSL when a pipeline is made, and a test
//! checks every declaration against naga's reflection of the shader (binding numbers, access,
//! the uniform structs' sizes and field offsets).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::shader::{self, Shader};

/// One field of a uniform block as Rust lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name (the WGSL member's).
    pub name: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Bytes.
    pub size: usize,
}

/// A Rust uniform struct's layout, checked against its WGSL struct by the test suite.
#[derive(Debug, PartialEq, Eq)]
pub struct UniformLayout {
    /// The Rust type's name.
    pub name: &'static str,
    /// `size_of` the Rust type.
    pub size: usize,
    /// Its fields, in order.
    pub fields: &'static [Field],
}

/// A `#[repr(C)]` struct passed to a kernel as a uniform block.
pub trait Uniform: bytemuck::Pod {
    /// Its layout.
    const LAYOUT: &'static UniformLayout;
}

/// Declares a `#[repr(C)]` uniform struct and its [`Uniform`] layout in one place:
/// `uniform_struct! { struct Axpy { n: u32, alpha: f32, _pad0: u32, _pad1: u32 } }`.
macro_rules! uniform_struct {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $(pub(crate) $field: $ty),+ }

        impl $crate::kernel::Uniform for $name {
            const LAYOUT: &'static $crate::kernel::UniformLayout = &$crate::kernel::UniformLayout {
                name: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$($crate::kernel::Field {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                }),+],
            };
        }
    };
}
pub(crate) use uniform_struct;

/// What a kernel binds at one binding number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A uniform block with this layout.
    Uniform(&'static UniformLayout),
    /// Storage the entry point only reads (`var<storage, read>`), named for errors.
    Read(&'static str),
    /// Storage the entry point may write (`var<storage, read_write>`), named for errors.
    Write(&'static str),
    /// A binding number the entry point does not use.
    Gap,
}

/// The uniform slot of `U`.
pub const fn uniform<U: Uniform>() -> Slot {
    Slot::Uniform(U::LAYOUT)
}

/// One compute entry point of a registered shader, with its bindings (index = binding number).
#[derive(Debug)]
pub struct Kernel {
    /// The shader.
    pub shader: &'static Shader,
    /// The entry point's name.
    pub entry: &'static str,
    /// What each binding number holds.
    pub slots: &'static [Slot],
}

impl Kernel {
    /// `entry` of `shader` binding `slots`.
    pub const fn new(shader: &'static Shader, entry: &'static str, slots: &'static [Slot]) -> Self {
        Kernel {
            shader,
            entry,
            slots,
        }
    }

    /// `path::entry`, for messages.
    pub fn name(&self) -> String {
        format!("{}::{}", self.shader.path, self.entry)
    }

    /// The bind-group layout entries: uniforms, read-only storage, writable storage (and read
    /// bindings in `promoted` as writable).
    fn layout_entries(&self, promoted: u32) -> Vec<wgpu::BindGroupLayoutEntry> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let ty = match *slot {
                    Slot::Uniform(_) => wgpu::BufferBindingType::Uniform,
                    Slot::Read(_) => wgpu::BufferBindingType::Storage {
                        read_only: promoted & (1 << i) == 0,
                    },
                    Slot::Write(_) => wgpu::BufferBindingType::Storage { read_only: false },
                    Slot::Gap => return None,
                };
                let min_binding_size = match *slot {
                    Slot::Uniform(layout) => wgpu::BufferSize::new(layout.size as u64),
                    _ => None,
                };
                Some(wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty,
                        has_dynamic_offset: false,
                        min_binding_size,
                    },
                    count: None,
                })
            })
            .collect()
    }

    /// The cached pipeline (and its bind-group layout) for this kernel specialised by
    /// `constants` (WGSL `override`s), with the read bindings in `promoted` (bit i: binding i)
    /// declared writable.
    pub(crate) fn pipeline(
        &'static self,
        gpu: &Gpu,
        constants: &[(&'static str, f64)],
        promoted: u32,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let key = (
            self.shader.path,
            self.entry,
            constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
            promoted,
        );
        if let Some(p) = gpu.caches()?.pipelines.get(&key) {
            return Ok(p.clone());
        }
        let module = shader::module(gpu, self.shader, promoted)?;
        let device = gpu.device();
        let built = gpu
            .scoped("compute pipeline", || {
                let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(self.entry),
                    entries: &self.layout_entries(promoted),
                });
                let pipeline_layout =
                    device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(self.entry),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(self.entry),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(self.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        ..Default::default()
                    },
                    cache: None,
                });
                (pipeline, layout)
            })
            .map_err(|e| Error::Shader {
                name: self.name(),
                message: e.to_string(),
            })?;
        gpu.caches()?.pipelines.insert(key, built.clone());
        Ok(built)
    }
}

/// Compiles, per shader of `kernels`, the variant with every read binding any of them
/// declares promoted to read-write — the variants dispatches use when views share a buffer —
/// and returns what the device's compiler reports as one [`Error::Shader`]. One module per
/// shader covers every variant: promoting more bindings only adds non-uniform loads, so a
/// subset compiles where the whole does. [`crate::shader::check_shaders_async`] compiles the
/// shaders as written; on the web the browser's compiler (Tint) is stricter than naga in
/// places (uniformity), so the page checks the variants too.
pub async fn check_promoted_async(gpu: &Gpu, kernels: &[&'static Kernel]) -> Result<()> {
    let mut shaders: Vec<(&'static Shader, u32)> = Vec::new();
    for &kernel in kernels {
        let mask = kernel
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Read(_)))
            .fold(0u32, |m, (i, _)| m | 1 << i);
        match shaders
            .iter_mut()
            .find(|(s, _)| std::ptr::eq(*s, kernel.shader))
        {
            Some((_, m)) => *m |= mask,
            None => shaders.push((kernel.shader, mask)),
        }
    }
    let mut errors = Vec::new();
    for (shader, mask) in shaders.into_iter().filter(|&(_, m)| m != 0) {
        let module = shader::module(gpu, shader, mask)?;
        for m in module.get_compilation_info().await.messages {
            if m.message_type == wgpu::CompilationMessageType::Error {
                errors.push(format!(
                    "{} (promoted {mask:#b}): {}",
                    shader.path, m.message
                ));
            }
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Error::Shader {
            name: "promoted variants".into(),
            message: errors.join("\n"),
        }),
    }
}
