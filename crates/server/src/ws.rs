//! WebSocket on the q port, as kdb+ serves it (`.z.wo`, `.z.ws`, `.z.wc`): an HTTP request with
//! `Upgrade: websocket` that logged in and that the hooks accept is upgraded (hyper's upgrade),
//! and its frames are read and written by tokio-tungstenite; nothing of the framing is ours.
//!
//! ```text
//!   http.rs: GET, Upgrade: websocket, Sec-WebSocket-Key, version 13, after the login
//!     Hooks::on_ws_open: deny ──> the status and text, no upgrade
//!     Backend::websocket: the backend's side (gateway: the upstream's WebSocket) ── fails ──> 502
//!     101 Switching Protocols ──> ws::run, on the same task, until either side closes:
//!       client message ──> Hooks::on_ws_message: reply ──> the client
//!                                                 deny  ──> dropped, logged
//!                                                 close ──> a close frame with its code
//!                                                 pass  ──> the backend (none: dropped)
//!       backend message (a reply or a push) ──> the client
//!     Hooks::on_ws_close, whichever side closed
//! ```
//!
//! # Limits
//!
//! A message (and a frame) larger than `max_ws_message_bytes` closes the WebSocket with 1009:
//! tungstenite checks a frame's claimed length before reading its payload, so memory grows only
//! with bytes that arrived. A client silent for `ws_ping_interval` is pinged, and closed (1001)
//! when it stays silent for as long again; tungstenite answers the client's pings itself. Each
//! write waits at most `write_timeout`. Shutdown closes each WebSocket with 1001.

use std::{future::Future, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{
    HeaderMap, Method, Response, StatusCode,
    header::{self, HeaderValue},
    upgrade::OnUpgrade,
};
use hyper_util::rt::TokioIo;
use qgate_hooks::{Hooks, Session, WsMessage, WsUpstream, WsVerdict};
use tokio::time::Instant;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message,
        error::CapacityError,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::{logging::ClientText, options::HttpOptions};

/// How long a closing WebSocket waits for the other side's close frame before it is dropped.
///
/// 5 s: the close handshake is one frame each way; a peer that does not answer in that long is
/// not going to, and the connection's seat is held meanwhile.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The longest close reason a close frame carries (RFC 6455, 5.5: a control frame's payload is
/// at most 125 bytes, two of which are the code).
const MAX_CLOSE_REASON: usize = 123;

/// How much a WebSocket reads from its socket at once (tungstenite's `read_buffer_size`).
///
/// 16 KiB, not tungstenite's 128 KiB: tungstenite zero-fills that much of its buffer before each
/// read, which for a 128 KiB buffer costs more than the rest of a small message's round trip
/// (measured: 1.6× a q round trip with it, see BENCHMARKS.md); a large message is still read
/// whole, 16 KiB per read.
pub(crate) const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A WebSocket upgrade the hooks accepted, waiting for its `101` to be written.
pub(crate) struct Upgrade {
    pub(crate) session: Session,
    pub(crate) upstream: Option<WsUpstream>,
    pub(crate) on_upgrade: OnUpgrade,
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn requested(headers: &HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
}

/// The `Sec-WebSocket-Accept` of a valid upgrade request (RFC 6455, 4.2.1), or the response that
/// refuses it.
pub(crate) fn accept_key(
    method: &Method,
    headers: &HeaderMap,
) -> Result<String, (StatusCode, &'static str)> {
    if method != Method::GET {
        return Err((
            StatusCode::BAD_REQUEST,
            "qgate: a WebSocket upgrade must be a GET",
        ));
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "qgate: a WebSocket upgrade needs `Connection: Upgrade`",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "qgate: only WebSocket version 13 is served",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|nonce| nonce.len() == 16)
        })
        .ok_or((
            StatusCode::BAD_REQUEST,
            "qgate: a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64",
        ))?;
    Ok(derive_accept_key(key))
}

/// The `101` that completes an upgrade.
pub(crate) fn switching(accept: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A `426` says which version is served.
pub(crate) fn version_header() -> (header::HeaderName, HeaderValue) {
    (
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    )
}

/// Whether a header lists `token` (comma-separated, any case).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Runs an upgraded WebSocket until either side closes or `draining` resolves, then tells
/// [`Hooks::on_ws_close`].
pub(crate) async fn run<H: Hooks>(
    hooks: &H,
    options: &HttpOptions,
    write_timeout: Duration,
    upgrade: Upgrade,
    draining: impl Future<Output = ()>,
) {
    let Upgrade {
        session,
        upstream,
        on_upgrade,
    } = upgrade;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::info!(%error, "WebSocket upgrade failed");
            return;
        }
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(options.max_ws_message_bytes))
        .max_frame_size(Some(options.max_ws_message_bytes));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    tracing::debug!(
        upstream = upstream.as_ref().map(|up| up.service.as_str()),
        "WebSocket open"
    );
    let mut channel = Channel {
        hooks,
        session: &session,
        ws,
        upstream,
        write_timeout,
        nothing_answers_logged: false,
    };
    let reason = channel
        .relay(
            options.max_ws_message_bytes,
            options.ws_ping_interval,
            draining,
        )
        .await;
    tracing::debug!(%reason, "WebSocket closed");
    hooks.on_ws_close(&session, &reason).await;
}

/// One open WebSocket.
struct Channel<'a, H, S> {
    hooks: &'a H,
    session: &'a Session,
    ws: WebSocketStream<S>,
    upstream: Option<WsUpstream>,
    write_timeout: Duration,
    /// Whether the drop of a message nothing answers has been logged: once per WebSocket.
    nothing_answers_logged: bool,
}

/// What the client's message comes to.
enum Next {
    Continue,
    Closed(String),
}

impl<H: Hooks, S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Channel<'_, H, S> {
    /// Relays until the WebSocket closes; why it closed.
    async fn relay(
        &mut self,
        max_bytes: usize,
        ping_interval: Duration,
        draining: impl Future<Output = ()>,
    ) -> String {
        tokio::pin!(draining);
        // One timer for the WebSocket's life: a frame only notes when it came, and the timer,
        // when it fires, moves itself to that note's deadline; re-arming a timer per frame would
        // cost a timer-wheel update per message.
        let mut last_frame = Instant::now();
        let silence = tokio::time::sleep_until(last_frame + ping_interval);
        tokio::pin!(silence);
        let mut pinged = false;
        loop {
            let from_backend = async {
                match &mut self.upstream {
                    Some(upstream) => upstream.from.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = self.ws.next() => {
                    last_frame = Instant::now();
                    pinged = false;
                    let message = match frame {
                        None => return "the client closed the connection".to_owned(),
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                            tracing::info!(
                                limit = "http.max_ws_message_bytes",
                                max = max_bytes,
                                size,
                                "WebSocket message too large; closing"
                            );
                            self.close(CloseCode::Size, "message larger than max_ws_message_bytes")
                                .await;
                            return "message too large".to_owned();
                        }
                        Some(Err(error)) => {
                            tracing::info!(%error, "WebSocket failed");
                            return format!("error: {error}");
                        }
                        Some(Ok(message)) => message,
                    };
                    let message = match message {
                        Message::Text(text) => WsMessage::text(text.as_str()),
                        Message::Binary(data) => WsMessage::binary(data.to_vec()),
                        Message::Close(frame) => {
                            // tungstenite answers the close; this waits until it is written.
                            self.finish().await;
                            return match frame {
                                Some(frame) => format!(
                                    "the client closed the WebSocket ({})",
                                    u16::from(frame.code)
                                ),
                                None => "the client closed the WebSocket".to_owned(),
                            };
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    };
                    if let Next::Closed(reason) = self.on_client_message(message).await {
                        return reason;
                    }
                }
                pushed = from_backend => match pushed {
                    Some(message) => {
                        if let Err(reason) = self.send(message).await {
                            return reason;
                        }
                    }
                    None => {
                        let service = self.upstream.take().map(|up| up.service).unwrap_or_default();
                        tracing::info!(upstream = service, "upstream closed the WebSocket; closing");
                        self.close(CloseCode::Normal, "the upstream closed the WebSocket").await;
                        return format!("upstream {service} closed the WebSocket");
                    }
                },
                () = &mut draining => {
                    self.close(CloseCode::Away, "qgate is shutting down").await;
                    return "shutdown".to_owned();
                }
                () = &mut silence => {
                    let quiet_until = last_frame + ping_interval;
                    if !pinged && quiet_until > Instant::now() {
                        silence.as_mut().reset(quiet_until);
                        continue;
                    }
                    if pinged {
                        tracing::info!(
                            limit = "http.ws_ping_interval",
                            after = ?(ping_interval * 2),
                            "WebSocket client silent; closing"
                        );
                        self.close(CloseCode::Away, "no answer to ping").await;
                        return "the client stopped answering".to_owned();
                    }
                    pinged = true;
                    silence.as_mut().reset(Instant::now() + ping_interval);
                    if let Err(reason) = self.write(Message::Ping(Bytes::new())).await {
                        return reason;
                    }
                }
            }
        }
    }

    /// A client's message through the hooks, and then to the backend.
    async fn on_client_message(&mut self, message: WsMessage) -> Next {
        match self.hooks.on_ws_message(self.session, &message).await {
            WsVerdict::Reply(messages) => {
                for reply in messages {
                    if let Err(reason) = self.send(reply).await {
                        return Next::Closed(reason);
                    }
                }
            }
            WsVerdict::Deny(text) => {
                tracing::info!(
                    text = %ClientText(text.as_bytes()),
                    bytes = message.data.len(),
                    "WebSocket message denied; dropped"
                );
            }
            WsVerdict::Close { code, reason } => {
                let code = match CloseCode::from(code) {
                    code @ (CloseCode::Normal
                    | CloseCode::Away
                    | CloseCode::Policy
                    | CloseCode::Size
                    | CloseCode::Unsupported
                    | CloseCode::Invalid
                    | CloseCode::Extension
                    | CloseCode::Error
                    | CloseCode::Restart
                    | CloseCode::Again
                    | CloseCode::Library(_)
                    | CloseCode::Iana(_)) => code,
                    _ => CloseCode::Policy,
                };
                tracing::info!(code = u16::from(code), "WebSocket closed by a hook");
                self.close(code, &reason).await;
                return Next::Closed(format!("closed by a hook ({})", u16::from(code)));
            }
            _ => {
                let Some(upstream) = &self.upstream else {
                    if !self.nothing_answers_logged {
                        self.nothing_answers_logged = true;
                        tracing::info!(
                            "WebSocket message passed by every hook with no backend to answer \
                             it: dropped, as kdb+ without .z.ws drops it (logged once per \
                             WebSocket)"
                        );
                    }
                    return Next::Continue;
                };
                if upstream.to.send(message).await.is_err() {
                    let service = upstream.service.clone();
                    self.close(CloseCode::Away, "the upstream closed the WebSocket")
                        .await;
                    return Next::Closed(format!("upstream {service} closed the WebSocket"));
                }
            }
        }
        Next::Continue
    }

    /// Sends a message to the client.
    async fn send(&mut self, message: WsMessage) -> Result<(), String> {
        let message = if message.text {
            match String::from_utf8(message.data) {
                Ok(text) => Message::text(text),
                Err(error) => {
                    tracing::warn!("a text WebSocket message is not UTF-8; sent as binary");
                    Message::binary(error.into_bytes())
                }
            }
        } else {
            Message::binary(message.data)
        };
        self.write(message).await
    }

    async fn write(&mut self, message: Message) -> Result<(), String> {
        match tokio::time::timeout(self.write_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("writing to the client failed: {error}")),
            Err(_) => {
                tracing::info!(limit = "write_timeout", after = ?self.write_timeout, "WebSocket client stopped reading");
                Err("the client stopped reading".to_owned())
            }
        }
    }

    /// Sends a close frame and waits (a while) for the client's.
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code,
            reason: reason[..end].into(),
        };
        let sent = tokio::time::timeout(self.write_timeout, self.ws.close(Some(frame))).await;
        if matches!(sent, Ok(Ok(()))) {
            self.finish().await;
        }
    }

    /// Reads what is left until the close completes, within [`CLOSE_WAIT`].
    async fn finish(&mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                    HeaderValue::from_str(value).expect("a value"),
                )
            })
            .collect()
    }

    #[test]
    fn an_upgrade_is_checked_as_rfc_6455_says() {
        let good = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(requested(&good));
        // RFC 6455's own example.
        assert_eq!(
            accept_key(&Method::GET, &good).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(
            accept_key(&Method::POST, &good).map_err(|(status, _)| status),
            Err(StatusCode::BAD_REQUEST)
        );
        let mut old = good.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            accept_key(&Method::GET, &old).map_err(|(status, _)| status),
            Err(StatusCode::UPGRADE_REQUIRED)
        );
        let mut short = good.clone();
        short.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("YWJj"));
        assert!(accept_key(&Method::GET, &short).is_err());
        assert!(!requested(&headers(&[("upgrade", "h2c")])));
    }
}
