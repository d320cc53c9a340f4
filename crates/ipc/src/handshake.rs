//! The connection handshake (reference §2).
//!
//! The client talks first: `credentials [capability] 0x00`, where the credentials are
//! `user:password`, `user` alone or nothing, and the capability byte (normally 3 or 6) may be
//! missing. The server answers one byte, `min(capability, 3)`, or closes without a byte to refuse.

use crate::error::HandshakeError;

/// The highest capability qgate negotiates: compression, timestamps, timespans and GUIDs, with
/// messages up to 2 GB. The >2 GB formats (5 and 6) are never offered.
pub const SERVER_CAPABILITY: u8 = 3;

/// How long a handshake may be, terminator included, before it is refused.
///
/// kdb+ documents no limit. Long bearer tokens are real (signed-URL passwords run to about
/// 2 KiB), so this leaves room for 64 KiB of credentials while keeping a client that never sends a
/// NUL from growing a buffer without end.
pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// A parsed client handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The user name: the bytes before the first `:`, or all the credentials without one.
    pub user: Vec<u8>,
    /// The password: the bytes after the first `:`, `None` when there is no `:`.
    pub password: Option<Vec<u8>>,
    /// The capability byte the client sent, 0 when it sent none.
    pub capability: u8,
}

impl Handshake {
    /// The byte the server answers with to accept this client.
    pub fn reply_byte(&self) -> u8 {
        reply_byte(self.capability)
    }
}

impl std::fmt::Debug for Handshake {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("capability", &self.capability)
            .finish()
    }
}

/// The reply byte that accepts a client offering `capability`: `min(capability, 3)`.
pub fn reply_byte(capability: u8) -> u8 {
    capability.min(SERVER_CAPABILITY)
}

/// Parses a handshake from the bytes received so far.
///
/// Returns `Ok(None)` until the terminating NUL arrives, then the handshake and the number of
/// bytes it took (terminator included); anything after them is the client's first message.
///
/// # Errors
///
/// [`HandshakeError::TooLong`] when `max_len` bytes have arrived without a NUL.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Handshake, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(max_len)];
    let Some(nul) = memchr::memchr(0, window) else {
        return if buf.len() >= max_len {
            Err(HandshakeError::TooLong { limit: max_len })
        } else {
            Ok(None)
        };
    };
    let head = &buf[..nul];
    // A control character just before the NUL is the capability (aiokdb's rule: q, PyKX and the
    // others send 1..6); anything printable belongs to the credentials.
    let (credentials, capability) = match head.split_last() {
        Some((&cap, rest)) if cap < 0x20 => (rest, cap),
        _ => (head, 0),
    };
    let (user, password) = match memchr::memchr(b':', credentials) {
        Some(colon) => (
            credentials[..colon].to_vec(),
            Some(credentials[colon + 1..].to_vec()),
        ),
        None => (credentials.to_vec(), None),
    };
    Ok(Some((
        Handshake {
            user,
            password,
            capability,
        },
        nul + 1,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], user: &str, password: Option<&str>, capability: u8, reply: u8) {
        let (handshake, used) = parse(bytes, DEFAULT_MAX_HANDSHAKE_BYTES)
            .expect("valid handshake")
            .expect("complete handshake");
        assert_eq!(used, bytes.len());
        assert_eq!(handshake.user, user.as_bytes());
        assert_eq!(handshake.password.as_deref(), password.map(str::as_bytes));
        assert_eq!(handshake.capability, capability);
        assert_eq!(handshake.reply_byte(), reply);
    }

    #[test]
    fn every_form_of_reference_section_2() {
        // H1: user and password, capability 3.
        check(b"user:password\x03\0", "user", Some("password"), 3, 3);
        // H2: q 4.x with no credentials sends the OS user and capability 6.
        check(b"katrina\x06\0", "katrina", None, 6, 3);
        // H3: node-q with no user.
        check(b"anonymous\x03\0", "anonymous", None, 3, 3);
        // H4: aiokdb with no credentials.
        check(b"\x03\0", "", None, 3, 3);
        // H5: qPython's fallback, no capability byte.
        check(b"user:pass\0", "user", Some("pass"), 0, 0);
        // PyKX's default credentials are ":".
        check(b":\x06\0", "", Some(""), 6, 3);
        // Only the first colon splits.
        check(b"u:p:q\x01\0", "u", Some("p:q"), 1, 1);
        // A bare NUL.
        check(b"\0", "", None, 0, 0);
    }

    #[test]
    fn incomplete_until_nul() {
        assert_eq!(parse(b"user:pass\x03", 64), Ok(None));
        assert_eq!(parse(b"", 64), Ok(None));
    }

    #[test]
    fn leaves_what_follows() {
        let (_, used) = parse(b"u\x03\0\x01\x01", 64).unwrap().unwrap();
        assert_eq!(used, 3);
    }

    #[test]
    fn refuses_a_handshake_without_end() {
        assert_eq!(
            parse(&[b'a'; 64], 64),
            Err(HandshakeError::TooLong { limit: 64 })
        );
        assert_eq!(
            parse(&[b'a'; 100], 64),
            Err(HandshakeError::TooLong { limit: 64 })
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let (handshake, _) = parse(b"u:secret\x03\0", 64).unwrap().unwrap();
        assert!(!format!("{handshake:?}").contains("secret"));
    }
}
