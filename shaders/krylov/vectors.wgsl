// Vector kernels for the spectrum tools, with their scalars read from a GPU buffer so a
// Lanczos or power step never waits for the host. Scalar arrays: vectors have exact lengths.

struct Vec1 {
    n: u32,
    index: u32,      // which scalar of `scal`
    sign: f32,       // ±1 for axpy
    eps: f32,        // normalisation guard: x / (‖x‖ + eps)
}

struct Basis {
    n: u32,
    m: u32,          // vectors in the basis
    stride: u32,     // elements between consecutive basis vectors
    _pad: u32,
}

struct Ranges {
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> v1: Vec1;
@group(0) @binding(0) var<uniform> basis: Basis;
@group(0) @binding(0) var<uniform> ranges: Ranges;

@group(0) @binding(1) var<storage, read> scal: array<f32>;
@group(0) @binding(2) var<storage, read> vx: array<f32>;
@group(0) @binding(3) var<storage, read_write> vy: array<f32>;

// y += sign·scal[index]·x
@compute @workgroup_size(WG)
fn scaled_axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let a = v1.sign * scal[v1.index];
    for (var i = linear_index(wid, nwg, lid); i < v1.n; i += grid_stride(nwg)) {
        vy[i] += a * vx[i];
    }
}

// y += sign·√scal[index]·x (scal holding a squared norm: Lanczos's β).
@compute @workgroup_size(WG)
fn scaled_axpy_sqrt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let a = v1.sign * sqrt(scal[v1.index]);
    for (var i = linear_index(wid, nwg, lid); i < v1.n; i += grid_stride(nwg)) {
        vy[i] += a * vx[i];
    }
}

// y = x / (√scal[index] + eps), scal[index] holding ‖x‖² (PyHessian's normalization).
@compute @workgroup_size(WG)
fn normalize_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let inv = 1.0 / (sqrt(scal[v1.index]) + v1.eps);
    for (var i = linear_index(wid, nwg, lid); i < v1.n; i += grid_stride(nwg)) {
        vy[i] = vx[i] * inv;
    }
}

// basis_subtract: 1 the basis V (m vectors, `stride` apart), 2 w, 3 coefficients c (computed
// by operators.wgsl's dense_matvec with a row stride).
@group(0) @binding(1) var<storage, read> basis_v: array<f32>;
@group(0) @binding(2) var<storage, read_write> basis_w_rw: array<f32>;
@group(0) @binding(3) var<storage, read> basis_c_ro: array<f32>;

// w −= Σ_j c[j]·V_j (classical Gram–Schmidt against the whole basis at once).
@compute @workgroup_size(WG)
fn basis_subtract(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < basis.n; i += grid_stride(nwg)) {
        var acc = 0.0;
        for (var j = 0u; j < basis.m; j++) {
            acc += basis_c_ro[j] * basis_v[j * basis.stride + i];
        }
        basis_w_rw[i] -= acc;
    }
}

// Per-range sums of a ⊙ b: one workgroup per range [starts[r], starts[r + 1]).
@group(0) @binding(1) var<storage, read> range_starts: array<u32>;
@group(0) @binding(2) var<storage, read> range_a: array<f32>;
@group(0) @binding(3) var<storage, read> range_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> range_out: array<f32>;

@compute @workgroup_size(WG)
fn range_dots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * nwg.x + wid.x;
    var acc = 0.0;
    if (r < ranges.count) {
        for (var i = range_starts[r] + lid; i < range_starts[r + 1u]; i += WG) {
            acc += range_a[i] * range_b[i];
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && r < ranges.count) {
        range_out[r] = total;
    }
}
