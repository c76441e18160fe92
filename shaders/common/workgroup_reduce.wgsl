// Tree reductions across one workgroup (WG ≤ 256, a power of two). Call from uniform control
// flow: every invocation must reach the barriers.

var<workgroup> wg_scratch: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    wg_scratch[lid] = value;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            wg_scratch[lid] += wg_scratch[lid + s];
        }
    }
    return workgroup_result();
}

fn workgroup_max(lid: u32, value: f32) -> f32 {
    wg_scratch[lid] = value;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            wg_scratch[lid] = max(wg_scratch[lid], wg_scratch[lid + s]);
        }
    }
    return workgroup_result();
}

// The tree's root, read after a barrier. workgroupUniformLoad tells the compiler the value is
// the same in every invocation: Tint's uniformity analysis rejects a barrier behind a branch on
// a plain workgroup read (OT's top_k stops its loop on a reduced value). The last barrier lets
// the next reduction overwrite the scratch.
fn workgroup_result() -> f32 {
    let total = workgroupUniformLoad(&wg_scratch[0]);
    workgroupBarrier();
    return total;
}
