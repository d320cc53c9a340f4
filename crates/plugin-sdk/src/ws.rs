//! WebSocket on the q port (`.z.wo`, `.z.ws`, `.z.wc`): what
//! [`Plugin::on_ws_message`](crate::Plugin::on_ws_message) is given ([`WsCtx`]) and the verdicts
//! the WebSocket handlers return ([`WsOpenVerdict`], [`WsVerdict`], built with [`reply_text`],
//! [`reply_binary`], [`deny`], [`close`] and [`deny_open`]).
//!
//! A WebSocket opens with an HTTP upgrade that logged in as any HTTP request does:
//! [`Plugin::on_ws_open`](crate::Plugin::on_ws_open) sees it as an [`HttpCtx`](crate::HttpCtx)
//! (no body). Each message then reaches `on_ws_message`, and the close
//! [`Plugin::on_ws_close`](crate::Plugin::on_ws_close).

use crate::{
    Session,
    bindings::qgate::plugin::types::{HttpDeny, WsClose},
};

pub use crate::bindings::qgate::plugin::types::{WsMessage, WsOpenVerdict, WsVerdict};

/// What [`Plugin::on_ws_message`](crate::Plugin::on_ws_message) is given: the session and one
/// message, whole.
#[derive(Debug)]
pub struct WsCtx {
    session: Session,
    message: WsMessage,
}

impl WsCtx {
    /// A context as the host would pass it.
    pub fn new(session: Session, message: WsMessage) -> Self {
        Self { session, message }
    }

    /// A context over a text message; for tests.
    pub fn text_message(session: Session, text: &str) -> Self {
        Self::new(session, text_message(text))
    }

    /// A context over a binary message; for tests.
    pub fn binary_message(session: Session, data: &[u8]) -> Self {
        Self::new(session, binary_message(data))
    }

    /// The connection the message came on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The user (`.z.u`), as the upgrade's login named it.
    pub fn user(&self) -> &str {
        &self.session.user
    }

    /// Whether it came in a text frame.
    pub fn is_text(&self) -> bool {
        self.message.text
    }

    /// The payload.
    pub fn data(&self) -> &[u8] {
        &self.message.data
    }

    /// The payload of a text frame; `None` for a binary frame (or bytes that are not UTF-8).
    pub fn text(&self) -> Option<&str> {
        self.message
            .text
            .then(|| std::str::from_utf8(&self.message.data).ok())
            .flatten()
    }

    /// The message itself.
    pub fn message(&self) -> &WsMessage {
        &self.message
    }
}

/// A text message.
pub fn text_message(text: &str) -> WsMessage {
    WsMessage {
        text: true,
        data: text.as_bytes().to_vec(),
    }
}

/// A binary message.
pub fn binary_message(data: &[u8]) -> WsMessage {
    WsMessage {
        text: false,
        data: data.to_vec(),
    }
}

/// Answers with one text message.
pub fn reply_text(text: &str) -> WsVerdict {
    WsVerdict::Reply(vec![text_message(text)])
}

/// Answers with one binary message.
pub fn reply_binary(data: &[u8]) -> WsVerdict {
    WsVerdict::Reply(vec![binary_message(data)])
}

/// Drops the message (nothing is sent back; the host logs `text`).
pub fn deny(text: impl Into<String>) -> WsVerdict {
    WsVerdict::Deny(text.into())
}

/// Closes the WebSocket with `code` (1000 normal, 1008 policy violation, 4000 to 4999 the
/// application's own) and `reason`.
pub fn close(code: u16, reason: impl Into<String>) -> WsVerdict {
    WsVerdict::Close(WsClose {
        code,
        reason: reason.into(),
    })
}

/// Refuses a WebSocket upgrade with `status` (a 4xx or 5xx) and `text`.
pub fn deny_open(status: u16, text: impl Into<String>) -> WsOpenVerdict {
    WsOpenVerdict::Deny(HttpDeny {
        status,
        text: text.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::session;

    #[test]
    fn a_message_is_text_or_bytes() {
        let text = WsCtx::text_message(session(1, "u"), "1 2 3");
        assert!(text.is_text());
        assert_eq!(text.text(), Some("1 2 3"));
        assert_eq!(text.user(), "u");
        let binary = WsCtx::binary_message(session(1, "u"), b"\x00\x01");
        assert_eq!(binary.text(), None);
        assert_eq!(binary.data(), b"\x00\x01");
        assert_eq!(reply_text("x"), WsVerdict::Reply(vec![text_message("x")]));
        assert!(matches!(
            close(1008, "no"),
            WsVerdict::Close(WsClose { code: 1008, .. })
        ));
    }
}
