//! The shader registry (every WGSL file, `include_str!`-ed once) and the pipeline cache.
//!
//! WGSL has no `#include`: a shader declares the shared snippets it needs in [`SHADERS`] and the
//! registry concatenates them ahead of its text, so each snippet exists in exactly one file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One WGSL file under `shaders/` and the snippets it is prefixed with.
#[derive(Debug)]
pub struct ShaderFile {
    /// Path under `shaders/`, e.g. `diag/sophia.wgsl`.
    pub path: &'static str,
    /// The file's own text.
    pub code: &'static str,
    /// Snippet paths prepended (transitively, each once, in order).
    pub needs: &'static [&'static str],
}

macro_rules! shader {
    ($path:literal $(, $need:literal)* $(,)?) => {
        ShaderFile {
            path: $path,
            code: include_str!(concat!("../shaders/", $path)),
            needs: &[$($need),*],
        }
    };
}

/// Every shader the crate ships.
pub static SHADERS: &[ShaderFile] = &[
    shader!("common/grid.wgsl"),
    shader!("common/float.wgsl"),
    shader!("common/philox.wgsl"),
    shader!("common/workgroup_reduce.wgsl", "common/grid.wgsl"),
    shader!(
        "common/reduce.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!("common/rng.wgsl", "common/grid.wgsl", "common/philox.wgsl"),
    shader!(
        "common/finite.wgsl",
        "common/grid.wgsl",
        "common/float.wgsl"
    ),
    shader!("common/copy.wgsl", "common/grid.wgsl"),
    shader!("bench/roofline.wgsl", "common/grid.wgsl"),
    shader!("bench/sophiag_unfused.wgsl", "common/grid.wgsl"),
    shader!("diag/sophia.wgsl", "common/grid.wgsl", "common/float.wgsl"),
    shader!("diag/adahessian.wgsl", "common/grid.wgsl"),
    shader!("diag/adamw.wgsl", "common/grid.wgsl"),
    shader!("diag/hutchinson.wgsl", "common/grid.wgsl"),
    shader!(
        "krylov/operators.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!(
        "krylov/cg.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!("linalg/gemm.wgsl"),
    shader!(
        "linalg/jacobi.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!(
        "ot/cost.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!("ot/sinkhorn.wgsl", "ot/cost.wgsl"),
    shader!("ot/plan.wgsl", "ot/cost.wgsl"),
    shader!("ot/sns.wgsl", "common/grid.wgsl"),
    shader!(
        "mfac/mfac.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!(
        "mkor/mkor.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl",
        "common/float.wgsl"
    ),
    shader!(
        "kfac/factors.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!("linalg/cholesky.wgsl", "common/float.wgsl"),
    shader!(
        "krylov/vectors.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl"
    ),
    shader!(
        "toy/mlp.wgsl",
        "common/grid.wgsl",
        "common/workgroup_reduce.wgsl",
        "common/philox.wgsl"
    ),
];

fn find(path: &str) -> Option<&'static ShaderFile> {
    SHADERS.iter().find(|s| s.path == path)
}

fn push_with_needs(path: &'static str, seen: &mut Vec<&'static str>) -> Result<()> {
    if seen.contains(&path) {
        return Ok(());
    }
    let file = find(path).ok_or_else(|| Error::Shader {
        name: path.into(),
        message: "not in the shader registry".into(),
    })?;
    for need in file.needs {
        push_with_needs(need, seen)?;
    }
    seen.push(path);
    Ok(())
}

/// The full WGSL source of a registered shader: its snippets, then its own text.
pub fn source(path: &'static str) -> Result<String> {
    let mut order = Vec::new();
    push_with_needs(path, &mut order)?;
    let mut out = String::new();
    for p in order {
        if let Some(f) = find(p) {
            out.push_str(&format!("// ---- {p}\n"));
            out.push_str(f.code);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A compute entry point in a registered shader. Built with [`crate::kernel!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// Path under `shaders/`.
    pub shader: &'static str,
    /// Entry point name.
    pub entry: &'static str,
}

/// `kernel!("diag/sophia.wgsl", "sophiag_step")`: names an entry point in the registry.
#[macro_export]
macro_rules! kernel {
    ($shader:literal, $entry:literal) => {
        $crate::kernel::Kernel {
            shader: $shader,
            entry: $entry,
        }
    };
}

type PipelineKey = (Kernel, Vec<(&'static str, u64)>);

/// Compute pipelines keyed by (shader, entry point, override constants), and shader modules by
/// shader, built once per [`Gpu`].
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

fn poisoned() -> Error {
    Error::Wgpu {
        operation: "pipeline cache",
        message: "a thread panicked while holding the cache lock".into(),
    }
}

/// Which file a line of [`source`]'s text comes from: (path, 1-based line in that file).
fn origin(composed: &str, line: u32) -> Option<(&str, usize)> {
    let mut at = None;
    for (k, text) in composed.lines().enumerate().take(line as usize) {
        if let Some(path) = text.strip_prefix("// ---- ") {
            at = Some((path, k + 1));
        }
    }
    at.map(|(path, header)| (path, line as usize - header))
}

impl Gpu {
    /// Compiles every registered shader on this device and returns the compiler's errors as one
    /// [`Error::Shader`] (each error with its file and line). A browser reports shader errors
    /// only asynchronously, so on the web a broken shader otherwise shows up later as an
    /// "invalid pipeline" without the reason; and the browser's compiler (Tint in Chrome) is
    /// stricter than naga in places (uniformity analysis, literal ranges). Natively each
    /// shader is already checked when first used.
    pub async fn check_shaders_async(&self) -> Result<()> {
        let mut errors = Vec::new();
        for file in SHADERS {
            let module = self.module(file.path)?;
            let info = module.get_compilation_info().await;
            let mut composed = None;
            for m in info.messages {
                if m.message_type != wgpu::CompilationMessageType::Error {
                    continue;
                }
                let composed = match &mut composed {
                    Some(text) => text,
                    None => composed.insert(source(file.path)?),
                };
                let at = m
                    .location
                    .and_then(|l| origin(composed, l.line_number))
                    .map(|(path, line)| format!(" ({path}:{line})"))
                    .unwrap_or_default();
                errors.push(format!("{}{at}: {}", file.path, m.message));
            }
        }
        match errors.first() {
            None => Ok(()),
            Some(first) => Err(Error::Shader {
                name: first.split([' ', ':']).next().unwrap_or_default().into(),
                message: errors.join("\n"),
            }),
        }
    }

    fn module(&self, shader: &'static str) -> Result<wgpu::ShaderModule> {
        let mut modules = self.pipelines.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = modules.get(shader) {
            return Ok(m.clone());
        }
        let code = source(shader)?;
        let module = self
            .scoped("shader module", || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(code.into()),
                    })
            })
            .map_err(|e| Error::Shader {
                name: shader.into(),
                message: e.to_string(),
            })?;
        modules.insert(shader, module.clone());
        Ok(module)
    }

    /// The cached pipeline for `kernel` specialised by `constants` (WGSL `override`s).
    pub fn pipeline(
        &self,
        kernel: Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key: PipelineKey = (
            kernel,
            constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        );
        if let Some(p) = self
            .pipelines
            .pipelines
            .lock()
            .map_err(|_| poisoned())?
            .get(&key)
        {
            return Ok(p.clone());
        }
        let module = self.module(kernel.shader)?;
        let pipeline = self
            .scoped("compute pipeline", || {
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(kernel.entry),
                        layout: None,
                        module: &module,
                        entry_point: Some(kernel.entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants,
                            ..Default::default()
                        },
                        cache: None,
                    })
            })
            .map_err(|e| Error::Shader {
                name: format!("{}::{}", kernel.shader, kernel.entry),
                message: e.to_string(),
            })?;
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .pipelines
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origin_maps_a_composed_line_to_its_file() {
        let composed = "// ---- a.wgsl\nfn a() {}\n\n// ---- b.wgsl\nfn b() {}\nfn c() {}\n";
        assert_eq!(origin(composed, 2), Some(("a.wgsl", 1)));
        assert_eq!(origin(composed, 3), Some(("a.wgsl", 2)));
        assert_eq!(origin(composed, 6), Some(("b.wgsl", 2)));
        assert_eq!(origin("fn a() {}\n", 1), None);
    }
}
