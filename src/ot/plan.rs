//! The plan from the potentials, never stored unless asked: ⟨C, P⟩ and the marginals, the
//! dense plan, or the k largest entries of each row.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::kernel;
use crate::record::{Binding, Recorder};

use super::{check_dense_fits, check_reg, cost_pass_bindings, OtProblem, OtUniform};

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
    fn check_potentials(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32) -> Result<()> {
        check_reg(reg)?;
        f.view().check(self.gpu(), "f", self.n)?;
        g.view().check(self.gpu(), "g", self.m)
    }

    /// ⟨C, P⟩ for the potentials f, g at `reg`: f32 sums per row, added in f64. Blocking.
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
        self.check_potentials(f, g, reg)?;
        let gpu = self.gpu();
        let (mass, cost) = (gpu.zeros::<f32>(self.n)?, gpu.zeros::<f32>(self.n)?);
        let mut rec = Recorder::new(gpu);
        self.record_row_sums(&mut rec, f.view(), g.view(), reg, mass.view(), cost.view())?;
        rec.submit()?;
        let per_row = gpu.read_async(&cost).await?;
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
        let grid = rec.gpu().grid_for_groups(self.n as u64)?;
        self.record_over_cost(
            rec,
            kernel!("ot/plan.wgsl", "row_sums"),
            true,
            &self.uniform(reg),
            (f, Some(g)),
            &[Binding::Storage(mass, None), Binding::Storage(cost, None)],
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
                kernel!("ot/plan.wgsl", "col_sums4"),
                &[("WG", wg as f64)],
                &dense.bindings(&u, (f, Some(g)), &[Binding::Storage(partials, None)]),
                [blocks as u32, slices as u32, 1],
            );
        }
        let blocks = self.m.div_ceil(wg);
        self.record_over_cost(
            rec,
            kernel!("ot/plan.wgsl", "col_sums"),
            false,
            &u,
            (f, Some(g)),
            &[Binding::Storage(partials, None)],
            [blocks as u32, slices as u32, 1],
        )
    }

    /// The dense plan P (n×m, row-major) for the potentials f, g at `reg`. Blocking only in
    /// that it submits.
    ///
    /// Errors: wrong lengths, reg not positive and finite, n·m past one storage binding
    /// ([`Error::TooLarge`]: use [`OtProblem::top_k`] for large problems).
    pub fn plan(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32) -> Result<GpuVec<f32>> {
        self.check_potentials(f, g, reg)?;
        let gpu = self.gpu();
        check_dense_fits(
            gpu,
            self.n,
            self.m,
            "plan",
            "max_storage_buffer_binding_size",
        )?;
        let elements = self.n as u64 * self.m as u64;
        let out = gpu.zeros(self.n * self.m)?;
        let mut rec = Recorder::new(gpu);
        self.record_over_cost(
            &mut rec,
            kernel!("ot/plan.wgsl", "plan_dense"),
            false,
            &self.uniform(reg),
            (f.view(), Some(g.view())),
            &[
                Binding::Skip,
                Binding::Skip,
                Binding::Storage(out.view(), None),
            ],
            gpu.elementwise_grid(elements)?,
        )?;
        rec.submit()?;
        Ok(out)
    }

    /// The k largest entries of each row of P, selected on the GPU (no host sort). Blocking
    /// only in that it submits.
    ///
    /// Errors: wrong lengths, reg not positive and finite, k = 0 or k > [`MAX_TOP_K`].
    pub fn top_k(&self, f: &GpuVec<f32>, g: &GpuVec<f32>, reg: f32, k: usize) -> Result<TopK> {
        self.check_potentials(f, g, reg)?;
        let gpu = self.gpu();
        let top = TopK {
            k,
            columns: gpu.zeros(self.n * k.max(1))?,
            values: gpu.zeros(self.n * k.max(1))?,
        };
        let mut rec = Recorder::new(gpu);
        self.record_top_k(&mut rec, f.view(), g.view(), reg, &top)?;
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
            let kernel = kernel!("ot/plan.wgsl", "select_rows");
            return self.record_row_selection(rec, kernel, (f, g), reg, top, Some(capped));
        };
        let u = OtUniform {
            k: top.k as u32,
            ..self.uniform(reg)
        };
        // Binding 2, which the points take in the per-entry kernels, receives P·1.
        let cost = [
            Binding::Storage(dense.c, None),
            Binding::Storage(row_mass, None),
            Binding::Skip,
        ];
        let rest = [
            Binding::Storage(top.columns.view(), None),
            Binding::Storage(top.values.view(), None),
            Binding::Storage(capped, None),
        ];
        rec.dispatch(
            kernel!("ot/plan.wgsl", "select_rows4"),
            &[("WG", self.row_workgroup() as f64)],
            &cost_pass_bindings(&u, cost, (f, Some(g)), &rest),
            rec.gpu().grid_for_groups(self.n as u64)?,
        )
    }

    /// One workgroup per row writing `top`'s k columns and values: `top_k` or `select_rows`.
    fn record_row_selection(
        &self,
        rec: &mut Recorder,
        kernel: crate::kernel::Kernel,
        (f, g): (BufView<'_>, BufView<'_>),
        reg: f32,
        top: &TopK,
        capped: Option<BufView<'_>>,
    ) -> Result<()> {
        let u = OtUniform {
            k: top.k as u32,
            ..self.uniform(reg)
        };
        let grid = rec.gpu().grid_for_groups(self.n as u64)?;
        self.record_over_cost(
            rec,
            kernel,
            true,
            &u,
            (f, Some(g)),
            &[
                Binding::Storage(top.columns.view(), None),
                Binding::Storage(top.values.view(), None),
                capped.map_or(Binding::Skip, |v| Binding::Storage(v, None)),
            ],
            grid,
        )
    }

    pub(crate) fn record_top_k(
        &self,
        rec: &mut Recorder,
        f: BufView<'_>,
        g: BufView<'_>,
        reg: f32,
        top: &TopK,
    ) -> Result<()> {
        if top.k == 0 || top.k > MAX_TOP_K {
            return Err(Error::param("k", top.k as f64, "1 ..= MAX_TOP_K (128)"));
        }
        let kernel = kernel!("ot/plan.wgsl", "top_k");
        self.record_row_selection(rec, kernel, (f, g), reg, top, None)
    }
}
