//! AdamW, the first-order baseline: `AdamW::record_step` → `kernel!("diag/adamw.wgsl",
//! "adamw_step")`.

use bytemuck::{Pod, Zeroable};

use super::state::{
    checkpoint_methods, config_methods, record_step, step_methods, DiagState, Moments,
};
use crate::check;
use crate::elementwise::Elementwise;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::Recorder;
use crate::tensors::Tensors;

const ADAMW_STEP: Elementwise = Elementwise {
    body: kernel!("diag/adamw.wgsl", "adamw_step"),
    tail: kernel!("diag/adamw.wgsl", "adamw_step_tail"),
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamWUniform {
    n: u32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    _pad: u32,
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

    step_methods!(AdamWConfig);

    /// The first moments m (PyTorch's `exp_avg`), one per tensor (device-resident).
    pub fn momentum(&self) -> &[crate::buffer::GpuVec<f32>] {
        &self.state.m
    }

    /// The second moments v (PyTorch's `exp_avg_sq`), one per tensor (device-resident).
    pub fn second_moment(&self) -> &[crate::buffer::GpuVec<f32>] {
        &self.state.h
    }

    /// Records one step of every tensor into `rec` (one pass, the caller submits).
    pub fn record<'a>(
        &mut self,
        rec: &mut Recorder,
        params: impl Tensors<'a>,
        grads: impl Tensors<'a>,
    ) -> Result<()> {
        let c = self.config;
        // PyTorch forms these in Python floats (f64): lr/bc1 and √bc2, with t counted from 1.
        let t = (self.state.step + 1) as f64;
        let bc1 = 1.0 - (c.beta1 as f64).powf(t);
        let bc2 = 1.0 - (c.beta2 as f64).powf(t);
        let decay = (1.0 - c.lr as f64 * c.weight_decay as f64) as f32;
        let step_size = (c.lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        record_step(rec, &mut self.state, ADAMW_STEP, params, grads, |n| {
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

    checkpoint_methods!();
}
