//! The encoder: [`K`] to bytes, always little-endian.

use crate::{error::EncodeError, frame::MessageType, value::K};

/// Messages longer than this are compressed for remote peers, as q does.
pub const COMPRESSION_THRESHOLD: usize = 2000;

/// Where the peer is, which decides compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// Loopback or a Unix socket: never compressed.
    Local,
    /// Anything else: compressed when q would.
    Remote,
}

/// Options for [`encode_message_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The negotiated capability.
    pub capability: u8,
    /// Where the peer is.
    pub locality: Locality,
}

/// Appends the encoding of `value` (a body, no header) to `out`.
pub fn encode(value: &K, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let _ = (value, out);
    todo!()
}

/// Encodes a whole uncompressed little-endian message.
pub fn encode_message(message_type: MessageType, value: &K) -> Result<Vec<u8>, EncodeError> {
    let _ = (message_type, value);
    todo!()
}

/// Encodes a whole message for a peer, compressing it when q would.
pub fn encode_message_with(
    message_type: MessageType,
    value: &K,
    options: &EncodeOptions,
) -> Result<Vec<u8>, EncodeError> {
    let _ = (message_type, value, options);
    todo!()
}
