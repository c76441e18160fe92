//! Sparse Newton on the entropic OT dual: Sinkhorn steps until POT's error check passes a
//! switch threshold, then Newton steps with the Hessian sparsified plus its exact diagonal
//! blocks, solved by the crate's CG. Two stages ([`NewtonStage`]): Safe and Sparse Newton
//! (SSNS; Tang & Qiu, NeurIPS 2024, the default: a threshold relative to ‖∇‖, a shift μ·‖∇‖
//! adapted by the ratio of actual to predicted rise, four step sizes evaluated in one pass)
//! and Sinkhorn-Newton-Sparse (SNS; Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil,
//! Xiao and Ying, ICLR 2024: each row's largest entries, a backtracking line search).

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::kernel::{uniform, Kernel, Slot};
use crate::krylov::{CgOptions, Direction, LinearOperator, Preconditioner};
use crate::record::{Binding, Recorder};
use crate::shader;

use super::plan::{TopK, STEP_SIZES};
use super::sinkhorn::{SinkhornConfig, SinkhornSolver};
use super::{check_binding, check_reg, OtProblem};

/// The default `switch_error`.
const SWITCH: f32 = 0.1;

/// SSNS: the fraction of ‖∇‖ each row's dropped entries may hold at most (regot's ν₀).
const SAFE_DROP: f64 = 0.01;
/// SSNS: μ's floor (regot's κ).
const SAFE_MU_MIN: f64 = 0.001;
/// SSNS: μ past which the steps are too short to matter in f32 (from 1, 15 rejections in a
/// row): the stage has stalled.
const SAFE_MU_MAX: f64 = 1e9;

/// Entries of P kept per row at most (`SnsConfig::density`'s default).
pub const MAX_KEPT: usize = 512;

crate::kernel::uniform_struct! {
    /// The uniform of `shaders/ot/sns.wgsl` (`struct Sns`); `k` is the column passes' slice
    /// count in `col_total` and `shift` the step size α in `step`.
    struct SnsUniform {
        n: u32, m: u32, k: u32, pinned: u32, shift: f32, starts_at: u32, beta_index: u32,
        _pad3: u32,
    }
}

/// y = H·x for the sparse Hessian.
static HESSIAN_APPLY: Kernel = Kernel::new(
    &shader::SNS,
    "hessian_apply",
    &[
        uniform::<SnsUniform>(),
        Slot::Read("x"),
        Slot::Write("y"),
        Slot::Read("diag"),
        Slot::Read("indices"),
        Slot::Read("values"),
        Slot::Read("d"),
    ],
);
/// y = H·x with xᵀy's partials (with `FUSED_DIRECTION`, x + β·d in place of x).
static HESSIAN_APPLY_DOT: Kernel = Kernel::new(
    &shader::SNS,
    "hessian_apply_dot",
    &[
        uniform::<SnsUniform>(),
        Slot::Read("x"),
        Slot::Write("y"),
        Slot::Read("diag"),
        Slot::Read("indices"),
        Slot::Read("values"),
        Slot::Read("d"),
        Slot::Read("scalars"),
        Slot::Write("partials"),
    ],
);
/// d = diag(H).
static HESSIAN_DIAGONAL: Kernel = Kernel::new(
    &shader::SNS,
    "hessian_diagonal",
    &[
        uniform::<SnsUniform>(),
        Slot::Gap,
        Slot::Write("d"),
        Slot::Read("diag"),
    ],
);
/// Pᵀ·1 from the column passes' slices.
static COL_TOTAL: Kernel = Kernel::new(
    &shader::SNS,
    "col_total",
    &[
        uniform::<SnsUniform>(),
        Slot::Read("partials"),
        Slot::Write("diag"),
    ],
);
/// The line search's trial potentials.
static STEP: Kernel = Kernel::new(
    &shader::SNS,
    "step",
    &[
        uniform::<SnsUniform>(),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Read("direction"),
        Slot::Write("f_trial"),
        Slot::Write("g_trial"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &HESSIAN_APPLY,
    &HESSIAN_APPLY_DOT,
    &HESSIAN_DIAGONAL,
    &COL_TOTAL,
    &STEP,
];

/// Settings of [`OtProblem::sns`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnsConfig {
    /// Entropic regularisation reg = 1/η (> 0).
    pub reg: f32,
    /// Stop when ‖(a − P·1, b − Pᵀ·1)‖₂ < tol (default 1e-5, what f32 holds at η = 1200).
    pub tol: f32,
    /// Stage 1: Sinkhorn iterations before the first Newton step (N₁; default 1000, a cap
    /// for `switch_error`). With `switch_error = None` a fixed count (the paper: 20), so 0 is
    /// allowed: Newton's method from f = g = 0, which suits a large `reg`; at a small one
    /// P(0) = exp(−C/reg) has rows and columns without mass in f32 and the first Newton step
    /// fails with [`Error::Breakdown`] saying so.
    pub sinkhorn_steps: usize,
    /// Stage 1 ends early at the first of POT's checks (after Sinkhorn iterations 1, 11,
    /// 21, …) where ‖Pᵀ1 − b‖₂ < `switch_error`·‖b‖₂ (default 0.1; relative, since ‖b‖₂
    /// falls with n), so `sinkhorn_steps` is then a cap; `None`: a fixed count. Measured with
    /// SSNS on lavapipe (η = 1200, to 1e-5, wall time of the solve): 0.1 against the paper's
    /// fixed 20 took the images from 1.7–2.0 s to 0.75 (7 Newton steps, not 26), random_500
    /// from 0.69–0.76 s to 0.59 and the L1 problem from 3.3–3.4 s to 2.6; against 0.2, 0.1
    /// was as fast or faster on all four (L1: 2.6 s against 3.9), and an absolute 1e-2 left
    /// random_2000 after one Sinkhorn iteration.
    pub switch_error: Option<f32>,
    /// Newton-step budget (default 100); at least 1, as every solver's limit.
    pub max_newton: usize,
    /// λ, the fraction of P's n·m entries the sparse Hessian may keep: at most ⌈λ·m⌉ a row
    /// (1 ..= [`MAX_KEPT`]), the row's largest, and only those within e^-14 of its largest.
    /// `None` allows [`MAX_KEPT`]. The paper's λ = 2/n (2 a row; 15/n for L1 costs) stalls in
    /// f32 at η = 1200 on its own random problem: the error falls ~3% a Newton step at n = 500
    /// with 2, 4 or 8 a row, while 16 converge in 8 steps and 32 in 6; at n = 2000, 64 stall
    /// and 128 converge in 5; at n = 5000, 128 stall, 256 converge in 4 and 512 in 3 (a row's
    /// significant entries grow with n at fixed η). Measured on lavapipe; Tang & Qiu and
    /// regot report the same stall of fixed-density sparsification (ALGORITHMS.md).
    pub density: Option<f32>,
    /// [`NewtonStage::Sparse`] only: μ ≥ 0, μ·‖∇‖ added to the sparse Hessian's diagonal (P's
    /// units; 0, plain SNS). SSNS adapts its own shift from `mu0`.
    pub shift: f32,
    /// CG's relative tolerance on each Newton system (default 1e-3: an inexact Newton step;
    /// 1e-6 took the same Newton steps and 20–50% longer at n = 500 and 2000).
    pub cg_rtol: f32,
    /// CG's iteration limit per Newton step (default 1000); at least 1. A step whose CG stops
    /// at the limit unconverged is still tried (an inexact Newton step).
    pub cg_maxiter: usize,
    /// The Newton stage (default [`NewtonStage::Safe`]).
    pub stage: NewtonStage,
    /// SSNS's initial μ (default 1, regot's): the shift on the sparse Hessian's diagonal is
    /// μ·‖∇‖ in the dual's units, μ adapted after every step. [`NewtonStage::Safe`] only.
    pub mu0: f32,
    /// [`NewtonStage::Sparse`] only: step halvings tried before a Newton step is given up as
    /// stalled (default 12; then
    /// [`OtProblem::sns`] fails with [`Error::Breakdown`]). The line search tries
    /// `max_halvings + 1` step sizes, 1, 1/2, …, 2^−max_halvings, so 0 is allowed: full Newton
    /// steps only.
    pub max_halvings: usize,
}

impl SnsConfig {
    /// The defaults above at regularisation `reg`.
    pub fn new(reg: f32) -> Self {
        SnsConfig {
            reg,
            tol: 1e-5,
            sinkhorn_steps: 1000,
            switch_error: Some(SWITCH),
            max_newton: 100,
            density: None,
            shift: 0.0,
            cg_rtol: 1e-3,
            cg_maxiter: 1000,
            stage: NewtonStage::Safe,
            mu0: 1.0,
            max_halvings: 12,
        }
    }

    fn check(&self) -> Result<()> {
        check_reg(self.reg)?;
        crate::check::positive("tol", self.tol)?;
        // sinkhorn_steps = 0 and max_halvings = 0 are meaningful (see their docs).
        crate::check::iterations("max_newton", self.max_newton)?;
        crate::check::non_negative("shift", self.shift)?;
        crate::check::positive("mu0", self.mu0)?;
        if let Some(e) = self.switch_error {
            crate::check::positive("switch_error", e)?;
        }
        crate::check::positive("cg_rtol", self.cg_rtol)?;
        if let Some(d) = self.density {
            if !(d.is_finite() && d > 0.0 && d <= 1.0) {
                return Err(Error::param("density", d as f64, "in (0, 1]"));
            }
        }
        crate::check::iterations("cg_maxiter", self.cg_maxiter)
    }
}

/// How the Newton stage sparsifies the Hessian and picks its steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NewtonStage {
    /// Safe and Sparse Newton (SSNS; Tang & Qiu 2024, regot's default sparse Newton): entries
    /// of P below 0.01·‖∇‖/m dropped (so each row loses at most 0.01·‖∇‖ of its mass; at most
    /// `density`'s cap kept), μ·‖∇‖ added to the diagonal so the sparse system stays definite,
    /// the step sizes 1, 1/2, 1/4, 1/10 evaluated in one pass and the first that raises the
    /// dual objective taken when the ratio ρ of actual to predicted rise is positive; μ grows
    /// ×4 when ρ < 1/4 and shrinks ×1/2 (not below 0.001) when ρ > 3/4.
    #[default]
    Safe,
    /// Sinkhorn-Newton-Sparse (Tang et al. 2024): each row's largest entries (within e^-14
    /// of its largest, at most `density`'s cap), the fixed `shift`, and a backtracking line
    /// search by halves (`max_halvings`), one evaluation per trial.
    Sparse,
}

/// What [`OtProblem::sns`] returns. A run that spent its Newton budget unconverged says so,
/// with the error it reached (a Newton step that no step size can make progress with is an
/// [`Error::Breakdown`] instead).
#[derive(Debug)]
pub struct SnsSolution {
    /// Row potential (n), as [`super::SinkhornSolution::f`].
    pub f: GpuVec<f32>,
    /// Column potential (m).
    pub g: GpuVec<f32>,
    /// The regularisation solved at.
    pub reg: f32,
    /// ⟨C, P⟩.
    pub cost: f64,
    /// Stage-1 Sinkhorn iterations.
    pub sinkhorn_iterations: usize,
    /// Stage-1 errors (‖Pᵀ1 − b‖₂ at POT's checks).
    pub sinkhorn_errors: Vec<f32>,
    /// Newton steps taken.
    pub newton_iterations: usize,
    /// CG iterations of each Newton step.
    pub cg_iterations: Vec<usize>,
    /// Step size accepted at each Newton step (0 where SSNS rejected the step, ρ ≤ 0, and
    /// raised μ).
    pub step_sizes: Vec<f32>,
    /// ‖(a − P·1, b − Pᵀ·1)‖₂ before each Newton step and after the last.
    pub newton_errors: Vec<f32>,
    /// Entries of P the sparse Hessian could keep per row.
    pub kept_per_row: usize,
    /// Entries of P each sparse Hessian kept, in order ([`NewtonStage::Safe`]: after its
    /// threshold; empty for [`NewtonStage::Sparse`]).
    pub kept_entries: Vec<usize>,
    /// Rows, summed over the Hessians built, whose largest bin of entries alone overflowed
    /// `kept_per_row` (then an arbitrary part of it was kept): a sign to raise `density`.
    pub capped_rows: usize,
    /// Whether the tolerance was met.
    pub converged: bool,
    /// ‖(a − P·1, b − Pᵀ·1)‖₂ at the returned potentials.
    pub final_error: f32,
}

/// The sparse Hessian as a [`LinearOperator`] on (n + m)-vectors.
struct SparseHessian<'h> {
    n: usize,
    m: usize,
    k: usize,
    shift: f32,
    diag: BufView<'h>,
    indices: &'h GpuVec<u32>,
    values: &'h GpuVec<f32>,
    /// Where the CSC column starts begin in `indices`.
    starts_at: usize,
    /// Whether CG's direction is formed where the product reads it ([`FUSE_ENTRIES`]).
    fuse_direction: bool,
}

/// Entries of the sparse pattern up to which its product forms CG's direction p = z + β·p
/// itself on CPU adapters: that reads two vectors at every gather instead of one, and
/// lavapipe's scalar gathers cost ~2 ns each, so past ~10,000 entries (both halves gathered)
/// the saved dispatch (40–55 µs) is lost again; at n = 2000 (1.3 million entries kept) the
/// fused form made SNS's CG 1.1 s slower over 321 iterations. GPUs always fuse.
const FUSE_ENTRIES: usize = 10_000;

impl SparseHessian<'_> {
    fn uniform(&self) -> SnsUniform {
        SnsUniform {
            n: self.n as u32,
            m: self.m as u32,
            k: self.k as u32,
            pinned: self.m as u32 - 1,
            shift: self.shift,
            starts_at: self.starts_at as u32,
            ..Default::default()
        }
    }

    /// Records y = H·p with pᵀy's partials, p = x or (`direction`) x + β·d.
    fn record_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        direction: Option<(BufView<'_>, BufView<'_>, usize)>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        let u = SnsUniform {
            beta_index: direction.map_or(0, |(_, _, i)| i as u32),
            ..self.uniform()
        };
        let groups = crate::reduce::partial_groups(rec.gpu(), (self.n + self.m).div_ceil(4) as u64)
            .min(partials.len() as u64);
        let grid = rec.grid_for_groups(groups)?;
        let (d, scalars) = match direction {
            Some((d, scalars, _)) => (Binding::storage(d), Binding::storage(scalars)),
            None => (Binding::Placeholder, Binding::Placeholder),
        };
        rec.dispatch(
            &HESSIAN_APPLY_DOT,
            &[
                rec.wg()[0],
                ("FUSED_DIRECTION", direction.is_some() as u8 as f64),
            ],
            &[
                Binding::uniform(&u),
                Binding::storage(x),
                Binding::storage(y),
                Binding::storage(self.diag),
                Binding::storage(self.indices.view()),
                Binding::storage(self.values.view()),
                d,
                scalars,
                Binding::storage(partials),
            ],
            grid,
        )?;
        Ok(Some(groups))
    }
}

impl LinearOperator for SparseHessian<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.n + self.m, self.n + self.m)
    }

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let u = self.uniform();
        let grid = rec.elementwise_grid((self.n + self.m) as u64)?;
        rec.dispatch(
            &HESSIAN_APPLY,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::storage(x),
                Binding::storage(y),
                Binding::storage(self.diag),
                Binding::storage(self.indices.view()),
                Binding::storage(self.values.view()),
                Binding::Placeholder,
            ],
            grid,
        )
    }

    /// y = H·x with xᵀy's partials, one workgroup per partial (as many as a reduction over
    /// the n + m entries takes).
    fn record_apply_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        self.record_dot(rec, x, None, y, partials)
    }

    /// y = H·(x + β·d) with the operand's dot with y, the operand formed where it is read.
    fn record_direction_apply_dot(
        &self,
        rec: &mut Recorder,
        direction: &Direction<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        if !self.fuse_direction {
            return Ok(None);
        }
        let Direction {
            x,
            d,
            scalars,
            beta_index,
        } = *direction;
        self.record_dot(rec, x, Some((d, scalars, beta_index)), y, partials)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        let u = self.uniform();
        let grid = rec.elementwise_grid((self.n + self.m) as u64)?;
        rec.dispatch(
            &HESSIAN_DIAGONAL,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::Skip,
                Binding::storage(d),
                Binding::storage(self.diag),
            ],
            grid,
        )?;
        Ok(true)
    }
}

/// P's marginals and largest entries at one point z = (f, g).
struct Evaluation {
    /// (P·1, Pᵀ·1).
    diag: GpuVec<f32>,
    /// The same on the host.
    sums: Vec<f32>,
    top: TopK,
    /// On the host, f64: the gradient (a − P·1, b − Pᵀ·1), its norm and Σ P.
    grad: Vec<f64>,
    error: f64,
    mass: f64,
    /// Rows with more significant entries than the pattern holds (read with the pattern).
    capped: GpuVec<u32>,
}

/// Potentials f (n) and g (m), kept apart: g inside one (n + m) buffer would start at a
/// misaligned binding offset.
struct Potentials {
    f: GpuVec<f32>,
    g: GpuVec<f32>,
}

/// A Newton direction Δ and the host's scalars of it.
struct NewtonDirection {
    cg: crate::krylov::CgResult,
    /// Δ = reg·H⁻¹∇, f64 from CG's f32 solution.
    delta: Vec<f64>,
    /// ∇ᵀΔ, the predicted rise's slope.
    slope: f64,
    /// ⟨a, Δf⟩ + ⟨b, Δg⟩, the dual's linear part along Δ.
    linear: f64,
}

/// The sparse Hessian's entries on the GPU (bindings 4–6 of `hessian_apply`) and the count of
/// rows whose largest bin overflowed.
struct Pattern {
    /// The ELL columns (n·k), the CSC rows, then the CSC column starts (m + 1).
    indices: GpuVec<u32>,
    values: GpuVec<f32>,
    /// Where the column starts begin in `indices`.
    starts_at: usize,
    capped: usize,
    /// Entries kept in all.
    kept: usize,
    /// The ELL rows on the host (SSNS's predicted decrease).
    rows: Vec<u32>,
    row_values: Vec<f32>,
}

impl Pattern {
    /// ΔᵀH_SΔ for H_S = [[diag(P·1), P_S], [P_Sᵀ, diag(Pᵀ·1)]] (`sums` the marginals), in
    /// f64 on the host.
    fn quadratic_form(&self, sums: &[f32], delta: &[f64], n: usize) -> f64 {
        let diagonal: f64 = sums.iter().zip(delta).map(|(&s, d)| s as f64 * d * d).sum();
        let k = self.rows.len() / n.max(1);
        let mut cross = 0.0;
        for (e, (&j, &v)) in self.rows.iter().zip(&self.row_values).enumerate() {
            if let Some(dg) = delta.get(n + j as usize) {
                cross += v as f64 * delta[e / k] * dg;
            }
        }
        diagonal + 2.0 * cross
    }
}

/// Buffers every evaluation overwrites: the column sums' slices and the per-row costs (which
/// only the per-entry path's `row_sums` writes).
struct Scratch {
    slices: usize,
    partials: GpuVec<f32>,
    row_cost: GpuVec<f32>,
}

impl<'a> OtProblem<'a> {
    /// Solves with Sinkhorn-Newton-Sparse (blocking: the native wrapper of
    /// [`OtProblem::sns_async`]; CG and the line search read back).
    ///
    /// Stage 1 runs Sinkhorn ([`super::SinkhornSolver`]) until POT's check falls below
    /// `switch_error`, or for `sinkhorn_steps` iterations. Stage 2 repeats until ‖∇‖ < tol:
    /// select the largest entries of each row of P on the GPU (at most ⌈λ·m⌉, within e^-14
    /// of the row's largest; SSNS then drops those below 0.01·‖∇‖/m, so a row loses at most
    /// 0.01·‖∇‖ of its mass), bucket them by column on the host for the transposed product
    /// (O(nk)), add the exact diagonal blocks diag(P·1), diag(Pᵀ·1), and solve H·Δ = ∇ by
    /// Jacobi-preconditioned CG with the last g pinned (H is singular along (1, −1), which
    /// changes no P: fixing one coordinate, as Tang & Qiu do, leaves a definite system).
    ///
    /// [`NewtonStage::Safe`] (SSNS, regot's rules in f32): μ·‖∇‖ is added to H/reg's
    /// diagonal; one pass over the cost evaluates the dual's change
    /// α·(⟨a, Δf⟩ + ⟨b, Δg⟩) − reg·Σ P·(exp(α(Δfᵢ + Δgⱼ)/reg) − 1) at α = 1, 1/2, 1/4, 1/10
    /// (summing the changes of P, not P before and after, keeps it resolved in f32 near the
    /// solution); the first α that raises the dual, else the best, gives ρ = actual/predicted
    /// rise under the unshifted sparse model; the step is taken when ρ > 0, and μ grows ×4
    /// when ρ < 1/4 (or is NaN) and halves (not below 0.001) when ρ > 3/4. One readback per
    /// Newton step for the line search, besides the evaluation's and CG's.
    ///
    /// [`NewtonStage::Sparse`] (SNS): the fixed `shift`, and backtracking from step 1 by
    /// halves. A step is taken when it raises the dual objective ⟨a, f⟩ + ⟨b, g⟩ − reg·ΣP by
    /// Armijo's 1e-4 of the predicted rise, or, where f32 cannot resolve the objective's
    /// change (near the tolerance it is below the rounding of ΣP), when it lowers ‖∇‖.
    ///
    /// A run that spends `max_newton` returns unconverged (`converged` false, with the error
    /// reached); a Newton stage that cannot go on is an error (below).
    ///
    /// Errors: invalid settings ([`Error::InvalidParameter`]); a zero entry in a or b
    /// ([`Error::Mass`]); the sparse pattern past one storage binding ([`Error::TooLarge`]);
    /// [`Error::Breakdown`] with method `"sns"` and the (0-based) Newton step as its
    /// iteration when a Newton system cannot be solved: P has a row or column without mass in
    /// f32 at the current potentials, its marginals are not finite, or CG on the sparse
    /// Hessian meets a direction of zero or negative curvature (the sparsified Hessian is
    /// singular or indefinite in f32; SNS only: SSNS's shift keeps it definite), or when no
    /// step size makes progress along the Newton direction (SNS: its line search fails, as on
    /// an L1 ground cost at η = 1200 on a few hundred points; SSNS: μ passes 1e9 after steps
    /// rejected in a row). The message names the stage and the step, says
    /// which, and what to change (more `sinkhorn_steps`, a larger `reg`, a larger `density`,
    /// a larger `cg_maxiter`, a `shift`). Errors of the device pass through as they are.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sns(&self, config: &SnsConfig) -> Result<SnsSolution> {
        pollster::block_on(self.sns_async(config))
    }

    /// Async form of [`OtProblem::sns`], the one implementation: every readback (Sinkhorn's
    /// checks, each evaluation's marginals, the pattern, CG's flags and solution) is awaited.
    pub async fn sns_async(&self, config: &SnsConfig) -> Result<SnsSolution> {
        config.check()?;
        // A zero mass empties its row or column of P, and with it the Hessian's diagonal.
        for (name, w) in [("a", &self.a_host), ("b", &self.b_host)] {
            if let Some(i) = w.iter().position(|&v| v == 0.0) {
                return Err(Error::Mass {
                    message: format!(
                        "SNS needs every entry of `{name}` positive ({name}[{i}] = 0 makes its \
                         Newton system singular); Sinkhorn accepts zeros"
                    ),
                });
            }
        }
        let gpu = self.gpu();
        let (n, m) = (self.n, self.m);
        // ⌈λ·m⌉ with f32's rounding of λ taken off (2/n·n is not always 2 in f32).
        let k = match config.density {
            Some(d) => (d as f64 * m as f64 * (1.0 - 1e-6)).ceil() as usize,
            None => MAX_KEPT,
        }
        .clamp(1, MAX_KEPT.min(m));
        // The pattern's indices: n·k by row, as many by column, then the m + 1 column starts.
        check_binding(gpu, "density", 2 * n as u64 * k as u64 + m as u64 + 1)?;
        // Stage 1.
        let stage1 = SinkhornConfig {
            reg: config.reg,
            max_iter: config.sinkhorn_steps,
            tol: config.switch_error.map_or(config.tol, |e| {
                let b_norm = self.b_host.iter().map(|v| v * v).sum::<f64>().sqrt();
                ((e as f64 * b_norm) as f32).max(config.tol)
            }),
            check_every: 10,
        };
        let solver = SinkhornSolver::with_budget(self, &stage1, config.sinkhorn_steps)?;
        let (run, ..) = solver.run_async().await?;
        let (f, g) = solver.into_potentials();
        let mut z = Potentials { f, g };
        let mut trial = Potentials {
            f: GpuVec::zeros(gpu, n)?,
            g: GpuVec::zeros(gpu, m)?,
        };
        let slices = self.column_slices(1)?;
        let scratch = Scratch {
            slices,
            partials: GpuVec::zeros(gpu, slices * m)?,
            row_cost: GpuVec::zeros(gpu, n)?,
        };
        let mut current = self
            .evaluate(Recorder::new(gpu), &z, config.reg, k, &scratch)
            .await?;
        let mut solution = SnsSolution {
            f: GpuVec::zeros(gpu, 1)?,
            g: GpuVec::zeros(gpu, 1)?,
            reg: config.reg,
            cost: 0.0,
            sinkhorn_iterations: run.iterations,
            sinkhorn_errors: run.errors,
            newton_iterations: 0,
            cg_iterations: Vec::new(),
            step_sizes: Vec::new(),
            newton_errors: vec![current.error as f32],
            kept_per_row: k,
            kept_entries: Vec::new(),
            capped_rows: 0,
            converged: current.error < config.tol as f64,
            final_error: current.error as f32,
        };
        let direction = GpuVec::<f32>::zeros(gpu, n + m)?;
        if config.stage == NewtonStage::Safe {
            self.safe_newton(
                config,
                k,
                (&mut z, &mut trial),
                &mut current,
                &scratch,
                &direction,
                &mut solution,
            )
            .await?;
        }
        while config.stage == NewtonStage::Sparse
            && !solution.converged
            && solution.newton_iterations < config.max_newton
        {
            let failed = Failure::at(&solution, n, m, k);
            let shift = config.shift * current.error as f32;
            failed.check_system(&current, shift)?;
            let pattern = self.transposed(&current, 0.0).await?;
            solution.capped_rows += pattern.capped;
            let step = self
                .newton_direction(config, &current, &pattern, (k, shift), &failed, &direction)
                .await?;
            let (cg, predicted, linear) = (step.cg, step.slope, step.linear);
            solution.cg_iterations.push(cg.iterations);
            let mut alpha = 1.0f64;
            let mut accepted = None;
            for _ in 0..=config.max_halvings {
                let mut rec = Recorder::new(gpu);
                self.record_step(&mut rec, &z, &direction, alpha as f32, &trial)?;
                let next = self.evaluate(rec, &trial, config.reg, k, &scratch).await?;
                let rise = alpha * linear - config.reg as f64 * (next.mass - current.mass);
                if rise >= 1e-4 * alpha * predicted || next.error < current.error {
                    accepted = Some(next);
                    break;
                }
                alpha *= 0.5;
            }
            solution.newton_iterations += 1;
            let Some(next) = accepted else {
                return Err(failed.line_search(config, current.error, &cg));
            };
            std::mem::swap(&mut z, &mut trial);
            current = next;
            solution.step_sizes.push(alpha as f32);
            solution.newton_errors.push(current.error as f32);
            solution.final_error = current.error as f32;
            solution.converged = current.error < config.tol as f64;
        }
        solution.cost = self.transport_cost_async(&z.f, &z.g, config.reg).await?;
        (solution.f, solution.g) = (z.f, z.g);
        Ok(solution)
    }

    /// Δ = reg·H⁻¹∇ for the sparse Hessian of `pattern` (k a row, + `shift` on its diagonal)
    /// by Jacobi-preconditioned CG, with the last g pinned (its step 0: the null direction
    /// (1, −1) is gone), written to `direction` as f32; CG's failures in SNS's terms.
    async fn newton_direction(
        &self,
        config: &SnsConfig,
        current: &Evaluation,
        pattern: &Pattern,
        (k, shift): (usize, f32),
        failed: &Failure,
        direction: &GpuVec<f32>,
    ) -> Result<NewtonDirection> {
        let (n, m) = (self.n, self.m);
        let gpu = self.gpu();
        let hessian = SparseHessian {
            n,
            m,
            k,
            shift,
            diag: current.diag.view(),
            indices: &pattern.indices,
            values: &pattern.values,
            starts_at: pattern.starts_at,
            fuse_direction: gpu.tuning().simd_lanes.is_none() || pattern.kept <= FUSE_ENTRIES,
        };
        let mut rhs: Vec<f32> = current.grad.iter().map(|&v| v as f32).collect();
        rhs[n + m - 1] = 0.0;
        let rhs = GpuVec::upload(gpu, &rhs)?;
        let cg = crate::krylov::cg_async(
            gpu,
            &hessian,
            &rhs,
            None,
            &CgOptions {
                rtol: config.cg_rtol,
                maxiter: Some(config.cg_maxiter),
                preconditioner: Preconditioner::Jacobi,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed.cg(e))?;
        let delta: Vec<f64> =
            cg.x.read_async()
                .await?
                .iter()
                .map(|&v| v as f64 * config.reg as f64)
                .collect();
        let slope = delta.iter().zip(&current.grad).map(|(d, g)| d * g).sum();
        let weights = self.a_host.iter().chain(&self.b_host);
        let linear = weights.zip(&delta).map(|(w, d)| w * d).sum();
        let as_f32: Vec<f32> = delta.iter().map(|&v| v as f32).collect();
        direction.write(&as_f32)?;
        Ok(NewtonDirection {
            cg,
            delta,
            slope,
            linear,
        })
    }

    /// SSNS's Newton stage ([`NewtonStage::Safe`]) from `current` at `z`, filling `solution`.
    #[allow(clippy::too_many_arguments)]
    async fn safe_newton(
        &self,
        config: &SnsConfig,
        k: usize,
        (z, trial): (&mut Potentials, &mut Potentials),
        current: &mut Evaluation,
        scratch: &Scratch,
        direction: &GpuVec<f32>,
        solution: &mut SnsSolution,
    ) -> Result<()> {
        let gpu = self.gpu();
        let (n, m) = (self.n, self.m);
        let reg = config.reg as f64;
        let gains = GpuVec::<f32>::zeros(gpu, 4 * n)?;
        let mut mu = config.mu0 as f64;
        // Kept while steps are rejected: the point, and so the Hessian, is the same.
        let mut held: Option<Pattern> = None;
        while !solution.converged && solution.newton_iterations < config.max_newton {
            let failed = Failure::at(solution, n, m, k);
            let gnorm = current.error;
            // μ·‖∇‖ on H/reg is reg·μ·‖∇‖ on the kernel's H (P's units).
            let shift = (reg * mu * gnorm) as f32;
            // An empty row or column is refused, shift or not: its step would be a/shift.
            failed.check_system(current, 0.0)?;
            let pattern = match held.take() {
                Some(p) => p,
                None => {
                    // Entries below 0.01·‖∇‖/m: a row drops at most 0.01·‖∇‖ of its mass.
                    let cut = (SAFE_DROP * gnorm / m as f64) as f32;
                    let p = self.transposed(current, cut).await?;
                    solution.capped_rows += p.capped;
                    solution.kept_entries.push(p.kept);
                    p
                }
            };
            let step = self
                .newton_direction(config, current, &pattern, (k, shift), &failed, direction)
                .await?;
            solution.cg_iterations.push(step.cg.iterations);
            // The quadratic model's rise at α·Δ: α·∇ᵀΔ − α²/(2·reg)·ΔᵀH_SΔ (H_S unshifted).
            let (slope, linear) = (step.slope, step.linear);
            let curvature = pattern.quadratic_form(&current.sums, &step.delta, n);
            let mut rec = Recorder::new(gpu);
            self.record_step_gains(
                &mut rec,
                (z.f.view(), z.g.view()),
                config.reg,
                direction.view(),
                gains.view(),
            )?;
            rec.submit()?;
            let changes = gains.read_async().await?;
            // The dual's actual rise at each α: α·(⟨a, Δf⟩ + ⟨b, Δg⟩) − reg·Σ ΔP.
            let rise = |t: usize| {
                let mass: f64 = changes.iter().skip(t).step_by(4).map(|&v| v as f64).sum();
                STEP_SIZES[t] * linear - reg * mass
            };
            let rises: Vec<f64> = (0..4).map(rise).collect();
            // regot's selection: the first α that raises the objective, else the best.
            let t = (0..4).find(|&t| rises[t] > 0.0).unwrap_or_else(|| {
                (0..4)
                    .max_by(|&x, &y| rises[x].total_cmp(&rises[y]))
                    .unwrap_or(0)
            });
            let alpha = STEP_SIZES[t];
            let predicted = alpha * slope - alpha * alpha / (2.0 * reg) * curvature;
            let rho = rises[t] / predicted;
            solution.newton_iterations += 1;
            if rho > 0.0 {
                let mut rec = Recorder::new(gpu);
                self.record_step(&mut rec, z, direction, alpha as f32, trial)?;
                let next = self.evaluate(rec, trial, config.reg, k, scratch).await?;
                std::mem::swap(z, trial);
                *current = next;
                solution.step_sizes.push(alpha as f32);
            } else {
                held = Some(pattern);
                solution.step_sizes.push(0.0);
            }
            // NaN (nothing changed at all) counts as a rejection.
            if rho.is_nan() || rho < 0.25 {
                mu *= 4.0;
            } else if rho > 0.75 {
                mu = (mu * 0.5).max(SAFE_MU_MIN);
            }
            solution.newton_errors.push(current.error as f32);
            solution.final_error = current.error as f32;
            solution.converged = current.error < config.tol as f64;
            if !solution.converged && mu > SAFE_MU_MAX {
                return Err(failed.safe_stall(mu, current.error));
            }
        }
        Ok(())
    }

    /// Records trial = z + α·d (d already holds reg·Δ).
    fn record_step(
        &self,
        rec: &mut Recorder,
        z: &Potentials,
        d: &GpuVec<f32>,
        alpha: f32,
        trial: &Potentials,
    ) -> Result<()> {
        let u = SnsUniform {
            n: self.n as u32,
            m: self.m as u32,
            shift: alpha,
            ..Default::default()
        };
        let grid = rec.elementwise_grid((self.n + self.m) as u64)?;
        rec.dispatch(
            &STEP,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::storage(z.f.view()),
                Binding::storage(z.g.view()),
                Binding::storage(d.view()),
                Binding::storage(trial.f.view()),
                Binding::storage(trial.g.view()),
            ],
            grid,
        )
    }

    /// P's marginals and sparsity pattern at z, recorded after what `rec` holds and submitted
    /// with it, with the gradient on the host (one readback).
    async fn evaluate(
        &self,
        mut rec: Recorder<'_>,
        z: &Potentials,
        reg: f32,
        k: usize,
        scratch: &Scratch,
    ) -> Result<Evaluation> {
        let gpu = self.gpu();
        let (n, m) = (self.n, self.m);
        let (f, g) = (z.f.view(), z.g.view());
        let diag = GpuVec::<f32>::zeros(gpu, n + m)?;
        let top = TopK {
            k,
            columns: GpuVec::zeros(gpu, n * k)?,
            values: GpuVec::zeros(gpu, n * k)?,
        };
        let partials = scratch.partials.view();
        self.record_col_sums(&mut rec, f, g, reg, scratch.slices, partials)?;
        let u = SnsUniform {
            n: n as u32,
            m: m as u32,
            k: scratch.slices as u32,
            ..Default::default()
        };
        let grid = rec.elementwise_grid(m as u64)?;
        rec.dispatch(
            &COL_TOTAL,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::storage(partials),
                Binding::storage(diag.view()),
            ],
            grid,
        )?;
        let capped = GpuVec::upload(gpu, &[0u32])?;
        self.record_row_mass_and_pattern(
            &mut rec,
            (f, g),
            reg,
            &top,
            capped.view(),
            (diag.view().sub(0, n), scratch.row_cost.view()),
        )?;
        rec.submit()?;
        let sums = diag.read_async().await?;
        let grad: Vec<f64> = self
            .a_host
            .iter()
            .chain(&self.b_host)
            .zip(&sums)
            .map(|(w, &s)| w - s as f64)
            .collect();
        let error = grad.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mass = sums[..n].iter().map(|&v| v as f64).sum();
        Ok(Evaluation {
            diag,
            sums,
            top,
            grad,
            error,
            mass,
            capped,
        })
    }

    /// The kept entries as the Hessian kernel reads them: the ELL rows as selected (those
    /// below `min_value` dropped, the rest moved to the front of their row), then the same
    /// entries bucketed by column (rows ascending).
    async fn transposed(&self, e: &Evaluation, min_value: f32) -> Result<Pattern> {
        let gpu = self.gpu();
        let (n, m, k) = (self.n, self.m, e.top.k);
        let ell = n * k;
        let mut indices = e.top.columns.read_async().await?;
        let mut values = e.top.values.read_async().await?;
        let capped = e.capped.read_async().await?[0] as usize;
        for r in 0..n {
            let row = r * k..(r + 1) * k;
            let mut kept = row.start;
            for t in row.clone() {
                if (indices[t] as usize) < m && values[t] >= min_value {
                    (indices[kept], values[kept]) = (indices[t], values[t]);
                    kept += 1;
                }
            }
            for t in kept..row.end {
                (indices[t], values[t]) = (m as u32, 0.0);
            }
        }
        let mut starts = crate::host::filled("b", m + 1, 0u32)?;
        for &j in &indices {
            if (j as usize) < m {
                starts[j as usize + 1] += 1;
            }
        }
        for j in 0..m {
            starts[j + 1] += starts[j];
        }
        indices.resize(ell + starts[m] as usize, 0);
        values.resize(ell + starts[m] as usize, 0.0);
        let (rows, by_column) = indices.split_at_mut(ell);
        let (row_values, column_values) = values.split_at_mut(ell);
        let mut fill = starts.clone();
        for (e, (&j, &v)) in rows.iter().zip(row_values.iter()).enumerate() {
            if (j as usize) < m {
                let at = fill[j as usize] as usize;
                by_column[at] = (e / k) as u32;
                column_values[at] = v;
                fill[j as usize] += 1;
            }
        }
        let kept = starts[m] as usize;
        let rows_host = indices[..ell].to_vec();
        let starts_at = indices.len();
        indices.extend_from_slice(&starts);
        Ok(Pattern {
            indices: GpuVec::upload(gpu, &indices)?,
            values: GpuVec::upload(gpu, &values)?,
            starts_at,
            capped,
            kept,
            rows: rows_host,
            row_values: values[..ell].to_vec(),
        })
    }
}

/// What SNS's Newton stage reports when one of its systems cannot be solved: in the caller's
/// terms (the stage, the Newton step, what to change), never CG's words about an operator the
/// caller never passed.
struct Failure {
    /// The Newton step, 0-based.
    step: usize,
    /// Sinkhorn iterations before the Newton stage.
    sinkhorn: usize,
    n: usize,
    /// Entries kept per row.
    k: usize,
    /// Whether a larger `density` would keep more (k < min(m, MAX_KEPT)).
    can_keep_more: bool,
}

impl Failure {
    /// The failure context of the Newton step `solution` is at.
    fn at(solution: &SnsSolution, n: usize, m: usize, k: usize) -> Self {
        Failure {
            step: solution.newton_iterations,
            sinkhorn: solution.sinkhorn_iterations,
            n,
            k,
            can_keep_more: k < MAX_KEPT.min(m),
        }
    }

    fn error(&self, what: String, remedy: &str) -> Error {
        Error::Breakdown {
            method: "sns",
            iteration: self.step,
            message: format!(
                "Newton step {} (0-based, after {} Sinkhorn iterations): {what}; {remedy}",
                self.step, self.sinkhorn
            ),
        }
    }

    /// Refuses a Newton system CG cannot take: non-finite marginals (so a non-finite
    /// gradient), or an empty row or column of P (a zero on the Hessian's diagonal, which
    /// Jacobi preconditioning divides by).
    fn check_system(&self, current: &Evaluation, shift: f32) -> Result<()> {
        let marginal = |t: usize| match t < self.n {
            true => format!("row {t} of P (P·1 = {})", current.sums[t]),
            false => format!("column {} of P (Pᵀ·1 = {})", t - self.n, current.sums[t]),
        };
        if let Some(t) = current.sums.iter().position(|s| !s.is_finite()) {
            return Err(self.error(
                format!(
                    "{} is not finite at the current potentials, so neither is the gradient",
                    marginal(t)
                ),
                "run more `sinkhorn_steps` before the Newton stage or use a larger `reg`",
            ));
        }
        // The sums are finite here (and the shift finite and ≥ 0).
        if let Some(t) = current.sums.iter().position(|&s| s + shift <= 0.0) {
            return Err(self.error(
                format!(
                    "{} holds no mass in f32 at the current potentials, so the Newton system \
                     has a zero on its diagonal: the potentials are too far from the solution \
                     for a Newton step",
                    marginal(t)
                ),
                "run more `sinkhorn_steps` before the Newton stage, use a larger `reg`, or add \
                 a positive `shift`",
            ));
        }
        Ok(())
    }

    /// What to change when a Newton direction is unusable: the settings that make the sparse
    /// system closer to the true Hessian or better posed (`cg_maxiter` when CG stopped there).
    fn remedies(&self, raise_cg_maxiter: bool) -> String {
        let mut r =
            String::from("run more `sinkhorn_steps` before the Newton stage, use a larger `reg`, ");
        if self.can_keep_more {
            r.push_str("keep more entries per row (a larger `density`), ");
        }
        if raise_cg_maxiter {
            r.push_str("raise `cg_maxiter`, ");
        }
        r.push_str("or add a positive `shift`");
        r
    }

    /// A line search that no step size passed: the Newton direction from the sparse Hessian
    /// (solved by `cg`) neither raised the dual objective nor lowered the marginal error.
    fn line_search(&self, config: &SnsConfig, error: f64, cg: &crate::krylov::CgResult) -> Error {
        let solve = match cg.converged {
            true => format!("CG solved it to `cg_rtol` in {} iterations", cg.iterations),
            false => format!(
                "CG stopped unconverged at `cg_maxiter` = {}, residual {:e}",
                config.cg_maxiter, cg.residual
            ),
        };
        self.error(
            format!(
                "the line search tried step sizes 1 down to 2^-{} along the Newton direction \
                 of the sparse Hessian (P kept to {} entries a row; {solve}) and none raised \
                 the dual objective or lowered the marginal error {error:e}: the sparsified \
                 Newton direction is no ascent direction in f32 at these potentials",
                config.max_halvings, self.k
            ),
            &format!("{}; or solve with Sinkhorn", self.remedies(!cg.converged)),
        )
    }

    /// SSNS rejected step after step (ρ ≤ 0) until μ passed [`SAFE_MU_MAX`].
    fn safe_stall(&self, mu: f64, error: f64) -> Error {
        self.error(
            format!(
                "SSNS rejected its steps until the shift's μ reached {mu:e}: no step along the \
                 shifted sparse Newton direction raised the dual objective in f32 at the \
                 marginal error {error:e}"
            ),
            &format!("{}; or solve with Sinkhorn", self.remedies(true)),
        )
    }

    /// CG's failure on the sparse Hessian, in SNS's terms; errors of the device itself pass
    /// through as they are.
    fn cg(&self, e: Error) -> Error {
        match e {
            Error::Breakdown { iteration, .. } => self.error(
                format!(
                    "CG on the sparse Hessian (P kept to {} entries a row, plus the exact \
                     marginals on the diagonal) broke down at its iteration {iteration}: a \
                     direction of zero, negative or non-finite curvature, so the sparsified \
                     Hessian is singular or indefinite in f32 at these potentials (the kept \
                     entries can leave groups of rows and columns unlinked)",
                    self.k
                ),
                &self.remedies(false),
            ),
            Error::NonFinite { index, .. } => self.error(
                format!("the Newton system's right-hand side is not finite at entry {index}"),
                "run more `sinkhorn_steps` before the Newton stage or use a larger `reg`",
            ),
            other => other,
        }
    }
}
