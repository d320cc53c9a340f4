//! One connection to one upstream replica: the handshake, then whole frames read without losing a
//! byte to cancellation, and requests written.
//!
//! Reads go through a read-ahead buffer that keeps whatever a cancelled read had already received:
//! the server waits for an upstream's pushes beside the client's next message and drops that wait
//! when the client's comes first, so every read here must be cancel-safe.
//!
//! The buffer exists only while it holds bytes. A read into an empty one goes through a buffer on
//! the stack and keeps what arrived, so a connection that waits for its next message (every idle
//! pinned client's does, for pushes) holds no heap memory for it.

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
/// Small replies arrive whole in one read, and so does a burst of a few hundred small pushes.
const READ_CHUNK_BYTES: usize = 16 * 1024;

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

    /// Appends to `out` the whole frames already read ahead, back to back, while each passes
    /// `take` and `out` stays within `max` bytes; stops at the first that does not, or that has not
    /// fully arrived. Never waits: a burst of pushes read in one go leaves in one write.
    pub(crate) fn take_buffered(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        take: impl Fn(&Header) -> bool,
    ) {
        let mut taken = 0;
        loop {
            let unread = self.unread().get(taken..).unwrap_or_default();
            // A frame that does not parse is left for the next read to report.
            let Ok(Some(header)) = Header::parse(unread, &FRAME_LIMITS) else {
                break;
            };
            let len = header.len();
            if !take(&header) || out.len() + len > max {
                break;
            }
            let Some(frame) = unread.get(..len) else {
                break;
            };
            out.extend_from_slice(frame);
            taken += len;
        }
        self.consume(taken);
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

    /// Gives back the read-ahead buffer once everything in it has been read: the next read goes
    /// through the stack until something arrives.
    pub(crate) fn shrink(&mut self) {
        if self.unread().is_empty() && self.buffer.capacity() > 0 {
            self.buffer = Vec::new();
            self.start = 0;
        }
    }

    /// The TCP socket, when the connection is plain TCP: for splicing a reply's body straight to
    /// the client. Only once [`UpstreamConn::unread`] is empty are the socket's next bytes the
    /// stream's next bytes.
    pub(crate) fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.stream.tcp()
    }

    /// The bytes read ahead and not yet consumed.
    pub(crate) fn unread(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    /// Marks `n` bytes of [`UpstreamConn::unread`] as read.
    pub(crate) fn consume(&mut self, n: usize) {
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
            let read = if self.buffer.capacity() == 0 {
                self.read_through_stack().await?
            } else {
                self.compact();
                let want = (n - self.buffer.len()).max(READ_CHUNK_BYTES);
                self.buffer.reserve(want);
                self.stream.read_buf(&mut self.buffer).await?
            };
            if read == 0 {
                return Err(UpstreamError::Closed);
            }
        }
        Ok(())
    }

    /// One read into a buffer on the stack, whose bytes then go to the read-ahead buffer (allocated
    /// to fit): waiting costs no heap memory. Cancel-safe: nothing is taken from the socket until
    /// the read completes.
    async fn read_through_stack(&mut self) -> io::Result<usize> {
        use std::mem::MaybeUninit;
        use tokio::io::{AsyncRead, ReadBuf};
        std::future::poll_fn(|context| {
            let mut space = [MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
            let mut read = ReadBuf::uninit(&mut space);
            std::task::ready!(std::pin::Pin::new(&mut self.stream).poll_read(context, &mut read))?;
            self.buffer.extend_from_slice(read.filled());
            std::task::Poll::Ready(Ok(read.filled().len()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use qgate_ipc::MessageType;
    use tokio::net::TcpListener;

    use super::*;
    use crate::options::ServerAddress;

    /// A connection to a socket of the test's own, past the handshake, and that socket.
    async fn pair() -> (UpstreamConn, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let replica = Arc::new(Replica::new(
            "test",
            ServerAddress {
                host: "127.0.0.1".to_owned(),
                port,
            },
        ));
        let login = Login {
            user: b"qgate".to_vec(),
            password: None,
        };
        let accept = async {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut handshake = [0u8; 7];
            peer.read_exact(&mut handshake).await.unwrap();
            peer.write_all(&[CAPABILITY]).await.unwrap();
            peer
        };
        let (conn, peer) = tokio::join!(
            UpstreamConn::connect(replica, None, &login, Duration::from_secs(10), false),
            accept
        );
        (conn.unwrap(), peer)
    }

    /// A frame of `body_len` bytes of body.
    fn frame(message_type: MessageType, body_len: usize) -> Vec<u8> {
        let len = HEADER_LEN + body_len;
        let mut frame = Header::little(message_type, len as u32).to_bytes().to_vec();
        frame.resize(len, 7);
        frame
    }

    #[tokio::test]
    async fn a_burst_of_pushes_is_taken_whole_frames_only() {
        let (mut conn, mut peer) = pair().await;
        let first = frame(MessageType::Async, 20);
        let second = frame(MessageType::Async, 30);
        let reply = frame(MessageType::Response, 10);
        let mut sent = [first.clone(), second.clone(), reply.clone()].concat();
        // Half of one more push: not taken until it has all arrived.
        let last = frame(MessageType::Async, 40);
        sent.extend_from_slice(&last[..25]);
        peer.write_all(&sent).await.unwrap();
        conn.fill_to(sent.len()).await.unwrap();

        let mut out = conn.read_frame().await.unwrap();
        conn.take_buffered(&mut out, 1 << 20, |h| h.message_type == MessageType::Async);
        assert_eq!(
            out,
            [first.clone(), second.clone()].concat(),
            "stops at the response"
        );
        assert_eq!(conn.read_frame().await.unwrap(), reply);

        let mut out = Vec::new();
        conn.take_buffered(&mut out, 1 << 20, |_| true);
        assert!(out.is_empty(), "half a frame is left for the next read");
        peer.write_all(&last[25..]).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap(), last);
    }

    #[tokio::test]
    async fn a_batch_stays_within_its_bound() {
        let (mut conn, mut peer) = pair().await;
        let push = frame(MessageType::Async, 100);
        let sent = push.repeat(5);
        peer.write_all(&sent).await.unwrap();
        conn.fill_to(sent.len()).await.unwrap();
        let mut out = conn.read_frame().await.unwrap();
        conn.take_buffered(&mut out, 3 * push.len(), |_| true);
        assert_eq!(out.len(), 3 * push.len());
        let mut rest = Vec::new();
        conn.take_buffered(&mut rest, 1 << 20, |_| true);
        assert_eq!(rest.len(), 2 * push.len(), "nothing lost between batches");
    }

    #[tokio::test]
    async fn a_waiting_connection_holds_no_read_buffer() {
        let (mut conn, mut peer) = pair().await;
        // A wait for the next frame that is given up, as the server's does when the client speaks
        // first.
        let waited = tokio::time::timeout(Duration::from_millis(20), conn.peek_header()).await;
        assert!(waited.is_err());
        assert_eq!(conn.buffer.capacity(), 0, "waiting allocates nothing");

        let reply = frame(MessageType::Response, 50_000);
        peer.write_all(&reply).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap(), reply);
        conn.shrink();
        assert_eq!(conn.buffer.capacity(), 0, "the buffer goes once it is read");
    }
}
