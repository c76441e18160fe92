//! Log-domain Sinkhorn with POT's `sinkhorn_log` schedule and stopping rule.

use crate::buffer::GpuVec;
use crate::error::{Error, Result};
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::reduce::Reduction;
use crate::shader;

use super::{check_reg, OtProblem, OtUniform};

/// f ← reg·(log a − LSE_j((g − C)/reg)), one workgroup per row, C per entry.
pub(crate) static ROW_UPDATE: Kernel = Kernel::new(
    &shader::SINKHORN,
    "row_update",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Write("f"),
        Slot::Read("g"),
        Slot::Read("a"),
    ],
);
/// [`ROW_UPDATE`] for a dense C whose rows are whole vec4s.
pub(crate) static ROW_UPDATE4: Kernel = Kernel::new(
    &shader::SINKHORN,
    "row_update4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("f"),
        Slot::Read("g"),
        Slot::Read("a"),
    ],
);
/// Each row slice's (max, sum) of exp((f − C)/reg) per column, C per entry.
pub(crate) static COL_PARTIAL: Kernel = Kernel::new(
    &shader::SINKHORN,
    "col_partial",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("partials"),
    ],
);
/// [`COL_PARTIAL`] for a dense C whose rows are whole vec4s.
pub(crate) static COL_PARTIAL4: Kernel = Kernel::new(
    &shader::SINKHORN,
    "col_partial4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Read("f"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("partials"),
    ],
);
/// The slices combined: g updated, or (checking) Pᵀ1 − b written.
pub(crate) static COL_FINISH: Kernel = Kernel::new(
    &shader::SINKHORN,
    "col_finish",
    &[
        uniform::<OtUniform>(),
        Slot::Gap,
        Slot::Gap,
        Slot::Gap,
        Slot::Gap,
        Slot::Write("g"),
        Slot::Read("b"),
        Slot::Read("partials"),
        Slot::Write("col_err"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &ROW_UPDATE,
    &ROW_UPDATE4,
    &COL_PARTIAL,
    &COL_PARTIAL4,
    &COL_FINISH,
];

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
}

/// Potentials and scratch of a Sinkhorn run (also SNS's first stage).
pub(crate) struct SinkhornState {
    pub f: GpuVec<f32>,
    pub g: GpuVec<f32>,
    slices: usize,
    partials: GpuVec<f32>,
    col_err: GpuVec<f32>,
    err: GpuVec<f32>,
}

impl<'a> OtProblem<'a> {
    /// Solves with log-domain Sinkhorn from f = g = 0 (blocking: one readback per check).
    ///
    /// Errors: reg or tol not positive and finite, max_iter or check_every = 0
    /// ([`Error::InvalidParameter`]); a column grid past the device's workgroup limit, or
    /// column partials past one storage binding ([`Error::TooLarge`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sinkhorn(&self, config: &SinkhornConfig) -> Result<SinkhornSolution> {
        pollster::block_on(self.sinkhorn_async(config))
    }

    /// Async form of [`OtProblem::sinkhorn`].
    pub async fn sinkhorn_async(&self, config: &SinkhornConfig) -> Result<SinkhornSolution> {
        config.check()?;
        let mut state = self.sinkhorn_state()?;
        let run = self
            .run_sinkhorn(&mut state, config, config.max_iter)
            .await?;
        let cost = self
            .transport_cost_async(&state.f, &state.g, config.reg)
            .await?;
        Ok(SinkhornSolution {
            f: state.f,
            g: state.g,
            reg: config.reg,
            cost,
            iterations: run.iterations,
            converged: run.converged,
            errors: run.errors,
            final_error: run.final_error,
        })
    }

    pub(crate) fn sinkhorn_state(&self) -> Result<SinkhornState> {
        let gpu = self.gpu();
        let slices = self.column_slices(2)?;
        Ok(SinkhornState {
            f: GpuVec::zeros(gpu, self.n)?,
            g: GpuVec::zeros(gpu, self.m)?,
            slices,
            partials: GpuVec::zeros(gpu, 2 * slices * self.m)?,
            col_err: GpuVec::zeros(gpu, self.m)?,
            err: GpuVec::zeros(gpu, 1)?,
        })
    }

    /// Up to `max_iter` iterations of POT's loop from the state's potentials (0: none, only
    /// the final error is measured; SNS's stage 1 may ask for that).
    pub(crate) async fn run_sinkhorn(
        &self,
        state: &mut SinkhornState,
        config: &SinkhornConfig,
        max_iter: usize,
    ) -> Result<SinkhornRun> {
        let gpu = self.gpu();
        let every = config.check_every;
        let mut run = SinkhornRun {
            iterations: 0,
            converged: false,
            errors: Vec::new(),
            final_error: f32::NAN,
        };
        // One iteration and one check, recorded once: every block re-encodes their bind
        // groups rather than building new ones per iteration.
        let mut iteration = Recorder::new(gpu);
        self.record_g_update(&mut iteration, state, config.reg, false)?;
        self.record_f_update(&mut iteration, state, config.reg)?;
        let mut check = Recorder::new(gpu);
        self.record_g_update(&mut check, state, config.reg, true)?;
        let mut checked_last = false;
        while run.iterations < max_iter {
            // POT checks after iteration index ii when ii % every == 0: run up to there.
            let it = run.iterations;
            let next_check = it.next_multiple_of(every);
            let last = next_check.min(max_iter - 1);
            checked_last = last == next_check;
            // One command buffer per block: the iterations, then the check if one is due.
            gpu.submit("sinkhorn", || {
                let mut encoder = gpu.device().create_command_encoder(&Default::default());
                iteration.encode_repeated(&mut encoder, last + 1 - it, None);
                if checked_last {
                    check.encode_repeated(&mut encoder, 1, None);
                }
                vec![encoder.finish()]
            })?;
            run.iterations = last + 1;
            if checked_last {
                let err = self.read_error(state).await?;
                run.errors.push(err);
                run.final_error = err;
                if err < config.tol {
                    run.converged = true;
                    break;
                }
            }
        }
        if !checked_last {
            check.submit()?;
            run.final_error = self.read_error(state).await?;
        }
        Ok(run)
    }

    /// g ← reg·(log b − LSE_i((f − C)/reg)), or with `check` Pᵀ1 − b into the state's
    /// column errors and ‖·‖² into its error slot (g unchanged).
    pub(crate) fn record_g_update(
        &self,
        rec: &mut Recorder,
        state: &SinkhornState,
        reg: f32,
        check: bool,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let wg = gpu.tuning().workgroup_size as usize;
        let dense = self.dense_vec4();
        let blocks = match &dense {
            Some(d) => (self.m / 4).div_ceil(d.quads * wg),
            None => self.m.div_ceil(wg),
        };
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        if blocks > max {
            return Err(Error::TooLarge {
                argument: "b",
                requested: blocks as u64,
                limit: "max_compute_workgroups_per_dimension (column blocks)",
                max: max as u64,
            });
        }
        let u = OtUniform {
            slices: state.slices as u32,
            check: check as u32,
            ..self.uniform(reg)
        };
        let grid = [blocks as u32, state.slices as u32, 1];
        // Binding 5 (g) is a gap of the column passes.
        let rest = [Binding::Skip, Binding::storage(state.partials.view())];
        if let Some(dense) = dense {
            rec.dispatch(
                &COL_PARTIAL4,
                &dense.constants(wg),
                &dense.bindings(&u, (state.f.view(), None), &rest),
                grid,
            )?;
        } else {
            self.record_over_cost(
                rec,
                &COL_PARTIAL,
                false,
                &u,
                (state.f.view(), None),
                &rest,
                grid,
            )?;
        }
        // The update does not write the column errors (its `check` is a uniform, so the entry
        // binds them either way).
        let col_err = match check {
            true => Binding::storage(state.col_err.view()),
            false => Binding::Placeholder,
        };
        let grid = rec.elementwise_grid(self.m as u64)?;
        rec.dispatch(
            &COL_FINISH,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::Skip,
                Binding::Skip,
                Binding::Skip,
                Binding::Skip,
                Binding::storage(state.g.view()),
                Binding::storage(self.b.view()),
                Binding::storage(state.partials.view()),
                col_err,
            ],
            grid,
        )?;
        if check {
            crate::reduce::record(
                rec,
                Reduction::SquaredNorm,
                state.col_err.view(),
                None,
                state.err.view(),
                0,
            )?;
        }
        Ok(())
    }

    /// f ← reg·(log a − LSE_j((g − C)/reg)).
    pub(crate) fn record_f_update(
        &self,
        rec: &mut Recorder,
        state: &SinkhornState,
        reg: f32,
    ) -> Result<()> {
        let u = self.uniform(reg);
        let potentials = (state.f.view(), Some(state.g.view()));
        let rest = [Binding::storage(self.a.view())];
        if let Some(dense) = self.dense_vec4() {
            let grid = rec.grid_for_groups(self.n.div_ceil(dense.rows) as u64)?;
            return rec.dispatch(
                &ROW_UPDATE4,
                &dense.constants(self.row_workgroup() as usize),
                &dense.bindings(&u, potentials, &rest),
                grid,
            );
        }
        let grid = rec.grid_for_groups(self.n as u64)?;
        self.record_over_cost(rec, &ROW_UPDATE, true, &u, potentials, &rest, grid)
    }

    async fn read_error(&self, state: &SinkhornState) -> Result<f32> {
        Ok(state.err.read_async().await?[0].max(0.0).sqrt())
    }
}

/// Counts and errors of one [`OtProblem::run_sinkhorn`].
pub(crate) struct SinkhornRun {
    pub iterations: usize,
    pub converged: bool,
    pub errors: Vec<f32>,
    pub final_error: f32,
}
