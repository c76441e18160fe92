// Vector helpers every family records: copies between element offsets, fills, y += α·x.

struct CopyRange {
    n: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad: u32,
}

struct Axpy {
    n: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> cr: CopyRange;
@group(0) @binding(0) var<uniform> axpy: Axpy;
@group(0) @binding(1) var<storage, read> copy_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> copy_dst: array<f32>;
@group(0) @binding(1) var<storage, read> axpy_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> axpy_y: array<f32>;
@group(0) @binding(1) var<storage, read_write> fill_y: array<f32>;

// dst[dst_offset + i] = src[src_offset + i] for i < n: element offsets, so ranges need not
// start at a binding-aligned byte offset (block-diagonal operators, CG's b and x0).
@compute @workgroup_size(WG)
fn copy_range(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < cr.n; i += grid_stride(nwg)) {
        copy_dst[cr.dst_offset + i] = copy_src[cr.src_offset + i];
    }
}

// y += α·x (e.g. the shift of A + σI).
@compute @workgroup_size(WG)
fn axpy_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < axpy.n; i += grid_stride(nwg)) {
        axpy_y[i] += axpy.alpha * axpy_x[i];
    }
}

// y[i] = α (a constant diagonal, e.g. a stencil's).
@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < axpy.n; i += grid_stride(nwg)) {
        fill_y[i] = axpy.alpha;
    }
}
