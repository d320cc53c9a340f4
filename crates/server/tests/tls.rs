//! TLS on the q port: [`qgate_server::run`] on `127.0.0.1:0` with certificates made here with
//! rcgen (a root, an intermediate, server and client leaves, an expired client, a foreign CA),
//! driven by a tokio-rustls client that trusts the root only.
//!
//! Covered: both modes, the first-byte sniffing (TLS, plain q, HTTP), the served chain, client
//! authentication accepted and refused, the identity in the session and as the user, reloading
//! under an open connection (in place, by rename, by symlink swap, and a broken pair), the key
//! file's permissions, and TLS 1.1 refused.

// The helpers below are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use qgate_hooks::{
    AuthVerdict, Credentials, Hooks, HttpRequest, HttpResponse, HttpVerdict, Request, Session,
    Verdict, WsMessage, WsVerdict,
};
use qgate_ipc::{K, Limits, Message, MessageType, encode_message};
use qgate_server::{ClientAuth, PasswordFile, ServerOptions, TlsMode, TlsOptions, UserFrom};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// The bound on anything that should happen "at once".
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Certificates.
// ---------------------------------------------------------------------------------------------

/// A certificate authority: its parameters and key sign the certificates below it.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn root(name: &str) -> Self {
        let params = ca_params(name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    fn intermediate(&self, name: &str) -> Self {
        let mut params = ca_params(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().unwrap();
        let pem = params.signed_by(&key, &self.issuer()).unwrap().pem();
        Self { params, key, pem }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// A leaf for `sans`, with `cn` as its subject CN; `(certificate PEM, key PEM)`.
    fn leaf(
        &self,
        cn: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        change: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|&s| s.to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        change(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A test's certificates, written to a directory of its own.
struct Pki {
    dir: PathBuf,
    root: Ca,
    intermediate: Ca,
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qgate-tls-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let root = Ca::root("qgate test root");
        let intermediate = root.intermediate("qgate test intermediate");
        fs::write(dir.join("root.pem"), &root.pem).unwrap();
        let pki = Self {
            dir,
            root,
            intermediate,
        };
        pki.write_server("server.pem", "server.key", "server one");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A server leaf for localhost and 127.0.0.1, signed by the intermediate, written with the
    /// intermediate after it; returns the leaf's DER.
    fn write_server(&self, cert: &str, key: &str, cn: &str) -> Vec<u8> {
        let (leaf, leaf_key) = self.intermediate.leaf(
            cn,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            |_| {},
        );
        write_key(&self.path(key), &leaf_key);
        fs::write(self.path(cert), format!("{leaf}{}", self.intermediate.pem)).unwrap();
        CertificateDer::from_pem_slice(leaf.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// A client leaf signed by the root; `(chain, key)`.
    fn client(&self, cn: &str) -> Identity {
        let (cert, key) = self.root.leaf(
            cn,
            &[&format!("{cn}.clients.example")],
            ExtendedKeyUsagePurpose::ClientAuth,
            |_| {},
        );
        Identity::from_pem(&cert, &key)
    }

    fn options(&self, mode: TlsMode) -> TlsOptions {
        let mut tls = TlsOptions::new(mode, self.path("server.pem"), self.path("server.key"));
        tls.reload_interval = Duration::from_millis(50);
        tls
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_key(path: &Path, pem: &str) {
    fs::write(path, pem).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A client certificate chain and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn from_pem(cert: &str, key: &str) -> Self {
        Self {
            chain: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server and its hooks.
// ---------------------------------------------------------------------------------------------

/// Answers every sync request with what the session knows: `user|protocol|cn|sans|fingerprint`.
#[derive(Debug, Default)]
struct Whoami;

impl Hooks for Whoami {
    async fn on_auth(&self, session: &Session, credentials: &Credentials) -> AuthVerdict {
        // The session's user is the certificate's identity under `user_from`; the credentials
        // are the handshake's, as sent.
        if &*session.user == b"deny" || credentials.user == b"deny" {
            AuthVerdict::Deny
        } else {
            AuthVerdict::Pass
        }
    }

    async fn on_sync(&self, session: &Session, _request: &Request) -> Verdict {
        let tls = session.tls.as_deref();
        let cert = tls.and_then(|tls| tls.client_cert.as_ref());
        let text = format!(
            "{}|{}|{}|{}|{}",
            session.user_lossy(),
            tls.map_or("plain", |tls| &tls.protocol),
            cert.and_then(|c| c.subject_cn.as_deref()).unwrap_or("-"),
            cert.map(|c| c.sans.join(",")).unwrap_or_default(),
            cert.map(|c| c.fingerprint_sha256.as_str()).unwrap_or("-"),
        );
        Verdict::reply(&K::string(text))
    }

    async fn on_ws_message(&self, session: &Session, message: &WsMessage) -> WsVerdict {
        let protocol = session.tls.as_deref().map_or("plain", |tls| &tls.protocol);
        WsVerdict::Reply(vec![WsMessage::text(format!(
            "{}|{protocol}|{}",
            session.user_lossy(),
            String::from_utf8_lossy(&message.data)
        ))])
    }

    async fn on_http(&self, session: &Session, _request: &HttpRequest) -> HttpVerdict {
        let protocol = session.tls.as_deref().map_or("plain", |tls| &tls.protocol);
        HttpVerdict::Respond(HttpResponse::new(
            200,
            format!("{}|{protocol}", session.user_lossy()),
        ))
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(tls: TlsOptions) -> Self {
        let mut options = ServerOptions::default();
        options.tls = Some(tls);
        Self::start_with(options).await
    }

    async fn start_with(options: ServerOptions) -> Self {
        init_logging();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(qgate_server::run(listener, options, Whoami, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            _task: task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------------

/// A TLS client config that trusts `root_pem` only, with an optional client certificate.
fn client_config(root_pem: &str, identity: Option<Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects with TLS and completes the TLS handshake.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(SOON, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
}

/// Sends a q handshake as `user` and returns the byte answered, `None` when the server closed.
async fn q_handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, user: &str) -> Option<u8> {
    stream
        .write_all(format!("{user}:secret\x03\0").as_bytes())
        .await
        .ok()?;
    stream.flush().await.ok()?;
    let mut reply = [0_u8; 1];
    match tokio::time::timeout(SOON, stream.read(&mut reply))
        .await
        .expect("the handshake is answered or closed")
    {
        Ok(1) => Some(reply[0]),
        _ => None,
    }
}

/// A sync query and the text of its answer.
async fn whoami<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> String {
    let bytes = encode_message(MessageType::Sync, &K::string("whoami")).unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
    let mut frame = vec![0_u8; 8];
    tokio::time::timeout(SOON, stream.read_exact(&mut frame))
        .await
        .expect("a response in time")
        .unwrap();
    let len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
    frame.resize(len, 0);
    stream.read_exact(&mut frame[8..]).await.unwrap();
    let message = Message::from_frame(frame, &Limits::default()).unwrap();
    let value = qgate_ipc::decode(message.body(), message.header.endian).unwrap();
    String::from_utf8(value.as_text().unwrap().to_vec()).unwrap()
}

/// A TLS connection through to its q handshake, answering `whoami`.
async fn tls_session(addr: SocketAddr, config: Arc<ClientConfig>, user: &str) -> String {
    let mut stream = tls_connect(addr, config).await.unwrap();
    assert_eq!(q_handshake(&mut stream, user).await, Some(3));
    whoami(&mut stream).await
}

/// Whether the server closes a TLS connection after or during the handshake: rustls on the client
/// side may report a refused certificate at the handshake or at the first read (TLS 1.3 sends the
/// server's verdict after the client considers the handshake done).
async fn tls_refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match tls_connect(addr, config).await {
        Err(_) => true,
        Ok(mut stream) => q_handshake(&mut stream, "someone").await.is_none(),
    }
}

/// Expects the server to close `stream` without answering.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0_u8; 64];
    match tokio::time::timeout(SOON, stream.read(&mut buf))
        .await
        .expect("closed in time")
    {
        Ok(n) => assert_eq!(n, 0, "closed without a byte, got {:?}", &buf[..n]),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// The leaf certificate a fresh connection is served.
async fn served_leaf(addr: SocketAddr, config: Arc<ClientConfig>) -> Vec<u8> {
    let stream = tls_connect(addr, config).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Polls until `check` holds, for at most [`SOON`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn required_mode_serves_tls_with_the_whole_chain() {
    let pki = Pki::new("required");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    let config = client_config(&pki.root.pem, None);

    let mut stream = tls_connect(server.addr, Arc::clone(&config)).await.unwrap();
    // Trusting only the root verifies only when the intermediate is served after the leaf.
    let chain = stream.get_ref().1.peer_certificates().unwrap().len();
    assert_eq!(chain, 2, "leaf and intermediate served");
    assert_eq!(q_handshake(&mut stream, "alice").await, Some(3));
    let answer = whoami(&mut stream).await;
    assert!(answer.starts_with("alice|TLSv1.3|-|"), "{answer}");
}

#[tokio::test]
async fn required_mode_closes_plain_q_clients() {
    let pki = Pki::new("plain-refused");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"alice:secret\x03\0").await.unwrap();
    expect_closed(&mut stream).await;
}

#[tokio::test]
async fn required_mode_redirects_http_to_https() {
    let pki = Pki::new("redirect");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /status?x=1 HTTP/1.1\r\nHost: q.example.com:5001\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
        "{response}"
    );
    assert!(
        response.contains("\r\nLocation: https://q.example.com:5001/status?x=1\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn optional_mode_serves_plain_and_tls_on_one_port() {
    let pki = Pki::new("optional");
    let server = Server::start(pki.options(TlsMode::Optional)).await;

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(q_handshake(&mut plain, "bob").await, Some(3));
    assert_eq!(whoami(&mut plain).await, "bob|plain|-||-");

    let answer = tls_session(server.addr, client_config(&pki.root.pem, None), "carol").await;
    assert!(answer.starts_with("carol|TLSv1.3|"), "{answer}");
}

#[tokio::test]
async fn a_server_without_tls_serves_plain_clients_as_before() {
    // TLS off: no sniffing, plain clients as before.
    let server = Server::start_with(ServerOptions::default()).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(q_handshake(&mut plain, "dave").await, Some(3));
    assert_eq!(whoami(&mut plain).await, "dave|plain|-||-");
}

#[tokio::test]
async fn required_client_auth_accepts_a_verified_certificate_and_reports_its_identity() {
    let pki = Pki::new("mtls");
    let mut tls = pki.options(TlsMode::Required);
    tls.client_auth = ClientAuth::Required(pki.path("root.pem"));
    let server = Server::start(tls).await;

    let config = client_config(&pki.root.pem, Some(pki.client("alice")));
    let answer = tls_session(server.addr, config, "alice").await;
    let parts: Vec<&str> = answer.split('|').collect();
    assert_eq!(
        parts[..4],
        ["alice", "TLSv1.3", "alice", "alice.clients.example"]
    );
    assert_eq!(parts[4].len(), 64, "sha256 hex: {answer}");
    assert!(
        parts[4]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[tokio::test]
async fn required_client_auth_refuses_missing_expired_and_foreign_certificates() {
    let pki = Pki::new("mtls-refused");
    let mut tls = pki.options(TlsMode::Required);
    tls.client_auth = ClientAuth::Required(pki.path("root.pem"));
    let server = Server::start(tls).await;

    assert!(
        tls_refused(server.addr, client_config(&pki.root.pem, None)).await,
        "no certificate"
    );

    let (expired, expired_key) = pki.root.leaf(
        "old",
        &["old.clients.example"],
        ExtendedKeyUsagePurpose::ClientAuth,
        |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    );
    let config = client_config(
        &pki.root.pem,
        Some(Identity::from_pem(&expired, &expired_key)),
    );
    assert!(tls_refused(server.addr, config).await, "expired");

    let foreign = Ca::root("someone else's root");
    let (cert, key) = foreign.leaf(
        "mallory",
        &["mallory.example"],
        ExtendedKeyUsagePurpose::ClientAuth,
        |_| {},
    );
    let config = client_config(&pki.root.pem, Some(Identity::from_pem(&cert, &key)));
    assert!(tls_refused(server.addr, config).await, "wrong issuer");

    // And the server still serves the good ones.
    let config = client_config(&pki.root.pem, Some(pki.client("alice")));
    let answer = tls_session(server.addr, config, "alice").await;
    assert!(answer.starts_with("alice|"), "{answer}");
}

#[tokio::test]
async fn optional_client_auth_serves_clients_without_a_certificate() {
    let pki = Pki::new("mtls-optional");
    let mut tls = pki.options(TlsMode::Required);
    tls.client_auth = ClientAuth::Optional(pki.path("root.pem"));
    let server = Server::start(tls).await;

    let answer = tls_session(server.addr, client_config(&pki.root.pem, None), "anon").await;
    assert!(answer.starts_with("anon|TLSv1.3|-||-"), "{answer}");
    let config = client_config(&pki.root.pem, Some(pki.client("erin")));
    let answer = tls_session(server.addr, config, "erin").await;
    assert!(answer.starts_with("erin|TLSv1.3|erin|"), "{answer}");
}

#[tokio::test]
async fn the_certificate_names_the_user_and_replaces_the_password() {
    let pki = Pki::new("user-from");
    // A password file that knows nobody: with user_from, the certificate is the credential.
    fs::write(pki.path("passwords.txt"), "someone:else\n").unwrap();
    let mut tls = pki.options(TlsMode::Optional);
    tls.client_auth = ClientAuth::Optional(pki.path("root.pem"));
    tls.user_from = UserFrom::Cn;
    let mut options = ServerOptions::default();
    options.tls = Some(tls);
    options.password_file = Some(PasswordFile {
        path: pki.path("passwords.txt"),
        restricted: false,
    });
    let server = Server::start_with(options).await;

    let config = client_config(&pki.root.pem, Some(pki.client("frank")));
    let answer = tls_session(server.addr, config, "whoever").await;
    assert!(answer.starts_with("frank|TLSv1.3|frank|"), "{answer}");

    // Without a certificate, the handshake's user and the password file decide.
    let mut stream = tls_connect(server.addr, client_config(&pki.root.pem, None))
        .await
        .unwrap();
    assert_eq!(q_handshake(&mut stream, "whoever").await, None);
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"someone:else\x03\0").await.unwrap();
    let mut byte = [0_u8; 1];
    plain.read_exact(&mut byte).await.unwrap();
    assert_eq!(byte, [3]);

    // The auth hook still runs, and may refuse.
    let (cert, key) = pki.root.leaf(
        "deny",
        &["deny.clients.example"],
        ExtendedKeyUsagePurpose::ClientAuth,
        |_| {},
    );
    let config = client_config(&pki.root.pem, Some(Identity::from_pem(&cert, &key)));
    let mut stream = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(q_handshake(&mut stream, "frank").await, None);
}

#[tokio::test]
async fn a_certificate_without_the_named_part_is_refused() {
    let pki = Pki::new("user-from-san");
    let mut tls = pki.options(TlsMode::Required);
    tls.client_auth = ClientAuth::Required(pki.path("root.pem"));
    tls.user_from = UserFrom::San;
    let server = Server::start(tls).await;

    let config = client_config(&pki.root.pem, Some(pki.client("gina")));
    let answer = tls_session(server.addr, config, "x").await;
    assert!(answer.starts_with("gina.clients.example|"), "{answer}");

    let (cert, key) = pki
        .root
        .leaf("nosan", &[], ExtendedKeyUsagePurpose::ClientAuth, |_| {});
    let config = client_config(&pki.root.pem, Some(Identity::from_pem(&cert, &key)));
    let mut stream = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(q_handshake(&mut stream, "x").await, None);
}

#[tokio::test]
async fn a_key_that_others_can_read_is_refused_with_the_fix() {
    let pki = Pki::new("key-perms");
    fs::set_permissions(pki.path("server.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = ServerOptions::default();
    options.tls = Some(pki.options(TlsMode::Required));
    let error = qgate_server::run(listener, options, Whoami, std::future::pending())
        .await
        .expect_err("refused");
    let message = format!("{error:#}");
    assert!(message.contains("server.key"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused() {
    let pki = Pki::new("key-mismatch");
    pki.write_server("other.pem", "other.key", "other");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = ServerOptions::default();
    options.tls = Some(TlsOptions::new(
        TlsMode::Required,
        pki.path("server.pem"),
        pki.path("other.key"),
    ));
    let error = qgate_server::run(listener, options, Whoami, std::future::pending())
        .await
        .expect_err("refused");
    assert!(
        format!("{error:#}").contains("does not go with"),
        "{error:#}"
    );
}

#[tokio::test]
async fn certificates_reload_in_place_and_by_rename_under_an_open_connection() {
    let pki = Pki::new("reload");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    let config = client_config(&pki.root.pem, None);

    let mut open = tls_connect(server.addr, Arc::clone(&config)).await.unwrap();
    assert_eq!(q_handshake(&mut open, "olga").await, Some(3));
    let first = open.get_ref().1.peer_certificates().unwrap()[0].to_vec();

    // In place: both files rewritten.
    let second = pki.write_server("server.pem", "server.key", "server two");
    eventually("the rewritten pair is served", || {
        let config = Arc::clone(&config);
        let second = second.clone();
        async move { served_leaf(server.addr, config).await == second }
    })
    .await;
    assert_ne!(first, second);
    assert!(
        whoami(&mut open).await.starts_with("olga|"),
        "open connection undisturbed"
    );

    // A broken pair (a key of another certificate) is not served; the previous one goes on.
    pki.write_server("broken.pem", "broken.key", "broken");
    fs::copy(pki.path("broken.key"), pki.path("server.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_leaf(server.addr, Arc::clone(&config)).await, second);

    // By atomic rename, as certbot does: the good pair replaces the broken one.
    let third = pki.write_server("next.pem", "next.key", "server three");
    fs::rename(pki.path("next.key"), pki.path("server.key")).unwrap();
    fs::rename(pki.path("next.pem"), pki.path("server.pem")).unwrap();
    eventually("the renamed pair is served", || {
        let config = Arc::clone(&config);
        let third = third.clone();
        async move { served_leaf(server.addr, config).await == third }
    })
    .await;
    assert!(
        whoami(&mut open).await.starts_with("olga|"),
        "open connection undisturbed"
    );
}

#[tokio::test]
async fn certificates_reload_by_symlink_swap() {
    // The layout of a Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data -> v1.
    let pki = Pki::new("symlink");
    let data = |version: &str| pki.path(version);
    fs::create_dir(data("v1")).unwrap();
    fs::rename(pki.path("server.pem"), data("v1").join("tls.crt")).unwrap();
    fs::rename(pki.path("server.key"), data("v1").join("tls.key")).unwrap();
    symlink("v1", pki.path("..data")).unwrap();
    symlink("..data/tls.crt", pki.path("tls.crt")).unwrap();
    symlink("..data/tls.key", pki.path("tls.key")).unwrap();
    let mut tls = TlsOptions::new(TlsMode::Required, pki.path("tls.crt"), pki.path("tls.key"));
    tls.reload_interval = Duration::from_millis(50);
    let server = Server::start(tls).await;
    let config = client_config(&pki.root.pem, None);
    let mut open = tls_connect(server.addr, Arc::clone(&config)).await.unwrap();
    assert_eq!(q_handshake(&mut open, "pat").await, Some(3));

    fs::create_dir(data("v2")).unwrap();
    let next = pki.write_server("v2/tls.crt", "v2/tls.key", "server swapped");
    symlink("v2", pki.path("..data_tmp")).unwrap();
    fs::rename(pki.path("..data_tmp"), pki.path("..data")).unwrap();
    eventually("the swapped pair is served", || {
        let config = Arc::clone(&config);
        let next = next.clone();
        async move { served_leaf(server.addr, config).await == next }
    })
    .await;
    assert!(
        whoami(&mut open).await.starts_with("pat|"),
        "open connection undisturbed"
    );
}

#[tokio::test]
async fn tls_1_1_is_refused() {
    let pki = Pki::new("tls11");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    // A TLS 1.1 ClientHello: legacy version 3.2, one cipher suite, signature_algorithms, and a
    // supported_versions extension that offers TLS 1.1 alone.
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0x00, 0x00, 0x02, 0xc0, 0x2b, 0x01, 0x00]);
    body.extend_from_slice(&[0x00, 0x0f]);
    body.extend_from_slice(&[0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    body.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x02]);
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).unwrap()];
    handshake.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(handshake.len()).unwrap(),
    ];
    record.extend_from_slice(&handshake);

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&record).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut reply))
        .await
        .expect("closed in time");
    // An alert record (0x15), protocol_version (70), and nothing else.
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert_eq!(reply.last(), Some(&70), "{reply:?}");
}

#[tokio::test]
async fn openssl_trusting_only_the_root_verifies_the_served_chain() {
    let Some(openssl) = ["/usr/bin/openssl", "/usr/local/bin/openssl"]
        .into_iter()
        .find(|path| Path::new(path).exists())
    else {
        #[allow(clippy::print_stderr, reason = "the test says why it checked nothing")]
        {
            eprintln!("openssl not installed: chain check by openssl skipped");
        }
        return;
    };
    let pki = Pki::new("openssl");
    let server = Server::start(pki.options(TlsMode::Required)).await;
    let root = pki.path("root.pem");
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(openssl)
            .args(["s_client", "-connect", &addr, "-servername", "localhost"])
            .args(["-showcerts", "-verify_return_error", "-CAfile"])
            .arg(root)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    assert_eq!(
        stdout.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{stdout}"
    );
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new("stall");
    let mut options = ServerOptions::default();
    options.tls = Some(pki.options(TlsMode::Optional));
    options.limits.handshake_timeout = Duration::from_millis(300);
    let server = Server::start_with(options).await;
    let started = tokio::time::Instant::now();

    // Silent from the start: nothing to sniff.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // The start of a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    // A prefix of an HTTP method, then nothing.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(b"GE").await.unwrap();

    expect_closed(&mut silent).await;
    expect_closed(&mut stalled).await;
    expect_closed(&mut trickle).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_served_certificate_expiry_is_a_metric_set_at_each_load() {
    init_logging();
    let pki = Pki::new("expiry");
    let write_expiring = |year: i32| {
        let (leaf, key) = pki.intermediate.leaf(
            "server",
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            |params| params.not_after = rcgen::date_time_ymd(year, 1, 1),
        );
        write_key(&pki.path("server.key"), &key);
        fs::write(
            pki.path("server.pem"),
            format!("{leaf}{}", pki.intermediate.pem),
        )
        .unwrap();
    };
    write_expiring(2040);
    let mut registry = qgate_metrics::Registry::default();
    let metrics = qgate_metrics::Metrics::register(&mut registry, "test");
    let mut options = ServerOptions::default();
    options.tls = Some(pki.options(TlsMode::Required));
    // Built, not serving: the certificate is loaded, and watched, from here on.
    let _server =
        qgate_server::Server::with_metrics(options, Whoami, qgate_hooks::NoBackend, metrics)
            .await
            .unwrap();
    let expiry = || {
        let text = qgate_metrics::Metrics::render(&registry).unwrap();
        text.lines().find_map(|line| {
            line.strip_prefix("qgate_tls_certificate_expiry_timestamp_seconds ")
                .map(str::to_owned)
        })
    };
    // 2040-01-01T00:00:00Z.
    assert_eq!(expiry().as_deref(), Some("2208988800"));
    // A renewed certificate is reloaded, and its expiry with it.
    write_expiring(2041);
    eventually("the renewed certificate's expiry is the metric", || {
        let now = expiry();
        // 2041-01-01T00:00:00Z.
        async move { now.as_deref() == Some("2240611200") }
    })
    .await;
}

/// Sends an HTTP request with `Connection: close` on `stream` and returns the response, whole.
async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    // A TLS peer that closes without close_notify is an error to rustls; the bytes are read.
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut bytes))
        .await
        .expect("the response comes");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn https_requests_are_served_inside_tls_with_the_certificate_user() {
    let pki = Pki::new("https");
    fs::write(pki.path("passwords.txt"), "web:secret\n").unwrap();
    let mut tls = pki.options(TlsMode::Optional);
    tls.client_auth = ClientAuth::Optional(pki.path("root.pem"));
    tls.user_from = UserFrom::Cn;
    let mut options = ServerOptions::default();
    options.tls = Some(tls);
    options.password_file = Some(PasswordFile {
        path: pki.path("passwords.txt"),
        restricted: false,
    });
    let server = Server::start_with(options).await;
    let request = "GET /?1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    // The client certificate is the credential, as for a q client.
    let config = client_config(&pki.root.pem, Some(pki.client("grace")));
    let mut stream = tls_connect(server.addr, config).await.unwrap();
    let response = http_exchange(&mut stream, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("grace|TLSv1.3"), "{response}");

    // Without one, HTTP Basic against the password file.
    let mut stream = tls_connect(server.addr, client_config(&pki.root.pem, None))
        .await
        .unwrap();
    let response = http_exchange(&mut stream, request).await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let mut stream = tls_connect(server.addr, client_config(&pki.root.pem, None))
        .await
        .unwrap();
    let authorized = request.replace(
        "Connection",
        "Authorization: Basic d2ViOnNlY3JldA==\r\nConnection",
    );
    let response = http_exchange(&mut stream, &authorized).await;
    assert!(response.ends_with("web|TLSv1.3"), "{response}");

    // Plain HTTP on an optional port is served too.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    let response = http_exchange(&mut plain, &authorized).await;
    assert!(response.ends_with("web|plain"), "{response}");
}

#[tokio::test]
async fn websockets_are_served_inside_tls_with_the_certificate_user() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

    let pki = Pki::new("wss");
    let mut tls = pki.options(TlsMode::Required);
    tls.client_auth = ClientAuth::Required(pki.path("root.pem"));
    tls.user_from = UserFrom::Cn;
    let server = Server::start(tls).await;
    let config = client_config(&pki.root.pem, Some(pki.client("heidi")));
    let stream = tls_connect(server.addr, config).await.unwrap();
    let request = format!("wss://localhost:{}/", server.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, response) =
        tokio::time::timeout(SOON, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("the upgrade in time")
            .expect("the upgrade");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    let reply = tokio::time::timeout(SOON, ws.next())
        .await
        .expect("a reply in time")
        .expect("a message")
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "heidi|TLSv1.3|hello");
}
