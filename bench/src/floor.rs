//! The floor: the least a q IPC server can do, so that every other target is measured against it.
//!
//! `qgate-bench floor -p 127.0.0.1:0` accepts connections, answers any handshake with the byte 3,
//! then reads each frame's 8-byte header and skips its body without decoding it, and answers each
//! sync frame with one fixed response, the generic null `(::)`.
//! Responses to pipelined sync frames are written together once no more input is buffered.
//! A connection holds no read buffer until its first frame arrives, so an idle connection costs
//! only what tokio and the kernel need for it.
//!
//! It prints `floor listening on ADDR` once bound and stops when its stdin closes, so a harness
//! that dies cannot leak it.

use std::{io::Read as _, net::SocketAddr, sync::OnceLock};

use anyhow::{Context as _, Result};
use qgate_ipc::{K, MessageType};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// The size of a connection's read buffer, once it has one.
const READ_BUFFER: usize = 64 * 1024;

/// The longest handshake the floor reads before it gives up on a client.
const MAX_HANDSHAKE: usize = 64 * 1024;

/// Runs the floor server on `listen` until stdin closes.
pub(crate) fn run(listen: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let (stdin_closed, stdin_closed_rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to listen on {listen}"))?;
        let local = listener.local_addr()?;
        crate::say(&format!("floor listening on {local}"));
        tokio::select! {
            _ = stdin_closed_rx => Ok(()),
            result = accept_loop(listener) => result,
        }
    })?;
    // Connections still open are dropped with the runtime.
    runtime.shutdown_background();
    Ok(())
}

async fn accept_loop(listener: TcpListener) -> Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors or a connection reset before accept: keep serving.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // A client that misbehaves is simply dropped.
            let _ = serve(stream).await;
        });
    }
}

/// The fixed response to every sync frame: `(::)`.
fn response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        // Invariant: the generic null always encodes.
        qgate_ipc::encode_message(MessageType::Response, &K::Null).unwrap_or_default()
    })
}

/// One connection: the handshake, then frames until the client closes.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    // The handshake, read into a small buffer that may also hold the start of the first frame.
    let mut handshake = Vec::with_capacity(64);
    let mut chunk = [0_u8; 256];
    let nul = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        handshake.extend_from_slice(&chunk[..n]);
        if let Some(nul) = handshake.iter().position(|&b| b == 0) {
            break nul;
        }
        if handshake.len() > MAX_HANDSHAKE {
            return Ok(());
        }
    };
    stream.write_all(&[3]).await?;
    let leftover = handshake.split_off(nul + 1);
    drop(handshake);

    // No buffer until the first frame's bytes arrive: an idle connection holds none.
    if leftover.is_empty() {
        stream.readable().await?;
    }
    let mut buf = vec![0_u8; READ_BUFFER.max(leftover.len())];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let (mut start, mut end) = (0, leftover.len());
    let mut out: Vec<u8> = Vec::new();
    loop {
        // A whole header.
        while end - start < 8 {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Ok(());
            }
            end += n;
        }
        let header = &buf[start..start + 8];
        let len_bytes = [header[4], header[5], header[6], header[7]];
        let len = match header[0] {
            0 => u32::from_be_bytes(len_bytes),
            1 => u32::from_le_bytes(len_bytes),
            _ => return Ok(()),
        } as usize;
        if len < 9 {
            return Ok(());
        }
        let sync = header[1] == 1;
        // Skip the body: first what is buffered, then straight from the socket.
        let mut remaining = len - 8;
        start += 8;
        let buffered = remaining.min(end - start);
        start += buffered;
        remaining -= buffered;
        while remaining > 0 {
            let want = remaining.min(buf.len());
            let n = stream.read(&mut buf[..want]).await?;
            if n == 0 {
                return Ok(());
            }
            remaining -= n;
        }
        if start == end {
            start = 0;
            end = 0;
        }
        if sync {
            out.extend_from_slice(response());
        }
        // Answer once nothing more is buffered, so pipelined requests share one write.
        if start == end && !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}
