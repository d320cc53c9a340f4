//! `cargo xtask run [ARGS...]`: builds qgate in release mode and runs it with the reference config.
//!
//! It is `cargo run --release -p qgate -- serve --config config.toml ARGS...` from the repository
//! root, so extra arguments go to `qgate serve` and override the file (`-p 6000`, `-U
//! passwords.txt`, `--log-json`). The server runs in the foreground until Ctrl-C.

use std::process::ExitCode;

use crate::cargo;

/// Runs the server, and exits with its exit status.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut command = cargo();
    command
        .args(["run", "--release", "--package", "qgate", "--"])
        .args(["serve", "--config", "config.toml"])
        .args(args);
    eprintln!(
        "==> cargo run --release -p qgate -- serve --config config.toml {}",
        args.join(" ")
    );
    match command.status() {
        // Ctrl-C reaches qgate and cargo alike; qgate exits 0 after draining, and so does this.
        Ok(status) => status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(error) => {
            eprintln!("xtask run: error: failed to start `cargo run`: {error}");
            ExitCode::FAILURE
        }
    }
}
