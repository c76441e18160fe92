// Sinkhorn-Newton-Sparse's sparse Hessian on z = (f, g) (n + m), without the 1/reg factor:
//   H = [[diag(P·1), P_S], [P_Sᵀ, diag(Pᵀ·1)]] + shift·I,
// P_S the k largest entries of each row of P (ELL: k per row, column m for none) and its
// transpose in compressed columns (built from the same entries). The full Hessian is singular
// along (1, −1) (adding c to f and −c to g changes no P); g's column `pinned` is decoupled
// (kept to its diagonal) so the system is definite and that coordinate's step is 0. Bindings: 0 the uniform,
// 1 x, 2 y, 3 diag = (P·1, Pᵀ·1), 4 indices (ELL columns n·k, then the CSC rows), 5 values
// (same layout), 6 the CSC column starts (m + 1, counted from n·k).

struct Sns {
    n: u32,
    m: u32,
    k: u32,
    pinned: u32,
    shift: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> sns: Sns;
@group(0) @binding(1) var<storage, read> hx: array<f32>;
@group(0) @binding(2) var<storage, read_write> hy: array<f32>;
@group(0) @binding(3) var<storage, read> diag: array<f32>;
@group(0) @binding(4) var<storage, read> indices: array<u32>;
@group(0) @binding(5) var<storage, read> values: array<f32>;
@group(0) @binding(6) var<storage, read> starts: array<u32>;

// Row t of H·x.
fn hessian_row(t: u32) -> f32 {
    var acc = (diag[t] + sns.shift) * hx[t];
    if (t < sns.n) {
        // A row's entries come first and its padding (column m) after them.
        for (var e = t * sns.k; e < (t + 1u) * sns.k; e++) {
            let j = indices[e];
            if (j >= sns.m) {
                break;
            }
            if (j != sns.pinned) {
                acc += values[e] * hx[sns.n + j];
            }
        }
    } else if (t - sns.n != sns.pinned) {
        let j = t - sns.n;
        let base = sns.n * sns.k;
        for (var e = base + starts[j]; e < base + starts[j + 1u]; e++) {
            acc += values[e] * hx[indices[e]];
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn hessian_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    for (var t = linear_index(wid, nwg, lid); t < sns.n + sns.m; t += grid_stride(nwg)) {
        hy[t] = hessian_row(t);
    }
}

// hessian_apply_dot: y = H·x and, at 7, each workgroup's partial of xᵀy over the first
// ⌊(n + m)/4⌋·4 entries (CG's fused pᵀAp; the caller adds the rest).
@group(0) @binding(7) var<storage, read_write> hpartial: array<f32>;

@compute @workgroup_size(WG)
fn hessian_apply_dot(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let whole = ((sns.n + sns.m) / 4u) * 4u;
    var acc = 0.0;
    for (var t = linear_index(wid, nwg, lid); t < sns.n + sns.m; t += grid_stride(nwg)) {
        let y = hessian_row(t);
        hy[t] = y;
        if (t < whole) {
            acc += hx[t] * y;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        hpartial[wid.y * nwg.x + wid.x] = total;
    }
}

// hessian_diagonal: 2 d = diag + shift.
@compute @workgroup_size(WG)
fn hessian_diagonal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    for (var t = linear_index(wid, nwg, lid); t < sns.n + sns.m; t += grid_stride(nwg)) {
        hy[t] = diag[t] + sns.shift;
    }
}

// col_total: 2 Pᵀ·1 into diag[n ..] from 1 the per-slice column sums (slices = sns.k here).
@compute @workgroup_size(WG)
fn col_total(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    for (var j = linear_index(wid, nwg, lid); j < sns.m; j += grid_stride(nwg)) {
        var total = 0.0;
        for (var s = 0u; s < sns.k; s++) {
            total += hx[s * sns.m + j];
        }
        hy[sns.n + j] = total;
    }
}

// step: the trial potentials 4 f′ = 1 f + α·(3 d)[..n] and 5 g′ = 2 g + α·d[n..] (d holds
// reg·Δ, α is `shift` here), written to separate buffers as the OT kernels bind them.
@group(0) @binding(1) var<storage, read> f_base: array<f32>;
@group(0) @binding(2) var<storage, read> g_base: array<f32>;
@group(0) @binding(3) var<storage, read> step_dir: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_trial: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_trial: array<f32>;

@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var t = linear_index(wid, nwg, lid); t < sns.n + sns.m; t += grid_stride(nwg)) {
        if (t < sns.n) {
            f_trial[t] = f_base[t] + sns.shift * step_dir[t];
        } else {
            g_trial[t - sns.n] = g_base[t - sns.n] + sns.shift * step_dir[t];
        }
    }
}
