// C = α·op(A)·op(B) + β·C for row-major matrices with leading dimensions (elements between
// row starts) and element offsets, op(X) = X or Xᵀ (TRANS_A / TRANS_B): one 64×64 tile of C
// per workgroup of 16×16 invocations, each owning a 4×4 block; grid z walks a batch of equally
// shaped products. K advances in steps of 16 through two 4 KiB workgroup tiles (8 KiB of
// WebGPU's 16 KiB). With β = 0, C is never read (BLAS: NaN there is ignored).
// LOWER: only the lower triangle is computed (tiles wholly above it exit at once) and
// `mirror_lower` then copies it over the upper one (symmetric products such as XᵀX).
// B_IN_A: A and B overlap in one buffer (XᵀX: one view) and are both read through `a`, B at
// offset_b of that binding, so that C may share their buffer (WebGPU refuses two overlapping
// bindings of a buffer the dispatch writes); `b` is then a placeholder, unread.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override LOWER: bool = false;
override B_IN_A: bool = false;

const TILE: u32 = 64u;
const KSTEP: u32 = 16u;

struct Gemm {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    offset_a: u32,
    offset_b: u32,
    offset_c: u32,
    stride_a: u32,      // elements between batch items
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    beta: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// [KSTEP][TILE / 4]: row kk holds op(A)[m0 .. m0 + 64][k0 + kk] (op(B)[k0 + kk][n0 .. n0 + 64])
// as 16 vec4s, so the inner loop reads one vec4 of each per step.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// op(A)[row][col] of the batch item starting at `base`, 0 outside the matrix.
fn op_a(base: u32, row: u32, col: u32) -> f32 {
    if (row >= g.m || col >= g.k) {
        return 0.0;
    }
    return a[base + select(row * g.lda + col, col * g.lda + row, TRANS_A)];
}

fn op_b(base: u32, row: u32, col: u32) -> f32 {
    if (row >= g.k || col >= g.n) {
        return 0.0;
    }
    let at = base + select(row * g.ldb + col, col * g.ldb + row, TRANS_B);
    if (B_IN_A) {
        return a[at];
    }
    return b[at];
}

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    // Uniform per workgroup, so the early return keeps the barriers below in uniform flow.
    if (LOWER && n0 > m0 + TILE - 1u) {
        return;
    }
    let base_a = g.offset_a + wid.z * g.stride_a;
    let base_b = g.offset_b + wid.z * g.stride_b;
    let base_c = g.offset_c + wid.z * g.stride_c;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Loader coordinates: consecutive invocations read consecutive addresses in either layout.
    let a_kk = select(lid % 16u, lid / 16u, TRANS_A);
    let a_r4 = select(lid / 16u, lid % 16u, TRANS_A);
    let b_kk = select(lid / 16u, lid % 16u, TRANS_B);
    let b_c4 = select(lid % 16u, lid / 16u, TRANS_B);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < g.k; k0 += KSTEP) {
        let ar = m0 + a_r4 * 4u;
        let ak = k0 + a_kk;
        a_tile[a_kk * 16u + a_r4] = vec4<f32>(op_a(base_a, ar, ak), op_a(base_a, ar + 1u, ak),
                                              op_a(base_a, ar + 2u, ak), op_a(base_a, ar + 3u, ak));
        let bk = k0 + b_kk;
        let bc = n0 + b_c4 * 4u;
        b_tile[b_kk * 16u + b_c4] = vec4<f32>(op_b(base_b, bk, bc), op_b(base_b, bk, bc + 1u),
                                              op_b(base_b, bk, bc + 2u), op_b(base_b, bk, bc + 3u));
        workgroupBarrier();
        for (var kk = 0u; kk < KSTEP; kk++) {
            let av = a_tile[kk * 16u + ty];
            let bv = b_tile[kk * 16u + tx];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    store_row(base_c, m0 + ty * 4u, n0 + tx * 4u, acc0);
    store_row(base_c, m0 + ty * 4u + 1u, n0 + tx * 4u, acc1);
    store_row(base_c, m0 + ty * 4u + 2u, n0 + tx * 4u, acc2);
    store_row(base_c, m0 + ty * 4u + 3u, n0 + tx * 4u, acc3);
}

fn store_row(base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= g.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < g.n && (!LOWER || col <= row)) {
            let at = base + row * g.ldc + col;
            var out = g.alpha * v[j];
            if (g.beta != 0.0) {
                out += g.beta * c[at];
            }
            c[at] = out;
        }
    }
}

// C[i][j] = C[j][i] for j > i: completes a LOWER product (one invocation per entry).
@compute @workgroup_size(16, 16)
fn mirror_lower(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.y;
    let col = id.x;
    if (row < g.m && col < g.n && col > row) {
        let base = g.offset_c + id.z * g.stride_c;
        c[base + row * g.ldc + col] = c[base + col * g.ldc + row];
    }
}
