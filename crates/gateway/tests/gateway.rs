//! The gateway through its public API, against the test upstream (`qgate_e2e::upstream`), with no
//! server: a session's link forwards requests, and a test [`Downstream`] collects what the client
//! would receive.
//!
//! Pinned and pooled modes, pushes in order, subscriptions, wrap, passthrough credentials, TLS to
//! the upstream, and every fault of the gateway's contract: an upstream down at start, a replica
//! that goes down and comes back, a connection that dies mid-reply, a query timeout, a reply over
//! the limit, garbage, and a client that goes away while its query runs.
//! Nothing here measures time: waits are bounded by [`SOON`] so that a broken gateway fails a
//! test rather than hanging it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::{future::Future, io, time::Duration};

use qgate_e2e::upstream::{Upstream, UpstreamOptions, UpstreamTls as TestTls};
use qgate_gateway::{
    Credentials, Gateway, GatewayOptions, Health, Mode, ServerAddress, UpstreamOptions as Service,
    UpstreamTls,
};
use qgate_hooks::{
    Backend, Credentials as ClientCredentials, Downstream, ForwardError, Handle, Link, Request,
    Session,
};
use qgate_ipc::{Atom, HEADER_LEN, Header, K, Limits, Message, MessageType, encode_message};

/// The bound on anything that should happen soon.
const SOON: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// What a client would receive: the frames written to it.
#[derive(Default)]
struct Collect {
    bytes: Vec<u8>,
    /// Whether the client has gone away: `gone` resolves, writes fail.
    gone: bool,
}

impl Downstream for Collect {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.gone {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    async fn gone(&mut self) {
        if !self.gone {
            std::future::pending::<()>().await;
        }
    }

    fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
}

impl Collect {
    /// The frames received, decoded.
    fn values(&self) -> Vec<(MessageType, K)> {
        let mut values = Vec::new();
        let mut rest = &self.bytes[..];
        while !rest.is_empty() {
            let header = Header::parse(rest, &Limits::new(u32::MAX as usize))
                .unwrap()
                .unwrap();
            let (frame, tail) = rest.split_at(header.len());
            let message = Message::from_frame(frame.to_vec(), &Limits::new(1 << 30)).unwrap();
            let value = qgate_ipc::decode(message.body(), header.endian).unwrap();
            values.push((header.message_type, value));
            rest = tail;
        }
        values
    }

    /// The one reply received, decoded.
    fn reply(&self) -> K {
        let values = self.values();
        assert_eq!(values.len(), 1, "one frame: {values:?}");
        let (message_type, value) = values.into_iter().next().unwrap();
        assert_eq!(message_type, MessageType::Response);
        value
    }
}

fn request(value: &K, message_type: MessageType) -> Request {
    let bytes = encode_message(message_type, value).unwrap();
    Request::new(Message::from_frame(bytes, &Limits::default()).unwrap()).unwrap()
}

fn call(name: &str, args: Vec<K>) -> K {
    K::list(std::iter::once(K::symbol(name)).chain(args).collect())
}

fn session(user: &str) -> (Session, ClientCredentials) {
    let session = Session::new(
        Handle(7),
        user.as_bytes(),
        "127.0.0.1:40000".parse().unwrap(),
        3,
    );
    let credentials = ClientCredentials {
        user: user.as_bytes().to_vec(),
        password: Some(b"pw".to_vec()),
    };
    (session, credentials)
}

fn address(upstream: &Upstream) -> ServerAddress {
    ServerAddress::parse(&upstream.addr().to_string()).unwrap()
}

fn service(name: &str, upstreams: &[&Upstream]) -> Service {
    let mut service = Service::new(name, upstreams.iter().map(|u| address(u)).collect());
    service.credentials = Credentials::Service {
        user: "svc".into(),
        password: Some("svcpw".into()),
    };
    service.connect_timeout = Duration::from_secs(5);
    service.health_interval = Duration::from_millis(100);
    service
}

fn pooled(mut service: Service, pool_size: usize) -> Service {
    service.mode = Mode::Pooled { pool_size };
    service
}

fn gateway(services: Vec<Service>) -> Gateway {
    Gateway::new(GatewayOptions::new(services)).unwrap()
}

fn upstream(name: &str) -> Upstream {
    Upstream::start(UpstreamOptions {
        name: name.into(),
        ..UpstreamOptions::default()
    })
    .unwrap()
}

async fn open(gateway: &Gateway, user: &str) -> qgate_gateway::GatewayLink {
    let (session, credentials) = session(user);
    bounded(gateway.open(&session, &credentials)).await
}

/// Runs `future` within [`SOON`].
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(SOON, future)
        .await
        .expect("should finish soon")
}

/// A sync round trip on `link`: the value replied, or the forward error.
async fn ask(
    link: &mut impl Link,
    route: Option<&str>,
    value: &K,
) -> Result<Collect, ForwardError> {
    let mut client = Collect::default();
    bounded(link.sync(route, &request(value, MessageType::Sync), &mut client)).await?;
    Ok(client)
}

/// The dictionary `d`'s value at symbol key `key`.
fn field(d: &K, key: &str) -> K {
    let K::Dict(dict) = d else {
        panic!("not a dictionary: {d}");
    };
    let K::Vector(keys) = &*dict.keys else {
        panic!("keys: {d}");
    };
    let index = (0..keys.len())
        .find(|&i| keys.data.atom(i) == Some(Atom::Symbol(key.as_bytes().to_vec())))
        .unwrap_or_else(|| panic!("no key {key} in {d}"));
    match &*dict.values {
        K::List(list) => list.items[index].clone(),
        K::Vector(values) => K::Atom(values.data.atom(index).unwrap()),
        other => panic!("values: {other}"),
    }
}

fn symbol(value: &K) -> String {
    match value {
        K::Atom(Atom::Symbol(name)) => String::from_utf8_lossy(name).into_owned(),
        other => panic!("not a symbol: {other}"),
    }
}

/// Waits until `check` holds, polling; fails after [`SOON`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Pinned mode.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pinned_session_has_its_own_upstream_connection_as_the_service_user() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut alice = open(&gateway, "alice").await;
    let mut bob = open(&gateway, "bob").await;
    // Opened at login, before any query (the upstream counts a connection once its own task has
    // taken the handshake, which may be just after the gateway has).
    eventually("both sessions' upstream connections are open", || {
        rdb.stats().open == 2
    })
    .await;

    let echoed = ask(&mut alice, None, &call("echo", vec![K::long(42)]))
        .await
        .unwrap();
    assert_eq!(echoed.reply(), K::long(42));

    let who_a = ask(&mut alice, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    let who_b = ask(&mut bob, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(symbol(&field(&who_a, "user")), "svc");
    assert_ne!(field(&who_a, "handle"), field(&who_b, "handle"));
    // The same session keeps its handle: session state holds.
    let again = ask(&mut alice, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(field(&again, "handle"), field(&who_a, "handle"));

    drop(alice);
    eventually("the closed session's upstream connection closes", || {
        rdb.stats().open == 1
    })
    .await;
}

#[tokio::test]
async fn free_text_goes_as_it_came_and_errors_come_back_as_q_errors() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    let receipt = ask(&mut link, None, &K::string("select from trade"))
        .await
        .unwrap()
        .reply();
    assert_eq!(field(&receipt, "query"), K::string("select from trade"));
    let error = ask(&mut link, None, &call("fail", vec![K::string("nope")]))
        .await
        .unwrap()
        .reply();
    assert_eq!(error, K::error("nope"));
}

#[tokio::test]
async fn pushes_before_a_reply_reach_the_client_first() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    let client = ask(&mut link, None, &call("callback", vec![K::long(7)]))
        .await
        .unwrap();
    let values = client.values();
    assert_eq!(
        values,
        vec![
            (MessageType::Async, call("callback", vec![K::long(7)])),
            (MessageType::Response, K::long(7)),
        ]
    );
}

#[tokio::test]
async fn a_subscriber_receives_publications_in_order() {
    let tp = upstream("tp");
    let gateway = gateway(vec![service("tp", &[&tp])]);
    let mut subscriber = open(&gateway, "alice").await;
    let mut feed = open(&gateway, "feed").await;
    ask(
        &mut subscriber,
        None,
        &call(".u.sub", vec![K::symbol("trade"), K::symbol("")]),
    )
    .await
    .unwrap();
    let sent = ask(
        &mut feed,
        None,
        &call("publish", vec![K::symbol("trade"), K::long(20), K::long(3)]),
    )
    .await
    .unwrap()
    .reply();
    assert_eq!(sent, K::long(20));
    let mut last_seq = None;
    let mut frames = Vec::new();
    while frames.len() < 20 {
        let push = bounded(subscriber.push()).await.unwrap();
        assert_eq!(push.from, "tp");
        // A push holds one or more whole frames, back to back.
        let mut rest = &push.frames[..];
        while !rest.is_empty() {
            let header = Header::parse(rest, &Limits::default()).unwrap().unwrap();
            frames.push(rest[..header.len()].to_vec());
            rest = &rest[header.len()..];
        }
    }
    assert_eq!(frames.len(), 20, "no more than the 20 publications");
    for frame in &frames {
        let header = Header::parse(frame, &Limits::default()).unwrap().unwrap();
        assert_eq!(header.message_type, MessageType::Async);
        let value = qgate_ipc::decode(&frame[HEADER_LEN..], header.endian).unwrap();
        let K::List(list) = &value else {
            panic!("not (`upd;t;data): {value}");
        };
        assert_eq!(list.items[0], K::symbol("upd"));
        let K::Table(table) = &list.items[2] else {
            panic!("no table: {value}");
        };
        let K::Vector(seq) = table.column(b"seq").unwrap() else {
            panic!("seq");
        };
        for i in 0..seq.len() {
            let Some(Atom::Long(n)) = seq.data.atom(i) else {
                panic!("seq is not longs");
            };
            if let Some(last) = last_seq {
                assert_eq!(n, last + 1, "publications arrive in order, none lost");
            }
            last_seq = Some(n);
        }
    }
}

#[tokio::test]
async fn a_dropped_upstream_connection_ends_the_session_with_its_cause() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    // The upstream closes this session's connection.
    let result = ask(&mut link, None, &call("close", vec![])).await;
    let Err(ForwardError::Close(message)) = result else {
        panic!(
            "expected a close: {result:?}",
            result = result.map(|c| c.values())
        );
    };
    assert!(message.contains("upstream rdb"), "{message}");
    assert!(message.contains("closed the connection"), "{message}");
}

#[tokio::test]
async fn an_upstream_that_closes_between_queries_is_seen_through_push() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    rdb.stop();
    let closed = bounded(link.push()).await.unwrap_err();
    assert!(closed.0.contains("upstream rdb"), "{closed}");
}

#[tokio::test]
async fn wrap_passes_the_end_user_upstream() {
    let rdb = upstream("rdb");
    let mut rdb_service = service("rdb", &[&rdb]);
    rdb_service.wrap = Some(".gw.execas".into());
    let gateway = gateway(vec![rdb_service]);
    let mut link = open(&gateway, "alice").await;
    let who = ask(&mut link, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(symbol(&field(&who, "user")), "alice");
    let received = rdb.received();
    let last = received.last().unwrap();
    assert_eq!(last.user, "svc");
    assert_eq!(last.as_user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn passthrough_logs_in_as_the_client() {
    let rdb = Upstream::start(UpstreamOptions {
        users: vec![("alice".into(), "pw".into())],
        ..UpstreamOptions::default()
    })
    .unwrap();
    let mut rdb_service = service("rdb", &[&rdb]);
    rdb_service.credentials = Credentials::Passthrough;
    let gateway = gateway(vec![rdb_service]);
    let mut alice = open(&gateway, "alice").await;
    let who = ask(&mut alice, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(symbol(&field(&who, "user")), "alice");
    // Bob's password is not one the upstream knows: his queries are refused, naming why.
    let mut bob = open(&gateway, "bob").await;
    let Err(ForwardError::Refuse(message)) = ask(&mut bob, None, &K::string("1")).await else {
        panic!("bob's query should be refused");
    };
    assert!(message.contains("refused the login"), "{message}");
}

#[tokio::test]
async fn routes_reach_named_upstreams_and_unknown_ones_are_refused() {
    let rdb = upstream("rdb");
    let hdb = upstream("hdb");
    let gateway = gateway(vec![service("rdb", &[&rdb]), service("hdb", &[&hdb])]);
    let mut link = open(&gateway, "alice").await;
    let who = ask(&mut link, Some("hdb"), &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(symbol(&field(&who, "upstream")), "hdb");
    let who = ask(&mut link, None, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    assert_eq!(symbol(&field(&who, "upstream")), "rdb");
    let Err(ForwardError::Refuse(message)) = ask(&mut link, Some("nope"), &K::string("1")).await
    else {
        panic!("an unknown route should be refused");
    };
    assert!(message.contains("nope"), "{message}");
}

#[tokio::test]
async fn async_messages_are_forwarded_in_order() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    for i in 0..50 {
        let message = request(&K::string(format!("a{i}")), MessageType::Async);
        bounded(link.send_async(None, &message)).await.unwrap();
    }
    // A sync query after them is answered after they were all received.
    ask(&mut link, None, &K::string("done")).await.unwrap();
    let texts: Vec<String> = rdb.received().into_iter().map(|r| r.text).collect();
    let expect: Vec<String> = (0..50)
        .map(|i| format!("a{i}"))
        .chain(["done".to_owned()])
        .collect();
    assert_eq!(texts, expect);
}

// ---------------------------------------------------------------------------------------------
// Pooled mode.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_share_a_few_connections_one_query_each() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![pooled(service("rdb", &[&rdb]), 2)]);
    let mut tasks = Vec::new();
    for user in 0..8 {
        let gateway = gateway.clone();
        tasks.push(tokio::spawn(async move {
            let mut link = open(&gateway, &format!("user{user}")).await;
            for i in 0..10 {
                let value = call("echo", vec![K::long(user * 100 + i)]);
                let reply = ask(&mut link, None, &value).await.unwrap().reply();
                assert_eq!(reply, K::long(user * 100 + i));
            }
        }));
    }
    for task in tasks {
        bounded(task).await.unwrap();
    }
    let stats = rdb.stats();
    assert!(stats.peak <= 2, "at most pool_size connections: {stats:?}");
    assert_eq!(
        stats.pipelined, 1,
        "one query in flight per connection: {stats:?}"
    );
    assert_eq!(stats.sync_messages, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_waits_past_queue_timeout_is_told_so() {
    let rdb = Upstream::start(UpstreamOptions {
        serialise: false,
        ..UpstreamOptions::default()
    })
    .unwrap();
    let mut rdb_service = pooled(service("rdb", &[&rdb]), 1);
    rdb_service.queue_timeout = Duration::from_millis(200);
    let gateway = gateway(vec![rdb_service]);
    let mut slow = open(&gateway, "slow").await;
    let busy = tokio::spawn(async move {
        ask(&mut slow, None, &call("sleep", vec![K::long(3000)]))
            .await
            .map(|c| c.reply())
    });
    eventually("the slow query holds the only connection", || {
        rdb.stats().busy == 1
    })
    .await;
    let mut waiting = open(&gateway, "bob").await;
    let Err(ForwardError::Refuse(message)) = ask(&mut waiting, None, &K::string("1")).await else {
        panic!("the wait should end in an error");
    };
    assert!(message.contains("queue_timeout"), "{message}");
    assert_eq!(bounded(busy).await.unwrap().unwrap(), K::long(3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waiting_for_a_connection_that_breaks_gets_a_new_one() {
    let rdb = Upstream::start(UpstreamOptions {
        serialise: false,
        ..UpstreamOptions::default()
    })
    .unwrap();
    let mut rdb_service = pooled(service("rdb", &[&rdb]), 1);
    rdb_service.query_timeout = Some(Duration::from_millis(500));
    rdb_service.queue_timeout = Duration::from_secs(20);
    let gateway = gateway(vec![rdb_service]);
    let mut slow = open(&gateway, "slow").await;
    let busy =
        tokio::spawn(
            async move { ask(&mut slow, None, &call("sleep", vec![K::long(5000)])).await },
        );
    eventually("the slow query holds the only connection", || {
        rdb.stats().busy == 1
    })
    .await;
    // Queued behind the slow query, whose timeout closes the only connection: the waiting query
    // is answered on a new one at once, not after its queue_timeout.
    let mut waiting = open(&gateway, "bob").await;
    let reply = ask(&mut waiting, None, &call("echo", vec![K::long(5)]))
        .await
        .unwrap();
    assert_eq!(reply.reply(), K::long(5));
    assert!(matches!(
        bounded(busy).await.unwrap(),
        Err(ForwardError::Refuse(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_is_reused_only_after_a_gone_clients_reply_is_drained() {
    let rdb = Upstream::start(UpstreamOptions {
        serialise: false,
        ..UpstreamOptions::default()
    })
    .unwrap();
    let gateway = gateway(vec![pooled(service("rdb", &[&rdb]), 1)]);
    let mut link = open(&gateway, "alice").await;
    // The client goes away while its query runs.
    let mut gone = Collect {
        gone: true,
        ..Collect::default()
    };
    let message = request(&call("sleep", vec![K::long(300)]), MessageType::Sync);
    let result = bounded(link.sync(None, &message, &mut gone)).await;
    assert!(matches!(result, Err(ForwardError::Client(_))), "{result:?}");
    // The next query gets its own reply, not the drained one.
    let mut other = open(&gateway, "bob").await;
    let reply = ask(&mut other, None, &call("echo", vec![K::long(5)]))
        .await
        .unwrap()
        .reply();
    assert_eq!(reply, K::long(5));
    let stats = rdb.stats();
    assert_eq!(stats.peak, 1, "the one pooled connection: {stats:?}");
    assert_eq!(
        stats.pipelined, 1,
        "never two queries in flight on it: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Faults.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_upstream_down_at_start_is_an_error_naming_it() {
    // A port that nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut down = Service::new(
        "rdb",
        vec![ServerAddress::parse(&format!("127.0.0.1:{port}")).unwrap()],
    );
    down.connect_timeout = Duration::from_secs(2);
    for mode in [Mode::Pinned, Mode::Pooled { pool_size: 2 }] {
        down.mode = mode;
        let gateway = gateway(vec![down.clone()]);
        let mut link = open(&gateway, "alice").await;
        let Err(ForwardError::Refuse(message)) = ask(&mut link, None, &K::string("1")).await else {
            panic!("a query to a down upstream should be refused");
        };
        assert!(message.contains("upstream rdb"), "{message}");
        assert!(message.contains("cannot connect"), "{message}");
        assert_eq!(gateway.status()[0].servers[0].health, Health::Down);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_off_a_replica_that_goes_down_and_back_when_it_recovers() {
    let a = upstream("a");
    let b = upstream("b");
    let b_addr = b.addr();
    let gateway = gateway(vec![pooled(service("rdb", &[&a, &b]), 2)]);
    let watch = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.watch().await }
    });
    eventually("both replicas up", || {
        gateway.status()[0]
            .servers
            .iter()
            .all(|s| s.health == Health::Up)
    })
    .await;
    b.stop();
    eventually("b is ejected", || {
        gateway.status()[0].servers[1].health == Health::Down
    })
    .await;
    let mut link = open(&gateway, "alice").await;
    for _ in 0..10 {
        let who = ask(&mut link, None, &call("whoami", vec![]))
            .await
            .unwrap()
            .reply();
        assert_eq!(symbol(&field(&who, "upstream")), "a");
    }
    // b comes back on the same address.
    let b = Upstream::start(UpstreamOptions {
        addr: b_addr,
        name: "b".into(),
        ..UpstreamOptions::default()
    })
    .unwrap();
    eventually("b is taken back", || {
        gateway.status()[0].servers[1].health == Health::Up
    })
    .await;
    drop(b);
    watch.abort();
}

#[tokio::test]
async fn a_reply_cut_off_mid_way_is_an_error_naming_the_cause() {
    let rdb = upstream("rdb");
    for mode in [Mode::Pinned, Mode::Pooled { pool_size: 1 }] {
        let mut rdb_service = service("rdb", &[&rdb]);
        rdb_service.mode = mode;
        let gateway = gateway(vec![rdb_service]);
        let mut link = open(&gateway, "alice").await;
        let result = ask(&mut link, None, &call("die", vec![K::long(10_000)])).await;
        let message = match result {
            // Pinned: the session's upstream is gone, so is the session.
            Err(ForwardError::Close(message)) if mode == Mode::Pinned => message,
            // Pooled: the client stays, the connection is replaced.
            Err(ForwardError::Refuse(message)) if mode != Mode::Pinned => message,
            other => panic!("{mode:?}: {:?}", other.map(|c| c.values())),
        };
        assert!(message.contains("upstream rdb"), "{message}");
        assert!(message.contains("closed the connection"), "{message}");
        if mode != Mode::Pinned {
            let reply = ask(&mut link, None, &call("echo", vec![K::long(1)]))
                .await
                .unwrap();
            assert_eq!(reply.reply(), K::long(1), "the next query works");
        }
    }
}

#[tokio::test]
async fn a_large_reply_cut_off_mid_stream_breaks_the_client() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![pooled(service("rdb", &[&rdb]), 1)]);
    let mut link = open(&gateway, "alice").await;
    let mut client = Collect::default();
    let message = request(&call("die", vec![K::long(4 << 20)]), MessageType::Sync);
    let result = bounded(link.sync(None, &message, &mut client)).await;
    assert!(matches!(result, Err(ForwardError::Broken(_))), "{result:?}");
    assert!(!client.bytes.is_empty(), "part of the reply was streamed");
}

#[tokio::test]
async fn a_query_timeout_answers_timeout_and_replaces_the_connection() {
    let rdb = Upstream::start(UpstreamOptions {
        serialise: false,
        ..UpstreamOptions::default()
    })
    .unwrap();
    for mode in [Mode::Pinned, Mode::Pooled { pool_size: 1 }] {
        let mut rdb_service = service("rdb", &[&rdb]);
        rdb_service.mode = mode;
        rdb_service.query_timeout = Some(Duration::from_millis(200));
        let gateway = gateway(vec![rdb_service]);
        let mut link = open(&gateway, "alice").await;
        let Err(ForwardError::Refuse(message)) =
            ask(&mut link, None, &call("sleep", vec![K::long(2000)])).await
        else {
            panic!("{mode:?}: the slow query should time out");
        };
        assert!(message.starts_with("timeout"), "{message}");
        assert!(message.contains("query_timeout"), "{message}");
        // The next query is answered on a new connection, not with the late reply.
        let reply = ask(&mut link, None, &call("echo", vec![K::long(9)]))
            .await
            .unwrap();
        assert_eq!(reply.reply(), K::long(9), "{mode:?}");
    }
}

#[tokio::test]
async fn a_reply_over_the_limit_is_refused_and_the_connection_kept() {
    let rdb = upstream("rdb");
    for mode in [Mode::Pinned, Mode::Pooled { pool_size: 1 }] {
        let mut rdb_service = service("rdb", &[&rdb]);
        rdb_service.mode = mode;
        rdb_service.max_reply_bytes = 1 << 20;
        let gateway = gateway(vec![rdb_service]);
        let mut link = open(&gateway, "alice").await;
        let who = ask(&mut link, None, &call("whoami", vec![]))
            .await
            .unwrap()
            .reply();
        let Err(ForwardError::Refuse(message)) =
            ask(&mut link, None, &call("bytes", vec![K::long(2 << 20)])).await
        else {
            panic!("{mode:?}: the large reply should be refused");
        };
        assert!(message.contains("max_reply_bytes"), "{message}");
        // The same upstream connection answers the next query.
        let again = ask(&mut link, None, &call("whoami", vec![]))
            .await
            .unwrap()
            .reply();
        assert_eq!(field(&again, "handle"), field(&who, "handle"), "{mode:?}");
    }
}

#[tokio::test]
async fn garbage_from_the_upstream_closes_that_connection_with_an_error() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![pooled(service("rdb", &[&rdb]), 1)]);
    let mut link = open(&gateway, "alice").await;
    let Err(ForwardError::Refuse(message)) = ask(&mut link, None, &call("garbage", vec![])).await
    else {
        panic!("garbage should be an error");
    };
    assert!(message.contains("not q IPC"), "{message}");
    let reply = ask(&mut link, None, &call("echo", vec![K::long(3)]))
        .await
        .unwrap();
    assert_eq!(reply.reply(), K::long(3));
}

#[tokio::test]
async fn a_large_reply_streams_through_whole() {
    let rdb = upstream("rdb");
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    let n = 20 << 20;
    let client = ask(&mut link, None, &call("bytes", vec![K::long(n)]))
        .await
        .unwrap();
    let K::Vector(bytes) = client.reply() else {
        panic!("not a vector");
    };
    assert_eq!(bytes.len(), n as usize);
    assert_eq!(bytes.data.atom(300), Some(Atom::Byte(44)));
}

#[tokio::test]
async fn a_compressed_reply_stays_compressed() {
    let rdb = Upstream::start(UpstreamOptions {
        compress: true,
        ..UpstreamOptions::default()
    })
    .unwrap();
    let gateway = gateway(vec![service("rdb", &[&rdb])]);
    let mut link = open(&gateway, "alice").await;
    let longs = K::vector(qgate_ipc::VectorData::Long(vec![7; 10_000]));
    let client = ask(&mut link, None, &call("echo", vec![longs.clone()]))
        .await
        .unwrap();
    assert_eq!(
        client.bytes[2], 1,
        "the compressed flag, as the upstream sent it"
    );
    assert_eq!(client.reply(), longs);
}

// ---------------------------------------------------------------------------------------------
// TLS to the upstream.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_to_the_upstream_verifies_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", cert.pem());
    let key_file = write("server.key", key.serialize_pem());
    let rdb = Upstream::start(UpstreamOptions {
        tls: Some(TestTls {
            cert_chain: cert_file,
            key: key_file,
            client_ca: None,
        }),
        ..UpstreamOptions::default()
    })
    .unwrap();
    let mut rdb_service = service("rdb", &[&rdb]);
    let mut tls = UpstreamTls::new(&ca_file);
    tls.server_name = Some("localhost".into());
    rdb_service.tls = Some(tls);
    let good = gateway(vec![rdb_service.clone()]);
    let mut link = open(&good, "alice").await;
    let reply = ask(&mut link, None, &call("echo", vec![K::long(1)]))
        .await
        .unwrap();
    assert_eq!(reply.reply(), K::long(1));
    // HTTP goes to the upstream's own HTTP inside the same TLS, as the service account.
    let (alice, _) = session("alice");
    let request = qgate_hooks::HttpRequest::new("GET", "/", Some("til%203".into()));
    let response = good.http(None, &alice, &request).await.unwrap();
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, 200, "{body}");
    assert!(
        body.contains("user=svc\nmethod=GET\ntext=til 3\nforwarded-user=alice\n"),
        "{body}"
    );

    // A name the certificate does not carry fails the handshake, with a message saying so.
    let mut wrong = rdb_service;
    let mut tls = UpstreamTls::new(&ca_file);
    tls.server_name = Some("elsewhere.example".into());
    wrong.tls = Some(tls);
    let bad = gateway(vec![wrong]);
    let mut link = open(&bad, "alice").await;
    let Err(ForwardError::Refuse(message)) = ask(&mut link, None, &K::string("1")).await else {
        panic!("a wrong name should fail");
    };
    assert!(message.contains("upstream rdb"), "{message}");
}

#[test]
fn bad_options_are_refused_at_start_naming_the_service() {
    let addr = ServerAddress::parse("127.0.0.1:5001").unwrap();
    let check = |services: Vec<Service>, part: &str| {
        let error = Gateway::new(GatewayOptions::new(services))
            .unwrap_err()
            .to_string();
        assert!(error.contains(part), "{error}");
    };
    check(vec![], "at least one");
    let rdb = Service::new("rdb", vec![addr.clone()]);
    check(
        vec![rdb.clone(), rdb.clone()],
        "two upstreams are named \"rdb\"",
    );
    check(vec![Service::new("rdb", vec![])], "no servers");
    let mut passthrough = pooled(rdb.clone(), 2);
    passthrough.credentials = Credentials::Passthrough;
    check(vec![passthrough], "passthrough");
    let mut tls = rdb;
    tls.tls = Some(UpstreamTls::new("/nonexistent/ca.pem"));
    check(vec![tls], "TLS");
}

/// A config reload: services added, changed and reordered for the sessions that log in after it,
/// the sessions before it keeping theirs, an unchanged service kept whole, and a service that
/// cannot be made refusing the whole change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_gives_new_sessions_the_new_upstreams_and_old_ones_theirs() {
    let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
    let gateway = gateway(vec![service("rdb", &[&a]), service("hdb", &[&c])]);
    let watch = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.watch().await }
    });
    let mut before = open(&gateway, "alice").await;
    assert_eq!(who(&mut before, None).await, "a");

    // The same options: nothing to do.
    let same = GatewayOptions::new(vec![service("rdb", &[&a]), service("hdb", &[&c])]);
    assert!(gateway.prepare(same).unwrap().apply().is_empty());

    // `rdb` moves to b, `hdb` is removed, `tp` added first: the default is now `tp`.
    let next = GatewayOptions::new(vec![service("tp", &[&c]), service("rdb", &[&b])]);
    let changes = gateway.prepare(next).unwrap().apply();
    assert_eq!(changes.added, ["tp"]);
    assert_eq!(changes.changed, ["rdb"]);
    assert_eq!(changes.removed, ["hdb"]);
    assert_eq!(gateway.upstream_names(), ["tp", "rdb"]);
    let mut after = open(&gateway, "alice").await;
    assert_eq!(who(&mut after, None).await, "c");
    assert_eq!(who(&mut after, Some("rdb")).await, "b");
    // The session from before keeps what it logged in with.
    assert_eq!(who(&mut before, None).await, "a");
    assert_eq!(who(&mut before, Some("hdb")).await, "c");
    // The new service's replica is health-checked, the removed one's no longer listed.
    eventually("rdb's new replica checked", || {
        gateway.status()[1].servers[0].health == Health::Up
    })
    .await;

    // A service that cannot be made: refused whole.
    let mut broken = service("rdb", &[&a]);
    broken.tls = Some(qgate_gateway::UpstreamTls::new("/nonexistent/ca.pem"));
    let error = gateway
        .prepare(GatewayOptions::new(vec![broken, service("new", &[&a])]))
        .expect_err("a CA file that is not there");
    assert!(error.to_string().contains("rdb"), "{error}");
    assert_eq!(gateway.upstream_names(), ["tp", "rdb"]);
    watch.abort();
}

/// The upstream that answers `whoami` on `link`, by `route`.
async fn who(link: &mut qgate_gateway::GatewayLink, route: Option<&str>) -> String {
    let who = ask(link, route, &call("whoami", vec![]))
        .await
        .unwrap()
        .reply();
    symbol(&field(&who, "upstream"))
}
