//! The upstream's HTTP, as a kdb+ port serves it: a connection whose first bytes are an HTTP
//! request line gets HTTP/1.1 (hyper) instead of q.
//!
//! A request must log in with HTTP Basic when the upstream has logins (`401` with
//! `WWW-Authenticate` otherwise, as kdb+ with `-u` answers). `GET /?expr` (the `.z.ph` path) and
//! a `POST` (`.z.pp`) are answered, `text/plain`, with a receipt of what arrived, one `key=value`
//! a line: `upstream`, `user` (the Basic login's), `method`, `text` (the query percent-decoded,
//! or the body), and `forwarded-user` and `forwarded-for` (the headers a gateway adds). Any other
//! path is a `404`, as kdb+ answers a file it does not have.

use std::{convert::Infallible, sync::Arc};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::state::Shared;

/// The methods whose request line starts an HTTP connection.
const METHODS: [&[u8]; 4] = [b"GET ", b"POST ", b"HEAD ", b"PUT "];

/// Whether `first`, the first bytes of a connection, start an HTTP request; `None` while they
/// could still become one.
pub(crate) fn starts_http(first: &[u8]) -> Option<bool> {
    if METHODS.iter().any(|method| first.starts_with(method)) {
        return Some(true);
    }
    if METHODS.iter().any(|method| method.starts_with(first)) {
        return None;
    }
    Some(false)
}

/// Serves HTTP on `stream` until the client closes.
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(answer(&shared, request).await) }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "HTTP connection failed");
    }
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Full<bytes::Bytes>> {
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| {
            let colon = decoded.iter().position(|&byte| byte == b':')?;
            Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
        });
    let user = credentials
        .as_ref()
        .map(|(user, _)| user.clone())
        .unwrap_or_default();
    let password = credentials
        .as_ref()
        .map(|(_, password)| password.as_slice());
    if !shared.accepts(&user, password) {
        let mut response = text(StatusCode::UNAUTHORIZED, "login refused\n".to_owned());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"kdb+\""),
        );
        return response;
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let forwarded_user = header("x-forwarded-user");
    let forwarded_for = header("x-forwarded-for");
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad body\n".to_owned()),
    };
    let text_of = match (method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/") => query.map(|query| qgate_q::percent_decode(query.as_bytes())),
        ("POST", _) => Some(body),
        _ => None,
    };
    let Some(q) = text_of else {
        return text(StatusCode::NOT_FOUND, format!("{path}: not found\n"));
    };
    text(
        StatusCode::OK,
        format!(
            "upstream={}\nuser={}\nmethod={method}\ntext={}\nforwarded-user={forwarded_user}\n\
             forwarded-for={forwarded_for}\n",
            shared.name,
            String::from_utf8_lossy(&user),
            String::from_utf8_lossy(&q),
        ),
    )
}

fn text(status: StatusCode, body: String) -> Response<Full<bytes::Bytes>> {
    let mut response = Response::new(Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}
