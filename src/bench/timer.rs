//! How fine the clock behind a measurement is. Browsers coarsen both clocks on purpose: Chrome
//! masks the low 16 bits of every WebGPU timestamp (Dawn's `kTimestampQuantizationMask`, a
//! 65,536 ns step its release notes round to "100 µs") unless
//! `--enable-webgpu-developer-features` is on (headless Chromium 156 with
//! `--enable-unsafe-webgpu`, as the browser test runs it, showed no rounding either), and
//! `performance.now()` moves in steps of 5 to 100 µs. A median below a few steps is then a
//! count of steps, not a time, and a pass inside one step measures 0.

use web_time::{Duration, Instant};

/// Below this a clock counts as fine enough not to mention: every kernel time worth reporting
/// is then hundreds of steps.
pub const FINE_NS: f64 = 1_000.0;

/// A median under this many clock steps is flagged as coarse.
pub const COARSE_STEPS: f64 = 10.0;

/// Fewest nonzero gaps between distinct stamps before a common step is believed. A fine
/// clock's stamps share a factor ≥ 1,000 ticks by chance with probability about
/// Σ_{d ≥ 1000} d^−k: 1 for one gap (its own length), ~10⁻³ for two, ~5·10⁻⁷ for three.
const MIN_GAPS: usize = 3;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The step of a quantised timestamp clock, in nanoseconds, read off raw stamps (ticks of
/// `period_ns` each, e.g. the begin and end of every timed pass): the greatest common divisor
/// of their distances from the first nonzero stamp. Distances rather than the stamps
/// themselves, so a clock quantised from an origin other than zero is found too.
///
/// `None` when the step is under [`FINE_NS`] or cannot be told: zeros are skipped (an
/// unwritten query reads 0), and fewer than three distinct nonzero gaps prove nothing (one
/// gap is always a multiple of itself). With more stamps the answer can only shrink towards
/// the true step, so pool every stamp a clock produced before asking.
pub fn timestamp_resolution_ns(ticks: &[u64], period_ns: f64) -> Option<f64> {
    let mut nonzero = ticks.iter().copied().filter(|&t| t != 0);
    let first = nonzero.next()?;
    let mut gaps: Vec<u64> = nonzero
        .map(|t| t.abs_diff(first))
        .filter(|&d| d != 0)
        .collect();
    gaps.sort_unstable();
    gaps.dedup();
    if gaps.len() < MIN_GAPS {
        return None;
    }
    let step = gaps.iter().fold(0, |g, &d| gcd(g, d)) as f64 * period_ns;
    (step >= FINE_NS).then_some(step)
}

/// The step of the host clock behind wall-clock timings ([`web_time::Instant`]: the OS clock
/// natively, `performance.now()` in a browser), in nanoseconds: the median of five observed
/// ticks, spinning at most 100 ms. `None` when under [`FINE_NS`], or when the clock did not
/// move five times in 100 ms.
pub fn wall_clock_resolution_ns() -> Option<f64> {
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut steps = Vec::with_capacity(5);
    let mut last = Instant::now();
    while steps.len() < 5 {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        if now != last {
            steps.push(now.duration_since(last).as_secs_f64() * 1e9);
            last = now;
        }
    }
    let step = super::median(&steps);
    (step >= FINE_NS).then_some(step)
}

/// Whether a median of `median_ms` is under [`COARSE_STEPS`] steps of a clock of resolution
/// `resolution_ns` (never for a fine clock).
pub fn is_coarse(median_ms: f64, resolution_ns: Option<f64>) -> bool {
    resolution_ns.is_some_and(|step| median_ms * 1e6 < COARSE_STEPS * step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic, well-mixed sequence (SplitMix64) standing in for a fine clock's
    /// low-order bits.
    fn splitmix(seed: u64, count: usize) -> Vec<u64> {
        let mut s = seed;
        (0..count)
            .map(|_| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
            .collect()
    }

    /// Begin/end stamps of `runs` passes starting near `origin`, each from random jitter:
    /// `quantum` = 1 is a nanosecond clock, larger values floor every stamp to a multiple.
    fn stamps(origin: u64, runs: usize, quantum: u64, seed: u64) -> Vec<u64> {
        let jitter = splitmix(seed, 2 * runs);
        let mut t = origin;
        let mut out = Vec::new();
        for pair in jitter.chunks(2) {
            t += 20_000 + pair[0] % 1_000_000;
            out.push(t / quantum * quantum);
            t += 50_000 + pair[1] % 400_000;
            out.push(t / quantum * quantum);
        }
        out
    }

    #[test]
    fn multiples_of_100_us_give_100_us() {
        let ticks = stamps(1_700_000_000_000_000, 10, 100_000, 1);
        assert!(ticks.iter().all(|t| t % 100_000 == 0));
        assert_eq!(timestamp_resolution_ns(&ticks, 1.0), Some(100_000.0));
    }

    #[test]
    fn dawn_mask_gives_65536_ns() {
        // Dawn clears the low 16 bits of each stamp.
        let ticks: Vec<u64> = stamps(123_456_789_012_345, 10, 1, 2)
            .into_iter()
            .map(|t| t & !0xffff)
            .collect();
        assert_eq!(timestamp_resolution_ns(&ticks, 1.0), Some(65_536.0));
    }

    #[test]
    fn the_period_scales_ticks_to_nanoseconds() {
        // 1 µs steps counted in ticks of 83.33 ns (a 12 MHz clock): 12 ticks.
        // Steps of 1, 2, 4 and 5 µs apart: their only common step is 1 µs.
        let ticks: Vec<u64> = [1_000, 1_001, 1_003, 1_007, 1_012]
            .iter()
            .map(|k| 12 * k)
            .collect();
        let step = timestamp_resolution_ns(&ticks, 1e9 / 12e6).unwrap_or(0.0);
        assert!((step - 1_000.0).abs() < 1e-6, "{step}");
    }

    #[test]
    fn fine_grained_ticks_give_none() {
        for seed in 0..20 {
            let ticks = stamps(1_700_000_000_000_000, 3, 1, seed);
            assert_eq!(timestamp_resolution_ns(&ticks, 1.0), None, "seed {seed}");
        }
        // A clock stepping 500 ns is fine enough not to flag.
        let ticks = stamps(0, 10, 500, 3);
        assert_eq!(timestamp_resolution_ns(&ticks, 1.0), None);
    }

    #[test]
    fn a_single_sample_proves_nothing() {
        // One pass quantised to 100 µs: its single gap is 100 µs times anything.
        assert_eq!(timestamp_resolution_ns(&[500_000, 800_000], 1.0), None);
        assert_eq!(timestamp_resolution_ns(&[500_000], 1.0), None);
        assert_eq!(timestamp_resolution_ns(&[], 1.0), None);
        // Many passes inside one quantum: every stamp equal, no gap at all.
        assert_eq!(timestamp_resolution_ns(&[700_000; 20], 1.0), None);
    }

    #[test]
    fn zeros_are_skipped() {
        assert_eq!(timestamp_resolution_ns(&[0; 12], 1.0), None);
        let mut ticks = stamps(9_000_000_000, 6, 100_000, 4);
        ticks.extend([0, 0, 0]);
        ticks.insert(0, 0);
        assert_eq!(timestamp_resolution_ns(&ticks, 1.0), Some(100_000.0));
    }

    #[test]
    fn coarse_means_under_ten_steps() {
        assert!(is_coarse(0.5, Some(100_000.0)));
        assert!(!is_coarse(1.0, Some(100_000.0)));
        assert!(!is_coarse(1e-6, None));
    }

    #[test]
    fn the_native_wall_clock_is_fine() {
        // Every OS clock Rust's Instant wraps ticks well under a microsecond.
        assert_eq!(wall_clock_resolution_ns(), None);
    }
}
