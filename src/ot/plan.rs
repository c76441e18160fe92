//! The plan from the potentials, never stored unless asked: ⟨C, P⟩ and the marginals, the
//! dense plan, or the k largest entries of each row.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

use super::{check_binding, check_dense_fits, check_reg, cost_pass_bindings, OtProblem, OtUniform};

/// The dense plan, one invocation per entry.
pub(crate) static PLAN_DENSE: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "plan_dense",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("plan"),
    ],
);
/// P·1 and Σⱼ C·P per row, one workgroup per row.
pub(crate) static ROW_SUMS: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "row_sums",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("row_mass"),
        Slot::Write("row_cost"),
    ],
);
/// Pᵀ·1 as per-slice partial sums, C per entry.
pub(crate) static COL_SUMS: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "col_sums",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("partials"),
    ],
);
/// [`COL_SUMS`] for a dense C whose rows are whole vec4s.
pub(crate) static COL_SUMS4: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "col_sums4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Gap,
        Slot::Gap,
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("partials"),
    ],
);
/// Each row's k largest entries, sorted.
pub(crate) static TOP_K: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "top_k",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("columns"),
        Slot::Write("values"),
    ],
);
/// SNS's sparsity pattern, C per entry.
pub(crate) static SELECT_ROWS: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "select_rows",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("columns"),
        Slot::Write("values"),
        Slot::Write("capped"),
    ],
);
/// [`SELECT_ROWS`] for a dense C whose rows are whole vec4s, writing P·1 at binding 2 too.
pub(crate) static SELECT_ROWS4: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "select_rows4",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Write("row_mass"),
        Slot::Gap,
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Write("columns"),
        Slot::Write("values"),
        Slot::Write("capped"),
    ],
);

/// SSNS's line search: each row's change of mass at the step sizes [`STEP_SIZES`].
pub(crate) static STEP_GAINS: Kernel = Kernel::new(
    &shader::OT_PLAN,
    "step_gains",
    &[
        uniform::<OtUniform>(),
        Slot::Read("cost"),
        Slot::Read("x"),
        Slot::Read("y"),
        Slot::Read("f"),
        Slot::Read("g"),
        Slot::Read("direction"),
        Slot::Write("gains"),
    ],
);

/// The step sizes [`STEP_GAINS`] evaluates together (`STEPS` in `shaders/ot/plan.wgsl`):
/// regot's SSNS candidates, tried in this order.
pub(crate) const STEP_SIZES: [f64; 4] = [1.0, 0.5, 0.25, 0.1];

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &STEP_GAINS,
    &PLAN_DENSE,
    &ROW_SUMS,
    &COL_SUMS,
    &COL_SUMS4,
    &TOP_K,
    &SELECT_ROWS,
    &SELECT_ROWS4,
];

/// Largest k of [`OtProblem::top_k`] (`MAX_K` in `shaders/ot/plan.wgsl`).
pub const MAX_TOP_K: usize = 128;

/// The k largest entries of each row of P: row i's are at i·k .. (i + 1)·k, largest first;
/// a row with fewer than k columns pads with column index m and value 0.
#[derive(Debug)]
pub struct TopK {
    /// Entries kept per row.
    pub k: usize,
    /// Column indices (n·k).
    pub columns: GpuVec<u32>,
    /// P at those entries (n·k).
    pub values: GpuVec<f32>,
}

impl<'a> OtProblem<'a> {
    /// f and g checked and named, for the functions that take a solution's potentials.
    fn check_potentials<'v>(
        &self,
        f: &'v GpuVec<f32>,
        g: &'v GpuVec<f32>,
        reg: f32,
    ) -> Result<(BufView<'v>, BufView<'v>)> {
        check_reg(reg)?;
        Ok((
            f.view().check(self.gpu(), "f", self.n)?,
            g.view().check(self.gpu(), "g", self.m)?,
        ))
    }

    /// ⟨C, P⟩ for the potentials f, g at `reg`: f32 sums per row, added in f64. Blocking.
    /// f and g are only read (they may share a buffer with each other and the cost).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn transport_cost(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32) -> Result<f64> {
        pollster::block_on(self.transport_cost_async(f, g, reg))
    }

    /// Async form of [`OtProblem::transport_cost`].
    pub async fn transport_cost_async(
        &self,
        f: &GpuVec<f32>,
        g: &GpuVec<f32>,
        reg: f32,
    ) -> Result<f64> {
        let (f, g) = self.check_potentials(f, g, reg)?;
        let gpu = self.gpu();
        let (mass, cost) = (
            GpuVec::<f32>::zeros(gpu, self.n)?,
            GpuVec::<f32>::zeros(gpu, self.n)?,
        );
        let mut rec = Recorder::new(gpu);
        self.record_row_sums(&mut rec, f, g, reg, mass.view(), cost.view())?;
        rec.submit()?;
        let per_row = cost.read_async().await?;
        Ok(per_row.iter().map(|&c| c as f64).sum())
    }

    /// Records P·1 into `mass` and Σⱼ C·P per row into `cost` (distinct buffers).
    pub(crate) fn record_row_sums(
        &self,
        rec: &mut Recorder,
        f: BufView<'_>,
        g: BufView<'_>,
        reg: f32,
        mass: BufView<'_>,
        cost: BufView<'_>,
    ) -> Result<()> {
        let grid = rec.grid_for_groups(self.n as u64)?;
        self.record_over_cost(
            rec,
            &ROW_SUMS,
            true,
            &self.uniform(reg),
            (f, Some(g)),
            &[Binding::storage(mass), Binding::storage(cost)],
            grid,
        )
    }

    /// Records, for each step size α of [`STEP_SIZES`], each row's change of mass
    /// Σⱼ P[i][j]·(exp(α·(Δf[i] + Δg[j])/reg) − 1) into `gains` (4n: row i's four at 4i).
    pub(crate) fn record_step_gains(
        &self,
        rec: &mut Recorder,
        (f, g): (BufView<'_>, BufView<'_>),
        reg: f32,
        direction: BufView<'_>,
        gains: BufView<'_>,
    ) -> Result<()> {
        let grid = rec.grid_for_groups(self.n as u64)?;
        self.record_over_cost(
            rec,
            &STEP_GAINS,
            true,
            &self.uniform(reg),
            (f, Some(g)),
            &[Binding::storage(direction), Binding::storage(gains)],
            grid,
        )
    }

    /// Records Pᵀ·1 as `slices` partial sums per column into `partials` (slices·m).
    pub(crate) fn record_col_sums(
        &self,
        rec: &mut Recorder,
        f: BufView<'_>,
        g: BufView<'_>,
        reg: f32,
        slices: usize,
        partials: BufView<'_>,
    ) -> Result<()> {
        let u = OtUniform {
            slices: slices as u32,
            ..self.uniform(reg)
        };
        let wg = rec.gpu().tuning().workgroup_size as usize;
        if let Some(dense) = self.dense_vec4() {
            let blocks = (self.m / 4).div_ceil(wg);
            return rec.dispatch(
                &COL_SUMS4,
                &[("WG", wg as f64)],
                &dense.bindings(&u, (f, Some(g)), &[Binding::storage(partials)]),
                [blocks as u32, slices as u32, 1],
            );
        }
        let blocks = self.m.div_ceil(wg);
        self.record_over_cost(
            rec,
            &COL_SUMS,
            false,
            &u,
            (f, Some(g)),
            &[Binding::storage(partials)],
            [blocks as u32, slices as u32, 1],
        )
    }

    /// The dense plan P (n×m, row-major) for the potentials f, g at `reg`, in a new buffer
    /// (f and g are only read). Blocking only in that it submits.
    ///
    /// Errors: wrong lengths, reg not positive and finite, n·m past one storage binding
    /// ([`Error::TooLarge`]: use [`OtProblem::top_k`] for large problems).
    pub fn plan(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32) -> Result<GpuVec<f32>> {
        let (f, g) = self.check_potentials(f, g, reg)?;
        let gpu = self.gpu();
        check_dense_fits(
            gpu,
            self.n,
            self.m,
            "plan",
            "max_storage_buffer_binding_size",
        )?;
        let elements = self.n as u64 * self.m as u64;
        let out = GpuVec::zeros(gpu, self.n * self.m)?;
        let mut rec = Recorder::new(gpu);
        let grid = rec.elementwise_grid(elements)?;
        self.record_over_cost(
            &mut rec,
            &PLAN_DENSE,
            false,
            &self.uniform(reg),
            (f, Some(g)),
            &[Binding::Skip, Binding::Skip, Binding::storage(out.view())],
            grid,
        )?;
        rec.submit()?;
        Ok(out)
    }

    /// The k largest entries of each row of P, selected on the GPU (no host sort), in new
    /// buffers (f and g are only read). Blocking only in that it submits.
    ///
    /// Errors: wrong lengths, reg not positive and finite, k = 0 or k > [`MAX_TOP_K`]
    /// ([`Error::InvalidParameter`]), n·k past one storage binding ([`Error::TooLarge`]).
    pub fn top_k(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32, k: usize) -> Result<TopK> {
        let (f, g) = self.check_potentials(f, g, reg)?;
        check_k(k)?;
        let gpu = self.gpu();
        check_binding(gpu, "k", self.n as u64 * k as u64)?;
        let top = TopK {
            k,
            columns: GpuVec::zeros(gpu, self.n * k)?,
            values: GpuVec::zeros(gpu, self.n * k)?,
        };
        let mut rec = Recorder::new(gpu);
        self.record_top_k(&mut rec, f, g, reg, &top)?;
        rec.submit()?;
        Ok(top)
    }

    /// Records P·1 into `row_mass` and SNS's sparsity pattern into `top` (see `select_rows` in
    /// `shaders/ot/plan.wgsl`): each row's entries within e^-14 of its largest, at most
    /// `top.k`, unsorted; rows that had more are counted into `capped[0]`. One kernel for a
    /// dense cost read as vec4 (`select_rows4`), else `row_sums` (Σⱼ C·P into `row_cost`) and
    /// `select_rows`.
    pub(crate) fn record_row_mass_and_pattern(
        &self,
        rec: &mut Recorder,
        (f, g): (BufView<'_>, BufView<'_>),
        reg: f32,
        top: &TopK,
        capped: BufView<'_>,
        (row_mass, row_cost): (BufView<'_>, BufView<'_>),
    ) -> Result<()> {
        let Some(dense) = self.dense_vec4() else {
            self.record_row_sums(rec, f, g, reg, row_mass, row_cost)?;
            let kernel = &SELECT_ROWS;
            return self.record_row_selection(rec, kernel, (f, g), reg, top, Some(capped));
        };
        let u = OtUniform {
            k: top.k as u32,
            ..self.uniform(reg)
        };
        // Binding 2, which the points take in the per-entry kernels, receives P·1.
        let cost = [
            Binding::storage(dense.c),
            Binding::storage(row_mass),
            Binding::Skip,
        ];
        let rest = [
            Binding::storage(top.columns.view()),
            Binding::storage(top.values.view()),
            Binding::storage(capped),
        ];
        let grid = rec.grid_for_groups(self.n as u64)?;
        rec.dispatch(
            &SELECT_ROWS4,
            &[("WG", self.row_workgroup()? as f64)],
            &cost_pass_bindings(&u, cost, (f, Some(g)), &rest),
            grid,
        )
    }

    /// One workgroup per row writing `top`'s k columns and values: `top_k`, or `select_rows`
    /// (which also counts capped rows into `capped`, its binding 8).
    fn record_row_selection(
        &self,
        rec: &mut Recorder,
        kernel: &'static Kernel,
        (f, g): (BufView<'_>, BufView<'_>),
        reg: f32,
        top: &TopK,
        capped: Option<BufView<'_>>,
    ) -> Result<()> {
        let u = OtUniform {
            k: top.k as u32,
            ..self.uniform(reg)
        };
        let grid = rec.grid_for_groups(self.n as u64)?;
        let mut rest = vec![
            Binding::storage(top.columns.view()),
            Binding::storage(top.values.view()),
        ];
        rest.extend(capped.map(Binding::storage));
        self.record_over_cost(rec, kernel, true, &u, (f, Some(g)), &rest, grid)
    }

    pub(crate) fn record_top_k(
        &self,
        rec: &mut Recorder,
        f: BufView<'_>,
        g: BufView<'_>,
        reg: f32,
        top: &TopK,
    ) -> Result<()> {
        check_k(top.k)?;
        self.record_row_selection(rec, &TOP_K, (f, g), reg, top, None)
    }
}

/// k of [`OtProblem::top_k`]: 1 ..= [`MAX_TOP_K`].
fn check_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_TOP_K {
        return Err(Error::param("k", k as f64, "1 ..= MAX_TOP_K (128)"));
    }
    Ok(())
}
