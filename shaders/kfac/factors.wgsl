// K-FAC factor helpers: the activations with a ones column appended (bias layers), each
// factor's mean diagonal (tr F / dim), and the damped copy that is then inverted.

struct Factor {
    n: u32,            // side (with_ones: input width)
    offset: u32,       // first element of the factor (with_ones: rows of the batch)
    slot: u32,         // trace_mean: where tr/dim goes; damp: this factor's mean diagonal
    other: u32,        // damp: the partner factor's mean diagonal
    pi: u32,           // damp: 1 = kfac-jax's π-corrected scale, 0 = none (Tikhonov)
    mu: f32,           // damp: the diagonal added (√λ or γ)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> f: Factor;

// with_ones: 1 x (rows × n), 2 [x | 1] (rows × (n + 1)).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> x1: array<f32>;

@compute @workgroup_size(WG)
fn with_ones(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let cols = f.n + 1u;
    for (var e = linear_index(wid, nwg, lid); e < f.offset * cols; e += grid_stride(nwg)) {
        let row = e / cols;
        let col = e - row * cols;
        x1[e] = select(1.0, x[row * f.n + min(col, f.n - 1u)], col < f.n);
    }
}

// trace_mean (one workgroup): 1 the packed factors, 2 the scalars.
@group(0) @binding(1) var<storage, read> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> scalars: array<f32>;

@compute @workgroup_size(WG)
fn trace_mean(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < f.n; i += WG) {
        acc += factors[f.offset + i * (f.n + 1u)];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        scalars[f.slot] = total / f32(f.n);
    }
}

// damp: 1 the packed factors, 2 the scalars, 3 the damped copy (same layout):
// F′ = s·F + μ·I with s = √(c_other / c_self) under π-correction (kfac-jax: c/c_self with
// c = √(c_self·c_other)), s = 0 when either mean diagonal is ≤ 0 (a zero factor: F′ = μ·I, as
// kfac-jax), and s = 1 without it.
@group(0) @binding(1) var<storage, read> source: array<f32>;
@group(0) @binding(2) var<storage, read> means: array<f32>;
@group(0) @binding(3) var<storage, read_write> damped: array<f32>;

@compute @workgroup_size(WG)
fn damp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    var s = 1.0;
    if (f.pi != 0u) {
        let mine = means[f.slot];
        let theirs = means[f.other];
        // Written so that NaN statistics stay NaN (and fail the factorisation).
        s = select(sqrt(theirs / mine), 0.0, mine <= 0.0 || theirs <= 0.0);
    }
    for (var e = linear_index(wid, nwg, lid); e < f.n * f.n; e += grid_stride(nwg)) {
        let diagonal = e % (f.n + 1u) == 0u;
        damped[f.offset + e] = s * source[f.offset + e] + select(0.0, f.mu, diagonal);
    }
}

// kl_clip (one invocation): 1 the per-layer ⟨v, g⟩ (slots 0 .. n), 2 ν into slot n:
// ν = min(1, √(bound / |lr²·Σ⟨v, g⟩|)), 1 for a zero sum (kfac-pytorch). `mu` carries lr²,
// `other` the bound's bits.
@group(0) @binding(1) var<storage, read_write> clip: array<f32>;

@compute @workgroup_size(1)
fn kl_clip() {
    var sum = 0.0;
    for (var i = 0u; i < f.n; i++) {
        sum += clip[i];
    }
    let vg = abs(f.mu * sum);
    clip[f.n] = select(min(1.0, sqrt(bitcast<f32>(f.other) / vg)), 1.0, vg == 0.0);
}

// scale: 1 ν (slot `slot`), 2 the vector scaled in place (n elements).
@group(0) @binding(1) var<storage, read> factor_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> scaled: array<f32>;

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let nu = factor_in[f.slot];
    for (var e = linear_index(wid, nwg, lid); e < f.n; e += grid_stride(nwg)) {
        scaled[e] *= nu;
    }
}

// eigen_divide: 1 d_G (all layers' G eigenvalues), 2 d_A, 3 M (out × cols, in place):
// M[i][j] /= (sg·d_G[i] + μ)(sa·d_A[j] + μ) + γ — KAISA's d_G·d_Aᵀ + γ (sg = sa = 1, μ = 0),
// or the π-damped factors' exact eigenvalues (γ = 0). Eigenvalues are clamped at 0 first.
struct Divide {
    rows: u32,
    cols: u32,
    g_offset: u32,
    a_offset: u32,
    sg: f32,
    sa: f32,
    mu: f32,
    gamma: f32,
}

@group(0) @binding(0) var<uniform> dv: Divide;
@group(0) @binding(1) var<storage, read> d_g: array<f32>;
@group(0) @binding(2) var<storage, read> d_a: array<f32>;
@group(0) @binding(3) var<storage, read_write> rotated: array<f32>;

@compute @workgroup_size(WG)
fn eigen_divide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var e = linear_index(wid, nwg, lid); e < dv.rows * dv.cols; e += grid_stride(nwg)) {
        let i = e / dv.cols;
        let j = e - i * dv.cols;
        let g = dv.sg * max(d_g[dv.g_offset + i], 0.0) + dv.mu;
        let a = dv.sa * max(d_a[dv.a_offset + j], 0.0) + dv.mu;
        rotated[e] /= g * a + dv.gamma;
    }
}
