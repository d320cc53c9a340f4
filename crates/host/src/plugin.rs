//! One loaded plugin: its compiled version, the pool of instances that all connections share,
//! and what happens when a call into it fails.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use qgate_hooks::Request;
use wasmtime::{
    Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline,
    component::{Component, Linker},
};

use crate::{
    bindings,
    engine::{self, MAX_INSTANCES_PER_VERSION},
    lock::Digest,
    state::{self, HostState, PluginShared},
};

/// The budget for instantiating a plugin and running its `init`, when its per-call budget is
/// smaller.
///
/// `init` parses the plugin's config and may build tables from it, once per instance and off the
/// hot path of a message (except when an instance is replaced after a trap), so it gets more
/// room than a call.
pub const MIN_INIT_BUDGET: Duration = Duration::from_secs(1);

/// The first wait before a plugin that failed twice in a row is instantiated again.
///
/// One failure may be one bad input: the next call gets a fresh instance at once. From the
/// second failure in a row the wait doubles each time, from 10 ms up to [`MAX_BACKOFF`]; while it
/// lasts, calls that find no idle instance get the plugin's failure policy without running it.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The longest wait between two attempts to instantiate a failing plugin: a plugin that traps on
/// every call costs at most one instantiation every 5 s, and recovers within 5 s of being fixed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Imports whose `wasmtime-wasi` implementations block on a tokio runtime (`in_tokio`), which
/// panics when called from an async worker thread: a plugin that imports any of them is called
/// outside the async context (see [`run_outside_async`]), at about 10 us a call.
///
/// `wasi:io`, which every Rust guest imports, is not among them: its waiting functions are linked
/// in versions that never wait (`wasi.rs`). No plugin is granted files or sockets, so these are
/// imported only by plugins that try to use them and are refused.
const BLOCKING_IMPORTS: &[&str] = &["wasi:sockets/", "wasi:filesystem/"];

/// How a call into a plugin failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The plugin is waiting out its backoff after failing repeatedly.
    Backoff,
    /// All [`MAX_INSTANCES_PER_VERSION`] instances are busy.
    Busy,
    /// The call ran past its time budget.
    Timeout,
    /// The call trapped (the memory cap included), or a new instance could not be made.
    Trap(wasmtime::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backoff => {
                f.write_str("waiting to be instantiated again after repeated failures")
            }
            Self::Busy => write!(f, "all {MAX_INSTANCES_PER_VERSION} instances are busy"),
            Self::Timeout => f.write_str("ran past its time budget"),
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

/// How a plugin has been doing, for the backoff.
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    retry_at: Option<Instant>,
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
    /// Calls that trapped or ran past their budget.
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
    /// The sha256 of the file it was compiled from.
    pub(crate) digest: Digest,
    /// Its compiled code, kept so that a rollback can load it again without the file.
    pub(crate) component: Component,
    /// When it was switched in, and how long reading, compiling and `init` took.
    pub(crate) loaded_at: SystemTime,
    pub(crate) load_time: Duration,
    pub(crate) counters: Counters,
    pub(crate) fail_open: bool,
    pub(crate) events: bindings::types::Events,
    time_budget: Duration,
    memory_limit: usize,
    /// The plugin's table as JSON text, given to `init`.
    config_json: String,
    pre: bindings::PluginPre<HostState>,
    /// Whether calls must leave the async context (see [`BLOCKING_IMPORTS`]).
    needs_blocking: bool,
    /// Idle instances, most recently used last. A `std` mutex: held for a push or a pop.
    idle: Mutex<Vec<Instance>>,
    /// Instances alive, idle or checked out.
    live: AtomicU32,
    health: Mutex<Health>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is one push, pop or assignment: a panic cannot leave the data
    // half-updated, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`Plugin::load`] needs besides the compiled component.
pub(crate) struct LoadOptions {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) digest: Digest,
    /// When reading the file began, for the load time.
    pub(crate) started: Instant,
    pub(crate) config_json: String,
    pub(crate) fail_open: bool,
    pub(crate) time_budget: Duration,
    pub(crate) memory_limit: usize,
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
            digest: options.digest,
            component: component.clone(),
            loaded_at: SystemTime::now(),
            load_time: Duration::ZERO,
            counters: Counters::default(),
            fail_open: options.fail_open,
            events: bindings::types::Events::empty(),
            time_budget: options.time_budget,
            memory_limit: options.memory_limit,
            config_json: options.config_json,
            pre,
            needs_blocking,
            idle: Mutex::new(Vec::new()),
            live: AtomicU32::new(0),
            health: Mutex::new(Health::default()),
        };
        let mut instance = run_outside_async(needs_blocking, || plugin.instantiate())?;
        arm(&mut instance.store, plugin.time_budget);
        plugin.events = run_outside_async(needs_blocking, || {
            instance.bindings.call_events(&mut instance.store)
        })?;
        plugin.live.store(1, Ordering::Relaxed);
        lock(&plugin.idle).push(instance);
        plugin.load_time = options.started.elapsed();
        plugin.loaded_at = SystemTime::now();
        Ok(plugin)
    }

    /// The memory cap of one instance.
    pub(crate) fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// A new instance, `init` run.
    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_limit)
            // A guest that grows past its cap traps with a message naming the cap, instead of
            // seeing `memory.grow` fail and aborting with a less helpful one.
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), limits),
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut store| Ok(on_epoch(store.data_mut())));
        arm(&mut store, self.time_budget.max(MIN_INIT_BUDGET));
        let bindings = contain(|| self.pre.instantiate(&mut store))?;
        contain(|| bindings.call_init(&mut store, &self.config_json))?
            .map_err(|why| wasmtime::format_err!("init refused the plugin: {why}"))?;
        Ok(Instance { store, bindings })
    }

    /// Runs `f` on an instance within the plugin's time budget, with `request` lent to the
    /// `message` resource for the length of the call. A trapped instance is thrown away.
    pub(crate) fn call<R: Send>(
        &self,
        request: Option<&Request>,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R> + Send,
    ) -> Result<R, Failure> {
        Counters::count(&self.counters.calls);
        run_outside_async(self.needs_blocking, || match request {
            Some(request) => state::with_request(request, || self.call_inner(f)),
            None => self.call_inner(f),
        })
    }

    fn call_inner<R>(
        &self,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let mut instance = self.checkout()?;
        arm(&mut instance.store, self.time_budget);
        match contain(|| f(&mut instance)) {
            Ok(value) => {
                lock(&self.idle).push(instance);
                let mut health = lock(&self.health);
                if health.consecutive_failures != 0 {
                    *health = Health::default();
                }
                Ok(value)
            }
            Err(error) => {
                // The instance's memory may be half-way through anything: it is not reused.
                drop(instance);
                self.live.fetch_sub(1, Ordering::Relaxed);
                self.record_failure();
                Counters::count(&self.counters.traps);
                match error.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => Err(Failure::Timeout),
                    _ => Err(Failure::Trap(error)),
                }
            }
        }
    }

    /// An idle instance, or a new one unless the plugin is in backoff or at its instance limit.
    fn checkout(&self) -> Result<Instance, Failure> {
        if let Some(instance) = lock(&self.idle).pop() {
            return Ok(instance);
        }
        if lock(&self.health)
            .retry_at
            .is_some_and(|at| Instant::now() < at)
        {
            return Err(Failure::Backoff);
        }
        if self.live.fetch_add(1, Ordering::Relaxed) >= MAX_INSTANCES_PER_VERSION {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(Failure::Busy);
        }
        self.instantiate().map_err(|error| {
            self.live.fetch_sub(1, Ordering::Relaxed);
            self.record_failure();
            Counters::count(&self.counters.traps);
            Failure::Trap(error)
        })
    }

    fn record_failure(&self) {
        let mut health = lock(&self.health);
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        health.retry_at = backoff(health.consecutive_failures).map(|wait| Instant::now() + wait);
    }
}

/// Starts the clock of a call with `budget`: the first epoch tick (within [`engine::EPOCH_TICK`]) runs
/// [`on_epoch`].
fn arm(store: &mut Store<HostState>, budget: Duration) {
    let state = store.data_mut();
    state.deadline = Instant::now() + budget;
    state.off_async = false;
    store.set_epoch_deadline(1);
}

/// What happens when a call into a guest is still running at an epoch tick: past its budget it
/// is interrupted (a trap); otherwise, the first time, it leaves the async worker it runs on, and
/// it runs on until its budget.
///
/// Calls run inline on the async worker that handles the connection: a call takes about a
/// microsecond, and handing the worker over for each (`block_in_place`) cost ten. A call still
/// running after a tick (at most 1 ms) is a slow one, which must not hold up the worker's other
/// connections: `block_in_place` then hands the worker's other tasks to another thread, and this
/// call finishes on this one ([`leave_async_worker`]).
fn on_epoch(state: &mut HostState) -> UpdateDeadline {
    let left = |state: &HostState| {
        state
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };
    let Some(mut budget) = left(state) else {
        return UpdateDeadline::Interrupt;
    };
    if !state.off_async {
        state.off_async = true;
        leave_async_worker(budget);
        // The wait counts against the call's budget.
        let Some(rest) = left(state) else {
            return UpdateDeadline::Interrupt;
        };
        budget = rest;
    }
    UpdateDeadline::Continue(engine::deadline_ticks(budget))
}

/// Hands the async worker this thread runs to another thread, for a call that has turned out
/// slow, and waits (at most `within`) until the runtime is seen running elsewhere.
///
/// `block_in_place` gives the worker's core to a thread of the blocking pool, and takes it back
/// when its closure returns if that thread has not taken it yet: on a busy machine the thread
/// can take longer to start than any fixed pause. So a marker task is spawned first (it goes on
/// this worker's queue) and the closure waits until some thread runs it: then the worker's
/// queue is being served elsewhere, by the new thread or by another worker stealing from it,
/// and a thread that is awake will poll the I/O driver. Without this, a worker stuck in a guest
/// can leave every connection's I/O unpolled while the other workers sleep.
///
/// Nothing happens outside a multi-thread runtime: a current-thread runtime is blocked by the
/// call whatever is done, and a thread outside any runtime blocks no one.
fn leave_async_worker(within: Duration) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if !matches!(
        handle.runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread
    ) {
        return;
    }
    let (ran, running_elsewhere) = std::sync::mpsc::channel();
    drop(handle.spawn(async move {
        let _ = ran.send(());
    }));
    tokio::task::block_in_place(|| {
        let _ = running_elsewhere.recv_timeout(within);
    });
}

/// Runs a call into a guest, turning a panic in a host function it called into an error, so that
/// the call fails (and its instance is thrown away) rather than the connection's task.
///
/// No host function of qgate's panics; this guards against one of `wasmtime-wasi`'s that is
/// reached some way not foreseen (one that blocks on tokio from an async worker panics).
fn contain<R>(f: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(wasmtime::format_err!("a host function panicked: {what}"))
    })
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

/// Runs `f`, a call into a guest, where `wasmtime-wasi`'s blocking imports may run when
/// `needs_blocking`.
///
/// Those imports block on tokio (`Handle::block_on`), which panics on a thread that is driving
/// async tasks. On a multi-thread runtime `block_in_place` hands the worker's other tasks to
/// another thread for the length of the call; on a current-thread runtime the call runs on a
/// scoped thread. A plugin without such imports, or a caller outside any runtime, runs inline.
fn run_outside_async<R: Send>(needs_blocking: bool, f: impl FnOnce() -> R + Send) -> R {
    if !needs_blocking {
        return f();
    }
    match tokio::runtime::Handle::try_current() {
        Err(_) => f(),
        Ok(handle)
            if matches!(
                handle.runtime_flavor(),
                tokio::runtime::RuntimeFlavor::MultiThread
            ) =>
        {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|scope| match scope.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
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
