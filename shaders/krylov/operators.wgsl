// y = A·x for the built-in linear operators, and their diagonals (for Jacobi).
// Scalar arrays: operators see the caller's exact-length views.

struct Dense {
    rows: u32,
    cols: u32,
    stride: u32,    // elements between row starts (≥ cols): also serves V·w for a padded basis
    _pad: u32,
}

struct Csr {
    rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Grid {
    nx: u32,
    ny: u32,
    nz: u32,
    n: u32,
    beta_index: u32,    // DIRECTION: where β lives in beta_src
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dense: Dense;
@group(0) @binding(0) var<uniform> csr: Csr;
@group(0) @binding(0) var<uniform> grid: Grid;

// Dense: binding 1 the row-major matrix, 2 x, 3 y.
@group(0) @binding(1) var<storage, read> dense_a: array<f32>;
@group(0) @binding(2) var<storage, read> dense_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dense_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> dense_diag: array<f32>;

// CSR: 1 row pointers, 2 the entries as (column, value bits) pairs, 4 x, 5 y. One 8-byte load
// an entry instead of two: the CSR product on lavapipe (4000 rows, ~7 entries each) went from
// 400 to 305 µs with the pairs.
@group(0) @binding(1) var<storage, read> csr_rows: array<u32>;
@group(0) @binding(2) var<storage, read> csr_entries: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> csr_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> csr_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> csr_diag: array<f32>;

// Stencils: 1 x, 2 y.
@group(0) @binding(1) var<storage, read> vec_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> vec_y: array<f32>;

// One workgroup per row: the row's dot product is strided over the workgroup and folded.
// With stride > cols it computes c = V·w for the spectrum tools' padded bases too.
@compute @workgroup_size(WG)
fn dense_matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    var acc = 0.0;
    if (row < dense.rows) {
        let base = row * dense.stride;
        for (var c = lid; c < dense.cols; c += WG) {
            acc += dense_a[base + c] * dense_x[c];
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && row < dense.rows) {
        dense_y[row] = total;
    }
}

@compute @workgroup_size(WG)
fn dense_diagonal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    for (var i = linear_index(wid, nwg, lid); i < dense.rows; i += grid_stride(nwg)) {
        dense_diag[i] = dense_a[i * dense.cols + i];
    }
}

@compute @workgroup_size(WG)
fn csr_matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var row = linear_index(wid, nwg, lid); row < csr.rows; row += grid_stride(nwg)) {
        var acc = 0.0;
        for (var k = csr_rows[row]; k < csr_rows[row + 1u]; k++) {
            let e = csr_entries[k];
            acc += bitcast<f32>(e.y) * csr_x[e.x];
        }
        csr_y[row] = acc;
    }
}

// CG's fused form for CSR: y = A·x and one partial sum of xᵀy per workgroup over the rows below
// 4⌊n/4⌋ (the caller adds the rest); binding 6 the partials. No fused direction: forming
// x + β·d inside would gather d beside x for every entry, and on lavapipe that cost more
// (305 µs for the 4000-row graph Laplacian) than a pass for p and the product (~30 + ~200 µs).
@group(0) @binding(6) var<storage, read_write> csr_partial: array<f32>;

@compute @workgroup_size(WG)
fn csr_matvec_dot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let whole = (csr.rows / 4u) * 4u;
    var acc = 0.0;
    for (var row = linear_index(wid, nwg, lid); row < csr.rows; row += grid_stride(nwg)) {
        var y = 0.0;
        for (var k = csr_rows[row]; k < csr_rows[row + 1u]; k++) {
            let e = csr_entries[k];
            y += bitcast<f32>(e.y) * csr_x[e.x];
        }
        csr_y[row] = y;
        if (row < whole) {
            acc += csr_x[row] * y;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        csr_partial[wid.y * nwg.x + wid.x] = total;
    }
}

// The diagonal entry of each row (0 where the row stores none).
@compute @workgroup_size(WG)
fn csr_diagonal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var row = linear_index(wid, nwg, lid); row < csr.rows; row += grid_stride(nwg)) {
        var d = 0.0;
        for (var k = csr_rows[row]; k < csr_rows[row + 1u]; k++) {
            let e = csr_entries[k];
            if (e.x == row) {
                d += bitcast<f32>(e.y);
            }
        }
        csr_diag[row] = d;
    }
}

// The Laplacian with Dirichlet zero boundary, unscaled: 5-point (4x − four neighbours) when
// POISSON_3D is false, 7-point (6x − six neighbours) when it is true.
fn poisson_diag() -> f32 {
    return select(4.0, 6.0, POISSON_3D);
}

@compute @workgroup_size(WG)
fn poisson(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let plane = grid.nx * grid.ny;
    for (var idx = linear_index(wid, nwg, lid); idx < grid.n; idx += grid_stride(nwg)) {
        let i = idx % grid.nx;
        let j = (idx / grid.nx) % grid.ny;
        var y = poisson_diag() * vec_x[idx];
        if (i > 0u) { y -= vec_x[idx - 1u]; }
        if (i + 1u < grid.nx) { y -= vec_x[idx + 1u]; }
        if (j > 0u) { y -= vec_x[idx - grid.nx]; }
        if (j + 1u < grid.ny) { y -= vec_x[idx + grid.nx]; }
        if (POISSON_3D) {
            let k = idx / plane;
            if (k > 0u) { y -= vec_x[idx - plane]; }
            if (k + 1u < grid.nz) { y -= vec_x[idx + plane]; }
        }
        vec_y[idx] = y;
    }
}

// vec4 forms for nx % 4 == 0: a vec4 never straddles two grid rows, so the left and right
// neighbours are lane shifts of the centre vec4 plus one scalar from each side (one component
// of a neighbouring vec4, loaded alone: a quarter of a vec4 gather on CPU adapters). x and d
// are bound once each, so they may share a buffer with y.
@group(0) @binding(1) var<storage, read> vec4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vec4_y: array<vec4<f32>>;

// CG's search direction fused into the stencil (DIRECTION): the operand is x + β·d with
// β = beta_src[grid.beta_index], formed on the fly, so p = r + β·p costs no pass of its own;
// neither x nor d is written (neighbouring walks still read them).
override DIRECTION: bool = false;
@group(0) @binding(4) var<storage, read> dir4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> beta_src: array<f32>;
var<private> beta: f32;

fn load_beta() {
    if (DIRECTION) {
        beta = beta_src[grid.beta_index];
    }
}

fn operand4(k: u32) -> vec4<f32> {
    if (DIRECTION) {
        return vec4_x[k] + beta * dir4[k];
    }
    return vec4_x[k];
}

fn operand1(i: u32) -> f32 {
    let k = i / 4u;
    let lane = i % 4u;
    if (DIRECTION) {
        return vec4_x[k][lane] + beta * dir4[k][lane];
    }
    return vec4_x[k][lane];
}

// Slabs (grid rows in 2-D, planes in 3-D) each invocation walks along the last axis, carrying
// the previous, current and next slab's vec4 in registers: one new vec4 per point instead of
// three. CPU adapters gain from long walks (gathers are their bottleneck); GPUs want
// parallelism more than reuse, so the host picks it per device type.
override MARCH: u32 = 1u;

// Specialised per pipeline: branching on grid.nz inside the loop, although uniform, cost
// lavapipe 25–60% on the 2-D stencil.
override POISSON_3D: bool = false;

// diag·centre − left − right along the row, for the four points of vec4 k starting at i0.
// Branch-free: neighbours are loaded from clamped indices and masked, which vectorises across
// invocations on CPU adapters where divergent branches serialise.
fn row_terms(k: u32, i0: u32, c: vec4<f32>) -> vec4<f32> {
    let before = operand1(select(4u * k - 1u, 0u, k == 0u));
    let after = operand1(min(4u * k + 4u, grid.n - 1u));
    let left = vec4<f32>(select(before, 0.0, i0 == 0u), c.x, c.y, c.z);
    let right = vec4<f32>(c.y, c.z, c.w, select(after, 0.0, i0 + 4u >= grid.nx));
    return poisson_diag() * c - left - right;
}

// x at vec4 index k + offset (or k − offset), or 0 past the boundary.
fn neighbour(k: u32, offset: u32, up: bool, inside: bool) -> vec4<f32> {
    let last = grid.n / 4u - 1u;
    let index = select(select(k - offset, 0u, k < offset), min(k + offset, last), up);
    return select(vec4<f32>(0.0), operand4(index), inside);
}

// vec4s in one slab, and slabs along the walked axis.
fn slab4() -> u32 {
    return select(grid.nx / 4u, grid.nx / 4u * grid.ny, POISSON_3D);
}

fn slabs() -> u32 {
    return select(grid.ny, grid.nz, POISSON_3D);
}

// The stencil terms inside slab position `col` (row terms, and the row neighbours in 3-D).
fn in_slab(k: u32, col: u32, c: vec4<f32>) -> vec4<f32> {
    let row4 = grid.nx / 4u;
    if (!POISSON_3D) {
        return row_terms(k, col * 4u, c);
    }
    let j = col / row4;
    var y = row_terms(k, (col - j * row4) * 4u, c);
    y -= neighbour(k, row4, false, j > 0u);
    y -= neighbour(k, row4, true, j + 1u < grid.ny);
    return y;
}

// Work items: slab4() columns × ⌈slabs() / MARCH⌉ walks.
fn walks() -> u32 {
    return slab4() * ((slabs() + MARCH - 1u) / MARCH);
}

// Applies the stencil along walk `item`, storing y and returning Σ x·y over the walk.
fn walk(item: u32) -> f32 {
    let s4 = slab4();
    let col = item % s4;
    let first = (item / s4) * MARCH;
    let end = min(first + MARCH, slabs());
    var k = first * s4 + col;
    var prev = neighbour(k, s4, false, first > 0u);
    var cur = operand4(k);
    var acc = 0.0;
    for (var j = first; j < end; j++) {
        let next = neighbour(k, s4, true, j + 1u < slabs());
        let y = in_slab(k, col, cur) - prev - next;
        vec4_y[k] = y;
        acc += dot(cur, y);
        prev = cur;
        cur = next;
        k += s4;
    }
    return acc;
}

@compute @workgroup_size(WG)
fn poisson_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    load_beta();
    for (var item = linear_index(wid, nwg, lid); item < walks(); item += grid_stride(nwg)) {
        walk(item);
    }
}

// y = A·x and one partial sum of xᵀy per workgroup (CG's pᵀAp without a second pass).
@group(0) @binding(3) var<storage, read_write> dot_partial: array<f32>;

@compute @workgroup_size(WG)
fn poisson_vec4_dot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    load_beta();
    var acc = 0.0;
    for (var item = linear_index(wid, nwg, lid); item < walks(); item += grid_stride(nwg)) {
        acc += walk(item);
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        dot_partial[wid.y * nwg.x + wid.x] = total;
    }
}
