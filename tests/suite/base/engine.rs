//! Linking into an engine that owns the device, the buffers and the command encoder:
//! `record_*` writes into the caller's encoder with the caller's buffers, copies nothing and
//! submits nothing; state checkpoints round-trip.

use crate::common::*;
use curvgpu::buffer::Layout;
use curvgpu::diag::{SophiaG, SophiaGConfig};
use curvgpu::reference::diag as reference;
use curvgpu::{BufView, Error, Gpu, GpuVec, Optimizer, Recorder};

/// The engine's side: its own device and queue, its own buffers, its own readback.
struct Engine {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

impl Engine {
    fn new() -> Self {
        let gpu = gpu();
        // Same adapter as the shared test device, but a device the "engine" created itself.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .find(|a| {
                let i = a.get_info();
                i.name == gpu.adapter_info().name && i.backend == gpu.adapter_info().backend
            })
            .expect("the test adapter");
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
        Engine { device, queue }
    }

    fn buffer(&self, data: &[f32], pad_bytes: u64) -> wgpu::Buffer {
        let size = 4 * data.len() as u64 + pad_bytes;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("engine"),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(data));
        buf
    }

    fn read(&self, buf: &wgpu::Buffer) -> Vec<f32> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: buf.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
        self.queue.submit([enc.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
        let out = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
        out
    }
}

fn sophia_reference(theta: &[f64], g: &[f64], steps: usize) -> Vec<f64> {
    let c = SophiaGConfig::default();
    let p = sophiag_params(&c);
    let (mut th, mut m) = (theta.to_vec(), vec![0.0; theta.len()]);
    for _ in 0..steps {
        reference::sophiag_step(&p, &mut th, &mut m, &vec![0.0; theta.len()], g);
    }
    th
}

#[test]
fn record_step_uses_the_callers_buffers_and_encoder_and_submits_nothing() {
    let engine = Engine::new();
    let gpu = Gpu::from_device(engine.device.clone(), engine.queue.clone()).unwrap();
    // 1,001 elements in a buffer of exactly 4,004 bytes: the tail path must not touch byte 4,004.
    let n = 1001;
    let theta0 = round_f32(&uniform(n, 1, -1.0, 1.0));
    let g = round_f32(&uniform(n, 2, -1.0, 1.0));
    let theta = engine.buffer(&as_f32(&theta0), 0);
    let grads = engine.buffer(&as_f32(&g), 0);
    let mut opt = SophiaG::new(&gpu, n, SophiaGConfig::default()).unwrap();
    let mut encoder = engine.device.create_command_encoder(&Default::default());
    let mut rec = Recorder::new(&gpu);
    for step in 1..=2 {
        let (theta, grads) = (BufView::new(&theta, 0, n), BufView::new(&grads, 0, n));
        opt.record_step(&mut rec, step, theta, grads).unwrap();
    }
    rec.encode(&mut encoder);
    engine
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    assert_eq!(
        engine.read(&theta),
        as_f32(&theta0),
        "nothing may run before the engine submits"
    );
    engine.queue.submit([encoder.finish()]);
    // Two steps recorded into one encoder: both must apply, in order.
    let want = sophia_reference(&theta0, &g, 2);
    assert_close(
        "θ after the engine's submit",
        &engine.read(&theta),
        &want,
        2.0 * 4.0 * EPS32,
        0.0,
    );
}

#[test]
fn tensors_packed_into_one_caller_buffer_leave_their_neighbours_alone() {
    let engine = Engine::new();
    let gpu = Gpu::from_device(engine.device.clone(), engine.queue.clone()).unwrap();
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let lens = [3usize, 130, 1];
    // Layout: each tensor at an aligned offset, sentinel values everywhere else.
    let mut offsets = Vec::new();
    let mut end = 0;
    for &len in &lens {
        offsets.push(end);
        end = (end + len).div_ceil(align) * align;
    }
    let sentinel = 12345.0f32;
    let mut packed = vec![sentinel; end];
    let mut grads = vec![sentinel; end];
    let mut want = vec![sentinel as f64; end];
    for (i, (&off, &len)) in offsets.iter().zip(&lens).enumerate() {
        let th = round_f32(&uniform(len, 10 + i as u64, -1.0, 1.0));
        let g = round_f32(&uniform(len, 20 + i as u64, -1.0, 1.0));
        packed[off..off + len].copy_from_slice(&as_f32(&th));
        grads[off..off + len].copy_from_slice(&as_f32(&g));
        want[off..off + len].copy_from_slice(&sophia_reference(&th, &g, 1));
    }
    let theta_buf = engine.buffer(&packed, 0);
    let grad_buf = engine.buffer(&grads, 0);
    let views = |buf| -> Vec<BufView> {
        offsets
            .iter()
            .zip(&lens)
            .map(|(&o, &l)| BufView::new(buf, 4 * o as u64, l))
            .collect()
    };
    let mut opt = SophiaG::new_multi(&gpu, &lens, SophiaGConfig::default()).unwrap();
    let mut encoder = engine.device.create_command_encoder(&Default::default());
    let mut rec = Recorder::new(&gpu);
    opt.record_step(&mut rec, 1, views(&theta_buf), views(&grad_buf))
        .unwrap();
    rec.encode(&mut encoder);
    engine.queue.submit([encoder.finish()]);
    assert_close(
        "packed θ and sentinels",
        &engine.read(&theta_buf),
        &want,
        4.0 * EPS32,
        0.0,
    );
}

#[test]
fn multi_tensor_step_equals_one_optimizer_per_tensor() {
    let gpu = gpu();
    let lens = [1usize, 7, 1000, 4097];
    let make = |seed: u64| -> Vec<GpuVec<f32>> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| {
                GpuVec::upload(gpu, &as_f32(&uniform(n, seed + i as u64, -1.0, 1.0))).unwrap()
            })
            .collect()
    };
    let (theta_multi, theta_single, grads, ghat) = (make(1), make(1), make(2), make(3));
    let mut multi = SophiaG::new_multi(gpu, &lens, SophiaGConfig::default()).unwrap();
    let mut singles: Vec<SophiaG> = lens
        .iter()
        .map(|&n| SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap())
        .collect();
    for step in 1..=12 {
        multi.step(gpu, &theta_multi, &grads).unwrap();
        for (i, o) in singles.iter_mut().enumerate() {
            o.step(gpu, &theta_single[i], &grads[i]).unwrap();
        }
        if step % 5 == 0 {
            multi.refresh_from_sampled_grads(gpu, &ghat).unwrap();
            for (i, o) in singles.iter_mut().enumerate() {
                o.refresh_from_sampled_grads(gpu, &ghat[i]).unwrap();
            }
        }
    }
    for i in 0..lens.len() {
        assert_eq!(
            theta_multi[i].read().unwrap(),
            theta_single[i].read().unwrap(),
            "tensor {i}"
        );
    }
}

#[test]
fn a_restored_checkpoint_continues_bit_identically() {
    let gpu = gpu();
    let n = 1003;
    let theta_a = GpuVec::upload(gpu, &as_f32(&uniform(n, 1, -1.0, 1.0))).unwrap();
    let grads = GpuVec::upload(gpu, &as_f32(&uniform(n, 2, -1.0, 1.0))).unwrap();
    let ghat = GpuVec::upload(gpu, &as_f32(&uniform(n, 3, -1.0, 1.0))).unwrap();
    let mut a = SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap();
    for _ in 0..5 {
        a.step(gpu, &theta_a, &grads).unwrap();
    }
    a.refresh_from_sampled_grads(gpu, &ghat).unwrap();
    let checkpoint = a.export_state().unwrap();
    let theta_b = GpuVec::upload(gpu, &theta_a.read().unwrap()).unwrap();
    let mut b = SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap();
    b.import_state(&checkpoint).unwrap();
    assert_eq!(b.steps(), 5);
    for _ in 0..5 {
        a.step(gpu, &theta_a, &grads).unwrap();
        b.step(gpu, &theta_b, &grads).unwrap();
    }
    assert_eq!(theta_a.read().unwrap(), theta_b.read().unwrap());
    assert_eq!(a.export_state().unwrap(), b.export_state().unwrap());
}

#[test]
fn the_unfused_baseline_computes_the_same_update_as_the_fused_step() {
    // The bench compares the fused step with five single-operation kernels: both must compute
    // the same thing. Same operations in the same order, except θ·decay and the final update
    // are separate roundings in both: results agree to a couple of ulps.
    let gpu = gpu();
    let n = 4096;
    let config = SophiaGConfig::default();
    let theta0 = as_f32(&uniform(n, 1, -1.0, 1.0));
    let g = GpuVec::upload(gpu, &as_f32(&uniform(n, 2, -1.0, 1.0))).unwrap();
    let h = GpuVec::upload(gpu, &as_f32(&uniform(n, 3, 0.0, 0.01))).unwrap();
    let (fused, unfused) = (
        GpuVec::upload(gpu, &theta0).unwrap(),
        GpuVec::upload(gpu, &theta0).unwrap(),
    );
    let (m, ratio) = (
        GpuVec::<f32>::zeros(gpu, n).unwrap(),
        GpuVec::<f32>::zeros(gpu, n).unwrap(),
    );
    let mut opt = SophiaG::new(gpu, n, config).unwrap();
    let mut state = opt.export_state().unwrap();
    state.tensors[0].h = h.read().unwrap();
    opt.import_state(&state).unwrap();
    opt.step(gpu, &fused, &g).unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    curvgpu::bench::kernels::record_sophiag_unfused(
        &mut rec, &config, &unfused, &g, &m, &h, &ratio,
    )
    .unwrap();
    rec.submit().unwrap();
    let want: Vec<f64> = fused.read().unwrap().iter().map(|&x| x as f64).collect();
    assert_close(
        "unfused vs fused",
        &unfused.read().unwrap(),
        &want,
        4.0 * EPS32,
        0.0,
    );
    assert_eq!(m.read().unwrap(), opt.export_state().unwrap().tensors[0].m);
}

/// An engine's pooled allocation: parameters and gradients of several tensors in one buffer
/// (as Burn's and cubecl's pools lay them out), sentinels between them. The step must read the
/// gradients from the same buffer it writes the parameters of, and touch nothing else.
#[test]
fn parameters_and_gradients_in_one_engine_buffer_step_like_separate_buffers() {
    let engine = Engine::new();
    let gpu = Gpu::from_device(engine.device.clone(), engine.queue.clone()).unwrap();
    let lens = [3usize, 130, 1, 1029];
    let all: Vec<usize> = lens.iter().chain(&lens).copied().collect();
    let layout = Layout::new::<f32>(gpu.limits(), &all).unwrap();
    let sentinel = -777.0f32;
    let mut arena = vec![sentinel; layout.size() as usize / 4];
    let mut want = vec![sentinel as f64; arena.len()];
    for (i, &len) in lens.iter().enumerate() {
        let th = round_f32(&uniform(len, 30 + i as u64, -1.0, 1.0));
        let g = round_f32(&uniform(len, 40 + i as u64, -1.0, 1.0));
        let (pt, pg) = (
            layout.offsets()[i] as usize / 4,
            layout.offsets()[lens.len() + i] as usize / 4,
        );
        arena[pt..pt + len].copy_from_slice(&as_f32(&th));
        arena[pg..pg + len].copy_from_slice(&as_f32(&g));
        want[pt..pt + len].copy_from_slice(&sophia_reference(&th, &g, 1));
        want[pg..pg + len].copy_from_slice(&g);
    }
    let buffer = engine.buffer(&arena, 0);
    let views = layout.views(&buffer);
    let (params, grads) = views.split_at(lens.len());
    let mut opt = SophiaG::new_multi(&gpu, &lens, SophiaGConfig::default()).unwrap();
    let mut rec = Recorder::new(&gpu);
    opt.record_step(&mut rec, 1, params, grads).unwrap();
    let mut encoder = engine.device.create_command_encoder(&Default::default());
    rec.encode(&mut encoder);
    engine.queue.submit([encoder.finish()]);
    // One fused step per element: the f32 update's rounding, as in the test above.
    assert_close("one arena", &engine.read(&buffer), &want, 4.0 * EPS32, 0.0);
}

/// Views of one buffer that share bytes where the step writes are refused before anything is
/// recorded, naming both arguments; the same view as parameters and gradients too.
#[test]
fn overlapping_views_are_refused_naming_both_arguments() {
    let gpu = gpu();
    let n = 64;
    let arena = GpuVec::<f32>::zeros(gpu, 3 * n).unwrap();
    let whole = arena.view();
    let (a, b) = (
        BufView::new(whole.buffer(), 0, n),
        BufView::new(whole.buffer(), 0, n),
    );
    let mut opt = SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap();
    let mut rec = Recorder::new(gpu);
    match opt.record_step(&mut rec, 1, a, b) {
        Err(Error::Overlap { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), ("params", "grads"))
        }
        other => panic!("expected Overlap, got {other:?}"),
    }
    assert!(rec.is_empty(), "nothing recorded");
    // The optimizer's own state passed as gradients is refused too, and named.
    let m = opt.momentum()[0].clone();
    let theta = GpuVec::<f32>::zeros(gpu, n).unwrap();
    match opt.step(gpu, &m, &theta) {
        Err(Error::Overlap { first, second, .. }) => {
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("params", "m (optimizer state)")
            )
        }
        other => panic!("expected Overlap, got {other:?}"),
    }
}

/// A recording that is dropped instead of submitted changes nothing: the step number is the
/// caller's, so the next recorded step bias-corrects as the first.
#[test]
fn a_dropped_recording_does_not_shift_the_bias_correction() {
    use curvgpu::diag::{AdamW, AdamWConfig};
    let gpu = gpu();
    let n = 37;
    let theta0 = as_f32(&round_f32(&uniform(n, 7, -1.0, 1.0)));
    let g = GpuVec::upload(gpu, &as_f32(&round_f32(&uniform(n, 8, -1.0, 1.0)))).unwrap();
    let run = |drop_one: bool| {
        let theta = GpuVec::upload(gpu, &theta0).unwrap();
        let mut opt = AdamW::new(gpu, n, AdamWConfig::default()).unwrap();
        if drop_one {
            let mut rec = Recorder::new(gpu);
            opt.record_step(&mut rec, 1, &theta, &g).unwrap();
            drop(rec);
        }
        let mut rec = Recorder::new(gpu);
        opt.record_step(&mut rec, 1, &theta, &g).unwrap();
        rec.submit().unwrap();
        opt.step(gpu, &theta, &g).unwrap(); // step 2
        assert_eq!(opt.steps(), 2);
        theta.read().unwrap()
    };
    assert_eq!(run(true), run(false));
}

/// Identity is the device's: two wrappers of one device accept each other's vectors and
/// optimizers (and share the pipeline cache), and a clone is the same `Gpu`.
#[test]
fn two_wrappers_of_one_device_are_one_gpu() {
    let engine = Engine::new();
    let a = Gpu::from_device(engine.device.clone(), engine.queue.clone()).unwrap();
    let b = Gpu::from_device(engine.device.clone(), engine.queue.clone()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.clone(), a);
    let n = 10;
    let theta = GpuVec::upload(&a, &[0.5f32; 10]).unwrap();
    let g = GpuVec::upload(&b, &[0.25f32; 10]).unwrap();
    assert!(theta.belongs_to(&b) && g.belongs_to(&a));
    let mut opt = SophiaG::new(&a, n, SophiaGConfig::default()).unwrap();
    opt.step(&b, &theta, &g).unwrap();
    let other = Engine::new();
    let c = Gpu::from_device(other.device.clone(), other.queue.clone()).unwrap();
    assert_ne!(a, c);
    assert!(matches!(
        opt.step(&c, &theta, &g),
        Err(Error::WrongDevice { .. })
    ));
}

/// A device granted less than curvgpu needs is refused when wrapped, naming the limit.
#[test]
fn a_device_below_the_required_limits_is_refused_naming_the_limit() {
    let gpu = gpu();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .find(|a| {
            let i = a.get_info();
            i.name == gpu.adapter_info().name && i.backend == gpu.adapter_info().backend
        })
        .expect("the test adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::downlevel_defaults(),
        ..Default::default()
    }))
    .unwrap();
    match Gpu::from_device(device, queue) {
        Err(Error::DeviceLimit { limit, granted, .. }) => {
            assert_eq!(limit, "max_storage_buffers_per_shader_stage");
            assert_eq!(granted, 4);
        }
        other => panic!("expected DeviceLimit, got {other:?}"),
    }
}
