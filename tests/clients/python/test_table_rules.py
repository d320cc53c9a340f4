"""The `allowlist`'s table rules through the real `qgate serve`: free text decided on the facts
the host's q parser finds in it, sent by PyKX (a string, as `conn("select ...")` sends it) and by
aiokdb (a char vector), each allowed or denied, and each known bypass of q-side permission checks
denied.

The chain is `allowlist` then `echo`: a query the allowlist lets through is answered by `echo`
with its own text, so an answer shows the query passed; a refusal is the allowlist's q error.
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

POLICY = """
[plugins.config]
users = { carol = ["getTrades"] }

[plugins.config.tables.carol]
read = ["trade"]
write = ["orders"]

[plugins.config.groups.quants]
members = ["dave"]
functions = ["getTrades"]
read = ["trade", "quote"]
flags = ["lambda"]
"""

ALLOWED = [
    ("carol", "select from trade where sym=`AAPL"),
    ("carol", "select max price by sym from trade"),
    ("carol", "trade"),
    ("carol", "?[trade;();0b;()]"),
    ("carol", "`orders insert (1;`a)"),
    ("carol", "getTrades[`AAPL]"),
    ("dave", "trade lj `sym xkey quote"),
    ("dave", "{select from quote where sym=x}[`a]"),
]

DENIED = [
    ("carol", "select from quote", "access: carol may not read quote"),
    ("carol", "delete from `trade", "access: carol may not write trade"),
    ("carol", "trade lj quote", "access: carol may not read quote"),
    ("carol", "secretFn[`AAPL]", "access: secretFn is not allowed for carol"),
    ("carol", "a:1", "access: carol may not write a"),
    ("dave", "{select from secret}[]", "access: dave may not read secret"),
    ("erin", "select from trade", "access: free-text queries are not allowed for erin"),
]

# The bypasses of q-side checks that KX's permissions paper lists, each denied for carol.
BYPASSES = [
    (";select from trade", "access: multi is not granted to carol"),
    ('select from trade where sym in `a`b,[system"ls"]', "access: system is not granted to carol"),
    ("getTrades[`a;exit 0]", "access: exit is not granted to carol"),
    ("k)select from trade", r"access: the query could not be read with certainty \(unparsed\)"),
    ('0"exit 0"', "access: eval is not granted to carol"),
    ('(.)"exit 0"', "access: eval is not granted to carol"),
    ('value "exit 0"', "access: eval is not granted to carol"),
    ("select from trade where sym=(.z.pg:{x})", r"access: carol may not write \.z\.pg"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("table-rules")
    for name in ("allowlist", "echo"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    config = directory / "config.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nplugin_cache_dir = "{CACHE}"\n\n'
        f'[[plugins]]\nname = "allowlist"\npath = "{PLUGINS / "allowlist.wasm"}"\n{POLICY}\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config)]
    server = Server(argv, directory / "stderr.log", startup_timeout=300.0)
    yield server
    server.stop()


def pykx(server, user):
    return kx.SyncQConnection(server.host, server.port, username=user, password="password")


def aiokdb(server, user, query):
    """Sends `query` as a char vector through aiokdb and returns the reply's text."""

    async def body():
        _, writer = await open_qipc_connection(
            host=server.host, port=server.port, user=user, password="password"
        )
        try:
            return (await writer.sync_req(cv(query))).aS()
        finally:
            writer.close()

    return asyncio.run(asyncio.wait_for(body(), 60))


@pytest.mark.parametrize("user,query", ALLOWED)
def test_allowed_free_text_passes(server, user, query):
    with pykx(server, user) as conn:
        assert conn(query).py() == query.encode()
    assert aiokdb(server, user, query) == query


@pytest.mark.parametrize("user,query,error", DENIED)
def test_denied_free_text_names_the_fact(server, user, query, error):
    with pykx(server, user) as conn:
        with pytest.raises(kx.QError, match=error):
            conn(query)
        # A refusal is an answer: the connection goes on.
        if user != "erin":
            assert conn("trade").py() == b"trade"
    with pytest.raises(KException, match=error):
        aiokdb(server, user, query)


@pytest.mark.parametrize("query,error", BYPASSES)
def test_every_known_bypass_is_denied(server, query, error):
    with pykx(server, "carol") as conn:
        with pytest.raises(kx.QError, match=error):
            conn(query)
    with pytest.raises(KException, match=error):
        aiokdb(server, "carol", query)
    assert server.alive(), server.log()
