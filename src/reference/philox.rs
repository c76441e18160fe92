//! Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC11) and
//! the element-indexed probe streams built on it.
//!
//! Stream contract, shared with the GPU shader: element `e = offset + i` reads block
//! `b = e / 4`, word `e % 4`, of `philox4x32_10([b_lo, b_hi, 0, 0], [seed_lo, seed_hi])`.
//! Any element can therefore be regenerated on its own, whatever the launch geometry.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;
/// 2^-24: the uniforms keep 24 bits so that they are exact in f32 as well.
const TWO_POW_M24: f64 = 1.0 / 16_777_216.0;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Round count is a parameter only so the tests can also check Random123's 7-round vectors.
fn philox4x32(rounds: u32, mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for r in 0..rounds {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Random123's Philox4x32 with 10 rounds: a keyed bijection of the 128-bit counter.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32(10, counter, key)
}

/// Maps elements `offset..offset + n` of the stream through `f(block, lane)`.
fn stream<T>(seed: u64, offset: u64, n: usize, f: impl Fn(&[u32; 4], usize) -> T) -> Vec<T> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n as u64)
        .map(|i| {
            let e = offset + i;
            let b = e / 4;
            f(
                &philox4x32_10([b as u32, (b >> 32) as u32, 0, 0], key),
                (e % 4) as usize,
            )
        })
        .collect()
}

/// Raw 32-bit words of elements `offset..offset + n` of the stream for `seed`.
pub fn philox_u32(seed: u64, offset: u64, n: usize) -> Vec<u32> {
    stream(seed, offset, n, |w, lane| w[lane])
}

/// Rademacher (±1) probes: −1 where the element's word has its top bit set, else +1.
pub fn rademacher(seed: u64, offset: u64, n: usize) -> Vec<f32> {
    stream(seed, offset, n, |w, lane| {
        if w[lane] & 0x8000_0000 != 0 {
            -1.0
        } else {
            1.0
        }
    })
}

/// Standard normal probes by Box–Muller, computed in f64.
///
/// Lanes 0 and 1 of a block share the words (w0, w1), lanes 2 and 3 share (w2, w3); the
/// even lane takes the cosine branch and the odd lane the sine branch of the same pair.
/// `u1 = ((w_a >> 8) | 1)·2^-24` lies in (0, 1), so its logarithm is finite; the angle is
/// `2π·(u2 − ½)` with `u2 = (w_b >> 8)·2^-24`, inside [−π, π) where WGSL bounds sin and cos.
pub fn gaussian(seed: u64, offset: u64, n: usize) -> Vec<f64> {
    stream(seed, offset, n, |w, lane| {
        let a = lane & !1;
        let u1 = f64::from((w[a] >> 8) | 1) * TWO_POW_M24;
        let u2 = f64::from(w[a + 1] >> 8) * TWO_POW_M24;
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * (u2 - 0.5);
        if lane % 2 == 0 {
            r * angle.cos()
        } else {
            r * angle.sin()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Random123 tests/kat_vectors, as reproduced in DEShawResearch/Random123-Boost
    // libs/random/test/test_philox.cpp.
    type Kat = (u32, [u32; 4], [u32; 2], [u32; 4]); // rounds, counter, key, expected
    const KAT: [Kat; 6] = [
        (
            7,
            [0; 4],
            [0; 2],
            [0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48],
        ),
        (
            7,
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662],
        ),
        (
            7,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a],
        ),
        (
            10,
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            10,
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            10,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    const SEED: u64 = 0x0123_4567_89ab_cdef;
    const KEY: [u32; 2] = [0x89ab_cdef, 0x0123_4567];

    #[test]
    fn known_answers() {
        for (rounds, ctr, key, want) in KAT {
            assert_eq!(
                philox4x32(rounds, ctr, key),
                want,
                "{rounds} rounds, ctr {ctr:08x?}"
            );
            if rounds == 10 {
                assert_eq!(philox4x32_10(ctr, key), want);
            }
        }
    }

    #[test]
    fn stream_mapping() {
        let b0 = philox4x32_10([0, 0, 0, 0], KEY);
        let b1 = philox4x32_10([1, 0, 0, 0], KEY);
        assert_eq!(philox_u32(SEED, 0, 4), b0);
        assert_eq!(philox_u32(SEED, 4, 4), b1);
        assert_eq!(philox_u32(SEED, 2, 3), [b0[2], b0[3], b1[0]]);
        // The block index's high half goes in counter word 1.
        let high = philox4x32_10([0, 1, 0, 0], KEY);
        assert_eq!(philox_u32(SEED, (1 << 34) + 1, 2), [high[1], high[2]]);
        assert!(philox_u32(0, 0, 0).is_empty());
    }

    #[test]
    fn rademacher_follows_top_bit() {
        let words = philox_u32(SEED, 3, 64);
        let signs = rademacher(SEED, 3, 64);
        for (w, s) in words.iter().zip(&signs) {
            assert_eq!(*s, if *w >= 0x8000_0000 { -1.0 } else { 1.0 });
        }
    }

    #[test]
    fn rademacher_moments() {
        let n = 1 << 20;
        let x = rademacher(7, 0, n);
        assert!(x.iter().all(|&v| v == 1.0 || v == -1.0));
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "mean {mean}");
    }

    #[test]
    fn gaussian_pairs_share_a_radius() {
        let w = philox4x32_10([0, 0, 0, 0], KEY);
        let z = gaussian(SEED, 0, 4);
        for a in [0, 2] {
            let u1 = f64::from((w[a] >> 8) | 1) * TWO_POW_M24;
            let r2 = z[a] * z[a] + z[a + 1] * z[a + 1];
            assert!((r2 + 2.0 * u1.ln()).abs() < 1e-12, "lanes {a},{}", a + 1);
        }
        assert_eq!(gaussian(SEED, 3, 2), [z[3], gaussian(SEED, 4, 1)[0]]);
    }

    #[test]
    fn gaussian_moments() {
        let n = 1 << 20;
        let nf = n as f64;
        let x = gaussian(11, 5, n);
        let moment = |k: i32| x.iter().map(|v| v.powi(k)).sum::<f64>() / nf;
        let (mean, m2, m4) = (moment(1), moment(2), moment(4));
        assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
        let var = m2 - mean * mean;
        assert!(
            (var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
            "variance {var}"
        );
        assert!((m4 - 3.0).abs() < 0.05, "fourth moment {m4}");
    }
}
