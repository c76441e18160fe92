// Tree reductions across one workgroup (WG ≤ 256, a power of two). Call from uniform control
// flow: every invocation must reach the barriers.

var<workgroup> wg_scratch: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    wg_scratch[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wg_scratch[lid] += wg_scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = wg_scratch[0];
    workgroupBarrier();
    return total;
}

fn workgroup_max(lid: u32, value: f32) -> f32 {
    wg_scratch[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wg_scratch[lid] = max(wg_scratch[lid], wg_scratch[lid + s]);
        }
        workgroupBarrier();
    }
    let total = wg_scratch[0];
    workgroupBarrier();
    return total;
}
