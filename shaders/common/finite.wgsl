// Index of the first NaN or ±inf, found from the bits (see float.wgsl).

struct Len {
    n: u32,
    slot: u32,          // where in `first` this piece reports
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> len: Len;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> first: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn first_nonfinite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < len.n; i += grid_stride(nwg)) {
        if (nonfinite_bits(x[i])) {
            atomicMin(&first[len.slot], i);
        }
    }
}
