// A one-hidden-layer tanh MLP with softmax cross-entropy, full batch, in two deterministic passes:
// a per-sample pass (one invocation per sample) writes that sample's loss, gradient or
// Hessian-vector product into column-major scratch, scratch[col·n + i], and a per-column pass
// (one workgroup per parameter) sums each column in a fixed order: no float atomics, so every
// run on every backend adds the same numbers in the same order.
//
// θ packs W1 (hidden × inputs, row-major), b1 (hidden), W2 (classes × hidden, row-major), b2
// (classes). The host checks hidden ≤ MAX_HIDDEN and classes ≤ MAX_CLASSES, which size the
// per-invocation arrays.

const MAX_HIDDEN: u32 = 64u;
const MAX_CLASSES: u32 = 8u;

struct Toy {
    n: u32,
    inputs: u32,
    hidden: u32,
    classes: u32,
    seed_lo: u32,
    seed_hi: u32,
    // 1: replace every label by one drawn from the model's own softmax.
    sampled: u32,
    _pad: u32,
}

struct Columns {
    n: u32,
    first_col: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> toy: Toy;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> theta: array<f32>;
@group(0) @binding(4) var<storage, read> dir: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;

@group(0) @binding(0) var<uniform> cols: Columns;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<private> h: array<f32, MAX_HIDDEN>;
var<private> rh: array<f32, MAX_HIDDEN>;
var<private> p: array<f32, MAX_CLASSES>;
var<private> rz: array<f32, MAX_CLASSES>;

fn off_b1() -> u32 {
    return toy.hidden * toy.inputs;
}
fn off_w2() -> u32 {
    return off_b1() + toy.hidden;
}
fn off_b2() -> u32 {
    return off_w2() + toy.classes * toy.hidden;
}
fn param_count() -> u32 {
    return off_b2() + toy.classes;
}

// tanh as (1 − e^{−2|a|}) / (1 + e^{−2|a|}) with a's sign: finite for every a (a backend's
// sinh/cosh form overflows to inf/inf past |a| ≈ 44) and accurate to a few ulps absolute.
fn stable_tanh(a: f32) -> f32 {
    let e = exp(-2.0 * abs(a));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, a < 0.0);
}

// h ← tanh(W1·x_i + b1) and p ← softmax(W2·h + b2); returns the logits' logsumexp.
// The logits pass through p on their way to the softmax.
fn forward(i: u32) -> f32 {
    let d = toy.inputs;
    for (var j = 0u; j < toy.hidden; j++) {
        var a = theta[off_b1() + j];
        for (var k = 0u; k < d; k++) {
            a += theta[j * d + k] * x[i * d + k];
        }
        h[j] = stable_tanh(a);
    }
    // Below every finite logit; f32's own limit, −3.4028235e38, is out of range as a WGSL
    // literal for Tint (the decimal rounds above it).
    var zmax = -3.4028234e38;
    for (var c = 0u; c < toy.classes; c++) {
        var z = theta[off_b2() + c];
        for (var j = 0u; j < toy.hidden; j++) {
            z += theta[off_w2() + c * toy.hidden + j] * h[j];
        }
        p[c] = z;
        zmax = max(zmax, z);
    }
    var s = 0.0;
    for (var c = 0u; c < toy.classes; c++) {
        p[c] = exp(p[c] - zmax);
        s += p[c];
    }
    for (var c = 0u; c < toy.classes; c++) {
        p[c] = p[c] / s;
    }
    return zmax + log(s);
}

// Sample i's label: its own, or (sampled mode) the first class whose cumulative probability
// exceeds u = (w >> 8)·2⁻²⁴, w element i of the Philox stream (block i / 4, word i % 4, as
// common/rng.wgsl and reference::philox lay it out); the last class if rounding leaves every
// cumulative sum ≤ u. reference::toy::sampled_label follows the same rule.
fn label_of(i: u32) -> u32 {
    if (toy.sampled == 0u) {
        return labels[i];
    }
    let w = philox4x32_10(vec4<u32>(i >> 2u, 0u, 0u, 0u), vec2<u32>(toy.seed_lo, toy.seed_hi));
    let u = f32(w[i & 3u] >> 8u) * 5.9604645e-8;
    var cum = 0.0;
    for (var c = 0u; c + 1u < toy.classes; c++) {
        cum += p[c];
        if (cum > u) {
            return c;
        }
    }
    return toy.classes - 1u;
}

fn put(col: u32, i: u32, value: f32) {
    scratch[col * toy.n + i] = value;
}

// Per-sample loss (column P) and gradient (columns 0..P) by reverse mode: dz = p − e_y,
// dW2 = dz·hᵀ, db2 = dz, dh = W2ᵀ·dz, da = dh ⊙ (1 − h²), dW1 = da·xᵀ, db1 = da.
@compute @workgroup_size(WG)
fn toy_sample_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let d = toy.inputs;
    let hn = toy.hidden;
    for (var i = linear_index(wid, nwg, lid); i < toy.n; i += grid_stride(nwg)) {
        let lse = forward(i);
        let y = label_of(i);
        // p[y] went through the softmax's rounding; the logsumexp form of the loss does not.
        var zy = theta[off_b2() + y];
        for (var j = 0u; j < hn; j++) {
            zy += theta[off_w2() + y * hn + j] * h[j];
        }
        put(param_count(), i, lse - zy);
        for (var c = 0u; c < toy.classes; c++) {
            let dz = p[c] - select(0.0, 1.0, c == y);
            for (var j = 0u; j < hn; j++) {
                put(off_w2() + c * hn + j, i, dz * h[j]);
            }
            put(off_b2() + c, i, dz);
        }
        for (var j = 0u; j < hn; j++) {
            var dh = 0.0;
            for (var c = 0u; c < toy.classes; c++) {
                dh += theta[off_w2() + c * hn + j] * (p[c] - select(0.0, 1.0, c == y));
            }
            let da = dh * (1.0 - h[j] * h[j]);
            for (var k = 0u; k < d; k++) {
                put(j * d + k, i, da * x[i * d + k]);
            }
            put(off_b1() + j, i, da);
        }
    }
}

// Per-sample Hessian-vector product by Pearlmutter's R-operator (forward-over-reverse), with
// v = (V1, c1, V2, c2) in `dir`: R(a) = V1·x + c1, R(h) = (1 − h²) ⊙ R(a),
// R(z) = V2·h + W2·R(h) + c2, R(dz) = R(p) = p ⊙ (R(z) − pᵀR(z)), then
// R(dW2) = R(dz)·hᵀ + dz·R(h)ᵀ, R(db2) = R(dz), R(dh) = V2ᵀ·dz + W2ᵀ·R(dz),
// R(da) = R(dh) ⊙ (1 − h²) − 2·dh ⊙ h ⊙ R(h), R(dW1) = R(da)·xᵀ, R(db1) = R(da).
@compute @workgroup_size(WG)
fn toy_sample_hvp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let d = toy.inputs;
    let hn = toy.hidden;
    for (var i = linear_index(wid, nwg, lid); i < toy.n; i += grid_stride(nwg)) {
        _ = forward(i);
        let y = labels[i];
        for (var j = 0u; j < hn; j++) {
            var ra = dir[off_b1() + j];
            for (var k = 0u; k < d; k++) {
                ra += dir[j * d + k] * x[i * d + k];
            }
            rh[j] = (1.0 - h[j] * h[j]) * ra;
        }
        var prz = 0.0;
        for (var c = 0u; c < toy.classes; c++) {
            var r = dir[off_b2() + c];
            for (var j = 0u; j < hn; j++) {
                let w = off_w2() + c * hn + j;
                r += dir[w] * h[j] + theta[w] * rh[j];
            }
            rz[c] = r;
            prz += p[c] * r;
        }
        // rz becomes R(dz) once every R(z) has entered pᵀR(z).
        for (var c = 0u; c < toy.classes; c++) {
            rz[c] = p[c] * (rz[c] - prz);
        }
        for (var c = 0u; c < toy.classes; c++) {
            let dz = p[c] - select(0.0, 1.0, c == y);
            for (var j = 0u; j < hn; j++) {
                put(off_w2() + c * hn + j, i, rz[c] * h[j] + dz * rh[j]);
            }
            put(off_b2() + c, i, rz[c]);
        }
        for (var j = 0u; j < hn; j++) {
            var dh = 0.0;
            var rdh = 0.0;
            for (var c = 0u; c < toy.classes; c++) {
                let w = off_w2() + c * hn + j;
                let dz = p[c] - select(0.0, 1.0, c == y);
                dh += theta[w] * dz;
                rdh += dir[w] * dz + theta[w] * rz[c];
            }
            let rda = rdh * (1.0 - h[j] * h[j]) - 2.0 * dh * h[j] * rh[j];
            for (var k = 0u; k < d; k++) {
                put(j * d + k, i, rda * x[i * d + k]);
            }
            put(off_b1() + j, i, rda);
        }
    }
}

// 1 where the largest logit (the first, on ties) is the label, else 0, into column 0.
// The softmax is monotone, so its argmax is the logits'.
@compute @workgroup_size(WG)
fn toy_sample_correct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < toy.n; i += grid_stride(nwg)) {
        _ = forward(i);
        var best = 0u;
        for (var c = 1u; c < toy.classes; c++) {
            if (p[c] > p[best]) {
                best = c;
            }
        }
        put(0u, i, select(0.0, 1.0, best == labels[i]));
    }
}

// scale · Σ_i scratch[(first_col + g)·n + i] for workgroup g's column: invocation l adds rows
// l, l + WG, … in order, then the workgroup's fixed tree adds the WG partials (uniform control
// flow: every invocation calls it).
fn column_total(g: u32, lid: u32) -> f32 {
    let base = (cols.first_col + g) * cols.n;
    var s = 0.0;
    for (var i = lid; i < cols.n; i += WG) {
        s += scratch[base + i];
    }
    return workgroup_sum(lid, s) * cols.scale;
}

// out[g] = the column total, one workgroup g per column.
@compute @workgroup_size(WG)
fn toy_column_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let total = column_total(wid.x, lid);
    if (lid == 0u) {
        out[wid.x] = total;
    }
}

// out[g] = dir[g] · the column total: z ⊙ (H·z) from the HVP's columns, the Hutchinson term
// AdaHessian and SophiaH take, without a separate product pass.
@compute @workgroup_size(WG)
fn toy_column_sums_times_dir(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let total = column_total(wid.x, lid);
    if (lid == 0u) {
        out[wid.x] = dir[wid.x] * total;
    }
}
