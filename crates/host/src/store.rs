//! Building the store of one plugin instance, with its memory cap, and giving each call its
//! deadline: the only place a `wasmtime::Store` is made or armed, as Spin's `StoreBuilder` and
//! `Store::set_deadline` are.
//!
//! A call's time budget counts the CPU time of the thread that runs it
//! (`CLOCK_THREAD_CPUTIME_ID`), not the time on the wall: on a machine whose cores are all busy, a
//! call of a few microseconds can be preempted for tens of milliseconds, and a wall-clock budget
//! denied such calls as "past budget" although they had done nothing wrong. A guest that spins
//! uses CPU time, so it is still cut at its budget. What a CPU budget cannot see is a call that
//! holds its thread without running, so every call also has a wall-clock ceiling,
//! [`WALL_CLOCK_CEILING_FACTOR`] times its budget and at least [`MIN_WALL_CLOCK_CEILING`].
//!
//! ```text
//!   set_deadline(budget) ──► Deadline { budget, started: now, wall: now + max(10 × budget, 1 s) }
//!   each epoch check (offload::on_epoch) ──► Deadline::left(): the smaller of the CPU time and
//!                                            the wall time left; none left is an interrupt
//! ```
//!
//! The deadline is checked at epoch ticks only, so a call that ends within a tick (nearly all)
//! never reads the CPU clock. After `left`, the next check is `left` ticks away on the wall
//! clock, which no call can outrun in CPU time, so a call that is never preempted is checked as
//! often as with a wall-clock budget (twice or three times in all).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};

use crate::{
    offload,
    state::{HostState, PluginShared},
};

/// How long a call may take on the wall clock, as a multiple of its time budget, however little
/// CPU time it has used.
///
/// A budget counts CPU time, so that a call is not denied for the time it spent preempted; but a
/// call that holds its thread without running (preempted for very long, or in a host function
/// that waits) must still end. Ten times the budget is beyond the preemption a busy machine
/// inflicts on a call, and still ends a stuck call within a second for the default budget of
/// 100 ms. Measured on this project's 2-core machine at a load average of 12: 600 calls of 1 ms
/// of CPU time each took 1.1 ms on the wall at the median, 11 ms at the 99th percentile and
/// 12.5 ms at most; a 5 ms budget on the wall clock would have denied 82 of them (14 %).
pub const WALL_CLOCK_CEILING_FACTOR: u32 = 10;

/// The least wall-clock ceiling of a call, whatever its budget.
///
/// A budget of a few milliseconds times [`WALL_CLOCK_CEILING_FACTOR`] is shorter than the time a
/// runnable thread may wait for a core when the machine is very busy (the scheduler's period
/// grows with the number of runnable threads); a second is not, and a guest holding a thread for
/// a second is still noticed and cut.
pub const MIN_WALL_CLOCK_CEILING: Duration = Duration::from_secs(1);

/// The wall-clock ceiling of a call with `budget`.
fn wall_clock_ceiling(budget: Duration) -> Duration {
    budget
        .saturating_mul(WALL_CLOCK_CEILING_FACTOR)
        .max(MIN_WALL_CLOCK_CEILING)
}

/// The most linear memory an instance may have grown to and still be kept for the next call.
///
/// A guest's linear memory never shrinks: an instance that once held a 50 MB message keeps those
/// pages for as long as it lives, and a version keeps as many idle instances as it ever had calls
/// at once. So one that grew past this is dropped after its call (the pooling allocator gives its
/// pages back to the system) and the next call makes a fresh one. 16 MiB is far above what a call
/// on an ordinary query needs (a plugin instance starts at about 1 MiB), so only calls that carried
/// large messages pay the new instance, a few tens of microseconds beside copying megabytes.
pub const KEEP_INSTANCE_MEMORY_BYTES: usize = 16 << 20;

/// A store's resource limits ([`StoreLimits`], the instance's memory cap), and the size its linear
/// memory has grown to.
pub(crate) struct GuestLimits {
    limits: StoreLimits,
    /// The largest size any memory of the instance has been allowed to grow to, in bytes.
    memory_bytes: usize,
}

impl GuestLimits {
    /// The largest size the instance's memory has grown to.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Makes the stores of one plugin version: each with the version's memory cap, and with the
/// epoch callback that enforces deadlines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreBuilder {
    memory_limit: usize,
}

impl StoreBuilder {
    /// Stores whose instance may have at most `memory_limit` bytes of linear memory.
    pub(crate) fn new(memory_limit: usize) -> Self {
        Self { memory_limit }
    }

    /// The memory cap of each instance.
    pub(crate) fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// A new store on `engine` for an instance of the plugin that `shared` describes, with no
    /// deadline yet: [`set_deadline`] arms it before each call.
    pub(crate) fn build(&self, engine: &Engine, shared: Arc<PluginShared>) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_limit)
            // A guest that grows past its cap traps with a message naming the cap, instead of
            // seeing `memory.grow` fail and aborting with a less helpful one.
            .trap_on_grow_failure(true)
            .build();
        let limits = GuestLimits {
            limits,
            memory_bytes: 0,
        };
        let mut store = Store::new(engine, HostState::new(shared, limits));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut store| Ok(offload::on_epoch(store.data_mut())));
        store
    }
}

/// Starts the clock of a call with `budget` of CPU time, on the thread that is about to make the
/// call: the first epoch tick (within [`crate::EPOCH_TICK`]) runs [`offload::on_epoch`].
pub(crate) fn set_deadline(store: &mut Store<HostState>, budget: Duration) {
    let state = store.data_mut();
    state.deadline = Deadline::after(budget);
    state.off_async = false;
    store.set_epoch_deadline(1);
}

/// When the call in progress must stop: when the thread that runs it has used its CPU time, or
/// at its wall-clock ceiling, whichever comes first.
///
/// The thread's CPU clock is read at the first check, not when the call starts: reading it is a
/// system call (`CLOCK_THREAD_CPUTIME_ID` has no vDSO fast path), and most calls end within a
/// microsecond, long before the first tick. The first check counts all the wall-clock time since
/// the start as CPU time (at most a tick's worth, since the first check comes at the first tick),
/// so a call is never charged less than it used.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    budget: Duration,
    /// When the call started.
    started: Instant,
    /// The running thread's CPU time at which the budget is spent, once the first check has read
    /// the clock.
    cpu: Option<Duration>,
    /// The wall-clock ceiling.
    wall: Instant,
}

impl Deadline {
    /// A deadline already past, for a store between calls.
    pub(crate) fn past() -> Self {
        let now = Instant::now();
        Self {
            budget: Duration::ZERO,
            started: now,
            cpu: Some(Duration::ZERO),
            wall: now,
        }
    }

    /// The deadline of a call with `budget` that starts now.
    fn after(budget: Duration) -> Self {
        let now = Instant::now();
        Self {
            budget,
            started: now,
            cpu: None,
            wall: now
                .checked_add(wall_clock_ceiling(budget))
                .unwrap_or(now + MIN_WALL_CLOCK_CEILING),
        }
    }

    /// How long the call may still run, checked on the thread that runs it: `None` once its
    /// budget is spent or its ceiling passed.
    pub(crate) fn left(&mut self) -> Option<Duration> {
        self.left_at(thread_cpu_time(), Instant::now())
    }

    /// [`Deadline::left`] at CPU time `cpu` and wall-clock time `now`.
    fn left_at(&mut self, cpu: Duration, now: Instant) -> Option<Duration> {
        let spent_at = *self.cpu.get_or_insert_with(|| {
            // Everything since the start counts, as if the call had run all along.
            let since_start = now.saturating_duration_since(self.started);
            cpu.saturating_add(self.budget.saturating_sub(since_start))
        });
        let cpu_left = spent_at.checked_sub(cpu).filter(|left| !left.is_zero())?;
        let wall_left = self
            .wall
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())?;
        Some(cpu_left.min(wall_left))
    }
}

/// The CPU time this thread has used, from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    // The kernel never reports a negative time or more than a second of nanoseconds.
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A deadline made for `budget` at CPU time 0, first checked a tick later (when the call has
    /// used a tick of CPU time), then asked at CPU time `cpu` and `wall` after the start.
    fn check(budget: Duration, cpu: Duration, wall: Duration, expect: Option<Duration>) {
        let mut deadline = Deadline::after(budget);
        let start = deadline.started;
        assert!(deadline.left_at(MS, start + MS).is_some());
        assert_eq!(
            deadline.left_at(cpu, start + wall),
            expect,
            "budget {budget:?}, cpu {cpu:?}, wall {wall:?}"
        );
    }

    #[test]
    fn a_call_is_cut_when_its_cpu_time_is_spent_not_its_wall_time() {
        // Running alone: CPU time and wall time go together.
        check(100 * MS, 40 * MS, 40 * MS, Some(60 * MS));
        check(100 * MS, 100 * MS, 100 * MS, None);
        // Preempted for most of its wall time: only its CPU time counts.
        check(100 * MS, 2 * MS, 300 * MS, Some(98 * MS));
        check(5 * MS, MS / 1000, 40 * MS, Some(5 * MS - MS / 1000));
        // Up to the ceiling: ten times the budget, at least a second.
        check(200 * MS, MS, 1999 * MS, Some(MS));
        check(200 * MS, MS, 2000 * MS, None);
        check(5 * MS, MS / 1000, 999 * MS, Some(MS));
        check(5 * MS, MS / 1000, 1000 * MS, None);
    }

    #[test]
    fn the_first_check_counts_the_time_since_the_start_as_cpu_time() {
        // First checked 3 ms after the start, at a CPU time of 10 ms: the call is taken to have
        // started at 7 ms, and its 5 ms budget runs out at 12 ms.
        let mut deadline = Deadline::after(5 * MS);
        let start = deadline.started;
        assert_eq!(deadline.left_at(10 * MS, start + 3 * MS), Some(2 * MS));
        assert_eq!(deadline.left_at(11 * MS, start + 50 * MS), Some(MS));
        assert_eq!(deadline.left_at(12 * MS, start + 60 * MS), None);
        // A call first checked past its budget on the wall clock is cut at once.
        let mut deadline = Deadline::after(5 * MS);
        assert_eq!(deadline.left_at(MS, deadline.started + 6 * MS), None);
        assert_eq!(Deadline::past().left_at(MS, Instant::now()), None);
    }

    #[test]
    fn the_ceiling_is_ten_budgets_and_at_least_a_second() {
        assert_eq!(wall_clock_ceiling(5 * MS), MIN_WALL_CLOCK_CEILING);
        assert_eq!(wall_clock_ceiling(100 * MS), Duration::from_secs(1));
        assert_eq!(wall_clock_ceiling(3000 * MS), Duration::from_secs(30));
        assert_eq!(wall_clock_ceiling(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn the_thread_cpu_clock_moves_with_work_not_with_sleep() {
        let before = thread_cpu_time();
        let mut turns: u64 = 0;
        while thread_cpu_time() < before + 5 * MS {
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
        assert!(turns > 0);
        let busy = thread_cpu_time();
        #[expect(
            clippy::disallowed_methods,
            reason = "a plain test thread standing in for a preempted one"
        )]
        std::thread::sleep(50 * MS);
        // Sleeping costs no CPU time: far less than the 50 ms on the wall.
        assert!(thread_cpu_time() - busy < 25 * MS);
    }
}
