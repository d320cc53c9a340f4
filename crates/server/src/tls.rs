//! TLS on the q port: telling TLS, HTTP and q apart by the first bytes, the TLS handshake, the
//! certificate that reloads itself, client certificates and the identity they carry.
//!
//! ```text
//!   accepted TcpStream ─peek─> 0x16 ──────────> TLS handshake (rustls) ─> Handler<TlsStream>
//!                          ├─> "GET " etc. ──> required: 301 to https, close
//!                          └─> anything else ─> optional: Handler<TcpStream>
//!                                               required: log "TLS is required", close
//! ```
//!
//! With TLS off none of this runs: the listener hands the `TcpStream` straight to its handler, and
//! the plain path costs what it did before TLS existed. With TLS on, the plain path is the same
//! handler over the same `TcpStream` (each stream type has its own monomorphised handler, so no
//! read goes through dynamic dispatch); the only cost is one `peek` per connection.
//!
//! # Reloading
//!
//! The certificate and key are read at start, and then a task checks both files every
//! [`TlsOptions::reload_interval`]: their device, inode, length, modification and change times and
//! the path they resolve to, all through symlinks. An edit in place, an atomic rename (certbot) and
//! a symlink swap (Kubernetes' `..data`) each change at least one of these. A changed pair is
//! loaded whole and swapped in behind an [`ArcSwap`]; new handshakes get it, open connections keep
//! the session they have. A new pair that does not load (a key that does not match, a half-written
//! file, a key others may read) is logged and the old pair goes on serving; it is tried again when
//! the files change again.

use std::{
    fmt, fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use qgate_hooks::{CertIdentity, TlsFacts};
use qgate_metrics::Metrics;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    logging::ClientText,
    options::{ChallengeAnswers, ClientAuth, TlsMode, TlsOptions, UserFrom},
    stamp::Stamp,
};

/// The longest HTTP request head read before redirecting it: a browser's or curl's request line
/// and headers fit in 8 KiB, the limit most HTTP servers set. Whatever is beyond it is not read;
/// the redirect then goes to the path alone, on the address the client connected to.
const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;

/// How long to wait before peeking again when the first bytes could still become an HTTP method
/// (a client that sent `GE` and paused). Real clients send their first line whole; this only
/// keeps a trickling one from spinning the peek loop.
const PEEK_RETRY: Duration = Duration::from_millis(5);

/// The methods that mark a plain HTTP request, each followed by a space.
const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// How long before its end a served certificate is logged as expiring: 14 days, inside the
/// renewal window of certbot (30 days) and of most ACME clients, so the warning means renewal
/// has failed.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the first bytes of a connection say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A plain HTTP request.
    Http,
    /// Plain q IPC (or anything else that is neither TLS nor HTTP).
    Plain,
    /// A TLS ClientHello.
    Tls,
}

/// What `bytes`, the first ones a client sent, say it is; `None` when they are too few to tell
/// (a prefix of an HTTP method).
pub(crate) fn classify(bytes: &[u8]) -> Option<Sniffed> {
    let first = *bytes.first()?;
    if first == TLS_HANDSHAKE_RECORD {
        return Some(Sniffed::Tls);
    }
    let mut undecided = false;
    for method in HTTP_METHODS {
        if bytes.starts_with(method) {
            return Some(Sniffed::Http);
        }
        undecided |= method.starts_with(bytes);
    }
    if undecided {
        None
    } else {
        Some(Sniffed::Plain)
    }
}

/// Peeks at the first bytes of `stream` until they say what it is; `None` if the client closed
/// first. The caller bounds the wait.
pub(crate) async fn sniff(stream: &TcpStream) -> io::Result<Option<Sniffed>> {
    // Long enough for the longest method and its space.
    let mut buffer = [0_u8; 8];
    loop {
        let read = stream.peek(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        if let Some(kind) = classify(&buffer[..read]) {
            return Ok(Some(kind));
        }
        if read == buffer.len() {
            return Ok(Some(Sniffed::Plain));
        }
        tokio::time::sleep(PEEK_RETRY).await;
    }
}

/// The TLS side of the listener: the acceptor, with its certificate that reloads, and what the
/// handlers need to know about it.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The acceptor's config, for a handshake that reads the ClientHello first (ACME).
    config: Arc<ServerConfig>,
    provider: Arc<CryptoProvider>,
    /// The answers to ACME TLS-ALPN-01 validations in flight, when certificates come from ACME.
    challenges: Option<Arc<dyn ChallengeAnswers>>,
    pub(crate) mode: TlsMode,
    pub(crate) user_from: UserFrom,
    /// The certificate the acceptor serves, swapped by [`Tls::watch`].
    resolver: Arc<Resolver>,
    files: KeyPairFiles,
    /// The files' stamps taken just before the first load: a change after them is reloaded.
    loaded: [Option<Stamp>; 2],
    reload_interval: Duration,
    /// Where the served certificate's expiry goes, at each load.
    metrics: Metrics,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("user_from", &self.user_from)
            .field("cert_file", &self.files.cert)
            .field("key_file", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate, its key and the client CA bundle, and builds the acceptor.
    ///
    /// # Errors
    ///
    /// If a file cannot be read, holds no certificate or key, or the key does not match the
    /// certificate; if others may read the key; if the CA bundle has no usable certificate.
    pub(crate) fn load(
        options: &TlsOptions,
        metrics: Metrics,
        challenges: Option<&Arc<dyn ChallengeAnswers>>,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = KeyPairFiles {
            cert: options.cert_file.clone(),
            key: options.key_file.clone(),
        };
        let loaded = files.stamps();
        let (key, not_after) = files.load(&provider)?;
        metrics.tls_certificate_expiry(not_after);
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(key),
        });
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("the TLS provider supports neither TLS 1.2 nor TLS 1.3")?;
        let builder = match &options.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
                let roots = load_roots(ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                let verifier = if matches!(options.client_auth, ClientAuth::Optional(_)) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().with_context(|| {
                    format!("cannot verify client certificates with {}", ca.display())
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = Arc::new(builder.with_cert_resolver(Arc::clone(&resolver) as _));
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::clone(&config)),
            config,
            provider,
            challenges: challenges.cloned(),
            mode: options.mode,
            user_from: options.user_from,
            resolver,
            files,
            loaded,
            reload_interval: options.reload_interval,
            metrics,
        })
    }

    /// Checks the certificate and key files every `reload_interval` and swaps in a changed pair
    /// once it loads; runs until dropped.
    pub(crate) async fn watch(self: Arc<Self>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut seen = self.loaded.clone();
        let mut interval = tokio::time::interval(self.reload_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let tls = Arc::clone(&self);
            let provider = Arc::clone(&provider);
            let previous = seen.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let stamps = tls.files.stamps();
                if stamps == previous {
                    return (stamps, None);
                }
                let loaded = tls.files.load(&provider);
                (stamps, Some(loaded))
            })
            .await;
            let Ok((stamps, loaded)) = checked else {
                // The blocking task panicked or was cancelled: try again next tick.
                continue;
            };
            seen = stamps;
            match loaded {
                None => {}
                Some(Ok((key, not_after))) => {
                    self.resolver.current.store(Arc::new(key));
                    self.metrics.tls_certificate_expiry(not_after);
                    tracing::info!(
                        cert_file = %self.files.cert.display(),
                        key_file = %self.files.key.display(),
                        "TLS certificate reloaded"
                    );
                }
                Some(Err(error)) => tracing::error!(
                    error = format!("{error:#}"),
                    "TLS certificate changed but cannot be loaded; still serving the previous one"
                ),
            }
        }
    }

    /// Runs the TLS handshake on `stream`; the caller bounds its time. `None` when the
    /// connection was an ACME CA's TLS-ALPN-01 validation, answered and done.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<Option<TlsStream<TcpStream>>> {
        let Some(challenges) = &self.challenges else {
            return self.acceptor.accept(stream).await.map(Some);
        };
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let hello = start.client_hello();
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|protocol| protocol == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name().unwrap_or_default().to_owned();
            let Some(key) = challenges.tls_alpn(&name) else {
                return Err(io::Error::other(format!(
                    "an ACME TLS-ALPN-01 validation for {} with no challenge in flight",
                    ClientText(name.as_bytes())
                )));
            };
            let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(io::Error::other)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(key)));
            config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
            let mut stream = start.into_stream(Arc::new(config)).await?;
            let _ = stream.shutdown().await;
            tracing::info!(domain = %ClientText(name.as_bytes()), "ACME TLS-ALPN-01 validation answered");
            return Ok(None);
        }
        start.into_stream(Arc::clone(&self.config)).await.map(Some)
    }
}

/// The certificate and key file paths, loaded together.
#[derive(Debug)]
struct KeyPairFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl KeyPairFiles {
    /// Reads, checks and pairs the certificate chain and the key; with when the leaf expires, in
    /// Unix seconds (0 when it cannot be parsed).
    fn load(&self, provider: &CryptoProvider) -> anyhow::Result<(CertifiedKey, i64)> {
        check_key_permissions(&self.key)?;
        let chain = load_certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|error| {
            anyhow!(
                "cannot read a private key from {}: {error}; it must be PEM (PKCS#8, PKCS#1 or \
                 SEC1)",
                self.key.display()
            )
        })?;
        let leaf = chain.first().map(|cert| identity(cert.as_ref()));
        let key = CertifiedKey::from_der(chain, key, provider).map_err(|error| {
            anyhow!(
                "the key in {} does not go with the certificate in {}: {error}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        let not_after = leaf.as_ref().map_or(0, |leaf| leaf.not_after);
        if let Some(leaf) = leaf {
            self.warn_on_validity(&leaf);
        }
        Ok((key, not_after))
    }

    /// Logs a served certificate that is not yet valid, expired, or about to expire: clients
    /// refuse it, or soon will, and the operator should hear of it before they do.
    fn warn_on_validity(&self, leaf: &CertIdentity) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
            });
        let warning = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
        let cert_file = self.cert.display();
        if leaf.not_after <= now {
            tracing::warn!(
                %cert_file,
                expired_secs_ago = now - leaf.not_after,
                "the TLS certificate has expired: clients will refuse it; renew it (the file is \
                 reloaded when it changes)"
            );
        } else if leaf.not_before > now {
            tracing::warn!(
                %cert_file,
                valid_in_secs = leaf.not_before - now,
                "the TLS certificate is not valid yet: clients will refuse it until then"
            );
        } else if leaf.not_after - now < warning {
            tracing::warn!(
                %cert_file,
                expires_in_days = (leaf.not_after - now) / 86_400,
                "the TLS certificate expires soon: renew it (the file is reloaded when it changes)"
            );
        }
    }

    /// What identifies the files' current contents without reading them.
    fn stamps(&self) -> [Option<Stamp>; 2] {
        [Stamp::of(&self.cert), Stamp::of(&self.key)]
    }
}

/// Refuses a private key that anyone but its owner may read or write.
fn check_key_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = fs::metadata(path)
        .with_context(|| format!("cannot read the private key file {}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the private key file {path} has mode {mode:03o}, so users other than its owner can \
             reach it; run `chmod 600 {path}` (in Kubernetes, give the secret volume \
             `defaultMode: 0400`)",
            path = path.display()
        );
    }
    Ok(())
}

/// Every certificate in a PEM file, in order.
fn load_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| anyhow!("cannot read certificates from {}: {error}", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{} holds no certificate: it must hold PEM `CERTIFICATE` blocks, the server's first",
            path.display()
        );
    }
    Ok(certificates)
}

/// The CA bundle that client certificates are verified against.
fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(load_certificates(path)?);
    if added == 0 {
        bail!(
            "{} holds no usable CA certificate ({ignored} could not be parsed)",
            path.display()
        );
    }
    Ok(roots)
}

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate, whatever the client asks: a TLS-ALPN-01 challenge's.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The server's certificate and key, as the last good load left them.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What a finished handshake negotiated, and who the client certificate names.
pub(crate) fn facts(stream: &TlsStream<TcpStream>) -> TlsFacts {
    let (_, connection) = stream.get_ref();
    let mut facts = TlsFacts::default();
    facts.protocol = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    facts.cipher = connection
        .negotiated_cipher_suite()
        .map(|suite| {
            let suite = suite.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_owned)
        })
        .unwrap_or_default();
    facts.sni = connection.server_name().map(str::to_owned);
    facts.client_cert = connection
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|leaf| identity(leaf.as_ref()));
    facts
}

/// The identity in a certificate that rustls has verified. A part that does not parse is left
/// empty: the certificate itself was accepted by the verifier.
pub(crate) fn identity(der: &[u8]) -> CertIdentity {
    use x509_parser::{extensions::GeneralName, prelude::FromDer as _};
    let mut identity = CertIdentity::default();
    identity.fingerprint_sha256 = Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return identity;
    };
    identity.subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        identity.sans = sans
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(text)
                | GeneralName::RFC822Name(text)
                | GeneralName::URI(text) => Some((*text).to_owned()),
                GeneralName::IPAddress(bytes) => ip_text(bytes),
                _ => None,
            })
            .collect();
    }
    identity.not_before = cert.validity().not_before.timestamp();
    identity.not_after = cert.validity().not_after.timestamp();
    identity
}

/// An IP address SAN as text.
fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|ip| std::net::Ipv4Addr::from(ip).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|ip| std::net::Ipv6Addr::from(ip).to_string()),
        _ => None,
    }
}

/// The user name a verified client certificate gives, under `user_from`.
///
/// `Ok(None)` when the user comes from the handshake (`user_from = none`, or no certificate);
/// `Err` with the reason when the certificate lacks the part `user_from` names.
pub(crate) fn cert_user(
    tls: Option<&TlsFacts>,
    user_from: UserFrom,
) -> Result<Option<String>, &'static str> {
    let Some(cert) = tls.and_then(|tls| tls.client_cert.as_ref()) else {
        return Ok(None);
    };
    match user_from {
        UserFrom::None => Ok(None),
        UserFrom::Cn => match cert.subject_cn.as_deref() {
            Some(cn) if !cn.is_empty() => Ok(Some(cn.to_owned())),
            _ => Err("the client certificate has no subject common name (tls.user_from = \"cn\")"),
        },
        UserFrom::San => match cert.sans.first() {
            Some(san) => Ok(Some(san.clone())),
            None => Err(
                "the client certificate has no subject alternative name (tls.user_from = \"san\")",
            ),
        },
    }
}

/// Answers a plain HTTP request on a TLS-required port with a redirect to the same path over
/// https, then closes. Bounded by `timeout` in all.
pub(crate) async fn redirect(mut stream: TcpStream, local: SocketAddr, timeout: Duration) {
    let answered = tokio::time::timeout(timeout, async {
        let head = read_http_head(&mut stream).await?;
        let location = location(&head, local);
        let response = format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        io::Result::Ok(location)
    })
    .await;
    match answered {
        Ok(Ok(location)) => tracing::info!(
            location = %ClientText(location.as_bytes()),
            "plain HTTP request on a port that requires TLS; redirected to https"
        ),
        Ok(Err(error)) => tracing::info!(%error, "plain HTTP request not redirected"),
        Err(_) => tracing::info!(
            limit = "handshake_timeout",
            after = ?timeout,
            "plain HTTP request not completed in time; closing"
        ),
    }
}

/// Reads a request head, up to its blank line or [`MAX_HTTP_HEAD_BYTES`].
async fn read_http_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    while head.len() < MAX_HTTP_HEAD_BYTES {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n")
            || head.windows(2).any(|window| window == b"\n\n")
        {
            break;
        }
    }
    head.truncate(MAX_HTTP_HEAD_BYTES);
    Ok(head)
}

/// `https://` with the request's `Host` and path, each only if it is well-formed; otherwise the
/// address the client connected to, and `/`.
pub(crate) fn location(head: &[u8], local: SocketAddr) -> String {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|line| line.trim_end_matches('\r'));
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .filter(|path| {
            path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_graphic())
        })
        .unwrap_or("/");
    let host = lines
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim())
        })
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map_or_else(|| local.to_string(), str::to_owned);
    format!("https://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expect: Option<Sniffed>) {
        assert_eq!(
            classify(bytes),
            expect,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn first_bytes_tell_tls_http_and_q_apart() {
        check(b"\x16\x03\x01\x02\x00", Some(Sniffed::Tls));
        check(b"GET / HTTP/1.1\r\n", Some(Sniffed::Http));
        check(b"POST /x HTTP/1.1", Some(Sniffed::Http));
        check(b"OPTIONS ", Some(Sniffed::Http));
        check(b"user:pass\x03\x00", Some(Sniffed::Plain));
        check(b"GET:pw\x03\x00", Some(Sniffed::Plain));
        check(b"\x03\x00", Some(Sniffed::Plain));
        check(b"GE", None);
        check(b"GET", None);
        check(b"", None);
    }

    #[test]
    fn the_redirect_keeps_host_and_path() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let check = |head: &str, expect: &str| assert_eq!(location(head.as_bytes(), local), expect);
        check(
            "GET /a/b?c=d HTTP/1.1\r\nHost: q.example.com:5000\r\n\r\n",
            "https://q.example.com:5000/a/b?c=d",
        );
        check(
            "GET /x HTTP/1.1\r\nhost: [::1]:5000\r\n\r\n",
            "https://[::1]:5000/x",
        );
        check("GET /x HTTP/1.0\r\n\r\n", "https://127.0.0.1:5000/x");
        check(
            "GET //evil.example HTTP/1.1\r\nHost: q\r\n\r\n",
            "https://q/",
        );
        check(
            "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n",
            "https://127.0.0.1:5000/",
        );
        check("garbage", "https://127.0.0.1:5000/");
    }

    #[test]
    fn the_user_comes_from_the_certificate_when_asked() {
        let mut cert = CertIdentity::default();
        cert.subject_cn = Some("alice".to_owned());
        cert.sans = vec!["alice.example".to_owned()];
        let mut facts = TlsFacts::default();
        facts.client_cert = Some(cert);
        assert_eq!(
            cert_user(Some(&facts), UserFrom::Cn),
            Ok(Some("alice".to_owned()))
        );
        assert_eq!(
            cert_user(Some(&facts), UserFrom::San),
            Ok(Some("alice.example".to_owned()))
        );
        assert_eq!(cert_user(Some(&facts), UserFrom::None), Ok(None));
        assert_eq!(cert_user(None, UserFrom::Cn), Ok(None));
        facts.client_cert = Some(CertIdentity::default());
        assert!(cert_user(Some(&facts), UserFrom::Cn).is_err());
        assert!(cert_user(Some(&facts), UserFrom::San).is_err());
    }
}
