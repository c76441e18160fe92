// Batched symmetric eigendecomposition by the parallel cyclic Jacobi method (round-robin
// ordering: every round rotates n/2 disjoint index pairs at once, n − 1 rounds a sweep). For
// each matrix (grid z over a batch of equally sized ones, n×n row-major at offset + z·n²) A is
// rotated in place towards diag(λ) and V accumulates the rotations (A₀ = V·diag(λ)·Vᵀ).
// Rotation of a pair (p, q) as Golub & Van Loan's sym.schur2: τ = (a_qq − a_pp)/(2a_pq),
// t = sign(τ)/(|τ| + √(1 + τ²)), c = 1/√(1 + t²), s = t·c; then A ← JᵀAJ with J_pp = J_qq = c,
// J_pq = s, J_qp = −s, which zeroes a_pq.

struct Round {
    n: u32,            // side
    m: u32,            // n rounded up to even (index n is a dummy partner when n is odd)
    round: u32,        // 0 .. m − 1
    offset: u32,       // first matrix's first element
    rot_offset: u32,   // first matrix's rotations (4 floats per pair, m/2 pairs per matrix)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rd: Round;

// The pair k of this round (circle method: index 0 stays, the others rotate).
fn pair(k: u32) -> vec2<u32> {
    let ring = rd.m - 1u;
    let a = select((k - 1u + rd.round) % ring + 1u, 0u, k == 0u);
    let b = (rd.m - 2u - k + rd.round) % ring + 1u;
    return vec2<u32>(min(a, b), max(a, b));
}

// angles: 1 A (read), 2 the rotations (p, q as bits, c, s) of every pair of every matrix.
@group(0) @binding(1) var<storage, read> a_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> rot: array<vec4<f32>>;

@compute @workgroup_size(64)
fn angles(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = id.x;
    let half = rd.m / 2u;
    if (k >= half) {
        return;
    }
    let pq = pair(k);
    let base = rd.offset + id.z * rd.n * rd.n;
    var c = 1.0;
    var s = 0.0;
    if (pq.y < rd.n) {
        let app = a_in[base + pq.x * rd.n + pq.x];
        let aqq = a_in[base + pq.y * rd.n + pq.y];
        let apq = a_in[base + pq.x * rd.n + pq.y];
        // Below the rounding of the diagonal, a rotation would only add noise.
        if (abs(apq) > 1e-30 && abs(apq) > 1e-9 * sqrt(abs(app * aqq))) {
            let tau = (aqq - app) / (2.0 * apq);
            let t = select(-1.0, 1.0, tau >= 0.0) / (abs(tau) + sqrt(1.0 + tau * tau));
            c = 1.0 / sqrt(1.0 + t * t);
            s = t * c;
        }
    }
    rot[rd.rot_offset + id.z * half + k] =
        vec4<f32>(bitcast<f32>(pq.x), bitcast<f32>(pq.y), c, s);
}

// rotate_rows: 1 the rotations, 2 A: rows p and q of every pair ← Jᵀ·A (one invocation per
// pair and column).
@group(0) @binding(1) var<storage, read> rot_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;

// The rotation (p, q, c, s) of pair k of matrix z, and (c·x − s·y, s·x + c·y).
fn rotation(z: u32, k: u32) -> vec4<f32> {
    return rot_in[rd.rot_offset + z * (rd.m / 2u) + k];
}

fn turn(r: vec4<f32>, x: f32, y: f32) -> vec2<f32> {
    return vec2<f32>(r.z * x - r.w * y, r.w * x + r.z * y);
}

@compute @workgroup_size(64)
fn rotate_rows(@builtin(global_invocation_id) id: vec3<u32>) {
    let j = id.x;
    if (id.y >= rd.m / 2u || j >= rd.n) {
        return;
    }
    let r = rotation(id.z, id.y);
    let p = bitcast<u32>(r.x);
    let q = bitcast<u32>(r.y);
    if (q >= rd.n) {
        return;
    }
    let base = rd.offset + id.z * rd.n * rd.n;
    let t = turn(r, a[base + p * rd.n + j], a[base + q * rd.n + j]);
    a[base + p * rd.n + j] = t.x;
    a[base + q * rd.n + j] = t.y;
}

// rotate_columns: 1 the rotations, 2 A, 3 V: columns p and q ← ·J (one invocation per pair
// and row).
@compute @workgroup_size(64)
fn rotate_columns(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (id.y >= rd.m / 2u || i >= rd.n) {
        return;
    }
    let r = rotation(id.z, id.y);
    let p = bitcast<u32>(r.x);
    let q = bitcast<u32>(r.y);
    if (q >= rd.n) {
        return;
    }
    let row = rd.offset + id.z * rd.n * rd.n + i * rd.n;
    let t = turn(r, a[row + p], a[row + q]);
    a[row + p] = t.x;
    a[row + q] = t.y;
    let w = turn(r, v[row + p], v[row + q]);
    v[row + p] = w.x;
    v[row + q] = w.y;
}

// norms (one workgroup per matrix of the run): 1 A, 2 per matrix (slot = rot_offset + z) the
// squared off-diagonal and total Frobenius norms: the stopping test without reading A back.
@group(0) @binding(1) var<storage, read> a_norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm_out: array<f32>;

@compute @workgroup_size(WG)
fn norms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = rd.offset + wid.z * rd.n * rd.n;
    var off = 0.0;
    var total = 0.0;
    for (var e = lid; e < rd.n * rd.n; e += WG) {
        let x = a_norm[base + e];
        total += x * x;
        off += select(x * x, 0.0, e % (rd.n + 1u) == 0u);
    }
    let off_sum = workgroup_sum(lid, off);
    let total_sum = workgroup_sum(lid, total);
    if (lid == 0u) {
        norm_out[2u * (rd.rot_offset + wid.z)] = off_sum;
        norm_out[2u * (rd.rot_offset + wid.z) + 1u] = total_sum;
    }
}
