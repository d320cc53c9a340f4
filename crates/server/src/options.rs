//! What the server can be told: limits, the password file, shutdown. Built by the binary from
//! the config file; the server never reads configuration itself.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

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
    /// How failed logins slow down later attempts from the same address or for the same user.
    pub login_backoff: LoginBackoff,
    /// HTTP on the q port, as kdb+ serves it.
    pub http: HttpOptions,
    /// How many threads serve connections, each connection on one of them for its whole life
    /// (the least busy one when it is accepted); 0, the default, has every connection served by
    /// the runtime the server runs on, whose workers share them. See `threads.rs`.
    pub connection_threads: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            limits: ServerLimits::default(),
            password_file: None,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            tls: None,
            login_backoff: LoginBackoff::default(),
            http: HttpOptions::default(),
            connection_threads: 0,
        }
    }
}

impl ServerOptions {
    /// 10 s: enough for a typical query to finish, short enough for a deploy or an orchestrator's
    /// stop timeout (Kubernetes waits 30 s by default).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
}

/// HTTP on the q port: a client whose first bytes are an HTTP request line (`GET /`, `POST /`)
/// is served HTTP instead of q, on a plain connection and inside TLS alike, as kdb+ serves
/// `.z.ph` and `.z.pp` on its port (see `http.rs`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Whether HTTP is served; when `false`, an HTTP request is read as a q handshake and fails
    /// as one.
    pub enabled: bool,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// The largest request body, in bytes; a larger one gets `413`.
    pub max_body_bytes: usize,
    /// How long a request may take from its first byte to the end of its headers.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_idle: Duration,
    /// The largest WebSocket message (and frame), in bytes; a larger one closes the WebSocket
    /// with 1009 (message too big).
    pub max_ws_message_bytes: usize,
    /// How long a WebSocket may go without a frame from its client before the server pings it;
    /// a client that sends nothing (not even the pong) for as long again is closed.
    pub ws_ping_interval: Duration,
    /// The answers to ACME challenges in flight (`/.well-known/acme-challenge/` and
    /// TLS-ALPN-01), when certificates come from an ACME CA.
    pub challenges: Option<Arc<dyn ChallengeAnswers>>,
}

impl HttpOptions {
    /// 16 KiB: twice what most servers (nginx's `large_client_header_buffers`, Apache's line
    /// limit) take per line; a browser's request head with cookies fits, and a client that sends
    /// more is not a browser.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
    /// 1 MiB: a POSTed q query is text, a few KiB at most; data belongs on q IPC, where the
    /// memory budget governs it.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
    /// 10 s, as the q handshake's `handshake_timeout`: a real client sends its request head at
    /// once; a slowloris client that trickles it holds a connection for no longer.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// 60 s: long enough that a dashboard polling every few seconds keeps its connection (and its
    /// TLS session), short enough that idle browsers do not pile up (nginx keeps 75 s).
    pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
    /// 1 MiB, as `max_body_bytes`: a WebSocket message to a q process is a query or a small
    /// update for a dashboard; the bytes are held whole (the hooks see the message whole), and a
    /// frame's claimed length is checked against this before anything is read.
    pub const DEFAULT_MAX_WS_MESSAGE_BYTES: usize = 1 << 20;
    /// 30 s: shorter than the idle timeouts of common proxies and load balancers (60 s for nginx
    /// and AWS's), so a quiet dashboard's WebSocket stays open through them, while a client that
    /// vanished without a close is found within a minute.
    pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(30);
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            keepalive_idle: Self::DEFAULT_KEEPALIVE_IDLE,
            max_ws_message_bytes: Self::DEFAULT_MAX_WS_MESSAGE_BYTES,
            ws_ping_interval: Self::DEFAULT_WS_PING_INTERVAL,
            challenges: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("enabled", &self.enabled)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_timeout", &self.header_timeout)
            .field("keepalive_idle", &self.keepalive_idle)
            .field("max_ws_message_bytes", &self.max_ws_message_bytes)
            .field("ws_ping_interval", &self.ws_ping_interval)
            .field("challenges", &self.challenges.is_some())
            .finish()
    }
}

impl PartialEq for dyn ChallengeAnswers {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(self, other)
    }
}

impl Eq for dyn ChallengeAnswers {}

/// The answers to ACME challenges in flight, given by whatever obtains certificates (the binary
/// wires its ACME client here): the server only serves them.
pub trait ChallengeAnswers: Send + Sync + 'static {
    /// TLS-ALPN-01: the certificate to present to a ClientHello that offers the ALPN protocol
    /// `acme-tls/1` for `server_name`; `None` when no challenge for it is in flight.
    fn tls_alpn(&self, server_name: &str) -> Option<Arc<rustls::sign::CertifiedKey>>;
    /// HTTP-01: the key authorization that answers `GET /.well-known/acme-challenge/{token}`.
    fn http01(&self, token: &str) -> Option<String>;
}

/// Brute-force protection: how failed logins make later attempts wait (see `throttle.rs`).
///
/// Failures are counted per source address and per user name; after `failures_before_delay` of
/// them, each later attempt waits `first_delay`, doubling with every further failure up to
/// `max_delay`, before its credentials are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginBackoff {
    /// The first delay; `None` turns the protection off.
    pub first_delay: Option<Duration>,
    /// The longest delay; an address whose attempts queue up further than this is refused at
    /// once.
    pub max_delay: Duration,
    /// The failures that cost nothing.
    pub failures_before_delay: u32,
}

impl LoginBackoff {
    /// 250 ms: a person who mistypes a fourth time does not notice it, and it doubles to the
    /// maximum within six more failures.
    pub const DEFAULT_FIRST_DELAY: Option<Duration> = Some(Duration::from_millis(250));
    /// 10 s: one guess every ten seconds is about 8 600 a day from one address, against 5 000 a
    /// second without it; and it is shorter than the connection timeouts of q clients, so that
    /// the real owner of a name under attack still logs in, slowly.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
    /// 3: a typo or two, and a client retrying with a stale password once, cost nothing.
    pub const DEFAULT_FAILURES_BEFORE_DELAY: u32 = 3;
}

impl Default for LoginBackoff {
    fn default() -> Self {
        Self {
            first_delay: Self::DEFAULT_FIRST_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            failures_before_delay: Self::DEFAULT_FAILURES_BEFORE_DELAY,
        }
    }
}

/// A password file, as q's `-U file` or `-u file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordFile {
    /// The file: `user:password` lines, the password plain, MD5 hex or SHA-1 hex.
    pub path: PathBuf,
    /// `-u` rather than `-U`: see the README for what qgate adds for it.
    pub restricted: bool,
}

impl PasswordFile {
    /// Reads and parses the file as the server will at start, under the same rules (a regular
    /// file, at most [`PasswordFile::MAX_BYTES`], read within [`PasswordFile::READ_TIMEOUT`]):
    /// for `qgate check`, and for a binary that wants to refuse a bad file before it binds.
    ///
    /// Blocks the calling thread for at most the read timeout.
    ///
    /// # Errors
    ///
    /// As [`crate::Server::new`] for the password file: not a regular file, too large, too
    /// slow to read, unreadable, or a bad line (named with its number).
    pub fn check(&self) -> anyhow::Result<()> {
        crate::password::read_blocking(&self.path)
            .map(drop)
            .map_err(anyhow::Error::from)
    }

    /// 8 MiB: about 150 000 users with SHA-1 hex passwords, far more than a password file
    /// holds; a file larger than that is a mistake (a log, a database) or `/dev/zero`-like,
    /// and is refused rather than read.
    pub const MAX_BYTES: u64 = 8 << 20;

    /// 5 s: see [`qgate_files::ReadRules::DEFAULT_TIMEOUT`]; a password file on a stalled mount
    /// is refused at start and skipped on reload, never waited on by a login.
    pub const READ_TIMEOUT: Duration = qgate_files::ReadRules::DEFAULT_TIMEOUT;
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
        crate::tls::Tls::load(self, qgate_metrics::Metrics::new(), None).map(drop)
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
    /// How many times its length on the wire a compressed message may expand to (above 1 MiB).
    pub max_expansion: usize,
    /// The longest handshake, in bytes.
    pub max_handshake_bytes: usize,
    /// How long a client has to complete its handshake.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent (between messages, or in the middle of one) before it
    /// is closed. `None` for no limit.
    pub idle_timeout: Option<Duration>,
    /// How long the body of a message that has started may go without a byte arriving, whatever
    /// `idle_timeout` says.
    pub body_timeout: Duration,
    /// How long a write to a client may make no progress (the client reads nothing) before the
    /// connection is closed, whatever `idle_timeout` says.
    pub write_timeout: Duration,
    /// The bytes the server holds for messages and replies in flight, in all.
    pub memory_budget: usize,
    /// Connections logged in at once, in all.
    pub max_connections: usize,
    /// Connections logged in at once for one user name.
    pub max_connections_per_user: usize,
    /// Connections that have not logged in yet, at once, in all.
    pub max_handshakes: usize,
    /// Past this many pending handshakes, new connections are dropped at random, more and more
    /// often up to `max_handshakes`.
    pub handshake_early_drop: usize,
    /// Connections that have not logged in yet, at once, from one address (one /64 for IPv6).
    pub max_handshakes_per_address: usize,
}

impl ServerLimits {
    /// 256 MiB: see [`qgate_ipc::Limits::DEFAULT_MAX_MESSAGE_BYTES`].
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = qgate_ipc::Limits::DEFAULT_MAX_MESSAGE_BYTES;
    /// 32: see [`qgate_ipc::Limits::DEFAULT_MAX_EXPANSION`].
    pub const DEFAULT_MAX_EXPANSION: usize = qgate_ipc::Limits::DEFAULT_MAX_EXPANSION;
    /// 64 KiB: see [`qgate_ipc::handshake::DEFAULT_MAX_HANDSHAKE_BYTES`].
    pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize =
        qgate_ipc::handshake::DEFAULT_MAX_HANDSHAKE_BYTES;
    /// 10 s, as aiokdb's server: a real client sends its handshake at once, and a slow one must
    /// not hold a connection slot for long.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// None: q itself never closes an idle client, and tickerplant subscribers sit idle for hours.
    pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;
    /// 30 s: a client sends a message's body as fast as its network allows once it has sent the
    /// header, so a body that stops for half a minute has a client that stopped; meanwhile what
    /// it sent is held in memory.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// 30 s: a client that reads nothing for half a minute while its reply waits has stopped
    /// reading (a hung process, a full buffer it will never drain), and its reply holds memory
    /// until it is closed; a slow client that keeps reading is never cut off, since this counts
    /// from the last progress.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// 1 GiB: four messages of the largest size at once, or hundreds of ordinary large replies,
    /// while a server with a few GiB of memory keeps room for everything else.
    pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;
    /// 10 000: far above kdb+'s old 1022, within a default `ulimit -n` raised for servers.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// 1 000: one runaway client pool cannot take every slot.
    pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 1_000;
    /// 1 024: a real client's handshake takes a round trip, so even a burst of reconnecting
    /// clients has a few hundred pending at once; silent sockets fill these slots, never the
    /// logged-in ones, and `handshake_timeout` empties them.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1_024;
    /// 512: half of `max_handshakes`, as sshd's `MaxStartups` starts dropping well before its
    /// cap, so that a flood cannot fill the last slots at once.
    pub const DEFAULT_HANDSHAKE_EARLY_DROP: usize = 512;
    /// 256: a client machine opening a connection pool at once has at most a few hundred
    /// handshakes in flight, and one address then holds at most a quarter of `max_handshakes`.
    pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 256;
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_expansion: Self::DEFAULT_MAX_EXPANSION,
            max_handshake_bytes: Self::DEFAULT_MAX_HANDSHAKE_BYTES,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            memory_budget: Self::DEFAULT_MEMORY_BUDGET,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: Self::DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
            handshake_early_drop: Self::DEFAULT_HANDSHAKE_EARLY_DROP,
            max_handshakes_per_address: Self::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
        }
    }
}

impl ServerLimits {
    /// The codec's limits for a received message.
    pub(crate) fn codec(&self) -> qgate_ipc::Limits {
        qgate_ipc::Limits::new(self.max_message_bytes).with_max_expansion(self.max_expansion)
    }

    /// Checks the limits against each other: what [`crate::Server::new`] refuses.
    ///
    /// # Errors
    ///
    /// A message naming the limits that disagree.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.memory_budget < self.max_message_bytes {
            anyhow::bail!(
                "limits.memory_budget ({} bytes) is smaller than limits.max_message_bytes ({} \
                 bytes): a message of the largest size could never be taken; raise the budget or \
                 lower the message limit",
                self.memory_budget,
                self.max_message_bytes
            );
        }
        if u32::try_from(self.max_message_bytes).is_err() {
            anyhow::bail!(
                "limits.max_message_bytes ({} bytes) is above 4294967295 bytes, the most a q \
                 IPC frame's 32-bit length can say",
                self.max_message_bytes
            );
        }
        Ok(())
    }
}
