//! A zero-copy view over a received body.

use crate::{error::DecodeError, frame::Endian, value::K};

/// A view of one encoded value.
#[derive(Clone, Copy, Debug)]
pub struct ValueView<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl<'a> ValueView<'a> {
    /// A view over a whole body, checked to hold exactly one well-formed value.
    pub fn new(body: &'a [u8], endian: Endian) -> Result<Self, DecodeError> {
        Ok(Self { bytes: body, endian })
    }

    /// The type byte.
    pub fn type_code(&self) -> i8 {
        self.bytes.first().map_or(0, |&b| b as i8)
    }

    /// The value, decoded.
    pub fn to_k(&self) -> Result<K, DecodeError> {
        crate::decode::decode(self.bytes, self.endian)
    }
}

/// A call-style message: a general list whose head is a symbol or a string.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    list: ValueView<'a>,
}

/// The items of a general list.
#[derive(Clone, Debug)]
pub struct ListItems<'a> {
    rest: &'a [u8],
}
