//! The encoder: [`K`] to bytes, always little-endian (node-q and aiokdb read headers as
//! little-endian whatever byte 0 says).
//!
//! A message is sized before it is written, so the output is allocated once; on little-endian
//! hosts a numeric vector is written with one copy.

use crate::{
    MAX_DEPTH, compress,
    error::EncodeError,
    frame::{HEADER_LEN, Header, MessageType},
    handshake::SERVER_CAPABILITY,
    value::{Atom, Function, K, VectorData, type_code},
};

/// Messages longer than this many bytes (header included) are compressed for remote peers, as q
/// does (reference §5.1).
pub const COMPRESSION_THRESHOLD: usize = 2000;

/// The longest message capability-3 framing can carry: kdb+'s 2 GB limit, which clients that read
/// the length as a signed 32-bit number (javakdb, qPython) also need.
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Where the peer is, which decides compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// Loopback or a Unix socket: never compressed, as in kdb+.
    Local,
    /// Anything else: compressed when q would.
    Remote,
}

/// Options for [`encode_message_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The negotiated capability; it decides which types may be sent and whether compression is
    /// allowed (reference §4.10).
    pub capability: u8,
    /// Where the peer is.
    pub locality: Locality,
}

impl Default for EncodeOptions {
    /// Capability 3 to a local peer: every type, no compression.
    fn default() -> Self {
        Self {
            capability: SERVER_CAPABILITY,
            locality: Locality::Local,
        }
    }
}

/// Appends the encoding of `value` (a body, no header) to `out`.
///
/// # Errors
///
/// [`EncodeError`] for a value that cannot be sent: a symbol with a NUL, or nesting deeper than
/// [`crate::MAX_DEPTH`].
pub fn encode(value: &K, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = encoded_len(value, SERVER_CAPABILITY, 0)?;
    out.reserve(len);
    write(value, out);
    Ok(())
}

/// Encodes a whole uncompressed little-endian message at capability 3.
///
/// # Errors
///
/// [`EncodeError`] for a value that cannot be sent.
pub fn encode_message(message_type: MessageType, value: &K) -> Result<Vec<u8>, EncodeError> {
    encode_message_with(message_type, value, &EncodeOptions::default())
}

/// Encodes a whole message for a peer, compressing it when q would: over
/// [`COMPRESSION_THRESHOLD`] bytes, to a remote peer, at capability 1 or more, and only when the
/// result is under half the size.
///
/// # Errors
///
/// [`EncodeError`] for a value that cannot be sent at the peer's capability, or a message too
/// large for the framing.
pub fn encode_message_with(
    message_type: MessageType,
    value: &K,
    options: &EncodeOptions,
) -> Result<Vec<u8>, EncodeError> {
    let len = message_len(value, options.capability)?;
    let mut out = Vec::with_capacity(len);
    // Invariant: len fits in u32, checked against MAX_MESSAGE_BYTES above.
    out.extend_from_slice(&Header::little(message_type, len as u32).to_bytes());
    write(value, &mut out);
    debug_assert_eq!(out.len(), len);
    if options.locality == Locality::Remote
        && options.capability >= 1
        && let Some(compressed) = compress::compress(&out)
    {
        return Ok(compressed);
    }
    Ok(out)
}

/// The length of the whole uncompressed message that [`encode_message_with`] would make of
/// `value` at `capability`, header included, without encoding it: for a caller that accounts for
/// memory before it allocates.
///
/// # Errors
///
/// As [`encode_message_with`]: a value that cannot be sent at `capability`, or a message too
/// large for the framing.
pub fn message_len(value: &K, capability: u8) -> Result<usize, EncodeError> {
    let len = HEADER_LEN + encoded_len(value, capability, 0)?;
    if len > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLarge(len));
    }
    Ok(len)
}

/// The encoded size of `value`, checking on the way that it can be sent at `capability`.
fn encoded_len(value: &K, capability: u8, depth: usize) -> Result<usize, EncodeError> {
    if depth >= MAX_DEPTH {
        return Err(EncodeError::TooDeep(MAX_DEPTH));
    }
    let check_capability = |t: i8| -> Result<(), EncodeError> {
        let needed = match t.unsigned_abs() as i8 {
            type_code::GUID => 3,
            type_code::TIMESTAMP | type_code::TIMESPAN => 1,
            _ => 0,
        };
        if capability < needed {
            return Err(EncodeError::NotAtCapability {
                type_code: t,
                capability,
            });
        }
        Ok(())
    };
    let all = |items: &[K]| -> Result<usize, EncodeError> {
        items
            .iter()
            .map(|item| encoded_len(item, capability, depth + 1))
            .sum()
    };
    Ok(match value {
        K::Atom(atom) => {
            check_capability(atom.type_code())?;
            1 + match atom {
                Atom::Boolean(_) | Atom::Byte(_) | Atom::Char(_) => 1,
                Atom::Guid(_) => 16,
                Atom::Short(_) => 2,
                Atom::Int(_)
                | Atom::Real(_)
                | Atom::Month(_)
                | Atom::Date(_)
                | Atom::Minute(_)
                | Atom::Second(_)
                | Atom::Time(_) => 4,
                Atom::Long(_)
                | Atom::Float(_)
                | Atom::Timestamp(_)
                | Atom::Datetime(_)
                | Atom::Timespan(_) => 8,
                Atom::Symbol(name) => {
                    if memchr::memchr(0, name).is_some() {
                        return Err(EncodeError::NulInSymbol);
                    }
                    name.len() + 1
                }
            }
        }
        K::Vector(vector) => {
            let t = vector.data.type_code();
            check_capability(t)?;
            6 + match &vector.data {
                VectorData::Symbol(symbols) => symbols.as_wire().len(),
                data => {
                    // Invariant: every non-symbol vector type has a fixed item size.
                    crate::decode::item_size(t).unwrap_or(0) * data.len()
                }
            }
        }
        K::List(list) => 6 + all(&list.items)?,
        K::Dict(dict) => {
            1 + encoded_len(&dict.keys, capability, depth + 1)?
                + encoded_len(&dict.values, capability, depth + 1)?
        }
        K::Table(table) => {
            3 + encoded_len(&table.columns, capability, depth + 1)?
                + encoded_len(&table.values, capability, depth + 1)?
        }
        K::Function(function) => match function {
            Function::Lambda { context, source } => {
                if memchr::memchr(0, context).is_some() {
                    return Err(EncodeError::NulInSymbol);
                }
                1 + context.len() + 1 + encoded_len(source, capability, depth + 1)?
            }
            Function::Unary(_) | Function::Binary(_) | Function::Ternary(_) => 2,
            Function::Projection(items) | Function::Composition(items) => 5 + all(items)?,
            Function::Each(inner)
            | Function::Over(inner)
            | Function::Scan(inner)
            | Function::EachPrior(inner)
            | Function::EachRight(inner)
            | Function::EachLeft(inner) => 1 + encoded_len(inner, capability, depth + 1)?,
        },
        K::Null => 2,
        K::Error(text) => {
            // An error's text ends at its first NUL on the wire; a NUL inside would cut it short
            // and leave the rest as garbage, so it is refused like a symbol's.
            if memchr::memchr(0, text).is_some() {
                return Err(EncodeError::NulInSymbol);
            }
            text.len() + 2
        }
    })
}

/// Writes a value that [`encoded_len`] has accepted.
fn write(value: &K, out: &mut Vec<u8>) {
    match value {
        K::Atom(atom) => {
            out.push(atom.type_code() as u8);
            match atom {
                Atom::Boolean(b) => out.push(u8::from(*b)),
                Atom::Guid(g) => out.extend_from_slice(g),
                Atom::Byte(b) | Atom::Char(b) => out.push(*b),
                Atom::Short(x) => out.extend_from_slice(&x.to_le_bytes()),
                Atom::Int(x)
                | Atom::Month(x)
                | Atom::Date(x)
                | Atom::Minute(x)
                | Atom::Second(x)
                | Atom::Time(x) => out.extend_from_slice(&x.to_le_bytes()),
                Atom::Long(x) | Atom::Timestamp(x) | Atom::Timespan(x) => {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Atom::Real(x) => out.extend_from_slice(&x.to_le_bytes()),
                Atom::Float(x) | Atom::Datetime(x) => out.extend_from_slice(&x.to_le_bytes()),
                Atom::Symbol(name) => {
                    out.extend_from_slice(name);
                    out.push(0);
                }
            }
        }
        K::Vector(vector) => {
            out.push(vector.data.type_code() as u8);
            out.push(vector.attr as u8);
            write_count(vector.data.len(), out);
            match &vector.data {
                VectorData::Boolean(v) => out.extend(v.iter().map(|&b| u8::from(b))),
                VectorData::Guid(v) => out.extend_from_slice(v.as_flattened()),
                VectorData::Byte(v) | VectorData::Char(v) => out.extend_from_slice(v),
                VectorData::Symbol(s) => out.extend_from_slice(s.as_wire()),
                VectorData::Short(v) => write_numbers(v, out, i16::to_le_bytes),
                VectorData::Int(v)
                | VectorData::Month(v)
                | VectorData::Date(v)
                | VectorData::Minute(v)
                | VectorData::Second(v)
                | VectorData::Time(v) => write_numbers(v, out, i32::to_le_bytes),
                VectorData::Long(v) | VectorData::Timestamp(v) | VectorData::Timespan(v) => {
                    write_numbers(v, out, i64::to_le_bytes);
                }
                VectorData::Real(v) => write_numbers(v, out, f32::to_le_bytes),
                VectorData::Float(v) | VectorData::Datetime(v) => {
                    write_numbers(v, out, f64::to_le_bytes);
                }
            }
        }
        K::List(list) => {
            out.push(type_code::LIST as u8);
            out.push(list.attr as u8);
            write_count(list.items.len(), out);
            for item in &list.items {
                write(item, out);
            }
        }
        K::Dict(dict) => {
            out.push(value.type_code() as u8);
            write(&dict.keys, out);
            write(&dict.values, out);
        }
        K::Table(table) => {
            out.push(type_code::TABLE as u8);
            out.push(table.attr as u8);
            out.push(type_code::DICT as u8);
            write(&table.columns, out);
            write(&table.values, out);
        }
        K::Function(function) => {
            out.push(function.type_code() as u8);
            match function {
                Function::Lambda { context, source } => {
                    out.extend_from_slice(context);
                    out.push(0);
                    write(source, out);
                }
                Function::Unary(i) | Function::Binary(i) | Function::Ternary(i) => out.push(*i),
                Function::Projection(items) | Function::Composition(items) => {
                    write_count(items.len(), out);
                    for item in items {
                        write(item, out);
                    }
                }
                Function::Each(inner)
                | Function::Over(inner)
                | Function::Scan(inner)
                | Function::EachPrior(inner)
                | Function::EachRight(inner)
                | Function::EachLeft(inner) => write(inner, out),
            }
        }
        K::Null => out.extend_from_slice(&[type_code::UNARY as u8, 0]),
        K::Error(text) => {
            out.push(type_code::ERROR as u8);
            out.extend_from_slice(text);
            out.push(0);
        }
    }
}

fn write_count(count: usize, out: &mut Vec<u8>) {
    // Invariant: encoded_len bounded the message, so a count fits in an i32.
    out.extend_from_slice(&(count as i32).to_le_bytes());
}

/// Writes numbers little-endian: one copy on little-endian hosts.
fn write_numbers<T: bytemuck::Pod, const N: usize>(
    items: &[T],
    out: &mut Vec<u8>,
    to_le: fn(T) -> [u8; N],
) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(items));
    } else {
        for &item in items {
            out.extend_from_slice(&to_le(item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Atom, Vector};

    #[test]
    fn encodes_a_message_with_its_header() {
        assert_eq!(
            encode_message(MessageType::Async, &K::Atom(Atom::Int(1))),
            Ok(vec![1, 0, 0, 0, 13, 0, 0, 0, 0xfa, 1, 0, 0, 0])
        );
    }

    #[test]
    fn refuses_what_the_capability_cannot_carry() {
        let guid = K::Atom(Atom::Guid([0; 16]));
        let options = EncodeOptions {
            capability: 2,
            locality: Locality::Local,
        };
        assert_eq!(
            encode_message_with(MessageType::Response, &guid, &options),
            Err(EncodeError::NotAtCapability {
                type_code: -2,
                capability: 2
            })
        );
        let stamps = K::Vector(Vector::new(VectorData::Timestamp(vec![0])));
        let options = EncodeOptions {
            capability: 0,
            locality: Locality::Local,
        };
        assert!(encode_message_with(MessageType::Response, &stamps, &options).is_err());
    }

    #[test]
    fn refuses_nul_in_symbols() {
        assert_eq!(
            encode_message(MessageType::Response, &K::symbol("a\0b")),
            Err(EncodeError::NulInSymbol)
        );
    }

    #[test]
    fn compresses_only_for_remote_peers_as_q_does() {
        let value = K::vector(VectorData::Boolean(vec![true; 2000]));
        let local = encode_message(MessageType::Async, &value).expect("encodes");
        assert_eq!(local.len(), 2014);
        let remote = encode_message_with(
            MessageType::Async,
            &value,
            &EncodeOptions {
                capability: 3,
                locality: Locality::Remote,
            },
        )
        .expect("encodes");
        assert_eq!(remote[2], 1);
        assert!(remote.len() < local.len() / 2);
        // Capability 0 means no compression.
        let old = encode_message_with(
            MessageType::Async,
            &value,
            &EncodeOptions {
                capability: 0,
                locality: Locality::Remote,
            },
        )
        .expect("encodes");
        assert_eq!(old, local);
    }
}
