//! The owned decoder: a message body to a [`K`] tree, and a validator that walks a body without
//! building anything.
//!
//! Every count is checked against the bytes that are actually left before anything is allocated,
//! and every allocation is charged to a memory budget, so a peer can make the decoder allocate
//! only in proportion to what it really sent, and never more than [`DecodeOptions::max_bytes`].

use std::mem::size_of;

use crate::{
    MAX_DEPTH,
    error::DecodeError,
    frame::Endian,
    value::{Atom, Attr, Dict, Function, K, List, Symbols, Table, Vector, VectorData, type_code},
};

/// The smallest encoding of any value: a type byte and one more (`0b`, `(::)`, `'` with its NUL).
///
/// A list of `n` items needs at least `2n` bytes, which bounds `n` before the list is allocated.
const MIN_VALUE_BYTES: usize = 2;

/// Options for [`decode_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The most memory the decoded value may take, in bytes.
    ///
    /// Decoded values can be larger than their wire form: a general list of boolean atoms takes
    /// 2 bytes an item on the wire and a [`K`] an item in memory.
    /// The budget stops a peer from turning a legal message into many times its size in memory.
    pub max_bytes: usize,
}

impl DecodeOptions {
    /// 1 GiB: four times the default message limit, room for the usual expansion of symbol
    /// columns and lists of atoms.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 30;
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// Decodes a message body with default options.
///
/// # Errors
///
/// [`DecodeError`] when the body is not exactly one well-formed value.
pub fn decode(body: &[u8], endian: Endian) -> Result<K, DecodeError> {
    decode_with(body, endian, &DecodeOptions::default())
}

/// Decodes a message body.
///
/// # Errors
///
/// [`DecodeError`] when the body is not exactly one well-formed value, or when the value would
/// need more than `options.max_bytes` of memory.
pub fn decode_with(body: &[u8], endian: Endian, options: &DecodeOptions) -> Result<K, DecodeError> {
    let mut reader = Reader::new(body, endian, options.max_bytes);
    let value = reader.value()?;
    reader.finish()?;
    Ok(value)
}

/// Checks that a body is exactly one well-formed value, without allocating.
///
/// This is the check kdb+ runs on every incoming message (reference §3.5).
///
/// # Errors
///
/// [`DecodeError`] when the body is not exactly one well-formed value.
pub fn validate(body: &[u8], endian: Endian) -> Result<(), DecodeError> {
    let end = skip(body, 0, endian)?;
    if end != body.len() {
        return Err(DecodeError::TrailingBytes {
            offset: end,
            extra: body.len() - end,
        });
    }
    Ok(())
}

/// Returns the offset just past the value that starts at `pos`, checking its structure.
///
/// Used by [`validate`] and by the zero-copy view to step over list items.
pub(crate) fn skip(body: &[u8], pos: usize, endian: Endian) -> Result<usize, DecodeError> {
    let mut reader = Reader::new(body, endian, usize::MAX);
    reader.pos = pos;
    reader.skip_value()?;
    Ok(reader.pos)
}

/// The fixed item size of a basic vector type, or `None` for symbols and non-vectors.
pub(crate) fn item_size(type_code: i8) -> Option<usize> {
    Some(match type_code {
        type_code::BOOLEAN | type_code::BYTE | type_code::CHAR => 1,
        type_code::GUID => 16,
        type_code::SHORT => 2,
        type_code::INT
        | type_code::REAL
        | type_code::MONTH
        | type_code::DATE
        | type_code::MINUTE
        | type_code::SECOND
        | type_code::TIME => 4,
        type_code::LONG
        | type_code::FLOAT
        | type_code::TIMESTAMP
        | type_code::DATETIME
        | type_code::TIMESPAN => 8,
        _ => return None,
    })
}

/// Whether a type byte names a q type that exists but cannot cross IPC: enumerations (20 to 76),
/// mapped lists (77 to 97) and foreign objects (112), or their atoms.
pub(crate) fn is_unsupported(type_code: i8) -> bool {
    matches!(type_code.unsigned_abs(), 20..=97) || type_code == type_code::FOREIGN
}

/// A cursor over a body, with a nesting depth and a memory budget.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
    endian: Endian,
    depth: usize,
    budget: usize,
    limit: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], endian: Endian, budget: usize) -> Self {
        Self {
            buf,
            pos: 0,
            endian,
            depth: 0,
            budget,
            limit: budget,
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos != self.buf.len() {
            return Err(DecodeError::TrailingBytes {
                offset: self.pos,
                extra: self.buf.len() - self.pos,
            });
        }
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining().min(n),
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let bytes = self.array()?;
        Ok(match self.endian {
            Endian::Little => i32::from_le_bytes(bytes),
            Endian::Big => i32::from_be_bytes(bytes),
        })
    }

    /// Charges `bytes` of memory to the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or(DecodeError::TooLarge { limit: self.limit })?;
        Ok(())
    }

    fn attr(&mut self) -> Result<Attr, DecodeError> {
        let offset = self.pos;
        let byte = self.u8()?;
        Attr::from_byte(byte).ok_or(DecodeError::BadAttribute { attr: byte, offset })
    }

    /// Reads a count and checks that `min_item_bytes` per item fit in what is left.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let count = self.i32()?;
        let count =
            usize::try_from(count).map_err(|_| DecodeError::NegativeCount { count, offset })?;
        let remaining = self.remaining();
        if count.saturating_mul(min_item_bytes) > remaining {
            return Err(DecodeError::CountTooLarge {
                count,
                offset,
                remaining,
            });
        }
        Ok(count)
    }

    fn enter(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep {
                limit: MAX_DEPTH,
                offset: self.pos,
            });
        }
        Ok(())
    }

    /// A NUL-terminated name, without the NUL.
    fn name(&mut self) -> Result<&'a [u8], DecodeError> {
        let offset = self.pos;
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let end = memchr::memchr(0, rest).ok_or(DecodeError::UnterminatedSymbol { offset })?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// `count` fixed-size numbers, converted from the message's byte order.
    ///
    /// The converters are generic rather than `fn` pointers so that each loop is monomorphised and
    /// vectorised: through a pointer every item is an indirect call (about 4x slower on 1M longs).
    fn numbers<T, const N: usize>(
        &mut self,
        count: usize,
        le: impl Fn([u8; N]) -> T,
        be: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, DecodeError> {
        self.charge(count.saturating_mul(size_of::<T>()))?;
        let bytes = self.take(count * N)?;
        let (chunks, _) = bytes.as_chunks::<N>();
        Ok(match self.endian {
            Endian::Little => chunks.iter().map(|&chunk| le(chunk)).collect(),
            Endian::Big => chunks.iter().map(|&chunk| be(chunk)).collect(),
        })
    }

    // ----- Owned decoding.

    pub(crate) fn value(&mut self) -> Result<K, DecodeError> {
        self.enter()?;
        let offset = self.pos;
        let t = self.u8()? as i8;
        let value = match t {
            type_code::LIST => {
                let attr = self.attr()?;
                let count = self.count(MIN_VALUE_BYTES)?;
                self.charge(count.saturating_mul(size_of::<K>()))?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value()?);
                }
                K::List(List { attr, items })
            }
            1..=19 => {
                if t != type_code::SYMBOL && item_size(t).is_none() {
                    return Err(type_error(t, offset));
                }
                let attr = self.attr()?;
                let data = self.vector(t, offset)?;
                K::Vector(Vector { attr, data })
            }
            -19..=-1 => K::Atom(self.atom(t, offset)?),
            type_code::TABLE => {
                let attr = self.attr()?;
                let dict_offset = self.pos;
                if self.u8()? as i8 != type_code::DICT {
                    return Err(DecodeError::Malformed {
                        offset: dict_offset,
                        what: "a table must hold a dictionary",
                    });
                }
                self.charge(2 * size_of::<K>())?;
                let columns = Box::new(self.value()?);
                let values = Box::new(self.value()?);
                K::Table(Table {
                    attr,
                    columns,
                    values,
                })
            }
            type_code::DICT | type_code::SORTED_DICT => {
                self.charge(2 * size_of::<K>())?;
                let keys = Box::new(self.value()?);
                let values = Box::new(self.value()?);
                K::Dict(Dict {
                    sorted: t == type_code::SORTED_DICT,
                    keys,
                    values,
                })
            }
            type_code::LAMBDA => {
                let context = self.name()?;
                self.charge(context.len() + size_of::<K>())?;
                let context = context.to_vec();
                let source = Box::new(self.value()?);
                K::Function(Function::Lambda { context, source })
            }
            type_code::UNARY => match self.u8()? {
                0 => K::Null,
                index => K::Function(Function::Unary(index)),
            },
            type_code::BINARY => K::Function(Function::Binary(self.u8()?)),
            type_code::TERNARY => K::Function(Function::Ternary(self.u8()?)),
            type_code::PROJECTION | type_code::COMPOSITION => {
                let count = self.count(MIN_VALUE_BYTES)?;
                self.charge(count.saturating_mul(size_of::<K>()))?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value()?);
                }
                K::Function(if t == type_code::PROJECTION {
                    Function::Projection(items)
                } else {
                    Function::Composition(items)
                })
            }
            type_code::EACH..=type_code::EACH_LEFT => {
                self.charge(size_of::<K>())?;
                let inner = Box::new(self.value()?);
                K::Function(match t {
                    type_code::EACH => Function::Each(inner),
                    type_code::OVER => Function::Over(inner),
                    type_code::SCAN => Function::Scan(inner),
                    type_code::EACH_PRIOR => Function::EachPrior(inner),
                    type_code::EACH_RIGHT => Function::EachRight(inner),
                    _ => Function::EachLeft(inner),
                })
            }
            type_code::ERROR => {
                let text = self.name()?;
                self.charge(text.len())?;
                let text = text.to_vec();
                K::Error(text)
            }
            _ => return Err(type_error(t, offset)),
        };
        self.depth -= 1;
        Ok(value)
    }

    fn number<T, const N: usize>(
        &mut self,
        le: fn([u8; N]) -> T,
        be: fn([u8; N]) -> T,
    ) -> Result<T, DecodeError> {
        let bytes = self.array()?;
        Ok(match self.endian {
            Endian::Little => le(bytes),
            Endian::Big => be(bytes),
        })
    }

    fn atom(&mut self, t: i8, offset: usize) -> Result<Atom, DecodeError> {
        Ok(match -t {
            type_code::BOOLEAN => Atom::Boolean(self.u8()? != 0),
            type_code::GUID => Atom::Guid(self.array()?),
            type_code::BYTE => Atom::Byte(self.u8()?),
            type_code::SHORT => Atom::Short(self.number(i16::from_le_bytes, i16::from_be_bytes)?),
            type_code::INT => Atom::Int(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            type_code::LONG => Atom::Long(self.number(i64::from_le_bytes, i64::from_be_bytes)?),
            type_code::REAL => Atom::Real(self.number(f32::from_le_bytes, f32::from_be_bytes)?),
            type_code::FLOAT => Atom::Float(self.number(f64::from_le_bytes, f64::from_be_bytes)?),
            type_code::CHAR => Atom::Char(self.u8()?),
            type_code::SYMBOL => {
                let name = self.name()?;
                self.charge(name.len())?;
                let name = name.to_vec();
                Atom::Symbol(name)
            }
            type_code::TIMESTAMP => {
                Atom::Timestamp(self.number(i64::from_le_bytes, i64::from_be_bytes)?)
            }
            type_code::MONTH => Atom::Month(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            type_code::DATE => Atom::Date(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            type_code::DATETIME => {
                Atom::Datetime(self.number(f64::from_le_bytes, f64::from_be_bytes)?)
            }
            type_code::TIMESPAN => {
                Atom::Timespan(self.number(i64::from_le_bytes, i64::from_be_bytes)?)
            }
            type_code::MINUTE => Atom::Minute(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            type_code::SECOND => Atom::Second(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            type_code::TIME => Atom::Time(self.number(i32::from_le_bytes, i32::from_be_bytes)?),
            _ => return Err(type_error(t, offset)),
        })
    }

    fn vector(&mut self, t: i8, offset: usize) -> Result<VectorData, DecodeError> {
        if t == type_code::SYMBOL {
            let count = self.count(1)?;
            return self.symbols(count);
        }
        let size = item_size(t).ok_or_else(|| type_error(t, offset))?;
        let count = self.count(size)?;
        self.vector_items(t, count, offset)
    }

    fn vector_items(
        &mut self,
        t: i8,
        count: usize,
        offset: usize,
    ) -> Result<VectorData, DecodeError> {
        Ok(match t {
            type_code::BOOLEAN => {
                self.charge(count)?;
                VectorData::Boolean(self.take(count)?.iter().map(|&b| b != 0).collect())
            }
            type_code::GUID => {
                self.charge(count.saturating_mul(16))?;
                VectorData::Guid(self.take(count * 16)?.as_chunks::<16>().0.to_vec())
            }
            type_code::BYTE => {
                self.charge(count)?;
                VectorData::Byte(self.take(count)?.to_vec())
            }
            type_code::CHAR => {
                self.charge(count)?;
                VectorData::Char(self.take(count)?.to_vec())
            }
            type_code::SHORT => {
                VectorData::Short(self.numbers(count, i16::from_le_bytes, i16::from_be_bytes)?)
            }
            type_code::INT => {
                VectorData::Int(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            type_code::LONG => {
                VectorData::Long(self.numbers(count, i64::from_le_bytes, i64::from_be_bytes)?)
            }
            type_code::REAL => {
                VectorData::Real(self.numbers(count, f32::from_le_bytes, f32::from_be_bytes)?)
            }
            type_code::FLOAT => {
                VectorData::Float(self.numbers(count, f64::from_le_bytes, f64::from_be_bytes)?)
            }
            type_code::TIMESTAMP => VectorData::Timestamp(self.numbers(
                count,
                i64::from_le_bytes,
                i64::from_be_bytes,
            )?),
            type_code::MONTH => {
                VectorData::Month(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            type_code::DATE => {
                VectorData::Date(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            type_code::DATETIME => {
                VectorData::Datetime(self.numbers(count, f64::from_le_bytes, f64::from_be_bytes)?)
            }
            type_code::TIMESPAN => {
                VectorData::Timespan(self.numbers(count, i64::from_le_bytes, i64::from_be_bytes)?)
            }
            type_code::MINUTE => {
                VectorData::Minute(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            type_code::SECOND => {
                VectorData::Second(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            type_code::TIME => {
                VectorData::Time(self.numbers(count, i32::from_le_bytes, i32::from_be_bytes)?)
            }
            _ => return Err(type_error(t, offset)),
        })
    }

    fn symbols(&mut self, count: usize) -> Result<VectorData, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let mut starts = Vec::new();
        self.charge(count.saturating_mul(size_of::<u32>()))?;
        starts.reserve_exact(count);
        let mut end = 0;
        let mut nuls = memchr::memchr_iter(0, rest);
        for _ in 0..count {
            // Invariant: the message limit keeps every offset below 4 GiB.
            starts.push(end as u32);
            end = nuls.next().ok_or(DecodeError::UnterminatedSymbol {
                offset: start + end,
            })? + 1;
        }
        self.charge(end)?;
        let bytes = self.take(end)?.to_vec();
        Ok(VectorData::Symbol(Symbols::from_wire(bytes, starts)))
    }

    // ----- Validation without building.

    fn skip_value(&mut self) -> Result<(), DecodeError> {
        self.enter()?;
        let offset = self.pos;
        let t = self.u8()? as i8;
        match t {
            type_code::LIST => {
                self.attr()?;
                let count = self.count(MIN_VALUE_BYTES)?;
                for _ in 0..count {
                    self.skip_value()?;
                }
            }
            type_code::SYMBOL => {
                self.attr()?;
                let count = self.count(1)?;
                let start = self.pos;
                let rest = self.buf.get(start..).unwrap_or_default();
                let end = names_len(rest, count).ok_or_else(|| {
                    // The error names where the first unterminated name starts.
                    let after_last = memchr::memrchr(0, rest).map_or(0, |nul| nul + 1);
                    DecodeError::UnterminatedSymbol {
                        offset: start + after_last,
                    }
                })?;
                self.pos += end;
            }
            1..=19 => {
                let size = item_size(t).ok_or_else(|| type_error(t, offset))?;
                self.attr()?;
                let count = self.count(size)?;
                self.take(count * size)?;
            }
            t if t == -type_code::SYMBOL || t == type_code::ERROR => {
                self.name()?;
            }
            -19..=-1 => {
                let size = item_size(-t).ok_or_else(|| type_error(t, offset))?;
                self.take(size)?;
            }
            type_code::TABLE => {
                self.attr()?;
                let dict_offset = self.pos;
                if self.u8()? as i8 != type_code::DICT {
                    return Err(DecodeError::Malformed {
                        offset: dict_offset,
                        what: "a table must hold a dictionary",
                    });
                }
                self.skip_value()?;
                self.skip_value()?;
            }
            type_code::DICT | type_code::SORTED_DICT => {
                self.skip_value()?;
                self.skip_value()?;
            }
            type_code::LAMBDA => {
                self.name()?;
                self.skip_value()?;
            }
            type_code::UNARY | type_code::BINARY | type_code::TERNARY => {
                self.u8()?;
            }
            type_code::PROJECTION | type_code::COMPOSITION => {
                let count = self.count(MIN_VALUE_BYTES)?;
                for _ in 0..count {
                    self.skip_value()?;
                }
            }
            type_code::EACH..=type_code::EACH_LEFT => self.skip_value()?,
            _ => return Err(type_error(t, offset)),
        }
        self.depth -= 1;
        Ok(())
    }
}

fn type_error(type_code: i8, offset: usize) -> DecodeError {
    if is_unsupported(type_code) {
        DecodeError::UnsupportedType { type_code, offset }
    } else {
        DecodeError::UnknownType { type_code, offset }
    }
}

/// How much the block that [`names_len`] counts NULs in at a time: a page, so that the count is
/// a straight vectorised pass and only the block holding the last name is searched byte by byte.
const NAMES_BLOCK_BYTES: usize = 4096;

/// The length of the first `count` NUL-terminated names at the start of `bytes`, terminators
/// included; `None` when `bytes` holds fewer.
///
/// Validating a symbol vector only needs where it ends. Counting NULs a block at a time runs at
/// memory speed, where finding each NUL in turn costs a call per name (a million short names
/// took most of the time of validating a 100 MB table).
/// The NUL bytes in `bytes`, counted in runs of 240 bytes into a byte-wide sum each, which the
/// compiler turns into 16-byte compares and subtractions: several times faster than a sum of one
/// `usize` per byte on a symbol column of millions of names.
pub(crate) fn count_nuls(bytes: &[u8]) -> usize {
    bytes
        .chunks(240)
        .map(|run| usize::from(run.iter().fold(0u8, |n, &b| n + u8::from(b == 0))))
        .sum()
}

/// Up to this many names, a symbol vector's end is found name by name: a block count reads at
/// least a block (or the rest of the message, when shorter) for a vector of a few names, such as
/// the column names of a table or the symbols of a feed's small update, and a few calls of
/// `memchr` cost less than that. Past it, whole blocks are counted.
const NAMES_BY_NAME: usize = 32;

fn names_len(bytes: &[u8], count: usize) -> Option<usize> {
    let mut left = count;
    if left == 0 {
        return Some(0);
    }
    if count <= NAMES_BY_NAME {
        let mut end = 0;
        for _ in 0..count {
            end += memchr::memchr(0, bytes.get(end..)?)? + 1;
        }
        return Some(end);
    }
    for (i, block) in bytes.chunks(NAMES_BLOCK_BYTES).enumerate() {
        let nuls = count_nuls(block);
        if nuls >= left {
            let last = memchr::memchr_iter(0, block).nth(left - 1)?;
            return Some(i * NAMES_BLOCK_BYTES + last + 1);
        }
        left -= nuls;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn count_nuls_counts_every_nul_across_runs() {
        // Runs of 240 bytes, all NUL or none, and lengths around a run's edges.
        for len in [0, 1, 239, 240, 241, 480, 1000, 5000] {
            let zeros = vec![0u8; len];
            assert_eq!(count_nuls(&zeros), len);
            let mixed: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let naive = mixed.iter().filter(|&&b| b == 0).count();
            assert_eq!(count_nuls(&mixed), naive, "{len}");
        }
    }

    #[test]
    fn names_len_finds_the_end_of_the_nth_name_across_blocks() {
        // Names of 0 to 12 letters, so that names straddle the block boundaries.
        let mut bytes = Vec::new();
        let mut ends = vec![0];
        for i in 0..3000 {
            bytes.extend(std::iter::repeat_n(b'a', i % 13));
            bytes.push(0);
            ends.push(bytes.len());
        }
        for count in [0, 1, 2, 31, 32, 33, 100, 585, 586, 587, 1500, 2999, 3000] {
            assert_eq!(names_len(&bytes, count), Some(ends[count]), "{count}");
        }
        assert_eq!(names_len(b"ab\0cd", 2), None);
        assert_eq!(names_len(b"ab\0cd", 1), Some(3));
        assert_eq!(names_len(&bytes, 3001), None);
        assert_eq!(names_len(b"abc", 1), None);
        assert_eq!(names_len(b"", 0), Some(0));
    }

    fn check_err(body: &str, expect: DecodeError) {
        let body = hex(body);
        assert_eq!(decode(&body, Endian::Little), Err(expect.clone()));
        assert_eq!(validate(&body, Endian::Little), Err(expect));
    }

    #[test]
    fn decodes_atoms_and_vectors() {
        assert_eq!(
            decode(&hex("fa01000000"), Endian::Little),
            Ok(K::Atom(Atom::Int(1)))
        );
        assert_eq!(
            decode(&hex("fa00000001"), Endian::Big),
            Ok(K::Atom(Atom::Int(1)))
        );
        assert_eq!(
            decode(&hex("0b0003000000616263006263006300"), Endian::Little),
            Ok(K::symbols(["abc", "bc", "c"]))
        );
        assert_eq!(decode(&hex("6500"), Endian::Little), Ok(K::Null));
    }

    #[test]
    fn refuses_malformed_bodies() {
        check_err(
            "fa0100",
            DecodeError::Truncated {
                offset: 1,
                needed: 2,
            },
        );
        check_err(
            "03",
            DecodeError::UnknownType {
                type_code: 3,
                offset: 0,
            },
        );
        check_err(
            "14000100000000",
            DecodeError::UnsupportedType {
                type_code: 20,
                offset: 0,
            },
        );
        check_err(
            "70",
            DecodeError::UnsupportedType {
                type_code: 112,
                offset: 0,
            },
        );
        check_err(
            "060501000000",
            DecodeError::BadAttribute { attr: 5, offset: 1 },
        );
        check_err(
            "0600ffffffff",
            DecodeError::NegativeCount {
                count: -1,
                offset: 2,
            },
        );
        check_err(
            "070000008000",
            DecodeError::CountTooLarge {
                count: 0x0080_0000,
                offset: 2,
                remaining: 0,
            },
        );
        check_err("f56162", DecodeError::UnterminatedSymbol { offset: 1 });
        check_err(
            "0b00020000006100",
            DecodeError::UnterminatedSymbol { offset: 8 },
        );
        check_err(
            "ff0100",
            DecodeError::TrailingBytes {
                offset: 2,
                extra: 1,
            },
        );
        check_err(
            "62000b000000000000",
            DecodeError::Malformed {
                offset: 2,
                what: "a table must hold a dictionary",
            },
        );
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        let mut body = Vec::new();
        for _ in 0..100_000 {
            body.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
        }
        body.extend_from_slice(&[0xff, 1]);
        assert!(matches!(
            decode(&body, Endian::Little),
            Err(DecodeError::TooDeep { .. })
        ));
        assert!(matches!(
            validate(&body, Endian::Little),
            Err(DecodeError::TooDeep { .. })
        ));
    }

    #[test]
    fn charges_the_memory_budget() {
        // 1000 boolean atoms: 2000 bytes on the wire, 1000 K in memory.
        let mut body = hex("0000e8030000");
        for _ in 0..1000 {
            body.extend_from_slice(&[0xff, 1]);
        }
        let options = DecodeOptions { max_bytes: 4096 };
        assert_eq!(
            decode_with(&body, Endian::Little, &options),
            Err(DecodeError::TooLarge { limit: 4096 })
        );
        assert!(decode(&body, Endian::Little).is_ok());
    }
}
