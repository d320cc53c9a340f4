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
import os
import re
import resource
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cases import PASSWORD_FILES

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
    `qgate listening on 127.0.0.1:PORT`, or `qgate-upstream listening on ...`, on stdout once
    bound)."""

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
        pattern = re.compile(rb"^qgate(?:-upstream)? listening on (127\.0\.0\.1):(\d+)\s*$")
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

    def start(self, program="echo", *args):
        if program == "echo":
            argv = [binary("QGATE_ECHO_BIN", "qgate-echo"), "-p", "127.0.0.1:0",
                    "--lifetime-secs", "900", *args]
        elif program == "qgate":
            argv = [binary("QGATE_BIN", "qgate"), "serve", "-p", "127.0.0.1:0", *args]
        elif program == "upstream":
            argv = [binary("QGATE_UPSTREAM_BIN", "qgate-upstream"), "-p", "127.0.0.1:0",
                    "--lifetime-secs", "900", *args]
        else:
            raise ValueError(program)
        log = self._tmp.mktemp("server") / "stderr.log"
        server = Server(argv, log)
        self._all.append(server)
        return server

    def shared(self, program="echo", *args):
        key = (program, *args)
        server = self._shared.get(key)
        if server is None or not server.alive():
            server = self._shared[key] = self.start(program, *args)
        return server

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
