//! `qgate plugins`, `qgate reload [NAME]`, `qgate rollback NAME` and `qgate upstreams`: commands
//! that ask or act on a running server through its admin socket (see the `admin` module for the
//! protocol).

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use qgate_config::Config;

use crate::{
    admin::{self, PluginRow, Request, Response, SwapResult, UpstreamRow},
    reconfig::{Changes, ConfigReport},
};

/// How long a command waits for the server's answer.
///
/// A reload compiles the new version (tens of milliseconds, seconds for a large component) and
/// runs its `init` (at most its time budget, 1 s or more): a minute covers a reload of every
/// plugin of a long chain on a busy machine, and still ends a command whose server hangs.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How the commands find the server.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The running server's config file: its `admin.socket`, or the default for its port.
    #[arg(long, value_name = "FILE", conflicts_with = "admin_socket")]
    config: Option<PathBuf>,
    /// The admin socket itself.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
}

/// `qgate plugins`.
#[derive(Debug, clap::Args)]
pub(crate) struct PluginsArgs {
    #[command(flatten)]
    target: Target,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// `qgate upstreams`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpstreamsArgs {
    #[command(flatten)]
    target: Target,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// `qgate reload [NAME]`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReloadArgs {
    /// The plugin to reload; every plugin without one.
    #[arg(value_name = "NAME")]
    plugin: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `qgate rollback NAME`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// The plugin to switch back to its previous version.
    #[arg(value_name = "NAME")]
    plugin: String,
    #[command(flatten)]
    target: Target,
}

impl Target {
    fn socket(&self) -> Result<PathBuf> {
        if let Some(path) = &self.admin_socket {
            return Ok(path.clone());
        }
        let config = match &self.config {
            Some(path) => Config::load(path).with_context(|| {
                format!(
                    "cannot find the server's admin socket from {}, so the server was not asked \
                     and nothing changed; fix the file, or pass --admin-socket PATH",
                    path.display()
                )
            })?,
            None => Config::default(),
        };
        admin::socket_path(&config)?.ok_or_else(|| {
            anyhow!(
                "the config listens on port 0 and sets no `admin.socket`, so its server has no \
                 admin socket; set `admin.socket`, or pass --admin-socket"
            )
        })
    }

    fn ask(&self, request: &Request) -> Result<Response> {
        let path = self.socket()?;
        let stream = UnixStream::connect(&path).map_err(|error| {
            let hint = match error.kind() {
                io::ErrorKind::NotFound => {
                    "; is the server running, with plugins, and with this config? (pass its \
                     --config FILE or --admin-socket PATH)"
                }
                io::ErrorKind::ConnectionRefused => {
                    "; the socket is left over from a server that is no longer running"
                }
                io::ErrorKind::PermissionDenied => {
                    "; the admin socket belongs to the user that runs the server: run this \
                     command as that user"
                }
                _ => "",
            };
            anyhow!("cannot reach the server's admin socket {path:?}: {error}{hint}")
        })?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        (&stream)
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot send the request to {path:?}"))?;
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .with_context(|| format!("no answer from {path:?}"))?;
        if answer.is_empty() {
            bail!(
                "the server closed the admin connection without answering; it refuses \
                 connections from other users: run this command as the server's user"
            );
        }
        serde_json::from_str(&answer)
            .with_context(|| format!("the server's answer is not JSON: {answer:?}"))
    }
}

/// Lists the plugins as a table.
///
/// # Errors
///
/// When the server cannot be reached or refuses.
pub(crate) fn plugins(args: &PluginsArgs) -> Result<()> {
    let response = args.target.ask(&Request::Plugins)?;
    let rows = check(response.error, response.plugins)?;
    let header = format!(
        "{:<16} {:<12} {:<24} {:>9} {:>10} {:>8} {:>6}",
        "NAME", "VERSION", "LOADED (UTC)", "LOAD ms", "CALLS", "DENIES", "TRAPS"
    );
    print_rows(&rows, args.json, &header, write_row)
}

/// Prints `rows` as pretty JSON, or as a table under `header`, each row written by `write`.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    header: &str,
    write: fn(&mut io::StdoutLock<'static>, &T) -> io::Result<()>,
) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?;
        return Ok(());
    }
    writeln!(out, "{header}")?;
    for row in rows {
        write(&mut out, row)?;
    }
    Ok(())
}

fn write_row(out: &mut impl io::Write, row: &PluginRow) -> io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<12} {:<24} {:>9.1} {:>10} {:>8} {:>6}",
        row.name,
        row.digest.get(..12).unwrap_or(&row.digest),
        row.loaded_at,
        row.load_ms,
        row.calls,
        row.denies,
        row.traps
    )
}

/// Lists the upstreams as a table, one line a replica.
///
/// # Errors
///
/// When the server cannot be reached, or has no upstreams.
pub(crate) fn upstreams(args: &UpstreamsArgs) -> Result<()> {
    let response = args.target.ask(&Request::Upstreams)?;
    let rows = check(response.error, response.upstreams)?;
    let header = format!(
        "{:<16} {:<10} {:<24} {:<8} {:>5} {:>9} {:>6}  LAST ERROR",
        "UPSTREAM", "MODE", "SERVER", "HEALTH", "CONNS", "IN FLIGHT", "QUEUED"
    );
    print_rows(&rows, args.json, &header, write_upstream)
}

fn write_upstream(out: &mut impl io::Write, row: &UpstreamRow) -> io::Result<()> {
    let mode = match row.pool_size {
        Some(size) => format!("{}({size})", row.mode),
        None => row.mode.clone(),
    };
    for server in &row.servers {
        writeln!(
            out,
            "{:<16} {:<10} {:<24} {:<8} {:>5} {:>9} {:>6}  {}",
            row.name,
            mode,
            server.address,
            server.health,
            server.connections,
            server.in_flight,
            row.queued,
            server.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Reloads and reports.
///
/// # Errors
///
/// When the server cannot be reached, or a plugin failed to load (the old version serves on).
pub(crate) fn reload(args: &ReloadArgs) -> Result<()> {
    let response = args.target.ask(&Request::Reload {
        plugin: args.plugin.clone(),
    })?;
    report(response)
}

/// Rolls back and reports.
///
/// # Errors
///
/// When the server cannot be reached, the plugin is unknown or has no previous version, or the
/// previous version failed to load (the current one serves on).
pub(crate) fn rollback(args: &RollbackArgs) -> Result<()> {
    let response = args.target.ask(&Request::Rollback {
        plugin: args.plugin.clone(),
    })?;
    report(response)
}

fn report(response: Response) -> Result<()> {
    if let Some(error) = response.error {
        // One plugin named, and it failed: the error says it all.
        bail!(error);
    }
    let results = response.results.unwrap_or_default();
    let mut out = io::stdout().lock();
    if let Some(config) = &response.config {
        write_config(&mut out, config)?;
    }
    let mut failed = 0;
    for result in &results {
        write_result(&mut out, result)?;
        failed += usize::from(result.error.is_some());
    }
    if failed > 0 {
        bail!("{failed} plugin(s) failed to load; their old versions go on serving");
    }
    Ok(())
}

/// Adds `changes` to `out` in words, each part prefixed with `prefix`; a changed one is
/// `changed`.
fn describe(out: &mut Vec<String>, prefix: &str, changed: &str, changes: &Changes) {
    for (what, names) in [
        ("added", &changes.added),
        ("removed", &changes.removed),
        (changed, &changes.changed),
    ] {
        if !names.is_empty() {
            out.push(format!("{prefix}{what} {}", names.join(", ")));
        }
    }
    if changes.reordered {
        out.push(format!("{prefix}reordered"));
    }
}

fn write_config(out: &mut impl io::Write, report: &ConfigReport) -> io::Result<()> {
    let Some(file) = &report.file else {
        return writeln!(
            out,
            "config: the server runs without a config file; only its plugins' files were read"
        );
    };
    let mut changes = Vec::new();
    describe(&mut changes, "", "reloaded", &report.plugins);
    if report.lock_changed {
        changes.push("[lock] applied".to_owned());
    }
    if !report.settings.is_empty() {
        changes.push(format!("applied {}", report.settings.join(", ")));
    }
    describe(&mut changes, "upstreams ", "changed", &report.upstreams);
    if changes.is_empty() {
        changes.push("the chain is unchanged".to_owned());
    }
    writeln!(
        out,
        "config: {} read again: {}",
        file.display(),
        changes.join("; ")
    )?;
    if !report.restart_needed.is_empty() {
        writeln!(
            out,
            "config: changed, and applied only when qgate restarts: {}",
            report.restart_needed.join(", ")
        )?;
    }
    Ok(())
}

fn write_result(out: &mut impl io::Write, result: &SwapResult) -> io::Result<()> {
    let short = |digest: &Option<String>| {
        digest
            .as_deref()
            .map(|d| d.get(..12).unwrap_or(d).to_owned())
            .unwrap_or_default()
    };
    match result.outcome.as_str() {
        "swapped" => writeln!(
            out,
            "{}: swapped {} -> {} (loaded in {:.1} ms)",
            result.plugin,
            short(&result.from),
            short(&result.to),
            result.load_ms.unwrap_or_default()
        ),
        "unchanged" => writeln!(
            out,
            "{}: unchanged (its file holds {}, already loaded)",
            result.plugin,
            short(&result.to)
        ),
        _ => writeln!(
            out,
            "{}: failed: {}",
            result.plugin,
            result.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

fn check<T>(error: Option<String>, value: Option<T>) -> Result<T> {
    match (error, value) {
        (Some(error), _) => Err(anyhow!(error)),
        (None, Some(value)) => Ok(value),
        (None, None) => Err(anyhow!("the server's answer is missing its data")),
    }
}
