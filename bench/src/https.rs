//! `qgate-bench https`: the round trip of an HTTPS GET through qgate to a plugin that answers it,
//! against HAProxy terminating TLS in front of a minimal HTTP server, in the same run.
//!
//! qgate serves TLS (`tls.mode = "optional"`) with the `demo-api` plugin, which answers
//! `GET /?1%202%203` with `1 2 3` as `.z.ph` would; HAProxy (`mode http`, OpenSSL) terminates
//! TLS with the same certificate in front of [`floor`], a hyper server that answers every
//! request with the same body. One client on one kept-alive connection sends the GET back to
//! back; the repetitions alternate between the two targets, and each target's number is the
//! median of its repetitions' medians.
//!
//! The target: qgate's median round trip at most HAProxy's.

use std::{
    convert::Infallible,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use http_body_util::Full;
use hyper::{Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;

use crate::{
    loadgen::{median, quantile},
    targets::{self, Env, Guard},
};

/// What every answer holds: demo-api's text for `1 2 3`.
const BODY: &str = "1 2 3\n";

/// The request both targets answer.
const REQUEST: &[u8] = b"GET /?1%202%203 HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Round trips before each repetition's measured ones: TLS set up, caches warm.
const WARM_UP: usize = 200;

/// The results of one run.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Results {
    /// qgate's median round trip, microseconds.
    pub(crate) qgate_us: f64,
    /// qgate's p99, microseconds (median over repetitions).
    pub(crate) qgate_p99_us: f64,
    /// HAProxy's median round trip, microseconds.
    pub(crate) haproxy_us: f64,
    /// HAProxy's p99, microseconds.
    pub(crate) haproxy_p99_us: f64,
    pub(crate) reps: usize,
    pub(crate) round_trips: usize,
}

impl Results {
    /// qgate's median over HAProxy's.
    pub(crate) fn ratio(&self) -> f64 {
        self.qgate_us / self.haproxy_us
    }

    /// Whether the target holds.
    pub(crate) fn met(&self) -> bool {
        self.ratio() <= 1.0
    }
}

/// The minimal HTTP server: hyper's HTTP/1.1 on `listen`, every request answered with [`BODY`];
/// announces `http-floor listening on ADDR` and runs until its stdin closes.
pub(crate) fn floor(listen: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let (closed, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to listen on {listen}"))?;
        crate::say(&format!(
            "http-floor listening on {}",
            listener.local_addr()?
        ));
        let serve = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_request| async {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                        );
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = closed_rx => Ok::<_, anyhow::Error>(()),
            () = serve => Ok(()),
        }
    })?;
    runtime.shutdown_background();
    Ok(())
}

/// Starts both targets, measures `reps` repetitions of `round_trips` each, alternating.
pub(crate) fn run(env: &Env, qgate: &Path, reps: usize, round_trips: usize) -> Result<Results> {
    let certs = targets::certs(env, qgate)?;
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let client = crate::loadgen::tls_client_config(&certs.join("ca.pem"))?;

    let demo = targets::plugins_config(
        env,
        "\n[[plugins]]\nname = \"demo-api\"\npath = \"{plugins}/demo_api.wasm\"\n",
    )?;
    let config = env.work.join("qgate-https.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\nmode = \"optional\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[log]\nlevel = \
             \"warn\"\n{demo}",
            certs.join("server.pem").display(),
            certs.join("server.key").display()
        ),
    )?;
    let (_qgate, qgate_addr) = targets::spawn_announcing(
        "qgate-https",
        std::process::Command::new(qgate)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["-p", "127.0.0.1:0"]),
        &logs.join("qgate-https.log"),
    )?;

    let (_floor, floor_addr) = targets::spawn_announcing(
        "http-floor",
        std::process::Command::new(&env.self_exe).args(["http-floor", "-p", "127.0.0.1:0"]),
        &logs.join("http-floor.log"),
    )?;
    let pem = certs.join("haproxy.pem");
    let chain = std::fs::read_to_string(certs.join("server.pem"))?;
    let key = std::fs::read_to_string(certs.join("server.key"))?;
    std::fs::write(&pem, format!("{chain}{key}"))?;
    let port = targets::free_port()?;
    let haproxy_config = env.work.join("haproxy-https.cfg");
    std::fs::write(
        &haproxy_config,
        format!(
            "# Generated by qgate-bench https: HAProxy terminating TLS in front of http-floor.
global
    maxconn 256

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 1m
    timeout server 1m

listen https_bench
    bind 127.0.0.1:{port} ssl crt {} ssl-min-ver TLSv1.2
    server floor {floor_addr}
",
            pem.display()
        ),
    )?;
    let log = logs.join("haproxy-https.log");
    let out = std::fs::File::create(&log)?;
    let child = std::process::Command::new(targets::haproxy()?)
        .arg("-f")
        .arg(&haproxy_config)
        .arg("-db")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("failed to start haproxy")?;
    let mut haproxy = Guard::new("haproxy", child);
    let haproxy_addr = SocketAddr::from(([127, 0, 0, 1], port));
    targets::wait_listening(&mut haproxy, haproxy_addr, &log)?;

    let mut qgate_medians = Vec::new();
    let mut qgate_p99s = Vec::new();
    let mut haproxy_medians = Vec::new();
    let mut haproxy_p99s = Vec::new();
    for rep in 0..reps {
        for (name, addr, medians, p99s) in [
            ("qgate", qgate_addr, &mut qgate_medians, &mut qgate_p99s),
            (
                "haproxy-tls",
                haproxy_addr,
                &mut haproxy_medians,
                &mut haproxy_p99s,
            ),
        ] {
            let times = round_trips_on(addr, &client, round_trips)
                .with_context(|| format!("{name}, repetition {}", rep + 1))?;
            medians.push(median(&times));
            p99s.push(quantile(&times, 0.99));
        }
    }
    drop(haproxy);
    Ok(Results {
        qgate_us: median(&qgate_medians),
        qgate_p99_us: median(&qgate_p99s),
        haproxy_us: median(&haproxy_medians),
        haproxy_p99_us: median(&haproxy_p99s),
        reps,
        round_trips,
    })
}

/// `round_trips` GETs on one kept-alive TLS connection after [`WARM_UP`]; each one's time in
/// microseconds.
fn round_trips_on(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    round_trips: usize,
) -> Result<Vec<f64>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let connection = rustls::ClientConnection::new(Arc::clone(config), name)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut buffer = Vec::with_capacity(4096);
    let mut times = Vec::with_capacity(round_trips);
    for i in 0..WARM_UP + round_trips {
        let started = Instant::now();
        stream.write_all(REQUEST)?;
        stream.flush()?;
        read_response(&mut stream, &mut buffer)?;
        if i >= WARM_UP {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(times)
}

/// Reads one whole response (head by httparse, then `content-length` bytes of body) and checks
/// that it is a `200` with [`BODY`].
fn read_response(stream: &mut impl std::io::Read, buffer: &mut Vec<u8>) -> Result<()> {
    buffer.clear();
    let mut chunk = [0_u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the connection closed mid-response");
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(buffer)? else {
            continue;
        };
        let length = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-length"))
            .and_then(|header| std::str::from_utf8(header.value).ok()?.trim().parse().ok())
            .context("a response without content-length")?;
        if response.code != Some(200) {
            bail!(
                "status {:?}: {}",
                response.code,
                String::from_utf8_lossy(buffer)
            );
        }
        let length: usize = length;
        while buffer.len() < head + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the connection closed mid-body");
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        if &buffer[head..head + length] != BODY.as_bytes() {
            bail!(
                "unexpected body: {:?}",
                String::from_utf8_lossy(&buffer[head..])
            );
        }
        return Ok(());
    }
}

/// The section of BENCHMARKS.md.
pub(crate) fn markdown(results: &Results, command: &str, date: &str) -> String {
    format!(
        "Measured {date} with `{command}`: {} repetitions of {} round trips each on one \
         kept-alive connection, alternating between the targets; medians of the repetitions' \
         medians and p99s.\n\n\
         | target | median | p99 |\n|---|---|---|\n\
         | qgate (TLS, `demo-api` answering `GET /?1%202%203`) | {:.1} µs | {:.1} µs |\n\
         | HAProxy terminating TLS in front of a minimal HTTP server | {:.1} µs | {:.1} µs |\n\n\
         qgate over HAProxy: **{:.2}×** (target ≤ 1.00×: {}).\n",
        results.reps,
        results.round_trips,
        results.qgate_us,
        results.qgate_p99_us,
        results.haproxy_us,
        results.haproxy_p99_us,
        results.ratio(),
        if results.met() { "met" } else { "missed" },
    )
}

/// Replaces the HTTPS section of `path` (between its markers) with `section`, or appends it.
pub(crate) fn write_markdown(path: &Path, section: &str) -> Result<()> {
    crate::report::replace_section(
        path,
        "https",
        "HTTPS on the q port",
        "cargo run --release -p qgate-bench -- https",
        section,
    )
}
