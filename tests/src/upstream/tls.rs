//! TLS for the test upstream: rustls with the ring provider, TLS 1.2 and 1.3, and client
//! certificates verified against a CA bundle when one is given (kdb+'s `SSL_VERIFY_CLIENT=YES`).

use std::{io, path::Path, sync::Arc};

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio_rustls::TlsAcceptor;

use crate::upstream::UpstreamTls;

/// The acceptor for `tls`'s certificate, key and client CA.
///
/// # Errors
///
/// When a file cannot be read or holds no certificate or key, when the key does not go with the
/// certificate, or when the client CA bundle holds no usable certificate.
pub(crate) fn acceptor(tls: &UpstreamTls) -> io::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&tls.cert_chain)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|error| {
        invalid(format!(
            "cannot read a private key from {}: {error}; it must be PEM (PKCS#8, PKCS#1 or SEC1)",
            tls.key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| invalid(format!("cannot configure TLS 1.2 and 1.3: {error}")))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(certificates(ca)?);
            if added == 0 {
                return Err(invalid(format!(
                    "{} holds no usable CA certificate ({ignored} could not be parsed)",
                    ca.display()
                )));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| {
                    invalid(format!(
                        "cannot verify client certificates with {}: {error}",
                        ca.display()
                    ))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| {
        invalid(format!(
            "the key in {} does not go with the certificate in {}: {error}",
            tls.key.display(),
            tls.cert_chain.display()
        ))
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate in a PEM file, in order; at least one.
fn certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| {
            invalid(format!(
                "cannot read certificates from {}: {error}",
                path.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(invalid(format!(
            "{} holds no certificate: it must hold PEM `CERTIFICATE` blocks",
            path.display()
        )));
    }
    Ok(certificates)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
