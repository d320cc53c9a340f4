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
    value::{ByteSize, Count, HumanDuration, Listen, Timeout, TimeoutOrOff},
};

/// A whole config file.
///
/// Every table is optional; an empty file is [`Config::default`], the built-in defaults, which the
/// reference `config.toml` at the repository root spells out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The listener and shutdown: `[server]`.
    pub server: Server,
    /// Who may connect: `[auth]`.
    pub auth: Auth,
    /// What one client may cost: `[limits]`.
    pub limits: Limits,
    /// Logging: `[log]`.
    pub log: Log,
}

impl Config {
    /// Parses a config from TOML text.
    ///
    /// Relative paths in it (`auth.password_file`) stay as written, relative to the current
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
    /// A relative `auth.password_file` is resolved against the directory that holds the config
    /// file, so a config and its password file can move together.
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
        if let (Some(password_file), Some(dir)) = (&mut config.auth.password_file, path.parent()) {
            *password_file = dir.join(&*password_file);
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
