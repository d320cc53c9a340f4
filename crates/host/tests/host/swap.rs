//! Hot-swap, rollback and locked deployments: versions switched under calls, kv surviving,
//! broken versions refused while the old one serves, pins and signatures.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use qgate_hooks::{Handle, Hooks, OpenVerdict, Session, Verdict};
use qgate_host::{
    Digest, HostError, LockPolicy, PluginHost, PluginSpec, SecretKey, SwapOutcome, signature_path,
};
use qgate_ipc::K;

use super::{VersionCallers, component, conns_table, deploy, options, request, session};

/// A directory of its own for `test`, empty.
fn scratch(test: &str) -> PathBuf {
    super::scratch("swap", test)
}

fn bytes(fixture: &str) -> Vec<u8> {
    fs::read(component(fixture)).expect("a built fixture")
}

/// `bytes` as another build of the same component: a custom section appended, which changes
/// the digest and nothing else.
fn rebuilt(mut bytes: Vec<u8>, tag: u8) -> Vec<u8> {
    bytes.extend_from_slice(&[0, 7, 5, b'q', b'g', b'a', b't', b'e', tag]);
    bytes
}

async fn version(host: &PluginHost) -> Verdict {
    host.on_sync(&session(), &request(&K::string("version")))
        .await
}

fn answer(version: &str) -> Verdict {
    Verdict::reply(&K::symbol(version))
}

fn swapped_to(outcome: &SwapOutcome) -> Digest {
    match outcome {
        SwapOutcome::Swapped { to, .. } => *to,
        other => panic!("not swapped: {other:?}"),
    }
}

/// A host running the `version-a` fixture from a file of its own, as plugin `policy`.
fn policy_host(dir: &Path) -> (PluginHost, PathBuf) {
    let path = dir.join("policy.wasm");
    deploy(&path, bytes("version-a"));
    let host = PluginHost::new(options(vec![PluginSpec::new("policy", &path)]))
        .unwrap_or_else(|e| panic!("{e}"));
    (host, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_to_the_new_version_and_counts_per_version() {
    let (host, path) = policy_host(&scratch("reload"));
    assert_eq!(version(&host).await, answer("a"));
    let [status] = host.status().try_into().expect("one plugin");
    assert_eq!(status.digest, Digest::of(&bytes("version-a")));
    assert_eq!((status.calls, status.denies, status.traps), (1, 0, 0));

    // The same file: nothing to do.
    let outcome = host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(outcome, SwapOutcome::Unchanged { .. }),
        "{outcome:?}"
    );

    deploy(&path, bytes("version-b"));
    let outcome = host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(swapped_to(&outcome), Digest::of(&bytes("version-b")));
    assert_eq!(version(&host).await, answer("b"));
    let [status] = host.status().try_into().expect("one plugin");
    assert_eq!(status.digest, Digest::of(&bytes("version-b")));
    assert_eq!(status.calls, 1, "counters are per version");
    assert_eq!(status.previous, [Digest::of(&bytes("version-a"))]);

    let error = host.reload("nobody").expect_err("an unknown plugin");
    assert!(
        matches!(&error, HostError::UnknownPlugin { plugin, .. } if plugin == "nobody"),
        "{error}"
    );
    assert!(error.to_string().contains("policy"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_swaps_are_counted_per_version_in_the_metrics() {
    let dir = scratch("metrics");
    let path = dir.join("policy.wasm");
    deploy(&path, bytes("version-a"));
    let mut registry = qgate_metrics::Registry::default();
    let mut host_options = options(vec![PluginSpec::new("policy", &path)]);
    host_options.metrics = qgate_metrics::Metrics::register(&mut registry, "test");
    let host = PluginHost::new(host_options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version(&host).await, answer("a"));
    deploy(&path, bytes("version-b"));
    host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version(&host).await, answer("b"));
    assert_eq!(version(&host).await, answer("b"));
    deploy(&path, b"not a component");
    host.reload("policy").expect_err("garbage loaded");

    let a = Digest::of(&bytes("version-a")).short();
    let b = Digest::of(&bytes("version-b")).short();
    let text = qgate_metrics::Metrics::render(&registry).expect("renders");
    for line in [
        // `init` and `events` run outside calls: only the queries count.
        format!(r#"qgate_plugin_calls_total{{plugin="policy",version="{a}",result="ok"}} 1"#),
        format!(r#"qgate_plugin_calls_total{{plugin="policy",version="{b}",result="ok"}} 2"#),
        format!(r#"qgate_plugin_calls_total{{plugin="policy",version="{b}",result="failed"}} 0"#),
        r#"qgate_plugin_swaps_total{plugin="policy",result="ok"} 1"#.to_owned(),
        r#"qgate_plugin_swaps_total{plugin="policy",result="failed"} 1"#.to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    // One call in `PLUGIN_SAMPLE` per thread is timed: at most the two calls, in buckets.
    let timed = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!(
                r#"qgate_plugin_call_duration_seconds_count{{plugin="policy",version="{b}"}} "#
            ))
        })
        .and_then(|count| count.parse::<u64>().ok());
    assert!(timed.is_some_and(|timed| timed <= 2), "{text}");
    assert!(
        text.contains(&format!(
            r#"qgate_plugin_call_duration_seconds_bucket{{le="+Inf",plugin="policy",version="{b}"}}"#
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_state_survives_a_swap() {
    // `conns` keeps a row per open connection in kv; a new build of it sees the same rows.
    let dir = scratch("kv");
    let path = dir.join("conns.wasm");
    deploy(&path, bytes("conns"));
    let host = PluginHost::new(options(vec![PluginSpec::new("conns", &path)]))
        .unwrap_or_else(|e| panic!("{e}"));
    let peer = "127.0.0.1:5001".parse().expect("an address");
    for handle in 1..=3 {
        let s = Session::new(
            Handle(handle),
            format!("user{handle}").into_bytes(),
            peer,
            3,
        );
        assert_eq!(host.on_open(&s).await, OpenVerdict::Keep);
    }
    deploy(&path, rebuilt(bytes("conns"), 1));
    let outcome = host.reload("conns").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        swapped_to(&outcome),
        Digest::of(&rebuilt(bytes("conns"), 1))
    );
    let table = conns_table(&host).await;
    for handle in 1..=3 {
        assert!(table.contains(&format!("user{handle}")), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_version_leaves_the_old_one_serving() {
    let (host, path) = policy_host(&scratch("broken"));
    let before = host.status()[0].digest;
    for (fixture, expected) in [
        ("init-fails", "always refuses its config"),
        ("init-traps", "wasm trap"),
    ] {
        deploy(&path, bytes(fixture));
        let error = host.reload("policy").expect_err("a broken version loaded");
        assert!(
            matches!(&error, HostError::Load { plugin, .. } if plugin == "policy"),
            "{error}"
        );
        assert!(format!("{error}").contains(expected), "{error}");
        assert_eq!(version(&host).await, answer("a"), "after {fixture}");
        assert_eq!(host.status()[0].digest, before);
    }
    deploy(&path, b"not a component");
    let error = host.reload("policy").expect_err("garbage loaded");
    assert!(matches!(&error, HostError::Load { .. }), "{error}");
    fs::remove_file(&path).expect("remove");
    let error = host.reload("policy").expect_err("a missing file loaded");
    assert!(matches!(&error, HostError::Read { .. }), "{error}");
    assert_eq!(version(&host).await, answer("a"));
    assert!(host.status()[0].previous.is_empty());
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {path:?}");
}

/// What a reload finds at the plugin's path when it is not a component file: a FIFO renamed over
/// it (whose open and read would wait for a writer for ever), a symlink to `/dev/zero` (which
/// never ends), a directory, a file over the cap. Each is refused at once by name, and the old
/// version goes on serving; so is a FIFO at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_path_that_is_not_a_regular_file_or_too_large_is_refused() {
    let dir = scratch("not-regular");
    let (host, path) = policy_host(&dir);
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    fs::rename(&fifo, &path).expect("rename the FIFO over the plugin");
    let error = host.reload("policy").expect_err("a FIFO loaded");
    assert!(matches!(&error, HostError::Read { .. }), "{error}");
    assert!(
        error.to_string().contains("is a FIFO, not a regular file"),
        "{error}"
    );
    assert_eq!(version(&host).await, answer("a"));

    fs::remove_file(&path).expect("remove the FIFO");
    std::os::unix::fs::symlink("/dev/zero", &path).expect("a symlink to /dev/zero");
    let error = host.reload("policy").expect_err("/dev/zero loaded");
    assert!(
        error
            .to_string()
            .contains("is a character device, not a regular file"),
        "{error}"
    );
    fs::remove_file(&path).expect("remove the symlink");
    fs::create_dir(&path).expect("a directory in its place");
    let error = host.reload("policy").expect_err("a directory loaded");
    assert!(error.to_string().contains("is a directory"), "{error}");
    fs::remove_dir(&path).expect("remove the directory");
    assert_eq!(version(&host).await, answer("a"));

    // The file's version is read whole when it fits the cap, and refused unread when it does not.
    let a = bytes("version-a");
    let mut spec = PluginSpec::new("capped", dir.join("capped.wasm"));
    spec.max_file_bytes = a.len() as u64;
    deploy(&spec.path, &a);
    let capped = PluginHost::new(options(vec![spec.clone()])).unwrap_or_else(|e| panic!("{e}"));
    deploy(&spec.path, rebuilt(a, 1));
    let error = capped
        .reload("capped")
        .expect_err("a file over the cap loaded");
    let limit = format!("is larger than {} bytes (the limit)", spec.max_file_bytes);
    assert!(error.to_string().contains(&limit), "{error}");
    let error = PluginHost::new(options(vec![spec])).expect_err("a file over the cap loaded");
    assert!(error.to_string().contains(&limit), "{error}");

    // At start, a FIFO is refused as well, rather than waited on.
    let fifo = dir.join("start.wasm");
    mkfifo(&fifo);
    let error = PluginHost::new(options(vec![PluginSpec::new("piped", &fifo)]))
        .expect_err("a FIFO loaded at start");
    assert!(
        matches!(&error, HostError::Read { plugin, .. } if plugin == "piped"),
        "{error}"
    );
    assert!(error.to_string().contains("is a FIFO"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_back_one_version_at_a_time() {
    let (host, path) = policy_host(&scratch("rollback"));
    let error = host
        .rollback("policy")
        .expect_err("nothing to roll back to");
    assert!(
        matches!(&error, HostError::NoPreviousVersion { .. }),
        "{error}"
    );

    deploy(&path, bytes("version-b"));
    host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    deploy(&path, rebuilt(bytes("version-b"), 2));
    host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(host.status()[0].previous.len(), 2);

    let outcome = host.rollback("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(swapped_to(&outcome), Digest::of(&bytes("version-b")));
    assert_eq!(version(&host).await, answer("b"));
    let outcome = host.rollback("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(swapped_to(&outcome), Digest::of(&bytes("version-a")));
    assert_eq!(version(&host).await, answer("a"));
    assert!(host.rollback("policy").is_err());
    // The file still holds the newest build: a reload brings it back.
    let outcome = host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        swapped_to(&outcome),
        Digest::of(&rebuilt(bytes("version-b"), 2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_in_flight_during_swaps_never_fail() {
    let (host, path) = policy_host(&scratch("under-load"));
    let host = Arc::new(host);
    let callers = VersionCallers::start(&host);
    for round in 0..20 {
        let next = if round % 2 == 0 {
            "version-b"
        } else {
            "version-a"
        };
        deploy(&path, bytes(next));
        let swapper = host.clone();
        tokio::task::spawn_blocking(move || swapper.reload("policy"))
            .await
            .expect("the reload thread")
            .unwrap_or_else(|e| panic!("{e}"));
        // Visible at once: the next call runs on the new version.
        assert_eq!(version(&host).await, answer(&next[8..]));
    }
    callers.stop().await;
    assert_eq!(host.status()[0].traps, 0);
}

fn locked(keys: Vec<qgate_host::PublicKey>) -> LockPolicy {
    let mut policy = LockPolicy::default();
    policy.locked = true;
    policy.keys = keys;
    policy
}

#[test]
fn a_pin_refuses_any_other_version_at_start_and_on_swap() {
    let dir = scratch("pin");
    let path = dir.join("policy.wasm");
    deploy(&path, bytes("version-a"));
    let mut spec = PluginSpec::new("policy", &path);
    spec.sha256 = Some(Digest::of(&bytes("version-b")));
    let error = PluginHost::new(options(vec![spec.clone()])).expect_err("a pin mismatch loaded");
    let message = error.to_string();
    assert!(matches!(&error, HostError::Refused { plugin, .. } if plugin == "policy"));
    assert!(
        message.contains(&Digest::of(&bytes("version-a")).to_string()),
        "{message}"
    );
    assert!(
        message.contains(&Digest::of(&bytes("version-b")).to_string()),
        "{message}"
    );

    spec.sha256 = Some(Digest::of(&bytes("version-a")));
    let mut options = options(vec![spec]);
    options.lock = locked(vec![]);
    let host = PluginHost::new(options).unwrap_or_else(|e| panic!("{e}"));
    deploy(&path, bytes("version-b"));
    let error = host.reload("policy").expect_err("a swap past the pin");
    assert!(matches!(&error, HostError::Refused { .. }), "{error}");
    assert_eq!(host.status()[0].digest, Digest::of(&bytes("version-a")));
}

#[test]
fn a_locked_deployment_runs_only_signed_plugins() {
    let dir = scratch("signed");
    let path = dir.join("policy.wasm");
    let key = SecretKey::generate().expect("a random source");
    let other = SecretKey::generate().expect("a random source");
    let policy = || {
        let mut options = options(vec![PluginSpec::new("policy", &path)]);
        options.lock = locked(vec![key.public_key()]);
        options
    };

    // Unpinned and unsigned: refused at start, naming the digest and the missing signature.
    deploy(&path, bytes("version-a"));
    let error = PluginHost::new(policy()).expect_err("an unsigned plugin loaded");
    let message = error.to_string();
    assert!(matches!(&error, HostError::Refused { .. }), "{message}");
    assert!(message.contains("neither pinned"), "{message}");
    assert!(message.contains(".sig"), "{message}");

    // Signed by the named key: runs.
    fs::write(signature_path(&path), key.sign(&bytes("version-a"))).expect("write");
    let host = PluginHost::new(policy()).unwrap_or_else(|e| panic!("{e}"));

    // A new version signed by another key: refused, the old one stays.
    deploy(&path, bytes("version-b"));
    fs::write(signature_path(&path), other.sign(&bytes("version-b"))).expect("write");
    let error = host.reload("policy").expect_err("a wrong signature loaded");
    let message = error.to_string();
    assert!(message.contains("not a valid signature"), "{message}");
    assert!(message.contains(&key.public_key().to_base64()), "{message}");
    // The old version's signature beside the new file: refused too.
    fs::write(signature_path(&path), key.sign(&bytes("version-a"))).expect("write");
    assert!(host.reload("policy").is_err());
    // Unsigned: refused.
    fs::remove_file(signature_path(&path)).expect("remove");
    assert!(host.reload("policy").is_err());
    assert_eq!(host.status()[0].digest, Digest::of(&bytes("version-a")));

    // Signed by the named key: swapped.
    fs::write(signature_path(&path), key.sign(&bytes("version-b"))).expect("write");
    let outcome = host.reload("policy").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(swapped_to(&outcome), Digest::of(&bytes("version-b")));
}
