//! A large reply's body moved from the upstream's socket to the client's without coming up to
//! user space: `splice(2)` into a pipe, and from the pipe into the client's socket, when both
//! sides are plain TCP.
//!
//! Streamed through user space, a reply crosses qgate as two copies, one in and one out; on a
//! 100 MB reply they are most of the gateway's work (about 30 % of its profile). Splicing moves
//! references to the kernel's pages instead. Over TLS the bytes must be decrypted or encrypted
//! here, so the other path stays for that.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
};

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::{io::Interest, net::TcpStream};

/// The pipe's capacity: how much of a reply is between the two sockets at a time.
///
/// 1 MiB: a 100 MB reply takes about a hundred trips through the pipe instead of 1 600 with the
/// default 64 KiB, and one reply in flight holds at most this much kernel memory, four times the
/// user-space path's 256 KiB piece. Linux caps an unprivileged pipe at `fs.pipe-max-size`, 1 MiB
/// by default; a pipe refused this size keeps the one it has.
const PIPE_BYTES: usize = 1 << 20;

/// A pipe, both ends non-blocking.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What it holds at most.
    pub(crate) capacity: usize,
}

impl Pipe {
    /// A new pipe of [`PIPE_BYTES`], or of the system's default size when that is refused.
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = match rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES) {
            Ok(capacity) => capacity,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&write)?,
        };
        Ok(Self {
            read,
            write,
            capacity,
        })
    }
}

/// Moves up to `max` bytes of `source` into the empty `pipe`, waiting until some arrive; `Ok(0)`
/// is the end of the stream. `max` must be at most the pipe's capacity, so that a `WouldBlock`
/// can only be the socket's.
pub(crate) async fn fill(source: &TcpStream, pipe: &Pipe, max: usize) -> io::Result<usize> {
    loop {
        source.readable().await?;
        match source.try_io(Interest::READABLE, || splice(source, &pipe.write, max)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}

/// Moves up to `len` bytes from `pipe`, which holds at least that many, to `sink`, waiting until
/// the socket takes some; returns how many it took.
pub(crate) async fn drain(sink: &TcpStream, pipe: &Pipe, len: usize) -> io::Result<usize> {
    loop {
        sink.writable().await?;
        match sink.try_io(Interest::WRITABLE, || splice(&pipe.read, sink, len)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the client's socket took no bytes",
                ));
            }
            done => return done,
        }
    }
}

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    /// Two connected sockets: (the one written to, the one read from).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (near, far) = tokio::join!(TcpStream::connect(address), listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    #[tokio::test]
    async fn bytes_cross_from_socket_to_socket_whole_and_in_order() {
        // upstream_end ──► source ══pipe══► sink ──► client_end
        let (mut upstream_end, source) = socket_pair().await;
        let (sink, mut client_end) = socket_pair().await;
        let sent: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move { upstream_end.write_all(&sent).await.unwrap() })
        };
        let reader = tokio::spawn(async move {
            let mut received = vec![0; 5_000_000];
            client_end.read_exact(&mut received).await.unwrap();
            received
        });
        let pipe = Pipe::new().unwrap();
        assert!(pipe.capacity >= 64 * 1024);
        let mut left = sent.len();
        while left > 0 {
            let filled = fill(&source, &pipe, left.min(pipe.capacity)).await.unwrap();
            assert!(filled > 0);
            left -= filled;
            let mut in_pipe = filled;
            while in_pipe > 0 {
                in_pipe -= drain(&sink, &pipe, in_pipe).await.unwrap();
            }
        }
        writer.await.unwrap();
        assert!(
            reader.await.unwrap() == sent,
            "the bytes arrive as they were sent"
        );
    }

    #[tokio::test]
    async fn the_end_of_the_source_is_a_fill_of_nothing() {
        let (upstream_end, source) = socket_pair().await;
        drop(upstream_end);
        let pipe = Pipe::new().unwrap();
        assert_eq!(fill(&source, &pipe, 1024).await.unwrap(), 0);
    }
}
