//! `cargo xtask run`: runs qgate.
//!
//! The server does not exist yet, so for now this says so, points at what does exist, and exits
//! with status 2. The server work replaces this module's body.

use std::process::ExitCode;

/// Explains that the server is not built yet and how to use the `decode` subcommand instead.
pub(crate) fn run(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        eprintln!("xtask run: ignoring arguments {args:?}");
    }
    eprintln!(
        "\
The qgate server is not built yet: it arrives with the server work.

What exists today is the IPC codec and `qgate decode`, which decodes a kdb+ IPC frame given in hex
and prints the message in q syntax (add `--reencode` to check that it encodes back to the same
bytes):

    cargo run -p qgate -- decode --hex <frame> [--reencode]

For example:

    cargo run -p qgate -- decode --hex 010000000d000000fa01000000 --reencode

Run every test with `cargo xtask test`."
    );
    ExitCode::from(2)
}
