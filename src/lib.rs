//! curvgpu: hand-written WGSL compute kernels for second-order optimisation, dispatched through
//! a thin layer over wgpu, so the same kernels run on Vulkan, Metal, DX12, GL and WebGPU.
//!
//! The core is a chain, each module building on the ones before it: [`gpu`] (the device and
//! its caches) → [`buffer`] (typed storage, views) → [`shader`] and [`kernel`] (the WGSL
//! registry, typed entry points, pipelines) → [`record`] (dispatches into a pass, overlap
//! checks) → the families.
//!
//! Every `record_*` function appends dispatches to a [`Recorder`]: nothing runs until the
//! recorder is encoded into an encoder — the caller's, with the caller's buffers — and
//! submitted. The convenience forms record, submit and return.
//!
//! ```no_run
//! # fn main() -> curvgpu::Result<()> {
//! use curvgpu::{diag::{SophiaG, SophiaGConfig}, Gpu, GpuVec, Optimizer};
//!
//! let gpu = Gpu::new()?; // CURVGPU_BACKEND / CURVGPU_ADAPTER pick the adapter
//! let params = GpuVec::upload(&gpu, &[0.5f32, -1.0, 2.0])?;
//! let grads = GpuVec::upload(&gpu, &[0.1f32, -0.2, 0.3])?;
//! let mut opt = SophiaG::new(&gpu, params.len(), SophiaGConfig::default())?;
//! opt.step(&gpu, &params, &grads)?;
//! let theta: Vec<f32> = params.read()?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod buffer;
pub mod gpu;
pub mod kernel;
pub mod record;
pub mod shader;

mod check;
mod elementwise;
pub mod error;
mod host;
mod tensors;
mod vector;

pub mod finite;
pub mod optimizer;
pub mod reduce;
pub mod rng;

pub mod diag;
pub mod kfac;
pub mod krylov;
pub mod linalg;
pub mod mfac;
pub mod mkor;
pub mod ot;
pub mod toy;

pub mod reference;

#[cfg(feature = "bench")]
pub mod bench;

/// The wgpu this crate is built on, for naming its types (encoders, buffers) at the same version.
pub use wgpu;

pub use buffer::{BufView, GpuVec, Layout};
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Tuning, TuningOverrides};
pub use optimizer::{Optimizer, StepInputs};
pub use record::Recorder;
pub use tensors::Tensors;

/// Every kernel the crate dispatches, each with the bindings Rust gives it: what the test
/// suite checks against naga's reflection of the WGSL, and what tools can list.
pub fn kernels() -> Vec<&'static kernel::Kernel> {
    #[allow(unused_mut)] // the bench feature adds its own
    let mut all = [
        reduce::KERNELS,
        rng::KERNELS,
        finite::KERNELS,
        vector::KERNELS,
        &diag::kernels(),
        &krylov::kernels(),
        &linalg::kernels(),
        kfac::KERNELS,
        mkor::KERNELS,
        mfac::KERNELS,
        &ot::kernels(),
        toy::KERNELS,
    ]
    .concat();
    #[cfg(feature = "bench")]
    all.extend(bench::kernels());
    all
}

/// The README's code blocks, compiled as doctests so the example there cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
