//! AdaHessian: `AdaHessian::record_step_lists` → [`ADAHESSIAN_STEP`] →
//! `shaders/diag/adahessian.wgsl`'s `adahessian_step`.

use super::state::{check_lens, diag_accessors, Moments, STATE_M, STATE_V};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::elementwise::{self, Elementwise};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::optimizer::Optimizer;
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// The step's parameters.
    pub(crate) struct StepUniform {
        n: u32, segment: u32, lr: f32, beta1: f32, beta2: f32, inv_bias1: f32,
        inv_bias2_pow: f32, eps: f32, weight_decay: f32, power: f32, _pad0: u32, _pad1: u32,
    }
}

crate::kernel::uniform_struct! {
    /// `segment_mean_abs`'s parameters.
    pub(crate) struct SegmentUniform { segments: u32, segment: u32, _pad0: u32, _pad1: u32 }
}

const STEP_SLOTS: &[Slot] = &[
    uniform::<StepUniform>(),
    Slot::Write("theta"),
    Slot::Read("grad"),
    Slot::Write("m"),
    Slot::Write("v"),
    Slot::Read("zhz"),
];

/// AdaHessian's fused step over vec4s, D elementwise.
pub(crate) static ADAHESSIAN_STEP: Kernel =
    Kernel::new(&shader::ADAHESSIAN, "adahessian_step", STEP_SLOTS);
/// The same with D from per-segment means.
static ADAHESSIAN_STEP_AVG: Kernel =
    Kernel::new(&shader::ADAHESSIAN, "adahessian_step_avg", STEP_SLOTS);
static ADAHESSIAN_STEP_TAIL: Kernel =
    Kernel::new(&shader::ADAHESSIAN, "adahessian_step_tail", STEP_SLOTS);
static SEGMENT_MEAN_ABS: Kernel = Kernel::new(
    &shader::ADAHESSIAN,
    "segment_mean_abs",
    &[
        uniform::<SegmentUniform>(),
        Slot::Read("zhz"),
        Slot::Write("means"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &ADAHESSIAN_STEP,
    &ADAHESSIAN_STEP_AVG,
    &ADAHESSIAN_STEP_TAIL,
    &SEGMENT_MEAN_ABS,
];

/// The step with D elementwise, body and tail.
pub(crate) const STEP: Elementwise = Elementwise {
    body: &ADAHESSIAN_STEP,
    tail: &ADAHESSIAN_STEP_TAIL,
};
const STEP_AVERAGED: Elementwise = Elementwise {
    body: &ADAHESSIAN_STEP_AVG,
    tail: &ADAHESSIAN_STEP_TAIL,
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

    /// Number of elements (saturating at `usize::MAX`; [`TensorSpec::segment`] refuses a
    /// shape whose product overflows).
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(usize::MAX)
    }

    fn checked_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
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
        match self.checked_len() {
            None => {
                return Err(shape_err(format!(
                    "the shape {:?} has more elements than usize holds",
                    self.shape
                )))
            }
            Some(0) => {
                return Err(shape_err(format!(
                    "the shape {:?} has no elements",
                    self.shape
                )))
            }
            Some(_) => {}
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
        if len == 0 {
            return Err(Error::Empty { argument: "len" });
        }
        Self::new_multi(gpu, &[TensorSpec::flat(len)], config)
    }

    /// An optimizer for several tensors of different shapes and averaging rules; each step
    /// updates all of them in one submission.
    pub fn new_multi(gpu: &Gpu, specs: &[TensorSpec], config: AdaHessianConfig) -> Result<Self> {
        config.validate()?;
        if specs.is_empty() {
            return Err(Error::Empty { argument: "specs" });
        }
        let segments = specs
            .iter()
            .map(TensorSpec::segment)
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = specs.iter().map(TensorSpec::len).collect();
        let means = lens
            .iter()
            .zip(&segments)
            .map(|(&len, &s)| (s > 1).then(|| GpuVec::zeros(gpu, len / s)).transpose())
            .collect::<Result<Vec<_>>>()?;
        check_lens(&lens)?;
        Ok(AdaHessian {
            config,
            segments,
            means,
            state: Moments::new(gpu, &lens, true)?,
        })
    }
}

impl Optimizer for AdaHessian {
    diag_accessors!(AdaHessianConfig);
    const NAME: &'static str = "AdaHessian";
    const INPUTS: &'static [&'static str] = &["grads", "zhz"];

    /// Per averaged tensor one segment-mean pass, then the fused update.
    fn record_step_lists(
        &mut self,
        rec: &mut Recorder,
        step: u64,
        params: &[BufView<'_>],
        inputs: &[Vec<BufView<'_>>],
    ) -> Result<()> {
        let gpu = rec.gpu();
        let params = self.state.check(gpu, "params", params)?;
        let grads = self.state.check(gpu, "grads", &inputs[0])?;
        let zhz = self.state.check(gpu, "zhz", &inputs[1])?;
        let c = self.config;
        let t = step as f64;
        let inv_bias1 = (1.0 / (1.0 - (c.beta1 as f64).powf(t))) as f32;
        let bias2 = 1.0 - (c.beta2 as f64).powf(t);
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
                ..Default::default()
            };
            let full = [
                params[i],
                grads[i],
                m.view().named(STATE_M),
                v.view().named(STATE_V),
            ];
            match &self.means[i] {
                None => {
                    let full = [full[0], full[1], full[2], full[3], zhz[i]];
                    elementwise::record(rec, STEP, m.len(), &full, &[], 1, uniform)?;
                }
                Some(means) => {
                    let means = means.view().named("segment means");
                    record_segment_means(rec, zhz[i], means, segment)?;
                    elementwise::record(
                        rec,
                        STEP_AVERAGED,
                        m.len(),
                        &full,
                        &[means],
                        segment,
                        uniform,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// means[s] = mean of |x| over segment s, chunked so each binding stays within the limit.
fn record_segment_means(
    rec: &mut Recorder,
    x: BufView<'_>,
    means: BufView<'_>,
    segment: usize,
) -> Result<()> {
    let chunk = rec.binding_chunk(64 * segment)?;
    let mut start = 0;
    while start < x.len() {
        let len = chunk.min(x.len() - start);
        let segments = len / segment;
        let uniform = SegmentUniform {
            segments: segments as u32,
            segment: segment as u32,
            ..Default::default()
        };
        let grid = rec.elementwise_grid(segments as u64)?;
        rec.dispatch(
            &SEGMENT_MEAN_ABS,
            &rec.wg(),
            &[
                Binding::uniform(&uniform),
                Binding::storage(x.sub(start, len)),
                Binding::storage(means.sub(start / segment, segments)),
            ],
            grid,
        )?;
        start += len;
    }
    Ok(())
}
