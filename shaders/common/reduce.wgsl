// Reductions whose result stays on the GPU: `reduce_partial` leaves one value per workgroup,
// `reduce_finalize` (one workgroup) folds those and the n % 4 tail scalars into out[out_index].
// OP (override): 0 sum x, 1 Σx², 2 Σxy, 3 max |x|. Only Σxy reads y: the others may bind
// anything there.

override OP: u32 = 0u;

struct Reduce {
    n: u32,
    out_index: u32,
    partials: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> r: Reduce;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> y4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> y1: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn identity() -> f32 {
    return select(0.0, -1.0, OP == 3u);   // |x| ≥ 0 > -1
}

fn combine(a: f32, b: f32) -> f32 {
    if (OP == 3u) {
        return max(a, b);
    }
    return a + b;
}

fn element4(x: vec4<f32>) -> f32 {
    switch OP {
        case 0u: { return (x.x + x.y) + (x.z + x.w); }
        case 1u: { return dot(x, x); }
        default: { let a = abs(x); return max(max(a.x, a.y), max(a.z, a.w)); }
    }
}

fn workgroup_combine(lid: u32, value: f32) -> f32 {
    if (OP == 3u) {
        return workgroup_max(lid, value);
    }
    return workgroup_sum(lid, value);
}

@compute @workgroup_size(WG)
fn reduce_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    var acc = identity();
    for (var i = linear_index(wid, nwg, lid); i < r.n / 4u; i += grid_stride(nwg)) {
        if (OP == 2u) {
            acc += dot(x4[i], y4[i]);
        } else {
            acc = combine(acc, element4(x4[i]));
        }
    }
    let total = workgroup_combine(lid, acc);
    let group = wid.y * nwg.x + wid.x;
    if (lid == 0u && group < r.partials) {
        partial[group] = total;
    }
}

@compute @workgroup_size(WG)
fn reduce_finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = identity();
    for (var i = lid; i < r.partials; i += WG) {
        acc = combine(acc, partial[i]);
    }
    let t = (r.n / 4u) * 4u + lid;
    if (lid < 4u && t < r.n) {
        if (OP == 2u) {
            acc += x1[t] * y1[t];
        } else {
            acc = combine(acc, element4(vec4<f32>(x1[t], 0.0, 0.0, 0.0)));
        }
    }
    let total = workgroup_combine(lid, acc);
    if (lid == 0u) {
        out[r.out_index] = total;
    }
}
