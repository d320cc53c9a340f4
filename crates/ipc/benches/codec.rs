//! Codec benchmarks: qgate's encoder, decoder and compressor against the `kdbplus` crate's, on
//! the same values.
//!
//! Run with `cargo bench -p qgate-ipc --bench codec` or `cargo xtask bench` (which also writes
//! the comparison table into BENCHMARKS.md). Benchmark ids are `group/codec/value`, for example
//! `encode/qgate/table_100k` and `encode/kdbplus/table_100k`; throughput is in bytes of the
//! uncompressed message, so the two codecs' figures compare directly.
//!
//! kdbplus 0.3.9 keeps its decoder, its compressor and its decompressor crate-private
//! (`K::q_ipc_decode` is `pub(crate)` and only reachable by reading from a socket), so only its
//! encoder, `Query::serialize`, is measured here, alone and with compression.
//! Before measuring, each pair of encoders is checked to produce the same bytes.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kdbplus::{ipc as kdb, qattribute};
use qgate_ipc::{
    Atom, EncodeOptions, Endian, HEADER_LEN, K, Locality, MessageType, ValueView, VectorData,
    compress, decode, decompress, encode_message, encode_message_with,
};

/// q's epoch (2000.01.01) in nanoseconds since the Unix epoch: kdbplus takes chrono times.
const Q_EPOCH_NANOS: i64 = 946_684_800_000_000_000;

/// 2024.01.02D09:30:00 in q's nanoseconds: the first timestamp of the tables.
const START: i64 = 8_767 * 86_400_000_000_000 + (9 * 60 + 30) * 60_000_000_000;

/// One value in both codecs' types.
struct Case {
    name: &'static str,
    qgate: K,
    kdbplus: kdb::K,
}

/// Runs a future that never waits: kdbplus's encoder is `async` (it can compress on the way) but
/// awaits nothing that is not ready at once, so one poll finishes it.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("kdbplus's encoder waited"),
    }
}

/// kdbplus's encoder: `Query::serialize`, a whole message with its header; `local` turns
/// compression off (kdbplus compresses messages over 2000 bytes to remote peers, as q does).
fn kdbplus_encode(value: &kdb::K, local: bool) -> Vec<u8> {
    now(kdb::Query::serialize(
        value,
        MessageType::Async as u8,
        local,
    ))
}

/// `(`upd;`trade;(`a;1;2.5))`: a small call, the shape of a tickerplant update.
fn call() -> Case {
    Case {
        name: "call_small",
        qgate: K::list(vec![
            K::symbol("upd"),
            K::symbol("trade"),
            K::list(vec![K::symbol("a"), K::long(1), K::Atom(Atom::Float(2.5))]),
        ]),
        kdbplus: kdb::K::new_compound_list(vec![
            kdb::K::new_symbol("upd".to_owned()),
            kdb::K::new_symbol("trade".to_owned()),
            kdb::K::new_compound_list(vec![
                kdb::K::new_symbol("a".to_owned()),
                kdb::K::new_long(1),
                kdb::K::new_float(2.5),
            ]),
        ]),
    }
}

/// 1M longs, `til 1000000`-like.
fn longs() -> Case {
    let items: Vec<i64> = (0..1_000_000).map(|i| i * 7919 % 1_000_003).collect();
    Case {
        name: "long_1m",
        qgate: K::vector(VectorData::Long(items.clone())),
        kdbplus: kdb::K::new_long_list(items, qattribute::NONE),
    }
}

/// 1M floats.
fn floats() -> Case {
    let items: Vec<f64> = (0..1_000_000)
        .map(|i| f64::from(i) * 0.25 + 100.0)
        .collect();
    Case {
        name: "float_1m",
        qgate: K::vector(VectorData::Float(items.clone())),
        kdbplus: kdb::K::new_float_list(items, qattribute::NONE),
    }
}

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

/// A trade table of `rows` rows: `sym` (100 distinct names), `time` (a timestamp a millisecond
/// apart) and `price` (a float from a few hundred levels).
fn table(name: &'static str, rows: usize) -> Case {
    let names = names();
    let syms: Vec<String> = (0..rows).map(|i| names[i * 37 % 100].clone()).collect();
    let times: Vec<i64> = (0..rows as i64).map(|i| START + i * 1_000_000).collect();
    let prices: Vec<f64> = (0..rows)
        .map(|i| 100.0 + (i * 13 % 400) as f64 * 0.25)
        .collect();
    let qgate = K::table(
        ["sym", "time", "price"],
        vec![
            K::symbols(&syms),
            K::vector(VectorData::Timestamp(times.clone())),
            K::vector(VectorData::Float(prices.clone())),
        ],
    );
    let stamps = times
        .iter()
        .map(|&t| chrono::DateTime::from_timestamp_nanos(t + Q_EPOCH_NANOS))
        .collect();
    let kdbplus = kdb::K::new_dictionary(
        kdb::K::new_symbol_list(
            vec!["sym".to_owned(), "time".to_owned(), "price".to_owned()],
            qattribute::NONE,
        ),
        kdb::K::new_compound_list(vec![
            kdb::K::new_symbol_list(syms, qattribute::NONE),
            kdb::K::new_timestamp_list(stamps, qattribute::NONE),
            kdb::K::new_float_list(prices, qattribute::NONE),
        ]),
    )
    .unwrap()
    .flip()
    .unwrap();
    Case {
        name,
        qgate,
        kdbplus,
    }
}

fn bytes(message: &[u8]) -> Throughput {
    Throughput::Bytes(message.len() as u64)
}

/// `decode`: a message body to an owned value, and `view`: validating it and finding a call's
/// head without building anything.
fn decoding(c: &mut Criterion, cases: &[Case]) {
    let mut group = c.benchmark_group("decode");
    for case in cases {
        let message = encode_message(MessageType::Async, &case.qgate).unwrap();
        let body = &message[HEADER_LEN..];
        group.throughput(bytes(&message));
        group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
            b.iter(|| decode(black_box(body), Endian::Little).unwrap());
        });
    }
    group.finish();

    // No throughput here: a view of a vector costs the same whatever its length.
    let mut group = c.benchmark_group("view");
    for case in cases {
        let message = encode_message(MessageType::Async, &case.qgate).unwrap();
        let body = &message[HEADER_LEN..];
        group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
            b.iter(|| {
                let view = ValueView::new(black_box(body), Endian::Little).unwrap();
                view.call().map(|call| call.name())
            });
        });
    }
    group.finish();
}

/// `encode`: a value to a whole uncompressed message, header included, by both codecs.
fn encoding(c: &mut Criterion, cases: &[Case]) {
    let mut group = c.benchmark_group("encode");
    for case in cases {
        let message = encode_message(MessageType::Async, &case.qgate).unwrap();
        assert!(
            kdbplus_encode(&case.kdbplus, true) == message,
            "{}: kdbplus encodes different bytes",
            case.name
        );
        group.throughput(bytes(&message));
        group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
            b.iter(|| encode_message(MessageType::Async, black_box(&case.qgate)).unwrap());
        });
        group.bench_function(BenchmarkId::new("kdbplus", case.name), |b| {
            b.iter(|| kdbplus_encode(black_box(&case.kdbplus), true));
        });
    }
    group.finish();
}

/// `encode_compressed`: a value to a compressed message for a remote peer, by both codecs;
/// `compress` and `decompress`: qgate's compressor and decompressor alone on the same message.
fn compression(c: &mut Criterion, case: &Case) {
    let message = encode_message(MessageType::Async, &case.qgate).unwrap();
    let remote = EncodeOptions {
        capability: 3,
        locality: Locality::Remote,
    };
    let compressed = encode_message_with(MessageType::Async, &case.qgate, &remote).unwrap();
    assert_eq!(compressed[2], 1, "{}: not compressed", case.name);
    assert!(
        kdbplus_encode(&case.kdbplus, false) == compressed,
        "{}: kdbplus compresses to different bytes",
        case.name
    );

    let mut group = c.benchmark_group("encode_compressed");
    group.sample_size(20);
    group.throughput(bytes(&message));
    group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
        b.iter(|| {
            encode_message_with(MessageType::Async, black_box(&case.qgate), &remote).unwrap()
        });
    });
    group.bench_function(BenchmarkId::new("kdbplus", case.name), |b| {
        b.iter(|| kdbplus_encode(black_box(&case.kdbplus), false));
    });
    group.finish();

    let mut group = c.benchmark_group("compress");
    group.sample_size(20);
    group.throughput(bytes(&message));
    group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
        b.iter(|| compress(black_box(&message)).unwrap());
    });
    group.finish();

    let mut group = c.benchmark_group("decompress");
    group.sample_size(20);
    group.throughput(bytes(&message));
    group.bench_function(BenchmarkId::new("qgate", case.name), |b| {
        b.iter(|| decompress(black_box(&compressed), message.len()).unwrap());
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let cases = [call(), longs(), floats(), table("table_100k", 100_000)];
    decoding(c, &cases);
    encoding(c, &cases);
    drop(cases);
    // About 10 MB uncompressed.
    compression(c, &table("table_500k", 500_000));
}

criterion_group!(codec, benches);
criterion_main!(codec);
