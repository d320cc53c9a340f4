//! `qgate-upstream`: the test upstream (`qgate_e2e::upstream`) as a process, a stand-in for a
//! kdb+ process behind qgate in the real-client tests in `tests/clients/`.
//!
//! It prints `qgate-upstream listening on ADDR` on stdout once bound, and stops on SIGTERM,
//! SIGINT, when its stdin closes (so a test fixture that dies cannot leak it), or after
//! `--lifetime-secs` whatever happens.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use qgate_e2e::upstream::{DEFAULT_NAME, DEFAULT_WRAP, Upstream, UpstreamOptions, UpstreamTls};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};
use tracing_subscriber::EnvFilter;

/// A test upstream that speaks kdb+ IPC as a kdb+ process does, with scripted behaviours (echo,
/// whoami, sleep, fail, bytes, die, garbage, close, callback, .u.sub, publish, received, stats,
/// and a wrap function).
///
/// Prints `qgate-upstream listening on ADDR` once bound. Stops on SIGTERM or SIGINT, when its
/// stdin closes (so do not start it with stdin from /dev/null), or after --lifetime-secs.
#[derive(Debug, Parser)]
#[command(name = "qgate-upstream")]
struct Args {
    /// The address to listen on (port 0 picks a free one; the chosen one is printed).
    #[arg(short = 'p', default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A login it accepts, `user:password`; repeat for more. Without any, anyone is accepted, as
    /// by a kdb+ without -U.
    #[arg(long = "user", value_name = "USER:PASSWORD")]
    users: Vec<String>,
    /// The name it reports in replies, to tell replicas apart.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// The certificate chain (PEM, its own certificate first): TLS is then required of every
    /// client.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A CA bundle (PEM): every client must then present a certificate it issued.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Compress messages over 2000 bytes when that halves them, as kdb+ does to a remote peer.
    #[arg(long)]
    compress: bool,
    /// Evaluate different connections' messages at the same time, as q with -s; by default one
    /// message is evaluated at a time across all connections, as by a single-threaded q.
    #[arg(long)]
    concurrent: bool,
    /// The wrap function's name: `(wrap; user; message)` evaluates `message` as `user`.
    #[arg(long, default_value = DEFAULT_WRAP)]
    wrap: String,
    /// Stop after this long whatever happens, so that a forgotten server cannot outlive a test run.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    lifetime_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The upstream's log lines, on stderr, filtered by RUST_LOG (default: info).
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let lifetime = Duration::from_secs(args.lifetime_secs);
    let upstream = Upstream::start(options(&args)?).context("cannot start the upstream")?;
    // Stdin is read on a thread of its own: tokio's stdin would keep the runtime from shutting
    // down while its blocking read waits.
    let (stdin_closed, stdin_closed_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    // The last resort: whatever state the upstream is in, the process ends.
    std::thread::spawn(move || {
        #[expect(
            clippy::disallowed_methods,
            reason = "a thread of its own, outside the runtime, that only waits"
        )]
        std::thread::sleep(lifetime + Duration::from_secs(30));
        std::process::exit(3);
    });
    // The upstream runs on its own thread; this runtime only waits for the signal to stop.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(async {
            // Watching the signals before the address is printed: a test that stops the
            // upstream as soon as it knows the address stops it cleanly.
            let shutdown = shutdown_signal(stdin_closed_rx, lifetime)?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "qgate-upstream listening on {}", upstream.addr())?;
            stdout.flush()?;
            drop(stdout);
            shutdown.await;
            anyhow::Ok(())
        })?;
    upstream.stop();
    Ok(())
}

/// The upstream's options from the command line.
fn options(args: &Args) -> Result<UpstreamOptions> {
    let mut options = UpstreamOptions {
        addr: args.listen,
        name: args.name.clone(),
        compress: args.compress,
        serialise: !args.concurrent,
        wrap: args.wrap.clone(),
        ..UpstreamOptions::default()
    };
    for login in &args.users {
        options
            .add_login(login)
            .context("--user takes `user:password`")?;
    }
    if let (Some(cert_chain), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options.tls = Some(UpstreamTls {
            cert_chain: cert_chain.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        });
    }
    Ok(options)
}

/// Resolves on SIGTERM, SIGINT, the end of stdin, or when `lifetime` has passed.
fn shutdown_signal(
    stdin_closed: oneshot::Receiver<()>,
    lifetime: Duration,
) -> Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = stdin_closed => {}
            () = tokio::time::sleep(lifetime) => {}
        }
    })
}
