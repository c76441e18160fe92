//! MKOR (Mozaffari et al., "MKOR: Momentum-Enabled Kronecker-Factor-Based Optimizer Using
//! Rank-1 Updates"): per layer, inverse Kronecker factors J_A and J_G refreshed by one
//! Sherman–Morrison rank-1 update each from the batch means ā (with the bias 1) and ḡ, after
//! the hard-coded 0.95/0.05 blend with I, and the step G⁻¹·∇W·A⁻¹ rescaled to the gradient's
//! norm. Nothing cubic: a refresh is O(n²) per factor. [`Mkor::record_refresh`] →
//! `kernel!("mkor/mkor.wgsl", "refresh_update")` and friends.
//!
//! Stabiliser (as ../shared/ALGORITHMS.md states it): when a refresh leaves max|J_ij| > 2, the
//! next refresh of that factor first does J ← 0.9·J + 0.1·I. (The official code instead
//! replaces that refresh's rank-1 update by the 0.9/0.1 blend; from J = I in exact arithmetic
//! the flag never fires, so the two agree until rounding or a restored state trips it.)

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::kfac::Layer;
use crate::linalg::Batch;
use crate::record::{Binding, Recorder};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct FactorUniform {
    n: u32,
    offset: u32,
    vec_offset: u32,
    index: u32,
    batch: u32,
    bias: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepUniform {
    rows: u32,
    cols: u32,
    bias: u32,
    index: u32,
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
    /// Errors: no layers, a zero width, a zero refresh period, factors past the device limits.
    pub fn new(gpu: &Gpu, layers: &[Layer], config: MkorConfig) -> Result<Self> {
        crate::kfac::check_layers(layers)?;
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
        let vec_offsets: Vec<usize> = sizes
            .iter()
            .scan(0, |acc, &n| {
                let at = *acc;
                *acc += n;
                Some(at)
            })
            .collect();
        let vec_len: usize = sizes.iter().sum();
        let largest = layers
            .iter()
            .map(|l| l.out_dim * l.cols())
            .max()
            .unwrap_or(1);
        let count = sizes.len();
        Ok(Mkor {
            factors: Factors {
                j: gpu.upload(&batch.identities())?,
                v: gpu.zeros(vec_len)?,
                jv: gpu.zeros(vec_len)?,
                vj: gpu.zeros(vec_len)?,
                vec_offsets,
                flags: gpu.zeros(count)?,
                maxima: gpu.zeros(count)?,
                denominators: gpu.zeros(count)?,
                batch,
            },
            scratch: gpu.zeros(largest)?,
            ratios: gpu.zeros(layers.len())?,
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
    /// layout; a factor with max|J_ij| > 2 is stabilised at its next refresh. Blocking write.
    pub fn load_inverse_factors(&mut self, gpu: &Gpu, j: &[f32]) -> Result<()> {
        crate::check::same_count("j", self.factors.batch.len(), j.len())?;
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
        gpu.write(&self.factors.j, j)?;
        gpu.write(&self.factors.maxima, &maxima)
    }

    /// Records one refresh of every layer's J_A and J_G from a batch of `batch` samples:
    /// layer i's input activations `xs[i]` (`batch`×in) and the per-sample gradients of the
    /// loss with respect to its output `dys[i]` (`batch`×out, MKOR's B·grad_out). Each sample's
    /// entries are clamped to ±100 before the batch mean (MKOR's hooks).
    pub fn record_refresh(
        &mut self,
        rec: &mut Recorder,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        crate::kfac::check_batch(gpu, &self.layers, batch, xs, dys)?;
        let count = self.layers.len();
        let f = &self.factors;
        let [wg] = gpu.wg_constants();
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
                _pad: [0; 2],
            };
            let u = bytemuck::bytes_of(&u);
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "refresh_begin"),
                &[],
                &[
                    Binding::Uniform(u),
                    Binding::Storage(f.flags.view(), None),
                    Binding::Storage(f.maxima.view(), None),
                ],
                [1, 1, 1],
            )?;
            let vector_grid = gpu.elementwise_grid(n as u64)?;
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "means"),
                &[wg],
                &[
                    Binding::Uniform(u),
                    Binding::Storage(samples, None),
                    Binding::Storage(f.v.view(), None),
                ],
                vector_grid,
            )?;
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "refresh_products"),
                &[wg],
                &[
                    Binding::Uniform(u),
                    Binding::Storage(f.j.view(), None),
                    Binding::Storage(f.v.view(), None),
                    Binding::Storage(f.flags.view(), None),
                    Binding::Storage(f.jv.view(), None),
                    Binding::Storage(f.vj.view(), None),
                ],
                vector_grid,
            )?;
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "refresh_denominator"),
                &[wg],
                &[
                    Binding::Uniform(u),
                    Binding::Storage(f.v.view(), None),
                    Binding::Storage(f.jv.view(), None),
                    Binding::Storage(f.denominators.view(), None),
                ],
                [1, 1, 1],
            )?;
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "refresh_update"),
                &[wg],
                &[
                    Binding::Uniform(u),
                    Binding::Storage(f.j.view(), None),
                    Binding::Storage(f.jv.view(), None),
                    Binding::Storage(f.vj.view(), None),
                    Binding::Storage(f.flags.view(), None),
                    Binding::Storage(f.denominators.view(), None),
                    Binding::Storage(f.maxima.view(), None),
                ],
                gpu.elementwise_grid((n * n) as u64)?,
            )?;
        }
        Ok(())
    }

    /// Records out_i = J_G·∇W_i·J_A rescaled by (‖g_W‖ + ‖g_b‖)/(‖v_W‖ + ‖v_b‖) (∇W_i itself
    /// where that ratio is NaN, as MKOR skips the layer); `outs` may not alias `grads`.
    pub fn record_step(
        &self,
        rec: &mut Recorder,
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        let count = self.layers.len();
        crate::check::same_count("grads", count, grads.len())?;
        crate::check::same_count("outs", count, outs.len())?;
        let f = &self.factors;
        for (i, l) in self.layers.iter().enumerate() {
            let (o, c) = (l.out_dim, l.cols());
            crate::kfac::record_two_sided(
                rec,
                l,
                (f.j.view(), f.batch.offset(count + i), false),
                grads[i],
                (f.j.view(), f.batch.offset(i), false),
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
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(grads[i], None),
                Binding::Storage(outs[i], None),
                Binding::Storage(self.ratios.view(), None),
            ];
            let [wg] = gpu.wg_constants();
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "step_norms"),
                &[wg],
                &bindings,
                [1, 1, 1],
            )?;
            rec.dispatch(
                kernel!("mkor/mkor.wgsl", "step_scale"),
                &[wg],
                &bindings,
                gpu.elementwise_grid((o * c) as u64)?,
            )?;
        }
        Ok(())
    }

    /// One MKOR step in one submission: refresh the inverse factors on the first step and every
    /// `inverse_update_period` steps after, then the rescaled preconditioned gradients.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        batch: usize,
        xs: &[BufView<'_>],
        dys: &[BufView<'_>],
        grads: &[BufView<'_>],
        outs: &[BufView<'_>],
    ) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        if self.steps.is_multiple_of(self.config.inverse_update_period) {
            self.record_refresh(&mut rec, batch, xs, dys)?;
        }
        self.record_step(&mut rec, grads, outs)?;
        rec.submit()?;
        self.steps += 1;
        Ok(())
    }
}
