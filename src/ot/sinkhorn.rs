//! Log-domain Sinkhorn with POT's `sinkhorn_log` schedule and stopping rule, two dispatches an
//! iteration with the error check folded in and the schedule on the GPU: [`SinkhornSolver`]
//! records them (`G_PASS`, `F_PASS` → `shaders/ot/sinkhorn.wgsl`) once;
//! [`OtProblem::sinkhorn_async`] is its loop with a readback per check, and
//! [`OtProblem::sinkhorn`] wraps that. One implementation.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

use super::{check_binding, check_reg, Cost, OtProblem, OtUniform};

/// The g pass over Cᵀ's rows, C per entry: g′ ← reg·(log b − LSE_i((f − C)/reg)), and when it
/// checks, the column errors at the current g.
pub(crate) static G_PASS: Kernel = Kernel::new(
    &shader::SINKHORN,
    "g_pass",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("g"),
        Slot::Read("f"),
        Slot::Read("b"),
        Slot::Write("g_next"),
        Slot::Write("state"),
    ],
);
/// [`G_PASS`] on a dense Cᵀ whose rows are whole vec4s (n a multiple of 4).
pub(crate) static G_PASS4: Kernel = Kernel::new(
    &shader::SINKHORN,
    "g_pass4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Read("g"),
        Slot::Read("f"),
        Slot::Read("b"),
        Slot::Write("g_next"),
        Slot::Write("state"),
    ],
);
/// The f pass over C's rows, C per entry: the check folded, f ← reg·(log a − LSE_j((g′ −
/// C)/reg)) and g ← g′ unless the solve stops.
pub(crate) static F_PASS: Kernel = Kernel::new(
    &shader::SINKHORN,
    "f_pass",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Write("f"),
        Slot::Read("g_next"),
        Slot::Read("a"),
        Slot::Write("g"),
        Slot::Write("state"),
    ],
);
/// [`F_PASS`] on a dense C whose rows are whole vec4s (m a multiple of 4).
pub(crate) static F_PASS4: Kernel = Kernel::new(
    &shader::SINKHORN,
    "f_pass4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("f"),
        Slot::Read("g_next"),
        Slot::Read("a"),
        Slot::Write("g"),
        Slot::Write("state"),
    ],
);
/// Cᵀ from a dense C, once per problem.
static TRANSPOSE: Kernel = Kernel::new(
    &shader::SINKHORN,
    "transpose_cost",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("cost_t"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&G_PASS, &G_PASS4, &F_PASS, &F_PASS4, &TRANSPOSE];

/// The state words (`shaders/ot/sinkhorn.wgsl`): iterations done, stop, the last error (f32
/// bits), then from [`HISTORY`] the errors at POT's checks.
const ITERATIONS: usize = 0;
const STOP: usize = 1;
const FINAL: usize = 2;
const HISTORY: usize = 8;
const STOP_CONVERGED: u32 = 1;
const STOP_MAXED: u32 = 2;
/// The side of the cost tiles [`TRANSPOSE`] moves through workgroup memory.
const TILE: usize = 16;

/// `max_iter` within the GPU's u32 counters.
fn check_budget(max_iter: usize) -> Result<()> {
    if max_iter >= u32::MAX as usize {
        return Err(Error::param(
            "max_iter",
            max_iter as f64,
            "below 2³² − 1 (the GPU counts iterations in u32)",
        ));
    }
    Ok(())
}

/// Settings of [`OtProblem::sinkhorn`]; [`SinkhornConfig::new`] gives POT's defaults except the
/// tolerance (1e-9 is below what f32 potentials at reg = 1/1200 can hold).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Entropic regularisation reg = 1/η (> 0).
    pub reg: f32,
    /// Iteration budget (POT's `numItermax`, 1000); at least 1, as every solver's limit.
    pub max_iter: usize,
    /// Stop when ‖Pᵀ1 − b‖₂ < tol at a check (POT's `stopThr`; default 1e-5).
    pub tol: f32,
    /// Check every this many iterations (POT: 10), after iterations 1, 1 + k, 1 + 2k, …;
    /// at least 1.
    pub check_every: usize,
}

impl SinkhornConfig {
    /// POT's defaults at regularisation `reg`, with tol = 1e-5.
    pub fn new(reg: f32) -> Self {
        SinkhornConfig {
            reg,
            max_iter: 1000,
            tol: 1e-5,
            check_every: 10,
        }
    }

    fn check(&self) -> Result<()> {
        check_reg(self.reg)?;
        crate::check::iterations("max_iter", self.max_iter)?;
        check_budget(self.max_iter)?;
        crate::check::positive("tol", self.tol)?;
        crate::check::iterations("check_every", self.check_every)
    }
}

/// What [`OtProblem::sinkhorn`] returns. A run that did not converge says so, with the error
/// it reached; its potentials are those of its last iteration.
#[derive(Debug)]
pub struct SinkhornSolution {
    /// Row potential (n), cost units: `P[i][j] = exp((f[i] + g[j] − C[i][j])/reg)`.
    pub f: GpuVec<f32>,
    /// Column potential (m).
    pub g: GpuVec<f32>,
    /// The regularisation solved at.
    pub reg: f32,
    /// ⟨C, P⟩ (f64 sum of per-row f32 sums).
    pub cost: f64,
    /// Iterations (each a g then an f update).
    pub iterations: usize,
    /// Whether a check met the tolerance.
    pub converged: bool,
    /// ‖Pᵀ1 − b‖₂ at each check, in order (POT's `err` history).
    pub errors: Vec<f32>,
    /// ‖Pᵀ1 − b‖₂ of the returned potentials (P·1 = a holds to rounding after an f update).
    pub final_error: f32,
    /// Batches of iterations submitted, each followed by one readback of the status (the
    /// first after two iterations, then one per check); ⟨C, P⟩ takes one more of each.
    pub batches: usize,
    /// Iterations recorded (those after the stop are no-ops on the GPU).
    pub iterations_recorded: usize,
}

/// What [`SinkhornSolver::read_status_async`] decodes from the state words.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkhornStatus {
    /// Iterations done (each a g then an f update).
    pub iterations: usize,
    /// Whether one of POT's checks met the tolerance (the potentials are those it checked).
    pub converged: bool,
    /// `max_iter` iterations done without converging, and the returned potentials measured.
    pub stopped: bool,
    /// ‖Pᵀ1 − b‖₂ at each of POT's checks so far, in order.
    pub errors: Vec<f32>,
    /// ‖Pᵀ1 − b‖₂ at the last check or measure (NaN before the first).
    pub final_error: f32,
}

impl SinkhornStatus {
    /// True once further iterations would change nothing.
    pub fn finished(&self) -> bool {
        self.converged || self.stopped
    }
}

/// A Sinkhorn solve recorded once, for the caller to run in its own encoder at its own pace:
/// [`SinkhornSolver::record_start`], then [`SinkhornSolver::record_iterations`] as often as it
/// likes, reading the [`SinkhornSolver::status`] words when it likes — nothing here waits.
/// Every pipeline, bind group and uniform is built in [`SinkhornSolver::new`];
/// [`OtProblem::sinkhorn_async`] is this loop with a readback per check.
///
/// An iteration is two dispatches, and the schedule is POT's, decided on the GPU: after
/// iterations 0, `check_every`, 2·`check_every`, … the error ‖Pᵀ1 − b‖₂ is checked, in the
/// passes of the next iteration (so a check after iteration t has run once t + 2 iterations
/// are recorded), and a check below `tol` stops the solve with the potentials it checked.
/// After `max_iter` iterations one more recorded iteration measures the returned potentials
/// and stops. Iterations recorded after a stop change nothing, so a caller may record more
/// than it needs; `max_iter + 1` always suffice.
///
/// Views: the potentials are the solver's own ([`SinkhornSolver::f`], [`SinkhornSolver::g`]),
/// or copied into the caller's with [`SinkhornSolver::record_potentials`].
pub struct SinkhornSolver<'p> {
    problem: &'p OtProblem<'p>,
    config: SinkhornConfig,
    f: GpuVec<f32>,
    g: GpuVec<f32>,
    /// The g pass's output, which becomes g when the f pass goes on.
    g_next: GpuVec<f32>,
    /// The words, the history, then the column errors.
    state: GpuVec<u32>,
    history: usize,
    start: Recorder<'p>,
    iteration: Recorder<'p>,
}

impl std::fmt::Debug for SinkhornSolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkhornSolver")
            .field("n", &self.problem.n)
            .field("m", &self.problem.m)
            .field("config", &self.config)
            .finish()
    }
}

impl<'p> SinkhornSolver<'p> {
    /// Allocates the potentials and state and records the start and one iteration.
    ///
    /// Errors: reg or tol not positive and finite, max_iter or check_every = 0, max_iter past
    /// the GPU's u32 counters ([`Error::InvalidParameter`]); the history of checks past one
    /// storage binding, or a problem past the device's workgroup grid ([`Error::TooLarge`]).
    pub fn new(problem: &'p OtProblem<'p>, config: &SinkhornConfig) -> Result<Self> {
        config.check()?;
        Self::with_budget(problem, config, config.max_iter)
    }

    /// [`SinkhornSolver::new`] with `max_iter` iterations, 0 allowed (the start's error only:
    /// SNS's stage 1 may ask for that).
    pub(crate) fn with_budget(
        problem: &'p OtProblem<'p>,
        config: &SinkhornConfig,
        max_iter: usize,
    ) -> Result<Self> {
        check_budget(max_iter)?;
        let gpu = problem.gpu();
        let (n, m) = (problem.n, problem.m);
        let history = match max_iter {
            0 => 0,
            k => (k - 1) / config.check_every + 1,
        };
        let words = (HISTORY as u64 + history as u64).saturating_add(m as u64);
        check_binding(gpu, "max_iter", words)?;
        let mut solver = SinkhornSolver {
            problem,
            config: SinkhornConfig {
                max_iter,
                ..*config
            },
            f: GpuVec::zeros(gpu, n)?,
            g: GpuVec::zeros(gpu, m)?,
            g_next: GpuVec::zeros(gpu, m)?,
            state: GpuVec::zeros(gpu, words as usize)?,
            history,
            start: Recorder::new(gpu),
            iteration: Recorder::new(gpu),
        };
        let mut start = Recorder::new(gpu);
        for v in [&solver.f, &solver.g] {
            crate::vector::record_fill(&mut start, v.view(), 0.0)?;
        }
        // 0.0's bits are 0: the counters at 0, running, no errors yet.
        crate::vector::record_fill(&mut start, solver.state.view(), 0.0)?;
        let mut iteration = Recorder::new(gpu);
        solver.record_pass(&mut iteration, Pass::G)?;
        solver.record_pass(&mut iteration, Pass::F)?;
        solver.start = start;
        solver.iteration = iteration;
        Ok(solver)
    }

    /// Records the start: f = g = 0, every counter at 0. Recording it again restarts the solve.
    pub fn record_start(&self, rec: &mut Recorder<'_>) -> Result<()> {
        rec.append(&self.start, 1)
    }

    /// Records `k` iterations (at most `max_iter + 1`: more would change nothing).
    pub fn record_iterations(&self, rec: &mut Recorder<'_>, k: usize) -> Result<()> {
        rec.append(&self.iteration, k.min(self.config.max_iter + 1))
    }

    /// Records copies of the potentials into `f` (n elements) and `g` (m), anywhere.
    pub fn record_potentials(
        &self,
        rec: &mut Recorder<'_>,
        f: BufView<'_>,
        g: BufView<'_>,
    ) -> Result<()> {
        let gpu = self.problem.gpu();
        let (n, m) = (self.problem.n, self.problem.m);
        let (f, g) = (f.check(gpu, "f", n)?, g.check(gpu, "g", m)?);
        f.refuse_overlap(&g, || {
            "the potentials are copied into two separate views".into()
        })?;
        crate::vector::record_copy(rec, self.f.view(), 0, f, 0, n)?;
        crate::vector::record_copy(rec, self.g.view(), 0, g, 0, m)
    }

    /// Dispatches one iteration records.
    pub fn dispatches_per_iteration(&self) -> usize {
        self.iteration.len()
    }

    /// The row potential f (n).
    pub fn f(&self) -> &GpuVec<f32> {
        &self.f
    }

    /// The column potential g (m).
    pub fn g(&self) -> &GpuVec<f32> {
        &self.g
    }

    /// The state words: iterations done, stop (1 converged, 2 `max_iter` reached), the last
    /// error's f32 bits, internal words, from word 8 the errors at POT's checks, then scratch.
    /// Copy them wherever suits the caller's frame; [`SinkhornSolver::read_status_async`]
    /// reads and decodes them.
    pub fn status(&self) -> BufView<'_> {
        self.state.view()
    }

    /// Reads and decodes the status (one readback).
    pub async fn read_status_async(&self) -> Result<SinkhornStatus> {
        let words = self.state.read_async().await?;
        let (iterations, stop) = (words[ITERATIONS] as usize, words[STOP]);
        // The check after iteration i runs in iteration i + 1's passes: while running, those
        // after 0, every, … ≤ t − 2 have run; once stopped, also the one the stop ran.
        let last = match stop {
            0 => iterations.checked_sub(2),
            _ => iterations.checked_sub(1),
        };
        let done = last.map_or(0, |i| i / self.config.check_every + 1);
        let done = done.min(self.history);
        let final_error = match (stop, done) {
            (0, 0) => f32::NAN,
            _ => f32::from_bits(words[FINAL]),
        };
        Ok(SinkhornStatus {
            iterations,
            converged: stop == STOP_CONVERGED,
            stopped: stop == STOP_MAXED,
            errors: words[HISTORY..HISTORY + done]
                .iter()
                .map(|&b| f32::from_bits(b))
                .collect(),
            final_error,
        })
    }

    /// The potentials, moved out (SNS's stage 1).
    pub(crate) fn into_potentials(self) -> (GpuVec<f32>, GpuVec<f32>) {
        (self.f, self.g)
    }

    /// Records one pass; the g pass runs over Cᵀ (n and m swapped in the uniform).
    fn record_pass(&self, rec: &mut Recorder, pass: Pass) -> Result<()> {
        let p = self.problem;
        let mut u = OtUniform {
            max_iter: self.config.max_iter as u32,
            every: self.config.check_every as u32,
            tol: self.config.tol,
            err_at: (HISTORY + self.history) as u32,
            ..p.uniform(self.config.reg)
        };
        let (own, other, marginal, spare) = match pass {
            Pass::G => {
                (u.n, u.m) = (u.m, u.n);
                (&self.g, &self.f, &p.b, &self.g_next)
            }
            Pass::F => (&self.f, &self.g_next, &p.a, &self.g),
        };
        let (rows, row_len) = (u.n as usize, u.m as usize);
        let tail = [
            Binding::storage(own.view()),
            Binding::storage(other.view()),
            Binding::storage(marginal.view()),
            Binding::storage(spare.view()),
            Binding::storage(self.state.view()),
        ];
        let matrix = match pass {
            Pass::G => p.cost_t.as_ref().map(GpuVec::view),
            Pass::F => match p.cost {
                Cost::Dense(c) => Some(c),
                Cost::Points { .. } => None,
            },
        };
        // Four rows a workgroup on CPU adapters (why: at ROWS in the shader) where the
        // driver's loop limit allows.
        let (wg, block) = p.row_blocking(row_len, 4)?;
        let wg = wg as f64;
        let grid = rec.grid_for_groups(rows.div_ceil(block) as u64)?;
        let constants = [("WG", wg), ("ROWS", block as f64), ("COST", p.cost_kind())];
        if let Some(c) = matrix.filter(|_| row_len.is_multiple_of(4)) {
            let kernel = match pass {
                Pass::G => &G_PASS4,
                Pass::F => &F_PASS4,
            };
            let mut bindings = vec![Binding::uniform(&u), Binding::storage(c)];
            bindings.extend([Binding::Skip, Binding::Skip]);
            bindings.extend(tail);
            return rec.dispatch(kernel, &constants[..2], &bindings, grid);
        }
        let cost = match (matrix, p.cost) {
            (Some(c), _) => [
                Binding::storage(c),
                Binding::Placeholder,
                Binding::Placeholder,
            ],
            (None, Cost::Points { x, y, .. }) => {
                let (x, y) = match pass {
                    Pass::G => (y, x),
                    Pass::F => (x, y),
                };
                [
                    Binding::Placeholder,
                    Binding::storage(x),
                    Binding::storage(y),
                ]
            }
            (None, Cost::Dense(_)) => unreachable!("a dense cost always has its matrices"),
        };
        let kernel = match pass {
            Pass::G => &G_PASS,
            Pass::F => &F_PASS,
        };
        let mut bindings = vec![Binding::uniform(&u)];
        bindings.extend(cost);
        bindings.extend(tail);
        rec.dispatch(kernel, &constants, &bindings, grid)
    }
}

/// The two passes of an iteration.
#[derive(Clone, Copy)]
enum Pass {
    G,
    F,
}

impl<'a> OtProblem<'a> {
    /// Solves with log-domain Sinkhorn from f = g = 0 (blocking: one readback per check).
    ///
    /// Errors: as [`SinkhornSolver::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sinkhorn(&self, config: &SinkhornConfig) -> Result<SinkhornSolution> {
        pollster::block_on(self.sinkhorn_async(config))
    }

    /// Async form of [`OtProblem::sinkhorn`].
    pub async fn sinkhorn_async(&self, config: &SinkhornConfig) -> Result<SinkhornSolution> {
        let solver = SinkhornSolver::new(self, config)?;
        let (status, batches, recorded) = solver.run_async().await?;
        let cost = self
            .transport_cost_async(&solver.f, &solver.g, config.reg)
            .await?;
        let (f, g) = solver.into_potentials();
        Ok(SinkhornSolution {
            f,
            g,
            reg: config.reg,
            cost,
            iterations: status.iterations,
            converged: status.converged,
            errors: status.errors,
            final_error: status.final_error,
            batches,
            iterations_recorded: recorded,
        })
    }
}

impl SinkhornSolver<'_> {
    /// From the start to a stop, reading the status once a check has run (the first after
    /// two iterations, then every `check_every`).
    /// Returns the status, the batches submitted and the iterations recorded.
    pub(crate) async fn run_async(&self) -> Result<(SinkhornStatus, usize, usize)> {
        let gpu = self.problem.gpu();
        let budget = self.config.max_iter + 1;
        let mut rec = Recorder::new(gpu);
        self.record_start(&mut rec)?;
        let (mut recorded, mut batches) = (0, 0);
        while recorded < budget {
            let k = match recorded {
                0 => 2,
                _ => self.config.check_every,
            }
            .min(budget - recorded);
            self.record_iterations(&mut rec, k)?;
            recorded += k;
            std::mem::replace(&mut rec, Recorder::new(gpu)).submit()?;
            batches += 1;
            let status = self.read_status_async().await?;
            if status.finished() {
                return Ok((status, batches, recorded));
            }
        }
        Err(Error::State(format!(
            "Sinkhorn did not stop within max_iter + 1 = {budget} recorded iterations"
        )))
    }
}

/// Cᵀ (m×n) of a dense n×m cost.
pub(crate) fn transposed(gpu: &Gpu, c: BufView<'_>, n: usize, m: usize) -> Result<GpuVec<f32>> {
    let (across, down) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if across.max(down) > max {
        return Err(Error::TooLarge {
            argument: "cost",
            requested: across.max(down) as u64,
            limit: "max_compute_workgroups_per_dimension (16×16 tiles of the dense cost's \
                    transposed copy; use Cost::Points)",
            max: max as u64,
        });
    }
    let out = GpuVec::<f32>::zeros(gpu, n * m)?;
    let u = OtUniform {
        n: n as u32,
        m: m as u32,
        ..Default::default()
    };
    let mut rec = Recorder::new(gpu);
    rec.dispatch(
        &TRANSPOSE,
        &[],
        &[
            Binding::uniform(&u),
            Binding::storage(c),
            Binding::Skip,
            Binding::Skip,
            Binding::storage(out.view()),
        ],
        [across as u32, down as u32, 1],
    )?;
    rec.submit()?;
    Ok(out)
}
