//! Chain positions whose plugin version can be replaced while calls run: loading a version off
//! the hot path, the atomic switch, the history that a rollback goes back through, and the
//! status that `qgate plugins` shows.
//!
//! ```text
//!   Slot (one per [[plugins]] entry, for the life of the host)
//!   ├── current: ArcSwap<Plugin> ── an event loads it once per plugin call; the Arc keeps an
//!   │                               old version alive until its calls in flight return
//!   ├── kv: Arc<Kv>              ── handed to every version: state outlives versions
//!   ├── reader: FileReader       ── the plugin's file, read under its size cap and time limit
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
//! A version switches in only after its file was read, hashed (sha256, the version's identity),
//! checked against its pin and the lock, compiled (or taken from the compiled-code cache), and
//! its first instance made and `init` run: any failure before that leaves the old version
//! serving. The compile runs on a thread of its own at the lowest scheduling priority
//! (`SCHED_BATCH`, nice 19), so that it uses the CPU the connection workers leave; `init` runs at
//! normal priority, because it has a deadline that a starved thread could miss. A version whose
//! digest is still in the history (a redeploy of an earlier release) reuses its compiled
//! component. The last [`MAX_PREVIOUS_VERSIONS`] replaced versions are kept for a rollback, which
//! instantiates one afresh (its `init` runs again). Counters (calls, denies, traps) are per
//! version, so that a misbehaving new version shows at once. `reload` compares the file with the
//! version serving; `reload_if_changed` (the file watch, SIGHUP) with the file's digest when it
//! was last loaded from, so that a rollback holds until the file changes again.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
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
    pub(crate) policy: LockPolicy,
    /// Where calls (per version) and swaps are counted.
    pub(crate) metrics: Metrics,
}

/// A version that was replaced and may be rolled back to.
struct Previous {
    digest: Digest,
    component: Component,
}

/// The versions a plugin's swaps replaced, newest last.
type History = VecDeque<Previous>;

/// One position of the chain.
pub(crate) struct Slot {
    pub(crate) spec: PluginSpec,
    /// The version that new calls go to. Read without a lock on every call; replaced whole.
    pub(crate) current: ArcSwap<Plugin>,
    /// The plugin's store, shared by all its versions.
    pub(crate) kv: Arc<Kv>,
    /// The plugin's file. One reader for the life of the slot: it remembers a read stuck in the
    /// kernel, so that a stalled mount costs one thread, not one per reload.
    reader: FileReader,
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
    /// Loads the first version of `spec`'s plugin.
    pub(crate) fn load(loader: &Loader, spec: PluginSpec) -> Result<Self, HostError> {
        let kv = match &spec.kv_file {
            Some(path) => Arc::new(Kv::load(path).map_err(|message| HostError::KvFile {
                plugin: spec.name.clone(),
                path: path.clone(),
                message,
            })?),
            None => Arc::<Kv>::default(),
        };
        let reader = reader(&spec);
        let (bytes, digest, started) = read_checked(&loader.policy, &spec, &reader)?;
        // Nothing is serving yet: the first compile runs at normal priority.
        let component = Component::new(&loader.engine, &bytes).map_err(|e| HostError::Load {
            plugin: spec.name.clone(),
            message: format!("{e:?}"),
        })?;
        let plugin = load_component(loader, &spec, &kv, &component, digest, started)?;
        Ok(Self {
            spec,
            current: ArcSwap::from_pointee(plugin),
            kv,
            reader,
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
        let (bytes, digest, started) = read_checked(&loader.policy, &self.spec, &self.reader)?;
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
        // A version seen before (a redeploy of an earlier release) is in the history, compiled.
        let known_component = lock(&self.history)
            .iter()
            .find(|previous| previous.digest == digest)
            .map(|previous| previous.component.clone());
        let plugin = match known_component {
            Some(component) => {
                load_component(loader, &self.spec, &self.kv, &component, digest, started)?
            }
            None => compile_and_load(loader, &self.spec, &self.kv, &bytes, digest, started)?,
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
            previous.digest,
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
        let old = self.current.swap(Arc::new(plugin));
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
                digest: old.digest,
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
        let previous = lock(&self.history).iter().rev().map(|p| p.digest).collect();
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

/// Reads the plugin's file and checks it against its pin and `policy`: its digest.
pub(crate) fn check_file(spec: &PluginSpec, policy: &LockPolicy) -> Result<Digest, HostError> {
    read_checked(policy, spec, &reader(spec)).map(|(_, digest, _)| digest)
}

/// The reader of the plugin's file: its size cap, and `qgate-files`' time limit.
fn reader(spec: &PluginSpec) -> FileReader {
    FileReader::new(&spec.path, ReadRules::new(spec.max_file_bytes))
}

/// Reads the plugin's file with `reader` and checks it against its pin and `policy`: its bytes,
/// its digest, and when reading began.
fn read_checked(
    policy: &LockPolicy,
    spec: &PluginSpec,
    reader: &FileReader,
) -> Result<(Vec<u8>, Digest, Instant), HostError> {
    let started = Instant::now();
    let bytes = reader.read().map_err(|error| HostError::Read {
        plugin: spec.name.clone(),
        path: spec.path.clone(),
        error,
    })?;
    let digest = Digest::of(&bytes);
    lock::check(policy, spec.sha256.as_ref(), &spec.path, &bytes, &digest).map_err(|message| {
        HostError::Refused {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            message,
        }
    })?;
    Ok((bytes, digest, started))
}

fn compile_and_load(
    loader: &Loader,
    spec: &PluginSpec,
    kv: &Arc<Kv>,
    bytes: &[u8],
    digest: Digest,
    started: Instant,
) -> Result<Plugin, HostError> {
    let component = compile_in_background(&loader.engine, bytes).map_err(|e| HostError::Load {
        plugin: spec.name.clone(),
        message: format!("{e:?}"),
    })?;
    load_component(loader, spec, kv, &component, digest, started)
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

fn lower_priority() {
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
    digest: Digest,
    started: Instant,
) -> Result<Plugin, HostError> {
    let config = spec
        .config
        .iter()
        .map(|(key, value)| (key.clone(), value.to_string()))
        .collect::<BTreeMap<_, _>>();
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
            digest,
            started,
            config_json: serde_json::Value::Object(spec.config.clone()).to_string(),
            fail_open: spec.fail_open,
            time_budget: spec.time_budget,
            memory_limit: spec.memory_limit_bytes,
            metrics: loader.metrics.plugin(&spec.name, &digest.short()),
        },
    )
    .map_err(|e| HostError::Load {
        plugin: spec.name.clone(),
        message: format!("{e:?}"),
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
