//! [`Gpu`]: adapter choice, device, queue, granted limits and features, and the pipeline cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernel::PipelineCache;

static NEXT_GPU_ID: AtomicU64 = AtomicU64::new(1);

/// How to pick an adapter. [`GpuOptions::from_env`] reads `CURVGPU_BACKEND` and `CURVGPU_ADAPTER`.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider; `None` means every backend compiled in.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring the adapter name must contain.
    pub adapter_name: Option<String>,
    /// Tuning of dispatch shapes; `None` picks defaults from the adapter's device type.
    pub tuning: Option<Tuning>,
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
}

impl GpuOptions {
    /// Options from the environment: `CURVGPU_BACKEND` = vulkan | gl | metal | dx12 | webgpu,
    /// `CURVGPU_ADAPTER` = a substring of the adapter name (unset or empty: any), and the
    /// dispatch tuning `CURVGPU_WORKGROUP_SIZE` = 1..256 (a power of two),
    /// `CURVGPU_MAX_WORKGROUPS` and `CURVGPU_SIMD_LANES` = a count or `none`,
    /// `CURVGPU_STENCIL_MARCH`, `CURVGPU_REDUCTION_VEC4S` and `CURVGPU_DOT_SLICES` = counts
    /// ([`Tuning`]'s fields). Setting any replaces the device-type default as a whole (the
    /// unset ones take the GPU defaults: 256 invocations, uncapped, 1, 16, none, 16).
    pub fn from_env() -> Result<Self> {
        let mut options = GpuOptions::default();
        if let Ok(name) = std::env::var("CURVGPU_BACKEND") {
            if !name.trim().is_empty() {
                options.backends = Some(parse_backend(&name)?);
            }
        }
        if let Ok(name) = std::env::var("CURVGPU_ADAPTER") {
            if !name.trim().is_empty() {
                options.adapter_name = Some(name);
            }
        }
        let vars = TUNING_VARS.map(|name| std::env::var(name).ok());
        if vars.iter().any(Option::is_some) {
            options.tuning = Some(parse_tuning(&vars)?);
        }
        Ok(options)
    }
}

/// The tuning's environment variables, in [`parse_tuning`]'s order.
const TUNING_VARS: [&str; 6] = [
    "CURVGPU_WORKGROUP_SIZE",
    "CURVGPU_MAX_WORKGROUPS",
    "CURVGPU_STENCIL_MARCH",
    "CURVGPU_REDUCTION_VEC4S",
    "CURVGPU_SIMD_LANES",
    "CURVGPU_DOT_SLICES",
];

/// Tuning from the environment strings ([`TUNING_VARS`] order); a missing one keeps the GPU
/// default, and `new_async` still checks it against the device limits.
fn parse_tuning(vars: &[Option<String>; 6]) -> Result<Tuning> {
    let mut t = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let count = |i: usize, field: &mut u32| -> Result<()> {
        if let Some(v) = &vars[i] {
            *field = v
                .trim()
                .parse()
                .map_err(|_| Error::param(TUNING_VARS[i], f64::NAN, "a positive count"))?;
        }
        Ok(())
    };
    count(0, &mut t.workgroup_size)?;
    count(2, &mut t.stencil_march)?;
    count(3, &mut t.reduction_vec4s)?;
    count(5, &mut t.dot_slices)?;
    let count_or_none = |i: usize, field: &mut Option<u32>| -> Result<()> {
        if let Some(v) = &vars[i] {
            let v = v.trim();
            *field = if v.eq_ignore_ascii_case("none") {
                None
            } else {
                Some(v.parse().map_err(|_| {
                    Error::param(TUNING_VARS[i], f64::NAN, "a positive count or `none`")
                })?)
            };
        }
        Ok(())
    };
    count_or_none(1, &mut t.max_workgroups)?;
    count_or_none(4, &mut t.simd_lanes)?;
    Ok(t)
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

/// A device and queue plus what was granted, and the caches every kernel uses.
///
/// Cheap to share by reference; all methods take `&self`.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    tuning: Tuning,
    id: u64,
    pub(crate) pipelines: PipelineCache,
    /// Errors wgpu raised outside any error scope on a device we created (instead of panicking).
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

/// Features we ask for when the adapter has them; none is required.
fn wanted_features(available: wgpu::Features) -> wgpu::Features {
    available & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
}

/// One instance for the whole process on native: wgpu resolves resource ids per instance, so
/// devices from separate instances could not even recognise each other's buffers as foreign.
#[cfg(not(target_arch = "wasm32"))]
fn instance() -> wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE
        .get_or_init(|| wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle()))
        .clone()
}

#[cfg(target_arch = "wasm32")]
fn instance() -> wgpu::Instance {
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
        if let Some(t) = options.tuning {
            gpu.set_tuning(t)?;
        }
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
    /// would cap storage bindings at 128 MiB) and timestamp queries where available.
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let features = wanted_features(adapter.features());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("curvgpu"),
                required_features: features,
                required_limits: adapter.limits(),
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
        let mut gpu = Self::from_device(device, queue);
        gpu.uncaptured = uncaptured;
        Ok(gpu)
    }

    /// Wraps a device the caller already has (their engine's). Nothing is copied; the caller's
    /// uncaptured-error handler stays in place.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Gpu {
            limits: device.limits(),
            features: device.features(),
            tuning: Tuning::for_device_type(info.device_type),
            info,
            device,
            queue,
            id: NEXT_GPU_ID.fetch_add(1, Ordering::Relaxed),
            pipelines: PipelineCache::default(),
            uncaptured: Arc::new(Mutex::new(None)),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    /// Adapter name, backend, device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    /// The limits the device was granted.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// The features the device was granted.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }
    /// Whether GPU timestamp queries can time compute passes.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// Current dispatch-shape tuning.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }
    /// Changes the dispatch-shape tuning (checked against the device limits).
    pub fn set_tuning(&mut self, tuning: Tuning) -> Result<()> {
        let wg = tuning.workgroup_size;
        let max_wg = self.limits.max_compute_invocations_per_workgroup.min(256);
        if wg == 0 || !wg.is_power_of_two() || wg > max_wg {
            return Err(Error::param(
                "workgroup_size",
                wg as f64,
                "a power of two ≤ 256 and ≤ max_compute_invocations_per_workgroup",
            ));
        }
        if tuning.max_workgroups == Some(0) {
            return Err(Error::param("max_workgroups", 0.0, "at least 1"));
        }
        if tuning.stencil_march == 0 {
            return Err(Error::param("stencil_march", 0.0, "at least 1"));
        }
        if tuning.reduction_vec4s == 0 {
            return Err(Error::param("reduction_vec4s", 0.0, "at least 1"));
        }
        if let Some(lanes) = tuning.simd_lanes {
            if !lanes.is_power_of_two() || lanes > wg {
                return Err(Error::param(
                    "simd_lanes",
                    lanes as f64,
                    "a power of two ≤ workgroup_size, or None",
                ));
            }
        }
        let max_grid = self.limits.max_compute_workgroups_per_dimension;
        if tuning.dot_slices == 0 || tuning.dot_slices > max_grid {
            return Err(Error::param(
                "dot_slices",
                tuning.dot_slices as f64,
                "at least 1 and ≤ max_compute_workgroups_per_dimension",
            ));
        }
        self.tuning = tuning;
        Ok(())
    }

    /// A process-unique id, used to reject a [`crate::GpuVec`] from another `Gpu`.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Returns (and clears) an error wgpu raised outside our error scopes on a device we created.
    pub(crate) fn take_uncaptured(&self, operation: &'static str) -> Result<()> {
        let message = self.uncaptured.lock().ok().and_then(|mut s| s.take());
        match message {
            Some(message) => Err(Error::Wgpu { operation, message }),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Poll(e.to_string()))?;
        self.take_uncaptured("submit")
    }

    /// Runs `f` inside a validation error scope and turns a captured error into [`Error::Wgpu`].
    /// On the web a scope's result is only available asynchronously, and a scope dropped
    /// unpopped discards what it caught; so there no scope is pushed, and errors reach the
    /// device's uncaptured-error handler (reported at the next submit, and for shaders by
    /// [`Gpu::check_shaders_async`]).
    pub(crate) fn scoped<T>(&self, operation: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            match pollster::block_on(scope.pop()) {
                Some(e) => Err(Error::Wgpu {
                    operation,
                    message: e.to_string(),
                }),
                None => Ok(value),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = operation;
            Ok(f())
        }
    }
}
