//! `qgate-bench ws`: the round trip of a WebSocket message through qgate to a plugin that
//! answers it, against a plain q IPC round trip to the same qgate and plugin, in the same run.
//!
//! qgate serves the `demo-api` plugin, which answers the q data literal `1 2 3` on both paths: a
//! sync q message holding the string `"1 2 3"` gets the value back, and a WebSocket text message
//! `1 2 3` gets the text `1 2 3` (`.z.ws` as a dashboard uses it). One blocking client per path,
//! each on one connection, sends its message back to back; the paths take turns in blocks of 50
//! round trips, and each path's number is the median of its repetitions' medians.
//!
//! The target: the WebSocket's median round trip at most 1.5 times q IPC's.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use qgate_ipc::{K, MessageType};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::{
    loadgen::{Client, Endpoint, median, quantile},
    targets::{self, Env},
};

/// The literal both paths send, and what comes back on the WebSocket.
const LITERAL: &str = "1 2 3";

/// Round trips before each repetition's measured ones: connections set up, caches warm.
const WARM_UP: usize = 200;

/// The round trips each path makes in its turn.
const BLOCK: usize = 50;

/// The target: WebSocket over q IPC.
const TARGET: f64 = 1.5;

/// The results of one run.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Results {
    /// The WebSocket's median round trip, microseconds.
    pub(crate) ws_us: f64,
    /// The WebSocket's p99, microseconds (median over repetitions).
    pub(crate) ws_p99_us: f64,
    /// q IPC's median round trip, microseconds.
    pub(crate) ipc_us: f64,
    /// q IPC's p99, microseconds.
    pub(crate) ipc_p99_us: f64,
    pub(crate) reps: usize,
    pub(crate) round_trips: usize,
}

impl Results {
    /// The WebSocket's median over q IPC's.
    pub(crate) fn ratio(&self) -> f64 {
        self.ws_us / self.ipc_us
    }

    /// Whether the target holds.
    pub(crate) fn met(&self) -> bool {
        self.ratio() <= TARGET
    }
}

/// Starts qgate with `demo-api`, measures `reps` repetitions of `round_trips` on each path,
/// alternating.
pub(crate) fn run(env: &Env, qgate: &Path, reps: usize, round_trips: usize) -> Result<Results> {
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let demo = targets::plugins_config(
        env,
        "\n[[plugins]]\nname = \"demo-api\"\npath = \"{plugins}/demo_api.wasm\"\n",
    )?;
    let config = env.work.join("qgate-ws.toml");
    std::fs::write(&config, format!("[log]\nlevel = \"warn\"\n{demo}"))?;
    let (_qgate, addr) = targets::spawn_announcing(
        "qgate-ws",
        std::process::Command::new(qgate)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["-p", "127.0.0.1:0"]),
        &logs.join("qgate-ws.log"),
    )?;

    let ipc_message = qgate_ipc::encode_message(MessageType::Sync, &K::string(LITERAL))?;
    let mut ws_medians = Vec::new();
    let mut ws_p99s = Vec::new();
    let mut ipc_medians = Vec::new();
    let mut ipc_p99s = Vec::new();
    for rep in 0..reps {
        let (ipc, ws) = repetition(addr, &ipc_message, round_trips)
            .with_context(|| format!("repetition {}", rep + 1))?;
        ipc_medians.push(median(&ipc));
        ipc_p99s.push(quantile(&ipc, 0.99));
        ws_medians.push(median(&ws));
        ws_p99s.push(quantile(&ws, 0.99));
    }
    Ok(Results {
        ws_us: median(&ws_medians),
        ws_p99_us: median(&ws_p99s),
        ipc_us: median(&ipc_medians),
        ipc_p99_us: median(&ipc_p99s),
        reps,
        round_trips,
    })
}

/// One repetition: a q connection and a WebSocket, taking turns in blocks of [`BLOCK`] round
/// trips (so that both paths share whatever state the machine is in), [`WARM_UP`] unmeasured
/// and then `round_trips` measured on each; each round trip's time in microseconds, q IPC's and
/// the WebSocket's.
fn repetition(
    addr: SocketAddr,
    ipc_message: &[u8],
    round_trips: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut client = Client::connect(&Endpoint::plain(addr), Duration::from_secs(10))?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    // 16 KiB reads, as the q client's buffer: tungstenite zero-fills its whole read buffer
    // before each read, and its default 128 KiB would cost the client more than qgate's hop.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}/"), tcp, Some(config))
            .map_err(|error| anyhow::anyhow!("the WebSocket handshake failed: {error}"))?;
    let mut ipc_times = Vec::with_capacity(round_trips);
    let mut ws_times = Vec::with_capacity(round_trips);
    let mut done = 0;
    while done < WARM_UP + round_trips {
        let block = BLOCK.min(WARM_UP + round_trips - done);
        for _ in 0..block {
            let started = Instant::now();
            client.call(ipc_message)?;
            if done >= WARM_UP {
                ipc_times.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        for _ in 0..block {
            let started = Instant::now();
            ws.send(Message::text(LITERAL))?;
            let answer = read_data(&mut ws)?;
            if done >= WARM_UP {
                ws_times.push(started.elapsed().as_secs_f64() * 1e6);
            }
            if answer != Message::text(LITERAL) {
                bail!("the WebSocket answered {answer:?}, not {LITERAL:?}");
            }
        }
        done += block;
    }
    let answer = client.last_response_text();
    if answer != LITERAL {
        bail!("q IPC answered {answer:?}, not {LITERAL:?}");
    }
    let _ = ws.close(None);
    Ok((ipc_times, ws_times))
}

/// The next data message, past pings and pongs.
fn read_data(ws: &mut WebSocket<TcpStream>) -> Result<Message> {
    loop {
        match ws.read()? {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            message => return Ok(message),
        }
    }
}

/// The section of BENCHMARKS.md.
pub(crate) fn markdown(results: &Results, command: &str, date: &str) -> String {
    format!(
        "Measured {date} with `{command}`: {} repetitions of {} round trips each, one blocking \
         client per path on one connection, the paths taking turns in blocks of {BLOCK}; \
         medians of the repetitions' medians and p99s.\n\n\
         | path (qgate with `demo-api` answering the literal `1 2 3`) | median | p99 |\n\
         |---|---|---|\n\
         | WebSocket text message | {:.1} µs | {:.1} µs |\n\
         | q IPC sync message | {:.1} µs | {:.1} µs |\n\n\
         WebSocket over q IPC: **{:.2}×** (target ≤ {TARGET:.2}×: {}).\n",
        results.reps,
        results.round_trips,
        results.ws_us,
        results.ws_p99_us,
        results.ipc_us,
        results.ipc_p99_us,
        results.ratio(),
        if results.met() { "met" } else { "missed" },
    )
}

/// Replaces the WebSocket section of `path` (between its markers) with `section`, or appends it.
pub(crate) fn write_markdown(path: &Path, section: &str) -> Result<()> {
    crate::report::replace_section(
        path,
        "ws",
        "WebSocket on the q port",
        "cargo run --release -p qgate-bench -- ws",
        section,
    )
}
