"""Config reload from a real client (aiokdb): 32 connections sending sync and async messages while
`qgate reload` reads config.toml again ten times, each time adding or removing a plugin in front
and changing the other's entry, with broken configs refused in between.

The chain is built of the `version-a` / `version-b` fixtures (plugins/fixtures/versioned.rs): the
sync query `version` is answered by the first of them (`a` or `b`), each async message adds one to
a counter in each one's kv, and `count` answers the first one's counter. So:

- no query fails: every sync answer is `a` or `b`, never an error, and no connection drops;
- the new chain decides right after each reload: a query sent after `qgate reload` returned, with
  no other reload begun before its answer, is answered by the chain that reload put in;
- a config that does not load changes nothing, and the command says so;
- no message is lost: `counter` is reloaded under a changed entry at every reload, and at the end
  its `count` for each connection equals the async messages it sent (its kv outlives the entries).
"""

import asyncio
import subprocess

import pytest
from aiokdb import cv
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CONNECTIONS = 32
RELOADS = 10
ASYNC_PER_ROUND = 3


def write_config(server, front, budget_ms, broken=False):
    """The config: `front` (version-b) first when asked for, then `counter` (version-a) with a
    time budget of `budget_ms`; `broken` adds a plugin whose file does not exist."""
    tables = ""
    if front:
        tables += f'[[plugins]]\nname = "front"\npath = "{PLUGINS / "version_b.wasm"}"\n'
    tables += (
        f'[[plugins]]\nname = "counter"\npath = "{PLUGINS / "version_a.wasm"}"\n'
        f'time_budget = "{budget_ms}ms"\n'
    )
    if broken:
        tables += f'[[plugins]]\nname = "missing"\npath = "{server.dir / "missing.wasm"}"\n'
    server.config.write_text(
        f'[server]\nplugin_cache_dir = "{server.dir / "cache"}"\n'
        f'[admin]\nsocket = "{server.socket}"\nwatch = false\n{tables}'
    )


@pytest.fixture
def reload_server(tmp_path):
    for name in ("version_a", "version_b"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")

    class Paths:
        dir = tmp_path
        socket = tmp_path / "admin.sock"
        config = tmp_path / "qgate.toml"

    write_config(Paths, front=False, budget_ms=100)
    argv = [
        binary("QGATE_BIN", "qgate"), "serve", "--config", str(Paths.config), "-p", "127.0.0.1:0",
    ]
    server = Server(argv, tmp_path / "stderr.log", startup_timeout=180.0)
    server.dir, server.socket, server.config = Paths.dir, Paths.socket, Paths.config
    yield server
    server.stop()


class Reloads:
    """What the reloader has done, read by the clients between their awaits (one event loop, so
    no lock): `epoch` grows when a reload begins and when it returns; `expected` is the answer to
    `version` of the chain in force, or None while a reload runs."""

    def __init__(self):
        self.epoch = 0
        self.expected = "a"
        self.done = False
        self.refused = 0


async def reload(server):
    process = await asyncio.create_subprocess_exec(
        binary("QGATE_BIN", "qgate"), "reload", "--admin-socket", str(server.socket),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def reloader(server, reloads):
    try:
        for round_ in range(RELOADS):
            front = round_ % 2 == 0
            # Every few rounds, a config that cannot load first: refused whole, the chain in
            # force unchanged.
            if round_ % 3 == 1:
                write_config(server, front, 100 + round_, broken=True)
                code, out, err = await reload(server)
                assert code != 0, (out, err)
                assert "missing.wasm" in err and "nothing changed" in err, err
                reloads.refused += 1
                await asyncio.sleep(0.05)
            write_config(server, front, 100 + round_)
            reloads.epoch += 1
            reloads.expected = None
            code, out, err = await reload(server)
            assert code == 0, (out, err, server.log())
            assert "counter" in out, out
            reloads.expected = "b" if front else "a"
            reloads.epoch += 1
            # Let every client send a few rounds on this chain.
            await asyncio.sleep(0.1)
    finally:
        reloads.done = True


async def client(server, reloads, stats):
    _, writer = await open_qipc_connection(host=server.host, port=server.port)
    sent_async = 0
    try:
        while not reloads.done:
            for _ in range(ASYNC_PER_ROUND):
                await writer.async_msg(cv("tick"))
                sent_async += 1
            epoch, expected = reloads.epoch, reloads.expected
            answer = (await writer.sync_req(cv("version"))).aS()
            assert answer in ("a", "b"), answer
            stats["sync"] += 1
            if expected is not None and reloads.epoch == epoch:
                assert answer == expected, (
                    f"a query sent after the reload to chain {expected} was answered by {answer}"
                )
                stats["checked"] += 1
        # The last reload leaves `counter` alone in front: its count is every async message.
        count = (await writer.sync_req(cv("count"))).aJ()
        assert count == sent_async, f"sent {sent_async} async messages, {count} counted"
        stats["async"] += sent_async
    finally:
        writer.close()


def test_32_connections_survive_10_config_reloads(reload_server):
    assert RELOADS % 2 == 0, "the last reload must leave `counter` first"

    async def body():
        reloads = Reloads()
        stats = {"sync": 0, "async": 0, "checked": 0}
        clients = [client(reload_server, reloads, stats) for _ in range(CONNECTIONS)]
        await asyncio.gather(reloader(reload_server, reloads), *clients)
        return stats, reloads.refused

    stats, refused = asyncio.run(asyncio.wait_for(body(), 600))
    print(f"config reload test: {stats}, {refused} broken configs refused")
    assert reload_server.alive(), reload_server.log()
    assert refused >= 3
    assert stats["checked"] >= CONNECTIONS * RELOADS // 2, stats
    assert stats["async"] > 0, stats
    reload_server.log()  # flushed
    log = reload_server.log_path.read_text(errors="replace")
    assert log.count("plugin chain replaced") == RELOADS, reload_server.log()
    assert log.count("config not reloaded") == refused, reload_server.log()
