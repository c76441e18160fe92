//! The kernels `curvgpu bench` and the criterion benches time, each with the bytes it must move
//! per element (the least traffic the update allows), so speed can be read against the copy
//! roofline measured in the same run.

use bytemuck::{Pod, Zeroable};

use crate::buffer::GpuVec;
use crate::diag::{
    AdaHessian, AdaHessianConfig, AdamW, AdamWConfig, Averaging, HutchinsonDiag, SophiaG,
    SophiaGConfig, SophiaH, SophiaHConfig, TensorSpec,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::kernel::Kernel;
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};
use crate::rng;

/// Kernels the bench knows, in table order.
pub const KERNELS: &[&str] = &[
    "sophiag_step",
    "sophiag_step_unfused",
    "sophiag_refresh",
    "sophiah_step",
    "adahessian_step",
    "adahessian_step_conv3x3",
    "adamw_step",
    "hutchinson_accumulate",
    "rademacher",
    "dot",
    "poisson2d_apply",
];

/// Minimum bytes per element each kernel must move (f32).
pub fn bytes_per_element(kernel: &str) -> Option<f64> {
    Some(match kernel {
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
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Scalars {
    n4: u32,
    a: f32,
    b: f32,
    _pad: u32,
}

/// One unfused pass: entry point, scalars a and b, destination, sources.
type Pass<'a> = (Kernel, f32, f32, &'a GpuVec<f32>, Vec<&'a GpuVec<f32>>);

/// The SophiaG update as five single-operation kernels, how an unfused framework optimizer
/// runs it (56 B/param): the baseline the fused step is compared with. Needs n % 4 == 0.
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
    for (name, v) in [("grad", grad), ("m", m), ("h", h), ("ratio", ratio)] {
        if v.len() != n {
            return Err(Error::LengthMismatch {
                argument: name,
                expected: n,
                actual: v.len(),
            });
        }
    }
    if !n.is_multiple_of(4) {
        return Err(Error::Shape {
            argument: "theta",
            message: format!("the unfused baseline walks vec4s: n = {n} is not a multiple of 4"),
        });
    }
    let gpu = rec.gpu();
    let c = config;
    let grid = gpu.elementwise_grid((n / 4) as u64)?;
    let constants = gpu.wg_constants();
    // (entry, a, b, dst, sources): each entry point binds only what it reads.
    let passes: [Pass; 5] = [
        (
            kernel!("bench/sophiag_unfused.wgsl", "scale"),
            1.0 - c.lr * c.weight_decay,
            0.0,
            theta,
            vec![],
        ),
        (
            kernel!("bench/sophiag_unfused.wgsl", "axpby"),
            c.beta1,
            1.0 - c.beta1,
            m,
            vec![grad],
        ),
        (
            kernel!("bench/sophiag_unfused.wgsl", "abs_div_affine"),
            c.rho * c.batch_tokens,
            c.eps,
            ratio,
            vec![m, h],
        ),
        (
            kernel!("bench/sophiag_unfused.wgsl", "clamp_max"),
            1.0,
            0.0,
            ratio,
            vec![],
        ),
        (
            kernel!("bench/sophiag_unfused.wgsl", "sub_sign_mul"),
            c.lr,
            0.0,
            theta,
            vec![m, ratio],
        ),
    ];
    for (k, a, b, dst, sources) in passes {
        let s = Scalars {
            n4: (n / 4) as u32,
            a,
            b,
            _pad: 0,
        };
        let mut bindings = vec![
            Binding::Uniform(bytemuck::bytes_of(&s)),
            Binding::Storage(dst.view(), None),
        ];
        bindings.extend(sources.iter().map(|v| Binding::Storage(v.view(), None)));
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

/// Allocates inputs for `kernel` at `n` elements. Returns `None` for an unknown kernel name.
pub fn case(gpu: &Gpu, kernel: &str, n: usize) -> Result<Option<Case>> {
    let v = |seed| filled(gpu, n, seed);
    let record: RecordFn = match kernel {
        "sophiag_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default())?;
            Box::new(move |rec| opt.record(rec, &theta, &grad))
        }
        "sophiag_step_unfused" => {
            let (theta, grad, m, h, ratio) =
                (v(1)?, v(2)?, gpu.zeros(n)?, gpu.zeros(n)?, gpu.zeros(n)?);
            let config = SophiaGConfig::default();
            Box::new(move |rec| record_sophiag_unfused(rec, &config, &theta, &grad, &m, &h, &ratio))
        }
        "sophiag_refresh" => {
            let ghat = v(3)?;
            let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default())?;
            Box::new(move |rec| opt.record_refresh(rec, &ghat))
        }
        "sophiah_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = SophiaH::new(gpu, n, SophiaHConfig::default())?;
            Box::new(move |rec| opt.record(rec, &theta, &grad))
        }
        "adamw_step" => {
            let (theta, grad) = (v(1)?, v(2)?);
            let mut opt = AdamW::new(gpu, n, AdamWConfig::default())?;
            Box::new(move |rec| opt.record(rec, &theta, &grad))
        }
        "adahessian_step" => {
            let (theta, grad, zhz) = (v(1)?, v(2)?, v(3)?);
            let mut opt = AdaHessian::new(gpu, n, AdaHessianConfig::default())?;
            Box::new(move |rec| opt.record(rec, &theta, &grad, &zhz))
        }
        "adahessian_step_conv3x3" => {
            let n = n / 9 * 9;
            let (theta, grad, zhz) = (filled(gpu, n, 1)?, filled(gpu, n, 2)?, filled(gpu, n, 3)?);
            let spec = TensorSpec::new(&[n / 9, 1, 3, 3], Averaging::ConvKernel);
            let mut opt = AdaHessian::new_multi(gpu, &[spec], AdaHessianConfig::default())?;
            Box::new(move |rec| opt.record(rec, &theta, &grad, &zhz))
        }
        "hutchinson_accumulate" => {
            let zhz = v(3)?;
            let mut est = HutchinsonDiag::new(gpu, &[n], 7)?;
            Box::new(move |rec| est.record_accumulate(rec, &zhz))
        }
        "rademacher" => {
            let out = gpu.zeros::<f32>(n)?;
            Box::new(move |rec| rng::record_rademacher(rec, out.view(), 7, 0))
        }
        "dot" => {
            let (x, y, out) = (v(1)?, v(2)?, gpu.zeros::<f32>(1)?);
            Box::new(move |rec| {
                reduce::record(rec, Reduction::Dot, x.view(), Some(y.view()), out.view(), 0)
            })
        }
        "poisson2d_apply" => {
            // Powers of two: nx = 2^⌊log2(n)/2⌋ divides n exactly.
            let nx = 1usize << (n.ilog2() / 2);
            let op = crate::krylov::Poisson::new_2d(nx, n / nx)?;
            let (x, y) = (v(1)?, gpu.zeros::<f32>(n)?);
            Box::new(move |rec| {
                use crate::krylov::LinearOperator;
                op.record_apply(rec, x.view(), y.view())
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(Case { record }))
}
