//! M-FAC (Frantar, Kurtic & Alistarh, "M-FAC: Efficient Matrix-Free Approximations of
//! Second-Order Information"): products with the inverse of the empirical Fisher
//! F̂ = damp·I + (1/m)·Σ gᵢgᵢᵀ over a sliding window of the last m gradients, as the official
//! `HInvFastUpMulti` computes them. The window G (m×d) lives on the GPU in column chunks, so d
//! is bounded by device memory, not by one storage binding; its m×m Gram matrix is updated by
//! one row and column per gradient (O(dm) on the GPU) and the O(m³) setup runs on the host in
//! f64. [`Mfac::record_ihvp`] → `kernel!("mfac/mfac.wgsl", "row_dots")`, `substitute`,
//! `combine`.

use bytemuck::{Pod, Zeroable};

use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::linalg::{record_gemm, Gemm};
use crate::record::{Binding, Recorder};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ChunkUniform {
    m: u32,
    len: u32,
    stride: u32,
    out_offset: u32,
    chunks: u32,
    lambda: f32,
    _pad: [u32; 2],
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

impl Mfac {
    /// An empty window for gradients of length `d`.
    ///
    /// Errors: d or m zero, damp not finite and > 0, a chunk not a positive multiple of 64,
    /// m past what one chunk's rows can hold in a storage binding.
    pub fn new(gpu: &Gpu, d: usize, config: MfacConfig) -> Result<Self> {
        if d == 0 {
            return Err(Error::Empty { argument: "d" });
        }
        if config.m == 0 {
            return Err(Error::param("m", 0.0, "at least 1"));
        }
        crate::check::positive("damp", config.damp)?;
        let m = config.m;
        // Elements one binding holds, rounded down to a multiple of 64, shared by m rows.
        let binding = (gpu.limits().max_storage_buffer_binding_size / 4).min(u32::MAX as u64);
        let widest = (binding as usize / m) / 64 * 64;
        let chunk = match config.chunk {
            Some(c) if c == 0 || !c.is_multiple_of(64) => {
                return Err(Error::param("chunk", c as f64, "a positive multiple of 64"))
            }
            Some(c) => c.min(widest),
            None => widest,
        };
        if chunk == 0 {
            return Err(Error::TooLarge {
                argument: "m",
                requested: 4 * 64 * m as u64,
                limit: "max_storage_buffer_binding_size (64 elements of every row per chunk)",
                max: 4 * binding,
            });
        }
        let mut chunks = Vec::new();
        for start in (0..d).step_by(chunk) {
            let len = chunk.min(d - start);
            let stride = len.div_ceil(4) * 4;
            chunks.push(Chunk {
                start,
                len,
                stride,
                rows: gpu.zeros(m * stride)?,
            });
        }
        let mut mfac = Mfac {
            d,
            config,
            gram: vec![0.0; m * m],
            next: 0,
            count: 0,
            dmat: gpu.zeros(m * m)?,
            denom: gpu.zeros(m)?,
            coef: gpu.zeros(m * m)?,
            slices: gpu.tuning().dot_slices as usize,
            dots: gpu.zeros(chunks.len() * gpu.tuning().dot_slices as usize * m)?,
            c: gpu.zeros(m)?,
            w: gpu.zeros(m)?,
            chunks,
        };
        mfac.setup(gpu)?;
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

    /// Records every chunk's and slice's share of G·x into `out[base + (k·slices + s)·m ..]`.
    fn record_dots(
        &self,
        rec: &mut Recorder,
        x: BufView<'_>,
        out: &GpuVec<f32>,
        base: usize,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let m = self.config.m;
        // ROWS = 8 rows per workgroup (mfac.wgsl).
        let row_groups = m.div_ceil(8);
        if row_groups > gpu.limits().max_compute_workgroups_per_dimension as usize {
            return Err(Error::TooLarge {
                argument: "m",
                requested: m as u64,
                limit: "max_compute_workgroups_per_dimension (× 8 rows)",
                max: 8 * gpu.limits().max_compute_workgroups_per_dimension as u64,
            });
        }
        let wg = gpu.tuning().workgroup_size;
        let lanes = gpu.tuning().simd_lanes.unwrap_or(wg);
        for (k, ch) in self.chunks.iter().enumerate() {
            let xs = x.sub(ch.start, ch.len);
            // A chunk shorter than one vec4 has no vec4 body: any 16 bytes stand in, unread.
            let body = match ch.len / 4 {
                0 => (ch.rows.view(), None),
                whole => (xs, Some(16 * whole as u64)),
            };
            let u = self.uniform(ch, base + k * self.slices * m);
            rec.dispatch(
                kernel!("mfac/mfac.wgsl", "row_dots"),
                &[("WG", wg as f64), ("LANES", lanes as f64)],
                &[
                    Binding::Uniform(bytemuck::bytes_of(&u)),
                    Binding::Storage(ch.rows.view(), None),
                    Binding::Storage(body.0, body.1),
                    Binding::Storage(ch.rows.view(), None),
                    Binding::Storage(xs, None),
                    Binding::Storage(out.view(), None),
                ],
                [row_groups as u32, self.slices as u32, 1],
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
            _pad: [0; 2],
        }
    }

    /// Replaces the oldest gradient of the window with `g` (length d), updates that row and
    /// column of the Gram matrix (O(dm) on the GPU, one readback of m values per chunk) and
    /// redoes the O(m³) setup on the host in f64. Blocking.
    ///
    /// Errors: a wrong length, non-finite entries in `g` (checked first: they would poison
    /// every later product; the window is left as it was).
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
    /// m = 1024 alone is ~0.2 s on one core. Blocking.
    ///
    /// Errors: as [`Mfac::push`] for any gradient (index in `tensor`), found before the window
    /// changes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn extend(&mut self, gpu: &Gpu, grads: &[BufView<'_>]) -> Result<()> {
        pollster::block_on(self.extend_async(gpu, grads))
    }

    /// Async form of [`Mfac::extend`].
    pub async fn extend_async(&mut self, gpu: &Gpu, grads: &[BufView<'_>]) -> Result<()> {
        for g in grads {
            g.check(gpu, "g", self.d)?;
        }
        crate::finite::ensure_finite_async(gpu, "g", grads).await?;
        if grads.is_empty() {
            return Ok(());
        }
        let m = self.config.m;
        // Gradients pushed more than m places before the last are overwritten within the call.
        let skipped = grads.len().saturating_sub(m);
        let kept = &grads[skipped..];
        let rows: Vec<usize> = (0..kept.len())
            .map(|t| (self.next + skipped + t) % m)
            .collect();
        let mut rec = Recorder::new(gpu);
        for (&g, &at) in kept.iter().zip(&rows) {
            for ch in &self.chunks {
                crate::krylov::operator::record_copy(
                    &mut rec,
                    g,
                    ch.start,
                    ch.rows.view(),
                    at * ch.stride,
                    ch.len,
                )?;
            }
        }
        if let [g] = kept {
            // One gradient (a training step's push): its dots with the window, O(dm).
            self.record_dots(&mut rec, *g, &self.dots, 0)?;
            rec.submit()?;
            let dots = gpu.read_async(&self.dots).await?;
            let at = rows[0];
            for i in 0..m {
                let dot: f64 = dots.iter().skip(i).step_by(m).map(|&v| v as f64).sum();
                self.set_gram(at, i, dot);
            }
        } else {
            self.new_gram_rows(gpu, rec, rows[0], kept.len()).await?;
        }
        self.next = (self.next + grads.len()) % m;
        self.count = (self.count + grads.len()).min(m);
        self.setup(gpu)
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
            let c = gpu.zeros::<f32>(rows * m)?;
            for (k, ch) in self.chunks.iter().enumerate() {
                let shape = Gemm {
                    trans_b: true,
                    beta: if k == 0 { 0.0 } else { 1.0 },
                    ld: [Some(ch.stride), Some(ch.stride), None],
                    offsets: [start * ch.stride, 0, 0],
                    ..Gemm::new(rows, m, ch.len)
                };
                record_gemm(&mut rec, &shape, ch.rows.view(), ch.rows.view(), c.view())?;
            }
            products.push((start, c));
        }
        rec.submit()?;
        for (start, c) in products {
            let c = gpu.read_async(&c).await?;
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
    fn setup(&mut self, gpu: &Gpu) -> Result<()> {
        let m = self.config.m;
        let mf = m as f64;
        let lambda = 1.0 / self.config.damp as f64;
        let mut lu: Vec<f64> = self.gram.iter().map(|v| lambda * v).collect();
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
        let mut dmat = vec![0.0f64; m * m];
        for i in 0..m {
            for j in i..m {
                dmat[i * m + j] = lu[i * m + j] - if i == j { mf } else { 0.0 };
            }
        }
        let denom: Vec<f64> = (0..m).map(|i| mf + dmat[i * m + i]).collect();
        // coef[i][j] = Σ_{j ≤ k < i} −D[k][i]/denom[k]·coef[k][j], coef[i][i] = λ: row i as a
        // sum of the earlier rows (contiguous axpys; the column-wise order was 6× slower).
        let mut coef = vec![0.0f64; m * m];
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
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        gpu.write(&self.dmat, &f32s(&dmat))?;
        gpu.write(&self.denom, &f32s(&denom))?;
        gpu.write(&self.coef, &f32s(&coef))
    }

    /// Records y = F̂⁻¹·x (both length d, distinct): O(dm + m²), two passes over the window.
    pub fn record_ihvp(&self, rec: &mut Recorder, x: BufView<'_>, y: BufView<'_>) -> Result<()> {
        let gpu = rec.gpu();
        x.check(gpu, "x", self.d)?;
        y.check(gpu, "y", self.d)?;
        self.record_dots(rec, x, &self.dots, 0)?;
        let first = self.uniform(&self.chunks[0], 0);
        rec.dispatch(
            kernel!("mfac/mfac.wgsl", "substitute"),
            &gpu.wg_constants(),
            &[
                Binding::Uniform(bytemuck::bytes_of(&first)),
                Binding::Storage(self.dots.view(), None),
                Binding::Storage(self.dmat.view(), None),
                Binding::Storage(self.denom.view(), None),
                Binding::Storage(self.coef.view(), None),
                Binding::Storage(self.c.view(), None),
                Binding::Storage(self.w.view(), None),
            ],
            [1, 1, 1],
        )?;
        for ch in &self.chunks {
            let u = self.uniform(ch, 0);
            let (xs, ys) = (x.sub(ch.start, ch.len), y.sub(ch.start, ch.len));
            let whole = 16 * (ch.len / 4) as u64;
            if whole > 0 {
                rec.dispatch(
                    kernel!("mfac/mfac.wgsl", "combine"),
                    &gpu.wg_constants(),
                    &[
                        Binding::Uniform(bytemuck::bytes_of(&u)),
                        Binding::Storage(ch.rows.view(), None),
                        Binding::Storage(xs, Some(whole)),
                        Binding::Storage(self.w.view(), None),
                        Binding::Storage(ys, Some(whole)),
                    ],
                    gpu.elementwise_grid((ch.len / 4) as u64)?,
                )?;
            }
            if !ch.len.is_multiple_of(4) {
                rec.dispatch(
                    kernel!("mfac/mfac.wgsl", "combine_tail"),
                    &[],
                    &[
                        Binding::Uniform(bytemuck::bytes_of(&u)),
                        Binding::Storage(ch.rows.view(), None),
                        Binding::Storage(xs, None),
                        Binding::Storage(self.w.view(), None),
                        Binding::Storage(ys, None),
                    ],
                    [1, 1, 1],
                )?;
            }
        }
        Ok(())
    }

    /// F̂⁻¹·x into a new vector. Blocking only in that it submits.
    pub fn ihvp<'a>(&self, gpu: &Gpu, x: impl Into<BufView<'a>>) -> Result<GpuVec<f32>> {
        let y = gpu.zeros::<f32>(self.d)?;
        let mut rec = Recorder::new(gpu);
        self.record_ihvp(&mut rec, x.into(), y.view())?;
        rec.submit()?;
        Ok(y)
    }
}
