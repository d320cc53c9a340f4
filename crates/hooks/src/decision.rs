//! A record of each decision a [`Hooks`](crate::Hooks) implementation makes, for a decision log:
//! who asked what, what was decided, by which plugin and version, why, and how long it took.
//!
//! The plugin host fills a [`DecisionRecord`] after each auth, open, sync and async chain and hands
//! it to a [`DecisionSink`], which must not block: the record is plain owned data, so a sink can
//! queue it for a thread of its own and format and write it there.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use qgate_ipc::Endian;

use crate::Session;

/// The event a decision was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionEvent {
    /// A login (`.z.pw`).
    Auth,
    /// A connection opened (`.z.po`).
    Open,
    /// A sync message (`.z.pg`).
    Sync,
    /// An async message (`.z.ps`).
    Async,
    /// An HTTP request on the q port (`.z.ph`, `.z.pp`): its head is the method and the path,
    /// its text the q text it carries.
    Http,
    /// A WebSocket message (`.z.ws`): its text, when it is a text message.
    WsMessage,
}

impl DecisionEvent {
    /// The event's name in a decision log: `auth`, `open`, `sync`, `async`, `http`, `ws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Open => "open",
            Self::Sync => "sync",
            Self::Async => "async",
            Self::Http => "http",
            Self::WsMessage => "ws",
        }
    }
}

/// What was decided, in a decision log's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// A login accepted by a plugin.
    Allowed,
    /// Refused: a login, a connection, or a message.
    Denied,
    /// Nobody decided: the message goes on (to the upstream, or the error that nothing answered),
    /// the login to the password file's verdict, the connection stays.
    Passed,
    /// A plugin answered a sync message.
    Replied,
    /// A plugin sent the message to a named upstream.
    Routed,
}

impl DecisionKind {
    /// The decision's name in a decision log: `allowed`, `denied`, `passed`, `replied`, `routed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Passed => "passed",
            Self::Replied => "replied",
            Self::Routed => "routed",
        }
    }
}

/// A message's body as it arrived (uncompressed), for a record that can be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedBytes {
    /// The body: one encoded value.
    pub body: Vec<u8>,
    /// Its byte order.
    pub endian: Endian,
}

/// One decision. Never holds a password.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// When the chain decided.
    pub time: SystemTime,
    /// Who asked: the session as the chain saw it.
    pub session: Session,
    /// The event.
    pub event: DecisionEvent,
    /// A message's call head (`` (`fn;...) `` or `("fn";...)`), if it has one.
    pub head: Option<Arc<str>>,
    /// A free-text message's text, when the sink wants it (cut to what the host keeps of it).
    pub text: Option<Arc<str>>,
    /// A message's size in bytes (uncompressed body); 0 for auth and open.
    pub size: u64,
    /// A message's bytes, when the sink wants them and they are within its cap.
    pub bytes: Option<RecordedBytes>,
    /// The decision.
    pub decision: DecisionKind,
    /// The plugin that decided; `None` when none did.
    pub decided_by: Option<Arc<str>>,
    /// That plugin's version (the first 12 hex digits of its digest).
    pub version: Option<Arc<str>>,
    /// Why: a deny's message, a closed connection's reason, a route's upstream.
    pub reason: Option<String>,
    /// How long the chain took to decide.
    pub latency: Duration,
    /// For a shadow plugin's record: what the live chain decided, with which the shadow
    /// plugin's decision (`decision`, `decided_by`, `version`, `reason`) disagrees.
    pub live: Option<DecisionKind>,
}

impl DecisionRecord {
    /// A record of `decision` on `event` for `session`, decided now, with nothing else known.
    pub fn new(session: Session, event: DecisionEvent, decision: DecisionKind) -> Self {
        Self {
            time: SystemTime::now(),
            session,
            event,
            head: None,
            text: None,
            size: 0,
            bytes: None,
            decision,
            decided_by: None,
            version: None,
            reason: None,
            latency: Duration::ZERO,
            live: None,
        }
    }
}

/// Where decision records go. [`DecisionSink::record`] is called on the connection's thread,
/// right after the decision: it must return at once, dropping (and counting) a record it has no
/// room for rather than waiting.
pub trait DecisionSink: std::fmt::Debug + Send + Sync + 'static {
    /// Whether records carry a free-text message's text.
    fn include_text(&self) -> bool;
    /// The largest message whose bytes records carry; 0 for none.
    fn include_bytes(&self) -> usize;
    /// Takes one record.
    fn record(&self, record: DecisionRecord);
}
