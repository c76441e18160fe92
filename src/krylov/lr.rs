//! Learning-rate rules of thumb from curvature: the gradient-descent stability threshold
//! 2/λ_max and batch-size scaling (Granziol et al.). Both are heuristics, not guarantees:
//! they describe a quadratic model around the current point and the measured trend of the
//! maximal stable learning rate, not a bound for any particular network.

use crate::error::{Error, Result};

/// Largest learning rate for which plain gradient descent on the local quadratic model with
/// sharpness `lambda_max` (the top Hessian eigenvalue) does not diverge: 2/λ_max.
///
/// A heuristic: the quadratic model only holds locally, and SGD noise, momentum or adaptive
/// preconditioning change the threshold.
///
/// # Errors
/// [`Error::InvalidParameter`] unless `lambda_max` is finite and positive.
pub fn max_stable_lr_gd(lambda_max: f64) -> Result<f64> {
    if !(lambda_max.is_finite() && lambda_max > 0.0) {
        return Err(Error::param("lambda_max", lambda_max, "finite and > 0"));
    }
    Ok(2.0 / lambda_max)
}

/// How the learning rate follows the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchScaling {
    /// lr ∝ batch size: the observed trend for SGD (Granziol et al.). A heuristic.
    Linear,
    /// lr ∝ √(batch size): the observed trend for Adam-like adaptive methods (Granziol et
    /// al.). A heuristic.
    SquareRoot,
}

/// Rescales a learning rate tuned at `from_batch` to `to_batch` under `rule`.
///
/// A heuristic, not a guarantee: the scaling rules describe a trend that breaks down at large
/// batch sizes, and the result is not checked against the stability threshold
/// ([`max_stable_lr_gd`]).
///
/// # Errors
/// [`Error::InvalidParameter`] unless `lr` is finite and positive and both batch sizes are
/// positive.
pub fn scale_lr(lr: f64, from_batch: usize, to_batch: usize, rule: BatchScaling) -> Result<f64> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::param("lr", lr, "finite and > 0"));
    }
    if from_batch == 0 {
        return Err(Error::param("from_batch", 0.0, "> 0"));
    }
    if to_batch == 0 {
        return Err(Error::param("to_batch", 0.0, "> 0"));
    }
    let ratio = to_batch as f64 / from_batch as f64;
    Ok(match rule {
        BatchScaling::Linear => lr * ratio,
        BatchScaling::SquareRoot => lr * ratio.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gd_threshold_is_two_over_sharpness() {
        assert_eq!(max_stable_lr_gd(4.0).unwrap(), 0.5);
        assert_eq!(max_stable_lr_gd(0.1).unwrap(), 20.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                max_stable_lr_gd(bad),
                Err(Error::InvalidParameter {
                    name: "lambda_max",
                    ..
                })
            ));
        }
    }

    #[test]
    fn sgd_scales_linearly_and_adam_by_square_root() {
        assert_eq!(scale_lr(0.1, 128, 512, BatchScaling::Linear).unwrap(), 0.4);
        assert_eq!(
            scale_lr(0.1, 128, 512, BatchScaling::SquareRoot).unwrap(),
            0.2
        );
        assert_eq!(
            scale_lr(1e-3, 256, 64, BatchScaling::SquareRoot).unwrap(),
            5e-4
        );
        assert_eq!(scale_lr(0.3, 32, 32, BatchScaling::Linear).unwrap(), 0.3);
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |lr, from, to| match scale_lr(lr, from, to, BatchScaling::Linear) {
            Err(Error::InvalidParameter { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(0.0, 1, 1), "lr");
        assert_eq!(err(f64::NAN, 1, 1), "lr");
        assert_eq!(err(0.1, 0, 1), "from_batch");
        assert_eq!(err(0.1, 1, 0), "to_batch");
    }
}
