//! Parse plus facts of a 100-character qSQL select, the cost a policy pays per free-text query.
//!
//! `cargo bench -p qgate-q --bench parse`; `cargo xtask bench` runs it and writes the result into
//! BENCHMARKS.md.
//! The project's target is 2 µs for `parse_and_facts/select_100`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qgate_q::{Facts, parse, shape};

/// A select of exactly 100 characters, of the kind a dashboard sends.
const SELECT_100: &str = "select last price, sum size by sym, 5 xbar time.minute from trade where date=2024.01.02, sym in `A`B";

fn bench(c: &mut Criterion) {
    assert_eq!(
        SELECT_100.len(),
        100,
        "the benchmark's query must be 100 characters"
    );
    let mut group = c.benchmark_group("parse_and_facts");
    group.throughput(Throughput::Bytes(SELECT_100.len() as u64));
    group.bench_function("select_100", |b| {
        b.iter(|| Facts::of_text(black_box(SELECT_100.as_bytes())));
    });
    group.finish();

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(SELECT_100.len() as u64));
    group.bench_function("select_100", |b| {
        b.iter(|| parse(black_box(SELECT_100.as_bytes())));
    });
    group.finish();

    let tree = parse(SELECT_100.as_bytes()).expect("the benchmark's query parses");
    let mut group = c.benchmark_group("shape");
    group.bench_function("select_100", |b| b.iter(|| shape(black_box(&tree))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
