//! Connection threads (`connection_threads = N`): each connection is served for its whole life by
//! one of N threads, the least busy one when it is accepted, instead of by the shared runtime's
//! workers, which hand tasks to each other.
//!
//! ```text
//!   accept loop (shared runtime) ──► least busy thread ──► the connection's task, there for life
//!                                     (a runtime of one worker each)
//! ```
//!
//! A work-stealing runtime wakes an idle worker whenever work arrives and lets it take half of the
//! busy one's queue: with many small queries a connection's task moves between CPUs and the
//! workers wake each other (a futex call and a context switch). In the gateway benchmark's
//! 64-connection scenario that cost 2.5 of the 11 µs of CPU a forwarded query took (BENCHMARKS.md,
//! "Gateway mode"). A thread of its own per connection set is what HAProxy's and Envoy's threads
//! do. The price is balance: two busy clients that land on one thread share one CPU while another
//! waits, where the shared runtime would spread them.
//!
//! Each thread is a multi-thread runtime of one worker, not a current-thread runtime: a plugin
//! call that turns slow hands its worker over (`block_in_place`, see the host's `offload.rs`),
//! which only a multi-thread runtime can do, so a slow call still holds up no other connection of
//! its thread.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::runtime::Runtime;

/// The threads, and how many connections each serves.
#[derive(Debug)]
pub(crate) struct ConnectionThreads {
    threads: Vec<Thread>,
}

#[derive(Debug)]
struct Thread {
    /// Taken when the threads stop.
    runtime: Option<Runtime>,
    /// The connections it serves now.
    load: Arc<AtomicUsize>,
}

impl ConnectionThreads {
    /// Starts `count` threads, named `qgate-conn-0` and on.
    pub(crate) fn start(count: usize) -> io::Result<Self> {
        let threads = (0..count)
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("qgate-conn-{index}"))
                    .enable_all()
                    .build()?;
                Ok(Thread {
                    runtime: Some(runtime),
                    load: Arc::default(),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { threads })
    }

    /// Runs the task `made` makes on the thread that serves the fewest connections, for as long
    /// as it runs. The task is first polled there, so what it registers when it starts (its
    /// socket) is that thread's. It must hold the [`Served`] it is given until it ends: that is
    /// what counts it off its thread. (Given to the task rather than wrapped around it: an async
    /// block that awaits a future it captured holds it twice, and a connection's future is
    /// kilobytes.)
    pub(crate) fn spawn<F>(&self, made: impl FnOnce(Served) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|thread| thread.load.load(Ordering::Relaxed))
        else {
            return;
        };
        let Some(runtime) = &thread.runtime else {
            return;
        };
        thread.load.fetch_add(1, Ordering::Relaxed);
        drop(runtime.spawn(made(Served(Arc::clone(&thread.load)))));
    }

    /// How many connections each thread serves now, in thread order.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|thread| thread.load.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for ConnectionThreads {
    /// Stops the threads without waiting: the server's shutdown has already waited for their
    /// connections, and a runtime may not block its way down inside another one.
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(runtime) = thread.runtime.take() {
                runtime.shutdown_background();
            }
        }
    }
}

/// One connection served, counted off its thread's load when its task ends, however it ends.
#[derive(Debug)]
pub(crate) struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn each_task_goes_to_the_least_busy_thread_and_runs_there() {
        let threads = ConnectionThreads::start(2).unwrap();
        let mut releases = Vec::new();
        let mut names = Vec::new();
        for _ in 0..3 {
            let (release, released) = oneshot::channel::<()>();
            let (name, named) = oneshot::channel();
            threads.spawn(|served| async move {
                let _served = served;
                let _ = name.send(std::thread::current().name().map(str::to_owned));
                let _ = released.await;
            });
            releases.push(release);
            names.push(named.await.unwrap());
        }
        assert_eq!(
            threads.loads(),
            [2, 1],
            "the third went to the emptier thread"
        );
        assert_eq!(names[0].as_deref(), Some("qgate-conn-0"));
        assert_eq!(names[1].as_deref(), Some("qgate-conn-1"));
        assert_eq!(names[2].as_deref(), Some("qgate-conn-0"));
        // A task that ends leaves its thread's count.
        drop(releases.remove(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while threads.loads() != [1, 1] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                threads.loads()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_task_may_hand_its_worker_over_for_a_blocking_call() {
        let threads = ConnectionThreads::start(1).unwrap();
        let (done, finished) = oneshot::channel();
        threads.spawn(|_served| async move {
            // What the plugin host does for a call that turns slow: it panics on a
            // current-thread runtime.
            let value = tokio::task::block_in_place(|| 7);
            let _ = done.send(value);
        });
        assert_eq!(finished.await.unwrap(), 7);
    }
}
