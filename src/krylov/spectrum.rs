//! Spectrum tools through any [`LinearOperator`], as PyHessian runs them: power iteration
//! with deflation, Hutchinson trace (whole and per block), Lanczos with full
//! re-orthogonalisation and stochastic Lanczos quadrature. Vector work stays on the GPU
//! ([`SCALED_AXPY`], [`NORMALIZE_INTO`], [`BASIS_SUBTRACT`], [`RANGE_DOTS`] →
//! `shaders/krylov/vectors.wgsl`); only the scalars a stopping rule needs come back.
//!
//! Views. None of these functions takes a caller's vector: every vector they bind is their own
//! (in buffers of its own, apart from the Lanczos basis, whose vectors are disjoint views of
//! one buffer), so nothing a caller passes can overlap. The operator is recorded inside
//! curvgpu's error scope: what wgpu finds wrong in a user operator's recording comes back as
//! [`Error::Wgpu`], as do errors found when it runs.

use super::density::{slq_density, Density, DensityOptions};
use super::operator::{record_strided_matvec, scoped, square_dim, LinearOperator};
use super::tridiag::tridiagonal_eigen;
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};
use crate::rng::{self, Distribution};
use crate::shader;
use crate::vector::record_copy;

/// PyHessian's normalisation guard: v / (‖v‖ + 1e-6).
const NORM_EPS: f32 = 1e-6;

crate::kernel::uniform_struct! {
    /// The scalar-driven vector kernels' parameters: y op= sign·f(scal[index])·x.
    pub(crate) struct Vec1 { n: u32, index: u32, sign: f32, eps: f32 }
}

crate::kernel::uniform_struct! {
    /// `basis_subtract`'s basis: m vectors of n elements, `stride` apart.
    pub(crate) struct BasisUniform { n: u32, m: u32, stride: u32, _pad: u32 }
}

crate::kernel::uniform_struct! {
    /// `range_dots`'s block count.
    pub(crate) struct Ranges { count: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
}

/// Bindings of the kernels driven by one GPU scalar.
const VEC_SLOTS: &[Slot] = &[
    uniform::<Vec1>(),
    Slot::Read("scalars"),
    Slot::Read("x"),
    Slot::Write("y"),
];

/// y += sign·scal[index]·x.
pub(crate) static SCALED_AXPY: Kernel =
    Kernel::new(&shader::KRYLOV_VECTORS, "scaled_axpy", VEC_SLOTS);
/// y += sign·√scal[index]·x (Lanczos's β from its square).
static SCALED_AXPY_SQRT: Kernel =
    Kernel::new(&shader::KRYLOV_VECTORS, "scaled_axpy_sqrt", VEC_SLOTS);
/// y = x / (√scal[index] + eps).
pub(crate) static NORMALIZE_INTO: Kernel =
    Kernel::new(&shader::KRYLOV_VECTORS, "normalize_into", VEC_SLOTS);
/// w −= Σ_j c_j·V_j.
pub(crate) static BASIS_SUBTRACT: Kernel = Kernel::new(
    &shader::KRYLOV_VECTORS,
    "basis_subtract",
    &[
        uniform::<BasisUniform>(),
        Slot::Read("basis"),
        Slot::Write("w"),
        Slot::Read("coefficients"),
    ],
);
/// Per-block sums of z ⊙ A·z.
pub(crate) static RANGE_DOTS: Kernel = Kernel::new(
    &shader::KRYLOV_VECTORS,
    "range_dots",
    &[
        uniform::<Ranges>(),
        Slot::Read("block starts"),
        Slot::Read("z"),
        Slot::Read("A·z"),
        Slot::Write("block sums"),
    ],
);

crate::kernel::uniform_struct! {
    /// `struct Power` of `shaders/krylov/power.wgsl`.
    pub(crate) struct PowerUniform {
        n: u32, k: u32, stride: u32, groups: u32, max_iter: u32, tol: f32, eps: f32, _pad: u32,
    }
}

/// w = v − E·c with the partials of ‖w‖² (power iteration with found vectors E).
static POWER_ORTH: Kernel = Kernel::new(
    &shader::KRYLOV_POWER,
    "power_orth",
    &[
        uniform::<PowerUniform>(),
        Slot::Read("v"),
        Slot::Read("found vectors"),
        Slot::Write("partials"),
        Slot::Write("w"),
        Slot::Write("state"),
    ],
);
/// The partials of wᵀA·w and ‖A·w‖².
static POWER_PARTIALS: Kernel = Kernel::new(
    &shader::KRYLOV_POWER,
    "power_partials",
    &[
        uniform::<PowerUniform>(),
        Slot::Read("w"),
        Slot::Read("A·w"),
        Slot::Write("partials"),
        Slot::Gap,
        Slot::Write("state"),
    ],
);
/// λ, v ← A·v̂/‖A·v̂‖ and PyHessian's test.
static POWER_STEP: Kernel = Kernel::new(
    &shader::KRYLOV_POWER,
    "power_step",
    &[
        uniform::<PowerUniform>(),
        Slot::Write("v"),
        Slot::Read("A·w"),
        Slot::Write("partials"),
        Slot::Read("found vectors"),
        Slot::Write("state"),
    ],
);
/// The start's coefficient partials of v against the found vectors.
static POWER_COEFFS: Kernel = Kernel::new(
    &shader::KRYLOV_POWER,
    "power_coeffs",
    &[
        uniform::<PowerUniform>(),
        Slot::Read("v"),
        Slot::Gap,
        Slot::Write("partials"),
        Slot::Read("found vectors"),
    ],
);

/// Found vectors a power step deflates at most (`MAX_FOUND` in the shader).
const MAX_DEFLATED: usize = 32;
/// Power iterations recorded between reads of the control words.
const POWER_CHECK_EVERY: usize = 16;
/// The control words of `shaders/krylov/power.wgsl`.
const POWER_ITER: usize = 0;
const POWER_STOP: usize = 1;
const POWER_VALUE: usize = 2;
const POWER_NONFINITE: u32 = 3;
const HISTORY: usize = 8;

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &POWER_ORTH,
    &POWER_PARTIALS,
    &POWER_STEP,
    &POWER_COEFFS,
    &SCALED_AXPY,
    &SCALED_AXPY_SQRT,
    &NORMALIZE_INTO,
    &BASIS_SUBTRACT,
    &RANGE_DOTS,
];

/// One of the [`VEC_SLOTS`] kernels: y op= sign·f(scal[index])·x.
fn vec_kernel(
    rec: &mut Recorder,
    kernel: &'static Kernel,
    scal: &GpuVec<f32>,
    index: usize,
    sign: f32,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    let u = Vec1 {
        n: x.len() as u32,
        index: index as u32,
        sign,
        eps: NORM_EPS,
    };
    let grid = rec.elementwise_grid(x.len() as u64)?;
    rec.dispatch(
        kernel,
        &rec.wg(),
        &[
            Binding::uniform(&u),
            Binding::storage(scal.view()),
            Binding::storage(x),
            Binding::storage(y),
        ],
        grid,
    )
}

/// y = x / (‖x‖ + 1e-6), with ‖x‖² left in scal[slot].
fn record_normalize(
    rec: &mut Recorder,
    scal: &GpuVec<f32>,
    slot: usize,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    reduce::record(rec, Reduction::SquaredNorm, x, None, scal.view(), slot)?;
    vec_kernel(rec, &NORMALIZE_INTO, scal, slot, 1.0, x, y)
}

/// Records y = A·x for the caller's operator inside curvgpu's error scope.
fn record_operator(
    rec: &mut Recorder,
    op: &dyn LinearOperator,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    scoped(rec, |rec| op.record_apply(rec, x, y))
}

/// Vectors of length n stored `stride` apart in one buffer, so each is a bindable view.
struct Basis {
    data: GpuVec<f32>,
    coeffs: GpuVec<f32>,
    n: usize,
    stride: usize,
}

impl Basis {
    fn new(gpu: &Gpu, n: usize, capacity: usize) -> Result<Self> {
        let stride = n.div_ceil(64) * 64;
        let capacity = capacity.max(1);
        // The whole basis is bound at once by the Gram–Schmidt kernels.
        let max = gpu.limits().max_storage_buffer_binding_size;
        let elems = stride.checked_mul(capacity);
        let bytes = elems.and_then(|e| (e as u64).checked_mul(4));
        match bytes {
            Some(bytes) if bytes <= max => {}
            _ => {
                return Err(Error::TooLarge {
                    argument: "steps",
                    requested: bytes.unwrap_or(u64::MAX),
                    limit: "max_storage_buffer_binding_size",
                    max,
                })
            }
        }
        Ok(Basis {
            data: GpuVec::zeros(gpu, stride * capacity)?,
            coeffs: GpuVec::zeros(gpu, capacity)?,
            n,
            stride,
        })
    }

    fn vector(&self, j: usize) -> BufView<'_> {
        self.data
            .view()
            .sub(j * self.stride, self.n)
            .named("basis vector")
    }

    /// w −= Σ_{j<m} (v_j·w)·v_j, twice (classical Gram–Schmidt with re-orthogonalisation:
    /// one pass loses orthogonality in f32 over a hundred Lanczos steps). w lies outside the
    /// basis.
    fn record_orthogonalize(&self, rec: &mut Recorder, m: usize, w: BufView<'_>) -> Result<()> {
        if m == 0 {
            return Ok(());
        }
        let u = BasisUniform {
            n: self.n as u32,
            m: m as u32,
            stride: self.stride as u32,
            _pad: 0,
        };
        let v = self
            .data
            .view()
            .sub(0, self.stride * (m - 1) + self.n)
            .named("basis");
        let coeffs = self.coeffs.view().sub(0, m).named("coefficients");
        for _ in 0..2 {
            record_strided_matvec(rec, v, m, self.n, self.stride, w, coeffs)?;
            let grid = rec.elementwise_grid(self.n as u64)?;
            rec.dispatch(
                &BASIS_SUBTRACT,
                &rec.wg(),
                &[
                    Binding::uniform(&u),
                    Binding::storage(v),
                    Binding::storage(w),
                    Binding::storage(coeffs),
                ],
                grid,
            )?;
        }
        Ok(())
    }
}

/// Options of [`top_eigenvalues`]; defaults are PyHessian's `eigenvalues(maxIter=100, tol=1e-3, top_n=1)`.
#[derive(Clone, Copy, Debug)]
pub struct PowerOptions {
    /// How many eigenvalues (largest first, by power iteration with deflation).
    pub top_n: usize,
    /// Iterations per eigenvalue, at least 1.
    pub max_iter: usize,
    /// Stop when |λ − λ_prev| / (|λ_prev| + 1e-6) < tol.
    pub tol: f64,
    /// Seed of the Gaussian start vectors.
    pub seed: u64,
}

impl Default for PowerOptions {
    fn default() -> Self {
        PowerOptions {
            top_n: 1,
            max_iter: 100,
            tol: 1e-3,
            seed: 0,
        }
    }
}

/// Eigenvalues (in the order found) and unit eigenvectors.
#[derive(Debug)]
pub struct Eigenpairs {
    /// λ₁, λ₂, … (dominant first).
    pub values: Vec<f64>,
    /// The matching unit vectors, on the device.
    pub vectors: Vec<GpuVec<f32>>,
    /// Iterations each eigenvalue took.
    pub iterations: Vec<usize>,
    /// Dispatches one iteration of each eigenvalue took, the operator's included (one more
    /// once there are found vectors to deflate).
    pub dispatches_per_iteration: Vec<usize>,
}

/// The iteration limit (at least 1, `check::iterations`) and the stopping tolerance.
fn check_iter(name: &'static str, max_iter: usize, tol: f64) -> Result<()> {
    check::iterations(name, max_iter)?;
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(Error::param("tol", tol, "finite and ≥ 0"));
    }
    Ok(())
}

/// The top-k eigenvalues by power iteration with deflation, as PyHessian's `eigenvalues`:
/// Gaussian start normalised by ‖v‖ + 1e-6; each iteration orthogonalises against the
/// eigenvectors found, λ = vᵀAv, v ← Av/(‖Av‖ + 1e-6); stop on relative change < tol.
/// Power iteration finds the eigenvalues largest in magnitude.
///
/// Errors: a non-square operator; `max_iter` 0 (`check::iterations`), `tol` negative or
/// non-finite, `top_n` 0 or past the dimension; [`Error::Breakdown`] when vᵀAv is not
/// finite; [`Error::Wgpu`] for what wgpu finds wrong in the operator's recording or when it
/// runs. Blocking: the native wrapper of [`top_eigenvalues_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn top_eigenvalues(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &PowerOptions,
) -> Result<Eigenpairs> {
    pollster::block_on(top_eigenvalues_async(gpu, op, options))
}

/// Async form of [`top_eigenvalues`], the one implementation: the stopping rule runs on the
/// GPU, and the host awaits one readback per 16 recorded iterations.
pub async fn top_eigenvalues_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &PowerOptions,
) -> Result<Eigenpairs> {
    let n = square_dim(op)?;
    check_iter("max_iter", options.max_iter, options.tol)?;
    if options.top_n == 0 || options.top_n > n {
        return Err(Error::param(
            "top_n",
            options.top_n as f64,
            "between 1 and the operator's dimension",
        ));
    }
    if options.top_n > MAX_DEFLATED + 1 {
        return Err(Error::param(
            "top_n",
            options.top_n as f64,
            "at most 33 (power iteration deflates at most 32 found vectors)",
        ));
    }
    if options.max_iter >= u32::MAX as usize - HISTORY {
        return Err(Error::param(
            "max_iter",
            options.max_iter as f64,
            "below 2³² − 9 (the GPU counts iterations in u32)",
        ));
    }
    let basis = Basis::new(gpu, n, options.top_n)?;
    let scal = GpuVec::<f32>::zeros(gpu, 4)?;
    let groups = reduce::partial_groups(gpu, n.div_ceil(4) as u64) as usize;
    let parts = GpuVec::<f32>::zeros(gpu, (3 + MAX_DEFLATED) * groups)?;
    let words = ((HISTORY + options.max_iter) * 4) as u64;
    let max = gpu.limits().max_storage_buffer_binding_size;
    if words > max {
        return Err(Error::TooLarge {
            argument: "max_iter",
            requested: words,
            limit: "max_storage_buffer_binding_size (one eigenvalue per iteration)",
            max,
        });
    }
    let state = GpuVec::<u32>::zeros(gpu, HISTORY + options.max_iter)?;
    let (v, w, hv) = (
        GpuVec::<f32>::zeros(gpu, n)?,
        GpuVec::<f32>::zeros(gpu, n)?,
        GpuVec::<f32>::zeros(gpu, n)?,
    );
    let mut result = Eigenpairs {
        values: Vec::new(),
        vectors: Vec::new(),
        iterations: Vec::new(),
        dispatches_per_iteration: Vec::new(),
    };
    for k in 0..options.top_n {
        let u = PowerUniform {
            n: n as u32,
            k: k as u32,
            stride: basis.stride as u32,
            groups: groups as u32,
            max_iter: options.max_iter as u32,
            tol: options.tol as f32,
            eps: NORM_EPS,
            _pad: 0,
        };
        let found = basis
            .data
            .view()
            .sub(0, basis.stride * k.saturating_sub(1) + n)
            .named("found vectors");
        let grid = [groups as u32, 1, 1];
        let wg = [("WG", gpu.tuning().workgroup_size as f64)];
        let mut rec = Recorder::new(gpu);
        rng::record_fill(
            &mut rec,
            Distribution::Gaussian,
            w.view(),
            options.seed,
            (k * basis.stride) as u64,
        )?;
        record_normalize(&mut rec, &scal, 1, w.view(), v.view())?;
        crate::vector::record_fill(&mut rec, state.view(), 0.0)?;
        if k > 0 {
            rec.dispatch(
                &POWER_COEFFS,
                &wg,
                &[
                    Binding::uniform(&u),
                    Binding::storage(v.view()),
                    Binding::Skip,
                    Binding::storage(parts.view()),
                    Binding::storage(found),
                ],
                grid,
            )?;
        }
        // One iteration, recorded once and appended per batch.
        let mut iteration = Recorder::new(gpu);
        let operand = match k {
            0 => v.view(),
            _ => w.view(),
        };
        if k > 0 {
            iteration.dispatch(
                &POWER_ORTH,
                &wg,
                &[
                    Binding::uniform(&u),
                    Binding::storage(v.view()),
                    Binding::storage(found),
                    Binding::storage(parts.view()),
                    Binding::storage(w.view()),
                    Binding::storage(state.view()),
                ],
                grid,
            )?;
        }
        record_operator(&mut iteration, op, operand, hv.view())?;
        iteration.dispatch(
            &POWER_PARTIALS,
            &wg,
            &[
                Binding::uniform(&u),
                Binding::storage(operand),
                Binding::storage(hv.view()),
                Binding::storage(parts.view()),
                Binding::Skip,
                Binding::storage(state.view()),
            ],
            grid,
        )?;
        let found_or_placeholder = match k {
            0 => Binding::Placeholder,
            _ => Binding::storage(found),
        };
        iteration.dispatch(
            &POWER_STEP,
            &wg,
            &[
                Binding::uniform(&u),
                Binding::storage(v.view()),
                Binding::storage(hv.view()),
                Binding::storage(parts.view()),
                found_or_placeholder,
                Binding::storage(state.view()),
            ],
            grid,
        )?;
        let dispatches = iteration.len();
        // Batches of iterations, one readback each; those after the stop are no-ops.
        let mut recorded = 0;
        let words = loop {
            let batch = POWER_CHECK_EVERY.min(options.max_iter - recorded);
            rec.append(&iteration, batch)?;
            recorded += batch;
            std::mem::replace(&mut rec, Recorder::new(gpu)).submit()?;
            let words = state.read_async().await?;
            if words[POWER_STOP] != 0 || recorded >= options.max_iter {
                break words;
            }
        };
        let iterations = words[POWER_ITER] as usize;
        if words[POWER_STOP] == POWER_NONFINITE {
            let at = iterations.saturating_sub(1);
            return Err(Error::Breakdown {
                method: "power iteration",
                iteration: at,
                message: format!("vᵀAv = {}", f32::from_bits(words[HISTORY + at])),
            });
        }
        if words[POWER_STOP] == 0 {
            return Err(Error::State(format!(
                "power iteration did not stop within max_iter = {} recorded iterations",
                options.max_iter
            )));
        }
        let mut rec = Recorder::new(gpu);
        record_copy(&mut rec, v.view(), 0, basis.vector(k), 0, n)?;
        rec.submit()?;
        let vector = GpuVec::<f32>::zeros(gpu, n)?;
        let mut rec = Recorder::new(gpu);
        record_copy(&mut rec, v.view(), 0, vector.view(), 0, n)?;
        rec.submit()?;
        result
            .values
            .push(f32::from_bits(words[POWER_VALUE]) as f64);
        result.vectors.push(vector);
        result.iterations.push(iterations);
        result.dispatches_per_iteration.push(dispatches);
    }
    Ok(result)
}

/// Options of [`hutchinson_trace`]; defaults are PyHessian's `trace(maxIter=100, tol=1e-3)`.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Probes at most, at least 1.
    pub max_iter: usize,
    /// Stop when |mean − previous mean| / (|previous mean| + 1e-6) < tol.
    pub tol: f64,
    /// Seed of the Rademacher probes (probe i uses offset i·n).
    pub seed: u64,
    /// Lengths of consecutive blocks (e.g. a network's layers) for per-block traces; empty for
    /// the whole trace only. Must sum to the operator's dimension.
    pub blocks: Vec<usize>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            max_iter: 100,
            tol: 1e-3,
            seed: 0,
            blocks: Vec::new(),
        }
    }
}

/// One block's trace estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockTrace {
    /// Parameters in the block.
    pub len: usize,
    /// Mean over probes of z_bᵀ(Az)_b.
    pub trace: f64,
    /// trace / len: HAWQ-V2's per-layer sensitivity.
    pub per_parameter: f64,
}

/// A Hutchinson trace estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEstimate {
    /// Mean of the samples.
    pub trace: f64,
    /// zᵀAz per probe.
    pub samples: Vec<f64>,
    /// Standard error of the mean (sample std / √probes; NaN for one probe).
    pub std_error: f64,
    /// Per-block estimates, when blocks were given.
    pub blocks: Vec<BlockTrace>,
}

/// tr(A) ≈ mean of zᵀAz over Rademacher z, with PyHessian's stopping rule, and per-block
/// traces from the same probes.
///
/// Errors: a non-square operator; `max_iter` 0, `tol` negative or non-finite; blocks that do
/// not sum to the dimension or are empty; [`Error::Breakdown`] when zᵀAz is not finite;
/// [`Error::Wgpu`] as for [`top_eigenvalues`]. Blocking: the native wrapper of
/// [`hutchinson_trace_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn hutchinson_trace(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &TraceOptions,
) -> Result<TraceEstimate> {
    pollster::block_on(hutchinson_trace_async(gpu, op, options))
}

/// Async form of [`hutchinson_trace`], the one implementation: each probe's zᵀAz (and its
/// per-block sums) is awaited.
pub async fn hutchinson_trace_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &TraceOptions,
) -> Result<TraceEstimate> {
    let n = square_dim(op)?;
    check_iter("max_iter", options.max_iter, options.tol)?;
    if !options.blocks.is_empty() && options.blocks.iter().sum::<usize>() != n {
        return Err(Error::LengthMismatch {
            argument: "blocks",
            expected: n,
            actual: options.blocks.iter().sum(),
        });
    }
    if options.blocks.contains(&0) {
        return Err(Error::Empty { argument: "blocks" });
    }
    let (z, hz) = (GpuVec::<f32>::zeros(gpu, n)?, GpuVec::<f32>::zeros(gpu, n)?);
    let scal = GpuVec::<f32>::zeros(gpu, 1)?;
    let mut starts = vec![0u32];
    for &b in &options.blocks {
        starts.push(starts.last().copied().unwrap_or(0) + b as u32);
    }
    let starts_buf = GpuVec::upload(gpu, &starts)?;
    let block_sums = GpuVec::<f32>::zeros(gpu, options.blocks.len().max(1))?;
    let mut samples = Vec::new();
    let mut block_samples = vec![0.0f64; options.blocks.len()];
    let mut trace = 0.0;
    for i in 0..options.max_iter {
        let mut rec = Recorder::new(gpu);
        rng::record_rademacher(&mut rec, z.view(), options.seed, (i * n) as u64)?;
        record_operator(&mut rec, op, z.view(), hz.view())?;
        reduce::record(
            &mut rec,
            Reduction::Dot,
            z.view(),
            Some(hz.view()),
            scal.view(),
            0,
        )?;
        if !options.blocks.is_empty() {
            let u = Ranges {
                count: options.blocks.len() as u32,
                ..Default::default()
            };
            let grid = rec.grid_for_groups(options.blocks.len() as u64)?;
            rec.dispatch(
                &RANGE_DOTS,
                &rec.wg(),
                &[
                    Binding::uniform(&u),
                    Binding::storage(starts_buf.view()),
                    Binding::storage(z.view()),
                    Binding::storage(hz.view()),
                    Binding::storage(block_sums.view()),
                ],
                grid,
            )?;
        }
        rec.submit()?;
        let sample = scal.read_async().await?[0] as f64;
        if !sample.is_finite() {
            return Err(Error::Breakdown {
                method: "hutchinson trace",
                iteration: i,
                message: format!("zᵀAz = {sample}"),
            });
        }
        samples.push(sample);
        if !options.blocks.is_empty() {
            for (acc, s) in block_samples.iter_mut().zip(block_sums.read_async().await?) {
                *acc += s as f64;
            }
        }
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let stop = (mean - trace).abs() / (trace.abs() + 1e-6) < options.tol;
        trace = mean;
        if stop {
            break;
        }
    }
    let k = samples.len() as f64;
    let var = samples.iter().map(|s| (s - trace).powi(2)).sum::<f64>() / (k - 1.0);
    let blocks = options
        .blocks
        .iter()
        .zip(&block_samples)
        .map(|(&len, &sum)| BlockTrace {
            len,
            trace: sum / k,
            per_parameter: sum / k / len as f64,
        })
        .collect();
    Ok(TraceEstimate {
        trace,
        std_error: (var / k).sqrt(),
        samples,
        blocks,
    })
}

/// The tridiagonal Lanczos coefficients of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct LanczosTridiagonal {
    /// Diagonal α₀ … α_{m−1}.
    pub alpha: Vec<f64>,
    /// Off-diagonal β₁ … β_{m−1}.
    pub beta: Vec<f64>,
    /// Dispatches the second step took (each later step takes as many), the operator's
    /// included; 0 for a single step.
    pub dispatches_per_step: usize,
}

/// `steps` Lanczos steps from the Rademacher vector (seed, offset) normalised, with full
/// re-orthogonalisation (PyHessian's density loop). All steps are one submission; α and β come
/// back at the end. Stops early (fewer steps) when β falls to f32 noise: the Krylov space
/// is exhausted and the quadrature is then exact.
///
/// Errors: a non-square operator; `steps` 0 or past the dimension; [`Error::Breakdown`] for
/// a non-finite coefficient; [`Error::Wgpu`] as for [`top_eigenvalues`]. Blocking: the native
/// wrapper of [`lanczos_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn lanczos(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    steps: usize,
    seed: u64,
    offset: u64,
) -> Result<LanczosTridiagonal> {
    pollster::block_on(lanczos_async(gpu, op, steps, seed, offset))
}

/// Async form of [`lanczos`], the one implementation: the one readback of α and β is awaited.
pub async fn lanczos_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    steps: usize,
    seed: u64,
    offset: u64,
) -> Result<LanczosTridiagonal> {
    let n = square_dim(op)?;
    check::iterations("steps", steps)?;
    if steps > n {
        return Err(Error::param(
            "steps",
            steps as f64,
            "between 1 and the operator's dimension",
        ));
    }
    let basis = Basis::new(gpu, n, steps)?;
    let (z, w) = (GpuVec::<f32>::zeros(gpu, n)?, GpuVec::<f32>::zeros(gpu, n)?);
    // scal: α_i at 2i, β_i² at 2i + 1, scratch norms at 2·steps.
    let scal = GpuVec::<f32>::zeros(gpu, 2 * steps + 1)?;
    let tmp = 2 * steps;
    let mut rec = Recorder::new(gpu);
    rng::record_rademacher(&mut rec, z.view(), seed, offset)?;
    record_normalize(&mut rec, &scal, tmp, z.view(), basis.vector(0))?;
    record_operator(&mut rec, op, basis.vector(0), w.view())?;
    reduce::record(
        &mut rec,
        Reduction::Dot,
        w.view(),
        Some(basis.vector(0)),
        scal.view(),
        0,
    )?;
    vec_kernel(
        &mut rec,
        &SCALED_AXPY,
        &scal,
        0,
        -1.0,
        basis.vector(0),
        w.view(),
    )?;
    let mut dispatches_per_step = 0;
    for i in 1..steps {
        let before = rec.len();
        reduce::record(
            &mut rec,
            Reduction::SquaredNorm,
            w.view(),
            None,
            scal.view(),
            2 * i + 1,
        )?;
        basis.record_orthogonalize(&mut rec, i, w.view())?;
        record_normalize(&mut rec, &scal, tmp, w.view(), basis.vector(i))?;
        record_operator(&mut rec, op, basis.vector(i), w.view())?;
        reduce::record(
            &mut rec,
            Reduction::Dot,
            w.view(),
            Some(basis.vector(i)),
            scal.view(),
            2 * i,
        )?;
        vec_kernel(
            &mut rec,
            &SCALED_AXPY,
            &scal,
            2 * i,
            -1.0,
            basis.vector(i),
            w.view(),
        )?;
        vec_kernel(
            &mut rec,
            &SCALED_AXPY_SQRT,
            &scal,
            2 * i + 1,
            -1.0,
            basis.vector(i - 1),
            w.view(),
        )?;
        if i == 1 {
            dispatches_per_step = rec.len() - before;
        }
    }
    rec.submit()?;
    let s = scal.read_async().await?;
    let alpha: Vec<f64> = (0..steps).map(|i| s[2 * i] as f64).collect();
    let beta: Vec<f64> = (1..steps).map(|i| (s[2 * i + 1] as f64).sqrt()).collect();
    if let Some(i) = alpha.iter().chain(&beta).position(|x| !x.is_finite()) {
        // α_j belongs to step j, β_j (at position steps + j − 1) to step j.
        return Err(Error::Breakdown {
            method: "lanczos",
            iteration: if i < steps { i } else { i - steps + 1 },
            message: "non-finite coefficient: the operator produced NaN or inf".into(),
        });
    }
    let scale = alpha
        .iter()
        .chain(&beta)
        .fold(0.0f64, |a, &b| a.max(b.abs()));
    let noise = 64.0 * f32::EPSILON as f64 * scale;
    let keep = beta
        .iter()
        .position(|&b| b <= noise)
        .map_or(steps, |i| i + 1);
    Ok(LanczosTridiagonal {
        alpha: alpha[..keep].to_vec(),
        beta: beta[..keep - 1].to_vec(),
        dispatches_per_step,
    })
}

/// Options of [`spectral_density`]; defaults are PyHessian's `density(iter=100, n_v=1)`.
#[derive(Clone, Copy, Debug)]
pub struct SlqOptions {
    /// Lanczos steps per run, at least 1 (capped at the dimension).
    pub steps: usize,
    /// Independent runs averaged, at least 1.
    pub runs: usize,
    /// Seed of the Rademacher start vectors (run r uses offset r·n).
    pub seed: u64,
    /// The density grid and kernel.
    pub density: DensityOptions,
}

impl Default for SlqOptions {
    fn default() -> Self {
        SlqOptions {
            steps: 100,
            runs: 1,
            seed: 0,
            density: DensityOptions::default(),
        }
    }
}

/// The result of [`spectral_density`].
#[derive(Clone, Debug)]
pub struct SpectralDensity {
    /// PyHessian's smoothed density on its grid.
    pub density: Density,
    /// Each run's quadrature: (nodes = eig(T), weights = first eigenvector components²).
    pub runs: Vec<(Vec<f64>, Vec<f64>)>,
}

/// Stochastic Lanczos quadrature: per run, nodes = eig(T) and weights = (first eigenvector
/// components)², then PyHessian's Gaussian-kernel density on its grid.
///
/// Errors: `runs` or `steps` 0, and those of [`lanczos`] and the density options. Blocking:
/// the native wrapper of [`spectral_density_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn spectral_density(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &SlqOptions,
) -> Result<SpectralDensity> {
    pollster::block_on(spectral_density_async(gpu, op, options))
}

/// Async form of [`spectral_density`], the one implementation: each run's Lanczos readback is
/// awaited.
pub async fn spectral_density_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &SlqOptions,
) -> Result<SpectralDensity> {
    let n = square_dim(op)?;
    check::iterations("runs", options.runs)?;
    check::iterations("steps", options.steps)?;
    let steps = options.steps.min(n);
    let mut runs = Vec::with_capacity(options.runs);
    for r in 0..options.runs {
        let t = lanczos_async(gpu, op, steps, options.seed, (r * n) as u64).await?;
        let eig = tridiagonal_eigen(&t.alpha, &t.beta)?;
        let weights = eig.first_components.iter().map(|c| c * c).collect();
        runs.push((eig.values, weights));
    }
    let density = slq_density(&runs, &options.density)?;
    Ok(SpectralDensity { density, runs })
}
