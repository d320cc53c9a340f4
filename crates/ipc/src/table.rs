//! Table surgery on IPC bytes, for entitlement filtering of replies and publications: find the
//! tables in a body, then rewrite them with rows filtered, columns dropped or masked and the row
//! count capped, without building a [`K`] tree of them.
//!
//! Replies are large (a 1M-row, 5-column table is 30 to 40 MB), and a policy such as "alice sees
//! only the rows whose `sym` is AAPL or MSFT, and no `account`" reads one column to decide and
//! copies the others.
//! So nothing here decodes a column.
//! [`locate`] walks the body once and hands out [`TableView`]s whose columns are views of the
//! bytes in place.
//! A [`RowSelection`] is a bitmap (a bit a row: 125 KB for 1M rows) built from a predicate on one
//! column.
//! [`rewrite`] asks a plan for one [`TableEdit`] per table, computes the exact size of the result,
//! allocates it once and copies each kept column once, a run of consecutive kept rows at a time.
//!
//! The shapes (reference §4.5 and §4.6 for the wire forms), each rewritten into the same shape:
//!
//! | shape | bytes | [`Located`] |
//! |---|---|---|
//! | a table | `98 attr 99 names (column; ...)` | `Table` |
//! | a keyed table | `99 table table` (`127` when sorted) | `Keyed` |
//! | a dictionary of tables | `99 names (table; ...)` | `Tables` |
//! | an update | `` (`upd;`trade;x) ``, `x` a table or a list of columns | `Update` |
//!
//! A keyed table is one view whose key columns come first ([`TableView::key_count`]): a row
//! selection applies to both halves, and a column can be in either.
//! A dictionary of tables gives one view per table, named by its key, each with its own edit.
//! An update names its table, and when its columns come without names (a list of columns, as a
//! feed sends them to a tickerplant) the caller can name them with [`Schemas`]; such columns are
//! positional, so they can be masked but not dropped.
//!
//! The result is little-endian and uncompressed whatever the input's byte order, or
//! [`Rewritten::Unchanged`] when no edit changes anything, so that the caller can forward the bytes
//! it has.
//!
//! ```
//! use qgate_ipc::{
//!     Endian, K, VectorData, decode, encode,
//!     table::{self, Mask, Rewritten, RowSelection, TableEdit, TableError},
//! };
//!
//! let trades = K::table(
//!     ["sym", "price", "account"],
//!     vec![
//!         K::symbols(["AAPL", "IBM", "MSFT"]),
//!         K::vector(VectorData::Float(vec![190.5, 140.25, 410.0])),
//!         K::symbols(["a1", "a2", "a3"]),
//!     ],
//! );
//! let mut body = Vec::new();
//! encode(&trades, &mut body)?;
//!
//! let allowed: [&[u8]; 2] = [b"AAPL", b"MSFT"];
//! let edited = table::rewrite(&body, Endian::Little, |t| {
//!     let rows = RowSelection::from_symbols(t.require("sym")?, |sym| allowed.contains(&sym))?;
//!     Ok::<_, TableError>(TableEdit::new().keep_rows(rows).mask_column("account", Mask::Null))
//! })?;
//!
//! let Rewritten::Changed(edited) = edited else {
//!     panic!("the edit changes the table");
//! };
//! let expect = K::table(
//!     ["sym", "price", "account"],
//!     vec![
//!         K::symbols(["AAPL", "MSFT"]),
//!         K::vector(VectorData::Float(vec![190.5, 410.0])),
//!         K::symbols(["", ""]),
//!     ],
//! );
//! assert_eq!(decode(&edited, Endian::Little)?, expect);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{collections::HashMap, fmt, ops::Range, sync::LazyLock};

use crate::{
    MAX_DEPTH, decode,
    encode::encode,
    error::{DecodeError, Fault},
    frame::{Endian, HEADER_LEN},
    value::{Atom, Attr, K, type_code},
    view::{ListItems, ValueView},
};

/// The longest part of a table or column name that an error shows.
///
/// Names come from an upstream, and errors reach logs and clients: a 1 MB symbol would otherwise
/// make a 4 MB log line (every byte escaped).
/// 64 bytes is longer than any real table or column name.
const MAX_SHOWN_NAME_BYTES: usize = 64;

/// The largest body a rewrite produces: what capability-3 framing carries, a length that fits a
/// signed 32-bit number with the 8-byte header included (kdb+'s 2 GB limit, which javakdb and
/// qPython also need).
///
/// A rewrite only shrinks a table, except through masks: a symbol or text mask longer than the
/// values it replaces grows every row, so the size is checked against this before the output is
/// allocated.
const MAX_BODY_BYTES: usize = i32::MAX as usize - HEADER_LEN;

/// How many names [`names_extent`] skips one `memchr` at a time before it counts NULs a block at a
/// time instead.
///
/// Filtering to 10% of a million rows skips about ten names between kept rows: a block count would
/// read a whole block to skip those few.
/// Past a block's worth of names (at 4 to 8 bytes a name) counting whole blocks runs at memory
/// speed, where a call per name does not.
const NAMES_ONE_BY_ONE: usize = 512;

/// How many bytes of a name [`nul`] scans with a plain loop before it calls `memchr`.
///
/// Symbols are mostly short (tickers, venues, codes: 1 to 8 bytes), and a `memchr` call costs
/// more than scanning such a name; it only pays past a few words.
const SHORT_NAME_BYTES: usize = 16;

/// The slots of the table of answers in [`RowSelection::from_symbols`] (a power of two).
///
/// A symbol column holds few distinct names (100 tickers in a million trades), and a predicate
/// such as a hash-set lookup costs more than finding its answer again.
/// 1024 slots (32 KiB, on the heap so that small stacks such as a wasm guest's are spared) keep
/// the answers for several hundred names with few collisions; past that, a crowded slot asks the
/// predicate again rather than growing.
const SYMBOL_CACHE_SLOTS: usize = 1024;

/// How many slots [`Answers`] probes for a name before it gives up and asks the predicate.
const SYMBOL_CACHE_PROBES: usize = 4;

/// The block that [`names_extent`] counts NULs in at a time: a page, so that the count is a
/// straight vectorised pass and only the block holding the last name is searched byte by byte.
const NAMES_BLOCK_BYTES: usize = 4096;

// ----- Errors.

/// Why a body cannot be located or rewritten.
///
/// Names in the messages are escaped and cut to 64 bytes, since they come from an upstream.
/// [`TableError::fault`] tells the upstream's bytes from the plan's edit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The bytes of a table are not well formed.
    #[error("malformed {table}: {source}")]
    Decode {
        /// The table, as `` table `name `` or `the table`.
        table: String,
        /// What is wrong with the bytes.
        source: DecodeError,
    },
    /// A table is put together in a way q never builds.
    #[error("malformed {table} at offset {offset}: {what}")]
    Malformed {
        /// The table.
        table: String,
        /// Where in the body.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A column whose type cannot be split by row: an atom where a column should be, an
    /// enumeration (which kdb+ resolves before sending), or anything else that is not a vector or a
    /// general list.
    #[error("column {column} of {table} has type {type_code}, which cannot be split by row")]
    UnsupportedColumn {
        /// The table.
        table: String,
        /// The column, as `` `name `` or its position.
        column: String,
        /// The column's type byte.
        type_code: i8,
    },
    /// Columns of one table (or the two halves of a keyed table) with different row counts.
    #[error("column {column} of {table} has {found} rows where the first column has {expected}")]
    UnequalColumns {
        /// The table.
        table: String,
        /// The first column whose count differs.
        column: String,
        /// The first column's count.
        expected: usize,
        /// This column's count.
        found: usize,
    },
    /// A schema for an update whose column count differs from the update's.
    #[error("the schema for {table} names {names} columns but the update has {columns}")]
    SchemaLength {
        /// The table.
        table: String,
        /// The names in the schema.
        names: usize,
        /// The columns in the update.
        columns: usize,
    },
    /// An edit names a column the table does not have.
    #[error("{table} has no column {column}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
    },
    /// A row selection made for a table of another length.
    #[error("the row selection for {table} has {found} rows but the table has {expected}")]
    SelectionLength {
        /// The table.
        table: String,
        /// The table's rows.
        expected: usize,
        /// The selection's rows.
        found: usize,
    },
    /// A mask whose value is not of the column's type.
    #[error(
        "column {column} of {table} has type {column_type}, and a mask of type {mask_type} does \
         not fit it"
    )]
    MaskType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type byte.
        column_type: i8,
        /// The mask value's type byte (10 for text).
        mask_type: i8,
    },
    /// A symbol mask with a NUL byte, which would end the symbol early.
    #[error("the mask for column {column} of {table} holds a NUL byte, which ends a symbol")]
    NulInMask {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A text mask longer than a q vector can be.
    #[error("the text mask for column {column} of {table} is {len} bytes, longer than a q vector")]
    MaskTooLong {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The text's length.
        len: usize,
    },
    /// An edit that drops every column of a table, or every key column of a keyed table: q has no
    /// such table.
    #[error("the edit drops every {what} of {table}")]
    DropsEveryColumn {
        /// The table.
        table: String,
        /// `column` or `key column`.
        what: &'static str,
    },
    /// An edit that drops a column of an update that has no column names: the receiver reads the
    /// columns by position, so the ones after it would land in the wrong place.
    #[error(
        "column {column} of {table} is positional (the update has no column names): mask it \
         instead of dropping it"
    )]
    PositionalDrop {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A column of another type than a selection needs (`from_symbols` on a float column).
    #[error("column {column} of {table} has type {type_code}, not {expected}")]
    ColumnType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type byte.
        type_code: i8,
        /// What the selection needs.
        expected: &'static str,
    },
    /// The edited value would not fit a message: masks longer than the values they replace.
    #[error("the edited value would take {len} bytes, more than the {limit} a message can carry")]
    TooLarge {
        /// The size it would take.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl TableError {
    /// Whose fault the error is: [`Fault::Peer`] for the upstream's bytes (malformed, or a table
    /// that cannot be split by row), [`Fault::Local`] for an edit that does not fit its table.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Decode { .. }
            | Self::Malformed { .. }
            | Self::UnsupportedColumn { .. }
            | Self::UnequalColumns { .. } => Fault::Peer,
            Self::SchemaLength { .. }
            | Self::UnknownColumn { .. }
            | Self::SelectionLength { .. }
            | Self::MaskType { .. }
            | Self::NulInMask { .. }
            | Self::MaskTooLong { .. }
            | Self::DropsEveryColumn { .. }
            | Self::PositionalDrop { .. }
            | Self::ColumnType { .. }
            | Self::TooLarge { .. } => Fault::Local,
        }
    }
}

/// A name for a message: escaped, and cut to [`MAX_SHOWN_NAME_BYTES`].
fn show(name: &[u8]) -> String {
    let cut = name.get(..MAX_SHOWN_NAME_BYTES).unwrap_or(name);
    let mut text = cut.escape_ascii().to_string();
    if cut.len() < name.len() {
        text.push_str("...");
    }
    text
}

/// A table for a message: `` table `trade `` or `the table`.
fn table_label(name: Option<&[u8]>) -> String {
    match name {
        Some(name) => format!("table `{}", show(name)),
        None => "the table".to_owned(),
    }
}

/// A column for a message: `` `sym ``, or its position when it has no name.
fn column_label(name: Option<&[u8]>, index: usize) -> String {
    match name {
        Some(name) => format!("`{}", show(name)),
        None => index.to_string(),
    }
}

// ----- Reading.

/// A body and its byte order, read at given offsets with every read checked against the body.
#[derive(Clone, Copy)]
struct Bytes<'a> {
    body: &'a [u8],
    endian: Endian,
}

impl<'a> Bytes<'a> {
    fn byte(&self, pos: usize) -> Result<u8, DecodeError> {
        self.body.get(pos).copied().ok_or(DecodeError::Truncated {
            offset: pos,
            needed: 1,
        })
    }

    fn type_at(&self, pos: usize) -> Result<i8, DecodeError> {
        Ok(self.byte(pos)? as i8)
    }

    fn attr(&self, pos: usize) -> Result<Attr, DecodeError> {
        let byte = self.byte(pos)?;
        Attr::from_byte(byte).ok_or(DecodeError::BadAttribute {
            attr: byte,
            offset: pos,
        })
    }

    /// A vector's or list's count, checked to be non-negative.
    fn count(&self, pos: usize) -> Result<usize, DecodeError> {
        let raw: [u8; 4] = *self
            .body
            .get(pos..)
            .and_then(|rest| rest.first_chunk())
            .ok_or(DecodeError::Truncated {
                offset: pos,
                needed: 4 - self.body.len().saturating_sub(pos).min(4),
            })?;
        let count = match self.endian {
            Endian::Little => i32::from_le_bytes(raw),
            Endian::Big => i32::from_be_bytes(raw),
        };
        usize::try_from(count).map_err(|_| DecodeError::NegativeCount { count, offset: pos })
    }

    /// The bytes from `pos` on.
    fn rest(&self, pos: usize) -> &'a [u8] {
        self.body.get(pos..).unwrap_or_default()
    }

    /// `len` bytes at `pos`.
    fn slice(&self, pos: usize, len: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest(pos);
        rest.get(..len).ok_or_else(|| DecodeError::Truncated {
            offset: pos + rest.len(),
            needed: len - rest.len(),
        })
    }

    /// A NUL-terminated name at `pos`, without its NUL.
    fn name(&self, pos: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest(pos);
        let end = memchr::memchr(0, rest).ok_or(DecodeError::UnterminatedSymbol { offset: pos })?;
        Ok(&rest[..end])
    }
}

/// Where the first NUL of `bytes` is: a plain loop over a short name's bytes, `memchr` past them.
fn nul(bytes: &[u8]) -> Option<usize> {
    let head = bytes.get(..SHORT_NAME_BYTES).unwrap_or(bytes);
    match head.iter().position(|&b| b == 0) {
        Some(at) => Some(at),
        None => memchr::memchr(0, &bytes[head.len()..]).map(|at| head.len() + at),
    }
}

/// The length of the first `count` NUL-terminated names at the start of `bytes`, terminators
/// included; `None` when `bytes` holds fewer.
fn names_extent(bytes: &[u8], count: usize) -> Option<usize> {
    if count <= NAMES_ONE_BY_ONE {
        let mut end = 0;
        for _ in 0..count {
            end += nul(bytes.get(end..)?)? + 1;
        }
        return Some(end);
    }
    let mut left = count;
    for (i, block) in bytes.chunks(NAMES_BLOCK_BYTES).enumerate() {
        let nuls = crate::decode::count_nuls(block);
        if nuls >= left {
            let last = memchr::memchr_iter(0, block).nth(left - 1)?;
            return Some(i * NAMES_BLOCK_BYTES + last + 1);
        }
        left -= nuls;
    }
    None
}

/// The names of a symbol vector's items.
#[derive(Clone, Debug)]
struct Names<'a> {
    bytes: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let end = nul(self.bytes)?;
        let name = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        self.left -= 1;
        Some(name)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// An atom of a fixed-width type from its item bytes.
fn fixed_atom(type_code: i8, bytes: &[u8], endian: Endian) -> Option<Atom> {
    macro_rules! number {
        ($t:ty) => {{
            let raw = *bytes.first_chunk()?;
            match endian {
                Endian::Little => <$t>::from_le_bytes(raw),
                Endian::Big => <$t>::from_be_bytes(raw),
            }
        }};
    }
    Some(match type_code {
        type_code::BOOLEAN => Atom::Boolean(*bytes.first()? != 0),
        type_code::GUID => Atom::Guid(*bytes.first_chunk()?),
        type_code::BYTE => Atom::Byte(*bytes.first()?),
        type_code::SHORT => Atom::Short(number!(i16)),
        type_code::INT => Atom::Int(number!(i32)),
        type_code::LONG => Atom::Long(number!(i64)),
        type_code::REAL => Atom::Real(number!(f32)),
        type_code::FLOAT => Atom::Float(number!(f64)),
        type_code::CHAR => Atom::Char(*bytes.first()?),
        type_code::TIMESTAMP => Atom::Timestamp(number!(i64)),
        type_code::MONTH => Atom::Month(number!(i32)),
        type_code::DATE => Atom::Date(number!(i32)),
        type_code::DATETIME => Atom::Datetime(number!(f64)),
        type_code::TIMESPAN => Atom::Timespan(number!(i64)),
        type_code::MINUTE => Atom::Minute(number!(i32)),
        type_code::SECOND => Atom::Second(number!(i32)),
        type_code::TIME => Atom::Time(number!(i32)),
        _ => return None,
    })
}

/// q's null for the items of a vector type: `0Nh`, `0Ni`, `0Nj`, `0Ne`, `0n`, `0Np` and the other
/// temporal nulls, `` ` ``, `" "`, `0x00`, `0b` and the zero GUID.
///
/// The float nulls are written as the bit patterns q emits (reference §4.1), not whatever NaN
/// Rust's constants hold.
fn null_atom(type_code: i8) -> Option<Atom> {
    let real = f32::from_bits(0x7fc0_0000);
    let float = f64::from_bits(0x7ff8_0000_0000_0000);
    Some(match type_code {
        type_code::BOOLEAN => Atom::Boolean(false),
        type_code::GUID => Atom::Guid([0; 16]),
        type_code::BYTE => Atom::Byte(0),
        type_code::SHORT => Atom::Short(i16::MIN),
        type_code::INT => Atom::Int(i32::MIN),
        type_code::LONG => Atom::Long(i64::MIN),
        type_code::REAL => Atom::Real(real),
        type_code::FLOAT => Atom::Float(float),
        type_code::CHAR => Atom::Char(b' '),
        type_code::SYMBOL => Atom::Symbol(Vec::new()),
        type_code::TIMESTAMP => Atom::Timestamp(i64::MIN),
        type_code::MONTH => Atom::Month(i32::MIN),
        type_code::DATE => Atom::Date(i32::MIN),
        type_code::DATETIME => Atom::Datetime(float),
        type_code::TIMESPAN => Atom::Timespan(i64::MIN),
        type_code::MINUTE => Atom::Minute(i32::MIN),
        type_code::SECOND => Atom::Second(i32::MIN),
        type_code::TIME => Atom::Time(i32::MIN),
        _ => return None,
    })
}

// ----- Views.

/// One column of a located table: where its bytes are, and what they hold.
///
/// A view reads the bytes in place; nothing is decoded until asked for.
#[derive(Clone, Copy, Debug)]
pub struct ColumnView<'a> {
    table: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
    index: usize,
    key: bool,
    type_code: i8,
    attr: Attr,
    len: usize,
    /// The whole encoded column, type byte first.
    bytes: &'a [u8],
    /// Where `bytes` starts in the body.
    offset: usize,
    endian: Endian,
}

impl<'a> ColumnView<'a> {
    /// The column's name: from the table, or from a [`Schemas`] entry for an update without
    /// names; `None` for a positional column that no schema names.
    pub fn name(&self) -> Option<&'a [u8]> {
        self.name
    }

    /// The column's position in its [`TableView`], key columns first.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the column is one of a keyed table's key columns.
    pub fn is_key(&self) -> bool {
        self.key
    }

    /// The type byte: 1 to 19 for a vector (11 for symbols), 0 for a general list (strings, nested
    /// lists).
    pub fn type_code(&self) -> i8 {
        self.type_code
    }

    /// The column's attribute.
    pub fn attr(&self) -> Attr {
        self.attr
    }

    /// The number of items: the table's row count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the column has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the encoded column is in the body.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.bytes.len()
    }

    /// The encoded column, type byte first.
    pub fn as_encoded(&self) -> &'a [u8] {
        self.bytes
    }

    /// The column's items, after its 6-byte header: `len` fixed-width numbers in the body's byte
    /// order, NUL-terminated names back to back, or a general list's encoded items.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes.get(6..).unwrap_or_default()
    }

    /// The byte order of the numbers in [`ColumnView::as_bytes`].
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// The column as a value view, for the questions [`ValueView`] answers.
    pub fn as_value(&self) -> ValueView<'a> {
        ValueView::trusted(self.bytes, self.endian)
    }

    /// The names of a symbol column, without copying them.
    pub fn symbols(&self) -> Option<impl Iterator<Item = &'a [u8]> + 'a> {
        (self.type_code == type_code::SYMBOL).then(|| Names {
            bytes: self.as_bytes(),
            left: self.len,
        })
    }

    /// The items of a general-list column, each a view.
    pub fn items(&self) -> Option<ListItems<'a>> {
        self.as_value().items()
    }

    /// The item in `row` of a vector column, as an atom; `None` past the end and for a general
    /// list.
    ///
    /// Constant time for fixed-width types; a symbol column is walked up to `row`.
    pub fn atom(&self, row: usize) -> Option<Atom> {
        if row >= self.len {
            return None;
        }
        if self.type_code == type_code::SYMBOL {
            return Some(Atom::Symbol(self.symbols()?.nth(row)?.to_vec()));
        }
        let width = decode::item_size(self.type_code)?;
        let bytes = self.as_bytes().get(row * width..)?;
        fixed_atom(self.type_code, bytes, self.endian)
    }

    /// The items of a vector column, in order, as atoms.
    pub fn atoms(&self) -> Option<impl Iterator<Item = Atom> + 'a> {
        let column = *self;
        let names = self.symbols();
        let width = decode::item_size(self.type_code);
        if names.is_none() && width.is_none() {
            return None;
        }
        let fixed = width.into_iter().flat_map(move |width| {
            column
                .as_bytes()
                .chunks_exact(width)
                .take(column.len)
                .filter_map(move |item| fixed_atom(column.type_code, item, column.endian))
        });
        let names = names
            .into_iter()
            .flatten()
            .map(|name| Atom::Symbol(name.to_vec()));
        Some(fixed.chain(names))
    }

    fn label(&self) -> String {
        column_label(self.name, self.index)
    }

    fn malformed(&self, source: DecodeError) -> TableError {
        TableError::Decode {
            table: table_label(self.table),
            source,
        }
    }

    fn wrong_type(&self, expected: &'static str) -> TableError {
        TableError::ColumnType {
            table: table_label(self.table),
            column: self.label(),
            type_code: self.type_code,
            expected,
        }
    }
}

/// How a view's columns sit in the bytes, for writing them back.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// A table: `98 attr 99 names columns`.
    Table(Half),
    /// A keyed table: `99 key value`, or `127` for a sorted one.
    Keyed {
        sorted: bool,
        key: Half,
        value: Half,
    },
    /// An update's columns without names: `0 attr count columns`.
    Columns { attr: Attr },
}

/// One table's framing: its attributes, and which of the view's columns are its.
#[derive(Clone, Copy, Debug)]
struct Half {
    /// The table's attribute (`s#` for a sorted table).
    attr: Attr,
    /// The column-name vector's attribute, kept as it came.
    names_attr: Attr,
    /// The attribute of the general list of columns, kept as it came.
    list_attr: Attr,
    /// The first of the view's columns that belongs here.
    start: usize,
    /// One past the last.
    end: usize,
}

/// A located table, zero copy: its columns are views of the body.
///
/// For a keyed table the key columns come first, then the value columns; both have the same rows.
#[derive(Clone, Debug)]
pub struct TableView<'a> {
    name: Option<&'a [u8]>,
    rows: usize,
    columns: Vec<ColumnView<'a>>,
    layout: Layout,
    endian: Endian,
}

impl<'a> TableView<'a> {
    /// The table's name: the key of a dictionary of tables, the table of an update; `None` for a
    /// table on its own.
    pub fn name(&self) -> Option<&'a [u8]> {
        self.name
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns, key columns included.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The columns, key columns first.
    pub fn columns(&self) -> std::slice::Iter<'_, ColumnView<'a>> {
        self.columns.iter()
    }

    /// The column called `name`.
    pub fn column(&self, name: impl AsRef<[u8]>) -> Option<&ColumnView<'a>> {
        let name = name.as_ref();
        self.columns.iter().find(|c| c.name == Some(name))
    }

    /// The column called `name`, or an error that names the table and the column.
    ///
    /// # Errors
    ///
    /// [`TableError::UnknownColumn`] when there is no such column.
    pub fn require(&self, name: impl AsRef<[u8]>) -> Result<&ColumnView<'a>, TableError> {
        let name = name.as_ref();
        self.column(name).ok_or_else(|| TableError::UnknownColumn {
            table: self.label(),
            column: column_label(Some(name), 0),
        })
    }

    /// The column at position `index`, key columns first.
    pub fn column_at(&self, index: usize) -> Option<&ColumnView<'a>> {
        self.columns.get(index)
    }

    /// Whether this is a keyed table.
    pub fn is_keyed(&self) -> bool {
        matches!(self.layout, Layout::Keyed { .. })
    }

    /// The number of key columns: 0 unless keyed.
    pub fn key_count(&self) -> usize {
        match self.layout {
            Layout::Keyed { key, .. } => key.end - key.start,
            _ => 0,
        }
    }

    /// Whether the columns are positional: an update's list of columns, which has no names on the
    /// wire (a [`Schemas`] entry may name them, but the receiver still reads them by position).
    pub fn is_positional(&self) -> bool {
        matches!(self.layout, Layout::Columns { .. })
    }

    /// The byte order of the body.
    pub fn endian(&self) -> Endian {
        self.endian
    }

    fn label(&self) -> String {
        table_label(self.name)
    }

    /// The position of a column an edit names.
    fn position(&self, column: &ColumnRef) -> Result<usize, TableError> {
        let found = match column {
            ColumnRef::Name(name) => self
                .columns
                .iter()
                .position(|c| c.name == Some(name.as_slice())),
            ColumnRef::Index(index) => (*index < self.columns.len()).then_some(*index),
        };
        found.ok_or_else(|| TableError::UnknownColumn {
            table: self.label(),
            column: column.to_string(),
        })
    }
}

/// The dictionary around a dictionary of tables.
#[derive(Clone, Debug)]
pub struct Tables<'a> {
    sorted: bool,
    keys_attr: Attr,
    /// The key names in their wire form, NUL-terminated back to back.
    keys: &'a [u8],
    list_attr: Attr,
    tables: Vec<TableView<'a>>,
}

impl<'a> Tables<'a> {
    /// The tables, each named by its key.
    pub fn tables(&self) -> &[TableView<'a>] {
        &self.tables
    }

    /// Whether the dictionary is the sorted form (type 127).
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }
}

/// An update: `` (`upd;`trade;x) ``, with `x` a table or a list of columns.
#[derive(Clone, Debug)]
pub struct Update<'a> {
    list_attr: Attr,
    /// The encoded function and table name (two symbol atoms), copied as they are.
    head: &'a [u8],
    function: &'a [u8],
    table: TableView<'a>,
}

impl<'a> Update<'a> {
    /// The function called: `upd`, `.u.upd` and so on.
    pub fn function(&self) -> &'a [u8] {
        self.function
    }

    /// The table updated; [`TableView::name`] is its name.
    pub fn table(&self) -> &TableView<'a> {
        &self.table
    }
}

/// What a body is, with views of its tables.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Located<'a> {
    /// None of the shapes: an atom, a vector, a call, an error and so on.
    ///
    /// A policy that must not leak data decides what to do with these itself (refuse them, or
    /// pass them); nothing here looks inside them.
    NotATable,
    /// A table.
    Table(TableView<'a>),
    /// A keyed table, as one view with its key columns first.
    Keyed(TableView<'a>),
    /// A dictionary from names to tables (or keyed tables).
    Tables(Tables<'a>),
    /// An update of a table.
    Update(Update<'a>),
}

impl<'a> Located<'a> {
    /// Every table located, in the order they are in the body.
    pub fn tables(&self) -> &[TableView<'a>] {
        match self {
            Self::NotATable => &[],
            Self::Table(view) | Self::Keyed(view) => std::slice::from_ref(view),
            Self::Tables(tables) => &tables.tables,
            Self::Update(update) => std::slice::from_ref(&update.table),
        }
    }
}

/// Column names for updates that come without them, by table name: `trade` → `time`, `sym`,
/// `price`, `size`, as the tickerplant's schema says.
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    tables: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Schemas {
    /// No schemas: the columns of updates without names are known by position only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the column names of `table`.
    pub fn insert<S: AsRef<[u8]>>(
        &mut self,
        table: impl AsRef<[u8]>,
        columns: impl IntoIterator<Item = S>,
    ) {
        let columns = columns.into_iter().map(|c| c.as_ref().to_vec()).collect();
        self.tables.insert(table.as_ref().to_vec(), columns);
    }

    /// With the column names of `table`.
    #[must_use]
    pub fn with<S: AsRef<[u8]>>(
        mut self,
        table: impl AsRef<[u8]>,
        columns: impl IntoIterator<Item = S>,
    ) -> Self {
        self.insert(table, columns);
        self
    }

    /// The column names of `table`.
    pub fn get(&self, table: &[u8]) -> Option<&[Vec<u8>]> {
        self.tables.get(table).map(Vec::as_slice)
    }
}

// ----- Locating.

/// The schemas of [`locate`] and [`rewrite`]: none.
static NO_SCHEMAS: LazyLock<Schemas> = LazyLock::new(Schemas::new);

/// Finds the tables in a body that [`crate::validate`] accepted.
///
/// # Errors
///
/// [`TableError`] when the body has one of the shapes but its bytes are malformed, or a column
/// cannot be split by row (see [`locate_with`]).
pub fn locate(body: &[u8], endian: Endian) -> Result<Located<'_>, TableError> {
    locate_with(body, endian, &NO_SCHEMAS)
}

/// Finds the tables in a body, naming the columns of updates that come without names from
/// `schemas`.
///
/// The body should have passed [`crate::validate`]; if it has not, every length is still checked
/// against the bytes present, and bad bytes are an error, never a panic or an allocation of what
/// they claim.
/// A shape is recognised by its first bytes (a table's type, a dictionary whose keys are a table
/// or a symbol vector and whose values are all tables, a three-item list headed by two symbol
/// atoms); anything else is [`Located::NotATable`].
///
/// # Errors
///
/// [`TableError`] when the body has one of the shapes but its bytes are malformed, a column cannot
/// be split by row (an atom or an enumeration where a column should be), the columns of a table
/// differ in length, or a schema's length differs from its update's.
pub fn locate_with<'a>(
    body: &'a [u8],
    endian: Endian,
    schemas: &'a Schemas,
) -> Result<Located<'a>, TableError> {
    let b = Bytes { body, endian };
    let Some(&first) = body.first() else {
        return Ok(Located::NotATable);
    };
    let (located, end) = match first as i8 {
        type_code::TABLE | type_code::DICT | type_code::SORTED_DICT => {
            match read_tabular(b, 0, None)? {
                Some((view, end)) if view.is_keyed() => (Located::Keyed(view), end),
                Some((view, end)) => (Located::Table(view), end),
                None if first as i8 == type_code::TABLE => return Ok(Located::NotATable),
                None => match read_tables(b)? {
                    Some((tables, end)) => (Located::Tables(tables), end),
                    None => return Ok(Located::NotATable),
                },
            }
        }
        type_code::LIST => match read_update(b, schemas)? {
            Some((update, end)) => (Located::Update(update), end),
            None => return Ok(Located::NotATable),
        },
        _ => return Ok(Located::NotATable),
    };
    if end != body.len() {
        let table = located.tables().first().map(TableView::label);
        return Err(TableError::Decode {
            table: table.unwrap_or_else(|| table_label(None)),
            source: DecodeError::TrailingBytes {
                offset: end,
                extra: body.len().saturating_sub(end),
            },
        });
    }
    Ok(located)
}

/// A table or a keyed table at `pos`, with where it ends; `None` for any other value.
fn read_tabular<'a>(
    b: Bytes<'a>,
    pos: usize,
    name: Option<&'a [u8]>,
) -> Result<Option<(TableView<'a>, usize)>, TableError> {
    let malformed = |source| TableError::Decode {
        table: table_label(name),
        source,
    };
    let t = b.type_at(pos).map_err(malformed)?;
    let mut columns = Vec::new();
    let (layout, rows, end) = match t {
        type_code::TABLE => {
            let (half, rows, end) = read_table(b, pos, name, &mut columns, false)?;
            (Layout::Table(half), rows, end)
        }
        type_code::DICT | type_code::SORTED_DICT => {
            if b.type_at(pos + 1).map_err(malformed)? != type_code::TABLE {
                return Ok(None);
            }
            let (key, key_rows, key_end) = read_table(b, pos + 1, name, &mut columns, true)?;
            if b.type_at(key_end).map_err(malformed)? != type_code::TABLE {
                return Ok(None);
            }
            let (value, value_rows, end) = read_table(b, key_end, name, &mut columns, false)?;
            // A half without columns has no rows of its own: q keys a one-column table with `1!`
            // into a keyed table whose value table has no columns.
            let rows = match (key_rows, value_rows) {
                (Some(k), Some(v)) if k != v => {
                    let column = &columns[value.start];
                    return Err(TableError::UnequalColumns {
                        table: table_label(name),
                        column: column.label(),
                        expected: k,
                        found: v,
                    });
                }
                (k, v) => k.or(v),
            };
            let sorted = t == type_code::SORTED_DICT;
            (Layout::Keyed { sorted, key, value }, rows, end)
        }
        _ => return Ok(None),
    };
    Ok(Some((
        TableView {
            name,
            rows: rows.unwrap_or(0),
            columns,
            layout,
            endian: b.endian,
        },
        end,
    )))
}

/// The table at `pos` (type 98): its framing, its columns pushed onto `columns`, its row count
/// (`None` without columns) and where it ends.
fn read_table<'a>(
    b: Bytes<'a>,
    pos: usize,
    name: Option<&'a [u8]>,
    columns: &mut Vec<ColumnView<'a>>,
    key: bool,
) -> Result<(Half, Option<usize>, usize), TableError> {
    let malformed = |source| TableError::Decode {
        table: table_label(name),
        source,
    };
    let shape = |offset, what| TableError::Malformed {
        table: table_label(name),
        offset,
        what,
    };
    let attr = b.attr(pos + 1).map_err(malformed)?;
    if b.type_at(pos + 2).map_err(malformed)? != type_code::DICT {
        return Err(shape(pos + 2, "a table must hold a dictionary"));
    }
    let names_pos = pos + 3;
    if b.type_at(names_pos).map_err(malformed)? != type_code::SYMBOL {
        return Err(shape(names_pos, "the column names are not a symbol vector"));
    }
    let names_attr = b.attr(names_pos + 1).map_err(malformed)?;
    let count = b.count(names_pos + 2).map_err(malformed)?;
    let names = symbol_names(b, names_pos + 6, count).map_err(malformed)?;
    let list_pos = names_pos + 6 + names.iter().map(|n| n.len() + 1).sum::<usize>();
    if b.type_at(list_pos).map_err(malformed)? != type_code::LIST {
        // A splayed table's reference carries a symbol here (`` `:dir/ ``): no rows to edit.
        return Err(shape(list_pos, "the columns are not a general list"));
    }
    let list_attr = b.attr(list_pos + 1).map_err(malformed)?;
    if b.count(list_pos + 2).map_err(malformed)? != count {
        return Err(shape(
            list_pos + 2,
            "the names and the columns differ in count",
        ));
    }
    let start = columns.len();
    let mut at = list_pos + 6;
    let mut rows = None;
    for (i, column_name) in names.into_iter().enumerate() {
        let (column, end) = read_column(b, at, name, Some(column_name), start + i, key)?;
        check_rows(&mut rows, &column)?;
        columns.push(column);
        at = end;
    }
    let half = Half {
        attr,
        names_attr,
        list_attr,
        start,
        end: columns.len(),
    };
    Ok((half, rows, at))
}

/// `count` NUL-terminated names at `pos`, each checked to end within the body.
fn symbol_names<'a>(b: Bytes<'a>, pos: usize, count: usize) -> Result<Vec<&'a [u8]>, DecodeError> {
    let rest = b.rest(pos);
    // Every name takes at least its NUL, so the count is bounded by real bytes before the vector
    // of names is allocated.
    if count > rest.len() {
        return Err(DecodeError::CountTooLarge {
            count,
            offset: pos - 4,
            remaining: rest.len(),
        });
    }
    let mut names = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let name = b.name(pos + at)?;
        at += name.len() + 1;
        names.push(name);
    }
    Ok(names)
}

/// Checks a column's length against the first column's.
fn check_rows(rows: &mut Option<usize>, column: &ColumnView<'_>) -> Result<(), TableError> {
    match *rows {
        None => *rows = Some(column.len),
        Some(expected) if expected != column.len => {
            return Err(TableError::UnequalColumns {
                table: table_label(column.table),
                column: column.label(),
                expected,
                found: column.len,
            });
        }
        Some(_) => {}
    }
    Ok(())
}

/// The column at `pos`, and where it ends.
fn read_column<'a>(
    b: Bytes<'a>,
    pos: usize,
    table: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
    index: usize,
    key: bool,
) -> Result<(ColumnView<'a>, usize), TableError> {
    let malformed = |source| TableError::Decode {
        table: table_label(table),
        source,
    };
    let t = b.type_at(pos).map_err(malformed)?;
    let width = decode::item_size(t);
    if !(t == type_code::LIST || t == type_code::SYMBOL || (t > 0 && width.is_some())) {
        // Enumerations (20 to 76) do not cross IPC (kdb+ resolves them before sending, and the
        // validator refuses them), and atoms, dictionaries, tables and functions hold no rows.
        return Err(TableError::UnsupportedColumn {
            table: table_label(table),
            column: column_label(name, index),
            type_code: t,
        });
    }
    let attr = b.attr(pos + 1).map_err(malformed)?;
    let len = b.count(pos + 2).map_err(malformed)?;
    let end = match width {
        Some(width) => {
            let size = len.saturating_mul(width);
            b.slice(pos + 6, size).map_err(malformed)?;
            pos + 6 + size
        }
        None if t == type_code::SYMBOL => {
            let extent = names_extent(b.rest(pos + 6), len)
                .ok_or(DecodeError::UnterminatedSymbol { offset: pos + 6 })
                .map_err(malformed)?;
            pos + 6 + extent
        }
        // A general list: every item is walked (and so checked against the body) once here, so
        // that copying its items later finds where each ends.
        None => {
            let mut at = pos + 6;
            for _ in 0..len {
                at = item_end(b.body, at, b.endian).map_err(malformed)?;
            }
            at
        }
    };
    let view = ColumnView {
        table,
        name,
        index,
        key,
        type_code: t,
        attr,
        len,
        bytes: &b.body[pos..end],
        offset: pos,
        endian: b.endian,
    };
    Ok((view, end))
}

/// A dictionary of tables at the start of the body: symbol keys, and a general list of as many
/// tables; `None` for any other dictionary.
fn read_tables(b: Bytes<'_>) -> Result<Option<(Tables<'_>, usize)>, TableError> {
    let malformed = |source| TableError::Decode {
        table: "the dictionary of tables".to_owned(),
        source,
    };
    if b.type_at(1).map_err(malformed)? != type_code::SYMBOL {
        return Ok(None);
    }
    let keys_attr = b.attr(2).map_err(malformed)?;
    let count = b.count(3).map_err(malformed)?;
    let names = symbol_names(b, 7, count).map_err(malformed)?;
    let keys_len = names.iter().map(|n| n.len() + 1).sum::<usize>();
    let list_pos = 7 + keys_len;
    if count == 0
        || b.type_at(list_pos).map_err(malformed)? != type_code::LIST
        || b.count(list_pos + 2).map_err(malformed)? != count
    {
        return Ok(None);
    }
    let list_attr = b.attr(list_pos + 1).map_err(malformed)?;
    let mut views = Vec::with_capacity(count);
    let mut at = list_pos + 6;
    for name in names {
        let Some((view, end)) = read_tabular(b, at, Some(name))? else {
            return Ok(None);
        };
        views.push(view);
        at = end;
    }
    let tables = Tables {
        sorted: b.type_at(0).map_err(malformed)? == type_code::SORTED_DICT,
        keys_attr,
        keys: &b.body[7..list_pos],
        list_attr,
        tables: views,
    };
    Ok(Some((tables, at)))
}

/// An update at the start of the body: `` (`f;`t;x) `` with `x` a table, a keyed table or a list
/// of columns; `None` for any other list.
fn read_update<'a>(
    b: Bytes<'a>,
    schemas: &'a Schemas,
) -> Result<Option<(Update<'a>, usize)>, TableError> {
    let malformed = |source| TableError::Decode {
        table: "the update".to_owned(),
        source,
    };
    let list_attr = b.attr(1).map_err(malformed)?;
    if b.count(2).map_err(malformed)? != 3 || b.type_at(6).map_err(malformed)? != -type_code::SYMBOL
    {
        return Ok(None);
    }
    let function = b.name(7).map_err(malformed)?;
    let table_pos = 7 + function.len() + 1;
    if b.type_at(table_pos).map_err(malformed)? != -type_code::SYMBOL {
        return Ok(None);
    }
    let name = b.name(table_pos + 1).map_err(malformed)?;
    let x = table_pos + 1 + name.len() + 1;
    let head = &b.body[6..x];
    let (table, end) = match b.type_at(x).map_err(malformed)? {
        type_code::LIST => read_columns(b, x, name, schemas)?,
        _ => match read_tabular(b, x, Some(name))? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let update = Update {
        list_attr,
        head,
        function,
        table,
    };
    Ok(Some((update, end)))
}

/// An update's list of columns at `pos`, named from `schemas` when it has the table.
fn read_columns<'a>(
    b: Bytes<'a>,
    pos: usize,
    table: &'a [u8],
    schemas: &'a Schemas,
) -> Result<(TableView<'a>, usize), TableError> {
    let malformed = |source| TableError::Decode {
        table: table_label(Some(table)),
        source,
    };
    let attr = b.attr(pos + 1).map_err(malformed)?;
    let count = b.count(pos + 2).map_err(malformed)?;
    let names = schemas.get(table);
    if let Some(names) = names
        && names.len() != count
    {
        return Err(TableError::SchemaLength {
            table: table_label(Some(table)),
            names: names.len(),
            columns: count,
        });
    }
    // Every column takes at least its 6-byte header.
    let remaining = b.rest(pos + 6).len();
    if count > remaining / 6 {
        return Err(malformed(DecodeError::CountTooLarge {
            count,
            offset: pos + 2,
            remaining,
        }));
    }
    let mut views = Vec::with_capacity(count);
    let mut rows = None;
    let mut at = pos + 6;
    for i in 0..count {
        let name = names.and_then(|names| names.get(i)).map(Vec::as_slice);
        let (column, end) = read_column(b, at, Some(table), name, i, false)?;
        check_rows(&mut rows, &column)?;
        views.push(column);
        at = end;
    }
    let view = TableView {
        name: Some(table),
        rows: rows.unwrap_or(0),
        columns: views,
        layout: Layout::Columns { attr },
        endian: b.endian,
    };
    Ok((view, at))
}

// ----- Row selections.

/// The rows of a table to keep: a bitmap, a bit a row.
///
/// For 1M rows that is 125 KB, built in one pass over the deciding column and read a run of
/// consecutive kept rows at a time when the table is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowSelection {
    /// Bit `i % 64` of word `i / 64` is row `i`; bits past `rows` are always clear.
    words: Vec<u64>,
    rows: usize,
    count: usize,
}

impl RowSelection {
    /// Every row of a table of `rows`.
    pub fn all(rows: usize) -> Self {
        let mut words = vec![u64::MAX; rows.div_ceil(64)];
        if let Some(last) = words.last_mut()
            && !rows.is_multiple_of(64)
        {
            *last = (1 << (rows % 64)) - 1;
        }
        Self {
            words,
            rows,
            count: rows,
        }
    }

    /// No row of a table of `rows`.
    pub fn none(rows: usize) -> Self {
        Self {
            words: vec![0; rows.div_ceil(64)],
            rows,
            count: 0,
        }
    }

    /// The rows of a table of `rows` for which `keep` is true.
    pub fn from_fn(rows: usize, mut keep: impl FnMut(usize) -> bool) -> Self {
        let mut selection = Self::none(rows);
        for (w, word) in selection.words.iter_mut().enumerate() {
            let base = w * 64;
            let mut bits = 0u64;
            for bit in 0..(rows - base).min(64) {
                bits |= u64::from(keep(base + bit)) << bit;
            }
            *word = bits;
            selection.count += bits.count_ones() as usize;
        }
        selection
    }

    /// The rows whose flag is true, one flag a row.
    pub fn from_bools(flags: impl IntoIterator<Item = bool>) -> Self {
        let mut words = Vec::new();
        let mut rows = 0;
        let mut count = 0;
        for keep in flags {
            if rows % 64 == 0 {
                words.push(0);
            }
            if keep {
                if let Some(word) = words.last_mut() {
                    *word |= 1 << (rows % 64);
                }
                count += 1;
            }
            rows += 1;
        }
        Self { words, rows, count }
    }

    /// The rows whose symbol in `column` satisfies `keep`.
    ///
    /// Answers are remembered by name in a small cache, so `keep` runs about once for each
    /// distinct name rather than once a row: it must depend on the name alone.
    ///
    /// # Errors
    ///
    /// [`TableError::ColumnType`] when `column` is not a symbol column.
    pub fn from_symbols(
        column: &ColumnView<'_>,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Self, TableError> {
        let mut names = column
            .symbols()
            .ok_or_else(|| column.wrong_type("a symbol column"))?;
        let mut answers = Answers::new();
        Ok(Self::from_fn(column.len, |_| {
            names
                .next()
                .is_some_and(|name| answers.get(name, &mut keep))
        }))
    }

    /// The rows whose item in `column` (a vector of any type) satisfies `keep`.
    ///
    /// # Errors
    ///
    /// [`TableError::ColumnType`] when `column` is a general list.
    pub fn from_atoms(
        column: &ColumnView<'_>,
        mut keep: impl FnMut(&Atom) -> bool,
    ) -> Result<Self, TableError> {
        let mut atoms = column
            .atoms()
            .ok_or_else(|| column.wrong_type("a vector"))?;
        Ok(Self::from_fn(column.len, |_| {
            atoms.next().is_some_and(|atom| keep(&atom))
        }))
    }

    /// The rows whose item in `column` (a general list, such as a string column) satisfies
    /// `keep`.
    ///
    /// # Errors
    ///
    /// [`TableError::ColumnType`] when `column` is not a general list.
    pub fn from_items(
        column: &ColumnView<'_>,
        mut keep: impl FnMut(ValueView<'_>) -> bool,
    ) -> Result<Self, TableError> {
        let mut items = column
            .items()
            .ok_or_else(|| column.wrong_type("a general list"))?;
        Ok(Self::from_fn(column.len, |_| {
            items.next().is_some_and(&mut keep)
        }))
    }

    /// The number of rows of the table this selects from.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of rows kept.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `row` is kept.
    pub fn contains(&self, row: usize) -> bool {
        row < self.rows
            && self
                .words
                .get(row / 64)
                .is_some_and(|w| w >> (row % 64) & 1 == 1)
    }

    /// Keeps only the rows `other` keeps too; rows past the end of `other` are dropped.
    pub fn intersect(&mut self, other: &RowSelection) {
        let mut count = 0;
        for (i, word) in self.words.iter_mut().enumerate() {
            *word &= other.words.get(i).copied().unwrap_or(0);
            count += word.count_ones() as usize;
        }
        self.count = count;
    }

    /// Keeps only the first `max` kept rows.
    pub fn cap(&mut self, max: usize) {
        if self.count <= max {
            return;
        }
        let mut left = max;
        for word in &mut self.words {
            let ones = word.count_ones() as usize;
            if left >= ones {
                left -= ones;
                continue;
            }
            let mut bits = *word;
            let mut kept = 0;
            for _ in 0..left {
                let lowest = bits & bits.wrapping_neg();
                kept |= lowest;
                bits ^= lowest;
            }
            *word = kept;
            left = 0;
        }
        self.count = max;
    }

    /// The kept rows, as ranges of consecutive rows in order.
    pub fn runs(&self) -> Runs<'_> {
        Runs {
            selection: self,
            row: 0,
        }
    }

    /// The kept rows in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.runs().flatten()
    }

    /// The first row at or after `from` whose bit is `set`.
    fn next_bit(&self, from: usize, set: bool) -> Option<usize> {
        let flip = if set { 0 } else { u64::MAX };
        let mut w = from / 64;
        let mut word = (self.words.get(w)? ^ flip) & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let row = w * 64 + word.trailing_zeros() as usize;
                return (row < self.rows).then_some(row);
            }
            w += 1;
            word = self.words.get(w)? ^ flip;
        }
    }
}

/// The kept rows of a [`RowSelection`], as ranges of consecutive rows.
#[derive(Clone, Debug)]
pub struct Runs<'s> {
    selection: &'s RowSelection,
    row: usize,
}

impl Iterator for Runs<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let start = self.selection.next_bit(self.row, true)?;
        let end = self
            .selection
            .next_bit(start, false)
            .unwrap_or(self.selection.rows);
        self.row = end;
        Some(start..end)
    }
}

/// The answers of a predicate on names, remembered by name.
struct Answers<'n> {
    slots: Vec<Option<Answer<'n>>>,
}

#[derive(Clone, Copy)]
struct Answer<'n> {
    /// The name's first 8 bytes, zero-padded: with its length, all of a short name.
    prefix: u64,
    name: &'n [u8],
    kept: bool,
}

impl<'n> Answers<'n> {
    fn new() -> Self {
        Self {
            slots: vec![None; SYMBOL_CACHE_SLOTS],
        }
    }

    /// The answer for `name`, asking `keep` only for a name not seen yet.
    fn get(&mut self, name: &'n [u8], keep: &mut impl FnMut(&[u8]) -> bool) -> bool {
        // A loop rather than a copy into an array: a copy of a variable length is a call.
        let prefix = name
            .iter()
            .take(8)
            .enumerate()
            .fold(0u64, |prefix, (i, &byte)| {
                prefix | u64::from(byte) << (8 * i)
            });
        // Fibonacci hashing of the prefix and the length: a multiply and a shift.
        let hash =
            (prefix ^ (name.len() as u64).rotate_right(7)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let first = (hash >> (64 - SYMBOL_CACHE_SLOTS.trailing_zeros())) as usize;
        for probe in 0..SYMBOL_CACHE_PROBES {
            let slot = &mut self.slots[(first + probe) % SYMBOL_CACHE_SLOTS];
            match slot {
                Some(answer)
                    if answer.prefix == prefix
                        && answer.name.len() == name.len()
                        && (name.len() <= 8 || answer.name == name) =>
                {
                    return answer.kept;
                }
                Some(_) => {}
                None => {
                    let kept = keep(name);
                    *slot = Some(Answer { prefix, name, kept });
                    return kept;
                }
            }
        }
        keep(name)
    }
}

/// A predicate on symbol names asked once per distinct name, its answers remembered by name: on a
/// column of millions of rows and a few hundred distinct names, the predicate (a set lookup, say)
/// runs a few hundred times and each row costs a hash of its name's first bytes.
/// [`RowSelection::from_symbols`] uses it; code that reads names another way can too.
pub struct NameAnswers<'n, F> {
    answers: Answers<'n>,
    keep: F,
}

impl<'n, F: FnMut(&[u8]) -> bool> NameAnswers<'n, F> {
    /// Answers of `keep`, which must depend on the name alone.
    pub fn new(keep: F) -> Self {
        Self {
            answers: Answers::new(),
            keep,
        }
    }

    /// `keep(name)`, asked only the first time `name` is seen (nearly always).
    pub fn get(&mut self, name: &'n [u8]) -> bool {
        self.answers.get(name, &mut self.keep)
    }
}

// ----- Edits.

/// A column named in an edit: by name, or by position (key columns first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ColumnRef {
    /// The column with this name.
    Name(Vec<u8>),
    /// The column at this position.
    Index(usize),
}

impl From<&str> for ColumnRef {
    fn from(name: &str) -> Self {
        Self::Name(name.as_bytes().to_vec())
    }
}

impl From<&[u8]> for ColumnRef {
    fn from(name: &[u8]) -> Self {
        Self::Name(name.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for ColumnRef {
    fn from(name: &[u8; N]) -> Self {
        Self::Name(name.to_vec())
    }
}

impl From<Vec<u8>> for ColumnRef {
    fn from(name: Vec<u8>) -> Self {
        Self::Name(name)
    }
}

impl From<usize> for ColumnRef {
    fn from(index: usize) -> Self {
        Self::Index(index)
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "`{}", show(name)),
            Self::Index(index) => write!(f, "{index}"),
        }
    }
}

/// What a masked column's every kept row becomes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Mask {
    /// The column type's null: `0Nh`, `0Ni`, `0Nj`, `0Ne`, `0n`, `0Np` and the other temporal
    /// nulls, `` ` `` for symbols, `" "` for chars, `0x00`, `0b`, the zero GUID; an empty string
    /// for each item of a general list.
    Null,
    /// This atom, which must be of the column's type (a long for a long column, a symbol for a
    /// symbol column).
    Value(Atom),
    /// This string, for each item of a general-list column (a string column).
    Text(Vec<u8>),
}

/// What to do to one table: which rows to keep, which columns to drop and which to mask, and
/// how many rows at most.
///
/// The default changes nothing.
/// A column both dropped and masked is dropped; a column masked twice gets the last mask.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableEdit {
    /// The rows to keep; `None` keeps every row.
    pub rows: Option<RowSelection>,
    /// The columns to drop.
    pub drop: Vec<ColumnRef>,
    /// The columns to mask, and with what.
    pub mask: Vec<(ColumnRef, Mask)>,
    /// At most this many rows: the first ones kept by `rows`.
    pub max_rows: Option<usize>,
}

impl TableEdit {
    /// An edit that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the rows of `rows` only.
    #[must_use]
    pub fn keep_rows(mut self, rows: RowSelection) -> Self {
        self.rows = Some(rows);
        self
    }

    /// Drops a column.
    #[must_use]
    pub fn drop_column(mut self, column: impl Into<ColumnRef>) -> Self {
        self.drop.push(column.into());
        self
    }

    /// Masks a column.
    #[must_use]
    pub fn mask_column(mut self, column: impl Into<ColumnRef>, mask: Mask) -> Self {
        self.mask.push((column.into(), mask));
        self
    }

    /// Keeps at most `max` rows.
    #[must_use]
    pub fn max_rows(mut self, max: usize) -> Self {
        self.max_rows = Some(max);
        self
    }
}

/// What happens to one column.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Keep,
    Drop,
    /// Every kept row becomes this item: an atom's bytes without its type, a name and its NUL, or
    /// an encoded value for a general list.
    Mask(Vec<u8>),
}

/// An edit checked against its table.
#[derive(Debug)]
struct Plan {
    /// The rows kept; `None` when every row is.
    selection: Option<RowSelection>,
    /// The number of rows kept.
    rows: usize,
    /// One action a column of the view.
    actions: Vec<Action>,
    /// The kept rows as runs of consecutive rows, found once for every column and both passes;
    /// empty when every row is kept.
    runs: Vec<Range<usize>>,
    /// For each kept symbol or general-list column when rows are filtered, the byte ranges of
    /// its kept runs in [`ColumnView::as_bytes`]: walked once, for both passes.
    extents: Vec<Vec<Range<usize>>>,
}

impl Plan {
    fn changes(&self) -> bool {
        self.selection.is_some() || self.actions.iter().any(|a| *a != Action::Keep)
    }

    /// Whether a drop or a mask touches one of the columns of `half`.
    fn touches(&self, half: Half) -> bool {
        self.actions
            .get(half.start..half.end)
            .is_some_and(|actions| actions.iter().any(|a| *a != Action::Keep))
    }

    fn kept(&self, range: Range<usize>) -> usize {
        self.actions.get(range).map_or(0, |actions| {
            actions.iter().filter(|a| **a != Action::Drop).count()
        })
    }
}

/// Checks `edit` against `view` and turns it into a plan.
fn check_edit(view: &TableView<'_>, edit: TableEdit) -> Result<Plan, TableError> {
    let mut selection = edit.rows;
    if let Some(selection) = &selection
        && selection.rows != view.rows
    {
        return Err(TableError::SelectionLength {
            table: view.label(),
            expected: view.rows,
            found: selection.rows,
        });
    }
    if let Some(max) = edit.max_rows {
        selection
            .get_or_insert_with(|| RowSelection::all(view.rows))
            .cap(max);
    }
    if selection.as_ref().is_some_and(|s| s.count == view.rows) {
        selection = None;
    }
    let rows = selection.as_ref().map_or(view.rows, |s| s.count);

    let mut actions = vec![Action::Keep; view.columns.len()];
    for column in &edit.drop {
        let i = view.position(column)?;
        if view.is_positional() {
            return Err(TableError::PositionalDrop {
                table: view.label(),
                column: view.columns[i].label(),
            });
        }
        actions[i] = Action::Drop;
    }
    for (column, mask) in &edit.mask {
        let i = view.position(column)?;
        if actions[i] != Action::Drop {
            actions[i] = Action::Mask(mask_item(&view.columns[i], mask)?);
        }
    }
    let plan = Plan {
        selection,
        rows,
        actions,
        runs: Vec::new(),
        extents: Vec::new(),
    };
    let every = |what| TableError::DropsEveryColumn {
        table: view.label(),
        what,
    };
    match view.layout {
        Layout::Keyed { key, .. } if key.end > key.start && plan.kept(key.start..key.end) == 0 => {
            return Err(every("key column"));
        }
        _ if !view.columns.is_empty() && plan.kept(0..view.columns.len()) == 0 => {
            return Err(every("column"));
        }
        _ => {}
    }
    Ok(plan)
}

/// Finds the runs of kept rows and the byte extents of the kept runs of variable-width columns,
/// for a plan that changes its table.
fn prepare(view: &TableView<'_>, plan: &mut Plan) -> Result<(), TableError> {
    let Some(selection) = &plan.selection else {
        return Ok(());
    };
    plan.runs = selection.runs().collect();
    plan.extents = view
        .columns
        .iter()
        .zip(&plan.actions)
        .map(|(column, action)| match action {
            Action::Keep if decode::item_size(column.type_code).is_none() => {
                item_extents(column, &plan.runs)
            }
            _ => Ok(Vec::new()),
        })
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// The byte ranges of `runs` in a symbol or general-list column's items.
fn item_extents(
    column: &ColumnView<'_>,
    runs: &[Range<usize>],
) -> Result<Vec<Range<usize>>, TableError> {
    let data = column.as_bytes();
    let symbols = column.type_code == type_code::SYMBOL;
    // Where the `count` items from `pos` end.
    let step = |pos: usize, count: usize| -> Result<usize, TableError> {
        if symbols {
            let rest = data.get(pos..).unwrap_or_default();
            let len = names_extent(rest, count).ok_or_else(|| {
                column.malformed(DecodeError::UnterminatedSymbol {
                    offset: column.offset + 6 + pos,
                })
            })?;
            return Ok(pos + len);
        }
        let mut pos = pos;
        for _ in 0..count {
            pos = item_end(data, pos, column.endian).map_err(|e| column.malformed(e))?;
        }
        Ok(pos)
    };
    let mut extents = Vec::with_capacity(runs.len());
    let mut row = 0;
    let mut pos = 0;
    for run in runs {
        pos = step(pos, run.start - row)?;
        let start = pos;
        pos = step(pos, run.len())?;
        extents.push(start..pos);
        row = run.end;
    }
    Ok(extents)
}

/// The bytes every kept row of `column` becomes under `mask`.
fn mask_item(column: &ColumnView<'_>, mask: &Mask) -> Result<Vec<u8>, TableError> {
    let t = column.type_code;
    let wrong = |mask_type| TableError::MaskType {
        table: table_label(column.table),
        column: column.label(),
        column_type: t,
        mask_type,
    };
    let atom = match (t, mask) {
        (type_code::LIST, Mask::Null) => return Ok(string_item(b"")),
        (type_code::LIST, Mask::Text(text)) => {
            if i32::try_from(text.len()).is_err() {
                return Err(TableError::MaskTooLong {
                    table: table_label(column.table),
                    column: column.label(),
                    len: text.len(),
                });
            }
            return Ok(string_item(text));
        }
        (type_code::LIST, Mask::Value(atom)) => return Err(wrong(atom.type_code())),
        (_, Mask::Text(_)) => return Err(wrong(type_code::CHAR)),
        (_, Mask::Null) => null_atom(t).ok_or_else(|| wrong(-t))?,
        (_, Mask::Value(atom)) if atom.type_code() == -t => atom.clone(),
        (_, Mask::Value(atom)) => return Err(wrong(atom.type_code())),
    };
    let mut item = Vec::new();
    encode(&K::Atom(atom), &mut item).map_err(|_| TableError::NulInMask {
        table: table_label(column.table),
        column: column.label(),
    })?;
    // The atom's type byte goes: a vector's items are bare.
    item.remove(0);
    Ok(item)
}

/// A char vector holding `text`, encoded.
fn string_item(text: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(6 + text.len());
    item.extend_from_slice(&[type_code::CHAR as u8, Attr::None as u8]);
    // Invariant: the caller checked that the length fits an i32.
    item.extend_from_slice(&(text.len() as i32).to_le_bytes());
    item.extend_from_slice(text);
    item
}

// ----- Rewriting.

/// The result of [`rewrite`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// The body holds no table ([`Located::NotATable`]); the plan was not asked.
    NotATable,
    /// Every edit left its table as it was: forward the original bytes.
    ///
    /// For a big-endian body those bytes are big-endian; a caller that must send little-endian
    /// converts them as it would have without an edit.
    Unchanged,
    /// The new body: little-endian, uncompressed, one value of the input's shape.
    Changed(Vec<u8>),
}

/// Rewrites the tables in `body`: `plan` is asked for an edit of each table found, and the result
/// is the body with every edit applied.
///
/// See [`rewrite_with`], which also names the columns of updates that come without names.
///
/// # Errors
///
/// The plan's own errors, and [`TableError`] (through `E: From<TableError>`) when the body is
/// malformed or an edit does not fit its table.
pub fn rewrite<'a, E: From<TableError>>(
    body: &'a [u8],
    endian: Endian,
    plan: impl FnMut(&TableView<'a>) -> Result<TableEdit, E>,
) -> Result<Rewritten, E> {
    rewrite_with(body, endian, &NO_SCHEMAS, plan)
}

/// Rewrites the tables in `body` with the edits `plan` gives, naming the columns of updates that
/// come without names from `schemas`.
///
/// The body is located first ([`locate_with`]); `plan` is asked once for each table, in body
/// order, and every edit is checked against its table before a byte is written.
/// The kept rows are then found as runs of consecutive rows, once for all columns, and the byte
/// extents of those runs in each kept symbol or general-list column by one walk of its items
/// (a string's end is read from its header, nothing is decoded).
/// From these the output's exact size is computed, the output is allocated once, and each kept
/// column is copied once, a run at a time.
/// A big-endian body's numbers are swapped on the way; its general-list items are converted
/// one by one.
///
/// Attributes stay where they are still true.
/// A kept column keeps its attribute when rows are filtered: a subsequence of a sorted (`s#`)
/// list is sorted, of a unique (`u#`) list unique, and of a parted (`p#`) list parted (the rows
/// between two kept rows of one value were all that value, so equal values stay contiguous);
/// grouped (`g#`) holds for any list (it is an index the receiver builds).
/// A masked column loses its attribute, and a table loses its own (`s#` for a sorted table, and
/// the sorted dictionary of a sorted keyed table becomes a plain one) when one of its columns is
/// dropped or masked, since the order it promised may rest on that column.
///
/// # Errors
///
/// The plan's own errors, and [`TableError`] (through `E: From<TableError>`) when the body is
/// malformed, an edit does not fit its table, or the result would be too large for a message.
pub fn rewrite_with<'a, E: From<TableError>>(
    body: &'a [u8],
    endian: Endian,
    schemas: &'a Schemas,
    mut plan: impl FnMut(&TableView<'a>) -> Result<TableEdit, E>,
) -> Result<Rewritten, E> {
    let located = locate_with(body, endian, schemas)?;
    if let Located::NotATable = located {
        return Ok(Rewritten::NotATable);
    }
    let mut plans = Vec::with_capacity(located.tables().len());
    for view in located.tables() {
        let edit = plan(view)?;
        plans.push(check_edit(view, edit)?);
    }
    if !plans.iter().any(Plan::changes) {
        return Ok(Rewritten::Unchanged);
    }
    for (view, plan) in located.tables().iter().zip(&mut plans) {
        prepare(view, plan)?;
    }
    let mut len = Len(0);
    write_located(&located, &plans, &mut len)?;
    if len.0 > MAX_BODY_BYTES {
        return Err(TableError::TooLarge {
            len: len.0,
            limit: MAX_BODY_BYTES,
        }
        .into());
    }
    let mut out = Vec::with_capacity(len.0);
    write_located(&located, &plans, &mut out)?;
    debug_assert_eq!(
        out.len(),
        len.0,
        "the sizing pass and the writing pass agree"
    );
    Ok(Rewritten::Changed(out))
}

/// Where a rewrite's bytes go: a counter for the sizing pass, the output for the writing pass.
///
/// Both passes run the same code, so the size computed is the size written.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    /// `bytes`, `width`-byte numbers in `endian`, written little-endian.
    fn numbers(&mut self, bytes: &[u8], width: usize, endian: Endian);

    /// `item`, `times` times.
    fn repeated(&mut self, item: &[u8], times: usize);

    fn byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }

    fn count(&mut self, count: usize) {
        // Invariant: every count written is at most one read from the body (an i32), or a text
        // mask's length, checked to fit an i32 when the mask was made.
        self.put(&(count as i32).to_le_bytes());
    }
}

/// The sizing pass's sink: it only counts.
struct Len(usize);

impl Sink for Len {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }

    fn numbers(&mut self, bytes: &[u8], _: usize, _: Endian) {
        self.put(bytes);
    }

    fn repeated(&mut self, item: &[u8], times: usize) {
        self.0 = self.0.saturating_add(item.len().saturating_mul(times));
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn numbers(&mut self, bytes: &[u8], width: usize, endian: Endian) {
        fn swapped<const N: usize>(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend(bytes.as_chunks::<N>().0.iter().flat_map(|&item| {
                let mut item = item;
                item.reverse();
                item
            }));
        }
        match (endian, width) {
            (Endian::Big, 2) => swapped::<2>(self, bytes),
            (Endian::Big, 4) => swapped::<4>(self, bytes),
            (Endian::Big, 8) => swapped::<8>(self, bytes),
            // Little-endian numbers, and bytes, booleans, chars and GUIDs (whose 16 bytes are
            // never swapped, reference §4.4) in either order.
            _ => self.extend_from_slice(bytes),
        }
    }

    fn repeated(&mut self, item: &[u8], times: usize) {
        if times == 0 || item.is_empty() {
            return;
        }
        // Doubling copies: a million rows of one item take twenty copies, not a million.
        let start = self.len();
        let total = item.len() * times;
        self.extend_from_slice(item);
        while self.len() - start < total {
            let done = self.len() - start;
            self.extend_from_within(start..start + done.min(total - done));
        }
    }
}

fn write_located<S: Sink>(
    located: &Located<'_>,
    plans: &[Plan],
    sink: &mut S,
) -> Result<(), TableError> {
    match located {
        Located::NotATable => {}
        Located::Table(view) | Located::Keyed(view) => {
            for plan in plans {
                write_view(view, plan, sink)?;
            }
        }
        Located::Tables(tables) => {
            let t = if tables.sorted {
                type_code::SORTED_DICT
            } else {
                type_code::DICT
            };
            sink.byte(t as u8);
            sink.byte(type_code::SYMBOL as u8);
            sink.byte(tables.keys_attr as u8);
            sink.count(tables.tables.len());
            sink.put(tables.keys);
            sink.byte(type_code::LIST as u8);
            sink.byte(tables.list_attr as u8);
            sink.count(tables.tables.len());
            for (view, plan) in tables.tables.iter().zip(plans) {
                write_view(view, plan, sink)?;
            }
        }
        Located::Update(update) => {
            sink.byte(type_code::LIST as u8);
            sink.byte(update.list_attr as u8);
            sink.count(3);
            sink.put(update.head);
            for plan in plans {
                write_view(&update.table, plan, sink)?;
            }
        }
    }
    Ok(())
}

fn write_view<S: Sink>(view: &TableView<'_>, plan: &Plan, sink: &mut S) -> Result<(), TableError> {
    match view.layout {
        Layout::Table(half) => write_table(view, plan, half, sink),
        Layout::Keyed { sorted, key, value } => {
            // A sorted keyed table's keys stay sorted when rows go, not when a key column does.
            let t = if sorted && !plan.touches(key) {
                type_code::SORTED_DICT
            } else {
                type_code::DICT
            };
            sink.byte(t as u8);
            write_table(view, plan, key, sink)?;
            write_table(view, plan, value, sink)
        }
        Layout::Columns { attr } => {
            sink.byte(type_code::LIST as u8);
            sink.byte(attr as u8);
            sink.count(plan.kept(0..view.columns.len()));
            write_columns(view, plan, 0..view.columns.len(), sink)
        }
    }
}

fn write_table<S: Sink>(
    view: &TableView<'_>,
    plan: &Plan,
    half: Half,
    sink: &mut S,
) -> Result<(), TableError> {
    let attr = if plan.touches(half) {
        Attr::None
    } else {
        half.attr
    };
    let kept = plan.kept(half.start..half.end);
    sink.put(&[type_code::TABLE as u8, attr as u8, type_code::DICT as u8]);
    sink.put(&[type_code::SYMBOL as u8, half.names_attr as u8]);
    sink.count(kept);
    for (column, action) in view.columns[half.start..half.end]
        .iter()
        .zip(&plan.actions[half.start..half.end])
    {
        if *action != Action::Drop {
            sink.put(column.name.unwrap_or_default());
            sink.byte(0);
        }
    }
    sink.put(&[type_code::LIST as u8, half.list_attr as u8]);
    sink.count(kept);
    write_columns(view, plan, half.start..half.end, sink)
}

fn write_columns<S: Sink>(
    view: &TableView<'_>,
    plan: &Plan,
    range: Range<usize>,
    sink: &mut S,
) -> Result<(), TableError> {
    for ((column, action), i) in view.columns[range.clone()]
        .iter()
        .zip(&plan.actions[range.clone()])
        .zip(range)
    {
        let attr = match action {
            Action::Drop => continue,
            // A masked column's values are all one: whatever it promised about them is gone.
            Action::Mask(_) => Attr::None,
            // See rewrite_with's docs: every attribute holds for a subsequence.
            Action::Keep => column.attr,
        };
        sink.put(&[column.type_code as u8, attr as u8]);
        sink.count(plan.rows);
        match action {
            Action::Mask(item) => sink.repeated(item, plan.rows),
            _ => copy_rows(column, plan, i, sink)?,
        }
    }
    Ok(())
}

/// Copies the items of `column` (the view's column `index`) in the rows `plan` keeps.
fn copy_rows<S: Sink>(
    column: &ColumnView<'_>,
    plan: &Plan,
    index: usize,
    sink: &mut S,
) -> Result<(), TableError> {
    let data = column.as_bytes();
    let endian = column.endian;
    let width = decode::item_size(column.type_code);
    let whole = 0..data.len();
    // Byte ranges, or for fixed-width items with rows filtered, row ranges.
    let (ranges, scale): (&[Range<usize>], usize) = match (&plan.selection, width) {
        (None, _) => (std::slice::from_ref(&whole), 1),
        (Some(_), Some(width)) => (&plan.runs, width),
        (Some(_), None) => (plan.extents.get(index).map_or(&[], Vec::as_slice), 1),
    };
    let bytes = |range: &Range<usize>| {
        data.get(range.start * scale..range.end * scale)
            .ok_or_else(|| {
                column.malformed(DecodeError::Truncated {
                    offset: column.offset + 6 + data.len(),
                    needed: (range.end * scale).saturating_sub(data.len()),
                })
            })
    };
    match width {
        // Fixed-width items: a run of rows is one slice.
        Some(width) => {
            for range in ranges {
                sink.numbers(bytes(range)?, width, endian);
            }
        }
        // Names, and little-endian items of a general list: a run is copied as it is.
        None if endian == Endian::Little || column.type_code == type_code::SYMBOL => {
            for range in ranges {
                sink.put(bytes(range)?);
            }
        }
        // Big-endian items of a general list, converted one by one.
        None => {
            let b = Bytes { body: data, endian };
            for range in ranges {
                let mut pos = range.start;
                while pos < range.end {
                    pos = big_to_little(b, pos, sink, 0).map_err(|e| column.malformed(e))?;
                }
            }
        }
    }
    Ok(())
}

/// Where the item of a general list at `pos` ends.
///
/// Strings and other vectors of fixed-width items are sized from their header alone (a million
/// strings take a few milliseconds, where walking each as a value took three times as long);
/// anything else is walked, and so checked, by the decoder's own walk.
fn item_end(data: &[u8], pos: usize, endian: Endian) -> Result<usize, DecodeError> {
    let b = Bytes { body: data, endian };
    let t = b.type_at(pos)?;
    if t > 0
        && let Some(width) = decode::item_size(t)
    {
        let size = b.count(pos + 2)?.saturating_mul(width);
        b.slice(pos + 6, size)?;
        return Ok(pos + 6 + size);
    }
    decode::skip(data, pos, endian)
}

/// Writes the big-endian value at `pos` little-endian, and returns where it ends.
fn big_to_little<S: Sink>(
    b: Bytes<'_>,
    pos: usize,
    sink: &mut S,
    depth: usize,
) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(DecodeError::TooDeep {
            limit: MAX_DEPTH,
            offset: pos,
        });
    }
    let t = b.type_at(pos)?;
    sink.byte(t as u8);
    let values = |sink: &mut S, mut at: usize, count: usize| {
        for _ in 0..count {
            at = big_to_little(b, at, sink, depth + 1)?;
        }
        Ok::<_, DecodeError>(at)
    };
    match t {
        type_code::LIST => {
            sink.byte(b.attr(pos + 1)? as u8);
            let count = b.count(pos + 2)?;
            sink.count(count);
            values(sink, pos + 6, count)
        }
        type_code::SYMBOL => {
            sink.byte(b.attr(pos + 1)? as u8);
            let count = b.count(pos + 2)?;
            sink.count(count);
            let len = names_extent(b.rest(pos + 6), count)
                .ok_or(DecodeError::UnterminatedSymbol { offset: pos + 6 })?;
            sink.put(b.slice(pos + 6, len)?);
            Ok(pos + 6 + len)
        }
        1..=19 => {
            let width = decode::item_size(t).ok_or(DecodeError::UnknownType {
                type_code: t,
                offset: pos,
            })?;
            sink.byte(b.attr(pos + 1)? as u8);
            let count = b.count(pos + 2)?;
            sink.count(count);
            let size = count.saturating_mul(width);
            sink.numbers(b.slice(pos + 6, size)?, width, Endian::Big);
            Ok(pos + 6 + size)
        }
        t if t == -type_code::SYMBOL || t == type_code::ERROR => {
            let name = b.name(pos + 1)?;
            sink.put(name);
            sink.byte(0);
            Ok(pos + 1 + name.len() + 1)
        }
        -19..=-1 => {
            let width = decode::item_size(-t).ok_or(DecodeError::UnknownType {
                type_code: t,
                offset: pos,
            })?;
            sink.numbers(b.slice(pos + 1, width)?, width, Endian::Big);
            Ok(pos + 1 + width)
        }
        type_code::TABLE => {
            sink.byte(b.attr(pos + 1)? as u8);
            if b.type_at(pos + 2)? != type_code::DICT {
                return Err(DecodeError::Malformed {
                    offset: pos + 2,
                    what: "a table must hold a dictionary",
                });
            }
            sink.byte(type_code::DICT as u8);
            values(sink, pos + 3, 2)
        }
        type_code::DICT | type_code::SORTED_DICT => values(sink, pos + 1, 2),
        type_code::LAMBDA => {
            let context = b.name(pos + 1)?;
            sink.put(context);
            sink.byte(0);
            values(sink, pos + 1 + context.len() + 1, 1)
        }
        type_code::UNARY | type_code::BINARY | type_code::TERNARY => {
            sink.byte(b.byte(pos + 1)?);
            Ok(pos + 2)
        }
        type_code::PROJECTION | type_code::COMPOSITION => {
            let count = b.count(pos + 1)?;
            sink.count(count);
            values(sink, pos + 5, count)
        }
        type_code::EACH..=type_code::EACH_LEFT => values(sink, pos + 1, 1),
        _ => Err(DecodeError::UnknownType {
            type_code: t,
            offset: pos,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::VectorData;

    fn body(value: &K) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).expect("encodes");
        out
    }

    #[test]
    fn names_extent_counts_names_one_by_one_and_by_blocks() {
        // Names of 0 to 12 letters, so that names straddle the blocks.
        let mut bytes = Vec::new();
        let mut ends = vec![0];
        for i in 0..3000 {
            bytes.extend(std::iter::repeat_n(b'a', i % 13));
            bytes.push(0);
            ends.push(bytes.len());
        }
        for count in [0, 1, 2, 100, 512, 513, 585, 586, 1500, 2999, 3000] {
            assert_eq!(names_extent(&bytes, count), Some(ends[count]), "{count}");
        }
        assert_eq!(names_extent(&bytes, 3001), None);
        assert_eq!(names_extent(b"abc", 1), None);
        assert_eq!(names_extent(b"", 0), Some(0));
    }

    fn check_runs(flags: &[bool], expect: &[(usize, usize)]) {
        let selection = RowSelection::from_bools(flags.iter().copied());
        let runs: Vec<_> = selection.runs().map(|r| (r.start, r.end)).collect();
        assert_eq!(runs, expect, "{flags:?}");
        assert_eq!(
            selection.count(),
            expect.iter().map(|(start, end)| end - start).sum::<usize>()
        );
        assert_eq!(selection, RowSelection::from_fn(flags.len(), |i| flags[i]));
    }

    #[test]
    fn runs_are_the_kept_stretches() {
        check_runs(&[], &[]);
        check_runs(&[false; 5], &[]);
        check_runs(&[true; 5], &[(0, 5)]);
        check_runs(&[true, false, true, true, false], &[(0, 1), (2, 4)]);
        let mut long = vec![false; 200];
        long[63..=64].fill(true);
        long[127] = true;
        long[190..].fill(true);
        check_runs(&long, &[(63, 65), (127, 128), (190, 200)]);
        check_runs(&[true; 128], &[(0, 128)]);
        check_runs(&[true; 130], &[(0, 130)]);
        assert_eq!(
            RowSelection::all(130),
            RowSelection::from_bools([true; 130])
        );
        assert_eq!(RowSelection::all(64), RowSelection::from_bools([true; 64]));
        assert_eq!(RowSelection::none(130).runs().count(), 0);
    }

    #[test]
    fn answers_are_asked_once_a_name_and_stay_right_when_crowded() {
        let names: [&[u8]; 6] = [b"abc", b"", b"abcdefgh", b"abcdefghX", b"abcdefghY", b"abd"];
        let mut asked = Vec::new();
        let mut answers = Answers::new();
        for _ in 0..3 {
            for name in names {
                let kept = answers.get(name, &mut |n: &[u8]| {
                    asked.push(n.to_vec());
                    n.len() % 2 == 1
                });
                assert_eq!(kept, name.len() % 2 == 1, "{name:?}");
            }
        }
        assert_eq!(asked, names.map(<[u8]>::to_vec));

        // More names than slots: some are asked again, every answer is still right.
        let many: Vec<Vec<u8>> = (0..5000).map(|i: u32| i.to_string().into_bytes()).collect();
        let mut answers = Answers::new();
        for _ in 0..2 {
            for name in &many {
                let kept = answers.get(name, &mut |n: &[u8]| n.ends_with(b"7"));
                assert_eq!(kept, name.ends_with(b"7"));
            }
        }
    }

    #[test]
    fn cap_keeps_the_first_kept_rows() {
        let mut selection = RowSelection::from_fn(300, |i| i % 3 == 0);
        selection.cap(50);
        assert_eq!(selection.count(), 50);
        assert_eq!(
            selection.iter().collect::<Vec<_>>(),
            (0..150).step_by(3).collect::<Vec<_>>()
        );
        selection.cap(60);
        assert_eq!(selection.count(), 50);
        selection.cap(0);
        assert_eq!(selection, RowSelection::none(300));
    }

    #[test]
    fn intersect_keeps_rows_kept_by_both() {
        let mut selection = RowSelection::from_fn(100, |i| i % 2 == 0);
        selection.intersect(&RowSelection::from_fn(100, |i| i % 3 == 0));
        assert_eq!(selection, RowSelection::from_fn(100, |i| i % 6 == 0));
        assert!(selection.contains(96) && !selection.contains(98) && !selection.contains(100));
    }

    #[test]
    fn names_in_errors_are_escaped_and_cut() {
        assert_eq!(show(b"trade"), "trade");
        assert_eq!(show(b"a\nb\xff"), "a\\nb\\xff");
        let long = vec![b'x'; 100];
        assert_eq!(show(&long), format!("{}...", "x".repeat(64)));
    }

    fn check_null(t: i8, expect: &[u8]) {
        let column = ColumnView {
            table: None,
            name: Some(b"c"),
            index: 0,
            key: false,
            type_code: t,
            attr: Attr::None,
            len: 0,
            bytes: &[],
            offset: 0,
            endian: Endian::Little,
        };
        assert_eq!(mask_item(&column, &Mask::Null), Ok(expect.to_vec()), "{t}");
    }

    #[test]
    fn nulls_are_q_nulls() {
        check_null(type_code::BOOLEAN, &[0]);
        check_null(type_code::GUID, &[0; 16]);
        check_null(type_code::BYTE, &[0]);
        check_null(type_code::SHORT, &[0x00, 0x80]);
        check_null(type_code::INT, &[0, 0, 0, 0x80]);
        check_null(type_code::LONG, &[0, 0, 0, 0, 0, 0, 0, 0x80]);
        check_null(type_code::REAL, &[0, 0, 0xc0, 0x7f]);
        check_null(type_code::FLOAT, &[0, 0, 0, 0, 0, 0, 0xf8, 0x7f]);
        check_null(type_code::CHAR, b" ");
        check_null(type_code::SYMBOL, &[0]);
        check_null(type_code::TIMESTAMP, &[0, 0, 0, 0, 0, 0, 0, 0x80]);
        check_null(type_code::MONTH, &[0, 0, 0, 0x80]);
        check_null(type_code::DATE, &[0, 0, 0, 0x80]);
        check_null(type_code::DATETIME, &[0, 0, 0, 0, 0, 0, 0xf8, 0x7f]);
        check_null(type_code::TIMESPAN, &[0, 0, 0, 0, 0, 0, 0, 0x80]);
        check_null(type_code::MINUTE, &[0, 0, 0, 0x80]);
        check_null(type_code::SECOND, &[0, 0, 0, 0x80]);
        check_null(type_code::TIME, &[0, 0, 0, 0x80]);
        check_null(type_code::LIST, &[10, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn repeat_writes_an_item_many_times() {
        for (item, times) in [(&b"ab\0"[..], 0), (b"ab\0", 1), (b"ab\0", 7), (b"x", 1000)] {
            let mut out = vec![9];
            out.repeated(item, times);
            let mut expect = vec![9];
            for _ in 0..times {
                expect.extend_from_slice(item);
            }
            assert_eq!(out, expect);
            let mut len = Len(1);
            len.repeated(item, times);
            assert_eq!(len.0, expect.len());
        }
    }

    /// Converts a big-endian encoding of `value` and compares it with the encoder's little-endian
    /// one, and the sizing pass's count with its length.
    fn check_big_to_little(value: &K) {
        let little = body(value);
        let big = big(value);
        assert_eq!(crate::decode(&big, Endian::Big).as_ref(), Ok(value));
        let mut out = Vec::new();
        let b = Bytes {
            body: &big,
            endian: Endian::Big,
        };
        assert_eq!(big_to_little(b, 0, &mut out, 0), Ok(big.len()));
        assert_eq!(out, little, "{value:?}");
        let mut len = Len(0);
        assert_eq!(big_to_little(b, 0, &mut len, 0), Ok(big.len()));
        assert_eq!(len.0, little.len());
    }

    /// A minimal big-endian encoder for the values of `big_endian_values_become_little_endian`.
    fn big(value: &K) -> Vec<u8> {
        let mut out = vec![value.type_code() as u8];
        match value {
            K::Atom(Atom::Long(x)) => out.extend_from_slice(&x.to_be_bytes()),
            K::Atom(Atom::Symbol(s)) => {
                out.extend_from_slice(s);
                out.push(0);
            }
            K::Vector(v) => {
                out.push(v.attr as u8);
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                match &v.data {
                    VectorData::Char(x) => out.extend_from_slice(x),
                    VectorData::Int(x) => out.extend(x.iter().flat_map(|n| n.to_be_bytes())),
                    VectorData::Float(x) => out.extend(x.iter().flat_map(|n| n.to_be_bytes())),
                    VectorData::Guid(x) => out.extend_from_slice(x.as_flattened()),
                    VectorData::Symbol(s) => out.extend_from_slice(s.as_wire()),
                    other => panic!("not in this test: {other:?}"),
                }
            }
            K::List(list) => {
                out.push(list.attr as u8);
                out.extend_from_slice(&(list.items.len() as i32).to_be_bytes());
                for item in &list.items {
                    out.extend(big(item));
                }
            }
            K::Dict(dict) => {
                out.extend(big(&dict.keys));
                out.extend(big(&dict.values));
            }
            K::Table(table) => {
                out.push(table.attr as u8);
                out.push(99);
                out.extend(big(&table.columns));
                out.extend(big(&table.values));
            }
            K::Null => out.push(0),
            K::Error(text) => {
                out.extend_from_slice(text);
                out.push(0);
            }
            other => panic!("not in this test: {other:?}"),
        }
        out
    }

    #[test]
    fn big_endian_values_become_little_endian() {
        check_big_to_little(&K::long(0x0102_0304_0506_0708));
        check_big_to_little(&K::string("abc"));
        check_big_to_little(&K::vector(VectorData::Int(vec![1, -2, i32::MIN])));
        check_big_to_little(&K::vector(VectorData::Guid(vec![[7; 16], [1; 16]])));
        check_big_to_little(&K::list(vec![
            K::symbol("a"),
            K::vector(VectorData::Float(vec![1.5, -0.25])),
            K::list(vec![K::Null, K::error("type")]),
        ]));
        check_big_to_little(&K::dict(
            K::symbols(["a", "b"]),
            K::list(vec![K::long(1), K::string("x")]),
        ));
        check_big_to_little(&K::table(
            ["a", "b"],
            vec![
                K::vector(VectorData::Int(vec![1, 2])),
                K::list(vec![K::string("xy"), K::string("")]),
            ],
        ));
    }

    #[test]
    fn big_to_little_refuses_what_it_cannot_read() {
        let b = |body: &'static [u8]| Bytes {
            body,
            endian: Endian::Big,
        };
        let mut out = Vec::new();
        assert!(big_to_little(b(&[0x07, 0, 0, 0, 0, 2, 0]), 0, &mut out, 0).is_err());
        assert!(big_to_little(b(&[0x03]), 0, &mut out, 0).is_err());
        assert!(big_to_little(b(&[0xf5, b'a']), 0, &mut out, 0).is_err());
        assert!(big_to_little(b(&[0x00, 0, 0xff, 0xff, 0xff, 0xff]), 0, &mut out, 0).is_err());
        // A list nested past the depth limit.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        }
        deep.extend_from_slice(&[0xff, 1]);
        let deep = Bytes {
            body: &deep,
            endian: Endian::Big,
        };
        assert!(matches!(
            big_to_little(deep, 0, &mut out, 0),
            Err(DecodeError::TooDeep { .. })
        ));
    }
}
