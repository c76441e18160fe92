//! Krylov solvers and spectrum tools on any [`LinearOperator`]: conjugate gradient (scipy's
//! semantics, batched, preconditioned), power iteration, Hutchinson trace, Lanczos and
//! stochastic Lanczos quadrature (PyHessian's). Shaders: `shaders/krylov/`.

mod cg;
pub mod density;
pub mod lr;
pub(crate) mod operator;
// The spectrum tools read scalars back between steps with blocking reads; their async forms
// for the browser come with the web demo (CG's are in `cg`).
#[cfg(not(target_arch = "wasm32"))]
mod spectrum;
pub mod tridiag;

#[cfg(not(target_arch = "wasm32"))]
pub use cg::{cg, cg_batched};
pub use cg::{
    cg_async, cg_batched_async, CgOptions, CgResult, CgStats, Preconditioner, DEFAULT_CHECK_EVERY,
};
pub use density::{Density, DensityOptions};
pub use operator::{
    BlockDiagonal, CsrMatrix, DenseMatrix, Direction, FnOperator, LinearOperator, Poisson, Shifted,
};
#[cfg(not(target_arch = "wasm32"))]
pub use spectrum::{hutchinson_trace, lanczos, spectral_density, top_eigenvalues};
#[cfg(not(target_arch = "wasm32"))]
pub use spectrum::{
    BlockTrace, Eigenpairs, LanczosTridiagonal, PowerOptions, SlqOptions, SpectralDensity,
    TraceEstimate, TraceOptions,
};
