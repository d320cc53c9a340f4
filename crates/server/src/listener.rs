//! The accept loop, the connection limit, and [`run`], the server's only entry point.
//!
//! # The connection limit: accept, then refuse
//!
//! `max_connections` is an `Arc<Semaphore>` whose permits the connection tasks hold.
//! When none is left the listener still accepts the next connection, logs a warning naming the
//! limit, and closes it at once without a byte.
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

use qgate_hooks::{Backend, Hooks, NoBackend};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::Instrument as _;

use crate::{
    buffers::{BufferPool, POOLED_IDLE},
    handler::{self, Handler, Shared},
    options::{ServerOptions, TlsMode, UserFrom},
    password::PasswordStore,
    registry::{HandleGuard, Registry},
    shutdown::{Shutdown, Signals},
    tls::{self, Sniffed, Tls},
};

/// The first pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
/// The longest pause between failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves q clients on `listener` until `shutdown` resolves, then shuts down gracefully.
///
/// Every accepted connection runs in its own task: handshake, authentication (the password file,
/// then [`Hooks::on_auth`]), the capability byte, [`Hooks::on_open`], one message at a time
/// through [`Hooks::on_sync`] and [`Hooks::on_async`], and [`Hooks::on_close`] once at the end.
///
/// When `shutdown` resolves the listener closes; each connection closes as soon as it is between
/// messages, a sync query in flight being answered first; after
/// [`ServerOptions::shutdown_grace`] the connections still busy are cut (the log says how many).
///
/// # Errors
///
/// Only at start: the password file cannot be read or has a bad line (the error names the file and
/// the line); a TLS certificate, key or CA file cannot be read, does not parse, or the key does not
/// match the certificate; the key file can be read by users other than its owner.
/// Once serving, nothing a client does ends the server.
pub async fn run<H: Hooks>(
    listener: TcpListener,
    options: ServerOptions,
    hooks: H,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_backend(listener, options, hooks, NoBackend, shutdown).await
}

/// [`run`] with a [`Backend`] that answers what every hook passes: the gateway, in front of
/// upstream kdb+ processes. Each session's link is opened once its login is accepted, before its
/// capability byte, and dropped when it closes.
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_backend<H: Hooks, B: Backend>(
    listener: TcpListener,
    options: ServerOptions,
    hooks: H,
    backend: B,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let password = match &options.password_file {
        Some(file) => {
            let store = PasswordStore::load(file).await?;
            tracing::info!(
                path = %file.path.display(),
                restricted = file.restricted,
                "password file loaded"
            );
            Some(store)
        }
        None => None,
    };
    let tls = match &options.tls {
        Some(tls_options) => {
            let tls = Arc::new(Tls::load(tls_options)?);
            tracing::info!(
                mode = ?tls_options.mode,
                cert_file = %tls_options.cert_file.display(),
                client_auth = ?tls_options.client_auth,
                user_from = ?tls_options.user_from,
                "TLS certificate loaded"
            );
            Some(tls)
        }
        None => None,
    };
    // Ends when `run` returns: aborted by the guard below.
    let _watch = tls
        .as_ref()
        .map(|tls| AbortOnDrop(tokio::spawn(Arc::clone(tls).watch())));
    let limits = options.limits;
    let buffers = Arc::new(BufferPool::new(limits.max_message_bytes));
    let mut server = Listener {
        limit: Arc::new(Semaphore::new(limits.max_connections)),
        max_connections: limits.max_connections,
        shared: Arc::new(Shared {
            hooks,
            backend,
            limits,
            password,
            registry: Arc::new(Registry::default()),
            buffers: Arc::clone(&buffers),
            user_from: tls.as_ref().map_or(UserFrom::None, |tls| tls.user_from),
        }),
        tls,
        listener,
        shutdown: Shutdown::default(),
    };
    if let Ok(address) = server.listener.local_addr() {
        tracing::debug!(%address, "accepting connections");
    }
    tokio::select! {
        () = server.accept_loop() => {}
        () = sweep(&buffers) => {}
        () = shutdown => {}
    }
    let Listener {
        listener, shutdown, ..
    } = server;
    // Stop accepting: new clients are refused by the kernel from here on.
    drop(listener);
    let cut = shutdown.run(options.shutdown_grace).await;
    tracing::info!(cut, "server stopped");
    Ok(())
}

/// Returns unused large buffers to the system, forever.
async fn sweep(buffers: &BufferPool) {
    let mut every = tokio::time::interval(POOLED_IDLE / 2);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        buffers.sweep();
    }
}

/// The accept loop's state.
struct Listener<H, B> {
    listener: TcpListener,
    /// One permit per open connection, held by its task: `max_connections` in all.
    limit: Arc<Semaphore>,
    max_connections: usize,
    shared: Arc<Shared<H, B>>,
    /// The TLS layer, when the port serves TLS.
    tls: Option<Arc<Tls>>,
    shutdown: Shutdown,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<H: Hooks, B: Backend> Listener<H, B> {
    /// Accepts connections and spawns a task for each, forever; it ends only when the caller stops
    /// polling it.
    async fn accept_loop(&mut self) {
        loop {
            let (stream, peer) = self.accept().await;
            let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
                tracing::warn!(
                    %peer,
                    limit = "max_connections",
                    max = self.max_connections,
                    "too many connections; closing the new one"
                );
                drop(stream);
                continue;
            };
            let Some(handle) = self.shared.registry.claim_handle() else {
                tracing::warn!(%peer, "no handle free; closing the new connection");
                continue;
            };
            // q clients write small messages and wait for the answer: Nagle's delay would only
            // slow them down.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let shared = Arc::clone(&self.shared);
            let signals = self.shutdown.signals();
            match &self.tls {
                None => {
                    let handler = Handler::new(shared, stream, peer, handle, signals, None);
                    self.shutdown.spawn(async move {
                        handler.run().await;
                        drop(permit);
                    });
                }
                Some(tls) => {
                    let tls = Arc::clone(tls);
                    self.shutdown.spawn(async move {
                        serve_tls_port(&tls, shared, stream, peer, handle, signals).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// The next connection, retrying with backoff on errors.
    async fn accept(&mut self) -> (TcpStream, std::net::SocketAddr) {
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

/// A connection accepted on a TLS port, after its first bytes are read.
enum Accepted {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Serves one connection on a port with TLS: sniffs, runs the TLS handshake or turns a plain
/// client away as the mode says, then hands the stream to its handler.
async fn serve_tls_port<H: Hooks, B: Backend>(
    tls: &Tls,
    shared: Arc<Shared<H, B>>,
    stream: TcpStream,
    peer: SocketAddr,
    handle: HandleGuard,
    signals: Signals,
) {
    let span = handler::span(&handle, &peer);
    let timeout = shared.limits.handshake_timeout;
    let accepted = tokio::select! {
        biased;
        () = signals.draining() => None,
        accepted = start(tls, stream, timeout).instrument(span.clone()) => accepted,
    };
    match accepted {
        Some(Accepted::Plain(stream)) => {
            Handler::new(shared, stream, peer, handle, signals, None)
                .run_in(span)
                .await;
        }
        Some(Accepted::Tls(stream)) => {
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
            Handler::new(
                shared,
                *stream,
                peer,
                handle,
                signals,
                Some(Arc::new(facts)),
            )
            .run_in(span)
            .await;
        }
        None => {}
    }
}

/// Reads what the client is, and for a TLS client runs the TLS handshake, all within `timeout`.
/// `None` when the connection ends here: the client closed, failed, or was turned away.
async fn start(tls: &Tls, stream: TcpStream, timeout: Duration) -> Option<Accepted> {
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
            Ok(Ok(stream)) => Some(Accepted::Tls(Box::new(stream))),
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
        (Sniffed::Http | Sniffed::Plain, TlsMode::Optional) => Some(Accepted::Plain(stream)),
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
