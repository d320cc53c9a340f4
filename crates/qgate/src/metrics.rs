//! The `/metrics` listener: Prometheus metrics as OpenMetrics text, over plain HTTP/1.1 on the
//! address `[metrics] listen` names, for as long as the server runs.
//!
//! `GET /metrics` renders the registry; anything else is a 404. The listener is small on purpose,
//! since it shares the process with the q port: a few connections at a time
//! ([`MAX_CONNECTIONS`]), one request each (no keep-alive), a time limit on the request head
//! ([`HEADER_TIMEOUT`]) and on the whole exchange ([`CONNECTION_TIMEOUT`]). A scraper needs one
//! request every few seconds; nothing else should be talking to this port.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Result, anyhow};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use qgate_metrics::{Metrics, Registry};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

/// Connections served at once; one more is closed at once, unanswered.
///
/// 4: a Prometheus server or two and a person with curl. Each connection holds a rendering of
/// the metrics (tens of KiB) for at most [`CONNECTION_TIMEOUT`]; more at once would only mean
/// that something other than a scraper is talking to this port.
const MAX_CONNECTIONS: usize = 4;

/// How long a client has to send its request head once connected.
///
/// 5 s: a scraper sends its request at once; a client that connects and says nothing should not
/// hold one of the [`MAX_CONNECTIONS`] slots for longer.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may last in all: request, rendering and response.
///
/// 10 s, Prometheus's default scrape timeout: rendering takes microseconds, so a connection still
/// open after this is a reader too slow to be a scraper.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read, in bytes (hyper's minimum).
///
/// 8 KiB: `GET /metrics` and a scraper's few headers take a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The pause after a failed `accept` (out of file descriptors, say), so that it is not retried
/// in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The OpenMetrics text format's media type, which Prometheus reads from the response.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics listener on `addr`, with an error that names the address and the key.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        let hint = match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process is listening there: choose another address in \
                 `metrics.listen`"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: choose a higher port in `metrics.listen`"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "; no interface of this machine has that address: use 127.0.0.1 for this \
                 machine only"
            }
            _ => "",
        };
        anyhow!("cannot listen for metrics on {addr}: {error}{hint}")
    })
}

/// Serves `registry` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, limit = MAX_CONNECTIONS, "metrics listener: too many connections; closed");
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, registry))
                .await
                .is_err()
            {
                debug!(%peer, "metrics listener: connection timed out; closed");
            }
        });
    }
}

/// Serves one request on `stream`.
async fn connection(stream: TcpStream, registry: Arc<Registry>) {
    let service = service_fn(move |request| {
        let response = respond(&request, &registry);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        debug!(%error, "metrics listener: connection failed");
    }
}

/// The response to `request`: the metrics for `GET /metrics`, a 404 for anything else.
fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at GET /metrics\n",
        );
    }
    match Metrics::render(registry) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        Err(error) => {
            warn!(%error, "cannot render the metrics");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics\n",
            )
        }
    }
}

/// A plain-text response.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
