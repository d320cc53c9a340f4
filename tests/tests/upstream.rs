//! The test upstream (`qgate_e2e::upstream`) against a raw IPC client written on `qgate-ipc`:
//! the handshake and refused logins, every scripted call, the order of a callback before its
//! reply, a subscription receiving publications in order and filtered by sym, dying mid-reply
//! and garbage as a client sees them, compression, TLS (with certificates made here by rcgen),
//! serialised evaluation (a `sleep` on one connection holds back another's query), and the
//! `qgate-upstream` binary's flags.
//!
//! The tests are plain `#[test]`s with blocking sockets, as most users of the upstream will be;
//! one is a `#[tokio::test]`, to show that an upstream starts and stops inside a runtime too.
//! Every read is bounded by [`SOON`], so a broken upstream fails a test instead of hanging it;
//! nothing here measures time.

// The helpers below are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::{
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use qgate_e2e::upstream::{Kind, Received, SYMS, Stats, Upstream, UpstreamOptions, UpstreamTls};
use qgate_ipc::{
    Atom, HEADER_LEN, Header, K, Limits, Message, MessageType, VectorData, encode_message,
};

/// The bound on anything that should happen "at once": generous, because the machine is shared.
const SOON: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A raw IPC client.
// ---------------------------------------------------------------------------------------------

/// A blocking q IPC client over any stream.
struct Client<S: Read + Write> {
    stream: S,
}

impl Client<TcpStream> {
    /// Connects and logs in with `credentials` and capability 3.
    fn connect(upstream: &Upstream, credentials: &str) -> Self {
        let (client, byte) = Self::login(upstream.addr(), &format!("{credentials}\x03\0"));
        assert_eq!(byte, Some(3), "login as {credentials:?} refused");
        client
    }

    /// Connects anonymously.
    fn anonymous(upstream: &Upstream) -> Self {
        Self::connect(upstream, "")
    }

    /// Connects and sends `handshake` as given; returns the byte answered, `None` when the
    /// upstream closed without one.
    fn login(addr: SocketAddr, handshake: &str) -> (Self, Option<u8>) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(SOON)).unwrap();
        let mut client = Self { stream };
        let byte = client.handshake(handshake.as_bytes());
        (client, byte)
    }
}

impl<S: Read + Write> Client<S> {
    fn handshake(&mut self, handshake: &[u8]) -> Option<u8> {
        self.stream.write_all(handshake).ok()?;
        self.stream.flush().ok()?;
        let mut byte = [0_u8; 1];
        match self.stream.read(&mut byte) {
            Ok(1) => Some(byte[0]),
            _ => None,
        }
    }

    fn send(&mut self, message_type: MessageType, value: &K) {
        let bytes = encode_message(message_type, value).unwrap();
        self.stream.write_all(&bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads one whole message (decompressed), or the error that ended the stream.
    fn read(&mut self) -> io::Result<Message> {
        let mut frame = vec![0_u8; HEADER_LEN];
        self.stream.read_exact(&mut frame)?;
        let header = Header::parse(&frame, &Limits::new(1 << 30))
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?
            .unwrap();
        frame.resize(header.len(), 0);
        self.stream.read_exact(&mut frame[HEADER_LEN..])?;
        Message::from_frame(frame, &Limits::new(1 << 30))
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }

    /// Reads one message and decodes it, checking its type.
    fn read_value(&mut self, expect: MessageType) -> K {
        let message = self.read().unwrap();
        assert_eq!(message.header.message_type, expect);
        qgate_ipc::decode(message.body(), message.header.endian).unwrap()
    }

    /// A sync query and its reply (a q error is `K::Error`).
    fn query(&mut self, value: &K) -> K {
        self.send(MessageType::Sync, value);
        self.read_value(MessageType::Response)
    }

    /// Whether the upstream has closed the connection: the next read ends without a message.
    fn closed(&mut self) -> bool {
        let mut byte = [0_u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// A call list `` (`name;args...) ``.
fn call(name: &str, args: Vec<K>) -> K {
    let mut items = vec![K::symbol(name)];
    items.extend(args);
    K::list(items)
}

/// A nullary call as q sends it: `` (`name;::) ``.
fn call0(name: &str) -> K {
    call(name, vec![K::Null])
}

fn int(value: i32) -> K {
    K::Atom(Atom::Int(value))
}

/// The values of a dictionary reply whose keys are symbols.
fn dict_values(reply: &K) -> Vec<(String, K)> {
    let K::Dict(dict) = reply else {
        panic!("not a dictionary: {reply}")
    };
    let K::Vector(keys) = &*dict.keys else {
        panic!("keys are not a vector: {reply}")
    };
    let VectorData::Symbol(keys) = &keys.data else {
        panic!("keys are not symbols: {reply}")
    };
    let values: Vec<K> = match &*dict.values {
        K::List(list) => list.items.clone(),
        K::Vector(vector) => (0..vector.len())
            .map(|i| K::Atom(vector.data.atom(i).unwrap()))
            .collect(),
        other => panic!("values: {other}"),
    };
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .zip(values)
        .collect()
}

fn dict_get(reply: &K, key: &str) -> K {
    dict_values(reply)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {reply}"))
        .1
}

/// The handle (`.z.w`) `whoami[]` reports.
fn handle_of<S: Read + Write>(client: &mut Client<S>) -> i32 {
    match dict_get(&client.query(&call0("whoami")), "handle") {
        K::Atom(Atom::Int(handle)) => handle,
        other => panic!("handle: {other}"),
    }
}

fn long_column(table: &K, name: &str) -> Vec<i64> {
    let K::Table(table) = table else {
        panic!("not a table: {table}")
    };
    match table.column(name.as_bytes()) {
        Some(K::Vector(vector)) => match &vector.data {
            VectorData::Long(values) => values.clone(),
            other => panic!("{name}: {other:?}"),
        },
        other => panic!("{name}: {other:?}"),
    }
}

fn sym_column(table: &K, name: &str) -> Vec<String> {
    let K::Table(table) = table else {
        panic!("not a table: {table}")
    };
    match table.column(name.as_bytes()) {
        Some(K::Vector(vector)) => match &vector.data {
            VectorData::Symbol(values) => values
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            other => panic!("{name}: {other:?}"),
        },
        other => panic!("{name}: {other:?}"),
    }
}

fn start(options: UpstreamOptions) -> Upstream {
    Upstream::start(options).unwrap()
}

fn default_upstream() -> Upstream {
    start(UpstreamOptions::default())
}

/// Waits until `done` holds of the upstream's stats, polling; fails after [`SOON`].
fn wait_for(upstream: &Upstream, what: &str, done: impl Fn(&Stats) -> bool) {
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let stats = upstream.stats();
        if done(&stats) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {what}: {stats:?}"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a polling test thread, not async"
        )]
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake and logins.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_handshake_answers_min_of_the_capability_and_3() {
    let upstream = default_upstream();
    for (handshake, expect) in [
        ("user:password\x03\0", 3),
        // q 4.x sends 6 and its OS user name without a password.
        ("katrina\x06\0", 3),
        ("anonymous\x01\0", 1),
        // aiokdb with no credentials.
        ("\x03\0", 3),
        // qPython's fallback: no capability byte.
        ("user:pass\0", 0),
    ] {
        let (mut client, byte) = Client::login(upstream.addr(), handshake);
        assert_eq!(byte, Some(expect), "{handshake:?}");
        assert_eq!(client.query(&call("echo", vec![K::long(7)])), K::long(7));
    }
}

#[test]
fn a_refused_login_is_closed_without_a_byte() {
    let upstream = start(UpstreamOptions {
        users: vec![("svc".into(), "secret".into()), ("bob".into(), "pw".into())],
        ..UpstreamOptions::default()
    });
    for handshake in [
        "svc:wrong\x03\0",
        "svc\x03\0",
        "nobody:secret\x03\0",
        "\x03\0",
        "bob:secret\x03\0",
    ] {
        let (mut client, byte) = Client::login(upstream.addr(), handshake);
        assert_eq!(byte, None, "{handshake:?} was accepted");
        assert!(client.closed());
    }
    let mut svc = Client::connect(&upstream, "svc:secret");
    let mut bob = Client::connect(&upstream, "bob:pw");
    assert_eq!(
        dict_get(&svc.query(&call0("whoami")), "user"),
        K::symbol("svc")
    );
    assert_eq!(
        dict_get(&bob.query(&call0("whoami")), "user"),
        K::symbol("bob")
    );
    let stats = upstream.stats();
    assert_eq!((stats.refused, stats.accepted, stats.open), (5, 2, 2));
}

#[test]
fn handles_are_the_lowest_free_and_unique_among_live_connections() {
    let upstream = default_upstream();
    let mut clients: Vec<_> = (0..5).map(|_| Client::anonymous(&upstream)).collect();
    let mut handles: Vec<i32> = clients.iter_mut().map(handle_of).collect();
    handles.sort_unstable();
    assert_eq!(handles, [4, 5, 6, 7, 8]);
    // A closed connection's handle goes to the next one, as a file descriptor would.
    let gone = handle_of(&mut clients[2]);
    drop(clients.remove(2));
    wait_for(&upstream, "closed a connection", |s| s.open == 4);
    let mut next = Client::anonymous(&upstream);
    assert_eq!(handle_of(&mut next), gone);
    assert_eq!(handle_of(&mut Client::anonymous(&upstream)), 9);
}

#[test]
fn a_first_message_sent_with_the_handshake_is_served() {
    // A client that does not wait for the capability byte before its first query.
    let upstream = default_upstream();
    let mut bytes = b"eager\x03\0".to_vec();
    bytes.extend(encode_message(MessageType::Sync, &call("echo", vec![K::long(1)])).unwrap());
    let stream = TcpStream::connect(upstream.addr()).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut client = Client { stream };
    assert_eq!(client.handshake(&bytes), Some(3));
    assert_eq!(client.read_value(MessageType::Response), K::long(1));
}

// ---------------------------------------------------------------------------------------------
// Scripted calls.
// ---------------------------------------------------------------------------------------------

#[test]
fn echo_replies_its_argument_or_the_list_of_them() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    let values = [
        K::long(42),
        int(-7),
        K::Atom(Atom::Float(3.5)),
        K::string("hello"),
        K::symbol("sym"),
        K::symbols(["a", "b", "c"]),
        K::vector(VectorData::Timestamp(vec![0, 1, i64::MIN])),
        K::dict(
            K::symbols(["a", "b"]),
            K::vector(VectorData::Int(vec![2, 3])),
        ),
        K::table(["x"], vec![K::vector(VectorData::Long(vec![1, 2, 3]))]),
        K::list(vec![K::long(1), K::string("two"), K::Null]),
        K::Null,
    ];
    for value in values {
        assert_eq!(client.query(&call("echo", vec![value.clone()])), value);
        // The head as a string, as PyKX, qPython and the C API send calls.
        let string_headed = K::list(vec![K::string("echo"), value.clone()]);
        assert_eq!(client.query(&string_headed), value);
    }
    assert_eq!(
        client.query(&call("echo", vec![K::long(1), K::symbol("x")])),
        K::list(vec![K::long(1), K::symbol("x")])
    );
}

#[test]
fn whoami_names_the_upstream_the_user_and_the_handle() {
    let upstream = start(UpstreamOptions {
        name: "replica-b".into(),
        ..UpstreamOptions::default()
    });
    let mut client = Client::connect(&upstream, "alice:pw");
    let reply = client.query(&call0("whoami"));
    let handle = upstream.received()[0].handle;
    assert_eq!(
        reply,
        K::dict(
            K::symbols(["upstream", "user", "handle"]),
            K::list(vec![
                K::symbol("replica-b"),
                K::symbol("alice"),
                int(handle)
            ]),
        )
    );
    // With no argument at all, as `enlist `whoami` would send it.
    assert_eq!(client.query(&K::list(vec![K::symbol("whoami")])), reply);
    // Two arguments are a rank error, as for a q lambda of no parameters.
    assert_eq!(
        client.query(&call("whoami", vec![K::long(1), K::long(2)])),
        K::error("rank")
    );
}

#[test]
fn fail_replies_a_q_error_and_the_connection_goes_on() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    assert_eq!(
        client.query(&call("fail", vec![K::string("boom")])),
        K::error("boom")
    );
    assert_eq!(
        client.query(&call("fail", vec![K::symbol("nope")])),
        K::error("nope")
    );
    assert_eq!(
        client.query(&call("fail", vec![K::long(1)])),
        K::error("type")
    );
    assert_eq!(client.query(&call("echo", vec![K::long(2)])), K::long(2));
}

#[test]
fn sleep_replies_its_argument_after_waiting() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    assert_eq!(client.query(&call("sleep", vec![int(5)])), int(5));
    assert_eq!(client.query(&call("sleep", vec![K::long(1)])), K::long(1));
    assert_eq!(
        client.query(&call("sleep", vec![K::long(-1)])),
        K::error("domain")
    );
    assert_eq!(
        client.query(&call("sleep", vec![K::string("1")])),
        K::error("type")
    );
}

#[test]
fn bytes_replies_a_byte_vector_of_i_mod_256() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    for n in [0_usize, 1, 255, 256, 70_000, 300_001] {
        let reply = client.query(&call("bytes", vec![K::long(n as i64)]));
        let expect: Vec<u8> = (0..n).map(|i| i as u8).collect();
        assert_eq!(reply, K::vector(VectorData::Byte(expect)), "bytes[{n}]");
    }
    assert_eq!(
        client.query(&call("bytes", vec![K::long(-1)])),
        K::error("domain")
    );
    assert_eq!(
        client.query(&call("bytes", vec![K::long(1 << 31)])),
        K::error("limit")
    );
}

#[test]
fn a_100_mb_reply_streams_out() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    let n = 100_000_000_usize;
    client.send(MessageType::Sync, &call("bytes", vec![K::long(n as i64)]));
    // Read it in pieces, as a streaming client would, checking every byte.
    let mut prefix = [0_u8; HEADER_LEN + 6];
    client.stream.read_exact(&mut prefix).unwrap();
    let header = Header::parse(&prefix, &Limits::new(1 << 30))
        .unwrap()
        .unwrap();
    assert_eq!(header.message_type, MessageType::Response);
    assert!(!header.compressed);
    assert_eq!(header.len(), HEADER_LEN + 6 + n);
    assert_eq!(&prefix[HEADER_LEN..], &[4, 0, 0x00, 0xe1, 0xf5, 0x05]);
    let mut buffer = vec![0_u8; 1 << 20];
    let mut at = 0_usize;
    while at < n {
        let want = buffer.len().min(n - at);
        client.stream.read_exact(&mut buffer[..want]).unwrap();
        assert!(
            buffer[..want]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (at + i) as u8),
            "wrong byte near {at}"
        );
        at += want;
    }
    assert_eq!(client.query(&call("echo", vec![K::long(1)])), K::long(1));
}

#[test]
fn die_writes_a_header_and_half_the_body_then_closes() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    client.send(MessageType::Sync, &call("die", vec![K::long(1000)]));
    let mut everything = Vec::new();
    client.stream.read_to_end(&mut everything).unwrap();
    let header = Header::parse(&everything, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(header.message_type, MessageType::Response);
    assert_eq!(header.len(), HEADER_LEN + 6 + 1000);
    assert_eq!(everything.len(), HEADER_LEN + (6 + 1000) / 2);
    // Another connection is not affected.
    let mut other = Client::anonymous(&upstream);
    assert_eq!(other.query(&call("echo", vec![K::long(1)])), K::long(1));
    wait_for(&upstream, "closed the dead connection", |s| s.open == 1);
}

#[test]
fn garbage_is_not_a_header_and_the_connection_stays_open() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    client.send(MessageType::Sync, &call0("garbage"));
    let mut garbage = [0_u8; 16];
    client.stream.read_exact(&mut garbage).unwrap();
    assert!(Header::parse(&garbage, &Limits::default()).is_err());
    // The connection still answers, right after the 16 bytes.
    assert_eq!(client.query(&call("echo", vec![K::long(3)])), K::long(3));
}

#[test]
fn close_closes_without_a_reply() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    let mut other = Client::anonymous(&upstream);
    client.send(MessageType::Sync, &call0("close"));
    assert!(client.closed());
    assert_eq!(other.query(&call("echo", vec![K::long(1)])), K::long(1));
}

#[test]
fn callback_sends_an_async_message_before_its_reply() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    client.send(MessageType::Sync, &call("callback", vec![K::string("hi")]));
    assert_eq!(
        client.read_value(MessageType::Async),
        K::list(vec![K::symbol("callback"), K::string("hi")])
    );
    assert_eq!(client.read_value(MessageType::Response), K::string("hi"));
}

#[test]
fn free_text_probes_and_unknown_calls_get_a_receipt() {
    let upstream = start(UpstreamOptions {
        name: "rdb".into(),
        ..UpstreamOptions::default()
    });
    let mut client = Client::connect(&upstream, "carol:pw");
    let handle = handle_of(&mut client);
    let receipt = |query: &str| {
        K::dict(
            K::symbols(["upstream", "user", "handle", "query"]),
            K::list(vec![
                K::symbol("rdb"),
                K::symbol("carol"),
                int(handle),
                K::string(query),
            ]),
        )
    };
    for text in ["select from trade", "1", "::", ""] {
        assert_eq!(client.query(&K::string(text)), receipt(text));
    }
    assert_eq!(
        client.query(&call("nosuch", vec![K::long(1)])),
        receipt("(`nosuch;1)")
    );
    assert_eq!(client.query(&K::long(5)), receipt("5"));
}

#[test]
fn pykx_context_queries_get_the_answers_of_q() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    let lambda = r#"k){x:. x;$[99h<@x;:`$"_pykx_fn_marker";99h~@x;if[` in!x;if[(::)~x`;:`$"_pykx_ctx_marker"]]]x}"#;
    assert_eq!(
        client.query(&K::list(vec![K::string(lambda), K::symbol(".q")])),
        K::symbol("_pykx_ctx_marker")
    );
    let names = client.query(&K::list(vec![K::string("key"), K::symbol(".q")]));
    assert!(names.len() > 100, "{names}");
    assert_eq!(
        client.query(&K::string("@[{2<count .s};(::);{0b}]")),
        K::Atom(Atom::Boolean(false))
    );
}

#[test]
fn received_and_stats_report_every_message() {
    let upstream = default_upstream();
    let mut alice = Client::connect(&upstream, "alice:pw");
    let mut bob = Client::connect(&upstream, "bob:pw");
    let alice_handle = handle_of(&mut alice);
    alice.send(MessageType::Async, &K::string("async one"));
    alice.send(MessageType::Async, &call("echo", vec![K::long(9)]));
    // Each connection has a reader of its own: wait for alice's to record hers before bob's.
    wait_for(&upstream, "received the async messages", |s| {
        s.async_messages == 2
    });
    bob.query(&K::string("select from trade"));
    let table = alice.query(&call0("received"));
    let expect = [
        (alice_handle, "alice", Kind::Sync, "(`whoami;::)"),
        (alice_handle, "alice", Kind::Async, "async one"),
        (alice_handle, "alice", Kind::Async, "(`echo;9)"),
        (-1, "bob", Kind::Sync, "select from trade"),
        (alice_handle, "alice", Kind::Sync, "(`received;::)"),
    ];
    let received = upstream.received();
    assert_eq!(received.len(), expect.len(), "{received:#?}");
    for (got, (handle, user, kind, text)) in received.iter().zip(expect) {
        if handle != -1 {
            assert_eq!(got.handle, handle);
        }
        assert_eq!(
            (got.user.as_str(), got.kind, got.text.as_str()),
            (user, kind, text)
        );
        assert_eq!(got.as_user, None);
    }
    // The same, as a q table.
    assert_eq!(
        sym_column(&table, "kind"),
        ["sync", "async", "async", "sync", "sync"]
    );
    assert_eq!(
        sym_column(&table, "user"),
        ["alice", "alice", "alice", "bob", "alice"]
    );
    assert_eq!(sym_column(&table, "as"), ["", "", "", "", ""]);
    let K::Table(t) = &table else { unreachable!() };
    assert_eq!(
        t.column(b"text"),
        Some(&K::list(expect.iter().map(|e| K::string(e.3)).collect()))
    );
    assert!(matches!(
        t.column(b"handle"),
        Some(K::Vector(v)) if matches!(&v.data, VectorData::Int(h) if h[0] == alice_handle)
    ));

    let stats = alice.query(&call0("stats"));
    let get = |key: &str| match dict_get(&stats, key) {
        K::Atom(Atom::Long(value)) => value,
        other => panic!("{key}: {other}"),
    };
    assert_eq!(
        (
            get("open"),
            get("accepted"),
            get("sync"),
            get("async"),
            get("peak")
        ),
        (2, 2, 4, 2, 2)
    );
    assert_eq!(
        (
            get("refused"),
            get("busy"),
            get("waiting"),
            get("forgotten")
        ),
        (0, 1, 0, 0)
    );
    drop(bob);
    wait_for(&upstream, "closed bob", |s| s.open == 1 && s.peak == 2);
}

#[test]
fn async_calls_are_performed_without_a_reply() {
    let upstream = default_upstream();
    let mut subscriber = Client::anonymous(&upstream);
    subscriber.query(&call(".u.sub", vec![K::symbol("trade"), K::symbol("")]));
    let mut feed = Client::anonymous(&upstream);
    // A feed's update, as a tickerplant receives it: recorded and counted, nothing sent back.
    feed.send(
        MessageType::Async,
        &call(".u.upd", vec![K::symbol("trade"), K::long(1)]),
    );
    feed.send(
        MessageType::Async,
        &call("publish", vec![K::symbol("trade"), K::long(1), K::long(2)]),
    );
    // An async error is dropped, as q drops it.
    feed.send(
        MessageType::Async,
        &call("fail", vec![K::string("dropped")]),
    );
    // The next reply the feed reads is its sync query's.
    assert_eq!(feed.query(&call("echo", vec![K::long(4)])), K::long(4));
    let K::List(upd) = subscriber.read_value(MessageType::Async) else {
        panic!("not a list")
    };
    assert_eq!(upd.items[..2], [K::symbol("upd"), K::symbol("trade")]);
    assert_eq!(upd.items[2].len(), 2);
    assert_eq!(upstream.stats().async_messages, 3);
}

// ---------------------------------------------------------------------------------------------
// Subscriptions.
// ---------------------------------------------------------------------------------------------

/// Reads an `upd` message: its table and its data.
fn read_upd<S: Read + Write>(client: &mut Client<S>) -> (String, K) {
    let K::List(list) = client.read_value(MessageType::Async) else {
        panic!("not a list")
    };
    let [head, table, data] = &list.items[..] else {
        panic!("not (`upd;t;data): {:?}", list.items)
    };
    assert_eq!(head, &K::symbol("upd"));
    let K::Atom(Atom::Symbol(table)) = table else {
        panic!("table: {table}")
    };
    (String::from_utf8_lossy(table).into_owned(), data.clone())
}

#[test]
fn subscribers_receive_publications_in_order_filtered_by_sym() {
    let upstream = default_upstream();
    let mut some = Client::anonymous(&upstream);
    let mut all = Client::anonymous(&upstream);
    let mut publisher = Client::anonymous(&upstream);

    let reply = some.query(&call(
        ".u.sub",
        vec![K::symbol("trade"), K::symbols(["IBM", "AAPL"])],
    ));
    let K::List(pair) = &reply else {
        panic!("{reply}")
    };
    assert_eq!(pair.items[0], K::symbol("trade"));
    assert_eq!(pair.items[1].len(), 0);
    assert_eq!(
        sym_column(&pair.items[1], "sym"),
        Vec::<String>::new(),
        "the schema is an empty table"
    );
    // `` .u.sub[`;`] ``: every table, one (t;schema) each.
    let reply = all.query(&call(".u.sub", vec![K::symbol(""), K::symbol("")]));
    assert_eq!(reply.len(), 2);

    assert_eq!(
        publisher.query(&call(
            "publish",
            vec![K::symbol("trade"), K::long(3), K::long(10)]
        )),
        K::long(3)
    );
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let (table, data) = read_upd(&mut all);
        assert_eq!(table, "trade");
        assert_eq!(data.len(), 10);
        let syms = sym_column(&data, "sym");
        let seq = long_column(&data, "seq");
        for (sym, seq) in syms.iter().zip(&seq) {
            assert_eq!(sym, SYMS[*seq as usize % SYMS.len()]);
        }
        seqs.extend(seq);
    }
    // Every row, in order, without gaps.
    assert_eq!(seqs, (0..30).collect::<Vec<_>>());
    for _ in 0..3 {
        let (table, data) = read_upd(&mut some);
        assert_eq!(table, "trade");
        assert!(
            sym_column(&data, "sym")
                .iter()
                .all(|s| s == "IBM" || s == "AAPL"),
            "{data}"
        );
    }
    // A publication to `quote` reaches the subscriber to every table only; `some` sees the next
    // `trade` publication next, which shows it got nothing in between.
    publisher.query(&call(
        "publish",
        vec![K::symbol("quote"), K::long(1), K::long(5)],
    ));
    publisher.query(&call(
        "publish",
        vec![K::symbol("trade"), K::long(1), K::long(5)],
    ));
    assert_eq!(read_upd(&mut all).0, "quote");
    assert_eq!(read_upd(&mut all).0, "trade");
    let (table, data) = read_upd(&mut some);
    assert_eq!(table, "trade");
    assert_eq!(long_column(&data, "seq"), [35, 37]);
    // kdb+tick's errors.
    assert_eq!(
        publisher.query(&call(".u.sub", vec![K::symbol("nosuch"), K::symbol("")])),
        K::error("nosuch")
    );
    assert_eq!(
        publisher.query(&call(
            "publish",
            vec![K::symbol("nosuch"), K::long(1), K::long(1)]
        )),
        K::error("nosuch")
    );
}

#[test]
fn a_subscription_ends_with_its_connection() {
    let upstream = default_upstream();
    let mut publisher = Client::anonymous(&upstream);
    {
        let mut gone = Client::anonymous(&upstream);
        gone.query(&call(".u.sub", vec![K::symbol("trade"), K::symbol("")]));
    }
    wait_for(&upstream, "closed the subscriber", |s| s.open == 1);
    let mut late = Client::anonymous(&upstream);
    late.query(&call(".u.sub", vec![K::symbol("trade"), K::symbol("")]));
    publisher.query(&call(
        "publish",
        vec![K::symbol("trade"), K::long(2), K::long(1)],
    ));
    assert_eq!(long_column(&read_upd(&mut late).1, "seq"), [0]);
    assert_eq!(long_column(&read_upd(&mut late).1, "seq"), [1]);
}

// ---------------------------------------------------------------------------------------------
// The wrap function (execas).
// ---------------------------------------------------------------------------------------------

#[test]
fn the_wrap_function_runs_a_message_as_another_user() {
    let upstream = default_upstream();
    let mut gateway = Client::connect(&upstream, "svc:pw");
    let handle = handle_of(&mut gateway);
    let wrapped = |user: &str, message: K| call(".gw.execas", vec![K::symbol(user), message]);
    assert_eq!(
        gateway.query(&wrapped("alice", call0("whoami"))),
        K::dict(
            K::symbols(["upstream", "user", "handle"]),
            K::list(vec![K::symbol("upstream"), K::symbol("alice"), int(handle)]),
        )
    );
    let receipt = gateway.query(&wrapped("bob", K::string("select from trade")));
    assert_eq!(dict_get(&receipt, "user"), K::symbol("bob"));
    assert_eq!(dict_get(&receipt, "query"), K::string("select from trade"));
    assert_eq!(
        gateway.query(&wrapped("bob", call("fail", vec![K::string("no")]))),
        K::error("no")
    );
    assert_eq!(
        gateway.query(&call(".gw.execas", vec![K::symbol("bob")])),
        K::error("rank")
    );
    let received: Vec<Received> = upstream.received();
    let last = &received[received.len() - 3..];
    assert_eq!(
        last.iter()
            .map(|r| (r.user.as_str(), r.as_user.as_deref(), r.text.as_str()))
            .collect::<Vec<_>>(),
        [
            ("svc", Some("bob"), "select from trade"),
            ("svc", Some("bob"), "(`fail;\"no\")"),
            ("svc", None, "(`.gw.execas;`bob)"),
        ]
    );
    let table = gateway.query(&call0("received"));
    assert_eq!(sym_column(&table, "as")[1..3], ["alice", "bob"]);
}

#[test]
fn the_wrap_function_has_the_name_it_is_given() {
    let upstream = start(UpstreamOptions {
        wrap: ".pm.execas".into(),
        ..UpstreamOptions::default()
    });
    let mut gateway = Client::connect(&upstream, "svc:pw");
    let reply = gateway.query(&call(".pm.execas", vec![K::symbol("dan"), call0("whoami")]));
    assert_eq!(dict_get(&reply, "user"), K::symbol("dan"));
    // The default name is then just an unknown call.
    let reply = gateway.query(&call(".gw.execas", vec![K::symbol("dan"), call0("whoami")]));
    assert_eq!(dict_get(&reply, "user"), K::symbol("svc"));
}

// ---------------------------------------------------------------------------------------------
// Evaluation order.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_sleep_holds_back_every_other_connections_query_when_serialised() {
    let upstream = default_upstream();
    let mut sleeper = Client::anonymous(&upstream);
    let mut other = Client::anonymous(&upstream);
    // Long enough that it cannot end during the test: the upstream's stop cuts it.
    sleeper.send(MessageType::Sync, &call("sleep", vec![K::long(600_000)]));
    wait_for(&upstream, "started the sleep", |s| s.busy == 1);
    other.send(MessageType::Sync, &call("echo", vec![K::long(1)]));
    // The other query waits for the evaluation lock, held by the sleep.
    wait_for(&upstream, "held back the other query", |s| s.waiting == 1);
    assert_eq!(upstream.stats().busy, 1);
    drop(upstream);
    assert!(sleeper.closed());
    assert!(other.closed());
}

#[test]
fn a_sleep_holds_back_nothing_when_not_serialised() {
    let upstream = start(UpstreamOptions {
        serialise: false,
        ..UpstreamOptions::default()
    });
    let mut sleeper = Client::anonymous(&upstream);
    let mut other = Client::anonymous(&upstream);
    sleeper.send(MessageType::Sync, &call("sleep", vec![K::long(600_000)]));
    wait_for(&upstream, "started the sleep", |s| s.busy == 1);
    assert_eq!(other.query(&call("echo", vec![K::long(1)])), K::long(1));
    wait_for(&upstream, "finished the echo", |s| s.busy == 1);
    drop(upstream);
    assert!(sleeper.closed());
}

#[test]
fn sync_messages_are_answered_in_order_and_pipelining_is_counted() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    // Three queries in one write, before any reply: the first one sleeps, so the other two
    // arrive while it is in flight.
    let mut bytes = Vec::new();
    for value in [
        call("sleep", vec![K::long(1000)]),
        call("echo", vec![K::long(2)]),
        call("echo", vec![K::long(3)]),
    ] {
        bytes.extend(encode_message(MessageType::Sync, &value).unwrap());
    }
    client.stream.write_all(&bytes).unwrap();
    for expect in [1000, 2, 3] {
        assert_eq!(client.read_value(MessageType::Response), K::long(expect));
    }
    assert_eq!(upstream.stats().pipelined, 3);
}

// ---------------------------------------------------------------------------------------------
// Compression and bad input.
// ---------------------------------------------------------------------------------------------

#[test]
fn large_replies_are_compressed_only_when_asked() {
    for compress in [false, true] {
        let upstream = start(UpstreamOptions {
            compress,
            ..UpstreamOptions::default()
        });
        let mut client = Client::anonymous(&upstream);
        let big = K::vector(VectorData::Long(vec![7; 10_000]));
        client.send(MessageType::Sync, &call("echo", vec![big.clone()]));
        let reply = client.read().unwrap();
        assert_eq!(reply.header.compressed, compress);
        assert_eq!(
            qgate_ipc::decode(reply.body(), reply.header.endian).unwrap(),
            big
        );
        // Small replies are never compressed.
        client.send(MessageType::Sync, &call("echo", vec![K::long(1)]));
        assert!(!client.read().unwrap().header.compressed);
        // Nor is `i mod 256`, which q's compression cannot halve.
        client.send(MessageType::Sync, &call("bytes", vec![K::long(100_000)]));
        assert!(!client.read().unwrap().header.compressed);
        // Publications are compressed as replies are.
        let mut publisher = Client::anonymous(&upstream);
        client.query(&call(".u.sub", vec![K::symbol("trade"), K::symbol("")]));
        publisher.query(&call(
            "publish",
            vec![K::symbol("trade"), K::long(1), K::long(1000)],
        ));
        let upd = client.read().unwrap();
        assert_eq!(upd.header.message_type, MessageType::Async);
        assert_eq!(upd.header.compressed, compress);
    }
}

#[test]
fn compressed_requests_are_read() {
    let upstream = default_upstream();
    let mut client = Client::anonymous(&upstream);
    let value = K::vector(VectorData::Long(vec![5; 2000]));
    let plain = encode_message(MessageType::Sync, &call("echo", vec![value.clone()])).unwrap();
    let compressed = qgate_ipc::compress(&plain).unwrap();
    client.stream.write_all(&compressed).unwrap();
    assert_eq!(client.read_value(MessageType::Response), value);
}

#[test]
fn a_bad_message_closes_only_its_connection() {
    let upstream = default_upstream();
    let mut bad = Client::anonymous(&upstream);
    let mut good = Client::anonymous(&upstream);
    // A header that claims a body, then a body that is no q value.
    let mut frame = Header::little(MessageType::Sync, 12).to_bytes().to_vec();
    frame.extend([0x70, 0xff, 0xff, 0xff]);
    bad.stream.write_all(&frame).unwrap();
    assert!(bad.closed());
    // A header no q peer sends.
    let mut worse = Client::anonymous(&upstream);
    worse.stream.write_all(&[9; 16]).unwrap();
    assert!(worse.closed());
    assert_eq!(good.query(&call("echo", vec![K::long(1)])), K::long(1));
}

// ---------------------------------------------------------------------------------------------
// In a runtime.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn starts_and_stops_inside_a_runtime() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let upstream = default_upstream();
    let mut stream = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .unwrap();
    stream.write_all(b"async:pw\x03\0").await.unwrap();
    let mut byte = [0_u8; 1];
    stream.read_exact(&mut byte).await.unwrap();
    assert_eq!(byte, [3]);
    let request = encode_message(MessageType::Sync, &call("echo", vec![K::long(8)])).unwrap();
    stream.write_all(&request).await.unwrap();
    let mut reply = vec![0_u8; 17];
    tokio::time::timeout(SOON, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_frame(reply, &Limits::default()).unwrap();
    assert_eq!(
        qgate_ipc::decode(reply.body(), reply.header.endian).unwrap(),
        K::long(8)
    );
    // Dropped inside the runtime: its own runtime ends on its own thread.
    drop(upstream);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(SOON, stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(read.is_err() || rest.is_empty());
}

// ---------------------------------------------------------------------------------------------
// TLS.
// ---------------------------------------------------------------------------------------------

mod tls {
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::{
        ClientConfig, ClientConnection, RootCertStore, StreamOwned, pki_types::ServerName,
    };
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

    /// A CA made for one test, its server certificate for localhost, and a client certificate,
    /// written to a directory of the test's own.
    struct Pki {
        dir: PathBuf,
        root_pem: String,
        client: (String, String),
    }

    impl Pki {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("qgate-upstream-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "upstream test root");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let root_key = KeyPair::generate().unwrap();
            let root_pem = params.self_signed(&root_key).unwrap().pem();
            let issuer = Issuer::from_params(&params, &root_key);
            let leaf = |cn: &str, sans: Vec<String>, usage| {
                let mut params = CertificateParams::new(sans).unwrap();
                params.distinguished_name.push(DnType::CommonName, cn);
                params.extended_key_usages = vec![usage];
                let key = KeyPair::generate().unwrap();
                let cert = params.signed_by(&key, &issuer).unwrap();
                (cert.pem(), key.serialize_pem())
            };
            let (server, server_key) = leaf(
                "upstream",
                vec!["localhost".into(), "127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            let client = leaf(
                "gateway",
                vec!["gateway.example".into()],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
            fs::write(dir.join("server.pem"), server).unwrap();
            fs::write(dir.join("server.key"), server_key).unwrap();
            fs::write(dir.join("root.pem"), &root_pem).unwrap();
            Self {
                dir,
                root_pem,
                client,
            }
        }

        fn options(&self, client_ca: bool) -> UpstreamTls {
            UpstreamTls {
                cert_chain: self.dir.join("server.pem"),
                key: self.dir.join("server.key"),
                client_ca: client_ca.then(|| self.dir.join("root.pem")),
            }
        }

        fn client_config(&self, with_certificate: bool) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.root_pem.as_bytes()).unwrap())
                .unwrap();
            let builder = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
            Arc::new(if with_certificate {
                builder
                    .with_client_auth_cert(
                        vec![CertificateDer::from_pem_slice(self.client.0.as_bytes()).unwrap()],
                        PrivateKeyDer::from_pem_slice(self.client.1.as_bytes()).unwrap(),
                    )
                    .unwrap()
            } else {
                builder.with_no_client_auth()
            })
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    type TlsClient = Client<StreamOwned<ClientConnection, TcpStream>>;

    /// Connects over TLS and sends a q handshake; the client and the byte answered.
    fn tls_login(addr: SocketAddr, config: Arc<ClientConfig>) -> (TlsClient, Option<u8>) {
        tls_login_as(addr, config, b"gw:pw\x03\0")
    }

    /// Connects over TLS and sends `handshake`; the client and the byte answered.
    fn tls_login_as(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        handshake: &[u8],
    ) -> (TlsClient, Option<u8>) {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(SOON)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connection = ClientConnection::new(config, name).unwrap();
        let mut client = Client {
            stream: StreamOwned::new(connection, tcp),
        };
        let byte = client.handshake(handshake);
        (client, byte)
    }

    #[test]
    fn tls_is_required_of_every_client() {
        let pki = Pki::new("required");
        let upstream = start(UpstreamOptions {
            tls: Some(pki.options(false)),
            ..UpstreamOptions::default()
        });
        let (mut client, byte) = tls_login(upstream.addr(), pki.client_config(false));
        assert_eq!(byte, Some(3));
        assert_eq!(
            dict_get(&client.query(&call0("whoami")), "user"),
            K::symbol("gw")
        );
        let n = 300_000;
        assert_eq!(
            client.query(&call("bytes", vec![K::long(n)])).len(),
            n as usize
        );
        // A plain client is closed without a byte.
        let (mut plain, byte) = Client::login(upstream.addr(), "gw:pw\x03\0");
        assert_eq!(byte, None);
        assert!(plain.closed());
        assert_eq!(upstream.stats().accepted, 1);
    }

    #[test]
    fn a_client_ca_requires_a_client_certificate() {
        let pki = Pki::new("mutual");
        let upstream = start(UpstreamOptions {
            tls: Some(pki.options(true)),
            ..UpstreamOptions::default()
        });
        let (mut client, byte) = tls_login(upstream.addr(), pki.client_config(true));
        assert_eq!(byte, Some(3));
        assert_eq!(client.query(&call("echo", vec![K::long(1)])), K::long(1));
        let (_, byte) = tls_login(upstream.addr(), pki.client_config(false));
        assert_eq!(byte, None);
        assert_eq!(upstream.stats().accepted, 1);
    }

    #[test]
    fn bad_tls_files_are_errors_that_name_them() {
        let pki = Pki::new("files");
        let missing = UpstreamTls {
            cert_chain: pki.dir.join("nosuch.pem"),
            ..pki.options(false)
        };
        let error = Upstream::start(UpstreamOptions {
            tls: Some(missing),
            ..UpstreamOptions::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("nosuch.pem"), "{error}");
        let swapped = UpstreamTls {
            key: pki.dir.join("server.pem"),
            ..pki.options(false)
        };
        let error = Upstream::start(UpstreamOptions {
            tls: Some(swapped),
            ..UpstreamOptions::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("server.pem"), "{error}");
    }

    /// The `qgate-upstream` binary wires each flag to its option, prints its address, and stops
    /// when its stdin closes.
    #[test]
    fn the_binary_takes_every_option() {
        use std::{
            io::BufRead as _,
            process::{Command, Stdio},
        };

        let pki = Pki::new("binary");
        let mut child = Command::new(env!("CARGO_BIN_EXE_qgate-upstream"))
            .args(["-p", "127.0.0.1:0", "--name", "hdb", "--user", "gw:pw"])
            .args(["--compress", "--concurrent", "--wrap", ".pm.execas"])
            .arg("--tls-cert")
            .arg(pki.dir.join("server.pem"))
            .arg("--tls-key")
            .arg(pki.dir.join("server.key"))
            .arg("--tls-client-ca")
            .arg(pki.dir.join("root.pem"))
            .args(["--lifetime-secs", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr: SocketAddr = line
            .strip_prefix("qgate-upstream listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .trim()
            .parse()
            .unwrap();

        // TLS with a client certificate, and the login given.
        let (mut client, byte) = tls_login(addr, pki.client_config(true));
        assert_eq!(byte, Some(3));
        let reply = client.query(&call(".pm.execas", vec![K::symbol("ann"), call0("whoami")]));
        assert_eq!(dict_get(&reply, "upstream"), K::symbol("hdb"));
        assert_eq!(dict_get(&reply, "user"), K::symbol("ann"));
        // Compressed.
        client.send(
            MessageType::Sync,
            &call("echo", vec![K::vector(VectorData::Long(vec![7; 10_000]))]),
        );
        assert!(client.read().unwrap().header.compressed);
        // Not serialised: a query is answered while another connection sleeps.
        let (mut sleeper, _) = tls_login(addr, pki.client_config(true));
        sleeper.send(MessageType::Sync, &call("sleep", vec![K::long(600_000)]));
        let deadline = std::time::Instant::now() + SOON;
        // `busy` counts the sleep and the `stats` query itself.
        while dict_get(&client.query(&call0("stats")), "busy") != K::long(2) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleep never started"
            );
        }
        // A wrong password is refused.
        let (_, byte) = tls_login_as(addr, pki.client_config(true), b"gw:wrong\x03\0");
        assert_eq!(byte, None);

        // Its stdin closing stops it.
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        assert!(sleeper.closed());
    }
}
