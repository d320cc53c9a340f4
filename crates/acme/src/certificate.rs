//! Certificates made and read here: the stored chain's facts, the placeholder that lets the server
//! start TLS before the first issuance, the TLS-ALPN-01 challenge certificate, and the key and CSR
//! of an order.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The subject common name of the placeholder certificate, by which it is told from an issued one.
pub(crate) const PLACEHOLDER_CN: &str = "qgate ACME placeholder";

/// How long the placeholder is valid: 90 days.
///
/// It stands in until the first issuance succeeds, which with a CA that cannot be reached may take
/// days of retries; clients that see it get a certificate error either way, so a longer life costs
/// nothing, and a short one would only add "expired" to the error a client reports.
const PLACEHOLDER_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// What a stored chain's leaf says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The DNS names of its subject alternative names, in the certificate's order.
    pub(crate) domains: Vec<String>,
    /// The issuer's distinguished name.
    pub(crate) issuer: String,
    /// The start of its validity.
    pub(crate) not_before: SystemTime,
    /// The end of its validity.
    pub(crate) not_after: SystemTime,
    /// Whether it is the self-signed placeholder rather than a CA's certificate.
    pub(crate) placeholder: bool,
    /// The DER of its subject public key info, to match against the private key.
    pub(crate) public_key: Vec<u8>,
}

impl Facts {
    /// Whether the certificate names every domain in `domains` (case-insensitively).
    pub(crate) fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|domain| {
            self.domains
                .iter()
                .any(|name| name.eq_ignore_ascii_case(domain))
        })
    }
}

/// Reads the leaf (the first certificate) of a PEM chain.
///
/// # Errors
///
/// When the text holds no certificate, or the first one is not X.509 that can be read.
pub(crate) fn facts(chain_pem: &[u8]) -> Result<Facts> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .context("no PEM certificate in it")?
        .context("its first PEM certificate cannot be read")?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf)
        .map_err(|error| anyhow::anyhow!("its first certificate is not valid X.509: {error}"))?;
    let mut domains = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|error| anyhow::anyhow!("its subject alternative names are invalid: {error}"))?
    {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(name) = name {
                domains.push((*name).to_owned());
            }
        }
    }
    let placeholder = cert.subject() == cert.issuer()
        && cert
            .subject()
            .iter_common_name()
            .any(|cn| cn.as_str() == Ok(PLACEHOLDER_CN));
    Ok(Facts {
        domains,
        issuer: cert.issuer().to_string(),
        not_before: system_time(cert.validity().not_before.timestamp()),
        not_after: system_time(cert.validity().not_after.timestamp()),
        placeholder,
        public_key: cert.public_key().raw.to_vec(),
    })
}

/// Unix seconds as a [`SystemTime`], clamped to the epoch (no certificate here predates 1970).
fn system_time(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Whether a PEM private key is the one whose public half `facts` holds.
///
/// # Errors
///
/// When the key cannot be read.
pub(crate) fn key_matches(facts: &Facts, key_pem: &[u8]) -> Result<bool> {
    let text = std::str::from_utf8(key_pem).context("the private key is not PEM text")?;
    let key = KeyPair::from_pem(text).context("the private key cannot be read")?;
    Ok(rcgen::PublicKeyData::subject_public_key_info(&key) == facts.public_key)
}

/// A new private key and a CSR for `domains`, both PEM and DER, for an order's finalization.
///
/// The key is ECDSA P-256, rcgen's default and what Let's Encrypt issues most: small, fast to
/// handshake, accepted by every client that speaks TLS 1.2.
///
/// # Errors
///
/// When a domain is not a name rcgen accepts, or key generation fails.
pub(crate) fn key_and_csr(domains: &[String]) -> Result<(String, Vec<u8>)> {
    let mut params = CertificateParams::new(domains.to_vec())
        .context("the domains cannot go into a certificate request")?;
    params.distinguished_name = DistinguishedName::new();
    let key = KeyPair::generate().context("cannot generate a private key")?;
    let csr = params
        .serialize_request(&key)
        .context("cannot sign the certificate request")?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A self-signed certificate and its key, both PEM, for `domains`: the stand-in the server loads
/// before the first issuance, so that it can start TLS and answer TLS-ALPN-01 on its own port.
///
/// # Errors
///
/// When a domain is not a name rcgen accepts, or key generation fails.
pub(crate) fn placeholder(domains: &[String]) -> Result<(String, String)> {
    let mut params = CertificateParams::new(domains.to_vec())
        .context("the domains cannot go into a certificate")?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, PLACEHOLDER_CN);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + PLACEHOLDER_VALIDITY;
    let key = KeyPair::generate().context("cannot generate a private key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the placeholder certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS-ALPN-01 answer for `domain` (RFC 8737 section 3): a self-signed certificate naming
/// only the domain, with the critical acmeIdentifier extension holding the SHA-256 digest of the
/// key authorization.
///
/// # Errors
///
/// When the domain is not a name rcgen accepts, or key generation fails.
pub(crate) fn tls_alpn_challenge(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>> {
    let mut params = CertificateParams::new(vec![domain.to_owned()])
        .context("the domain cannot go into a certificate")?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate().context("cannot generate a private key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the TLS-ALPN-01 certificate")?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|error| anyhow::anyhow!("rcgen's key is not DER rustls reads: {error}"))?;
    // `CertifiedKey::from_der` would check that the key matches by parsing the certificate with
    // webpki, which refuses the critical acmeIdentifier extension; the key is the one just signed
    // with, so loading it alone is enough.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .context("rustls cannot load the TLS-ALPN-01 key")?;
    let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
    Ok(Arc::new(certified))
}

/// Checks an issued chain before it replaces the stored one: its leaf names every domain, and
/// `key_pem` is its key.
///
/// # Errors
///
/// When the chain cannot be read, misses a domain, or belongs to another key.
pub(crate) fn check_issued(chain_pem: &[u8], key_pem: &[u8], domains: &[String]) -> Result<Facts> {
    let facts = facts(chain_pem).context("the CA's certificate chain cannot be read")?;
    if !facts.covers(domains) {
        bail!(
            "the CA's certificate names {:?}, not every domain of {domains:?}",
            facts.domains
        );
    }
    if !key_matches(&facts, key_pem)? {
        bail!("the CA's certificate is not for the key of the request");
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_placeholder_is_told_apart_and_matches_its_key() {
        let names = domains(&["a.example", "b.example"]);
        let (cert, key) = placeholder(&names).unwrap();
        let facts = facts(cert.as_bytes()).unwrap();
        assert!(facts.placeholder);
        assert_eq!(facts.domains, names);
        assert!(facts.covers(&domains(&["B.example"])));
        assert!(!facts.covers(&domains(&["c.example"])));
        assert!(key_matches(&facts, key.as_bytes()).unwrap());
        let (_, other) = placeholder(&names).unwrap();
        assert!(!key_matches(&facts, other.as_bytes()).unwrap());
        let lifetime = facts.not_after.duration_since(facts.not_before).unwrap();
        assert_eq!(lifetime, PLACEHOLDER_VALIDITY + Duration::from_secs(3600));
    }

    #[test]
    fn garbage_is_an_error() {
        for text in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(facts(text.as_bytes()).is_err(), "{text:?}");
        }
        let (cert, _) = placeholder(&domains(&["a.example"])).unwrap();
        let facts = facts(cert.as_bytes()).unwrap();
        assert!(key_matches(&facts, b"junk").is_err());
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let key = tls_alpn_challenge("a.example", &digest).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&key.cert[0]).unwrap();
        let acme = cert
            .extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(acme.critical);
        // An OCTET STRING of 32 bytes: tag, length, digest.
        assert_eq!(acme.value, [&[0x04, 32][..], &digest].concat());
    }

    #[test]
    fn an_issued_chain_is_checked() {
        let names = domains(&["a.example"]);
        let (cert, key) = placeholder(&names).unwrap();
        check_issued(cert.as_bytes(), key.as_bytes(), &names).unwrap();
        let error =
            check_issued(cert.as_bytes(), key.as_bytes(), &domains(&["b.example"])).unwrap_err();
        assert!(error.to_string().contains("not every domain"), "{error}");
        let (_, other) = placeholder(&names).unwrap();
        let error = check_issued(cert.as_bytes(), other.as_bytes(), &names).unwrap_err();
        assert!(error.to_string().contains("not for the key"), "{error}");
        let (_, csr) = key_and_csr(&names).unwrap();
        assert!(!csr.is_empty());
    }
}
