//! HTTP on the q port, as kdb+ serves it: a client whose first bytes are an HTTP request line is
//! served HTTP/1.1 by hyper, on a plain connection and inside TLS alike.
//!
//! ```text
//!   handler: first bytes "GET " / "POST " ... ──> HttpConnection::run (hyper, one connection)
//!     each request: ACME HTTP-01 token?  ──> the key authorization, before any login
//!                   body, within max_body_bytes          ──> 413
//!                   login: client certificate (tls.user_from), else HTTP Basic
//!                          → brute-force wait → password file → Hooks::on_auth  ──> 401
//!                   Hooks::on_http: respond / deny ──> the client
//!                                   pass / route   ──> Backend::http (the upstream's own HTTP)
//!                   Upgrade: websocket ──> Hooks::on_ws_open ──> 101 ──> ws::run (see ws.rs)
//! ```
//!
//! A login is checked once per connection and credentials: later requests with the same
//! `Authorization` header reuse it, as a q client logs in once. The connection holds its
//! handshake slot until its first login succeeds, and then a seat among `max_connections`, as a q
//! client does.
//!
//! # Limits
//!
//! hyper enforces the head's size (`max_header_bytes`: `431`), and the server the rest, each
//! counted from the last progress: the time from a request's first byte to the end of its head
//! (`header_timeout`, against slowloris clients), the time a kept-alive connection waits for its
//! next request (`keepalive_idle`), the body's size (`max_body_bytes`: `413`) and the time its
//! bytes may stop (`body_timeout`: `408`), and a write that makes no progress (`write_timeout`).
//! A connection past a time limit is closed; nobody else is affected.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Request as HttpMessage, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use qgate_hooks::{
    AuthVerdict, Backend, Credentials, ForwardError, Hooks, HttpRequest, HttpResponse, HttpVerdict,
    Session, TlsFacts, WsOpenVerdict,
};
use qgate_metrics as metrics;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};
use tracing::Instrument as _;

use crate::{
    admission::HandshakeSlot,
    handler::ServerState,
    live::Seat,
    logging::ClientText,
    options::HttpOptions,
    registry::{HandleGuard, UserGuard},
    shutdown::Signals,
    throttle::Admission,
    tls, ws,
};

/// The realm of the `WWW-Authenticate` challenge a refused request gets.
const REALM: &str = "Basic realm=\"qgate\", charset=\"UTF-8\"";

/// The path prefix of ACME's HTTP-01 challenge (RFC 8555, 8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The body of a response, whole.
type Body = Full<Bytes>;

/// An HTTP connection, from its first request to its close.
pub(crate) struct HttpConnection<H, B, S> {
    pub(crate) state: Arc<ServerState<H, B>>,
    pub(crate) stream: S,
    /// The bytes the handler read before it saw a request line: the start of the first request.
    pub(crate) prefix: Vec<u8>,
    pub(crate) peer: SocketAddr,
    pub(crate) handle: HandleGuard,
    pub(crate) signals: Signals,
    pub(crate) tls: Option<Arc<TlsFacts>>,
    pub(crate) handshake: HandshakeSlot,
    pub(crate) write_timeout: Duration,
    pub(crate) body_timeout: Duration,
}

/// What every request of one connection shares.
struct Shared<H, B> {
    state: Arc<ServerState<H, B>>,
    options: HttpOptions,
    peer: SocketAddr,
    tls: Option<Arc<TlsFacts>>,
    handle: qgate_hooks::Handle,
    body_timeout: Duration,
    activity: Arc<Activity>,
    login: Mutex<LoginState>,
    /// A WebSocket upgrade answered `101`: the connection runs it once hyper hands it over.
    upgrade: Mutex<Option<ws::Upgrade>>,
}

/// The connection's login: its handshake slot until the first login succeeds, then its seat,
/// and the credentials it succeeded with.
struct LoginState {
    handshake: Option<HandshakeSlot>,
    seat: Option<(Seat, UserGuard)>,
    /// The `Authorization` header (or its absence) that last logged in, with its session.
    accepted: Option<(Option<Vec<u8>>, Session)>,
}

impl<H: Hooks, B: Backend, S: AsyncRead + AsyncWrite + Unpin + Send + 'static>
    HttpConnection<H, B, S>
{
    /// Serves requests until the client closes, a limit closes the connection, or the server
    /// shuts down (a request in progress is answered first).
    pub(crate) async fn run(self, span: tracing::Span) {
        let Self {
            state,
            stream,
            prefix,
            peer,
            handle,
            signals,
            tls,
            handshake,
            write_timeout,
            body_timeout,
        } = self;
        let options = state.http.clone();
        let activity = Arc::new(Activity::new(!prefix.is_empty()));
        let shared = Arc::new(Shared {
            state,
            options,
            peer,
            tls,
            handle: handle.handle(),
            body_timeout,
            activity: Arc::clone(&activity),
            login: Mutex::new(LoginState {
                handshake: Some(handshake),
                seat: None,
                accepted: None,
            }),
            upgrade: Mutex::new(None),
        });
        async move {
            tracing::debug!("HTTP request on the q port");
            let io = Watched {
                inner: stream,
                prefix,
                at: 0,
                activity: Arc::clone(&activity),
            };
            let service = {
                let shared = Arc::clone(&shared);
                service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(shared.answer(request).await) }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .max_buf_size(shared.options.max_header_bytes.max(8192))
                .max_header_size(shared.options.max_header_bytes);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            let draining = signals.draining();
            tokio::pin!(draining);
            let mut shutting = false;
            let check = (shared.options.header_timeout / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            let mut ticks = tokio::time::interval(check);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    done = connection.as_mut() => {
                        if let Err(error) = done {
                            tracing::info!(%error, "HTTP connection ended with an error");
                        }
                        break;
                    }
                    () = &mut draining, if !shutting => {
                        shutting = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = ticks.tick() => {
                        if let Some((limit, after)) =
                            activity.overdue(&shared.options, write_timeout)
                        {
                            tracing::info!(limit, ?after, "HTTP client made no progress; closing");
                            break;
                        }
                    }
                }
            }
            let upgrade = shared
                .upgrade
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(upgrade) = upgrade {
                ws::run(
                    &shared.state.hooks,
                    &shared.options,
                    write_timeout,
                    upgrade,
                    signals.draining(),
                )
                .await;
            }
        }
        .instrument(span)
        .await;
    }
}

impl<H: Hooks, B: Backend> Shared<H, B> {
    /// One request's response: never an error, whatever the request.
    async fn answer(&self, request: HttpMessage<Incoming>) -> Response<Body> {
        self.activity.head_read();
        let response = self.respond(request).await;
        self.activity.answered();
        response
    }

    async fn respond(&self, request: HttpMessage<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PATH)
            && let Some(challenges) = &self.options.challenges
        {
            return match challenges.http01(token) {
                Some(answer) => plain(StatusCode::OK, answer),
                None => plain(StatusCode::NOT_FOUND, "no such ACME challenge"),
            };
        }
        let mut request = request;
        let on_upgrade = ws::requested(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let session = match self.log_in(&parts.headers).await {
            Ok(session) => session,
            Err(refused) => return refused,
        };
        if let Some(on_upgrade) = on_upgrade {
            return self.open_ws(&parts, session, on_upgrade).await;
        }
        let limited = Limited::new(body, self.options.max_body_bytes);
        let body = match tokio::time::timeout(self.body_timeout, limited.collect()).await {
            Ok(Ok(body)) => body.to_bytes().to_vec(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                tracing::info!(
                    limit = "http.max_body_bytes",
                    max = self.options.max_body_bytes,
                    "HTTP request body too large; refused"
                );
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "qgate: the request body is larger than http.max_body_bytes ({} bytes)",
                        self.options.max_body_bytes
                    ),
                );
            }
            Ok(Err(error)) => {
                tracing::info!(%error, "HTTP request body could not be read");
                return plain(
                    StatusCode::BAD_REQUEST,
                    "qgate: the request body could not be read",
                );
            }
            Err(_) => {
                tracing::info!(limit = "body_timeout", after = ?self.body_timeout, "HTTP request body stalled");
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "qgate: the request body stopped arriving",
                );
            }
        };
        let mut http = request_of(&parts);
        http.body = body;
        let verdict = self.state.hooks.on_http(&session, &http).await;
        let route = match verdict {
            HttpVerdict::Respond(response) => return build(response),
            HttpVerdict::Deny { status, text } => {
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(|status| status.is_client_error() || status.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                tracing::info!(
                    %status,
                    method = %http.method,
                    path = %ClientText(http.path.as_bytes()),
                    "HTTP request denied"
                );
                return plain(status, text);
            }
            HttpVerdict::Pass => None,
            HttpVerdict::Route(route) => Some(route),
            _ => return plain(StatusCode::INTERNAL_SERVER_ERROR, "qgate: unknown verdict"),
        };
        match self
            .state
            .backend
            .http(route.as_deref(), &session, &http)
            .await
        {
            Ok(response) => build(response),
            Err(error) => {
                let why = match error {
                    ForwardError::Refuse(why)
                    | ForwardError::Close(why)
                    | ForwardError::Broken(why) => why,
                    ForwardError::Client(error) => error.to_string(),
                    _ => "the backend failed".to_owned(),
                };
                tracing::info!(%why, "HTTP request not forwarded");
                plain(StatusCode::BAD_GATEWAY, why)
            }
        }
    }

    /// A WebSocket upgrade that logged in: checked, put to the hooks and the backend, and
    /// answered `101` (the connection then runs it), or refused.
    async fn open_ws(
        &self,
        parts: &hyper::http::request::Parts,
        session: Session,
        on_upgrade: hyper::upgrade::OnUpgrade,
    ) -> Response<Body> {
        let accept = match ws::accept_key(&parts.method, &parts.headers) {
            Ok(accept) => accept,
            Err((status, text)) => {
                let mut response = plain(status, text);
                if status == StatusCode::UPGRADE_REQUIRED {
                    let (name, value) = ws::version_header();
                    response.headers_mut().insert(name, value);
                }
                return response;
            }
        };
        let request = request_of(parts);
        match self.state.hooks.on_ws_open(&session, &request).await {
            WsOpenVerdict::Accept => {}
            WsOpenVerdict::Deny { status, text } => {
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(|status| status.is_client_error() || status.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                tracing::info!(%status, path = %ClientText(request.path.as_bytes()), "WebSocket upgrade denied");
                return plain(status, text);
            }
            _ => return plain(StatusCode::INTERNAL_SERVER_ERROR, "qgate: unknown verdict"),
        }
        let upstream = match self.state.backend.websocket(None, &session, &request).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let why = match error {
                    ForwardError::Refuse(why)
                    | ForwardError::Close(why)
                    | ForwardError::Broken(why) => why,
                    ForwardError::Client(error) => error.to_string(),
                    _ => "the backend failed".to_owned(),
                };
                tracing::info!(%why, "WebSocket not opened upstream");
                return plain(StatusCode::BAD_GATEWAY, why);
            }
        };
        *self.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(ws::Upgrade {
            session,
            upstream,
            on_upgrade,
        });
        ws::switching(&accept)
    }

    /// The session a request runs as: its connection's, when its credentials are those that
    /// last logged in; otherwise checked as a q login is. A refusal is the response to send.
    async fn log_in(&self, headers: &hyper::HeaderMap) -> Result<Session, Response<Body>> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec());
        {
            let login = self.login.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((accepted, session)) = &login.accepted
                && *accepted == authorization
            {
                return Ok(session.clone());
            }
        }
        let credentials = match authorization.as_deref().map(basic_credentials) {
            None => Credentials {
                user: Vec::new(),
                password: None,
            },
            Some(Some(credentials)) => credentials,
            Some(None) => return Err(unauthorized("qgate: only Basic authorization is accepted")),
        };
        let cert_user = match tls::cert_user(self.tls.as_deref(), self.state.user_from) {
            Ok(user) => user,
            Err(why) => {
                tracing::warn!(reason = why, "client certificate names no user; refused");
                return Err(plain(StatusCode::FORBIDDEN, format!("qgate: {why}")));
            }
        };
        let by_certificate = cert_user.is_some();
        let user = cert_user.map_or_else(|| credentials.user.clone(), String::into_bytes);
        tracing::Span::current().record("user", tracing::field::display(ClientText(&user)));
        let mut session = Session::new(self.handle, user, self.peer, 0);
        session.tls = self.tls.clone();
        let attempt = match self.state.logins.admit(self.peer.ip(), &credentials.user) {
            Admission::Proceed { wait, attempt } => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                attempt
            }
            Admission::Refuse { failures, log } => {
                if log.is_some() {
                    tracing::warn!(
                        failures,
                        limit = "auth.max_failed_login_delay",
                        "too many failed logins from this address: HTTP request refused"
                    );
                }
                self.state.metrics.login(metrics::Login::Throttled);
                return Err(plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "qgate: too many failed logins from this address; try again later",
                ));
            }
        };
        let refused_by = if !by_certificate
            && let Some(store) = self.state.password.load()
            && !store.check(&credentials.user, credentials.password.as_deref())
        {
            Some("password file")
        } else {
            match self.state.hooks.on_auth(&session, &credentials).await {
                AuthVerdict::Deny => Some("auth hook"),
                AuthVerdict::Allow(Some(user)) => {
                    session.user = user.into();
                    None
                }
                _ => None,
            }
        };
        if let Some(check) = refused_by {
            self.state.metrics.login(metrics::Login::Denied);
            let failure = attempt.failed();
            if failure.log.is_some() {
                tracing::info!(
                    check,
                    failures = failure.failures,
                    next_attempt_waits = ?failure.delay,
                    "HTTP login refused"
                );
            }
            return Err(unauthorized("qgate: the user name or password was refused"));
        }
        attempt.succeeded();
        let mut login = self.login.lock().unwrap_or_else(PoisonError::into_inner);
        if login.seat.is_none() {
            let limits = self.state.limits.load();
            let Some(seat) = self.state.seats.take(limits.max_connections) else {
                tracing::warn!(
                    limit = "max_connections",
                    "too many connections; HTTP request refused"
                );
                return Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "qgate: too many connections",
                ));
            };
            let Some(user) = self
                .state
                .registry
                .claim_user(&session.user, limits.max_connections_per_user)
            else {
                tracing::warn!(
                    limit = "max_connections_per_user",
                    "user has too many connections; HTTP request refused"
                );
                return Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "qgate: this user has too many connections",
                ));
            };
            login.seat = Some((seat, user));
            login.handshake = None;
            self.state.metrics.login(metrics::Login::Accepted);
        }
        login.accepted = Some((authorization, session.clone()));
        Ok(session)
    }
}

/// A request as the hooks see it, without its body: its `authorization` header is left out,
/// since the server has checked it and the session carries its user.
fn request_of(parts: &hyper::http::request::Parts) -> HttpRequest {
    let mut request = HttpRequest::new(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().map(str::to_owned),
    );
    request.headers = parts
        .headers
        .iter()
        .filter(|(name, _)| **name != header::AUTHORIZATION)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    request
}

/// The user and password of a `Basic` authorization; `None` for any other scheme or a value
/// that is not base64 of `user:password`.
fn basic_credentials(value: &[u8]) -> Option<Credentials> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&byte| byte == b':')?;
    Some(Credentials {
        user: decoded[..colon].to_vec(),
        password: Some(decoded[colon + 1..].to_vec()),
    })
}

/// A `401` with the challenge that makes a browser ask for a user and password.
fn unauthorized(text: &str) -> Response<Body> {
    let mut response = plain(StatusCode::UNAUTHORIZED, text);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    response
}

/// A `text/plain` response.
fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A hook's or the backend's response, checked: a bad status is a `500`, a header that is not
/// valid HTTP is left out (and logged), and the length is the body's.
fn build(made: HttpResponse) -> Response<Body> {
    let Ok(status) = StatusCode::from_u16(made.status) else {
        tracing::warn!(
            status = made.status,
            "response with an invalid status; sending 500"
        );
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "qgate: the response had an invalid status",
        );
    };
    let mut response = Response::new(Full::new(Bytes::from(made.body)));
    *response.status_mut() = status;
    for (name, value) in made.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) else {
            tracing::warn!(
                header = %ClientText(name.as_bytes()),
                "response header is not valid HTTP; left out"
            );
            continue;
        };
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        response.headers_mut().append(name, value);
    }
    response
}

/// When the connection last made progress, for the limits hyper does not keep itself.
#[derive(Debug)]
struct Activity {
    state: Mutex<Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Bytes of a request head have arrived, since this instant, and the head is not complete.
    head_since: Option<Instant>,
    /// The connection waits for its next request, since this instant.
    idle_since: Option<Instant>,
    /// A write has been waiting for the client to read, since this instant.
    write_since: Option<Instant>,
}

impl Activity {
    fn new(started: bool) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(Progress {
                head_since: started.then_some(now),
                idle_since: (!started).then_some(now),
                write_since: None,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Bytes arrived: an idle connection has started its next request.
    fn read(&self) {
        self.with(|progress| {
            if progress.idle_since.take().is_some() {
                progress.head_since = Some(Instant::now());
            }
        });
    }

    fn head_read(&self) {
        self.with(|progress| {
            progress.head_since = None;
            progress.idle_since = None;
        });
    }

    fn answered(&self) {
        self.with(|progress| progress.idle_since = Some(Instant::now()));
    }

    fn write_pending(&self, pending: bool) {
        self.with(|progress| match (pending, progress.write_since) {
            (true, None) => progress.write_since = Some(Instant::now()),
            (false, Some(_)) => progress.write_since = None,
            _ => {}
        });
    }

    /// The limit the connection is past, if any.
    fn overdue(
        &self,
        options: &HttpOptions,
        write_timeout: Duration,
    ) -> Option<(&'static str, Duration)> {
        let progress = self.with(|progress| *progress);
        let past = |since: Option<Instant>, limit: Duration| {
            since.is_some_and(|since| since.elapsed() >= limit)
        };
        if past(progress.head_since, options.header_timeout) {
            return Some(("http.header_timeout", options.header_timeout));
        }
        if past(progress.idle_since, options.keepalive_idle) {
            return Some(("http.keepalive_idle", options.keepalive_idle));
        }
        if past(progress.write_since, write_timeout) {
            return Some(("write_timeout", write_timeout));
        }
        None
    }
}

/// The client's stream, after the bytes the handler read first, with its progress noted.
struct Watched<S> {
    inner: S,
    prefix: Vec<u8>,
    at: usize,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.at..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_and_other_schemes_refused() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        let credentials = basic_credentials(header.as_bytes()).expect("basic");
        assert_eq!(credentials.user, b"alice");
        assert_eq!(credentials.password.as_deref(), Some(&b"pa:ss"[..]));
        assert!(basic_credentials(b"Bearer abc").is_none());
        assert!(basic_credentials(b"Basic !!!").is_none());
        let no_colon = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("x")
        );
        assert!(basic_credentials(no_colon.as_bytes()).is_none());
    }

    #[test]
    fn a_response_from_a_plugin_is_checked() {
        let bad = build(HttpResponse::new(1000, "x"));
        assert_eq!(bad.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let made = HttpResponse::new(200, "ok")
            .with_header("x-ok", "1")
            .with_header("bad name", "1")
            .with_header("content-length", "99");
        let built = build(made);
        assert_eq!(built.status(), StatusCode::OK);
        assert_eq!(
            built.headers().get("x-ok").map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
        assert_eq!(built.headers().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_overdue_past_its_limits() {
        let options = HttpOptions::default();
        let activity = Activity::new(true);
        assert_eq!(activity.overdue(&options, Duration::from_secs(30)), None);
        tokio::time::advance(options.header_timeout).await;
        assert_eq!(
            activity
                .overdue(&options, Duration::from_secs(30))
                .map(|(limit, _)| limit),
            Some("http.header_timeout")
        );
        activity.head_read();
        activity.answered();
        tokio::time::advance(options.keepalive_idle - Duration::from_secs(1)).await;
        assert_eq!(activity.overdue(&options, Duration::from_secs(30)), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            activity
                .overdue(&options, Duration::from_secs(30))
                .map(|(limit, _)| limit),
            Some("http.keepalive_idle")
        );
    }
}
