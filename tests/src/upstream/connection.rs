//! The upstream's connections: the accept loop, the TLS and q handshakes, and three tasks per
//! connection.
//!
//! ```text
//!   socket ─► reader ──(bounded queue)──► evaluator ──(outbox)──► writer ─► socket
//!             records each message,        one message at a time,  replies, pushes from
//!             counts what is in flight     under the evaluation    other connections,
//!                                          lock when serialised    streamed byte vectors
//! ```
//!
//! The reader reads ahead of the evaluator only as far as [`MAX_QUEUED_MESSAGES`], so that the
//! record and the `pipelined` counter see what a client sends while its previous query runs,
//! and a client that floods is held back by TCP, as kdb+ holds it back by not reading.
//! Everything written to a client goes through its outbox, in the order queued: a callback or
//! a publication queued before a reply reaches the client before it.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use qgate_ipc::{
    HEADER_LEN, Header, K, Limits, Message, MessageType, handshake::DEFAULT_MAX_HANDSHAKE_BYTES,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::upstream::{
    eval::{self, BYTES_PREFIX_LEN, Caller, Outcome},
    state::{Kind, Outgoing, Shared},
};

/// How long a client has to finish its TLS and q handshakes, as aiokdb's server allows: a real
/// client sends its handshake at once; this only closes sockets that never do.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a client may send, header included, after decompression: qgate's own
/// default (256 MiB). A larger one closes the connection, as a kdb+ short of memory would fail
/// it; a test that needs more is testing a limit of qgate's, not the upstream's.
const MAX_MESSAGE_BYTES: usize = Limits::DEFAULT_MAX_MESSAGE_BYTES;

/// How many messages the reader may read ahead of the evaluator. Enough to see a client that
/// pipelines its queries (the `pipelined` counter); few enough that a flood waits in the
/// socket, not in memory.
const MAX_QUEUED_MESSAGES: usize = 16;

/// How long the accept loop waits after an error (out of file descriptors, mostly) before it
/// accepts again, so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The size of the chunks `bytes[n]` is written in: its memory, whatever `n` is. 64 KiB is a
/// multiple of 256, so every chunk holds the same bytes (`i mod 256`) and one constant serves all.
const CHUNK: usize = 64 * 1024;

/// A chunk of `bytes[n]`'s items: byte `i` is `i mod 256`.
static PATTERN: [u8; CHUNK] = pattern();

const fn pattern() -> [u8; CHUNK] {
    let mut bytes = [0_u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
}

/// The first byte of every TLS ClientHello: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What `garbage[]` writes: 16 bytes whose header says byte order 0x7f and message type 9, which
/// no q IPC peer can read.
const GARBAGE: [u8; 16] = *b"\x7f\x09\x7f\x7fnot q ipc!!!";

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                let tls = tls.clone();
                let stop = stop.child_token();
                tokio::spawn(async move { connection(shared, stream, peer, tls, stop).await });
            }
            Err(error) => {
                tracing::warn!(%error, "the upstream cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One connection, from the TLS handshake (when required) to its close.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    // Replies go out at once, as they would from kdb+ on loopback.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return session(shared, stream, peer, stop).await;
    };
    // A plain client is closed before rustls answers it: its alert would reach a q client as a
    // capability byte.
    let mut first = [0_u8; 1];
    let peeked = tokio::select! {
        () = stop.cancelled() => return,
        peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::info!(%peer, "a plain client, and this upstream requires TLS: connection closed");
            return;
        }
        _ => return,
    }
    let accepted = tokio::select! {
        () = stop.cancelled() => return,
        accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => session(shared, stream, peer, stop).await,
        Ok(Err(error)) => tracing::info!(
            %peer,
            %error,
            "TLS handshake failed (this upstream requires TLS of every client): connection closed"
        ),
        Err(_) => {
            tracing::info!(%peer, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}: connection closed")
        }
    }
}

/// A connection after TLS: the q handshake, then its reader, evaluator and writer.
async fn session<S>(shared: Arc<Shared>, mut stream: S, peer: SocketAddr, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio::select! {
        () = stop.cancelled() => return,
        read = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut stream)) => read,
    };
    let (handshake, rest) = match handshake {
        Ok(Ok(Some(Opened::Q(handshake, rest)))) => (handshake, rest),
        Ok(Ok(Some(Opened::Http(first)))) => {
            // HTTP, as a kdb+ port serves it: the bytes read so far, then the rest.
            let (read_half, write_half) = tokio::io::split(stream);
            let stream = tokio::io::join(io::Cursor::new(first).chain(read_half), write_half);
            return super::http::serve(shared, stream).await;
        }
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "bad handshake: connection closed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no handshake within {HANDSHAKE_TIMEOUT:?}: connection closed");
            return;
        }
    };
    let user = handshake.user.clone();
    if !shared.accepts(&handshake.user, handshake.password.as_deref()) {
        shared.refused();
        tracing::info!(%peer, user = ?String::from_utf8_lossy(&user), "login refused");
        // Closed without a byte: the client reports 'access.
        return;
    }
    let capability = handshake.reply_byte();
    // The capability byte alone in its write: node-q needs it as a chunk of its own.
    if stream.write_all(&[capability]).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let handle = shared.register(capability, outbox.clone());
    tracing::debug!(%peer, handle, user = ?String::from_utf8_lossy(&user), "connection opened");

    let (read_half, write_half) = tokio::io::split(stream);
    let writer = tokio::spawn(write_loop(write_half, outbox_rx, stop.clone()));
    let (incoming, incoming_rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(read_loop(ReadLoop {
        shared: Arc::clone(&shared),
        stream: io::Cursor::new(rest).chain(read_half),
        handle,
        user: user.clone(),
        peer,
        incoming,
        in_flight: Arc::clone(&in_flight),
        stop: stop.clone(),
    }));
    let caller = Caller {
        shared: Arc::clone(&shared),
        handle,
        user,
        capability,
        outbox: outbox.clone(),
        stop: stop.clone(),
    };
    evaluate_loop(&caller, incoming_rx, &in_flight).await;

    shared.deregister(handle);
    // What was queued is written, then the connection closes (a no-op if it already has).
    let _ = outbox.send(Outgoing::Close);
    drop(caller);
    drop(outbox);
    let _ = writer.await;
    stop.cancel();
    let _ = reader.await;
    tracing::debug!(%peer, handle, "connection closed");
}

/// Reads the handshake; returns it with the bytes that came after its NUL (the first message,
/// from a client that did not wait for the capability byte), or the first bytes of an HTTP
/// request, or `None` if the client closed.
async fn read_handshake<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<Opened>> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
        match super::http::starts_http(&buffer) {
            Some(true) => return Ok(Some(Opened::Http(buffer))),
            None => continue,
            Some(false) => {}
        }
        match qgate_ipc::handshake::parse(&buffer, DEFAULT_MAX_HANDSHAKE_BYTES) {
            Ok(Some((handshake, used))) => {
                return Ok(Some(Opened::Q(handshake, buffer.split_off(used))));
            }
            Ok(None) => {}
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    }
}

/// What a connection opened with: a q handshake and the bytes after its NUL, or the first
/// bytes of an HTTP request.
enum Opened {
    Q(qgate_ipc::handshake::Handshake, Vec<u8>),
    Http(Vec<u8>),
}

/// A message read, decoded and recorded, on its way to the evaluator.
struct Incoming {
    kind: Kind,
    value: K,
}

struct ReadLoop<R> {
    shared: Arc<Shared>,
    stream: R,
    handle: i32,
    user: Vec<u8>,
    peer: SocketAddr,
    incoming: mpsc::Sender<Incoming>,
    in_flight: Arc<AtomicUsize>,
    stop: CancellationToken,
}

/// Reads messages until the client closes, sends one that does not validate, or the connection
/// stops.
async fn read_loop<R: AsyncRead + Unpin>(mut r: ReadLoop<R>) {
    let limits = Limits::new(MAX_MESSAGE_BYTES);
    loop {
        let frame = tokio::select! {
            () = r.stop.cancelled() => return,
            frame = read_frame(&mut r.stream, &limits) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                // kdb+ closes a connection whose message does not validate ('badmsg).
                tracing::warn!(peer = %r.peer, handle = r.handle, %error, "bad message: connection closed");
                r.stop.cancel();
                return;
            }
        };
        let message = match Message::from_frame(frame, &limits) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(peer = %r.peer, handle = r.handle, %error, "bad message: connection closed");
                r.stop.cancel();
                return;
            }
        };
        let kind = match message.header.message_type {
            MessageType::Sync => Kind::Sync,
            MessageType::Async => Kind::Async,
            MessageType::Response => {
                // The upstream never asks a client anything.
                tracing::warn!(peer = %r.peer, handle = r.handle, "a response nothing asked for: ignored");
                continue;
            }
        };
        let value = match qgate_ipc::decode(message.body(), message.header.endian) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(peer = %r.peer, handle = r.handle, %error, "bad message: connection closed");
                r.stop.cancel();
                return;
            }
        };
        r.shared
            .record(eval::describe(&r.shared, r.handle, &r.user, kind, &value));
        if kind == Kind::Sync {
            let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            r.shared.in_flight(now);
        }
        let sent = tokio::select! {
            () = r.stop.cancelled() => return,
            sent = r.incoming.send(Incoming { kind, value }) => sent,
        };
        if sent.is_err() {
            // The evaluator has stopped (after `close[]` or `die[n]`).
            return;
        }
    }
}

/// Reads one whole frame, header included; `None` when the client closed between messages.
async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    limits: &Limits,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0_u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let read = stream.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        filled += read;
    }
    let parsed = Header::parse(&header, limits)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    // The buffer grows with what arrives, never to what the header only claims.
    let mut frame = Vec::with_capacity(parsed.len().min(CHUNK));
    frame.extend_from_slice(&header);
    let body = parsed.body_len() as u64;
    (&mut *stream).take(body).read_to_end(&mut frame).await?;
    if frame.len() != parsed.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(frame))
}

/// Evaluates the connection's messages in order, one at a time, and queues what each produces.
async fn evaluate_loop(
    caller: &Caller,
    mut incoming: mpsc::Receiver<Incoming>,
    in_flight: &AtomicUsize,
) {
    loop {
        let message = tokio::select! {
            () = caller.stop.cancelled() => return,
            message = incoming.recv() => message,
        };
        let Some(Incoming { kind, value }) = message else {
            return;
        };
        let _turn = match &caller.shared.eval_lock {
            Some(lock) => {
                let _waiting = caller.shared.waiting();
                tokio::select! {
                    () = caller.stop.cancelled() => return,
                    turn = lock.lock() => Some(turn),
                }
            }
            None => None,
        };
        let busy = caller.shared.busy();
        let outcome = eval::evaluate(caller, &value).await;
        if caller.stop.is_cancelled() {
            // The connection or the upstream is stopping: nothing more goes out, as from a
            // kdb+ process that is killed.
            return;
        }
        // Queued before the evaluation lock is released, as q queues a reply before it reads the
        // next message.
        let ends = queue(caller, kind, outcome);
        drop(busy);
        if kind == Kind::Sync {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if ends {
            return;
        }
    }
}

/// Queues what an outcome writes; returns whether the connection ends with it.
fn queue(caller: &Caller, kind: Kind, outcome: Outcome) -> bool {
    let message_type = match kind {
        Kind::Sync => MessageType::Response,
        Kind::Async => MessageType::Async,
    };
    let outgoing = match (kind, outcome) {
        (_, Outcome::Close) => Outgoing::Close,
        (_, Outcome::Die(n)) => Outgoing::Die(n),
        (_, Outcome::Garbage) => Outgoing::Garbage,
        (Kind::Async, Outcome::Error(text)) => {
            // q prints an async message's error on its console and sends nothing.
            let error = String::from_utf8_lossy(&text);
            tracing::info!(handle = caller.handle, error = ?error, "an async message failed");
            return false;
        }
        (Kind::Async, Outcome::Value(_) | Outcome::Bytes(_)) => return false,
        // Never compressed: q's compression cannot halve `i mod 256` (its matches need the same
        // byte pair at the last position with that pair's hash), so kdb+ would send it plain too.
        (Kind::Sync, Outcome::Bytes(n)) => Outgoing::Bytes(n),
        (Kind::Sync, Outcome::Value(value)) => encoded(caller, message_type, &value),
        (Kind::Sync, Outcome::Error(text)) => encoded(caller, message_type, &K::error(text)),
    };
    let ends = matches!(outgoing, Outgoing::Close | Outgoing::Die(_));
    // A closed outbox means the writer has stopped: the connection is closing anyway.
    let _ = caller.outbox.send(outgoing);
    ends
}

/// A reply, encoded for the connection; a value it cannot take (a timespan at capability 0)
/// is the error `'type`, as kdb+ answers.
fn encoded(caller: &Caller, message_type: MessageType, value: &K) -> Outgoing {
    let options = caller.encode_options();
    let bytes = qgate_ipc::encode_message_with(message_type, value, &options)
        .or_else(|_| qgate_ipc::encode_message_with(message_type, &K::error("type"), &options));
    match bytes {
        Ok(bytes) => Outgoing::Frame(bytes.into()),
        // Invariant: the error `'type` encodes at every capability; close if it somehow does not.
        Err(_) => Outgoing::Close,
    }
}

/// Writes what is queued in the outbox, in order, until a close, an error or the stop.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut stream: W,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    stop: CancellationToken,
) {
    loop {
        // Biased: once the connection stops, nothing more is written.
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = outbox.recv() => next,
        };
        let Some(next) = next else { break };
        let written = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            written = write(&mut stream, next) => written,
        };
        match written {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
    }
    let _ = stream.shutdown().await;
    // The reader and the evaluator stop with the writer.
    stop.cancel();
}

/// Writes one outgoing item; returns whether the connection stays open.
async fn write<W: AsyncWrite + Unpin>(stream: &mut W, outgoing: Outgoing) -> io::Result<bool> {
    match outgoing {
        Outgoing::Frame(bytes) => stream.write_all(&bytes).await?,
        Outgoing::Bytes(n) => {
            stream
                .write_all(&bytes_prefix(n, MessageType::Response))
                .await?;
            let mut left = n;
            while left > 0 {
                let chunk = left.min(CHUNK);
                stream.write_all(&PATTERN[..chunk]).await?;
                left -= chunk;
            }
        }
        Outgoing::Die(n) => {
            // The header, then half the body (the vector prefix counts towards it).
            let half = (BYTES_PREFIX_LEN - HEADER_LEN + n) / 2;
            let prefix = bytes_prefix(n, MessageType::Response);
            let from_prefix = half.min(BYTES_PREFIX_LEN - HEADER_LEN);
            stream
                .write_all(&prefix[..HEADER_LEN + from_prefix])
                .await?;
            let mut left = half - from_prefix;
            while left > 0 {
                let chunk = left.min(CHUNK);
                stream.write_all(&PATTERN[..chunk]).await?;
                left -= chunk;
            }
            stream.flush().await?;
            return Ok(false);
        }
        Outgoing::Garbage => stream.write_all(&GARBAGE).await?,
        Outgoing::Close => {
            stream.flush().await?;
            return Ok(false);
        }
    }
    stream.flush().await?;
    Ok(true)
}

/// The header and vector prefix of a byte vector of `n` items: 8 bytes of header, then type 4,
/// attribute 0 and the count.
fn bytes_prefix(n: usize, message_type: MessageType) -> [u8; BYTES_PREFIX_LEN] {
    // Invariant: n is at most MAX_BYTES_REPLY, so both fit (eval::byte_count checks).
    let len = u32::try_from(n + BYTES_PREFIX_LEN).unwrap_or(u32::MAX);
    let count = i32::try_from(n).unwrap_or(i32::MAX);
    let mut prefix = [0_u8; BYTES_PREFIX_LEN];
    prefix[..HEADER_LEN].copy_from_slice(&Header::little(message_type, len).to_bytes());
    prefix[HEADER_LEN] = 4;
    prefix[HEADER_LEN + 1] = 0;
    prefix[HEADER_LEN + 2..].copy_from_slice(&count.to_le_bytes());
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_i_mod_256() {
        assert!(
            PATTERN
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 256) as u8)
        );
    }

    #[test]
    fn the_bytes_prefix_is_a_byte_vector_header() {
        // `0x000102` as kdb+ sends it (K3 in kdb-ipc.md §10.2, as a response).
        assert_eq!(
            bytes_prefix(3, MessageType::Response),
            [1, 2, 0, 0, 17, 0, 0, 0, 4, 0, 3, 0, 0, 0]
        );
    }

    #[test]
    fn q_compression_cannot_halve_the_pattern() {
        let mut message = bytes_prefix(CHUNK, MessageType::Response).to_vec();
        message.extend_from_slice(&PATTERN);
        assert_eq!(qgate_ipc::compress(&message), None);
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert!(Header::parse(&GARBAGE, &Limits::default()).is_err());
    }
}
