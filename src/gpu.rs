//! [`Gpu`]: adapter choice, device, queue, granted limits and features, and the per-device
//! caches every kernel uses. The bottom of the core: buffers, kernels and recordings build on
//! it, and it knows none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};

/// How to pick an adapter. [`GpuOptions::from_env`] reads `CURVGPU_BACKEND`,
/// `CURVGPU_ADAPTER` and the tuning variables.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider; `None` means every backend compiled in.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring the adapter name must contain.
    pub adapter_name: Option<String>,
    /// Tuning of dispatch shapes; `None` takes the adapter's defaults
    /// ([`Tuning::for_device_type`]).
    pub tuning: Option<Tuning>,
    /// Single fields set on top of `tuning` (or of the adapter's defaults).
    pub tuning_overrides: TuningOverrides,
}

/// Dispatch shape defaults. Software adapters reward few large workgroups walking the data in a
/// grid-stride loop; GPUs reward one element (or vec4) per invocation. `curvgpu bench` measures both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Invocations per workgroup for elementwise kernels (the WGSL `override WG`), ≤ 256.
    pub workgroup_size: u32,
    /// Cap on workgroups per elementwise dispatch (a grid-stride loop covers the rest);
    /// `None` launches one invocation per vec4.
    pub max_workgroups: Option<u32>,
    /// Grid rows (2-D) or planes (3-D) each invocation of the vec4 Poisson stencil walks,
    /// reusing the neighbours it loaded (≥ 1). CPU adapters are bound by gathers and gain from
    /// long walks; GPUs need the parallelism of short ones.
    pub stencil_march: u32,
    /// Vec4s each invocation of a reduction pass folds before its workgroup's tree (≥ 1);
    /// the trees' barriers are dear on CPU adapters.
    pub reduction_vec4s: u32,
    /// Invocations a CPU adapter runs as one SIMD vector (llvmpipe's 256-bit vectors: 8).
    /// Long strided loops give each such group its own contiguous run instead of interleaving
    /// the whole workgroup, which would hand each SIMD step one short piece of every page.
    /// `None` (GPUs): plain interleaving, which coalesces. A power of two ≤ `workgroup_size`.
    /// Set, it also blocks the dense Sinkhorn passes for a CPU: four rows per row-pass
    /// workgroup, four column quadruples per column-pass invocation.
    pub simd_lanes: Option<u32>,
    /// Column slices of M-FAC's row-dot pass (one workgroup per 8 window rows and slice, ≥ 1):
    /// few on CPU adapters (each workgroup pays 8 barrier trees), more on GPUs to fill them.
    pub dot_slices: u32,
}

impl Tuning {
    /// Defaults for a device type: a 2,048-workgroup grid-stride loop on CPU adapters
    /// (lavapipe, llvmpipe, SwiftShader), one vec4 per invocation elsewhere. On lavapipe the
    /// fused optimizer steps at n = 2^24 ran 1.5× faster with 2,048 workgroups than with 1,024
    /// or one vec4 per invocation (measured with `CURVGPU_MAX_WORKGROUPS`), and the 1024²
    /// Poisson stencil walking 16 rows took 1.6 ms against 4.1 ms walking 1 or 4 and 3.7 ms
    /// walking 256 (too few walks to share out). Reductions there fold 64 vec4s per invocation
    /// before the tree: dot at n = 2^20 took 6.3 ms with 1, 1.3 with 16 and 1.0–1.2 with 64,
    /// and a CG iteration on 1024² 6.2 ms with 16, 5.6 with 64 (and 7.7 with 256: too few
    /// workgroups). GPUs keep 16, unmeasured here. M-FAC's G·x and substitution
    /// (d = 2^22, m = 64) took 294 ms interleaving 256 invocations over 16 slices, 179 ms with
    /// groups of 8 walking contiguous runs, and 151 / 128 ms with 8 / 4 slices. A dense
    /// Sinkhorn iteration at 4096² took 74 ms reading C as scalars, 43 ms as vec4, 34 ms with
    /// four rows per row-pass workgroup and 29 ms with four column quadruples per column-pass
    /// invocation as well.
    pub fn for_device_type(device_type: wgpu::DeviceType) -> Self {
        let cpu = device_type == wgpu::DeviceType::Cpu;
        Tuning {
            workgroup_size: 256,
            max_workgroups: cpu.then_some(2048),
            stencil_march: if cpu { 16 } else { 1 },
            reduction_vec4s: if cpu { 64 } else { 16 },
            simd_lanes: cpu.then_some(8),
            dot_slices: if cpu { 4 } else { 16 },
        }
    }

    /// Checks every field against `limits`.
    pub fn validate(&self, limits: &wgpu::Limits) -> Result<()> {
        let wg = self.workgroup_size;
        let max_wg = limits.max_compute_invocations_per_workgroup.min(256);
        if wg == 0 || !wg.is_power_of_two() || wg > max_wg {
            return Err(Error::param(
                "workgroup_size",
                wg as f64,
                "a power of two ≤ 256 and ≤ max_compute_invocations_per_workgroup",
            ));
        }
        if self.max_workgroups == Some(0) {
            return Err(Error::param("max_workgroups", 0.0, "at least 1"));
        }
        if self.stencil_march == 0 {
            return Err(Error::param("stencil_march", 0.0, "at least 1"));
        }
        if self.reduction_vec4s == 0 {
            return Err(Error::param("reduction_vec4s", 0.0, "at least 1"));
        }
        if let Some(lanes) = self.simd_lanes {
            if !lanes.is_power_of_two() || lanes > wg {
                return Err(Error::param(
                    "simd_lanes",
                    lanes as f64,
                    "a power of two ≤ workgroup_size, or None",
                ));
            }
        }
        let max_grid = limits.max_compute_workgroups_per_dimension;
        if self.dot_slices == 0 || self.dot_slices > max_grid {
            return Err(Error::param(
                "dot_slices",
                self.dot_slices as f64,
                "at least 1 and ≤ max_compute_workgroups_per_dimension",
            ));
        }
        Ok(())
    }
}

/// Single [`Tuning`] fields to set on top of a base tuning; `None` keeps the base's value.
/// `Some(None)` in the two optional fields means "uncapped" / "no SIMD groups".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TuningOverrides {
    /// [`Tuning::workgroup_size`].
    pub workgroup_size: Option<u32>,
    /// [`Tuning::max_workgroups`].
    pub max_workgroups: Option<Option<u32>>,
    /// [`Tuning::stencil_march`].
    pub stencil_march: Option<u32>,
    /// [`Tuning::reduction_vec4s`].
    pub reduction_vec4s: Option<u32>,
    /// [`Tuning::simd_lanes`].
    pub simd_lanes: Option<Option<u32>>,
    /// [`Tuning::dot_slices`].
    pub dot_slices: Option<u32>,
}

impl TuningOverrides {
    /// `base` with every set field replaced.
    pub fn apply(&self, base: Tuning) -> Tuning {
        Tuning {
            workgroup_size: self.workgroup_size.unwrap_or(base.workgroup_size),
            max_workgroups: self.max_workgroups.unwrap_or(base.max_workgroups),
            stencil_march: self.stencil_march.unwrap_or(base.stencil_march),
            reduction_vec4s: self.reduction_vec4s.unwrap_or(base.reduction_vec4s),
            simd_lanes: self.simd_lanes.unwrap_or(base.simd_lanes),
            dot_slices: self.dot_slices.unwrap_or(base.dot_slices),
        }
    }

    /// The overrides the `CURVGPU_*` tuning variables set, read through `var` (the process
    /// environment in [`GpuOptions::from_env`]). An unset or empty variable overrides nothing;
    /// a value that does not parse is [`Error::Environment`] naming the variable and its text.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let read = |name: &'static str| var(name).filter(|v| !v.trim().is_empty());
        let count = |name: &'static str| -> Result<Option<u32>> {
            read(name)
                .map(|v| parse_count(name, &v, "a whole number ≥ 1"))
                .transpose()
        };
        let count_or_none = |name: &'static str| -> Result<Option<Option<u32>>> {
            read(name)
                .map(|v| match v.trim().eq_ignore_ascii_case("none") {
                    true => Ok(None),
                    false => parse_count(name, &v, "a whole number ≥ 1, or `none`").map(Some),
                })
                .transpose()
        };
        Ok(TuningOverrides {
            workgroup_size: count("CURVGPU_WORKGROUP_SIZE")?,
            max_workgroups: count_or_none("CURVGPU_MAX_WORKGROUPS")?,
            stencil_march: count("CURVGPU_STENCIL_MARCH")?,
            reduction_vec4s: count("CURVGPU_REDUCTION_VEC4S")?,
            simd_lanes: count_or_none("CURVGPU_SIMD_LANES")?,
            dot_slices: count("CURVGPU_DOT_SLICES")?,
        })
    }
}

fn parse_count(variable: &'static str, text: &str, expected: &'static str) -> Result<u32> {
    text.trim().parse().map_err(|_| Error::Environment {
        variable,
        value: text.to_string(),
        expected,
    })
}

impl GpuOptions {
    /// Options from the environment: `CURVGPU_BACKEND` = vulkan | gl | metal | dx12 | webgpu,
    /// `CURVGPU_ADAPTER` = a substring of the adapter name (unset or empty: any), and the
    /// dispatch tuning `CURVGPU_WORKGROUP_SIZE` (a power of two ≤ 256),
    /// `CURVGPU_MAX_WORKGROUPS` and `CURVGPU_SIMD_LANES` (a count or `none`),
    /// `CURVGPU_STENCIL_MARCH`, `CURVGPU_REDUCTION_VEC4S` and `CURVGPU_DOT_SLICES` (counts).
    /// Each tuning variable overrides its own [`Tuning`] field on top of the chosen adapter's
    /// defaults; the others keep them.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let mut options = GpuOptions {
            tuning_overrides: TuningOverrides::from_vars(var)?,
            ..Default::default()
        };
        if let Some(name) = var("CURVGPU_BACKEND").filter(|v| !v.trim().is_empty()) {
            options.backends = Some(parse_backend(&name)?);
        }
        options.adapter_name = var("CURVGPU_ADAPTER").filter(|v| !v.trim().is_empty());
        Ok(options)
    }
}

/// Parses one backend name as `CURVGPU_BACKEND` accepts it.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        "metal" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "webgpu" | "browser" => Ok(wgpu::Backends::BROWSER_WEBGPU),
        other => Err(Error::UnknownBackend(other.to_string())),
    }
}

/// The least a device must grant for every curvgpu kernel to run: WebGPU's defaults for what
/// the kernels use (a test checks every shader against it). [`Gpu::from_device`] refuses a
/// device below it with [`Error::DeviceLimit`] naming the limit; wgpu's
/// `Limits::downlevel_defaults()` (4 storage buffers per stage) is below it.
pub const REQUIRED_LIMITS: RequiredLimits = RequiredLimits {
    max_storage_buffers_per_shader_stage: 8,
    max_uniform_buffers_per_shader_stage: 1,
    max_compute_invocations_per_workgroup: 256,
    max_compute_workgroup_size: [256, 16, 1],
    max_compute_workgroup_storage_size: 16384,
    max_compute_workgroups_per_dimension: 65535,
    max_storage_buffer_binding_size: 64 << 10,
    max_storage_buffer_offset_alignment: 256,
};

/// The minimum limits curvgpu needs, as [`REQUIRED_LIMITS`] states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequiredLimits {
    /// Storage buffers one entry point binds at most.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Uniform blocks one entry point binds.
    pub max_uniform_buffers_per_shader_stage: u32,
    /// Invocations of the largest fixed-size workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// The largest fixed workgroup extents (x, y, z).
    pub max_compute_workgroup_size: [u32; 3],
    /// Bytes of workgroup memory the largest user declares.
    pub max_compute_workgroup_storage_size: u32,
    /// Workgroups per grid dimension (larger grids fold into 2-D).
    pub max_compute_workgroups_per_dimension: u32,
    /// Bytes one storage binding must be able to hold. Less than WebGPU's 128 MiB is fine:
    /// longer tensors are chunked by the granted size, and a kernel that needs a whole tensor
    /// in one binding says so with [`Error::TooLarge`].
    pub max_storage_buffer_binding_size: u64,
    /// The coarsest storage-offset alignment the chunking keeps to (a maximum, not a minimum).
    pub max_storage_buffer_offset_alignment: u32,
}

impl RequiredLimits {
    /// The first limit `granted` falls short of.
    pub fn check(&self, granted: &wgpu::Limits) -> Result<()> {
        let at_least = |limit: &'static str, required: u64, granted: u64| -> Result<()> {
            match granted >= required {
                true => Ok(()),
                false => Err(Error::DeviceLimit {
                    limit,
                    required: format!("at least {required}"),
                    granted,
                }),
            }
        };
        let [x, y, z] = self.max_compute_workgroup_size;
        at_least(
            "max_storage_buffers_per_shader_stage",
            self.max_storage_buffers_per_shader_stage as u64,
            granted.max_storage_buffers_per_shader_stage as u64,
        )?;
        at_least(
            "max_uniform_buffers_per_shader_stage",
            self.max_uniform_buffers_per_shader_stage as u64,
            granted.max_uniform_buffers_per_shader_stage as u64,
        )?;
        at_least(
            "max_compute_invocations_per_workgroup",
            self.max_compute_invocations_per_workgroup as u64,
            granted.max_compute_invocations_per_workgroup as u64,
        )?;
        at_least(
            "max_compute_workgroup_size_x",
            x as u64,
            granted.max_compute_workgroup_size_x as u64,
        )?;
        at_least(
            "max_compute_workgroup_size_y",
            y as u64,
            granted.max_compute_workgroup_size_y as u64,
        )?;
        at_least(
            "max_compute_workgroup_size_z",
            z as u64,
            granted.max_compute_workgroup_size_z as u64,
        )?;
        at_least(
            "max_compute_workgroup_storage_size",
            self.max_compute_workgroup_storage_size as u64,
            granted.max_compute_workgroup_storage_size as u64,
        )?;
        at_least(
            "max_compute_workgroups_per_dimension",
            self.max_compute_workgroups_per_dimension as u64,
            granted.max_compute_workgroups_per_dimension as u64,
        )?;
        at_least(
            "max_storage_buffer_binding_size",
            self.max_storage_buffer_binding_size,
            granted.max_storage_buffer_binding_size,
        )?;
        let align = granted.min_storage_buffer_offset_alignment;
        if align > self.max_storage_buffer_offset_alignment {
            return Err(Error::DeviceLimit {
                limit: "min_storage_buffer_offset_alignment",
                required: format!("at most {}", self.max_storage_buffer_offset_alignment),
                granted: align as u64,
            });
        }
        Ok(())
    }
}

/// Keys of the per-device caches: plain data, so this module needs nothing from the modules
/// that fill them. A pipeline is (shader path, entry point, override constants as bits, mask
/// of bindings promoted to read-write); a shader module is (shader path, that mask).
pub(crate) type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>, u32);
pub(crate) type ModuleKey = (&'static str, u32);

/// Compiled objects shared by every [`Gpu`] of one device.
#[derive(Default)]
pub(crate) struct Caches {
    pub modules: HashMap<ModuleKey, wgpu::ShaderModule>,
    pub pipelines: HashMap<PipelineKey, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
    /// A small zeroed storage buffer bound where an entry point declares a binding the
    /// dispatch does not need (an `override`-disabled branch still counts as a use).
    pub placeholder: Option<wgpu::Buffer>,
}

/// What every [`Gpu`] of one device shares: the device, what it was granted, the caches.
struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    caches: Mutex<Caches>,
    /// Errors wgpu raised outside any error scope on a device we created (instead of panicking).
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl Shared {
    /// Whether `device` is this entry's device object and not a device of another
    /// `wgpu::Instance` that carries the same id (wgpu compares devices by per-instance ids,
    /// which collide across instances, and looking up a foreign id can panic inside wgpu).
    /// Error scopes belong to the device object: an error raised through `device` reaches a
    /// scope pushed through this entry's handle only if both are the same device.
    #[cfg(not(target_arch = "wasm32"))]
    fn is(&self, device: &wgpu::Device, _queue: &wgpu::Queue) -> bool {
        if self.device != *device {
            return false;
        }
        let outer = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let inner = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // MAP_READ with MAP_WRITE is invalid: a validation error that touches no resource.
        let _probe = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("curvgpu identity probe"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
            mapped_at_creation: false,
        });
        let same = pollster::block_on(inner.pop()).is_some();
        let _ = pollster::block_on(outer.pop());
        same
    }

    #[cfg(target_arch = "wasm32")]
    fn is(&self, device: &wgpu::Device, _queue: &wgpu::Queue) -> bool {
        self.device == *device
    }
}

/// Every device a [`Gpu`] was made for and is still alive, so that wrapping one device twice
/// yields the same identity and caches.
#[cfg(not(target_arch = "wasm32"))]
fn with_registry<T>(f: impl FnOnce(&mut Vec<Weak<Shared>>) -> T) -> T {
    static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut registry)
}

#[cfg(target_arch = "wasm32")]
fn with_registry<T>(f: impl FnOnce(&mut Vec<Weak<Shared>>) -> T) -> T {
    thread_local! {
        static REGISTRY: std::cell::RefCell<Vec<Weak<Shared>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

/// A device and queue plus what was granted, the caches every kernel uses, and the dispatch
/// tuning.
///
/// Cheap to clone (one reference count). Identity is the device's: every `Gpu` made for one
/// `wgpu::Device` — clones, or separate [`Gpu::from_device`] calls — shares its caches and
/// accepts the others' vectors and optimizers. The tuning belongs to each `Gpu` value.
#[derive(Clone)]
pub struct Gpu {
    shared: Arc<Shared>,
    tuning: Tuning,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.shared.info.name)
            .field("backend", &self.shared.info.backend)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Gpu {
    /// Same device (the tuning aside).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Features we ask for when the adapter has them; none is required.
fn wanted_features(available: wgpu::Features) -> wgpu::Features {
    available & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
}

/// One instance for the whole process on native: wgpu resolves resource ids per instance, so
/// devices from separate instances could not even recognise each other's buffers as foreign.
#[cfg(not(target_arch = "wasm32"))]
pub fn instance() -> wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE
        .get_or_init(|| wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle()))
        .clone()
}

/// The instance curvgpu's own adapters come from (a new one each call on the web).
#[cfg(target_arch = "wasm32")]
pub fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

fn device_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Every adapter wgpu can see on `backends` (all when `None`), for `curvgpu info`.
#[cfg(not(target_arch = "wasm32"))]
pub fn enumerate_adapters(backends: Option<wgpu::Backends>) -> Vec<wgpu::Adapter> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(backends.unwrap_or(wgpu::Backends::all())))
}

impl Gpu {
    /// Picks an adapter from `CURVGPU_BACKEND` / `CURVGPU_ADAPTER` and creates a device (blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(GpuOptions::from_env()?))
    }

    /// Picks an adapter by `options` and creates a device with the adapter's own limits.
    pub async fn new_async(options: GpuOptions) -> Result<Self> {
        let adapter = Self::choose_adapter(&options).await?;
        let mut gpu = Self::from_adapter(&adapter).await?;
        let base = options.tuning.unwrap_or(gpu.tuning);
        gpu.set_tuning(options.tuning_overrides.apply(base))?;
        Ok(gpu)
    }

    async fn choose_adapter(options: &GpuOptions) -> Result<wgpu::Adapter> {
        let instance = instance();
        let wanted = options.adapter_name.as_ref().map(|s| s.to_lowercase());
        let backends = options.backends.unwrap_or(wgpu::Backends::all());
        let mut adapters = instance.enumerate_adapters(backends).await;
        if adapters.is_empty() {
            // The browser's WebGPU cannot be enumerated, only requested.
            if let Ok(a) = instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
            {
                adapters.push(a);
            }
        }
        adapters.retain(|a| {
            wanted
                .as_ref()
                .is_none_or(|w| a.get_info().name.to_lowercase().contains(w))
        });
        adapters.sort_by_key(|a| device_rank(a.get_info().device_type));
        adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(format!(
                "backends {backends:?}, name filter {:?}; on Debian install mesa-vulkan-drivers for a software Vulkan adapter",
                options.adapter_name
            ))
        })
    }

    /// Creates a device on `adapter`, requesting the adapter's own limits (wgpu's defaults
    /// would cap storage bindings at 128 MiB) and timestamp queries where available. Errors
    /// wgpu raises outside curvgpu's own error scopes are kept and returned by the next
    /// submit instead of reaching wgpu's default handler (which panics).
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let limits = adapter.limits();
        REQUIRED_LIMITS.check(&limits)?;
        let features = wanted_features(adapter.features());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("curvgpu"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert_with(|| e.to_string());
            }
        }));
        Self::wrap(device, queue, uncaptured)
    }

    /// Wraps a device the caller already has (their engine's). Nothing is copied and the
    /// caller's uncaptured-error handler stays in place; curvgpu's own calls run inside error
    /// scopes and return what they catch as `Err`. Wrapping the same device again returns a
    /// `Gpu` with the same identity and caches (each with the adapter's default tuning).
    ///
    /// Errors: [`Error::DeviceLimit`] when the device was granted less than
    /// [`REQUIRED_LIMITS`] (e.g. created with `Limits::downlevel_defaults()`).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::wrap(device, queue, Arc::new(Mutex::new(None)))
    }

    fn wrap(
        device: wgpu::Device,
        queue: wgpu::Queue,
        uncaptured: Arc<Mutex<Option<String>>>,
    ) -> Result<Self> {
        let limits = device.limits();
        REQUIRED_LIMITS.check(&limits)?;
        let shared = with_registry(|registry| {
            registry.retain(|w| w.strong_count() > 0);
            if let Some(found) = registry
                .iter()
                .filter_map(Weak::upgrade)
                .find(|s| s.is(&device, &queue))
            {
                return found;
            }
            // On the web there is one thread: an Arc of objects that are not Send is fine there.
            #[allow(clippy::arc_with_non_send_sync)]
            let shared = Arc::new(Shared {
                info: device.adapter_info(),
                features: device.features(),
                limits,
                device,
                queue,
                caches: Mutex::new(Caches::default()),
                uncaptured,
            });
            registry.push(Arc::downgrade(&shared));
            shared
        });
        Ok(Gpu {
            tuning: Tuning::for_device_type(shared.info.device_type),
            shared,
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.shared.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.shared.queue
    }
    /// Adapter name, backend, device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.shared.info
    }
    /// The limits the device was granted.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.shared.limits
    }
    /// The features the device was granted.
    pub fn features(&self) -> wgpu::Features {
        self.shared.features
    }
    /// Whether GPU timestamp queries can time compute passes.
    pub fn has_timestamps(&self) -> bool {
        self.shared
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// Current dispatch-shape tuning.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }
    /// Changes this `Gpu` value's dispatch-shape tuning (checked against the device limits);
    /// other `Gpu`s of the same device keep theirs.
    pub fn set_tuning(&mut self, tuning: Tuning) -> Result<()> {
        tuning.validate(self.limits())?;
        self.tuning = tuning;
        Ok(())
    }

    /// The device's caches, locked (a panic while holding them is reported, not propagated).
    pub(crate) fn caches(&self) -> Result<std::sync::MutexGuard<'_, Caches>> {
        self.shared.caches.lock().map_err(|_| Error::Wgpu {
            operation: "pipeline cache",
            message: "a thread panicked while holding the cache lock".into(),
        })
    }

    /// Returns (and clears) an error wgpu raised outside our error scopes on a device we created.
    pub(crate) fn take_uncaptured(&self, operation: &'static str) -> Result<()> {
        let message = self
            .shared
            .uncaptured
            .lock()
            .ok()
            .and_then(|mut s| s.take());
        match message {
            Some(message) => Err(Error::Wgpu { operation, message }),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Poll(e.to_string()))?;
        self.take_uncaptured("submit")
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch into
    /// [`Error::Wgpu`]; then reports any error raised outside scopes since the last check.
    /// On the web a scope's result is only available asynchronously, and a scope dropped
    /// unpopped discards what it caught; so there no scope is pushed, and errors reach the
    /// device's uncaptured-error handler (reported at the next submit, and for shaders by
    /// [`crate::shader::check_shaders_async`]).
    pub(crate) fn scoped<T>(&self, operation: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let memory = self
                .device()
                .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self
                .device()
                .push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            let invalid = pollster::block_on(validation.pop());
            let oom = pollster::block_on(memory.pop());
            match invalid.or(oom) {
                Some(e) => Err(Error::Wgpu {
                    operation,
                    message: e.to_string(),
                }),
                None => self.take_uncaptured(operation).map(|()| value),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let value = f();
            self.take_uncaptured(operation).map(|()| value)
        }
    }

    /// Submits the command buffers `buffers` builds (your encoders, with curvgpu's passes in
    /// them) inside error scopes: what wgpu finds wrong while finishing or submitting them
    /// comes back as [`Error::Wgpu`] naming `operation`, not through the device's
    /// uncaptured-error handler (wgpu's default one panics). Does not wait.
    pub fn submit(
        &self,
        operation: &'static str,
        buffers: impl FnOnce() -> Vec<wgpu::CommandBuffer>,
    ) -> Result<()> {
        self.scoped(operation, || {
            self.queue().submit(buffers());
        })
    }
}
