//! What the host's benchmarks share: the components of `plugins/` and a host made of them.

use std::path::Path;

use qgate_host::{HostOptions, PluginHost, PluginSpec};
use serde_json::Value;

/// Plugin `name` from the component `file` of `plugins/` (`cargo xtask plugins` builds them),
/// with `config` as its table.
pub(crate) fn spec(name: &str, file: &str, config: Value) -> PluginSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/target/wasm32-wasip2/release")
        .join(format!("{file}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask plugins`",
        path.display()
    );
    let mut spec = PluginSpec::new(name, path);
    if let Value::Object(config) = config {
        spec.config = config;
    }
    spec
}

/// A host running `specs`, its compiled code cached under `target/`.
pub(crate) fn host(specs: Vec<PluginSpec>) -> PluginHost {
    let mut options = HostOptions::new(specs);
    options.cache_dir =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin-cache"));
    PluginHost::new(options).unwrap_or_else(|e| panic!("{e}"))
}
