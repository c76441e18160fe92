// Sinkhorn-Newton-Sparse's sparse Hessian on z = (f, g) (n + m), without the 1/reg factor:
//   H = [[diag(P·1), P_S], [P_Sᵀ, diag(Pᵀ·1)]] + shift·I,
// P_S the k largest entries of each row of P (ELL: k per row, column m for none) and its
// transpose in compressed columns (built from the same entries). The full Hessian is singular
// along (1, −1) (adding c to f and −c to g changes no P); g's column `pinned` is decoupled
// (kept to its diagonal) so the system is definite and that coordinate's step is 0. Bindings: 0 the uniform,
// 1 x, 2 y, 3 diag = (P·1, Pᵀ·1), 4 indices (ELL columns n·k, then the CSC rows, then at
// `starts_at` the CSC column starts, m + 1 counted from n·k), 5 values (ELL, then CSC).

struct Sns {
    n: u32,
    m: u32,
    k: u32,
    pinned: u32,
    shift: f32,
    starts_at: u32,    // where the CSC column starts begin in `indices`
    beta_index: u32,   // hessian_direction_apply_dot: where β lives in `dir_scalars`
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> sns: Sns;
@group(0) @binding(1) var<storage, read> hx: array<f32>;
@group(0) @binding(2) var<storage, read_write> hy: array<f32>;
@group(0) @binding(3) var<storage, read> diag: array<f32>;
@group(0) @binding(4) var<storage, read> indices: array<u32>;
@group(0) @binding(5) var<storage, read> values: array<f32>;

// x[t], or in hessian_direction_apply_dot the operand x + β·d formed on the fly.
fn operand(t: u32) -> f32 {
    if (FUSED_DIRECTION) {
        return hx[t] + beta * dir_d[t];
    }
    return hx[t];
}

// Row t of H·x.
fn hessian_row(t: u32) -> f32 {
    var acc = (diag[t] + sns.shift) * operand(t);
    if (t < sns.n) {
        // A row's entries come first and its padding (column m) after them.
        for (var e = t * sns.k; e < (t + 1u) * sns.k; e++) {
            let j = indices[e];
            if (j >= sns.m) {
                break;
            }
            if (j != sns.pinned) {
                acc += values[e] * operand(sns.n + j);
            }
        }
    } else if (t - sns.n != sns.pinned) {
        let j = t - sns.n;
        let base = sns.n * sns.k;
        let begin = base + indices[sns.starts_at + j];
        let end = base + indices[sns.starts_at + j + 1u];
        for (var e = begin; e < end; e++) {
            acc += values[e] * operand(indices[e]);
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

// hessian_apply_dot: y = H·x and, at 8, each workgroup's partial of xᵀy over the first
// ⌊(n + m)/4⌋·4 entries (CG's fused pᵀAp; the caller adds the rest). With FUSED_DIRECTION
// (hessian_direction_apply_dot) x is x + β·d, d at 6 and β at 7 (CG's p = z + β·p, formed
// where it is read rather than in a pass of its own).
override FUSED_DIRECTION: bool = false;
@group(0) @binding(6) var<storage, read> dir_d: array<f32>;
@group(0) @binding(7) var<storage, read> dir_scalars: array<f32>;
@group(0) @binding(8) var<storage, read_write> hpartial: array<f32>;
var<private> beta: f32;

@compute @workgroup_size(WG)
fn hessian_apply_dot(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    if (FUSED_DIRECTION) {
        beta = dir_scalars[sns.beta_index];
    }
    let whole = ((sns.n + sns.m) / 4u) * 4u;
    var acc = 0.0;
    for (var t = linear_index(wid, nwg, lid); t < sns.n + sns.m; t += grid_stride(nwg)) {
        let y = hessian_row(t);
        hy[t] = y;
        if (t < whole) {
            acc += operand(t) * y;
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
