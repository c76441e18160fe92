// Power iteration with deflation as PyHessian runs it, every scalar and the stopping rule on the
// GPU, at most four dispatches an iteration:
//   power_orth (with found vectors E only): w = v − E·c, c folded from the last step's
//       coefficient partials, and the partials of ‖w‖²;
//   the caller's operator: hv = A·w (A·v without found vectors);
//   power_partials: the partials of wᵀhv and ‖hv‖²;
//   power_step: every workgroup folds the partials (the same sums in the same order, so all
//       agree bit for bit), forms λ = v̂ᵀA·v̂ for v̂ = w/(‖w‖ + eps) (PyHessian's orthonormal
//       v; without found vectors v̂ = v, already normalised), writes v = A·v̂/(‖A·v̂‖ + eps),
//       makes PyHessian's test against the last λ, and leaves the next coefficient partials.
// Control words: A written by power_step, copied to B by power_partials, read by power_step:
// no pass writes a word it reads. Passes after a stop return at once (the caller's operator
// does not know and recomputes the same A·w, which nothing reads).
// Every pass runs `groups` workgroups walking the n entries with a grid stride; partials in
// `parts`: w·hv at [0, G), ‖hv‖² at [G, 2G), ‖w‖² at [2G, 3G), the coefficients' at 3G + j·G.

struct Power {
    n: u32,
    k: u32,          // found vectors to deflate
    stride: u32,     // elements between found vectors in the basis buffer
    groups: u32,     // G
    max_iter: u32,
    tol: f32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> pw: Power;

const A_ITER: u32 = 0u;    // iterations done
const A_STOP: u32 = 1u;    // 0 running, STOP_*
const A_VALUE: u32 = 2u;   // the eigenvalue PyHessian returns (f32 bits)
const B_ITER: u32 = 4u;
const B_STOP: u32 = 5u;
const HISTORY: u32 = 8u;   // λ of every iteration (f32 bits)
const STOP_CONVERGED: u32 = 1u;
const STOP_MAXED: u32 = 2u;
const STOP_NONFINITE: u32 = 3u;

var<workgroup> power_words: vec2<u32>;
var<workgroup> power_word: u32;

// Two control words from `at`, the same in every invocation (barriers after a branch on them
// stay in uniform control flow).
fn power_load(lid: u32, at: u32) -> vec2<u32> {
    if (lid == 0u) {
        power_words = vec2<u32>(pw_state[at], pw_state[at + 1u]);
    }
    return workgroupUniformLoad(&power_words);
}

// One control word from `at`, uniform like `power_load`'s; for the history, where
// `power_load` would also read the word this pass writes.
fn power_load_word(lid: u32, at: u32) -> u32 {
    if (lid == 0u) {
        power_word = pw_state[at];
    }
    return workgroupUniformLoad(&power_word);
}

fn fold(lid: u32, base: u32) -> f32 {
    var acc = 0.0;
    for (var g = lid; g < pw.groups; g += WG) {
        acc += pw_parts[base + g];
    }
    return workgroup_sum(lid, acc);
}

fn first_index(wid: vec3<u32>, lid: u32) -> u32 {
    return wid.x * WG + lid;
}

@group(0) @binding(3) var<storage, read_write> pw_parts: array<f32>;

// power_orth: 1 v, 2 the found vectors, 3 parts, 4 w, 5 state.
@group(0) @binding(1) var<storage, read> orth_v: array<f32>;
@group(0) @binding(2) var<storage, read> orth_basis: array<f32>;
@group(0) @binding(4) var<storage, read_write> orth_w: array<f32>;
@group(0) @binding(5) var<storage, read_write> pw_state: array<u32>;

// Found vectors a pass deflates at most (per-invocation coefficients; `MAX_DEFLATED` in Rust).
const MAX_FOUND: u32 = 32u;

@compute @workgroup_size(WG)
fn power_orth(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let a = power_load(lid, A_ITER);
    if (a.y != 0u) {
        return;
    }
    var c: array<f32, MAX_FOUND>;
    for (var j = 0u; j < pw.k; j++) {
        c[j] = fold(lid, 3u * pw.groups + j * pw.groups);
    }
    var acc = 0.0;
    for (var i = first_index(wid, lid); i < pw.n; i += pw.groups * WG) {
        var w = orth_v[i];
        for (var j = 0u; j < pw.k; j++) {
            w -= c[j] * orth_basis[j * pw.stride + i];
        }
        orth_w[i] = w;
        acc += w * w;
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        pw_parts[2u * pw.groups + wid.x] = total;
    }
}

// power_partials: 1 w (or v), 2 hv, 3 parts, 5 state (A copied to B by workgroup 0).
@group(0) @binding(1) var<storage, read> part_w: array<f32>;
@group(0) @binding(2) var<storage, read> part_hv: array<f32>;

@compute @workgroup_size(WG)
fn power_partials(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let a = power_load(lid, A_ITER);
    if (wid.x == 0u && lid == 0u) {
        pw_state[B_ITER] = a.x;
        pw_state[B_STOP] = a.y;
    }
    if (a.y != 0u) {
        return;
    }
    var dot = 0.0;
    var hh = 0.0;
    for (var i = first_index(wid, lid); i < pw.n; i += pw.groups * WG) {
        let h = part_hv[i];
        dot += part_w[i] * h;
        hh += h * h;
    }
    let d = workgroup_sum(lid, dot);
    let h = workgroup_sum(lid, hh);
    if (lid == 0u) {
        pw_parts[wid.x] = d;
        pw_parts[pw.groups + wid.x] = h;
    }
}

// power_step: 1 v (written), 2 hv, 3 parts, 4 the found vectors, 5 state.
@group(0) @binding(1) var<storage, read_write> step_v: array<f32>;
@group(0) @binding(4) var<storage, read> step_basis: array<f32>;

@compute @workgroup_size(WG)
fn power_step(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let b = power_load(lid, B_ITER);
    if (b.y != 0u) {
        return;
    }
    let it = b.x;
    let dot = fold(lid, 0u);
    let hh = fold(lid, pw.groups);
    var s = 1.0;
    if (pw.k > 0u) {
        s = 1.0 / (sqrt(fold(lid, 2u * pw.groups)) + pw.eps);
    }
    let lambda = dot * s * s;
    let inv = s / (s * sqrt(hh) + pw.eps);
    var stop = 0u;
    var value = lambda;
    if (nonfinite_bits(bitcast<u32>(lambda))) {
        stop = STOP_NONFINITE;
    } else if (it >= 1u) {
        // Loaded uniformly: the branches on `stop` below lead to barriers.
        let prev = bitcast<f32>(power_load_word(lid, HISTORY + it - 1u));
        if (abs(prev - lambda) / (abs(prev) + 1e-6) < pw.tol) {
            stop = STOP_CONVERGED;
            value = prev;
        }
    }
    if (stop == 0u && it + 1u == pw.max_iter) {
        stop = STOP_MAXED;
    }
    if (wid.x == 0u && lid == 0u) {
        pw_state[HISTORY + it] = bitcast<u32>(lambda);
        pw_state[A_ITER] = it + 1u;
        pw_state[A_STOP] = stop;
        pw_state[A_VALUE] = bitcast<u32>(value);
    }
    if (stop == STOP_NONFINITE) {
        return;
    }
    // PyHessian normalises A·v̂ into v before its test, so the stopping iteration's vector is
    // returned.
    var c: array<f32, MAX_FOUND>;
    for (var i = first_index(wid, lid); i < pw.n; i += pw.groups * WG) {
        let v = part_hv[i] * inv;
        step_v[i] = v;
        for (var j = 0u; j < pw.k; j++) {
            c[j] += v * step_basis[j * pw.stride + i];
        }
    }
    for (var j = 0u; j < pw.k; j++) {
        let total = workgroup_sum(lid, c[j]);
        if (lid == 0u) {
            pw_parts[3u * pw.groups + j * pw.groups + wid.x] = total;
        }
    }
}

// power_coeffs (the start, with found vectors): 1 v, 3 parts (the coefficient partials of v),
// 4 the found vectors.
@group(0) @binding(1) var<storage, read> coeff_v: array<f32>;

@compute @workgroup_size(WG)
fn power_coeffs(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    var c: array<f32, MAX_FOUND>;
    for (var i = first_index(wid, lid); i < pw.n; i += pw.groups * WG) {
        let v = coeff_v[i];
        for (var j = 0u; j < pw.k; j++) {
            c[j] += v * step_basis[j * pw.stride + i];
        }
    }
    for (var j = 0u; j < pw.k; j++) {
        let total = workgroup_sum(lid, c[j]);
        if (lid == 0u) {
            pw_parts[3u * pw.groups + j * pw.groups + wid.x] = total;
        }
    }
}
