//! Table surgery benchmarks: filtering a 1M-row, 5-column trade table (`sym`, `time`, `price`,
//! `size` and a string column `cond`, about 34 MB) on its bytes, against decoding it and
//! encoding it again, which is the least a `K`-level edit would cost.
//!
//! Run with `cargo bench -p qgate-ipc --bench table`. Benchmark ids are `table/<case>/1m`;
//! throughput is in bytes of the input body:
//!
//! - `locate`: finding the table and its columns (a walk of the string column's items);
//! - `select`: `locate` and a selection from the `sym` column (10 of 100 names, about 10% of the
//!   rows, decided by a hash set);
//! - `filter_10pct`: `select` and the rewrite that keeps those rows;
//! - `keep_all`: a selection of every row, which changes nothing (`Rewritten::Unchanged`);
//! - `keep_all_mask`: every row kept and `size` masked, so that every column is copied whole;
//! - `decode_encode`: the body decoded to a `K` and encoded again, without any edit.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::{collections::HashSet, hint::black_box};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qgate_ipc::{
    Endian, K, VectorData, decode, encode,
    table::{self, Mask, Rewritten, RowSelection, TableEdit, TableError},
};

const ROWS: usize = 1_000_000;

/// 2024.01.02D09:30:00 in q's nanoseconds: the first timestamp.
const START: i64 = 8_767 * 86_400_000_000_000 + (9 * 60 + 30) * 60_000_000_000;

/// 100 ticker-like names of 3 and 4 letters.
fn names() -> Vec<String> {
    (0..100u8)
        .map(|i| {
            let letters = [
                b'A' + i % 26,
                b'A' + (i / 26) * 3 % 26,
                b'A' + (i * 7) % 26,
                b'X',
            ];
            let len = if i % 2 == 0 { 3 } else { 4 };
            String::from_utf8_lossy(&letters[..len]).into_owned()
        })
        .collect()
}

/// The trade table, encoded.
fn trades() -> Vec<u8> {
    let names = names();
    let conditions = ["", "A", "BW", "OSR", "T"];
    let value = K::table(
        ["sym", "time", "price", "size", "cond"],
        vec![
            K::symbols((0..ROWS).map(|i| &names[i * 37 % 100])),
            K::vector(VectorData::Timestamp(
                (0..ROWS as i64).map(|i| START + i * 1_000_000).collect(),
            )),
            K::vector(VectorData::Float(
                (0..ROWS)
                    .map(|i| 100.0 + (i * 13 % 400) as f64 * 0.25)
                    .collect(),
            )),
            K::vector(VectorData::Long(
                (0..ROWS as i64).map(|i| 100 * (1 + i % 9)).collect(),
            )),
            K::list(
                (0..ROWS)
                    .map(|i| K::string(conditions[i * 7 % 5]))
                    .collect(),
            ),
        ],
    );
    let mut body = Vec::new();
    encode(&value, &mut body).unwrap();
    body
}

fn benches(c: &mut Criterion) {
    let body = trades();
    let names = names();
    // Every tenth name: about 10% of the rows.
    let allowed: HashSet<&[u8]> = names.iter().step_by(10).map(String::as_bytes).collect();
    let selection = |t: &table::TableView<'_>| {
        RowSelection::from_symbols(t.require("sym")?, |sym| allowed.contains(sym))
    };

    // Checks before measuring: the filter keeps about a tenth of the rows, and the rewrite is
    // what decoding it says.
    let mut kept = 0;
    let Rewritten::Changed(filtered) = table::rewrite(&body, Endian::Little, |t| {
        let rows = selection(t)?;
        kept = rows.count();
        Ok::<_, TableError>(TableEdit::new().keep_rows(rows))
    })
    .unwrap() else {
        panic!("the filter changes the table");
    };
    assert!((ROWS / 12..ROWS / 8).contains(&kept), "{kept} rows kept");
    assert_eq!(decode(&filtered, Endian::Little).unwrap().len(), kept);

    let mut group = c.benchmark_group("table");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let id = |case| BenchmarkId::new(case, "1m");
    group.bench_function(id("locate"), |b| {
        b.iter(|| table::locate(black_box(&body), Endian::Little).unwrap());
    });
    group.bench_function(id("select"), |b| {
        b.iter(|| {
            let located = table::locate(black_box(&body), Endian::Little).unwrap();
            selection(&located.tables()[0]).unwrap()
        });
    });
    group.bench_function(id("filter_10pct"), |b| {
        b.iter(|| {
            table::rewrite(black_box(&body), Endian::Little, |t| {
                Ok::<_, TableError>(TableEdit::new().keep_rows(selection(t)?))
            })
            .unwrap()
        });
    });
    group.bench_function(id("keep_all"), |b| {
        b.iter(|| {
            let rewritten = table::rewrite(black_box(&body), Endian::Little, |t| {
                Ok::<_, TableError>(TableEdit::new().keep_rows(RowSelection::all(t.rows())))
            });
            assert_eq!(rewritten, Ok(Rewritten::Unchanged));
        });
    });
    group.bench_function(id("keep_all_mask"), |b| {
        b.iter(|| {
            table::rewrite(black_box(&body), Endian::Little, |t| {
                Ok::<_, TableError>(
                    TableEdit::new()
                        .keep_rows(RowSelection::all(t.rows()))
                        .mask_column("size", Mask::Null),
                )
            })
            .unwrap()
        });
    });
    group.bench_function(id("decode_encode"), |b| {
        b.iter(|| {
            let value = decode(black_box(&body), Endian::Little).unwrap();
            let mut out = Vec::new();
            encode(&value, &mut out).unwrap();
            out
        });
    });
    group.finish();
}

criterion_group!(table_benches, benches);
criterion_main!(table_benches);
