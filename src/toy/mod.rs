//! A small MLP on a 2-D toy dataset, with its loss, gradient and exact Hessian-vector products
//! in WGSL: what the in-browser demo trains with SophiaG, AdaHessian and AdamW, and a realistic
//! source of HVPs for Hutchinson and AdaHessian.
//!
//! `Mlp::record_loss_grad` → `TOY_SAMPLE_GRAD` then `TOY_COLUMN_SUMS`
//! (`shaders/toy/mlp.wgsl`). Every product is computed per sample into scratch and summed per
//! parameter in a fixed order (no float atomics), so results are deterministic run to run.
//!
//! The model: a = W1·x + b1, h = tanh(a), z = W2·h + b2, loss = mean over the N samples of
//! logsumexp(z) − z_label (softmax cross-entropy, full batch). θ is ONE f32 tensor packing, in
//! order, W1 (hidden × inputs, row-major), b1 (hidden), W2 (classes × hidden, row-major) and
//! b2 (classes).
//!
//! **Views.** Every `record_*` takes views (a `&GpuVec<f32>` or a [`BufView`] of the caller's
//! buffer); they may share one buffer when they are disjoint. Each pass reads θ (and the
//! direction) in a per-sample dispatch into the model's own scratch, and writes its outputs in
//! later dispatches that read only that scratch (and, for the Hutchinson probe, z): so an output
//! may overlap θ, or the HVP's `v`, and in-place forms such as `v ← H·v` or `θ ← ∇L(θ)` are
//! allowed. Two outputs of one call that overlap, and z⊙Hz overlapping z, are
//! [`Error::Overlap`].

mod data;

pub use data::{spirals, Dataset};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

/// Largest input dimension: x is re-read from storage, but keeping it small keeps the
/// per-sample work bounded.
pub const MAX_INPUTS: usize = 16;
/// Largest hidden width: the shader holds a sample's activations in private arrays this long.
pub const MAX_HIDDEN: usize = 64;
/// Largest number of classes (the shader's private probability arrays).
pub const MAX_CLASSES: usize = 8;

crate::kernel::uniform_struct! {
    /// The per-sample passes' parameters (WGSL `Toy`).
    pub(crate) struct ToyUniform {
        n: u32, inputs: u32, hidden: u32, classes: u32, seed_lo: u32, seed_hi: u32,
        sampled: u32, _pad: u32,
    }
}

crate::kernel::uniform_struct! {
    /// The column passes' parameters (WGSL `Columns`).
    pub(crate) struct ColumnsUniform { n: u32, first_col: u32, scale: f32, _pad: u32 }
}

/// Per-sample loss and gradient (true or sampled labels) into scratch.
pub(crate) static TOY_SAMPLE_GRAD: Kernel = Kernel::new(
    &shader::TOY_MLP,
    "toy_sample_grad",
    &[
        uniform::<ToyUniform>(),
        Slot::Read("x"),
        Slot::Read("labels"),
        Slot::Read("params"),
        Slot::Gap,
        Slot::Write("scratch"),
    ],
);
/// Per-sample Hessian-vector product along `dir` into scratch.
pub(crate) static TOY_SAMPLE_HVP: Kernel = Kernel::new(
    &shader::TOY_MLP,
    "toy_sample_hvp",
    &[
        uniform::<ToyUniform>(),
        Slot::Read("x"),
        Slot::Read("labels"),
        Slot::Read("params"),
        Slot::Read("v"),
        Slot::Write("scratch"),
    ],
);
/// Per-sample 1/0 for a correct prediction into scratch column 0.
pub(crate) static TOY_SAMPLE_CORRECT: Kernel = Kernel::new(
    &shader::TOY_MLP,
    "toy_sample_correct",
    &[
        uniform::<ToyUniform>(),
        Slot::Read("x"),
        Slot::Read("labels"),
        Slot::Read("params"),
        Slot::Gap,
        Slot::Write("scratch"),
    ],
);
/// out[g] = scale · Σ of scratch column first_col + g (scratch only read, declared
/// `read_write` in WGSL).
pub(crate) static TOY_COLUMN_SUMS: Kernel = Kernel::new(
    &shader::TOY_MLP,
    "toy_column_sums",
    &[
        uniform::<ColumnsUniform>(),
        Slot::Gap,
        Slot::Gap,
        Slot::Gap,
        Slot::Gap,
        Slot::Write("scratch"),
        Slot::Write("out"),
    ],
);
/// out[g] = dir[g] · the column total: z ⊙ (H·z).
pub(crate) static TOY_COLUMN_SUMS_TIMES_DIR: Kernel = Kernel::new(
    &shader::TOY_MLP,
    "toy_column_sums_times_dir",
    &[
        uniform::<ColumnsUniform>(),
        Slot::Gap,
        Slot::Gap,
        Slot::Gap,
        Slot::Read("z"),
        Slot::Write("scratch"),
        Slot::Write("out"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &TOY_SAMPLE_GRAD,
    &TOY_SAMPLE_HVP,
    &TOY_SAMPLE_CORRECT,
    &TOY_COLUMN_SUMS,
    &TOY_COLUMN_SUMS_TIMES_DIR,
];

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
            x: GpuVec::upload(gpu, &data.x)?,
            labels: GpuVec::upload(gpu, &data.labels)?,
            scratch: GpuVec::zeros(gpu, cells as usize)?,
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

    /// θ checked and named `params`, after the recorder's device.
    fn check_params<'a>(&self, gpu: &Gpu, params: BufView<'a>) -> Result<BufView<'a>> {
        self.check_device(gpu)?;
        params.check(gpu, "params", self.param_count())
    }

    /// Records the per-sample pass `kernel` into scratch (views already checked).
    fn record_samples(
        &self,
        rec: &mut Recorder,
        kernel: &'static Kernel,
        params: BufView<'_>,
        dir: Option<BufView<'_>>,
        seed: Option<u64>,
    ) -> Result<()> {
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
        let grid = rec.elementwise_grid(self.n as u64)?;
        rec.dispatch(
            kernel,
            &rec.wg(),
            &[
                Binding::uniform(&uniform),
                Binding::storage(self.x.view().named("x")),
                Binding::storage(self.labels.view().named("labels")),
                Binding::storage(params),
                dir.map_or(Binding::Skip, Binding::storage),
                Binding::storage(self.scratch.view().named("scratch")),
            ],
            grid,
        )
    }

    /// Records out[g] = scale · Σ_i scratch column (first_col + g) for every g < out.len(),
    /// times dir[g] when `dir` is given: one workgroup per output (views already checked).
    fn record_columns(
        &self,
        rec: &mut Recorder,
        first_col: usize,
        scale: f32,
        out: BufView<'_>,
        dir: Option<BufView<'_>>,
    ) -> Result<()> {
        let uniform = ColumnsUniform {
            n: self.n as u32,
            first_col: first_col as u32,
            scale,
            _pad: 0,
        };
        let (kernel, dir) = match dir {
            Some(d) => (&TOY_COLUMN_SUMS_TIMES_DIR, Binding::storage(d)),
            None => (&TOY_COLUMN_SUMS, Binding::Skip),
        };
        // One workgroup per parameter, and P ≤ 16·64 + 64 + 8·64 + 8 = 1,608 (MAX_INPUTS,
        // MAX_HIDDEN, MAX_CLASSES) < 65,535, the smallest per-dimension limit WebGPU allows:
        // the grid is always 1-D, which is why the shader reads wid.x only.
        let grid = rec.grid_for_groups(out.len() as u64)?;
        rec.dispatch(
            kernel,
            &rec.wg(),
            &[
                Binding::uniform(&uniform),
                Binding::Skip,
                Binding::Skip,
                Binding::Skip,
                dir,
                Binding::storage(self.scratch.view().named("scratch")),
                Binding::storage(out),
            ],
            grid,
        )
    }

    fn mean_scale(&self) -> f32 {
        (1.0 / self.n as f64) as f32
    }

    /// Records the mean cross-entropy into `loss[0]` (`loss` has one element) and its gradient
    /// (param_count elements) into `grad`.
    ///
    /// `loss` and `grad` may overlap `params` (θ is consumed by the first pass: `grad` = θ
    /// computes θ ← ∇L(θ) in place), not each other ([`Error::Overlap`]).
    pub fn record_loss_grad<'a>(
        &self,
        rec: &mut Recorder,
        params: impl Into<BufView<'a>>,
        loss: impl Into<BufView<'a>>,
        grad: impl Into<BufView<'a>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (params, loss, grad) = (params.into(), loss.into(), grad.into());
        self.check_device(gpu)?;
        let loss = loss.check(gpu, "loss", 1)?;
        let grad = grad.check(gpu, "grad", self.param_count())?;
        let params = self.check_params(gpu, params)?;
        // Written by two dispatches: neither sees the other, so the core cannot refuse it.
        disjoint_outputs(loss, grad)?;
        self.record_samples(rec, &TOY_SAMPLE_GRAD, params, None, None)?;
        self.record_columns(rec, 0, self.mean_scale(), grad, None)?;
        self.record_columns(rec, self.param_count(), self.mean_scale(), loss, None)
    }

    /// Records the exact Hessian of the mean loss times `v` into `hv` (Pearlmutter's
    /// R-operator, forward-over-reverse; no finite differences).
    ///
    /// `hv` may overlap `params` and `v`: both are consumed by the first pass, so `hv` = `v`
    /// computes v ← H·v in place.
    pub fn record_hvp<'a>(
        &self,
        rec: &mut Recorder,
        params: impl Into<BufView<'a>>,
        v: impl Into<BufView<'a>>,
        hv: impl Into<BufView<'a>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (params, v, hv) = (params.into(), v.into(), hv.into());
        self.check_device(gpu)?;
        let hv = hv.check(gpu, "hv", self.param_count())?;
        let params = self.check_params(gpu, params)?;
        let v = v.check(gpu, "v", self.param_count())?;
        self.record_samples(rec, &TOY_SAMPLE_HVP, params, Some(v), None)?;
        self.record_columns(rec, 0, self.mean_scale(), hv, None)
    }

    /// Records z ⊙ (H·z) into `zhz` for a probe `z` (e.g. [`crate::rng::record_rademacher`]):
    /// the Hutchinson term [`crate::diag::AdaHessian`] and [`crate::diag::SophiaH`] take, in
    /// the HVP's own passes.
    ///
    /// `zhz` may overlap `params`, not `z`: the pass that writes z⊙Hz reads z
    /// ([`Error::Overlap`]; no in-place form).
    pub fn record_hutchinson_probe<'a>(
        &self,
        rec: &mut Recorder,
        params: impl Into<BufView<'a>>,
        z: impl Into<BufView<'a>>,
        zhz: impl Into<BufView<'a>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (params, z, zhz) = (params.into(), z.into(), zhz.into());
        self.check_device(gpu)?;
        let zhz = zhz.check(gpu, "zhz", self.param_count())?;
        let params = self.check_params(gpu, params)?;
        let z = z.check(gpu, "z", self.param_count())?;
        // The column pass would refuse it too, but only after the sample pass was recorded.
        z.refuse_overlap(&zhz, || {
            "the pass writing `zhz` reads `z`; pass a separate output".into()
        })?;
        self.record_samples(rec, &TOY_SAMPLE_HVP, params, Some(z), None)?;
        self.record_columns(rec, 0, self.mean_scale(), zhz, Some(z))
    }

    /// Records the gradient of the mean loss with each label replaced by ŷ_i drawn from the
    /// model's own softmax at x_i: the Gauss-Newton-Bartlett estimator's input for SophiaG's
    /// `refresh_from_sampled_grads`.
    ///
    /// The draw for sample i uses u = (w >> 8)·2⁻²⁴, w element i of the Philox stream for
    /// `seed` (as [`crate::rng`] and `reference::philox::philox_u32` lay it out);
    /// ŷ_i is the first class whose cumulative probability exceeds u (the last class if
    /// rounding leaves none). Use a fresh seed per refresh. `grad` may overlap `params`.
    pub fn record_sampled_grad<'a>(
        &self,
        rec: &mut Recorder,
        params: impl Into<BufView<'a>>,
        seed: u64,
        grad: impl Into<BufView<'a>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (params, grad) = (params.into(), grad.into());
        self.check_device(gpu)?;
        let grad = grad.check(gpu, "grad", self.param_count())?;
        let params = self.check_params(gpu, params)?;
        self.record_samples(rec, &TOY_SAMPLE_GRAD, params, None, Some(seed))?;
        self.record_columns(rec, 0, self.mean_scale(), grad, None)
    }

    /// Records the fraction of samples whose largest logit (the first, on ties) is their label
    /// into `out[0]` (`out` has one element). `out` may overlap `params`.
    pub fn record_accuracy<'a>(
        &self,
        rec: &mut Recorder,
        params: impl Into<BufView<'a>>,
        out: impl Into<BufView<'a>>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let (params, out) = (params.into(), out.into());
        self.check_device(gpu)?;
        let out = out.check(gpu, "out", 1)?;
        let params = self.check_params(gpu, params)?;
        self.record_samples(rec, &TOY_SAMPLE_CORRECT, params, None, None)?;
        self.record_columns(rec, 0, self.mean_scale(), out, None)
    }
}

/// Two outputs written by separate dispatches must not share bytes.
fn disjoint_outputs(a: BufView<'_>, b: BufView<'_>) -> Result<()> {
    a.refuse_overlap(&b, || {
        "both are outputs, written by separate passes; pass disjoint views".into()
    })
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
        outs.push(GpuVec::<f32>::zeros(gpu, len)?);
    }
    let mut rec = Recorder::new(gpu);
    record(&mut rec, &outs)?;
    rec.submit()?;
    let mut host: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    for (h, out) in host.iter_mut().zip(&outs) {
        *h = out.read_async().await?;
    }
    Ok(host)
}
