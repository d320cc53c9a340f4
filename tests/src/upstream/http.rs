//! The upstream's HTTP, as a kdb+ port serves it: a connection whose first bytes are an HTTP
//! request line gets HTTP/1.1 (hyper) instead of q.
//!
//! A request must log in with HTTP Basic when the upstream has logins (`401` with
//! `WWW-Authenticate` otherwise, as kdb+ with `-u` answers). `GET /?expr` (the `.z.ph` path) and
//! a `POST` (`.z.pp`) are answered, `text/plain`, with a receipt of what arrived, one `key=value`
//! a line: `upstream`, `user` (the Basic login's), `method`, `text` (the query percent-decoded,
//! or the body), and `forwarded-user` and `forwarded-for` (the headers a gateway adds). Any other
//! path is a `404`, as kdb+ answers a file it does not have.
//!
//! A `GET` with `Upgrade: websocket` that logged in becomes a WebSocket (tokio-tungstenite), as
//! kdb+'s `.z.ws` serves one: each message comes back, of the same kind, prefixed with the
//! login's user and the `X-Forwarded-User` the gateway added (`svc/alice:` + the data); a text
//! message `push N` is answered so and followed by `N` messages `push i of N`, so that tests see
//! messages the upstream sends unasked.

use std::{convert::Infallible, sync::Arc};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

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
        .with_upgrades()
        .await
    {
        tracing::debug!(%error, "HTTP connection failed");
    }
}

async fn answer(shared: &Shared, mut request: Request<Incoming>) -> Response<Full<bytes::Bytes>> {
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
    if header("upgrade").eq_ignore_ascii_case("websocket") {
        let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return text(StatusCode::BAD_REQUEST, "no websocket key\n".to_owned());
        };
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        let prefix = format!("{}/{forwarded_user}:", String::from_utf8_lossy(&user));
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo(ws, prefix).await;
            }
        });
        let mut response = Response::new(Full::new(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(accept) = header::HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        return response;
    }
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

/// Echoes each message with `prefix`, and answers `push N` with `N` more, until the client
/// closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>, prefix: String) {
    while let Some(Ok(message)) = ws.next().await {
        let (reply, pushes) = match message {
            Message::Text(text) => {
                let pushes = text
                    .as_str()
                    .strip_prefix("push ")
                    .and_then(|count| count.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (Message::text(format!("{prefix}{}", text.as_str())), pushes)
            }
            Message::Binary(data) => (Message::binary([prefix.as_bytes(), &data].concat()), 0),
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
        for i in 1..=pushes {
            if ws
                .send(Message::text(format!("push {i} of {pushes}")))
                .await
                .is_err()
            {
                return;
            }
        }
    }
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
