//! `cargo xtask tidy`: checks the repository's conventions, also run by `cargo test` as a test.
//!
//! The checks:
//!
//! - every `.rs` file starts with a `//!` comment saying what it is for;
//! - no `.rs` file marks a test `#[ignore]` or `#[should_panic]` (a test runs and can fail, or it
//!   is not there; a panic is tested by its message);
//! - the workspace's internal dependency graph has only the edges that [`ALLOWED_EDGES`] lists,
//!   and no crate depends on an external crate that [`FORBIDDEN_EXTERNAL`] keeps from it;
//! - a change to `wit/` comes with a new package version: the hash of its `.wit` files is stored
//!   in `wit/README.md` with the version it was taken at, as rust-analyzer stores the hash of its
//!   LSP extensions beside their documentation, and `cargo xtask tidy --update-wit-hash` records
//!   it again once the version is bumped;
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
    // Prometheus metrics: prometheus-client only, below the server, the host and the binary that
    // record into it.
    ("qgate-metrics", &[]),
    // Certificates from an ACME CA: instant-acme, rustls and rcgen only. The server answers its
    // challenges and the binary wires the two together, so it needs neither.
    ("qgate-acme", &[]),
    (
        "qgate-server",
        &["qgate-ipc", "qgate-hooks", "qgate-files", "qgate-metrics"],
    ),
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
            // Plugin calls and swaps, counted per plugin version.
            "qgate-metrics",
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
            // The `/metrics` listener, and the upstreams' state read at each scrape.
            "qgate-metrics",
            // `[tls.acme]`: the certificate manager, wired to the server's challenge answers.
            "qgate-acme",
        ],
    ),
    // qgate in front of kdb+: the server's backend, on the hooks' vocabulary and the codec. Its
    // tests (a dev-dependency) start test upstreams from `qgate-e2e`.
    (
        "qgate-gateway",
        &[
            "qgate-ipc",
            "qgate-hooks",
            "qgate-files",
            "qgate-e2e",
            // Each replica's query durations and errors, read at each scrape.
            "qgate-metrics",
        ],
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
            // The upstream's HTTP decodes `GET /?expr` as kdb+ does.
            "qgate-q",
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

/// The attributes no test may carry, as the identifiers that name them.
///
/// Spelt in two pieces, so that tidy's own source does not carry them.
const FORBIDDEN_ATTRIBUTES: [&str; 2] = [concat!("ign", "ore"), concat!("should", "_panic")];

/// The file in `wit/` that holds the stored hash of the `.wit` files, on a line of its own.
const WIT_HASH_FILE: &str = "wit/README.md";

/// What starts the stored hash's line in [`WIT_HASH_FILE`].
const WIT_HASH_PREFIX: &str = "wit hash: ";

/// The command that records the hash of `wit/` again.
const UPDATE_WIT_HASH: &str = "cargo xtask tidy --update-wit-hash";

/// Runs every check and prints the outcome, or, with `--update-wit-hash`, records the hash of
/// `wit/` after a version bump.
pub(crate) fn run(args: &[String]) -> Result<()> {
    match args {
        [] => {}
        [flag] if flag == "--update-wit-hash" => {
            let line = update_wit_hash(&project_root())?;
            println!("tidy: {WIT_HASH_FILE}: {line}");
            return Ok(());
        }
        [arg, ..] => {
            bail!("unknown argument `{arg}` (usage: cargo xtask tidy [--update-wit-hash])")
        }
    }
    let report = check(&project_root());
    for error in &report.errors {
        eprintln!("tidy: {error}");
    }
    if !report.errors.is_empty() {
        bail!("{} problem(s) found", report.errors.len());
    }
    println!(
        "tidy: ok ({} .rs files, {} workspace manifests, wit/, config.toml)",
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
    check_source_files(&mut report, root);
    check_dependencies(&mut report, root);
    check_wit(&mut report, root);
    check_config(&mut report, root);
    report
}

/// Every `.rs` file under [`SOURCE_DIRS`] starts with a `//!` line, and carries none of the
/// [`FORBIDDEN_ATTRIBUTES`].
fn check_source_files(report: &mut Report, root: &Path) {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect_rust_files(report, &root.join(dir), &mut files);
    }
    for file in files {
        report.source_files += 1;
        let name = relative(root, &file);
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                report.errors.push(format!("{name}: cannot read: {err}"));
                continue;
            }
        };
        if !text
            .lines()
            .next()
            .is_some_and(|line| line.starts_with("//!"))
        {
            report.errors.push(format!(
                "{name}: the first line must be a `//!` comment saying what the file is for \
                 (rule: every .rs file starts with `//!`)"
            ));
        }
        for (number, line) in text.lines().enumerate() {
            if let Some(attribute) = forbidden_attribute(line) {
                report.errors.push(format!(
                    "{name}:{}: `#[{attribute}]` is not allowed (rule: no #[{}] or #[{}]): a \
                     test runs and can fail, or it is deleted; test a panic by its message, with \
                     `std::panic::catch_unwind` or a function that returns the error",
                    number + 1,
                    FORBIDDEN_ATTRIBUTES[0],
                    FORBIDDEN_ATTRIBUTES[1],
                ));
            }
        }
    }
}

/// The forbidden attribute that `line` carries, if it is an attribute (`#[...]` or
/// `#![...]`, `cfg_attr` included) naming one of [`FORBIDDEN_ATTRIBUTES`] as a whole word.
fn forbidden_attribute(line: &str) -> Option<&'static str> {
    let line = line.trim_start();
    let attribute = line
        .strip_prefix("#[")
        .or_else(|| line.strip_prefix("#!["))?;
    let words = attribute.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    words
        .filter_map(|word| FORBIDDEN_ATTRIBUTES.iter().find(|name| **name == word))
        .copied()
        .next()
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

/// What `wit/` holds: the hash of its `.wit` files and the package they declare.
#[derive(Debug, PartialEq, Eq)]
struct Wit {
    /// FNV-1a (64 bits) over each `.wit` file's path and text, in path order, carriage returns
    /// left out: stable across platforms and Rust versions, unlike `std`'s hashers.
    hash: u64,
    /// `qgate:plugin@0.1.0`, from the `package` line of the files directly in `wit/`.
    package: String,
}

impl Wit {
    /// The line that records it in [`WIT_HASH_FILE`].
    fn line(&self) -> String {
        format!("{WIT_HASH_PREFIX}{:016x} ({})", self.hash, self.package)
    }

    /// The version part of the package, `0.1.0`.
    fn version(&self) -> &str {
        self.package
            .rsplit_once('@')
            .map_or(self.package.as_str(), |(_, version)| version)
    }
}

/// Reads `wit/` under `root`.
fn read_wit(root: &Path) -> Result<Wit, String> {
    let dir = root.join("wit");
    let mut files = Vec::new();
    collect_files(&dir, "wit", &mut files).map_err(|err| format!("wit/: cannot list: {err}"))?;
    if files.is_empty() {
        return Err("wit/: no .wit files (rule: wit/ holds the plugin contract)".to_owned());
    }
    let mut hash = FNV_OFFSET;
    let mut package = None;
    for file in &files {
        let name = relative(root, file);
        let text = fs::read_to_string(file).map_err(|err| format!("{name}: cannot read: {err}"))?;
        hash = fnv1a(hash, name.as_bytes());
        hash = fnv1a(hash, &[0]);
        hash = fnv1a(hash, text.replace('\r', "").as_bytes());
        hash = fnv1a(hash, &[0]);
        if file.parent() == Some(dir.as_path()) && package.is_none() {
            package = text.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("package ")
                    .and_then(|rest| rest.trim().strip_suffix(';'))
                    .map(|name| name.trim().to_owned())
            });
        }
    }
    let package = package.ok_or_else(|| {
        "wit/: no `package NAME@VERSION;` line in its .wit files (rule: the plugin contract is a \
         versioned package)"
            .to_owned()
    })?;
    Ok(Wit { hash, package })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Adds the files under `dir` whose names end in `.extension` to `files`, in path order.
fn collect_files(dir: &Path, extension: &str, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut paths = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_files(&path, extension, files)?;
        } else if path.extension().is_some_and(|ext| ext == extension) {
            files.push(path);
        }
    }
    Ok(())
}

/// The recorded hash and package, from the [`WIT_HASH_PREFIX`] line of [`WIT_HASH_FILE`].
fn stored_wit(root: &Path) -> Result<Wit, String> {
    let text = fs::read_to_string(root.join(WIT_HASH_FILE))
        .map_err(|err| format!("{WIT_HASH_FILE}: cannot read: {err}"))?;
    let missing = || {
        format!(
            "{WIT_HASH_FILE}: no `{WIT_HASH_PREFIX}HASH (PACKAGE)` line (rule: a change to wit/ \
             comes with a new package version); record it with `{UPDATE_WIT_HASH}`"
        )
    };
    let line = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(WIT_HASH_PREFIX))
        .ok_or_else(missing)?;
    let (hash, package) = line.split_once(' ').ok_or_else(missing)?;
    let hash = u64::from_str_radix(hash, 16).map_err(|_| missing())?;
    let package = package
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(missing)?;
    Ok(Wit {
        hash,
        package: package.to_owned(),
    })
}

/// A change to `wit/` comes with a new package version: its hash is the stored one, or its
/// version is not, and then the new hash must be recorded.
fn check_wit(report: &mut Report, root: &Path) {
    if let Err(error) = wit_problem(root) {
        report.errors.push(error);
    }
}

fn wit_problem(root: &Path) -> Result<(), String> {
    let now = read_wit(root)?;
    let stored = stored_wit(root)?;
    if now.hash == stored.hash {
        return Ok(());
    }
    if now.package == stored.package {
        return Err(format!(
            "wit/ changed, but its package is still `{}` (rule: a change to wit/ comes with a \
             new package version): bump `package {}` in wit/plugin.wit (the last number for an \
             addition, the middle one for a change that breaks plugins), then record the new \
             hash with `{UPDATE_WIT_HASH}`",
            now.package, now.package
        ));
    }
    Err(format!(
        "wit/ is now `{}`, but {WIT_HASH_FILE} records the hash of `{}` (rule: a change to wit/ \
         comes with a new package version): record the new hash with `{UPDATE_WIT_HASH}`",
        now.package, stored.package
    ))
}

/// Records the hash of `wit/` in [`WIT_HASH_FILE`], replacing the stored line or adding one at
/// the end; refuses when `wit/` changed but its version did not. Returns the line written.
fn update_wit_hash(root: &Path) -> Result<String> {
    let now = read_wit(root).map_err(anyhow::Error::msg)?;
    let path = root.join(WIT_HASH_FILE);
    let text = fs::read_to_string(&path)?;
    if let Ok(stored) = stored_wit(root)
        && stored.hash != now.hash
        && stored.version() == now.version()
    {
        bail!(
            "wit/ changed, but its package is still `{}`: bump `package {}` in wit/plugin.wit \
             first, then run this again",
            now.package,
            now.package
        );
    }
    let line = now.line();
    let mut replaced = false;
    let mut lines = text
        .lines()
        .map(|existing| {
            if existing.trim().starts_with(WIT_HASH_PREFIX) && !replaced {
                replaced = true;
                line.clone()
            } else {
                existing.to_owned()
            }
        })
        .collect::<Vec<_>>();
    if !replaced {
        lines.extend([String::new(), line.clone()]);
    }
    fs::write(&path, lines.join("\n") + "\n")?;
    Ok(line)
}

/// The reference `config.toml` at the root parses as TOML.
///
/// The config crate checks it against the schema (its tests load it); tidy checks that it parses,
/// in every `cargo test`, including runs that leave the config crate out.
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
        check_source_files(&mut report, &root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(report.source_files, 3);
        assert_eq!(report.errors.len(), 2, "{:#?}", report.errors);
        assert!(report.errors[0].starts_with("crates/a/src/bare.rs: "));
        assert!(report.errors[1].starts_with("tests/empty.rs: "));
    }

    /// A scratch repository root for `test`, removed when dropped.
    struct Root(PathBuf);

    impl Root {
        fn new(test: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("xtask-tidy-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            Self(root)
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn forbidden_attributes_are_found_as_attributes_only() {
        let [ignore, should_panic] = FORBIDDEN_ATTRIBUTES;
        let root = Root::new("attributes");
        root.write(
            "crates/a/src/lib.rs",
            &format!(
                "//! Documented.\n#[test]\n#[{ignore}]\nfn a() {{}}\n    #[{should_panic}(expected \
                 = \"x\")]\n#[cfg_attr(miri, {ignore})]\n#[{ignore} = \"slow\"]\n"
            ),
        );
        root.write(
            "plugins/p/src/lib.rs",
            &format!(
                "//! Documented.\n#[allow(clippy::{ignore}d_unit_patterns)]\n// #[{ignore}] in a \
                 comment\nconst A: &str = \"#[{ignore}]\";\n#[clap({ignore}_case = true)]\n"
            ),
        );
        let mut report = Report::default();
        check_source_files(&mut report, &root.0);
        let lines = report
            .errors
            .iter()
            .map(|error| error.split(": ").next().unwrap_or_default())
            .collect::<Vec<_>>();
        assert_eq!(
            lines,
            [
                "crates/a/src/lib.rs:3",
                "crates/a/src/lib.rs:5",
                "crates/a/src/lib.rs:6",
                "crates/a/src/lib.rs:7"
            ],
            "{:#?}",
            report.errors
        );
        assert!(report.errors[1].contains(&format!("`#[{should_panic}]` is not allowed")));
    }

    #[test]
    fn a_wit_change_needs_a_new_version_and_its_hash_recorded() {
        let root = Root::new("wit");
        let wit = |version: &str, body: &str| {
            root.write(
                "wit/plugin.wit",
                &format!("package qgate:plugin@{version};\n\ninterface types {{{body}}}\n"),
            );
        };
        wit("0.1.0", "");
        root.write(WIT_HASH_FILE, "# WIT\n\nThe contract.\n");
        let problem = wit_problem(&root.0).unwrap_err();
        assert!(problem.contains(UPDATE_WIT_HASH), "{problem}");
        let line = update_wit_hash(&root.0).unwrap();
        assert!(line.ends_with(" (qgate:plugin@0.1.0)"), "{line}");
        assert_eq!(wit_problem(&root.0), Ok(()));
        let text = fs::read_to_string(root.0.join(WIT_HASH_FILE)).unwrap();
        assert!(
            text.starts_with("# WIT\n\nThe contract.\n\nwit hash: "),
            "{text}"
        );

        // A change without a new version fails, and cannot be recorded.
        wit("0.1.0", " type x = u8; ");
        let problem = wit_problem(&root.0).unwrap_err();
        assert!(
            problem.contains("bump `package qgate:plugin@0.1.0` in wit/plugin.wit"),
            "{problem}"
        );
        assert!(problem.contains(UPDATE_WIT_HASH), "{problem}");
        let refused = update_wit_hash(&root.0).unwrap_err().to_string();
        assert!(refused.contains("bump"), "{refused}");
        // Line endings are not a change.
        wit("0.1.0", "");
        let text = fs::read_to_string(root.0.join("wit/plugin.wit")).unwrap();
        root.write("wit/plugin.wit", &text.replace('\n', "\r\n"));
        assert_eq!(wit_problem(&root.0), Ok(()));

        // With a new version, the new hash is to be recorded; then all is well.
        wit("0.2.0", " type x = u8; ");
        let problem = wit_problem(&root.0).unwrap_err();
        assert!(
            problem.contains("records the hash of `qgate:plugin@0.1.0`"),
            "{problem}"
        );
        update_wit_hash(&root.0).unwrap();
        assert_eq!(wit_problem(&root.0), Ok(()));
        let text = fs::read_to_string(root.0.join(WIT_HASH_FILE)).unwrap();
        assert_eq!(text.matches(WIT_HASH_PREFIX).count(), 1, "{text}");
        assert!(text.contains("(qgate:plugin@0.2.0)"), "{text}");
        // A file in a subdirectory (a vendored dependency) is part of the contract too.
        root.write("wit/deps/io.wit", "package wasi:io@0.2.0;\n");
        assert!(wit_problem(&root.0).is_err());
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
