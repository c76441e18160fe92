//! Every registered shader must validate with naga and translate to SPIR-V, MSL, HLSL and
//! GLSL ES 3.1 for every entry point, so Metal, DX12 and GL stay reachable even though only
//! Vulkan and GL run here; and every kernel's Rust declaration must be what its WGSL binds.

use std::collections::BTreeSet;

use curvgpu::gpu::REQUIRED_LIMITS;
use curvgpu::kernel::{Kernel, Slot, UniformLayout};
use curvgpu::shader::{Shader, ALL};
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

/// Portable WGSL: no f64, f16, subgroups or anything else beyond core WebGPU.
fn portable_validator() -> Validator {
    Validator::new(ValidationFlags::all(), Capabilities::empty())
}

fn parse(src: &str) -> Result<(naga::Module, ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let info = portable_validator()
        .validate(&module)
        .map_err(|e| e.emit_to_string(src))?;
    Ok((module, info))
}

fn translate_all(shader: &'static Shader) -> Result<usize, String> {
    let (module, info) = parse(&shader.source())?;
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

#[test]
fn every_shader_validates_and_translates_to_every_backend() {
    let mut failures = Vec::new();
    let mut entries = 0;
    for &shader in ALL {
        match translate_all(shader) {
            Ok(n) => entries += n,
            Err(e) => failures.push(format!("{}: {e}", shader.path)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        entries >= 100,
        "only {entries} entry points found: registry incomplete?"
    );
}

#[test]
fn every_wgsl_file_is_in_the_registry() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk = BTreeSet::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let rel = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            on_disk.insert(rel);
        }
    }
    let registered: BTreeSet<String> = ALL.iter().map(|s| s.path.to_string()).collect();
    assert_eq!(on_disk, registered);
}

/// The (binding, global) pairs `entry` statically uses.
fn used_bindings(
    module: &naga::Module,
    info: &ModuleInfo,
    entry: &str,
) -> Option<Vec<(u32, naga::Handle<naga::GlobalVariable>)>> {
    let index = module.entry_points.iter().position(|e| e.name == entry)?;
    let ep = info.get_entry_point(index);
    let mut used: Vec<_> = module
        .global_variables
        .iter()
        .filter(|(h, v)| !ep[*h].is_empty() && v.binding.is_some())
        .map(|(h, v)| (v.binding.as_ref().unwrap().binding, h))
        .collect();
    used.sort();
    Some(used)
}

/// The WGSL struct against the Rust layout: every member present under the same name, at the
/// same offset with the same size, and the same total size.
fn compare_uniform(
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
    rust: &UniformLayout,
) -> Result<(), String> {
    let naga::TypeInner::Struct { members, span } = &module.types[ty].inner else {
        return Err(format!("{} is bound to a non-struct uniform", rust.name));
    };
    if *span as usize != rust.size {
        return Err(format!(
            "{}: Rust size {} against WGSL size {span}",
            rust.name, rust.size
        ));
    }
    if members.len() != rust.fields.len() {
        return Err(format!(
            "{}: {} Rust fields against {} WGSL members",
            rust.name,
            rust.fields.len(),
            members.len()
        ));
    }
    let gctx = module.to_ctx();
    for (m, f) in members.iter().zip(rust.fields) {
        let name = m.name.as_deref().unwrap_or("");
        let size = module.types[m.ty].inner.size(gctx) as usize;
        if name != f.name || m.offset as usize != f.offset || size != f.size {
            return Err(format!(
                "{}: WGSL member `{name}` at {} ({size} B) against Rust field `{}` at {} ({} B)",
                rust.name, m.offset, f.name, f.offset, f.size
            ));
        }
    }
    Ok(())
}

/// Each used binding is a declared slot of the same kind, access and (for uniforms) layout, and
/// each declared slot is used.
fn check_kernel(kernel: &Kernel, module: &naga::Module, info: &ModuleInfo) -> Result<(), String> {
    let used = used_bindings(module, info, kernel.entry)
        .ok_or_else(|| format!("no entry point `{}`", kernel.entry))?;
    for &(binding, h) in &used {
        let var = &module.global_variables[h];
        let slot = kernel
            .slots
            .get(binding as usize)
            .copied()
            .unwrap_or(Slot::Gap);
        match (var.space, slot) {
            (naga::AddressSpace::Uniform, Slot::Uniform(layout)) => {
                compare_uniform(module, var.ty, layout)?
            }
            (naga::AddressSpace::Storage { access }, Slot::Read(_))
                if access == naga::StorageAccess::LOAD => {}
            (naga::AddressSpace::Storage { access }, Slot::Write(_))
                if access.contains(naga::StorageAccess::STORE) => {}
            (space, slot) => {
                return Err(format!(
                    "binding {binding} (`{}`) is {space:?} in WGSL, {slot:?} in Rust",
                    var.name.as_deref().unwrap_or("")
                ))
            }
        }
    }
    for (i, slot) in kernel.slots.iter().enumerate() {
        if *slot != Slot::Gap && !used.iter().any(|&(b, _)| b as usize == i) {
            return Err(format!(
                "declares binding {i} ({slot:?}), which the entry point does not use"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_kernel_declares_the_bindings_its_wgsl_uses() {
    let mut failures = Vec::new();
    for kernel in curvgpu::kernels() {
        let result = parse(&kernel.shader.source()).and_then(|(m, i)| check_kernel(kernel, &m, &i));
        if let Err(e) = result {
            failures.push(format!("{}: {e}", kernel.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_entry_point_has_exactly_one_kernel_declaration() {
    let mut declared = BTreeSet::new();
    for kernel in curvgpu::kernels() {
        assert!(
            declared.insert((kernel.shader.path, kernel.entry)),
            "{} is declared twice",
            kernel.name()
        );
    }
    let mut in_wgsl = BTreeSet::new();
    for &shader in ALL {
        let module = naga::front::wgsl::parse_str(shader.code);
        // Files that need snippets do not parse alone: take their entry points from the
        // composed source, keeping those whose `fn` is in this file's own text.
        let (module, _) = match module {
            Ok(m) => (m, ()),
            Err(_) => (parse(&shader.source()).unwrap().0, ()),
        };
        for ep in &module.entry_points {
            if shader.code.contains(&format!("fn {}(", ep.name)) {
                in_wgsl.insert((shader.path, ep.name.as_str().to_owned()));
            }
        }
    }
    let declared: BTreeSet<(&str, String)> = declared
        .into_iter()
        .map(|(p, e)| (p, e.to_string()))
        .collect();
    let missing: Vec<_> = in_wgsl.difference(&declared).collect();
    let stale: Vec<_> = declared.difference(&in_wgsl).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "entry points without a Rust declaration: {missing:?}; declarations without an entry point: {stale:?}"
    );
}

#[test]
fn every_kernel_validates_with_its_read_bindings_promoted() {
    // The variant a dispatch uses when views it reads share a buffer with one it writes.
    let mut failures = Vec::new();
    for kernel in curvgpu::kernels() {
        let mask = kernel
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Read(_)))
            .fold(0u32, |m, (i, _)| m | 1 << i);
        let result = parse(&kernel.shader.source_promoted(mask)).and_then(|(module, info)| {
            for (binding, h) in used_bindings(&module, &info, kernel.entry).unwrap_or_default() {
                let promoted = mask & (1 << binding) != 0;
                let var = &module.global_variables[h];
                if promoted
                    && var.space
                        != (naga::AddressSpace::Storage {
                            access: naga::StorageAccess::LOAD | naga::StorageAccess::STORE,
                        })
                {
                    return Err(format!(
                        "binding {binding} was not promoted: {:?}",
                        var.space
                    ));
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            failures.push(format!("{}: {e}", kernel.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_kernel_fits_the_required_limits() {
    let mut failures = Vec::new();
    for kernel in curvgpu::kernels() {
        let (module, info) = parse(&kernel.shader.source()).unwrap();
        let storage = kernel
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Read(_) | Slot::Write(_)))
            .count() as u32;
        let uniforms = kernel
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Uniform(_)))
            .count() as u32;
        if storage > REQUIRED_LIMITS.max_storage_buffers_per_shader_stage {
            failures.push(format!("{}: {storage} storage buffers", kernel.name()));
        }
        if uniforms > REQUIRED_LIMITS.max_uniform_buffers_per_shader_stage {
            failures.push(format!("{}: {uniforms} uniform blocks", kernel.name()));
        }
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, kernel.entry)),
            &naga::back::PipelineConstants::default(),
        )
        .unwrap();
        let index = module
            .entry_points
            .iter()
            .position(|e| e.name == kernel.entry)
            .unwrap();
        let size = module.entry_points[index].workgroup_size;
        let [x, y, z] = REQUIRED_LIMITS.max_compute_workgroup_size;
        if size[0] > x || size[1] > y || size[2] > z {
            failures.push(format!("{}: workgroup {size:?}", kernel.name()));
        }
        if size.iter().product::<u32>() > REQUIRED_LIMITS.max_compute_invocations_per_workgroup {
            failures.push(format!("{}: {size:?} invocations", kernel.name()));
        }
        let ep = info.get_entry_point(index);
        let gctx = module.to_ctx();
        let shared: u32 = module
            .global_variables
            .iter()
            .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !ep[*h].is_empty())
            .map(|(_, v)| module.types[v.ty].inner.size(gctx))
            .sum();
        if shared > REQUIRED_LIMITS.max_compute_workgroup_storage_size {
            failures.push(format!("{}: {shared} B of workgroup memory", kernel.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The device's own compiler accepts every shader (on the web this is the browser's, which the
/// demo's browser test runs; here wgpu's naga on the test adapter).
#[test]
fn every_shader_compiles_on_the_test_device() {
    let gpu = crate::common::gpu();
    pollster::block_on(curvgpu::shader::check_shaders_async(gpu)).unwrap();
}

/// The read-write variants compile on the device too (the browser test runs this on Tint).
#[test]
fn every_promoted_variant_compiles_on_the_test_device() {
    let gpu = crate::common::gpu();
    pollster::block_on(curvgpu::kernel::check_promoted_async(
        gpu,
        &curvgpu::kernels(),
    ))
    .unwrap();
}
