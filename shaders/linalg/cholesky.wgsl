// Blocked Cholesky A = L·Lᵀ of row-major SPD factors, in place (L overwrites the lower
// triangle), and lower-triangular solves, for a batch of factors of any sizes packed in one
// buffer. The host walks each factor in blocks of NB columns: `cholesky_block` factors the
// diagonal block in one workgroup, `forward_substitution` solves the panel below it against
// that block, and gemm.wgsl subtracts L21·L21ᵀ from the trailing matrix. A run of equally
// sized factors stored back to back goes through each step together: grid z is the factor
// within the run (its matrix n² elements on, its scratch the *_zstride fields on).

const NB: u32 = 32u;

struct Block {
    n: u32,            // the factor's side and leading dimension
    offset: u32,       // the factor's first element
    j0: u32,           // the block's first row and column
    nb: u32,           // the block's size (≤ NB)
    factor: u32,       // index of the factor in the batch (status slot)
    l_offset: u32,     // forward_substitution: the triangle's (0, 0) element
    l_ld: u32,         //   and its leading dimension
    rhs: u32,          //   right-hand sides
    rhs_offset: u32,   //   element (0, 0) of right-hand side 0
    rhs_step: u32,     //   elements between right-hand sides
    elem_step: u32,    //   elements between entries of one right-hand side
    copy_step: u32,    //   forward_substitution's copy: elements between right-hand sides
    copy_elem: u32,    //   and between entries
    l_zstride: u32,    //   per z: elements between the triangles,
    rhs_zstride: u32,  //   between the right-hand sides' starts,
    copy_zstride: u32, //   and between the copies' starts
}

@group(0) @binding(0) var<uniform> blk: Block;

// cholesky_block: 1 the factors, 2 status (two words per factor: 1 + the first failing pivot's
// row, and that pivot's bits), 3 a copy of the factored block for the panel solve (NB×NB).
@group(0) @binding(1) var<storage, read_write> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> status: array<u32>;
@group(0) @binding(3) var<storage, read_write> block_out: array<f32>;

var<workgroup> tile: array<f32, 1024>;   // NB × NB, row-major

@compute @workgroup_size(256)
fn cholesky_block(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let nb = blk.nb;
    let factor = blk.factor + wid.z;
    let base = blk.offset + wid.z * blk.n * blk.n + blk.j0 * blk.n + blk.j0;
    for (var e = lid; e < NB * NB; e += 256u) {
        let r = e / NB;
        let c = e % NB;
        tile[e] = select(0.0, factors[base + r * blk.n + c], r < nb && c < nb);
    }
    workgroupBarrier();
    for (var c = 0u; c < nb; c++) {
        // Every invocation reads the pivot: the barrier that follows keeps the flow uniform.
        let pivot = tile[c * NB + c];
        let ok = pivot > 0.0 && !nonfinite_bits(bitcast<u32>(pivot));
        if (lid == 0u && !ok && status[2u * factor] == 0u) {
            status[2u * factor] = blk.j0 + c + 1u;
            status[2u * factor + 1u] = bitcast<u32>(pivot);
        }
        let d = sqrt(pivot);
        workgroupBarrier();
        if (lid == 0u) {
            tile[c * NB + c] = d;
        }
        for (var r = c + 1u + lid; r < nb; r += 256u) {
            tile[r * NB + c] /= d;
        }
        workgroupBarrier();
        // Trailing update of the block's lower triangle: (r, s) with c < s ≤ r.
        for (var e = lid; e < NB * NB; e += 256u) {
            let r = e / NB;
            let s = e % NB;
            if (s > c && s <= r && r < nb) {
                tile[e] -= tile[r * NB + c] * tile[s * NB + c];
            }
        }
        workgroupBarrier();
    }
    for (var e = lid; e < NB * NB; e += 256u) {
        let r = e / NB;
        let c = e % NB;
        // The strict upper triangle is zeroed: the factor is L exactly.
        let v = select(0.0, tile[e], c <= r);
        block_out[wid.z * NB * NB + e] = v;
        if (r < nb && c < nb) {
            factors[base + r * blk.n + c] = v;
        }
    }
    // And the rest of the block rows' upper part: L is lower triangular.
    let right = blk.n - blk.j0 - nb;
    for (var e = lid; e < nb * right; e += 256u) {
        factors[base + (e / right) * blk.n + nb + e % right] = 0.0;
    }
}

// forward_substitution: 1 the lower triangle L (nb × nb at l_offset, leading dimension l_ld),
// 2 the right-hand sides, overwritten by x with L·x = b (one invocation each), 3 a second copy
// of every x, right-hand side i at i·copy_step (its entries copy_elem apart): the operand of
// the GEMM that follows, which may not read the buffer it writes.
@group(0) @binding(1) var<storage, read> lower: array<f32>;
@group(0) @binding(2) var<storage, read_write> rhs: array<f32>;
@group(0) @binding(3) var<storage, read_write> solution: array<f32>;

var<workgroup> l_tile: array<f32, 1024>;

@compute @workgroup_size(256)
fn forward_substitution(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let nb = blk.nb;
    for (var e = lid; e < NB * NB; e += 256u) {
        let r = e / NB;
        let c = e % NB;
        let at = blk.l_offset + wid.z * blk.l_zstride + r * blk.l_ld + c;
        l_tile[e] = select(0.0, lower[at], r < nb && c <= r);
    }
    workgroupBarrier();
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (i >= blk.rhs) {
        return;
    }
    let base = blk.rhs_offset + wid.z * blk.rhs_zstride + i * blk.rhs_step;
    let copy = wid.z * blk.copy_zstride + i * blk.copy_step;
    var x: array<f32, 32>;
    for (var r = 0u; r < nb; r++) {
        var t = rhs[base + r * blk.elem_step];
        for (var s = 0u; s < r; s++) {
            t -= l_tile[r * NB + s] * x[s];
        }
        x[r] = t / l_tile[r * NB + r];
        rhs[base + r * blk.elem_step] = x[r];
        solution[copy + r * blk.copy_elem] = x[r];
    }
}

// identity: 1 the n × n identity at `offset` + z·n² (the right-hand sides whose solve gives
// L⁻¹).
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn identity(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (e >= blk.n * blk.n) {
        return;
    }
    out[blk.offset + wid.z * blk.n * blk.n + e] = select(0.0, 1.0, e / blk.n == e % blk.n);
}
