//! SophiaG and SophiaH: `SophiaG::record_step` → `kernel!("diag/sophia.wgsl", "sophiag_step")`.

use bytemuck::{Pod, Zeroable};

use super::state::{
    checkpoint_methods, config_methods, record_step, step_methods, DiagState, Moments,
};
use crate::buffer::BufView;
use crate::check;
use crate::elementwise::{self, Elementwise};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::Recorder;
use crate::tensors::Tensors;

const SOPHIAG_STEP: Elementwise = Elementwise {
    body: kernel!("diag/sophia.wgsl", "sophiag_step"),
    tail: kernel!("diag/sophia.wgsl", "sophiag_step_tail"),
};
const SOPHIAH_STEP: Elementwise = Elementwise {
    body: kernel!("diag/sophia.wgsl", "sophiah_step"),
    tail: kernel!("diag/sophia.wgsl", "sophiah_step_tail"),
};
const EMA_SQUARE: Elementwise = Elementwise {
    body: kernel!("diag/sophia.wgsl", "ema_square"),
    tail: kernel!("diag/sophia.wgsl", "ema_square_tail"),
};
const EMA: Elementwise = Elementwise {
    body: kernel!("diag/sophia.wgsl", "ema"),
    tail: kernel!("diag/sophia.wgsl", "ema_tail"),
};

/// SophiaG hyper-parameters; defaults are the official `sophia.py`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaGConfig {
    /// Learning rate (1e-4).
    pub lr: f32,
    /// EMA coefficient of the gradient (0.965).
    pub beta1: f32,
    /// EMA coefficient of the Hessian estimate (0.99).
    pub beta2: f32,
    /// Clipping scale ρ (0.04).
    pub rho: f32,
    /// Decoupled weight decay (0.1), applied as θ ← θ·(1 − lr·wd).
    pub weight_decay: f32,
    /// Added to the denominator ρ·bs·h — added, not a floor (1e-15).
    pub eps: f32,
    /// Tokens per batch `bs`, the GNB estimator's scale (5120, `step(bs=5120)`).
    pub batch_tokens: f32,
    /// Check gradients for NaN/inf before each convenience `step` (costs a readback).
    pub check_finite: bool,
}

impl Default for SophiaGConfig {
    fn default() -> Self {
        SophiaGConfig {
            lr: 1e-4,
            beta1: 0.965,
            beta2: 0.99,
            rho: 0.04,
            weight_decay: 0.1,
            eps: 1e-15,
            batch_tokens: 5120.0,
            check_finite: false,
        }
    }
}

impl SophiaGConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        check::positive("lr", self.lr)?;
        check::beta("beta1", self.beta1)?;
        check::beta("beta2", self.beta2)?;
        check::non_negative("rho", self.rho)?;
        check::non_negative("weight_decay", self.weight_decay)?;
        check::positive("eps", self.eps)?;
        check::positive("batch_tokens", self.batch_tokens)
    }
}

/// SophiaH hyper-parameters; defaults follow Levanter's `SophiaHConfig`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaHConfig {
    /// Learning rate (1e-4).
    pub lr: f32,
    /// EMA coefficient of the gradient (0.965); m is bias-corrected.
    pub beta1: f32,
    /// EMA coefficient of the Hessian estimate (0.99).
    pub beta2: f32,
    /// Scale γ of the curvature in the clip denominator (0.01).
    pub gamma: f32,
    /// Floor of the denominator, max(γ·h, ε) (1e-12).
    pub eps: f32,
    /// Decoupled weight decay (0.1): θ ← θ − lr·(u + wd·θ).
    pub weight_decay: f32,
    /// Check gradients for NaN/inf before each convenience `step` (costs a readback).
    pub check_finite: bool,
}

impl Default for SophiaHConfig {
    fn default() -> Self {
        SophiaHConfig {
            lr: 1e-4,
            beta1: 0.965,
            beta2: 0.99,
            gamma: 0.01,
            eps: 1e-12,
            weight_decay: 0.1,
            check_finite: false,
        }
    }
}

impl SophiaHConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        check::positive("lr", self.lr)?;
        check::beta("beta1", self.beta1)?;
        check::beta("beta2", self.beta2)?;
        check::positive("gamma", self.gamma)?;
        check::positive("eps", self.eps)?;
        check::non_negative("weight_decay", self.weight_decay)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SophiaGUniform {
    n: u32,
    lr: f32,
    beta1: f32,
    rho_bs: f32,
    decay: f32,
    eps: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SophiaHUniform {
    n: u32,
    lr: f32,
    beta1: f32,
    bias1: f32,
    gamma: f32,
    eps: f32,
    weight_decay: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct EmaUniform {
    n: u32,
    beta: f32,
    _pad: [u32; 2],
}

/// Records h ← β·h + (1 − β)·x² (`square`) or h ← β·h + (1 − β)·x for every tensor.
fn record_ema(
    rec: &mut Recorder,
    state: &Moments,
    samples: &[BufView<'_>],
    beta: f32,
    square: bool,
) -> Result<()> {
    let kernel = if square { EMA_SQUARE } else { EMA };
    for (h, x) in state.h.iter().zip(samples) {
        elementwise::record(rec, kernel, h.len(), &[h.view(), *x], &[], 1, |n| {
            EmaUniform {
                n,
                beta,
                _pad: [0; 2],
            }
        })?;
    }
    Ok(())
}

macro_rules! sophia_common {
    ($config:ty) => {
        step_methods!($config);

        /// The curvature estimates h, one per tensor (device-resident).
        pub fn hessian(&self) -> &[crate::buffer::GpuVec<f32>] {
            &self.state.h
        }

        /// The first moments m, one per tensor (device-resident).
        pub fn momentum(&self) -> &[crate::buffer::GpuVec<f32>] {
            &self.state.m
        }

        /// h ← β2·h + (1 − β2)·sample for every tensor: records, submits, does not wait.
        /// Never blocks (there is no finite check here), so it is the same on every target.
        pub fn refresh_hessian<'a>(&mut self, gpu: &Gpu, samples: impl Tensors<'a>) -> Result<()> {
            let mut rec = Recorder::new(gpu);
            self.record_refresh(&mut rec, samples)?;
            rec.submit()
        }

        /// Records the Hessian refresh into the caller's encoder.
        pub fn record_refresh_hessian<'a>(
            &mut self,
            gpu: &Gpu,
            encoder: &mut wgpu::CommandEncoder,
            samples: impl Tensors<'a>,
        ) -> Result<()> {
            let mut rec = Recorder::new(gpu);
            self.record_refresh(&mut rec, samples)?;
            rec.encode(encoder);
            Ok(())
        }

        checkpoint_methods!();
    };
}

/// SophiaG (Liu et al. 2023, official `sophia.py`): clipped sign-like steps preconditioned by
/// a Gauss–Newton–Bartlett diagonal Hessian estimate refreshed every k steps.
///
/// Follows the reference code, not the paper's notation: no bias correction, ε added to
/// ρ·bs·h, h starts at 0 (so steps are pure sign steps until the first refresh).
#[derive(Debug)]
pub struct SophiaG {
    config: SophiaGConfig,
    state: Moments,
}

impl SophiaG {
    /// An optimizer for one tensor of `len` parameters.
    pub fn new(gpu: &Gpu, len: usize, config: SophiaGConfig) -> Result<Self> {
        Self::new_multi(gpu, &[len], config)
    }

    /// An optimizer for several tensors; each step updates all of them in one submission.
    pub fn new_multi(gpu: &Gpu, lens: &[usize], config: SophiaGConfig) -> Result<Self> {
        config.validate()?;
        Ok(SophiaG {
            config,
            state: Moments::new(gpu, lens, true)?,
        })
    }

    sophia_common!(SophiaGConfig);

    /// Records one step of every tensor into `rec` (one pass, the caller submits).
    pub fn record<'a>(
        &mut self,
        rec: &mut Recorder,
        params: impl Tensors<'a>,
        grads: impl Tensors<'a>,
    ) -> Result<()> {
        let c = self.config;
        let decay = (1.0 - c.lr as f64 * c.weight_decay as f64) as f32;
        record_step(rec, &mut self.state, SOPHIAG_STEP, params, grads, |n| {
            SophiaGUniform {
                n,
                lr: c.lr,
                beta1: c.beta1,
                rho_bs: c.rho * c.batch_tokens,
                decay,
                eps: c.eps,
                _pad: [0; 2],
            }
        })
    }

    /// Records the GNB refresh h ← β2·h + (1 − β2)·ĝ⊙ĝ, where ĝ is the gradient of the loss on
    /// labels sampled from the model's own predictions (call every k = 10 steps).
    pub fn record_refresh<'a>(
        &mut self,
        rec: &mut Recorder,
        sampled_grads: impl Tensors<'a>,
    ) -> Result<()> {
        let samples = sampled_grads.views();
        self.state.check(rec.gpu(), "sampled_grads", &samples)?;
        record_ema(rec, &self.state, &samples, self.config.beta2, true)?;
        self.state.refreshes += 1;
        Ok(())
    }
}

/// SophiaH (Levanter): Sophia with a Hutchinson estimate h ← β2·h + (1 − β2)·u⊙(Hu),
/// bias-corrected m and the update clip(m̂ / max(γ·h, ε), ±1) with decoupled weight decay.
#[derive(Debug)]
pub struct SophiaH {
    config: SophiaHConfig,
    state: Moments,
}

impl SophiaH {
    /// An optimizer for one tensor of `len` parameters.
    pub fn new(gpu: &Gpu, len: usize, config: SophiaHConfig) -> Result<Self> {
        Self::new_multi(gpu, &[len], config)
    }

    /// An optimizer for several tensors; each step updates all of them in one submission.
    pub fn new_multi(gpu: &Gpu, lens: &[usize], config: SophiaHConfig) -> Result<Self> {
        config.validate()?;
        Ok(SophiaH {
            config,
            state: Moments::new(gpu, lens, true)?,
        })
    }

    sophia_common!(SophiaHConfig);

    /// Records one step of every tensor into `rec`.
    pub fn record<'a>(
        &mut self,
        rec: &mut Recorder,
        params: impl Tensors<'a>,
        grads: impl Tensors<'a>,
    ) -> Result<()> {
        let c = self.config;
        let t = self.state.step + 1;
        let bias1 = (1.0 - (c.beta1 as f64).powf(t as f64)) as f32;
        record_step(rec, &mut self.state, SOPHIAH_STEP, params, grads, |n| {
            SophiaHUniform {
                n,
                lr: c.lr,
                beta1: c.beta1,
                bias1,
                gamma: c.gamma,
                eps: c.eps,
                weight_decay: c.weight_decay,
                _pad: 0,
            }
        })
    }

    /// Records the Hutchinson refresh h ← β2·h + (1 − β2)·u⊙(Hu); `zhz` is u⊙(Hu) per tensor
    /// with u from [`crate::rng`] (Rademacher) or the caller's own probe.
    pub fn record_refresh<'a>(&mut self, rec: &mut Recorder, zhz: impl Tensors<'a>) -> Result<()> {
        let samples = zhz.views();
        self.state.check(rec.gpu(), "zhz", &samples)?;
        record_ema(rec, &self.state, &samples, self.config.beta2, false)?;
        self.state.refreshes += 1;
        Ok(())
    }
}
