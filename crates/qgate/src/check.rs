//! `qgate check FILE`: validates a config file without starting the server.
//!
//! It checks what `qgate serve` would check at start, without binding a port: the schema (every
//! key known, every value valid), the log filter directive, and that the password file, if any,
//! can be read.

use std::{
    fs,
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow};
use qgate_config::Config;

use crate::logging;

/// `qgate check FILE`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file to check.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Checks the file, printing `FILE: ok` when it is valid.
///
/// # Errors
///
/// The first problem found, naming the file and the dotted path of the bad key.
pub(crate) fn run(args: &Args) -> Result<()> {
    let file = args.file.display();
    let config = Config::load(&args.file)?;
    logging::filter(&config.log.level).map_err(|error| anyhow!("{file}: log.level: {error}"))?;
    if let Some(password_file) = &config.auth.password_file {
        fs::File::open(password_file).map_err(|error| {
            anyhow!(
                "{file}: auth.password_file: cannot read {}: {error}",
                password_file.display()
            )
        })?;
    }
    writeln!(io::stdout(), "{file}: ok").context("cannot write to stdout")
}
