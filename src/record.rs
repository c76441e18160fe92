//! [`Recorder`]: many dispatches in one compute pass, written into one command encoder — ours
//! or the caller's — plus the dispatch geometry every kernel shares.

use wgpu::util::DeviceExt;

use crate::buffer::BufView;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::Kernel;

/// One resource of a dispatch, in binding order starting at 0.
#[derive(Clone, Copy)]
pub(crate) enum Binding<'a> {
    /// A small uniform block (copied into a fresh buffer owned by the bind group).
    Uniform(&'a [u8]),
    /// `bytes` of a storage view (`None`: the whole view).
    Storage(BufView<'a>, Option<u64>),
    /// A binding number the entry point does not use.
    Skip,
}

struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

/// Collects dispatches, then writes them into one compute pass of an encoder.
///
/// Dispatches run in the order recorded; wgpu orders storage writes between them.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    dispatches: Vec<Dispatch>,
}

/// Timestamp query indices for the start and end of the recorded pass.
#[derive(Clone, Copy, Debug)]
pub struct PassTimestamps<'q> {
    /// Query set with `TIMESTAMP` queries.
    pub query_set: &'q wgpu::QuerySet,
    /// Index written at the start of the pass.
    pub begin: u32,
    /// Index written at the end of the pass.
    pub end: u32,
}

impl<'g> Recorder<'g> {
    /// An empty recording on `gpu`.
    pub fn new(gpu: &'g Gpu) -> Self {
        Recorder {
            gpu,
            dispatches: Vec::new(),
        }
    }

    /// The device this recorder builds for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Records `kernel` with `bindings` at 0, 1, … over `grid` workgroups.
    pub(crate) fn dispatch(
        &mut self,
        kernel: Kernel,
        constants: &[(&'static str, f64)],
        bindings: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<()> {
        let gpu = self.gpu;
        let pipeline = gpu.pipeline(kernel, constants)?;
        let uniforms: Vec<wgpu::Buffer> = bindings
            .iter()
            .filter_map(|b| match b {
                Binding::Uniform(bytes) => Some(gpu.device.create_buffer_init(
                    &wgpu::util::BufferInitDescriptor {
                        label: Some(kernel.entry),
                        contents: bytes,
                        usage: wgpu::BufferUsages::UNIFORM,
                    },
                )),
                Binding::Storage(..) | Binding::Skip => None,
            })
            .collect();
        let mut next_uniform = uniforms.iter();
        let mut entries = Vec::with_capacity(bindings.len());
        for (i, b) in bindings.iter().enumerate() {
            let resource = match b {
                Binding::Storage(view, bytes) => view.binding(bytes.unwrap_or(4 * view.len as u64)),
                Binding::Uniform(_) => match next_uniform.next() {
                    Some(buf) => buf.as_entire_binding(),
                    None => continue,
                },
                Binding::Skip => continue,
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            });
        }
        // A buffer from another device is only detectable by wgpu's validation.
        let bind_group = gpu.scoped("bind group", || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        self.dispatches.push(Dispatch {
            pipeline: (*pipeline).clone(),
            bind_group,
            grid,
        });
        Ok(())
    }

    /// Records a dispatch of the caller's own pipeline (their WGSL, their bind group): how a
    /// user operator, e.g. a model's Hessian-vector product, joins curvgpu's passes.
    pub fn dispatch_raw(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        workgroups: [u32; 3],
    ) {
        self.dispatches.push(Dispatch {
            pipeline: pipeline.clone(),
            bind_group: bind_group.clone(),
            grid: workgroups,
        });
    }

    /// Writes everything recorded into one compute pass of `encoder`. Nothing is submitted.
    pub fn encode(self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_timed(encoder, None)
    }

    /// Like [`Recorder::encode`], with GPU timestamps at the start and end of the pass.
    pub fn encode_timed(
        self,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<PassTimestamps<'_>>,
    ) {
        self.encode_repeated(encoder, 1, timestamps)
    }

    /// Writes everything recorded `times` times over into one compute pass. The bind groups
    /// are reused, so this suits iterations whose scalars live on the GPU (CG, Lanczos).
    pub fn encode_repeated(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        times: usize,
        timestamps: Option<PassTimestamps<'_>>,
    ) {
        if self.dispatches.is_empty() || times == 0 {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("curvgpu"),
            timestamp_writes: timestamps.map(|t| wgpu::ComputePassTimestampWrites {
                query_set: t.query_set,
                beginning_of_pass_write_index: Some(t.begin),
                end_of_pass_write_index: Some(t.end),
            }),
        });
        for _ in 0..times {
            for d in &self.dispatches {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.grid[0], d.grid[1], d.grid[2]);
            }
        }
    }

    /// Encodes and submits in one command buffer; does not wait.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        self.encode(&mut encoder);
        gpu.queue.submit([encoder.finish()]);
        gpu.take_uncaptured("submit")
    }
}

impl Gpu {
    /// Workgroup grid for `groups` workgroups: 1-D up to `max_compute_workgroups_per_dimension`,
    /// folded into 2-D past it. Kernels linearise with `grid.wgsl`'s `linear_index` and ignore
    /// the few surplus invocations the fold adds.
    pub(crate) fn grid_for_groups(&self, groups: u64) -> Result<[u32; 3]> {
        let max = self.limits().max_compute_workgroups_per_dimension.max(1) as u64;
        let groups = groups.max(1);
        if groups <= max {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::TooLarge {
                argument: "dispatch",
                requested: groups,
                limit: "max_compute_workgroups_per_dimension (squared)",
                max: max * max,
            });
        }
        Ok([groups.div_ceil(y) as u32, y as u32, 1])
    }

    /// Grid for an elementwise kernel over `items` work items (one per invocation, or fewer
    /// invocations walking a grid-stride loop when the tuning caps the workgroup count).
    pub(crate) fn elementwise_grid(&self, items: u64) -> Result<[u32; 3]> {
        let t = self.tuning();
        let mut groups = items.div_ceil(t.workgroup_size as u64);
        if let Some(cap) = t.max_workgroups {
            groups = groups.min(cap as u64);
        }
        self.grid_for_groups(groups)
    }

    /// Override constants every elementwise kernel takes.
    pub(crate) fn wg_constants(&self) -> [(&'static str, f64); 1] {
        [("WG", self.tuning().workgroup_size as f64)]
    }

    /// Elements per chunk when a kernel must split a long tensor into several bindings: as
    /// many as one storage binding may hold, a multiple of `granule` (callers pass 64 × their
    /// segment length so every chunk's bindings start 256-byte aligned), below 2³² for u32
    /// indexing.
    pub(crate) fn binding_chunk(&self, granule: usize) -> Result<usize> {
        let bytes = self.limits().max_storage_buffer_binding_size;
        let max_elems = (bytes / 4).min(u32::MAX as u64) as usize;
        let chunk = (max_elems / granule.max(1)) * granule.max(1);
        if chunk == 0 {
            return Err(Error::TooLarge {
                argument: "segment",
                requested: 4 * granule as u64,
                limit: "max_storage_buffer_binding_size",
                max: bytes,
            });
        }
        Ok(chunk)
    }
}
