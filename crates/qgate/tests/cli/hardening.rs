//! What the process does with a password file it cannot trust and with a shutdown signal while
//! a plugin is stuck: refuse the file by what it is, before anything is bound, and exit within
//! the grace period whatever the plugin does.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{PATIENCE, Server, TempDir, component_path, qgate, stderr, stdout};

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs `qgate ARGS` to its end, or fails the test if it is still running after [`PATIENCE`]: a
/// command that waits on a FIFO must not hang the suite.
fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut child = qgate()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qgate runs");
    let deadline = Instant::now() + PATIENCE;
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`qgate {}` still running after {PATIENCE:?}",
                args.join(" ")
            );
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test polling a child process: no async runtime to block"
        )]
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

/// A password file that is a directory, a FIFO, `/dev/zero` or larger than the cap: `check`
/// names what it is and says no, without hanging; before, it said `ok` for all but the FIFO,
/// and hung on that one.
#[test]
fn check_refuses_a_password_file_that_is_not_a_small_regular_file() {
    let dir = TempDir::new("check-password");
    fs::create_dir_all(dir.0.join("a-directory")).expect("a directory");
    mkfifo(&dir.0.join("a-fifo"));
    let large = fs::File::create(dir.0.join("large.txt")).expect("a file");
    large.set_len(9 << 20).expect("a sparse file of 9 MiB");
    for (file, expect) in [
        ("a-directory", "is a directory, not a regular file"),
        ("a-fifo", "is a FIFO, not a regular file"),
        ("/dev/zero", "is a character device, not a regular file"),
        ("large.txt", "is larger than 8388608 bytes"),
    ] {
        let config = dir.write("qgate.toml", &format!("[auth]\npassword_file = {file:?}\n"));
        let output = run_bounded(&["check", config.to_str().expect("a UTF-8 path")]);
        assert_eq!(output.status.code(), Some(1), "{file}: {output:?}");
        let message = stderr(&output);
        assert!(message.contains("auth.password_file: "), "{message}");
        assert!(message.contains(expect), "{file}: {message}");
    }
}

/// A directory as the password file stops `serve` before it listens, with the cause said once;
/// before, it printed its listening line, then exited with the cause written twice.
#[test]
fn serve_refuses_a_password_file_that_is_a_directory_before_it_listens() {
    let dir = TempDir::new("serve-password-dir");
    let users = dir.0.join("users");
    fs::create_dir_all(&users).expect("a directory");
    let output = run_bounded(&[
        "serve",
        "-p",
        "127.0.0.1:0",
        "-U",
        users.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "", "nothing was announced");
    let message = stderr(&output);
    assert_eq!(
        message.matches("is a directory").count(),
        1,
        "the cause said once: {message}"
    );
    assert!(!message.contains("listening"), "{message}");
}

/// A sync request, the char vector `text`, as a raw little-endian frame.
fn sync_frame(text: &str) -> Vec<u8> {
    let len = u32::try_from(8 + 6 + text.len()).expect("a short text");
    let count = u32::try_from(text.len()).expect("a short text");
    let mut frame = vec![1, 1, 0, 0];
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&[10, 0]);
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// Logs in and returns the connection.
fn log_in(server: &Server) -> TcpStream {
    let mut client = TcpStream::connect(server.addr).expect("the server accepts");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    client.write_all(b"u:p\x03\x00").expect("the handshake");
    let mut capability = [0u8; 1];
    client.read_exact(&mut capability).expect("the capability");
    client
}

/// With a plugin call that would run for a minute, SIGTERM and a grace of 1 s: the call is cut,
/// the process exits, and the client's socket closes with it. Before, the process waited for the
/// call to end (5.1 s after SIGTERM with a 5 s call), and sockets stayed open meanwhile.
#[test]
fn serve_exits_within_the_grace_while_a_plugin_call_runs() {
    let dir = TempDir::new("grace");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[server]\nshutdown_grace = \"1s\"\n\
             [[plugins]]\nname = \"spin\"\npath = {:?}\ntime_budget = \"60s\"\n\
             config = {{ only = \"spin\" }}\n",
            component_path("spin")
        ),
    );
    let mut server = Server::with_config(&config);
    let mut spinning = log_in(&server);
    spinning.write_all(&sync_frame("spin")).expect("the query");
    // Another client's round trip after it: by then the spinning query has been read and its call
    // has started.
    let mut other = log_in(&server);
    other.write_all(&sync_frame("ping")).expect("the query");
    let mut header = [0u8; 8];
    other.read_exact(&mut header).expect("an answer");
    #[expect(
        clippy::disallowed_methods,
        reason = "a synchronous test giving the server a moment; no runtime here"
    )]
    thread::sleep(Duration::from_millis(500));

    // `terminate` fails the test if the process is still there after PATIENCE (30 s), half the
    // call's budget.
    let status = server.terminate();
    let stderr = server.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("cutting the connections still busy"),
        "the call was in flight at the cut: {stderr}"
    );
    assert!(stderr.contains("server stopped"), "{stderr}");
    assert!(
        !stderr.contains("ran past its time budget"),
        "the call did not run to its budget: {stderr}"
    );
    // The socket closed with the process.
    let mut rest = Vec::new();
    match spinning.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
}
