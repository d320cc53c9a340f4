//! The load generator: q IPC clients built on qgate-ipc, and one function per scenario.
//!
//! Single-connection scenarios use blocking sockets with `TCP_NODELAY`, the cheapest client there
//! is, so that the client adds as little as possible to what is measured; the 64-connection
//! scenario uses a two-worker tokio runtime.
//! Every loop is bounded by a count and a deadline, and every socket has a read and write timeout,
//! so a target that stalls fails its scenario instead of hanging the run.
//!
//! A TLS target ([`Endpoint::tls`]) is reached through rustls over the same blocking socket: the
//! TLS handshake (a full one every time: the client keeps no sessions to resume), then the q
//! handshake and messages inside it. The 64-connection and idle scenarios speak plain q only.

use std::{
    io::{self, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use qgate_ipc::{Atom, HEADER_LEN, Header, K, Limits, List, MessageType, Vector, VectorData};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Where a target listens, and how to reach it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// The address clients connect to.
    pub(crate) addr: SocketAddr,
    /// For a TLS target: the client configuration, which trusts the bench's CA.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// A plain q target.
    pub(crate) fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }
}

/// A TLS client configuration that trusts the CA certificates in `ca_file` (PEM) and resumes no
/// sessions, so that every connection pays a full handshake.
pub(crate) fn tls_client_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("cannot read {}", ca_file.display()))?
    {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client's byte stream: the socket, or TLS over it.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            Self::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            Self::Tls(stream) => stream.flush(),
        }
    }
}

/// The user and password every target is given: `bench:bench`.
pub(crate) const CREDENTIALS: &[u8] = b"bench:bench";

/// Responses are read with no practical size limit: the targets are trusted.
const RESPONSE_LIMIT: usize = i32::MAX as usize;

/// The small sync call of the ping-pong scenarios: `` (`ping;42) ``.
pub(crate) fn ping_message() -> Result<Vec<u8>> {
    let call = K::list(vec![K::symbol("ping"), K::long(42)]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// The small async message of the ingest scenario: a tickerplant-style update,
/// `` (`upd;`trade;(`AAPL;189.5;100)) ``.
pub(crate) fn ingest_message() -> Result<Vec<u8>> {
    let row = K::list(vec![
        K::symbol("AAPL"),
        K::Atom(Atom::Float(189.5)),
        K::long(100),
    ]);
    let call = K::list(vec![K::symbol("upd"), K::symbol("trade"), row]);
    Ok(qgate_ipc::encode_message(MessageType::Async, &call)?)
}

/// A sync `` (`insert;`trade;t) `` whose table `t` (time, sym, price, size) makes the message about
/// `bytes` long.
pub(crate) fn insert_message(bytes: usize) -> Result<Vec<u8>> {
    const SYMS: [&str; 8] = [
        "AAPL", "MSFT", "GOOG", "AMZN", "META", "NVDA", "TSLA", "IBM",
    ];
    // A row: timestamp 8, symbol about 5, float 8, long 8.
    let rows = (bytes / 29).max(1);
    let times: Vec<i64> = (0..rows as i64)
        .map(|i| 800_000_000_000_000 + i * 1000)
        .collect();
    let syms = K::symbols((0..rows).map(|i| SYMS[i % SYMS.len()]));
    let prices: Vec<f64> = (0..rows).map(|i| 100.0 + (i % 1000) as f64 / 8.0).collect();
    let sizes: Vec<i64> = (0..rows as i64).map(|i| 100 * (1 + i % 50)).collect();
    let table = K::table(
        ["time", "sym", "price", "size"],
        vec![
            K::vector(VectorData::Timestamp(times)),
            syms,
            K::vector(VectorData::Float(prices)),
            K::vector(VectorData::Long(sizes)),
        ],
    );
    let call = K::list(vec![K::symbol("insert"), K::symbol("trade"), table]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// The sync call `` (`reply;n) ``: the floor answers it with a byte vector of `n` bytes.
pub(crate) fn reply_message(n: usize) -> Result<Vec<u8>> {
    let call = K::list(vec![K::symbol("reply"), K::long(i64::try_from(n)?)]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// Whether a call's pushes come before its response or after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// `` (`publish;n) ``: the pushes arrive while the client waits for its response.
    PushesFirst,
    /// `` (`subscribe;n) ``: the response first, then the pushes to an idle client, as a
    /// tickerplant publishes to a subscriber.
    ReplyFirst,
}

/// The sync call `` (`publish;n) `` or `` (`subscribe;n) ``: the floor answers it with `n` async
/// pushes and `(::)`, in `order`.
pub(crate) fn publish_message(n: usize, order: Order) -> Result<Vec<u8>> {
    let name = match order {
        Order::PushesFirst => "publish",
        Order::ReplyFirst => "subscribe",
    };
    let call = K::list(vec![K::symbol(name), K::long(i64::try_from(n)?)]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// The sync call `` (`table;n) ``: the floor answers it with an `n`-row trade table
/// ([`crate::floor::trade_table`]).
pub(crate) fn table_message(rows: usize) -> Result<Vec<u8>> {
    let call = K::list(vec![K::symbol("table"), K::long(i64::try_from(rows)?)]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// The sync call `` (`ticks;n) ``: the floor answers it with `(::)`, then `n` async pushes of a
/// ten-row trade table ([`crate::floor::tick_message`]), as a tickerplant answers `.u.sub` and
/// then publishes to the subscriber.
pub(crate) fn ticks_message(n: usize) -> Result<Vec<u8>> {
    let call = K::list(vec![K::symbol("ticks"), K::long(i64::try_from(n)?)]);
    Ok(qgate_ipc::encode_message(MessageType::Sync, &call)?)
}

/// What the harness's user may see of the floor's trade tables, as the target's entitlements
/// plugin is configured: every row, or only the rows of one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sees {
    Everything,
    Only(&'static str),
}

impl Sees {
    /// How many rows of an `n`-row [`crate::floor::trade_table`] the user sees.
    pub(crate) fn rows(self, n: usize) -> usize {
        use crate::floor::SYMS;
        match self {
            Self::Everything => n,
            Self::Only(sym) => SYMS
                .iter()
                .position(|&s| s == sym)
                .map_or(0, |at| n / SYMS.len() + usize::from(at < n % SYMS.len())),
        }
    }

    /// Checks that `value` is the part of an `n`-row trade table the user sees: its five
    /// columns, as many rows as [`Self::rows`] says, and no symbol they may not see.
    pub(crate) fn check(self, value: &K, n: usize) -> Result<()> {
        let K::Table(table) = value else {
            bail!("expected a table, got `{}`", short_text(value));
        };
        let names: Vec<&[u8]> = table
            .column_names()
            .map(|names| names.iter().collect())
            .unwrap_or_default();
        let want: [&[u8]; 5] = [b"time", b"sym", b"price", b"size", b"cond"];
        if names != want {
            bail!(
                "expected the columns time, sym, price, size and cond, got `{}`",
                short_text(value)
            );
        }
        let rows = table.row_count();
        if rows != self.rows(n) {
            bail!("expected {} rows of the {n}, got {rows}", self.rows(n));
        }
        if let Self::Only(sym) = self {
            let Some(K::Vector(Vector {
                data: VectorData::Symbol(syms),
                ..
            })) = table.column(b"sym")
            else {
                bail!("the sym column is not a symbol vector");
            };
            if let Some(other) = syms.iter().find(|s| *s != sym.as_bytes()) {
                bail!(
                    "a row of `{}` came through, but the user sees only `{sym}`",
                    String::from_utf8_lossy(other)
                );
            }
        }
        Ok(())
    }
}

/// A value in q syntax, shortened, for an error.
fn short_text(value: &K) -> String {
    value.to_string().chars().take(80).collect()
}

/// One sync `` (`table;n) `` on a fresh connection, its reply read whole: millions of the
/// table's rows per second (the rows the upstream sent, whatever the user sees of them), from the
/// first byte of the request written to the last byte of the reply read.
///
/// The connection first asks for a ten-row table, unmeasured: what is measured is a session's
/// steady state, after its first reply (a plugin may decide once per connection, and does so on
/// that reply).
///
/// The reply is read into a buffer of `capacity` bytes, written before the clock starts so that
/// the client's page faults are not what is measured; once the clock has stopped, it is decoded
/// and checked against what `sees` allows.
pub(crate) fn table(
    endpoint: &Endpoint,
    message: &[u8],
    n: usize,
    sees: Sees,
    capacity: usize,
    io_timeout: Duration,
) -> Result<f64> {
    let mut client = Client::connect(endpoint, io_timeout)?;
    client.call(&table_message(FIRST_ROWS)?)?;
    sees.check(
        &qgate_ipc::decode(&client.body, qgate_ipc::Endian::Little)?,
        FIRST_ROWS,
    )
    .context("the first, ten-row reply")?;
    let mut body = vec![0_u8; capacity];
    let start = Instant::now();
    client.send(message)?;
    let mut head = [0_u8; HEADER_LEN];
    client
        .reader
        .read_exact(&mut head)
        .context("the server closed the connection or timed out instead of answering")?;
    let header = Header::parse(&head, &Limits::new(RESPONSE_LIMIT))?.context("short header")?;
    if header.message_type != MessageType::Response || header.compressed {
        bail!(
            "expected an uncompressed response, got {:?} (compressed: {})",
            header.message_type,
            header.compressed
        );
    }
    if header.body_len() > body.len() {
        body.resize(header.body_len(), 0);
    }
    let body = &mut body[..header.body_len()];
    client
        .reader
        .read_exact(body)
        .context("the server closed the connection in the middle of the reply")?;
    let secs = start.elapsed().as_secs_f64();
    let value = qgate_ipc::decode(body, qgate_ipc::Endian::Little)?;
    if let K::Error(text) = &value {
        bail!(
            "the server answered with the error '{}",
            String::from_utf8_lossy(text)
        );
    }
    sees.check(&value, n)?;
    Ok(n as f64 / 1e6 / secs)
}

/// The rows of the table a [`table`] connection asks for first.
const FIRST_ROWS: usize = 10;

/// One sync `` (`ticks;n) `` on a fresh connection: the response, then the `n` pushes. The first
/// push is decoded and checked to be `` (`upd;`trade;t) `` with the rows of `t` that `sees`
/// allows; every other must be the same bytes. Pushes per second, from the first byte of the
/// request written to the last push read.
pub(crate) fn ticks(
    endpoint: &Endpoint,
    message: &[u8],
    n: usize,
    sees: Sees,
    io_timeout: Duration,
) -> Result<f64> {
    /// The largest push read: a ten-row table is a few hundred bytes.
    const MAX_PUSH: usize = 64 * 1024;
    let mut client = Client::connect(endpoint, io_timeout)?;
    let start = Instant::now();
    client.send(message)?;
    let mut received = 0;
    let mut answered = false;
    let mut first: Option<Vec<u8>> = None;
    let mut frame = Vec::with_capacity(1024);
    while received < n || !answered {
        let reader = &mut client.reader;
        let mut head = [0_u8; HEADER_LEN];
        reader.read_exact(&mut head).with_context(|| {
            format!("the server closed the connection or timed out after {received} of {n} pushes")
        })?;
        let header = Header::parse(&head, &Limits::new(RESPONSE_LIMIT))?.context("short header")?;
        if header.body_len() > MAX_PUSH {
            bail!(
                "expected a push or the response, got a message of {} bytes",
                header.len()
            );
        }
        frame.resize(header.body_len(), 0);
        reader
            .read_exact(&mut frame)
            .context("the server closed the connection in the middle of a message")?;
        match header.message_type {
            MessageType::Async => {
                match &first {
                    Some(first) if *first != frame => {
                        bail!("push {received} differs from the first");
                    }
                    Some(_) => {}
                    None => {
                        let value = qgate_ipc::decode(&frame, qgate_ipc::Endian::Little)?;
                        let K::List(List { items, .. }) = &value else {
                            bail!("expected (`upd;`trade;t), got `{}`", short_text(&value));
                        };
                        let [K::Atom(Atom::Symbol(upd)), K::Atom(Atom::Symbol(trade)), t] =
                            items.as_slice()
                        else {
                            bail!("expected (`upd;`trade;t), got `{}`", short_text(&value));
                        };
                        if upd != b"upd" || trade != b"trade" {
                            bail!("expected (`upd;`trade;t), got `{}`", short_text(&value));
                        }
                        sees.check(t, crate::floor::SYMS.len())?;
                        first = Some(frame.clone());
                    }
                }
                if !answered {
                    bail!("a push arrived before the response");
                }
                received += 1;
            }
            MessageType::Response if !answered => {
                if frame.first() == Some(&0x80) {
                    let text = String::from_utf8_lossy(&frame[1..]);
                    bail!(
                        "the server answered with the error '{}",
                        text.trim_end_matches('\0')
                    );
                }
                answered = true;
            }
            MessageType::Response => bail!("a second response"),
            MessageType::Sync => bail!("expected a push or the response, got a sync message"),
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Opens a connection and completes the handshake; returns the stream after the server's byte.
fn handshake(addr: SocketAddr, io_timeout: Duration) -> Result<TcpStream> {
    handshake_from(addr, None, io_timeout)
}

/// [`handshake`] from a given local address (port chosen by the system), or the default one.
fn handshake_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    io_timeout: Duration,
) -> Result<TcpStream> {
    let mut stream = connect_from(addr, source, io_timeout)?;
    q_handshake(&mut stream)?;
    Ok(stream)
}

/// Connects to `endpoint` (over TLS for a TLS target) and completes the q handshake.
fn open(endpoint: &Endpoint, source: Option<IpAddr>, io_timeout: Duration) -> Result<Transport> {
    let Some(config) = &endpoint.tls else {
        return Ok(Transport::Plain(handshake_from(
            endpoint.addr,
            source,
            io_timeout,
        )?));
    };
    let stream = connect_from(endpoint.addr, source, io_timeout)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let connection = rustls::ClientConnection::new(Arc::clone(config), name)?;
    let mut transport = Transport::Tls(Box::new(rustls::StreamOwned::new(connection, stream)));
    q_handshake(&mut transport)?;
    Ok(transport)
}

/// A TCP connection with `TCP_NODELAY` and the timeouts, from `source` when given.
fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    io_timeout: Duration,
) -> Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect_timeout(&addr, io_timeout),
        Some(source) => {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
            socket
                .connect_timeout(&addr.into(), io_timeout)
                .map(|()| TcpStream::from(socket))
        }
    }
    .with_context(|| format!("failed to connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(stream)
}

/// Sends the q handshake and reads the server's byte.
fn q_handshake(stream: &mut (impl Read + Write)) -> Result<()> {
    let mut hello = Vec::with_capacity(CREDENTIALS.len() + 2);
    hello.extend_from_slice(CREDENTIALS);
    hello.extend_from_slice(&[3, 0]);
    stream.write_all(&hello)?;
    let mut byte = [0_u8; 1];
    stream
        .read_exact(&mut byte)
        .context("the server closed the connection instead of accepting the handshake")?;
    if byte[0] > 3 {
        bail!("unexpected handshake reply {}", byte[0]);
    }
    Ok(())
}

/// A blocking client on one connection.
///
/// Reads go through a buffer; writes go straight to the stream under it, which is safe because a
/// client writes only when it has read every response it waits for.
pub(crate) struct Client {
    reader: BufReader<Transport>,
    body: Vec<u8>,
}

impl Client {
    /// Connects and authenticates.
    pub(crate) fn connect(endpoint: &Endpoint, io_timeout: Duration) -> Result<Self> {
        Self::connect_from(endpoint, None, io_timeout)
    }

    /// Connects from a given local address and authenticates.
    fn connect_from(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        io_timeout: Duration,
    ) -> Result<Self> {
        let transport = open(endpoint, source, io_timeout)?;
        Ok(Self {
            reader: BufReader::with_capacity(16 * 1024, transport),
            body: Vec::new(),
        })
    }

    /// Writes bytes as they are.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .context("failed to write to the server")
    }

    /// Reads the next message, which must be a response; its body is kept in `self.body`.
    pub(crate) fn read_response(&mut self) -> Result<()> {
        let mut header = [0_u8; HEADER_LEN];
        self.reader
            .read_exact(&mut header)
            .context("the server closed the connection or timed out instead of answering")?;
        let header =
            Header::parse(&header, &Limits::new(RESPONSE_LIMIT))?.context("short header")?;
        if header.message_type != MessageType::Response {
            bail!(
                "expected a response, got a {:?} message",
                header.message_type
            );
        }
        self.body.resize(header.body_len(), 0);
        self.reader
            .read_exact(&mut self.body)
            .context("the server closed the connection in the middle of a response")?;
        Ok(())
    }

    /// Sends a sync message and waits for its response.
    pub(crate) fn call(&mut self, message: &[u8]) -> Result<()> {
        self.send(message)?;
        self.read_response()
    }

    /// The last response in q syntax, shortened: how a target answers, for the report.
    pub(crate) fn last_response_text(&self) -> String {
        let text = match qgate_ipc::decode(&self.body, qgate_ipc::Endian::Little) {
            Ok(value) => value.to_string(),
            Err(err) => format!("<undecodable: {err}>"),
        };
        text.chars().take(80).collect()
    }
}

/// Percentile `p` (0 to 100) of sorted values, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The `q` quantile of `values` (nearest rank).
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of some numbers (NaN when there are none).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Median and 99th percentile round trips, in microseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Latency {
    pub(crate) median_us: f64,
    pub(crate) p99_us: f64,
}

/// Sync ping-pong, one connection per target: at most `count` round trips on each, stopping at
/// `time`. Returns each target's latencies, or why it failed.
///
/// The targets take turns in blocks of [`PING_BLOCK`] round trips, so that they share whatever
/// state the machine is in: on a small VM the round trip jumps between about 15 and 60 µs
/// depending on whether the other vCPU sleeps, for seconds at a time, and separate runs per target
/// would compare one state with the other.
pub(crate) fn ping_pong(
    endpoints: &[Endpoint],
    message: &[u8],
    count: usize,
    time: Duration,
    io_timeout: Duration,
) -> Vec<Result<Latency>> {
    let mut clients: Vec<Result<Client>> = endpoints
        .iter()
        .map(|endpoint| Client::connect(endpoint, io_timeout))
        .collect();
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(count); endpoints.len()];
    let deadline = Instant::now() + time;
    let mut done = 0;
    while done < count && Instant::now() < deadline {
        let block = PING_BLOCK.min(count - done);
        for (client, samples) in clients.iter_mut().zip(&mut samples) {
            let Ok(live) = client else { continue };
            for _ in 0..block {
                let start = Instant::now();
                if let Err(err) = live.call(message) {
                    *client = Err(err);
                    break;
                }
                samples.push(start.elapsed().as_nanos() as u64);
            }
        }
        done += block;
    }
    clients
        .into_iter()
        .zip(samples)
        .map(|(client, mut samples)| {
            client?;
            samples.sort_unstable();
            Ok(Latency {
                median_us: percentile(&samples, 50.0) / 1e3,
                p99_us: percentile(&samples, 99.0) / 1e3,
            })
        })
        .collect()
}

/// The round trips each target makes in its turn of [`ping_pong`].
const PING_BLOCK: usize = 50;

/// Pipelined async ingest on one connection: at most `count` async messages written back to back
/// (until `time`), then one sync call; messages per second from the first byte written to the
/// sync's response.
pub(crate) fn ingest(
    endpoint: &Endpoint,
    message: &[u8],
    sync: &[u8],
    count: usize,
    time: Duration,
    io_timeout: Duration,
) -> Result<f64> {
    const BATCH: usize = 1000;
    let mut client = Client::connect(endpoint, io_timeout)?;
    let chunk = message.repeat(BATCH);
    let start = Instant::now();
    let deadline = start + time;
    let mut sent = 0;
    while sent < count && Instant::now() < deadline {
        let n = BATCH.min(count - sent);
        client.send(&chunk[..n * message.len()])?;
        sent += n;
    }
    client.call(sync)?;
    Ok(sent as f64 / start.elapsed().as_secs_f64())
}

/// What the 64-connection scenario measures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throughput {
    pub(crate) queries_per_sec: f64,
    pub(crate) p99_us: f64,
}

/// `connections` connections doing sync ping-pong at once for `time`: total queries per second
/// and the 99th percentile round trip.
pub(crate) fn concurrent(
    addr: SocketAddr,
    message: &[u8],
    connections: usize,
    time: Duration,
    io_timeout: Duration,
) -> Result<Throughput> {
    /// A bound on one connection's round trips, on top of the deadline.
    const MAX_PER_CONNECTION: usize = 5_000_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let message: Arc<[u8]> = message.into();
    runtime.block_on(async move {
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections {
            let stream = handshake(addr, io_timeout)?;
            stream.set_nonblocking(true)?;
            streams.push(tokio::net::TcpStream::from_std(stream)?);
        }
        let start = Instant::now();
        let deadline = start + time;
        let mut tasks = tokio::task::JoinSet::new();
        for stream in streams {
            let message = Arc::clone(&message);
            tasks.spawn(tokio::time::timeout(time + io_timeout, async move {
                let (read, mut write) = stream.into_split();
                let mut read = tokio::io::BufReader::with_capacity(4096, read);
                let mut samples = Vec::with_capacity(64 * 1024);
                let mut header = [0_u8; HEADER_LEN];
                let mut body = Vec::new();
                while samples.len() < MAX_PER_CONNECTION {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    write.write_all(&message).await?;
                    read.read_exact(&mut header).await?;
                    let header = Header::parse(&header, &Limits::new(RESPONSE_LIMIT))?
                        .context("short header")?;
                    body.resize(header.body_len(), 0);
                    read.read_exact(&mut body).await?;
                    samples.push(sent.elapsed().as_nanos() as u64);
                }
                anyhow::Ok(samples)
            }));
        }
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let samples = joined
                .context("a client task panicked")?
                .context("a connection timed out")??;
            all.extend(samples);
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        Ok(Throughput {
            queries_per_sec: all.len() as f64 / elapsed,
            p99_us: percentile(&all, 99.0) / 1e3,
        })
    })
}

/// How many loopback source addresses the connect scenario spreads its connections over.
const SOURCE_ADDRESSES: u64 = 64;

/// The local address of the `n`th connection of the connect scenario: one of
/// [`SOURCE_ADDRESSES`] loopback addresses in turn, for an IPv4 loopback target.
///
/// The client closes first, so each closed connection holds its local port in TIME_WAIT for a
/// minute; from one address the 28 000 ephemeral ports run out after two seconds at 14 000
/// connections a second, and the kernel's port search, not the server, then sets the rate.
fn source(addr: SocketAddr, n: u64) -> Option<IpAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = u8::try_from(1 + n % SOURCE_ADDRESSES).unwrap_or(1);
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)))
        }
        _ => None,
    }
}

/// Connect, authenticate, one sync call, close; `threads` clients in parallel, at most `count`
/// connections in all, until `time`. Returns connections per second.
pub(crate) fn connect_rate(
    endpoint: &Endpoint,
    message: &[u8],
    threads: usize,
    count: usize,
    time: Duration,
    io_timeout: Duration,
) -> Result<f64> {
    let done = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + time;
    let result: Result<()> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                        if done.fetch_add(1, Ordering::Relaxed) >= count as u64 {
                            done.fetch_sub(1, Ordering::Relaxed);
                            break;
                        }
                        let n = done.load(Ordering::Relaxed);
                        let source = source(endpoint.addr, n);
                        let outcome = Client::connect_from(endpoint, source, io_timeout)
                            .and_then(|mut client| client.call(message));
                        if let Err(err) = outcome {
                            failed.store(true, Ordering::Relaxed);
                            return Err(err);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(outcome) => outcome?,
                Err(_) => bail!("a client thread panicked"),
            }
        }
        Ok(())
    });
    result?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// One large sync message on a fresh connection: megabytes (10^6 bytes) per second from the first
/// byte written to the response. Also returns the response, shortened, in q syntax.
pub(crate) fn insert(
    endpoint: &Endpoint,
    message: &[u8],
    io_timeout: Duration,
) -> Result<(f64, String)> {
    let mut client = Client::connect(endpoint, io_timeout)?;
    let start = Instant::now();
    client.call(message)?;
    let secs = start.elapsed().as_secs_f64();
    Ok((
        message.len() as f64 / 1e6 / secs,
        client.last_response_text(),
    ))
}

/// The size of the reads of the reply scenario: large enough that a 100 MB reply is a few
/// hundred reads, as a q client reading into the vector it returns would make.
const REPLY_READ: usize = 256 * 1024;

/// One sync `` (`reply;n) `` on a fresh connection, its `n`-byte reply read whole: megabytes
/// (10^6 bytes) of reply per second, from the first byte of the request written to the last byte
/// of the reply read.
///
/// The reply is read through one buffer, not into a vector of its size, so that the client's
/// page faults are not what is measured. Its header, its vector prefix and its size are checked,
/// and so are its first and last 64 KiB, item by item (`i mod 256`).
pub(crate) fn reply(
    endpoint: &Endpoint,
    message: &[u8],
    n: usize,
    io_timeout: Duration,
) -> Result<f64> {
    const CHECKED: usize = 64 * 1024;
    let mut client = Client::connect(endpoint, io_timeout)?;
    let mut buf = vec![0_u8; REPLY_READ];
    let start = Instant::now();
    client.send(message)?;
    let mut head = [0_u8; HEADER_LEN];
    client
        .reader
        .read_exact(&mut head)
        .context("the server closed the connection or timed out instead of answering")?;
    let header = Header::parse(&head, &Limits::new(RESPONSE_LIMIT))?.context("short header")?;
    if header.message_type != MessageType::Response || header.compressed {
        bail!(
            "expected an uncompressed response, got {:?} (compressed: {})",
            header.message_type,
            header.compressed
        );
    }
    if header.body_len() != n + 6 {
        // Not the vector asked for: say what came instead, when it is small enough to read.
        if header.body_len() <= 64 * 1024 {
            client.body.resize(header.body_len(), 0);
            client.reader.read_exact(&mut client.body)?;
            bail!(
                "expected a byte vector of {n} bytes, got `{}`",
                client.last_response_text()
            );
        }
        bail!(
            "expected a byte vector of {n} bytes, got a {}-byte response",
            header.len()
        );
    }
    let reader = &mut client.reader;
    let mut prefix = [0_u8; 6];
    reader.read_exact(&mut prefix)?;
    let count = u32::from_le_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]) as usize;
    if prefix[0] != 4 || count != n {
        bail!(
            "expected a byte vector of {n} bytes, got type {} with {count} items",
            prefix[0] as i8
        );
    }
    let mut offset = 0;
    while offset < n {
        let want = (n - offset).min(buf.len());
        let got = reader
            .read(&mut buf[..want])
            .context("reading the reply failed")?;
        if got == 0 {
            bail!("the server closed the connection after {offset} of {n} bytes of the reply");
        }
        // The part of this read that falls in the first or the last 64 KiB.
        for checked in [0..CHECKED, n.saturating_sub(CHECKED)..n] {
            let from = checked.start.max(offset);
            let to = checked.end.min(offset + got);
            for at in from..to {
                let byte = buf[at - offset];
                if byte != at as u8 {
                    bail!("byte {at} of the reply is {byte}, not {}", at as u8);
                }
            }
        }
        offset += got;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((n + HEADER_LEN + 6) as f64 / 1e6 / secs)
}

/// One sync `` (`publish;n) `` or `` (`subscribe;n) `` on a fresh connection: its response and
/// the `n` async pushes, in `order`, each push checked to be `push` byte for byte; pushes per
/// second, from the first byte of the request written to the last of the pushes and the response
/// read.
pub(crate) fn publications(
    endpoint: &Endpoint,
    message: &[u8],
    push: &[u8],
    n: usize,
    order: Order,
    io_timeout: Duration,
) -> Result<f64> {
    let mut client = Client::connect(endpoint, io_timeout)?;
    let start = Instant::now();
    client.send(message)?;
    let mut received = 0;
    let mut answered = false;
    let mut frame = vec![0_u8; push.len()];
    while received < n || !answered {
        let reader = &mut client.reader;
        reader
            .read_exact(&mut frame[..HEADER_LEN])
            .with_context(|| {
                format!(
                    "the server closed the connection or timed out after {received} of {n} pushes \
                 (response read: {answered})"
                )
            })?;
        let header = Header::parse(&frame[..HEADER_LEN], &Limits::new(RESPONSE_LIMIT))?
            .context("short header")?;
        match header.message_type {
            MessageType::Async if header.len() == push.len() => {
                reader
                    .read_exact(&mut frame[HEADER_LEN..])
                    .context("the server closed the connection in the middle of a push")?;
                if frame != push {
                    bail!("push {received} differs from what the floor sent");
                }
                if answered && order == Order::PushesFirst {
                    bail!("a push arrived after the response");
                }
                received += 1;
            }
            MessageType::Response if !answered => {
                // The floor's `(::)`, or an error when it refused the count.
                let mut rest = vec![0_u8; header.body_len().min(1024)];
                reader.read_exact(&mut rest)?;
                if rest.first() == Some(&0x80) {
                    let text = String::from_utf8_lossy(&rest[1..]);
                    bail!(
                        "the server answered with the error '{}",
                        text.trim_end_matches('\0')
                    );
                }
                if order == Order::PushesFirst && received != n {
                    bail!("the response arrived after {received} pushes, not {n}");
                }
                if order == Order::ReplyFirst && received != 0 {
                    bail!("{received} pushes arrived before the response");
                }
                answered = true;
            }
            other => bail!(
                "expected a push of {} bytes or the response, got a {other:?} message of {} bytes",
                push.len(),
                header.len()
            ),
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The resident memory of some processes, in bytes, from `/proc/PID/status`.
pub(crate) fn resident_bytes(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no VmRSS line in {path}"))?;
        total += kib * 1024;
    }
    Ok(total)
}

/// Opens `count` authenticated connections and leaves them idle: the growth of the servers'
/// resident memory per connection, in bytes.
///
/// One connection makes one query first, so that whatever a server sets up once is not counted.
pub(crate) fn idle_memory(
    addr: SocketAddr,
    pids: &[u32],
    message: &[u8],
    count: usize,
    settle: Duration,
    io_timeout: Duration,
) -> Result<f64> {
    Client::connect(&Endpoint::plain(addr), io_timeout)?.call(message)?;
    crate::pause(settle);
    let before = resident_bytes(pids)?;
    let mut connections = Vec::with_capacity(count);
    let opened: Result<()> = (|| {
        for _ in 0..count {
            connections.push(handshake(addr, io_timeout)?);
        }
        Ok(())
    })();
    let measured = opened.and_then(|()| {
        crate::pause(settle);
        resident_bytes(pids)
    });
    let opened_count = connections.len();
    for stream in connections {
        // A reset instead of a close leaves no TIME_WAIT behind to use up loopback ports.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
    let after =
        measured.with_context(|| format!("after {opened_count} of {count} idle connections"))?;
    Ok((after as f64 - before as f64) / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
