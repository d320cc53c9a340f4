//! `cargo xtask fuzz [--seconds N] [TARGET...]`: fuzzes the decoder and the q parser with
//! cargo-fuzz.
//!
//! cargo-fuzz needs a nightly toolchain (libFuzzer and sanitizer flags), so this runs
//! `cargo +nightly fuzz` against the `fuzz/` workspace, which is outside the main workspace for the
//! same reason.
//! cargo-fuzz is installed from crates.io on first use.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{project_root, run_command};

/// The targets fuzzed when none are named: the frame decoder and the decompressor, the two places
/// where a peer's bytes meet the most arithmetic, and the q parser, which reads every free-text
/// query a policy decides on.
const DEFAULT_TARGETS: [&str; 3] = ["frame", "decompress", "q_parse"];

/// How long each target runs by default, in seconds: long enough to shake out shallow bugs on
/// every run, short enough to run before a commit.
const DEFAULT_SECONDS: u64 = 60;

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [TARGET...]";

/// Parses the arguments, installs cargo-fuzz if needed, then fuzzes each target in turn.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let (seconds, targets) = parse_args(args)?;
    let root = project_root();
    if !root.join("fuzz").join("Cargo.toml").is_file() {
        bail!(
            "{} does not exist: there is no fuzz workspace yet",
            root.join("fuzz/Cargo.toml").display()
        );
    }
    ensure_cargo_fuzz()?;
    for target in &targets {
        let what = format!(
            "cargo +nightly fuzz run {target} --fuzz-dir fuzz -- -max_total_time={seconds}"
        );
        eprintln!("==> {what}");
        run_command(
            &what,
            nightly_cargo()
                .args(["fuzz", "run", target, "--fuzz-dir", "fuzz", "--"])
                .arg(format!("-max_total_time={seconds}")),
        )
        .with_context(|| {
            format!(
                "fuzz target `{target}` failed; crashes are saved under fuzz/artifacts/{target}"
            )
        })?;
    }
    Ok(())
}

/// Splits the arguments into the time budget per target and the targets.
fn parse_args(args: &[String]) -> Result<(u64, Vec<String>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args
                .next()
                .with_context(|| format!("`--seconds` needs a value ({USAGE})"))?;
            seconds = parse_seconds(value)?;
        } else if let Some(value) = arg.strip_prefix("--seconds=") {
            seconds = parse_seconds(value)?;
        } else if arg.starts_with('-') {
            bail!("unknown option `{arg}` ({USAGE})");
        } else {
            targets.push(arg.clone());
        }
    }
    if targets.is_empty() {
        targets = DEFAULT_TARGETS
            .iter()
            .map(|target| (*target).to_owned())
            .collect();
    }
    Ok((seconds, targets))
}

fn parse_seconds(value: &str) -> Result<u64> {
    value
        .parse()
        .with_context(|| format!("`--seconds` takes a whole number of seconds, not `{value}`"))
}

/// Installs cargo-fuzz with the nightly toolchain unless `cargo +nightly fuzz --version` works.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return Ok(());
    }
    eprintln!("==> cargo +nightly install cargo-fuzz --locked");
    let mut install = nightly_cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    run_command("cargo +nightly install cargo-fuzz --locked", &mut install).context(
        "could not install cargo-fuzz; \
         is a nightly toolchain installed (`rustup toolchain install nightly`)?",
    )
}

/// `cargo +nightly`, run from the repository root.
///
/// This goes through rustup's `cargo` proxy, not the `CARGO` that runs xtask: only the proxy
/// understands `+nightly`. The variables that pin the workspace's toolchain are removed so that
/// they cannot leak into the nightly build.
fn nightly_cargo() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .current_dir(project_root());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expect: (u64, &[&str])) {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let (seconds, targets) = parse_args(&args).unwrap();
        assert_eq!(
            (
                seconds,
                targets.iter().map(String::as_str).collect::<Vec<_>>()
            ),
            (expect.0, expect.1.to_vec())
        );
    }

    #[test]
    fn args() {
        check(&[], (60, &["frame", "decompress", "q_parse"]));
        check(
            &["--seconds", "5"],
            (5, &["frame", "decompress", "q_parse"]),
        );
        check(&["q_parse"], (60, &["q_parse"]));
        check(&["--seconds=7", "frame"], (7, &["frame"]));
        check(&["decompress", "--seconds", "1"], (1, &["decompress"]));
        assert!(parse_args(&["--seconds".to_owned()]).is_err());
        assert!(parse_args(&["--seconds".to_owned(), "x".to_owned()]).is_err());
        assert!(parse_args(&["--verbose".to_owned()]).is_err());
    }
}
