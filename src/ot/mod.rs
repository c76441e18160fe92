//! Entropic optimal transport between histograms a (n) and b (m) with regularisation
//! reg = 1/η: log-domain Sinkhorn ([`OtProblem::sinkhorn`], POT's `sinkhorn_log`) and
//! Sinkhorn-Newton-Sparse ([`OtProblem::sns`], Tang et al. 2024), on a dense cost matrix or on
//! one computed on the fly from point clouds ([`Cost`]), which never stores n×m.
//!
//! Potentials are the duals f (n) and g (m) in cost units, `P[i][j] = exp((f[i] + g[j] −
//! C[i][j])/reg)` (POT's `log_u`, `log_v` times reg). From a public function to its WGSL:
//! [`OtProblem::sinkhorn`] → [`SinkhornSolver`] → `sinkhorn::G_PASS`, `F_PASS` (for dense rows
//! whose length is a multiple of 4 their vec4 forms `G_PASS4`, `F_PASS4`) →
//! `shaders/ot/sinkhorn.wgsl` (the cost in `shaders/ot/cost.wgsl`); the plan's passes are in
//! `plan.rs` (`shaders/ot/plan.wgsl`), SNS's sparse Hessian in `sns.rs` (`shaders/ot/sns.wgsl`).
//!
//! Problems need not be square: a has n entries, b has m, the cost is n×m (or n and m points).
//!
//! Buffers: every function here reads the caller's views (a, b, the dense cost or the points,
//! the potentials passed to [`OtProblem::plan`] and friends) and writes only buffers curvgpu
//! allocates (the problem's copies of a and b, the potentials, the plan, scratch). So the
//! caller's inputs may share one buffer at any offsets, disjoint or even overlapping (a and b
//! may be one view for a square problem with equal weights, x and y one view of one point
//! cloud), and there is no in-place form: no output is ever a caller's view.

mod plan;
mod sinkhorn;
mod sns;

pub use plan::{TopK, MAX_TOP_K};
pub use sinkhorn::{SinkhornConfig, SinkhornSolution, SinkhornSolver, SinkhornStatus};
pub use sns::{NewtonStage, SnsConfig, SnsSolution, MAX_KEPT};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::Kernel;
use crate::record::{Binding, Recorder};

/// The kernels of this family.
pub(crate) fn kernels() -> Vec<&'static Kernel> {
    [sinkhorn::KERNELS, plan::KERNELS, sns::KERNELS].concat()
}

/// The ground cost C (n×m).
#[derive(Clone, Copy, Debug)]
pub enum Cost<'a> {
    /// A dense row-major n×m matrix, non-negative and finite, within one storage binding
    /// (larger problems: use [`Cost::Points`]).
    Dense(BufView<'a>),
    /// `C[i][j] = scale · metric(xᵢ, yⱼ)`, computed on the fly from points X (n×dim, row-major)
    /// and Y (m×dim); n×m is never stored.
    Points {
        /// n points of `dim` coordinates.
        x: BufView<'a>,
        /// m points of `dim` coordinates.
        y: BufView<'a>,
        /// Coordinates per point (≥ 1).
        dim: usize,
        /// The distance.
        metric: Metric,
        /// Factor on every cost (> 0), e.g. 1/max C to scale the costs to [0, 1].
        scale: f32,
    },
}

/// Distances for [`Cost::Points`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// ‖x − y‖₂².
    SqEuclidean,
    /// ‖x − y‖_p = (Σ|xₖ − yₖ|^p)^(1/p), p ≥ 1 (p = 1: the L1 ground cost).
    Lp(f32),
}

/// What to do when Σa ≠ Σb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Masses {
    /// Totals must agree to a relative 1e-5 (f32 normalisation leaves ~1e-7); otherwise
    /// [`Error::Mass`].
    #[default]
    Equal,
    /// Scale a and b to total 1 each (only when asked: it changes the problem).
    Renormalize,
}

/// A validated problem: the histograms (copied, possibly renormalised) and the cost.
///
/// Non-square problems are supported: a (n) and b (m) may differ in length, the cost is n×m
/// (or n points x and m points y), and every solver and plan function handles n ≠ m.
///
/// The problem keeps the caller's cost views and reads them at every solve; it never writes
/// them, nor any other view the caller passes (see the module docs): inputs may share one
/// buffer, even overlap.
pub struct OtProblem<'a> {
    gpu: &'a Gpu,
    n: usize,
    m: usize,
    a: GpuVec<f32>,
    b: GpuVec<f32>,
    /// a and b on the host (SNS's line search sums in f64).
    a_host: Vec<f64>,
    b_host: Vec<f64>,
    cost: Cost<'a>,
    /// Cᵀ (m×n) of a dense cost, which Sinkhorn's g pass reads along its rows.
    cost_t: Option<GpuVec<f32>>,
}

impl std::fmt::Debug for OtProblem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtProblem")
            .field("n", &self.n)
            .field("m", &self.m)
            .field("cost", &self.cost)
            .finish()
    }
}

crate::kernel::uniform_struct! {
    /// The uniform every OT kernel reads (`struct Ot` in `shaders/ot/cost.wgsl`).
    pub(crate) struct OtUniform {
        n: u32, m: u32, dim: u32, slices: u32, reg: f32, inv_reg: f32, p: f32, scale: f32,
        k: u32, max_iter: u32, every: u32, tol: f32, err_at: u32, _pad0: u32, _pad1: u32,
        _pad2: u32,
    }
}

impl<'a> OtProblem<'a> {
    /// Checks and copies the problem (blocking: reads a and b back, and scans the cost once).
    /// n ≠ m is fine. The views may share one buffer (see [`OtProblem`]); the problem only
    /// ever reads them.
    ///
    /// Errors: n or m = 0 ([`Error::Empty`]); a, b or a dense cost holding a negative or
    /// non-finite value ([`Error::Negative`], [`Error::NonFinite`]); zero total mass, or totals
    /// that differ under [`Masses::Equal`] ([`Error::Mass`]); a dense cost of the wrong length
    /// or points of the wrong length or `dim` = 0 ([`Error::LengthMismatch`], [`Error::Shape`]);
    /// p < 1 or a scale that is not positive and finite ([`Error::InvalidParameter`]); a dense
    /// cost, a, b or the points past one storage binding ([`Error::TooLarge`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(
        gpu: &'a Gpu,
        a: impl Into<BufView<'a>>,
        b: impl Into<BufView<'a>>,
        cost: Cost<'a>,
        masses: Masses,
    ) -> Result<Self> {
        pollster::block_on(Self::new_async(gpu, a.into(), b.into(), cost, masses))
    }

    /// Async form of [`OtProblem::new`].
    pub async fn new_async(
        gpu: &'a Gpu,
        a: BufView<'a>,
        b: BufView<'a>,
        cost: Cost<'a>,
        masses: Masses,
    ) -> Result<Self> {
        let (n, m) = (a.len(), b.len());
        if n == 0 {
            return Err(Error::Empty { argument: "a" });
        }
        if m == 0 {
            return Err(Error::Empty { argument: "b" });
        }
        let a = a.check(gpu, "a", n)?;
        let b = b.check(gpu, "b", m)?;
        check_binding(gpu, "a", n as u64)?;
        check_binding(gpu, "b", m as u64)?;
        crate::finite::ensure_non_negative_async(gpu, "a", &[a]).await?;
        crate::finite::ensure_non_negative_async(gpu, "b", &[b]).await?;
        let cost = match cost {
            Cost::Dense(c) => {
                check_dense_fits(
                    gpu,
                    n,
                    m,
                    "cost",
                    "max_storage_buffer_binding_size (use Cost::Points)",
                )?;
                let c = c.check(gpu, "cost", n * m)?;
                crate::finite::ensure_non_negative_async(gpu, "cost", &[c]).await?;
                Cost::Dense(c)
            }
            Cost::Points {
                x,
                y,
                dim,
                metric,
                scale,
            } => {
                if dim == 0 {
                    return Err(Error::Shape {
                        argument: "dim",
                        message: "points need at least one coordinate".into(),
                    });
                }
                let coordinates = |argument, points: usize| {
                    let len = points.checked_mul(dim).ok_or(Error::Shape {
                        argument: "dim",
                        message: format!("{points} points of {dim} coordinates overflow usize"),
                    })?;
                    check_binding(gpu, argument, len as u64).map(|()| len)
                };
                let x = x.check(gpu, "x", coordinates("x", n)?)?;
                let y = y.check(gpu, "y", coordinates("y", m)?)?;
                if let Metric::Lp(p) = metric {
                    if !(p.is_finite() && p >= 1.0) {
                        return Err(Error::param("p", p as f64, "finite and ≥ 1"));
                    }
                }
                crate::check::positive("scale", scale)?;
                crate::finite::ensure_finite_async(gpu, "x", &[x]).await?;
                crate::finite::ensure_finite_async(gpu, "y", &[y]).await?;
                Cost::Points {
                    x,
                    y,
                    dim,
                    metric,
                    scale,
                }
            }
        };
        // Copied by a kernel: a caller's buffer need not allow COPY_SRC.
        let (a_own, b_own) = (GpuVec::<f32>::zeros(gpu, n)?, GpuVec::<f32>::zeros(gpu, m)?);
        let mut rec = Recorder::new(gpu);
        crate::vector::record_copy(&mut rec, a, 0, a_own.view(), 0, n)?;
        crate::vector::record_copy(&mut rec, b, 0, b_own.view(), 0, m)?;
        rec.submit()?;
        let (a_host, b_host) = (a_own.read_async().await?, b_own.read_async().await?);
        let total = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
        let (ta, tb) = (total(&a_host), total(&b_host));
        for (name, t) in [("a", ta), ("b", tb)] {
            if t <= 0.0 {
                return Err(Error::Mass {
                    message: format!("`{name}` has no mass (its total is {t})"),
                });
            }
        }
        let (mut a_f64, mut b_f64): (Vec<f64>, Vec<f64>) = (
            a_host.iter().map(|&v| v as f64).collect(),
            b_host.iter().map(|&v| v as f64).collect(),
        );
        let (a, b) = match masses {
            Masses::Equal if (ta - tb).abs() > 1e-5 * ta.max(tb) => {
                return Err(Error::Mass {
                    message: format!(
                        "the totals of `a` ({ta}) and `b` ({tb}) differ; pass \
                         Masses::Renormalize to scale both to 1"
                    ),
                })
            }
            Masses::Equal => (a_own, b_own),
            Masses::Renormalize => {
                // The f32 values solved with, kept exactly on the host too.
                let scaled = |v: &mut Vec<f64>, t: f64| -> Vec<f32> {
                    let out: Vec<f32> = v.iter().map(|&x| (x / t) as f32).collect();
                    *v = out.iter().map(|&x| x as f64).collect();
                    out
                };
                (
                    GpuVec::upload(gpu, &scaled(&mut a_f64, ta))?,
                    GpuVec::upload(gpu, &scaled(&mut b_f64, tb))?,
                )
            }
        };
        let cost_t = match cost {
            Cost::Dense(c) => Some(sinkhorn::transposed(gpu, c, n, m)?),
            Cost::Points { .. } => None,
        };
        Ok(OtProblem {
            gpu,
            n,
            m,
            a,
            b,
            a_host: a_f64,
            b_host: b_f64,
            cost,
            cost_t,
        })
    }

    /// Rows of C (the length of a).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of C (the length of b).
    pub fn m(&self) -> usize {
        self.m
    }

    /// The source histogram as solved (renormalised if asked).
    pub fn a(&self) -> &GpuVec<f32> {
        &self.a
    }

    /// The target histogram as solved.
    pub fn b(&self) -> &GpuVec<f32> {
        &self.b
    }

    /// The uniform for these sizes and this cost at `reg`.
    pub(crate) fn uniform(&self, reg: f32) -> OtUniform {
        let (dim, p, scale) = match self.cost {
            Cost::Dense(_) => (0, 1.0, 1.0),
            Cost::Points {
                dim, metric, scale, ..
            } => (
                dim as u32,
                match metric {
                    Metric::SqEuclidean => 2.0,
                    Metric::Lp(p) => p,
                },
                scale,
            ),
        };
        OtUniform {
            n: self.n as u32,
            m: self.m as u32,
            dim,
            slices: 1,
            reg,
            inv_reg: 1.0 / reg,
            p,
            scale,
            ..Default::default()
        }
    }

    /// Bindings 1–3 of a kernel that evaluates C through `cost()` (`shaders/ot/cost.wgsl`):
    /// C, X, Y. The form the `COST` override turns off is still bound by the entry point, so
    /// it takes the placeholder (never a second binding of a caller's view).
    fn cost_bindings(&self) -> [Binding<'a>; 3] {
        match self.cost {
            Cost::Dense(c) => [
                Binding::storage(c),
                Binding::Placeholder,
                Binding::Placeholder,
            ],
            Cost::Points { x, y, .. } => [
                Binding::Placeholder,
                Binding::storage(x),
                Binding::storage(y),
            ],
        }
    }

    /// The `COST` override of `shaders/ot/cost.wgsl` for this cost.
    pub(crate) fn cost_kind(&self) -> f64 {
        match self.cost {
            Cost::Dense(_) => 0.0,
            Cost::Points { metric, .. } => match metric {
                Metric::SqEuclidean => 1.0,
                Metric::Lp(_) => 2.0,
            },
        }
    }

    /// Records `kernel`, one of the kernels that evaluate C (and P) per entry: bindings 0 the
    /// uniform, 1–3 the cost ([`Self::cost_bindings`]), 4 f, 5 g (`None`: the entry has a
    /// gap there), then `rest` from 6 on (one per remaining slot). `per_row` kernels (one
    /// workgroup a row) take [`Self::row_workgroup`] invocations, the others the tuned
    /// workgroup size.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_over_cost(
        &self,
        rec: &mut Recorder,
        kernel: &'static Kernel,
        per_row: bool,
        u: &OtUniform,
        (f, g): (BufView<'_>, Option<BufView<'_>>),
        rest: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<()> {
        let wg = if per_row {
            self.row_workgroup()?
        } else {
            self.gpu.tuning().workgroup_size
        };
        rec.dispatch(
            kernel,
            &[("WG", wg as f64), ("COST", self.cost_kind())],
            &cost_pass_bindings(u, self.cost_bindings(), (f, g), rest),
            grid,
        )
    }

    /// The dense cost when its rows are whole vec4s (m a multiple of 4), which the plan's
    /// passes then read as vec4.
    pub(crate) fn dense_vec4(&self) -> Option<DenseVec4<'a>> {
        let Cost::Dense(c) = self.cost else {
            return None;
        };
        self.m.is_multiple_of(4).then_some(DenseVec4 { c })
    }

    pub(crate) fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    /// Invocations of the one-workgroup-per-row kernels over rows of m entries:
    /// [`Self::row_blocking`] with one row a workgroup.
    pub(crate) fn row_workgroup(&self) -> Result<u32> {
        Ok(self.row_blocking(self.m, 1)?.0)
    }

    /// (invocations, rows) of a workgroup of a row pass over rows of `row_len` entries, up to
    /// `max_rows` rows a workgroup. On CPU adapters ([`crate::Tuning::simd_lanes`]) one SIMD
    /// group, whose barriers are then nearly free (with 256 invocations a row's two reduction
    /// trees cost lavapipe ~30 µs), and `max_rows` rows, unless an invocation would loop past
    /// [`CPU_LOOP_TRIPS`] times through the cost's coordinates: then one row, and more
    /// invocations. Elsewhere the tuned size and one row.
    ///
    /// Errors: a row that even 256 invocations cannot cover within the limit
    /// ([`Error::TooLarge`]).
    pub(crate) fn row_blocking(&self, row_len: usize, max_rows: usize) -> Result<(u32, usize)> {
        let t = self.gpu.tuning();
        let Some(lanes) = t.simd_lanes else {
            return Ok((t.workgroup_size, 1));
        };
        let coordinates = match self.cost {
            Cost::Dense(_) => 1,
            Cost::Points { dim, .. } => dim,
        };
        let trips = |wg: u32, rows: usize| {
            (row_len.div_ceil(wg as usize) as u64)
                .saturating_mul(rows as u64)
                .saturating_mul(coordinates as u64)
        };
        if trips(lanes, max_rows) <= CPU_LOOP_TRIPS {
            return Ok((lanes, max_rows));
        }
        let mut wg = lanes.max(1);
        while wg < t.workgroup_size.max(lanes) && trips(wg, 1) > CPU_LOOP_TRIPS {
            wg *= 2;
        }
        if trips(wg, 1) > CPU_LOOP_TRIPS {
            return Err(Error::TooLarge {
                argument: "dim",
                requested: trips(wg, 1),
                limit: "loop trips of one invocation of a CPU adapter's row pass (llvmpipe \
                        ends a loop after 65,535; the rows' length times the coordinates)",
                max: CPU_LOOP_TRIPS,
            });
        }
        Ok((wg, 1))
    }

    /// Row slices of the column passes for `pairs` values per column and slice (Sinkhorn's
    /// (max, sum) partials: 2; SNS's sums: 1): [`SLICE_ROWS`] rows each, at most
    /// [`MAX_SLICES`], and no more than one storage binding of partials holds.
    pub(crate) fn column_slices(&self, pairs: usize) -> Result<usize> {
        let per_slice = (pairs * self.m) as u64;
        let binding = self.gpu.limits().max_storage_buffer_binding_size / 4;
        let fit = (binding / per_slice.max(1)) as usize;
        if fit == 0 {
            return Err(Error::TooLarge {
                argument: "b",
                requested: 4 * per_slice,
                limit: "max_storage_buffer_binding_size (column partials)",
                max: 4 * binding,
            });
        }
        Ok(self.n.div_ceil(SLICE_ROWS).clamp(1, MAX_SLICES).min(fit))
    }
}

/// Trips one invocation of a row pass may make through a loop on CPU adapters: llvmpipe
/// (Vulkan and GL) ends a loop after 65,535 trips counted over the invocation's whole run, so
/// that a row of 70,001 on-the-fly costs in 2-D, taken four rows at a time by 8 invocations,
/// lost part of its sum (the coordinates' loop ran 70,004 times); half that, for margin.
const CPU_LOOP_TRIPS: u64 = 1 << 15;

/// Rows each column-pass workgroup folds (the rest of n goes to more slices, up to
/// [`MAX_SLICES`]): enough workgroups to fill a GPU at n = 500, few partials to combine.
const SLICE_ROWS: usize = 64;
const MAX_SLICES: usize = 1024;

/// A dense cost read as vec4 by the plan's passes.
pub(crate) struct DenseVec4<'a> {
    pub c: BufView<'a>,
}

impl<'a> DenseVec4<'a> {
    /// The bindings of a vec4 pass: [`cost_pass_bindings`] with C as vec4 at 1 and gaps at 2
    /// and 3 (the vec4 entries never evaluate `cost()`, so they do not bind X and Y).
    pub fn bindings<'b>(
        &self,
        u: &'b OtUniform,
        (f, g): (BufView<'b>, Option<BufView<'b>>),
        rest: &[Binding<'b>],
    ) -> Vec<Binding<'b>>
    where
        'a: 'b,
    {
        let cost = [Binding::storage(self.c), Binding::Skip, Binding::Skip];
        cost_pass_bindings(u, cost, (f, g), rest)
    }
}

/// The bindings of a pass over the cost: 0 the uniform, 1–3 `cost` (C, X, Y, or what a vec4
/// pass puts there), 4 f, 5 g (`None`: a gap in the entry's slots), then `rest` from 6 on.
pub(crate) fn cost_pass_bindings<'b>(
    u: &'b OtUniform,
    cost: [Binding<'b>; 3],
    (f, g): (BufView<'b>, Option<BufView<'b>>),
    rest: &[Binding<'b>],
) -> Vec<Binding<'b>> {
    let mut bindings = vec![Binding::uniform(u)];
    bindings.extend(cost);
    bindings.push(Binding::storage(f));
    bindings.push(g.map_or(Binding::Skip, Binding::storage));
    bindings.extend_from_slice(rest);
    bindings
}

/// `Err(Error::TooLarge)` naming `argument` unless an n×m f32 matrix fits one storage binding
/// (and u32 indexing).
pub(crate) fn check_dense_fits(
    gpu: &Gpu,
    n: usize,
    m: usize,
    argument: &'static str,
    limit: &'static str,
) -> Result<()> {
    let elements = (n as u64).saturating_mul(m as u64);
    check_elements(gpu, argument, elements, limit)
}

/// `Err(Error::TooLarge)` naming `argument` unless `elements` f32/u32 values fit one storage
/// binding (and u32 indexing).
pub(crate) fn check_binding(gpu: &Gpu, argument: &'static str, elements: u64) -> Result<()> {
    check_elements(gpu, argument, elements, "max_storage_buffer_binding_size")
}

fn check_elements(
    gpu: &Gpu,
    argument: &'static str,
    elements: u64,
    limit: &'static str,
) -> Result<()> {
    let binding = gpu.limits().max_storage_buffer_binding_size / 4;
    if elements > binding.min(u32::MAX as u64) {
        return Err(Error::TooLarge {
            argument,
            requested: elements.saturating_mul(4),
            limit,
            max: 4 * binding,
        });
    }
    Ok(())
}

/// Checks reg (positive and finite).
pub(crate) fn check_reg(reg: f32) -> Result<()> {
    crate::check::positive("reg", reg)
}
