//! Shared test fixtures: one device per test binary, deterministic data, and a tolerance check
//! that names the worst element.
#![allow(dead_code)]

use std::sync::OnceLock;

use curvgpu::diag::{AdaHessianConfig, SophiaGConfig, SophiaHConfig};
use curvgpu::reference::diag as reference;
use curvgpu::reference::splitmix::SplitMix64;
use curvgpu::{Error, Gpu, GpuOptions, Tuning};

/// Machine epsilon of f32 (twice the unit roundoff u = 2⁻²⁴).
pub const EPS32: f64 = f32::EPSILON as f64;

/// γ_m = m·u/(1 − m·u) with u = 2⁻²⁴: the bound on m f32 roundings (Higham, §3.1).
pub fn gamma(m: usize) -> f64 {
    let mu = m as f64 * EPS32 / 2.0;
    mu / (1.0 - mu)
}

/// Integer values in −8..=8, as f64 (exact in f32).
pub fn integers(n: usize, seed: u64) -> Vec<f64> {
    uniform(n, seed, -8.0, 9.0)
        .into_iter()
        .map(f64::floor)
        .collect()
}

/// f32-rounded values in [−1, 1).
pub fn randoms(n: usize, seed: u64) -> Vec<f64> {
    rounded(&uniform(n, seed, -1.0, 1.0))
}

/// `v` rounded to f32, as f64: the operands both sides of a comparison see.
pub fn rounded(v: &[f64]) -> Vec<f64> {
    as_f64(&as_f32(v))
}

/// The default device from `CURVGPU_BACKEND` / `CURVGPU_ADAPTER` (lavapipe or llvmpipe in CI).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().expect("a wgpu adapter (install mesa-vulkan-drivers)"))
}

/// A second device on the same adapter with GPU-style dispatch: 64 invocations per workgroup
/// and one vec4 per invocation, so 17M elements need more than 65,535 workgroups and exercise
/// the 2-D grid fold; the Poisson stencil walks 3 rows, which divides no test grid evenly;
/// groups of 4 invocations walk contiguous runs and M-FAC splits its row dots into 3 slices.
pub fn gpu_wide_grid() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| device(WIDE_GRID))
}

/// A third device: [`gpu_wide_grid`]'s tuning without SIMD groups, as on a GPU, so kernels
/// that block their work on CPU adapters run their one-row-per-workgroup shapes.
pub fn gpu_without_simd_groups() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        device(Tuning {
            simd_lanes: None,
            ..WIDE_GRID
        })
    })
}

const WIDE_GRID: Tuning = Tuning {
    workgroup_size: 64,
    max_workgroups: None,
    stencil_march: 3,
    reduction_vec4s: 16,
    simd_lanes: Some(4),
    dot_slices: 3,
};

fn device(tuning: Tuning) -> Gpu {
    let mut options = GpuOptions::from_env().expect("valid CURVGPU_BACKEND");
    options.tuning = Some(tuning);
    pollster::block_on(Gpu::new_async(options)).expect("a wgpu adapter")
}

/// Deterministic values in [lo, hi) from a SplitMix64 stream (independent of the GPU's Philox),
/// seeded with seed·γ + 1 (γ its golden-ratio increment) so that small neighbouring seeds
/// start far apart.
pub fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
    (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// f64 data rounded to f32 (what is uploaded), and back to f64 for the reference, so both
/// sides start from bit-identical inputs.
pub fn as_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// f32 values widened to f64.
pub fn as_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Rounds f64 data through f32 in place.
pub fn round_f32(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v as f32 as f64).collect()
}

/// Asserts |got − want| ≤ atol + rtol·|want| elementwise (NaN fails), naming the first
/// offending element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let allowed = atol + rtol * w.abs();
        if err.is_nan() || err > allowed {
            panic!(
                "{what}: element {i} of {}: got {g}, want {w}, |err| {err:e} > {atol:e} + {rtol:e}·|want|",
                got.len()
            );
        }
    }
}

/// Max |x|.
pub fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |a, &b| a.max(b.abs()))
}

/// Both devices, named for failure messages: the default tuning (a capped grid-stride loop on
/// CPU adapters) and [`gpu_wide_grid`] (one item per invocation, 2-D grid fold past 65,535).
pub fn both_gpus() -> [(&'static str, &'static Gpu); 2] {
    [("default grid", gpu()), ("wide grid", gpu_wide_grid())]
}

/// Every 4-byte word of `buffer`, padding included (blocking readback through a staging copy).
/// Sees what a [`curvgpu::GpuVec`] read cannot: the bytes between packed tensors.
pub fn read_buffer_words(gpu: &Gpu, buffer: &wgpu::Buffer) -> Vec<u32> {
    let size = buffer.size();
    let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    gpu.queue().submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    gpu.wait().expect("device poll");
    rx.recv().expect("map callback").expect("map");
    let words = bytemuck::pod_collect_to_vec::<u8, u32>(
        &staging.get_mapped_range(..).expect("mapped range"),
    );
    staging.unmap();
    words
}

/// Overwrites element `index` of `v` with `value` (a queue write, ordered before the next
/// submit), so one large upload can be reused with a value planted at several positions.
pub fn poke<T: bytemuck::Pod>(gpu: &Gpu, v: &curvgpu::GpuVec<T>, index: usize, value: T) {
    assert!(
        index < v.len(),
        "poke index {index} outside {} elements",
        v.len()
    );
    let offset = v.byte_offset() + (index * std::mem::size_of::<T>()) as u64;
    gpu.queue()
        .write_buffer(v.buffer(), offset, bytemuck::bytes_of(&value));
}

/// The largest |got − want| / (atol + rtol·|want|) over the elements: how much of a tolerance
/// checked by [`assert_close`] was used (for reporting measured worst errors).
pub fn worst_ratio(got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / (atol + rtol * w.abs()))
        .fold(0.0, f64::max)
}

/// The f64 reference's parameters for a SophiaG config.
pub fn sophiag_params(c: &SophiaGConfig) -> reference::SophiaGParams {
    reference::SophiaGParams {
        lr: c.lr as f64,
        beta1: c.beta1 as f64,
        beta2: c.beta2 as f64,
        rho: c.rho as f64,
        bs: c.batch_tokens as f64,
        weight_decay: c.weight_decay as f64,
        eps: c.eps as f64,
    }
}

/// The f64 reference's parameters for a SophiaH config.
pub fn sophiah_params(c: &SophiaHConfig) -> reference::SophiaHParams {
    reference::SophiaHParams {
        lr: c.lr as f64,
        beta1: c.beta1 as f64,
        beta2: c.beta2 as f64,
        gamma: c.gamma as f64,
        eps: c.eps as f64,
        weight_decay: c.weight_decay as f64,
    }
}

/// The f64 reference's parameters for an AdaHessian config.
pub fn adahessian_params(c: &AdaHessianConfig) -> reference::AdaHessianParams {
    reference::AdaHessianParams {
        lr: c.lr as f64,
        beta1: c.beta1 as f64,
        beta2: c.beta2 as f64,
        eps: c.eps as f64,
        weight_decay: c.weight_decay as f64,
        hessian_power: c.hessian_power as f64,
    }
}

/// `Error::Empty` naming `argument`.
#[track_caller]
pub fn assert_empty<T: std::fmt::Debug>(result: curvgpu::Result<T>, argument: &str) {
    match result {
        Err(Error::Empty { argument: a }) => assert_eq!(a, argument),
        other => panic!("expected Empty {{ {argument} }}, got {other:?}"),
    }
}

/// `Error::InvalidParameter` naming `name` and reporting `value` (bit-exact, so NaN matches).
#[track_caller]
pub fn assert_param<T: std::fmt::Debug>(
    result: curvgpu::Result<T>,
    name: &str,
    value: impl Into<f64>,
) {
    let value = value.into();
    match result {
        Err(Error::InvalidParameter {
            name: n, value: v, ..
        }) => {
            assert_eq!(n, name);
            assert!(
                v.to_bits() == value.to_bits(),
                "{name}: reported value {v}, given {value}"
            );
        }
        other => panic!("expected InvalidParameter {{ {name} = {value} }}, got {other:?}"),
    }
}

/// `Error::LengthMismatch` naming `argument` with the lengths.
#[track_caller]
pub fn assert_length<T: std::fmt::Debug>(
    result: curvgpu::Result<T>,
    argument: &str,
    expected: usize,
    actual: usize,
) {
    match result {
        Err(Error::LengthMismatch {
            argument: a,
            expected: e,
            actual: n,
        }) => assert_eq!((a, e, n), (argument, expected, actual)),
        other => panic!(
            "expected LengthMismatch {{ {argument}: {actual} for {expected} }}, got {other:?}"
        ),
    }
}

/// `Error::CountMismatch` naming `argument` with the counts, and its message.
#[track_caller]
pub fn assert_count<T: std::fmt::Debug>(
    result: curvgpu::Result<T>,
    argument: &str,
    expected: usize,
    actual: usize,
) {
    match result {
        Err(
            e @ Error::CountMismatch {
                argument: a,
                expected: x,
                actual: n,
            },
        ) => {
            assert_eq!((a, x, n), (argument, expected, actual));
            assert_eq!(
                e.to_string(),
                format!("`{argument}` lists {actual} tensors, expected {expected}")
            );
        }
        other => panic!(
            "expected CountMismatch {{ {argument}: {actual} for {expected} }}, got {other:?}"
        ),
    }
}

/// `Error::Overlap` naming `first` and `second`.
#[track_caller]
pub fn assert_overlap<T: std::fmt::Debug>(result: curvgpu::Result<T>, first: &str, second: &str) {
    match result {
        Err(Error::Overlap {
            first: a,
            second: b,
            ..
        }) => assert_eq!((a.as_str(), b.as_str()), (first, second)),
        other => panic!("expected Overlap {{ {first}, {second} }}, got {other:?}"),
    }
}
