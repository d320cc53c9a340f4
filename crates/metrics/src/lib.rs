//! qgate's Prometheus metrics: every metric family in one [`Metrics`] handle, which the server,
//! the plugin host and the binary share, and [`Metrics::render`] for the `/metrics` listener.
//!
//! Recording costs an atomic add or two: the handles of fixed label sets (an event and its
//! decision, a login's result) are made once, at start, and kept in arrays; a plugin version's
//! handles are made when the version loads ([`PluginMetrics`]); histograms are arrays of atomic
//! buckets ([`AtomicHistogram`]), not a value behind a lock. What can be read when asked (the
//! upstreams' state) is read at scrape time from an [`UpstreamSource`], not counted as it
//! happens.
//!
//! Labels are bounded: events, decisions and results are fixed words; plugins and upstreams are
//! the config's names; a plugin version is its digest, one per version loaded. No user name and
//! no query text is ever a label.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

/// The registry [`Metrics::register`] registers in and [`Metrics::render`] renders.
pub use prometheus_client::registry::Registry;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder},
    metrics::{
        MetricType, TypedMetric,
        counter::{ConstCounter, Counter},
        exemplar::Exemplar,
        family::Family,
        gauge::{ConstGauge, Gauge},
        info::Info,
    },
};

/// The upper bounds of request durations, in seconds: 50 us to 13 s, each four times the last.
/// A request answered by a plugin takes tens of microseconds; one forwarded upstream, whatever the
/// query takes.
const REQUEST_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_2, 0.000_8, 0.003_2, 0.012_8, 0.051_2, 0.204_8, 0.819_2, 3.276_8, 13.107_2,
];

/// The upper bounds of plugin call durations, in seconds: 10 us to 164 ms, each four times the
/// last. A policy decides in microseconds; its time budget is milliseconds.
const PLUGIN_BUCKETS: [f64; 8] = [
    0.000_01, 0.000_04, 0.000_16, 0.000_64, 0.002_56, 0.010_24, 0.040_96, 0.163_84,
];

/// One async message in this many, per connection, is timed for
/// `qgate_request_duration_seconds{event="async"}`; every one is counted.
///
/// 64: timing a message takes two clock reads, 60 ns on a loaded 2-core machine, while qgate
/// ingests a small async message in about 100 ns (10 M messages/s in BENCHMARKS.md): timing each
/// would cost a third of ingest. One in 64 costs about 1 ns a message and still gives thousands
/// of samples a second on a busy feed. Sync requests, which take microseconds, are all timed.
pub const ASYNC_SAMPLE: u32 = 64;

/// One plugin call in this many, per thread, is timed for
/// `qgate_plugin_call_duration_seconds`; every one is counted.
///
/// 16: the echo plugin answers in about 270 ns a message (3.7 M messages/s in BENCHMARKS.md), so
/// two clock reads a call would cost a fifth of it; one call in 16 costs 4 ns.
pub const PLUGIN_SAMPLE: u32 = 16;

/// A message's kind, as the plugins see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A sync request (`.z.pg`).
    Sync,
    /// An async message (`.z.ps`).
    Async,
}

impl Event {
    const ALL: [Event; 2] = [Event::Sync, Event::Async];

    fn label(self) -> &'static str {
        match self {
            Event::Sync => "sync",
            Event::Async => "async",
        }
    }
}

/// What was decided about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answered by qgate: a plugin's reply, or qgate's own answer.
    Reply,
    /// Refused with an error (a plugin's deny, `-u`'s restriction).
    Deny,
    /// Passed to the backend, to the first upstream.
    Pass,
    /// Passed to the backend, to a named upstream.
    Route,
}

impl Decision {
    const ALL: [Decision; 4] = [
        Decision::Reply,
        Decision::Deny,
        Decision::Pass,
        Decision::Route,
    ];

    fn label(self) -> &'static str {
        match self {
            Decision::Reply => "reply",
            Decision::Deny => "deny",
            Decision::Pass => "pass",
            Decision::Route => "route",
        }
    }
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// The credentials were accepted and the client got its capability byte.
    Accepted,
    /// The password file or the auth hook refused the credentials.
    Denied,
    /// Refused without a check: the address queued up too many attempts after failures.
    Throttled,
    /// The credentials were good but a connection limit was reached.
    OverLimit,
}

impl Login {
    const ALL: [Login; 4] = [
        Login::Accepted,
        Login::Denied,
        Login::Throttled,
        Login::OverLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Login::Accepted => "accepted",
            Login::Denied => "denied",
            Login::Throttled => "throttled",
            Login::OverLimit => "over_limit",
        }
    }
}

/// A histogram of durations whose buckets are atomics: recording is three atomic adds, with no
/// lock (prometheus-client's own `Histogram` takes a mutex on every observation).
///
/// The sum is kept in nanoseconds, an integer, so that it can be an atomic add too.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One count per bound, and the last for `+Inf`: not cumulative, summed when rendered.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram of query durations, with the buckets of `qgate_request_duration_seconds`.
    pub fn for_queries() -> Self {
        Self::new(&REQUEST_BUCKETS)
    }

    fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.inner.bounds.len());
        if let Some(count) = self.inner.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        // The encoder takes each bucket's own count and writes the cumulative ones.
        let bounds = self.inner.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.inner.counts.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        // Nanoseconds to seconds: a sum past 2^53 ns (104 days of request time) rounds.
        #[expect(clippy::cast_precision_loss, reason = "a sum of seconds may round")]
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<Vec<(String, String)>, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The labels of a plugin version's calls.
type PluginLabels = [(&'static str, String); 2];
/// The labels of a plugin version's calls by result.
type PluginResultLabels = [(&'static str, String); 3];

/// Every metric qgate records. Cloning it is cheap and every clone records into the same
/// metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connections: Gauge,
    connections_total: Counter,
    logins: [Counter; Login::ALL.len()],
    /// By [`Event`], then [`Decision`].
    requests: [[Counter; Decision::ALL.len()]; Event::ALL.len()],
    request_duration: [AtomicHistogram; Event::ALL.len()],
    plugin_calls: Family<PluginResultLabels, Counter>,
    plugin_call_duration: Family<PluginLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    plugin_swaps: Family<[(&'static str, String); 2], Counter>,
    tls_expiry: Gauge<i64, AtomicI64>,
    decisions_dropped: Counter,
    shadow_disagreements: Family<[(&'static str, String); 1], Counter>,
    shadow_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics that nobody reads: they are recorded (a few atomic adds) but never rendered. For
    /// a server without a `[metrics]` listener, and for tests.
    pub fn new() -> Self {
        let plugin_histogram: fn() -> AtomicHistogram = || AtomicHistogram::new(&PLUGIN_BUCKETS);
        Self {
            inner: Arc::new(Inner {
                connections: Gauge::default(),
                connections_total: Counter::default(),
                logins: Default::default(),
                requests: Default::default(),
                request_duration: Event::ALL.map(|_| AtomicHistogram::new(&REQUEST_BUCKETS)),
                plugin_calls: Family::default(),
                plugin_call_duration: Family::new_with_constructor(plugin_histogram),
                plugin_swaps: Family::default(),
                tls_expiry: Gauge::default(),
                decisions_dropped: Counter::default(),
                shadow_disagreements: Family::default(),
                shadow_dropped: Counter::default(),
            }),
        }
    }

    /// Metrics registered in `registry`, with `version` as `qgate_build_info`'s label.
    pub fn register(registry: &mut Registry, version: &'static str) -> Self {
        let metrics = Self::new();
        let inner = &metrics.inner;
        registry.register(
            "qgate_build",
            "qgate's version",
            Info::new([("version", version)]),
        );
        registry.register(
            "qgate_connections_open",
            "Client connections open now, in their handshake or logged in",
            inner.connections.clone(),
        );
        registry.register(
            "qgate_connections",
            "Client connections accepted",
            inner.connections_total.clone(),
        );
        registry.register(
            "qgate_logins",
            "Login attempts, by result (accepted, denied, throttled, over_limit)",
            Labelled::new("result", Login::ALL.map(Login::label), inner.logins.clone()),
        );
        let requests = Event::ALL
            .iter()
            .zip(&inner.requests)
            .flat_map(|(event, decisions)| {
                Decision::ALL
                    .iter()
                    .zip(decisions)
                    .map(|(decision, counter)| {
                        (
                            vec![("event", event.label()), ("decision", decision.label())],
                            counter.clone(),
                        )
                    })
            })
            .collect();
        registry.register(
            "qgate_requests",
            "Messages from clients, by event (sync, async) and decision (reply, deny, pass, route)",
            Fixed(requests),
        );
        let durations = Event::ALL
            .iter()
            .zip(&inner.request_duration)
            .map(|(event, histogram)| (vec![("event", event.label())], histogram.clone()))
            .collect();
        registry.register(
            "qgate_request_duration_seconds",
            "Time from a message's arrival to its reply sent (sync) or its forwarding (async)",
            Fixed(durations),
        );
        registry.register(
            "qgate_plugin_calls",
            "Calls into plugins, by plugin, version (the digest's first 12 hex digits) and \
             result (ok, failed: trapped, out of budget, or no instance)",
            inner.plugin_calls.clone(),
        );
        registry.register(
            "qgate_plugin_call_duration_seconds",
            "Time a plugin call took, by plugin and version",
            inner.plugin_call_duration.clone(),
        );
        registry.register(
            "qgate_plugin_swaps",
            "Plugin version changes (reloads and rollbacks), by plugin and result (ok, failed)",
            inner.plugin_swaps.clone(),
        );
        registry.register(
            "qgate_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate served expires, in Unix seconds (0 without TLS)",
            inner.tls_expiry.clone(),
        );
        registry.register(
            "qgate_decision_log_dropped",
            "Decision records dropped because the decision log's writer had fallen behind",
            inner.decisions_dropped.clone(),
        );
        registry.register(
            "qgate_shadow_disagreements",
            "Events where a shadow plugin denied what the live chain let through, or the reverse",
            inner.shadow_disagreements.clone(),
        );
        registry.register(
            "qgate_shadow_dropped",
            "Events not shown to the shadow plugins: their queue was full, or the message over 1 MiB",
            inner.shadow_dropped.clone(),
        );
        metrics
    }

    /// Counts a client connection accepted; the returned guard counts it closed when dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.inc();
        self.inner.connections_total.inc();
        ConnectionGuard {
            gauge: self.inner.connections.clone(),
        }
    }

    /// Counts a login attempt's result.
    pub fn login(&self, result: Login) {
        if let Some(counter) = self.inner.logins.get(result as usize) {
            counter.inc();
        }
    }

    /// Counts a message and its decision, and how long it took when it was timed (see
    /// [`ASYNC_SAMPLE`]).
    pub fn request(&self, event: Event, decision: Decision, elapsed: Option<Duration>) {
        if let Some(counter) = self
            .inner
            .requests
            .get(event as usize)
            .and_then(|decisions| decisions.get(decision as usize))
        {
            counter.inc();
        }
        if let (Some(elapsed), Some(histogram)) =
            (elapsed, self.inner.request_duration.get(event as usize))
        {
            histogram.observe(elapsed);
        }
    }

    /// Counts an event where shadow plugin `plugin` disagreed with the live chain.
    pub fn shadow_disagreement(&self, plugin: &str) {
        self.inner
            .shadow_disagreements
            .get_or_create(&[("plugin", plugin.to_owned())])
            .inc();
    }

    /// Counts an event the shadow plugins did not see.
    pub fn shadow_dropped(&self) {
        self.inner.shadow_dropped.inc();
    }

    /// Counts a decision record dropped because the decision log's queue was full.
    pub fn decision_dropped(&self) {
        self.inner.decisions_dropped.inc();
    }

    /// Sets when the TLS certificate served expires, in Unix seconds.
    pub fn tls_certificate_expiry(&self, unix_seconds: i64) {
        self.inner.tls_expiry.set(unix_seconds);
    }

    /// The handles of one plugin version, made once when it loads: its calls then cost atomic
    /// adds only.
    pub fn plugin(&self, plugin: &str, version: &str) -> PluginMetrics {
        let result = |result: &str| {
            [
                ("plugin", plugin.to_owned()),
                ("version", version.to_owned()),
                ("result", result.to_owned()),
            ]
        };
        PluginMetrics {
            ok: self.inner.plugin_calls.get_or_create_owned(&result("ok")),
            failed: self
                .inner
                .plugin_calls
                .get_or_create_owned(&result("failed")),
            duration: self.inner.plugin_call_duration.get_or_create_owned(&[
                ("plugin", plugin.to_owned()),
                ("version", version.to_owned()),
            ]),
        }
    }

    /// Counts a plugin version change (a reload or a rollback), or a failed attempt at one.
    pub fn plugin_swap(&self, plugin: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.inner
            .plugin_swaps
            .get_or_create(&[("plugin", plugin.to_owned()), ("result", result.to_owned())])
            .inc();
    }

    /// Registers the upstreams' metrics in `registry`, read from `source` at each scrape.
    pub fn register_upstreams(registry: &mut Registry, source: impl UpstreamSource) {
        registry.register_collector(Box::new(Upstreams(source)));
    }

    /// `registry` as OpenMetrics text.
    ///
    /// # Errors
    ///
    /// When a label cannot be written, which the text encoder never does for the labels here.
    pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)?;
        Ok(text)
    }
}

/// Counts a client connection closed when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// One plugin version's call metrics.
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    ok: Counter,
    failed: Counter,
    duration: AtomicHistogram,
}

impl Default for PluginMetrics {
    /// Handles that nobody reads, for a version loaded without metrics.
    fn default() -> Self {
        Metrics::new().plugin("", "")
    }
}

impl PluginMetrics {
    /// Counts a call, whether it returned (`ok`), and how long it took when it was timed (see
    /// [`PLUGIN_SAMPLE`]).
    pub fn call(&self, ok: bool, elapsed: Option<Duration>) {
        if ok { &self.ok } else { &self.failed }.inc();
        if let Some(elapsed) = elapsed {
            self.duration.observe(elapsed);
        }
    }
}

/// One replica of an upstream, read at scrape time.
#[derive(Clone, Debug)]
pub struct UpstreamServer {
    /// The upstream's name in the config.
    pub upstream: String,
    /// The replica's address, as the config gives it.
    pub server: String,
    /// Whether its health checks pass.
    pub up: bool,
    /// Connections open to it.
    pub connections: u64,
    /// Requests sent to it and not answered yet.
    pub in_flight: u64,
    /// Failures seen since start: connects refused, health checks failed, connections lost.
    pub errors: u64,
    /// The time of each query sent to it, from sent to answered (or failed).
    pub query_duration: AtomicHistogram,
}

/// One upstream, read at scrape time.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The upstream's name in the config.
    pub name: String,
    /// Requests waiting for a pooled connection.
    pub queued: u64,
    /// Its replicas.
    pub servers: Vec<UpstreamServer>,
}

/// Where the upstreams' metrics are read from at each scrape: the gateway's status.
pub trait UpstreamSource: fmt::Debug + Send + Sync + 'static {
    /// Every upstream now.
    fn upstreams(&self) -> Vec<Upstream>;
}

/// One of a replica's values.
type ServerValue = fn(&UpstreamServer) -> u64;

/// The collector that renders an [`UpstreamSource`].
#[derive(Debug)]
struct Upstreams<S>(S);

impl<S: UpstreamSource> Collector for Upstreams<S> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let upstreams = self.0.upstreams();
        let mut family = encoder.encode_descriptor(
            "qgate_upstream_queued",
            "Requests waiting for a pooled connection to the upstream",
            None,
            MetricType::Gauge,
        )?;
        for upstream in &upstreams {
            let labels = [("upstream", upstream.name.as_str())];
            ConstGauge::new(to_i64(upstream.queued)).encode(family.encode_family(&labels)?)?;
        }
        let servers = || upstreams.iter().flat_map(|upstream| &upstream.servers);
        let gauges: [(&str, &str, ServerValue); 3] = [
            (
                "qgate_upstream_up",
                "Whether the upstream server's health checks pass (1) or not (0)",
                |server| u64::from(server.up),
            ),
            (
                "qgate_upstream_connections",
                "Connections open to the upstream server",
                |server| server.connections,
            ),
            (
                "qgate_upstream_in_flight",
                "Requests sent to the upstream server and not answered yet",
                |server| server.in_flight,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for server in servers() {
                let labels = [
                    ("upstream", server.upstream.as_str()),
                    ("server", server.server.as_str()),
                ];
                ConstGauge::new(to_i64(value(server))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "qgate_upstream_errors",
            "Failures with the upstream server: connects refused, health checks failed, \
             connections lost",
            None,
            MetricType::Counter,
        )?;
        for server in servers() {
            let labels = [
                ("upstream", server.upstream.as_str()),
                ("server", server.server.as_str()),
            ];
            ConstCounter::new(server.errors).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "qgate_upstream_query_duration_seconds",
            "Time from a query sent to the upstream server to its reply read whole, or its failure",
            None,
            MetricType::Histogram,
        )?;
        for server in servers() {
            let labels = [
                ("upstream", server.upstream.as_str()),
                ("server", server.server.as_str()),
            ];
            server
                .query_duration
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counters with fixed label sets, made once and rendered as one family.
#[derive(Debug)]
struct Fixed<M>(Vec<(Vec<(&'static str, &'static str)>, M)>);

impl<M: EncodeMetric> EncodeMetric for Fixed<M> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.0
            .first()
            .map_or(MetricType::Unknown, |(_, metric)| metric.metric_type())
    }
}

/// Counters labelled by one fixed label.
#[derive(Debug)]
struct Labelled<const N: usize> {
    name: &'static str,
    values: [&'static str; N],
    counters: [Counter; N],
}

impl<const N: usize> Labelled<N> {
    fn new(name: &'static str, values: [&'static str; N], counters: [Counter; N]) -> Self {
        Self {
            name,
            values,
            counters,
        }
    }
}

impl<const N: usize> EncodeMetric for Labelled<N> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        for (value, counter) in self.values.iter().zip(&self.counters) {
            counter.encode(encoder.encode_family(&[(self.name, *value)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TwoReplicas;

    impl UpstreamSource for TwoReplicas {
        fn upstreams(&self) -> Vec<Upstream> {
            let server = |server: &str, up| UpstreamServer {
                upstream: "hdb".to_owned(),
                server: server.to_owned(),
                up,
                connections: 2,
                in_flight: 1,
                errors: 3,
                query_duration: {
                    let histogram = AtomicHistogram::for_queries();
                    histogram.observe(Duration::from_millis(2));
                    histogram
                },
            };
            vec![Upstream {
                name: "hdb".to_owned(),
                queued: 4,
                servers: vec![
                    server("10.0.0.1:5001", true),
                    server("10.0.0.2:5001", false),
                ],
            }]
        }
    }

    fn rendered(record: impl FnOnce(&Metrics)) -> String {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry, "1.2.3");
        Metrics::register_upstreams(&mut registry, TwoReplicas);
        record(&metrics);
        Metrics::render(&registry).expect("renders")
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }

    #[test]
    fn every_family_renders_before_anything_is_recorded() {
        let text = rendered(|_| {});
        has(&text, r#"qgate_build_info{version="1.2.3"} 1"#);
        has(&text, "qgate_connections_open 0");
        has(&text, "qgate_connections_total 0");
        has(&text, r#"qgate_logins_total{result="over_limit"} 0"#);
        has(
            &text,
            r#"qgate_requests_total{event="async",decision="route"} 0"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_count{event="sync"} 0"#,
        );
        // A family with labels made at run time shows once it has a member.
        assert!(!text.contains("qgate_plugin_calls"), "{text}");
        has(&text, "qgate_tls_certificate_expiry_timestamp_seconds 0");
        has(&text, "# EOF");
    }

    #[test]
    fn recorded_values_render() {
        let text = rendered(|metrics| {
            let open = metrics.connection_opened();
            let closed = metrics.connection_opened();
            drop(closed);
            std::mem::forget(open);
            metrics.login(Login::Accepted);
            metrics.login(Login::Denied);
            metrics.login(Login::Denied);
            metrics.request(
                Event::Sync,
                Decision::Pass,
                Some(Duration::from_micros(100)),
            );
            metrics.request(Event::Sync, Decision::Pass, Some(Duration::from_secs(60)));
            metrics.request(
                Event::Async,
                Decision::Deny,
                Some(Duration::from_micros(10)),
            );
            // Counted, not timed.
            metrics.request(Event::Async, Decision::Deny, None);
            let plugin = metrics.plugin("audit", "0123456789ab");
            plugin.call(true, Some(Duration::from_micros(20)));
            plugin.call(false, Some(Duration::from_millis(5)));
            plugin.call(false, None);
            metrics.plugin_swap("audit", true);
            metrics.tls_certificate_expiry(1_900_000_000);
        });
        has(&text, "qgate_connections_open 1");
        has(&text, "qgate_connections_total 2");
        has(&text, r#"qgate_logins_total{result="accepted"} 1"#);
        has(&text, r#"qgate_logins_total{result="denied"} 2"#);
        has(
            &text,
            r#"qgate_requests_total{event="sync",decision="pass"} 2"#,
        );
        has(
            &text,
            r#"qgate_requests_total{event="async",decision="deny"} 2"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_count{event="async"} 1"#,
        );
        // Cumulative buckets: 100 us is under 200 us; 60 s only under +Inf.
        has(
            &text,
            r#"qgate_request_duration_seconds_bucket{le="0.00005",event="sync"} 0"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_bucket{le="0.0002",event="sync"} 1"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_bucket{le="13.1072",event="sync"} 1"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_bucket{le="+Inf",event="sync"} 2"#,
        );
        has(
            &text,
            r#"qgate_request_duration_seconds_sum{event="sync"} 60.0001"#,
        );
        has(
            &text,
            r#"qgate_plugin_calls_total{plugin="audit",version="0123456789ab",result="ok"} 1"#,
        );
        has(
            &text,
            r#"qgate_plugin_calls_total{plugin="audit",version="0123456789ab",result="failed"} 2"#,
        );
        has(
            &text,
            r#"qgate_plugin_call_duration_seconds_count{plugin="audit",version="0123456789ab"} 2"#,
        );
        has(
            &text,
            r#"qgate_plugin_swaps_total{plugin="audit",result="ok"} 1"#,
        );
        has(
            &text,
            "qgate_tls_certificate_expiry_timestamp_seconds 1900000000",
        );
    }

    #[test]
    fn upstreams_render_from_their_source() {
        let text = rendered(|_| {});
        has(&text, r#"qgate_upstream_queued{upstream="hdb"} 4"#);
        has(
            &text,
            r#"qgate_upstream_up{upstream="hdb",server="10.0.0.1:5001"} 1"#,
        );
        has(
            &text,
            r#"qgate_upstream_up{upstream="hdb",server="10.0.0.2:5001"} 0"#,
        );
        has(
            &text,
            r#"qgate_upstream_in_flight{upstream="hdb",server="10.0.0.2:5001"} 1"#,
        );
        has(
            &text,
            r#"qgate_upstream_errors_total{upstream="hdb",server="10.0.0.1:5001"} 3"#,
        );
        has(
            &text,
            r#"qgate_upstream_query_duration_seconds_bucket{le="0.0032",upstream="hdb",server="10.0.0.2:5001"} 1"#,
        );
        has(
            &text,
            r#"qgate_upstream_query_duration_seconds_count{upstream="hdb",server="10.0.0.2:5001"} 1"#,
        );
    }
}
