//! Table surgery (`qgate_ipc::table`) against edits made by hand on `K` values: every shape
//! (table, keyed table, dictionary of tables, update with and without column names), every
//! column type family, masks, drops, caps, empty selections, big-endian input, malformed bytes,
//! and properties over random tables and edits.
//!
//! The expected result is always built independently: the `K` columns filtered, dropped and
//! masked here, then encoded by the crate's encoder, and compared byte for byte with the rewrite
//! (so that NaN payloads and attributes count too).
//!
//! `PROPTEST_CASES=N` runs `N` cases per property instead of the defaults below.

#![allow(clippy::unwrap_used, reason = "tests")]

mod strategy;

use proptest::{collection::vec, prelude::*, test_runner::Config};
use qgate_ipc::{
    Atom, Attr, Dict, Endian, Fault, K, List, Symbols, Table, Vector, VectorData, decode, encode,
    table::{
        self, ColumnRef, Located, Mask, Rewritten, RowSelection, Schemas, TableEdit, TableError,
        TableView,
    },
    type_code, validate,
};

// ----- Building values and expectations by hand.

fn encoded(value: &K) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out).unwrap();
    out
}

fn big(value: &K) -> Vec<u8> {
    let mut out = Vec::new();
    strategy::encode_big(value, &mut out);
    out
}

fn longs(items: &[i64]) -> K {
    K::vector(VectorData::Long(items.to_vec()))
}

fn floats(items: &[f64]) -> K {
    K::vector(VectorData::Float(items.to_vec()))
}

fn strings(items: &[&str]) -> K {
    K::list(items.iter().map(K::string).collect())
}

fn with_attr(column: K, attr: Attr) -> K {
    match column {
        K::Vector(v) => K::Vector(Vector { attr, ..v }),
        K::List(l) => K::List(List { attr, ..l }),
        other => other,
    }
}

fn table_with_attr(value: K, attr: Attr) -> K {
    match value {
        K::Table(t) => K::Table(Table { attr, ..t }),
        other => other,
    }
}

/// The items of `data` at `rows`.
fn pick(data: &VectorData, rows: &[usize]) -> VectorData {
    macro_rules! pick {
        ($($variant:ident),*) => {
            match data {
                $(VectorData::$variant(x) => {
                    VectorData::$variant(rows.iter().map(|&r| x[r].clone()).collect())
                })*
                VectorData::Symbol(s) => {
                    VectorData::Symbol(rows.iter().map(|&r| s.get(r).unwrap()).collect())
                }
            }
        };
    }
    pick!(
        Boolean, Guid, Byte, Short, Int, Long, Real, Float, Char, Timestamp, Month, Date, Datetime,
        Timespan, Minute, Second, Time
    )
}

const REAL_NULL: u32 = 0x7fc0_0000;
const FLOAT_NULL: u64 = 0x7ff8_0000_0000_0000;

/// `n` of q's nulls of the type of `data`, spelled out type by type.
fn nulls(data: &VectorData, n: usize) -> VectorData {
    match data {
        VectorData::Boolean(_) => VectorData::Boolean(vec![false; n]),
        VectorData::Guid(_) => VectorData::Guid(vec![[0; 16]; n]),
        VectorData::Byte(_) => VectorData::Byte(vec![0; n]),
        VectorData::Short(_) => VectorData::Short(vec![i16::MIN; n]),
        VectorData::Int(_) => VectorData::Int(vec![i32::MIN; n]),
        VectorData::Long(_) => VectorData::Long(vec![i64::MIN; n]),
        VectorData::Real(_) => VectorData::Real(vec![f32::from_bits(REAL_NULL); n]),
        VectorData::Float(_) => VectorData::Float(vec![f64::from_bits(FLOAT_NULL); n]),
        VectorData::Char(_) => VectorData::Char(vec![b' '; n]),
        VectorData::Symbol(_) => VectorData::Symbol(std::iter::repeat_n("", n).collect()),
        VectorData::Timestamp(_) => VectorData::Timestamp(vec![i64::MIN; n]),
        VectorData::Month(_) => VectorData::Month(vec![i32::MIN; n]),
        VectorData::Date(_) => VectorData::Date(vec![i32::MIN; n]),
        VectorData::Datetime(_) => VectorData::Datetime(vec![f64::from_bits(FLOAT_NULL); n]),
        VectorData::Timespan(_) => VectorData::Timespan(vec![i64::MIN; n]),
        VectorData::Minute(_) => VectorData::Minute(vec![i32::MIN; n]),
        VectorData::Second(_) => VectorData::Second(vec![i32::MIN; n]),
        VectorData::Time(_) => VectorData::Time(vec![i32::MIN; n]),
    }
}

/// `n` copies of `atom`, as a vector.
fn fill(atom: &Atom, n: usize) -> VectorData {
    match atom {
        Atom::Boolean(x) => VectorData::Boolean(vec![*x; n]),
        Atom::Guid(x) => VectorData::Guid(vec![*x; n]),
        Atom::Byte(x) => VectorData::Byte(vec![*x; n]),
        Atom::Short(x) => VectorData::Short(vec![*x; n]),
        Atom::Int(x) => VectorData::Int(vec![*x; n]),
        Atom::Long(x) => VectorData::Long(vec![*x; n]),
        Atom::Real(x) => VectorData::Real(vec![*x; n]),
        Atom::Float(x) => VectorData::Float(vec![*x; n]),
        Atom::Char(x) => VectorData::Char(vec![*x; n]),
        Atom::Symbol(x) => VectorData::Symbol(std::iter::repeat_n(x, n).collect()),
        Atom::Timestamp(x) => VectorData::Timestamp(vec![*x; n]),
        Atom::Month(x) => VectorData::Month(vec![*x; n]),
        Atom::Date(x) => VectorData::Date(vec![*x; n]),
        Atom::Datetime(x) => VectorData::Datetime(vec![*x; n]),
        Atom::Timespan(x) => VectorData::Timespan(vec![*x; n]),
        Atom::Minute(x) => VectorData::Minute(vec![*x; n]),
        Atom::Second(x) => VectorData::Second(vec![*x; n]),
        Atom::Time(x) => VectorData::Time(vec![*x; n]),
    }
}

/// One column edited by hand: its rows picked, or masked (and then without attribute).
fn edit_column(column: &K, rows: &[usize], mask: Option<&Mask>) -> K {
    match (column, mask) {
        (K::Vector(v), None) => K::Vector(Vector {
            attr: v.attr,
            data: pick(&v.data, rows),
        }),
        (K::Vector(v), Some(Mask::Null)) => K::vector(nulls(&v.data, rows.len())),
        (K::Vector(_), Some(Mask::Value(atom))) => K::vector(fill(atom, rows.len())),
        (K::List(l), None) => K::List(List {
            attr: l.attr,
            items: rows.iter().map(|&r| l.items[r].clone()).collect(),
        }),
        (K::List(_), Some(Mask::Null)) => K::list(vec![K::string(""); rows.len()]),
        (K::List(_), Some(Mask::Text(text))) => K::list(vec![K::string(text); rows.len()]),
        other => panic!("no hand edit for {other:?}"),
    }
}

/// An edit in the hand-made world: the rows kept, the columns dropped, the columns masked.
#[derive(Clone, Debug, Default)]
struct HandEdit {
    rows: Option<Vec<usize>>,
    drop: Vec<Vec<u8>>,
    mask: Vec<(Vec<u8>, Mask)>,
}

impl HandEdit {
    fn touches(&self, names: &Symbols) -> bool {
        names
            .iter()
            .any(|n| self.drop.iter().any(|d| d == n) || self.mask.iter().any(|(m, _)| m == n))
    }
}

/// A table (98) edited by hand.
fn edit_table(value: &K, edit: &HandEdit) -> K {
    let K::Table(t) = value else {
        panic!("not a table: {value:?}");
    };
    let names = t.column_names().unwrap();
    let K::List(columns) = &*t.values else {
        panic!("not a list of columns");
    };
    let all: Vec<usize> = (0..t.row_count()).collect();
    let rows = edit.rows.as_deref().unwrap_or(&all);
    let mut kept_names = Vec::new();
    let mut kept = Vec::new();
    for (name, column) in names.iter().zip(&columns.items) {
        if edit.drop.iter().any(|d| d == name) {
            continue;
        }
        let mask = edit
            .mask
            .iter()
            .rev()
            .find(|(m, _)| m == name)
            .map(|(_, m)| m);
        kept_names.push(name.to_vec());
        kept.push(edit_column(column, rows, mask));
    }
    K::Table(Table {
        attr: if edit.touches(names) {
            Attr::None
        } else {
            t.attr
        },
        columns: Box::new(K::Vector(Vector {
            attr: match &*t.columns {
                K::Vector(v) => v.attr,
                _ => Attr::None,
            },
            data: VectorData::Symbol(kept_names.into_iter().collect()),
        })),
        values: Box::new(K::List(List {
            attr: columns.attr,
            items: kept,
        })),
    })
}

/// A keyed table edited by hand: both halves with the same rows.
fn edit_keyed(value: &K, edit: &HandEdit) -> K {
    let K::Dict(d) = value else {
        panic!("not a keyed table: {value:?}");
    };
    let K::Table(key) = &*d.keys else {
        panic!("keys are not a table");
    };
    let touched = edit.touches(key.column_names().unwrap());
    K::Dict(Dict {
        sorted: d.sorted && !touched,
        keys: Box::new(edit_table(&d.keys, edit)),
        values: Box::new(edit_table(&d.values, edit)),
    })
}

/// Rewrites `body` with one edit for every table, checking the plan sees the table it should.
fn rewrite_all(body: &[u8], endian: Endian, edit: &TableEdit) -> Result<Rewritten, TableError> {
    table::rewrite(body, endian, |_| Ok::<_, TableError>(edit.clone()))
}

/// Checks that `edit` on `value` gives exactly the bytes of `expect`, from little- and big-endian
/// input.
fn check(value: &K, edit: &TableEdit, expect: &K) {
    let want = Rewritten::Changed(encoded(expect));
    assert_eq!(
        rewrite_all(&encoded(value), Endian::Little, edit),
        Ok(want.clone()),
        "little-endian {value:?}"
    );
    assert_eq!(
        rewrite_all(&big(value), Endian::Big, edit),
        Ok(want),
        "big-endian {value:?}"
    );
}

fn err(value: &K, edit: &TableEdit) -> TableError {
    rewrite_all(&encoded(value), Endian::Little, edit).unwrap_err()
}

/// One column of every type family, three rows each.
fn every_type() -> (Vec<&'static str>, Vec<K>) {
    let columns = vec![
        ("b", K::vector(VectorData::Boolean(vec![true, false, true]))),
        (
            "g",
            K::vector(VectorData::Guid(vec![[1; 16], [2; 16], [3; 16]])),
        ),
        ("x", K::vector(VectorData::Byte(vec![1, 2, 3]))),
        ("h", K::vector(VectorData::Short(vec![1, -2, 3]))),
        ("i", K::vector(VectorData::Int(vec![10, 20, 30]))),
        ("j", longs(&[100, 200, 300])),
        ("e", K::vector(VectorData::Real(vec![1.5, 2.5, 3.5]))),
        ("f", floats(&[0.25, 0.5, 0.75])),
        ("c", K::vector(VectorData::Char(b"abc".to_vec()))),
        ("s", K::symbols(["AAPL", "IBM", "MSFT"])),
        ("p", K::vector(VectorData::Timestamp(vec![1, 2, 3]))),
        ("m", K::vector(VectorData::Month(vec![1, 2, 3]))),
        ("d", K::vector(VectorData::Date(vec![8000, 8001, 8002]))),
        ("z", K::vector(VectorData::Datetime(vec![1.25, 2.5, 3.75]))),
        ("n", K::vector(VectorData::Timespan(vec![7, 8, 9]))),
        ("u", K::vector(VectorData::Minute(vec![60, 61, 62]))),
        ("v", K::vector(VectorData::Second(vec![1, 2, 3]))),
        ("t", K::vector(VectorData::Time(vec![1000, 2000, 3000]))),
        ("str", strings(&["buy", "", "sell"])),
        (
            "nested",
            K::list(vec![
                longs(&[1, 2]),
                K::list(vec![K::symbol("a")]),
                longs(&[]),
            ]),
        ),
        (
            "mixed",
            K::list(vec![
                K::long(1),
                K::symbol("x"),
                K::dict(K::symbols(["k"]), longs(&[1])),
            ]),
        ),
    ];
    columns.into_iter().unzip()
}

fn sel(flags: &[bool]) -> RowSelection {
    RowSelection::from_bools(flags.iter().copied())
}

// ----- Tables.

#[test]
fn every_column_type_is_filtered() {
    let (names, columns) = every_type();
    let value = K::table(&names, columns);
    let edit = TableEdit::new().keep_rows(sel(&[true, false, true]));
    let hand = HandEdit {
        rows: Some(vec![0, 2]),
        ..HandEdit::default()
    };
    check(&value, &edit, &edit_table(&value, &hand));
    // One row, and the last.
    let edit = TableEdit::new().keep_rows(sel(&[false, false, true]));
    let hand = HandEdit {
        rows: Some(vec![2]),
        ..HandEdit::default()
    };
    check(&value, &edit, &edit_table(&value, &hand));
}

#[test]
fn every_column_type_is_masked_with_its_null() {
    let (names, columns) = every_type();
    let value = K::table(&names, columns);
    let mut edit = TableEdit::new().keep_rows(sel(&[true, true, false]));
    let mut hand = HandEdit {
        rows: Some(vec![0, 1]),
        ..HandEdit::default()
    };
    // Every column but the first, which is kept to show that unmasked columns stay.
    for name in &names[1..] {
        edit = edit.mask_column(*name, Mask::Null);
        hand.mask.push((name.as_bytes().to_vec(), Mask::Null));
    }
    check(&value, &edit, &edit_table(&value, &hand));
}

#[test]
fn every_vector_type_is_masked_with_a_value_of_its_type() {
    let (names, columns) = every_type();
    let value = K::table(&names, columns.clone());
    let mut edit = TableEdit::new();
    let mut hand = HandEdit::default();
    for (name, column) in names.iter().zip(&columns) {
        let mask = match column {
            // The last row's item, so that every row shows it.
            K::Vector(v) => Mask::Value(v.data.atom(2).unwrap()),
            _ => Mask::Text(b"redacted".to_vec()),
        };
        edit = edit.mask_column(*name, mask.clone());
        hand.mask.push((name.as_bytes().to_vec(), mask));
    }
    check(&value, &edit, &edit_table(&value, &hand));
}

#[test]
fn masks_of_the_wrong_type_are_errors() {
    let value = K::table(
        ["sym", "size", "note"],
        vec![K::symbols(["a", "b"]), longs(&[1, 2]), strings(&["x", "y"])],
    );
    let mask = |column: &str, mask: Mask| TableEdit::new().mask_column(column, mask);
    let cases = [
        (
            mask("size", Mask::Value(Atom::Int(1))),
            "column `size of the table has type 7, and a mask of type -6 does not fit it",
        ),
        (
            mask("sym", Mask::Value(Atom::Long(1))),
            "column `sym of the table has type 11, and a mask of type -7 does not fit it",
        ),
        (
            mask("sym", Mask::Text(b"x".to_vec())),
            "column `sym of the table has type 11, and a mask of type 10 does not fit it",
        ),
        (
            mask("note", Mask::Value(Atom::Symbol(b"x".to_vec()))),
            "column `note of the table has type 0, and a mask of type -11 does not fit it",
        ),
        (
            mask("sym", Mask::Value(Atom::Symbol(b"a\0b".to_vec()))),
            "the mask for column `sym of the table holds a NUL byte, which ends a symbol",
        ),
    ];
    for (edit, message) in cases {
        let error = err(&value, &edit);
        assert_eq!(error.to_string(), message);
        assert_eq!(error.fault(), Fault::Local);
    }
}

#[test]
fn columns_are_dropped_and_rows_capped() {
    let value = K::table(
        ["sym", "price", "client", "note"],
        vec![
            K::symbols(["a", "b", "a", "c", "a"]),
            floats(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            K::symbols(["c1", "c2", "c3", "c4", "c5"]),
            strings(&["n1", "n2", "n3", "n4", "n5"]),
        ],
    );
    // Dropped columns, a cap and no filter: the first rows.
    let edit = TableEdit::new()
        .drop_column("client")
        .drop_column(3usize)
        .max_rows(2);
    let hand = HandEdit {
        rows: Some(vec![0, 1]),
        drop: vec![b"client".to_vec(), b"note".to_vec()],
        ..HandEdit::default()
    };
    check(&value, &edit, &edit_table(&value, &hand));

    // The cap counts the rows the filter keeps.
    let body = encoded(&value);
    let edited = table::rewrite(&body, Endian::Little, |t| {
        let rows = RowSelection::from_symbols(t.require("sym")?, |s| s == b"a")?;
        Ok::<_, TableError>(TableEdit::new().keep_rows(rows).max_rows(2))
    });
    let hand = HandEdit {
        rows: Some(vec![0, 2]),
        ..HandEdit::default()
    };
    assert_eq!(
        edited,
        Ok(Rewritten::Changed(encoded(&edit_table(&value, &hand))))
    );

    // A column both dropped and masked is dropped.
    let edit = TableEdit::new()
        .mask_column("client", Mask::Null)
        .drop_column("client");
    let hand = HandEdit {
        drop: vec![b"client".to_vec()],
        ..HandEdit::default()
    };
    check(&value, &edit, &edit_table(&value, &hand));

    // Dropping every column leaves no table.
    let edit = ["sym", "price", "client", "note"]
        .into_iter()
        .fold(TableEdit::new(), TableEdit::drop_column);
    assert_eq!(
        err(&value, &edit).to_string(),
        "the edit drops every column of the table"
    );
}

#[test]
fn an_empty_selection_keeps_the_columns_and_their_types() {
    let (names, columns) = every_type();
    let value = K::table(&names, columns);
    let edit = TableEdit::new().keep_rows(RowSelection::none(3));
    let hand = HandEdit {
        rows: Some(vec![]),
        ..HandEdit::default()
    };
    let expect = edit_table(&value, &hand);
    check(&value, &edit, &expect);
    let K::Table(t) = decode(&encoded(&expect), Endian::Little).unwrap() else {
        panic!("a table");
    };
    assert_eq!(t.row_count(), 0);
    let K::List(columns) = &*t.values else {
        panic!("columns");
    };
    assert_eq!(columns.items[0].type_code(), type_code::BOOLEAN);
    assert_eq!(columns.items[9].type_code(), type_code::SYMBOL);
    assert_eq!(columns.items[18].type_code(), type_code::LIST);
    // A cap of 0 is the same.
    check(&value, &TableEdit::new().max_rows(0), &expect);
}

#[test]
fn attributes_stay_where_they_still_hold() {
    let value = table_with_attr(
        K::table(
            ["time", "sym", "id", "grp"],
            vec![
                with_attr(longs(&[1, 2, 3, 4]), Attr::Sorted),
                with_attr(K::symbols(["a", "a", "b", "b"]), Attr::Parted),
                with_attr(longs(&[9, 8, 7, 6]), Attr::Unique),
                with_attr(K::symbols(["x", "y", "x", "y"]), Attr::Grouped),
            ],
        ),
        Attr::Sorted,
    );
    // Filtered rows keep every attribute, the table's too.
    let edit = TableEdit::new().keep_rows(sel(&[true, false, true, true]));
    let expect = table_with_attr(
        K::table(
            ["time", "sym", "id", "grp"],
            vec![
                with_attr(longs(&[1, 3, 4]), Attr::Sorted),
                with_attr(K::symbols(["a", "b", "b"]), Attr::Parted),
                with_attr(longs(&[9, 7, 6]), Attr::Unique),
                with_attr(K::symbols(["x", "x", "y"]), Attr::Grouped),
            ],
        ),
        Attr::Sorted,
    );
    check(&value, &edit, &expect);
    // A masked column loses its attribute, and the table its own.
    let edit = TableEdit::new().mask_column("sym", Mask::Null);
    let expect = K::table(
        ["time", "sym", "id", "grp"],
        vec![
            with_attr(longs(&[1, 2, 3, 4]), Attr::Sorted),
            K::symbols(["", "", "", ""]),
            with_attr(longs(&[9, 8, 7, 6]), Attr::Unique),
            with_attr(K::symbols(["x", "y", "x", "y"]), Attr::Grouped),
        ],
    );
    check(&value, &edit, &expect);
}

// ----- Keyed tables.

fn keyed(sorted: bool) -> K {
    K::Dict(Dict {
        sorted,
        keys: Box::new(table_with_attr(
            K::table(
                ["sym", "venue"],
                vec![
                    with_attr(K::symbols(["AAPL", "IBM", "MSFT"]), Attr::Unique),
                    K::symbols(["N", "L", "N"]),
                ],
            ),
            if sorted { Attr::Sorted } else { Attr::None },
        )),
        values: Box::new(K::table(
            ["price", "account"],
            vec![floats(&[1.0, 2.0, 3.0]), strings(&["a1", "a2", "a3"])],
        )),
    })
}

#[test]
fn keyed_tables_filter_both_halves() {
    for sorted in [false, true] {
        let value = keyed(sorted);
        let body = encoded(&value);
        let located = table::locate(&body, Endian::Little).unwrap();
        let Located::Keyed(view) = &located else {
            panic!("a keyed table: {located:?}");
        };
        assert_eq!((view.rows(), view.width(), view.key_count()), (3, 4, 2));
        assert!(view.column("sym").unwrap().is_key());
        assert!(!view.column("price").unwrap().is_key());

        // A filter on a value column keeps the keys of the rows kept; the sorted form stays.
        let edited = table::rewrite(&body, Endian::Little, |t| {
            let price = t.require("price")?;
            let rows = RowSelection::from_atoms(price, |p| *p != Atom::Float(2.0))?;
            Ok::<_, TableError>(TableEdit::new().keep_rows(rows))
        });
        let hand = HandEdit {
            rows: Some(vec![0, 2]),
            ..HandEdit::default()
        };
        assert_eq!(
            edited,
            Ok(Rewritten::Changed(encoded(&edit_keyed(&value, &hand))))
        );

        // Masking a key column makes a sorted keyed table a plain one; dropping a value column
        // leaves the keys alone.
        let edit = TableEdit::new()
            .keep_rows(sel(&[false, true, true]))
            .mask_column("venue", Mask::Value(Atom::Symbol(b"X".to_vec())))
            .drop_column("account");
        let hand = HandEdit {
            rows: Some(vec![1, 2]),
            drop: vec![b"account".to_vec()],
            mask: vec![(b"venue".to_vec(), Mask::Value(Atom::Symbol(b"X".to_vec())))],
        };
        check(&value, &edit, &edit_keyed(&value, &hand));

        // Dropping every value column leaves a keyed table of keys, as `1!` of a one-column
        // table is; dropping every key column is an error.
        let edit = TableEdit::new().drop_column("price").drop_column("account");
        let hand = HandEdit {
            drop: vec![b"price".to_vec(), b"account".to_vec()],
            ..HandEdit::default()
        };
        check(&value, &edit, &edit_keyed(&value, &hand));
        let edit = TableEdit::new().drop_column("sym").drop_column("venue");
        assert_eq!(
            err(&value, &edit),
            TableError::DropsEveryColumn {
                table: "the table".to_owned(),
                what: "key column",
            }
        );
    }
}

// ----- Dictionaries of tables.

#[test]
fn each_table_of_a_dictionary_gets_its_own_edit() {
    let trade = K::table(
        ["sym", "price"],
        vec![K::symbols(["a", "b", "c"]), floats(&[1.0, 2.0, 3.0])],
    );
    let quote = K::table(
        ["sym", "bid", "client"],
        vec![
            K::symbols(["b", "a"]),
            floats(&[9.0, 8.0]),
            K::symbols(["x", "y"]),
        ],
    );
    let value = K::dict(
        K::symbols(["trade", "quote", "keyed"]),
        K::list(vec![trade.clone(), quote.clone(), keyed(true)]),
    );
    let plan = |t: &TableView<'_>| -> Result<TableEdit, TableError> {
        let rows = RowSelection::from_symbols(t.require("sym")?, |s| s != b"b")?;
        Ok(match t.name() {
            Some(b"quote") => TableEdit::new().keep_rows(rows).drop_column("client"),
            Some(b"trade") => TableEdit::new().keep_rows(rows),
            _ => TableEdit::new(),
        })
    };
    let expect = K::dict(
        K::symbols(["trade", "quote", "keyed"]),
        K::list(vec![
            edit_table(
                &trade,
                &HandEdit {
                    rows: Some(vec![0, 2]),
                    ..HandEdit::default()
                },
            ),
            edit_table(
                &quote,
                &HandEdit {
                    rows: Some(vec![1]),
                    drop: vec![b"client".to_vec()],
                    ..HandEdit::default()
                },
            ),
            keyed(true),
        ]),
    );
    for (body, endian) in [
        (encoded(&value), Endian::Little),
        (big(&value), Endian::Big),
    ] {
        let located = table::locate(&body, endian).unwrap();
        let Located::Tables(tables) = &located else {
            panic!("a dictionary of tables: {located:?}");
        };
        let names: Vec<_> = tables.tables().iter().map(|t| t.name()).collect();
        assert_eq!(names, [Some(&b"trade"[..]), Some(b"quote"), Some(b"keyed")]);
        assert_eq!(
            table::rewrite(&body, endian, plan),
            Ok(Rewritten::Changed(encoded(&expect)))
        );
    }
    // A dictionary with one value that is not a table is not a dictionary of tables.
    let mixed = K::dict(K::symbols(["t", "n"]), K::list(vec![trade, K::long(1)]));
    assert!(matches!(
        table::locate(&encoded(&mixed), Endian::Little),
        Ok(Located::NotATable)
    ));
}

// ----- Updates.

#[test]
fn updates_of_tables_keep_their_head() {
    let trade = K::table(
        ["sym", "size"],
        vec![K::symbols(["a", "b", "a"]), longs(&[1, 2, 3])],
    );
    let value = K::list(vec![K::symbol(".u.upd"), K::symbol("trade"), trade.clone()]);
    let body = encoded(&value);
    let located = table::locate(&body, Endian::Little).unwrap();
    let Located::Update(update) = &located else {
        panic!("an update: {located:?}");
    };
    assert_eq!(update.function(), b".u.upd");
    assert_eq!(update.table().name(), Some(&b"trade"[..]));
    let edit = TableEdit::new()
        .keep_rows(sel(&[true, false, true]))
        .mask_column("size", Mask::Null);
    let expect = K::list(vec![
        K::symbol(".u.upd"),
        K::symbol("trade"),
        edit_table(
            &trade,
            &HandEdit {
                rows: Some(vec![0, 2]),
                mask: vec![(b"size".to_vec(), Mask::Null)],
                ..HandEdit::default()
            },
        ),
    ]);
    check(&value, &edit, &expect);
}

#[test]
fn updates_of_columns_are_positional() {
    let columns = vec![
        K::vector(VectorData::Timespan(vec![1, 2, 3])),
        K::symbols(["a", "b", "a"]),
        floats(&[1.0, 2.0, 3.0]),
        strings(&["x", "y", "z"]),
    ];
    let value = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        K::list(columns.clone()),
    ]);
    let body = encoded(&value);
    let schemas = Schemas::new().with("trade", ["time", "sym", "price", "cond"]);
    let expect = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        K::list(vec![
            K::vector(VectorData::Timespan(vec![1, 3])),
            K::symbols(["a", "a"]),
            floats(&[f64::from_bits(FLOAT_NULL); 2]),
            strings(&["x", "z"]),
        ]),
    ]);

    // Named by the schema.
    let edited = table::rewrite_with(&body, Endian::Little, &schemas, |t| {
        assert!(t.is_positional());
        let rows = RowSelection::from_symbols(t.require("sym")?, |s| s == b"a")?;
        Ok::<_, TableError>(
            TableEdit::new()
                .keep_rows(rows)
                .mask_column("price", Mask::Null),
        )
    });
    assert_eq!(edited, Ok(Rewritten::Changed(encoded(&expect))));

    // By position, without a schema, and from big-endian bytes.
    for (body, endian) in [(body.clone(), Endian::Little), (big(&value), Endian::Big)] {
        let edited = table::rewrite(&body, endian, |t| {
            assert_eq!(t.column_at(1).unwrap().name(), None);
            let rows = RowSelection::from_symbols(t.column_at(1).unwrap(), |s| s == b"a")?;
            Ok::<_, TableError>(
                TableEdit::new()
                    .keep_rows(rows)
                    .mask_column(2usize, Mask::Null),
            )
        });
        assert_eq!(edited, Ok(Rewritten::Changed(encoded(&expect))));
    }

    // Dropping a positional column would shift the ones after it.
    let edit = TableEdit::new().drop_column("price");
    let error = table::rewrite_with(&body, Endian::Little, &schemas, |_| {
        Ok::<_, TableError>(edit.clone())
    });
    assert_eq!(
        error.unwrap_err().to_string(),
        "column `price of table `trade is positional (the update has no column names): mask it \
         instead of dropping it"
    );

    // A schema of another width is an error, naming both.
    let wrong = Schemas::new().with("trade", ["time", "sym"]);
    let error = table::locate_with(&body, Endian::Little, &wrong).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the schema for table `trade names 2 columns but the update has 4"
    );

    // A single row of atoms cannot be split by row.
    let row = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        K::list(vec![K::symbol("a"), K::long(1)]),
    ]);
    let error = table::locate(&encoded(&row), Endian::Little).unwrap_err();
    assert_eq!(
        error.to_string(),
        "column 0 of table `trade has type -11, which cannot be split by row"
    );
    assert_eq!(error.fault(), Fault::Peer);
}

// ----- What is not edited.

#[test]
fn no_op_edits_leave_the_body_unchanged() {
    let value = keyed(false);
    for edit in [
        TableEdit::new(),
        TableEdit::new().keep_rows(RowSelection::all(3)),
        TableEdit::new().max_rows(3),
        TableEdit::new().max_rows(100),
    ] {
        assert_eq!(
            rewrite_all(&encoded(&value), Endian::Little, &edit),
            Ok(Rewritten::Unchanged)
        );
        assert_eq!(
            rewrite_all(&big(&value), Endian::Big, &edit),
            Ok(Rewritten::Unchanged)
        );
    }
}

#[test]
fn bodies_without_tables_are_not_tables() {
    for value in [
        K::long(1),
        K::symbols(["a"]),
        K::string("select from trade"),
        K::list(vec![]),
        K::list(vec![K::symbol("upd"), K::symbol("trade")]),
        K::list(vec![K::symbol(".u.sub"), K::symbol("trade"), K::symbol("")]),
        K::list(vec![K::string("f"), K::symbol("trade"), K::list(vec![])]),
        K::dict(K::symbols(["a"]), longs(&[1])),
        K::dict(K::symbols(Vec::<&str>::new()), K::list(vec![])),
        K::error("type"),
        K::Null,
    ] {
        let body = encoded(&value);
        assert!(
            matches!(table::locate(&body, Endian::Little), Ok(Located::NotATable)),
            "{value:?}"
        );
        let rewritten = table::rewrite(&body, Endian::Little, |_| -> Result<_, TableError> {
            panic!("the plan is not asked for {value:?}")
        });
        assert_eq!(rewritten, Ok(Rewritten::NotATable));
    }
}

// ----- Views.

#[test]
fn columns_are_read_in_place() {
    let value = K::table(
        ["sym", "size", "note"],
        vec![
            K::symbols(["AAPL", "", "MSFT"]),
            K::vector(VectorData::Int(vec![7, -1, i32::MIN])),
            strings(&["a", "bc", ""]),
        ],
    );
    for (body, endian) in [
        (encoded(&value), Endian::Little),
        (big(&value), Endian::Big),
    ] {
        let located = table::locate(&body, endian).unwrap();
        let Located::Table(view) = &located else {
            panic!("a table: {located:?}");
        };
        assert_eq!(view.name(), None);
        let names: Vec<_> = view.columns().map(|c| c.name().unwrap()).collect();
        assert_eq!(names, [&b"sym"[..], b"size", b"note"]);

        let sym = view.column("sym").unwrap();
        assert_eq!(
            sym.symbols().unwrap().collect::<Vec<_>>(),
            [&b"AAPL"[..], b"", b"MSFT"]
        );
        assert_eq!(sym.atom(2), Some(Atom::Symbol(b"MSFT".to_vec())));
        assert_eq!(&body[sym.range()], sym.as_encoded());
        assert_eq!(sym.as_bytes(), b"AAPL\0\0MSFT\0");

        let size = view.column_at(1).unwrap();
        assert_eq!(
            (size.type_code(), size.len(), size.index()),
            (type_code::INT, 3, 1)
        );
        assert_eq!(
            size.atoms().unwrap().collect::<Vec<_>>(),
            [Atom::Int(7), Atom::Int(-1), Atom::Int(i32::MIN)]
        );
        assert_eq!(size.atom(3), None);
        assert!(size.symbols().is_none());

        let note = view.column("note").unwrap();
        assert!(note.atoms().is_none());
        let texts: Vec<_> = note.items().unwrap().map(|i| i.string().unwrap()).collect();
        assert_eq!(texts, [&b"a"[..], b"bc", b""]);
        let long = RowSelection::from_items(note, |i| i.count() == Some(2)).unwrap();
        assert_eq!(long.iter().collect::<Vec<_>>(), [1]);

        assert_eq!(
            RowSelection::from_symbols(size, |_| true)
                .unwrap_err()
                .to_string(),
            "column `size of the table has type 6, not a symbol column"
        );
        assert!(view.column("nope").is_none());
        assert_eq!(
            view.require("nope").unwrap_err().to_string(),
            "the table has no column `nope"
        );
    }
}

// ----- Errors.

#[test]
fn edits_that_do_not_fit_their_table_are_errors() {
    let value = K::dict(
        K::symbols(["trade"]),
        K::list(vec![K::table(["sym"], vec![K::symbols(["a", "b"])])]),
    );
    let cases = [
        (
            TableEdit::new().drop_column("client"),
            "table `trade has no column `client",
        ),
        (
            TableEdit::new().mask_column(5usize, Mask::Null),
            "table `trade has no column 5",
        ),
        (
            TableEdit::new().keep_rows(RowSelection::all(3)),
            "the row selection for table `trade has 3 rows but the table has 2",
        ),
    ];
    for (edit, message) in cases {
        assert_eq!(err(&value, &edit).to_string(), message);
    }
}

#[test]
fn tables_that_cannot_be_split_are_errors() {
    let unequal = K::table(["a", "b"], vec![longs(&[1, 2]), longs(&[1])]);
    let error = table::locate(&encoded(&unequal), Endian::Little).unwrap_err();
    assert_eq!(
        error.to_string(),
        "column `b of the table has 1 rows where the first column has 2"
    );
    assert_eq!(error.fault(), Fault::Peer);

    let atom = K::table(["a", "b"], vec![longs(&[1]), K::long(1)]);
    let error = table::locate(&encoded(&atom), Endian::Little).unwrap_err();
    assert_eq!(
        error.to_string(),
        "column `b of the table has type -7, which cannot be split by row"
    );

    // An int column relabelled as an enumeration (type 20), which kdb+ never sends.
    let mut enumerated = encoded(&K::table(
        ["a"],
        vec![K::vector(VectorData::Int(vec![1, 2]))],
    ));
    let at = enumerated.len() - 2 * 4 - 6;
    assert_eq!(enumerated[at], 6);
    enumerated[at] = 20;
    let error = table::locate(&enumerated, Endian::Little).unwrap_err();
    assert_eq!(
        error,
        TableError::UnsupportedColumn {
            table: "the table".to_owned(),
            column: "`a".to_owned(),
            type_code: 20,
        }
    );

    // A splayed table's reference: a symbol where the columns would be.
    let splayed = K::Table(Table {
        attr: Attr::None,
        columns: Box::new(K::symbols(["a"])),
        values: Box::new(K::symbol(":db/trade/")),
    });
    let error = table::locate(&encoded(&splayed), Endian::Little).unwrap_err();
    assert!(
        matches!(
            error,
            TableError::Malformed {
                what: "the columns are not a general list",
                ..
            }
        ),
        "{error}"
    );

    // Names from an upstream are escaped and cut in messages.
    let name = format!("{}\n", "x".repeat(100));
    let hostile = K::dict(
        K::symbols([name.as_str()]),
        K::list(vec![K::table(["a"], vec![longs(&[1])])]),
    );
    let error = rewrite_all(
        &encoded(&hostile),
        Endian::Little,
        &TableEdit::new().drop_column("b"),
    );
    assert_eq!(
        error.unwrap_err().to_string(),
        format!("table `{}... has no column `b", "x".repeat(64))
    );
}

#[test]
fn trailing_and_truncated_bytes_are_errors() {
    let (names, columns) = every_type();
    let plain = K::table(&names, columns);
    let values = [
        plain.clone(),
        keyed(true),
        K::dict(K::symbols(["t"]), K::list(vec![plain.clone()])),
        K::list(vec![K::symbol("upd"), K::symbol("t"), plain]),
        K::list(vec![
            K::symbol("upd"),
            K::symbol("t"),
            K::list(vec![longs(&[1, 2]), strings(&["a", "b"])]),
        ]),
    ];
    let edit = TableEdit::new().mask_column(0usize, Mask::Null);
    for value in values {
        for (body, endian) in [
            (encoded(&value), Endian::Little),
            (big(&value), Endian::Big),
        ] {
            let mut longer = body.clone();
            longer.push(0);
            assert!(
                matches!(
                    table::locate(&longer, endian),
                    Err(TableError::Decode { .. })
                ),
                "{value:?}"
            );
            // Every strict prefix is an error, whatever the edit.
            for cut in 1..body.len() {
                let prefix = &body[..cut];
                assert!(table::locate(prefix, endian).is_err(), "{cut} of {value:?}");
                assert!(
                    table::rewrite(prefix, endian, |_| Ok::<_, TableError>(edit.clone())).is_err()
                );
            }
        }
    }
}

#[test]
fn masks_that_would_not_fit_a_message_are_refused_before_allocating() {
    let value = K::table(["note"], vec![strings(&vec!["x"; 3000])]);
    // 3000 rows of a 1 MB text: 3 GB, past what a message carries.
    let edit = TableEdit::new().mask_column("note", Mask::Text(vec![b'a'; 1 << 20]));
    let error = err(&value, &edit);
    assert!(
        matches!(error, TableError::TooLarge { len, .. } if len > 3_000_000_000),
        "{error}"
    );
}

// ----- Properties.

fn config(cases: u32) -> Config {
    Config {
        cases: strategy::cases(cases),
        ..Config::default()
    }
}

/// Any number (nulls and infinities included, often) or any bit pattern for floats.
fn real() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::from_bits(REAL_NULL)),
        any::<u32>().prop_map(f32::from_bits)
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::from_bits(FLOAT_NULL)),
        any::<u64>().prop_map(f64::from_bits)
    ]
}

/// A column of exactly `rows` items of any type family: every vector type, symbols, strings and
/// nested lists, with any attribute.
fn column(rows: usize) -> impl Strategy<Value = K> {
    let data = prop_oneof![
        vec(any::<bool>(), rows).prop_map(VectorData::Boolean),
        vec(any::<[u8; 16]>(), rows).prop_map(VectorData::Guid),
        vec(any::<u8>(), rows).prop_map(VectorData::Byte),
        vec(any::<i16>(), rows).prop_map(VectorData::Short),
        vec(any::<i32>(), rows).prop_map(VectorData::Int),
        vec(any::<i64>(), rows).prop_map(VectorData::Long),
        vec(real(), rows).prop_map(VectorData::Real),
        vec(float(), rows).prop_map(VectorData::Float),
        vec(any::<u8>(), rows).prop_map(VectorData::Char),
        vec(strategy::name(), rows)
            .prop_map(|names| VectorData::Symbol(names.into_iter().collect())),
        vec(any::<i64>(), rows).prop_map(VectorData::Timestamp),
        vec(any::<i32>(), rows).prop_map(VectorData::Month),
        vec(any::<i32>(), rows).prop_map(VectorData::Date),
        vec(float(), rows).prop_map(VectorData::Datetime),
        vec(any::<i64>(), rows).prop_map(VectorData::Timespan),
        vec(any::<i32>(), rows).prop_map(VectorData::Minute),
        vec(any::<i32>(), rows).prop_map(VectorData::Second),
        vec(any::<i32>(), rows).prop_map(VectorData::Time),
    ];
    let vector = (strategy::attr(), data).prop_map(|(attr, data)| K::Vector(Vector { attr, data }));
    let strings = vec(vec(any::<u8>(), 0..5), rows)
        .prop_map(|items| K::list(items.into_iter().map(K::string).collect()));
    let nested = vec(strategy::vector(), rows).prop_map(K::list);
    prop_oneof![6 => vector, 1 => strings, 1 => nested]
}

/// What to do to one column: 0 keep, 1 drop, 2 mask with null, 3 mask with a value.
fn actions(width: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![4 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
        width,
    )
}

/// A random table: names `c0`, `c1`... (distinct, so that edits by name are unambiguous), a random
/// table attribute, and per column an action; then a selection and a cap.
#[allow(clippy::type_complexity, reason = "a strategy's tuple")]
fn table_case() -> impl Strategy<Value = (K, Vec<u8>, Vec<bool>, Option<usize>)> {
    (0usize..=20, 1usize..=5).prop_flat_map(|(rows, width)| {
        (
            vec(column(rows), width),
            strategy::attr(),
            actions(width),
            vec(any::<bool>(), rows),
            proptest::option::of(0usize..=24),
        )
            .prop_map(|(columns, attr, actions, rows, max)| {
                let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
                let value = table_with_attr(K::table(&names, columns), attr);
                (value, actions, rows, max)
            })
    })
}

/// The mask an action asks for on `column`: a value is the column's first item (or its null when
/// it has none); a general list is masked with text.
fn mask_for(column: &K, action: u8) -> Option<Mask> {
    match (action, column) {
        (2, _) => Some(Mask::Null),
        (3, K::Vector(v)) => Some(v.data.atom(0).map_or(Mask::Null, Mask::Value)),
        (3, _) => Some(Mask::Text(b"***".to_vec())),
        _ => None,
    }
}

/// The edit for `actions` on the columns `names`/`columns`, both as a `TableEdit` and by hand.
fn edits(
    names: &Symbols,
    columns: &[K],
    actions: &[u8],
    keep: &[bool],
    max: Option<usize>,
    key_columns: usize,
) -> (TableEdit, HandEdit) {
    let mut actions = actions.to_vec();
    // Keep a column (a key column, for a keyed table): dropping them all is an error.
    let keep_one = if key_columns > 0 {
        key_columns
    } else {
        actions.len()
    };
    if actions[..keep_one].iter().all(|&a| a == 1) {
        actions[0] = 0;
    }
    let mut edit = TableEdit::new().keep_rows(RowSelection::from_bools(keep.iter().copied()));
    if let Some(max) = max {
        edit = edit.max_rows(max);
    }
    let mut rows: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    rows.truncate(max.unwrap_or(usize::MAX));
    let mut hand = HandEdit {
        rows: Some(rows),
        ..HandEdit::default()
    };
    for ((name, column), &action) in names.iter().zip(columns).zip(&actions) {
        if action == 1 {
            edit = edit.drop_column(name);
            hand.drop.push(name.to_vec());
        } else if let Some(mask) = mask_for(column, action) {
            edit = edit.mask_column(ColumnRef::Name(name.to_vec()), mask.clone());
            hand.mask.push((name.to_vec(), mask));
        }
    }
    (edit, hand)
}

fn columns_of(value: &K) -> (Symbols, Vec<K>) {
    let K::Table(t) = value else {
        panic!("a table");
    };
    let K::List(l) = &*t.values else {
        panic!("columns");
    };
    (t.column_names().unwrap().clone(), l.items.clone())
}

/// What the rewrite must give: `Unchanged` when the edit keeps every row and touches no column.
fn expected(expect: K, hand: &HandEdit, rows: usize) -> Rewritten {
    let all_rows = hand.rows.as_ref().is_none_or(|r| r.len() == rows);
    if all_rows && hand.drop.is_empty() && hand.mask.is_empty() {
        Rewritten::Unchanged
    } else {
        Rewritten::Changed(encoded(&expect))
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// For random tables and random edits, the byte edit gives exactly the bytes of the edit made
    /// on `K` values, from little- and big-endian input.
    #[test]
    fn the_byte_edit_is_the_value_edit((value, actions, keep, max) in table_case()) {
        let (names, columns) = columns_of(&value);
        let (edit, hand) = edits(&names, &columns, &actions, &keep, max, 0);
        let expect = expected(edit_table(&value, &hand), &hand, keep.len());
        prop_assert_eq!(rewrite_all(&encoded(&value), Endian::Little, &edit), Ok(expect.clone()));
        prop_assert_eq!(rewrite_all(&big(&value), Endian::Big, &edit), Ok(expect));
    }

    /// The same for keyed tables, sorted or not, with columns from both halves edited.
    #[test]
    fn the_byte_edit_is_the_value_edit_for_keyed_tables(
        (key, value, sorted, actions, keep, max) in (0usize..=12, 1usize..=2, 1usize..=3)
            .prop_flat_map(|(rows, key_width, value_width)| (
                vec(column(rows), key_width),
                vec(column(rows), value_width),
                any::<bool>(),
                actions(key_width + value_width),
                vec(any::<bool>(), rows),
                proptest::option::of(0usize..=14),
            ))
    ) {
        let key_names: Vec<String> = (0..key.len()).map(|i| format!("k{i}")).collect();
        let value_names: Vec<String> = (0..value.len()).map(|i| format!("v{i}")).collect();
        let attr = if sorted { Attr::Sorted } else { Attr::None };
        let keyed = K::Dict(Dict {
            sorted,
            keys: Box::new(table_with_attr(K::table(&key_names, key.clone()), attr)),
            values: Box::new(K::table(&value_names, value.clone())),
        });
        let names: Symbols = key_names.iter().chain(&value_names).collect();
        let columns: Vec<K> = key.into_iter().chain(value).collect();
        let (edit, hand) = edits(&names, &columns, &actions, &keep, max, key_names.len());
        let expect = expected(edit_keyed(&keyed, &hand), &hand, keep.len());
        prop_assert_eq!(rewrite_all(&encoded(&keyed), Endian::Little, &edit), Ok(expect.clone()));
        prop_assert_eq!(rewrite_all(&big(&keyed), Endian::Big, &edit), Ok(expect));
    }

    /// Damaged tables never panic, and when a damaged body is still valid q, so is its rewrite.
    #[test]
    fn damaged_tables_never_panic(
        bytes in table_case().prop_flat_map(|(value, _, _, _)| strategy::mutated(encoded(&value))),
        keep in any::<bool>(),
    ) {
        for endian in [Endian::Little, Endian::Big] {
            let _ = table::locate(&bytes, endian);
            let rewritten = table::rewrite(&bytes, endian, |t| {
                let rows = RowSelection::from_fn(t.rows(), |i| keep || i % 2 == 0);
                Ok::<_, TableError>(
                    TableEdit::new().keep_rows(rows).mask_column(0usize, Mask::Null),
                )
            });
            if let Ok(Rewritten::Changed(out)) = rewritten
                && validate(&bytes, endian).is_ok()
            {
                prop_assert!(validate(&out, Endian::Little).is_ok());
            }
        }
    }
}
