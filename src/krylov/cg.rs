//! Conjugate gradient with scipy's semantics and every scalar on the GPU:
//! [`cg_async`] → `kernel!("krylov/cg.wgsl", "cg_update")` and friends. The async forms are the
//! one implementation; [`cg`] and [`cg_batched`] block on them natively.

use bytemuck::{Pod, Zeroable};

use super::operator::{record_copy, square_dim, Direction, LinearOperator};
use crate::buffer::{BufView, GpuVec};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel;
use crate::kernel::Kernel;
use crate::record::{Binding, Recorder};
use crate::reduce::{self, Reduction};

/// Preconditioner M ≈ A⁻¹ applied as z = M·r.
#[derive(Clone, Copy, Default)]
pub enum Preconditioner<'a> {
    /// z = r.
    #[default]
    None,
    /// z = r / diag(A), from the operator's [`LinearOperator::record_diagonal`].
    Jacobi,
    /// Any operator applying M (e.g. a learned preconditioner such as DCDM's network).
    Operator(&'a dyn LinearOperator),
}

/// Options, named and defaulted as scipy's `cg(A, b, x0, *, rtol=1e-5, atol=0., maxiter=None, M=None)`.
#[derive(Clone, Copy)]
pub struct CgOptions<'a> {
    /// Relative tolerance on ‖r‖/‖b‖ (1e-5).
    pub rtol: f32,
    /// Absolute tolerance on ‖r‖ (0); the test is ‖r‖ < max(atol, rtol·‖b‖), strict.
    pub atol: f32,
    /// Iteration limit; `None` is scipy's 10·n.
    pub maxiter: Option<usize>,
    /// Iterations recorded between reads of the convergence flags. Iterations after
    /// convergence are no-ops on the GPU, so this trades wasted work against host round-trips.
    pub check_every: usize,
    /// Also return ‖r‖ at every iteration (one f32 per iteration on the device).
    pub history: bool,
    /// The preconditioner.
    pub preconditioner: Preconditioner<'a>,
}

/// Default `check_every`, measured on lavapipe (Poisson 256², 573 iterations): every
/// iteration 735 ms, every 4: 585, every 16: 582, every 64: 565, every 256: 762 ms (up to 255
/// wasted no-op iterations). 16 is within 3% of the best and wastes at most 15 iterations;
/// on the 1024² problem (~10 ms per iteration) the readback cost vanishes in the noise.
pub const DEFAULT_CHECK_EVERY: usize = 16;

impl Default for CgOptions<'_> {
    fn default() -> Self {
        CgOptions {
            rtol: 1e-5,
            atol: 0.0,
            maxiter: None,
            check_every: DEFAULT_CHECK_EVERY,
            history: false,
            preconditioner: Preconditioner::None,
        }
    }
}

/// What [`cg`] returns for one right-hand side.
#[derive(Debug)]
pub struct CgResult {
    /// The solution estimate.
    pub x: GpuVec<f32>,
    /// Iterations taken (updates of x), as scipy counts them.
    pub iterations: usize,
    /// Whether ‖r‖ < max(atol, rtol·‖b‖) was reached within `maxiter`.
    pub converged: bool,
    /// The recursively updated ‖r‖ at exit.
    pub residual: f32,
    /// ‖r‖ before each iteration and after the last, when requested.
    pub history: Option<Vec<f32>>,
}

/// Counts from one solve, for benchmarks: work per iteration and host traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgStats {
    /// Dispatches recorded per iteration (all right-hand sides).
    pub dispatches_per_iteration: usize,
    /// Queue submissions, setup included.
    pub submits: usize,
    /// Host readbacks (convergence checks and the final read).
    pub readbacks: usize,
    /// Iterations recorded (≥ the iterations taken: the last batch runs past convergence).
    pub iterations_recorded: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct System {
    sys: u32,
    n4: u32,
    preconditioned: u32,
    history: u32,
    atol: f32,
    rtol: f32,
    _pad: [u32; 2],
}

const SCALARS: usize = 8;
const RZ: usize = 0;
const PQ: usize = 2;
const RR: usize = 4;
const BETA: usize = 6;
const BB: usize = 7;
const CONTROL: usize = 4;
const CONVERGED: u32 = 1;
const BREAKDOWN: u32 = 2;

/// Device vectors of one system (zero-padded to whole vec4s).
struct Vectors {
    x: GpuVec<f32>,
    r: GpuVec<f32>,
    p: GpuVec<f32>,
    q: GpuVec<f32>,
    z: Option<GpuVec<f32>>,
    hist: GpuVec<f32>,
}

/// Solves A·x = b for a symmetric positive definite A (see [`cg_batched`]). Blocking: the
/// native wrapper of [`cg_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn cg<'a>(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    b: impl Into<BufView<'a>>,
    x0: Option<BufView<'a>>,
    options: &CgOptions,
) -> Result<CgResult> {
    pollster::block_on(cg_async(gpu, op, b, x0, options))
}

/// Async form of [`cg`]: each convergence check yields (on the web) until its flags are read.
pub async fn cg_async<'a>(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    b: impl Into<BufView<'a>>,
    x0: Option<BufView<'a>>,
    options: &CgOptions<'_>,
) -> Result<CgResult> {
    let (mut results, _) = cg_batched_async(
        gpu,
        op,
        &[b.into()],
        x0.map(|x| vec![x]).as_deref(),
        options,
    )
    .await?;
    results.pop().ok_or(Error::Empty { argument: "b" })
}

/// Solves A·xᵢ = bᵢ for several right-hand sides together: every iteration of every system is
/// recorded into one pass, and one readback every `check_every` iterations serves them all.
///
/// Errors: non-square operator or wrong lengths; non-finite b (checked first, one readback);
/// `maxiter` 0, `rtol`/`atol` negative or non-finite; Jacobi on an operator without a
/// diagonal or with a non-positive diagonal entry; [`Error::Breakdown`] when pᵀAp ≤ 0 (A is
/// not SPD), naming the iteration. Blocking: the native wrapper of [`cg_batched_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn cg_batched(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    bs: &[BufView<'_>],
    x0s: Option<&[BufView<'_>]>,
    options: &CgOptions,
) -> Result<(Vec<CgResult>, CgStats)> {
    pollster::block_on(cg_batched_async(gpu, op, bs, x0s, options))
}

/// Async form of [`cg_batched`], the one implementation: every readback is awaited.
pub async fn cg_batched_async(
    gpu: &Gpu,
    op: &dyn LinearOperator,
    bs: &[BufView<'_>],
    x0s: Option<&[BufView<'_>]>,
    options: &CgOptions<'_>,
) -> Result<(Vec<CgResult>, CgStats)> {
    let n = square_dim(op)?;
    if bs.is_empty() {
        return Err(Error::Empty { argument: "b" });
    }
    if !(options.rtol >= 0.0 && options.rtol.is_finite()) {
        return Err(Error::param("rtol", options.rtol as f64, "finite and ≥ 0"));
    }
    if !(options.atol >= 0.0 && options.atol.is_finite()) {
        return Err(Error::param("atol", options.atol as f64, "finite and ≥ 0"));
    }
    let maxiter = options.maxiter.unwrap_or(10 * n);
    if maxiter == 0 {
        return Err(Error::param("maxiter", 0.0, "at least 1"));
    }
    if options.check_every == 0 {
        return Err(Error::param("check_every", 0.0, "at least 1"));
    }
    for b in bs {
        b.check(gpu, "b", n)?;
    }
    if let Some(x0s) = x0s {
        crate::check::same_count("x0", bs.len(), x0s.len())?;
        for x0 in x0s {
            x0.check(gpu, "x0", n)?;
        }
    }
    let mut stats = CgStats::default();
    crate::finite::ensure_finite_async(gpu, "b", bs).await?;
    let checks = bs.len() + x0s.map_or(0, <[_]>::len);
    if let Some(x0s) = x0s {
        crate::finite::ensure_finite_async(gpu, "x0", x0s).await?;
    }
    stats.submits += checks;
    stats.readbacks += checks;
    if let Preconditioner::Operator(m) = options.preconditioner {
        let (rows, cols) = m.shape();
        if (rows, cols) != (n, n) {
            return Err(Error::Shape {
                argument: "preconditioner",
                message: format!("{rows}×{cols}, the operator is {n}×{n}"),
            });
        }
    }

    let k = bs.len();
    let hist_len = match options.history {
        true => maxiter.checked_add(1).ok_or(Error::param(
            "maxiter",
            maxiter as f64,
            "small enough to keep a residual history",
        ))?,
        false => 1,
    };
    let preconditioned = !matches!(options.preconditioner, Preconditioner::None);
    let mut systems = Vec::with_capacity(k);
    for _ in 0..k {
        systems.push(Vectors {
            x: gpu.zeros(n)?,
            r: gpu.zeros(n)?,
            p: gpu.zeros(n)?,
            q: gpu.zeros(n)?,
            z: if preconditioned {
                Some(gpu.zeros(n)?)
            } else {
                None
            },
            hist: gpu.zeros(hist_len)?,
        });
    }
    let scal = gpu.zeros::<f32>(SCALARS * k)?;
    let ctl = gpu.zeros::<u32>(CONTROL * k)?;
    let inv_diag = match options.preconditioner {
        Preconditioner::Jacobi => {
            stats.submits += 1;
            stats.readbacks += 1;
            Some(jacobi_inverse(gpu, op, n).await?)
        }
        _ => None,
    };
    let n4 = n.div_ceil(4) as u32;
    let uniforms: Vec<System> = (0..k)
        .map(|s| System {
            sys: s as u32,
            n4,
            preconditioned: preconditioned as u32,
            history: options.history as u32,
            atol: options.atol,
            rtol: options.rtol,
            _pad: [0; 2],
        })
        .collect();
    let groups = reduce::partial_groups(gpu, n4 as u64);
    let partials = || -> Result<Vec<GpuVec<f32>>> {
        (0..k).map(|_| gpu.zeros::<f32>(groups as usize)).collect()
    };
    let (rr_partials, pq_partials) = (partials()?, partials()?);

    // Setup: r = b − A·x0 (or b), b·b, r·r, tolerance and the initial test.
    let mut rec = Recorder::new(gpu);
    for (s, v) in systems.iter().enumerate() {
        let u = bytemuck::bytes_of(&uniforms[s]);
        let b = bs[s];
        match x0s {
            Some(x0s) => {
                record_copy(&mut rec, x0s[s], 0, v.x.view(), 0, n)?;
                record_copy(&mut rec, b, 0, v.p.view(), 0, n)?;
                op.record_apply(&mut rec, v.x.view(), v.q.view())?;
                vector_kernel(
                    &mut rec,
                    kernel!("krylov/cg.wgsl", "cg_residual"),
                    u,
                    &scal,
                    &ctl,
                    &[&v.r, &v.p, &v.q],
                    n4,
                )?;
            }
            None => record_copy(&mut rec, b, 0, v.r.view(), 0, n)?,
        }
        reduce::record(
            &mut rec,
            Reduction::SquaredNorm,
            b,
            None,
            scal.view(),
            SCALARS * s + BB,
        )?;
        reduce::record(
            &mut rec,
            Reduction::SquaredNorm,
            v.r.view(),
            None,
            scal.view(),
            SCALARS * s + RR,
        )?;
        scalar_kernel(
            &mut rec,
            kernel!("krylov/cg.wgsl", "cg_init"),
            u,
            &scal,
            &ctl,
            &v.hist,
        )?;
    }
    rec.submit()?;
    stats.submits += 1;

    // One iteration of every system, recorded once and re-encoded: scalars live on the GPU.
    let mut iteration = Recorder::new(gpu);
    for (s, v) in systems.iter().enumerate() {
        let u = bytemuck::bytes_of(&uniforms[s]);
        let base = SCALARS * s;
        let z = match (&options.preconditioner, &v.z) {
            (Preconditioner::Jacobi, Some(z)) => {
                let d = inv_diag.as_ref().ok_or(Error::Empty {
                    argument: "diagonal",
                })?;
                vector_kernel(
                    &mut iteration,
                    kernel!("krylov/cg.wgsl", "cg_jacobi"),
                    u,
                    &scal,
                    &ctl,
                    &[z, &v.r, d],
                    n4,
                )?;
                z
            }
            (Preconditioner::Operator(m), Some(z)) => {
                m.record_apply(&mut iteration, v.r.view(), z.view())?;
                z
            }
            _ => &v.r,
        };
        // rz = rᵀz feeds β; without a preconditioner z = r and cg_beta reuses rᵀr.
        if preconditioned {
            reduce::record(
                &mut iteration,
                Reduction::Dot,
                v.r.view(),
                Some(z.view()),
                scal.view(),
                base + RZ,
            )?;
        }
        scalar_kernel(
            &mut iteration,
            kernel!("krylov/cg.wgsl", "cg_beta"),
            u,
            &scal,
            &ctl,
            &v.hist,
        )?;
        // p = z + β·p inside the operator's pass when it can (the update then stores p),
        // else in a pass of its own.
        let fused = !preconditioned
            && record_direction_apply_pq(&mut iteration, op, v, &scal, &pq_partials[s], base)?;
        if !fused {
            vector_kernel(
                &mut iteration,
                kernel!("krylov/cg.wgsl", "cg_direction"),
                u,
                &scal,
                &ctl,
                &[&v.p, z],
                n4,
            )?;
            record_apply_pq(&mut iteration, op, v, &scal, &pq_partials[s], base + PQ)?;
        }
        scalar_kernel(
            &mut iteration,
            kernel!("krylov/cg.wgsl", "cg_alpha"),
            u,
            &scal,
            &ctl,
            &v.hist,
        )?;
        record_update(
            &mut iteration,
            u,
            &scal,
            &ctl,
            v,
            &rr_partials[s],
            (base + RR, fused),
        )?;
        scalar_kernel(
            &mut iteration,
            kernel!("krylov/cg.wgsl", "cg_after"),
            u,
            &scal,
            &ctl,
            &v.hist,
        )?;
    }
    stats.dispatches_per_iteration = iteration.len();

    let mut recorded = 0;
    let mut control = gpu.read_async(&ctl).await?;
    // scipy returns x = b = 0 for b = 0, whatever x0 was.
    let zero_rhs: Vec<bool> = gpu
        .read_async(&scal)
        .await?
        .chunks(SCALARS)
        .map(|c| c[BB] == 0.0)
        .collect();
    for (v, _) in systems.iter().zip(&zero_rhs).filter(|(_, &z)| z) {
        gpu.write(&v.x, &vec![0.0; n])?;
    }
    stats.readbacks += 2;
    while recorded < maxiter && control.chunks(CONTROL).any(|c| c[1] == 0) {
        let times = options.check_every.min(maxiter - recorded);
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        iteration.encode_repeated(&mut encoder, times, None);
        gpu.queue.submit([encoder.finish()]);
        gpu.take_uncaptured("cg")?;
        stats.submits += 1;
        recorded += times;
        control = gpu.read_async(&ctl).await?;
        stats.readbacks += 1;
    }
    stats.iterations_recorded = recorded;

    let scalars = gpu.read_async(&scal).await?;
    stats.readbacks += 1;
    let mut results = Vec::with_capacity(k);
    for (s, v) in systems.into_iter().enumerate() {
        let c = &control[CONTROL * s..CONTROL * (s + 1)];
        if c[1] & BREAKDOWN != 0 {
            let pq = scalars[SCALARS * s + PQ];
            let message = if pq.is_nan() {
                format!(
                    "pᵀAp is NaN for right-hand side {s}: the operator produced non-finite values"
                )
            } else {
                format!("pᵀAp = {pq} ≤ 0 for right-hand side {s}: the operator is not symmetric positive definite")
            };
            return Err(Error::Breakdown {
                method: "cg",
                iteration: c[2] as usize,
                message,
            });
        }
        let iterations = c[0] as usize;
        let history = if options.history {
            let mut h = gpu.read_async(&v.hist).await?;
            stats.readbacks += 1;
            h.truncate(iterations + 1);
            Some(h)
        } else {
            None
        };
        results.push(CgResult {
            x: v.x,
            iterations,
            // scipy tests at the top of an iteration: reaching the tolerance with the
            // maxiter-th update still returns info = maxiter.
            converged: c[1] & CONVERGED != 0 && (iterations < maxiter || zero_rhs[s]),
            residual: if zero_rhs[s] {
                0.0
            } else {
                scalars[SCALARS * s + RR].sqrt()
            },
            history,
        });
    }
    Ok((results, stats))
}

/// 1/diag(A), refusing operators without a diagonal and non-positive entries (not SPD).
async fn jacobi_inverse(gpu: &Gpu, op: &dyn LinearOperator, n: usize) -> Result<GpuVec<f32>> {
    let d = gpu.zeros::<f32>(n)?;
    let mut rec = Recorder::new(gpu);
    if !op.record_diagonal(&mut rec, d.view())? {
        return Err(Error::Shape {
            argument: "preconditioner",
            message: "Jacobi needs an operator that can record its diagonal".into(),
        });
    }
    rec.submit()?;
    let diag = gpu.read_async(&d).await?;
    if let Some(i) = diag.iter().position(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(Error::Breakdown {
            method: "cg",
            iteration: 0,
            message: format!(
                "Jacobi: diagonal entry {i} is {}, not positive: A is not SPD",
                diag[i]
            ),
        });
    }
    let inv: Vec<f32> = diag.iter().map(|&v| 1.0 / v).collect();
    gpu.write(&d, &inv)?;
    Ok(d)
}

/// q = A·p and pᵀq into scal[pq_slot]: fused when the operator can, else a separate dot.
fn record_apply_pq(
    rec: &mut Recorder,
    op: &dyn LinearOperator,
    v: &Vectors,
    scal: &GpuVec<f32>,
    partials: &GpuVec<f32>,
    pq_slot: usize,
) -> Result<()> {
    let (p, q) = (v.p.view(), v.q.view());
    match op.record_apply_dot(rec, p, q, partials)? {
        Some(groups) => reduce::record_finalize(
            rec,
            Reduction::Dot,
            p,
            q,
            partials,
            groups,
            scal.view(),
            pq_slot,
        ),
        None => {
            op.record_apply(rec, p, q)?;
            reduce::record(rec, Reduction::Dot, p, Some(q), scal.view(), pq_slot)
        }
    }
}

/// q = A·(r + β·p) and its dot with r + β·p in the operator's one pass, p left unchanged (the
/// update stores the new p); false when the operator has no such form.
fn record_direction_apply_pq(
    rec: &mut Recorder,
    op: &dyn LinearOperator,
    v: &Vectors,
    scal: &GpuVec<f32>,
    partials: &GpuVec<f32>,
    base: usize,
) -> Result<bool> {
    let direction = Direction {
        x: v.r.view(),
        d: v.p.view(),
        scalars: scal.view(),
        beta_index: base + BETA,
    };
    let Some(groups) = op.record_direction_apply_dot(rec, &direction, v.q.view(), partials)? else {
        return Ok(false);
    };
    // The operand r + β·p is not stored: the finalize has no n % 4 tail to add, and the
    // unpadded views only bound its tail loop, so pass whole vec4s of p and q.
    let n4 = v.p.len().div_ceil(4);
    let p = BufView::new(v.p.buffer(), v.p.byte_offset(), 4 * n4);
    let q = BufView::new(v.q.buffer(), v.q.byte_offset(), 4 * n4);
    reduce::record_finalize(
        rec,
        Reduction::Dot,
        p,
        q,
        partials,
        groups,
        scal.view(),
        base + PQ,
    )?;
    Ok(true)
}

/// x += α·p, r −= α·q with the new r·r folded into scal[rr_slot]: the update pass leaves one
/// partial sum per workgroup and `reduce_finalize` adds them up. With `direction` it first
/// forms and stores p = r + β·p (the operator's pass applied A to it without storing it).
fn record_update(
    rec: &mut Recorder,
    u: &[u8],
    scal: &GpuVec<f32>,
    ctl: &GpuVec<u32>,
    v: &Vectors,
    partials: &GpuVec<f32>,
    (rr_slot, direction): (usize, bool),
) -> Result<()> {
    let gpu = rec.gpu();
    let n4 = v.r.len().div_ceil(4) as u64;
    let groups = partials.len() as u64;
    let bytes = Some(16 * n4);
    let [wg] = gpu.wg_constants();
    rec.dispatch(
        kernel!("krylov/cg.wgsl", "cg_update"),
        &[wg, ("DIRECTION", direction as u32 as f64)],
        &[
            Binding::Uniform(u),
            Binding::Storage(scal.view(), None),
            Binding::Storage(ctl.view(), None),
            Binding::Storage(v.x.view(), bytes),
            Binding::Storage(v.r.view(), bytes),
            Binding::Storage(v.p.view(), bytes),
            Binding::Storage(v.q.view(), bytes),
            Binding::Storage(partials.view(), None),
        ],
        gpu.grid_for_groups(groups)?,
    )?;
    // The padded r holds whole vec4s: a finalize over 4·n4 elements has no tail to add.
    let r = BufView::new(v.r.buffer(), v.r.byte_offset(), 4 * n4 as usize);
    reduce::record_finalize(
        rec,
        Reduction::SquaredNorm,
        r,
        r,
        partials,
        groups,
        scal.view(),
        rr_slot,
    )
}

/// A single-invocation scalar kernel of system `u`.
fn scalar_kernel(
    rec: &mut Recorder,
    kernel: Kernel,
    u: &[u8],
    scal: &GpuVec<f32>,
    ctl: &GpuVec<u32>,
    hist: &GpuVec<f32>,
) -> Result<()> {
    let gpu = rec.gpu();
    let bindings = [
        Binding::Uniform(u),
        Binding::Storage(scal.view(), None),
        Binding::Storage(ctl.view(), None),
        Binding::Storage(hist.view(), None),
    ];
    // Auto layouts keep only what the entry point uses: bind what it declares.
    let used = match kernel.entry {
        "cg_beta" | "cg_alpha" => 3,
        _ => 4,
    };
    rec.dispatch(kernel, &gpu.wg_constants(), &bindings[..used], [1, 1, 1])
}

/// An elementwise CG kernel over whole vec4s of the padded vectors bound from 3 on.
fn vector_kernel(
    rec: &mut Recorder,
    kernel: Kernel,
    u: &[u8],
    scal: &GpuVec<f32>,
    ctl: &GpuVec<u32>,
    vectors: &[&GpuVec<f32>],
    n4: u32,
) -> Result<()> {
    let gpu = rec.gpu();
    let bytes = 16 * n4 as u64;
    let mut bindings = vec![Binding::Uniform(u)];
    // Auto layouts hold only what an entry point uses: cg_residual reads no scalars and no
    // flags, cg_jacobi only the flags, the others β or α and the flags.
    let (uses_scal, uses_ctl) = match kernel.entry {
        "cg_residual" => (false, false),
        "cg_jacobi" => (false, true),
        _ => (true, true),
    };
    bindings.push(if uses_scal {
        Binding::Storage(scal.view(), None)
    } else {
        Binding::Skip
    });
    bindings.push(if uses_ctl {
        Binding::Storage(ctl.view(), None)
    } else {
        Binding::Skip
    });
    bindings.extend(
        vectors
            .iter()
            .map(|v| Binding::Storage(v.view(), Some(bytes))),
    );
    rec.dispatch(
        kernel,
        &gpu.wg_constants(),
        &bindings,
        gpu.elementwise_grid(n4 as u64)?,
    )
}
