//! The 8-byte message header and the limits checked against it (reference §3).
//!
//! ```text
//! offset  0        1         2           3         4..8
//!         endian   msg type  compressed  reserved  total length (u32, header included)
//!         0 BE     0 async   0 plain     0         in the message's byte order
//!         1 LE     1 sync    1 compressed
//!                  2 response
//! ```
//!
//! Both byte orders are read; qgate always writes little-endian, because node-q and aiokdb parse
//! headers as little-endian whatever byte 0 says.

use crate::{
    compress,
    error::{DecompressError, Error, FrameError},
};

/// The length of a message header.
pub const HEADER_LEN: usize = 8;

/// The byte order of a message, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    /// `0`: big-endian (kdbplus on a big-endian host, or a hand-made frame).
    Big,
    /// `1`: little-endian, what every x86-64 and ARM q sends.
    Little,
}

/// The kind of a message, from its second byte. Spec order (reference §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// `0`: no reply expected (`neg[h]`, `.z.ps`).
    Async = 0,
    /// `1`: exactly one response expected, in order (`h`, `.z.pg`).
    Sync = 1,
    /// `2`: the response to a sync request.
    Response = 2,
}

/// Limits that bound what a peer can make the codec allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest message accepted, in bytes, header included, after decompression.
    ///
    /// A header claiming more is refused before a byte of body is buffered, and a compressed frame
    /// whose uncompressed size is more is refused before its output is allocated.
    pub max_message_bytes: usize,
    /// How many times its length on the wire a compressed message may expand to, once it expands
    /// to more than [`Limits::EXPANSION_FLOOR_BYTES`].
    ///
    /// A compressed frame whose uncompressed size is more is refused before its output is
    /// allocated.
    pub max_expansion: usize,
}

impl Limits {
    /// 256 MiB: well above a typical bulk insert, well below what lets one client starve the
    /// machine. kdb+ itself allows 2 GB at capability 3; raise this to match when needed.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;

    /// 32: q's compression gains 2 to 10 times on real columns (prices, sizes, timestamps), and
    /// at most about 121 times on a run of one byte (17 bytes of stream for 2056 of output).
    /// A message that expands more than 32 times is almost all runs, which real clients rarely
    /// send in bulk and which turns each megabyte an attacker sends into 121 in the server.
    pub const DEFAULT_MAX_EXPANSION: usize = 32;

    /// 1 MiB: a message that expands to no more than this is never refused for its expansion,
    /// since it costs the server little whatever its ratio; small queries over 2000 bytes, which
    /// q compresses to remote peers, often expand more than [`Limits::DEFAULT_MAX_EXPANSION`].
    pub const EXPANSION_FLOOR_BYTES: usize = 1 << 20;

    /// Limits with the given message size and the default expansion limit.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            max_expansion: Self::DEFAULT_MAX_EXPANSION,
        }
    }

    /// These limits with another expansion limit.
    #[must_use]
    pub fn with_max_expansion(self, max_expansion: usize) -> Self {
        Self {
            max_expansion,
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// A parsed message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The byte order of the length and of every number in the body.
    pub endian: Endian,
    /// Async, sync or response.
    pub message_type: MessageType,
    /// Whether the body is compressed (reference §5).
    pub compressed: bool,
    /// The total length on the wire, header included (compressed length if compressed).
    pub len: u32,
}

impl Header {
    /// Parses a header from the start of `buf` and checks it against `limits`.
    ///
    /// Returns `Ok(None)` while fewer than 8 bytes have arrived.
    ///
    /// # Errors
    ///
    /// [`FrameError`] for a header q would not send, or a length above the limit.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Self>, FrameError> {
        let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let endian = match bytes[0] {
            0 => Endian::Big,
            1 => Endian::Little,
            other => return Err(FrameError::BadEndianness(other)),
        };
        let message_type = match bytes[1] {
            0 => MessageType::Async,
            1 => MessageType::Sync,
            2 => MessageType::Response,
            other => return Err(FrameError::BadMessageType(other)),
        };
        let compressed = match bytes[2] {
            0 => false,
            1 => true,
            other => return Err(FrameError::BadCompressionFlag(other)),
        };
        if bytes[3] != 0 {
            return Err(FrameError::LargeMessageFormat(bytes[3]));
        }
        let raw = [bytes[4], bytes[5], bytes[6], bytes[7]];
        let len = match endian {
            Endian::Big => u32::from_be_bytes(raw),
            Endian::Little => u32::from_le_bytes(raw),
        };
        // A compressed frame needs its 4-byte size field as well.
        let min = if compressed {
            HEADER_LEN + 4
        } else {
            HEADER_LEN + 1
        };
        if (len as usize) < min {
            return Err(FrameError::TooShort(len));
        }
        if len as usize > limits.max_message_bytes {
            return Err(FrameError::TooLarge {
                len: len.into(),
                limit: limits.max_message_bytes,
            });
        }
        Ok(Some(Self {
            endian,
            message_type,
            compressed,
            len,
        }))
    }

    /// The header of an uncompressed little-endian message of `len` bytes.
    pub fn little(message_type: MessageType, len: u32) -> Self {
        Self {
            endian: Endian::Little,
            message_type,
            compressed: false,
            len,
        }
    }

    /// The total length as a `usize`.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame has no body; never true of a parsed header, which has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }

    /// The length of the body on the wire.
    pub fn body_len(&self) -> usize {
        self.len().saturating_sub(HEADER_LEN)
    }

    /// The header's eight bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let len = match self.endian {
            Endian::Big => self.len.to_be_bytes(),
            Endian::Little => self.len.to_le_bytes(),
        };
        [
            match self.endian {
                Endian::Big => 0,
                Endian::Little => 1,
            },
            self.message_type as u8,
            u8::from(self.compressed),
            0,
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }
}

/// A whole message, uncompressed: its header and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header as received (`compressed` tells whether the wire form was compressed).
    pub header: Header,
    /// The uncompressed message, header included: `bytes[8..]` is the body.
    bytes: Vec<u8>,
}

impl Message {
    /// Takes a whole frame as received (header included) and decompresses it if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Frame`] for a bad header, [`Error::Decompress`] for a body that does not
    /// decompress within `limits`.
    pub fn from_frame(frame: Vec<u8>, limits: &Limits) -> Result<Self, Error> {
        let header = Header::parse(&frame, limits)?.ok_or(FrameError::TooShort(0))?;
        if header.len() != frame.len() {
            return Err(FrameError::TooShort(frame.len() as u32).into());
        }
        Ok(Self::from_parsed(header, frame, limits)?)
    }

    /// [`Message::from_frame`] for a frame whose header the caller has parsed already (and whose
    /// length is the header's): only the body is left to check, so the only errors are the
    /// decompressor's.
    ///
    /// # Errors
    ///
    /// [`DecompressError`] for a compressed body that does not decompress within `limits`.
    pub fn from_parsed(
        header: Header,
        frame: Vec<u8>,
        limits: &Limits,
    ) -> Result<Self, DecompressError> {
        let bytes = if header.compressed {
            Self::uncompressed_len(&header, &frame, limits)?;
            compress::decompress(&frame, limits.max_message_bytes)?
        } else {
            frame
        };
        Ok(Self { header, bytes })
    }

    /// The length the frame of `header` will have once it is a [`Message`]: its own length, or
    /// for a compressed frame the uncompressed size it claims, checked against `limits` (the
    /// largest message, and how far a compressed one may expand) without allocating.
    ///
    /// A caller that accounts for memory asks this first, and decompresses only once it may.
    ///
    /// # Errors
    ///
    /// [`DecompressError`] for what the frame's compressed header tells: a size too small, too
    /// large, more than its stream could make, or expanding past [`Limits::max_expansion`].
    pub fn uncompressed_len(
        header: &Header,
        frame: &[u8],
        limits: &Limits,
    ) -> Result<usize, DecompressError> {
        if !header.compressed {
            return Ok(frame.len());
        }
        let size = compress::claimed_size(frame, limits.max_message_bytes)?;
        if size > Limits::EXPANSION_FLOOR_BYTES
            && size > frame.len().saturating_mul(limits.max_expansion)
        {
            return Err(DecompressError::TooExpanded {
                size: size as u64,
                wire: frame.len(),
                max_expansion: limits.max_expansion,
            });
        }
        Ok(size)
    }

    /// The body, uncompressed: the encoded value.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The uncompressed message, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The uncompressed message, header included.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expect: Result<Option<Header>, FrameError>) {
        assert_eq!(Header::parse(bytes, &Limits::new(1 << 20)), expect);
    }

    #[test]
    fn parses_both_byte_orders() {
        check(
            &[1, 1, 0, 0, 13, 0, 0, 0],
            Ok(Some(Header::little(MessageType::Sync, 13))),
        );
        check(
            &[0, 2, 0, 0, 0, 0, 0, 13],
            Ok(Some(Header {
                endian: Endian::Big,
                message_type: MessageType::Response,
                compressed: false,
                len: 13,
            })),
        );
    }

    #[test]
    fn incomplete_is_none() {
        check(&[], Ok(None));
        check(&[1, 1, 0, 0, 13, 0, 0], Ok(None));
    }

    #[test]
    fn refuses_bad_headers() {
        check(&[2, 0, 0, 0, 9, 0, 0, 0], Err(FrameError::BadEndianness(2)));
        check(
            &[1, 3, 0, 0, 9, 0, 0, 0],
            Err(FrameError::BadMessageType(3)),
        );
        check(
            &[1, 0, 2, 0, 9, 0, 0, 0],
            Err(FrameError::BadCompressionFlag(2)),
        );
        check(
            &[1, 0, 0, 1, 9, 0, 0, 0],
            Err(FrameError::LargeMessageFormat(1)),
        );
        check(&[1, 0, 0, 0, 8, 0, 0, 0], Err(FrameError::TooShort(8)));
        check(&[1, 0, 1, 0, 11, 0, 0, 0], Err(FrameError::TooShort(11)));
    }

    #[test]
    fn refuses_a_2gb_claim_before_allocating() {
        check(
            &[1, 1, 0, 0, 0, 0, 0, 0x80],
            Err(FrameError::TooLarge {
                len: 0x8000_0000,
                limit: 1 << 20,
            }),
        );
    }

    /// A compressed frame of `n` zero bytes in a byte vector: q's compression at its best, about
    /// 121 times.
    fn zeros(n: usize) -> Vec<u8> {
        let value = crate::K::vector(crate::VectorData::Byte(vec![0; n]));
        let plain = crate::encode_message(MessageType::Sync, &value).unwrap();
        compress::compress(&plain).unwrap()
    }

    #[test]
    fn expansion_is_limited_above_the_floor() {
        let small = zeros(500_000);
        let limits = Limits::default();
        let header = Header::parse(&small, &limits).unwrap().unwrap();
        assert_eq!(
            Message::uncompressed_len(&header, &small, &limits).unwrap(),
            8 + 6 + 500_000
        );
        assert!(Message::from_frame(small.clone(), &limits).is_ok());

        let large = zeros(4 << 20);
        let ratio = (8 + 6 + (4 << 20)) / large.len();
        assert!(ratio > 100, "{ratio}");
        let error = Message::from_frame(large.clone(), &limits).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Decompress(DecompressError::TooExpanded {
                    max_expansion: Limits::DEFAULT_MAX_EXPANSION,
                    ..
                })
            ),
            "{error}"
        );
        assert_eq!(
            error.wire_action(),
            crate::WireAction::Close(crate::Close::OverLimit("max_expansion"))
        );
        let lenient = limits.with_max_expansion(128);
        let message = Message::from_frame(large, &lenient).unwrap();
        assert_eq!(message.as_bytes().len(), 8 + 6 + (4 << 20));
    }

    #[test]
    fn header_bytes_round_trip() {
        let header = Header::little(MessageType::Response, 0x0102_0304);
        assert_eq!(header.to_bytes(), [1, 2, 0, 0, 4, 3, 2, 1]);
    }
}
