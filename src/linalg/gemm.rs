//! C = α·op(A)·op(B) + β·C: [`record_gemm`] → [`GEMM`] (`shaders/linalg/gemm.wgsl`'s `gemm`)
//! and, for a symmetric product, [`MIRROR_LOWER`].

use std::ops::Range;

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

/// Rows and columns of C each workgroup computes (`TILE` in gemm.wgsl).
const TILE: u64 = 64;

crate::kernel::uniform_struct! {
    /// `gemm`'s and `mirror_lower`'s shape: dimensions, leading dimensions, element offsets
    /// and batch strides of A, B and C, the scales.
    pub(crate) struct GemmUniform {
        m: u32, n: u32, k: u32,
        lda: u32, ldb: u32, ldc: u32,
        offset_a: u32, offset_b: u32, offset_c: u32,
        stride_a: u32, stride_b: u32, stride_c: u32,
        alpha: f32, beta: f32, _pad0: u32, _pad1: u32,
    }
}

/// One 64×64 tile of C per workgroup.
pub(crate) static GEMM: Kernel = Kernel::new(
    &shader::GEMM,
    "gemm",
    &[
        uniform::<GemmUniform>(),
        Slot::Read("a"),
        Slot::Read("b"),
        Slot::Write("c"),
    ],
);
/// Copies a symmetric product's lower triangle over its upper one (reads C only).
pub(crate) static MIRROR_LOWER: Kernel = Kernel::new(
    &shader::GEMM,
    "mirror_lower",
    &[
        uniform::<GemmUniform>(),
        Slot::Gap,
        Slot::Gap,
        Slot::Write("c"),
    ],
);

/// An operand as the shader indexes it: (leading dimension, batch stride, elements reached).
type Operand = (u32, u32, u64);

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

    /// Checks the shape and the views; returns the views named `a`, `b`, `c` and per operand
    /// (leading dimension, batch stride, elements reached).
    fn check<'v>(
        &self,
        gpu: &Gpu,
        views: [BufView<'v>; 3],
    ) -> Result<([BufView<'v>; 3], [Operand; 3])> {
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
        let mut named = views;
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let (rows, cols) = self.stored()[i];
            let ld = self.ld[i].unwrap_or(cols);
            if ld < cols {
                return Err(Error::Shape {
                    argument: name,
                    message: format!("leading dimension {ld} is below the {cols} stored columns"),
                });
            }
            let (rows, cols, ld) = (rows as u64, cols as u64, ld as u64);
            // Saturating: a size past u64 is past the limit all the same.
            let item = (rows - 1).saturating_mul(ld).saturating_add(cols);
            let stride = self.batch_strides[i].map_or(rows.saturating_mul(ld), |s| s as u64);
            if i == 2 && self.batch > 1 && stride < item {
                return Err(Error::Shape {
                    argument: "c",
                    message: format!("batch stride {stride} overlaps items of {item} elements"),
                });
            }
            let required = (self.offsets[i] as u64)
                .saturating_add((self.batch as u64 - 1).saturating_mul(stride))
                .saturating_add(item);
            if required > limit {
                return Err(Error::TooLarge {
                    argument: name,
                    requested: 4u64.saturating_mul(required),
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
            named[i] = views[i].check(gpu, name, len)?;
            // Only batches of several items step by the stride (then it is below `required`).
            let stride = if self.batch > 1 { stride } else { 0 };
            // With one stored row the leading dimension multiplies only row 0.
            let ld = if rows > 1 { ld } else { cols };
            out[i] = (ld as u32, stride as u32, required);
        }
        Ok((named, out))
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

/// Records C = α·op(A)·op(B) + β·C (see [`Gemm`]).
///
/// `a`, `b` and `c` may be views of one buffer (an engine's arena) where C's bytes are
/// disjoint from A's and B's. `a` and `b` may overlap, or be the same view (XᵀX, with
/// `trans_a`), also when C lies in their buffer: they are then read through one binding.
/// **No in-place form**: as in BLAS, C may not overlap A or B (each entry of C is written
/// while other workgroups still read A and B); an overlap is [`Error::Overlap`] naming `a`
/// (or `b`) and `c`. Only the elements the product reaches count: a view longer than its
/// sub-matrix may overlap another view past its last reached element.
///
/// Errors: a zero dimension or batch, non-finite α or β, a leading dimension below the stored
/// columns, views of the wrong length (packed operands must match exactly, sub-matrices must
/// fit), a non-square symmetric product, an operand past one storage binding or a grid past
/// `max_compute_workgroups_per_dimension` ([`Error::TooLarge`] names the limit), C
/// overlapping A or B ([`Error::Overlap`]).
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
    let ([a, b, c], layout) = shape.check(gpu, [a, b, c])?;
    let grid = shape.grid(gpu)?;
    // Only the elements the product reaches are bound: a sub-matrix of a large buffer binds
    // within the storage-binding limit, and only those bytes count as overlapping.
    let reach = |v: &BufView<'_>, elements: u64| v.byte_offset()..v.byte_offset() + 4 * elements;
    let (ra, rb, rc) = (
        reach(&a, layout[0].2),
        reach(&b, layout[1].2),
        reach(&c, layout[2].2),
    );
    let meet = |x: &Range<u64>, y: &Range<u64>| x.start < y.end && y.start < x.end;
    // C against each operand first, so that the error names the operand even where A and B
    // are bound as one.
    for (operand, range) in [(&a, &ra), (&b, &rb)] {
        if operand.buffer() == c.buffer() && meet(range, &rc) {
            let name = operand.name().unwrap_or("a");
            return Err(Error::Overlap {
                first: name.into(),
                second: "c".into(),
                first_bytes: range.clone(),
                second_bytes: rc.clone(),
                why: format!(
                    "gemm writes `c` while reading `{name}`; as in BLAS there is no in-place \
                     product: pass a separate output"
                ),
            });
        }
    }
    let mut offsets = shape.offsets;
    // A and B overlapping in one buffer (XᵀX: one view) are read through one binding: two
    // overlapping read bindings would both be promoted to writable where C shares their
    // buffer, and WebGPU refuses that.
    let union = (a.buffer() == b.buffer() && meet(&ra, &rb))
        .then(|| ra.start.min(rb.start)..ra.end.max(rb.end))
        .filter(|u| (u.end - u.start) / 4 <= super::cholesky::binding_elements(gpu));
    let (a_binding, b_binding) = match &union {
        Some(u) => {
            offsets[0] += ((ra.start - u.start) / 4) as usize;
            offsets[1] += ((rb.start - u.start) / 4) as usize;
            let low = if ra.start <= rb.start { a } else { b };
            (
                Binding::Storage(low, Some(u.end - u.start)),
                Binding::Placeholder,
            )
        }
        None => (
            Binding::Storage(a, Some(ra.end - ra.start)),
            Binding::Storage(b, Some(rb.end - rb.start)),
        ),
    };
    let c_binding = Binding::Storage(c, Some(rc.end - rc.start));
    let u = GemmUniform {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        lda: layout[0].0,
        ldb: layout[1].0,
        ldc: layout[2].0,
        offset_a: offsets[0] as u32,
        offset_b: offsets[1] as u32,
        offset_c: offsets[2] as u32,
        stride_a: layout[0].1,
        stride_b: layout[1].1,
        stride_c: layout[2].1,
        alpha: shape.alpha,
        beta: shape.beta,
        _pad0: 0,
        _pad1: 0,
    };
    let constants = [
        ("TRANS_A", shape.trans_a as u32 as f64),
        ("TRANS_B", shape.trans_b as u32 as f64),
        ("LOWER", shape.symmetric as u32 as f64),
        ("B_IN_A", union.is_some() as u32 as f64),
    ];
    rec.dispatch(
        &GEMM,
        &constants,
        &[Binding::uniform(&u), a_binding, b_binding, c_binding],
        grid,
    )?;
    if shape.symmetric && mirror {
        let side = (shape.n as u64).div_ceil(16) as u32;
        rec.dispatch(
            &MIRROR_LOWER,
            &[],
            &[
                Binding::uniform(&u),
                Binding::Skip,
                Binding::Skip,
                c_binding,
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
) -> Result<GpuVec<f32>> {
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
) -> Result<GpuVec<f32>> {
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
    let shape = Gemm {
        beta: 0.0,
        ld: [shape.ld[0], shape.ld[1], None],
        offsets: [shape.offsets[0], shape.offsets[1], 0],
        batch_strides: [shape.batch_strides[0], shape.batch_strides[1], None],
        ..*shape
    };
    let (a, b) = (a.into(), b.into());
    // The whole check before C is allocated: C's size against the binding limit first.
    let limit = (gpu.limits().max_storage_buffer_binding_size / 4).min(u32::MAX as u64);
    if len as u64 > limit {
        return Err(Error::TooLarge {
            argument: "c",
            requested: 4u64.saturating_mul(len as u64),
            limit: "max_storage_buffer_binding_size (or 2^32 elements)",
            max: 4 * limit,
        });
    }
    let c = GpuVec::<f32>::zeros(gpu, len)?;
    let mut rec = Recorder::new(gpu);
    record_gemm(&mut rec, &shape, a, b, c.view())?;
    rec.submit()?;
    Ok(c)
}
