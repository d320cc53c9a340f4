//! The schema: one struct per table, each key with its TOML form and its default.
//!
//! Every struct denies unknown keys and takes its defaults from [`Default`], so a table or a key
//! that is left out means "the default", and a misspelt one is an error rather than a silent
//! default.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    error::ConfigError,
    tls::Tls,
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
    /// Logging: `[log]`.
    pub log: Log,
    /// The plugin chain, in order: `[[plugins]]`. None by default.
    pub plugins: Plugins,
    /// The admin socket that `qgate plugins`, `qgate reload` and `qgate rollback` use: `[admin]`.
    pub admin: Admin,
    /// Which plugin artifacts may run: `[lock]`.
    pub lock: Lock,
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
        serde_path_to_error::deserialize(deserializer)
            .map_err(|error| ConfigError::invalid(text, &error))
    }

    /// Reads and parses the config file at `path`.
    ///
    /// Relative paths (`auth.password_file`, `server.plugin_cache_dir`, the `[tls]` files, each
    /// plugin's `path`, `admin.socket`) are resolved against the directory that holds the config
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
            for plugin in &mut config.plugins.0 {
                plugin.path = dir.join(&plugin.path);
            }
            if let Some(socket) = &mut config.admin.socket {
                *socket = dir.join(&*socket);
            }
        }
        Ok(config)
    }
}

/// `[server]`: the listener and shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Server {
    /// The address to listen on: `listen = "127.0.0.1:5000"`, the default.
    ///
    /// A bare port, `listen = 5000` or `listen = "5000"`, listens on every interface
    /// (`0.0.0.0:5000`), as q's `-p 5000` does. The default is the loopback interface only, so
    /// that a server started without a config is not reachable from other machines by accident.
    pub listen: Listen,
    /// How long in-flight queries may run after a shutdown signal before their connections are
    /// cut: `shutdown_grace = "10s"`, the default. `"0s"` cuts them at once.
    pub shutdown_grace: HumanDuration,
    /// Where compiled plugins are cached between starts: `plugin_cache_dir = "target/qgate-cache"`.
    /// None by default: every plugin is compiled at every start (tens of milliseconds each).
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub plugin_cache_dir: Option<PathBuf>,
}

impl Server {
    /// `127.0.0.1:5000`: q's customary port, on the loopback interface only.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
    /// 10 s: as the server's default grace period.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: Listen::from(Self::DEFAULT_LISTEN),
            shutdown_grace: HumanDuration::from(Self::DEFAULT_SHUTDOWN_GRACE),
            plugin_cache_dir: None,
        }
    }
}

/// `[auth]`: who may connect.
///
/// With no password file, every user name and password is accepted, as q without `-U` or `-u`
/// accepts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
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
}

/// `[auth]` as written, before the check that `restricted` comes with a password file.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    password_file: Option<PathBuf>,
    restricted: bool,
}

impl TryFrom<RawAuth> for Auth {
    type Error = &'static str;

    fn try_from(raw: RawAuth) -> Result<Self, Self::Error> {
        if raw.restricted && raw.password_file.is_none() {
            return Err("`restricted = true` needs a `password_file`, as q's -u needs a file");
        }
        Ok(Self {
            password_file: raw.password_file,
            restricted: raw.restricted,
        })
    }
}

/// `[limits]`: what one client may cost. Each default has its reason in the server's
/// `ServerLimits`, whose numbers these repeat (a test in the binary keeps them equal).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// The largest message a client may send, after decompression: `max_message_bytes =
    /// "256MiB"`, the default. An integer is a number of bytes.
    pub max_message_bytes: ByteSize,
    /// The longest handshake (credentials, capability byte and terminator): `max_handshake_bytes =
    /// "64KiB"`, the default.
    pub max_handshake_bytes: ByteSize,
    /// How long a client has to complete its handshake: `handshake_timeout = "10s"`, the default.
    pub handshake_timeout: Timeout,
    /// How long a connection may stay silent before it is closed: `idle_timeout = "off"`, the
    /// default, or a duration such as `idle_timeout = "30m"`.
    pub idle_timeout: TimeoutOrOff,
    /// Connections open at once, in all: `max_connections = 10000`, the default.
    pub max_connections: Count,
    /// Connections open at once for one user name: `max_connections_per_user = 1000`, the default.
    pub max_connections_per_user: Count,
}

impl Limits {
    /// 256 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;
    /// 64 KiB.
    pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 64 << 10;
    /// 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Off: q itself never closes an idle client.
    pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;
    /// 10 000.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// 1 000.
    pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 1_000;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: ByteSize(Self::DEFAULT_MAX_MESSAGE_BYTES),
            max_handshake_bytes: ByteSize(Self::DEFAULT_MAX_HANDSHAKE_BYTES),
            handshake_timeout: Timeout(Self::DEFAULT_HANDSHAKE_TIMEOUT),
            idle_timeout: TimeoutOrOff(Self::DEFAULT_IDLE_TIMEOUT),
            max_connections: Count(Self::DEFAULT_MAX_CONNECTIONS),
            max_connections_per_user: Count(Self::DEFAULT_MAX_CONNECTIONS_PER_USER),
        }
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
    /// budget on the wall clock (at least a second) is cut all the same.
    #[serde(default = "Plugin::default_time_budget")]
    pub time_budget: HumanDuration,
    /// How much linear memory one instance may have: `memory_limit = "64MiB"`, the default.
    #[serde(default = "Plugin::default_memory_limit")]
    pub memory_limit: ByteSize,
    /// The largest component file that is read: `max_file_bytes = "64MiB"`, the default. A
    /// larger file is refused at start and on every swap, without being read.
    #[serde(default = "Plugin::default_max_file_bytes")]
    pub max_file_bytes: ByteSize,
    /// The plugin's own settings, any TOML table, handed to the plugin as a JSON object:
    /// `config = { include_text = true }` or a `[plugins.config]` table. Empty by default.
    #[serde(default)]
    pub config: toml::Table,
    /// The one version of the component that may run, by its sha256 (64 hex digits):
    /// `sha256 = "9f86d0..."`. Not set by default. When set, a file with any other digest is
    /// refused at start and on every swap.
    #[serde(default)]
    pub sha256: Option<Sha256>,
}

impl Plugin {
    /// 100 ms: a policy decides in microseconds, and a backend should answer within tens of
    /// milliseconds.
    pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_millis(100);
    /// 64 MiB: a Rust guest needs 1 to 2 MiB; the rest is room for tables and decoded messages.
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 << 20;
    /// 64 MiB: a component is a few MiB at most; the rest is room for one with data built in.
    pub const DEFAULT_MAX_FILE_BYTES: usize = 64 << 20;

    /// The plugin's `config` table as the JSON object the plugin gets. A TOML datetime becomes
    /// its RFC 3339 text, and a float that JSON cannot hold (NaN, an infinity) becomes `null`.
    pub fn config_json(&self) -> serde_json::Map<String, serde_json::Value> {
        table_to_json(&self.config)
    }

    fn default_time_budget() -> HumanDuration {
        HumanDuration::from(Self::DEFAULT_TIME_BUDGET)
    }

    fn default_memory_limit() -> ByteSize {
        ByteSize(Self::DEFAULT_MEMORY_LIMIT_BYTES)
    }

    fn default_max_file_bytes() -> ByteSize {
        ByteSize(Self::DEFAULT_MAX_FILE_BYTES)
    }
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
