// Index of the first NaN or ±inf, found from the bits (see float.wgsl).

struct Len {
    n: u32,
    slot: u32,          // where in `first` this piece reports (and slot + 1 if NEGATIVE)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> len: Len;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> first: array<atomic<u32>>;

// NEGATIVE: also report the first value below zero (−0 is not) in slot + 1.
override NEGATIVE: bool = false;

@compute @workgroup_size(WG)
fn first_nonfinite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < len.n; i += grid_stride(nwg)) {
        let bits = x[i];
        if (nonfinite_bits(bits)) {
            atomicMin(&first[len.slot], i);
        } else if (NEGATIVE && bits > 0x80000000u) {
            atomicMin(&first[len.slot + 1u], i);
        }
    }
}
