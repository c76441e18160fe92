//! Batched symmetric eigendecomposition by the parallel cyclic Jacobi method:
//! [`symmetric_eigen`] → `kernel!("linalg/jacobi.wgsl", "angles")`, `rotate_rows`,
//! `rotate_columns`. Jacobi suits the GPU (n/2 independent rotations per round, no sequential
//! reduction to tridiagonal form) and is accurate to the last bits on well-scaled matrices.

use bytemuck::{Pod, Zeroable};

use super::Batch;
use crate::buffer::GpuVec;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::record::{Binding, Recorder};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RoundUniform {
    n: u32,
    m: u32,
    round: u32,
    offset: u32,
    rot_offset: u32,
    _pad: [u32; 3],
}

/// The eigendecomposition A = V·diag(λ)·Vᵀ of every symmetric matrix of `batch` in `matrices`
/// (left unchanged; only the lower triangle's symmetry is assumed, not checked). Blocking: the
/// native wrapper of [`symmetric_eigen_async`].
///
/// Errors: `matrices` not holding the batch, `tol` not finite and > 0, `max_sweeps` 0,
/// non-finite entries ([`Error::NonFinite`]), [`Error::NoConvergence`] after `max_sweeps`.
#[cfg(not(target_arch = "wasm32"))]
pub fn symmetric_eigen(
    gpu: &Gpu,
    batch: &Batch,
    matrices: &GpuVec<f32>,
    options: &JacobiOptions,
) -> Result<Eigenpairs> {
    pollster::block_on(symmetric_eigen_async(gpu, batch, matrices, options))
}

/// Async form of [`symmetric_eigen`], the one implementation: one awaited readback of two
/// norms per matrix per sweep, and the final eigenpairs.
pub async fn symmetric_eigen_async(
    gpu: &Gpu,
    batch: &Batch,
    matrices: &GpuVec<f32>,
    options: &JacobiOptions,
) -> Result<Eigenpairs> {
    matrices.view().check(gpu, "matrices", batch.len())?;
    crate::check::positive("tol", options.tol)?;
    if options.max_sweeps == 0 {
        return Err(Error::param("max_sweeps", 0.0, "at least 1"));
    }
    crate::finite::ensure_finite_async(gpu, "matrices", &[matrices.view()]).await?;
    let a = gpu.zeros::<f32>(batch.len())?;
    let v = gpu.upload(&batch.identities())?;
    let mut rec = Recorder::new(gpu);
    crate::krylov::operator::record_copy(&mut rec, matrices.view(), 0, a.view(), 0, batch.len())?;
    rec.submit()?;
    let runs = batch.runs();
    let rot_len: usize = batch
        .sizes()
        .iter()
        .map(|n| n.div_ceil(2))
        .sum::<usize>()
        .max(1);
    let rot = gpu.zeros::<f32>(4 * rot_len)?;
    let tol2 = (options.tol as f64).powi(2);
    let norms = gpu.zeros::<f32>(2 * batch.sizes().len())?;
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
                _pad: [0; 3],
            };
            rec.dispatch(
                kernel!("linalg/jacobi.wgsl", "norms"),
                &gpu.wg_constants(),
                &[
                    Binding::Uniform(bytemuck::bytes_of(&u)),
                    Binding::Storage(a.view(), None),
                    Binding::Storage(norms.view(), None),
                ],
                [1, 1, count as u32],
            )?;
        }
        rec.submit()?;
        let squares = gpu.read_async(&norms).await?;
        let converged = squares.chunks(2).all(|s| s[0] as f64 <= tol2 * s[1] as f64);
        if converged {
            let a = gpu.read_async(&a).await?;
            return finish(gpu, batch, &a, &v, options, sweeps).await;
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
                    _pad: [0; 3],
                };
                let u = bytemuck::bytes_of(&u);
                rec.dispatch(
                    kernel!("linalg/jacobi.wgsl", "angles"),
                    &[],
                    &[
                        Binding::Uniform(u),
                        Binding::Storage(a.view(), None),
                        Binding::Storage(rot.view(), None),
                    ],
                    [half.div_ceil(64), 1, count as u32],
                )?;
                let grid = [(n as u32).div_ceil(64), half, count as u32];
                rec.dispatch(
                    kernel!("linalg/jacobi.wgsl", "rotate_rows"),
                    &[],
                    &[
                        Binding::Uniform(u),
                        Binding::Storage(rot.view(), None),
                        Binding::Storage(a.view(), None),
                    ],
                    grid,
                )?;
                rec.dispatch(
                    kernel!("linalg/jacobi.wgsl", "rotate_columns"),
                    &[],
                    &[
                        Binding::Uniform(u),
                        Binding::Storage(rot.view(), None),
                        Binding::Storage(a.view(), None),
                        Binding::Storage(v.view(), None),
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
    gpu: &Gpu,
    batch: &Batch,
    a: &[f32],
    v: &GpuVec<f32>,
    options: &JacobiOptions,
    sweeps: usize,
) -> Result<Eigenpairs> {
    let vecs = gpu.read_async(v).await?;
    let mut values = Vec::new();
    let mut value_offsets = Vec::new();
    let mut sorted = vec![0.0f32; batch.len()];
    for (i, &n) in batch.sizes().iter().enumerate() {
        let at = batch.offset(i);
        let mut order: Vec<usize> = (0..n).collect();
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
        values_gpu: gpu.upload(&values)?,
        vectors: gpu.upload(&sorted)?,
        values,
        value_offsets,
        sweeps,
    })
}
