//! Proptest strategies for arbitrary q values, shared by the property tests (`properties.rs`), the
//! memory-budget test (`alloc.rs`) and the table-surgery tests (`table.rs`), with a big-endian
//! encoder written from the spec for the tests of big-endian input.
//!
//! Every shape the codec knows is generated: every atom and vector type (nulls, infinities and
//! NaN payloads included), every attribute, general lists, dictionaries (sorted and not), tables,
//! keyed tables, errors, the generic null and every kind of function, nested a few levels deep.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use proptest::{collection::vec, prelude::*};
use qgate_ipc::{Atom, Attr, Dict, Function, K, List, Symbols, Table, Vector, VectorData};

/// The longest vectors generated, except in [`long_vector`].
const SHORT: usize = 12;

/// Any attribute.
pub(crate) fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        4 => Just(Attr::None),
        1 => Just(Attr::Sorted),
        1 => Just(Attr::Unique),
        1 => Just(Attr::Parted),
        1 => Just(Attr::Grouped),
    ]
}

/// A symbol name or error text: any bytes but NUL, often ASCII.
pub(crate) fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(b'a'..=b'z', 0..6), vec(1u8..=255, 0..10),]
}

/// A short, with its null and infinities more often than chance would give them.
fn short() -> impl Strategy<Value = i16> {
    prop_oneof![
        1 => Just(i16::MIN),
        1 => Just(i16::MAX),
        1 => Just(-i16::MAX),
        5 => any::<i16>(),
    ]
}

/// An int (also month, date, minute, second, time), nulls and infinities included.
fn int() -> impl Strategy<Value = i32> {
    prop_oneof![
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        1 => Just(-i32::MAX),
        5 => any::<i32>(),
    ]
}

/// A long (also timestamp, timespan), nulls and infinities included.
fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(-i64::MAX),
        5 => any::<i64>(),
    ]
}

/// A real: any bit pattern (so any NaN payload), plus q's null and infinities.
fn real() -> impl Strategy<Value = f32> {
    prop_oneof![
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        5 => any::<u32>().prop_map(f32::from_bits),
        2 => any::<f32>(),
    ]
}

/// A float (also datetime): any bit pattern, plus q's null and infinities.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        5 => any::<u64>().prop_map(f64::from_bits),
        2 => any::<f64>(),
    ]
}

/// Any atom.
pub(crate) fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        any::<bool>().prop_map(Atom::Boolean),
        any::<[u8; 16]>().prop_map(Atom::Guid),
        any::<u8>().prop_map(Atom::Byte),
        short().prop_map(Atom::Short),
        int().prop_map(Atom::Int),
        long().prop_map(Atom::Long),
        real().prop_map(Atom::Real),
        float().prop_map(Atom::Float),
        any::<u8>().prop_map(Atom::Char),
        name().prop_map(Atom::Symbol),
        long().prop_map(Atom::Timestamp),
        int().prop_map(Atom::Month),
        int().prop_map(Atom::Date),
        float().prop_map(Atom::Datetime),
        long().prop_map(Atom::Timespan),
        int().prop_map(Atom::Minute),
        int().prop_map(Atom::Second),
        int().prop_map(Atom::Time),
    ]
}

/// Any symbol vector of `len` names.
fn symbols(len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Symbols> {
    vec(name(), len).prop_map(|names| names.into_iter().collect::<Symbols>())
}

/// The items of a vector of fixed-size numbers (every basic type but symbols), `len` long.
pub(crate) fn fixed_vector_data(len: usize) -> impl Strategy<Value = VectorData> {
    let n = 0..=len;
    prop_oneof![
        vec(any::<bool>(), n.clone()).prop_map(VectorData::Boolean),
        vec(any::<[u8; 16]>(), n.clone()).prop_map(VectorData::Guid),
        vec(any::<u8>(), n.clone()).prop_map(VectorData::Byte),
        vec(short(), n.clone()).prop_map(VectorData::Short),
        vec(int(), n.clone()).prop_map(VectorData::Int),
        vec(long(), n.clone()).prop_map(VectorData::Long),
        vec(real(), n.clone()).prop_map(VectorData::Real),
        vec(float(), n.clone()).prop_map(VectorData::Float),
        vec(any::<u8>(), n.clone()).prop_map(VectorData::Char),
        vec(long(), n.clone()).prop_map(VectorData::Timestamp),
        vec(int(), n.clone()).prop_map(VectorData::Month),
        vec(int(), n.clone()).prop_map(VectorData::Date),
        vec(float(), n.clone()).prop_map(VectorData::Datetime),
        vec(long(), n.clone()).prop_map(VectorData::Timespan),
        vec(int(), n.clone()).prop_map(VectorData::Minute),
        vec(int(), n.clone()).prop_map(VectorData::Second),
        vec(int(), n).prop_map(VectorData::Time),
    ]
}

/// The items of any vector, symbols included, up to `len` long.
pub(crate) fn vector_data(len: usize) -> impl Strategy<Value = VectorData> {
    prop_oneof![
        17 => fixed_vector_data(len),
        2 => symbols(0..=len).prop_map(VectorData::Symbol),
    ]
}

/// Any vector with any attribute (q would not send `` `s# `` on unsorted data, but the codec
/// carries the byte as it is).
pub(crate) fn vector() -> impl Strategy<Value = K> {
    (attr(), vector_data(SHORT)).prop_map(|(attr, data)| K::Vector(Vector { attr, data }))
}

/// A vector of exactly `len` items of a random type: a table column.
fn column(len: usize) -> impl Strategy<Value = K> {
    let fixed = vector_data_exact(len);
    let syms = symbols(len).prop_map(VectorData::Symbol);
    (attr(), prop_oneof![6 => fixed, 1 => syms])
        .prop_map(|(attr, data)| K::Vector(Vector { attr, data }))
}

/// Fixed-size vector data of exactly `len` items.
fn vector_data_exact(len: usize) -> impl Strategy<Value = VectorData> {
    prop_oneof![
        vec(any::<bool>(), len).prop_map(VectorData::Boolean),
        vec(any::<[u8; 16]>(), len).prop_map(VectorData::Guid),
        vec(short(), len).prop_map(VectorData::Short),
        vec(int(), len).prop_map(VectorData::Int),
        vec(long(), len).prop_map(VectorData::Long),
        vec(real(), len).prop_map(VectorData::Real),
        vec(float(), len).prop_map(VectorData::Float),
        vec(any::<u8>(), len).prop_map(VectorData::Char),
        vec(long(), len).prop_map(VectorData::Timestamp),
        vec(int(), len).prop_map(VectorData::Date),
        vec(int(), len).prop_map(VectorData::Time),
    ]
}

/// A table: a symbol vector of 1 to 4 column names and as many columns of one length.
pub(crate) fn table() -> impl Strategy<Value = K> {
    (1usize..=4, 0usize..=SHORT, attr())
        .prop_flat_map(|(width, rows, attr)| (symbols(width), vec(column(rows), width), Just(attr)))
        .prop_map(|(names, columns, attr)| {
            K::Table(Table {
                attr,
                columns: Box::new(K::vector(VectorData::Symbol(names))),
                values: Box::new(K::list(columns)),
            })
        })
}

/// A keyed table: a dictionary from a table of keys to a table of values, with as many rows.
pub(crate) fn keyed_table() -> impl Strategy<Value = K> {
    (0usize..=SHORT, 1usize..=2, 1usize..=3, any::<bool>())
        .prop_flat_map(|(rows, key_width, value_width, sorted)| {
            (
                symbols(key_width),
                vec(column(rows), key_width),
                symbols(value_width),
                vec(column(rows), value_width),
                Just(sorted),
            )
        })
        .prop_map(|(key_names, keys, value_names, values, sorted)| {
            let table = |names: Symbols, columns: Vec<K>| {
                K::Table(Table {
                    attr: Attr::None,
                    columns: Box::new(K::vector(VectorData::Symbol(names))),
                    values: Box::new(K::list(columns)),
                })
            };
            K::Dict(Dict {
                sorted,
                keys: Box::new(table(key_names, keys)),
                values: Box::new(table(value_names, values)),
            })
        })
}

/// A lambda: a context name and its source as a char vector.
fn lambda() -> impl Strategy<Value = K> {
    (name(), vec(any::<u8>(), 0..24)).prop_map(|(context, source)| {
        K::Function(Function::Lambda {
            context,
            source: Box::new(K::string(source)),
        })
    })
}

/// A value with no nested values: atoms, vectors, tables, the generic null, errors, primitives
/// and lambdas.
pub(crate) fn leaf() -> impl Strategy<Value = K> {
    prop_oneof![
        8 => atom().prop_map(K::Atom),
        8 => vector(),
        2 => table(),
        1 => keyed_table(),
        1 => Just(K::Null),
        1 => name().prop_map(K::Error),
        1 => (1u8..=255).prop_map(|i| K::Function(Function::Unary(i))),
        1 => any::<u8>().prop_map(|i| K::Function(Function::Binary(i))),
        1 => any::<u8>().prop_map(|i| K::Function(Function::Ternary(i))),
        1 => lambda(),
    ]
}

/// Any q value, nested up to four levels of lists, dictionaries and functions.
pub(crate) fn value() -> impl Strategy<Value = K> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            4 => (attr(), vec(inner.clone(), 0..6))
                .prop_map(|(attr, items)| K::List(List { attr, items })),
            // A dictionary of anything (the codec does not check shapes) ...
            1 => (any::<bool>(), inner.clone(), inner.clone()).prop_map(|(sorted, keys, values)| {
                K::Dict(Dict { sorted, keys: Box::new(keys), values: Box::new(values) })
            }),
            // ... and one shaped as q builds them: a symbol vector of keys, a list of values.
            2 => (0usize..5, any::<bool>())
                .prop_flat_map(move |(n, sorted)| (symbols(n), vec(inner.clone(), n), Just(sorted)))
                .prop_map(|(keys, values, sorted)| {
                    K::Dict(Dict {
                        sorted,
                        keys: Box::new(K::vector(VectorData::Symbol(keys))),
                        values: Box::new(K::list(values)),
                    })
                }),
            1 => vec(leaf(), 1..4).prop_map(|items| K::Function(Function::Projection(items))),
            1 => vec(leaf(), 1..4).prop_map(|items| K::Function(Function::Composition(items))),
            1 => (0u8..6, leaf()).prop_map(|(kind, f)| {
                let f = Box::new(f);
                K::Function(match kind {
                    0 => Function::Each(f),
                    1 => Function::Over(f),
                    2 => Function::Scan(f),
                    3 => Function::EachPrior(f),
                    4 => Function::EachRight(f),
                    _ => Function::EachLeft(f),
                })
            }),
        ]
    })
}

/// A call as clients send one: a general list headed by a symbol (or a string), then arguments.
pub(crate) fn call() -> impl Strategy<Value = (Vec<u8>, bool, Vec<K>)> {
    (name(), any::<bool>(), vec(value(), 0..4))
}

/// Bytes of a valid encoding with random damage: bytes flipped, inserted, removed, or the end cut
/// off.
pub(crate) fn mutated(encoded: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    vec((0u8..4, any::<usize>(), any::<u8>()), 1..5).prop_map(move |edits| {
        let mut bytes = encoded.clone();
        for (kind, at, byte) in edits {
            let at = if bytes.is_empty() {
                0
            } else {
                at % bytes.len()
            };
            match kind {
                0 if !bytes.is_empty() => bytes[at] ^= byte.max(1),
                1 => bytes.insert(at, byte),
                2 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {}
            }
        }
        bytes
    })
}

/// A big-endian encoder written from the spec, independent of the crate's (which only writes
/// little-endian), to check that the decoder reads every count and number in a big-endian body.
pub(crate) fn encode_big(value: &K, out: &mut Vec<u8>) {
    fn count(n: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&i32::try_from(n).unwrap().to_be_bytes());
    }
    fn name(text: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(text);
        out.push(0);
    }
    fn all(items: &[K], out: &mut Vec<u8>) {
        for item in items {
            encode_big(item, out);
        }
    }
    out.push(value.type_code() as u8);
    match value {
        K::Atom(atom) => match atom {
            Atom::Boolean(b) => out.push(u8::from(*b)),
            Atom::Guid(g) => out.extend_from_slice(g),
            Atom::Byte(x) | Atom::Char(x) => out.push(*x),
            Atom::Short(x) => out.extend_from_slice(&x.to_be_bytes()),
            Atom::Int(x)
            | Atom::Month(x)
            | Atom::Date(x)
            | Atom::Minute(x)
            | Atom::Second(x)
            | Atom::Time(x) => out.extend_from_slice(&x.to_be_bytes()),
            Atom::Long(x) | Atom::Timestamp(x) | Atom::Timespan(x) => {
                out.extend_from_slice(&x.to_be_bytes());
            }
            Atom::Real(x) => out.extend_from_slice(&x.to_be_bytes()),
            Atom::Float(x) | Atom::Datetime(x) => out.extend_from_slice(&x.to_be_bytes()),
            Atom::Symbol(s) => name(s, out),
        },
        K::Vector(v) => {
            out.push(v.attr as u8);
            count(v.len(), out);
            match &v.data {
                VectorData::Boolean(x) => out.extend(x.iter().map(|&b| u8::from(b))),
                VectorData::Guid(x) => out.extend_from_slice(x.as_flattened()),
                VectorData::Byte(x) | VectorData::Char(x) => out.extend_from_slice(x),
                VectorData::Symbol(s) => out.extend_from_slice(s.as_wire()),
                VectorData::Short(x) => out.extend(x.iter().flat_map(|n| n.to_be_bytes())),
                VectorData::Int(x)
                | VectorData::Month(x)
                | VectorData::Date(x)
                | VectorData::Minute(x)
                | VectorData::Second(x)
                | VectorData::Time(x) => out.extend(x.iter().flat_map(|n| n.to_be_bytes())),
                VectorData::Long(x) | VectorData::Timestamp(x) | VectorData::Timespan(x) => {
                    out.extend(x.iter().flat_map(|n| n.to_be_bytes()));
                }
                VectorData::Real(x) => out.extend(x.iter().flat_map(|n| n.to_be_bytes())),
                VectorData::Float(x) | VectorData::Datetime(x) => {
                    out.extend(x.iter().flat_map(|n| n.to_be_bytes()));
                }
            }
        }
        K::List(list) => {
            out.push(list.attr as u8);
            count(list.items.len(), out);
            all(&list.items, out);
        }
        K::Dict(dict) => {
            encode_big(&dict.keys, out);
            encode_big(&dict.values, out);
        }
        K::Table(table) => {
            out.push(table.attr as u8);
            out.push(99);
            encode_big(&table.columns, out);
            encode_big(&table.values, out);
        }
        K::Function(f) => match f {
            Function::Lambda { context, source } => {
                name(context, out);
                encode_big(source, out);
            }
            Function::Unary(i) | Function::Binary(i) | Function::Ternary(i) => out.push(*i),
            Function::Projection(items) | Function::Composition(items) => {
                count(items.len(), out);
                all(items, out);
            }
            Function::Each(f)
            | Function::Over(f)
            | Function::Scan(f)
            | Function::EachPrior(f)
            | Function::EachRight(f)
            | Function::EachLeft(f) => encode_big(f, out),
        },
        K::Null => out.push(0),
        K::Error(text) => name(text, out),
    }
}

/// The number of cases for each property: `PROPTEST_CASES` when set, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}
