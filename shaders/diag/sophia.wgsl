// Sophia (Liuhong99/Sophia sophia.py; SophiaH as in Levanter). Each step is one fused pass:
// `*_step` walks vec4s, `*_step_tail` finishes the last n % 4 scalars of the same tensor.
// Bindings 1..4 are declared twice, as vec4 and as scalar arrays; each entry point uses one set.

struct SophiaG {
    n: u32,
    lr: f32,
    beta1: f32,
    rho_bs: f32,   // ρ·bs: the GNB estimate is scaled by the batch size
    decay: f32,    // 1 − lr·weight_decay
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

struct SophiaH {
    n: u32,
    lr: f32,
    beta1: f32,
    bias1: f32,    // 1 − β1^t
    gamma: f32,
    eps: f32,
    weight_decay: f32,
    _pad: u32,
}

struct Ema {
    n: u32,
    beta: f32,
    _pad0: u32,
    _pad1: u32,
}

struct Moments {
    theta: vec4<f32>,
    m: vec4<f32>,
}

@group(0) @binding(0) var<uniform> pg: SophiaG;
@group(0) @binding(0) var<uniform> ph: SophiaH;
@group(0) @binding(0) var<uniform> pe: Ema;

@group(0) @binding(1) var<storage, read_write> theta4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> h4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> theta1: array<f32>;
@group(0) @binding(2) var<storage, read> grad1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read> h1: array<f32>;

// EMA refresh: binding 1 is the estimate h (read-write), binding 2 the new sample.
@group(0) @binding(1) var<storage, read_write> ema_h4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ema_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> ema_h1: array<f32>;
@group(0) @binding(2) var<storage, read> ema_x1: array<f32>;

// clip(q, ±1) that keeps NaN: WGSL leaves clamp/min/max/sign of NaN to the implementation,
// and a NaN gradient must reach θ as it does in PyTorch.
fn clip_unit(q: vec4<f32>) -> vec4<f32> {
    return select(clamp(q, vec4<f32>(-1.0), vec4<f32>(1.0)), q, is_nan4(q));
}

// θ ← θ(1 − lr·wd); m ← β1 m + (1 − β1) g; θ ← θ − lr·sign(m)·min(|m| / (ρ·bs·h + ε), 1).
// ε is added, not a floor, and nothing is bias-corrected: exactly the reference code.
// sign(m)·min(|m|/d, 1) is clip(m/d, ±1) for d > 0, infinities included.
fn sophiag(theta: vec4<f32>, g: vec4<f32>, m: vec4<f32>, h: vec4<f32>) -> Moments {
    let decayed = theta * pg.decay;
    let m_new = pg.beta1 * m + (1.0 - pg.beta1) * g;
    let u = clip_unit(m_new / (pg.rho_bs * h + pg.eps));
    return Moments(decayed - pg.lr * u, m_new);
}

// m ← β1 m + (1 − β1) g; u = clip(m̂ / max(γh, ε), ±1); θ ← θ − lr·(u + wd·θ).
// A NaN h makes the denominator NaN, as jnp.maximum does.
fn sophiah(theta: vec4<f32>, g: vec4<f32>, m: vec4<f32>, h: vec4<f32>) -> Moments {
    let m_new = ph.beta1 * m + (1.0 - ph.beta1) * g;
    let m_hat = m_new / ph.bias1;
    let gh = ph.gamma * h;
    let denom = select(max(gh, vec4<f32>(ph.eps)), gh, is_nan4(gh));
    let u = clip_unit(m_hat / denom);
    return Moments(theta - ph.lr * (u + ph.weight_decay * theta), m_new);
}

@compute @workgroup_size(WG)
fn sophiag_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < pg.n / 4u; i += grid_stride(nwg)) {
        let r = sophiag(theta4[i], grad4[i], m4[i], h4[i]);
        theta4[i] = r.theta;
        m4[i] = r.m;
    }
}

@compute @workgroup_size(4)
fn sophiag_step_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(pg.n, lid);
    if (i < pg.n) {
        let r = sophiag(vec4(theta1[i]), vec4(grad1[i]), vec4(m1[i]), vec4(h1[i]));
        theta1[i] = r.theta.x;
        m1[i] = r.m.x;
    }
}

@compute @workgroup_size(WG)
fn sophiah_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < ph.n / 4u; i += grid_stride(nwg)) {
        let r = sophiah(theta4[i], grad4[i], m4[i], h4[i]);
        theta4[i] = r.theta;
        m4[i] = r.m;
    }
}

@compute @workgroup_size(4)
fn sophiah_step_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(ph.n, lid);
    if (i < ph.n) {
        let r = sophiah(vec4(theta1[i]), vec4(grad1[i]), vec4(m1[i]), vec4(h1[i]));
        theta1[i] = r.theta.x;
        m1[i] = r.m.x;
    }
}

// h ← β h + (1 − β) x², the Gauss–Newton–Bartlett refresh with x = ĝ (SophiaG).
@compute @workgroup_size(WG)
fn ema_square(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < pe.n / 4u; i += grid_stride(nwg)) {
        let x = ema_x4[i];
        ema_h4[i] = pe.beta * ema_h4[i] + (1.0 - pe.beta) * x * x;
    }
}

@compute @workgroup_size(4)
fn ema_square_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(pe.n, lid);
    if (i < pe.n) {
        let x = ema_x1[i];
        ema_h1[i] = pe.beta * ema_h1[i] + (1.0 - pe.beta) * x * x;
    }
}

// h ← β h + (1 − β) x, the Hutchinson refresh with x = u ⊙ Hu (SophiaH).
@compute @workgroup_size(WG)
fn ema(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < pe.n / 4u; i += grid_stride(nwg)) {
        ema_h4[i] = pe.beta * ema_h4[i] + (1.0 - pe.beta) * ema_x4[i];
    }
}

@compute @workgroup_size(4)
fn ema_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(pe.n, lid);
    if (i < pe.n) {
        ema_h1[i] = pe.beta * ema_h1[i] + (1.0 - pe.beta) * ema_x1[i];
    }
}
