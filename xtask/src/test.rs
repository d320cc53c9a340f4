//! `cargo xtask test`: runs every check that exists, in CI's order, stopping at the first failure.
//!
//! First Debian's `pebble` (Let's Encrypt's test CA, for the ACME tests), `chromium` and
//! `libnss3-tools` (for the browser test) when they are missing, and the plugins (built for
//! wasm32-wasip2, with their native unit tests and clippy), which the tests load; then the cargo
//! steps cheapest first, so a formatting slip fails in seconds rather than after a build: fmt,
//! clippy, test (which includes the tidy test), the walkthrough's policy tests
//! (`qgate test tests/policy/walkthrough.toml`), smoke runs of the benchmark harness and its
//! hot-swap scenario, doc;
//! then the real-client tests (`cargo xtask clients`), which install PyKX, qPython, aiokdb and
//! node-q on first use.
//! `.ci/run` is this command and nothing else, so CI and a developer run the same thing.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cargo, clients, ensure_wasm_target, plugins, run_command};

/// One step: the arguments to cargo and the environment it needs beyond ours.
struct Step {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        args: &["test", "--workspace"],
        env: &[],
    },
    // The walkthrough's policy tests, run by `qgate test` as a user runs them: the debug binary
    // `cargo test` has just built, so nothing is compiled but the plugins it loads.
    Step {
        args: &[
            "run",
            "--quiet",
            "-p",
            "qgate",
            "--",
            "test",
            "tests/policy/walkthrough.toml",
        ],
        env: &[],
    },
    // A few seconds of the benchmark harness on the floor and qgate, alone, with plugins (built
    // by the plugins step above), over TLS and as a gateway in front of a floor, pinned and
    // pooled, and pinned with the entitlements plugin passing and filtering: checks that every
    // scenario still produces a number, not what the numbers are
    // (`cargo xtask bench` measures).
    Step {
        args: &[
            "run",
            "--release",
            "-p",
            "qgate-bench",
            "--",
            "--smoke",
            "--targets",
            "floor,qgate,qgate-echo,qgate-chain,qgate-cedar,qgate-observed,qgate-shadow,qgate-tls,\
             gateway,gateway-pooled,gateway-threads,gateway-entitled,gateway-filtered",
        ],
        env: &[],
    },
    // One round of the hot-swap scenario: qgate serving while a plugin is swapped every 100 ms.
    Step {
        args: &[
            "run",
            "--release",
            "-p",
            "qgate-bench",
            "--",
            "swap",
            "--smoke",
        ],
        env: &[],
    },
    // A short run of the HTTPS scenario: qgate with a plugin answering a GET, and HAProxy
    // terminating TLS in front of a minimal HTTP server (installed on first use).
    Step {
        args: &[
            "run",
            "--release",
            "-p",
            "qgate-bench",
            "--",
            "https",
            "--smoke",
        ],
        env: &[],
    },
    // A short run of the WebSocket scenario: a message through qgate to a plugin, beside a q IPC
    // round trip to the same qgate.
    Step {
        args: &[
            "run",
            "--release",
            "-p",
            "qgate-bench",
            "--",
            "ws",
            "--smoke",
        ],
        env: &[],
    },
    // Broken intra-doc links and bad rustdoc syntax fail the build, as warnings do in clippy.
    Step {
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-Dwarnings")],
    },
];

/// Runs the steps in order.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown argument `{arg}` (usage: cargo xtask test)");
    }
    eprintln!("==> ensure the wasm32-wasip2 target is installed");
    ensure_wasm_target().context("step `ensure the wasm32-wasip2 target` failed")?;
    ensure_pebble().context("step `ensure pebble is installed` failed")?;
    ensure_chromium().context("step `ensure chromium and certutil are installed` failed")?;
    let total = STEPS.len() + 2;
    // First, because the tests need the .wasm files: the host's tests and the reference config
    // (which `qgate check` is tested on) load the built plugins.
    eprintln!("==> cargo xtask plugins --test");
    plugins::run(&["--test".to_owned()]).with_context(|| {
        format!("step 1 of {total} (the plugins: wasm32-wasip2 build, unit tests, clippy) failed")
    })?;
    for (number, step) in STEPS.iter().enumerate() {
        let env: String = step
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value} "))
            .collect();
        let what = format!("{env}cargo {}", step.args.join(" "));
        eprintln!("==> {what}");
        let mut command = cargo();
        command.args(step.args).envs(step.env.iter().copied());
        run_command(&what, &mut command)
            .with_context(|| format!("step {} of {total} failed", number + 2))?;
    }
    eprintln!("==> cargo xtask clients");
    clients::run(&[])
        .with_context(|| format!("step {total} of {total} (the real-client tests) failed"))?;
    eprintln!("==> all steps passed");
    Ok(())
}

/// Installs Debian's `pebble` package (Let's Encrypt's test CA, with `pebble-challtestsrv`) when
/// `/usr/bin/pebble` is missing: the ACME tests (`crates/acme/tests/pebble.rs` and
/// `crates/qgate/tests/cli/acme.rs`) run against it, and fail rather than skip without it.
fn ensure_pebble() -> Result<()> {
    ensure_packages(
        &[("/usr/bin/pebble", "pebble")],
        "the ACME tests run against it",
    )
}

/// Installs Debian's `chromium` and `libnss3-tools` (for `certutil`) when missing: the browser
/// test (`crates/qgate/tests/cli/acme.rs`) loads a page from qgate in headless Chromium, which
/// trusts Pebble's root through an NSS database that `certutil` makes; it fails rather than
/// skips without them.
fn ensure_chromium() -> Result<()> {
    ensure_packages(
        &[
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/certutil", "libnss3-tools"),
        ],
        "the browser test runs them",
    )
}

/// Installs the Debian packages of `wanted` (a file each installs, and the package) whose file is
/// missing; `why` tells a user without root why to install them.
///
/// Needs root, as CI is; elsewhere it says what to run. `apt-get install` is tried first (the
/// package lists may be recent enough), then again after an `apt-get update`; each command is
/// bounded by coreutils' `timeout` to ten minutes, so that a stalled mirror fails the step rather
/// than CI's whole time.
fn ensure_packages(wanted: &[(&str, &str)], why: &str) -> Result<()> {
    const APT_TIMEOUT: &str = "600";
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !root {
        bail!(
            "installing the missing {packages} needs root: run \
             `sudo apt-get install {packages}` ({why})"
        );
    }
    let apt = |args: &[&str]| {
        let what = format!("apt-get {}", args.join(" "));
        eprintln!("==> {what}");
        let mut command = Command::new("timeout");
        command
            .arg(APT_TIMEOUT)
            .arg("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_command(&what, &mut command)
    };
    let install: Vec<&str> = ["install", "-y", "--no-install-recommends"]
        .into_iter()
        .chain(missing.iter().copied())
        .collect();
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    if let Some((file, _)) = wanted.iter().find(|(file, _)| !Path::new(file).exists()) {
        bail!("{file} is still missing after `apt-get install {packages}`");
    }
    Ok(())
}
