//! Diagonal-Hessian optimizers, each step one fused pass over memory: SophiaG, SophiaH,
//! AdaHessian, and the Hutchinson diagonal estimator; and AdamW, the first-order baseline they
//! are compared against. Shaders: `shaders/diag/`.

mod adahessian;
mod adamw;
mod hutchinson;
mod sophia;
mod state;

pub use adahessian::{AdaHessian, AdaHessianConfig, Averaging, TensorSpec};
pub use adamw::{AdamW, AdamWConfig};
pub use hutchinson::HutchinsonDiag;
pub use sophia::{SophiaG, SophiaGConfig, SophiaH, SophiaHConfig};
pub use state::{DiagState, TensorState};

/// The kernels of this family.
pub(crate) fn kernels() -> Vec<&'static crate::kernel::Kernel> {
    [
        sophia::KERNELS,
        adahessian::KERNELS,
        adamw::KERNELS,
        hutchinson::KERNELS,
    ]
    .concat()
}
