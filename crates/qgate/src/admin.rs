//! The admin socket: a Unix domain socket through which `qgate plugins`, `qgate reload` and
//! `qgate rollback` reach a running server. No network port is opened.
//!
//! Only the server's own user can use it: the socket is made in a directory that only that user
//! may enter (created 0700 when it does not exist), the socket itself is 0600, and every
//! connection's peer credentials (`SO_PEERCRED`) are checked against the server's user id.
//!
//! The protocol is line-delimited JSON: one [`Request`] per line, one [`Response`] per line, in
//! order, any number on one connection.
//!
//! ```text
//!   {"command":"plugins"}                    -> {"ok":true,"plugins":[{...}, ...]}
//!   {"command":"reload","plugin":"policy"}   -> {"ok":true,"results":[{"plugin":"policy",...}]}
//!   {"command":"reload"}                     -> one result per plugin, in chain order
//!   {"command":"rollback","plugin":"policy"} -> {"ok":true,"results":[{...}]}
//!   anything it cannot do                    -> {"ok":false,"error":"..."}
//! ```
//!
//! A reload or rollback is answered after the switch (or the failure): a client that saw the
//! answer can rely on its next query running on the new version.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, Result, anyhow, bail};
use qgate_config::Config;
use qgate_host::{HostError, PluginHost, PluginStatus, SwapOutcome};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{info, warn};

/// The longest request line, in bytes.
///
/// A request is a command and a plugin name, well under 1 KiB; 64 KiB bounds what a confused
/// client can make the server buffer.
pub(crate) const MAX_REQUEST_BYTES: u64 = 64 << 10;

/// One request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Request {
    /// The loaded plugins with their versions and counters.
    Plugins,
    /// Reload one plugin from its file, or every plugin.
    Reload {
        /// The plugin; every plugin when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plugin: Option<String>,
    },
    /// Switch a plugin back to its previous version.
    Rollback {
        /// The plugin.
        plugin: String,
    },
}

/// One response.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Response {
    /// Whether the request was understood and carried out; a reload of every plugin is `ok` even
    /// when some fail, and each result says how it went.
    pub(crate) ok: bool,
    /// Why not, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// For `plugins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plugins: Option<Vec<PluginRow>>,
    /// For `reload` and `rollback`: one per plugin acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) results: Option<Vec<SwapResult>>,
}

/// One plugin in a `plugins` response.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PluginRow {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// The sha256 of the version serving, 64 hex digits.
    pub(crate) digest: String,
    /// When it was switched in, UTC, RFC 3339.
    pub(crate) loaded_at: String,
    /// How long reading, checking, compiling and `init` took, in milliseconds.
    pub(crate) load_ms: f64,
    pub(crate) calls: u64,
    pub(crate) denies: u64,
    pub(crate) traps: u64,
    /// The versions a rollback can go back to, newest first.
    pub(crate) previous: Vec<String>,
}

/// How a reload or rollback of one plugin went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SwapResult {
    pub(crate) plugin: String,
    /// `swapped`, `unchanged` or `failed`.
    pub(crate) outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) load_ms: Option<f64>,
    /// Why it failed; the old version goes on serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl SwapResult {
    fn new(plugin: &str, result: Result<SwapOutcome, HostError>) -> Self {
        let mut row = Self {
            plugin: plugin.to_owned(),
            outcome: String::new(),
            from: None,
            to: None,
            load_ms: None,
            error: None,
        };
        match result {
            Ok(SwapOutcome::Swapped {
                from,
                to,
                load_time,
                ..
            }) => {
                row.outcome = "swapped".into();
                row.from = Some(from.to_string());
                row.to = Some(to.to_string());
                row.load_ms = Some(load_time.as_secs_f64() * 1e3);
            }
            Ok(SwapOutcome::Unchanged { digest, .. }) => {
                row.outcome = "unchanged".into();
                row.to = Some(digest.to_string());
            }
            Ok(_) => row.outcome = "unknown".into(),
            Err(error) => {
                row.outcome = "failed".into();
                row.error = Some(match error {
                    HostError::UnknownPlugin { .. } | HostError::NoPreviousVersion { .. } => {
                        error.to_string()
                    }
                    _ => format!("{error}; the version serving goes on serving"),
                });
            }
        }
        row
    }
}

fn plugin_row(status: PluginStatus) -> PluginRow {
    let since = status
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let loaded_at = i64::try_from(since.as_secs())
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, since.subsec_nanos()))
        .map_or_else(String::new, |time| {
            time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        });
    PluginRow {
        name: status.name,
        path: status.path,
        digest: status.digest.to_string(),
        loaded_at,
        load_ms: status.load_time.as_secs_f64() * 1e3,
        calls: status.calls,
        denies: status.denies,
        traps: status.traps,
        previous: status.previous.iter().map(ToString::to_string).collect(),
    }
}

/// Where the admin socket of a server run with `config` is: `admin.socket`, or the default for
/// its port. `None` for port 0 without `admin.socket` (no fixed place for clients to find).
pub(crate) fn socket_path(config: &Config) -> Result<Option<PathBuf>> {
    if let Some(path) = &config.admin.socket {
        return Ok(Some(path.clone()));
    }
    let port = config.server.listen.get().port();
    if port == 0 {
        return Ok(None);
    }
    Ok(Some(default_dir()?.join(format!("admin-{port}.sock"))))
}

/// `$XDG_RUNTIME_DIR/qgate`, or `/tmp/qgate-UID`.
fn default_dir() -> Result<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join("qgate")),
        _ => Ok(std::env::temp_dir().join(format!("qgate-{}", own_uid()?))),
    }
}

/// The user id this process runs as: the owner of its `/proc/self`.
fn own_uid() -> Result<u32> {
    Ok(fs::metadata("/proc/self")
        .context("cannot find this process's user id in /proc/self")?
        .uid())
}

/// The bound admin socket; the file is removed when it is dropped.
pub(crate) struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    uid: u32,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        // Only our own socket: a later server may have replaced it already.
        if fs::metadata(&self.path).is_ok_and(|m| m.uid() == self.uid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds the admin socket at `path`: makes its directory (0700) when missing, refuses a directory
/// that another user owns (root aside) or that others may write to without the sticky bit,
/// replaces a stale socket, and refuses one that a server still answers on.
pub(crate) fn bind(path: &Path) -> Result<AdminSocket> {
    let uid = own_uid()?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the admin socket's directory {dir:?}"))?;
    }
    let meta = fs::metadata(dir).with_context(|| format!("cannot read {dir:?}"))?;
    let mode = meta.permissions().mode();
    if meta.uid() != uid && meta.uid() != 0 {
        bail!(
            "refusing to make the admin socket in {dir:?}: it belongs to user {}, not to this \
             server's user {uid}; remove it, or set `admin.socket` to a path in a directory of \
             this user's",
            meta.uid()
        );
    }
    // Others may not replace the socket: a directory they can write to must be sticky (/tmp).
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "refusing to make the admin socket in {dir:?}: others may write to it (mode {:o}); \
             `chmod 700` it, or set `admin.socket` to a path in a directory of this user's",
            mode & 0o7777
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another server answers on the admin socket {path:?}: stop it, or give this one \
             another `admin.socket` (or another port)"
        ),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            // A socket file that nothing answers on: left by a server that did not exit cleanly.
            fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale admin socket {path:?}"))?;
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot make the admin socket {path:?}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make the admin socket {path:?} private (0600)"))?;
    Ok(AdminSocket {
        listener,
        path: path.to_path_buf(),
        uid,
    })
}

impl AdminSocket {
    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the task is dropped, each on a task of its own.
    pub(crate) async fn serve(self, host: Arc<PluginHost>) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (host, uid) = (host.clone(), self.uid);
            tokio::spawn(async move {
                if let Err(error) = connection(stream, host, uid).await {
                    warn!(error = %format!("{error:#}"), "admin connection failed");
                }
            });
        }
    }
}

async fn connection(stream: UnixStream, host: Arc<PluginHost>, uid: u32) -> Result<()> {
    let peer = stream
        .peer_cred()
        .context("cannot read the peer's credentials")?;
    if peer.uid() != uid {
        warn!(
            peer_uid = peer.uid(),
            "admin socket: refused a connection from another user"
        );
        return Ok(());
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES)
            .read_line(&mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && read as u64 >= MAX_REQUEST_BYTES {
            bail!("a request longer than {MAX_REQUEST_BYTES} bytes");
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(&host, request).await,
            Err(error) => Response {
                error: Some(format!("not a request: {error}")),
                ..Response::default()
            },
        };
        let mut text = serde_json::to_string(&response)?;
        text.push('\n');
        writer.write_all(text.as_bytes()).await?;
    }
}

async fn handle(host: &Arc<PluginHost>, request: Request) -> Response {
    info!(?request, "admin request");
    let results = match request {
        Request::Plugins => {
            return Response {
                ok: true,
                plugins: Some(host.status().into_iter().map(plugin_row).collect()),
                ..Response::default()
            };
        }
        Request::Reload { plugin: Some(name) } => {
            blocking(host, move |host| {
                vec![SwapResult::new(&name, host.reload(&name))]
            })
            .await
        }
        Request::Reload { plugin: None } => {
            blocking(host, |host| {
                let names = host.plugin_names().map(str::to_owned).collect::<Vec<_>>();
                names
                    .iter()
                    .zip(host.reload_all())
                    .map(|(name, result)| SwapResult::new(name, result))
                    .collect()
            })
            .await
        }
        Request::Rollback { plugin } => {
            blocking(host, move |host| {
                vec![SwapResult::new(&plugin, host.rollback(&plugin))]
            })
            .await
        }
    };
    match results {
        Ok(results) => {
            for result in &results {
                log_result(result);
            }
            match results.as_slice() {
                // One plugin named: its failure is the request's.
                [
                    SwapResult {
                        error: Some(error), ..
                    },
                ] => Response {
                    error: Some(error.clone()),
                    results: Some(results.clone()),
                    ..Response::default()
                },
                _ => Response {
                    ok: true,
                    results: Some(results),
                    ..Response::default()
                },
            }
        }
        Err(error) => Response {
            error: Some(format!("{error:#}")),
            ..Response::default()
        },
    }
}

/// Runs `f` on the host on a blocking thread: loading a version compiles and runs `init`, which
/// must not hold up an async worker.
async fn blocking<R: Send + 'static>(
    host: &Arc<PluginHost>,
    f: impl FnOnce(&PluginHost) -> R + Send + 'static,
) -> Result<R> {
    let host = host.clone();
    tokio::task::spawn_blocking(move || f(&host))
        .await
        .map_err(|error| anyhow!("the swap failed: {error}"))
}

/// Logs how a swap went, whoever asked for it.
pub(crate) fn log_result(result: &SwapResult) {
    match (&result.error, result.outcome.as_str()) {
        (Some(error), _) => warn!(
            plugin = result.plugin,
            %error,
            "plugin not swapped; the old version goes on serving"
        ),
        (None, "unchanged") => info!(plugin = result.plugin, "plugin unchanged"),
        (None, _) => {}
    }
}

/// Reloads every plugin whose file changed: SIGHUP's swap. Blocks; logs each result.
pub(crate) fn reload_changed_logged(host: &PluginHost) {
    let names = host.plugin_names().map(str::to_owned).collect::<Vec<_>>();
    for (name, result) in names.iter().zip(host.reload_all_if_changed()) {
        log_result(&SwapResult::new(name, result));
    }
}

/// Reloads one plugin if its file changed: the file watch's swap. Blocks; logs the result.
pub(crate) fn reload_if_changed_logged(host: &PluginHost, name: &str) {
    log_result(&SwapResult::new(name, host.reload_if_changed(name)));
}
