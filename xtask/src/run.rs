//! `cargo xtask run [ARGS...]`: builds the plugins and qgate in release mode and serves the
//! reference config, the message-handlers walkthrough, on 127.0.0.1:5000.
//!
//! It is `cargo xtask plugins` (the components config.toml names), then `cargo run --release -p
//! qgate -- serve --config config.toml ARGS...` from the repository root, so extra arguments go to
//! `qgate serve` and override the file (`-p 6000`, `-U passwords.txt`, `--log-json`). The server
//! runs in the foreground until Ctrl-C.

use std::process::ExitCode;

use crate::{cargo, plugins};

/// Runs the server, and exits with its exit status.
pub(crate) fn run(args: &[String]) -> ExitCode {
    eprintln!("==> cargo xtask plugins");
    if let Err(error) = plugins::run(&[]) {
        eprintln!("xtask run: error: building the plugins failed: {error:#}");
        return ExitCode::FAILURE;
    }
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
