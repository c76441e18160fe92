// Conjugate gradient with every scalar on the GPU (scipy.sparse.linalg.cg's recurrence).
// Per system s: scal[8s + k] holds the f32 scalars below, ctl[4s + k] the counters and flags.
// Once a system has converged or broken down its flags are set and every kernel leaves it
// alone, so iterations recorded past convergence are no-ops and the counts stay exact.

const RZ: u32 = 0u;        // r·z of this iteration
const RZ_PREV: u32 = 1u;   // r·z of the previous iteration
const PQ: u32 = 2u;        // p·Ap
const ALPHA: u32 = 3u;
const RR: u32 = 4u;        // r·r (the stopping test uses the recursive residual, as scipy)
const TOL2: u32 = 5u;      // max(atol, rtol·‖b‖)²
const BETA: u32 = 6u;
const BB: u32 = 7u;        // b·b

const ITERATIONS: u32 = 0u;
const FLAGS: u32 = 1u;
const BREAKDOWN_AT: u32 = 2u;

const CONVERGED: u32 = 1u;
const BREAKDOWN: u32 = 2u;

struct System {
    sys: u32,
    n4: u32,            // vec4s in each (zero-padded) vector
    preconditioned: u32,
    history: u32,       // record ‖r‖ per iteration into hist
    atol: f32,
    rtol: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> sys: System;
@group(0) @binding(1) var<storage, read_write> scal: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;
@group(0) @binding(3) var<storage, read_write> hist: array<f32>;

// Elementwise kernels: 3.. the vectors they touch (vec4, padding zero).
@group(0) @binding(3) var<storage, read_write> v_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_a: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v_x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_r: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> v_p: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> v_q: array<vec4<f32>>;

fn s(k: u32) -> u32 {
    return 8u * sys.sys + k;
}

fn c(k: u32) -> u32 {
    return 4u * sys.sys + k;
}

fn done() -> bool {
    return ctl[c(FLAGS)] != 0u;
}

// A residual of exactly zero has converged whatever the tolerance: with rtol = atol = 0 the
// strict test ‖r‖ < 0 never passes, and the next iteration would meet p = 0 and pᵀAp = 0 and
// report a breakdown instead of the exact solution.
fn solved(rr: f32, tol2: f32) -> bool {
    return rr < tol2 || rr == 0.0;
}

// After r = b − A·x0 and the reductions of b·b and r·r: the tolerance and the test before
// the first iteration (scipy returns at once when ‖r0‖ < tol, and for b = 0).
@compute @workgroup_size(1)
fn cg_init() {
    let tol = max(sys.atol, sys.rtol * sqrt(scal[s(BB)]));
    scal[s(TOL2)] = tol * tol;
    scal[s(RZ_PREV)] = 0.0;
    ctl[c(ITERATIONS)] = 0u;
    ctl[c(BREAKDOWN_AT)] = 0u;
    let converged = scal[s(BB)] == 0.0 || solved(scal[s(RR)], tol * tol);
    ctl[c(FLAGS)] = select(0u, CONVERGED, converged);
    if (sys.history != 0u) {
        hist[0] = sqrt(scal[s(RR)]);
    }
}

// β = rz / rz_prev (0 on the first iteration). Without a preconditioner z = r and rz = rr.
@compute @workgroup_size(1)
fn cg_beta() {
    if (done()) {
        return;
    }
    if (sys.preconditioned == 0u) {
        scal[s(RZ)] = scal[s(RR)];
    }
    let first = ctl[c(ITERATIONS)] == 0u;
    scal[s(BETA)] = select(scal[s(RZ)] / scal[s(RZ_PREV)], 0.0, first);
}

// α = rz / pᵀAp; pᵀAp ≤ 0 (or NaN) means A is not SPD along p: flag the breakdown.
@compute @workgroup_size(1)
fn cg_alpha() {
    if (done()) {
        scal[s(ALPHA)] = 0.0;
        return;
    }
    let pq = scal[s(PQ)];
    if (!(pq > 0.0)) {
        ctl[c(FLAGS)] = BREAKDOWN;
        ctl[c(BREAKDOWN_AT)] = ctl[c(ITERATIONS)];
        scal[s(ALPHA)] = 0.0;
        return;
    }
    scal[s(ALPHA)] = scal[s(RZ)] / pq;
}

// After x and r moved and r·r was reduced: count the iteration and test ‖r‖ < tol (or r = 0).
@compute @workgroup_size(1)
fn cg_after() {
    if (done()) {
        return;
    }
    let it = ctl[c(ITERATIONS)] + 1u;
    ctl[c(ITERATIONS)] = it;
    scal[s(RZ_PREV)] = scal[s(RZ)];
    if (solved(scal[s(RR)], scal[s(TOL2)])) {
        ctl[c(FLAGS)] = CONVERGED;
    }
    if (sys.history != 0u) {
        hist[it] = sqrt(scal[s(RR)]);
    }
}

// p = z + β·p  (binding 3 p, 4 z)
@compute @workgroup_size(WG)
fn cg_direction(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    if (done()) {
        return;
    }
    let beta = scal[s(BETA)];
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        v_out[i] = v_a[i] + beta * v_out[i];
    }
}

@group(0) @binding(7) var<storage, read_write> rr_partial: array<f32>;

// With DIRECTION the operator applied A to r + β·p without storing it (operators.wgsl's
// DIRECTION): the update forms and stores p = r + β·p first, from the r it is about to move.
override DIRECTION: bool = false;

// x += α·p; r −= α·q, and each workgroup's share of the new r·r into rr_partial, folded by
// reduce.wgsl's reduce_finalize (binding 3 x, 4 r, 5 p, 6 q, 7 partials). The fused dot
// saves a pass over r. No early return: every invocation must reach the workgroup fold.
@compute @workgroup_size(WG)
fn cg_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let live = !done();
    let alpha = scal[s(ALPHA)];
    let beta = scal[s(BETA)];
    var rr = 0.0;
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        var r = v_r[i];
        if (live) {
            var p = v_p[i];
            if (DIRECTION) {
                p = r + beta * p;
                v_p[i] = p;
            }
            v_x[i] = v_x[i] + alpha * p;
            r = r - alpha * v_q[i];
            v_r[i] = r;
        }
        rr += dot(r, r);
    }
    let total = workgroup_sum(lid, rr);
    if (lid == 0u) {
        rr_partial[wid.y * nwg.x + wid.x] = total;
    }
}

// z = r ⊙ (1/diag A)  (binding 3 z, 4 r, 5 1/diag)
@compute @workgroup_size(WG)
fn cg_jacobi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    if (done()) {
        return;
    }
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        v_out[i] = v_a[i] * v_b[i];
    }
}

// r = b − A·x0  (binding 3 r, 4 b, 5 A·x0)
@compute @workgroup_size(WG)
fn cg_residual(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        v_out[i] = v_a[i] - v_b[i];
    }
}
