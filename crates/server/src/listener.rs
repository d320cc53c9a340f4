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
//! # Accept errors
//!
//! An error from `accept` (out of file descriptors, a connection reset before it was accepted)
//! never ends the loop: it is logged and the loop sleeps, 1 ms at first, doubling to at most 1 s
//! while the errors go on, so a machine out of descriptors is not spun on.

use std::{future::Future, sync::Arc, time::Duration};

use qgate_hooks::Hooks;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    buffers::{BufferPool, POOLED_IDLE},
    handler::{Handler, Shared},
    options::ServerOptions,
    password::PasswordStore,
    registry::Registry,
    shutdown::Shutdown,
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
/// the line).
/// Once serving, nothing a client does ends the server.
pub async fn run<H: Hooks>(
    listener: TcpListener,
    options: ServerOptions,
    hooks: H,
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
    let limits = options.limits;
    let buffers = Arc::new(BufferPool::new(limits.max_message_bytes));
    let mut server = Listener {
        limit: Arc::new(Semaphore::new(limits.max_connections)),
        max_connections: limits.max_connections,
        shared: Arc::new(Shared {
            hooks,
            limits,
            password,
            registry: Arc::new(Registry::default()),
            buffers: Arc::clone(&buffers),
        }),
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
struct Listener<H> {
    listener: TcpListener,
    /// One permit per open connection, held by its task: `max_connections` in all.
    limit: Arc<Semaphore>,
    max_connections: usize,
    shared: Arc<Shared<H>>,
    shutdown: Shutdown,
}

impl<H: Hooks> Listener<H> {
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
            let handler = Handler::new(
                Arc::clone(&self.shared),
                stream,
                peer,
                handle,
                self.shutdown.signals(),
            );
            self.shutdown.spawn(async move {
                handler.run().await;
                drop(permit);
            });
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
