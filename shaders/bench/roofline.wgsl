// The adapter's own roofline: plain copies (scalar and vec4, run at several grid shapes by the
// host) and an FMA-bound kernel. Kernels are judged against the best of these in the same run.

struct Len {
    n: u32,
    iters: u32,
}

@group(0) @binding(0) var<uniform> len: Len;
@group(0) @binding(1) var<storage, read> src1: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst1: array<f32>;

@compute @workgroup_size(WG)
fn copy_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < len.n; i += grid_stride(nwg)) {
        dst1[i] = src1[i];
    }
}

@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> fma_out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < len.n; i += grid_stride(nwg)) {
        dst4[i] = src4[i];
    }
}

// Eight independent FMA chains per invocation keep the ALUs busy without touching memory:
// 2 flops × 8 chains × 4 lanes × iters per invocation.
@compute @workgroup_size(WG)
fn fma_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if (i >= len.n) {
        return;
    }
    let seed = f32(i & 1023u) * 1e-4;
    var a0 = vec4<f32>(seed, seed + 0.1, seed + 0.2, seed + 0.3);
    var a1 = a0 + 0.01; var a2 = a0 + 0.02; var a3 = a0 + 0.03;
    var a4 = a0 + 0.04; var a5 = a0 + 0.05; var a6 = a0 + 0.06; var a7 = a0 + 0.07;
    let mul = vec4<f32>(0.9999);
    let add = vec4<f32>(1e-4);
    for (var k = 0u; k < len.iters; k++) {
        a0 = fma(a0, mul, add); a1 = fma(a1, mul, add);
        a2 = fma(a2, mul, add); a3 = fma(a3, mul, add);
        a4 = fma(a4, mul, add); a5 = fma(a5, mul, add);
        a6 = fma(a6, mul, add); a7 = fma(a7, mul, add);
    }
    let s = (a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7);
    // Written so the compiler cannot drop the chains; fma_out holds one vec4 per invocation.
    fma_out[i] = s;
}

// Nothing: what a dispatch costs the adapter by itself.
@compute @workgroup_size(1)
fn empty() {
}
