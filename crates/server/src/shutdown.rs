//! Graceful shutdown: stop accepting, let what is in flight finish within a grace period, then cut
//! what is left.
//!
//! This uses `tokio-util`'s [`CancellationToken`] and [`TaskTracker`], the modern equivalent of
//! mini-redis's broadcast channel, per-handler `Shutdown` wrapper and mpsc completion channel:
//!
//! ```text
//!   shutdown future resolves
//!     │  the accept loop stops and the listening socket closes
//!     ▼
//!   drain token fires ──► each connection closes as soon as it is between messages (a sync query
//!     │                   being answered is answered first), runs on_close(Shutdown)
//!     ▼
//!   wait for every connection task, at most shutdown_grace
//!     │  (all done: return)
//!     ▼
//!   log how many are left ──► cut token fires ──► they drop their in-flight work, close their
//!     │                                           socket and run on_close(Shutdown)
//!     ▼
//!   wait at most CUT_CLOSE_WAIT more for those close hooks, then return regardless
//! ```

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

/// How long the cut connections get to run their close hooks.
///
/// The hooks of a connection cut at the end of the grace period still run (their plugins should
/// hear of the close), but one that hangs must not hold the process: this bounds the wait.
pub(crate) const CUT_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a connection task watches: the two stages of a shutdown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Fires when the shutdown starts: finish what is in flight, take nothing new.
    drain: Stage,
    /// Fires when the grace period is over: drop whatever is in flight.
    cut: Stage,
}

impl Signals {
    /// Resolves when the shutdown starts.
    pub(crate) fn draining(&self) -> Fired {
        self.drain.fired()
    }

    /// Resolves when the grace period is over.
    pub(crate) fn cut(&self) -> Fired {
        self.cut.fired()
    }
}

/// One stage of a shutdown: a flag read without a lock, and the token that wakes the waiters.
///
/// Every connection task polls both stages each time it wakes. The token alone takes a lock
/// shared by every connection at each poll (its flag, then its waiter list); the flag makes a
/// poll of a stage that has not fired one atomic load.
#[derive(Clone, Debug, Default)]
struct Stage {
    fired: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Stage {
    /// Fires the stage: the flag first, so that a waiter the token wakes sees it.
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn fired(&self) -> Fired {
        Fired {
            fired: Arc::clone(&self.fired),
            waiting: Box::pin(self.token.clone().cancelled_owned()),
            registered: None,
        }
    }
}

/// Resolves when its stage fires. Cancel-safe.
#[derive(Debug)]
pub(crate) struct Fired {
    fired: Arc<AtomicBool>,
    waiting: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token holds for this future, once it holds one.
    registered: Option<Waker>,
}

impl Future for Fired {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        // The token already wakes this task when the stage fires: nothing to register again.
        if this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.waiting.as_mut().poll(cx);
        if polled.is_pending() {
            this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// The server's side of a shutdown: the signals, and the connection tasks to wait for.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    signals: Signals,
    /// Every connection task, so the shutdown can wait for them and count those still running.
    tracker: TaskTracker,
}

impl Shutdown {
    /// The signals, for a connection task.
    pub(crate) fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// Spawns a connection task that the shutdown waits for.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// `task`, as a connection task that the shutdown waits for, to be spawned elsewhere (on a
    /// connection thread).
    pub(crate) fn track<F>(&self, task: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.track_future(task)
    }

    /// Runs the shutdown: signals every connection, waits up to `grace` for them, then cuts what
    /// is left. Returns how many connections were cut.
    pub(crate) async fn run(self, grace: Duration) -> usize {
        self.tracker.close();
        let open = self.tracker.len();
        tracing::info!(connections = open, grace = ?grace, "draining connections");
        self.signals.drain.fire();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            tracing::info!("every connection closed");
            return 0;
        }
        let cut = self.tracker.len();
        tracing::warn!(
            connections = cut,
            limit = "shutdown_grace",
            "grace period over; cutting the connections still busy"
        );
        self.signals.cut.fire();
        if tokio::time::timeout(CUT_CLOSE_WAIT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.tracker.len(),
                "close hooks of cut connections still running; not waiting for them"
            );
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
    };

    use super::*;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(fired: &mut Fired, waker: &Waker) -> Poll<()> {
        Pin::new(fired).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_waiting_task_is_woken_when_its_stage_fires_and_not_before() {
        let signals = Signals::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut draining = signals.draining();
        let mut cut = signals.cut();
        for _ in 0..3 {
            assert!(poll(&mut draining, &waker).is_pending());
            assert!(poll(&mut cut, &waker).is_pending());
        }
        signals.drain.fire();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the drain woke the task once"
        );
        assert!(poll(&mut draining, &waker).is_ready());
        assert!(poll(&mut cut, &waker).is_pending(), "the cut has not fired");
        signals.cut.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut cut, &waker).is_ready());
    }

    #[test]
    fn a_task_that_moves_to_another_waker_is_woken_on_the_new_one() {
        let signals = Signals::default();
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut draining = signals.draining();
        assert!(poll(&mut draining, &Waker::from(Arc::clone(&first))).is_pending());
        assert!(poll(&mut draining, &Waker::from(Arc::clone(&second))).is_pending());
        signals.drain.fire();
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut draining, &Waker::from(second)).is_ready());
    }

    #[test]
    fn a_stage_that_fired_before_the_wait_began_is_ready_at_once() {
        let signals = Signals::default();
        signals.drain.fire();
        let waker = Waker::from(Arc::new(Count::default()));
        assert!(poll(&mut signals.draining(), &waker).is_ready());
        assert!(poll(&mut signals.cut(), &waker).is_pending());
    }
}
