// Log-domain Sinkhorn (POT's sinkhorn_log) on dual potentials f (n) and g (m) in cost units,
// P[i][j] = exp((f[i] + g[j] − C[i][j])/reg):
//   g[j] = reg·(log b[j] − LSE_i((f[i] − C[i][j])/reg)),   f[i] = reg·(log a[i] − LSE_j((g[j] − C[i][j])/reg)),
// every log-sum-exp with its maximum taken out (stable at reg = 1/1200 with costs in [0, 1]).
// The column update is two passes: col_partial folds each slice of rows per column, col_finish
// combines the slices (and, when checking, writes Pᵀ1 − b instead of updating g).

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
