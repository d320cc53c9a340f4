//! Pooled mode: `pool_size` connections per replica, shared by every client, one request in flight
//! on each, and a queue that is fair between users.
//!
//! A client task never owns a pooled connection; it leases one ([`Lease`]), uses it for one
//! request, and gives it back. The pool alone knows which connections are idle, which replica is
//! least busy, and who waits.
//!
//! ```text
//!   checkout(user) ──► an idle connection on the least busy usable replica?  ──► Lease
//!        │ no                                                                     │
//!        ├─► room for another connection on a usable replica? connect ──► Lease   │ release
//!        │ no                                                                     ▼
//!        └─► wait in the user's queue (round robin between users) ◄── handed the next free one
//!                 at most queue_timeout, then a q error saying so
//! ```
//!
//! A lease dropped while its connection still owes a reply (the client went away, or its task was
//! cut) is not reused until that reply has arrived and been read and dropped: a task of its own
//! drains it, within `query_timeout`, and then gives the connection back (or closes it).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::oneshot;

use crate::{
    conn::{Pending, UpstreamConn},
    exchange,
    service::Service,
};

/// The pool of one service.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) size: usize,
    state: Mutex<PoolState>,
    /// Requests waiting for a connection, for `qgate upstreams`.
    pub(crate) queued: AtomicUsize,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<UpstreamConn>,
    /// Connections open or being opened, per replica (by index in the service).
    open: Vec<usize>,
    waiting: FairQueue,
}

impl Pool {
    pub(crate) fn new(size: usize, replicas: usize) -> Self {
        Self {
            size,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: vec![0; replicas],
                waiting: FairQueue::default(),
            }),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the idle connections to replica `index` (it was found down), and reads and drops
    /// whatever the upstream pushed on the others: a pooled connection has no client for it.
    pub(crate) fn sweep(&self, service: &Service) {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        for mut conn in idle {
            let index = service.replica_index(&conn);
            let down = !conn.replica.usable();
            let result = conn
                .poll_ready_bytes()
                .and_then(|()| conn.take_ready_frames());
            match result {
                Ok(pushes) if !down => {
                    for push in pushes {
                        tracing::debug!(
                            upstream = %service.options.name,
                            server = %conn.replica.address,
                            bytes = push.len(),
                            "push on an idle pooled connection has no client; dropped"
                        );
                    }
                    state.idle.push(conn);
                }
                Ok(_) => {
                    state.open[index] = state.open[index].saturating_sub(1);
                }
                Err(error) => {
                    tracing::info!(
                        upstream = %service.options.name,
                        server = %conn.replica.address,
                        %error,
                        "idle pooled connection lost; closed"
                    );
                    state.open[index] = state.open[index].saturating_sub(1);
                }
            }
        }
    }
}

/// Leases a connection of `service`'s pool for one request of `user`.
///
/// # Errors
///
/// The q error for the client: no replica could be reached, or the wait was longer than
/// `queue_timeout`.
pub(crate) async fn checkout(service: &Arc<Service>, user: &Arc<[u8]>) -> Result<Lease, String> {
    let pool = service.pool();
    let mut last_error = None;
    let mut tried = vec![false; service.replicas.len()];
    loop {
        let step = {
            let mut state = pool.lock();
            take_idle(service, &mut state)
                .map(Step::Idle)
                .or_else(|| reserve_slot(service, pool, &mut state, &tried).map(Step::Connect))
        };
        match step {
            Some(Step::Idle(mut conn)) => {
                // Whatever the upstream pushed while the connection was idle is nobody's.
                let ready = conn
                    .poll_ready_bytes()
                    .and_then(|()| conn.take_ready_frames());
                match ready {
                    Ok(_) => return Ok(Lease::new(service, conn)),
                    Err(error) => {
                        tracing::info!(
                            upstream = %service.options.name,
                            server = %conn.replica.address,
                            %error,
                            "idle pooled connection lost; closed"
                        );
                        let index = service.replica_index(&conn);
                        let mut state = pool.lock();
                        state.open[index] = state.open[index].saturating_sub(1);
                    }
                }
            }
            Some(Step::Connect(index)) => {
                tried[index] = true;
                let replica = &service.replicas[index];
                match service.connect(replica, None).await {
                    Ok(conn) => return Ok(Lease::new(service, conn)),
                    Err(error) => {
                        let mut state = pool.lock();
                        state.open[index] = state.open[index].saturating_sub(1);
                        drop(state);
                        last_error = Some(error);
                    }
                }
            }
            None => {
                if let Some(error) = last_error {
                    // Every replica with room was tried and none answered.
                    return Err(error);
                }
                return wait(service, pool, user).await;
            }
        }
    }
}

enum Step {
    Idle(UpstreamConn),
    Connect(usize),
}

/// The idle connection on the usable replica with the fewest requests in flight.
fn take_idle(service: &Service, state: &mut PoolState) -> Option<UpstreamConn> {
    let best = state
        .idle
        .iter()
        .enumerate()
        .filter(|(_, conn)| conn.replica.usable())
        .min_by_key(|(_, conn)| conn.replica.in_flight.load(Ordering::Acquire))
        .map(|(position, _)| position)?;
    let _ = service;
    Some(state.idle.swap_remove(best))
}

/// Reserves room for a new connection on the least busy replica that has room, usable replicas
/// first; a replica that is down is tried only when no other has room, so that a service whose
/// every replica is down answers with the connection error rather than a wait.
fn reserve_slot(
    service: &Service,
    pool: &Pool,
    state: &mut PoolState,
    tried: &[bool],
) -> Option<usize> {
    let candidates = || {
        (0..service.replicas.len()).filter(|&index| state.open[index] < pool.size && !tried[index])
    };
    let least_busy = |usable: bool| {
        candidates()
            .filter(|&index| service.replicas[index].usable() == usable)
            .min_by_key(|&index| {
                (
                    service.replicas[index].in_flight.load(Ordering::Acquire),
                    state.open[index],
                )
            })
    };
    let all_busy_or_down = state.idle.is_empty();
    let index = least_busy(true).or_else(|| {
        // Down replicas only when nothing usable is open at all.
        let usable_open = (0..service.replicas.len())
            .any(|index| service.replicas[index].usable() && state.open[index] > 0);
        (all_busy_or_down && !usable_open)
            .then(|| least_busy(false))
            .flatten()
    })?;
    state.open[index] += 1;
    Some(index)
}

/// Waits in `user`'s queue for a connection, at most `queue_timeout`.
async fn wait(service: &Arc<Service>, pool: &Pool, user: &Arc<[u8]>) -> Result<Lease, String> {
    let (send, receive) = oneshot::channel();
    pool.lock().waiting.push(Arc::clone(user), send);
    pool.queued.fetch_add(1, Ordering::AcqRel);
    let timeout = service.options.queue_timeout;
    let result = tokio::time::timeout(timeout, receive).await;
    pool.queued.fetch_sub(1, Ordering::AcqRel);
    match result {
        Ok(Ok(conn)) => Ok(Lease::new(service, conn)),
        // The sender is dropped only when the pool drops its queue: the service is going away.
        Ok(Err(_)) => Err(format!(
            "qgate: upstream {} is shutting down",
            service.options.name
        )),
        Err(_) => Err(format!(
            "qgate: waited longer than {timeout:?} (queue_timeout) for a connection to upstream \
             {}: all {} of its connections are busy",
            service.options.name,
            pool.size * service.replicas.len()
        )),
    }
}

/// A pooled connection, leased for one request.
#[derive(Debug)]
pub(crate) struct Lease {
    service: Arc<Service>,
    conn: Option<UpstreamConn>,
}

impl Lease {
    fn new(service: &Arc<Service>, conn: UpstreamConn) -> Self {
        Self {
            service: Arc::clone(service),
            conn: Some(conn),
        }
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut UpstreamConn {
        // Invariant: `conn` is `None` only once `release`, `close` or `drop` has taken it.
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until it ends"))
    }

    /// Closes the connection: it broke, or it owes a reply that nobody will read (a timeout).
    pub(crate) fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            forget(&self.service, conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if conn.pending == Pending::None {
            give_back(&self.service, conn);
            return;
        }
        // The request's reply is still coming: read it and drop it before anyone else gets the
        // connection. Outside a runtime (which cannot happen here: leases live in tasks) the
        // connection is closed instead.
        let service = Arc::clone(&self.service);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let limit = service.options.query_timeout;
                    match exchange::drain(&mut conn, limit).await {
                        Ok(()) => give_back(&service, conn),
                        Err(error) => {
                            tracing::info!(
                                upstream = %service.options.name,
                                server = %conn.replica.address,
                                %error,
                                "the reply of a request whose client went away did not arrive; \
                                 connection closed"
                            );
                            forget(&service, conn);
                        }
                    }
                });
            }
            Err(_) => forget(&self.service, conn),
        }
    }
}

/// Hands `conn` to the next waiter, fairly, or puts it back idle.
fn give_back(service: &Service, mut conn: UpstreamConn) {
    let pool = service.pool();
    let mut state = pool.lock();
    while let Some(waiter) = state.waiting.pop() {
        match waiter.send(conn) {
            Ok(()) => return,
            // That waiter gave up (its queue_timeout): the next one.
            Err(back) => conn = back,
        }
    }
    conn.shrink();
    state.idle.push(conn);
}

/// Forgets a connection that is closed or being closed.
///
/// Its slot is free again. When queries are waiting for a connection, a new one is opened in its
/// place and handed to the next of them; without this, they would wait out `queue_timeout` for a
/// connection that is never given back.
fn forget(service: &Arc<Service>, conn: UpstreamConn) {
    let index = service.replica_index(&conn);
    let pool = service.pool();
    let mut state = pool.lock();
    state.open[index] = state.open[index].saturating_sub(1);
    let replace = state.waiting.any_waiting();
    if replace {
        state.open[index] += 1;
    }
    drop(state);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Leases live in tasks, so there is always a runtime; without one, nothing is replaced.
        if replace {
            let mut state = pool.lock();
            state.open[index] = state.open[index].saturating_sub(1);
        }
        return;
    };
    runtime.spawn(conn.close());
    if replace {
        let service = Arc::clone(service);
        runtime.spawn(async move {
            let replica = Arc::clone(&service.replicas[index]);
            match service.connect(&replica, None).await {
                Ok(conn) => give_back(&service, conn),
                Err(error) => {
                    tracing::info!(
                        upstream = %service.options.name,
                        server = %replica.address,
                        %error,
                        "cannot replace a closed pooled connection; waiting queries wait on"
                    );
                    let mut state = service.pool().lock();
                    state.open[index] = state.open[index].saturating_sub(1);
                }
            }
        });
    }
}

/// Waiters for a connection, served round robin between users, first come first served within
/// one user's: one user with a hundred queued queries does not delay another's one.
#[derive(Debug)]
struct FairQueue<T = oneshot::Sender<UpstreamConn>> {
    /// Users with waiters, in the order they are served.
    order: VecDeque<Arc<[u8]>>,
    waiters: HashMap<Arc<[u8]>, VecDeque<T>>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            waiters: HashMap::new(),
        }
    }
}

/// Whether a waiter is still waiting.
trait Waiting {
    fn waiting(&self) -> bool;
}

impl Waiting for oneshot::Sender<UpstreamConn> {
    fn waiting(&self) -> bool {
        !self.is_closed()
    }
}

impl<T: Waiting> FairQueue<T> {
    fn push(&mut self, user: Arc<[u8]>, waiter: T) {
        let queue = self.waiters.entry(Arc::clone(&user)).or_default();
        if queue.is_empty() {
            self.order.push_back(user);
        }
        queue.push_back(waiter);
    }

    /// Whether any waiter is still waiting.
    fn any_waiting(&self) -> bool {
        self.waiters
            .values()
            .any(|queue| queue.iter().any(Waiting::waiting))
    }

    /// The next waiter that is still waiting, taking turns between users.
    fn pop(&mut self) -> Option<T> {
        while let Some(user) = self.order.pop_front() {
            let Some(queue) = self.waiters.get_mut(&user) else {
                continue;
            };
            let mut found = None;
            while let Some(waiter) = queue.pop_front() {
                if waiter.waiting() {
                    found = Some(waiter);
                    break;
                }
            }
            if queue.is_empty() {
                self.waiters.remove(&user);
            } else {
                self.order.push_back(user);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter in a test: its name, and whether it still waits.
    struct Named(&'static str, bool);

    impl Waiting for Named {
        fn waiting(&self) -> bool {
            self.1
        }
    }

    fn served(pushes: &[(&str, &'static str, bool)]) -> Vec<&'static str> {
        let mut queue = FairQueue::default();
        for (user, name, waiting) in pushes {
            queue.push(Arc::from(user.as_bytes()), Named(name, *waiting));
        }
        std::iter::from_fn(|| queue.pop().map(|waiter| waiter.0)).collect()
    }

    #[test]
    fn the_queue_takes_turns_between_users() {
        // Bob's one query does not wait behind all of alice's.
        let order = served(&[
            ("alice", "a1", true),
            ("alice", "a2", true),
            ("alice", "a3", true),
            ("bob", "b1", true),
            ("carol", "c1", true),
            ("bob", "b2", true),
        ]);
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    }

    #[test]
    fn waiters_that_gave_up_are_skipped() {
        let order = served(&[
            ("alice", "a1", false),
            ("alice", "a2", true),
            ("bob", "b1", false),
        ]);
        assert_eq!(order, ["a2"]);
    }
}
