//! The `qgate` binary: parses the command line and runs one subcommand.
//!
//! Each subcommand lives in its own module with its `Args` and a `run` function; `main` only
//! dispatches and turns an error into one `error: ...` line on stderr and exit status 1.

mod acme;
mod admin;
mod certs;
mod check;
mod ctl;
mod decisions;
mod decode;
mod gateway;
mod keys;
mod logging;
mod metrics;
mod parse;
mod policy_test;
mod reconfig;
mod replay;
mod serve;
mod watch;

use std::{io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};

/// A kdb+/q IPC server whose handlers are sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "qgate", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Show the certificates that `[tls.acme]` keeps: domains, issuer, expiry, next renewal and
    /// the last error, read from its storage directory.
    Acme(AcmeArgs),
    /// Make a development CA, an intermediate, a server certificate and client certificates for
    /// trying TLS and mutual TLS; prints the config lines that use them.
    Certs(certs::Args),
    /// Check a config file without starting the server: prints `FILE: ok`, or the bad key.
    Check(check::Args),
    /// Decode one IPC frame and print its header and value in q syntax.
    Decode(decode::Args),
    /// Make an ed25519 key pair for signing plugins: the private key to FILE (0600), the public
    /// key printed and written to FILE.pub.
    Keygen(keys::KeygenArgs),
    /// Parse free-text q queries and print what a policy sees: the parse tree as q prints it,
    /// and the facts (tables, functions, globals assigned, flags).
    Parse(parse::Args),
    /// List a running server's plugins: version digest, load time, calls, denies, traps.
    Plugins(ctl::PluginsArgs),
    /// Reload a running server's plugin (or every plugin) from its file; returns after the switch.
    Reload(ctl::ReloadArgs),
    /// Run a decision log's recorded messages through a candidate config's chain, offline; prints
    /// each decision that changed, and exits 1 if any did (unless --allow-changes).
    Replay(replay::Args),
    /// Switch a running server's plugin back to the version its last swap replaced.
    Rollback(ctl::RollbackArgs),
    /// Run the server until SIGINT or SIGTERM; SIGHUP reloads every changed plugin.
    Serve(serve::Args),
    /// Sign plugin components with a key from `qgate keygen`: writes COMPONENT.sig beside each.
    Sign(keys::SignArgs),
    /// Run policy tests: each FILE names a plugin chain and lists cases (a session, an event, the
    /// verdict expected); prints a line for each failing case, and exits 1 if any failed.
    Test(policy_test::Args),
    /// List a running server's upstreams: each replica's health, connections, queries in flight
    /// and queued, and its last error.
    Upstreams(ctl::UpstreamsArgs),
}

/// `qgate acme status --config FILE`.
#[derive(Debug, clap::Args)]
struct AcmeArgs {
    /// What to show: `status`.
    #[arg(value_parser = ["status"])]
    what: String,
    /// The config file whose `[tls.acme]` names the storage directory.
    #[arg(long, value_name = "FILE")]
    config: std::path::PathBuf,
}

/// Prints `qgate acme status`.
fn acme_status(args: &AcmeArgs) -> anyhow::Result<()> {
    let config = qgate_config::Config::load(&args.config)?;
    let text = acme::status(&config)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        // Its exit status has three values (passed, failed, broken file), so it reports itself.
        Command::Test(args) => return policy_test::run(args),
        Command::Replay(args) => return replay::run(args),
        Command::Acme(args) => acme_status(args),
        Command::Certs(args) => certs::run(args),
        Command::Check(args) => check::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Keygen(args) => keys::keygen(args),
        Command::Parse(args) => parse::run(args),
        Command::Plugins(args) => ctl::plugins(args),
        Command::Reload(args) => ctl::reload(args),
        Command::Rollback(args) => ctl::rollback(args),
        Command::Serve(args) => serve::run(args),
        Command::Sign(args) => keys::sign(args),
        Command::Upstreams(args) => ctl::upstreams(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
