//! The `qgate` binary's command-line tests: `qgate check` and `qgate serve`, run as processes.
//!
//! `serve` tests bind `127.0.0.1:0` and read the port from the `qgate listening on ADDR` line on
//! stdout. Every spawned server sits in a [`Server`] guard that kills it if the test fails.

use std::{
    env, fs,
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a server may take to stop, or to answer; generous, as the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long a server may take to start: it compiles its plugins first, which an unoptimised build
/// of the engine does slowly (tens of seconds for a larger plugin on a busy machine).
const START_PATIENCE: Duration = Duration::from_secs(180);

fn qgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qgate"));
    // The test's own RUST_LOG must not change the server's logging.
    command.env_remove("RUST_LOG");
    command
}

fn run(args: &[&str]) -> Output {
    qgate().args(args).output().expect("qgate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory for this test process, removed when dropped.
struct TempDir(pub(crate) PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = env::temp_dir().join(format!("qgate-cli-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn reference_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.toml")
}

#[test]
fn check_accepts_the_reference_config() {
    let path = reference_config();
    let path = path.to_str().expect("a UTF-8 path");
    let output = run(&["check", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{path}: ok\n"));
}

/// `check` refuses a decision log that `serve` could not open, and creates nothing.
#[test]
fn check_refuses_a_decision_log_that_cannot_be_made() {
    let dir = TempDir::new("check-decisions");
    let missing = dir.write(
        "missing.toml",
        "[decision_log]\npath = \"no/such/dir/d.jsonl\"\n",
    );
    let output = run(&["check", missing.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("decision_log.path:")
            && stderr(&output).contains("is not a directory"),
        "{output:?}"
    );
    let directory = dir.write("directory.toml", "[decision_log]\npath = \".\"\n");
    let output = run(&["check", directory.to_str().expect("a UTF-8 path")]);
    assert!(
        stderr(&output).contains("is not a regular file"),
        "{output:?}"
    );
    let good = dir.write("good.toml", "[decision_log]\npath = \"d.jsonl\"\n");
    let output = run(&["check", good.to_str().expect("a UTF-8 path")]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        !good.with_file_name("d.jsonl").exists(),
        "check created the log"
    );
}

#[test]
fn check_names_the_bad_key() {
    let dir = TempDir::new("check");
    let path = dir.write("bad.toml", "[limits]\nmax_connections = \"x\"\n");
    let output = run(&["check", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(
        message.contains("bad.toml: limits.max_connections: invalid type"),
        "{message}"
    );
    assert!(message.contains("(line 2, column 19)"), "{message}");

    let path = dir.write("typo.toml", "[log]\nlevl = \"info\"\n");
    let output = run(&["check", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("log.levl: unknown field `levl`"),
        "{output:?}"
    );

    let path = dir.write("level.toml", "[log]\nlevel = \"qgate=loud\"\n");
    let output = run(&["check", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("level.toml: log.level: "),
        "{output:?}"
    );

    let path = dir.write("auth.toml", "[auth]\npassword_file = \"missing.txt\"\n");
    let output = run(&["check", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("auth.password_file: cannot read"),
        "{output:?}"
    );

    let output = run(&["check", "no-such-config.toml"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("no-such-config.toml: cannot read: "),
        "{output:?}"
    );
}

/// A running `qgate serve`, killed when dropped unless it has already exited.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl Server {
    /// Starts `qgate serve ARGS` and waits for its listening line.
    fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts `qgate serve --config CONFIG -p 127.0.0.1:0`: the config's server, on a free port.
    fn with_config(config: impl AsRef<Path>) -> Self {
        let config = config.as_ref().to_str().expect("a UTF-8 path");
        Self::start(&["--config", config, "-p", "127.0.0.1:0"])
    }

    /// Starts `qgate serve ARGS` with `env` set and waits for its listening line.
    fn start_with_env(args: &[&str], env: &[(&str, &Path)]) -> Self {
        let mut child = qgate()
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qgate serve starts");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr: Some(stderr),
        };
        let line = received
            .recv_timeout(START_PATIENCE)
            .unwrap_or_else(|error| {
                let _ = server.child.kill();
                panic!(
                    "no listening line from qgate serve ({error}); stderr:\n{}",
                    server.stderr()
                )
            });
        let addr = line
            .strip_prefix("qgate listening on ")
            .unwrap_or_else(|| panic!("unexpected first line on stdout: {line:?}"));
        server.addr = addr.parse().expect("the listening line holds an address");
        server
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "qgate serve did not exit within {PATIENCE:?} of SIGTERM"
            );
            #[expect(
                clippy::disallowed_methods,
                reason = "a synchronous test polling a child process: no async runtime to block"
            )]
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server wrote to stderr; complete once it has exited.
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serve_answers_a_handshake_and_stops_on_sigterm() {
    let dir = TempDir::new("serve");
    let config = dir.write("qgate.toml", "[server]\nshutdown_grace = \"1s\"\n");
    let mut server = Server::with_config(&config);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_ne!(server.addr.port(), 0);

    let mut client = TcpStream::connect(server.addr).expect("the server accepts");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    client
        .write_all(b"user:pass\x03\x00")
        .expect("the handshake is sent");
    let mut capability = [0_u8; 1];
    client
        .read_exact(&mut capability)
        .expect("the server answers the handshake");
    assert_eq!(capability, [3]);

    let status = server.terminate();
    let stderr = server.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

/// Sends a handshake and returns the server's answer: the capability byte, or `None` when the
/// server closes the connection instead (a refused login).
fn handshake(addr: SocketAddr, credentials: &[u8]) -> Option<u8> {
    let mut client = TcpStream::connect(addr).expect("the server accepts");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    client
        .write_all(credentials)
        .expect("the handshake is sent");
    let mut answer = [0_u8; 1];
    match client.read(&mut answer) {
        Ok(0) => None,
        Ok(_) => Some(answer[0]),
        // A close with unread data in the server's buffer arrives as a reset.
        Err(error) if error.kind() == ErrorKind::ConnectionReset => None,
        Err(error) => panic!("the server neither answered nor closed: {error}"),
    }
}

/// A password file named in the config is found next to the config, and `-U` on the command line
/// replaces it.
#[test]
fn serve_checks_the_password_file() {
    let dir = TempDir::new("auth");
    dir.write("passwords.txt", "user:pass\n");
    dir.write("other.txt", "other:secret\n");
    let config = dir.write("qgate.toml", "[auth]\npassword_file = \"passwords.txt\"\n");
    let config = config.to_str().expect("a UTF-8 path");

    let mut server = Server::with_config(config);
    assert_eq!(handshake(server.addr, b"user:pass\x03\x00"), Some(3));
    assert_eq!(handshake(server.addr, b"user:wrong\x03\x00"), None);
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());

    let other = dir.0.join("other.txt");
    let other = other.to_str().expect("a UTF-8 path");
    let mut server = Server::start(&["--config", config, "-p", "127.0.0.1:0", "-U", other]);
    assert_eq!(handshake(server.addr, b"user:pass\x03\x00"), None);
    assert_eq!(handshake(server.addr, b"other:secret\x03\x00"), Some(3));
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

#[test]
fn serve_names_an_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let output = run(&["serve", "-p", &addr]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "");
    let stderr = stderr(&output);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("another process is listening there"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let dir = TempDir::new("serve-bad");
    let config = dir.write("qgate.toml", "[limits]\nidle_timeout = \"soon\"\n");
    let output = run(&["serve", "--config", config.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("limits.idle_timeout: invalid duration"),
        "{output:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS, with certificates from `qgate certs`.
// ---------------------------------------------------------------------------------------------

/// `qgate certs --out DIR --client alice`, checked.
fn certs(dir: &TempDir) -> PathBuf {
    let out = dir.0.join("certs");
    let output = run(&[
        "certs",
        "--out",
        out.to_str().expect("a UTF-8 path"),
        "--client",
        "alice",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("[tls]\nmode = \"required\""), "{printed}");
    for name in [
        "ca.key",
        "intermediate.key",
        "server.key",
        "client-alice.key",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(out.join(name))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    out
}

/// A blocking TLS client that trusts `ca` only, presenting `identity` (certificate, key) if
/// given, through to its q handshake; `None` when the server refuses it.
fn tls_client(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    credentials: &[u8],
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("a CA file") {
        roots.add(cert.expect("a certificate")).expect("a CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("a certificate file")
                    .collect::<Result<_, _>>()
                    .expect("certificates"),
                PrivateKeyDer::from_pem_file(key).expect("a key"),
            )
            .expect("a client identity"),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").expect("a name");
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("a TLS client");
    let tcp = TcpStream::connect(addr).expect("the server accepts");
    tcp.set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    stream.write_all(credentials).ok()?;
    let mut answer = [0_u8; 1];
    match stream.read(&mut answer) {
        Ok(1) => Some(stream),
        _ => None,
    }
}

/// A sync query over `stream`, and its answer in q syntax.
fn query<S: std::io::Read + std::io::Write>(stream: &mut S, text: &str) -> String {
    let message =
        qgate_ipc::encode_message(qgate_ipc::MessageType::Sync, &qgate_ipc::K::string(text))
            .expect("a message");
    stream.write_all(&message).expect("sent");
    let mut frame = vec![0_u8; 8];
    stream.read_exact(&mut frame).expect("a response header");
    let len = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) as usize;
    frame.resize(len, 0);
    stream.read_exact(&mut frame[8..]).expect("a response body");
    let message = qgate_ipc::Message::from_frame(frame, &qgate_ipc::Limits::default())
        .expect("a valid response");
    qgate_ipc::decode(message.body(), message.header.endian)
        .expect("a q value")
        .to_string()
}

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The file of the component `name` of `plugins/` (the workspace builds every plugin and
/// fixture), built once per test run.
fn component_path(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root().join("plugins/Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building plugins/ failed");
    });
    root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// The README's "TLS in five minutes", end to end: `qgate certs`, a config with mutual TLS and
/// the user from the certificate, and a plugin that sees the certificate's identity.
#[test]
fn a_plugin_sees_the_client_certificate_over_mutual_tls() {
    let dir = TempDir::new("mtls");
    let certs = certs(&dir);
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[tls]\nmode = \"required\"\ncert_file = \"certs/server.pem\"\n\
             key_file = \"certs/server.key\"\nclient_auth = \"required\"\n\
             ca_file = \"certs/ca.pem\"\nuser_from = \"cn\"\n\
             [[plugins]]\nname = \"whoami\"\npath = {:?}\n",
            component_path("whoami")
        ),
    );
    // A second run on the same directory keeps the CA and issues one more client.
    let output = run(&[
        "certs",
        "--out",
        certs.to_str().expect("a UTF-8 path"),
        "--client",
        "bob",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("kept"), "{}", stdout(&output));
    let mut server = Server::with_config(&config);
    let ca = certs.join("ca.pem");
    let bob = (certs.join("client-bob.pem"), certs.join("client-bob.key"));
    let mut stream = tls_client(server.addr, &ca, Some((&bob.0, &bob.1)), b"x:y\x03\x00")
        .expect("a client issued by the second run is served");
    assert!(
        query(&mut stream, "whoami").contains("(\"bob\";"),
        "bob's session"
    );
    let identity = (
        certs.join("client-alice.pem"),
        certs.join("client-alice.key"),
    );
    let mut stream = tls_client(
        server.addr,
        &ca,
        Some((&identity.0, &identity.1)),
        b"mallory:pw\x03\x00",
    )
    .expect("a client with a certificate is served");
    let answer = query(&mut stream, "whoami");
    assert!(
        answer.contains("`user`protocol`cipher`sni`cn`sans`fingerprint`notBefore`notAfter!"),
        "{answer}"
    );
    // The user is the certificate's CN, not the handshake's.
    assert!(answer.starts_with("`user`protocol`cipher`sni`cn`sans`fingerprint`notBefore`notAfter!(\"alice\";\"TLSv1.3\";"), "{answer}");
    assert!(
        answer.contains("\"localhost\";\"alice\";\"alice\";\""),
        "{answer}"
    );

    // Without a certificate, and in plain text, nobody is served.
    assert!(tls_client(server.addr, &ca, None, b"alice:pw\x03\x00").is_none());
    assert_eq!(handshake(server.addr, b"alice:pw\x03\x00"), None);

    let status = server.terminate();
    let stderr = server.stderr();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("this port requires TLS"), "{stderr}");
}

/// kdb+'s environment variables name the files when the config does not, and `-E 1` serves plain
/// and TLS clients on one port.
#[test]
fn serve_takes_the_certificate_from_kdb_environment_variables() {
    let dir = TempDir::new("env");
    let certs = certs(&dir);
    let mut server = Server::start_with_env(
        &["-p", "127.0.0.1:0", "-E", "1"],
        &[
            ("SSL_CERT_FILE", &certs.join("server.pem")),
            ("KX_SSL_KEY_FILE", &certs.join("server.key")),
        ],
    );
    let ca = certs.join("ca.pem");
    assert!(tls_client(server.addr, &ca, None, b"bob:pw\x03\x00").is_some());
    assert_eq!(handshake(server.addr, b"bob:pw\x03\x00"), Some(3));
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

/// A key file that others may read stops the server before it listens, with the fix.
#[test]
fn serve_refuses_a_key_that_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("key-mode");
    let certs = certs(&dir);
    let key = certs.join("server.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
    let output = qgate()
        .args(["serve", "-p", "127.0.0.1:0", "-E", "2"])
        .env("SSL_CERT_FILE", certs.join("server.pem"))
        .env("SSL_KEY_FILE", &key)
        .output()
        .expect("qgate runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "");
    let stderr = stderr(&output);
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
}

/// `qgate plugins | reload | rollback | keygen | sign`, SIGHUP, the file watch and `[lock]`.
#[path = "cli/swap.rs"]
mod swap;

#[path = "cli/gateway.rs"]
mod gateway;

#[path = "cli/http.rs"]
mod http;

/// WebSocket on the q port: demo-api, the fail-closed rule, the gateway to the upstream's.
#[path = "cli/ws.rs"]
mod ws;

/// `[tls.acme]` against Pebble: both challenges, renewal, a failed renewal, loose permissions,
/// and a real browser.
#[path = "cli/acme.rs"]
mod acme;

/// `[metrics]`: `/metrics` scraped around a client's logins and queries.
#[path = "cli/metrics.rs"]
mod metrics;

/// A password file that is not a small regular file, and a shutdown while a plugin is stuck.
#[path = "cli/hardening.rs"]
mod hardening;

/// `qgate test`: policy tests without a network.
#[path = "cli/policy_test.rs"]
mod policy_test;
