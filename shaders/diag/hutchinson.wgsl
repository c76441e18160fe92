// Hutchinson diagonal estimator: diag(H) ≈ mean over probes of z ⊙ Hz, kept as a running mean
// est ← est + (z⊙Hz − est) / k, k the number of probes so far including this one.

struct Accumulate {
    n: u32,
    k: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Accumulate;
@group(0) @binding(1) var<storage, read_write> est4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> zhz4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> est1: array<f32>;
@group(0) @binding(2) var<storage, read> zhz1: array<f32>;

@compute @workgroup_size(WG)
fn hutchinson_accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < p.n / 4u; i += grid_stride(nwg)) {
        est4[i] = est4[i] + (zhz4[i] - est4[i]) / p.k;
    }
}

@compute @workgroup_size(4)
fn hutchinson_accumulate_tail(@builtin(local_invocation_index) lid: u32) {
    let i = (p.n / 4u) * 4u + lid;
    if (i < p.n) {
        est1[i] = est1[i] + (zhz1[i] - est1[i]) / p.k;
    }
}
