//! Why a gateway cannot start.

/// A gateway configuration that cannot work, found before anything is connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Two services have the same name.
    #[error("two upstreams are named {0:?}; each needs a name of its own")]
    DuplicateName(String),
    /// A setting of a service cannot work.
    #[error("upstream {upstream}: {message}")]
    Invalid {
        /// The service.
        upstream: String,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// A service's TLS files cannot be loaded.
    #[error("upstream {upstream}: TLS: {message}")]
    Tls {
        /// The service.
        upstream: String,
        /// What is wrong with which file.
        message: String,
    },
}
