// Random vectors from (seed, offset): element i is word (offset + i) % 4 of the Philox block
// (offset + i) / 4, with counter (block_lo, block_hi, 0, 0) and key (seed_lo, seed_hi).
// The same contract is implemented in f64 by `curvgpu::reference::philox`.

struct Rng {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    offset_lo: u32,
    offset_hi: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rng: Rng;
@group(0) @binding(1) var<storage, read_write> out_u32: array<u32>;
@group(0) @binding(1) var<storage, read_write> out_f32: array<f32>;

// The block's four words and the lane element i takes (64-bit offset + i in two words).
fn rng_block(i: u32) -> vec4<u32> {
    let lo = rng.offset_lo + i;
    let hi = rng.offset_hi + select(0u, 1u, lo < i);
    let block = vec2<u32>((lo >> 2u) | (hi << 30u), hi >> 2u);
    return philox4x32_10(vec4<u32>(block.x, block.y, 0u, 0u), vec2<u32>(rng.seed_lo, rng.seed_hi));
}

fn rng_lane(i: u32) -> u32 {
    return (rng.offset_lo + i) & 3u;
}

@compute @workgroup_size(WG)
fn philox_u32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < rng.n; i += grid_stride(nwg)) {
        out_u32[i] = rng_block(i)[rng_lane(i)];
    }
}

// ±1 from the word's top bit.
@compute @workgroup_size(WG)
fn rademacher(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < rng.n; i += grid_stride(nwg)) {
        let w = rng_block(i)[rng_lane(i)];
        out_f32[i] = select(1.0, -1.0, (w & 0x80000000u) != 0u);
    }
}

// Box–Muller on word pairs (0,1) and (2,3): u1 = ((w >> 8) | 1)·2⁻²⁴ ∈ (0,1) is exact in f32,
// u2 = (w >> 8)·2⁻²⁴; the even lane takes r·cos(a), the odd lane r·sin(a), a = 2π(u2 − ½):
// WGSL bounds the error of sin and cos only on [−π, π], and u2 − ½ is exact.
@compute @workgroup_size(WG)
fn gaussian(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < rng.n; i += grid_stride(nwg)) {
        let words = rng_block(i);
        let lane = rng_lane(i);
        let pair = lane & 2u;
        let u1 = f32((words[pair] >> 8u) | 1u) * 5.9604645e-8;
        let u2 = f32(words[pair + 1u] >> 8u) * 5.9604645e-8;
        let r = sqrt(-2.0 * log(u1));
        let angle = 6.2831855 * (u2 - 0.5);
        out_f32[i] = select(r * cos(angle), r * sin(angle), (lane & 1u) == 1u);
    }
}
