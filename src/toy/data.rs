//! The toy dataset (interleaved spirals) and the parameter initialisation, both on the host and
//! deterministic from a seed, so a browser run and a native run start from identical bits.

use crate::check;
use crate::error::{Error, Result};

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

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, seedable, and the same on every target.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller (the cosine branch only: simple beats fast here).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: the logarithm stays finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
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
    let mut x = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..points_per_class {
        let r = (i + 1) as f64 / points_per_class as f64;
        for c in 0..classes {
            let angle = std::f64::consts::TAU * c as f64 / classes as f64 + SWEEP * r;
            let dx = f64::from(noise) * rng.gaussian();
            let dy = f64::from(noise) * rng.gaussian();
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
