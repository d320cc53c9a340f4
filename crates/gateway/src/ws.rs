//! WebSocket to an upstream: a WebSocket the chain accepted gets one of its own to the service's
//! q port, where kdb+ runs `.z.wo`, `.z.ws` and `.z.wc` unchanged, and frames flow both ways.
//!
//! ```text
//!   Backend::websocket(route, session, upgrade)   (at the client's open, before its 101)
//!     └─ service (route, or the first [[upstream]]) ── a replica (http::connect), TLS when the
//!        service has it ── tokio-tungstenite's client handshake with the service account's
//!        Basic credentials and X-Forwarded-For / X-Forwarded-User
//!          └─ a relay task: WsUpstream.to ──> the upstream; the upstream ──> WsUpstream.from
//!             (its replies and its pushes alike) until either side closes
//! ```
//!
//! It opens at the client's open rather than at its first message, so the upstream's `.z.wo` runs
//! when the client's WebSocket opens, as it would for a client connected directly, its pushes
//! reach the client from the start, and an upstream that cannot be reached is a `502` the client
//! sees instead of a WebSocket that drops its messages.
//! A message from the upstream larger than the service's `max_reply_bytes` ends the WebSocket.

use std::sync::Arc;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use qgate_hooks::{ForwardError, HttpRequest, Session, WsMessage, WsUpstream};
use tokio::sync::mpsc;
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{
        Message,
        client::IntoClientRequest as _,
        http::{HeaderName, HeaderValue, header},
        protocol::WebSocketConfig,
    },
};

use crate::{
    http,
    replica::{ConnectionCount, Replica},
    service::Service,
    stream,
};

/// The messages that may wait in each direction between the client's task and the relay.
///
/// 16: enough to keep both sides busy; a side that stops reading holds the other back (its
/// sends wait) instead of letting messages pile up in memory.
const QUEUE: usize = 16;

/// Opens a WebSocket to `service` for a client's accepted upgrade.
///
/// # Errors
///
/// [`ForwardError::Refuse`] naming the service, the replica and the cause when no replica can be
/// reached or its handshake fails (the upstream refused the login, or serves no WebSocket).
pub(crate) async fn open(
    service: &Service,
    session: &Session,
    request: &HttpRequest,
) -> Result<WsUpstream, ForwardError> {
    let (replica, stream) = http::connect(service).await.map_err(ForwardError::Refuse)?;
    let refuse =
        |why: String| ForwardError::Refuse(format!("qgate: {}: {why}", replica.describe()));
    let target = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let mut upgrade = format!("ws://{}{target}", replica.address)
        .into_client_request()
        .map_err(|error| refuse(format!("the WebSocket cannot be forwarded: {error}")))?;
    let headers = upgrade.headers_mut();
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
    let max = usize::try_from(service.options.max_reply_bytes).unwrap_or(usize::MAX);
    // 16 KiB reads, as the server's side: tungstenite zero-fills its whole read buffer before
    // each read, and its default 128 KiB costs more than a small message's relay.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let handshake = tokio::time::timeout(
        service.options.connect_timeout,
        client_async_with_config(upgrade, stream, Some(config)),
    )
    .await
    .map_err(|_| {
        refuse(format!(
            "no WebSocket handshake within connect_timeout ({:?})",
            service.options.connect_timeout
        ))
    })?;
    let (ws, _) = handshake.map_err(|error| refuse(format!("WebSocket refused: {error}")))?;
    let (to, to_upstream) = mpsc::channel(QUEUE);
    let (from_upstream, from) = mpsc::channel(QUEUE);
    let connection = ConnectionCount::new(replica);
    tokio::spawn(relay(
        ws,
        to_upstream,
        from_upstream,
        Arc::clone(replica),
        connection,
    ));
    Ok(WsUpstream {
        to,
        from,
        service: service.options.name.clone(),
    })
}

/// Relays frames between the client's task and the upstream until either side ends.
async fn relay(
    mut ws: WebSocketStream<stream::Stream>,
    mut to_upstream: mpsc::Receiver<WsMessage>,
    from_upstream: mpsc::Sender<WsMessage>,
    replica: Arc<Replica>,
    _connection: ConnectionCount,
) {
    loop {
        tokio::select! {
            message = to_upstream.recv() => {
                let Some(message) = message else {
                    // The client's side is gone: close ours.
                    let _ = ws.close(None).await;
                    break;
                };
                let message = if message.text {
                    match String::from_utf8(message.data) {
                        Ok(text) => Message::text(text),
                        Err(error) => Message::binary(error.into_bytes()),
                    }
                } else {
                    Message::binary(message.data)
                };
                if let Err(error) = ws.send(message).await {
                    tracing::info!(upstream = %replica.describe(), %error, "WebSocket to the upstream failed");
                    break;
                }
            }
            frame = ws.next() => {
                let message = match frame {
                    Some(Ok(Message::Text(text))) => WsMessage::text(text.as_str()),
                    Some(Ok(Message::Binary(data))) => WsMessage::binary(data.to_vec()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        tracing::info!(upstream = %replica.describe(), %error, "WebSocket from the upstream failed");
                        break;
                    }
                };
                if from_upstream.send(message).await.is_err() {
                    let _ = ws.close(None).await;
                    break;
                }
            }
        }
    }
}
