//! `qgate check FILE`: validates a config file without starting the server.
//!
//! It checks what `qgate serve` would check at start, without binding a port: the schema (every
//! key known, every value valid, plugin names unique), the log filter directive, that the TLS
//! settings are whole (with kdb+'s `SSL_*` variables), that the password file reads and parses
//! under the rules the server reads it by, that the TLS files can be read, that `[lock] keys` are
//! keys, that every plugin's component file is read as a start reads it (a regular file within
//! its `max_file_bytes`, read within the time limit, so a FIFO or a device at its path is an error
//! rather than a wait) and matches its pin and, in a locked deployment, is pinned or signed, and
//! that every `[[upstream]]` can be set up (its `password_env` is set, its TLS files load), and
//! that the decision log's file can be made (its directory is one, and what is at its path, if
//! anything, a regular file). It does not compile the plugins, does not connect to the
//! upstreams, and creates no file.

use std::{
    fs,
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow};
use qgate_config::Config;
use qgate_host::HostError;

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
    validate(&config, &file.to_string(), Artifacts::Check)?;
    writeln!(io::stdout(), "{file}: ok").context("cannot write to stdout")
}

/// Which plugins' files [`validate`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Artifacts {
    /// Every plugin's, as a start reads them.
    Check,
    /// None: a config reload reads those of the plugins it loads, as it loads them, and a file
    /// that is broken under a plugin whose entry did not change is that plugin's reload's
    /// failure, not the config's.
    Skip,
}

/// Checks what `serve` checks of `config` at start beyond its schema, as the module's `//!`
/// lists, without binding, connecting, compiling or creating anything; errors start with `file`.
///
/// A config reload runs it on the new config before anything changes.
///
/// # Errors
///
/// The first problem found.
pub(crate) fn validate(config: &Config, file: &str, artifacts: Artifacts) -> Result<()> {
    logging::filter(&config.log.level).map_err(|error| anyhow!("{file}: log.level: {error}"))?;
    // As `qgate serve` resolves it, with kdb+'s SSL_* variables where [tls] says nothing.
    if let Some(tls) = config
        .tls
        .resolve(|name| std::env::var(name).ok())
        .map_err(|error| anyhow!("{file}: {error}"))?
    {
        let ca = match &tls.client_auth {
            qgate_config::ResolvedClientAuth::None => None,
            qgate_config::ResolvedClientAuth::Optional(ca)
            | qgate_config::ResolvedClientAuth::Required(ca) => Some(("tls.ca_file", ca)),
        };
        for (key, path) in [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ]
        .into_iter()
        .chain(ca)
        {
            fs::File::open(path).map_err(|error| {
                anyhow!("{file}: {key}: cannot read {}: {error}", path.display())
            })?;
        }
    }
    // The password file under the rules `serve` reads it by (a regular file, a size cap, a
    // read timeout, every line well-formed), so that a FIFO, a directory or `/dev/zero` is
    // refused here too, and never waited on.
    let options = crate::serve::server_options(config, |name| std::env::var(name).ok())
        .map_err(|error| anyhow!("{file}: {error:#}"))?;
    if let Some(password_file) = &options.password_file {
        password_file
            .check()
            .map_err(|error| anyhow!("{file}: auth.password_file: {error:#}"))?;
    }
    // Each plugin's file read as a start reads it (a regular file, within its size cap and the
    // time limit), and checked against its pin and, in a locked deployment, its signature.
    let options =
        crate::serve::host_options(config).map_err(|error| anyhow!("{file}: {error:#}"))?;
    let checked = match artifacts {
        Artifacts::Check => options.plugins.as_slice(),
        Artifacts::Skip => &[],
    };
    for spec in checked {
        qgate_host::check_artifact(spec, &options.lock).map_err(|error| {
            let hint = match &error {
                HostError::Read { error, .. } if error.is_not_found() => {
                    " (the walkthrough's plugins are built by `cargo xtask plugins`)"
                }
                _ => "",
            };
            anyhow!("{file}: plugins: {error}{hint}")
        })?;
    }
    // Upstreams as a start would take them: `password_env` set, TLS files loadable. Nothing is
    // connected: an upstream that is down is not a config error.
    if let Some(gateway) = crate::gateway::gateway_options(config, |name| std::env::var(name).ok())
        .map_err(|error| anyhow!("{file}: {error:#}"))?
    {
        qgate_gateway::Gateway::new(gateway).map_err(|error| anyhow!("{file}: {error}"))?;
    }
    // The decision log's file is opened (and created) at start; here its directory must be one,
    // and an existing file a regular one, without creating anything.
    if let Some(log) = &config.decision_log
        && log.path != std::path::Path::new("-")
    {
        let dir = match log.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !fs::metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
            return Err(anyhow!(
                "{file}: decision_log.path: {} is not a directory, so {} cannot be created",
                dir.display(),
                log.path.display()
            ));
        }
        if let Ok(meta) = fs::metadata(&log.path)
            && !meta.is_file()
        {
            return Err(anyhow!(
                "{file}: decision_log.path: {} is not a regular file",
                log.path.display()
            ));
        }
    }
    Ok(())
}
