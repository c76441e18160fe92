//! Counter-based random vectors (`curvgpu::rng`) against the f64/u32 CPU reference
//! (`curvgpu::reference::philox`): raw words and Rademacher signs bit for bit, Gaussians within
//! an error bound derived from the Box–Muller expression, on awkward lengths and offsets, on
//! both dispatch shapes.

use crate::common::{both_gpus, gpu, read_buffer_words, EPS32};
use curvgpu::reference::philox;
use curvgpu::rng::{self, Distribution};
use curvgpu::{BufView, Gpu, GpuVec, Recorder};

/// Past 65,535 × 256 = 16,776,960 elements, so `gpu_wide_grid` (64 invocations, one element
/// each) needs 265,626 workgroups and folds its grid into 2-D.
const LARGE: usize = 17_000_003;

/// Awkward lengths below [`LARGE`]: 1, 3, a non-multiple of 4 just past one vec4, 2^k ± 1,
/// the prime 65,537 = 2^16 + 1, and the prime 1,000,003.
const SIZES: [usize; 8] = [1, 3, 5, 255, 257, 65_537, 1_048_575, 1_000_003];

/// Seeds: zero, one below 2^32, and one whose high word differs from its low word (> 2^32),
/// so a kernel that drops or swaps the key's high half cannot pass.
const SEEDS: [u64; 3] = [0, 0xDEAD_BEEF, 0x1234_5678_9ABC_DEF0];

/// Offsets: aligned, each misalignment mod 4, 2^32 − 5 (elements cross the 64-bit carry
/// into the block counter's high word after 5 draws), and one whose block index has a nonzero
/// high word (bits above 2^34 land in counter word 1).
const OFFSETS: [u64; 7] = [0, 1, 2, 3, 6, (1 << 32) - 5, (7 << 34) + (1 << 32) - 3];

/// Asserts equal bit patterns, reporting the first differing element and the count (never the
/// whole 17M-element vectors).
#[track_caller]
fn assert_bits_eq(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut diff = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w);
    if let Some((i, (g, w))) = diff.next() {
        panic!(
            "{what}: element {i} is {g:#010x}, want {w:#010x} ({} elements differ of {})",
            1 + diff.count(),
            got.len()
        );
    }
}

fn f32_bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn gpu_words(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Vec<u32> {
    let v = rng::philox_u32(gpu, n, seed, offset).expect("philox_u32");
    v.read().expect("read")
}

fn gpu_signs(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Vec<f32> {
    let v = rng::rademacher(gpu, n, seed, offset).expect("rademacher");
    v.read().expect("read")
}

fn gpu_normals(gpu: &Gpu, n: usize, seed: u64, offset: u64) -> Vec<f32> {
    let v = rng::gaussian(gpu, n, seed, offset).expect("gaussian");
    v.read().expect("read")
}

// ---- raw words and Rademacher signs: exact -------------------------------------------------

#[test]
fn philox_u32_matches_cpu_philox_bit_for_bit() {
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            for seed in SEEDS {
                for offset in OFFSETS {
                    let what =
                        format!("{name}: philox_u32 n {n}, seed {seed:#x}, offset {offset:#x}");
                    assert_bits_eq(
                        &what,
                        &gpu_words(gpu, n, seed, offset),
                        &philox::philox_u32(seed, offset, n),
                    );
                }
            }
        }
    }
    // The large length once per device, from an offset whose carry into the block's high word
    // happens after 5 elements, with a seed above 2^32.
    let (seed, offset) = (SEEDS[2], OFFSETS[5]);
    let want = philox::philox_u32(seed, offset, LARGE);
    for (name, gpu) in both_gpus() {
        let what = format!("{name}: philox_u32 n {LARGE}, offset 2^32 - 5");
        assert_bits_eq(&what, &gpu_words(gpu, LARGE, seed, offset), &want);
    }
}

#[test]
fn rademacher_matches_cpu_philox_bit_for_bit() {
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            for seed in SEEDS {
                for offset in [OFFSETS[0], OFFSETS[3], OFFSETS[5], OFFSETS[6]] {
                    let what =
                        format!("{name}: rademacher n {n}, seed {seed:#x}, offset {offset:#x}");
                    let got = gpu_signs(gpu, n, seed, offset);
                    let want = philox::rademacher(seed, offset, n);
                    assert_bits_eq(&what, &f32_bits(&got), &f32_bits(&want));
                }
            }
        }
    }
    let (seed, offset) = (SEEDS[2], OFFSETS[5]);
    let want = f32_bits(&philox::rademacher(seed, offset, LARGE));
    for (name, gpu) in both_gpus() {
        let what = format!("{name}: rademacher n {LARGE}, offset 2^32 - 5");
        assert_bits_eq(
            &what,
            &f32_bits(&gpu_signs(gpu, LARGE, seed, offset)),
            &want,
        );
    }
}

// ---- Gaussians: an error bound from the Box–Muller expression ------------------------------

/// Unit roundoff of f32, 2^-24.
const U: f64 = EPS32 / 2.0;

/// Accuracy budgets for the GPU's f32 `log`, `sqrt`, `cos`/`sin`. WGSL only promises log to
/// 2^-21 absolute on [0.5, 2] and sin/cos to 2^-11 absolute, far too loose to catch a wrong
/// constant, so these are set at about 2× the worst errors measured exhaustively on lavapipe
/// and llvmpipe-GL over every input the kernel can produce (all 2^24 values of u1 and of u2):
///   log, u1 ∈ [0.5, 1): max |Δ| = 2.18·u, an absolute (not relative) error near u1 = 1;
///   log, u1 < 0.5: max relative error 3.78·u;
///   sqrt: 1.00·u relative; cos/sin of the f32 angle: max |Δ| = 1.30·u.
const LOG_ABS: f64 = 4.0 * U; // δ: absolute error of log(u1)
const LOG_REL: f64 = 8.0 * U; // ρ: relative error of log(u1)
const SQRT_REL: f64 = 2.0 * U; // relative error of sqrt
const TRIG_ABS: f64 = 3.0 * U; // absolute error of cos/sin at the f32 angle

/// |fl32(2π) − 2π| = |6.2831855 − 2π|: the kernel's f32 constant for 2π.
const TWO_PI_F32_ERR: f64 = 1.7484556e-7;

/// Error bound for one Gaussian ẑ = fl(r̂ · trig(θ̂)) of radius r = √(−2 ln u1):
///
/// * radius: the squared radius −2L has error 2|ΔL| ≤ 2δ + ρ·r² (2|L| = r²), and
///   |√a − √b| = |a − b| / (√a + √b) ≤ min(|a − b| / r, √|a − b|); the sqrt adds SQRT_REL·r.
///   The 1/r term is real: near u1 = 1 an absolute error in log becomes a large relative
///   error in the radius (r ≈ 3.5e-4 at the largest u1 = 1 − 2^-24): measured |Δz| reaches
///   7.4e-5 at z ≈ 9e-4, so no bound of the form c·(1 + |z|) with c near 1e-5 holds.
/// * angle: θ̂ = fl(fl(2π)·u2) is off by ≤ |fl(2π) − 2π|·u2 + u·2π; the trig function adds
///   TRIG_ABS, so |trig(θ̂) − trig(θ)| ≤ that sum, times r.
/// * the final product rounds once: u·|z| (plus second-order terms, covered by the 2× slack
///   of the budgets above).
fn box_muller_bound(r: f64, z: f64) -> f64 {
    let dr2 = 2.0 * LOG_ABS + LOG_REL * r * r;
    let radius = (dr2 / r).min(dr2.sqrt()) + SQRT_REL * r;
    let angle = TWO_PI_F32_ERR + U * std::f64::consts::TAU + TRIG_ABS;
    radius + r * angle + U * z.abs()
}

/// Reference Gaussians for elements `offset..offset + n` and each element's radius r
/// (the hypotenuse of its Box–Muller pair, computed in f64 from the same reference stream).
fn reference_normals(seed: u64, offset: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let start = offset & !3;
    let lead = (offset - start) as usize;
    let all = philox::gaussian(seed, start, (lead + n).div_ceil(4) * 4);
    let radius: Vec<f64> = (lead..lead + n)
        .map(|j| {
            let a = j & !1;
            all[a].hypot(all[a + 1])
        })
        .collect();
    (all[lead..lead + n].to_vec(), radius)
}

/// Checks every element against [`box_muller_bound`]; returns the worst |Δ|/bound.
#[track_caller]
fn check_normals(what: &str, got: &[f32], want: &[f64], radius: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &r)) in got.iter().zip(want).zip(radius).enumerate() {
        let bound = box_muller_bound(r, w);
        let err = (g as f64 - w).abs();
        assert!(
            err <= bound,
            "{what}: element {i}: got {g}, want {w} (radius {r}), |err| {err:e} > bound {bound:e}"
        );
        worst = worst.max(err / bound);
    }
    worst
}

#[test]
fn gaussian_matches_f64_box_muller_within_derived_bound() {
    let mut worst = 0.0f64;
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            for (seed, offset) in [(SEEDS[0], 0), (SEEDS[1], 3), (SEEDS[2], OFFSETS[5])] {
                let what = format!("{name}: gaussian n {n}, seed {seed:#x}, offset {offset:#x}");
                let (want, radius) = reference_normals(seed, offset, n);
                let got = gpu_normals(gpu, n, seed, offset);
                worst = worst.max(check_normals(&what, &got, &want, &radius));
            }
        }
    }
    let (seed, offset) = (SEEDS[2], OFFSETS[6]);
    let (want, radius) = reference_normals(seed, offset, LARGE);
    for (name, gpu) in both_gpus() {
        let what = format!("{name}: gaussian n {LARGE}");
        let got = gpu_normals(gpu, LARGE, seed, offset);
        worst = worst.max(check_normals(&what, &got, &want, &radius));
    }
    eprintln!("gaussian: worst |err| / bound = {worst:.3}");
}

/// Sample moments of 2^20 GPU normals. The stream is deterministic, so the test cannot flake;
/// the bounds are 5 standard errors of the estimators for a true N(0, 1):
/// mean 1/√n, variance √(2/n), fourth moment √((E z⁸ − 9)/n) = √(96/n).
#[test]
fn gaussian_moments_match_standard_normal() {
    let n = 1usize << 20;
    let nf = n as f64;
    let z = gpu_normals(gpu(), n, 0x5EED, 17);
    let moment = |k: i32| z.iter().map(|&v| (v as f64).powi(k)).sum::<f64>() / nf;
    let (mean, m2, m3, m4) = (moment(1), moment(2), moment(3), moment(4));
    let var = m2 - mean * mean;
    eprintln!("gaussian moments: mean {mean:.5}, var {var:.5}, m3 {m3:.5}, m4 {m4:.5}");
    assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
        "variance {var}"
    );
    // E z⁶ = 15: standard error of the third moment √(15/n).
    assert!(m3.abs() < 5.0 * (15.0 / nf).sqrt(), "third moment {m3}");
    assert!(
        (m4 - 3.0).abs() < 5.0 * (96.0 / nf).sqrt(),
        "fourth moment {m4}"
    );
    // Box–Muller from 24-bit uniforms: |z| ≤ √(−2 ln 2^-24) = 5.77.
    let max = z.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    assert!(max <= 5.7683, "max |z| {max}");
}

/// The same check for the signs: mean 0, within 5 standard errors 1/√n.
#[test]
fn rademacher_is_balanced() {
    let n = 1usize << 20;
    let x = gpu_signs(gpu(), n, 0x5EED, 17);
    assert!(x.iter().all(|&v| v == 1.0 || v == -1.0), "not ±1");
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "mean {mean}");
}

// ---- stream identity: seeds and offsets --------------------------------------------------

/// Number of positions where two word streams agree. For independent uniform words the
/// expectation is n / 2^32 (0.015 for n = 65,537), so more than 3 means related streams.
fn agreements(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

#[test]
fn different_seeds_give_different_streams() {
    let n = 65_537;
    let base = 0x1234_5678_9ABC_DEF0u64;
    // Neighbouring seeds, and seeds differing only in the key's high or low word.
    let seeds = [
        base,
        base + 1,
        base ^ (1 << 32),
        base ^ (1 << 63),
        base & 0xFFFF_FFFF,
    ];
    for (name, gpu) in both_gpus() {
        let streams: Vec<Vec<u32>> = seeds.iter().map(|&s| gpu_words(gpu, n, s, 3)).collect();
        for i in 0..seeds.len() {
            for j in i + 1..seeds.len() {
                let same = agreements(&streams[i], &streams[j]);
                assert!(
                    same <= 3,
                    "{name}: seeds {:#x} and {:#x} agree at {same} of {n} words",
                    seeds[i],
                    seeds[j]
                );
            }
        }
    }
}

#[test]
fn different_offsets_give_different_streams_and_overlaps_agree() {
    let n = 65_537;
    let seed = SEEDS[2];
    for (name, gpu) in both_gpus() {
        for base in [0u64, (1 << 32) - 5] {
            let whole = gpu_words(gpu, n + 8, seed, base);
            // Starting k elements later is the same stream shifted by k (any k, not just 4s).
            for k in 1..=8usize {
                let shifted = gpu_words(gpu, n, seed, base + k as u64);
                assert_bits_eq(
                    &format!("{name}: offset {base:#x} + {k}"),
                    &shifted,
                    &whole[k..k + n],
                );
            }
            // Disjoint ranges, including one 2^32 elements away (same low word of the offset),
            // are unrelated.
            for other in [base + n as u64 + 8, base + (1 << 32), base + (1 << 34)] {
                let same = agreements(&whole[..n], &gpu_words(gpu, n, seed, other));
                assert!(
                    same <= 3,
                    "{name}: offsets {base:#x} and {other:#x} agree at {same} of {n}"
                );
            }
        }
    }
}

// ---- recording into a caller's buffers ----------------------------------------------------

#[test]
fn record_fill_into_packed_subrange_leaves_neighbours_untouched() {
    const SENTINEL: f32 = 12345.5;
    let gpu = gpu();
    let lens = [5usize, 37, 3, 10];
    let seed = SEEDS[2];
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Bits,
    ] {
        let parts = GpuVec::<f32>::packed(gpu, &lens).expect("packed");
        for (p, &len) in parts.iter().zip(&lens) {
            p.write(&vec![SENTINEL; len]).expect("write");
        }
        // Fill the 2nd and 3rd tensors (37 and 3 elements: neither a multiple of 4), from
        // offsets that are not multiples of 4 either.
        let mut rec = Recorder::new(gpu);
        rng::record_fill(&mut rec, dist, parts[1].view(), seed, 7).expect("record 1");
        rng::record_fill(&mut rec, dist, parts[2].view(), seed, 44).expect("record 2");
        rec.submit().expect("submit");

        let read = |i: usize| parts[i].read().expect("read");
        assert_eq!(read(0), vec![SENTINEL; 5], "{dist:?}: tensor before");
        assert_eq!(read(3), vec![SENTINEL; 10], "{dist:?}: tensor after");
        for (i, offset) in [(1usize, 7u64), (2, 44)] {
            let got = f32_bits(&read(i));
            let what = format!("{dist:?}: filled tensor {i}");
            match dist {
                Distribution::Bits => {
                    assert_bits_eq(&what, &got, &philox::philox_u32(seed, offset, lens[i]))
                }
                Distribution::Rademacher => assert_bits_eq(
                    &what,
                    &got,
                    &f32_bits(&philox::rademacher(seed, offset, lens[i])),
                ),
                Distribution::Gaussian => {
                    let (want, radius) = reference_normals(seed, offset, lens[i]);
                    let got: Vec<f32> = got.iter().map(|&b| f32::from_bits(b)).collect();
                    check_normals(&what, &got, &want, &radius);
                }
            }
        }
        // The padding between tensors (zero-filled by `packed`) is untouched too.
        let words = read_buffer_words(gpu, parts[0].buffer());
        for (i, &len) in lens.iter().enumerate().take(lens.len() - 1) {
            let end = (parts[i].byte_offset() / 4) as usize + len;
            let next = (parts[i + 1].byte_offset() / 4) as usize;
            assert!(
                words[end..next].iter().all(|&w| w == 0),
                "{dist:?}: padding words {end}..{next} changed: {:x?}",
                &words[end..next]
            );
        }
    }
}

#[test]
fn record_fill_into_a_callers_raw_buffer_at_an_offset() {
    let gpu = gpu();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let words = 3 * align / 4 + 29;
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's buffer"),
        size: 4 * words,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    // A window starting one alignment unit in and stopping 3 words before the end.
    let first = (align / 4) as usize;
    let len = words as usize - first - 3;
    let mut rec = Recorder::new(gpu);
    rng::record_fill(
        &mut rec,
        Distribution::Bits,
        BufView::new(&buffer, align, len),
        99,
        1,
    )
    .expect("record");
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    rec.encode(&mut encoder);
    gpu.queue().submit([encoder.finish()]);
    let got = read_buffer_words(gpu, &buffer);
    assert!(
        got[..first].iter().all(|&w| w == 0),
        "words before the window changed"
    );
    assert!(
        got[first + len..].iter().all(|&w| w == 0),
        "words after the window changed"
    );
    assert_bits_eq(
        "window",
        &got[first..first + len],
        &philox::philox_u32(99, 1, len),
    );
}
