//! f64 CPU references, written from the published algorithms independently of the shaders;
//! tests and benches compare against them and users may too. Behind the `reference` feature,
//! except [`splitmix`], the one deterministic generator the library's toy data share with them.

#[cfg(feature = "reference")]
pub mod diag;
#[cfg(feature = "reference")]
pub mod kfac;
#[cfg(feature = "reference")]
pub mod krylov;
#[cfg(feature = "reference")]
pub mod linalg;
#[cfg(feature = "reference")]
pub mod ot;
#[cfg(feature = "reference")]
pub mod philox;
pub mod splitmix;
#[cfg(feature = "reference")]
pub mod toy;
