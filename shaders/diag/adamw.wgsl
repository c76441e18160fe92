// AdamW as PyTorch's `torch.optim.AdamW` (single-tensor path, amsgrad off). One fused pass:
// `adamw_step` walks vec4s, `adamw_step_tail` finishes the last n % 4 scalars of the same
// tensor. Bindings 1..4 are declared twice, as vec4 and as scalar arrays; each entry point
// uses one set.

struct AdamW {
    n: u32,
    decay: f32,      // 1 − lr·weight_decay
    beta1: f32,
    beta2: f32,
    step_size: f32,  // lr / (1 − β1^t)
    bc2_sqrt: f32,   // √(1 − β2^t)
    eps: f32,
    _pad: u32,
}

struct Moments {
    theta: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}

@group(0) @binding(0) var<uniform> pa: AdamW;

@group(0) @binding(1) var<storage, read_write> theta4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> theta1: array<f32>;
@group(0) @binding(2) var<storage, read> grad1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> v1: array<f32>;

// θ ← θ(1 − lr·wd); m ← β1 m + (1 − β1) g; v ← β2 v + (1 − β2) g²;
// θ ← θ − (lr / bc1)·m / (√v / √bc2 + ε), in PyTorch's order of operations (the bias
// corrections are folded into step_size and bc2_sqrt on the host, in f64, as PyTorch does in
// Python floats). The step count t lives on the host: bias correction needs no device state.
fn adamw(theta: vec4<f32>, g: vec4<f32>, m: vec4<f32>, v: vec4<f32>) -> Moments {
    let decayed = theta * pa.decay;
    let m_new = pa.beta1 * m + (1.0 - pa.beta1) * g;
    let v_new = pa.beta2 * v + (1.0 - pa.beta2) * g * g;
    let denom = sqrt(v_new) / pa.bc2_sqrt + pa.eps;
    return Moments(decayed - pa.step_size * (m_new / denom), m_new, v_new);
}

@compute @workgroup_size(WG)
fn adamw_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < pa.n / 4u; i += grid_stride(nwg)) {
        let r = adamw(theta4[i], grad4[i], m4[i], v4[i]);
        theta4[i] = r.theta;
        m4[i] = r.m;
        v4[i] = r.v;
    }
}

@compute @workgroup_size(4)
fn adamw_step_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(pa.n, lid);
    if (i < pa.n) {
        let r = adamw(vec4(theta1[i]), vec4(grad1[i]), vec4(m1[i]), vec4(v1[i]));
        theta1[i] = r.theta.x;
        m1[i] = r.m.x;
        v1[i] = r.v.x;
    }
}
