//! What one plugin call costs the host: the `echo` plugin alone, and the walkthrough's chain,
//! each answering the harness's ping, `` (`ping;42) ``, in a loop on one thread, and an empty
//! component call to read them against.
//!
//! One session asks again and again, so a plugin whose verdict stands for the function
//! (`same-for-head`: `conns`, `allowlist`, `demo-api`) is called once and then answered by the
//! host: those rows are the standing path. `echo` replies with the message, which never stands,
//! and `version-a` asks for the summary and passes (the ping is not its `version` query) without
//! letting it stand: their rows are a plugin call each. `none` is the host with no plugin, the same
//! `block_on` and message chain with nothing to call: what a plugin call adds is a row less it.
//! `pass` is a plugin that passes without asking the host anything (the `spin` fixture with
//! `turns = 0`): what the host itself costs a call, with no work of the plugin's in it.

mod common;

use std::{hint::black_box, net::SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use qgate_hooks::{Handle, Hooks, Request, Session};
use qgate_ipc::{K, Limits, Message, MessageType};
use serde_json::json;

use crate::common::{host, spec};

fn calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
    let session = Session::new(Handle(7), b"bench".to_vec(), peer, 3);
    let frame = qgate_ipc::encode_message(
        MessageType::Sync,
        &K::list(vec![K::symbol("ping"), K::long(42)]),
    )
    .expect("encodable");
    let ping = Request::new(Message::from_frame(frame, &Limits::default()).expect("a frame"))
        .expect("a valid message");
    let hosts = [
        ("none", host(vec![])),
        (
            "pass",
            host(vec![spec("pass", "spin", json!({ "turns": 0 }))]),
        ),
        ("echo", host(vec![spec("echo", "echo", json!({}))])),
        (
            "conns",
            host(vec![spec("conns", "conns", json!({ "query": "conns" }))]),
        ),
        (
            "audit",
            host(vec![spec(
                "audit",
                "audit",
                json!({ "include_text": false }),
            )]),
        ),
        (
            "allowlist",
            host(vec![spec(
                "allowlist",
                "allowlist",
                json!({ "users": { "bench": ["ping"] } }),
            )]),
        ),
        (
            "demo-api",
            host(vec![spec("demo-api", "demo_api", json!({}))]),
        ),
        (
            "version-a",
            host(vec![spec("version-a", "version_a", json!({}))]),
        ),
        (
            "chain",
            host(vec![
                spec("conns", "conns", json!({ "query": "conns" })),
                spec("audit", "audit", json!({ "include_text": false })),
                spec(
                    "allowlist",
                    "allowlist",
                    json!({ "users": { "bench": ["ping"] } }),
                ),
                spec("demo-api", "demo_api", json!({})),
            ]),
        ),
    ];
    let mut group = c.benchmark_group("call");
    group.bench_function("empty", empty_call());
    for (name, host) in &hosts {
        group.bench_function(*name, |b| {
            b.iter(|| runtime.block_on(host.on_sync(&session, black_box(&ping))));
        });
    }
    group.finish();
}

/// The baseline: a call of a component's export that takes nothing, does nothing and returns
/// nothing, on an engine with wasmtime's defaults: what the engine itself costs a call, which a
/// plugin call's cost is read against.
fn empty_call() -> impl FnMut(&mut criterion::Bencher<'_>) {
    use wasmtime::{
        Engine, Store,
        component::{Component, Linker},
    };
    let engine = Engine::default();
    let bytes = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func (export "f") (canon lift (core func $i "f"))))"#,
    )
    .expect("the empty component parses");
    let component = Component::new(&engine, bytes).expect("the empty component compiles");
    let mut store = Store::new(&engine, ());
    let instance = Linker::new(&engine)
        .instantiate(&mut store, &component)
        .expect("the empty component instantiates");
    let f = instance
        .get_typed_func::<(), ()>(&mut store, "f")
        .expect("the export `f`");
    move |b| {
        b.iter(|| {
            f.call(&mut store, ()).expect("the empty call");
        });
    }
}

criterion_group!(benches, calls);
criterion_main!(benches);
