//! One connection to one upstream replica: the handshake, then whole frames read without losing a
//! byte to cancellation, and requests written.
//!
//! Reads go through a small read-ahead buffer filled with `read_buf`, which keeps whatever a
//! cancelled read had already received: the server waits for an upstream's pushes beside the
//! client's next message and drops that wait when the client's comes first, so every read here
//! must be cancel-safe.

use std::{io, sync::Arc, time::Duration};

use qgate_ipc::{FrameError, HEADER_LEN, Header, Limits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    replica::{ConnectionCount, Replica},
    stream::{self, Stream, TlsClient},
};

/// The capability qgate asks an upstream for: 3, messages up to 2 GB with compression, which
/// every kdb+ since 3.0 answers.
const CAPABILITY: u8 = 3;

/// How much is read from the socket at a time while looking for a header or a small frame.
/// Small replies arrive whole in one read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The read-ahead buffer kept between messages: a connection that read a large frame gives the
/// memory back, so an idle pinned client costs a small buffer, not its largest reply.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// The header limit used to read upstream frames: the wire format's own, since the reply limit is
/// checked by the caller with its own error.
const FRAME_LIMITS: Limits = Limits {
    max_message_bytes: u32::MAX as usize,
    // Frames are forwarded as they came, never decompressed here.
    max_expansion: usize::MAX,
};

/// Why talking to an upstream replica failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The connection or its handshake took longer than `connect_timeout`.
    #[error("no connection within {0:?} (connect_timeout)")]
    ConnectTimeout(Duration),
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The upstream closed the connection instead of answering the handshake.
    #[error("the upstream refused the login of user {user:?}")]
    LoginRefused {
        /// The user qgate logged in as.
        user: String,
    },
    /// The upstream closed the connection.
    #[error("the upstream closed the connection")]
    Closed,
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The upstream sent bytes that are not q IPC.
    #[error("the upstream sent bytes that are not q IPC: {0}")]
    Garbage(#[from] FrameError),
}

/// A user name and password to log in with.
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) user: Vec<u8>,
    pub(crate) password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

/// A live connection to one replica.
pub(crate) struct UpstreamConn {
    stream: Stream,
    /// Bytes read ahead; `buffer[start..]` is unread.
    buffer: Vec<u8>,
    start: usize,
    /// The replica, for its counters and for messages.
    pub(crate) replica: Arc<Replica>,
    /// What is still to come from the upstream for a request already sent: a connection is reused
    /// only once this is `None`.
    pub(crate) pending: Pending,
    /// Counts this connection in the replica's status; `None` for a health check's.
    _count: Option<ConnectionCount>,
}

/// What a connection still owes for a request it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// The rest of a reply whose header was read: this many bytes.
    Body(usize),
    /// Nothing: the connection can take a request.
    None,
    /// A whole reply, and whatever pushes come before it.
    Reply,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("replica", &self.replica.address)
            .finish_non_exhaustive()
    }
}

impl UpstreamConn {
    /// Connects to `replica` and logs in, all within `timeout`. A `counted` connection shows in
    /// the replica's status; a health check's is not.
    pub(crate) async fn connect(
        replica: Arc<Replica>,
        tls: Option<&TlsClient>,
        login: &Login,
        timeout: Duration,
        counted: bool,
    ) -> Result<Self, UpstreamError> {
        let connect = async {
            let mut stream = stream::open(&replica.address, tls)
                .await
                .map_err(UpstreamError::Connect)?;
            let mut handshake = Vec::with_capacity(login.user.len() + 8);
            handshake.extend_from_slice(&login.user);
            if let Some(password) = &login.password {
                handshake.push(b':');
                handshake.extend_from_slice(password);
            }
            handshake.extend_from_slice(&[CAPABILITY, 0]);
            stream.write_all(&handshake).await?;
            stream.flush().await?;
            let mut reply = [0u8; 1];
            let refused = || UpstreamError::LoginRefused {
                user: String::from_utf8_lossy(&login.user).into_owned(),
            };
            match stream.read(&mut reply).await {
                Ok(0) => return Err(refused()),
                Ok(_) => {}
                // A refusal over TLS can arrive as a reset or an unclean close.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Err(refused());
                }
                Err(error) => return Err(error.into()),
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(timeout))??;
        Ok(Self {
            _count: counted.then(|| ConnectionCount::new(&replica)),
            stream,
            buffer: Vec::new(),
            start: 0,
            replica,
            pending: Pending::None,
        })
    }

    /// Writes bytes and flushes them.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next frame's header, read but not consumed. Cancel-safe.
    pub(crate) async fn peek_header(&mut self) -> Result<Header, UpstreamError> {
        self.fill_to(HEADER_LEN).await?;
        let header = Header::parse(self.unread(), &FRAME_LIMITS)?;
        // Invariant: `fill_to` buffered a whole header, so parse never asks for more.
        header.ok_or(UpstreamError::Closed)
    }

    /// The first `n` bytes of the next frame, read but not consumed (header included). Cancel-safe.
    pub(crate) async fn peek(&mut self, n: usize) -> Result<&[u8], UpstreamError> {
        self.fill_to(n).await?;
        Ok(self.unread().get(..n).unwrap_or_default())
    }

    /// The next frame, whole, consumed. Cancel-safe. The caller has checked its size.
    pub(crate) async fn read_frame(&mut self) -> Result<Vec<u8>, UpstreamError> {
        let header = self.peek_header().await?;
        let len = header.len();
        self.fill_to(len).await?;
        let frame = self.unread().get(..len).unwrap_or_default().to_vec();
        self.consume(len);
        Ok(frame)
    }

    /// Moves up to `max` bytes of the stream into `out` (appending): first what is read ahead, then
    /// at most one read from the socket. Returns how many; never 0 (the end of the stream is
    /// [`UpstreamError::Closed`]). Cancel-safe.
    pub(crate) async fn read_into(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, UpstreamError> {
        let buffered = self.unread().len().min(max);
        if buffered > 0 {
            out.extend_from_slice(self.unread().get(..buffered).unwrap_or_default());
            self.consume(buffered);
            return Ok(buffered);
        }
        out.reserve(max);
        let read = (&mut self.stream).take(max as u64).read_buf(out).await?;
        if read == 0 {
            return Err(UpstreamError::Closed);
        }
        Ok(read)
    }

    /// Reads and drops `n` bytes of the stream.
    pub(crate) async fn discard(&mut self, mut n: usize) -> Result<(), UpstreamError> {
        let mut scratch = Vec::with_capacity(READ_CHUNK_BYTES.min(n));
        while n > 0 {
            scratch.clear();
            n -= self
                .read_into(&mut scratch, n.min(READ_CHUNK_BYTES))
                .await?;
        }
        Ok(())
    }

    /// Whatever the upstream sent that is already buffered or readable without waiting: pushes
    /// that arrived on an idle pooled connection. Returns the whole frames found, dropping none of
    /// a partial one.
    pub(crate) fn take_ready_frames(&mut self) -> Result<Vec<Vec<u8>>, UpstreamError> {
        let mut frames = Vec::new();
        while let Some(header) = Header::parse(self.unread(), &FRAME_LIMITS)? {
            let len = header.len();
            let Some(frame) = self.unread().get(..len) else {
                break;
            };
            frames.push(frame.to_vec());
            self.consume(len);
        }
        Ok(frames)
    }

    /// Polls the socket once for bytes that are already there, without waiting.
    /// Returns `Err(Closed)` when the upstream has closed the connection.
    pub(crate) fn poll_ready_bytes(&mut self) -> Result<(), UpstreamError> {
        use std::task::{Context, Poll, Waker};
        self.compact();
        self.buffer.reserve(READ_CHUNK_BYTES);
        let mut context = Context::from_waker(Waker::noop());
        loop {
            let read = {
                let future = self.stream.read_buf(&mut self.buffer);
                let mut future = std::pin::pin!(future);
                future.as_mut().poll(&mut context)
            };
            match read {
                Poll::Ready(Ok(0)) => return Err(UpstreamError::Closed),
                Poll::Ready(Ok(_)) => {
                    if self.buffer.len() == self.buffer.capacity() {
                        self.buffer.reserve(READ_CHUNK_BYTES);
                    }
                }
                Poll::Ready(Err(error)) => return Err(error.into()),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// Shuts the connection down politely; errors do not matter, it is going away.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.stream.shutdown()).await;
    }

    /// Gives back a large read-ahead buffer once it is empty.
    pub(crate) fn shrink(&mut self) {
        if self.unread().is_empty() && self.buffer.capacity() > IDLE_BUFFER_BYTES {
            self.buffer = Vec::new();
            self.start = 0;
        }
    }

    fn unread(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }

    /// Reads until at least `n` bytes are unread. Cancel-safe: what a read received stays in the
    /// buffer.
    async fn fill_to(&mut self, n: usize) -> Result<(), UpstreamError> {
        while self.unread().len() < n {
            self.compact();
            let want = (n - self.buffer.len()).max(READ_CHUNK_BYTES);
            self.buffer.reserve(want);
            let read = self.stream.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return Err(UpstreamError::Closed);
            }
        }
        Ok(())
    }
}
