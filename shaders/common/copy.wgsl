// dst[dst_offset + i] = src[src_offset + i] for i < n: element offsets, so ranges need not
// start at a binding-aligned byte offset (block-diagonal operators, CG's b and x0).

struct CopyRange {
    n: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> cr: CopyRange;
@group(0) @binding(1) var<storage, read> copy_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> copy_dst: array<f32>;

@compute @workgroup_size(WG)
fn copy_range(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < cr.n; i += grid_stride(nwg)) {
        copy_dst[cr.dst_offset + i] = copy_src[cr.src_offset + i];
    }
}
