"""Fixtures for qgate's real-client tests: servers on 127.0.0.1:0 and password files.

Run by `cargo xtask clients`, which builds the binaries and passes their paths in QGATE_BIN (the
real `qgate`), QGATE_ECHO_BIN (`qgate-echo`, the echo test double in tests/src/bin) and
QGATE_UPSTREAM_BIN (`qgate-upstream`, the kdb+-like test upstream). Without those variables the
debug binaries under target/ are used, so after a `cargo build` pytest can run on its own from a
client venv.

Every server a fixture starts is killed in its teardown; it also dies with this process (Linux's
parent-death signal), and `qgate-echo` and `qgate-upstream` end by themselves when their stdin
closes or after `--lifetime-secs`.

This file is shared by both venvs, so it imports no client library.
"""

import ctypes
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cases import PASSWORD, PASSWORD_FILES

ROOT = Path(__file__).resolve().parents[3]

# PyKX as an IPC client without a q licence; xtask sets this too, this is for running pytest by
# hand. It must be set before PyKX is first imported.
os.environ.setdefault("PYKX_UNLICENSED", "true")

# 1000 concurrent connections need 1000 descriptors in this process and in the server, which
# inherits this limit.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 4096:
    _want = 4096 if _hard == resource.RLIM_INFINITY else min(4096, _hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))


def binary(variable, name):
    path = os.environ.get(variable) or str(ROOT / "target" / "debug" / name)
    if not Path(path).is_file():
        pytest.fail(f"{name} not found at {path}: run `cargo xtask clients` (or set {variable})")
    return path


def _die_with_parent():
    """In the child, before exec: be killed when the process that started us dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class Server:
    """A server process listening on 127.0.0.1, started from `argv` (which must print
    `qgate listening on 127.0.0.1:PORT`, or `qgate-upstream listening on ...` or
    `aiokdb-upstream listening on ...`, on stdout once bound)."""

    def __init__(self, argv, log_path, startup_timeout=30.0, env=None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=_die_with_parent,
            env={**(env or os.environ), "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        self.host, self.port = self._wait_for_address(startup_timeout)

    def _wait_for_address(self, timeout):
        pattern = re.compile(
            rb"^(?:qgate|qgate-upstream|aiokdb-upstream) listening on (127\.0\.0\.1):(\d+)\s*$")
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        seen = b""
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=deadline - time.monotonic()):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    break
                seen += line
                match = pattern.match(line)
                if match:
                    return match.group(1).decode(), int(match.group(2))
        finally:
            selector.close()
        self.stop()
        pytest.fail(
            f"server did not report its address within {timeout}s: {self.argv}\n"
            f"stdout: {seen!r}\nstderr: {self.log()}"
        )

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        """The server's resident memory, in KiB (VmRSS)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def log(self):
        if not self._log.closed:
            self._log.flush()
        try:
            return Path(self.log_path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        self._log.close()


@pytest.fixture(scope="session")
def password_files(tmp_path_factory):
    """kind → path of a password file of that kind."""
    directory = tmp_path_factory.mktemp("passwords")
    paths = {}
    for kind, text in PASSWORD_FILES.items():
        path = directory / f"{kind}.txt"
        path.write_text(text)
        paths[kind] = str(path)
    return paths


class Servers:
    """Starts servers on demand; `shared` ones are cached for the session."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._shared = {}
        self._all = []

    def start(self, program="echo", *args, env=None, listen="127.0.0.1:0"):
        """Starts `program` ("echo", "qgate" for `qgate serve`, "upstream", or "aiokdb" for
        aiokdb_upstream.py, which always takes a free port) listening on `listen`, with `args`
        after that flag; `env` adds environment variables to this process's."""
        if program == "echo":
            argv = [binary("QGATE_ECHO_BIN", "qgate-echo"), "-p", listen,
                    "--lifetime-secs", "900", *args]
        elif program == "qgate":
            argv = [binary("QGATE_BIN", "qgate"), "serve", "-p", listen, *args]
        elif program == "upstream":
            argv = [binary("QGATE_UPSTREAM_BIN", "qgate-upstream"), "-p", listen,
                    "--lifetime-secs", "900", *args]
        elif program == "aiokdb":
            argv = [sys.executable, str(Path(__file__).with_name("aiokdb_upstream.py")),
                    "--lifetime-secs", "900", *args]
        else:
            raise ValueError(program)
        log = self._tmp.mktemp("server") / "stderr.log"
        server = Server(argv, log, env=None if env is None else {**os.environ, **env})
        self._all.append(server)
        return server

    def shared(self, program="echo", *args, env=None):
        key = (program, *args, *sorted((env or {}).items()))
        server = self._shared.get(key)
        if server is None or not server.alive():
            server = self._shared[key] = self.start(program, *args, env=env)
        return server

    def directory(self, name):
        """A fresh temporary directory, for a server's config file."""
        return self._tmp.mktemp(name)

    def stop_all(self):
        for server in self._all:
            server.stop()


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory):
    """Servers shared by the whole session, one per command line."""
    pool = Servers(tmp_path_factory)
    yield pool
    pool.stop_all()


@pytest.fixture
def servers(shared_servers, tmp_path_factory):
    """`servers.start(...)` starts a server of this test's own, stopped when the test ends;
    `servers.shared(...)` gives the session's server for that command line."""
    pool = Servers(tmp_path_factory)
    pool.shared = shared_servers.shared
    yield pool
    pool.stop_all()


@pytest.fixture
def echo(servers):
    """The shared echo server without a password file."""
    return servers.shared("echo")


@pytest.fixture
def upstream(servers):
    """The shared test upstream (`qgate-upstream`, a stand-in for a kdb+ process) accepting
    anyone, named `upstream`."""
    return servers.shared("upstream")


@pytest.fixture
def echo_with_file(servers, password_files):
    """kind → the shared echo server with that kind of password file (`-U`)."""
    return lambda kind: servers.shared("echo", "-U", password_files[kind])


def eventually(what, check, timeout=30.0):
    """Polls `check` until it holds; fails after `timeout` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """`qgate certs --out DIR --client alice --client qgate`, and kdb+'s client variables pointing
    at it for PyKX: the development CA and alice's certificate.

    PyKX reads these variables once, at the first TLS connection of the process, so every test
    that uses TLS in this process must use this one directory: hence one fixture for the session.
    """
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [binary("QGATE_BIN", "qgate"), "certs", "--out", str(directory),
         "--client", "alice", "--client", "qgate"],
        check=True,
        capture_output=True,
    )
    variables = {
        "KX_SSL_CA_CERT_FILE": str(directory / "ca.pem"),
        "KX_SSL_CERT_FILE": str(directory / "client-alice.pem"),
        "KX_SSL_KEY_FILE": str(directory / "client-alice.key"),
        "KX_SSL_VERIFY_SERVER": "YES",
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    yield directory
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# ---------------------------------------------------------------------------------------------
# Gateway mode: `qgate serve` in front of the test upstream (`qgate-upstream`).
# ---------------------------------------------------------------------------------------------

# The service account the pooled gateway logs in to its upstream with; the password reaches qgate
# through `password_env`, as a deployment keeps it out of the config file.
SERVICE_USER = "svc"
SERVICE_PASSWORD = "s3cret"
SERVICE_PASSWORD_ENV = "QGATE_TEST_SERVICE_PASSWORD"

# The users of the gateways' password file (cases.PASSWORD_FILES["mixed"]): plain, MD5 and SHA-1
# entries, each logging in with cases.PASSWORD.
GATEWAY_USERS = ["admin", "adminmd5", "adminsha"]


def address(server):
    """A server's `HOST:PORT`, as `--upstream` and `servers` take it."""
    return f"{server.host}:{server.port}"


def toml_value(value):
    """A Python value in TOML: a string, an integer, a boolean or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string for everything these configs hold.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def upstream_table(name, servers, tls=None, **keys):
    """One `[[upstream]]` table: `servers` are Servers or `HOST:PORT` strings, `keys` its other
    keys in order, `tls` (a dict) its `[upstream.tls]`."""
    servers = [server if isinstance(server, str) else address(server) for server in servers]
    lines = ["[[upstream]]", f"name = {toml_value(name)}", f"servers = {toml_value(servers)}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    if tls:
        lines.append("[upstream.tls]")
        lines += [f"{key} = {toml_value(str(value) if isinstance(value, Path) else value)}"
                  for key, value in tls.items()]
    return "\n".join(lines) + "\n"


def start_gateway(servers, password_file, *tables, extra="", env=None):
    """`qgate serve -U PASSWORD_FILE --config FILE`, the file holding `extra` (other tables) and
    the `[[upstream]]` `tables`; a server of the calling test's own."""
    directory = servers.directory("gateway")
    config = directory / "qgate.toml"
    config.write_text(extra + "\n" + "\n".join(tables))
    return servers.start("qgate", "-U", password_file, "--config", str(config), env=env)


class Gateway:
    """qgate in front of one test upstream named `rdb`: `qgate` and `upstream` are their Servers,
    `user` the name the upstream sees (`.z.u`)."""

    def __init__(self, mode, qgate, upstream, user):
        self.mode = mode
        self.qgate = qgate
        self.upstream = upstream
        self.user = user

    def __repr__(self):
        return f"Gateway({self.mode})"


@pytest.fixture(scope="session")
def gateways(shared_servers, password_files):
    """mode → the session's Gateway in that mode, started on first use:

    - "pinned": the README's one-liner, `qgate serve -p PORT -U passwords.txt --upstream
      HOST:PORT`, in front of an upstream that accepts anyone (qgate logs in without a user);
    - "pooled": `[[upstream]]` with `mode = "pooled"`, `pool_size = 2` and a service account whose
      password is in `password_env`, in front of an upstream that accepts that account only.
    """
    made = {}
    directory = shared_servers.directory("gateways")

    def get(mode):
        gateway = made.get(mode)
        if gateway and gateway.qgate.alive() and gateway.upstream.alive():
            return gateway
        if mode == "pinned":
            upstream = shared_servers.shared("upstream", "--name", "rdb")
            qgate = shared_servers.shared(
                "qgate", "-U", password_files["mixed"], "--upstream", address(upstream))
            gateway = Gateway(mode, qgate, upstream, "")
        elif mode == "pooled":
            upstream = shared_servers.shared(
                "upstream", "--name", "rdb", "--user", f"{SERVICE_USER}:{SERVICE_PASSWORD}")
            config = directory / f"pooled-{upstream.port}.toml"
            config.write_text(upstream_table(
                "rdb", [upstream], mode="pooled", pool_size=2, user=SERVICE_USER,
                password_env=SERVICE_PASSWORD_ENV))
            qgate = shared_servers.shared(
                "qgate", "-U", password_files["mixed"], "--config", str(config),
                env={SERVICE_PASSWORD_ENV: SERVICE_PASSWORD})
            gateway = Gateway(mode, qgate, upstream, SERVICE_USER)
        else:
            raise ValueError(mode)
        made[mode] = gateway
        return gateway

    return get


@pytest.fixture(params=["pinned", "pooled"])
def gateway(request, gateways):
    """The session's Gateway, once pinned and once pooled."""
    return gateways(request.param)

