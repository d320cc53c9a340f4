//! `qgate-echo`: a qgate server whose hooks echo every sync request back, for the real-client
//! tests in `tests/clients/` (a test double; the echo plugin will replace it).
//!
//! What the hooks do, so that a client can test each behaviour:
//!
//! | message | answer |
//! |---|---|
//! | sync `"err:text"` (a char vector) | the q error `'text`, in the client's own error type |
//! | sync `"asyncs"` | a general list of the async values this connection sent so far, in order |
//! | any other sync value | the same value |
//! | async `"err:text"` | recorded, then denied (dropped and logged, as q drops async errors) |
//! | any other async value | recorded |
//!
//! It prints `qgate listening on ADDR` on stdout once bound, like `qgate serve`, and stops on
//! SIGTERM, SIGINT, when its stdin closes (so a test fixture that dies cannot leak it), or after
//! `--lifetime-secs` whatever happens.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use qgate_hooks::{CloseReason, Handle, Hooks, Request, Session, Verdict};
use qgate_ipc::{K, MessageType};
use qgate_server::{PasswordFile, ServerOptions};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};
use tracing_subscriber::EnvFilter;

/// A qgate server that echoes sync requests: a test double for the real-client tests.
///
/// A sync "err:text" gets the q error 'text, and a sync "asyncs" the async values this connection
/// sent so far. Prints `qgate listening on ADDR` once bound. Stops on SIGTERM or SIGINT, when its
/// stdin closes (so do not start it with stdin from /dev/null), or after --lifetime-secs.
#[derive(Debug, Parser)]
#[command(name = "qgate-echo")]
struct Args {
    /// The address to listen on (port 0 picks a free one; the chosen one is printed).
    #[arg(short = 'p', default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A password file, as q's `-U`.
    #[arg(short = 'U', value_name = "FILE", conflicts_with = "restricted")]
    password_file: Option<PathBuf>,
    /// A password file with q's `-u` restrictions.
    #[arg(short = 'u', value_name = "FILE")]
    restricted: Option<PathBuf>,
    /// Close a connection silent for this long, between messages or in the middle of one.
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Close a connection that has not finished its handshake after this long.
    #[arg(long, value_name = "MS")]
    handshake_timeout_ms: Option<u64>,
    /// Connections open at once, in all.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections open at once for one user name.
    #[arg(long, value_name = "N")]
    max_connections_per_user: Option<usize>,
    /// Connections that have not logged in yet, at once.
    #[arg(long, value_name = "N")]
    max_handshakes: Option<usize>,
    /// Past this many pending handshakes, new connections are dropped at random.
    #[arg(long, value_name = "N")]
    handshake_early_drop: Option<usize>,
    /// Connections that have not logged in yet, at once, from one address.
    #[arg(long, value_name = "N")]
    max_handshakes_per_address: Option<usize>,
    /// The first wait that failed logins cost later attempts, or 0 to turn the protection off.
    #[arg(long, value_name = "MS")]
    failed_login_delay_ms: Option<u64>,
    /// The memory budget for messages and replies in flight, in MiB.
    #[arg(long, value_name = "MIB")]
    memory_budget_mib: Option<usize>,
    /// The largest message, after decompression, in MiB.
    #[arg(long, value_name = "MIB")]
    max_message_mib: Option<usize>,
    /// How many times its wire size a compressed message may expand to.
    #[arg(long, value_name = "N")]
    max_expansion: Option<usize>,
    /// Stop after this long whatever happens, so that a forgotten server cannot outlive a test run.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    lifetime_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The server's log lines, on stderr, filtered by RUST_LOG (default: info).
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let lifetime = Duration::from_secs(args.lifetime_secs);
    let options = options(&args);
    // Stdin is read on a thread of its own: tokio's stdin would keep the runtime from shutting
    // down while its blocking read waits.
    let (stdin_closed, stdin_closed_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    // The last resort: whatever state the server is in, the process ends.
    std::thread::spawn(move || {
        #[expect(
            clippy::disallowed_methods,
            reason = "a thread of its own, outside the runtime, that only waits"
        )]
        std::thread::sleep(lifetime + Duration::from_secs(30));
        std::process::exit(3);
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(async move {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let local = listener.local_addr()?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "qgate listening on {local}")?;
            stdout.flush()?;
            drop(stdout);
            let shutdown = shutdown_signal(stdin_closed_rx, lifetime)?;
            qgate_server::run(listener, options, EchoHooks::default(), shutdown).await
        })
}

/// The server's options from the command line; everything else keeps qgate's defaults.
fn options(args: &Args) -> ServerOptions {
    let mut options = ServerOptions::default();
    options.password_file = match (&args.password_file, &args.restricted) {
        (Some(path), _) => Some(PasswordFile {
            path: path.clone(),
            restricted: false,
        }),
        (None, Some(path)) => Some(PasswordFile {
            path: path.clone(),
            restricted: true,
        }),
        (None, None) => None,
    };
    if let Some(ms) = args.idle_timeout_ms {
        options.limits.idle_timeout = Some(Duration::from_millis(ms));
    }
    if let Some(ms) = args.handshake_timeout_ms {
        options.limits.handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_connections {
        options.limits.max_connections = n;
    }
    if let Some(n) = args.max_connections_per_user {
        options.limits.max_connections_per_user = n;
    }
    if let Some(n) = args.max_handshakes {
        options.limits.max_handshakes = n;
    }
    if let Some(n) = args.handshake_early_drop {
        options.limits.handshake_early_drop = n;
    }
    if let Some(n) = args.max_handshakes_per_address {
        options.limits.max_handshakes_per_address = n;
    }
    if let Some(ms) = args.failed_login_delay_ms {
        options.login_backoff.first_delay = (ms > 0).then(|| Duration::from_millis(ms));
    }
    if let Some(mib) = args.memory_budget_mib {
        options.limits.memory_budget = mib << 20;
    }
    if let Some(mib) = args.max_message_mib {
        options.limits.max_message_bytes = mib << 20;
    }
    if let Some(n) = args.max_expansion {
        options.limits.max_expansion = n;
    }
    options.shutdown_grace = Duration::from_secs(2);
    options
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

/// The echo hooks, and the async values each connection has sent.
#[derive(Debug, Default)]
struct EchoHooks {
    asyncs: Mutex<HashMap<Handle, Vec<K>>>,
}

impl EchoHooks {
    fn asyncs(&self) -> std::sync::MutexGuard<'_, HashMap<Handle, Vec<K>>> {
        // A panic while holding the lock leaves a map that is still a valid map.
        self.asyncs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The text after `err:` when the request is a char vector that starts with it.
fn error_text(request: &Request) -> Option<String> {
    let text = request.view().string()?;
    let rest = text.strip_prefix(b"err:")?;
    Some(String::from_utf8_lossy(rest).into_owned())
}

impl Hooks for EchoHooks {
    async fn on_sync(&self, session: &Session, request: &Request) -> Verdict {
        if request.view().string() == Some(b"asyncs".as_slice()) {
            let received = self
                .asyncs()
                .get(&session.handle)
                .cloned()
                .unwrap_or_default();
            return Verdict::reply(&K::list(received));
        }
        if let Some(text) = error_text(request) {
            return Verdict::Deny(text);
        }
        match request.to_k() {
            Ok(value) => Verdict::reply(&value),
            Err(error) => Verdict::Deny(error.to_string()),
        }
    }

    /// A sync request's answer is its decoded copy and that copy encoded again (the reply's
    /// bytes), both made while the request is held.
    fn deciding_bytes(&self, request: &Request) -> usize {
        match request.message_type() {
            MessageType::Sync => request.body().len().saturating_mul(2),
            _ => 0,
        }
    }

    async fn on_async(&self, session: &Session, request: &Request) -> Verdict {
        let value = match request.to_k() {
            Ok(value) => value,
            Err(error) => return Verdict::Deny(error.to_string()),
        };
        self.asyncs().entry(session.handle).or_default().push(value);
        match error_text(request) {
            Some(text) => Verdict::Deny(text),
            None => Verdict::reply(&K::Null),
        }
    }

    async fn on_close(&self, session: &Session, _reason: &CloseReason) {
        self.asyncs().remove(&session.handle);
    }
}
