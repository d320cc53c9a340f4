//! What the server can be told: limits, the password file, shutdown. Built by the binary from
//! the config file; the server never reads configuration itself.

use std::{path::PathBuf, time::Duration};

/// Everything [`crate::run`] needs besides the listener, the hooks and the shutdown signal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Limits on what one client may cost.
    pub limits: ServerLimits,
    /// The password file (`-U` / `-u`), when there is one.
    pub password_file: Option<PasswordFile>,
    /// How long in-flight sync queries may run after a shutdown signal before their connections
    /// are cut.
    pub shutdown_grace: Duration,
    /// TLS on the q port; `None` serves plain q IPC only, as q's `-E 0`.
    pub tls: Option<TlsOptions>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            limits: ServerLimits::default(),
            password_file: None,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            tls: None,
        }
    }
}

impl ServerOptions {
    /// 10 s: enough for a typical query to finish, short enough for a deploy or an orchestrator's
    /// stop timeout (Kubernetes waits 30 s by default).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
}

/// A password file, as q's `-U file` or `-u file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordFile {
    /// The file: `user:password` lines, the password plain, MD5 hex or SHA-1 hex.
    pub path: PathBuf,
    /// `-u` rather than `-U`: see the README for what qgate adds for it.
    pub restricted: bool,
}

/// TLS on the q port: the certificate, who may connect without it, and client authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Whether plain clients are served too.
    pub mode: TlsMode,
    /// The certificate chain, PEM: the leaf first, then the intermediates, all of them served.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1). Refused when group or others may read it.
    pub key_file: PathBuf,
    /// Whether clients must present a certificate, and the CA bundle that verifies it.
    pub client_auth: ClientAuth,
    /// Whether a verified client certificate names the user, instead of the handshake.
    pub user_from: UserFrom,
    /// How often the certificate and key files are checked for a change.
    pub reload_interval: Duration,
}

impl TlsOptions {
    /// 1 s: a renewed certificate is served within a second, and a `stat` of two files a second
    /// costs nothing.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

    /// Loads the certificate, the key and the CA bundle as [`crate::run`] will, and drops them:
    /// for a binary that wants to refuse a bad TLS setup before it binds or announces anything.
    ///
    /// # Errors
    ///
    /// As [`crate::run`] for TLS: a file that cannot be read or parsed, a key that does not match
    /// the certificate or that others may read, a CA bundle without a usable certificate.
    pub fn check(&self) -> anyhow::Result<()> {
        crate::tls::Tls::load(self).map(drop)
    }

    /// TLS with `cert_file` and `key_file`, without client authentication.
    pub fn new(mode: TlsMode, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            mode,
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_auth: ClientAuth::None,
            user_from: UserFrom::None,
            reload_interval: Self::DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Whether a TLS port serves plain clients too: q's `-E 1` and `-E 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain and TLS clients on one port, told apart by their first byte (`-E 1`).
    Optional,
    /// TLS clients only (`-E 2`): a plain HTTP request is redirected to https, a plain q client is
    /// closed with a log line saying why.
    Required,
}

/// Client certificates: kdb+'s `SSL_VERIFY_CLIENT` (`NO`, `IFPRESENT`, `YES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// A certificate is asked for; a client without one is served, one with a certificate that
    /// the CA bundle (this file, PEM) does not verify is refused.
    Optional(PathBuf),
    /// Every client must present a certificate that the CA bundle (this file, PEM) verifies.
    Required(PathBuf),
}

/// Where the user name of a client with a verified certificate comes from.
///
/// With `Cn` or `San`, a client that presents a verified certificate is that certificate's
/// identity: the handshake's user name is ignored and the password file is not consulted (the
/// certificate is the credential); the auth hook still runs and may refuse or rename. A client
/// without a certificate (possible with [`ClientAuth::Optional`]) is authenticated as usual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserFrom {
    /// The subject's common name; a certificate without one is refused.
    Cn,
    /// The handshake's user name, as without TLS.
    #[default]
    None,
    /// The first subject alternative name; a certificate without one is refused.
    San,
}

/// Limits, each with a default and its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// The largest message, after decompression, in bytes.
    pub max_message_bytes: usize,
    /// The longest handshake, in bytes.
    pub max_handshake_bytes: usize,
    /// How long a client has to complete its handshake.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent (between messages, or in the middle of one) before it
    /// is closed. `None` for no limit.
    pub idle_timeout: Option<Duration>,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once for one user name.
    pub max_connections_per_user: usize,
}

impl ServerLimits {
    /// 256 MiB: see [`qgate_ipc::Limits::DEFAULT_MAX_MESSAGE_BYTES`].
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = qgate_ipc::Limits::DEFAULT_MAX_MESSAGE_BYTES;
    /// 64 KiB: see [`qgate_ipc::handshake::DEFAULT_MAX_HANDSHAKE_BYTES`].
    pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize =
        qgate_ipc::handshake::DEFAULT_MAX_HANDSHAKE_BYTES;
    /// 10 s, as aiokdb's server: a real client sends its handshake at once, and a slow one must
    /// not hold a connection slot for long.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// None: q itself never closes an idle client, and tickerplant subscribers sit idle for hours.
    pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;
    /// 10 000: far above kdb+'s old 1022, within a default `ulimit -n` raised for servers.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// 1 000: one runaway client pool cannot take every slot.
    pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 1_000;
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_handshake_bytes: Self::DEFAULT_MAX_HANDSHAKE_BYTES,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: Self::DEFAULT_MAX_CONNECTIONS_PER_USER,
        }
    }
}
