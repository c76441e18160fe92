//! Batched symmetric eigendecomposition by the parallel cyclic Jacobi method:
//! [`symmetric_eigen`] → [`ANGLES`], [`ROTATE_ROWS`], [`ROTATE_COLUMNS`] and [`NORMS`]
//! (`shaders/linalg/jacobi.wgsl`). Jacobi suits the GPU (n/2 independent rotations per round,
//! no sequential reduction to tridiagonal form) and is accurate to the last bits on
//! well-scaled matrices.

use super::cholesky::check_binding;
use super::Batch;
use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::{uniform, Kernel, Slot};
use crate::record::{Binding, Recorder};
use crate::shader;

crate::kernel::uniform_struct! {
    /// One round of a sweep over a run of equally sized matrices (jacobi.wgsl's `Round`).
    pub(crate) struct RoundUniform {
        n: u32, m: u32, round: u32, offset: u32, rot_offset: u32, _pad0: u32, _pad1: u32,
        _pad2: u32,
    }
}

/// The rotation of every pair of a round.
pub(crate) static ANGLES: Kernel = Kernel::new(
    &shader::JACOBI,
    "angles",
    &[
        uniform::<RoundUniform>(),
        Slot::Read("a"),
        Slot::Write("rotations"),
    ],
);
/// Rows p and q of every pair ← Jᵀ·A.
pub(crate) static ROTATE_ROWS: Kernel = Kernel::new(
    &shader::JACOBI,
    "rotate_rows",
    &[
        uniform::<RoundUniform>(),
        Slot::Read("rotations"),
        Slot::Write("a"),
    ],
);
/// Columns p and q of A and V ← ·J.
pub(crate) static ROTATE_COLUMNS: Kernel = Kernel::new(
    &shader::JACOBI,
    "rotate_columns",
    &[
        uniform::<RoundUniform>(),
        Slot::Read("rotations"),
        Slot::Write("a"),
        Slot::Write("v"),
    ],
);
/// Squared off-diagonal and total Frobenius norms per matrix.
pub(crate) static NORMS: Kernel = Kernel::new(
    &shader::JACOBI,
    "norms",
    &[
        uniform::<RoundUniform>(),
        Slot::Read("a"),
        Slot::Write("norms"),
    ],
);

/// Stopping rule and post-processing of [`symmetric_eigen`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JacobiOptions {
    /// Stop when every matrix's off-diagonal Frobenius norm is ≤ `tol`·‖A‖_F (checked after
    /// each sweep, one readback). 1e-6 by default: a few f32 roundings.
    pub tol: f32,
    /// Sweeps (n − 1 rounds each) before [`Error::NoConvergence`]; 30 by default (cyclic
    /// Jacobi converges quadratically, typically in 6–10).
    pub max_sweeps: usize,
    /// Replace negative eigenvalues by 0 (K-FAC's factors are PSD; rounding makes tiny ones
    /// negative).
    pub clamp_negative: bool,
}

impl Default for JacobiOptions {
    fn default() -> Self {
        JacobiOptions {
            tol: 1e-6,
            max_sweeps: 30,
            clamp_negative: false,
        }
    }
}

/// Eigenpairs of a batch: per matrix, its n eigenvalues ascending and the eigenvectors as the
/// columns of an n×n row-major matrix (same packing as the batch).
#[derive(Debug)]
pub struct Eigenpairs {
    /// Eigenvalues, packed matrix after matrix (n each), ascending within a matrix.
    pub values: Vec<f32>,
    /// Offsets of each matrix's eigenvalues in `values`.
    pub value_offsets: Vec<usize>,
    /// Eigenvectors, as the batch's layout; column j of matrix i belongs to its j-th value.
    pub vectors: GpuVec<f32>,
    /// The eigenvalues on the device, packed as `values`.
    pub values_gpu: GpuVec<f32>,
    /// Sweeps taken.
    pub sweeps: usize,
}

/// The eigendecomposition A = V·diag(λ)·Vᵀ of every symmetric matrix of `batch` in `matrices`
/// (left unchanged; a view of any buffer). Both triangles are read and A is assumed
/// symmetric, not checked. Blocking: the native wrapper of [`symmetric_eigen_async`].
///
/// Errors: `matrices` not holding the batch, `tol` not finite and > 0, `max_sweeps` 0, a
/// batch past one storage binding ([`Error::TooLarge`], checked before anything is
/// allocated) or past host memory ([`Error::HostMemory`]), non-finite entries
/// ([`Error::NonFinite`]), [`Error::NoConvergence`] after `max_sweeps`.
#[cfg(not(target_arch = "wasm32"))]
pub fn symmetric_eigen<'a>(
    gpu: &Gpu,
    batch: &Batch,
    matrices: impl Into<BufView<'a>>,
    options: &JacobiOptions,
) -> Result<Eigenpairs> {
    pollster::block_on(symmetric_eigen_async(gpu, batch, matrices, options))
}

/// Async form of [`symmetric_eigen`], the one implementation: one awaited readback of two
/// norms per matrix per sweep, and the final eigenpairs.
pub async fn symmetric_eigen_async<'a>(
    gpu: &Gpu,
    batch: &Batch,
    matrices: impl Into<BufView<'a>>,
    options: &JacobiOptions,
) -> Result<Eigenpairs> {
    let matrices = matrices.into().check(gpu, "matrices", batch.len())?;
    crate::check::positive("tol", options.tol)?;
    crate::check::iterations("max_sweeps", options.max_sweeps)?;
    let count = batch.sizes().len();
    // Per matrix ⌈n/2⌉ rotations of 4 floats (pairs with the dummy partner of an odd side).
    let rot_len: usize = batch.sizes().iter().map(|n| n.div_ceil(2)).sum();
    check_binding(gpu, "matrices", batch.len() as u64)?;
    check_binding(gpu, "matrices", 4 * rot_len as u64)?;
    check_binding(gpu, "matrices", 2 * count as u64)?;
    let identities = batch.identities()?;
    crate::finite::ensure_finite_async(gpu, "matrices", &[matrices]).await?;
    let a = GpuVec::<f32>::zeros(gpu, batch.len())?;
    let v = GpuVec::upload(gpu, &identities)?;
    drop(identities);
    let (a_view, v_view) = (a.view().named("a"), v.view().named("v"));
    let mut rec = Recorder::new(gpu);
    crate::vector::record_copy(&mut rec, matrices, 0, a_view, 0, batch.len())?;
    rec.submit()?;
    let max_z = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let runs = batch.runs(|_| max_z);
    let rot = GpuVec::<f32>::zeros(gpu, 4 * rot_len)?;
    let rot_view = rot.view().named("rotations");
    let tol2 = (options.tol as f64).powi(2);
    let norms = GpuVec::<f32>::zeros(gpu, 2 * count)?;
    let mut sweeps = 0;
    // Each pass records the off-diagonal norms (and, from the second on, a sweep before them):
    // one readback of two scalars per matrix per sweep.
    let mut rec = Recorder::new(gpu);
    loop {
        for &(first, count, n) in &runs {
            let u = RoundUniform {
                n: n as u32,
                m: (n + n % 2) as u32,
                round: 0,
                offset: batch.offset(first) as u32,
                rot_offset: first as u32,
                ..Default::default()
            };
            rec.dispatch(
                &NORMS,
                &rec.wg(),
                &[
                    Binding::uniform(&u),
                    Binding::storage(a_view),
                    Binding::storage(norms.view().named("norms")),
                ],
                [1, 1, count as u32],
            )?;
        }
        rec.submit()?;
        let squares = norms.read_async().await?;
        let converged = squares.chunks(2).all(|s| s[0] as f64 <= tol2 * s[1] as f64);
        if converged {
            let a = a.read_async().await?;
            return finish(batch, &a, &v, options, sweeps).await;
        }
        if sweeps == options.max_sweeps {
            return Err(Error::NoConvergence {
                what: "symmetric_eigen (Jacobi sweeps)",
                iterations: sweeps,
            });
        }
        rec = Recorder::new(gpu);
        let mut rot_offset = 0;
        for &(first, count, n) in &runs {
            let m = n + n % 2;
            let half = (m / 2) as u32;
            for round in 0..m - 1 {
                let u = RoundUniform {
                    n: n as u32,
                    m: m as u32,
                    round: round as u32,
                    offset: batch.offset(first) as u32,
                    rot_offset: rot_offset as u32,
                    ..Default::default()
                };
                rec.dispatch(
                    &ANGLES,
                    &[],
                    &[
                        Binding::uniform(&u),
                        Binding::storage(a_view),
                        Binding::storage(rot_view),
                    ],
                    [half.div_ceil(64), 1, count as u32],
                )?;
                let grid = [(n as u32).div_ceil(64), half, count as u32];
                rec.dispatch(
                    &ROTATE_ROWS,
                    &[],
                    &[
                        Binding::uniform(&u),
                        Binding::storage(rot_view),
                        Binding::storage(a_view),
                    ],
                    grid,
                )?;
                rec.dispatch(
                    &ROTATE_COLUMNS,
                    &[],
                    &[
                        Binding::uniform(&u),
                        Binding::storage(rot_view),
                        Binding::storage(a_view),
                        Binding::storage(v_view),
                    ],
                    grid,
                )?;
            }
            rot_offset += count * m / 2;
        }
        sweeps += 1;
    }
}

/// Sorts each matrix's eigenpairs ascending (clamping negatives when asked) on the host.
async fn finish(
    batch: &Batch,
    a: &[f32],
    v: &GpuVec<f32>,
    options: &JacobiOptions,
    sweeps: usize,
) -> Result<Eigenpairs> {
    let gpu = v.gpu();
    let vecs = v.read_async().await?;
    let count = batch.sizes().len();
    let mut values = crate::host::vec_with_capacity("matrices", batch.sizes().iter().sum())?;
    let mut value_offsets = crate::host::vec_with_capacity("matrices", count)?;
    let mut sorted = crate::host::filled("matrices", batch.len(), 0.0f32)?;
    for (i, &n) in batch.sizes().iter().enumerate() {
        let at = batch.offset(i);
        let mut order = crate::host::vec_with_capacity("matrices", n)?;
        order.extend(0..n);
        order.sort_by(|&x, &y| a[at + x * (n + 1)].total_cmp(&a[at + y * (n + 1)]));
        value_offsets.push(values.len());
        for (col, &src) in order.iter().enumerate() {
            let mut lambda = a[at + src * (n + 1)];
            if options.clamp_negative {
                lambda = lambda.max(0.0);
            }
            values.push(lambda);
            for row in 0..n {
                sorted[at + row * n + col] = vecs[at + row * n + src];
            }
        }
    }
    Ok(Eigenpairs {
        values_gpu: GpuVec::upload(gpu, &values)?,
        vectors: GpuVec::upload(gpu, &sorted)?,
        values,
        value_offsets,
        sweeps,
    })
}
