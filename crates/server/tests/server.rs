//! qgate-server's API tests: [`qgate_server::run`] on `127.0.0.1:0` with a test double for the
//! hooks, driven by a minimal q client written here with qgate-ipc.
//!
//! Timeouts are short so the suite is quick; the only timing assertions are generous upper bounds.

// The helpers below are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use qgate_hooks::{
    AuthVerdict, CloseReason, Credentials, Handle, Hooks, HttpRequest, HttpResponse, HttpVerdict,
    OpenVerdict, Request, Session, Verdict, WsMessage, WsOpenVerdict, WsVerdict,
};
use qgate_ipc::{Atom, K, Limits, Message, MessageType, encode_message};
use qgate_server::{PasswordFile, ServerOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

/// The bound on anything that should happen "at once".
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The hooks test double.
// ---------------------------------------------------------------------------------------------

/// What the server told the hooks.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    Auth { user: String },
    Open { handle: Handle, user: String },
    Sync { user: String, value: K },
    Async { user: String, value: K },
    Close { user: String, reason: CloseReason },
    WsClose { user: String, reason: String },
}

/// Echoes sync requests and records every event.
///
/// Behaviour by input: user `deny` is refused and user `alias` becomes `mapped` at auth; user
/// `closeme` is closed at open; the sync strings `"deny"` and `"pass"` are denied and passed;
/// `"slow:N"` is answered after N milliseconds; the async string `"deny"` is denied. While they
/// decide, they say they hold `deciding_copies` copies of the message (none unless a test sets
/// it).
#[derive(Debug, Default)]
struct FakeHooks {
    events: Mutex<Vec<Event>>,
    deciding_copies: std::sync::atomic::AtomicUsize,
}

impl FakeHooks {
    fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn closes_of(&self, user: &str) -> Vec<CloseReason> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Close { user: u, reason } if u == user => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn syncs(&self) -> Vec<K> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Sync { value, .. } => Some(value),
                _ => None,
            })
            .collect()
    }

    fn asyncs(&self) -> Vec<K> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Async { value, .. } => Some(value),
                _ => None,
            })
            .collect()
    }
}

fn user(session: &Session) -> String {
    session.user_lossy().into_owned()
}

impl Hooks for FakeHooks {
    fn deciding_bytes(&self, request: &Request) -> usize {
        let copies = self
            .deciding_copies
            .load(std::sync::atomic::Ordering::Relaxed);
        copies * request.body().len()
    }

    async fn on_auth(&self, session: &Session, credentials: &Credentials) -> AuthVerdict {
        self.record(Event::Auth {
            user: user(session),
        });
        match &credentials.user[..] {
            b"deny" => AuthVerdict::Deny,
            b"alias" => AuthVerdict::Allow(Some(b"mapped".to_vec())),
            _ => AuthVerdict::Pass,
        }
    }

    async fn on_open(&self, session: &Session) -> OpenVerdict {
        self.record(Event::Open {
            handle: session.handle,
            user: user(session),
        });
        if &session.user[..] == b"closeme" {
            OpenVerdict::Close("not today".into())
        } else {
            OpenVerdict::Keep
        }
    }

    async fn on_sync(&self, session: &Session, request: &Request) -> Verdict {
        let value = request.to_k().unwrap();
        self.record(Event::Sync {
            user: user(session),
            value: value.clone(),
        });
        match value.as_text() {
            Some(b"deny") => return Verdict::Deny("nope".into()),
            Some(b"pass") => return Verdict::Pass,
            Some(text) if text.starts_with(b"slow:") => {
                let ms: u64 = std::str::from_utf8(&text[5..]).unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => {}
        }
        Verdict::reply(&value)
    }

    async fn on_async(&self, session: &Session, request: &Request) -> Verdict {
        let value = request.to_k().unwrap();
        self.record(Event::Async {
            user: user(session),
            value: value.clone(),
        });
        if value.as_text() == Some(b"deny") {
            Verdict::Deny("nope".into())
        } else {
            Verdict::Pass
        }
    }

    async fn on_close(&self, session: &Session, reason: &CloseReason) {
        self.record(Event::Close {
            user: user(session),
            reason: reason.clone(),
        });
    }

    /// `/?deny` is denied with a 451, `/?pass` and no query pass; any other query (or a POST's
    /// body) is answered with the user and that text.
    async fn on_http(&self, session: &Session, request: &HttpRequest) -> HttpVerdict {
        let text = if request.method == "POST" {
            request.body.clone()
        } else {
            let query = request.query.as_deref().unwrap_or_default();
            query.replace("%20", " ").into_bytes()
        };
        match &text[..] {
            b"deny" => HttpVerdict::Deny {
                status: 451,
                text: "not here".into(),
            },
            b"pass" | b"" => HttpVerdict::Pass,
            _ => HttpVerdict::Respond(
                HttpResponse::new(200, [user(session).as_bytes(), b":", &text].concat())
                    .with_header("x-method", request.method.clone()),
            ),
        }
    }

    /// A WebSocket to `/deny` is refused with a 403; any other opens.
    async fn on_ws_open(&self, _session: &Session, request: &HttpRequest) -> WsOpenVerdict {
        if request.path == "/deny" {
            WsOpenVerdict::Deny {
                status: 403,
                text: "no sockets here".into(),
            }
        } else {
            WsOpenVerdict::Accept
        }
    }

    /// `deny` is denied, `close` closes with 4000, `pass` passes; anything else is answered
    /// with the user and the message, in a frame of the same kind, twice.
    async fn on_ws_message(&self, session: &Session, message: &WsMessage) -> WsVerdict {
        match &message.data[..] {
            b"deny" => WsVerdict::Deny("not that".into()),
            b"close" => WsVerdict::Close {
                code: 4000,
                reason: "asked to".into(),
            },
            b"pass" => WsVerdict::Pass,
            data => {
                let mut reply = message.clone();
                reply.data = [user(session).as_bytes(), b":", data].concat();
                WsVerdict::Reply(vec![reply.clone(), reply])
            }
        }
    }

    async fn on_ws_close(&self, session: &Session, reason: &str) {
        self.record(Event::WsClose {
            user: user(session),
            reason: reason.to_owned(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// A server under test.
// ---------------------------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    hooks: Arc<FakeHooks>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(options: ServerOptions) -> Self {
        init_logging();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hooks = Arc::new(FakeHooks::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(qgate_server::run(
            listener,
            options,
            Arc::clone(&hooks),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            hooks,
            stop: Some(stop),
            task,
        }
    }

    async fn default() -> Self {
        Self::start(ServerOptions::default()).await
    }

    /// Signals shutdown and waits for `run` to return.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(SOON, self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
    }

    async fn client(&self, credentials: &str) -> Client {
        Client::open(self.addr, credentials).await
    }
}

/// Sends the server's logs to the test's output, which the harness shows when a test fails.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn options(change: impl FnOnce(&mut ServerOptions)) -> ServerOptions {
    let mut options = ServerOptions::default();
    change(&mut options);
    options
}

/// Polls `check` until it holds, for at most [`SOON`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal q client.
// ---------------------------------------------------------------------------------------------

struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects and sends `handshake` as is; returns the client and what the server answered
    /// before closing or going quiet: one byte on success, nothing on refusal.
    async fn handshake(addr: SocketAddr, handshake: &[u8]) -> (Self, Vec<u8>) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(handshake).await.unwrap();
        let mut reply = [0u8; 16];
        let n = tokio::time::timeout(SOON, stream.read(&mut reply))
            .await
            .expect("handshake answered")
            .unwrap_or(0);
        (Self { stream }, reply[..n].to_vec())
    }

    /// Connects as `credentials` with capability 3 and expects to be accepted.
    async fn open(addr: SocketAddr, credentials: &str) -> Self {
        let (client, reply) = Self::handshake(addr, &handshake(credentials, Some(3))).await;
        assert_eq!(reply, [3], "accepted as {credentials:?}");
        client
    }

    async fn send(&mut self, message_type: MessageType, value: &K) {
        let bytes = encode_message(message_type, value).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one message: its type and value (a q error is `K::Error`).
    async fn receive(&mut self) -> (MessageType, K) {
        let mut frame = vec![0u8; 8];
        tokio::time::timeout(SOON, self.stream.read_exact(&mut frame))
            .await
            .expect("a message arrives")
            .expect("header");
        let len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        frame.resize(len, 0);
        tokio::time::timeout(SOON, self.stream.read_exact(&mut frame[8..]))
            .await
            .expect("a body arrives")
            .expect("body");
        let message = Message::from_frame(frame, &Limits::default()).unwrap();
        let value = qgate_ipc::decode(message.body(), message.header.endian).unwrap();
        (message.header.message_type, value)
    }

    /// A sync request and its response.
    async fn sync(&mut self, value: &K) -> K {
        self.send(MessageType::Sync, value).await;
        let (message_type, value) = self.receive().await;
        assert_eq!(message_type, MessageType::Response);
        value
    }

    /// Expects the server to close the connection without sending anything more.
    async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(SOON, self.stream.read(&mut buf))
            .await
            .expect("closed in time")
        {
            Ok(n) => assert_eq!(n, 0, "closed without a byte, got {:?}", &buf[..n]),
            // Closing with unread input makes the kernel send a reset instead of a FIN.
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }

    /// Expects nothing to arrive for a while.
    async fn expect_quiet(&mut self) {
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut buf)).await;
        assert!(read.is_err(), "expected silence, got {read:?}");
    }
}

fn handshake(credentials: &str, capability: Option<u8>) -> Vec<u8> {
    let mut bytes = credentials.as_bytes().to_vec();
    bytes.extend(capability);
    bytes.push(0);
    bytes
}

/// Connects with credentials and expects the refusal: the socket closed with zero bytes read.
async fn expect_refused(addr: SocketAddr, credentials: &str) {
    let (mut client, reply) = Client::handshake(addr, &handshake(credentials, Some(3))).await;
    assert_eq!(reply, b"", "refused {credentials:?} without a byte");
    client.expect_closed().await;
}

fn error(text: &str) -> K {
    K::error(text)
}

/// A raw frame: little-endian header of the given type and flags around `body`.
fn frame(message_type: u8, compressed: bool, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![1, message_type, u8::from(compressed), 0];
    bytes.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// A fresh path for a password file.
fn temp_file(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qgate-server-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

// ---------------------------------------------------------------------------------------------
// Handshake.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_handshake_reply_is_one_byte_alone() {
    let server = Server::default().await;
    for (handshake, reply) in [
        (&b"user:password\x03\0"[..], 3u8),
        (b"user\x06\0", 3),
        (b"anonymous\x03\0", 3),
        (b"\x03\0", 3),
        (b"\x01\0", 1),
        (b"user:password\0", 0),
        (b"\0", 0),
    ] {
        let (mut client, got) = Client::handshake(server.addr, handshake).await;
        assert_eq!(got, [reply], "reply to {handshake:?}");
        // Nothing follows the byte until the client speaks (node-q needs it alone).
        client.expect_quiet().await;
        assert_eq!(client.sync(&K::long(7)).await, K::long(7));
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn bytes_after_the_handshake_are_the_first_message() {
    let server = Server::default().await;
    let mut bytes = handshake("u:p", Some(3));
    bytes.extend(encode_message(MessageType::Sync, &K::long(42)).unwrap());
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut reply = [0u8];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [3]);
    let mut client = Client { stream };
    assert_eq!(client.receive().await, (MessageType::Response, K::long(42)));
    server.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Authentication.
// ---------------------------------------------------------------------------------------------

/// The walkthrough file: every user's password is `password`.
const WALKTHROUGH: &str = "admin:password\n\
                           adminmd5:0x5f4dcc3b5aa765d61d8327deb882cf99\n\
                           adminsha:0x5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8\n\
                           baremd5:5f4dcc3b5aa765d61d8327deb882cf99\n\
                           baresha:5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8\n";

fn with_password_file(path: PathBuf, restricted: bool) -> ServerOptions {
    options(|o| {
        o.password_file = Some(PasswordFile { path, restricted });
    })
}

#[tokio::test]
async fn password_files_accept_and_refuse() {
    let path = temp_file("users.txt");
    std::fs::write(&path, WALKTHROUGH).unwrap();
    let server = Server::start(with_password_file(path, false)).await;
    for user in ["admin", "adminmd5", "adminsha", "baremd5", "baresha"] {
        let mut client = server.client(&format!("{user}:password")).await;
        assert_eq!(client.sync(&K::long(1)).await, K::long(1));
        expect_refused(server.addr, &format!("{user}:Password")).await;
        expect_refused(server.addr, &format!("{user}:")).await;
        // No colon, no password: never a match.
        expect_refused(server.addr, user).await;
    }
    expect_refused(server.addr, "nobody:password").await;
    // The auth hook never saw those the file refused.
    let auths = server
        .hooks
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Auth { .. }))
        .count();
    assert_eq!(auths, 5);
    server.shut_down().await.unwrap();
}

/// Connects as `credentials` until the server accepts it: a password file is reloaded in the
/// background, within a second of a change.
async fn eventually_accepted(addr: SocketAddr, credentials: &str) -> Client {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let (client, reply) = Client::handshake(addr, &handshake(credentials, Some(3))).await;
        if reply == [3] {
            return client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never accepted as {credentials:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_password_file_is_reloaded_when_it_changes() {
    let path = temp_file("users.txt");
    std::fs::write(&path, "alice:one\n").unwrap();
    let mut options = with_password_file(path.clone(), false);
    // This test retries a refused login until the reload lets it in: the brute-force waits would
    // only slow it down.
    options.login_backoff.first_delay = None;
    let server = Server::start(options).await;
    server.client("alice:one").await;
    expect_refused(server.addr, "alice:second").await;

    std::fs::write(
        &path,
        "# rotated\nalice:second\nbob:0x5f4dcc3b5aa765d61d8327deb882cf99\n",
    )
    .unwrap();
    eventually_accepted(server.addr, "alice:second").await;
    server.client("bob:password").await;
    expect_refused(server.addr, "alice:one").await;

    // A broken version is logged and ignored: the last good one stays in force.
    std::fs::write(&path, "alice:second\nthis line has no colon\n").unwrap();
    server.client("alice:second").await;
    server.client("bob:password").await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_bad_password_file_stops_the_server_at_start() {
    let path = temp_file("users.txt");
    std::fs::write(&path, "alice:one\nbroken\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = qgate_server::run(
        listener,
        with_password_file(path, false),
        FakeHooks::default(),
        std::future::pending(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.ends_with("users.txt:2: expected user:password, found no ':'"),
        "{error}"
    );
}

#[tokio::test]
async fn the_auth_hook_denies_and_maps() {
    let server = Server::default().await;
    expect_refused(server.addr, "deny:x").await;
    let mut client = server.client("alias:x").await;
    client.sync(&K::long(1)).await;
    assert!(server.hooks.events().contains(&Event::Sync {
        user: "mapped".into(),
        value: K::long(1)
    }));
    // Without a password file, Pass accepts, as q's default .z.pw.
    server.client("anyone").await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn the_open_hook_can_close() {
    let server = Server::default().await;
    let mut client = server.client("closeme").await;
    client.expect_closed().await;
    let hooks = Arc::clone(&server.hooks);
    eventually("close hook", || {
        hooks.closes_of("closeme") == [CloseReason::Refused("not today".into())]
    })
    .await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn restricted_mode_refuses_system_commands() {
    let path = temp_file("users.txt");
    std::fs::write(&path, "u:p\n").unwrap();
    let server = Server::start(with_password_file(path, true)).await;
    let mut client = server.client("u:p").await;
    assert_eq!(client.sync(&K::string("\\ls")).await, error("access"));
    client.send(MessageType::Async, &K::string("\\ls")).await;
    assert_eq!(client.sync(&K::string("1+1")).await, K::string("1+1"));
    // Neither system command reached the hooks.
    assert_eq!(server.hooks.syncs(), [K::string("1+1")]);
    assert!(server.hooks.asyncs().is_empty());
    server.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Messages.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_syncs_are_answered_in_order() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode_message(MessageType::Sync, &K::long(i)).unwrap());
    }
    client.send_raw(&batch).await;
    for i in 0..100 {
        assert_eq!(client.receive().await, (MessageType::Response, K::long(i)));
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_large_message_round_trips() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    let value = K::string(vec![b'x'; 5 << 20]);
    assert_eq!(client.sync(&value).await, value);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn asyncs_are_handled_in_order_and_get_no_reply() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    for i in 0..50 {
        client.send(MessageType::Async, &K::long(i)).await;
    }
    client.send(MessageType::Async, &K::string("deny")).await;
    // A sync after them is answered after all of them were handled, and is the only reply.
    assert_eq!(client.sync(&K::long(-1)).await, K::long(-1));
    let mut expect: Vec<K> = (0..50).map(K::long).collect();
    expect.push(K::string("deny"));
    assert_eq!(server.hooks.asyncs(), expect);
    client.expect_quiet().await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn deny_and_pass_become_q_errors() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    assert_eq!(client.sync(&K::string("deny")).await, error("nope"));
    assert_eq!(
        client.sync(&K::string("pass")).await,
        error("qgate: nothing answered this query: no plugin or backend is configured")
    );
    assert_eq!(client.sync(&K::long(3)).await, K::long(3));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn logins_and_messages_are_counted() {
    init_logging();
    let mut registry = qgate_metrics::Registry::default();
    let metrics = qgate_metrics::Metrics::register(&mut registry, "test");
    let server = qgate_server::Server::with_metrics(
        ServerOptions::default(),
        Arc::new(FakeHooks::default()),
        qgate_hooks::NoBackend,
        metrics,
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    expect_refused(addr, "deny:pw").await;
    let mut client = Client::open(addr, "u").await;
    assert_eq!(client.sync(&K::string("deny")).await, error("nope"));
    let _ = client.sync(&K::string("pass")).await;
    assert_eq!(client.sync(&K::long(3)).await, K::long(3));
    client.send(MessageType::Async, &K::string("deny")).await;
    // A sync after the async: its answer means the async was handled.
    assert_eq!(client.sync(&K::long(4)).await, K::long(4));
    let text = qgate_metrics::Metrics::render(&registry).unwrap();
    for line in [
        "qgate_connections_total 2",
        "qgate_connections_open 1",
        r#"qgate_logins_total{result="accepted"} 1"#,
        r#"qgate_logins_total{result="denied"} 1"#,
        r#"qgate_requests_total{event="sync",decision="deny"} 1"#,
        r#"qgate_requests_total{event="sync",decision="pass"} 1"#,
        r#"qgate_requests_total{event="sync",decision="reply"} 2"#,
        r#"qgate_requests_total{event="async",decision="deny"} 1"#,
        r#"qgate_request_duration_seconds_count{event="sync"} 4"#,
        r#"qgate_request_duration_seconds_bucket{le="+Inf",event="sync"} 4"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    drop(client);
    let _ = stop.send(());
    tokio::time::timeout(SOON, task).await.unwrap().unwrap();
    let text = qgate_metrics::Metrics::render(&registry).unwrap();
    assert!(
        text.lines().any(|l| l == "qgate_connections_open 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_reply_the_client_cannot_take_becomes_a_q_error() {
    let server = Server::default().await;
    // Capability 0: no timestamps. The echo of one cannot be sent, so the client gets 'type.
    let (mut client, reply) = Client::handshake(server.addr, b"old\0").await;
    assert_eq!(reply, [0]);
    let timestamp = K::Atom(Atom::Timestamp(0));
    assert_eq!(client.sync(&timestamp).await, error("type"));
    assert_eq!(client.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_compressed_request_is_accepted() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    let value = K::symbols(std::iter::repeat_n("a", 1000));
    let plain = encode_message(MessageType::Sync, &value).unwrap();
    let compressed = qgate_ipc::compress(&plain).unwrap();
    assert_eq!(compressed[2], 1);
    client.send_raw(&compressed).await;
    // A loopback peer gets the echo uncompressed (the client here would decode either).
    assert_eq!(client.receive().await, (MessageType::Response, value));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_stray_response_is_ignored() {
    let server = Server::default().await;
    let mut client = server.client("u").await;
    client.send(MessageType::Response, &K::long(5)).await;
    // What PyKX sends back when it refuses a server's query.
    client
        .send(
            MessageType::Response,
            &error("PyKX cannot receive queries in client mode"),
        )
        .await;
    assert_eq!(client.sync(&K::long(6)).await, K::long(6));
    assert_eq!(server.hooks.syncs(), [K::long(6)]);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn close_runs_once_per_opened_connection() {
    let server = Server::default().await;
    let mut a = server.client("a").await;
    a.sync(&K::long(1)).await;
    drop(a);
    let hooks = Arc::clone(&server.hooks);
    eventually("a's close", || {
        hooks.closes_of("a") == [CloseReason::ClientClosed]
    })
    .await;
    let _b = server.client("b").await;
    server.shut_down().await.unwrap();
    assert_eq!(server_closes(&hooks, "a"), 1);
    assert_eq!(hooks.closes_of("b"), [CloseReason::Shutdown]);
    // Every connection that opened closed exactly once, with a handle unique among the living.
    let opens: Vec<Handle> = hooks
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Open { handle, .. } => Some(handle),
            _ => None,
        })
        .collect();
    assert_eq!(opens.len(), 2);
    assert_ne!(opens[0], opens[1]);
}

fn server_closes(hooks: &FakeHooks, user: &str) -> usize {
    hooks.closes_of(user).len()
}

// ---------------------------------------------------------------------------------------------
// Hostile clients: each is closed, and another client keeps being served.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_clients_are_closed_alone() {
    let server = Server::start(options(|o| {
        o.limits.max_handshake_bytes = 1024;
        o.limits.max_message_bytes = 1 << 20;
    }))
    .await;
    let mut good = server.client("good").await;

    // A handshake with no end: the byte limit closes it.
    let (mut hostile, reply) = {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let _ = stream.write_all(&vec![b'a'; 70 * 1024]).await;
        (Client { stream }, Vec::<u8>::new())
    };
    assert!(reply.is_empty());
    hostile.expect_closed().await;
    assert_eq!(good.sync(&K::long(1)).await, K::long(1));

    // Each of these follows a good handshake as its own user, so its close reason can be found.
    // The limit each case breaks, or `None` for a malformed message.
    let cases: [(&str, Vec<u8>, Option<&str>); 6] = [
        (
            "claims2gb",
            vec![1, 1, 0, 0, 0, 0, 0, 0x80],
            Some("max_message_bytes"),
        ),
        (
            "badcompressed",
            frame(1, true, &[0x40, 0, 0, 0, 0xff, 1, 2, 3, 4, 5]),
            None,
        ),
        (
            "badheadertype",
            frame(3, false, &[0xf9, 1, 0, 0, 0, 0, 0, 0, 0]),
            None,
        ),
        ("badvaluetype", frame(1, false, &[3, 0, 1, 0, 0, 0]), None),
        (
            "countoverflow",
            // A long vector claiming 65535 items, with room for one.
            frame(1, false, &[7, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
            None,
        ),
        (
            "trailing",
            frame(1, false, &[0xf9, 1, 0, 0, 0, 0, 0, 0, 0, 99]),
            None,
        ),
    ];
    for (name, bytes, expected) in cases {
        let mut hostile = server.client(name).await;
        hostile.send_raw(&bytes).await;
        hostile.expect_closed().await;
        let hooks = Arc::clone(&server.hooks);
        let expected = |reason: &CloseReason| match (reason, expected) {
            (CloseReason::Limit(limit), Some(expected)) => *limit == expected,
            (CloseReason::BadMessage(_), None) => true,
            _ => false,
        };
        eventually(name, || hooks.closes_of(name).iter().any(expected)).await;
        assert_eq!(server.hooks.closes_of(name).len(), 1, "{name} closed once");
        assert_eq!(good.sync(&K::string(name)).await, K::string(name));
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_stalled_body_hits_the_idle_timeout() {
    let server = Server::start(options(|o| {
        o.limits.idle_timeout = Some(Duration::from_millis(300));
    }))
    .await;
    let mut good = server.client("good").await;
    let mut stalled = server.client("stalled").await;
    // A header for 100 bytes, then 10 of them, then silence.
    let mut bytes = vec![1, 1, 0, 0, 100, 0, 0, 0];
    bytes.extend([0u8; 10]);
    stalled.send_raw(&bytes).await;
    // The good client keeps talking meanwhile, so the idle timeout never applies to it.
    let hooks = Arc::clone(&server.hooks);
    let deadline = tokio::time::Instant::now() + SOON;
    while hooks.closes_of("stalled").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled client closed"
        );
        assert_eq!(good.sync(&K::long(1)).await, K::long(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hooks.closes_of("stalled"),
        [CloseReason::Limit("idle_timeout")]
    );
    stalled.expect_closed().await;
    assert!(hooks.closes_of("good").is_empty());
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn half_open_handshakes_time_out() {
    let server = Server::start(options(|o| {
        o.limits.handshake_timeout = Duration::from_millis(500);
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(Client {
            stream: TcpStream::connect(server.addr).await.unwrap(),
        });
    }
    // Others are served meanwhile.
    let mut good = server.client("good").await;
    assert_eq!(good.sync(&K::long(1)).await, K::long(1));
    for client in &mut silent {
        client.expect_closed().await;
    }
    // They never reached open, so no close hook ran for them.
    assert!(
        server
            .hooks
            .events()
            .iter()
            .all(|e| !matches!(e, Event::Close { .. }))
    );
    assert_eq!(good.sync(&K::long(2)).await, K::long(2));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn the_connection_limit_refuses_at_once() {
    let server = Server::start(options(|o| o.limits.max_connections = 2)).await;
    let first = server.client("a").await;
    let _second = server.client("b").await;
    expect_refused(server.addr, "c").await;
    drop(first);
    // The slot comes back once the first connection's task has ended.
    let hooks = Arc::clone(&server.hooks);
    eventually("a closed", || !hooks.closes_of("a").is_empty()).await;
    let mut accepted = None;
    for _ in 0..100 {
        let (client, reply) = Client::handshake(server.addr, &handshake("c", Some(3))).await;
        if reply == [3] {
            accepted = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = accepted.expect("a slot frees up");
    assert_eq!(third.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn the_per_user_limit_refuses_without_a_byte() {
    let server = Server::start(options(|o| o.limits.max_connections_per_user = 1)).await;
    let alice = server.client("alice:x").await;
    expect_refused(server.addr, "alice:y").await;
    let _bob = server.client("bob").await;
    drop(alice);
    let hooks = Arc::clone(&server.hooks);
    eventually("alice closed", || !hooks.closes_of("alice").is_empty()).await;
    server.client("alice:z").await;
    server.shut_down().await.unwrap();
}

/// A config reload's part of the server: limits, login backoff and the password file swapped in
/// while it serves, all or nothing, applying to what comes after.
#[tokio::test]
async fn live_settings_apply_to_what_comes_after() {
    init_logging();
    let (users, other, broken) = (
        temp_file("live-users.txt"),
        temp_file("live-other.txt"),
        temp_file("live-broken.txt"),
    );
    std::fs::write(&users, "alice:one\n").unwrap();
    std::fs::write(&other, "bob:two\n").unwrap();
    std::fs::write(&broken, "alice:one\nbroken\n").unwrap();
    let mut options = with_password_file(users.clone(), false);
    options.login_backoff.first_delay = None;
    let hooks = Arc::new(FakeHooks::default());
    let server = qgate_server::Server::new(options.clone(), Arc::clone(&hooks))
        .await
        .unwrap();
    let settings = server.settings();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    // The same settings: nothing to do.
    let unchanged = settings.prepare(&options).await.unwrap().apply();
    assert!(unchanged.is_empty(), "{unchanged:?}");

    // One connection at most: the one open stays, the next is refused.
    let mut first = Client::open(addr, "alice:one").await;
    let mut next = options.clone();
    next.limits.max_connections = 1;
    let changed = settings.prepare(&next).await.unwrap().apply();
    assert_eq!(changed, ["limits.max_connections"]);
    expect_refused(addr, "alice:one").await;
    assert_eq!(first.sync(&K::long(1)).await, K::long(1));

    // A password file that cannot be used, and limits that disagree: refused whole.
    let mut bad = next.clone();
    bad.password_file = Some(PasswordFile {
        path: broken,
        restricted: false,
    });
    bad.limits.max_connections = 10;
    let error = settings.prepare(&bad).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("live-broken.txt"),
        "{error:#}"
    );
    let mut bad = next.clone();
    bad.limits.memory_budget = bad.limits.max_message_bytes - 1;
    assert!(settings.prepare(&bad).await.is_err());
    assert_eq!(settings.limits().max_connections, 1);
    expect_refused(addr, "alice:one").await;

    // Another password file, restricted, and room again.
    let mut last = next.clone();
    last.limits.max_connections = 10;
    last.password_file = Some(PasswordFile {
        path: other,
        restricted: true,
    });
    let changed = settings.prepare(&last).await.unwrap().apply();
    assert_eq!(changed, ["limits.max_connections", "auth.password_file"]);
    let mut bob = Client::open(addr, "bob:two").await;
    expect_refused(addr, "alice:one").await;
    assert!(matches!(bob.sync(&K::string("\\ls")).await, K::Error(_)));
    // The connection opened under the first file goes on.
    assert_eq!(first.sync(&K::long(2)).await, K::long(2));

    let _ = stop.send(());
    tokio::time::timeout(SOON, task).await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Shutdown.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_lets_an_in_flight_query_finish() {
    let server = Server::start(options(|o| o.shutdown_grace = Duration::from_secs(5))).await;
    let mut busy = server.client("busy").await;
    let mut idle = server.client("idle").await;
    busy.send(MessageType::Sync, &K::string("slow:300")).await;
    let hooks = Arc::clone(&server.hooks);
    eventually("query in flight", || !hooks.syncs().is_empty()).await;
    let stopped = tokio::spawn(server.shut_down());
    assert_eq!(
        busy.receive().await,
        (MessageType::Response, K::string("slow:300"))
    );
    busy.expect_closed().await;
    idle.expect_closed().await;
    stopped.await.unwrap().unwrap();
    assert_eq!(hooks.closes_of("busy"), [CloseReason::Shutdown]);
    assert_eq!(hooks.closes_of("idle"), [CloseReason::Shutdown]);
}

#[tokio::test]
async fn shutdown_cuts_what_outlasts_the_grace() {
    let server = Server::start(options(|o| o.shutdown_grace = Duration::from_millis(200))).await;
    let mut busy = server.client("busy").await;
    busy.send(MessageType::Sync, &K::string("slow:60000")).await;
    let hooks = Arc::clone(&server.hooks);
    eventually("query in flight", || !hooks.syncs().is_empty()).await;
    let started = tokio::time::Instant::now();
    server.shut_down().await.unwrap();
    assert!(started.elapsed() < SOON);
    busy.expect_closed().await;
    assert_eq!(hooks.closes_of("busy"), [CloseReason::Shutdown]);
}

#[tokio::test]
async fn connection_threads_serve_every_client_and_drain_at_shutdown() {
    let server = Server::start(options(|o| {
        o.connection_threads = 2;
        o.shutdown_grace = Duration::from_secs(5);
    }))
    .await;
    let mut clients = Vec::new();
    for user in ["ann", "bob", "cat", "dan", "eve"] {
        clients.push(server.client(user).await);
    }
    for round in 0..3 {
        for (index, client) in clients.iter_mut().enumerate() {
            let text = format!("{index}:{round}");
            client.send(MessageType::Sync, &K::string(&text)).await;
            assert_eq!(
                client.receive().await,
                (MessageType::Response, K::string(&text))
            );
        }
    }
    clients[0]
        .send(MessageType::Sync, &K::string("slow:300"))
        .await;
    let hooks = Arc::clone(&server.hooks);
    eventually("query in flight", || hooks.syncs().len() == 16).await;
    let stopped = tokio::spawn(server.shut_down());
    assert_eq!(
        clients[0].receive().await,
        (MessageType::Response, K::string("slow:300"))
    );
    for client in &mut clients {
        client.expect_closed().await;
    }
    stopped.await.unwrap().unwrap();
    assert_eq!(hooks.closes_of("ann"), [CloseReason::Shutdown]);
    assert_eq!(hooks.closes_of("eve"), [CloseReason::Shutdown]);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = Server::default().await;
    let addr = server.addr;
    server.shut_down().await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// A real client: PyKX, when a Python with it is named.
// ---------------------------------------------------------------------------------------------

/// PyKX in unlicensed mode connects without `no_ctx` (its context queries are answered by the
/// server) and runs a query.
///
/// Runs when `QGATE_TEST_PYKX_PYTHON` names a Python interpreter that has `pykx` installed, for
/// example `python3 -m venv /tmp/pykx && /tmp/pykx/bin/pip install pykx` and
/// `QGATE_TEST_PYKX_PYTHON=/tmp/pykx/bin/python`; otherwise it does nothing.
#[tokio::test]
async fn pykx_connects_with_its_context_interface() {
    let Some(python) = std::env::var_os("QGATE_TEST_PYKX_PYTHON") else {
        return;
    };
    let path = temp_file("users.txt");
    std::fs::write(&path, "pykx:0x5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8\n").unwrap();
    let server = Server::start(with_password_file(path, false)).await;
    let script = format!(
        "import pykx as kx\n\
         conn = kx.SyncQConnection('127.0.0.1', {port}, username='pykx', password='password')\n\
         print(conn('1+1').py())\n\
         conn.close()\n",
        port = server.addr.port()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", &script])
            .env("PYKX_UNLICENSED", "true")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pykx failed: {stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "b'1+1'");
    // The context queries were answered before the hooks: only the user's query reached them.
    assert_eq!(server.hooks.syncs(), [K::string("1+1")]);
    server.shut_down().await.unwrap();
}

#[path = "server/hardening.rs"]
mod hardening;
#[path = "server/http.rs"]
mod http;
#[path = "server/ws.rs"]
mod ws;
