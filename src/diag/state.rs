//! Optimizer state shared by the diagonal-Hessian family: per tensor a first moment `m` and a
//! curvature estimate `h` (Sophia's h, AdaHessian's v), plus the step count; checkpointing.

use bytemuck::Pod;

use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::elementwise::{self, Elementwise};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::Recorder;
use crate::tensors::Tensors;

/// Host copy of an optimizer's state, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiagState {
    /// Steps taken (the bias corrections of SophiaH, AdaHessian and AdamW depend on it).
    pub step: u64,
    /// Hessian refreshes / probes taken (Sophia, Hutchinson).
    pub refreshes: u64,
    /// One entry per tensor, in the optimizer's order.
    pub tensors: Vec<TensorState>,
}

/// One tensor's moments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorState {
    /// First moment (EMA of gradients).
    pub m: Vec<f32>,
    /// Curvature estimate: Sophia's h, AdaHessian's v (EMA of D²), Hutchinson's running mean.
    pub h: Vec<f32>,
}

/// `config`, `set_config` and `steps` for an optimizer holding `config: $config` (with
/// `validate`) and `state: Moments`.
macro_rules! config_methods {
    ($config:ty) => {
        /// The hyper-parameters in use.
        pub fn config(&self) -> &$config {
            &self.config
        }

        /// Replaces the hyper-parameters (validated); takes effect from the next recorded step.
        /// The step count carries on.
        pub fn set_config(&mut self, config: $config) -> Result<()> {
            config.validate()?;
            self.config = config;
            Ok(())
        }

        /// Steps recorded so far.
        pub fn steps(&self) -> u64 {
            self.state.step
        }
    };
}
pub(crate) use config_methods;

/// [`config_methods`] and the step (`step`, `step_async`, `record_step`) for an optimizer whose
/// config has `check_finite` and whose `record(rec, params, …)` records one step. The tensor
/// arguments after `params` are named after the config type (default: `grads`); `check_finite`
/// checks each of them.
macro_rules! step_methods {
    ($config:ty) => {
        step_methods!($config, grads);
    };
    ($config:ty, $($arg:ident),+) => {
        config_methods!($config);

        /// One optimizer step over every tensor: records, submits, does not wait.
        /// With `check_finite` the inputs after `params` are checked first (blocking
        /// readbacks). Blocking only for that check: the native wrapper of
        /// [`Self::step_async`].
        #[cfg(not(target_arch = "wasm32"))]
        pub fn step<'a>(
            &mut self,
            gpu: &Gpu,
            params: impl Tensors<'a>,
            $($arg: impl Tensors<'a>),+
        ) -> Result<()> {
            pollster::block_on(self.step_async(gpu, params, $($arg),+))
        }

        /// One optimizer step over every tensor: records, submits, does not wait. With
        /// `check_finite` the inputs after `params` are checked first (awaited readbacks).
        /// Async form of `step`, the one the browser uses.
        pub async fn step_async<'a>(
            &mut self,
            gpu: &Gpu,
            params: impl Tensors<'a>,
            $($arg: impl Tensors<'a>),+
        ) -> Result<()> {
            $(let $arg = $arg.views();)+
            if self.config.check_finite {
                $(crate::finite::ensure_finite_async(gpu, stringify!($arg), &$arg).await?;)+
            }
            let mut rec = Recorder::new(gpu);
            self.record(&mut rec, params, $($arg),+)?;
            rec.submit()
        }

        /// Records one step into the caller's encoder with the caller's buffers: no copies,
        /// no submit. Never checks finiteness (the inputs may not be computed yet).
        pub fn record_step<'a>(
            &mut self,
            gpu: &Gpu,
            encoder: &mut wgpu::CommandEncoder,
            params: impl Tensors<'a>,
            $($arg: impl Tensors<'a>),+
        ) -> Result<()> {
            let mut rec = Recorder::new(gpu);
            self.record(&mut rec, params, $($arg),+)?;
            rec.encode(encoder);
            Ok(())
        }
    };
}
pub(crate) use step_methods;

/// `export_state`, `export_state_async` and `import_state` for a type holding `state: Moments`.
macro_rules! checkpoint_methods {
    () => {
        /// Host copy of the moments and counters (blocking).
        #[cfg(not(target_arch = "wasm32"))]
        pub fn export_state(&self, gpu: &Gpu) -> Result<DiagState> {
            self.state.export(gpu)
        }

        /// Host copy of the moments and counters.
        pub async fn export_state_async(&self, gpu: &Gpu) -> Result<DiagState> {
            self.state.export_async(gpu).await
        }

        /// Restores a checkpoint from `export_state` (tensor count and lengths must match).
        pub fn import_state(&mut self, gpu: &Gpu, state: &DiagState) -> Result<()> {
            self.state.import(gpu, state)
        }
    };
}
pub(crate) use checkpoint_methods;

/// Records one fused step of `kernel` over every tensor (θ, g, m, h bound in that order; AdamW
/// binds its v as h), the step of every `step_methods!` optimizer, and counts it.
pub(super) fn record_step<'a, P: Pod>(
    rec: &mut Recorder,
    state: &mut Moments,
    kernel: Elementwise,
    params: impl Tensors<'a>,
    grads: impl Tensors<'a>,
    uniform: impl Fn(u32) -> P,
) -> Result<()> {
    let (params, grads) = (params.views(), grads.views());
    state.check(rec.gpu(), "params", &params)?;
    state.check(rec.gpu(), "grads", &grads)?;
    for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
        let (m, h) = (&state.m[i], &state.h[i]);
        let views = [*p, *g, m.view(), h.view()];
        elementwise::record(rec, kernel, m.len(), &views, &[], 1, &uniform)?;
    }
    state.step += 1;
    Ok(())
}

/// Device-side state of one optimizer.
#[derive(Debug)]
pub(crate) struct Moments {
    pub lens: Vec<usize>,
    pub m: Vec<GpuVec<f32>>,
    pub h: Vec<GpuVec<f32>>,
    pub step: u64,
    pub refreshes: u64,
}

impl Moments {
    /// Zeroed m and h for tensors of `lens` (each list packed into one buffer).
    pub fn new(gpu: &Gpu, lens: &[usize], with_m: bool) -> Result<Self> {
        if lens.is_empty() {
            return Err(Error::Empty { argument: "lens" });
        }
        Ok(Moments {
            lens: lens.to_vec(),
            m: if with_m {
                gpu.packed(lens)?
            } else {
                Vec::new()
            },
            h: gpu.packed(lens)?,
            step: 0,
            refreshes: 0,
        })
    }

    /// Checks that the state lives on `gpu` and `views` are one per tensor with matching
    /// lengths.
    pub fn check(&self, gpu: &Gpu, argument: &'static str, views: &[BufView<'_>]) -> Result<()> {
        if !self.h.iter().all(|h| h.belongs_to(gpu)) {
            return Err(Error::WrongDevice { argument: "gpu" });
        }
        check::same_count(argument, self.lens.len(), views.len())?;
        for (v, &len) in views.iter().zip(&self.lens) {
            v.check(gpu, argument, len)?;
        }
        Ok(())
    }

    /// Reads everything back (blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn export(&self, gpu: &Gpu) -> Result<DiagState> {
        pollster::block_on(self.export_async(gpu))
    }

    /// Reads everything back.
    pub async fn export_async(&self, gpu: &Gpu) -> Result<DiagState> {
        let mut tensors = Vec::with_capacity(self.lens.len());
        for (i, h) in self.h.iter().enumerate() {
            let m = match self.m.get(i) {
                Some(m) => gpu.read_async(m).await?,
                None => Vec::new(),
            };
            tensors.push(TensorState {
                m,
                h: gpu.read_async(h).await?,
            });
        }
        Ok(DiagState {
            step: self.step,
            refreshes: self.refreshes,
            tensors,
        })
    }

    /// Restores a checkpoint taken from an optimizer with the same tensor lengths.
    pub fn import(&mut self, gpu: &Gpu, state: &DiagState) -> Result<()> {
        if state.tensors.len() != self.lens.len() {
            return Err(Error::State(format!(
                "checkpoint has {} tensors, optimizer has {}",
                state.tensors.len(),
                self.lens.len()
            )));
        }
        for (i, t) in state.tensors.iter().enumerate() {
            let want_m = if self.m.is_empty() { 0 } else { self.lens[i] };
            if t.m.len() != want_m || t.h.len() != self.lens[i] {
                return Err(Error::State(format!(
                    "tensor {i}: checkpoint m/h lengths {}/{}, expected {want_m}/{}",
                    t.m.len(),
                    t.h.len(),
                    self.lens[i]
                )));
            }
        }
        for (i, t) in state.tensors.iter().enumerate() {
            if let Some(m) = self.m.get(i) {
                gpu.write(m, &t.m)?;
            }
            gpu.write(&self.h[i], &t.h)?;
        }
        self.step = state.step;
        self.refreshes = state.refreshes;
        Ok(())
    }
}
