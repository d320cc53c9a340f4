//! The targets: how each server is prepared, started on loopback, and stopped.
//!
//! | target | what runs |
//! |---|---|
//! | `floor` | `qgate-bench floor`: answers each frame without decoding it ([`crate::floor`]) |
//! | `qgate` | `qgate serve` in release, with a password file and a generated config |
//! | `qgate-tls` | the same with `[tls] mode = "required"`, certificates from `qgate certs` |
//! | `gateway` | `qgate serve --upstream FLOOR`, pinned, in front of a floor of its own |
//! | `gateway-pooled` | `qgate serve` with one pooled `[[upstream]]`, in front of a floor of its own |
//! | `gateway-threads` | `gateway` with `[server] connection_threads` = the machine's CPUs |
//! | `aiokdb` | aiokdb's server (Python) in a venv under `target/bench/venv` |
//! | `haproxy` | HAProxy in TCP mode in front of a floor of its own |
//! | `haproxy-tls` | HAProxy terminating TLS (the same certificate) in front of a floor |
//!
//! The TLS targets use the certificates that `qgate certs` writes to `target/bench/certs`: a
//! server certificate signed by an intermediate, served with it, which the client verifies against
//! the CA alone.
//!
//! Preparing a target installs what it lacks (the venv, the Debian package); a target that cannot
//! be prepared is skipped with the reason, never measured.
//! Every process is owned by a [`Running`], whose `Drop` kills and reaps it, so a failed or
//! panicking run leaves no server behind; the floor and the aiokdb script also exit when their
//! stdin closes, which covers a harness that is killed outright.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The aiokdb release the peer runs (the one the client tests use).
const AIOKDB_VERSION: &str = "0.1.38";

/// How long a server has to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an install step (venv, pip, apt-get) may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The targets, in the order they are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The floor server.
    Floor,
    /// qgate with no plugins.
    Qgate,
    /// qgate with the `echo` plugin alone.
    QgateEcho,
    /// qgate with the walkthrough's chain: conns, audit, allowlist, demo-api.
    QgateChain,
    /// The walkthrough's chain with `cedar` in place of `allowlist`, deciding the same.
    QgateCedar,
    /// The walkthrough's chain with Prometheus metrics served and the decision log on.
    QgateObserved,
    /// The walkthrough's chain with a candidate allowlist in shadow mode beside it.
    QgateShadow,
    /// qgate with no plugins, TLS required.
    QgateTls,
    /// qgate with no plugins in front of a floor, pinned: a floor connection per client.
    Gateway,
    /// qgate with no plugins in front of a floor, pooled: [`GATEWAY_POOL_SIZE`] shared
    /// connections.
    GatewayPooled,
    /// The pinned gateway with `connection_threads` set to the machine's CPUs: each connection
    /// served by one thread of its own for life.
    GatewayThreads,
    /// The pinned gateway with the `entitlements` plugin, the harness's user entitled to every
    /// symbol: the plugin reads each reply's summary and passes it.
    GatewayEntitled,
    /// The pinned gateway with the `entitlements` plugin, the harness's user entitled to one
    /// symbol of the floor's ten ([`ENTITLED_SYM`]): a tenth of each table's rows go through.
    GatewayFiltered,
    /// aiokdb's Python server.
    Aiokdb,
    /// HAProxy (TCP mode) in front of a floor.
    Haproxy,
    /// HAProxy terminating TLS in front of a floor.
    HaproxyTls,
}

impl Kind {
    /// Every target.
    pub(crate) const ALL: [Self; 16] = [
        Self::Floor,
        Self::Qgate,
        Self::QgateEcho,
        Self::QgateChain,
        Self::QgateCedar,
        Self::QgateObserved,
        Self::QgateShadow,
        Self::QgateTls,
        Self::Gateway,
        Self::GatewayPooled,
        Self::GatewayThreads,
        Self::GatewayEntitled,
        Self::GatewayFiltered,
        Self::Aiokdb,
        Self::Haproxy,
        Self::HaproxyTls,
    ];

    /// Whether clients reach the target over TLS.
    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Self::QgateTls | Self::HaproxyTls)
    }

    /// The target's name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Qgate => "qgate",
            Self::QgateEcho => "qgate-echo",
            Self::QgateChain => "qgate-chain",
            Self::QgateCedar => "qgate-cedar",
            Self::QgateObserved => "qgate-observed",
            Self::QgateShadow => "qgate-shadow",
            Self::QgateTls => "qgate-tls",
            Self::Gateway => "gateway",
            Self::GatewayPooled => "gateway-pooled",
            Self::GatewayThreads => "gateway-threads",
            Self::GatewayEntitled => "gateway-entitled",
            Self::GatewayFiltered => "gateway-filtered",
            Self::Aiokdb => "aiokdb",
            Self::Haproxy => "haproxy",
            Self::HaproxyTls => "haproxy-tls",
        }
    }

    /// What the target is, for the report.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Floor => "minimal tokio server: answers each frame without decoding it",
            Self::Qgate => {
                "qgate serve, no plugins (sync queries get the error 'nothing answered')"
            }
            Self::QgateEcho => {
                "qgate serve with the echo plugin alone, answering each query with itself"
            }
            Self::QgateChain => {
                "qgate serve with the walkthrough's chain (conns, audit, allowlist, demo-api; \
                 the allowlist lets the harness's user call ping, upd and insert, and demo-api \
                 answers them with q's error for an unknown name)"
            }
            Self::QgateCedar => {
                "the walkthrough's chain with cedar in place of allowlist (conns, audit, cedar, \
                 demo-api; a Cedar policy lets the harness's user call ping, upd and insert, and \
                 read and write the tables they name)"
            }
            Self::QgateObserved => {
                "the walkthrough's chain (as qgate-chain) with [metrics] served and [decision_log] \
                 writing a line for each decision to a file"
            }
            Self::QgateShadow => {
                "the walkthrough's chain (as qgate-chain) with a candidate allowlist in shadow \
                 mode, which would refuse the insert"
            }
            Self::QgateTls => "qgate serve, no plugins, TLS required (rustls, full handshakes)",
            Self::Gateway => {
                "qgate serve --upstream FLOOR, no plugins, in front of a floor of its own: pinned, \
                 each client with its own floor connection"
            }
            Self::GatewayPooled => {
                "qgate serve with one [[upstream]] of mode \"pooled\", no plugins, in front of a \
                 floor of its own: every client shares 16 floor connections"
            }
            Self::GatewayThreads => {
                "the pinned gateway (as gateway) with [server] connection_threads set to the \
                 machine's CPUs: each connection served by one thread of its own for life"
            }
            Self::GatewayEntitled => {
                "the pinned gateway with the entitlements plugin (column sym), the user entitled \
                 to every symbol: the plugin passes a connection's first reply and first \
                 publication and says it passes the rest (pass-always)"
            }
            Self::GatewayFiltered => {
                "the pinned gateway with the entitlements plugin (column sym), the user entitled \
                 to AAPL alone: each reply is cut to the rows of one symbol in ten by the plugin's \
                 edit; publications by the filter the plugin gives the host (filter-always)"
            }
            Self::Aiokdb => "aiokdb's asyncio server (Python), answering (::)",
            Self::Haproxy => "HAProxy in TCP mode in front of a floor",
            Self::HaproxyTls => "HAProxy terminating TLS (OpenSSL) in front of a floor",
        }
    }

    /// Whether the run fails when this target cannot be measured: qgate's own targets must be,
    /// the peers may be missing from a machine.
    pub(crate) fn essential(self) -> bool {
        matches!(
            self,
            Self::Floor
                | Self::Qgate
                | Self::QgateEcho
                | Self::QgateChain
                | Self::QgateCedar
                | Self::QgateObserved
                | Self::QgateShadow
                | Self::QgateTls
                | Self::Gateway
                | Self::GatewayPooled
                | Self::GatewayThreads
                | Self::GatewayEntitled
                | Self::GatewayFiltered
        )
    }

    /// Whether what the target answers comes from a floor (its own, or itself): only those
    /// targets can answer `(`reply;n)` and `(`publish;n)` as the floor does.
    pub(crate) fn answers_as_floor(self) -> bool {
        matches!(
            self,
            Self::Floor
                | Self::Gateway
                | Self::GatewayPooled
                | Self::GatewayThreads
                | Self::GatewayEntitled
                | Self::GatewayFiltered
                | Self::Haproxy
                | Self::HaproxyTls
        )
    }

    /// Whether a client connection takes two descriptors in the target's process, one to the
    /// client and one to its floor: HAProxy's, and the pinned gateway's.
    pub(crate) fn two_descriptors_per_client(self) -> bool {
        matches!(
            self,
            Self::Gateway
                | Self::GatewayThreads
                | Self::GatewayEntitled
                | Self::GatewayFiltered
                | Self::Haproxy
                | Self::HaproxyTls
        )
    }

    /// Whether the target filters replies by entitlement, and what the harness's user sees.
    pub(crate) fn entitlement(self) -> Option<crate::loadgen::Sees> {
        use crate::loadgen::Sees;
        match self {
            Self::GatewayEntitled => Some(Sees::Everything),
            Self::GatewayFiltered => Some(Sees::Only(ENTITLED_SYM)),
            _ => None,
        }
    }

    /// Whether the target is a proxy hop in front of a floor, compared with HAProxy's hop.
    pub(crate) fn is_gateway(self) -> bool {
        matches!(
            self,
            Self::Gateway | Self::GatewayPooled | Self::GatewayThreads
        )
    }

    /// Parses a target name.
    pub(crate) fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .with_context(|| {
                let known: Vec<_> = Self::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown target `{name}` (known: {})", known.join(", "))
            })
    }
}

/// Where things are.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    /// The repository root.
    pub(crate) root: PathBuf,
    /// `target/bench`: generated configs, logs, the venv.
    pub(crate) work: PathBuf,
    /// This binary, which also is the floor.
    pub(crate) self_exe: PathBuf,
    /// The release qgate binary, when given; otherwise it is built.
    pub(crate) qgate_bin: Option<PathBuf>,
}

/// A prepared target: everything needed to start it, any number of times.
#[derive(Clone, Debug)]
pub(crate) enum Spec {
    /// The floor.
    Floor { exe: PathBuf, logs: PathBuf },
    /// `qgate serve`.
    Qgate {
        /// The target's name, for its log file.
        name: &'static str,
        bin: PathBuf,
        config: PathBuf,
        passwords: PathBuf,
        logs: PathBuf,
        /// For `qgate-tls`: the CA the client trusts.
        ca: Option<PathBuf>,
    },
    /// `qgate serve` in front of a floor of its own.
    Gateway {
        /// The target's name, for its log and config files.
        name: &'static str,
        bin: PathBuf,
        /// This binary, which also is the floor.
        exe: PathBuf,
        /// Where the pooled target's config is written, once its floor's address is known.
        work: PathBuf,
        passwords: PathBuf,
        logs: PathBuf,
        /// `None` for the pinned target (`--upstream`), the pool's size for the pooled one.
        pool_size: Option<usize>,
        /// The `[server]` and `[[plugins]]` tables, if any.
        plugins: String,
    },
    /// The aiokdb script.
    Aiokdb {
        python: PathBuf,
        script: PathBuf,
        logs: PathBuf,
    },
    /// HAProxy and its floor.
    Haproxy {
        bin: PathBuf,
        exe: PathBuf,
        work: PathBuf,
        logs: PathBuf,
        /// For `haproxy-tls`: the certificate chain and key in one file, and the CA the client
        /// trusts.
        tls: Option<(PathBuf, PathBuf)>,
    },
}

/// Prepares a target: builds, installs and writes what it needs.
///
/// # Errors
///
/// The reason the target cannot run; the caller reports it as skipped (or failed, for the floor
/// and qgate).
pub(crate) fn prepare(kind: Kind, env: &Env) -> Result<Spec> {
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("failed to create {}", logs.display()))?;
    Ok(match kind {
        Kind::Floor => Spec::Floor {
            exe: env.self_exe.clone(),
            logs,
        },
        Kind::Qgate
        | Kind::QgateEcho
        | Kind::QgateChain
        | Kind::QgateCedar
        | Kind::QgateObserved
        | Kind::QgateShadow
        | Kind::QgateTls => {
            let plugins = match kind {
                Kind::QgateEcho => plugins_config(env, ECHO_PLUGINS)?,
                Kind::QgateChain => plugins_config(env, CHAIN_PLUGINS)?,
                Kind::QgateCedar => plugins_config(env, CEDAR_CHAIN_PLUGINS)?,
                Kind::QgateShadow => {
                    plugins_config(env, &format!("{CHAIN_PLUGINS}{SHADOW_PLUGIN}"))?
                }
                Kind::QgateObserved => {
                    // Rotated at 64 MiB with 2 kept: at most 192 MiB of the harness's disk.
                    let log = env.work.join("decisions.jsonl");
                    format!(
                        "{}\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[decision_log]\npath = {:?}\n\
                         max_files = 2\n",
                        plugins_config(env, CHAIN_PLUGINS)?,
                        free_port()?,
                        log
                    )
                }
                _ => String::new(),
            };
            let bin = qgate_bin(env)?;
            let passwords = env.work.join("passwords.txt");
            write_passwords(&passwords)?;
            let config = env.work.join(format!("{}.toml", kind.name()));
            let (text, ca) = if kind == Kind::QgateTls {
                let certs = certs(env, &bin)?;
                let text = format!(
                    "{QGATE_CONFIG}\n[tls]\nmode = \"required\"\ncert_file = {:?}\nkey_file = {:?}\n",
                    certs.join("server.pem"),
                    certs.join("server.key")
                );
                (text, Some(certs.join("ca.pem")))
            } else {
                (format!("{QGATE_CONFIG}{plugins}"), None)
            };
            std::fs::write(&config, text)?;
            Spec::Qgate {
                name: kind.name(),
                bin,
                config,
                passwords,
                logs,
                ca,
            }
        }
        Kind::Gateway
        | Kind::GatewayPooled
        | Kind::GatewayThreads
        | Kind::GatewayEntitled
        | Kind::GatewayFiltered => {
            let plugins = match kind {
                Kind::GatewayEntitled => plugins_config(env, &entitlements_plugin("*"))?,
                Kind::GatewayFiltered => plugins_config(env, &entitlements_plugin(ENTITLED_SYM))?,
                Kind::GatewayThreads => format!(
                    "\n[server]\nconnection_threads = {}\n",
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                ),
                _ => String::new(),
            };
            let passwords = env.work.join("passwords.txt");
            write_passwords(&passwords)?;
            Spec::Gateway {
                name: kind.name(),
                bin: qgate_bin(env)?,
                exe: env.self_exe.clone(),
                work: env.work.clone(),
                passwords,
                logs,
                pool_size: (kind == Kind::GatewayPooled).then_some(GATEWAY_POOL_SIZE),
                plugins,
            }
        }
        Kind::Aiokdb => Spec::Aiokdb {
            python: aiokdb_venv(env)?,
            script: env.root.join("bench").join("aiokdb_server.py"),
            logs,
        },
        Kind::Haproxy => Spec::Haproxy {
            bin: haproxy()?,
            exe: env.self_exe.clone(),
            work: env.work.clone(),
            logs,
            tls: None,
        },
        Kind::HaproxyTls => {
            let bin = haproxy()?;
            let certs = certs(env, &qgate_bin(env)?)?;
            // HAProxy takes the chain and its key in one file.
            let pem = certs.join("haproxy.pem");
            let chain = std::fs::read_to_string(certs.join("server.pem"))?;
            let key = std::fs::read_to_string(certs.join("server.key"))?;
            std::fs::write(&pem, format!("{chain}{key}"))?;
            Spec::Haproxy {
                bin,
                exe: env.self_exe.clone(),
                work: env.work.clone(),
                logs,
                tls: Some((pem, certs.join("ca.pem"))),
            }
        }
    })
}

/// The release qgate: the one given, or a fresh build.
fn qgate_bin(env: &Env) -> Result<PathBuf> {
    match &env.qgate_bin {
        Some(bin) => Ok(bin.clone()),
        None => build_qgate(env),
    }
}

/// `qgate certs --out target/bench/certs --force`: the TLS targets' certificates, made once per
/// run.
pub(crate) fn certs(env: &Env, qgate: &Path) -> Result<PathBuf> {
    let dir = env.work.join("certs");
    if dir.join("ca.pem").is_file() && dir.join("server.key").is_file() {
        return Ok(dir);
    }
    let log = env.work.join("logs").join("certs.log");
    run_bounded(
        "qgate certs",
        Command::new(qgate)
            .args(["certs", "--force", "--out"])
            .arg(&dir),
        &log,
    )?;
    Ok(dir)
}

/// qgate's config for the benchmark: limits that let 10 000 idle connections of one user in, and
/// logging at `warn` so that the log sink is not what is measured.
const QGATE_CONFIG: &str = "\
# Generated by qgate-bench: the defaults, except for the connection limits (10 000 idle
# connections of one user must fit) and the log level (per-connection lines are not measured).
[limits]
max_message_bytes = \"256MiB\"
max_connections = 20000
max_connections_per_user = 20000

[log]
level = \"warn\"
";

/// The pooled gateway's connections to its floor.
///
/// 16, four times the default pool size: the default (4) fits a kdb+ process without `-s`,
/// which runs one query at a time whatever the number of connections, while the floor answers
/// its connections in parallel on every core, as a kdb+ process with `-s` or a set of replicas
/// would. With 64 clients asking back to back, each pooled connection carries one query at a time
/// (the gateway never pipelines on one), so a pool much smaller than the clients caps the
/// throughput at pool size / round trip to the floor; 16 is a pool a team would give a
/// multi-threaded upstream, and a quarter of the 64 clients, so that the scenario still measures
/// a pool that is shared rather than one connection per client in disguise.
pub(crate) const GATEWAY_POOL_SIZE: usize = 16;

/// The `[[upstream]]` of the pooled gateway target, in front of the floor at `floor`.
fn pooled_upstream(floor: SocketAddr, pool_size: usize) -> String {
    format!(
        "
[[upstream]]
name = \"floor\"
servers = [\"{floor}\"]
mode = \"pooled\"
pool_size = {pool_size}
"
    )
}

/// The `echo` plugin alone.
const ECHO_PLUGINS: &str = "
[[plugins]]
name = \"echo\"
path = \"{plugins}/echo.wasm\"
";

/// The walkthrough's chain before its policy plugin: `conns` and `audit`.
macro_rules! chain_plugins_head {
    () => {
        "
[[plugins]]
name = \"conns\"
path = \"{plugins}/conns.wasm\"
config = { query = \"conns\" }

[[plugins]]
name = \"audit\"
path = \"{plugins}/audit.wasm\"
config = { include_text = false }
"
    };
}

/// The walkthrough's chain after its policy plugin: `demo-api`.
macro_rules! chain_plugins_tail {
    () => {
        "
[[plugins]]
name = \"demo-api\"
path = \"{plugins}/demo_api.wasm\"
"
    };
}

/// The walkthrough's chain, as `config.toml` has it, except that the allowlist lets the harness's
/// user call what the scenarios send.
const CHAIN_PLUGINS: &str = concat!(
    chain_plugins_head!(),
    "
[[plugins]]
name = \"allowlist\"
path = \"{plugins}/allowlist.wasm\"
config = { users = { bench = [\"ping\", \"upd\", \"insert\"] } }
",
    chain_plugins_tail!()
);

/// [`CHAIN_PLUGINS`] with `cedar` in place of `allowlist`: a policy that lets the harness's user
/// do what the allowlist lets it do. Cedar checks a call's facts as well as its head, so the
/// tables `upd` and `insert` name are granted too (the allowlist, without table rules for the
/// user, does not look at them).
const CEDAR_CHAIN_PLUGINS: &str = concat!(
    chain_plugins_head!(),
    "
[[plugins]]
name = \"cedar\"
path = \"{plugins}/cedar.wasm\"
[plugins.config]
policies = '''
permit (principal == User::\"bench\", action == Action::\"connect\", resource);
permit (principal == User::\"bench\", action == Action::\"call\", resource)
when { resource in [Function::\"ping\", Function::\"upd\", Function::\"insert\"] };
permit (principal == User::\"bench\", action in [Action::\"read\", Action::\"write\"], resource);
'''
",
    chain_plugins_tail!()
);

/// A candidate allowlist in shadow mode, which would refuse the harness's `insert`.
const SHADOW_PLUGIN: &str = "
[[plugins]]
name = \"candidate\"
path = \"{plugins}/allowlist.wasm\"
mode = \"shadow\"
config = { users = { bench = [\"ping\", \"upd\"] } }
";

/// The symbol the `gateway-filtered` target's user is entitled to: one of the floor's ten.
pub(crate) const ENTITLED_SYM: &str = "AAPL";

/// The `entitlements` plugin, keyed on `sym`, with the harness's user entitled to `allow` (a
/// symbol, or `*` for all).
fn entitlements_plugin(allow: &str) -> String {
    format!(
        "
[[plugins]]
name = \"entitlements\"
path = \"{{plugins}}/entitlements.wasm\"
config = {{ column = \"sym\", users = {{ bench = {{ allow = [\"{allow}\"] }} }} }}
"
    )
}

/// The `[[plugins]]` tables of `template`, pointing at the components `cargo xtask plugins`
/// builds, with a compilation cache under the harness's directory so that restarts do not
/// compile again.
pub(crate) fn plugins_config(env: &Env, template: &str) -> Result<String> {
    let dir = env
        .root
        .join("plugins")
        .join("target")
        .join("wasm32-wasip2")
        .join("release");
    // Every component the template names must have been built.
    for name in template
        .split("{plugins}/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
    {
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{} is missing: run `cargo xtask plugins`", path.display());
        }
    }
    let cache = env.work.join("plugin-cache");
    Ok(format!(
        "\n[server]\nplugin_cache_dir = \"{}\"\n{}",
        cache.display(),
        template.replace("{plugins}", &dir.display().to_string())
    ))
}

/// Builds qgate in release and returns the binary.
pub(crate) fn build_qgate(env: &Env) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::say_err("==> cargo build --release -p qgate");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "qgate"])
        .current_dir(&env.root)
        .status()
        .context("failed to run cargo")?;
    if !status.success() {
        bail!("`cargo build --release -p qgate` failed ({status})");
    }
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| env.root.join("target"), PathBuf::from);
    let bin = target_dir.join("release").join("qgate");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// Runs a command to completion within [`INSTALL_TIMEOUT`], its output going to `log`.
fn run_bounded(what: &str, command: &mut Command, log: &Path) -> Result<()> {
    let out = File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("failed to start `{what}`"))?;
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("`{what}` failed ({status}); see {}", log.display());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{what}` took more than {INSTALL_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        crate::pause(Duration::from_millis(100));
    }
}

/// The venv's Python with the pinned aiokdb, creating the venv when needed.
fn aiokdb_venv(env: &Env) -> Result<PathBuf> {
    let venv = env.work.join("venv");
    let python = venv.join("bin").join("python");
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(m.version('aiokdb') != '{AIOKDB_VERSION}')"
    );
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    let log = env.work.join("logs").join("aiokdb-install.log");
    if !python.is_file() {
        crate::say_err(&format!("==> python3 -m venv {}", venv.display()));
        run_bounded(
            "python3 -m venv",
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            &log,
        )?;
    }
    crate::say_err(&format!("==> pip install aiokdb=={AIOKDB_VERSION}"));
    run_bounded(
        "pip install aiokdb",
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("aiokdb=={AIOKDB_VERSION}"),
        ]),
        &log,
    )?;
    if !ready(&python) {
        bail!("aiokdb {AIOKDB_VERSION} is not importable after pip install");
    }
    Ok(python)
}

/// Looks for a program on the `PATH` and in the sbin directories, where Debian puts HAProxy.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// HAProxy's binary, installing Debian's package when it is missing.
pub(crate) fn haproxy() -> Result<PathBuf> {
    if let Some(bin) = find_program("haproxy") {
        return Ok(bin);
    }
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !root {
        bail!("haproxy is not installed and installing it needs root (apt-get install haproxy)");
    }
    let log = std::env::temp_dir().join("qgate-bench-apt.log");
    let install = || {
        crate::say_err("==> apt-get install -y haproxy");
        run_bounded(
            "apt-get install -y haproxy",
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "haproxy"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &log,
        )
    };
    if install().is_err() {
        crate::say_err("==> apt-get update");
        run_bounded(
            "apt-get update",
            Command::new("apt-get").arg("update"),
            &log,
        )
        .context("apt-get update failed")?;
        install().context("apt-get install haproxy failed")?;
    }
    find_program("haproxy").context("haproxy is still missing after apt-get install")
}

/// The process ids of every live [`Guard`], for [`kill_all`], and whether the harness is stopping.
static CHILDREN: Mutex<(Vec<u32>, bool)> = Mutex::new((Vec::new(), false));

/// Kills every server the harness has started and not yet stopped, and any it starts from now on:
/// for a signal, which ends the harness without running its destructors.
pub(crate) fn kill_all() {
    let pids = {
        let mut children = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
        children.1 = true;
        children.0.clone()
    };
    for pid in pids {
        // A server that exited on its own meanwhile is no error.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a signal is stopping the harness.
pub(crate) fn stopping() -> bool {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner).1
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    pub(crate) fn new(name: &'static str, mut child: Child) -> Self {
        let mut children = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
        if children.1 {
            // Started while a signal stops the harness: it must not outlive it.
            let _ = child.kill();
        }
        children.0.push(child.id());
        Self { name, child }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing stdin asks the floor and the aiokdb script to exit; the kill makes sure.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let id = self.child.id();
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .retain(|&pid| pid != id);
    }
}

/// A started target: its address and its processes.
#[derive(Debug)]
pub(crate) struct Running {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    /// For a TLS target: the client configuration that trusts its CA.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The processes, the one clients talk to first.
    children: Vec<Guard>,
    /// How many of `children`, from the first, count in the target's memory: a proxy's floor
    /// stands for the kdb+ process behind it, whose memory is its own cost, not the proxy's.
    counted: usize,
}

impl Running {
    /// Where and how clients connect.
    pub(crate) fn endpoint(&self) -> crate::loadgen::Endpoint {
        crate::loadgen::Endpoint {
            addr: self.addr,
            tls: self.tls.clone(),
        }
    }

    /// The process ids of every process of the target.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|guard| guard.child.id()).collect()
    }

    /// The process ids whose memory counts as the target's: the proxy's alone for a proxy in
    /// front of a floor.
    pub(crate) fn memory_pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .take(self.counted)
            .map(|guard| guard.child.id())
            .collect()
    }

    /// The names of the processes whose memory counts as the target's, for the report.
    pub(crate) fn process_names(&self) -> Vec<&'static str> {
        self.children
            .iter()
            .take(self.counted)
            .map(|guard| guard.name)
            .collect()
    }
}

/// Starts a prepared target and waits until it accepts connections.
pub(crate) fn start(spec: &Spec) -> Result<Running> {
    if stopping() {
        bail!("the harness is stopping");
    }
    match spec {
        Spec::Floor { exe, logs } => {
            let (guard, addr) = spawn_announcing(
                "floor",
                Command::new(exe).args(["floor", "-p", "127.0.0.1:0"]),
                &logs.join("floor.log"),
            )?;
            Ok(Running {
                addr,
                tls: None,
                children: vec![guard],
                counted: 1,
            })
        }
        Spec::Qgate {
            name,
            bin,
            config,
            passwords,
            logs,
            ca,
        } => {
            let (guard, addr) = spawn_announcing(
                name,
                Command::new(bin)
                    .arg("serve")
                    .arg("--config")
                    .arg(config)
                    .args(["-p", "127.0.0.1:0", "-U"])
                    .arg(passwords),
                &logs.join(format!("{name}.log")),
            )?;
            Ok(Running {
                addr,
                tls: ca
                    .as_deref()
                    .map(crate::loadgen::tls_client_config)
                    .transpose()?,
                children: vec![guard],
                counted: 1,
            })
        }
        Spec::Gateway {
            name,
            bin,
            exe,
            work,
            passwords,
            logs,
            pool_size,
            plugins,
        } => {
            let (floor, floor_addr) = spawn_announcing(
                "floor",
                Command::new(exe).args(["floor", "-p", "127.0.0.1:0"]),
                &logs.join(format!("{name}-floor.log")),
            )?;
            let config = work.join(format!("{name}.toml"));
            let mut command = Command::new(bin);
            command.arg("serve").arg("--config").arg(&config);
            match pool_size {
                None => {
                    std::fs::write(&config, format!("{QGATE_CONFIG}{plugins}"))?;
                    command.arg("--upstream").arg(floor_addr.to_string());
                }
                Some(size) => std::fs::write(
                    &config,
                    format!(
                        "{QGATE_CONFIG}{plugins}{}",
                        pooled_upstream(floor_addr, *size)
                    ),
                )?,
            }
            command.args(["-p", "127.0.0.1:0", "-U"]).arg(passwords);
            let (qgate, addr) =
                spawn_announcing(name, &mut command, &logs.join(format!("{name}.log")))?;
            Ok(Running {
                addr,
                tls: None,
                children: vec![qgate, floor],
                counted: 1,
            })
        }
        Spec::Aiokdb {
            python,
            script,
            logs,
        } => {
            let (guard, addr) = spawn_announcing(
                "aiokdb",
                Command::new(python)
                    .arg(script)
                    .args(["--port", "0", "--password", "bench"]),
                &logs.join("aiokdb.log"),
            )?;
            Ok(Running {
                addr,
                tls: None,
                children: vec![guard],
                counted: 1,
            })
        }
        Spec::Haproxy {
            bin,
            exe,
            work,
            logs,
            tls,
        } => {
            let name = if tls.is_some() {
                "haproxy-tls"
            } else {
                "haproxy"
            };
            let (floor, floor_addr) = spawn_announcing(
                "floor",
                Command::new(exe).args(["floor", "-p", "127.0.0.1:0"]),
                &logs.join(format!("{name}-floor.log")),
            )?;
            let port = free_port()?;
            let config = work.join(format!("{name}.cfg"));
            let pem = tls.as_ref().map(|(pem, _)| pem.as_path());
            std::fs::write(&config, haproxy_config(port, floor_addr, pem))?;
            let log = logs.join(format!("{name}.log"));
            let out = File::create(&log)?;
            let child = Command::new(bin)
                .arg("-f")
                .arg(&config)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("failed to start haproxy")?;
            let mut haproxy = Guard::new("haproxy", child);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_listening(&mut haproxy, addr, &log)?;
            Ok(Running {
                addr,
                tls: tls
                    .as_ref()
                    .map(|(_, ca)| crate::loadgen::tls_client_config(ca))
                    .transpose()?,
                children: vec![haproxy, floor],
                counted: 1,
            })
        }
    }
}

/// HAProxy's config: one TCP listener on loopback forwarding to the floor, with room for 10 000
/// idle connections and timeouts longer than any scenario; with `tls`, the listener terminates
/// TLS 1.2 and 1.3 with that certificate chain and key.
fn haproxy_config(port: u16, floor: SocketAddr, tls: Option<&Path>) -> String {
    let maxconn = haproxy_max_connections();
    let ssl = tls.map_or_else(String::new, |pem| {
        format!(" ssl crt {} ssl-min-ver TLSv1.2", pem.display())
    });
    format!(
        "# Generated by qgate-bench: HAProxy in TCP mode in front of the floor.
global
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 10m
    timeout server 10m

listen qgate_bench
    bind 127.0.0.1:{port}{ssl}
    server floor {floor}
"
    )
}

/// The most connections HAProxy can proxy within the open-files limit: each takes two
/// descriptors, one to the client and one to the floor.
pub(crate) fn haproxy_max_connections() -> u64 {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    (soft.saturating_sub(200) / 2).min(25_000)
}

/// A free loopback port, for a server that cannot be told to pick one and say which.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `addr` accepts a connection, or the process exits, or [`START_TIMEOUT`] passes.
pub(crate) fn wait_listening(guard: &mut Guard, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = guard.child.try_wait()? {
            bail!(
                "{} exited ({status}) before listening: {}",
                guard.name,
                tail(log)
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} is not listening on {addr}: {}", guard.name, tail(log));
        }
        crate::pause(Duration::from_millis(20));
    }
}

/// Writes the harness's password file, unless it holds it already: the servers of the targets
/// started before watch it, and a file rewritten in place under a running server is a file that
/// is empty for a moment. A change is written beside it and renamed over it.
fn write_passwords(path: &Path) -> Result<()> {
    const TEXT: &str = "bench:bench\n";
    if std::fs::read(path).is_ok_and(|bytes| bytes == TEXT.as_bytes()) {
        return Ok(());
    }
    let staging = path.with_extension("staging");
    std::fs::write(&staging, TEXT)?;
    std::fs::rename(&staging, path)?;
    Ok(())
}

/// Starts a server that prints `NAME listening on ADDR` on stdout once bound, and returns it with
/// that address. Its stderr goes to `log`; its stdout is drained to the same file.
pub(crate) fn spawn_announcing(
    name: &'static str,
    command: &mut Command,
    log: &Path,
) -> Result<(Guard, SocketAddr)> {
    let out = File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(out.try_clone()?)
        .spawn()
        .with_context(|| format!("failed to start {name}"))?;
    let mut guard = Guard::new(name, child);
    let stdout = guard.child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let mut out = out;
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out, "{line}");
            if !sent && let Some((_, addr)) = line.split_once(" listening on ") {
                sent = true;
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("{name} announced an unreadable address `{addr}`"))?;
            Ok((guard, addr))
        }
        Err(_) => {
            let status = guard.child.try_wait().ok().flatten();
            drop(guard);
            match status {
                Some(status) => bail!("{name} exited ({status}) before listening: {}", tail(log)),
                None => bail!(
                    "{name} did not say it was listening within {START_TIMEOUT:?}: {}",
                    tail(log)
                ),
            }
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        format!("(nothing in {})", log.display())
    } else {
        format!("{} (from {})", tail.join(" | "), log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pooled_gateway_says_its_pool_size() {
        let size = format!(" {GATEWAY_POOL_SIZE} ");
        assert!(Kind::GatewayPooled.description().contains(&size));
        assert!(
            pooled_upstream(
                "127.0.0.1:5001".parse().expect("address"),
                GATEWAY_POOL_SIZE
            )
            .contains(&format!("pool_size = {GATEWAY_POOL_SIZE}\n"))
        );
    }

    #[test]
    fn every_name_parses_back() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()).expect("known"), kind);
        }
        assert!(Kind::parse("gateway-pinned").is_err());
    }
}
