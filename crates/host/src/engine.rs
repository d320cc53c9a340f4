//! The one wasmtime engine, configured once, and the thread that ticks its epoch.
//!
//! This is the only place a `wasmtime::Config` is built: the rest of the crate gets an engine
//! that is already narrowed to what qgate allows.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use wasmtime::{Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy};

/// How often the engine's epoch advances, the unit of every call's time budget.
///
/// A call is interrupted at the first epoch check after its deadline, so a budget is kept to
/// within one tick. Budgets are milliseconds to seconds; 1 ms keeps a 5 ms budget within 20 %,
/// and a thread that wakes 1000 times a second costs a few microseconds of CPU a second. The
/// checks in compiled code cost the same whatever the tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The most instances that each plugin version keeps alive at once.
///
/// Instances are shared by all connections and checked out for one call, so a version needs as
/// many as there are calls into it at the same moment: at most one per thread that runs guest
/// code. 64 is more threads than the machines qgate targets run; the pooling allocator reserves
/// this many slots for every plugin, twice (the old and the new version during a swap).
pub const MAX_INSTANCES_PER_VERSION: u32 = 64;

/// Core module instances (and tables) budgeted per component: a component built by `rustc` for
/// `wasm32-wasip2` has its own module plus a few small shim modules that `wit-component` adds;
/// 16 leaves room for components made by other toolchains.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// The engine qgate runs plugins on, sized for `plugins` plugins with at most
/// `max_memory_bytes` of linear memory each, caching compiled code in `cache_dir`.
pub(crate) fn engine(
    plugins: usize,
    max_memory_bytes: usize,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Plugin calls are synchronous: no async stores, no component-model concurrency, whose
        // bookkeeping adds about 0.3 us to every call.
        .concurrency_support(false)
        .epoch_interruption(true);

    let slots = u32::try_from(plugins.max(1))
        .unwrap_or(u32::MAX)
        .saturating_mul(2 * MAX_INSTANCES_PER_VERSION);
    let mut pooling = wasmtime::PoolingAllocationConfig::new();
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_memory_size(max_memory_bytes);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));

    if let Some(dir) = cache_dir {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    Engine::new(&config)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] on a thread of its own until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    /// Set on drop; the thread sees it within one tick and ends.
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("qgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a dedicated thread, not an async worker"
                    )]
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The number of epoch ticks to allow a call with `budget`: rounded up, plus one, because the
/// next tick may come at once.
pub(crate) fn deadline_ticks(budget: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    u64::try_from(budget.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
