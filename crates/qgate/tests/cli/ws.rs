//! WebSocket on the q port through the real binary, with tungstenite's blocking client: the
//! `demo-api` plugin answering text and binary frames, the fail-closed rule for a chain that
//! checks q queries but not WebSocket messages, and the gateway's WebSocket to an upstream, with a
//! `502` when the upstream cannot be reached. The same paths with Python's `websockets` library
//! are in `tests/clients/python/test_websocket.py`.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use base64::Engine as _;
use tokio_tungstenite::tungstenite::{
    self, Message, WebSocket, client::IntoClientRequest as _, http::HeaderValue,
};

use super::{Server, TempDir, component_path};

type Ws = WebSocket<TcpStream>;

/// Starts qgate with the password file `alice:secret` and `extra` (TOML).
fn serve(dir: &TempDir, extra: &str) -> Server {
    let passwords = dir.write("passwords.txt", "alice:secret\n");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[auth]\npassword_file = \"{}\"\n{extra}",
            passwords.display()
        ),
    );
    Server::with_config(&config)
}

/// A WebSocket to `addr` as `alice:secret`, or the HTTP status that refused it.
fn open(addr: SocketAddr, password: &str) -> Result<Ws, u16> {
    let mut request = format!("ws://{addr}/")
        .into_client_request()
        .expect("a request");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Basic {token}")).expect("a header"),
    );
    let stream = TcpStream::connect(addr).expect("qgate is listening");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("the handshake failed: {error}"),
    }
}

/// The next data message, or `None` when nothing comes within `wait`.
fn next(ws: &mut Ws, wait: Duration) -> Option<Message> {
    ws.get_ref()
        .set_read_timeout(Some(wait))
        .expect("a timeout");
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(message) => return Some(message),
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return None;
            }
            Err(error) => panic!("the WebSocket failed: {error}"),
        }
    }
}

const SOON: Duration = Duration::from_secs(10);

#[test]
fn demo_api_answers_text_frames_with_values_and_echoes_binary_frames() {
    let dir = TempDir::new("ws-demo");
    let demo = component_path("demo-api");
    let decisions = dir.0.join("decisions.jsonl");
    let server = serve(
        &dir,
        &format!(
            "[decision_log]\npath = \"{}\"\n\n[[plugins]]\nname = \"demo-api\"\npath = \"{}\"\n",
            decisions.display(),
            demo.display()
        ),
    );
    assert_eq!(open(server.addr, "wrong").err(), Some(401));
    let mut ws = open(server.addr, "secret").expect("the upgrade");
    ws.send(Message::text("1 2 3")).expect("sent");
    assert_eq!(next(&mut ws, SOON), Some(Message::text("1 2 3")));
    ws.send(Message::binary(vec![0u8, 255])).expect("sent");
    assert_eq!(next(&mut ws, SOON), Some(Message::binary(vec![0u8, 255])));
    ws.close(None).expect("closed");
    // Each message is a line of the decision log, its text when it is a text message.
    let deadline = std::time::Instant::now() + SOON;
    let lines = loop {
        let text = std::fs::read_to_string(&decisions).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line: &serde_json::Value| line["event"] == "ws")
            .collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test polling a file written by another process"
        )]
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["decision"], "replied", "{}", lines[0]);
    assert_eq!(lines[0]["decided_by"], "demo-api", "{}", lines[0]);
    assert_eq!(lines[0]["text"], "1 2 3", "{}", lines[0]);
    assert_eq!(lines[1]["size"], 2, "{}", lines[1]);
}

#[test]
fn a_chain_that_checks_queries_but_not_websocket_messages_drops_them() {
    let dir = TempDir::new("ws-closed");
    let allowlist = component_path("allowlist");
    let mut server = serve(
        &dir,
        &format!(
            "[[plugins]]\nname = \"allowlist\"\npath = \"{}\"\nconfig = {{ users = {{ alice = [\"echo\"] }} }}\n",
            allowlist.display()
        ),
    );
    let mut ws = open(server.addr, "secret").expect("the upgrade");
    ws.send(Message::text("delete from `t")).expect("sent");
    assert_eq!(next(&mut ws, Duration::from_millis(500)), None);
    drop(ws);
    server.terminate();
    let log = server.stderr();
    assert!(log.contains("none checks WebSocket messages"), "{log}");
}

#[test]
fn the_gateway_relays_to_the_upstreams_websocket_or_says_502() {
    let mut options = qgate_e2e::upstream::UpstreamOptions {
        name: "rdb".into(),
        ..qgate_e2e::upstream::UpstreamOptions::default()
    };
    options.add_login("svc:pw").expect("a login");
    let rdb = qgate_e2e::upstream::Upstream::start(options).expect("the test upstream starts");
    let dir = TempDir::new("ws-gateway");
    let server = serve(
        &dir,
        &format!(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"{}\"]\nuser = \"svc\"\npassword = \"pw\"\n",
            rdb.addr()
        ),
    );
    let mut ws = open(server.addr, "secret").expect("the upgrade");
    ws.send(Message::text("push 2")).expect("sent");
    assert_eq!(next(&mut ws, SOON), Some(Message::text("svc/alice:push 2")));
    assert_eq!(next(&mut ws, SOON), Some(Message::text("push 1 of 2")));
    assert_eq!(next(&mut ws, SOON), Some(Message::text("push 2 of 2")));
    ws.close(None).expect("closed");
    drop(rdb);
    assert_eq!(open(server.addr, "secret").err(), Some(502));
}
