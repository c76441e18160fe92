//! Batched Cholesky factorisation and SPD inverse for factors of mixed sizes packed in one
//! buffer: [`record_cholesky`] → [`CHOLESKY_BLOCK`], [`FORWARD_SUBSTITUTION`]
//! (`shaders/linalg/cholesky.wgsl`) and `gemm.wgsl`'s trailing update.
//!
//! Both read only the lower triangle of their input (as LAPACK's `potrf` with `uplo = 'L'`):
//! the strict upper triangle may hold anything, NaN included.

use super::gemm::{record_gemm_with, Gemm};
use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

/// Columns per block of the blocked factorisation (`NB` in cholesky.wgsl).
const NB: usize = 32;

crate::kernel::uniform_struct! {
    /// One step of the blocked factorisation or of a substitution (cholesky.wgsl's `Block`).
    pub(crate) struct Block {
        n: u32, offset: u32, j0: u32, nb: u32, factor: u32,
        l_offset: u32, l_ld: u32, rhs: u32, rhs_offset: u32, rhs_step: u32, elem_step: u32,
        copy_step: u32, copy_elem: u32, l_zstride: u32, rhs_zstride: u32, copy_zstride: u32,
    }
}

/// Factors one diagonal block in one workgroup.
pub(crate) static CHOLESKY_BLOCK: Kernel = Kernel::new(
    &shader::CHOLESKY,
    "cholesky_block",
    &[
        uniform::<Block>(),
        Slot::Write("factors"),
        Slot::Write("status"),
        Slot::Write("block"),
    ],
);
/// L·x = b for many right-hand sides, each solution copied out as well.
pub(crate) static FORWARD_SUBSTITUTION: Kernel = Kernel::new(
    &shader::CHOLESKY,
    "forward_substitution",
    &[
        uniform::<Block>(),
        Slot::Read("lower"),
        Slot::Write("rhs"),
        Slot::Write("solution"),
    ],
);
/// n×n identities (the right-hand sides whose solve gives L⁻¹).
pub(crate) static IDENTITY: Kernel = Kernel::new(
    &shader::CHOLESKY,
    "identity",
    &[uniform::<Block>(), Slot::Write("out")],
);

/// Square row-major matrices stored back to back: matrix i is `sizes[i]`² elements starting
/// where matrix i − 1 ends.
#[derive(Clone, Debug)]
pub struct Batch {
    sizes: Vec<usize>,
    offsets: Vec<usize>,
    total: usize,
}

impl Batch {
    /// The layout of matrices of the given sides (each ≥ 1), in order.
    ///
    /// Errors: no sizes, a side 0, more than 2³² elements in all ([`Error::TooLarge`]).
    pub fn new(sizes: &[usize]) -> Result<Self> {
        if sizes.is_empty() {
            return Err(Error::Empty { argument: "sizes" });
        }
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0usize;
        for (i, &n) in sizes.iter().enumerate() {
            if n == 0 {
                return Err(Error::Shape {
                    argument: "sizes",
                    message: format!("matrix {i} has side 0"),
                });
            }
            offsets.push(total);
            total = n
                .checked_mul(n)
                .and_then(|e| e.checked_add(total))
                .filter(|&t| t <= u32::MAX as usize)
                .ok_or(Error::TooLarge {
                    argument: "sizes",
                    requested: (n as u64)
                        .saturating_mul(n as u64)
                        .saturating_add(total as u64)
                        .saturating_mul(4),
                    limit: "2^32 elements in one batch",
                    max: 4 * u32::MAX as u64,
                })?;
        }
        Ok(Batch {
            sizes: sizes.to_vec(),
            offsets,
            total,
        })
    }

    /// Matrix sides.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// First element of matrix `i`.
    pub fn offset(&self, i: usize) -> usize {
        self.offsets[i]
    }

    /// Elements of the whole batch.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Every matrix of the batch set to I, packed (e.g. to start running factors).
    ///
    /// Errors: [`Error::HostMemory`] when the host cannot hold the batch.
    pub fn identities(&self) -> Result<Vec<f32>> {
        let mut data = crate::host::filled("sizes", self.total, 0.0f32)?;
        for (&n, &at) in self.sizes.iter().zip(&self.offsets) {
            for d in 0..n {
                data[at + d * (n + 1)] = 1.0;
            }
        }
        Ok(data)
    }

    /// Always false: a batch holds at least one matrix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Runs of consecutive equally sized matrices, as (first matrix, count, side), each at
    /// most `most(side)` matrices long: each run goes through a batched kernel's steps
    /// together (grid z).
    pub(crate) fn runs(&self, most: impl Fn(usize) -> usize) -> Vec<(usize, usize, usize)> {
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for (i, &n) in self.sizes.iter().enumerate() {
            match out.last_mut() {
                Some((_, count, side)) if *side == n && *count < most(n).max(1) => *count += 1,
                _ => out.push((i, 1, n)),
            }
        }
        out
    }
}

/// Elements one storage binding holds (and u32 indices reach).
pub(crate) fn binding_elements(gpu: &Gpu) -> u64 {
    (gpu.limits().max_storage_buffer_binding_size / 4).min(u32::MAX as u64)
}

/// `elements` f32s against one storage binding, [`Error::TooLarge`] naming `argument`.
pub(crate) fn check_binding(gpu: &Gpu, argument: &'static str, elements: u64) -> Result<()> {
    let limit = binding_elements(gpu);
    if elements > limit {
        return Err(Error::TooLarge {
            argument,
            requested: elements.saturating_mul(4),
            limit: "max_storage_buffer_binding_size (or 2^32 elements)",
            max: 4 * limit,
        });
    }
    Ok(())
}

/// The runs the factorisation steps through: at most `max_compute_workgroups_per_dimension`
/// matrices (grid z), and few enough that the run's scratch (NB² per matrix for the block,
/// n·NB for the panel, n² for L⁻¹) fits one storage binding.
fn factor_runs(gpu: &Gpu, batch: &Batch) -> Vec<(usize, usize, usize)> {
    let grid = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let binding = binding_elements(gpu) as usize;
    batch.runs(|n| grid.min(binding / (NB * NB).max(n * NB).max(n * n)))
}

/// Scratch space and the per-matrix status words of a batched factorisation, sized for a
/// batch; reusable for any batch with as many matrices and none larger.
pub struct CholeskyWorkspace {
    status: GpuVec<u32>,
    block: GpuVec<f32>,
    panel: GpuVec<f32>,
    lower_inverse: GpuVec<f32>,
}

impl std::fmt::Debug for CholeskyWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CholeskyWorkspace")
            .field("matrices", &(self.status.len() / 2))
            .finish_non_exhaustive()
    }
}

impl CholeskyWorkspace {
    /// Workspace for `batch` (the inverse needs a run-of-matrices-sized scratch as well).
    ///
    /// Errors: a batch past one storage binding ([`Error::TooLarge`] naming `batch`), checked
    /// before anything is allocated.
    pub fn new(gpu: &Gpu, batch: &Batch) -> Result<Self> {
        check_binding(gpu, "batch", batch.total as u64)?;
        check_binding(gpu, "batch", 2 * batch.sizes.len() as u64)?;
        let runs = factor_runs(gpu, batch);
        let most = |f: &dyn Fn(usize, usize) -> usize| {
            runs.iter()
                .map(|&(_, c, n)| f(c, n))
                .max()
                .unwrap_or(1)
                .max(1)
        };
        Ok(CholeskyWorkspace {
            status: GpuVec::zeros(gpu, 2 * batch.sizes.len())?,
            block: GpuVec::zeros(gpu, most(&|c, _| c * NB * NB))?,
            panel: GpuVec::zeros(gpu, most(&|c, n| c * n * NB))?,
            lower_inverse: GpuVec::zeros(gpu, most(&|c, n| c * n * n))?,
        })
    }

    fn fits(&self, gpu: &Gpu, batch: &Batch) -> Result<()> {
        let fits = 2 * batch.sizes.len() <= self.status.len()
            && factor_runs(gpu, batch).iter().all(|&(_, c, n)| {
                c * NB * NB <= self.block.len()
                    && c * n * NB <= self.panel.len()
                    && c * n * n <= self.lower_inverse.len()
            });
        if !fits {
            return Err(Error::Shape {
                argument: "workspace",
                message: format!(
                    "made for a smaller batch than {} matrices of sides {:?}",
                    batch.sizes.len(),
                    batch.sizes
                ),
            });
        }
        Ok(())
    }

    fn status(&self) -> BufView<'_> {
        self.status.view().named("status")
    }

    /// Reads the status words: the first matrix whose factorisation met a pivot that is not
    /// positive and finite, as [`Error::NotPositiveDefinite`]. Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check(&self, gpu: &Gpu, argument: &'static str) -> Result<()> {
        pollster::block_on(self.check_async(gpu, argument))
    }

    /// Async form of [`CholeskyWorkspace::check`].
    pub async fn check_async(&self, gpu: &Gpu, argument: &'static str) -> Result<()> {
        if !self.status.belongs_to(gpu) {
            return Err(Error::WrongDevice {
                argument: "workspace",
            });
        }
        let words = self.status.read_async().await?;
        match words.chunks(2).position(|w| w[0] != 0) {
            Some(factor) => Err(Error::NotPositiveDefinite {
                argument,
                factor,
                pivot: words[2 * factor] as usize - 1,
                value: f32::from_bits(words[2 * factor + 1]),
            }),
            None => Ok(()),
        }
    }
}

/// `view` named `name`, holding `batch` within one storage binding.
fn check_batch<'a>(
    gpu: &Gpu,
    name: &'static str,
    view: &BufView<'a>,
    batch: &Batch,
) -> Result<BufView<'a>> {
    check_binding(gpu, name, batch.total as u64)?;
    view.check(gpu, name, batch.total)
}

/// L·x = b for the right-hand sides described by `b` (in `rhs`), L the lower triangle of an
/// nb×nb block; each solution also goes to `copy`; `count` runs of them (grid z).
struct Solve<'a> {
    lower: BufView<'a>,
    rhs: BufView<'a>,
    copy: BufView<'a>,
    block: Block,
    count: usize,
}

fn record_solve(rec: &mut Recorder, s: Solve<'_>) -> Result<()> {
    let groups = (s.block.rhs as u64).div_ceil(256);
    let [x, y, _] = rec.grid_for_groups(groups)?;
    rec.dispatch(
        &FORWARD_SUBSTITUTION,
        &[],
        &[
            Binding::uniform(&s.block),
            Binding::storage(s.lower),
            Binding::storage(s.rhs),
            Binding::storage(s.copy),
        ],
        [x, y, s.count as u32],
    )
}

/// Records the in-place factorisation A = L·Lᵀ of every matrix of `batch` in `factors`, as
/// LAPACK's `potrf` overwrites A: **only the lower triangle of each matrix is read** (the
/// strict upper triangle may hold anything, NaN included), L overwrites it and the strict
/// upper triangle is set to 0. Runs of equally sized matrices are factored together, one set
/// of dispatches per 32-column block. Pivots that are not positive and finite are recorded in
/// the workspace's status: call [`CholeskyWorkspace::check`] after submitting.
///
/// `factors` may be a view of a larger buffer (an engine's arena): nothing outside it is
/// touched.
///
/// Errors: `factors` not holding the batch, a workspace too small, a batch past one storage
/// binding.
pub fn record_cholesky(
    rec: &mut Recorder,
    batch: &Batch,
    factors: BufView<'_>,
    workspace: &CholeskyWorkspace,
) -> Result<()> {
    let gpu = rec.gpu();
    let factors = check_batch(gpu, "factors", &factors, batch)?;
    workspace.fits(gpu, batch)?;
    record_factor(rec, batch, factors, workspace)
}

/// [`record_cholesky`] after its checks.
fn record_factor(
    rec: &mut Recorder,
    batch: &Batch,
    factors: BufView<'_>,
    workspace: &CholeskyWorkspace,
) -> Result<()> {
    let gpu = rec.gpu();
    // 0.0f32 is the all-zero word: the status words start clear.
    crate::vector::record_fill(rec, workspace.status(), 0.0)?;
    let (block_scratch, panel) = (
        workspace.block.view().named("block"),
        workspace.panel.view().named("panel"),
    );
    for (first, count, n) in factor_runs(gpu, batch) {
        let offset = batch.offsets[first];
        for j0 in (0..n).step_by(NB) {
            let nb = NB.min(n - j0);
            let block = Block {
                n: n as u32,
                offset: offset as u32,
                j0: j0 as u32,
                nb: nb as u32,
                factor: first as u32,
                ..Default::default()
            };
            rec.dispatch(
                &CHOLESKY_BLOCK,
                &[],
                &[
                    Binding::uniform(&block),
                    Binding::storage(factors),
                    Binding::storage(workspace.status()),
                    Binding::storage(block_scratch),
                ],
                [1, 1, count as u32],
            )?;
            let below = n - j0 - nb;
            if below == 0 {
                continue;
            }
            // L21 = A21·L11⁻ᵀ: row i of the panel solves L11·x = a_i.
            record_solve(
                rec,
                Solve {
                    lower: block_scratch,
                    rhs: factors,
                    copy: panel,
                    block: Block {
                        nb: nb as u32,
                        l_offset: 0,
                        l_ld: NB as u32,
                        rhs: below as u32,
                        rhs_offset: (offset + (j0 + nb) * n + j0) as u32,
                        rhs_step: n as u32,
                        elem_step: 1,
                        copy_step: NB as u32,
                        copy_elem: 1,
                        l_zstride: (NB * NB) as u32,
                        rhs_zstride: (n * n) as u32,
                        copy_zstride: (n * NB) as u32,
                        ..Default::default()
                    },
                    count,
                },
            )?;
            // A22 −= L21·L21ᵀ, lower triangle only (it reads and writes no other entries).
            let update = Gemm {
                trans_b: true,
                alpha: -1.0,
                beta: 1.0,
                symmetric: true,
                batch: count,
                ld: [Some(NB), Some(NB), Some(n)],
                offsets: [0, 0, offset + (j0 + nb) * (n + 1)],
                batch_strides: [Some(n * NB), Some(n * NB), Some(n * n)],
                ..Gemm::new(below, below, nb)
            };
            record_gemm_with(rec, &update, panel, panel, factors, false)?;
        }
    }
    Ok(())
}

/// Records the inverses of the SPD matrices of `batch`: factors them in place (as
/// [`record_cholesky`]: **only the lower triangle of each matrix is read**), forms X = L⁻¹ by
/// blocked forward substitution and writes A⁻¹ = XᵀX (symmetric, both triangles) into
/// `inverses` (same layout as `factors`). Check the workspace afterwards.
///
/// `factors` and `inverses` may be disjoint views of one buffer. **In place** (`inverses` the
/// very view `factors` is: same buffer, offset and length) is supported, as LAPACK's `potri`
/// overwrites A with A⁻¹: each run of matrices reads its factors only before its inverses are
/// written, and no run reads another's; `factors` then ends holding A⁻¹, not L. Views that
/// overlap otherwise are [`Error::Overlap`]: an inverse written over a factor that a later
/// matrix still reads would be silently wrong.
///
/// Errors: as [`record_cholesky`] (for either view), and the overlap.
pub fn record_spd_inverse(
    rec: &mut Recorder,
    batch: &Batch,
    factors: BufView<'_>,
    inverses: BufView<'_>,
    workspace: &CholeskyWorkspace,
) -> Result<()> {
    let gpu = rec.gpu();
    let factors = check_batch(gpu, "factors", &factors, batch)?;
    let inverses = check_batch(gpu, "inverses", &inverses, batch)?;
    if !factors.is_same(&inverses) {
        factors.refuse_overlap(&inverses, || {
            "the inverses would overwrite factors still to be read; pass the same view (in \
             place) or disjoint views"
                .into()
        })?;
    }
    workspace.fits(gpu, batch)?;
    record_factor(rec, batch, factors, workspace)?;
    let x = workspace.lower_inverse.view().named("lower_inverse");
    let panel = workspace.panel.view().named("panel");
    for (first, count, n) in factor_runs(gpu, batch) {
        let offset = batch.offsets[first];
        let ident = Block {
            n: n as u32,
            ..Default::default()
        };
        let [gx, gy, _] = rec.grid_for_groups((n as u64 * n as u64).div_ceil(256))?;
        rec.dispatch(
            &IDENTITY,
            &[],
            &[Binding::uniform(&ident), Binding::storage(x)],
            [gx, gy, count as u32],
        )?;
        // Right-looking: solve block row i (columns 0 .. i0 + nb are the non-zero ones), then
        // subtract L[below, block]·X[block, :] from the rows below.
        for i0 in (0..n).step_by(NB) {
            let nb = NB.min(n - i0);
            let cols = i0 + nb;
            record_solve(
                rec,
                Solve {
                    lower: factors,
                    rhs: x,
                    copy: panel,
                    block: Block {
                        nb: nb as u32,
                        l_offset: (offset + i0 * n + i0) as u32,
                        l_ld: n as u32,
                        rhs: cols as u32,
                        rhs_offset: (i0 * n) as u32,
                        rhs_step: 1,
                        elem_step: n as u32,
                        copy_step: 1,
                        copy_elem: cols as u32,
                        l_zstride: (n * n) as u32,
                        rhs_zstride: (n * n) as u32,
                        copy_zstride: (n * NB) as u32,
                        ..Default::default()
                    },
                    count,
                },
            )?;
            let below = n - cols;
            if below == 0 {
                continue;
            }
            let update = Gemm {
                alpha: -1.0,
                beta: 1.0,
                batch: count,
                ld: [Some(n), Some(cols), Some(n)],
                offsets: [offset + cols * n + i0, 0, cols * n],
                batch_strides: [Some(n * n), Some(n * NB), Some(n * n)],
                ..Gemm::new(below, cols, nb)
            };
            record_gemm_with(rec, &update, factors, panel, x, false)?;
        }
        // The run's last reads of its factors are above: in place, its inverses go over them.
        let product = Gemm {
            trans_a: true,
            symmetric: true,
            batch: count,
            offsets: [0, 0, offset],
            ld: [Some(n), Some(n), Some(n)],
            batch_strides: [Some(n * n), Some(n * n), Some(n * n)],
            ..Gemm::new(n, n, n)
        };
        record_gemm_with(rec, &product, x, x, inverses, true)?;
    }
    Ok(())
}

/// Factors every matrix of `batch` in place (A = L·Lᵀ, L in the lower triangle, 0 above it);
/// only the lower triangle of the input is read. Blocking: the native wrapper of
/// [`cholesky_async`].
///
/// Errors: as [`record_cholesky`], and [`Error::NotPositiveDefinite`] naming the first matrix
/// that is not SPD and its failing pivot.
#[cfg(not(target_arch = "wasm32"))]
pub fn cholesky<'a>(gpu: &Gpu, batch: &Batch, factors: impl Into<BufView<'a>>) -> Result<()> {
    pollster::block_on(cholesky_async(gpu, batch, factors))
}

/// Async form of [`cholesky`], the one implementation: the status words are awaited.
pub async fn cholesky_async<'a>(
    gpu: &Gpu,
    batch: &Batch,
    factors: impl Into<BufView<'a>>,
) -> Result<()> {
    let factors = check_batch(gpu, "factors", &factors.into(), batch)?;
    let workspace = CholeskyWorkspace::new(gpu, batch)?;
    let mut rec = Recorder::new(gpu);
    record_cholesky(&mut rec, batch, factors, &workspace)?;
    rec.submit()?;
    workspace.check_async(gpu, "factors").await
}

/// The inverses of the SPD matrices of `batch` (same layout, both triangles); only the lower
/// triangle of each input matrix is read, and `factors` is left holding L. Blocking: the
/// native wrapper of [`spd_inverse_async`]. Errors: as [`cholesky`].
#[cfg(not(target_arch = "wasm32"))]
pub fn spd_inverse<'a>(
    gpu: &Gpu,
    batch: &Batch,
    factors: impl Into<BufView<'a>>,
) -> Result<GpuVec<f32>> {
    pollster::block_on(spd_inverse_async(gpu, batch, factors))
}

/// Async form of [`spd_inverse`], the one implementation: the status words are awaited.
pub async fn spd_inverse_async<'a>(
    gpu: &Gpu,
    batch: &Batch,
    factors: impl Into<BufView<'a>>,
) -> Result<GpuVec<f32>> {
    let factors = check_batch(gpu, "factors", &factors.into(), batch)?;
    let workspace = CholeskyWorkspace::new(gpu, batch)?;
    let inverses = GpuVec::<f32>::zeros(gpu, batch.len())?;
    let mut rec = Recorder::new(gpu);
    record_spd_inverse(&mut rec, batch, factors, inverses.view(), &workspace)?;
    rec.submit()?;
    workspace.check_async(gpu, "factors").await?;
    Ok(inverses)
}
