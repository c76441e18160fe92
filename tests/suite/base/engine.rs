//! Linking into an engine that owns the device, the buffers and the command encoder:
//! `record_*` writes into the caller's encoder with the caller's buffers, copies nothing and
//! submits nothing; state checkpoints round-trip.


use crate::common::*;
use curvgpu::diag::{SophiaG, SophiaGConfig};
use curvgpu::reference::diag as reference;
use curvgpu::{BufView, Gpu, GpuVec};

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
    let gpu = Gpu::from_device(engine.device.clone(), engine.queue.clone());
    // 1,001 elements in a buffer of exactly 4,004 bytes: the tail path must not touch byte 4,004.
    let n = 1001;
    let theta0 = round_f32(&uniform(n, 1, -1.0, 1.0));
    let g = round_f32(&uniform(n, 2, -1.0, 1.0));
    let theta = engine.buffer(&as_f32(&theta0), 0);
    let grads = engine.buffer(&as_f32(&g), 0);
    let mut opt = SophiaG::new(&gpu, n, SophiaGConfig::default()).unwrap();
    let mut encoder = engine.device.create_command_encoder(&Default::default());
    opt.record_step(
        &gpu,
        &mut encoder,
        BufView::new(&theta, 0, n),
        BufView::new(&grads, 0, n),
    )
    .unwrap();
    opt.record_step(
        &gpu,
        &mut encoder,
        BufView::new(&theta, 0, n),
        BufView::new(&grads, 0, n),
    )
    .unwrap();
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
    let gpu = Gpu::from_device(engine.device.clone(), engine.queue.clone());
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
    opt.record_step(&gpu, &mut encoder, views(&theta_buf), views(&grad_buf))
        .unwrap();
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
                gpu.upload(&as_f32(&uniform(n, seed + i as u64, -1.0, 1.0)))
                    .unwrap()
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
            multi.refresh_hessian(gpu, &ghat).unwrap();
            for (i, o) in singles.iter_mut().enumerate() {
                o.refresh_hessian(gpu, &ghat[i]).unwrap();
            }
        }
    }
    for i in 0..lens.len() {
        assert_eq!(
            gpu.read(&theta_multi[i]).unwrap(),
            gpu.read(&theta_single[i]).unwrap(),
            "tensor {i}"
        );
    }
}

#[test]
fn a_restored_checkpoint_continues_bit_identically() {
    let gpu = gpu();
    let n = 1003;
    let theta_a = gpu.upload(&as_f32(&uniform(n, 1, -1.0, 1.0))).unwrap();
    let grads = gpu.upload(&as_f32(&uniform(n, 2, -1.0, 1.0))).unwrap();
    let ghat = gpu.upload(&as_f32(&uniform(n, 3, -1.0, 1.0))).unwrap();
    let mut a = SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap();
    for _ in 0..5 {
        a.step(gpu, &theta_a, &grads).unwrap();
    }
    a.refresh_hessian(gpu, &ghat).unwrap();
    let checkpoint = a.export_state(gpu).unwrap();
    let theta_b = gpu.upload(&gpu.read(&theta_a).unwrap()).unwrap();
    let mut b = SophiaG::new(gpu, n, SophiaGConfig::default()).unwrap();
    b.import_state(gpu, &checkpoint).unwrap();
    assert_eq!(b.steps(), 5);
    for _ in 0..5 {
        a.step(gpu, &theta_a, &grads).unwrap();
        b.step(gpu, &theta_b, &grads).unwrap();
    }
    assert_eq!(gpu.read(&theta_a).unwrap(), gpu.read(&theta_b).unwrap());
    assert_eq!(a.export_state(gpu).unwrap(), b.export_state(gpu).unwrap());
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
    let g = gpu.upload(&as_f32(&uniform(n, 2, -1.0, 1.0))).unwrap();
    let h = gpu.upload(&as_f32(&uniform(n, 3, 0.0, 0.01))).unwrap();
    let (fused, unfused) = (gpu.upload(&theta0).unwrap(), gpu.upload(&theta0).unwrap());
    let (m, ratio) = (gpu.zeros::<f32>(n).unwrap(), gpu.zeros::<f32>(n).unwrap());
    let mut opt = SophiaG::new(gpu, n, config).unwrap();
    let mut state = opt.export_state(gpu).unwrap();
    state.tensors[0].h = gpu.read(&h).unwrap();
    opt.import_state(gpu, &state).unwrap();
    opt.step(gpu, &fused, &g).unwrap();
    let mut rec = curvgpu::Recorder::new(gpu);
    curvgpu::bench::kernels::record_sophiag_unfused(
        &mut rec, &config, &unfused, &g, &m, &h, &ratio,
    )
    .unwrap();
    rec.submit().unwrap();
    let want: Vec<f64> = gpu
        .read(&fused)
        .unwrap()
        .iter()
        .map(|&x| x as f64)
        .collect();
    assert_close(
        "unfused vs fused",
        &gpu.read(&unfused).unwrap(),
        &want,
        4.0 * EPS32,
        0.0,
    );
    assert_eq!(
        gpu.read(&m).unwrap(),
        opt.export_state(gpu).unwrap().tensors[0].m
    );
}
