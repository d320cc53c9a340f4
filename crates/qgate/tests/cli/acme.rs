//! `[tls.acme]` through the real binary, against Pebble, Let's Encrypt's test CA (Debian's
//! `pebble` package), and a real browser (Debian's `chromium`, with `certutil` from
//! `libnss3-tools`); `cargo xtask test` installs all three when they are missing, and the tests
//! fail rather than skip without them.
//!
//! Each test starts its own Pebble and its own DNS (`pebble-challtestsrv`, answering every A
//! query with 127.0.0.1), so that `q.test` is this machine and Pebble validates against the
//! `qgate serve` under test: TLS-ALPN-01 on its q port (Pebble's `tlsPort`), HTTP-01 on its
//! `http_listen` (Pebble's `httpPort`). Certificates are checked as a client sees them: a TLS
//! handshake that verifies against Pebble's root, fetched from Pebble's management API.

use std::{
    ffi::OsStr,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};

use super::{Server, TempDir, component_path, query};

/// The longest any wait of these tests takes: Pebble starting, an issuance, a renewal.
const WAIT: Duration = Duration::from_secs(60);

/// The longest one external command (openssl, curl, certutil, chromium) may run.
const COMMAND_TIMEOUT: &str = "30";

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
const CHROMIUM: &str = "/usr/bin/chromium";
const CERTUTIL: &str = "/usr/bin/certutil";

/// The certificate's one domain; Pebble's DNS resolves it to 127.0.0.1.
const DOMAIN: &str = "q.test";

fn pause(duration: Duration) {
    #[expect(
        clippy::disallowed_methods,
        reason = "a synchronous test polling processes: no async runtime to block"
    )]
    thread::sleep(duration);
}

fn require(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install Debian's `{package}` package (`cargo xtask test` installs \
         it when run as root)"
    );
}

/// A child process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free TCP port")
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free UDP port")
        .port()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A finished command: its status, stdout and stderr.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `program ARGS` with `env`, bounded by coreutils' `timeout`, its output in files under
/// `dir` (a browser's helper processes may keep pipes open after it exits; files they do not).
fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Ran {
    let name = Path::new(program)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or("command");
    let (out, err) = (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    );
    let status = Command::new("timeout")
        .args(["-k", "5", COMMAND_TIMEOUT, program])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("a file for stdout"))
        .stderr(fs::File::create(&err).expect("a file for stderr"))
        .status()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    Ran {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// A running Pebble with its DNS, in a directory of its own.
struct Pebble {
    // Killed before `dir` is removed: fields drop in declaration order.
    _pebble: Killed,
    _dns: Killed,
    dns_management: SocketAddr,
    /// The ACME directory URL.
    directory: String,
    /// The CA of Pebble's own HTTPS certificate, for `directory_ca_file`.
    https_ca: PathBuf,
    /// Pebble's root for the certificates it issues.
    root: PathBuf,
    dir: TempDir,
}

fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Killed {
    let log = fs::File::create(log).expect("a log file");
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
    Killed(child)
}

fn wait_listening(addr: SocketAddr, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            start.elapsed() < WAIT,
            "nothing listens on {addr}; log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        pause(Duration::from_millis(50));
    }
}

impl Pebble {
    /// Starts Pebble, validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`, issuing
    /// certificates valid for `validity`, and fetches its root.
    fn start(name: &str, http_port: u16, tls_port: u16, validity: Duration) -> Self {
        require(PEBBLE, "pebble");
        require(CHALLTESTSRV, "pebble");
        let dir = TempDir::new(&format!("{name}-pebble"));

        // Pebble's HTTPS certificate, from a CA of our own.
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Names of their own: a leaf whose subject is its issuer's reads as self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "qgate test: Pebble's HTTPS CA");
        let ca = ca_params.self_signed(&ca_key).expect("the CA");
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params
            .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
            .expect("the certificate");
        let https_ca = dir.write("https-ca.pem", &ca.pem());
        let https_cert = dir.write("https-cert.pem", &cert.pem());
        let https_key = dir.write("https-key.pem", &key.serialize_pem());

        let dns_port = free_udp_port();
        let dns_management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns_log = dir.0.join("challtestsrv.log");
        let dns = spawn(
            CHALLTESTSRV,
            &[
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &dns_management.to_string(),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ],
            &[],
            &dns_log,
        );

        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": https_cert,
                "privateKey": https_key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        let config = dir.write("pebble.json", &config.to_string());
        let log = dir.0.join("pebble.log");
        let pebble = spawn(
            PEBBLE,
            &[
                "-config",
                path(&config),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ],
            &[
                // Validate at once, accept every good nonce, validate every order afresh.
                ("PEBBLE_VA_NOSLEEP", "1"),
                ("PEBBLE_WFE_NONCEREJECT", "0"),
                ("PEBBLE_AUTHZREUSE", "0"),
            ],
            &log,
        );
        wait_listening(dns_management, &dns_log);
        wait_listening(listen, &log);
        wait_listening(management, &log);

        let root = dir.0.join("root.pem");
        let url = format!("https://localhost:{}/roots/0", management.port());
        let fetched = run_in(
            &dir.0,
            "curl",
            &[
                "-sSf",
                "--resolve",
                &format!("localhost:{}:127.0.0.1", management.port()),
                "--cacert",
                path(&https_ca),
                "-o",
                path(&root),
                &url,
            ],
            &[],
        );
        assert!(fetched.status.success(), "{url}: {}", fetched.stderr);
        Self {
            _pebble: pebble,
            _dns: dns,
            dns_management,
            directory: format!("https://{listen}/dir"),
            https_ca,
            root,
            dir,
        }
    }

    /// Makes the DNS answer `ip` for every name from now on.
    fn resolve_to(&self, ip: &str) {
        let ran = run_in(
            &self.dir.0,
            "curl",
            &[
                "-sSf",
                "-d",
                &format!("{{\"ip\":\"{ip}\"}}"),
                &format!("http://{}/set-default-ipv4", self.dns_management),
            ],
            &[],
        );
        assert!(ran.status.success(), "{}", ran.stderr);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.0.join("pebble.log")).unwrap_or_default()
    }
}

/// Writes a config for `q.test` from `pebble` into `dir`: `[tls] mode = "optional"`,
/// `[tls.acme]` with `acme` added, the password file `alice:secret`, and `demo-api`.
fn config(dir: &TempDir, pebble: &Pebble, acme: &str) -> PathBuf {
    let passwords = dir.write("passwords.txt", "alice:secret\n");
    dir.write(
        "qgate.toml",
        &format!(
            "[auth]\npassword_file = {:?}\n[tls]\nmode = \"optional\"\n[tls.acme]\ndomains = [\"{DOMAIN}\"]\n\
             email = \"ops@qgate.example\"\ndirectory = {:?}\ndirectory_ca_file = {:?}\n\
             storage = {:?}\n{acme}\n[[plugins]]\nname = \"demo-api\"\npath = {:?}\n",
            path(&passwords),
            pebble.directory,
            path(&pebble.https_ca),
            path(&dir.0.join("acme")),
            path(&component_path("demo-api")),
        ),
    )
}

fn serve(port: u16, config: &Path) -> Server {
    Server::start(&["-p", &format!("127.0.0.1:{port}"), "--config", path(config)])
}

/// A TLS connection to `127.0.0.1:port` for `q.test` that verifies against `root` alone, with
/// its handshake done; no session resumption, so every connection sees the served certificate.
fn tls(port: u16, root: &Path) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).expect("Pebble's root") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(DOMAIN).expect("a name");
    let connection = ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|error| error.to_string())?;
    }
    Ok(stream)
}

/// The leaf certificate a new, verified handshake gets, or why there is none.
fn served_leaf(port: u16, root: &Path) -> Result<Vec<u8>, String> {
    let stream = tls(port, root)?;
    let chain = stream.conn.peer_certificates().ok_or("no certificate")?;
    Ok(chain[0].to_vec())
}

/// Waits until the q port serves a certificate that verifies against Pebble's root and is not
/// `old`, and gives it.
fn wait_for_leaf(port: u16, pebble: &Pebble, old: Option<&[u8]>) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let served = served_leaf(port, &pebble.root);
        match &served {
            Ok(leaf) if Some(leaf.as_slice()) != old => return leaf.clone(),
            _ => {}
        }
        assert!(
            start.elapsed() < WAIT,
            "no new certificate from Pebble in {WAIT:?} (last handshake: {:?}); Pebble's log:\n{}",
            served.map(|_| "the old certificate"),
            pebble.log()
        );
        pause(Duration::from_millis(250));
    }
}

/// `openssl s_client` verifies the full chain the q port serves against Pebble's root.
fn openssl_verifies(port: u16, pebble: &Pebble) {
    let ran = run_in(
        &pebble.dir.0,
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            DOMAIN,
            "-verify_hostname",
            DOMAIN,
            "-CAfile",
            path(&pebble.root),
            "-verify_return_error",
            "-showcerts",
        ],
        &[],
    );
    let out = format!("{}{}", ran.stdout, ran.stderr);
    assert!(ran.status.success(), "openssl s_client failed:\n{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // The full chain: the leaf and Pebble's intermediate, not the leaf alone.
    assert!(out.contains(" 1 s:"), "{out}");
}

/// `qgate acme status`'s output.
fn acme_status(config: &Path) -> String {
    let dir = config.parent().expect("the config's directory");
    let ran = run_in(
        dir,
        env!("CARGO_BIN_EXE_qgate"),
        &["acme", "status", "--config", path(config)],
        &[],
    );
    assert!(ran.status.success(), "{}{}", ran.stdout, ran.stderr);
    ran.stdout
}

/// curl's body and status for `url`, with `args` before it.
fn curl(dir: &Path, args: &[&str], url: &str) -> (String, String) {
    let ran = run_in(
        dir,
        "curl",
        &[&["-sS", "-w", "\n%{http_code}"], args, &[url]].concat(),
        &[],
    );
    assert!(ran.status.success(), "curl {url}: {}", ran.stderr);
    let (body, status) = ran.stdout.rsplit_once('\n').expect("the status line");
    (body.to_owned(), status.to_owned())
}

/// The q port answers HTTPS for `q.test` with a certificate curl verifies against Pebble's root.
fn https_answers(dir: &Path, port: u16, pebble: &Pebble) {
    let (body, status) = curl(
        dir,
        &[
            "--resolve",
            &format!("{DOMAIN}:{port}:127.0.0.1"),
            "--cacert",
            path(&pebble.root),
            "-u",
            "alice:secret",
        ],
        &format!("https://{DOMAIN}:{port}/?1%202%203"),
    );
    assert_eq!((status.as_str(), body.as_str()), ("200", "1 2 3\n"));
}

#[test]
fn tls_alpn_01_on_the_q_port_issues_a_full_chain() {
    let dir = TempDir::new("acme-alpn");
    let port = free_port();
    let pebble = Pebble::start("acme-alpn", free_port(), port, Duration::from_secs(3600));
    let config = config(&dir, &pebble, "");
    let _server = serve(port, &config);

    wait_for_leaf(port, &pebble, None);
    openssl_verifies(port, &pebble);
    https_answers(&dir.0, port, &pebble);

    let status = acme_status(&config);
    assert!(
        status.contains(&format!("domains:      {DOMAIN}\n")),
        "{status}"
    );
    assert!(
        status.contains("issuer:       CN=Pebble Intermediate CA"),
        "{status}"
    );
    assert!(
        !status.contains("placeholder") && !status.contains("last issued:  never"),
        "{status}"
    );
    assert!(status.contains("expires:      20"), "{status}");
    assert!(status.contains("last error:   none\n"), "{status}");
}

#[test]
fn http_01_on_http_listen_issues_and_redirects_the_rest() {
    let dir = TempDir::new("acme-http01");
    let (port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(
        "acme-http01",
        http_port,
        free_port(),
        Duration::from_secs(3600),
    );
    let config = config(
        &dir,
        &pebble,
        &format!("challenge = \"http-01\"\nhttp_listen = \"127.0.0.1:{http_port}\""),
    );
    let _server = serve(port, &config);

    wait_for_leaf(port, &pebble, None);
    openssl_verifies(port, &pebble);
    https_answers(&dir.0, port, &pebble);

    // Anything but a challenge, on the plain listener, is sent to https.
    let (location, status) = curl(
        &dir.0,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}\n%{http_code}",
            "-H",
            "Host: q.test",
        ],
        &format!("http://127.0.0.1:{http_port}/other?x=1"),
    );
    assert_eq!(
        (status.as_str(), location.as_str()),
        ("301", "https://q.test/other?x=1")
    );
}

/// A TLS q client, logged in as alice.
fn q_client(port: u16, root: &Path) -> StreamOwned<ClientConnection, TcpStream> {
    let mut stream = tls(port, root).expect("a verified TLS connection");
    stream.write_all(b"alice:secret\x03\x00").expect("sent");
    let mut capability = [0_u8; 1];
    stream.read_exact(&mut capability).expect("logged in");
    stream
}

/// Certificates valid 30 s, renewed 20 s ahead: the server swaps the second one in while a q
/// client stays connected on the first.
#[test]
fn renewal_swaps_the_certificate_under_an_open_connection() {
    let dir = TempDir::new("acme-renew");
    let port = free_port();
    let pebble = Pebble::start("acme-renew", free_port(), port, Duration::from_secs(30));
    let config = config(&dir, &pebble, "renew_before = \"20s\"");
    let _server = serve(port, &config);

    let first = wait_for_leaf(port, &pebble, None);
    let mut client = q_client(port, &pebble.root);
    assert_eq!(query(&mut client, "1 2 3"), "1 2 3");

    let second = wait_for_leaf(port, &pebble, Some(&first));
    openssl_verifies(port, &pebble);
    assert_ne!(first, second);

    // The connection opened on the first certificate is still served.
    let seen = client.conn.peer_certificates().expect("a certificate")[0].to_vec();
    assert_eq!(seen, first, "the old connection's certificate");
    assert_eq!(query(&mut client, "`a`b!1 2"), "`a`b!1 2");
    let mut fresh = q_client(port, &pebble.root);
    assert_eq!(query(&mut fresh, "1 2 3"), "1 2 3");
}

/// After a first issuance, the CA's validations reach nothing: the renewal fails, the stored
/// certificate stays byte for byte, the failure is in `qgate acme status`, and qgate serves on.
#[test]
fn a_failed_renewal_keeps_the_certificate_and_says_why() {
    let dir = TempDir::new("acme-fail");
    let port = free_port();
    let pebble = Pebble::start("acme-fail", free_port(), port, Duration::from_secs(30));
    let config = config(&dir, &pebble, "renew_before = \"20s\"");
    let _server = serve(port, &config);

    let leaf = wait_for_leaf(port, &pebble, None);
    let cert_file = dir.0.join("acme/cert.pem");
    let cert = fs::read(&cert_file).expect("cert.pem");
    assert!(acme_status(&config).contains("last error:   none\n"));
    // qgate listens on 127.0.0.1 only: the CA's validation of 127.0.0.2 is refused.
    pebble.resolve_to("127.0.0.2");

    let start = Instant::now();
    let status = loop {
        let status = acme_status(&config);
        if !status.contains("last error:   none\n") {
            break status;
        }
        assert!(
            start.elapsed() < WAIT,
            "no failed renewal in {WAIT:?}:\n{status}\nPebble's log:\n{}",
            pebble.log()
        );
        pause(Duration::from_millis(250));
    };
    let error = status
        .lines()
        .find_map(|line| line.strip_prefix("last error:   "))
        .expect("a last error line");
    assert!(
        error.contains("did not validate") && error.contains(DOMAIN),
        "{status}"
    );
    assert_eq!(
        fs::read(&cert_file).expect("cert.pem"),
        cert,
        "byte for byte"
    );
    assert_eq!(served_leaf(port, &pebble.root), Ok(leaf), "still served");
    https_answers(&dir.0, port, &pebble);
}

/// A storage directory, or a key in it, that group or others may read stops `qgate serve`
/// before it listens, naming the file and the `chmod` that fixes it.
#[test]
fn loose_permissions_in_storage_are_refused_at_start() {
    let dir = TempDir::new("acme-modes");
    let storage = dir.0.join("acme");
    fs::create_dir(&storage).expect("the storage directory");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[tls]\nmode = \"optional\"\n[tls.acme]\ndomains = [\"{DOMAIN}\"]\n\
             directory = \"https://127.0.0.1:9/dir\"\nstorage = {:?}\n",
            path(&storage)
        ),
    );
    let refused = |file: &Path, mode: u32, fix: &str| {
        fs::set_permissions(file, fs::Permissions::from_mode(mode)).expect("chmod");
        let ran = run_in(
            &dir.0,
            env!("CARGO_BIN_EXE_qgate"),
            &["serve", "-p", "127.0.0.1:0", "--config", path(&config)],
            &[],
        );
        assert_eq!(ran.status.code(), Some(1), "{}", ran.stderr);
        assert_eq!(ran.stdout, "", "no listening line");
        assert!(
            ran.stderr.contains(&format!("mode {mode:04o}")),
            "{}",
            ran.stderr
        );
        assert!(
            ran.stderr
                .contains(&format!("`chmod {fix} {}`", file.display())),
            "{}",
            ran.stderr
        );
    };
    refused(&storage, 0o755, "700");
    fs::set_permissions(&storage, fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = storage.join("key.pem");
    fs::write(
        &key,
        rcgen::KeyPair::generate().expect("a key").serialize_pem(),
    )
    .expect("key.pem");
    refused(&key, 0o644, "600");
}

/// Headless Chromium loads an HTTPS page from qgate with the certificate Pebble issued, trusting
/// Pebble's root through its NSS database and nothing else: no certificate-error bypass.
#[test]
fn chromium_loads_the_page_without_a_certificate_error() {
    require(CHROMIUM, "chromium");
    require(CERTUTIL, "libnss3-tools");
    let dir = TempDir::new("acme-browser");
    let port = free_port();
    let pebble = Pebble::start("acme-browser", free_port(), port, Duration::from_secs(3600));
    let config = config(&dir, &pebble, "");
    let _server = serve(port, &config);
    wait_for_leaf(port, &pebble, None);

    // A fresh HOME whose NSS database trusts Pebble's root for servers.
    let home = dir.0.join("home");
    let nssdb = home.join(".pki/nssdb");
    fs::create_dir_all(&nssdb).expect("the NSS directory");
    let db = format!("sql:{}", path(&nssdb));
    for args in [
        &["-d", &db, "-N", "--empty-password"][..],
        &[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "pebble",
            "-i",
            path(&pebble.root),
        ],
    ] {
        let ran = run_in(&dir.0, CERTUTIL, args, &[]);
        assert!(ran.status.success(), "certutil {args:?}: {}", ran.stderr);
    }

    let screenshot = dir.0.join("page.png");
    let url = format!("https://alice:secret@{DOMAIN}:{port}/?1%202%203");
    // A run in a profile of its own under `home`, writing `output`.
    let chromium = |home: &Path, profile: &str, output: &str| {
        let ran = run_in(
            &dir.0,
            CHROMIUM,
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
                &format!("--user-data-dir={}", path(&dir.0.join(profile))),
                "--window-size=800,600",
                output,
                &url,
            ],
            &[("HOME", home.as_os_str())],
        );
        assert!(ran.status.success(), "chromium {output}: {}", ran.stderr);
        ran.stdout
    };
    // The text/plain answer, as Chromium shows it; an interstitial would not have it.
    let dom = chromium(&home, "trusting", "--dump-dom");
    assert!(
        dom.contains(">1 2 3\n</pre>") && !dom.contains("ERR_CERT"),
        "the page, not an interstitial:\n{dom}"
    );
    // Without Pebble's root in its NSS database, the same load is a certificate error: the
    // page above was trusted through that database, not through a bypass.
    let elsewhere = dir.0.join("home-without-pebble");
    fs::create_dir_all(&elsewhere).expect("a HOME");
    let dom = chromium(&elsewhere, "untrusting", "--dump-dom");
    assert!(
        dom.contains("ERR_CERT_AUTHORITY_INVALID") && !dom.contains("1 2 3"),
        "an interstitial:\n{dom}"
    );
    chromium(
        &home,
        "trusting",
        &format!("--screenshot={}", path(&screenshot)),
    );
    let size = fs::metadata(&screenshot).expect("a screenshot").len();
    assert!(size > 1024, "a screenshot of {size} bytes");
}
