//! SplitMix64 (Steele, Lea & Flood 2014), the crate's one host-side generator of deterministic
//! data: tiny, seedable and bit-identical on every target, so a browser run and a native run,
//! and a test and its reference, start from the same values.

/// A SplitMix64 stream. Each user keeps the seeding and the mapping to f64 it was written
/// with (`uniform` or `uniform_positive`, `gaussian` or [`box_muller`] on its own draws), so
/// the data it generates never changes.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream whose first output mixes `seed + γ` (γ = 2⁶⁴/φ, the golden-ratio increment).
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits of one draw, k/2⁵³.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1]: (k + 1)/2⁵³ for the same k, so a logarithm of it stays finite.
    pub fn uniform_positive(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal: [`box_muller`] of two `uniform_positive` draws, in that order.
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform_positive();
        let u2 = self.uniform_positive();
        box_muller(u1, u2)
    }
}

/// Box–Muller, the cosine branch only (simple beats fast here): √(−2 ln u1)·cos(2π u2), a
/// standard normal for independent u1 uniform in (0, 1] and u2 uniform in [0, 1] or (0, 1].
pub fn box_muller(u1: f64, u2: f64) -> f64 {
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs for seed 0 published with the algorithm (Vigna's splitmix64.c), so a
    /// slip in a constant or a shift cannot pass.
    #[test]
    fn matches_the_published_sequence() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    /// The two uniforms map the same k to k/2⁵³ and (k + 1)/2⁵³.
    #[test]
    fn uniforms_share_the_draw() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..100 {
            let (u, p) = (a.uniform(), b.uniform_positive());
            assert_eq!(p - u, 1.0 / (1u64 << 53) as f64);
            assert!((0.0..1.0).contains(&u) && p > 0.0 && p <= 1.0);
        }
    }
}
