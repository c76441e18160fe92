//! Optimizer state shared by the diagonal-Hessian family: per tensor a first moment `m` and a
//! curvature estimate `h` (Sophia's h, AdaHessian's v, AdamW's v), plus the step count;
//! checkpointing.

use bytemuck::Pod;

use crate::buffer::{BufView, GpuVec};
use crate::elementwise::{self, Elementwise};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::Recorder;

/// Host copy of an optimizer's state, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiagState {
    /// The last step number recorded (the bias corrections of SophiaH, AdaHessian and AdamW
    /// depend on it).
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

/// How errors name the state: first moment, then the curvature slot (AdamW's v).
pub(super) const STATE_M: &str = "m (optimizer state)";
pub(super) const STATE_H: &str = "h (optimizer state)";
pub(super) const STATE_V: &str = "v (optimizer state)";

/// Records one fused step of `kernel` over every tensor: θ, g, m, h bound in that order
/// (AdamW binds its v as h, named `h_name`), the inputs checked against the state first.
pub(super) fn record_fused_step<P: Pod + crate::kernel::Uniform>(
    rec: &mut Recorder,
    state: &Moments,
    kernel: Elementwise,
    (params, grads): (&[BufView<'_>], &[BufView<'_>]),
    h_name: &'static str,
    uniform: impl Fn(u32) -> P,
) -> Result<()> {
    let params = state.check(rec.gpu(), "params", params)?;
    let grads = state.check(rec.gpu(), "grads", grads)?;
    for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
        let (m, h) = (
            state.m[i].view().named(STATE_M),
            state.h[i].view().named(h_name),
        );
        elementwise::record(rec, kernel, m.len(), &[*p, *g, m, h], &[], 1, &uniform)?;
    }
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

/// The lengths of the tensors an optimizer is made for: at least one, none empty.
pub(crate) fn check_lens(lens: &[usize]) -> Result<()> {
    if lens.is_empty() {
        return Err(Error::Empty { argument: "lens" });
    }
    if let Some(i) = lens.iter().position(|&l| l == 0) {
        return Err(Error::Shape {
            argument: "lens",
            message: format!("tensor {i} has no elements"),
        });
    }
    Ok(())
}

impl Moments {
    /// Zeroed m and h for tensors of `lens` (each list packed into one buffer).
    pub fn new(gpu: &Gpu, lens: &[usize], with_m: bool) -> Result<Self> {
        check_lens(lens)?;
        Ok(Moments {
            lens: lens.to_vec(),
            m: if with_m {
                GpuVec::packed(gpu, lens)?
            } else {
                Vec::new()
            },
            h: GpuVec::packed(gpu, lens)?,
            step: 0,
            refreshes: 0,
        })
    }

    /// Checks that the state lives on `gpu` and `views` are one per tensor with matching
    /// lengths; returns them named `argument`.
    pub fn check<'a>(
        &self,
        gpu: &Gpu,
        argument: &'static str,
        views: &[BufView<'a>],
    ) -> Result<Vec<BufView<'a>>> {
        if !self.h.iter().all(|h| h.belongs_to(gpu)) {
            return Err(Error::WrongDevice { argument: "gpu" });
        }
        if views.len() != self.lens.len() {
            return Err(Error::CountMismatch {
                argument,
                expected: self.lens.len(),
                actual: views.len(),
            });
        }
        views
            .iter()
            .zip(&self.lens)
            .map(|(v, &len)| v.check(gpu, argument, len))
            .collect()
    }

    /// Reads everything back.
    pub async fn export_async(&self) -> Result<DiagState> {
        let mut tensors = Vec::with_capacity(self.lens.len());
        for (i, h) in self.h.iter().enumerate() {
            let m = match self.m.get(i) {
                Some(m) => m.read_async().await?,
                None => Vec::new(),
            };
            tensors.push(TensorState {
                m,
                h: h.read_async().await?,
            });
        }
        Ok(DiagState {
            step: self.step,
            refreshes: self.refreshes,
            tensors,
        })
    }

    /// Restores a checkpoint taken from an optimizer with the same tensor lengths.
    pub fn import(&mut self, state: &DiagState) -> Result<()> {
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
                m.write(&t.m)?;
            }
            self.h[i].write(&t.h)?;
        }
        self.step = state.step;
        self.refreshes = state.refreshes;
        Ok(())
    }
}

/// The [`crate::Optimizer`] items every diagonal optimizer holding `config` (a type with
/// `validate` and `check_finite`) and `state: Moments` implements the same way.
macro_rules! diag_accessors {
    ($config:ty) => {
        type Config = $config;
        type State = $crate::diag::DiagState;

        fn config(&self) -> &$config {
            &self.config
        }
        fn set_config(&mut self, config: $config) -> $crate::Result<()> {
            config.validate()?;
            self.config = config;
            Ok(())
        }
        fn lens(&self) -> &[usize] {
            &self.state.lens
        }
        fn steps(&self) -> u64 {
            self.state.step
        }
        fn set_steps(&mut self, steps: u64) {
            self.state.step = steps;
        }
        fn checks_finite(&self) -> bool {
            self.config.check_finite
        }
        async fn export_state_async(&self) -> $crate::Result<$crate::diag::DiagState> {
            self.state.export_async().await
        }
        fn import_state(&mut self, state: &$crate::diag::DiagState) -> $crate::Result<()> {
            self.state.import(state)
        }
    };
}
pub(crate) use diag_accessors;
