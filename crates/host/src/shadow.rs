//! Shadow plugins (`mode = "shadow"`): candidates run beside the chain, on real traffic, with no
//! say in what a client gets.
//!
//! After the live chain has decided an auth, sync or async event, the host queues a copy of it
//! (the session, the message or the credentials, and the live decision) for the shadow worker,
//! a thread of its own at the lowest scheduling priority (`SCHED_BATCH`, nice 19), so that a
//! shadow plugin that spins competes only for the CPU the connections leave. The queue is bounded
//! ([`QUEUE`]); an event that finds it full is dropped and counted
//! (`qgate_shadow_dropped_total`), and so is a message over [`MAX_MESSAGE_BYTES`], whose copy would
//! cost the live path more than a shadow is worth. Queuing never wakes the worker: it wakes every
//! [`TICK`] and takes what is queued.
//!
//! The worker asks each shadow plugin that takes the event, on its own (not as a chain), under
//! the plugin's own budget and memory cap. The shadow disagrees when one of the two denies what
//! the other lets through (a pass, a reply, a route or an allow all let it through); each
//! disagreement is counted (`qgate_shadow_disagreements_total{plugin}`) and, with a decision log,
//! recorded with both decisions. A shadow plugin's trap or timeout is its verdict (a deny, or a
//! pass when `fail_open`), and touches nothing else.

use std::{
    sync::{
        Arc,
        mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use qgate_hooks::{
    Credentials, DecisionEvent, DecisionKind, DecisionRecord, DecisionSink, Request, Session,
};
use qgate_metrics::Metrics;

use crate::{
    ask_message,
    bindings::types,
    facts::FactsCell,
    state::{self, Lent, Made},
    swap::Slot,
};

/// How many events may wait for the shadow worker: a few seconds of a busy server's events.
pub(crate) const QUEUE: usize = 16_384;

/// The largest message copied for the shadow plugins: 1 MiB. A larger one is counted as dropped.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How often the worker takes what is queued.
const TICK: Duration = Duration::from_millis(5);

/// What a shadow plugin is asked about.
pub(crate) enum Asked<'a> {
    /// A login.
    Auth(&'a Credentials),
    /// A sync message.
    Sync(&'a Request),
    /// An async message.
    Async(&'a Request),
}

/// An event, owned, on its way to the worker.
enum Event {
    Auth(Credentials),
    Sync(Request),
    Async(Request),
}

struct Job {
    /// The shadow plugins of the chain that decided it.
    slots: Arc<[Arc<Slot>]>,
    session: Session,
    event: Event,
    live: DecisionKind,
}

/// The queue to the shadow worker.
pub(crate) struct Shadows {
    queue: SyncSender<Job>,
    metrics: Metrics,
    _worker: JoinHandle<()>,
}

impl Shadows {
    /// Starts the worker. It runs until this is dropped; each job names the shadow plugins that
    /// ask about it, those of the chain that decided it, so that a config reload needs no word
    /// with the worker.
    pub(crate) fn start(
        decisions: Option<Arc<dyn DecisionSink>>,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::sync_channel(QUEUE);
        let worker_metrics = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("qgate-shadow".into())
            .spawn(move || {
                crate::swap::lower_priority();
                work(&jobs, decisions.as_deref(), &worker_metrics);
            })?;
        Ok(Self {
            queue,
            metrics,
            _worker: worker,
        })
    }

    /// Queues an event the live chain decided as `live` for the shadow plugins `slots`, or counts
    /// it dropped.
    pub(crate) fn submit(
        &self,
        slots: &Arc<[Arc<Slot>]>,
        session: &Session,
        asked: Asked<'_>,
        live: DecisionKind,
    ) {
        let event = match asked {
            Asked::Auth(credentials) => Event::Auth(credentials.clone()),
            Asked::Sync(request) | Asked::Async(request)
                if request.body().len() > MAX_MESSAGE_BYTES =>
            {
                self.metrics.shadow_dropped();
                return;
            }
            Asked::Sync(request) => Event::Sync(request.clone()),
            Asked::Async(request) => Event::Async(request.clone()),
        };
        let job = Job {
            slots: Arc::clone(slots),
            session: session.clone(),
            event,
            live,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(job)
        {
            self.metrics.shadow_dropped();
        }
    }
}

/// The worker: every [`TICK`], each queued event through each shadow plugin, until the host is
/// dropped.
fn work(jobs: &Receiver<Job>, decisions: Option<&dyn DecisionSink>, metrics: &Metrics) {
    loop {
        loop {
            match jobs.try_recv() {
                Ok(job) => {
                    for slot in &*job.slots {
                        shadow(slot, &job, decisions, metrics);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a dedicated thread, not an async worker"
        )]
        std::thread::sleep(TICK);
    }
}

/// Asks one shadow plugin about `job`, and records a disagreement.
fn shadow(slot: &Slot, job: &Job, decisions: Option<&dyn DecisionSink>, metrics: &Metrics) {
    let plugin = slot.current.load();
    let started = Instant::now();
    let wit_session = state::session(&job.session);
    let (event, decision, reason, request) = match &job.event {
        Event::Auth(credentials) => {
            if !plugin.events.contains(types::Events::AUTH) {
                return;
            }
            let result = plugin.call(None, |instance| {
                instance.bindings.call_on_auth(
                    &mut instance.store,
                    &wit_session,
                    credentials.password.as_deref(),
                )
            });
            let (decision, reason) = match result {
                Ok(types::AuthVerdict::Allow(_)) => (DecisionKind::Allowed, None),
                Ok(types::AuthVerdict::Deny) => (DecisionKind::Denied, None),
                Ok(types::AuthVerdict::Pass) => (DecisionKind::Passed, None),
                Err(failure) => failed(plugin.fail_open, &failure),
            };
            (DecisionEvent::Auth, decision, reason, None)
        }
        Event::Sync(request) | Event::Async(request) => {
            let sync = matches!(job.event, Event::Sync(_));
            let flag = if sync {
                types::Events::SYNC
            } else {
                types::Events::ASYNC_MESSAGE
            };
            if !plugin.events.contains(flag) {
                return;
            }
            let made = Made::default();
            let facts = FactsCell::new();
            let lent = Lent::request(&job.session, &made, request, &facts);
            let (decision, reason) =
                match ask_message(&plugin, lent, sync).map(|(verdict, _)| verdict) {
                    Ok(types::Verdict::Pass) => (DecisionKind::Passed, None),
                    Ok(types::Verdict::Deny(message)) => (DecisionKind::Denied, Some(message)),
                    Ok(types::Verdict::Reply(_)) => (DecisionKind::Replied, None),
                    Ok(types::Verdict::Route(upstream)) => (DecisionKind::Routed, Some(upstream)),
                    Err(failure) => failed(plugin.fail_open, &failure),
                };
            let event = if sync {
                DecisionEvent::Sync
            } else {
                DecisionEvent::Async
            };
            (event, decision, reason, Some((request, made)))
        }
    };
    let denies = |kind: DecisionKind| kind == DecisionKind::Denied;
    if denies(decision) == denies(job.live) {
        return;
    }
    metrics.shadow_disagreement(&plugin.shared.name);
    let Some(sink) = decisions else { return };
    let mut record = DecisionRecord::new(job.session.clone(), event, decision);
    if let Some((request, made)) = request {
        let summary = made.summary(request);
        record.head = summary.head.as_deref().map(Arc::from);
        if sink.include_text() {
            record.text = summary.text.as_deref().map(Arc::from);
        }
        record.size = summary.size;
        if request.body().len() <= sink.include_bytes() {
            record.bytes = Some(qgate_hooks::RecordedBytes {
                body: request.body().to_vec(),
                endian: request.endian(),
            });
        }
    }
    record.decided_by = Some(plugin.shared.name.clone());
    record.version = Some(Arc::from(plugin.shared.version.as_str()));
    record.reason = reason;
    record.latency = started.elapsed();
    record.live = Some(job.live);
    sink.record(record);
}

/// A failed shadow call as its verdict: a deny, or a pass for a plugin configured `fail_open`.
fn failed(fail_open: bool, failure: &crate::plugin::Failure) -> (DecisionKind, Option<String>) {
    if fail_open {
        (
            DecisionKind::Passed,
            Some(format!("plugin failed: {failure}")),
        )
    } else {
        (
            DecisionKind::Denied,
            Some(format!("plugin failed: {failure}")),
        )
    }
}
