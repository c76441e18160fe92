//! Issue #6: every blocking path is native-only and has an async twin the browser uses.
//!
//! Reads every file under `src/` and finds each `pub` function that only exists natively:
//! one gated by `#[cfg(not(target_arch = "wasm32"))]` on itself (doc comments and other
//! attributes may sit between), on the `impl` block or inline module around it, or on the
//! `mod` declaration of its file. Each must have a `pub async fn NAME_async` in the same file
//! that is not gated itself, unless an allow-list below says why not. Same file, not merely
//! somewhere in the crate: `step_async` on one optimizer must not excuse `step` on another.
//!
//! The lists must stay true: an entry that no longer matches a twinless gated function fails
//! the test too, so they shrink as twins land.

use std::collections::BTreeSet;
use std::path::Path;

/// Blocking functions without a twin on purpose: (file under `src/`, name, why).
const NO_TWIN: &[(&str, &str, &str)] = &[
    (
        "gpu.rs",
        "wait",
        "on the web there is nothing to wait on: `Gpu::read_async` yields to the browser's \
         event loop until the work before it is done",
    ),
    (
        "gpu.rs",
        "instance",
        "it blocks on nothing: natively the process-wide instance, on the web a new one per call \
         (gated only because the two differ)",
    ),
    (
        "gpu.rs",
        "enumerate_adapters",
        "browsers expose one adapter through `requestAdapter` and cannot enumerate; \
         `Gpu::new_async` and `Gpu::from_adapter` are the web's way in",
    ),
];

/// Modules compiled only natively as a whole: (file or folder under `src/`, why).
const NATIVE_MODULES: &[(&str, &str)] = &[
    (
        "bench/solvers.rs",
        "times whole solver runs against f64 CPU references on host threads: a native \
         comparison by nature (the browser's kernel table is `bench::kernel_table_async`)",
    ),
    (
        "bench/transport.rs",
        "times Sinkhorn/SNS against f64 CPU transport references on host threads, native \
         by nature like `bench::solvers`",
    ),
];

/// A native-only `pub` function: file under `src/`, line (1-based), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Gated {
    file: String,
    line: usize,
    name: String,
}

/// What the scan found: the native-only `pub` fns, and the `(file, NAME)` of every
/// `pub async fn NAME_async` that exists on every target.
#[derive(Debug, Default)]
struct Scan {
    gated: Vec<Gated>,
    twins: BTreeSet<(String, String)>,
}

const NATIVE_ONLY: &str = "not(target_arch = \"wasm32\")";

/// Whether the item starting at `lines[at]` carries the native-only gate among the attributes
/// and comments directly above it.
fn gated_by_attributes(lines: &[&str], at: usize) -> bool {
    let mut j = at;
    let mut in_attribute = false;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim();
        if in_attribute || t.starts_with("#[") {
            // A multi-line attribute is read bottom-up until its `#[`.
            in_attribute = !t.starts_with("#[");
            if t.contains("cfg(") && t.contains(NATIVE_ONLY) {
                return true;
            }
        } else if t.ends_with(")]") {
            in_attribute = true;
            if t.contains(NATIVE_ONLY) {
                return true;
            }
        } else if !t.starts_with("//") {
            return false;
        }
    }
    false
}

/// `(name, is_async)` when `t` (a trimmed line) declares a `pub` fn of any visibility scope.
fn pub_fn(t: &str) -> Option<(String, bool)> {
    let rest = t.strip_prefix("pub")?;
    let rest = match rest.strip_prefix('(') {
        Some(scoped) => &scoped[scoped.find(')')? + 1..],
        None => rest,
    };
    let mut rest = rest.strip_prefix(' ')?.trim_start();
    let mut is_async = false;
    loop {
        if let Some(r) = rest.strip_prefix("async ") {
            is_async = true;
            rest = r;
        } else if let Some(r) = rest
            .strip_prefix("const ")
            .or_else(|| rest.strip_prefix("unsafe "))
        {
            rest = r;
        } else {
            break;
        }
    }
    let name: String = rest
        .strip_prefix("fn ")?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some((name, is_async))
}

/// The line without its comment and the insides of its string and char literals, so that
/// braces can be counted (good enough for this crate's sources; raw strings are not handled).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            // A char literal such as '{' (a lifetime 'a has no closing quote two chars on).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if let Some(escaped) = rest.strip_prefix('\\') {
                    if let Some(end) = escaped.find('\'') {
                        for _ in 0..end + 2 {
                            chars.next();
                        }
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The module declared by `mod NAME;` in `file`: its file and its folder, under `src/`.
fn module_paths(file: &str, name: &str) -> [String; 2] {
    let (parent, leaf) = file.rsplit_once('/').unwrap_or(("", file));
    let base = match leaf {
        "lib.rs" | "main.rs" | "mod.rs" => parent.to_string(),
        _ => {
            let stem = leaf.trim_end_matches(".rs");
            if parent.is_empty() {
                stem.to_string()
            } else {
                format!("{parent}/{stem}")
            }
        }
    };
    let dir = if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    };
    [format!("{dir}.rs"), format!("{dir}/")]
}

/// Native-only modules declared out of line: `(file, folder)` pairs under `src/`.
fn gated_modules(sources: &[(String, String)]) -> Vec<[String; 2]> {
    let mut modules = Vec::new();
    for (file, source) in sources {
        let lines: Vec<&str> = source.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let decl = t
                .strip_prefix("pub ")
                .or_else(|| t.strip_prefix("pub(crate) "))
                .unwrap_or(t);
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                if gated_by_attributes(&lines, i) {
                    modules.push(module_paths(file, name.trim()));
                }
            }
        }
    }
    modules
}

/// Scans `(path under src/, source)` pairs.
fn scan(sources: &[(String, String)]) -> Scan {
    let modules = gated_modules(sources);
    let mut result = Scan::default();
    for (file, source) in sources {
        let whole_file = modules
            .iter()
            .any(|[f, dir]| file == f || file.starts_with(dir.as_str()));
        let lines: Vec<&str> = source.lines().collect();
        let mut depth = 0i64;
        // Native-only `impl` blocks and inline modules: (depth outside, opened yet).
        let mut regions: Vec<(i64, bool)> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let code = code_of(line);
            let t = code.trim();
            let attributes = gated_by_attributes(&lines, i);
            if let Some((name, is_async)) = pub_fn(t) {
                if whole_file || attributes || !regions.is_empty() {
                    result.gated.push(Gated {
                        file: file.clone(),
                        line: i + 1,
                        name,
                    });
                } else if let (true, Some(stem)) = (is_async, name.strip_suffix("_async")) {
                    result.twins.insert((file.clone(), stem.to_string()));
                }
            }
            let block = t.starts_with("impl")
                || t.starts_with("mod ")
                || t.starts_with("pub mod ")
                || t.starts_with("pub(crate) mod ");
            if attributes && block && !t.ends_with(';') {
                regions.push((depth, false));
            }
            depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
            while let Some(&mut (outside, ref mut opened)) = regions.last_mut() {
                if depth > outside {
                    *opened = true;
                    break;
                } else if *opened {
                    regions.pop();
                } else {
                    break;
                }
            }
        }
    }
    result
}

/// Every `.rs` file under `dir`, as (path relative to `root` with `/`, source).
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let relative = path
                .strip_prefix(root)
                .expect("under src/")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, source));
        }
    }
}

/// The complaints about `scan` against the allow-lists, empty when all is well.
fn complaints(scan: &Scan) -> Vec<String> {
    let allowed_module = |file: &str| {
        NATIVE_MODULES
            .iter()
            .any(|(m, _)| file == *m || file.starts_with(&format!("{m}/")))
    };
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for g in &scan.gated {
        let key = (g.file.as_str(), g.name.as_str());
        if scan.twins.contains(&(g.file.clone(), g.name.clone())) {
            continue;
        }
        if NO_TWIN.iter().any(|(f, n, _)| (*f, *n) == key) {
            used.insert(key);
            continue;
        }
        if allowed_module(&g.file) {
            continue;
        }
        out.push(format!(
            "src/{}:{}: `{}` is native-only but src/{} has no `pub async fn {}_async` \
             (write the async form as the one implementation and make `{}` its \
             `pollster::block_on` wrapper, or allow-list it with a reason)",
            g.file, g.line, g.name, g.file, g.name, g.name
        ));
    }
    for (f, n) in NO_TWIN.iter().map(|(f, n, _)| (*f, *n)) {
        if !used.contains(&(f, n)) {
            out.push(format!(
                "allow-list entry src/{f} `{n}` is stale: no twinless native-only fn by that name"
            ));
        }
    }
    for (m, _) in NATIVE_MODULES {
        if !scan.gated.iter().any(|g| g.file == *m) {
            out.push(format!(
                "allow-listed module src/{m} has no native-only pub fn (or is no longer gated)"
            ));
        }
    }
    out
}

#[test]
fn every_native_only_pub_fn_has_an_async_twin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    read_tree(&root, &root, &mut sources);
    assert!(
        sources.iter().any(|(f, _)| f == "lib.rs"),
        "did not find src/lib.rs under {}",
        root.display()
    );
    let found = scan(&sources);
    // The scan must see the gates it is about, or it proves nothing.
    for known in ["read", "wait", "step", "loss_grad", "check_inverses"] {
        assert!(
            found.gated.iter().any(|g| g.name == known),
            "the scan missed the native-only `{known}`: {:?}",
            found.gated
        );
    }
    let problems = complaints(&found);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The scanner on small made-up sources: it must flag what it is for.
#[test]
fn the_scanner_flags_twinless_gates_in_every_form() {
    let gate = "#[cfg(not(target_arch = \"wasm32\"))]";
    let source = |s: &str| s.replace("GATE", gate);
    let sources = vec![
        (
            "lib.rs".to_string(),
            source("GATE\npub mod native;\npub mod x;\nGATE\nmod hidden;\n"),
        ),
        (
            "x.rs".to_string(),
            source(
                "/// Docs.\nGATE\n/// More docs.\n#[inline]\npub fn twinned() {}\n\
                 pub async fn twinned_async() {}\n\
                 GATE\npub(crate) fn lonely<'a>(x: &'a str) -> char { '{' }\n\
                 pub fn ungated() {}\n\
                 GATE\nimpl X {\n    pub fn in_impl(&self) { let s = \"}\"; }\n}\n\
                 pub fn after_impl() {}\n\
                 GATE\npub async fn gated_async() {}\n\
                 GATE\npub fn only_gated_twin() {}\nGATE\npub async fn only_gated_twin_async() {}\n",
            ),
        ),
        ("native.rs".to_string(), "pub fn in_module() {}\n".into()),
        ("hidden/mod.rs".to_string(), "pub fn deep() {}\n".into()),
    ];
    let found = scan(&sources);
    let names: Vec<&str> = found.gated.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "twinned",
            "lonely",
            "in_impl",
            "gated_async",
            "only_gated_twin",
            "only_gated_twin_async",
            "in_module",
            "deep",
        ]
    );
    // A gated async fn is no twin: the browser could not call it.
    let twins: Vec<_> = found.twins.iter().cloned().collect();
    assert_eq!(twins, [("x.rs".to_string(), "twinned".to_string())]);
}
