//! MKOR (Mozaffari et al., "MKOR: Momentum-Enabled Kronecker-Factor-Based Optimizer Using
//! Rank-1 Updates"): per layer, inverse Kronecker factors J_A and J_G refreshed by one
//! Sherman–Morrison rank-1 update each from the batch means ā (with the bias 1) and ḡ, after
//! the hard-coded 0.95/0.05 blend with I, and the step G⁻¹·∇W·A⁻¹ rescaled to the gradient's
//! norm. Nothing cubic: a refresh is O(n²) per factor. [`Mkor::record_refresh`] →
//! `REFRESH_UPDATE` and friends (`shaders/mkor/mkor.wgsl`); [`Mkor::record_step`] →
//! `linalg::record_gemm`, `STEP_NORMS`, `STEP_SCALE`.
//!
//! Stabiliser (as ../shared/ALGORITHMS.md states it): when a refresh leaves max|J_ij| > 2, the
//! next refresh of that factor first does J ← 0.9·J + 0.1·I. (The official code instead
//! replaces that refresh's rank-1 update by the 0.9/0.1 blend; from J = I in exact arithmetic
//! the flag never fires, so the two agree until rounding or a restored state trips it.)

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::kfac::Layer;
use crate::linalg::{check_binding, Batch};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// One factor's refresh (mkor.wgsl's `Factor`).
    pub(crate) struct FactorUniform {
        n: u32, offset: u32, vec_offset: u32, index: u32, batch: u32, bias: u32, _pad0: u32,
        _pad1: u32,
    }
}

crate::kernel::uniform_struct! {
    /// One layer's rescale (mkor.wgsl's `Step`).
    pub(crate) struct StepUniform { rows: u32, cols: u32, bias: u32, index: u32 }
}

/// The stabiliser's flag from the last refresh's max|J|.
pub(crate) static REFRESH_BEGIN: Kernel = Kernel::new(
    &shader::MKOR,
    "refresh_begin",
    &[
        uniform::<FactorUniform>(),
        Slot::Write("flags"),
        Slot::Write("maxima"),
    ],
);
/// The clamped batch means ā / ḡ.
pub(crate) static MEANS: Kernel = Kernel::new(
    &shader::MKOR,
    "means",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("samples"),
        Slot::Write("v"),
    ],
);
/// J_b·v and vᵀ·J_b.
pub(crate) static REFRESH_PRODUCTS: Kernel = Kernel::new(
    &shader::MKOR,
    "refresh_products",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("j"),
        Slot::Read("v"),
        Slot::Read("flags"),
        Slot::Write("jv"),
        Slot::Write("vj"),
    ],
);
/// 1 + vᵀ·J_b·v.
pub(crate) static REFRESH_DENOMINATOR: Kernel = Kernel::new(
    &shader::MKOR,
    "refresh_denominator",
    &[
        uniform::<FactorUniform>(),
        Slot::Read("v"),
        Slot::Read("jv"),
        Slot::Write("denominators"),
    ],
);
/// J ← J_b − (J_b·v)(vᵀ·J_b)/d, and max|J|.
pub(crate) static REFRESH_UPDATE: Kernel = Kernel::new(
    &shader::MKOR,
    "refresh_update",
    &[
        uniform::<FactorUniform>(),
        Slot::Write("j"),
        Slot::Read("jv"),
        Slot::Read("vj"),
        Slot::Read("flags"),
        Slot::Read("denominators"),
        Slot::Write("maxima"),
    ],
);
/// (‖g_W‖ + ‖g_b‖)/(‖v_W‖ + ‖v_b‖) per layer.
pub(crate) static STEP_NORMS: Kernel = Kernel::new(
    &shader::MKOR,
    "step_norms",
    &[
        uniform::<StepUniform>(),
        Slot::Read("grads"),
        Slot::Write("outs"),
        Slot::Write("ratios"),
    ],
);
/// v ← ratio·v (∇W where the ratio is NaN).
pub(crate) static STEP_SCALE: Kernel = Kernel::new(
    &shader::MKOR,
    "step_scale",
    &[
        uniform::<StepUniform>(),
        Slot::Read("grads"),
        Slot::Write("outs"),
        Slot::Read("ratios"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &REFRESH_BEGIN,
    &MEANS,
    &REFRESH_PRODUCTS,
    &REFRESH_DENOMINATOR,
    &REFRESH_UPDATE,
    &STEP_NORMS,
    &STEP_SCALE,
];

/// MKOR's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MkorConfig {
    /// Steps between factor refreshes in [`Mkor::step`] (MKOR's `inv_freq`: 10); ≥ 1.
    pub inverse_update_period: usize,
}

impl Default for MkorConfig {
    fn default() -> Self {
        MkorConfig {
            inverse_update_period: 10,
        }
    }
}

/// The packed inverse factors J (every layer's J_A, then every layer's J_G) and their vectors.
struct Factors {
    batch: Batch,
    j: GpuVec<f32>,
    /// ā / ḡ, then J_b·v and vᵀ·J_b, packed like the factors' sides.
    v: GpuVec<f32>,
    jv: GpuVec<f32>,
    vj: GpuVec<f32>,
    vec_offsets: Vec<usize>,
    flags: GpuVec<u32>,
    maxima: GpuVec<u32>,
    denominators: GpuVec<f32>,
}

/// MKOR state for a list of layers.
pub struct Mkor {
    layers: Vec<Layer>,
    config: MkorConfig,
    factors: Factors,
    scratch: GpuVec<f32>,
    ratios: GpuVec<f32>,
    steps: usize,
}

impl std::fmt::Debug for Mkor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mkor")
            .field("layers", &self.layers)
            .field("config", &self.config)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Mkor {
    /// State for `layers`, every inverse factor starting at I.
    ///
    /// Errors: no layers, a zero width, a zero refresh period, factors or gradients past the
    /// device limits ([`Error::TooLarge`] naming `layers`, checked before anything is
    /// allocated), or past host memory ([`Error::HostMemory`]).
    pub fn new(gpu: &Gpu, layers: &[Layer], config: MkorConfig) -> Result<Self> {
        let largest = crate::kfac::check_layers(gpu, layers)?;
        if config.inverse_update_period == 0 {
            return Err(Error::param("inverse_update_period", 0.0, "at least 1"));
        }
        // Factor i < L is layer i's J_A, factor L + i its J_G.
        let sizes: Vec<usize> = layers
            .iter()
            .map(Layer::cols)
            .chain(layers.iter().map(|l| l.out_dim))
            .collect();
        let batch = Batch::new(&sizes)?;
        check_binding(gpu, "layers", batch.len() as u64)?;
        let vec_offsets: Vec<usize> = sizes
            .iter()
            .scan(0, |acc, &n| {
                let at = *acc;
                *acc += n;
                Some(at)
            })
            .collect();
        // Each side ≤ its square, so the sum fits whenever the batch does.
        let vec_len: usize = sizes.iter().sum();
        let count = sizes.len();
        Ok(Mkor {
            factors: Factors {
                j: GpuVec::upload(gpu, &batch.identities()?)?,
                v: GpuVec::zeros(gpu, vec_len)?,
                jv: GpuVec::zeros(gpu, vec_len)?,
                vj: GpuVec::zeros(gpu, vec_len)?,
                vec_offsets,
                flags: GpuVec::zeros(gpu, count)?,
                maxima: GpuVec::zeros(gpu, count)?,
                denominators: GpuVec::zeros(gpu, count)?,
                batch,
            },
            scratch: GpuVec::zeros(gpu, largest)?,
            ratios: GpuVec::zeros(gpu, layers.len())?,
            layers: layers.to_vec(),
            config,
            steps: 0,
        })
    }

    /// The packed inverse factors (layer i's J_A is matrix i, its J_G matrix L + i) and their
    /// layout.
    pub fn inverse_factors(&self) -> (&GpuVec<f32>, &Batch) {
        (&self.factors.j, &self.factors.batch)
    }

    /// Restores the inverse factors (e.g. from a checkpoint), in [`Mkor::inverse_factors`]'s
    /// layout; a factor with max|J_ij| > 2 is stabilised at its next refresh. The write is
    /// queued (ordered before the next submission).
    ///
    /// Errors: `j` of the wrong length, a `gpu` of another device.
    pub fn load_inverse_factors(&mut self, gpu: &Gpu, j: &[f32]) -> Result<()> {
        if !self.factors.j.belongs_to(gpu) {
            return Err(Error::WrongDevice { argument: "gpu" });
        }
        if j.len() != self.factors.batch.len() {
            return Err(Error::LengthMismatch {
                argument: "j",
                expected: self.factors.batch.len(),
                actual: j.len(),
            });
        }
        let maxima: Vec<u32> = (0..self.factors.batch.sizes().len())
            .map(|i| {
                let n = self.factors.batch.sizes()[i];
                let at = self.factors.batch.offset(i);
                j[at..at + n * n]
                    .iter()
                    .map(|v| v.abs().to_bits())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.factors.j.write(j)?;
        self.factors.maxima.write(&maxima)
    }

    /// Records one refresh of every layer's J_A and J_G from a batch of `batch` samples:
    /// layer i's input activations `xs[i]` (`batch`×in) and the per-sample gradients of the
    /// loss with respect to its output `dys[i]` (`batch`×out, MKOR's B·grad_out). Each sample's
    /// entries are clamped to ±100 before the batch mean (MKOR's hooks). The inputs are only
    /// read: they may share one buffer, overlapping or not.
    ///
    /// Errors: tensor counts ([`Error::CountMismatch`]), lengths, a zero batch.
    pub fn record_refresh(
        &mut self,
        rec: &mut Recorder,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (xs, dys) = crate::kfac::check_batch(gpu, &self.layers, batch, xs, dys)?;
        let count = self.layers.len();
        let f = &self.factors;
        let wg = rec.wg();
        let (j, v, jv, vj) = (
            f.j.view().named("j"),
            f.v.view().named("v"),
            f.jv.view().named("jv"),
            f.vj.view().named("vj"),
        );
        let (flags, maxima, denominators) = (
            f.flags.view().named("flags"),
            f.maxima.view().named("maxima"),
            f.denominators.view().named("denominators"),
        );
        for (index, &n) in f.batch.sizes().iter().enumerate() {
            let layer = &self.layers[index % count];
            let (samples, bias) = match index < count {
                true => (xs[index], layer.bias),
                false => (dys[index - count], false),
            };
            let u = FactorUniform {
                n: n as u32,
                offset: f.batch.offset(index) as u32,
                vec_offset: f.vec_offsets[index] as u32,
                index: index as u32,
                batch: batch as u32,
                bias: bias as u32,
                ..Default::default()
            };
            let u = Binding::uniform(&u);
            let st = Binding::storage;
            rec.dispatch(&REFRESH_BEGIN, &[], &[u, st(flags), st(maxima)], [1, 1, 1])?;
            let vector_grid = rec.elementwise_grid(n as u64)?;
            rec.dispatch(&MEANS, &wg, &[u, st(samples), st(v)], vector_grid)?;
            rec.dispatch(
                &REFRESH_PRODUCTS,
                &wg,
                &[u, st(j), st(v), st(flags), st(jv), st(vj)],
                vector_grid,
            )?;
            rec.dispatch(
                &REFRESH_DENOMINATOR,
                &wg,
                &[u, st(v), st(jv), st(denominators)],
                [1, 1, 1],
            )?;
            let grid = rec.elementwise_grid((n * n) as u64)?;
            rec.dispatch(
                &REFRESH_UPDATE,
                &wg,
                &[
                    u,
                    st(j),
                    st(jv),
                    st(vj),
                    st(flags),
                    st(denominators),
                    st(maxima),
                ],
                grid,
            )?;
        }
        Ok(())
    }

    /// The gradients and outputs of a step, checked: no overlap at all.
    fn check_step<'a>(
        &self,
        gpu: &Gpu,
        grads: &[BufView<'a>],
        outs: &[BufView<'a>],
    ) -> Result<(Vec<BufView<'a>>, Vec<BufView<'a>>)> {
        let why = "the rescale reads ∇W after the output is written, so MKOR has no in-place \
                   step: pass outputs that overlap no gradient";
        crate::kfac::check_grads_outs(gpu, &self.layers, grads, outs, false, why)
    }

    /// Records out_i = J_G·∇W_i·J_A rescaled by (‖g_W‖ + ‖g_b‖)/(‖v_W‖ + ‖v_b‖) (∇W_i itself
    /// where that ratio is NaN, as MKOR skips the layer).
    ///
    /// Gradients and outputs may be disjoint views of one buffer. **No in-place form**: the
    /// rescale reads ∇W_i after out_i is written, so an output overlapping any gradient (its
    /// own included) or another output is [`Error::Overlap`] naming `outs` and `grads`.
    ///
    /// Errors: tensor counts ([`Error::CountMismatch`]), lengths, the overlaps; all checked
    /// before anything is recorded.
    pub fn record_step(
        &self,
        rec: &mut Recorder,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let (grads, outs) = self.check_step(rec.gpu(), grads, outs)?;
        let count = self.layers.len();
        let f = &self.factors;
        let j = f.j.view().named("j");
        let ratios = self.ratios.view().named("ratios");
        for (i, l) in self.layers.iter().enumerate() {
            let (o, c) = (l.out_dim, l.cols());
            crate::kfac::record_two_sided(
                rec,
                l,
                (j, f.batch.offset(count + i), false),
                grads[i],
                (j, f.batch.offset(i), false),
                &self.scratch,
                outs[i],
            )?;
            let u = StepUniform {
                rows: o as u32,
                cols: c as u32,
                bias: l.bias as u32,
                index: i as u32,
            };
            let bindings = [
                Binding::uniform(&u),
                Binding::storage(grads[i]),
                Binding::storage(outs[i]),
                Binding::storage(ratios),
            ];
            rec.dispatch(&STEP_NORMS, &rec.wg(), &bindings, [1, 1, 1])?;
            let grid = rec.elementwise_grid((o * c) as u64)?;
            rec.dispatch(&STEP_SCALE, &rec.wg(), &bindings, grid)?;
        }
        Ok(())
    }

    /// One MKOR step in one submission: refresh the inverse factors on the first step and every
    /// `inverse_update_period` steps after, then the rescaled preconditioned gradients.
    ///
    /// All four lists may be views of one buffer; `xs` and `dys` are read before any output
    /// is written, and `outs` follow [`Mkor::record_step`]'s rules (no in-place form).
    /// Everything is checked before anything is recorded.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let refresh = self.steps.is_multiple_of(self.config.inverse_update_period);
        if refresh {
            crate::kfac::check_batch(gpu, &self.layers, batch, xs, dys)?;
        }
        self.check_step(gpu, grads, outs)?;
        let mut rec = Recorder::new(gpu);
        if refresh {
            self.record_refresh(&mut rec, batch, xs, dys)?;
        }
        self.record_step(&mut rec, grads, outs)?;
        rec.submit()?;
        self.steps += 1;
        Ok(())
    }
}
