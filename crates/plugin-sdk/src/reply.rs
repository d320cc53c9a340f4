//! Builders for replies: values to answer with ([`Verdict::reply`]), errors ([`error`]), tables
//! ([`TableBuilder`]), dictionaries and the vectors they are made of.
//!
//! ```
//! use qgate_plugin_sdk::{Verdict, reply};
//!
//! let table = reply::TableBuilder::new()
//!     .column("handle", reply::ints([4, 5]))
//!     .column("user", reply::symbols(["alice", "bob"]))
//!     .build()
//!     .unwrap();
//! let verdict = Verdict::reply(&table);
//! assert!(matches!(verdict, Verdict::Reply(_)));
//! assert_eq!(reply::error("access"), Verdict::Deny("access".to_owned()));
//! ```

use qgate_ipc::{K, Vector, VectorData};

use crate::{AuthVerdict, Verdict};

impl Verdict {
    /// Answers with `value`, encoded as a kdb+ IPC body; a value that cannot be encoded (a
    /// symbol with a NUL byte, nesting too deep) becomes a deny saying so.
    pub fn reply(value: &K) -> Self {
        let mut body = Vec::new();
        match qgate_ipc::encode(value, &mut body) {
            Ok(()) => Self::Reply(body),
            Err(err) => Self::Deny(format!("reply: {err}")),
        }
    }

    /// Refuses with the q error `message` (sent without the leading `'`).
    pub fn deny(message: impl Into<String>) -> Self {
        Self::Deny(message.into())
    }

    /// Sends the message to the upstream named `upstream` (gateway mode), ending the chain. The
    /// plugin's `routes` in `config.toml` must list it, or the host denies the message instead.
    pub fn route(upstream: impl Into<String>) -> Self {
        Self::Route(upstream.into())
    }
}

impl AuthVerdict {
    /// Accepts the client under the user name it sent.
    pub fn allow() -> Self {
        Self::Allow(None)
    }

    /// Accepts the client, and later events see `user` as its name.
    pub fn allow_as(user: impl Into<String>) -> Self {
        Self::Allow(Some(user.into()))
    }
}

/// A q error reply: the verdict [`Verdict::Deny`] with `message`.
pub fn error(message: impl Into<String>) -> Verdict {
    Verdict::deny(message)
}

/// A dictionary from symbol keys to a general list of values.
pub fn dict<S: AsRef<[u8]>>(entries: impl IntoIterator<Item = (S, K)>) -> K {
    let (keys, values): (Vec<S>, Vec<K>) = entries.into_iter().unzip();
    K::dict(K::symbols(keys), K::list(values))
}

/// A boolean vector.
pub fn booleans(items: impl IntoIterator<Item = bool>) -> K {
    K::vector(VectorData::Boolean(items.into_iter().collect()))
}

/// An int vector.
pub fn ints(items: impl IntoIterator<Item = i32>) -> K {
    K::vector(VectorData::Int(items.into_iter().collect()))
}

/// A long vector.
pub fn longs(items: impl IntoIterator<Item = i64>) -> K {
    K::vector(VectorData::Long(items.into_iter().collect()))
}

/// A float vector.
pub fn floats(items: impl IntoIterator<Item = f64>) -> K {
    K::vector(VectorData::Float(items.into_iter().collect()))
}

/// A symbol vector; a name is cut at a NUL byte, as q would.
pub fn symbols<S: AsRef<[u8]>>(items: impl IntoIterator<Item = S>) -> K {
    K::symbols(items)
}

/// A general list of strings (char vectors).
pub fn strings<S: AsRef<[u8]>>(items: impl IntoIterator<Item = S>) -> K {
    K::list(items.into_iter().map(K::string).collect())
}

/// A timestamp vector, from q timestamps (nanoseconds since 2000.01.01; see
/// [`q::timestamp_from_unix_nanos`](crate::q::timestamp_from_unix_nanos)).
pub fn timestamps(items: impl IntoIterator<Item = i64>) -> K {
    K::vector(VectorData::Timestamp(items.into_iter().collect()))
}

/// Builds an unkeyed table column by column.
#[derive(Clone, Debug, Default)]
pub struct TableBuilder {
    names: Vec<String>,
    columns: Vec<K>,
}

impl TableBuilder {
    /// A table with no columns yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the column `name`, a vector (or a general list, for strings).
    #[must_use]
    pub fn column(mut self, name: impl Into<String>, values: K) -> Self {
        self.names.push(name.into());
        self.columns.push(values);
        self
    }

    /// The table.
    ///
    /// # Errors
    ///
    /// A message when a column is not a vector or a list, when the columns differ in length, or
    /// when two columns share a name.
    pub fn build(self) -> Result<K, String> {
        let mut rows = None;
        for (name, column) in self.names.iter().zip(&self.columns) {
            if !matches!(column, K::Vector(_) | K::List(_)) {
                return Err(format!("column `{name}` is not a list"));
            }
            match rows {
                None => rows = Some(column.len()),
                Some(n) if n != column.len() => {
                    return Err(format!(
                        "column `{name}` has {} rows, not {n}",
                        column.len()
                    ));
                }
                Some(_) => {}
            }
            if self.names.iter().filter(|other| *other == name).count() > 1 {
                return Err(format!("column `{name}` appears twice"));
            }
        }
        Ok(K::table(self.names, self.columns))
    }
}

/// An empty vector of the type of `code` (a positive q type code): the column of an empty table.
pub fn empty(code: i8) -> Option<K> {
    let data = match code {
        1 => VectorData::Boolean(Vec::new()),
        6 => VectorData::Int(Vec::new()),
        7 => VectorData::Long(Vec::new()),
        9 => VectorData::Float(Vec::new()),
        10 => VectorData::Char(Vec::new()),
        11 => VectorData::Symbol(Default::default()),
        12 => VectorData::Timestamp(Vec::new()),
        _ => return None,
    };
    Some(K::Vector(Vector::new(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_check_their_columns() {
        let ok = TableBuilder::new()
            .column("a", longs([1, 2]))
            .column("b", strings(["x", "y"]))
            .build();
        assert_eq!(ok.map(|t| t.len()), Ok(2));
        let ragged = TableBuilder::new()
            .column("a", longs([1, 2]))
            .column("b", longs([1]))
            .build();
        assert!(ragged.is_err());
        let twice = TableBuilder::new()
            .column("a", longs([1]))
            .column("a", longs([1]))
            .build();
        assert!(twice.is_err());
        assert!(TableBuilder::new().column("a", K::long(1)).build().is_err());
    }

    #[test]
    fn replies_encode_and_bad_values_deny() {
        assert_eq!(
            Verdict::reply(&K::long(1)),
            Verdict::Reply(vec![0xf9, 1, 0, 0, 0, 0, 0, 0, 0])
        );
        let bad = K::Atom(qgate_ipc::Atom::Symbol(b"a\0b".to_vec()));
        assert!(matches!(Verdict::reply(&bad), Verdict::Deny(_)));
    }

    #[test]
    fn dicts_map_symbols_to_values() {
        use crate::q::KExt;
        let d = dict([("a", K::long(1)), ("b", K::string("x"))]);
        assert_eq!(d.dict_get("b"), Some(K::string("x")));
    }
}
