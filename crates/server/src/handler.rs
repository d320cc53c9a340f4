//! One client, from its first byte to its close, in the order of q's own callbacks (reference
//! §7.1):
//!
//! ```text
//!   Handler::log_in    read_handshake → identify → authenticate (brute-force wait, password file,
//!                      on_auth) → claim_slots (max_connections, per user) → the capability byte
//!   LoggedIn::run      on_open → the message loop (next → handle, one message at a time)
//!                      → close the socket → on_close, exactly once
//! ```
//!
//! Everything that goes wrong with a client ends that client only, with a log line in its `conn`
//! span, and never reaches the listener.
//!
//! Each message is handled to the end (hook, reply written) before the next is read, so responses
//! leave in the order the requests arrived, which clients rely on: they have no correlation ids.
//! What a connection has to do next comes from one place, [`LoggedIn::next`]; a second source of
//! outgoing messages is one more arm there.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use arc_swap::ArcSwap;
use qgate_hooks::{
    AuthVerdict, Backend, Body, CloseReason, Credentials, DataVerdict, Downstream, ForwardError,
    Hooks, Link, OpenVerdict, Push, Request, Session, TlsFacts, Verdict,
};
use qgate_ipc::{
    Close, EncodeOptions, HEADER_LEN, K, Locality, Message, MessageType, encode_message_with,
    handshake, message_len,
};
use qgate_metrics::{self as metrics, Decision, Event, Metrics};
use tracing::{Instrument as _, field};

use crate::{
    admission::HandshakeSlot,
    budget::{CHARGED_MIN_BYTES, Charge, MemoryBudget},
    buffers::BufferPool,
    connection::{ClientStream, Connection, ConnectionError, Frame, Incoming, Opening},
    context,
    http::HttpConnection,
    live::{PasswordSlot, Seat, Seats},
    logging::{ClientText, Repeats},
    options::{HttpOptions, ServerLimits, UserFrom},
    outbound::{self, Capture},
    registry::{HandleGuard, Registry, UserGuard},
    shutdown::Signals,
    throttle::{Admission, Attempt, LoginThrottle},
    tls,
};

/// What a connection turned out to be once its first bytes arrived.
enum Opened<H, B: Backend, S> {
    /// A q client, logged in.
    Q(Box<LoggedIn<H, B, S>>),
    /// An HTTP client.
    Http(HttpConnection<H, B, S>),
}

/// What every connection of a server shares.
#[derive(Debug)]
pub(crate) struct ServerState<H, B> {
    pub(crate) hooks: H,
    /// What answers the messages every hook passed: the gateway, or nothing.
    pub(crate) backend: B,
    /// The limits in force: each connection takes a copy when it is accepted.
    pub(crate) limits: Arc<ArcSwap<ServerLimits>>,
    /// The password file in force.
    pub(crate) password: Arc<PasswordSlot>,
    pub(crate) registry: Arc<Registry>,
    /// Large message buffers for reuse.
    pub(crate) buffers: Arc<BufferPool>,
    /// The bytes of messages and replies in flight.
    pub(crate) budget: MemoryBudget,
    /// Failed logins and the waits they cost.
    pub(crate) logins: Arc<LoginThrottle>,
    /// One seat per logged-in connection: `max_connections` in all. Taken when a login
    /// succeeds, so that connections still in their handshake never hold one.
    pub(crate) seats: Seats,
    /// Whether a verified client certificate names the user (`UserFrom::None` without TLS).
    pub(crate) user_from: UserFrom,
    /// Connections, logins and messages are counted here.
    pub(crate) metrics: Metrics,
    /// HTTP on the q port.
    pub(crate) http: HttpOptions,
}

/// The span every log line of one connection is in.
pub(crate) fn span(handle: &HandleGuard, peer: &SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "conn",
        handle = handle.handle().0,
        peer = %peer,
        user = field::Empty,
    )
}

/// A connection that has been accepted, until its login is decided.
pub(crate) struct Handler<H, B, S> {
    state: Arc<ServerState<H, B>>,
    /// The limits in force when the connection was accepted, which it keeps.
    limits: Arc<ServerLimits>,
    connection: Connection<S>,
    peer: SocketAddr,
    handle: HandleGuard,
    signals: Signals,
    /// What the TLS handshake negotiated; `None` on a plain connection.
    tls: Option<Arc<TlsFacts>>,
    /// Held until the login is decided, then given back: connections that have not logged in
    /// are counted apart from those that have.
    _handshake: HandshakeSlot,
}

/// A handshake, read, with the session it opens.
struct Login {
    session: Session,
    credentials: Credentials,
    /// Whether a verified client certificate named the user: it is then the credential, and the
    /// password file is not asked.
    by_certificate: bool,
}

/// What a logged-in connection holds for as long as it lives.
struct Slots {
    /// One of `max_connections`.
    _seat: Seat,
    /// One of the user's `max_connections_per_user`.
    _user: UserGuard,
}

impl<H: Hooks, B: Backend, S: ClientStream> Handler<H, B, S> {
    /// A handler for a freshly accepted stream, holding its handshake slot.
    pub(crate) fn new(
        state: Arc<ServerState<H, B>>,
        stream: S,
        peer: SocketAddr,
        handle: HandleGuard,
        handshake: HandshakeSlot,
        signals: Signals,
        tls: Option<Arc<TlsFacts>>,
    ) -> Self {
        let limits = state.limits.load_full();
        let connection = Connection::new(
            stream,
            &limits,
            Arc::clone(&state.buffers),
            state.budget.clone(),
        );
        Self {
            state,
            limits,
            connection,
            peer,
            handle,
            signals,
            tls,
            _handshake: handshake,
        }
    }

    /// Serves the client until it closes, breaks a rule, or the server shuts down, every log line
    /// in `span`.
    pub(crate) async fn run(self, span: tracing::Span) {
        async move {
            let _open = self.state.metrics.connection_opened();
            let signals = self.signals.clone();
            // Until the client has its capability byte nothing is in flight: a shutdown closes
            // the socket at once, and the client reports 'access as for a refusal.
            let opened = tokio::select! {
                biased;
                () = signals.draining() => {
                    tracing::debug!("closed before the handshake completed: shutting down");
                    None
                }
                opened = self.open() => opened,
            };
            match opened {
                Some(Opened::Q(logged_in)) => logged_in.run().await,
                // On the heap, so that hyper's futures do not size every q connection's task.
                Some(Opened::Http(http)) => Box::pin(http.run(tracing::Span::current())).await,
                None => {}
            }
        }
        .instrument(span)
        .await;
    }

    /// Reads the client's first bytes: a q login, or an HTTP connection.
    async fn open(mut self) -> Option<Opened<H, B, S>> {
        match self.read_opening().await? {
            Opening::Handshake(handshake) => self
                .log_in(handshake)
                .await
                .map(|logged_in| Opened::Q(Box::new(logged_in))),
            Opening::Http => {
                let (stream, prefix) = self.connection.into_parts();
                Some(Opened::Http(HttpConnection {
                    state: self.state,
                    stream,
                    prefix,
                    peer: self.peer,
                    handle: self.handle,
                    signals: self.signals,
                    tls: self.tls,
                    handshake: self._handshake,
                    write_timeout: self.limits.write_timeout,
                    body_timeout: self.limits.body_timeout,
                }))
            }
        }
    }

    /// The steps of a login, each of which may refuse the client; the socket is then closed
    /// without a byte.
    async fn log_in(mut self, handshake: handshake::Handshake) -> Option<LoggedIn<H, B, S>> {
        let mut login = self.identify(handshake)?;
        self.authenticate(&mut login).await?;
        let Some(slots) = self.claim_slots(&login.session) else {
            self.state.metrics.login(metrics::Login::OverLimit);
            return None;
        };
        self.state.metrics.login(metrics::Login::Accepted);
        // The backend's side of the session opens before the client's does: in pinned gateway
        // mode its upstream connection is made now, and the client's open completes after it.
        let link = self
            .state
            .backend
            .open(&login.session, &login.credentials)
            .await;
        let capability = login.session.capability;
        if let Err(error) = self.connection.write_capability(capability).await {
            tracing::info!(%error, "could not send the capability byte; closing");
            return None;
        }
        tracing::debug!(capability, "handshake accepted");
        Some(LoggedIn {
            encode: EncodeOptions {
                capability,
                locality: locality(&self.peer),
            },
            state: self.state,
            limits: self.limits,
            connection: self.connection,
            session: login.session,
            link,
            signals: self.signals,
            repeats: ConnectionRepeats::default(),
            async_seen: 0,
            _slots: slots,
            _handle: self.handle,
        })
    }

    /// The handshake, or the start of an HTTP request, within `handshake_timeout` and
    /// `max_handshake_bytes`.
    async fn read_opening(&mut self) -> Option<Opening> {
        let limits = &self.limits;
        let read = tokio::time::timeout(
            limits.handshake_timeout,
            self.connection
                .read_opening(limits.max_handshake_bytes, self.state.http.enabled),
        )
        .await;
        match read {
            Ok(Ok(Some(opening))) => Some(opening),
            Ok(Ok(None)) => {
                tracing::debug!("closed before sending a handshake");
                None
            }
            Ok(Err(error)) => {
                match error.limit() {
                    Some(limit) => tracing::warn!(limit, %error, "bad handshake; closing"),
                    None => tracing::info!(%error, "handshake not completed; closing"),
                }
                None
            }
            Err(_) => {
                tracing::info!(
                    limit = "handshake_timeout",
                    after = ?limits.handshake_timeout,
                    "handshake not completed in time; closing"
                );
                None
            }
        }
    }

    /// Who the client says it is, or who its certificate says it is with `tls.user_from`.
    fn identify(&self, handshake: handshake::Handshake) -> Option<Login> {
        let reply = handshake.reply_byte();
        let credentials = Credentials {
            user: handshake.user,
            password: handshake.password,
        };
        // With `tls.user_from`, a verified client certificate is the user, whatever the handshake
        // says, and it is the credential: the password file is not asked.
        let cert_user = match tls::cert_user(self.tls.as_deref(), self.state.user_from) {
            Ok(user) => user,
            Err(why) => {
                tracing::warn!(reason = why, "client certificate names no user; closing");
                return None;
            }
        };
        let by_certificate = cert_user.is_some();
        let user = match cert_user {
            Some(user) => {
                if user.as_bytes() != credentials.user.as_slice() && !credentials.user.is_empty() {
                    tracing::debug!(
                        handshake_user = %ClientText(&credentials.user),
                        "the client certificate names the user; the handshake's is ignored"
                    );
                }
                user.into_bytes()
            }
            None => credentials.user.clone(),
        };
        record_user(&user);
        let mut session = Session::new(self.handle.handle(), user, self.peer, reply);
        session.tls = self.tls.clone();
        Some(Login {
            session,
            credentials,
            by_certificate,
        })
    }

    /// The password file, then the auth hook, as q runs -u/-U before .z.pw (a client the file
    /// refuses never reaches the hook); all of it after the wait that earlier failures from this
    /// address or for this user cost, which is the same whatever the outcome.
    async fn authenticate(&self, login: &mut Login) -> Option<()> {
        let Some(attempt) = self.wait_turn(&login.credentials.user).await else {
            self.state.metrics.login(metrics::Login::Throttled);
            return None;
        };
        let Some(check) = self.check_credentials(login).await else {
            attempt.succeeded();
            return Some(());
        };
        self.state.metrics.login(metrics::Login::Denied);
        let failure = attempt.failed();
        if let Some(left_out) = failure.log {
            tracing::info!(
                check,
                failures = failure.failures,
                next_attempt_waits = ?failure.delay,
                left_out,
                "authentication failed; closing without a reply"
            );
        }
        None
    }

    /// Waits for this login's turn, as earlier failures from the address or for `user` say;
    /// `None` when the address has queued up too many attempts, and is refused without a check.
    async fn wait_turn(&self, user: &[u8]) -> Option<Attempt> {
        match self.state.logins.admit(self.peer.ip(), user) {
            Admission::Proceed { wait, attempt } => {
                if !wait.is_zero() {
                    tracing::debug!(?wait, "waiting out earlier failed logins before checking");
                    tokio::time::sleep(wait).await;
                }
                Some(attempt)
            }
            Admission::Refuse { failures, log } => {
                if let Some(left_out) = log {
                    tracing::warn!(
                        failures,
                        left_out,
                        limit = "auth.max_failed_login_delay",
                        "too many failed logins from this address: refused without a check"
                    );
                }
                None
            }
        }
    }

    /// The password file (unless a client certificate is the credential), then the auth hook,
    /// which may rename the user; `None` when both let the client in, else the check that
    /// refused it.
    async fn check_credentials(&self, login: &mut Login) -> Option<&'static str> {
        let credentials = &login.credentials;
        if !login.by_certificate
            && let Some(store) = self.state.password.load()
            && !store.check(&credentials.user, credentials.password.as_deref())
        {
            return Some("password file");
        }
        match self.state.hooks.on_auth(&login.session, credentials).await {
            AuthVerdict::Deny => Some("auth hook"),
            AuthVerdict::Allow(Some(user)) => {
                record_user(&user);
                login.session.user = user.into();
                None
            }
            // With no password file and no opinion, everyone is accepted, as q's default .z.pw
            // does; with a file, getting here means it accepted.
            AuthVerdict::Allow(None) | AuthVerdict::Pass => None,
        }
    }

    /// A slot among `max_connections`, and one among the user's `max_connections_per_user`.
    fn claim_slots(&self, session: &Session) -> Option<Slots> {
        let limits = &self.limits;
        let Some(seat) = self.state.seats.take(limits.max_connections) else {
            tracing::warn!(
                limit = "max_connections",
                max = limits.max_connections,
                "too many connections; closing without a reply"
            );
            return None;
        };
        let max_per_user = limits.max_connections_per_user;
        let Some(user) = self.state.registry.claim_user(&session.user, max_per_user) else {
            tracing::warn!(
                limit = "max_connections_per_user",
                max = max_per_user,
                "user has too many connections; closing without a reply"
            );
            return None;
        };
        Some(Slots {
            _seat: seat,
            _user: user,
        })
    }
}

/// Records the user name in the connection's span, escaped and cut short.
fn record_user(user: &[u8]) {
    tracing::Span::current().record("user", field::display(ClientText(user)));
}

/// The events of one connection that a client can repeat at will, each logged at most a few
/// times a window (see `logging.rs`).
#[derive(Debug, Default)]
struct ConnectionRepeats {
    async_denied: Repeats,
    error_responses: Repeats,
    stray_responses: Repeats,
    publications_dropped: Repeats,
}

/// A connection past its handshake and authentication, whose client has its capability byte.
struct LoggedIn<H, B: Backend, S> {
    state: Arc<ServerState<H, B>>,
    /// The limits in force when the connection was accepted.
    limits: Arc<ServerLimits>,
    connection: Connection<S>,
    session: Session,
    /// The session's way to the backend (in pinned gateway mode, its own upstream connection),
    /// closed with it.
    link: B::Link,
    encode: EncodeOptions,
    signals: Signals,
    repeats: ConnectionRepeats,
    /// Async messages seen, for timing one in [`metrics::ASYNC_SAMPLE`].
    async_seen: u32,
    /// Held for the life of the connection: it counts against `max_connections` and the user's
    /// limit, and its handle stays taken, until this is dropped.
    _slots: Slots,
    _handle: HandleGuard,
}

/// What a logged-in connection has to do next.
enum Next {
    /// Handle a message from the client.
    Message(Incoming),
    /// Forward to the client a message the backend sent it unasked.
    Push(Push),
    /// Close, for this reason.
    Close(CloseReason),
}

/// What answers a sync request.
enum Answer {
    /// A value, or a q error, from the server or the hooks.
    Value(Result<K, String>),
    /// A value as the hooks encoded it (a plugin's reply): framed, never decoded.
    Body(Body),
    /// The backend, at this route (`None`: its default).
    Forward(Option<String>),
}

/// A reply on its way to the client: its encoded bytes and the memory budget they hold.
struct Outgoing {
    bytes: Vec<u8>,
    _charge: Charge,
}

impl Outgoing {
    /// `bytes`, a reply of `len` bytes, holding `charge` shrunk to what they take: their
    /// capacity for a charged reply, nothing for a small one.
    fn new(bytes: Vec<u8>, len: usize, mut charge: Charge) -> Self {
        let held = if len >= CHARGED_MIN_BYTES {
            bytes.capacity()
        } else {
            0
        };
        charge.shrink_to(held);
        Self {
            bytes,
            _charge: charge,
        }
    }
}

impl<H: Hooks, B: Backend, S: ClientStream> LoggedIn<H, B, S> {
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
        self.log_unreported();
        tracing::info!(reason = %ClientText(reason.to_string().as_bytes()), "connection closed");
        self.state.hooks.on_close(&self.session, &reason).await;
    }

    /// The open hook, then messages until something ends the connection; returns why.
    async fn serve(&mut self) -> CloseReason {
        if let OpenVerdict::Close(why) = self.state.hooks.on_open(&self.session).await {
            return CloseReason::Refused(why);
        }
        // One shutdown future for the whole loop: making a new one for every message registers a new
        // waiter each time, which cost about a quarter of the CPU of small-message ingest.
        let signals = self.signals.clone();
        let draining = signals.draining();
        tokio::pin!(draining);
        loop {
            let incoming = match self.next(draining.as_mut()).await {
                Next::Message(incoming) => incoming,
                Next::Push(push) => {
                    if let Err(reason) = self.relay(&push.frames, &push.from).await {
                        return reason;
                    }
                    continue;
                }
                Next::Close(reason) => return reason,
            };
            if let Err(reason) = self.handle(incoming).await {
                return reason;
            }
        }
    }

    /// The next thing to do: a message from the client, a message the backend pushes to it, or a
    /// close (the client's, the backend's, a broken rule, a shutdown).
    ///
    /// A frame already in the read-ahead buffer is taken without the select: polling the shutdown
    /// signal for each of many pipelined messages cost a third of the CPU of small-message
    /// ingest. The signal is still seen at every read from the socket, so a shutdown waits for at
    /// most one read's worth of messages.
    async fn next(&mut self, draining: std::pin::Pin<&mut impl Future<Output = ()>>) -> Next {
        let read = match self.connection.buffered_frame() {
            Ok(Some(incoming)) => Ok(Some(incoming)),
            Ok(None) => tokio::select! {
                biased;
                () = draining => return Next::Close(CloseReason::Shutdown),
                read = self.connection.read_frame() => read,
                // Both reads are cancel-safe: whichever loses keeps what it had read.
                push = self.link.push() => {
                    return match push {
                        Ok(push) => Next::Push(push),
                        Err(closed) => {
                            tracing::warn!(
                                cause = %ClientText(closed.0.as_bytes()),
                                "the backend ended the session; closing the client"
                            );
                            Next::Close(CloseReason::Io(format!("backend closed: {closed}")))
                        }
                    };
                }
            },
            Err(error) => Err(error),
        };
        match read {
            Ok(Some(incoming)) => Next::Message(incoming),
            Ok(None) => Next::Close(CloseReason::ClientClosed),
            Err(error) => Next::Close(read_failed(error)),
        }
    }

    /// Handles one message to the end: for a sync request, the response is written before this
    /// returns.
    async fn handle(&mut self, incoming: Incoming) -> Result<(), CloseReason> {
        let frame = match incoming {
            Incoming::Frame(frame) => frame,
            Incoming::Refused { header, error } => {
                return self
                    .over_budget(header.message_type, header.len(), &error)
                    .await;
            }
        };
        let message_type = frame.header.message_type;
        // Every sync request is timed, and one async message in `ASYNC_SAMPLE`.
        let timed = match message_type {
            MessageType::Sync => true,
            MessageType::Async => {
                self.async_seen = self.async_seen.wrapping_add(1);
                self.async_seen % metrics::ASYNC_SAMPLE == 1
            }
            MessageType::Response => false,
        };
        let started = timed.then(Instant::now);
        let elapsed = move || started.map(|started| started.elapsed());
        let (request, mut charge) = match self.decode(frame).await {
            Decoded::Request(request, charge) => (request, charge),
            Decoded::OverBudget(len, error) => {
                return self.over_budget(message_type, len, &error).await;
            }
            Decoded::Close(reason) => return Err(reason),
        };
        let held = charge.bytes();
        if let Err(error) = self.charge_deciding(&request, &mut charge).await {
            let len = request.body().len();
            self.done_with(request, charge);
            return self.over_budget(message_type, len, &error).await;
        }
        match request.message_type() {
            MessageType::Sync => {
                let answer = self.answer(&request).await;
                charge.shrink_to(held);
                let decision = match &answer {
                    Answer::Value(Ok(_)) | Answer::Body(_) => Decision::Reply,
                    Answer::Value(Err(_)) => Decision::Deny,
                    Answer::Forward(None) => Decision::Pass,
                    Answer::Forward(Some(_)) => Decision::Route,
                };
                let result = match answer {
                    Answer::Value(response) => {
                        // The request's bytes go back for reuse, but not its charge: that now
                        // pays for the answer, in memory until it is encoded, and the reply's
                        // charge grows from it. Given back first, a client waiting for its
                        // reply's charge would hold its answer uncounted.
                        let carried = self.keep_charge(request, charge);
                        match self.encode(response, carried).await {
                            Ok(outgoing) => self.send(outgoing).await,
                            Err(reason) => Err(reason),
                        }
                    }
                    Answer::Body(body) => {
                        let carried = self.keep_charge(request, charge);
                        match self.frame(body, carried).await {
                            Ok(outgoing) => self.send(outgoing).await,
                            Err(reason) => Err(reason),
                        }
                    }
                    Answer::Forward(route) => {
                        let result = self.forward(route.as_deref(), &request).await;
                        self.done_with(request, charge);
                        result
                    }
                };
                self.state.metrics.request(Event::Sync, decision, elapsed());
                result
            }
            MessageType::Async => {
                let verdict = if self.restricted(&request) {
                    Verdict::Deny("access".to_owned())
                } else {
                    self.state.hooks.on_async(&self.session, &request).await
                };
                charge.shrink_to(held);
                let decision = match &verdict {
                    Verdict::Reply(_) => Decision::Reply,
                    Verdict::Deny(_) => Decision::Deny,
                    Verdict::Pass => Decision::Pass,
                    Verdict::Route(_) => Decision::Route,
                };
                let record = |state: &ServerState<H, B>| {
                    state.metrics.request(Event::Async, decision, elapsed());
                };
                let route = match verdict {
                    Verdict::Deny(error) => {
                        record(&self.state);
                        self.done_with(request, charge);
                        if let Some(left_out) = self.repeats.async_denied.note() {
                            // As q prints an async error on its console and sends nothing back.
                            tracing::info!(
                                error = %ClientText(error.as_bytes()),
                                left_out,
                                "async message refused; dropped"
                            );
                        }
                        return Ok(());
                    }
                    // A plugin took it: nothing goes further.
                    Verdict::Reply(_) => {
                        record(&self.state);
                        self.done_with(request, charge);
                        return Ok(());
                    }
                    Verdict::Pass => None,
                    Verdict::Route(route) => Some(route),
                };
                let result = self.link.send_async(route.as_deref(), &request).await;
                record(&self.state);
                self.done_with(request, charge);
                match result {
                    Ok(()) => Ok(()),
                    Err(ForwardError::Refuse(error)) => {
                        if let Some(left_out) = self.repeats.async_denied.note() {
                            tracing::warn!(
                                error = %ClientText(error.as_bytes()),
                                left_out,
                                "async message not forwarded; dropped"
                            );
                        }
                        Ok(())
                    }
                    Err(error) => Err(forward_failed(error)),
                }
            }
            MessageType::Response => {
                // A client's answer to a sync request the backend sent it (a pinned upstream's
                // `.z.w` query) goes back; anything else is a stray.
                let result = self.link.respond(&request).await;
                match result {
                    Ok(true) => {}
                    Ok(false) => self.stray_response(&request),
                    Err(error) => {
                        self.done_with(request, charge);
                        return Err(forward_failed(error));
                    }
                }
                self.done_with(request, charge);
                Ok(())
            }
        }
    }

    /// Decompresses (within the memory budget) and validates a frame: what kdb+'s message
    /// validator does.
    async fn decode(&self, frame: Frame) -> Decoded {
        let Frame {
            header,
            bytes,
            charge,
        } = frame;
        let limits = self.limits.codec();
        let mut charge = charge;
        // The compressed frame's charge, while it is decompressed: both are in memory meanwhile.
        let mut compressed = None;
        if header.compressed {
            let len = match Message::uncompressed_len(&header, &bytes, &limits) {
                Ok(len) => len,
                Err(error) => {
                    let close = Close::from(&error);
                    return Decoded::Close(bad_message(
                        close,
                        &qgate_ipc::Error::Decompress(error),
                    ));
                }
            };
            if len >= CHARGED_MIN_BYTES {
                match self.state.budget.charge(len).await {
                    Ok(uncompressed) => {
                        compressed = Some(std::mem::replace(&mut charge, uncompressed))
                    }
                    Err(error) => return Decoded::OverBudget(len, error),
                }
            }
        }
        let message = Message::from_parsed(header, bytes, &limits);
        drop(compressed);
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                let close = Close::from(&error);
                return Decoded::Close(bad_message(close, &qgate_ipc::Error::Decompress(error)));
            }
        };
        match Request::new(message) {
            Ok(request) => Decoded::Request(request, charge),
            Err(error) => {
                let close = Close::from(&error);
                Decoded::Close(bad_message(close, &qgate_ipc::Error::Decode(error)))
            }
        }
    }

    /// Charges what the hooks hold while they decide on a large request (one whose `charge` is
    /// not nothing), on top of it; [`Charge::shrink_to`] gives it back once they have decided. A
    /// request whose copies would take more than the whole budget takes all of it, and is decided
    /// on alone.
    async fn charge_deciding(
        &self,
        request: &Request,
        charge: &mut Charge,
    ) -> Result<(), crate::budget::BudgetExhausted> {
        let held = charge.bytes();
        if held == 0 {
            return Ok(());
        }
        let deciding = self
            .state
            .hooks
            .deciding_bytes(request)
            .min(self.state.budget.total().saturating_sub(held));
        let deadline = tokio::time::Instant::now() + MemoryBudget::WAIT;
        charge.grow(deciding, deadline).await
    }

    /// Refuses a message the memory budget cannot hold: a sync request gets a q error naming
    /// the limit, an async one is dropped; the connection goes on.
    async fn over_budget(
        &mut self,
        message_type: MessageType,
        len: usize,
        error: &crate::budget::BudgetExhausted,
    ) -> Result<(), CloseReason> {
        tracing::warn!(
            limit = "memory_budget",
            bytes = len,
            %error,
            "message refused: the server's memory budget is spent"
        );
        if message_type != MessageType::Sync {
            return Ok(());
        }
        let text = format!(
            "qgate: a message of {len} bytes was refused: the server's memory budget \
             (limits.memory_budget) is spent; try again"
        );
        let outgoing = self.encode(Err(text), self.state.budget.empty()).await?;
        self.send(outgoing).await
    }

    /// What answers a sync request: a value or a q error from here, or the backend.
    async fn answer(&self, request: &Request) -> Answer {
        if self.restricted(request) {
            return Answer::Value(Err("access".to_owned()));
        }
        if let Some(value) = context::answer(request) {
            tracing::debug!("answered a PyKX context query");
            return Answer::Value(Ok(value));
        }
        match self.state.hooks.on_sync(&self.session, request).await {
            Verdict::Reply(body) => Answer::Body(body),
            Verdict::Deny(error) => Answer::Value(Err(error)),
            Verdict::Pass => Answer::Forward(None),
            Verdict::Route(route) => Answer::Forward(Some(route)),
        }
    }

    /// Hands a sync request to the backend, which writes the reply (and anything it pushes
    /// before it) to the client, each write within the write timeout.
    async fn forward(&mut self, route: Option<&str>, request: &Request) -> Result<(), CloseReason> {
        if self.state.hooks.outbound(&self.session).responses {
            return self.forward_watched(route, request).await;
        }
        let mut client = ToClient {
            connection: &mut self.connection,
        };
        match self.link.sync(route, request, &mut client).await {
            Ok(()) => Ok(()),
            Err(ForwardError::Refuse(error)) => {
                let outgoing = self.encode_error(&error)?;
                self.send(outgoing).await
            }
            Err(ForwardError::Close(error)) => {
                let outgoing = self.encode_error(&error)?;
                self.send(outgoing).await?;
                Err(forward_failed(ForwardError::Close(error)))
            }
            Err(error) => Err(forward_failed(error)),
        }
    }

    /// [`LoggedIn::forward`] when the hooks look at replies: the backend's writes are captured,
    /// what it pushed before the reply is relayed (through `on_publication` when the hooks look
    /// at those too), and the reply goes through `on_response` before the client gets it.
    ///
    /// Nothing has reached the client when the backend fails, so a reply cut off or one the
    /// memory budget cannot hold becomes a q error rather than a cut connection.
    async fn forward_watched(
        &mut self,
        route: Option<&str>,
        request: &Request,
    ) -> Result<(), CloseReason> {
        let mut capture = Capture::new(
            &mut self.connection,
            &self.state.budget,
            &self.state.buffers,
        );
        let result = self.link.sync(route, request, &mut capture).await;
        let over_budget = capture.over_budget.take();
        let (bytes, _charge) = capture.into_parts();
        let mut frames: Vec<_> = outbound::frames(&bytes).collect();
        let reply = match result {
            Ok(()) => frames.pop(),
            Err(_) => None,
        };
        // What came before the reply, in order and in one go; a frame that cannot be read ends it
        // (the reply after it is then one too).
        let whole = frames.iter().take_while(|frame| frame.is_ok()).count();
        if let Some(Ok(last)) = whole.checked_sub(1).and_then(|last| frames.get(last)) {
            let end = last.start + last.bytes.len();
            self.relay(&bytes[..end], "the backend").await?;
        }
        if let Some(Err(why)) = frames.get(whole) {
            self.publication_dropped("the backend", why);
        }
        // Where the reply is, so that its bytes can be handed on without a copy.
        let reply = reply.map(|frame| frame.map(|frame| (frame.header, frame.start)));
        if let Some(exhausted) = over_budget {
            self.state.buffers.put(bytes);
            tracing::warn!(
                limit = "memory_budget",
                error = %exhausted,
                "reply refused: the server's memory budget is spent"
            );
            let outgoing = self.encode_error(
                "qgate: the reply was dropped: the server's memory budget \
                 (limits.memory_budget) cannot hold it while plugins look at it; try again",
            )?;
            return self.send(outgoing).await;
        }
        match result {
            Ok(()) => {}
            Err(ForwardError::Broken(cause)) => {
                // Nothing of the reply reached the client: it gets an error, not a cut stream.
                let outgoing = self.encode_error(&format!("reply cut off: {cause}"))?;
                return self.send(outgoing).await;
            }
            Err(ForwardError::Refuse(error)) => {
                let outgoing = self.encode_error(&error)?;
                return self.send(outgoing).await;
            }
            Err(ForwardError::Close(error)) => {
                let outgoing = self.encode_error(&error)?;
                self.send(outgoing).await?;
                return Err(forward_failed(ForwardError::Close(error)));
            }
            Err(error) => return Err(forward_failed(error)),
        }
        let (header, start) = match reply {
            Some(Ok((header, start))) if header.message_type == MessageType::Response => {
                (header, start)
            }
            Some(Err(why)) => return self.malformed_reply(&why).await,
            _ => {
                return self
                    .malformed_reply("the backend's last message is not a reply")
                    .await;
            }
        };
        // A compressed reply passes as it came: its frame is kept for that.
        let compressed = header
            .compressed
            .then(|| bytes.get(start..).unwrap_or_default().to_vec());
        let opened = outbound::open_reply(
            bytes,
            header,
            start,
            &self.state.budget,
            &self.state.buffers,
        )
        .await;
        let (response, _charge) = match opened {
            Ok(opened) => opened,
            Err(why) => return self.malformed_reply(&why).await,
        };
        let verdict = self
            .state
            .hooks
            .on_response(&self.session, request, &response)
            .await;
        let sent = match verdict {
            DataVerdict::Pass => {
                let frame = compressed
                    .as_deref()
                    .unwrap_or_else(|| response.message().as_bytes());
                self.connection
                    .write_message(frame)
                    .await
                    .map_err(write_failed)
            }
            DataVerdict::Replace(body) => {
                let framed = outbound::frame_body(
                    MessageType::Response,
                    &body,
                    self.encode.locality,
                    self.encode.capability,
                );
                match framed {
                    Ok(framed) => self
                        .connection
                        .write_message(&framed)
                        .await
                        .map_err(write_failed),
                    Err(error) => {
                        let outgoing = self.encode_error(&format!("qgate: {error}"))?;
                        self.send(outgoing).await
                    }
                }
            }
            DataVerdict::Deny(error) => {
                let outgoing = self.encode_error(&error)?;
                self.send(outgoing).await
            }
        };
        self.state.buffers.put(response.into_message().into_bytes());
        sent
    }

    /// A reply from the backend that cannot be read: the client gets a q error saying so, and the
    /// log the cause.
    async fn malformed_reply(&mut self, why: &str) -> Result<(), CloseReason> {
        tracing::warn!(cause = %ClientText(why.as_bytes()), "the backend's reply cannot be read");
        let outgoing = self.encode_error(&format!(
            "qgate: the upstream's reply cannot be read: {why}"
        ))?;
        self.send(outgoing).await
    }

    /// Writes to the client what the backend pushed it unasked: as it came, or, when the hooks
    /// look at publications, each async message through `on_publication` (a sync request from the
    /// backend goes as it came: the client answers it, and holding it back would leave the
    /// backend waiting).
    async fn relay(&mut self, frames: &[u8], from: &str) -> Result<(), CloseReason> {
        if !self.state.hooks.outbound(&self.session).publications {
            return self
                .connection
                .write_message(frames)
                .await
                .map_err(write_failed);
        }
        let mut out = Vec::with_capacity(frames.len());
        for frame in outbound::frames(frames) {
            let frame = match frame {
                Ok(frame) => frame,
                Err(why) => {
                    tracing::warn!(
                        from = %ClientText(from.as_bytes()),
                        cause = %ClientText(why.as_bytes()),
                        "a pushed message cannot be read; dropped"
                    );
                    break;
                }
            };
            if frame.header.message_type != MessageType::Async {
                out.extend_from_slice(frame.bytes);
                continue;
            }
            let verdict = match outbound::open_frame(&frame, &self.state.budget).await {
                Ok((message, _charge)) => {
                    self.state
                        .hooks
                        .on_publication(&self.session, &message)
                        .await
                }
                Err(why) => DataVerdict::Deny(why),
            };
            match verdict {
                DataVerdict::Pass => out.extend_from_slice(frame.bytes),
                DataVerdict::Replace(body) => {
                    let framed = outbound::append_framed(
                        &mut out,
                        MessageType::Async,
                        &body,
                        self.encode.locality,
                        self.encode.capability,
                    );
                    if let Err(why) = framed {
                        self.publication_dropped(from, &why);
                    }
                }
                DataVerdict::Deny(why) => self.publication_dropped(from, &why),
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        self.connection
            .write_message(&out)
            .await
            .map_err(write_failed)
    }

    /// Logs a publication that did not reach the client, within the log's limits.
    fn publication_dropped(&mut self, from: &str, why: &str) {
        if let Some(left_out) = self.repeats.publications_dropped.note() {
            tracing::info!(
                from = %ClientText(from.as_bytes()),
                cause = %ClientText(why.as_bytes()),
                left_out,
                "publication not sent to the client; dropped"
            );
        }
    }

    /// Whether q's `-u` refuses this message: the password file is restricted and the message is
    /// a q system command, a char vector starting with `\` (`"\\ls"`), which q refuses from
    /// remote clients under `-u`.
    ///
    /// That is all `-u` adds in qgate: qgate does not evaluate q, so the rest of what `-u`
    /// restricts in q (file access outside the working directory, `exit`, `hopen` of files) is
    /// up to whatever answers the queries, a plugin or a backend.
    fn restricted(&self, request: &Request) -> bool {
        self.state.password.restricted()
            && request
                .view()
                .string()
                .is_some_and(|text| text.first() == Some(&b'\\'))
    }

    /// A response from the client: only a reply to a query the server sent is expected, and
    /// qgate sends none, so this is a stray, or a client's refusal of a server query (PyKX and
    /// qPython send an error). Neither needs an answer; both are logged, within limits.
    fn stray_response(&mut self, request: &Request) {
        let view = request.view();
        if let Some(text) = view.error_text() {
            if let Some(left_out) = self.repeats.error_responses.note() {
                tracing::warn!(
                    error = %ClientText(text),
                    left_out,
                    "client sent an error response; ignored"
                );
            }
        } else if let Some(left_out) = self.repeats.stray_responses.note() {
            tracing::debug!(left_out, "client sent a response nobody asked for; ignored");
        }
    }

    /// Gives a handled request's buffer back for reuse, and its memory back to the budget.
    fn done_with(&self, request: Request, charge: Charge) {
        drop(self.keep_charge(request, charge));
    }

    /// Gives a handled request's buffer back for reuse, and returns its charge to pay for what
    /// the request's answer holds.
    fn keep_charge(&self, request: Request, charge: Charge) -> Charge {
        self.state.buffers.put(request.into_message().into_bytes());
        charge
    }

    /// Encodes a response, the value or a q error (`-128` and the text), charged to the memory
    /// budget before it is allocated.
    ///
    /// `carried` is the request's charge, which paid for the value until now: the reply's charge
    /// grows from it, waiting only for what the reply needs beyond it. Once encoded, the value is
    /// dropped and the charge is cut to the encoded bytes.
    ///
    /// A value that cannot be sent becomes the q error that says why ('type, 'limit); a reply
    /// the budget cannot hold becomes a q error naming the budget.
    async fn encode(
        &self,
        response: Result<K, String>,
        carried: Charge,
    ) -> Result<Outgoing, CloseReason> {
        let value = match response {
            Ok(value) => value,
            Err(text) => return self.encode_error(&text),
        };
        let len = match message_len(&value, self.encode.capability) {
            Ok(len) => len,
            Err(error) => {
                let q_error = error.q_error();
                tracing::warn!(%error, q_error, "reply cannot be sent; sending an error");
                return self.encode_error(q_error);
            }
        };
        let charge = match self.charge_reply(len, carried).await {
            Ok(charge) => charge,
            Err(refused) => return refused,
        };
        let encoded = encode_message_with(MessageType::Response, &value, &self.encode);
        drop(value);
        match encoded {
            Ok(bytes) => Ok(Outgoing::new(bytes, len, charge)),
            Err(error) => {
                let q_error = error.q_error();
                tracing::warn!(%error, q_error, "reply cannot be sent; sending an error");
                self.encode_error(q_error)
            }
        }
    }

    /// The charge a reply of `len` bytes holds while it is made, grown from `carried`; when the
    /// budget cannot give it, the error reply that says so.
    async fn charge_reply(
        &self,
        len: usize,
        carried: Charge,
    ) -> Result<Charge, Result<Outgoing, CloseReason>> {
        let mut charge = carried;
        if len < CHARGED_MIN_BYTES {
            return Ok(charge);
        }
        // While it is encoded, the value is in memory beside its encoding (about as large:
        // `len` is the value's own encoded size); a reply compressed for a remote peer needs its
        // plain and its compressed form at once, the second at most half the first. A reply
        // whose peak is more than the whole budget takes all of it, and is encoded alone.
        let peak = match self.encode.locality {
            Locality::Remote => len + len + len / 2,
            Locality::Local => len + len,
        }
        .min(self.state.budget.total());
        let more = peak.saturating_sub(charge.bytes());
        let deadline = tokio::time::Instant::now() + MemoryBudget::WAIT;
        match charge.grow(more, deadline).await {
            Ok(()) => Ok(charge),
            Err(error) => {
                tracing::warn!(
                    limit = "memory_budget",
                    bytes = len,
                    %error,
                    "reply refused: the server's memory budget is spent"
                );
                Err(self.encode_error(&format!(
                    "qgate: a reply of {len} bytes was dropped: the server's memory budget \
                     (limits.memory_budget) is spent; try again"
                )))
            }
        }
    }

    /// A reply the hooks encoded, framed for this client as it is, within the memory budget as
    /// [`Self::encode`] keeps it. A client below capability 3 cannot read every type (a GUID, a
    /// timestamp at 0), so for it the value is decoded and sent as a value the server made, which
    /// checks that.
    async fn frame(&self, body: Body, carried: Charge) -> Result<Outgoing, CloseReason> {
        if self.encode.capability < 3 {
            return match body.value() {
                Ok(value) => self.encode(Ok(value), carried).await,
                Err(error) => {
                    tracing::warn!(%error, "reply cannot be read; sending an error");
                    self.encode_error("qgate: a reply that cannot be read")
                }
            };
        }
        let len = HEADER_LEN + body.as_bytes().len();
        let charge = match self.charge_reply(len, carried).await {
            Ok(charge) => charge,
            Err(refused) => return refused,
        };
        let framed = outbound::frame_body(
            MessageType::Response,
            &body,
            self.encode.locality,
            self.encode.capability,
        );
        drop(body);
        match framed {
            Ok(bytes) => Ok(Outgoing::new(bytes, len, charge)),
            Err(error) => {
                tracing::warn!(%error, "reply cannot be sent; sending an error");
                self.encode_error("limit")
            }
        }
    }

    /// A q error response. The text stops at its first NUL, which the wire format cannot carry.
    fn encode_error(&self, text: &str) -> Result<Outgoing, CloseReason> {
        let text = text.split('\0').next().unwrap_or_default();
        match encode_message_with(MessageType::Response, &K::error(text), &self.encode) {
            Ok(bytes) => Ok(Outgoing {
                bytes,
                _charge: self.state.budget.empty(),
            }),
            Err(error) => Err(CloseReason::Io(format!(
                "cannot encode an error reply: {error}"
            ))),
        }
    }

    /// Writes an encoded message to the client, within the write timeout; its memory goes back
    /// to the budget once written.
    async fn send(&mut self, outgoing: Outgoing) -> Result<(), CloseReason> {
        self.connection
            .write_message(&outgoing.bytes)
            .await
            .map_err(write_failed)
    }

    /// Logs how many repeated events were left out and not yet reported, at the close.
    fn log_unreported(&self) {
        let repeats = &self.repeats;
        for (event, count) in [
            ("async messages refused", repeats.async_denied.unreported()),
            ("error responses", repeats.error_responses.unreported()),
            ("stray responses", repeats.stray_responses.unreported()),
            (
                "publications dropped",
                repeats.publications_dropped.unreported(),
            ),
        ] {
            if count > 0 {
                tracing::info!(event, count, "repeated events left out of the log");
            }
        }
    }
}

/// The client's side of a forwarded request: the backend's writes go to its connection, each
/// within the write timeout, and its closing is seen while the backend works.
struct ToClient<'a, S> {
    connection: &'a mut Connection<S>,
}

impl<S: ClientStream> Downstream for ToClient<'_, S> {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.connection
            .write_message(bytes)
            .await
            .map_err(ConnectionError::into_io)
    }

    async fn gone(&mut self) {
        self.connection.peer_closed().await;
    }

    fn socket(&self) -> Option<&tokio::net::TcpStream> {
        self.connection.stream().tcp()
    }

    fn write_timeout(&self) -> std::time::Duration {
        self.connection.write_timeout()
    }
}

/// Why a forward that did not end with a reply ended the connection, logged.
fn forward_failed(error: ForwardError) -> CloseReason {
    match error {
        ForwardError::Client(error) => io_reason(&error),
        ForwardError::Broken(cause) => {
            tracing::warn!(
                cause = %ClientText(cause.as_bytes()),
                "the reply was cut off mid-message; closing the client"
            );
            CloseReason::Io(format!("reply cut off: {cause}"))
        }
        ForwardError::Close(cause) | ForwardError::Refuse(cause) => {
            tracing::warn!(
                cause = %ClientText(cause.as_bytes()),
                "the backend ended the session; closing the client"
            );
            CloseReason::Io(format!("backend closed: {cause}"))
        }
        other => CloseReason::Io(other.to_string()),
    }
}

/// A frame, decoded.
enum Decoded {
    /// A valid request, with the memory budget it holds.
    Request(Request, Charge),
    /// The uncompressed message (of this many bytes) does not fit the memory budget.
    OverBudget(usize, crate::budget::BudgetExhausted),
    /// Not a message that can be taken: the connection closes.
    Close(CloseReason),
}

/// Why a bad message ends the connection, logged: the codec's [`Close`] for it.
fn bad_message(close: Close, error: &dyn std::fmt::Display) -> CloseReason {
    match close {
        Close::OverLimit(limit) => {
            tracing::warn!(limit, %error, "client broke a limit; closing");
            CloseReason::Limit(limit)
        }
        // q's .z.bm: log the bad message, close that client, run .z.pc.
        Close::BadMessage | Close::Silently => {
            tracing::warn!(%error, "malformed message; closing");
            CloseReason::BadMessage(error.to_string())
        }
    }
}

/// Why reading the next message ended the connection, logged.
fn read_failed(error: ConnectionError) -> CloseReason {
    match error {
        ConnectionError::Frame(frame) => bad_message(Close::from(&frame), &frame),
        ConnectionError::Timeout { limit, .. } => {
            tracing::warn!(limit, %error, "client broke a limit; closing");
            CloseReason::Limit(limit)
        }
        ConnectionError::Handshake(_) | ConnectionError::Truncated(_) => {
            tracing::info!(%error, "client closed in the middle of a message");
            CloseReason::ClientClosed
        }
        ConnectionError::Io(error) => io_reason(&error),
    }
}

/// Why writing a response ended the connection.
fn write_failed(error: ConnectionError) -> CloseReason {
    match error {
        ConnectionError::Timeout { limit, .. } => {
            tracing::warn!(limit, "client stopped reading its responses; closing");
            CloseReason::Limit(limit)
        }
        ConnectionError::Io(error) => io_reason(&error),
        other => CloseReason::Io(other.to_string()),
    }
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
