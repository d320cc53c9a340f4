//! `qgate serve` in front of a kdb+ stand-in (`qgate_e2e::upstream`, started in-process): the
//! one-line `--upstream` form, `[[upstream]]` with a plugin chain in front, a route verdict,
//! `qgate check` on upstream settings, and an upstream that is down at start.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use qgate_e2e::upstream::{Upstream, UpstreamOptions};
use qgate_ipc::{K, Limits, Message, MessageType, encode_message};

use super::{PATIENCE, Server, TempDir, component_path, run, stderr, stdout};

/// A logged-in raw q client.
pub(crate) fn login(addr: SocketAddr, credentials: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    stream
        .write_all(format!("{credentials}\x03\0").as_bytes())
        .expect("the handshake is sent");
    let mut byte = [0_u8; 1];
    stream.read_exact(&mut byte).expect("the capability byte");
    stream
}

/// A sync request and its answer, decoded.
pub(crate) fn ask(stream: &mut TcpStream, value: &K) -> K {
    let message = encode_message(MessageType::Sync, value).expect("a message");
    stream.write_all(&message).expect("sent");
    let mut frame = vec![0_u8; 8];
    stream.read_exact(&mut frame).expect("a response header");
    let len = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) as usize;
    frame.resize(len, 0);
    stream.read_exact(&mut frame[8..]).expect("a response body");
    let message = Message::from_frame(frame, &Limits::default()).expect("a valid response");
    assert_eq!(message.header.message_type, MessageType::Response);
    qgate_ipc::decode(message.body(), message.header.endian).expect("a q value")
}

pub(crate) fn call(name: &str, args: Vec<K>) -> K {
    K::list(std::iter::once(K::symbol(name)).chain(args).collect())
}

pub(crate) fn upstream(name: &str) -> Upstream {
    Upstream::start(UpstreamOptions {
        name: name.into(),
        ..UpstreamOptions::default()
    })
    .expect("the test upstream starts")
}

#[test]
fn serve_upstream_forwards_to_one_kdb_pinned() {
    let rdb = upstream("rdb");
    let dir = TempDir::new("gateway-flag");
    let passwords = dir.write("passwords.txt", "alice:secret\n");
    let mut server = Server::start(&[
        "-p",
        "127.0.0.1:0",
        "-U",
        passwords.to_str().expect("a UTF-8 path"),
        "--upstream",
        &rdb.addr().to_string(),
    ]);
    // The health check's connection, then the session's, opened with its login (pinned).
    eventually("the health check connects", || rdb.stats().open == 1);
    let mut alice = login(server.addr, "alice:secret");
    // The upstream counts a connection once its own task has taken the handshake, which may be
    // just after qgate has read the capability byte.
    eventually("the session's upstream connection is open", || {
        rdb.stats().open == 2
    });
    assert_eq!(ask(&mut alice, &call("echo", vec![K::long(7)])), K::long(7));
    let receipt = ask(&mut alice, &K::string("select from trade"));
    let handle = rdb
        .received()
        .last()
        .expect("the query was received")
        .handle;
    assert_eq!(
        receipt.to_string(),
        format!("`upstream`user`handle`query!(`rdb;`;{handle}i;\"select from trade\")")
    );
    assert_eq!(
        ask(&mut alice, &call("fail", vec![K::string("nope")])),
        K::error("nope")
    );
    drop(alice);
    eventually("the session's upstream connection closes with it", || {
        rdb.stats().open == 1
    });
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

/// Waits until `check` holds, polling; fails after [`PATIENCE`].
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test polling: no async runtime to block"
        )]
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_plugin_chain_decides_before_the_upstream_and_routes_by_function() {
    let rdb = upstream("rdb");
    let hdb = upstream("hdb");
    let dir = TempDir::new("gateway-chain");
    let allowlist = component_path("allowlist");
    let router = component_path("router");
    let config = dir.write(
        "qgate.toml",
        &format!(
            r#"
[[upstream]]
name = "rdb"
servers = ["{rdb}"]
user = "svc"

[[upstream]]
name = "hdb"
servers = ["{hdb}"]
mode = "pooled"
pool_size = 2

[[plugins]]
name = "allowlist"
path = "{allowlist}"
config = {{ users = {{ alice = ["echo", "whoami", "getHistory"] }} }}

[[plugins]]
name = "router"
path = "{router}"
routes = ["hdb"]
config = {{ rules = [{{ upstream = "hdb", functions = ["getHistory"] }}] }}
"#,
            rdb = rdb.addr(),
            hdb = hdb.addr(),
            allowlist = allowlist.display(),
            router = router.display(),
        ),
    );
    let mut server = Server::with_config(&config);
    let mut alice = login(server.addr, "alice:pw");
    assert_eq!(ask(&mut alice, &call("echo", vec![K::long(1)])), K::long(1));
    // A denied call never reaches the upstream (which also sees the health check's probes, so
    // what it received is searched rather than counted).
    let denied = ask(&mut alice, &call("fail", vec![K::string("x")]));
    assert!(denied.to_string().contains("not allowed"), "{denied}");
    let received = rdb.received();
    assert!(
        !received.iter().any(|message| message.text.contains("fail")),
        "{received:?}"
    );
    // The router sends getHistory to hdb, everything else to rdb as the service user.
    let receipt = ask(&mut alice, &call("getHistory", vec![K::long(1)]));
    assert!(receipt.to_string().contains("`hdb"), "{receipt}");
    let who = ask(&mut alice, &call("whoami", vec![]));
    assert!(
        who.to_string()
            .starts_with("`upstream`user`handle!(`rdb;`svc;"),
        "{who}"
    );
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

#[test]
fn an_upstream_down_at_start_is_logged_and_queries_say_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port();
    let dir = TempDir::new("gateway-down");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:{port}\"]\nconnect_timeout = \
             \"1s\"\n"
        ),
    );
    let mut server = Server::with_config(&config);
    let mut alice = login(server.addr, "alice:pw");
    let error = ask(&mut alice, &K::string("1"));
    let text = error.to_string();
    assert!(
        text.starts_with("'qgate: upstream rdb (127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    let status = server.terminate();
    let log = server.stderr();
    assert!(status.success(), "{status}; stderr:\n{log}");
    assert!(log.contains("upstream server state changed"), "{log}");
}

#[test]
fn check_validates_upstreams_and_routes() {
    let dir = TempDir::new("gateway-check");
    let good = dir.write(
        "good.toml",
        "[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:5001\"]\n",
    );
    let output = run(&["check", good.to_str().expect("a UTF-8 path")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).ends_with(": ok\n"));

    let unset = dir.write(
        "unset.toml",
        "[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:5001\"]\nuser = \"svc\"\n\
         password_env = \"QGATE_TEST_UNSET_PASSWORD\"\n",
    );
    let output = run(&["check", unset.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("QGATE_TEST_UNSET_PASSWORD"),
        "{}",
        stderr(&output)
    );

    let route = dir.write(
        "route.toml",
        "[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:5001\"]\n\n[[plugins]]\nname = \
         \"router\"\npath = \"router.wasm\"\nroutes = [\"hdb\"]\n",
    );
    let output = run(&["check", route.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("plugins.router.routes: routes to upstream `hdb`"),
        "{}",
        stderr(&output)
    );

    let tls = dir.write(
        "tls.toml",
        "[[upstream]]\nname = \"rdb\"\nservers = [\"127.0.0.1:5001\"]\n[upstream.tls]\nenabled \
         = true\nca_file = \"missing-ca.pem\"\n",
    );
    let output = run(&["check", tls.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("upstream rdb: TLS"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn upstreams_lists_each_replica_with_its_health() {
    let rdb = upstream("rdb");
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address");
    let dir = TempDir::new("gateway-upstreams");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[admin]\nsocket = \"admin.sock\"\n\n[[upstream]]\nname = \"rdb\"\nservers = \
             [\"{}\", \"{down}\"]\nconnect_timeout = \"1s\"\nhealth_interval = \"1s\"\n\n\
             [[upstream]]\nname = \"hdb\"\nservers = [\"{}\"]\nmode = \"pooled\"\npool_size = 2\n",
            rdb.addr(),
            rdb.addr()
        ),
    );
    let config = config.to_str().expect("a UTF-8 path");
    let mut server = Server::with_config(config);
    let json = || {
        let output = run(&["upstreams", "--json", "--config", config]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str::<serde_json::Value>(&stdout(&output)).expect("JSON")
    };
    eventually("the first health checks have run", || {
        json()[0]["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .all(|server| server["health"] != "unknown")
    });
    let rows = json();
    assert_eq!(rows[0]["name"], "rdb");
    assert_eq!(rows[0]["mode"], "pinned");
    assert_eq!(rows[0]["servers"][0]["health"], "up");
    assert_eq!(rows[0]["servers"][1]["address"], down.to_string());
    assert_eq!(rows[0]["servers"][1]["health"], "down");
    let last_error = rows[0]["servers"][1]["last_error"]
        .as_str()
        .expect("the down replica's error");
    assert!(last_error.contains("cannot connect"), "{last_error}");
    assert_eq!(rows[1]["name"], "hdb");
    assert_eq!(rows[1]["mode"], "pooled");
    assert_eq!(rows[1]["pool_size"], 2);

    let mut alice = login(server.addr, "alice:pw");
    assert_eq!(ask(&mut alice, &call("echo", vec![K::long(1)])), K::long(1));
    let table = run(&["upstreams", "--config", config]);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = stdout(&table);
    let lines = table.lines().collect::<Vec<_>>();
    assert!(lines[0].starts_with("UPSTREAM"), "{table}");
    assert_eq!(lines.len(), 4, "a header and one line a replica:\n{table}");
    assert!(
        lines[1].contains("rdb") && lines[1].contains(" up ") && lines[1].contains(" 1 "),
        "the pinned session's connection is counted:\n{table}"
    );
    assert!(lines[2].contains(" down "), "{table}");
    assert!(lines[3].contains("pooled(2)"), "{table}");

    // Plugin commands on a server without plugins say why they cannot.
    let plugins = run(&["plugins", "--config", config]);
    assert!(!plugins.status.success());
    assert!(
        stderr(&plugins).contains("this server has no plugins"),
        "{}",
        stderr(&plugins)
    );
    drop(alice);
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

/// A config reload moves an upstream to another server for the sessions that log in after it;
/// a session from before keeps its own upstream connection.
#[test]
fn a_config_reload_moves_new_sessions_to_the_new_upstreams() {
    let (a, b) = (upstream("a"), upstream("b"));
    let dir = TempDir::new("gateway-reload");
    let write = |server: &Upstream| {
        dir.write(
            "qgate.toml",
            &format!(
                "[admin]\nsocket = \"admin.sock\"\n\n[[upstream]]\nname = \"rdb\"\nservers = \
                 [\"{}\"]\n",
                server.addr()
            ),
        )
    };
    let config = write(&a);
    let config = config.to_str().expect("a UTF-8 path");
    let mut server = Server::with_config(config);
    let who = |stream: &mut TcpStream| ask(stream, &call("whoami", vec![])).to_string();
    let mut before = login(server.addr, "alice:pw");
    assert!(who(&mut before).contains("`a"), "{}", who(&mut before));

    write(&b);
    let output = run(&["reload", "--config", config]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("upstreams changed rdb"),
        "{}",
        stdout(&output)
    );
    let mut after = login(server.addr, "bob:pw");
    assert!(who(&mut after).contains("`b"), "{}", who(&mut after));
    assert!(who(&mut before).contains("`a"), "{}", who(&mut before));
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

#[test]
fn connection_threads_serve_sessions_with_their_plugins_and_upstream() {
    let rdb = upstream("rdb");
    let dir = TempDir::new("gateway-threads");
    let allowlist = component_path("allowlist");
    let config = dir.write(
        "qgate.toml",
        &format!(
            r#"
[server]
connection_threads = 2

[[upstream]]
name = "rdb"
servers = ["{rdb}"]

[[plugins]]
name = "allowlist"
path = "{allowlist}"
config = {{ users = {{ ann = ["echo"], bob = ["echo"], cat = ["echo"] }} }}
"#,
            rdb = rdb.addr(),
            allowlist = allowlist.display(),
        ),
    );
    let mut server = Server::with_config(&config);
    let mut clients: Vec<TcpStream> = ["ann:pw", "bob:pw", "cat:pw"]
        .into_iter()
        .map(|credentials| login(server.addr, credentials))
        .collect();
    // Each session's pinned connection is its own, opened from its thread.
    eventually("three pinned connections and the health check's", || {
        rdb.stats().open == 4
    });
    for round in 0..3 {
        for (index, client) in clients.iter_mut().enumerate() {
            let value = K::long(10 * round + index as i64);
            assert_eq!(ask(client, &call("echo", vec![value.clone()])), value);
        }
    }
    let denied = ask(&mut clients[1], &call("fail", vec![K::string("x")]));
    assert!(denied.to_string().contains("not allowed"), "{denied}");
    drop(clients);
    eventually("the sessions' upstream connections close with them", || {
        rdb.stats().open == 1
    });
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}
