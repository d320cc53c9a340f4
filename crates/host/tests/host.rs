//! The plugin host's API tests: `PluginHost` driven through the `Hooks` trait, without a network,
//! against the guest components in `plugins/` (built here with cargo when the test starts).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use qgate_hooks::{
    AuthVerdict, CloseReason, Credentials, Handle, Hooks, OpenVerdict, Request, Session, Verdict,
};
use qgate_host::{HostError, HostOptions, PluginHost, PluginSpec};
use qgate_ipc::{K, Limits, Message, MessageType};

/// The workspace's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/host sits two levels below the root")
}

/// The path of the guest component `name` (a crate of `plugins/`), built once per test run.
pub(crate) fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root().join("plugins/Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building plugins/ failed");
    });
    root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

fn spec(name: &str) -> PluginSpec {
    PluginSpec::new(name, component(name))
}

/// Options for `specs`, with compiled code cached under the target directory, so that only the
/// first test run compiles each component.
pub(crate) fn options(specs: Vec<PluginSpec>) -> HostOptions {
    let mut options = HostOptions::new(specs);
    options.cache_dir = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    options
}

fn host(specs: Vec<PluginSpec>) -> PluginHost {
    PluginHost::new(options(specs)).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn session() -> Session {
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
    Session::new(Handle(7), b"alice".to_vec(), peer, 3)
}

pub(crate) fn request(value: &K) -> Request {
    let frame = qgate_ipc::encode_message(MessageType::Sync, value).expect("encodable");
    let message = Message::from_frame(frame, &Limits::default()).expect("a frame");
    Request::new(message).expect("a valid message")
}

/// Four tasks that ask the query `version` over and over until stopped, each answer checked to
/// be `a` or `b` (the `version-a` and `version-b` fixtures): calls made while the host swaps.
pub(crate) struct VersionCallers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u32>>,
}

impl VersionCallers {
    /// Starts them on the current runtime.
    pub(crate) fn start(host: &Arc<PluginHost>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let (host, stop) = (host.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut calls = 0_u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let verdict = host
                            .on_sync(&session(), &request(&K::string("version")))
                            .await;
                        assert!(
                            verdict == Verdict::reply(&K::symbol("a"))
                                || verdict == Verdict::reply(&K::symbol("b")),
                            "{verdict:?}"
                        );
                        calls += 1;
                        tokio::task::yield_now().await;
                    }
                    calls
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops them, and checks that each made calls.
    pub(crate) async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            assert!(task.await.expect("a caller") > 0);
        }
    }
}

/// A directory of its own for `test` of `group`, empty.
pub(crate) fn scratch(group: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Puts `bytes` at `path` the way a deploy should: written beside it, then renamed over it.
pub(crate) fn deploy(path: &Path, bytes: impl AsRef<[u8]>) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, bytes).expect("write");
    std::fs::rename(&staging, path).expect("rename");
}

/// The `conns` plugin's answer to the query `conns`, in q syntax.
pub(crate) async fn conns_table(host: &PluginHost) -> String {
    let Verdict::Reply(table) = host
        .on_sync(&session(), &request(&K::string("conns")))
        .await
    else {
        panic!("conns did not answer");
    };
    table.value().expect("a reply decodes").to_string()
}

fn call() -> K {
    K::list(vec![K::symbol("f"), K::long(1), K::string("x")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_with_the_message() {
    let host = host(vec![spec("echo")]);
    let s = session();
    for value in [call(), K::string("select from t"), K::long(42)] {
        assert_eq!(
            host.on_sync(&s, &request(&value)).await,
            Verdict::reply(&value)
        );
    }
    // Echo takes only sync: every other event passes.
    assert_eq!(host.on_async(&s, &request(&call())).await, Verdict::Pass);
    let credentials = Credentials {
        user: b"alice".to_vec(),
        password: Some(b"secret".to_vec()),
    };
    assert_eq!(host.on_auth(&s, &credentials).await, AuthVerdict::Pass);
    assert_eq!(host.on_open(&s).await, OpenVerdict::Keep);
    host.on_close(&s, &CloseReason::ClientClosed).await;
}

#[test]
fn what_a_call_holds_while_it_decides_is_its_copies_within_the_memory_limit() {
    let mut echo = spec("echo");
    echo.memory_limit_bytes = 16 << 20;
    let host = host(vec![echo]);
    let sync = |len: usize| request(&K::string("x".repeat(len)));
    // A 1 MiB message: its copy and the reply in the guest, and the reply lifted into the host.
    let small = sync(1 << 20);
    assert_eq!(host.deciding_bytes(&small), 3 * small.body().len());
    // A 10 MiB one: the guest's share stops at the plugin's memory limit.
    let large = sync(10 << 20);
    assert_eq!(host.deciding_bytes(&large), (16 << 20) + large.body().len());
    // Echo takes only sync messages: an async one costs nothing beside the server.
    let frame = qgate_ipc::encode_message(MessageType::Async, &K::string("x".repeat(1 << 20)))
        .expect("encodable");
    let message = Message::from_frame(frame, &Limits::default()).expect("a frame");
    let async_message = Request::new(message).expect("a valid message");
    assert_eq!(host.deciding_bytes(&async_message), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_that_stands_for_its_function_is_given_without_a_call() {
    // `allowlist` lets alice call `f` (a pass that stands for `f`) and denies `g` (a deny that
    // stands for `g`); `demo-api` answers an unknown name with its error, which stands too.
    let mut allowlist = spec("allowlist");
    allowlist
        .config
        .insert("users".into(), serde_json::json!({ "alice": ["f"] }));
    let host = host(vec![allowlist, spec("demo-api")]);
    let calls = || -> Vec<u64> { host.status().iter().map(|p| p.calls).collect() };
    let alice = |handle| {
        let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
        Session::new(Handle(handle), b"alice".to_vec(), peer, 3)
    };
    let f = |x| K::list(vec![K::symbol("f"), K::long(x)]);
    let (one, two) = (alice(7), alice(8));
    assert_eq!(
        host.on_sync(&one, &request(&f(1))).await,
        Verdict::Deny("f".into())
    );
    assert_eq!(calls(), [1, 1]);
    // Other arguments, the same function: both verdicts stand.
    assert_eq!(
        host.on_sync(&one, &request(&f(2))).await,
        Verdict::Deny("f".into())
    );
    assert_eq!(calls(), [1, 1]);
    let g = K::list(vec![K::symbol("g"), K::long(1)]);
    let denied = Verdict::Deny("access: g is not allowed for alice".into());
    assert_eq!(host.on_sync(&one, &request(&g)).await, denied);
    assert_eq!(host.on_sync(&one, &request(&g)).await, denied);
    assert_eq!(calls(), [2, 1]);
    // Per connection, per event, and a string head is not a symbol head.
    assert_eq!(
        host.on_sync(&two, &request(&f(1))).await,
        Verdict::Deny("f".into())
    );
    assert_eq!(calls(), [3, 2]);
    let by_string = K::list(vec![K::string("f"), K::long(1)]);
    host.on_sync(&one, &request(&by_string)).await;
    assert_eq!(calls(), [4, 3]);
    let frame = qgate_ipc::encode_message(MessageType::Async, &f(1)).expect("encodable");
    let message = Message::from_frame(frame, &Limits::default()).expect("a frame");
    host.on_async(&one, &Request::new(message).expect("a valid message"))
        .await;
    assert_eq!(calls(), [5, 4]);
    // Free text has no head: asked every time.
    for _ in 0..2 {
        host.on_sync(&one, &request(&K::string("1+1"))).await;
    }
    assert_eq!(calls(), [7, 4]);
    // A connection that closes forgets what stood for it: its handle may be a new client's.
    host.on_close(&one, &CloseReason::ClientClosed).await;
    host.on_sync(&one, &request(&f(1))).await;
    assert_eq!(calls(), [8, 5]);
    // Nor does a handle seen with another user inherit alice's verdicts (`qgate replay` and
    // `qgate test` may not close one connection before the next).
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
    let bob = Session::new(Handle(7), b"bob".to_vec(), peer, 3);
    assert_eq!(
        host.on_sync(&bob, &request(&f(1))).await,
        Verdict::Deny("access: f is not allowed for bob".into())
    );
    assert_eq!(calls(), [9, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_grew_large_are_not_kept_and_not_counted() {
    // Each echo of a message this large grows its instance past KEEP_INSTANCE_MEMORY_BYTES, so
    // the instance is dropped after the call. More such calls than a version may have instances
    // alive: were a dropped instance still counted, the calls past the limit would find the
    // plugin busy.
    let mut echo = spec("echo");
    // Copying megabytes in and out of the guest takes longer than a query's default budget.
    echo.time_budget = std::time::Duration::from_secs(2);
    let host = host(vec![echo]);
    let s = session();
    // Echo copies the message's body into the guest and replies with that copy.
    let large = K::string("x".repeat(qgate_host::KEEP_INSTANCE_MEMORY_BYTES + (1 << 20)));
    let calls = qgate_host::MAX_INSTANCES_PER_VERSION as usize + 4;
    for call in 0..calls {
        let verdict = host.on_sync(&s, &request(&large)).await;
        assert!(
            verdict == Verdict::reply(&large),
            "call {call} of {calls}: {verdict:?}"
        );
    }
    // A small call after them is served as ever.
    assert_eq!(
        host.on_sync(&s, &request(&call())).await,
        Verdict::reply(&call())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_plugin_that_does_not_pass_decides() {
    let s = session();
    let echo_first = host(vec![spec("echo"), spec("bad-reply")]);
    assert_eq!(
        echo_first.on_sync(&s, &request(&call())).await,
        Verdict::reply(&call())
    );
    let bad_first = host(vec![spec("bad-reply"), spec("echo")]);
    assert_eq!(
        bad_first.on_sync(&s, &request(&call())).await,
        Verdict::Deny("plugin bad-reply returned a malformed reply".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_is_cut_at_its_budget_while_others_proceed() {
    let budget = Duration::from_millis(200);
    let mut spin = spec("spin");
    spin.time_budget = budget;
    let spin = Arc::new(host(vec![spin]));
    let echo = host(vec![spec("echo")]);
    let started = Instant::now();
    let spinning = tokio::spawn({
        let spin = spin.clone();
        async move { spin.on_sync(&session(), &request(&call())).await }
    });
    // The echo call is answered while the spinning call still runs.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        echo.on_sync(&session(), &request(&call())).await,
        Verdict::reply(&call())
    );
    assert!(!spinning.is_finished(), "spin ended before its budget");
    let verdict = spinning.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(verdict, Verdict::Deny("plugin spin failed".into()));
    assert!(elapsed >= budget, "cut after {elapsed:?}");
    assert!(
        elapsed < budget + Duration::from_secs(2),
        "cut after {elapsed:?}"
    );
    // A fresh instance takes the next call, and is cut again.
    assert_eq!(
        spin.on_sync(&session(), &request(&call())).await,
        Verdict::Deny("plugin spin failed".into())
    );
}

/// A call's budget counts the CPU time it uses, not the time it spends waiting for a thread: here
/// a slow call (7 ms or so of CPU time) must hand its async worker to another thread, and the
/// runtime has none to give until the test lets one go, long after the budget has passed on the
/// wall clock. The call is answered, not denied as past its budget.
#[test]
fn a_call_is_not_charged_for_time_it_waits_for_a_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut work = spec("spin");
    work.config.insert("turns".into(), 5_000_000.into());
    work.time_budget = Duration::from_millis(100);
    let host = Arc::new(host(vec![work, spec("echo")]));
    runtime.block_on(async {
        // The one thread the runtime may start besides its worker is taken until the call ends.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = tokio::task::spawn_blocking(move || held.recv());
        let verdict = tokio::spawn({
            let host = host.clone();
            async move { host.on_sync(&session(), &request(&call())).await }
        })
        .await
        .expect("the call's task");
        release.send(()).expect("the blocking task waits");
        busy.await.expect("the blocking task").expect("released");
        assert_eq!(verdict, Verdict::reply(&call()));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_grows_without_bound_is_capped() {
    let mut grow = spec("grow-memory");
    grow.memory_limit_bytes = 16 << 20;
    let host = host(vec![grow]);
    for _ in 0..2 {
        assert_eq!(
            host.on_sync(&session(), &request(&call())).await,
            Verdict::Deny("plugin grow-memory failed".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_closed_unless_the_plugin_is_fail_open() {
    let s = session();
    let closed = host(vec![spec("trap"), spec("echo")]);
    // Traps in a row: every one is a deny, and each trapped instance is replaced.
    for _ in 0..5 {
        assert_eq!(
            closed.on_sync(&s, &request(&call())).await,
            Verdict::Deny("plugin trap failed".into())
        );
    }
    let credentials = Credentials {
        user: b"alice".to_vec(),
        password: None,
    };
    assert_eq!(closed.on_auth(&s, &credentials).await, AuthVerdict::Deny);
    // Open and close failures are logged, never fatal.
    assert_eq!(closed.on_open(&s).await, OpenVerdict::Keep);
    closed.on_close(&s, &CloseReason::ClientClosed).await;

    let mut trap = spec("trap");
    trap.fail_open = true;
    let open = host(vec![trap, spec("echo")]);
    assert_eq!(
        open.on_sync(&s, &request(&call())).await,
        Verdict::reply(&call())
    );
    assert_eq!(open.on_auth(&s, &credentials).await, AuthVerdict::Pass);
}

/// One client's poison message traps the plugin every time it is sent; another client's calls,
/// in between and at the same time, are answered every time: the trapped instance is replaced,
/// and the backoff applies only to instances that cannot be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_traps_never_deny_another_clients_calls() {
    let mut trap = spec("trap");
    trap.config.insert("only".into(), "boom".into());
    let host = Arc::new(host(vec![trap, spec("echo")]));
    let poison = || request(&K::string("boom"));
    let denied = Verdict::Deny("plugin trap failed".into());
    let peer: SocketAddr = "127.0.0.1:5002".parse().expect("an address");
    let other = Session::new(Handle(8), b"bob".to_vec(), peer, 3);

    // Traps in a row, then another client's call at once.
    for _ in 0..3 {
        assert_eq!(host.on_sync(&session(), &poison()).await, denied);
    }
    assert_eq!(
        host.on_sync(&other, &request(&call())).await,
        Verdict::reply(&call())
    );

    // And while the poison keeps coming.
    let poisoner = tokio::spawn({
        let host = host.clone();
        async move {
            for _ in 0..200 {
                assert_eq!(host.on_sync(&session(), &poison()).await, denied);
            }
        }
    });
    let mut answered = 0;
    while !poisoner.is_finished() || answered < 200 {
        assert_eq!(
            host.on_sync(&other, &request(&call())).await,
            Verdict::reply(&call()),
            "call {answered} of another client"
        );
        answered += 1;
        tokio::task::yield_now().await;
    }
    poisoner.await.expect("the poisoner's calls are denies");
    let [trap, _] = host.status().try_into().expect("two plugins");
    assert_eq!(trap.traps, 203);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_work_on_a_current_thread_runtime() {
    // The trap fixture writes its panic to stderr through WASI, which must not block inside
    // this runtime's only thread.
    let host = host(vec![spec("trap"), spec("echo")]);
    assert_eq!(
        host.on_sync(&session(), &request(&call())).await,
        Verdict::Deny("plugin trap failed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_store_is_shared_by_every_instance() {
    // `conns` keeps one kv row per connection from on-open and answers the query `conns` with
    // the table. Opens run concurrently, so the pool makes more than one instance; the query
    // sees every row whichever instance answers it.
    let host = Arc::new(host(vec![spec("conns")]));
    let peer: SocketAddr = "127.0.0.1:5001".parse().unwrap();
    let opens = (1..=8).map(|handle| {
        let host = host.clone();
        tokio::spawn(async move {
            let s = Session::new(
                Handle(handle),
                format!("user{handle}").into_bytes(),
                peer,
                3,
            );
            host.on_open(&s).await
        })
    });
    for open in opens.collect::<Vec<_>>() {
        assert_eq!(open.await.unwrap(), OpenVerdict::Keep);
    }
    let table = conns_table(&host).await;
    for handle in 1..=8 {
        assert!(table.contains(&format!("user{handle}")), "{table}");
    }
    host.on_close(
        &Session::new(Handle(3), b"user3".to_vec(), peer, 3),
        &CloseReason::ClientClosed,
    )
    .await;
    let Verdict::Reply(table) = host
        .on_sync(&session(), &request(&K::string("conns")))
        .await
    else {
        panic!("conns did not answer");
    };
    let table = table.value().expect("a reply decodes");
    assert!(!table.to_string().contains("user3"), "{table}");
}

#[test]
fn a_plugin_whose_init_fails_is_refused_by_name() {
    let error = PluginHost::new(options(vec![spec("echo"), spec("init-fails")]))
        .expect_err("init-fails loaded");
    assert!(matches!(&error, HostError::Load { plugin, .. } if plugin == "init-fails"));
    let message = error.to_string();
    assert!(message.contains("plugin init-fails"), "{message}");
    assert!(message.contains("always refuses its config"), "{message}");
}

#[test]
fn a_missing_file_is_refused_by_name() {
    let error = PluginHost::new(HostOptions::new(vec![PluginSpec::new(
        "ghost",
        "/nonexistent/ghost.wasm",
    )]))
    .expect_err("a missing file loaded");
    assert!(matches!(&error, HostError::Read { plugin, .. } if plugin == "ghost"));
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("qgate-host-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = HostOptions::new(vec![spec("echo")]);
    options.cache_dir = Some(dir.clone());
    let files = |dir: &Path| -> usize { walk(dir).len() };
    assert_eq!(files(&dir), 0);
    let cold = Instant::now();
    drop(PluginHost::new(options.clone()).unwrap());
    let cold = cold.elapsed();
    assert!(files(&dir) > 0, "nothing was cached in {dir:?}");
    let warm = Instant::now();
    drop(PluginHost::new(options).unwrap());
    let warm = warm.elapsed();
    assert!(
        warm < cold,
        "a cache hit ({warm:?}) was no faster than compiling ({cold:?})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Hot-swap, rollback and locked deployments.
#[path = "host/swap.rs"]
mod swap;

#[path = "host/data.rs"]
mod data;

/// The `cedar` plugin, and the files a plugin's config names.
#[path = "host/cedar.rs"]
mod cedar;

/// Shadow plugins.
#[path = "host/shadow.rs"]
mod shadow;

/// A `facts` fixture: answers with the facts when `reply`, passes otherwise.
fn facts_spec(name: &str, reply: bool) -> PluginSpec {
    let mut spec = PluginSpec::new(name, component("facts"));
    spec.config.insert("reply".into(), reply.into());
    spec
}

/// The symbols under `key` in a dictionary of symbol lists, in q syntax.
fn entry(dict: &K, key: &str) -> String {
    let K::Dict(dict) = dict else {
        panic!("not a dictionary: {dict}");
    };
    let (K::Vector(keys), K::List(values)) = (&*dict.keys, &*dict.values) else {
        panic!("not a dictionary of lists: {dict:?}");
    };
    let qgate_ipc::VectorData::Symbol(keys) = &keys.data else {
        panic!("keys are not symbols");
    };
    let index = keys
        .iter()
        .position(|k| k == key.as_bytes())
        .unwrap_or_else(|| panic!("no key {key}"));
    values.items[index].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_of_a_chain_and_the_outcome_see_one_messages_facts() {
    // The first asks and passes, the second asks again and answers: one parse serves both.
    let host = host(vec![facts_spec("first", false), facts_spec("second", true)]);
    let s = session();
    let ask = |value: K| {
        let host = &host;
        let s = &s;
        async move {
            match host.on_sync(s, &request(&value)).await {
                Verdict::Reply(reply) => reply.value().expect("a reply decodes"),
                other => panic!("no reply: {other:?}"),
            }
        }
    };

    let text = ask(K::string("select from trade where sym=`a; .z.pg:{x}")).await;
    assert_eq!(entry(&text, "tablesRead"), ",`trade");
    assert_eq!(entry(&text, "assigned"), ",`.z.pg");
    assert_eq!(entry(&text, "flags"), "`multi`lambda`assign`assign_z");

    let call = ask(K::list(vec![K::symbol("getTrades"), K::symbol("AAPL")])).await;
    assert_eq!(entry(&call, "functions"), ",`getTrades");
    assert_eq!(entry(&call, "flags"), "`symbol$()");

    let eval = ask(K::list(vec![K::symbol("value"), K::string("exit 0")])).await;
    assert_eq!(entry(&eval, "flags"), ",`eval");

    let unparsed = ask(K::string("k)+/1 2")).await;
    assert_eq!(entry(&unparsed, "flags"), ",`unparsed");

    // The outcome of the call before `lastOutcome` saw the same facts.
    let last = ask(K::string("lastOutcome")).await;
    let last = last.to_string();
    assert!(
        last.contains("UNPARSED") || last.contains("unparsed"),
        "{last}"
    );

    // Nothing but a string, a list or a symbol has facts.
    let atom = ask(K::long(3)).await;
    assert_eq!(entry(&atom, "flags"), "`symbol$()");
    assert_eq!(entry(&atom, "functions"), "`symbol$()");
}

/// The `versioned` fixture's count of async messages on the session's connection.
async fn count(host: &PluginHost, s: &Session) -> Verdict {
    host.on_sync(s, &request(&K::string("count"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_file_keeps_the_store_across_a_restart() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kv-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a test directory");
    let kv_file = dir.join("policy.kv");
    let _ = std::fs::remove_file(&kv_file);
    let versioned = || {
        let mut spec = PluginSpec::new("policy", component("version-a"));
        spec.kv_file = Some(kv_file.clone());
        spec
    };
    let s = session();
    // The first run: three async messages counted in kv, written when the host is dropped.
    let first = host(vec![versioned()]);
    for _ in 0..3 {
        assert_eq!(first.on_async(&s, &request(&call())).await, Verdict::Pass);
    }
    assert_eq!(count(&first, &s).await, Verdict::reply(&K::long(3)));
    drop(first);
    assert!(
        kv_file.is_file(),
        "the store was not written to {kv_file:?}"
    );

    // The restart goes on from there.
    let second = host(vec![versioned()]);
    assert_eq!(count(&second, &s).await, Verdict::reply(&K::long(3)));
    assert_eq!(second.on_async(&s, &request(&call())).await, Verdict::Pass);
    drop(second);
    let third = host(vec![versioned()]);
    assert_eq!(count(&third, &s).await, Verdict::reply(&K::long(4)));
    drop(third);

    // A file that is not a store is refused by name, never silently emptied.
    std::fs::write(&kv_file, b"something else").expect("writable");
    let error = PluginHost::new(options(vec![versioned()])).expect_err("a bad kv_file refuses");
    assert!(
        error.to_string().contains("kv_file of plugin policy"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).expect("removable");
}

/// Config reload: the chain replaced whole, all or nothing, under calls.
#[path = "host/reconfig.rs"]
mod reconfig;

#[tokio::test]
async fn websocket_messages_go_through_the_chain_and_fail_closed_without_a_checker() {
    use qgate_hooks::{HttpRequest, WsMessage, WsOpenVerdict, WsVerdict};

    let demo = host(vec![spec("demo-api")]);
    let upgrade = HttpRequest::new("GET", "/", None);
    assert_eq!(
        demo.on_ws_open(&session(), &upgrade).await,
        WsOpenVerdict::Accept
    );
    assert_eq!(
        demo.on_ws_message(&session(), &WsMessage::text("`a`b!1 2"))
            .await,
        WsVerdict::Reply(vec![WsMessage::text("`a`b!1 2")])
    );
    assert_eq!(
        demo.on_ws_message(&session(), &WsMessage::binary(vec![0, 255]))
            .await,
        WsVerdict::Reply(vec![WsMessage::binary(vec![0, 255])])
    );
    demo.on_ws_close(&session(), "the client closed the WebSocket")
        .await;

    // `echo` checks q queries (it takes `sync`) but not WebSocket messages: they are refused,
    // since the upstream's `.z.ws` would run them unchecked.
    let guarded = host(vec![spec("echo")]);
    match guarded
        .on_ws_message(&session(), &WsMessage::text("1"))
        .await
    {
        WsVerdict::Deny(text) => assert!(text.contains("none checks WebSocket"), "{text}"),
        other => panic!("not refused: {other:?}"),
    }
    // With no plugin at all, a message passes to the backend.
    assert_eq!(
        host(Vec::new())
            .on_ws_message(&session(), &WsMessage::text("1"))
            .await,
        WsVerdict::Pass
    );
}
