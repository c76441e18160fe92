//! f64 CPU references, written from the published algorithms independently of the shaders;
//! tests and benches compare against them and users may too.

pub mod diag;
pub mod kfac;
pub mod krylov;
pub mod linalg;
pub mod ot;
pub mod philox;
pub mod splitmix;
pub mod toy;
