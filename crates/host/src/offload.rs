//! Keeping calls into guests from holding up the async runtime: a slow call leaves the async
//! worker it started on ([`on_epoch`]), a call that may block on tokio runs outside the async
//! context ([`run_outside_async`]), and a panic in a host function fails the call rather than
//! the connection's task ([`contain`]).
//!
//! Calls run inline on the async worker that handles the connection: a call takes about a
//! microsecond, and handing the worker over for each (`block_in_place`) cost ten.

use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use wasmtime::UpdateDeadline;

use crate::{engine, state::HostState};

/// What happens when a call into a guest is still running at an epoch check: once its deadline
/// has passed (`store::Deadline`) it is interrupted (a trap); otherwise, the first time, it
/// leaves the async worker it runs on, and it runs on until the next check.
///
/// A call still running after a tick (at most 1 ms) is a slow one, which must not hold up the
/// worker's other connections: `block_in_place` then hands the worker's other tasks to another
/// thread, and this call finishes on this one ([`leave_async_worker`]).
pub(crate) fn on_epoch(state: &mut HostState) -> UpdateDeadline {
    let Some(mut left) = state.deadline.left() else {
        return UpdateDeadline::Interrupt;
    };
    if !state.off_async {
        state.off_async = true;
        leave_async_worker(left);
        // The wait used no CPU time, but it counts against the wall-clock ceiling.
        let Some(rest) = state.deadline.left() else {
            return UpdateDeadline::Interrupt;
        };
        left = rest;
    }
    UpdateDeadline::Continue(engine::deadline_ticks(left))
}

/// The runtime this thread runs an async worker of, if it is a multi-thread one: the only kind
/// whose worker can be handed to another thread (`block_in_place`).
fn multi_thread_runtime() -> Option<Handle> {
    Handle::try_current()
        .ok()
        .filter(|handle| matches!(handle.runtime_flavor(), RuntimeFlavor::MultiThread))
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
    let Some(handle) = multi_thread_runtime() else {
        return;
    };
    let (ran, running_elsewhere) = std::sync::mpsc::channel();
    drop(handle.spawn(async move {
        let _ = ran.send(());
    }));
    tokio::task::block_in_place(|| {
        let _ = running_elsewhere.recv_timeout(within);
    });
}

/// Runs `f`, a call into a guest, where `wasmtime-wasi`'s blocking imports may run when
/// `needs_blocking`.
///
/// Those imports block on tokio (`Handle::block_on`), which panics on a thread that is driving
/// async tasks. On a multi-thread runtime `block_in_place` hands the worker's other tasks to
/// another thread for the length of the call; on a current-thread runtime the call runs on a
/// scoped thread. A plugin without such imports, or a caller outside any runtime, runs inline.
pub(crate) fn run_outside_async<R: Send>(needs_blocking: bool, f: impl FnOnce() -> R + Send) -> R {
    if !needs_blocking || Handle::try_current().is_err() {
        return f();
    }
    if multi_thread_runtime().is_some() {
        return tokio::task::block_in_place(f);
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Runs a call into a guest, turning a panic in a host function it called into an error, so that
/// the call fails (and its instance is thrown away) rather than the connection's task.
///
/// No host function of qgate's panics; this guards against one of `wasmtime-wasi`'s that is
/// reached some way not foreseen (one that blocks on tokio from an async worker panics).
pub(crate) fn contain<R>(f: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(wasmtime::format_err!("a host function panicked: {what}"))
    })
}
