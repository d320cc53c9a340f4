//! qgate's config file: the TOML schema, loading it, and errors that name the bad key.
//!
//! This is the only crate that knows the file's format. It turns text into a [`Config`] of plain,
//! already-validated values; the binary turns a [`Config`] into the server's own options, so the
//! server never sees TOML and a change to the format touches only this crate and the binary.
//!
//! ```text
//!   config.toml ──> toml parser ──> serde (deny_unknown_fields, validated newtypes) ──> Config
//!                        │                         │
//!                        └──── ConfigError { file, key: "limits.idle_timeout", line, column }
//! ```
//!
//! Every table and every key is optional: what is left out takes its default, and an empty file
//! is the built-in defaults. Unknown keys are errors, so a typo never silently means "default".
//! The reference `config.toml` at the repository root lists every key with its default.
//!
//! ```
//! let config = qgate_config::Config::from_toml_str(
//!     "[limits]\nidle_timeout = \"5m\"\nmax_message_bytes = \"16MiB\"\n",
//! )?;
//! assert_eq!(config.limits.max_message_bytes.get(), 16 << 20);
//! assert_eq!(
//!     config.limits.idle_timeout.get(),
//!     Some(std::time::Duration::from_secs(300))
//! );
//! # Ok::<(), qgate_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
mod tls;
mod upstream;
mod value;

// The public surface.
pub use crate::{
    // The schema: one struct per table.
    config::{
        Admin, Auth, Config, ConfigFile, DecisionLog, Http, Limits, Lock, Log, LogFormat, Metrics,
        Plugin, PluginMode, Plugins, Server,
    },
    // What can go wrong, with the key's path and position.
    error::ConfigError,
    // `[tls]`, its `[tls.acme]`, and kdb+'s environment variables resolved into it.
    tls::{
        Acme, AcmeChallenge, ClientAuth, ResolvedClientAuth, ResolvedTls, Tls, TlsMode, UserFrom,
    },
    // `[[upstream]]`: the kdb+ services of gateway mode.
    upstream::{CredentialsMode, Password, Upstream, UpstreamMode, UpstreamTls, Upstreams},
    // Validated values, each parsed from its TOML form.
    value::{ByteSize, Count, HumanDuration, Listen, Sha256, Timeout, TimeoutOrOff},
};
