//! Hutchinson diagonal estimator: `HutchinsonDiag::record_accumulate` →
//! `kernel!("diag/hutchinson.wgsl", "hutchinson_accumulate")`.

use bytemuck::{Pod, Zeroable};

use super::state::{checkpoint_methods, DiagState, Moments};
use crate::buffer::{BufView, GpuVec};
use crate::elementwise::{self, Elementwise};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::Recorder;
use crate::rng;
use crate::tensors::Tensors;

const ACCUMULATE: Elementwise = Elementwise {
    body: kernel!("diag/hutchinson.wgsl", "hutchinson_accumulate"),
    tail: kernel!("diag/hutchinson.wgsl", "hutchinson_accumulate_tail"),
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AccumulateUniform {
    n: u32,
    k: f32,
    _pad: [u32; 2],
}

/// diag(H) ≈ mean over probes of z⊙Hz with Rademacher z, kept as a running mean on the device.
///
/// Probe k of tensor i is `rng::rademacher` with this estimator's seed at offset
/// `k·total + start_i` (total = all tensors' elements, start_i = elements before tensor i), so
/// probes never reuse a stream and can be regenerated anywhere.
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

    /// Probes accumulated so far.
    pub fn probes(&self) -> u64 {
        self.state.refreshes
    }

    /// The running estimates of diag(H), one per tensor.
    pub fn estimate(&self) -> &[GpuVec<f32>] {
        &self.state.h
    }

    /// Records the next probe z (Rademacher) into `out`, one view per tensor.
    pub fn record_probe<'a>(&self, rec: &mut Recorder, out: impl Tensors<'a>) -> Result<()> {
        let out = out.views();
        self.state.check(rec.gpu(), "out", &out)?;
        let total: u64 = self.state.lens.iter().map(|&l| l as u64).sum();
        let mut start = self.state.refreshes.wrapping_mul(total);
        for v in out {
            rng::record_rademacher(rec, v, self.seed, start)?;
            start = start.wrapping_add(v.len() as u64);
        }
        Ok(())
    }

    /// Records est ← est + (z⊙Hz − est)/k for every tensor, k counting this probe.
    pub fn record_accumulate<'a>(
        &mut self,
        rec: &mut Recorder,
        zhz: impl Tensors<'a>,
    ) -> Result<()> {
        let zhz = zhz.views();
        self.state.check(rec.gpu(), "zhz", &zhz)?;
        let k = (self.state.refreshes + 1) as f32;
        for (est, x) in self.state.h.iter().zip(&zhz) {
            let views: [BufView; 2] = [est.view(), *x];
            elementwise::record(rec, ACCUMULATE, est.len(), &views, &[], 1, |n| {
                AccumulateUniform { n, k, _pad: [0; 2] }
            })?;
        }
        self.state.refreshes += 1;
        Ok(())
    }

    /// Accumulates one probe's z⊙Hz: records and submits.
    pub fn accumulate<'a>(&mut self, gpu: &Gpu, zhz: impl Tensors<'a>) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        self.record_accumulate(&mut rec, zhz)?;
        rec.submit()
    }

    checkpoint_methods!();
}
