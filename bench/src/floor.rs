//! The floor: the least a q IPC server can do, so that every other target is measured against it.
//!
//! `qgate-bench floor -p 127.0.0.1:0` accepts connections, answers any handshake with the byte 3,
//! then reads each frame's 8-byte header and skips its body without decoding it, and answers each
//! sync frame with one fixed response, the generic null `(::)`.
//! Responses to pipelined sync frames are written together once no more input is buffered.
//! A connection holds no read buffer until its first frame arrives, so an idle connection costs
//! only what tokio and the kernel need for it.
//!
//! Three small sync calls, in little-endian byte order, get other answers, for the scenarios that
//! need the upstream to send more than it receives (a gateway's replies and pushes):
//!
//! | call | answer |
//! |---|---|
//! | `` (`reply;n) `` | a byte vector of `n` bytes, `i mod 256`: its 14-byte prefix, then constant 64 KiB chunks, so it is never built whole |
//! | `` (`publish;n) `` | `n` async `` (`upd;`trade;t) `` messages, `t` a one-row trade table ([`push_message`]), then `(::)` |
//! | `` (`subscribe;n) `` | `(::)`, then the same `n` messages, as a tickerplant answers `.u.sub` and then publishes to an idle subscriber |
//! | `` (`table;n) `` | an `n`-row table of time, sym, price, size and cond ([`trade_table`]), its rows cycling through ten symbols ([`SYMS`]), built once per `n` and then written from memory |
//! | `` (`ticks;n) `` | `(::)`, then `n` async `` (`upd;`trade;t) `` messages, `t` a ten-row [`trade_table`] (a row per symbol), as a tickerplant publishes batches to a subscriber |
//!
//! Recognising them costs the other frames one comparison of lengths: only a sync frame whose
//! body is as long as one of these calls is compared with it.
//!
//! It prints `floor listening on ADDR` once bound and stops when its stdin closes, so a harness
//! that dies cannot leak it.

use std::{
    io::Read as _,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::{Context as _, Result};
use qgate_ipc::{K, MessageType, VectorData};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// The size of a connection's read buffer, once it has one.
const READ_BUFFER: usize = 64 * 1024;

/// The longest handshake the floor reads before it gives up on a client.
const MAX_HANDSHAKE: usize = 64 * 1024;

/// The size of the chunks a `(`reply;n)` is written in, and so all the memory it takes, whatever
/// `n` is. A multiple of 256, so that every chunk holds the same bytes (`i mod 256`) and one
/// constant serves them all; 64 KiB makes a 100 MB reply about 1 500 writes.
const REPLY_CHUNK: usize = 64 * 1024;

/// The largest `n` of `(`reply;n)`: 1 GiB, ten times the reply scenario's and well under the
/// 2 GiB that q's message header can describe without the large-message format.
const MAX_REPLY_BYTES: i64 = 1 << 30;

/// The largest `n` of `(`publish;n)`, `(`subscribe;n)` and `(`ticks;n)`: 100 million pushes, a hundred times the scenario's, so that
/// a mistyped count ends within a minute or so instead of never.
const MAX_PUBLISH: i64 = 100_000_000;

/// The largest `n` of `(`table;n)`: 10 million rows (about 300 MB), ten times the scenario's.
const MAX_TABLE_ROWS: i64 = 10_000_000;

/// The symbols of [`trade_table`]'s rows, in turn: ten, so that one of them is a tenth of the
/// rows, and a user entitled to one sees 10 % of a reply.
pub(crate) const SYMS: [&str; 10] = [
    "AAPL", "MSFT", "GOOG", "AMZN", "META", "NVDA", "TSLA", "IBM", "ORCL", "INTC",
];

/// How many pushes of a `(`publish;n)` go out in one write: about 64 KiB of them, as a
/// tickerplant's socket buffer would take them.
const PUSH_BATCH_BYTES: usize = 64 * 1024;

/// A chunk of a reply's items: byte `i` is `i mod 256`.
static PATTERN: [u8; REPLY_CHUNK] = pattern();

const fn pattern() -> [u8; REPLY_CHUNK] {
    let mut bytes = [0_u8; REPLY_CHUNK];
    let mut i = 0;
    while i < REPLY_CHUNK {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
}

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

/// The q error `'range`, for a call whose `n` is out of bounds.
fn range_error() -> &'static [u8] {
    static ERROR: OnceLock<Vec<u8>> = OnceLock::new();
    ERROR.get_or_init(|| {
        // Invariant: an error with a short text always encodes.
        qgate_ipc::encode_message(MessageType::Response, &K::error("range")).unwrap_or_default()
    })
}

/// The body of the call `` (`name;n) `` without its last 8 bytes, `n`: what a frame's body must
/// start with to be that call.
fn call_head(name: &str) -> Vec<u8> {
    let call = K::list(vec![K::symbol(name), K::long(0)]);
    let mut body = Vec::new();
    // Invariant: a two-item list of a symbol and a long always encodes.
    qgate_ipc::encode(&call, &mut body).unwrap_or_default();
    body.truncate(body.len().saturating_sub(8));
    body
}

/// A call's head (its body without `n`), and the call it is once `n` is read.
type Head = (Vec<u8>, fn(i64) -> Call);

/// The heads of the floor's calls.
fn heads() -> &'static [Head; 5] {
    static HEADS: OnceLock<[Head; 5]> = OnceLock::new();
    HEADS.get_or_init(|| {
        [
            (call_head("reply"), Call::Reply),
            (call_head("publish"), Call::Publish),
            (call_head("subscribe"), Call::Subscribe),
            (call_head("table"), Call::Table),
            (call_head("ticks"), Call::Ticks),
        ]
    })
}

/// The push of the publication scenario: an async `` (`upd;`trade;t) ``, `t` a one-row table of
/// time, sym, price and size, as a tickerplant publishes a trade.
pub(crate) fn push_message() -> Result<Vec<u8>> {
    let table = K::table(
        ["time", "sym", "price", "size"],
        vec![
            K::vector(VectorData::Timestamp(vec![800_000_000_000_000])),
            K::symbols(["AAPL"]),
            K::vector(VectorData::Float(vec![189.5])),
            K::vector(VectorData::Long(vec![100])),
        ],
    );
    let call = K::list(vec![K::symbol("upd"), K::symbol("trade"), table]);
    Ok(qgate_ipc::encode_message(MessageType::Async, &call)?)
}

/// A trade table of `rows` rows: time, sym (cycling through [`SYMS`]), price, size and cond (a
/// char), as an RDB's `trade` holds them.
pub(crate) fn trade_table(rows: usize) -> K {
    let mut syms = qgate_ipc::Symbols::new();
    for i in 0..rows {
        // Invariant: the symbols hold no NUL.
        let _ = syms.push(SYMS[i % SYMS.len()].as_bytes());
    }
    K::table(
        ["time", "sym", "price", "size", "cond"],
        vec![
            K::vector(VectorData::Timestamp(
                (0..rows as i64).map(|i| 800_000_000_000_000 + i).collect(),
            )),
            K::vector(VectorData::Symbol(syms)),
            K::vector(VectorData::Float(
                (0..rows).map(|i| 100.0 + (i % 1000) as f64 / 8.0).collect(),
            )),
            K::vector(VectorData::Long(
                (0..rows as i64).map(|i| 100 * (1 + i % 9)).collect(),
            )),
            K::vector(VectorData::Char((0..rows).map(|i| b"ABC"[i % 3]).collect())),
        ],
    )
}

/// The size of the response to `(`table;n)`, header included, without building it: the
/// header, the table's and its dict's type bytes, the column names, and five vectors.
pub(crate) fn table_reply_len(rows: usize) -> usize {
    const NAMES: usize = 6 + "time sym price size cond ".len();
    const VECTOR: usize = 6;
    let syms: usize = SYMS
        .iter()
        .enumerate()
        .map(|(at, sym)| {
            (sym.len() + 1) * (rows / SYMS.len() + usize::from(at < rows % SYMS.len()))
        })
        .sum();
    8 + 3 + NAMES + VECTOR + 5 * VECTOR + 8 * rows + syms + 8 * rows + 8 * rows + rows
}

/// The push of the ticks scenario: an async `` (`upd;`trade;t) ``, `t` a ten-row
/// [`trade_table`], one row per symbol, as a tickerplant publishes a batch.
pub(crate) fn tick_message() -> Result<Vec<u8>> {
    let call = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        trade_table(SYMS.len()),
    ]);
    Ok(qgate_ipc::encode_message(MessageType::Async, &call)?)
}

/// `push`, repeated to fill about [`PUSH_BATCH_BYTES`]: what one write of a publication sends,
/// and how many pushes that is.
fn batch_of(push: &[u8]) -> (Vec<u8>, usize) {
    let count = (PUSH_BATCH_BYTES / push.len().max(1)).max(1);
    (push.repeat(count), count)
}

/// A batch of [`push_message`]s.
fn push_batch() -> &'static (Vec<u8>, usize) {
    static BATCH: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    // Invariant: the push is a fixed small value, which always encodes.
    BATCH.get_or_init(|| batch_of(&push_message().unwrap_or_default()))
}

/// A batch of [`tick_message`]s.
fn tick_batch() -> &'static (Vec<u8>, usize) {
    static BATCH: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    // Invariant: the tick is a fixed small value, which always encodes.
    BATCH.get_or_init(|| batch_of(&tick_message().unwrap_or_default()))
}

/// The response to `(`table;n)`, built the first time each `n` is asked for and kept: the two
/// sizes a run asks for (its warm-up's and its own) stay in memory, so that what is measured
/// is the writing, not the building. A third size evicts the others.
fn table_reply(rows: usize) -> Arc<Vec<u8>> {
    static BUILT: Mutex<Vec<(usize, Arc<Vec<u8>>)>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, reply)) = built.iter().find(|(n, _)| *n == rows) {
        return Arc::clone(reply);
    }
    let reply = Arc::new(
        qgate_ipc::encode_message(MessageType::Response, &trade_table(rows))
            .unwrap_or_else(|_| range_error().to_vec()),
    );
    if built.len() >= 2 {
        built.clear();
    }
    built.push((rows, Arc::clone(&reply)));
    reply
}

/// What a sync frame asks of the floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// Anything else: `(::)`.
    Other,
    /// `` (`reply;n) ``.
    Reply(i64),
    /// `` (`publish;n) ``.
    Publish(i64),
    /// `` (`subscribe;n) ``.
    Subscribe(i64),
    /// `` (`table;n) ``.
    Table(i64),
    /// `` (`ticks;n) ``.
    Ticks(i64),
}

/// Reads a sync frame's body: one of the floor's calls, or anything else.
fn call(little_endian: bool, body: &[u8]) -> Call {
    if !little_endian {
        return Call::Other;
    }
    heads()
        .iter()
        .filter(|(head, _)| body.len() == head.len() + 8)
        .find_map(|(head, call)| {
            let n = body.strip_prefix(head.as_slice())?;
            Some(call(i64::from_le_bytes(n.try_into().ok()?)))
        })
        .unwrap_or(Call::Other)
}

/// The longest body the floor reads whole to see whether it is one of its calls.
fn longest_call() -> usize {
    heads()
        .iter()
        .map(|(head, _)| head.len() + 8)
        .max()
        .unwrap_or(0)
}

/// Writes `(`reply;n)`'s answer: the header and vector prefix, then the items in chunks.
async fn write_reply(stream: &mut TcpStream, n: i64) -> std::io::Result<()> {
    let Ok(len) = usize::try_from(n) else {
        return stream.write_all(range_error()).await;
    };
    if n > MAX_REPLY_BYTES {
        return stream.write_all(range_error()).await;
    }
    // Header (8 bytes), then the vector's type, attribute and count (6 bytes).
    let total = u32::try_from(14 + len).unwrap_or(u32::MAX);
    let count = u32::try_from(len).unwrap_or(u32::MAX);
    let mut prefix = [0_u8; 14];
    prefix[..4].copy_from_slice(&[1, MessageType::Response as u8, 0, 0]);
    prefix[4..8].copy_from_slice(&total.to_le_bytes());
    prefix[8] = 4;
    prefix[10..14].copy_from_slice(&count.to_le_bytes());
    stream.write_all(&prefix).await?;
    let mut left = len;
    while left > 0 {
        let chunk = left.min(REPLY_CHUNK);
        stream.write_all(&PATTERN[..chunk]).await?;
        left -= chunk;
    }
    Ok(())
}

/// Writes `(`table;n)`'s answer.
async fn write_table(stream: &mut TcpStream, n: i64) -> std::io::Result<()> {
    let Ok(rows) = usize::try_from(n) else {
        return stream.write_all(range_error()).await;
    };
    if n > MAX_TABLE_ROWS {
        return stream.write_all(range_error()).await;
    }
    let reply = tokio::task::spawn_blocking(move || table_reply(rows))
        .await
        .map_err(std::io::Error::other)?;
    stream.write_all(&reply).await
}

/// Writes `(`publish;n)`'s answer (`n` pushes from `batch` in batches, then `(::)`), or with
/// `reply_first` `(`subscribe;n)`'s and `(`ticks;n)`'s (`(::)`, then the pushes).
async fn write_publications(
    stream: &mut TcpStream,
    n: i64,
    batch: &(Vec<u8>, usize),
    reply_first: bool,
) -> std::io::Result<()> {
    let Ok(mut left) = usize::try_from(n) else {
        return stream.write_all(range_error()).await;
    };
    if n > MAX_PUBLISH {
        return stream.write_all(range_error()).await;
    }
    if reply_first {
        stream.write_all(response()).await?;
    }
    let (batch, per_batch) = batch;
    let push_len = batch.len() / per_batch;
    while left > 0 {
        let pushes = left.min(*per_batch);
        stream.write_all(&batch[..pushes * push_len]).await?;
        left -= pushes;
    }
    if !reply_first {
        stream.write_all(response()).await?;
    }
    Ok(())
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
    let longest_call = longest_call();
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
        let little_endian = match header[0] {
            0 => false,
            1 => true,
            _ => return Ok(()),
        };
        let len = if little_endian {
            u32::from_le_bytes(len_bytes)
        } else {
            u32::from_be_bytes(len_bytes)
        } as usize;
        if len < 9 {
            return Ok(());
        }
        let sync = header[1] == 1;
        let mut remaining = len - 8;
        start += 8;
        let mut asked = Call::Other;
        if sync && remaining <= longest_call {
            // A body short enough to be one of the calls: read it whole and look.
            while end - start < remaining {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                let n = stream.read(&mut buf[end..]).await?;
                if n == 0 {
                    return Ok(());
                }
                end += n;
            }
            asked = call(little_endian, &buf[start..start + remaining]);
        }
        // Skip the body: first what is buffered, then straight from the socket.
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
        match asked {
            Call::Other if sync => out.extend_from_slice(response()),
            Call::Other => {}
            Call::Reply(n)
            | Call::Publish(n)
            | Call::Subscribe(n)
            | Call::Table(n)
            | Call::Ticks(n) => {
                // Earlier responses first, in order.
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
                match asked {
                    Call::Reply(_) => write_reply(&mut stream, n).await?,
                    Call::Publish(_) => {
                        write_publications(&mut stream, n, push_batch(), false).await?;
                    }
                    Call::Subscribe(_) => {
                        write_publications(&mut stream, n, push_batch(), true).await?;
                    }
                    Call::Ticks(_) => {
                        write_publications(&mut stream, n, tick_batch(), true).await?;
                    }
                    _ => write_table(&mut stream, n).await?,
                }
            }
        }
        // Answer once nothing more is buffered, so pipelined requests share one write.
        if start == end && !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use qgate_ipc::Atom;

    use super::*;

    /// The body of a sync message, without its header.
    fn body(value: &K) -> Vec<u8> {
        let message = qgate_ipc::encode_message(MessageType::Sync, value).expect("encodes");
        message[8..].to_vec()
    }

    #[test]
    fn recognises_its_calls_and_nothing_else() {
        let reply = body(&K::list(vec![K::symbol("reply"), K::long(100_000_000)]));
        assert_eq!(call(true, &reply), Call::Reply(100_000_000));
        let publish = body(&K::list(vec![K::symbol("publish"), K::long(-3)]));
        assert_eq!(call(true, &publish), Call::Publish(-3));
        let subscribe = body(&K::list(vec![K::symbol("subscribe"), K::long(7)]));
        assert_eq!(call(true, &subscribe), Call::Subscribe(7));
        assert_eq!(subscribe.len(), longest_call());
        // Big-endian bodies, other names, other argument types and the ping are other calls.
        assert_eq!(call(false, &reply), Call::Other);
        let other = body(&K::list(vec![K::symbol("replx"), K::long(1)]));
        assert_eq!(call(true, &other), Call::Other);
        let int = body(&K::list(vec![K::symbol("reply"), K::Atom(Atom::Int(1))]));
        assert_eq!(call(true, &int), Call::Other);
        let ping = body(&K::list(vec![K::symbol("ping"), K::long(42)]));
        assert_eq!(call(true, &ping), Call::Other);
    }

    #[test]
    fn the_pattern_repeats_every_256_bytes() {
        assert!(PATTERN.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(REPLY_CHUNK % 256, 0);
    }

    /// A floor on a loopback port of its own, served by a runtime that lives as long as the
    /// returned value.
    fn floor() -> (tokio::runtime::Runtime, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(accept_loop(listener));
        (runtime, addr)
    }

    #[test]
    fn answers_replies_and_publications_as_the_load_generator_expects() {
        use crate::loadgen::{self, Endpoint, Order};
        let (_runtime, addr) = floor();
        let endpoint = Endpoint::plain(addr);
        let timeout = std::time::Duration::from_secs(20);
        // Sizes around a chunk's edges, and one of several chunks and a part.
        for n in [0, 1, 255, REPLY_CHUNK, 3 * REPLY_CHUNK + 17] {
            let message = loadgen::reply_message(n).expect("encodes");
            loadgen::reply(&endpoint, &message, n, timeout).expect("the reply");
        }
        let push = push_message().expect("encodes");
        let (_, per_batch) = push_batch();
        for n in [0, 1, *per_batch, 2 * per_batch + 1] {
            for order in [Order::PushesFirst, Order::ReplyFirst] {
                let message = loadgen::publish_message(n, order).expect("encodes");
                loadgen::publications(&endpoint, &message, &push, n, order, timeout)
                    .expect("the pushes");
            }
        }
        // The ping still gets `(::)`.
        let mut client = loadgen::Client::connect(&endpoint, timeout).expect("connects");
        client
            .call(&loadgen::ping_message().expect("encodes"))
            .expect("answers");
        assert_eq!(client.last_response_text(), "::");
    }

    #[test]
    fn reads_a_call_split_over_many_writes_and_refuses_counts_out_of_range() {
        use std::io::Write as _;

        use crate::loadgen::{self, Endpoint};
        let (_runtime, addr) = floor();
        let timeout = std::time::Duration::from_secs(20);
        let mut client =
            loadgen::Client::connect(&Endpoint::plain(addr), timeout).expect("connects");
        // A ping and a reply call pipelined, written a byte at a time: the ping's `(::)` comes
        // first, then the vector.
        let mut both = loadgen::ping_message().expect("encodes");
        both.extend(loadgen::reply_message(300).expect("encodes"));
        let mut socket = std::net::TcpStream::connect(addr).expect("connects");
        socket.set_nodelay(true).expect("nodelay");
        socket.write_all(b"bench:bench\x03\x00").expect("handshake");
        for byte in &both {
            socket
                .write_all(std::slice::from_ref(byte))
                .expect("writes");
        }
        let mut reply = vec![0_u8; 10 + 14 + 300];
        std::io::Read::read_exact(&mut socket, &mut [0_u8; 1]).expect("handshake byte");
        std::io::Read::read_exact(&mut socket, &mut reply).expect("both answers");
        assert_eq!(&reply[..10], response());
        assert_eq!(&reply[10 + 8..10 + 14], &[4, 0, 44, 1, 0, 0]);
        assert!(reply[24..].iter().enumerate().all(|(i, &b)| b == i as u8));
        // Counts out of range get q's `'range`.
        for name in ["reply", "publish", "subscribe", "table", "ticks"] {
            for n in [-1, i64::MAX] {
                let call = K::list(vec![K::symbol(name), K::long(n)]);
                let message = qgate_ipc::encode_message(MessageType::Sync, &call).expect("encodes");
                client.call(&message).expect("answers");
                assert_eq!(client.last_response_text(), "'range", "{name} {n}");
            }
        }
    }

    #[test]
    fn the_table_reply_is_as_long_as_said() {
        for rows in [0, 1, 9, 10, 11, 1234] {
            let reply = qgate_ipc::encode_message(MessageType::Response, &trade_table(rows))
                .expect("encodes");
            assert_eq!(table_reply_len(rows), reply.len(), "{rows} rows");
        }
    }

    #[test]
    fn answers_tables_and_ticks_as_the_load_generator_expects() {
        use crate::loadgen::{self, Endpoint, Sees};
        let (_runtime, addr) = floor();
        let endpoint = Endpoint::plain(addr);
        let timeout = std::time::Duration::from_secs(20);
        for rows in [0, 1, 25, 10_000] {
            let message = loadgen::table_message(rows).expect("encodes");
            loadgen::table(&endpoint, &message, rows, Sees::Everything, 0, timeout)
                .expect("the table");
            // The floor sends every row, so a client entitled to one symbol sees too many.
            if rows > 1 {
                let err = loadgen::table(&endpoint, &message, rows, Sees::Only("AAPL"), 0, timeout)
                    .expect_err("more rows than one symbol's");
                assert!(format!("{err:#}").contains("rows"), "{err:#}");
            }
        }
        let (_, per_batch) = tick_batch();
        for n in [0, 1, 2 * per_batch + 1] {
            let message = loadgen::ticks_message(n).expect("encodes");
            loadgen::ticks(&endpoint, &message, n, Sees::Everything, timeout).expect("the ticks");
        }
        let message = loadgen::ticks_message(3).expect("encodes");
        loadgen::ticks(&endpoint, &message, 3, Sees::Only("IBM"), timeout)
            .expect_err("ten rows, not one");
    }

    #[test]
    fn a_symbol_is_a_tenth_of_the_rows() {
        use crate::loadgen::Sees;
        assert_eq!(Sees::Only("AAPL").rows(1_000_000), 100_000);
        assert_eq!(Sees::Only("AAPL").rows(11), 2);
        assert_eq!(Sees::Only("MSFT").rows(11), 1);
        assert_eq!(Sees::Only("XXX").rows(11), 0);
        assert_eq!(Sees::Everything.rows(11), 11);
    }

    #[test]
    fn a_batch_is_whole_pushes() {
        let push = push_message().expect("encodes");
        let (batch, count) = push_batch();
        assert_eq!(batch.len(), push.len() * count);
        assert_eq!(&batch[..push.len()], &push[..]);
        assert_eq!(push[1], MessageType::Async as u8);
    }
}
