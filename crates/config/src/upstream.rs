//! `[[upstream]]`: the kdb+ services qgate stands in front of (gateway mode).
//!
//! ```toml
//! [[upstream]]
//! name = "rdb"
//! servers = ["rdb1:5010", "rdb2:5010"]
//! user = "qgate"
//! password_env = "RDB_PASSWORD"
//! mode = "pooled"
//! pool_size = 4
//! query_timeout = "30s"
//! ```
//!
//! The first `[[upstream]]` is the default: a message that every plugin passes goes there.
//! Every key but `name` and `servers` has a default; the reasons are in `config.toml` and in the
//! gateway's `UpstreamOptions`, whose numbers these repeat (a test in the binary keeps them equal).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{
    error::ConfigError,
    value::{ByteSize, Count, Timeout, TimeoutOrOff},
};

/// Every `[[upstream]]`, in the file's order, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<Upstream>")]
pub struct Upstreams(pub(crate) Vec<Upstream>);

impl Upstreams {
    /// The services, the default first.
    pub fn as_slice(&self) -> &[Upstream] {
        &self.0
    }

    /// Whether no upstream is configured (qgate is not a gateway).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One pinned upstream named [`Upstreams::FLAG_NAME`] with these replicas: what `qgate serve
    /// --upstream HOST:PORT` means.
    ///
    /// # Errors
    ///
    /// A message naming the address that is not `HOST:PORT`.
    pub fn from_servers(servers: &[String]) -> Result<Self, String> {
        for server in servers {
            check_server(server)?;
        }
        let mut upstream = Upstream::new(Self::FLAG_NAME);
        upstream.servers = servers.to_vec();
        Ok(Self(vec![upstream]))
    }

    /// The name of the upstream that `--upstream` makes.
    pub const FLAG_NAME: &str = "default";

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.0.iter().find(|upstream| upstream.name == name)
    }
}

impl TryFrom<Vec<Upstream>> for Upstreams {
    type Error = String;

    fn try_from(upstreams: Vec<Upstream>) -> Result<Self, Self::Error> {
        for (index, upstream) in upstreams.iter().enumerate() {
            if upstreams[..index]
                .iter()
                .any(|other| other.name == upstream.name)
            {
                return Err(format!(
                    "upstream name `{}` is used twice; each upstream needs its own name",
                    upstream.name
                ));
            }
        }
        Ok(Self(upstreams))
    }
}

/// One `[[upstream]]`: a kdb+ service, its replicas, and how qgate talks to it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawUpstream")]
#[non_exhaustive]
pub struct Upstream {
    /// The service's name, as routes and logs name it: `name = "rdb"`. Required, unique.
    pub name: String,
    /// Its replicas, `HOST:PORT` each: `servers = ["rdb1:5010", "rdb2:5010"]`. Required. A query
    /// goes to one of them: the least busy that is up.
    pub servers: Vec<String>,
    /// The service account qgate logs in as: `user = "qgate"`. Empty by default (no user, as
    /// `hopen` without one). Not allowed with `credentials = "passthrough"`.
    pub user: String,
    /// The service account's password.
    pub password: Password,
    /// Whose identity the upstream sees: `credentials = "service"`, the default (the `user`
    /// above, for every client), or `"passthrough"` (each client's own user and password, which
    /// needs `mode = "pinned"`).
    pub credentials: CredentialsMode,
    /// `mode = "pinned"`, the default (an upstream connection per client session, so q session
    /// state works as if the client were connected directly), or `"pooled"` (`pool_size`
    /// connections per replica, shared by every client).
    pub mode: UpstreamMode,
    /// Connections per replica in pooled mode: `pool_size = 4`, the default.
    pub pool_size: Count,
    /// TLS to the upstream: `[upstream.tls]` (`enabled`, `ca_file`, `server_name`, `cert_file`,
    /// `key_file`). Off by default.
    pub tls: UpstreamTls,
    /// How long a connection and its login may take: `connect_timeout = "5s"`, the default.
    pub connect_timeout: Timeout,
    /// How long a query may wait for its reply: `query_timeout = "5m"`, the default, or
    /// `"off"`. q cannot cancel a query: the connection is dropped, so give the upstream its own
    /// `-T`.
    pub query_timeout: TimeoutOrOff,
    /// How long a query may wait for a pooled connection: `queue_timeout = "10s"`, the default.
    pub queue_timeout: Timeout,
    /// The largest reply forwarded: `max_reply_bytes = "256MiB"`, the default. A larger one is
    /// read and dropped, and the client gets an error naming the limit.
    pub max_reply_bytes: ByteSize,
    /// How often each replica is checked: `health_interval = "5s"`, the default.
    pub health_interval: Timeout,
    /// The query a health check sends: `health_query = "::"`, the default.
    pub health_query: String,
    /// A q function that each forwarded message is wrapped in, `(wrap; user; message)`, so that
    /// the upstream can run it as the end user (TorQ's `.pm.execas`): `wrap = ".gw.execas"`. Not
    /// set by default: messages go as they came.
    pub wrap: Option<String>,
}

/// The service account's password: written in the file, or the name of an environment variable
/// that holds it (so secrets stay out of the file). `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Password {
    /// `password_env = "RDB_PASSWORD"`: read from this variable at start.
    Env(String),
    /// `password = "..."`.
    Inline(String),
    /// Neither: no password is sent.
    #[default]
    None,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(variable) => f.debug_tuple("Env").field(variable).finish(),
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::None => f.write_str("None"),
        }
    }
}

/// `credentials`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsMode {
    /// Each client's own user and password.
    Passthrough,
    /// The service account.
    #[default]
    Service,
}

/// `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    /// A connection per client session.
    #[default]
    Pinned,
    /// Shared connections.
    Pooled,
}

/// `[upstream.tls]`: TLS to the upstream.
///
/// ```toml
/// [upstream.tls]
/// enabled = true
/// ca_file = "upstream-ca.pem"
/// server_name = "rdb.internal"
/// cert_file = "qgate-client.pem"
/// key_file = "qgate-client.key"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamTls {
    /// Whether connections to the upstream use TLS: `enabled = false`, the default.
    pub enabled: bool,
    /// The CA bundle (PEM) the upstream's certificate must chain to. Required with TLS on.
    /// A relative path is resolved against the directory that holds the config file.
    pub ca_file: Option<PathBuf>,
    /// The name the upstream's certificate must carry: each server's host by default.
    pub server_name: Option<String>,
    /// A client certificate chain (PEM), for an upstream that asks for one; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); with `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl Upstream {
    /// 4, as the gateway's default.
    pub const DEFAULT_POOL_SIZE: usize = 4;
    /// 5 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// 5 minutes.
    pub const DEFAULT_QUERY_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));
    /// 10 s.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
    /// 256 MiB.
    pub const DEFAULT_MAX_REPLY_BYTES: usize = 256 << 20;
    /// 5 s.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    /// `::`.
    pub const DEFAULT_HEALTH_QUERY: &str = "::";

    /// An upstream named `name` with no servers and every default.
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            servers: Vec::new(),
            user: String::new(),
            password: Password::None,
            credentials: CredentialsMode::Service,
            mode: UpstreamMode::Pinned,
            pool_size: Count(Self::DEFAULT_POOL_SIZE),
            tls: UpstreamTls::default(),
            connect_timeout: Timeout(Self::DEFAULT_CONNECT_TIMEOUT),
            query_timeout: TimeoutOrOff(Self::DEFAULT_QUERY_TIMEOUT),
            queue_timeout: Timeout(Self::DEFAULT_QUEUE_TIMEOUT),
            max_reply_bytes: ByteSize(Self::DEFAULT_MAX_REPLY_BYTES),
            health_interval: Timeout(Self::DEFAULT_HEALTH_INTERVAL),
            health_query: Self::DEFAULT_HEALTH_QUERY.to_owned(),
            wrap: None,
        }
    }

    /// The password, reading `password_env` through `env` (`|name| std::env::var(name).ok()` in
    /// the binary, so that tests never touch the process environment).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Environment`] when `password_env` names a variable that is not set.
    pub fn resolve_password(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        match &self.password {
            Password::None => Ok(None),
            Password::Inline(password) => Ok(Some(password.clone())),
            Password::Env(variable) => {
                env(variable)
                    .map(Some)
                    .ok_or_else(|| ConfigError::Environment {
                        variable: variable.clone(),
                        message: format!(
                            "upstream {}: password_env names {variable}, which is not set; set it \
                         to the service account's password",
                            self.name
                        ),
                    })
            }
        }
    }

    /// Makes the TLS files absolute against `dir`.
    pub(crate) fn resolve_paths(&mut self, dir: &std::path::Path) {
        for file in [
            &mut self.tls.ca_file,
            &mut self.tls.cert_file,
            &mut self.tls.key_file,
        ]
        .into_iter()
        .flatten()
        {
            *file = dir.join(&*file);
        }
    }
}

/// `[[upstream]]` as written, before the checks that span keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    servers: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    credentials: CredentialsMode,
    #[serde(default)]
    mode: UpstreamMode,
    #[serde(default)]
    pool_size: Option<Count>,
    #[serde(default)]
    tls: UpstreamTls,
    #[serde(default)]
    connect_timeout: Option<Timeout>,
    #[serde(default)]
    query_timeout: Option<TimeoutOrOff>,
    #[serde(default)]
    queue_timeout: Option<Timeout>,
    #[serde(default)]
    max_reply_bytes: Option<ByteSize>,
    #[serde(default)]
    health_interval: Option<Timeout>,
    #[serde(default)]
    health_query: Option<String>,
    #[serde(default)]
    wrap: Option<String>,
}

impl TryFrom<RawUpstream> for Upstream {
    type Error = String;

    fn try_from(raw: RawUpstream) -> Result<Self, Self::Error> {
        let name = raw.name;
        let fail = |message: String| Err(format!("upstream {name:?}: {message}"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return fail(
                "`name` must be letters, digits, `_`, `-` or `.`, as routes and logs write it"
                    .to_owned(),
            );
        }
        if raw.servers.is_empty() {
            return fail("`servers` is empty: list at least one \"HOST:PORT\"".to_owned());
        }
        for server in &raw.servers {
            if let Err(message) = check_server(server) {
                return fail(message);
            }
        }
        let password = match (raw.password, raw.password_env) {
            (Some(_), Some(_)) => {
                return fail(
                    "`password` and `password_env` are both set; keep one (`password_env` keeps \
                     the secret out of the file)"
                        .to_owned(),
                );
            }
            (Some(password), None) => Password::Inline(password),
            (None, Some(variable)) if variable.is_empty() => {
                return fail("`password_env` is empty: name an environment variable".to_owned());
            }
            (None, Some(variable)) => Password::Env(variable),
            (None, None) => Password::None,
        };
        if raw.credentials == CredentialsMode::Passthrough {
            if raw.user.is_some() || password != Password::None {
                return fail(
                    "`credentials = \"passthrough\"` logs in as each client; remove `user` and \
                     the password"
                        .to_owned(),
                );
            }
            if raw.mode == UpstreamMode::Pooled {
                return fail(
                    "`credentials = \"passthrough\"` needs `mode = \"pinned\"`: pooled \
                     connections are shared by every user, so they cannot log in as each"
                        .to_owned(),
                );
            }
        }
        if raw.mode == UpstreamMode::Pinned && raw.pool_size.is_some() {
            return fail(
                "`pool_size` is for `mode = \"pooled\"`; this upstream is pinned".to_owned(),
            );
        }
        if raw.tls.enabled && raw.tls.ca_file.is_none() {
            return fail(
                "`tls.enabled = true` needs `tls.ca_file`, the CA bundle the upstream's \
                 certificate chains to"
                    .to_owned(),
            );
        }
        if raw.tls.cert_file.is_some() != raw.tls.key_file.is_some() {
            return fail("`tls.cert_file` and `tls.key_file` go together".to_owned());
        }
        if !raw.tls.enabled
            && (raw.tls.ca_file.is_some()
                || raw.tls.cert_file.is_some()
                || raw.tls.server_name.is_some())
        {
            return fail("TLS files are set but `tls.enabled` is not true".to_owned());
        }
        if let Some(wrap) = &raw.wrap
            && (wrap.is_empty() || wrap.contains(char::is_whitespace))
        {
            return fail("`wrap` must name a q function, such as \".gw.execas\"".to_owned());
        }
        let health_query = raw
            .health_query
            .unwrap_or_else(|| Self::DEFAULT_HEALTH_QUERY.to_owned());
        if health_query.is_empty() {
            return fail(
                "`health_query` is empty; `::` is a probe every q process answers".to_owned(),
            );
        }
        let defaults = Self::new(&name);
        Ok(Self {
            servers: raw.servers,
            user: raw.user.unwrap_or_default(),
            password,
            credentials: raw.credentials,
            mode: raw.mode,
            pool_size: raw.pool_size.unwrap_or(defaults.pool_size),
            tls: raw.tls,
            connect_timeout: raw.connect_timeout.unwrap_or(defaults.connect_timeout),
            query_timeout: raw.query_timeout.unwrap_or(defaults.query_timeout),
            queue_timeout: raw.queue_timeout.unwrap_or(defaults.queue_timeout),
            max_reply_bytes: raw.max_reply_bytes.unwrap_or(defaults.max_reply_bytes),
            health_interval: raw.health_interval.unwrap_or(defaults.health_interval),
            health_query,
            wrap: raw.wrap,
            name,
        })
    }
}

/// Checks that `server` is `HOST:PORT` (`[v6]:PORT`), with a port from 1 to 65535.
fn check_server(server: &str) -> Result<(), String> {
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("server {server:?} is not \"HOST:PORT\""));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!(
            "server {server:?} has no host (write \"127.0.0.1:{port}\" for this machine)"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err(format!("server {server:?} has no valid port (1 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml_str(text).map_err(|e| e.to_string())
    }

    fn check_error(text: &str, part: &str) {
        let error = load(text).unwrap_err();
        assert!(error.contains(part), "{error}");
    }

    #[test]
    fn a_minimal_upstream_takes_the_defaults() {
        let config =
            load("[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:5001\"]\n").unwrap();
        let upstream = &config.upstream.as_slice()[0];
        assert_eq!(upstream.name, "rdb");
        assert_eq!(upstream.mode, super::UpstreamMode::Pinned);
        assert_eq!(upstream.pool_size.get(), 4);
        assert_eq!(
            upstream.query_timeout.get(),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(upstream.health_query, "::");
    }

    #[test]
    fn errors_name_the_upstream_and_the_fix() {
        let base = "[[upstream]]\nname = \"rdb\"\nservers = [\"h:1\"]\n";
        check_error(
            "[[upstream]]\nname = \"rdb\"\nservers = []\n",
            "`servers` is empty",
        );
        check_error(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"h\"]\n",
            "not \"HOST:PORT\"",
        );
        check_error(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"h:0\"]\n",
            "no valid port",
        );
        check_error(
            &format!("{base}password = \"a\"\npassword_env = \"B\"\n"),
            "keep one",
        );
        check_error(
            &format!("{base}credentials = \"passthrough\"\nuser = \"svc\"\n"),
            "remove `user`",
        );
        check_error(
            &format!("{base}credentials = \"passthrough\"\nmode = \"pooled\"\n"),
            "needs `mode = \"pinned\"`",
        );
        check_error(&format!("{base}pool_size = 3\n"), "`pool_size` is for");
        check_error(
            &format!("{base}[upstream.tls]\nenabled = true\n"),
            "needs `tls.ca_file`",
        );
        check_error(&format!("{base}mode = \"shared\"\n"), "unknown variant");
        check_error(&format!("{base}colour = 1\n"), "unknown field");
        check_error(&format!("{base}{base}"), "used twice");
    }

    #[test]
    fn the_password_env_is_read_through_the_lookup() {
        let config = load(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"h:1\"]\nuser = \"svc\"\npassword_env = \"RDB_PW\"\n",
        )
        .unwrap();
        let upstream = &config.upstream.as_slice()[0];
        assert!(!format!("{upstream:?}").contains("secret"));
        let password = upstream
            .resolve_password(|name| (name == "RDB_PW").then(|| "secret".to_owned()))
            .unwrap();
        assert_eq!(password.as_deref(), Some("secret"));
        let error = upstream.resolve_password(|_| None).unwrap_err();
        assert!(error.to_string().contains("RDB_PW"), "{error}");
    }
}
