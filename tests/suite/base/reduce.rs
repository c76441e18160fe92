//! Device-resident reductions (`curvgpu::reduce`) against f64: exact-answer designs that catch
//! a dropped, doubled or misplaced element, random data within a rounding-error bound derived
//! from the kernel's summation tree, and `record` into a caller's output slot.

use crate::common::{as_f32, both_gpus, gpu, poke, read_buffer_words, uniform, EPS32};
use curvgpu::reduce::{self, Reduction};
use curvgpu::{BufView, Gpu, GpuVec, Recorder};

/// Past 65,535 × 256 = 16,776,960 elements (and past 2^24, where f32 stops counting exactly).
const LARGE: usize = 17_000_003;

/// Awkward lengths: 1, 3 (tail only, no vec4), 4, 5, 2^8 ± 1, the prime 65,537 = 2^16 + 1,
/// the prime 1,000,003, and [`LARGE`].
const SIZES: [usize; 9] = [1, 3, 4, 5, 255, 257, 65_537, 1_000_003, LARGE];

const OPS: [Reduction; 4] = [
    Reduction::Sum,
    Reduction::SquaredNorm,
    Reduction::Dot,
    Reduction::MaxAbs,
];

/// `src/reduce.rs`'s cap on first-pass workgroups (`MAX_PARTIALS`).
const MAX_PARTIALS: u64 = 1024;

/// Unit roundoff of f32, 2^-24.
const U: f64 = EPS32 / 2.0;

fn run(gpu: &Gpu, op: Reduction, x: &GpuVec<f32>, y: &GpuVec<f32>) -> f32 {
    let y = (op == Reduction::Dot).then(|| y.view());
    reduce::reduce(gpu, op, x, y).unwrap_or_else(|e| panic!("{op:?} of {} elements: {e}", x.len()))
}

/// The f64 value of `op` over the f32 inputs, and Σ|term| (the scale of the rounding error).
fn reference(op: Reduction, x: &[f32], y: &[f32]) -> (f64, f64) {
    let term = |i: usize| -> f64 {
        let (a, b) = (x[i] as f64, y[i] as f64);
        match op {
            Reduction::Sum => a,
            Reduction::SquaredNorm => a * a,
            Reduction::Dot => a * b,
            Reduction::MaxAbs => a.abs(),
        }
    };
    if op == Reduction::MaxAbs {
        let m = (0..x.len()).map(term).fold(0.0, f64::max);
        return (m, m);
    }
    (0..x.len()).fold((0.0, 0.0), |(s, a), i| (s + term(i), a + term(i).abs()))
}

/// Most roundings any one term can pass through on its way to the result, read off
/// `shaders/common/reduce.wgsl` for `n` elements on `gpu`:
///
/// * `element4`: Sum adds a vec4's lanes pairwise (2 roundings); SquaredNorm / Dot take
///   `dot()`, one product and at most 3 additions (4);
/// * the grid-stride chain `acc = acc + element4(..)`: one rounding per iteration, at most
///   L = ⌈(n/4) / (G·WG)⌉, with G = clamp(⌈(n/4)/WG⌉, 1, MAX_PARTIALS) workgroups;
/// * the workgroup tree: log2 WG;
/// * finalize: each invocation folds ⌈G/WG⌉ partials in a chain, invocations 0..3 add one
///   tail scalar (1), then a second workgroup tree (log2 WG).
fn rounding_depth(gpu: &Gpu, op: Reduction, n: usize) -> u64 {
    let wg = gpu.tuning().workgroup_size as u64;
    let vec4s = (n / 4) as u64;
    let groups = vec4s.div_ceil(wg).clamp(1, MAX_PARTIALS);
    let chain = vec4s.div_ceil(groups * wg);
    let tree = wg.trailing_zeros() as u64;
    let element4 = if op == Reduction::Sum { 2 } else { 4 };
    element4 + chain + tree + groups.div_ceil(wg) + 1 + tree
}

/// |f32 result − exact| ≤ γ_d·Σ|term| with γ_d = d·u / (1 − d·u) (Higham, Thm 4.3 / §3.1:
/// any summation tree where each term passes through at most d roundings). The f64 reference
/// adds its own (n − 1)·2^-53·Σ|term|, included so the comparison is rigorous.
fn error_bound(gpu: &Gpu, op: Reduction, n: usize, abs_sum: f64) -> f64 {
    let d = rounding_depth(gpu, op, n) as f64;
    let gamma = d * U / (1.0 - d * U);
    let f64_error = (n as f64 - 1.0).max(0.0) * f64::EPSILON / 2.0;
    (gamma + f64_error) * abs_sum
}

// ---- exact-answer designs ------------------------------------------------------------------

/// All ones (and twos as y): every partial sum of every tree is an integer ≤ 2n ≤ 2^25 and
/// even above 2^24, so f32 represents each one and all four reductions are exact.
#[test]
fn all_ones_reduce_exactly_up_to_2_pow_24() {
    for (name, gpu) in both_gpus() {
        for n in [
            1,
            3,
            4,
            5,
            255,
            257,
            65_537,
            1_000_003,
            (1 << 24) - 1,
            1 << 24,
        ] {
            let x = GpuVec::upload(gpu, &vec![1.0f32; n]).expect("upload");
            let y = GpuVec::upload(gpu, &vec![2.0f32; n]).expect("upload");
            let nf = n as f32;
            for (op, want) in [
                (Reduction::Sum, nf),
                (Reduction::SquaredNorm, nf),
                (Reduction::Dot, 2.0 * nf),
                (Reduction::MaxAbs, 1.0),
            ] {
                assert_eq!(run(gpu, op, &x, &y), want, "{name}: {op:?} of {n} ones");
            }
        }
    }
}

/// A sparse comb: every 997th element (997 is prime, so the comb drifts through every vec4
/// lane and every invocation's stride) holds an integer weight ±1..=±16 that changes from
/// tooth to tooth; y is 3 on the teeth and 1 elsewhere, so reading y at the wrong place shows.
/// Σ|x|, Σx² and Σ|3x| stay below 2^24 for 17M elements (asserted), so every partial sum, in
/// any order, is an exactly represented integer and the results are exact; any dropped or
/// doubled tooth changes them.
#[test]
fn integer_comb_reduces_exactly_at_every_size() {
    const STRIDE: usize = 997;
    for n in SIZES {
        let mut x = vec![0.0f32; n];
        let mut y = vec![1.0f32; n];
        for i in (0..n).step_by(STRIDE) {
            let tooth = i / STRIDE;
            let sign = if tooth.is_multiple_of(2) { 1.0 } else { -1.0 };
            x[i] = sign * (tooth % 16 + 1) as f32;
            y[i] = 3.0;
        }
        // Distinct weights at the last element and in the tail when they are not teeth.
        x[n - 1] = 5.0;
        if !n.is_multiple_of(4) && n > 4 {
            x[n - n % 4] = -7.0;
        }
        for (name, gpu) in both_gpus() {
            let (xg, yg) = (
                GpuVec::upload(gpu, &x).expect("upload"),
                GpuVec::upload(gpu, &y).expect("upload"),
            );
            for op in OPS {
                let (want, abs) = reference(op, &x, &y);
                assert!(
                    abs < (1 << 24) as f64,
                    "design: Σ|term| {abs} must stay exact"
                );
                assert_eq!(
                    run(gpu, op, &xg, &yg) as f64,
                    want,
                    "{name}: {op:?} of the comb, n {n}"
                );
            }
        }
    }
}

/// One nonzero among zeros, at the first element, the middle, the last element of the vec4
/// body, the first tail element and the last element: each reduction is exact and any
/// skipped position shows as a zero result.
#[test]
fn single_planted_value_is_found_at_every_position() {
    const V: f32 = -2.5;
    const W: f32 = 4.0;
    for (name, gpu) in both_gpus() {
        for n in SIZES {
            let x = GpuVec::<f32>::zeros(gpu, n).expect("zeros");
            let y = GpuVec::upload(gpu, &vec![1.0f32; n]).expect("upload");
            let body_end = n - n % 4;
            let mut positions = vec![0, n / 2, n - 1];
            if body_end > 0 {
                positions.push(body_end - 1);
            }
            if !n.is_multiple_of(4) {
                positions.push(body_end);
            }
            for p in positions {
                poke(gpu, &x, p, V);
                poke(gpu, &y, p, W);
                for (op, want) in [
                    (Reduction::Sum, V),
                    (Reduction::SquaredNorm, V * V),
                    (Reduction::Dot, V * W),
                    (Reduction::MaxAbs, -V),
                ] {
                    assert_eq!(
                        run(gpu, op, &x, &y),
                        want,
                        "{name}: {op:?}, n {n}, value at {p}"
                    );
                }
                poke(gpu, &x, p, 0.0);
                poke(gpu, &y, p, 1.0);
            }
        }
    }
}

// ---- random data: a rounding-error bound ------------------------------------------------

/// Random data in [-1, 1) (cancelling) and [0.5, 2) (all positive, so the bound is relative
/// to the result itself) against the f64 value within [`error_bound`]; MaxAbs is exact (max
/// and |·| do not round), with a planted ±7 to make the maximum's position matter.
#[test]
fn random_data_within_summation_error_bound() {
    let mut worst = (0.0f64, String::new());
    for n in SIZES {
        for (lo, hi, seed) in [(-1.0, 1.0, 1u64), (0.5, 2.0, 2)] {
            let mut x = as_f32(&uniform(n, seed, lo, hi));
            let y = as_f32(&uniform(n, seed + 100, lo, hi));
            x[(n * 2) / 3] = if seed == 1 { -7.0 } else { 7.0 };
            for (name, gpu) in both_gpus() {
                let (xg, yg) = (
                    GpuVec::upload(gpu, &x).expect("upload"),
                    GpuVec::upload(gpu, &y).expect("upload"),
                );
                for op in OPS {
                    let got = run(gpu, op, &xg, &yg) as f64;
                    let (want, abs) = reference(op, &x, &y);
                    let what = format!("{name}: {op:?}, n {n}, data in [{lo}, {hi})");
                    if op == Reduction::MaxAbs {
                        assert_eq!(got, want, "{what}");
                        continue;
                    }
                    let bound = error_bound(gpu, op, n, abs);
                    let err = (got - want).abs();
                    assert!(
                        err <= bound,
                        "{what}: got {got}, want {want}, |err| {err:e} > bound {bound:e} (depth {})",
                        rounding_depth(gpu, op, n)
                    );
                    if bound > 0.0 && err / bound > worst.0 {
                        worst = (err / bound, what);
                    }
                }
            }
        }
    }
    eprintln!("reduce: worst |err| / bound = {:.3} ({})", worst.0, worst.1);
}

// ---- recording into the caller's buffers -------------------------------------------------

#[test]
fn record_writes_only_out_at_out_index() {
    const SENTINEL: f32 = -123.25;
    let gpu = gpu();
    let n = 65_537;
    let x = GpuVec::upload(gpu, &vec![1.0f32; n]).expect("upload");
    for out_index in [0usize, 4, 8] {
        let out = GpuVec::upload(gpu, &[SENTINEL; 9]).expect("upload");
        let mut rec = Recorder::new(gpu);
        reduce::record(
            &mut rec,
            Reduction::Sum,
            x.view(),
            None,
            out.view(),
            out_index,
        )
        .expect("record");
        rec.submit().expect("submit");
        let got = out.read().expect("read");
        for (i, &v) in got.iter().enumerate() {
            let want = if i == out_index { n as f32 } else { SENTINEL };
            assert_eq!(v, want, "out[{i}] after writing out[{out_index}]");
        }
    }

    // An output that is one tensor of a packed buffer: out_index is relative to the view, and
    // the neighbouring tensors and the padding between them keep their contents.
    let parts = GpuVec::<f32>::packed(gpu, &[3, 5, 2]).expect("packed");
    for p in &parts {
        p.write(&vec![SENTINEL; p.len()]).expect("write");
    }
    let before = read_buffer_words(gpu, parts[0].buffer());
    let mut rec = Recorder::new(gpu);
    reduce::record(&mut rec, Reduction::Sum, x.view(), None, parts[1].view(), 4).expect("record");
    rec.submit().expect("submit");
    let after = read_buffer_words(gpu, parts[0].buffer());
    let slot = (parts[1].byte_offset() / 4) as usize + 4;
    for (i, (&b, &a)) in before.iter().zip(&after).enumerate() {
        let want = if i == slot { (n as f32).to_bits() } else { b };
        assert_eq!(
            a, want,
            "word {i} of the packed buffer (the slot is word {slot})"
        );
    }
}

/// Two reductions write out[0] and out[1]; a third and fourth reduce that `out` further in the
/// same recording. Nothing is read back in between, so the results must stay on the device
/// and the dispatches must be ordered. All values are integers < 2^24: exact.
#[test]
fn reductions_in_one_recorder_feed_each_other_on_the_device() {
    for (name, gpu) in both_gpus() {
        let n = 1_000_003;
        let x = GpuVec::upload(gpu, &vec![1.0f32; n]).expect("upload");
        let y = GpuVec::upload(gpu, &vec![2.0f32; n]).expect("upload");
        let out = GpuVec::<f32>::zeros(gpu, 2).expect("zeros");
        let fin = GpuVec::upload(gpu, &[-1.0f32; 3]).expect("upload");
        let mut rec = Recorder::new(gpu);
        reduce::record(&mut rec, Reduction::Sum, x.view(), None, out.view(), 0).expect("sum");
        reduce::record(
            &mut rec,
            Reduction::Dot,
            x.view(),
            Some(y.view()),
            out.view(),
            1,
        )
        .expect("dot");
        reduce::record(&mut rec, Reduction::MaxAbs, out.view(), None, fin.view(), 0).expect("max");
        reduce::record(&mut rec, Reduction::Sum, out.view(), None, fin.view(), 2)
            .expect("sum of out");
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        rec.encode(&mut encoder);
        gpu.queue().submit([encoder.finish()]);
        let (s, d) = (n as f32, 2.0 * n as f32);
        assert_eq!(fin.read().expect("read"), [d, -1.0, s + d], "{name}");
        assert_eq!(out.read().expect("read"), [s, d], "{name}");
    }
}

/// A view into the middle of a caller's buffer reduces only its own window.
#[test]
fn reduce_reads_only_its_view_of_a_callers_buffer() {
    let gpu = gpu();
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    // Four alignment units of 1000s before the window of 1,001 ones, 50 more 1000s after.
    let mut data = vec![1000.0f32; 4 * align + 1001 + 50];
    data[4 * align..4 * align + 1001].fill(1.0);
    let x = GpuVec::upload(gpu, &data).expect("upload");
    let view = BufView::new(x.buffer(), (16 * align) as u64, 1001);
    assert_eq!(
        reduce::reduce(gpu, Reduction::Sum, view, None).expect("reduce"),
        1001.0
    );
    assert_eq!(
        reduce::reduce(gpu, Reduction::MaxAbs, view, None).expect("reduce"),
        1.0
    );
}
