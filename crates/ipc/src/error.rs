//! Typed errors, each with the behaviour it has on the wire.
//!
//! Every stage has its own enum, and the enum says whose fault its errors are ([`Fault`]): the
//! peer's bytes (a handshake, a header, a body, a compressed stream) or the caller's value (an
//! encode).
//! Each maps to what a server does about it, through one impl per stage: a peer's error to a
//! [`Close`] (`From`, the counterpart of rustls's `impl From<CertificateError> for
//! AlertDescription`), a caller's to the q error that answers the request
//! ([`EncodeError::q_error`]); [`WireAction`] is either, for [`Error`] as a whole.
//! A server takes its closes from here rather than deciding them by itself.
//!
//! ```text
//!   the peer's    HandshakeError  ──► Close::Silently            (the client reports 'access)
//!                 FrameError      ──► Close::BadMessage | Close::OverLimit("max_message_bytes")
//!                 DecodeError     ──► Close::BadMessage | Close::OverLimit("max_message_bytes")
//!                 DecompressError ──► Close::BadMessage | Close::OverLimit("max_message_bytes")
//!                                                       | Close::OverLimit("max_expansion")
//!   the caller's  EncodeError     ──► a q error reply: "type" | "limit"
//! ```

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The caller's: a value given to the encoder cannot be sent. The peer did nothing wrong and
    /// is told so with a q error.
    Local,
    /// The peer's: it sent bytes that are not q IPC, or more than a limit allows.
    Peer,
}

/// How a server closes a connection over the peer's error: what every error of the peer's
/// bytes calls for, since after bytes that are not q IPC (or a message too large to take) the
/// stream cannot be trusted to hold frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Without writing a byte: a failed handshake, which the client reports as `'access`.
    Silently,
    /// As q does for a message its validator refuses: q logs `'badmsg` and runs `.z.bm` before
    /// closing the handle.
    BadMessage,
    /// Over a limit, named as the field of [`crate::Limits`] it breaks: a well-formed message too
    /// large to take, not garbage, so the log can tell a big insert from an attack.
    OverLimit(&'static str),
}

/// What a server does on the wire when an error happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireAction {
    /// The peer's fault: close the connection.
    Close(Close),
    /// The caller's fault: answer the sync request with this q error (without the leading `'`)
    /// and keep serving.
    Reply(&'static str),
}

/// Any error of the codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer's handshake is not acceptable.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer sent a bad frame header.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a body that is not a well-formed q value.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent a compressed body that does not decompress.
    #[error("decompress: {0}")]
    Decompress(#[from] DecompressError),
    /// A value given to the encoder cannot be sent.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}

impl Error {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Handshake(_) => HandshakeError::FAULT,
            Self::Frame(_) => FrameError::FAULT,
            Self::Decode(_) => DecodeError::FAULT,
            Self::Decompress(_) => DecompressError::FAULT,
            Self::Encode(_) => EncodeError::FAULT,
        }
    }

    /// What a server does about this error: the stage's own mapping.
    pub fn wire_action(&self) -> WireAction {
        WireAction::from(self)
    }
}

impl From<&Error> for WireAction {
    fn from(error: &Error) -> Self {
        match error {
            Error::Handshake(e) => Self::Close(e.into()),
            Error::Frame(e) => Self::Close(e.into()),
            Error::Decode(e) => Self::Close(e.into()),
            Error::Decompress(e) => Self::Close(e.into()),
            Error::Encode(e) => Self::Reply(e.q_error()),
        }
    }
}

impl From<&HandshakeError> for Close {
    fn from(error: &HandshakeError) -> Self {
        match error {
            // q closes a handshake it does not accept without a byte; every client reports that
            // as 'access, and a reply byte would only tell a scanner it found a q port.
            HandshakeError::TooLong { .. } => Self::Silently,
        }
    }
}

impl From<&FrameError> for Close {
    fn from(error: &FrameError) -> Self {
        match error {
            // A length over the limit is a q message, too large to take.
            FrameError::TooLarge { .. } => Self::OverLimit("max_message_bytes"),
            // Bytes that no q process sends: the length that would skip the bad frame is itself
            // suspect, so nothing after it can be trusted.
            FrameError::BadEndianness(_)
            | FrameError::BadMessageType(_)
            | FrameError::BadCompressionFlag(_)
            | FrameError::LargeMessageFormat(_)
            | FrameError::TooShort(_) => Self::BadMessage,
        }
    }
}

impl From<&DecodeError> for Close {
    fn from(error: &DecodeError) -> Self {
        match error {
            // A body kdb+'s validator refuses: a peer that sends one is not a q client.
            DecodeError::Truncated { .. }
            | DecodeError::UnknownType { .. }
            | DecodeError::UnsupportedType { .. }
            | DecodeError::BadAttribute { .. }
            | DecodeError::NegativeCount { .. }
            | DecodeError::CountTooLarge { .. }
            | DecodeError::UnterminatedSymbol { .. }
            | DecodeError::TooDeep { .. }
            | DecodeError::Malformed { .. }
            | DecodeError::TrailingBytes { .. } => Self::BadMessage,
            // The decoder's memory budget: the value the peer sent would take more memory than a
            // message may, which is the message limit in another form.
            DecodeError::TooLarge { .. } => Self::OverLimit("max_message_bytes"),
        }
    }
}

impl From<&DecompressError> for Close {
    fn from(error: &DecompressError) -> Self {
        match error {
            // A claimed size over the message limit: a message too large to take, as for a header.
            DecompressError::TooLarge { .. } => Self::OverLimit("max_message_bytes"),
            // Compression that expands further than a real client's data would: the limit that
            // keeps a small frame from becoming a large allocation.
            DecompressError::TooExpanded { .. } => Self::OverLimit("max_expansion"),
            // A stream that does not decode to its own claimed size is not q's compression.
            DecompressError::TooShort(_)
            | DecompressError::SizeTooSmall(_)
            | DecompressError::Truncated(_)
            | DecompressError::BadReference { .. }
            | DecompressError::Overflow { .. } => Self::BadMessage,
        }
    }
}

/// A handshake that cannot be accepted. The peer's fault; the socket is closed without a byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No NUL arrived within the handshake limit.
    #[error("no NUL terminator within {limit} bytes")]
    TooLong {
        /// The limit in bytes, terminator included.
        limit: usize,
    },
}

impl HandshakeError {
    /// Whose fault these errors are: the peer's, always.
    pub const FAULT: Fault = Fault::Peer;
}

/// A frame header that cannot be accepted. The peer's fault; the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Byte 0 is neither 0 (big-endian) nor 1 (little-endian).
    #[error("bad endianness byte {0:#04x}")]
    BadEndianness(u8),
    /// Byte 1 is not 0 (async), 1 (sync) or 2 (response).
    #[error("bad message type {0}")]
    BadMessageType(u8),
    /// Byte 2 is neither 0 (plain) nor 1 (compressed).
    #[error("bad compression flag {0}")]
    BadCompressionFlag(u8),
    /// Byte 3 is not 0: the peer is using the >2 GB format (capability 5 and 6), which qgate never
    /// negotiates.
    #[error("reserved header byte is {0}, not 0: large-message format is not negotiated")]
    LargeMessageFormat(u8),
    /// The length field is shorter than a header and one type byte.
    #[error("length {0} is shorter than the 9-byte minimum")]
    TooShort(u32),
    /// The length field is above the configured limit; nothing was allocated for it.
    #[error("length {len} is above the limit of {limit} bytes")]
    TooLarge {
        /// The length the peer claims.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
}

impl FrameError {
    /// Whose fault these errors are: the peer's, always.
    pub const FAULT: Fault = Fault::Peer;
}

/// A body that is not a well-formed q value. The peer's fault; the connection is closed.
///
/// Every variant carries the offset in the body where decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ends in the middle of a value.
    #[error("truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Where the missing bytes would start.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A type byte qgate does not know (3, 20 to 97 except 98 and 99, 113 to 126, and so on).
    #[error("unknown type {type_code} at offset {offset}")]
    UnknownType {
        /// The type byte.
        type_code: i8,
        /// Where it was.
        offset: usize,
    },
    /// A type that exists in q but cannot cross IPC: enumerations, mapped lists, foreign objects.
    #[error("type {type_code} at offset {offset} cannot be sent over IPC")]
    UnsupportedType {
        /// The type byte.
        type_code: i8,
        /// Where it was.
        offset: usize,
    },
    /// An attribute byte other than 0 to 4.
    #[error("bad attribute {attr} at offset {offset}")]
    BadAttribute {
        /// The attribute byte.
        attr: u8,
        /// Where it was.
        offset: usize,
    },
    /// A negative vector or list count.
    #[error("negative count {count} at offset {offset}")]
    NegativeCount {
        /// The count.
        count: i32,
        /// Where it was.
        offset: usize,
    },
    /// A count that the remaining bytes cannot hold: checked before anything is allocated.
    #[error("count {count} at offset {offset} needs more bytes than the {remaining} left")]
    CountTooLarge {
        /// The claimed count.
        count: usize,
        /// Where it was.
        offset: usize,
        /// The bytes left in the body.
        remaining: usize,
    },
    /// A symbol or context name with no NUL before the end of the body.
    #[error("unterminated symbol at offset {offset}")]
    UnterminatedSymbol {
        /// Where the symbol started.
        offset: usize,
    },
    /// Values nested deeper than [`crate::MAX_DEPTH`].
    #[error("values nested deeper than {limit} at offset {offset}")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
        /// Where the limit was passed.
        offset: usize,
    },
    /// Decoding would need more memory than the configured limit allows.
    #[error("decoded value would need more than {limit} bytes of memory")]
    TooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A structure q never builds: a table whose inside is not a dictionary, for example.
    #[error("malformed value at offset {offset}: {what}")]
    Malformed {
        /// Where the structure started.
        offset: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// Bytes are left after the value.
    #[error("{extra} bytes left after the value at offset {offset}")]
    TrailingBytes {
        /// Where the value ended.
        offset: usize,
        /// How many bytes followed it.
        extra: usize,
    },
}

impl DecodeError {
    /// Whose fault these errors are: the peer's, always.
    pub const FAULT: Fault = Fault::Peer;
}

/// A compressed body that cannot be decompressed. The peer's fault; the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The frame is too short to hold the 12-byte compressed header.
    #[error("compressed frame of {0} bytes is shorter than its 12-byte header")]
    TooShort(usize),
    /// The uncompressed size is below the 8 bytes of a header.
    #[error("uncompressed size {0} is smaller than a header")]
    SizeTooSmall(u32),
    /// The uncompressed size is above the configured limit; nothing was allocated for it.
    #[error("uncompressed size {size} is above the limit of {limit} bytes")]
    TooLarge {
        /// The size the frame claims.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// The uncompressed size is more than [`crate::Limits::max_expansion`] times the frame's size
    /// on the wire; nothing was allocated for it.
    #[error(
        "uncompressed size {size} is more than {max_expansion} times the {wire} bytes sent \
         (the expansion limit)"
    )]
    TooExpanded {
        /// The size the frame claims.
        size: u64,
        /// The frame's length on the wire.
        wire: usize,
        /// The limit, as a ratio.
        max_expansion: usize,
    },
    /// The compressed stream ended before the uncompressed size was reached.
    #[error("compressed stream ends early at offset {0}")]
    Truncated(usize),
    /// A back-reference points outside the bytes produced so far.
    #[error("back-reference at offset {offset} points outside the output")]
    BadReference {
        /// Where the reference was, in the compressed frame.
        offset: usize,
    },
    /// A run would write past the uncompressed size.
    #[error("run at offset {offset} overflows the uncompressed size")]
    Overflow {
        /// Where the run was, in the compressed frame.
        offset: usize,
    },
}

impl DecompressError {
    /// Whose fault these errors are: the peer's, always.
    pub const FAULT: Fault = Fault::Peer;
}

/// A value that cannot be sent. The caller's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A symbol with a NUL byte inside.
    #[error("a symbol cannot contain a NUL byte")]
    NulInSymbol,
    /// A type the peer's capability does not allow (GUIDs below 3, timestamps and timespans
    /// below 1), as kdb+'s `'type error serializing for handle`.
    #[error("type {type_code} cannot be sent at capability {capability}")]
    NotAtCapability {
        /// The type byte.
        type_code: i8,
        /// The negotiated capability.
        capability: u8,
    },
    /// The message would be longer than a 32-bit length field can say.
    #[error("message of {0} bytes is too large for capability 3 framing")]
    TooLarge(usize),
    /// Values nested deeper than [`crate::MAX_DEPTH`].
    #[error("values nested deeper than {0}")]
    TooDeep(usize),
}

impl EncodeError {
    /// Whose fault these errors are: the caller's, always.
    pub const FAULT: Fault = Fault::Local;

    /// The q error a server answers with instead of the value: an encode error is the server's
    /// own (its reply cannot be sent), so the request is answered and the connection kept.
    pub fn q_error(&self) -> &'static str {
        match self {
            // kdb+ answers 'limit for a message over its framing's limit.
            Self::TooLarge(_) => "limit",
            // kdb+ answers 'type when a value cannot be serialized for a handle ("type error
            // serializing for handle"); a NUL in a symbol or a value nested too deep are values
            // the wire cannot carry in the same way.
            Self::NulInSymbol | Self::NotAtCapability { .. } | Self::TooDeep(_) => "type",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: impl Into<Error>, fault: Fault, action: WireAction) {
        let error = error.into();
        assert_eq!(
            (error.fault(), error.wire_action()),
            (fault, action),
            "{error}"
        );
    }

    #[test]
    fn every_stage_has_its_fault_and_its_action() {
        check(
            HandshakeError::TooLong { limit: 64 },
            Fault::Peer,
            WireAction::Close(Close::Silently),
        );
        check(
            FrameError::BadMessageType(7),
            Fault::Peer,
            WireAction::Close(Close::BadMessage),
        );
        check(
            FrameError::TooLarge {
                len: 1 << 31,
                limit: 1 << 20,
            },
            Fault::Peer,
            WireAction::Close(Close::OverLimit("max_message_bytes")),
        );
        check(
            DecodeError::TrailingBytes {
                offset: 9,
                extra: 1,
            },
            Fault::Peer,
            WireAction::Close(Close::BadMessage),
        );
        check(
            DecompressError::Truncated(20),
            Fault::Peer,
            WireAction::Close(Close::BadMessage),
        );
        check(
            DecompressError::TooLarge {
                size: 1 << 31,
                limit: 1 << 20,
            },
            Fault::Peer,
            WireAction::Close(Close::OverLimit("max_message_bytes")),
        );
        check(
            DecompressError::TooExpanded {
                size: 1 << 30,
                wire: 1 << 20,
                max_expansion: 32,
            },
            Fault::Peer,
            WireAction::Close(Close::OverLimit("max_expansion")),
        );
        check(
            EncodeError::NotAtCapability {
                type_code: -12,
                capability: 0,
            },
            Fault::Local,
            WireAction::Reply("type"),
        );
        check(
            EncodeError::TooLarge(1 << 32),
            Fault::Local,
            WireAction::Reply("limit"),
        );
    }
}
