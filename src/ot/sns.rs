//! Sinkhorn-Newton-Sparse (Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao and
//! Ying, ICLR 2024): a few Sinkhorn steps, then Newton steps on the dual with the Hessian
//! sparsified to the largest entries of each row of P plus its exact diagonal blocks, solved
//! by the crate's CG, with a backtracking line search.

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::kernel;
use crate::krylov::{CgOptions, LinearOperator, Preconditioner};
use crate::record::{Binding, Recorder};

use super::plan::TopK;

/// Entries of P kept per row at most (`SnsConfig::density`'s default).
pub const MAX_KEPT: usize = 512;
use super::sinkhorn::SinkhornConfig;
use super::{check_reg, OtProblem};

/// Settings of [`OtProblem::sns`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnsConfig {
    /// Entropic regularisation reg = 1/η (> 0).
    pub reg: f32,
    /// Stop when ‖(a − P·1, b − Pᵀ·1)‖₂ < tol (default 1e-5, what f32 holds at η = 1200).
    pub tol: f32,
    /// Stage 1: Sinkhorn iterations before the first Newton step (N₁, default 20).
    pub sinkhorn_steps: usize,
    /// Newton-step budget (default 100).
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
    /// μ ≥ 0: μ·‖∇‖ added to the sparse Hessian's diagonal (0, plain SNS; Tang & Qiu's safe
    /// variant uses such a shift to keep the sparsified system well posed).
    pub shift: f32,
    /// CG's relative tolerance on each Newton system (default 1e-3: an inexact Newton step;
    /// 1e-6 took the same Newton steps and 20–50% longer at n = 500 and 2000).
    pub cg_rtol: f32,
    /// CG's iteration limit per Newton step (default 1000).
    pub cg_maxiter: usize,
    /// Step halvings tried before a Newton step is given up as stalled (default 12).
    pub max_halvings: usize,
}

impl SnsConfig {
    /// The defaults above at regularisation `reg`.
    pub fn new(reg: f32) -> Self {
        SnsConfig {
            reg,
            tol: 1e-5,
            sinkhorn_steps: 20,
            max_newton: 100,
            density: None,
            shift: 0.0,
            cg_rtol: 1e-3,
            cg_maxiter: 1000,
            max_halvings: 12,
        }
    }

    fn check(&self) -> Result<()> {
        check_reg(self.reg)?;
        crate::check::positive("tol", self.tol)?;
        crate::check::non_negative("shift", self.shift)?;
        crate::check::positive("cg_rtol", self.cg_rtol)?;
        if let Some(d) = self.density {
            if !(d.is_finite() && d > 0.0 && d <= 1.0) {
                return Err(Error::param("density", d as f64, "in (0, 1]"));
            }
        }
        if self.cg_maxiter == 0 {
            return Err(Error::param("cg_maxiter", 0.0, "at least 1"));
        }
        Ok(())
    }
}

/// What [`OtProblem::sns`] returns. A run that did not converge (budget spent, or a Newton
/// step that no step size could make progress with) says so, with the error it reached.
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
    /// Step size accepted at each Newton step.
    pub step_sizes: Vec<f32>,
    /// ‖(a − P·1, b − Pᵀ·1)‖₂ before each Newton step and after the last.
    pub newton_errors: Vec<f32>,
    /// Entries of P the sparse Hessian could keep per row.
    pub kept_per_row: usize,
    /// Rows, summed over the Hessians built, whose largest bin of entries alone overflowed
    /// `kept_per_row` (then an arbitrary part of it was kept): a sign to raise `density`.
    pub capped_rows: usize,
    /// Whether the tolerance was met.
    pub converged: bool,
    /// ‖(a − P·1, b − Pᵀ·1)‖₂ at the returned potentials.
    pub final_error: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SnsUniform {
    n: u32,
    m: u32,
    k: u32,
    pinned: u32,
    shift: f32,
    _pad: [f32; 3],
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
    starts: &'h GpuVec<u32>,
}

impl SparseHessian<'_> {
    fn uniform(&self) -> SnsUniform {
        SnsUniform {
            n: self.n as u32,
            m: self.m as u32,
            k: self.k as u32,
            pinned: self.m as u32 - 1,
            shift: self.shift,
            _pad: [0.0; 3],
        }
    }
}

impl LinearOperator for SparseHessian<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.n + self.m, self.n + self.m)
    }

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let gpu = rec.gpu();
        rec.dispatch(
            kernel!("ot/sns.wgsl", "hessian_apply"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&self.uniform())),
                Binding::Storage(x, None),
                Binding::Storage(y, None),
                Binding::Storage(self.diag, None),
                Binding::Storage(self.indices.view(), None),
                Binding::Storage(self.values.view(), None),
                Binding::Storage(self.starts.view(), None),
            ],
            gpu.elementwise_grid((self.n + self.m) as u64)?,
        )
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        let gpu = rec.gpu();
        rec.dispatch(
            kernel!("ot/sns.wgsl", "hessian_diagonal"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&self.uniform())),
                Binding::Skip,
                Binding::Storage(d, None),
                Binding::Storage(self.diag, None),
            ],
            gpu.elementwise_grid((self.n + self.m) as u64)?,
        )?;
        Ok(true)
    }
}

/// P's marginals and largest entries at one point z = (f, g).
struct Evaluation {
    /// (P·1, Pᵀ·1).
    diag: GpuVec<f32>,
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

/// The sparse Hessian's entries on the GPU (bindings 4–6 of `hessian_apply`) and the count of
/// rows whose largest bin overflowed.
struct Pattern {
    indices: GpuVec<u32>,
    values: GpuVec<f32>,
    starts: GpuVec<u32>,
    capped: usize,
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
    /// Stage 1 runs `sinkhorn_steps` Sinkhorn iterations. Stage 2 repeats until ‖∇‖ < tol:
    /// keep the ⌈λ·m⌉ largest entries of each row of P (selected on the GPU; the n·k kept
    /// entries are then bucketed by column on the host for the transposed product, O(nk)) plus
    /// the exact diagonal blocks diag(P·1), diag(Pᵀ·1); solve H·Δ = ∇ by Jacobi-preconditioned
    /// CG with the last g pinned (H is singular along (1, −1), which changes no P: fixing one
    /// coordinate, as Tang & Qiu do, leaves a definite system); and backtrack from step 1 by
    /// halves. A step is taken when it raises the dual objective
    /// ⟨a, f⟩ + ⟨b, g⟩ − reg·ΣP by Armijo's 1e-4 of the predicted rise, or, where f32 cannot
    /// resolve the objective's change (near the tolerance it is below the rounding of ΣP),
    /// when it lowers ‖∇‖.
    ///
    /// Errors: invalid settings ([`Error::InvalidParameter`]); a zero entry in a or b
    /// ([`Error::Mass`]); [`Error::Breakdown`] from CG if the sparse Hessian is not positive
    /// definite.
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
        // Stage 1.
        let mut state = self.sinkhorn_state()?;
        let stage1 = SinkhornConfig {
            reg: config.reg,
            max_iter: config.sinkhorn_steps,
            tol: config.tol,
            check_every: 10,
        };
        let run = self
            .run_sinkhorn(&mut state, &stage1, config.sinkhorn_steps)
            .await?;
        let mut z = Potentials {
            f: state.f,
            g: state.g,
        };
        let mut trial = Potentials {
            f: gpu.zeros(n)?,
            g: gpu.zeros(m)?,
        };
        let slices = n.div_ceil(64).clamp(1, 1024);
        let scratch = Scratch {
            slices,
            partials: gpu.zeros(slices * m)?,
            row_cost: gpu.zeros(n)?,
        };
        let mut current = self
            .evaluate(Recorder::new(gpu), &z, config.reg, k, &scratch)
            .await?;
        let mut solution = SnsSolution {
            f: gpu.zeros(1)?,
            g: gpu.zeros(1)?,
            reg: config.reg,
            cost: 0.0,
            sinkhorn_iterations: run.iterations,
            sinkhorn_errors: run.errors,
            newton_iterations: 0,
            cg_iterations: Vec::new(),
            step_sizes: Vec::new(),
            newton_errors: vec![current.error as f32],
            kept_per_row: k,
            capped_rows: 0,
            converged: current.error < config.tol as f64,
            final_error: current.error as f32,
        };
        let direction = gpu.zeros::<f32>(n + m)?;
        while !solution.converged && solution.newton_iterations < config.max_newton {
            let pattern = self.transposed(&current).await?;
            solution.capped_rows += pattern.capped;
            let hessian = SparseHessian {
                n,
                m,
                k,
                shift: config.shift * current.error as f32,
                diag: current.diag.view(),
                indices: &pattern.indices,
                values: &pattern.values,
                starts: &pattern.starts,
            };
            // The last g is pinned (its step 0): the null direction (1, −1) is gone.
            let mut rhs: Vec<f32> = current.grad.iter().map(|&v| v as f32).collect();
            rhs[n + m - 1] = 0.0;
            let rhs = gpu.upload(&rhs)?;
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
            .await?;
            solution.cg_iterations.push(cg.iterations);
            // Δ = reg·H⁻¹∇.
            let delta: Vec<f64> = gpu
                .read_async(&cg.x)
                .await?
                .iter()
                .map(|&v| v as f64 * config.reg as f64)
                .collect();
            let predicted: f64 = delta.iter().zip(&current.grad).map(|(d, g)| d * g).sum();
            let linear: f64 = self
                .a_host
                .iter()
                .chain(&self.b_host)
                .zip(&delta)
                .map(|(w, d)| w * d)
                .sum();
            let as_f32: Vec<f32> = delta.iter().map(|&v| v as f32).collect();
            gpu.write(&direction, &as_f32)?;
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
                break;
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

    /// Records trial = z + α·d (d already holds reg·Δ).
    fn record_step(
        &self,
        rec: &mut Recorder,
        z: &Potentials,
        d: &GpuVec<f32>,
        alpha: f32,
        trial: &Potentials,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let u = SnsUniform {
            n: self.n as u32,
            m: self.m as u32,
            k: 0,
            pinned: 0,
            shift: alpha,
            _pad: [0.0; 3],
        };
        rec.dispatch(
            kernel!("ot/sns.wgsl", "step"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(z.f.view(), None),
                Binding::Storage(z.g.view(), None),
                Binding::Storage(d.view(), None),
                Binding::Storage(trial.f.view(), None),
                Binding::Storage(trial.g.view(), None),
            ],
            gpu.elementwise_grid((self.n + self.m) as u64)?,
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
        let diag = gpu.zeros::<f32>(n + m)?;
        let top = TopK {
            k,
            columns: gpu.zeros(n * k)?,
            values: gpu.zeros(n * k)?,
        };
        let partials = scratch.partials.view();
        self.record_col_sums(&mut rec, f, g, reg, scratch.slices, partials)?;
        let u = SnsUniform {
            n: n as u32,
            m: m as u32,
            k: scratch.slices as u32,
            pinned: 0,
            shift: 0.0,
            _pad: [0.0; 3],
        };
        rec.dispatch(
            kernel!("ot/sns.wgsl", "col_total"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(partials, None),
                Binding::Storage(diag.view(), None),
            ],
            gpu.elementwise_grid(m as u64)?,
        )?;
        let capped = gpu.upload(&[0u32])?;
        self.record_row_mass_and_pattern(
            &mut rec,
            (f, g),
            reg,
            &top,
            capped.view(),
            (diag.view().sub(0, n), scratch.row_cost.view()),
        )?;
        rec.submit()?;
        let sums = gpu.read_async(&diag).await?;
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
            top,
            grad,
            error,
            mass,
            capped,
        })
    }

    /// The kept entries as the Hessian kernel reads them: the ELL rows as selected, then the
    /// same entries bucketed by column (rows ascending).
    async fn transposed(&self, e: &Evaluation) -> Result<Pattern> {
        let gpu = self.gpu();
        let (n, m, k) = (self.n, self.m, e.top.k);
        let ell = n * k;
        let mut indices = gpu.read_async(&e.top.columns).await?;
        let mut values = gpu.read_async(&e.top.values).await?;
        let capped = gpu.read_async(&e.capped).await?[0] as usize;
        let mut starts = vec![0u32; m + 1];
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
        Ok(Pattern {
            indices: gpu.upload(&indices)?,
            values: gpu.upload(&values)?,
            starts: gpu.upload(&starts)?,
            capped,
        })
    }
}
