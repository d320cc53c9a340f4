"""The `firewall` plugin through the real `qgate serve`, driven by PyKX and aiokdb: a server in
`learn` mode records alice's query shapes in a `kv_file`; a restarted server in `enforce` mode
lets the learned shapes through with other values, denies every other shape (and `value "..."`
whatever was learned) with a q error naming the shape, and an admin lists and forgets shapes.

The chain is `firewall` then `echo`: a query that passes is answered with its own text.
The plugins are built by `cargo xtask plugins`, which `cargo xtask test` runs before the clients.
"""

import asyncio

import pytest

import pykx as kx
from aiokdb import KException, cv
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CACHE = ROOT / "target" / "qgate-plugin-cache-tests"

LEARNED = "select from trade where sym=`AAPL, size>100"
SAME_SHAPE = "select from trade where sym=`MSFT, size>5"


def serve(directory, mode, kv_file):
    for name in ("firewall", "echo"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    config = directory / f"{mode}.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nplugin_cache_dir = "{CACHE}"\n\n'
        f'[[plugins]]\nname = "firewall"\npath = "{PLUGINS / "firewall.wasm"}"\n'
        f'kv_file = "{kv_file}"\nconfig = {{ mode = "{mode}", admins = ["admin"] }}\n\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config)]
    return Server(argv, directory / f"{mode}.log", startup_timeout=300.0)


def pykx(server, user):
    return kx.SyncQConnection(server.host, server.port, username=user, password="password")


def aiokdb(server, user, query):
    async def body():
        _, writer = await open_qipc_connection(
            host=server.host, port=server.port, user=user, password="password"
        )
        try:
            return (await writer.sync_req(cv(query))).aS()
        finally:
            writer.close()

    return asyncio.run(asyncio.wait_for(body(), 60))


def shapes(server):
    """The admin's `.firewall.shapes`: (user, digest, shape) rows."""
    with pykx(server, "admin") as conn:
        table = conn(".firewall.shapes").py()
    return [
        (user, digest, shape.decode())
        for user, digest, shape in zip(table["user"], table["digest"], table["shape"])
    ]


def test_learn_then_enforce_across_a_restart(tmp_path):
    kv_file = tmp_path / "firewall.kv"

    learn = serve(tmp_path, "learn", kv_file)
    try:
        with pykx(learn, "alice") as conn:
            assert conn(LEARNED).py() == LEARNED.encode()
            # A call's shape is its function and argument count; echo answers with the call.
            assert len(conn("getTrades", "AAPL").py()) == 2
        assert aiokdb(learn, "alice", "select from quote") == "select from quote"
        learned = shapes(learn)
        assert {user for user, _, _ in learned} == {"alice"}, learned
        assert any("`trade" in shape and "<symbol>" in shape for _, _, shape in learned), learned
    finally:
        learn.stop()
    # The shutdown wrote the store.
    assert kv_file.is_file()

    enforce = serve(tmp_path, "enforce", kv_file)
    try:
        # The restart kept the shapes.
        assert shapes(enforce) == learned
        with pykx(enforce, "alice") as conn:
            assert conn(SAME_SHAPE).py() == SAME_SHAPE.encode()
            with pytest.raises(kx.QError, match="firewall: query shape not allowed for alice"):
                conn("select from secret")
            denied = r"firewall: query shape not allowed for alice: \(value;<string>\)"
            with pytest.raises(kx.QError, match=denied):
                conn('value "exit 0"')
            assert len(conn("getTrades", "MSFT").py()) == 2
            with pytest.raises(kx.QError, match=r"\(`getTrades;<arg>;<arg>\)"):
                conn("getTrades", "MSFT", 2)
            # A denial is an answer: the connection goes on.
            assert conn(SAME_SHAPE).py() == SAME_SHAPE.encode()
        assert aiokdb(enforce, "alice", "select from quote") == "select from quote"
        # Another user learned nothing.
        with pytest.raises(KException, match="firewall: query shape not allowed for bob"):
            aiokdb(enforce, "bob", LEARNED)

        # The admin forgets alice's select; it is denied from then on.
        digest = next(d for _, d, shape in learned if "`trade" in shape)
        with pykx(enforce, "admin") as conn:
            assert conn(".firewall.forget", "alice", digest).py() is True
            assert conn(".firewall.forget", "alice", digest).py() is False
        with pykx(enforce, "alice") as conn:
            with pytest.raises(kx.QError, match="firewall: query shape not allowed for alice"):
                conn(SAME_SHAPE)
        assert enforce.alive(), enforce.log()
    finally:
        enforce.stop()
