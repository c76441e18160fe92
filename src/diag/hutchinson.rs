//! Hutchinson diagonal estimator: `HutchinsonDiag::record_accumulate` → [`ACCUMULATE`] →
//! `shaders/diag/hutchinson.wgsl`'s `hutchinson_accumulate`.

use super::state::{DiagState, Moments};
use crate::buffer::GpuVec;
use crate::elementwise::{self, Elementwise};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::Recorder;
use crate::rng;
use crate::shader;
use crate::tensors::Tensors;

crate::kernel::uniform_struct! {
    /// The running mean's parameters.
    pub(crate) struct AccumulateUniform { n: u32, k: f32, _pad0: u32, _pad1: u32 }
}

const SLOTS: &[Slot] = &[
    uniform::<AccumulateUniform>(),
    Slot::Write("estimate"),
    Slot::Read("zhz"),
];

/// est ← est + (z⊙Hz − est)/k over vec4s.
pub(crate) static ACCUMULATE: Kernel =
    Kernel::new(&shader::HUTCHINSON, "hutchinson_accumulate", SLOTS);
static ACCUMULATE_TAIL: Kernel =
    Kernel::new(&shader::HUTCHINSON, "hutchinson_accumulate_tail", SLOTS);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&ACCUMULATE, &ACCUMULATE_TAIL];

/// The running mean, body and tail.
pub(crate) const RUNNING_MEAN: Elementwise = Elementwise {
    body: &ACCUMULATE,
    tail: &ACCUMULATE_TAIL,
};

/// diag(H) ≈ mean over probes of z⊙Hz with Rademacher z, kept as a running mean on the device.
///
/// Probe k (1-based) of tensor i is `rng::rademacher` with this estimator's seed at offset
/// `(k − 1)·total + start_i` (total = all tensors' elements, start_i = elements before tensor
/// i), so probes never reuse a stream and can be regenerated anywhere. The record forms take
/// the probe number explicitly, like the optimizers' step numbers: a recording dropped
/// instead of submitted changes nothing.
#[derive(Debug)]
pub struct HutchinsonDiag {
    seed: u64,
    state: Moments,
}

impl HutchinsonDiag {
    /// An estimator for tensors of `lens` elements.
    pub fn new(gpu: &Gpu, lens: &[usize], seed: u64) -> Result<Self> {
        Ok(HutchinsonDiag {
            seed,
            state: Moments::new(gpu, lens, false)?,
        })
    }

    /// Probes accumulated so far (the last probe number recorded or accumulated).
    pub fn probes(&self) -> u64 {
        self.state.refreshes
    }

    /// The running estimates of diag(H), one per tensor.
    pub fn estimate(&self) -> &[GpuVec<f32>] {
        &self.state.h
    }

    /// Records probe `k` (≥ 1, Rademacher) into `out`, one view per tensor.
    pub fn record_probe<'a>(
        &self,
        rec: &mut Recorder,
        k: u64,
        out: impl Tensors<'a>,
    ) -> Result<()> {
        let k = probe_number(k)?;
        let out = self.state.check(rec.gpu(), "out", &out.views())?;
        let total: u64 = self.state.lens.iter().map(|&l| l as u64).sum();
        let mut start = (k - 1).wrapping_mul(total);
        for v in out {
            rng::record_rademacher(rec, v, self.seed, start)?;
            start = start.wrapping_add(v.len() as u64);
        }
        Ok(())
    }

    /// Records est ← est + (z⊙Hz − est)/k for every tensor, `zhz` from probe `k` (≥ 1);
    /// [`HutchinsonDiag::probes`] becomes `k`.
    pub fn record_accumulate<'a>(
        &mut self,
        rec: &mut Recorder,
        k: u64,
        zhz: impl Tensors<'a>,
    ) -> Result<()> {
        let k = probe_number(k)?;
        let zhz = self.state.check(rec.gpu(), "zhz", &zhz.views())?;
        for (est, x) in self.state.h.iter().zip(&zhz) {
            let est = est.view().named("estimate (estimator state)");
            elementwise::record(rec, RUNNING_MEAN, est.len(), &[est, *x], &[], 1, |n| {
                AccumulateUniform {
                    n,
                    k: k as f32,
                    ..Default::default()
                }
            })?;
        }
        self.state.refreshes = k;
        Ok(())
    }

    /// Accumulates the next probe's z⊙Hz (probe `probes() + 1`): records and submits.
    pub fn accumulate<'a>(&mut self, gpu: &Gpu, zhz: impl Tensors<'a>) -> Result<()> {
        let k = self.state.refreshes + 1;
        let mut rec = Recorder::new(gpu);
        let before = self.state.refreshes;
        self.record_accumulate(&mut rec, k, zhz)?;
        if let Err(e) = rec.submit() {
            self.state.refreshes = before;
            return Err(e);
        }
        Ok(())
    }

    /// Host copy of the estimate and probe count (blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn export_state(&self) -> Result<DiagState> {
        pollster::block_on(self.export_state_async())
    }

    /// Host copy of the estimate and probe count.
    pub async fn export_state_async(&self) -> Result<DiagState> {
        self.state.export_async().await
    }

    /// Restores a checkpoint from `export_state` (tensor count and lengths must match).
    pub fn import_state(&mut self, state: &DiagState) -> Result<()> {
        self.state.import(state)
    }
}

fn probe_number(k: u64) -> Result<u64> {
    match k {
        0 => Err(Error::param("k", 0.0, "the 1-based number of the probe")),
        k => Ok(k),
    }
}
