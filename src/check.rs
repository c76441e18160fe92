//! Argument checks shared by every kernel family: each failure names the argument.

use crate::error::{Error, Result};

/// `value` finite and > 0.
pub(crate) fn positive(name: &'static str, value: f32) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, value as f64, "finite and > 0"))
    }
}

/// `value` finite and ≥ 0.
pub(crate) fn non_negative(name: &'static str, value: f32) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, value as f64, "finite and ≥ 0"))
    }
}

/// An EMA coefficient: 0 ≤ β < 1.
pub(crate) fn beta(name: &'static str, value: f32) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::param(name, value as f64, "in [0, 1)"))
    }
}

/// A list of `actual` tensors where `expected` are needed.
pub(crate) fn same_count(argument: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::CountMismatch {
            argument,
            expected,
            actual,
        })
    }
}

/// An iteration limit: at least 1 (every solver refuses 0 the same way).
pub(crate) fn iterations(name: &'static str, value: usize) -> Result<()> {
    match value {
        0 => Err(Error::param(name, 0.0, "at least 1")),
        _ => Ok(()),
    }
}
