//! The answers to challenges in flight, shared between the issuance that publishes them and the
//! server that gives them to the CA.
//!
//! ```text
//!   Acme::issue ── publish ──> Challenges <── tls_alpn(sni) ── server: ClientHello offers "acme-tls/1"
//!        │                         ^    <── http01(token) ─── server: GET /.well-known/acme-challenge/{token}
//!        └──── removed when the issuance ends, success or not
//! ```
//!
//! The server side needs three small pieces, all here: [`is_acme_tls_alpn`] to tell the CA's
//! validation handshake from a client's, [`challenge_config`] for the `ServerConfig` that answers
//! it, and [`http01_token`] to tell the HTTP-01 path.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 validation requests (RFC 8555 section 8.3); the token follows it.
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// Answers for challenges in flight, shared with the server that answers them.
///
/// Empty unless an issuance is validating: then it holds one entry per domain (TLS-ALPN-01) or
/// per token (HTTP-01), and the issuance removes them when it ends.
#[derive(Debug, Default)]
pub struct Challenges {
    /// TLS-ALPN-01 certificates by server name, lower case. A `std` lock: it is held for a map
    /// lookup or insert only, never across an await.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token. A `std` lock, as above.
    http01: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// TLS-ALPN-01: the certificate to present to a ClientHello that offers ALPN `acme-tls/1`
    /// for this server name, when an issuance is validating it.
    pub fn tls_alpn(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.tls_alpn.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&server_name.to_ascii_lowercase()).cloned()
    }

    /// HTTP-01: the key authorization to answer `GET /.well-known/acme-challenge/{token}` with
    /// (as `text/plain`, status 200), when an issuance is validating it.
    pub fn http01(&self, token: &str) -> Option<String> {
        let map = self.http01.read().unwrap_or_else(PoisonError::into_inner);
        map.get(token).cloned()
    }

    /// Whether no challenge is in flight.
    pub fn is_empty(&self) -> bool {
        self.tls_alpn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            && self
                .http01
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }
}

/// The answers one issuance published; dropping it removes them, so that they go away however the
/// issuance ends (an error, a timeout, a cancelled task).
pub(crate) struct Published<'a> {
    challenges: &'a Challenges,
    tls_alpn: Vec<String>,
    http01: Vec<String>,
}

impl<'a> Published<'a> {
    pub(crate) fn new(challenges: &'a Challenges) -> Self {
        Self {
            challenges,
            tls_alpn: Vec::new(),
            http01: Vec::new(),
        }
    }

    /// Publishes a TLS-ALPN-01 certificate for `domain`.
    pub(crate) fn tls_alpn(&mut self, domain: &str, key: Arc<CertifiedKey>) {
        let domain = domain.to_ascii_lowercase();
        self.challenges
            .tls_alpn
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.clone(), key);
        self.tls_alpn.push(domain);
    }

    /// Publishes an HTTP-01 key authorization for `token`.
    pub(crate) fn http01(&mut self, token: &str, key_authorization: String) {
        self.challenges
            .http01
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), key_authorization);
        self.http01.push(token.to_owned());
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        let mut map = self
            .challenges
            .tls_alpn
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for domain in &self.tls_alpn {
            map.remove(domain);
        }
        drop(map);
        let mut map = self
            .challenges
            .http01
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for token in &self.http01 {
            map.remove(token);
        }
    }
}

/// Whether a ClientHello offers ALPN `acme-tls/1`: a CA validating TLS-ALPN-01, which is to get
/// [`Challenges::tls_alpn`]'s certificate through [`challenge_config`] rather than the server's
/// own, and no application data (RFC 8737 section 3).
pub fn is_acme_tls_alpn(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|protocol| protocol == ACME_TLS_ALPN))
}

/// The `ServerConfig` that answers a TLS-ALPN-01 validation handshake with `key`: ALPN
/// `acme-tls/1` only, no client certificate, ring's provider. The server closes the connection
/// once the handshake is done.
pub fn challenge_config(key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            // Invariant: ring's default provider supports the default versions (TLS 1.2 and 1.3)
            // with the workspace's rustls features (`tls12` is on).
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

/// The token of an HTTP-01 request path, `/.well-known/acme-challenge/{token}`, or `None` for
/// any other path. A token is base64url (RFC 8555 section 8.3), so anything else is not one.
pub fn http01_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(HTTP01_PATH_PREFIX)?;
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    (!token.is_empty() && token.chars().all(base64url)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_when_the_issuance_ends() {
        let challenges = Challenges::default();
        let key = crate::certificate::tls_alpn_challenge("a.example", &[0; 32]).unwrap();
        {
            let mut published = Published::new(&challenges);
            published.tls_alpn("A.example", key);
            published.http01("tok", "tok.thumb".to_owned());
            assert!(challenges.tls_alpn("a.EXAMPLE").is_some());
            assert!(challenges.tls_alpn("b.example").is_none());
            assert_eq!(challenges.http01("tok").as_deref(), Some("tok.thumb"));
            assert_eq!(challenges.http01("other"), None);
            assert!(!challenges.is_empty());
        }
        assert!(challenges.is_empty());
        assert!(challenges.tls_alpn("a.example").is_none());
    }

    #[test]
    fn http01_paths() {
        let check = |path: &str, expect: Option<&str>| assert_eq!(http01_token(path), expect);
        check("/.well-known/acme-challenge/abc-_09", Some("abc-_09"));
        check("/.well-known/acme-challenge/", None);
        check("/.well-known/acme-challenge/a/b", None);
        check("/.well-known/acme-challenge/a?b", None);
        check("/other", None);
    }
}
