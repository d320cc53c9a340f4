//! qgate's network side: it owns the sockets and speaks the kdb+ IPC protocol to q clients, and at
//! each point where a q process would call a `.z` handler it asks a [`qgate_hooks::Hooks`].
//!
//! [`run`] is the only entry point. The files follow the data:
//!
//! ```text
//!   listener   accept loop, connection limit, run()            one task per connection ──┐
//!   handler    handshake → password file → on_auth → capability byte → on_open           │
//!              → message loop (on_sync / on_async, one at a time) → on_close         ◄───┘
//!   connection bytes ↔ handshake and frames over the stream, limits checked before buffering
//!   buffers    large message buffers kept a few seconds for the next large message
//!   password   password files (-U / -u), reloaded when they change
//!   context    the answers to PyKX's context queries
//!   registry   handles (.z.w) and per-user connection counts
//!   shutdown   stop accepting, drain within the grace period, cut the rest
//!   tls        first-byte sniffing, the TLS handshake, certificate reload, client identity
//! ```
//!
//! It knows nothing of WebAssembly and reads no configuration: the binary turns its config into
//! [`ServerOptions`].

#![warn(missing_docs)]

mod buffers;
mod connection;
mod context;
mod handler;
mod listener;
mod options;
mod password;
mod registry;
mod shutdown;
mod tls;

/// The answers of a q process with nothing loaded to PyKX's context queries, which the server
/// gives before any hook sees them; public for test doubles that stand in for kdb+ (the test
/// upstream in `tests/`), so that they answer PyKX exactly as qgate does.
pub use crate::context::answer as pykx_context_answer;
pub use crate::{
    listener::{run, run_with_backend},
    options::{
        ClientAuth, PasswordFile, ServerLimits, ServerOptions, TlsMode, TlsOptions, UserFrom,
    },
};
