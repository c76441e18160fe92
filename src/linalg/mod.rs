//! Dense linear algebra for the Kronecker-factor methods: tiled matrix products in the NN, NT
//! and TN forms (batched), symmetric products that compute one triangle and mirror it,
//! batched Cholesky factorisation and SPD inversion for factors of mixed sizes (reading only
//! the lower triangle of their input, as LAPACK), batched symmetric eigendecomposition
//! (parallel cyclic Jacobi). Row-major f32 throughout. Shaders: `shaders/linalg/`.

mod cholesky;
mod eigen;
mod gemm;

pub(crate) use cholesky::{binding_elements, check_binding};
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

use crate::kernel::Kernel;

/// The kernels of the family: GEMM, Cholesky, Jacobi.
pub(crate) fn kernels() -> Vec<&'static Kernel> {
    vec![
        &gemm::GEMM,
        &gemm::MIRROR_LOWER,
        &cholesky::CHOLESKY_BLOCK,
        &cholesky::FORWARD_SUBSTITUTION,
        &cholesky::IDENTITY,
        &eigen::ANGLES,
        &eigen::ROTATE_ROWS,
        &eigen::ROTATE_COLUMNS,
        &eigen::NORMS,
    ]
}
