//! SophiaG and SophiaH: `SophiaG::record_step_lists` → [`SOPHIAG_STEP`] →
//! `shaders/diag/sophia.wgsl`'s `sophiag_step`.

use super::state::{diag_accessors, record_fused_step, Moments, STATE_H};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::elementwise::{self, Elementwise};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::optimizer::Optimizer;
use crate::record::Recorder;
use crate::shader;
use crate::tensors::Tensors;

crate::kernel::uniform_struct! {
    /// `sophiag_step`'s parameters.
    pub(crate) struct SophiaGUniform {
        n: u32, lr: f32, beta1: f32, rho_bs: f32, decay: f32, eps: f32, _pad0: u32, _pad1: u32,
    }
}

crate::kernel::uniform_struct! {
    /// `sophiah_step`'s parameters.
    pub(crate) struct SophiaHUniform {
        n: u32, lr: f32, beta1: f32, bias1: f32, gamma: f32, eps: f32, weight_decay: f32,
        _pad: u32,
    }
}

crate::kernel::uniform_struct! {
    /// The refreshes' parameters.
    pub(crate) struct EmaUniform { n: u32, beta: f32, _pad0: u32, _pad1: u32 }
}

const SOPHIAG_SLOTS: &[Slot] = &[
    uniform::<SophiaGUniform>(),
    Slot::Write("theta"),
    Slot::Read("grad"),
    Slot::Write("m"),
    Slot::Read("h"),
];
const SOPHIAH_SLOTS: &[Slot] = &[
    uniform::<SophiaHUniform>(),
    Slot::Write("theta"),
    Slot::Read("grad"),
    Slot::Write("m"),
    Slot::Read("h"),
];
const EMA_SLOTS: &[Slot] = &[
    uniform::<EmaUniform>(),
    Slot::Write("h"),
    Slot::Read("sample"),
];

/// SophiaG's fused step over vec4s.
pub(crate) static SOPHIAG_STEP: Kernel =
    Kernel::new(&shader::SOPHIA, "sophiag_step", SOPHIAG_SLOTS);
static SOPHIAG_STEP_TAIL: Kernel = Kernel::new(&shader::SOPHIA, "sophiag_step_tail", SOPHIAG_SLOTS);
static SOPHIAH_STEP: Kernel = Kernel::new(&shader::SOPHIA, "sophiah_step", SOPHIAH_SLOTS);
static SOPHIAH_STEP_TAIL: Kernel = Kernel::new(&shader::SOPHIA, "sophiah_step_tail", SOPHIAH_SLOTS);
static EMA_SQUARE: Kernel = Kernel::new(&shader::SOPHIA, "ema_square", EMA_SLOTS);
static EMA_SQUARE_TAIL: Kernel = Kernel::new(&shader::SOPHIA, "ema_square_tail", EMA_SLOTS);
static EMA: Kernel = Kernel::new(&shader::SOPHIA, "ema", EMA_SLOTS);
static EMA_TAIL: Kernel = Kernel::new(&shader::SOPHIA, "ema_tail", EMA_SLOTS);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &SOPHIAG_STEP,
    &SOPHIAG_STEP_TAIL,
    &SOPHIAH_STEP,
    &SOPHIAH_STEP_TAIL,
    &EMA_SQUARE,
    &EMA_SQUARE_TAIL,
    &EMA,
    &EMA_TAIL,
];

/// SophiaG's fused step, body and tail.
pub(crate) const SOPHIAG: Elementwise = Elementwise {
    body: &SOPHIAG_STEP,
    tail: &SOPHIAG_STEP_TAIL,
};
const SOPHIAH: Elementwise = Elementwise {
    body: &SOPHIAH_STEP,
    tail: &SOPHIAH_STEP_TAIL,
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

/// Records h ← β·h + (1 − β)·x² (`square`) or h ← β·h + (1 − β)·x for every tensor, after
/// checking `samples` (named `argument`) against the state.
fn record_ema(
    rec: &mut Recorder,
    state: &mut Moments,
    argument: &'static str,
    samples: &[BufView<'_>],
    beta: f32,
    square: bool,
) -> Result<()> {
    let samples = state.check(rec.gpu(), argument, samples)?;
    let kernel = match square {
        true => Elementwise {
            body: &EMA_SQUARE,
            tail: &EMA_SQUARE_TAIL,
        },
        false => Elementwise {
            body: &EMA,
            tail: &EMA_TAIL,
        },
    };
    for (h, x) in state.h.iter().zip(&samples) {
        let h = h.view().named(STATE_H);
        elementwise::record(rec, kernel, h.len(), &[h, *x], &[], 1, |n| EmaUniform {
            n,
            beta,
            ..Default::default()
        })?;
    }
    state.refreshes += 1;
    Ok(())
}

/// SophiaG (Liu et al. 2023, official `sophia.py`): clipped sign-like steps preconditioned by
/// a Gauss–Newton–Bartlett diagonal Hessian estimate refreshed every k steps.
///
/// Follows the reference code, not the paper's notation: no bias correction (so the step
/// number only counts), ε added to ρ·bs·h, h starts at 0 (so steps are pure sign steps until
/// the first refresh). A step takes one input list, the gradients.
#[derive(Debug)]
pub struct SophiaG {
    config: SophiaGConfig,
    state: Moments,
}

impl SophiaG {
    /// An optimizer for one tensor of `len` parameters.
    pub fn new(gpu: &Gpu, len: usize, config: SophiaGConfig) -> Result<Self> {
        if len == 0 {
            return Err(crate::Error::Empty { argument: "len" });
        }
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

    /// The curvature estimates h, one per tensor (device-resident).
    pub fn hessian(&self) -> &[GpuVec<f32>] {
        &self.state.h
    }

    /// The first moments m, one per tensor (device-resident).
    pub fn momentum(&self) -> &[GpuVec<f32>] {
        &self.state.m
    }

    /// The Gauss–Newton–Bartlett refresh h ← β2·h + (1 − β2)·ĝ⊙ĝ, where ĝ is the gradient of
    /// the loss on labels sampled from the model's own predictions (call every k = 10 steps):
    /// records, submits, does not wait.
    pub fn refresh_from_sampled_grads<'a>(
        &mut self,
        gpu: &Gpu,
        sampled_grads: impl Tensors<'a>,
    ) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        self.record_refresh_from_sampled_grads(&mut rec, sampled_grads)?;
        rec.submit()
    }

    /// Records [`SophiaG::refresh_from_sampled_grads`] into `rec`. The refresh count in the
    /// state counts recorded refreshes; nothing in the update depends on it.
    pub fn record_refresh_from_sampled_grads<'a>(
        &mut self,
        rec: &mut Recorder,
        sampled_grads: impl Tensors<'a>,
    ) -> Result<()> {
        let beta2 = self.config.beta2;
        let samples = sampled_grads.views();
        record_ema(rec, &mut self.state, "sampled_grads", &samples, beta2, true)
    }
}

impl Optimizer for SophiaG {
    diag_accessors!(SophiaGConfig);
    const NAME: &'static str = "SophiaG";
    const INPUTS: &'static [&'static str] = &["grads"];

    fn record_step_lists(
        &mut self,
        rec: &mut Recorder,
        _step: u64,
        params: &[BufView<'_>],
        inputs: &[Vec<BufView<'_>>],
    ) -> Result<()> {
        let c = self.config;
        let decay = (1.0 - c.lr as f64 * c.weight_decay as f64) as f32;
        record_fused_step(
            rec,
            &self.state,
            SOPHIAG,
            (params, &inputs[0]),
            STATE_H,
            |n| SophiaGUniform {
                n,
                lr: c.lr,
                beta1: c.beta1,
                rho_bs: c.rho * c.batch_tokens,
                decay,
                eps: c.eps,
                ..Default::default()
            },
        )
    }
}

/// SophiaH (Levanter): Sophia with a Hutchinson estimate h ← β2·h + (1 − β2)·u⊙(Hu),
/// bias-corrected m and the update clip(m̂ / max(γ·h, ε), ±1) with decoupled weight decay.
/// A step takes one input list, the gradients.
#[derive(Debug)]
pub struct SophiaH {
    config: SophiaHConfig,
    state: Moments,
}

impl SophiaH {
    /// An optimizer for one tensor of `len` parameters.
    pub fn new(gpu: &Gpu, len: usize, config: SophiaHConfig) -> Result<Self> {
        if len == 0 {
            return Err(crate::Error::Empty { argument: "len" });
        }
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

    /// The curvature estimates h, one per tensor (device-resident).
    pub fn hessian(&self) -> &[GpuVec<f32>] {
        &self.state.h
    }

    /// The first moments m, one per tensor (device-resident).
    pub fn momentum(&self) -> &[GpuVec<f32>] {
        &self.state.m
    }

    /// The Hutchinson refresh h ← β2·h + (1 − β2)·u⊙(Hu), from `zhz` = u⊙(Hu) per tensor with
    /// u from [`crate::rng`] (Rademacher) or the caller's own probe — taken as it is, not
    /// squared: records, submits, does not wait.
    pub fn refresh_from_zhz<'a>(&mut self, gpu: &Gpu, zhz: impl Tensors<'a>) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        self.record_refresh_from_zhz(&mut rec, zhz)?;
        rec.submit()
    }

    /// Records [`SophiaH::refresh_from_zhz`] into `rec`. The refresh count in the state counts
    /// recorded refreshes; nothing in the update depends on it.
    pub fn record_refresh_from_zhz<'a>(
        &mut self,
        rec: &mut Recorder,
        zhz: impl Tensors<'a>,
    ) -> Result<()> {
        let beta2 = self.config.beta2;
        record_ema(rec, &mut self.state, "zhz", &zhz.views(), beta2, false)
    }
}

impl Optimizer for SophiaH {
    diag_accessors!(SophiaHConfig);
    const NAME: &'static str = "SophiaH";
    const INPUTS: &'static [&'static str] = &["grads"];

    fn record_step_lists(
        &mut self,
        rec: &mut Recorder,
        step: u64,
        params: &[BufView<'_>],
        inputs: &[Vec<BufView<'_>>],
    ) -> Result<()> {
        let c = self.config;
        let bias1 = (1.0 - (c.beta1 as f64).powf(step as f64)) as f32;
        record_fused_step(
            rec,
            &self.state,
            SOPHIAH,
            (params, &inputs[0]),
            STATE_H,
            |n| SophiaHUniform {
                n,
                lr: c.lr,
                beta1: c.beta1,
                bias1,
                gamma: c.gamma,
                eps: c.eps,
                weight_decay: c.weight_decay,
                _pad: 0,
            },
        )
    }
}
