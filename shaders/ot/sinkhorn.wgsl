// Log-domain Sinkhorn (POT's sinkhorn_log) on dual potentials f (n) and g (m) in cost units,
// P[i][j] = exp((f[i] + g[j] − C[i][j])/reg):
//   g[j] = reg·(log b[j] − LSE_i((f[i] − C[i][j])/reg)),   f[i] = reg·(log a[i] − LSE_j((g[j] − C[i][j])/reg)),
// every log-sum-exp with its maximum taken out (stable at reg = 1/1200 with costs in [0, 1]).
//
// An iteration is two dispatches, both row passes (one workgroup per row): the g pass runs
// over the rows of Cᵀ (the host binds a transposed copy of a dense C, or swaps the point
// clouds, and swaps n and m in the uniform), the f pass over the rows of C. POT's error check
// ‖Pᵀ1 − b‖₂ after iteration t needs LSE_i((f[i] − C[i][j])/reg) at the potentials of t,
// which is what the g pass of iteration t + 1 computes anyway: that pass also writes the
// column errors, and every workgroup of the f pass after it folds them (the same sum in the
// same order everywhere), so the check costs no dispatch. The schedule lives on the GPU:
//   g pass: reads the A words (iterations done, stop), decides whether it checks, writes the
//           B words (what it decided) from workgroup 0; writes the new g into the spare
//           buffer g′ (never over g: if the check converges, g must stay as it was);
//   f pass: reads the B words, folds the errors when checking, writes the A words from
//           workgroup 0; unless it stops, writes f and copies g′ into g.
// No pass writes a word it reads. Passes after a stop return at once.
//
// Bindings of every pass: 0 the Ot uniform, 1–3 the cost (C or Cᵀ, X, Y; cost.wgsl), 4 the
// potential the pass updates (g pass: g, read for the error only), 5 the other potential
// (g pass: f; f pass: g′), 6 the pass's marginal (b or a), 7 the spare (g pass: g′, written;
// f pass: g, the copy's target), 8 the state words (below).

// State words (u32; f32 values as their bits). A: written by the f pass.
const A_ITER: u32 = 0u;    // iterations done
const A_STOP: u32 = 1u;    // 0 running, STOP_CONVERGED, STOP_MAXED
const A_FINAL: u32 = 2u;   // ‖Pᵀ1 − b‖₂ of the last check or measure (f32)
// B: written by the g pass (its decision, for the f pass after it).
const B_ITER: u32 = 4u;
const B_CHECK: u32 = 5u;
const B_STOP: u32 = 6u;
const STOP_CONVERGED: u32 = 1u;
const STOP_MAXED: u32 = 2u;
// From HISTORY: ‖Pᵀ1 − b‖₂ at POT's checks (after iterations 0, every, 2·every, …), then from
// ot.err_at the column errors (Pᵀ1 − b)[j] of the pass that checks.
const HISTORY: u32 = 8u;

@group(0) @binding(6) var<storage, read> marg_ro: array<f32>;
@group(0) @binding(8) var<storage, read_write> state: array<u32>;

var<workgroup> words: vec3<u32>;

// Three state words from `at`, the same in every invocation (the barriers after a branch on
// them stay in uniform control flow).
fn load_words(lid: u32, at: u32) -> vec3<u32> {
    if (lid == 0u) {
        words = vec3<u32>(state[at], state[at + 1u], state[at + 2u]);
    }
    return workgroupUniformLoad(&words);
}

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// The g pass's decision from the A words (iterations done, stop): check after POT's check
// iterations, and once more at the budget's end to measure the returned potentials.
fn g_pass_checks(a: vec3<u32>) -> bool {
    let it = a.x;
    return a.y == 0u && (it == ot.max_iter || (it >= 1u && (it - 1u) % ot.every == 0u));
}

// Workgroup 0 of the g pass: its decision for the f pass.
fn g_pass_publish(lid: u32, group: u32, a: vec3<u32>, check: bool) {
    if (group == 0u && lid == 0u) {
        state[B_ITER] = a.x;
        state[B_CHECK] = u32(check);
        state[B_STOP] = a.y;
    }
}

// The g pass's row r (a column of C) from its log-sum-exp: the new g into g′ and, when
// checking, (Pᵀ1 − b)[r] at the current g.
fn g_pass_finish(r: u32, lse: f32, current: f32, check: bool) {
    spare_rw[r] = ot.reg * (log(marg_ro[r]) - lse);
    if (check) {
        state[ot.err_at + r] = bitcast<u32>(exp(current * ot.inv_reg + lse) - marg_ro[r]);
    }
}

// The f pass's schedule from the B words: the stop it reaches (0: it goes on), after folding
// the column errors when the g pass checked. Workgroup 0 writes the A words and the history.
fn f_pass_stop(lid: u32, group: u32, b: vec3<u32>) -> u32 {
    let it = b.x;
    var stop = b.z;
    if (stop != 0u) {
        return stop;
    }
    if (b.y != 0u) {
        var acc = 0.0;
        for (var j = lid; j < ot.m; j += WG) {
            let e = bitcast<f32>(state[ot.err_at + j]);
            acc += e * e;
        }
        let err = sqrt(max(workgroup_sum(lid, acc), 0.0));
        // POT's checks may converge; the measure at the budget's end only reports.
        let counted = it >= 1u && (it - 1u) % ot.every == 0u;
        if (counted && err < ot.tol) {
            stop = STOP_CONVERGED;
        } else if (it == ot.max_iter) {
            stop = STOP_MAXED;
        }
        if (group == 0u && lid == 0u) {
            state[A_FINAL] = bitcast<u32>(err);
            if (counted) {
                state[HISTORY + (it - 1u) / ot.every] = bitcast<u32>(err);
            }
        }
    }
    if (group == 0u && lid == 0u) {
        state[A_ITER] = it + u32(stop == 0u);
        state[A_STOP] = stop;
    }
    return stop;
}

// Rows per workgroup. On CPU adapters the host sets ROWS to 4: a workgroup then takes four
// rows, which share each load of the other potential (and of the point) and the workgroup's
// start-up cost. GPUs keep 1, for more workgroups on small problems.
override ROWS: u32 = 1u;
const MAX_ROWS: u32 = 4u;

// ---- Rows read per entry (a point cloud, or a dense cost whose row length is not a multiple
// of 4).

@group(0) @binding(5) var<storage, read> other_ro: array<f32>;
@group(0) @binding(7) var<storage, read_write> spare_rw: array<f32>;

// LSE_j((other[j] − M[i][j])/reg) over rows first .. first + ROWS of the pass's matrix (rows
// past n repeat the last, computed and not written), one workgroup: each entry's `other` and
// point are loaded once for the ROWS rows.
fn rows_lse(first: u32, lid: u32) -> array<f32, MAX_ROWS> {
    var row: array<u32, MAX_ROWS>;
    var acc: array<vec2<f32>, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(first + r, ot.n - 1u);
        acc[r] = vec2<f32>(NEG, 0.0);
    }
    for (var base = 0u; base < ot.m; base += 4u * WG) {
        var o = vec4<f32>(0.0);
        var live = vec4<bool>(false);
        for (var t = 0u; t < 4u; t++) {
            let j = base + t * WG + lid;
            live[t] = j < ot.m;
            if (live[t]) {
                o[t] = other_ro[j];
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            var z = vec4<f32>(NEG);
            for (var t = 0u; t < 4u; t++) {
                if (live[t]) {
                    z[t] = (o[t] - cost(row[r], base + t * WG + lid)) * ot.inv_reg;
                }
            }
            acc[r] = lse_add4(acc[r], z);
        }
    }
    var lse: array<f32, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        lse[r] = workgroup_lse(lid, acc[r]);
    }
    return lse;
}

// g pass, per entry: 4 g (read), 5 f, 6 b, 7 g′, 8 state; uniform n = m of C, m = n of C.
@group(0) @binding(4) var<storage, read> own_ro: array<f32>;

@compute @workgroup_size(WG)
fn g_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wid, nwg);
    let a = load_words(lid, A_ITER);
    let check = g_pass_checks(a);
    g_pass_publish(lid, group, a, check);
    let first = ROWS * group;
    if (a.y != 0u || first >= ot.n) {
        return;
    }
    let lse = rows_lse(first, lid);
    for (var r = 0u; r < ROWS; r++) {
        if (lid == 0u && first + r < ot.n) {
            g_pass_finish(first + r, lse[r], own_ro[first + r], check);
        }
    }
}

// f pass, per entry: 4 f, 5 g′, 6 a, 7 g (the copy's target), 8 state.
@group(0) @binding(4) var<storage, read_write> own_rw: array<f32>;

@compute @workgroup_size(WG)
fn f_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wid, nwg);
    let b = load_words(lid, B_ITER);
    let first = ROWS * group;
    if (f_pass_stop(lid, group, b) != 0u || first >= ot.n) {
        return;
    }
    let lse = rows_lse(first, lid);
    for (var r = 0u; r < ROWS; r++) {
        if (lid == 0u && first + r < ot.n) {
            own_rw[first + r] = ot.reg * (log(marg_ro[first + r]) - lse[r]);
        }
    }
    // g′ → g, a slice per workgroup.
    let groups = (ot.n + ROWS - 1u) / ROWS;
    let chunk = (ot.m + groups - 1u) / groups;
    for (var j = group * chunk + lid; j < min((group + 1u) * chunk, ot.m); j += WG) {
        spare_rw[j] = other_ro[j];
    }
}

// ---- Dense rows as vec4 (row length a multiple of 4): C or Cᵀ at binding 1 and the other
// potential read as vec4 (why: cost.wgsl).

@group(0) @binding(5) var<storage, read> other4_ro: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> spare4_rw: array<vec4<f32>>;

// The log-sum-exps of rows first .. first + ROWS (rows past n repeat the last, computed and
// not written), one workgroup.
fn rows_lse4(first: u32, lid: u32) -> array<f32, MAX_ROWS> {
    let m4 = ot.m / 4u;
    var row: array<u32, MAX_ROWS>;
    var acc: array<vec2<f32>, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(first + r, ot.n - 1u) * m4;
        acc[r] = vec2<f32>(NEG, 0.0);
    }
    for (var q = lid; q < m4; q += WG) {
        let o = other4_ro[q];
        for (var r = 0u; r < ROWS; r++) {
            acc[r] = lse_add4(acc[r], (o - cost_c4[row[r] + q]) * ot.inv_reg);
        }
    }
    var lse: array<f32, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        lse[r] = workgroup_lse(lid, acc[r]);
    }
    return lse;
}

// g pass on Cᵀ as vec4: 1 Cᵀ, 4 g (read), 5 f as vec4, 6 b, 7 g′, 8 state.
@compute @workgroup_size(WG)
fn g_pass4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wid, nwg);
    let a = load_words(lid, A_ITER);
    let check = g_pass_checks(a);
    g_pass_publish(lid, group, a, check);
    let first = ROWS * group;
    if (a.y != 0u || first >= ot.n) {
        return;
    }
    let lse = rows_lse4(first, lid);
    for (var r = 0u; r < ROWS; r++) {
        if (lid == 0u && first + r < ot.n) {
            g_pass_finish(first + r, lse[r], own_ro[first + r], check);
        }
    }
}

// f pass on C as vec4: 1 C, 4 f, 5 g′ as vec4, 6 a, 7 g as vec4 (the copy's target), 8 state.
@compute @workgroup_size(WG)
fn f_pass4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wid, nwg);
    let b = load_words(lid, B_ITER);
    let first = ROWS * group;
    if (f_pass_stop(lid, group, b) != 0u || first >= ot.n) {
        return;
    }
    let lse = rows_lse4(first, lid);
    for (var r = 0u; r < ROWS; r++) {
        if (lid == 0u && first + r < ot.n) {
            own_rw[first + r] = ot.reg * (log(marg_ro[first + r]) - lse[r]);
        }
    }
    let m4 = ot.m / 4u;
    let groups = (ot.n + ROWS - 1u) / ROWS;
    let chunk = (m4 + groups - 1u) / groups;
    for (var q = group * chunk + lid; q < min((group + 1u) * chunk, m4); q += WG) {
        spare4_rw[q] = other4_ro[q];
    }
}

// ---- The transposed copy of a dense C that the g pass reads (once per problem), through
// 16×16 tiles so that both the reads and the writes run along rows: 1 C (n×m), 4 Cᵀ (m×n).
const TILE: u32 = 16u;
var<workgroup> tile: array<f32, 272>; // TILE × (TILE + 1): the padding spreads the columns

@compute @workgroup_size(16, 16)
fn transpose_cost(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = wid.y * TILE + lid3.y;
    let j = wid.x * TILE + lid3.x;
    if (i < ot.n && j < ot.m) {
        tile[lid3.y * (TILE + 1u) + lid3.x] = cost_c[i * ot.m + j];
    }
    workgroupBarrier();
    let ti = wid.y * TILE + lid3.x;
    let tj = wid.x * TILE + lid3.y;
    if (ti < ot.n && tj < ot.m) {
        own_rw[tj * ot.n + ti] = tile[lid3.x * (TILE + 1u) + lid3.y];
    }
}
