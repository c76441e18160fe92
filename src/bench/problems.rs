//! Fixed-size problems `curvgpu bench` times alongside the per-element kernels: each names the
//! work it does (flops against the FMA roofline, or bytes against the copy roofline).

use crate::bench::kernels::Case;
use crate::buffer::GpuVec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::linalg::{record_gemm, record_spd_inverse, Batch, CholeskyWorkspace, Gemm};

/// Fixed problems the bench knows, in table order.
pub const PROBLEMS: &[&str] = &[
    "gemm_1024",
    "kfac_inverse_64x256",
    "kfac_inverse_8x1024",
    "mkor_refresh_64x256",
    "mkor_refresh_8x1024",
    "mfac_ihvp_4m_64",
];

/// What one run of a fixed problem does.
#[derive(Clone, Copy, Debug)]
pub struct Work {
    /// Size figure for the table (e.g. the matrix side).
    pub n: usize,
    /// Floating-point operations (an FMA counts 2), when compute is the measure.
    pub flops: Option<f64>,
    /// Bytes that must move, when bandwidth is the measure.
    pub bytes: Option<f64>,
}

/// Allocates problem `name` and says how to record one run; `None` for an unknown name
/// (blocking form of [`problem_async`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn problem(gpu: &Gpu, name: &str) -> Result<Option<(Case, Work)>> {
    pollster::block_on(problem_async(gpu, name))
}

/// Allocates problem `name` and says how to record one run; `None` for an unknown name.
/// Async because M-FAC's window is filled through readbacks.
pub async fn problem_async(gpu: &Gpu, name: &str) -> Result<Option<(Case, Work)>> {
    Ok(Some(match name {
        "gemm_1024" => {
            let side = 1024;
            let shape = Gemm::new(side, side, side);
            let a = crate::rng::gaussian(gpu, side * side, 1, 0)?;
            let b = crate::rng::gaussian(gpu, side * side, 2, 0)?;
            let c = GpuVec::<f32>::zeros(gpu, side * side)?;
            let case = Case::new(Box::new(move |rec| {
                record_gemm(rec, &shape, a.view(), b.view(), c.view())
            }));
            let work = Work {
                n: side,
                flops: Some(shape.flops()),
                bytes: None,
            };
            (case, work)
        }
        "kfac_inverse_64x256" => spd_inverses(gpu, 64, 256)?,
        "kfac_inverse_8x1024" => spd_inverses(gpu, 8, 1024)?,
        "mkor_refresh_64x256" => mkor_refreshes(gpu, 64, 256)?,
        "mkor_refresh_8x1024" => mkor_refreshes(gpu, 8, 1024)?,
        "mfac_ihvp_4m_64" => mfac_ihvp(gpu, 1 << 22, 64).await?,
        _ => return Ok(None),
    }))
}

/// `count` SPD factors of side `n` (XᵀX/n + I, X Gaussian) inverted in one submission; each
/// run first restores the factors (the factorisation works in place), a copy of n² floats per
/// factor against n³ flops. Flops: n³ per inverse, the usual count (Cholesky n³/3, L⁻¹ n³/3,
/// L⁻ᵀL⁻¹ n³/3).
fn spd_inverses(gpu: &Gpu, count: usize, n: usize) -> Result<(Case, Work)> {
    let batch = Batch::new(&vec![n; count])?;
    let x = crate::rng::gaussian(gpu, count * n * n, 3, 0)?;
    let identity: Vec<f32> = (0..count * n * n)
        .map(|e| (e % (n * n)).is_multiple_of(n + 1) as u32 as f32)
        .collect();
    let original = GpuVec::upload(gpu, &identity)?;
    let mut rec = crate::record::Recorder::new(gpu);
    let gram = Gemm {
        trans_a: true,
        alpha: 1.0 / n as f32,
        beta: 1.0,
        batch: count,
        symmetric: true,
        ..Gemm::new(n, n, n)
    };
    record_gemm(&mut rec, &gram, x.view(), x.view(), original.view())?;
    rec.submit()?;
    let factors = GpuVec::<f32>::zeros(gpu, batch.len())?;
    let inverses = GpuVec::<f32>::zeros(gpu, batch.len())?;
    let workspace = CholeskyWorkspace::new(gpu, &batch)?;
    let total = batch.len();
    let case = Case::new(Box::new(move |rec| {
        crate::vector::record_copy(rec, original.view(), 0, factors.view(), 0, total)?;
        record_spd_inverse(rec, &batch, factors.view(), inverses.view(), &workspace)
    }));
    let work = Work {
        n,
        flops: Some(count as f64 * (n as f64).powi(3)),
        bytes: None,
    };
    Ok((case, work))
}

/// MKOR refreshes of `count` inverse factors of side `n` (count/2 square layers without bias,
/// their J_A and J_G) from a batch of 32: the O(n²) counterpart of [`spd_inverses`]. Bytes: each
/// factor is read twice (J·v and vᵀ·J, then the update) and written once, 12·n² per factor.
fn mkor_refreshes(gpu: &Gpu, count: usize, n: usize) -> Result<(Case, Work)> {
    let batch = 32;
    let layer = crate::kfac::Layer {
        in_dim: n,
        out_dim: n,
        bias: false,
    };
    let layers = vec![layer; count / 2];
    let mut mkor = crate::mkor::Mkor::new(gpu, &layers, Default::default())?;
    let xs = crate::rng::gaussian(gpu, batch * n, 4, 0)?;
    let dys = crate::rng::gaussian(gpu, batch * n, 5, 0)?;
    let case = Case::new(Box::new(move |rec| {
        let x = vec![xs.view(); count / 2];
        let dy = vec![dys.view(); count / 2];
        mkor.record_refresh(rec, batch, &x, &dy)
    }));
    let work = Work {
        n,
        flops: None,
        bytes: Some(12.0 * (n * n * count) as f64),
    };
    Ok((case, work))
}

/// One M-FAC inverse-Fisher–vector product with a full window of `m` Gaussian gradients of
/// length `d` (pushed through [`crate::mfac::Mfac::push_async`] first). Bytes: the window read twice
/// (G·x, then Gᵀ·w), x twice and y once: 4·(2md + 3d); the O(m²) substitution is negligible.
async fn mfac_ihvp(gpu: &Gpu, d: usize, m: usize) -> Result<(Case, Work)> {
    let config = crate::mfac::MfacConfig {
        m,
        ..Default::default()
    };
    let mut mfac = crate::mfac::Mfac::new(gpu, d, config)?;
    for i in 0..m {
        let g = crate::rng::gaussian(gpu, d, 10 + i as u64, 0)?;
        mfac.push_async(gpu, &g).await?;
    }
    let x = crate::rng::gaussian(gpu, d, 6, 0)?;
    let y = GpuVec::<f32>::zeros(gpu, d)?;
    let case = Case::new(Box::new(move |rec| {
        mfac.record_ihvp(rec, x.view(), y.view())
    }));
    let work = Work {
        n: d,
        flops: None,
        bytes: Some(4.0 * (2.0 * (m * d) as f64 + 3.0 * d as f64)),
    };
    Ok((case, work))
}
