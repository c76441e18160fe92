// Conjugate gradient with every scalar on the GPU (scipy.sparse.linalg.cg's recurrence), three
// dispatches an iteration: cg_turn (one workgroup: r·r and r·z folded from the last pass's
// per-workgroup partials, the convergence test, β), the operator's pass (q = A·(z + β·p) and
// the partials of its dot with q), cg_update (every workgroup folds those partials itself
// into pᵀAp and α, then moves x, r and p and leaves the partials of the new r·r).
//
// Per system s: scal[8s + k] holds the f32 scalars below, ctl[8s + k] the counters and flags.
// Each pass writes only words the others read, never words it reads itself, so no pass races
// with its own workgroups. Once a system has converged or broken down its flags are set and
// every pass leaves it alone: iterations recorded past convergence are no-ops, the counts exact.
//
// Partials of system s (`parts`), P = sys.parts of each quantity, S = sys.stride apart (each
// region starts at an aligned binding offset): r·r at 0, r·z at S, pᵀAp at 2S.

const RZ: u32 = 0u;        // r·z of this iteration (r·r without a preconditioner)
const PQ: u32 = 2u;        // p·Ap of the last update (kept for the breakdown message)
const RR: u32 = 4u;        // r·r (the stopping test uses the recursive residual, as scipy)
const TOL2: u32 = 5u;      // max(atol, rtol·‖b‖)²
const BETA: u32 = 6u;
const BB: u32 = 7u;        // b·b

const ITERATIONS: u32 = 0u;
const FLAGS: u32 = 1u;
const BREAKDOWN_AT: u32 = 2u;
const TURNED: u32 = 3u;    // ITERATIONS + 1 once cg_turn has run for this iteration
const BROKE: u32 = 4u;     // cg_update found pᵀAp ≤ 0 (cg_turn turns it into FLAGS)

const CONVERGED: u32 = 1u;
const BREAKDOWN: u32 = 2u;
const NONFINITE: u32 = 4u;
const MAXED: u32 = 8u;     // maxiter updates done without meeting the tolerance

struct System {
    sys: u32,
    n4: u32,            // vec4s in each (zero-padded) vector
    preconditioned: u32,
    history: u32,       // record ‖r‖ per iteration into hist
    atol: f32,
    rtol: f32,
    parts: u32,         // P: partials per quantity
    pq_parts: u32,      // of which the operator's pass filled this many pᵀAp partials
    pq_tail: u32,       // 1: those exclude the last vec4 (n % 4 products), the update adds it
    maxiter: u32,
    stride: u32,        // S: elements from one quantity's partials to the next's
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> sys: System;
@group(0) @binding(1) var<storage, read_write> scal: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;

fn s(k: u32) -> u32 {
    return 8u * sys.sys + k;
}

fn c(k: u32) -> u32 {
    return 8u * sys.sys + k;
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

// After b·b was reduced into scal[BB]: the tolerance, and every counter at 0. The first
// cg_turn makes scipy's test before the first iteration (‖r0‖ < tol returns at once); b = 0
// has converged already (scipy returns x = b = 0), and a non-finite b·b stops the system.
@compute @workgroup_size(1)
fn cg_init() {
    let bb = scal[s(BB)];
    let tol = max(sys.atol, sys.rtol * sqrt(bb));
    scal[s(TOL2)] = tol * tol;
    scal[s(RZ)] = 0.0;
    scal[s(BETA)] = 0.0;
    ctl[c(ITERATIONS)] = 0u;
    ctl[c(BREAKDOWN_AT)] = 0u;
    ctl[c(TURNED)] = 0u;
    ctl[c(BROKE)] = 0u;
    var flags = select(0u, CONVERGED, bb == 0.0);
    if (nonfinite_bits(bitcast<u32>(bb))) {
        flags = NONFINITE;
    }
    ctl[c(FLAGS)] = flags;
}

@group(0) @binding(3) var<storage, read_write> hist: array<f32>;
@group(0) @binding(4) var<storage, read> turn_parts: array<f32>;

// One workgroup: r·r (and r·z) from the partials the last pass left, then — once per
// iteration, so a turn recorded twice in a row changes nothing — the breakdown the update
// found, the history, a non-finite residual (b, x0 or the operator), the convergence test,
// the iteration limit and β = rz / rz_prev (0 on the first iteration).
@compute @workgroup_size(WG)
fn cg_turn(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < sys.parts; i += WG) {
        acc += turn_parts[i];
    }
    let rr = workgroup_sum(lid, acc);
    var rz = rr;
    if (sys.preconditioned != 0u) {
        acc = 0.0;
        for (var i = lid; i < sys.parts; i += WG) {
            acc += turn_parts[sys.stride + i];
        }
        rz = workgroup_sum(lid, acc);
    }
    if (lid != 0u || done()) {
        return;
    }
    if (ctl[c(BROKE)] != 0u) {
        ctl[c(FLAGS)] = BREAKDOWN;
        return;
    }
    let it = ctl[c(ITERATIONS)];
    if (ctl[c(TURNED)] == it + 1u) {
        return;
    }
    ctl[c(TURNED)] = it + 1u;
    scal[s(RR)] = rr;
    if (nonfinite_bits(bitcast<u32>(rr)) || nonfinite_bits(bitcast<u32>(rz))) {
        ctl[c(FLAGS)] = NONFINITE;
        return;
    }
    if (sys.history != 0u) {
        hist[it] = sqrt(rr);
    }
    if (solved(rr, scal[s(TOL2)])) {
        ctl[c(FLAGS)] = CONVERGED;
        return;
    }
    if (it >= sys.maxiter) {
        ctl[c(FLAGS)] = MAXED;
        return;
    }
    scal[s(BETA)] = select(rz / scal[s(RZ)], 0.0, it == 0u);
    scal[s(RZ)] = rz;
}

// Elementwise kernels: 3.. the vectors they touch (vec4, padding zero).
@group(0) @binding(3) var<storage, read_write> v_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_a: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v_b: array<vec4<f32>>;

// p = z + β·p  (binding 3 p, 4 z), for operators that cannot form the direction themselves.
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

@group(0) @binding(3) var<storage, read_write> v_x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_r: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> v_p: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> v_q: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> parts: array<f32>;
@group(0) @binding(8) var<storage, read> v_z: array<vec4<f32>>;

// With DIRECTION the operator applied A to z + β·p without storing it (operators.wgsl's
// DIRECTION): the update forms and stores p = z + β·p first. z is r unless PRECONDITIONED.
override DIRECTION: bool = false;
override PRECONDITIONED: bool = false;

fn direction_source(i: u32) -> vec4<f32> {
    if (PRECONDITIONED) {
        return v_z[i];
    }
    return v_r[i];
}

// pᵀAp from the operator pass's partials (and the last vec4's products when they leave it
// out), in the same order in every workgroup: every workgroup gets the same bits.
fn fold_pq(lid: u32, beta: f32) -> f32 {
    var acc = 0.0;
    for (var i = lid; i < sys.pq_parts; i += WG) {
        acc += parts[2u * sys.stride + i];
    }
    if (lid == 0u && sys.pq_tail != 0u) {
        let k = sys.n4 - 1u;
        var p = v_p[k];
        if (DIRECTION) {
            p = direction_source(k) + beta * p;
        }
        acc += dot(p, v_q[k]);
    }
    return workgroup_sum(lid, acc);
}

// α = rz / pᵀAp, then x += α·p, r −= α·q, and each workgroup's share of the new r·r into
// parts[wg]. pᵀAp ≤ 0 (or NaN) means A is not SPD along p: nothing moves and the breakdown
// is flagged for the next turn. No early return: every invocation reaches the folds.
@compute @workgroup_size(WG)
fn cg_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let beta = scal[s(BETA)];
    let pq = fold_pq(lid, beta);
    let running = !done();
    let live = running && pq > 0.0;
    let alpha = scal[s(RZ)] / pq;
    let group = wid.y * nwg.x + wid.x;
    if (group == 0u && lid == 0u && running) {
        scal[s(PQ)] = pq;
        let it = ctl[c(ITERATIONS)];
        if (live) {
            ctl[c(ITERATIONS)] = it + 1u;
        } else {
            ctl[c(BROKE)] = 1u;
            ctl[c(BREAKDOWN_AT)] = it;
        }
    }
    var rr = 0.0;
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        var r = v_r[i];
        if (live) {
            var p = v_p[i];
            if (DIRECTION) {
                p = direction_source(i) + beta * p;
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
        parts[group] = total;
    }
}

@group(0) @binding(6) var<storage, read_write> jacobi_parts: array<f32>;

// z = r ⊙ (1/diag A) and each workgroup's share of r·z (binding 3 z, 4 r, 5 1/diag, 6 the r·z
// partials). No early return, as in cg_update.
@compute @workgroup_size(WG)
fn cg_jacobi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let live = !done();
    var rz = 0.0;
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        if (live) {
            let r = v_a[i];
            let z = r * v_b[i];
            v_out[i] = z;
            rz += dot(r, z);
        }
    }
    let total = workgroup_sum(lid, rz);
    if (lid == 0u) {
        jacobi_parts[wid.y * nwg.x + wid.x] = total;
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

// x = 0 where b = 0 (scipy returns x = b, whatever x0 was; binding 3 x).
@compute @workgroup_size(WG)
fn cg_zero_rhs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    if (scal[s(BB)] != 0.0) {
        return;
    }
    for (var i = linear_index(wid, nwg, lid); i < sys.n4; i += grid_stride(nwg)) {
        v_out[i] = vec4<f32>(0.0);
    }
}
