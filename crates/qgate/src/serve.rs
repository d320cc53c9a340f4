//! `qgate serve`: loads the config, binds the listener, and runs the server until SIGINT or
//! SIGTERM; SIGHUP reloads every plugin whose file changed.
//!
//! The order matters and is the contract with scripts and tests: the config is loaded and checked
//! first, and the server is built (its password file and TLS files loaded) before anything is
//! bound, so that a bad config or a bad file never binds a port; then the listener and the admin
//! socket are bound and the signal handlers are installed, and only then is
//! `qgate listening on ADDR` printed to stdout. Whoever reads that line may connect at once, may
//! use `qgate reload` at once, and may stop the server with SIGTERM at once.
//!
//! After a shutdown signal the process exits within `server.shutdown_grace` and a few seconds,
//! whatever its clients and plugins are doing: the server cuts what outlasts the grace, and a
//! plugin call still running on a thread is not waited for ([`EXIT_WAIT`]).

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use qgate_config::{Config, Listen, LogFormat, ResolvedClientAuth, TlsMode, Upstreams};
use qgate_gateway::Gateway;
use qgate_hooks::{Backend, Hooks, NoBackend};
use qgate_host::{ConfigFile, HostOptions, LockPolicy, PluginHost, PluginSpec};
use qgate_metrics::{Metrics, Registry};
use qgate_server::{
    ClientAuth, LoginBackoff, PasswordFile, Server, ServerLimits, ServerOptions, TlsOptions,
    UserFrom,
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use crate::{
    acme, admin,
    decisions::{self, DecisionLog},
    gateway::gateway_options,
    logging, metrics,
    reconfig::ConfigSource,
    watch,
};

/// How long the process waits, once the server has stopped, for work still running on its threads
/// (a plugin call past the grace period, a reload compiling) before it exits regardless.
///
/// 1 s: the server has already cut every connection and waited a second for their close hooks;
/// what is still running now is stuck in a plugin or a file, and would hold the exit (and every
/// socket it owns) for as long as it runs.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// `qgate serve`: flags follow q's where q has one, and override the config file.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file. Without one, the built-in defaults apply; the reference config.toml
    /// spells them out.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen, overriding `server.listen`: HOST:PORT, or a bare PORT for every
    /// interface, as q's -p.
    #[arg(short = 'p', long = "listen", value_name = "PORT|HOST:PORT")]
    listen: Option<Listen>,
    /// A password file, as q's -U, overriding `[auth]`.
    #[arg(
        short = 'U',
        value_name = "FILE",
        conflicts_with = "restricted_password_file"
    )]
    password_file: Option<PathBuf>,
    /// A password file, as q's -u (restricted), overriding `[auth]`.
    #[arg(short = 'u', value_name = "FILE")]
    restricted_password_file: Option<PathBuf>,
    /// TLS on the q port, as q's -E, overriding `tls.mode`: 0 off, 1 optional (plain and TLS),
    /// 2 required.
    #[arg(short = 'E', value_name = "0|1|2", value_parser = clap::value_parser!(u8).range(0..=2))]
    tls_mode: Option<u8>,
    /// Log JSON lines instead of text, overriding `log.format`.
    #[arg(long)]
    log_json: bool,
    /// Put qgate in front of the kdb+ process at HOST:PORT, replacing `[[upstream]]` with one
    /// pinned upstream named `default`; repeat it to list replicas of that one service.
    #[arg(long = "upstream", value_name = "HOST:PORT")]
    upstreams: Vec<String>,
}

impl Args {
    /// The config file, when there is one: what a config reload reads again.
    pub(crate) fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// The config to run with: the file (or the defaults), then the flags on top.
    pub(crate) fn config(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(path) = &self.password_file {
            config.auth.password_file = Some(path.clone());
            config.auth.restricted = false;
        }
        if let Some(path) = &self.restricted_password_file {
            config.auth.password_file = Some(path.clone());
            config.auth.restricted = true;
        }
        match self.tls_mode {
            Some(0) => config.tls.mode = TlsMode::Off,
            Some(1) => config.tls.mode = TlsMode::Optional,
            Some(2) => config.tls.mode = TlsMode::Required,
            // clap refuses any other value.
            Some(_) | None => {}
        }
        if self.log_json {
            config.log.format = LogFormat::Json;
        }
        if !self.upstreams.is_empty() {
            config.upstream = Upstreams::from_servers(&self.upstreams)
                .map_err(|error| anyhow!("--upstream: {error}"))?;
            // Routes in the file name the file's upstreams, which the flag replaced.
            config
                .check_routes()
                .context("--upstream replaces the config's [[upstream]] tables")?;
        }
        Ok(config)
    }
}

/// Runs the server until a shutdown signal, on a multi-thread runtime.
///
/// # Errors
///
/// If the config is invalid, the address cannot be bound, or the server fails.
pub(crate) fn run(args: &Args) -> Result<()> {
    let config = args.config()?;
    logging::init(&config.log)?;
    match &args.config {
        Some(path) => info!(config = %path.display(), "config loaded"),
        None => info!("no config file: using the built-in defaults"),
    }
    let mut options = server_options(&config, |name| std::env::var(name).ok())?;
    // Before TLS is checked: on a first start the storage gets a placeholder certificate, which
    // TLS starts with until the CA issues the real one.
    let acme = acme::prepare(&config)?;
    if let Some(acme) = &acme {
        options.http.challenges = Some(Arc::clone(&acme.answers));
    }
    // Without `[metrics]` the counts are kept (a few atomic adds) and never read.
    let mut registry = Registry::default();
    let metrics = match config.metrics {
        Some(_) => Metrics::register(&mut registry, env!("CARGO_PKG_VERSION")),
        None => Metrics::new(),
    };
    // Checked before the port is bound: a bad certificate or key never leaves a port half-served.
    if let Some(tls) = &options.tls {
        tls.check()
            .context("cannot start: TLS is not set up right")?;
    }
    // Opened before the plugins load, so that their first decisions are recorded.
    let decisions = match &config.decision_log {
        Some(table) if !config.plugins.is_empty() => {
            let settings = decisions::Settings {
                path: table.path.clone(),
                max_file_bytes: u64::try_from(table.max_file_bytes.get()).unwrap_or(u64::MAX),
                max_files: table.max_files.get(),
                include_text: table.include_text,
                include_bytes: table.include_bytes.get(),
                queue: qgate_config::DecisionLog::QUEUE,
            };
            let log = DecisionLog::start(&settings, metrics.clone()).with_context(|| {
                format!(
                    "cannot start: cannot open the decision log {}",
                    table.path.display()
                )
            })?;
            Some(log)
        }
        Some(_) => {
            info!("decision_log is set but no plugin is configured: no decision to record");
            None
        }
        None => None,
    };
    // Loaded before the port is bound: a plugin that cannot load never leaves a port half-served.
    let host = if config.plugins.is_empty() {
        info!("no plugins configured: queries get an error, as nothing answers them");
        None
    } else {
        let mut options = host_options(&config)?;
        options.metrics = metrics.clone();
        options.decisions = decisions
            .clone()
            .map(|log| log as Arc<dyn qgate_hooks::DecisionSink>);
        let host = PluginHost::new(options)
            .context("cannot start: a plugin in `[[plugins]]` failed to load")?;
        info!(
            plugins = ?host.plugin_names(),
            locked = config.lock.enabled,
            "plugins loaded"
        );
        Some(Arc::new(host))
    };
    // Checked before the port is bound; connected only once serving, so an upstream that is down
    // at start is logged, not fatal.
    let gateway = gateway_options(&config, |name| std::env::var(name).ok())?
        .map(Gateway::new)
        .transpose()
        .context("cannot start: an `[[upstream]]` is not set up right")?;
    if let Some(gateway) = &gateway {
        info!(
            upstreams = ?gateway.upstream_names(),
            "gateway mode: what the plugins pass goes to the first upstream"
        );
        if config.metrics.is_some() {
            Metrics::register_upstreams(&mut registry, gateway.clone());
        }
    }
    let endpoint = config.metrics.map(|table| MetricsEndpoint {
        addr: table.listen.get(),
        registry: Arc::new(registry),
    });
    // The admin socket is there when there is something to ask it about.
    let wants_admin = (host.is_some() || gateway.is_some()) && config.admin.enabled;
    let admin_socket = if wants_admin {
        admin::socket_path(&config)?
    } else {
        None
    };
    if wants_admin && admin_socket.is_none() {
        info!("no admin socket: the server listens on port 0 and `admin.socket` is not set");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plugins = host.map(|host| Plugins {
        host,
        watch: config.admin.watch,
    });
    let parts = Parts {
        args: args.clone(),
        started: config.clone(),
        addr: config.server.listen.get(),
        options,
        plugins,
        gateway,
        admin_socket,
        metrics,
        endpoint,
        acme,
    };
    let result = runtime.block_on(async move {
        match &parts.plugins {
            Some(plugins) => {
                let hooks = Arc::clone(&plugins.host);
                build(parts, hooks).await
            }
            None => build(parts, qgate_hooks::NoHooks).await,
        }
    });
    // A plugin call past the grace period runs on a thread the runtime would otherwise wait for.
    runtime.shutdown_timeout(EXIT_WAIT);
    if let Some(log) = &decisions {
        log.flush(EXIT_WAIT);
    }
    result
}

/// What `serve` runs: the q port's address and options, the plugins, the gateway, the admin
/// socket and the metrics.
struct Parts {
    /// The command line, which a config reload reads the config by again.
    args: Args,
    /// The config the process started with.
    started: Config,
    addr: SocketAddr,
    options: ServerOptions,
    plugins: Option<Plugins>,
    gateway: Option<Gateway>,
    admin_socket: Option<PathBuf>,
    metrics: Metrics,
    endpoint: Option<MetricsEndpoint>,
    /// The ACME certificate manager, with `[tls.acme]`.
    acme: Option<acme::Prepared>,
}

/// Where `/metrics` is served, and what.
struct MetricsEndpoint {
    addr: SocketAddr,
    registry: Arc<Registry>,
}

/// The plugin host and whether its files are watched for new versions.
struct Plugins {
    host: Arc<PluginHost>,
    watch: bool,
}

/// The plugin host's options from a config: the `[[plugins]]` chain, in order, with their pins,
/// `server.plugin_cache_dir`, and `[lock]`.
///
/// No WASI capability can be granted to a plugin: the host gives every plugin an empty WASI
/// context, and `HostOptions` has no grant. A grant added later must be refused here when
/// `lock.enabled` is set.
///
/// # Errors
///
/// When a key of `lock.keys` is not an ed25519 public key.
pub(crate) fn host_options(config: &Config) -> Result<HostOptions> {
    let plugins = config
        .plugins
        .as_slice()
        .iter()
        .map(|plugin| {
            let mut spec = PluginSpec::new(plugin.name.clone(), plugin.path.clone());
            spec.config = plugin.config_json();
            spec.config_files = plugin
                .config_files()
                .map_err(|why| anyhow!("plugins `{}`: config: {why}", plugin.name))?
                .into_iter()
                .map(|file| {
                    let mut spec_file = ConfigFile::new(file.key, file.pointer, file.path);
                    spec_file.sha256 = file
                        .sha256
                        .map(|pin| {
                            pin.as_hex().parse().with_context(|| {
                                format!(
                                    "plugins `{}`: config: {}: sha256",
                                    plugin.name, spec_file.key
                                )
                            })
                        })
                        .transpose()?;
                    Ok(spec_file)
                })
                .collect::<Result<_>>()?;
            spec.fail_open = plugin.fail_open;
            spec.time_budget = plugin.time_budget.get();
            spec.memory_limit_bytes = plugin.memory_limit.get();
            spec.routes = plugin.routes.clone();
            spec.kv_file = plugin.kv_file.clone();
            spec.shadow = plugin.mode == qgate_config::PluginMode::Shadow;
            spec.max_file_bytes = u64::try_from(plugin.max_file_bytes.get()).unwrap_or(u64::MAX);
            spec.sha256 = plugin
                .sha256
                .as_ref()
                .map(|pin| {
                    pin.as_hex()
                        .parse()
                        .with_context(|| format!("plugins `{}`: sha256", plugin.name))
                })
                .transpose()?;
            Ok(spec)
        })
        .collect::<Result<_>>()?;
    let mut lock = LockPolicy::default();
    lock.locked = config.lock.enabled;
    lock.keys = config
        .lock
        .keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            key.parse()
                .map_err(|error| anyhow!("lock.keys[{index}]: {error}"))
        })
        .collect::<Result<_>>()?;
    let mut options = HostOptions::new(plugins);
    options.cache_dir = config.server.plugin_cache_dir.clone();
    options.lock = lock;
    Ok(options)
}

/// The server's options from a config, with kdb+'s TLS environment variables read through `env`
/// where `[tls]` says nothing.
///
/// A function rather than `impl From<&Config> for ServerOptions`, which the orphan rule forbids
/// here: both types are foreign to this crate, and neither of their crates may know the other.
///
/// # Errors
///
/// When TLS is on without a certificate or key, or an `SSL_*` variable has a bad value.
pub(crate) fn server_options(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServerOptions> {
    let mut limits = ServerLimits::default();
    limits.max_message_bytes = config.limits.max_message_bytes.get();
    limits.max_handshake_bytes = config.limits.max_handshake_bytes.get();
    limits.handshake_timeout = config.limits.handshake_timeout.get();
    limits.idle_timeout = config.limits.idle_timeout.get();
    limits.body_timeout = config.limits.body_timeout.get();
    limits.write_timeout = config.limits.write_timeout.get();
    limits.max_expansion = config.limits.max_expansion.get();
    limits.memory_budget = config.limits.memory_budget.get();
    limits.max_connections = config.limits.max_connections.get();
    limits.max_connections_per_user = config.limits.max_connections_per_user.get();
    limits.max_handshakes = config.limits.max_handshakes.get();
    limits.handshake_early_drop = config.limits.handshake_early_drop.get();
    limits.max_handshakes_per_address = config.limits.max_handshakes_per_address.get();
    let mut options = ServerOptions::default();
    options.limits = limits;
    let mut backoff = LoginBackoff::default();
    backoff.first_delay = config.auth.failed_login_delay.get();
    backoff.max_delay = config.auth.max_failed_login_delay.get();
    backoff.failures_before_delay =
        u32::try_from(config.auth.failures_before_delay.get()).unwrap_or(u32::MAX);
    options.login_backoff = backoff;
    options.password_file = config.auth.password_file.clone().map(|path| PasswordFile {
        path,
        restricted: config.auth.restricted,
    });
    options.shutdown_grace = config.server.shutdown_grace.get();
    options.connection_threads = config.server.connection_threads;
    options.http.enabled = config.http.enabled;
    options.http.max_header_bytes = config.http.max_header_bytes.get();
    options.http.max_body_bytes = config.http.max_body_bytes.get();
    options.http.header_timeout = config.http.header_timeout.get();
    options.http.keepalive_idle = config.http.keepalive_idle.get();
    options.http.max_ws_message_bytes = config.http.max_ws_message_bytes.get();
    options.http.ws_ping_interval = config.http.ws_ping_interval.get();
    options.tls = config.tls.resolve(env)?.map(|tls| {
        let mode = match tls.mode {
            TlsMode::Required => qgate_server::TlsMode::Required,
            // `resolve` gives no TLS at all for `Off`.
            TlsMode::Optional | TlsMode::Off => qgate_server::TlsMode::Optional,
        };
        let mut options = TlsOptions::new(mode, tls.cert_file, tls.key_file);
        options.client_auth = match tls.client_auth {
            ResolvedClientAuth::None => ClientAuth::None,
            ResolvedClientAuth::Optional(ca) => ClientAuth::Optional(ca),
            ResolvedClientAuth::Required(ca) => ClientAuth::Required(ca),
        };
        options.user_from = match tls.user_from {
            qgate_config::UserFrom::Cn => UserFrom::Cn,
            qgate_config::UserFrom::None => UserFrom::None,
            qgate_config::UserFrom::San => UserFrom::San,
        };
        options
    });
    Ok(options)
}

/// Builds the server, in front of the gateway's upstreams when there are any, then serves.
///
/// Built before the port is bound: a password file or a TLS file that cannot be used never
/// leaves a port half-served, and the cause is said once.
async fn build<H: Hooks>(parts: Parts, hooks: H) -> Result<()> {
    let options = parts.options.clone();
    let metrics = parts.metrics.clone();
    match parts.gateway.clone() {
        None => {
            let server = Server::with_metrics(options, hooks, NoBackend, metrics)
                .await
                .context("cannot start")?;
            serve(server, parts).await
        }
        Some(gateway) => {
            let server = Server::with_metrics(options, hooks, gateway, metrics)
                .await
                .context("cannot start")?;
            serve(server, parts).await
        }
    }
}

/// Binds, announces the address, and runs the server until SIGINT or SIGTERM.
async fn serve<H: Hooks, B: Backend>(server: Server<H, B>, parts: Parts) -> Result<()> {
    let Parts {
        args,
        started,
        addr,
        plugins,
        gateway,
        admin_socket,
        endpoint,
        acme,
        ..
    } = parts;
    let listener = bind(addr).await?;
    let http01 = match acme.as_ref().and_then(|acme| acme.http_listen) {
        Some(addr) => Some(acme::bind(addr).await?),
        None => None,
    };
    // Bound before the address is announced: a metrics address that cannot be used stops the
    // start, and whoever reads the announcement may scrape at once.
    let metrics_task = match endpoint {
        Some(endpoint) => {
            let listener = metrics::bind(endpoint.addr).await?;
            let addr = listener
                .local_addr()
                .context("cannot read the metrics listener's address")?;
            info!(%addr, "metrics at http://{addr}/metrics");
            Some(tokio::spawn(metrics::serve(listener, endpoint.registry)))
        }
        None => None,
    };
    // Installed before the address is announced: from then on, a signal is a clean shutdown.
    let shutdown = shutdown_signal()?;
    let watch = match &plugins {
        Some(plugins) if plugins.watch => {
            Some(watch::start(&plugins.host).context("cannot start the plugin file watch")?)
        }
        _ => None,
    };
    let source = Arc::new(ConfigSource::new(
        args,
        started,
        plugins.as_ref().map(|plugins| plugins.host.clone()),
        watch,
        gateway.clone(),
        server.settings(),
    ));
    let admin_socket = match &admin_socket {
        Some(path) => {
            let socket = admin::bind(path)?;
            info!(path = %socket.path().display(), "admin socket ready");
            let admin = admin::Admin {
                host: plugins.as_ref().map(|plugins| plugins.host.clone()),
                gateway: gateway.clone(),
                config: Arc::clone(&source),
            };
            Some(tokio::spawn(socket.serve(admin)))
        }
        None => None,
    };
    reload_on_hangup(plugins.as_ref().map(|plugins| plugins.host.clone()), source)?;
    let addr = listener
        .local_addr()
        .context("cannot read the listener's address")?;
    info!(%addr, "listening");
    announce(addr);
    // The upstreams' health checks run as long as the server does; their first round logs an
    // upstream that is down at start.
    let health = gateway.map(|gateway| tokio::spawn(async move { gateway.watch().await }));
    // The certificate manager starts once the q port answers, since the CA's TLS-ALPN-01
    // validation comes to it.
    let acme_tasks = acme.map(|acme| {
        let http01 = http01.map(|listener| {
            tokio::spawn(acme::serve_http01(listener, Arc::clone(&acme.challenges)))
        });
        (tokio::spawn(acme::run(acme.acme)), http01)
    });
    server.serve(listener, shutdown).await;
    if let Some((manager, http01)) = acme_tasks {
        manager.abort();
        if let Some(http01) = http01 {
            http01.abort();
        }
    }
    if let Some(health) = health {
        health.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(task) = admin_socket {
        // Dropping the task drops the socket, which removes its file.
        task.abort();
        let _ = task.await;
    }
    Ok(())
}

/// On each SIGHUP, on a blocking thread: reads the config file again and applies it, then
/// reloads every plugin whose file changed. A config that cannot be applied changes nothing, the
/// plugins' files included.
fn reload_on_hangup(host: Option<Arc<PluginHost>>, source: Arc<ConfigSource>) -> Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!(
                signal = "SIGHUP",
                "reading the config again and reloading every changed plugin"
            );
            let host = host.clone();
            let source = Arc::clone(&source);
            let reload = move || {
                if source.reload_logged().is_ok()
                    && let Some(host) = &host
                {
                    admin::reload_changed_logged(host);
                }
            };
            if let Err(error) = tokio::task::spawn_blocking(reload).await {
                warn!(%error, "SIGHUP reload failed");
            }
        }
    });
    Ok(())
}

/// Binds `addr`, with an error that names the address and says what to do.
async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        let hint = match error.kind() {
            io::ErrorKind::AddrInUse => {
                "; another process is listening there: stop it, or choose another address with \
                 -p or `server.listen`"
            }
            io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: choose a higher port with -p or \
                 `server.listen`"
            }
            io::ErrorKind::AddrNotAvailable => {
                "; no interface of this machine has that address: use 127.0.0.1 for this \
                 machine only, or 0.0.0.0 for every interface"
            }
            _ => "",
        };
        anyhow!("cannot listen on {addr}: {error}{hint}")
    })
}

/// Prints `qgate listening on ADDR` to stdout, the line that scripts and tests wait for.
fn announce(addr: SocketAddr) {
    let mut stdout = io::stdout().lock();
    if let Err(error) = writeln!(stdout, "qgate listening on {addr}").and_then(|()| stdout.flush())
    {
        // The server runs fine without anyone reading stdout.
        warn!(%error, "cannot print the listening address to stdout");
    }
}

/// A future that resolves on the first SIGINT or SIGTERM.
///
/// The handlers are installed here, at once, not when the future is first polled. After the first
/// signal the server drains for `server.shutdown_grace`; a second signal exits at once, for a
/// person who does not want to wait.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!(signal = name, "shutting down");
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            warn!(signal = name, "second signal: exiting without draining");
            std::process::exit(1);
        });
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use clap::Parser;
    use qgate_config::Limits;

    use super::*;

    /// The config crate repeats the server's defaults, because it may not depend on the server:
    /// they must stay equal.
    #[test]
    fn defaults_match_the_server() {
        assert_eq!(
            Limits::DEFAULT_MAX_MESSAGE_BYTES,
            ServerLimits::DEFAULT_MAX_MESSAGE_BYTES
        );
        assert_eq!(
            Limits::DEFAULT_MAX_HANDSHAKE_BYTES,
            ServerLimits::DEFAULT_MAX_HANDSHAKE_BYTES
        );
        assert_eq!(
            Limits::DEFAULT_HANDSHAKE_TIMEOUT,
            ServerLimits::DEFAULT_HANDSHAKE_TIMEOUT
        );
        assert_eq!(
            Limits::DEFAULT_IDLE_TIMEOUT,
            ServerLimits::DEFAULT_IDLE_TIMEOUT
        );
        assert_eq!(
            Limits::DEFAULT_MAX_CONNECTIONS,
            ServerLimits::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(
            Limits::DEFAULT_MAX_CONNECTIONS_PER_USER,
            ServerLimits::DEFAULT_MAX_CONNECTIONS_PER_USER
        );
        assert_eq!(
            qgate_config::Server::DEFAULT_SHUTDOWN_GRACE,
            ServerOptions::DEFAULT_SHUTDOWN_GRACE
        );
        // The rest (the new limits, the login backoff) are compared whole.
        assert_eq!(
            server_options(&Config::default(), |_| None).expect("the defaults are valid"),
            ServerOptions::default()
        );
        assert_eq!(
            qgate_config::Plugin::DEFAULT_MAX_FILE_BYTES as u64,
            PluginSpec::DEFAULT_MAX_FILE_BYTES
        );
    }

    #[test]
    fn options_from_config() {
        let config = Config::from_toml_str(
            r#"
            [server]
            shutdown_grace = "1s"
            [auth]
            password_file = "/etc/qgate/passwords.txt"
            restricted = true
            failed_login_delay = "1s"
            max_failed_login_delay = "1m"
            failures_before_delay = 7
            [limits]
            max_message_bytes = "1MiB"
            max_expansion = 8
            max_handshake_bytes = 1024
            handshake_timeout = "2s"
            idle_timeout = "3m"
            body_timeout = "4s"
            write_timeout = "5s"
            memory_budget = "2MiB"
            max_connections = 4
            max_connections_per_user = 5
            max_handshakes = 6
            handshake_early_drop = 3
            max_handshakes_per_address = 2
            "#,
        )
        .expect("a valid config");
        let options = server_options(&config, |_| None).expect("valid options");
        assert_eq!(options.shutdown_grace, Duration::from_secs(1));
        assert_eq!(
            options.password_file,
            Some(PasswordFile {
                path: "/etc/qgate/passwords.txt".into(),
                restricted: true,
            })
        );
        assert_eq!(options.limits.max_message_bytes, 1 << 20);
        assert_eq!(options.limits.max_handshake_bytes, 1024);
        assert_eq!(options.limits.handshake_timeout, Duration::from_secs(2));
        assert_eq!(options.limits.idle_timeout, Some(Duration::from_secs(180)));
        assert_eq!(options.limits.max_connections, 4);
        assert_eq!(options.limits.max_connections_per_user, 5);
        assert_eq!(options.limits.max_expansion, 8);
        assert_eq!(options.limits.body_timeout, Duration::from_secs(4));
        assert_eq!(options.limits.write_timeout, Duration::from_secs(5));
        assert_eq!(options.limits.memory_budget, 2 << 20);
        assert_eq!(options.limits.max_handshakes, 6);
        assert_eq!(options.limits.handshake_early_drop, 3);
        assert_eq!(options.limits.max_handshakes_per_address, 2);
        assert_eq!(
            options.login_backoff.first_delay,
            Some(Duration::from_secs(1))
        );
        assert_eq!(options.login_backoff.max_delay, Duration::from_secs(60));
        assert_eq!(options.login_backoff.failures_before_delay, 7);
        assert_eq!(options.tls, None);
    }

    #[test]
    fn tls_options_from_config_and_environment() {
        let config = Config::from_toml_str(
            r#"
            [tls]
            mode = "required"
            cert_file = "/etc/qgate/chain.pem"
            client_auth = "required"
            ca_file = "/etc/qgate/ca.pem"
            user_from = "cn"
            "#,
        )
        .expect("a valid config");
        let env = |name: &str| (name == "SSL_KEY_FILE").then(|| "/env/key.pem".to_owned());
        let tls = server_options(&config, env)
            .expect("valid options")
            .tls
            .expect("TLS on");
        assert_eq!(tls.mode, qgate_server::TlsMode::Required);
        assert_eq!(tls.cert_file, Path::new("/etc/qgate/chain.pem"));
        assert_eq!(tls.key_file, Path::new("/env/key.pem"));
        assert_eq!(
            tls.client_auth,
            ClientAuth::Required("/etc/qgate/ca.pem".into())
        );
        assert_eq!(tls.user_from, UserFrom::Cn);

        let error = server_options(&config, |_| None).expect_err("no key");
        assert!(error.to_string().contains("SSL_KEY_FILE"), "{error}");
    }

    #[test]
    fn the_e_flag_sets_the_tls_mode() {
        assert_eq!(
            parse(&["-E", "1"]).expect("valid").tls.mode,
            TlsMode::Optional
        );
        assert_eq!(
            parse(&["-E", "2"]).expect("valid").tls.mode,
            TlsMode::Required
        );
        assert_eq!(parse(&["-E", "0"]).expect("valid").tls.mode, TlsMode::Off);
        assert!(parse(&["-E", "3"]).is_err());
    }

    #[test]
    fn host_options_from_config() {
        let config = Config::from_toml_str(
            r#"
            [server]
            plugin_cache_dir = "/var/cache/qgate"
            [[plugins]]
            name = "audit"
            path = "/opt/audit.wasm"
            fail_open = true
            time_budget = "5ms"
            memory_limit = "8MiB"
            max_file_bytes = "1MiB"
            config = { include_text = true }
            [[plugins]]
            name = "demo-api"
            path = "/opt/demo_api.wasm"
            "#,
        )
        .expect("a valid config");
        let options = host_options(&config).expect("valid options");
        assert_eq!(options.cache_dir, Some("/var/cache/qgate".into()));
        let [audit, demo] = options.plugins.as_slice() else {
            panic!("two plugins")
        };
        assert_eq!(audit.name, "audit");
        assert_eq!(audit.path, Path::new("/opt/audit.wasm"));
        assert!(audit.fail_open);
        assert_eq!(audit.time_budget, Duration::from_millis(5));
        assert_eq!(audit.memory_limit_bytes, 8 << 20);
        assert_eq!(audit.max_file_bytes, 1 << 20);
        assert_eq!(
            audit.config.get("include_text").map(ToString::to_string),
            Some("true".to_owned())
        );
        assert_eq!(demo.name, "demo-api");
        assert!(!demo.fail_open);
        assert_eq!(demo.time_budget, PluginSpec::DEFAULT_TIME_BUDGET);
        assert_eq!(
            demo.memory_limit_bytes,
            PluginSpec::DEFAULT_MEMORY_LIMIT_BYTES
        );
        assert_eq!(demo.max_file_bytes, PluginSpec::DEFAULT_MAX_FILE_BYTES);
        assert!(demo.config.is_empty());
        assert!(
            host_options(&Config::default())
                .expect("valid options")
                .plugins
                .is_empty()
        );
    }

    /// `qgate serve`'s flags alone, for parsing them in tests.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Config> {
        let serve = Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        serve.args.config()
    }

    #[test]
    fn flags_override_the_file() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.toml");
        let reference = reference.to_str().expect("a UTF-8 path");
        let config = parse(&["--config", reference]).expect("the reference config");
        assert_eq!(config.server, Config::default().server);
        assert!(!config.auth.restricted);

        let config = parse(&[
            "--config",
            reference,
            "-p",
            "6000",
            "-u",
            "pw.txt",
            "--log-json",
        ])
        .expect("valid flags");
        assert_eq!(
            config.server.listen.get(),
            "0.0.0.0:6000".parse::<SocketAddr>().expect("an address")
        );
        assert_eq!(
            config.auth.password_file.as_deref(),
            Some(Path::new("pw.txt"))
        );
        assert!(config.auth.restricted);
        assert_eq!(config.log.format, LogFormat::Json);

        let config = parse(&["-p", "[::1]:0", "-U", "pw.txt"]).expect("valid flags");
        assert_eq!(
            config.server.listen.get(),
            "[::1]:0".parse::<SocketAddr>().expect("an address")
        );
        assert!(!config.auth.restricted);

        let error = parse(&["-U", "a", "-u", "b"]).expect_err("-U and -u conflict");
        assert!(error.to_string().contains("cannot be used with"), "{error}");
        let error = parse(&["-p", "localhost:5000"]).expect_err("not an IP address");
        assert!(error.to_string().contains("invalid address"), "{error}");
    }
}
