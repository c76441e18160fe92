// Dispatch geometry shared by every elementwise kernel. The host folds large grids into 2-D
// (x * y workgroups) and may cap the workgroup count; kernels walk a grid-stride loop
// `for (var i = linear_index(..); i < n; i += grid_stride(..))`, so any length fits any grid.

override WG: u32 = 256u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

fn grid_stride(nwg: vec3<u32>) -> u32 {
    return nwg.x * nwg.y * WG;
}

// The vectorised kernels cover the first ⌊n/4⌋·4 elements as vec4s; a 4-thread tail dispatch
// covers the rest, thread `lid` taking element ⌊n/4⌋·4 + lid (the caller checks it is < n).
fn tail_index(n: u32, lid: u32) -> u32 {
    return (n / 4u) * 4u + lid;
}
