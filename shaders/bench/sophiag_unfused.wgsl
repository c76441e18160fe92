// The SophiaG update as an unfused framework runs it: one single-operation kernel per line,
// each a full pass over memory (56 bytes per parameter against the fused step's 24).
// Benchmark baseline only: it walks vec4s and needs n % 4 == 0.

struct Scalars {
    n4: u32,
    a: f32,
    b: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> s: Scalars;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src_a: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> src_b: array<vec4<f32>>;

// dst ← a·dst                              (θ ← θ·(1 − lr·wd))         8 B
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < s.n4; i += grid_stride(nwg)) {
        dst[i] = s.a * dst[i];
    }
}

// dst ← a·dst + b·src_a                    (m ← β1·m + (1 − β1)·g)      12 B
@compute @workgroup_size(WG)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < s.n4; i += grid_stride(nwg)) {
        dst[i] = s.a * dst[i] + s.b * src_a[i];
    }
}

// dst ← |src_a| / (a·src_b + b)            (r ← |m| / (ρ·bs·h + ε))     12 B
@compute @workgroup_size(WG)
fn abs_div_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < s.n4; i += grid_stride(nwg)) {
        dst[i] = abs(src_a[i]) / (s.a * src_b[i] + s.b);
    }
}

// dst ← min(dst, a)                        (r ← min(r, 1))              8 B
@compute @workgroup_size(WG)
fn clamp_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < s.n4; i += grid_stride(nwg)) {
        dst[i] = min(dst[i], vec4<f32>(s.a));
    }
}

// dst ← dst − a·sign(src_a)·src_b          (θ ← θ − lr·sign(m)·r)       16 B
@compute @workgroup_size(WG)
fn sub_sign_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < s.n4; i += grid_stride(nwg)) {
        dst[i] = dst[i] - s.a * sign(src_a[i]) * src_b[i];
    }
}
