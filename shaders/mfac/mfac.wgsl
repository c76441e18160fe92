// M-FAC (Frantar et al.): products with the inverse of F̂ = damp·I + (1/m)·Σ gᵢgᵢᵀ over a
// ring buffer G of the last m gradients, O(dm + m²) each, as the official `mul`:
//   c = λ·G·x;  forward substitution of c with D and denom;  w = (c ⊘ denom)ᵀ·B;
//   y = λ·x − Gᵀ·w,
// λ = 1/damp; D, denom and B come from the O(m³) setup (done on the host in f64). G is stored
// in column chunks (each a separate buffer of m rows, `stride` elements apart, a multiple of
// 4): `row_dots` and `combine` run once per chunk.

struct Chunk {
    m: u32,
    len: u32,          // elements of each gradient in this chunk
    stride: u32,       // elements between the chunk's rows (≥ len, a multiple of 4)
    out_offset: u32,   // row_dots: where this chunk's m partial dots go
    chunks: u32,       // substitute: partial dots to add per row (chunks × slices)
    lambda: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> ch: Chunk;

// row_dots (one workgroup per ROWS rows and per slice of the chunk's columns, so each x vec4
// loaded serves ROWS rows and there are enough workgroups to go round): 1 G (vec4), 2 x
// (vec4), 3 G, 4 x (scalars, for the len % 4 tail), 5 the partial dots, slice s of the chunk at
// out_offset + s·m.
const ROWS: u32 = 8u;
// Tuning::simd_lanes (WG when interleaving): each group of LANES invocations walks its own
// contiguous run of the slice.
override LANES: u32 = WG;

@group(0) @binding(1) var<storage, read> g4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> g1: array<f32>;
@group(0) @binding(4) var<storage, read> x1: array<f32>;
@group(0) @binding(5) var<storage, read_write> dots: array<f32>;

@compute @workgroup_size(WG)
fn row_dots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let j0 = wid.x * ROWS;
    let slices = nwg.y;
    let len4 = ch.len / 4u;
    let begin = wid.y * len4 / slices;
    let end = (wid.y + 1u) * len4 / slices;
    let stride4 = ch.stride / 4u;
    // Rows past m read row m − 1 again and are not stored: no branch around the loads.
    let last = ch.m - 1u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    var row: array<u32, 8>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(j0 + r, last) * stride4;
    }
    let groups = WG / LANES;
    let run = (end - begin + groups - 1u) / groups;
    let run_begin = begin + (lid / LANES) * run;
    let run_end = min(run_begin + run, end);
    for (var i = run_begin + lid % LANES; i < run_end; i += LANES) {
        let x = x4[i];
        lo += vec4<f32>(dot(g4[row[0] + i], x), dot(g4[row[1] + i], x),
                        dot(g4[row[2] + i], x), dot(g4[row[3] + i], x));
        hi += vec4<f32>(dot(g4[row[4] + i], x), dot(g4[row[5] + i], x),
                        dot(g4[row[6] + i], x), dot(g4[row[7] + i], x));
    }
    var acc: array<f32, 8> = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    let t = len4 * 4u + lid;
    if (wid.y + 1u == slices && t < ch.len) {
        let x = x1[t];
        for (var r = 0u; r < ROWS; r++) {
            acc[r] += g1[min(j0 + r, last) * ch.stride + t] * x;
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let total = workgroup_sum(lid, acc[r]);
        if (lid == 0u && j0 + r < ch.m) {
            dots[ch.out_offset + wid.y * ch.m + j0 + r] = total;
        }
    }
}

// substitute (one workgroup): 1 the partial dots (chunks × m), 2 D (m×m), 3 denom, 4 B (m×m),
// 5 c (scratch, m), 6 w (m).
@group(0) @binding(1) var<storage, read> partial_dots: array<f32>;
@group(0) @binding(2) var<storage, read> dmat: array<f32>;
@group(0) @binding(3) var<storage, read> denom: array<f32>;
@group(0) @binding(4) var<storage, read> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> w: array<f32>;

@compute @workgroup_size(WG)
fn substitute(@builtin(local_invocation_index) lid: u32) {
    let m = ch.m;
    for (var j = lid; j < m; j += WG) {
        var acc = 0.0;
        for (var k = 0u; k < ch.chunks; k++) {
            acc += partial_dots[k * m + j];
        }
        c[j] = ch.lambda * acc;
    }
    storageBarrier();
    // c[i..] −= D[i − 1, i..]·c[i − 1]/denom[i − 1], row after row.
    for (var i = 1u; i < m; i++) {
        let s = c[i - 1u] / denom[i - 1u];
        for (var j = i + lid; j < m; j += WG) {
            c[j] -= dmat[(i - 1u) * m + j] * s;
        }
        storageBarrier();
    }
    // w_j = Σ_i (c_i/denom_i)·B[i, j]; B is lower triangular: i ≥ j.
    for (var j = lid; j < m; j += WG) {
        var acc = 0.0;
        for (var i = j; i < m; i++) {
            acc += c[i] / denom[i] * coef[i * m + j];
        }
        w[j] = acc;
    }
}

// combine: 1 G (vec4), 2 x (vec4), 3 w, 4 y (vec4): y = λ·x − Gᵀ·w over the chunk's whole
// vec4s; combine_tail the same for the len % 4 scalars (bindings 1 G, 2 x, 3 w, 4 y scalar).
// X_IN_Y: y = x in place, x read from y (each entry read once, before it is overwritten) and
// binding 2 a placeholder, unread: WebGPU refuses overlapping bindings of a written buffer.
override X_IN_Y: bool = false;

@group(0) @binding(1) var<storage, read> cg4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cx4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cw: array<f32>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> cg1: array<f32>;
@group(0) @binding(2) var<storage, read> cx1: array<f32>;
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let len4 = ch.len / 4u;
    let stride4 = ch.stride / 4u;
    for (var i = linear_index(wid, nwg, lid); i < len4; i += grid_stride(nwg)) {
        var acc = vec4<f32>(0.0);
        for (var j = 0u; j < ch.m; j++) {
            acc += cw[j] * cg4[j * stride4 + i];
        }
        var x: vec4<f32>;
        if (X_IN_Y) {
            x = y4[i];
        } else {
            x = cx4[i];
        }
        y4[i] = ch.lambda * x - acc;
    }
}

@compute @workgroup_size(4)
fn combine_tail(@builtin(local_invocation_index) lid: u32) {
    let t = (ch.len / 4u) * 4u + lid;
    if (t >= ch.len) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < ch.m; j++) {
        acc += cw[j] * cg1[j * ch.stride + t];
    }
    var x: f32;
    if (X_IN_Y) {
        x = y1[t];
    } else {
        x = cx1[t];
    }
    y1[t] = ch.lambda * x - acc;
}
