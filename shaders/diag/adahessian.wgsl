// AdaHessian (amirgholami/adahessian optim_adahessian.py), one fused pass per step.
// D = |z ⊙ Hz|, optionally averaged over contiguous segments first (per row of a 2-D weight,
// per block_length block, per kh×kw window of a 4-D conv weight: all contiguous row-major).
// `adahessian_step` reads z ⊙ Hz directly; `adahessian_step_avg` reads the per-segment means
// written by `segment_mean_abs`. `*_tail` entries finish the last n % 4 scalars.

struct AdaHessian {
    n: u32,
    segment: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    inv_bias1: f32,       // 1 / (1 − β1^t)
    inv_bias2_pow: f32,   // 1 / (√(1 − β2^t))^k
    eps: f32,
    weight_decay: f32,
    power: f32,       // hessian_power k
    _pad0: u32,
    _pad1: u32,
}

struct SegmentMean {
    segments: u32,
    segment: u32,
    _pad0: u32,
    _pad1: u32,
}

struct State {
    theta: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: AdaHessian;
@group(0) @binding(1) var<storage, read_write> theta4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> zhz4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> theta1: array<f32>;
@group(0) @binding(2) var<storage, read> grad1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> v1: array<f32>;
@group(0) @binding(5) var<storage, read> d1: array<f32>;

@group(0) @binding(0) var<uniform> sm: SegmentMean;
@group(0) @binding(1) var<storage, read> seg_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> seg_out: array<f32>;

// x^k for x ≥ 0, exact for k = 1 and 0^k = 0 (pow(0, k) is undefined in WGSL).
fn power(x: vec4<f32>) -> vec4<f32> {
    if (p.power == 1.0) {
        return x;
    }
    return select(pow(x, vec4<f32>(p.power)), vec4<f32>(0.0), x == vec4<f32>(0.0));
}

// m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) D²;
// θ ← θ − lr·(m/(1−β1^t) / ((√v)^k / (√(1−β2^t))^k + eps) + wd·θ).
// The bias corrections arrive as reciprocals: one division per element instead of three
// (division is the slow operation on CPU adapters; the rounding difference is one ulp).
fn adahessian(theta: vec4<f32>, g: vec4<f32>, m: vec4<f32>, v: vec4<f32>, d: vec4<f32>) -> State {
    let m_new = p.beta1 * m + (1.0 - p.beta1) * g;
    let v_new = p.beta2 * v + (1.0 - p.beta2) * d * d;
    let denom = power(sqrt(v_new)) * p.inv_bias2_pow + p.eps;
    let theta_new = theta - p.lr * (m_new * p.inv_bias1 / denom + p.weight_decay * theta);
    return State(theta_new, m_new, v_new);
}

@compute @workgroup_size(WG)
fn adahessian_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < p.n / 4u; i += grid_stride(nwg)) {
        let s = adahessian(theta4[i], grad4[i], m4[i], v4[i], abs(zhz4[i]));
        theta4[i] = s.theta;
        m4[i] = s.m;
        v4[i] = s.v;
    }
}

@compute @workgroup_size(WG)
fn adahessian_step_avg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < p.n / 4u; i += grid_stride(nwg)) {
        let e = 4u * i;
        let d = vec4<f32>(d1[e / p.segment], d1[(e + 1u) / p.segment],
                          d1[(e + 2u) / p.segment], d1[(e + 3u) / p.segment]);
        let s = adahessian(theta4[i], grad4[i], m4[i], v4[i], d);
        theta4[i] = s.theta;
        m4[i] = s.m;
        v4[i] = s.v;
    }
}

// Scalar tail; binding 5 holds |z ⊙ Hz| elementwise (segment 1) or the segment means.
@compute @workgroup_size(4)
fn adahessian_step_tail(@builtin(local_invocation_index) lid: u32) {
    let i = tail_index(p.n, lid);
    if (i < p.n) {
        let d = abs(d1[i / p.segment]);
        let s = adahessian(vec4(theta1[i]), vec4(grad1[i]), vec4(m1[i]), vec4(v1[i]), vec4(d));
        theta1[i] = s.theta.x;
        m1[i] = s.m.x;
        v1[i] = s.v.x;
    }
}

// One invocation per segment: mean of |x| over `segment` contiguous elements.
@compute @workgroup_size(WG)
fn segment_mean_abs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    for (var s = linear_index(wid, nwg, lid); s < sm.segments; s += grid_stride(nwg)) {
        var acc = 0.0;
        let start = s * sm.segment;
        for (var j = 0u; j < sm.segment; j++) {
            acc += abs(seg_in[start + j]);
        }
        seg_out[s] = acc / f32(sm.segment);
    }
}
