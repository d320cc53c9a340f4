//! The server: [`Server::new`] loads what the options name, [`Server::serve`] runs the accept
//! loop until the shutdown signal and drains, and [`run`] is both in one call.
//!
//! # Connection limits: accept, then refuse
//!
//! A connection that has not logged in holds a handshake slot (`max_handshakes` in all,
//! `max_handshakes_per_address` from one address, random early drop past
//! `handshake_early_drop`: see `admission.rs`); one that has logged in holds one of
//! `max_connections` (a seat, counted against the limit in force at its login) instead.
//! Silent sockets thus fill handshake slots at most, never the logged-in ones.
//!
//! When a limit is reached the listener still accepts the next connection, logs a warning naming
//! the limit (a few a window, then a count: see `logging.rs`), and closes it at once without a
//! byte; a login past `max_connections` is closed the same way after its handshake.
//! The alternative, taking a permit before accepting (mini-redis's choice), leaves clients in the
//! kernel's backlog, where they wait for their handshake reply until their own timeout and cannot
//! tell a full server from a slow one.
//! Closing at once gives them an answer straight away: a q client reports `'access` (as for a
//! refused login; q's own `'conn` has no wire form), and the operator sees why in the log.
//! The cost is one accept and close per refused connection.
//!
//! # TLS
//!
//! With [`ServerOptions::tls`] set, each connection's task first peeks at its first bytes (see
//! [`crate::tls`]): a ClientHello goes through the TLS handshake, then to a handler over the TLS
//! stream; anything else goes to a handler over the plain stream, or is turned away when TLS is
//! required. Sniffing and the TLS handshake together are bounded by `handshake_timeout`, and the
//! q handshake that follows has its own `handshake_timeout`. Without TLS there is no peek.
//!
//! # Accept errors
//!
//! An error from `accept` (out of file descriptors, a connection reset before it was accepted)
//! never ends the loop: it is logged and the loop sleeps, 1 ms at first, doubling to at most 1 s
//! while the errors go on, so a machine out of descriptors is not spun on.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use qgate_hooks::{Backend, Hooks, NoBackend, TlsFacts};
use qgate_metrics::Metrics;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::{
    admission::{Admission, HandshakeSlot},
    budget::MemoryBudget,
    buffers::{BufferPool, POOLED_IDLE},
    connection::ClientStream,
    handler::{self, Handler, ServerState},
    live::{PasswordSlot, Seats, ServerSettings},
    logging::Repeats,
    options::{ServerOptions, TlsMode, UserFrom},
    password::PasswordStore,
    registry::{HandleGuard, Registry},
    shutdown::{Shutdown, Signals},
    threads::ConnectionThreads,
    throttle::LoginThrottle,
    tls::{self, Sniffed, Tls},
};

/// The first pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
/// The longest pause between failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves q clients on `listener` until `shutdown` resolves, then shuts down gracefully:
/// [`Server::new`], then [`Server::serve`].
///
/// # Errors
///
/// As [`Server::new`]; once serving, nothing a client does ends the server.
pub async fn run<H: Hooks>(
    listener: TcpListener,
    options: ServerOptions,
    hooks: H,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Server::new(options, hooks)
        .await?
        .serve(listener, shutdown)
        .await;
    Ok(())
}

/// A server, built and ready to serve: its password file and TLS files loaded and watched, its
/// limits set up. Build it before binding the port, so that a bad file never leaves a port
/// half-served.
///
/// `B` answers what every hook passes: [`NoBackend`] (the client hears that nothing answered) or
/// the gateway in front of upstream kdb+ processes ([`Server::with_backend`]).
#[derive(Debug)]
pub struct Server<H, B = NoBackend> {
    state: Arc<ServerState<H, B>>,
    /// The live settings, shared with `state`.
    settings: ServerSettings,
    /// The TLS layer, when the port serves TLS.
    tls: Option<Arc<Tls>>,
    admission: Arc<Admission>,
    shutdown_grace: Duration,
    /// The connection threads, with `connection_threads` set.
    threads: Option<ConnectionThreads>,
    /// The tasks that watch the files and sweep the buffers; they end with the server.
    background: Vec<AbortOnDrop>,
}

impl<H: Hooks> Server<H> {
    /// Loads everything `options` name (the password file, the TLS certificate, key and CA
    /// bundle), and starts the tasks that reload them when they change and return unused large
    /// buffers to the system. Must run on a tokio runtime.
    ///
    /// # Errors
    ///
    /// The limits disagree (a memory budget smaller than the largest message); the password file
    /// is not a regular file, is too large, cannot be read in time or has a bad line (the error
    /// names the file and the line); a TLS certificate, key or CA file cannot be read, does not
    /// parse, or the key does not match the certificate; the key file can be read by users other
    /// than its owner.
    pub async fn new(options: ServerOptions, hooks: H) -> anyhow::Result<Self> {
        Server::with_backend(options, hooks, NoBackend).await
    }
}

impl<H: Hooks, B: Backend> Server<H, B> {
    /// [`Server::new`] with `backend` answering what every hook passes: each session's link is
    /// opened once its login is accepted, before its capability byte, and dropped when it closes.
    ///
    /// # Errors
    ///
    /// As [`Server::new`].
    pub async fn with_backend(
        options: ServerOptions,
        hooks: H,
        backend: B,
    ) -> anyhow::Result<Self> {
        Server::with_metrics(options, hooks, backend, Metrics::new()).await
    }

    /// [`Server::with_backend`], counting connections, logins and messages, and the TLS
    /// certificate's expiry, into `metrics`.
    ///
    /// # Errors
    ///
    /// As [`Server::new`].
    pub async fn with_metrics(
        options: ServerOptions,
        hooks: H,
        backend: B,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let limits = options.limits.clone();
        limits.check()?;
        let threads = match options.connection_threads {
            0 => None,
            count => Some(ConnectionThreads::start(count).map_err(|error| {
                anyhow::anyhow!("cannot start {count} connection threads: {error}")
            })?),
        };
        let mut background = Vec::new();
        let password = match &options.password_file {
            Some(file) => {
                // The error names the file, and the line for a bad one.
                let store = Arc::new(PasswordStore::load(file).await?);
                tracing::info!(
                    path = %store.path().display(),
                    restricted = store.restricted(),
                    "password file loaded"
                );
                Some(store)
            }
            None => None,
        };
        let password_slot = Arc::new(PasswordSlot::default());
        password_slot.set(password);
        let tls = match &options.tls {
            Some(tls_options) => {
                let tls = Arc::new(Tls::load(
                    tls_options,
                    metrics.clone(),
                    options.http.challenges.as_ref(),
                )?);
                tracing::info!(
                    mode = ?tls_options.mode,
                    cert_file = %tls_options.cert_file.display(),
                    client_auth = ?tls_options.client_auth,
                    user_from = ?tls_options.user_from,
                    "TLS certificate loaded"
                );
                background.push(AbortOnDrop(tokio::spawn(Arc::clone(&tls).watch())));
                Some(tls)
            }
            None => None,
        };
        let budget = MemoryBudget::new(limits.memory_budget);
        let buffers = BufferPool::new(limits.max_message_bytes, budget.clone());
        background.push(AbortOnDrop(tokio::spawn(sweep(Arc::clone(&buffers)))));
        let settings = ServerSettings {
            admission: Arc::new(Admission::new(&limits)),
            budget,
            logins: Arc::new(LoginThrottle::new(options.login_backoff.clone())),
            password: password_slot,
            limits: Arc::new(ArcSwap::from_pointee(limits)),
            runtime: tokio::runtime::Handle::current(),
        };
        let state = Arc::new(ServerState {
            hooks,
            backend,
            seats: Seats::default(),
            budget: settings.budget.clone(),
            logins: Arc::clone(&settings.logins),
            password: Arc::clone(&settings.password),
            registry: Arc::new(Registry::default()),
            buffers,
            user_from: tls.as_ref().map_or(UserFrom::None, |tls| tls.user_from),
            limits: Arc::clone(&settings.limits),
            metrics,
            http: options.http.clone(),
        });
        Ok(Self {
            admission: Arc::clone(&settings.admission),
            settings,
            state,
            tls,
            shutdown_grace: options.shutdown_grace,
            threads,
            background,
        })
    }

    /// The settings a config reload changes while the server serves: its limits, login backoff
    /// and password file.
    pub fn settings(&self) -> ServerSettings {
        self.settings.clone()
    }

    /// The memory budget every connection charges its messages to, for a part of the server
    /// that holds messages of its own.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.state.budget
    }

    /// Serves q clients on `listener` until `shutdown` resolves, then shuts down gracefully.
    ///
    /// Every accepted connection runs in its own task: handshake, authentication (the password
    /// file, then [`Hooks::on_auth`]), the capability byte, [`Hooks::on_open`], one message at a
    /// time through [`Hooks::on_sync`] and [`Hooks::on_async`], and [`Hooks::on_close`] once at
    /// the end.
    ///
    /// When `shutdown` resolves the listener closes; each connection closes as soon as it is
    /// between messages, a sync query in flight being answered first; after
    /// [`ServerOptions::shutdown_grace`] the connections still busy are cut (the log says how
    /// many), and their close hooks get a second at most.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        if let Ok(address) = listener.local_addr() {
            tracing::debug!(%address, "accepting connections");
        }
        let mut accept = AcceptLoop {
            listener,
            state: self.state,
            tls: self.tls,
            admission: self.admission,
            threads: self.threads,
            shutdown: Shutdown::default(),
            refusals: Repeats::default(),
        };
        tokio::select! {
            () = accept.run() => {}
            () = shutdown => {}
        }
        let AcceptLoop {
            listener,
            shutdown,
            threads,
            ..
        } = accept;
        // Stop accepting: new clients are refused by the kernel from here on.
        drop(listener);
        let cut = shutdown.run(self.shutdown_grace).await;
        drop(threads);
        tracing::info!(cut, "server stopped");
        drop(self.background);
    }
}

/// Returns unused large buffers to the system, forever.
async fn sweep(buffers: Arc<BufferPool>) {
    let mut every = tokio::time::interval(POOLED_IDLE / 2);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        buffers.sweep();
    }
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The accept loop's state.
struct AcceptLoop<H, B> {
    listener: TcpListener,
    state: Arc<ServerState<H, B>>,
    tls: Option<Arc<Tls>>,
    /// The handshake slots.
    admission: Arc<Admission>,
    /// Where connections are served, when not on this runtime.
    threads: Option<ConnectionThreads>,
    shutdown: Shutdown,
    /// Refused connections are logged a few times a window, then counted.
    refusals: Repeats,
}

impl<H: Hooks, B: Backend> AcceptLoop<H, B> {
    /// Accepts connections and spawns a task for each, forever; it ends only when the caller stops
    /// polling it.
    async fn run(&mut self) {
        loop {
            let (stream, peer) = self.accept().await;
            let max_connections = self.state.limits.load().max_connections;
            if self.state.seats.taken() >= max_connections {
                self.refuse(
                    peer,
                    "max_connections",
                    max_connections,
                    "too many connections; closing the new one",
                );
                continue;
            }
            let slot = match self.admission.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    self.refuse(
                        peer,
                        refusal.limit(),
                        refusal.max(&self.state.limits.load()),
                        "too many connections in their handshake; closing the new one",
                    );
                    continue;
                }
            };
            let Some(handle) = self.state.registry.claim_handle() else {
                tracing::warn!(%peer, "no handle free; closing the new connection");
                continue;
            };
            // q clients write small messages and wait for the answer: Nagle's delay would only
            // slow them down.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let parts = Parts {
                state: Arc::clone(&self.state),
                peer,
                handle,
                slot,
                signals: self.shutdown.signals(),
            };
            let tls = self.tls.clone();
            let Some(threads) = &self.threads else {
                self.shutdown.spawn(Accepted { stream, parts }.serve(tls));
                continue;
            };
            // The socket moves to the thread's own I/O driver: it leaves this one here and joins
            // that one on the thread.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%peer, %error, "cannot hand the connection to a thread; closing it");
                    continue;
                }
            };
            threads.spawn(|served| {
                self.shutdown.track(async move {
                    let _served = served;
                    match TcpStream::from_std(stream) {
                        Ok(stream) => Accepted { stream, parts }.serve(tls).await,
                        Err(error) => tracing::warn!(
                            %peer,
                            %error,
                            "cannot serve the connection on its thread; closing it"
                        ),
                    }
                })
            });
        }
    }

    /// Logs a refused connection, a few times a window, and drops it: closed without a byte.
    fn refuse(&mut self, peer: SocketAddr, limit: &'static str, max: usize, why: &'static str) {
        if let Some(left_out) = self.refusals.note() {
            tracing::warn!(%peer, limit, max, left_out, "{why}");
        }
    }

    /// The next connection, retrying with backoff on errors.
    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::error!(%error, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
}

/// A connection just accepted: its stream, and what it holds until its task ends.
struct Accepted<H, B> {
    stream: TcpStream,
    parts: Parts<H, B>,
}

/// What a connection holds from its accept on, whatever its stream becomes.
struct Parts<H, B> {
    state: Arc<ServerState<H, B>>,
    peer: SocketAddr,
    handle: HandleGuard,
    slot: HandshakeSlot,
    signals: Signals,
}

impl<H: Hooks, B: Backend> Accepted<H, B> {
    /// Serves the connection: on a TLS port, sniffs it and runs the TLS handshake or turns a
    /// plain client away as the mode says; then hands the stream, plain or TLS, to its handler.
    async fn serve(self, tls: Option<Arc<Tls>>) {
        let Self { stream, parts } = self;
        let span = handler::span(&parts.handle, &parts.peer);
        let secured = match tls {
            // Without TLS there is nothing to sniff.
            None => Some(Secured::Plain(stream)),
            Some(tls) => {
                let timeout = parts.state.limits.load().handshake_timeout;
                // Boxed, as the TLS connection's handler below: a connection task is as large as
                // its largest state, and every plain connection would carry this one.
                let secure =
                    Box::pin(sniff_and_secure(&tls, stream, timeout).instrument(span.clone()));
                tokio::select! {
                    biased;
                    () = parts.signals.draining() => None,
                    secured = secure => secured,
                }
            }
        };
        match secured {
            Some(Secured::Plain(stream)) => parts.handle(stream, None, span).await,
            Some(Secured::Tls(stream)) => {
                let facts = tls::facts(&stream);
                span.in_scope(|| {
                    tracing::debug!(
                        protocol = %facts.protocol,
                        cipher = %facts.cipher,
                        sni = ?facts.sni,
                        client_cn = ?facts.client_cert.as_ref().and_then(|cert| cert.subject_cn.as_deref()),
                        "TLS handshake completed"
                    );
                });
                // On the heap: a connection task is as large as its largest state, so held
                // inline a TLS handler's future sized every task, plain ones too (14.7 KiB a
                // task with it and the sniff inline, 5.9 KiB with both boxed).
                Box::pin(parts.handle(*stream, Some(Arc::new(facts)), span)).await;
            }
            None => {}
        }
    }
}

impl<H: Hooks, B: Backend> Parts<H, B> {
    /// Hands `stream` to a handler and runs it in `span`: the one place a handler is made, for a
    /// plain stream and a TLS one alike (two instances of the same code, no dynamic dispatch).
    async fn handle<S: ClientStream>(
        self,
        stream: S,
        tls: Option<Arc<TlsFacts>>,
        span: tracing::Span,
    ) {
        let Self {
            state,
            peer,
            handle,
            slot,
            signals,
        } = self;
        Handler::new(state, stream, peer, handle, slot, signals, tls)
            .run(span)
            .await;
    }
}

/// A connection on a TLS port once its first bytes are read: plain, or through its TLS
/// handshake.
enum Secured {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Reads what the client is, and for a TLS client runs the TLS handshake, all within `timeout`.
/// `None` when the connection ends here: the client closed, failed, or was turned away.
async fn sniff_and_secure(tls: &Tls, stream: TcpStream, timeout: Duration) -> Option<Secured> {
    let deadline = tokio::time::Instant::now() + timeout;
    let kind = match tokio::time::timeout_at(deadline, tls::sniff(&stream)).await {
        Ok(Ok(Some(kind))) => kind,
        Ok(Ok(None)) => {
            tracing::debug!("closed before sending a byte");
            return None;
        }
        Ok(Err(error)) => {
            tracing::info!(%error, "cannot read the first bytes; closing");
            return None;
        }
        Err(_) => {
            tracing::info!(
                limit = "handshake_timeout",
                after = ?timeout,
                "client sent nothing in time; closing"
            );
            return None;
        }
    };
    match (kind, tls.mode) {
        (Sniffed::Tls, _) => match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(Some(stream))) => Some(Secured::Tls(Box::new(stream))),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::info!(%error, "TLS handshake failed; closing");
                None
            }
            Err(_) => {
                tracing::info!(
                    limit = "handshake_timeout",
                    after = ?timeout,
                    "TLS handshake not completed in time; closing"
                );
                None
            }
        },
        (Sniffed::Http | Sniffed::Plain, TlsMode::Optional) => Some(Secured::Plain(stream)),
        (Sniffed::Http, TlsMode::Required) => {
            let local = match stream.local_addr() {
                Ok(local) => local,
                Err(error) => {
                    tracing::info!(%error, "cannot read the local address; closing");
                    return None;
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tls::redirect(stream, local, left).await;
            None
        }
        (Sniffed::Plain, TlsMode::Required) => {
            tracing::warn!(
                "plain q connection refused: this port requires TLS (tls.mode = \"required\", \
                 q's -E 2); the client must connect with TLS (q: `:tls://host:port`, PyKX: \
                 tls=True, node-q: useTLS), or the server can accept both with \
                 tls.mode = \"optional\""
            );
            None
        }
    }
}
