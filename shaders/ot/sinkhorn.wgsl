// Log-domain Sinkhorn (POT's sinkhorn_log) on dual potentials f (n) and g (m) in cost units,
// P[i][j] = exp((f[i] + g[j] − C[i][j])/reg):
//   g[j] = reg·(log b[j] − LSE_i((f[i] − C[i][j])/reg)),   f[i] = reg·(log a[i] − LSE_j((g[j] − C[i][j])/reg)),
// every log-sum-exp with its maximum taken out (stable at reg = 1/1200 with costs in [0, 1]).
// The column update is two passes: col_partial folds each slice of rows per column, col_finish
// combines the slices (and, when checking, writes Pᵀ1 − b instead of updating g). Dense costs
// with m a multiple of 4 take row_update4 and col_partial4 (at the end) instead of row_update
// and col_partial.

// row_update (one workgroup per row): 4 f, 5 g, 6 a.
@group(0) @binding(4) var<storage, read_write> f_rw: array<f32>;
@group(0) @binding(5) var<storage, read> g_ro: array<f32>;
@group(0) @binding(6) var<storage, read> a_ro: array<f32>;

@compute @workgroup_size(WG)
fn row_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    // Uniform per workgroup: the barriers below stay in uniform control flow.
    if (i >= ot.n) {
        return;
    }
    var acc = vec2<f32>(NEG, 0.0);
    for (var base = 0u; base < ot.m; base += 4u * WG) {
        var z = vec4<f32>(NEG);
        for (var t = 0u; t < 4u; t++) {
            let j = base + t * WG + lid;
            if (j < ot.m) {
                z[t] = (g_ro[j] - cost(i, j)) * ot.inv_reg;
            }
        }
        acc = lse_add4(acc, z);
    }
    let lse = workgroup_lse(lid, acc);
    if (lid == 0u) {
        f_rw[i] = ot.reg * (log(a_ro[i]) - lse);
    }
}

// col_partial (workgroups: column blocks × row slices): 4 f, 7 the partial (max, sum) of
// slice s and column j at s·m + j.
@group(0) @binding(4) var<storage, read> f_ro: array<f32>;
@group(0) @binding(7) var<storage, read_write> partial_rw: array<vec2<f32>>;

@compute @workgroup_size(WG)
fn col_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * WG + lid;
    if (j >= ot.m) {
        return;
    }
    let begin = wid.y * ot.n / ot.slices;
    let end = (wid.y + 1u) * ot.n / ot.slices;
    var acc = vec2<f32>(NEG, 0.0);
    for (var i = begin; i < end; i += 4u) {
        var z = vec4<f32>(NEG);
        for (var t = 0u; t < 4u; t++) {
            if (i + t < end) {
                z[t] = (f_ro[i + t] - cost(i + t, j)) * ot.inv_reg;
            }
        }
        acc = lse_add4(acc, z);
    }
    partial_rw[wid.y * ot.m + j] = acc;
}

// col_finish (one invocation per column): 5 g, 6 b, 7 the partials, 8 Pᵀ1 − b (check only).
@group(0) @binding(5) var<storage, read_write> g_rw: array<f32>;
@group(0) @binding(6) var<storage, read> b_ro: array<f32>;
@group(0) @binding(7) var<storage, read> partial_ro: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> col_err: array<f32>;

@compute @workgroup_size(WG)
fn col_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var j = linear_index(wid, nwg, lid); j < ot.m; j += grid_stride(nwg)) {
        var top = NEG;
        for (var s = 0u; s < ot.slices; s++) {
            top = max(top, partial_ro[s * ot.m + j].x);
        }
        var sum = 0.0;
        for (var s = 0u; s < ot.slices; s++) {
            let p = partial_ro[s * ot.m + j];
            sum += select(p.y * exp(p.x - top), 0.0, p.x == NEG);
        }
        let lse = top + log(sum);
        if (ot.check == 0u) {
            g_rw[j] = ot.reg * (log(b_ro[j]) - lse);
        } else {
            col_err[j] = exp(g_rw[j] * ot.inv_reg + lse) - b_ro[j];
        }
    }
}

// Dense costs with m a multiple of 4: row_update4 and col_partial4 are row_update and
// col_partial with C (cost_c4) and in the row pass g read as vec4 (why: cost.wgsl).
// On CPU adapters the host also sets ROWS and QUADS to 4: a row-pass workgroup then takes four
// rows, which share each load of g and the workgroup's start-up cost, and a column-pass
// invocation four adjacent column quadruples, so that a SIMD group's loads from a row span
// whole cache lines. GPUs keep 1 and 1, for more workgroups on small problems.
override ROWS: u32 = 1u;
override QUADS: u32 = 1u;
const MAX_ROWS: u32 = 4u;
const MAX_QUADS: u32 = 4u;

@group(0) @binding(5) var<storage, read> g4_ro: array<vec4<f32>>;

// row_update4 (one workgroup per ROWS rows): 1 C as vec4, 4 f, 5 g as vec4, 6 a.
@compute @workgroup_size(WG)
fn row_update4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let first = ROWS * (wid.y * nwg.x + wid.x);
    // Uniform per workgroup: the barriers below stay in uniform control flow.
    if (first >= ot.n) {
        return;
    }
    let m4 = ot.m / 4u;
    // Rows past n repeat the last row (computed, not written).
    var row: array<u32, MAX_ROWS>;
    var acc: array<vec2<f32>, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(first + r, ot.n - 1u) * m4;
        acc[r] = vec2<f32>(NEG, 0.0);
    }
    for (var q = lid; q < m4; q += WG) {
        let g = g4_ro[q];
        for (var r = 0u; r < ROWS; r++) {
            acc[r] = lse_add4(acc[r], (g - cost_c4[row[r] + q]) * ot.inv_reg);
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let lse = workgroup_lse(lid, acc[r]);
        if (lid == 0u && first + r < ot.n) {
            f_rw[first + r] = ot.reg * (log(a_ro[first + r]) - lse);
        }
    }
}

// col_partial4 (workgroups: blocks of QUADS·WG column quadruples × row slices): 1 C as vec4,
// 4 f, 7 the partials as in col_partial. Four rows at a time share one rescale of the running
// sums.
@compute @workgroup_size(WG)
fn col_partial4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m4 = ot.m / 4u;
    let q0 = QUADS * (wid.x * WG + lid);
    if (q0 >= m4) {
        return;
    }
    // Quadruples past m4 repeat the last one (computed, not written).
    var q: array<u32, MAX_QUADS>;
    // Every slice holds a row and every z is finite, so exp(NEG − top) = 0 retires the start.
    var top: array<vec4<f32>, MAX_QUADS>;
    var sum: array<vec4<f32>, MAX_QUADS>;
    for (var k = 0u; k < QUADS; k++) {
        q[k] = min(q0 + k, m4 - 1u);
        top[k] = vec4<f32>(NEG);
        sum[k] = vec4<f32>(0.0);
    }
    let begin = wid.y * ot.n / ot.slices;
    let end = (wid.y + 1u) * ot.n / ot.slices;
    var i = begin;
    for (; i + 4u <= end; i += 4u) {
        let f = vec4<f32>(f_ro[i], f_ro[i + 1u], f_ro[i + 2u], f_ro[i + 3u]);
        for (var k = 0u; k < QUADS; k++) {
            let z0 = (vec4<f32>(f.x) - cost_c4[i * m4 + q[k]]) * ot.inv_reg;
            let z1 = (vec4<f32>(f.y) - cost_c4[(i + 1u) * m4 + q[k]]) * ot.inv_reg;
            let z2 = (vec4<f32>(f.z) - cost_c4[(i + 2u) * m4 + q[k]]) * ot.inv_reg;
            let z3 = (vec4<f32>(f.w) - cost_c4[(i + 3u) * m4 + q[k]]) * ot.inv_reg;
            let t = max(max(top[k], max(z0, z1)), max(z2, z3));
            sum[k] = sum[k] * exp(top[k] - t)
                + ((exp(z0 - t) + exp(z1 - t)) + (exp(z2 - t) + exp(z3 - t)));
            top[k] = t;
        }
    }
    for (; i < end; i++) {
        for (var k = 0u; k < QUADS; k++) {
            let z = (vec4<f32>(f_ro[i]) - cost_c4[i * m4 + q[k]]) * ot.inv_reg;
            let t = max(top[k], z);
            sum[k] = sum[k] * exp(top[k] - t) + exp(z - t);
            top[k] = t;
        }
    }
    for (var k = 0u; k < QUADS; k++) {
        if (q0 + k < m4) {
            let out = wid.y * ot.m + 4u * (q0 + k);
            for (var c = 0u; c < 4u; c++) {
                partial_rw[out + c] = vec2<f32>(top[k][c], sum[k][c]);
            }
        }
    }
}
