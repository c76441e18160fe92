//! K-FAC: Kronecker-factored curvature for linear layers (Martens & Grosse), with both
//! running-average conventions (KAISA's and kfac-jax's), kfac-jax's π-corrected damping or
//! KAISA's Tikhonov damping, batched inversion and the inverse-path preconditioned gradient
//! G′⁻¹·∇W·A′⁻¹ with KAISA's KL clip. [`Kfac::record_update_factors`] → `linalg::record_gemm`;
//! [`Kfac::record_refresh_inverses`] → `kernel!("kfac/factors.wgsl", "damp")` and
//! `linalg::record_spd_inverse`.
//!
//! Layout (kfac-pytorch's): a layer y = W·x (+ b) has ∇W row-major `out`×`cols`, `cols` =
//! in + 1 with a bias (its gradient the last column); A is `cols`², G is `out`².

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::linalg::{record_gemm, record_spd_inverse, Batch, CholeskyWorkspace, Eigenpairs, Gemm};
use crate::record::{Binding, Recorder};

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

/// A non-empty list of layers with non-zero widths (shared by K-FAC and MKOR).
pub(crate) fn check_layers(layers: &[Layer]) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::Empty { argument: "layers" });
    }
    for l in layers {
        if l.in_dim == 0 {
            return Err(Error::Empty { argument: "in_dim" });
        }
        if l.out_dim == 0 {
            return Err(Error::Empty {
                argument: "out_dim",
            });
        }
    }
    Ok(())
}

/// Checks a batch's per-layer activations (`batch`×in) and output gradients (`batch`×out).
pub(crate) fn check_batch(
    gpu: &Gpu,
    layers: &[Layer],
    batch: usize,
    xs: &[BufView<'_>],
    dys: &[BufView<'_>],
) -> Result<()> {
    if batch == 0 {
        return Err(Error::Empty { argument: "batch" });
    }
    crate::check::same_count("xs", layers.len(), xs.len())?;
    crate::check::same_count("dys", layers.len(), dys.len())?;
    for (l, (x, dy)) in layers.iter().zip(xs.iter().zip(dys)) {
        x.check(gpu, "xs", batch * l.in_dim)?;
        dy.check(gpu, "dys", batch * l.out_dim)?;
    }
    Ok(())
}

/// A square factor inside a packed batch: its view, its first element, and whether to use its
/// transpose.
pub(crate) type FactorRef<'a> = (BufView<'a>, usize, bool);

/// Records out = op(L)·∇W·op(R) for one layer: L (out×out) and R (cols×cols) square factors
/// of packed batches, op the transpose where asked, through `scratch` (≥ out·cols). Shared by
/// K-FAC's G′⁻¹·∇W·A′⁻¹ and both halves of its eigen path, and MKOR's J_G·∇W·J_A.
pub(crate) fn record_two_sided(
    rec: &mut Recorder,
    layer: &Layer,
    left: FactorRef<'_>,
    grad: BufView<'_>,
    right: FactorRef<'_>,
    scratch: &GpuVec<f32>,
    out: BufView<'_>,
) -> Result<()> {
    let gpu = rec.gpu();
    let (o, c) = (layer.out_dim, layer.cols());
    grad.check(gpu, "grads", o * c)?;
    out.check(gpu, "outs", o * c)?;
    let tmp = BufView::new(scratch.buffer(), 0, o * c);
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DivideUniform {
    rows: u32,
    cols: u32,
    g_offset: u32,
    a_offset: u32,
    sg: f32,
    sa: f32,
    mu: f32,
    gamma: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct FactorUniform {
    n: u32,
    offset: u32,
    slot: u32,
    other: u32,
    pi: u32,
    mu: f32,
    _pad: [u32; 2],
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
    fn new(gpu: &Gpu, sizes: &[usize], start_at_identity: bool) -> Result<Self> {
        let batch = Batch::new(sizes)?;
        Ok(Side {
            running: match start_at_identity {
                true => gpu.upload(&batch.identities())?,
                false => gpu.zeros(batch.len())?,
            },
            damped: gpu.zeros(batch.len())?,
            inverse: gpu.zeros(batch.len())?,
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
    /// zero inverse-update period, factors past the device limits.
    pub fn new(gpu: &Gpu, layers: &[Layer], config: KfacConfig) -> Result<Self> {
        check_layers(layers)?;
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
        let largest = layers
            .iter()
            .map(|l| l.out_dim * l.cols())
            .max()
            .unwrap_or(1);
        Ok(Kfac {
            a: Side::new(gpu, &a_sizes, kaisa)?,
            g: Side::new(gpu, &g_sizes, kaisa)?,
            means: gpu.zeros(2 * layers.len())?,
            clip: gpu.zeros(layers.len() + 1)?,
            with_ones: None,
            scratch: gpu.zeros(largest)?,
            scratch2: gpu.zeros(largest)?,
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
    pub fn record_update_factors(
        &mut self,
        rec: &mut Recorder,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        check_batch(gpu, &self.layers, batch, xs, dys)?;
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
            .map(|l| batch * l.cols())
            .max();
        if let Some(len) = ones_len {
            if self.with_ones.as_ref().is_none_or(|v| v.len() < len) {
                self.with_ones = Some(gpu.zeros(len)?);
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
                    rec.dispatch(
                        kernel!("kfac/factors.wgsl", "with_ones"),
                        &gpu.wg_constants(),
                        &[
                            Binding::Uniform(bytemuck::bytes_of(&u)),
                            Binding::Storage(xs[i], None),
                            Binding::Storage(ones.view(), None),
                        ],
                        gpu.elementwise_grid((batch * cols) as u64)?,
                    )?;
                    ones.view()
                }
                _ => xs[i],
            };
            let x_len = batch * cols;
            let x = BufView::new(x.buffer(), x.byte_offset(), x_len);
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
                record_gemm(rec, &shape, operand, operand, side.running.view())?;
            }
        }
        self.weight = weight;
        Ok(())
    }

    /// Records the damped inverses of every layer's running factors (see [`Damping`]).
    /// A factor that is not SPD after damping (NaN statistics) is reported by
    /// [`Kfac::check_inverses`] after the submission.
    pub fn record_refresh_inverses(&self, rec: &mut Recorder) -> Result<()> {
        let gpu = rec.gpu();
        let (pi, mu) = match self.config.damping {
            Damping::Pi { lambda } => (1, lambda.sqrt()),
            Damping::Tikhonov { gamma } => (0, gamma),
        };
        let [wg] = gpu.wg_constants();
        let uniform = |side: &Side, i: usize, n: usize, slot: usize| FactorUniform {
            n: n as u32,
            offset: side.batch.offset(i) as u32,
            slot: slot as u32,
            other: (slot ^ 1) as u32,
            pi,
            mu,
            _pad: [0; 2],
        };
        // Every mean diagonal first: each factor's scale needs its partner's.
        let factors =
            |i: usize, l: &Layer| [(&self.a, l.cols(), 2 * i), (&self.g, l.out_dim, 2 * i + 1)];
        if pi == 1 {
            for (i, l) in self.layers.iter().enumerate() {
                for (side, n, slot) in factors(i, l) {
                    let u = uniform(side, i, n, slot);
                    rec.dispatch(
                        kernel!("kfac/factors.wgsl", "trace_mean"),
                        &[wg],
                        &[
                            Binding::Uniform(bytemuck::bytes_of(&u)),
                            Binding::Storage(side.running.view(), None),
                            Binding::Storage(self.means.view(), None),
                        ],
                        [1, 1, 1],
                    )?;
                }
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            for (side, n, slot) in factors(i, l) {
                let u = uniform(side, i, n, slot);
                rec.dispatch(
                    kernel!("kfac/factors.wgsl", "damp"),
                    &[wg],
                    &[
                        Binding::Uniform(bytemuck::bytes_of(&u)),
                        Binding::Storage(side.running.view(), None),
                        Binding::Storage(self.means.view(), None),
                        Binding::Storage(side.damped.view(), None),
                    ],
                    gpu.elementwise_grid((n * n) as u64)?,
                )?;
            }
        }
        for side in [&self.a, &self.g] {
            record_spd_inverse(
                rec,
                &side.batch,
                side.damped.view(),
                side.inverse.view(),
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

    /// Records out_i = G′_i⁻¹·∇W_i·A′_i⁻¹ for every layer from the last refreshed inverses;
    /// `out` may not alias `grads`.
    pub fn record_precondition(
        &self,
        rec: &mut Recorder,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        crate::check::same_count("grads", self.layers.len(), grads.len())?;
        crate::check::same_count("outs", self.layers.len(), outs.len())?;
        if self.config.path == Path::Eigen {
            return self.record_eigen_precondition(rec, grads, outs);
        }
        for (i, l) in self.layers.iter().enumerate() {
            record_two_sided(
                rec,
                l,
                (self.g.inverse.view(), self.g.batch.offset(i), false),
                grads[i],
                (self.a.inverse.view(), self.a.batch.offset(i), false),
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
        let gpu = rec.gpu();
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
            let rotated = BufView::new(self.scratch2.buffer(), 0, o * c);
            let (qg, qa) = (eg.vectors.view(), ea.vectors.view());
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
            rec.dispatch(
                kernel!("kfac/factors.wgsl", "eigen_divide"),
                &gpu.wg_constants(),
                &[
                    Binding::Uniform(bytemuck::bytes_of(&u)),
                    Binding::Storage(eg.values_gpu.view(), None),
                    Binding::Storage(ea.values_gpu.view(), None),
                    Binding::Storage(rotated, None),
                ],
                gpu.elementwise_grid((o * c) as u64)?,
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
        crate::check::same_count("grads", count, grads.len())?;
        crate::check::same_count("outs", count, outs.len())?;
        for (l, (g, o)) in self.layers.iter().zip(grads.iter().zip(outs)) {
            g.check(gpu, "grads", l.out_dim * l.cols())?;
            o.check(gpu, "outs", l.out_dim * l.cols())?;
        }
        for (i, (g, o)) in grads.iter().zip(outs).enumerate() {
            crate::reduce::record(
                rec,
                crate::reduce::Reduction::Dot,
                *o,
                Some(*g),
                self.clip.view(),
                i,
            )?;
        }
        let u = FactorUniform {
            n: count as u32,
            slot: count as u32,
            other: kl_clip.to_bits(),
            mu: lr * lr,
            ..Default::default()
        };
        rec.dispatch(
            kernel!("kfac/factors.wgsl", "kl_clip"),
            &[],
            &[
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(self.clip.view(), None),
            ],
            [1, 1, 1],
        )?;
        for o in outs {
            let u = FactorUniform {
                n: o.len() as u32,
                ..u
            };
            rec.dispatch(
                kernel!("kfac/factors.wgsl", "scale"),
                &gpu.wg_constants(),
                &[
                    Binding::Uniform(bytemuck::bytes_of(&u)),
                    Binding::Storage(self.clip.view(), None),
                    Binding::Storage(*o, None),
                ],
                gpu.elementwise_grid(o.len() as u64)?,
            )?;
        }
        Ok(())
    }

    /// One K-FAC step in one submission: update the factors, refresh the inverses on the
    /// first step and every `inverse_update_period` steps after, precondition every layer's
    /// gradient into `outs`. Blocking only when it refreshed (to check the factorisations).
    /// The native wrapper of [`Kfac::step_async`].
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
