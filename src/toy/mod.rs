//! A small MLP on a 2-D toy dataset, with its loss, gradient and exact Hessian-vector products
//! in WGSL: what the in-browser demo trains with SophiaG, AdaHessian and AdamW, and a realistic
//! source of HVPs for Hutchinson and AdaHessian.
//!
//! `Mlp::record_loss_grad` → `kernel!("toy/mlp.wgsl", "toy_sample_grad")` then
//! `"toy_column_sums"`. Every product is computed per sample into scratch and summed per
//! parameter in a fixed order (no float atomics), so results are deterministic run to run.
//!
//! The model: a = W1·x + b1, h = tanh(a), z = W2·h + b2, loss = mean over the N samples of
//! logsumexp(z) − z_label (softmax cross-entropy, full batch). θ is ONE f32 buffer packing, in
//! order, W1 (hidden × inputs, row-major), b1 (hidden), W2 (classes × hidden, row-major) and
//! b2 (classes).

mod data;

use bytemuck::{Pod, Zeroable};

pub use data::{spirals, Dataset};

use crate::buffer::GpuVec;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::kernel::Kernel;
use crate::record::{Binding, Recorder};

/// Largest input dimension: x is re-read from storage, but keeping it small keeps the
/// per-sample work bounded.
pub const MAX_INPUTS: usize = 16;
/// Largest hidden width: the shader holds a sample's activations in private arrays this long.
pub const MAX_HIDDEN: usize = 64;
/// Largest number of classes (the shader's private probability arrays).
pub const MAX_CLASSES: usize = 8;

const SAMPLE_GRAD: Kernel = kernel!("toy/mlp.wgsl", "toy_sample_grad");
const SAMPLE_HVP: Kernel = kernel!("toy/mlp.wgsl", "toy_sample_hvp");
const SAMPLE_CORRECT: Kernel = kernel!("toy/mlp.wgsl", "toy_sample_correct");
const COLUMN_SUMS: Kernel = kernel!("toy/mlp.wgsl", "toy_column_sums");
const COLUMN_SUMS_TIMES_DIR: Kernel = kernel!("toy/mlp.wgsl", "toy_column_sums_times_dir");

/// The network's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Input features (1..=[`MAX_INPUTS`]).
    pub inputs: usize,
    /// Hidden tanh units (1..=[`MAX_HIDDEN`]).
    pub hidden: usize,
    /// Softmax classes (2..=[`MAX_CLASSES`]).
    pub classes: usize,
}

impl MlpShape {
    /// Elements of θ: hidden·inputs + hidden + classes·hidden + classes.
    pub fn param_count(&self) -> usize {
        self.hidden * self.inputs + self.hidden + self.classes * self.hidden + self.classes
    }

    fn check(&self) -> Result<()> {
        let within = |name, value: usize, lo, hi, requirement| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(Error::param(name, value as f64, requirement))
            }
        };
        within("inputs", self.inputs, 1, MAX_INPUTS, "in 1..=16")?;
        within("hidden", self.hidden, 1, MAX_HIDDEN, "in 1..=64")?;
        within("classes", self.classes, 2, MAX_CLASSES, "in 2..=8")
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ToyUniform {
    n: u32,
    inputs: u32,
    hidden: u32,
    classes: u32,
    seed_lo: u32,
    seed_hi: u32,
    sampled: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ColumnsUniform {
    n: u32,
    first_col: u32,
    scale: f32,
    _pad: u32,
}

/// The MLP bound to one uploaded dataset, with the scratch its passes share.
///
/// Scratch holds (param_count + 1) × N f32s (one column per parameter, plus the loss), which
/// must fit one storage binding: [`Mlp::new`] says so with [`Error::TooLarge`] otherwise.
#[derive(Debug)]
pub struct Mlp {
    shape: MlpShape,
    n: usize,
    x: GpuVec<f32>,
    labels: GpuVec<u32>,
    scratch: GpuVec<f32>,
}

impl Mlp {
    /// Uploads `data` for a network of `shape`, after checking that they agree, every label is
    /// below `classes`, every input is finite, and the scratch fits the device.
    pub fn new(gpu: &Gpu, shape: MlpShape, data: &Dataset) -> Result<Self> {
        shape.check()?;
        if data.inputs != shape.inputs || data.classes != shape.classes {
            return Err(Error::Shape {
                argument: "data",
                message: format!(
                    "{} inputs and {} classes, but the network has {} and {}",
                    data.inputs, data.classes, shape.inputs, shape.classes
                ),
            });
        }
        let n = data.labels.len();
        if n == 0 {
            return Err(Error::Empty {
                argument: "data.labels",
            });
        }
        if data.x.len() != n * shape.inputs {
            return Err(Error::LengthMismatch {
                argument: "data.x",
                expected: n * shape.inputs,
                actual: data.x.len(),
            });
        }
        if let Some((i, &y)) = data
            .labels
            .iter()
            .enumerate()
            .find(|(_, &y)| y as usize >= shape.classes)
        {
            return Err(Error::Shape {
                argument: "data.labels",
                message: format!("sample {i} has label {y}, not below {}", shape.classes),
            });
        }
        if let Some(index) = data.x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                argument: "data.x",
                tensor: 0,
                index,
            });
        }
        let cells = (shape.param_count() as u64 + 1) * n as u64;
        let max = gpu.limits().max_storage_buffer_binding_size;
        if 4 * cells > max || cells > u32::MAX as u64 {
            return Err(Error::TooLarge {
                argument: "scratch",
                requested: 4 * cells,
                limit: "max_storage_buffer_binding_size",
                max: max.min(4 * u32::MAX as u64),
            });
        }
        Ok(Mlp {
            shape,
            n,
            x: gpu.upload(&data.x)?,
            labels: gpu.upload(&data.labels)?,
            scratch: gpu.zeros(cells as usize)?,
        })
    }

    /// The network's sizes.
    pub fn shape(&self) -> MlpShape {
        self.shape
    }

    /// Number of samples N.
    pub fn samples(&self) -> usize {
        self.n
    }

    /// Elements of θ.
    pub fn param_count(&self) -> usize {
        self.shape.param_count()
    }

    /// A deterministic θ: weights uniform in ±1/√fan_in (fan_in = inputs for W1, hidden for
    /// W2) from SplitMix64(`seed`), biases zero.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        data::init_params(self.shape, seed)
    }

    fn check_device(&self, gpu: &Gpu) -> Result<()> {
        if self.x.belongs_to(gpu) {
            Ok(())
        } else {
            Err(Error::WrongDevice { argument: "rec" })
        }
    }

    /// Records the per-sample pass `kernel` into scratch.
    fn record_samples(
        &self,
        rec: &mut Recorder,
        kernel: Kernel,
        params: &GpuVec<f32>,
        dir: Option<&GpuVec<f32>>,
        seed: Option<u64>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        self.check_device(gpu)?;
        params.view().check(gpu, "params", self.param_count())?;
        if let Some(v) = dir {
            v.view().check(gpu, "v", self.param_count())?;
        }
        let seed_bits = seed.unwrap_or(0);
        let uniform = ToyUniform {
            n: self.n as u32,
            inputs: self.shape.inputs as u32,
            hidden: self.shape.hidden as u32,
            classes: self.shape.classes as u32,
            seed_lo: seed_bits as u32,
            seed_hi: (seed_bits >> 32) as u32,
            sampled: seed.is_some() as u32,
            _pad: 0,
        };
        let grid = gpu.elementwise_grid(self.n as u64)?;
        rec.dispatch(
            kernel,
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&uniform)),
                Binding::Storage(self.x.view(), None),
                Binding::Storage(self.labels.view(), None),
                Binding::Storage(params.view(), None),
                dir.map_or(Binding::Skip, |v| Binding::Storage(v.view(), None)),
                Binding::Storage(self.scratch.view(), None),
            ],
            grid,
        )
    }

    /// Records out[g] = scale · Σ_i scratch column (first_col + g) for every g < out.len(),
    /// times dir[g] when `dir` is given: one workgroup per output.
    fn record_columns(
        &self,
        rec: &mut Recorder,
        first_col: usize,
        scale: f32,
        out: &GpuVec<f32>,
        dir: Option<&GpuVec<f32>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let uniform = ColumnsUniform {
            n: self.n as u32,
            first_col: first_col as u32,
            scale,
            _pad: 0,
        };
        let (kernel, dir) = match dir {
            Some(d) => (COLUMN_SUMS_TIMES_DIR, Binding::Storage(d.view(), None)),
            None => (COLUMN_SUMS, Binding::Skip),
        };
        rec.dispatch(
            kernel,
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&uniform)),
                Binding::Skip,
                Binding::Skip,
                Binding::Skip,
                dir,
                Binding::Storage(self.scratch.view(), None),
                Binding::Storage(out.view(), None),
            ],
            // One workgroup per parameter, and P ≤ 16·64 + 64 + 8·64 + 8 = 1,608 (MAX_INPUTS,
            // MAX_HIDDEN, MAX_CLASSES) < 65,535, the smallest per-dimension limit WebGPU
            // allows: the grid is always 1-D, which is why the shader reads wid.x only.
            gpu.grid_for_groups(out.len() as u64)?,
        )
    }

    fn mean_scale(&self) -> f32 {
        (1.0 / self.n as f64) as f32
    }

    /// Checks the outputs of a gradient-like pass before anything is recorded.
    fn check_out(
        &self,
        gpu: &Gpu,
        argument: &'static str,
        out: &GpuVec<f32>,
        len: usize,
    ) -> Result<()> {
        out.view().check(gpu, argument, len)
    }

    /// Records the mean cross-entropy into `loss[0]` (`loss` has one element) and its gradient
    /// (param_count elements) into `grad`.
    pub fn record_loss_grad(
        &self,
        rec: &mut Recorder,
        params: &GpuVec<f32>,
        loss: &GpuVec<f32>,
        grad: &GpuVec<f32>,
    ) -> Result<()> {
        self.check_out(rec.gpu(), "loss", loss, 1)?;
        self.check_out(rec.gpu(), "grad", grad, self.param_count())?;
        self.record_samples(rec, SAMPLE_GRAD, params, None, None)?;
        self.record_columns(rec, 0, self.mean_scale(), grad, None)?;
        self.record_columns(rec, self.param_count(), self.mean_scale(), loss, None)
    }

    /// Records the exact Hessian of the mean loss times `v` into `hv` (Pearlmutter's
    /// R-operator, forward-over-reverse; no finite differences).
    pub fn record_hvp(
        &self,
        rec: &mut Recorder,
        params: &GpuVec<f32>,
        v: &GpuVec<f32>,
        hv: &GpuVec<f32>,
    ) -> Result<()> {
        self.check_out(rec.gpu(), "hv", hv, self.param_count())?;
        self.record_samples(rec, SAMPLE_HVP, params, Some(v), None)?;
        self.record_columns(rec, 0, self.mean_scale(), hv, None)
    }

    /// Records z ⊙ (H·z) into `zhz` for a probe `z` (e.g. [`crate::rng::record_rademacher`]):
    /// the Hutchinson term [`crate::diag::AdaHessian`] and [`crate::diag::SophiaH`] take, in
    /// the HVP's own passes.
    pub fn record_hutchinson_probe(
        &self,
        rec: &mut Recorder,
        params: &GpuVec<f32>,
        z: &GpuVec<f32>,
        zhz: &GpuVec<f32>,
    ) -> Result<()> {
        self.check_out(rec.gpu(), "zhz", zhz, self.param_count())?;
        self.record_samples(rec, SAMPLE_HVP, params, Some(z), None)?;
        self.record_columns(rec, 0, self.mean_scale(), zhz, Some(z))
    }

    /// Records the gradient of the mean loss with each label replaced by ŷ_i drawn from the
    /// model's own softmax at x_i: the Gauss-Newton-Bartlett estimator's input for SophiaG's
    /// `refresh_hessian`.
    ///
    /// The draw for sample i uses u = (w >> 8)·2⁻²⁴, w element i of the Philox stream for
    /// `seed` (as [`crate::rng`] and [`crate::reference::philox::philox_u32`] lay it out);
    /// ŷ_i is the first class whose cumulative probability exceeds u (the last class if
    /// rounding leaves none). Use a fresh seed per refresh.
    pub fn record_sampled_grad(
        &self,
        rec: &mut Recorder,
        params: &GpuVec<f32>,
        seed: u64,
        grad: &GpuVec<f32>,
    ) -> Result<()> {
        self.check_out(rec.gpu(), "grad", grad, self.param_count())?;
        self.record_samples(rec, SAMPLE_GRAD, params, None, Some(seed))?;
        self.record_columns(rec, 0, self.mean_scale(), grad, None)
    }

    /// Records the fraction of samples whose largest logit (the first, on ties) is their label
    /// into `out[0]` (`out` has one element).
    pub fn record_accuracy(
        &self,
        rec: &mut Recorder,
        params: &GpuVec<f32>,
        out: &GpuVec<f32>,
    ) -> Result<()> {
        self.check_out(rec.gpu(), "out", out, 1)?;
        self.record_samples(rec, SAMPLE_CORRECT, params, None, None)?;
        self.record_columns(rec, 0, self.mean_scale(), out, None)
    }
}

/// Conveniences that allocate, submit and read back: the `*_async` forms are the one
/// implementation, the blocking names their native wrappers.
impl Mlp {
    /// Mean loss and gradient at `params`: records, submits and reads back (blocking; the
    /// native wrapper of [`Mlp::loss_grad_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn loss_grad(&self, gpu: &Gpu, params: &GpuVec<f32>) -> Result<(f32, Vec<f32>)> {
        pollster::block_on(self.loss_grad_async(gpu, params))
    }

    /// Mean loss and gradient at `params`: records, submits and awaits the readback (async
    /// form of `Mlp::loss_grad`).
    pub async fn loss_grad_async(
        &self,
        gpu: &Gpu,
        params: &GpuVec<f32>,
    ) -> Result<(f32, Vec<f32>)> {
        let [loss, grad] = read_back(gpu, [1, self.param_count()], |rec, out| {
            self.record_loss_grad(rec, params, &out[0], &out[1])
        })
        .await?;
        Ok((loss[0], grad))
    }

    /// H·v at `params` (blocking; the native wrapper of [`Mlp::hvp_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn hvp(&self, gpu: &Gpu, params: &GpuVec<f32>, v: &GpuVec<f32>) -> Result<Vec<f32>> {
        pollster::block_on(self.hvp_async(gpu, params, v))
    }

    /// H·v at `params` (async form of `Mlp::hvp`).
    pub async fn hvp_async(
        &self,
        gpu: &Gpu,
        params: &GpuVec<f32>,
        v: &GpuVec<f32>,
    ) -> Result<Vec<f32>> {
        let [hv] = read_back(gpu, [self.param_count()], |rec, out| {
            self.record_hvp(rec, params, v, &out[0])
        })
        .await?;
        Ok(hv)
    }

    /// The sampled-label gradient for `seed` (blocking; the native wrapper of
    /// [`Mlp::sampled_grad_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sampled_grad(&self, gpu: &Gpu, params: &GpuVec<f32>, seed: u64) -> Result<Vec<f32>> {
        pollster::block_on(self.sampled_grad_async(gpu, params, seed))
    }

    /// The sampled-label gradient for `seed` (async form of `Mlp::sampled_grad`).
    pub async fn sampled_grad_async(
        &self,
        gpu: &Gpu,
        params: &GpuVec<f32>,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let [grad] = read_back(gpu, [self.param_count()], |rec, out| {
            self.record_sampled_grad(rec, params, seed, &out[0])
        })
        .await?;
        Ok(grad)
    }

    /// Training accuracy at `params` (blocking; the native wrapper of
    /// [`Mlp::accuracy_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn accuracy(&self, gpu: &Gpu, params: &GpuVec<f32>) -> Result<f32> {
        pollster::block_on(self.accuracy_async(gpu, params))
    }

    /// Training accuracy at `params` (async form of `Mlp::accuracy`).
    pub async fn accuracy_async(&self, gpu: &Gpu, params: &GpuVec<f32>) -> Result<f32> {
        let [acc] = read_back(gpu, [1], |rec, out| {
            self.record_accuracy(rec, params, &out[0])
        })
        .await?;
        Ok(acc[0])
    }
}

/// The conveniences' one body: allocates zeroed outputs of `lens`, has `record` record into
/// them (in that order), submits, and awaits each readback.
async fn read_back<const N: usize>(
    gpu: &Gpu,
    lens: [usize; N],
    record: impl FnOnce(&mut Recorder, &[GpuVec<f32>]) -> Result<()>,
) -> Result<[Vec<f32>; N]> {
    let mut outs = Vec::with_capacity(N);
    for len in lens {
        outs.push(gpu.zeros::<f32>(len)?);
    }
    let mut rec = Recorder::new(gpu);
    record(&mut rec, &outs)?;
    rec.submit()?;
    let mut host: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    for (h, out) in host.iter_mut().zip(&outs) {
        *h = gpu.read_async(out).await?;
    }
    Ok(host)
}
