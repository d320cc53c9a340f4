//! What a client, a file or a neighbour can no longer do to the server: lock out logins through
//! the password file, guess passwords at full speed, keep clients out with silent sockets, pin
//! memory with messages it never finishes or replies it never reads, or make a small frame a large
//! allocation.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use qgate_hooks::CloseReason;
use qgate_ipc::{K, MessageType, VectorData, compress, encode_message};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};

use super::{
    Client, SOON, Server, WALKTHROUGH, eventually, eventually_accepted, expect_refused, handshake,
    options, temp_file, with_password_file,
};

// ---------------------------------------------------------------------------------------------
// The password file is read off the login path.
// ---------------------------------------------------------------------------------------------

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Puts `replacement` in the password file's place by a rename, as an editor or a deploy would.
fn rename_over(path: &Path, replacement: &Path) {
    std::fs::rename(replacement, path).unwrap();
}

#[tokio::test]
async fn a_password_file_that_is_not_a_regular_file_stops_the_server_at_start() {
    let dir = temp_file("dir");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = temp_file("fifo");
    mkfifo(&fifo);
    for (path, kind) in [
        (dir, "a directory"),
        (fifo, "a FIFO"),
        ("/dev/zero".into(), "a character device"),
    ] {
        let error = qgate_server::Server::new(
            with_password_file(path.clone(), false),
            qgate_hooks::NoHooks,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains(kind), "{}: {error}", path.display());
        assert!(error.contains("not a regular file"), "{error}");
    }
}

#[tokio::test]
async fn a_fifo_renamed_over_the_password_file_holds_up_no_login() {
    let path = temp_file("users.txt");
    std::fs::write(&path, WALKTHROUGH).unwrap();
    let mut options = with_password_file(path.clone(), false);
    options.login_backoff.first_delay = None;
    let server = Server::start(options).await;
    server.client("admin:password").await;

    // A FIFO in the file's place: reading it would wait for a writer that never comes.
    let fifo = path.with_extension("fifo");
    mkfifo(&fifo);
    rename_over(&path, &fifo);
    // Past the reload interval, logins go on with the entries in force, at once.
    for _ in 0..30 {
        let mut client = server.client("admin:password").await;
        assert_eq!(client.sync(&K::long(1)).await, K::long(1));
        expect_refused(server.addr, "admin:wrong").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `/dev/zero` behind a symbolic link: refused by what it is, never read.
    let link = path.with_extension("link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    rename_over(&path, &link);
    for _ in 0..30 {
        server.client("admin:password").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A regular file put back is read again.
    let good = path.with_extension("new");
    std::fs::write(&good, "admin:rotated\n").unwrap();
    rename_over(&path, &good);
    eventually_accepted(server.addr, "admin:rotated").await;
    expect_refused(server.addr, "admin:password").await;
    server.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Brute force.
// ---------------------------------------------------------------------------------------------

/// A client socket from `source`, a loopback address other than the server's, so that one test
/// can play several machines.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends a handshake from `source` and returns the server's answer: the capability byte, or
/// `None` for a refusal.
async fn login_from(source: &str, addr: SocketAddr, credentials: &str) -> Option<u8> {
    let mut stream = connect_from(source, addr).await;
    stream
        .write_all(&handshake(credentials, Some(3)))
        .await
        .unwrap();
    let mut reply = [0u8; 1];
    match tokio::time::timeout(SOON * 3, stream.read(&mut reply))
        .await
        .expect("answered")
    {
        Ok(1) => Some(reply[0]),
        _ => None,
    }
}

#[tokio::test]
async fn failed_logins_make_the_guesser_wait_and_nobody_else() {
    let path = temp_file("users.txt");
    std::fs::write(&path, "alice:secret\nbob:hunter2\n").unwrap();
    let mut options = with_password_file(path, false);
    // Waits long enough that twenty connections made at once all ask before the first is let in.
    options.login_backoff.first_delay = Some(Duration::from_secs(1));
    options.login_backoff.max_delay = Duration::from_secs(3);
    options.login_backoff.failures_before_delay = 3;
    let server = Server::start(options).await;

    // Three guesses at alice cost nothing, and then the guesser's address is in the queue.
    for _ in 0..3 {
        assert_eq!(
            login_from("127.0.0.2", server.addr, "alice:guess").await,
            None
        );
    }
    // Twenty attempts at once from the guesser's address, with the right password: the three
    // whose turns fall within the longest wait are checked (and let in), the rest are refused
    // without a check. Without the protection every one of them got in at once.
    let attempts = (0..20).map(|_| login_from("127.0.0.2", server.addr, "alice:secret"));
    let answers = futures_join_all(attempts).await;
    let accepted = answers.iter().filter(|answer| **answer == Some(3)).count();
    assert!((1..=6).contains(&accepted), "{answers:?}");

    // Meanwhile another machine logs in as another user, and as alice herself.
    assert_eq!(
        login_from("127.0.0.3", server.addr, "bob:hunter2").await,
        Some(3)
    );
    assert_eq!(
        login_from("127.0.0.3", server.addr, "alice:secret").await,
        Some(3)
    );
    server.shut_down().await.unwrap();
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join_all<F: Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

// ---------------------------------------------------------------------------------------------
// Handshake slots.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_sockets_cannot_keep_a_client_out() {
    // As the probe: as many silent sockets as `max_connections`.
    let server = Server::start(options(|o| {
        o.limits.max_connections = 100;
        o.limits.max_handshakes_per_address = 20;
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(connect_from("127.0.0.2", server.addr).await);
    }
    // Only 20 of them hold a handshake slot; the rest were closed at once.
    let mut closed = 0;
    for stream in &mut silent {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 80,
        "{closed} of 100 silent sockets closed at once"
    );
    // A client from elsewhere logs in and is served.
    let mut client = server.client("good").await;
    assert_eq!(client.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Memory: the budget, the write and body timeouts, the expansion limit.
// ---------------------------------------------------------------------------------------------

/// A sync request whose body is a byte vector of `len` bytes.
fn large_request(len: usize) -> Vec<u8> {
    encode_message(
        MessageType::Sync,
        &K::vector(VectorData::Byte(vec![7; len])),
    )
    .unwrap()
}

/// A server with a 64 MiB memory budget, and a client that reads nothing and holds its 40 MiB
/// echo, charged, while it waits to be written: 24 MiB of the budget are left.
async fn budget_held_by_a_client_that_reads_nothing() -> (Server, Client) {
    let server = Server::start(options(|o| {
        o.limits.memory_budget = 64 << 20;
        o.limits.max_message_bytes = 48 << 20;
        o.limits.write_timeout = Duration::from_secs(60);
    }))
    .await;
    let mut holder = server.client("holder").await;
    holder.send_raw(&large_request(40 << 20)).await;
    let hooks = std::sync::Arc::clone(&server.hooks);
    eventually("the holder's request handled", || !hooks.syncs().is_empty()).await;
    (server, holder)
}

#[tokio::test]
async fn what_the_hooks_hold_while_they_decide_is_charged_to_the_budget() {
    let (server, mut holder) = budget_held_by_a_client_that_reads_nothing().await;
    let hooks = std::sync::Arc::clone(&server.hooks);

    // A 10 MiB message, whose echo also fits (10 MiB, 20 while it is encoded), does not when
    // the hooks hold two copies of it while they decide: 30 MiB. It is refused with the
    // budget's error, and the connection goes on.
    server
        .hooks
        .deciding_copies
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let mut other = server.client("other").await;
    other.send_raw(&large_request(10 << 20)).await;
    let (_, reply) = other.receive().await;
    let K::Error(text) = reply else {
        panic!("expected a q error, got {reply:?}")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.contains("limits.memory_budget"), "{text}");
    assert_eq!(hooks.syncs().len(), 1, "the hooks never saw it");

    // Hooks that hold nothing beside the server get the same message through.
    server
        .hooks
        .deciding_copies
        .store(0, std::sync::atomic::Ordering::Relaxed);
    other.send_raw(&large_request(10 << 20)).await;
    let (_, echoed) = other.receive().await;
    assert_eq!(echoed, K::vector(VectorData::Byte(vec![7; 10 << 20])));
    let (_, echoed) = holder.receive().await;
    assert_eq!(echoed, K::vector(VectorData::Byte(vec![7; 40 << 20])));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_by_the_write_timeout() {
    // The idle timeout is off, as by default.
    let server = Server::start(options(|o| {
        o.limits.write_timeout = Duration::from_millis(500);
    }))
    .await;
    let mut reader = server.client("reader").await;
    let mut stuck = server.client("stuck").await;
    // Its echo is far more than the socket buffers hold, and it reads none of it.
    stuck.send_raw(&large_request(64 << 20)).await;
    let hooks = std::sync::Arc::clone(&server.hooks);
    eventually("the stuck client closed", || {
        hooks.closes_of("stuck") == [CloseReason::Limit("write_timeout")]
    })
    .await;
    assert_eq!(reader.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_body_that_stops_is_closed_by_the_body_timeout() {
    let server = Server::start(options(|o| {
        o.limits.body_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut stalled = server.client("stalled").await;
    // A header for 100 000 bytes, then 10 of them, then silence, with the idle timeout off.
    let mut bytes = vec![1, 1, 0, 0];
    bytes.extend_from_slice(&100_000u32.to_le_bytes());
    bytes.extend([0u8; 10]);
    stalled.send_raw(&bytes).await;
    let hooks = std::sync::Arc::clone(&server.hooks);
    eventually("the stalled client closed", || {
        hooks.closes_of("stalled") == [CloseReason::Limit("body_timeout")]
    })
    .await;
    stalled.expect_closed().await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_message_the_budget_cannot_hold_gets_a_q_error_and_the_connection_goes_on() {
    let (server, mut holder) = budget_held_by_a_client_that_reads_nothing().await;

    // 30 MiB more do not fit the 64 MiB budget: the message is read past and refused with a q
    // error naming the limit, and the connection goes on.
    let mut other = server.client("other").await;
    other.send_raw(&large_request(30 << 20)).await;
    let (message_type, reply) = other.receive().await;
    assert_eq!(message_type, MessageType::Response);
    let K::Error(text) = reply else {
        panic!("expected a q error, got {reply:?}")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.contains("limits.memory_budget"), "{text}");
    assert_eq!(other.sync(&K::long(2)).await, K::long(2));

    // The holder still gets its whole reply once it reads.
    let (_, echoed) = holder.receive().await;
    assert_eq!(echoed, K::vector(VectorData::Byte(vec![7; 40 << 20])));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_frame_that_expands_too_far_is_refused_before_it_is_decompressed() {
    let server = Server::start(qgate_server::ServerOptions::default()).await;
    let mut bomb = server.client("bomb").await;
    // 4 MiB of zeros compress to about 35 KiB: 121 times, past the default of 32.
    let plain = large_request(4 << 20);
    let compressed = compress(&plain).unwrap();
    assert!(compressed.len() * 100 < plain.len());
    bomb.send_raw(&compressed).await;
    bomb.expect_closed().await;
    let hooks = std::sync::Arc::clone(&server.hooks);
    eventually("the bomb closed", || {
        hooks.closes_of("bomb") == [CloseReason::Limit("max_expansion")]
    })
    .await;
    assert!(hooks.syncs().is_empty(), "it never reached the hooks");
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn sockets_in_their_handshake_do_not_count_against_max_connections() {
    let server = Server::start(options(|o| o.limits.max_connections = 1)).await;
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let mut first = server.client("first").await;
    expect_refused(server.addr, "second").await;
    assert_eq!(first.sync(&K::long(1)).await, K::long(1));
    server.shut_down().await.unwrap();
}
