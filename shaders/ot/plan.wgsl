// The transport plan P[i][j] = exp((f[i] + g[j] − C[i][j])/reg) from the potentials, without
// storing it: whole (plan_dense), per-row sums (row_sums: P·1 and Σⱼ C·P), column sums
// (col_sums, columns × row slices as in sinkhorn.wgsl), or the K largest entries of each row
// (top_k, for SNS's sparse Hessian and for callers that want the plan's support).
// Bindings: 4 f, 5 g; outputs at 6–8 per kernel.

@group(0) @binding(4) var<storage, read> pf: array<f32>;
@group(0) @binding(5) var<storage, read> pg: array<f32>;

@group(0) @binding(8) var<storage, read_write> plan_out: array<f32>;

@compute @workgroup_size(WG)
fn plan_dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var e = linear_index(wid, nwg, lid); e < ot.n * ot.m; e += grid_stride(nwg)) {
        let i = e / ot.m;
        let j = e % ot.m;
        plan_out[e] = exp((pf[i] + pg[j] - cost(i, j)) * ot.inv_reg);
    }
}

// row_sums (one workgroup per row): 6 P·1, 7 Σⱼ C[i][j]·P[i][j].
@group(0) @binding(6) var<storage, read_write> row_mass: array<f32>;
@group(0) @binding(7) var<storage, read_write> row_cost: array<f32>;

@compute @workgroup_size(WG)
fn row_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    if (i >= ot.n) {
        return;
    }
    var mass = 0.0;
    var weighted = 0.0;
    for (var j = lid; j < ot.m; j += WG) {
        let c = cost(i, j);
        let p = exp((pf[i] + pg[j] - c) * ot.inv_reg);
        mass += p;
        weighted += c * p;
    }
    let total = workgroup_sum(lid, mass);
    let total_cost = workgroup_sum(lid, weighted);
    if (lid == 0u) {
        row_mass[i] = total;
        row_cost[i] = total_cost;
    }
}

// col_sums (column blocks × row slices): 6 the slice's Σᵢ P[i][j] at s·m + j.
@group(0) @binding(6) var<storage, read_write> col_mass: array<f32>;

@compute @workgroup_size(WG)
fn col_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * WG + lid;
    if (j >= ot.m) {
        return;
    }
    let begin = wid.y * ot.n / ot.slices;
    let end = (wid.y + 1u) * ot.n / ot.slices;
    var mass = 0.0;
    for (var i = begin; i < end; i++) {
        mass += exp((pf[i] + pg[j] - cost(i, j)) * ot.inv_reg);
    }
    col_mass[wid.y * ot.m + j] = mass;
}

// col_sums4: col_sums for a dense C with m a multiple of 4, one column quadruple per
// invocation (the same sums in the same order): 1 C as vec4, 4 f, 5 g as vec4, 6 as col_sums.
@group(0) @binding(5) var<storage, read> pg4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn col_sums4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m4 = ot.m / 4u;
    let q = wid.x * WG + lid;
    if (q >= m4) {
        return;
    }
    let begin = wid.y * ot.n / ot.slices;
    let end = (wid.y + 1u) * ot.n / ot.slices;
    let g = pg4[q];
    var mass = vec4<f32>(0.0);
    for (var i = begin; i < end; i++) {
        mass += exp((vec4<f32>(pf[i]) + g - cost_c4[i * m4 + q]) * ot.inv_reg);
    }
    for (var c = 0u; c < 4u; c++) {
        col_mass[wid.y * ot.m + 4u * q + c] = mass[c];
    }
}

// top_k (one workgroup per row): 6 the column indices (u32 bits; m where the row has fewer
// than k entries), 7 the values P[i][j], k ≤ MAX_K per row, largest first (ties in any
// order).
// Each invocation keeps its own k largest of the columns it visits, then k rounds of a
// workgroup arg-max take the row's largest among the invocations' heads.
const MAX_K: u32 = 128u;

@group(0) @binding(6) var<storage, read_write> top_index: array<u32>;
@group(0) @binding(7) var<storage, read_write> top_value: array<f32>;

@compute @workgroup_size(WG)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    if (i >= ot.n) {
        return;
    }
    let k = ot.k;
    // The exponent's order is P's order along a row (f[i] is common to the row).
    var keys: array<f32, MAX_K>;
    var cols: array<u32, MAX_K>;
    for (var t = 0u; t < k; t++) {
        keys[t] = NEG;
        cols[t] = ot.m;
    }
    for (var j = lid; j < ot.m; j += WG) {
        let z = pg[j] - cost(i, j);
        if (z > keys[k - 1u]) {
            var at = k - 1u;
            while (at > 0u && keys[at - 1u] < z) {
                keys[at] = keys[at - 1u];
                cols[at] = cols[at - 1u];
                at--;
            }
            keys[at] = z;
            cols[at] = j;
        }
    }
    var head = 0u;
    for (var r = 0u; r < k; r++) {
        let mine = select(NEG, keys[min(head, k - 1u)], head < k);
        let best = workgroup_max(lid, mine);
        if (best == NEG) {
            // Uniform: every invocation saw the same best. The rest of the row is padding.
            for (var t = r + lid; t < k; t += WG) {
                top_index[i * k + t] = ot.m;
                top_value[i * k + t] = 0.0;
            }
            break;
        }
        // The lowest invocation holding the best key wins (lid < 2^24: exact as f32).
        let claim = select(NEG, -f32(lid), mine == best);
        let winner = -workgroup_max(lid, claim);
        if (f32(lid) == winner) {
            top_index[i * k + r] = cols[head];
            top_value[i * k + r] = exp((pf[i] + keys[head]) * ot.inv_reg);
            head++;
        }
    }
}

// select_rows (one workgroup per row): SNS's sparsity pattern, each row's largest entries
// without sorting them. Entries within e^-CUT of the row's largest (below that they add
// nothing at f32's resolution) are binned by e-folding distance from it into BINS bins; the
// pattern takes whole bins from the top while they fit in k, so every kept entry is larger
// than every dropped one. Written unsorted into 6 / 7 as top_k lays them out (column m
// pads). A row whose first bin alone holds more than k keeps the first k found and adds 1 to
// 8, the count of capped rows.
const BINS: u32 = 64u;
const CUT: f32 = 14.0;
var<workgroup> row_fill: atomic<u32>;
var<workgroup> bins: array<atomic<u32>, BINS>;

@group(0) @binding(8) var<storage, read_write> capped: array<atomic<u32>>;

fn bin_of(top: f32, z: f32) -> u32 {
    return min(u32((top - z) * ot.inv_reg * (f32(BINS) / CUT)), BINS - 1u);
}

// select_rows' per-entry steps, shared by its scalar and vec4 forms: z = g[j] − C[i][j]
// counted into its bin, then kept when its bin is among the `last` kept.
fn count_entry(top: f32, floor: f32, z: f32) {
    if (z >= floor) {
        atomicAdd(&bins[bin_of(top, z)], 1u);
    }
}

fn keep_entry(i: u32, j: u32, z: f32, top: f32, floor: f32, last: u32) {
    if (z >= floor && bin_of(top, z) < last) {
        let slot = atomicAdd(&row_fill, 1u);
        if (slot < ot.k) {
            top_index[i * ot.k + slot] = j;
            top_value[i * ot.k + slot] = exp((pf[i] + z) * ot.inv_reg);
        }
    }
}

// Empties the bins and the row's fill count before the counting pass.
fn clear_bins(lid: u32) {
    for (var b = lid; b < BINS; b += WG) {
        atomicStore(&bins[b], 0u);
    }
    if (lid == 0u) {
        atomicStore(&row_fill, 0u);
    }
    workgroupBarrier();
}

// Bins [0, last) fit in k (at least bin 0 is taken, capped at k); after the counting pass.
fn kept_bins() -> u32 {
    workgroupBarrier();
    var last = 1u;
    var total = atomicLoad(&bins[0]);
    for (var b = 1u; b < BINS; b++) {
        total += atomicLoad(&bins[b]);
        if (total > ot.k) {
            break;
        }
        last = b + 1u;
    }
    return last;
}

// Pads row i after the keeping pass and counts it when capped.
fn finish_row(i: u32, lid: u32) {
    workgroupBarrier();
    let found = atomicLoad(&row_fill);
    for (var t = found + lid; t < ot.k; t += WG) {
        top_index[i * ot.k + t] = ot.m;
        top_value[i * ot.k + t] = 0.0;
    }
    if (lid == 0u && found > ot.k) {
        atomicAdd(&capped[0], 1u);
    }
}

@compute @workgroup_size(WG)
fn select_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    if (i >= ot.n) {
        return;
    }
    var local_top = NEG;
    for (var j = lid; j < ot.m; j += WG) {
        local_top = max(local_top, pg[j] - cost(i, j));
    }
    let top = workgroup_max(lid, local_top);
    let floor = top - CUT * ot.reg;
    clear_bins(lid);
    for (var j = lid; j < ot.m; j += WG) {
        count_entry(top, floor, pg[j] - cost(i, j));
    }
    let last = kept_bins();
    for (var j = lid; j < ot.m; j += WG) {
        keep_entry(i, j, pg[j] - cost(i, j), top, floor, last);
    }
    finish_row(i, lid);
}

// select_rows4: select_rows for a dense C with m a multiple of 4, which also writes P·1 (the
// first pass visits every entry anyway): 1 C as vec4, 2 P·1, 4 f, 5 g as vec4, 6–8 as
// select_rows.
@group(0) @binding(2) var<storage, read_write> selected_mass: array<f32>;

@compute @workgroup_size(WG)
fn select_rows4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    if (i >= ot.n) {
        return;
    }
    let m4 = ot.m / 4u;
    let row = i * m4;
    var local_top = NEG;
    var mass = 0.0;
    for (var q = lid; q < m4; q += WG) {
        let z = pg4[q] - cost_c4[row + q];
        local_top = max(local_top, max(max(z.x, z.y), max(z.z, z.w)));
        mass += dot(exp((vec4<f32>(pf[i]) + z) * ot.inv_reg), vec4<f32>(1.0));
    }
    let top = workgroup_max(lid, local_top);
    let total = workgroup_sum(lid, mass);
    if (lid == 0u) {
        selected_mass[i] = total;
    }
    let floor = top - CUT * ot.reg;
    clear_bins(lid);
    for (var q = lid; q < m4; q += WG) {
        let z = pg4[q] - cost_c4[row + q];
        for (var c = 0u; c < 4u; c++) {
            count_entry(top, floor, z[c]);
        }
    }
    let last = kept_bins();
    for (var q = lid; q < m4; q += WG) {
        let z = pg4[q] - cost_c4[row + q];
        for (var c = 0u; c < 4u; c++) {
            keep_entry(i, 4u * q + c, z[c], top, floor, last);
        }
    }
    finish_row(i, lid);
}

// step_gains (one workgroup per row), SSNS's line search in one pass: for each of the step
// sizes STEPS, row i's change of mass Σⱼ P[i][j]·(exp(α·(Δf[i] + Δg[j])/reg) − 1) when the
// potentials move by α·Δ. Summing the changes, not the masses before and after, keeps the
// dual objective's change resolved in f32 near the solution, where it is far below the
// rounding of Σ P ≈ 1. 6 Δ (Δf then Δg), 7 the four changes of row i as one vec4.
const STEPS = vec4<f32>(1.0, 0.5, 0.25, 0.1);

@group(0) @binding(6) var<storage, read> step_dir: array<f32>;
@group(0) @binding(7) var<storage, read_write> step_gain: array<vec4<f32>>;

// exp(w) − 1 without the cancellation of the subtraction at small w (Kahan's correction:
// (u − 1)·w / log u with u = exp(w) rounded).
fn expm1(w: f32) -> f32 {
    let u = exp(w);
    if (u == 1.0) {
        return w;
    }
    let um1 = u - 1.0;
    if (um1 == -1.0 || w > 80.0) {
        return um1;
    }
    return um1 * w / log(u);
}

@compute @workgroup_size(WG)
fn step_gains(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wid.y * nwg.x + wid.x;
    // Uniform per workgroup: the barriers below stay in uniform control flow.
    if (i >= ot.n) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var j = lid; j < ot.m; j += WG) {
        let p = exp((pf[i] + pg[j] - cost(i, j)) * ot.inv_reg);
        let w = (step_dir[i] + step_dir[ot.n + j]) * ot.inv_reg;
        acc += p * vec4<f32>(expm1(STEPS.x * w), expm1(STEPS.y * w), expm1(STEPS.z * w),
                             expm1(STEPS.w * w));
    }
    let total = vec4<f32>(workgroup_sum(lid, acc.x), workgroup_sum(lid, acc.y),
                          workgroup_sum(lid, acc.z), workgroup_sum(lid, acc.w));
    if (lid == 0u) {
        step_gain[i] = total;
    }
}
