//! Counter-based random vectors: `rng::record_rademacher` → `kernel!("common/rng.wgsl", "rademacher")`.
//!
//! Element i of a stream is a pure function of `(seed, offset + i)` through Philox4x32-10, so
//! the u32 words and the Rademacher signs are bit-identical on every backend and match
//! [`crate::reference::philox`]. Gaussians go through `log`, `sqrt`, `cos` and `sin`, whose
//! accuracy WGSL leaves to the backend: they follow the f64 reference within those functions'
//! error bounds, not bit for bit. Near z = 0 that is an absolute error of order 1e-4 (log u1
//! for u1 → 1 carries an absolute, not relative, error), so do not compare Gaussians exactly.

use bytemuck::Pod;

use crate::buffer::{BufView, GpuVec};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// A fill's stream position.
    pub(crate) struct RngUniform {
        n: u32, seed_lo: u32, seed_hi: u32, offset_lo: u32, offset_hi: u32,
        _pad0: u32, _pad1: u32, _pad2: u32,
    }
}

const SLOTS: &[Slot] = &[uniform::<RngUniform>(), Slot::Write("out")];
static PHILOX_U32: Kernel = Kernel::new(&shader::RNG, "philox_u32", SLOTS);
static RADEMACHER: Kernel = Kernel::new(&shader::RNG, "rademacher", SLOTS);
static GAUSSIAN: Kernel = Kernel::new(&shader::RNG, "gaussian", SLOTS);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&PHILOX_U32, &RADEMACHER, &GAUSSIAN];

/// Which distribution to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Raw Philox words (bind a u32 buffer).
    Bits,
    /// ±1 with equal probability: Hutchinson / Hessian-vector probes.
    Rademacher,
    /// Standard normal (Box–Muller).
    Gaussian,
}

impl Distribution {
    fn kernel(self) -> &'static Kernel {
        match self {
            Distribution::Bits => &PHILOX_U32,
            Distribution::Rademacher => &RADEMACHER,
            Distribution::Gaussian => &GAUSSIAN,
        }
    }
}

/// Records `out[i] = draw(seed, offset + i)` for every element of `out`.
pub fn record_fill(
    rec: &mut Recorder,
    dist: Distribution,
    out: BufView<'_>,
    seed: u64,
    offset: u64,
) -> Result<()> {
    let out = out.check(rec.gpu(), "out", out.len())?;
    let chunk = rec.binding_chunk(64)?;
    let mut start = 0;
    while start < out.len() {
        let len = chunk.min(out.len() - start);
        let first = offset.wrapping_add(start as u64);
        let uniform = RngUniform {
            n: len as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            offset_lo: first as u32,
            offset_hi: (first >> 32) as u32,
            ..Default::default()
        };
        // One invocation per Philox block the chunk touches.
        let grid = rec.elementwise_grid(len as u64 / 4 + 2)?;
        rec.dispatch(
            dist.kernel(),
            &rec.wg(),
            &[
                Binding::uniform(&uniform),
                Binding::storage(out.sub(start, len)),
            ],
            grid,
        )?;
        start += len;
    }
    Ok(())
}

/// Records a Rademacher (±1) probe into `out`.
pub fn record_rademacher(
    rec: &mut Recorder,
    out: BufView<'_>,
    seed: u64,
    offset: u64,
) -> Result<()> {
    record_fill(rec, Distribution::Rademacher, out, seed, offset)
}

/// A new vector of `n` draws (submitted; read it or use it in later work).
pub fn fill_new<T: Pod>(
    gpu: &Gpu,
    dist: Distribution,
    n: usize,
    seed: u64,
    offset: u64,
) -> Result<GpuVec<T>> {
    let out = GpuVec::<T>::zeros(gpu, n)?;
    let mut rec = Recorder::new(gpu);
    record_fill(&mut rec, dist, out.view(), seed, offset)?;
    rec.submit()?;
    Ok(out)
}

/// `n` Rademacher signs from `(seed, offset)`.
pub fn rademacher(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Result<GpuVec<f32>> {
    fill_new(gpu, Distribution::Rademacher, n, seed, offset)
}

/// `n` standard normals from `(seed, offset)`.
pub fn gaussian(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Result<GpuVec<f32>> {
    fill_new(gpu, Distribution::Gaussian, n, seed, offset)
}

/// `n` raw Philox4x32-10 words from `(seed, offset)`.
pub fn philox_u32(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Result<GpuVec<u32>> {
    fill_new(gpu, Distribution::Bits, n, seed, offset)
}
