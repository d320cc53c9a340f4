"""Every plugin of plugins/ through the real `qgate serve`, driven by real clients: PyKX (calls
with a string head, as it sends them) and aiokdb (calls with a symbol head, q's way).

- allowlist: per-user and per-group functions, argument checks, the free-text switch;
- token-auth: a JWT (HS256) as the password, its expiry and signature, its subject as the user;
- audit: one JSON line per event, never the password;
- conns: the connection table;
- demo-api: its functions and q data literals;
- the misbehaving fixtures (a loop, a memory bomb, a trap, a malformed reply), each contained:
  its request is refused while other connections are served;
- the sandbox: a plugin that tries to read the password file or a TLS key, list directories,
  open a socket or read the environment is refused every time.

The plugins are built by `cargo xtask plugins`, which `cargo xtask test` runs before the clients.
Compiled plugins are cached under target/ (`server.plugin_cache_dir`), so only the first server
to load a plugin compiles it.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import subprocess
import threading
import time

import pytest

import pykx as kx
from aiokdb import KException, b9, cv, kj, kk, ks
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CACHE = ROOT / "target" / "qgate-plugin-cache-tests"


def wasm(name):
    path = PLUGINS / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(f"{path} not found: run `cargo xtask plugins`")
    return path


def plugin(name, file=None, extra=""):
    """One `[[plugins]]` table: `name`, the component `file` (default: `name`), then `extra`."""
    return f'\n[[plugins]]\nname = "{name}"\npath = "{wasm(file or name)}"\n{extra}\n'


def serve(tmp_path_factory, name, body, env=None):
    """`qgate serve` with a config made of `body` (TOML) after a [server] table listening on a
    free port with the shared compilation cache."""
    directory = tmp_path_factory.mktemp(name)
    config = directory / "config.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nplugin_cache_dir = "{CACHE}"\n\n{body}'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config)]
    return Server(argv, directory / "stderr.log", startup_timeout=300.0, env=env)


def connect(server, username, password="password"):
    return kx.SyncQConnection(server.host, server.port, username=username, password=password)


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def symbol_call(server, user, *items):
    """Sends `items` as one sync general list through aiokdb and returns the reply."""
    _, writer = await open_qipc_connection(
        host=server.host, port=server.port, user=user, password="password"
    )
    try:
        return await writer.sync_req(kk(*items))
    finally:
        writer.close()


# ----- allowlist, audit, conns and demo-api: the walkthrough's chain with more users.

POLICY = (
    plugin("conns")
    + plugin("audit")
    + plugin(
        "allowlist",
        extra="""
[plugins.config]
users = { alice = ["echo", "til"], admin = ["*"] }
args.legalOperation = { count = 2, types = ["long", "long"] }
queries = { users = ["admin"] }

[plugins.config.groups.ops]
members = ["bob", "carol"]
functions = ["legalOperation", "count"]
""",
    )
    + plugin("demo-api", "demo_api")
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    server = serve(tmp_path_factory, "policy", POLICY)
    yield server
    server.stop()


def test_a_user_calls_only_their_functions(policy):
    with connect(policy, "alice") as conn:
        assert conn("echo", 42).py() == 42
        assert conn("til", 3).py() == [0, 1, 2]
        with pytest.raises(kx.QError, match="access: legalOperation is not allowed for alice"):
            conn("legalOperation", 1, 2)
        # The refusal is an answer: the connection goes on.
        assert conn("echo", 7).py() == 7


def test_group_members_call_the_groups_functions(policy):
    with connect(policy, "bob") as conn:
        assert conn("legalOperation", 1, 2).py() == 3
        with pytest.raises(kx.QError, match="access: echo is not allowed for bob"):
            conn("echo", 1)
    with connect(policy, "carol") as conn:
        assert conn("count", [1, 2, 3]).py() == 3


def test_arguments_are_checked(policy):
    with connect(policy, "bob") as conn:
        with pytest.raises(kx.QError, match="legalOperation: expected 2 arguments, got 1"):
            conn("legalOperation", 1)
        with pytest.raises(kx.QError, match="legalOperation: argument 2"):
            conn("legalOperation", 1, 2.5)
        with pytest.raises(kx.QError, match="legalOperation: argument 1"):
            conn("legalOperation", "one", 2)


def test_free_text_queries_only_for_listed_users(policy):
    with connect(policy, "alice") as conn:
        with pytest.raises(kx.QError, match="free-text queries are not allowed for alice"):
            conn("1 2 3")
    with connect(policy, "admin") as conn:
        assert conn("1 2 3").py() == [1, 2, 3]


def test_calls_with_a_symbol_head(policy):
    assert run(symbol_call(policy, "bob", ks("legalOperation"), kj(1), kj(2))).aJ() == 3
    with pytest.raises(KException, match="access: legalOperation is not allowed for alice"):
        run(symbol_call(policy, "alice", ks("legalOperation"), kj(1), kj(2)))


def test_anything_but_a_call_or_a_query_is_refused(policy):
    async def body():
        _, writer = await open_qipc_connection(
            host=policy.host, port=policy.port, user="admin", password="password"
        )
        try:
            with pytest.raises(KException, match="only calls to allowed functions"):
                await writer.sync_req(kj(5))
        finally:
            writer.close()

    run(body())


def test_the_connection_table_lists_open_connections(policy):
    with connect(policy, "alice") as alice, connect(policy, "admin") as admin:
        assert alice("echo", 1).py() == 1
        table = admin("conns").pd()
        assert list(table.columns) == ["handle", "user", "address", "time"]
        assert {"alice", "admin"} <= set(table["user"])
        assert set(table["address"]) == {"127.0.0.1"}


def audit_lines(server):
    """The audit plugin's JSON objects in the server's log."""
    pattern = re.compile(r': (\{".*\}) plugin="audit"')
    return [json.loads(m.group(1)) for m in map(pattern.search, server.log().splitlines()) if m]


def test_audit_logs_every_event_with_the_chains_verdict_and_never_the_password(policy):
    secret = "pw-never-logged-7f3a9c"
    with connect(policy, "dave", password=secret) as conn:
        with pytest.raises(kx.QError, match="access"):
            conn("dropEverything", 1)
    with connect(policy, "admin") as conn:
        assert conn("legalOperation", 1, 2).py() == 3
    deadline = time.monotonic() + 10
    while True:
        lines = audit_lines(policy)
        dave = [line for line in lines if line.get("user") == "dave"]
        if "close" in [line["event"] for line in dave] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    events = [line["event"] for line in dave]
    assert events[:2] == ["auth", "open"], dave
    assert "close" in events, dave
    assert dave[0]["verdict"] == "passed"
    # The allowlist, after audit in the chain, refused the call: the line says so.
    sync = next(line for line in dave if line["event"] == "sync")
    assert sync["head"] == "dropEverything"
    assert sync["args"] == 1
    assert sync["verdict"] == "denied"
    assert sync["decided_by"] == "allowlist"
    assert sync["reason"] == "access: dropEverything is not allowed for dave"
    assert isinstance(sync["latency_ns"], int) and sync["latency_ns"] > 0
    answered = [
        line for line in lines
        if line.get("user") == "admin" and line.get("head") == "legalOperation"
    ]
    assert answered and answered[-1]["verdict"] == "replied"
    assert answered[-1]["decided_by"] == "demo-api"
    assert secret not in policy.log()


def test_demo_api_functions_and_errors(policy):
    with connect(policy, "admin") as conn:
        assert conn("legalOperation", 1, 2).py() == 3
        assert conn("til", 5).py() == [0, 1, 2, 3, 4]
        assert conn("count", [5, 6, 7, 8]).py() == 4
        with pytest.raises(kx.QError, match="nosuchFunction"):
            conn("nosuchFunction", 1)
        with pytest.raises(kx.QError, match="rank"):
            conn("til", 1, 2)
        with pytest.raises(kx.QError, match="type"):
            conn("til", "x")


LITERALS = [
    ("42", 42),
    ("-7i", -7),
    ("2.5", 2.5),
    ("1b", True),
    ("`abc", "abc"),
    ('"hello"', b"hello"),
    ("1 2 3", [1, 2, 3]),
    ("1.5 2.5", [1.5, 2.5]),
    ("`a`b`c", ["a", "b", "c"]),
    ("010b", [False, True, False]),
    ("enlist 1", [1]),
    ("enlist `x", ["x"]),
    ("`a`b!1 2", {"a": 1, "b": 2}),
    ("(1;`a;\"xy\")", [1, "a", b"xy"]),
    ("()", []),
]


@pytest.mark.parametrize("text,expected", LITERALS, ids=[text for text, _ in LITERALS])
def test_demo_api_literals(policy, text, expected):
    with connect(policy, "admin") as conn:
        assert conn(text).py() == expected


def test_demo_api_special_literals(policy):
    with connect(policy, "admin") as conn:
        assert conn("0N").is_null
        assert conn("0Ni").is_null
        assert math.isnan(conn("0n").py())
        assert conn("0w").py() == math.inf
        assert conn("-0w").py() == -math.inf
        assert conn("0Wj").is_inf
        assert isinstance(conn("::"), kx.Identity)
        assert isinstance(conn(""), kx.Identity)
        table = conn("flip `a`b!(1 2;3 4)").pd()
        assert list(table.columns) == ["a", "b"]
        assert table["b"].tolist() == [3, 4]
        with pytest.raises(kx.QError, match="nyi"):
            conn("select from t")


def test_demo_api_keeps_the_sorted_attribute(policy):
    async def body():
        _, writer = await open_qipc_connection(
            host=policy.host, port=policy.port, user="admin", password="password"
        )
        try:
            return b9(await writer.sync_req(cv("`s#1 2 3")))
        finally:
            writer.close()

    encoded = run(body())
    # The body after the 8-byte header: type 7 (longs), attribute 1 (`s#), count 3.
    assert encoded[8:14] == bytes([7, 1, 3, 0, 0, 0])


# ----- token-auth.

SECRET = "0123456789abcdef0123456789abcdef-qgate-tests"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims, secret=SECRET, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64url(signature)}"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    body = (
        plugin(
            "token-auth",
            "token_auth",
            f'config = {{ secret = "{SECRET}", audience = "qgate" }}',
        )
        + plugin("conns")
        + plugin("demo-api", "demo_api")
    )
    server = serve(tmp_path_factory, "tokens", body)
    yield server
    server.stop()


def test_a_valid_token_logs_in_as_its_subject(tokens):
    good = token({"sub": "carol", "aud": "qgate", "exp": int(time.time()) + 600})
    with connect(tokens, "whoever", password=good) as conn:
        assert conn("legalOperation", 1, 2).py() == 3
        users = set(conn("conns").pd()["user"])
    assert "carol" in users and "whoever" not in users
    assert good not in tokens.log()


REFUSED_TOKENS = {
    "expired": lambda: token({"sub": "carol", "aud": "qgate", "exp": int(time.time()) - 3600}),
    "wrong-secret": lambda: token(
        {"sub": "carol", "aud": "qgate", "exp": int(time.time()) + 600}, secret="x" * 40
    ),
    "alg-none": lambda: token(
        {"sub": "carol", "aud": "qgate", "exp": int(time.time()) + 600},
        header={"alg": "none", "typ": "JWT"},
    ),
    "wrong-audience": lambda: token({"sub": "carol", "aud": "other", "exp": int(time.time()) + 600}),
    "no-expiry": lambda: token({"sub": "carol", "aud": "qgate"}),
    "not-a-token": lambda: "password",
}


@pytest.mark.parametrize("case", list(REFUSED_TOKENS))
def test_a_bad_token_is_refused(tokens, case):
    with pytest.raises(kx.PyKXException, match="Authentication error"):
        connect(tokens, "carol", password=REFUSED_TOKENS[case]())
    assert tokens.alive()


# ----- the fixtures, contained; the sandbox.

MARKER = "qgate-secret-marker-5d1e"


@pytest.fixture(scope="module")
def contained(tmp_path_factory):
    secrets = tmp_path_factory.mktemp("secrets")
    passwords = secrets / "passwords.txt"
    passwords.write_text(f"admin:password\n# {MARKER}\n")
    # The server's real TLS certificate and key (TLS optional, so the plain clients here are
    # served): the key file is what a plugin must never read.
    subprocess.run(
        [binary("QGATE_BIN", "qgate"), "certs", "--out", str(secrets / "certs")],
        check=True,
        capture_output=True,
    )
    key = secrets / "certs" / "server.key"
    body = (
        f'[auth]\npassword_file = "{passwords}"\n'
        f'[tls]\nmode = "optional"\ncert_file = "{secrets / "certs" / "server.pem"}"\n'
        f'key_file = "{key}"\n'
        + plugin("spin", extra='time_budget = "1s"\nconfig = { only = "spin" }')
        + plugin(
            "grow-memory", "grow_memory", 'memory_limit = "16MiB"\nconfig = { only = "grow" }'
        )
        + plugin("trap", extra='config = { only = "trap" }')
        + plugin("bad-reply", "bad_reply", 'config = { only = "bad" }')
        + plugin("escape")
        + plugin("demo-api", "demo_api")
    )
    env = {**os.environ, "QGATE_TEST_SECRET": MARKER}
    server = serve(tmp_path_factory, "contained", body, env=env)
    server.secrets = {"passwords": passwords, "key": key, "dir": secrets}
    yield server
    server.stop()


def test_a_looping_plugin_is_cut_while_others_are_served(contained):
    outcome = {}

    def spin():
        with connect(contained, "admin") as conn:
            try:
                conn("spin", 1)
                outcome["spin"] = "answered"
            except kx.QError as error:
                outcome["spin"] = str(error)

    spinner = threading.Thread(target=spin)
    spinner.start()
    served = 0
    with connect(contained, "admin") as other:
        # While the loop runs (for its 1 s budget), another connection is answered, many times.
        while spinner.is_alive() and served < 20:
            assert other("legalOperation", served, 1).py() == served + 1
            served += 1
        spinner_was_running = spinner.is_alive()
    spinner.join(30)
    assert served == 20 and spinner_was_running, "the other connection waited for the loop"
    assert "plugin spin failed" in outcome["spin"]
    assert "ran past its time budget" in contained.log()


def recovered(conn, plugin, within=15.0):
    """Whether a plain query is answered again within `within` seconds. After failures in a row
    a plugin is re-instantiated with backoff (10 ms doubling, at most 5 s), and while it waits
    every request through it is refused (fail-closed), its own or not."""
    deadline = time.monotonic() + within
    while True:
        try:
            return conn("legalOperation", 1, 2).py() == 3
        except kx.QError as error:
            assert f"plugin {plugin} failed" in str(error)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def test_a_memory_bomb_is_capped(contained):
    before = contained.rss_kib()
    with connect(contained, "admin") as conn:
        for _ in range(3):
            with pytest.raises(kx.QError, match="plugin grow-memory failed"):
                conn("grow", 1)
        assert recovered(conn, "grow-memory")
    # Each attempt stops at the plugin's 16 MiB cap, and the memory goes with the instance.
    assert contained.rss_kib() - before < 64 * 1024
    assert contained.alive()


def test_a_trapping_plugin_fails_closed(contained):
    with connect(contained, "admin") as conn:
        for _ in range(3):
            with pytest.raises(kx.QError, match="plugin trap failed"):
                conn("trap", 1)
        assert recovered(conn, "trap")
    assert contained.alive()


def test_a_malformed_reply_becomes_an_error(contained):
    with connect(contained, "admin") as conn:
        with pytest.raises(kx.QError, match="plugin bad-reply returned a malformed reply"):
            conn("bad", 1)
        assert conn("legalOperation", 1, 1).py() == 2


def escape(server, what, argument=""):
    with connect(server, "admin") as conn:
        return conn(what, argument).py().decode()


def test_a_plugin_cannot_read_the_servers_files(contained):
    for path in (contained.secrets["passwords"], contained.secrets["key"], "/etc/passwd"):
        outcome = escape(contained, "read", str(path))
        assert outcome.startswith("refused:"), outcome
    for path in ("/", ".", str(contained.secrets["dir"])):
        outcome = escape(contained, "list", path)
        assert outcome.startswith("refused:"), outcome


def test_a_plugin_cannot_open_sockets(contained):
    for address in (f"127.0.0.1:{contained.port}", "127.0.0.1:22"):
        outcome = escape(contained, "connect", address)
        assert outcome.startswith("refused:"), outcome
    outcome = escape(contained, "resolve", "localhost:80")
    assert outcome.startswith("refused:"), outcome


def test_a_plugin_may_print_but_not_wait(contained):
    # Its stdout and stderr discard: printing works, inline on the server's async threads.
    assert escape(contained, "print", MARKER) == "ok: printed"
    assert MARKER not in contained.log()
    # Sleeping would hold a thread: the call fails, the connection goes on.
    with connect(contained, "admin") as conn:
        with pytest.raises(kx.QError, match="plugin escape failed"):
            conn("wait", "")
        assert recovered(conn, "escape")
    assert "must not wait" in contained.log()


def test_a_plugin_cannot_read_the_environment(contained):
    for name in ("QGATE_TEST_SECRET", "PATH", "HOME"):
        outcome = escape(contained, "env", name)
        assert outcome.startswith("refused:"), outcome
    assert escape(contained, "envcount").startswith("refused:")
    assert MARKER not in contained.log()
