//! qgate's plugin host: the only crate that knows wasmtime.
//!
//! [`PluginHost`] loads the plugins that [`HostOptions`] lists, WebAssembly components that
//! implement `wit/plugin.wit` (`qgate:plugin@0.8.0`), and implements [`qgate_hooks::Hooks`] by
//! running each event through them in order, as `shared/DESIGN.md` describes the chains:
//!
//! | event | chain |
//! |---|---|
//! | auth | any deny ends it; an allow may rename the user for the plugins after it and later events |
//! | sync, async | the first plugin that does not pass decides; a reply is validated first |
//! | open, close | every plugin that takes them; traps are logged; an open error closes the connection |
//!
//! ```text
//!   Hooks::on_sync(session, request)
//!        │  summary (read in place from request.view())
//!        ▼
//!   plugin 1 ── pass ──► plugin 2 ── pass ──► ... ──► Verdict::Pass (nothing answered)
//!        │ deny / reply(bytes)
//!        ▼
//!   Verdict::Deny(message) │ validate(bytes) ──► Verdict::Reply(Body) or Deny(malformed)
//! ```
//!
//! Sandboxing: one engine, epoch interruption ([`EPOCH_TICK`]) for each call's time budget, a
//! memory cap per instance, and an empty WASI context (no files, no environment, no network, no
//! stdio) whose `wasi:io` functions never wait. A budget counts the CPU time of the thread that
//! runs the call, so that a call is not denied for time it spent preempted, under a wall-clock
//! ceiling of [`WALL_CLOCK_CEILING_FACTOR`] budgets (at least [`MIN_WALL_CLOCK_CEILING`])
//! (`store.rs`). Calls run inline on the connection's async worker; one still running after a
//! tick hands the worker's other tasks to another thread (`offload.rs`). A trap, a timeout or the
//! memory cap is a deny for auth, sync and async, unless the plugin is configured fail-open; the
//! failed instance is replaced at once, and only a plugin whose instances cannot be made backs
//! off (`plugin.rs`).
//!
//! Instances are not per connection: each plugin keeps a small pool of instances that all
//! connections share, each checked out for one call (`plugin.rs` says why).
//!
//! Hot-swap: each chain position holds its current version behind an atomic pointer, which an
//! event reads once per plugin call. [`PluginHost::reload`] loads a new version from the plugin's
//! file (read, sha256, pin and signature checks per [`LockPolicy`], compile, instantiate, `init`)
//! and only then switches; calls in flight finish on the old version, and a failure leaves it
//! serving. [`PluginHost::rollback`] goes back through the replaced versions. A plugin's kv store
//! belongs to its position, so every version sees the same state.
//!
//! Config reload: the chain itself sits behind an atomic pointer that each event reads once.
//! [`PluginHost::reconfigure`] builds a new chain from new options (plugins added, removed,
//! reordered or changed, a new lock), loading every new or changed plugin first, and switches
//! only when all of them loaded.

#![warn(missing_docs)]

mod bindings;
mod data;
mod engine;
mod facts;
mod kv;
mod lock;
mod offload;
mod plugin;
mod shadow;
mod standing;
mod state;
mod store;
mod swap;
mod wasi;

use std::{
    cell::OnceCell,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use qgate_hooks::{
    AuthVerdict, Body, CloseReason, Credentials, DataVerdict, DecisionEvent, DecisionKind,
    DecisionRecord, DecisionSink, Hooks, HttpRequest, HttpResponse, HttpVerdict, OpenVerdict,
    Outbound, RecordedBytes, Request, Session, Verdict, WsMessage, WsOpenVerdict, WsVerdict,
};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::{
    bindings::types,
    facts::FactsCell,
    plugin::{Counters, Failure, Plugin},
    state::{HostState, Lent, Made, MessageRef, PluginShared},
    swap::{Loader, Slot},
};
// The public surface: the host, its options and its error, swaps and their outcomes, digests,
// keys and signatures (and `check_artifact`, below), and the limits it applies.
pub use crate::{
    engine::{EPOCH_TICK, MAX_INSTANCES_PER_VERSION},
    kv::{KV_SAVE_INTERVAL, MAX_KV_KEY_BYTES, MAX_KV_TOTAL_BYTES, MAX_KV_VALUE_BYTES},
    lock::{Digest, LockPolicy, ParseError, PublicKey, SecretKey, signature_path},
    plugin::{MAX_BACKOFF, MIN_BACKOFF, MIN_INIT_BUDGET},
    state::MAX_SUMMARY_TEXT_BYTES,
    store::{KEEP_INSTANCE_MEMORY_BYTES, MIN_WALL_CLOCK_CEILING, WALL_CLOCK_CEILING_FACTOR},
    swap::{MAX_PREVIOUS_VERSIONS, PluginStatus, SwapOutcome},
};

/// What the host runs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HostOptions {
    /// The plugins, in chain order.
    pub plugins: Vec<PluginSpec>,
    /// Where compiled components are cached, keyed by the component's hash and the engine's
    /// settings; `None` compiles every plugin at every start (35 to 45 ms each).
    pub cache_dir: Option<PathBuf>,
    /// What every version of every plugin must be to load, at start and at each swap.
    pub lock: LockPolicy,
    /// Where plugin calls and swaps are counted.
    pub metrics: qgate_metrics::Metrics,
    /// Where each decision of the auth, open, sync and async chains is recorded; `None` records
    /// nothing.
    pub decisions: Option<Arc<dyn DecisionSink>>,
}

impl HostOptions {
    /// Options for `plugins`, with no compilation cache and no lock.
    pub fn new(plugins: Vec<PluginSpec>) -> Self {
        Self {
            plugins,
            cache_dir: None,
            lock: LockPolicy::default(),
            metrics: qgate_metrics::Metrics::new(),
            decisions: None,
        }
    }
}

/// One plugin of the chain.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PluginSpec {
    /// The name the logs, the errors and the kv store know it by.
    pub name: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Its table from the config file, as JSON: `init` gets the whole object as text, and the
    /// `config` import one key's value as text.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The values of `config` that are files: each is read at every load, checked as the
    /// component is (its pin, and its signature in a locked deployment), and put in `config` as
    /// the file's text. They are part of the plugin's version.
    pub config_files: Vec<ConfigFile>,
    /// Whether a trap, a timeout or the memory cap counts as a pass rather than a deny.
    pub fail_open: bool,
    /// How much CPU time one call may use. It may take [`WALL_CLOCK_CEILING_FACTOR`] times as
    /// long on the wall clock, and at least [`MIN_WALL_CLOCK_CEILING`], before it is cut all the
    /// same.
    pub time_budget: Duration,
    /// How much linear memory one instance may have.
    pub memory_limit_bytes: usize,
    /// The one version that may load, when pinned: every load whose file has another digest is
    /// refused.
    pub sha256: Option<Digest>,
    /// The upstreams the plugin may route a message to; a route verdict naming any other is a
    /// deny.
    pub routes: Vec<String>,
    /// The largest file that is read as the plugin's component; a larger one is refused.
    pub max_file_bytes: u64,
    /// Where the plugin's kv store is kept across restarts: loaded at start (a missing file is an
    /// empty store), written atomically at most every [`KV_SAVE_INTERVAL`] when it changed and
    /// once more when the host is dropped. `None` keeps the store in memory only.
    pub kv_file: Option<PathBuf>,
    /// Whether the plugin is a shadow: not in the chain, but run after it on every event it takes,
    /// off the connection's path, its disagreements with the chain recorded (see
    /// [`HostOptions::decisions`]) and counted.
    pub shadow: bool,
}

impl PluginSpec {
    /// The default time budget of a call: a policy decides in microseconds, and an application
    /// plugin that answers queries should do so within tens of milliseconds; 100 ms leaves room
    /// for both without letting a runaway guest hold a thread for long.
    pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_millis(100);

    /// The default memory cap of an instance: a Rust guest with its allocator needs 1 to 2 MiB,
    /// and 64 MiB leaves room for tables and a decoded message or two.
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 << 20;

    /// The default cap on a plugin's file: a component is a few MiB at most (the largest of
    /// `plugins/`, `audit`, is 250 KB), and 64 MiB leaves room for one with data built in, while
    /// a file put in its place by mistake (a log, an image, a core dump) is refused rather than
    /// read into memory and handed to the compiler.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

    /// A fail-closed plugin with the default budget and memory cap and an empty config.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            config: serde_json::Map::new(),
            config_files: Vec::new(),
            fail_open: false,
            time_budget: Self::DEFAULT_TIME_BUDGET,
            memory_limit_bytes: Self::DEFAULT_MEMORY_LIMIT_BYTES,
            sha256: None,
            routes: Vec::new(),
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            kv_file: None,
            shadow: false,
        }
    }
}

/// A value of a plugin's config that is a file: `policies = { file = "policy/qgate.cedar" }`.
///
/// Plugins cannot read files, and must not: the host reads the file for the plugin, under the
/// rules it reads the component with (a regular file, at most [`PluginSpec::max_file_bytes`],
/// within [`qgate_files::ReadRules::DEFAULT_TIMEOUT`]), requires UTF-8 text, checks it against
/// its pin or, in a locked deployment, its signature (`<file>.sig`), and hands it to `init` as a
/// JSON string in the value's place. The file is part of the plugin's version (see
/// [`Digest::of_version`]): a change to it is swapped in as a new component would be.
///
/// An error of `init` that starts with the value's key and a colon (`policies:3:14: ...`) is
/// reported with the file's path in place of the key, so that the operator sees which file, line
/// and column to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigFile {
    /// Where the value is, as the config file names it: `policies`, `policies[1]`, `rules.base`.
    pub key: String,
    /// Where the value is as a JSON pointer (RFC 6901) into [`PluginSpec::config`]: `/policies`.
    pub pointer: String,
    /// The file.
    pub path: PathBuf,
    /// The one content the file may have, when pinned.
    pub sha256: Option<Digest>,
}

impl ConfigFile {
    /// The file at `path` as the value at `key` (a dotted name, `[N]` for an array's item).
    pub fn new(
        key: impl Into<String>,
        pointer: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            key: key.into(),
            pointer: pointer.into(),
            path: path.into(),
            sha256: None,
        }
    }
}

/// Why the host could not start, or a plugin could not be swapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A swap or a rollback named a plugin that the host does not run.
    #[error("no plugin is named {plugin:?}; the loaded plugins are {loaded}")]
    UnknownPlugin {
        /// The name asked for.
        plugin: String,
        /// The names of the loaded plugins, for the message.
        loaded: String,
    },
    /// A rollback found no earlier version.
    #[error(
        "plugin {plugin} has no earlier version to roll back to: it has not been swapped since \
         the server started, or every earlier version was rolled back already"
    )]
    NoPreviousVersion {
        /// The plugin.
        plugin: String,
    },
    /// A plugin's file does not match its pin, or the deployment is locked and it is neither
    /// pinned nor signed by a named key.
    #[error("refused to load plugin {plugin} from {path:?}: {message}")]
    Refused {
        /// The plugin's name.
        plugin: String,
        /// Its file.
        path: PathBuf,
        /// The mismatch: expected and actual digest, or the signature and the keys.
        message: String,
    },
    /// The engine could not be made (the host's fault, or the machine's).
    #[error("failed to start the plugin engine: {message}")]
    Engine {
        /// What went wrong.
        message: String,
    },
    /// A plugin's file could not be read: it is missing, not a regular file, larger than
    /// [`PluginSpec::max_file_bytes`], or slower to read than the time limit.
    #[error("failed to read plugin {plugin}: {error}")]
    Read {
        /// The plugin's name.
        plugin: String,
        /// Its file.
        path: PathBuf,
        /// Why, naming the file.
        error: qgate_files::FileError,
    },
    /// A file a plugin's config names is not UTF-8 text, or its value cannot be put in the
    /// config.
    #[error("failed to read plugin {plugin}'s config file {path:?} (`{key}`): {message}")]
    ConfigFile {
        /// The plugin's name.
        plugin: String,
        /// The value's key in the plugin's config.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A plugin's file is not a component that fits the contract, or its `init` failed.
    #[error("failed to load plugin {plugin}: {message}")]
    Load {
        /// The plugin's name.
        plugin: String,
        /// Why, with wasmtime's details.
        message: String,
    },
    /// A plugin's `kv_file` exists but cannot be read as its store: not a regular file, too
    /// large, slow to read, not a kv file, or holding an entry over the store's limits. Move it
    /// away to start with an empty store.
    #[error("failed to load the kv_file of plugin {plugin} from {path:?}: {message}")]
    KvFile {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A config reload asks for more than the engine was made with room for: more plugins, or
    /// a larger memory cap. Nothing changed; a restart makes the room.
    #[error("cannot reload the config: {message}")]
    Capacity {
        /// What, and the restart that makes room.
        message: String,
    },
    /// A config reload lists two plugins of one name. Nothing changed.
    #[error("cannot reload the config: two plugins are named {plugin:?}")]
    DuplicatePlugin {
        /// The name.
        plugin: String,
    },
}

/// The plugin host: a chain of plugins behind [`Hooks`], each of which can be swapped for a new
/// version while calls run, and the chain itself replaced by a config reload.
pub struct PluginHost {
    /// Writes the stores that have a `kv_file`; dropped (a last write) first. `None` until a
    /// plugin has a `kv_file`. A `std` mutex, taken at start, by a config reload and at the end.
    kv_saver: Mutex<Option<kv::KvSaver>>,
    /// The chain in force: every event reads it once. A config reload replaces it whole.
    chain: ArcSwap<Chain>,
    loader: Loader,
    /// The `pass-always` and `filter-always` verdicts standing for each connection.
    standing: standing::Standings,
    /// Ticks the engine's epoch until the host is dropped.
    _ticker: engine::EpochTicker,
    /// Where decisions are recorded.
    decisions: Option<Arc<dyn DecisionSink>>,
    /// The shadow plugins' queue and worker, started with the first shadow plugin.
    shadows: OnceLock<shadow::Shadows>,
    /// Swaps and rollbacks of single plugins hold it shared, a config reload exclusively: a swap
    /// never lands on a slot that a reload is replacing. A `std` lock, held on the threads that
    /// load versions, never by calls.
    changes: RwLock<()>,
    /// How many plugins the engine has room for: those at start and [`RELOAD_HEADROOM`] more.
    capacity: usize,
    /// The largest memory cap the engine was made with.
    max_memory_bytes: usize,
}

/// The chain as a config lays it out.
struct Chain {
    /// Every plugin, live and shadow, in the config's order. The chains skip shadow ones.
    slots: Vec<Arc<Slot>>,
    /// The shadow ones, which the shadow worker's jobs name.
    shadows: Arc<[Arc<Slot>]>,
}

/// How many plugins a config reload may add beyond those the host started with.
///
/// The engine's pooling allocator reserves its instance slots, and the address space of their
/// memories, when it is made: about 1 TiB of address space (never memory) per plugin. Eight more
/// than at start covers adding plugins one deploy at a time between restarts; a reload that adds
/// more is refused, and names the restart that makes room.
pub const RELOAD_HEADROOM: usize = 8;

/// What a config reload ([`PluginHost::reconfigure`]) changed, by plugin name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Plugins the new config adds, loaded and in the chain.
    pub added: Vec<String>,
    /// Plugins the new config leaves out, no longer in the chain.
    pub removed: Vec<String>,
    /// Plugins whose entry changed (config, limits, pins, mode, routes), or every plugin when
    /// the lock changed: loaded again under the new entry.
    pub changed: Vec<String>,
    /// Plugins whose entry did not change: the same versions go on serving.
    pub unchanged: Vec<String>,
    /// Whether the order of the plugins that stayed changed.
    pub reordered: bool,
    /// Whether `[lock]` changed.
    pub lock_changed: bool,
}

impl Reconfigured {
    /// Whether the chain is the one it was.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.reordered
            && !self.lock_changed
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.plugin_names())
            .finish()
    }
}

impl PluginHost {
    /// Loads every plugin: compiles it (or takes it from the cache), makes its first instance and
    /// runs its `init`.
    ///
    /// # Errors
    ///
    /// [`HostError`] naming the plugin whose file cannot be read, is refused by its pin or the
    /// lock, does not fit the contract, or whose `init` fails or traps.
    pub fn new(options: HostOptions) -> Result<Self, HostError> {
        let engine_error = |e: wasmtime::Error| HostError::Engine {
            message: format!("{e:#}"),
        };
        // Room for a reload to raise a cap to the default, at least.
        let max_memory_bytes = options
            .plugins
            .iter()
            .map(|p| p.memory_limit_bytes)
            .max()
            .unwrap_or(0)
            .max(PluginSpec::DEFAULT_MEMORY_LIMIT_BYTES);
        let capacity = options.plugins.len().saturating_add(RELOAD_HEADROOM);
        let engine = engine::engine(capacity, max_memory_bytes, options.cache_dir.as_deref())
            .map_err(engine_error)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(engine_error)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        let ticker = engine::EpochTicker::start(engine.clone()).map_err(|e| HostError::Engine {
            message: format!("failed to start the epoch thread: {e}"),
        })?;

        let loader = Loader {
            engine,
            linker,
            policy: ArcSwap::from_pointee(options.lock.clone()),
            metrics: options.metrics,
        };
        let mut slots = Vec::with_capacity(options.plugins.len());
        for spec in options.plugins {
            slots.push(Arc::new(Slot::load(
                &loader,
                &options.lock,
                spec,
                None,
                false,
            )?));
        }
        let host = Self {
            kv_saver: Mutex::new(None),
            chain: ArcSwap::from_pointee(Chain::new(slots)),
            loader,
            standing: standing::Standings::default(),
            _ticker: ticker,
            decisions: options.decisions,
            shadows: OnceLock::new(),
            changes: RwLock::new(()),
            capacity,
            max_memory_bytes,
        };
        host.start_workers(&host.chain.load())?;
        Ok(host)
    }

    /// Starts what `chain` needs beside the calls: the kv saver for its `kv_file`s (or gives it
    /// the new list), the shadow worker for its shadow plugins.
    fn start_workers(&self, chain: &Chain) -> Result<(), HostError> {
        let persisted = chain
            .slots
            .iter()
            .filter_map(|slot| {
                let path = slot.spec.kv_file.clone()?;
                Some((slot.kv.clone(), path, slot.spec.name.clone()))
            })
            .collect::<Vec<_>>();
        let mut saver = self.kv_saver.lock().unwrap_or_else(PoisonError::into_inner);
        match &*saver {
            Some(saver) => saver.replace(persisted),
            None if persisted.is_empty() => {}
            None => {
                *saver = Some(
                    kv::KvSaver::start(persisted).map_err(|e| HostError::Engine {
                        message: format!("failed to start the kv_file thread: {e}"),
                    })?,
                );
            }
        }
        if !chain.shadows.is_empty() && self.shadows.get().is_none() {
            let shadows =
                shadow::Shadows::start(self.decisions.clone(), self.loader.metrics.clone())
                    .map_err(|e| HostError::Engine {
                        message: format!("failed to start the shadow plugins' thread: {e}"),
                    })?;
            // Only a config reload starts it after `new`, and reloads take turns.
            let _ = self.shadows.set(shadows);
        }
        Ok(())
    }

    /// The names of the loaded plugins, in chain order.
    pub fn plugin_names(&self) -> Vec<String> {
        let chain = self.chain.load();
        chain
            .slots
            .iter()
            .map(|slot| slot.spec.name.clone())
            .collect()
    }

    /// The plugins' files, in chain order, for a watcher: each plugin's component, then the
    /// files its config names, and in a locked deployment the signature beside each, so that
    /// signing a file that was refused unsigned swaps it in.
    pub fn plugin_paths(&self) -> Vec<(String, PathBuf)> {
        let locked = self.loader.policy.load().locked;
        let chain = self.chain.load();
        chain
            .slots
            .iter()
            .flat_map(|slot| {
                let name = slot.spec.name.as_str();
                std::iter::once(&slot.spec.path)
                    .chain(slot.spec.config_files.iter().map(|file| &file.path))
                    .flat_map(move |path| {
                        let signature = locked.then(|| signature_path(path));
                        std::iter::once(path.clone()).chain(signature)
                    })
                    .map(move |path| (name.to_owned(), path))
            })
            .collect()
    }

    /// Every plugin's version, load time and counters, in chain order.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.chain
            .load()
            .slots
            .iter()
            .map(|slot| slot.status())
            .collect()
    }

    /// Reads plugin `name`'s file again and, if it holds another version, loads it (checks,
    /// compiles, instantiates, runs `init`) and switches to it: calls in flight finish on the old
    /// version, and every call that starts after this returns runs on the new one. Reloads of
    /// one plugin take turns.
    ///
    /// This blocks for as long as compiling and `init` take (tens of milliseconds): call it from
    /// a thread that runs no async tasks (`spawn_blocking`).
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], or why the new version cannot load, in which case the old
    /// one goes on serving.
    pub fn reload(&self, name: &str) -> Result<SwapOutcome, HostError> {
        let _turn = read(&self.changes);
        self.slot(name)?.reload(&self.loader, false)
    }

    /// [`PluginHost::reload`] for every plugin, in chain order: each one's name and result.
    pub fn reload_all(&self) -> Vec<(String, Result<SwapOutcome, HostError>)> {
        self.each(|slot| slot.reload(&self.loader, false))
    }

    /// Reloads plugin `name` if its file changed since it was last loaded from (at start or by a
    /// reload), as a file watch or SIGHUP does: unlike [`PluginHost::reload`], it leaves a
    /// rolled-back plugin alone until its file changes again.
    ///
    /// Blocks as [`PluginHost::reload`] does.
    ///
    /// # Errors
    ///
    /// As [`PluginHost::reload`].
    pub fn reload_if_changed(&self, name: &str) -> Result<SwapOutcome, HostError> {
        let _turn = read(&self.changes);
        self.slot(name)?.reload(&self.loader, true)
    }

    /// [`PluginHost::reload_if_changed`] for every plugin, in chain order: each one's name and
    /// result.
    pub fn reload_all_if_changed(&self) -> Vec<(String, Result<SwapOutcome, HostError>)> {
        self.each(|slot| slot.reload(&self.loader, true))
    }

    /// `f` for every plugin of the chain in force, in order, its turn held.
    fn each(
        &self,
        f: impl Fn(&Slot) -> Result<SwapOutcome, HostError>,
    ) -> Vec<(String, Result<SwapOutcome, HostError>)> {
        let _turn = read(&self.changes);
        let chain = self.chain.load();
        chain
            .slots
            .iter()
            .map(|slot| (slot.spec.name.clone(), f(slot)))
            .collect()
    }

    /// Switches plugin `name` back to the version its last swap replaced, loading it afresh
    /// (its `init` runs again; its kv store is the one all versions share). The version it
    /// replaces is dropped; [`PluginHost::reload`] loads the file's version again.
    ///
    /// Blocks as [`PluginHost::reload`] does.
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], [`HostError::NoPreviousVersion`], or why the earlier
    /// version cannot load, in which case the current one goes on serving.
    pub fn rollback(&self, name: &str) -> Result<SwapOutcome, HostError> {
        let _turn = read(&self.changes);
        self.slot(name)?.rollback(&self.loader)
    }

    /// Replaces the chain with the one `options` lays out, as a config reload does: plugins
    /// added, removed, reordered, their entries changed, the lock changed. Only
    /// [`HostOptions::plugins`] and [`HostOptions::lock`] are read; the engine's settings, the
    /// metrics and the decision sink are the ones the host was made with.
    ///
    /// Every plugin that is new, or whose entry changed, is loaded first (read, checked against
    /// its pin and the new lock, compiled unless its compiled code is at hand, `init` run); when
    /// the lock changes, every plugin is. Only when all of them have loaded does the new chain
    /// replace the old one, in one step: each event runs wholly on one or the other. A failure
    /// changes nothing. A plugin whose entry did not change keeps its slot, with its version, its
    /// history and its counters; a changed one keeps its kv store (unless its `kv_file` changed)
    /// and may be rolled back to the version it had before. Blocks as [`PluginHost::reload`]
    /// does, for every plugin it loads.
    ///
    /// # Errors
    ///
    /// [`HostError::Capacity`] for more plugins, or a larger memory cap, than the engine has
    /// room for; [`HostError::DuplicatePlugin`]; otherwise the first plugin that cannot load, and
    /// why.
    pub fn reconfigure(&self, options: HostOptions) -> Result<Reconfigured, HostError> {
        let _turn = self.changes.write().unwrap_or_else(PoisonError::into_inner);
        if options.plugins.len() > self.capacity {
            return Err(HostError::Capacity {
                message: format!(
                    "the config has {} plugins, and this process has room for {} (those it \
                     started with and {RELOAD_HEADROOM} more); restart qgate to load them all",
                    options.plugins.len(),
                    self.capacity
                ),
            });
        }
        if let Some(spec) = options
            .plugins
            .iter()
            .find(|spec| spec.memory_limit_bytes > self.max_memory_bytes)
        {
            return Err(HostError::Capacity {
                message: format!(
                    "plugins `{}`: memory_limit is {} bytes, and this process was started with \
                     room for {} bytes an instance; restart qgate to raise it",
                    spec.name, spec.memory_limit_bytes, self.max_memory_bytes
                ),
            });
        }
        for (index, spec) in options.plugins.iter().enumerate() {
            if options.plugins[..index]
                .iter()
                .any(|other| other.name == spec.name)
            {
                return Err(HostError::DuplicatePlugin {
                    plugin: spec.name.clone(),
                });
            }
        }
        let old = self.chain.load_full();
        let lock_changed = **self.loader.policy.load() != options.lock;
        let mut report = Reconfigured {
            lock_changed,
            ..Reconfigured::default()
        };
        let mut slots = Vec::with_capacity(options.plugins.len());
        for spec in options.plugins {
            let earlier = old.slots.iter().find(|slot| slot.spec.name == spec.name);
            match earlier {
                Some(slot) if slot.spec == spec && !lock_changed => {
                    report.unchanged.push(spec.name.clone());
                    slots.push(Arc::clone(slot));
                }
                Some(slot) => {
                    report.changed.push(spec.name.clone());
                    let name = spec.name.clone();
                    let loaded = Slot::load(&self.loader, &options.lock, spec, Some(slot), true);
                    self.loader.metrics.plugin_swap(&name, loaded.is_ok());
                    let loaded = loaded?;
                    loaded.inherit(slot);
                    slots.push(Arc::new(loaded));
                }
                None => {
                    report.added.push(spec.name.clone());
                    slots.push(Arc::new(Slot::load(
                        &self.loader,
                        &options.lock,
                        spec,
                        None,
                        true,
                    )?));
                }
            }
        }
        report.removed = old
            .slots
            .iter()
            .filter(|slot| !slots.iter().any(|new| new.spec.name == slot.spec.name))
            .map(|slot| slot.spec.name.clone())
            .collect();
        // The plugins in both chains, in each one's order.
        let stayed = |slots: &[Arc<Slot>]| {
            slots
                .iter()
                .map(|slot| &slot.spec.name)
                .filter(|name| !report.added.contains(name) && !report.removed.contains(name))
                .cloned()
                .collect::<Vec<_>>()
        };
        report.reordered = stayed(&old.slots) != stayed(&slots);
        let chain = Chain::new(slots);
        self.start_workers(&chain)?;
        self.loader.policy.store(Arc::new(options.lock));
        self.chain.store(Arc::new(chain));
        tracing::info!(
            added = ?report.added,
            removed = ?report.removed,
            changed = ?report.changed,
            reordered = report.reordered,
            lock_changed = report.lock_changed,
            "plugin chain replaced"
        );
        Ok(report)
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, HostError> {
        let chain = self.chain.load();
        chain
            .slots
            .iter()
            .find(|slot| slot.spec.name == name)
            .cloned()
            .ok_or_else(|| HostError::UnknownPlugin {
                plugin: name.to_owned(),
                loaded: self.plugin_names().join(", "),
            })
    }
}

fn read(lock: &RwLock<()>) -> std::sync::RwLockReadGuard<'_, ()> {
    // It guards no data: a panic cannot leave anything half-updated.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Checks a plugin's file against its pin and `policy` without loading it, as a start or a swap
/// would: for `qgate check`.
///
/// # Errors
///
/// [`HostError::Read`] if the file cannot be read, [`HostError::Refused`] with the mismatch.
pub fn check_artifact(spec: &PluginSpec, policy: &LockPolicy) -> Result<Digest, HostError> {
    swap::check_file(spec, policy)
}

/// Logs a failed call and says whether the plugin's policy lets it pass.
fn failed(plugin: &Plugin, event: &str, failure: &Failure) -> bool {
    let (name, version) = (&*plugin.shared.name, &*plugin.shared.version);
    if plugin.fail_open {
        tracing::warn!(plugin = name, version, event, %failure, "plugin failed; fail-open: passing");
    } else {
        tracing::warn!(plugin = name, version, event, %failure, "plugin failed; fail-closed: denying");
    }
    plugin.fail_open
}

/// The next rep for a lent message in `state`: never 0, which means none.
fn next_message(state: &mut HostState) -> Resource<MessageRef> {
    state.message_rep = state.message_rep.wrapping_add(1).max(1);
    Resource::new_borrow(state.message_rep)
}

/// The rep for the reply lent beside the request of an `on-response` call: the one after the
/// request's, never 0.
fn next_reply(state: &mut HostState) -> Resource<MessageRef> {
    state.reply_rep = state.message_rep.wrapping_add(1).max(1);
    Resource::new_borrow(state.reply_rep)
}

/// What an upstream sent, on its way through the data chain: as it came, or as a plugin left it.
/// What asking a plugin about a reply or a publication came to.
enum Asked {
    /// Its verdict.
    Verdict(types::DataVerdict),
    /// It failed and is configured `fail_open`: the next plugin decides.
    Skip,
    /// It failed: the data is denied.
    Fail,
}

enum Current<'a> {
    Original(&'a Request),
    /// A plugin's replacement or edit, and the message made of it once a later plugin needs one.
    Changed(Body, Option<Request>),
}

impl PluginHost {
    fn message_chain(&self, session: &Session, request: &Request, sync: bool) -> Verdict {
        // The chain this event uses, read once: a config reload during it does not touch it.
        let chain = self.chain.load();
        let told = chain.takes_outcome();
        // The clock is read only for what reports the latency.
        let started = (told || self.decisions.is_some()).then(Instant::now);
        let latency = || started.map(|started| started.elapsed()).unwrap_or_default();
        // The WIT session and the summary (which copies the head and the text into strings) are
        // made on the first ask of a plugin, the outcome or the decision log: a chain of standing
        // verdicts, or of plugins that ask for neither, makes neither.
        let made = Made::default();
        let wit_session = || made.session(session);
        let summary = || made.summary(request);
        let facts = FactsCell::new();
        let lent = Lent::request(session, &made, request, &facts);
        let view = request.view();
        let call = view.call();
        // The head as the client sent it: one that is not UTF-8 never stands, so that two heads
        // a plugin saw alike (as replacement characters) never share a verdict.
        let call = call.as_ref().and_then(|call| {
            Some(standing::Call {
                sync,
                head: std::str::from_utf8(call.name()).ok()?,
                symbol: call.has_symbol_head(),
            })
        });
        // The deciding plugin is named only where it is reported.
        let name_decider = told || self.decisions.is_some();
        let (verdict, decided_by) =
            self.decide_message(&chain, session, call, lent, sync, name_decider);
        if let Some(sink) = &self.decisions {
            let (decision, reason) = verdict.decision();
            let event = if sync {
                DecisionEvent::Sync
            } else {
                DecisionEvent::Async
            };
            let mut record = DecisionRecord::new(session.clone(), event, decision);
            let summary = summary();
            record.head = summary.head.as_deref().map(Arc::from);
            if sink.include_text() {
                record.text = summary.text.as_deref().map(Arc::from);
            }
            record.size = summary.size;
            if request.body().len() <= sink.include_bytes() {
                record.bytes = Some(RecordedBytes {
                    body: request.body().to_vec(),
                    endian: request.endian(),
                });
            }
            record.reason = reason;
            record.latency = latency();
            sink.record(with_decider(record, decided_by.as_ref()));
        }
        if let Some(shadows) = self.shadows(&chain) {
            let asked = if sync {
                shadow::Asked::Sync(request)
            } else {
                shadow::Asked::Async(request)
            };
            shadows.submit(&chain.shadows, session, asked, verdict.decision().0);
        }
        if told {
            let (decision, reason) = match &verdict {
                Verdict::Pass => (types::Decision::Passed, None),
                Verdict::Deny(message) => (types::Decision::Denied, Some(message.clone())),
                Verdict::Reply(_) => (types::Decision::Replied, None),
                Verdict::Route(upstream) => (types::Decision::Routed, Some(upstream.clone())),
            };
            let event = if sync {
                types::EventKind::Sync
            } else {
                types::EventKind::AsyncMessage
            };
            chain.tell_outcome(
                wit_session(),
                Some((summary(), lent)),
                outcome(event, decision, reason, decided_by.as_ref(), latency()),
            );
        }
        verdict
    }

    /// The message chain proper: the verdict, and the plugin that gave it. A verdict that
    /// stands for the connection's calls of this function (`same-for-head`) is given without
    /// calling its plugin.
    fn decide_message(
        &self,
        chain: &Chain,
        session: &Session,
        call: Option<standing::Call<'_>>,
        lent: Lent<'_>,
        sync: bool,
        name_decider: bool,
    ) -> (Verdict, Option<Arc<PluginShared>>) {
        // One lock for the standing lookups of the slots before the first plugin call, which
        // releases it.
        let mut standings = call.map(|_| self.standing.lock());
        let event = if sync { "sync" } else { "async" };
        let flag = if sync {
            types::Events::SYNC
        } else {
            types::Events::ASYNC_MESSAGE
        };
        for (index, slot) in chain
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.spec.shadow)
        {
            if !slot.takes.message(sync) {
                continue;
            }
            // The version this event uses, read once: a swap during the call does not touch it.
            let plugin = slot.current.load();
            if !plugin.events.contains(flag) {
                continue;
            }
            let standing = call.and_then(|call| match standings.as_mut() {
                Some(locked) => locked.verdict(session, index, call, &plugin),
                None => self.standing.verdict(session, index, call, &plugin),
            });
            let result = match standing {
                Some(verdict) => Ok(verdict),
                None => {
                    // A plugin call never holds the table: its verdict may be recorded in it.
                    standings = None;
                    ask_message(&plugin, lent, sync)
                }
                .map(|(verdict, same_for_head)| {
                    if let (true, Some(call)) = (same_for_head, call) {
                        self.standing
                            .set_verdict(session, index, call, &plugin, verdict.clone());
                    }
                    verdict
                }),
            };
            let by = || name_decider.then(|| plugin.shared.clone());
            let verdict = match result {
                Ok(verdict) => verdict,
                Err(failure) if failed(&plugin, event, &failure) => continue,
                Err(_) => {
                    Counters::count(&plugin.counters.denies);
                    let message = format!("plugin {} failed", plugin.shared.name);
                    return (Verdict::Deny(message), by());
                }
            };
            if !matches!(verdict, types::Verdict::Pass) {
                // The chain ends here: what is left (checking a reply's bytes) needs no table.
                standings = None;
            }
            match verdict {
                types::Verdict::Pass => {}
                types::Verdict::Deny(message) => {
                    Counters::count(&plugin.counters.denies);
                    return (Verdict::Deny(message), by());
                }
                types::Verdict::Reply(bytes) => return (reply(&plugin, bytes), by()),
                types::Verdict::Route(upstream) => {
                    if slot.spec.routes.contains(&upstream) {
                        return (Verdict::Route(upstream), by());
                    }
                    Counters::count(&plugin.counters.denies);
                    tracing::warn!(
                        plugin = &*plugin.shared.name,
                        version = &*plugin.shared.version,
                        upstream,
                        "plugin routed to an upstream its `routes` does not list; denied"
                    );
                    let message = format!(
                        "plugin {} routed to upstream {upstream:?}, which its `routes` in \
                         config.toml does not list",
                        plugin.shared.name
                    );
                    return (Verdict::Deny(message), by());
                }
            }
        }
        (Verdict::Pass, None)
    }

    /// The HTTP chain proper: the verdict, and the plugin that gave it.
    fn decide_http(
        chain: &Chain,
        session: &Session,
        request: &HttpRequest,
        text: &state::HttpText,
    ) -> (HttpVerdict, Option<Arc<PluginShared>>) {
        let takes = |event| {
            chain
                .live()
                .any(|slot| slot.current.load().events.contains(event))
        };
        // Fail closed: an HTTP request carries q text (`GET /?expr`, a POST's body) that the
        // upstream's `.z.ph` and `.z.pp` run, so it must not pass a chain that checks q queries
        // and never looks at HTTP.
        if takes(types::Events::SYNC) && !takes(types::Events::HTTP) {
            let verdict = HttpVerdict::Deny {
                status: 403,
                text: "qgate: HTTP requests are refused: the plugins check q queries but none \
                       checks HTTP requests (`http` in a plugin's events), which carry q text too"
                    .to_owned(),
            };
            return (verdict, None);
        }
        let wit_session = OnceCell::new();
        let head = OnceCell::new();
        for slot in chain.live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::HTTP) {
                continue;
            }
            let wit_session = wit_session.get_or_init(|| state::session(session));
            let head = head.get_or_init(|| http_head(request));
            let result = plugin.call(None, |instance| {
                let rep = next_http(instance.store.data_mut());
                let verdict = state::with_http(request, text, || {
                    instance
                        .bindings
                        .call_on_http(&mut instance.store, wit_session, head, rep)
                });
                instance.store.data_mut().http_rep = 0;
                verdict
            });
            let by = || Some(plugin.shared.clone());
            let verdict = match result {
                Ok(verdict) => verdict,
                Err(failure) if failed(&plugin, "http", &failure) => continue,
                Err(_) => {
                    Counters::count(&plugin.counters.denies);
                    let verdict = HttpVerdict::Deny {
                        status: 500,
                        text: format!("qgate: plugin {} failed", plugin.shared.name),
                    };
                    return (verdict, by());
                }
            };
            match verdict {
                types::HttpVerdict::Pass => {}
                types::HttpVerdict::Respond(response) => {
                    let mut made = HttpResponse::new(response.status, response.body);
                    made.headers = response
                        .headers
                        .into_iter()
                        .map(|header| (header.name, header.value))
                        .collect();
                    return (HttpVerdict::Respond(made), by());
                }
                types::HttpVerdict::Deny(deny) => {
                    Counters::count(&plugin.counters.denies);
                    let verdict = HttpVerdict::Deny {
                        status: deny.status,
                        text: deny.text,
                    };
                    return (verdict, by());
                }
                types::HttpVerdict::Route(upstream) => {
                    if slot.spec.routes.contains(&upstream) {
                        return (HttpVerdict::Route(upstream), by());
                    }
                    Counters::count(&plugin.counters.denies);
                    tracing::warn!(
                        plugin = &*plugin.shared.name,
                        version = &*plugin.shared.version,
                        upstream,
                        "plugin routed an HTTP request to an upstream its `routes` does not list; \
                         denied"
                    );
                    let verdict = HttpVerdict::Deny {
                        status: 403,
                        text: format!(
                            "qgate: plugin {} routed to upstream {upstream:?}, which its `routes` \
                             in config.toml does not list",
                            plugin.shared.name
                        ),
                    };
                    return (verdict, by());
                }
            }
        }
        (HttpVerdict::Pass, None)
    }

    /// The WebSocket message chain proper: the verdict, and the plugin that gave it.
    fn decide_ws_message(
        chain: &Chain,
        session: &Session,
        message: &WsMessage,
    ) -> (WsVerdict, Option<Arc<PluginShared>>) {
        let takes = |event| {
            chain
                .live()
                .any(|slot| slot.current.load().events.contains(event))
        };
        // Fail closed, as for HTTP: a WebSocket message reaches the upstream's `.z.ws`, which
        // may evaluate it, so it must not pass a chain that checks q queries and never looks at
        // WebSocket messages.
        if takes(types::Events::SYNC) && !takes(types::Events::WS_MESSAGE) {
            let verdict = WsVerdict::Deny(
                "qgate: WebSocket messages are refused: the plugins check q queries but none \
                 checks WebSocket messages (`ws-message` in a plugin's events)"
                    .to_owned(),
            );
            return (verdict, None);
        }
        let wit_session = OnceCell::new();
        let wit_message = OnceCell::new();
        for slot in chain.live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::WS_MESSAGE) {
                continue;
            }
            let wit_session = wit_session.get_or_init(|| state::session(session));
            let wit_message = wit_message.get_or_init(|| types::WsMessage {
                text: message.text,
                data: message.data.clone(),
            });
            let result = plugin.call(None, |instance| {
                instance
                    .bindings
                    .call_on_ws_message(&mut instance.store, wit_session, wit_message)
            });
            let by = || Some(plugin.shared.clone());
            let verdict = match result {
                Ok(verdict) => verdict,
                Err(failure) if failed(&plugin, "ws-message", &failure) => continue,
                Err(_) => {
                    Counters::count(&plugin.counters.denies);
                    let verdict =
                        WsVerdict::Deny(format!("qgate: plugin {} failed", plugin.shared.name));
                    return (verdict, by());
                }
            };
            match verdict {
                types::WsVerdict::Pass => {}
                types::WsVerdict::Reply(messages) => {
                    let verdict = WsVerdict::Reply(
                        messages
                            .into_iter()
                            .map(|message| {
                                if message.text {
                                    WsMessage::text(String::from_utf8_lossy(&message.data))
                                } else {
                                    WsMessage::binary(message.data)
                                }
                            })
                            .collect(),
                    );
                    return (verdict, by());
                }
                types::WsVerdict::Deny(text) => {
                    Counters::count(&plugin.counters.denies);
                    return (WsVerdict::Deny(text), by());
                }
                types::WsVerdict::Close(close) => {
                    let verdict = WsVerdict::Close {
                        code: close.code,
                        reason: close.reason,
                    };
                    return (verdict, by());
                }
            }
        }
        (WsVerdict::Pass, None)
    }

    /// The auth chain proper: the verdict and the plugin that decided it. An allow's new user
    /// name goes into `wit_session`, for the plugins after it and the outcome.
    fn decide_auth(
        chain: &Chain,
        wit_session: &mut types::Session,
        credentials: &Credentials,
    ) -> (AuthVerdict, Option<Arc<PluginShared>>) {
        let mut verdict = AuthVerdict::Pass;
        let mut decided_by = None;
        for slot in chain.live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::AUTH) {
                continue;
            }
            let result = plugin.call(None, |instance| {
                instance.bindings.call_on_auth(
                    &mut instance.store,
                    wit_session,
                    credentials.password.as_deref(),
                )
            });
            match result {
                Ok(types::AuthVerdict::Pass) => {}
                Ok(types::AuthVerdict::Deny) => {
                    Counters::count(&plugin.counters.denies);
                    return (AuthVerdict::Deny, Some(plugin.shared.clone()));
                }
                Ok(types::AuthVerdict::Allow(user)) => {
                    decided_by = Some(plugin.shared.clone());
                    if let Some(user) = &user {
                        wit_session.user.clone_from(user);
                    }
                    verdict = AuthVerdict::Allow(match (user, verdict) {
                        (Some(user), _) => Some(user.into_bytes()),
                        (None, AuthVerdict::Allow(earlier)) => earlier,
                        (None, _) => None,
                    });
                }
                Err(failure) if failed(&plugin, "auth", &failure) => {}
                Err(_) => {
                    Counters::count(&plugin.counters.denies);
                    return (AuthVerdict::Deny, Some(plugin.shared.clone()));
                }
            }
        }
        (verdict, decided_by)
    }

    /// The open chain proper: every plugin that takes it, and the first that closed the
    /// connection.
    fn decide_open(
        chain: &Chain,
        wit_session: &types::Session,
    ) -> (OpenVerdict, Option<Arc<PluginShared>>) {
        let mut verdict = OpenVerdict::Keep;
        let mut decided_by = None;
        for slot in chain.live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::OPEN) {
                continue;
            }
            let result = plugin.call(None, |instance| {
                instance
                    .bindings
                    .call_on_open(&mut instance.store, wit_session)
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    if verdict == OpenVerdict::Keep {
                        verdict =
                            OpenVerdict::Close(format!("plugin {}: {why}", plugin.shared.name));
                        decided_by = Some(plugin.shared.clone());
                    }
                }
                // Open and close failures are logged, never fatal.
                Err(failure) => {
                    failed(&plugin, "open", &failure);
                }
            }
        }
        (verdict, decided_by)
    }

    /// The data chain: `on-response` for a reply to `request`, or `on-publication` when there is
    /// no request. Each plugin that takes the event sees what the ones before it let through; a
    /// failure denies (passes, for a plugin configured `fail_open`).
    fn data_chain(
        &self,
        session: &Session,
        request: Option<&Request>,
        message: &Request,
    ) -> DataVerdict {
        let (flag, event, message_type) = match request {
            Some(_) => (
                types::Events::RESPONSE,
                "response",
                qgate_ipc::MessageType::Response,
            ),
            None => (
                types::Events::PUBLICATION,
                "publication",
                qgate_ipc::MessageType::Async,
            ),
        };
        // Made on the first call: a chain of standing rules calls no plugin.
        let mut wit_session = None;
        let mut request_summary = None;
        let facts = FactsCell::new();
        let mut current = Current::Original(message);
        let publication = request.is_none();
        let chain = self.chain.load();
        for (index, slot) in chain
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.spec.shadow)
        {
            let plugin = slot.current.load_full();
            if !plugin.events.contains(flag) {
                continue;
            }
            // A changed value becomes a message only here, for a plugin that will read it: the
            // last plugin's change is sent as its body, without this copy.
            if let Current::Changed(body, message @ None) = &mut current {
                match data::message(message_type, body) {
                    Ok(made) => *message = Some(made),
                    Err(error) => {
                        return DataVerdict::Deny(format!(
                            "a plugin before {} returned a value that cannot be sent: {error}",
                            plugin.shared.name
                        ));
                    }
                }
            }
            let current_message = match &current {
                Current::Original(message) => *message,
                Current::Changed(_, Some(message)) => message,
                // Invariant: a changed value was made a message just above.
                Current::Changed(_, None) => continue,
            };
            let standing = self.standing.get(session, index, publication, &plugin);
            let changed = match standing {
                Some(standing::Rule::Pass) => continue,
                Some(standing::Rule::Filter(filter)) => match filter.apply(current_message) {
                    standing::Applied::Pass => continue,
                    standing::Applied::Changed(body) => Ok(body),
                    standing::Applied::Drop(why) => {
                        Counters::count(&plugin.counters.denies);
                        return DataVerdict::Deny(format!("plugin {}: {why}", plugin.shared.name));
                    }
                },
                None => {
                    let wit_session = wit_session.get_or_insert_with(|| state::session(session));
                    if request_summary.is_none() {
                        request_summary = request.map(state::summary);
                    }
                    match self.ask_data(
                        &plugin,
                        session,
                        wit_session,
                        request,
                        request_summary.as_ref(),
                        current_message,
                        &facts,
                        event,
                    ) {
                        Asked::Verdict(verdict) => match verdict {
                            types::DataVerdict::Pass => continue,
                            types::DataVerdict::Deny(message) => {
                                Counters::count(&plugin.counters.denies);
                                return DataVerdict::Deny(message);
                            }
                            types::DataVerdict::Replace(bytes) => Body::new(bytes)
                                .map_err(|error| format!("a malformed value ({error})")),
                            types::DataVerdict::Edit(edits) => {
                                match data::edit(current_message, &edits) {
                                    Ok(None) => continue,
                                    Ok(Some(body)) => Ok(body),
                                    Err(error) => {
                                        Err(format!("an edit that cannot be applied ({error})"))
                                    }
                                }
                            }
                            types::DataVerdict::PassAlways => {
                                self.standing.set(
                                    session,
                                    index,
                                    publication,
                                    &plugin,
                                    standing::Rule::Pass,
                                );
                                continue;
                            }
                            types::DataVerdict::FilterAlways(filter) if publication => {
                                let filter = Arc::new(standing::Filter::new(filter));
                                self.standing.set(
                                    session,
                                    index,
                                    publication,
                                    &plugin,
                                    standing::Rule::Filter(Arc::clone(&filter)),
                                );
                                match filter.apply(current_message) {
                                    standing::Applied::Pass => continue,
                                    standing::Applied::Changed(body) => Ok(body),
                                    standing::Applied::Drop(why) => {
                                        Counters::count(&plugin.counters.denies);
                                        return DataVerdict::Deny(format!(
                                            "plugin {}: {why}",
                                            plugin.shared.name
                                        ));
                                    }
                                }
                            }
                            types::DataVerdict::FilterAlways(_) => {
                                Err("filter-always, which is for publications, for a reply"
                                    .to_owned())
                            }
                        },
                        Asked::Skip => continue,
                        Asked::Fail => {
                            Counters::count(&plugin.counters.denies);
                            return DataVerdict::Deny(format!(
                                "plugin {} failed",
                                plugin.shared.name
                            ));
                        }
                    }
                }
            };
            let body = match changed {
                Ok(body) => body,
                Err(what) => {
                    Counters::count(&plugin.counters.denies);
                    tracing::warn!(
                        plugin = &*plugin.shared.name,
                        version = plugin.shared.version,
                        event,
                        "plugin returned {what}; denied"
                    );
                    return DataVerdict::Deny(format!(
                        "plugin {} returned {what}",
                        plugin.shared.name
                    ));
                }
            };
            current = Current::Changed(body, None);
        }
        match current {
            Current::Original(_) => DataVerdict::Pass,
            Current::Changed(body, _) => DataVerdict::Replace(body),
        }
    }

    /// Calls `plugin`'s `on-response` (with `request`) or `on-publication` for `message`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one data event, lent for the call"
    )]
    fn ask_data(
        &self,
        plugin: &Plugin,
        session: &Session,
        wit_session: &types::Session,
        request: Option<&Request>,
        request_summary: Option<&types::Summary>,
        message: &Request,
        facts: &FactsCell,
        event: &str,
    ) -> Asked {
        let summary = data::summary(message);
        // Made for this call alone: a plugin before may have changed the message.
        let made = Made::default();
        let lent = match request {
            Some(request) => Lent {
                session,
                made: &made,
                request,
                facts,
                reply: Some(message),
            },
            None => Lent::request(session, &made, message, facts),
        };
        let result = plugin.call(Some(lent), |instance| {
            let first = next_message(instance.store.data_mut());
            let verdict = match request_summary {
                Some(request_summary) => {
                    let reply = next_reply(instance.store.data_mut());
                    instance.bindings.call_on_response(
                        &mut instance.store,
                        wit_session,
                        request_summary,
                        first,
                        &summary,
                        reply,
                    )
                }
                None => instance.bindings.call_on_publication(
                    &mut instance.store,
                    wit_session,
                    &summary,
                    first,
                ),
            };
            let state = instance.store.data_mut();
            state.message_rep = 0;
            state.reply_rep = 0;
            verdict
        });
        match result {
            Ok(verdict) => Asked::Verdict(verdict),
            Err(failure) if failed(plugin, event, &failure) => Asked::Skip,
            Err(_) => Asked::Fail,
        }
    }

    /// The shadow worker, when `chain` has shadow plugins.
    fn shadows(&self, chain: &Chain) -> Option<&shadow::Shadows> {
        if chain.shadows.is_empty() {
            return None;
        }
        self.shadows.get()
    }
}

impl Chain {
    fn new(slots: Vec<Arc<Slot>>) -> Self {
        let shadows = slots
            .iter()
            .filter(|slot| slot.spec.shadow)
            .cloned()
            .collect();
        Self { slots, shadows }
    }

    /// Whether any plugin takes outcomes.
    fn takes_outcome(&self) -> bool {
        self.live().any(|slot| slot.takes.outcome())
    }

    /// The live plugins, in chain order: every plugin but the shadow ones.
    fn live(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.iter().filter(|slot| !slot.spec.shadow)
    }

    /// Tells the plugins that take `outcome` what the chain decided, with the message of a sync or
    /// async event lent again (its facts as the chain left them); their failures are logged.
    fn tell_outcome(
        &self,
        wit_session: &types::Session,
        message: Option<(&types::Summary, Lent<'_>)>,
        outcome: types::Outcome,
    ) {
        for slot in self.live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::OUTCOME) {
                continue;
            }
            let result = plugin.call(message.map(|(_, lent)| lent), |instance| {
                let lent_message = message.map(|_| next_message(instance.store.data_mut()));
                let result = instance.bindings.call_on_outcome(
                    &mut instance.store,
                    wit_session,
                    message.map(|(summary, _)| summary),
                    lent_message,
                    &outcome,
                );
                instance.store.data_mut().message_rep = 0;
                result
            });
            if let Err(failure) = result {
                failed(&plugin, "outcome", &failure);
            }
        }
    }
}

/// Asks `plugin` about a sync or async message lent as `lent`.
/// A message verdict, and whether the plugin asked for it to stand for the message's function
/// (`same-for-head`).
pub(crate) fn ask_message(
    plugin: &Plugin,
    lent: Lent<'_>,
    sync: bool,
) -> Result<(types::Verdict, bool), Failure> {
    plugin.call(Some(lent), |instance| {
        let message = next_message(instance.store.data_mut());
        instance.store.data_mut().same_for_head = false;
        let verdict = if sync {
            instance.bindings.call_on_sync(&mut instance.store, message)
        } else {
            instance
                .bindings
                .call_on_async(&mut instance.store, message)
        };
        let state = instance.store.data_mut();
        state.message_rep = 0;
        Ok((verdict?, std::mem::take(&mut state.same_for_head)))
    })
}

/// `record` with the plugin that decided, and its version.
fn with_decider(mut record: DecisionRecord, plugin: Option<&Arc<PluginShared>>) -> DecisionRecord {
    if let Some(plugin) = plugin {
        record.decided_by = Some(plugin.name.clone());
        record.version = Some(Arc::from(plugin.version.as_str()));
    }
    record
}

/// The WIT outcome of an event decided in `latency`.
fn outcome(
    event: types::EventKind,
    decision: types::Decision,
    reason: Option<String>,
    decided_by: Option<&Arc<PluginShared>>,
    latency: Duration,
) -> types::Outcome {
    types::Outcome {
        event,
        decision,
        reason,
        decided_by: decided_by.map(|plugin| plugin.name.to_string()),
        latency_ns: u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A guest's reply, checked as a received message is (one well-formed little-endian value, read
/// in place without allocating) and kept as the bytes it is: the server frames them, so a reply
/// is never decoded and encoded again.
fn reply(plugin: &Plugin, bytes: Vec<u8>) -> Verdict {
    match Body::new(bytes) {
        Ok(body) => Verdict::Reply(body),
        Err(error) => {
            Counters::count(&plugin.counters.denies);
            tracing::warn!(
                plugin = &*plugin.shared.name,
                version = plugin.shared.version,
                %error,
                "plugin returned a malformed reply"
            );
            Verdict::Deny(format!(
                "plugin {} returned a malformed reply",
                plugin.shared.name
            ))
        }
    }
}

/// How many copies of a message a plugin call may hold beside the server's own, at most: the
/// message lowered into the guest, the reply the guest builds, and that reply's bytes lifted
/// back into the host, which the server frames ([`Hooks::deciding_bytes`]).
const DECIDING_COPIES: usize = 3;

impl Hooks for PluginHost {
    /// A plugin call holds copies of the message in its instance's memory (at most the plugin's
    /// `memory_limit`) and the reply's bytes in the host; the calls of a chain run one after the
    /// other, so the largest of them is what the chain holds at once.
    fn deciding_bytes(&self, request: &Request) -> usize {
        let event = match request.message_type() {
            qgate_ipc::MessageType::Sync => types::Events::SYNC,
            qgate_ipc::MessageType::Async => types::Events::ASYNC_MESSAGE,
            qgate_ipc::MessageType::Response => return 0,
        };
        let len = request.body().len();
        self.chain
            .load()
            .live()
            .map(|slot| slot.current.load())
            .filter(|plugin| plugin.events.contains(event))
            .map(|plugin| {
                let guest = len.saturating_mul(DECIDING_COPIES - 1);
                guest.min(plugin.memory_limit()).saturating_add(len)
            })
            .max()
            .unwrap_or(0)
    }

    async fn on_auth(&self, session: &Session, credentials: &Credentials) -> AuthVerdict {
        let started = Instant::now();
        let chain = self.chain.load();
        let mut wit_session = state::session(session);
        let (verdict, decided_by) = Self::decide_auth(&chain, &mut wit_session, credentials);
        let decision = match verdict {
            AuthVerdict::Allow(_) => DecisionKind::Allowed,
            AuthVerdict::Deny => DecisionKind::Denied,
            AuthVerdict::Pass => DecisionKind::Passed,
        };
        if let Some(sink) = &self.decisions {
            // The password is never recorded.
            let mut record = DecisionRecord::new(session.clone(), DecisionEvent::Auth, decision);
            record.latency = started.elapsed();
            sink.record(with_decider(record, decided_by.as_ref()));
        }
        if let Some(shadows) = self.shadows(&chain) {
            shadows.submit(
                &chain.shadows,
                session,
                shadow::Asked::Auth(credentials),
                decision,
            );
        }
        if chain.takes_outcome() {
            let decision = match verdict {
                AuthVerdict::Allow(_) => types::Decision::Allowed,
                AuthVerdict::Deny => types::Decision::Denied,
                AuthVerdict::Pass => types::Decision::Passed,
            };
            chain.tell_outcome(
                &wit_session,
                None,
                outcome(
                    types::EventKind::Auth,
                    decision,
                    None,
                    decided_by.as_ref(),
                    started.elapsed(),
                ),
            );
        }
        verdict
    }

    async fn on_open(&self, session: &Session) -> OpenVerdict {
        let started = Instant::now();
        let chain = self.chain.load();
        let wit_session = state::session(session);
        let (verdict, decided_by) = Self::decide_open(&chain, &wit_session);
        if let Some(sink) = &self.decisions {
            let (decision, reason) = match &verdict {
                OpenVerdict::Keep => (DecisionKind::Passed, None),
                OpenVerdict::Close(why) => (DecisionKind::Denied, Some(why.clone())),
            };
            let mut record = DecisionRecord::new(session.clone(), DecisionEvent::Open, decision);
            record.reason = reason;
            record.latency = started.elapsed();
            sink.record(with_decider(record, decided_by.as_ref()));
        }
        if chain.takes_outcome() {
            let (decision, reason) = match &verdict {
                OpenVerdict::Keep => (types::Decision::Passed, None),
                OpenVerdict::Close(why) => (types::Decision::Denied, Some(why.clone())),
            };
            chain.tell_outcome(
                &wit_session,
                None,
                outcome(
                    types::EventKind::Open,
                    decision,
                    reason,
                    decided_by.as_ref(),
                    started.elapsed(),
                ),
            );
        }
        verdict
    }

    async fn on_sync(&self, session: &Session, request: &Request) -> Verdict {
        self.message_chain(session, request, true)
    }

    async fn on_async(&self, session: &Session, request: &Request) -> Verdict {
        self.message_chain(session, request, false)
    }

    fn outbound(&self, session: &Session) -> Outbound {
        let mut outbound = Outbound::default();
        let chain = self.chain.load();
        for (index, slot) in chain
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.spec.shadow)
        {
            let plugin = slot.current.load_full();
            // A plugin that said `pass-always` on this connection no longer looks.
            let looks = |flag, publication| {
                plugin.events.contains(flag)
                    && !matches!(
                        self.standing.get(session, index, publication, &plugin),
                        Some(standing::Rule::Pass)
                    )
            };
            outbound.responses |= looks(types::Events::RESPONSE, false);
            outbound.publications |= looks(types::Events::PUBLICATION, true);
        }
        outbound
    }

    async fn on_response(
        &self,
        session: &Session,
        request: &Request,
        response: &Request,
    ) -> DataVerdict {
        self.data_chain(session, Some(request), response)
    }

    async fn on_publication(&self, session: &Session, message: &Request) -> DataVerdict {
        self.data_chain(session, None, message)
    }

    async fn on_close(&self, session: &Session, reason: &CloseReason) {
        self.standing.forget(session.handle);
        let wit_session = state::session(session);
        let reason = reason.to_string();
        for slot in self.chain.load().live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::CLOSE) {
                continue;
            }
            let result = plugin.call(None, |instance| {
                instance
                    .bindings
                    .call_on_close(&mut instance.store, &wit_session, &reason)
            });
            if let Err(failure) = result {
                failed(&plugin, "close", &failure);
            }
        }
    }

    async fn on_http(&self, session: &Session, request: &HttpRequest) -> HttpVerdict {
        let chain = self.chain.load();
        let started = self.decisions.is_some().then(Instant::now);
        let text = state::HttpText::default();
        let (verdict, decided_by) = Self::decide_http(&chain, session, request, &text);
        if let Some(sink) = &self.decisions {
            let (decision, reason) = match &verdict {
                HttpVerdict::Pass => (DecisionKind::Passed, None),
                HttpVerdict::Respond(_) => (DecisionKind::Replied, None),
                HttpVerdict::Deny { text, .. } => (DecisionKind::Denied, Some(text.clone())),
                HttpVerdict::Route(upstream) => (DecisionKind::Routed, Some(upstream.clone())),
                _ => (DecisionKind::Denied, None),
            };
            let mut record = DecisionRecord::new(session.clone(), DecisionEvent::Http, decision);
            record.head = Some(Arc::from(format!("{} {}", request.method, request.path)));
            if sink.include_text() {
                record.text = text
                    .text_cut(request, MAX_SUMMARY_TEXT_BYTES)
                    .map(Arc::from);
            }
            record.size = request.body.len() as u64;
            record.reason = reason;
            record.latency = started.map(|started| started.elapsed()).unwrap_or_default();
            sink.record(with_decider(record, decided_by.as_ref()));
        }
        verdict
    }

    async fn on_ws_open(&self, session: &Session, request: &HttpRequest) -> WsOpenVerdict {
        let wit_session = OnceCell::new();
        let head = OnceCell::new();
        for slot in self.chain.load().live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::WS_OPEN) {
                continue;
            }
            let wit_session = wit_session.get_or_init(|| state::session(session));
            let head = head.get_or_init(|| http_head(request));
            let result = plugin.call(None, |instance| {
                instance
                    .bindings
                    .call_on_ws_open(&mut instance.store, wit_session, head)
            });
            match result {
                Ok(types::WsOpenVerdict::Accept) => {}
                Ok(types::WsOpenVerdict::Deny(deny)) => {
                    Counters::count(&plugin.counters.denies);
                    return WsOpenVerdict::Deny {
                        status: deny.status,
                        text: deny.text,
                    };
                }
                Err(failure) if failed(&plugin, "ws-open", &failure) => {}
                Err(_) => {
                    Counters::count(&plugin.counters.denies);
                    return WsOpenVerdict::Deny {
                        status: 500,
                        text: format!("qgate: plugin {} failed", plugin.shared.name),
                    };
                }
            }
        }
        WsOpenVerdict::Accept
    }

    async fn on_ws_message(&self, session: &Session, message: &WsMessage) -> WsVerdict {
        let chain = self.chain.load();
        let started = self.decisions.is_some().then(Instant::now);
        let (verdict, decided_by) = Self::decide_ws_message(&chain, session, message);
        if let Some(sink) = &self.decisions {
            let (decision, reason) = match &verdict {
                WsVerdict::Pass => (DecisionKind::Passed, None),
                WsVerdict::Reply(_) => (DecisionKind::Replied, None),
                WsVerdict::Deny(text) => (DecisionKind::Denied, Some(text.clone())),
                WsVerdict::Close { reason, .. } => (DecisionKind::Denied, Some(reason.clone())),
                _ => (DecisionKind::Denied, None),
            };
            let mut record =
                DecisionRecord::new(session.clone(), DecisionEvent::WsMessage, decision);
            if sink.include_text() && message.text {
                let text = String::from_utf8_lossy(&message.data);
                let mut end = text.len().min(MAX_SUMMARY_TEXT_BYTES);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                record.text = Some(Arc::from(&text[..end]));
            }
            record.size = message.data.len() as u64;
            record.reason = reason;
            record.latency = started.map(|started| started.elapsed()).unwrap_or_default();
            sink.record(with_decider(record, decided_by.as_ref()));
        }
        verdict
    }

    async fn on_ws_close(&self, session: &Session, reason: &str) {
        let wit_session = OnceCell::new();
        for slot in self.chain.load().live() {
            let plugin = slot.current.load();
            if !plugin.events.contains(types::Events::WS_CLOSE) {
                continue;
            }
            let wit_session = wit_session.get_or_init(|| state::session(session));
            let result = plugin.call(None, |instance| {
                instance
                    .bindings
                    .call_on_ws_close(&mut instance.store, wit_session, reason)
            });
            if let Err(failure) = result {
                failed(&plugin, "ws-close", &failure);
            }
        }
    }
}

/// The WIT head of an HTTP request.
fn http_head(request: &HttpRequest) -> types::HttpHead {
    types::HttpHead {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request
            .headers
            .iter()
            .map(|(name, value)| types::HttpHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body_size: request.body.len() as u64,
    }
}

/// The next rep for a lent HTTP request in `state`: never 0, which means none.
fn next_http(state: &mut HostState) -> Resource<state::HttpRequestRef> {
    state.http_rep = state.http_rep.wrapping_add(1).max(1);
    Resource::new_borrow(state.http_rep)
}
