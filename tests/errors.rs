mod common;
fn run(g: &curvgpu::Gpu, body: &str, n: u32) -> Vec<f32> {
    let src = format!("@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let k = id.x + id.y * nwg.x * 256u;
  if (k >= {n}u) {{ return; }}
  {body}
}}");
    let d = g.device();
    let m = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let p = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &m,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let out = g.zeros::<f32>(n as usize).unwrap();
    let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &p.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.buffer().as_entire_binding(),
        }],
    });
    let mut e = d.create_command_encoder(&Default::default());
    {
        let mut pass = e.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        let groups = n.div_ceil(256);
        pass.dispatch_workgroups(groups.min(65535), groups.div_ceil(65535), 1);
    }
    g.queue().submit([e.finish()]);
    g.read(&out).unwrap()
}
const U: f64 = 5.960464477539063e-8;
#[test]
fn probe() {
    let g = common::gpu();
    eprintln!("{}", g.adapter_info().name);
    let n = 1u32 << 24;
    let l = run(g, "let u1 = f32(k | 1u) * 5.9604645e-8; o[k] = log(u1);", n);
    let (mut wabs_hi, mut wrel_lo) = (0f64, 0f64);
    for k in 0..n {
        let u1 = ((k | 1) as f64) / 16777216.0;
        let d = (l[k as usize] as f64 - u1.ln()).abs();
        if u1 >= 0.5 {
            wabs_hi = wabs_hi.max(d)
        } else {
            wrel_lo = wrel_lo.max(d / u1.ln().abs())
        }
    }
    eprintln!(
        "log abs on [0.5,1): {} u; rel below 0.5: {} u",
        wabs_hi / U,
        wrel_lo / U
    );
    let q = run(
        g,
        "let u1 = f32(k | 1u) * 5.9604645e-8; o[k] = sqrt(-2.0 * log(u1));",
        n,
    );
    let mut worst = 0f64;
    let mut ws = 0f64;
    for k in 0..n as usize {
        let u1 = ((k | 1) as f64) / 16777216.0;
        let r = (-2.0 * u1.ln()).sqrt();
        let dr2 = 2.0 * 2.0 * U + 8.0 * U * r * r;
        let b = (dr2 / r).min(dr2.sqrt()) + 2.0 * U * r;
        worst = worst.max((q[k] as f64 - r).abs() / b);
        let w = (-2.0 * l[k] as f64).sqrt();
        if w > 0.0 {
            ws = ws.max((q[k] as f64 - w).abs() / w / U);
        }
    }
    eprintln!("radius worst err/bound {worst}; sqrt rel {ws} u");
    for (f, name) in [("sin", "sin"), ("cos", "cos")] {
        let s = run(
            g,
            &format!("let a = 6.2831855 * (f32(k) * 5.9604645e-8); o[k] = {f}(a);"),
            n,
        );
        let (mut wa, mut wf) = (0f64, 0f64);
        for k in 0..n as usize {
            let a32 = 6.2831855f32 * (k as f32 * 5.9604645e-8f32);
            let a = std::f64::consts::TAU * (k as f64) / 16777216.0;
            let t = if name == "sin" { a.sin() } else { a.cos() };
            let t32 = if name == "sin" {
                (a32 as f64).sin()
            } else {
                (a32 as f64).cos()
            };
            wa = wa.max((s[k] as f64 - t).abs());
            wf = wf.max((s[k] as f64 - t32).abs());
        }
        let bound = 1.7484556e-7 + U * std::f64::consts::TAU + 4.0 * U;
        eprintln!(
            "{name}: vs exact angle {wa:e} (bound {bound:e}, ratio {}), vs f32 angle {} u",
            wa / bound,
            wf / U
        );
    }
}
