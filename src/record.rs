//! [`Recorder`]: many dispatches in one compute pass, written into one command encoder — ours
//! or the caller's — and the dispatch geometry every kernel shares.
//!
//! Every `record_*` function in the crate appends dispatches to a `Recorder`; nothing runs
//! until the recorder is encoded into an encoder ([`Recorder::encode`]) that is submitted, or
//! submitted itself ([`Recorder::submit`]).
//!
//! Each dispatch checks its views before wgpu sees them. Views of one buffer may be bound
//! together when their bytes are disjoint: where a dispatch reads one view and writes another
//! of the same buffer, the read bindings are declared writable in a variant of the shader
//! (wgpu allows a buffer in several bindings of one dispatch only when all are writable; the
//! shader still only reads them). Views that overlap where one is written, and overlapping
//! reads of a buffer the dispatch also writes (WebGPU forbids overlapping writable bindings),
//! are [`Error::Overlap`] naming both.

use wgpu::util::DeviceExt;

use crate::buffer::BufView;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{Kernel, Slot, Uniform, UniformLayout};

/// One resource of a dispatch, in binding order starting at 0.
#[derive(Clone, Copy)]
pub(crate) enum Binding<'a> {
    /// A uniform block (copied into a fresh buffer owned by the bind group).
    Uniform(&'static UniformLayout, &'a [u8]),
    /// `bytes` of a storage view (`None`: the whole view).
    Storage(BufView<'a>, Option<u64>),
    /// A binding the entry point declares but this dispatch does not need (its use is behind
    /// an `override` that is off): bound to a small placeholder buffer.
    Placeholder,
    /// A binding number the entry point does not use ([`Slot::Gap`]).
    Skip,
}

impl<'a> Binding<'a> {
    /// A uniform block.
    pub fn uniform<U: Uniform>(u: &'a U) -> Self {
        Binding::Uniform(U::LAYOUT, bytemuck::bytes_of(u))
    }

    /// A whole storage view.
    pub fn storage(view: BufView<'a>) -> Self {
        Binding::Storage(view, None)
    }
}

#[derive(Clone)]
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

/// A storage binding as the overlap analysis sees it.
struct Bound<'v> {
    slot: usize,
    buffer: &'v wgpu::Buffer,
    bytes: std::ops::Range<u64>,
    writes: bool,
    name: String,
}

impl Bound<'_> {
    fn overlaps(&self, other: &Bound<'_>) -> bool {
        self.buffer == other.buffer
            && self.bytes.start < other.bytes.end
            && other.bytes.start < self.bytes.end
    }
}

/// The read bindings to declare writable so that `bound` is valid in one dispatch, or the
/// first pair that cannot be.
fn promotions(kernel: &Kernel, bound: &[Bound<'_>]) -> Result<u32> {
    let overlap = |a: &Bound<'_>, b: &Bound<'_>, why: String| Error::Overlap {
        first: a.name.clone(),
        second: b.name.clone(),
        first_bytes: a.bytes.clone(),
        second_bytes: b.bytes.clone(),
        why,
    };
    let mut mask = 0u32;
    for (i, a) in bound.iter().enumerate() {
        for b in &bound[i + 1..] {
            if a.overlaps(b) && (a.writes || b.writes) {
                let written = if a.writes { &a.name } else { &b.name };
                return Err(overlap(
                    a,
                    b,
                    format!(
                        "{} writes `{written}` while reading the other; pass a separate output",
                        kernel.entry
                    ),
                ));
            }
        }
        if !a.writes && bound.iter().any(|w| w.writes && w.buffer == a.buffer) {
            mask |= 1 << a.slot;
        }
    }
    // Promoted bindings are writable to wgpu, which refuses overlapping writable bindings.
    for (i, a) in bound.iter().enumerate() {
        for b in &bound[i + 1..] {
            let promoted = |x: &Bound<'_>| mask & (1 << x.slot) != 0;
            if promoted(a) && promoted(b) && a.overlaps(b) {
                return Err(overlap(
                    a,
                    b,
                    format!(
                        "{} reads both from a buffer it also writes; WebGPU refuses overlapping \
                         bindings of such a buffer: pass views that do not overlap, or the \
                         inputs in another buffer",
                        kernel.entry
                    ),
                ));
            }
        }
    }
    Ok(mask)
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

    /// Records `kernel` with `bindings` (one per slot, in binding order) over `grid`
    /// workgroups, after checking them against the kernel's slots and each other.
    pub(crate) fn dispatch(
        &mut self,
        kernel: &'static Kernel,
        constants: &[(&'static str, f64)],
        bindings: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<()> {
        let gpu = self.gpu;
        let internal = |message: String| Error::Shader {
            name: kernel.name(),
            message,
        };
        if bindings.len() != kernel.slots.len() {
            return Err(internal(format!(
                "{} bindings given for {} slots",
                bindings.len(),
                kernel.slots.len()
            )));
        }
        let mut bound = Vec::new();
        let mut placeholders = 0u64;
        let align = (gpu.limits().min_storage_buffer_offset_alignment as u64).max(PLACEHOLDER);
        let placeholder = match bindings.iter().any(|b| matches!(b, Binding::Placeholder)) {
            true => Some(self.placeholder()?),
            false => None,
        };
        for (i, (slot, binding)) in kernel.slots.iter().zip(bindings).enumerate() {
            let (view_buffer, bytes, name, writes) = match (*slot, *binding) {
                (Slot::Uniform(want), Binding::Uniform(got, bytes)) => {
                    if want != got || bytes.len() != want.size {
                        return Err(internal(format!(
                            "binding {i}: {} given where {} is declared",
                            got.name, want.name
                        )));
                    }
                    continue;
                }
                (Slot::Gap, Binding::Skip) => continue,
                (Slot::Read(name) | Slot::Write(name), Binding::Storage(view, bytes)) => {
                    // A misaligned window is the caller's to fix, not a late wgpu error.
                    let storage_align = gpu.limits().min_storage_buffer_offset_alignment as u64;
                    if !view.offset.is_multiple_of(storage_align) {
                        return Err(Error::BadView {
                            argument: view.name().unwrap_or(name),
                            message: format!(
                                "byte offset {} is not a multiple of min_storage_buffer_offset_alignment = {storage_align} ({})",
                                view.offset,
                                kernel.entry
                            ),
                        });
                    }
                    let bytes = bytes.unwrap_or(4 * view.len as u64);
                    let range = view.offset..view.offset + bytes;
                    let name = match view.name() {
                        Some(arg) => arg.to_string(),
                        None => format!("{}'s {name}", kernel.entry),
                    };
                    (view.buffer, range, name, matches!(slot, Slot::Write(_)))
                }
                (Slot::Read(name) | Slot::Write(name), Binding::Placeholder) => {
                    let Some(placeholder) = &placeholder else {
                        continue;
                    };
                    let start = placeholders * align;
                    placeholders += 1;
                    let range = start..start + PLACEHOLDER;
                    let writes = matches!(slot, Slot::Write(_));
                    (placeholder, range, name.to_string(), writes)
                }
                _ => return Err(internal(format!("binding {i} does not match its slot"))),
            };
            bound.push(Bound {
                slot: i,
                buffer: view_buffer,
                bytes,
                writes,
                name,
            });
        }
        if placeholders > PLACEHOLDER_SLOTS {
            return Err(internal("too many placeholder bindings".into()));
        }
        let promoted = promotions(kernel, &bound)?;
        let (pipeline, layout) = kernel.pipeline(gpu, constants, promoted)?;
        let mut uniforms = Vec::new();
        for b in bindings {
            if let Binding::Uniform(layout, bytes) = b {
                uniforms.push(
                    gpu.device()
                        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some(layout.name),
                            contents: bytes,
                            usage: wgpu::BufferUsages::UNIFORM,
                        }),
                );
            }
        }
        let mut next_uniform = uniforms.iter();
        let mut next_bound = bound.iter();
        let mut entries = Vec::with_capacity(bindings.len());
        for (i, b) in bindings.iter().enumerate() {
            let resource = match b {
                Binding::Uniform(..) => match next_uniform.next() {
                    Some(buf) => buf.as_entire_binding(),
                    None => continue,
                },
                Binding::Storage(..) | Binding::Placeholder => match next_bound.next() {
                    Some(s) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: s.buffer,
                        offset: s.bytes.start,
                        size: wgpu::BufferSize::new(s.bytes.end - s.bytes.start),
                    }),
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
            gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry),
                layout: &layout,
                entries: &entries,
            })
        })?;
        self.dispatches.push(Dispatch {
            pipeline,
            bind_group,
            grid,
        });
        Ok(())
    }

    /// The device's placeholder buffer: [`PLACEHOLDER_SLOTS`] disjoint ranges of
    /// [`PLACEHOLDER`] bytes at the storage alignment.
    fn placeholder(&self) -> Result<wgpu::Buffer> {
        let gpu = self.gpu;
        let mut caches = gpu.caches()?;
        if let Some(b) = &caches.placeholder {
            return Ok(b.clone());
        }
        let align = (gpu.limits().min_storage_buffer_offset_alignment as u64).max(PLACEHOLDER);
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu placeholder"),
            size: align * PLACEHOLDER_SLOTS,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        caches.placeholder = Some(buffer.clone());
        Ok(buffer)
    }

    /// Records a dispatch of the caller's own pipeline (their WGSL, their bind group): how a
    /// user operator, e.g. a model's Hessian-vector product, joins curvgpu's passes. wgpu
    /// checks it when the pass is encoded; curvgpu's solvers return what it finds as `Err`.
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

    /// Appends `times` repetitions of everything `block` recorded. Its pipelines and bind
    /// groups are shared, not rebuilt: a solver records one iteration once and appends it as
    /// often as a batch needs. [`Error::WrongDevice`] when `block` was recorded on another
    /// device.
    pub(crate) fn append(&mut self, block: &Recorder<'_>, times: usize) -> Result<()> {
        if self.gpu != block.gpu {
            return Err(Error::WrongDevice { argument: "rec" });
        }
        let more = block.dispatches.len().saturating_mul(times);
        self.dispatches
            .try_reserve(more)
            .map_err(|_| Error::HostMemory {
                argument: "times",
                bytes: (more as u64).saturating_mul(std::mem::size_of::<Dispatch>() as u64),
            })?;
        for _ in 0..times {
            self.dispatches.extend(block.dispatches.iter().cloned());
        }
        Ok(())
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

    /// Encodes `times` repetitions and submits them in one command buffer; does not wait. What
    /// wgpu finds wrong (a user pipeline's bind group, say) comes back as [`Error::Wgpu`].
    pub fn submit_repeated(&self, operation: &'static str, times: usize) -> Result<()> {
        let gpu = self.gpu;
        gpu.submit(operation, || {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            self.encode_repeated(&mut encoder, times, None);
            vec![encoder.finish()]
        })
    }

    /// Encodes and submits in one command buffer; does not wait. What wgpu finds wrong comes
    /// back as [`Error::Wgpu`].
    pub fn submit(self) -> Result<()> {
        self.submit_repeated("submit", 1)
    }

    /// Workgroup grid for `groups` workgroups: 1-D up to `max_compute_workgroups_per_dimension`,
    /// folded into 2-D past it. Kernels linearise with `grid.wgsl`'s `linear_index` and ignore
    /// the few surplus invocations the fold adds.
    pub(crate) fn grid_for_groups(&self, groups: u64) -> Result<[u32; 3]> {
        grid_for_groups(self.gpu, groups)
    }

    /// Grid for an elementwise kernel over `items` work items (one per invocation, or fewer
    /// invocations walking a grid-stride loop when the tuning caps the workgroup count).
    pub(crate) fn elementwise_grid(&self, items: u64) -> Result<[u32; 3]> {
        let t = self.gpu.tuning();
        let mut groups = items.div_ceil(t.workgroup_size as u64);
        if let Some(cap) = t.max_workgroups {
            groups = groups.min(cap as u64);
        }
        self.grid_for_groups(groups)
    }

    /// Override constants every elementwise kernel takes.
    pub(crate) fn wg(&self) -> [(&'static str, f64); 1] {
        [("WG", self.gpu.tuning().workgroup_size as f64)]
    }

    /// Elements per chunk when a kernel must split a long tensor into several bindings: as
    /// many as one storage binding may hold, a multiple of `granule` (callers pass 64 × their
    /// segment length so every chunk's bindings start 256-byte aligned), below 2³² for u32
    /// indexing.
    pub(crate) fn binding_chunk(&self, granule: usize) -> Result<usize> {
        let bytes = self.gpu.limits().max_storage_buffer_binding_size;
        let max_elems = (bytes / 4).min(u32::MAX as u64) as usize;
        let granule = granule.max(1);
        let chunk = (max_elems / granule) * granule;
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

/// Bytes of one placeholder binding: enough for any binding's minimum size in the registry.
const PLACEHOLDER: u64 = 256;
/// Placeholder bindings one dispatch may use.
const PLACEHOLDER_SLOTS: u64 = 8;

/// [`Recorder::grid_for_groups`] for code without a recorder at hand.
pub(crate) fn grid_for_groups(gpu: &Gpu, groups: u64) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension.max(1) as u64;
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
