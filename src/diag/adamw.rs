//! AdamW, the first-order baseline: `AdamW::record_step_lists` → [`ADAMW_STEP`] →
//! `shaders/diag/adamw.wgsl`'s `adamw_step`.

use super::state::{diag_accessors, record_fused_step, Moments, STATE_V};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::elementwise::Elementwise;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::optimizer::Optimizer;
use crate::record::Recorder;
use crate::shader;

crate::kernel::uniform_struct! {
    /// The step's parameters.
    pub(crate) struct AdamWUniform {
        n: u32, decay: f32, beta1: f32, beta2: f32, step_size: f32, bc2_sqrt: f32, eps: f32,
        _pad: u32,
    }
}

const SLOTS: &[Slot] = &[
    uniform::<AdamWUniform>(),
    Slot::Write("theta"),
    Slot::Read("grad"),
    Slot::Write("m"),
    Slot::Write("v"),
];

/// AdamW's fused step over vec4s.
pub(crate) static ADAMW_STEP: Kernel = Kernel::new(&shader::ADAMW, "adamw_step", SLOTS);
static ADAMW_STEP_TAIL: Kernel = Kernel::new(&shader::ADAMW, "adamw_step_tail", SLOTS);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&ADAMW_STEP, &ADAMW_STEP_TAIL];

/// The step, body and tail.
pub(crate) const STEP: Elementwise = Elementwise {
    body: &ADAMW_STEP,
    tail: &ADAMW_STEP_TAIL,
};

/// AdamW hyper-parameters; defaults are `torch.optim.AdamW`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (1e-3).
    pub lr: f32,
    /// EMA coefficient of the gradient, PyTorch's `betas[0]` (0.9).
    pub beta1: f32,
    /// EMA coefficient of the squared gradient, `betas[1]` (0.999).
    pub beta2: f32,
    /// Added to the bias-corrected √v (1e-8); 0 is allowed, as in PyTorch.
    pub eps: f32,
    /// Decoupled weight decay (1e-2), applied as θ ← θ·(1 − lr·wd) before the update.
    pub weight_decay: f32,
    /// Check gradients for NaN/inf before each convenience `step` (costs a readback).
    pub check_finite: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            check_finite: false,
        }
    }
}

impl AdamWConfig {
    /// Checks every field's range (PyTorch's checks, with lr > 0 as the crate's other
    /// optimizers require).
    pub fn validate(&self) -> Result<()> {
        check::positive("lr", self.lr)?;
        check::beta("beta1", self.beta1)?;
        check::beta("beta2", self.beta2)?;
        check::non_negative("eps", self.eps)?;
        check::non_negative("weight_decay", self.weight_decay)
    }
}

/// AdamW (Loshchilov & Hutter 2019) exactly as `torch.optim.AdamW` (amsgrad off):
/// θ ← θ(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
/// θ ← θ − lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ) and t the step count.
/// Each step is one fused pass: 28 B per parameter (read θ, g, m, v; write θ, m, v).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    /// m, and v in the curvature slot `h`.
    state: Moments,
}

impl AdamW {
    /// An optimizer for one tensor of `len` parameters.
    pub fn new(gpu: &Gpu, len: usize, config: AdamWConfig) -> Result<Self> {
        if len == 0 {
            return Err(Error::Empty { argument: "len" });
        }
        Self::new_multi(gpu, &[len], config)
    }

    /// An optimizer for several tensors; each step updates all of them in one submission.
    pub fn new_multi(gpu: &Gpu, lens: &[usize], config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        Ok(AdamW {
            config,
            state: Moments::new(gpu, lens, true)?,
        })
    }

    /// The first moments m (PyTorch's `exp_avg`), one per tensor (device-resident).
    pub fn momentum(&self) -> &[GpuVec<f32>] {
        &self.state.m
    }

    /// The second moments v (PyTorch's `exp_avg_sq`), one per tensor (device-resident).
    pub fn second_moment(&self) -> &[GpuVec<f32>] {
        &self.state.h
    }
}

impl Optimizer for AdamW {
    diag_accessors!(AdamWConfig);
    const NAME: &'static str = "AdamW";
    const INPUTS: &'static [&'static str] = &["grads"];

    fn record_step_lists(
        &mut self,
        rec: &mut Recorder,
        step: u64,
        params: &[BufView<'_>],
        inputs: &[Vec<BufView<'_>>],
    ) -> Result<()> {
        let c = self.config;
        // PyTorch forms these in Python floats (f64): lr/bc1 and √bc2, with t counted from 1.
        let t = step as f64;
        let bc1 = 1.0 - (c.beta1 as f64).powf(t);
        let bc2 = 1.0 - (c.beta2 as f64).powf(t);
        let decay = (1.0 - c.lr as f64 * c.weight_decay as f64) as f32;
        let step_size = (c.lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        record_fused_step(rec, &self.state, STEP, (params, &inputs[0]), STATE_V, |n| {
            AdamWUniform {
                n,
                decay,
                beta1: c.beta1,
                beta2: c.beta2,
                step_size,
                bc2_sqrt,
                eps: c.eps,
                _pad: 0,
            }
        })
    }
}
