//! One request on one upstream connection: send it, then relay what comes back to the client,
//! the pushes before the reply and the reply itself, without decoding any of it.
//!
//! ```text
//!   write request ──► read header ─┬─ async (a push) ─► forward to the client, or log and drop
//!        ▲                         ├─ sync (the upstream asks the client) ─► answer it an error
//!        │                         └─ response ─► over max_reply_bytes? read and discard it
//!        │                                        small? read it whole, then write it
//!        └── query_timeout covers everything       large? stream it in chunks
//!            up to the reply's header
//! ```
//!
//! A reply of at most [`WHOLE_REPLY_BYTES`] is read whole before a byte of it is written, so that
//! an upstream dying in the middle of it becomes a q error for the client.
//! A larger one streams through in [`STREAM_CHUNK_BYTES`] pieces: memory stays bounded however
//! large the reply, and an upstream dying in the middle of it leaves the client's stream cut, so
//! the client is closed ([`qgate_hooks::ForwardError::Broken`]).

use std::{task::Poll, time::Duration};

use qgate_hooks::Downstream;
use qgate_ipc::{Endian, HEADER_LEN, MessageType};
use tokio::time::Instant;

use crate::{
    conn::{Pending, UpstreamConn, UpstreamError},
    link::PUSH_BATCH_BYTES,
    splice,
};

/// The largest reply read whole before it is written to the client.
///
/// Most replies (a ping, a row, a small table) are far smaller and arrive in one read; reading
/// them whole lets a failure in the middle of one become a clean q error. 64 KiB a request in
/// flight is the memory this costs.
pub(crate) const WHOLE_REPLY_BYTES: usize = 64 * 1024;

/// How much of a large reply is read from the upstream before it is written to the client.
///
/// Large enough that a 100 MB reply costs a few hundred reads and writes, small enough that ten
/// thousand clients streaming at once hold a few GiB at most.
pub(crate) const STREAM_CHUNK_BYTES: usize = 256 * 1024;

/// What to do with a push that arrives while a request waits for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushes {
    /// A pooled connection has no client of its own: log the push and drop it.
    Drop,
    /// A pinned connection's pushes are its client's, in order.
    Forward,
}

/// How an exchange failed, and what that says about the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The client went away, or its writes failed, while the request was in flight. The
    /// connection's [`UpstreamConn::pending`] says what is still to come.
    #[error("the client went away")]
    ClientGone(#[source] Option<std::io::Error>),
    /// The reply, this large, is over `max_reply_bytes`; it was read and dropped and the
    /// connection can be used again.
    #[error("reply of {size} bytes is over max_reply_bytes ({limit} bytes)")]
    TooLarge {
        /// The reply's size, on the wire or decompressed, whichever is larger.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No reply within `query_timeout`; the connection still owes one and must be dropped.
    #[error("no reply within {0:?} (query_timeout)")]
    Timeout(Duration),
    /// The upstream failed before any of the reply reached the client: the connection is dead.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The upstream failed after part of the reply reached the client: the connection is dead and
    /// the client's stream is cut.
    #[error("{0}")]
    UpstreamMidReply(UpstreamError),
}

/// The limits an exchange runs under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExchangeLimits {
    pub(crate) query_timeout: Option<Duration>,
    pub(crate) max_reply_bytes: u64,
}

/// Sends `frame` (a sync request) on `conn` and relays the reply to `client`.
pub(crate) async fn exchange<D: Downstream>(
    conn: &mut UpstreamConn,
    frame: &[u8],
    client: &mut D,
    pushes: Pushes,
    limits: ExchangeLimits,
) -> Result<(), ExchangeError> {
    let deadline = limits
        .query_timeout
        .map(|after| (Instant::now() + after, after));
    conn.pending = Pending::Reply;
    within(deadline, conn.write(frame))
        .await?
        .map_err(ExchangeError::Upstream)?;
    loop {
        let header = tokio::select! {
            biased;
            header = within(deadline, conn.peek_header()) => header?.map_err(ExchangeError::Upstream)?,
            () = client.gone() => return Err(ExchangeError::ClientGone(None)),
        };
        match header.message_type {
            MessageType::Async => {
                let size = header.len() as u64;
                if size > limits.max_reply_bytes {
                    tracing::warn!(
                        upstream = %conn.replica.service,
                        size,
                        limit = "max_reply_bytes",
                        "upstream push too large; dropped"
                    );
                    within(deadline, discard_frame(conn))
                        .await?
                        .map_err(ExchangeError::Upstream)?;
                    continue;
                }
                let mut push = within(deadline, conn.read_frame())
                    .await?
                    .map_err(ExchangeError::Upstream)?;
                // The pushes right behind it, already read, go out in the same write.
                conn.take_buffered(&mut push, PUSH_BATCH_BYTES, |next| {
                    next.message_type == MessageType::Async
                        && next.len() as u64 <= limits.max_reply_bytes
                });
                match pushes {
                    Pushes::Forward => client
                        .write(&push)
                        .await
                        .map_err(|e| ExchangeError::ClientGone(Some(e)))?,
                    Pushes::Drop => tracing::debug!(
                        upstream = %conn.replica.service,
                        bytes = push.len(),
                        "push on a pooled connection has no client; dropped"
                    ),
                }
            }
            MessageType::Sync => {
                // The upstream asks the client something while the client waits for a reply: the
                // client cannot answer before it has its reply, so the upstream would wait for
                // ever. It gets an error instead.
                within(deadline, discard_frame(conn))
                    .await?
                    .map_err(ExchangeError::Upstream)?;
                let refusal = error_frame(
                    "qgate: a sync request to a client waiting for its own reply is not forwarded",
                );
                within(deadline, conn.write(&refusal))
                    .await?
                    .map_err(ExchangeError::Upstream)?;
                tracing::warn!(
                    upstream = %conn.replica.service,
                    "upstream sent a sync request to a client waiting for a reply; refused"
                );
            }
            MessageType::Response => return relay_reply(conn, client, limits).await,
        }
    }
}

/// Relays the reply whose header is buffered on `conn`.
async fn relay_reply<D: Downstream>(
    conn: &mut UpstreamConn,
    client: &mut D,
    limits: ExchangeLimits,
) -> Result<(), ExchangeError> {
    let header = conn.peek_header().await.map_err(ExchangeError::Upstream)?;
    let len = header.len();
    let mut size = len as u64;
    if header.compressed {
        let start = conn
            .peek(HEADER_LEN + 4)
            .await
            .map_err(ExchangeError::Upstream)?;
        let raw: [u8; 4] = start
            .get(HEADER_LEN..HEADER_LEN + 4)
            .and_then(|raw| raw.try_into().ok())
            .unwrap_or_default();
        let decompressed = match header.endian {
            Endian::Big => u32::from_be_bytes(raw),
            Endian::Little => u32::from_le_bytes(raw),
        };
        size = size.max(decompressed.into());
    }
    let read_limit = limits.query_timeout;
    if size > limits.max_reply_bytes {
        conn.pending = Pending::Body(len);
        step(read_limit, conn.discard(len)).await?;
        conn.pending = Pending::None;
        return Err(ExchangeError::TooLarge {
            size,
            limit: limits.max_reply_bytes,
        });
    }
    if len <= WHOLE_REPLY_BYTES {
        let reply = step(read_limit, conn.read_frame()).await?;
        conn.pending = Pending::None;
        conn.shrink();
        return client
            .write(&reply)
            .await
            .map_err(|e| ExchangeError::ClientGone(Some(e)));
    }
    if conn.tcp().is_some() && client.socket().is_some() {
        // Without a pipe (out of file descriptors), the reply goes through user space.
        if let Ok(pipe) = splice::Pipe::new() {
            return splice_reply(conn, client, len, read_limit, &pipe).await;
        }
    }
    let mut left = len;
    let mut chunk = Vec::with_capacity(STREAM_CHUNK_BYTES);
    let mut written = false;
    while left > 0 {
        conn.pending = Pending::Body(left);
        chunk.clear();
        let read = match step(
            read_limit,
            conn.read_into(&mut chunk, left.min(STREAM_CHUNK_BYTES)),
        )
        .await
        {
            Ok(read) => read,
            Err(ExchangeError::Upstream(error)) if written => {
                return Err(ExchangeError::UpstreamMidReply(error));
            }
            // Part of the reply is out: a q error cannot follow it, the client is cut off.
            Err(ExchangeError::Timeout(after)) if written => {
                return Err(ExchangeError::UpstreamMidReply(stalled(after)));
            }
            Err(error) => return Err(error),
        };
        left -= read;
        conn.pending = if left == 0 {
            Pending::None
        } else {
            Pending::Body(left)
        };
        client
            .write(&chunk)
            .await
            .map_err(|e| ExchangeError::ClientGone(Some(e)))?;
        written = true;
    }
    conn.shrink();
    Ok(())
}

/// Relays the body of a large reply whose header is buffered on `conn` from the upstream's socket
/// to the client's through `pipe`, without copying it through user space: both sockets are plain
/// TCP. What was read ahead (the header at least) goes first, through the client's ordinary write.
///
/// The limits are the streaming path's: each read from the upstream within `read_limit`, each
/// write to the client within its write timeout. Once the header is out, any failure cuts the
/// client off.
async fn splice_reply<D: Downstream>(
    conn: &mut UpstreamConn,
    client: &mut D,
    len: usize,
    read_limit: Option<Duration>,
    pipe: &splice::Pipe,
) -> Result<(), ExchangeError> {
    let ahead = conn.unread().len().min(len);
    client
        .write(conn.unread().get(..ahead).unwrap_or_default())
        .await
        .map_err(|e| ExchangeError::ClientGone(Some(e)))?;
    conn.consume(ahead);
    conn.shrink();
    let mut left = len - ahead;
    let write_timeout = client.write_timeout();
    let mut failure = None;
    // Invariant: the caller checked that both are plain TCP, and nothing changes them meanwhile.
    if let (Some(source), Some(sink)) = (conn.tcp(), client.socket()) {
        let mut in_pipe = 0;
        while left > 0 || in_pipe > 0 {
            if in_pipe == 0 {
                let fill = splice::fill(source, pipe, left.min(pipe.capacity));
                let read = match read_limit {
                    None => fill.await,
                    Some(after) => match tokio::time::timeout(after, fill).await {
                        Ok(read) => read,
                        Err(_) => {
                            failure = Some(ExchangeError::UpstreamMidReply(stalled(after)));
                            break;
                        }
                    },
                };
                match read {
                    Ok(0) => {
                        failure = Some(ExchangeError::UpstreamMidReply(UpstreamError::Closed));
                        break;
                    }
                    Ok(read) => {
                        left -= read;
                        in_pipe += read;
                    }
                    Err(error) => {
                        failure = Some(ExchangeError::UpstreamMidReply(error.into()));
                        break;
                    }
                }
            }
            match tokio::time::timeout(write_timeout, splice::drain(sink, pipe, in_pipe)).await {
                Ok(Ok(written)) => in_pipe -= written,
                Ok(Err(error)) => {
                    failure = Some(ExchangeError::ClientGone(Some(error)));
                    break;
                }
                Err(_) => {
                    failure = Some(ExchangeError::ClientGone(Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the client read nothing for {write_timeout:?} (write_timeout)"),
                    ))));
                    break;
                }
            }
        }
    }
    conn.pending = if left == 0 {
        Pending::None
    } else {
        Pending::Body(left)
    };
    failure.map_or(Ok(()), Err)
}

/// An upstream that stopped sending in the middle of a reply, as the error that cuts the client
/// off.
fn stalled(after: Duration) -> UpstreamError {
    UpstreamError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("sent nothing for {after:?} in the middle of a reply (query_timeout)"),
    ))
}

/// Reads and drops whatever `conn` still owes for a request (its pushes included), so that the
/// connection can take the next one. Bounded by `limit` for each read.
pub(crate) async fn drain(
    conn: &mut UpstreamConn,
    limit: Option<Duration>,
) -> Result<(), ExchangeError> {
    loop {
        match conn.pending {
            Pending::None => return Ok(()),
            Pending::Body(left) => {
                step(limit, conn.discard(left)).await?;
                conn.pending = Pending::None;
            }
            Pending::Reply => {
                let header = step(limit, conn.peek_header()).await?;
                step(limit, discard_frame(conn)).await?;
                if header.message_type == MessageType::Response {
                    conn.pending = Pending::None;
                }
            }
        }
    }
}

/// Reads and drops the frame whose header is next on `conn`.
async fn discard_frame(conn: &mut UpstreamConn) -> Result<(), UpstreamError> {
    let header = conn.peek_header().await?;
    conn.discard(header.len()).await
}

/// A q error response frame, little-endian.
pub(crate) fn error_frame(text: &str) -> Vec<u8> {
    let text = text.as_bytes();
    let len = HEADER_LEN + 1 + text.len() + 1;
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(
        &qgate_ipc::Header::little(MessageType::Response, len as u32).to_bytes(),
    );
    frame.push(qgate_ipc::type_code::ERROR as u8);
    frame.extend_from_slice(text);
    frame.push(0);
    frame
}

/// Runs `io` before `deadline`, when there is one.
async fn within<T>(
    deadline: Option<(Instant, Duration)>,
    io: impl Future<Output = T>,
) -> Result<T, ExchangeError> {
    let Some((at, after)) = deadline else {
        return Ok(io.await);
    };
    let mut io = std::pin::pin!(io);
    // Most reads and writes are done at the first poll; only one that has to wait sets a timer (a
    // clock read and an entry in the runtime's timer wheel). The same in `step`.
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return Ok(done);
    }
    tokio::time::timeout_at(at, io)
        .await
        .map_err(|_| ExchangeError::Timeout(after))
}

/// Runs one read of a reply in progress within `limit`: a reply that stops arriving is a timeout.
async fn step<T>(
    limit: Option<Duration>,
    io: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, ExchangeError> {
    let Some(after) = limit else {
        return io.await.map_err(ExchangeError::Upstream);
    };
    let mut io = std::pin::pin!(io);
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return done.map_err(ExchangeError::Upstream);
    }
    tokio::time::timeout(after, io)
        .await
        .map_err(|_| ExchangeError::Timeout(after))?
        .map_err(ExchangeError::Upstream)
}
