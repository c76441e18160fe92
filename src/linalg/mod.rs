//! Dense linear algebra for the Kronecker-factor methods: tiled matrix products in the NN, NT
//! and TN forms (batched), symmetric products that compute one triangle and mirror it,
//! batched Cholesky factorisation and SPD inversion for factors of mixed sizes, batched
//! symmetric eigendecomposition (parallel cyclic Jacobi).
//! Row-major f32 throughout. Shaders: `shaders/linalg/`.

mod cholesky;
mod eigen;
mod gemm;

#[cfg(not(target_arch = "wasm32"))]
pub use cholesky::{cholesky, spd_inverse};
pub use cholesky::{
    cholesky_async, record_cholesky, record_spd_inverse, spd_inverse_async, Batch,
    CholeskyWorkspace,
};
#[cfg(not(target_arch = "wasm32"))]
pub use eigen::symmetric_eigen;
pub use eigen::{symmetric_eigen_async, Eigenpairs, JacobiOptions};
#[cfg(not(target_arch = "wasm32"))]
pub use gemm::gemm;
pub use gemm::{gemm_async, record_gemm, Gemm};
