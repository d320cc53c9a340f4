//! `[tls.acme]`: certificates from an ACME CA, wired into the server.
//!
//! The certificate manager (`qgate-acme`) writes the certificate and its key into its storage
//! directory, which `[tls]` then loads as its `cert_file` and `key_file`: the server's own
//! reload (a check of both files every second) swaps a new certificate in without touching the
//! connections open. The CA's validations are answered by the server from the manager's
//! [`qgate_acme::Challenges`]: TLS-ALPN-01 in the q port's TLS handshake, HTTP-01 on the q
//! port's HTTP and, when `http_listen` is set, on a plain listener of its own (port 80), which
//! redirects everything else to `https://`.
//!
//! `qgate acme status` reads the storage directory alone.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use qgate_acme::{Acme, AcmeOptions, ChallengeKind, Challenges};
use qgate_config::{AcmeChallenge, Config};
use qgate_server::ChallengeAnswers;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// The manager's challenges, as the server asks for them.
#[derive(Debug)]
struct Answers(Arc<Challenges>);

impl ChallengeAnswers for Answers {
    fn tls_alpn(&self, server_name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.tls_alpn(server_name)
    }

    fn http01(&self, token: &str) -> Option<String> {
        self.0.http01(token)
    }
}

/// The manager, ready to run, and what the server answers the CA from.
pub(crate) struct Prepared {
    pub(crate) acme: Acme,
    pub(crate) answers: Arc<dyn ChallengeAnswers>,
    pub(crate) challenges: Arc<Challenges>,
    /// The plain HTTP-01 listener's address, when `http_listen` is set.
    pub(crate) http_listen: Option<SocketAddr>,
}

/// The manager's options from `[tls.acme]`.
fn options(table: &qgate_config::Acme) -> AcmeOptions {
    let mut options = AcmeOptions::new(table.domains.clone(), table.storage.clone());
    options.email.clone_from(&table.email);
    options.directory.clone_from(&table.directory);
    options
        .directory_ca_file
        .clone_from(&table.directory_ca_file);
    options.challenge = match table.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeKind::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeKind::Http01,
    };
    options.renew_before = table.renew_before.get();
    options
}

/// Opens the storage directory (refusing loose permissions) and makes sure there is a
/// certificate to start TLS with: the stored one, or a self-signed placeholder until the first
/// issuance. `None` without `[tls.acme]`.
///
/// # Errors
///
/// When the storage directory or a key in it may be read by group or others (the message says
/// how to fix it), or cannot be made or written.
pub(crate) fn prepare(config: &Config) -> Result<Option<Prepared>> {
    let Some(table) = &config.tls.acme else {
        return Ok(None);
    };
    let challenges = Arc::new(Challenges::default());
    let acme = Acme::open(options(table), Arc::clone(&challenges))
        .context("cannot start: tls.acme.storage cannot be used")?;
    let valid = acme
        .prepare()
        .context("cannot start: no certificate can be put in tls.acme.storage")?;
    if valid {
        info!(domains = ?table.domains, "ACME certificate in storage is valid");
    } else {
        info!(
            domains = ?table.domains,
            "no valid ACME certificate yet: serving a placeholder until the CA issues one"
        );
    }
    Ok(Some(Prepared {
        acme,
        answers: Arc::new(Answers(Arc::clone(&challenges))),
        challenges,
        http_listen: table.http_listen.map(|listen| listen.get()),
    }))
}

/// Runs the manager for as long as the server runs: issuance now when needed, renewal before
/// expiry, retries with backoff; the server's reload picks each new certificate up.
pub(crate) async fn run(acme: Acme) {
    acme.run(|| {
        info!("ACME certificate issued; the server loads it within a second");
    })
    .await;
}

/// How long a client of the HTTP-01 listener has to send its request head.
///
/// 5 s: the CA sends its request at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection of the HTTP-01 listener may last.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the plain HTTP-01 listener, naming the key in the error.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen for ACME HTTP-01 validations on {addr} (tls.acme.http_listen); \
             ports below 1024 need privileges (CAP_NET_BIND_SERVICE)"
        )
    })
}

/// The plain HTTP-01 listener: `GET /.well-known/acme-challenge/TOKEN` gets the key
/// authorization, anything else a `301` to the same path on `https://`.
pub(crate) async fn serve_http01(listener: TcpListener, challenges: Arc<Challenges>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "HTTP-01 listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let challenges = Arc::clone(&challenges);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = answer(&challenges, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Err(error)) => debug!(%error, "HTTP-01 listener: connection failed"),
                Err(_) => debug!("HTTP-01 listener: connection too slow; closed"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// The answer to one request of the HTTP-01 listener.
fn answer(challenges: &Challenges, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(token) = qgate_acme::http01_token(path) {
        return match challenges.http01(token) {
            Some(authorization) => text(StatusCode::OK, authorization),
            None => text(StatusCode::NOT_FOUND, "no such ACME challenge".to_owned()),
        };
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(|host| host.split(':').next().unwrap_or(host))
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b".-".contains(&byte))
        });
    let Some(host) = host else {
        return text(
            StatusCode::BAD_REQUEST,
            "a Host header is needed".to_owned(),
        );
    };
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let location = format!("https://{host}{target}");
    let mut response = text(StatusCode::MOVED_PERMANENTLY, String::new());
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// `qgate acme status`: each certificate in the storage directory, its issuer, expiry, next
/// renewal and last error.
///
/// # Errors
///
/// Without `[tls.acme]`, or when the storage directory cannot be read.
pub(crate) fn status(config: &Config) -> Result<String> {
    let Some(table) = &config.tls.acme else {
        anyhow::bail!("the config has no [tls.acme] table: certificates do not come from ACME");
    };
    let rows = qgate_acme::status(&table.storage, table.renew_before.get())
        .with_context(|| format!("cannot read {}", table.storage.display()))?;
    if rows.is_empty() {
        return Ok(format!(
            "no certificate in {} yet: `qgate serve` makes one at start\n",
            table.storage.display()
        ));
    }
    let mut out = String::new();
    for row in rows {
        let when = |time: std::time::SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(time)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        };
        out.push_str(&format!("domains:      {}\n", row.domains.join(", ")));
        out.push_str(&format!(
            "issuer:       {}{}\n",
            row.issuer,
            if row.placeholder {
                " (a placeholder until the CA issues one)"
            } else {
                ""
            }
        ));
        out.push_str(&format!("expires:      {}\n", when(row.not_after)));
        out.push_str(&format!("next renewal: {}\n", when(row.next_renewal)));
        match &row.last_success {
            Some(time) => out.push_str(&format!("last issued:  {}\n", when(*time))),
            None => out.push_str("last issued:  never\n"),
        }
        match &row.last_error {
            Some(error) => out.push_str(&format!(
                "last error:   {} at {}\n",
                error.message,
                when(error.time)
            )),
            None => out.push_str("last error:   none\n"),
        }
    }
    Ok(out)
}
