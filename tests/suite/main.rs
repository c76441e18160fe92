//! The whole integration suite in one binary (one link, one device): a module per family,
//! every kernel against its f64 CPU reference, every bad input against its typed error.

mod common;

mod base {
    mod async_twins;
    mod engine;
    mod errors;
    mod finite;
    mod reduce;
    mod rng;
    mod shaders;
}

mod diag {
    mod adahessian;
    mod adamw;
    mod battery;
    mod sophia;
}

mod krylov {
    mod cg;
    mod errors;
    mod operators;
    mod spectrum;
}

mod linalg {
    mod cholesky;
    mod eigen;
    mod gemm;
}

mod kfac;
mod mfac;
mod mkor;
mod ot;
mod toy;
