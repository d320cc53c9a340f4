//! Project automation, in Rust instead of scripts: `cargo xtask <command>`.
//!
//! `cargo xtask` is an alias (in `.cargo/config.toml`) for `cargo run --package xtask --`, so every
//! command here works on a fresh machine with nothing but the toolchain that `rust-toolchain.toml`
//! names.
//! Commands shell out to cargo and rustup; they do not link the project's crates.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool: printing is its interface"
)]

mod bench;
mod clients;
mod fuzz;
mod plugins;
mod run;
mod test;
mod tidy;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  run [--gateway] [ARGS...]    run qgate with config.toml (release build); ARGS go to `qgate serve`;
                               --gateway runs it in front of a second qgate serving demo-api
  test                         run every check in CI's order: fmt, clippy, test, policy
                               tests, bench smoke, doc, clients
  clients [SUITE...]           run the real-client tests (PyKX, aiokdb, qPython, node-q),
                               installing the clients under target/clients/ first
                               (suites: pykx-aiokdb, qpython, node; default all)
  tidy [--update-wit-hash]     check the repository's conventions (also runs in `cargo test`);
                               --update-wit-hash records the hash of wit/ after a version bump
  bench [--quick]              run the codec benchmarks, then the server harness
  fuzz [--seconds N] [TARGET...]
                               fuzz the decoder with cargo-fuzz on nightly
                               (targets default to `frame` and `decompress`, N to 60)
  plugins [--test]             build the plugins (plugins/) for wasm32-wasip2 in release and list
                               the components; --test also runs their unit tests natively and
                               clippy on them
  help                         show this text
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let result = match command.as_str() {
        // `run` exits with the server's own exit status.
        "run" => return run::run(rest),
        "test" => test::run(rest),
        "clients" => clients::run(rest),
        "tidy" => tidy::run(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "plugins" => plugins::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {command}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: the parent of this crate's directory.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// A `cargo` command run from the repository root.
///
/// Uses the cargo that runs xtask (the `CARGO` variable) so that every step uses the toolchain
/// that `rust-toolchain.toml` pinned, and falls back to `cargo` on the `PATH`.
pub(crate) fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command.current_dir(project_root());
    command
}

/// Runs `command` to completion, failing with `what` in the message unless it exits with 0.
pub(crate) fn run_command(what: &str, command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Makes sure the `wasm32-wasip2` target is installed for the pinned toolchain.
///
/// Plugins build for this target. `rust-toolchain.toml` lists it, but rustup only installs listed
/// targets along with a toolchain, so a machine that already had the toolchain may lack it.
pub(crate) fn ensure_wasm_target() -> Result<()> {
    const TARGET: &str = "wasm32-wasip2";
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(project_root())
        .output()
        .context("failed to run `rustup target list --installed`; is rustup installed?")?;
    if !output.status.success() {
        bail!(
            "`rustup target list --installed` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    eprintln!("==> rustup target add {TARGET}");
    run_command(
        &format!("rustup target add {TARGET}"),
        Command::new("rustup")
            .args(["target", "add", TARGET])
            .current_dir(project_root()),
    )
}
