//! curvgpu: hand-written WGSL compute kernels for second-order optimisation, dispatched through
//! a thin layer over wgpu, so the same kernels run on Vulkan, Metal, DX12, GL and WebGPU.
//!
//! Every kernel has a convenience form that records, submits and returns, and a `record_*`
//! form that writes into the caller's `wgpu::CommandEncoder` with the caller's buffers.
//!
//! ```no_run
//! # fn main() -> curvgpu::Result<()> {
//! use curvgpu::{diag::{SophiaG, SophiaGConfig}, Gpu};
//!
//! let gpu = Gpu::new()?; // CURVGPU_BACKEND / CURVGPU_ADAPTER pick the adapter
//! let params = gpu.upload(&[0.5f32, -1.0, 2.0])?;
//! let grads = gpu.upload(&[0.1f32, -0.2, 0.3])?;
//! let mut opt = SophiaG::new(&gpu, params.len(), SophiaGConfig::default())?;
//! opt.step(&gpu, &params, &grads)?;
//! let theta: Vec<f32> = gpu.read(&params)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod buffer;
mod check;
pub mod diag;
mod elementwise;
pub mod error;
pub mod finite;
pub mod gpu;
pub mod kernel;
pub mod kfac;
pub mod krylov;
pub mod linalg;
pub mod mfac;
pub mod mkor;
pub mod ot;
pub mod record;
pub mod reduce;
pub mod reference;
pub mod rng;
mod tensors;
pub mod toy;

pub mod bench;

/// The wgpu this crate is built on, for naming its types (encoders, buffers) at the same version.
pub use wgpu;

pub use buffer::{BufView, GpuVec};
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Tuning};
pub use record::Recorder;
pub use tensors::Tensors;

/// The README's code blocks, compiled as doctests so the example there cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
