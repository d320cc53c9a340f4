//! The ACME crate's API tests, against Pebble, Let's Encrypt's test CA (Debian's `pebble`
//! package, which `cargo xtask test` installs when it is missing).
//!
//! Each test starts its own Pebble and its own DNS (`pebble-challtestsrv`, which answers every
//! A query with 127.0.0.1 and, here, AAAA queries with nothing), so that the test domains resolve
//! to this machine, where the test's own responders answer the CA's validation from
//! [`Challenges`]: a TLS listener that picks the challenge certificate when the ClientHello
//! offers ALPN `acme-tls/1` (and the stored certificate otherwise, which `openssl s_client` then
//! verifies against Pebble's root), and an HTTP listener for HTTP-01.
//!
//! A missing `pebble` fails the tests; it never skips them.

use std::{
    fs,
    io::Read as _,
    net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use qgate_acme::{
    Acme, AcmeOptions, ChallengeKind, Challenges, challenge_config, http01_token, is_acme_tls_alpn,
};
use rustls::{ServerConfig, pki_types::CertificateDer, server::Acceptor};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

/// The longest any wait in these tests takes: Pebble starting, an issuance, a renewal.
const WAIT: Duration = Duration::from_secs(60);

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// A child process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running Pebble with its DNS, in a temporary directory.
struct Pebble {
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    /// The CA that signs Pebble's own HTTPS certificate (for `directory_ca_file`).
    https_ca: PathBuf,
    management: SocketAddr,
    // Dropped (killed) before `dir` is removed: fields drop in order.
    _pebble: Killed,
    _dns: Killed,
}

fn free_tcp_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
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

/// Waits until something listens on `addr`, or panics with `log`'s content.
fn wait_listening(addr: SocketAddr, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            start.elapsed() < WAIT,
            "nothing listens on {addr} after {WAIT:?}; log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        // A test thread, not a runtime worker: the runtime is not started yet.
        #[expect(
            clippy::disallowed_methods,
            reason = "called before the test's runtime starts its work"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pebble {
    /// Starts Pebble, validating challenges on `http_port` (HTTP-01) and `tls_port`
    /// (TLS-ALPN-01), issuing certificates valid for `validity`.
    fn start(http_port: u16, tls_port: u16, validity: Duration) -> Self {
        for program in [PEBBLE, CHALLTESTSRV] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install Debian's `pebble` package (`cargo xtask test` \
                 installs it when run as root)"
            );
        }
        let dir = tempfile::tempdir().expect("a temporary directory");

        // Pebble's HTTPS certificate, from a CA of our own.
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
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
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).expect("the certificate");
        let https_ca = dir.path().join("https-ca.pem");
        fs::write(&https_ca, ca.pem()).expect("write");
        fs::write(dir.path().join("https-cert.pem"), cert.pem()).expect("write");
        fs::write(dir.path().join("https-key.pem"), key.serialize_pem()).expect("write");

        // DNS: every A query is 127.0.0.1; the other listeners are off.
        let dns_port = free_udp_port();
        let dns_management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let dns_log = dir.path().join("challtestsrv.log");
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

        let listen = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.path().join("https-cert.pem"),
                "privateKey": dir.path().join("https-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        let config_path = dir.path().join("pebble.json");
        fs::write(&config_path, config.to_string()).expect("write");
        let pebble_log = dir.path().join("pebble.log");
        let pebble = spawn(
            PEBBLE,
            &[
                "-config",
                config_path.to_str().expect("a UTF-8 path"),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ],
            &[
                // Validate at once rather than after a random sleep of up to 15 s.
                ("PEBBLE_VA_NOSLEEP", "1"),
                // Pebble rejects 5% of good nonces by default, to exercise clients' retries.
                ("PEBBLE_WFE_NONCEREJECT", "0"),
                // Every order gets fresh authorizations, so that each issuance validates.
                ("PEBBLE_AUTHZREUSE", "0"),
            ],
            &pebble_log,
        );
        wait_listening(dns_management, &dns_log);
        wait_listening(listen, &pebble_log);
        wait_listening(management, &pebble_log);
        Self {
            directory: format!("https://{listen}/dir"),
            https_ca,
            management,
            dir,
            _pebble: pebble,
            _dns: dns,
        }
    }

    /// Pebble's root for the certificates it issues, PEM, from its management API.
    async fn root(&self) -> String {
        let mut roots = rustls::RootCertStore::empty();
        let pem = fs::read(&self.https_ca).expect("read");
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("PEM")).expect("a root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let stream = TcpStream::connect(self.management).await.expect("connect");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().expect("a name"), stream)
            .await
            .expect("TLS to Pebble's management API");
        tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut response = Vec::new();
        // Pebble may close without close_notify; what was read is the whole response.
        let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await;
        let response = String::from_utf8(response).expect("text");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The test's side of the CA's validation: TLS-ALPN-01 and HTTP-01 responders on listeners of
/// their own, answering from [`Challenges`].
struct Responders {
    http: TcpListener,
    tls: TcpListener,
}

impl Responders {
    async fn bind() -> Self {
        Self {
            http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            tls: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn ports(&self) -> (u16, u16) {
        let port = |listener: &TcpListener| listener.local_addr().expect("addr").port();
        (port(&self.http), port(&self.tls))
    }

    /// Serves until the test ends. `wrong`, once set, makes HTTP-01 answer with the wrong text.
    /// A TLS handshake without `acme-tls/1` gets the certificate stored in `storage`.
    fn serve(self, challenges: Arc<Challenges>, storage: PathBuf, wrong: Arc<AtomicBool>) {
        let http_challenges = Arc::clone(&challenges);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = self.http.accept().await else {
                    continue;
                };
                let challenges = Arc::clone(&http_challenges);
                let wrong = Arc::clone(&wrong);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = http01_token(request.uri().path())
                            .and_then(|token| challenges.http01(token));
                        let response = match answer {
                            Some(_) if wrong.load(Ordering::SeqCst) => {
                                Response::new(Full::new(Bytes::from_static(b"wrong")))
                            }
                            Some(answer) => Response::new(Full::new(Bytes::from(answer))),
                            None => {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = StatusCode::NOT_FOUND;
                                response
                            }
                        };
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = self.tls.accept().await else {
                    continue;
                };
                let challenges = Arc::clone(&challenges);
                let storage = storage.clone();
                tokio::spawn(async move {
                    let Ok(start) = LazyConfigAcceptor::new(Acceptor::default(), stream).await
                    else {
                        return;
                    };
                    let hello = start.client_hello();
                    let config = if is_acme_tls_alpn(&hello) {
                        let Some(key) = hello
                            .server_name()
                            .and_then(|name| challenges.tls_alpn(name))
                        else {
                            return;
                        };
                        challenge_config(key)
                    } else {
                        stored_config(&storage)
                    };
                    if let Ok(mut tls) = start.into_stream(config).await {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
    }
}

/// A server config with the certificate and key stored in `storage`.
fn stored_config(storage: &Path) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(storage.join(qgate_acme::CERT_FILE))
            .expect("cert.pem")
            .collect::<Result<_, _>>()
            .expect("PEM");
    let key = PrivateKeyDer::from_pem_file(storage.join(qgate_acme::KEY_FILE)).expect("key.pem");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a certificate and its key");
    Arc::new(config)
}

/// A Pebble, running responders, and the options for `domains` with `challenge`.
struct Setup {
    pebble: Pebble,
    challenges: Arc<Challenges>,
    storage: PathBuf,
    wrong: Arc<AtomicBool>,
    tls_port: u16,
    options: AcmeOptions,
}

async fn setup(domain: &str, challenge: ChallengeKind, validity: Duration) -> Setup {
    let responders = Responders::bind().await;
    let (http_port, tls_port) = responders.ports();
    let pebble = Pebble::start(http_port, tls_port, validity);
    let storage = pebble.path("storage");
    let challenges = Arc::new(Challenges::default());
    let wrong = Arc::new(AtomicBool::new(false));
    responders.serve(Arc::clone(&challenges), storage.clone(), Arc::clone(&wrong));
    let mut options = AcmeOptions::new(vec![domain.to_owned()], storage.clone());
    options.directory = pebble.directory.clone();
    options.directory_ca_file = Some(pebble.https_ca.clone());
    options.email = Some("ops@qgate.example".to_owned());
    options.challenge = challenge;
    Setup {
        pebble,
        challenges,
        storage,
        wrong,
        tls_port,
        options,
    }
}

const FIVE_YEARS: Duration = Duration::from_secs(5 * 365 * 86_400);

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Runs `openssl` with `args`, giving its output, or panics with it when it fails.
fn openssl(args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < WAIT, "openssl {args:?} takes too long");
        #[expect(
            clippy::disallowed_methods,
            reason = "a blocking wait on a child, from a blocking thread"
        )]
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success(), "openssl {args:?} failed:\n{out}");
    out
}

/// `openssl s_client` connects to the responder, which serves the stored chain to a client
/// without `acme-tls/1`, and verifies it against Pebble's root for `domain`.
async fn s_client_verifies(setup: &Setup, domain: &str) {
    let root = setup.pebble.path("pebble-root.pem");
    fs::write(&root, setup.pebble.root().await).expect("write");
    let connect = format!("127.0.0.1:{}", setup.tls_port);
    let root = root.to_str().expect("UTF-8").to_owned();
    let domain = domain.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        openssl(&[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            &domain,
            "-verify_hostname",
            &domain,
            "-CAfile",
            &root,
            "-verify_return_error",
            "-showcerts",
        ])
    })
    .await
    .expect("openssl ran");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // The full chain: the leaf and Pebble's intermediate, not the leaf alone.
    assert!(out.contains(" 1 s:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_issues_a_chain_that_openssl_verifies() {
    let domain = "alpn.qgate.example";
    let setup = setup(domain, ChallengeKind::TlsAlpn01, FIVE_YEARS).await;
    let acme = Acme::open(setup.options.clone(), Arc::clone(&setup.challenges)).expect("open");
    assert!(
        !acme.prepare().expect("prepare"),
        "a placeholder is no certificate"
    );
    tokio::time::timeout(WAIT, acme.issue())
        .await
        .expect("in time")
        .expect("issued");
    assert!(
        acme.prepare().expect("prepare"),
        "the issued certificate is valid"
    );
    assert!(setup.challenges.is_empty(), "the answers are gone");
    assert_eq!(mode(&acme.key_file()), 0o600);
    assert_eq!(mode(&setup.storage.join("account.json")), 0o600);
    assert_eq!(mode(&setup.storage), 0o700);
    let [row] =
        &qgate_acme::status(&setup.storage, setup.options.renew_before).expect("status")[..]
    else {
        panic!("one certificate")
    };
    assert_eq!(row.domains, [domain]);
    assert!(!row.placeholder);
    assert!(row.issuer.contains("Pebble"), "{}", row.issuer);
    assert!(row.last_error.is_none());
    assert!(row.last_success.is_some());
    assert!(row.not_after > SystemTime::now() + Duration::from_secs(4 * 365 * 86_400));
    s_client_verifies(&setup, domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_issues_a_chain_that_verifies_against_pebbles_root() {
    let domain = "http.qgate.example";
    let setup = setup(domain, ChallengeKind::Http01, FIVE_YEARS).await;
    let acme = Acme::open(setup.options.clone(), Arc::clone(&setup.challenges)).expect("open");
    tokio::time::timeout(WAIT, acme.issue())
        .await
        .expect("in time")
        .expect("issued");
    assert!(setup.challenges.is_empty());
    let chain = fs::read_to_string(acme.cert_file()).expect("cert.pem");
    let (leaf, rest) = chain
        .split_once("-----END CERTIFICATE-----\n")
        .expect("a chain");
    fs::write(
        setup.pebble.path("leaf.pem"),
        format!("{leaf}-----END CERTIFICATE-----\n"),
    )
    .expect("write");
    fs::write(setup.pebble.path("intermediates.pem"), rest).expect("write");
    assert!(
        rest.contains("BEGIN CERTIFICATE"),
        "the intermediate is there"
    );
    let root = setup.pebble.path("root.pem");
    fs::write(&root, setup.pebble.root().await).expect("write");
    let out = openssl(&[
        "verify",
        "-CAfile",
        root.to_str().expect("UTF-8"),
        "-untrusted",
        setup
            .pebble
            .path("intermediates.pem")
            .to_str()
            .expect("UTF-8"),
        "-verify_hostname",
        domain,
        setup.pebble.path("leaf.pem").to_str().expect("UTF-8"),
    ]);
    assert!(out.contains(": OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_replaces_the_files_and_says_so() {
    let domain = "renew.qgate.example";
    // Certificates valid 30 s, renewed 15 s ahead (less up to 1.5 s of jitter): the first is
    // issued at once (none is stored), the second about 15 s later.
    let mut setup = setup(domain, ChallengeKind::TlsAlpn01, Duration::from_secs(30)).await;
    setup.options.renew_before = Duration::from_secs(15);
    let acme = Acme::open(setup.options.clone(), Arc::clone(&setup.challenges)).expect("open");
    assert!(!acme.prepare().expect("prepare"));
    let placeholder = fs::read(acme.cert_file()).expect("the placeholder");
    let renewals = Arc::new(AtomicUsize::new(0));
    let (cert_file, key_file) = (acme.cert_file(), acme.key_file());
    let counter = Arc::clone(&renewals);
    let task = tokio::spawn(acme.run(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let wait_for = |count: usize| {
        let renewals = Arc::clone(&renewals);
        async move {
            let start = Instant::now();
            while renewals.load(Ordering::SeqCst) < count {
                assert!(start.elapsed() < WAIT, "no renewal {count} in {WAIT:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(1).await;
    let first = (
        fs::read(&cert_file).expect("cert"),
        fs::read(&key_file).expect("key"),
    );
    assert_ne!(first.0, placeholder);
    s_client_verifies(&setup, domain).await;
    wait_for(2).await;
    let second = (
        fs::read(&cert_file).expect("cert"),
        fs::read(&key_file).expect("key"),
    );
    assert_ne!(first.0, second.0, "a new certificate");
    assert_ne!(first.1, second.1, "with a new key");
    s_client_verifies(&setup, domain).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_keeps_the_old_certificate_and_is_recorded() {
    let domain = "fail.qgate.example";
    let setup = setup(domain, ChallengeKind::Http01, FIVE_YEARS).await;
    let acme = Acme::open(setup.options.clone(), Arc::clone(&setup.challenges)).expect("open");
    tokio::time::timeout(WAIT, acme.issue())
        .await
        .expect("in time")
        .expect("issued");
    let cert = fs::read(acme.cert_file()).expect("cert");
    let key = fs::read(acme.key_file()).expect("key");

    setup.wrong.store(true, Ordering::SeqCst);
    let error = tokio::time::timeout(WAIT, acme.issue())
        .await
        .expect("in time")
        .expect_err("the CA got the wrong answer");
    let message = format!("{error:#}");
    assert!(message.contains("did not validate"), "{message}");
    assert!(message.contains(domain), "{message}");
    assert!(message.contains("port 80"), "the fix: {message}");
    assert!(setup.challenges.is_empty(), "the answers are gone");
    assert_eq!(
        fs::read(acme.cert_file()).expect("cert"),
        cert,
        "byte for byte"
    );
    assert_eq!(
        fs::read(acme.key_file()).expect("key"),
        key,
        "byte for byte"
    );
    assert!(acme.prepare().expect("prepare"), "still valid");

    let rows = qgate_acme::status(&setup.storage, setup.options.renew_before).expect("status");
    let error = rows[0].last_error.as_ref().expect("the error is recorded");
    assert_eq!(error.message, message);
    assert!(error.time <= SystemTime::now());
}

#[tokio::test]
async fn an_unreachable_directory_names_the_url_and_the_fix() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let port = free_tcp_port();
    let mut options = AcmeOptions::new(vec!["a.qgate.example".to_owned()], temp.path().join("s"));
    options.directory = format!("https://127.0.0.1:{port}/dir");
    let acme = Acme::open(options.clone(), Arc::default()).expect("open");
    let error = tokio::time::timeout(WAIT, acme.issue())
        .await
        .expect("in time")
        .expect_err("nothing listens");
    let message = format!("{error:#}");
    assert!(message.contains(&options.directory), "{message}");
    assert!(message.contains("directory_ca_file"), "{message}");
    let rows = qgate_acme::status(&options.storage, options.renew_before).expect("status");
    assert_eq!(rows, [], "no certificate: prepare was not called");
}

#[test]
fn loose_permissions_are_refused_with_the_fix() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let storage = temp.path().join("storage");
    let options = AcmeOptions::new(vec!["a.qgate.example".to_owned()], storage.clone());
    let open = || Acme::open(options.clone(), Arc::default()).map(|_| ());

    open().expect("created");
    assert_eq!(mode(&storage), 0o700);

    fs::set_permissions(&storage, fs::Permissions::from_mode(0o755)).expect("chmod");
    let error = open().expect_err("a readable directory").to_string();
    assert!(error.contains("mode 0755"), "{error}");
    assert!(
        error.contains(&format!("`chmod 700 {}`", storage.display())),
        "{error}"
    );
    fs::set_permissions(&storage, fs::Permissions::from_mode(0o700)).expect("chmod");

    for file in ["key.pem", "account.json"] {
        let path = storage.join(file);
        fs::write(&path, "secret").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = open().expect_err("a readable key").to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("mode 0644"), "{error}");
        assert!(
            error.contains(&format!("`chmod 600 {}`", path.display())),
            "{error}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    open().expect("fixed");
}

#[test]
fn prepare_writes_a_placeholder_on_an_empty_storage() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let storage = temp.path().join("storage");
    let domains = vec!["a.qgate.example".to_owned(), "b.qgate.example".to_owned()];
    let acme = Acme::open(
        AcmeOptions::new(domains.clone(), storage.clone()),
        Arc::default(),
    )
    .expect("open");
    assert!(!acme.prepare().expect("prepare"));
    assert_eq!(mode(&acme.key_file()), 0o600);
    let placeholder = fs::read(acme.cert_file()).expect("cert.pem");
    // The server can load it.
    stored_config(&storage);
    // Kept while it is loadable: a second start does not replace it.
    assert!(!acme.prepare().expect("prepare"));
    assert_eq!(fs::read(acme.cert_file()).expect("cert.pem"), placeholder);
    let [row] = &qgate_acme::status(&storage, Duration::from_secs(86_400)).expect("status")[..]
    else {
        panic!("one row")
    };
    assert!(row.placeholder);
    assert_eq!(row.domains, domains);
    // A key that does not match is replaced with a new placeholder.
    fs::write(
        acme.key_file(),
        rcgen::KeyPair::generate().expect("a key").serialize_pem(),
    )
    .expect("write");
    assert!(!acme.prepare().expect("prepare"));
    assert_ne!(fs::read(acme.cert_file()).expect("cert.pem"), placeholder);
    stored_config(&storage);
}
