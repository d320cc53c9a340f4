//! Typed access to q values: calls, text, numbers, dictionaries and tables, through the
//! [`KExt`] extension trait on [`K`], plus q's type names and clock conversions.
//!
//! ```
//! use qgate_plugin_sdk::{K, q::KExt};
//!
//! let call = K::list(vec![K::symbol("add"), K::long(1), K::long(2)]);
//! let call = call.as_call().unwrap();
//! assert_eq!(call.name, "add");
//! assert_eq!(call.args[1].as_i64(), Some(2));
//! ```

use qgate_ipc::{Atom, K, Table, VectorData, type_code};

/// Nanoseconds from the Unix epoch to q's epoch, 2000.01.01D00:00.
pub const Q_EPOCH_UNIX_NANOS: i64 = 946_684_800_000_000_000;

/// A q timestamp (nanoseconds since 2000.01.01) for a Unix time in nanoseconds, such as
/// [`host::now`](crate::host::now).
pub fn timestamp_from_unix_nanos(unix_nanos: i64) -> i64 {
    unix_nanos.saturating_sub(Q_EPOCH_UNIX_NANOS)
}

/// A call-style value: a general list whose head is a symbol or a string.
#[derive(Clone, Debug, PartialEq)]
pub struct Call<'a> {
    /// The function name (bytes that are not UTF-8 make the value not a call).
    pub name: &'a str,
    /// Whether the head is a symbol (`` (`fn;1;2) ``) rather than a string (`("fn";1;2)`).
    pub symbol_head: bool,
    /// The arguments after the head.
    pub args: &'a [K],
}

/// Typed questions about a [`K`].
pub trait KExt {
    /// The value as a call: a general list whose first item is a symbol or a string.
    fn as_call(&self) -> Option<Call<'_>>;
    /// The text of a string or the name of a symbol atom, when it is UTF-8.
    fn as_str(&self) -> Option<&str>;
    /// A boolean atom.
    fn as_bool(&self) -> Option<bool>;
    /// A short, int or long atom, widened (q's nulls are the minimum of each type).
    fn as_i64(&self) -> Option<i64>;
    /// Any numeric atom (short, int, long, real, float) as a float.
    fn as_f64(&self) -> Option<f64>;
    /// The `i`th item of a vector (as an atom) or of a general list.
    fn item(&self, i: usize) -> Option<K>;
    /// The value for the symbol `key` in a dictionary whose keys are symbols.
    fn dict_get(&self, key: &str) -> Option<K>;
    /// The table, when the value is one (an unkeyed table).
    fn as_table(&self) -> Option<&Table>;
    /// The column `name` of a table.
    fn column(&self, name: &str) -> Option<&K>;
    /// q's name for the value's type: `long` for an atom, `longs` for a vector, `string` for a
    /// char vector, `list`, `dict`, `table`, `function`, `null` or `error`. See [`type_name`].
    fn type_name(&self) -> &'static str;
}

impl KExt for K {
    fn as_call(&self) -> Option<Call<'_>> {
        let K::List(list) = self else { return None };
        let (head, args) = list.items.split_first()?;
        let (name, symbol_head) = match head {
            K::Atom(Atom::Symbol(name)) => (name.as_slice(), true),
            K::Vector(v) => match &v.data {
                VectorData::Char(name) => (name.as_slice(), false),
                _ => return None,
            },
            _ => return None,
        };
        Some(Call {
            name: std::str::from_utf8(name).ok()?,
            symbol_head,
            args,
        })
    }

    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_text()?).ok()
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            K::Atom(Atom::Boolean(b)) => Some(*b),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            K::Atom(Atom::Short(x)) => Some((*x).into()),
            K::Atom(Atom::Int(x)) => Some((*x).into()),
            K::Atom(Atom::Long(x)) => Some(*x),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            K::Atom(Atom::Real(x)) => Some((*x).into()),
            K::Atom(Atom::Float(x)) => Some(*x),
            #[expect(
                clippy::cast_precision_loss,
                reason = "q's own long-to-float conversion"
            )]
            other => other.as_i64().map(|x| x as f64),
        }
    }

    fn item(&self, i: usize) -> Option<K> {
        match self {
            K::Vector(v) => v.data.atom(i).map(K::Atom),
            K::List(list) => list.items.get(i).cloned(),
            _ => None,
        }
    }

    fn dict_get(&self, key: &str) -> Option<K> {
        let K::Dict(dict) = self else { return None };
        let K::Vector(keys) = &*dict.keys else {
            return None;
        };
        let VectorData::Symbol(names) = &keys.data else {
            return None;
        };
        let index = names.iter().position(|name| name == key.as_bytes())?;
        dict.values.item(index)
    }

    fn as_table(&self) -> Option<&Table> {
        match self {
            K::Table(table) => Some(table),
            _ => None,
        }
    }

    fn column(&self, name: &str) -> Option<&K> {
        self.as_table()?.column(name.as_bytes())
    }

    fn type_name(&self) -> &'static str {
        match self {
            K::Null => "null",
            K::Error(_) => "error",
            K::Function(_) => "function",
            other => type_name(other.type_code()),
        }
    }
}

/// q's name for a type code: the atom's name for a negative code (`-7` is `long`), the plural
/// for a vector (`7` is `longs`, except `10`, a char vector, which is `string`), and `list`,
/// `table`, `dict`, `function` for the structural codes.
pub fn type_name(code: i8) -> &'static str {
    const ATOMS: [&str; 20] = [
        "",
        "boolean",
        "guid",
        "",
        "byte",
        "short",
        "int",
        "long",
        "real",
        "float",
        "char",
        "symbol",
        "timestamp",
        "month",
        "date",
        "datetime",
        "timespan",
        "minute",
        "second",
        "time",
    ];
    const VECTORS: [&str; 20] = [
        "list",
        "booleans",
        "guids",
        "",
        "bytes",
        "shorts",
        "ints",
        "longs",
        "reals",
        "floats",
        "string",
        "symbols",
        "timestamps",
        "months",
        "dates",
        "datetimes",
        "timespans",
        "minutes",
        "seconds",
        "times",
    ];
    let name = match code {
        type_code::TABLE => "table",
        type_code::DICT | type_code::SORTED_DICT => "dict",
        type_code::ERROR => "error",
        type_code::LAMBDA..=type_code::EACH_LEFT => "function",
        -19..=-1 => ATOMS[usize::from(code.unsigned_abs())],
        0..=19 => VECTORS[usize::from(code.unsigned_abs())],
        _ => "",
    };
    if name.is_empty() { "unknown" } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_have_a_symbol_or_string_head() {
        let by_symbol = K::list(vec![K::symbol("f"), K::long(1)]);
        let call = by_symbol.as_call().unwrap_or_else(|| panic!("not a call"));
        assert_eq!(
            (call.name, call.symbol_head, call.args.len()),
            ("f", true, 1)
        );
        let by_string = K::list(vec![K::string("f")]);
        let call = by_string.as_call().unwrap_or_else(|| panic!("not a call"));
        assert_eq!(
            (call.name, call.symbol_head, call.args.len()),
            ("f", false, 0)
        );
        assert_eq!(K::list(vec![K::long(1)]).as_call(), None);
        assert_eq!(K::string("f").as_call(), None);
    }

    #[test]
    fn dictionaries_and_tables_are_indexed_by_name() {
        let dict = K::dict(
            K::symbols(["a", "b"]),
            K::vector(VectorData::Long(vec![1, 2])),
        );
        assert_eq!(dict.dict_get("b"), Some(K::long(2)));
        assert_eq!(dict.dict_get("c"), None);
        let table = K::table(["x"], vec![K::vector(VectorData::Long(vec![7, 8]))]);
        assert_eq!(table.column("x").and_then(|c| c.item(1)), Some(K::long(8)));
        assert_eq!(table.column("y"), None);
    }

    #[test]
    fn type_names_follow_q() {
        assert_eq!(K::long(1).type_name(), "long");
        assert_eq!(K::string("a").type_name(), "string");
        assert_eq!(K::symbols(["a"]).type_name(), "symbols");
        assert_eq!(K::list(vec![]).type_name(), "list");
        assert_eq!(K::Null.type_name(), "null");
        assert_eq!(type_name(99), "dict");
        assert_eq!(type_name(3), "unknown");
    }

    #[test]
    fn numbers_widen() {
        assert_eq!(K::Atom(Atom::Int(3)).as_i64(), Some(3));
        assert_eq!(K::Atom(Atom::Real(1.5)).as_f64(), Some(1.5));
        assert_eq!(K::long(2).as_f64(), Some(2.0));
        assert_eq!(K::symbol("a").as_i64(), None);
    }
}
