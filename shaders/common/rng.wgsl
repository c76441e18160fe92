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

// One invocation per Philox block: block j of this fill is the stream's block first + j, where
// first = offset / 4, and its lane k is element 4j + k − (offset % 4) of the output, when that
// lies in [0, n). Each block's words are computed once for its (up to) four elements.

fn rng_blocks() -> u32 {
    return ((rng.offset_lo & 3u) + rng.n + 3u) / 4u;
}

fn rng_words(j: u32) -> vec4<u32> {
    let first_lo = (rng.offset_lo >> 2u) | (rng.offset_hi << 30u);
    let lo = first_lo + j;
    let hi = (rng.offset_hi >> 2u) + select(0u, 1u, lo < j);
    return philox4x32_10(vec4<u32>(lo, hi, 0u, 0u), vec2<u32>(rng.seed_lo, rng.seed_hi));
}

// Output index of lane k of block j, or n when the lane falls outside [0, n).
fn rng_index(j: u32, k: u32) -> u32 {
    let e = 4u * j + k;
    let skip = rng.offset_lo & 3u;
    return select(rng.n, e - skip, e >= skip && e - skip < rng.n);
}

@compute @workgroup_size(WG)
fn philox_u32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var j = linear_index(wid, nwg, lid); j < rng_blocks(); j += grid_stride(nwg)) {
        let w = rng_words(j);
        for (var k = 0u; k < 4u; k++) {
            let i = rng_index(j, k);
            if (i < rng.n) {
                out_u32[i] = w[k];
            }
        }
    }
}

// ±1 from the word's top bit.
@compute @workgroup_size(WG)
fn rademacher(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var j = linear_index(wid, nwg, lid); j < rng_blocks(); j += grid_stride(nwg)) {
        let w = rng_words(j);
        for (var k = 0u; k < 4u; k++) {
            let i = rng_index(j, k);
            if (i < rng.n) {
                out_f32[i] = select(1.0, -1.0, (w[k] & 0x80000000u) != 0u);
            }
        }
    }
}

// Box–Muller on word pairs (0,1) and (2,3): u1 = ((w >> 8) | 1)·2⁻²⁴ ∈ (0,1) is exact in f32,
// u2 = (w >> 8)·2⁻²⁴; the even lane takes r·cos(a), the odd lane r·sin(a), a = 2π(u2 − ½):
// WGSL bounds the error of sin and cos only on [−π, π], and u2 − ½ is exact.
@compute @workgroup_size(WG)
fn gaussian(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    for (var j = linear_index(wid, nwg, lid); j < rng_blocks(); j += grid_stride(nwg)) {
        let w = rng_words(j);
        for (var pair = 0u; pair < 4u; pair += 2u) {
            let u1 = f32((w[pair] >> 8u) | 1u) * 5.9604645e-8;
            let u2 = f32(w[pair + 1u] >> 8u) * 5.9604645e-8;
            let r = sqrt(-2.0 * log(u1));
            let angle = 6.2831855 * (u2 - 0.5);
            let even = rng_index(j, pair);
            let odd = rng_index(j, pair + 1u);
            if (even < rng.n) {
                out_f32[even] = r * cos(angle);
            }
            if (odd < rng.n) {
                out_f32[odd] = r * sin(angle);
            }
        }
    }
}
