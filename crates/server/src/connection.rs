//! Bytes to messages over one stream: the handshake, then whole frames, each checked against the
//! limits before a byte of it is buffered, and each large one charged to the memory budget as
//! its body arrives.
//!
//! A [`Connection`] owns the stream and a small read-ahead buffer.
//! Reading follows the codec's contract: a clean end of stream where a handshake or a message
//! would start is `Ok(None)`; an end of stream in the middle of one, a bad header, a handshake
//! without end, or a peer that stops for longer than a timeout is an error that names what
//! happened.
//!
//! Three timeouts bound every await on the peer:
//!
//! - `idle_timeout` (off by default): between messages, and in the middle of one;
//! - `body_timeout`: in the middle of a message, whatever `idle_timeout` says, since a client
//!   that has started a message has no reason to stop;
//! - `write_timeout`: every write, whatever `idle_timeout` says, so that a client that stops
//!   reading its replies is closed rather than left holding them.
//!
//! Each counts from the last progress, so a slow client that keeps going is never cut off.
//!
//! The stream is generic: the plain and the TLS paths are two instances of the same code.

use std::{io, sync::Arc, task::Poll, time::Duration};

use qgate_ipc::{Close, FrameError, HEADER_LEN, HandshakeError, Header, Limits, handshake};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    budget::{BudgetExhausted, CHARGED_MIN_BYTES, Charge, MemoryBudget},
    buffers::BufferPool,
    options::ServerLimits,
};

/// How much is read from the socket at a time while looking for a header or a handshake's end.
///
/// Small messages (most queries) arrive whole in one read, several pipelined ones together; a
/// large body is read straight into its own buffer instead (see [`Connection::read_frame`]).
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// How much a frame's body is read at a time.
///
/// The buffer grows with what the peer actually sends, never by what its header claims: a client
/// that claims 256 MiB and then sends ten bytes costs a few KiB, not 256 MiB.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// How much of a response is written at a time, each part within the write timeout.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// How long closing the write side may take.
///
/// 1 s: a TLS close sends a `close_notify`, which a client that reads nothing never takes; the
/// connection is going away either way, and its task must not wait on the client to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Why a read or a write on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// The peer sent a header that is not q IPC, or that claims more than the limit.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The peer's handshake cannot be accepted.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer stopped longer than a limit allows; the name of the limit.
    #[error("no progress within {limit} ({after:?})")]
    Timeout {
        /// The limit's name, as in the configuration.
        limit: &'static str,
        /// Its value.
        after: Duration,
    },
    /// The peer closed the stream in the middle of a handshake or a message.
    #[error("connection closed in the middle of a {0}")]
    Truncated(&'static str),
}

impl ConnectionError {
    /// The error as an I/O error, for a caller that speaks `io::Error`.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Self::Io(error) => error,
            Self::Timeout { .. } => io::Error::new(io::ErrorKind::TimedOut, self.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }

    /// The name of the limit this error enforces, if it enforces one.
    pub(crate) fn limit(&self) -> Option<&'static str> {
        match self {
            Self::Frame(error) => match Close::from(error) {
                Close::OverLimit(limit) => Some(limit),
                Close::BadMessage | Close::Silently => None,
            },
            Self::Handshake(HandshakeError::TooLong { .. }) => Some("max_handshake_bytes"),
            Self::Timeout { limit, .. } => Some(limit),
            Self::Handshake(_) | Self::Io(_) | Self::Truncated(_) => None,
        }
    }
}

/// A received frame, as it came off the wire (still compressed if it was), with the memory
/// budget its buffer holds.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) header: Header,
    pub(crate) bytes: Vec<u8>,
    /// The budget charged for `bytes`: nothing for a frame under [`CHARGED_MIN_BYTES`].
    pub(crate) charge: Charge,
}

/// What arrived: a frame, or one whose body was read past and dropped because the memory budget
/// could not hold it (the stream is still at a frame boundary, so the connection can go on).
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Frame),
    Refused {
        header: Header,
        error: BudgetExhausted,
    },
}

/// What a client opened its connection with.
#[derive(Debug)]
pub(crate) enum Opening {
    /// A q handshake.
    Handshake(handshake::Handshake),
    /// An HTTP request, still in the read-ahead buffer.
    Http,
}

/// How long each kind of await on the peer may make no progress.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    idle: Option<Duration>,
    body: Duration,
    write: Duration,
}

impl Timeouts {
    /// The limit on a read: between messages only `idle_timeout`, in the middle of one the
    /// shorter of it and `body_timeout`.
    fn read(&self, mid_message: bool) -> Option<(Duration, &'static str)> {
        let idle = self.idle.map(|after| (after, "idle_timeout"));
        if !mid_message {
            return idle;
        }
        let body = (self.body, "body_timeout");
        Some(match idle {
            Some(idle) if idle.0 <= body.0 => idle,
            _ => body,
        })
    }

    fn write(&self) -> Option<(Duration, &'static str)> {
        Some((self.write, "write_timeout"))
    }
}

/// A client's byte stream: plain TCP, or TLS over it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket itself, when the client's bytes go on it as they are (not over TLS).
    fn tcp(&self) -> Option<&tokio::net::TcpStream>;
}

impl ClientStream for tokio::net::TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

/// One client's stream, with what has been read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    stream: S,
    /// Bytes read ahead: the start of the next message (after the handshake, the bytes that
    /// followed its NUL), or several small pipelined messages. `buffer[start..]` is unread.
    buffer: Vec<u8>,
    /// Where the unread bytes of `buffer` begin: frames are copied out of the buffer and the
    /// offset moves past them, so a read holding many pipelined messages is not shifted once per
    /// message (which made ingesting small messages quadratic in the read size).
    start: usize,
    /// The header of the next frame, once parsed, until its frame is taken: each header is
    /// parsed once, whether the frame then comes from the buffer or from the stream.
    header: Option<Header>,
    /// The limits checked against each header.
    limits: Limits,
    timeouts: Timeouts,
    /// Where the buffer of a large frame comes from.
    pool: Arc<BufferPool>,
    /// What a large frame's buffer is charged to.
    budget: MemoryBudget,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub(crate) fn new(
        stream: S,
        limits: &ServerLimits,
        pool: Arc<BufferPool>,
        budget: MemoryBudget,
    ) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            start: 0,
            header: None,
            limits: limits.codec(),
            timeouts: Timeouts {
                idle: limits.idle_timeout,
                body: limits.body_timeout,
                write: limits.write_timeout,
            },
            pool,
            budget,
        }
    }

    /// The stream, for writing to it directly: every write of this connection is flushed
    /// before the call that made it returns, so nothing is waiting in user space.
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// How long one write may wait for the peer to read.
    pub(crate) fn write_timeout(&self) -> Duration {
        self.timeouts.write
    }

    /// Reads what the client opens with: a q handshake, or (when `http` is on) the start of an
    /// HTTP request, told apart by its first bytes (`GET `, `POST `, ...). The bytes of an HTTP
    /// request stay buffered, for [`Connection::into_parts`].
    ///
    /// Returns `Ok(None)` when the peer closes before sending a byte.
    pub(crate) async fn read_opening(
        &mut self,
        max_bytes: usize,
        http: bool,
    ) -> Result<Option<Opening>, ConnectionError> {
        if http {
            loop {
                match crate::tls::classify(self.unread()) {
                    Some(crate::tls::Sniffed::Http) => return Ok(Some(Opening::Http)),
                    Some(_) => break,
                    None => {
                        // Too few bytes to tell (a prefix of a method, or none yet).
                        if self.fill(READ_CHUNK_BYTES, None).await? == 0 {
                            return self.end_of_stream("handshake");
                        }
                    }
                }
            }
        }
        Ok(self
            .read_handshake(max_bytes)
            .await?
            .map(Opening::Handshake))
    }

    /// The stream and the bytes read ahead of it, for a connection that leaves q (HTTP).
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        let unread = self.unread().to_vec();
        (self.stream, unread)
    }

    /// Reads the handshake: the bytes up to the first NUL.
    ///
    /// Anything after the NUL stays buffered as the start of the first message. The caller bounds
    /// the time this takes (`handshake_timeout`).
    ///
    /// Returns `Ok(None)` when the peer closes before sending a byte.
    pub(crate) async fn read_handshake(
        &mut self,
        max_bytes: usize,
    ) -> Result<Option<handshake::Handshake>, ConnectionError> {
        loop {
            if let Some((handshake, used)) = handshake::parse(&self.buffer, max_bytes)? {
                self.buffer.drain(..used);
                return Ok(Some(handshake));
            }
            // Never read more than the limit lets through, so a client that never sends a NUL
            // grows the buffer to the limit and no further.
            let room = max_bytes.saturating_sub(self.buffer.len()).max(1);
            if self.fill(room.min(READ_CHUNK_BYTES), None).await? == 0 {
                return self.end_of_stream("handshake");
            }
        }
    }

    /// Reads one whole frame.
    ///
    /// The header is checked against the limits before any of the body is buffered; the body
    /// buffer grows only as bytes arrive, and for a large frame only as far as the memory budget
    /// lets it within [`MemoryBudget::WAIT`] (past that, the rest of the body is read and dropped, and
    /// the frame is [`Incoming::Refused`]).
    ///
    /// Returns `Ok(None)` when the peer closes cleanly between messages.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Incoming>, ConnectionError> {
        let Some(header) = self.read_header().await? else {
            return Ok(None);
        };
        if let Some(frame) = self.take_buffered(header) {
            return Ok(Some(Incoming::Frame(frame)));
        }
        self.read_body(header).await.map(Some)
    }

    /// The next frame if the read-ahead buffer holds all of it, without touching the stream:
    /// pipelined small messages are taken from one read this way, without a trip through the
    /// runtime each.
    ///
    /// # Errors
    ///
    /// A bad header, as [`Connection::read_frame`].
    pub(crate) fn buffered_frame(&mut self) -> Result<Option<Incoming>, ConnectionError> {
        let header = match self.header {
            Some(header) => header,
            None => match Header::parse(self.unread(), &self.limits)? {
                Some(header) => header,
                None => return Ok(None),
            },
        };
        self.header = Some(header);
        Ok(self.take_buffered(header).map(Incoming::Frame))
    }

    /// The next frame's header: the one already parsed, or one read and parsed now.
    async fn read_header(&mut self) -> Result<Option<Header>, ConnectionError> {
        if let Some(header) = self.header {
            return Ok(Some(header));
        }
        while self.unread().len() < HEADER_LEN {
            self.compact();
            let mid_message = !self.buffer.is_empty();
            if self
                .fill(READ_CHUNK_BYTES, self.timeouts.read(mid_message))
                .await?
                == 0
            {
                return self.end_of_stream("message header");
            }
        }
        let Some(header) = Header::parse(self.unread(), &self.limits)? else {
            // Invariant: the loop above buffered a whole header, so parse never asks for more.
            return Err(ConnectionError::Truncated("message header"));
        };
        self.header = Some(header);
        Ok(Some(header))
    }

    /// The frame of `header` out of the read-ahead buffer, if the buffer holds all of it.
    ///
    /// Such a frame is at most a read's worth (a few KiB), so it is not charged.
    fn take_buffered(&mut self, header: Header) -> Option<Frame> {
        let bytes = self.unread().get(..header.len())?.to_vec();
        self.header = None;
        self.start += header.len();
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        Some(Frame {
            header,
            bytes,
            charge: self.budget.empty(),
        })
    }

    /// Reads the rest of the frame of `header`, whose start is in the read-ahead buffer, straight
    /// into the frame's own buffer, never past its end, so that the read-ahead buffer stays small.
    /// A large frame goes into a buffer the pool already holds, if it has one.
    async fn read_body(&mut self, header: Header) -> Result<Incoming, ConnectionError> {
        self.header = None;
        self.compact();
        let len = header.len();
        let charged = len >= CHARGED_MIN_BYTES;
        let deadline = tokio::time::Instant::now() + MemoryBudget::WAIT;
        let mut charge = self.budget.empty();
        let mut frame = Vec::new();
        if charged {
            // A kept buffer comes with the charge for all of its capacity.
            (frame, charge) = self.pool.take(len);
        }
        if frame.capacity() == 0 {
            frame = std::mem::take(&mut self.buffer);
        } else {
            frame.extend_from_slice(&self.buffer);
            self.buffer.clear();
        }
        if charged
            && let Err(error) = charge
                .grow(frame.capacity().saturating_sub(charge.bytes()), deadline)
                .await
        {
            return self.refuse(header, frame, error).await;
        }
        while frame.len() < len {
            let want = (len - frame.len()).min(BODY_CHUNK_BYTES);
            if frame.capacity() - frame.len() < want {
                // Double, as a `Vec` would, but never past the frame, and charge first.
                let target = (frame.capacity() * 2).max(frame.len() + want).min(len);
                if charged
                    && let Err(error) = charge
                        .grow(target.saturating_sub(charge.bytes()), deadline)
                        .await
                {
                    return self.refuse(header, frame, error).await;
                }
                frame.reserve_exact(target - frame.len());
            }
            let stream = &mut self.stream;
            let read = with_timeout(
                self.timeouts.read(true),
                stream.take(want as u64).read_buf(&mut frame),
            )
            .await?;
            if read == 0 {
                return Err(ConnectionError::Truncated("message"));
            }
        }
        Ok(Incoming::Frame(Frame {
            header,
            bytes: frame,
            charge,
        }))
    }

    /// Drops what was read of a frame the budget cannot hold, reads the rest of it past, and
    /// reports the refusal; the stream is then at the next frame.
    async fn refuse(
        &mut self,
        header: Header,
        frame: Vec<u8>,
        error: BudgetExhausted,
    ) -> Result<Incoming, ConnectionError> {
        let mut left = header.len() - frame.len();
        self.pool.put(frame);
        let mut scratch = vec![0u8; BODY_CHUNK_BYTES];
        while left > 0 {
            let want = left.min(scratch.len());
            let stream = &mut self.stream;
            let read =
                with_timeout(self.timeouts.read(true), stream.read(&mut scratch[..want])).await?;
            if read == 0 {
                return Err(ConnectionError::Truncated("message"));
            }
            left -= read;
        }
        Ok(Incoming::Refused { header, error })
    }

    /// Resolves when the peer has closed its side of the stream; pending while it is open.
    ///
    /// Bytes that arrive meanwhile are kept for the next [`Connection::read_frame`], and once
    /// some are buffered this stays pending (the peer is still there, talking). Cancel-safe.
    pub(crate) async fn peer_closed(&mut self) {
        if !self.unread().is_empty() {
            return std::future::pending().await;
        }
        self.compact();
        self.buffer.reserve(READ_CHUNK_BYTES);
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }

    /// The bytes read ahead and not yet used.
    fn unread(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    /// Moves the unread bytes to the front of the buffer, before reading more: at most one
    /// partial message, so this costs less than the message itself.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }

    /// What the end of the stream means here: a clean close when nothing of the next `what`
    /// has arrived, a truncated one otherwise.
    fn end_of_stream<T>(&self, what: &'static str) -> Result<Option<T>, ConnectionError> {
        if self.unread().is_empty() {
            Ok(None)
        } else {
            Err(ConnectionError::Truncated(what))
        }
    }

    /// Writes the capability byte alone, in its own write, and flushes it: node-q and kdbgo
    /// require the handshake reply to arrive as a read of exactly one byte.
    pub(crate) async fn write_capability(&mut self, byte: u8) -> Result<(), ConnectionError> {
        self.write_message(&[byte]).await
    }

    /// Writes a whole encoded message and flushes it.
    pub(crate) async fn write_message(&mut self, message: &[u8]) -> Result<(), ConnectionError> {
        self.write_part(message).await?;
        self.flush().await
    }

    /// Writes part of a message, without flushing: a message can go out as a sequence of parts
    /// (a reply streamed from elsewhere), then one [`Connection::flush`].
    ///
    /// Each chunk of it must go out within the write timeout: a client that stops reading its
    /// responses would otherwise hold its task (and its reply's memory) forever once the socket
    /// buffers are full, while a slow client that keeps reading a large response is not cut off.
    async fn write_part(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        let stream = &mut self.stream;
        for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
            with_timeout(self.timeouts.write(), stream.write_all(chunk)).await?;
        }
        Ok(())
    }

    /// Flushes what was written, within the write timeout.
    async fn flush(&mut self) -> Result<(), ConnectionError> {
        with_timeout(self.timeouts.write(), self.stream.flush()).await
    }

    /// Shuts the write side down so the peer sees the end of the stream at once, within
    /// [`SHUTDOWN_WAIT`]; errors are of no interest, the connection is going away.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.stream.shutdown()).await;
    }

    /// Reads at most `max` more bytes into the read-ahead buffer, within `limit`. Returns how
    /// many were read; 0 is the end of the stream.
    async fn fill(
        &mut self,
        max: usize,
        limit: Option<(Duration, &'static str)>,
    ) -> Result<usize, ConnectionError> {
        self.buffer.reserve(max);
        let stream = &mut self.stream;
        let buffer = &mut self.buffer;
        with_timeout(limit, stream.take(max as u64).read_buf(buffer)).await
    }
}

/// Runs `io` within `limit` (a duration and its name), if there is one.
async fn with_timeout<T>(
    limit: Option<(Duration, &'static str)>,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T, ConnectionError> {
    let Some((after, limit)) = limit else {
        return Ok(io.await?);
    };
    let mut io = std::pin::pin!(io);
    // Most reads and writes are done at the first poll; only one that has to wait sets a timer (a
    // clock read and an entry in the runtime's timer wheel).
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return Ok(done?);
    }
    match tokio::time::timeout(after, io).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(ConnectionError::Timeout { limit, after }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::duplex;

    /// A connection with `change`'s limits and a pool of kept buffers on its budget, which
    /// `pool` may put buffers in first.
    fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        change: impl FnOnce(&mut ServerLimits),
        pool: impl FnOnce(&BufferPool),
    ) -> Connection<S> {
        let mut limits = ServerLimits::default();
        change(&mut limits);
        let budget = MemoryBudget::new(limits.memory_budget);
        let buffers = BufferPool::new(16 << 20, budget.clone());
        pool(&buffers);
        Connection::new(stream, &limits, buffers, budget)
    }

    /// No buffers kept.
    fn pool(_: &BufferPool) {}

    fn frame(incoming: Option<Incoming>) -> Frame {
        match incoming {
            Some(Incoming::Frame(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn keeps_the_bytes_after_the_handshake() {
        let (mut client, server) = duplex(1024);
        let mut connection = connection(server, |_| {}, pool);
        client
            .write_all(b"u:p\x03\0\x01\x01\0\0\x0a\0\0\0\xff\x01")
            .await
            .unwrap();
        let handshake = connection.read_handshake(64).await.unwrap().unwrap();
        assert_eq!(handshake.user, b"u");
        let frame = frame(connection.read_frame().await.unwrap());
        assert_eq!(frame.bytes, b"\x01\x01\0\0\x0a\0\0\0\xff\x01");
        drop(client);
        assert!(connection.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_handshake_without_end_names_its_limit() {
        let (mut client, server) = duplex(1024);
        let mut connection = connection(server, |_| {}, pool);
        client.write_all(&[b'a'; 100]).await.unwrap();
        let error = connection.read_handshake(64).await.unwrap_err();
        assert!(
            matches!(
                error,
                ConnectionError::Handshake(HandshakeError::TooLong { limit: 64 })
            ),
            "{error}"
        );
        assert_eq!(error.limit(), Some("max_handshake_bytes"));
    }

    #[tokio::test]
    async fn a_large_frame_is_read_into_a_pooled_buffer_and_charged() {
        let (mut client, server) = duplex(64 * 1024);
        let mut connection = connection(server, |_| {}, |pool| pool.put(vec![9; 4 << 20]));
        let len = 3_000_000u32;
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend((0..len - 8).map(|i| i as u8));
        let mut both = bytes.clone();
        both.extend_from_slice(&bytes);
        let writer = tokio::spawn(async move { client.write_all(&both).await });
        let first = frame(connection.read_frame().await.unwrap());
        assert_eq!(first.bytes, bytes);
        assert!(
            first.bytes.capacity() >= 4 << 20,
            "the pooled buffer was used"
        );
        assert!(first.charge.bytes() >= first.bytes.capacity());
        connection.pool.put(first.bytes);
        let second = frame(connection.read_frame().await.unwrap());
        assert_eq!(second.bytes, bytes);
        assert!(second.charge.bytes() >= len as usize);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_large_claim_is_refused_before_the_body() {
        let (mut client, server) = duplex(1024);
        let mut connection = connection(server, |l| l.max_message_bytes = 1 << 20, pool);
        client
            .write_all(&[1, 1, 0, 0, 0, 0, 0, 0x80])
            .await
            .unwrap();
        let error = connection.read_frame().await.unwrap_err();
        assert_eq!(error.limit(), Some("max_message_bytes"));
    }

    #[tokio::test]
    async fn a_body_larger_than_a_chunk_arrives_whole() {
        let (mut client, server) = duplex(4096);
        let mut connection = connection(server, |_| {}, pool);
        let len = 300_000u32;
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.resize(len as usize, 7);
        let expect = bytes.clone();
        let writer = tokio::spawn(async move { client.write_all(&bytes).await });
        assert_eq!(frame(connection.read_frame().await.unwrap()).bytes, expect);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_over_the_budget_is_read_past_and_refused() {
        let (mut client, server) = duplex(64 * 1024);
        let mut connection = connection(
            server,
            |l| {
                l.memory_budget = 1 << 20;
                l.max_message_bytes = 1 << 20;
            },
            pool,
        );
        // The budget is held elsewhere, so the frame cannot be charged.
        let held = connection.budget.charge(1 << 20).await.unwrap();
        let len = 200_000u32;
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.resize(len as usize, 7);
        // The next frame is read as usual once the refused one is past.
        bytes.extend_from_slice(b"\x01\x01\0\0\x0a\0\0\0\xff\x01");
        let writer = tokio::spawn(async move { client.write_all(&bytes).await });
        match connection.read_frame().await.unwrap() {
            Some(Incoming::Refused { header, error }) => {
                assert_eq!(header.len(), len as usize);
                assert_eq!(error.total, 1 << 20);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(held);
        let next = frame(connection.read_frame().await.unwrap());
        assert_eq!(next.bytes, b"\x01\x01\0\0\x0a\0\0\0\xff\x01");
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_hits_the_body_timeout_with_idle_off() {
        let (mut client, server) = duplex(1024);
        let mut connection = connection(server, |l| l.body_timeout = Duration::from_secs(30), pool);
        client
            .write_all(&[1, 1, 0, 0, 100, 0, 0, 0, 1, 2, 3])
            .await
            .unwrap();
        let error = connection.read_frame().await.unwrap_err();
        assert_eq!(error.limit(), Some("body_timeout"));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_hits_the_write_timeout() {
        let (client, server) = duplex(1024);
        let mut connection = connection(server, |_| {}, pool);
        let error = connection
            .write_message(&vec![0; 1 << 20])
            .await
            .unwrap_err();
        assert_eq!(error.limit(), Some("write_timeout"));
        drop(client);
    }
}
