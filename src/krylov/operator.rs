//! [`LinearOperator`]: anything that records y = A·x, and the built-in operators:
//! `DenseMatrix::record_apply` → [`DENSE_MATVEC`] → `shaders/krylov/operators.wgsl`'s
//! `dense_matvec`; `CsrMatrix` → `csr_matvec` (`csr_matvec_dot` for CG's fused forms),
//! `Poisson` → `poisson` / `poisson_vec4` (`poisson_vec4_dot`).
//!
//! Views. x and y may lie in one buffer (an engine's arena) where they are disjoint; a y that
//! overlaps x is refused by every built-in operator with [`Error::Overlap`] naming `x` and `y`
//! (the trait's contract: x and y never alias). Operators composed of several passes
//! ([`Shifted`], [`BlockDiagonal`]) check that before recording anything, since no single pass
//! of theirs binds both.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;
use crate::vector::{record_axpy, record_copy, record_fill};

crate::kernel::uniform_struct! {
    /// `dense_matvec`'s and `dense_diagonal`'s shape.
    pub(crate) struct DenseUniform { rows: u32, cols: u32, stride: u32, _pad: u32 }
}

crate::kernel::uniform_struct! {
    /// The CSR kernels' shape.
    pub(crate) struct CsrUniform { rows: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
}

crate::kernel::uniform_struct! {
    /// The Poisson stencils' grid (and where β lives for the fused direction).
    pub(crate) struct GridUniform {
        nx: u32, ny: u32, nz: u32, n: u32, beta_index: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    }
}

/// y ← M·x for a row-major M whose rows start `stride` apart: one workgroup per row.
pub(crate) static DENSE_MATVEC: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "dense_matvec",
    &[
        uniform::<DenseUniform>(),
        Slot::Read("a"),
        Slot::Read("x"),
        Slot::Write("y"),
    ],
);
/// d ← diag(A) of a square dense A.
static DENSE_DIAGONAL: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "dense_diagonal",
    &[uniform::<DenseUniform>(), Slot::Read("a"), Slot::Write("d")],
);
/// y ← A·x for CSR A: one invocation per row.
static CSR_MATVEC: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "csr_matvec",
    &[
        uniform::<CsrUniform>(),
        Slot::Read("row_ptr"),
        Slot::Read("entries"),
        Slot::Gap,
        Slot::Read("x"),
        Slot::Write("y"),
    ],
);
/// y ← A·x for CSR A with one partial sum of xᵀy per workgroup.
static CSR_MATVEC_DOT: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "csr_matvec_dot",
    &[
        uniform::<CsrUniform>(),
        Slot::Read("row_ptr"),
        Slot::Read("entries"),
        Slot::Gap,
        Slot::Read("x"),
        Slot::Write("y"),
        Slot::Write("partials"),
    ],
);
/// d ← the stored diagonal of CSR A (0 where a row stores none).
static CSR_DIAGONAL: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "csr_diagonal",
    &[
        uniform::<CsrUniform>(),
        Slot::Read("row_ptr"),
        Slot::Read("entries"),
        Slot::Gap,
        Slot::Write("d"),
    ],
);
/// The scalar stencil, any grid.
static POISSON: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "poisson",
    &[uniform::<GridUniform>(), Slot::Read("x"), Slot::Write("y")],
);
/// The vec4 stencil (nx % 4 = 0), on x or (DIRECTION) on x + β·d.
static POISSON_VEC4: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "poisson_vec4",
    &[
        uniform::<GridUniform>(),
        Slot::Read("x"),
        Slot::Write("y"),
        Slot::Gap,
        Slot::Read("d"),
        Slot::Read("scalars"),
    ],
);
/// [`POISSON_VEC4`] with one partial sum of (operand)ᵀy per workgroup.
static POISSON_VEC4_DOT: Kernel = Kernel::new(
    &shader::KRYLOV_OPERATORS,
    "poisson_vec4_dot",
    &[
        uniform::<GridUniform>(),
        Slot::Read("x"),
        Slot::Write("y"),
        Slot::Write("partials"),
        Slot::Read("d"),
        Slot::Read("scalars"),
    ],
);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[
    &DENSE_MATVEC,
    &DENSE_DIAGONAL,
    &CSR_MATVEC,
    &CSR_MATVEC_DOT,
    &CSR_DIAGONAL,
    &POISSON,
    &POISSON_VEC4,
    &POISSON_VEC4_DOT,
];

/// A linear map the solvers and spectrum tools can apply without seeing its entries.
///
/// Implement it to plug in anything that can record y = A·x into a [`Recorder`]: a model's
/// Hessian-vector product written in your own WGSL (see [`Recorder::dispatch_raw`]), a learned
/// preconditioner, a composition of the built-in operators. `FnOperator` wraps a closure.
///
/// The solvers record an operator inside curvgpu's error scope: what wgpu finds wrong while it
/// records (a bind group that does not fit its layout, say) comes back from the solver as
/// [`Error::Wgpu`], as do errors found when the recording runs.
pub trait LinearOperator {
    /// (rows, columns).
    fn shape(&self) -> (usize, usize);

    /// Records y ← A·x. `x` has `columns` elements, `y` has `rows`; they never alias (the
    /// solvers never pass overlapping views, and the built-in operators refuse them with
    /// [`Error::Overlap`]: there is no in-place form). They may lie in one buffer (the
    /// solvers' own vectors never do; a caller may pass such views to the built-in
    /// operators). A user pipeline that binds x `read` and y `read_write` cannot take them
    /// from one buffer — wgpu refuses a buffer bound read-only and writable in one dispatch
    /// ([`Error::Wgpu`] at submit) — unless it declares x `read_write` too.
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()>;

    /// Records d ← diag(A) and returns true, or returns false when the operator cannot
    /// (then Jacobi preconditioning is refused).
    fn record_diagonal(&self, _rec: &mut Recorder, _d: BufView<'_>) -> Result<bool> {
        Ok(false)
    }

    /// Records y ← A·x fused with xᵀy: writes partial sums into `partials[..g]` and returns
    /// `Some(g)` (g ≤ `partials.len()`), such that Σ partials[..g] = Σ_{i < 4⌊n/4⌋} x_i·y_i —
    /// the caller adds the last n % 4 products itself. `Ok(None)` (the default) means the
    /// operator cannot fuse, and the caller reduces xᵀy in a separate pass. CG uses it for
    /// pᵀAp: fusing saves a pass over p and q every iteration. As in
    /// [`LinearOperator::record_apply`], x and y never alias; `partials` overlaps neither.
    fn record_apply_dot(
        &self,
        _rec: &mut Recorder,
        _x: BufView<'_>,
        _y: BufView<'_>,
        _partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Records y ← A·(x + β·d) fused with (x + β·d)ᵀy, β read on the GPU from
    /// `direction.scalars[direction.beta_index]`; x and d are left as they are. Partial sums as
    /// in [`LinearOperator::record_apply_dot`]. `Ok(None)` (the default) means the operator
    /// cannot, and CG forms p = z + β·p in a pass of its own first (z = r, or the preconditioned
    /// residual): the fused form saves that pass every iteration. y (and `partials`) overlap
    /// none of x, d and the
    /// scalars; x, d and the scalars are only read and may overlap each other where y lies in
    /// another buffer (in y's buffer they must be disjoint: WebGPU refuses overlapping
    /// bindings of a buffer a dispatch writes). The built-in operators refuse what breaks
    /// this with [`Error::Overlap`] naming both views.
    fn record_direction_apply_dot(
        &self,
        _rec: &mut Recorder,
        _direction: &Direction<'_>,
        _y: BufView<'_>,
        _partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// The operand x + β·d of [`LinearOperator::record_direction_apply_dot`], with β on the GPU.
#[derive(Clone, Copy, Debug)]
pub struct Direction<'a> {
    /// x (CG: the residual).
    pub x: BufView<'a>,
    /// d (CG: the previous search direction), as long as x.
    pub d: BufView<'a>,
    /// Where β lives.
    pub scalars: BufView<'a>,
    /// β's index in `scalars`.
    pub beta_index: usize,
}

/// The dimension of a square operator, or [`Error::Shape`].
pub(crate) fn square_dim(op: &dyn LinearOperator) -> Result<usize> {
    let (rows, cols) = op.shape();
    if rows != cols {
        return Err(Error::Shape {
            argument: "operator",
            message: format!("{rows}×{cols} is not square"),
        });
    }
    if rows == 0 {
        return Err(Error::Empty {
            argument: "operator",
        });
    }
    Ok(rows)
}

/// Runs `f` (which records an operator's passes) inside the core's error scope: what wgpu
/// raises while a user's operator records comes back as [`Error::Wgpu`] instead of reaching
/// the device's uncaptured-error handler (wgpu's default panics, on a device an engine made).
pub(crate) fn scoped<'g, T>(
    rec: &mut Recorder<'g>,
    f: impl FnOnce(&mut Recorder<'g>) -> Result<T>,
) -> Result<T> {
    let gpu = rec.gpu();
    gpu.scoped("operator", || f(rec))?
}

/// x and y checked against the operator's shape, named `x` and `y`, disjoint, and each within
/// one storage binding.
fn check_xy<'x, 'y>(
    rec: &Recorder,
    op: &dyn LinearOperator,
    x: BufView<'x>,
    y: BufView<'y>,
) -> Result<(BufView<'x>, BufView<'y>)> {
    let (x, y) = check_lengths(rec, op, x, y)?;
    check_disjoint(&x, &y)?;
    Ok((x, y))
}

/// x and y checked against the operator's shape and named, each within one storage binding.
fn check_lengths<'x, 'y>(
    rec: &Recorder,
    op: &dyn LinearOperator,
    x: BufView<'x>,
    y: BufView<'y>,
) -> Result<(BufView<'x>, BufView<'y>)> {
    let gpu = rec.gpu();
    let (rows, cols) = op.shape();
    let x = x.check(gpu, "x", cols)?;
    let y = y.check(gpu, "y", rows)?;
    binding_limit(gpu, "x", cols)?;
    binding_limit(gpu, "y", rows)?;
    Ok((x, y))
}

/// [`Error::Overlap`] when y overlaps x: no operator has an in-place form.
fn check_disjoint(x: &BufView<'_>, y: &BufView<'_>) -> Result<()> {
    x.refuse_overlap(y, || {
        "y = A·x has no in-place form (a LinearOperator's x and y never alias): pass a \
         separate output"
            .into()
    })
}

fn binding_limit(gpu: &Gpu, argument: &'static str, elems: usize) -> Result<()> {
    let max = gpu.limits().max_storage_buffer_binding_size;
    let bytes = (elems as u64).saturating_mul(4);
    if bytes > max {
        return Err(Error::TooLarge {
            argument,
            requested: bytes,
            limit: "max_storage_buffer_binding_size",
            max,
        });
    }
    Ok(())
}

/// Records y ← M·x for the `rows × cols` row-major matrix `m` whose rows start `stride`
/// elements apart (stride > cols for padded bases).
pub(crate) fn record_strided_matvec(
    rec: &mut Recorder,
    m: BufView<'_>,
    rows: usize,
    cols: usize,
    stride: usize,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    let u = DenseUniform {
        rows: rows as u32,
        cols: cols as u32,
        stride: stride as u32,
        _pad: 0,
    };
    let grid = rec.grid_for_groups(rows as u64)?;
    rec.dispatch(
        &DENSE_MATVEC,
        &rec.wg(),
        &[
            Binding::uniform(&u),
            Binding::storage(m),
            Binding::storage(x),
            Binding::storage(y),
        ],
        grid,
    )
}

/// A dense row-major f32 matrix on the device.
#[derive(Debug)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    data: GpuVec<f32>,
}

impl DenseMatrix {
    /// Uploads `data` (row-major, `rows × cols`).
    pub fn new(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(Error::Empty { argument: "data" });
        }
        let expected = rows.checked_mul(cols).ok_or(Error::Shape {
            argument: "data",
            message: format!("{rows}×{cols} overflows"),
        })?;
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                argument: "data",
                expected,
                actual: data.len(),
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                argument: "data",
                tensor: 0,
                index: i,
            });
        }
        binding_limit(gpu, "data", expected)?;
        Ok(DenseMatrix {
            rows,
            cols,
            data: GpuVec::upload(gpu, data)?,
        })
    }
}

impl LinearOperator for DenseMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// y ← A·x (one dispatch). x and y may share a buffer; overlapping is [`Error::Overlap`].
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let (x, y) = check_xy(rec, self, x, y)?;
        let (r, c) = (self.rows, self.cols);
        record_strided_matvec(rec, self.data.view(), r, c, c, x, y)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        if self.rows != self.cols {
            return Ok(false);
        }
        let d = d.check(rec.gpu(), "d", self.rows)?;
        let u = DenseUniform {
            rows: self.rows as u32,
            cols: self.cols as u32,
            stride: self.cols as u32,
            _pad: 0,
        };
        let grid = rec.elementwise_grid(self.rows as u64)?;
        rec.dispatch(
            &DENSE_DIAGONAL,
            &rec.wg(),
            &[
                Binding::uniform(&u),
                Binding::storage(self.data.view()),
                Binding::storage(d),
            ],
            grid,
        )?;
        Ok(true)
    }
}

/// Longest row (stored entries) a CSR matrix may have for the fused forms: llvmpipe (Vulkan
/// and GL) drops the partial sum of a workgroup in which one invocation loops about 65,535
/// times before the workgroup's barrier (measured: a 65,500-entry row right, 65,530 wrong), so
/// matrices with longer rows take the plain product and a separate dot instead.
pub const CSR_FUSED_ROW_LIMIT: usize = 1 << 15;

/// A CSR sparse matrix on the device, validated on upload and stored as (column, value) pairs.
/// Square matrices whose rows hold at most [`CSR_FUSED_ROW_LIMIT`] entries fuse CG's pᵀAp into
/// their product ([`LinearOperator::record_apply_dot`]); they have no fused direction (gathering
/// p beside r for every entry measured slower than a pass of its own).
#[derive(Debug)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    longest_row: usize,
    row_ptr: GpuVec<u32>,
    /// (column, value bits) per entry.
    entries: GpuVec<u32>,
}

impl CsrMatrix {
    /// Uploads a CSR matrix after checking it: `row_ptr` has rows + 1 monotone entries from 0
    /// to nnz, column indices are in range and strictly increasing within each row, values are
    /// finite.
    pub fn new(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        row_ptr: &[u32],
        col_idx: &[u32],
        values: &[f32],
    ) -> Result<Self> {
        let bad = |message: String| Error::Shape {
            argument: "csr",
            message,
        };
        if rows == 0 || cols == 0 {
            return Err(Error::Empty { argument: "csr" });
        }
        if row_ptr.len() != rows.saturating_add(1) {
            return Err(Error::LengthMismatch {
                argument: "row_ptr",
                expected: rows.saturating_add(1),
                actual: row_ptr.len(),
            });
        }
        if col_idx.len() != values.len() {
            return Err(Error::LengthMismatch {
                argument: "values",
                expected: col_idx.len(),
                actual: values.len(),
            });
        }
        if row_ptr[0] != 0 || row_ptr[rows] as usize != col_idx.len() {
            return Err(bad(format!(
                "row_ptr must run from 0 to nnz = {}, got {}..{}",
                col_idx.len(),
                row_ptr[0],
                row_ptr[rows]
            )));
        }
        // Monotone from 0 to nnz, so every row's range lies inside col_idx.
        if let Some(r) = row_ptr.windows(2).position(|w| w[0] > w[1]) {
            return Err(bad(format!("row_ptr decreases at row {r}")));
        }
        for r in 0..rows {
            let row = &col_idx[row_ptr[r] as usize..row_ptr[r + 1] as usize];
            if let Some(&c) = row.iter().find(|&&c| c as usize >= cols) {
                return Err(bad(format!("row {r}: column {c} out of range 0..{cols}")));
            }
            if row.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!(
                    "row {r}: column indices not strictly increasing"
                )));
            }
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                argument: "values",
                tensor: 0,
                index: i,
            });
        }
        // Two words an entry: one binding holds half as many entries as values.
        binding_limit(gpu, "values", values.len().saturating_mul(2))?;
        binding_limit(gpu, "row_ptr", row_ptr.len())?;
        let longest_row = row_ptr
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        let mut entries = crate::host::vec_with_capacity::<u32>("values", 2 * values.len().max(1))?;
        entries.extend(
            col_idx
                .iter()
                .zip(values)
                .flat_map(|(&c, &v)| [c, v.to_bits()]),
        );
        // Empty matrices still need a bindable buffer.
        if entries.is_empty() {
            entries.extend([0, 0]);
        }
        Ok(CsrMatrix {
            rows,
            cols,
            longest_row,
            row_ptr: GpuVec::upload(gpu, row_ptr)?,
            entries: GpuVec::upload(gpu, &entries)?,
        })
    }

    fn uniform(&self) -> CsrUniform {
        CsrUniform {
            rows: self.rows as u32,
            ..Default::default()
        }
    }

    /// The bindings every CSR kernel starts with (its shape and the matrix), then `rest`.
    fn bindings<'b>(&'b self, u: &'b CsrUniform, rest: &[Binding<'b>]) -> Vec<Binding<'b>> {
        let mut all = vec![
            Binding::uniform(u),
            Binding::storage(self.row_ptr.view()),
            Binding::storage(self.entries.view()),
            Binding::Skip,
        ];
        all.extend_from_slice(rest);
        all
    }

    /// The fused form: y ← A·x with partials of xᵀy over the first 4⌊n/4⌋ rows; `None` for a
    /// non-square matrix or one with a row past [`CSR_FUSED_ROW_LIMIT`].
    fn record_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        if self.rows != self.cols || self.longest_row > CSR_FUSED_ROW_LIMIT {
            return Ok(None);
        }
        let (x, y) = check_xy(rec, self, x, y)?;
        let gpu = rec.gpu();
        let partials = partials.check(gpu, "partials", partials.len())?;
        let u = self.uniform();
        // As many workgroups as a reduction over the rows would take (a row counts as an
        // element): each ends in a tree, and on CPU adapters a workgroup with barriers costs
        // ~6 µs on top (lavapipe, 2 cores: 16 workgroups 100–155 µs, one 25–45 µs).
        let groups = crate::reduce::partial_groups(gpu, self.rows.div_ceil(4) as u64)
            .min(partials.len() as u64);
        let grid = rec.grid_for_groups(groups)?;
        rec.dispatch(
            &CSR_MATVEC_DOT,
            &rec.wg(),
            &self.bindings(
                &u,
                &[
                    Binding::storage(x),
                    Binding::storage(y),
                    Binding::storage(partials),
                ],
            ),
            grid,
        )?;
        Ok(Some(groups))
    }
}

impl LinearOperator for CsrMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// y ← A·x (one dispatch). x and y may share a buffer; overlapping is [`Error::Overlap`].
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let (x, y) = check_xy(rec, self, x, y)?;
        let u = self.uniform();
        let grid = rec.elementwise_grid(self.rows as u64)?;
        rec.dispatch(
            &CSR_MATVEC,
            &rec.wg(),
            &self.bindings(&u, &[Binding::storage(x), Binding::storage(y)]),
            grid,
        )
    }

    /// y ← A·x with xᵀy's partials (square matrices; one dispatch).
    fn record_apply_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        self.record_dot(rec, x, y, partials)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        if self.rows != self.cols {
            return Ok(false);
        }
        let d = d.check(rec.gpu(), "d", self.rows)?;
        let u = self.uniform();
        let grid = rec.elementwise_grid(self.rows as u64)?;
        rec.dispatch(
            &CSR_DIAGONAL,
            &rec.wg(),
            &self.bindings(&u, &[Binding::storage(d)]),
            grid,
        )?;
        Ok(true)
    }
}

/// The matrix-free Poisson operator on an nx × ny (× nz) grid with Dirichlet zero boundary:
/// the unscaled 5-point (2-D) or 7-point (3-D) Laplacian, SPD, index i + nx·(j + ny·k).
///
/// Grids with nx a multiple of 4 apply through the vec4 stencil and fuse CG's dot products
/// and search direction into it ([`LinearOperator::record_apply_dot`],
/// [`LinearOperator::record_direction_apply_dot`]); others through the scalar stencil, without
/// fused forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poisson {
    nx: usize,
    ny: usize,
    nz: usize,
}

impl Poisson {
    /// The 2-D operator (5-point stencil).
    pub fn new_2d(nx: usize, ny: usize) -> Result<Self> {
        Self::new_3d(nx, ny, 1)
    }

    /// The 3-D operator (7-point stencil); nz = 1 gives the 2-D operator.
    pub fn new_3d(nx: usize, ny: usize, nz: usize) -> Result<Self> {
        nx.checked_mul(ny)
            .and_then(|v| v.checked_mul(nz))
            .filter(|&n| n > 0 && n <= u32::MAX as usize)
            .ok_or(Error::Shape {
                argument: "grid",
                message: format!("{nx}×{ny}×{nz} must be non-empty with fewer than 2^32 points"),
            })?;
        Ok(Poisson { nx, ny, nz })
    }

    fn len(&self) -> usize {
        self.nx * self.ny * self.nz
    }

    fn uniform(&self, beta_index: u32) -> GridUniform {
        GridUniform {
            nx: self.nx as u32,
            ny: self.ny as u32,
            nz: self.nz as u32,
            n: self.len() as u32,
            beta_index,
            ..Default::default()
        }
    }

    /// Override constants: the workgroup size, the stencil (5- or 7-point), the walk length
    /// and whether the operand is x + β·d.
    fn constants(&self, rec: &Recorder, direction: bool) -> [(&'static str, f64); 4] {
        let [wg] = rec.wg();
        [
            wg,
            ("POISSON_3D", (self.nz > 1) as u32 as f64),
            ("MARCH", rec.gpu().tuning().stencil_march as f64),
            ("DIRECTION", direction as u32 as f64),
        ]
    }

    /// Walks of the vec4 stencil: one per slab column and run of `stencil_march` slabs.
    fn walks(&self, gpu: &Gpu) -> u64 {
        let (slab4, slabs) = match self.nz {
            1 => (self.nx / 4, self.ny),
            _ => (self.nx / 4 * self.ny, self.nz),
        };
        (slab4 * slabs.div_ceil(gpu.tuning().stencil_march as usize)) as u64
    }

    /// Rows of whole vec4s take the vec4 stencils (2.5× faster on lavapipe).
    fn vec4(&self) -> bool {
        self.nx.is_multiple_of(4)
    }

    /// The vec4 stencil y ← A·x (or A·(x + β·d)), with per-workgroup partials of the
    /// operand's dot with y when `partials` is given; returns the partial count.
    fn record_vec4(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        direction: Option<(BufView<'_>, BufView<'_>, usize)>,
        y: BufView<'_>,
        partials: Option<BufView<'_>>,
    ) -> Result<u64> {
        let (x, y) = check_lengths(rec, self, x, y)?;
        let gpu = rec.gpu();
        let direction = match direction {
            Some((d, scalars, index)) => {
                let d = d.check(gpu, "d", self.len())?;
                let scalars = scalars.check(gpu, "scalars", scalars.len())?;
                if index >= scalars.len() {
                    return Err(Error::Shape {
                        argument: "beta_index",
                        message: format!("{index} is past the {} scalars", scalars.len()),
                    });
                }
                Some((d, scalars, index as u32))
            }
            None => None,
        };
        let partials = match partials {
            Some(p) => Some(p.check(gpu, "partials", p.len())?),
            None => None,
        };
        // The rest (d or β against y, partials against any) the dispatch itself refuses.
        check_disjoint(&x, &y)?;
        let u = self.uniform(direction.map_or(0, |(_, _, i)| i));
        let grid = rec.elementwise_grid(self.walks(gpu))?;
        let mut groups = grid[0] as u64 * grid[1] as u64;
        let (kernel, partial) = match partials {
            Some(p) => {
                groups = groups.min(p.len() as u64);
                (&POISSON_VEC4_DOT, Binding::storage(p))
            }
            None => (&POISSON_VEC4, Binding::Skip),
        };
        // d and β are declared even where DIRECTION is off (a use behind an override still
        // counts): the placeholder stands in, unread.
        let (d, scalars) = match direction {
            Some((d, scalars, _)) => (Binding::storage(d), Binding::storage(scalars)),
            None => (Binding::Placeholder, Binding::Placeholder),
        };
        let constants = self.constants(rec, direction.is_some());
        let grid = rec.grid_for_groups(groups)?;
        rec.dispatch(
            kernel,
            &constants,
            &[
                Binding::uniform(&u),
                Binding::storage(x),
                Binding::storage(y),
                partial,
                d,
                scalars,
            ],
            grid,
        )?;
        Ok(groups)
    }
}

impl LinearOperator for Poisson {
    fn shape(&self) -> (usize, usize) {
        (self.len(), self.len())
    }

    /// y ← A·x (one dispatch). x and y may share a buffer; overlapping is [`Error::Overlap`].
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        if self.vec4() {
            return self.record_vec4(rec, x, None, y, None).map(|_| ());
        }
        let (x, y) = check_xy(rec, self, x, y)?;
        let u = self.uniform(0);
        let constants = self.constants(rec, false);
        let grid = rec.elementwise_grid(self.len() as u64)?;
        rec.dispatch(
            &POISSON,
            &constants,
            &[
                Binding::uniform(&u),
                Binding::storage(x),
                Binding::storage(y),
            ],
            grid,
        )
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        let d = d.check(rec.gpu(), "d", self.len())?;
        record_fill(rec, d, if self.nz == 1 { 4.0 } else { 6.0 })?;
        Ok(true)
    }

    fn record_apply_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        if !self.vec4() {
            return Ok(None);
        }
        self.record_vec4(rec, x, None, y, Some(partials)).map(Some)
    }

    fn record_direction_apply_dot(
        &self,
        rec: &mut Recorder,
        direction: &Direction<'_>,
        y: BufView<'_>,
        partials: BufView<'_>,
    ) -> Result<Option<u64>> {
        if !self.vec4() {
            return Ok(None);
        }
        let Direction {
            x,
            d,
            scalars,
            beta_index,
        } = *direction;
        self.record_vec4(rec, x, Some((d, scalars, beta_index)), y, Some(partials))
            .map(Some)
    }
}

/// A + σ·I.
#[derive(Clone, Copy)]
pub struct Shifted<'a> {
    inner: &'a dyn LinearOperator,
    sigma: f32,
}

impl<'a> Shifted<'a> {
    /// A + σ·I for a square A and finite σ.
    pub fn new(inner: &'a dyn LinearOperator, sigma: f32) -> Result<Self> {
        square_dim(inner)?;
        if !sigma.is_finite() {
            return Err(Error::param("sigma", sigma as f64, "finite"));
        }
        Ok(Shifted { inner, sigma })
    }
}

impl std::fmt::Debug for Shifted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shifted")
            .field("shape", &self.inner.shape())
            .field("sigma", &self.sigma)
            .finish()
    }
}

impl LinearOperator for Shifted<'_> {
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }

    /// y ← A·x, then y += σ·x in a second pass, which reads x again: x and y must not overlap
    /// ([`Error::Overlap`], checked before anything is recorded); they may share a buffer.
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let (x, y) = check_xy(rec, self, x, y)?;
        self.inner.record_apply(rec, x, y)?;
        record_axpy(rec, self.sigma, x, y)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        let d = d.check(rec.gpu(), "d", self.inner.shape().0)?;
        if !self.inner.record_diagonal(rec, d)? {
            return Ok(false);
        }
        let ones = GpuVec::<f32>::zeros(rec.gpu(), d.len())?;
        record_fill(rec, ones.view(), 1.0)?;
        record_axpy(rec, self.sigma, ones.view(), d)?;
        Ok(true)
    }
}

/// diag(A₁, A₂, …): square blocks applied to consecutive ranges of x. Blocks may start at
/// any element: each block's range is copied to an aligned scratch vector and back.
pub struct BlockDiagonal<'a> {
    blocks: Vec<&'a dyn LinearOperator>,
    starts: Vec<usize>,
    scratch_in: Vec<GpuVec<f32>>,
    scratch_out: Vec<GpuVec<f32>>,
    n: usize,
}

impl<'a> BlockDiagonal<'a> {
    /// Composes square blocks.
    pub fn new(gpu: &Gpu, blocks: Vec<&'a dyn LinearOperator>) -> Result<Self> {
        if blocks.is_empty() {
            return Err(Error::Empty { argument: "blocks" });
        }
        let dims = blocks
            .iter()
            .map(|b| square_dim(*b))
            .collect::<Result<Vec<_>>>()?;
        let mut starts = Vec::with_capacity(dims.len());
        let mut n = 0usize;
        for &d in &dims {
            starts.push(n);
            n = n.checked_add(d).ok_or(Error::Shape {
                argument: "blocks",
                message: "the blocks' dimensions overflow".into(),
            })?;
        }
        Ok(BlockDiagonal {
            scratch_in: GpuVec::packed(gpu, &dims)?,
            scratch_out: GpuVec::packed(gpu, &dims)?,
            blocks,
            starts,
            n,
        })
    }
}

impl std::fmt::Debug for BlockDiagonal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDiagonal")
            .field("block_starts", &self.starts)
            .field("n", &self.n)
            .finish()
    }
}

impl LinearOperator for BlockDiagonal<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.n, self.n)
    }

    /// Per block: its range of x copied to scratch, the block applied scratch to scratch, the
    /// result copied into its range of y. Each block reads x after earlier blocks wrote y, so x
    /// and y must not overlap ([`Error::Overlap`], checked before anything is recorded); they
    /// may share a buffer, at any element offsets.
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let (x, y) = check_xy(rec, self, x, y)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let (start, len) = (self.starts[i], self.scratch_in[i].len());
            let sin = self.scratch_in[i].view().named("block x");
            let sout = self.scratch_out[i].view().named("block y");
            record_copy(rec, x, start, sin, 0, len)?;
            block.record_apply(rec, sin, sout)?;
            record_copy(rec, sout, 0, y, start, len)?;
        }
        Ok(())
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        let d = d.check(rec.gpu(), "d", self.n)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let sout = self.scratch_out[i].view().named("block d");
            if !block.record_diagonal(rec, sout)? {
                return Ok(false);
            }
            record_copy(rec, sout, 0, d, self.starts[i], sout.len())?;
        }
        Ok(true)
    }
}

/// A user operator from a closure that records y = A·x with its own dispatches.
pub struct FnOperator<F> {
    rows: usize,
    cols: usize,
    apply: F,
}

impl<F> FnOperator<F>
where
    F: Fn(&mut Recorder, BufView<'_>, BufView<'_>) -> Result<()>,
{
    /// A `rows × cols` operator applied by `apply(rec, x, y)`.
    pub fn new(rows: usize, cols: usize, apply: F) -> Self {
        FnOperator { rows, cols, apply }
    }
}

impl<F> std::fmt::Debug for FnOperator<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnOperator")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl<F> LinearOperator for FnOperator<F>
where
    F: Fn(&mut Recorder, BufView<'_>, BufView<'_>) -> Result<()>,
{
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Checks x and y (lengths, device, disjoint: overlapping is [`Error::Overlap`]) and runs
    /// the closure inside curvgpu's error scope: what wgpu raises while it records (a bind
    /// group that does not fit its layout, say) comes back as [`Error::Wgpu`], not through
    /// the device's uncaptured-error handler; an `Err` of the closure's own comes back as is.
    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let (x, y) = check_xy(rec, self, x, y)?;
        scoped(rec, |rec| (self.apply)(rec, x, y))
    }
}
