//! HTTP on the q port: requests reach `on_http` after their login, what the hooks pass gets the
//! backend's answer, and the limits close a misbehaving HTTP client without touching the q
//! clients on the same port.

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use qgate_ipc::K;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{SOON, Server, WALKTHROUGH, options, temp_file, with_password_file};

/// A response as the test reads it: the status line's code, the head, the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` (whole, with `Connection: close`) and reads the response to the end.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(SOON, stream.read_to_end(&mut bytes))
        .await
        .expect("the response comes")
        .unwrap();
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn get(target: &str, authorization: Option<(&str, &str)>) -> Vec<u8> {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: q\r\nConnection: close\r\n");
    if let Some((user, password)) = authorization {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

#[tokio::test]
async fn a_get_and_a_post_reach_the_hooks_and_what_they_pass_gets_nothing_answered() {
    let server = Server::default().await;
    let answered = exchange(server.addr, &get("/?til%2010", None)).await;
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.body, ":til 10");
    assert!(answered.head.contains("x-method: get"), "{answered:?}");

    let post = b"POST / HTTP/1.1\r\nHost: q\r\nConnection: close\r\nContent-Length: 3\r\n\r\n1+1";
    let posted = exchange(server.addr, post).await;
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(posted.body, ":1+1");

    let denied = exchange(server.addr, &get("/?deny", None)).await;
    assert_eq!(denied.status, 451);
    assert_eq!(denied.body, "not here");

    let passed = exchange(server.addr, &get("/index.html", None)).await;
    assert_eq!(passed.status, 404);
    assert!(passed.body.contains("nothing answered"), "{passed:?}");

    // A q client on the same port is served as ever.
    let mut client = server.client("alice:x").await;
    assert_eq!(client.sync(&K::long(7)).await, K::long(7));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn basic_logins_are_checked_against_the_password_file_and_the_auth_hook() {
    let path = temp_file("users.txt");
    std::fs::write(&path, WALKTHROUGH).unwrap();
    let server = Server::start(with_password_file(path, false)).await;

    let anonymous = exchange(server.addr, &get("/?1", None)).await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .head
            .contains("www-authenticate: basic realm=\"qgate\""),
        "{anonymous:?}"
    );
    let wrong = exchange(server.addr, &get("/?1", Some(("admin", "nope")))).await;
    assert_eq!(wrong.status, 401);
    let right = exchange(server.addr, &get("/?1", Some(("admin", "password")))).await;
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(right.body, "admin:1");
    let bearer =
        b"GET /?1 HTTP/1.1\r\nHost: q\r\nConnection: close\r\nAuthorization: Bearer x\r\n\r\n";
    assert_eq!(exchange(server.addr, bearer).await.status, 401);
    server.shut_down().await.unwrap();

    // Without a password file, the auth hook decides alone and may rename the user.
    let server = Server::default().await;
    let denied = exchange(server.addr, &get("/?1", Some(("deny", "x")))).await;
    assert_eq!(denied.status, 401);
    let renamed = exchange(server.addr, &get("/?1", Some(("alias", "x")))).await;
    assert_eq!(renamed.body, "mapped:1");
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_kept_alive_connection_logs_in_once_and_serves_request_after_request() {
    let server = Server::default().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode("bob:pw");
    for query in ["a", "b", "c"] {
        let request =
            format!("GET /?{query} HTTP/1.1\r\nHost: q\r\nAuthorization: Basic {encoded}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let expected = format!("bob:{query}");
        let mut bytes = Vec::new();
        let mut chunk = [0; 1024];
        while !String::from_utf8_lossy(&bytes).ends_with(&expected) {
            let n = tokio::time::timeout(SOON, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&chunk[..n]);
        }
    }
    let auths = server
        .hooks
        .events()
        .iter()
        .filter(|event| matches!(event, super::Event::Auth { .. }))
        .count();
    assert_eq!(auths, 1, "one login for three requests");
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn oversized_heads_bodies_and_slow_clients_are_closed_and_q_clients_go_on() {
    let server = Server::start(options(|o| {
        o.http.header_timeout = Duration::from_millis(300);
        o.http.keepalive_idle = Duration::from_millis(300);
        o.http.max_body_bytes = 1024;
    }))
    .await;
    let mut client = server.client("alice:x").await;

    // A head past 16 KiB.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: q\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let refused = exchange(server.addr, big.as_bytes()).await;
    assert_eq!(refused.status, 431, "{refused:?}");

    // A body past max_body_bytes.
    let body = "x".repeat(2048);
    let post = format!(
        "POST / HTTP/1.1\r\nHost: q\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(server.addr, post.as_bytes()).await.status, 413);

    // A slowloris client: half a head, then nothing. It is closed once header_timeout passes.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: q\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(SOON, slow.read_to_end(&mut rest))
        .await
        .expect("the slow client is closed")
        .unwrap_or_default();
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A kept-alive connection that sends nothing more is closed once keepalive_idle passes.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /?1 HTTP/1.1\r\nHost: q\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(SOON, idle.read_to_end(&mut bytes))
        .await
        .expect("the idle connection is closed")
        .unwrap_or_default();
    assert_eq!(parse(&bytes).status, 200);

    // Meanwhile the q client was never disturbed.
    assert_eq!(client.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}
