//! Logging: a `tracing` subscriber that writes to stderr, as human-readable text or JSON lines.
//!
//! stdout is kept for what `qgate` says on purpose (such as the `qgate listening on ...` line that
//! scripts and tests read); every log line goes to stderr.

use std::{
    env,
    io::{self, IsTerminal as _},
};

use anyhow::{Context as _, Result, anyhow};
use qgate_config::{Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// The environment variable that, when set, replaces `log.level`.
const RUST_LOG: &str = "RUST_LOG";

/// Installs the global subscriber for the process: `log.format` decides text or JSON, and
/// `RUST_LOG`, when set, overrides `log.level`.
///
/// # Errors
///
/// If the filter directive is invalid, or a subscriber is already installed.
pub(crate) fn init(log: &Log) -> Result<()> {
    let filter = match env::var(RUST_LOG) {
        Ok(directive) if !directive.trim().is_empty() => {
            filter(&directive).with_context(|| format!("{RUST_LOG} is not a valid log filter"))?
        }
        _ => filter(&log.level).context("log.level is not a valid log filter")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let installed = match log.format {
        LogFormat::Json => builder.json().try_init(),
        // Colours only for a person at a terminal, not in files or a test's captured output.
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
    };
    installed.map_err(|error| anyhow!("cannot install the logger: {error}"))
}

/// Parses a `tracing` filter directive such as `info` or `warn,qgate_server=debug`.
///
/// # Errors
///
/// If the directive does not parse, with the parser's reason.
pub(crate) fn filter(directive: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(directive).map_err(|error| anyhow!("{directive:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for good in ["info", "warn,qgate_server=debug", "qgate=trace", "off"] {
            assert!(filter(good).is_ok(), "{good}");
        }
        for bad in ["qgate=loud", "[{"] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }
}
