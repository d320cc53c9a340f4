//! What reading free text adds to the walkthrough's chain: a 100-character select through
//! `conns`, `audit`, `allowlist` and `demo-api`, once with the allowlist deciding on the query's
//! facts (table rules: the host parses the text), once with it passing the text whole (the
//! `queries` switch: nothing parses it). Everything else is the same: in both the allowlist lets
//! the query through, `demo-api` refuses it (it does not evaluate q) and `audit` hears the
//! outcome, so the difference between the two is the parse, the facts and the rule check;
//! `facts_added` measures it in pairs, one call of each in turn.
//!
//! The components come from `plugins/target/wasm32-wasip2/release/` (`cargo xtask plugins`).

mod common;

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use qgate_hooks::{Handle, Hooks, Request, Session, Verdict};
use qgate_host::PluginHost;
use qgate_ipc::{K, Limits, Message, MessageType};
use serde_json::{Value, json};

use crate::common::{host, spec};

/// The query, as a dashboard sends it.
const QUERY: &str = "select last price, sum size by sym, 5 xbar time.minute from trade where \
                     date=2024.01.02, sym in `A`B";

/// The walkthrough's chain (`config.toml`), with `allowlist` as given.
fn chain(allowlist: Value) -> PluginHost {
    host(vec![
        spec("conns", "conns", json!({ "query": "conns" })),
        spec("audit", "audit", json!({ "include_text": false })),
        spec("allowlist", "allowlist", allowlist),
        spec("demo-api", "demo_api", json!({})),
    ])
}

fn request(value: &K) -> Request {
    let frame = qgate_ipc::encode_message(MessageType::Sync, value).expect("encodable");
    let message = Message::from_frame(frame, &Limits::default()).expect("a frame");
    Request::new(message).expect("a valid message")
}

fn chain_with_facts(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
    let session = Session::new(Handle(7), b"bench".to_vec(), peer, 3);
    let query = request(&K::string(QUERY));
    let hosts = [
        (
            "text_whole",
            chain(json!({ "users": { "bench": ["ping"] }, "queries": { "users": ["bench"] } })),
        ),
        (
            "text_facts",
            chain(
                json!({ "users": { "bench": ["ping"] }, "tables": { "bench": { "read": ["trade"] } } }),
            ),
        ),
    ];
    let mut group = c.benchmark_group("chain");
    for (name, host) in &hosts {
        // Both pass the allowlist and are refused by demo-api: the same path after the decision.
        let verdict = runtime.block_on(host.on_sync(&session, &query));
        let Verdict::Deny(why) = &verdict else {
            panic!("{name}: {verdict:?}");
        };
        assert!(
            !why.contains("access") && !why.contains("allowlist"),
            "{name}: the allowlist refused the query: {why}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| runtime.block_on(host.on_sync(&session, black_box(&query))));
        });
    }
    // The difference, measured in pairs: each facts call right after a whole one, so that the
    // drift of a shared machine between the two benchmarks above stays out of it.
    let [(_, whole), (_, facts)] = &hosts;
    group.bench_function("facts_added", |b| {
        b.iter_custom(|iters| {
            let (mut whole_time, mut facts_time) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..iters {
                let started = Instant::now();
                runtime.block_on(whole.on_sync(&session, black_box(&query)));
                whole_time += started.elapsed();
                let started = Instant::now();
                runtime.block_on(facts.on_sync(&session, black_box(&query)));
                facts_time += started.elapsed();
            }
            // Criterion refuses a sample of no time. A sample where the facts came out no
            // slower (the difference is within the machine's noise) counts as a nanosecond: the
            // clamp can only raise the figure.
            facts_time
                .saturating_sub(whole_time)
                .max(Duration::from_nanos(1))
        });
    });
    group.finish();
}

criterion_group!(benches, chain_with_facts);
criterion_main!(benches);
