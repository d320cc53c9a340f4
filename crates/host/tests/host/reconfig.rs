//! Config reload: `PluginHost::reconfigure` adds, removes, reorders and reconfigures plugins and
//! applies a new lock, all or nothing, while calls run.

use std::sync::Arc;

use qgate_hooks::{Hooks, Request, Verdict};
use qgate_host::{
    HostError, HostOptions, LockPolicy, PluginHost, PluginSpec, RELOAD_HEADROOM, Reconfigured,
    SecretKey, signature_path,
};
use qgate_ipc::{K, Limits, Message, MessageType};

use super::{VersionCallers, component, options, request, session};

fn allowlist(functions: &[&str]) -> PluginSpec {
    let mut spec = PluginSpec::new("policy", component("allowlist"));
    spec.config
        .insert("users".into(), serde_json::json!({ "alice": functions }));
    spec
}

fn versioned(name: &str, fixture: &str) -> PluginSpec {
    PluginSpec::new(name, component(fixture))
}

fn call(name: &str) -> K {
    K::list(vec![K::symbol(name), K::long(1)])
}

async fn sync(host: &PluginHost, value: &K) -> Verdict {
    host.on_sync(&session(), &request(value)).await
}

async fn bump(host: &PluginHost) {
    let frame = qgate_ipc::encode_message(MessageType::Async, &call("tick")).expect("encodes");
    let message = Message::from_frame(frame, &Limits::default()).expect("a frame");
    let message = Request::new(message).expect("a valid message");
    assert_eq!(host.on_async(&session(), &message).await, Verdict::Pass);
}

fn denied(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Deny(_))
}

fn reconfigure(host: &PluginHost, specs: Vec<PluginSpec>) -> Reconfigured {
    host.reconfigure(options(specs))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_added_removed_reordered_and_reconfigured_with_their_state() {
    let host = PluginHost::new(options(vec![
        allowlist(&["f", "g", "tick"]),
        versioned("counter", "version-a"),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sync(&host, &call("g")).await, Verdict::Pass);
    bump(&host).await;
    bump(&host).await;

    // The same chain: nothing changes, the versions serving stay.
    let before = host.status();
    let same = reconfigure(
        &host,
        vec![
            allowlist(&["f", "g", "tick"]),
            versioned("counter", "version-a"),
        ],
    );
    assert!(same.is_empty(), "{same:?}");
    assert_eq!(same.unchanged, ["policy", "counter"]);
    assert_eq!(host.status()[0].loaded_at, before[0].loaded_at);

    // Reordered, and the policy no longer grants `g`.
    let changes = reconfigure(
        &host,
        vec![versioned("counter", "version-a"), allowlist(&["f", "tick"])],
    );
    assert_eq!(changes.changed, ["policy"]);
    assert_eq!(changes.unchanged, ["counter"]);
    assert!(changes.reordered && changes.added.is_empty() && changes.removed.is_empty());
    assert_eq!(host.plugin_names(), ["counter", "policy"]);
    assert!(denied(&sync(&host, &call("g")).await));
    assert_eq!(sync(&host, &call("f")).await, Verdict::Pass);

    // A changed entry keeps its kv store: the counter goes on from 2.
    let mut slower = versioned("counter", "version-a");
    slower.time_budget *= 2;
    let changes = reconfigure(&host, vec![slower.clone(), allowlist(&["f", "tick"])]);
    assert_eq!(changes.changed, ["counter"]);
    assert_eq!(
        sync(&host, &K::string("count")).await,
        Verdict::reply(&K::long(2))
    );

    // A rollback undoes a config change of one plugin: `g` is granted again.
    host.rollback("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sync(&host, &call("g")).await, Verdict::Pass);

    // Added and removed.
    let changes = reconfigure(&host, vec![slower, versioned("other", "version-b")]);
    assert_eq!(changes.added, ["other"]);
    assert_eq!(changes.removed, ["policy"]);
    assert_eq!(host.plugin_names(), ["counter", "other"]);
    assert_eq!(sync(&host, &call("g")).await, Verdict::Pass);
    assert_eq!(
        sync(&host, &K::string("version")).await,
        Verdict::reply(&K::symbol("a"))
    );
    let error = host.reload("policy").expect_err("removed");
    assert!(matches!(error, HostError::UnknownPlugin { .. }), "{error}");

    // And back to none at all: everything passes.
    let changes = reconfigure(&host, Vec::new());
    assert_eq!(changes.removed, ["counter", "other"]);
    assert_eq!(sync(&host, &K::string("version")).await, Verdict::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_cannot_be_applied_changes_nothing() {
    let host = PluginHost::new(options(vec![allowlist(&["f"])])).unwrap_or_else(|e| panic!("{e}"));
    let loaded_at = host.status()[0].loaded_at;
    let unchanged = |host: &PluginHost| {
        assert_eq!(host.plugin_names(), ["policy"]);
        assert_eq!(host.status()[0].loaded_at, loaded_at);
    };

    // A plugin that loads, then one that does not: the first is not put in either.
    let mut broken = versioned("broken", "version-a");
    broken.path = component("no-such-plugin");
    let error = host
        .reconfigure(options(vec![
            allowlist(&["f", "g"]),
            versioned("new", "version-a"),
            broken,
        ]))
        .expect_err("a missing file");
    assert!(error.to_string().contains("broken"), "{error}");
    unchanged(&host);
    assert!(denied(&sync(&host, &call("g")).await));

    // An init that refuses its config.
    let mut refused = allowlist(&["f"]);
    refused
        .config
        .insert("no_such_key".into(), serde_json::json!(1));
    let error = host
        .reconfigure(options(vec![refused]))
        .expect_err("an unknown key");
    assert!(error.to_string().contains("no_such_key"), "{error}");
    unchanged(&host);

    // Two plugins of one name.
    let error = host
        .reconfigure(options(vec![allowlist(&["f"]), allowlist(&["g"])]))
        .expect_err("a duplicate");
    assert!(
        matches!(error, HostError::DuplicatePlugin { .. }),
        "{error}"
    );
    unchanged(&host);

    // More plugins than the engine has room for, and a larger memory cap: a restart's work.
    let many = (0..=RELOAD_HEADROOM + 1)
        .map(|index| versioned(&format!("v{index}"), "version-a"))
        .collect();
    let error = host.reconfigure(options(many)).expect_err("too many");
    assert!(matches!(error, HostError::Capacity { .. }), "{error}");
    assert!(error.to_string().contains("restart"), "{error}");
    let mut big = allowlist(&["f"]);
    big.memory_limit_bytes = PluginSpec::DEFAULT_MEMORY_LIMIT_BYTES * 2;
    let error = host.reconfigure(options(vec![big])).expect_err("too big");
    assert!(matches!(error, HostError::Capacity { .. }), "{error}");
    unchanged(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lock_reloads_every_plugin_under_it() {
    let dir = super::scratch("reconfig", "lock");
    let path = dir.join("policy.wasm");
    std::fs::copy(component("version-a"), &path).expect("a copy");
    let host = PluginHost::new(options(vec![versioned("policy", "version-a")]))
        .unwrap_or_else(|e| panic!("{e}"));

    let key = SecretKey::generate().expect("a random source");
    let mut locked = LockPolicy::default();
    locked.locked = true;
    locked.keys = vec![key.public_key()];
    let with_lock = |specs: Vec<PluginSpec>| {
        let mut options: HostOptions = options(specs);
        options.lock = locked.clone();
        options
    };

    // Unsigned: refused whole, and the unlocked chain serves on.
    let error = host
        .reconfigure(with_lock(vec![versioned("policy", "version-a")]))
        .expect_err("unsigned under a lock");
    assert!(matches!(error, HostError::Refused { .. }), "{error}");
    assert_eq!(
        sync(&host, &K::string("version")).await,
        Verdict::reply(&K::symbol("a"))
    );

    // Signed: applied, and a later swap is held to the lock.
    let bytes = std::fs::read(&path).expect("the copy");
    std::fs::write(signature_path(&path), key.sign(&bytes)).expect("a signature");
    let changes = host
        .reconfigure(with_lock(vec![PluginSpec::new("policy", &path)]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(changes.lock_changed);
    assert_eq!(changes.changed, ["policy"]);
    std::fs::copy(component("version-b"), &path).expect("an unsigned new version");
    let error = host.reload("policy").expect_err("unsigned");
    assert!(matches!(error, HostError::Refused { .. }), "{error}");
    assert_eq!(
        sync(&host, &K::string("version")).await,
        Verdict::reply(&K::symbol("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_during_reloads_never_fail() {
    let host = Arc::new(
        PluginHost::new(options(vec![versioned("a", "version-a")]))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let callers = VersionCallers::start(&host);
    for round in 0..20 {
        let (chain, first) = if round % 2 == 0 {
            (
                vec![versioned("b", "version-b"), versioned("a", "version-a")],
                "b",
            )
        } else {
            (vec![versioned("a", "version-a")], "a")
        };
        let swapper = host.clone();
        tokio::task::spawn_blocking(move || swapper.reconfigure(options(chain)))
            .await
            .expect("the reload thread")
            .unwrap_or_else(|e| panic!("{e}"));
        // Visible at once: the next call runs on the new chain.
        assert_eq!(
            sync(&host, &K::string("version")).await,
            Verdict::reply(&K::symbol(first))
        );
    }
    callers.stop().await;
}
