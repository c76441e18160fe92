// Float classification from the bits: compilers may assume floats are finite and fold an
// `x != x` test away, but integer tests on the bit pattern survive.

fn nonfinite_bits(bits: u32) -> bool {
    return (bits & 0x7f800000u) == 0x7f800000u;
}

fn is_nan4(x: vec4<f32>) -> vec4<bool> {
    let bits = bitcast<vec4<u32>>(x);
    return ((bits & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u))
        & ((bits & vec4<u32>(0x007fffffu)) != vec4<u32>(0u));
}
