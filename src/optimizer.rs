//! [`Optimizer`]: the shape every curvgpu optimizer shares — a step over a list of parameter
//! tensors and the per-tensor inputs it needs (gradients; AdaHessian's z⊙Hz too), recorded
//! into a [`Recorder`] or submitted, with a checkpointable state. One test battery runs over
//! every implementation, and another engine's optimizer interface is written once against it.
//!
//! **Step numbers are explicit.** [`Optimizer::record_step`] takes the number of the step it
//! records (1-based: PyTorch's `state['step']` after its increment), which the bias
//! corrections use. Recording moves nothing on the device, so a recording that is dropped
//! instead of submitted changes nothing: record the same number again. [`Optimizer::steps`]
//! is the last number recorded (or taken by [`Optimizer::step`], which records
//! `steps() + 1` and submits it), and checkpoints carry it.

use crate::buffer::BufView;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::Recorder;
use crate::tensors::Tensors;

/// The per-tensor inputs of one step: one tensor list (`&grads`), or two (`(&grads, &zhz)`).
pub trait StepInputs<'a> {
    /// The lists, in the optimizer's [`Optimizer::INPUTS`] order.
    fn lists(self) -> Vec<Vec<BufView<'a>>>;
}

impl<'a, T: Tensors<'a>> StepInputs<'a> for T {
    fn lists(self) -> Vec<Vec<BufView<'a>>> {
        vec![self.views()]
    }
}

impl<'a, A: Tensors<'a>, B: Tensors<'a>> StepInputs<'a> for (A, B) {
    fn lists(self) -> Vec<Vec<BufView<'a>>> {
        vec![self.0.views(), self.1.views()]
    }
}

/// An optimizer over a fixed list of parameter tensors.
///
/// Implementors provide the configuration, the state and [`Optimizer::record_step_lists`];
/// everything else is provided. Every form validates its arguments before recording anything:
/// tensor counts ([`Error::CountMismatch`]), lengths, devices, and views that overlap where
/// the step writes ([`Error::Overlap`]); parameters, inputs and state may share one buffer
/// when they are disjoint.
#[allow(async_fn_in_trait)] // wgpu's futures are not Send on the web; none of ours claims it
pub trait Optimizer {
    /// The hyper-parameters.
    type Config: Clone + std::fmt::Debug + PartialEq;
    /// A host copy of the state, for checkpoints.
    type State;
    /// The optimizer's name in messages (`"SophiaG"`).
    const NAME: &'static str;
    /// The names of the tensor lists a step takes after the parameters, in order
    /// (`["grads"]`, or AdaHessian's `["grads", "zhz"]`).
    const INPUTS: &'static [&'static str];

    /// The hyper-parameters in use.
    fn config(&self) -> &Self::Config;
    /// Replaces the hyper-parameters (validated); takes effect from the next recorded step.
    fn set_config(&mut self, config: Self::Config) -> Result<()>;
    /// Element counts of the tensors, in order.
    fn lens(&self) -> &[usize];
    /// The last step number recorded or taken (0 before the first).
    fn steps(&self) -> u64;
    /// Sets what [`Optimizer::steps`] returns.
    fn set_steps(&mut self, steps: u64);
    /// Whether the convenience step checks its inputs for NaN/inf first (a readback).
    fn checks_finite(&self) -> bool;

    /// Records step `step` of every tensor from already split views: `inputs[k]` is the list
    /// named `INPUTS[k]`. Called by the provided methods after the counts are checked.
    fn record_step_lists(
        &mut self,
        rec: &mut Recorder,
        step: u64,
        params: &[BufView<'_>],
        inputs: &[Vec<BufView<'_>>],
    ) -> Result<()>;

    /// A host copy of the state.
    async fn export_state_async(&self) -> Result<Self::State>;
    /// Restores a checkpoint from [`Optimizer::export_state_async`] (the same tensor lengths).
    fn import_state(&mut self, state: &Self::State) -> Result<()>;

    /// A host copy of the state (blocking).
    #[cfg(not(target_arch = "wasm32"))]
    fn export_state(&self) -> Result<Self::State> {
        pollster::block_on(self.export_state_async())
    }

    /// Records step number `step` (≥ 1) of every tensor into `rec`: nothing runs until the
    /// recording is submitted, and nothing is checked for finiteness (the inputs may not be
    /// computed yet). Sets [`Optimizer::steps`] to `step`.
    fn record_step<'a>(
        &mut self,
        rec: &mut Recorder,
        step: u64,
        params: impl Tensors<'a>,
        inputs: impl StepInputs<'a>,
    ) -> Result<()> {
        if step == 0 {
            return Err(Error::param(
                "step",
                0.0,
                "the 1-based number of the step being taken",
            ));
        }
        let inputs = split_inputs::<Self>(inputs)?;
        self.record_step_lists(rec, step, &params.views(), &inputs)?;
        self.set_steps(step);
        Ok(())
    }

    /// Takes step `steps() + 1` over every tensor: records, submits, does not wait. With the
    /// finite check on, the inputs are checked first (blocking readbacks). Blocking only for
    /// that check: the native wrapper of [`Optimizer::step_async`].
    #[cfg(not(target_arch = "wasm32"))]
    fn step<'a>(
        &mut self,
        gpu: &Gpu,
        params: impl Tensors<'a>,
        inputs: impl StepInputs<'a>,
    ) -> Result<()> {
        pollster::block_on(self.step_async(gpu, params, inputs))
    }

    /// Takes step `steps() + 1` over every tensor: records, submits, does not wait; the count
    /// advances once the submission is made. With the finite check on, the inputs are checked
    /// first (awaited readbacks). The form the browser uses.
    async fn step_async<'a>(
        &mut self,
        gpu: &Gpu,
        params: impl Tensors<'a>,
        inputs: impl StepInputs<'a>,
    ) -> Result<()> {
        let inputs = split_inputs::<Self>(inputs)?;
        if self.checks_finite() {
            for (name, list) in Self::INPUTS.iter().zip(&inputs) {
                crate::finite::ensure_finite_async(gpu, name, list).await?;
            }
        }
        let step = self.steps() + 1;
        let mut rec = Recorder::new(gpu);
        self.record_step_lists(&mut rec, step, &params.views(), &inputs)?;
        rec.submit()?;
        self.set_steps(step);
        Ok(())
    }
}

/// The input lists, refused unless there is one per name in `O::INPUTS`.
fn split_inputs<'a, O: Optimizer + ?Sized>(
    inputs: impl StepInputs<'a>,
) -> Result<Vec<Vec<BufView<'a>>>> {
    let lists = inputs.lists();
    if lists.len() != O::INPUTS.len() {
        return Err(Error::Shape {
            argument: "inputs",
            message: format!(
                "{}'s step takes {} tensor list(s) after the parameters ({}), got {}",
                O::NAME,
                O::INPUTS.len(),
                O::INPUTS.join(", "),
                lists.len()
            ),
        });
    }
    Ok(lists)
}
