//! Chain positions whose plugin version can be replaced while calls run: loading a version off
//! the hot path, the atomic switch, the history that a rollback goes back through, and the
//! status that `qgate plugins` shows.
//!
//! ```text
//!   Slot (one per [[plugins]] entry, until a config reload changes the entry)
//!   ├── current: ArcSwap<Plugin> ── an event loads it once per plugin call; the Arc keeps an
//!   │                               old version alive until its calls in flight return
//!   ├── kv: Arc<Kv>              ── handed to every version: state outlives versions
//!   ├── readers: Readers         ── the plugin's files (its component, and the files its config
//!   │                               names), each read under its size cap and time limit
//!   ├── changes: Mutex<()>       ── one reload or rollback at a time
//!   └── history: Mutex<..>       ── the versions replaced, for rollback
//! ```
//!
//! A plugin's file is read by `qgate-files`: a FIFO, a device or a directory put at its path is
//! refused at once, a file over [`PluginSpec::max_file_bytes`] is refused without being read, and
//! a read stuck in the kernel (a stalled network mount) is given up after
//! [`ReadRules::DEFAULT_TIMEOUT`], its thread left behind, and the next read of that path refused
//! until it returns. A reload waits for the read at most that long, holding only its plugin's
//! `changes` turn, which calls, statuses and the other plugins never take.
//!
//! A version switches in only after its files were read, hashed (sha256: the component's, or with
//! config files the digest of them all, is the version's identity), each checked against its pin
//! and the lock, compiled (or taken from the compiled-code cache), and
//! its first instance made and `init` run: any failure before that leaves the old version
//! serving. The compile runs on a thread of its own at the lowest scheduling priority
//! (`SCHED_BATCH`, nice 19), so that it uses the CPU the connection workers leave; `init` runs at
//! normal priority, because it has a deadline that a starved thread could miss. A version whose
//! component is the one serving or still in the history (a config file changed, or a redeploy of
//! an earlier release) reuses its compiled code. The last [`MAX_PREVIOUS_VERSIONS`] replaced versions are kept for a rollback, which
//! instantiates one afresh (its `init` runs again). Counters (calls, denies, traps) are per
//! version, so that a misbehaving new version shows at once. `reload` compares the file with the
//! version serving; `reload_if_changed` (the file watch, SIGHUP) with the file's digest when it
//! was last loaded from, so that a rollback holds until the file changes again.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use qgate_files::{FileReader, ReadRules};
use qgate_metrics::Metrics;
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use crate::{
    HostError, PluginSpec,
    bindings::types,
    kv::Kv,
    lock::{self, Digest, LockPolicy},
    plugin::{LoadOptions, Plugin},
    state::{HostState, PluginShared},
};

/// How many replaced versions each plugin keeps for `rollback`.
///
/// A rollback undoes a bad deploy, which is noticed within the next deploy or two; 4 versions
/// cover that, and each costs only its compiled code (its instances are dropped when it is
/// replaced).
pub const MAX_PREVIOUS_VERSIONS: usize = 4;

/// What the host needs to load a version: the engine, the linker, the lock policy.
pub(crate) struct Loader {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// The lock policy in force; a config reload replaces it, after reloading every plugin under
    /// the new one.
    pub(crate) policy: ArcSwap<LockPolicy>,
    /// Where calls (per version) and swaps are counted.
    pub(crate) metrics: Metrics,
}

/// A plugin's config object, as `init` gets it.
pub(crate) type ConfigMap = serde_json::Map<String, serde_json::Value>;

/// What makes a version, apart from its compiled code.
#[derive(Clone)]
pub(crate) struct Version {
    /// The version's identity: the component's digest, with the config files'.
    pub(crate) digest: Digest,
    /// The component file's digest, which its compiled code is known by.
    pub(crate) component_digest: Digest,
    /// The config, each file's text in its place.
    pub(crate) config: Arc<ConfigMap>,
}

/// A version that was replaced and may be rolled back to.
struct Previous {
    version: Version,
    component: Component,
}

/// The versions a plugin's swaps replaced, newest last.
type History = VecDeque<Previous>;

/// One position of the chain.
pub(crate) struct Slot {
    pub(crate) spec: PluginSpec,
    /// The version that new calls go to. Read without a lock on every call; replaced whole.
    pub(crate) current: ArcSwap<Plugin>,
    /// Which of the events every message asks every plugin about (sync, async, outcome) the
    /// current version takes, read without loading `current`. Set with it.
    pub(crate) takes: Takes,
    /// The plugin's store, shared by all its versions.
    pub(crate) kv: Arc<Kv>,
    /// The plugin's files. One reader each for the life of the slot: a reader remembers a read
    /// stuck in the kernel, so that a stalled mount costs one thread, not one per reload.
    readers: Readers,
    /// A `std` mutex held for a whole reload or rollback (reading and compiling included), on a
    /// thread that is not an async worker: it makes concurrent swaps of one plugin take turns,
    /// and never touches the calls, which read `current` only.
    changes: Mutex<()>,
    /// A `std` mutex held for a push, a pop or a copy, so that a status never waits for a swap.
    history: Mutex<History>,
    /// The digest of the file when it was last loaded from (at start or by a reload), which a
    /// reload of changed files compares with: after a rollback, the file's version is not
    /// loaded again until the file changes. Written only under `changes`.
    file_digest: Mutex<Digest>,
}

/// Which of the events that every message asks each slot about its current version takes: the
/// bits of three [`types::Events`] flags in one atomic byte, so that a message skips a plugin
/// that does not take its event without loading the version (an `ArcSwap` load costs two atomic
/// writes, one of them sequentially consistent).
pub(crate) struct Takes(AtomicU8);

impl Takes {
    const SYNC: u8 = 1;
    const ASYNC: u8 = 2;
    const OUTCOME: u8 = 4;

    fn bits(events: types::Events) -> u8 {
        [
            (types::Events::SYNC, Self::SYNC),
            (types::Events::ASYNC_MESSAGE, Self::ASYNC),
            (types::Events::OUTCOME, Self::OUTCOME),
        ]
        .into_iter()
        .filter(|(flag, _)| events.contains(*flag))
        .fold(0, |bits, (_, bit)| bits | bit)
    }

    fn new(events: types::Events) -> Self {
        Self(AtomicU8::new(Self::bits(events)))
    }

    /// Adds what `events` takes to what is taken.
    fn widen(&self, events: types::Events) {
        self.0.fetch_or(Self::bits(events), Ordering::Relaxed);
    }

    /// What is taken is what `events` takes.
    fn set(&self, events: types::Events) {
        self.0.store(Self::bits(events), Ordering::Relaxed);
    }

    fn has(&self, bit: u8) -> bool {
        self.0.load(Ordering::Relaxed) & bit != 0
    }

    /// Whether the current version takes outcomes.
    pub(crate) fn outcome(&self) -> bool {
        self.has(Self::OUTCOME)
    }

    /// Whether the current version may take sync (`sync`) or async messages: when not, it need
    /// not be loaded to be skipped.
    pub(crate) fn message(&self, sync: bool) -> bool {
        self.has(if sync { Self::SYNC } else { Self::ASYNC })
    }
}

/// The result of a reload or a rollback that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwapOutcome {
    /// The new version serves every call from now on.
    Swapped {
        /// The plugin.
        plugin: String,
        /// The version it replaced.
        from: Digest,
        /// The version now serving.
        to: Digest,
        /// How long reading, checking, compiling and `init` took.
        load_time: Duration,
    },
    /// The file holds the version already serving (or, for a reload of changed files, the
    /// version last loaded from it): nothing was done.
    Unchanged {
        /// The plugin.
        plugin: String,
        /// The file's version.
        digest: Digest,
    },
}

/// One plugin as `qgate plugins` shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The version serving.
    pub digest: Digest,
    /// When that version was switched in.
    pub loaded_at: SystemTime,
    /// How long reading, checking, compiling and `init` took for it.
    pub load_time: Duration,
    /// Calls into that version, since it was loaded.
    pub calls: u64,
    /// Denies it decided, fail-closed failures included.
    pub denies: u64,
    /// Its calls that trapped or ran past their budget.
    pub traps: u64,
    /// The versions a rollback can go back to, newest first.
    pub previous: Vec<Digest>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section on the history is one push, pop or copy, and the other lock guards
    // no data: a panic cannot leave either half-updated, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// Loads the first version of `spec`'s plugin, checked against `policy`.
    ///
    /// With `earlier`, the slot of the same name that a config reload replaces, the new slot
    /// shares its kv store (when `kv_file` is the same) and reuses its compiled code (when the
    /// component is the same). When `serving` (a config reload), a compile runs at the lowest
    /// priority, as a swap's does.
    pub(crate) fn load(
        loader: &Loader,
        policy: &LockPolicy,
        spec: PluginSpec,
        earlier: Option<&Slot>,
        serving: bool,
    ) -> Result<Self, HostError> {
        let kv = match (&spec.kv_file, earlier) {
            (file, Some(earlier)) if earlier.spec.kv_file == *file => Arc::clone(&earlier.kv),
            (Some(path), _) => Arc::new(Kv::load(path).map_err(|message| HostError::KvFile {
                plugin: spec.name.clone(),
                path: path.clone(),
                message,
            })?),
            (None, _) => Arc::<Kv>::default(),
        };
        let readers = Readers::new(&spec);
        let read = read_checked(policy, &spec, &readers)?;
        let digest = read.version.digest;
        let known = earlier.and_then(|earlier| earlier.component(read.version.component_digest));
        let Read {
            bytes,
            version,
            started,
        } = read;
        let plugin = match known {
            Some(component) => load_component(loader, &spec, &kv, &component, version, started)?,
            None if serving => compile_and_load(loader, &spec, &kv, &bytes, version, started)?,
            None => {
                // Nothing is serving yet: the first compile runs at normal priority.
                let component =
                    Component::new(&loader.engine, &bytes).map_err(|e| HostError::Load {
                        plugin: spec.name.clone(),
                        message: format!("{e:?}"),
                    })?;
                load_component(loader, &spec, &kv, &component, version, started)?
            }
        };
        Ok(Self {
            spec,
            takes: Takes::new(plugin.events),
            current: ArcSwap::from_pointee(plugin),
            kv,
            readers,
            changes: Mutex::default(),
            history: Mutex::default(),
            file_digest: Mutex::new(digest),
        })
    }

    /// Loads the plugin's file again and, if it holds a new version that loads, switches to it.
    /// Blocks for as long as compiling and `init` take; call it off the async workers.
    ///
    /// The file holds a new version when its digest differs from the version serving and, with
    /// `since_file_load`, also from the file's digest when it was last loaded from.
    pub(crate) fn reload(
        &self,
        loader: &Loader,
        since_file_load: bool,
    ) -> Result<SwapOutcome, HostError> {
        let outcome = self.reload_uncounted(loader, since_file_load);
        self.count(loader, &outcome);
        outcome
    }

    /// Counts a swap, or a failed attempt at one; an unchanged file is neither.
    fn count(&self, loader: &Loader, outcome: &Result<SwapOutcome, HostError>) {
        match outcome {
            Ok(SwapOutcome::Swapped { .. }) => loader.metrics.plugin_swap(&self.spec.name, true),
            Err(_) => loader.metrics.plugin_swap(&self.spec.name, false),
            Ok(_) => {}
        }
    }

    /// [`Slot::reload`], uncounted.
    fn reload_uncounted(
        &self,
        loader: &Loader,
        since_file_load: bool,
    ) -> Result<SwapOutcome, HostError> {
        let _turn = lock(&self.changes);
        let read = read_checked(&loader.policy.load(), &self.spec, &self.readers)?;
        let digest = read.version.digest;
        let current = self.current.load_full();
        let unchanged = if current.digest == digest {
            *lock(&self.file_digest) = digest;
            true
        } else {
            since_file_load && *lock(&self.file_digest) == digest
        };
        if unchanged {
            return Ok(SwapOutcome::Unchanged {
                plugin: self.spec.name.clone(),
                digest,
            });
        }
        let known_component = self.component(read.version.component_digest);
        let Read {
            bytes,
            version,
            started,
        } = read;
        let plugin = match known_component {
            Some(component) => {
                load_component(loader, &self.spec, &self.kv, &component, version, started)?
            }
            None => compile_and_load(loader, &self.spec, &self.kv, &bytes, version, started)?,
        };
        let load_time = plugin.load_time;
        *lock(&self.file_digest) = digest;
        self.switch(plugin, true);
        Ok(SwapOutcome::Swapped {
            plugin: self.spec.name.clone(),
            from: current.digest,
            to: digest,
            load_time,
        })
    }

    /// Takes over the history of `earlier`, the slot of the same name that a config reload
    /// replaces with this one, and its version serving, so that a rollback undoes the reload's
    /// change of this plugin.
    pub(crate) fn inherit(&self, earlier: &Slot) {
        let serving = earlier.current.load();
        let mut history = lock(&earlier.history)
            .iter()
            .map(|previous| Previous {
                version: previous.version.clone(),
                component: previous.component.clone(),
            })
            .collect::<History>();
        let current = self.current.load();
        if serving.digest != current.digest || serving.version.config != current.version.config {
            history.push_back(Previous {
                version: serving.version.clone(),
                component: serving.component.clone(),
            });
        }
        while history.len() > MAX_PREVIOUS_VERSIONS {
            history.pop_front();
        }
        *lock(&self.history) = history;
    }

    /// The compiled code of the component whose file has `digest`, if it is the one serving (only
    /// a config file changed) or one in the history (a redeploy of an earlier release).
    fn component(&self, digest: Digest) -> Option<Component> {
        let current = self.current.load();
        if current.version.component_digest == digest {
            return Some(current.component.clone());
        }
        lock(&self.history)
            .iter()
            .find(|previous| previous.version.component_digest == digest)
            .map(|previous| previous.component.clone())
    }

    /// Switches back to the version that the current one replaced. The current version is
    /// dropped from the history: a `reload` brings the file's version back.
    pub(crate) fn rollback(&self, loader: &Loader) -> Result<SwapOutcome, HostError> {
        let outcome = self.rollback_uncounted(loader);
        self.count(loader, &outcome);
        outcome
    }

    /// [`Slot::rollback`], uncounted.
    fn rollback_uncounted(&self, loader: &Loader) -> Result<SwapOutcome, HostError> {
        let _turn = lock(&self.changes);
        let Some(previous) = lock(&self.history).pop_back() else {
            return Err(HostError::NoPreviousVersion {
                plugin: self.spec.name.clone(),
            });
        };
        let from = self.current.load().digest;
        let started = Instant::now();
        let loaded = load_component(
            loader,
            &self.spec,
            &self.kv,
            &previous.component,
            previous.version.clone(),
            started,
        );
        match loaded {
            Ok(plugin) => {
                let (to, load_time) = (plugin.digest, plugin.load_time);
                self.switch(plugin, false);
                Ok(SwapOutcome::Swapped {
                    plugin: self.spec.name.clone(),
                    from,
                    to,
                    load_time,
                })
            }
            Err(error) => {
                // It stays available for another try.
                lock(&self.history).push_back(previous);
                Err(error)
            }
        }
    }

    /// Makes `plugin` the current version, keeping the replaced one in the history when
    /// `keep_replaced`.
    fn switch(&self, plugin: Plugin, keep_replaced: bool) {
        let (to, load_time) = (plugin.digest, plugin.load_time);
        let events = plugin.events;
        // While both versions may be current to a reader, what either takes: a message that
        // skips the slot then skips it for both.
        self.takes.widen(events);
        let old = self.current.swap(Arc::new(plugin));
        self.takes.set(events);
        tracing::info!(
            plugin = self.spec.name,
            from = %old.digest.short(),
            to = %to.short(),
            load_ms = load_time.as_secs_f64() * 1e3,
            "plugin version switched"
        );
        if keep_replaced {
            let mut history = lock(&self.history);
            history.push_back(Previous {
                version: old.version.clone(),
                component: old.component.clone(),
            });
            while history.len() > MAX_PREVIOUS_VERSIONS {
                history.pop_front();
            }
        }
        // `old` is dropped here, or by the last call still running on it: its instances go
        // with it.
    }

    /// The plugin's status now.
    pub(crate) fn status(&self) -> PluginStatus {
        let previous = lock(&self.history)
            .iter()
            .rev()
            .map(|p| p.version.digest)
            .collect();
        let current = self.current.load();
        let count = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        PluginStatus {
            name: self.spec.name.clone(),
            path: self.spec.path.clone(),
            digest: current.digest,
            loaded_at: current.loaded_at,
            load_time: current.load_time,
            calls: count(&current.counters.calls),
            denies: count(&current.counters.denies),
            traps: count(&current.counters.traps),
            previous,
        }
    }
}

/// Reads the plugin's files and checks each against its pin and `policy`: the version's digest.
pub(crate) fn check_file(spec: &PluginSpec, policy: &LockPolicy) -> Result<Digest, HostError> {
    read_checked(policy, spec, &Readers::new(spec)).map(|read| read.version.digest)
}

/// The readers of a plugin's files, each with the plugin's size cap and `qgate-files`' time
/// limit.
struct Readers {
    component: FileReader,
    /// One per [`PluginSpec::config_files`], in their order.
    config_files: Vec<FileReader>,
}

impl Readers {
    fn new(spec: &PluginSpec) -> Self {
        let rules = ReadRules::new(spec.max_file_bytes);
        Self {
            component: FileReader::new(&spec.path, rules),
            config_files: spec
                .config_files
                .iter()
                .map(|file| FileReader::new(&file.path, rules))
                .collect(),
        }
    }
}

/// A version read from its files and checked, not yet compiled.
struct Read {
    /// The component's bytes.
    bytes: Vec<u8>,
    version: Version,
    /// When reading began, for the load time.
    started: Instant,
}

/// Reads the plugin's files with `readers` and checks each against its pin and `policy`.
fn read_checked(
    policy: &LockPolicy,
    spec: &PluginSpec,
    readers: &Readers,
) -> Result<Read, HostError> {
    let started = Instant::now();
    let (bytes, component_digest) = read_one(
        policy,
        spec,
        &readers.component,
        spec.sha256.as_ref(),
        "in its [[plugins]] entry",
    )?;
    let mut config = serde_json::Value::Object(spec.config.clone());
    let mut file_digests = Vec::with_capacity(spec.config_files.len());
    for (file, reader) in spec.config_files.iter().zip(&readers.config_files) {
        let pin_at = format!("beside `file` in `{}` of its config", file.key);
        let (bytes, digest) = read_one(policy, spec, reader, file.sha256.as_ref(), &pin_at)?;
        let config_error = |message: String| HostError::ConfigFile {
            plugin: spec.name.clone(),
            key: file.key.clone(),
            path: file.path.clone(),
            message,
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            config_error(format!(
                "it is not UTF-8 text ({e}): a plugin gets a file as text"
            ))
        })?;
        let value = match file.pointer.as_str() {
            // The whole object is not a value of it.
            "" => None,
            pointer => config.pointer_mut(pointer),
        };
        let Some(value) = value else {
            return Err(config_error(format!(
                "the plugin's config has no value at {}",
                file.pointer
            )));
        };
        *value = serde_json::Value::String(text);
        file_digests.push(digest);
    }
    let digest = Digest::of_version(
        &component_digest,
        spec.config_files
            .iter()
            .map(|file| file.pointer.as_str())
            .zip(&file_digests),
    );
    let serde_json::Value::Object(config) = config else {
        // Only values inside the object were replaced.
        return Err(HostError::Load {
            plugin: spec.name.clone(),
            message: "the plugin's config is not an object".to_owned(),
        });
    };
    Ok(Read {
        bytes,
        version: Version {
            digest,
            component_digest,
            config: Arc::new(config),
        },
        started,
    })
}

/// Reads one of the plugin's files with `reader` and checks it against `pin` and `policy`
/// (`pin_at` says where its pin would be written): its bytes and their digest.
fn read_one(
    policy: &LockPolicy,
    spec: &PluginSpec,
    reader: &FileReader,
    pin: Option<&Digest>,
    pin_at: &str,
) -> Result<(Vec<u8>, Digest), HostError> {
    let path = reader.path();
    let bytes = reader.read().map_err(|error| HostError::Read {
        plugin: spec.name.clone(),
        path: path.to_path_buf(),
        error,
    })?;
    let digest = Digest::of(&bytes);
    lock::check(policy, pin, pin_at, path, &bytes, &digest).map_err(|message| {
        HostError::Refused {
            plugin: spec.name.clone(),
            path: path.to_path_buf(),
            message,
        }
    })?;
    Ok((bytes, digest))
}

fn compile_and_load(
    loader: &Loader,
    spec: &PluginSpec,
    kv: &Arc<Kv>,
    bytes: &[u8],
    version: Version,
    started: Instant,
) -> Result<Plugin, HostError> {
    let component = compile_in_background(&loader.engine, bytes).map_err(|e| HostError::Load {
        plugin: spec.name.clone(),
        message: format!("{e:?}"),
    })?;
    load_component(loader, spec, kv, &component, version, started)
}

/// Compiles `bytes` on a thread of its own at the lowest scheduling priority (`SCHED_BATCH`,
/// nice 19 on Linux).
///
/// Compiling a component is tens of milliseconds of CPU on a core (hundreds on a busy one), while
/// the connection workers answer messages in microseconds: at the same priority, a compile during
/// a hot-swap competes with them and shows in the calls' tail latency. At the lowest priority it
/// takes what they leave, and the swap waits a little longer instead. Only the compile: `init` runs
/// against an epoch deadline, which a starved thread could miss. If the priority cannot be
/// lowered, the compile runs at the normal one.
fn compile_in_background(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    std::thread::scope(|scope| {
        let compile = std::thread::Builder::new()
            .name("qgate-compile".into())
            .spawn_scoped(scope, || {
                lower_priority();
                Component::new(engine, bytes)
            });
        match compile {
            Ok(thread) => match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // No thread to be had: compile here, at this thread's priority.
            Err(_) => Component::new(engine, bytes),
        }
    })
}

pub(crate) fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let lowered = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    );
    if let Err(error) = lowered {
        tracing::debug!(?error, "cannot lower the compile thread's priority");
    }
}

fn load_component(
    loader: &Loader,
    spec: &PluginSpec,
    kv: &Arc<Kv>,
    component: &Component,
    version: Version,
    started: Instant,
) -> Result<Plugin, HostError> {
    let config = version
        .config
        .iter()
        .map(|(key, value)| (key.clone(), value.to_string()))
        .collect::<BTreeMap<_, _>>();
    let digest = version.digest;
    let shared = Arc::new(PluginShared {
        name: spec.name.as_str().into(),
        version: digest.short(),
        config,
        kv: kv.clone(),
    });
    let plugin = Plugin::load(
        &loader.engine,
        &loader.linker,
        component,
        LoadOptions {
            shared,
            version,
            started,
            fail_open: spec.fail_open,
            time_budget: spec.time_budget,
            memory_limit: spec.memory_limit_bytes,
            metrics: loader.metrics.plugin(&spec.name, &digest.short()),
        },
    )
    .map_err(|e| HostError::Load {
        plugin: spec.name.clone(),
        message: name_files(&format!("{e:?}"), spec),
    })?;
    tracing::info!(
        plugin = spec.name,
        version = plugin.shared.version,
        events = ?plugin.events,
        load_ms = plugin.load_time.as_secs_f64() * 1e3,
        "plugin loaded"
    );
    Ok(plugin)
}

/// `message` (a failed load) with each line that starts with the key of a config file, and a
/// colon, starting with the file's path instead: `policies:3:14: ...` becomes
/// `/etc/qgate/policy/qgate.cedar:3:14: ...`. A line may start after `init refused the plugin: `.
fn name_files(message: &str, spec: &PluginSpec) -> String {
    const REFUSED: &str = "init refused the plugin: ";
    if spec.config_files.is_empty() {
        return message.to_owned();
    }
    message
        .split('\n')
        .map(|line| {
            let start = line.find(REFUSED).map_or(0, |at| at + REFUSED.len());
            let (head, rest) = line.split_at(start);
            let file = spec.config_files.iter().find(|file| {
                rest.strip_prefix(file.key.as_str())
                    .is_some_and(|after| after.starts_with(':'))
            });
            match file {
                Some(file) => format!("{head}{}{}", file.path.display(), &rest[file.key.len()..]),
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigFile;

    #[test]
    fn a_slot_is_skipped_only_when_neither_version_takes_the_event() {
        let takes = Takes::new(types::Events::SYNC | types::Events::OPEN);
        assert!(takes.message(true));
        assert!(!takes.message(false));
        assert!(!takes.outcome());
        // During a switch to a version that takes async messages and outcomes, not sync: what
        // either takes.
        let next = types::Events::ASYNC_MESSAGE | types::Events::OUTCOME;
        takes.widen(next);
        assert!(takes.message(true) && takes.message(false) && takes.outcome());
        takes.set(next);
        assert!(!takes.message(true));
        assert!(takes.message(false) && takes.outcome());
    }

    #[test]
    fn init_errors_about_a_config_file_name_the_file() {
        let mut spec = PluginSpec::new("cedar", "cedar.wasm");
        spec.config_files = vec![
            ConfigFile::new("policies", "/policies", "/etc/qgate/qgate.cedar"),
            ConfigFile::new("policies[1]", "/policies/1", "/etc/qgate/more.cedar"),
        ];
        let message = "init refused the plugin: policies:3:14: unexpected token\n\
                       policies[1]:1:1: no such action\npolicies_extra:1:1: left\n\
                       Caused by: policies:2:1";
        assert_eq!(
            name_files(message, &spec),
            "init refused the plugin: /etc/qgate/qgate.cedar:3:14: unexpected token\n\
             /etc/qgate/more.cedar:1:1: no such action\npolicies_extra:1:1: left\n\
             Caused by: policies:2:1"
        );
    }
}
