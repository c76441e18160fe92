//! Diagonal-Hessian optimizers, each step one fused pass over memory: SophiaG, SophiaH,
//! AdaHessian, and the Hutchinson diagonal estimator. Shaders: `shaders/diag/`.

mod adahessian;
mod hutchinson;
mod sophia;
mod state;

pub use adahessian::{AdaHessian, AdaHessianConfig, Averaging, TensorSpec};
pub use hutchinson::HutchinsonDiag;
pub use sophia::{SophiaG, SophiaGConfig, SophiaH, SophiaHConfig};
pub use state::{DiagState, TensorState};
