//! What the gateway can be told: the upstream services, each with its replicas, credentials, mode,
//! TLS, timeouts and limits. Built by the binary from `[[upstream]]`; every default has its reason
//! here.

use std::{fmt, path::PathBuf, time::Duration};

/// Every upstream service; the first is the default one, which a message that every plugin
/// passed goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayOptions {
    /// The services, in order; the first is the default.
    pub upstreams: Vec<UpstreamOptions>,
}

impl GatewayOptions {
    /// Options for these services.
    pub fn new(upstreams: Vec<UpstreamOptions>) -> Self {
        Self { upstreams }
    }
}

/// One upstream service: a kdb+ process and its replicas.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamOptions {
    /// The service's name, as routes and logs name it.
    pub name: String,
    /// The replicas, `HOST:PORT` each; a query goes to one of them.
    pub servers: Vec<ServerAddress>,
    /// Who qgate logs in to the upstream as.
    pub credentials: Credentials,
    /// Pinned (a connection per client session) or pooled (shared connections).
    pub mode: Mode,
    /// TLS to the upstream; `None` is plain TCP.
    pub tls: Option<UpstreamTls>,
    /// How long a connection and its handshake may take.
    pub connect_timeout: Duration,
    /// How long a query may wait for its reply; `None` for no limit.
    pub query_timeout: Option<Duration>,
    /// How long a query may wait for a pooled connection.
    pub queue_timeout: Duration,
    /// The largest reply (or upstream push) that is forwarded, in bytes, on the wire and
    /// decompressed.
    pub max_reply_bytes: u64,
    /// How often each replica's health is checked.
    pub health_interval: Duration,
    /// The query a health check sends, as q text.
    pub health_query: String,
    /// A q function each forwarded message is wrapped in, `(wrap; user; message)`, so that the
    /// upstream can run it as the end user (TorQ's `.pm.execas`); `None` sends messages as they
    /// are.
    pub wrap: Option<String>,
}

impl UpstreamOptions {
    /// 5 s: a kdb+ process on the same network accepts and answers a handshake in milliseconds;
    /// five seconds rides out a full listen queue or a TLS handshake across a slow link, and a
    /// client whose upstream is down hears so soon enough to try something else.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// 5 minutes: longer than interactive and most analytic queries take, short enough that a
    /// hung upstream does not hold a client (or a pooled connection that others wait for) for
    /// ever. Raise it for services that run long batch queries; lower it for a real-time
    /// database. q's IPC cannot cancel a query, so the upstream should have its own `-T`.
    pub const DEFAULT_QUERY_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));
    /// 10 s: a pooled query waiting longer than this means the pool is too small or the upstream
    /// too slow for the load, and the client is better told so than left waiting.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
    /// 256 MiB, the server's own largest message: replies stream through qgate without being
    /// held whole, but every q client holds a reply whole, and one query that answers gigabytes
    /// is more often a mistake than a need.
    pub const DEFAULT_MAX_REPLY_BYTES: u64 = 256 << 20;
    /// 4 connections per replica: a kdb+ process without `-s` runs one query at a time, so more
    /// connections only queue inside kdb+, where qgate can neither see nor order them; four lets
    /// a few queries be on the wire at once while the fair queue orders the rest.
    pub const DEFAULT_POOL_SIZE: usize = 4;
    /// 5 s: a replica that dies is noticed within seconds (a failed connection or query notices
    /// it at once), and a check every five seconds costs a kdb+ process nothing.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    /// `::`, q's identity: every q process answers it, it reads nothing and changes nothing.
    pub const DEFAULT_HEALTH_QUERY: &str = "::";

    /// A pinned service with the default settings, logging in as `user` without a password.
    pub fn new(name: impl Into<String>, servers: Vec<ServerAddress>) -> Self {
        Self {
            name: name.into(),
            servers,
            credentials: Credentials::Service {
                user: String::new(),
                password: None,
            },
            mode: Mode::Pinned,
            tls: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
            queue_timeout: Self::DEFAULT_QUEUE_TIMEOUT,
            max_reply_bytes: Self::DEFAULT_MAX_REPLY_BYTES,
            health_interval: Self::DEFAULT_HEALTH_INTERVAL,
            health_query: Self::DEFAULT_HEALTH_QUERY.to_owned(),
            wrap: None,
        }
    }
}

impl fmt::Debug for UpstreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamOptions")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .field("credentials", &self.credentials)
            .field("mode", &self.mode)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("health_interval", &self.health_interval)
            .field("health_query", &self.health_query)
            .field("wrap", &self.wrap)
            .finish()
    }
}

/// A replica's address: a host name or IP address, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    /// The host, resolved at each connection.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ServerAddress {
    /// Parses `HOST:PORT` (`[v6]:PORT` for an IPv6 address).
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!(
                "{text:?} has no host (write 127.0.0.1:PORT for this machine)"
            ));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{text:?} has no valid port (1 to 65535)"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Who qgate logs in to an upstream as. `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The client's own user name and password, as it logged in to qgate.
    Passthrough,
    /// A service account: every connection logs in as this user.
    Service {
        /// The user name.
        user: String,
        /// The password; `None` sends none (`user` alone, as q's `hopen` without one).
        password: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passthrough => f.write_str("Passthrough"),
            Self::Service { user, password } => f
                .debug_struct("Service")
                .field("user", user)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// How client sessions map to upstream connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One upstream connection per client session, opened with it and closed with it, so q's
    /// session semantics hold (`.z.po`/`.z.pc`, `.z.w`, deferred replies, subscriptions).
    Pinned,
    /// `pool_size` connections per replica, shared by every client, one query in flight on each.
    Pooled {
        /// Connections per replica.
        pool_size: usize,
    },
}

/// TLS to an upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamTls {
    /// The CA bundle (PEM) that the upstream's certificate must chain to.
    pub ca_file: PathBuf,
    /// The name the certificate must carry; `None` uses each replica's host.
    pub server_name: Option<String>,
    /// A client certificate chain and its key (PEM), for an upstream that asks for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl UpstreamTls {
    /// TLS trusting `ca_file`, checking each replica's host name, without a client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            server_name: None,
            client_cert: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<(&str, u16), &str>) {
        let got = ServerAddress::parse(text);
        match expect {
            Ok((host, port)) => {
                let address = got.unwrap();
                assert_eq!(
                    (address.host.as_str(), address.port),
                    (host, port),
                    "{text}"
                );
            }
            Err(part) => {
                let error = got.unwrap_err();
                assert!(error.contains(part), "{text}: {error}");
            }
        }
    }

    #[test]
    fn server_addresses() {
        check("127.0.0.1:5001", Ok(("127.0.0.1", 5001)));
        check("rdb.example.com:5010", Ok(("rdb.example.com", 5010)));
        check("[::1]:5001", Ok(("::1", 5001)));
        check("5001", Err("not HOST:PORT"));
        check(":5001", Err("no host"));
        check("host:0", Err("no valid port"));
        check("host:x", Err("no valid port"));
        assert_eq!(
            ServerAddress::parse("[::1]:5").unwrap().to_string(),
            "[::1]:5"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let credentials = Credentials::Service {
            user: "svc".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
