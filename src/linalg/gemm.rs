//! C = α·op(A)·op(B) + β·C: [`record_gemm`] → `kernel!("linalg/gemm.wgsl", "gemm")`.

use bytemuck::{Pod, Zeroable};

use crate::buffer::BufView;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

/// Rows and columns of C each workgroup computes (`TILE` in gemm.wgsl).
const TILE: u64 = 64;

/// The shape of C = α·op(A)·op(B) + β·C over a batch of equally shaped row-major products:
/// op(A) is m×k (A is stored k×m when `trans_a`), op(B) is k×n (B stored n×k when
/// `trans_b`), C is m×n. Each operand may be a sub-matrix: its leading dimension (elements
/// between row starts, `None`: its stored column count) and its first element's offset in the
/// view; batch item i starts i·(stored rows)·(leading dimension) elements after item 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Columns of op(A), rows of op(B).
    pub k: usize,
    /// A is stored transposed (k×m).
    pub trans_a: bool,
    /// B is stored transposed (n×k).
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C's previous contents; with 0, C is not read (NaN there is ignored, as BLAS).
    pub beta: f32,
    /// Products in the batch (≥ 1).
    pub batch: usize,
    /// The product is symmetric (e.g. XᵀX, or A·Aᵀ): compute the lower triangle and mirror it,
    /// about half the work. Needs m = n, and C symmetric too when β ≠ 0.
    pub symmetric: bool,
    /// Leading dimensions of the stored A, B and C (`None`: packed rows).
    pub ld: [Option<usize>; 3],
    /// Element offsets of A, B and C in their views.
    pub offsets: [usize; 3],
    /// Elements between batch items of A, B and C (`None`: stored rows × leading dimension).
    /// C's items may not overlap.
    pub batch_strides: [Option<usize>; 3],
}

impl Gemm {
    /// C = op(A)·op(B), one packed product, nothing transposed: set the other fields as needed.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            symmetric: false,
            ld: [None; 3],
            offsets: [0; 3],
            batch_strides: [None; 3],
        }
    }

    /// Floating-point operations: 2·m·n·k per product (the multiply-adds of the full product,
    /// whether or not `symmetric` halves the work done).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }

    /// Stored (rows, columns) of A, B and C.
    fn stored(&self) -> [(usize, usize); 3] {
        let t = |rows, cols, trans| if trans { (cols, rows) } else { (rows, cols) };
        [
            t(self.m, self.k, self.trans_a),
            t(self.k, self.n, self.trans_b),
            (self.m, self.n),
        ]
    }

    /// Checks the shape and the views; returns (leading dimension, batch stride, elements
    /// reached) per operand.
    fn check(&self, gpu: &Gpu, views: [&BufView; 3]) -> Result<[(u32, u32, u64); 3]> {
        for (name, v) in [
            ("m", self.m),
            ("n", self.n),
            ("k", self.k),
            ("batch", self.batch),
        ] {
            if v == 0 {
                return Err(Error::Empty { argument: name });
            }
        }
        if !self.alpha.is_finite() {
            return Err(Error::param("alpha", self.alpha as f64, "finite"));
        }
        if !self.beta.is_finite() {
            return Err(Error::param("beta", self.beta as f64, "finite"));
        }
        if self.symmetric && self.m != self.n {
            return Err(Error::Shape {
                argument: "c",
                message: format!("a symmetric product is square, not {}×{}", self.m, self.n),
            });
        }
        // Indices are u32 in the shader and each operand is one binding.
        let limit = (gpu.limits().max_storage_buffer_binding_size / 4).min(u32::MAX as u64);
        let mut out = [(0, 0, 0); 3];
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let (rows, cols) = self.stored()[i];
            let ld = self.ld[i].unwrap_or(cols);
            if ld < cols {
                return Err(Error::Shape {
                    argument: name,
                    message: format!("leading dimension {ld} is below the {cols} stored columns"),
                });
            }
            let item = (rows as u64 - 1) * ld as u64 + cols as u64;
            let stride = self.batch_strides[i].map_or(rows as u64 * ld as u64, |s| s as u64);
            if i == 2 && self.batch > 1 && stride < item {
                return Err(Error::Shape {
                    argument: "c",
                    message: format!("batch stride {stride} overlaps items of {item} elements"),
                });
            }
            let required = self.offsets[i] as u64
                + (self.batch as u64 - 1) * stride
                + (rows as u64 - 1) * ld as u64
                + cols as u64;
            if required > limit {
                return Err(Error::TooLarge {
                    argument: name,
                    requested: 4 * required,
                    limit: "max_storage_buffer_binding_size (or 2^32 elements)",
                    max: 4 * limit,
                });
            }
            let len = views[i].len();
            let packed =
                self.ld[i].is_none() && self.offsets[i] == 0 && self.batch_strides[i].is_none();
            if (packed && len as u64 != required) || (len as u64) < required {
                return Err(Error::LengthMismatch {
                    argument: name,
                    expected: required as usize,
                    actual: len,
                });
            }
            views[i].check(gpu, name, len)?;
            if stride > u32::MAX as u64 {
                return Err(Error::TooLarge {
                    argument: name,
                    requested: stride,
                    limit: "2^32 elements between batch items",
                    max: u32::MAX as u64,
                });
            }
            out[i] = (ld as u32, stride as u32, required);
        }
        Ok(out)
    }

    fn grid(&self, gpu: &Gpu) -> Result<[u32; 3]> {
        let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
        let grid = [
            (self.n as u64).div_ceil(TILE),
            (self.m as u64).div_ceil(TILE),
            self.batch as u64,
        ];
        if let Some(&over) = grid.iter().find(|&&g| g > max) {
            return Err(Error::TooLarge {
                argument: "gemm grid",
                requested: over,
                limit: "max_compute_workgroups_per_dimension",
                max,
            });
        }
        Ok(grid.map(|g| g as u32))
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GemmUniform {
    m: u32,
    n: u32,
    k: u32,
    ld: [u32; 3],
    offsets: [u32; 3],
    strides: [u32; 3],
    alpha: f32,
    beta: f32,
    _pad: [u32; 2],
}

/// Records C = α·op(A)·op(B) + β·C (see [`Gemm`]); `c` must not alias `a` or `b`.
///
/// Errors: a zero dimension or batch, non-finite α or β, a leading dimension below the stored
/// columns, views of the wrong length (packed operands must match exactly, sub-matrices must
/// fit), a non-square symmetric product, an operand past one storage binding or a grid past
/// `max_compute_workgroups_per_dimension` ([`Error::TooLarge`] names the limit).
pub fn record_gemm(
    rec: &mut Recorder,
    shape: &Gemm,
    a: BufView<'_>,
    b: BufView<'_>,
    c: BufView<'_>,
) -> Result<()> {
    record_gemm_with(rec, shape, a, b, c, shape.symmetric)
}

/// [`record_gemm`], with a symmetric product's mirroring optional (a factorisation that only
/// reads lower triangles skips it).
pub(crate) fn record_gemm_with(
    rec: &mut Recorder,
    shape: &Gemm,
    a: BufView<'_>,
    b: BufView<'_>,
    c: BufView<'_>,
    mirror: bool,
) -> Result<()> {
    let gpu = rec.gpu();
    let layout = shape.check(gpu, [&a, &b, &c])?;
    let grid = shape.grid(gpu)?;
    let u = GemmUniform {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        ld: layout.map(|(ld, _, _)| ld),
        offsets: shape.offsets.map(|o| o as u32),
        strides: layout.map(|(_, s, _)| s),
        alpha: shape.alpha,
        beta: shape.beta,
        _pad: [0; 2],
    };
    let constants = [
        ("TRANS_A", shape.trans_a as u32 as f64),
        ("TRANS_B", shape.trans_b as u32 as f64),
        ("LOWER", shape.symmetric as u32 as f64),
    ];
    let bytes = bytemuck::bytes_of(&u);
    rec.dispatch(
        kernel!("linalg/gemm.wgsl", "gemm"),
        &constants,
        &[
            Binding::Uniform(bytes),
            // Only the elements the product reaches: a sub-matrix of a large buffer binds
            // within the storage-binding limit.
            Binding::Storage(a, Some(4 * layout[0].2)),
            Binding::Storage(b, Some(4 * layout[1].2)),
            Binding::Storage(c, Some(4 * layout[2].2)),
        ],
        grid,
    )?;
    if shape.symmetric && mirror {
        let side = (shape.n as u64).div_ceil(16) as u32;
        rec.dispatch(
            kernel!("linalg/gemm.wgsl", "mirror_lower"),
            &[("LOWER", 1.0)],
            &[
                Binding::Uniform(bytes),
                Binding::Skip,
                Binding::Skip,
                Binding::Storage(c, Some(4 * layout[2].2)),
            ],
            [side, side, grid[2]],
        )?;
    }
    Ok(())
}

/// C = α·op(A)·op(B) into a new packed vector (β, C's leading dimension and offset are
/// ignored: there is no previous C). Errors: as [`record_gemm`]. The native wrapper of
/// [`gemm_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn gemm<'a>(
    gpu: &Gpu,
    shape: &Gemm,
    a: impl Into<BufView<'a>>,
    b: impl Into<BufView<'a>>,
) -> Result<crate::buffer::GpuVec<f32>> {
    pollster::block_on(gemm_async(gpu, shape, a, b))
}

/// Async form of [`gemm`], the one implementation. It records and submits without reading
/// anything back, so it is ready on its first poll; it is async so that the browser and native
/// code call the convenience forms of `linalg` alike.
pub async fn gemm_async<'a>(
    gpu: &Gpu,
    shape: &Gemm,
    a: impl Into<BufView<'a>>,
    b: impl Into<BufView<'a>>,
) -> Result<crate::buffer::GpuVec<f32>> {
    if shape.m == 0 || shape.n == 0 || shape.batch == 0 {
        return Err(Error::Empty { argument: "c" });
    }
    let len = shape
        .m
        .checked_mul(shape.n)
        .and_then(|e| e.checked_mul(shape.batch))
        .ok_or(Error::TooLarge {
            argument: "c",
            requested: u64::MAX,
            limit: "usize",
            max: usize::MAX as u64,
        })?;
    let c = gpu.zeros::<f32>(len)?;
    let mut rec = Recorder::new(gpu);
    let shape = Gemm {
        beta: 0.0,
        ld: [shape.ld[0], shape.ld[1], None],
        offsets: [shape.offsets[0], shape.offsets[1], 0],
        ..*shape
    };
    record_gemm(&mut rec, &shape, a.into(), b.into(), c.view())?;
    rec.submit()?;
    Ok(c)
}
