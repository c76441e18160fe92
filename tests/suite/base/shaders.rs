//! Every registered shader must validate with naga and translate to SPIR-V, MSL, HLSL and
//! GLSL ES 3.1 for every entry point, so Metal, DX12 and GL stay reachable even though only
//! Vulkan and GL run here.


use curvgpu::kernel::{source, SHADERS};
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// Portable WGSL: no f64, f16, subgroups or anything else beyond core WebGPU.
fn portable_validator() -> Validator {
    Validator::new(ValidationFlags::all(), Capabilities::empty())
}

fn translate_all(path: &'static str) -> Result<usize, String> {
    let src = source(path).map_err(|e| e.to_string())?;
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    let info = portable_validator()
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src))?;
    // Defaults of every `override` stand in for the constants the pipelines pass.
    let constants = naga::back::PipelineConstants::default();
    let mut entries = 0;
    for ep in &module.entry_points {
        let stage = ep.stage;
        let name = ep.name.clone();
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((stage, &name)),
            &constants,
        )
        .map_err(|e| format!("{name}: overrides: {e}"))?;
        if let Some((group, size)) = workgroup_check(&module, &name) {
            return Err(format!("{name}: {group} = {size}, WebGPU allows 256"));
        }

        spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv::PipelineOptions {
                shader_stage: stage,
                entry_point: name.clone(),
            }),
        )
        .map_err(|e| format!("{name}: SPIR-V: {e}"))?;

        msl::write_string(
            &module,
            &info,
            &msl::Options::default(),
            &msl::PipelineOptions {
                entry_point: Some((stage, name.clone())),
                ..Default::default()
            },
        )
        .map_err(|e| format!("{name}: MSL: {e}"))?;

        let hlsl_options = hlsl::Options::default();
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((stage, name.clone())),
        };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .map_err(|e| format!("{name}: HLSL: {e}"))?;

        let glsl_options = glsl::Options {
            version: glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let glsl_pipeline = glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: name.clone(),
            multiview: None,
        };
        let mut out = String::new();
        glsl::Writer::new(
            &mut out,
            &module,
            &info,
            &glsl_options,
            &glsl_pipeline,
            Default::default(),
        )
        .and_then(|mut w| w.write())
        .map_err(|e| format!("{name}: GLSL ES 3.1: {e}"))?;
        entries += 1;
    }
    Ok(entries)
}

/// Workgroups must fit WebGPU's defaults: ≤ 256 invocations.
fn workgroup_check(module: &naga::Module, name: &str) -> Option<(&'static str, u32)> {
    let ep = module.entry_points.iter().find(|ep| ep.name == name)?;
    let size: u32 = ep.workgroup_size.iter().product();
    (size > 256).then_some(("workgroup invocations", size))
}

#[test]
fn every_shader_validates_and_translates_to_every_backend() {
    let mut failures = Vec::new();
    let mut entries = 0;
    for shader in SHADERS {
        match translate_all(shader.path) {
            Ok(n) => entries += n,
            Err(e) => failures.push(format!("{}: {e}", shader.path)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        entries >= 20,
        "only {entries} entry points found: registry incomplete?"
    );
}

#[test]
fn storage_buffers_per_entry_point_stay_within_webgpu_default() {
    for shader in SHADERS {
        let src = source(shader.path).unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let info = portable_validator().validate(&module).unwrap();
        for (i, ep) in module.entry_points.iter().enumerate() {
            let ep_info = info.get_entry_point(i);
            let storage = module
                .global_variables
                .iter()
                .filter(|(h, var)| {
                    !ep_info[*h].is_empty()
                        && matches!(var.space, naga::AddressSpace::Storage { .. })
                })
                .count();
            assert!(
                storage <= 8,
                "{}::{} binds {storage} storage buffers",
                shader.path,
                ep.name
            );
        }
    }
}

#[test]
fn a_broken_shader_is_reported_by_name_not_a_panic() {
    // The registry refuses names it does not hold, with the name in the error.
    let err = source("diag/no_such_shader.wgsl").unwrap_err().to_string();
    assert!(err.contains("diag/no_such_shader.wgsl"), "{err}");
}

/// The device's own compiler accepts every shader (on the web this is the browser's, which the
/// demo's browser test runs; here wgpu's naga on the test adapter).
#[test]
fn every_shader_compiles_on_the_test_device() {
    let gpu = crate::common::gpu();
    pollster::block_on(gpu.check_shaders_async()).unwrap();
}
