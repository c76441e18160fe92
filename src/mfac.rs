//! M-FAC (Frantar, Kurtic & Alistarh, "M-FAC: Efficient Matrix-Free Approximations of
//! Second-Order Information"): products with the inverse of the empirical Fisher
//! F̂ = damp·I + (1/m)·Σ gᵢgᵢᵀ over a sliding window of the last m gradients, as the official
//! `HInvFastUpMulti` computes them. The window G (m×d) lives on the GPU in column chunks, so d
//! is bounded by device memory, not by one storage binding; its m×m Gram matrix is updated by
//! one row and column per gradient (O(dm) on the GPU) and the O(m³) setup runs on the host in
//! f64. [`Mfac::record_ihvp`] → `ROW_DOTS`, `SUBSTITUTE`, `COMBINE` and
//! `COMBINE_TAIL` (`shaders/mfac/mfac.wgsl`); [`Mfac::extend`] → `crate::vector`'s copy,
//! `ROW_DOTS` or `linalg::record_gemm`.

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::linalg::{binding_elements, check_binding, record_gemm, Gemm};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// One chunk of the window (mfac.wgsl's `Chunk`).
    pub(crate) struct ChunkUniform {
        m: u32, len: u32, stride: u32, out_offset: u32, chunks: u32, lambda: f32, _pad0: u32,
        _pad1: u32,
    }
}

/// Rows of the window per `row_dots` workgroup (`ROWS` in mfac.wgsl).
const ROWS: usize = 8;

/// One chunk's and column slice's share of G·x (vec4 body and scalar tail in one pass).
pub(crate) static ROW_DOTS: Kernel = Kernel::new(
    &shader::MFAC,
    "row_dots",
    &[
        uniform::<ChunkUniform>(),
        Slot::Read("window"),
        Slot::Read("x"),
        Slot::Read("window_tail"),
        Slot::Read("x_tail"),
        Slot::Write("dots"),
    ],
);
/// c = λ·G·x, its forward substitution and w (one workgroup).
pub(crate) static SUBSTITUTE: Kernel = Kernel::new(
    &shader::MFAC,
    "substitute",
    &[
        uniform::<ChunkUniform>(),
        Slot::Read("dots"),
        Slot::Read("dmat"),
        Slot::Read("denom"),
        Slot::Read("coef"),
        Slot::Write("c"),
        Slot::Write("w"),
    ],
);
const COMBINE_SLOTS: &[Slot] = &[
    uniform::<ChunkUniform>(),
    Slot::Read("window"),
    Slot::Read("x"),
    Slot::Read("w"),
    Slot::Write("y"),
];
/// y = λ·x − Gᵀ·w over a chunk's whole vec4s.
pub(crate) static COMBINE: Kernel = Kernel::new(&shader::MFAC, "combine", COMBINE_SLOTS);
/// The same over its last len % 4 elements.
pub(crate) static COMBINE_TAIL: Kernel = Kernel::new(&shader::MFAC, "combine_tail", COMBINE_SLOTS);

/// The kernels of this module.
pub(crate) static KERNELS: &[&Kernel] = &[&ROW_DOTS, &SUBSTITUTE, &COMBINE, &COMBINE_TAIL];

/// M-FAC's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MfacConfig {
    /// Gradients in the window (official default 1024); any m ≥ 1.
    pub m: usize,
    /// Damping of F̂ (official default 1e-5); finite and > 0.
    pub damp: f32,
    /// Gradient elements per storage chunk of the window; `None` takes as many as one storage
    /// binding holds (a multiple of 64, so every chunk's views stay aligned).
    pub chunk: Option<usize>,
}

impl Default for MfacConfig {
    fn default() -> Self {
        MfacConfig {
            m: 1024,
            damp: 1e-5,
            chunk: None,
        }
    }
}

/// One column chunk of the window: gradient elements [start, start + len).
struct Chunk {
    start: usize,
    len: usize,
    stride: usize,
    rows: GpuVec<f32>,
}

/// The window, its Gram matrix and the setup's D, denom and B.
pub struct Mfac {
    d: usize,
    config: MfacConfig,
    chunks: Vec<Chunk>,
    gram: Vec<f64>,
    next: usize,
    count: usize,
    dmat: GpuVec<f32>,
    denom: GpuVec<f32>,
    coef: GpuVec<f32>,
    /// Column slices of `row_dots` ([`crate::Tuning::dot_slices`] when made).
    slices: usize,
    dots: GpuVec<f32>,
    c: GpuVec<f32>,
    w: GpuVec<f32>,
}

impl std::fmt::Debug for Mfac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mfac")
            .field("d", &self.d)
            .field("config", &self.config)
            .field("chunks", &self.chunks.len())
            .field("gradients", &self.count)
            .finish()
    }
}

/// `elements` f32s (as bytes) against the device's `max_buffer_size`, [`Error::TooLarge`]
/// naming `argument`.
fn check_buffer(gpu: &Gpu, argument: &'static str, elements: u64) -> Result<()> {
    let max = gpu.limits().max_buffer_size;
    let bytes = elements.saturating_mul(4);
    if bytes > max {
        return Err(Error::TooLarge {
            argument,
            requested: bytes,
            limit: "max_buffer_size",
            max,
        });
    }
    Ok(())
}

/// `a`·`b` elements as u64 (saturating: past u64 is past every limit all the same).
fn product(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

impl Mfac {
    /// An empty window for gradients of length `d`.
    ///
    /// Every size is checked before anything is allocated: the m×m matrices D and B on the
    /// device and each chunk's m rows against one storage binding and `max_buffer_size`, and
    /// ⌈m/8⌉ row-dot workgroups against `max_compute_workgroups_per_dimension`
    /// ([`Error::TooLarge`] naming `m`, or `d` for the number of chunks); then the host's f64
    /// Gram matrix (m² · 8 bytes, [`Error::HostMemory`] naming `m`).
    ///
    /// Errors: d or m zero, damp not finite and > 0, a chunk not a positive multiple of 64,
    /// the sizes above.
    pub fn new(gpu: &Gpu, d: usize, config: MfacConfig) -> Result<Self> {
        if d == 0 {
            return Err(Error::Empty { argument: "d" });
        }
        if config.m == 0 {
            return Err(Error::param("m", 0.0, "at least 1"));
        }
        crate::check::positive("damp", config.damp)?;
        let m = config.m;
        if let Some(c) = config.chunk {
            if c == 0 || !c.is_multiple_of(64) {
                return Err(Error::param("chunk", c as f64, "a positive multiple of 64"));
            }
        }
        // D and B are m×m on the device (and the Gram matrix m×m on the host).
        check_binding(gpu, "m", product(m, m))?;
        check_buffer(gpu, "m", product(m, m))?;
        let max_grid = gpu.limits().max_compute_workgroups_per_dimension as u64;
        if m.div_ceil(ROWS) as u64 > max_grid {
            return Err(Error::TooLarge {
                argument: "m",
                requested: m as u64,
                limit: "max_compute_workgroups_per_dimension (× 8 rows)",
                max: ROWS as u64 * max_grid,
            });
        }
        // Elements of each row per chunk: as many as m rows of them fit one binding and one
        // buffer, rounded down to a multiple of 64 (so every chunk's views stay aligned).
        let binding = binding_elements(gpu).min(gpu.limits().max_buffer_size / 4);
        let widest = ((binding / m as u64) / 64 * 64).min(usize::MAX as u64) as usize;
        if widest == 0 {
            return Err(Error::TooLarge {
                argument: "m",
                requested: product(4 * 64, m),
                limit: "max_storage_buffer_binding_size (64 elements of every row per chunk)",
                max: 4 * binding,
            });
        }
        let chunk = config.chunk.map_or(widest, |c| c.min(widest));
        let count = d.div_ceil(chunk);
        let slices = gpu.tuning().dot_slices.max(1) as usize;
        // The partial dots: m per chunk and slice, one binding, u32 offsets.
        check_binding(gpu, "d", product(count, slices).saturating_mul(m as u64))?;
        let mut chunks = crate::host::vec_with_capacity("d", count)?;
        let gram = crate::host::filled("m", m * m, 0.0f64)?;
        for start in (0..d).step_by(chunk) {
            let len = chunk.min(d - start);
            let stride = len.div_ceil(4) * 4;
            chunks.push(Chunk {
                start,
                len,
                stride,
                rows: GpuVec::zeros(gpu, m * stride)?,
            });
        }
        let mut mfac = Mfac {
            d,
            config,
            gram,
            next: 0,
            count: 0,
            dmat: GpuVec::zeros(gpu, m * m)?,
            denom: GpuVec::zeros(gpu, m)?,
            coef: GpuVec::zeros(gpu, m * m)?,
            slices,
            dots: GpuVec::zeros(gpu, count * slices * m)?,
            c: GpuVec::zeros(gpu, m)?,
            w: GpuVec::zeros(gpu, m)?,
            chunks,
        };
        mfac.setup()?;
        Ok(mfac)
    }

    /// Gradients in the window (at most m).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True before the first [`Mfac::push`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records every chunk's and slice's share of G·x into `self.dots` (chunk k's slice s at
    /// (k·slices + s)·m).
    fn record_dots(&self, rec: &mut Recorder, x: BufView<'_>) -> Result<()> {
        let m = self.config.m;
        let tuning = rec.gpu().tuning();
        let wg = tuning.workgroup_size;
        let lanes = tuning.simd_lanes.unwrap_or(wg);
        let constants = [("WG", wg as f64), ("LANES", lanes as f64)];
        let dots = self.dots.view().named("dots");
        for (k, ch) in self.chunks.iter().enumerate() {
            let window = ch.rows.view().named("window");
            let xs = x.sub(ch.start, ch.len);
            let whole = ch.len / 4;
            // A chunk without whole vec4s has no body, one without a tail no tail: the
            // bindings the kernel does not read then are placeholders.
            let (window4, x4) = match whole {
                0 => (Binding::Placeholder, Binding::Placeholder),
                _ => (
                    Binding::storage(window),
                    Binding::Storage(xs, Some(16 * whole as u64)),
                ),
            };
            let (window1, x1) = match ch.len % 4 {
                0 => (Binding::Placeholder, Binding::Placeholder),
                _ => (Binding::storage(window), Binding::storage(xs)),
            };
            let u = self.uniform(ch, k * self.slices * m);
            rec.dispatch(
                &ROW_DOTS,
                &constants,
                &[
                    Binding::uniform(&u),
                    window4,
                    x4,
                    window1,
                    x1,
                    Binding::storage(dots),
                ],
                [m.div_ceil(ROWS) as u32, self.slices as u32, 1],
            )?;
        }
        Ok(())
    }

    fn uniform(&self, ch: &Chunk, out_offset: usize) -> ChunkUniform {
        ChunkUniform {
            m: self.config.m as u32,
            len: ch.len as u32,
            stride: ch.stride as u32,
            out_offset: out_offset as u32,
            chunks: (self.chunks.len() * self.slices) as u32,
            lambda: 1.0 / self.config.damp,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// Replaces the oldest gradient of the window with `g` (length d), updates that row and
    /// column of the Gram matrix (O(dm) on the GPU, one readback of m values per chunk) and
    /// redoes the O(m³) setup on the host in f64. `g` may be a view of any buffer (an
    /// engine's arena); it is only read. Blocking.
    ///
    /// Errors: a wrong length, non-finite entries in `g` (checked first: they would poison
    /// every later product; the window is left as it was), [`Error::HostMemory`] for the
    /// setup's m×m f64 matrices.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn push<'a>(&mut self, gpu: &Gpu, g: impl Into<BufView<'a>>) -> Result<()> {
        pollster::block_on(self.push_async(gpu, g))
    }

    /// Async form of [`Mfac::push`].
    pub async fn push_async<'a>(&mut self, gpu: &Gpu, g: impl Into<BufView<'a>>) -> Result<()> {
        self.extend_async(gpu, &[g.into()]).await
    }

    /// Pushes `grads` in order (as many [`Mfac::push`]es, the ring wrapping past m) with one
    /// O(m³) setup at the end instead of one per gradient, and the k new rows of the Gram
    /// matrix as one GEMM per chunk (O(kmd)): the way to fill a window. On lavapipe, filling
    /// m = 1030 at d = 1031 took ~1 s this way against ~30 s pushing one by one; the setup at
    /// m = 1024 alone is ~0.2 s on one core. The gradients may be views of one buffer
    /// (overlapping or not: they are only read). Blocking.
    ///
    /// Errors: as [`Mfac::push`] for any gradient (argument `g`, index in `tensor`), found
    /// before the window changes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn extend(&mut self, gpu: &Gpu, grads: &[BufView<'_>]) -> Result<()> {
        pollster::block_on(self.extend_async(gpu, grads))
    }

    /// Async form of [`Mfac::extend`].
    pub async fn extend_async(&mut self, gpu: &Gpu, grads: &[BufView<'_>]) -> Result<()> {
        let mut named = crate::host::vec_with_capacity("grads", grads.len())?;
        for g in grads {
            named.push(g.check(gpu, "g", self.d)?);
        }
        crate::finite::ensure_finite_async(gpu, "g", &named).await?;
        if named.is_empty() {
            return Ok(());
        }
        let m = self.config.m;
        // Gradients pushed more than m places before the last are overwritten within the call.
        let skipped = named.len().saturating_sub(m);
        let kept = &named[skipped..];
        let rows: Vec<usize> = (0..kept.len())
            .map(|t| (self.next + skipped + t) % m)
            .collect();
        let mut rec = Recorder::new(gpu);
        for (&g, &at) in kept.iter().zip(&rows) {
            for ch in &self.chunks {
                let window = ch.rows.view().named("window");
                crate::vector::record_copy(&mut rec, g, ch.start, window, at * ch.stride, ch.len)?;
            }
        }
        if let [g] = kept {
            // One gradient (a training step's push): its dots with the window, O(dm).
            self.record_dots(&mut rec, *g)?;
            rec.submit()?;
            let dots = self.dots.read_async().await?;
            let at = rows[0];
            for i in 0..m {
                let dot: f64 = dots.iter().skip(i).step_by(m).map(|&v| v as f64).sum();
                self.set_gram(at, i, dot);
            }
        } else {
            self.new_gram_rows(gpu, rec, rows[0], kept.len()).await?;
        }
        self.next = (self.next + named.len()) % m;
        self.count = (self.count + named.len()).min(m);
        self.setup()
    }

    /// Rows `first ..` (`count` of them, wrapping past m) of G·Gᵀ from the final window: one
    /// GEMM per chunk and contiguous run of rows (two when the run wraps), accumulated over the
    /// chunks, submitted after what `rec` holds; one readback per run.
    async fn new_gram_rows(
        &mut self,
        gpu: &Gpu,
        mut rec: Recorder<'_>,
        first: usize,
        count: usize,
    ) -> Result<()> {
        let m = self.config.m;
        let runs = if first + count <= m {
            vec![(first, count)]
        } else {
            vec![(first, m - first), (0, first + count - m)]
        };
        let mut products = Vec::new();
        for &(start, rows) in &runs {
            let c = GpuVec::<f32>::zeros(gpu, rows * m)?;
            for (k, ch) in self.chunks.iter().enumerate() {
                let shape = Gemm {
                    trans_b: true,
                    beta: if k == 0 { 0.0 } else { 1.0 },
                    ld: [Some(ch.stride), Some(ch.stride), None],
                    offsets: [start * ch.stride, 0, 0],
                    ..Gemm::new(rows, m, ch.len)
                };
                let window = ch.rows.view().named("window");
                record_gemm(
                    &mut rec,
                    &shape,
                    window,
                    window,
                    c.view().named("gram_rows"),
                )?;
            }
            products.push((start, c));
        }
        rec.submit()?;
        for (start, c) in products {
            let c = c.read_async().await?;
            for (t, row) in c.chunks_exact(m).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    self.set_gram(start + t, i, v as f64);
                }
            }
        }
        Ok(())
    }

    fn set_gram(&mut self, i: usize, j: usize, v: f64) {
        let m = self.config.m;
        self.gram[i * m + j] = v;
        self.gram[j * m + i] = v;
    }

    /// The official setup in f64 from the Gram matrix: D = triu(LU_nopivot(λ·GGᵀ + m·I) −
    /// m·I), denom = m + diag(D), B = λ·I with B[i, :i] = (−Dᵀ ⊘ denom)[i, :i]·B[:i, :i].
    /// Its m×m host matrices are allocated fallibly ([`Error::HostMemory`] naming `m`).
    fn setup(&mut self) -> Result<()> {
        let m = self.config.m;
        let mf = m as f64;
        let lambda = 1.0 / self.config.damp as f64;
        let mut lu = crate::host::vec_with_capacity("m", m * m)?;
        lu.extend(self.gram.iter().map(|v| lambda * v));
        for i in 0..m {
            lu[i * m + i] += mf;
        }
        // Without pivoting: λ·GGᵀ + m·I is SPD, so every pivot is ≥ m > 0.
        // Only U (the upper triangle) is used: each Schur complement of a symmetric matrix is
        // symmetric, so row i's multiplier is U[k][i]/U[k][k] and the upper half suffices.
        for k in 0..m {
            let (upper, lower) = lu.split_at_mut((k + 1) * m);
            let pivot_row = &upper[k * m..];
            for (r, row) in lower.chunks_exact_mut(m).enumerate() {
                let i = k + 1 + r;
                let f = pivot_row[i] / pivot_row[k];
                for (a, &p) in row[i..].iter_mut().zip(&pivot_row[i..]) {
                    *a -= f * p;
                }
            }
        }
        // D overwrites the LU's upper triangle (the strict lower one is left unread).
        let mut dmat = lu;
        for i in 0..m {
            dmat[i * m + i] -= mf;
            dmat[i * m..i * m + i].fill(0.0);
        }
        let denom: Vec<f64> = (0..m).map(|i| mf + dmat[i * m + i]).collect();
        // coef[i][j] = Σ_{j ≤ k < i} −D[k][i]/denom[k]·coef[k][j], coef[i][i] = λ: row i as a
        // sum of the earlier rows (contiguous axpys; the column-wise order was 6× slower).
        let mut coef = crate::host::filled("m", m * m, 0.0f64)?;
        for i in 0..m {
            let (done, rest) = coef.split_at_mut(i * m);
            let row = &mut rest[..m];
            for k in 0..i {
                let s = -dmat[k * m + i] / denom[k];
                for (c, &p) in row[..=k].iter_mut().zip(&done[k * m..=k * m + k]) {
                    *c += s * p;
                }
            }
            row[i] = lambda;
        }
        let f32s = |v: &[f64]| -> Result<Vec<f32>> {
            let mut out = crate::host::vec_with_capacity("m", v.len())?;
            out.extend(v.iter().map(|&x| x as f32));
            Ok(out)
        };
        self.dmat.write(&f32s(&dmat)?)?;
        self.denom.write(&f32s(&denom)?)?;
        self.coef.write(&f32s(&coef)?)
    }

    /// Records y = F̂⁻¹·x (both length d): O(dm + m²), two passes over the window.
    ///
    /// `x` and `y` may be disjoint views of one buffer (an engine's arena). **In place**
    /// (`y` the very view `x` is: same buffer, offset and length) is supported: G·x is
    /// formed from all of x before any of y is written, and each entry of y then needs only
    /// its own entry of x. Views that overlap otherwise are [`Error::Overlap`] naming `x` and
    /// `y`: a chunk of y written over entries of x that a later chunk still reads would be
    /// silently wrong.
    ///
    /// Errors: lengths, devices, the overlap.
    pub fn record_ihvp(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let gpu = rec.gpu();
        let x = x.check(gpu, "x", self.d)?;
        let y = y.check(gpu, "y", self.d)?;
        let in_place = x.is_same(&y);
        if !in_place {
            x.refuse_overlap(&y, || {
                "y is written chunk by chunk over entries of x still to be read; pass the same \
                 view (in place) or disjoint views"
                    .into()
            })?;
        }
        self.record_dots(rec, x)?;
        let first = self.uniform(&self.chunks[0], 0);
        fn st<'v>(v: &'v GpuVec<f32>, name: &'static str) -> Binding<'v> {
            Binding::storage(v.view().named(name))
        }
        rec.dispatch(
            &SUBSTITUTE,
            &rec.wg(),
            &[
                Binding::uniform(&first),
                st(&self.dots, "dots"),
                st(&self.dmat, "dmat"),
                st(&self.denom, "denom"),
                st(&self.coef, "coef"),
                st(&self.c, "c"),
                st(&self.w, "w"),
            ],
            [1, 1, 1],
        )?;
        let constants = [rec.wg()[0], ("X_IN_Y", in_place as u32 as f64)];
        for ch in &self.chunks {
            let u = self.uniform(ch, 0);
            let (xs, ys) = (x.sub(ch.start, ch.len), y.sub(ch.start, ch.len));
            let window = Binding::storage(ch.rows.view().named("window"));
            let whole = 16 * (ch.len / 4) as u64;
            if whole > 0 {
                let x4 = match in_place {
                    true => Binding::Placeholder,
                    false => Binding::Storage(xs, Some(whole)),
                };
                let grid = rec.elementwise_grid((ch.len / 4) as u64)?;
                rec.dispatch(
                    &COMBINE,
                    &constants,
                    &[
                        Binding::uniform(&u),
                        window,
                        x4,
                        st(&self.w, "w"),
                        Binding::Storage(ys, Some(whole)),
                    ],
                    grid,
                )?;
            }
            if !ch.len.is_multiple_of(4) {
                let x1 = match in_place {
                    true => Binding::Placeholder,
                    false => Binding::storage(xs),
                };
                rec.dispatch(
                    &COMBINE_TAIL,
                    &[("X_IN_Y", in_place as u32 as f64)],
                    &[
                        Binding::uniform(&u),
                        window,
                        x1,
                        st(&self.w, "w"),
                        Binding::storage(ys),
                    ],
                    [1, 1, 1],
                )?;
            }
        }
        Ok(())
    }

    /// F̂⁻¹·x into a new vector. Blocking only in that it submits.
    pub fn ihvp<'a>(&self, gpu: &Gpu, x: impl Into<BufView<'a>>) -> Result<GpuVec<f32>> {
        let x = x.into().check(gpu, "x", self.d)?;
        let y = GpuVec::<f32>::zeros(gpu, self.d)?;
        let mut rec = Recorder::new(gpu);
        self.record_ihvp(&mut rec, x, y.view())?;
        rec.submit()?;
        Ok(y)
    }
}
