//! What the upstream shares across its connections: the live connections and their outboxes,
//! the subscriptions, the record of received messages, the counters and the evaluation lock.
//!
//! Everything but the evaluation lock sits behind one `std::sync::Mutex`, held for a few map
//! operations at a time and never across an `.await`.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::mpsc;

use crate::upstream::{UpstreamOptions, tick::Filter};

/// How many received messages the record keeps; past it the oldest are forgotten (and counted
/// in [`Stats::forgotten`]).
///
/// A test checks a few hundred messages at most, but a feed or a load loop may send millions,
/// and the record must not grow without end: 100 000 entries of at most
/// [`MAX_RECORDED_TEXT`] bytes is at most about 200 MiB, usually a few MiB.
pub const MAX_RECORDED: usize = 100_000;

/// How much of a message's text the record keeps; longer texts end with `..`, as q's `.Q.s1`
/// display does.
///
/// 2 KiB shows any query or call a test writes whole; a bulk insert is recorded by its first
/// rows, which is enough to tell it apart.
pub const MAX_RECORDED_TEXT: usize = 2048;

/// The first handle (`.z.w`) given to a connection. kdb+'s handles are its file descriptors:
/// after stdin, stdout, stderr and the listening socket, a client's is 4 or more.
pub const FIRST_HANDLE: i32 = 4;

/// Whether a message was sync or async.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An async message (type 0): no reply.
    Async,
    /// A sync message (type 1): one reply, in order.
    Sync,
}

impl Kind {
    /// The name in `received[]`'s `kind` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Sync => "sync",
        }
    }
}

/// One message the upstream received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The connection's handle (`.z.w`).
    pub handle: i32,
    /// The connection's user (`.z.u`), from the handshake (lossy UTF-8).
    pub user: String,
    /// Sync or async.
    pub kind: Kind,
    /// The message's text: the string itself for a char vector, else its q display; for a wrap
    /// call, the wrapped message's. At most [`MAX_RECORDED_TEXT`] bytes (lossy UTF-8).
    pub text: String,
    /// The user a wrap call (`.gw.execas`) ran the message as; `None` when not wrapped.
    pub as_user: Option<String>,
}

/// The upstream's counters, as `stats[]` replies them (under the names in brackets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections open now (`open`).
    pub open: u64,
    /// Logins accepted since the start (`accepted`).
    pub accepted: u64,
    /// Logins refused since the start (`refused`).
    pub refused: u64,
    /// Sync messages received (`sync`).
    pub sync_messages: u64,
    /// Async messages received (`async`).
    pub async_messages: u64,
    /// The most connections open at once (`peak`).
    pub peak: u64,
    /// Messages being evaluated now (`busy`): at most 1 when evaluation is serialised.
    pub busy: u64,
    /// Messages waiting for the evaluation lock now (`waiting`): held back by another
    /// connection's query, as in a single-threaded kdb+.
    pub waiting: u64,
    /// The most sync messages one connection had in flight at once (`pipelined`): received but
    /// not yet answered. A client that waits for each reply before its next query keeps it at 1.
    pub pipelined: u64,
    /// Received messages the record has forgotten, past [`MAX_RECORDED`] (`forgotten`).
    pub forgotten: u64,
}

impl Stats {
    /// The `stats[]` dictionary's keys and values, in order.
    pub fn entries(&self) -> [(&'static str, u64); 10] {
        [
            ("open", self.open),
            ("accepted", self.accepted),
            ("refused", self.refused),
            ("sync", self.sync_messages),
            ("async", self.async_messages),
            ("peak", self.peak),
            ("busy", self.busy),
            ("waiting", self.waiting),
            ("pipelined", self.pipelined),
            ("forgotten", self.forgotten),
        ]
    }
}

/// Something to write to a client, in the order queued.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A whole encoded message.
    Frame(Arc<[u8]>),
    /// The reply `bytes[n]` (a byte vector of `n` bytes, `i mod 256`), written in chunks.
    Bytes(usize),
    /// The start of the reply `bytes[n]` (its header and half its body), then a close.
    Die(usize),
    /// Bytes that are not a q IPC header.
    Garbage,
    /// Write what was queued before, then close.
    Close,
}

/// The sending side of a connection's outbox.
pub(crate) type Outbox = mpsc::UnboundedSender<Outgoing>;

/// A live connection, as other connections see it (to publish to it).
#[derive(Debug)]
struct Peer {
    /// The capability negotiated in the handshake: it decides what may be sent to it.
    capability: u8,
    outbox: Outbox,
}

/// A subscriber of a table: where to send, and which syms it wants.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) handle: i32,
    pub(crate) capability: u8,
    pub(crate) filter: Filter,
    pub(crate) outbox: Outbox,
}

/// The upstream's shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The name reported in replies.
    pub(crate) name: String,
    /// The wrap function's name.
    pub(crate) wrap: Vec<u8>,
    /// The accepted logins; empty accepts anyone.
    users: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether large messages are compressed.
    pub(crate) compress: bool,
    /// Held while a message is evaluated when evaluation is serialised: a tokio mutex because
    /// `sleep` holds it across an `.await`, and fair (FIFO), as q serves its queue in order.
    pub(crate) eval_lock: Option<tokio::sync::Mutex<()>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Handle → the connection; a handle is given again only once its connection is removed,
    /// with its subscriptions, in the same critical section.
    connections: BTreeMap<i32, Peer>,
    /// Table name → subscriber handle → its filter.
    subscriptions: BTreeMap<&'static str, BTreeMap<i32, Filter>>,
    received: VecDeque<Received>,
    stats: Stats,
    /// The `seq` of the next published row.
    next_seq: i64,
}

impl Shared {
    pub(crate) fn new(options: &UpstreamOptions) -> Self {
        Self {
            name: options.name.clone(),
            wrap: options.wrap.as_bytes().to_vec(),
            users: options
                .users
                .iter()
                .map(|(user, password)| (user.as_bytes().to_vec(), password.as_bytes().to_vec()))
                .collect(),
            compress: options.compress,
            eval_lock: options.serialise.then(|| tokio::sync::Mutex::new(())),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps and counters that are still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a login is accepted: any, with no users configured; else a configured user with
    /// exactly its password.
    pub(crate) fn accepts(&self, user: &[u8], password: Option<&[u8]>) -> bool {
        self.users.is_empty()
            || self
                .users
                .iter()
                .any(|(u, p)| u == user && password == Some(p.as_slice()))
    }

    /// Counts a refused login.
    pub(crate) fn refused(&self) {
        self.state().stats.refused += 1;
    }

    /// Adds a connection whose login was accepted; returns its handle, the lowest one free, as
    /// kdb+'s are (the lowest free file descriptor).
    pub(crate) fn register(&self, capability: u8, outbox: Outbox) -> i32 {
        let mut state = self.state();
        let mut handle = FIRST_HANDLE;
        // The keys are in order: the first gap is the lowest free handle.
        for &taken in state.connections.keys() {
            if taken != handle {
                break;
            }
            handle += 1;
        }
        state
            .connections
            .insert(handle, Peer { capability, outbox });
        state.stats.accepted += 1;
        state.stats.open = state.connections.len() as u64;
        state.stats.peak = state.stats.peak.max(state.stats.open);
        handle
    }

    /// Removes a closed connection and its subscriptions (kdb+tick's `.u.del` from `.z.pc`).
    pub(crate) fn deregister(&self, handle: i32) {
        let mut state = self.state();
        state.connections.remove(&handle);
        for subscribers in state.subscriptions.values_mut() {
            subscribers.remove(&handle);
        }
        state.stats.open = state.connections.len() as u64;
    }

    /// Records a received message and counts it.
    pub(crate) fn record(&self, received: Received) {
        let mut state = self.state();
        match received.kind {
            Kind::Sync => state.stats.sync_messages += 1,
            Kind::Async => state.stats.async_messages += 1,
        }
        if state.received.len() >= MAX_RECORDED {
            state.received.pop_front();
            state.stats.forgotten += 1;
        }
        state.received.push_back(received);
    }

    /// Notes that a connection has `count` sync messages in flight.
    pub(crate) fn in_flight(&self, count: usize) {
        let mut state = self.state();
        state.stats.pipelined = state.stats.pipelined.max(count as u64);
    }

    /// Counts a message waiting for the evaluation lock until the guard drops.
    pub(crate) fn waiting(self: &Arc<Self>) -> Gauge {
        self.state().stats.waiting += 1;
        Gauge {
            shared: Arc::clone(self),
            waiting: true,
        }
    }

    /// Counts a message being evaluated until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Gauge {
        self.state().stats.busy += 1;
        Gauge {
            shared: Arc::clone(self),
            waiting: false,
        }
    }

    /// Subscribes `handle` to `table`, replacing its earlier subscription to it.
    pub(crate) fn subscribe(&self, handle: i32, table: &'static str, filter: Filter) {
        self.state()
            .subscriptions
            .entry(table)
            .or_default()
            .insert(handle, filter);
    }

    /// The live subscribers of `table`, in handle order.
    pub(crate) fn subscribers(&self, table: &str) -> Vec<Subscriber> {
        let state = self.state();
        let Some(subscribers) = state.subscriptions.get(table) else {
            return Vec::new();
        };
        subscribers
            .iter()
            .filter_map(|(&handle, filter)| {
                let peer = state.connections.get(&handle)?;
                Some(Subscriber {
                    handle,
                    capability: peer.capability,
                    filter: filter.clone(),
                    outbox: peer.outbox.clone(),
                })
            })
            .collect()
    }

    /// Takes `count` consecutive `seq` numbers; returns the first.
    pub(crate) fn take_seq(&self, count: i64) -> i64 {
        let mut state = self.state();
        let first = state.next_seq;
        state.next_seq = first.saturating_add(count);
        first
    }

    pub(crate) fn stats(&self) -> Stats {
        self.state().stats
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state().received.iter().cloned().collect()
    }
}

/// Counts a message as waiting or busy while it lives; cancellation-safe (a dropped evaluation
/// still uncounts itself).
#[derive(Debug)]
pub(crate) struct Gauge {
    shared: Arc<Shared>,
    waiting: bool,
}

impl Drop for Gauge {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        let counter = if self.waiting {
            &mut state.stats.waiting
        } else {
            &mut state.stats.busy
        };
        *counter = counter.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(i: usize) -> Received {
        Received {
            handle: FIRST_HANDLE,
            user: "u".to_owned(),
            kind: Kind::Async,
            text: i.to_string(),
            as_user: None,
        }
    }

    #[test]
    fn the_record_forgets_the_oldest_past_its_limit() {
        let shared = Shared::new(&UpstreamOptions::default());
        for i in 0..MAX_RECORDED + 2 {
            shared.record(received(i));
        }
        let record = shared.received();
        assert_eq!(record.len(), MAX_RECORDED);
        assert_eq!(record[0].text, "2");
        let stats = shared.stats();
        assert_eq!(
            (stats.forgotten, stats.async_messages),
            (2, MAX_RECORDED as u64 + 2)
        );
    }

    #[test]
    fn handles_are_the_lowest_free() {
        let shared = Shared::new(&UpstreamOptions::default());
        let (outbox, _rx) = mpsc::unbounded_channel();
        let handles: Vec<i32> = (0..3).map(|_| shared.register(3, outbox.clone())).collect();
        assert_eq!(handles, [4, 5, 6]);
        shared.deregister(4);
        assert_eq!(shared.register(3, outbox.clone()), 4);
        assert_eq!(shared.register(3, outbox), 7);
        assert_eq!((shared.stats().open, shared.stats().peak), (4, 4));
    }

    #[test]
    fn logins_match_a_user_and_its_password() {
        let anyone = Shared::new(&UpstreamOptions::default());
        assert!(anyone.accepts(b"", None));
        let options = UpstreamOptions {
            users: vec![("svc".to_owned(), "pw".to_owned())],
            ..UpstreamOptions::default()
        };
        let guarded = Shared::new(&options);
        assert!(guarded.accepts(b"svc", Some(b"pw")));
        assert!(!guarded.accepts(b"svc", Some(b"pw2")));
        assert!(!guarded.accepts(b"svc", None));
        assert!(!guarded.accepts(b"other", Some(b"pw")));
    }
}
