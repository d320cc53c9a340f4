//! Owned q values: the `K` tree that a whole message decodes into.
//!
//! The shapes follow kdb+'s own (reference §4): atoms, vectors with an attribute, general lists,
//! dictionaries, tables, functions, errors and the generic null.
//! Text is bytes (`Vec<u8>`), never a validated `String`, because q does not care about encodings.
//! Symbol vectors keep their wire form (NUL-terminated names back to back) so that decoding and
//! encoding them is a copy, not one allocation per name.

use std::fmt;

/// The q type byte of each value kind, as it appears on the wire.
///
/// Atoms are the negated vector codes; the constants here name the vector (positive) codes and the
/// structural ones.
pub mod type_code {
    /// General list.
    pub const LIST: i8 = 0;
    /// Boolean (`b`).
    pub const BOOLEAN: i8 = 1;
    /// GUID (`g`).
    pub const GUID: i8 = 2;
    /// Byte (`x`).
    pub const BYTE: i8 = 4;
    /// Short (`h`).
    pub const SHORT: i8 = 5;
    /// Int (`i`).
    pub const INT: i8 = 6;
    /// Long (`j`).
    pub const LONG: i8 = 7;
    /// Real (`e`).
    pub const REAL: i8 = 8;
    /// Float (`f`).
    pub const FLOAT: i8 = 9;
    /// Char (`c`).
    pub const CHAR: i8 = 10;
    /// Symbol (`s`).
    pub const SYMBOL: i8 = 11;
    /// Timestamp (`p`).
    pub const TIMESTAMP: i8 = 12;
    /// Month (`m`).
    pub const MONTH: i8 = 13;
    /// Date (`d`).
    pub const DATE: i8 = 14;
    /// Datetime (`z`), deprecated in q.
    pub const DATETIME: i8 = 15;
    /// Timespan (`n`).
    pub const TIMESPAN: i8 = 16;
    /// Minute (`u`).
    pub const MINUTE: i8 = 17;
    /// Second (`v`).
    pub const SECOND: i8 = 18;
    /// Time (`t`).
    pub const TIME: i8 = 19;
    /// Table.
    pub const TABLE: i8 = 98;
    /// Dictionary.
    pub const DICT: i8 = 99;
    /// Lambda.
    pub const LAMBDA: i8 = 100;
    /// Unary primitive; `101 0` is the generic null `(::)`.
    pub const UNARY: i8 = 101;
    /// Binary primitive.
    pub const BINARY: i8 = 102;
    /// Ternary primitive.
    pub const TERNARY: i8 = 103;
    /// Projection.
    pub const PROJECTION: i8 = 104;
    /// Composition.
    pub const COMPOSITION: i8 = 105;
    /// `f'` (each).
    pub const EACH: i8 = 106;
    /// `f/` (over).
    pub const OVER: i8 = 107;
    /// `f\` (scan).
    pub const SCAN: i8 = 108;
    /// `f':` (each-prior).
    pub const EACH_PRIOR: i8 = 109;
    /// `f/:` (each-right).
    pub const EACH_RIGHT: i8 = 110;
    /// `f\:` (each-left).
    pub const EACH_LEFT: i8 = 111;
    /// Foreign object: not transferable.
    pub const FOREIGN: i8 = 112;
    /// Sorted dictionary (`` `s#d ``).
    pub const SORTED_DICT: i8 = 127;
    /// Error.
    pub const ERROR: i8 = -128;
}

/// The attribute byte that follows a vector's type.
///
/// Mirrors kdb+'s numbering (reference §4.2), so the variants keep the spec's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Attr {
    /// No attribute.
    #[default]
    None = 0,
    /// `` `s# ``: sorted.
    Sorted = 1,
    /// `` `u# ``: unique.
    Unique = 2,
    /// `` `p# ``: parted.
    Parted = 3,
    /// `` `g# ``: grouped.
    Grouped = 4,
}

impl Attr {
    /// The attribute for a wire byte, or `None` for a byte kdb+ never sends at capability 3.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::None,
            1 => Self::Sorted,
            2 => Self::Unique,
            3 => Self::Parted,
            4 => Self::Grouped,
            _ => return None,
        })
    }

    /// The q prefix for this attribute (`` `s# `` and so on), empty for none.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Sorted => "`s#",
            Self::Unique => "`u#",
            Self::Parted => "`p#",
            Self::Grouped => "`g#",
        }
    }
}

/// A q atom.
///
/// Temporal atoms keep q's raw representation (for example nanoseconds since 2000.01.01 for a
/// timestamp); [`crate::temporal`] converts them to and from chrono types.
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    /// `-1`: boolean.
    Boolean(bool),
    /// `-2`: GUID, 16 bytes in textual order.
    Guid([u8; 16]),
    /// `-4`: byte.
    Byte(u8),
    /// `-5`: short.
    Short(i16),
    /// `-6`: int.
    Int(i32),
    /// `-7`: long.
    Long(i64),
    /// `-8`: real.
    Real(f32),
    /// `-9`: float.
    Float(f64),
    /// `-10`: char.
    Char(u8),
    /// `-11`: symbol, without its NUL terminator.
    Symbol(Vec<u8>),
    /// `-12`: timestamp, nanoseconds since 2000.01.01D00:00.
    Timestamp(i64),
    /// `-13`: month, months since 2000.01.
    Month(i32),
    /// `-14`: date, days since 2000.01.01.
    Date(i32),
    /// `-15`: datetime, fractional days since 2000.01.01.
    Datetime(f64),
    /// `-16`: timespan, nanoseconds.
    Timespan(i64),
    /// `-17`: minute, minutes.
    Minute(i32),
    /// `-18`: second, seconds.
    Second(i32),
    /// `-19`: time, milliseconds.
    Time(i32),
}

impl Atom {
    /// The wire type byte (negative for atoms).
    pub fn type_code(&self) -> i8 {
        -match self {
            Self::Boolean(_) => type_code::BOOLEAN,
            Self::Guid(_) => type_code::GUID,
            Self::Byte(_) => type_code::BYTE,
            Self::Short(_) => type_code::SHORT,
            Self::Int(_) => type_code::INT,
            Self::Long(_) => type_code::LONG,
            Self::Real(_) => type_code::REAL,
            Self::Float(_) => type_code::FLOAT,
            Self::Char(_) => type_code::CHAR,
            Self::Symbol(_) => type_code::SYMBOL,
            Self::Timestamp(_) => type_code::TIMESTAMP,
            Self::Month(_) => type_code::MONTH,
            Self::Date(_) => type_code::DATE,
            Self::Datetime(_) => type_code::DATETIME,
            Self::Timespan(_) => type_code::TIMESPAN,
            Self::Minute(_) => type_code::MINUTE,
            Self::Second(_) => type_code::SECOND,
            Self::Time(_) => type_code::TIME,
        }
    }
}

/// A vector of one basic type, with its attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Vector {
    /// The attribute byte.
    pub attr: Attr,
    /// The items.
    pub data: VectorData,
}

impl Vector {
    /// A vector with no attribute.
    pub fn new(data: VectorData) -> Self {
        Self {
            attr: Attr::None,
            data,
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the vector has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The items of a [`Vector`], one variant per basic type.
///
/// Temporal vectors hold q's raw numbers, as [`Atom`] does.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorData {
    /// `1`: booleans.
    Boolean(Vec<bool>),
    /// `2`: GUIDs.
    Guid(Vec<[u8; 16]>),
    /// `4`: bytes.
    Byte(Vec<u8>),
    /// `5`: shorts.
    Short(Vec<i16>),
    /// `6`: ints.
    Int(Vec<i32>),
    /// `7`: longs.
    Long(Vec<i64>),
    /// `8`: reals.
    Real(Vec<f32>),
    /// `9`: floats.
    Float(Vec<f64>),
    /// `10`: chars, a q string (no terminator).
    Char(Vec<u8>),
    /// `11`: symbols.
    Symbol(Symbols),
    /// `12`: timestamps.
    Timestamp(Vec<i64>),
    /// `13`: months.
    Month(Vec<i32>),
    /// `14`: dates.
    Date(Vec<i32>),
    /// `15`: datetimes.
    Datetime(Vec<f64>),
    /// `16`: timespans.
    Timespan(Vec<i64>),
    /// `17`: minutes.
    Minute(Vec<i32>),
    /// `18`: seconds.
    Second(Vec<i32>),
    /// `19`: times.
    Time(Vec<i32>),
}

impl VectorData {
    /// The wire type byte (positive for vectors).
    pub fn type_code(&self) -> i8 {
        match self {
            Self::Boolean(_) => type_code::BOOLEAN,
            Self::Guid(_) => type_code::GUID,
            Self::Byte(_) => type_code::BYTE,
            Self::Short(_) => type_code::SHORT,
            Self::Int(_) => type_code::INT,
            Self::Long(_) => type_code::LONG,
            Self::Real(_) => type_code::REAL,
            Self::Float(_) => type_code::FLOAT,
            Self::Char(_) => type_code::CHAR,
            Self::Symbol(_) => type_code::SYMBOL,
            Self::Timestamp(_) => type_code::TIMESTAMP,
            Self::Month(_) => type_code::MONTH,
            Self::Date(_) => type_code::DATE,
            Self::Datetime(_) => type_code::DATETIME,
            Self::Timespan(_) => type_code::TIMESPAN,
            Self::Minute(_) => type_code::MINUTE,
            Self::Second(_) => type_code::SECOND,
            Self::Time(_) => type_code::TIME,
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        match self {
            Self::Boolean(v) => v.len(),
            Self::Guid(v) => v.len(),
            Self::Byte(v) | Self::Char(v) => v.len(),
            Self::Short(v) => v.len(),
            Self::Int(v)
            | Self::Month(v)
            | Self::Date(v)
            | Self::Minute(v)
            | Self::Second(v)
            | Self::Time(v) => v.len(),
            Self::Long(v) | Self::Timestamp(v) | Self::Timespan(v) => v.len(),
            Self::Real(v) => v.len(),
            Self::Float(v) | Self::Datetime(v) => v.len(),
            Self::Symbol(v) => v.len(),
        }
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th item as an atom, or `None` past the end.
    pub fn atom(&self, i: usize) -> Option<Atom> {
        Some(match self {
            Self::Boolean(v) => Atom::Boolean(*v.get(i)?),
            Self::Guid(v) => Atom::Guid(*v.get(i)?),
            Self::Byte(v) => Atom::Byte(*v.get(i)?),
            Self::Short(v) => Atom::Short(*v.get(i)?),
            Self::Int(v) => Atom::Int(*v.get(i)?),
            Self::Long(v) => Atom::Long(*v.get(i)?),
            Self::Real(v) => Atom::Real(*v.get(i)?),
            Self::Float(v) => Atom::Float(*v.get(i)?),
            Self::Char(v) => Atom::Char(*v.get(i)?),
            Self::Symbol(v) => Atom::Symbol(v.get(i)?.to_vec()),
            Self::Timestamp(v) => Atom::Timestamp(*v.get(i)?),
            Self::Month(v) => Atom::Month(*v.get(i)?),
            Self::Date(v) => Atom::Date(*v.get(i)?),
            Self::Datetime(v) => Atom::Datetime(*v.get(i)?),
            Self::Timespan(v) => Atom::Timespan(*v.get(i)?),
            Self::Minute(v) => Atom::Minute(*v.get(i)?),
            Self::Second(v) => Atom::Second(*v.get(i)?),
            Self::Time(v) => Atom::Time(*v.get(i)?),
        })
    }
}

/// A symbol vector in its wire form: each name followed by a NUL, back to back.
///
/// Keeping the wire form makes decoding a copy and a scan, and encoding a copy; `starts` lets
/// [`Symbols::get`] index in constant time.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Symbols {
    /// The names, each terminated by `0x00`.
    bytes: Vec<u8>,
    /// The offset in `bytes` where each name starts.
    starts: Vec<u32>,
}

/// A symbol name that cannot be stored, because q symbols end at the first NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a symbol cannot contain a NUL byte")]
pub struct NulInSymbol;

impl Symbols {
    /// An empty symbol vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from wire bytes that the caller has checked: `count` NUL-terminated names.
    pub(crate) fn from_wire(bytes: Vec<u8>, starts: Vec<u32>) -> Self {
        Self { bytes, starts }
    }

    /// The wire form: every name with its terminating NUL.
    pub fn as_wire(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends a name.
    ///
    /// # Errors
    ///
    /// [`NulInSymbol`] when `name` contains a NUL byte.
    pub fn push(&mut self, name: &[u8]) -> Result<(), NulInSymbol> {
        if memchr::memchr(0, name).is_some() {
            return Err(NulInSymbol);
        }
        let start = u32::try_from(self.bytes.len()).map_err(|_| NulInSymbol)?;
        self.starts.push(start);
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
        Ok(())
    }

    /// The number of names.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The `i`th name, without its NUL.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let start = *self.starts.get(i)? as usize;
        let end = match self.starts.get(i + 1) {
            Some(&next) => next as usize - 1,
            None => self.bytes.len() - 1,
        };
        self.bytes.get(start..end)
    }

    /// The names in order, without their NULs.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|s| String::from_utf8_lossy(s)))
            .finish()
    }
}

impl<S: AsRef<[u8]>> FromIterator<S> for Symbols {
    /// Collects names; a NUL byte ends a name, as it would in q.
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut symbols = Self::new();
        for name in iter {
            let name = name.as_ref();
            let name = match memchr::memchr(0, name) {
                Some(end) => &name[..end],
                None => name,
            };
            // Invariant: the name has no NUL after the cut above, so push cannot fail for it.
            let _ = symbols.push(name);
        }
        symbols
    }
}

/// A q function (types 100 to 111), kept so that it re-encodes to the same bytes.
///
/// qgate does not evaluate q, but clients send functions (`h({x+y};2;3)`), so they must pass
/// through a policy and back out intact.
#[derive(Clone, Debug, PartialEq)]
pub enum Function {
    /// `100`: a lambda, with its context (empty for the root) and its source (a char vector).
    Lambda {
        /// The context name, without its NUL (`d` for `.d`).
        context: Vec<u8>,
        /// The source text, normally a char vector.
        source: Box<K>,
    },
    /// `101`: a unary primitive by index. Index 0 decodes as [`K::Null`] instead.
    Unary(u8),
    /// `102`: a binary primitive by index.
    Binary(u8),
    /// `103`: a ternary primitive or iterator by index.
    Ternary(u8),
    /// `104`: a projection: the function, then its arguments.
    Projection(Vec<K>),
    /// `105`: a composition.
    Composition(Vec<K>),
    /// `106`: `f'`.
    Each(Box<K>),
    /// `107`: `f/`.
    Over(Box<K>),
    /// `108`: `f\`.
    Scan(Box<K>),
    /// `109`: `f':`.
    EachPrior(Box<K>),
    /// `110`: `f/:`.
    EachRight(Box<K>),
    /// `111`: `f\:`.
    EachLeft(Box<K>),
}

impl Function {
    /// The wire type byte.
    pub fn type_code(&self) -> i8 {
        match self {
            Self::Lambda { .. } => type_code::LAMBDA,
            Self::Unary(_) => type_code::UNARY,
            Self::Binary(_) => type_code::BINARY,
            Self::Ternary(_) => type_code::TERNARY,
            Self::Projection(_) => type_code::PROJECTION,
            Self::Composition(_) => type_code::COMPOSITION,
            Self::Each(_) => type_code::EACH,
            Self::Over(_) => type_code::OVER,
            Self::Scan(_) => type_code::SCAN,
            Self::EachPrior(_) => type_code::EACH_PRIOR,
            Self::EachRight(_) => type_code::EACH_RIGHT,
            Self::EachLeft(_) => type_code::EACH_LEFT,
        }
    }
}

/// A dictionary (`99`), or a sorted dictionary (`127`, `` `s#d ``).
///
/// A keyed table is a dictionary whose keys and values are both tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Dict {
    /// Whether this is the sorted form (type 127).
    pub sorted: bool,
    /// The keys, normally a vector.
    pub keys: Box<K>,
    /// The values, of the same count as the keys.
    pub values: Box<K>,
}

/// A table (`98`): the flip of a dictionary from column names to columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The table's attribute (`` `s# `` for a sorted table).
    pub attr: Attr,
    /// The column names, normally a symbol vector.
    pub columns: Box<K>,
    /// The columns, normally a general list of vectors of equal length.
    ///
    /// A splayed table reference carries a symbol atom here (`` `:dir/ ``).
    pub values: Box<K>,
}

impl Table {
    /// The column names, when they are a symbol vector.
    pub fn column_names(&self) -> Option<&Symbols> {
        match &*self.columns {
            K::Vector(Vector {
                data: VectorData::Symbol(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }

    /// The column called `name`, when the table has the usual shape.
    pub fn column(&self, name: &[u8]) -> Option<&K> {
        let index = self.column_names()?.iter().position(|c| c == name)?;
        match &*self.values {
            K::List(list) => list.items.get(index),
            _ => None,
        }
    }

    /// The number of rows: the length of the first column.
    pub fn row_count(&self) -> usize {
        match &*self.values {
            K::List(list) => list.items.first().map_or(0, K::len),
            _ => 0,
        }
    }
}

/// A general list (`0`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct List {
    /// The attribute byte; q sends 0 for general lists.
    pub attr: Attr,
    /// The items.
    pub items: Vec<K>,
}

/// Any q value.
#[derive(Clone, Debug, PartialEq)]
pub enum K {
    /// An atom.
    Atom(Atom),
    /// A vector of a basic type.
    Vector(Vector),
    /// A general list.
    List(List),
    /// A dictionary or sorted dictionary; keyed tables are dictionaries of tables.
    Dict(Dict),
    /// A table.
    Table(Table),
    /// A function, kept as data.
    Function(Function),
    /// The generic null `(::)`, on the wire `101 0`.
    Null,
    /// An error (`-128`) with its text, without the `'` and without the NUL.
    Error(Vec<u8>),
}

impl K {
    /// The wire type byte of this value.
    pub fn type_code(&self) -> i8 {
        match self {
            Self::Atom(a) => a.type_code(),
            Self::Vector(v) => v.data.type_code(),
            Self::List(_) => type_code::LIST,
            Self::Dict(d) if d.sorted => type_code::SORTED_DICT,
            Self::Dict(_) => type_code::DICT,
            Self::Table(_) => type_code::TABLE,
            Self::Function(f) => f.type_code(),
            Self::Null => type_code::UNARY,
            Self::Error(_) => type_code::ERROR,
        }
    }

    /// The count q's `count` would give: items of a list or vector, rows of a table, keys of a
    /// dictionary, 1 for anything else.
    pub fn len(&self) -> usize {
        match self {
            Self::Vector(v) => v.len(),
            Self::List(l) => l.items.len(),
            Self::Dict(d) => d.keys.len(),
            Self::Table(t) => t.row_count(),
            _ => 1,
        }
    }

    /// Whether [`K::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A symbol atom.
    pub fn symbol(name: impl AsRef<[u8]>) -> Self {
        Self::Atom(Atom::Symbol(name.as_ref().to_vec()))
    }

    /// A char vector (a q string).
    pub fn string(text: impl AsRef<[u8]>) -> Self {
        Self::Vector(Vector::new(VectorData::Char(text.as_ref().to_vec())))
    }

    /// A long atom.
    pub fn long(value: i64) -> Self {
        Self::Atom(Atom::Long(value))
    }

    /// An error with `message` (without the leading `'`).
    pub fn error(message: impl AsRef<[u8]>) -> Self {
        Self::Error(message.as_ref().to_vec())
    }

    /// A general list.
    pub fn list(items: Vec<K>) -> Self {
        Self::List(List {
            attr: Attr::None,
            items,
        })
    }

    /// A vector without attribute.
    pub fn vector(data: VectorData) -> Self {
        Self::Vector(Vector::new(data))
    }

    /// A symbol vector.
    pub fn symbols<S: AsRef<[u8]>>(names: impl IntoIterator<Item = S>) -> Self {
        Self::vector(VectorData::Symbol(names.into_iter().collect()))
    }

    /// A dictionary.
    pub fn dict(keys: K, values: K) -> Self {
        Self::Dict(Dict {
            sorted: false,
            keys: Box::new(keys),
            values: Box::new(values),
        })
    }

    /// A table from column names and columns.
    pub fn table<S: AsRef<[u8]>>(names: impl IntoIterator<Item = S>, columns: Vec<K>) -> Self {
        Self::Table(Table {
            attr: Attr::None,
            columns: Box::new(Self::symbols(names)),
            values: Box::new(Self::list(columns)),
        })
    }

    /// The text of a char vector or the name of a symbol atom.
    pub fn as_text(&self) -> Option<&[u8]> {
        match self {
            Self::Vector(Vector {
                data: VectorData::Char(text),
                ..
            }) => Some(text),
            Self::Atom(Atom::Symbol(name)) => Some(name),
            _ => None,
        }
    }
}

impl From<Atom> for K {
    fn from(atom: Atom) -> Self {
        Self::Atom(atom)
    }
}

impl From<Vector> for K {
    fn from(vector: Vector) -> Self {
        Self::Vector(vector)
    }
}

impl From<VectorData> for K {
    fn from(data: VectorData) -> Self {
        Self::vector(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_index_and_iterate() {
        let s: Symbols = ["abc", "", "c"].into_iter().collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(0), Some(&b"abc"[..]));
        assert_eq!(s.get(1), Some(&b""[..]));
        assert_eq!(s.get(2), Some(&b"c"[..]));
        assert_eq!(s.get(3), None);
        assert_eq!(s.as_wire(), b"abc\0\0c\0");
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![&b"abc"[..], b"", b"c"]);
    }

    #[test]
    fn symbols_refuse_nul() {
        let mut s = Symbols::new();
        assert_eq!(s.push(b"a\0b"), Err(NulInSymbol));
        assert!(s.is_empty());
    }
}
