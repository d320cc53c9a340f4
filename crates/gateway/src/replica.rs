//! One upstream replica's state: whether it is up, and what it is doing, for routing, health
//! checks and `qgate upstreams`.
//!
//! ```text
//!   unknown ──connect ok / probe ok──► up ──connect failed / probe failed──► down
//!      │                                ▲                                     │
//!      └──connect failed────────────────┼────────────► down ──probe ok────────┘
//! ```
//!
//! Every change of state is one log line naming the service, the replica and the cause.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use qgate_metrics::AtomicHistogram;

use crate::options::ServerAddress;

/// A replica's health, as the last connection or probe saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Its last connection or probe failed: no new queries go to it until a probe succeeds.
    Down = 2,
    /// Nothing has been tried yet.
    Unknown = 0,
    /// Its last connection or probe succeeded.
    Up = 1,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Unknown,
        }
    }

    /// The word `qgate upstreams` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Unknown => "unknown",
            Self::Up => "up",
        }
    }
}

/// One replica of a service.
#[derive(Debug)]
pub(crate) struct Replica {
    /// The service it belongs to.
    pub(crate) service: String,
    pub(crate) address: ServerAddress,
    health: AtomicU8,
    /// Connections open to it now (pinned and pooled, not the health check's).
    pub(crate) connections: AtomicUsize,
    /// Queries sent to it whose replies have not come back whole.
    pub(crate) in_flight: AtomicUsize,
    /// The last error seen, for `qgate upstreams`.
    last_error: Mutex<Option<String>>,
    /// Errors seen since start, for the metrics.
    pub(crate) errors: AtomicU64,
    /// The time of each query sent to it, for the metrics.
    pub(crate) query_duration: AtomicHistogram,
}

impl Replica {
    pub(crate) fn new(service: &str, address: ServerAddress) -> Self {
        Self {
            service: service.to_owned(),
            address,
            health: AtomicU8::new(Health::Unknown as u8),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_error: Mutex::new(None),
            errors: AtomicU64::new(0),
            query_duration: AtomicHistogram::for_queries(),
        }
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Whether new work may go to it: up, or not tried yet.
    pub(crate) fn usable(&self) -> bool {
        self.health() != Health::Down
    }

    /// Records a success; logs the change when it was not up.
    pub(crate) fn mark_up(&self, how: &str) {
        let was = Health::from_u8(self.health.swap(Health::Up as u8, Ordering::AcqRel));
        if was != Health::Up {
            tracing::info!(
                upstream = %self.service,
                server = %self.address,
                from = was.as_str(),
                to = "up",
                how,
                "upstream server state changed"
            );
        }
    }

    /// Records a failure; logs the change when it was not down already.
    pub(crate) fn mark_down(&self, cause: &str) {
        self.set_error(cause);
        let was = Health::from_u8(self.health.swap(Health::Down as u8, Ordering::AcqRel));
        if was != Health::Down {
            tracing::warn!(
                upstream = %self.service,
                server = %self.address,
                from = was.as_str(),
                to = "down",
                cause,
                "upstream server state changed"
            );
        }
    }

    pub(crate) fn set_error(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_owned());
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The replica's address with its service, as client errors name it.
    pub(crate) fn describe(&self) -> String {
        format!("upstream {} ({})", self.service, self.address)
    }
}

/// Counts a connection to a replica for as long as it lives.
#[derive(Debug)]
pub(crate) struct ConnectionCount(std::sync::Arc<Replica>);

impl ConnectionCount {
    pub(crate) fn new(replica: &std::sync::Arc<Replica>) -> Self {
        replica.connections.fetch_add(1, Ordering::AcqRel);
        Self(std::sync::Arc::clone(replica))
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a query in flight on a replica until dropped, and then records how long it took.
#[derive(Debug)]
pub(crate) struct InFlight(std::sync::Arc<Replica>, Instant);

impl InFlight {
    pub(crate) fn new(replica: &std::sync::Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(std::sync::Arc::clone(replica), Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.query_duration.observe(self.1.elapsed());
    }
}
