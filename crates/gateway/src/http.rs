//! HTTP to an upstream: a request the chain passed goes to the service's own HTTP on its q port,
//! where kdb+ runs `.z.ph` or `.z.pp` on it unchanged.
//!
//! ```text
//!   Backend::http(route, session, request)
//!     └─ service (route, or the first [[upstream]]) ── replica: usable first, fewest connections
//!          └─ a connection of its own (TLS when the service has it), hyper's HTTP/1.1 client:
//!             the request with the service account's Basic credentials, the client's address
//!             and user in X-Forwarded-For and X-Forwarded-User ── the response, whole, within
//!             query_timeout and max_reply_bytes
//! ```
//!
//! Each request has a connection of its own, closed with its response: HTTP carries no q session
//! state, so there is nothing to pin, and nothing is shared with the q connections' pools.
//! The client's `authorization` header never reaches the upstream (the server strips it); the
//! service account's credentials do, as for q. With `credentials = "passthrough"` the request
//! goes without credentials, since an HTTP client's password is not kept.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Request,
    header::{self, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use qgate_hooks::{ForwardError, HttpRequest, HttpResponse, Session};

use crate::{
    replica::{ConnectionCount, InFlight, Replica},
    service::Service,
    stream,
};

/// Headers that belong to one hop, never forwarded either way (RFC 9110, 7.6.1), with those the
/// gateway sets itself.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
];

/// How long a response may take when the service has no `query_timeout`.
///
/// 5 min, the service's own default: an HTTP client waits on the response, and a connection
/// held for longer is a connection lost to the upstream.
const NO_QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// Forwards `request` to `service` and returns its response, whole.
///
/// # Errors
///
/// [`ForwardError::Refuse`] naming the service, the replica and the cause when no replica can be
/// reached, the response takes longer than `query_timeout` or is larger than `max_reply_bytes`.
pub(crate) async fn forward(
    service: &Service,
    session: &Session,
    request: &HttpRequest,
) -> Result<HttpResponse, ForwardError> {
    let (replica, stream) = connect(service).await.map_err(ForwardError::Refuse)?;
    exchange(service, replica, stream, session, request)
        .await
        .map_err(|why| ForwardError::Refuse(format!("qgate: {}: {why}", replica.describe())))
}

/// A connection of its own to one of `service`'s replicas: usable ones first, then the one with
/// the fewest connections, each within `connect_timeout`.
///
/// # Errors
///
/// Why no replica could be reached, naming the last one tried.
pub(crate) async fn connect(service: &Service) -> Result<(&Arc<Replica>, stream::Stream), String> {
    let mut order: Vec<&Arc<Replica>> = service.replicas.iter().collect();
    order.sort_by_key(|replica| {
        (
            !replica.usable(),
            replica
                .connections
                .load(std::sync::atomic::Ordering::Acquire),
        )
    });
    let mut last_error = String::from("no replica");
    for replica in order {
        let opened = tokio::time::timeout(
            service.options.connect_timeout,
            stream::open(&replica.address, service.tls.as_ref()),
        )
        .await;
        match opened {
            Ok(Ok(stream)) => return Ok((replica, stream)),
            Ok(Err(error)) => {
                last_error = format!("{}: cannot connect: {error}", replica.describe());
                replica.mark_down(&error.to_string());
            }
            Err(_) => {
                last_error = format!(
                    "{}: no connection within connect_timeout ({:?})",
                    replica.describe(),
                    service.options.connect_timeout
                );
                replica.mark_down("connect timeout");
            }
        }
    }
    Err(format!("qgate: {last_error}"))
}

/// One request and its response over `stream`.
async fn exchange(
    service: &Service,
    replica: &Arc<Replica>,
    stream: stream::Stream,
    session: &Session,
    request: &HttpRequest,
) -> Result<HttpResponse, String> {
    let _connection = ConnectionCount::new(replica);
    let _in_flight = InFlight::new(replica);
    let limit = service.options.query_timeout.unwrap_or(NO_QUERY_TIMEOUT);
    let deadline = tokio::time::Instant::now() + limit;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    // The connection's I/O runs beside the request; it ends with the response, or is dropped.
    let driver = tokio::spawn(connection);
    let outgoing = build(service, session, request, &replica.address.to_string())?;
    let timed_out = || format!("no HTTP response within query_timeout ({limit:?})");
    let response = tokio::time::timeout_at(deadline, sender.send_request(outgoing))
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| format!("HTTP request failed: {error}"))?;
    let (parts, body) = response.into_parts();
    let max = usize::try_from(service.options.max_reply_bytes).unwrap_or(usize::MAX);
    let body = tokio::time::timeout_at(deadline, Limited::new(body, max).collect())
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                format!("the HTTP response is larger than max_reply_bytes ({max} bytes)")
            } else {
                format!("the HTTP response could not be read: {error}")
            }
        })?
        .to_bytes();
    driver.abort();
    let mut response = HttpResponse::new(parts.status.as_u16(), body.to_vec());
    response.headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    Ok(response)
}

/// The request as the upstream gets it.
fn build(
    service: &Service,
    session: &Session,
    request: &HttpRequest,
    host: &str,
) -> Result<Request<Full<Bytes>>, String> {
    let target = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let mut outgoing = Request::builder()
        .method(request.method.as_str())
        .uri(target)
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|error| format!("the request cannot be forwarded: {error}"))?;
    let headers = outgoing.headers_mut();
    for (name, value) in &request.headers {
        if HOP_BY_HOP.contains(&name.as_str()) || name.starts_with("x-forwarded-") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, host);
    }
    if let Some(login) = service.login(None) {
        let mut credentials = login.user.clone();
        credentials.push(b':');
        credentials.extend(login.password.as_deref().unwrap_or_default());
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        if let Ok(value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    if let Ok(peer) = HeaderValue::from_str(&session.peer.ip().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), peer);
    }
    if let Ok(user) = HeaderValue::from_bytes(&session.user) {
        headers.insert(HeaderName::from_static("x-forwarded-user"), user);
    }
    Ok(outgoing)
}
