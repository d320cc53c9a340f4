//! Typed errors, each with the behaviour it has on the wire.
//!
//! Every fault names whose fault it is (the peer's bytes, or the caller's value) and maps to a
//! [`WireAction`]: what a server does about it.
//! This is the counterpart of rustls's `Error → AlertDescription`.

/// What a server does on the wire when an error happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireAction {
    /// Close the connection without writing a byte.
    ///
    /// A failed handshake: the client reports `'access`.
    CloseSilently,
    /// Close the connection: the peer sent something that is not q IPC (q logs `'badmsg` and runs
    /// `.z.bm` before closing).
    CloseBadMessage,
    /// Answer a sync request with this q error (without the leading `'`) and keep serving.
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
    /// What a server does about this error.
    pub fn wire_action(&self) -> WireAction {
        match self {
            Self::Handshake(_) => WireAction::CloseSilently,
            Self::Frame(_) | Self::Decode(_) | Self::Decompress(_) => WireAction::CloseBadMessage,
            Self::Encode(e) => e.wire_action(),
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
    /// The q error a server returns instead of the value.
    pub fn wire_action(&self) -> WireAction {
        match self {
            Self::TooLarge(_) => WireAction::Reply("limit"),
            Self::NulInSymbol | Self::NotAtCapability { .. } | Self::TooDeep(_) => {
                WireAction::Reply("type")
            }
        }
    }
}
