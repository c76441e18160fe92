//! Batched Cholesky factorisation and SPD inverse for factors of mixed sizes packed in one
//! buffer: [`record_cholesky`] → `kernel!("linalg/cholesky.wgsl", "cholesky_block")`,
//! `forward_substitution` and `gemm.wgsl`'s trailing update.

use bytemuck::{Pod, Zeroable};

use super::gemm::{record_gemm_with, Gemm};
use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

/// Columns per block of the blocked factorisation (`NB` in cholesky.wgsl).
const NB: usize = 32;

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
                    requested: 4 * (n as u64 * n as u64 + total as u64),
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
    pub fn identities(&self) -> Vec<f32> {
        let mut data = vec![0.0f32; self.total];
        for (&n, &at) in self.sizes.iter().zip(&self.offsets) {
            for d in 0..n {
                data[at + d * (n + 1)] = 1.0;
            }
        }
        data
    }

    /// Always false: a batch holds at least one matrix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Runs of consecutive equally sized matrices, as (first matrix, count, side): each run
    /// goes through a batched kernel's steps together (grid z).
    pub(crate) fn runs(&self) -> Vec<(usize, usize, usize)> {
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for (i, &n) in self.sizes.iter().enumerate() {
            match out.last_mut() {
                Some((_, count, side)) if *side == n => *count += 1,
                _ => out.push((i, 1, n)),
            }
        }
        out
    }
}

/// Scratch space and the per-matrix status words of a batched factorisation, sized for a
/// batch; reusable for any batch with as many matrices and none larger.
pub struct CholeskyWorkspace {
    status: GpuVec<u32>,
    block: GpuVec<f32>,
    panel: GpuVec<f32>,
    lower_inverse: GpuVec<f32>,
}

impl CholeskyWorkspace {
    /// Workspace for `batch` (the inverse needs a run-of-matrices-sized scratch as well).
    pub fn new(gpu: &Gpu, batch: &Batch) -> Result<Self> {
        let runs = batch.runs();
        let most = |f: &dyn Fn(usize, usize) -> usize| {
            runs.iter()
                .map(|&(_, c, n)| f(c, n))
                .max()
                .unwrap_or(1)
                .max(1)
        };
        Ok(CholeskyWorkspace {
            status: gpu.zeros(2 * batch.sizes.len())?,
            block: gpu.zeros(most(&|c, _| c * NB * NB))?,
            panel: gpu.zeros(most(&|c, n| c * n * NB))?,
            lower_inverse: gpu.zeros(most(&|c, n| c * n * n))?,
        })
    }

    fn fits(&self, batch: &Batch) -> Result<()> {
        let fits = 2 * batch.sizes.len() <= self.status.len()
            && batch.runs().iter().all(|&(_, c, n)| {
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

    /// Reads the status words: the first matrix whose factorisation met a pivot that is not
    /// positive and finite, as [`Error::NotPositiveDefinite`]. Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check(&self, gpu: &Gpu, argument: &'static str) -> Result<()> {
        pollster::block_on(self.check_async(gpu, argument))
    }

    /// Async form of [`CholeskyWorkspace::check`].
    pub async fn check_async(&self, gpu: &Gpu, argument: &'static str) -> Result<()> {
        let words = gpu.read_async(&self.status).await?;
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Block {
    n: u32,
    offset: u32,
    j0: u32,
    nb: u32,
    factor: u32,
    l_offset: u32,
    l_ld: u32,
    rhs: u32,
    rhs_offset: u32,
    rhs_step: u32,
    elem_step: u32,
    copy_step: u32,
    copy_elem: u32,
    l_zstride: u32,
    rhs_zstride: u32,
    copy_zstride: u32,
}

fn check_batch(gpu: &Gpu, name: &'static str, view: &BufView, batch: &Batch) -> Result<()> {
    let limit = gpu.limits().max_storage_buffer_binding_size / 4;
    if batch.total as u64 > limit {
        return Err(Error::TooLarge {
            argument: name,
            requested: 4 * batch.total as u64,
            limit: "max_storage_buffer_binding_size",
            max: 4 * limit,
        });
    }
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
    let gpu = rec.gpu();
    let groups = (s.block.rhs as u64).div_ceil(256);
    let [x, y, _] = gpu.grid_for_groups(groups)?;
    rec.dispatch(
        kernel!("linalg/cholesky.wgsl", "forward_substitution"),
        &[],
        &[
            Binding::Uniform(bytemuck::bytes_of(&s.block)),
            Binding::Storage(s.lower, None),
            Binding::Storage(s.rhs, None),
            Binding::Storage(s.copy, None),
        ],
        [x, y, s.count as u32],
    )
}

/// Records the in-place factorisation A = L·Lᵀ of every matrix of `batch` in `factors` (L
/// overwrites the lower triangle, zeros the upper). Runs of equally sized matrices are factored
/// together, one set of dispatches per 32-column block. Pivots that are not positive and
/// finite are recorded in the workspace's status: call [`CholeskyWorkspace::check`] after
/// submitting.
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
    check_batch(gpu, "factors", &factors, batch)?;
    workspace.fits(batch)?;
    // 0.0f32 is the all-zero word: the status words start clear.
    crate::krylov::operator::record_fill(rec, workspace.status.view(), 0.0)?;
    for (first, count, n) in batch.runs() {
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
                kernel!("linalg/cholesky.wgsl", "cholesky_block"),
                &[],
                &[
                    Binding::Uniform(bytemuck::bytes_of(&block)),
                    Binding::Storage(factors, None),
                    Binding::Storage(workspace.status.view(), None),
                    Binding::Storage(workspace.block.view(), None),
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
                    lower: workspace.block.view(),
                    rhs: factors,
                    copy: workspace.panel.view(),
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
            // A22 −= L21·L21ᵀ, lower triangle only.
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
            let panel = workspace.panel.view();
            record_gemm_with(rec, &update, panel, panel, factors, false)?;
        }
    }
    Ok(())
}

/// Records the inverses of the SPD matrices of `batch`: factors them in place (as
/// [`record_cholesky`]), forms X = L⁻¹ by blocked forward substitution and writes
/// A⁻¹ = XᵀX into `inverses` (same layout as `factors`). Check the workspace afterwards.
pub fn record_spd_inverse(
    rec: &mut Recorder,
    batch: &Batch,
    factors: BufView<'_>,
    inverses: BufView<'_>,
    workspace: &CholeskyWorkspace,
) -> Result<()> {
    let gpu = rec.gpu();
    check_batch(gpu, "inverses", &inverses, batch)?;
    record_cholesky(rec, batch, factors, workspace)?;
    let x = workspace.lower_inverse.view();
    for (first, count, n) in batch.runs() {
        let offset = batch.offsets[first];
        let ident = Block {
            n: n as u32,
            ..Default::default()
        };
        let [gx, gy, _] = gpu.grid_for_groups((n as u64 * n as u64).div_ceil(256))?;
        rec.dispatch(
            kernel!("linalg/cholesky.wgsl", "identity"),
            &[],
            &[
                Binding::Uniform(bytemuck::bytes_of(&ident)),
                Binding::Storage(x, None),
            ],
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
                    copy: workspace.panel.view(),
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
            record_gemm_with(rec, &update, factors, workspace.panel.view(), x, false)?;
        }
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

/// Factors every matrix of `batch` in place (A = L·Lᵀ, L in the lower triangle). Blocking:
/// the native wrapper of [`cholesky_async`].
///
/// Errors: as [`record_cholesky`], and [`Error::NotPositiveDefinite`] naming the first matrix
/// that is not SPD and its failing pivot.
#[cfg(not(target_arch = "wasm32"))]
pub fn cholesky(gpu: &Gpu, batch: &Batch, factors: &GpuVec<f32>) -> Result<()> {
    pollster::block_on(cholesky_async(gpu, batch, factors))
}

/// Async form of [`cholesky`], the one implementation: the status words are awaited.
pub async fn cholesky_async(gpu: &Gpu, batch: &Batch, factors: &GpuVec<f32>) -> Result<()> {
    let workspace = CholeskyWorkspace::new(gpu, batch)?;
    let mut rec = Recorder::new(gpu);
    record_cholesky(&mut rec, batch, factors.view(), &workspace)?;
    rec.submit()?;
    workspace.check_async(gpu, "factors").await
}

/// The inverses of the SPD matrices of `batch` (same layout); `factors` is left holding L.
/// Blocking: the native wrapper of [`spd_inverse_async`]. Errors: as [`cholesky`].
#[cfg(not(target_arch = "wasm32"))]
pub fn spd_inverse(gpu: &Gpu, batch: &Batch, factors: &GpuVec<f32>) -> Result<GpuVec<f32>> {
    pollster::block_on(spd_inverse_async(gpu, batch, factors))
}

/// Async form of [`spd_inverse`], the one implementation: the status words are awaited.
pub async fn spd_inverse_async(
    gpu: &Gpu,
    batch: &Batch,
    factors: &GpuVec<f32>,
) -> Result<GpuVec<f32>> {
    let workspace = CholeskyWorkspace::new(gpu, batch)?;
    let inverses = gpu.zeros::<f32>(batch.len())?;
    let mut rec = Recorder::new(gpu);
    record_spd_inverse(&mut rec, batch, factors.view(), inverses.view(), &workspace)?;
    rec.submit()?;
    workspace.check_async(gpu, "factors").await?;
    Ok(inverses)
}
