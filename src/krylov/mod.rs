//! Krylov solvers and spectrum tools on any [`LinearOperator`]: conjugate gradient (scipy's
//! semantics, batched, preconditioned), power iteration, Hutchinson trace, Lanczos and
//! stochastic Lanczos quadrature (PyHessian's). Shaders: `shaders/krylov/`.

mod cg;
pub mod density;
pub mod lr;
pub(crate) mod operator;
mod spectrum;
pub mod tridiag;

#[cfg(not(target_arch = "wasm32"))]
pub use cg::{cg, cg_batched, cg_prepare};
pub use cg::{
    cg_async, cg_batched_async, cg_prepare_async, CgOptions, CgResult, CgSolver, CgStats, CgStatus,
    Preconditioner, DEFAULT_CHECK_EVERY,
};
pub use density::{Density, DensityOptions};
pub use operator::{
    BlockDiagonal, CsrMatrix, DenseMatrix, Direction, FnOperator, LinearOperator, Poisson, Shifted,
    CSR_FUSED_ROW_LIMIT,
};
#[cfg(not(target_arch = "wasm32"))]
pub use spectrum::{hutchinson_trace, lanczos, spectral_density, top_eigenvalues};
pub use spectrum::{
    hutchinson_trace_async, lanczos_async, spectral_density_async, top_eigenvalues_async,
    BlockTrace, Eigenpairs, LanczosTridiagonal, PowerOptions, SlqOptions, SpectralDensity,
    TraceEstimate, TraceOptions,
};

/// The kernels of this family.
pub(crate) fn kernels() -> Vec<&'static crate::kernel::Kernel> {
    [operator::KERNELS, cg::KERNELS, spectrum::KERNELS].concat()
}
