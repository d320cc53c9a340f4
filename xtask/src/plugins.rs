//! `cargo xtask plugins [--test]`: builds the plugins workspace (`plugins/`) for wasm32-wasip2 in
//! release, and says where the components are.
//!
//! `plugins/` is a separate cargo workspace because it builds for another target; the target is
//! added with rustup first when it is missing. With `--test`, the plugins' unit tests then run
//! natively (on the host's target triple, since `plugins/.cargo/config.toml` makes wasm the
//! default), and clippy checks them with `-D warnings`, for wasm and, with their tests, natively.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cargo, ensure_wasm_target, project_root, run_command};

/// The plugins' target; rustc links components directly for it.
const TARGET: &str = "wasm32-wasip2";

/// Builds every plugin, then tests them when asked.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut test = false;
    for arg in args {
        match arg.as_str() {
            "--test" => test = true,
            other => bail!("unknown argument `{other}` (usage: cargo xtask plugins [--test])"),
        }
    }
    ensure_wasm_target()?;
    let manifest = project_root().join("plugins").join("Cargo.toml");
    let manifest = manifest.to_string_lossy().into_owned();
    eprintln!("==> cargo build --manifest-path {manifest} --release --target {TARGET}");
    run_command(
        "cargo build (plugins)",
        cargo().args([
            "build",
            "--manifest-path",
            &manifest,
            "--workspace",
            "--release",
            "--target",
            TARGET,
        ]),
    )?;
    let components = components()?;
    if components.is_empty() {
        bail!(
            "the build produced no .wasm file in {}",
            out_dir().display()
        );
    }
    println!(
        "plugins: {} components in {}",
        components.len(),
        out_dir().display()
    );
    for component in &components {
        println!("  {}", component.display());
    }
    if test {
        let host = host_triple()?;
        eprintln!("==> cargo test --manifest-path {manifest} --target {host}");
        run_command(
            "cargo test (plugins)",
            cargo().args([
                "test",
                "--manifest-path",
                &manifest,
                "--workspace",
                "--target",
                &host,
            ]),
        )?;
        // The components as built, then the tests too (natively: `testing` exists only there).
        for (target, all_targets) in [(TARGET, false), (host.as_str(), true)] {
            eprintln!("==> cargo clippy --manifest-path {manifest} --target {target}");
            let mut command = cargo();
            command.args(["clippy", "--manifest-path", &manifest, "--workspace"]);
            if all_targets {
                command.arg("--all-targets");
            }
            command.args(["--target", target, "--", "-D", "warnings"]);
            run_command("cargo clippy (plugins)", &mut command)?;
        }
    }
    Ok(())
}

/// Where cargo puts the release components.
fn out_dir() -> PathBuf {
    project_root()
        .join("plugins")
        .join("target")
        .join(TARGET)
        .join("release")
}

/// The `.wasm` files in [`out_dir`], sorted.
fn components() -> Result<Vec<PathBuf>> {
    let dir = out_dir();
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    found.sort();
    Ok(found)
}

/// The target triple of this machine, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .current_dir(project_root())
        .output()
        .context("failed to run `rustc -vV`")?;
    if !output.status.success() {
        bail!("`rustc -vV` failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .context("`rustc -vV` printed no `host:` line")
}
