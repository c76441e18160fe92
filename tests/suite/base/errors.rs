//! Every bad input is reported as the exact `curvgpu::Error` variant naming the argument (or
//! the hyper-parameter field, or the device limit), never a panic or a wgpu validation abort;
//! and on a device whose storage bindings are tiny, long tensors are split into chunks that
//! still give the reference results.

use std::sync::OnceLock;

use crate::common::{
    adahessian_params, as_f32, as_f64, assert_close, assert_count, assert_empty, assert_length,
    assert_param, gpu, poke, sophiag_params, uniform, worst_ratio, EPS32,
};
use curvgpu::diag::{
    AdaHessian, AdaHessianConfig, AdamW, Averaging, DiagState, HutchinsonDiag, SophiaG,
    SophiaGConfig, SophiaH, SophiaHConfig, TensorSpec,
};
use curvgpu::reduce::{self, Reduction};
use curvgpu::reference::{diag as refdiag, philox};
use curvgpu::{rng, BufView, Error, Gpu, GpuOptions, GpuVec, Optimizer, Recorder, Tuning};

/// A second device on the same adapter: its vectors must be rejected by the first.
fn other_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().expect("a second device"))
}

/// A raw buffer of `bytes` with exactly `usage`, as a caller's engine would own.
fn raw_buffer(gpu: &Gpu, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's buffer"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    })
}

/// Records a Bits fill into `out`: the smallest call that checks one caller view.
fn fill(gpu: &Gpu, out: BufView<'_>) -> curvgpu::Result<()> {
    let mut rec = Recorder::new(gpu);
    rng::record_fill(&mut rec, rng::Distribution::Bits, out, 1, 0)
}

#[track_caller]
fn assert_wrong_device<T: std::fmt::Debug>(result: curvgpu::Result<T>, argument: &str) {
    match result {
        Err(Error::WrongDevice { argument: a }) => assert_eq!(a, argument),
        other => panic!("expected WrongDevice {{ {argument} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_bad_view<T: std::fmt::Debug>(result: curvgpu::Result<T>, argument: &str) {
    match result {
        Err(Error::BadView { argument: a, .. }) => assert_eq!(a, argument),
        other => panic!("expected BadView {{ {argument} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_shape<T: std::fmt::Debug>(result: curvgpu::Result<T>) {
    match result {
        Err(Error::Shape { argument, .. }) => assert_eq!(argument, "spec"),
        other => panic!("expected Shape {{ spec }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_state<T: std::fmt::Debug>(result: curvgpu::Result<T>) {
    match result {
        Err(Error::State(_)) => {}
        other => panic!("expected State, got {other:?}"),
    }
}

// ---- empty inputs --------------------------------------------------------------------------

#[test]
fn tuning_with_zero_walk_or_zero_reduction_fold_is_invalid() {
    let base = Tuning::for_device_type(wgpu::DeviceType::Cpu);
    let bad = [
        (
            Tuning {
                stencil_march: 0,
                ..base
            },
            "stencil_march",
            0.0,
        ),
        (
            Tuning {
                reduction_vec4s: 0,
                ..base
            },
            "reduction_vec4s",
            0.0,
        ),
        (
            Tuning {
                simd_lanes: Some(3),
                ..base
            },
            "simd_lanes",
            3.0,
        ),
        (
            Tuning {
                simd_lanes: Some(512),
                ..base
            },
            "simd_lanes",
            512.0,
        ),
        (
            Tuning {
                dot_slices: 0,
                ..base
            },
            "dot_slices",
            0.0,
        ),
    ];
    for (tuning, name, value) in bad {
        let mut options = GpuOptions::from_env().expect("valid CURVGPU_BACKEND");
        options.tuning = Some(tuning);
        assert_param(pollster::block_on(Gpu::new_async(options)), name, value);
    }
}

#[test]
fn upload_of_empty_slice_is_empty_data() {
    assert_empty(GpuVec::<f32>::upload(gpu(), &[]), "data");
}

#[test]
fn zeros_of_length_0_is_empty_len() {
    assert_empty(GpuVec::<f32>::zeros(gpu(), 0), "len");
}

#[test]
fn packed_with_no_tensors_or_an_empty_tensor_is_empty_lens() {
    assert_empty(GpuVec::<f32>::packed(gpu(), &[]), "lens");
    assert_empty(GpuVec::<f32>::packed(gpu(), &[4, 0, 4]), "lens");
}

#[test]
fn optimizer_of_length_0_is_empty() {
    let gpu = gpu();
    assert_empty(SophiaG::new(gpu, 0, SophiaGConfig::default()), "len");
    assert_empty(SophiaH::new(gpu, 0, SophiaHConfig::default()), "len");
    assert_empty(AdaHessian::new(gpu, 0, AdaHessianConfig::default()), "len");
    match SophiaG::new_multi(gpu, &[3, 0], SophiaGConfig::default()) {
        Err(Error::Shape { argument, message }) => {
            assert_eq!(argument, "lens");
            assert!(message.contains("tensor 1"), "{message}");
        }
        other => panic!("expected Shape {{ lens }}, got {other:?}"),
    }
    // One tensor of no elements names the length given, not a list.
    assert_empty(AdamW::new(gpu, 0, Default::default()), "len");
}

#[test]
fn optimizer_of_an_empty_tensor_list_is_empty_lens() {
    let gpu = gpu();
    assert_empty(
        SophiaG::new_multi(gpu, &[], SophiaGConfig::default()),
        "lens",
    );
    assert_empty(
        SophiaH::new_multi(gpu, &[], SophiaHConfig::default()),
        "lens",
    );
    assert_empty(
        AdaHessian::new_multi(gpu, &[], AdaHessianConfig::default()),
        "specs",
    );
    assert_empty(HutchinsonDiag::new(gpu, &[], 7), "lens");
}

#[test]
fn dot_without_y_is_empty_y() {
    let x = GpuVec::upload(gpu(), &[1.0f32, 2.0, 3.0]).unwrap();
    assert_empty(reduce::reduce(gpu(), Reduction::Dot, &x, None), "y");
}

// ---- hyper-parameters ----------------------------------------------------------------------

#[test]
fn learning_rate_zero_negative_nan_or_infinite_is_invalid_lr() {
    let gpu = gpu();
    for lr in [0.0, -1e-3, f32::NAN, f32::INFINITY] {
        assert_param(
            SophiaG::new(
                gpu,
                4,
                SophiaGConfig {
                    lr,
                    ..Default::default()
                },
            ),
            "lr",
            lr,
        );
        assert_param(
            SophiaH::new(
                gpu,
                4,
                SophiaHConfig {
                    lr,
                    ..Default::default()
                },
            ),
            "lr",
            lr,
        );
        assert_param(
            AdaHessian::new(
                gpu,
                4,
                AdaHessianConfig {
                    lr,
                    ..Default::default()
                },
            ),
            "lr",
            lr,
        );
    }
}

#[test]
fn beta1_of_one_is_invalid_beta1() {
    let gpu = gpu();
    for beta1 in [1.0, 1.5, f32::NAN] {
        assert_param(
            SophiaG::new(
                gpu,
                4,
                SophiaGConfig {
                    beta1,
                    ..Default::default()
                },
            ),
            "beta1",
            beta1,
        );
        assert_param(
            SophiaH::new(
                gpu,
                4,
                SophiaHConfig {
                    beta1,
                    ..Default::default()
                },
            ),
            "beta1",
            beta1,
        );
        let config = AdaHessianConfig {
            beta1,
            ..Default::default()
        };
        assert_param(AdaHessian::new(gpu, 4, config), "beta1", beta1);
    }
}

#[test]
fn beta2_negative_or_one_is_invalid_beta2() {
    let gpu = gpu();
    for beta2 in [-0.01, 1.0] {
        assert_param(
            SophiaG::new(
                gpu,
                4,
                SophiaGConfig {
                    beta2,
                    ..Default::default()
                },
            ),
            "beta2",
            beta2,
        );
        assert_param(
            SophiaH::new(
                gpu,
                4,
                SophiaHConfig {
                    beta2,
                    ..Default::default()
                },
            ),
            "beta2",
            beta2,
        );
        let config = AdaHessianConfig {
            beta2,
            ..Default::default()
        };
        assert_param(AdaHessian::new(gpu, 4, config), "beta2", beta2);
    }
}

#[test]
fn negative_rho_is_invalid_rho() {
    let config = SophiaGConfig {
        rho: -0.04,
        ..Default::default()
    };
    assert_param(SophiaG::new(gpu(), 4, config), "rho", -0.04f32);
}

#[test]
fn eps_of_zero_is_invalid_eps() {
    let gpu = gpu();
    assert_param(
        SophiaG::new(
            gpu,
            4,
            SophiaGConfig {
                eps: 0.0,
                ..Default::default()
            },
        ),
        "eps",
        0.0f32,
    );
    assert_param(
        SophiaH::new(
            gpu,
            4,
            SophiaHConfig {
                eps: 0.0,
                ..Default::default()
            },
        ),
        "eps",
        0.0f32,
    );
    assert_param(
        AdaHessian::new(
            gpu,
            4,
            AdaHessianConfig {
                eps: 0.0,
                ..Default::default()
            },
        ),
        "eps",
        0.0f32,
    );
}

#[test]
fn other_out_of_range_fields_are_named() {
    let gpu = gpu();
    let g = |c: SophiaGConfig| SophiaG::new(gpu, 4, c);
    assert_param(
        g(SophiaGConfig {
            weight_decay: -0.1,
            ..Default::default()
        }),
        "weight_decay",
        -0.1f32,
    );
    assert_param(
        g(SophiaGConfig {
            batch_tokens: 0.0,
            ..Default::default()
        }),
        "batch_tokens",
        0.0f32,
    );
    let h = |c: SophiaHConfig| SophiaH::new(gpu, 4, c);
    assert_param(
        h(SophiaHConfig {
            gamma: 0.0,
            ..Default::default()
        }),
        "gamma",
        0.0f32,
    );
    let a = |c: AdaHessianConfig| AdaHessian::new(gpu, 4, c);
    assert_param(
        a(AdaHessianConfig {
            weight_decay: -1.0,
            ..Default::default()
        }),
        "weight_decay",
        -1.0f32,
    );
}

#[test]
fn hessian_power_outside_0_to_1_is_invalid_hessian_power() {
    for power in [0.0, 1.5, -0.5, f32::NAN] {
        let config = AdaHessianConfig {
            hessian_power: power,
            ..Default::default()
        };
        assert_param(AdaHessian::new(gpu(), 4, config), "hessian_power", power);
    }
    // The endpoints of (0, 1] that are allowed.
    for power in [1.0, 0.5, f32::MIN_POSITIVE] {
        let config = AdaHessianConfig {
            hessian_power: power,
            ..Default::default()
        };
        AdaHessian::new(gpu(), 4, config).expect("valid power");
    }
}

#[test]
fn set_config_validates_too() {
    let mut opt = SophiaG::new(gpu(), 4, SophiaGConfig::default()).unwrap();
    assert_param(
        opt.set_config(SophiaGConfig {
            lr: -1.0,
            ..Default::default()
        }),
        "lr",
        -1.0f32,
    );
    assert_eq!(
        opt.config().lr,
        SophiaGConfig::default().lr,
        "a rejected config must not be kept"
    );
}

// ---- tensors that do not fit the optimizer --------------------------------------------------

#[test]
fn params_grads_length_mismatch_is_length_mismatch() {
    let gpu = gpu();
    let mut opt = SophiaG::new_multi(gpu, &[10, 7], SophiaGConfig::default()).unwrap();
    let p = [
        GpuVec::<f32>::zeros(gpu, 10).unwrap(),
        GpuVec::<f32>::zeros(gpu, 7).unwrap(),
    ];
    let short = [
        GpuVec::<f32>::zeros(gpu, 10).unwrap(),
        GpuVec::<f32>::zeros(gpu, 6).unwrap(),
    ];
    assert_length(opt.step(gpu, &p[..], &short[..]), "grads", 7, 6);
    assert_length(opt.step(gpu, &short[..], &p[..]), "params", 7, 6);
    let mut ada = AdaHessian::new_multi(
        gpu,
        &[TensorSpec::flat(10), TensorSpec::flat(7)],
        Default::default(),
    )
    .unwrap();
    assert_length(ada.step(gpu, &p[..], (&p[..], &short[..])), "zhz", 7, 6);
    assert_eq!(
        (opt.steps(), ada.steps()),
        (0, 0),
        "rejected steps must not count"
    );
}

#[test]
fn wrong_tensor_count_is_count_mismatch_in_tensors() {
    let gpu = gpu();
    let mut opt = SophiaH::new_multi(gpu, &[10, 7], SophiaHConfig::default()).unwrap();
    let p = [
        GpuVec::<f32>::zeros(gpu, 10).unwrap(),
        GpuVec::<f32>::zeros(gpu, 7).unwrap(),
    ];
    let one = [GpuVec::<f32>::zeros(gpu, 10).unwrap()];
    assert_count(opt.step(gpu, &one[..], &p[..]), "params", 2, 1);
    assert_count(opt.step(gpu, &p[..], &one[..]), "grads", 2, 1);
    let three = [p[0].clone(), p[1].clone(), p[1].clone()];
    assert_count(opt.step(gpu, &p[..], &three[..]), "grads", 2, 3);
    let err = opt.step(gpu, &one[..], &p[..]).unwrap_err().to_string();
    assert_eq!(err, "`params` lists 1 tensors, expected 2");
    // AdaHessian's step takes two input lists; one is a shape error naming them.
    let mut ada = AdaHessian::new(gpu, 10, Default::default()).unwrap();
    match ada.step(gpu, &p[0], &p[0]) {
        Err(Error::Shape { argument, message }) => {
            assert_eq!(argument, "inputs");
            assert!(message.contains("grads, zhz"), "{message}");
        }
        other => panic!("expected Shape {{ inputs }}, got {other:?}"),
    }
}

#[test]
fn dot_with_y_of_other_length_is_length_mismatch_y() {
    let gpu = gpu();
    let x = GpuVec::upload(gpu, &[1.0f32; 9]).unwrap();
    let y = GpuVec::upload(gpu, &[1.0f32; 8]).unwrap();
    assert_length(
        reduce::reduce(gpu, Reduction::Dot, &x, Some(y.view())),
        "y",
        9,
        8,
    );
}

// ---- buffers that do not belong or do not fit ------------------------------------------------

#[test]
fn vector_from_another_gpu_is_wrong_device() {
    let (gpu, other) = (gpu(), other_gpu());
    let mine = GpuVec::upload(gpu, &[1.0f32; 8]).unwrap();
    let theirs = GpuVec::upload(other, &[1.0f32; 8]).unwrap();
    let mut opt = SophiaG::new(gpu, 8, SophiaGConfig::default()).unwrap();
    assert_wrong_device(opt.step(gpu, &theirs, &mine), "params");
    assert_wrong_device(opt.step(gpu, &mine, &theirs), "grads");
    // Reads and writes go through the vector's own device: always the right one.
    assert_eq!(theirs.read().unwrap(), [1.0; 8]);
    assert_wrong_device(reduce::reduce(gpu, Reduction::Sum, &theirs, None), "x");
    assert_wrong_device(curvgpu::finite::first_nonfinite(gpu, &theirs), "x");
    assert_wrong_device(fill(gpu, theirs.view()), "out");
}

/// The optimizer's own m and h live on the device it was created on: stepping it through
/// another `Gpu` is refused before anything reaches wgpu.
#[test]
fn optimizer_stepped_on_another_gpu_is_wrong_device() {
    let (gpu, other) = (gpu(), other_gpu());
    let theirs = GpuVec::upload(other, &[1.0f32; 8]).unwrap();
    let mut opt = SophiaG::new(gpu, 8, SophiaGConfig::default()).unwrap();
    let result = opt.step(other, &theirs, &theirs);
    assert!(
        matches!(result, Err(Error::WrongDevice { .. })),
        "got {result:?}"
    );
}

/// A caller's raw buffer carries no curvgpu device id: wgpu's validation (inside an error
/// scope) must turn the device mismatch into an error, not a panic.
#[test]
fn callers_raw_buffer_from_another_device_is_an_error_not_a_panic() {
    let (gpu, other) = (gpu(), other_gpu());
    let buffer = raw_buffer(other, 64, wgpu::BufferUsages::STORAGE);
    let result = fill(gpu, BufView::new(&buffer, 0, 16));
    assert!(result.is_err(), "a foreign buffer was accepted");
}

#[test]
fn callers_buffer_without_storage_usage_is_missing_usage() {
    let gpu = gpu();
    let usage = wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ;
    let buffer = raw_buffer(gpu, 64, usage);
    match fill(gpu, BufView::new(&buffer, 0, 16)) {
        Err(Error::MissingUsage { argument, missing }) => {
            assert_eq!((argument, missing), ("out", wgpu::BufferUsages::STORAGE));
        }
        other => panic!("expected MissingUsage {{ out, STORAGE }}, got {other:?}"),
    }
    match reduce::reduce(gpu, Reduction::Sum, BufView::new(&buffer, 0, 16), None) {
        Err(Error::MissingUsage { argument, .. }) => assert_eq!(argument, "x"),
        other => panic!("expected MissingUsage {{ x }}, got {other:?}"),
    }
}

#[test]
fn misaligned_view_offset_is_bad_view() {
    let gpu = gpu();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let buffer = raw_buffer(gpu, 4 * align, wgpu::BufferUsages::STORAGE);
    for offset in [4, align / 2, align + 4] {
        assert_bad_view(fill(gpu, BufView::new(&buffer, offset, 4)), "out");
    }
    fill(gpu, BufView::new(&buffer, align, 4)).expect("an aligned view is fine");
}

#[test]
fn view_past_the_buffer_end_is_bad_view() {
    let gpu = gpu();
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    let buffer = raw_buffer(gpu, 4 * align, wgpu::BufferUsages::STORAGE);
    let words = (align as usize) / 4;
    // Whole buffer plus one element, and an aligned start whose window runs one past the end.
    assert_bad_view(fill(gpu, BufView::new(&buffer, 0, 4 * words + 1)), "out");
    assert_bad_view(
        fill(gpu, BufView::new(&buffer, 3 * align, words + 1)),
        "out",
    );
    assert_bad_view(fill(gpu, BufView::new(&buffer, 4 * align, 1)), "out");
    fill(gpu, BufView::new(&buffer, 3 * align, words)).expect("the last full window is fine");
}

#[test]
fn reduce_out_index_outside_out_is_bad_view_out_index() {
    let gpu = gpu();
    let x = GpuVec::upload(gpu, &[1.0f32; 5]).unwrap();
    let out = GpuVec::<f32>::zeros(gpu, 3).unwrap();
    let mut rec = Recorder::new(gpu);
    assert_bad_view(
        reduce::record(&mut rec, Reduction::Sum, x.view(), None, out.view(), 3),
        "out_index",
    );
}

// ---- shapes ------------------------------------------------------------------------------

#[test]
fn per_row_averaging_of_a_1d_shape_is_shape() {
    let spec = TensorSpec::new(&[12], Averaging::PerRow);
    assert_shape(spec.segment());
    assert_shape(AdaHessian::new_multi(
        gpu(),
        &[spec],
        AdaHessianConfig::default(),
    ));
}

#[test]
fn conv_kernel_averaging_of_a_2d_shape_is_shape() {
    let spec = TensorSpec::new(&[4, 9], Averaging::ConvKernel);
    assert_shape(spec.segment());
    assert_shape(AdaHessian::new_multi(
        gpu(),
        &[TensorSpec::flat(3), spec],
        AdaHessianConfig::default(),
    ));
}

#[test]
fn blocks_that_do_not_divide_the_length_are_shape() {
    for b in [5, 0, 13] {
        let spec = TensorSpec::new(&[3, 4], Averaging::Blocks(b));
        assert_shape(spec.segment());
        assert_shape(AdaHessian::new_multi(
            gpu(),
            &[spec],
            AdaHessianConfig::default(),
        ));
    }
    assert_eq!(
        TensorSpec::new(&[3, 4], Averaging::Blocks(6))
            .segment()
            .unwrap(),
        6
    );
}

// ---- device limits -----------------------------------------------------------------------

#[test]
fn allocation_past_max_buffer_size_is_too_large() {
    let gpu = gpu();
    let max = gpu.limits().max_buffer_size;
    let len = (max / 4 + 1) as usize;
    let check = |r: curvgpu::Result<()>, argument: &str| match r {
        Err(Error::TooLarge {
            argument: a,
            requested,
            limit,
            max: m,
        }) => {
            assert_eq!((a, limit, m), (argument, "max_buffer_size", max));
            assert!(requested > max, "requested {requested} ≤ max {max}");
        }
        other => panic!("expected TooLarge {{ {argument}, max_buffer_size }}, got {other:?}"),
    };
    check(GpuVec::<f32>::zeros(gpu, len).map(drop), "len");
    check(GpuVec::<f32>::packed(gpu, &[4, len]).map(drop), "lens");
    check(
        SophiaG::new(gpu, len, SophiaGConfig::default()).map(drop),
        "lens",
    );
}

// ---- checkpoints ---------------------------------------------------------------------------

#[test]
fn import_state_with_wrong_lengths_is_state() {
    let gpu = gpu();
    let mut opt = SophiaG::new_multi(gpu, &[5, 3], SophiaGConfig::default()).unwrap();
    let good: DiagState = opt.export_state().unwrap();
    let mut short_h = good.clone();
    short_h.tensors[1].h.pop();
    assert_state(opt.import_state(&short_h));
    let mut long_m = good.clone();
    long_m.tensors[0].m.push(0.0);
    assert_state(opt.import_state(&long_m));
    let mut one_tensor = good.clone();
    one_tensor.tensors.pop();
    assert_state(opt.import_state(&one_tensor));
    // The Hutchinson estimator has no m: a checkpoint with one is refused.
    let mut hutch = HutchinsonDiag::new(gpu, &[5, 3], 1).unwrap();
    assert_state(hutch.import_state(&good));
    opt.import_state(&good).expect("its own checkpoint");
}

#[test]
fn unknown_backend_name_is_unknown_backend() {
    match curvgpu::gpu::parse_backend("cuda") {
        Err(Error::UnknownBackend(name)) => assert_eq!(name, "cuda"),
        other => panic!("expected UnknownBackend, got {other:?}"),
    }
}

// ---- chunking: a device whose storage bindings hold only 64 KiB --------------------------------

/// Storage binding limit of [`small_binding_gpu`]: 16,384 f32 per binding.
const SMALL_BINDING: u64 = 64 * 1024;

/// 100,003 = 6·16,384 + 1,699: six full chunks and a seventh whose last 3 elements are a tail.
const CHUNKED: usize = 100_003;

/// The adapter `gpu()` runs on, opened again with `max_storage_buffer_binding_size` = 64 KiB
/// and wrapped with `Gpu::from_device`, so every kernel must split long tensors.
fn small_binding_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let info = gpu().adapter_info().clone();
        eprintln!(
            "64 KiB-binding device on {} ({:?})",
            info.name, info.backend
        );
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .find(|a| a.get_info().name == info.name && a.get_info().backend == info.backend)
            .expect("the default device's adapter");
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: SMALL_BINDING,
            ..adapter.limits()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("64 KiB bindings"),
            required_limits: limits,
            ..Default::default()
        }))
        .expect("device with small bindings");
        let gpu = Gpu::from_device(device, queue).unwrap();
        assert_eq!(gpu.limits().max_storage_buffer_binding_size, SMALL_BINDING);
        gpu
    })
}

/// Unit roundoff of f32, 2^-24.
const U: f64 = EPS32 / 2.0;

/// Three SophiaG steps with a GNB refresh before the last two, on 100,003 elements in chunks,
/// against `reference::diag` in f64 (and bit-identical to the unchunked default device).
///
/// Gradients keep each element's sign across steps, so m never cancels and sign(m) is exact.
/// Roundings of the f32 kernel in step t (after r refreshes), counted in units u = 2^-24:
/// θ·decay with decay = fl32(1 − lr·wd) from the host: 2u of |θ|, and the final subtraction
/// u: ≤ 3u·|θ| per step. ratio = |m| / (ρ·bs·h + ε): m = β1·m + (1 − β1)·g with 1 − β1 exact
/// (Sterbenz) and same-sign terms gains ≤ 3u per step, so ≤ 3t·u; fl32(ρ·bs) on the host, ·h,
/// +ε and the division ≤ 4u; h's EMA ≤ 3u per refresh; lr·ratio u. With t = 3, r = 2:
/// ≤ 20u·lr·ratio ≤ 20u·lr per step. Three steps: |Δθ| ≤ 9u·|θ| + 60u·lr, and the test allows
/// twice that: rtol = 16u, atol = 128u·lr. m and h are relative: 3t·u ≤ 9u and 3r·u ≤ 6u, and
/// are allowed 16u.
#[test]
fn sophiag_step_in_chunks_matches_reference() {
    let small = small_binding_gpu();
    let n = CHUNKED;
    let config = SophiaGConfig {
        lr: 0.05,
        weight_decay: 0.2,
        ..Default::default()
    };
    let p = sophiag_params(&config);
    let theta0 = as_f32(&uniform(n, 1, -1.0, 1.0));
    let g1 = as_f32(&uniform(n, 2, -1.0, 1.0));
    let scale = |seed| -> Vec<f32> {
        let s = uniform(n, seed, 0.5, 1.5);
        g1.iter()
            .zip(&s)
            .map(|(&g, &s)| (g as f64 * s) as f32)
            .collect()
    };
    let grads = [g1.clone(), scale(3), scale(4)];
    let ghat = as_f32(&uniform(n, 5, -0.05, 0.05));

    let mut results = Vec::new();
    for gpu in [small, gpu()] {
        let theta = GpuVec::upload(gpu, &theta0).unwrap();
        let mut opt = SophiaG::new(gpu, n, config).unwrap();
        let ghat_gpu = GpuVec::upload(gpu, &ghat).unwrap();
        for (t, g) in grads.iter().enumerate() {
            if t > 0 {
                opt.refresh_from_sampled_grads(gpu, &ghat_gpu).unwrap();
            }
            opt.step(gpu, &theta, &GpuVec::upload(gpu, g).unwrap())
                .unwrap();
        }
        results.push((theta.read().unwrap(), opt.export_state().unwrap()));
    }

    let (mut theta, mut m, mut h) = (as_f64(&theta0), vec![0.0; n], vec![0.0; n]);
    for (t, g) in grads.iter().enumerate() {
        if t > 0 {
            refdiag::sophiag_refresh(&p, &mut h, &as_f64(&ghat));
        }
        refdiag::sophiag_step(&p, &mut theta, &mut m, &h, &as_f64(g));
    }
    let (got, state) = &results[0];
    let (atol, rtol) = (128.0 * U * p.lr, 16.0 * U);
    assert_close("θ (chunked)", got, &theta, atol, rtol);
    assert_close("m (chunked)", &state.tensors[0].m, &m, 0.0, 16.0 * U);
    assert_close("h (chunked)", &state.tensors[0].h, &h, 0.0, 16.0 * U);
    eprintln!(
        "SophiaG chunked: worst share of tolerance θ {:.3}, m {:.3}, h {:.3}",
        worst_ratio(got, &theta, atol, rtol),
        worst_ratio(&state.tensors[0].m, &m, 0.0, 16.0 * U),
        worst_ratio(&state.tensors[0].h, &h, 0.0, 16.0 * U)
    );
    // Chunking changes which binding an element is read through, never its arithmetic.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(got) == bits(&results[1].0),
        "chunked θ differs from unchunked θ"
    );
    assert!(
        *state == results[1].1,
        "chunked state differs from unchunked state"
    );
}

/// AdaHessian with per-row averaging (7 columns): chunks are 36·448 = 16,128 elements so the
/// per-row means stay aligned; the result is bit-identical to the unchunked device's.
#[test]
fn adahessian_per_row_in_chunks_equals_unchunked() {
    let (rows, cols) = (14_287, 7);
    let n = rows * cols;
    let spec = TensorSpec::new(&[rows, cols], Averaging::PerRow);
    let theta0 = as_f32(&uniform(n, 6, -1.0, 1.0));
    let g = as_f32(&uniform(n, 7, -1.0, 1.0));
    // |z⊙Hz| in [0.5, 1) with random signs: every row mean D ≥ 0.5, so each step moves θ by
    // lr·|m̂|/(D + ε) ≤ 0.15 / 0.5 = 0.3 (at t = 1, 2 with constant g, m̂ = g exactly in f64).
    let sign = uniform(n, 9, -1.0, 1.0);
    let zhz: Vec<f32> = as_f32(&uniform(n, 8, 0.5, 1.0))
        .iter()
        .zip(&sign)
        .map(|(&z, &s)| if s < 0.0 { -z } else { z })
        .collect();
    let run = |gpu: &Gpu| {
        let theta = GpuVec::upload(gpu, &theta0).unwrap();
        let (g, zhz) = (
            GpuVec::upload(gpu, &g).unwrap(),
            GpuVec::upload(gpu, &zhz).unwrap(),
        );
        let mut opt = AdaHessian::new_multi(
            gpu,
            std::slice::from_ref(&spec),
            AdaHessianConfig::default(),
        )
        .unwrap();
        for _ in 0..2 {
            opt.step(gpu, &theta, (&g, &zhz)).unwrap();
        }
        (theta.read().unwrap(), opt.export_state().unwrap())
    };
    let (chunked, unchunked) = (run(small_binding_gpu()), run(gpu()));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&chunked.0) == bits(&unchunked.0), "chunked θ differs");
    assert!(chunked.1 == unchunked.1, "chunked state differs");
    // And the unchunked result is AdaHessian's: check the f64 reference on the per-row path.
    let p = adahessian_params(&AdaHessianConfig::default());
    let (mut th, mut m, mut v) = (as_f64(&theta0), vec![0.0; n], vec![0.0; n]);
    for t in 1..=2 {
        refdiag::adahessian_step(
            &p,
            t,
            cols,
            &mut th,
            &mut m,
            &mut v,
            &as_f64(&g),
            &as_f64(&zhz),
        );
    }
    // Each step's update lr·m̂/(√v̂/bc2 + ε) goes through, in units u = 2^-24: the 7-term row
    // mean of positive values (7u), D² (15u), v's EMA of positive terms (+3u), √ (½ of that
    // + u), the host-rounded bias corrections and their divisions (4u), + ε (u), m and m̂ (5u),
    // the division and lr· (2u): ≤ 21u of the update; the subtraction adds u·|θ|. Two steps of
    // ≤ 0.3 each: |Δθ| ≤ 21u·0.6 + 2u·|θ|; allowed: atol 32u·0.6, rtol 4u (about 1.5–2×).
    let (atol, rtol) = (32.0 * U * 0.6, 4.0 * U);
    assert_close("θ (AdaHessian per row)", &chunked.0, &th, atol, rtol);
    eprintln!(
        "AdaHessian per row: worst share of tolerance θ {:.3}",
        worst_ratio(&chunked.0, &th, atol, rtol)
    );
}

#[test]
fn rng_in_chunks_matches_cpu_philox() {
    let small = small_binding_gpu();
    let (seed, offset) = (0x1234_5678_9ABC_DEF0u64, (1u64 << 32) - 5);
    let words = (rng::philox_u32(small, CHUNKED, seed, offset).unwrap())
        .read()
        .unwrap();
    let want = philox::philox_u32(seed, offset, CHUNKED);
    if let Some(i) = (0..CHUNKED).find(|&i| words[i] != want[i]) {
        panic!(
            "philox_u32 in chunks: element {i} (chunk {}) differs",
            i / 16_384
        );
    }
    let signs = (rng::rademacher(small, CHUNKED, seed, 3).unwrap())
        .read()
        .unwrap();
    assert!(
        signs == philox::rademacher(seed, 3, CHUNKED),
        "rademacher in chunks differs"
    );
}

#[test]
fn first_nonfinite_in_chunks_finds_the_first() {
    let small = small_binding_gpu();
    let data = as_f32(&uniform(CHUNKED, 9, -1.0, 1.0));
    let x = GpuVec::upload(small, &data).unwrap();
    assert_eq!(curvgpu::finite::first_nonfinite(small, &x).unwrap(), None);
    // Around every chunk boundary, and the tail of the last chunk.
    let mut positions: Vec<usize> = (1..=6).flat_map(|k| [16_384 * k - 1, 16_384 * k]).collect();
    positions.extend([0, CHUNKED - 3, CHUNKED - 1]);
    for p in positions {
        poke(small, &x, p, f32::NAN);
        assert_eq!(
            curvgpu::finite::first_nonfinite(small, &x).unwrap(),
            Some(p),
            "NaN at {p}"
        );
        poke(small, &x, p, data[p]);
    }
    // A later chunk's bad value must not hide an earlier one.
    poke(small, &x, 90_000, f32::INFINITY);
    poke(small, &x, 20_000, f32::NEG_INFINITY);
    assert_eq!(
        curvgpu::finite::first_nonfinite(small, &x).unwrap(),
        Some(20_000)
    );
}

#[test]
fn reduce_past_one_binding_is_too_large_binding() {
    let small = small_binding_gpu();
    let fits = GpuVec::upload(small, &vec![1.0f32; 16_384]).unwrap();
    assert_eq!(
        reduce::reduce(small, Reduction::Sum, &fits, None).unwrap(),
        16_384.0
    );
    let x = GpuVec::upload(small, &vec![1.0f32; 16_385]).unwrap();
    match reduce::reduce(small, Reduction::Sum, &x, None) {
        Err(Error::TooLarge {
            argument,
            limit,
            max,
            ..
        }) => assert_eq!(
            (argument, limit, max),
            ("x", "max_storage_buffer_binding_size", 65_536)
        ),
        other => {
            panic!("expected TooLarge {{ x, max_storage_buffer_binding_size }}, got {other:?}")
        }
    }
}

// ---- messages a user met -------------------------------------------------------------------

#[test]
fn f32_hyper_parameters_print_as_the_f32_given() {
    let err = SophiaG::new(
        gpu(),
        4,
        SophiaGConfig {
            lr: -0.001,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid hyper-parameter `lr` = -0.001: must be finite and > 0"
    );
}

#[test]
fn a_shape_whose_product_overflows_is_a_shape_error_not_empty() {
    let spec = TensorSpec::new(&[usize::MAX, 3], Averaging::None);
    match AdaHessian::new_multi(gpu(), &[spec], Default::default()) {
        Err(Error::Shape { argument, message }) => {
            assert_eq!(argument, "spec");
            assert!(message.contains("more elements"), "{message}");
        }
        other => panic!("expected Shape {{ spec }}, got {other:?}"),
    }
}

/// Each `CURVGPU_*` tuning variable overrides its own field on top of the adapter's defaults;
/// a bad value names the variable and the text it held.
#[test]
fn tuning_variables_override_one_field_each_and_name_a_bad_value() {
    use curvgpu::TuningOverrides;
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let cpu = Tuning::for_device_type(wgpu::DeviceType::Cpu);
    let one = TuningOverrides::from_vars(vars(&[("CURVGPU_STENCIL_MARCH", "4")])).unwrap();
    assert_eq!(
        one.apply(cpu),
        Tuning {
            stencil_march: 4,
            ..cpu
        },
        "the CPU defaults stay for every other field"
    );
    let none = TuningOverrides::from_vars(vars(&[
        ("CURVGPU_MAX_WORKGROUPS", "none"),
        ("CURVGPU_SIMD_LANES", " NONE "),
        ("CURVGPU_WORKGROUP_SIZE", ""),
    ]))
    .unwrap();
    assert_eq!(
        none.apply(cpu),
        Tuning {
            max_workgroups: None,
            simd_lanes: None,
            ..cpu
        }
    );
    match TuningOverrides::from_vars(vars(&[("CURVGPU_DOT_SLICES", "four")])) {
        Err(Error::Environment {
            variable, value, ..
        }) => assert_eq!((variable, value.as_str()), ("CURVGPU_DOT_SLICES", "four")),
        other => panic!("expected Environment, got {other:?}"),
    }
    let err = TuningOverrides::from_vars(vars(&[("CURVGPU_MAX_WORKGROUPS", "-3")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("CURVGPU_MAX_WORKGROUPS=\"-3\""), "{err}");
    // Through a device: the adapter's defaults, then the override.
    let mut options = GpuOptions::from_env().expect("valid environment");
    options.tuning_overrides = one;
    let gpu = pollster::block_on(Gpu::new_async(options)).unwrap();
    let defaults = Tuning::for_device_type(gpu.adapter_info().device_type);
    assert_eq!(
        gpu.tuning(),
        Tuning {
            stencil_march: 4,
            ..defaults
        }
    );
}
