//! A test upstream: a server that speaks kdb+ IPC as a kdb+ process does, with scripted
//! behaviours, for the tests of qgate in front of kdb+ (no licensed kdb+ runs here).
//!
//! [`Upstream::start`] binds (by default `127.0.0.1:0`) and serves on a thread of its own with
//! its own tokio runtime, so that async and plain `#[test]`s alike can start one; dropping the
//! [`Upstream`] (or [`Upstream::stop`]) stops it and closes its connections.
//!
//! # What it does as kdb+ does
//!
//! - The handshake is `user:password\cap\0`, answered with the one byte `min(cap, 3)`; a refused
//!   login is closed without a byte. With no [`UpstreamOptions::users`] anyone is accepted, as by
//!   a kdb+ started without `-U`.
//! - `.z.u` is the handshake's user; `.z.w` is a small int, unique among live connections and
//!   given again after a close, the lowest free from [`FIRST_HANDLE`] up, as kdb+'s handles (its
//!   file descriptors) are.
//! - Replies are little-endian responses (type 2), errors `-128` with their text; sync messages
//!   are answered in order, async ones never. Messages sent to a client unasked (`callback`,
//!   publications) are async (type 0), as `neg[.z.w]` and a tickerplant's are.
//! - Messages over 2000 bytes are compressed only with [`UpstreamOptions::compress`]: kdb+ does
//!   not compress to localhost, where these tests run. `bytes[n]` is never compressed, because
//!   q's compression cannot halve `i mod 256`; a large repetitive value sent to `echo` (say
//!   10 000 longs) comes back compressed.
//! - With TLS, a client whose first byte is not a TLS handshake record is closed without a byte,
//!   as kdb+'s `-E 2` closes plain clients.
//! - By default one message is evaluated at a time across all connections, as by a q without
//!   `-s`: a `sleep` holds every other connection's query back. [`UpstreamOptions::serialise`]
//!   turns that off.
//! - A message that does not validate closes its connection, as kdb+'s `'badmsg` does.
//! - A connection whose first bytes are an HTTP request line is served HTTP, as a kdb+ port
//!   serves `.z.ph` and `.z.pp`: see `http.rs` for the receipt it answers with.
//! - PyKX's context queries (sent right after it connects) get the answers of a q process with
//!   nothing loaded, from `qgate_server::pykx_context_answer`.
//!
//! # Scripted behaviours
//!
//! A message that is a call list, `` (`name;args...) `` or `("name";args...)`, runs `name`:
//!
//! | call | behaviour |
//! |---|---|
//! | `echo[x]` | replies `x`; with several arguments, the list of them |
//! | `whoami[]` | replies `` `upstream`user`handle!(name;.z.u;.z.w) `` |
//! | `sleep[ms]` | waits `ms` milliseconds (holding the evaluation lock when serialised), replies `ms` |
//! | `fail[text]` | replies the q error `'text` |
//! | `bytes[n]` | replies a byte vector of `n` bytes, `i mod 256`, written in chunks |
//! | `die[n]` | writes the header of the reply `bytes[n]` would send and half its body, then closes |
//! | `garbage[]` | writes 16 bytes that are not a q IPC header, and keeps the connection open |
//! | `close[]` | closes the connection without a reply |
//! | `callback[x]` | sends the async message `` (`callback;x) `` first, then replies `x` |
//! | `.u.sub[t;syms]` | subscribes the caller to `t` (`` ` `` for all tables) for `syms` (`` ` `` for all), replies `(t;schema)` |
//! | `publish[t;n;rows]` | sends `n` async `` (`upd;t;data) `` to each subscriber of `t`, filtered by its syms; replies `n` |
//! | `received[]` | replies the table of every message received: `handle`, `user`, `kind`, `text`, `as` |
//! | `stats[]` | replies the counters of [`Stats`] as a dictionary |
//! | `.gw.execas[user;msg]` | evaluates `msg` (a string or a call list) as if `.z.u` were `user`; the name is [`UpstreamOptions::wrap`] |
//!
//! Any other sync message (a free-text query, a probe such as `"1"`, an unknown call) is answered
//! with the receipt `` `upstream`user`handle`query!(name;.z.u;.z.w;text) ``, where `text` is the
//! string received, or the q display of any other value.
//! Async messages are recorded and, when they are one of the calls above, performed without a
//! reply.
//!
//! As from kdb+, an async message sent to a client that waits for a reply confuses some clients:
//! qPython takes anything but a response as an error, and node-q takes anything but an `upd` as
//! the response. `callback` is for q and aiokdb clients, which handle it, and PyKX, which drops
//! it with a warning; node-q takes `upd` messages as publications.
//!
//! A nullary call (`whoami`, `garbage`, `close`, `received`, `stats`) takes no argument or one,
//! ignored, as a q lambda `{[] ...}` does (`` (`whoami;::) `` is how q sends `whoami[]`).
//! Wrong arguments get q's errors: `'rank` for a wrong count, `'type` for a wrong type, `'domain`
//! for a negative count, `'limit` for a reply too large for the framing.
//!
//! The tables are `trade` and `quote`, each with the columns `time` (timespan, the time of day
//! in UTC), `sym` (symbol, cycling through `` `AAPL`MSFT`IBM`GOOG`LSE.L ``), `price` (float),
//! `size` (long) and `seq` (long, one per row, increasing across every publication of the
//! upstream's life, so that a subscriber to every sym can check order and gaps).
//! As in kdb+tick, `.u.sub` and `publish` refuse any other table with the error `'name`, a
//! second `.u.sub` to a table replaces the first, `` .u.sub[`;syms] `` replies one `(t;schema)`
//! per table, and a publication whose rows a subscriber's syms filter out entirely is not sent to
//! it.

mod connection;
mod eval;
mod http;
mod state;
mod tick;
mod tls;

use std::{
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::upstream::state::Shared;
pub use crate::upstream::{
    state::{FIRST_HANDLE, Kind, MAX_RECORDED, MAX_RECORDED_TEXT, Received, Stats},
    tick::{SYMS, TABLES},
};

/// How long a stopping upstream waits for its tasks before dropping them: they all watch the
/// stop signal, so this only bounds a task stuck in a write to a client that reads nothing.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The runtime's worker threads: two, the cores of the machines these tests run on. One would
/// also do (the upstream is mostly waiting), but two let a large reply stream out while another
/// connection is served, as kdb+'s non-blocking writes do.
const WORKER_THREADS: usize = 2;

/// The default name of the wrap function (TorQ's execas pattern).
pub const DEFAULT_WRAP: &str = ".gw.execas";

/// The default name reported in replies.
pub const DEFAULT_NAME: &str = "upstream";

/// How a test upstream behaves.
///
/// `UpstreamOptions::default()` listens on `127.0.0.1:0`, accepts anyone, speaks plain TCP,
/// never compresses, and evaluates one message at a time, as a single-threaded kdb+ does.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// The address to listen on; port 0 picks a free one ([`Upstream::addr`] tells which).
    pub addr: SocketAddr,
    /// The logins accepted, as `(user, password)` pairs; empty accepts anyone, as a kdb+ without
    /// `-U` does.
    pub users: Vec<(String, String)>,
    /// The name reported in replies (`whoami`, receipts), to tell replicas apart.
    pub name: String,
    /// TLS, required of every client when set: a client that does not speak TLS is closed.
    pub tls: Option<UpstreamTls>,
    /// Whether messages over 2000 bytes are compressed when that halves them, as kdb+ does to a
    /// remote peer (and does not to localhost).
    pub compress: bool,
    /// Whether one message is evaluated at a time across all connections, as by a q without
    /// `-s` (the default); `false` evaluates each connection's messages independently.
    pub serialise: bool,
    /// The wrap function's name: `(wrap; user; message)` evaluates `message` as `user`.
    pub wrap: String,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            users: Vec::new(),
            name: DEFAULT_NAME.to_owned(),
            tls: None,
            compress: false,
            serialise: true,
            wrap: DEFAULT_WRAP.to_owned(),
        }
    }
}

impl fmt::Debug for UpstreamOptions {
    /// Never prints the passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(user, _)| user.as_str()).collect();
        f.debug_struct("UpstreamOptions")
            .field("addr", &self.addr)
            .field("users", &users)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("compress", &self.compress)
            .field("serialise", &self.serialise)
            .field("wrap", &self.wrap)
            .finish()
    }
}

impl UpstreamOptions {
    /// Adds an accepted login from its `user:password` form (split at the first `:`).
    ///
    /// # Errors
    ///
    /// When `login` has no `:`.
    pub fn add_login(&mut self, login: &str) -> io::Result<()> {
        let (user, password) = login.split_once(':').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a login must be `user:password`, with a colon",
            )
        })?;
        self.users.push((user.to_owned(), password.to_owned()));
        Ok(())
    }
}

/// TLS for a test upstream: required of every client, as kdb+'s `-E 2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The certificate chain, PEM, the upstream's own certificate first.
    pub cert_chain: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate issued by a CA in this PEM bundle, as
    /// kdb+'s `SSL_VERIFY_CLIENT=YES`.
    pub client_ca: Option<PathBuf>,
}

/// A running test upstream; dropping it stops it and closes its connections.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Binds `options.addr` and starts serving on a thread of its own.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound, a TLS file cannot be read or does not hold what it
    /// should, or the thread or its runtime cannot start.
    pub fn start(options: UpstreamOptions) -> io::Result<Self> {
        let acceptor = options.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = std::net::TcpListener::bind(options.addr).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot listen on {}: {error}", options.addr),
            )
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("qgate-upstream-worker")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(&options));
        let stop = CancellationToken::new();
        let thread = std::thread::Builder::new()
            .name(format!("qgate-upstream-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                let stop = stop.clone();
                move || {
                    runtime.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                connection::serve(listener, shared, acceptor, stop).await;
                            }
                            Err(error) => {
                                tracing::error!(%error, "the upstream cannot use its listener");
                            }
                        }
                    });
                    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
                }
            })?;
        tracing::info!(%addr, name = %shared.name, "upstream listening");
        Ok(Self {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it reports in replies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its counters now, as `stats[]` replies them.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Every message received so far (up to the last [`MAX_RECORDED`]), in arrival order,
    /// as `received[]` replies them.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received()
    }

    /// Stops it: no more connections are accepted, open ones are closed, queries being
    /// evaluated are abandoned. Returns once its thread has ended.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            // The thread only ends its runtime; a panic in it has already been reported.
            let _ = thread.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shut_down();
    }
}
