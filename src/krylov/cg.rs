//! Conjugate gradient with scipy's semantics and every scalar on the GPU, three dispatches an
//! iteration: [`CgSolver`] records them (`cg_turn`, the operator's pass, [`CG_UPDATE`] →
//! `shaders/krylov/cg.wgsl`) once; [`cg_batched_async`] is its loop with a readback per batch,
//! and [`cg`], [`cg_async`] and [`cg_batched`] wrap that. One implementation.

use super::operator::{scoped, square_dim, Direction, LinearOperator};
use crate::buffer::{BufView, GpuVec};
use crate::check;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};
use crate::shader;
use crate::vector::{record_copy, record_fill};

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
    /// Queue submissions (the setup rides with the first batch).
    pub submits: usize,
    /// Host readbacks: one per batch (flags and scalars together), Jacobi's diagonal and each
    /// history.
    pub readbacks: usize,
    /// Iterations recorded (≥ the iterations taken: the last batch runs past convergence).
    pub iterations_recorded: usize,
}

crate::kernel::uniform_struct! {
    /// One system's parameters.
    pub(crate) struct System {
        sys: u32, n4: u32, preconditioned: u32, history: u32, atol: f32, rtol: f32,
        parts: u32, pq_parts: u32, pq_tail: u32, maxiter: u32, stride: u32, _pad1: u32,
    }
}

/// The single-invocation set-up: its uniform, the scalars and the flags.
const SCALAR_SLOTS: &[Slot] = &[
    uniform::<System>(),
    Slot::Write("scalars"),
    Slot::Write("control"),
];

/// The tolerance, and every counter at 0.
static CG_INIT: Kernel = Kernel::new(&shader::CG, "cg_init", SCALAR_SLOTS);
/// r·r and r·z from the last pass's partials, the tests and β (one workgroup).
static CG_TURN: Kernel = Kernel::new(
    &shader::CG,
    "cg_turn",
    &[
        uniform::<System>(),
        Slot::Write("scalars"),
        Slot::Write("control"),
        Slot::Write("history"),
        Slot::Read("partials"),
    ],
);
/// p = z + β·p, for operators without the fused direction.
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
/// pᵀAp folded from the operator pass's partials, α, x += α·p, r −= α·q and the partials of
/// the new rᵀr (DIRECTION: p = z + β·p first).
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
        Slot::Read("z"),
    ],
);
/// z = r ⊙ (1/diag A) and the partials of rᵀz.
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
        Slot::Write("partials"),
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
/// x = 0 where b = 0.
static CG_ZERO_RHS: Kernel = Kernel::new(
    &shader::CG,
    "cg_zero_rhs",
    &[
        uniform::<System>(),
        Slot::Write("scalars"),
        Slot::Gap,
        Slot::Write("x"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &CG_INIT,
    &CG_TURN,
    &CG_DIRECTION,
    &CG_UPDATE,
    &CG_JACOBI,
    &CG_RESIDUAL,
    &CG_ZERO_RHS,
];

/// Words per system in the scalar and in the control block.
const WORDS: usize = 8;
const PQ: usize = 2;
const RR: usize = 4;
const BETA: usize = 6;
const BB: usize = 7;
const ITERATIONS: usize = 0;
const FLAGS: usize = 1;
const BREAKDOWN_AT: usize = 2;
const CONVERGED: u32 = 1;
const BREAKDOWN: u32 = 2;
const NONFINITE: u32 = 4;
const MAXED: u32 = 8;

/// Where a system stands, from its control words ([`CgSolver::read_status_async`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgStatus {
    /// Updates of x so far.
    pub iterations: usize,
    /// ‖r‖ < max(atol, rtol·‖b‖), or r = 0, or b = 0.
    pub converged: bool,
    /// pᵀAp ≤ 0 (or NaN) met at this iteration: A is not SPD.
    pub breakdown: Option<usize>,
    /// b·b, or r·r (or rᵀz) along the way, was not finite: b, x0 or the operator's output
    /// held NaN or ±inf, or the system overflows f32.
    pub non_finite: bool,
    /// `maxiter` updates done without meeting the tolerance.
    pub stopped: bool,
}

impl CgStatus {
    fn from_words(c: &[u32]) -> Self {
        let flags = c[FLAGS];
        CgStatus {
            iterations: c[ITERATIONS] as usize,
            converged: flags & CONVERGED != 0,
            breakdown: (flags & BREAKDOWN != 0).then_some(c[BREAKDOWN_AT] as usize),
            non_finite: flags & NONFINITE != 0,
            stopped: flags & MAXED != 0,
        }
    }

    /// True once further iterations would change nothing.
    pub fn finished(&self) -> bool {
        self.converged || self.breakdown.is_some() || self.non_finite || self.stopped
    }
}

/// Device vectors of one system (zero-padded to whole vec4s).
struct Vectors {
    x: GpuVec<f32>,
    r: GpuVec<f32>,
    p: GpuVec<f32>,
    q: GpuVec<f32>,
    z: Option<GpuVec<f32>>,
    hist: GpuVec<f32>,
    /// The r·r, r·z and pᵀAp partials, [`Partials::count`] each, [`Partials::stride`] apart.
    parts: GpuVec<f32>,
}

/// How the three quantities' partials lie in a system's buffer.
#[derive(Clone, Copy)]
struct Partials {
    /// Partials per quantity (one per workgroup of the passes that leave them).
    count: usize,
    /// Elements from one quantity's to the next's: `count` rounded up to the storage offset
    /// alignment, so each region binds on its own.
    stride: usize,
}

impl Vectors {
    fn rr_parts(&self, p: Partials) -> BufView<'_> {
        self.parts.view().sub(0, p.count).named("r·r partials")
    }
    fn rz_parts(&self, p: Partials) -> BufView<'_> {
        self.parts
            .view()
            .sub(p.stride, p.count)
            .named("r·z partials")
    }
    fn pq_parts(&self, p: Partials) -> BufView<'_> {
        self.parts
            .view()
            .sub(2 * p.stride, p.count)
            .named("pᵀAp partials")
    }
}

/// A CG solve of one or more systems A·xᵢ = bᵢ recorded once, for the caller to run in its own
/// encoder at its own pace: [`CgSolver::record_start`], then [`CgSolver::record_iterations`]
/// as often as it likes, reading the [`CgSolver::status`] words when it likes (a frame later,
/// say) — nothing here waits. Every pipeline, bind group and uniform is built in
/// [`CgSolver::new`]; recording appends the same dispatches again. [`cg_batched_async`] and the
/// blocking forms are this loop with a readback per batch.
///
/// Each iteration is three dispatches for an operator with the fused direction
/// ([`LinearOperator::record_direction_apply_dot`]; four with Jacobi), every scalar on the
/// GPU. Iterations recorded after a system has finished (converged, `maxiter` reached, broken
/// down) change nothing, so a caller may record more than it needs.
///
/// Views: the right-hand sides (and starts) are read by the start only; the solution is the
/// solver's own vector ([`CgSolver::x`]), or copied into the caller's with
/// [`CgSolver::record_solution`].
pub struct CgSolver<'g> {
    gpu: &'g Gpu,
    n: usize,
    maxiter: usize,
    history: bool,
    parts: Partials,
    systems: Vec<Vectors>,
    /// Scalars of every system, then (at the next aligned offset) their control words.
    state: GpuVec<u32>,
    control_offset: usize,
    start: Recorder<'g>,
    iteration: Recorder<'g>,
    turn: Recorder<'g>,
    inv_diag: Option<GpuVec<f32>>,
}

impl std::fmt::Debug for CgSolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgSolver")
            .field("n", &self.n)
            .field("systems", &self.systems.len())
            .field("maxiter", &self.maxiter)
            .field("dispatches_per_iteration", &self.iteration.len())
            .finish()
    }
}

/// The options checked: (maxiter, preconditioned).
fn check_options(n: usize, options: &CgOptions<'_>) -> Result<(usize, bool)> {
    if !(options.rtol >= 0.0 && options.rtol.is_finite()) {
        return Err(Error::param("rtol", options.rtol as f64, "finite and ≥ 0"));
    }
    if !(options.atol >= 0.0 && options.atol.is_finite()) {
        return Err(Error::param("atol", options.atol as f64, "finite and ≥ 0"));
    }
    // scipy's default 10·n, within the GPU's u32 count.
    let maxiter = options
        .maxiter
        .unwrap_or(n.saturating_mul(10).min(u32::MAX as usize - 1));
    check::iterations("maxiter", maxiter)?;
    if maxiter > u32::MAX as usize - 1 {
        return Err(Error::param(
            "maxiter",
            maxiter as f64,
            "below 2³² − 1 (the GPU counts iterations in u32)",
        ));
    }
    check::iterations("check_every", options.check_every)?;
    if let Preconditioner::Operator(m) = options.preconditioner {
        let (rows, cols) = m.shape();
        if (rows, cols) != (n, n) {
            return Err(Error::Shape {
                argument: "preconditioner",
                message: format!("{rows}×{cols}, the operator is {n}×{n}"),
            });
        }
    }
    Ok((
        maxiter,
        !matches!(options.preconditioner, Preconditioner::None),
    ))
}

impl<'g> CgSolver<'g> {
    /// Allocates the solver's vectors and records its start and one iteration for every
    /// system. `bs` (and `x0s`, one per b) are read when the start runs and may lie in one
    /// buffer, even overlapping one another. Jacobi reads the operator's diagonal here (one
    /// readback; the only one).
    ///
    /// Errors: non-square operator or wrong lengths; `maxiter` or `check_every` 0,
    /// `rtol`/`atol` negative or non-finite; Jacobi on an operator without a diagonal or with
    /// a non-positive diagonal entry; a vector past one storage binding
    /// ([`Error::TooLarge`]); [`Error::Wgpu`] for what wgpu finds wrong in the operator's
    /// recording.
    pub async fn new_async(
        gpu: &'g Gpu,
        op: &dyn LinearOperator,
        bs: &[BufView<'_>],
        x0s: Option<&[BufView<'_>]>,
        options: &CgOptions<'_>,
    ) -> Result<Self> {
        let n = square_dim(op)?;
        if bs.is_empty() {
            return Err(Error::Empty { argument: "b" });
        }
        let (maxiter, preconditioned) = check_options(n, options)?;
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
        let k = bs.len();
        let hist_len = match options.history {
            true => maxiter + 1,
            false => 1,
        };
        let count = reduce::partial_groups(gpu, n4 as u64) as usize;
        let align = (gpu.limits().min_storage_buffer_offset_alignment as usize).max(16) / 4;
        let parts = Partials {
            count,
            stride: count.next_multiple_of(align),
        };
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
                parts: GpuVec::zeros(gpu, 2 * parts.stride + parts.count)?,
            });
        }
        let layout = crate::buffer::Layout::new::<u32>(gpu.limits(), &[WORDS * k, WORDS * k])?;
        let control_offset = (layout.offsets()[1] / 4) as usize;
        let state = GpuVec::<u32>::zeros(gpu, control_offset + WORDS * k)?;
        let inv_diag = match options.preconditioner {
            Preconditioner::Jacobi => Some(jacobi_inverse(gpu, op, n).await?),
            _ => None,
        };
        let mut solver = CgSolver {
            gpu,
            n,
            maxiter,
            history: options.history,
            parts,
            systems,
            state,
            control_offset,
            start: Recorder::new(gpu),
            iteration: Recorder::new(gpu),
            turn: Recorder::new(gpu),
            inv_diag,
        };
        let uniforms: Vec<System> = (0..k)
            .map(|s| System {
                sys: s as u32,
                n4: n4 as u32,
                preconditioned: preconditioned as u32,
                history: options.history as u32,
                atol: options.atol,
                rtol: options.rtol,
                parts: parts.count as u32,
                stride: parts.stride as u32,
                maxiter: maxiter as u32,
                ..Default::default()
            })
            .collect();
        let mut start = Recorder::new(gpu);
        let mut iteration = Recorder::new(gpu);
        let mut turn = Recorder::new(gpu);
        for (s, u) in uniforms.iter().enumerate() {
            let x0 = x0s.as_ref().map(|x0s| x0s[s]);
            solver.record_system_start(&mut start, op, options, u, bs[s], x0)?;
            solver.record_system_iteration(&mut iteration, op, options, u)?;
            solver.record_turn(&mut turn, u)?;
        }
        solver.start = start;
        solver.iteration = iteration;
        solver.turn = turn;
        Ok(solver)
    }

    /// Blocking form of [`CgSolver::new_async`] (it blocks only for Jacobi's diagonal).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(
        gpu: &'g Gpu,
        op: &dyn LinearOperator,
        bs: &[BufView<'_>],
        x0s: Option<&[BufView<'_>]>,
        options: &CgOptions<'_>,
    ) -> Result<Self> {
        pollster::block_on(Self::new_async(gpu, op, bs, x0s, options))
    }

    /// Records the start: x = x0 (or 0), r = b − A·x (or b), z, the partials of r·r and rᵀz,
    /// b·b, the tolerance, every counter at 0. Recording it again restarts the solve.
    pub fn record_start(&self, rec: &mut Recorder<'_>) -> Result<()> {
        rec.append(&self.start, 1)
    }

    /// Records `k` iterations of every system, then the convergence test of the last one, so
    /// that [`CgSolver::status`] is current when they have run. Iterations past `maxiter` would
    /// change nothing, so at most `maxiter` are recorded.
    pub fn record_iterations(&self, rec: &mut Recorder<'_>, k: usize) -> Result<()> {
        rec.append(&self.iteration, k.min(self.maxiter))?;
        rec.append(&self.turn, 1)
    }

    /// Records a copy of system `system`'s solution into `x` (n elements, anywhere).
    pub fn record_solution(
        &self,
        rec: &mut Recorder<'_>,
        system: usize,
        x: BufView<'_>,
    ) -> Result<()> {
        let v = self.system(system)?;
        let x = x.check(self.gpu, "x", self.n)?;
        record_copy(rec, v.x.view(), 0, x, 0, self.n)
    }

    /// Dispatches one iteration of every system records.
    pub fn dispatches_per_iteration(&self) -> usize {
        self.iteration.len()
    }

    /// System `system`'s solution vector (zero-padded to whole vec4s past its n elements).
    pub fn x(&self, system: usize) -> Result<&GpuVec<f32>> {
        Ok(&self.system(system)?.x)
    }

    /// The control words: `8` u32 per system — iterations, flags (1 converged, 2 breakdown,
    /// 4 non-finite, 8 `maxiter` reached), the breakdown's iteration, and internal words. Copy
    /// them wherever suits the caller's frame; [`CgSolver::read_status_async`] reads and
    /// decodes them.
    pub fn status(&self) -> BufView<'_> {
        self.control()
    }

    /// Reads every system's status (one readback).
    pub async fn read_status_async(&self) -> Result<Vec<CgStatus>> {
        let words = self.state.read_async().await?;
        Ok(self.decode(&words).0)
    }

    /// The scalars and control words together (one readback).
    async fn read_state_async(&self) -> Result<Vec<u32>> {
        self.state.read_async().await
    }

    fn system(&self, system: usize) -> Result<&Vectors> {
        self.systems.get(system).ok_or(Error::BadView {
            argument: "system",
            message: format!("system {system} of {}", self.systems.len()),
        })
    }

    fn scalars(&self) -> BufView<'_> {
        self.state
            .view()
            .sub(0, WORDS * self.systems.len())
            .named("scalars")
    }

    fn control(&self) -> BufView<'_> {
        self.state
            .view()
            .sub(self.control_offset, WORDS * self.systems.len())
            .named("control")
    }

    /// (status, scalars) of every system from the state words.
    fn decode(&self, words: &[u32]) -> (Vec<CgStatus>, Vec<[f32; WORDS]>) {
        let k = self.systems.len();
        let status = (0..k)
            .map(|s| {
                let c = self.control_offset + WORDS * s;
                CgStatus::from_words(&words[c..c + WORDS])
            })
            .collect();
        let scalars = (0..k)
            .map(|s| std::array::from_fn(|i| f32::from_bits(words[WORDS * s + i])))
            .collect();
        (status, scalars)
    }

    fn record_system_start(
        &self,
        rec: &mut Recorder,
        op: &dyn LinearOperator,
        options: &CgOptions<'_>,
        u: &System,
        b: BufView<'_>,
        x0: Option<BufView<'_>>,
    ) -> Result<()> {
        let v = &self.systems[u.sys as usize];
        let n = self.n;
        let grid = rec.elementwise_grid(u.n4 as u64)?;
        match x0 {
            Some(x0) => {
                // b is copied into p first: the residual pass binds whole vec4s, which a
                // caller's view need not have.
                record_copy(rec, x0, 0, v.x.view(), 0, n)?;
                record_copy(rec, b, 0, v.p.view(), 0, n)?;
                scoped(rec, |rec| op.record_apply(rec, v.x.view(), v.q.view()))?;
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
            None => {
                record_fill(rec, v.x.view(), 0.0)?;
                record_copy(rec, b, 0, v.r.view(), 0, n)?;
            }
        }
        // β = 0 on the first iteration, but 0·p must not meet a NaN left by an earlier solve.
        record_fill(rec, v.p.view(), 0.0)?;
        let parts = self.parts.count as u64;
        match (&options.preconditioner, &v.z) {
            (Preconditioner::Jacobi, Some(z)) => self.record_jacobi(rec, u, v, z)?,
            (Preconditioner::Operator(m), Some(z)) => {
                scoped(rec, |rec| m.record_apply(rec, v.r.view(), z.view()))?;
                reduce::record_partials(
                    rec,
                    Reduction::Dot,
                    whole(&v.r, "r"),
                    whole(z, "z"),
                    v.rz_parts(self.parts),
                    parts,
                )?;
            }
            _ => {}
        }
        reduce::record_partials(
            rec,
            Reduction::SquaredNorm,
            whole(&v.r, "r"),
            whole(&v.r, "r"),
            v.rr_parts(self.parts),
            parts,
        )?;
        let scal = self.scalars();
        reduce::record(
            rec,
            Reduction::SquaredNorm,
            b,
            None,
            scal,
            WORDS * u.sys as usize + BB,
        )?;
        self.record_scalar(rec, &CG_INIT, u)?;
        if x0.is_some() {
            rec.dispatch(
                &CG_ZERO_RHS,
                &rec.wg(),
                &[
                    Binding::uniform(u),
                    Binding::storage(scal),
                    Binding::Skip,
                    vec4s(&v.x),
                ],
                grid,
            )?;
        }
        Ok(())
    }

    fn record_system_iteration(
        &self,
        rec: &mut Recorder,
        op: &dyn LinearOperator,
        options: &CgOptions<'_>,
        u: &System,
    ) -> Result<()> {
        let v = &self.systems[u.sys as usize];
        let base = WORDS * u.sys as usize;
        let z = v.z.as_ref().unwrap_or(&v.r);
        self.record_turn(rec, u)?;
        // q = A·(z + β·p) with its dot in the operator's pass when it can (the update then
        // stores p), else p = z + β·p in a pass of its own first.
        let direction = Direction {
            x: z.view(),
            d: v.p.view(),
            scalars: self.scalars(),
            beta_index: base + BETA,
        };
        let pq_parts = v.pq_parts(self.parts);
        let fused = scoped(rec, |rec| {
            op.record_direction_apply_dot(rec, &direction, v.q.view(), pq_parts)
        })?;
        let (pq_groups, tail) = match fused {
            Some(groups) => (groups, true),
            None => {
                let grid = rec.elementwise_grid(u.n4 as u64)?;
                rec.dispatch(
                    &CG_DIRECTION,
                    &rec.wg(),
                    &self.state_bindings(u, &[vec4s(&v.p), vec4s(z)]),
                    grid,
                )?;
                match scoped(rec, |rec| {
                    op.record_apply_dot(rec, v.p.view(), v.q.view(), pq_parts)
                })? {
                    Some(groups) => (groups, true),
                    None => {
                        scoped(rec, |rec| op.record_apply(rec, v.p.view(), v.q.view()))?;
                        let parts = self.parts.count as u64;
                        let (p, q) = (whole(&v.p, "p"), whole(&v.q, "q"));
                        reduce::record_partials(rec, Reduction::Dot, p, q, pq_parts, parts)?;
                        (parts, false)
                    }
                }
            }
        };
        if pq_groups == 0 || pq_groups > self.parts.count as u64 {
            return Err(Error::Shape {
                argument: "operator",
                message: format!(
                    "its fused dot reported {pq_groups} partial sums, not 1..={}",
                    self.parts.count
                ),
            });
        }
        let update = System {
            pq_parts: pq_groups as u32,
            // The operator's partials leave out the last n % 4 products.
            pq_tail: (tail && !self.n.is_multiple_of(4)) as u32,
            ..*u
        };
        let preconditioned = v.z.is_some();
        let z_binding = match (fused.is_some(), &v.z) {
            (true, Some(z)) => vec4s(z),
            _ => Binding::Placeholder,
        };
        let [wg] = rec.wg();
        let grid = rec.grid_for_groups(self.parts.count as u64)?;
        rec.dispatch(
            &CG_UPDATE,
            &[
                wg,
                ("DIRECTION", fused.is_some() as u32 as f64),
                ("PRECONDITIONED", preconditioned as u32 as f64),
            ],
            &self.state_bindings(
                &update,
                &[
                    vec4s(&v.x),
                    vec4s(&v.r),
                    vec4s(&v.p),
                    vec4s(&v.q),
                    Binding::storage(v.parts.view().named("partials")),
                    z_binding,
                ],
            ),
            grid,
        )?;
        match (&options.preconditioner, &v.z) {
            (Preconditioner::Jacobi, Some(z)) => self.record_jacobi(rec, u, v, z),
            (Preconditioner::Operator(m), Some(z)) => {
                scoped(rec, |rec| m.record_apply(rec, v.r.view(), z.view()))?;
                let parts = self.parts.count as u64;
                let (r, z) = (whole(&v.r, "r"), whole(z, "z"));
                reduce::record_partials(rec, Reduction::Dot, r, z, v.rz_parts(self.parts), parts)
            }
            _ => Ok(()),
        }
    }

    /// z = r ⊙ (1/diag A) with the partials of rᵀz.
    fn record_jacobi(
        &self,
        rec: &mut Recorder,
        u: &System,
        v: &Vectors,
        z: &GpuVec<f32>,
    ) -> Result<()> {
        let d = self.inv_diag.as_ref().ok_or(Error::Empty {
            argument: "diagonal",
        })?;
        let grid = rec.grid_for_groups(self.parts.count as u64)?;
        rec.dispatch(
            &CG_JACOBI,
            &rec.wg(),
            &[
                Binding::uniform(u),
                Binding::Skip,
                Binding::storage(self.control()),
                vec4s(z),
                vec4s(&v.r),
                vec4s(d),
                Binding::storage(v.rz_parts(self.parts)),
            ],
            grid,
        )
    }

    /// The turn of system `u`: r·r (and rᵀz) folded, the tests, β.
    fn record_turn(&self, rec: &mut Recorder, u: &System) -> Result<()> {
        let v = &self.systems[u.sys as usize];
        rec.dispatch(
            &CG_TURN,
            &rec.wg(),
            &self.state_bindings(
                u,
                &[
                    Binding::storage(v.hist.view()),
                    Binding::storage(
                        v.parts
                            .view()
                            .sub(0, self.parts.stride + self.parts.count)
                            .named("partials"),
                    ),
                ],
            ),
            [1, 1, 1],
        )
    }

    /// A single-invocation kernel over the scalars and flags.
    fn record_scalar(&self, rec: &mut Recorder, kernel: &'static Kernel, u: &System) -> Result<()> {
        rec.dispatch(kernel, &rec.wg(), &self.state_bindings(u, &[]), [1, 1, 1])
    }

    /// The bindings the scalar-reading kernels start with (the system, its scalars and
    /// flags), then `rest`.
    fn state_bindings<'b>(&'b self, u: &'b System, rest: &[Binding<'b>]) -> Vec<Binding<'b>> {
        let mut all = vec![
            Binding::uniform(u),
            Binding::storage(self.scalars()),
            Binding::storage(self.control()),
        ];
        all.extend_from_slice(rest);
        all
    }

    /// The results from the state words read after the last batch ran (and a readback per
    /// history). Errors as [`cg_batched`]'s.
    async fn finish_async(
        self,
        words: &[u32],
        b_views: &[BufView<'_>],
        x0s: Option<&[BufView<'_>]>,
    ) -> Result<(Vec<CgResult>, usize)> {
        let mut readbacks = 0;
        let (status, scalars) = self.decode(words);
        if status.iter().any(|s| s.non_finite) {
            // Name the culprit where it is the caller's data.
            crate::finite::ensure_finite_async(self.gpu, "b", b_views).await?;
            if let Some(x0s) = x0s {
                crate::finite::ensure_finite_async(self.gpu, "x0", x0s).await?;
            }
        }
        let maxiter = self.maxiter;
        let mut results = Vec::with_capacity(status.len());
        for (s, (v, (st, sc))) in self
            .systems
            .into_iter()
            .zip(status.iter().zip(&scalars))
            .enumerate()
        {
            if st.non_finite {
                return Err(Error::Breakdown {
                    method: "cg",
                    iteration: st.iterations,
                    message: match sc[BB].is_finite() {
                        true => format!("r·r is not finite for right-hand side {s}: the operator produced non-finite values (or the system overflows f32)"),
                        false => format!("b·b = {} for right-hand side {s}: ‖b‖ overflows f32; scale the system", sc[BB]),
                    },
                });
            }
            if let Some(at) = st.breakdown {
                let pq = sc[PQ];
                let message = if pq.is_nan() {
                    format!(
                        "pᵀAp is NaN for right-hand side {s}: the operator produced non-finite values"
                    )
                } else {
                    format!("pᵀAp = {pq} ≤ 0 with r ≠ 0 for right-hand side {s}: the operator is not symmetric positive definite")
                };
                return Err(Error::Breakdown {
                    method: "cg",
                    iteration: at,
                    message,
                });
            }
            let zero_rhs = sc[BB] == 0.0;
            let iterations = st.iterations;
            let history = if self.history {
                let mut h = v.hist.read_async().await?;
                readbacks += 1;
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
                converged: st.converged && (iterations < maxiter || zero_rhs),
                residual: if zero_rhs { 0.0 } else { sc[RR].sqrt() },
                history,
            });
        }
        Ok((results, readbacks))
    }
}

/// Compiles every pipeline a solve of `op` with these options needs (and builds its bind
/// groups once, on scratch vectors), so that the first real solve does not pay for it.
pub async fn cg_prepare_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    options: &CgOptions<'_>,
) -> Result<()> {
    let n = square_dim(op)?;
    let b = GpuVec::<f32>::zeros(gpu, n)?;
    CgSolver::new_async(gpu, op, &[b.view()], None, options)
        .await
        .map(drop)
}

/// Blocking form of [`cg_prepare_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn cg_prepare(gpu: &Gpu, op: &dyn LinearOperator, options: &CgOptions<'_>) -> Result<()> {
    pollster::block_on(cg_prepare_async(gpu, op, options))
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
/// It is [`CgSolver`]'s loop: the start and the first batch in one submission, then a batch
/// and a readback of the flags at a time.
///
/// Views: each b (and x0) is only read — copied into the solver's own vectors at the start —
/// and each solution is a new vector, so the right-hand sides and starting points may lie in
/// one buffer (an engine's arena) and may even overlap one another; nothing is written in
/// place.
///
/// Errors: non-square operator or wrong lengths; non-finite b or x0 ([`Error::NonFinite`],
/// found on the GPU, named by a scan only when found); `maxiter` or `check_every` 0,
/// `rtol`/`atol` negative or non-finite; Jacobi on an operator without a diagonal or with a
/// non-positive diagonal entry; [`Error::Breakdown`] when pᵀAp ≤ 0 while r ≠ 0 (A is not
/// SPD), naming the iteration, or when the operator's output is not finite; [`Error::Wgpu`]
/// for what wgpu finds wrong in the operator's recording (a user operator's bind group, say)
/// or when it runs. Blocking: the native wrapper of [`cg_batched_async`].
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
    let solver = CgSolver::new_async(gpu, op, bs, x0s, options).await?;
    let mut stats = CgStats {
        dispatches_per_iteration: solver.dispatches_per_iteration(),
        ..Default::default()
    };
    if matches!(options.preconditioner, Preconditioner::Jacobi) {
        stats.submits += 1;
        stats.readbacks += 1;
    }
    let mut recorded = 0;
    let mut first = true;
    let words = loop {
        let times = options.check_every.min(solver.maxiter - recorded);
        let mut rec = Recorder::new(gpu);
        if first {
            solver.record_start(&mut rec)?;
            first = false;
        }
        solver.record_iterations(&mut rec, times)?;
        rec.submit_repeated("cg", 1)?;
        stats.submits += 1;
        recorded += times;
        let words = solver.read_state_async().await?;
        stats.readbacks += 1;
        if recorded >= solver.maxiter || solver.decode(&words).0.iter().all(CgStatus::finished) {
            break words;
        }
    };
    stats.iterations_recorded = recorded;
    let (results, readbacks) = solver.finish_async(&words, bs, x0s).await?;
    stats.readbacks += readbacks;
    Ok((results, stats))
}

/// A whole padded vector, bound as vec4s.
fn vec4s(v: &GpuVec<f32>) -> Binding<'_> {
    Binding::Storage(v.view(), Some(16 * v.len().div_ceil(4) as u64))
}

/// A padded vector as a view of whole vec4s (its zero padding included), for the passes
/// that reduce it without a tail.
fn whole<'v>(v: &'v GpuVec<f32>, name: &'static str) -> BufView<'v> {
    BufView::new(v.buffer(), v.byte_offset(), 4 * v.len().div_ceil(4)).named(name)
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
