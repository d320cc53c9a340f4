//! `cargo xtask bench [--quick]`: runs the codec benchmarks.
//!
//! Kept in its own module so that the benchmark work can replace it.

use anyhow::{Result, bail};

use crate::{cargo, run_command};

/// Runs `cargo bench -p qgate-ipc --bench codec`, passing `--quick` through to criterion.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other => bail!("unknown argument `{other}` (usage: cargo xtask bench [--quick])"),
        }
    }
    let mut command = cargo();
    command.args(["bench", "-p", "qgate-ipc", "--bench", "codec"]);
    if quick {
        command.args(["--", "--quick"]);
    }
    eprintln!(
        "==> cargo bench -p qgate-ipc --bench codec{}",
        if quick { " -- --quick" } else { "" }
    );
    run_command("cargo bench -p qgate-ipc --bench codec", &mut command)
}
