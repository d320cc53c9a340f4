//! One client, from its first byte to its close: handshake → password file → auth hook →
//! per-user limit → capability byte → open hook → message loop → close hook.
//!
//! This is the order of q's own callbacks (reference §7.1).
//! Everything that goes wrong with a client ends that client only, with a log line in its `conn`
//! span, and never reaches the listener.
//!
//! Each message is handled to the end (hook, reply written) before the next is read, so responses
//! leave in the order the requests arrived, which clients rely on: they have no correlation ids.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use qgate_hooks::{
    AuthVerdict, CloseReason, Credentials, Hooks, OpenVerdict, Request, Session, TlsFacts, Verdict,
};
use qgate_ipc::{
    EncodeOptions, Error, FrameError, K, Limits, Locality, Message, MessageType, WireAction,
    encode_message_with,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::{
    buffers::BufferPool,
    connection::{Connection, ConnectionError},
    context,
    options::{ServerLimits, UserFrom},
    password::{self, PasswordStore},
    registry::{HandleGuard, Registry, UserGuard},
    shutdown::Signals,
    tls,
};

/// The error a sync request gets when every hook passed: with no plugin or backend to answer, the
/// client must hear so rather than wait forever.
pub(crate) const NOTHING_ANSWERED: &str =
    "qgate: nothing answered this query: no plugin or backend is configured";

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub(crate) hooks: H,
    pub(crate) limits: ServerLimits,
    pub(crate) password: Option<PasswordStore>,
    pub(crate) registry: Arc<Registry>,
    /// Large message buffers for reuse.
    pub(crate) buffers: Arc<BufferPool>,
    /// Whether a verified client certificate names the user (`UserFrom::None` without TLS).
    pub(crate) user_from: UserFrom,
}

/// A connection that has been accepted, before its handshake.
pub(crate) struct Handler<H, S> {
    shared: Arc<Shared<H>>,
    connection: Connection<S>,
    peer: SocketAddr,
    handle: HandleGuard,
    signals: Signals,
    /// What the TLS handshake negotiated; `None` on a plain connection.
    tls: Option<Arc<TlsFacts>>,
}

/// The span every log line of one connection is in.
pub(crate) fn span(handle: &HandleGuard, peer: &SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "conn",
        handle = handle.handle().0,
        peer = %peer,
        user = tracing::field::Empty,
    )
}

/// A connection past its handshake and authentication, whose client has its capability byte.
struct Open<H, S> {
    shared: Arc<Shared<H>>,
    connection: Connection<S>,
    session: Session,
    encode: EncodeOptions,
    signals: Signals,
    /// Held for the life of the connection: it counts against the user's limit, and its handle
    /// stays taken, until this is dropped.
    _user: UserGuard,
    _handle: HandleGuard,
}

impl<H: Hooks, S: AsyncRead + AsyncWrite + Unpin + Send> Handler<H, S> {
    /// A handler for a freshly accepted stream.
    pub(crate) fn new(
        shared: Arc<Shared<H>>,
        stream: S,
        peer: SocketAddr,
        handle: HandleGuard,
        signals: Signals,
        tls: Option<Arc<TlsFacts>>,
    ) -> Self {
        let limits = &shared.limits;
        let connection = Connection::new(
            stream,
            Limits::new(limits.max_message_bytes),
            limits.idle_timeout,
            Arc::clone(&shared.buffers),
        );
        Self {
            shared,
            connection,
            peer,
            handle,
            signals,
            tls,
        }
    }

    /// Serves the client until it closes, breaks a rule, or the server shuts down.
    pub(crate) async fn run(self) {
        let span = span(&self.handle, &self.peer);
        self.run_in(span).await;
    }

    /// [`Handler::run`] in a span made earlier, by the TLS layer.
    pub(crate) async fn run_in(self, span: tracing::Span) {
        async move {
            let signals = self.signals.clone();
            // Until the client has its capability byte nothing is in flight: a shutdown closes
            // the socket at once, and the client reports 'access as for a refusal.
            let open = tokio::select! {
                biased;
                () = signals.draining() => {
                    tracing::debug!("closed before the handshake completed: shutting down");
                    None
                }
                open = self.accept() => open,
            };
            if let Some(open) = open {
                open.run().await;
            }
        }
        .instrument(span)
        .await;
    }

    /// Reads the handshake, authenticates, counts the user and sends the capability byte.
    /// `None` when the client is refused; the socket is then closed without a byte.
    async fn accept(mut self) -> Option<Open<H, S>> {
        let limits = &self.shared.limits;
        let read = tokio::time::timeout(
            limits.handshake_timeout,
            self.connection.read_handshake(limits.max_handshake_bytes),
        )
        .await;
        let handshake = match read {
            Err(_) => {
                tracing::info!(
                    limit = "handshake_timeout",
                    after = ?limits.handshake_timeout,
                    "handshake not completed in time; closing"
                );
                return None;
            }
            Ok(Ok(Some(handshake))) => handshake,
            Ok(Ok(None)) => {
                tracing::debug!("closed before sending a handshake");
                return None;
            }
            Ok(Err(error)) => {
                match error.limit() {
                    Some(limit) => tracing::warn!(limit, %error, "bad handshake; closing"),
                    None => tracing::info!(%error, "handshake not completed; closing"),
                }
                return None;
            }
        };
        let credentials = Credentials {
            user: handshake.user,
            password: handshake.password,
        };
        let capability = handshake.capability;
        let reply = qgate_ipc::handshake::reply_byte(capability);
        // With `tls.user_from`, a verified client certificate is the user, whatever the handshake
        // says, and it is the credential: the password file is not asked.
        let cert_user = match tls::cert_user(self.tls.as_deref(), self.shared.user_from) {
            Ok(user) => user,
            Err(why) => {
                tracing::warn!(reason = why, "client certificate names no user; closing");
                return None;
            }
        };
        let user = match &cert_user {
            Some(user) => {
                if user.as_bytes() != credentials.user.as_slice() && !credentials.user.is_empty() {
                    tracing::debug!(
                        handshake_user = %user_field(&credentials.user),
                        "the client certificate names the user; the handshake's is ignored"
                    );
                }
                user.as_bytes().to_vec()
            }
            None => credentials.user.clone(),
        };
        tracing::Span::current().record("user", user_field(&user));
        let mut session = Session::new(self.handle.handle(), user, self.peer, reply);
        session.tls = self.tls.clone();

        // The password file first, then the auth hook, as q runs -u/-U before .z.pw: a client the
        // file refuses never reaches the hook.
        if cert_user.is_none()
            && let Some(store) = &self.shared.password
            && !store
                .check(&credentials.user, credentials.password.as_deref())
                .await
        {
            tracing::info!(
                check = "password file",
                "authentication failed; closing without a reply"
            );
            return None;
        }
        match self.shared.hooks.on_auth(&session, &credentials).await {
            AuthVerdict::Deny => {
                tracing::info!(
                    check = "auth hook",
                    "authentication failed; closing without a reply"
                );
                return None;
            }
            AuthVerdict::Allow(Some(user)) => {
                tracing::Span::current().record("user", user_field(&user));
                session.user = user.into();
            }
            // With no password file and no opinion, everyone is accepted, as q's default .z.pw
            // does; with a file, getting here means it accepted.
            AuthVerdict::Allow(None) | AuthVerdict::Pass => {}
        }

        let max_per_user = limits.max_connections_per_user;
        let Some(user_guard) = self.shared.registry.claim_user(&session.user, max_per_user) else {
            tracing::warn!(
                limit = "max_connections_per_user",
                max = max_per_user,
                "user has too many connections; closing without a reply"
            );
            return None;
        };

        if let Err(error) = self.connection.write_capability(reply).await {
            tracing::info!(%error, "could not send the capability byte; closing");
            return None;
        }
        tracing::debug!(capability, reply, "handshake accepted");
        Some(Open {
            encode: EncodeOptions {
                capability: reply,
                locality: locality(&self.peer),
            },
            shared: self.shared,
            connection: self.connection,
            session,
            signals: self.signals,
            _user: user_guard,
            _handle: self.handle,
        })
    }
}

impl<H: Hooks, S: AsyncRead + AsyncWrite + Unpin + Send> Open<H, S> {
    /// Runs the open hook and the message loop, then closes and runs the close hook, exactly
    /// once, whichever side closed.
    async fn run(mut self) {
        let signals = self.signals.clone();
        let reason = tokio::select! {
            biased;
            () = signals.cut() => CloseReason::Shutdown,
            reason = self.serve() => reason,
        };
        self.connection.shutdown().await;
        tracing::info!(%reason, "connection closed");
        self.shared.hooks.on_close(&self.session, &reason).await;
    }

    /// The open hook, then messages until something ends the connection; returns why.
    async fn serve(&mut self) -> CloseReason {
        if let OpenVerdict::Close(why) = self.shared.hooks.on_open(&self.session).await {
            return CloseReason::Refused(why);
        }
        // One shutdown future for the whole loop: making a new one for every message registers a new
        // waiter each time, which cost about a quarter of the CPU of small-message ingest.
        let signals = self.signals.clone();
        let draining = signals.draining();
        tokio::pin!(draining);
        loop {
            // A frame already in the read-ahead buffer is taken without the select: polling the
            // shutdown signal for each of many pipelined messages cost a third of the CPU of
            // small-message ingest. The signal is still seen at every read from the socket, so a
            // shutdown waits for at most one read's worth of messages.
            let frame = match self.connection.buffered_frame() {
                Ok(Some(frame)) => Ok(Some(frame)),
                Ok(None) => tokio::select! {
                    biased;
                    () = &mut draining => return CloseReason::Shutdown,
                    frame = self.connection.read_frame() => frame,
                },
                Err(error) => Err(error),
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return CloseReason::ClientClosed,
                Err(error) => return self.read_failed(error),
            };
            let request = match decode(frame, self.shared.limits.max_message_bytes) {
                Ok(request) => request,
                Err(error) => {
                    // q's .z.bm: log the bad message, close that client, run .z.pc.
                    tracing::warn!(%error, "malformed message; closing");
                    return CloseReason::BadMessage(error);
                }
            };
            if let Err(reason) = self.process(&request).await {
                return reason;
            }
            self.shared.buffers.put(request.into_message().into_bytes());
        }
    }

    /// Handles one message to the end: for a sync request, the response is written before this
    /// returns.
    async fn process(&mut self, request: &Request) -> Result<(), CloseReason> {
        match request.message_type() {
            MessageType::Sync => {
                let response = self.answer(request).await;
                self.respond(response).await
            }
            MessageType::Async => {
                let verdict = if self.restricted() && password::is_system_command(request) {
                    Verdict::Deny("access".to_owned())
                } else {
                    self.shared.hooks.on_async(&self.session, request).await
                };
                if let Verdict::Deny(error) = verdict {
                    // As q prints an async error on its console and sends nothing back.
                    tracing::info!(%error, "async message refused; dropped");
                }
                Ok(())
            }
            MessageType::Response => {
                // Only a reply to a query the server sent is expected, and qgate sends none: this
                // is a stray, or a client's refusal of a server query (PyKX and qPython send an
                // error). Neither needs an answer.
                let view = request.view();
                if view.type_code() == qgate_ipc::type_code::ERROR {
                    let text = view.as_bytes().get(1..).unwrap_or_default();
                    let text = text.split(|&b| b == 0).next().unwrap_or_default();
                    tracing::warn!(
                        error = %String::from_utf8_lossy(text),
                        "client sent an error response; ignored"
                    );
                } else {
                    tracing::debug!("client sent a response nobody asked for; ignored");
                }
                Ok(())
            }
        }
    }

    /// The value or the q error that answers a sync request.
    async fn answer(&self, request: &Request) -> Result<K, String> {
        if self.restricted() && password::is_system_command(request) {
            return Err("access".to_owned());
        }
        if let Some(value) = context::answer(request) {
            tracing::debug!("answered a PyKX context query");
            return Ok(value);
        }
        match self.shared.hooks.on_sync(&self.session, request).await {
            Verdict::Reply(value) => Ok(value),
            Verdict::Deny(error) => Err(error),
            Verdict::Pass => Err(NOTHING_ANSWERED.to_owned()),
        }
    }

    /// Encodes and writes a response: the value, or a q error (`-128` and the text).
    async fn respond(&mut self, response: Result<K, String>) -> Result<(), CloseReason> {
        let encoded = match response {
            Ok(value) => match encode_message_with(MessageType::Response, &value, &self.encode) {
                Ok(bytes) => Ok(bytes),
                Err(error) => match Error::Encode(error.clone()).wire_action() {
                    WireAction::Reply(q_error) => {
                        tracing::warn!(%error, q_error, "reply cannot be sent; sending an error");
                        self.encode_error(q_error)
                    }
                    WireAction::Close(_) => {
                        Err(CloseReason::Io(format!("cannot encode the reply: {error}")))
                    }
                },
            },
            Err(text) => self.encode_error(&text),
        }?;
        self.connection
            .write_message(&encoded)
            .await
            .map_err(|error| self.write_failed(error))
    }

    /// A q error response. The text stops at its first NUL, which the wire format cannot carry.
    fn encode_error(&self, text: &str) -> Result<Vec<u8>, CloseReason> {
        let text = text.split('\0').next().unwrap_or_default();
        encode_message_with(MessageType::Response, &K::error(text), &self.encode)
            .map_err(|error| CloseReason::Io(format!("cannot encode an error reply: {error}")))
    }

    /// Whether the password file is `-u`.
    fn restricted(&self) -> bool {
        self.shared
            .password
            .as_ref()
            .is_some_and(PasswordStore::restricted)
    }

    /// Why reading the next message ended the connection, logged.
    fn read_failed(&self, error: ConnectionError) -> CloseReason {
        match error {
            ConnectionError::Frame(FrameError::TooLarge { .. })
            | ConnectionError::Timeout { .. } => {
                // Invariant: both variants name their limit.
                let limit = error.limit().unwrap_or("limit");
                tracing::warn!(limit, %error, "client broke a limit; closing");
                CloseReason::Limit(limit)
            }
            ConnectionError::Frame(error) => {
                tracing::warn!(%error, "malformed message header; closing");
                CloseReason::BadMessage(error.to_string())
            }
            ConnectionError::HandshakeTooLong { .. } | ConnectionError::Truncated(_) => {
                tracing::info!(%error, "client closed in the middle of a message");
                CloseReason::ClientClosed
            }
            ConnectionError::Io(error) => io_reason(&error),
        }
    }

    /// Why writing a response ended the connection.
    fn write_failed(&self, error: ConnectionError) -> CloseReason {
        match error {
            ConnectionError::Timeout { limit, .. } => {
                tracing::warn!(limit, "client stopped reading its responses; closing");
                CloseReason::Limit(limit)
            }
            ConnectionError::Io(error) => io_reason(&error),
            other => CloseReason::Io(other.to_string()),
        }
    }
}

/// Decompresses and validates a frame: what kdb+'s message validator does.
fn decode(frame: Vec<u8>, max_message_bytes: usize) -> Result<Request, String> {
    let message =
        Message::from_frame(frame, &Limits::new(max_message_bytes)).map_err(|e| e.to_string())?;
    Request::new(message).map_err(|e| format!("decode: {e}"))
}

/// A socket error as a close reason: a reset or a broken pipe is the client going away.
fn io_reason(error: &std::io::Error) -> CloseReason {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            CloseReason::ClientClosed
        }
        _ => CloseReason::Io(error.to_string()),
    }
}

/// A user name for the span, lossily as UTF-8.
fn user_field(user: &[u8]) -> String {
    String::from_utf8_lossy(user).into_owned()
}

/// Where a peer is, which decides whether large replies are compressed: loopback peers
/// (127.0.0.0/8, `::1`, and IPv4 loopback mapped into IPv6) are local and never get compressed
/// replies, as kdb+ does not compress to localhost; everyone else is remote (reference §5.1).
pub(crate) fn locality(peer: &SocketAddr) -> Locality {
    let loopback = match peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
    };
    if loopback {
        Locality::Local
    } else {
        Locality::Remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, expect: Locality) {
        let peer: SocketAddr = peer.parse().unwrap();
        assert_eq!(locality(&peer), expect, "{peer}");
    }

    #[test]
    fn loopback_peers_are_local() {
        check("127.0.0.1:5000", Locality::Local);
        check("127.1.2.3:5000", Locality::Local);
        check("[::1]:5000", Locality::Local);
        check("[::ffff:127.0.0.1]:5000", Locality::Local);
    }

    #[test]
    fn everyone_else_is_remote() {
        check("10.0.0.1:5000", Locality::Remote);
        check("192.168.1.20:5000", Locality::Remote);
        check("[2001:db8::1]:5000", Locality::Remote);
        check("[::ffff:10.0.0.1]:5000", Locality::Remote);
        check("0.0.0.0:5000", Locality::Remote);
    }

    #[test]
    fn a_large_reply_to_a_remote_peer_is_compressed() {
        let value = K::symbols(std::iter::repeat_n("a", 1000));
        let remote = EncodeOptions {
            capability: 3,
            locality: locality(&"10.0.0.1:5000".parse().unwrap()),
        };
        let local = EncodeOptions {
            capability: 3,
            locality: locality(&"127.0.0.1:5000".parse().unwrap()),
        };
        let compressed = encode_message_with(MessageType::Response, &value, &remote).unwrap();
        let plain = encode_message_with(MessageType::Response, &value, &local).unwrap();
        assert_eq!(compressed[2], 1, "compressed flag");
        assert_eq!(plain[2], 0);
        assert!(compressed.len() < plain.len() / 2);
    }
}
