//! The kernels `curvgpu bench` and the criterion benches time, each with the bytes it must move
//! per element (the least traffic the update allows), so speed can be read against the copy
//! roofline measured in the same run.
//!
//! Rows ending in `_packed` run the same kernel as the row without the suffix, on the same
//! data, with its tensors packed into one buffer at aligned offsets (as an engine's pooled
//! allocation holds them): the read views that share a buffer with a written one are then
//! bound through the shader variant that declares them `read_write` (see [`crate::record`]).
//! Both rows count the same bytes, so the table shows what sharing a buffer costs.

use crate::buffer::GpuVec;
use crate::diag::{
    AdaHessian, AdaHessianConfig, AdamW, AdamWConfig, Averaging, HutchinsonDiag, SophiaG,
    SophiaGConfig, SophiaH, SophiaHConfig, TensorSpec,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::optimizer::Optimizer;
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};
use crate::rng::{self, Distribution};
use crate::shader;

/// Kernels the bench knows, in table order.
pub const KERNELS: &[&str] = &[
    "sophiag_step",
    "sophiag_step_packed",
    "sophiag_step_unfused",
    "sophiag_refresh",
    "sophiah_step",
    "adahessian_step",
    "adahessian_step_packed",
    "adahessian_step_conv3x3",
    "adamw_step",
    "adamw_step_packed",
    "hutchinson_accumulate",
    "rademacher",
    "dot",
    "dot_packed",
    "poisson2d_apply",
    "poisson2d_apply_packed",
];

/// Minimum bytes per element each kernel must move (f32); a `_packed` row counts what its
/// unpacked twin does.
pub fn bytes_per_element(kernel: &str) -> Option<f64> {
    Some(match kernel.strip_suffix("_packed").unwrap_or(kernel) {
        // read θ, g, m, h; write θ, m
        "sophiag_step" | "sophiah_step" => 24.0,
        // five passes: θ·c (8), m axpby (12), r = |m|/(…) (12), min (8), θ −= … (16)
        "sophiag_step_unfused" => 56.0,
        // read h, ĝ; write h
        "sophiag_refresh" | "hutchinson_accumulate" => 12.0,
        // read θ, g, m, v, z⊙Hz; write θ, m, v
        "adahessian_step" => 32.0,
        // read θ, g, m, v; write θ, m, v
        "adamw_step" => 28.0,
        // the fused step reading per-window means (4/9 B) plus the mean pass (4 + 4/9 B)
        "adahessian_step_conv3x3" => 28.0 + 4.0 + 8.0 / 9.0,
        // write z
        "rademacher" => 4.0,
        // read x, y
        "dot" => 8.0,
        // read x (neighbours from cache), write y
        "poisson2d_apply" => 8.0,
        _ => return None,
    })
    .filter(|_| KERNELS.contains(&kernel))
}

crate::kernel::uniform_struct! {
    /// The unfused passes' length (in vec4s) and scalars.
    pub(crate) struct Scalars { n4: u32, a: f32, b: f32, _pad: u32 }
}

/// dst ← a·dst.
pub(crate) static UNFUSED_SCALE: Kernel = Kernel::new(
    &shader::BENCH_SOPHIAG_UNFUSED,
    "scale",
    &[uniform::<Scalars>(), Slot::Write("dst")],
);
/// dst ← a·dst + b·src_a.
pub(crate) static UNFUSED_AXPBY: Kernel = Kernel::new(
    &shader::BENCH_SOPHIAG_UNFUSED,
    "axpby",
    &[
        uniform::<Scalars>(),
        Slot::Write("dst"),
        Slot::Read("src_a"),
    ],
);
/// dst ← |src_a| / (a·src_b + b).
pub(crate) static UNFUSED_ABS_DIV_AFFINE: Kernel = Kernel::new(
    &shader::BENCH_SOPHIAG_UNFUSED,
    "abs_div_affine",
    &[
        uniform::<Scalars>(),
        Slot::Write("dst"),
        Slot::Read("src_a"),
        Slot::Read("src_b"),
    ],
);
/// dst ← min(dst, a).
pub(crate) static UNFUSED_CLAMP_MAX: Kernel = Kernel::new(
    &shader::BENCH_SOPHIAG_UNFUSED,
    "clamp_max",
    &[uniform::<Scalars>(), Slot::Write("dst")],
);
/// dst ← dst − a·sign(src_a)·src_b.
pub(crate) static UNFUSED_SUB_SIGN_MUL: Kernel = Kernel::new(
    &shader::BENCH_SOPHIAG_UNFUSED,
    "sub_sign_mul",
    &[
        uniform::<Scalars>(),
        Slot::Write("dst"),
        Slot::Read("src_a"),
        Slot::Read("src_b"),
    ],
);

/// The unfused baseline's kernels.
pub(crate) static UNFUSED_KERNELS: &[&Kernel] = &[
    &UNFUSED_SCALE,
    &UNFUSED_AXPBY,
    &UNFUSED_ABS_DIV_AFFINE,
    &UNFUSED_CLAMP_MAX,
    &UNFUSED_SUB_SIGN_MUL,
];

/// One unfused pass: kernel, scalars a and b, destination (named), sources (named).
type Pass<'a> = (
    &'static Kernel,
    f32,
    f32,
    (&'static str, &'a GpuVec<f32>),
    Vec<(&'static str, &'a GpuVec<f32>)>,
);

/// The SophiaG update as five single-operation kernels, how an unfused framework optimizer
/// runs it (56 B/param): the baseline the fused step is compared with. Needs n % 4 == 0.
/// Every tensor is read and written by several passes, so none may overlap another
/// ([`Error::Overlap`]).
#[allow(clippy::too_many_arguments)]
pub fn record_sophiag_unfused(
    rec: &mut Recorder,
    config: &SophiaGConfig,
    theta: &GpuVec<f32>,
    grad: &GpuVec<f32>,
    m: &GpuVec<f32>,
    h: &GpuVec<f32>,
    ratio: &GpuVec<f32>,
) -> Result<()> {
    let n = theta.len();
    let gpu = rec.gpu();
    let named = [
        ("theta", theta),
        ("grad", grad),
        ("m", m),
        ("h", h),
        ("ratio", ratio),
    ];
    let mut views = Vec::with_capacity(named.len());
    for (name, v) in named {
        views.push(v.view().check(gpu, name, n)?);
    }
    // θ is written in the first pass and read by the last, m written by the second and read
    // by the third: pairs no single dispatch sees, so checked here.
    for (i, a) in views.iter().enumerate() {
        for b in &views[i + 1..] {
            a.refuse_overlap(b, || {
                "the unfused passes write and re-read every tensor; pass disjoint views".into()
            })?;
        }
    }
    if !n.is_multiple_of(4) {
        return Err(Error::Shape {
            argument: "theta",
            message: format!("the unfused baseline walks vec4s: n = {n} is not a multiple of 4"),
        });
    }
    let c = config;
    let grid = rec.elementwise_grid((n / 4) as u64)?;
    let constants = rec.wg();
    // (kernel, a, b, dst, sources): each entry point binds only what it reads.
    let passes: [Pass; 5] = [
        (
            &UNFUSED_SCALE,
            1.0 - c.lr * c.weight_decay,
            0.0,
            ("theta", theta),
            vec![],
        ),
        (
            &UNFUSED_AXPBY,
            c.beta1,
            1.0 - c.beta1,
            ("m", m),
            vec![("grad", grad)],
        ),
        (
            &UNFUSED_ABS_DIV_AFFINE,
            c.rho * c.batch_tokens,
            c.eps,
            ("ratio", ratio),
            vec![("m", m), ("h", h)],
        ),
        (&UNFUSED_CLAMP_MAX, 1.0, 0.0, ("ratio", ratio), vec![]),
        (
            &UNFUSED_SUB_SIGN_MUL,
            c.lr,
            0.0,
            ("theta", theta),
            vec![("m", m), ("ratio", ratio)],
        ),
    ];
    for (k, a, b, (dst_name, dst), sources) in passes {
        let s = Scalars {
            n4: (n / 4) as u32,
            a,
            b,
            _pad: 0,
        };
        let mut bindings = vec![
            Binding::uniform(&s),
            Binding::storage(dst.view().named(dst_name)),
        ];
        bindings.extend(
            sources
                .iter()
                .map(|&(name, v)| Binding::storage(v.view().named(name))),
        );
        rec.dispatch(k, &constants, &bindings, grid)?;
    }
    Ok(())
}

/// Records one run of a case.
pub type RecordFn = Box<dyn FnMut(&mut Recorder) -> Result<()>>;

/// Device data for one kernel at one size, and how to record one run of it.
pub struct Case {
    record: RecordFn,
}

impl Case {
    /// A case recording with `record`.
    pub fn new(record: RecordFn) -> Self {
        Case { record }
    }

    /// Records one run.
    pub fn record(&mut self, rec: &mut Recorder) -> Result<()> {
        (self.record)(rec)
    }
}

fn filled(gpu: &Gpu, n: usize, seed: u64) -> Result<GpuVec<f32>> {
    rng::gaussian(gpu, n, seed, 0)
}

/// Tensors of the given lengths packed into one buffer at aligned offsets
/// ([`GpuVec::packed`]), each Gaussian from its seed as [`filled`] makes it (`None`: zeros),
/// so a packed row runs on the same data as its unpacked twin.
fn packed<const N: usize>(
    gpu: &Gpu,
    tensors: [(usize, Option<u64>); N],
) -> Result<[GpuVec<f32>; N]> {
    let vs = GpuVec::<f32>::packed(gpu, &tensors.map(|(len, _)| len))?;
    let mut rec = Recorder::new(gpu);
    for (v, (_, seed)) in vs.iter().zip(tensors) {
        if let Some(seed) = seed {
            rng::record_fill(&mut rec, Distribution::Gaussian, v.view(), seed, 0)?;
        }
    }
    rec.submit()?;
    vs.try_into().map_err(|_| Error::Empty { argument: "lens" })
}

/// Records the next step of `opt` (number `steps() + 1`: the bias corrections move on as a
/// training run's would).
fn next_step<'a, O: Optimizer>(
    opt: &mut O,
    rec: &mut Recorder,
    params: &'a GpuVec<f32>,
    inputs: impl crate::optimizer::StepInputs<'a>,
) -> Result<()> {
    let step = opt.steps() + 1;
    opt.record_step(rec, step, params, inputs)
}

/// Allocates inputs for `kernel` at `n` elements. Returns `None` for an unknown kernel name.
pub fn case(gpu: &Gpu, kernel: &str, n: usize) -> Result<Option<Case>> {
    let v = |seed| filled(gpu, n, seed);
    let zeros = || GpuVec::<f32>::zeros(gpu, n);
    let record: RecordFn = match kernel {
        "sophiag_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, &grad))
        }
        "sophiag_step_packed" => {
            let [theta, grad] = packed(gpu, [(n, Some(1)), (n, Some(2))])?;
            let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, &grad))
        }
        "sophiag_step_unfused" => {
            let (theta, grad, m, h, ratio) = (v(1)?, v(2)?, zeros()?, zeros()?, zeros()?);
            let config = SophiaGConfig::default();
            Box::new(move |rec| record_sophiag_unfused(rec, &config, &theta, &grad, &m, &h, &ratio))
        }
        "sophiag_refresh" => {
            let ghat = v(3)?;
            let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default())?;
            Box::new(move |rec| opt.record_refresh_from_sampled_grads(rec, &ghat))
        }
        "sophiah_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = SophiaH::new(gpu, n, SophiaHConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, &grad))
        }
        "adamw_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = AdamW::new(gpu, n, AdamWConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, &grad))
        }
        "adamw_step_packed" => {
            let [theta, grad] = packed(gpu, [(n, Some(1)), (n, Some(2))])?;
            let mut opt = AdamW::new(gpu, n, AdamWConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, &grad))
        }
        "adahessian_step" => {
            let (theta, grad, zhz) = (v(1)?, v(2)?, v(3)?);
            let mut opt = AdaHessian::new(gpu, n, AdaHessianConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, (&grad, &zhz)))
        }
        "adahessian_step_packed" => {
            let [theta, grad, zhz] = packed(gpu, [(n, Some(1)), (n, Some(2)), (n, Some(3))])?;
            let mut opt = AdaHessian::new(gpu, n, AdaHessianConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, (&grad, &zhz)))
        }
        "adahessian_step_conv3x3" => {
            let n = n / 9 * 9;
            let (theta, grad, zhz) = (filled(gpu, n, 1)?, filled(gpu, n, 2)?, filled(gpu, n, 3)?);
            let spec = TensorSpec::new(&[n / 9, 1, 3, 3], Averaging::ConvKernel);
            let mut opt = AdaHessian::new_multi(gpu, &[spec], AdaHessianConfig::default())?;
            Box::new(move |rec| next_step(&mut opt, rec, &theta, (&grad, &zhz)))
        }
        "hutchinson_accumulate" => {
            let zhz = v(3)?;
            let mut est = HutchinsonDiag::new(gpu, &[n], 7)?;
            Box::new(move |rec| {
                let k = est.probes() + 1;
                est.record_accumulate(rec, k, &zhz)
            })
        }
        "rademacher" => {
            let out = zeros()?;
            Box::new(move |rec| rng::record_rademacher(rec, out.view(), 7, 0))
        }
        "dot" => {
            let (x, y, out) = (v(1)?, v(2)?, GpuVec::<f32>::zeros(gpu, 1)?);
            Box::new(move |rec| {
                reduce::record(rec, Reduction::Dot, x.view(), Some(y.view()), out.view(), 0)
            })
        }
        "dot_packed" => {
            let [x, y, out] = packed(gpu, [(n, Some(1)), (n, Some(2)), (1, None)])?;
            Box::new(move |rec| {
                reduce::record(rec, Reduction::Dot, x.view(), Some(y.view()), out.view(), 0)
            })
        }
        "poisson2d_apply" | "poisson2d_apply_packed" => {
            // Powers of two: nx = 2^⌊log2(n)/2⌋ divides n exactly.
            let nx = 1usize << (n.ilog2() / 2);
            let op = crate::krylov::Poisson::new_2d(nx, n / nx)?;
            let [x, y] = match kernel {
                "poisson2d_apply" => [v(1)?, zeros()?],
                _ => packed(gpu, [(n, Some(1)), (n, None)])?,
            };
            Box::new(move |rec| {
                use crate::krylov::LinearOperator;
                op.record_apply(rec, x.view(), y.view())
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(Case { record }))
}
