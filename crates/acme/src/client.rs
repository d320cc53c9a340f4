//! The HTTPS client that talks to the CA: hyper with rustls on ring, trusting the platform's roots
//! or a private CA's bundle, with a time limit on every request.

use std::{future::Future, path::Path, pin::Pin, sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::storage;

/// The longest one request to the CA may take until its response headers: 30 seconds.
///
/// A CA answers in well under a second; one that has not answered in 30 has a problem that a
/// retry later solves better than waiting. Without a limit a stalled connection would hold the
/// issuance (and its published challenges) forever; the issuance as a whole has its own limit.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Hyper = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The HTTPS client, with [`REQUEST_TIMEOUT`] on each request.
struct TimedClient(Hyper);

impl HttpClient for TimedClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = request.uri().clone();
        let response = HttpClient::request(&self.0, request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(response) => response,
                Err(_) => Err(instant_acme::Error::Other(
                    format!(
                        "no response from {uri} within {}s",
                        REQUEST_TIMEOUT.as_secs()
                    )
                    .into(),
                )),
            }
        })
    }
}

/// The client for the CA: trusting the certificates of `ca_file` only when it is given (a private
/// CA such as Pebble), the platform's roots otherwise.
///
/// # Errors
///
/// When the bundle cannot be read or holds no certificate, or the platform's roots cannot be
/// loaded.
pub(crate) fn new(ca_file: Option<&Path>) -> Result<Box<dyn HttpClient>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = HttpsConnectorBuilder::new();
    let builder = match ca_file {
        None => builder
            .with_provider_and_platform_verifier(provider)
            .context("cannot load the platform's root certificates to verify the ACME directory: install them (Debian: ca-certificates), or set tls.acme.directory_ca_file")?,
        Some(path) => {
            let pem = storage::read(path)?.with_context(|| {
                format!(
                    "tls.acme.directory_ca_file {} does not exist",
                    path.display()
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| {
                    format!("tls.acme.directory_ca_file {} is not PEM", path.display())
                })?;
                roots.add(cert).with_context(|| {
                    format!(
                        "tls.acme.directory_ca_file {} holds a certificate that cannot be a root",
                        path.display()
                    )
                })?;
            }
            if roots.is_empty() {
                bail!(
                    "tls.acme.directory_ca_file {} holds no PEM certificate",
                    path.display()
                );
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("ring's provider lacks TLS 1.2 and 1.3")?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(config)
        }
    };
    let connector = builder.https_only().enable_http1().enable_http2().build();
    Ok(Box::new(TimedClient(
        Client::builder(TokioExecutor::new()).build(connector),
    )))
}
