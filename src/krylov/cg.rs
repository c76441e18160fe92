//! Conjugate gradient with scipy's semantics and every scalar on the GPU:
//! [`cg_async`] → [`CG_UPDATE`] and friends → `shaders/krylov/cg.wgsl`'s `cg_update`. The async
//! forms are the one implementation; [`cg`] and [`cg_batched`] block on them natively.

use super::operator::{scoped, square_dim, Direction, LinearOperator};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};
use crate::shader;
use crate::vector::record_copy;

/// Preconditioner M ≈ A⁻¹ applied as z = M·r.
#[derive(Clone, Copy, Default)]
pub enum Preconditioner<'a> {
    /// z = r.
    #[default]
    None,
    /// z = r / diag(A), from the operator's [`LinearOperator::record_diagonal`].
    Jacobi,
    /// Any operator applying M (e.g. a learned preconditioner such as DCDM's network).
    Operator(&'a dyn LinearOperator),
}

/// Options, named and defaulted as scipy's `cg(A, b, x0, *, rtol=1e-5, atol=0., maxiter=None, M=None)`.
#[derive(Clone, Copy)]
pub struct CgOptions<'a> {
    /// Relative tolerance on ‖r‖/‖b‖ (1e-5).
    pub rtol: f32,
    /// Absolute tolerance on ‖r‖ (0); the test is ‖r‖ < max(atol, rtol·‖b‖), strict, and a
    /// residual of exactly 0 has converged too (so `rtol = atol = 0` solves until r = 0 or
    /// `maxiter`).
    pub atol: f32,
    /// Iteration limit, at least 1; `None` is scipy's 10·n.
    pub maxiter: Option<usize>,
    /// Iterations recorded between reads of the convergence flags (at least 1). Iterations after
    /// convergence are no-ops on the GPU, so this trades wasted work against host round-trips.
    pub check_every: usize,
    /// Also return ‖r‖ at every iteration (one f32 per iteration on the device).
    pub history: bool,
    /// The preconditioner.
    pub preconditioner: Preconditioner<'a>,
}

/// Default `check_every`, measured on lavapipe (Poisson 256², 573 iterations): every
/// iteration 735 ms, every 4: 585, every 16: 582, every 64: 565, every 256: 762 ms (up to 255
/// wasted no-op iterations). 16 is within 3% of the best and wastes at most 15 iterations;
/// on the 1024² problem (~10 ms per iteration) the readback cost vanishes in the noise.
pub const DEFAULT_CHECK_EVERY: usize = 16;

impl Default for CgOptions<'_> {
    fn default() -> Self {
        CgOptions {
            rtol: 1e-5,
            atol: 0.0,
            maxiter: None,
            check_every: DEFAULT_CHECK_EVERY,
            history: false,
            preconditioner: Preconditioner::None,
        }
    }
}

/// What [`cg`] returns for one right-hand side.
#[derive(Debug)]
pub struct CgResult {
    /// The solution estimate.
    pub x: GpuVec<f32>,
    /// Iterations taken (updates of x), as scipy counts them.
    pub iterations: usize,
    /// Whether ‖r‖ < max(atol, rtol·‖b‖), or r = 0, was reached within `maxiter`.
    pub converged: bool,
    /// The recursively updated ‖r‖ at exit.
    pub residual: f32,
    /// ‖r‖ before each iteration and after the last, when requested.
    pub history: Option<Vec<f32>>,
}

/// Counts from one solve, for benchmarks: work per iteration and host traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgStats {
    /// Dispatches recorded per iteration (all right-hand sides).
    pub dispatches_per_iteration: usize,
    /// Queue submissions, setup included.
    pub submits: usize,
    /// Host readbacks (convergence checks and the final read).
    pub readbacks: usize,
    /// Iterations recorded (≥ the iterations taken: the last batch runs past convergence).
    pub iterations_recorded: usize,
}

crate::kernel::uniform_struct! {
    /// One system's parameters.
    pub(crate) struct System {
        sys: u32, n4: u32, preconditioned: u32, history: u32, atol: f32, rtol: f32,
        _pad0: u32, _pad1: u32,
    }
}

/// The scalar kernels that keep a history: the tolerance and first test, the count and test.
const SCALAR_HIST_SLOTS: &[Slot] = &[
    uniform::<System>(),
    Slot::Write("scalars"),
    Slot::Write("control"),
    Slot::Write("history"),
];
/// The scalar kernels that do not: β and α.
const SCALAR_SLOTS: &[Slot] = &[
    uniform::<System>(),
    Slot::Write("scalars"),
    Slot::Write("control"),
];

/// Tolerance and the test before the first iteration.
static CG_INIT: Kernel = Kernel::new(&shader::CG, "cg_init", SCALAR_HIST_SLOTS);
/// β = rz / rz_prev.
static CG_BETA: Kernel = Kernel::new(&shader::CG, "cg_beta", SCALAR_SLOTS);
/// α = rz / pᵀAp, or the breakdown flag.
static CG_ALPHA: Kernel = Kernel::new(&shader::CG, "cg_alpha", SCALAR_SLOTS);
/// The iteration count and the convergence test.
static CG_AFTER: Kernel = Kernel::new(&shader::CG, "cg_after", SCALAR_HIST_SLOTS);
/// p = z + β·p.
static CG_DIRECTION: Kernel = Kernel::new(
    &shader::CG,
    "cg_direction",
    &[
        uniform::<System>(),
        Slot::Write("scalars"),
        Slot::Write("control"),
        Slot::Write("p"),
        Slot::Read("z"),
    ],
);
/// x += α·p, r −= α·q and the partial sums of the new rᵀr (DIRECTION: p = r + β·p first).
pub(crate) static CG_UPDATE: Kernel = Kernel::new(
    &shader::CG,
    "cg_update",
    &[
        uniform::<System>(),
        Slot::Write("scalars"),
        Slot::Write("control"),
        Slot::Write("x"),
        Slot::Write("r"),
        Slot::Write("p"),
        Slot::Read("q"),
        Slot::Write("partials"),
    ],
);
/// z = r ⊙ (1/diag A).
static CG_JACOBI: Kernel = Kernel::new(
    &shader::CG,
    "cg_jacobi",
    &[
        uniform::<System>(),
        Slot::Gap,
        Slot::Write("control"),
        Slot::Write("z"),
        Slot::Read("r"),
        Slot::Read("inverse diagonal"),
    ],
);
/// r = b − A·x0.
static CG_RESIDUAL: Kernel = Kernel::new(
    &shader::CG,
    "cg_residual",
    &[
        uniform::<System>(),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("r"),
        Slot::Read("b"),
        Slot::Read("A·x0"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &CG_INIT,
    &CG_BETA,
    &CG_ALPHA,
    &CG_AFTER,
    &CG_DIRECTION,
    &CG_UPDATE,
    &CG_JACOBI,
    &CG_RESIDUAL,
];

const SCALARS: usize = 8;
const RZ: usize = 0;
const PQ: usize = 2;
const RR: usize = 4;
const BETA: usize = 6;
const BB: usize = 7;
const CONTROL: usize = 4;
const CONVERGED: u32 = 1;
const BREAKDOWN: u32 = 2;

/// Device vectors of one system (zero-padded to whole vec4s).
struct Vectors {
    x: GpuVec<f32>,
    r: GpuVec<f32>,
    p: GpuVec<f32>,
    q: GpuVec<f32>,
    z: Option<GpuVec<f32>>,
    hist: GpuVec<f32>,
}

/// Solves A·x = b for a symmetric positive definite A (see [`cg_batched`]). Blocking: the
/// native wrapper of [`cg_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn cg<'a>(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    b: impl Into<BufView<'a>>,
    x0: Option<BufView<'a>>,
    options: &CgOptions,
) -> Result<CgResult> {
    pollster::block_on(cg_async(gpu, op, b, x0, options))
}

/// Async form of [`cg`]: each convergence check yields (on the web) until its flags are read.
pub async fn cg_async<'a>(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    b: impl Into<BufView<'a>>,
    x0: Option<BufView<'a>>,
    options: &CgOptions<'_>,
) -> Result<CgResult> {
    let (mut results, _) = cg_batched_async(
        gpu,
        op,
        &[b.into()],
        x0.map(|x| vec![x]).as_deref(),
        options,
    )
    .await?;
    results.pop().ok_or(Error::Empty { argument: "b" })
}

/// Solves A·xᵢ = bᵢ for several right-hand sides together: every iteration of every system is
/// recorded into one pass, and one readback every `check_every` iterations serves them all.
///
/// Views: each b (and x0) is only read — copied into the solver's own vectors at the start —
/// and each solution is a new vector, so the right-hand sides and starting points may lie in
/// one buffer (an engine's arena) and may even overlap one another; nothing is written in
/// place.
///
/// Errors: non-square operator or wrong lengths; non-finite b (checked first, one readback);
/// `maxiter` or `check_every` 0, `rtol`/`atol` negative or non-finite; Jacobi on an operator
/// without a diagonal or with a non-positive diagonal entry; [`Error::Breakdown`] when
/// pᵀAp ≤ 0 while r ≠ 0 (A is not SPD), naming the iteration; [`Error::Wgpu`] for what wgpu
/// finds wrong in the operator's recording (a user operator's bind group, say) or when it
/// runs. Blocking: the native wrapper of [`cg_batched_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn cg_batched(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    bs: &[BufView<'_>],
    x0s: Option<&[BufView<'_>]>,
    options: &CgOptions,
) -> Result<(Vec<CgResult>, CgStats)> {
    pollster::block_on(cg_batched_async(gpu, op, bs, x0s, options))
}

/// Async form of [`cg_batched`], the one implementation: every readback is awaited.
pub async fn cg_batched_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    bs: &[BufView<'_>],
    x0s: Option<&[BufView<'_>]>,
    options: &CgOptions<'_>,
) -> Result<(Vec<CgResult>, CgStats)> {
    let n = square_dim(op)?;
    if bs.is_empty() {
        return Err(Error::Empty { argument: "b" });
    }
    if !(options.rtol >= 0.0 && options.rtol.is_finite()) {
        return Err(Error::param("rtol", options.rtol as f64, "finite and ≥ 0"));
    }
    if !(options.atol >= 0.0 && options.atol.is_finite()) {
        return Err(Error::param("atol", options.atol as f64, "finite and ≥ 0"));
    }
    let maxiter = options.maxiter.unwrap_or(n.saturating_mul(10));
    check::iterations("maxiter", maxiter)?;
    check::iterations("check_every", options.check_every)?;
    let bs = bs
        .iter()
        .map(|b| b.check(gpu, "b", n))
        .collect::<Result<Vec<_>>>()?;
    let x0s = match x0s {
        Some(x0s) => {
            check::same_count("x0", bs.len(), x0s.len())?;
            Some(
                x0s.iter()
                    .map(|x0| x0.check(gpu, "x0", n))
                    .collect::<Result<Vec<_>>>()?,
            )
        }
        None => None,
    };
    // Every vector is bound whole, as vec4s.
    let n4 = n.div_ceil(4);
    let max = gpu.limits().max_storage_buffer_binding_size;
    if 16 * n4 as u64 > max {
        return Err(Error::TooLarge {
            argument: "b",
            requested: 16 * n4 as u64,
            limit: "max_storage_buffer_binding_size",
            max,
        });
    }
    let mut stats = CgStats::default();
    crate::finite::ensure_finite_async(gpu, "b", &bs).await?;
    let checks = bs.len() + x0s.as_ref().map_or(0, Vec::len);
    if let Some(x0s) = &x0s {
        crate::finite::ensure_finite_async(gpu, "x0", x0s).await?;
    }
    stats.submits += checks;
    stats.readbacks += checks;
    if let Preconditioner::Operator(m) = options.preconditioner {
        let (rows, cols) = m.shape();
        if (rows, cols) != (n, n) {
            return Err(Error::Shape {
                argument: "preconditioner",
                message: format!("{rows}×{cols}, the operator is {n}×{n}"),
            });
        }
    }

    let k = bs.len();
    let hist_len = match options.history {
        true => maxiter.checked_add(1).ok_or(Error::param(
            "maxiter",
            maxiter as f64,
            "small enough to keep a residual history",
        ))?,
        false => 1,
    };
    let preconditioned = !matches!(options.preconditioner, Preconditioner::None);
    let mut systems = Vec::with_capacity(k);
    for _ in 0..k {
        systems.push(Vectors {
            x: GpuVec::zeros(gpu, n)?,
            r: GpuVec::zeros(gpu, n)?,
            p: GpuVec::zeros(gpu, n)?,
            q: GpuVec::zeros(gpu, n)?,
            z: match preconditioned {
                true => Some(GpuVec::zeros(gpu, n)?),
                false => None,
            },
            hist: GpuVec::zeros(gpu, hist_len)?,
        });
    }
    let scal = GpuVec::<f32>::zeros(gpu, SCALARS * k)?;
    let ctl = GpuVec::<u32>::zeros(gpu, CONTROL * k)?;
    let inv_diag = match options.preconditioner {
        Preconditioner::Jacobi => {
            stats.submits += 1;
            stats.readbacks += 1;
            Some(jacobi_inverse(gpu, op, n).await?)
        }
        _ => None,
    };
    let uniforms: Vec<System> = (0..k)
        .map(|s| System {
            sys: s as u32,
            n4: n4 as u32,
            preconditioned: preconditioned as u32,
            history: options.history as u32,
            atol: options.atol,
            rtol: options.rtol,
            ..Default::default()
        })
        .collect();
    let groups = reduce::partial_groups(gpu, n4 as u64);
    let partials = || -> Result<Vec<GpuVec<f32>>> {
        (0..k)
            .map(|_| GpuVec::<f32>::zeros(gpu, groups as usize))
            .collect()
    };
    let (rr_partials, pq_partials) = (partials()?, partials()?);
    let state = State {
        scal: &scal,
        ctl: &ctl,
    };

    // Setup: r = b − A·x0 (or b), b·b, r·r, tolerance and the initial test.
    let mut rec = Recorder::new(gpu);
    for (s, v) in systems.iter().enumerate() {
        let u = &uniforms[s];
        let b = bs[s];
        match &x0s {
            Some(x0s) => {
                record_copy(&mut rec, x0s[s], 0, v.x.view(), 0, n)?;
                record_copy(&mut rec, b, 0, v.p.view(), 0, n)?;
                scoped(&mut rec, |rec| op.record_apply(rec, v.x.view(), v.q.view()))?;
                let grid = rec.elementwise_grid(n4 as u64)?;
                rec.dispatch(
                    &CG_RESIDUAL,
                    &rec.wg(),
                    &[
                        Binding::uniform(u),
                        Binding::Skip,
                        Binding::Skip,
                        vec4s(&v.r),
                        vec4s(&v.p),
                        vec4s(&v.q),
                    ],
                    grid,
                )?;
            }
            None => record_copy(&mut rec, b, 0, v.r.view(), 0, n)?,
        }
        reduce::record(
            &mut rec,
            Reduction::SquaredNorm,
            b,
            None,
            scal.view(),
            SCALARS * s + BB,
        )?;
        reduce::record(
            &mut rec,
            Reduction::SquaredNorm,
            v.r.view(),
            None,
            scal.view(),
            SCALARS * s + RR,
        )?;
        state.record_scalar(&mut rec, &CG_INIT, u, Some(&v.hist))?;
    }
    rec.submit()?;
    stats.submits += 1;

    // One iteration of every system, recorded once and re-encoded: scalars live on the GPU.
    let mut iteration = Recorder::new(gpu);
    for (s, v) in systems.iter().enumerate() {
        let u = &uniforms[s];
        let base = SCALARS * s;
        let z = match (&options.preconditioner, &v.z) {
            (Preconditioner::Jacobi, Some(z)) => {
                let d = inv_diag.as_ref().ok_or(Error::Empty {
                    argument: "diagonal",
                })?;
                let grid = iteration.elementwise_grid(n4 as u64)?;
                iteration.dispatch(
                    &CG_JACOBI,
                    &iteration.wg(),
                    &[
                        Binding::uniform(u),
                        Binding::Skip,
                        Binding::storage(ctl.view()),
                        vec4s(z),
                        vec4s(&v.r),
                        vec4s(d),
                    ],
                    grid,
                )?;
                z
            }
            (Preconditioner::Operator(m), Some(z)) => {
                scoped(&mut iteration, |rec| {
                    m.record_apply(rec, v.r.view(), z.view())
                })?;
                z
            }
            _ => &v.r,
        };
        // rz = rᵀz feeds β; without a preconditioner z = r and cg_beta reuses rᵀr.
        if preconditioned {
            reduce::record(
                &mut iteration,
                Reduction::Dot,
                v.r.view(),
                Some(z.view()),
                scal.view(),
                base + RZ,
            )?;
        }
        state.record_scalar(&mut iteration, &CG_BETA, u, None)?;
        // p = z + β·p inside the operator's pass when it can (the update then stores p),
        // else in a pass of its own.
        let fused = !preconditioned
            && record_direction_apply_pq(&mut iteration, op, v, &scal, &pq_partials[s], base)?;
        if !fused {
            let grid = iteration.elementwise_grid(n4 as u64)?;
            iteration.dispatch(
                &CG_DIRECTION,
                &iteration.wg(),
                &[
                    Binding::uniform(u),
                    Binding::storage(scal.view()),
                    Binding::storage(ctl.view()),
                    vec4s(&v.p),
                    vec4s(z),
                ],
                grid,
            )?;
            record_apply_pq(&mut iteration, op, v, &scal, &pq_partials[s], base + PQ)?;
        }
        state.record_scalar(&mut iteration, &CG_ALPHA, u, None)?;
        state.record_update(&mut iteration, u, v, &rr_partials[s], base + RR, fused)?;
        state.record_scalar(&mut iteration, &CG_AFTER, u, Some(&v.hist))?;
    }
    stats.dispatches_per_iteration = iteration.len();

    let mut recorded = 0;
    let mut control = ctl.read_async().await?;
    // scipy returns x = b = 0 for b = 0, whatever x0 was.
    let zero_rhs: Vec<bool> = scal
        .read_async()
        .await?
        .chunks(SCALARS)
        .map(|c| c[BB] == 0.0)
        .collect();
    for (v, _) in systems.iter().zip(&zero_rhs).filter(|(_, &z)| z) {
        v.x.write(&crate::host::filled("b", n, 0.0)?)?;
    }
    stats.readbacks += 2;
    while recorded < maxiter && control.chunks(CONTROL).any(|c| c[1] == 0) {
        let times = options.check_every.min(maxiter - recorded);
        iteration.submit_repeated("cg", times)?;
        stats.submits += 1;
        recorded += times;
        control = ctl.read_async().await?;
        stats.readbacks += 1;
    }
    stats.iterations_recorded = recorded;

    let scalars = scal.read_async().await?;
    stats.readbacks += 1;
    let mut results = Vec::with_capacity(k);
    for (s, v) in systems.into_iter().enumerate() {
        let c = &control[CONTROL * s..CONTROL * (s + 1)];
        if c[1] & BREAKDOWN != 0 {
            let pq = scalars[SCALARS * s + PQ];
            let message = if pq.is_nan() {
                format!(
                    "pᵀAp is NaN for right-hand side {s}: the operator produced non-finite values"
                )
            } else {
                format!("pᵀAp = {pq} ≤ 0 with r ≠ 0 for right-hand side {s}: the operator is not symmetric positive definite")
            };
            return Err(Error::Breakdown {
                method: "cg",
                iteration: c[2] as usize,
                message,
            });
        }
        let iterations = c[0] as usize;
        let history = if options.history {
            let mut h = v.hist.read_async().await?;
            stats.readbacks += 1;
            h.truncate(iterations + 1);
            Some(h)
        } else {
            None
        };
        results.push(CgResult {
            x: v.x,
            iterations,
            // scipy tests at the top of an iteration: reaching the tolerance with the
            // maxiter-th update still returns info = maxiter.
            converged: c[1] & CONVERGED != 0 && (iterations < maxiter || zero_rhs[s]),
            residual: if zero_rhs[s] {
                0.0
            } else {
                scalars[SCALARS * s + RR].sqrt()
            },
            history,
        });
    }
    Ok((results, stats))
}

/// A whole padded vector, bound as vec4s.
fn vec4s(v: &GpuVec<f32>) -> Binding<'_> {
    Binding::Storage(v.view(), Some(16 * v.len().div_ceil(4) as u64))
}

/// 1/diag(A), refusing operators without a diagonal and non-positive entries (not SPD).
async fn jacobi_inverse(gpu: &Gpu, op: &dyn LinearOperator, n: usize) -> Result<GpuVec<f32>> {
    let d = GpuVec::<f32>::zeros(gpu, n)?;
    let mut rec = Recorder::new(gpu);
    if !scoped(&mut rec, |rec| op.record_diagonal(rec, d.view()))? {
        return Err(Error::Shape {
            argument: "preconditioner",
            message: "Jacobi needs an operator that can record its diagonal".into(),
        });
    }
    rec.submit()?;
    let diag = d.read_async().await?;
    if let Some(i) = diag.iter().position(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(Error::Breakdown {
            method: "cg",
            iteration: 0,
            message: format!(
                "Jacobi: diagonal entry {i} is {}, not positive: A is not SPD",
                diag[i]
            ),
        });
    }
    let inv: Vec<f32> = diag.iter().map(|&v| 1.0 / v).collect();
    d.write(&inv)?;
    Ok(d)
}

/// q = A·p and pᵀq into scal[pq_slot]: fused when the operator can, else a separate dot.
fn record_apply_pq(
    rec: &mut Recorder,
    op: &dyn LinearOperator,
    v: &Vectors,
    scal: &GpuVec<f32>,
    partials: &GpuVec<f32>,
    pq_slot: usize,
) -> Result<()> {
    let (p, q) = (v.p.view(), v.q.view());
    match scoped(rec, |rec| op.record_apply_dot(rec, p, q, partials))? {
        Some(groups) => reduce::record_finalize(
            rec,
            Reduction::Dot,
            p,
            q,
            partials,
            groups,
            scal.view(),
            pq_slot,
        ),
        None => {
            scoped(rec, |rec| op.record_apply(rec, p, q))?;
            reduce::record(rec, Reduction::Dot, p, Some(q), scal.view(), pq_slot)
        }
    }
}

/// q = A·(r + β·p) and its dot with r + β·p in the operator's one pass, p left unchanged (the
/// update stores the new p); false when the operator has no such form.
fn record_direction_apply_pq(
    rec: &mut Recorder,
    op: &dyn LinearOperator,
    v: &Vectors,
    scal: &GpuVec<f32>,
    partials: &GpuVec<f32>,
    base: usize,
) -> Result<bool> {
    let direction = Direction {
        x: v.r.view(),
        d: v.p.view(),
        scalars: scal.view(),
        beta_index: base + BETA,
    };
    let fused = scoped(rec, |rec| {
        op.record_direction_apply_dot(rec, &direction, v.q.view(), partials)
    })?;
    let Some(groups) = fused else {
        return Ok(false);
    };
    // The operand r + β·p is not stored: the finalize has no n % 4 tail to add, and the
    // unpadded views only bound its tail loop, so pass whole vec4s of p and q.
    let n4 = v.p.len().div_ceil(4);
    let p = BufView::new(v.p.buffer(), v.p.byte_offset(), 4 * n4).named("p");
    let q = BufView::new(v.q.buffer(), v.q.byte_offset(), 4 * n4).named("q");
    reduce::record_finalize(
        rec,
        Reduction::Dot,
        p,
        q,
        partials,
        groups,
        scal.view(),
        base + PQ,
    )?;
    Ok(true)
}

/// The scalars and flags every system's kernels share.
struct State<'a> {
    scal: &'a GpuVec<f32>,
    ctl: &'a GpuVec<u32>,
}

impl State<'_> {
    /// A single-invocation scalar kernel of system `u` (with its history where it keeps one).
    fn record_scalar(
        &self,
        rec: &mut Recorder,
        kernel: &'static Kernel,
        u: &System,
        hist: Option<&GpuVec<f32>>,
    ) -> Result<()> {
        let mut bindings = vec![
            Binding::uniform(u),
            Binding::storage(self.scal.view()),
            Binding::storage(self.ctl.view()),
        ];
        bindings.extend(hist.map(|h| Binding::storage(h.view())));
        rec.dispatch(kernel, &rec.wg(), &bindings, [1, 1, 1])
    }

    /// x += α·p, r −= α·q with the new r·r folded into scal[rr_slot]: the update pass leaves
    /// one partial sum per workgroup and `reduce_finalize` adds them up. With `direction` it
    /// first forms and stores p = r + β·p (the operator's pass applied A to it without storing
    /// it).
    fn record_update(
        &self,
        rec: &mut Recorder,
        u: &System,
        v: &Vectors,
        partials: &GpuVec<f32>,
        rr_slot: usize,
        direction: bool,
    ) -> Result<()> {
        let n4 = v.r.len().div_ceil(4);
        let groups = partials.len() as u64;
        let [wg] = rec.wg();
        let grid = rec.grid_for_groups(groups)?;
        rec.dispatch(
            &CG_UPDATE,
            &[wg, ("DIRECTION", direction as u32 as f64)],
            &[
                Binding::uniform(u),
                Binding::storage(self.scal.view()),
                Binding::storage(self.ctl.view()),
                vec4s(&v.x),
                vec4s(&v.r),
                vec4s(&v.p),
                vec4s(&v.q),
                Binding::storage(partials.view()),
            ],
            grid,
        )?;
        // The padded r holds whole vec4s: a finalize over 4·n4 elements has no tail to add.
        let r = BufView::new(v.r.buffer(), v.r.byte_offset(), 4 * n4).named("r");
        reduce::record_finalize(
            rec,
            Reduction::SquaredNorm,
            r,
            r,
            partials,
            groups,
            self.scal.view(),
            rr_slot,
        )
    }
}
