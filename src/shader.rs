//! The shader registry: every WGSL file under `shaders/`, `include_str!`-ed once, as a typed
//! [`Shader`] handle, and the composition of a shader's source.
//!
//! WGSL has no `#include`: a shader names the shared snippets it needs as handles, and
//! [`Shader::source`] concatenates them ahead of its text, so each snippet exists in exactly
//! one file. A mistyped path fails to compile (`include_str!`), so does a mistyped snippet.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One WGSL file under `shaders/` and the snippets it is prefixed with.
#[derive(Debug)]
pub struct Shader {
    /// Path under `shaders/`, e.g. `diag/sophia.wgsl`.
    pub path: &'static str,
    /// The file's own text.
    pub code: &'static str,
    /// Snippets prepended (transitively, each once, in order).
    pub needs: &'static [&'static Shader],
}

macro_rules! shaders {
    ($($(#[$doc:meta])* $name:ident = $path:literal $(needs $($need:ident),+)?;)+) => {
        $(
            $(#[$doc])*
            pub static $name: Shader = Shader {
                path: $path,
                code: include_str!(concat!("../shaders/", $path)),
                needs: &[$($(&$need),+)?],
            };
        )+
        /// Every shader the crate ships.
        pub static ALL: &[&Shader] = &[$(&$name),+];
    };
}

shaders! {
    /// Grid geometry of elementwise kernels (snippet).
    GRID = "common/grid.wgsl";
    /// NaN/inf tests that survive fast-math compilers (snippet).
    FLOAT = "common/float.wgsl";
    /// Philox4x32-10 (snippet).
    PHILOX = "common/philox.wgsl";
    /// Workgroup tree reductions (snippet).
    WORKGROUP_REDUCE = "common/workgroup_reduce.wgsl" needs GRID;
    /// Σx, Σx², Σxy, max|x| left on the device.
    REDUCE = "common/reduce.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// Random vectors from (seed, offset).
    RNG = "common/rng.wgsl" needs GRID, PHILOX;
    /// The first non-finite element.
    FINITE = "common/finite.wgsl" needs GRID, FLOAT;
    /// Copies, fills, y += α·x.
    VECTOR = "common/vector.wgsl" needs GRID;
    /// The roofline's copy and FMA kernels.
    BENCH_ROOFLINE = "bench/roofline.wgsl" needs GRID;
    /// SophiaG as five single-operation kernels (the fused step's baseline).
    BENCH_SOPHIAG_UNFUSED = "bench/sophiag_unfused.wgsl" needs GRID;
    /// SophiaG and SophiaH steps and refreshes.
    SOPHIA = "diag/sophia.wgsl" needs GRID, FLOAT;
    /// AdaHessian's step and spatial averaging.
    ADAHESSIAN = "diag/adahessian.wgsl" needs GRID;
    /// AdamW's step.
    ADAMW = "diag/adamw.wgsl" needs GRID;
    /// Hutchinson's diagonal estimator.
    HUTCHINSON = "diag/hutchinson.wgsl" needs GRID;
    /// Dense, CSR and Poisson operators.
    KRYLOV_OPERATORS = "krylov/operators.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// Conjugate gradient's passes.
    CG = "krylov/cg.wgsl" needs GRID, WORKGROUP_REDUCE, FLOAT;
    /// The spectrum tools' vector kernels.
    KRYLOV_VECTORS = "krylov/vectors.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// Power iteration's passes.
    KRYLOV_POWER = "krylov/power.wgsl" needs WORKGROUP_REDUCE, FLOAT;
    /// Tiled GEMM.
    GEMM = "linalg/gemm.wgsl";
    /// Blocked Cholesky and triangular inverse.
    CHOLESKY = "linalg/cholesky.wgsl" needs FLOAT;
    /// Cyclic Jacobi eigen-solver.
    JACOBI = "linalg/jacobi.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// Ground costs, dense or on the fly (snippet with bindings).
    OT_COST = "ot/cost.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// Log-domain Sinkhorn passes.
    SINKHORN = "ot/sinkhorn.wgsl" needs OT_COST;
    /// Plans, their top-k and marginals.
    OT_PLAN = "ot/plan.wgsl" needs OT_COST;
    /// SNS's sparse Hessian.
    SNS = "ot/sns.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// M-FAC's window products.
    MFAC = "mfac/mfac.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// MKOR's rank-1 refresh and step.
    MKOR = "mkor/mkor.wgsl" needs GRID, WORKGROUP_REDUCE, FLOAT;
    /// K-FAC's factor statistics, damping and clip.
    KFAC_FACTORS = "kfac/factors.wgsl" needs GRID, WORKGROUP_REDUCE;
    /// The toy MLP's passes.
    TOY_MLP = "toy/mlp.wgsl" needs GRID, WORKGROUP_REDUCE, PHILOX;
}

impl Shader {
    /// The full WGSL source: its snippets (each once, dependencies first), then its own text,
    /// each part headed by a `// ---- path` line.
    pub fn source(&'static self) -> String {
        let mut order: Vec<&'static Shader> = Vec::new();
        fn visit(s: &'static Shader, order: &mut Vec<&'static Shader>) {
            if order.iter().any(|o| std::ptr::eq(*o, s)) {
                return;
            }
            for need in s.needs {
                visit(need, order);
            }
            order.push(s);
        }
        visit(self, &mut order);
        let mut out = String::new();
        for s in order {
            out.push_str("// ---- ");
            out.push_str(s.path);
            out.push('\n');
            out.push_str(s.code);
            out.push('\n');
        }
        out
    }

    /// [`Shader::source`] with the read-only storage declarations of the bindings in `mask`
    /// (bit i: binding i) declared `read_write`: the variant a dispatch uses when a view it
    /// reads shares a buffer with one it writes. wgpu allows one buffer in several bindings of
    /// a dispatch only when every one of them is writable; the shader still only reads it.
    pub fn source_promoted(&'static self, mask: u32) -> String {
        let source = self.source();
        if mask == 0 {
            return source;
        }
        let mut out = String::with_capacity(source.len() + 64);
        for line in source.lines() {
            match declared_binding(line) {
                Some(b) if b < 32 && mask & (1 << b) != 0 => {
                    out.push_str(&line.replacen(READ_ONLY, READ_WRITE, 1));
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}

const READ_ONLY: &str = "var<storage, read>";
const READ_WRITE: &str = "var<storage, read_write>";

/// The binding number a one-line read-only storage declaration declares.
fn declared_binding(line: &str) -> Option<u32> {
    if !line.contains(READ_ONLY) {
        return None;
    }
    let rest = &line[line.find("@binding(")? + "@binding(".len()..];
    rest[..rest.find(')')?].trim().parse().ok()
}

/// Which file a line of [`Shader::source`]'s text comes from: (path, 1-based line in it).
fn origin(composed: &str, line: u32) -> Option<(&str, usize)> {
    let mut at = None;
    for (k, text) in composed.lines().enumerate().take(line as usize) {
        if let Some(path) = text.strip_prefix("// ---- ") {
            at = Some((path, k + 1));
        }
    }
    at.map(|(path, header)| (path, line as usize - header))
}

/// The shader module of `shader` with the bindings in `mask` promoted to read-write, built once
/// per device.
pub(crate) fn module(gpu: &Gpu, shader: &'static Shader, mask: u32) -> Result<wgpu::ShaderModule> {
    if let Some(m) = gpu.caches()?.modules.get(&(shader.path, mask)) {
        return Ok(m.clone());
    }
    let code = shader.source_promoted(mask);
    let module = gpu
        .scoped("shader module", || {
            gpu.device()
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.path),
                    source: wgpu::ShaderSource::Wgsl(code.into()),
                })
        })
        .map_err(|e| Error::Shader {
            name: shader.path.into(),
            message: e.to_string(),
        })?;
    gpu.caches()?
        .modules
        .insert((shader.path, mask), module.clone());
    Ok(module)
}

/// Compiles every registered shader on `gpu`'s device and returns the compiler's errors as one
/// [`Error::Shader`] (each error with its file and line). A browser reports shader errors only
/// asynchronously, so on the web a broken shader otherwise shows up later as an "invalid
/// pipeline" without the reason; and the browser's compiler (Tint in Chrome) is stricter than
/// naga in places (uniformity analysis, literal ranges). Natively each shader is already
/// checked when first used.
pub async fn check_shaders_async(gpu: &Gpu) -> Result<()> {
    let mut errors = Vec::new();
    for &file in ALL {
        let module = module(gpu, file, 0)?;
        let info = module.get_compilation_info().await;
        let mut composed = None;
        for m in info.messages {
            if m.message_type != wgpu::CompilationMessageType::Error {
                continue;
            }
            let composed = composed.get_or_insert_with(|| file.source());
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

#[cfg(test)]
mod tests {
    use super::{declared_binding, origin, SOPHIA};

    #[test]
    fn origin_maps_a_composed_line_to_its_file() {
        let composed = "// ---- a.wgsl\nfn a() {}\n\n// ---- b.wgsl\nfn b() {}\nfn c() {}\n";
        assert_eq!(origin(composed, 2), Some(("a.wgsl", 1)));
        assert_eq!(origin(composed, 3), Some(("a.wgsl", 2)));
        assert_eq!(origin(composed, 6), Some(("b.wgsl", 2)));
        assert_eq!(origin("fn a() {}\n", 1), None);
    }

    #[test]
    fn promotion_rewrites_only_the_masked_read_only_declarations() {
        let line = "@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;";
        assert_eq!(declared_binding(line), Some(2));
        assert_eq!(
            declared_binding("@group(0) @binding(1) var<storage, read_write> t: array<f32>;"),
            None
        );
        let promoted = SOPHIA.source_promoted(1 << 2);
        assert!(promoted.contains("@binding(2) var<storage, read_write> grad4"));
        assert!(promoted.contains("@binding(4) var<storage, read> h4"));
        assert_eq!(SOPHIA.source_promoted(0), SOPHIA.source());
    }
}
