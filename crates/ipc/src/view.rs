//! A zero-copy view over a received body, so that a policy can ask what a message is without
//! building it.
//!
//! Every message is inspected, most of them by a policy that wants one fact: is this a call, what
//! is its head, what is the query text.
//! [`ValueView::new`] validates the body once (the check kdb+ itself runs on every message);
//! after that every question is answered by reading a few bytes in place: no allocation, and no
//! copy of a 100 MB insert to learn that its head is `` `insert ``.
//!
//! ```
//! use qgate_ipc::{Endian, ValueView};
//!
//! // ("legalOperation"; 1; 2), as PyKX and qPython send a call.
//! let body = [
//!     0x00, 0x00, 0x03, 0, 0, 0, // general list of 3
//!     0x0a, 0x00, 0x02, 0, 0, 0, b'f', b'n', // "fn"
//!     0xf9, 1, 0, 0, 0, 0, 0, 0, 0, // 1
//!     0xf9, 2, 0, 0, 0, 0, 0, 0, 0, // 2
//! ];
//! let view = ValueView::new(&body, Endian::Little).unwrap();
//! let call = view.call().unwrap();
//! assert_eq!(call.name(), b"fn");
//! assert_eq!(call.arg_count(), 2);
//! assert_eq!(call.arg(1).unwrap().as_i64(), Some(2));
//! ```

use std::fmt;

use crate::{
    decode,
    error::DecodeError,
    frame::Endian,
    value::{Atom, Attr, K, type_code},
};

/// A view of one encoded value, checked to be well-formed.
#[derive(Clone, Copy)]
pub struct ValueView<'a> {
    /// Exactly the bytes of this value, type byte first.
    bytes: &'a [u8],
    endian: Endian,
}

impl<'a> ValueView<'a> {
    /// A view over a whole body, checked to hold exactly one well-formed value.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the body is not one well-formed value.
    pub fn new(body: &'a [u8], endian: Endian) -> Result<Self, DecodeError> {
        decode::validate(body, endian)?;
        Ok(Self {
            bytes: body,
            endian,
        })
    }

    /// A view over a body that has already passed [`crate::validate`], without checking it
    /// again.
    ///
    /// On a body that was not validated the accessors may answer `None` or nonsense, but they
    /// never panic and never read outside `body`.
    pub fn trusted(body: &'a [u8], endian: Endian) -> Self {
        Self {
            bytes: body,
            endian,
        }
    }

    /// The type byte: negative for atoms, 0 for a general list, 1 to 19 for vectors, 98 for a
    /// table, 99 for a dictionary and so on (see [`type_code`]).
    pub fn type_code(&self) -> i8 {
        self.bytes.first().map_or(0, |&b| b as i8)
    }

    /// The encoded bytes of this value, type byte first.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The byte order of the numbers in [`ValueView::as_bytes`].
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// Whether this is a general list.
    pub fn is_list(&self) -> bool {
        self.type_code() == type_code::LIST
    }

    /// The count of a general list or a vector.
    pub fn count(&self) -> Option<usize> {
        if !(0..=19).contains(&self.type_code()) {
            return None;
        }
        let raw: [u8; 4] = *self.bytes.get(2..6)?.first_chunk()?;
        let count = match self.endian {
            Endian::Little => i32::from_le_bytes(raw),
            Endian::Big => i32::from_be_bytes(raw),
        };
        usize::try_from(count).ok()
    }

    /// The attribute of a general list or a vector.
    pub fn attr(&self) -> Option<Attr> {
        if !(0..=19).contains(&self.type_code()) {
            return None;
        }
        Attr::from_byte(*self.bytes.get(1)?)
    }

    /// The text of a char vector (a q string), such as a free-text query.
    pub fn string(&self) -> Option<&'a [u8]> {
        (self.type_code() == type_code::CHAR).then(|| self.bytes.get(6..))?
    }

    /// The name of a symbol atom.
    pub fn symbol(&self) -> Option<&'a [u8]> {
        if self.type_code() != -type_code::SYMBOL {
            return None;
        }
        let rest = self.bytes.get(1..)?;
        rest.get(..memchr::memchr(0, rest)?)
    }

    /// The text of a q error (type -128, the body of an error response), without its NUL: what a
    /// client means when it answers a server's query with `'text`.
    pub fn error_text(&self) -> Option<&'a [u8]> {
        if self.type_code() != type_code::ERROR {
            return None;
        }
        let rest = self.bytes.get(1..)?;
        rest.get(..memchr::memchr(0, rest)?)
    }

    /// The text of a char vector or the name of a symbol atom.
    pub fn text(&self) -> Option<&'a [u8]> {
        self.string().or_else(|| self.symbol())
    }

    /// The names of a symbol vector, without copying them.
    pub fn symbols(&self) -> Option<impl Iterator<Item = &'a [u8]> + 'a> {
        if self.type_code() != type_code::SYMBOL {
            return None;
        }
        let count = self.count()?;
        let names = self.bytes.get(6..)?;
        Some(names.split(|&b| b == 0).take(count))
    }

    /// An atom, decoded (cheap: no allocation except a symbol's name).
    pub fn atom(&self) -> Option<Atom> {
        if !(-19..=-1).contains(&self.type_code()) {
            return None;
        }
        match self.to_k() {
            Ok(K::Atom(atom)) => Some(atom),
            _ => None,
        }
    }

    /// The value of a short, int or long atom, widened; `None` for anything else.
    pub fn as_i64(&self) -> Option<i64> {
        match self.atom()? {
            Atom::Short(x) => Some(x.into()),
            Atom::Int(x) => Some(x.into()),
            Atom::Long(x) => Some(x),
            _ => None,
        }
    }

    /// The items of a general list.
    pub fn items(&self) -> Option<ListItems<'a>> {
        if !self.is_list() {
            return None;
        }
        Some(ListItems {
            body: self.bytes,
            pos: 6,
            remaining: self.count()?,
            endian: self.endian,
        })
    }

    /// The `i`th item of a general list.
    pub fn item(&self, i: usize) -> Option<ValueView<'a>> {
        self.items()?.nth(i)
    }

    /// The keys and values of a dictionary (sorted or not), or the column names and columns of a
    /// table.
    pub fn pair(&self) -> Option<(ValueView<'a>, ValueView<'a>)> {
        let start = match self.type_code() {
            type_code::DICT | type_code::SORTED_DICT => 1,
            type_code::TABLE => 3,
            _ => return None,
        };
        let mut items = ListItems {
            body: self.bytes,
            pos: start,
            remaining: 2,
            endian: self.endian,
        };
        Some((items.next()?, items.next()?))
    }

    /// The message as a call, when it is a general list whose first item is a symbol atom
    /// (`` (`fn;1;2) ``, q's way) or a char vector (`("fn";1;2)`, the way of PyKX, qPython and
    /// the C API).
    pub fn call(&self) -> Option<Call<'a>> {
        let mut items = self.items()?;
        let head = items.next()?;
        let name = head.text()?;
        Some(Call {
            name,
            symbol_head: head.type_code() == -type_code::SYMBOL,
            args: items,
        })
    }

    /// The value, decoded into an owned tree.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when it would take more memory than the default budget.
    pub fn to_k(&self) -> Result<K, DecodeError> {
        decode::decode(self.bytes, self.endian)
    }
}

impl fmt::Debug for ValueView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueView")
            .field("type_code", &self.type_code())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A call-style message: a general list whose head is a symbol or a string.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    name: &'a [u8],
    symbol_head: bool,
    args: ListItems<'a>,
}

impl<'a> Call<'a> {
    /// The function name: the head symbol or string.
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// Whether the head is a symbol (`` (`fn;…) ``) rather than a string (`("fn";…)`).
    pub fn has_symbol_head(&self) -> bool {
        self.symbol_head
    }

    /// The number of arguments after the head.
    pub fn arg_count(&self) -> usize {
        self.args.remaining
    }

    /// The arguments after the head.
    pub fn args(&self) -> ListItems<'a> {
        self.args.clone()
    }

    /// The `i`th argument after the head (0-based).
    pub fn arg(&self, i: usize) -> Option<ValueView<'a>> {
        self.args().nth(i)
    }
}

/// The items of a general list, each a view; stepping over an item reads only its structure.
#[derive(Clone, Debug)]
pub struct ListItems<'a> {
    body: &'a [u8],
    pos: usize,
    remaining: usize,
    endian: Endian,
}

impl<'a> Iterator for ListItems<'a> {
    type Item = ValueView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // The body was validated when the first view was made, so stepping cannot fail; if it
        // somehow does, the iteration ends instead of panicking.
        let end = decode::skip(self.body, self.pos, self.endian).ok()?;
        let bytes = self.body.get(self.pos..end)?;
        self.pos = end;
        self.remaining -= 1;
        Some(ValueView {
            bytes,
            endian: self.endian,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, value::VectorData};

    fn body(value: &K) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).expect("encodes");
        out
    }

    #[test]
    fn symbol_head_call() {
        let value = K::list(vec![K::symbol("insert"), K::symbol("trade"), K::long(7)]);
        let bytes = body(&value);
        let view = ValueView::new(&bytes, Endian::Little).expect("valid");
        let call = view.call().expect("a call");
        assert_eq!(call.name(), b"insert");
        assert!(call.has_symbol_head());
        assert_eq!(call.arg_count(), 2);
        assert_eq!(call.arg(0).and_then(|a| a.symbol()), Some(&b"trade"[..]));
        assert_eq!(call.arg(1).and_then(|a| a.as_i64()), Some(7));
        assert!(call.arg(2).is_none());
        assert_eq!(call.arg(1).map(|a| a.to_k()), Some(Ok(K::long(7))));
    }

    #[test]
    fn query_text() {
        let bytes = body(&K::string("select from t"));
        let view = ValueView::new(&bytes, Endian::Little).expect("valid");
        assert_eq!(view.string(), Some(&b"select from t"[..]));
        assert!(view.call().is_none());
    }

    #[test]
    fn error_text() {
        let bytes = body(&K::error("PyKX cannot receive queries"));
        let view = ValueView::new(&bytes, Endian::Little).expect("valid");
        assert_eq!(view.error_text(), Some(&b"PyKX cannot receive queries"[..]));
        let bytes = body(&K::string("not an error"));
        let view = ValueView::new(&bytes, Endian::Little).expect("valid");
        assert_eq!(view.error_text(), None);
    }

    #[test]
    fn dictionaries_tables_and_symbols() {
        let table = K::table(
            ["a", "b"],
            vec![
                K::vector(VectorData::Long(vec![1, 2])),
                K::symbols(["x", "y"]),
            ],
        );
        let bytes = body(&table);
        let view = ValueView::new(&bytes, Endian::Little).expect("valid");
        let (names, columns) = view.pair().expect("a table");
        assert_eq!(
            names.symbols().map(|s| s.collect::<Vec<_>>()),
            Some(vec![&b"a"[..], b"b"])
        );
        assert_eq!(columns.count(), Some(2));
        let b = columns.item(1).expect("column b");
        assert_eq!(b.symbols().map(|s| s.count()), Some(2));
    }

    #[test]
    fn not_a_call() {
        for value in [
            K::list(vec![]),
            K::list(vec![K::long(1), K::long(2)]),
            K::long(1),
        ] {
            let bytes = body(&value);
            let view = ValueView::new(&bytes, Endian::Little).expect("valid");
            assert!(view.call().is_none(), "{value:?}");
        }
    }

    #[test]
    fn refuses_malformed() {
        assert!(ValueView::new(&[0, 0, 2, 0, 0, 0, 0xff, 1], Endian::Little).is_err());
    }
}
