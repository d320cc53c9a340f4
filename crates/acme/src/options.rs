//! [`AcmeOptions`]: what the binary hands this crate from `[tls.acme]`.

use std::{path::PathBuf, time::Duration};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Let's Encrypt's staging directory: the same protocol with much higher rate limits and
/// certificates that no client trusts, for trying a setup out.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How long before expiry renewal starts, by default: 30 days.
///
/// Let's Encrypt's certificates live 90 days and it suggests renewing with a third of that left;
/// 30 days leaves a month of daily-or-better retries if the CA or the challenge path is broken.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Certificates from an ACME CA: for which names, from which CA, kept where, proven how.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcmeOptions {
    /// The DNS names of the certificate, the first one its subject's; at least one.
    pub domains: Vec<String>,
    /// The account's contact address, for the CA's expiry notices; `None` registers without one.
    pub email: Option<String>,
    /// The CA's directory URL ([`LETS_ENCRYPT_PRODUCTION`] by default).
    pub directory: String,
    /// A PEM bundle of the CAs that the directory's own HTTPS certificate chains to, for a private
    /// CA such as Pebble; `None` trusts the platform's roots.
    pub directory_ca_file: Option<PathBuf>,
    /// The directory that holds the account, the certificate and its key (mode 0700).
    pub storage: PathBuf,
    /// How the CA is to check that the names are ours.
    pub challenge: ChallengeKind,
    /// How long before expiry renewal starts ([`DEFAULT_RENEW_BEFORE`] by default).
    pub renew_before: Duration,
}

impl AcmeOptions {
    /// Options for `domains` kept in `storage`, with the defaults: Let's Encrypt production, no
    /// contact, TLS-ALPN-01, renewal 30 days ahead.
    pub fn new(domains: Vec<String>, storage: PathBuf) -> Self {
        Self {
            domains,
            email: None,
            directory: LETS_ENCRYPT_PRODUCTION.to_owned(),
            directory_ca_file: None,
            storage,
            challenge: ChallengeKind::default(),
            renew_before: DEFAULT_RENEW_BEFORE,
        }
    }
}

/// How the CA checks that the names are ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChallengeKind {
    /// HTTP-01 (RFC 8555 section 8.3): the CA fetches
    /// `http://DOMAIN/.well-known/acme-challenge/TOKEN` on port 80, which must reach qgate's
    /// HTTP path.
    Http01,
    /// TLS-ALPN-01 (RFC 8737), the default: the CA opens TLS to port 443 of the domain with ALPN
    /// `acme-tls/1`, answered on the q port itself when it is (or is forwarded from) 443, so no
    /// other port is needed.
    #[default]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name the CA and the config use: `"http-01"` or `"tls-alpn-01"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}
