//! [`LinearOperator`]: anything that records y = A·x, and the built-in operators:
//! `DenseMatrix::record_apply` → `kernel!("krylov/operators.wgsl", "dense_matvec")`.

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

/// A linear map the solvers and spectrum tools can apply without seeing its entries.
///
/// Implement it to plug in anything that can record y = A·x into a [`Recorder`]: a model's
/// Hessian-vector product written in your own WGSL (see [`Recorder::dispatch_raw`]), a learned
/// preconditioner, a composition of the built-in operators. `FnOperator` wraps a closure.
pub trait LinearOperator {
    /// (rows, columns).
    fn shape(&self) -> (usize, usize);

    /// Records y ← A·x. `x` has `columns` elements, `y` has `rows`; they never alias.
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
    /// pᵀAp: fusing saves a pass over p and q every iteration.
    fn record_apply_dot(
        &self,
        _rec: &mut Recorder,
        _x: BufView<'_>,
        _y: BufView<'_>,
        _partials: &GpuVec<f32>,
    ) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Records y ← A·(x + β·d) fused with (x + β·d)ᵀy, β read on the GPU from
    /// `direction.scalars[direction.beta_index]`; x and d are left as they are. Partial sums as
    /// in [`LinearOperator::record_apply_dot`]. `Ok(None)` (the default) means the operator
    /// cannot, and unpreconditioned CG forms p = r + β·p in a pass of its own first: the fused
    /// form saves that pass every iteration.
    fn record_direction_apply_dot(
        &self,
        _rec: &mut Recorder,
        _direction: &Direction<'_>,
        _y: BufView<'_>,
        _partials: &GpuVec<f32>,
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

fn check_xy(rec: &Recorder, op: &dyn LinearOperator, x: &BufView, y: &BufView) -> Result<()> {
    let (rows, cols) = op.shape();
    x.check(rec.gpu(), "x", cols)?;
    y.check(rec.gpu(), "y", rows)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Dims {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Axpy {
    n: u32,
    alpha: f32,
    _pad: [u32; 2],
}

fn binding_limit(gpu: &Gpu, argument: &'static str, elems: usize) -> Result<()> {
    let max = gpu.limits().max_storage_buffer_binding_size;
    if 4 * elems as u64 > max {
        return Err(Error::TooLarge {
            argument,
            requested: 4 * elems as u64,
            limit: "max_storage_buffer_binding_size",
            max,
        });
    }
    Ok(())
}

/// Records y ← α everywhere.
pub(crate) fn record_fill(rec: &mut Recorder, y: BufView<'_>, alpha: f32) -> Result<()> {
    let gpu = rec.gpu();
    let u = Axpy {
        n: y.len() as u32,
        alpha,
        _pad: [0; 2],
    };
    rec.dispatch(
        kernel!("krylov/operators.wgsl", "fill"),
        &gpu.wg_constants(),
        &[
            Binding::Uniform(bytemuck::bytes_of(&u)),
            Binding::Storage(y, None),
        ],
        gpu.elementwise_grid(y.len() as u64)?,
    )
}

/// Records y ← y + α·x.
pub(crate) fn record_axpy(
    rec: &mut Recorder,
    alpha: f32,
    x: BufView<'_>,
    y: BufView<'_>,
) -> Result<()> {
    let gpu = rec.gpu();
    let u = Axpy {
        n: y.len() as u32,
        alpha,
        _pad: [0; 2],
    };
    rec.dispatch(
        kernel!("krylov/operators.wgsl", "axpy_inplace"),
        &gpu.wg_constants(),
        &[
            Binding::Uniform(bytemuck::bytes_of(&u)),
            Binding::Storage(x, None),
            Binding::Storage(y, None),
        ],
        gpu.elementwise_grid(y.len() as u64)?,
    )
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
    let gpu = rec.gpu();
    let u = Dims {
        a: rows as u32,
        b: cols as u32,
        c: stride as u32,
        d: 0,
    };
    rec.dispatch(
        kernel!("krylov/operators.wgsl", "dense_matvec"),
        &gpu.wg_constants(),
        &[
            Binding::Uniform(bytemuck::bytes_of(&u)),
            Binding::Storage(m, None),
            Binding::Storage(x, None),
            Binding::Storage(y, None),
        ],
        gpu.grid_for_groups(rows as u64)?,
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
            data: gpu.upload(data)?,
        })
    }
}

impl LinearOperator for DenseMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        check_xy(rec, self, &x, &y)?;
        let (r, c) = (self.rows, self.cols);
        record_strided_matvec(rec, self.data.view(), r, c, c, x, y)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        if self.rows != self.cols {
            return Ok(false);
        }
        let gpu = rec.gpu();
        d.check(gpu, "d", self.rows)?;
        let u = Dims {
            a: self.rows as u32,
            b: self.cols as u32,
            c: self.cols as u32,
            d: 0,
        };
        rec.dispatch(
            kernel!("krylov/operators.wgsl", "dense_diagonal"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(self.data.view(), None),
                Binding::Storage(d, None),
            ],
            gpu.elementwise_grid(self.rows as u64)?,
        )?;
        Ok(true)
    }
}

/// A CSR sparse matrix on the device, validated on upload.
#[derive(Debug)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_ptr: GpuVec<u32>,
    col_idx: GpuVec<u32>,
    values: GpuVec<f32>,
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
        if row_ptr.len() != rows + 1 {
            return Err(Error::LengthMismatch {
                argument: "row_ptr",
                expected: rows + 1,
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
        binding_limit(gpu, "values", values.len())?;
        // Empty matrices still need a bindable buffer.
        let (col_idx, values): (&[u32], &[f32]) = if values.is_empty() {
            (&[0], &[0.0])
        } else {
            (col_idx, values)
        };
        Ok(CsrMatrix {
            rows,
            cols,
            row_ptr: gpu.upload(row_ptr)?,
            col_idx: gpu.upload(col_idx)?,
            values: gpu.upload(values)?,
        })
    }

    fn bindings<'a>(
        &'a self,
        u: &'a [u8],
        v: BufView<'a>,
        w: Option<BufView<'a>>,
    ) -> Vec<Binding<'a>> {
        let mut b = vec![
            Binding::Uniform(u),
            Binding::Storage(self.row_ptr.view(), None),
            Binding::Storage(self.col_idx.view(), None),
            Binding::Storage(self.values.view(), None),
            Binding::Storage(v, None),
        ];
        b.extend(w.map(|w| Binding::Storage(w, None)));
        b
    }
}

impl LinearOperator for CsrMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        check_xy(rec, self, &x, &y)?;
        let gpu = rec.gpu();
        let u = Dims {
            a: self.rows as u32,
            b: 0,
            c: 0,
            d: 0,
        };
        rec.dispatch(
            kernel!("krylov/operators.wgsl", "csr_matvec"),
            &gpu.wg_constants(),
            &self.bindings(bytemuck::bytes_of(&u), x, Some(y)),
            gpu.elementwise_grid(self.rows as u64)?,
        )
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        if self.rows != self.cols {
            return Ok(false);
        }
        let gpu = rec.gpu();
        d.check(gpu, "d", self.rows)?;
        let u = Dims {
            a: self.rows as u32,
            b: 0,
            c: 0,
            d: 0,
        };
        rec.dispatch(
            kernel!("krylov/operators.wgsl", "csr_diagonal"),
            &gpu.wg_constants(),
            &self.bindings(bytemuck::bytes_of(&u), d, None),
            gpu.elementwise_grid(self.rows as u64)?,
        )?;
        Ok(true)
    }
}

/// The matrix-free Poisson operator on an nx × ny (× nz) grid with Dirichlet zero boundary:
/// the unscaled 5-point (2-D) or 7-point (3-D) Laplacian, SPD, index i + nx·(j + ny·k).
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

    /// Override constants: the workgroup size, the stencil (5- or 7-point), the walk length
    /// and whether the operand is x + β·d.
    fn constants(&self, gpu: &Gpu, direction: bool) -> [(&'static str, f64); 4] {
        let [wg] = gpu.wg_constants();
        [
            wg,
            ("POISSON_3D", (self.nz > 1) as u32 as f64),
            ("MARCH", gpu.tuning().stencil_march as f64),
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
        partials: Option<&GpuVec<f32>>,
    ) -> Result<u64> {
        check_xy(rec, self, &x, &y)?;
        let gpu = rec.gpu();
        let beta_index = match direction {
            Some((d, scalars, index)) => {
                d.check(gpu, "d", self.len())?;
                if index >= scalars.len() {
                    return Err(Error::Shape {
                        argument: "beta_index",
                        message: format!("{index} is past the {} scalars", scalars.len()),
                    });
                }
                index as u32
            }
            None => 0,
        };
        let u = PoissonUniform {
            nx: self.nx as u32,
            ny: self.ny as u32,
            nz: self.nz as u32,
            n: self.len() as u32,
            beta_index,
            _pad: [0; 3],
        };
        let grid = gpu.elementwise_grid(self.walks(gpu))?;
        let mut groups = grid[0] as u64 * grid[1] as u64;
        let mut bindings = vec![
            Binding::Uniform(bytemuck::bytes_of(&u)),
            Binding::Storage(x, None),
            Binding::Storage(y, None),
        ];
        let kernel = match partials {
            Some(p) => {
                groups = groups.min(p.len() as u64);
                bindings.push(Binding::Storage(p.view(), None));
                kernel!("krylov/operators.wgsl", "poisson_vec4_dot")
            }
            None => {
                bindings.push(Binding::Skip);
                kernel!("krylov/operators.wgsl", "poisson_vec4")
            }
        };
        // The layout holds d and β even where DIRECTION is off (bindings are reachable
        // before overrides apply): x stands in, unread.
        let (d, scalars) = direction.map_or((x, x), |(d, scalars, _)| (d, scalars));
        bindings.extend([
            Binding::Storage(x, None),
            Binding::Storage(d, None),
            Binding::Storage(d, None),
            Binding::Storage(scalars, None),
        ]);
        rec.dispatch(
            kernel,
            &self.constants(gpu, direction.is_some()),
            &bindings,
            gpu.grid_for_groups(groups)?,
        )?;
        Ok(groups)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PoissonUniform {
    nx: u32,
    ny: u32,
    nz: u32,
    n: u32,
    beta_index: u32,
    _pad: [u32; 3],
}

impl LinearOperator for Poisson {
    fn shape(&self) -> (usize, usize) {
        (self.len(), self.len())
    }

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        if self.vec4() {
            return self.record_vec4(rec, x, None, y, None).map(|_| ());
        }
        check_xy(rec, self, &x, &y)?;
        let gpu = rec.gpu();
        let u = PoissonUniform {
            nx: self.nx as u32,
            ny: self.ny as u32,
            nz: self.nz as u32,
            n: self.len() as u32,
            beta_index: 0,
            _pad: [0; 3],
        };
        rec.dispatch(
            kernel!("krylov/operators.wgsl", "poisson"),
            &self.constants(gpu, false),
            &[
                Binding::Uniform(bytemuck::bytes_of(&u)),
                Binding::Storage(x, None),
                Binding::Storage(y, None),
            ],
            gpu.elementwise_grid(self.len() as u64)?,
        )
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        d.check(rec.gpu(), "d", self.len())?;
        record_fill(rec, d, if self.nz == 1 { 4.0 } else { 6.0 })?;
        Ok(true)
    }

    fn record_apply_dot(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        y: BufView<'_>,
        partials: &GpuVec<f32>,
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
        partials: &GpuVec<f32>,
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

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        self.inner.record_apply(rec, x, y)?;
        record_axpy(rec, self.sigma, x, y)
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        if !self.inner.record_diagonal(rec, d)? {
            return Ok(false);
        }
        let gpu = rec.gpu();
        let ones = gpu.zeros::<f32>(d.len())?;
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
        let mut n = 0;
        for &d in &dims {
            starts.push(n);
            n += d;
        }
        Ok(BlockDiagonal {
            scratch_in: gpu.packed(&dims)?,
            scratch_out: gpu.packed(&dims)?,
            blocks,
            starts,
            n,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CopyRange {
    n: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad: u32,
}

/// Records dst[dst_offset..][..n] = src[src_offset..][..n] (element offsets, any alignment).
pub(crate) fn record_copy(
    rec: &mut Recorder,
    src: BufView<'_>,
    src_offset: usize,
    dst: BufView<'_>,
    dst_offset: usize,
    n: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let u = CopyRange {
        n: n as u32,
        src_offset: src_offset as u32,
        dst_offset: dst_offset as u32,
        _pad: 0,
    };
    rec.dispatch(
        kernel!("common/copy.wgsl", "copy_range"),
        &gpu.wg_constants(),
        &[
            Binding::Uniform(bytemuck::bytes_of(&u)),
            Binding::Storage(src, None),
            Binding::Storage(dst, None),
        ],
        gpu.elementwise_grid(n as u64)?,
    )
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

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        check_xy(rec, self, &x, &y)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let (start, len) = (self.starts[i], self.scratch_in[i].len());
            let (sin, sout) = (self.scratch_in[i].view(), self.scratch_out[i].view());
            record_copy(rec, x, start, sin, 0, len)?;
            block.record_apply(rec, sin, sout)?;
            record_copy(rec, sout, 0, y, start, len)?;
        }
        Ok(())
    }

    fn record_diagonal(&self, rec: &mut Recorder, d: BufView<'_>) -> Result<bool> {
        d.check(rec.gpu(), "d", self.n)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let sout = self.scratch_out[i].view();
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

    fn record_apply(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        check_xy(rec, self, &x, &y)?;
        (self.apply)(rec, x, y)
    }
}
