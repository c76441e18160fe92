// MKOR (Mozaffari et al.): rank-1 Sherman–Morrison updates of the inverse Kronecker factors,
// O(n²) per refresh, nothing cubic. For one n×n inverse factor J (row-major at `offset` in the
// packed factors) and its statistic v:
//   blend:  J_b = s·J + t·I with (s, t) = (0.95, 0.05), or (0.855, 0.145) when the previous
//           refresh left max|J| > 2 (the stabiliser J ← 0.9·J + 0.1·I, then the blend);
//   update: J ← J_b − (J_b·v)(vᵀ·J_b) / (1 + vᵀ·J_b·v).
// The pieces run as `refresh_begin` (flag), `means` (v), `refresh_products` (J_b·v, vᵀ·J_b),
// `refresh_denominator` and `refresh_update` (which also records max|J| for the next flag).

struct Factor {
    n: u32,            // side of J; means: the statistic's input width (n − bias)
    offset: u32,       // first element of J in the packed factors
    vec_offset: u32,   // first element of v (and of J_b·v, vᵀ·J_b) in their packed buffers
    index: u32,        // the factor's slot in flags / maxima / denominators
    batch: u32,        // means: samples
    bias: u32,         // means: append a 1
    _pad0: u32,
    _pad1: u32,
}

const CLAMP: f32 = 100.0;
const LIMIT: f32 = 2.0;

@group(0) @binding(0) var<uniform> fac: Factor;

// refresh_begin: 1 flags (1: stabilise this refresh), 2 max|J| bits of the last refresh.
@group(0) @binding(1) var<storage, read_write> flags: array<u32>;
@group(0) @binding(2) var<storage, read_write> maxima: array<atomic<u32>>;

@compute @workgroup_size(1)
fn refresh_begin() {
    // |J| ≥ 0, so its bits order like the values (NaN's bits exceed every finite's: a NaN
    // factor is stabilised, and stays NaN).
    flags[fac.index] = select(0u, 1u, atomicLoad(&maxima[fac.index]) > bitcast<u32>(LIMIT));
    atomicStore(&maxima[fac.index], 0u);
}

// means: 1 x (batch × (n − bias)), 2 the packed statistics.
@group(0) @binding(1) var<storage, read> samples: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(WG)
fn means(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let width = fac.n - fac.bias;
    for (var c = linear_index(wid, nwg, lid); c < fac.n; c += grid_stride(nwg)) {
        var acc = 0.0;
        if (c < width) {
            for (var b = 0u; b < fac.batch; b++) {
                acc += clamp(samples[b * width + c], -CLAMP, CLAMP);
            }
            acc /= f32(fac.batch);
        } else {
            acc = 1.0;
        }
        stats[fac.vec_offset + c] = acc;
    }
}

// refresh_products: 1 the packed J, 2 v, 3 flags, 4 J_b·v, 5 vᵀ·J_b (one invocation per index).
@group(0) @binding(1) var<storage, read> j_in: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> flag_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> jv: array<f32>;
@group(0) @binding(5) var<storage, read_write> vj: array<f32>;

fn blend() -> vec2<f32> {
    return select(vec2<f32>(0.95, 0.05), vec2<f32>(0.855, 0.145), flag_in[fac.index] != 0u);
}

@compute @workgroup_size(WG)
fn refresh_products(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let st = blend();
    let n = fac.n;
    for (var i = linear_index(wid, nwg, lid); i < n; i += grid_stride(nwg)) {
        var row = 0.0;
        var col = 0.0;
        for (var k = 0u; k < n; k++) {
            let vk = v[fac.vec_offset + k];
            row += j_in[fac.offset + i * n + k] * vk;
            col += vk * j_in[fac.offset + k * n + i];
        }
        let vi = v[fac.vec_offset + i];
        jv[fac.vec_offset + i] = st.x * row + st.y * vi;
        vj[fac.vec_offset + i] = st.x * col + st.y * vi;
    }
}

// refresh_denominator (one workgroup): 1 v, 2 J_b·v, 3 the denominators 1 + vᵀ·J_b·v.
@group(0) @binding(1) var<storage, read> v_d: array<f32>;
@group(0) @binding(2) var<storage, read> jv_d: array<f32>;
@group(0) @binding(3) var<storage, read_write> denominators: array<f32>;

@compute @workgroup_size(WG)
fn refresh_denominator(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < fac.n; i += WG) {
        acc += v_d[fac.vec_offset + i] * jv_d[fac.vec_offset + i];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        denominators[fac.index] = 1.0 + total;
    }
}

// refresh_update: 1 the packed J, 2 J_b·v, 3 vᵀ·J_b, 4 flags, 5 denominators, 6 max|J| bits.
@group(0) @binding(1) var<storage, read_write> j_out: array<f32>;
@group(0) @binding(2) var<storage, read> jv_u: array<f32>;
@group(0) @binding(3) var<storage, read> vj_u: array<f32>;
@group(0) @binding(4) var<storage, read> flag_u: array<u32>;
@group(0) @binding(5) var<storage, read> denominator_u: array<f32>;
@group(0) @binding(6) var<storage, read_write> maxima_u: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn refresh_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let st = select(vec2<f32>(0.95, 0.05), vec2<f32>(0.855, 0.145), flag_u[fac.index] != 0u);
    let n = fac.n;
    let inv_denominator = 1.0 / denominator_u[fac.index];
    var largest = 0u;
    for (var e = linear_index(wid, nwg, lid); e < n * n; e += grid_stride(nwg)) {
        let r = e / n;
        let c = e - r * n;
        let blended = st.x * j_out[fac.offset + e] + select(0.0, st.y, r == c);
        let updated = blended - jv_u[fac.vec_offset + r] * vj_u[fac.vec_offset + c] * inv_denominator;
        j_out[fac.offset + e] = updated;
        largest = max(largest, bitcast<u32>(abs(updated)));
    }
    atomicMax(&maxima_u[fac.index], largest);
}

// step_norms (one workgroup): 1 ∇W, 2 v = J_G·∇W·J_A, 3 the ratios. (‖g_W‖ + ‖g_b‖) /
// (‖v_W‖ + ‖v_b‖) with the bias column's norms taken apart (MKOR's `_update_grad`).
struct Step {
    rows: u32,
    cols: u32,
    bias: u32,
    index: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> direction: array<f32>;
@group(0) @binding(3) var<storage, read_write> ratios: array<f32>;

@compute @workgroup_size(WG)
fn step_norms(@builtin(local_invocation_index) lid: u32) {
    var gw = 0.0;
    var gb = 0.0;
    var vw = 0.0;
    var vb = 0.0;
    for (var e = lid; e < step.rows * step.cols; e += WG) {
        let g = grad[e];
        let d = direction[e];
        if (step.bias != 0u && e % step.cols == step.cols - 1u) {
            gb += g * g;
            vb += d * d;
        } else {
            gw += g * g;
            vw += d * d;
        }
    }
    let sgw = workgroup_sum(lid, gw);
    let sgb = workgroup_sum(lid, gb);
    let svw = workgroup_sum(lid, vw);
    let svb = workgroup_sum(lid, vb);
    if (lid == 0u) {
        ratios[step.index] = (sqrt(sgw) + sqrt(sgb)) / (sqrt(svw) + sqrt(svb));
    }
}

// step_scale: 1 ∇W, 2 v (rescaled in place; ∇W itself where the ratio is NaN, as MKOR skips
// such a layer), 3 the ratios.
@group(0) @binding(3) var<storage, read> ratio_s: array<f32>;

@compute @workgroup_size(WG)
fn step_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let ratio = ratio_s[step.index];
    let bits = bitcast<u32>(ratio);
    let skip = nonfinite_bits(bits) && (bits & 0x007fffffu) != 0u;
    for (var e = linear_index(wid, nwg, lid); e < step.rows * step.cols; e += grid_stride(nwg)) {
        direction[e] = select(direction[e] * ratio, grad[e], skip);
    }
}
