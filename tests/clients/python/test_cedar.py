"""Cedar policies through the real `qgate serve`, with PyKX and aiokdb: the `cedar` plugin reads
its policy, entities and schema files through the host (`{ file = "PATH" }`), and decides logins,
calls and free text on them.

The chain is `cedar` then `echo`: a message the policy lets through is answered by `echo` with
the message itself, so an answer shows it passed; a refusal is the policy's q error. The server
serves plain and TLS on one port (client certificates verified when presented), so one policy
shows permits, forbids, a group grant, an IP-range rule and a TLS-CN rule.

Then, each with a server of its own: the policy file edited while clients query (the file watch
swaps it in, and no query fails), an edit that does not parse (refused with the file, line and
column; the old policy keeps deciding), and a locked deployment that refuses to start on an
unsigned policy file, starts once it is signed, refuses an unsigned edit and swaps it in once
the edit is signed.
"""

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import pykx as kx
from aiokdb import KException, cv
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CACHE = ROOT / "target" / "qgate-plugin-cache-tests"

POLICY = """
// Everyone may log in, but mallory.
permit (principal, action == Action::"connect", resource);
forbid (principal == User::"mallory", action == Action::"connect", resource);

// The desk group calls getTrades, sends free text, and reads the market's tables...
permit (principal in Group::"desk", action == Action::"call", resource == Function::"getTrades");
permit (principal in Group::"desk", action == Action::"query", resource);
permit (principal in Group::"desk", action == Action::"read", resource in TableGroup::"market");
// ...but never `secret`, although it is a market table: a forbid overrides every permit.
forbid (principal, action == Action::"read", resource == Table::"secret");

// An IP-range rule: `local` from loopback, `lan` from 10/8 only.
permit (principal == User::"carol", action == Action::"call", resource == Function::"local")
when { context.peer.isInRange(ip("127.0.0.0/8")) };
permit (principal == User::"carol", action == Action::"call", resource == Function::"lan")
when { context.peer.isInRange(ip("10.0.0.0/8")) };

// A TLS-CN rule: `tlsOnly` with alice's client certificate only.
permit (principal, action == Action::"call", resource == Function::"tlsOnly")
when { context.tls_cn == "alice" };
"""

ENTITIES = """[
  {"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": [{"type": "Group", "id": "desk"}]},
  {"uid": {"type": "User", "id": "dave"}, "attrs": {}, "parents": [{"type": "Group", "id": "desk"}]},
  {"uid": {"type": "Group", "id": "desk"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Table", "id": "trade"}, "attrs": {}, "parents": [{"type": "TableGroup", "id": "market"}]},
  {"uid": {"type": "Table", "id": "quote"}, "attrs": {}, "parents": [{"type": "TableGroup", "id": "market"}]},
  {"uid": {"type": "Table", "id": "secret"}, "attrs": {}, "parents": [{"type": "TableGroup", "id": "market"}]}
]
"""


def deploy(path, text):
    """Writes `text` beside `path` and renames it over it, as a deploy should."""
    staging = path.with_suffix(".staging")
    staging.write_text(text)
    staging.replace(path)


def write_policy(directory, policy=POLICY):
    (directory / "policy").mkdir(exist_ok=True)
    deploy(directory / "policy" / "qgate.cedar", policy)
    deploy(directory / "policy" / "entities.json", ENTITIES)


def chain(extra=""):
    for name in ("cedar", "echo"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    return (
        f'[[plugins]]\nname = "cedar"\npath = "{PLUGINS / "cedar.wasm"}"\n{extra}'
        'config = { policies = { file = "policy/qgate.cedar" }, '
        'entities = { file = "policy/entities.json" } }\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )


def serve(directory, config_text, startup_timeout=300.0):
    config = directory / "qgate.toml"
    config.write_text(config_text)
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    return Server(argv, directory / "stderr.log", startup_timeout=startup_timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs):
    directory = tmp_path_factory.mktemp("cedar")
    write_policy(directory)
    server = serve(
        directory,
        f'[server]\nplugin_cache_dir = "{CACHE}"\n'
        '[tls]\nmode = "optional"\n'
        f'cert_file = "{certs / "server.pem"}"\nkey_file = "{certs / "server.key"}"\n'
        f'ca_file = "{certs / "ca.pem"}"\nclient_auth = "optional"\n'
        + chain(),
    )
    yield server
    server.stop()


def pykx(server, user, tls=False):
    return kx.SyncQConnection(
        server.host, server.port, username=user, password="pw", tls=tls, timeout=30.0
    )


def aiokdb(server, user, query):
    """Sends `query` as a char vector through aiokdb and returns the reply's text."""

    async def body():
        _, writer = await open_qipc_connection(
            host=server.host, port=server.port, user=user, password="pw"
        )
        try:
            return (await writer.sync_req(cv(query))).aS()
        finally:
            writer.close()

    return asyncio.run(asyncio.wait_for(body(), 60))


def test_permits_pass_to_the_backend(server):
    with pykx(server, "bob") as conn:
        assert conn("select from trade where sym=`AAPL").py() == b"select from trade where sym=`AAPL"
        # A call, as PyKX sends one: ("getTrades"; `AAPL), answered by echo with itself.
        assert conn("getTrades", kx.SymbolAtom("AAPL")).py() == [b"getTrades", "AAPL"]
    assert aiokdb(server, "bob", "select from quote") == "select from quote"


def test_forbids_override_permits_and_name_the_request(server):
    error = r'access: cedar forbids bob to read Table::"secret"'
    with pykx(server, "bob") as conn:
        with pytest.raises(kx.QError, match=error):
            conn("select from secret")
        with pytest.raises(kx.QError, match=r'access: cedar forbids bob to call Function::"drop"'):
            conn("drop", kx.SymbolAtom("trade"))
        # Nothing is permitted by default: a write, and a flag.
        with pytest.raises(kx.QError, match=r'access: cedar forbids bob to write Table::"trade"'):
            conn("delete from `trade")
        with pytest.raises(kx.QError, match="access: cedar forbids bob to eval"):
            conn('value "exit 0"')
        # A refusal is an answer: the connection goes on.
        assert conn("trade").py() == b"trade"
    with pytest.raises(KException, match=error):
        aiokdb(server, "bob", "select from secret")
    # A forbidden login is refused before any query.
    with pytest.raises(kx.PyKXException):
        with pykx(server, "mallory") as conn:
            conn("trade")


def test_a_group_grant_reaches_its_members_only(server):
    # dave is granted nothing of his own: the desk group's permits are his.
    with pykx(server, "dave") as conn:
        assert conn("select from quote").py() == b"select from quote"
    with pykx(server, "erin") as conn:
        with pytest.raises(kx.QError, match=r'access: cedar forbids erin to query'):
            conn("select from quote")
    with pytest.raises(KException, match=r"access: cedar forbids erin"):
        aiokdb(server, "erin", "select from quote")


def test_an_ip_range_rule_sees_the_clients_address(server):
    with pykx(server, "carol") as conn:
        assert conn("local", 1).py() == [b"local", 1]
        with pytest.raises(kx.QError, match=r'access: cedar forbids carol to call Function::"lan"'):
            conn("lan", 1)


def test_a_tls_cn_rule_sees_the_client_certificate(server):
    # PyKX presents alice's certificate over TLS (the `certs` fixture): permitted.
    with pykx(server, "carol", tls=True) as conn:
        assert conn("tlsOnly", 1).py() == [b"tlsOnly", 1]
    # Without TLS there is no certificate, whatever the user name says.
    with pykx(server, "alice") as conn:
        with pytest.raises(kx.QError, match=r'access: cedar forbids alice to call Function::"tlsOnly"'):
            conn("tlsOnly", 1)


def test_an_edited_policy_takes_effect_under_load_and_a_broken_edit_is_refused(tmp_path):
    write_policy(tmp_path)
    server = serve(
        tmp_path,
        f'[server]\nplugin_cache_dir = "{CACHE}"\n[admin]\nsocket = "{tmp_path / "admin.sock"}"\n'
        + chain(),
    )
    try:
        stop = threading.Event()
        failures, answered = [], [0]

        async def client(user):
            _, writer = await open_qipc_connection(
                host=server.host, port=server.port, user=user, password="pw"
            )
            try:
                while not stop.is_set():
                    try:
                        answer = (await writer.sync_req(cv("select from trade"))).aS()
                        assert answer == "select from trade", answer
                        answered[0] += 1
                    except Exception as error:  # every failure is recorded, none may happen
                        failures.append(repr(error))
                    await asyncio.sleep(0.002)
            finally:
                writer.close()

        def load():
            async def body():
                await asyncio.gather(*(client(user) for user in ("bob", "dave") * 4))

            asyncio.run(body())

        loader = threading.Thread(target=load)
        loader.start()
        try:
            with pykx(server, "bob") as conn:
                with pytest.raises(kx.QError, match=r'Function::"newFn"'):
                    conn("newFn", 1)
            # Grant newFn: the watch sees the edit and swaps the policy in.
            write_policy(tmp_path, POLICY + (
                'permit (principal in Group::"desk", action == Action::"call", '
                'resource == Function::"newFn");\n'))
            deadline = time.monotonic() + 120
            while True:
                with pykx(server, "bob") as conn:
                    try:
                        assert conn("newFn", 1).py() == [b"newFn", 1]
                        break
                    except kx.QError:
                        assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)

            # A broken edit: refused, with the file, the line and the column in the log.
            policy = tmp_path / "policy" / "qgate.cedar"
            deploy(policy, POLICY + "permit (principal, action, resource\n")
            deadline = time.monotonic() + 120
            while f"{policy}:22:" not in Path(server.log_path).read_text(errors="replace"):
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
            # The old policy stays in force.
            with pykx(server, "bob") as conn:
                assert conn("newFn", 1).py() == [b"newFn", 1]
                with pytest.raises(kx.QError, match=r'Table::"secret"'):
                    conn("select from secret")
        finally:
            stop.set()
            loader.join(60)
        assert not failures, failures[:5]
        assert answered[0] > 0
        assert server.alive(), server.log()
    finally:
        server.stop()


def test_a_locked_deployment_refuses_an_unsigned_policy_file(tmp_path):
    write_policy(tmp_path)
    qgate = binary("QGATE_BIN", "qgate")
    key = tmp_path / "release.key"
    subprocess.run([qgate, "keygen", str(key)], check=True, capture_output=True)
    public_key = (tmp_path / "release.key.pub").read_text().strip()
    # The components are signed releases.
    config_text = (
        f'[server]\nplugin_cache_dir = "{CACHE}"\n'
        f'[lock]\nenabled = true\nkeys = ["{public_key}"]\n' + chain()
    )
    for name in ("cedar.wasm", "echo.wasm"):
        shutil.copyfile(PLUGINS / name, tmp_path / name)
        subprocess.run([qgate, "sign", str(key), str(tmp_path / name)], check=True,
                       capture_output=True)
        config_text = config_text.replace(str(PLUGINS / name), str(tmp_path / name))
    config = tmp_path / "qgate.toml"
    config.write_text(config_text)
    policy = tmp_path / "policy" / "qgate.cedar"
    # The entities file is signed; the policy file is not.
    subprocess.run(
        [qgate, "sign", str(key), str(tmp_path / "policy" / "entities.json")],
        check=True, capture_output=True,
    )

    # `check` and `serve` both refuse, naming the policy file and how to sign it.
    checked = subprocess.run([qgate, "check", str(config)], capture_output=True, text=True)
    assert checked.returncode != 0
    assert str(policy) in checked.stderr + checked.stdout, checked
    served = subprocess.run(
        [qgate, "serve", "--config", str(config), "-p", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=300,
    )
    assert served.returncode != 0
    assert "qgate listening" not in served.stdout
    assert str(policy) in served.stderr and "qgate sign" in served.stderr, served.stderr

    # Signed, it starts and decides.
    subprocess.run([qgate, "sign", str(key), str(policy)], check=True, capture_output=True)
    server = serve(tmp_path, config_text)
    try:
        with pykx(server, "bob") as conn:
            assert conn("trade").py() == b"trade"
            with pytest.raises(kx.QError, match=r'Table::"secret"'):
                conn("select from secret")
        # An edit that lifts the forbid on `secret`, not signed: the watch refuses it and the
        # signed policy stays in force.
        deploy(policy, POLICY.replace(
            'forbid (principal, action == Action::"read", resource == Table::"secret");', ""))
        deadline = time.monotonic() + 120
        while "is not a valid signature" not in Path(server.log_path).read_text(errors="replace"):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        with pykx(server, "bob") as conn:
            with pytest.raises(kx.QError, match=r'Table::"secret"'):
                conn("select from secret")
        # Signed, the watch sees the signature change and swaps the edit in.
        subprocess.run([qgate, "sign", str(key), str(policy)], check=True, capture_output=True)
        deadline = time.monotonic() + 120
        while True:
            with pykx(server, "bob") as conn:
                try:
                    assert conn("select from secret").py() == b"select from secret"
                    break
                except kx.QError:
                    assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    finally:
        server.stop()
