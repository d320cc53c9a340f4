//! What answers a message that every hook passed: the [`Backend`], and its per-session [`Link`].
//!
//! The hooks decide; the backend answers what nothing decided.
//! With no backend ([`NoBackend`]) a sync request that every hook passed gets a q error saying so.
//! The gateway (`qgate-gateway`) is the backend that forwards to upstream kdb+ processes:
//!
//! ```text
//!   client ──► server ──► Hooks::on_sync ── deny / reply ──► client
//!                              │ pass, or route(upstream)
//!                              ▼
//!                        Link::sync(route, request, downstream)
//!                              │ writes the upstream's pushes and then its reply
//!                              ▼
//!                          Downstream::write ──► client
//! ```
//!
//! A link belongs to one client session: the server opens it once the login is accepted (before
//! the client gets its capability byte) and drops it when the session ends.
//! Between messages the server also waits on [`Link::push`], for messages the backend sends the
//! client unasked (an upstream's `neg[.z.w]` callbacks, a tickerplant's publications).
//!
//! The reply is not handed back as a value: the link writes it to the client through
//! [`Downstream`], so that a large reply streams through in bounded memory, and a reply that no
//! hook looks at is forwarded as the bytes it came as.

use std::{fmt, future::Future, io};

use crate::{
    Credentials, HttpRequest, HttpResponse, NOTHING_ANSWERED_HTTP, Request, Session, WsUpstream,
};

/// What answers the messages that every hook passed.
pub trait Backend: Send + Sync + 'static {
    /// One client session's way to the backend.
    type Link: Link;

    /// Opens a session's link, once its login is accepted and before it gets its capability
    /// byte: the client's open completes only when this has.
    ///
    /// It never fails: a backend that cannot be reached now yields a link whose requests say so
    /// (or that tries again), so that the client is told why in a q error, not by a refused login.
    fn open(
        &self,
        session: &Session,
        credentials: &Credentials,
    ) -> impl Future<Output = Self::Link> + Send;

    /// Answers an HTTP request that every hook passed; `route` names the service a hook chose,
    /// `None` the default. The default answers `404` with [`NOTHING_ANSWERED_HTTP`].
    ///
    /// # Errors
    ///
    /// [`ForwardError::Refuse`] with the reason when the backend cannot answer (no service, an
    /// upstream down or too slow): the client gets a `502` saying so.
    fn http(
        &self,
        route: Option<&str>,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, ForwardError>> + Send {
        let _ = (route, session, request);
        async { Ok(HttpResponse::text(404, NOTHING_ANSWERED_HTTP)) }
    }

    /// Opens the backend's side of a WebSocket the hooks accepted (`request` is its upgrade),
    /// before the client gets its `101`: in gateway mode, a WebSocket to the upstream's own port,
    /// where `.z.wo` runs as the client's opens. `route` is as for [`Backend::http`].
    ///
    /// `Ok(None)` when there is no backend side: what the hooks pass is dropped (and logged),
    /// as kdb+ with no `.z.ws` answers nothing. The default has none.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Refuse`] with the reason when the backend cannot be reached: the client
    /// gets a `502` saying so instead of the upgrade.
    fn websocket(
        &self,
        route: Option<&str>,
        session: &Session,
        request: &HttpRequest,
    ) -> impl Future<Output = Result<Option<WsUpstream>, ForwardError>> + Send {
        let _ = (route, session, request);
        async { Ok(None) }
    }
}

/// One client session's way to the backend, used by one task, one message at a time.
pub trait Link: Send + Sync + 'static {
    /// Forwards a sync request and writes what comes back to `client`: anything the backend
    /// pushes to the client before its reply, in order, then the reply.
    ///
    /// `route` names the backend's service (an upstream) that a hook chose; `None` is the default.
    ///
    /// # Errors
    ///
    /// [`ForwardError`], which says whether anything was written and what the server does next.
    fn sync<D: Downstream>(
        &mut self,
        route: Option<&str>,
        request: &Request,
        client: &mut D,
    ) -> impl Future<Output = Result<(), ForwardError>> + Send;

    /// Forwards an async message; nothing comes back.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Refuse`] when it could not be sent (logged by the server, as a refused
    /// async message is), [`ForwardError::Close`] when the session cannot go on.
    fn send_async(
        &mut self,
        route: Option<&str>,
        request: &Request,
    ) -> impl Future<Output = Result<(), ForwardError>> + Send;

    /// Forwards a client's response (message type 2) to a sync request that the backend sent the
    /// client earlier through [`Link::push`]: `true` when it was taken, `false` when nobody asked
    /// (the server then logs it as a stray). The default takes none, as a backend that never asks
    /// the client anything has nothing to match it with.
    ///
    /// # Errors
    ///
    /// As [`Link::send_async`].
    fn respond(
        &mut self,
        request: &Request,
    ) -> impl Future<Output = Result<bool, ForwardError>> + Send {
        let _ = request;
        async { Ok(false) }
    }

    /// The next messages the backend sends the client unasked: whole frames as they came, as many
    /// as are ready (at least one).
    ///
    /// Waits forever when nothing can come. It must be cancel-safe: the server polls it beside
    /// the client's next message and drops it when the client's comes first, and nothing read may
    /// be lost then.
    ///
    /// # Errors
    ///
    /// [`LinkClosed`] when the backend's side of the session has ended: the server closes the
    /// client with the reason.
    fn push(&mut self) -> impl Future<Output = Result<Push, LinkClosed>> + Send;
}

/// The server's side of a forwarded request: where the backend writes what goes to the client.
pub trait Downstream: Send {
    /// Writes bytes to the client, within the server's write timeout.
    ///
    /// # Errors
    ///
    /// The client is gone, or stopped reading past the write timeout.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Resolves when the client has closed its side of the connection; pending while it is there.
    /// Cancel-safe: bytes the client sends meanwhile are kept for its next message.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;

    /// The client's socket, for a backend that moves a large reply to it without copying the
    /// bytes through user space (`splice`): `Some` when the client speaks plain TCP and nothing
    /// of an earlier write waits in user space, `None` over TLS, whose bytes are encrypted here.
    /// A backend writing through it keeps to [`Downstream::write_timeout`] for each write.
    fn socket(&self) -> Option<&tokio::net::TcpStream> {
        None
    }

    /// How long one write to the client may wait for it to read.
    fn write_timeout(&self) -> std::time::Duration;
}

/// What a backend sends a client unasked: one or more whole frames, headers included, back to back
/// and as they came.
///
/// A backend that has several messages ready hands them over together, so that a publisher's burst
/// reaches the client in one write instead of one write a message.
#[derive(Clone, PartialEq, Eq)]
pub struct Push {
    /// The frames, in the order they came.
    pub frames: Vec<u8>,
    /// The service it came from, for logs.
    pub from: String,
}

impl fmt::Debug for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Push")
            .field("bytes", &self.frames.len())
            .field("from", &self.from)
            .finish()
    }
}

/// Why forwarding a request did not end with a reply written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// Nothing of a reply was written; the client gets this q error and the session goes on.
    #[error("{0}")]
    Refuse(String),
    /// Nothing of a reply was written; the client gets this q error, then is closed, because the
    /// session's backend side is gone.
    #[error("{0}")]
    Close(String),
    /// Part of a reply was written when the backend failed: the client's stream is cut in the
    /// middle of a message, so the client is closed.
    #[error("reply cut off: {0}")]
    Broken(String),
    /// Writing to the client failed: it went away or stopped reading.
    #[error("writing to the client failed: {0}")]
    Client(#[source] io::Error),
}

/// The backend's side of a session has ended; the reason, naming the service and the cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkClosed(pub String);

/// No backend: what every hook passed is answered by the server's "nothing answered" error.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBackend;

/// [`NoBackend`]'s link: refuses every request with [`NOTHING_ANSWERED`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLink;

/// The error a sync request gets when every hook passed and there is no backend: the client must
/// hear so rather than wait forever.
pub const NOTHING_ANSWERED: &str =
    "qgate: nothing answered this query: no plugin or backend is configured";

impl Backend for NoBackend {
    type Link = NoLink;

    fn open(
        &self,
        session: &Session,
        credentials: &Credentials,
    ) -> impl Future<Output = NoLink> + Send {
        let _ = (session, credentials);
        async { NoLink }
    }
}

impl Link for NoLink {
    fn sync<D: Downstream>(
        &mut self,
        route: Option<&str>,
        request: &Request,
        client: &mut D,
    ) -> impl Future<Output = Result<(), ForwardError>> + Send {
        let _ = (route, request, client);
        async { Err(ForwardError::Refuse(NOTHING_ANSWERED.to_owned())) }
    }

    fn send_async(
        &mut self,
        route: Option<&str>,
        request: &Request,
    ) -> impl Future<Output = Result<(), ForwardError>> + Send {
        // As q with no `.z.ps` of its own: an async message is accepted and nothing is sent back.
        let _ = (route, request);
        async { Ok(()) }
    }

    fn push(&mut self) -> impl Future<Output = Result<Push, LinkClosed>> + Send {
        std::future::pending()
    }
}
