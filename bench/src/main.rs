//! `qgate-bench`: measures qgate against its floor and its peers in one run, over loopback.
//!
//! ```text
//! qgate-bench [--quick|--smoke] [--targets floor,qgate,gateway,aiokdb,haproxy]
//!             [--out target/bench/results.json] [--markdown BENCHMARKS.md]
//! qgate-bench floor -p 127.0.0.1:0
//! qgate-bench swap [--smoke] [--markdown BENCHMARKS.md]
//! qgate-bench ws [--smoke] [--reps N] [--markdown BENCHMARKS.md]
//! ```
//!
//! The run starts every target ([`targets`]), then for each scenario warms each target up and
//! runs the repetitions interleaved (floor, qgate, aiokdb, haproxy, floor, qgate, ...), takes the
//! median of each target's repetitions and divides it by the floor's ([`report`]); the gateway
//! targets, a hop in front of a floor as HAProxy is, are also divided by HAProxy's.
//! The idle-memory scenario restarts each target before each repetition, so that memory an
//! allocator kept from earlier work does not hide what connections cost.
//! `--smoke` runs every scenario once at a tiny size, to check that each produces a number;
//! `--quick` finishes in under three minutes; the default (full) mode makes the numbers of
//! BENCHMARKS.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: printing is its interface"
)]

mod floor;
mod https;
mod loadgen;
mod report;
mod swap;
mod targets;
mod ws;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    loadgen::{Order, Sees},
    report::{Better, Goal, GoalOutcome, Metric, Ratios, Record, Results, TargetInfo},
    targets::{Env, Kind, Running, Spec},
};

/// Measures qgate against its floor and its peers, over loopback.
#[derive(Debug, Parser)]
#[command(name = "qgate-bench")]
struct Cli {
    /// A few repetitions of short runs: under three minutes, for smoke runs of the numbers.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// One tiny repetition of every scenario: checks that each produces a number.
    #[arg(long)]
    smoke: bool,
    /// The targets, comma-separated; the floor is always measured, as the ratios need it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor,qgate,qgate-echo,qgate-chain,qgate-cedar,qgate-observed,qgate-shadow,\
                         qgate-tls,gateway,gateway-pooled,gateway-threads,gateway-entitled,gateway-filtered,\
                         aiokdb,haproxy,haproxy-tls"
    )]
    targets: Vec<String>,
    /// Only these scenarios, comma-separated (ping, ingest, conc64, connect, insert, reply,
    /// publish, idle, table, ticks): for profiling one of them. The default runs all.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Repetitions of each scenario, instead of the mode's number.
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Where the machine-readable results go.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the harness section of this markdown file (BENCHMARKS.md) with the table.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The qgate binary to measure; by default `cargo build --release -p qgate` builds it.
    #[arg(long, value_name = "FILE")]
    qgate_bin: Option<PathBuf>,
    /// Run the floor server instead.
    #[command(subcommand)]
    command: Option<Sub>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Sub {
    /// The floor server: answers each frame without decoding it.
    Floor {
        /// The address to listen on; port 0 picks a free one, printed once bound.
        #[arg(short = 'p', default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The minimal HTTP server HAProxy fronts in the `https` scenario: answers every request
    /// with the same text.
    HttpFloor {
        /// The address to listen on; port 0 picks a free one, printed once bound.
        #[arg(short = 'p', default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The round trip of an HTTPS GET through qgate to a plugin that answers it, against HAProxy
    /// terminating TLS in front of a minimal HTTP server.
    Https {
        /// A short run: checks that the scenario runs.
        #[arg(long)]
        smoke: bool,
        /// Repetitions per target, alternating.
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// Replace the HTTPS section of this markdown file (BENCHMARKS.md) with the results.
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// The qgate binary to measure; by default `cargo build --release -p qgate` builds it.
        #[arg(long, value_name = "FILE")]
        qgate_bin: Option<PathBuf>,
    },
    /// The round trip of a WebSocket message through qgate to a plugin that answers it, against
    /// a q IPC round trip to the same qgate and plugin.
    Ws {
        /// A short run: checks that the scenario runs.
        #[arg(long)]
        smoke: bool,
        /// Repetitions per path, alternating.
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// Replace the WebSocket section of this markdown file (BENCHMARKS.md) with the results.
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// The qgate binary to measure; by default `cargo build --release -p qgate` builds it.
        #[arg(long, value_name = "FILE")]
        qgate_bin: Option<PathBuf>,
    },
    /// Round-trip latency while a plugin is swapped every 100 ms, against steady state.
    Swap {
        /// One short round: checks that the scenario runs.
        #[arg(long)]
        smoke: bool,
        /// Pairs of one-second windows (steady, swapping).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Replace the swap section of this markdown file (BENCHMARKS.md) with the results.
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// The qgate binary to measure; by default `cargo build --release -p qgate` builds it.
        #[arg(long, value_name = "FILE")]
        qgate_bin: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Sub::Floor { listen }) => floor::run(listen).map(|()| true),
        Some(Sub::HttpFloor { listen }) => https::floor(listen).map(|()| true),
        Some(Sub::Https {
            smoke,
            reps,
            ref markdown,
            ref qgate_bin,
        }) => bench_https(
            if smoke {
                (1, 200)
            } else {
                (reps.max(1), 5_000)
            },
            markdown.as_deref(),
            qgate_bin.clone(),
        ),
        Some(Sub::Ws {
            smoke,
            reps,
            ref markdown,
            ref qgate_bin,
        }) => bench_ws(
            if smoke {
                (1, 200)
            } else {
                (reps.max(1), 5_000)
            },
            markdown.as_deref(),
            qgate_bin.clone(),
        ),
        Some(Sub::Swap {
            smoke,
            rounds,
            ref markdown,
            ref qgate_bin,
        }) => bench_swap(
            if smoke { 1 } else { rounds.max(1) },
            markdown.as_deref(),
            qgate_bin.clone(),
        ),
        None => bench(&cli),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("qgate-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line on stdout.
pub(crate) fn say(line: &str) {
    println!("{line}");
}

/// Prints a progress line on stderr.
pub(crate) fn say_err(line: &str) {
    eprintln!("{line}");
}

/// Sleeps on the calling thread.
#[expect(
    clippy::disallowed_methods,
    reason = "the harness's own blocking threads, never an async worker"
)]
pub(crate) fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// `qgate-bench swap`: runs the scenario, prints the numbers, and says whether the target held.
fn bench_swap(rounds: usize, markdown: Option<&Path>, qgate_bin: Option<PathBuf>) -> Result<bool> {
    stop_servers_on_signal();
    let root = project_root();
    let env = Env {
        work: root.join("target").join("bench"),
        root: root.clone(),
        self_exe: std::env::current_exe().context("cannot find this binary")?,
        qgate_bin,
    };
    std::fs::create_dir_all(&env.work)?;
    let qgate = match &env.qgate_bin {
        Some(bin) => bin.clone(),
        None => targets::build_qgate(&env)?,
    };
    let results = swap::run(&root, &env.work, &qgate, rounds)?;
    let date = report::command_output("date", &["-u"])
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    let command = std::iter::once("qgate-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let section = swap::markdown(&results, &command, &date);
    say(&section);
    let json = env.work.join("swap.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("failed to write {}", json.display()))?;
    if let Some(path) = markdown {
        swap::write_markdown(path, &section)?;
    }
    Ok(results.failed_round_trips == 0 && results.swaps() > 0)
}

/// `qgate-bench https`: runs the scenario, prints the numbers, and says whether it ran (a
/// missed target is reported, not a failure: the numbers are what BENCHMARKS.md records).
fn bench_https(
    (reps, round_trips): (usize, usize),
    markdown: Option<&Path>,
    qgate_bin: Option<PathBuf>,
) -> Result<bool> {
    let (env, qgate) = scenario_env(qgate_bin)?;
    let results = https::run(&env, &qgate, reps, round_trips)?;
    let (date, command) = run_label();
    let section = https::markdown(&results, &command, &date);
    say(&section);
    std::fs::write(
        env.work.join("https.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    if let Some(path) = markdown {
        https::write_markdown(path, &section)?;
    }
    Ok(true)
}

/// `qgate-bench ws`: runs the scenario, prints the numbers, and says whether it ran (a missed
/// target is reported, not a failure: the numbers are what BENCHMARKS.md records).
fn bench_ws(
    (reps, round_trips): (usize, usize),
    markdown: Option<&Path>,
    qgate_bin: Option<PathBuf>,
) -> Result<bool> {
    let (env, qgate) = scenario_env(qgate_bin)?;
    let results = ws::run(&env, &qgate, reps, round_trips)?;
    let (date, command) = run_label();
    let section = ws::markdown(&results, &command, &date);
    say(&section);
    std::fs::write(
        env.work.join("ws.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    if let Some(path) = markdown {
        ws::write_markdown(path, &section)?;
    }
    Ok(true)
}

/// What a scenario subcommand (`https`, `ws`) runs with: the harness's environment, and the
/// qgate binary (the one given, or a fresh release build).
fn scenario_env(qgate_bin: Option<PathBuf>) -> Result<(Env, PathBuf)> {
    stop_servers_on_signal();
    let root = project_root();
    let env = Env {
        work: root.join("target").join("bench"),
        root: root.clone(),
        self_exe: std::env::current_exe().context("cannot find this binary")?,
        qgate_bin,
    };
    std::fs::create_dir_all(&env.work)?;
    let qgate = match &env.qgate_bin {
        Some(bin) => bin.clone(),
        None => targets::build_qgate(&env)?,
    };
    Ok((env, qgate))
}

/// When and by which command a scenario ran, for its section of BENCHMARKS.md.
fn run_label() -> (String, String) {
    let date = report::command_output("date", &["-u"])
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    let command = std::env::var("QGATE_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("qgate-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    (date, command)
}

/// The repository root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The sizes and durations of one mode.
#[derive(Clone, Debug)]
struct Plan {
    mode: &'static str,
    /// Repetitions of each scenario on each target.
    reps: usize,
    /// Whether each scenario first runs once, smaller, unrecorded, on each target.
    warm_up: bool,
    ping_count: usize,
    ping_time: Duration,
    ingest_count: usize,
    ingest_time: Duration,
    concurrent_connections: usize,
    concurrent_time: Duration,
    connect_threads: usize,
    connect_count: usize,
    connect_time: Duration,
    insert_bytes: usize,
    insert_reps: usize,
    /// The size of the reply scenario's byte vector.
    reply_bytes: usize,
    reply_reps: usize,
    /// The pushes of one repetition of the publication scenario.
    publish_count: usize,
    /// The rows of the table scenario's reply.
    table_rows: usize,
    table_reps: usize,
    /// The pushes of one repetition of the ticks scenario.
    ticks_count: usize,
    idle_count: usize,
    idle_reps: usize,
    /// How long servers get to settle before their memory is read.
    settle: Duration,
    /// The timeout of every socket read and write.
    io_timeout: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            mode: "full",
            // Many short repetitions rather than a few long ones: on a shared two-core machine a
            // burst of outside load then spoils a few repetitions of every target alike, and the
            // medians step over them.
            reps: 9,
            warm_up: true,
            ping_count: 5_000,
            ping_time: Duration::from_secs(5),
            ingest_count: 1_000_000,
            ingest_time: Duration::from_secs(3),
            concurrent_connections: 64,
            concurrent_time: Duration::from_secs(3),
            connect_threads: 4,
            connect_count: 50_000,
            connect_time: Duration::from_secs(2),
            insert_bytes: 100_000_000,
            insert_reps: 7,
            reply_bytes: 100_000_000,
            reply_reps: 7,
            publish_count: 1_000_000,
            table_rows: 1_000_000,
            table_reps: 9,
            ticks_count: 200_000,
            idle_count: 10_000,
            idle_reps: 3,
            settle: Duration::from_secs(1),
            io_timeout: Duration::from_secs(120),
        }
    }

    fn quick() -> Self {
        Self {
            mode: "quick",
            reps: 3,
            ping_count: 3_000,
            ping_time: Duration::from_secs(2),
            ingest_count: 300_000,
            ingest_time: Duration::from_millis(1500),
            concurrent_time: Duration::from_secs(1),
            connect_count: 5_000,
            connect_time: Duration::from_secs(1),
            insert_reps: 2,
            reply_reps: 2,
            publish_count: 300_000,
            table_reps: 3,
            ticks_count: 50_000,
            idle_count: 2_000,
            idle_reps: 1,
            settle: Duration::from_millis(300),
            io_timeout: Duration::from_secs(60),
            ..Self::full()
        }
    }

    fn smoke() -> Self {
        Self {
            mode: "smoke",
            reps: 1,
            warm_up: false,
            ping_count: 100,
            ping_time: Duration::from_millis(500),
            ingest_count: 2_000,
            ingest_time: Duration::from_millis(500),
            concurrent_time: Duration::from_millis(200),
            connect_count: 20,
            connect_time: Duration::from_millis(500),
            insert_bytes: 2_000_000,
            insert_reps: 1,
            reply_bytes: 2_000_000,
            reply_reps: 1,
            publish_count: 2_000,
            table_rows: 20_000,
            table_reps: 1,
            ticks_count: 2_000,
            idle_count: 200,
            idle_reps: 1,
            settle: Duration::from_millis(100),
            io_timeout: Duration::from_secs(20),
            ..Self::full()
        }
    }

    /// What one repetition of each scenario does, for the report.
    fn method(&self) -> Vec<String> {
        vec![
            format!(
                "warm-up: {}; then {} interleaved repetitions per scenario (floor, qgate, aiokdb, \
                 haproxy, floor, ...), medians over the repetitions",
                if self.warm_up {
                    "one smaller unrecorded run per scenario and target"
                } else {
                    "none"
                },
                self.reps
            ),
            format!(
                "ping: sync `` (`ping;42) `` ({} bytes) ping-pong on one connection per target, {} \
                 round trips each or {:?}; the targets take turns every 50 round trips, so that \
                 they share the machine's state",
                loadgen::ping_message().map_or(0, |m| m.len()),
                self.ping_count,
                self.ping_time
            ),
            format!(
                "ingest: async `` (`upd;`trade;(`AAPL;189.5;100)) `` ({} bytes) written back to \
                 back on one connection, {} messages or {:?}, closed by one sync; messages over \
                 the time to its response",
                loadgen::ingest_message().map_or(0, |m| m.len()),
                self.ingest_count,
                self.ingest_time
            ),
            format!(
                "conc64: {} connections doing sync ping-pong for {:?} (client: tokio, 2 workers)",
                self.concurrent_connections, self.concurrent_time
            ),
            format!(
                "connect: connect, authenticate, one sync ping, close; {} client threads, {} \
                 connections or {:?}, from 64 loopback source addresses (127.0.1.x), so that \
                 closed connections in TIME_WAIT do not use up one address's ephemeral ports",
                self.connect_threads, self.connect_count, self.connect_time
            ),
            format!(
                "insert: one sync `` (`insert;`trade;t) ``, t a table of time, sym, price, size, \
                 {:.1} MB in all; timed from the first byte written to the response; {} \
                 repetitions",
                self.insert_bytes as f64 / 1e6,
                self.insert_reps
            ),
            format!(
                "reply: one sync `` (`reply;n) `` on a fresh connection, which the floor answers \
                 with a byte vector of n = {:.1} MB written in 64 KiB chunks; the client reads it \
                 whole through one 256 KiB buffer, checking its size and its first and last \
                 64 KiB; MB/s from the request's first byte to the reply's last; {} \
                 repetitions; only on targets with a floor behind them",
                self.reply_bytes as f64 / 1e6,
                self.reply_reps
            ),
            format!(
                "publish: on a fresh connection each, one sync `` (`subscribe;n) ``, which the \
                 floor answers with `(::)` and then n = {} async `` (`upd;`trade;t) `` pushes \
                 ({} bytes each, t a one-row trade table), as a tickerplant publishes to an idle \
                 subscriber, and one sync `` (`publish;n) ``, answered with the same pushes \
                 before its `(::)`; the client checks each push byte for byte; pushes per second \
                 from the request's first byte to the last message; only on targets with a floor \
                 behind them that forward pushes (not the pooled gateway, which drops them by \
                 design)",
                self.publish_count,
                floor::push_message().map_or(0, |m| m.len())
            ),
            format!(
                "table: on a fresh connection, one sync `` (`table;10) ``, unmeasured (a plugin \
                 may decide once per connection, on its first reply), then one sync \
                 `` (`table;n) ``, which the floor answers \
                 with an n = {}-row table of time, sym, price, size and cond ({:.1} MB, sym \
                 cycling through ten symbols; built once, then written from memory); the client \
                 reads it whole into a buffer written beforehand, then decodes it and checks its \
                 rows against the user's entitlement; millions of the table's rows per second \
                 from the request's first byte to the reply's last; {} repetitions; on the floor \
                 and the pinned gateway without and with the entitlements plugin",
                self.table_rows,
                floor::table_reply_len(self.table_rows) as f64 / 1e6,
                self.table_reps
            ),
            format!(
                "ticks: one sync `` (`ticks;n) `` on a fresh connection, which the floor answers \
                 with `(::)` and then n = {} async `` (`upd;`trade;t) `` pushes ({} bytes each, t \
                 a ten-row trade table, a row per symbol), as a tickerplant publishes to a \
                 subscriber; the client decodes the first push and checks its rows against the \
                 user's entitlement, and checks every other to be the same bytes; pushes per \
                 second from the request's first byte to the last push; on the same targets as \
                 table",
                self.ticks_count,
                floor::tick_message().map_or(0, |m| m.len())
            ),
            format!(
                "idle: {} idle authenticated connections on a freshly started target; (VmRSS \
                 after - VmRSS before) / connections, from /proc/PID/status, {} repetitions; for \
                 a proxy in front of a floor (haproxy, gateway, gateway-pooled, gateway-threads) \
                 the proxy's own process, as the floor stands for the kdb+ process behind it, \
                 whose memory is its own cost",
                self.idle_count, self.idle_reps
            ),
        ]
    }
}

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Ping,
    Ingest,
    Concurrent,
    Connect,
    Insert,
    Reply,
    Publish,
    /// A large table reply, through entitlements (issue 15).
    Table,
    /// Publications through entitlements (issue 15).
    Ticks,
    Idle,
}

impl Scenario {
    const ALL: [Self; 10] = [
        Self::Ping,
        Self::Ingest,
        Self::Concurrent,
        Self::Connect,
        Self::Insert,
        Self::Reply,
        Self::Publish,
        Self::Table,
        Self::Ticks,
        Self::Idle,
    ];

    /// The scenario's short name, as in the records.
    fn label(self) -> &'static str {
        self.metrics()[0].scenario
    }

    /// What the scenario measures, in the order its run returns the values, with the issues'
    /// goals: the server's own (qgate with no plugins), the plugin chain's (qgate-chain), and
    /// the gateway's (issue 20: against the floor and against HAProxy's hop over the same kind of
    /// floor), and the entitlements plugin's (issue 15: against the gateway without it).
    fn metrics(self) -> &'static [Metric] {
        use Goal::{
            ChainAddedAtMost, ChainRatioAtMost, GatewayRatioAtLeast, HaproxyRatioAtLeast,
            HaproxyRatioAtMost, RatioAtLeast, RatioAtMost, ValueAtMost,
        };
        use Kind::{
            Gateway, GatewayEntitled, GatewayFiltered, GatewayPooled, GatewayThreads, Qgate,
            QgateCedar, QgateChain, QgateObserved, QgateShadow,
        };
        const PING: [Metric; 2] = [
            Metric {
                scenario: "ping",
                name: "median round trip",
                unit: "µs",
                better: Better::Lower,
                goals: &[
                    (Qgate, RatioAtMost(1.10)),
                    (QgateChain, RatioAtMost(1.25)),
                    (QgateCedar, ChainAddedAtMost(10.0)),
                    (QgateObserved, ChainRatioAtMost(1.05)),
                    (QgateShadow, ChainRatioAtMost(1.05)),
                    (Gateway, RatioAtMost(2.2)),
                    (Gateway, HaproxyRatioAtMost(0.5)),
                    (GatewayPooled, RatioAtMost(2.2)),
                    (GatewayPooled, HaproxyRatioAtMost(0.5)),
                    (GatewayThreads, RatioAtMost(2.2)),
                    (GatewayThreads, HaproxyRatioAtMost(0.5)),
                ],
            },
            Metric {
                scenario: "ping",
                name: "p99 round trip",
                unit: "µs",
                better: Better::Lower,
                goals: &[(QgateChain, RatioAtMost(1.5))],
            },
        ];
        const INGEST: [Metric; 1] = [Metric {
            scenario: "ingest",
            name: "async messages/s",
            unit: "msg/s",
            better: Better::Higher,
            goals: &[(QgateChain, RatioAtLeast(0.30))],
        }];
        const CONCURRENT: [Metric; 2] = [
            Metric {
                scenario: "conc64",
                name: "total queries/s",
                unit: "q/s",
                better: Better::Higher,
                goals: &[
                    (Qgate, RatioAtLeast(0.8)),
                    (Gateway, RatioAtLeast(0.5)),
                    (Gateway, HaproxyRatioAtLeast(1.2)),
                    (GatewayPooled, RatioAtLeast(0.5)),
                    (GatewayPooled, HaproxyRatioAtLeast(1.2)),
                    (GatewayThreads, RatioAtLeast(0.5)),
                    (GatewayThreads, HaproxyRatioAtLeast(1.2)),
                ],
            },
            Metric {
                scenario: "conc64",
                name: "p99 round trip",
                unit: "µs",
                better: Better::Lower,
                goals: &[],
            },
        ];
        const CONNECT: [Metric; 1] = [Metric {
            scenario: "connect",
            name: "connections/s",
            unit: "conn/s",
            better: Better::Higher,
            goals: &[(Qgate, RatioAtLeast(0.5))],
        }];
        const INSERT: [Metric; 1] = [Metric {
            scenario: "insert",
            name: "table insert",
            unit: "MB/s",
            better: Better::Higher,
            goals: &[(Qgate, RatioAtLeast(0.8)), (QgateChain, RatioAtLeast(0.8))],
        }];
        const REPLY: [Metric; 1] = [Metric {
            scenario: "reply",
            name: "large reply",
            unit: "MB/s",
            better: Better::Higher,
            goals: &[
                (Gateway, RatioAtLeast(0.8)),
                (GatewayPooled, RatioAtLeast(0.8)),
                (GatewayThreads, RatioAtLeast(0.8)),
            ],
        }];
        const PUBLISH: [Metric; 2] = [
            Metric {
                scenario: "publish",
                name: "pushes to a subscriber",
                unit: "msg/s",
                better: Better::Higher,
                goals: &[(Gateway, RatioAtLeast(0.5))],
            },
            Metric {
                scenario: "publish",
                name: "pushes before a reply",
                unit: "msg/s",
                better: Better::Higher,
                goals: &[(Gateway, RatioAtLeast(0.5))],
            },
        ];
        const TABLE: [Metric; 1] = [Metric {
            scenario: "table",
            name: "1M-row table reply",
            unit: "Mrow/s",
            better: Better::Higher,
            goals: &[
                (GatewayEntitled, GatewayRatioAtLeast(0.9)),
                (GatewayFiltered, GatewayRatioAtLeast(0.5)),
            ],
        }];
        const TICKS: [Metric; 1] = [Metric {
            scenario: "ticks",
            name: "publications",
            unit: "msg/s",
            better: Better::Higher,
            goals: &[(GatewayFiltered, GatewayRatioAtLeast(0.3))],
        }];
        const IDLE: [Metric; 1] = [Metric {
            scenario: "idle",
            name: "memory per idle connection",
            unit: "KiB",
            better: Better::Lower,
            goals: &[
                (Qgate, ValueAtMost(20.0)),
                (QgateChain, ValueAtMost(20.0)),
                (Gateway, ValueAtMost(20.0)),
            ],
        }];
        match self {
            Self::Ping => &PING,
            Self::Ingest => &INGEST,
            Self::Concurrent => &CONCURRENT,
            Self::Connect => &CONNECT,
            Self::Insert => &INSERT,
            Self::Reply => &REPLY,
            Self::Publish => &PUBLISH,
            Self::Table => &TABLE,
            Self::Ticks => &TICKS,
            Self::Idle => &IDLE,
        }
    }

    /// Why the scenario is not run on a target, when it is not.
    fn not_measured(self, kind: Kind) -> Option<&'static str> {
        let entitlements = matches!(self, Self::Table | Self::Ticks);
        match self {
            _ if entitlements
                && !matches!(
                    kind,
                    Kind::Floor | Kind::Gateway | Kind::GatewayEntitled | Kind::GatewayFiltered
                ) =>
            {
                Some(
                    "an entitlements scenario: run on the pinned gateway with and without the plugin",
                )
            }
            _ if !entitlements && kind.entitlement().is_some() => {
                Some("runs the entitlements scenarios (table, ticks) only")
            }
            Self::Concurrent | Self::Idle if kind.is_tls() => Some("not measured over TLS"),
            Self::Reply | Self::Publish if !kind.answers_as_floor() => {
                Some("answers from itself, with no floor behind it to ask")
            }
            Self::Publish if kind == Kind::GatewayPooled => {
                Some("a pooled connection has no client to forward pushes to: it drops them")
            }
            _ => None,
        }
    }
}

/// A target during the run.
struct Target {
    kind: Kind,
    spec: Option<Spec>,
    running: Option<Running>,
    info: TargetInfo,
}

impl Target {
    /// Starts (or restarts) the target.
    fn start(&mut self) -> Result<()> {
        // The old processes go first, so that they free their ports and memory.
        self.running = None;
        let spec = self.spec.as_ref().context("the target was not prepared")?;
        let running = targets::start(spec)?;
        self.info.processes = running.process_names();
        self.running = Some(running);
        Ok(())
    }

    fn running(&self) -> Result<&Running> {
        self.running.as_ref().context("the target is not running")
    }
}

/// The messages every scenario sends, built once.
struct Messages {
    ping: Vec<u8>,
    ingest: Vec<u8>,
    insert: Vec<u8>,
    insert_small: Vec<u8>,
    reply: Vec<u8>,
    reply_small: Vec<u8>,
    /// `` (`subscribe;n) `` and `` (`publish;n) ``, full size and warm-up size.
    publish: [Vec<u8>; 2],
    publish_small: [Vec<u8>; 2],
    /// The push the floor sends for each publication.
    push: Vec<u8>,
    /// `` (`table;n) ``, full size and warm-up size.
    table: Vec<u8>,
    table_small: Vec<u8>,
    /// `` (`ticks;n) ``, full size and warm-up size.
    ticks: Vec<u8>,
    ticks_small: Vec<u8>,
}

/// Raises the open-files limit so that 10 000 idle connections fit, in this process and in the
/// servers it starts (they inherit it). Returns the soft limit in force.
fn raise_nofile_limit() -> u64 {
    use rlimit::Resource;
    // Root may raise the hard limit too; otherwise the soft limit goes up to the hard one.
    let _ = rlimit::setrlimit(Resource::NOFILE, 65_536, 65_536);
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// On SIGINT, SIGTERM or SIGHUP, kills the servers and exits: the default action would end the
/// harness without its destructors and leave qgate and HAProxy running.
fn stop_servers_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            say_err(&format!("qgate-bench: {name}: stopping the servers"));
            targets::kill_all();
            // A server the main thread was starting meanwhile is killed as it registers.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            targets::kill_all();
            std::process::exit(130);
        });
    });
}

/// The whole run. Returns whether the floor and qgate produced every number.
fn bench(cli: &Cli) -> Result<bool> {
    let started = Instant::now();
    stop_servers_on_signal();
    let load_at_start = report::load_average();
    let plan = if cli.smoke {
        Plan::smoke()
    } else if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let mut plan = plan;
    if let Some(reps) = cli.reps {
        plan.reps = reps.max(1);
        plan.insert_reps = reps.max(1);
        plan.reply_reps = reps.max(1);
        plan.table_reps = reps.max(1);
        plan.idle_reps = reps.max(1);
    }
    let mut kinds = vec![Kind::Floor];
    for name in &cli.targets {
        let kind = Kind::parse(name.trim())?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    let root = project_root();
    let env = Env {
        work: root.join("target").join("bench"),
        root: root.clone(),
        self_exe: std::env::current_exe().context("cannot find this binary")?,
        qgate_bin: cli.qgate_bin.clone(),
    };
    std::fs::create_dir_all(&env.work)?;
    let nofile = raise_nofile_limit();
    let date = report::command_output("date", &["-u"])
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    // `cargo xtask bench` says it ran us, so that the report names the command a person types.
    let command = std::env::var("QGATE_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("qgate-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    say_err(&format!(
        "qgate-bench: {} mode, targets {}, open-files limit {nofile}",
        plan.mode,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    ));

    let messages = Messages {
        ping: loadgen::ping_message()?,
        ingest: loadgen::ingest_message()?,
        insert: loadgen::insert_message(plan.insert_bytes)?,
        insert_small: loadgen::insert_message(plan.insert_bytes.min(2_000_000))?,
        reply: loadgen::reply_message(plan.reply_bytes)?,
        reply_small: loadgen::reply_message(reply_small(&plan))?,
        publish: [
            loadgen::publish_message(plan.publish_count, Order::ReplyFirst)?,
            loadgen::publish_message(plan.publish_count, Order::PushesFirst)?,
        ],
        publish_small: [
            loadgen::publish_message(publish_small(&plan), Order::ReplyFirst)?,
            loadgen::publish_message(publish_small(&plan), Order::PushesFirst)?,
        ],
        push: floor::push_message()?,
        table: loadgen::table_message(plan.table_rows)?,
        table_small: loadgen::table_message(table_small(&plan))?,
        ticks: loadgen::ticks_message(plan.ticks_count)?,
        ticks_small: loadgen::ticks_message(ticks_small(&plan))?,
    };

    // Prepare and start every target.
    let mut targets: Vec<Target> = Vec::new();
    for kind in kinds {
        let mut target = Target {
            kind,
            spec: None,
            running: None,
            info: TargetInfo {
                name: kind.name(),
                description: kind.description(),
                status: "measured",
                note: None,
                ping_reply: None,
                processes: Vec::new(),
            },
        };
        let outcome = targets::prepare(kind, &env).and_then(|spec| {
            target.spec = Some(spec);
            target.start()?;
            let mut client =
                loadgen::Client::connect(&target.running()?.endpoint(), plan.io_timeout)?;
            client.call(&messages.ping)?;
            target.info.ping_reply = Some(client.last_response_text());
            Ok(())
        });
        if let Err(err) = outcome {
            target.info.status = if kind.essential() {
                "failed"
            } else {
                "skipped"
            };
            target.info.note = Some(format!("{err:#}"));
            target.running = None;
            say_err(&format!(
                "qgate-bench: {} {}: {err:#}",
                kind.name(),
                target.info.status
            ));
            if kind == Kind::Floor {
                bail!("the floor did not start, so nothing can be measured: {err:#}");
            }
        } else {
            let running = target.running()?;
            say_err(&format!(
                "qgate-bench: {} listening on {} (pid {:?})",
                kind.name(),
                running.addr,
                running.pids()
            ));
        }
        targets.push(target);
    }

    let mut scenarios = Vec::new();
    for name in &cli.scenarios {
        let scenario = Scenario::ALL
            .into_iter()
            .find(|s| s.label() == name.trim())
            .with_context(|| {
                format!(
                    "unknown scenario `{name}` (known: ping, ingest, conc64, connect, insert, \
                     reply, publish, table, ticks, idle)"
                )
            })?;
        scenarios.push(scenario);
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.to_vec();
    }
    let mut records = Vec::new();
    for scenario in Scenario::ALL.into_iter().filter(|s| scenarios.contains(s)) {
        if targets::stopping() {
            bail!("stopped by a signal");
        }
        let scenario_started = Instant::now();
        records.extend(run_scenario(
            scenario,
            &plan,
            &messages,
            &mut targets,
            nofile,
        ));
        say_err(&format!(
            "qgate-bench: {} done in {:.1} s",
            scenario.label(),
            scenario_started.elapsed().as_secs_f64()
        ));
    }
    let infos: Vec<TargetInfo> = targets.iter().map(|t| t.info.clone()).collect();
    // Every server stops here (and on any early return, when `targets` is dropped).
    drop(targets);

    let results = Results {
        command,
        mode: plan.mode,
        date,
        machine: report::Machine::probe(),
        method: plan.method(),
        targets: infos,
        records,
        elapsed_secs: started.elapsed().as_secs_f64(),
        load_average: [load_at_start, report::load_average()],
    };
    say(&results.text());
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| env.work.join("results.json"));
    results.write_json(&out)?;
    say_err(&format!("qgate-bench: wrote {}", out.display()));
    if let Some(markdown) = &cli.markdown {
        results.write_markdown(markdown)?;
        say_err(&format!("qgate-bench: wrote {}", markdown.display()));
    }
    say_err(&format!(
        "qgate-bench: {} mode took {:.1} s",
        plan.mode, results.elapsed_secs
    ));
    let complete = results.records.iter().all(|record| {
        record.status == "measured"
            || !Kind::ALL
                .iter()
                .any(|kind| kind.essential() && kind.name() == record.target)
    });
    if !complete {
        say_err("qgate-bench: the floor or a qgate target failed a scenario (see the notes above)");
    }
    Ok(complete)
}

/// One repetition of a scenario on one target: a value per metric.
fn run_once(
    scenario: Scenario,
    plan: &Plan,
    messages: &Messages,
    target: &mut Target,
    warm_up: bool,
) -> Result<Vec<f64>> {
    if scenario == Scenario::Idle {
        target.start()?;
    }
    let running = target.running()?;
    let addr = running.addr;
    let endpoint = running.endpoint();
    let timeout = plan.io_timeout;
    // A warm-up is a smaller run.
    let scale = |count: usize| if warm_up { (count / 10).max(1) } else { count };
    let shorten = |time: Duration| if warm_up { time / 4 } else { time };
    Ok(match scenario {
        Scenario::Ping => {
            let latency = loadgen::ping_pong(
                &[endpoint],
                &messages.ping,
                scale(plan.ping_count),
                shorten(plan.ping_time),
                timeout,
            )
            .pop()
            .context("no latency")??;
            vec![latency.median_us, latency.p99_us]
        }
        Scenario::Ingest => vec![loadgen::ingest(
            &endpoint,
            &messages.ingest,
            &messages.ping,
            scale(plan.ingest_count),
            shorten(plan.ingest_time),
            timeout,
        )?],
        Scenario::Concurrent => {
            let throughput = loadgen::concurrent(
                addr,
                &messages.ping,
                plan.concurrent_connections,
                shorten(plan.concurrent_time),
                timeout,
            )?;
            vec![throughput.queries_per_sec, throughput.p99_us]
        }
        Scenario::Connect => vec![loadgen::connect_rate(
            &endpoint,
            &messages.ping,
            plan.connect_threads,
            scale(plan.connect_count),
            shorten(plan.connect_time),
            timeout,
        )?],
        Scenario::Insert => {
            let message = if warm_up {
                &messages.insert_small
            } else {
                &messages.insert
            };
            let (rate, reply) = loadgen::insert(&endpoint, message, timeout)?;
            if !warm_up && target.info.note.is_none() && target.kind != Kind::Floor {
                target.info.note = Some(format!("answers the insert with `{reply}`"));
            }
            vec![rate]
        }
        Scenario::Reply => {
            let (message, n) = if warm_up {
                (&messages.reply_small, reply_small(plan))
            } else {
                (&messages.reply, plan.reply_bytes)
            };
            vec![loadgen::reply(&endpoint, message, n, timeout)?]
        }
        Scenario::Publish => {
            let (messages_, n) = if warm_up {
                (&messages.publish_small, publish_small(plan))
            } else {
                (&messages.publish, plan.publish_count)
            };
            let mut rates = Vec::new();
            for (message, order) in messages_
                .iter()
                .zip([Order::ReplyFirst, Order::PushesFirst])
            {
                rates.push(loadgen::publications(
                    &endpoint,
                    message,
                    &messages.push,
                    n,
                    order,
                    timeout,
                )?);
            }
            rates
        }
        Scenario::Table => {
            let (message, n) = if warm_up {
                (&messages.table_small, table_small(plan))
            } else {
                (&messages.table, plan.table_rows)
            };
            let sees = target.kind.entitlement().unwrap_or(Sees::Everything);
            vec![loadgen::table(
                &endpoint,
                message,
                n,
                sees,
                floor::table_reply_len(plan.table_rows),
                timeout,
            )?]
        }
        Scenario::Ticks => {
            let (message, n) = if warm_up {
                (&messages.ticks_small, ticks_small(plan))
            } else {
                (&messages.ticks, plan.ticks_count)
            };
            let sees = target.kind.entitlement().unwrap_or(Sees::Everything);
            vec![loadgen::ticks(&endpoint, message, n, sees, timeout)?]
        }
        Scenario::Idle => {
            let pids = running.memory_pids();
            let per_connection = loadgen::idle_memory(
                addr,
                &pids,
                &messages.ping,
                idle_count(plan, target.kind),
                plan.settle,
                timeout,
            )?;
            vec![per_connection / 1024.0]
        }
    })
}

/// How many idle connections a target is measured with: the plan's number, except that a proxy
/// that holds a floor connection for each client (HAProxy, the pinned gateway) needs two
/// descriptors per connection and so gets what the open-files limit allows.
fn idle_count(plan: &Plan, kind: Kind) -> usize {
    if kind.two_descriptors_per_client() {
        let fit = usize::try_from(targets::haproxy_max_connections()).unwrap_or(usize::MAX);
        plan.idle_count.min(fit.saturating_sub(50))
    } else {
        plan.idle_count
    }
}

/// The size of the reply scenario's warm-up: a tenth, at most 2 MB, as the insert's.
fn reply_small(plan: &Plan) -> usize {
    (plan.reply_bytes / 10).min(2_000_000)
}

/// The pushes of the publication scenario's warm-up: a tenth.
fn publish_small(plan: &Plan) -> usize {
    (plan.publish_count / 10).max(1)
}

/// The rows of the table scenario's warm-up: a tenth.
fn table_small(plan: &Plan) -> usize {
    (plan.table_rows / 10).max(1)
}

/// The pushes of the ticks scenario's warm-up: a tenth.
fn ticks_small(plan: &Plan) -> usize {
    (plan.ticks_count / 10).max(1)
}

/// Runs one scenario on every target: warm-up, interleaved repetitions, medians, ratios.
fn run_scenario(
    scenario: Scenario,
    plan: &Plan,
    messages: &Messages,
    targets: &mut [Target],
    nofile: u64,
) -> Vec<Record> {
    let metrics = scenario.metrics();
    let reps = match scenario {
        Scenario::Insert => plan.insert_reps,
        Scenario::Reply => plan.reply_reps,
        Scenario::Table => plan.table_reps,
        Scenario::Idle => plan.idle_reps,
        _ => plan.reps,
    };
    // Per target: the samples of each metric, and the first error.
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); metrics.len()]; targets.len()];
    let mut errors: Vec<Option<String>> = vec![None; targets.len()];
    // The TLS targets are compared with plain ones on round trips, ingest, connections, inserts
    // and what a floor sends; the 64-connection and idle clients speak plain q only.
    let not_measured: Vec<bool> = targets
        .iter()
        .map(|target| scenario.not_measured(target.kind).is_some())
        .collect();
    for (i, target) in targets.iter().enumerate() {
        if let Some(why) = scenario.not_measured(target.kind) {
            errors[i] = Some(why.into());
            continue;
        }
        if target.running.is_none() {
            errors[i] = Some(
                target
                    .info
                    .note
                    .clone()
                    .unwrap_or_else(|| "not running".into()),
            );
        }
    }
    let needed = plan.idle_count as u64 + 256;
    if scenario == Scenario::Idle && nofile < needed {
        for error in &mut errors {
            error.get_or_insert_with(|| {
                format!("the open-files limit is {nofile}, {needed} are needed")
            });
        }
    }
    let warm_up = plan.warm_up && scenario != Scenario::Idle;
    let passes = usize::from(warm_up) + reps;
    for pass in 0..passes {
        let is_warm_up = warm_up && pass == 0;
        let live: Vec<usize> = (0..targets.len())
            .filter(|&i| errors[i].is_none())
            .collect();
        // Ping-pong interleaves the targets block by block within each repetition (see
        // `loadgen::ping_pong`); every other scenario runs target after target.
        let outcomes: Vec<(usize, Result<Vec<f64>>)> = if scenario == Scenario::Ping {
            let scale = if is_warm_up { 10 } else { 1 };
            let addrs: Result<Vec<loadgen::Endpoint>> = live
                .iter()
                .map(|&i| Ok(targets[i].running()?.endpoint()))
                .collect();
            match addrs {
                Ok(addrs) => {
                    let latencies = loadgen::ping_pong(
                        &addrs,
                        &messages.ping,
                        (plan.ping_count / scale).max(1),
                        plan.ping_time / scale as u32,
                        plan.io_timeout,
                    );
                    live.iter()
                        .zip(latencies)
                        .map(|(&i, latency)| (i, latency.map(|l| vec![l.median_us, l.p99_us])))
                        .collect()
                }
                Err(err) => {
                    let text = format!("{err:#}");
                    live.iter()
                        .map(|&i| (i, Err(anyhow::anyhow!("{text}"))))
                        .collect()
                }
            }
        } else {
            live.iter()
                .map(|&i| {
                    let outcome = run_once(scenario, plan, messages, &mut targets[i], is_warm_up);
                    (i, outcome)
                })
                .collect()
        };
        for (i, outcome) in outcomes {
            let target = &mut targets[i];
            match outcome {
                Ok(values) => {
                    if !is_warm_up {
                        for (metric, value) in values.into_iter().enumerate() {
                            samples[i][metric].push(value);
                        }
                    }
                }
                Err(err) => {
                    say_err(&format!(
                        "qgate-bench: {} on {} failed: {err:#}",
                        scenario.label(),
                        target.kind.name()
                    ));
                    errors[i] = Some(format!("{err:#}"));
                    // The next scenario gets a fresh server.
                    if let Err(err) = target.start() {
                        target.running = None;
                        target.info.note = Some(format!("could not be restarted: {err:#}"));
                    }
                }
            }
        }
    }
    let mut records = Vec::new();
    let haproxy = targets
        .iter()
        .position(|target| target.kind == Kind::Haproxy)
        .filter(|&h| errors[h].is_none());
    let gateway = targets
        .iter()
        .position(|target| target.kind == Kind::Gateway)
        .filter(|&g| errors[g].is_none());
    let chain = targets
        .iter()
        .position(|target| target.kind == Kind::QgateChain)
        .filter(|&c| errors[c].is_none());
    for (m, metric) in metrics.iter().enumerate() {
        let floor_ok = errors[0].is_none();
        for (i, target) in targets.iter().enumerate() {
            if not_measured[i] {
                continue;
            }
            let (value, status, note) = match &errors[i] {
                None => {
                    let count = idle_count(plan, target.kind);
                    let note =
                        (scenario == Scenario::Idle && count != plan.idle_count).then(|| {
                            format!(
                                "measured with {count} connections, not {}: each takes two \
                                 descriptors in the proxy (one to the client, one to its floor) \
                                 and the open-files limit is {nofile}",
                                plan.idle_count
                            )
                        });
                    (Some(loadgen::median(&samples[i][m])), "measured", note)
                }
                Some(err) if target.info.status == "measured" => {
                    (None, "failed", Some(err.clone()))
                }
                Some(err) => (None, target.info.status, Some(err.clone())),
            };
            // Repetition k of every target ran in pass k, so the samples pair up by index.
            let paired = |baseline: usize| {
                let ratios: Vec<f64> = samples[i][m]
                    .iter()
                    .zip(&samples[baseline][m])
                    .map(|(v, b)| v / b)
                    .collect();
                loadgen::median(&ratios)
            };
            let ratios = Ratios {
                floor: (floor_ok && value.is_some()).then(|| paired(0)),
                haproxy: haproxy
                    .filter(|_| target.kind.is_gateway() && value.is_some())
                    .map(paired),
                gateway: gateway
                    .filter(|_| target.kind.entitlement().is_some() && value.is_some())
                    .map(paired),
                chain: chain
                    .filter(|_| {
                        matches!(target.kind, Kind::QgateObserved | Kind::QgateShadow)
                            && value.is_some()
                    })
                    .map(paired),
                chain_added: chain
                    .filter(|_| target.kind == Kind::QgateCedar && value.is_some())
                    .map(|baseline| {
                        let added: Vec<f64> = samples[i][m]
                            .iter()
                            .zip(&samples[baseline][m])
                            .map(|(v, b)| v - b)
                            .collect();
                        loadgen::median(&added)
                    }),
            };
            let goals = metric
                .goals
                .iter()
                .filter(|(kind, _)| *kind == target.kind)
                .map(|&(_, goal)| GoalOutcome {
                    goal: goal.text(metric.unit),
                    met: goal.met(value, ratios),
                    ratio: match goal {
                        Goal::HaproxyRatioAtMost(_) | Goal::HaproxyRatioAtLeast(_) => {
                            ratios.haproxy
                        }
                        Goal::GatewayRatioAtLeast(_) => ratios.gateway,
                        Goal::ChainRatioAtMost(_) => ratios.chain,
                        _ => None,
                    },
                    added: match goal {
                        Goal::ChainAddedAtMost(_) => ratios.chain_added,
                        _ => None,
                    },
                })
                .collect();
            records.push(Record {
                scenario: metric.scenario,
                target: target.kind.name(),
                metric: metric.name,
                unit: metric.unit,
                better: metric.better,
                value,
                ratio_to_floor: ratios.floor,
                ratio_to_haproxy: ratios.haproxy,
                ratio_to_gateway: ratios.gateway,
                added_to_chain: ratios.chain_added,
                samples: samples[i][m].clone(),
                status,
                note,
                goals,
            });
        }
    }
    records
}
