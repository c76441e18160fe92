//! The toy dataset (interleaved spirals) and the parameter initialisation, both on the host and
//! deterministic from a seed, so a browser run and a native run start from identical bits.

use crate::check;
use crate::error::{Error, Result};
use crate::reference::splitmix::{box_muller, SplitMix64};

use super::MlpShape;

/// A classification dataset held on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Inputs, N × `inputs` row-major.
    pub x: Vec<f32>,
    /// One class index per sample, each < `classes`.
    pub labels: Vec<u32>,
    /// Features per sample.
    pub inputs: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of samples N.
    pub fn samples(&self) -> usize {
        self.labels.len()
    }
}

/// A standard normal from `rng`: Box–Muller on u1 = 1 − U, in (0, 1], and then U, both from
/// `SplitMix64::uniform` (the mapping the spirals were published with, kept bit for bit).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.uniform();
    let u2 = rng.uniform();
    box_muller(u1, u2)
}

/// Angle, in radians, that each spiral arm sweeps from the centre to radius 1.
const SWEEP: f64 = 4.0;

/// Interleaved spirals in 2-D: `classes` arms, `points_per_class` points each, and Gaussian
/// noise of standard deviation `noise` added to each coordinate; deterministic from `seed`.
///
/// Point i (0-based) of class c lies at radius r = (i + 1)/points_per_class and angle
/// 2π·c/classes + 4·r radians, i.e. (r·cos, r·sin). Samples are stored point-major
/// (sample i·classes + c), so every prefix of the dataset is class-balanced.
pub fn spirals(points_per_class: usize, classes: usize, noise: f32, seed: u64) -> Result<Dataset> {
    if points_per_class == 0 {
        return Err(Error::Empty {
            argument: "points_per_class",
        });
    }
    if classes == 0 {
        return Err(Error::Empty {
            argument: "classes",
        });
    }
    check::non_negative("noise", noise)?;
    let n = points_per_class
        .checked_mul(classes)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            Error::param(
                "points_per_class",
                points_per_class as f64,
                "× classes < 2³²",
            )
        })?;
    let mut rng = SplitMix64::new(seed);
    // Two coordinates per sample: past usize (a 32-bit host) it cannot be held either.
    let coords = n.checked_mul(2).ok_or(Error::HostMemory {
        argument: "points_per_class",
        bytes: 8 * n as u64,
    })?;
    let mut x = crate::host::vec_with_capacity("points_per_class", coords)?;
    let mut labels = crate::host::vec_with_capacity("points_per_class", n)?;
    for i in 0..points_per_class {
        let r = (i + 1) as f64 / points_per_class as f64;
        for c in 0..classes {
            let angle = std::f64::consts::TAU * c as f64 / classes as f64 + SWEEP * r;
            let dx = f64::from(noise) * gaussian(&mut rng);
            let dy = f64::from(noise) * gaussian(&mut rng);
            x.push((r * angle.cos() + dx) as f32);
            x.push((r * angle.sin() + dy) as f32);
            labels.push(c as u32);
        }
    }
    Ok(Dataset {
        x,
        labels,
        inputs: 2,
        classes,
    })
}

/// θ for `shape`: weights uniform in ±1/√fan_in (fan_in = inputs for W1, hidden for W2), drawn
/// in θ's order from SplitMix64(`seed`); biases zero.
pub(crate) fn init_params(shape: MlpShape, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut weights = |count: usize, fan_in: usize| -> Vec<f32> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        (0..count)
            .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
            .collect()
    };
    let (d, h, c) = (shape.inputs, shape.hidden, shape.classes);
    let mut theta = weights(h * d, d);
    theta.extend(std::iter::repeat_n(0.0, h));
    theta.extend(weights(c * h, h));
    theta.extend(std::iter::repeat_n(0.0, c));
    theta
}
