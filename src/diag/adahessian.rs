//! AdaHessian: `AdaHessian::record_step` → `kernel!("diag/adahessian.wgsl", "adahessian_step")`.

use bytemuck::{Pod, Zeroable};

use super::state::{checkpoint_methods, config_methods, step_methods, DiagState, Moments};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::elementwise::{self, Elementwise};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};
use crate::tensors::Tensors;

const STEP: Elementwise = Elementwise {
    body: kernel!("diag/adahessian.wgsl", "adahessian_step"),
    tail: kernel!("diag/adahessian.wgsl", "adahessian_step_tail"),
};
const STEP_AVERAGED: Elementwise = Elementwise {
    body: kernel!("diag/adahessian.wgsl", "adahessian_step_avg"),
    tail: kernel!("diag/adahessian.wgsl", "adahessian_step_tail"),
};

/// AdaHessian hyper-parameters; defaults are the official `optim_adahessian.py`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaHessianConfig {
    /// Learning rate (0.15).
    pub lr: f32,
    /// EMA coefficient of the gradient (0.9).
    pub beta1: f32,
    /// EMA coefficient of D² (0.999).
    pub beta2: f32,
    /// Added to the denominator (1e-4).
    pub eps: f32,
    /// Weight decay added to the update, lr·wd·θ (0).
    pub weight_decay: f32,
    /// Hessian power k in (√v)^k (1; torch-optimizer defaults to 0.5).
    pub hessian_power: f32,
    /// Check gradients and z⊙Hz for NaN/inf before each convenience `step` (costs a readback).
    pub check_finite: bool,
}

impl Default for AdaHessianConfig {
    fn default() -> Self {
        AdaHessianConfig {
            lr: 0.15,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-4,
            weight_decay: 0.0,
            hessian_power: 1.0,
            check_finite: false,
        }
    }
}

impl AdaHessianConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        check::positive("lr", self.lr)?;
        check::beta("beta1", self.beta1)?;
        check::beta("beta2", self.beta2)?;
        check::positive("eps", self.eps)?;
        check::non_negative("weight_decay", self.weight_decay)?;
        if !(self.hessian_power > 0.0 && self.hessian_power <= 1.0) {
            return Err(Error::param(
                "hessian_power",
                self.hessian_power as f64,
                "in (0, 1]",
            ));
        }
        Ok(())
    }
}

/// How |z⊙Hz| is averaged before it enters v (AdaHessian's spatial averaging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Averaging {
    /// Use D elementwise (1-D and 2-D tensors in the image code).
    None,
    /// Mean over each row of a 2-D weight (the NLP code's block size −1).
    PerRow,
    /// Mean over contiguous blocks of this many elements (the NLP code's `block_length`).
    Blocks(usize),
    /// Mean over each kh×kw window of a 4-D conv weight (out, in, kh, kw).
    ConvKernel,
}

/// A parameter tensor's shape and averaging rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Averaging rule.
    pub averaging: Averaging,
}

impl TensorSpec {
    /// A tensor with an explicit rule.
    pub fn new(shape: &[usize], averaging: Averaging) -> Self {
        TensorSpec {
            shape: shape.to_vec(),
            averaging,
        }
    }

    /// The image code's rule: kh×kw windows for 4-D weights, elementwise otherwise.
    pub fn image(shape: &[usize]) -> Self {
        let averaging = if shape.len() == 4 {
            Averaging::ConvKernel
        } else {
            Averaging::None
        };
        Self::new(shape, averaging)
    }

    /// A flat tensor of `len` elements, no averaging.
    pub fn flat(len: usize) -> Self {
        Self::new(&[len], Averaging::None)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the shape has a zero dimension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the contiguous segments D is averaged over (1 = none).
    pub fn segment(&self) -> Result<usize> {
        let shape_err = |message: String| Error::Shape {
            argument: "spec",
            message,
        };
        if self.is_empty() {
            return Err(Error::Empty { argument: "spec" });
        }
        let segment = match (self.averaging, self.shape.as_slice()) {
            (Averaging::None, _) => 1,
            (Averaging::PerRow, [_, cols]) => *cols,
            (Averaging::PerRow, s) => {
                return Err(shape_err(format!("PerRow needs a 2-D shape, got {s:?}")))
            }
            (Averaging::ConvKernel, [_, _, kh, kw]) => kh * kw,
            (Averaging::ConvKernel, s) => {
                return Err(shape_err(format!(
                    "ConvKernel needs a 4-D shape, got {s:?}"
                )))
            }
            (Averaging::Blocks(b), _) => {
                if b == 0 || !self.len().is_multiple_of(b) {
                    return Err(shape_err(format!(
                        "block_length {b} must be positive and divide {} elements",
                        self.len()
                    )));
                }
                b
            }
        };
        Ok(segment)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepUniform {
    n: u32,
    segment: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    inv_bias1: f32,
    inv_bias2_pow: f32,
    eps: f32,
    weight_decay: f32,
    power: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SegmentUniform {
    segments: u32,
    segment: u32,
    _pad: [u32; 2],
}

/// AdaHessian (Yao et al. 2021), as `optim_adahessian.py` runs it. Each step takes the
/// gradient and z⊙Hz for a Rademacher probe z (see [`crate::rng::rademacher`]); D = |z⊙Hz|,
/// averaged per [`TensorSpec`]; m and v are bias-corrected.
#[derive(Debug)]
pub struct AdaHessian {
    config: AdaHessianConfig,
    segments: Vec<usize>,
    /// Per-segment means of |z⊙Hz| for averaged tensors (None where segment = 1).
    means: Vec<Option<GpuVec<f32>>>,
    state: Moments,
}

impl AdaHessian {
    /// An optimizer for one flat tensor of `len` parameters (no averaging).
    pub fn new(gpu: &Gpu, len: usize, config: AdaHessianConfig) -> Result<Self> {
        Self::new_multi(gpu, &[TensorSpec::flat(len)], config)
    }

    /// An optimizer for several tensors of different shapes and averaging rules; each step
    /// updates all of them in one submission.
    pub fn new_multi(gpu: &Gpu, specs: &[TensorSpec], config: AdaHessianConfig) -> Result<Self> {
        config.validate()?;
        let segments = specs
            .iter()
            .map(TensorSpec::segment)
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = specs.iter().map(TensorSpec::len).collect();
        let means = lens
            .iter()
            .zip(&segments)
            .map(|(&len, &s)| (s > 1).then(|| gpu.zeros::<f32>(len / s)).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(AdaHessian {
            config,
            segments,
            means,
            state: Moments::new(gpu, &lens, true)?,
        })
    }

    step_methods!(AdaHessianConfig, grads, zhz);

    /// Records one step of every tensor into `rec`: per averaged tensor one segment-mean pass,
    /// then the fused update.
    pub fn record<'a>(
        &mut self,
        rec: &mut Recorder,
        params: impl Tensors<'a>,
        grads: impl Tensors<'a>,
        zhz: impl Tensors<'a>,
    ) -> Result<()> {
        let (params, grads, zhz) = (params.views(), grads.views(), zhz.views());
        let gpu = rec.gpu();
        self.state.check(gpu, "params", &params)?;
        self.state.check(gpu, "grads", &grads)?;
        self.state.check(gpu, "zhz", &zhz)?;
        let c = self.config;
        let t = self.state.step + 1;
        let inv_bias1 = (1.0 / (1.0 - (c.beta1 as f64).powf(t as f64))) as f32;
        let bias2 = 1.0 - (c.beta2 as f64).powf(t as f64);
        let inv_bias2_pow = (1.0 / bias2.sqrt().powf(c.hessian_power as f64)) as f32;
        for i in 0..params.len() {
            let (m, v) = (&self.state.m[i], &self.state.h[i]);
            let segment = self.segments[i];
            let uniform = |n| StepUniform {
                n,
                segment: segment as u32,
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                inv_bias1,
                inv_bias2_pow,
                eps: c.eps,
                weight_decay: c.weight_decay,
                power: c.hessian_power,
                _pad: [0; 2],
            };
            let full = [params[i], grads[i], m.view(), v.view()];
            match &self.means[i] {
                None => {
                    let full = [full[0], full[1], full[2], full[3], zhz[i]];
                    elementwise::record(rec, STEP, m.len(), &full, &[], 1, uniform)?;
                }
                Some(means) => {
                    record_segment_means(rec, zhz[i], means, segment)?;
                    let seg = [means.view()];
                    elementwise::record(
                        rec,
                        STEP_AVERAGED,
                        m.len(),
                        &full,
                        &seg,
                        segment,
                        uniform,
                    )?;
                }
            }
        }
        self.state.step = t;
        Ok(())
    }

    checkpoint_methods!();
}

/// means[s] = mean of |x| over segment s, chunked so each binding stays within the limit.
fn record_segment_means(
    rec: &mut Recorder,
    x: BufView<'_>,
    means: &GpuVec<f32>,
    segment: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let chunk = gpu.binding_chunk(64 * segment)?;
    let mut start = 0;
    while start < x.len() {
        let len = chunk.min(x.len() - start);
        let segments = len / segment;
        let uniform = SegmentUniform {
            segments: segments as u32,
            segment: segment as u32,
            _pad: [0; 2],
        };
        rec.dispatch(
            kernel!("diag/adahessian.wgsl", "segment_mean_abs"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&uniform)),
                Binding::Storage(x.sub(start, len), None),
                Binding::Storage(means.view().sub(start / segment, segments), None),
            ],
            gpu.elementwise_grid(segments as u64)?,
        )?;
        start += len;
    }
    Ok(())
}
