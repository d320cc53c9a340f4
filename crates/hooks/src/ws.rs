//! WebSocket on the q port, as the hooks see it: a channel opened by an HTTP upgrade that logged
//! in, its messages ([`WsMessage`]) and what the hooks make of them ([`WsOpenVerdict`],
//! [`WsVerdict`]).
//!
//! A kdb+ port upgrades a `GET` with `Upgrade: websocket` and then runs `.z.wo` on the open,
//! `.z.ws` on each message and `.z.wc` on the close.
//! The server checks the upgrade's login as any HTTP request's, then asks
//! [`crate::Hooks::on_ws_open`]; it asks [`crate::Hooks::on_ws_message`] for each message and
//! tells [`crate::Hooks::on_ws_close`] when the channel ends, whichever side closed it.
//! What every hook passes goes to the backend's side of the channel ([`WsUpstream`], opened by
//! [`crate::Backend::websocket`]), which sends messages of its own back at any time, as an
//! upstream's `neg[.z.w]` does.

use std::fmt;

use tokio::sync::mpsc;

/// A WebSocket message: a text frame or a binary frame, whole.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsMessage {
    /// A text frame (UTF-8) when true, a binary frame otherwise.
    pub text: bool,
    /// The payload.
    pub data: Vec<u8>,
}

impl WsMessage {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: true,
            data: text.into().into_bytes(),
        }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Vec<u8>>) -> Self {
        Self {
            text: false,
            data: data.into(),
        }
    }
}

impl fmt::Debug for WsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsMessage")
            .field("text", &self.text)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// What the hooks make of a WebSocket upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsOpenVerdict {
    /// Upgrade the connection.
    Accept,
    /// Refuse the upgrade with this HTTP status (a 4xx or 5xx; anything else is sent as 403) and
    /// text.
    Deny {
        /// The status code.
        status: u16,
        /// Why, sent as the body.
        text: String,
    },
}

/// What the hooks make of a WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsVerdict {
    /// No opinion: the next hook, then the backend, decide.
    Pass,
    /// Answer with these messages, in order, ending the chain.
    Reply(Vec<WsMessage>),
    /// Drop the message: nothing is sent back and the channel stays open, as q drops an async
    /// message whose handler signals. The server logs the text.
    Deny(String),
    /// Close the channel with this close code and reason.
    Close {
        /// The close code (RFC 6455, 7.4): 1000 normal, 1008 policy violation, ...
        code: u16,
        /// The reason, sent in the close frame (at most 123 bytes are sent).
        reason: String,
    },
}

/// The backend's side of one WebSocket channel: messages go to it through `to` and come from it
/// through `from`, each side at any time.
///
/// The backend closes its side by dropping its sender (`from` then yields `None`); the server
/// closes the backend's side by dropping `to`.
#[derive(Debug)]
pub struct WsUpstream {
    /// Messages for the backend, in the order the client sent them.
    pub to: mpsc::Sender<WsMessage>,
    /// Messages from the backend, its replies and its pushes alike, in the order it sent them.
    pub from: mpsc::Receiver<WsMessage>,
    /// The service it belongs to, for logs.
    pub service: String,
}
