//! The admin socket: a Unix domain socket through which `qgate plugins`, `qgate reload`,
//! `qgate rollback` and `qgate upstreams` reach a running server. No network port is opened.
//! It is there when the server has plugins or upstreams to ask about.
//!
//! Only the server's own user can use it: the socket is made in a directory that only that user
//! may enter (created 0700 when it does not exist), the socket itself is 0600, and every
//! connection's peer credentials (`SO_PEERCRED`) are checked against the server's user id.
//!
//! Nothing at the socket's path is trusted, since a directory such as `/tmp` is shared with other
//! users: the directory and the path are looked at with `lstat` (a symbolic link is not
//! followed, so one planted in the directory's place is refused), the directory must belong to
//! this user (or root) and be closed to others' writes unless it is sticky, and only a socket of
//! this user's that nothing answers on is removed to make way; anything else at the path (a
//! regular file above all) is refused with a message and left alone.
//!
//! The protocol is line-delimited JSON: one [`Request`] per line, one [`Response`] per line, in
//! order, any number on one connection. A line that is too long, not UTF-8 or not a request gets
//! an error answer, and the connection goes on. Reloads and rollbacks run on the socket's own
//! [`MAX_ADMIN_JOBS`] threads, however many connections ask at once.
//!
//! ```text
//!   {"command":"plugins"}                    -> {"ok":true,"plugins":[{...}, ...]}
//!   {"command":"reload","plugin":"policy"}   -> {"ok":true,"results":[{"plugin":"policy",...}]}
//!   {"command":"reload"}                     -> the config file read again and applied
//!                                               ("config"), then one result per plugin
//!   {"command":"rollback","plugin":"policy"} -> {"ok":true,"results":[{...}]}
//!   {"command":"upstreams"}                  -> {"ok":true,"upstreams":[{...}, ...]}
//!   anything it cannot do                    -> {"ok":false,"error":"..."}
//! ```
//!
//! A reload or rollback is answered after the switch (or the failure): a client that saw the
//! answer can rely on its next query running on the new version.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, mpsc},
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, Result, anyhow, bail};
use qgate_config::Config;
use qgate_gateway::{Gateway, Health, Mode, UpstreamStatus};
use qgate_host::{HostError, PluginHost, PluginStatus, SwapOutcome};

use crate::reconfig::{ConfigReport, ConfigSource};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::oneshot,
};
use tracing::{info, warn};

/// The longest request line, in bytes.
///
/// A request is a command and a plugin name, well under 1 KiB; 64 KiB bounds what a confused
/// client can make the server buffer. A longer line is read to its end without being kept, and
/// answered with an error.
pub(crate) const MAX_REQUEST_BYTES: u64 = 64 << 10;

/// How many reloads and rollbacks run at once, each on a thread of the admin socket's own,
/// whatever the number of connections that ask.
///
/// A reload reads a file, hashes it and, for a new version, compiles it on a core of its own and
/// runs its `init`; reloads of one plugin take turns anyway. Two at once keep a deploy that
/// reloads two plugins from waiting on each other, and a burst of requests (a thousand
/// concurrent `qgate reload`s made 517 threads before this limit) costs two threads; the others
/// wait their turn, each answered after its own reload.
pub(crate) const MAX_ADMIN_JOBS: usize = 2;

/// One request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Request {
    /// The loaded plugins with their versions and counters.
    Plugins,
    /// Reload one plugin from its file; or, without one, read the config file again and apply
    /// it, then reload every plugin.
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
    /// The upstreams with each replica's health, connections and queries.
    Upstreams,
}

/// What the admin socket can tell about and act on: the plugin host, the gateway, or both.
#[derive(Clone)]
pub(crate) struct Admin {
    /// The plugins, when there are any.
    pub(crate) host: Option<Arc<PluginHost>>,
    /// The upstreams, when there are any.
    pub(crate) gateway: Option<Gateway>,
    /// The config file, which a reload of every plugin reads again first.
    pub(crate) config: Arc<ConfigSource>,
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
    /// For `upstreams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstreams: Option<Vec<UpstreamRow>>,
    /// For `reload` of every plugin: what reading the config file again changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) config: Option<ConfigReport>,
}

/// One `[[upstream]]` in an `upstreams` response.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UpstreamRow {
    pub(crate) name: String,
    /// `pinned`, or `pooled`.
    pub(crate) mode: String,
    /// Pooled: connections per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pool_size: Option<usize>,
    /// Queries waiting for a pooled connection.
    pub(crate) queued: usize,
    pub(crate) servers: Vec<ServerRow>,
}

/// One replica of an upstream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServerRow {
    /// `HOST:PORT`.
    pub(crate) address: String,
    /// `up`, `down`, or `unknown` before the first connection or probe.
    pub(crate) health: String,
    /// Connections open to it, the health check's aside.
    pub(crate) connections: usize,
    /// Queries sent whose replies have not come back whole.
    pub(crate) in_flight: usize,
    /// The last error seen, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

fn upstream_row(status: UpstreamStatus) -> UpstreamRow {
    let (mode, pool_size) = match status.mode {
        Mode::Pooled { pool_size } => ("pooled", Some(pool_size)),
        Mode::Pinned => ("pinned", None),
    };
    UpstreamRow {
        name: status.name,
        mode: mode.to_owned(),
        pool_size,
        queued: status.queued,
        servers: status
            .servers
            .into_iter()
            .map(|server| ServerRow {
                address: server.address,
                health: match server.health {
                    Health::Up => "up",
                    Health::Down => "down",
                    Health::Unknown => "unknown",
                }
                .to_owned(),
                connections: server.connections,
                in_flight: server.in_flight,
                last_error: server.last_error,
            })
            .collect(),
    }
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
    /// The device and inode of the socket file this server made, so that only that file is
    /// removed at exit.
    file: (u64, u64),
    /// The threads that reloads and rollbacks run on.
    jobs: Jobs,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        // Only the socket this server made: a later server may have replaced it already, and
        // whatever else is at the path now is not ours to remove.
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|meta| {
            meta.file_type().is_socket() && (meta.dev(), meta.ino()) == self.file
        });
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds the admin socket at `path`: makes its directory (0700) when missing, refuses a directory
/// that is a symbolic link, that another user owns (root aside) or that others may write to
/// without the sticky bit, replaces a stale socket of this user's, and refuses one that a server
/// still answers on, and anything at the path that is not a socket.
pub(crate) fn bind(path: &Path) -> Result<AdminSocket> {
    let uid = own_uid()?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    make_dir(dir)?;
    check_dir(dir, uid)?;
    clear_path(path, uid)?;
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot make the admin socket {path:?}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make the admin socket {path:?} private (0600)"))?;
    let meta = fs::symlink_metadata(path)
        .with_context(|| format!("cannot read the admin socket {path:?} just made"))?;
    Ok(AdminSocket {
        listener,
        path: path.to_path_buf(),
        uid,
        file: (meta.dev(), meta.ino()),
        jobs: Jobs::start().context("cannot start the admin socket's threads")?,
    })
}

/// A job for the admin socket's threads.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that reloads and rollbacks run on: [`MAX_ADMIN_JOBS`] of them, started with the
/// socket and ended with it, each taking the next job in turn. Their own threads rather than
/// tokio's blocking pool, which starts a new thread whenever none is idle.
#[derive(Clone)]
struct Jobs {
    queue: mpsc::Sender<Job>,
}

impl Jobs {
    fn start() -> io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        // A `std` mutex over the receiving end: a thread holds it while it waits for the next
        // job, and lets go before running it.
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..MAX_ADMIN_JOBS {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name("qgate-admin".into())
                .spawn(move || {
                    loop {
                        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        // No sender left: the socket is gone.
                        let Ok(job) = next else { return };
                        // A job that panics drops its answer's sender, and its caller says the
                        // swap failed; the thread goes on to the next.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `f` on one of the threads once it is free, and waits for its result.
    async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (answer, result) = oneshot::channel();
        self.queue
            .send(Box::new(move || {
                let _ = answer.send(f());
            }))
            .map_err(|_| anyhow!("the admin socket's threads have stopped"))?;
        result
            .await
            .map_err(|_| anyhow!("the swap failed: its thread stopped without an answer"))
    }
}

/// Makes `dir`, 0700, when nothing is at its path; its parents too, when missing.
///
/// The last step is not recursive: a `mkdir` that finds anything already there (a symbolic link
/// planted since the check) fails rather than accepting it, and [`check_dir`] looks at what is
/// there in any case.
fn make_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => bail!("cannot read the admin socket's directory {dir:?}: {error}"),
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create the admin socket's directory {parent:?}"))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error)
            .with_context(|| format!("cannot create the admin socket's directory {dir:?}")),
    }
}

/// Refuses a directory for the admin socket that others could use to replace or redirect it: a
/// symbolic link (which anyone who could write its parent may have planted), anything but a
/// directory, one that another user owns (root aside), one that others may write to without the
/// sticky bit.
fn check_dir(dir: &Path, uid: u32) -> Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("cannot read {dir:?}"))?;
    let advice = "set `admin.socket` to a path in a directory of this user's";
    if meta.file_type().is_symlink() {
        let target = fs::read_link(dir).unwrap_or_default();
        bail!(
            "refusing to make the admin socket in {dir:?}: it is a symbolic link (to {target:?}), \
             which another user may have put there, and it belongs to user {}; remove it, or \
             {advice}",
            meta.uid()
        );
    }
    if !meta.is_dir() {
        bail!("refusing to make the admin socket in {dir:?}: it is not a directory; {advice}");
    }
    if meta.uid() != uid && meta.uid() != 0 {
        bail!(
            "refusing to make the admin socket in {dir:?}: it belongs to user {}, not to this \
             server's user {uid}; remove it, or {advice}",
            meta.uid()
        );
    }
    // Others may not replace the socket: a directory they can write to must be sticky (/tmp).
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "refusing to make the admin socket in {dir:?}: others may write to it (mode {:o}); \
             `chmod 700` it, or {advice}",
            mode & 0o7777
        );
    }
    Ok(())
}

/// Makes way for the socket at `path`: nothing there is fine; a socket of this user's that
/// nothing answers on (left by a server that did not exit cleanly) is removed; anything else is
/// refused and left as it is.
fn clear_path(path: &Path, uid: u32) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => bail!("cannot read {path:?}: {error}"),
    };
    let file_type = meta.file_type();
    if !file_type.is_socket() {
        let what = if file_type.is_symlink() {
            "a symbolic link"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        bail!(
            "refusing to make the admin socket at {path:?}: {what} is there, and only a stale \
             socket is replaced; move it away, or set `admin.socket` to another path"
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another server answers on the admin socket {path:?}: stop it, or give this one \
             another `admin.socket` (or another port)"
        ),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(error) => bail!("cannot tell whether a server answers on {path:?}: {error}"),
    }
    if meta.uid() != uid {
        bail!(
            "refusing to remove the stale socket {path:?}: it belongs to user {}, not to this \
             server's user {uid}; remove it as that user, or set `admin.socket` to another path",
            meta.uid()
        );
    }
    // A socket file that nothing answers on: left by a server that did not exit cleanly.
    fs::remove_file(path).with_context(|| format!("cannot remove the stale admin socket {path:?}"))
}

impl AdminSocket {
    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the task is dropped, each on a task of its own.
    pub(crate) async fn serve(self, admin: Admin) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (admin, uid, jobs) = (admin.clone(), self.uid, self.jobs.clone());
            tokio::spawn(async move {
                if let Err(error) = connection(stream, admin, uid, jobs).await {
                    warn!(error = %format!("{error:#}"), "admin connection failed");
                }
            });
        }
    }
}

async fn connection(stream: UnixStream, admin: Admin, uid: u32, jobs: Jobs) -> Result<()> {
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
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let too_long = !line.ends_with(b"\n") && read as u64 >= MAX_REQUEST_BYTES;
        let response = if too_long {
            Response::error(format!(
                "a request longer than {MAX_REQUEST_BYTES} bytes; a request is one JSON object \
                 on one line, such as {{\"command\":\"reload\"}}"
            ))
        } else {
            match parse(&line) {
                Ok(request) => handle(&admin, &jobs, request).await,
                Err(error) => Response::error(error),
            }
        };
        let mut text = serde_json::to_string(&response)?;
        text.push('\n');
        writer.write_all(text.as_bytes()).await?;
        if too_long {
            skip_line(&mut reader).await?;
        }
    }
}

/// A request from one line of bytes, or why it is not one.
fn parse(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|error| {
        format!(
            "not a request: not UTF-8 (an invalid byte at offset {}); a request is one JSON \
             object on one line",
            error.valid_up_to()
        )
    })?;
    serde_json::from_str(text).map_err(|error| format!("not a request: {error}"))
}

/// Reads past the rest of a line that is too long, keeping none of it.
async fn skip_line(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<()> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let read = buffer.len();
                reader.consume(read);
            }
        }
    }
}

impl Response {
    fn error(message: String) -> Self {
        Self {
            error: Some(message),
            ..Self::default()
        }
    }
}

async fn handle(admin: &Admin, jobs: &Jobs, request: Request) -> Response {
    info!(?request, "admin request");
    if let Request::Reload { plugin: None } = request {
        return reload_config(admin, jobs).await;
    }
    let host = match (&request, &admin.host) {
        (Request::Upstreams, _) => return upstreams(admin.gateway.as_ref()),
        (_, Some(host)) => host,
        (_, None) => {
            return Response::error(
                "this server has no plugins: its config's `[[plugins]]` is empty".to_owned(),
            );
        }
    };
    let results = match request {
        Request::Upstreams => return upstreams(admin.gateway.as_ref()),
        Request::Plugins => {
            return Response {
                ok: true,
                plugins: Some(host.status().into_iter().map(plugin_row).collect()),
                ..Response::default()
            };
        }
        Request::Reload { plugin: Some(name) } => {
            blocking(host, jobs, move |host| {
                vec![SwapResult::new(&name, host.reload(&name))]
            })
            .await
        }
        // Answered above.
        Request::Reload { plugin: None } => return reload_config(admin, jobs).await,
        Request::Rollback { plugin } => {
            blocking(host, jobs, move |host| {
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

/// `reload` of every plugin: the config file read again and applied, then every plugin's file,
/// on one of the socket's threads. A config that cannot be applied changes nothing, the plugins'
/// files included, and is the request's error.
async fn reload_config(admin: &Admin, jobs: &Jobs) -> Response {
    let source = Arc::clone(&admin.config);
    let host = admin.host.clone();
    let done = jobs
        .run(move || {
            let report = source.reload_logged()?;
            let results = host
                .map(|host| {
                    host.reload_all()
                        .into_iter()
                        .map(|(name, result)| SwapResult::new(&name, result))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            anyhow::Ok((report, results))
        })
        .await;
    match done.and_then(|done| done) {
        Ok((report, results)) => {
            for result in &results {
                log_result(result);
            }
            Response {
                ok: true,
                results: Some(results),
                config: Some(report),
                ..Response::default()
            }
        }
        Err(error) => Response::error(format!("{error:#}")),
    }
}

/// The `upstreams` answer: every upstream and its replicas, as the gateway sees them now.
fn upstreams(gateway: Option<&Gateway>) -> Response {
    match gateway {
        Some(gateway) => Response {
            ok: true,
            upstreams: Some(gateway.status().into_iter().map(upstream_row).collect()),
            ..Response::default()
        },
        None => Response::error(
            "this server has no upstreams: it is not in front of kdb+ (no `[[upstream]]` and no \
             --upstream)"
                .to_owned(),
        ),
    }
}

/// Runs `f` on the host on one of the admin socket's threads (`jobs`): loading a version reads a
/// file, compiles and runs `init`, which must not hold up an async worker, and a burst of
/// requests must not start a thread each.
async fn blocking<R: Send + 'static>(
    host: &Arc<PluginHost>,
    jobs: &Jobs,
    f: impl FnOnce(&PluginHost) -> R + Send + 'static,
) -> Result<R> {
    let host = host.clone();
    jobs.run(move || f(&host)).await
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
    for (name, result) in host.reload_all_if_changed() {
        log_result(&SwapResult::new(&name, result));
    }
}

/// Reloads one plugin if its file changed: the file watch's swap. Blocks; logs the result.
pub(crate) fn reload_if_changed_logged(host: &PluginHost, name: &str) {
    log_result(&SwapResult::new(name, host.reload_if_changed(name)));
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixListener as StdListener, process::Command};

    use super::*;

    /// A scratch directory of this test's, 0755 so that another user may pass through it, removed
    /// when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("qgate-admin-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("a scratch directory");
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
            Self(dir)
        }

        /// A directory in it with `mode`.
        fn dir(&self, name: &str, mode: u32) -> PathBuf {
            let dir = self.0.join(name);
            fs::create_dir(&dir).expect("a directory");
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A socket file at `path` that nothing answers on, as a server that was killed leaves.
    fn stale_socket(path: &Path) {
        drop(StdListener::bind(path).expect("a socket"));
        assert!(is_socket(path));
    }

    fn is_socket(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
    }

    /// Why binding at `path` is refused.
    fn refused(path: &Path) -> String {
        match bind(path) {
            Ok(_) => panic!("the admin socket was made at {path:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
        let dir = Scratch::new("file");
        let path = dir.0.join("admin.sock");
        fs::write(&path, b"precious").expect("a file");
        let error = refused(&path);
        assert!(error.contains("a regular file is there"), "{error}");
        assert!(error.contains("move it away"), "{error}");
        assert_eq!(fs::read(&path).expect("still there"), b"precious");
        // A symbolic link is not followed, whatever it points at.
        let link = dir.0.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).expect("a symlink");
        let error = refused(&link);
        assert!(error.contains("a symbolic link is there"), "{error}");
        assert_eq!(fs::read(&path).expect("still there"), b"precious");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused_and_only_ours_removed() {
        let dir = Scratch::new("stale");
        let path = dir.0.join("admin.sock");
        stale_socket(&path);
        let socket = bind(&path).expect("a stale socket is replaced");
        assert_eq!(mode(&path), 0o600);
        let error = refused(&path);
        assert!(error.contains("another server answers"), "{error}");
        drop(socket);
        assert!(!path.exists(), "the socket outlived its server");

        // At exit, a file that replaced the socket is left alone.
        let socket = bind(&path).expect("bound");
        fs::remove_file(&path).expect("removed");
        fs::write(&path, b"someone else's").expect("a file");
        drop(socket);
        assert_eq!(fs::read(&path).expect("kept"), b"someone else's");
    }

    #[tokio::test]
    async fn a_directory_that_is_a_symlink_is_refused_and_its_target_untouched() {
        let dir = Scratch::new("symlink");
        let target = dir.dir("rootdir", 0o700);
        stale_socket(&target.join("admin.sock"));
        let link = dir.0.join("qgate-0");
        std::os::unix::fs::symlink(&target, &link).expect("a symlink");
        let error = refused(&link.join("admin.sock"));
        assert!(error.contains("it is a symbolic link"), "{error}");
        assert!(
            is_socket(&target.join("admin.sock")),
            "the target was touched"
        );
        // A missing directory is made, 0700, parents and all.
        let made = dir.0.join("run/qgate");
        let socket = bind(&made.join("admin.sock")).expect("bound");
        assert_eq!(mode(&made), 0o700);
        drop(socket);
    }

    /// Another user of the machine, for the tests of what one user may plant for another.
    struct OtherUser {
        uid: u32,
        gid: u32,
    }

    impl OtherUser {
        /// `nobody`, or a system user made for the tests where there is none; `None`, saying why,
        /// when this process cannot act as another user (it is not root).
        #[expect(
            clippy::print_stderr,
            reason = "a test says on its output which of its checks it could not run"
        )]
        fn get() -> Option<Self> {
            if own_uid().expect("our uid") != 0 {
                eprintln!(
                    "skipped: acting as a second user needs root (CI runs as root); the checks \
                     that need one planting files for this one are not run"
                );
                return None;
            }
            let id = |flag: &str, name: &str| {
                let output = Command::new("id").args([flag, name]).output().ok()?;
                let text = String::from_utf8(output.stdout).ok()?;
                output.status.success().then(|| text.trim().parse().ok())?
            };
            let name = if id("-u", "nobody").is_some() {
                "nobody"
            } else {
                let status = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg("qgate-test-other")
                    .status()
                    .expect("useradd runs");
                assert!(status.success(), "useradd failed: {status}");
                "qgate-test-other"
            };
            Some(Self {
                uid: id("-u", name).expect("a uid"),
                gid: id("-g", name).expect("a gid"),
            })
        }

        /// Runs `command` as this user.
        fn run(&self, command: &[&str]) {
            let status = Command::new("setpriv")
                .arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .args(["--clear-groups", "--"])
                .args(command)
                .status()
                .expect("setpriv runs");
            assert!(
                status.success(),
                "{command:?} as user {}: {status}",
                self.uid
            );
        }
    }

    /// Without `XDG_RUNTIME_DIR` the socket's directory is `/tmp/qgate-UID`, in a directory that
    /// every user may write to: another user can plant a symbolic link or a directory of their
    /// own there before the server starts, or leave a socket of their own at a configured path.
    /// Each is refused, and nothing of theirs or of what a link points at is removed.
    #[tokio::test]
    async fn what_another_user_plants_in_a_shared_directory_is_refused() {
        let Some(other) = OtherUser::get() else {
            return;
        };
        let dir = Scratch::new("shared");
        let shared = dir.dir("tmp", 0o1777);
        let rootdir = dir.dir("rootdir", 0o700);
        stale_socket(&rootdir.join("admin.sock"));
        let path_of = |path: &Path| path.to_str().expect("a UTF-8 path").to_owned();

        let link = shared.join("qgate-0");
        other.run(&["ln", "-s", &path_of(&rootdir), &path_of(&link)]);
        let error = refused(&link.join("admin.sock"));
        assert!(error.contains("it is a symbolic link"), "{error}");
        assert!(
            error.contains(&format!("belongs to user {}", other.uid)),
            "{error}"
        );
        assert!(
            is_socket(&rootdir.join("admin.sock")),
            "the target was touched"
        );

        let theirs = shared.join("qgate-1");
        other.run(&["mkdir", &path_of(&theirs)]);
        let error = refused(&theirs.join("admin.sock"));
        assert!(
            error.contains(&format!("it belongs to user {}", other.uid)),
            "{error}"
        );

        // A stale socket of theirs at a path in the shared directory is theirs to remove.
        let planted = shared.join("admin.sock");
        stale_socket(&planted);
        std::os::unix::fs::chown(&planted, Some(other.uid), Some(other.gid)).expect("chown");
        let error = refused(&planted);
        assert!(
            error.contains("refusing to remove the stale socket"),
            "{error}"
        );
        assert!(is_socket(&planted), "their socket was removed");

        // The server's own directory there is made, 0700, and used.
        let mine = shared.join("qgate-me");
        let socket = bind(&mine.join("admin.sock")).expect("bound");
        assert_eq!(mode(&mine), 0o700);
        drop(socket);
    }
}
