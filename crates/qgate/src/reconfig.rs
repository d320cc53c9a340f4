//! Config reload: SIGHUP and `qgate reload` read the server's config file again and apply what
//! can change while it serves.
//!
//! ```text
//!   config.toml (+ the serve flags on top) ── parse ── validate whole (as `qgate check`)
//!        │ any error: nothing changes, and the error says why
//!        ▼
//!   PluginHost::reconfigure ── loads every new or changed plugin, then swaps the chain at once
//!        │                      (a plugin that fails to load: nothing changes)
//!        ▼
//!   settings that differ from the ones the process started with and cannot change live:
//!   reported, in the log and to `qgate reload`, until a restart applies them
//! ```
//!
//! What changes live: `[[plugins]]` (added, removed, reordered, reconfigured, pins, modes),
//! `[lock]`, `[limits]` and `[auth]` (the server's [`ServerSettings`]), and `[[upstream]]` (the
//! gateway's services, for the sessions that log in after the reload). The server's settings and
//! the upstreams are prepared first (a new password file read, new services made), and applied
//! only once the plugins have loaded. Everything else is read when the process starts and
//! reported as needing a restart when it differs: `server.*`, `[tls]` (its files are reloaded
//! when they change, as ever), `[log]`, `[admin]`, `[metrics]` and `[decision_log]`; and plugins
//! or upstreams, when the process started without any (its connections were set up without a
//! chain or a gateway), or all upstreams removed.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::{Context as _, Result};
use qgate_config::Config;
use qgate_gateway::Gateway;
use qgate_host::PluginHost;
use qgate_server::ServerSettings;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{check, gateway::gateway_options, serve, watch::Watch};

/// Where the running server's config comes from, and what it started with.
pub(crate) struct ConfigSource {
    /// The serve command line: its config file, and the flags that override the file.
    args: serve::Args,
    /// The config the process started with: what needs a restart is what differs from it.
    started: Config,
    /// The plugins, when the process started with any.
    host: Option<Arc<PluginHost>>,
    /// The plugin file watch, when it is on: it follows the chain's files.
    watch: Option<Arc<Watch>>,
    /// The upstreams, when the process started with any.
    gateway: Option<Gateway>,
    /// The server's live settings, and the runtime their loading runs on.
    server: ServerSettings,
    runtime: tokio::runtime::Handle,
    /// One reload at a time (SIGHUP and `qgate reload` may come together). A `std` mutex, held
    /// on the thread that reloads.
    turn: Mutex<()>,
}

/// What a config reload did, as `qgate reload` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigReport {
    /// The file read again; `None` when the server runs without one.
    pub(crate) file: Option<PathBuf>,
    /// What changed in the plugin chain: a changed plugin is one loaded again under a changed
    /// entry (or a changed `[lock]`).
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub(crate) plugins: Changes,
    /// Whether `[lock]` changed.
    #[serde(default)]
    pub(crate) lock_changed: bool,
    /// The server's settings that changed and apply from now on (`limits.max_connections`,
    /// `auth.password_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) settings: Vec<String>,
    /// What changed among the upstreams, for the sessions that log in from now on.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub(crate) upstreams: Changes,
    /// The settings that differ from those the process started with and take effect only at a
    /// restart, by their place in the file (`server.listen`, `[limits]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) restart_needed: Vec<String>,
}

/// What a reload changed in a list of named things (plugins, upstreams), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Changes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) changed: Vec<String>,
    /// Whether those in both lists are in another order.
    #[serde(default)]
    pub(crate) reordered: bool,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.reordered
    }
}

impl ConfigSource {
    pub(crate) fn new(
        args: serve::Args,
        started: Config,
        host: Option<Arc<PluginHost>>,
        watch: Option<Arc<Watch>>,
        gateway: Option<Gateway>,
        server: ServerSettings,
    ) -> Self {
        Self {
            args,
            started,
            host,
            watch,
            gateway,
            server,
            runtime: tokio::runtime::Handle::current(),
            turn: Mutex::new(()),
        }
    }

    /// Reads the config again and applies it. Blocks for as long as loading the new and changed
    /// plugins takes: call it off the async workers.
    ///
    /// # Errors
    ///
    /// The config does not parse, does not validate, or a plugin it names does not load: nothing
    /// changed.
    pub(crate) fn reload(&self) -> Result<ConfigReport> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(file) = self.args.config_file() else {
            return Ok(ConfigReport::default());
        };
        let shown = file.display().to_string();
        let config = self
            .args
            .config()
            .with_context(|| format!("{shown}: not reloaded, nothing changed"))?;
        check::validate(&config, &shown, check::Artifacts::Skip)
            .with_context(|| format!("{shown}: not reloaded, nothing changed"))?;
        let mut report = ConfigReport {
            file: Some(file.to_path_buf()),
            restart_needed: restart_needed(
                &self.started,
                &config,
                self.host.is_some(),
                self.gateway.is_some(),
            ),
            ..ConfigReport::default()
        };
        let nothing_changed = || format!("{shown}: not reloaded, nothing changed");
        let options = serve::server_options(&config, |name| std::env::var(name).ok())
            .with_context(nothing_changed)?;
        let prepared = self
            .runtime
            .block_on(self.server.prepare(&options))
            .with_context(nothing_changed)?;
        let upstreams = match (
            &self.gateway,
            gateway_options(&config, |name| std::env::var(name).ok())
                .with_context(nothing_changed)?,
        ) {
            (Some(gateway), Some(options)) => {
                Some(gateway.prepare(options).with_context(nothing_changed)?)
            }
            // A restart's work, reported above.
            _ => None,
        };
        if let Some(host) = &self.host {
            let mut options = serve::host_options(&config)?;
            // The engine's settings are the ones it started with; a change is reported above.
            options.cache_dir = self.started.server.plugin_cache_dir.clone();
            let changes = host.reconfigure(options).with_context(nothing_changed)?;
            report.plugins = Changes {
                added: changes.added,
                removed: changes.removed,
                changed: changes.changed,
                reordered: changes.reordered,
            };
            report.lock_changed = changes.lock_changed;
            if let Some(watch) = &self.watch
                && let Err(error) = watch.sync()
            {
                warn!(%error, "cannot watch the new plugins' files; `qgate reload` swaps them");
            }
        }
        report.settings = prepared.apply().into_iter().map(str::to_owned).collect();
        if let Some(upstreams) = upstreams {
            let changes = upstreams.apply();
            report.upstreams = Changes {
                added: changes.added,
                removed: changes.removed,
                changed: changes.changed,
                reordered: changes.reordered,
            };
        }
        Ok(report)
    }

    /// [`ConfigSource::reload`], logged: what changed, what needs a restart, or why nothing did.
    pub(crate) fn reload_logged(&self) -> Result<ConfigReport> {
        let result = self.reload();
        match &result {
            Ok(report) => log_report(report),
            Err(error) => warn!(error = format!("{error:#}"), "config not reloaded"),
        }
        result
    }
}

/// Logs a reload's report.
fn log_report(report: &ConfigReport) {
    let Some(file) = &report.file else {
        info!("no config file: only the plugins' files are read again");
        return;
    };
    info!(
        config = %file.display(),
        plugins = ?report.plugins,
        lock_changed = report.lock_changed,
        settings = ?report.settings,
        upstreams = ?report.upstreams,
        "config reloaded"
    );
    if !report.restart_needed.is_empty() {
        warn!(
            settings = ?report.restart_needed,
            "config changes that take effect only when qgate restarts"
        );
    }
}

/// The settings of `new` that differ from `started`'s and cannot change while the process runs.
fn restart_needed(
    started: &Config,
    new: &Config,
    has_host: bool,
    has_gateway: bool,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    differs("server.listen", started.server.listen != new.server.listen);
    differs(
        "server.shutdown_grace",
        started.server.shutdown_grace != new.server.shutdown_grace,
    );
    differs(
        "server.connection_threads",
        started.server.connection_threads != new.server.connection_threads,
    );
    differs(
        "server.plugin_cache_dir",
        started.server.plugin_cache_dir != new.server.plugin_cache_dir,
    );
    differs("[tls]", started.tls != new.tls);
    differs("[log]", started.log != new.log);
    differs("[admin]", started.admin != new.admin);
    differs("[metrics]", started.metrics != new.metrics);
    differs("[decision_log]", started.decision_log != new.decision_log);
    differs(
        "[[upstream]] (the server started without upstreams)",
        !has_gateway && !new.upstream.is_empty(),
    );
    differs(
        "[[upstream]] (a server in front of kdb+ keeps at least one)",
        has_gateway && new.upstream.is_empty(),
    );
    differs(
        "[[plugins]] (the server started without plugins)",
        !has_host && !new.plugins.is_empty(),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).expect("valid config")
    }

    #[test]
    fn only_what_cannot_change_live_needs_a_restart() {
        let started = config(
            r#"
            [server]
            listen = "127.0.0.1:5001"
            [limits]
            idle_timeout = "off"
            [[plugins]]
            name = "a"
            path = "a.wasm"
            "#,
        );
        // Plugins and the lock change live.
        let live = config(
            r#"
            [server]
            listen = "127.0.0.1:5001"
            [limits]
            idle_timeout = "off"
            [lock]
            enabled = true
            [[plugins]]
            name = "b"
            path = "b.wasm"
            sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            "#,
        );
        assert_eq!(
            restart_needed(&started, &live, true, false),
            Vec::<String>::new()
        );
        let moved = config(
            r#"
            [server]
            listen = "127.0.0.1:5002"
            [limits]
            idle_timeout = "5m"
            [log]
            level = "debug"
            "#,
        );
        assert_eq!(
            restart_needed(&started, &moved, true, false),
            ["server.listen", "[log]"]
        );
        // A server that started without plugins has no chain to put them in.
        let bare = config("");
        assert_eq!(
            restart_needed(&bare, &started, false, false),
            [
                "server.listen",
                "[[plugins]] (the server started without plugins)"
            ]
        );
    }
}
