//! WebSocket on the q port: an upgrade logs in as any HTTP request, the hooks see its open, each
//! message and its close, and a message past the limit closes the WebSocket with 1009 without
//! touching the q clients on the same port.

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use qgate_ipc::K;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{
        Error as WsError, Message, client::IntoClientRequest as _, http::HeaderValue,
        protocol::frame::coding::CloseCode,
    },
};

use super::{Event, SOON, Server, WALKTHROUGH, options, temp_file, with_password_file};

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket to `path`, logged in as `user:password` when given.
async fn open(addr: SocketAddr, path: &str, login: Option<(&str, &str)>) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some((user, password)) = login {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio::time::timeout(SOON, client_async(request, stream))
        .await
        .expect("the handshake ends")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

/// The next message that is not a ping or pong; `None` when the WebSocket ended.
async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(SOON, ws.next())
            .await
            .expect("a message or the end comes")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The HTTP status an upgrade that was refused got.
fn refused_status(error: WsError) -> u16 {
    match error {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

#[tokio::test]
async fn messages_reach_the_hooks_which_reply_deny_and_close() {
    let server = Server::default().await;
    let mut ws = open(server.addr, "/", Some(("bob", "pw"))).await.unwrap();

    ws.send(Message::text("hello")).await.unwrap();
    for _ in 0..2 {
        assert_eq!(next(&mut ws).await, Some(Message::text("bob:hello")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(b"bob:\x00\x01\x02".to_vec()))
    );
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(b"bob:\x00\x01\x02".to_vec()))
    );

    // A denied message and a passed one (no backend) are dropped: nothing comes back, and the
    // WebSocket goes on.
    ws.send(Message::text("deny")).await.unwrap();
    ws.send(Message::text("pass")).await.unwrap();
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("bob:after")));
    assert_eq!(next(&mut ws).await, Some(Message::text("bob:after")));

    // A hook closes it with its own code.
    ws.send(Message::text("close")).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::from(4000));
            assert_eq!(frame.reason.as_str(), "asked to");
        }
        other => panic!("not a close: {other:?}"),
    }
    assert_eq!(next(&mut ws).await, None);

    // A client that closes is told to on_ws_close too.
    let mut ws = open(server.addr, "/", Some(("carol", "pw"))).await.unwrap();
    ws.close(None).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(Message::Close(_))));
    assert_eq!(next(&mut ws).await, None);
    let closes = wait_for_ws_closes(&server, 2).await;
    assert!(
        closes.contains(&("bob".to_owned(), "closed by a hook (4000)".to_owned())),
        "{closes:?}"
    );
    assert!(
        closes
            .iter()
            .any(|(user, reason)| user == "carol" && reason.contains("client closed")),
        "{closes:?}"
    );
    server.shut_down().await.unwrap();
}

async fn wait_for_ws_closes(server: &Server, count: usize) -> Vec<(String, String)> {
    let started = tokio::time::Instant::now();
    loop {
        let closes: Vec<_> = server
            .hooks
            .events()
            .into_iter()
            .filter_map(|event| match event {
                Event::WsClose { user, reason } => Some((user, reason)),
                _ => None,
            })
            .collect();
        if closes.len() >= count || started.elapsed() > SOON {
            return closes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_upgrade_logs_in_first_and_the_open_hook_may_refuse_it() {
    let path = temp_file("ws-users.txt");
    std::fs::write(&path, WALKTHROUGH).unwrap();
    let server = Server::start(with_password_file(path, false)).await;
    let anonymous = open(server.addr, "/", None).await.unwrap_err();
    assert_eq!(refused_status(anonymous), 401);
    let wrong = open(server.addr, "/", Some(("admin", "nope")))
        .await
        .unwrap_err();
    assert_eq!(refused_status(wrong), 401);
    let denied = open(server.addr, "/deny", Some(("admin", "password")))
        .await
        .unwrap_err();
    assert_eq!(refused_status(denied), 403);
    let mut ws = open(server.addr, "/", Some(("admin", "password")))
        .await
        .unwrap();
    ws.send(Message::text("1")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("admin:1")));
    assert_eq!(next(&mut ws).await, Some(Message::text("admin:1")));

    // Shutdown closes an open WebSocket with 1001.
    let stopping = tokio::spawn(server.shut_down());
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("not a close: {other:?}"),
    }
    drop(ws);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009_and_q_clients_go_on() {
    let server = Server::start(options(|o| o.http.max_ws_message_bytes = 1024)).await;
    let mut client = server.client("alice:x").await;
    let mut ws = open(server.addr, "/", Some(("bob", "pw"))).await.unwrap();
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(Message::Binary(_))));
    assert!(matches!(next(&mut ws).await, Some(Message::Binary(_))));
    // A frame whose header claims more than the limit is refused before its payload is read.
    let _ = ws.send(Message::binary(vec![7u8; 4096])).await;
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("not a close: {other:?}"),
    }
    assert_eq!(client.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_pinged_and_then_closed_and_one_that_answers_stays() {
    let server = Server::start(options(|o| {
        o.http.ws_ping_interval = Duration::from_millis(200);
    }))
    .await;
    // This one reads all along, so tungstenite answers the server's pings.
    let mut lively = open(server.addr, "/", Some(("bob", "pw"))).await.unwrap();
    let reader = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(1000);
        loop {
            match tokio::time::timeout_at(until, lively.next()).await {
                Err(_) => return (lively, true),
                Ok(Some(Ok(Message::Ping(_)))) => {}
                Ok(_) => return (lively, false),
            }
        }
    });
    // This one never reads: it cannot answer the ping, and is closed with 1001.
    let mut silent = open(server.addr, "/", Some(("carol", "pw"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut saw_ping = false;
    let close = loop {
        match tokio::time::timeout(SOON, silent.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => saw_ping = true,
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("neither a ping nor a close: {other:?}"),
        }
    };
    assert!(saw_ping);
    assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
    assert_eq!(next(&mut silent).await, None);
    let (mut lively, still_open) = reader.await.unwrap();
    assert!(still_open, "the client that answers pings stays open");
    lively.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut lively).await, Some(Message::text("bob:x")));
    drop(lively);
    server.shut_down().await.unwrap();
}
