//! The owned decoder: body bytes to a [`K`] tree.

use crate::{error::DecodeError, frame::Endian, value::K};

/// Options for [`decode_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The most memory the decoded value may take, in bytes.
    pub max_bytes: usize,
}

/// Decodes a message body with default options.
pub fn decode(body: &[u8], endian: Endian) -> Result<K, DecodeError> {
    let _ = (body, endian);
    todo!()
}

/// Decodes a message body.
pub fn decode_with(body: &[u8], endian: Endian, options: &DecodeOptions) -> Result<K, DecodeError> {
    let _ = (body, endian, options);
    todo!()
}

/// Checks that a body is one well-formed value, without allocating.
pub fn validate(body: &[u8], endian: Endian) -> Result<(), DecodeError> {
    let _ = (body, endian);
    todo!()
}
