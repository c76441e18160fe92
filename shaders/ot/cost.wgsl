// The ground cost of the optimal-transport kernels: C[i][j] from a dense row-major n×m matrix
// (COST = 0) or computed on the fly from point clouds X (n×dim) and Y (m×dim), never stored:
// squared Euclidean (COST = 1) or the p-norm distance ‖xᵢ − yⱼ‖_p (COST = 2), times `scale`.
// Bindings 0 (the Ot uniform), 1 C, 2 X, 3 Y (the form COST turns off is still bound by the
// entry points: Rust binds curvgpu's placeholder buffer there, never a second caller's view).

override COST: u32 = 0u;

// Largest-magnitude finite f32 below zero: the empty log-sum-exp's maximum (WGSL has no -inf).
const NEG: f32 = -3.0e38;

struct Ot {
    n: u32,
    m: u32,
    dim: u32,
    slices: u32,       // column passes: row slices, each folded into its own partial
    reg: f32,
    inv_reg: f32,
    p: f32,
    scale: f32,
    k: u32,            // top_k: entries kept per row
    max_iter: u32,     // Sinkhorn: iteration budget
    every: u32,        // Sinkhorn: POT's check interval
    tol: f32,          // Sinkhorn: the stopping threshold on ‖Pᵀ1 − b‖₂
    err_at: u32,       // Sinkhorn: where the column errors start in the state words
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> ot: Ot;
@group(0) @binding(1) var<storage, read> cost_c: array<f32>;
@group(0) @binding(2) var<storage, read> cost_x: array<f32>;
@group(0) @binding(3) var<storage, read> cost_y: array<f32>;
// A dense C whose rows are whole vec4s (m a multiple of 4), for the passes that read it as
// vec4: CPU adapters load scalars from storage at well under half vec4's rate (lavapipe:
// copy_f32 4.4 GB/s, copy_vec4 9.4).
@group(0) @binding(1) var<storage, read> cost_c4: array<vec4<f32>>;

fn cost(i: u32, j: u32) -> f32 {
    if (COST == 0u) {
        return cost_c[i * ot.m + j];
    }
    var s = 0.0;
    for (var k = 0u; k < ot.dim; k++) {
        let t = cost_x[i * ot.dim + k] - cost_y[j * ot.dim + k];
        if (COST == 1u) {
            s += t * t;
        } else if (ot.p == 1.0) {
            s += abs(t);
        } else if (t != 0.0) {
            // pow(0, p) goes through log2(0): skipped rather than trusted.
            s += pow(abs(t), ot.p);
        }
    }
    if (COST == 2u && ot.p != 1.0 && s > 0.0) {
        s = pow(s, 1.0 / ot.p);
    }
    return ot.scale * s;
}

// A running log-sum-exp (max, Σ exp(z − max)) extended by four terms (NEG for none), with one
// rescale per four rather than one per term.
fn lse_add4(acc: vec2<f32>, z: vec4<f32>) -> vec2<f32> {
    let top = max(acc.x, max(max(z.x, z.y), max(z.z, z.w)));
    let e = select(exp(z - vec4<f32>(top)), vec4<f32>(0.0), z == vec4<f32>(NEG));
    let kept = select(acc.y * exp(acc.x - top), 0.0, acc.x == NEG);
    return select(vec2<f32>(top, kept + (e.x + e.y) + (e.z + e.w)), acc, top == NEG);
}

// log Σ exp over a whole workgroup's running sums (call from uniform control flow).
fn workgroup_lse(lid: u32, acc: vec2<f32>) -> f32 {
    let top = workgroup_max(lid, acc.x);
    let s = select(acc.y * exp(acc.x - top), 0.0, acc.x == NEG);
    return top + log(workgroup_sum(lid, s));
}
