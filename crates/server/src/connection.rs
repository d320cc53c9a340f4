//! Bytes to messages over one stream: the handshake, then whole frames, each checked against the
//! limits before a byte of it is buffered.
//!
//! A [`Connection`] owns the stream and a small read-ahead buffer.
//! Reading follows the codec's contract: a clean end of stream where a handshake or a message
//! would start is `Ok(None)`; an end of stream in the middle of one, a bad header, a handshake
//! without end, or a peer that goes silent for longer than the idle timeout is an error that
//! names what happened.
//!
//! The stream is generic so that TLS can wrap it later without touching this file.

use std::{io, sync::Arc, time::Duration};

use qgate_ipc::{FrameError, HEADER_LEN, Header, Limits, handshake};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::buffers::BufferPool;

/// How much is read from the socket at a time while looking for a header or a handshake's end.
///
/// Small messages (most queries) arrive whole in one read, several pipelined ones together; a
/// large body is read straight into its own buffer instead (see [`Connection::read_frame`]).
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// How much a frame's buffer grows at a time while its body arrives.
///
/// The buffer grows with what the peer actually sends, never by what its header claims: a client
/// that claims 256 MiB and then sends ten bytes costs this much, not 256 MiB.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// How much of a response is written at a time, each part within the idle timeout.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Why a read or a write on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent a header that is not q IPC, or that claims more than the limit.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The peer sent `max_handshake_bytes` without a NUL.
    #[error("handshake longer than {limit} bytes")]
    HandshakeTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The peer closed the stream in the middle of a handshake or a message.
    #[error("connection closed in the middle of a {0}")]
    Truncated(&'static str),
    /// The peer stayed silent longer than a limit allows; the name of the limit.
    #[error("no progress within {limit} ({after:?})")]
    Timeout {
        /// The limit's name, as in the configuration.
        limit: &'static str,
        /// Its value.
        after: Duration,
    },
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
            Self::Frame(FrameError::TooLarge { .. }) => Some("max_message_bytes"),
            Self::HandshakeTooLong { .. } => Some("max_handshake_bytes"),
            Self::Timeout { limit, .. } => Some(limit),
            Self::Frame(_) | Self::Io(_) | Self::Truncated(_) => None,
        }
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
    /// The limit checked against each header.
    limits: Limits,
    /// How long a read or a write may make no progress; `None` for no limit.
    idle_timeout: Option<Duration>,
    /// Where the buffer of a large frame comes from.
    pool: Arc<BufferPool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub(crate) fn new(
        stream: S,
        limits: Limits,
        idle_timeout: Option<Duration>,
        pool: Arc<BufferPool>,
    ) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            start: 0,
            limits,
            idle_timeout,
            pool,
        }
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
            match handshake::parse(&self.buffer, max_bytes) {
                Ok(Some((handshake, used))) => {
                    self.buffer.drain(..used);
                    return Ok(Some(handshake));
                }
                Ok(None) => {}
                Err(qgate_ipc::HandshakeError::TooLong { limit }) => {
                    return Err(ConnectionError::HandshakeTooLong { limit });
                }
                Err(_) => return Err(ConnectionError::HandshakeTooLong { limit: max_bytes }),
            }
            // Never read more than the limit lets through, so a client that never sends a NUL
            // grows the buffer to the limit and no further.
            let room = max_bytes.saturating_sub(self.buffer.len()).max(1);
            if self.fill(room.min(READ_CHUNK_BYTES)).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated("handshake"))
                };
            }
        }
    }

    /// Reads one whole frame, header included, as it came off the wire (still compressed if it
    /// was).
    ///
    /// The header is checked against the limits before any of the body is buffered, and the body
    /// buffer grows only as bytes arrive.
    /// Each read must make progress within the idle timeout, so a client that stalls in the
    /// middle of a body is closed like one that stalls between messages.
    ///
    /// Returns `Ok(None)` when the peer closes cleanly between messages.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        while self.unread().len() < HEADER_LEN {
            self.compact();
            if self.fill(READ_CHUNK_BYTES).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated("message header"))
                };
            }
        }
        let Some(header) = Header::parse(self.unread(), &self.limits)? else {
            // Invariant: the loop above buffered a whole header, so parse never asks for more.
            return Err(ConnectionError::Truncated("message header"));
        };
        let len = header.len();
        if let Some(frame) = self.buffered_frame()? {
            return Ok(Some(frame));
        }
        // The body is longer than what is buffered: read the rest straight into the frame, never
        // past its end, so the read-ahead buffer stays small. A large frame goes into a buffer
        // the pool already holds, if it has one.
        self.compact();
        let mut frame = self.pool.take(len);
        if frame.capacity() == 0 {
            frame = std::mem::take(&mut self.buffer);
        } else {
            frame.extend_from_slice(&self.buffer);
            self.buffer.clear();
        }
        while frame.len() < len {
            let want = (len - frame.len()).min(BODY_CHUNK_BYTES);
            frame.reserve(want);
            let stream = &mut self.stream;
            let read = with_idle_timeout(self.idle_timeout, async {
                stream.take(want as u64).read_buf(&mut frame).await
            })
            .await??;
            if read == 0 {
                return Err(ConnectionError::Truncated("message"));
            }
        }
        Ok(Some(frame))
    }

    /// The next frame if the read-ahead buffer holds all of it, without touching the stream:
    /// pipelined small messages are taken from one read this way, without a trip through the
    /// runtime each.
    ///
    /// # Errors
    ///
    /// A bad header, as [`Connection::read_frame`].
    pub(crate) fn buffered_frame(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        let Some(header) = Header::parse(self.unread(), &self.limits)? else {
            return Ok(None);
        };
        let len = header.len();
        let Some(frame) = self.unread().get(..len) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.start += len;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        Ok(Some(frame))
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

    /// Writes the capability byte alone, in its own write, and flushes it: node-q and kdbgo
    /// require the handshake reply to arrive as a read of exactly one byte.
    pub(crate) async fn write_capability(&mut self, byte: u8) -> Result<(), ConnectionError> {
        self.write_all(&[byte]).await
    }

    /// Writes a whole encoded message and flushes it.
    pub(crate) async fn write_message(&mut self, message: &[u8]) -> Result<(), ConnectionError> {
        self.write_all(message).await
    }

    /// Shuts the write side down so the peer sees the end of the stream at once; errors are of no
    /// interest, the connection is going away.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// Writes and flushes, each chunk bounded by the idle timeout: a client that stops reading
    /// its responses would otherwise hold its task forever once the socket buffers are full, while
    /// a slow client that keeps reading a large response is not cut off.
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        let stream = &mut self.stream;
        for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
            with_idle_timeout(self.idle_timeout, stream.write_all(chunk)).await??;
        }
        with_idle_timeout(self.idle_timeout, stream.flush()).await??;
        Ok(())
    }

    /// Reads at most `max` more bytes into the read-ahead buffer, bounded by the idle timeout.
    /// Returns how many were read; 0 is the end of the stream.
    async fn fill(&mut self, max: usize) -> Result<usize, ConnectionError> {
        self.buffer.reserve(max);
        let stream = &mut self.stream;
        let buffer = &mut self.buffer;
        let read = with_idle_timeout(self.idle_timeout, async {
            stream.take(max as u64).read_buf(buffer).await
        })
        .await??;
        Ok(read)
    }
}

/// Runs `io` within the idle timeout, if there is one.
async fn with_idle_timeout<T>(
    timeout: Option<Duration>,
    io: impl Future<Output = io::Result<T>>,
) -> Result<io::Result<T>, ConnectionError> {
    match timeout {
        None => Ok(io.await),
        Some(after) => {
            tokio::time::timeout(after, io)
                .await
                .map_err(|_| ConnectionError::Timeout {
                    limit: "idle_timeout",
                    after,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::duplex;

    #[tokio::test]
    async fn keeps_the_bytes_after_the_handshake() {
        let (mut client, server) = duplex(1024);
        let mut connection = Connection::new(server, Limits::default(), None, Arc::default());
        client
            .write_all(b"u:p\x03\0\x01\x01\0\0\x0a\0\0\0\xff\x01")
            .await
            .unwrap();
        let handshake = connection.read_handshake(64).await.unwrap().unwrap();
        assert_eq!(handshake.user, b"u");
        let frame = connection.read_frame().await.unwrap().unwrap();
        assert_eq!(frame, b"\x01\x01\0\0\x0a\0\0\0\xff\x01");
        drop(client);
        assert!(connection.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_large_frame_is_read_into_a_pooled_buffer() {
        let (mut client, server) = duplex(64 * 1024);
        let pool = Arc::new(BufferPool::new(16 << 20));
        pool.put(vec![9; 4 << 20]);
        let mut connection = Connection::new(server, Limits::default(), None, Arc::clone(&pool));
        let len = 3_000_000u32;
        let mut frame = vec![1, 1, 0, 0];
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend((0..len - 8).map(|i| i as u8));
        let mut both = frame.clone();
        both.extend_from_slice(&frame);
        let writer = tokio::spawn(async move { client.write_all(&both).await });
        let first = connection.read_frame().await.unwrap().unwrap();
        assert_eq!(first, frame);
        assert!(first.capacity() >= 4 << 20, "the pooled buffer was used");
        pool.put(first);
        let second = connection.read_frame().await.unwrap().unwrap();
        assert_eq!(second, frame);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_large_claim_is_refused_before_the_body() {
        let (mut client, server) = duplex(1024);
        let mut connection = Connection::new(server, Limits::new(1 << 20), None, Arc::default());
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
        let mut connection = Connection::new(server, Limits::default(), None, Arc::default());
        let len = 300_000u32;
        let mut frame = vec![1, 1, 0, 0];
        frame.extend_from_slice(&len.to_le_bytes());
        frame.resize(len as usize, 7);
        let expect = frame.clone();
        let writer = tokio::spawn(async move { client.write_all(&frame).await });
        assert_eq!(connection.read_frame().await.unwrap().unwrap(), expect);
        writer.await.unwrap().unwrap();
    }
}
