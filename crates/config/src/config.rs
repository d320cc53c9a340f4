//! The schema: one struct per table, each key with its TOML form and its default.
//!
//! Every struct denies unknown keys and takes its defaults from [`Default`], so a table or a key
//! that is left out means "the default", and a misspelt one is an error rather than a silent
//! default.

use std::{
    convert::Infallible,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    error::ConfigError,
    tls::Tls,
    upstream::Upstreams,
    value::{ByteSize, Count, HumanDuration, Listen, Sha256, Timeout, TimeoutOrOff},
};

/// A whole config file.
///
/// Every table is optional; an empty file is [`Config::default`], the built-in defaults, which the
/// reference `config.toml` at the repository root spells out.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The listener and shutdown: `[server]`.
    pub server: Server,
    /// Who may connect: `[auth]`.
    pub auth: Auth,
    /// What one client may cost: `[limits]`.
    pub limits: Limits,
    /// TLS on the q port: `[tls]`.
    pub tls: Tls,
    /// HTTP on the q port: `[http]`.
    pub http: Http,
    /// Logging: `[log]`.
    pub log: Log,
    /// The plugin chain, in order: `[[plugins]]`. None by default.
    pub plugins: Plugins,
    /// The admin socket that `qgate plugins`, `qgate reload` and `qgate rollback` use: `[admin]`.
    pub admin: Admin,
    /// Which plugin artifacts may run: `[lock]`.
    pub lock: Lock,
    /// The kdb+ services qgate stands in front of, the default first: `[[upstream]]`. None by
    /// default (qgate answers with its plugins alone).
    pub upstream: Upstreams,
    /// Prometheus metrics on an HTTP listener of their own: `[metrics]`. Off when the table is
    /// absent.
    pub metrics: Option<Metrics>,
    /// A JSON line for each decision of the plugin chain: `[decision_log]`. Off when the table
    /// is absent.
    pub decision_log: Option<DecisionLog>,
}

impl Config {
    /// Parses a config from TOML text.
    ///
    /// Relative paths in it (`auth.password_file`, `server.plugin_cache_dir`, the `[tls]` files,
    /// each plugin's `path`, `admin.socket`) stay as written, relative to the current
    /// directory; [`Config::load`] resolves them against the file's directory instead.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Syntax`] if the text is not TOML, and [`ConfigError::Invalid`] if a key is
    /// unknown or its value is not what the schema takes.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|error| ConfigError::syntax(text, &error))?;
        let config: Self = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| ConfigError::invalid(text, &error))?;
        config.check_routes()?;
        config.tls.check_acme()?;
        Ok(config)
    }

    /// Checks that every plugin's `routes` names an `[[upstream]]`: a route to nowhere is an error
    /// at start, not at the first query that takes it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the plugin and the unknown upstream.
    pub fn check_routes(&self) -> Result<(), ConfigError> {
        for plugin in self.plugins.as_slice() {
            for route in &plugin.routes {
                if self.upstream.get(route).is_none() {
                    let known: Vec<&str> = self
                        .upstream
                        .as_slice()
                        .iter()
                        .map(|upstream| upstream.name.as_str())
                        .collect();
                    return Err(ConfigError::Invalid {
                        file: None,
                        key: format!("plugins.{}.routes", plugin.name),
                        line: None,
                        column: None,
                        message: if known.is_empty() {
                            format!(
                                "routes to upstream `{route}`, but no [[upstream]] is configured"
                            )
                        } else {
                            format!(
                                "routes to upstream `{route}`, which is not configured; the \
                                 upstreams are {}",
                                known.join(", ")
                            )
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads and parses the config file at `path`.
    ///
    /// Relative paths (`auth.password_file`, `server.plugin_cache_dir`, the `[tls]` files and
    /// `[tls.acme]`'s, each plugin's `path` and the files its `config` names, `admin.socket`) are resolved against the directory that holds the config
    /// file, so a config and the files it names can move together.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, and otherwise as
    /// [`Config::from_toml_str`], with the file's path in the error.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text).map_err(|error| error.in_file(path))?;
        if let Some(dir) = path.parent() {
            if let Some(password_file) = &mut config.auth.password_file {
                *password_file = dir.join(&*password_file);
            }
            if let Some(cache_dir) = &mut config.server.plugin_cache_dir {
                *cache_dir = dir.join(&*cache_dir);
            }
            for file in [
                &mut config.tls.cert_file,
                &mut config.tls.key_file,
                &mut config.tls.ca_file,
            ]
            .into_iter()
            .flatten()
            {
                *file = dir.join(&*file);
            }
            if let Some(acme) = &mut config.tls.acme {
                acme.storage = dir.join(&acme.storage);
                if let Some(ca_file) = &mut acme.directory_ca_file {
                    *ca_file = dir.join(&*ca_file);
                }
            }
            for plugin in &mut config.plugins.0 {
                plugin.path = dir.join(&plugin.path);
                let Ok(()) = visit_files::<Infallible>(&mut plugin.config, &mut |_, file| {
                    if let Some(toml::Value::String(path)) = file.get_mut(FILE_KEY) {
                        *path = dir.join(&*path).to_string_lossy().into_owned();
                    }
                    Ok(())
                });
                if let Some(kv_file) = &mut plugin.kv_file {
                    *kv_file = dir.join(&*kv_file);
                }
            }
            if let Some(socket) = &mut config.admin.socket {
                *socket = dir.join(&*socket);
            }
            if let Some(log) = &mut config.decision_log
                && log.path != Path::new("-")
            {
                log.path = dir.join(&log.path);
            }
            for upstream in &mut config.upstream.0 {
                upstream.resolve_paths(dir);
            }
        }
        Ok(config)
    }
}

/// `[server]`: the listener and shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawServer")]
#[non_exhaustive]
pub struct Server {
    /// The address to listen on: `listen = "127.0.0.1:5000"`, the default.
    ///
    /// A bare port, `listen = 5000` or `listen = "5000"`, listens on every interface
    /// (`0.0.0.0:5000`), as q's `-p 5000` does. The default is the loopback interface only, so
    /// that a server started without a config is not reachable from other machines by accident.
    pub listen: Listen,
    /// How long in-flight queries may run after a shutdown signal before their connections are
    /// cut: `shutdown_grace = "10s"`, the default. `"0s"` cuts them at once; at most
    /// [`Server::MAX_SHUTDOWN_GRACE`].
    pub shutdown_grace: HumanDuration,
    /// Where compiled plugins are cached between starts: `plugin_cache_dir = "target/qgate-cache"`.
    /// None by default: every plugin is compiled at every start (tens of milliseconds each).
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub plugin_cache_dir: Option<PathBuf>,
    /// How many threads serve connections: `connection_threads = 0`, the default, has the async
    /// runtime's workers (one per CPU) share every connection, handing work to each other;
    /// `connection_threads = N` gives each connection, for its whole life, to the least busy of N
    /// threads of its own, as HAProxy's threads do. At most [`Server::MAX_CONNECTION_THREADS`].
    ///
    /// Threads of their own cost less CPU a query where many connections send small queries (in
    /// the gateway benchmark, 8.4 against 11 µs a forwarded query, BENCHMARKS.md); the price is
    /// balance, as two busy clients on one thread share its CPU while another thread may idle.
    pub connection_threads: usize,
}

impl Server {
    /// `127.0.0.1:5000`: q's customary port, on the loopback interface only.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
    /// 10 s: as the server's default grace period.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// 1 h: the process exits within the grace (and a second or two) whatever its clients and
    /// plugins do, and no orchestrator waits longer than this for a process to stop.
    pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
    /// 1024: far more than any machine's CPUs; each is an OS thread with its own runtime.
    pub const MAX_CONNECTION_THREADS: usize = 1024;
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: Listen::from(Self::DEFAULT_LISTEN),
            shutdown_grace: HumanDuration::from(Self::DEFAULT_SHUTDOWN_GRACE),
            plugin_cache_dir: None,
            connection_threads: 0,
        }
    }
}

/// `[server]` as written, before its bounds are checked.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    listen: Listen,
    shutdown_grace: HumanDuration,
    plugin_cache_dir: Option<PathBuf>,
    connection_threads: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        let Server {
            listen,
            shutdown_grace,
            plugin_cache_dir,
            connection_threads,
        } = Server::default();
        Self {
            listen,
            shutdown_grace,
            plugin_cache_dir,
            connection_threads,
        }
    }
}

impl TryFrom<RawServer> for Server {
    type Error = String;

    fn try_from(raw: RawServer) -> Result<Self, String> {
        at_most(
            "shutdown_grace",
            raw.shutdown_grace.get(),
            "the longest grace period",
            Self::MAX_SHUTDOWN_GRACE,
        )?;
        if raw.connection_threads > Self::MAX_CONNECTION_THREADS {
            return Err(format!(
                "`connection_threads` of {} is more than {}; use about as many as the machine \
                 has CPUs, or 0 for the shared runtime",
                raw.connection_threads,
                Self::MAX_CONNECTION_THREADS
            ));
        }
        Ok(Self {
            listen: raw.listen,
            shutdown_grace: raw.shutdown_grace,
            plugin_cache_dir: raw.plugin_cache_dir,
            connection_threads: raw.connection_threads,
        })
    }
}

/// Checks that a duration key is within its bound, naming both in the error.
fn at_most(key: &str, value: Duration, bound: &str, max: Duration) -> Result<(), String> {
    if value > max {
        return Err(format!(
            "`{key}` of {} is more than {bound}, {}",
            HumanDuration::from(value),
            HumanDuration::from(max)
        ));
    }
    Ok(())
}

/// `[auth]`: who may connect, and how failed logins slow the next ones down.
///
/// With no password file, every user name and password is accepted, as q without `-U` or `-u`
/// accepts them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAuth")]
#[non_exhaustive]
pub struct Auth {
    /// A password file of `user:password` lines (the password plain, MD5 hex or SHA-1 hex), as
    /// q's `-U` and `-u` take: `password_file = "passwords.txt"`. None by default.
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub password_file: Option<PathBuf>,
    /// Whether the password file is q's `-u` (`restricted = true`) rather than its `-U`
    /// (`restricted = false`, the default). Only meaningful with a `password_file`.
    pub restricted: bool,
    /// Brute-force protection: after `failures_before_delay` failed logins from one address or
    /// for one user name, each later attempt waits this long before it is checked, doubling with
    /// every further failure: `failed_login_delay = "250ms"`, the default, or `"off"`.
    pub failed_login_delay: TimeoutOrOff,
    /// The longest such wait: `max_failed_login_delay = "10s"`, the default. An address whose
    /// attempts queue up further than this is refused at once, without a check.
    pub max_failed_login_delay: Timeout,
    /// The failed logins that cost nothing: `failures_before_delay = 3`, the default.
    pub failures_before_delay: Count,
}

impl Auth {
    /// 250 ms, as the server's default.
    pub const DEFAULT_FAILED_LOGIN_DELAY: Option<Duration> = Some(Duration::from_millis(250));
    /// 10 s, as the server's default.
    pub const DEFAULT_MAX_FAILED_LOGIN_DELAY: Duration = Duration::from_secs(10);
    /// 3, as the server's default.
    pub const DEFAULT_FAILURES_BEFORE_DELAY: usize = 3;
    /// 5 minutes: a waiting login holds one of its address's handshake slots, and a client
    /// library gives up on a handshake long before this.
    pub const MAX_FAILED_LOGIN_DELAY: Duration = Duration::from_secs(300);
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            password_file: None,
            restricted: false,
            failed_login_delay: TimeoutOrOff(Self::DEFAULT_FAILED_LOGIN_DELAY),
            max_failed_login_delay: Timeout(Self::DEFAULT_MAX_FAILED_LOGIN_DELAY),
            failures_before_delay: Count(Self::DEFAULT_FAILURES_BEFORE_DELAY),
        }
    }
}

/// `[auth]` as written, before the check that `restricted` comes with a password file.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    password_file: Option<PathBuf>,
    restricted: bool,
    failed_login_delay: TimeoutOrOff,
    max_failed_login_delay: Timeout,
    failures_before_delay: Count,
}

impl Default for RawAuth {
    fn default() -> Self {
        let Auth {
            password_file,
            restricted,
            failed_login_delay,
            max_failed_login_delay,
            failures_before_delay,
        } = Auth::default();
        Self {
            password_file,
            restricted,
            failed_login_delay,
            max_failed_login_delay,
            failures_before_delay,
        }
    }
}

impl TryFrom<RawAuth> for Auth {
    type Error = String;

    fn try_from(raw: RawAuth) -> Result<Self, Self::Error> {
        if raw.restricted && raw.password_file.is_none() {
            return Err(
                "`restricted = true` needs a `password_file`, as q's -u needs a file".to_owned(),
            );
        }
        let max = raw.max_failed_login_delay.get();
        at_most(
            "max_failed_login_delay",
            max,
            "the longest a login may be made to wait",
            Self::MAX_FAILED_LOGIN_DELAY,
        )?;
        if let Some(first) = raw.failed_login_delay.get() {
            at_most("failed_login_delay", first, "`max_failed_login_delay`", max)?;
        }
        Ok(Self {
            password_file: raw.password_file,
            restricted: raw.restricted,
            failed_login_delay: raw.failed_login_delay,
            max_failed_login_delay: raw.max_failed_login_delay,
            failures_before_delay: raw.failures_before_delay,
        })
    }
}

/// `[limits]`: what one client may cost. Each default has its reason in the server's
/// `ServerLimits`, whose numbers these repeat (a test in the binary keeps them equal).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawLimits")]
#[non_exhaustive]
pub struct Limits {
    /// The largest message a client may send, after decompression: `max_message_bytes =
    /// "256MiB"`, the default. An integer is a number of bytes. At most
    /// [`Limits::MAX_MESSAGE_BYTES`], what a frame's 32-bit length can say.
    pub max_message_bytes: ByteSize,
    /// How many times its size on the wire a compressed message may expand to, once it expands to
    /// more than 1 MiB: `max_expansion = 32`, the default.
    pub max_expansion: Count,
    /// The longest handshake (credentials, capability byte and terminator): `max_handshake_bytes =
    /// "64KiB"`, the default.
    pub max_handshake_bytes: ByteSize,
    /// How long a client has to complete its handshake: `handshake_timeout = "10s"`, the default.
    pub handshake_timeout: Timeout,
    /// How long a connection may stay silent before it is closed: `idle_timeout = "off"`, the
    /// default, or a duration such as `idle_timeout = "30m"`.
    pub idle_timeout: TimeoutOrOff,
    /// How long a message whose body has started to arrive may go without a byte before the
    /// connection is closed, whatever `idle_timeout` says: `body_timeout = "30s"`, the default.
    pub body_timeout: Timeout,
    /// How long a write to a client may make no progress (it reads nothing) before the connection
    /// is closed, whatever `idle_timeout` says: `write_timeout = "30s"`, the default.
    pub write_timeout: Timeout,
    /// The bytes the server holds for messages and replies in flight, in all: `memory_budget =
    /// "1GiB"`, the default. At least `max_message_bytes`.
    pub memory_budget: ByteSize,
    /// Connections logged in at once, in all: `max_connections = 10000`, the default.
    pub max_connections: Count,
    /// Connections logged in at once for one user name: `max_connections_per_user = 1000`, the
    /// default.
    pub max_connections_per_user: Count,
    /// Connections that have not logged in yet, at once: `max_handshakes = 1024`, the default.
    pub max_handshakes: Count,
    /// Past this many pending handshakes, new connections are dropped at random, more often the
    /// closer to `max_handshakes`: `handshake_early_drop = 512`, the default. At most
    /// `max_handshakes`.
    pub handshake_early_drop: Count,
    /// Connections that have not logged in yet, at once, from one address (one /64 for IPv6):
    /// `max_handshakes_per_address = 256`, the default.
    pub max_handshakes_per_address: Count,
}

impl Limits {
    /// 256 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;
    /// 32.
    pub const DEFAULT_MAX_EXPANSION: usize = 32;
    /// 64 KiB.
    pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 64 << 10;
    /// 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Off: q itself never closes an idle client.
    pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;
    /// 30 s.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// 30 s.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// 1 GiB.
    pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;
    /// 10 000.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// 1 000.
    pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 1_000;
    /// 1 024.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1_024;
    /// 512.
    pub const DEFAULT_HANDSHAKE_EARLY_DROP: usize = 512;
    /// 256.
    pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 256;
    /// 4 294 967 295 bytes: a frame's length is a 32-bit number, header included, so no q message
    /// is longer.
    pub const MAX_MESSAGE_BYTES: usize = u32::MAX as usize;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: ByteSize(Self::DEFAULT_MAX_MESSAGE_BYTES),
            max_expansion: Count(Self::DEFAULT_MAX_EXPANSION),
            max_handshake_bytes: ByteSize(Self::DEFAULT_MAX_HANDSHAKE_BYTES),
            handshake_timeout: Timeout(Self::DEFAULT_HANDSHAKE_TIMEOUT),
            idle_timeout: TimeoutOrOff(Self::DEFAULT_IDLE_TIMEOUT),
            body_timeout: Timeout(Self::DEFAULT_BODY_TIMEOUT),
            write_timeout: Timeout(Self::DEFAULT_WRITE_TIMEOUT),
            memory_budget: ByteSize(Self::DEFAULT_MEMORY_BUDGET),
            max_connections: Count(Self::DEFAULT_MAX_CONNECTIONS),
            max_connections_per_user: Count(Self::DEFAULT_MAX_CONNECTIONS_PER_USER),
            max_handshakes: Count(Self::DEFAULT_MAX_HANDSHAKES),
            handshake_early_drop: Count(Self::DEFAULT_HANDSHAKE_EARLY_DROP),
            max_handshakes_per_address: Count(Self::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS),
        }
    }
}

/// `[limits]` as written, before the limits are checked against their bounds and each other.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: ByteSize,
    max_expansion: Count,
    max_handshake_bytes: ByteSize,
    handshake_timeout: Timeout,
    idle_timeout: TimeoutOrOff,
    body_timeout: Timeout,
    write_timeout: Timeout,
    memory_budget: ByteSize,
    max_connections: Count,
    max_connections_per_user: Count,
    max_handshakes: Count,
    handshake_early_drop: Count,
    max_handshakes_per_address: Count,
}

impl Default for RawLimits {
    fn default() -> Self {
        let Limits {
            max_message_bytes,
            max_expansion,
            max_handshake_bytes,
            handshake_timeout,
            idle_timeout,
            body_timeout,
            write_timeout,
            memory_budget,
            max_connections,
            max_connections_per_user,
            max_handshakes,
            handshake_early_drop,
            max_handshakes_per_address,
        } = Limits::default();
        Self {
            max_message_bytes,
            max_expansion,
            max_handshake_bytes,
            handshake_timeout,
            idle_timeout,
            body_timeout,
            write_timeout,
            memory_budget,
            max_connections,
            max_connections_per_user,
            max_handshakes,
            handshake_early_drop,
            max_handshakes_per_address,
        }
    }
}

impl TryFrom<RawLimits> for Limits {
    type Error = String;

    fn try_from(raw: RawLimits) -> Result<Self, String> {
        let message = raw.max_message_bytes.get();
        if message > Self::MAX_MESSAGE_BYTES {
            return Err(format!(
                "`max_message_bytes` of {message} bytes is more than a q frame can carry, {} \
                 bytes (its length is a 32-bit number)",
                Self::MAX_MESSAGE_BYTES
            ));
        }
        let budget = raw.memory_budget.get();
        if budget < message {
            return Err(format!(
                "`memory_budget` of {budget} bytes is less than `max_message_bytes` ({message} \
                 bytes): a message of the largest size could never be taken; raise the budget \
                 or lower the message limit"
            ));
        }
        let (early, max) = (raw.handshake_early_drop.get(), raw.max_handshakes.get());
        if early > max {
            return Err(format!(
                "`handshake_early_drop` of {early} is more than `max_handshakes` ({max}): \
                 connections are dropped at random only below the cap"
            ));
        }
        Ok(Self {
            max_message_bytes: raw.max_message_bytes,
            max_expansion: raw.max_expansion,
            max_handshake_bytes: raw.max_handshake_bytes,
            handshake_timeout: raw.handshake_timeout,
            idle_timeout: raw.idle_timeout,
            body_timeout: raw.body_timeout,
            write_timeout: raw.write_timeout,
            memory_budget: raw.memory_budget,
            max_connections: raw.max_connections,
            max_connections_per_user: raw.max_connections_per_user,
            max_handshakes: raw.max_handshakes,
            handshake_early_drop: raw.handshake_early_drop,
            max_handshakes_per_address: raw.max_handshakes_per_address,
        })
    }
}

/// `[log]`: what is logged and how.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Log {
    /// How log lines look: `format = "text"`, the default, or `format = "json"`.
    pub format: LogFormat,
    /// Which events are logged, as a `tracing` filter directive: `level = "info"`, the default,
    /// or for example `level = "warn,qgate_server=debug"`. The `RUST_LOG` environment variable,
    /// when set, overrides it.
    ///
    /// The binary checks the directive; this crate keeps it as written.
    pub level: String,
}

impl Log {
    /// `info`: one line per connection and per lifecycle event, nothing per message.
    pub const DEFAULT_LEVEL: &str = "info";
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: Self::DEFAULT_LEVEL.to_owned(),
        }
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors: `"json"`.
    Json,
    /// Human-readable lines: `"text"`.
    #[default]
    Text,
}

/// `[decision_log]`: a JSON line for each decision of the plugin chain (auth, open, sync, async):
/// who asked what, what was decided, by which plugin and version, why, and how long it took.
///
/// ```toml
/// [decision_log]
/// path = "decisions.jsonl"   # or "-" for stderr; required
/// max_file_bytes = "64MiB"   # then decisions.jsonl becomes decisions.jsonl.1, and so on
/// max_files = 4              # rotated files kept beside the current one
/// include_text = true        # a free-text query's text (up to 4 KiB)
/// include_bytes = 0          # messages up to this size are kept whole, base64, for replay
/// ```
///
/// The table's presence turns it on. Writing never holds up a connection: records wait in a
/// queue of [`DecisionLog::QUEUE`] for a thread of their own, and one that finds the queue full
/// is dropped and counted (`qgate_decision_log_dropped_total`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DecisionLog {
    /// Where the lines go: `path = "decisions.jsonl"`, or `"-"` for stderr. Required. A relative
    /// path is resolved against the directory that holds the config file.
    pub path: PathBuf,
    /// The size at which the file is rotated: `max_file_bytes = "64MiB"`, the default, a day
    /// or more of decisions at a few hundred a second, small enough to open in an editor.
    #[serde(default = "DecisionLog::default_max_file_bytes")]
    pub max_file_bytes: ByteSize,
    /// How many rotated files are kept (`PATH.1` the newest): `max_files = 4`, the default. The
    /// oldest is deleted when a rotation would make one more.
    #[serde(default = "DecisionLog::default_max_files")]
    pub max_files: Count,
    /// Whether a free-text query's text is recorded (up to 4 KiB): `include_text = true`, the
    /// default. `false` keeps queries, which may hold client data, out of the file.
    #[serde(default = "DecisionLog::default_include_text")]
    pub include_text: bool,
    /// Messages up to this size are recorded whole (their body, base64), so that
    /// `qgate replay` can run them again: `include_bytes = "64KiB"`. 0, the default, records
    /// none: bytes are client data, and they make the file larger.
    #[serde(default = "DecisionLog::default_include_bytes")]
    pub include_bytes: ByteSize,
}

impl DecisionLog {
    /// How many records may wait for the writer: 65 536, a few seconds of a busy server's
    /// decisions, about 20 MiB at most.
    pub const QUEUE: usize = 65_536;

    fn default_max_file_bytes() -> ByteSize {
        ByteSize(64 << 20)
    }

    fn default_max_files() -> Count {
        Count(4)
    }

    fn default_include_text() -> bool {
        true
    }

    fn default_include_bytes() -> ByteSize {
        ByteSize(0)
    }
}

/// `[http]`: HTTP on the q port, as kdb+ serves `.z.ph` and `.z.pp`. A client whose first bytes
/// are an HTTP request line is served HTTP, plain or inside TLS; each default's reason is in the
/// server's `HttpOptions`, whose numbers these repeat (a test in the binary keeps them equal).
///
/// ```toml
/// [http]
/// enabled = true
/// max_header_bytes = "16KiB"
/// max_body_bytes = "1MiB"
/// header_timeout = "10s"
/// keepalive_idle = "60s"
/// max_ws_message_bytes = "1MiB"
/// ws_ping_interval = "30s"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Http {
    /// Whether HTTP is served: `enabled = true`, the default. `false` reads an HTTP request as a
    /// q handshake, which fails, as before HTTP was served.
    pub enabled: bool,
    /// The largest request head (request line and headers): `max_header_bytes = "16KiB"`, the
    /// default. A larger one gets `431`.
    pub max_header_bytes: ByteSize,
    /// The largest request body: `max_body_bytes = "1MiB"`, the default. A larger one gets `413`.
    pub max_body_bytes: ByteSize,
    /// How long a request may take from its first byte to the end of its head:
    /// `header_timeout = "10s"`, the default. A slower client is closed.
    pub header_timeout: Timeout,
    /// How long a kept-alive connection may wait for its next request: `keepalive_idle = "60s"`,
    /// the default.
    pub keepalive_idle: Timeout,
    /// The largest WebSocket message (and frame): `max_ws_message_bytes = "1MiB"`, the default.
    /// A larger one closes the WebSocket with 1009.
    pub max_ws_message_bytes: ByteSize,
    /// How long a WebSocket may go without a frame from its client before it is pinged, and
    /// then closed after as long again: `ws_ping_interval = "30s"`, the default.
    pub ws_ping_interval: Timeout,
}

impl Http {
    /// 16 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;
    /// 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
    /// 10 s.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// 60 s.
    pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
    /// 1 MiB.
    pub const DEFAULT_MAX_WS_MESSAGE_BYTES: usize = 1 << 20;
    /// 30 s.
    pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(30);
}

impl Default for Http {
    fn default() -> Self {
        Self {
            enabled: true,
            max_header_bytes: ByteSize(Self::DEFAULT_MAX_HEADER_BYTES),
            max_body_bytes: ByteSize(Self::DEFAULT_MAX_BODY_BYTES),
            header_timeout: Timeout(Self::DEFAULT_HEADER_TIMEOUT),
            keepalive_idle: Timeout(Self::DEFAULT_KEEPALIVE_IDLE),
            max_ws_message_bytes: ByteSize(Self::DEFAULT_MAX_WS_MESSAGE_BYTES),
            ws_ping_interval: Timeout(Self::DEFAULT_WS_PING_INTERVAL),
        }
    }
}

/// `[metrics]`: Prometheus metrics, served as OpenMetrics text at `http://LISTEN/metrics`.
///
/// The table's presence turns them on; `listen` is then required, since a metrics port open on
/// every interface by default would show the server's traffic to anyone who can reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Metrics {
    /// Where the metrics listener binds: `listen = "127.0.0.1:9464"` (9464 is the port
    /// OpenTelemetry's Prometheus exporter uses). Plain HTTP: keep it on loopback or a
    /// monitoring network.
    pub listen: Listen,
}

/// `[admin]`: how a running server's plugins are replaced: the file watch, and the local socket
/// through which `qgate plugins`, `qgate reload` and `qgate rollback` reach the server. It is a Unix domain socket (no network port), made in a directory
/// only the server's user can enter and checked against each peer's user id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Admin {
    /// Whether the server opens the admin socket when it runs plugins: `enabled = true`, the
    /// default.
    pub enabled: bool,
    /// The socket's path: `socket = "/run/qgate/admin.sock"`. Not set by default: the binary
    /// derives it from the listening port, `$XDG_RUNTIME_DIR/qgate/admin-PORT.sock` (or
    /// `/tmp/qgate-UID/admin-PORT.sock` without `XDG_RUNTIME_DIR`), so that the commands find
    /// the server from the same config file. A relative path is resolved against the directory
    /// that holds the config file.
    pub socket: Option<PathBuf>,
    /// Whether a plugin whose file changes is reloaded: `watch = true`, the default. The file is
    /// polled about once a second and loaded once it has stayed the same for two polls, so a
    /// file still being written is not loaded; SIGHUP and `qgate reload` work either way.
    pub watch: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            watch: true,
        }
    }
}

/// `[lock]`: a locked deployment runs only the plugin artifacts its operator approved.
///
/// ```toml
/// [lock]
/// enabled = true
/// keys = ["Pp6cZ0Zy0r2xW5m0dB1Q3o7iN9lQ2T1kY6mVbq8XyZ4="]
/// ```
///
/// With `enabled = true`, every plugin must be pinned (`sha256` in its `[[plugins]]` entry) or
/// signed by one of `keys` (an ed25519 signature of the file's bytes in `<path>.sig`, as
/// `qgate sign` writes it); the server refuses to start, and refuses a swap, for anything else.
/// A pin is checked whether or not the deployment is locked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Lock {
    /// Whether every plugin must be pinned or signed: `enabled = false`, the default.
    pub enabled: bool,
    /// The ed25519 public keys whose signatures are accepted, as base64 text (what
    /// `qgate keygen` prints): `keys = ["..."]`. None by default. The binary checks each key.
    pub keys: Vec<String>,
}

/// `[[plugins]]`: the plugin chain, in the order of the file, each name once.
///
/// Every event goes through the plugins that take it, in this order; the last plugin that answers
/// sync queries is typically the backend.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "Vec<Plugin>")]
pub struct Plugins(Vec<Plugin>);

impl Plugins {
    /// The plugins, in chain order.
    pub fn as_slice(&self) -> &[Plugin] {
        &self.0
    }

    /// Whether no plugin is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<Plugin>> for Plugins {
    type Error = String;

    fn try_from(plugins: Vec<Plugin>) -> Result<Self, Self::Error> {
        for (index, plugin) in plugins.iter().enumerate() {
            if plugin.name.is_empty() {
                return Err(format!("plugin {index}: `name` is empty"));
            }
            if plugins[..index]
                .iter()
                .any(|other| other.name == plugin.name)
            {
                return Err(format!(
                    "plugin name `{}` is used twice; each plugin needs its own name",
                    plugin.name
                ));
            }
            plugin
                .config_files()
                .map_err(|why| format!("plugin `{}`: config: {why}", plugin.name))?;
            at_most(
                "time_budget",
                plugin.time_budget.get(),
                "the longest a plugin call may run",
                Plugin::MAX_TIME_BUDGET,
            )
            .map_err(|why| format!("plugin `{}`: {why}", plugin.name))?;
            let memory = plugin.memory_limit.get();
            if memory > Plugin::MAX_MEMORY_LIMIT_BYTES {
                return Err(format!(
                    "plugin `{}`: `memory_limit` of {memory} bytes is more than a plugin's memory \
                     can be, {} bytes (4GiB: WebAssembly addresses memory with 32 bits)",
                    plugin.name,
                    Plugin::MAX_MEMORY_LIMIT_BYTES
                ));
            }
        }
        Ok(Self(plugins))
    }
}

/// One `[[plugins]]` entry: a WebAssembly component and its settings.
///
/// ```toml
/// [[plugins]]
/// name = "allowlist"
/// path = "plugins/target/wasm32-wasip2/release/allowlist.wasm"
/// fail_open = false
/// time_budget = "100ms"
/// memory_limit = "64MiB"
/// max_file_bytes = "64MiB"
/// config = { users = { admin = ["*"] } }
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Plugin {
    /// The name the logs, the errors and the key-value store know it by: `name = "audit"`.
    /// Required, and unique in the file.
    pub name: String,
    /// The component file: `path = "plugins/audit.wasm"`. Required. A relative path is resolved
    /// against the directory that holds the config file.
    pub path: PathBuf,
    /// Whether a trap, an overrun time budget or the memory cap counts as a pass rather than a
    /// deny: `fail_open = false`, the default (fail-closed).
    #[serde(default)]
    pub fail_open: bool,
    /// How much CPU time one call may use: `time_budget = "100ms"`, the default. A call is not
    /// charged for time it spent preempted by other work, but one that takes ten times its
    /// budget on the wall clock (at least a second) is cut all the same. More than zero, and at most
    /// [`Plugin::MAX_TIME_BUDGET`].
    #[serde(default = "Plugin::default_time_budget")]
    pub time_budget: Timeout,
    /// How much linear memory one instance may have: `memory_limit = "64MiB"`, the default. At
    /// most [`Plugin::MAX_MEMORY_LIMIT_BYTES`].
    #[serde(default = "Plugin::default_memory_limit")]
    pub memory_limit: ByteSize,
    /// The largest component file that is read: `max_file_bytes = "64MiB"`, the default. A
    /// larger file is refused at start and on every swap, without being read.
    #[serde(default = "Plugin::default_max_file_bytes")]
    pub max_file_bytes: ByteSize,
    /// The plugin's own settings, any TOML table, handed to the plugin as a JSON object:
    /// `config = { include_text = true }` or a `[plugins.config]` table. Empty by default.
    ///
    /// A value written `{ file = "PATH" }` is a file the host reads and hands to the plugin as
    /// its text, since a plugin cannot read files: `policies = { file = "policy/qgate.cedar" }`.
    /// A relative path is resolved against the directory that holds the config file. It may be
    /// pinned, `{ file = "PATH", sha256 = "9f86d0..." }`, and is read under the same rules as
    /// the component (a regular file, at most `max_file_bytes`, UTF-8 text). The file is part of
    /// the plugin's version: a change to it is a new version, swapped in as a new component is.
    /// So a table with a `file` key is always such a reference: see [`Plugin::config_files`].
    #[serde(default)]
    pub config: toml::Table,
    /// The one version of the component that may run, by its sha256 (64 hex digits):
    /// `sha256 = "9f86d0..."`. Not set by default. When set, a file with any other digest is
    /// refused at start and on every swap.
    #[serde(default)]
    pub sha256: Option<Sha256>,
    /// The upstreams this plugin may send a message to with a route verdict:
    /// `routes = ["hdb"]`. None by default. Each must name an `[[upstream]]`; a route to any other
    /// is refused (a deny naming the plugin).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Where the plugin's key-value store is kept across restarts: `kv_file = "state/firewall.kv"`.
    /// Not set by default: the store lives in memory and survives hot-swaps, not restarts. When
    /// set, the file is loaded at start (a missing file is an empty store; a file that is not a
    /// store refuses to start) and written atomically (a temporary file renamed over it, mode
    /// 0600) at most every 5 s when the store changed, and at shutdown. A relative path is
    /// resolved against the directory that holds the config file.
    #[serde(default)]
    pub kv_file: Option<PathBuf>,
    /// Whether the plugin decides (`mode = "live"`, the default) or only runs beside the chain:
    /// `mode = "shadow"` runs it on every event it takes after the live chain has decided, off
    /// the connection's path, and records where it disagrees (the decision log, and
    /// `qgate_shadow_disagreements_total`); it never changes what a client gets.
    #[serde(default)]
    pub mode: PluginMode,
}

/// Whether a plugin decides, or is a candidate watched beside the chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PluginMode {
    /// It is part of the chain: `"live"`, the default.
    #[default]
    Live,
    /// It runs after the chain, off the connection's path, and its disagreements are recorded:
    /// `"shadow"`.
    Shadow,
}

impl Plugin {
    /// 100 ms: a policy decides in microseconds, and a backend should answer within tens of
    /// milliseconds.
    pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_millis(100);
    /// 64 MiB: a Rust guest needs 1 to 2 MiB; the rest is room for tables and decoded messages.
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 << 20;
    /// 60 s: a plugin call holds a thread for as long as it runs; a policy decides in
    /// microseconds and a backend answers in milliseconds, so a minute is a plugin that is stuck.
    pub const MAX_TIME_BUDGET: Duration = Duration::from_secs(60);
    /// 4 GiB: a WebAssembly memory is addressed with 32 bits, so no instance can have more.
    pub const MAX_MEMORY_LIMIT_BYTES: usize = 4 << 30;
    /// 64 MiB: a component is a few MiB at most; the rest is room for one with data built in.
    pub const DEFAULT_MAX_FILE_BYTES: usize = 64 << 20;

    /// The plugin's `config` table as the JSON object the plugin gets. A TOML datetime becomes
    /// its RFC 3339 text, and a float that JSON cannot hold (NaN, an infinity) becomes `null`.
    /// A `{ file = "PATH" }` value stays as it is written; the host puts the file's text in its
    /// place ([`Plugin::config_files`] lists them).
    pub fn config_json(&self) -> serde_json::Map<String, serde_json::Value> {
        table_to_json(&self.config)
    }

    /// The values of the plugin's `config` that are files (`{ file = "PATH" }`), in the order of
    /// the table.
    ///
    /// # Errors
    ///
    /// A table with a `file` key that is not such a reference: `file` is not text, a key other
    /// than `file` and `sha256` is beside it, or `sha256` is not a digest.
    pub fn config_files(&self) -> Result<Vec<ConfigFile>, String> {
        let mut files = Vec::new();
        let mut table = self.config.clone();
        visit_files(&mut table, &mut |key, file| {
            let path = match file.get(FILE_KEY) {
                Some(toml::Value::String(path)) if !path.is_empty() => PathBuf::from(path),
                _ => {
                    return Err(format!(
                        "{}: a file is written {{ file = \"PATH\" }}, with the path as text",
                        key.display
                    ));
                }
            };
            let sha256 = match file.get(SHA256_KEY) {
                None => None,
                Some(toml::Value::String(hex)) => Some(
                    hex.parse::<Sha256>()
                        .map_err(|why| format!("{}: sha256: {why}", key.display))?,
                ),
                Some(_) => {
                    return Err(format!(
                        "{}: sha256: a pin is the file's sha256 as 64 hex digits of text",
                        key.display
                    ));
                }
            };
            if let Some(other) = file.keys().find(|k| *k != FILE_KEY && *k != SHA256_KEY) {
                return Err(format!(
                    "{}: `{other}` beside `file`: a table with a `file` key is a file the host \
                     reads for the plugin, and takes only `file` and `sha256`",
                    key.display
                ));
            }
            files.push(ConfigFile {
                key: key.display.clone(),
                pointer: key.pointer.clone(),
                path,
                sha256,
            });
            Ok(())
        })?;
        Ok(files)
    }

    fn default_time_budget() -> Timeout {
        Timeout(Self::DEFAULT_TIME_BUDGET)
    }

    fn default_memory_limit() -> ByteSize {
        ByteSize(Self::DEFAULT_MEMORY_LIMIT_BYTES)
    }

    fn default_max_file_bytes() -> ByteSize {
        ByteSize(Self::DEFAULT_MAX_FILE_BYTES)
    }
}

/// A value of a plugin's `config` that the host reads from a file and hands to the plugin as
/// the file's text: `policies = { file = "policy/qgate.cedar" }`, optionally pinned with
/// `sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigFile {
    /// Where the value is, as a reader of `config.toml` would name it: `policies`,
    /// `policies[1]`, `rules.base`.
    pub key: String,
    /// Where the value is as a JSON pointer (RFC 6901) into the plugin's config object:
    /// `/policies`, `/policies/1`, `/rules/base`.
    pub pointer: String,
    /// The file. Resolved against the config file's directory by [`Config::load`].
    pub path: PathBuf,
    /// The one content the file may have, when pinned.
    pub sha256: Option<Sha256>,
}

/// The key that makes a table of a plugin's config a file.
const FILE_KEY: &str = "file";
/// The key of a file's pin.
const SHA256_KEY: &str = "sha256";

/// Where a value sits in a plugin's config.
struct KeyPath {
    display: String,
    pointer: String,
}

impl KeyPath {
    fn child(&self, key: &str) -> Self {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        Self {
            display: if self.display.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.display)
            },
            pointer: format!("{}/{escaped}", self.pointer),
        }
    }

    fn index(&self, index: usize) -> Self {
        Self {
            display: format!("{}[{index}]", self.display),
            pointer: format!("{}/{index}", self.pointer),
        }
    }
}

/// Calls `found` with each table of `table` (at any depth, in arrays too) that has a `file` key.
fn visit_files<E>(
    table: &mut toml::Table,
    found: &mut dyn FnMut(&KeyPath, &mut toml::Table) -> Result<(), E>,
) -> Result<(), E> {
    fn visit<E>(
        value: &mut toml::Value,
        at: &KeyPath,
        found: &mut dyn FnMut(&KeyPath, &mut toml::Table) -> Result<(), E>,
    ) -> Result<(), E> {
        match value {
            toml::Value::Table(table) if table.contains_key(FILE_KEY) => found(at, table),
            toml::Value::Table(table) => table
                .iter_mut()
                .try_for_each(|(key, value)| visit(value, &at.child(key), found)),
            toml::Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .try_for_each(|(index, value)| visit(value, &at.index(index), found)),
            _ => Ok(()),
        }
    }
    let root = KeyPath {
        display: String::new(),
        pointer: String::new(),
    };
    table
        .iter_mut()
        .try_for_each(|(key, value)| visit(value, &root.child(key), found))
}

fn table_to_json(table: &toml::Table) -> serde_json::Map<String, serde_json::Value> {
    table
        .iter()
        .map(|(key, value)| (key.clone(), value_to_json(value)))
        .collect()
}

fn value_to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(text) => Json::String(text.clone()),
        toml::Value::Integer(number) => Json::from(*number),
        toml::Value::Float(number) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        toml::Value::Boolean(flag) => Json::Bool(*flag),
        toml::Value::Datetime(datetime) => Json::String(datetime.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        toml::Value::Table(table) => Json::Object(table_to_json(table)),
    }
}
