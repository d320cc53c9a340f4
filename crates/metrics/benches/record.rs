//! What recording costs on the hot path: one message counted with its decision and its time,
//! including the clock reads around it, and one plugin call.

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use qgate_metrics::{Decision, Event, Metrics, Registry};

fn record(c: &mut Criterion) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, "bench");
    let plugin = metrics.plugin("policy", "0123456789ab");
    c.bench_function("request", |b| {
        b.iter(|| {
            let started = Instant::now();
            metrics.request(
                black_box(Event::Sync),
                black_box(Decision::Pass),
                Some(started.elapsed()),
            );
        });
    });
    c.bench_function("plugin_call", |b| {
        b.iter(|| {
            let started = Instant::now();
            plugin.call(black_box(true), Some(started.elapsed()));
        });
    });
    c.bench_function("request_untimed", |b| {
        b.iter(|| {
            metrics.request(black_box(Event::Async), black_box(Decision::Pass), None);
        });
    });
    c.bench_function("clock_only", |b| {
        b.iter(|| black_box(Instant::now().elapsed()));
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
