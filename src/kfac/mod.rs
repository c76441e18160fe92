//! K-FAC: Kronecker-factored curvature for linear layers (Martens & Grosse), with both
//! running-average conventions (KAISA's and kfac-jax's), kfac-jax's π-corrected damping or
//! KAISA's Tikhonov damping, batched inversion and the inverse-path preconditioned gradient
//! G′⁻¹·∇W·A′⁻¹ with KAISA's KL clip. [`Kfac::record_update_factors`] → `linalg::record_gemm`
//! (and `WITH_ONES`); [`Kfac::record_refresh_inverses`] → `TRACE_MEAN`, `DAMP`
//! (`shaders/kfac/factors.wgsl`) and `linalg::record_spd_inverse`.
//!
//! Layout (kfac-pytorch's): a layer y = W·x (+ b) has ∇W row-major `out`×`cols`, `cols` =
//! in + 1 with a bias (its gradient the last column); A is `cols`², G is `out`².
//!
//! Every tensor argument may be a view of one buffer shared with the others (an engine's
//! arena) where their ranges are disjoint; which overlaps are allowed is said per function.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::linalg::{
    check_binding, record_gemm, record_spd_inverse, Batch, CholeskyWorkspace, Eigenpairs, Gemm,
};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// The factor helpers' parameters (factors.wgsl's `Factor`).
    pub(crate) struct FactorUniform {
        n: u32, offset: u32, slot: u32, other: u32, pi: u32, mu: f32, _pad0: u32, _pad1: u32,
    }
}

crate::kernel::uniform_struct! {
    /// `eigen_divide`'s parameters (factors.wgsl's `Divide`).
    pub(crate) struct DivideUniform {
        rows: u32, cols: u32, g_offset: u32, a_offset: u32, sg: f32, sa: f32, mu: f32,
        gamma: f32,
    }
}

/// [x | 1]: the activations with a ones column.
pub(crate) static WITH_ONES: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "with_ones",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("x"),
        Slot::Write("with_ones"),
    ],
);
/// tr F / dim of one factor.
pub(crate) static TRACE_MEAN: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "trace_mean",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("factors"),
        Slot::Write("means"),
    ],
);
/// F′ = s·F + μ·I.
pub(crate) static DAMP: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "damp",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("running"),
        Slot::Read("means"),
        Slot::Write("damped"),
    ],
);
/// KAISA's ν from the per-layer ⟨v, g⟩.
pub(crate) static KL_CLIP: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "kl_clip",
    &[uniform::<FactorUniform>(), Slot::Write("clip")],
);
/// v ← ν·v.
pub(crate) static SCALE: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "scale",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("clip"),
        Slot::Write("outs"),
    ],
);
/// The eigen path's entrywise divide.
pub(crate) static EIGEN_DIVIDE: Kernel = Kernel::new(
    &shader::KFAC_FACTORS,
    "eigen_divide",
    &[
        uniform::<DivideUniform>(),
        Slot::Read("eigenvalues_g"),
        Slot::Read("eigenvalues_a"),
        Slot::Write("rotated"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &WITH_ONES,
    &TRACE_MEAN,
    &DAMP,
    &KL_CLIP,
    &SCALE,
    &EIGEN_DIVIDE,
];

/// One linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Input width (without the bias column).
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// Whether ∇W carries the bias gradient as its last column.
    pub bias: bool,
}

impl Layer {
    /// Columns of ∇W and the side of A.
    pub fn cols(&self) -> usize {
        self.in_dim + usize::from(self.bias)
    }
}

/// A non-empty list of layers with non-zero widths whose gradients (out × cols) each fit one
/// storage binding (shared by K-FAC and MKOR); returns the largest gradient's elements.
pub(crate) fn check_layers(gpu: &Gpu, layers: &[Layer]) -> Result<usize> {
    if layers.is_empty() {
        return Err(Error::Empty { argument: "layers" });
    }
    let mut largest = 0;
    for l in layers {
        if l.in_dim == 0 {
            return Err(Error::Empty { argument: "in_dim" });
        }
        if l.out_dim == 0 {
            return Err(Error::Empty {
                argument: "out_dim",
            });
        }
        let elements = (l.in_dim as u64)
            .saturating_add(l.bias as u64)
            .saturating_mul(l.out_dim as u64);
        check_binding(gpu, "layers", elements)?;
        largest = largest.max(elements as usize);
    }
    Ok(largest)
}

/// `elements` of `len` per sample times `batch`, or [`Error::TooLarge`] past usize.
fn batch_len(argument: &'static str, batch: usize, len: usize) -> Result<usize> {
    batch.checked_mul(len).ok_or(Error::TooLarge {
        argument,
        requested: u64::MAX,
        limit: "usize",
        max: usize::MAX as u64,
    })
}

/// Checks a batch's per-layer activations (`batch`×in) and output gradients (`batch`×out);
/// returns them named `xs` and `dys`.
pub(crate) fn check_batch<'a>(
    gpu: &Gpu,
    layers: &[Layer],
    batch: usize,
    xs: &[BufView<'a>],
    dys: &[BufView<'a>],
) -> Result<(Vec<BufView<'a>>, Vec<BufView<'a>>)> {
    if batch == 0 {
        return Err(Error::Empty { argument: "batch" });
    }
    crate::check::same_count("xs", layers.len(), xs.len())?;
    crate::check::same_count("dys", layers.len(), dys.len())?;
    let mut named = (Vec::with_capacity(xs.len()), Vec::with_capacity(dys.len()));
    for (l, (x, dy)) in layers.iter().zip(xs.iter().zip(dys)) {
        named
            .0
            .push(x.check(gpu, "xs", batch_len("batch", batch, l.in_dim)?)?);
        named
            .1
            .push(dy.check(gpu, "dys", batch_len("batch", batch, l.out_dim)?)?);
    }
    Ok(named)
}

/// Checks per-layer gradients and outputs (out × cols each) and the overlaps between them:
/// an output may not overlap another layer's output, nor any layer's gradient except its own
/// when `in_place` allows `outs[i]` to be the very view `grads[i]` is. Returns the views named
/// `grads` and `outs`.
pub(crate) fn check_grads_outs<'a>(
    gpu: &Gpu,
    layers: &[Layer],
    grads: &[BufView<'a>],
    outs: &[BufView<'a>],
    in_place: bool,
    why: &str,
) -> Result<(Vec<BufView<'a>>, Vec<BufView<'a>>)> {
    crate::check::same_count("grads", layers.len(), grads.len())?;
    crate::check::same_count("outs", layers.len(), outs.len())?;
    let mut named = (
        Vec::with_capacity(grads.len()),
        Vec::with_capacity(outs.len()),
    );
    for (l, (g, o)) in layers.iter().zip(grads.iter().zip(outs)) {
        named.0.push(g.check(gpu, "grads", l.out_dim * l.cols())?);
        named.1.push(o.check(gpu, "outs", l.out_dim * l.cols())?);
    }
    for (i, o) in named.1.iter().enumerate() {
        for (j, g) in named.0.iter().enumerate() {
            if !(in_place && i == j && o.is_same(g)) {
                o.refuse_overlap(g, || format!("output {i} overlaps gradient {j}: {why}"))?;
            }
        }
        for (j, p) in named.1.iter().enumerate().skip(i + 1) {
            o.refuse_overlap(p, || {
                format!("outputs {i} and {j} overlap: each layer needs its own")
            })?;
        }
    }
    Ok(named)
}

/// A square factor inside a packed batch: its view, its first element, and whether to use its
/// transpose.
pub(crate) type FactorRef<'a> = (BufView<'a>, usize, bool);

/// Records out = op(L)·∇W·op(R) for one layer: L (out×out) and R (cols×cols) square factors
/// of packed batches, op the transpose where asked, through `scratch` (≥ out·cols). Shared by
/// K-FAC's G′⁻¹·∇W·A′⁻¹ and both halves of its eigen path, and MKOR's J_G·∇W·J_A. `grad` is
/// wholly read (into the scratch) before `out` is written, so they may be one view; the
/// callers check the views.
pub(crate) fn record_two_sided(
    rec: &mut Recorder,
    layer: &Layer,
    left: FactorRef<'_>,
    grad: BufView<'_>,
    right: FactorRef<'_>,
    scratch: &GpuVec<f32>,
    out: BufView<'_>,
) -> Result<()> {
    let (o, c) = (layer.out_dim, layer.cols());
    let tmp = scratch.view().named("scratch").sub(0, o * c);
    let first = Gemm {
        trans_a: left.2,
        offsets: [left.1, 0, 0],
        ld: [Some(o), None, None],
        ..Gemm::new(o, c, o)
    };
    record_gemm(rec, &first, left.0, grad, tmp)?;
    let second = Gemm {
        trans_b: right.2,
        offsets: [0, right.1, 0],
        ld: [None, Some(c), None],
        ..Gemm::new(o, c, c)
    };
    record_gemm(rec, &second, tmp, right.0, out)
}

/// How new factor statistics enter the running factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Averaging {
    /// KAISA (kfac-pytorch): factors start at I, F ← decay·F + (1 − decay)·F_new, no bias
    /// correction.
    Kaisa {
        /// 0.95 in kfac-pytorch.
        decay: f32,
    },
    /// kfac-jax: a bias-corrected weighted average, w ← decay·w + 1,
    /// F ← (1 − 1/w)·F + (1/w)·F_new (the first update gives F_new).
    KfacJax {
        /// 0.95 in kfac-jax.
        decay: f32,
    },
}

/// How the factors are damped before inversion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Damping {
    /// kfac-jax's π-correction: c_X = tr(X)/dim, c = √(c_A·c_G),
    /// A′ = (c/c_A)·A + √λ·I, G′ = (c/c_G)·G + √λ·I.
    Pi {
        /// λ (> 0).
        lambda: f32,
    },
    /// KAISA's inverse path: A + γ·I and G + γ·I.
    Tikhonov {
        /// γ (> 0; 1e-3 in kfac-pytorch).
        gamma: f32,
    },
}

/// K-FAC's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KfacConfig {
    /// Running-average convention.
    pub averaging: Averaging,
    /// Damping before inversion.
    pub damping: Damping,
    /// Steps between inverse refreshes in [`Kfac::step`] (kfac-jax: 5); ≥ 1.
    pub inverse_update_period: usize,
    /// How the preconditioned gradient is formed.
    pub path: Path,
}

/// K-FAC's two ways to apply the damped inverse factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Path {
    /// G′⁻¹·∇W·A′⁻¹ from batched Cholesky inverses of the damped factors.
    #[default]
    Inverse,
    /// KAISA's eigen path: Q_G·[(Q_Gᵀ·∇W·Q_A) ⊘ (d_G·d_Aᵀ + γ)]·Q_Aᵀ with the factors'
    /// eigendecompositions (eigenvalues clamped at 0). With π-damping the divisor is the π-damped
    /// factors' exact eigenvalues, (c/c_G·d_G + √λ)(c/c_A·d_A + √λ), so both paths agree.
    /// Refreshing it reads back once per Jacobi sweep ([`Kfac::refresh_eigen`]).
    Eigen,
}

impl Default for KfacConfig {
    /// KAISA's averaging and Tikhonov damping (γ = 1e-3), inverses refreshed every 5 steps.
    fn default() -> Self {
        KfacConfig {
            averaging: Averaging::Kaisa { decay: 0.95 },
            damping: Damping::Tikhonov { gamma: 1e-3 },
            inverse_update_period: 5,
            path: Path::Inverse,
        }
    }
}

/// One side's factors (every layer's A, or every layer's G) packed in one batch.
struct Side {
    batch: Batch,
    running: GpuVec<f32>,
    damped: GpuVec<f32>,
    inverse: GpuVec<f32>,
    workspace: CholeskyWorkspace,
    eigen: Option<Eigenpairs>,
}

impl Side {
    /// The factors' layout, checked against the device before anything is allocated.
    fn layout(gpu: &Gpu, sizes: &[usize]) -> Result<Batch> {
        let batch = Batch::new(sizes)?;
        check_binding(gpu, "layers", batch.len() as u64)?;
        Ok(batch)
    }

    fn new(gpu: &Gpu, batch: Batch, start_at_identity: bool) -> Result<Self> {
        Ok(Side {
            running: match start_at_identity {
                true => GpuVec::upload(gpu, &batch.identities()?)?,
                false => GpuVec::zeros(gpu, batch.len())?,
            },
            damped: GpuVec::zeros(gpu, batch.len())?,
            inverse: GpuVec::zeros(gpu, batch.len())?,
            workspace: CholeskyWorkspace::new(gpu, &batch)?,
            eigen: None,
            batch,
        })
    }
}

/// K-FAC state for a list of layers: running factors, their damped inverses, and the
/// preconditioning of each layer's gradient.
pub struct Kfac {
    layers: Vec<Layer>,
    config: KfacConfig,
    a: Side,
    g: Side,
    means: GpuVec<f32>,
    /// Per-layer ⟨v, g⟩ and the KL-clip scale ν after them.
    clip: GpuVec<f32>,
    with_ones: Option<GpuVec<f32>>,
    scratch: GpuVec<f32>,
    scratch2: GpuVec<f32>,
    /// The eigen path's π scales (s_G, s_A) per layer, from the last refresh.
    eigen_scales: Vec<(f32, f32)>,
    weight: f64,
    steps: usize,
}

impl std::fmt::Debug for Kfac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kfac")
            .field("layers", &self.layers)
            .field("config", &self.config)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Kfac {
    /// State for `layers` (each with non-zero widths).
    ///
    /// Errors: no layers, a zero width, decay outside [0, 1), λ or γ not finite and > 0, a
    /// zero inverse-update period, factors or gradients past the device limits
    /// ([`Error::TooLarge`] naming `layers`, checked before anything is allocated), or past
    /// host memory ([`Error::HostMemory`]).
    pub fn new(gpu: &Gpu, layers: &[Layer], config: KfacConfig) -> Result<Self> {
        let largest = check_layers(gpu, layers)?;
        let (Averaging::Kaisa { decay } | Averaging::KfacJax { decay }) = config.averaging;
        crate::check::beta("decay", decay)?;
        match config.damping {
            Damping::Pi { lambda } => crate::check::positive("lambda", lambda)?,
            Damping::Tikhonov { gamma } => crate::check::positive("gamma", gamma)?,
        }
        if config.inverse_update_period == 0 {
            return Err(Error::param("inverse_update_period", 0.0, "at least 1"));
        }
        let kaisa = matches!(config.averaging, Averaging::Kaisa { .. });
        let a_sizes: Vec<usize> = layers.iter().map(Layer::cols).collect();
        let g_sizes: Vec<usize> = layers.iter().map(|l| l.out_dim).collect();
        let (a, g) = (Side::layout(gpu, &a_sizes)?, Side::layout(gpu, &g_sizes)?);
        Ok(Kfac {
            a: Side::new(gpu, a, kaisa)?,
            g: Side::new(gpu, g, kaisa)?,
            means: GpuVec::zeros(gpu, 2 * layers.len())?,
            clip: GpuVec::zeros(gpu, layers.len() + 1)?,
            with_ones: None,
            scratch: GpuVec::zeros(gpu, largest)?,
            scratch2: GpuVec::zeros(gpu, largest)?,
            eigen_scales: Vec::new(),
            layers: layers.to_vec(),
            config,
            weight: 0.0,
            steps: 0,
        })
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The running factors A (packed, layer by layer) and their layout.
    pub fn factors_a(&self) -> (&GpuVec<f32>, &Batch) {
        (&self.a.running, &self.a.batch)
    }

    /// The running factors G (packed, layer by layer) and their layout.
    pub fn factors_g(&self) -> (&GpuVec<f32>, &Batch) {
        (&self.g.running, &self.g.batch)
    }

    /// Records one update of every layer's factors from a batch of `batch` samples: layer
    /// i's input activations `xs[i]` (`batch`×in) and the per-sample gradients of the loss
    /// with respect to its output `dys[i]` (`batch`×out). A_new = [x | 1]ᵀ[x | 1]/B and
    /// G_new = dyᵀdy/B enter by the configured average, fused into the product (α, β).
    /// The inputs are only read: they may share one buffer, overlapping or not.
    ///
    /// Errors: tensor counts ([`Error::CountMismatch`]), lengths, a zero batch, a bias layer's
    /// `batch`×(in + 1) copy past one storage binding.
    pub fn record_update_factors(
        &mut self,
        rec: &mut Recorder,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (xs, dys) = check_batch(gpu, &self.layers, batch, xs, dys)?;
        let (alpha, beta, weight) = match self.config.averaging {
            Averaging::Kaisa { decay } => ((1.0 - decay as f64) / batch as f64, decay as f64, 0.0),
            Averaging::KfacJax { decay } => {
                let w = decay as f64 * self.weight + 1.0;
                (1.0 / (w * batch as f64), 1.0 - 1.0 / w, w)
            }
        };
        let ones_len = self
            .layers
            .iter()
            .filter(|l| l.bias)
            .map(|l| batch_len("batch", batch, l.cols()))
            .try_fold(None, |most: Option<usize>, len| {
                len.map(|len| Some(most.map_or(len, |m| m.max(len))))
            })?;
        if let Some(len) = ones_len {
            check_binding(gpu, "batch", len as u64)?;
            if self.with_ones.as_ref().is_none_or(|v| v.len() < len) {
                self.with_ones = Some(GpuVec::zeros(gpu, len)?);
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            let cols = l.cols();
            let x = match (&self.with_ones, l.bias) {
                (Some(ones), true) => {
                    let u = FactorUniform {
                        n: l.in_dim as u32,
                        offset: batch as u32,
                        ..Default::default()
                    };
                    let ones = ones.view().named("with_ones").sub(0, batch * cols);
                    let grid = rec.elementwise_grid((batch * cols) as u64)?;
                    rec.dispatch(
                        &WITH_ONES,
                        &rec.wg(),
                        &[
                            Binding::uniform(&u),
                            Binding::storage(xs[i]),
                            Binding::storage(ones),
                        ],
                        grid,
                    )?;
                    ones
                }
                _ => xs[i],
            };
            for (side, operand, n) in [(&self.a, x, cols), (&self.g, dys[i], l.out_dim)] {
                let shape = Gemm {
                    trans_a: true,
                    alpha: alpha as f32,
                    beta: beta as f32,
                    symmetric: true,
                    offsets: [0, 0, side.batch.offset(i)],
                    ld: [None, None, Some(n)],
                    ..Gemm::new(n, n, batch)
                };
                let running = side.running.view().named("running");
                record_gemm(rec, &shape, operand, operand, running)?;
            }
        }
        self.weight = weight;
        Ok(())
    }

    /// Records the damped inverses of every layer's running factors (see [`Damping`]).
    /// A factor that is not SPD after damping (NaN statistics) is reported by
    /// [`Kfac::check_inverses`] after the submission.
    pub fn record_refresh_inverses(&self, rec: &mut Recorder) -> Result<()> {
        let (pi, mu) = match self.config.damping {
            Damping::Pi { lambda } => (1, lambda.sqrt()),
            Damping::Tikhonov { gamma } => (0, gamma),
        };
        let uniform = |side: &Side, i: usize, n: usize, slot: usize| FactorUniform {
            n: n as u32,
            offset: side.batch.offset(i) as u32,
            slot: slot as u32,
            other: (slot ^ 1) as u32,
            pi,
            mu,
            ..Default::default()
        };
        let means = self.means.view().named("means");
        // Every mean diagonal first: each factor's scale needs its partner's.
        let factors =
            |i: usize, l: &Layer| [(&self.a, l.cols(), 2 * i), (&self.g, l.out_dim, 2 * i + 1)];
        if pi == 1 {
            for (i, l) in self.layers.iter().enumerate() {
                for (side, n, slot) in factors(i, l) {
                    let u = uniform(side, i, n, slot);
                    rec.dispatch(
                        &TRACE_MEAN,
                        &rec.wg(),
                        &[
                            Binding::uniform(&u),
                            Binding::storage(side.running.view().named("running")),
                            Binding::storage(means),
                        ],
                        [1, 1, 1],
                    )?;
                }
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            for (side, n, slot) in factors(i, l) {
                let u = uniform(side, i, n, slot);
                let grid = rec.elementwise_grid((n * n) as u64)?;
                rec.dispatch(
                    &DAMP,
                    &rec.wg(),
                    &[
                        Binding::uniform(&u),
                        Binding::storage(side.running.view().named("running")),
                        Binding::storage(means),
                        Binding::storage(side.damped.view().named("damped")),
                    ],
                    grid,
                )?;
            }
        }
        for side in [&self.a, &self.g] {
            record_spd_inverse(
                rec,
                &side.batch,
                side.damped.view().named("damped"),
                side.inverse.view().named("inverse"),
                &side.workspace,
            )?;
        }
        Ok(())
    }

    /// Reads the factorisations' status after a refresh: [`Error::NotPositiveDefinite`]
    /// (argument `kfac_a` or `kfac_g`, `factor` = the layer) when a damped factor was not SPD.
    /// Blocking: the native wrapper of [`Kfac::check_inverses_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check_inverses(&self, gpu: &Gpu) -> Result<()> {
        pollster::block_on(self.check_inverses_async(gpu))
    }

    /// Reads the factorisations' status after a refresh (two awaited readbacks): the async
    /// form of `Kfac::check_inverses`, with its errors.
    pub async fn check_inverses_async(&self, gpu: &Gpu) -> Result<()> {
        self.a.workspace.check_async(gpu, "kfac_a").await?;
        self.g.workspace.check_async(gpu, "kfac_g").await
    }

    /// The gradients and outputs of a precondition, checked (in place allowed).
    fn check_precondition<'a>(
        &self,
        gpu: &Gpu,
        grads: &[BufView<'a>],
        outs: &[BufView<'a>],
    ) -> Result<(Vec<BufView<'a>>, Vec<BufView<'a>>)> {
        let why = "each layer's output is written after its own gradient is read, but before \
                   the later layers' gradients are; pass the same view (in place) or disjoint \
                   views";
        check_grads_outs(gpu, &self.layers, grads, outs, true, why)
    }

    /// Records out_i = G′_i⁻¹·∇W_i·A′_i⁻¹ for every layer from the last refreshed inverses (or
    /// the eigen path's formula).
    ///
    /// **In place** (`outs[i]` the very view `grads[i]` is) is supported: each layer's
    /// gradient is wholly read into a scratch before its output is written. Other overlaps —
    /// an output overlapping another layer's gradient or output, or its own gradient only in
    /// part — are [`Error::Overlap`] naming `outs` and `grads` (a later layer would read a
    /// gradient already overwritten). Preconditioned in place, the gradients are gone: call
    /// [`Kfac::record_kl_clip`] only with separate outputs.
    ///
    /// Errors: tensor counts ([`Error::CountMismatch`]), lengths, the overlaps; the eigen path
    /// before [`Kfac::refresh_eigen`] ([`Error::State`]).
    pub fn record_precondition(
        &self,
        rec: &mut Recorder,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let (grads, outs) = self.check_precondition(rec.gpu(), grads, outs)?;
        if self.config.path == Path::Eigen {
            return self.record_eigen_precondition(rec, &grads, &outs);
        }
        for (i, l) in self.layers.iter().enumerate() {
            record_two_sided(
                rec,
                l,
                (
                    self.g.inverse.view().named("g_inverse"),
                    self.g.batch.offset(i),
                    false,
                ),
                grads[i],
                (
                    self.a.inverse.view().named("a_inverse"),
                    self.a.batch.offset(i),
                    false,
                ),
                &self.scratch,
                outs[i],
            )?;
        }
        Ok(())
    }

    /// Eigendecomposes every layer's running A and G (the eigen path's refresh; blocking, one
    /// readback per Jacobi sweep) and, under π-damping, fixes each layer's scales c/c_G and
    /// c/c_A from the eigenvalues' means.
    /// Blocking: the native wrapper of [`Kfac::refresh_eigen_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn refresh_eigen(&mut self, gpu: &Gpu) -> Result<()> {
        pollster::block_on(self.refresh_eigen_async(gpu))
    }

    /// The eigen path's refresh with awaited readbacks: the async form of
    /// `Kfac::refresh_eigen`, with its errors.
    pub async fn refresh_eigen_async(&mut self, gpu: &Gpu) -> Result<()> {
        let options = crate::linalg::JacobiOptions {
            clamp_negative: true,
            ..Default::default()
        };
        for side in [&mut self.a, &mut self.g] {
            side.eigen = Some(
                crate::linalg::symmetric_eigen_async(gpu, &side.batch, &side.running, &options)
                    .await?,
            );
        }
        let (Some(ea), Some(eg)) = (&self.a.eigen, &self.g.eigen) else {
            return Ok(());
        };
        self.eigen_scales = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mean = |e: &Eigenpairs, n: usize| {
                    let v = &e.values[e.value_offsets[i]..e.value_offsets[i] + n];
                    v.iter().map(|&x| x as f64).sum::<f64>() / n as f64
                };
                let (ca, cg) = (mean(ea, l.cols()), mean(eg, l.out_dim));
                match self.config.damping {
                    // kfac-jax: a zero factor leaves only the damping (scale 0).
                    Damping::Pi { .. } if ca <= 0.0 || cg <= 0.0 => (0.0, 0.0),
                    Damping::Pi { .. } => ((ca / cg).sqrt() as f32, (cg / ca).sqrt() as f32),
                    Damping::Tikhonov { .. } => (1.0, 1.0),
                }
            })
            .collect();
        Ok(())
    }

    fn record_eigen_precondition(
        &self,
        rec: &mut Recorder,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let (Some(ea), Some(eg)) = (&self.a.eigen, &self.g.eigen) else {
            return Err(Error::State(
                "the eigen path needs Kfac::refresh_eigen before preconditioning".into(),
            ));
        };
        let (mu, gamma) = match self.config.damping {
            Damping::Pi { lambda } => (lambda.sqrt(), 0.0),
            Damping::Tikhonov { gamma } => (0.0, gamma),
        };
        for (i, l) in self.layers.iter().enumerate() {
            let (o, c) = (l.out_dim, l.cols());
            let rotated = self.scratch2.view().named("rotated").sub(0, o * c);
            let (qg, qa) = (
                eg.vectors.view().named("eigenvectors_g"),
                ea.vectors.view().named("eigenvectors_a"),
            );
            let (g_at, a_at) = (self.g.batch.offset(i), self.a.batch.offset(i));
            // Q_Gᵀ·∇W·Q_A, divided entrywise, then Q_G·(…)·Q_Aᵀ.
            record_two_sided(
                rec,
                l,
                (qg, g_at, true),
                grads[i],
                (qa, a_at, false),
                &self.scratch,
                rotated,
            )?;
            let (sg, sa) = self.eigen_scales.get(i).copied().unwrap_or((1.0, 1.0));
            let u = DivideUniform {
                rows: o as u32,
                cols: c as u32,
                g_offset: eg.value_offsets[i] as u32,
                a_offset: ea.value_offsets[i] as u32,
                sg,
                sa,
                mu,
                gamma,
            };
            let grid = rec.elementwise_grid((o * c) as u64)?;
            rec.dispatch(
                &EIGEN_DIVIDE,
                &rec.wg(),
                &[
                    Binding::uniform(&u),
                    Binding::storage(eg.values_gpu.view().named("eigenvalues_g")),
                    Binding::storage(ea.values_gpu.view().named("eigenvalues_a")),
                    Binding::storage(rotated),
                ],
                grid,
            )?;
            record_two_sided(
                rec,
                l,
                (qg, g_at, false),
                rotated,
                (qa, a_at, true),
                &self.scratch,
                outs[i],
            )?;
        }
        Ok(())
    }

    /// Records KAISA's KL clip over every layer: ν = min(1, √(`kl_clip` / |Σ lr²·⟨out_i,
    /// grad_i⟩|)) (1 when the sum is 0, as kfac-pytorch), then out_i ← ν·out_i. Call it after
    /// [`Kfac::record_precondition`] with the same views; kfac-pytorch's bound is 1e-3.
    ///
    /// ν needs the unpreconditioned gradients: `outs` may not overlap `grads` at all (after
    /// an in-place precondition the gradients are gone), [`Error::Overlap`] otherwise.
    ///
    /// Errors: lr or kl_clip not finite and > 0, tensor counts, lengths, the overlaps.
    pub fn record_kl_clip(
        &self,
        rec: &mut Recorder,
        lr: f32,
        kl_clip: f32,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        crate::check::positive("lr", lr)?;
        crate::check::positive("kl_clip", kl_clip)?;
        let count = self.layers.len();
        let why = "ν is ⟨out, grad⟩ of the unpreconditioned gradients: precondition into \
                   separate outputs to clip";
        let (grads, outs) = check_grads_outs(gpu, &self.layers, grads, outs, false, why)?;
        let clip = self.clip.view().named("clip");
        for (i, (g, o)) in grads.iter().zip(&outs).enumerate() {
            crate::reduce::record(rec, crate::reduce::Reduction::Dot, *o, Some(*g), clip, i)?;
        }
        let u = FactorUniform {
            n: count as u32,
            slot: count as u32,
            other: kl_clip.to_bits(),
            mu: lr * lr,
            ..Default::default()
        };
        rec.dispatch(
            &KL_CLIP,
            &[],
            &[Binding::uniform(&u), Binding::storage(clip)],
            [1, 1, 1],
        )?;
        for o in outs {
            let u = FactorUniform {
                n: o.len() as u32,
                ..u
            };
            let grid = rec.elementwise_grid(o.len() as u64)?;
            rec.dispatch(
                &SCALE,
                &rec.wg(),
                &[
                    Binding::uniform(&u),
                    Binding::storage(clip),
                    Binding::storage(o),
                ],
                grid,
            )?;
        }
        Ok(())
    }

    /// One K-FAC step in one submission: update the factors, refresh the inverses on the
    /// first step and every `inverse_update_period` steps after, precondition every layer's
    /// gradient into `outs`. Blocking only when it refreshed (to check the factorisations).
    /// The native wrapper of [`Kfac::step_async`].
    ///
    /// All four lists may be views of one buffer. `outs` may be `grads` (in place) as in
    /// [`Kfac::record_precondition`], whose overlap rules apply; `xs` and `dys` are read
    /// before any output is written. Everything is checked before anything is recorded: a
    /// refused step leaves the state as it was.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(
        &mut self,
        gpu: &Gpu,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        pollster::block_on(self.step_async(gpu, batch, xs, dys, grads, outs))
    }

    /// One K-FAC step in one submission, awaiting the readbacks a refresh needs: the async
    /// form of `Kfac::step`, with its errors.
    pub async fn step_async(
        &mut self,
        gpu: &Gpu,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let refresh = self.steps.is_multiple_of(self.config.inverse_update_period);
        let eigen = self.config.path == Path::Eigen;
        check_batch(gpu, &self.layers, batch, xs, dys)?;
        self.check_precondition(gpu, grads, outs)?;
        if eigen && !refresh && self.a.eigen.is_none() {
            return Err(Error::State(
                "the eigen path needs Kfac::refresh_eigen before preconditioning".into(),
            ));
        }
        let mut rec = Recorder::new(gpu);
        self.record_update_factors(&mut rec, batch, xs, dys)?;
        if refresh && eigen {
            rec.submit()?;
            self.refresh_eigen_async(gpu).await?;
            rec = Recorder::new(gpu);
        } else if refresh {
            self.record_refresh_inverses(&mut rec)?;
        }
        self.record_precondition(&mut rec, grads, outs)?;
        rec.submit()?;
        self.steps += 1;
        if refresh && !eigen {
            self.check_inverses_async(gpu).await?;
        }
        Ok(())
    }
}
