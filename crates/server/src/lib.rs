//! qgate's network side: it owns the sockets and speaks the kdb+ IPC protocol to q clients, and at
//! each point where a q process would call a `.z` handler it asks a [`qgate_hooks::Hooks`].
//!
//! [`Server::new`] loads what the options name and [`Server::serve`] runs it; [`run`] is both.
//! The files follow the data:
//!
//! ```text
//!   listener   Server: loading, the accept loop, TLS sniffing, shutdown   one task a connection ─┐
//!   admission  handshake slots: in all, per address, random early drop                          │
//!   handler    handshake → identify → authenticate → slots → capability byte → on_open       ◄───┘
//!              → message loop (on_sync / on_async, one at a time) → on_close
//!   connection bytes ↔ handshake and frames over the stream, limits checked before buffering
//!   http       HTTP on the q port (hyper): Basic logins, on_http, the backend, ACME's HTTP-01
//!   ws         WebSocket on the q port (tokio-tungstenite, after hyper's upgrade): on_ws_*
//!   budget     the memory budget that large messages and replies are charged to
//!   buffers    large message buffers kept a few seconds for the next large message
//!   throttle   failed logins and the growing waits they cost (brute-force protection)
//!   password   password files (-U / -u), reloaded in the background when they change
//!   live       the limits, login backoff and password file a config reload changes
//!   logging    client text escaped for the log, repeated events summarised
//!   context    the answers to PyKX's context queries
//!   registry   handles (.z.w) and per-user connection counts
//!   shutdown   stop accepting, drain within the grace period, cut the rest
//!   tls        first-byte sniffing, the TLS handshake, certificate reload, client identity
//!   stamp      what tells a watched file has changed
//! ```
//!
//! It knows nothing of WebAssembly and reads no configuration: the binary turns its config into
//! [`ServerOptions`].

#![warn(missing_docs)]

mod admission;
mod budget;
mod buffers;
mod connection;
mod context;
mod handler;
mod http;
mod listener;
mod live;
mod logging;
mod options;
mod outbound;
mod password;
mod registry;
mod shutdown;
mod stamp;
mod threads;
mod throttle;
mod tls;
mod ws;

/// The answers to PyKX's context queries (sent right after it connects), as qgate gives them before
/// any hook sees them; public for test doubles that stand in for kdb+ (the test upstream in
/// `tests/`), so that they answer PyKX exactly as qgate does.
pub use crate::context::answer as pykx_context_answer;
pub use crate::{
    budget::{BudgetExhausted, Charge, MemoryBudget},
    listener::{Server, run},
    live::{Prepared, ServerSettings},
    logging::ClientText,
    options::{
        ChallengeAnswers, ClientAuth, HttpOptions, LoginBackoff, PasswordFile, ServerLimits,
        ServerOptions, TlsMode, TlsOptions, UserFrom,
    },
};
