//! The targets: how each server is prepared, started on loopback, and stopped.
//!
//! | target | what runs |
//! |---|---|
//! | `floor` | `qgate-bench floor`: answers each frame without decoding it ([`crate::floor`]) |
//! | `qgate` | `qgate serve` in release, with a password file and a generated config |
//! | `aiokdb` | aiokdb's server (Python) in a venv under `target/bench/venv` |
//! | `haproxy` | HAProxy in TCP mode in front of a floor of its own |
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
    /// aiokdb's Python server.
    Aiokdb,
    /// HAProxy (TCP mode) in front of a floor.
    Haproxy,
}

impl Kind {
    /// Every target.
    pub(crate) const ALL: [Self; 4] = [Self::Floor, Self::Qgate, Self::Aiokdb, Self::Haproxy];

    /// The target's name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Qgate => "qgate",
            Self::Aiokdb => "aiokdb",
            Self::Haproxy => "haproxy",
        }
    }

    /// What the target is, for the report.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Floor => "minimal tokio server: answers each frame without decoding it",
            Self::Qgate => {
                "qgate serve, no plugins (sync queries get the error 'nothing answered')"
            }
            Self::Aiokdb => "aiokdb's asyncio server (Python), answering (::)",
            Self::Haproxy => "HAProxy in TCP mode in front of a floor",
        }
    }

    /// Parses a target name.
    pub(crate) fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .with_context(|| {
                format!("unknown target `{name}` (known: floor, qgate, aiokdb, haproxy)")
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
        bin: PathBuf,
        config: PathBuf,
        passwords: PathBuf,
        logs: PathBuf,
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
        Kind::Qgate => {
            let bin = match &env.qgate_bin {
                Some(bin) => bin.clone(),
                None => build_qgate(env)?,
            };
            let passwords = env.work.join("passwords.txt");
            std::fs::write(&passwords, "bench:bench\n")?;
            let config = env.work.join("qgate.toml");
            std::fs::write(&config, QGATE_CONFIG)?;
            Spec::Qgate {
                bin,
                config,
                passwords,
                logs,
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
        },
    })
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
fn haproxy() -> Result<PathBuf> {
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
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn new(name: &'static str, mut child: Child) -> Self {
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
    /// The processes, the one clients talk to first.
    children: Vec<Guard>,
}

impl Running {
    /// The process ids whose memory counts as the target's.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|guard| guard.child.id()).collect()
    }

    /// The names of the processes, for the report.
    pub(crate) fn process_names(&self) -> Vec<&'static str> {
        self.children.iter().map(|guard| guard.name).collect()
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
                children: vec![guard],
            })
        }
        Spec::Qgate {
            bin,
            config,
            passwords,
            logs,
        } => {
            let (guard, addr) = spawn_announcing(
                "qgate",
                Command::new(bin)
                    .arg("serve")
                    .arg("--config")
                    .arg(config)
                    .args(["-p", "127.0.0.1:0", "-U"])
                    .arg(passwords),
                &logs.join("qgate.log"),
            )?;
            Ok(Running {
                addr,
                children: vec![guard],
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
                children: vec![guard],
            })
        }
        Spec::Haproxy {
            bin,
            exe,
            work,
            logs,
        } => {
            let (floor, floor_addr) = spawn_announcing(
                "floor",
                Command::new(exe).args(["floor", "-p", "127.0.0.1:0"]),
                &logs.join("haproxy-floor.log"),
            )?;
            let port = free_port()?;
            let config = work.join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(port, floor_addr))?;
            let log = logs.join("haproxy.log");
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
                children: vec![haproxy, floor],
            })
        }
    }
}

/// HAProxy's config: one TCP listener on loopback forwarding to the floor, with room for 10 000
/// idle connections and timeouts longer than any scenario.
fn haproxy_config(port: u16, floor: SocketAddr) -> String {
    let maxconn = haproxy_max_connections();
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
    bind 127.0.0.1:{port}
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
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `addr` accepts a connection, or the process exits, or [`START_TIMEOUT`] passes.
fn wait_listening(guard: &mut Guard, addr: SocketAddr, log: &Path) -> Result<()> {
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

/// Starts a server that prints `NAME listening on ADDR` on stdout once bound, and returns it with
/// that address. Its stderr goes to `log`; its stdout is drained to the same file.
fn spawn_announcing(
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
