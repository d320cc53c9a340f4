//! One loaded plugin version: its compiled code, the pool of instances that all connections
//! share, and what happens when a call into it fails.
//!
//! A call checks out an idle instance (or makes one), runs on it within its deadline, and puts it
//! back. A call that fails (a trap, its deadline, the memory cap) throws its instance away, since
//! its memory may be half-way through anything, and makes a new one in its place before it
//! returns: one client's poison message costs that client a re-initialisation, and the next
//! call, whoever makes it, finds an instance ready. Only making instances backs off: a plugin
//! whose instances cannot be made (its `init` fails or traps) is tried again after a wait that
//! doubles from [`MIN_BACKOFF`] to [`MAX_BACKOFF`], and meanwhile a call that finds no idle
//! instance gets the plugin's failure policy without running it.
//!
//! Instances are not per connection. A call checks one out, runs, and returns it; a new one is made
//! from the `InstancePre` (about 7 us with pooling, plus its `init`) only when every existing one
//! is busy, at most [`crate::MAX_INSTANCES_PER_VERSION`]. Since a call is synchronous CPU work on
//! the thread that runs it, a pool never holds more instances than threads that call into the
//! plugin at once, whatever the number of connections: 10 000 idle connections cost the host
//! nothing. Per-connection state is the plugin's business, kept in its instance's memory keyed by
//! `session.handle` only if losing it on a trap or a swap is acceptable, otherwise in kv. `init`
//! runs in every new instance (instances are interchangeable); the first one at load decides
//! whether the plugin loads.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use qgate_metrics::PluginMetrics;
use wasmtime::{
    Engine, Store, Trap,
    component::{Component, Linker},
};

use crate::{
    bindings,
    engine::MAX_INSTANCES_PER_VERSION,
    lock::Digest,
    offload,
    state::{self, HostState, Lent, PluginShared},
    store::{self, KEEP_INSTANCE_MEMORY_BYTES, StoreBuilder},
    swap::Version,
};

/// The budget for instantiating a plugin and running its `init`, when its per-call budget is
/// smaller.
///
/// `init` parses the plugin's config and may build tables from it, once per instance and off the
/// hot path of a message (except when an instance is replaced after a failed call), so it gets
/// more room than a call.
pub const MIN_INIT_BUDGET: Duration = Duration::from_secs(1);

/// The first wait before the plugin is instantiated again, once making an instance has failed
/// twice in a row.
///
/// One failure may be a passing one (an `init` cut at its deadline on a machine that stalled):
/// the next call tries again at once. From the second failure in a row the wait doubles each
/// time, from 10 ms up to [`MAX_BACKOFF`], so that a plugin whose `init` always fails does not
/// run it for every call; while it lasts, calls that find no idle instance get the plugin's
/// failure policy without running it. A failed call does not start a backoff: its instance is
/// replaced at once, so that one client's poison message never denies another client's call.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The longest wait between two attempts to instantiate a plugin whose instances cannot be made:
/// such a plugin costs at most one `init` every 5 s, and recovers within 5 s of being fixed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Imports whose `wasmtime-wasi` implementations block on a tokio runtime (`in_tokio`), which
/// panics when called from an async worker thread: a plugin that imports any of them is called
/// outside the async context (see [`offload::run_outside_async`]), at about 10 us a call.
///
/// `wasi:io`, which every Rust guest imports, is not among them: its waiting functions are linked
/// in versions that never wait (`wasi.rs`). No plugin is granted files or sockets, so these are
/// imported only by plugins that try to use them and are refused.
const BLOCKING_IMPORTS: &[&str] = &["wasi:sockets/", "wasi:filesystem/"];

/// How a call into a plugin failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The plugin's instances cannot be made, and it is waiting out its backoff.
    Backoff,
    /// All [`MAX_INSTANCES_PER_VERSION`] instances are busy.
    Busy,
    /// The call used its budget of CPU time, or reached its wall-clock ceiling.
    Timeout,
    /// The call trapped (the memory cap included), or a new instance could not be made.
    Trap(wasmtime::Error),
}

impl Failure {
    /// The failure that `error`, from a call or from making an instance, is.
    fn of(error: wasmtime::Error) -> Self {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Self::Timeout,
            _ => Self::Trap(error),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backoff => f.write_str(
                "cannot be instantiated after repeated failures; waiting before trying again",
            ),
            Self::Busy => write!(f, "all {MAX_INSTANCES_PER_VERSION} instances are busy"),
            Self::Timeout => {
                f.write_str("ran past its time budget (of CPU time, or its wall-clock ceiling)")
            }
            // The alternate form: the cause chain, wasm backtrace included. `Debug` would also
            // resolve the native backtrace that `RUST_BACKTRACE=1` makes every error capture,
            // which loads the binary's debug info (measured: 200 MB resident, kept) on the first
            // trap.
            Self::Trap(e) => write!(f, "trapped: {e:#}"),
        }
    }
}

/// A live instance with its store, checked out for one call at a time.
pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: bindings::Plugin,
}

/// How making instances of a plugin has been going, for the backoff.
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    retry_at: Option<Instant>,
}

impl Health {
    /// Whether a new instance must wait.
    fn waiting(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() < at)
    }

    fn failed(&mut self) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.retry_at = backoff(self.consecutive_failures).map(|wait| Instant::now() + wait);
    }

    fn recovered(&mut self) {
        if self.consecutive_failures != 0 {
            *self = Self::default();
        }
    }
}

/// What a version has done since it was loaded, for `qgate plugins`.
///
/// Relaxed atomics: each is a tally read now and then, never used to order anything.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Calls into the version, failed ones included.
    pub(crate) calls: AtomicU64,
    /// Denies it decided: auth denies, message denies, and fail-closed failures.
    pub(crate) denies: AtomicU64,
    /// Calls that trapped or ran past their budget, and instances that could not be made.
    pub(crate) traps: AtomicU64,
}

impl Counters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One loaded version of a plugin.
pub(crate) struct Plugin {
    pub(crate) shared: Arc<PluginShared>,
    /// The version's identity: the sha256 of the file it was compiled from (and of the files its
    /// config names).
    pub(crate) digest: Digest,
    /// The component's digest and the config, kept for a rollback.
    pub(crate) version: Version,
    /// Its compiled code, kept so that a rollback can load it again without the file.
    pub(crate) component: Component,
    /// When it was switched in, and how long reading, compiling and `init` took.
    pub(crate) loaded_at: SystemTime,
    pub(crate) load_time: Duration,
    pub(crate) counters: Counters,
    /// This version's calls, by result, and their durations.
    metrics: PluginMetrics,
    pub(crate) fail_open: bool,
    pub(crate) events: bindings::types::Events,
    time_budget: Duration,
    stores: StoreBuilder,
    /// The plugin's table as JSON text, given to `init`.
    config_json: String,
    pre: bindings::PluginPre<HostState>,
    /// Whether calls must leave the async context (see [`BLOCKING_IMPORTS`]).
    needs_blocking: bool,
    /// Idle instances, most recently used last. A `std` mutex: held for a push or a pop.
    idle: Mutex<Vec<Instance>>,
    /// Instances alive, idle or checked out, and those being made.
    live: AtomicU32,
    /// A `std` mutex: held to read or update two fields, never across a call.
    health: Mutex<Health>,
}

/// Whether this call is one of the [`qgate_metrics::PLUGIN_SAMPLE`] this thread times: a count
/// of its own per thread, so that deciding costs no shared write.
fn timed() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % qgate_metrics::PLUGIN_SAMPLE == 1
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is one push, pop or assignment: a panic cannot leave the data
    // half-updated, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`Plugin::load`] needs besides the compiled component.
pub(crate) struct LoadOptions {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) version: Version,
    /// When reading the file began, for the load time.
    pub(crate) started: Instant,
    pub(crate) fail_open: bool,
    pub(crate) time_budget: Duration,
    pub(crate) memory_limit: usize,
    pub(crate) metrics: PluginMetrics,
}

impl Plugin {
    /// Prepares `component`, makes its first instance (running `init`) and asks it which events
    /// it takes.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<HostState>,
        component: &Component,
        options: LoadOptions,
    ) -> wasmtime::Result<Self> {
        let needs_blocking = component.component_type().imports(engine).any(|(name, _)| {
            BLOCKING_IMPORTS
                .iter()
                .any(|prefix| name.starts_with(prefix))
        });
        let pre = bindings::PluginPre::new(linker.instantiate_pre(component)?)?;
        let mut plugin = Self {
            shared: options.shared,
            digest: options.version.digest,
            config_json: serde_json::Value::Object((*options.version.config).clone()).to_string(),
            version: options.version,
            component: component.clone(),
            loaded_at: SystemTime::now(),
            load_time: Duration::ZERO,
            counters: Counters::default(),
            metrics: options.metrics,
            fail_open: options.fail_open,
            events: bindings::types::Events::empty(),
            time_budget: options.time_budget,
            stores: StoreBuilder::new(options.memory_limit),
            pre,
            needs_blocking,
            idle: Mutex::new(Vec::new()),
            live: AtomicU32::new(0),
            health: Mutex::new(Health::default()),
        };
        let (instance, events) = offload::run_outside_async(needs_blocking, || {
            let mut instance = plugin.instantiate()?;
            store::set_deadline(&mut instance.store, plugin.time_budget);
            let events = offload::contain(|| instance.bindings.call_events(&mut instance.store))?;
            wasmtime::Result::<_>::Ok((instance, events))
        })?;
        plugin.events = events;
        plugin.live.store(1, Ordering::Relaxed);
        lock(&plugin.idle).push(instance);
        plugin.load_time = options.started.elapsed();
        plugin.loaded_at = SystemTime::now();
        Ok(plugin)
    }

    /// The memory cap of one instance.
    pub(crate) fn memory_limit(&self) -> usize {
        self.stores.memory_limit()
    }

    /// A new instance, `init` run.
    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let mut store = self.stores.build(self.pre.engine(), self.shared.clone());
        store::set_deadline(&mut store, self.time_budget.max(MIN_INIT_BUDGET));
        let bindings = offload::contain(|| self.pre.instantiate(&mut store))?;
        offload::contain(|| bindings.call_init(&mut store, &self.config_json))?
            .map_err(|why| wasmtime::format_err!("init refused the plugin: {why}"))?;
        Ok(Instance { store, bindings })
    }

    /// Runs `f` on an instance within the plugin's time budget, with `lent` lent to the
    /// `message` resource for the length of the call. A failed instance is thrown away and
    /// replaced.
    pub(crate) fn call<R: Send>(
        &self,
        lent: Option<Lent<'_>>,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R> + Send,
    ) -> Result<R, Failure> {
        Counters::count(&self.counters.calls);
        let started = timed().then(Instant::now);
        let result = offload::run_outside_async(self.needs_blocking, || match lent {
            Some(lent) => state::with_request(lent, || self.call_inner(f)),
            None => self.call_inner(f),
        });
        self.metrics
            .call(result.is_ok(), started.map(|started| started.elapsed()));
        result
    }

    fn call_inner<R>(
        &self,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let mut instance = self.checkout()?;
        store::set_deadline(&mut instance.store, self.time_budget);
        match offload::contain(|| f(&mut instance)) {
            Ok(value) => {
                if instance.store.data().limits.memory_bytes() > KEEP_INSTANCE_MEMORY_BYTES {
                    // Its memory never shrinks: dropped, it gives the pages back.
                    drop(instance);
                    self.live.fetch_sub(1, Ordering::Relaxed);
                } else {
                    lock(&self.idle).push(instance);
                }
                Ok(value)
            }
            Err(error) => {
                // The instance's memory may be half-way through anything: it is not reused.
                drop(instance);
                let failure = self.lost(error);
                self.replace();
                Err(failure)
            }
        }
    }

    /// An idle instance, or a new one.
    fn checkout(&self) -> Result<Instance, Failure> {
        if let Some(instance) = lock(&self.idle).pop() {
            return Ok(instance);
        }
        self.grow()
    }

    /// A new instance, unless making one is backing off or the plugin is at its instance limit.
    fn grow(&self) -> Result<Instance, Failure> {
        if lock(&self.health).waiting() {
            return Err(Failure::Backoff);
        }
        if self.live.fetch_add(1, Ordering::Relaxed) >= MAX_INSTANCES_PER_VERSION {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(Failure::Busy);
        }
        match self.instantiate() {
            Ok(instance) => {
                lock(&self.health).recovered();
                Ok(instance)
            }
            Err(error) => {
                lock(&self.health).failed();
                Err(self.lost(error))
            }
        }
    }

    /// Makes a new idle instance in place of one that a failed call threw away, so that the next
    /// call finds one ready: the client whose call failed pays for it, not the next one.
    fn replace(&self) {
        match self.grow() {
            Ok(instance) => lock(&self.idle).push(instance),
            // At the limit, the pool has enough instances; in backoff, there is nothing to do.
            Err(Failure::Busy | Failure::Backoff) => {}
            Err(failure) => tracing::warn!(
                plugin = &*self.shared.name,
                version = self.shared.version,
                %failure,
                "plugin cannot be instantiated again after a failed call"
            ),
        }
    }

    /// Gives up the place in the pool of an instance that failed or could not be made, and
    /// counts it.
    fn lost(&self, error: wasmtime::Error) -> Failure {
        self.live.fetch_sub(1, Ordering::Relaxed);
        Counters::count(&self.counters.traps);
        Failure::of(error)
    }
}

/// The wait before instantiating again after `failures` failures in a row.
fn backoff(failures: u32) -> Option<Duration> {
    let doublings = failures.checked_sub(2)?;
    Some(
        MIN_BACKOFF
            .checked_mul(1 << doublings.min(20))
            .map_or(MAX_BACKOFF, |wait| wait.min(MAX_BACKOFF)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_the_second_failure_and_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), None);
        assert_eq!(backoff(1), None);
        assert_eq!(backoff(2), Some(MIN_BACKOFF));
        assert_eq!(backoff(3), Some(MIN_BACKOFF * 2));
        assert_eq!(backoff(12), Some(MAX_BACKOFF));
        assert_eq!(backoff(u32::MAX), Some(MAX_BACKOFF));
    }
}
