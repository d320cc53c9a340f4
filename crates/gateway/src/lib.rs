//! qgate's gateway: what the plugin chain passes goes to upstream kdb+ processes, and what they
//! answer comes back to the client as the bytes it came as.
//!
//! The server decides nothing here and this crate decides nothing of policy: the chain decides
//! (`qgate_hooks::Hooks`), and then the gateway forwards what nothing answered
//! ([`qgate_hooks::Backend`]). This crate owns every upstream connection; a client task never
//! touches an upstream socket except through its session's [`GatewayLink`].
//!
//! ```text
//!   client task ── Link::sync(route, request) ──► service (route, or the first [[upstream]])
//!                                                   │
//!                        pinned: the session's own connection (opened at login, closed with it)
//!                        pooled: a connection leased from the pool (fair queue between users)
//!                                                   │
//!                                                   ▼
//!                         exchange: write the request, relay pushes and the reply as bytes
//! ```
//!
//! Upstream connections go connecting → idle → busy → (draining) → closed; each replica is up,
//! down or not yet tried, and every change of its state is a log line (the diagram in `replica.rs`).
//! Health checks run on connections of their own ([`Gateway::watch`]).
//!
//! Timeouts are separate and named: `connect_timeout` (a connection and its login),
//! `queue_timeout` (waiting for a pooled connection) and `query_timeout` (waiting for a reply);
//! [`UpstreamOptions`] gives each default its reason.

#![warn(missing_docs)]

mod conn;
mod error;
mod exchange;
mod health;
mod link;
mod options;
mod pool;
mod replica;
mod request;
mod service;
mod splice;
mod stream;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use qgate_hooks::{Backend, Credentials as ClientCredentials, Session};

// The public surface: the gateway and its link, its options, its error, and its status.
use crate::{conn::Login, service::Service};
pub use crate::{
    error::GatewayError,
    link::GatewayLink,
    options::{Credentials, GatewayOptions, Mode, ServerAddress, UpstreamOptions, UpstreamTls},
    replica::Health,
};

/// The gateway: every upstream service, and the [`Backend`] that forwards to them.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// What every link shares.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The services in configuration order; the first is the default.
    pub(crate) services: Vec<Arc<Service>>,
    pub(crate) by_name: HashMap<String, usize>,
}

impl Gateway {
    /// Checks the options and loads each service's TLS files. Nothing is connected yet: the
    /// first health checks ([`Gateway::watch`]) and the first sessions do that, so an upstream
    /// that is down at start does not stop qgate from starting.
    ///
    /// # Errors
    ///
    /// [`GatewayError`] naming the service and the setting that cannot work.
    pub fn new(options: GatewayOptions) -> Result<Self, GatewayError> {
        if options.upstreams.is_empty() {
            return Err(GatewayError::Invalid {
                upstream: String::new(),
                message: "no upstream: a gateway needs at least one [[upstream]]".to_owned(),
            });
        }
        let mut by_name = HashMap::new();
        let mut services = Vec::with_capacity(options.upstreams.len());
        for (index, upstream) in options.upstreams.into_iter().enumerate() {
            if by_name.insert(upstream.name.clone(), index).is_some() {
                return Err(GatewayError::DuplicateName(upstream.name));
            }
            services.push(Arc::new(Service::new(upstream)?));
        }
        Ok(Self {
            inner: Arc::new(Inner { services, by_name }),
        })
    }

    /// The services' names, the default first.
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> {
        self.inner
            .services
            .iter()
            .map(|service| service.options.name.as_str())
    }

    /// Runs the health checks of every replica of every service, for ever: spawn it on the
    /// runtime that serves clients. The first round runs at once, so an upstream that is down at
    /// start is logged at start.
    pub async fn watch(&self) {
        let tasks: Vec<_> = self
            .inner
            .services
            .iter()
            .map(|service| tokio::spawn(health::watch(Arc::clone(service))))
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Every replica of every service: its state, connections, requests in flight, requests
    /// queued for its service, and the last error seen.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.inner
            .services
            .iter()
            .map(|service| UpstreamStatus {
                name: service.options.name.clone(),
                mode: service.options.mode,
                queued: if service.is_pooled() {
                    service
                        .pool()
                        .queued
                        .load(std::sync::atomic::Ordering::Acquire)
                } else {
                    0
                },
                servers: service
                    .replicas
                    .iter()
                    .map(|replica| ServerStatus {
                        address: replica.address.to_string(),
                        health: replica.health(),
                        connections: replica
                            .connections
                            .load(std::sync::atomic::Ordering::Acquire),
                        in_flight: replica.in_flight.load(std::sync::atomic::Ordering::Acquire),
                        last_error: replica.last_error(),
                    })
                    .collect(),
            })
            .collect()
    }
}

impl Backend for Gateway {
    type Link = GatewayLink;

    async fn open(&self, session: &Session, credentials: &ClientCredentials) -> GatewayLink {
        let login = Login {
            user: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        GatewayLink::open(Arc::clone(&self.inner), Arc::clone(&session.user), login).await
    }
}

/// The upstreams' metrics, read at each scrape of `/metrics`: the same state as
/// [`Gateway::status`], with each replica's error count and query durations.
impl qgate_metrics::UpstreamSource for Gateway {
    fn upstreams(&self) -> Vec<qgate_metrics::Upstream> {
        self.inner
            .services
            .iter()
            .map(|service| qgate_metrics::Upstream {
                name: service.options.name.clone(),
                queued: if service.is_pooled() {
                    service.pool().queued.load(Ordering::Acquire) as u64
                } else {
                    0
                },
                servers: service
                    .replicas
                    .iter()
                    .map(|replica| qgate_metrics::UpstreamServer {
                        upstream: service.options.name.clone(),
                        server: replica.address.to_string(),
                        up: replica.health() == Health::Up,
                        connections: replica.connections.load(Ordering::Acquire) as u64,
                        in_flight: replica.in_flight.load(Ordering::Acquire) as u64,
                        errors: replica.errors.load(Ordering::Relaxed),
                        query_duration: replica.query_duration.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// One service's state, for `qgate upstreams`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamStatus {
    /// The service's name.
    pub name: String,
    /// Pinned or pooled.
    pub mode: Mode,
    /// Requests waiting for a pooled connection.
    pub queued: usize,
    /// Its replicas.
    pub servers: Vec<ServerStatus>,
}

/// One replica's state, for `qgate upstreams`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// `HOST:PORT`.
    pub address: String,
    /// Up, down, or not tried yet.
    pub health: Health,
    /// Connections open to it (sessions' and the pool's; not the health check's).
    pub connections: usize,
    /// Requests sent to it whose replies have not come back whole.
    pub in_flight: usize,
    /// The last error seen, if any.
    pub last_error: Option<String>,
}
