//! Certificates from an ACME CA (Let's Encrypt, or a private one such as Pebble) for qgate's TLS,
//! without certbot: the account, orders, the answers to TLS-ALPN-01 and HTTP-01 challenges,
//! renewal before expiry with jitter and backoff, and a storage directory whose permissions are
//! checked.
//!
//! The protocol itself is instant-acme's; this crate decides what to ask for, when, and where the
//! results go. It knows nothing of the server: the server answers the CA's validation requests
//! from the shared [`Challenges`] (a TLS handshake offering ALPN `acme-tls/1`, or an HTTP GET of
//! `/.well-known/acme-challenge/{token}`), and loads the files [`Acme::cert_file`] and
//! [`Acme::key_file`], reloading them when [`Acme::run`] says a new certificate is in place.
//!
//! ```text
//!   binary ── AcmeOptions ──> Acme::open ── prepare (placeholder on first start) ── run ─┐
//!                               │                                                        │
//!                               └─ Arc<Challenges> ─> server: tls_alpn(sni) / http01(token)
//!                                                                                        │
//!   server's TLS <── reload ── renewed() <── cert.pem + key.pem written atomically <─────┘
//! ```
//!
//! [`status`] reads the storage directory alone, for `qgate acme status`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod acme;
mod certificate;
mod challenges;
mod client;
mod options;
mod schedule;
mod status;
mod storage;

// The public surface.
pub use crate::{
    // The certificate manager: open, prepare, issue, run.
    acme::{Acme, ISSUE_TIMEOUT},
    // What the server answers the CA with, and the pieces it needs to do so.
    challenges::{
        ACME_TLS_ALPN, Challenges, HTTP01_PATH_PREFIX, challenge_config, http01_token,
        is_acme_tls_alpn,
    },
    // The options, from `[tls.acme]`.
    options::{
        AcmeOptions, ChallengeKind, DEFAULT_RENEW_BEFORE, LETS_ENCRYPT_PRODUCTION,
        LETS_ENCRYPT_STAGING,
    },
    // `qgate acme status`.
    status::{CertificateStatus, LastError, status},
    // The names of the files in the storage directory that the server loads.
    storage::{CERT_FILE, KEY_FILE},
};
