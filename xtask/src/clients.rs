//! `cargo xtask clients`: qgate against real q clients (PyKX, qPython, aiokdb, node-q), installed
//! by this command itself from the package registries.
//!
//! 1. Builds `qgate` and the test doubles of package `qgate-e2e`: the echo server `qgate-echo` and
//!    the kdb+-like test upstream `qgate-upstream`.
//! 2. Makes sure each client environment exists and matches its pinned requirements:
//!    two Python venvs under `target/clients/` (qPython 2.x needs a numpy that PyKX cannot use),
//!    rebuilt when their requirements file changes, and `npm ci` in `tests/clients/node`.
//! 3. Runs each suite (pytest in each venv, `node --test`) with the binaries' paths in
//!    `QGATE_BIN`, `QGATE_ECHO_BIN` and `QGATE_UPSTREAM_BIN`, and PyKX in unlicensed mode.
//!
//! Every suite runs even when an earlier one failed; the command fails if any did.
//! `cargo xtask clients SUITE...` runs only the named suites.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root, run_command};

/// Where the client tests live, relative to the repository root.
const CLIENTS_DIR: &str = "tests/clients";

/// One suite of client tests.
struct Suite {
    /// The name on the command line and in the summary.
    name: &'static str,
    /// How it runs.
    kind: SuiteKind,
}

enum SuiteKind {
    /// pytest in a venv of its own.
    Python {
        /// The pinned requirements, in `tests/clients/python/`.
        requirements: &'static str,
        /// pytest's arguments: files and directories, relative to the repository root.
        pytest_args: &'static [&'static str],
    },
    /// `node --test` in `tests/clients/node`, after `npm ci`.
    Node,
}

const SUITES: &[Suite] = &[
    // PyKX and aiokdb share a venv; so do the raw-socket tests (compressed requests, 1000
    // connections, hostile inputs), which use aiokdb as their well-behaved client, and the
    // gateway's tests, which also run aiokdb's own server as an upstream.
    Suite {
        name: "pykx-aiokdb",
        kind: SuiteKind::Python {
            requirements: "requirements-pykx-aiokdb.txt",
            pytest_args: &[
                "tests/clients/python",
                "--ignore=tests/clients/python/test_qpython.py",
                "--ignore=tests/clients/python/test_gateway_qpython.py",
            ],
        },
    },
    // qPython against qgate alone and through its gateway mode.
    Suite {
        name: "qpython",
        kind: SuiteKind::Python {
            requirements: "requirements-qpython.txt",
            pytest_args: &[
                "tests/clients/python/test_qpython.py",
                "tests/clients/python/test_gateway_qpython.py",
            ],
        },
    },
    Suite {
        name: "node",
        kind: SuiteKind::Node,
    },
];

/// Builds, installs what is missing, runs the suites and prints a summary.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let selected = select(args)?;
    let started = Instant::now();
    let root = project_root();

    eprintln!("==> cargo build -p qgate -p qgate-e2e --bins");
    run_command(
        "cargo build -p qgate -p qgate-e2e --bins",
        cargo().args(["build", "-p", "qgate", "-p", "qgate-e2e", "--bins"]),
    )?;
    let target = target_dir(&root);
    let bins = Binaries {
        qgate: target.join("debug").join("qgate"),
        echo: target.join("debug").join("qgate-echo"),
        upstream: target.join("debug").join("qgate-upstream"),
    };

    let mut results = Vec::new();
    for suite in selected {
        let suite_started = Instant::now();
        eprintln!("==> client suite `{}`", suite.name);
        let outcome = match &suite.kind {
            SuiteKind::Python {
                requirements,
                pytest_args,
            } => run_python(&root, &target, &bins, suite.name, requirements, pytest_args),
            SuiteKind::Node => run_node(&root, &bins),
        };
        if let Err(error) = &outcome {
            eprintln!("==> client suite `{}` failed: {error:#}", suite.name);
        }
        results.push((suite.name, outcome.is_ok(), suite_started.elapsed()));
    }

    eprintln!("==> client suites:");
    for (name, ok, elapsed) in &results {
        let status = if *ok { "ok" } else { "FAILED" };
        eprintln!("    {name:<12} {status:<6} {:.1}s", elapsed.as_secs_f64());
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, _)| *name)
        .collect();
    eprintln!("==> clients took {:.1}s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("client suites failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The suites named on the command line, or all of them.
fn select(args: &[String]) -> Result<Vec<&'static Suite>> {
    if args.is_empty() {
        return Ok(SUITES.iter().collect());
    }
    args.iter()
        .map(|arg| {
            SUITES
                .iter()
                .find(|suite| suite.name == arg.as_str())
                .with_context(|| {
                    let names: Vec<&str> = SUITES.iter().map(|suite| suite.name).collect();
                    format!(
                        "unknown suite `{arg}` (usage: cargo xtask clients [SUITE...]; suites: {})",
                        names.join(", ")
                    )
                })
        })
        .collect()
}

/// The paths of the servers under test, handed to the suites.
struct Binaries {
    qgate: PathBuf,
    echo: PathBuf,
    upstream: PathBuf,
}

impl Binaries {
    fn apply(&self, command: &mut Command) {
        command
            .env("QGATE_BIN", &self.qgate)
            .env("QGATE_ECHO_BIN", &self.echo)
            .env("QGATE_UPSTREAM_BIN", &self.upstream);
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` at the root.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Makes the suite's venv match its requirements, then runs pytest in it.
fn run_python(
    root: &Path,
    target: &Path,
    bins: &Binaries,
    name: &str,
    requirements: &str,
    pytest_args: &[&str],
) -> Result<()> {
    let requirements = root.join(CLIENTS_DIR).join("python").join(requirements);
    let venv = target.join("clients").join(format!("venv-{name}"));
    ensure_venv(&venv, &requirements)?;
    let python = venv.join("bin").join("python");
    let mut command = Command::new(&python);
    command
        .current_dir(root)
        // tests/clients/python/pytest.ini bounds each test's time and keeps caches out.
        .args(["-m", "pytest"])
        .args(pytest_args)
        // PyKX without a q licence: an IPC client only, which is all these tests need.
        .env("PYKX_UNLICENSED", "true")
        // Keep `__pycache__` out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    bins.apply(&mut command);
    run_command(&format!("pytest ({name})"), &mut command)
}

/// The file inside a venv that records what it was built from: the interpreter's version and the
/// requirements file's text. A venv whose record differs is rebuilt.
const VENV_STAMP: &str = "qgate-requirements.txt";

fn ensure_venv(venv: &Path, requirements: &Path) -> Result<()> {
    let python = env::var("QGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let version = Command::new(&python)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run `{python} --version`; is Python 3 installed?"))?;
    let wanted = format!(
        "# {}\n{}",
        String::from_utf8_lossy(&version.stdout).trim(),
        fs::read_to_string(requirements)
            .with_context(|| format!("cannot read {}", requirements.display()))?
    );
    let stamp = venv.join(VENV_STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        eprintln!("==> {} is up to date", venv.display());
        return Ok(());
    }
    if venv.exists() {
        eprintln!("==> {} is stale: rebuilding it", venv.display());
        fs::remove_dir_all(venv).with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    let created = create_venv(&python, venv, requirements);
    if created.is_err() {
        // A half-built venv would look usable next time: leave nothing behind.
        let _ = fs::remove_dir_all(venv);
        return created;
    }
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))
}

fn create_venv(python: &str, venv: &Path, requirements: &Path) -> Result<()> {
    eprintln!("==> {python} -m venv {}", venv.display());
    run_command(
        &format!("{python} -m venv"),
        Command::new(python).arg("-m").arg("venv").arg(venv),
    )?;
    eprintln!("==> pip install -r {}", requirements.display());
    run_command(
        "pip install",
        Command::new(venv.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(requirements),
    )
}

/// Runs `npm ci` when `node_modules` does not match the lock file, then `node --test`.
fn run_node(root: &Path, bins: &Binaries) -> Result<()> {
    let dir = root.join(CLIENTS_DIR).join("node");
    let lock = fs::read_to_string(dir.join("package-lock.json"))
        .context("cannot read tests/clients/node/package-lock.json")?;
    let stamp = dir.join("node_modules").join(".qgate-package-lock.json");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == lock) {
        eprintln!("==> tests/clients/node/node_modules is up to date");
    } else {
        eprintln!("==> npm ci (tests/clients/node)");
        run_command(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
        fs::write(&stamp, &lock).with_context(|| format!("cannot write {}", stamp.display()))?;
    }
    let mut command = Command::new("node");
    command
        .current_dir(root)
        .args(["--test", "--test-timeout=120000"])
        .arg(format!("{CLIENTS_DIR}/node/"));
    bins.apply(&mut command);
    run_command("node --test", &mut command)
}
