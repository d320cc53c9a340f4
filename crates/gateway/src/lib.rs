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
//! An HTTP request the chain passed (`Backend::http`) goes to the service's own HTTP on its q
//! port, on a connection of its own (`http.rs`), and a WebSocket the chain accepted
//! (`Backend::websocket`) to a WebSocket of its own there, with frames relayed both ways
//! (`ws.rs`).
//!
//! Upstream connections go connecting → idle → busy → (draining) → closed; each replica is up,
//! down or not yet tried, and every change of its state is a log line (the diagram in `replica.rs`).
//! Health checks run on connections of their own ([`Gateway::watch`]).
//!
//! A config reload replaces the services ([`Gateway::prepare`], then [`PreparedUpstreams::apply`]):
//! a service whose options did not change is kept as it is (its pool, its replicas' health), a
//! new or changed one is made afresh, and each session keeps the services in force when it
//! logged in (a pinned session's connections among them), while new sessions get the new ones.
//!
//! Timeouts are separate and named: `connect_timeout` (a connection and its login),
//! `queue_timeout` (waiting for a pooled connection) and `query_timeout` (waiting for a reply);
//! [`UpstreamOptions`] gives each default its reason.

#![warn(missing_docs)]

mod conn;
mod error;
mod exchange;
mod health;
mod http;
mod link;
mod options;
mod pool;
mod replica;
mod request;
mod service;
mod splice;
mod stream;
mod ws;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
};

use arc_swap::ArcSwap;

use qgate_hooks::{
    Backend, Credentials as ClientCredentials, ForwardError, HttpRequest, HttpResponse, Session,
    WsUpstream,
};

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
    state: Arc<State>,
}

/// The services in force, and their health checks.
#[derive(Debug)]
struct State {
    /// Read once by each session at its login, and by each status and scrape.
    current: ArcSwap<Inner>,
    /// The health-check task of each service, once [`Gateway::watch`] runs. A `std` mutex, held
    /// to start or stop tasks.
    health: Mutex<Option<Watching>>,
}

/// The health checks running, and the runtime to start new ones on.
#[derive(Debug)]
struct Watching {
    runtime: tokio::runtime::Handle,
    tasks: Vec<(Arc<Service>, tokio::task::JoinHandle<()>)>,
}

impl Watching {
    /// Runs the checks of exactly `services`: those that left stop, new ones start.
    fn follow(&mut self, services: &[Arc<Service>]) {
        self.tasks.retain(|(service, task)| {
            let kept = services.iter().any(|other| Arc::ptr_eq(service, other));
            if !kept {
                task.abort();
            }
            kept
        });
        for service in services {
            if !self
                .tasks
                .iter()
                .any(|(other, _)| Arc::ptr_eq(service, other))
            {
                let task = self.runtime.spawn(health::watch(Arc::clone(service)));
                self.tasks.push((Arc::clone(service), task));
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// New services, made and checked by [`Gateway::prepare`], ready to swap in.
#[derive(Debug)]
#[must_use = "nothing changes until it is applied"]
pub struct PreparedUpstreams {
    gateway: Gateway,
    inner: Inner,
    changes: UpstreamChanges,
}

/// What a config reload changed among the upstreams, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamChanges {
    /// Services the new config adds.
    pub added: Vec<String>,
    /// Services it leaves out.
    pub removed: Vec<String>,
    /// Services whose options changed, made afresh.
    pub changed: Vec<String>,
    /// Whether the services are in another order: the first is the default.
    pub reordered: bool,
}

impl UpstreamChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.reordered
    }
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
        let (inner, _) = Inner::new(options, None)?;
        Ok(Self {
            state: Arc::new(State {
                current: ArcSwap::from_pointee(inner),
                health: Mutex::new(None),
            }),
        })
    }

    /// The services' names, the default first.
    pub fn upstream_names(&self) -> Vec<String> {
        self.state
            .current
            .load()
            .services
            .iter()
            .map(|service| service.options.name.clone())
            .collect()
    }

    /// Runs the health checks of every replica of every service, for as long as it is polled:
    /// spawn it on the runtime that serves clients. The first round runs at once, so an
    /// upstream that is down at start is logged at start. Services that a config reload adds
    /// are checked from then on, and those it removes no longer.
    pub async fn watch(&self) {
        {
            let mut health = self
                .state
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut watching = Watching {
                runtime: tokio::runtime::Handle::current(),
                tasks: Vec::new(),
            };
            watching.follow(&self.state.current.load().services);
            *health = Some(watching);
        }
        // Dropped (the task aborted): the checks stop with it.
        let _stop = StopWatching(Arc::clone(&self.state));
        std::future::pending::<()>().await;
    }

    /// Makes the services `options` lists, reusing each service whose options did not change,
    /// without changing anything yet.
    ///
    /// # Errors
    ///
    /// As [`Gateway::new`].
    pub fn prepare(&self, options: GatewayOptions) -> Result<PreparedUpstreams, GatewayError> {
        let current = self.state.current.load_full();
        let (inner, changes) = Inner::new(options, Some(&current))?;
        Ok(PreparedUpstreams {
            gateway: self.clone(),
            inner,
            changes,
        })
    }

    /// Every replica of every service: its state, connections, requests in flight, requests
    /// queued for its service, and the last error seen.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.state
            .current
            .load()
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

impl Gateway {
    /// The service a hook's route names, or the default (the first `[[upstream]]`).
    fn service(&self, route: Option<&str>) -> Result<Arc<Service>, ForwardError> {
        let services = self.state.current.load();
        let index = match route {
            None => 0,
            Some(name) => *services.by_name.get(name).ok_or_else(|| {
                ForwardError::Refuse(format!("qgate: no upstream named {name:?}"))
            })?,
        };
        services
            .services
            .get(index)
            .cloned()
            .ok_or_else(|| ForwardError::Refuse("qgate: no upstream is configured".to_owned()))
    }
}

impl Backend for Gateway {
    type Link = GatewayLink;

    async fn open(&self, session: &Session, credentials: &ClientCredentials) -> GatewayLink {
        let login = Login {
            user: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let services = self.state.current.load_full();
        GatewayLink::open(services, Arc::clone(&session.user), login).await
    }

    async fn http(
        &self,
        route: Option<&str>,
        session: &Session,
        request: &HttpRequest,
    ) -> Result<HttpResponse, ForwardError> {
        let service = self.service(route)?;
        http::forward(&service, session, request).await
    }

    async fn websocket(
        &self,
        route: Option<&str>,
        session: &Session,
        request: &HttpRequest,
    ) -> Result<Option<WsUpstream>, ForwardError> {
        let service = self.service(route)?;
        ws::open(&service, session, request).await.map(Some)
    }
}

/// The upstreams' metrics, read at each scrape of `/metrics`: the same state as
/// [`Gateway::status`], with each replica's error count and query durations.
impl qgate_metrics::UpstreamSource for Gateway {
    fn upstreams(&self) -> Vec<qgate_metrics::Upstream> {
        self.state
            .current
            .load()
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

/// Stops the health checks when [`Gateway::watch`] is dropped.
struct StopWatching(Arc<State>);

impl Drop for StopWatching {
    fn drop(&mut self) {
        let watching = self
            .0
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(watching);
    }
}

impl PreparedUpstreams {
    /// Swaps the new services in: sessions that log in from now on use them, and the health
    /// checks follow. What changed, by name.
    pub fn apply(self) -> UpstreamChanges {
        let Self {
            gateway,
            inner,
            changes,
        } = self;
        if changes.is_empty() {
            return changes;
        }
        let services = inner.services.clone();
        gateway.state.current.store(Arc::new(inner));
        if let Some(watching) = gateway
            .state
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            watching.follow(&services);
        }
        tracing::info!(
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            "upstreams replaced: sessions that log in from now on use them"
        );
        changes
    }
}

impl Inner {
    /// The services `options` lists, each reused from `current` when its options are the same
    /// there, and what changed against `current`.
    fn new(
        options: GatewayOptions,
        current: Option<&Inner>,
    ) -> Result<(Self, UpstreamChanges), GatewayError> {
        if options.upstreams.is_empty() {
            return Err(GatewayError::Invalid {
                upstream: String::new(),
                message: "no upstream: a gateway needs at least one [[upstream]]".to_owned(),
            });
        }
        let mut changes = UpstreamChanges::default();
        let mut by_name = HashMap::new();
        let mut services = Vec::with_capacity(options.upstreams.len());
        for (index, upstream) in options.upstreams.into_iter().enumerate() {
            if by_name.insert(upstream.name.clone(), index).is_some() {
                return Err(GatewayError::DuplicateName(upstream.name));
            }
            let earlier = current.and_then(|current| {
                current
                    .services
                    .iter()
                    .find(|service| service.options.name == upstream.name)
            });
            match earlier {
                Some(service) if service.options == upstream => services.push(Arc::clone(service)),
                Some(_) => {
                    changes.changed.push(upstream.name.clone());
                    services.push(Arc::new(Service::new(upstream)?));
                }
                None => {
                    changes.added.push(upstream.name.clone());
                    services.push(Arc::new(Service::new(upstream)?));
                }
            }
        }
        if let Some(current) = current {
            changes.removed = current
                .services
                .iter()
                .map(|service| service.options.name.clone())
                .filter(|name| !by_name.contains_key(name))
                .collect();
            // The services that stayed, in their old order and in the new.
            let stayed = |inner: &[Arc<Service>]| {
                inner
                    .iter()
                    .map(|service| service.options.name.clone())
                    .filter(|name| current.by_name.contains_key(name) && by_name.contains_key(name))
                    .collect::<Vec<_>>()
            };
            changes.reordered = stayed(&current.services) != stayed(&services);
        }
        Ok((Self { services, by_name }, changes))
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
