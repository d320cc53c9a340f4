//! The only vocabulary shared by the server and the plugin host: who is connected (a
//! [`Session`]), what happened (the five lifecycle events, as the methods of [`Hooks`]), and what
//! to do about it (the verdicts).
//!
//! The server owns sockets and the wire; it calls a [`Hooks`] at each point where q would call a
//! `.z` handler, and it never knows what is behind the trait.
//! The plugin host implements the trait with WebAssembly; the server's tests implement it with a
//! test double.
//! Nothing here does I/O.
//!
//! | q handler | method | fires |
//! |---|---|---|
//! | `.z.pw` | [`Hooks::on_auth`] | after the password file check, before the capability byte |
//! | `.z.po` | [`Hooks::on_open`] | after the capability byte is sent |
//! | `.z.pg` | [`Hooks::on_sync`] | for each sync message, in order |
//! | `.z.ps` | [`Hooks::on_async`] | for each async message, in order |
//! | `.z.pc` | [`Hooks::on_close`] | once, after the connection has closed |
//! | `.z.ph`, `.z.pp` | [`Hooks::on_http`] | for each HTTP request on the q port, after its login |
//! | `.z.wo` | [`Hooks::on_ws_open`] | for each WebSocket upgrade on the q port, after its login |
//! | `.z.ws` | [`Hooks::on_ws_message`] | for each WebSocket message, in order |
//! | `.z.wc` | [`Hooks::on_ws_close`] | once, after a WebSocket has closed |
//!
//! In gateway mode two more events look at what comes back from the [`Backend`] before the
//! client gets it, for the hooks that say so in [`Hooks::outbound`]: [`Hooks::on_response`] for
//! each reply to a sync request, and [`Hooks::on_publication`] for each message the backend
//! pushes to the client unasked.

#![warn(missing_docs)]

mod backend;
mod decision;
mod http;
mod ws;

use std::{fmt, future::Future, net::SocketAddr, sync::Arc};

use qgate_ipc::{DecodeError, EncodeError, Endian, K, Message, MessageType, ValueView};

pub use crate::{
    backend::{
        Backend, Downstream, ForwardError, Link, LinkClosed, NOTHING_ANSWERED, NoBackend, NoLink,
        Push,
    },
    decision::{DecisionEvent, DecisionKind, DecisionRecord, DecisionSink, RecordedBytes},
    http::{HttpRequest, HttpResponse, HttpVerdict, NOTHING_ANSWERED_HTTP},
    ws::{WsMessage, WsOpenVerdict, WsUpstream, WsVerdict},
};

/// A connection's handle, q's `.z.w`: unique among live connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub i32);

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The facts q keeps about a connection, passed with every event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// `.z.w`.
    pub handle: Handle,
    /// `.z.u`: the user as sent in the handshake, or as an auth hook mapped it.
    pub user: Arc<[u8]>,
    /// `.z.a` and the peer's port.
    pub peer: SocketAddr,
    /// The negotiated capability (the byte the server answered with).
    pub capability: u8,
    /// The TLS facts (`.z.e`); `None` on a plain connection.
    pub tls: Option<Arc<TlsFacts>>,
}

impl Session {
    /// A session for a plain connection.
    pub fn new(
        handle: Handle,
        user: impl Into<Arc<[u8]>>,
        peer: SocketAddr,
        capability: u8,
    ) -> Self {
        Self {
            handle,
            user: user.into(),
            peer,
            capability,
            tls: None,
        }
    }

    /// The user name, lossily as UTF-8, for logs.
    pub fn user_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.user)
    }
}

/// What a TLS connection negotiated, and who the client certificate says the peer is (`.z.e`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFacts {
    /// The protocol version, such as `TLSv1.3`.
    pub protocol: String,
    /// The cipher suite.
    pub cipher: String,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The client certificate, when one was presented and verified.
    pub client_cert: Option<CertIdentity>,
}

/// The identity in a verified client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertIdentity {
    /// The subject's common name.
    pub subject_cn: Option<String>,
    /// The subject alternative names (DNS names, IP addresses, emails, URIs), as text.
    pub sans: Vec<String>,
    /// The SHA-256 fingerprint of the certificate, lowercase hex.
    pub fingerprint_sha256: String,
    /// Not valid before, Unix seconds.
    pub not_before: i64,
    /// Not valid after, Unix seconds.
    pub not_after: i64,
}

/// The credentials of a handshake. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user as sent.
    pub user: Vec<u8>,
    /// The password, `None` when the handshake had no `:`.
    pub password: Option<Vec<u8>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A message from a client, validated: its header, its uncompressed bytes, and a view of it.
#[derive(Clone, Debug)]
pub struct Request {
    message: Message,
}

impl Request {
    /// Validates a message's body (kdb+ validates every incoming message).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the body is not one well-formed value.
    pub fn new(message: Message) -> Result<Self, DecodeError> {
        qgate_ipc::validate(message.body(), message.header.endian)?;
        Ok(Self { message })
    }

    /// Sync, async or response.
    pub fn message_type(&self) -> MessageType {
        self.message.header.message_type
    }

    /// The byte order of the body.
    pub fn endian(&self) -> Endian {
        self.message.header.endian
    }

    /// The uncompressed body: one encoded value.
    pub fn body(&self) -> &[u8] {
        self.message.body()
    }

    /// The whole uncompressed message, header included.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, given back: its buffer can be reused.
    pub fn into_message(self) -> Message {
        self.message
    }

    /// A zero-copy view of the value: the cheap way to ask what the message is.
    pub fn view(&self) -> ValueView<'_> {
        ValueView::trusted(self.message.body(), self.endian())
    }

    /// The value, decoded.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when the value would take more memory than the decoder allows.
    pub fn to_k(&self) -> Result<K, DecodeError> {
        self.view().to_k()
    }
}

/// The verdict of [`Hooks::on_auth`] (`.z.pw`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Accept the connection; `Some(user)` replaces the user name that later events see.
    Allow(Option<Vec<u8>>),
    /// Refuse: the socket is closed without a byte and the client reports `'access`.
    Deny,
    /// No opinion: the built-in checks decide.
    Pass,
}

/// The verdict of [`Hooks::on_open`] (`.z.po`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenVerdict {
    /// Close the connection, with the reason for the log.
    Close(String),
    /// Keep it.
    Keep,
}

/// The verdict of [`Hooks::on_sync`] and [`Hooks::on_async`] (`.z.pg`, `.z.ps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refuse: a sync request gets this q error (without the `'`); an async one is dropped and
    /// logged, as q drops async errors.
    Deny(String),
    /// Nothing answered: the [`Backend`] does (the default upstream, in gateway mode). With no
    /// backend a sync request gets a q error saying so; it never leaves a client waiting.
    Pass,
    /// Answer a sync request with this value, sent as the bytes it is (a plugin's reply is checked
    /// and framed, never decoded); for an async message, accept it.
    Reply(Body),
    /// Send the message to the backend's service of this name (an upstream), instead of the
    /// default one.
    Route(String),
}

impl Verdict {
    /// A reply of `value`, encoded; a value that cannot be encoded (a symbol with a NUL) is
    /// denied with the q error that says why, as the server answers a reply it cannot send.
    pub fn reply(value: &K) -> Self {
        match Body::from_value(value) {
            Ok(body) => Self::Reply(body),
            Err(error) => Self::Deny(error.q_error().to_owned()),
        }
    }

    /// The verdict in a decision log's words, with its reason: a deny's message, or a route's
    /// upstream.
    pub fn decision(&self) -> (DecisionKind, Option<String>) {
        match self {
            Self::Pass => (DecisionKind::Passed, None),
            Self::Deny(message) => (DecisionKind::Denied, Some(message.clone())),
            Self::Reply(_) => (DecisionKind::Replied, None),
            Self::Route(upstream) => (DecisionKind::Routed, Some(upstream.clone())),
        }
    }
}

/// Which messages on their way back to a client the hooks look at ([`Hooks::outbound`]).
///
/// When neither is asked for, the backend's replies and pushes go to the client as the bytes they
/// came as, without being held whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    /// Replies to sync requests ([`Hooks::on_response`]).
    pub responses: bool,
    /// Messages pushed unasked ([`Hooks::on_publication`]).
    pub publications: bool,
}

/// A message body that is one well-formed little-endian value: what replaces a reply or a
/// publication.
#[derive(Clone, PartialEq, Eq)]
pub struct Body(Vec<u8>);

impl Body {
    /// Checks that `bytes` is one well-formed little-endian value, as a received message is
    /// checked.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when it is not.
    pub fn new(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        qgate_ipc::validate(&bytes, Endian::Little)?;
        Ok(Self(bytes))
    }

    /// Takes `bytes` as one well-formed little-endian value without checking it, for a body the
    /// caller built itself out of whole items of a message that was checked (the rows a filter
    /// keeps of a publication, copied item by item). A debug build checks all the same.
    /// Nothing reads a body but the client it is sent to, so a wrong promise costs that client a
    /// message it cannot read, and nobody else anything; code that takes bytes from a plugin or a
    /// peer uses [`Body::new`].
    pub fn assume_valid(bytes: Vec<u8>) -> Self {
        debug_assert!(
            qgate_ipc::validate(&bytes, Endian::Little).is_ok(),
            "a body assumed valid is not"
        );
        Self(bytes)
    }

    /// The encoding of `value`.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when `value` cannot be encoded (a symbol with a NUL).
    pub fn from_value(value: &K) -> Result<Self, EncodeError> {
        let mut bytes = Vec::new();
        qgate_ipc::encode(value, &mut bytes)?;
        Ok(Self(bytes))
    }

    /// The value, decoded: for reading a reply in tests and tools; the server sends the bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the value is too deeply nested to decode.
    pub fn value(&self) -> Result<K, DecodeError> {
        qgate_ipc::decode(&self.0, Endian::Little)
    }

    /// The encoded value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded value, given back.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("bytes", &self.0.len())
            .finish()
    }
}

/// The verdict of [`Hooks::on_response`] and [`Hooks::on_publication`]: what reaches the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataVerdict {
    /// Send it as it came.
    Pass,
    /// Send this value instead.
    Replace(Body),
    /// Refuse it: a reply becomes this q error (without the `'`); a publication is dropped and
    /// logged.
    Deny(String),
}

/// Why a connection closed, given to [`Hooks::on_close`] and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The message was not well-formed q IPC (q's `.z.bm`).
    BadMessage(String),
    /// The client closed the connection.
    ClientClosed,
    /// An I/O error on the socket.
    Io(String),
    /// The client broke a limit; the name of the limit.
    Limit(&'static str),
    /// An open hook asked to close it.
    Refused(String),
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMessage(e) => write!(f, "bad message: {e}"),
            Self::ClientClosed => f.write_str("client closed"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Limit(limit) => write!(f, "limit {limit} exceeded"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Shutdown => f.write_str("server shutdown"),
        }
    }
}

/// The lifecycle events of a q connection, as a server dispatches them.
///
/// Every method has a default that does what a q process with default handlers does, so an empty
/// `impl` passes everything.
/// The futures must be `Send`: the server awaits them on its connection tasks.
pub trait Hooks: Send + Sync + 'static {
    /// `.z.pw`: after the password file check, before the capability byte is sent.
    ///
    /// The default passes, leaving the decision to the password file (or accepting everyone when
    /// there is none, as q's default `.z.pw` does).
    fn on_auth(
        &self,
        session: &Session,
        credentials: &Credentials,
    ) -> impl Future<Output = AuthVerdict> + Send {
        let _ = (session, credentials);
        async { AuthVerdict::Pass }
    }

    /// `.z.po`: after the capability byte is sent. The default keeps the connection.
    fn on_open(&self, session: &Session) -> impl Future<Output = OpenVerdict> + Send {
        let _ = session;
        async { OpenVerdict::Keep }
    }

    /// `.z.pg`: a sync request, in arrival order. The default passes.
    fn on_sync(
        &self,
        session: &Session,
        request: &Request,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (session, request);
        async { Verdict::Pass }
    }

    /// `.z.ps`: an async message, in arrival order. The default passes.
    fn on_async(
        &self,
        session: &Session,
        request: &Request,
    ) -> impl Future<Output = Verdict> + Send {
        let _ = (session, request);
        async { Verdict::Pass }
    }

    /// `.z.pc`: once, after the connection has closed. The default does nothing.
    fn on_close(&self, session: &Session, reason: &CloseReason) -> impl Future<Output = ()> + Send {
        let _ = (session, reason);
        async {}
    }

    /// `.z.ph` and `.z.pp`: an HTTP request on the q port, once its login is accepted (the
    /// session's user is the one its Basic credentials or client certificate named, as
    /// [`Hooks::on_auth`] left it). The default passes.
    fn on_http(
        &self,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = HttpVerdict> + Send {
        let _ = (session, request);
        async { HttpVerdict::Pass }
    }

    /// `.z.wo`: a WebSocket upgrade on the q port, once its login is accepted, before the
    /// client gets its `101`. The default accepts.
    fn on_ws_open(
        &self,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = WsOpenVerdict> + Send {
        let _ = (session, request);
        async { WsOpenVerdict::Accept }
    }

    /// `.z.ws`: each message (text or binary) of an open WebSocket, in order. The default
    /// passes.
    fn on_ws_message(
        &self,
        session: &Session,
        message: &WsMessage,
    ) -> impl Future<Output = WsVerdict> + Send {
        let _ = (session, message);
        async { WsVerdict::Pass }
    }

    /// `.z.wc`: once, after a WebSocket has closed, with why. The default does nothing.
    fn on_ws_close(&self, session: &Session, reason: &str) -> impl Future<Output = ()> + Send {
        let _ = (session, reason);
        async {}
    }

    /// The memory these hooks may hold beside the server's own while they decide on `request`
    /// (a sync or async message): copies of it in a sandbox, say, and the reply they build.
    ///
    /// For a large message, the server charges this to its memory budget before the hooks see
    /// it and gives it back once they have decided, so that many large messages decided on at
    /// once wait for memory rather than grow the process past its budget. The default is
    /// nothing: hooks that only read the message in place.
    fn deciding_bytes(&self, request: &Request) -> usize {
        let _ = request;
        0
    }

    /// Which messages from the backend these hooks look at on `session`'s connection before the
    /// client gets them, asked before each reply and each push (so that hooks that change while
    /// the server runs, or that have said they pass everything on this connection, are heeded at
    /// once). The default is none: replies and pushes are forwarded as they come.
    fn outbound(&self, session: &Session) -> Outbound {
        let _ = session;
        Outbound::default()
    }

    /// The reply the backend sent to `request` (a sync request the hooks passed or routed), whole
    /// and validated, before the client gets it; only when [`Hooks::outbound`] asks for
    /// responses. The default passes.
    fn on_response(
        &self,
        session: &Session,
        request: &Request,
        response: &Request,
    ) -> impl Future<Output = DataVerdict> + Send {
        let _ = (session, request, response);
        async { DataVerdict::Pass }
    }

    /// An async message the backend pushes to the client unasked (a publication), validated,
    /// before the client gets it; only when [`Hooks::outbound`] asks for publications. The
    /// default passes.
    fn on_publication(
        &self,
        session: &Session,
        message: &Request,
    ) -> impl Future<Output = DataVerdict> + Send {
        let _ = (session, message);
        async { DataVerdict::Pass }
    }
}

/// Hooks that pass everything: the server's built-in behaviour alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

impl<H: Hooks> Hooks for Arc<H> {
    fn on_auth(
        &self,
        session: &Session,
        credentials: &Credentials,
    ) -> impl Future<Output = AuthVerdict> + Send {
        (**self).on_auth(session, credentials)
    }

    fn on_open(&self, session: &Session) -> impl Future<Output = OpenVerdict> + Send {
        (**self).on_open(session)
    }

    fn on_sync(
        &self,
        session: &Session,
        request: &Request,
    ) -> impl Future<Output = Verdict> + Send {
        (**self).on_sync(session, request)
    }

    fn on_async(
        &self,
        session: &Session,
        request: &Request,
    ) -> impl Future<Output = Verdict> + Send {
        (**self).on_async(session, request)
    }

    fn on_close(&self, session: &Session, reason: &CloseReason) -> impl Future<Output = ()> + Send {
        (**self).on_close(session, reason)
    }

    fn on_http(
        &self,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = HttpVerdict> + Send {
        (**self).on_http(session, request)
    }

    fn on_ws_open(
        &self,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = WsOpenVerdict> + Send {
        (**self).on_ws_open(session, request)
    }

    fn on_ws_message(
        &self,
        session: &Session,
        message: &WsMessage,
    ) -> impl Future<Output = WsVerdict> + Send {
        (**self).on_ws_message(session, message)
    }

    fn on_ws_close(&self, session: &Session, reason: &str) -> impl Future<Output = ()> + Send {
        (**self).on_ws_close(session, reason)
    }

    fn deciding_bytes(&self, request: &Request) -> usize {
        (**self).deciding_bytes(request)
    }

    fn outbound(&self, session: &Session) -> Outbound {
        (**self).outbound(session)
    }

    fn on_response(
        &self,
        session: &Session,
        request: &Request,
        response: &Request,
    ) -> impl Future<Output = DataVerdict> + Send {
        (**self).on_response(session, request, response)
    }

    fn on_publication(
        &self,
        session: &Session,
        message: &Request,
    ) -> impl Future<Output = DataVerdict> + Send {
        (**self).on_publication(session, message)
    }
}
