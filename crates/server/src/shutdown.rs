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

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long the cut connections get to run their close hooks.
///
/// The hooks of a connection cut at the end of the grace period still run (their plugins should
/// hear of the close), but one that hangs must not hold the process: this bounds the wait.
pub(crate) const CUT_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a connection task watches: the two stages of a shutdown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Fires when the shutdown starts: finish what is in flight, take nothing new.
    drain: CancellationToken,
    /// Fires when the grace period is over: drop whatever is in flight.
    cut: CancellationToken,
}

impl Signals {
    /// Resolves when the shutdown starts.
    pub(crate) async fn draining(&self) {
        self.drain.cancelled().await;
    }

    /// Resolves when the grace period is over.
    pub(crate) async fn cut(&self) {
        self.cut.cancelled().await;
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

    /// Runs the shutdown: signals every connection, waits up to `grace` for them, then cuts what
    /// is left. Returns how many connections were cut.
    pub(crate) async fn run(self, grace: Duration) -> usize {
        self.tracker.close();
        let open = self.tracker.len();
        tracing::info!(connections = open, grace = ?grace, "draining connections");
        self.signals.drain.cancel();
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
        self.signals.cut.cancel();
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
