//! `cargo xtask tidy`: checks the repository's conventions, also run by `cargo test` as a test.
//!
//! The checks:
//!
//! - every `.rs` file starts with a `//!` comment saying what it is for;
//! - the workspace's internal dependency graph has only the edges that [`ALLOWED_EDGES`] lists,
//!   and no crate depends on an external crate that [`FORBIDDEN_EXTERNAL`] keeps from it;
//! - the reference `config.toml` parses as TOML.
//!
//! Each problem is one message naming the file and the rule it breaks.
//! The dependency edges are read from the manifests, not from `cargo metadata`, so tidy needs no
//! resolved lockfile and runs in a blink.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use toml::{Table, Value};

use crate::project_root;

/// The internal crates each workspace crate may depend on: everything not listed is forbidden.
///
/// This is the table in ARCHITECTURE.md ("Planned"), which follows STYLE.md B3.
/// A new crate, or a new edge, goes into both in the same change, with a note in ARCHITECTURE.md
/// saying why.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("qgate-ipc", &[]),
    // The q parser: sans-I/O, below the host, the SDK and the binary that read its facts.
    ("qgate-q", &[]),
    ("qgate-config", &[]),
    // Reading untrusted files: std and libc only, below every crate that reads a file.
    ("qgate-files", &[]),
    // Message types only (the header, `MessageType`, views), never the codec's internals.
    ("qgate-hooks", &["qgate-ipc"]),
    ("qgate-wit", &[]),
    ("qgate-server", &["qgate-ipc", "qgate-hooks", "qgate-files"]),
    // The host may read message views to hand a guest the shape of a message cheaply, and
    // parses a message's text once for the facts every plugin reads.
    (
        "qgate-host",
        &[
            "qgate-hooks",
            "qgate-wit",
            "qgate-ipc",
            "qgate-files",
            "qgate-q",
        ],
    ),
    // The guest SDK decodes message bodies and encodes replies with the server's own codec, and
    // gives policies the parser's facts and shapes.
    ("qgate-plugin-sdk", &["qgate-ipc", "qgate-q"]),
    // The binary's tests (a dev-dependency) start test upstreams from `qgate-e2e` in-process.
    (
        "qgate",
        &[
            "qgate-config",
            "qgate-server",
            "qgate-host",
            "qgate-hooks",
            "qgate-ipc",
            "qgate-files",
            "qgate-e2e",
            // `qgate parse`: what a policy sees in a query.
            "qgate-q",
            // Gateway mode: `[[upstream]]` to the gateway's options.
            "qgate-gateway",
        ],
    ),
    // qgate in front of kdb+: the server's backend, on the hooks' vocabulary and the codec. Its
    // tests (a dev-dependency) start test upstreams from `qgate-e2e`.
    (
        "qgate-gateway",
        &["qgate-ipc", "qgate-hooks", "qgate-files", "qgate-e2e"],
    ),
    ("qgate-test-support", &["qgate-ipc", "qgate-hooks"]),
    ("qgate-test-plugins", &[]),
    // The e2e package builds test-double servers: `qgate-echo` on the server and its hooks, and
    // the test upstream on the codec (with the server's answers to PyKX's context queries). It
    // must not depend on `qgate` or `qgate-gateway`, whose tests depend on it.
    (
        "qgate-e2e",
        &[
            "qgate-test-support",
            "qgate-test-plugins",
            "qgate-ipc",
            "qgate-server",
            "qgate-hooks",
        ],
    ),
    ("qgate-bench", &["qgate-ipc"]),
    ("xtask", &[]),
];

/// External crates that a workspace crate must not depend on, because the layer it belongs to
/// must not know about what they do (STYLE.md B2, "Layering").
const FORBIDDEN_EXTERNAL: &[(&str, &[&str])] = &[
    // The codec is sans-I/O: no sockets, no async runtime, no TLS, no wasm.
    (
        "qgate-ipc",
        &["tokio", "rustls", "tokio-rustls", "wasmtime"],
    ),
    // The parser is sans-I/O and links into plugins: no runtime, no TLS, no wasm host.
    ("qgate-q", &["tokio", "rustls", "tokio-rustls", "wasmtime"]),
    // The server knows nothing about plugins.
    ("qgate-server", &["wasmtime"]),
    // The gateway knows upstreams, not plugins.
    ("qgate-gateway", &["wasmtime"]),
    // The hooks are plain data and a trait, shared by server and host.
    ("qgate-hooks", &["wasmtime", "tokio-rustls"]),
];

/// The directories whose `.rs` files must start with `//!`.
const SOURCE_DIRS: [&str; 6] = ["crates", "xtask", "tests", "plugins", "fuzz", "bench"];

/// The dependency tables of a manifest, at the top level and under each `[target.'...']`.
const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// Runs every check and prints the outcome.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown argument `{arg}` (usage: cargo xtask tidy)");
    }
    let report = check(&project_root());
    for error in &report.errors {
        eprintln!("tidy: {error}");
    }
    if !report.errors.is_empty() {
        bail!("{} problem(s) found", report.errors.len());
    }
    println!(
        "tidy: ok ({} .rs files, {} workspace manifests, config.toml)",
        report.source_files, report.manifests
    );
    Ok(())
}

/// What the checks found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// One message per problem, naming the file and the rule.
    pub(crate) errors: Vec<String>,
    /// How many `.rs` files were checked.
    pub(crate) source_files: usize,
    /// How many workspace member manifests were checked.
    pub(crate) manifests: usize,
}

/// Runs every check against the repository at `root`.
pub(crate) fn check(root: &Path) -> Report {
    let mut report = Report::default();
    check_file_headers(&mut report, root);
    check_dependencies(&mut report, root);
    check_config(&mut report, root);
    report
}

/// Every `.rs` file under [`SOURCE_DIRS`] starts with a `//!` line.
fn check_file_headers(report: &mut Report, root: &Path) {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect_rust_files(report, &root.join(dir), &mut files);
    }
    for file in files {
        report.source_files += 1;
        match fs::read_to_string(&file) {
            Ok(text)
                if text
                    .lines()
                    .next()
                    .is_some_and(|line| line.starts_with("//!")) => {}
            Ok(_) => report.errors.push(format!(
                "{}: the first line must be a `//!` comment saying what the file is for \
                 (rule: every .rs file starts with `//!`)",
                relative(root, &file)
            )),
            Err(err) => report
                .errors
                .push(format!("{}: cannot read: {err}", relative(root, &file))),
        }
    }
}

/// Adds the `.rs` files under `dir` to `files`, in a stable order, skipping `target/` and hidden
/// directories. A missing `dir` has no files.
fn collect_rust_files(report: &mut Report, dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            report
                .errors
                .push(format!("{}: cannot list: {err}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_rust_files(report, &path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// A parsed `Cargo.toml`, with the path it came from for messages.
#[derive(Debug)]
struct Manifest {
    path: String,
    table: Table,
}

/// Reads the root manifest and every workspace member's, and checks their dependencies.
fn check_dependencies(report: &mut Report, root: &Path) {
    let Some(root_manifest) = read_manifest(report, root, &root.join("Cargo.toml")) else {
        return;
    };
    let workspace = root_manifest
        .table
        .get("workspace")
        .and_then(Value::as_table);
    let Some(members) = workspace
        .and_then(|w| w.get("members"))
        .and_then(Value::as_array)
    else {
        report.errors.push(
            "Cargo.toml: no `[workspace] members` list \
             (rule: tidy reads the workspace members from it)"
                .to_owned(),
        );
        return;
    };
    let mut manifests = Vec::new();
    for member in members {
        let Some(member) = member.as_str() else {
            report.errors.push(format!(
                "Cargo.toml: workspace member {member:?} is not a string"
            ));
            continue;
        };
        for dir in expand_member(report, root, member) {
            let path = dir.join("Cargo.toml");
            // A member that does not exist yet is cargo's problem to report, not tidy's.
            if path.is_file()
                && let Some(manifest) = read_manifest(report, root, &path)
            {
                manifests.push(manifest);
            }
        }
    }
    report.manifests += manifests.len();
    let empty = Table::new();
    let workspace_dependencies = workspace
        .and_then(|w| w.get("dependencies"))
        .and_then(Value::as_table)
        .unwrap_or(&empty);
    report
        .errors
        .extend(check_edges(workspace_dependencies, &manifests));
}

/// Expands a workspace member path: a plain path, or `dir/*` for every directory in `dir`.
fn expand_member(report: &mut Report, root: &Path, member: &str) -> Vec<PathBuf> {
    if !member.contains(['*', '?', '[']) {
        return vec![root.join(member)];
    }
    let Some(parent) = member
        .strip_suffix("/*")
        .filter(|parent| !parent.contains(['*', '?', '[']))
    else {
        report.errors.push(format!(
            "Cargo.toml: tidy understands only `dir/*` globs in workspace members, not `{member}`"
        ));
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join(parent))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn read_manifest(report: &mut Report, root: &Path, path: &Path) -> Option<Manifest> {
    let name = relative(root, path);
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            report.errors.push(format!("{name}: cannot read: {err}"));
            return None;
        }
    };
    match text.parse::<Table>() {
        Ok(table) => Some(Manifest { path: name, table }),
        Err(err) => {
            report.errors.push(format!("{name}: not valid TOML: {err}"));
            None
        }
    }
}

/// Checks each manifest's dependencies against [`ALLOWED_EDGES`] and [`FORBIDDEN_EXTERNAL`].
///
/// `workspace_dependencies` is the root's `[workspace.dependencies]`, which a `foo.workspace =
/// true` entry refers to (it may rename the package with `package = "..."`).
fn check_edges(workspace_dependencies: &Table, manifests: &[Manifest]) -> Vec<String> {
    let mut errors = Vec::new();
    for manifest in manifests {
        let path = &manifest.path;
        let Some(name) = manifest
            .table
            .get("package")
            .and_then(|package| package.get("name"))
            .and_then(Value::as_str)
        else {
            errors.push(format!(
                "{path}: no `[package] name` (rule: every workspace member is a package)"
            ));
            continue;
        };
        let Some(allowed) = lookup(ALLOWED_EDGES, name) else {
            errors.push(format!(
                "{path}: crate `{name}` is not in tidy's table of allowed dependency edges \
                 (rule: every crate has a place in the architecture); add it to ALLOWED_EDGES in \
                 xtask/src/tidy.rs and to ARCHITECTURE.md"
            ));
            continue;
        };
        let forbidden = lookup(FORBIDDEN_EXTERNAL, name).unwrap_or(&[]);
        for (section, dependency) in dependencies(workspace_dependencies, &manifest.table) {
            if is_internal(&dependency) {
                if lookup(ALLOWED_EDGES, &dependency).is_none() {
                    errors.push(format!(
                        "{path}: [{section}] `{dependency}` is an internal crate that tidy \
                         does not know (rule: every crate has a place in the architecture); add \
                         it to ALLOWED_EDGES in xtask/src/tidy.rs and to ARCHITECTURE.md"
                    ));
                } else if !allowed.contains(&dependency.as_str()) {
                    errors.push(format!(
                        "{path}: [{section}] `{name}` must not depend on `{dependency}` \
                         (rule: allowed dependency edges, ARCHITECTURE.md); if the edge is \
                         right, add it to ALLOWED_EDGES in xtask/src/tidy.rs with a note in \
                         ARCHITECTURE.md"
                    ));
                }
            } else if forbidden.contains(&dependency.as_str()) {
                errors.push(format!(
                    "{path}: [{section}] `{name}` must not depend on `{dependency}` \
                     (rule: forbidden external dependencies, ARCHITECTURE.md)"
                ));
            }
        }
    }
    errors
}

/// The package names a manifest depends on, each with the table that names it.
fn dependencies(workspace_dependencies: &Table, manifest: &Table) -> Vec<(String, String)> {
    let mut tables: Vec<(String, &Table)> = Vec::new();
    for section in DEPENDENCY_TABLES {
        if let Some(table) = manifest.get(section).and_then(Value::as_table) {
            tables.push((section.to_owned(), table));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(Value::as_table) {
        for (target, target_table) in targets {
            for section in DEPENDENCY_TABLES {
                if let Some(table) = target_table.get(section).and_then(Value::as_table) {
                    tables.push((format!("target.'{target}'.{section}"), table));
                }
            }
        }
    }
    let mut found = Vec::new();
    for (section, table) in tables {
        for (key, spec) in table {
            found.push((
                section.clone(),
                package_name(workspace_dependencies, key, spec),
            ));
        }
    }
    found
}

/// The package a dependency entry names: its `package` field, else the workspace entry's
/// `package` field when it inherits one, else its key.
fn package_name(workspace_dependencies: &Table, key: &str, spec: &Value) -> String {
    let renamed = |spec: &Value| {
        spec.get("package")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(package) = renamed(spec) {
        return package;
    }
    let inherited = spec.get("workspace").and_then(Value::as_bool) == Some(true);
    if inherited && let Some(package) = workspace_dependencies.get(key).and_then(renamed) {
        return package;
    }
    key.to_owned()
}

/// Whether `package` is one of this project's crates.
fn is_internal(package: &str) -> bool {
    package == "qgate" || package.starts_with("qgate-") || package == "xtask"
}

fn lookup<'a>(table: &[(&str, &'a [&'a str])], name: &str) -> Option<&'a [&'a str]> {
    table
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, list)| *list)
}

/// The reference `config.toml` at the root parses as TOML.
///
/// The config crate will check it against the schema; until then, at least it never stops
/// parsing.
fn check_config(report: &mut Report, root: &Path) {
    let path = root.join("config.toml");
    match fs::read_to_string(&path) {
        Ok(text) => {
            if let Err(err) = text.parse::<Table>() {
                report.errors.push(format!(
                    "config.toml: does not parse as TOML (rule: the reference config always \
                     parses): {err}"
                ));
            }
        }
        Err(err) => report.errors.push(format!(
            "config.toml: cannot read (rule: the repository has a reference config.toml): {err}"
        )),
    }
}

/// `path` relative to `root`, for messages.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the edges of one crate whose manifest is `manifest`, against a workspace whose
    /// `[workspace.dependencies]` is `workspace`, and compares the messages' rules.
    fn check(workspace: &str, manifest: &str, expect: &[&str]) {
        let workspace: Table = workspace.parse().unwrap();
        let manifest = Manifest {
            path: "crates/x/Cargo.toml".to_owned(),
            table: manifest.parse().unwrap(),
        };
        let errors = check_edges(&workspace, &[manifest]);
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (error, expect) in errors.iter().zip(expect) {
            assert!(error.starts_with("crates/x/Cargo.toml: "), "{error}");
            assert!(error.contains(expect), "expected `{expect}` in: {error}");
        }
    }

    const WORKSPACE: &str = r#"
        qgate-ipc = { path = "crates/ipc" }
        qgate-hooks = { path = "crates/hooks" }
        ipc = { path = "crates/ipc", package = "qgate-ipc" }
        tokio = "1"
    "#;

    #[test]
    fn allowed_edge_passes() {
        let manifest = r#"
            [package]
            name = "qgate-server"
            [dependencies]
            qgate-ipc.workspace = true
            qgate-hooks = { path = "../hooks" }
            tokio.workspace = true
        "#;
        check(WORKSPACE, manifest, &[]);
    }

    #[test]
    fn forbidden_edge_fails() {
        let manifest = r#"
            [package]
            name = "qgate-ipc"
            [dev-dependencies]
            qgate-hooks.workspace = true
        "#;
        check(
            WORKSPACE,
            manifest,
            &["[dev-dependencies] `qgate-ipc` must not depend on `qgate-hooks`"],
        );
    }

    #[test]
    fn renamed_dependency_is_its_package() {
        let manifest = r#"
            [package]
            name = "qgate-config"
            [dependencies]
            ipc.workspace = true
            [target.'cfg(unix)'.build-dependencies]
            codec = { path = "../ipc", package = "qgate-ipc" }
        "#;
        check(
            WORKSPACE,
            manifest,
            &[
                "[dependencies] `qgate-config` must not depend on `qgate-ipc`",
                "[target.'cfg(unix)'.build-dependencies] `qgate-config` must not depend on \
                 `qgate-ipc`",
            ],
        );
    }

    #[test]
    fn forbidden_external_fails() {
        let manifest = r#"
            [package]
            name = "qgate-ipc"
            [dependencies]
            tokio.workspace = true
            memchr = "2"
        "#;
        check(
            WORKSPACE,
            manifest,
            &["`qgate-ipc` must not depend on `tokio` (rule: forbidden external"],
        );
    }

    #[test]
    fn file_headers() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("crates/a/src/lib.rs", "//! Documented.\n");
        write("crates/a/src/bare.rs", "fn main() {}\n//! Too late.\n");
        write("crates/a/target/debug/generated.rs", "fn skipped() {}\n");
        write("fuzz/.hidden/skipped.rs", "");
        write("tests/empty.rs", "");
        let mut report = Report::default();
        check_file_headers(&mut report, &root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(report.source_files, 3);
        assert_eq!(report.errors.len(), 2, "{:#?}", report.errors);
        assert!(report.errors[0].starts_with("crates/a/src/bare.rs: "));
        assert!(report.errors[1].starts_with("tests/empty.rs: "));
    }

    #[test]
    fn unknown_crates_fail() {
        check(
            WORKSPACE,
            "[package]\nname = \"qgate-new\"",
            &["add it to ALLOWED_EDGES"],
        );
        let manifest = r#"
            [package]
            name = "qgate"
            [dependencies]
            qgate-new = { path = "../new" }
            xtask = { path = "../../xtask" }
        "#;
        check(
            WORKSPACE,
            manifest,
            &[
                "`qgate-new` is an internal crate that tidy does not know",
                "`qgate` must not depend on `xtask`",
            ],
        );
    }

    /// No chain of allowed edges leads from a crate back to itself: a cycle would let two crates
    /// each build on the other (cargo allows it through dev-dependencies), and the layers would
    /// no longer read top to bottom.
    #[test]
    fn allowed_edges_have_no_cycle() {
        fn visit<'a>(name: &'a str, path: &mut Vec<&'a str>) {
            if let Some(start) = path.iter().position(|&seen| seen == name) {
                panic!("ALLOWED_EDGES has a cycle: {}", path[start..].join(" -> "));
            }
            path.push(name);
            for &dependency in lookup(ALLOWED_EDGES, name).unwrap_or(&[]) {
                visit(dependency, path);
            }
            path.pop();
        }
        for &(name, _) in ALLOWED_EDGES {
            visit(name, &mut Vec::new());
        }
    }
}

/// The repository as it is obeys every tidy rule.
#[test]
fn tidy() {
    let report = check(&project_root());
    assert!(
        report.errors.is_empty(),
        "tidy found problems:\n{}",
        report.errors.join("\n")
    );
}
