"""The walkthrough that `cargo xtask run` serves, as README.md shows it: the real `qgate serve`
with the reference config.toml (its password file and its plugin chain: conns, audit, allowlist,
demo-api), driven by PyKX in unlicensed mode.

The plugins are built by `cargo xtask plugins`, which `cargo xtask test` runs before the clients.
Each query here is the one README.md shows; keep them in step.
"""

import time

import pytest

import pykx as kx

from conftest import ROOT, Server, binary

CONFIG = ROOT / "config.toml"
PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """`qgate serve --config config.toml` on a free port. A debug build compiles the four plugins
    in about 20 s, hence the long startup timeout."""
    for name in ("conns", "audit", "allowlist", "demo_api"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(CONFIG), "-p", "127.0.0.1:0"]
    server = Server(argv, tmp_path_factory.mktemp("walkthrough") / "stderr.log",
                    startup_timeout=180.0)
    yield server
    server.stop()


def connect(server, username="admin", password="password"):
    return kx.SyncQConnection(server.host, server.port, username=username, password=password)


def test_wrong_password_is_refused(walkthrough):
    with pytest.raises(kx.PyKXException, match="Authentication error"):
        connect(walkthrough, password="wrong")
    assert walkthrough.alive()


@pytest.mark.parametrize("username", ["admin", "adminmd5", "adminsha"])
def test_every_walkthrough_user_logs_in(walkthrough, username):
    with connect(walkthrough, username=username) as conn:
        assert conn("legalOperation", 1, 2).py() == 3


def test_the_readme_session(walkthrough):
    conn = connect(walkthrough)
    try:
        assert conn("legalOperation", 1, 2).py() == 3

        with pytest.raises(kx.QError, match="access: illegalOperation is not allowed for admin"):
            conn("illegalOperation", 1, 2)

        conns = conn("conns").pd()
        assert list(conns.columns) == ["handle", "user", "address", "time"]
        mine = conns[conns["user"] == "admin"]
        assert len(mine) >= 1, conns
        assert set(mine["address"]) == {"127.0.0.1"}

        assert conn("`a`b!1 2").py() == {"a": 1, "b": 2}
        assert conn("1 2 3").py() == [1, 2, 3]

        # Free text is decided by the allowlist's table rules.
        with pytest.raises(kx.QError, match="access: admin may not read quote"):
            conn("select from quote")
        with pytest.raises(kx.QError, match="access: eval is not granted to admin"):
            conn('select from trade where 0<count value"exit 0"')
    finally:
        conn.close()
    assert walkthrough.alive(), walkthrough.log()


def test_closed_connections_leave_the_table(walkthrough):
    with connect(walkthrough, username="adminsha") as other:
        assert other("legalOperation", 1, 2).py() == 3
    with connect(walkthrough) as conn:
        # The close event runs after the socket closes, concurrently with this connection.
        deadline = time.monotonic() + 10
        while True:
            table = conn("conns").py()
            if "adminsha" not in table["user"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert "adminsha" not in table["user"], table
        assert "admin" in table["user"], table
